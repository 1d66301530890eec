"""Weight penalties (Keras' kernel_regularizer / bias_regularizer): the kernel against the closed
form and finite differences, a training run against PyTorch with the penalty written into the
loss under autograd, the logged and evaluated loss including the penalty, argument checks,
saving, and the CUDA twin against the CPU (under the simulator where there is no GPU)."""
import numpy as np
import pytest

import fastnn
from fastnn import L1, L1L2, L2, SGD, Dense, MLP
from fastnn.kernels import regularizers as R
from helpers import assert_gradient, cuda_or_skip, numerical_gradient


def naive_penalty(w, l1, l2):
    return l1 * np.abs(w).sum() + l2 * np.square(w).sum()


def test_kernel_value_and_gradient():
    rng = np.random.default_rng(0)
    params = rng.standard_normal(30) * np.where(rng.random(30) < 0.5, 1.0, 0.01)
    params[params == 0] = 0.5
    reg = np.array([[2.0, 12.0, 0.3, 0.0], [12.0, 17.0, 0.0, 0.7], [20.0, 30.0, 0.2, 0.1]])
    grads = rng.standard_normal(30)
    before = grads.copy()
    value = R.regularization_forward_backward(params, grads, reg)
    expected = sum(naive_penalty(params[int(lo):int(hi)], l1, l2) for lo, hi, l1, l2 in reg)
    assert value == pytest.approx(expected, rel=1e-12)
    assert R.regularization_penalty(params, reg) == pytest.approx(expected, rel=1e-12)
    penalty_grad = numerical_gradient(lambda: R.regularization_penalty(params, reg), params)
    assert_gradient(grads - before, penalty_grad)
    np.testing.assert_array_equal((grads - before)[[0, 1, 17, 18, 19]], 0.0)  # outside every slice


def test_sign_of_zero_is_zero():
    params, grads = np.zeros(3, np.float32), np.zeros(3, np.float32)
    assert R.regularization_forward_backward(params, grads, np.array([[0.0, 3.0, 1.0, 1.0]])) == 0.0
    np.testing.assert_array_equal(grads, 0.0)


@pytest.mark.parametrize("make, error, match", [
    (lambda: L1(-0.1), ValueError, "l1"), (lambda: L2(-1), ValueError, "l2"), (lambda: L1L2(l2=float("inf")),
                                                                              ValueError, "l2"),
    (lambda: L1("0.1"), TypeError, "l1"), (lambda: Dense(3, 2, kernel_regularizer="l3"), ValueError,
                                            "kernel_regularizer"),
    (lambda: Dense(3, 2, bias_regularizer=0.1), ValueError, "bias_regularizer")])
def test_bad_arguments_name_themselves(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_names_defaults_and_aliases():
    assert (L1().l1, L2().l2, L1L2().factors()) == (0.01, 0.01, (0.0, 0.0))  # Keras' defaults
    assert L1(alpha=0.2).l1 == 0.2 and L2(alpha=0.3).l2 == 0.3
    assert isinstance(Dense(3, 2, kernel_regularizer="l2").kernel_regularizer, L2)
    assert isinstance(Dense(3, 2, kernel_regularizer="l1_l2").kernel_regularizer, L1L2)


def data(rows=24, n_in=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, n_in)).astype(np.float32), rng.integers(0, classes, rows)


def model(device="cpu", dtype="float32", lr=0.05):
    m = MLP([Dense(5, 4, activation="tanh", kernel_regularizer=L2(0.05), bias_regularizer=L1(0.02)),
             Dense(4, 3, activation="softmax", kernel_regularizer=L1L2(0.01, 0.03))], seed=3, device=device,
            dtype=dtype)
    m.compile(loss="cross_entropy", optimizer=SGD(lr), metrics=["accuracy"])
    return m


def model_penalty(m):
    w1, b1, w2, _ = m.get_weights()
    return naive_penalty(w1, 0, 0.05) + naive_penalty(b1, 0.02, 0) + naive_penalty(w2, 0.01, 0.03)


def test_logged_and_evaluated_loss_include_the_penalty():
    x, y = data()
    m = model(lr=0.0)  # nothing moves: every batch sees the same penalty
    plain = MLP([Dense(5, 4, activation="tanh"), Dense(4, 3, activation="softmax")])
    plain.compile(loss="cross_entropy", optimizer=SGD(0.0))
    plain.set_weights(m.get_weights())
    penalty = model_penalty(m)
    assert penalty > 0.05
    logged = m.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"][0]
    assert logged == pytest.approx(plain.evaluate(x, y) + penalty, rel=1e-5)
    assert m.evaluate(x, y)[0] == pytest.approx(plain.evaluate(x, y) + penalty, rel=1e-6)


def test_training_matches_torch_with_the_penalty_in_the_loss():
    torch = pytest.importorskip("torch")
    x, y = data()
    m = model(dtype="float64")
    w1, b1, w2, b2 = (torch.tensor(w, requires_grad=True) for w in m.get_weights())
    opt = torch.optim.SGD([w1, b1, w2, b2], lr=0.05)
    for lo in range(0, 24, 8):
        m.train_on_batch(x[lo:lo + 8], y[lo:lo + 8])
        xb, yb = torch.tensor(x[lo:lo + 8], dtype=torch.float64), torch.tensor(y[lo:lo + 8])
        logits = torch.tanh(xb @ w1 + b1) @ w2 + b2
        loss = torch.nn.functional.cross_entropy(logits, yb) + 0.05 * (w1 ** 2).sum() + 0.02 * b1.abs().sum() \
            + 0.01 * w2.abs().sum() + 0.03 * (w2 ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for ours, theirs in zip(m.get_weights(), (w1, b1, w2, b2)):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_no_regularizer_trains_exactly_as_before():
    x, y = data()
    a = MLP([Dense(5, 4, activation="tanh", kernel_regularizer=L1L2(0.0, 0.0)), Dense(4, 3, activation="softmax")],
            seed=1)
    b = MLP([Dense(5, 4, activation="tanh"), Dense(4, 3, activation="softmax")], seed=1)
    for m in (a, b):
        m.compile(loss="cross_entropy", optimizer=SGD(0.1))
    ha, hb = a.fit(x, y, epochs=2, batch_size=8, verbose=0), b.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert a._spec.reg.shape == (0, 4)  # zero factors add no row
    assert ha.history == hb.history


def test_save_and_load_keep_the_regularizers(tmp_path):
    m = model()
    m.save(tmp_path / "reg.npz")
    loaded = fastnn.load_model(tmp_path / "reg.npz")
    assert loaded.layers[0].kernel_regularizer.l2 == 0.05 and loaded.layers[0].bias_regularizer.l1 == 0.02
    assert loaded.layers[1].kernel_regularizer.factors() == (0.01, 0.03)
    np.testing.assert_array_equal(loaded._spec.reg, m._spec.reg)


def test_cuda_matches_the_cpu():
    cuda_or_skip()
    x, y = data()
    cpu, gpu = model(), model("cuda")
    gpu.set_weights(cpu.get_weights())
    h_cpu = cpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    h_gpu = gpu.fit(x, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_allclose(h_gpu.history["loss"], h_cpu.history["loss"], rtol=0, atol=1e-5)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert gpu.evaluate(x, y)[0] == pytest.approx(cpu.evaluate(x, y)[0], abs=1e-5)
