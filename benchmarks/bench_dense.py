"""Dense layer kernels: ``dense_forward`` (GEMM, then bias + activation in one pass) and
``dense_backward`` (two GEMMs and a column sum), over the layer shapes of the seed
(784-100-50-10, batch 50) and wide (784-1024-1024-10, batch 256) networks."""
import numpy as np

from fastnn.kernels.activations import RELU
from fastnn.kernels.dense import dense_backward, dense_forward

from . import sizes, warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# (batch, inputs, outputs): the seed network's first and last layers, the wide network's
# first and middle layers.
SHAPES = [(50, 784, 100), (50, 100, 10), (256, 784, 1024), (256, 1024, 1024)]


class DenseArrays:
    """float32 C-contiguous arrays of one layer, laid out as the network holds them."""

    def __init__(self, batch, n_in, n_out, seed=0):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.x = rng.standard_normal((batch, n_in), dtype=f32)
        self.W = rng.standard_normal((n_in, n_out), dtype=f32) * f32(1 / np.sqrt(n_in))
        self.b = rng.standard_normal(n_out, dtype=f32)
        self.out = np.empty((batch, n_out), f32)
        self.dz = rng.standard_normal((batch, n_out), dtype=f32)
        self.dx = np.empty((batch, n_in), f32)
        self.dW = np.empty((n_in, n_out), f32)
        self.db = np.empty(n_out, f32)

    def forward(self):
        dense_forward(self.out, self.x, self.W, self.b, RELU, 0.0)

    def backward(self):
        dense_backward(self.dx, self.dW, self.db, self.dz, self.x, self.W)


def warm_up():
    a = DenseArrays(2, 3, 4)
    a.forward()
    a.backward()


class DenseForward:
    """out = relu(x @ W + b)."""
    params = [sizes(SHAPES)]
    param_names = ["batch_in_out"]

    def setup(self, shape):
        self.a = DenseArrays(*shape)
        self.a.forward()

    def time_dense_forward(self, shape):
        self.a.forward()


class DenseBackward:
    """dW = x.T @ dz, db = column sums of dz, dx = dz @ W.T."""
    params = [sizes(SHAPES)]
    param_names = ["batch_in_out"]

    def setup(self, shape):
        self.a = DenseArrays(*shape)
        self.a.backward()

    def time_dense_backward(self, shape):
        self.a.backward()
