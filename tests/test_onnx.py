"""ONNX export: the file passes onnx.checker and onnxruntime reproduces predict, for every
layer kind and activation, float32 and float64; what cannot be exported is a clear error."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastnn  # noqa: E402
from fastnn import MLP, Activation, BatchNormalization, Dense, Dropout, Input  # noqa: E402
from helpers import randomize_weights  # noqa: E402


def model_of(dtype, activations):
    layers = [Input(6), Dense(output_dim=8, activation="relu"), BatchNormalization(), Dropout(0.3)]
    width = 8
    for act in activations:
        layers.append(Dense(width, 5, activation=act))
        width = 5
    layers += [Dense(width, 4, activation=None), Activation("softmax")]
    model = MLP(layers, seed=0, dtype=dtype)
    randomize_weights(model)  # BatchNorm's moving statistics as well
    return model, np.random.default_rng(0).normal(size=(64, 6)).astype(dtype)


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x})[0]


# float64 runs with -m slow: the same export at another dtype, and a model of its own to compile.
@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_onnxruntime_reproduces_predict(tmp_path, dtype):
    model, x = model_of(dtype, ["tanh", "sigmoid", fastnn.LeakyReLU(0.2), fastnn.ELU(0.7), "relu"])
    path = model.to_onnx(tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    out = run(path, x)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-5, atol=1e-5 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(run(path, x[:1]), model.predict(x[:1]), rtol=1e-5, atol=1e-5)  # N is free


def test_a_perceptron_step_exports(tmp_path):
    model = fastnn.Perceptron(3)
    model.set_weights([np.array([[1.0], [-2.0], [0.5]], np.float32), np.array([0.1], np.float32)])
    x = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(fastnn.onnx.export(model, tmp_path / "p.onnx"), x), model.predict(x))


def test_bad_arguments(tmp_path):
    model, _ = model_of("float32", [])
    with pytest.raises(ValueError, match="opset must be an integer >= 13"):
        model.to_onnx(tmp_path / "m.onnx", opset=11)
    with pytest.raises(TypeError, match="fastnn MLP"):
        fastnn.onnx.export("model", tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("combiner", ["concat", "sum", "mean"])
def test_embedding_and_masking_export_as_gather_and_where(tmp_path, combiner, mask_zero):
    model = MLP([fastnn.Embedding(9, 3, input_length=4, mask_zero=mask_zero, combiner=combiner),
                 Dense(output_dim=5, activation="relu"), fastnn.Masking(0.0), Dense(output_dim=2, activation=None)],
                seed=0)
    randomize_weights(model)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 9, (32, 4))
    ids[0] = 0  # padding only
    path = model.to_onnx(tmp_path / "embedding.onnx")
    np.testing.assert_allclose(run(path, ids.astype(np.float32)), model.predict(ids), rtol=1e-5, atol=1e-6)


def functional(kind):
    """A functional Model of ``kind`` (``randomize_weights``) and its list of inputs (ids as integers)."""
    from fastnn import Add, Concatenate, Model, Multiply
    rng = np.random.default_rng(3)
    if kind == "embedding":
        i, f = Input((3,)), Input((4,))
        h = Concatenate()([fastnn.Embedding(7, 2, input_length=3, mask_zero=True, combiner="mean")(i),
                           fastnn.Masking(0.0)(Dense(units=5, activation="relu")(f))])
        out = Dense(units=3, activation="softmax")(h)
        inputs, xs = [i, f], [rng.integers(0, 7, (40, 3)), rng.normal(size=(40, 4))]
    elif kind == "concatenate":  # three tensors: a chain of pairs, the order as fastnn's
        a, b = Input((4,)), Input((3,))
        h = Concatenate()([Dense(units=5, activation="tanh")(a), Dense(units=2, activation=None)(b),
                           fastnn.Activation("sigmoid")(b)])
        out = Dense(units=3, activation="softmax")(BatchNormalization()(h))
        inputs, xs = [a, b], [rng.normal(size=(40, 4)), rng.normal(size=(40, 3))]
    elif kind == "residual":
        a = Input((4,))
        h = Dense(units=4, activation="relu")(a)
        h = Add()([Dropout(0.5)(Dense(units=4, activation=fastnn.LeakyReLU(0.1))(h)), h, a])
        out = Dense(units=3, activation="softmax")(h)
        inputs, xs = [a], [rng.normal(size=(40, 4))]
    else:
        a, b = Input((4,)), Input((3,))
        h = Multiply()([Dense(units=5, activation="sigmoid")(a), Dense(units=5, activation=fastnn.ELU(0.5))(b)])
        out = Dense(units=3, activation="softmax")(h)
        inputs, xs = [a, b], [rng.normal(size=(40, 4)), rng.normal(size=(40, 3))]
    model = Model(inputs, out, seed=0)
    randomize_weights(model)
    return model, xs


# residual and embedding: a graph compiled for each alone (their predict)
@pytest.mark.parametrize("kind", ["concatenate", pytest.param("residual", marks=pytest.mark.slow), "multiply",
                                  pytest.param("embedding", marks=pytest.mark.slow)])
def test_functional_models_export_one_input_each(tmp_path, kind):
    model, xs = functional(kind)
    path = model.to_onnx(tmp_path / f"{kind}.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    names = [f"input_{k}" for k in range(len(xs))]
    assert [i.name for i in proto.graph.input] == names
    ops = {node.op_type for node in proto.graph.node}
    assert {"concatenate": "Concat", "residual": "Add", "multiply": "Mul", "embedding": "Gather"}[kind] in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: x.astype(np.float32) for n, x in zip(names, xs)}
    out = session.run(["y"], feed)[0]
    np.testing.assert_allclose(out, model.predict(xs), rtol=1e-5, atol=1e-5)


def test_a_shared_layer_exports_its_weights_once(tmp_path):
    """Each call of a shared layer is a node of its own reading the same initializers."""
    from fastnn import Add, Concatenate, Model
    rng = np.random.default_rng(5)
    a, b = Input((4,)), Input((4,))
    enc, block = Dense(units=5, activation="tanh"), Dense(units=5, activation=fastnn.LeakyReLU(0.2))
    ha, hb = enc(a), enc(b)
    out = Dense(units=3, activation="softmax")(Concatenate()([block(block(Add()([ha, hb]))), hb]))
    model = Model([a, b], out, seed=0)
    randomize_weights(model)
    xs = [rng.normal(size=(40, 4)), rng.normal(size=(40, 4))]
    proto = onnx.load(str(model.to_onnx(tmp_path / "shared.onnx")))
    assert len(proto.graph.initializer) == len(model.get_weights())  # enc, block, out: W and b each
    matmuls = [node for node in proto.graph.node if node.op_type == "MatMul"]
    assert len(matmuls) == 5 and len({node.input[1] for node in matmuls}) == 3
    session = ort.InferenceSession(str(tmp_path / "shared.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(["y"], {f"input_{k}": x.astype(np.float32) for k, x in enumerate(xs)})[0]
    np.testing.assert_allclose(out, model.predict(xs), rtol=1e-5, atol=1e-5)


def test_a_layer_kind_brings_its_own_export(tmp_path):
    """The graph around the layers is ``fastnn.onnx``'s; a layer's nodes are its class's
    ``onnx_nodes``: a layer of one's own exports by defining it, with nothing added to fastnn.onnx."""
    from helpers import UserDense

    class ExportedDense(UserDense):
        def onnx_nodes(self, graph, inputs):
            kernel, bias = self.get_weights()
            product = graph.op("MatMul", [inputs[0], graph.constant("kernel", kernel)])
            return graph.op("Add", [product, graph.constant("bias", bias)])

    model = MLP([Dense(3, 5, activation="tanh"), ExportedDense(4), Activation("softmax")], seed=0)
    x = np.random.default_rng(2).normal(size=(10, 3)).astype(np.float32)
    np.testing.assert_allclose(run(model.to_onnx(tmp_path / "m.onnx"), x), model.predict(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="UserDense has no ONNX export"):
        MLP([Dense(3, 5), UserDense(4)], seed=0).to_onnx(tmp_path / "n.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
