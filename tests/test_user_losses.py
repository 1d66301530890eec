"""Losses and metrics written by users (``fastnn.CustomLoss``, functions in ``compile(metrics=...)``).

A user MSE trains exactly as the built-in MSE, a user cross-entropy on softmax outputs as the
built-in one (the gradient then goes through softmax's Jacobian instead of the fused p - y, so
equal within float64 rounding), and one step equals PyTorch's; a user metric equals its NumPy
figure, weighted over batches by their rows, in training logs and in ``evaluate``; a model with
both saves and loads through ``custom_objects``; errors name the loss or metric."""
import copy
import pickle

import numpy as np
import pytest

import fastnn
from fastnn import MLP, CustomLoss, Dense


def mse_value(y_true, y_pred):
    d = y_pred - y_true
    return np.mean(d * d)


def mse_gradient(y_true, y_pred):
    return (y_pred - y_true) * (2.0 / y_pred.size)


def ce_value(y_true, y_pred):
    return -np.sum(y_true * np.log(np.maximum(y_pred, 1e-7))) / y_pred.shape[0]


def ce_gradient(y_true, y_pred):
    return -y_true / np.maximum(y_pred, 1e-7) / y_pred.shape[0]


def mean_abs(y_true, y_pred):
    return np.mean(np.abs(y_pred - y_true))


def data(rows=40, n_out=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 4)), rng.normal(size=(rows, n_out))


def regression(loss, metrics=None, lr=0.1):
    m = MLP([Dense(4, 5, activation="tanh"), Dense(5, 3, activation=None)], seed=0, dtype="float64")
    return m.compile(loss, fastnn.SGD(lr), metrics=metrics)


def test_user_mse_trains_as_the_builtin_mse():
    x, y = data()
    builtin, user = regression("mse"), regression(CustomLoss(mse_value, mse_gradient))
    hb = builtin.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history
    hu = user.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0).history
    # The same gradient formula in the same dtype: the same weights. The values differ only in
    # the order of summation (a loop in float64 against NumPy's pairwise mean).
    for a, b in zip(builtin.get_weights(), user.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(hu["loss"], hb["loss"], rtol=1e-13)
    np.testing.assert_allclose(user.evaluate(x, y, batch_size=16), builtin.evaluate(x, y, batch_size=16), rtol=1e-13)


def test_every_user_loss_shares_one_compiled_step():
    # Numba types the user's functions by their signature (first-class functions), not by their
    # identity: another loss neither compiles the step again nor names its module in the cache.
    from fastnn.kernels import network
    x, y = data(rows=8)
    regression(CustomLoss(mse_value, mse_gradient)).fit(x, y, epochs=1, verbose=0)
    compiled = len(network.train_batches.overloads)
    regression(CustomLoss(ce_value, ce_gradient)).fit(np.abs(x), np.abs(y), epochs=1, verbose=0)
    assert len(network.train_batches.overloads) == compiled
    position = network.train_batches.py_func.__code__.co_varnames.index("loss_fns")
    signature = [s for s in network.train_batches.overloads if "FunctionType" in str(s[position])]
    assert signature and "CPUDispatcher" not in str(signature[0])


def test_user_cross_entropy_on_softmax_trains_as_the_builtin():
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)

    def model(loss):
        m = MLP([Dense(4, 5, activation="relu"), Dense(5, 3, activation="softmax")], seed=0, dtype="float64")
        return m.compile(loss, fastnn.SGD(0.5))
    builtin, user = model("cross_entropy"), model(CustomLoss(ce_value, ce_gradient, classification=True))
    hb = builtin.fit(x, labels, epochs=3, batch_size=10, shuffle=False, verbose=0).history
    hu = user.fit(x, labels, epochs=3, batch_size=10, shuffle=False, verbose=0).history
    # The user's gradient goes through softmax's Jacobian, the built-in one is fused (p - y): equal
    # up to float64 rounding of a few operations per element, over 9 steps.
    for a, b in zip(builtin.get_weights(), user.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hu["loss"], hb["loss"], rtol=1e-9)


def test_one_step_equals_torch():
    torch = pytest.importorskip("torch")
    x, y = data(rows=10)
    m = regression(CustomLoss(mse_value, mse_gradient))
    W1, b1, W2, b2 = [torch.tensor(w, requires_grad=True) for w in m.get_weights()]
    out = torch.tanh(torch.from_numpy(x) @ W1 + b1) @ W2 + b2
    loss = torch.nn.MSELoss()(out, torch.from_numpy(y))
    loss.backward()
    value = m.train_on_batch(x, y)
    assert value == pytest.approx(loss.item(), rel=1e-12)
    for w, t in zip(m.get_weights(), (W1, b1, W2, b2)):
        np.testing.assert_allclose(w, (t - 0.1 * t.grad).detach().numpy(), rtol=1e-12, atol=1e-14)


def test_user_metric_equals_numpy_weighted_over_batches():
    x, y = data()
    # A learning rate of 0: the predictions stay those of the initial weights through the epoch.
    m = regression(CustomLoss(mse_value, mse_gradient), metrics=["mae", mean_abs], lr=0.0)
    seen = []
    cb = fastnn.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    history = m.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[cb]).history
    pred = m.predict(x)
    batches = [(lo, min(lo + 16, 40)) for lo in range(0, 40, 16)]
    expected = sum(np.mean(np.abs(pred[a:b] - y[a:b])) * (b - a) for a, b in batches) / 40
    assert m.log_names() == ["loss", "mae", "mean_abs"]
    assert history["mean_abs"][0] == pytest.approx(expected, rel=1e-12)
    assert seen[0]["mean_abs"] == history["mean_abs"][0]
    logs = m.evaluate(x, y, batch_size=16, return_dict=True)
    assert logs["mean_abs"] == pytest.approx(expected, rel=1e-12)
    # Over equal batches a mean of means is the overall mean, as "mae" computes it.
    assert m.evaluate(x, y, batch_size=40, return_dict=True)["mean_abs"] == pytest.approx(logs["mae"], rel=1e-12)


def test_save_and_load_through_custom_objects(tmp_path):
    x, y = data()
    m = regression(CustomLoss(mse_value, mse_gradient), metrics=[mean_abs])
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    m.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"custom_objects=\{'mse_value'"):
        fastnn.load_model(tmp_path / "m")
    with pytest.raises(ValueError, match=r"custom_objects=\{'mean_abs'"):
        fastnn.load_model(tmp_path / "m", custom_objects={"mse_value": mse_value, "mse_gradient": mse_gradient})
    back = fastnn.load_model(tmp_path / "m", custom_objects={"mse_value": mse_value, "mse_gradient": mse_gradient,
                                                             "mean_abs": mean_abs})
    assert isinstance(back.loss, CustomLoss) and back.loss.value is mse_value
    assert back.evaluate(x, y, return_dict=True) == m.evaluate(x, y, return_dict=True)
    # Pickling names the functions by import path, as it does a Lambda's; a deep copy keeps them.
    for twin in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert twin.evaluate(x, y, return_dict=True) == m.evaluate(x, y, return_dict=True)
    nested = regression(CustomLoss(lambda t, p: mse_value(t, p), mse_gradient, name="nested"))
    assert copy.deepcopy(nested).loss.name == "nested"


def wrong_shape_gradient(y_true, y_pred):
    return y_pred[:, :1] - y_true[:, :1]


def array_value(y_true, y_pred):
    return y_pred - y_true


def test_errors_name_the_loss():
    x, y = data(rows=8)
    with pytest.raises(TypeError, match="mse_value.*gradient too.*CustomLoss"):
        regression(mse_value)
    m = regression(CustomLoss(mse_value, wrong_shape_gradient, name="my_loss"))
    with pytest.raises(ValueError, match="loss my_loss: gradient returned an array of another shape"):
        m.fit(x, y, epochs=1, verbose=0)
    m = regression(CustomLoss(array_value, mse_gradient))
    with pytest.raises(TypeError, match="loss array_value: value.*must return a float"):
        m.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="metrics must be names"):
        regression("mse", metrics=[3])
    with pytest.raises(ValueError, match="needs a name"):
        regression("mse", metrics=[lambda t, p: 0.0])


def test_cuda_refuses_a_user_loss():
    pytest.importorskip("numba.cuda")
    m = regression(CustomLoss(mse_value, mse_gradient))
    with pytest.raises(ValueError, match=r"loss mse_value .*CPU only"):
        m.to("cuda")
    assert m.device == "cpu"
    gpu = MLP([Dense(4, 3)], device="cuda")
    with pytest.raises(ValueError, match=r"metric mean_abs .*CPU only"):
        gpu.compile("mse", metrics=[mean_abs])


def test_row_weights_need_a_built_in_loss():
    x, y = data(rows=8)
    m = regression(CustomLoss(mse_value, mse_gradient))
    with pytest.raises(ValueError, match="sample_weight and class_weight need a built-in loss"):
        m.fit(x, y, sample_weight=np.ones(8), verbose=0)
    with pytest.raises(ValueError, match="need a built-in loss"):
        m.evaluate(x, y, sample_weight=np.ones(8))
