"""The functional API: ``Input``, layers called on tensors, ``Concatenate``/``Add``/``Multiply``
and ``Model(inputs, outputs)``. One training step of a graph with branches, fan-out and every
merge equals the same graph in PyTorch; a two-input task that neither input solves alone is
learned; fit/evaluate/predict take lists; summary, save/load and the errors."""
import numpy as np
import pytest

import fastnn
from fastnn import Add, Concatenate, Dense, Embedding, Input, Model, Multiply


def graph(dtype="float64", optimizer=None, seed=0):
    a, b = Input((3,)), Input((2,))
    ha = Dense(units=4, activation="tanh")(a)
    hb = Dense(units=4, activation="relu")(b)
    joined = Concatenate()([ha, hb, Multiply()([ha, hb])])  # ha and hb read twice: fan-out
    left = Dense(units=3, activation="sigmoid")(joined)
    right = Dense(units=3, activation=None)(joined)
    out = Dense(units=2, activation="softmax")(Add()([left, right]))
    model = Model(inputs=[a, b], outputs=out, seed=seed, dtype=dtype)
    return model.compile("cross_entropy", optimizer or fastnn.SGD(0.5))


def data(rows=12, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)), rng.normal(size=(rows, 2)), rng.integers(0, 2, rows)


def test_one_step_equals_torch():
    torch = pytest.importorskip("torch")
    xa, xb, y = data()
    model = graph()
    params = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    Wa, ba, Wb, bb, Wl, bl, Wr, br, Wo, bo = params
    ha = torch.tanh(torch.from_numpy(xa) @ Wa + ba)
    hb = torch.relu(torch.from_numpy(xb) @ Wb + bb)
    joined = torch.cat([ha, hb, ha * hb], dim=1)
    h = torch.sigmoid(joined @ Wl + bl) + (joined @ Wr + br)
    loss = torch.nn.functional.cross_entropy(h @ Wo + bo, torch.from_numpy(y))
    loss.backward()
    before = model.train_on_batch([xa, xb], y)
    np.testing.assert_allclose(before, loss.item(), rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), params):
        np.testing.assert_allclose(mine, (theirs - 0.5 * theirs.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_float32_agrees_with_float64():
    xa, xb, y = data()
    results = []
    for dtype in ("float32", "float64"):
        model = graph(dtype)
        model.train_on_batch([xa, xb], y)
        results.append(model.get_weights())
    for w32, w64 in zip(*results):
        np.testing.assert_allclose(w32, w64, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # a learning run: 25 epochs of 2,000 rows
def test_a_task_neither_input_solves_alone():
    """y = (a0 > 0) xor (b0 > 0): each input alone predicts y at chance."""
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(2000, 3)), rng.normal(size=(2000, 2))
    y = ((xa[:, 0] > 0) ^ (xb[:, 0] > 0)).astype(np.int64)
    model = graph(dtype="float32", optimizer=fastnn.Adam(1e-2))
    model.compile("cross_entropy", fastnn.Adam(1e-2), metrics=["accuracy"])
    history = model.fit([xa, xb], y, epochs=25, batch_size=50, validation_split=0.2, verbose=0)
    assert history.history["val_accuracy"][-1] > 0.9
    loss, accuracy = model.evaluate([xa, xb], y)
    assert accuracy > 0.9
    assert model.predict([xa, xb]).shape == (2000, 2)


@pytest.mark.slow  # a learning run: 40 epochs, on a graph of its own
def test_an_embedding_input_beside_features():
    rng = np.random.default_rng(2)
    ids, features = rng.integers(0, 6, (300, 2)), rng.normal(size=(300, 3))
    y = ((ids[:, 0] >= 3) ^ (features[:, 0] > 0)).astype(np.int64)
    i, f = Input((2,)), Input((3,))
    h = Concatenate()([Embedding(6, 4, input_length=2)(i), Dense(units=8, activation="relu")(f)])
    model = Model([i, f], Dense(units=2, activation="softmax")(Dense(units=16, activation="relu")(h)), seed=0)
    model.compile("cross_entropy", fastnn.Adam(2e-2), metrics=["accuracy"])
    history = model.fit([ids, features], y, epochs=40, batch_size=30, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    with pytest.raises(ValueError, match=r"x\[0\] holds ids from"):
        model.predict([ids + 6, features])


def test_summary_shows_the_graph(capsys):
    graph().summary()
    text = capsys.readouterr().out
    assert "Connected to" in text and "concatenate" in text and "multiply" in text
    assert "dense_2, dense_3" in text  # the first Multiply reads both branches


def test_save_load_and_pickle_round_trip(tmp_path):
    import pickle
    xa, xb, y = data(30)
    model = graph(optimizer=fastnn.Adam(1e-2))
    model.fit([xa, xb], y, epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert isinstance(loaded, Model)
    np.testing.assert_array_equal(loaded.predict([xa, xb]), model.predict([xa, xb]))
    model.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    loaded.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    twin = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(twin.predict([xa, xb]), model.predict([xa, xb]))


def test_a_functional_model_has_no_add():
    """Its layers come from the graph: it inherits no ``add`` (nor the seed's ``addLayer``) to refuse,
    as Keras' functional Model has none; the stack has both."""
    from fastnn import MLP
    from fastnn.network import Network
    model = graph()
    assert not hasattr(model, "add") and not hasattr(model, "addLayer")
    assert isinstance(model, Network) and not isinstance(model, MLP)
    assert MLP.add is not None and MLP.addLayer is MLP.add


def test_errors():
    a, b = Input((3,)), Input((2,))
    dense = Dense(units=4)
    dense(a)
    with pytest.raises(ValueError, match="same widths"):  # shared, it takes its first call's widths
        dense(b)
    with pytest.raises(ValueError, match="one width"):
        Add()([Dense(units=3)(a), Dense(units=2)(b)])
    with pytest.raises(ValueError, match="at least two"):
        Concatenate()([a])
    with pytest.raises(TypeError, match="must be a tensor"):
        Dense(units=2)(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not in inputs"):
        Model(inputs=[a], outputs=Concatenate()([a, b]))
    xa, xb, y = data()
    model = graph()
    with pytest.raises(ValueError, match="list of 2 arrays"):
        model.predict([xa])
    with pytest.raises(ValueError, match="same number of rows"):
        model.fit([xa, xb[:5]], y, verbose=0)
    with pytest.raises(ValueError, match=r"x\[1\]"):
        model.predict([xa, np.zeros((12, 5))])


def test_a_chain_equals_the_same_stack():
    """Input -> Dense(relu) -> Activation(tanh) -> Dropout -> BatchNorm -> Dense(softmax) as a
    Model equals the MLP whose rows sit at the same indices (Dropout's masks depend on the row):
    the Activation, Dropout and BatchNorm backward passes of the graph."""
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((9, 3)), rng.integers(0, 2, 9)
    a = Input((3,))
    h = fastnn.Dropout(0.3)(fastnn.Activation("tanh")(Dense(units=4, activation="relu")(a)))
    out = Dense(units=2, activation="softmax")(fastnn.BatchNormalization()(h))
    graph_model = Model([a], out, seed=3, dtype="float64").compile("cross_entropy", fastnn.SGD(0.5))
    stack = fastnn.MLP([Input(3), fastnn.Activation(None), Dense(3, 4, activation="relu"), fastnn.Activation("tanh"),
                        fastnn.Dropout(0.3), fastnn.BatchNormalization(), Dense(4, 2, activation="softmax")],
                       seed=3, dtype="float64").compile("cross_entropy", fastnn.SGD(0.5))
    for _ in range(3):
        assert graph_model.train_on_batch(x, y) == pytest.approx(stack.train_on_batch(x, y), rel=1e-12)
    for a_, b_ in zip(graph_model.get_weights(), stack.get_weights()):
        np.testing.assert_allclose(a_, b_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(graph_model.predict(x), stack.predict(x), rtol=1e-12)


def test_to_cpu_keeps_the_graph():
    """``to`` rebuilds the backend with the graph's sources: the moved model predicts, evaluates
    and trains as the model that never moved."""
    xa, xb, y = data()
    moved, still = graph(), graph()
    moved.get_weights()  # built: to then moves its buffers
    assert moved.to("cpu") is moved
    np.testing.assert_array_equal(moved.predict([xa, xb]), still.predict([xa, xb]))
    assert moved.evaluate([xa, xb], y) == still.evaluate([xa, xb], y)
    moved.fit([xa, xb], y, epochs=1, batch_size=4, verbose=0)
    still.fit([xa, xb], y, epochs=1, batch_size=4, verbose=0)
    for a, b in zip(moved.get_weights(), still.get_weights()):
        np.testing.assert_array_equal(a, b)
