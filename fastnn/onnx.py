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

Each layer class writes its own nodes (``Layer.onnx_nodes(graph, inputs)``, with the
``GraphBuilder`` below): a new kind of layer brings its export with it; this module builds the
graph around them (inputs, order, output) and the activations' operators.

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
from .layers import Input
from .saving import atomic_write

DEFAULT_OPSET = 17


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "fastnn[onnx]"') from None
    return onnx


class GraphBuilder:
    """The nodes and initializers of one ONNX graph in a model's dtype, each named uniquely: what
    a layer's ``onnx_nodes`` adds to. ``float_type`` and ``int64_type`` are the ONNX element
    types of the model's floats and of int64 (for Cast's ``to``); ``opset`` the graph's version
    of the standard operators, for a layer whose operator needs a newer one."""

    def __init__(self, dtype, opset=DEFAULT_OPSET):
        from onnx import TensorProto
        self.dtype = np.dtype(dtype)
        self.float_type = TensorProto.DOUBLE if self.dtype == np.float64 else TensorProto.FLOAT
        self.int64_type = TensorProto.INT64
        self.opset = opset
        self.nodes, self.initializers = [], []
        self._count = 0
        self._layer, self._made, self._kept = None, 0, {}

    def call(self, layer, inputs):
        """``layer.onnx_nodes(self, inputs)``: a shared layer's later calls read the initializers its
        first call made (the n-th constant of a call is the n-th of the first), not copies."""
        self._layer, self._made = layer, 0
        try:
            return layer.onnx_nodes(self, inputs)
        finally:
            self._layer = None

    def _initializer(self, make):
        """The name of the initializer ``make()`` adds, or of the one the layer's first call added."""
        if self._layer is None:
            return make()
        key = (id(self._layer), self._made)
        self._made += 1
        if key not in self._kept:
            self._kept[key] = make()
        return self._kept[key]

    def name(self, stem):
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem, array):
        """An initializer holding ``array`` in the model's dtype; returns its name."""
        return self._initializer(lambda: self._add(np.ascontiguousarray(array, dtype=self.dtype), stem))

    def int64(self, stem, values):
        """An int64 initializer (shapes, axes, ids); returns its name."""
        return self._initializer(lambda: self._add(np.array(values, dtype=np.int64), stem))

    def _add(self, array, stem):
        from onnx import numpy_helper
        tensor = numpy_helper.from_array(array, self.name(stem))
        self.initializers.append(tensor)
        return tensor.name

    def op(self, kind, inputs, **attrs):
        """A node ``kind`` reading the tensors named ``inputs``; returns its output's name."""
        from onnx import helper
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out + "_node", **attrs))
        return out

    def activation(self, act, x):
        """``act`` applied to ``x`` (None and Identity: ``x`` itself)."""
        if act is None or isinstance(act, Identity):
            return x
        simple = {ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}
        if type(act) in simple:
            return self.op(simple[type(act)], [x])
        if isinstance(act, Softmax):
            return self.op("Softmax", [x], axis=-1)
        if isinstance(act, LeakyReLU):
            return self.op("LeakyRelu", [x], alpha=float(act.alpha))
        if isinstance(act, ELU):
            if self.dtype == np.float64:  # onnxruntime has no double Elu kernel: its formula instead
                negative = self.op("Mul", [self.op("Sub", [self.op("Exp", [x]), self.constant("one", np.ones(()))]),
                                           self.constant("alpha", np.array(act.alpha))])
                return self.op("Where", [self.op("Greater", [x, self.constant("zero", np.zeros(()))]), x, negative])
            return self.op("Elu", [x], alpha=float(act.alpha))
        if isinstance(act, Heaviside):
            return self.op("Cast", [self.op("Greater", [x, self.constant("zero", np.zeros(()))])], to=self.float_type)
        raise ValueError(f"{type(act).__name__} has no ONNX export")


def to_model_proto(model, opset=DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of ``model`` (checked by ``onnx.checker``)."""
    onnx = _onnx()
    from onnx import helper
    # Any fastnn model (MLP, Model): what every one has, checked without importing the model
    # classes, which import this module for their ``to_onnx``.
    if not all(hasattr(model, a) for a in ("layers", "_graph_table", "_ensure_built", "to_onnx")):
        raise TypeError(f"model must be a fastnn MLP, got {type(model).__name__}")
    if not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset must be an integer >= 13 (Softmax over the last axis), got {opset!r}")
    model._ensure_built()
    graph = GraphBuilder(model.dtype, opset)
    table = model._graph_table()
    if table is None:
        inputs = [("x", model.input_dim)]
        x = "x"
        for layer in model.layers:
            x = graph.call(layer, [x])
    else:
        # The functional Model's rows (one per call) are already in an order where each comes
        # after what it reads (its inputs first); a merge reads two rows (more are nested pairs),
        # in call order; a shared layer's calls share its initializers (``GraphBuilder.call``).
        inputs = [(getattr(i, "name", None) or f"input_{k}", i.output_dim) for k, i in enumerate(model.inputs)]
        given = dict(zip((id(i) for i in model.inputs), (n for n, _ in inputs)))
        outputs = []
        rows = model._compute_layers()
        # Several outputs: one graph output each, named as the model's outputs (the hidden rows
        # that put them side by side for training are left out).
        for layer, sources in zip(rows[:len(rows) - model._hidden_rows], table):
            if isinstance(layer, Input):
                outputs.append(given[id(layer)])
            else:
                outputs.append(graph.call(layer, [outputs[s] for s in sources if s >= 0]))
        if model._hidden_rows:
            results = [(name, outputs[r], rows[r].output_dim) for name, r in zip(model.output_names,
                                                                                  model._output_rows)]
    if table is None or not model._hidden_rows:
        results = [("y", outputs[-1] if table is not None else x, model.output_dim)]
    for name, node, _ in results:
        graph.nodes.append(helper.make_node("Identity", [node], [name], name="output" if name == "y" else
                                            f"output_{name}"))
    proto_graph = helper.make_graph(
        graph.nodes, model.name or "fastnn",
        [helper.make_tensor_value_info(n, graph.float_type, ["N", int(width)]) for n, width in inputs],
        [helper.make_tensor_value_info(name, graph.float_type, ["N", int(width)]) for name, _, width in results],
        graph.initializers)
    proto = helper.make_model(proto_graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fastnn")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, opset=DEFAULT_OPSET):
    """Write ``model`` as an ONNX file to ``path`` (atomically); returns ``path``."""
    proto = to_model_proto(model, opset)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return path
