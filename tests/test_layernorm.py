"""LayerNormalization: the kernels against NumPy's closed form, float64 central finite
differences and ``torch.nn.functional.layer_norm`` where PyTorch is installed, and the CUDA twin
(in the simulator without a GPU) against the CPU."""
import numpy as np
import pytest

from fastnn.kernels import layernorm as K
from helpers import assert_gradient, cuda_or_skip, numerical_gradient, randomize_weights

FLAGS = [K.CENTER | K.SCALE, K.SCALE, K.CENTER, 0]


def layer_params(rng, n):
    """[gamma, beta] of width n, flat, float64: gamma at 0, beta at n."""
    return np.concatenate([rng.uniform(0.5, 1.5, n), rng.standard_normal(n)])


def reference(x, params, n, eps, flags):
    gamma = params[:n] if flags & K.SCALE else 1.0
    beta = params[n:2 * n] if flags & K.CENTER else 0.0
    mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def scratch(rows, n):
    """The workspace's float64 ``stats``, full of NaN: the kernels must set what they read."""
    return np.full(K.layernorm_stats_size(rows, n), np.nan)


@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("rows", [1, 5])
def test_forward_matches_the_closed_form(rows, flags):
    rng = np.random.default_rng(rows + 10 * flags)
    n, eps = 6, 1e-3
    x = rng.standard_normal((rows, n)) * 3.0 + 1.0
    params = layer_params(rng, n)
    out = np.full_like(x, np.nan)
    K.layernorm_forward(out, x, params, 0, n, eps, flags)
    np.testing.assert_allclose(out, reference(x, params, n, eps, flags), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("flags", FLAGS)
def test_backward_matches_central_finite_differences(flags):
    rng = np.random.default_rng(flags)
    rows, n, eps = 4, 5, 1e-3
    x = rng.standard_normal((rows, n))
    params = layer_params(rng, n)
    weights = rng.standard_normal((rows, n))  # L = sum(weights * out): dout = weights

    def loss():
        out = np.empty_like(x)
        K.layernorm_forward(out, x, params, 0, n, eps, flags)
        return float(np.sum(weights * out))

    grads = np.full(2 * n, np.nan)
    dx = np.full_like(x, np.nan)
    K.layernorm_backward(dx, grads, weights.copy(), x, params, 0, n, eps, flags, scratch(rows, n))
    assert_gradient(dx, numerical_gradient(loss, x))
    numeric = numerical_gradient(loss, params)
    if flags & K.SCALE:
        assert_gradient(grads[:n], numeric[:n])
    if flags & K.CENTER:
        assert_gradient(grads[n:], numeric[n:])
    untouched = np.concatenate([grads[:n] if not flags & K.SCALE else [], grads[n:] if not flags & K.CENTER else []])
    assert np.all(np.isnan(untouched)), "a vector the layer lacks got a gradient"


def test_backward_in_place_and_without_dx_gives_the_same_gradients():
    rng = np.random.default_rng(3)
    rows, n, eps = 3, 4, 1e-5
    x = rng.standard_normal((rows, n))
    params = layer_params(rng, n)
    dout = rng.standard_normal((rows, n))
    grads, dx = np.empty(2 * n), np.empty_like(x)
    K.layernorm_backward(dx, grads, dout, x, params, 0, n, eps, K.CENTER | K.SCALE, scratch(rows, n))
    in_place, grads2 = dout.copy(), np.empty(2 * n)
    K.layernorm_backward(in_place, grads2, in_place, x, params, 0, n, eps, K.CENTER | K.SCALE, scratch(rows, n))
    np.testing.assert_array_equal(in_place, dx)
    np.testing.assert_array_equal(grads2, grads)
    grads3 = np.empty(2 * n)
    K.layernorm_backward(dx[:0], grads3, dout, x, params, 0, n, eps, K.CENTER | K.SCALE, scratch(rows, n))
    np.testing.assert_array_equal(grads3, grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_and_backward_match_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    rows, n, eps = 6, 9, 1e-3
    x = rng.standard_normal((rows, n)).astype(dtype)
    params = layer_params(rng, n).astype(dtype)
    dout = rng.standard_normal((rows, n)).astype(dtype)
    out, dx, grads = np.empty_like(x), np.empty_like(x), np.empty_like(params)
    K.layernorm_forward(out, x, params, 0, n, eps, K.CENTER | K.SCALE)
    K.layernorm_backward(dx, grads, dout, x, params, 0, n, eps, K.CENTER | K.SCALE, scratch(rows, n))
    tx = torch.tensor(x, requires_grad=True)
    gamma = torch.tensor(params[:n], requires_grad=True)
    beta = torch.tensor(params[n:], requires_grad=True)
    ty = torch.nn.functional.layer_norm(tx, (n,), gamma, beta, eps)
    ty.backward(torch.tensor(dout))
    tol = {np.float32: 2e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads[:n], gamma.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads[n:], beta.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_twin_matches_the_cpu(dtype):
    cuda = cuda_or_skip()
    from fastnn.cuda import dispatch as C
    rng = np.random.default_rng(11)
    rows, n, eps, flags = 5, 7, 1e-3, K.CENTER | K.SCALE
    x = rng.standard_normal((rows, n)).astype(dtype)
    params = layer_params(rng, n).astype(dtype)
    dout = rng.standard_normal((rows, n)).astype(dtype)
    out, dx, grads = np.empty_like(x), np.empty_like(x), np.empty_like(params)
    K.layernorm_forward(out, x, params, 0, n, eps, flags)
    K.layernorm_backward(dx, grads, dout, x, params, 0, n, eps, flags, scratch(rows, n))
    d_x, d_params, d_dout = (cuda.to_device(a.ravel()) for a in (x, params, dout))
    d_out, d_dx = cuda.device_array(rows * n, dtype), cuda.device_array(rows * n, dtype)
    d_grads, d_stats = cuda.device_array(2 * n, dtype), cuda.to_device(scratch(rows, n))
    C.layernorm_forward(d_out, d_x, d_params, 0, n, rows, n, eps, flags)
    C.layernorm_backward(d_dx, d_grads, d_dout, d_x, d_params, 0, n, rows, n, eps, flags, d_stats)
    # The same source on both targets; but the simulator runs it as Python, where a float32
    # element plus a Python float stays float32 (NumPy's NEP 50), while compiled code sums in
    # float64 as typed: a few float32 ulps apart there, bit for bit on a GPU.
    tol = {np.float32: 1e-5, np.float64: 1e-12}[dtype]
    np.testing.assert_allclose(d_out.copy_to_host().reshape(rows, n), out, rtol=tol, atol=tol)
    np.testing.assert_allclose(d_dx.copy_to_host().reshape(rows, n), dx, rtol=tol, atol=tol)
    np.testing.assert_allclose(d_grads.copy_to_host(), grads, rtol=tol, atol=tol)


# ---- the layer in a model ---------------------------------------------------------------------

import fastnn  # noqa: E402
from fastnn import MLP, SGD, Dense, Input, LayerNormalization, Model, load_model  # noqa: E402


def data(rows=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 4)) * 2.0 + 0.5
    y = np.eye(3)[rng.integers(0, 3, rows)]
    return x, y


def classifier(center=True, scale=True, device="cpu", dtype="float64"):
    model = MLP([Dense(4, 6, activation="tanh"), LayerNormalization(center=center, scale=scale),
                 Dense(6, 3, activation="softmax")], seed=3, dtype=dtype, device=device)
    model.compile(loss="cross_entropy", optimizer=SGD(learning_rate=0.1))
    return model


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_one_training_step_matches_torch(center, scale):
    torch = pytest.importorskip("torch")
    x, y = data()
    model = classifier(center, scale)
    # gamma and beta away from 1 and 0, so that a gradient that ignored them would show.
    weights = model.get_weights()
    rng = np.random.default_rng(5)
    for i in range(2, 2 + scale + center):
        weights[i] = rng.uniform(0.5, 1.5, 6) if (i == 2 and scale) else rng.standard_normal(6)
    model.set_weights(weights)
    t = [torch.tensor(w, requires_grad=True) for w in weights]
    W1, b1, W2, b2 = t[0], t[1], t[-2], t[-1]
    gamma = t[2] if scale else None
    beta = t[2 + scale] if center else None
    h = torch.tanh(torch.tensor(x) @ W1 + b1)
    h = torch.nn.functional.layer_norm(h, (6,), gamma, beta, 1e-3)
    loss = torch.nn.functional.cross_entropy(h @ W2 + b2, torch.tensor(y.argmax(1)))
    loss.backward()
    model.train_on_batch(x, y)
    for got, w in zip(model.get_weights(), t):
        np.testing.assert_allclose(got, (w - 0.1 * w.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # a graph step with LayerNormalization, compiled by no other default test
def test_a_functional_model_trains_it_as_a_stack_does():
    """The graph walker's path: the same network as a functional Model, the same step."""
    x, y = data()
    stack = classifier()
    inp = Input(4)
    hidden = LayerNormalization()(Dense(output_dim=6, activation="tanh")(inp))
    out = Dense(output_dim=3, activation="softmax")(hidden)
    graph = Model(inp, out, seed=3, dtype="float64")
    graph.compile(loss="cross_entropy", optimizer=SGD(learning_rate=0.1))
    graph.set_weights(stack.get_weights())
    stack.train_on_batch(x, y)
    graph.train_on_batch(x, y)
    for a, b in zip(graph.get_weights(), stack.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_cuda_trains_as_the_cpu_does():
    cuda_or_skip()
    x, y = data(rows=20)
    cpu, gpu = classifier(), classifier(device="cuda")
    gpu.set_weights(cpu.get_weights())
    h_cpu = cpu.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)  # a last batch of 4 rows
    h_gpu = gpu.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=1e-9)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=1e-9, atol=1e-12)


def test_save_and_load_keep_the_layer(tmp_path):
    x, y = data()
    model = classifier(center=False)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    layer = loaded.layers[1]
    assert isinstance(layer, LayerNormalization)
    assert (layer.center, layer.scale, layer.epsilon, layer.axis) == (False, True, 1e-3, -1)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert [w.shape for w in layer.get_weights()] == [(6,)]


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    x, y = data()
    for center, scale in [(True, True), (False, False)]:
        model = classifier(center, scale, dtype="float32")
        randomize_weights(model)  # gamma and beta too
        path = tmp_path / f"m{center}{scale}.onnx"
        model.to_onnx(path)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]
        np.testing.assert_allclose(got, model.predict(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="opset must be at least 17"):
        model.to_onnx(tmp_path / "old.onnx", opset=13)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="axis"):
        LayerNormalization(axis=0)
    with pytest.raises(ValueError, match="epsilon"):
        LayerNormalization(epsilon=0.0)
    with pytest.raises(TypeError, match="center"):
        LayerNormalization(center="yes")
    assert fastnn.LayerNormalization is LayerNormalization
    assert LayerNormalization().get_config()["epsilon"] == 1e-3
