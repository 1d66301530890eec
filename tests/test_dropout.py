"""Dropout as users meet it: argument checks, identity at inference, masks in training that a
seed fixes and every step renews, ``model(x, training=True)``, and save/load resuming with the
same masks. The kernels themselves are tested in test_kernels_dropout.py and, inside whole
networks, against finite differences in test_kernels_network.py."""
import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Input, MLP


def data(rows=64, n_in=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, n_in)).astype(np.float32), rng.integers(0, classes, rows)


def model(rate=0.5, seed=0, first=False):
    layers = ([Input(12), Dropout(0.2)] if first else []) + [Dense(12, 16, activation="relu"), Dropout(rate),
                                                   Dense(16, 3, activation="softmax")]
    m = MLP(layers, seed=seed)
    m.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-2), metrics=["accuracy"])
    return m


@pytest.mark.parametrize("rate, error", [(-0.1, ValueError), (1.0, ValueError), (1.5, ValueError),
                                         (float("nan"), ValueError), ("0.5", TypeError), (None, TypeError)])
def test_rate_must_be_in_zero_one(rate, error):
    with pytest.raises(error, match="rate"):
        Dropout(rate)


def test_dropout_takes_its_width_and_has_no_parameters():
    m = model()
    assert m.layers[1].input_dim == m.layers[1].output_dim == 16
    assert m.layers[1].count_params() == 0 and m.layers[1].get_weights() == []
    with pytest.raises(ValueError, match="input_dim"):
        MLP([Dropout(0.1)])
    assert m.count_params() == 12 * 16 + 16 + 16 * 3 + 3
    assert "Dropout" in repr(m.layers[1]) and Dropout(0.3).get_config() == {"rate": 0.3}


def test_inference_is_the_identity():
    """predict and evaluate equal a model with the same weights and no Dropout layer."""
    x, y = data()
    m = model(first=True)  # Input, Dropout, Dense, Dropout, Dense
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    plain = MLP([Dense(12, 16, activation="relu"), Dense(16, 3, activation="softmax")])
    plain.compile(loss="cross_entropy", metrics=["accuracy"])
    plain.set_weights(m.get_weights())
    np.testing.assert_array_equal(m.predict(x), plain.predict(x))
    np.testing.assert_array_equal(m(x), plain.predict(x))
    assert m.evaluate(x, y) == plain.evaluate(x, y)


def test_training_mode_call_draws_new_masks_each_time():
    x, _ = data()
    m = model(rate=0.5)
    a, b = m(x, training=True), m(x, training=True)
    assert not np.array_equal(a, b)
    assert not np.array_equal(a, m.predict(x))
    # A linear network's training-mode output averages to the inference output (inverted dropout).
    lin = MLP([Dense(12, 16, activation=None), Dropout(0.5), Dense(16, 3, activation=None)], seed=1)
    mean = np.mean([lin(x[:4], training=True) for _ in range(4000)], axis=0)
    np.testing.assert_allclose(mean, lin.predict(x[:4]), atol=0.1 * np.abs(lin.predict(x[:4])).max())


def test_a_seed_fixes_training_and_another_seed_changes_it():
    x, y = data()
    runs = []
    for seed in (3, 3, 4):
        m = model(seed=seed)
        m.set_weights(model(seed=0).get_weights())  # same start, so only the masks (and order) differ
        m.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False)
        runs.append(m.get_weights())
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(runs[0], runs[2]))


def test_rate_zero_trains_exactly_as_no_dropout():
    x, y = data()
    with_layer = model(rate=0.0)
    without = MLP([Dense(12, 16, activation="relu"), Dense(16, 3, activation="softmax")], seed=0)
    without.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-2), metrics=["accuracy"])
    without.set_weights(with_layer.get_weights())
    h1 = with_layer.fit(x, y, epochs=2, batch_size=16, verbose=0)
    h2 = without.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert h1.history == h2.history
    for a, b in zip(with_layer.get_weights(), without.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_dropout_slows_fitting_of_the_training_set():
    """What dropout is for: with the same data and steps, the training loss stays higher."""
    x, y = data(rows=128)
    losses = {}
    for rate in (0.0, 0.6):
        m = model(rate=rate)
        losses[rate] = m.fit(x, y, epochs=30, batch_size=32, verbose=0).history["loss"][-1]
    assert losses[0.6] > 1.2 * losses[0.0]


def test_save_and_load_resume_with_the_same_masks(tmp_path):
    x, y = data()
    m = model(seed=5)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "dropout.npz"
    m.save(path)
    loaded = fastnn.load_model(path)
    assert isinstance(loaded.layers[1], Dropout) and loaded.layers[1].rate == 0.5
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
