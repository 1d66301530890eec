"""Regularization kernels as the training step calls them: Dropout's forward and backward over a
hidden layer's batch (the mask hashed per element, never stored), BatchNorm's training forward
(batch statistics, running statistics updated) and backward over the same batches, the weight
penalty's value and
gradient over a network's weights, and gradient clipping of a flat gradient buffer per tensor
(clipnorm), over the whole buffer (global_clipnorm) and per element (clipvalue)."""
import numpy as np

from fastnn.kernels import batchnorm as BN
from fastnn.kernels import dropout as D
from fastnn.kernels import optimizers as O
from fastnn.kernels.regularizers import regularization_forward_backward

from . import sizes, warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# (rows, columns): a batch of the seed network's first hidden layer, and of the wide network's.
SHAPES = [(50, 100), (256, 1024)]
# Weights of the seed network's layers and of the wide network's (784*100+100+100*50+50+50*10+10, ...).
WEIGHT_COUNTS = [84_060, 1_863_690]
CLIPPING = {"clipnorm": O.H_CLIPNORM, "global_clipnorm": O.H_GLOBAL_CLIPNORM, "clipvalue": O.H_CLIPVALUE}


class DropoutArrays:
    def __init__(self, rows, cols, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal(rows * cols, dtype=np.float32)
        self.out = np.empty_like(self.x)
        self.stream = np.uint64(D.dropout_stream(seed, 7, 1))

    def forward(self):
        D.dropout_forward(self.out, self.x, self.stream, 0.5)

    def backward(self):
        D.dropout_backward(self.out, self.x, self.stream, 0.5)


class BatchNormArrays:
    def __init__(self, rows, cols, seed=0):
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((rows, cols), dtype=np.float32)
        self.dout = rng.standard_normal((rows, cols), dtype=np.float32)
        self.out, self.dx = np.empty_like(self.x), np.empty_like(self.x)
        self.params = np.concatenate([np.ones(cols), np.zeros(cols), np.zeros(cols), np.ones(cols)]).astype(np.float32)
        self.grads = np.zeros_like(self.params)
        self.cols = cols
        self.stats = np.empty(BN.STATS_ROWS * cols)  # the workspace's float64 scratch

    def forward(self):
        BN.batchnorm_forward(self.out, self.x, self.params, 0, self.cols, True, 0.1, 1e-5, self.stats)

    def backward(self):
        BN.batchnorm_backward(self.dx, self.grads, self.dout, self.x, self.params, 0, self.cols, 1e-5, self.stats)


class PenaltyArrays:
    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.params = rng.standard_normal(n, dtype=np.float32)
        self.grads = rng.standard_normal(n, dtype=np.float32)
        self.reg = np.array([[0, n // 2, 1e-5, 0.0], [n // 2, n, 0.0, 1e-4]])  # L1 on one half, L2 on the other

    def step(self):
        regularization_forward_backward(self.params, self.grads, self.reg)


class ClipArrays:
    def __init__(self, kind, n, seed=0):
        rng = np.random.default_rng(seed)
        self.grads = rng.standard_normal(n, dtype=np.float32)
        self.tensors = np.array([[0, n // 2], [n // 2, n]], dtype=np.int64)
        self.hyper = np.zeros((1, O.N_HYPER))
        self.hyper[0, CLIPPING[kind]] = 1e9  # never binding: every call does the same work
        self.meta = np.array([[0, n, O.SGD]], dtype=np.int64)

    def step(self):  # as the training step: global_clipnorm over the optimizer's slices, then the rest
        O.clip_global_norms(self.grads, self.meta, self.hyper)
        O.clip_gradients(self.grads, 0, self.grads.size, self.tensors, self.hyper[0])


def warm_up():
    DropoutArrays(2, 3).forward()
    DropoutArrays(2, 3).backward()
    BatchNormArrays(2, 3).forward()
    BatchNormArrays(2, 3).backward()
    PenaltyArrays(6).step()
    for kind in CLIPPING:
        ClipArrays(kind, 6).step()


class Dropout:
    params = [sizes(SHAPES)]
    param_names = ["shape"]

    def setup(self, shape):
        self.a = DropoutArrays(*shape)
        self.a.forward()
        self.a.backward()

    def time_dropout_forward(self, shape):
        self.a.forward()

    def time_dropout_backward(self, shape):
        self.a.backward()


class BatchNorm:
    params = [sizes(SHAPES)]
    param_names = ["shape"]

    def setup(self, shape):
        self.a = BatchNormArrays(*shape)
        self.a.forward()
        self.a.backward()

    def time_batchnorm_forward(self, shape):
        self.a.forward()

    def time_batchnorm_backward(self, shape):
        self.a.backward()


class WeightPenalty:
    params = [sizes(WEIGHT_COUNTS)]
    param_names = ["n_params"]

    def setup(self, n):
        self.a = PenaltyArrays(n)
        self.a.step()

    def time_regularization_forward_backward(self, n):
        self.a.step()


class GradientClipping:
    params = [list(CLIPPING), sizes(WEIGHT_COUNTS)]
    param_names = ["clipping", "n_params"]

    def setup(self, kind, n):
        self.a = ClipArrays(kind, n)
        self.a.step()

    def time_clip_gradients(self, kind, n):
        self.a.step()
