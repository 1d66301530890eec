"""Activation functions: Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Softmax, Heaviside.

An activation object names a kernel family in ``fastnn.kernels.activations`` (its ``code``)
and holds its parameter; the numerics live in the kernels. Calling one on an array applies
it row by row (``ReLU()(x)``); ``backward(dout, out)`` gives the gradient with respect to
the input from the forward's output. Strings name them too: ``Dense(..., activation="relu")``.
"""
import numpy as np

from .base import Configurable, resolve
from .kernels import activations as K
from .validation import check_features, check_float


class ActivationFunction(Configurable):
    """Base class: ``code`` selects the kernel, ``alpha`` is its parameter (0 where unused)."""
    code = K.IDENTITY
    alpha = 0.0

    def __call__(self, x):
        """Apply to a (rows, features) array (a 1-D array is one row); returns a new array."""
        x = _rows(x)
        out = np.empty_like(x)
        K.bias_activation_forward(out, x, x[0, :0], self.code, float(self.alpha))
        return out

    forward = __call__

    def backward(self, dout, out):
        """dL/dx given dL/d(out) and the forward's output ``out``, both (rows, features)."""
        out = _rows(out)
        dout = check_features(dout, "dout", width=out.shape[1], dtype=out.dtype)
        if dout.shape != out.shape:
            raise ValueError(f"dout must have the shape of out {out.shape}, got {dout.shape}")
        dx = np.empty_like(out)
        K.activation_backward(dx, dout, out, self.code, float(self.alpha))
        return dx


def _rows(x):
    arr = np.asarray(x)
    dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64
    return check_features(arr.reshape(1, -1) if arr.ndim == 1 else arr, "x", dtype=dtype)


class Identity(ActivationFunction):
    """f(x) = x (Keras' 'linear')."""
    code = K.IDENTITY


class Sigmoid(ActivationFunction):
    """f(x) = 1 / (1 + e^-x): torch.sigmoid."""
    code = K.SIGMOID


class Tanh(ActivationFunction):
    """f(x) = tanh(x): torch.tanh."""
    code = K.TANH


class ReLU(ActivationFunction):
    """f(x) = max(0, x): torch.nn.ReLU (derivative 0 at 0)."""
    code = K.RELU


class LeakyReLU(ActivationFunction):
    """f(x) = x for x > 0, alpha x otherwise: torch.nn.LeakyReLU(negative_slope=alpha).

    The seed framework calls the slope ``epsilon``: ``LeakyReLU(epsilon=0.01)`` works too.
    alpha must lie in [0, 1] (the backward reads the sign of the output).
    """
    code = K.LEAKY_RELU
    _aliases = {"epsilon": "alpha", "negative_slope": "alpha"}

    def __init__(self, alpha=0.01):
        self.alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0)


class ELU(ActivationFunction):
    """f(x) = x for x > 0, alpha (e^x - 1) otherwise: torch.nn.ELU(alpha); alpha > 0."""
    code = K.ELU

    def __init__(self, alpha=1.0):
        self.alpha = check_float(alpha, "alpha", minimum=0.0, min_inclusive=False)


class Softmax(ActivationFunction):
    """f(x)_i = e^x_i / sum_j e^x_j over each row (stable: max subtracted): torch.softmax(dim=-1).

    Followed by the CrossEntropy loss, its gradient is fused with the loss's (p - y)."""
    code = K.SOFTMAX


class Heaviside(ActivationFunction):
    """The perceptron's step: f(x) = 1 for x > 0, 0 otherwise.

    Its backward passes gradients straight through; with the PerceptronCriterion loss and
    SGD this trains a single-layer perceptron by Rosenblatt's rule (see ``fastnn.Perceptron``).
    """
    code = K.HEAVISIDE


_BY_NAME = {
    "identity": Identity, "linear": Identity, "sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU,
    "leaky_relu": LeakyReLU, "leakyrelu": LeakyReLU, "elu": ELU, "softmax": Softmax,
    "heaviside": Heaviside, "step": Heaviside,
}


def get(identifier):
    """An activation from an instance, a class, a name ('relu', 'softmax', ...) or None (identity)."""
    if identifier is None:
        return Identity()
    return resolve(identifier, ActivationFunction, _BY_NAME, "activation")
