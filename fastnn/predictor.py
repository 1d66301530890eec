"""A trained network as an object that compiled code can call: ``model.predictor()``.

A ``Predictor`` holds a copy of the model's weights and tables and a workspace of its own, and
runs the same forward pass as ``model.predict`` (``kernels.inference.few_rows_forward``:
``network_forward``'s, inference mode) with no Python in between. It is a Numba structref, so
it passes into the user's own ``@numba.njit`` functions as an argument and its methods compile
there::

    p = model.predictor()

    @numba.njit
    def integrate(p, state, steps):
        out = np.empty((1, p.n_out), state.dtype)
        for _ in range(steps):
            p.predict(state, out)          # no allocation, no Python
            state[0, :] += 0.01 * out[0, :]
        return state

The same methods work from Python (``p.predict(x)``, ``p(x)``), where a call costs the few
microseconds of Numba's dispatch instead of ``model.predict``'s checks and locks.

Why a copy, not the model's own buffers: training, ``load_weights``, a rebuild or ``model.to``
may write into or replace the model's arrays while compiled code holds them, and a compiled
caller cannot be told. So a predictor is a snapshot: it keeps the weights of the moment it was
made, whatever the model does afterwards; call ``model.predictor()`` again for newer ones.

Not for several threads at once: the workspace is the predictor's own. ``p.copy()`` gives
another one on the same weights (one per thread, or per ``prange`` worker).
"""
from __future__ import annotations

from typing import Any

from numpy.typing import ArrayLike, NDArray

import numpy as np
from numba.core import types
from numba.core.extending import overload_method
from numba.experimental import structref

from .config import kernel
from .kernels import network
from .kernels.inference import few_rows_forward
from .kernels.table import N_IN, N_OUT
from .user_layers import quietly

# Rows per forward pass: a predictor made for one row at a time should not hold the workspace of
# predict's 1,024 (11 MB for a 784-1024-1024-10 network); longer inputs go in chunks of this.
DEFAULT_ROWS = 64


@structref.register
class PredictorType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(t)) for name, t in fields)


FIELDS = ("net", "work", "graph", "dropout", "batchnorm", "embedding", "masking", "user", "rows", "n_in", "n_out")


class Predictor(structref.StructRefProxy):
    """A trained network's forward pass for Python and for ``@numba.njit`` code (module docstring).

    ``predict(x, out)``: ``x`` (n, n_in) in the model's dtype, C-contiguous; writes the outputs
    into ``out`` (n, n_out) and returns it. ``predict(x)`` allocates ``out``. Raises ValueError
    (from compiled code too) when a shape does not match. Fields readable in compiled code:
    ``n_in``, ``n_out``, ``rows`` (rows per forward pass)."""

    def __new__(cls, net, work, graph, kinds, rows, n_in, n_out):
        self = structref.StructRefProxy.__new__(cls, net, work, graph, *kinds, rows, n_in, n_out)
        # Kept on the Python side too: reading a field through compiled code costs a dispatch.
        self._fields = (net, work, graph, tuple(kinds), int(rows), int(n_in), int(n_out))
        return self

    @property
    def n_in(self) -> int:
        return self._fields[5]

    @property
    def n_out(self) -> int:
        return self._fields[6]

    @property
    def rows(self) -> int:
        return self._fields[4]

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._fields[0].params.dtype

    def predict(self, x: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
        """The outputs for the rows of ``x`` (one row may be 1-D), into ``out`` if given."""
        net = self._fields[0]
        if type(x) is not np.ndarray or x.dtype != net.params.dtype or x.ndim != 2 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=net.params.dtype)
            if x.ndim == 1:
                x = x.reshape(1, -1)
        if out is None:
            out = np.empty((x.shape[0], self._fields[6]), net.params.dtype)
        elif type(out) is not np.ndarray or out.dtype != net.params.dtype or not out.flags.c_contiguous:
            raise TypeError(f"out must be a C-contiguous array of {net.params.dtype}")
        if self._fields[3][-1] is None:
            return predictor_predict(self, x, out)
        return quietly(predictor_predict, self, x, out)

    __call__ = predict

    def copy(self) -> Predictor:
        """Another predictor on the same weights (shared, read-only) with a workspace of its own."""
        net, _, graph, kinds, rows, n_in, n_out = self._fields
        work, graph = inference_workspace(net.layers, None if graph is None else graph.sources, rows,
                                          net.params.dtype)
        return Predictor(net, work, graph, kinds, rows, n_in, n_out)

    def __repr__(self):
        return f"<fastnn Predictor {self.n_in} -> {self.n_out}, {self.dtype}, {self.rows} rows a pass>"


structref.define_proxy(Predictor, PredictorType, list(FIELDS))


def inference_workspace(layers, sources, rows, dtype, input_room=True, threads=0):
    """(Workspace, Graph or None) for inference passes of up to ``rows`` rows of the network
    ``layers`` (``sources``: a functional model's graph table, None for a stack): a predictor's, or
    one of the CPU backend's spare ones for concurrent predicts. ``input_room=False``: none for the
    gathered batch (``inference.predict_sparse_batches`` reads its input as CSR). ``threads``: a
    row of ``acts`` and ``stats`` per thread (``inference.predict_batches_parallel``)."""
    if not input_room:
        layers = np.array(layers, dtype=np.int64)
        layers[0, N_IN] = 0
    act_off, n_acts, _, _, n_stats = network.workspace_layout(layers, rows)
    # Inference reads no gradient buffers and no targets: empty, not sized for training.
    shape = (threads,) if threads else ()
    work = network.Workspace(np.empty(shape + (n_acts,), dtype), act_off, np.empty((2, 0), dtype),
                             np.empty(0, dtype), np.empty(shape + (n_stats,)))
    return work, None if sources is None else network.Graph(sources, np.empty(n_acts, dtype))


def make_predictor(params, spec, kinds, rows=DEFAULT_ROWS, copy=True):
    """A ``Predictor`` on a copy of ``params`` (host array) for the network ``spec``; with
    ``copy=False``, on ``params`` and the spec's tables themselves (``model.predict``'s few-row
    path, which holds the model's lock and checks that the buffers are still the backend's)."""
    table = spec.table.copy() if copy else spec.table
    params = np.array(params, copy=True) if copy else params
    net = network.Network(params, table, spec.alphas.copy() if copy else spec.alphas, np.zeros(2, np.int64))
    work, graph = inference_workspace(table, None if spec.graph is None else spec.graph.copy() if copy
                                      else spec.graph, rows, params.dtype)
    return Predictor(net, work, graph, kinds, int(rows), int(table[0, N_IN]), int(table[-1, N_OUT]))


@kernel
def predictor_predict(p, x, out, finite=False):
    """``out`` = the network on the rows of ``x``, ``p.rows`` at a time (``Predictor.predict``).
    ``finite``: first check that x holds no NaN or infinity, as ``model.predict`` does (a scan
    here costs a fraction of a microsecond a row; NumPy's, from Python, a microsecond more)."""
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != p.n_in:
        raise ValueError("x must have shape (rows, n_in) of the predictor's network")
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] != p.n_out:
        raise ValueError("out must have shape (rows of x, n_out) of the predictor's network")
    if finite:
        for i in range(n):
            for j in range(x.shape[1]):
                if not np.isfinite(x[i, j]):
                    raise ValueError("x contains NaN or infinite values")
    for lo in range(0, n, p.rows):
        hi = min(lo + p.rows, n)
        pred = few_rows_forward(p.net, x[lo:hi], p.work, p.dropout, p.batchnorm, p.embedding, p.masking, p.user,
                                p.graph)
        for i in range(hi - lo):
            for j in range(p.n_out):
                out[lo + i, j] = pred[i, j]
    return out


@overload_method(PredictorType, "predict")
def _predict_method(p, x, out=None):
    if out is None or isinstance(out, (types.NoneType, types.Omitted)):
        def allocating(p, x, out=None):
            return predictor_predict(p, x, np.empty((x.shape[0], p.n_out), x.dtype))
        return allocating

    def into(p, x, out=None):
        return predictor_predict(p, x, out)
    return into
