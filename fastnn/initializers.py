"""Weight initializers. ``init(shape, rng, dtype)`` returns a new array drawn from ``rng``
(a ``numpy.random.Generator``), so a model seeded with ``MLP(seed=...)`` is reproducible.

Dense layers default to ``GlorotUniform`` for the kernel and ``Zeros`` for the bias, as
Keras does. fan_in and fan_out are the first and second dimension of a (in, out) kernel
(both the length of a 1-D shape, as in Keras).
The normal variants draw from an untruncated normal, as torch.nn.init does.
"""
import numpy as np

from .base import Configurable, resolve
from .validation import check_float


class Initializer(Configurable):
    def __call__(self, shape, rng, dtype=np.float32):
        return self.sample(tuple(shape), rng).astype(dtype)

    @staticmethod
    def fans(shape):
        """(fan_in, fan_out) of an (in, out) kernel; a 1-D shape (n,) counts n for both, as Keras'
        ``compute_fans`` does, so that a bias drawn by He or Glorot has a scale set by its width."""
        if len(shape) == 1:
            return shape[0], shape[0]
        return shape[0], shape[1]


class Zeros(Initializer):
    def sample(self, shape, rng):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = check_float(value, "value")

    def sample(self, shape, rng):
        return np.full(shape, self.value)


class Normal(Initializer):
    """N(mean, std²). Keras' RandomNormal(mean, stddev) is the same class."""
    _aliases = {"stddev": "std"}

    def __init__(self, mean=0.0, std=0.05):
        self.mean = check_float(mean, "mean")
        self.std = check_float(std, "std", minimum=0.0)

    def sample(self, shape, rng):
        return rng.normal(self.mean, self.std, shape)


class Uniform(Initializer):
    """U[low, high), by default the seed framework's [-1, 1]. Keras' RandomUniform(minval, maxval)
    is the same class."""
    _aliases = {"minval": "low", "maxval": "high"}

    def __init__(self, low=-1.0, high=1.0):
        self.low = check_float(low, "low")
        self.high = check_float(high, "high")
        if self.high < self.low:
            raise ValueError(f"high must be >= low, got low={self.low}, high={self.high}")

    def sample(self, shape, rng):
        return rng.uniform(self.low, self.high, shape)


class GlorotNormal(Initializer):
    """N(0, 2 / (fan_in + fan_out)): torch.nn.init.xavier_normal_."""
    def sample(self, shape, rng):
        fan_in, fan_out = self.fans(shape)
        return rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), shape)


class GlorotUniform(Initializer):
    """U[-l, l], l = sqrt(6 / (fan_in + fan_out)): torch.nn.init.xavier_uniform_."""
    def sample(self, shape, rng):
        fan_in, fan_out = self.fans(shape)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)


class HeNormal(Initializer):
    """N(0, 2 / fan_in): torch.nn.init.kaiming_normal_(mode='fan_in', nonlinearity='relu')."""
    def sample(self, shape, rng):
        fan_in, _ = self.fans(shape)
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


class HeUniform(Initializer):
    """U[-l, l], l = sqrt(6 / fan_in): torch.nn.init.kaiming_uniform_(mode='fan_in', nonlinearity='relu')."""
    def sample(self, shape, rng):
        fan_in, _ = self.fans(shape)
        limit = np.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, shape)


RandomNormal = Normal
RandomUniform = Uniform
XavierNormal = GlorotNormal
XavierUniform = GlorotUniform

_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "normal": Normal, "random_normal": Normal,
    "uniform": Uniform, "random_uniform": Uniform, "glorot_normal": GlorotNormal,
    "xavier_normal": GlorotNormal, "glorot_uniform": GlorotUniform, "xavier_uniform": GlorotUniform,
    "he_normal": HeNormal, "he_uniform": HeUniform,
}


def get(identifier):
    """An initializer from an instance, a class or a name ('glorot_uniform', 'he_normal', 'zeros', ...)."""
    return resolve(identifier, Initializer, _BY_NAME, "initializer")
