"""Gradient clipping (every optimizer's clipnorm, global_clipnorm, clipvalue): the kernel against
Keras' clip_by_norm formula and PyTorch's clip_grad_norm_ / clip_grad_value_, training against
PyTorch with the same clipping, argument checks, and the CUDA twin against the CPU."""
import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, Dense, MLP
from fastnn.kernels import optimizers as K
from helpers import Affine, cuda_or_skip

TENSORS = np.array([[0, 6], [6, 9], [9, 20], [20, 22]], dtype=np.int64)


def hyper(clipnorm=0.0, global_clipnorm=0.0, clipvalue=0.0):
    h = np.zeros(K.N_HYPER)
    h[K.H_CLIPNORM], h[K.H_GLOBAL_CLIPNORM], h[K.H_CLIPVALUE] = clipnorm, global_clipnorm, clipvalue
    return h


def grads(dtype=np.float64, seed=0):
    return (np.random.default_rng(seed).standard_normal(22) * 2).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clipnorm_scales_each_tensor_as_keras_clip_by_norm(dtype):
    g = grads(dtype)
    expected = g.astype(np.float64).copy()
    for lo, hi in TENSORS[:3]:  # the slice [0, 20): the last tensor lies outside it
        t = expected[lo:hi]
        expected[lo:hi] = t * 1.5 / max(np.linalg.norm(t), 1.5)
    K.clip_gradients(g, 0, 20, TENSORS, hyper(clipnorm=1.5))
    np.testing.assert_allclose(g, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert g.dtype == dtype


def test_global_clipnorm_and_clipvalue_equal_torchs():
    torch = pytest.importorskip("torch")
    g = grads()
    tensors = [torch.tensor(g[lo:hi].copy()) for lo, hi in TENSORS]
    params = [torch.zeros_like(t, requires_grad=True) for t in tensors]
    for p, t in zip(params, tensors):
        p.grad = t.clone()
    torch.nn.utils.clip_grad_norm_(params, max_norm=2.0)
    torch.nn.utils.clip_grad_value_(params, clip_value=0.4)
    h = hyper(global_clipnorm=2.0, clipvalue=0.4)
    K.clip_global_norms(g, np.array([[0, 22, K.SGD]]), h.reshape(1, -1))
    K.clip_gradients(g, 0, 22, TENSORS, h)
    np.testing.assert_allclose(g, np.concatenate([p.grad.numpy() for p in params]), rtol=1e-14)


def test_small_gradients_and_nan_pass_unchanged():
    g = grads() * 1e-3
    before = g.copy()
    K.clip_gradients(g, 0, 22, TENSORS, hyper(clipnorm=10.0))
    np.testing.assert_array_equal(g, before)  # norms below the limit: factor exactly 1
    g[3] = np.nan
    K.clip_global_norms(g, np.array([[0, 22, K.SGD]]), hyper(global_clipnorm=1e-9).reshape(1, -1))
    assert np.isnan(g[3])


@pytest.mark.parametrize("kwargs, match", [({"clipnorm": 0.0}, "clipnorm"), ({"clipvalue": -1}, "clipvalue"),
                                           ({"global_clipnorm": float("nan")}, "global_clipnorm"),
                                           ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "both")])
def test_bad_clipping_arguments(kwargs, match):
    for cls in (SGD, Adam, fastnn.AdamW, fastnn.RMSprop, fastnn.Adagrad):
        with pytest.raises(ValueError, match=match):
            cls(**kwargs)


def test_config_round_trip_keeps_clipping():
    opt = Adam(0.01, clipnorm=2.0, clipvalue=0.5)
    assert opt.get_config()["clipnorm"] == 2.0 and opt.get_config()["global_clipnorm"] is None
    rebuilt = fastnn.base.deserialize({"class_name": "Adam", "config": opt.get_config()})
    np.testing.assert_array_equal(rebuilt.hyper_parameters(), opt.hyper_parameters())


def data(rows=24, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, 5)) * 4).astype(np.float32), rng.integers(0, 3, rows)


def model(optimizer, device="cpu", dtype="float32"):
    m = MLP([Dense(5, 4, activation="tanh"), Dense(4, 3, activation="softmax")], seed=3, device=device, dtype=dtype)
    m.compile(loss="cross_entropy", optimizer=optimizer)
    return m


@pytest.mark.parametrize("clip", [{"global_clipnorm": 0.3}, {"clipvalue": 0.05}])
def test_training_matches_torch_with_the_same_clipping(clip):
    torch = pytest.importorskip("torch")
    x, y = data()
    m = model(SGD(0.5, **clip), dtype="float64")
    weights = [torch.tensor(w, requires_grad=True) for w in m.get_weights()]
    opt = torch.optim.SGD(weights, lr=0.5)
    for lo in range(0, 24, 8):
        m.train_on_batch(x[lo:lo + 8], y[lo:lo + 8])
        w1, b1, w2, b2 = weights
        xb = torch.tensor(x[lo:lo + 8], dtype=torch.float64)
        loss = torch.nn.functional.cross_entropy(torch.tanh(xb @ w1 + b1) @ w2 + b2, torch.tensor(y[lo:lo + 8]))
        opt.zero_grad()
        loss.backward()
        if "global_clipnorm" in clip:
            torch.nn.utils.clip_grad_norm_(weights, clip["global_clipnorm"])
        else:
            torch.nn.utils.clip_grad_value_(weights, clip["clipvalue"])
        opt.step()
    for ours, theirs in zip(m.get_weights(), weights):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_clipnorm_limits_each_layers_step():
    """SGD with lr 1 and clipnorm c moves each weight tensor by at most c per step."""
    x, y = data()
    m = model(SGD(1.0, clipnorm=0.01))
    before = m.get_weights()
    m.train_on_batch(x, y)
    for a, b in zip(before, m.get_weights()):
        assert np.linalg.norm(b - a) <= 0.01 * (1 + 1e-5)


def test_cuda_matches_the_cpu():
    cuda_or_skip()
    x, y = data()
    for opt in (lambda: Adam(0.05, clipnorm=0.05), lambda: SGD(0.3, global_clipnorm=0.2, clipvalue=0.05)):
        cpu, gpu = model(opt()), model(opt(), device="cuda")
        gpu.set_weights(cpu.get_weights())
        cpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
        gpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
        for a, b in zip(gpu.get_weights(), cpu.get_weights()):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def user_layer_model(optimizer):
    m = MLP([Dense(5, 4, activation="tanh"), Affine(), Dense(4, 3, activation="softmax")], seed=3, dtype="float64")
    return m.compile(loss="cross_entropy", optimizer=optimizer)


@pytest.mark.parametrize("clip", [{"clipnorm": 0.01}, {"global_clipnorm": 0.02}, {"clipvalue": 0.005}])
@pytest.mark.slow  # user layers compile anew per model; test_clipnorm_limits_a_user_layers_step runs by default
def test_clipping_covers_user_layers_weights_as_torch(clip):
    """One SGD step of a model with a user layer against PyTorch's gradients clipped by Keras'
    clip_by_norm per tensor (clipnorm), clip_grad_norm_ over all tensors (global_clipnorm) or
    clip_grad_value_ (clipvalue): the user layer's weights are clipped as the Dense ones are."""
    torch = pytest.importorskip("torch")
    x, y = data()
    m = user_layer_model(SGD(1.0, **clip))
    weights = [torch.tensor(w, requires_grad=True) for w in m.get_weights()]
    w1, b1, scale, shift, offset, w2, b2 = weights
    h = torch.tanh(torch.tensor(x, dtype=torch.float64) @ w1 + b1) * scale + shift + offset
    torch.nn.functional.cross_entropy(h @ w2 + b2, torch.tensor(y)).backward()
    trained = [w1, b1, scale, shift, w2, b2]
    if "clipnorm" in clip:
        for w in trained:  # keras' clip_by_norm: g * c / max(norm, c)
            w.grad *= clip["clipnorm"] / max(float(w.grad.norm()), clip["clipnorm"])
    elif "global_clipnorm" in clip:
        torch.nn.utils.clip_grad_norm_(trained, clip["global_clipnorm"])
    else:
        torch.nn.utils.clip_grad_value_(trained, clip["clipvalue"])
    m.train_on_batch(x, y)
    for ours, theirs in zip(m.get_weights(), weights):
        expected = theirs - theirs.grad if theirs is not offset else theirs
        np.testing.assert_allclose(ours, expected.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # user layers compile anew per model; tests/test_user_layers.py checks them by default
def test_clipnorm_limits_a_user_layers_step():
    """SGD with lr 1 and clipnorm c moves every weight tensor, a user layer's too, by c at most,
    and by c exactly where its gradient's norm exceeds c (all of them here)."""
    x, y = data()
    m = user_layer_model(SGD(1.0, clipnorm=0.01))
    before = m.get_weights()
    m.train_on_batch(x, y)
    steps = [np.linalg.norm(b - a) for a, b in zip(before, m.get_weights())]
    np.testing.assert_allclose(steps[:4] + steps[5:], 0.01, rtol=1e-9)
    assert steps[4] == 0  # the user layer's non-trainable weight


def split_model(optimizer, device="cpu", dtype="float64"):
    """One optimizer over two slices of the flat buffer: BatchNorm's running statistics lie
    between them, outside every optimizer's slice."""
    m = MLP([Dense(5, 4, activation="tanh"), fastnn.BatchNormalization(), Dense(4, 3, activation="softmax")], seed=3,
            device=device, dtype=dtype)
    return m.compile(loss="cross_entropy", optimizer=optimizer)


def test_global_clipnorm_takes_the_norm_over_all_of_an_optimizers_slices():
    """torch.nn.utils.clip_grad_norm_ over all the trainable tensors, applied to the gradients of
    an unclipped SGD(1.0) step, gives the clipped step, though BatchNorm's statistics split the
    optimizer's parameters in two slices."""
    torch = pytest.importorskip("torch")
    x, y = data()
    plain, clipped = split_model(SGD(1.0)), split_model(SGD(1.0, global_clipnorm=0.05))
    before = plain.get_weights()
    assert len(plain._spec.slices.optimizers) == 2
    plain.train_on_batch(x, y)
    clipped.train_on_batch(x, y)
    trained = [0, 1, 2, 3, 6, 7]  # W1, b1, gamma, beta, W2, b2 (not the running mean and variance)
    grads = [torch.tensor(before[i] - plain.get_weights()[i]) for i in trained]
    assert float(torch.sqrt(sum((g ** 2).sum() for g in grads))) > 0.1  # clipping scales the step
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, 0.05)
    for i, p in zip(trained, params):
        np.testing.assert_allclose(clipped.get_weights()[i], before[i] - p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cuda_global_clipnorm_over_an_optimizers_slices_matches_the_cpu():
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA GPU, and the CUDA simulator is off")
    x, y = data()
    cpu, gpu = (split_model(SGD(1.0, global_clipnorm=0.05), device, "float32") for device in ("cpu", "cuda"))
    before = cpu.get_weights()
    gpu.set_weights(before)
    for model in (cpu, gpu):
        model.train_on_batch(x, y)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # SGD(1.0): the step is the clipped gradient, of norm global_clipnorm over both slices together.
    step = [gpu.get_weights()[i] - before[i] for i in (0, 1, 2, 3, 6, 7)]
    np.testing.assert_allclose(np.sqrt(sum(np.sum(d.astype(np.float64) ** 2) for d in step)), 0.05, rtol=1e-4)
