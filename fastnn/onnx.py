"""ONNX export: ``export(model, path)`` (also ``model.to_onnx(path)``), through the ``onnx`` package.

The graph computes ``model.predict``: input ``x`` of shape (N, input width), output ``y`` of
shape (N, output width), both in the model's dtype, N free. A ``Dense`` layer becomes MatMul
(W as fastnn keeps it, (in, out)) and Add, then its activation's operator (Relu, Sigmoid, Tanh,
Softmax over the last axis, LeakyRelu, Elu (in float64 its formula: onnxruntime has no double
Elu); Heaviside as Greater then Cast); ``Dropout`` is the
identity (inference); ``BatchNormalization`` is folded into Mul and Add with its running
statistics: x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps)). Opset 17
by default. The file passes ``onnx.checker`` and is written atomically (``fastnn.saving``).
Needs ``pip install "fastnn[onnx]"``; onnxruntime runs the file (tested against ``predict``).

An ``Embedding`` is a Gather of its table (the ids come as floats, as ``predict`` takes them,
and are cast to int64); ``Masking`` is Equal then Where. A functional ``Model`` has one graph
input per ``Input``, in the order of ``Model(inputs=...)``, named after the Input's ``name``
if it has one, else ``input_0``, ``input_1``, ...; ``Concatenate`` becomes Concat on axis 1 (its
tensors in call order), ``Add`` Add and ``Multiply`` Mul (a merge of more than two tensors is a
chain of pairs, as fastnn computes it). onnxruntime's inputs dict is then
``{"input_0": x1, "input_1": x2}`` for ``model.predict([x1, x2])``.
"""
import numpy as np

from .activations import ELU, Heaviside, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .layers import Activation, BatchNormalization, Dense, Dropout, Embedding, Input, Masking
from .saving import atomic_write

DEFAULT_OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "fastnn[onnx]"') from None
    return onnx


def to_model_proto(model, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``model`` (checked by ``onnx.checker``)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper
    from .functional import Add, Concatenate, Multiply
    from .model import MLP
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastnn MLP, got {type(model).__name__}")
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an integer >= 13 (Softmax over the last axis), got {opset!r}")
    model._ensure_built()
    dtype = np.dtype(model.dtype)
    elem = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    nodes, inits = [], []
    counter = [0]

    def name(stem):
        counter[0] += 1
        return f"{stem}_{counter[0]}"

    def constant(stem, array):
        tensor = numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name(stem))
        inits.append(tensor)
        return tensor.name

    def op(kind, inputs, **attrs):
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], name=out + "_node", **attrs))
        return out

    def activation(act, x):
        if act is None or isinstance(act, Identity):
            return x
        simple = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}
        if type(act) in simple:
            return op(simple[type(act)], [x])
        if isinstance(act, Softmax):
            return op("Softmax", [x], axis=-1)
        if isinstance(act, LeakyReLU):
            return op("LeakyRelu", [x], alpha=float(act.alpha))
        if isinstance(act, ELU):
            if dtype == np.float64:  # onnxruntime has no double Elu kernel: its formula instead
                negative = op("Mul", [op("Sub", [op("Exp", [x]), constant("one", np.ones(()))]),
                                      constant("alpha", np.array(act.alpha))])
                return op("Where", [op("Greater", [x, constant("zero", np.zeros(()))]), x, negative])
            return op("Elu", [x], alpha=float(act.alpha))
        if isinstance(act, Heaviside):
            return op("Cast", [op("Greater", [x, constant("zero", np.zeros(()))])], to=elem)
        raise ValueError(f"{type(act).__name__} has no ONNX export")

    def embedding(layer, ids):
        """Gather of the table (the input holds the ids as floats); with mask_zero the table's row 0
        is zero (fastnn keeps it so), so padding gathers zeros; "mean" then divides by the count of
        ids that are not padding."""
        index = op("Cast", [ids], to=TensorProto.INT64)
        vectors = op("Gather", [constant("embeddings", layer.get_weights()[0]), index], axis=0)  # (N, L, D)
        if layer.combiner == "concat":
            return op("Reshape", [vectors, int64("shape", [-1, layer.output_dim])])
        total = op("ReduceSum", [vectors, int64("axis", [1])], keepdims=0)
        if layer.combiner == "sum":
            return total
        if not layer.mask_zero:
            return op("Div", [total, constant("length", np.array(layer.input_length))])
        counted = op("ReduceSum", [op("Cast", [op("Not", [op("Equal", [index, int64("padding", 0)])])], to=elem),
                                   int64("axis", [1])], keepdims=1)
        return op("Div", [total, op("Max", [counted, constant("one", np.ones(()))])])

    def int64(stem, values):
        tensor = numpy_helper.from_array(np.array(values, dtype=np.int64), name(stem))
        inits.append(tensor)
        return tensor.name

    def layer_node(layer, x):
        """The output of ``layer``, a layer with one input, reading ``x`` (Input and Dropout excepted)."""
        if isinstance(layer, Dense):
            W, b = layer.get_weights()
            return activation(layer.activation, op("Add", [op("MatMul", [x, constant("W", W)]), constant("b", b)]))
        if isinstance(layer, Activation):
            return activation(layer.activation, x)
        if isinstance(layer, BatchNormalization):
            gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
            scale = gamma / np.sqrt(var + layer.epsilon)
            return op("Add", [op("Mul", [x, constant("bn_scale", scale)]), constant("bn_shift", beta - mean * scale)])
        if isinstance(layer, Embedding):
            return embedding(layer, x)
        if isinstance(layer, Masking):
            missing = op("Equal", [x, constant("mask_value", np.array(layer.mask_value))])
            return op("Where", [missing, constant("zero", np.zeros(())), x])
        raise ValueError(f"{type(layer).__name__} has no ONNX export")

    table = model._graph_table()
    if table is None:
        inputs = [("x", model.input_dim)]
        x = "x"
        for layer in model.layers:
            if not isinstance(layer, (Input, Dropout)):
                x = layer_node(layer, x)
    else:
        # The functional Model's rows are already in an order where each comes after what it
        # reads (its inputs first); a merge reads two rows (more are nested pairs), in call order.
        inputs = [(getattr(i, "name", None) or f"input_{k}", i.output_dim) for k, i in enumerate(model.inputs)]
        given = dict(zip((id(i) for i in model.inputs), (n for n, _ in inputs)))
        merges = {Concatenate: ("Concat", {"axis": 1}), Add: ("Add", {}), Multiply: ("Mul", {})}
        outputs = []
        for layer, sources in zip(model.layers, table):
            reads = [outputs[s] for s in sources if s >= 0]
            if isinstance(layer, Input):
                outputs.append(given[id(layer)])
            elif isinstance(layer, Dropout):
                outputs.append(reads[0])
            elif type(layer) in merges:
                kind, attrs = merges[type(layer)]
                outputs.append(op(kind, reads, **attrs))
            else:
                outputs.append(layer_node(layer, reads[0]))
        x = outputs[-1]
    nodes.append(helper.make_node("Identity", [x], ["y"], name="output"))
    graph = helper.make_graph(
        nodes, model.name or "fastnn",
        [helper.make_tensor_value_info(n, elem, ["N", int(width)]) for n, width in inputs],
        [helper.make_tensor_value_info("y", elem, ["N", int(model.output_dim)])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fastnn")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` as an ONNX file to ``path`` (atomically); returns ``path``."""
    proto = to_model_proto(model, opset)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return path
