"""Tests of fastnn.kernels.dense: the forward against NumPy's act(x @ W + b), the backward
against central finite differences of a scalar function of x @ W + b."""
import numpy as np
import pytest

from fastnn.kernels import activations as A
from fastnn.kernels import dense as K
from helpers import assert_gradient, numerical_gradient


def naive_dense(x, W, b, act, alpha):
    """act(x @ W + b) in float64, the activation applied row by row."""
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    if act == A.IDENTITY:
        return z
    if act == A.SIGMOID:
        return np.exp(-np.logaddexp(0.0, -z))
    if act == A.TANH:
        return np.tanh(z)
    if act == A.RELU:
        return np.where(z > 0, z, 0.0)
    if act == A.LEAKY_RELU:
        return np.where(z > 0, z, alpha * z)
    if act == A.ELU:
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if act == A.SOFTMAX:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return np.where(z > 0, 1.0, 0.0)


SHAPES = [(1, 1, 1), (1, 5, 3), (4, 3, 7), (9, 12, 2), (32, 20, 10)]  # (batch, n_in, n_out)
ACTS = [A.IDENTITY, A.SIGMOID, A.TANH, A.RELU, A.LEAKY_RELU, A.ELU, A.SOFTMAX]
ALPHA = 0.2


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def layer(rng, batch, n_in, n_out, dtype=np.float64):
    x = rng.standard_normal((batch, n_in)).astype(dtype)
    W = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    return x, W, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_forward_matches_naive(shape, act, dtype, rng):
    x, W, b = layer(rng, *shape, dtype=dtype)
    out = np.full((shape[0], shape[2]), np.nan, dtype=dtype)
    K.dense_forward(out, x, W, b, act, ALPHA)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(out, naive_dense(x, W, b, act, ALPHA), **tol)


def test_dense_forward_heaviside(rng):
    x, W, b = layer(rng, 6, 4, 3)
    out = np.full((6, 3), np.nan)
    K.dense_forward(out, x, W, b, A.HEAVISIDE, 0.0)
    np.testing.assert_array_equal(out, naive_dense(x, W, b, A.HEAVISIDE, 0.0))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_backward_matches_finite_differences(shape, rng):
    batch, n_in, n_out = shape
    x, W, b = layer(rng, *shape)
    dz = rng.standard_normal((batch, n_out))
    dx = np.full_like(x, np.nan)
    dW = np.full_like(W, np.nan)  # garbage in the outputs must be overwritten, not added to
    db = np.full_like(b, np.nan)
    K.dense_backward(dx, dW, db, dz, x, W)

    def loss():  # L = sum(dz * (x @ W + b)), so dL/dz is dz
        return float(np.sum(dz * (x @ W + b)))

    assert_gradient(dW, numerical_gradient(loss, W))
    assert_gradient(db, numerical_gradient(loss, b))
    assert_gradient(dx, numerical_gradient(loss, x))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_dense_backward_float32(shape, rng):
    batch, n_in, n_out = shape
    x, W, b = layer(rng, *shape)
    dz = rng.standard_normal((batch, n_out))
    grads64 = [np.empty_like(x), np.empty_like(W), np.empty_like(b)]
    K.dense_backward(*grads64, dz, x, W)
    grads32 = [np.full(g.shape, np.nan, dtype=np.float32) for g in grads64]
    K.dense_backward(*grads32, dz.astype(np.float32), x.astype(np.float32), W.astype(np.float32))
    for g32, g64 in zip(grads32, grads64):
        np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-5)


def test_dense_backward_skips_an_empty_dx(rng):
    x, W, b = layer(rng, 5, 4, 3)
    dz = rng.standard_normal((5, 3))
    # As network_backward does for the first layer: a 0-row view into a live buffer.
    sentinel = np.full(40, 123.0)
    dx = sentinel[:0].reshape(0, 4)
    dW = np.full_like(W, np.nan)
    db = np.full_like(b, np.nan)
    K.dense_backward(dx, dW, db, dz, x, W)
    np.testing.assert_array_equal(sentinel, 123.0)
    np.testing.assert_allclose(dW, x.T @ dz, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(db, dz.sum(axis=0), rtol=1e-13, atol=1e-15)


def test_dense_backward_on_views_of_flat_buffers(rng):
    """The network passes W, dW and db as reshaped slices of its flat buffers."""
    n_in, n_out = 4, 3
    x, W, b = layer(rng, 6, n_in, n_out)
    dz = rng.standard_normal((6, n_out))
    params = np.concatenate([np.zeros(2), W.ravel(), b])
    grads = np.full(params.size + 3, -7.0)
    dx = np.empty_like(x)
    K.dense_backward(dx, grads[2: 2 + W.size].reshape(n_in, n_out), grads[2 + W.size: 2 + W.size + n_out],
                     dz, x, params[2: 2 + W.size].reshape(n_in, n_out))
    np.testing.assert_allclose(grads[2: 2 + W.size], (x.T @ dz).ravel(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(grads[2 + W.size: -3], dz.sum(axis=0), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(grads[:2], -7.0)
    np.testing.assert_array_equal(grads[-3:], -7.0)
    np.testing.assert_allclose(dx, dz @ W.T, rtol=1e-13, atol=1e-15)
