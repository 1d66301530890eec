"""Shared test utilities: central finite differences and tolerances.

Every backward kernel is checked against ``numerical_gradient`` of its forward, computed in
float64. The step 1e-6 balances truncation error (O(eps²) times the third derivative) against
rounding (about 1e-16 * |f| / eps), which leaves some 8 correct digits: comparisons at
``FD_RTOL``/``FD_ATOL`` would still catch a factor, a sign or a missing term.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn

FD_EPS = 1e-6
FD_RTOL = 1e-5
FD_ATOL = 1e-7

# Forward kernels against their float64 NumPy twins: a few ulps of the kernel's dtype.
FORWARD_RTOL = {np.float32: 2e-6, np.float64: 1e-12}


def randomize_weights(model, seed=0):
    """Every weight of ``model`` drawn anew, as a trained model's are (biases nonzero, BatchNorm's
    moving statistics moved, the variances positive), so that an export or a conversion that
    drops or mixes up one shows, without a training step, which compiles a step of its own."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        drawn = [(rng.uniform(0.5, 1.5, w.shape) if name == "moving_variance" else rng.normal(0.0, 0.5, w.shape))
                 .astype(w.dtype) for name, w in zip(layer.weight_names(), weights)]
        if getattr(layer, "mask_zero", False):
            drawn[0][0] = 0  # the padding id's vector stays zero
        layer.set_weights(drawn)


def numerical_gradient(f, x, eps=FD_EPS):
    """Central differences d f() / d x for every element of the float64 array ``x``.

    ``f`` takes no argument: it reads ``x``, which is perturbed in place one element at a
    time and restored exactly afterwards.
    """
    assert x.dtype == np.float64, "finite differences are only meaningful in float64"
    assert x.flags.c_contiguous, "x must be contiguous so that its flat view writes through"
    flat = x.reshape(-1)
    grad = np.empty(x.size)
    for i in range(x.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad.reshape(x.shape)


def assert_gradient(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL):
    """An analytic gradient equals its finite-difference estimate, and is not trivially zero."""
    assert np.any(numeric != 0), "the finite-difference gradient is all zeros: the test checks nothing"
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


def away_from_zero(rng, shape, low=1e-2, high=3.0, dtype=np.float64):
    """Random values with |x| in [low, high] and random signs: no kink of relu, leaky relu,
    elu, abs or the step lies within a finite-difference step of them."""
    x = rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return np.ascontiguousarray(x, dtype=dtype)


# The clamp of probabilities inside logarithms (Keras' epsilon), as fastnn.kernels.losses.
PROB_EPSILON = 1e-7


def naive_loss(name, p, t):
    """Each loss's value as its docstring defines it (torch's or Keras' formula)."""
    if name == "mse":
        return np.mean((p - t) ** 2)
    if name == "sse":
        return np.sum((p - t) ** 2)
    if name == "mae":
        return np.mean(np.abs(p - t))
    if name == "mape":
        return 100 * np.mean(np.abs(t - p) / np.maximum(np.abs(t), PROB_EPSILON))
    if name == "msle":
        return np.mean((np.log1p(np.maximum(p, PROB_EPSILON)) - np.log1p(np.maximum(t, PROB_EPSILON))) ** 2)
    if name == "cosine_similarity":
        pn = np.sqrt(np.maximum((p * p).sum(1), 1e-12))
        tn = np.sqrt(np.maximum((t * t).sum(1), 1e-12))
        return -np.mean((p * t).sum(1) / (pn * tn))
    if name == "cross_entropy":
        return np.mean(-(t * np.log(np.maximum(p, PROB_EPSILON))).sum(1))
    if name == "binary_crossentropy":
        return -np.mean(t * np.maximum(np.log(p), -100) + (1 - t) * np.maximum(np.log1p(-p), -100))
    if name == "kl_divergence":
        tc, pc = np.clip(t, PROB_EPSILON, 1), np.clip(p, PROB_EPSILON, 1)
        return np.mean((tc * np.log(tc / pc)).sum(1))
    raise KeyError(name)


def naive_splitmix64(z):
    """SplitMix64's finalizer in Python integers (Steele, Lea & Flood 2014)."""
    mask = (1 << 64) - 1
    z &= mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def naive_dropout_keep(key, step, layer, shape, rate):
    """The keep-mask (bool array of ``shape``) that fastnn's Dropout draws for (key, step, layer):
    element i (row-major) is kept when the top 32 bits of its hash are >= rate * 2**32."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15
    z = naive_splitmix64((int(key) + golden) & mask)
    z = naive_splitmix64(z ^ ((int(step) * golden) & mask))
    stream = naive_splitmix64(z ^ ((int(layer) + golden) & mask))
    threshold = int(rate * 4294967296.0)
    n = int(np.prod(shape))
    bits = [naive_splitmix64(stream ^ ((i * golden) & mask)) >> 32 for i in range(n)]
    return (np.array(bits, dtype=np.uint64) >= threshold).reshape(shape)


def cuda_or_skip():
    """``numba.cuda`` for the CUDA tests, or a skip that says what is missing.

    The kernels need NVIDIA's numba-cuda package (in the ``test`` and ``cuda`` extras): numba's
    own CUDA target, which numba still ships, imports as ``numba.cuda`` too, but its simulator
    rejects the kernels (``cuda.shared.array`` there takes no ``alignment``). Without a GPU the
    tests run in numba-cuda's simulator (tests/conftest.py turns it on)."""
    pytest.importorskip("numba_cuda", reason="the CUDA tests need NVIDIA's numba-cuda package: "
                                             "pip install -e \".[test]\" (or \".[cuda]\")")
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA GPU, and the CUDA simulator is off (NUMBA_ENABLE_CUDASIM)", allow_module_level=True)
    return cuda


class UserDense(fastnn.Layer):
    """Dense without activation, written as a user layer (as the asv benchmark's in
    benchmarks/bench_layers.py)."""

    def __init__(self, units, input_dim=None):
        self.units = units
        self.input_dim = input_dim

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("bias", (self.units,), initializer="zeros")
        return self.units

    @staticmethod
    def forward(x, kernel, bias):
        return x @ kernel + bias

    @staticmethod
    def backward(x, kernel, bias, y, dy):
        return dy @ kernel.T, (x.T @ dy, dy.sum(axis=0))


class Affine(fastnn.Layer):
    """y = x * scale + shift, elementwise (a BatchNorm without statistics); ``frozen`` is a
    non-trainable weight that the forward pass adds."""

    def __init__(self, input_dim=None):
        self.input_dim = input_dim

    def build(self, input_dim):
        self.add_weight("scale", (input_dim,), initializer="ones")
        self.add_weight("shift", (input_dim,), initializer="zeros")
        self.add_weight("frozen", (input_dim,), initializer="ones", trainable=False)
        return input_dim

    @staticmethod
    def forward(x, scale, shift, frozen):
        return x * scale + shift + frozen

    @staticmethod
    def backward(x, scale, shift, frozen, y, dy):
        return dy * scale, ((dy * x).sum(axis=0), dy.sum(axis=0), np.zeros_like(frozen))


# Trains a model whose optimizer covers 784*256+256+256*10+10 = 203,530 parameters: above the
# size from which fastnn's optimizer pass runs in parallel (on TBB, config.PARALLEL_MIN_ELEMENTS).
TRAIN = textwrap.dedent("""
    import numpy as np
    import fastnn

    def fit_once(seed):
        rng = np.random.default_rng(seed)
        x = rng.random((512, 784), dtype=np.float32)
        y = rng.integers(0, 10, 512)
        model = fastnn.MLP([fastnn.Dense(784, 256, activation="relu"),
                            fastnn.Dense(256, 10, activation="softmax")], seed=seed)
        model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-3), metrics=["accuracy"])
        model.fit(x, y, epochs=1, batch_size=256, verbose=0)
        model.predict(x)
        return float(model.evaluate(x, y, verbose=0)[0])
""")


def run_python(code, env=None, timeout=300):
    """Run ``code`` in a fresh interpreter; returns the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else dict(os.environ))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
