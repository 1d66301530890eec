"""Tests of fastnn.kernels.activations against closed-form NumPy references and finite differences.

Every primitive ``<name>_forward`` is compared with its ``naive_*`` twin below (computed in
float64), every ``<name>_backward`` with central finite differences of the forward, and the
2-D drivers ``bias_activation_forward``/``activation_backward`` with the same references, for
every activation code, with and without bias, in place and out of place.
"""
import numpy as np
import pytest

from fastnn.kernels import activations as K
from helpers import FORWARD_RTOL, assert_gradient, away_from_zero, numerical_gradient

LEAKY_ALPHA = 0.1
ELU_ALPHA = 1.3


# ---- references ---------------------------------------------------------------------------

def naive_identity(x):
    return np.array(x, dtype=np.float64)


def naive_sigmoid(x):
    """1 / (1 + e^-x) = exp(-log(1 + e^-x)); logaddexp neither overflows nor loses e^x for x << 0."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(x, dtype=np.float64)))


def naive_tanh(x):
    return np.tanh(np.asarray(x, dtype=np.float64))


def naive_relu(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, 0.0)


def naive_leaky_relu(x, alpha):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, alpha * x)


def naive_elu(x, alpha):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def naive_softmax(x):
    """Row-wise (last axis) softmax, torch.softmax(x, dim=-1)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def naive_heaviside(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, 1.0, 0.0)


def naive_activation(code, x, alpha):
    """The activation with integer ``code`` applied to the rows of ``x``."""
    return {
        K.IDENTITY: naive_identity, K.SIGMOID: naive_sigmoid, K.TANH: naive_tanh,
        K.RELU: naive_relu, K.SOFTMAX: naive_softmax, K.HEAVISIDE: naive_heaviside,
        K.LEAKY_RELU: lambda v: naive_leaky_relu(v, alpha), K.ELU: lambda v: naive_elu(v, alpha),
    }[code](x)


def naive_activation_backward(code, dout, x, alpha):
    """dL/dx from dL/dout, by each activation's derivative written in terms of its input."""
    x = np.asarray(x, dtype=np.float64)
    dout = np.asarray(dout, dtype=np.float64)
    if code == K.IDENTITY or code == K.HEAVISIDE:  # the step is straight-through
        return dout.copy()
    if code == K.SIGMOID:
        s = naive_sigmoid(x)
        return dout * s * (1 - s)
    if code == K.TANH:
        return dout * (1 - np.tanh(x) ** 2)
    if code == K.RELU:
        return np.where(x > 0, dout, 0.0)
    if code == K.LEAKY_RELU:
        return np.where(x > 0, dout, alpha * dout)
    if code == K.ELU:
        return np.where(x > 0, dout, dout * alpha * np.exp(np.minimum(x, 0.0)))
    s = naive_softmax(x)
    return s * (dout - (dout * s).sum(axis=-1, keepdims=True))


# ---- the primitives -----------------------------------------------------------------------

PRIMITIVES = {  # name: (code, forward, backward, alpha or None)
    "identity": (K.IDENTITY, K.identity_forward, K.identity_backward, None),
    "sigmoid": (K.SIGMOID, K.sigmoid_forward, K.sigmoid_backward, None),
    "tanh": (K.TANH, K.tanh_forward, K.tanh_backward, None),
    "relu": (K.RELU, K.relu_forward, K.relu_backward, None),
    "leaky_relu": (K.LEAKY_RELU, K.leaky_relu_forward, K.leaky_relu_backward, LEAKY_ALPHA),
    "elu": (K.ELU, K.elu_forward, K.elu_backward, ELU_ALPHA),
    "softmax": (K.SOFTMAX, K.softmax_forward, K.softmax_backward, None),
    "heaviside": (K.HEAVISIDE, K.heaviside_forward, K.heaviside_backward, None),
}
DTYPES = [np.float32, np.float64]
CODES = list(range(8))
ALPHA_OF_CODE = {K.LEAKY_RELU: LEAKY_ALPHA, K.ELU: ELU_ALPHA}


def forward(name, out, x):
    _, fwd, _, alpha = PRIMITIVES[name]
    fwd(out, x) if alpha is None else fwd(out, x, alpha)


def backward(name, dx, dout, out):
    _, _, bwd, alpha = PRIMITIVES[name]
    bwd(dx, dout, out) if alpha is None else bwd(dx, dout, out, alpha)


def reference(name, x):
    code, _, _, alpha = PRIMITIVES[name]
    return naive_activation(code, x, alpha)


def row_size(name):
    """Softmax normalises its whole vector: keep it the length of a row of class scores."""
    return 13 if name == "softmax" else 1001


@pytest.fixture
def rng():
    return np.random.default_rng(20240607)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", PRIMITIVES)
def test_forward_matches_naive(name, dtype, rng):
    x = (3 * rng.standard_normal(row_size(name))).astype(dtype)
    out = np.full_like(x, np.nan)
    forward(name, out, x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, reference(name, x), rtol=FORWARD_RTOL[dtype],
                               atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_forward_in_place_equals_out_of_place(name, rng):
    x = 3 * rng.standard_normal(row_size(name))
    out = np.empty_like(x)
    forward(name, out, x)
    x_in_place = x.copy()
    forward(name, x_in_place, x_in_place)
    # Not bit for bit: with aliased arrays LLVM keeps the scalar loop, and fastmath's reassoc
    # lets the vectorized one sum softmax's denominator in another order.
    np.testing.assert_allclose(x_in_place, out, rtol=4 * np.finfo(np.float64).eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "elu", "softmax"])
def test_forward_is_stable_for_large_inputs(name, dtype, rng):
    # Multiples of 2.5 up to +-1000: exact in float32, and so are their differences, so the
    # only rounding left is the kernel's own. exp(1000) overflows either dtype.
    x = (2.5 * rng.integers(-400, 401, size=row_size(name))).astype(dtype)
    x[:2] = [1000.0, -1000.0]
    out = np.full_like(x, np.nan)
    forward(name, out, x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, reference(name, x), rtol=FORWARD_RTOL[dtype],
                               atol=np.finfo(dtype).tiny)
    if name == "sigmoid":
        assert out[0] == 1 and out[1] == 0
        assert np.all((out >= 0) & (out <= 1))
    if name == "softmax":
        np.testing.assert_allclose(out.sum(dtype=np.float64), 1.0, rtol=4 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_rows_of_large_logits_sum_to_one(dtype, rng):
    rows = (1e3 * rng.standard_normal((6, 10))).astype(dtype)
    rows[0] = 88.0   # exp(88) is near float32's limit, exp(89) beyond it
    rows[1, 3] = 1e4
    for row in rows:
        out = np.empty_like(row)
        K.softmax_forward(out, row)
        assert np.all(np.isfinite(out)) and np.all(out >= 0)
        np.testing.assert_allclose(out.sum(dtype=np.float64), 1.0, rtol=4 * np.finfo(dtype).eps)
    out = np.empty_like(rows[1])
    K.softmax_forward(out, rows[1])
    assert out[3] == 1


def test_heaviside_forward_is_the_step_with_zero_at_zero():
    x = np.array([-2.0, -1e-300, -0.0, 0.0, 1e-300, 3.0])
    out = np.full_like(x, np.nan)
    K.heaviside_forward(out, x)
    np.testing.assert_array_equal(out, [0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_heaviside_backward_is_straight_through(dtype, rng):
    dout = rng.standard_normal(50).astype(dtype)
    out = (rng.random(50) > 0.5).astype(dtype)
    dx = np.full_like(dout, np.nan)
    K.heaviside_backward(dx, dout, out)
    np.testing.assert_array_equal(dx, dout)


@pytest.mark.parametrize("name", [n for n in PRIMITIVES if n != "heaviside"])
def test_backward_matches_finite_differences(name, rng):
    x = away_from_zero(rng, row_size(name) // 10 + 3)
    dout = rng.standard_normal(x.size)
    out = np.empty_like(x)
    forward(name, out, x)
    dx = np.full_like(x, np.nan)
    backward(name, dx, dout, out)

    def weighted_output():
        y = np.empty_like(x)
        forward(name, y, x)
        return float(np.dot(dout, y))

    assert_gradient(dx, numerical_gradient(weighted_output, x))


@pytest.mark.parametrize("name", PRIMITIVES)
def test_backward_in_place_equals_out_of_place(name, rng):
    x = away_from_zero(rng, row_size(name))
    out = np.empty_like(x)
    forward(name, out, x)
    dout = rng.standard_normal(x.size)
    dx = np.empty_like(x)
    backward(name, dx, dout, out)
    d = dout.copy()
    backward(name, d, d, out)
    np.testing.assert_allclose(d, dx, rtol=4 * np.finfo(np.float64).eps, atol=1e-300)


def test_derivatives_at_zero_follow_torch():
    """At x = 0: relu' = 0, leaky_relu' = alpha, elu' = alpha (torch's backward conventions)."""
    zero, one = np.zeros(1), np.ones(1)
    for name, expected in [("relu", 0.0), ("leaky_relu", LEAKY_ALPHA), ("elu", ELU_ALPHA)]:
        out = np.empty(1)
        forward(name, out, zero)
        dx = np.full(1, np.nan)
        backward(name, dx, one, out)
        assert dx[0] == pytest.approx(expected, rel=1e-15), name


# ---- the 2-D drivers ----------------------------------------------------------------------

# One row, a few rows, and a tall matrix whose row length is no multiple of a vector width.
SHAPES = {"one_row": (1, 7), "small": (3, 7), "tall": (523, 33)}
DRIVER_TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("in_place", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", CODES)
def test_bias_activation_forward_drivers(code, dtype, with_bias, in_place, shape, rng):
    x = (2 * rng.standard_normal(SHAPES[shape])).astype(dtype)
    b = rng.standard_normal(x.shape[1]).astype(dtype)
    if not with_bias:
        b = b[:0]
    alpha = ALPHA_OF_CODE.get(code, 0.37)
    z = x.astype(np.float64) + (b.astype(np.float64) if with_bias else 0.0)
    if dtype == np.float32:
        z = z.astype(np.float32)  # the kernel adds the bias in float32
    expected = naive_activation(code, z, alpha)
    x_in = x.copy()
    out = x_in if in_place else np.full_like(x, np.nan)
    K.bias_activation_forward(out, x_in, b, code, alpha)
    if not in_place:
        np.testing.assert_array_equal(x_in, x)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, **DRIVER_TOL[dtype])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("in_place", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", CODES)
def test_activation_backward_drivers(code, dtype, in_place, shape, rng):
    alpha = ALPHA_OF_CODE.get(code, 0.37)
    x = away_from_zero(rng, SHAPES[shape]).astype(dtype)
    out = naive_activation(code, x, alpha).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    expected = naive_activation_backward(code, dout, x, alpha)
    d = dout.copy()
    dx = d if in_place else np.full_like(d, np.nan)
    K.activation_backward(dx, d, out, code, alpha)
    if not in_place:
        np.testing.assert_array_equal(d, dout)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, expected, **DRIVER_TOL[dtype])


@pytest.mark.parametrize("code", CODES)
def test_driver_rows_are_independent(code, rng):
    """Each row is activated on its own: a row's output does not depend on the other rows."""
    alpha = ALPHA_OF_CODE.get(code, 0.37)
    x = rng.standard_normal((4, 6))
    b = rng.standard_normal(6)
    out = np.empty_like(x)
    K.bias_activation_forward(out, x, b, code, alpha)
    for i in range(4):
        row = np.empty((1, 6))
        K.bias_activation_forward(row, x[i:i + 1].copy(), b, code, alpha)
        np.testing.assert_array_equal(row[0], out[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_nan_as_torch_relu_does(dtype):
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, -1.0, 0.0, 2.0, -np.inf, np.inf], dtype)
    out = np.zeros_like(x)
    K.relu_forward(out, x)
    np.testing.assert_array_equal(out, torch.relu(torch.from_numpy(x)).numpy())
