"""Tests of fastnn.kernels.network on small float64 networks described by hand-built tables.

``network_forward`` is compared with a NumPy forward pass (``naive_network_forward``),
``network_backward``'s full gradient with central finite differences of
``loss_forward(network_forward(...))`` with respect to every parameter, and ``train_batches``
with the same steps written out in NumPy (gather, forward, backward, the optimizers' rules).
"""
from dataclasses import dataclass

import numpy as np
import pytest

from fastnn.kernels import activations as A
from fastnn.kernels import inference as I
from fastnn.kernels import losses as L
from fastnn.kernels import network as N
from fastnn.kernels import optimizers as O
from fastnn.user_losses import loss_kernels  # weighted=False: no step here weighs its rows
from helpers import assert_gradient, naive_dropout_keep, numerical_gradient

# Pre-activations and prediction errors stay this far from a kink, so that no finite
# difference step of 1e-6 crosses one.
KINK_MARGIN = 1e-4
KINKED = (A.RELU, A.LEAKY_RELU, A.ELU)


# ---- references ---------------------------------------------------------------------------

def naive_activation(code, z, alpha):
    if code == A.IDENTITY:
        return z.copy()
    if code == A.SIGMOID:
        return np.exp(-np.logaddexp(0.0, -z))
    if code == A.TANH:
        return np.tanh(z)
    if code == A.RELU:
        return np.where(z > 0, z, 0.0)
    if code == A.LEAKY_RELU:
        return np.where(z > 0, z, alpha * z)
    if code == A.ELU:
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if code == A.SOFTMAX:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return np.where(z > 0, 1.0, 0.0)


def naive_network_forward(net, params, x, training=False, rng=(0, 0)):
    """(output, [(activation code, pre-activation) per layer]) of the network on the rows of x;
    in ``training``, Dropout layers apply the mask of ``naive_dropout_keep`` for key, step = ``rng``."""
    h, pre = np.asarray(x, dtype=np.float64), []
    for k, ((w, b, n_in, n_out, act, kind), (alpha, eps)) in enumerate(zip(net.layers, net.alphas)):
        if kind == N.BATCHNORM_LAYER:  # torch.nn.BatchNorm1d: batch statistics in training
            gamma, beta, mean, var = params[w: w + 4 * n_out].reshape(4, n_out)
            if training:
                mean, var = h.mean(axis=0), h.var(axis=0)
            h = gamma * (h - mean) / np.sqrt(var + eps) + beta
            continue
        if kind == N.DROPOUT_LAYER:
            if training:
                h = h * naive_dropout_keep(rng[0], rng[1], k, h.shape, alpha) / (1.0 - alpha)
            continue
        z = h @ params[w: w + n_in * n_out].reshape(n_in, n_out) + params[b: b + n_out] if kind == N.DENSE_LAYER else h
        pre.append((act, z))
        h = naive_activation(act, z, alpha)
    return h, pre


def naive_sgd_update(p, g, v, lr, momentum):
    """torch.optim.SGD, dampening 0: v = m v + g (v starting at 0, so v = g first); p -= lr v."""
    v[:] = momentum * v + g
    p -= lr * v


def naive_adam_update(p, g, m, v, t, lr, beta1, beta2, eps):
    """torch.optim.Adam, step t counting from 1."""
    m[:] = beta1 * m + (1 - beta1) * g
    v[:] = beta2 * v + (1 - beta2) * g * g
    p -= lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)


# ---- building networks by hand ------------------------------------------------------------

@dataclass
class Net:
    layers: np.ndarray   # int64 (L, 6), columns as N.W_OFF .. N.KIND
    alphas: np.ndarray   # float64 (L, 2)
    params: np.ndarray   # flat [W1, b1, W2, b2, ...]
    frozen: np.ndarray   # indices of params no optimizer trains (BatchNorm's running statistics)

    @property
    def n_in(self):
        return int(self.layers[0, N.N_IN])

    @property
    def n_out(self):
        return int(self.layers[-1, N.N_OUT])


def dense(n_out, act, alpha=0.0):
    return ("dense", n_out, act, alpha)


def activation(act, alpha=0.0):
    return ("activation", None, act, alpha)


def dropout(rate):
    return ("dropout", None, A.IDENTITY, rate)


def batchnorm(momentum, epsilon):
    return ("batchnorm", None, A.IDENTITY, (momentum, epsilon))


def build(n_in, spec, rng, dtype=np.float64):
    """The table and initial parameters of the network ``spec`` (dense(...)/activation(...) items)."""
    rows, alphas, chunks, offset, width, frozen = [], [], [], 0, n_in, []
    for kind, n_out, act, alpha in spec:
        if kind == "dense":
            rows.append([offset, offset + width * n_out, width, n_out, act, N.DENSE_LAYER])
            chunks += [rng.standard_normal(width * n_out) / np.sqrt(width), 0.5 * rng.standard_normal(n_out)]
            offset += width * n_out + n_out
            width = n_out
        elif kind == "batchnorm":  # gamma, beta, running mean and variance, none of them trivial
            rows.append([offset, offset + width, width, width, act, N.BATCHNORM_LAYER])
            chunks += [rng.uniform(0.5, 1.5, width), rng.standard_normal(width), rng.standard_normal(width),
                       rng.uniform(0.5, 2.0, width)]
            frozen += list(range(offset + 2 * width, offset + 4 * width))
            offset += 4 * width
        else:
            rows.append([0, 0, width, width, act, N.DROPOUT_LAYER if kind == "dropout" else N.ACTIVATION_LAYER])
        alphas.append(alpha if kind == "batchnorm" else (alpha, 0.0))
    return Net(np.array(rows, dtype=np.int64), np.array(alphas, dtype=np.float64).reshape(-1, 2),
               np.concatenate(chunks).astype(dtype), np.array(frozen, dtype=np.int64))


def workspace(net, rows, dtype=np.float64):
    """The Workspace (acts, act_off, deltas, targets, stats) as both backends lay it out, filled with NaN."""
    act_off, n_acts, deltas_shape, n_targets, n_stats = N.workspace_layout(net.layers, rows)
    return N.Workspace(np.full(n_acts, np.nan, dtype=dtype), act_off, np.full(deltas_shape, np.nan, dtype=dtype),
                       np.full(n_targets, np.nan, dtype=dtype), np.full(n_stats, np.nan))


def network(net, params=None, rng=None):
    """The kernels' Network bundle of ``net`` (with other ``params`` or ``rng`` than its own and RNG)."""
    return N.Network(net.params if params is None else params, net.layers, net.alphas, RNG if rng is None else rng)


def make_targets(loss, pred_shape, rng):
    rows, cols = pred_shape
    if loss in (L.CROSS_ENTROPY, L.KL_DIVERGENCE):
        if loss == L.CROSS_ENTROPY and cols > 1:
            return np.eye(cols)[rng.integers(0, cols, rows)]
        e = np.exp(rng.standard_normal(pred_shape))
        return e / e.sum(axis=1, keepdims=True)
    if loss == L.BINARY_CROSS_ENTROPY:
        return (rng.random(pred_shape) > 0.5).astype(float)
    if loss == L.MSLE:
        return rng.uniform(0.0, 2.0, pred_shape)
    if loss == L.MAPE:
        return rng.uniform(1.0, 3.0, pred_shape) * rng.choice([-1.0, 1.0], pred_shape)
    return rng.standard_normal(pred_shape)


# (name, spec, loss); every network takes 4 inputs. Hidden layers cover every smooth
# activation and the kinked ones; the fused pairs appear as a Dense activation and as a bare
# Activation layer at the end.
NETWORKS = {
    "tanh_softmax_ce_fused": ([dense(5, A.TANH), dense(3, A.SOFTMAX)], L.CROSS_ENTROPY),
    "leaky_sigmoid_bce_fused": ([dense(5, A.LEAKY_RELU, 0.1), dense(2, A.SIGMOID)], L.BINARY_CROSS_ENTROPY),
    "identity_then_bare_softmax_ce_fused": ([dense(5, A.SIGMOID), dense(3, A.IDENTITY), activation(A.SOFTMAX)],
                                            L.CROSS_ENTROPY),
    "bare_tanh_in_the_middle_mse": ([dense(6, A.IDENTITY), activation(A.TANH), dense(3, A.IDENTITY)], L.MSE),
    "bare_leaky_first_sse": ([activation(A.LEAKY_RELU, 0.2), dense(5, A.ELU, 0.7), dense(2, A.IDENTITY)], L.SSE),
    "elu_mae": ([dense(5, A.ELU, 1.3), dense(3, A.IDENTITY)], L.MAE),
    "relu_cosine": ([dense(7, A.RELU), dense(3, A.IDENTITY)], L.COSINE_SIMILARITY),
    "elu_softmax_kld": ([dense(5, A.ELU, 1.0), dense(4, A.SOFTMAX)], L.KL_DIVERGENCE),
    "tanh_sigmoid_msle": ([dense(5, A.TANH), dense(3, A.SIGMOID)], L.MSLE),
    "leaky_identity_mape": ([dense(5, A.LEAKY_RELU, 0.05), dense(2, A.IDENTITY)], L.MAPE),
    "sigmoid_then_ce_unfused": ([dense(5, A.TANH), dense(3, A.SIGMOID)], L.CROSS_ENTROPY),
    "softmax_then_bce_unfused": ([dense(5, A.TANH), dense(3, A.SOFTMAX)], L.BINARY_CROSS_ENTROPY),
    "three_hidden_layers_ce": ([dense(6, A.ELU, 0.5), dense(5, A.TANH), dense(4, A.LEAKY_RELU, 0.3),
                                dense(3, A.SOFTMAX)], L.CROSS_ENTROPY),
    "single_layer_softmax_ce": ([dense(3, A.SOFTMAX)], L.CROSS_ENTROPY),
    "dropout_between_dense_ce": ([dense(6, A.TANH), dropout(0.4), dense(3, A.SOFTMAX)], L.CROSS_ENTROPY),
    "dropout_on_the_input_and_twice_mse": ([dropout(0.25), dense(6, A.SIGMOID), dropout(0.5), dropout(0.2),
                                            dense(2, A.IDENTITY)], L.MSE),
    "dropout_after_a_softmax_mse": ([dense(5, A.TANH), dense(3, A.SOFTMAX), dropout(0.3)], L.MSE),
    "batchnorm_between_dense_ce": ([dense(5, A.TANH), batchnorm(0.1, 1e-3), dense(3, A.SOFTMAX)], L.CROSS_ENTROPY),
    "batchnorm_on_the_input_and_after_elu_mse": ([batchnorm(0.2, 1e-2), dense(5, A.ELU, 1.0), batchnorm(0.1, 1e-5),
                                                  dense(2, A.IDENTITY)], L.MSE),
    "batchnorm_last_mse": ([dense(5, A.SIGMOID), batchnorm(0.5, 1e-3)], L.MSE),
}
RNG = np.array([1234, 17], dtype=np.int64)  # random key and step for Dropout
N_IN, ROWS = 4, 6


def setup_network(name, seed=0, rows=ROWS):
    spec, loss = NETWORKS[name]
    rng = np.random.default_rng(seed)
    net = build(N_IN, spec, rng)
    x = rng.standard_normal((rows, N_IN))
    target = make_targets(loss, (rows, net.n_out), rng)
    return net, loss, x, target


@pytest.mark.parametrize("name", NETWORKS)
def test_network_forward_matches_naive(name):
    net, _, x, _ = setup_network(name)
    work = workspace(net, ROWS)
    for training in (False, True):
        pred = N.network_forward(network(net), x, work, training)
        expected = naive_network_forward(net, net.params, x, training, RNG)[0]
        np.testing.assert_allclose(pred, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NETWORKS)
def test_network_backward_matches_finite_differences(name):
    net, loss, x, target = setup_network(name)
    _, pre = naive_network_forward(net, net.params, x, True, RNG)
    for act, z in pre:  # the chosen seed keeps clear of kinks; fail loudly if it stops doing so
        if act in KINKED:
            assert np.abs(z).min() > KINK_MARGIN
    if loss == L.MAE:
        assert np.abs(naive_network_forward(net, net.params, x, True, RNG)[0] - target).min() > KINK_MARGIN
    work = workspace(net, ROWS)
    N.network_forward(network(net), x, work, True)
    grads = np.full_like(net.params, np.nan)
    N.network_backward(network(net), grads, x, work, loss, target, loss_fns=loss_kernels(loss, x.dtype, weighted=False))

    fd_work = workspace(net, ROWS)

    def loss_value():  # the training-mode loss, with the same Dropout masks
        pred = N.network_forward(network(net), x, fd_work, True)
        return L.loss_forward(loss, pred, target)

    # BatchNorm's running statistics get no gradient (their slots are left as they were) and do
    # not enter the training-mode loss.
    assert np.isnan(grads[net.frozen]).all()
    grads[net.frozen] = 0.0
    assert_gradient(grads, numerical_gradient(loss_value, net.params))


@pytest.mark.slow  # compiles the float32 walkers for this test alone; finite differences check the backward by default
def test_network_backward_float32_matches_float64():
    net, loss, x, target = setup_network("three_hidden_layers_ce")
    results = []
    for dtype in (np.float64, np.float32):
        params = net.params.astype(dtype)
        work = workspace(net, ROWS, dtype)
        xd, td = x.astype(dtype), target.astype(dtype)
        N.network_forward(network(net, params), xd, work, True)
        grads = np.full_like(params, np.nan)
        N.network_backward(network(net, params), grads, xd, work, loss, td, loss_fns=loss_kernels(loss, dtype, weighted=False))
        assert grads.dtype == dtype
        results.append(grads)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-6)


def test_fused_loss_activation():
    assert N.fused_loss_activation(L.CROSS_ENTROPY, A.SOFTMAX)
    assert N.fused_loss_activation(L.BINARY_CROSS_ENTROPY, A.SIGMOID)
    assert not N.fused_loss_activation(L.CROSS_ENTROPY, A.SIGMOID)
    assert not N.fused_loss_activation(L.BINARY_CROSS_ENTROPY, A.SOFTMAX)
    assert not N.fused_loss_activation(L.MSE, A.SOFTMAX)


# ---- train_batches ------------------------------------------------------------------------

def two_optimizers(net, sgd_lr=0.1, momentum=0.9, adam=(0.01, 0.9, 0.999, 1e-3)):
    """The first dense layer on SGD with momentum, the rest on Adam: two slices of params."""
    split = int(net.layers[net.layers[:, N.KIND] == N.DENSE_LAYER][1, N.W_OFF])
    opt_meta = np.array([[0, split, O.SGD], [split, net.params.size, O.ADAM]], dtype=np.int64)
    opt_hyper = np.zeros((2, O.N_HYPER))
    opt_hyper[0, [O.H_LR, O.H_1]] = sgd_lr, momentum
    opt_hyper[1, [O.H_LR, O.H_1, O.H_2, O.H_EPS]] = adam
    return opt_meta, opt_hyper


def run_train_batches(net, params, loss, x, y, order, batch_size, first, stop, opt_meta, opt_hyper,
                      state1=None, state2=None, opt_steps=None, rng=None, reg=None):
    work = workspace(net, batch_size)
    grads = np.zeros_like(params)
    state1 = np.zeros_like(params) if state1 is None else state1
    state2 = np.zeros_like(params) if state2 is None else state2
    opt_steps = np.zeros(opt_meta.shape[0], dtype=np.int64) if opt_steps is None else opt_steps
    rng = np.array([RNG[0], 0], dtype=np.int64) if rng is None else rng
    reg = np.zeros((0, 4)) if reg is None else reg
    n_batches = -(-order.size // batch_size)
    batch_loss = np.full(n_batches, -1.0)
    batch_correct = np.full(n_batches, -1, dtype=np.int64)
    bad = N.train_batches(network(net, params, rng), N.Training(grads, state1, state2, opt_meta, opt_hyper, opt_steps),
                          work, N.Batches(x, y, order, batch_size, first, stop), loss, batch_loss, batch_correct,
                          np.zeros(0), None, reg, N.weight_tensors(net.layers), True,
                          loss_fns=loss_kernels(loss, x.dtype, weighted=False))
    return bad, batch_loss, batch_correct, opt_steps


@pytest.mark.parametrize("name", ["tanh_softmax_ce_fused", "dropout_between_dense_ce"])
def test_train_batches_matches_the_steps_written_out(name):
    """Batch b trains with Dropout's masks of step b, and the step count ends at the batches run."""
    net, loss, x, y = setup_network(name, rows=10)
    order = np.random.default_rng(5).permutation(10).astype(np.int64)
    batch_size = 4  # batches of 4, 4 and 2 rows
    opt_meta, opt_hyper = two_optimizers(net)
    params = net.params.copy()
    rng = np.array([RNG[0], 0], dtype=np.int64)
    bad, batch_loss, batch_correct, opt_steps = run_train_batches(
        net, params, loss, x, y, order, batch_size, 0, 3, opt_meta, opt_hyper, rng=rng)
    assert bad == -1
    np.testing.assert_array_equal(opt_steps, [3, 3])
    np.testing.assert_array_equal(rng, [RNG[0], 3])

    p = net.params.copy()
    split = opt_meta[0, 1]
    v_sgd, m_adam, v_adam = np.zeros(split), np.zeros(p.size - split), np.zeros(p.size - split)
    for bi in range(3):
        rows = order[bi * batch_size: (bi + 1) * batch_size]
        step = np.array([RNG[0], bi], dtype=np.int64)
        pred, _ = naive_network_forward(net, p, x[rows], True, step)
        expected_loss = np.mean(-(y[rows] * np.log(pred)).sum(axis=1))
        assert batch_loss[bi] == pytest.approx(expected_loss, rel=1e-12)
        assert batch_correct[bi] == np.sum(pred.argmax(axis=1) == y[rows].argmax(axis=1))
        # This batch's gradient from network_backward, which the finite-difference tests check.
        g = np.empty_like(p)
        work = workspace(net, rows.size)
        N.network_forward(network(net, p, step), x[rows], work, True)
        N.network_backward(network(net, p, step), g, x[rows], work, loss, y[rows], loss_fns=loss_kernels(loss, x.dtype, weighted=False))
        naive_sgd_update(p[:split], g[:split], v_sgd, 0.1, 0.9)
        naive_adam_update(p[split:], g[split:], m_adam, v_adam, bi + 1, 0.01, 0.9, 0.999, 1e-3)
    np.testing.assert_allclose(params, p, rtol=1e-12, atol=1e-14)


def test_train_batches_resumes_where_it_stopped():
    """Batches [0, 3) in one call equal [0, 1) then [1, 3) with the state carried over."""
    net, loss, x, y = setup_network("leaky_sigmoid_bce_fused", rows=12)
    order = np.arange(12, dtype=np.int64)[::-1].copy()
    opt_meta, opt_hyper = two_optimizers(net)
    whole = net.params.copy()
    run_train_batches(net, whole, loss, x, y, order, 4, 0, 3, opt_meta, opt_hyper)
    parts = net.params.copy()
    s1, s2, steps = np.zeros_like(parts), np.zeros_like(parts), np.zeros(2, dtype=np.int64)
    run_train_batches(net, parts, loss, x, y, order, 4, 0, 1, opt_meta, opt_hyper, s1, s2, steps)
    run_train_batches(net, parts, loss, x, y, order, 4, 1, 3, opt_meta, opt_hyper, s1, s2, steps)
    np.testing.assert_array_equal(parts, whole)
    np.testing.assert_array_equal(steps, [3, 3])


@pytest.mark.parametrize("name,poison", [
    # No saturating activation, so that 1e300 reaches the loss (and overflows its square).
    ("bare_leaky_first_sse", np.nan), ("bare_leaky_first_sse", np.inf), ("bare_leaky_first_sse", 1e300),
    # The clamped losses after the fused activations must still see the NaN.
    ("tanh_softmax_ce_fused", np.nan), ("leaky_sigmoid_bce_fused", np.nan), ("elu_softmax_kld", np.nan),
    ("tanh_sigmoid_msle", np.nan),
])
def test_train_batches_stops_before_updating_on_a_non_finite_loss(name, poison):
    net, loss, x, y = setup_network(name, rows=12)
    order = np.random.default_rng(1).permutation(12).astype(np.int64)
    x[order[5]] = poison  # a row of batch 1 (batches of 4)
    opt_meta, opt_hyper = two_optimizers(net)

    expected = net.params.copy()  # after batch 0 alone
    s1, s2 = np.zeros_like(expected), np.zeros_like(expected)
    run_train_batches(net, expected, loss, x, y, order, 4, 0, 1, opt_meta, opt_hyper, s1, s2)

    params = net.params.copy()
    state1, state2 = np.zeros_like(params), np.zeros_like(params)
    bad, batch_loss, batch_correct, opt_steps = run_train_batches(
        net, params, loss, x, y, order, 4, 0, 3, opt_meta, opt_hyper, state1, state2)
    assert bad == 1
    assert not np.isfinite(batch_loss[1])
    assert batch_loss[2] == -1.0 and batch_correct[2] == -1  # never reached
    np.testing.assert_array_equal(opt_steps, [1, 1])
    np.testing.assert_array_equal(params, expected)
    np.testing.assert_array_equal(state1, s1)
    np.testing.assert_array_equal(state2, s2)


def test_perceptron_training_is_rosenblatts_rule():
    """Heaviside + PerceptronCriterion + SGD(lr), one sample per batch: w += lr (t - y) x, b += lr (t - y)."""
    rng = np.random.default_rng(2)
    net = build(3, [dense(1, A.HEAVISIDE)], rng)
    x = rng.standard_normal((20, 3))
    y = (x @ np.array([1.0, -2.0, 0.5]) > 0.3).astype(float)[:, None]
    order = np.arange(20, dtype=np.int64)
    lr = 0.5
    opt_meta = np.array([[0, net.params.size, O.SGD]], dtype=np.int64)
    opt_hyper = np.zeros((1, O.N_HYPER))
    opt_hyper[0, O.H_LR] = lr
    params = net.params.copy()
    bad, batch_loss, batch_correct, _ = run_train_batches(net, params, L.PERCEPTRON, x, y, order, 1, 0, 20,
                                                          opt_meta, opt_hyper)
    assert bad == -1
    w, b = net.params[:3].copy(), net.params[3:].copy()
    mistakes = 0
    for i in range(20):
        out = float(x[i] @ w + b[0] > 0)
        assert batch_loss[i] == float(out != y[i, 0])
        assert batch_correct[i] == int(out == y[i, 0])
        w += lr * (y[i, 0] - out) * x[i]
        b += lr * (y[i, 0] - out)
        mistakes += out != y[i, 0]
    assert mistakes > 0  # the rule was exercised, not only the no-op
    np.testing.assert_allclose(params, np.concatenate([w, b]), rtol=1e-14, atol=1e-14)


# ---- inference ----------------------------------------------------------------------------

def test_predict_and_evaluate_batches():
    net, loss, x, y = setup_network("three_hidden_layers_ce", rows=11)
    batch_size = 4
    work = workspace(net, batch_size)
    expected = naive_network_forward(net, net.params, x)[0]
    out = np.full((11, net.n_out), np.nan)
    I.predict_batches(out, network(net), x, batch_size, work, False)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    total, correct = I.evaluate_batches(network(net), x, y, batch_size, work, loss_fns=loss_kernels(loss, x.dtype, weighted=False))
    per_row = -(y * np.log(expected)).sum(axis=1)
    assert total == pytest.approx(per_row.sum(), rel=1e-12)  # sum over batches of mean loss x rows
    assert correct == np.sum(expected.argmax(axis=1) == y.argmax(axis=1))


def test_apply_optimizers_updates_each_slice_with_its_own_optimizer():
    """Each slice of the flat buffers gets its own optimizer's update and step count, as
    ``optimizer_step`` over that slice alone; nothing outside the slices moves."""
    rng = np.random.default_rng(11)
    n = 1000
    opt_meta = np.array([[0, 600, O.ADAM], [600, 990, O.SGD]], dtype=np.int64)
    opt_hyper = np.zeros((2, O.N_HYPER))
    opt_hyper[0, [O.H_LR, O.H_1, O.H_2, O.H_EPS]] = 0.01, 0.9, 0.999, 1e-8
    opt_hyper[1, [O.H_LR, O.H_1]] = 0.1, 0.9
    params, grads = rng.standard_normal(n), rng.standard_normal(n)
    p, s1, s2, steps = params.copy(), np.zeros(n), np.zeros(n), np.zeros(2, dtype=np.int64)
    expected = [params.copy(), np.zeros(n), np.zeros(n)]
    for t in range(1, 4):
        N.apply_optimizers(p, N.Training(grads, s1, s2, opt_meta, opt_hyper, steps), None, None)
        for (lo, hi, kind), h in zip(opt_meta, opt_hyper):
            O.optimizer_step(kind, *(a[lo:hi] for a in (expected[0], grads, expected[1], expected[2])), h, t)
    np.testing.assert_array_equal(steps, [3, 3])
    for a, b in zip((p, s1, s2), expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.array_equal(p[:990], params[:990])
    np.testing.assert_array_equal(p[990:], params[990:])


def test_unused_optional_stages_compile_out():
    """tensors=None (no clipping) and schedules=None drop their branches before typing: the cosine
    and floor of the schedules appear only in the build that uses them, which is also a third
    larger. That is what keeps them out of a plain model's cold start."""
    import numba
    # A compile of its own: Numba cannot show the IR of code loaded from its cache.
    fresh = numba.njit(cache=False)(N.apply_optimizers.py_func)
    opt_meta = np.array([[0, 10, O.SGD]], dtype=np.int64)
    args = (np.zeros(10), N.Training(np.zeros(10), np.zeros(10), np.zeros(10), opt_meta, np.zeros((1, O.N_HYPER)),
                                     np.zeros(1, dtype=np.int64)))
    fresh(*args, None, None)
    fresh(*args, np.array([[0, 10]], dtype=np.int64), True)
    plain, full = (fresh.inspect_llvm(sig) for sig in fresh.signatures)
    assert "llvm.cos" not in plain and "llvm.cos" in full
    assert "llvm.floor" not in plain and "llvm.floor" in full
    assert len(full) > 1.2 * len(plain)


def test_unused_layer_kinds_compile_out():
    """dropout=None and batchnorm=None drop those kinds' code from the forward pass before typing:
    SplitMix64's multiplier (Dropout's hash) appears only in the build that keeps them, and it
    alone calls a square root (BatchNorm's 1/std)."""
    import numba
    fresh = numba.njit(cache=False)(N.network_forward.py_func)
    net, _, x, _ = setup_network("tanh_softmax_ce_fused")
    args = (network(net), x, workspace(net, ROWS), True)
    np.testing.assert_array_equal(fresh(*args, None, None), fresh(*args, True, True))
    plain, full = (fresh.inspect_llvm(sig) for sig in fresh.signatures)
    mix = str(np.int64(np.uint64(0xBF58476D1CE4E5B9).astype(np.int64)))
    assert mix not in plain and mix in full
    assert "sqrt" not in plain and "sqrt" in full


def test_a_kind_the_flags_leave_out_is_an_error():
    net, _, x, _ = setup_network("batchnorm_between_dense_ce")
    with pytest.raises(ValueError, match="BatchNorm"):
        N.network_forward(network(net), x, workspace(net, ROWS), True, True, None)


def test_workspace_layout_gives_each_layer_its_rows():
    net, _, _, _ = setup_network("batchnorm_between_dense_ce")  # widths 4 -> 5 -> 5 -> 3
    act_off, n_acts, deltas_shape, n_targets, n_stats = N.workspace_layout(net.layers, 7)
    np.testing.assert_array_equal(act_off, [0, 28, 63, 98, 119])
    assert (n_acts, deltas_shape, n_targets, n_stats) == (119, (2, 35), 21, 5 * 5)
    assert N.workspace_layout(net.layers[[0, 2]], 7)[4] == 0  # no BatchNorm, no stats


# ---- one backward rule: the stack and the graph walker, the named fusions -------------------

def stack_as_graph(net, rows, dtype=np.float64):
    """The ``Graph`` of a stack: layer k reads layer k - 1 (the batch for k = 0), no second input."""
    sources = np.stack([np.arange(-1, net.layers.shape[0] - 1), np.full(net.layers.shape[0], -1)], axis=1)
    n_acts = N.workspace_layout(net.layers, rows)[1]
    return N.Graph(sources.astype(np.int64), np.full(n_acts, np.nan, dtype=dtype))


def stack_and_graph_gradients(net, loss, x, target):
    """(grads of ``network_backward``, grads of ``graph_backward`` on the same stack as a graph),
    each after its own training-mode forward pass from the same parameters."""
    out = []
    for graph in (None, stack_as_graph(net, x.shape[0])):
        params, grads, work = net.params.copy(), np.full(net.params.size, np.nan), workspace(net, x.shape[0])
        N.network_forward(network(net, params), x, work, True, True, True, True, True, None, 0, graph)
        if graph is None:
            N.network_backward(network(net, params), grads, x, work, loss, target, loss_fns=loss_kernels(loss, x.dtype, weighted=False))
        else:
            N.graph_backward(network(net, params), grads, x, work, loss, target, graph,
                             loss_fns=loss_kernels(loss, x.dtype, weighted=False))
        out.append(grads)
    return out


@pytest.mark.parametrize("name", NETWORKS)
def test_graph_walker_gives_the_stack_walkers_gradients(name):
    """The same layers walked as a stack (two gradient buffers in turn, the fused dx epilogue)
    and as a graph (a gradient buffer per node, summed over readers, no fusion) give the same
    gradients: one backward rule, dL/d(output) in, dL/d(input) out, on both walkers. The
    arithmetic is the same, operation for operation, so they agree to the last bit."""
    net, loss, x, target = setup_network(name)
    stack, graph = stack_and_graph_gradients(net, loss, x, target)
    trained = np.setdiff1d(np.arange(net.params.size), net.frozen)
    assert np.all(np.isfinite(stack[trained]))
    np.testing.assert_array_equal(graph[trained], stack[trained])


def test_graph_walker_differs_when_a_layer_is_rewired():
    """The comparison above can fail: the first dense layer reading the batch instead of the
    LeakyReLU before it (the same width) changes the gradients."""
    net, loss, x, target = setup_network("bare_leaky_first_sse")  # leaky(4) -> dense(5) -> dense(2)
    stack, _ = stack_and_graph_gradients(net, loss, x, target)
    rewired = stack_as_graph(net, x.shape[0])
    rewired.sources[1, N.SOURCE] = -1
    grads, work = np.full(net.params.size, np.nan), workspace(net, x.shape[0])
    N.network_forward(network(net), x, work, True, True, True, True, True, None, 0, rewired)
    N.graph_backward(network(net), grads, x, work, loss, target, rewired, loss_fns=loss_kernels(loss, x.dtype, weighted=False))
    assert np.all(np.isfinite(grads)) and not np.allclose(grads, stack)


def table(*rows):
    """A ``layers`` table from (kind, act) pairs (offsets and widths do not matter to the predicates)."""
    return np.array([[0, 0, 3, 3, act, kind] for kind, act in rows], dtype=np.int64)


def test_fuse_activation_backward_holds_for_a_dense_layer_reading_an_elementwise_activation():
    fuse = N.fuse_activation_backward
    for act in (A.SIGMOID, A.TANH, A.RELU, A.LEAKY_RELU, A.ELU, A.HEAVISIDE):
        assert fuse(table((N.DENSE_LAYER, act), (N.DENSE_LAYER, A.IDENTITY)), 1, True)
        assert fuse(table((N.ACTIVATION_LAYER, act), (N.DENSE_LAYER, A.SOFTMAX)), 1, True)
        assert not fuse(table((N.DENSE_LAYER, act), (N.DENSE_LAYER, A.IDENTITY)), 1, False)  # other readers
        assert not fuse(table((N.DENSE_LAYER, act), (N.ACTIVATION_LAYER, A.TANH)), 1, True)  # no dx GEMM
        assert not fuse(table((N.DENSE_LAYER, act)), 0, True)  # the batch has no activation
    for act in (A.IDENTITY, A.SOFTMAX):  # nothing to apply; row-wise
        assert not fuse(table((N.DENSE_LAYER, act), (N.DENSE_LAYER, A.IDENTITY)), 1, True)
    for kind in (N.DROPOUT_LAYER, N.BATCHNORM_LAYER, N.MASKING_LAYER, N.EMBEDDING_LAYER, N.USER_LAYER):
        assert not fuse(table((kind, A.IDENTITY), (N.DENSE_LAYER, A.IDENTITY)), 1, True)
    # The CUDA launchers evaluate the same source on the host.
    assert N.fuse_activation_backward.py_func(table((N.DENSE_LAYER, A.RELU), (N.DENSE_LAYER, A.IDENTITY)), 1, True)


def test_fuse_loss_backward_holds_when_the_last_layer_has_an_activation():
    for kind, expected in ((N.DENSE_LAYER, True), (N.ACTIVATION_LAYER, True), (N.DROPOUT_LAYER, False),
                           (N.BATCHNORM_LAYER, False), (N.USER_LAYER, False), (N.ADD_LAYER, False)):
        layers = table((N.DENSE_LAYER, A.TANH), (kind, A.SIGMOID if expected else A.IDENTITY))
        assert N.fuse_loss_backward(layers) == expected
        assert N.fuse_loss_backward.py_func(layers) == expected
