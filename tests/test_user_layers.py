"""Layers written by users: ``Lambda`` and subclasses of ``fastnn.Layer``, compiled into the step.

A user Lambda and a user layer written once here and once in PyTorch: one training step gives
the same loss and weights; the user layer's backward is checked against finite differences
through the model; errors (a function Numba cannot compile, a wrong shape, the GPU) come when
the model is built, naming the function; saving stores import paths, and ``load_model`` needs
``custom_objects``."""
import numpy as np
import pytest

import fastnn
from fastnn import MLP, Dense, Lambda
from helpers import Affine, UserDense


def cube(x):
    return x * x * x


def cube_backward(x, y, dy):
    return 3.0 * x * x * dy


def model(dtype="float64", optimizer=None):
    m = MLP([Dense(4, 6, activation=None), Lambda(cube, cube_backward), Affine(), UserDense(3)], seed=0, dtype=dtype)
    return m.compile("mse", optimizer or fastnn.SGD(0.1))


def data(rows=10):
    rng = np.random.default_rng(1)
    return rng.normal(size=(rows, 4)), rng.normal(size=(rows, 3))


@pytest.mark.slow  # each model with user layers compiles anew; finite differences check the same step by default
def test_one_step_equals_torch():
    torch = pytest.importorskip("torch")
    x, y = data()
    m = model()
    W1, b1, scale, shift, frozen, W2, b2 = [torch.tensor(w, requires_grad=True) for w in m.get_weights()]
    h = (torch.from_numpy(x) @ W1 + b1) ** 3
    h = h * scale + shift + frozen
    out = h @ W2 + b2
    loss = ((out - torch.from_numpy(y)) ** 2).mean()
    loss.backward()
    before = m.train_on_batch(x, y)
    np.testing.assert_allclose(before, loss.item(), rtol=1e-12)
    expected = [t - 0.1 * t.grad for t in (W1, b1, scale, shift)] + [frozen] + [t - 0.1 * t.grad for t in (W2, b2)]
    for mine, theirs in zip(m.get_weights(), expected):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_gradients_match_finite_differences():
    x, y = data(5)
    m = model()
    weights = m.get_weights()
    m.train_on_batch(x, y)  # SGD(0.1): grads = (before - after) / 0.1
    grads = [(a - b) / 0.1 for a, b in zip(weights, m.get_weights())]
    probe = m  # the loss at other weights; a second model would compile its user layers again

    def loss(ws):
        probe.set_weights(ws)
        return probe.evaluate(x, y)

    h = 1e-6
    for i, w in enumerate(weights):
        if i == 4:  # the frozen weight is not trained
            np.testing.assert_array_equal(grads[i], 0)
            continue
        numeric = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            plus = [a.copy() for a in weights]
            minus = [a.copy() for a in weights]
            plus[i][index] += h
            minus[i][index] -= h
            numeric[index] = (loss(plus) - loss(minus)) / (2 * h)
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-8, err_msg=f"weight {i}")


def test_a_user_dense_trains_like_the_built_in_dense():
    x, y = data(40)
    user = MLP([UserDense(3, input_dim=4)], seed=0, dtype="float64").compile("mse", fastnn.Adam(0.01))
    builtin = MLP([Dense(4, 3, activation=None)], seed=0, dtype="float64").compile("mse", fastnn.Adam(0.01))
    builtin.set_weights(user.get_weights())
    user.fit(x, y, epochs=3, batch_size=8, verbose=0)
    builtin.fit(x, y, epochs=3, batch_size=8, verbose=0)
    for a, b in zip(user.get_weights(), builtin.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # user layers compile anew per model
def test_float32_models_work():
    x, y = data(20)
    m = model("float32", fastnn.Adam(1e-2))
    history = m.fit(x, y, epochs=5, batch_size=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert m.predict(x).dtype == np.float32


def not_numba(x):
    return np.array([str(v) for v in x])  # strings: Numba cannot type this


def wrong_width(x):
    return x[:, :1]


def wrong_rows_backward(x, y, dy):
    return dy[:1]


def test_a_function_numba_cannot_compile_is_an_error_at_build_naming_it():
    with pytest.raises(ValueError, match="not_numba"):
        MLP([Dense(4, 3), Lambda(not_numba, cube_backward, output_dim=3)]).get_weights()


def test_wrong_shapes_are_errors_at_build_naming_the_function():
    with pytest.raises(ValueError, match="wrong_width.*forward returned an array of another shape"):
        MLP([Dense(4, 3), Lambda(wrong_width, cube_backward, output_dim=3)]).get_weights()
    with pytest.raises(ValueError, match="wrong_rows_backward.*backward returned dx of another shape"):
        MLP([Dense(4, 3), Lambda(cube, wrong_rows_backward)]).get_weights()


def test_output_width_is_found_by_calling_forward():
    m = MLP([Dense(4, 3), Lambda(wrong_width, wrong_rows_backward)])
    assert m.layers[1].output_dim == 1


def test_user_layers_are_cpu_only_and_add_weight_rules():
    pytest.importorskip("numba.cuda")
    with pytest.raises(ValueError, match="CPU only"):
        MLP([Dense(4, 3), Affine()], device="cuda").get_weights()

    class Backwards(Affine):
        def build(self, input_dim):
            self.add_weight("frozen", (input_dim,), trainable=False)
            self.add_weight("scale", (input_dim,))
            return input_dim

    with pytest.raises(ValueError, match="trainable weights before"):
        MLP([Dense(4, 3), Backwards()])
    with pytest.raises(ValueError, match="add_weight is for"):
        Affine().add_weight("w", (2,))


def test_save_load_needs_custom_objects(tmp_path):
    x, y = data(20)
    m = model(optimizer=fastnn.Adam(1e-2))
    m.fit(x, y, epochs=2, batch_size=5, verbose=0)
    m.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="custom_objects=.*cube"):
        fastnn.load_model(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz", custom_objects={"cube": cube, "cube_backward": cube_backward})
    np.testing.assert_array_equal(loaded.predict(x), m.predict(x))
    assert m.get_config()["layers"][1]["config"]["forward"] == f"{__name__}:cube"
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    loaded.fit(x, y, epochs=1, batch_size=5, verbose=0)
    for a, b in zip(m.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # user layers compile anew per model (three here)
def test_pickle_and_deepcopy_rebuild_user_layers():
    import copy
    import pickle
    x, y = data(10)
    m = model(optimizer=fastnn.Adam(1e-2))
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    for twin in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        np.testing.assert_array_equal(twin.predict(x), m.predict(x))


@pytest.mark.slow  # user layers compile anew per model (three here)
def test_to_cpu_keeps_the_user_layers():
    """``to`` rebuilds the backend with the user layers' functions: the moved model predicts,
    evaluates and trains as the model that never moved."""
    x, y = data(10)
    moved, still = model(), model()
    moved.get_weights()  # built: to then moves its buffers
    assert moved.to("cpu") is moved
    np.testing.assert_array_equal(moved.predict(x), still.predict(x))
    assert moved.evaluate(x, y) == still.evaluate(x, y)
    moved.fit(x, y, epochs=1, batch_size=5, verbose=0)
    still.fit(x, y, epochs=1, batch_size=5, verbose=0)
    for a, b in zip(moved.get_weights(), still.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # user layers compile anew per model; the refusal is checked by default above
def test_to_cuda_refuses_a_user_layer_model_and_leaves_it_usable():
    pytest.importorskip("numba.cuda")
    x, y = data(10)
    m = model()
    before = m.predict(x)
    with pytest.raises(ValueError, match=r"Lambda .*CPU only"):
        m.to("cuda")
    assert m.device == "cpu" and m._backend.name == "cpu"
    np.testing.assert_array_equal(m.predict(x), before)
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    unbuilt = MLP([Dense(4, 3), Affine()])
    with pytest.raises(ValueError, match=r"Affine .*CPU only"):
        unbuilt.to("cuda")
    assert unbuilt.device == "cpu" and unbuilt.predict(x).shape == (10, 3)


def scaling(factor):
    """A Lambda's two functions, nested: every call makes new ones of the same qualname."""
    def forward(x):
        return x * factor

    def backward(x, y, dy):
        return dy * factor

    return forward, backward


def nested_model():
    m = MLP([Dense(4, 6, activation="tanh"), Lambda(*scaling(2.0)), Lambda(*scaling(-3.0)), UserDense(3)], seed=0,
            dtype="float64")
    return m.compile("mse", fastnn.Adam(1e-2))


@pytest.mark.slow  # user layers compile anew per model (four here)
def test_deepcopy_copies_nested_lambda_functions_in_memory():
    """deepcopy keeps each Lambda's own functions (two closures of one qualname stay apart) and the
    whole training state: the copy predicts and trains as the original."""
    import copy
    x, y = data(10)
    unbuilt = copy.deepcopy(nested_model())
    assert all(layer._model is unbuilt for layer in unbuilt.layers)
    np.testing.assert_array_equal(unbuilt.predict(x), nested_model().predict(x))
    m = nested_model()
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    twin = copy.deepcopy(m)
    assert all(layer._model is twin for layer in twin.layers)
    assert [layer.forward for layer in twin.layers[1:3]] == [layer.forward for layer in m.layers[1:3]]
    np.testing.assert_array_equal(twin.predict(x), m.predict(x))
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    twin.fit(x, y, epochs=1, batch_size=5, verbose=0)
    for a, b in zip(twin.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # user layers compile anew per model
def test_pickling_a_nested_lambda_names_the_layer_and_why():
    import pickle
    m = nested_model()
    for built in (False, True):
        if built:
            m.get_weights()
        with pytest.raises(pickle.PicklingError, match=r"layer 1 \(Lambda\).*scaling.<locals>.forward.*nested"):
            pickle.dumps(m)
