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
of arrays, one per input (an array alone for one input). On the CPU and on CUDA
(``fastnn.cuda.network.graph_backward``).

A layer called on several tensors (of the widths of its first call) is shared: one row per call,
all reading the layer's one set of weights, whose gradient is the sum of the calls'
(``graph.shared`` in ``kernels/table.py``); it appears once in ``layers``, the weights,
``summary`` and the saved config.

Several outputs (``outputs=[out_a, out_b]``, Keras 3's API: ``compile``'s ``loss``,
``loss_weights`` and ``metrics`` per output, y a list or dict, one ``sample_weight`` for every
output, the logs ``<output name>_loss`` and ``<output name>_<metric>``): hidden
Concatenate rows after all the others put the outputs side by side, the one output the kernels
see, and ``losses.OutputLosses`` is its loss: the built-in losses of the outputs on their
columns, weighted and summed. On the CPU it is compiled as a loss of one's own is
(``user_losses.output_loss_kernels``) and each output's own loss is counted in the step as a
metric function is; on CUDA one kernel reduces each output's block in turn
(``cuda.losses.outputs_loss``). Each output's metrics are counted on its columns
(``kernels.metrics``' counters read a column range; metric functions as
``user_losses.OutputMetric``). ``predict`` splits the side-by-side output into a list.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np
from numpy.typing import NDArray

from .kernels.table import B_OFF, KIND, N_IN, N_OUT, SLICE_LAYER
from .layers import Embedding, Input, Tensor, as_tensor  # noqa: F401 (Tensor: the functional API's type)
# The merges are layers (``fastnn.layers.merging``); imported here too, where pickles of older versions name them.
from .layers import Add, Concatenate, Merge, Multiply  # noqa: F401
from . import losses
from . import metrics as metrics_
from .network import Network
from .sparse_input import check_sparse, is_sparse
from .user_losses import OutputMetric, split_metrics
from .validation import check_features, check_targets

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


class Model(Network):
    """A model from the graph between ``inputs`` (``Input`` tensors) and ``outputs`` (a tensor, or
    a list of them): ``Model(inputs=[a, b], outputs=out)``. Everything else is every model's (compile, fit,
    evaluate, predict, summary, get_weights, save, ...), with ``x`` a list of arrays, one per
    input. Its layers come from the graph: it has no ``add``."""
    config_name = "Model"

    def __init__(self, inputs: Input | Sequence[Input], outputs: Tensor | Sequence[Tensor], seed: int | None = None,
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
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        if not outs:
            raise ValueError("outputs must hold at least one tensor")
        outs = [as_tensor(o, f"outputs[{i}]" if isinstance(outputs, (list, tuple)) else "outputs")
                for i, o in enumerate(outs)]
        for i, out in enumerate(outs):
            if isinstance(out.layer, Input):
                raise ValueError(f"outputs[{i}] is an Input: an output is what a layer returns")
            twin = next((j for j in range(i) if outs[j].layer is out.layer), None)
            if twin is not None:
                raise ValueError(f"outputs[{i}] and outputs[{twin}] come from the same layer: the outputs are named "
                                 "by their layers (the logs' '<name>_loss'), one output per layer")
        # Several outputs: hidden Concatenate rows after every other put them side by side, the
        # model's one output as the kernels see it (its columns are the outputs', in order).
        output, hidden = outs[0], set()
        for out in outs[1:]:
            merge = Concatenate()
            output = merge([output, out])
            hidden.add(id(merge))
        order, seen = [], set()

        def visit(tensor):  # post-order: every call after what it reads
            if id(tensor) in seen:
                return
            for source in tensor.inputs:
                visit(source)
            seen.add(id(tensor))
            order.append(tensor)

        for out in outs:  # the outputs' rows before the hidden ones
            visit(out)
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
            if id(layer) not in hidden and all(layer is not own for own in self.layers):
                self.layers.append(layer)
        index = {id(t): k for k, t in enumerate(tensors)}
        self._output_rows = [index[id(o)] for o in outs]
        self._hidden_rows = len(outs) - 1
        self._output_losses = ()
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

    @property
    def output_dim(self) -> int:
        """The width of the output; of all the outputs side by side with several."""
        return self._rows[-1].output_dim

    @property
    def output_names(self) -> list[str]:
        """Each output's name, its layer's (``layer_names``): what the logs (``<name>_loss``), the
        dicts of ``compile`` and ``fit`` and the ONNX graph's outputs name it by (Keras' names)."""
        names = self.layer_names()
        return [names[self._layer_index(self._rows[r])] for r in self._output_rows]

    def _output_widths(self):
        return [self._rows[r].output_dim for r in self._output_rows]

    def compile(self, loss: Any = "cross_entropy", optimizer: Any = None, metrics: Any = None,
                loss_weights: Any = None) -> Self:
        """As every model's ``compile``; with several outputs, as Keras': ``loss`` one loss for
        every output, a list of one per output, or a dict {output name: loss} (``output_names``);
        ``loss_weights`` likewise, a list or dict of floats >= 0 (1 by default). The loss trained
        is sum_i loss_weights[i] * loss_i, logged as "loss", and each output's own (unweighted) as
        "<name>_loss". ``metrics``: a list of one entry per output (a metric, a list of them, or
        None) or a dict {output name: metrics} (outputs it leaves out get none), each metric on its
        output's columns alone, fitting its output's loss and width, logged as "<name>_<metric>"
        (Keras 3's rules and names)."""
        if len(self._output_rows) == 1:
            if loss_weights is not None:
                raise ValueError("loss_weights weighs the losses of several outputs: this model has one output")
            return super().compile(loss, optimizer, metrics)
        if not isinstance(loss, losses.OutputLosses):
            names, widths = self.output_names, self._output_widths()
            # (OutputLosses checks each weight, by the name loss_weights[i])
            loss = losses.OutputLosses(_per_output(loss, names, "loss"),
                                       _per_output(1.0 if loss_weights is None else loss_weights, names,
                                                   "loss_weights"), names, widths)
        elif loss_weights is not None:
            raise ValueError("loss_weights: the OutputLosses given as loss holds its weights")
        elif list(loss.widths) != self._output_widths():
            raise ValueError(f"loss: OutputLosses of outputs of widths {list(loss.widths)}, this model's are "
                             f"{self._output_widths()}")
        return super().compile(loss, optimizer, metrics)

    def _resolve_metrics(self, metrics, loss):
        """With several outputs: the log names "<output>_<metric>", the metric functions each on its
        output's columns (``user_losses.OutputMetric``), and each output's ``OutputMetrics``."""
        if not getattr(loss, "several_outputs", False):
            return super()._resolve_metrics(metrics, loss)
        names, first = self.output_names, 0
        taken = {"loss"} | {f"{name}_loss" for name in names}
        log, functions, groups = [], [], []
        for name, entry, output_loss, width in zip(names, _output_metrics(metrics, names), loss.losses, loss.widths):
            given, own = split_metrics(entry)
            try:
                given = metrics_.canonical_names(given, output_loss.classification, width)
            except ValueError as exc:
                raise ValueError(f"metrics of output {name!r}: {exc}") from None
            for key in [f"{name}_{m}" for m in given] + [f"{name}_{f}" for f, _ in own]:
                if key in taken:
                    raise ValueError(f"metrics of output {name!r}: {key!r} is logged twice (another output's metric "
                                     "or loss has that name); rename the function")
                taken.add(key)
                log.append(key)
            functions += [(f"{name}_{f}", OutputMetric(fn, first, first + width)) for f, fn in own]
            groups.append(OutputMetrics(name, first, width, tuple(given), tuple(own)))
            first += width
        return log, tuple(functions), tuple(groups)

    def _check_xy(self, x, y, prefix=""):
        """With several outputs, ``y`` is a list of one array per output (or a dict by output
        name), each checked against its output's loss and width (labels one-hot encoded), side by
        side as the kernels read them."""
        if len(self._output_rows) == 1:
            return super()._check_xy(x, y, prefix)
        x = self._check_x(x, prefix + "x")
        names, name = self.output_names, prefix + "y"
        arrays = _per_output(y, names, name, arrays=True)
        parts = [check_targets(a, f"{name}[{i}]" if isinstance(y, (list, tuple)) else f"{name}[{names[i]!r}]",
                               x.shape[0], width, dtype=self.dtype, one_hot_labels=width > 1,
                               unit_interval=lo.unit_interval, writable=False)
                 for i, (a, width, lo) in enumerate(zip(arrays, self._output_widths(), self.loss.losses))]
        return x, np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=self.dtype)

    def _split_outputs(self, out):
        if len(self._output_rows) == 1:
            return out
        ends = np.cumsum(self._output_widths())[:-1]
        return [np.ascontiguousarray(part) for part in np.split(out, ends, axis=1)]

    def predict(self, x: Any, batch_size: int | None = None, verbose: int = 0) -> Any:
        """As every model's; with several outputs, a list of one array per output."""
        return self._split_outputs(super().predict(x, batch_size, verbose))

    def __call__(self, x: Any, training: bool = False) -> Any:
        """As every model's; with several outputs, a list of one array per output."""
        out = super().__call__(x, training)
        return out if isinstance(out, list) else self._split_outputs(out)  # (inference: predict's list already)

    def predict_classes(self, x: Any, batch_size: int | None = None) -> NDArray[np.int64]:
        if len(self._output_rows) > 1:
            raise ValueError("predict_classes takes a model of one output: with several, take each output's "
                             "argmax of predict's arrays")
        return super().predict_classes(x, batch_size)

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
        name = [names[self._layer_index(layer)] for layer in self._rows[:len(self._rows) - self._hidden_rows]]
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
        else:  # a shared layer or several outputs: the calls in table order, [layer index, [rows it reads]]
            n = len(self._rows) - self._hidden_rows
            config["model"]["calls"] = [[self._layer_index(layer), [int(s) for s in sources if s >= 0]]
                                        for layer, sources in zip(self._rows[:n], self._sources[:n])]
            if self._hidden_rows:
                config["model"]["outputs"] = [int(r) for r in self._output_rows]
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
        outputs = [tensors[i] for i in config["model"]["outputs"]] if "outputs" in config["model"] else tensors[-1]
        return cls([layers[i] for i in config["model"]["inputs"]], outputs, seed=config["model"]["seed"],
                   dtype=config["model"]["dtype"], device=device, name=config["model"]["name"])


class OutputMetrics(NamedTuple):
    """The metrics of one output of several: counted on its ``width`` columns from ``first`` of the
    outputs side by side, logged as "<output>_<metric>"; ``names`` the built-in ones (canonical),
    ``functions`` (name, function) the user's, as ``compile`` got them."""
    output: str
    first: int
    width: int
    names: tuple
    functions: tuple


def _output_metrics(metrics, names):
    """``compile``'s metrics of a model of several outputs as a list of one per output, each a list
    of metrics: Keras 3's list of one entry per output (a metric, a list of them, or None) or dict
    {output name: entry} (outputs left out get none)."""
    if metrics is None:
        return [[] for _ in names]
    if isinstance(metrics, dict):
        unknown = [k for k in metrics if k not in names]
        if unknown:
            raise ValueError(f"metrics names {unknown[0]!r}, not an output of this model: its outputs are {names}")
        metrics = [metrics.get(n) for n in names]
    elif isinstance(metrics, (list, tuple)):
        if len(metrics) != len(names):
            raise ValueError(f"metrics of a model of several outputs: a list of one entry per output {names} (a "
                             f"metric, a list of metrics, or None), or a dict by output name; got {len(metrics)} "
                             "entries")
    else:
        raise TypeError(f"metrics of a model of several outputs must be a list of one entry per output {names}, or a "
                        f"dict by output name, got {type(metrics).__name__}")
    return [[] if m is None else list(m) if isinstance(m, (list, tuple)) else [m] for m in metrics]


def _per_output(value, names, what, arrays=False):
    """``value`` as one entry per output (``names``): a list or tuple of one per output, a dict
    {output name: entry} naming each, or (not for ``arrays``) one entry for every output."""
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what} names {unknown[0]!r}, not an output of this model: its outputs are {names}")
        missing = [n for n in names if n not in value]
        if missing:
            raise ValueError(f"{what} gives no entry for output {missing[0]!r}: a dict names every output {names}")
        value = [value[n] for n in names]
    elif isinstance(value, (list, tuple)):
        if len(value) != len(names):
            raise ValueError(f"{what} must hold {len(names)} entries, one per output {names}, got {len(value)}")
        value = list(value)
    elif arrays:
        raise ValueError(f"{what} must be a list of {len(names)} arrays, one per output {names} (or a dict by "
                         f"output name), got {type(value).__name__}")
    else:
        value = [value] * len(names)
    return value
