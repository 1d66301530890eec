"""Tests of fastnn.kernels.losses against NumPy references, finite differences and (if installed) PyTorch.

Each ``<name>_forward`` is compared with the ``naive_*`` twin of its documented formula below,
each ``<name>_backward`` with central finite differences of the forward in float64 (on inputs
kept away from the clamps and kinks), the fused softmax/sigmoid gradients with the chain rule
and with finite differences through the activation, and the dispatchers with the kernels
they route to. Where PyTorch has the loss, values and gradients are compared with torch
itself when it is importable.
"""
import numpy as np
import pytest

from fastnn.kernels import activations as A
from fastnn.kernels import losses as K
from helpers import assert_gradient, away_from_zero, numerical_gradient

EPS = 1e-7  # the documented clamp of probabilities (Keras' epsilon)


# ---- references ---------------------------------------------------------------------------

def naive_mse(p, t):
    return np.mean((p - t) ** 2)


def naive_sse(p, t):
    return np.sum((p - t) ** 2)


def naive_mae(p, t):
    return np.mean(np.abs(p - t))


def naive_mape(p, t):
    return 100.0 * np.mean(np.abs(t - p) / np.maximum(np.abs(t), EPS))


def naive_msle(p, t):
    return np.mean((np.log1p(np.maximum(p, EPS)) - np.log1p(np.maximum(t, EPS))) ** 2)


def naive_cosine_similarity(p, t):
    """Keras: -mean over rows of <l2_normalize(p), l2_normalize(t)>, l2_normalize flooring |x|² at 1e-12."""
    pn = p / np.sqrt(np.maximum((p * p).sum(axis=1, keepdims=True), 1e-12))
    tn = t / np.sqrt(np.maximum((t * t).sum(axis=1, keepdims=True), 1e-12))
    return -np.mean((pn * tn).sum(axis=1))


def naive_cross_entropy(p, t):
    return np.mean(-(t * np.log(np.maximum(p, EPS))).sum(axis=1))


def naive_binary_cross_entropy(p, t):
    """torch.nn.BCELoss: each log clamped at -100."""
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
    return -np.mean(t * log_p + (1 - t) * log_q)


def naive_kl_divergence(p, t):
    t = np.clip(t, EPS, 1.0)
    p = np.clip(p, EPS, 1.0)
    return np.mean((t * np.log(t / p)).sum(axis=1))


def naive_perceptron(p, t):
    return np.mean(p != t)


def naive_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def naive_sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


# ---- inputs inside each loss's domain, away from its clamps and kinks ---------------------

B, C = 5, 4


def inputs_mse(rng):
    return rng.standard_normal((B, C)), rng.standard_normal((B, C))


def inputs_mae(rng):
    t = rng.standard_normal((B, C))
    return t + away_from_zero(rng, (B, C)), t


def inputs_mape(rng):
    t = away_from_zero(rng, (B, C), low=0.5)
    return t + away_from_zero(rng, (B, C)), t


def inputs_msle(rng):
    t = rng.uniform(0.0, 3.0, (B, C))
    t[0, :2] = [-0.5, 0.0]  # clamped to eps: a constant
    return rng.uniform(0.1, 3.0, (B, C)), t


def inputs_cross_entropy(rng):
    p = naive_softmax(rng.standard_normal((B, C)))
    t = np.eye(C)[rng.integers(0, C, B)]
    t[0] = naive_softmax(rng.standard_normal((1, C)))[0]  # a soft label too
    return p, t


def inputs_binary_cross_entropy(rng):
    t = rng.uniform(0.0, 1.0, (B, C))
    t[0] = [0.0, 1.0, 0.0, 1.0]
    return rng.uniform(0.05, 0.95, (B, C)), t


def inputs_kl_divergence(rng):
    return naive_softmax(rng.standard_normal((B, C))), naive_softmax(rng.standard_normal((B, C)))


def inputs_perceptron(rng):
    return (rng.random((B, C)) > 0.5).astype(float), (rng.random((B, C)) > 0.5).astype(float)


LOSSES = {  # name: (code, forward, backward, reference, inputs)
    "mse": (K.MSE, K.mse_forward, K.mse_backward, naive_mse, inputs_mse),
    "sse": (K.SSE, K.sse_forward, K.sse_backward, naive_sse, inputs_mse),
    "mae": (K.MAE, K.mae_forward, K.mae_backward, naive_mae, inputs_mae),
    "mape": (K.MAPE, K.mape_forward, K.mape_backward, naive_mape, inputs_mape),
    "msle": (K.MSLE, K.msle_forward, K.msle_backward, naive_msle, inputs_msle),
    "cosine_similarity": (K.COSINE_SIMILARITY, K.cosine_similarity_forward, K.cosine_similarity_backward,
                          naive_cosine_similarity, inputs_mse),
    "cross_entropy": (K.CROSS_ENTROPY, K.cross_entropy_forward, K.cross_entropy_backward,
                      naive_cross_entropy, inputs_cross_entropy),
    "binary_cross_entropy": (K.BINARY_CROSS_ENTROPY, K.binary_cross_entropy_forward,
                             K.binary_cross_entropy_backward, naive_binary_cross_entropy,
                             inputs_binary_cross_entropy),
    "kl_divergence": (K.KL_DIVERGENCE, K.kl_divergence_forward, K.kl_divergence_backward,
                      naive_kl_divergence, inputs_kl_divergence),
    "perceptron": (K.PERCEPTRON, K.perceptron_forward, K.perceptron_backward, naive_perceptron,
                   inputs_perceptron),
}
DIFFERENTIABLE = [name for name in LOSSES if name != "perceptron"]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_forward_matches_naive(name, dtype, rng):
    _, fwd, _, reference, inputs = LOSSES[name]
    p, t = (a.astype(dtype) for a in inputs(rng))
    value = fwd(p, t)
    assert isinstance(value, float)
    # Accumulated in float64 from the (rounded) inputs: as exact as the float64 reference.
    np.testing.assert_allclose(value, reference(p.astype(np.float64), t.astype(np.float64)), rtol=1e-12)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_backward_matches_finite_differences(name, rng):
    _, fwd, bwd, _, inputs = LOSSES[name]
    p, t = inputs(rng)
    dp = np.full_like(p, np.nan)
    bwd(dp, p, t)
    assert_gradient(dp, numerical_gradient(lambda: fwd(p, t), p))


@pytest.mark.parametrize("name", LOSSES)
def test_backward_float32_matches_float64(name, rng):
    _, _, bwd, _, inputs = LOSSES[name]
    p, t = (a.astype(np.float32) for a in inputs(rng))
    d32 = np.full_like(p, np.nan)
    bwd(d32, p, t)
    d64 = np.full(p.shape, np.nan)
    bwd(d64, p.astype(np.float64), t.astype(np.float64))
    assert d32.dtype == np.float32
    np.testing.assert_allclose(d32, d64, rtol=1e-6, atol=1e-7 * np.abs(d64).max())


@pytest.mark.parametrize("name", LOSSES)
def test_backward_overwrites_every_element(name, rng):
    _, _, bwd, _, inputs = LOSSES[name]
    p, t = inputs(rng)
    d = np.full_like(p, np.nan)
    bwd(d, p, t)
    assert np.all(np.isfinite(d))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_forward_propagates_a_nan_prediction(name, dtype, rng):
    """A NaN in pred (a diverged network) gives a NaN loss, never a clamped finite one:
    train_batches stops on a non-finite loss and would otherwise train on."""
    _, fwd, _, _, inputs = LOSSES[name]
    p, t = (a.astype(dtype) for a in inputs(rng))
    j = int(np.argmax(np.abs(t[0])))  # where the target weighs the prediction
    p[0, j] = np.nan
    assert np.isnan(fwd(p, t))
    p[0, :] = np.nan
    assert np.isnan(fwd(p, t))


def test_cosine_similarity_floors_a_zero_norm_row(rng):
    """A row of pred with |p|² < 1e-12 is divided by the floor 1e-6: the loss is linear there."""
    t = rng.standard_normal((2, C))
    p = rng.standard_normal((2, C))
    p[1] = 1e-8 * rng.standard_normal(C)
    value = K.cosine_similarity_forward(p, t)
    np.testing.assert_allclose(value, naive_cosine_similarity(p, t), rtol=1e-12)
    dp = np.empty_like(p)
    K.cosine_similarity_backward(dp, p, t)
    # A step of 1e-10 keeps the tiny row's norm under the floor.
    numeric = numerical_gradient(lambda: K.cosine_similarity_forward(p, t), p, eps=1e-10)
    np.testing.assert_allclose(dp[1], numeric[1], rtol=1e-5)
    np.testing.assert_allclose(dp[1], -t[1] / (1e-6 * np.linalg.norm(t[1]) * 2), rtol=1e-12)


def test_clamped_forward_values():
    """The clamps are those documented: eps inside logs, -100 for BCE's logs, [eps, 1] for KL."""
    one_hot = np.array([[0.0, 1.0]])
    assert K.cross_entropy_forward(np.array([[1.0, 0.0]]), one_hot) == pytest.approx(-np.log(EPS), rel=1e-14)
    assert K.binary_cross_entropy_forward(np.array([[0.0, 1.0]]), one_hot[:, ::-1].copy()) \
        == pytest.approx(100.0, rel=1e-14)
    assert K.binary_cross_entropy_forward(np.array([[0.0, 1.0]]), one_hot) == 0.0
    assert K.msle_forward(np.array([[-3.0]]), np.array([[0.0]])) == 0.0
    assert K.mape_forward(np.array([[1e-7]]), np.array([[0.0]])) == pytest.approx(100.0, rel=1e-12)
    p, t = np.array([[0.0, 1.0]]), np.array([[0.5, 0.5]])
    assert K.kl_divergence_forward(p, t) == pytest.approx(naive_kl_divergence(p, t), rel=1e-14)
    assert K.kl_divergence_forward(p, t) == pytest.approx(0.5 * np.log(0.5 / EPS) + 0.5 * np.log(0.5), rel=1e-14)


def test_backward_is_zero_where_the_forward_is_clamped():
    d = np.full((1, 3), np.nan)
    K.cross_entropy_backward(d, np.array([[0.0, 1e-8, 0.5]]), np.array([[1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(d, [[0.0, 0.0, -2.0]])
    K.msle_backward(d, np.array([[-1.0, 0.0, 1.0]]), np.array([[1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(d[0, :2], [0.0, 0.0])
    assert d[0, 2] == 0.0  # log1p(1) - log1p(1)
    K.kl_divergence_backward(d, np.array([[1e-9, 1.0, 0.25]]), np.array([[0.5, 0.5, 0.5]]))
    np.testing.assert_array_equal(d, [[0.0, 0.0, -2.0]])


def test_mae_backward_is_zero_where_pred_equals_target():
    d = np.full((1, 3), np.nan)
    K.mae_backward(d, np.array([[1.0, 2.0, -1.0]]), np.array([[1.0, 1.0, 1.0]]))
    np.testing.assert_array_equal(d, [[0.0, 1 / 3, -1 / 3]])


def test_bce_backward_divides_by_torch_floor_at_saturated_probabilities():
    d = np.full((1, 2), np.nan)
    K.binary_cross_entropy_backward(d, np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(d, [[-1.0 / (1e-12 * 2), 1.0 / (1e-12 * 2)]], rtol=1e-14)


# ---- fused activation + loss gradients ----------------------------------------------------

TARGETS = ["one_hot", "soft", "unnormalized"]


def make_targets(kind, rng, shape):
    if kind == "one_hot":
        return np.eye(shape[1])[rng.integers(0, shape[1], shape[0])]
    if kind == "soft":
        return naive_softmax(rng.standard_normal(shape))
    t = rng.uniform(0.0, 1.0, shape)
    t[:, 0] = 0.0
    return t


@pytest.mark.parametrize("target_kind", TARGETS)
def test_softmax_cross_entropy_backward(target_kind, rng):
    z = 2 * rng.standard_normal((B, C))
    t = make_targets(target_kind, rng, z.shape)
    p = naive_softmax(z)
    dz = np.full_like(z, np.nan)
    K.softmax_cross_entropy_backward(dz, p, t)
    if target_kind == "one_hot":
        np.testing.assert_allclose(dz, (p - t) / B, rtol=1e-14, atol=1e-17)
    dp = np.empty_like(p)
    K.cross_entropy_backward(dp, p, t)
    chain = np.empty_like(p)
    A.activation_backward(chain, dp, p, A.SOFTMAX, 0.0)
    np.testing.assert_allclose(dz, chain, rtol=1e-10, atol=1e-14)

    def loss_of_logits():
        probs = np.empty_like(z)
        A.bias_activation_forward(probs, z, z[0, :0], A.SOFTMAX, 0.0)
        return K.cross_entropy_forward(probs, t)

    assert_gradient(dz, numerical_gradient(loss_of_logits, z))


@pytest.mark.parametrize("target_kind", ["binary", "soft"])
def test_sigmoid_binary_cross_entropy_backward(target_kind, rng):
    z = 2 * rng.standard_normal((B, C))
    t = (rng.random(z.shape) > 0.5).astype(float) if target_kind == "binary" else rng.random(z.shape)
    p = naive_sigmoid(z)
    dz = np.full_like(z, np.nan)
    K.sigmoid_binary_cross_entropy_backward(dz, p, t)
    np.testing.assert_allclose(dz, (p - t) / z.size, rtol=1e-14, atol=1e-17)
    dp = np.empty_like(p)
    K.binary_cross_entropy_backward(dp, p, t)
    chain = np.empty_like(p)
    A.activation_backward(chain, dp, p, A.SIGMOID, 0.0)
    np.testing.assert_allclose(dz, chain, rtol=1e-10, atol=1e-14)

    def loss_of_logits():
        probs = np.empty_like(z)
        A.bias_activation_forward(probs, z, z[0, :0], A.SIGMOID, 0.0)
        return K.binary_cross_entropy_forward(probs, t)

    assert_gradient(dz, numerical_gradient(loss_of_logits, z))


@pytest.mark.parametrize("fused", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_fused_backward_float32(fused, rng):
    z = 2 * rng.standard_normal((B, C))
    if fused == "softmax_cross_entropy":
        p, t, kernel = naive_softmax(z), make_targets("soft", rng, z.shape), K.softmax_cross_entropy_backward
    else:
        p, t, kernel = naive_sigmoid(z), rng.random(z.shape), K.sigmoid_binary_cross_entropy_backward
    d64 = np.empty_like(p)
    kernel(d64, p, t)
    d32 = np.full(p.shape, np.nan, dtype=np.float32)
    kernel(d32, p.astype(np.float32), t.astype(np.float32))
    np.testing.assert_allclose(d32, d64, rtol=1e-5, atol=1e-7)


# ---- dispatchers --------------------------------------------------------------------------

def test_loss_codes_are_distinct():
    codes = [spec[0] for spec in LOSSES.values()]
    assert sorted(codes) == list(range(len(LOSSES)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dispatchers_route_each_code(dtype, rng):
    # Probabilities both: inside every loss's domain, and every loss gives a different value.
    p = rng.uniform(0.05, 0.95, (B, C)).astype(dtype)
    t = rng.uniform(0.05, 0.95, (B, C)).astype(dtype)
    values = {}
    for name, (code, fwd, bwd, _, _) in LOSSES.items():
        values[name] = K.loss_forward(code, p, t)
        assert values[name] == fwd(p, t), name
        expected = np.full_like(p, np.nan)
        bwd(expected, p, t)
        got = np.full_like(p, np.nan)
        K.loss_backward(code, got, p, t)
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert len(set(values.values())) == len(values), values


# ---- the perceptron criterion -------------------------------------------------------------

def test_perceptron_forward_is_the_error_rate():
    pred = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    target = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    assert K.perceptron_forward(pred, target) == pytest.approx(2 / 6, rel=1e-15)
    assert K.perceptron_forward(target, target) == 0.0


def test_perceptron_backward_is_pred_minus_target_summed_not_averaged(rng):
    pred, target = inputs_perceptron(rng)
    d = np.full_like(pred, np.nan)
    K.perceptron_backward(d, pred, target)
    np.testing.assert_array_equal(d, pred - target)


# ---- PyTorch as an oracle (optional) ------------------------------------------------------

def _torch_value_and_grad(torch_loss, p, t, transform=None):
    torch = pytest.importorskip("torch")
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    inp = transform(pt) if transform else pt
    value = torch_loss(inp, torch.tensor(t, dtype=torch.float64))
    value.backward()
    return value.item(), pt.grad.numpy()


@pytest.mark.parametrize("name,make_loss", [
    ("mse", lambda nn: nn.MSELoss()),
    ("sse", lambda nn: nn.MSELoss(reduction="sum")),
    ("mae", lambda nn: nn.L1Loss()),
    ("binary_cross_entropy", lambda nn: nn.BCELoss()),
])
def test_against_torch(name, make_loss, rng):
    torch = pytest.importorskip("torch")
    _, fwd, bwd, _, inputs = LOSSES[name]
    p, t = inputs(rng)
    value, grad = _torch_value_and_grad(make_loss(torch.nn), p, t)
    assert fwd(p, t) == pytest.approx(value, rel=1e-12)
    dp = np.empty_like(p)
    bwd(dp, p, t)
    np.testing.assert_allclose(dp, grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("target_kind", ["class_indices", "probabilities"])
def test_cross_entropy_on_softmax_matches_torch_cross_entropy_on_logits(target_kind, rng):
    torch = pytest.importorskip("torch")
    z = 2 * rng.standard_normal((B, C))
    labels = rng.integers(0, C, B)
    t = np.eye(C)[labels] if target_kind == "class_indices" else naive_softmax(rng.standard_normal((B, C)))
    zt = torch.tensor(z, requires_grad=True)
    target = torch.tensor(labels) if target_kind == "class_indices" else torch.tensor(t)
    value = torch.nn.CrossEntropyLoss()(zt, target)
    value.backward()
    p = naive_softmax(z)
    assert K.cross_entropy_forward(p, t) == pytest.approx(value.item(), rel=1e-12)
    dz = np.empty_like(z)
    K.softmax_cross_entropy_backward(dz, p, t)
    np.testing.assert_allclose(dz, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_kl_divergence_matches_torch_batchmean_on_log_probs(rng):
    torch = pytest.importorskip("torch")
    p, t = inputs_kl_divergence(rng)
    value, grad = _torch_value_and_grad(torch.nn.KLDivLoss(reduction="batchmean"), p, t, transform=torch.log)
    assert K.kl_divergence_forward(p, t) == pytest.approx(value, rel=1e-12)
    dp = np.empty_like(p)
    K.kl_divergence_backward(dp, p, t)
    np.testing.assert_allclose(dp, grad, rtol=1e-12, atol=1e-15)
