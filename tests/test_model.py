"""Tests of the model API (``fastnn.MLP``, alias ``Sequential``, and ``Perceptron``), Keras-style:
compile/fit/evaluate/predict/train_on_batch, weights, summary, seeds and dtypes, each loss
training a small problem, shared and per-layer optimizers, and Rosenblatt's perceptron.

References (NumPy, top of file): ``naive_forward`` (the network's output from ``get_weights()``),
``naive_loss`` (each loss's formula, shared in helpers.py), ``naive_gradients`` (backpropagation of a tanh-identity
network under MSE, written out by hand) and the perceptron rule w += lr (t - y) x by hand.
"""
import numpy as np
import pytest

import fastnn
from fastnn import (MLP, SGD, Activation, AdaGrad, Adam, Dense, Input, LeakyReLU, Perceptron, ReLU, RMSProp,
                    Sequential, Softmax)
from helpers import naive_loss


# --------------------------------------------------------------------------------------------
# NumPy references
# --------------------------------------------------------------------------------------------

def naive_activation(activation, z):
    name, alpha = type(activation).__name__, activation.alpha
    if name == "Identity":
        return z
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "Tanh":
        return np.tanh(z)
    if name == "ReLU":
        return np.maximum(z, 0)
    if name == "LeakyReLU":
        return np.where(z > 0, z, alpha * z)
    if name == "ELU":
        return np.where(z > 0, z, alpha * np.expm1(z))
    if name == "Softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if name == "Heaviside":
        return (z > 0).astype(np.float64)
    raise KeyError(name)


def naive_forward(model, x):
    """The model's output in float64, from ``model.get_weights()`` and its layers' activations."""
    weights = model.get_weights()
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for layer in model.layers:
        if isinstance(layer, Dense):
            W, b = weights.pop(0), weights.pop(0)
            assert W.shape == (layer.input_dim, layer.output_dim) and b.shape == (layer.output_dim,)
            h = naive_activation(layer.activation, h @ W.astype(np.float64) + b)
        elif isinstance(layer, Activation):
            h = naive_activation(layer.activation, h)
    assert weights == []
    return h


def naive_gradients(W1, b1, W2, b2, x, t):
    """dL/d(W1, b1, W2, b2) for L = mean((tanh(x W1 + b1) W2 + b2 - t)²) over all elements."""
    h = np.tanh(x @ W1 + b1)
    p = h @ W2 + b2
    dp = 2 * (p - t) / p.size
    dz = (dp @ W2.T) * (1 - h * h)
    return x.T @ dz, dz.sum(0), h.T @ dp, dp.sum(0)


def one_hot(labels, k):
    out = np.zeros((len(labels), k))
    out[np.arange(len(labels)), labels] = 1
    return out


def blobs(n=240, d=4, k=3, seed=0, spread=0.6):
    """Gaussian blobs around k centres 3 * e_i (4.2 apart, 3.5 spreads from each boundary):
    x float32 (n, d), labels int (n,)."""
    rng = np.random.default_rng(seed)
    centers = 3 * np.eye(k, d)
    labels = rng.integers(0, k, size=n)
    return (centers[labels] + spread * rng.normal(size=(n, d))).astype(np.float32), labels


def classifier(seed=0, dtype="float32", d=4, hidden=8, k=3):
    return MLP([Dense(d, hidden, activation="tanh"), Dense(hidden, k, activation="softmax")], seed=seed, dtype=dtype)


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# --------------------------------------------------------------------------------------------
# fit, evaluate, train_on_batch
# --------------------------------------------------------------------------------------------

def test_fit_returns_history_with_keras_keys():
    x, y = blobs(300)
    model = classifier().compile(loss="categorical_crossentropy", optimizer=Adam(0.05), metrics=["accuracy"])
    history = model.fit(x[:240], y[:240], epochs=5, batch_size=16, validation_data=(x[240:], y[240:]), verbose=0)
    assert isinstance(history, fastnn.History)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 5 for v in history.history.values())
    assert history.epoch == [0, 1, 2, 3, 4]
    # Validation figures are measured after the epoch: the last equals evaluate now.
    val_loss, val_accuracy = model.evaluate(x[240:], y[240:])
    assert history.history["val_loss"][-1] == pytest.approx(val_loss, rel=1e-12)
    assert history.history["val_accuracy"][-1] == pytest.approx(val_accuracy, rel=1e-12)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.95 and val_accuracy > 0.95


def test_fit_without_metrics_logs_loss_only():
    x, y = blobs(64)
    history = classifier().compile("cross_entropy").fit(x, y, epochs=2, verbose=0)
    assert list(history.history) == ["loss"]
    assert classifier().compile("cross_entropy", metrics="accuracy").metrics == ["accuracy"]


def test_validation_split_holds_out_the_last_rows():
    x, y = blobs(100)
    a = classifier(seed=3).compile("cross_entropy", Adam(0.01), ["accuracy"])
    b = classifier(seed=3).compile("cross_entropy", Adam(0.01), ["accuracy"])
    ha = a.fit(x, y, epochs=3, batch_size=8, validation_split=0.2, verbose=0)
    hb = b.fit(x[:80], y[:80], epochs=3, batch_size=8, validation_data=(x[80:], y[80:]), verbose=0)
    assert ha.history == hb.history
    assert weights_equal(a.get_weights(), b.get_weights())


def test_epoch_loss_is_the_row_weighted_mean_of_batch_losses():
    """Keras' convention: with 10 rows in batches of 4, the last batch (2 rows) weighs half as much."""
    x, y = blobs(10)
    a = classifier(seed=1).compile("cross_entropy", SGD(0.1))
    b = classifier(seed=1).compile("cross_entropy", SGD(0.1))
    history = a.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    batch_losses = [b.train_on_batch(x[i:i + 4], y[i:i + 4]) for i in (0, 4, 8)]
    assert history.history["loss"][0] == pytest.approx(np.dot(batch_losses, [4, 4, 2]) / 10, rel=1e-12)
    assert weights_equal(a.get_weights(), b.get_weights())


def test_train_on_batch_equals_one_fit_step_and_returns_the_loss_before_it():
    x, y = blobs(20)
    a = classifier(seed=5).compile("cross_entropy", Adam(0.01), ["accuracy"])
    b = classifier(seed=5).compile("cross_entropy", Adam(0.01), ["accuracy"])
    expected_loss, expected_accuracy = a.evaluate(x, y)
    loss, accuracy = a.train_on_batch(x, y)
    history = b.fit(x, y, epochs=1, batch_size=20, shuffle=False, verbose=0)
    assert loss == pytest.approx(expected_loss, rel=1e-12) and accuracy == expected_accuracy
    assert loss == history.history["loss"][0] and accuracy == history.history["accuracy"][0]
    assert weights_equal(a.get_weights(), b.get_weights())
    assert a.evaluate(x, y)[0] < loss


@pytest.mark.parametrize("rows", [1, 7, 1024, 1025, 2500])
def test_predict_equals_a_numpy_forward_pass(rows):
    rng = np.random.default_rng(rows)
    model = MLP([Dense(5, 16, activation=ReLU()), Dense(16, 12, activation=LeakyReLU(0.1)),
                 Dense(12, 8, activation="elu"), Dense(8, 6, activation="sigmoid"), Dense(6, 4, activation="tanh"),
                 Dense(4, 3, activation=None), Activation(Softmax())], seed=rows)
    x = rng.normal(size=(rows, 5)).astype(np.float32)
    p = model.predict(x)
    assert p.shape == (rows, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p, naive_forward(model, x), rtol=2e-5, atol=1e-6)
    # Another batch size changes only the GEMM's blocking: the same values to float32 rounding.
    np.testing.assert_allclose(model.predict(x, batch_size=3), p, rtol=1e-6, atol=1e-7)


def test_predict_one_row_given_as_a_vector_and_predict_classes():
    x, y = blobs(50)
    model = classifier().compile("cross_entropy", Adam(0.05))
    model.fit(x, y, epochs=10, batch_size=10, verbose=0)
    np.testing.assert_array_equal(model.predict(x[3]), model.predict(x[3:4]))
    assert model.predict(x[3]).shape == (1, 3)
    np.testing.assert_array_equal(model.predict_classes(x), model.predict(x).argmax(1))
    assert np.mean(model.predict_classes(x) == y) > 0.95


@pytest.mark.parametrize("rows", [5, 1500])
def test_evaluate_equals_a_numpy_recomputation_from_predict(rows):
    x, y = blobs(rows, seed=rows)
    model = classifier(seed=2).compile("cross_entropy", metrics=["accuracy"])
    p = model.predict(x).astype(np.float64)
    loss, accuracy = model.evaluate(x, y)
    assert loss == pytest.approx(naive_loss("cross_entropy", p, one_hot(y, 3)), rel=1e-6)
    assert accuracy == np.mean(p.argmax(1) == y)
    assert model.evaluate(x, y, return_dict=True) == {"loss": loss, "accuracy": accuracy}
    assert model.evaluate(x, one_hot(y, 3)) == [loss, accuracy]  # one-hot rows or labels alike


@pytest.mark.parametrize("loss, activation", [("mse", None), ("mae", "tanh"), ("binary_crossentropy", "sigmoid"),
                                              ("cosine_similarity", None), ("kl_divergence", "softmax")])
def test_evaluate_other_losses(loss, activation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1100, 3)).astype(np.float32)
    t = rng.uniform(0.05, 1, size=(1100, 2))
    if loss == "kl_divergence":
        t /= t.sum(1, keepdims=True)
    model = MLP([Dense(3, 2, activation=activation)], seed=0).compile(loss)
    p = model.predict(x).astype(np.float64)
    assert model.evaluate(x, t) == pytest.approx(naive_loss(loss, p, t.astype(np.float32)), rel=1e-6)


def test_fit_with_zero_epochs_and_a_batch_larger_than_the_data():
    x, y = blobs(10)
    model = classifier().compile("cross_entropy")
    before = model.get_weights()
    history = model.fit(x, y, epochs=0, verbose=0)
    assert history.history == {} and weights_equal(model.get_weights(), before)
    twin = classifier().compile("cross_entropy")
    model.fit(x, y, epochs=1, batch_size=1000, shuffle=False, verbose=0)
    twin.train_on_batch(x, y)
    assert weights_equal(model.get_weights(), twin.get_weights())


def test_initial_epoch_numbers_the_history():
    x, y = blobs(16)
    history = classifier().compile("cross_entropy").fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4] and len(history.history["loss"]) == 2


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_one_line_per_epoch(capsys, verbose):
    x, y = blobs(16)
    classifier().compile("cross_entropy", metrics=["accuracy"]).fit(x, y, epochs=2, verbose=verbose)
    lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("Epoch")]
    assert len(lines) == 2 and "samples/s" in lines[0] and "loss:" in lines[0] and "accuracy:" in lines[0]


def test_verbose_zero_prints_nothing(capsys):
    x, y = blobs(16)
    classifier().compile("cross_entropy").fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("verbose", [1, 2])
def test_predict_and_evaluate_honour_verbose(capsys, verbose):
    """As Keras': a line of the batches, the time (and evaluate's figures); the same outputs as silent."""
    x, y = blobs(100)
    model = classifier().compile("cross_entropy", metrics=["accuracy"])
    quiet = model.predict(x, batch_size=4)
    figures = model.evaluate(x, y, batch_size=4, return_dict=True)
    assert capsys.readouterr().out == ""
    np.testing.assert_array_equal(model.predict(x, batch_size=4, verbose=verbose), quiet)
    line = capsys.readouterr().out.splitlines()
    assert len(line) == 1 and line[0].startswith("25/25 - ") and line[0].endswith("s")
    assert model.evaluate(x, y, batch_size=4, verbose=verbose, return_dict=True) == figures
    line = capsys.readouterr().out.splitlines()
    assert len(line) == 1 and line[0].startswith("25/25 - ")
    assert f"loss: {figures['loss']:.4f}" in line[0] and f"accuracy: {figures['accuracy']:.4f}" in line[0]
    for call in (lambda: model.predict(x, verbose=3), lambda: model.evaluate(x, y, verbose=-1)):
        with pytest.raises(ValueError, match="verbose"):
            call()


def test_evaluate_checks_that_the_model_is_usable_once(monkeypatch):
    x, y = blobs(40)
    model = classifier().compile("cross_entropy")
    checks = []
    real = model._check_usable
    monkeypatch.setattr(model, "_check_usable", lambda what: checks.append(what) or real(what))
    model.evaluate(x, y)
    assert checks == ["evaluate"]


def test_a_layer_reads_only_its_slice_of_the_parameters(monkeypatch):
    """A layer's get_weights (once per layer when loading) asks the backend for its slice only."""
    model = classifier()
    model._ensure_built()
    backend, asked = model._backend, []
    real = backend.host

    def host(name, lo=None, hi=None):
        asked.append((name, lo, hi))
        return real(name)[lo:hi]

    monkeypatch.setattr(backend, "host", host)
    W, b = model.layers[1].get_weights()
    assert asked == [("params", 4 * 8 + 8, 4 * 8 + 8 + 8 * 3 + 3)]
    np.testing.assert_array_equal(W, model.get_weights()[2])
    np.testing.assert_array_equal(b, model.get_weights()[3])


def test_shuffle_draws_a_new_batch_order_each_epoch():
    x, y = blobs(40)
    a, b, c = (classifier(seed=2).compile("cross_entropy", SGD(0.1)) for _ in range(3))
    a.fit(x, y, epochs=2, batch_size=8, shuffle=True, verbose=0)
    b.fit(x, y, epochs=2, batch_size=8, shuffle=True, verbose=0)
    c.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert weights_equal(a.get_weights(), b.get_weights())  # drawn from the model's seeded generator
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])
    # shuffle=False is the rows in order, batch after batch.
    d = classifier(seed=2).compile("cross_entropy", SGD(0.1))
    for _ in range(2):
        for i in range(0, 40, 8):
            d.train_on_batch(x[i:i + 8], y[i:i + 8])
    assert weights_equal(c.get_weights(), d.get_weights())


# --------------------------------------------------------------------------------------------
# Weights, summary, building
# --------------------------------------------------------------------------------------------

def test_get_weights_order_shapes_and_set_weights():
    model = MLP([Dense(3, 5), Dense(5, 2)], seed=0)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(3, 5), (5,), (5, 2), (2,)]
    assert model.count_params() == sum(w.size for w in weights) == 3 * 5 + 5 + 5 * 2 + 2
    rng = np.random.default_rng(1)
    new = [rng.normal(size=w.shape) for w in weights]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float32))
    x = rng.normal(size=(4, 3))
    W1, b1, W2, b2 = (w.astype(np.float32).astype(np.float64) for w in new)
    expected = 1 / (1 + np.exp(-((1 / (1 + np.exp(-(x @ W1 + b1)))) @ W2 + b2)))
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-5)
    # get_weights returns copies: changing one does not change the model.
    got = model.get_weights()
    got[0][:] = 0
    assert not np.array_equal(model.get_weights()[0], got[0])


def test_layer_level_get_and_set_weights():
    model = MLP([Dense(3, 5), Dense(5, 2)], seed=0)
    W1, b1, W2, b2 = model.get_weights()
    layer = model.layers[1]
    got = layer.get_weights()
    assert len(got) == 2 and np.array_equal(got[0], W2) and np.array_equal(got[1], b2)
    layer.set_weights([np.ones((5, 2)), np.full(2, 0.5)])
    after = model.get_weights()
    assert np.array_equal(after[0], W1) and np.array_equal(after[1], b1)
    assert np.array_equal(after[2], np.ones((5, 2))) and np.array_equal(after[3], np.full(2, 0.5))
    assert Activation("relu").get_weights() == []


def test_summary_and_count_params():
    model = MLP([Input((2, 3)), Dense(output_dim=4, activation="relu"), Activation("tanh"),
                 Dense(output_dim=2, activation="softmax")], name="tiny")
    lines = []
    model.summary(print_fn=lines.append)
    text = lines[0].splitlines()
    assert text[0] == 'Model: "tiny" (float32, cpu)'
    assert text[1].split() == ["Layer", "(type)", "Output", "Shape", "Activation", "Param", "#"]
    assert text[2].split() == ["input_0", "(Input)", "(None,", "6)", "0"]
    assert text[3].split() == ["dense_1", "(Dense)", "(None,", "4)", "ReLU", "28"]
    assert text[4].split() == ["activation_2", "(Activation)", "(None,", "4)", "Tanh", "0"]
    assert text[5].split() == ["dense_3", "(Dense)", "(None,", "2)", "Softmax", "10"]
    assert text[6] == "Total params: 38"
    assert model.count_params() == 38


def test_input_infers_widths_and_activation_layer_applies_its_function():
    model = Sequential([Input((2, 3)), Dense(output_dim=4, activation=None), Activation("tanh"),
                        Dense(units=2, activation=None), Activation("softmax")], seed=0)
    assert [(l.input_dim, l.output_dim) for l in model.layers] == [(6, 6), (6, 4), (4, 4), (4, 2), (2, 2)]
    x = np.random.default_rng(0).normal(size=(7, 2, 3)).astype(np.float32)  # images, flattened
    np.testing.assert_allclose(model.predict(x), naive_forward(model, x), rtol=1e-5, atol=1e-7)
    assert fastnn.Sequential is MLP


def test_activation_layer_before_the_loss_trains_like_the_fused_dense():
    """Dense + Activation('softmax') and Dense(activation='softmax') are the same network."""
    x, y = blobs(60)
    a = MLP([Dense(4, 3, activation=None), Activation("softmax")], seed=4).compile("cross_entropy", SGD(0.1))
    b = MLP([Dense(4, 3, activation="softmax")], seed=4).compile("cross_entropy", SGD(0.1))
    ha = a.fit(x, y, epochs=3, batch_size=10, verbose=0)
    hb = b.fit(x, y, epochs=3, batch_size=10, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


def test_adding_a_layer_after_training_keeps_the_trained_weights():
    x, y = blobs(40)
    model = MLP([Dense(4, 6, activation="tanh")], seed=0).compile("mse")
    model.fit(x, np.zeros((40, 6)), epochs=2, verbose=0)
    trained = model.get_weights()
    model.add(Dense(6, 3, activation="softmax"))
    after = model.get_weights()
    assert weights_equal(after[:2], trained) and after[2].shape == (6, 3)
    model.compile("cross_entropy")
    assert model.fit(x, y, epochs=1, verbose=0).history["loss"][0] > 0


def test_seed_makes_weights_and_history_reproducible():
    x, y = blobs(80)

    def run(seed):
        model = classifier(seed=seed).compile("cross_entropy", Adam(0.01), ["accuracy"])
        history = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
        return model.get_weights(), history.history

    w1, h1 = run(7)
    w2, h2 = run(7)
    w3, h3 = run(8)
    assert weights_equal(w1, w2) and h1 == h2
    assert not np.array_equal(w1[0], w3[0]) and h1["loss"] != h3["loss"]


def test_float64_end_to_end():
    x, y = blobs(1200)
    model = classifier(seed=0, dtype="float64").compile("cross_entropy", Adam(0.01), ["accuracy"])
    assert all(w.dtype == np.float64 for w in model.get_weights())
    p = model.predict(x)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, naive_forward(model, x), rtol=1e-12, atol=1e-15)
    loss, _ = model.evaluate(x, y)
    assert loss == pytest.approx(naive_loss("cross_entropy", p, one_hot(y, 3)), rel=1e-12)
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    assert model.predict(x).dtype == np.float64
    assert MLP(dtype=np.float64).dtype is np.float64


def test_to_cpu_keeps_parameters_and_state():
    x, y = blobs(40)
    a = classifier(seed=1).compile("cross_entropy", Adam(0.01))
    b = classifier(seed=1).compile("cross_entropy", Adam(0.01))
    a.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    b.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert a.to("cpu") is a and a.device == "cpu"
    a.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    b.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert weights_equal(a.get_weights(), b.get_weights())


# --------------------------------------------------------------------------------------------
# Each loss trains a small problem
# --------------------------------------------------------------------------------------------

def _linear_regression_data(rows=256, outputs=1):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(rows, 3)).astype(np.float32)
    A = np.array([[0.5, -0.3], [-0.5, 0.2], [0.25, 0.6]])[:, :outputs]
    return x, (x @ A + 3).astype(np.float32)  # targets in [1.75, 4.25]: positive, as MAPE and MSLE want


@pytest.mark.parametrize("loss", ["mse", "sse", "mae", "mape", "msle"])
def test_regression_losses_fit_a_linear_target(loss):
    x, t = _linear_regression_data()
    model = MLP([Dense(3, 1, activation=None)], seed=0).compile(loss, Adam(0.05))
    first = model.evaluate(x, t)
    history = model.fit(x, t, epochs=60, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
    assert model.evaluate(x, t) < 0.05 * first
    assert np.mean(np.abs(model.predict(x) - t)) < 0.05
    W, b = model.get_weights()  # the target's own coefficients
    np.testing.assert_allclose(W[:, 0], [0.5, -0.5, 0.25], atol=0.05)
    np.testing.assert_allclose(b, [3.0], atol=0.05)


def test_cosine_similarity_learns_the_direction():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    A = rng.normal(size=(3, 3))
    t = (x @ A).astype(np.float32)
    model = MLP([Dense(3, 3, activation=None)], seed=0).compile("cosine_similarity", Adam(0.05))
    model.fit(x, t, epochs=40, batch_size=32, verbose=0)
    assert model.evaluate(x, t) < -0.99


def test_cross_entropy_classifies_blobs():
    x, y = blobs(300)
    model = classifier().compile("cross_entropy", Adam(0.05), ["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.1 and history.history["accuracy"][-1] > 0.97


def test_binary_cross_entropy_with_sigmoid_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2)).astype(np.float32)
    keep = np.abs(x[:, 0] + 2 * x[:, 1]) > 0.2  # a margin around the boundary
    x = x[keep]
    t = (x[:, 0] + 2 * x[:, 1] > 0).astype(np.float32)
    model = MLP([Dense(2, 1, activation="sigmoid")], seed=0).compile("binary_crossentropy", Adam(0.1), ["accuracy"])
    history = model.fit(x, t, epochs=40, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.1
    assert model.evaluate(x, t)[1] == 1.0


def test_kl_divergence_fits_soft_targets():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    z = x @ rng.normal(size=(3, 4))
    t = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    model = MLP([Dense(3, 4, activation="softmax")], seed=0).compile("kl_divergence", Adam(0.05))
    first = model.evaluate(x, t)
    model.fit(x, t, epochs=60, batch_size=32, verbose=0)
    assert model.evaluate(x, t) < 0.01 * first


# --------------------------------------------------------------------------------------------
# Optimizers: shared objects, per-layer objects
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [lambda: Adam(0.01), lambda: RMSProp(0.01), lambda: AdaGrad(0.1),
                                  lambda: SGD(0.05, momentum=0.9)], ids=["adam", "rmsprop", "adagrad", "sgd"])
@pytest.mark.parametrize("pattern", [(0, 0, 0), (0, 1, 0)], ids=["all-shared", "first-and-last-shared"])
def test_a_shared_optimizer_keeps_one_state_per_parameter(make, pattern):
    """One object serving several layers trains exactly as separate objects with the same
    hyper-parameters: its state (moments, velocity, sums) belongs to each parameter."""
    x, y = blobs(120)

    def run(optimizers):
        model = MLP([Dense(4, 8, activation="tanh", optimizer=optimizers[0]),
                     Dense(8, 6, activation="relu", optimizer=optimizers[1]),
                     Dense(6, 3, activation="softmax", optimizer=optimizers[2])], seed=11)
        model.compile("cross_entropy", metrics=["accuracy"])
        return model, model.fit(x, y, epochs=3, batch_size=16, verbose=0).history

    shared = [make(), make()]
    a, ha = run([shared[i] for i in pattern])
    b, hb = run([make(), make(), make()])
    assert len(a.optimizers()) == len(set(pattern)) and len(b.optimizers()) == 3
    assert ha == hb
    assert weights_equal(a.get_weights(), b.get_weights())


def test_per_layer_optimizers_each_take_effect():
    """First step of Adam on layer 1 and SGD on layer 2, against the gradients by hand (float64).

    Adam's first step is exactly lr * g / (|g| + eps): m_hat = g and v_hat = g²."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3))
    t = rng.normal(size=(16, 2))
    model = MLP([Dense(3, 5, activation="tanh", optimizer=Adam(0.01)),
                 Dense(5, 2, activation=None, optimizer=SGD(0.1))], seed=0, dtype="float64")
    model.compile("mse")
    W1, b1, W2, b2 = model.get_weights()
    b1 += rng.normal(size=5)  # non-zero biases, so that their gradients are checked too
    b2 += rng.normal(size=2)
    model.set_weights([W1, b1, W2, b2])
    gW1, gb1, gW2, gb2 = naive_gradients(W1, b1, W2, b2, x, t)
    model.train_on_batch(x, t)
    nW1, nb1, nW2, nb2 = model.get_weights()
    np.testing.assert_allclose(nW1, W1 - 0.01 * gW1 / (np.abs(gW1) + 1e-8), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nb1, b1 - 0.01 * gb1 / (np.abs(gb1) + 1e-8), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nW2, W2 - 0.1 * gW2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nb2, b2 - 0.1 * gb2, rtol=1e-10, atol=1e-12)


def test_a_layer_with_zero_learning_rate_keeps_its_weights():
    x, y = blobs(60)
    model = MLP([Dense(4, 8, activation="tanh", optimizer=SGD(learning_rate=0)),
                 Dense(8, 3, activation="softmax", optimizer=Adam(0.01))], seed=0)
    model.compile("cross_entropy")
    W1, b1, W2, b2 = model.get_weights()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = model.get_weights()
    assert np.array_equal(after[0], W1) and np.array_equal(after[1], b1)
    assert not np.array_equal(after[2], W2) and not np.array_equal(after[3], b2)


# --------------------------------------------------------------------------------------------
# Perceptron
# --------------------------------------------------------------------------------------------

GATE_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)


@pytest.mark.parametrize("gate, targets", [("AND", [0, 0, 0, 1]), ("OR", [0, 1, 1, 1])])
def test_perceptron_learns_linearly_separable_gates(gate, targets):
    targets = np.array(targets)
    perceptron = fastnn.Perceptron(input_dim=2, seed=0)
    history = perceptron.fit(GATE_INPUTS, targets, epochs=20, verbose=0)
    assert history.history["accuracy"][-1] == 1.0
    np.testing.assert_array_equal(perceptron.predict(GATE_INPUTS)[:, 0], targets)
    assert perceptron.evaluate(GATE_INPUTS, targets) == [0.0, 1.0]


def test_perceptron_step_is_rosenblatts_rule():
    """w += lr (t - y) x and b += lr (t - y), y = step(w.x + b), computed by hand."""
    perceptron = Perceptron(input_dim=2, learning_rate=0.5)
    assert all(not w.any() for w in perceptron.get_weights())  # weights start at zero
    w = np.array([0.25, -0.5])
    b = 0.125
    perceptron.set_weights([w.reshape(2, 1), np.array([b])])
    for x, t in [([1.0, 1.0], 1.0), ([2.0, -1.0], 0.0), ([1.0, 1.0], 1.0), ([0.5, 3.0], 0.0)]:
        x = np.array(x)
        y = float(w @ x + b > 0)
        loss = perceptron.train_on_batch(x.reshape(1, 2), np.array([t]))
        assert loss[0] == float(y != t)  # the error before the step
        w = w + 0.5 * (t - y) * x
        b = b + 0.5 * (t - y)
        got_w, got_b = perceptron.get_weights()
        np.testing.assert_array_equal(got_w[:, 0], w.astype(np.float32))
        np.testing.assert_array_equal(got_b, np.array([b], np.float32))
