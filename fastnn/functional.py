"""Models with several inputs and branches: Keras' functional API.

::

    a, b = Input((4,)), Input((3,))
    h = Concatenate()([Dense(units=8, activation="relu")(a), Dense(units=8, activation="relu")(b)])
    model = Model(inputs=[a, b], outputs=Dense(units=2, activation="softmax")(h))
    model.compile("cross_entropy", "adam").fit([xa, xb], y)

Calling a layer on a tensor (an ``Input``, or what another call returned) connects it and
returns its output tensor; ``Concatenate``, ``Add`` and ``Multiply`` take a list. ``Model`` lays
the graph out as the rows of the kernels' layer table in an order where every layer comes after
what it reads: the inputs first (each a slice of the gathered batch, which holds the inputs'
columns side by side), the output last, and a ``kernels.network.Graph`` that names each row's
sources. The compiled step is the same as a stack's, with ``graph_backward`` summing the
gradients of nodes that several layers read. ``fit``, ``evaluate`` and ``predict`` take a list
of arrays, one per input (an array alone for one input). One output. A layer called on several
tensors (of the widths of its first call) is shared: one row per call, all reading the layer's
one set of weights, whose gradient is the sum of the calls' (``graph.shared`` in
``kernels/table.py``); it appears once in ``layers``, the weights, ``summary`` and the saved
config. On the CPU and on CUDA (``fastnn.cuda.network.graph_backward``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .kernels.table import ADD_LAYER, B_OFF, CONCATENATE_LAYER, KIND, MULTIPLY_LAYER, N_IN, N_OUT, SLICE_LAYER
from .layers import Embedding, Input, Layer, Tensor, as_tensor  # noqa: F401 (Tensor: the functional API's type)
from .network import Network
from .sparse_input import check_sparse, is_sparse
from .validation import check_features


class Merge(Layer):
    """Base of the layers that combine two tensors (a list of more is merged pairwise)."""
    code = None
    onnx_op = None  # the ONNX operator of the merge (Concat on the features' axis)

    def __init__(self) -> None:
        pass

    def _read_tensors(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{type(self).__name__} takes a list of at least two tensors")
        tensors = [as_tensor(t, f"{type(self).__name__}'s inputs") for t in inputs]
        if len(tensors) > 2:  # one binary merge per extra input: ((a, b), c), ...
            tensors = [type(self)()(tensors[:-1]), tensors[-1]]
        return tensors

    def _connect_tensors(self, inputs):
        tensors = self._read_tensors(inputs)
        self.connect_merge([t.width for t in tensors])
        return tensors

    def onnx_nodes(self, graph, inputs):
        return graph.op(self.onnx_op, inputs, **({"axis": 1} if self.code == CONCATENATE_LAYER else {}))

    def connect_merge(self, widths):
        a, b = widths
        if self.code != CONCATENATE_LAYER and a != b:
            raise ValueError(f"{type(self).__name__} needs tensors of one width, got {a} and {b}")
        self.input_dim = a
        self.output_dim = a + b if self.code == CONCATENATE_LAYER else a

    def table_row(self, offset):
        row = super().table_row(offset)
        row[KIND] = self.code
        return row


class Concatenate(Merge):
    """[a, b]: the tensors' features side by side (``keras.layers.Concatenate`` on the last axis)."""
    code = CONCATENATE_LAYER
    onnx_op = "Concat"


class Add(Merge):
    """a + b, elementwise (``keras.layers.Add``)."""
    code = ADD_LAYER
    onnx_op = "Add"


class Multiply(Merge):
    """a * b, elementwise (``keras.layers.Multiply``)."""
    code = MULTIPLY_LAYER
    onnx_op = "Mul"


class Model(Network):
    """A model from the graph between ``inputs`` (``Input`` tensors) and ``outputs`` (one tensor):
    ``Model(inputs=[a, b], outputs=out)``. Everything else is every model's (compile, fit,
    evaluate, predict, summary, get_weights, save, ...), with ``x`` a list of arrays, one per
    input. Its layers come from the graph: it has no ``add``."""
    config_name = "Model"

    def __init__(self, inputs: Input | Sequence[Input], outputs: Tensor, seed: int | None = None,
                 dtype: str = "float32", device: str = "cpu", name: str | None = None) -> None:
        super().__init__(seed=seed, dtype=dtype, device=device, name=name or "model")
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not inputs or not all(isinstance(i, Input) for i in inputs):
            raise TypeError("inputs must be Input tensors (a list of them, or one)")
        for i, inp in enumerate(inputs):  # each input is a slice of the batch's columns: one each
            twin = next((j for j in range(i) if inputs[j] is inp), None)
            if twin is not None:
                raise ValueError(f"inputs[{i}] is inputs[{twin}] again: each Input appears once (its array is passed "
                                 "once; layers may read it several times)")
        if isinstance(outputs, (list, tuple)):
            if len(outputs) != 1:
                raise ValueError("a Model has one output tensor")
            outputs = outputs[0]
        output = as_tensor(outputs, "outputs")
        order, seen = [], set()

        def visit(tensor):  # post-order: every call after what it reads
            if id(tensor) in seen:
                return
            for source in tensor.inputs:
                visit(source)
            seen.add(id(tensor))
            order.append(tensor)

        visit(output)
        reached = [t.layer for t in order if isinstance(t.layer, Input)]
        missing = [i for i in reached if all(i is not j for j in inputs)]
        if missing:
            raise ValueError("outputs depend on an Input that is not in inputs")
        # One row of the kernels' table per call: a shared layer's calls are rows of one layer.
        tensors = [as_tensor(i, "inputs") for i in inputs] + [t for t in order if not isinstance(t.layer, Input)]
        self.inputs = inputs
        self._rows = [t.layer for t in tensors]
        self.layers = []
        for layer in self._rows:  # each layer once, where its first call is
            if all(layer is not own for own in self.layers):
                self.layers.append(layer)
        index = {id(t): k for k, t in enumerate(tensors)}
        self._sources = np.array([[index[id(s)] for s in t.inputs] + [-1] * (2 - len(t.inputs)) if t.inputs
                                  else [-1, -1] for t in tensors], dtype=np.int64)
        start = 0
        # Checked before any layer is marked: a refused model leaves its layers usable for another.
        for layer in self.layers:
            if layer._model is not None:
                raise ValueError(f"this {type(layer).__name__} already belongs to a model: create a new layer")
        for layer in self.layers:
            layer._model = self
        for i in inputs:
            i._column, start = start, start + i.output_dim
        self._total_width = start

    @property
    def input_dim(self):
        return self._total_width

    def _compute_layers(self):
        # One per row: its inputs are rows too (each takes its columns of the gathered batch), a
        # shared layer one row per call.
        return self._rows

    def _graph_table(self):
        return self._sources

    def _table_row(self, layer, offset):
        if isinstance(layer, Input):
            row = np.zeros(6, np.int64)
            row[N_IN], row[N_OUT], row[B_OFF], row[KIND] = self._total_width, layer.output_dim, layer._column, \
                SLICE_LAYER
            return row
        return layer.table_row(offset)

    def _check_x(self, x, name, finite=True):
        """One array per input (a list; an array alone for one input), each checked as its input's
        readers need (ids for an Embedding), side by side as the kernels read them; ``finite`` as
        ``Network._check_x``'s."""
        self._ensure_built()
        arrays = x if isinstance(x, (list, tuple)) else [x]
        if len(arrays) != len(self.inputs):
            raise ValueError(f"{name} must be a list of {len(self.inputs)} arrays, one per input, got {len(arrays)}")
        parts = []
        for i, (array, inp) in enumerate(zip(arrays, self.inputs)):
            readers = [layer for layer, s in zip(self._rows, self._sources) if self._rows.index(inp) in s]
            embedding = next((r for r in readers if isinstance(r, Embedding)), None)
            part_name = f"{name}[{i}]"
            if embedding is not None:
                parts.append(embedding.check_input(array, part_name, self.dtype))
            elif is_sparse(array):
                if len(arrays) > 1:
                    raise TypeError(f"{part_name} is a scipy.sparse matrix: sparse input is taken by a model of one "
                                    "input only; pass dense arrays (x.toarray())")
                parts.append(check_sparse(array, part_name, inp.output_dim, self.dtype))
            else:
                parts.append(check_features(array, part_name, width=inp.output_dim, dtype=self.dtype, writable=False,
                                            check_finite=finite))
        rows = {p.shape[0] for p in parts}
        if len(rows) != 1:
            raise ValueError(f"the arrays of {name} must have the same number of rows, got {[p.shape[0] for p in parts]}")
        if len(parts) == 1:  # already as the kernels read it: a large (memory-mapped) input is not copied
            return parts[0]
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=self.dtype)

    def _connections(self):
        """Per layer, what each of its calls reads ("; " between a shared layer's calls)."""
        names = self.layer_names()
        name = [names[self._layer_index(layer)] for layer in self._rows]
        return ["; ".join(", ".join(name[s] for s in sources if s >= 0)
                          for row, sources in zip(self._rows, self._sources) if row is layer) for layer in self.layers]

    def _layer_index(self, layer):
        return next(i for i, own in enumerate(self.layers) if own is layer)

    def get_config(self):
        config = super().get_config()
        config["model"]["class_name"] = "Model"
        config["model"]["inputs"] = [self._layer_index(i) for i in self.inputs]
        if len(self._rows) == len(self.layers):  # each layer called once: what it reads, in its own entry
            for spec, sources in zip(config["layers"], self._sources):
                spec["inbound"] = [int(s) for s in sources if s >= 0]
        else:  # a shared layer: the calls, in table order, as [layer index, [rows it reads]]
            config["model"]["calls"] = [[self._layer_index(layer), [int(s) for s in sources if s >= 0]]
                                        for layer, sources in zip(self._rows, self._sources)]
        return config

    @classmethod
    def _from_layers(cls, config, layers, device):
        """``from_config``'s model: the layers called again on the tensors they read."""
        calls = config["model"].get("calls")
        if calls is None:
            calls = [[i, spec.get("inbound", [])] for i, spec in enumerate(config["layers"])]
        tensors = []
        for i, inbound in calls:
            layer, inbound = layers[i], [tensors[j] for j in inbound]
            if isinstance(layer, Input):
                tensors.append(as_tensor(layer, "input"))
            else:
                tensors.append(layer(inbound if isinstance(layer, Merge) else inbound[0]))
        return cls([layers[i] for i in config["model"]["inputs"]], tensors[-1], seed=config["model"]["seed"],
                   dtype=config["model"]["dtype"], device=device, name=config["model"]["name"])
