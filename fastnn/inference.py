"""Inference: ``predict``, ``model(x)``, ``predict_classes`` and ``evaluate`` (with the
validation of ``fit``), mixed into every model (``fastnn.network.Network``). The forward pass
only, in inference mode (Dropout off, BatchNorm's running statistics) but for
``model(x, training=True)``; no weight changes.

Under MPI, ``evaluate`` splits the rows over the ranks and sums the results
(``fastnn.distributed``); ``predict`` is not split.
"""
from __future__ import annotations

import time
from collections import namedtuple
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import distributed
from .config import FEW_ROWS, INFERENCE_BATCH_SIZE
from .kernels.table import optional_kinds
from .layers.base import Layer
from .predictor import DEFAULT_ROWS, Predictor, make_predictor, predictor_predict
from .sparse_input import dense_chunks, is_sparse, skips_zeros
from .trainer import _PROGRESS_UPDATES_PER_EPOCH, _progress_bar
from .sample_weights import check_sample_weight
from .validation import check_int


# model.predict's few-row predictor and what it was made from.
_FewRows = namedtuple("_FewRows", ["template", "spares", "net", "spec", "n_in", "n_out"])


class Inference:
    """predict, model(x), predict_classes and evaluate, on a ``Network``'s layers and backend."""

    def predict(self, x: Any, batch_size: int | None = None, verbose: int = 0) -> NDArray[Any]:
        """The last layer's output for every row of ``x`` (e.g. class probabilities after Softmax).
        ``verbose``: 0 silent (the default), 1 a progress bar then a line, 2 that line only.

        Safe to call from several threads on one model; on the CPU their passes run at the same
        time (each on a workspace of its own), and wait while the model trains."""
        if batch_size is None and not verbose:
            fast = self._few_rows_predictor(x)
            if fast is not None:
                lock = self._lock
                inside = lock.acquire_shared()
                try:
                    if fast.net.params is self._backend.params:  # not rebuilt meanwhile
                        # One predictor per thread at a time: list.pop and append are atomic.
                        p = fast.spares.pop() if fast.spares else fast.template.copy()
                        try:
                            return predictor_predict(p, x, np.empty((x.shape[0], fast.n_out), x.dtype), True)
                        finally:
                            fast.spares.append(p)
                finally:
                    lock.release_shared(inside)
        self._ensure_built()
        self._check_usable("predict")
        # Where the backend scans for NaN in its compiled pass, a batch at a time while the batch is
        # in cache, the check here leaves that scan out (the rows are read once, not twice).
        scan = getattr(self._backend, "checks_finite_input", False)
        x = self._check_x(x, "x", finite=not scan)
        batch_size = INFERENCE_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        verbose = check_int(verbose, "verbose", minimum=0, maximum=2)
        batch_size = min(batch_size, x.shape[0])
        if not verbose:
            with self._inference_lock():
                return self._predict_rows(x, batch_size)
        n_batches = -(-x.shape[0] // batch_size)
        bar = _progress_bar(verbose if distributed.rank() == 0 else 0, n_batches)
        # With a bar, the rows go in a twentieth at a time (whole batches), for it to move.
        step = n_batches if bar is None else max(1, n_batches // _PROGRESS_UPDATES_PER_EPOCH)
        start, parts = time.perf_counter(), []
        with self._inference_lock():
            for first in range(0, n_batches, step):
                part = x[first * batch_size: (first + step) * batch_size]
                parts.append(self._predict_rows(part, min(batch_size, part.shape[0])))
                if bar is not None:
                    bar.update(min(step, n_batches - first))
        _report(bar, n_batches, time.perf_counter() - start, {})
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _predict_rows(self, x, batch_size):
        """The backend's ``predict`` of every row of ``x``. A sparse ``x`` (checked: a canonical CSR
        matrix) as training reads it: over its nonzeros in the first layer where that is a Dense
        layer of a stack and ``x`` is sparse enough (``sparse_input``'s rule), else densified a
        chunk of rows at a time (``sparse_input.dense_chunks``), never whole."""
        if not is_sparse(x):
            if getattr(self._backend, "checks_finite_input", False):
                return self._backend.predict(x, batch_size, check=True)
            return self._backend.predict(x, batch_size)
        if self._sparse_first(x):
            return self._backend.predict_sparse(x, batch_size)
        out = np.empty((x.shape[0], self.output_dim), self.dtype)
        for lo, hi, part in dense_chunks(x, batch_size):
            out[lo:hi] = self._backend.predict(part, min(batch_size, hi - lo))
        return out

    def _sparse_first(self, x):
        """Whether the backend runs the first layer over ``x``'s nonzeros (``predict_sparse``): a
        sparse ``x``, a stack whose first layer is Dense, and ``sparse_input``'s density rule."""
        return is_sparse(x) and hasattr(self._backend, "predict_sparse") \
            and skips_zeros(x, self._backend.sparse_first_layer())

    def __call__(self, x: Any, training: bool = False) -> NDArray[Any]:
        """The network's output for ``x``, as Keras' ``model(x, training=...)``.

        ``training=False`` is ``predict``. ``training=True`` runs the training-mode forward pass
        over all rows at once: Dropout draws masks (new ones at each call: the call advances the
        model's step counter as a training step does), and BatchNorm normalizes with the batch and
        updates its running statistics, as Keras and PyTorch do. No weight is trained.
        """
        if not training:
            return self.predict(x)
        self._ensure_built()
        self._check_usable("run the model")
        x = self._check_x(x, "x")
        if is_sparse(x):  # one training-mode batch of all the rows: densified, as a batch of fit is
            x = x.toarray()
        with self._lock:  # the backend advances Dropout's step, as a training step does
            return self._backend.predict(x, max(1, x.shape[0]), training=True)

    def _few_rows_predictor(self, x):
        """For an input of a few rows that needs no conversion, on a CPU model whose first layer
        checks nothing but shape and dtype: a ``Predictor`` on the backend's own buffers (kept
        until the backend changes), which runs the forward pass with the fewest Python steps
        (online inference, one request at a time). None where ``predict``'s full path applies.

        The checks stay, in fewer steps: the width, the dtype and C order here (each as
        ``check_features`` would pass it unchanged), NaN and infinity in the compiled pass."""
        backend = self._backend
        if (type(x) is not np.ndarray or x.ndim != 2 or not 0 < x.shape[0] <= FEW_ROWS or backend is None
                or backend.name != "cpu" or x.dtype != self.dtype or not x.flags.c_contiguous
                or not x.flags.writeable or self._diverged is not None):
            return None
        cached = self.__dict__.get("_few_rows")
        if cached is None or cached.net.params is not backend.params or cached.spec is not self._spec:
            spec = self._spec
            if spec.user is not None or type(self._compute_layers()[0]).check_input is not Layer.check_input:
                self._few_rows = _FewRows(None, None, backend.params, spec, -1, -1)  # not for this model
                return None
            predictor = make_predictor(backend.params, spec, optional_kinds(spec.table), FEW_ROWS, copy=False)
            cached = self._few_rows = _FewRows(predictor, [predictor], predictor._fields[0], spec, predictor.n_in,
                                               predictor.n_out)
        return cached if x.shape[1] == cached.n_in else None

    def _inference_lock(self):
        """The model's lock as an inference-mode predict takes it: shared where the backend runs
        concurrent passes (the CPU's), else exclusive."""
        return self._lock.shared() if self._backend.concurrent_inference else self._lock

    def predictor(self, rows: int | None = None) -> Predictor:
        """A snapshot of the trained network that compiled code can call: a ``fastnn.predictor.Predictor``
        with a copy of the weights, usable from Python (``p.predict(x)``) and passed into the user's
        own ``@numba.njit`` functions (``p.predict(x, out)`` there). It keeps today's weights: train
        further and call ``predictor()`` again for the new ones. ``rows``: rows per forward pass
        (its workspace's size; longer inputs go in chunks), 64 by default."""
        rows = DEFAULT_ROWS if rows is None else check_int(rows, "rows", minimum=1)
        self._ensure_built()
        if any(type(layer).check_input is not Layer.check_input for layer in self._compute_layers()):
            # Compiled callers pass ids unchecked: an id past the table would read outside it.
            raise TypeError("predictor() takes models whose input is plain features; this one reads Embedding "
                            "ids, which model.predict checks")
        self._check_usable("make a predictor")
        spec = self._spec
        with self._lock:  # not while fit writes the weights
            params = self._backend.host("params")
        return make_predictor(params, spec, optional_kinds(spec.table, spec.user), rows)

    def predict_classes(self, x: Any, batch_size: int | None = None) -> NDArray[np.int64]:
        """The most probable class of each row (threshold 0.5 for a single output)."""
        p = self.predict(x, batch_size)
        return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)

    def evaluate(self, x: Any, y: Any, batch_size: int | None = None, verbose: int = 0, return_dict: bool = False,
                 sample_weight: Any = None) -> Any:
        """The loss on (x, y) (and accuracy: a list [loss, accuracy] when compiled with it).
        ``sample_weight``: one non-negative weight per row, which weights the loss as ``fit``'s
        does (each batch's sum_i w_i l_i / rows); the metrics stay unweighted.
        ``verbose``: 0 silent (the default), 1 or 2 a line of the figures, as Keras' last line.

        Under MPI every rank passes the same rows and batch_size and gets the same figures: each
        rank evaluates its share of the rows."""
        x, y, batch_size, verbose, w = distributed.agree(self._evaluate_inputs, x, y, batch_size, verbose,
                                                         sample_weight)
        # batch_size decides each rank's share of the rows, the metrics what is gathered.
        distributed.begin_call(self, {"x": x, "y": y}, take_state=False, batch_size=batch_size)
        start = time.perf_counter()
        logs = self._evaluate_arrays(x, y, batch_size, w)
        if verbose:
            _report(None, -(-x.shape[0] // min(batch_size, x.shape[0])), time.perf_counter() - start, logs)
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _evaluate_inputs(self, x, y, batch_size, verbose, sample_weight=None):
        self._require_compiled("evaluate")
        x, y = self._check_xy(x, y)
        self._check_usable("evaluate")
        batch_size = INFERENCE_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        verbose = check_int(verbose, "verbose", minimum=0, maximum=2)
        w = None if sample_weight is None else self._weights_for_loss(check_sample_weight(sample_weight, x.shape[0],
                                                                                          self.dtype))
        return x, y, batch_size, verbose, w

    def _evaluate_arrays(self, x, y, batch_size=INFERENCE_BATCH_SIZE, weights=None):
        # The callers checked that the model is usable: evaluate's inputs, fit before validating.
        with self._lock:
            return self._evaluate_locked(x, y, batch_size, weights)

    def _evaluate_locked(self, x, y, batch_size, weights=None):
        # Under MPI each rank takes whole batches of the ones that one process would evaluate, so
        # that the loss (a mean over batches, weighted by their rows, as Keras') is the same.
        batch_size = min(batch_size, x.shape[0])
        first, stop = distributed.share(-(-x.shape[0] // batch_size))  # all batches in one process
        lo, hi = first * batch_size, min(stop * batch_size, x.shape[0])
        x_part, y_part = x[lo:hi], y[lo:hi]
        total, correct = 0.0, 0
        # A sparse x as predict reads it (``_sparse_first``), else densified a chunk of whole batches at
        # a time: the same batches as a dense x's.
        sparse_first = hi > lo and self._sparse_first(x_part)
        pred = None
        if sparse_first:  # the loss of predict's own predictions, which the exact metrics below reuse
            pred = self._backend.predict_sparse(x_part, batch_size)
            total, correct = self._backend.evaluate_predictions(pred, y_part, self.loss.code, batch_size,
                                                                *(() if weights is None else (weights[lo:hi],)))
        for a, b, part in (() if hi <= lo or sparse_first else dense_chunks(x_part, batch_size) if is_sparse(x_part)
                           else [(0, hi - lo, x_part)]):
            chunk = self._backend.evaluate(part, y_part[a:b], self.loss.code, batch_size,
                                           *(() if weights is None else (weights[lo:hi][a:b],)))
            total, correct = total + chunk[0], correct + chunk[1]
        total, correct = distributed.sum_over_ranks([total, correct])
        # Keras' evaluate reports the loss with the weight penalty, as fit logs it.
        penalty = self._penalty()
        values = {"loss": float(total / x.shape[0] + penalty), "accuracy": float(correct / x.shape[0])}
        if self._needs_predictions():  # exact over all rows, from the predictions
            if pred is None:
                pred = self._predict_rows(x_part, batch_size) if hi > lo else np.empty((0, self.output_dim), self.dtype)
            values.update(self._exact_metric_values(y, distributed.gather_rows(pred), batch_size, weights))
        return {k: values[k] for k in self.log_names()}


def _report(bar, steps, seconds, logs):
    """What ``predict`` and ``evaluate`` print with ``verbose`` (on rank 0): a line of the
    batches, the time and the figures, as Keras' last line of a progress bar."""
    if distributed.rank() != 0:
        return
    line = f"{steps}/{steps} - {seconds:.2f}s" + "".join(f" - {k}: {v:.4f}" for k, v in logs.items())
    if bar is not None:
        bar.close()
    print(line, flush=True)
