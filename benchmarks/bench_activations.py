"""Activation kernels through their 2-D drivers, as the network calls them:
``bias_activation_forward`` (bias + activation, row by row, one pass) and
``activation_backward`` (dout times the derivative, read from the forward's output), for every
activation code, on a hidden layer's batch of the seed and of the wide network."""
import numpy as np

from fastnn.kernels import activations as A
from fastnn.kernels.activations import activation_backward, bias_activation_forward

from . import sizes, warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# name -> (code, alpha): the parameter each activation object passes (LeakyReLU(0.01), ELU(1.0)).
ACTIVATIONS = {
    "identity": (A.IDENTITY, 0.0),
    "sigmoid": (A.SIGMOID, 0.0),
    "tanh": (A.TANH, 0.0),
    "relu": (A.RELU, 0.0),
    "leaky_relu": (A.LEAKY_RELU, 0.01),
    "elu": (A.ELU, 1.0),
    "softmax": (A.SOFTMAX, 0.0),
    "heaviside": (A.HEAVISIDE, 0.0),
}
# (rows, columns): a batch of the seed network's first hidden layer, and of the wide network's.
SHAPES = [(50, 100), (256, 1024)]


class ActivationArrays:
    """Pre-activations, bias and the forward's output of one layer (float32, C order)."""

    def __init__(self, name, rows, cols, seed=0):
        rng = np.random.default_rng(seed)
        self.code, self.alpha = ACTIVATIONS[name]
        self.x = rng.standard_normal((rows, cols), dtype=np.float32)
        self.b = rng.standard_normal(cols, dtype=np.float32)
        self.out = np.empty_like(self.x)
        self.dout = rng.standard_normal((rows, cols), dtype=np.float32)
        self.dx = np.empty_like(self.x)
        bias_activation_forward(self.out, self.x, self.b, self.code, self.alpha)

    def forward(self):
        bias_activation_forward(self.out, self.x, self.b, self.code, self.alpha)

    def backward(self):
        activation_backward(self.dx, self.dout, self.out, self.code, self.alpha)


def warm_up():
    # One call per driver compiles every activation: the code is a run-time argument.
    a = ActivationArrays("relu", 2, 3)
    a.forward()
    a.backward()


class ActivationForward:
    """out = act(x + b)."""
    params = [list(ACTIVATIONS), sizes(SHAPES)]
    param_names = ["activation", "rows_cols"]

    def setup(self, name, shape):
        self.a = ActivationArrays(name, *shape)
        self.a.forward()

    def time_bias_activation_forward(self, name, shape):
        self.a.forward()


class ActivationBackward:
    """dx = dout * act'(x), from act(x)."""
    params = [list(ACTIVATIONS), sizes(SHAPES)]
    param_names = ["activation", "rows_cols"]

    def setup(self, name, shape):
        self.a = ActivationArrays(name, *shape)
        self.a.backward()

    def time_activation_backward(self, name, shape):
        self.a.backward()
