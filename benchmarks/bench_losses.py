"""Loss kernels through their code-dispatching entry points, ``loss_forward`` (the value) and
``loss_backward`` (dL/dpred), for every loss code, plus the two fused gradients the network
uses instead (softmax + cross-entropy, sigmoid + binary cross-entropy: dz = p - y)."""
import numpy as np

from fastnn.kernels import losses as L
from fastnn.kernels.losses import (loss_backward, loss_forward, sigmoid_binary_cross_entropy_backward,
                                   softmax_cross_entropy_backward)

from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

LOSSES = {
    "mse": L.MSE,
    "sse": L.SSE,
    "mae": L.MAE,
    "mape": L.MAPE,
    "msle": L.MSLE,
    "cosine_similarity": L.COSINE_SIMILARITY,
    "cross_entropy": L.CROSS_ENTROPY,
    "binary_cross_entropy": L.BINARY_CROSS_ENTROPY,
    "kl_divergence": L.KL_DIVERGENCE,
    "perceptron": L.PERCEPTRON,
}
FUSED = {
    "softmax+cross_entropy": softmax_cross_entropy_backward,
    "sigmoid+binary_cross_entropy": sigmoid_binary_cross_entropy_backward,
}
# One batch of the wide network's output layer: 256 rows, 10 classes.
ROWS, CLASSES = 256, 10


class LossArrays:
    """Predictions in (0, 1) summing to 1 per row, one-hot targets: valid input for every loss."""

    def __init__(self, rows, cols, seed=0):
        rng = np.random.default_rng(seed)
        logits = rng.standard_normal((rows, cols))
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        self.pred = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        self.target = np.eye(cols, dtype=np.float32)[rng.integers(0, cols, rows)]
        self.dpred = np.empty_like(self.pred)


def warm_up():
    a = LossArrays(2, 3)
    loss_forward(L.MSE, a.pred, a.target)
    loss_backward(L.MSE, a.dpred, a.pred, a.target)
    for fused in FUSED.values():
        fused(a.dpred, a.pred, a.target)


class LossForward:
    params = [list(LOSSES)]
    param_names = ["loss"]

    def setup(self, name):
        self.a = LossArrays(ROWS, CLASSES)
        self.code = LOSSES[name]
        loss_forward(self.code, self.a.pred, self.a.target)

    def time_loss_forward(self, name):
        loss_forward(self.code, self.a.pred, self.a.target)


class LossBackward:
    params = [list(LOSSES) + list(FUSED)]
    param_names = ["loss"]

    def setup(self, name):
        a = self.a = LossArrays(ROWS, CLASSES)
        if name in FUSED:
            fused = FUSED[name]
            self.call = lambda: fused(a.dpred, a.pred, a.target)
        else:
            code = LOSSES[name]
            self.call = lambda: loss_backward(code, a.dpred, a.pred, a.target)
        self.call()

    def time_loss_backward(self, name):
        self.call()
