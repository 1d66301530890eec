"""BatchNormalization: the kernels against closed forms and float64 central finite differences,
whole models against ``torch.nn.BatchNorm1d`` where PyTorch is installed, the layer's API
(arguments, weights, save/load, training-mode calls), and the CUDA twin against the CPU."""
import numpy as np
import pytest

import fastnn
from fastnn import MLP, BatchNorm, BatchNormalization, Dense, Input, load_model
from fastnn.kernels import batchnorm as K
from helpers import cuda_or_skip


def layer_params(rng, n, running=True):
    """[gamma, beta, running mean, running var] of width n, flat, float64."""
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.standard_normal(n)
    mean, var = (rng.standard_normal(n), rng.uniform(0.5, 2.0, n)) if running else (np.zeros(n), np.ones(n))
    return np.concatenate([gamma, beta, mean, var])


def scratch(n):
    """The workspace's float64 ``stats`` for a layer of width n, full of NaN: the kernels must
    set every value they read."""
    return np.full(K.STATS_ROWS * n, np.nan)


# ---- kernels --------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 2, 7])
def test_training_forward_matches_the_closed_form(rows):
    rng = np.random.default_rng(rows)
    n, momentum, eps = 5, 0.2, 1e-3
    x = rng.standard_normal((rows, n)) * 3.0 + 1.0
    params = layer_params(rng, n)
    before = params.copy()
    out = np.full_like(x, np.nan)
    K.batchnorm_forward(out, x, params, 0, n, True, momentum, eps, scratch(n))
    mean, var = x.mean(axis=0), x.var(axis=0)
    gamma, beta = before[:n], before[n:2 * n]
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + eps) + beta, rtol=1e-12, atol=1e-12)
    unbiased = x.var(axis=0, ddof=1) if rows > 1 else var
    np.testing.assert_allclose(params[2 * n:3 * n], (1 - momentum) * before[2 * n:3 * n] + momentum * mean,
                               rtol=1e-12)
    np.testing.assert_allclose(params[3 * n:], (1 - momentum) * before[3 * n:] + momentum * unbiased, rtol=1e-12)
    np.testing.assert_array_equal(params[:2 * n], before[:2 * n])


def test_inference_forward_uses_the_running_statistics_and_changes_nothing():
    rng = np.random.default_rng(1)
    n, eps = 4, 1e-5
    x = rng.standard_normal((6, n))
    params = layer_params(rng, n)
    before = params.copy()
    out = np.empty_like(x)
    K.batchnorm_forward(out, x, params, 0, n, False, 0.1, eps, scratch(n))
    gamma, beta, mean, var = before.reshape(4, n)
    np.testing.assert_allclose(out, gamma * (x - mean) / np.sqrt(var + eps) + beta, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(params, before)


def test_backward_matches_central_finite_differences():
    """dx, dgamma, dbeta of L = sum(out * R) in training mode, float64."""
    rng = np.random.default_rng(2)
    rows, n, eps = 6, 3, 1e-3
    x = rng.standard_normal((rows, n))
    params = layer_params(rng, n)
    R = rng.standard_normal((rows, n))

    def loss(x_, params_):
        out = np.empty_like(x_)
        K.batchnorm_forward(out, x_, params_.copy(), 0, n, True, 0.1, eps, scratch(n))
        return float(np.sum(out * R))

    grads = np.zeros_like(params)
    dx = np.empty_like(x)
    K.batchnorm_backward(dx, grads, R.copy(), x, params, 0, n, eps, scratch(n))
    h = 1e-6
    num_dx = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num_dx[idx] = (loss(xp, params) - loss(xm, params)) / (2 * h)
    num_dp = np.zeros(2 * n)
    for i in range(2 * n):
        pp, pm = params.copy(), params.copy()
        pp[i] += h
        pm[i] -= h
        num_dp[i] = (loss(x, pp) - loss(x, pm)) / (2 * h)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads[:2 * n], num_dp, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(grads[2 * n:], 0.0)  # the running statistics get no gradient


def test_backward_in_place_and_without_dx():
    rng = np.random.default_rng(3)
    rows, n = 5, 4
    x, dout = rng.standard_normal((rows, n)), rng.standard_normal((rows, n))
    params = layer_params(rng, n)
    g1, g2, g3 = (np.zeros_like(params) for _ in range(3))
    dx = np.empty_like(x)
    K.batchnorm_backward(dx, g1, dout, x, params, 0, n, 1e-5, scratch(n))
    inplace = dout.copy()
    K.batchnorm_backward(inplace, g2, inplace, x, params, 0, n, 1e-5, scratch(n))
    np.testing.assert_allclose(inplace, dx, rtol=1e-14, atol=1e-15)
    untouched = dout.copy()
    K.batchnorm_backward(untouched[:0], g3, untouched, x, params, 0, n, 1e-5, scratch(n))
    np.testing.assert_array_equal(untouched, dout)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_array_equal(g1, g3)


def test_a_constant_feature_stays_finite():
    """Variance 0: epsilon keeps 1/sqrt(var + eps) finite; the output is beta, the gradients finite."""
    x = np.full((8, 3), 2.5, np.float32)
    params = np.concatenate([np.full(3, 1.5), np.full(3, 0.25), np.zeros(3), np.ones(3)]).astype(np.float32)
    out = np.empty_like(x)
    K.batchnorm_forward(out, x, params, 0, 3, True, 0.1, 1e-5, scratch(3))
    np.testing.assert_array_equal(out, 0.25)
    grads, dx = np.zeros_like(params), np.empty_like(x)
    K.batchnorm_backward(dx, grads, np.ones_like(x), x, params, 0, 3, 1e-5, scratch(3))
    assert np.all(np.isfinite(dx)) and np.all(np.isfinite(grads)) and np.all(np.isfinite(params))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_the_column_form_the_cuda_twin_runs_equals_the_cpu_form(training, dtype):
    """Bit for bit in float32; in float64 within an ulp (the compiler may fuse a multiply-add in
    the vectorized row loop and not in the column loop)."""
    same = np.testing.assert_array_equal if dtype == np.float32 else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-15))
    rng = np.random.default_rng(4)
    rows, n, eps = 9, 6, 1e-3
    x = (rng.standard_normal((rows, n)) * 2.0 + 1.0).astype(dtype)
    dout = rng.standard_normal((rows, n)).astype(dtype)
    params = layer_params(rng, n).astype(dtype)
    p_rows, p_cols = params.copy(), params.copy()
    out_rows, out_cols = np.empty_like(x), np.empty_like(x).reshape(-1)
    K.batchnorm_forward(out_rows, x, p_rows, 0, n, training, 0.1, eps, scratch(n))
    for j in range(n):
        K.batchnorm_forward_column(j, out_cols, x.reshape(-1), p_cols, 0, n, rows, n, training, 0.1, eps)
    same(out_rows.reshape(-1), out_cols)
    same(p_rows, p_cols)
    g_rows, g_cols = np.zeros_like(params), np.zeros_like(params)
    dx_rows, dx_cols = np.empty_like(x), np.empty_like(x).reshape(-1)
    K.batchnorm_backward(dx_rows, g_rows, dout, x, params, 0, n, eps, scratch(n))
    for j in range(n):
        K.batchnorm_backward_column(j, dx_cols, g_cols, dout.reshape(-1), x.reshape(-1), params, 0, n, rows, n, eps,
                                    True, False)
    same(dx_rows.reshape(-1), dx_cols)
    same(g_rows, g_cols)


# ---- the layer ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, name", [
    ({"momentum": -0.1}, ValueError, "momentum"), ({"momentum": 1.5}, ValueError, "momentum"),
    ({"epsilon": 0.0}, ValueError, "epsilon"), ({"epsilon": -1e-5}, ValueError, "epsilon"),
    ({"momentum": "0.1"}, TypeError, "momentum"), ({"epsilon": float("nan")}, ValueError, "epsilon"),
    ({"input_dim": 0}, ValueError, "input_dim")])
def test_bad_arguments_name_themselves(kwargs, error, name):
    with pytest.raises(error, match=name):
        BatchNormalization(**kwargs)


def test_layer_shapes_weights_and_config():
    assert BatchNorm is BatchNormalization
    m = MLP([Dense(6, 4, activation="relu"), BatchNorm(momentum=0.3, epsilon=1e-3), Dense(4, 2)], seed=0)
    bn = m.layers[1]
    assert bn.input_dim == bn.output_dim == 4
    gamma, beta, mean, var = bn.get_weights()
    np.testing.assert_array_equal(gamma, 1.0)
    np.testing.assert_array_equal(beta, 0.0)
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_array_equal(var, 1.0)
    assert bn.count_params() == 16 and bn.count_trainable_params() == 8
    assert bn.get_config() == {"input_dim": 4, "momentum": 0.3, "epsilon": 1e-3, "optimizer": None}
    lines = []
    m.summary(print_fn=lines.append)
    assert "Trainable params: 46" in lines[0] and "Non-trainable params: 8" in lines[0]


def test_a_negative_running_variance_is_refused():
    m = MLP([Dense(3, 2, activation="relu"), BatchNorm(), Dense(2, 2)], seed=0)
    gamma, beta, mean, var = m.layers[1].get_weights()
    with pytest.raises(ValueError, match="running_var"):
        m.layers[1].set_weights([gamma, beta, mean, -var])
    weights = m.get_weights()
    weights[5] = -weights[5]
    with pytest.raises(ValueError, match=r"weights\[2:6\].*running_var"):
        m.set_weights(weights)
    np.testing.assert_array_equal(m.layers[1].get_weights()[3], var)  # nothing was written


def classifier(device="cpu", first=False, optimizer=None, dtype="float64", seed=0):
    layers = ([Input(6), BatchNorm(momentum=0.2, epsilon=1e-3)] if first else []) + \
        [Dense(6, 5, activation="relu"), BatchNorm(momentum=0.2, epsilon=1e-3), Dense(5, 3, activation="softmax")]
    m = MLP(layers, seed=seed, dtype=dtype, device=device)
    m.compile(loss="cross_entropy", optimizer=optimizer or fastnn.AdamW(0.01, weight_decay=0.1),
              metrics=["accuracy"])
    return m


def data(rows=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, 6)) * 2.0 + 0.5, rng.integers(0, 3, rows)


@pytest.mark.parametrize("first", [False, True])
def test_training_matches_torch_batchnorm1d(first):
    """Three epochs of AdamW(weight_decay) on fixed batches, then inference: the weights, the
    running statistics (which weight decay must not touch) and eval-mode outputs equal PyTorch's."""
    torch = pytest.importorskip("torch")
    x, y = data()
    m = classifier(first=first)
    weights = m.get_weights()
    mods = ([torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.2)] if first else []) + \
        [torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.BatchNorm1d(5, eps=1e-3, momentum=0.2), torch.nn.Linear(5, 3)]
    net = torch.nn.Sequential(*mods).double()
    it = iter(weights)
    with torch.no_grad():
        for mod in mods:
            if isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.from_numpy(next(it).T.copy()))
                mod.bias.copy_(torch.from_numpy(next(it)))
            elif isinstance(mod, torch.nn.BatchNorm1d):
                for t in (mod.weight, mod.bias, mod.running_mean, mod.running_var):
                    t.copy_(torch.from_numpy(next(it)))
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(3):
        for lo in range(0, len(x), 16):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[lo:lo + 16])),
                                                     torch.from_numpy(y[lo:lo + 16]))
            loss.backward()
            opt.step()
    m.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    expected = []
    for mod in mods:
        if isinstance(mod, torch.nn.Linear):
            expected += [mod.weight.detach().numpy().T, mod.bias.detach().numpy()]
        elif isinstance(mod, torch.nn.BatchNorm1d):
            expected += [t.detach().numpy() for t in (mod.weight, mod.bias, mod.running_mean, mod.running_var)]
    for got, want in zip(m.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
    net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    np.testing.assert_allclose(m.predict(x), probs, rtol=1e-9, atol=1e-12)


def test_training_mode_call_normalizes_with_the_batch_and_updates_the_running_statistics():
    x, _ = data()
    m = classifier()
    before = m.layers[1].get_weights()
    eval_out = m.predict(x)
    train_out = m(x, training=True)
    assert not np.allclose(train_out, eval_out)
    after = m.layers[1].get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.allclose(after[2], before[2])
    np.testing.assert_array_equal(m.predict(x), m(x))  # inference calls change nothing


def test_save_and_load_keep_the_running_statistics(tmp_path):
    x, y = data()
    m = classifier()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    m.save(tmp_path / "bn.npz")
    back = load_model(tmp_path / "bn.npz")
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    back.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))


def test_gradient_clipping_sees_gamma_and_beta_as_tensors():
    from fastnn.kernels.network import weight_tensors
    m = classifier()
    m.predict(np.zeros((1, 6)))
    tensors = weight_tensors(m._spec.table)
    bn = m.layers[1]
    at = m._spec.offset(bn)
    assert [at, at + 5] in tensors.tolist() and [at + 5, at + 10] in tensors.tolist()
    assert not any(lo >= at + 10 and hi <= at + 20 for lo, hi in tensors.tolist())


# ---- CUDA -----------------------------------------------------------------------------------

# Compiles BatchNorm's CUDA step in the simulator and the CPU's (23 s cold): -m slow's, so that
# the default run stays under 5 minutes on two cores.
@pytest.mark.slow
@pytest.mark.parametrize("first", [False, True])
def test_cuda_matches_the_cpu(first):
    cuda_or_skip()
    x, y = data(rows=40)
    cpu, gpu = classifier("cpu", first, dtype="float32"), classifier("cuda", first, dtype="float32")
    gpu.set_weights(cpu.get_weights())
    h_cpu = cpu.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)  # a last batch of 8 rows
    h_gpu = gpu.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-4)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu(x, training=True), cpu(x, training=True), rtol=1e-4, atol=1e-5)


def test_backends_take_the_one_column_alphas_of_older_callers():
    from fastnn.kernels.network import alpha_table
    np.testing.assert_array_equal(alpha_table([0.1, 0.5]), [[0.1, 0.0], [0.5, 0.0]])
    np.testing.assert_array_equal(alpha_table([[0.1, 1e-5]]), [[0.1, 1e-5]])
    with pytest.raises(ValueError, match="alphas"):
        alpha_table(np.zeros((2, 3)))
