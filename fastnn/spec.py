"""A network's specification: what a model's layers make of the kernels' tables, built once.

``build_spec`` turns the layers (in table order), a functional model's graph and the optimizers
into one frozen ``NetworkSpec``; the model keeps it and hands it whole to a backend
(``Backend.load(spec, state)``), which then owns every array the training changes (parameters,
optimizer state, step counts, the random stream: ``fastnn.backend``). Nothing here changes after
it is built, and nothing is written into the layer objects: where a layer's parameters start in
the flat buffer is ``spec.offset(layer)``.

The tables are the kernels' (their columns are documented in ``fastnn/kernels/network.py``):

- ``table`` int64 (L, 6) ``layers``; a user layer's b column is its index into ``user``.
- ``alphas`` float64 (L, 2), ``reg`` float64 (R, 4) the weight penalties, ``graph`` int64 (L, 2)
  a functional model's sources (None for a stack), ``tensors`` int64 (T, 2) the trained weight
  tensors that per-tensor clipping clips.
- ``user``: the user layers' compiled functions (``fastnn.user_layers.UserLayers``, None without
  any) and ``user_sizes`` their trainable weights' sizes.
- ``shared`` int64 (S, 4): the later calls of a functional model's shared layers and where their
  weight gradients go (``kernels/table.py``); ``grad_size``, the gradient buffer's length, which
  holds those regions after the parameters'.
- ``running_statistics`` int64 (B, 2): [start, stop) in ``params`` of each BatchNorm layer's
  running mean and variance, which no optimizer trains (averaged over MPI ranks after each epoch).
- ``slices``: the optimizers' ``OptimizerSlices``; ``compile`` may change the optimizers after the
  network is built, and then makes a new spec of the same network (``with_optimizer``).
"""
from dataclasses import dataclass, replace

import numpy as np

from . import user_layers
from .kernels.table import BATCHNORM_LAYER, B_OFF, CALL_SIZE, KIND, N_OUT, alpha_table, weight_tensors
from .kernels.optimizers import H_CLIP_GROUP, N_HYPER


def _table(values, dtype, columns):
    """``values`` as a C-contiguous (rows, ``columns``) array of ``dtype``: itself when it is one."""
    if isinstance(values, np.ndarray) and values.dtype == dtype and values.ndim == 2 and \
            values.shape[1] == columns and values.flags.c_contiguous:
        return values
    return np.ascontiguousarray(np.reshape(np.asarray(values, dtype=dtype), (-1, columns)))


@dataclass(frozen=True, eq=False)
class OptimizerSlices:
    """Each run of consecutive layers that share an optimizer: one slice of the flat buffers.

    ``meta`` int64 (S, 3) [start, stop, kind] (the kernels' ``opt_meta``); ``optimizers`` the
    optimizer object of each slice (one object may own several); ``initial`` each slice's first
    value of ``state1`` (Adagrad's initial accumulator; 0 for the others)."""
    meta: np.ndarray
    optimizers: tuple = ()
    initial: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "meta", _table(self.meta, np.int64, 3))

    def hyper(self):
        """float64 (S, >= N_HYPER): each slice's hyper-parameters, read from its optimizer now (a
        callback or a schedule may have changed them since the last call)."""
        rows = [opt.hyper_parameters() for opt in self.optimizers]
        hyper = np.zeros((len(rows), max([N_HYPER] + [r.size for r in rows])))
        for i, row in enumerate(rows):  # schedules with more pieces make longer rows: pad the others
            hyper[i, :row.size] = row
        # The slices of one optimizer: its global_clipnorm takes the norm over all of them.
        hyper[:, H_CLIP_GROUP] = [1 + next(j for j, o in enumerate(self.optimizers) if o is opt)
                                  for opt in self.optimizers]
        return hyper

    def distinct(self):
        """The distinct optimizer objects, in the order of their first slice."""
        seen = []
        for opt in self.optimizers:
            if all(opt is not s for s in seen):
                seen.append(opt)
        return seen


@dataclass(frozen=True, eq=False)
class NetworkSpec:
    """A network as its backends run it (see the module's docstring). ``layers`` are the layer
    objects of the table's rows and ``offsets`` where each one's parameters start; ``size`` is
    the length of the flat buffers."""
    table: np.ndarray
    alphas: np.ndarray
    reg: np.ndarray
    slices: OptimizerSlices
    size: int
    graph: np.ndarray = None
    user: user_layers.UserLayers = None
    user_sizes: tuple = ()
    layers: tuple = ()
    offsets: tuple = ()
    tensors: np.ndarray = None
    running_statistics: np.ndarray = None
    frozen: tuple = ()  # the layers' ``not trainable`` when the spec was built
    shared: np.ndarray = None

    def __post_init__(self):
        # Tables given by hand (a benchmark's) are completed as build_spec completes them; arrays
        # already as the kernels read them are kept (``with_optimizer`` keeps the same table).
        set_ = object.__setattr__  # frozen: the fields are set once, here
        table = _table(self.table, np.int64, 6)
        set_(self, "table", table)
        set_(self, "alphas", _table(alpha_table(self.alphas), np.float64, 2))
        set_(self, "reg", _table(self.reg, np.float64, 4))
        if self.graph is not None:
            set_(self, "graph", _table(self.graph, np.int64, 2))
        if not isinstance(self.slices, OptimizerSlices):
            set_(self, "slices", OptimizerSlices(self.slices))
        set_(self, "shared", _table(np.zeros((0, 4)) if self.shared is None else self.shared, np.int64, 4))
        # A shared layer's calls are rows of the same weights: each tensor (clipped once) and each
        # BatchNorm's statistics (averaged once) appear once.
        if self.tensors is None:  # (clipping reads those inside an optimizer's slice: no frozen layer's)
            set_(self, "tensors", _distinct_rows(weight_tensors(table, self.user_sizes)))
        if self.running_statistics is None:
            batchnorm = table[table[:, KIND] == BATCHNORM_LAYER]
            b, n = batchnorm[:, B_OFF], batchnorm[:, N_OUT]
            set_(self, "running_statistics", _distinct_rows(np.stack([b + n, b + 3 * n], axis=1).reshape(-1, 2)))

    @property
    def grad_size(self):
        """The gradient buffer's length: the parameters', and a region per later call of a shared layer."""
        return self.size + int(self.shared[:, CALL_SIZE].sum())

    def offset(self, layer):
        """Where ``layer``'s parameters start in the flat buffers (a ValueError if it is not one of
        this network's layers)."""
        for own, offset in zip(self.layers, self.offsets):
            if own is layer:
                return offset
        raise ValueError(f"this {type(layer).__name__} is not a layer of this network")

    def with_optimizer(self, default):
        """The same network with fresh optimizer slices, ``default`` serving the layers that have
        no optimizer of their own."""
        return replace(self, slices=optimizer_slices(self.layers, self.offsets, default))


def build_spec(layers, dtype, default_optimizer, graph=None, table_row=None):
    """The ``NetworkSpec`` of ``layers`` (the compute layers, in table order) for parameters of
    ``dtype``. ``table_row(layer, offset)`` makes a layer's row (default ``layer.table_row``: a
    functional model makes its inputs' rows); ``graph`` a functional model's sources or None.
    Compiles the user layers' functions (``fastnn.user_layers``)."""
    table_row = table_row or (lambda layer, offset: layer.table_row(offset))
    offsets, rows, reg, pairs, user_sizes = [], [], [], [], []
    offset = 0
    first, calls = {}, []  # id of a layer -> (its offset, its row); [row, offset, size] of later calls
    for k, layer in enumerate(layers):
        if id(layer) in first:  # a shared layer called again: a row of the same weights
            if graph is None:
                raise ValueError(f"layers[{k}] is a layer listed before it: only a functional Model's graph calls a "
                                 "layer several times")
            at, row = first[id(layer)]
            offsets.append(at)
            rows.append(row)
            if layer.count_params():
                calls.append([k, at, layer.count_params()])
            continue
        offsets.append(offset)
        row = np.asarray(table_row(layer, offset), dtype=np.int64)
        if layer.is_user_layer():
            # The b column of a user layer's row: its index into the compiled functions.
            row[B_OFF] = len(pairs)
            pairs.append(layer.user_kernels(dtype, offset))
            user_sizes.append(layer.trainable_weight_sizes())
        rows.append(row)
        first[id(layer)] = (offset, row)
        reg.extend(layer.regularized_slices(offset))
        offset += layer.count_params()
    shared, at = [], offset
    for k, start, n in calls:  # each later call's gradient region, after the parameters
        shared.append([k, start, at, n])
        at += n
    layers, offsets = tuple(layers), tuple(offsets)
    return NetworkSpec(
        table=np.array(rows, dtype=np.int64).reshape(-1, 6),
        alphas=np.array([layer.table_floats() for layer in layers], dtype=np.float64).reshape(-1, 2),
        reg=np.array(reg, dtype=np.float64).reshape(-1, 4),
        slices=optimizer_slices(layers, offsets, default_optimizer),
        size=offset, graph=graph, user=user_layers.bundle(pairs), user_sizes=tuple(user_sizes), layers=layers,
        offsets=offsets, frozen=tuple(not layer.trainable for layer in layers), shared=np.array(shared, np.int64))


def _distinct_rows(table):
    """``table`` without the rows that repeat an earlier one, in order."""
    keep = np.sort(np.unique(table, axis=0, return_index=True)[1])
    return np.ascontiguousarray(table[keep]) if keep.size < table.shape[0] else table


def optimizer_slices(layers, offsets, default):
    """Each run of consecutive layers that share an optimizer (a layer's own, else ``default``)
    as one slice of their trainable parameters, which come first in each layer's part of the
    buffer (BatchNorm's running statistics follow, outside every slice)."""
    slices, seen = [], set()  # [optimizer, lo, hi]; the layers met (a shared layer's later calls add nothing)
    for layer, offset in zip(layers, offsets):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        n = layer.count_trainable_params() if layer.trainable else 0
        if not n:
            continue
        opt = getattr(layer, "optimizer", None) or default
        if slices and slices[-1][0] is opt and slices[-1][2] == offset:
            slices[-1][2] += n
        else:
            slices.append([opt, offset, offset + n])
    return OptimizerSlices(np.array([[lo, hi, opt.kind] for opt, lo, hi in slices], dtype=np.int64).reshape(-1, 3),
                           tuple(opt for opt, _, _ in slices), tuple(opt.initial_state for opt, _, _ in slices))
