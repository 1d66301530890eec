"""How ``fit``'s epochs reach the compiled step, as calls of ``backend.train`` (``Call``):
``ArrayFeed`` for arrays (in memory or memory-mapped: the step gathers their rows itself),
``StreamFeed`` for a ``Sequence`` or a generator of batches.

A ``StreamFeed`` reads and checks the batches on a background thread, a chunk of them ahead of
the one training (``AHEAD``): each batch is checked as ``fit`` checks arrays, then copied into a
chunk buffer (``AHEAD + 1`` of them, reused), so that the step trains a chunk of batches per
call with ``order = arange``, as on arrays; the kernels release the GIL, so the user's loader
runs while they train. An exception of the loader (or of a check) is raised again in ``fit``'s
thread, with its traceback; the thread is a daemon and stops when ``fit`` ends, Ctrl-C included.
"""
import queue
import threading
import warnings
from collections import namedtuple

import numpy as np

from .. import distributed
from ..kernels.checks import all_finite
from ..layers import Layer
from ..sparse_input import is_sparse
from . import is_sequence

# Chunks the loader thread prepares ahead of the one training.
AHEAD = 2
# A chunk buffer's bytes at most (its batches' x and y rows): a call into the step still trains
# 0.1 to 1 MB of rows, enough that the call costs nothing measurable.
_CHUNK_BYTES = 16 << 20
# How often a thread blocked on a queue looks whether fit has stopped (and lets Ctrl-C in).
_POLL_S = 0.1

# One call into backend.train: batches first .. stop - 1 of (data, order), their loss and correct
# counts written to batch_loss[first:stop]; those are batches offset + first .. of the epoch.
Call = namedtuple("Call", "data order batch_size first stop batch_loss batch_correct offset")


def _per_batch_arrays(size):
    return np.zeros(size), np.zeros(size, dtype=np.int64), np.zeros(size)


class ArrayFeed:
    """Arrays: ``n_batches`` batches of ``batch_size`` rows a pass, ``order`` reshuffled each pass.
    With ``steps_per_epoch``, an epoch is that many batches and the next epoch goes on where it
    stopped; the pass's end ends an epoch early (as Keras 3), and the next starts a new pass."""

    def __init__(self, data, n, batch_size, steps_per_epoch, shuffle, rng):
        self.data, self.batch_size = data, batch_size
        self.n_batches = -(-n // batch_size)
        self.batch_loss, self.batch_correct, self.rows = _per_batch_arrays(self.n_batches)
        self.rows[:] = batch_size
        self.rows[-1] = n - batch_size * (self.n_batches - 1)
        self.order = np.arange(n, dtype=np.int64)
        self._sorted = self.order.copy()
        self._limit, self._shuffle, self._rng = steps_per_epoch, shuffle, rng
        self.steps = self.n_batches if steps_per_epoch is None else steps_per_epoch
        self.first = self._pos = 0
        self._warned = False

    def start(self, chunk, backend):
        self.chunk = chunk
        self.sample = Call(self.data, self.order, self.batch_size, 0, 1, self.batch_loss, self.batch_correct, 0)

    def epoch(self):
        if self._pos == 0 and self._shuffle:
            # Each pass's order is a fresh permutation drawn from the generator, not a shuffle of
            # the last one: it then depends on the generator's state alone, which save keeps, so
            # that training resumed in a new fit call draws the same orders.
            self.order[:] = self._sorted
            self._rng.shuffle(self.order)
        lo = self.first = self._pos
        hi = self.n_batches if self._limit is None else min(lo + self._limit, self.n_batches)
        for first in range(lo, hi, self.chunk):
            yield Call(self.data, self.order, self.batch_size, first, min(first + self.chunk, hi), self.batch_loss,
                       self.batch_correct, 0)
        self._pos = 0 if hi == self.n_batches else hi
        if self._limit is not None and hi - lo < self._limit and not self._warned:
            self._warned = True
            warnings.warn(f"steps_per_epoch={self._limit}: the data ran out after {hi - lo} batches of an epoch "
                          f"({self.n_batches} a pass); that epoch ended there, the next starts a new pass",
                          UserWarning, stacklevel=4)

    def end_epoch(self):
        pass

    def close(self):
        pass


class StreamFeed:
    """A Sequence (``len(x)`` batches a pass, each epoch a new random order of them with ``shuffle``)
    or an iterator of batches (until it ends, or ``steps_per_epoch`` of them). ``check(x, y,
    prefix)`` returns a batch as the kernels read it, or raises naming ``prefix + 'x'``."""

    def __init__(self, source, check, steps_per_epoch, shuffle, rng, plain=None):
        self._plain = plain
        self._seq = source if is_sequence(source) else None
        self._it = None if self._seq is not None else iter(source)
        self._check, self._limit, self._shuffle, self._rng = check, steps_per_epoch, shuffle, rng
        if self._seq is not None:
            self._len = len(self._seq)
            if self._len < 1:
                raise ValueError(f"x is a Sequence of {self._len} batches: expected at least one")
            self.steps = self._len if steps_per_epoch is None else steps_per_epoch
        else:
            self.steps = steps_per_epoch  # None: until the iterator ends
        self._seen = 0  # batches read from an iterator (its batches' names)
        self._pos, self._perm = 0, None
        # The first batch, checked now: a bad one fails fit before anything compiles or trains, and it
        # gives the batch size the chunks are sized by.
        try:
            batch = self._read(0)[:2]
        except StopIteration:
            raise ValueError("x is an iterator that yields no batches") from None
        self._pending = (0, batch)
        self.batch_size = batch[0].shape[0]
        self.first = 0
        self.exhausted = False
        self._thread = None

    # ---- the loader thread's side -------------------------------------------------------------

    def _read(self, i, quick=False):
        """(x, y, name, deferred) of batch ``i`` (of the Sequence, or the iterator's next), checked;
        with ``quick``, where x and y are plain arrays as the kernels read them (or integer labels), all
        but their values' finiteness, which the caller checks over the chunk (``deferred``)."""
        if self._seq is not None:
            batch = self._seq[int(i)]
        else:
            batch = next(self._it)
            i = self._seen
            self._seen += 1
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            size = f" of {len(batch)}" if isinstance(batch, (tuple, list)) else ""
            raise ValueError(f"batch {i}: expected a tuple (x, y) or (x, y, sample_weight), got "
                             f"{type(batch).__name__}{size}")
        if len(batch) == 3 and batch[2] is not None:
            raise NotImplementedError(f"batch {i} has sample weights (a third element): fit does not weight samples "
                                      "yet; return (x, y)")
        if is_sparse(batch[0]):
            raise TypeError(f"batch {i}: x is a scipy.sparse matrix; batches from a Sequence or generator must be "
                            "dense arrays (x.toarray())")
        if quick and self._plain is not None and self._is_plain(batch[0], batch[1]):
            return batch[0], batch[1], i, True
        return (*self._check(batch[0], batch[1], f"batch {i}: "), i, False)

    def _is_plain(self, x, y):
        dtype, n_in, n_out = self._plain
        if not (type(x) is np.ndarray and x.dtype == dtype and x.ndim == 2 and x.shape[1] == n_in
                and x.shape[0] > 0 and x.flags.c_contiguous and type(y) is np.ndarray and y.shape[0] == x.shape[0]):
            return False
        if y.ndim == 1:  # class labels, written one-hot into the chunk
            return n_out > 1 and y.dtype.kind in "iu" and int(y.min()) >= 0 and int(y.max()) < n_out
        return y.ndim == 2 and y.shape[1] == n_out and y.dtype == dtype and y.flags.c_contiguous

    def start(self, chunk, backend):
        """Buffers for ``chunk`` batches a call (fewer where they would exceed _CHUNK_BYTES), and
        the loader thread."""
        x, y = self._pending[1]
        row_bytes = (x.shape[1] + y.shape[1]) * x.itemsize
        self.chunk = max(1, min(chunk, _CHUNK_BYTES // (self.batch_size * row_bytes)))
        rows = self.chunk * self.batch_size
        self._buffers = [(np.empty((rows, x.shape[1]), x.dtype), np.empty((rows, y.shape[1]), y.dtype))
                         for _ in range(AHEAD + 1)]
        self._order = np.arange(rows, dtype=np.int64)
        self.batch_loss, self.batch_correct, self.rows = _per_batch_arrays(max(self.steps or 0, self.chunk))
        # Whether the first layer skips zeros, decided once, on the first batch (the kernels read
        # a dense x either way; ``CPUBackend.dataset``).
        source = backend.dataset(x, y)[2]
        self._source = source
        bx, by = self._buffers[0]
        self.sample = Call((bx[:self.batch_size], by[:self.batch_size], source), self._order[:self.batch_size],
                           self.batch_size, 0, 1, self.batch_loss, self.batch_correct, 0)
        self._free, self._ready, self._tasks = queue.Queue(), queue.Queue(), queue.Queue()
        for i in range(len(self._buffers)):
            self._free.put(i)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="fastnn-fit-loader", daemon=True)
        self._thread.start()

    def _produce(self):
        try:
            while not self._stop.is_set():
                task = self._tasks.get()
                if task is None:
                    return
                exhausted = self._fill(task[0])
                # The first batch, read when fit began, serves the first epoch only: a Sequence's
                # on_epoch_end may change what its batches hold.
                self._pending = None
                self._ready.put(("end", exhausted))
        except BaseException as exc:  # raised again in fit's thread
            self._ready.put(("error", exc))

    def _fill(self, plan):
        """Read the batches of ``plan`` (Sequence indices, or a count of the iterator's batches,
        None: all) into chunks; True if the iterator ended."""
        chunk = None  # [buffer index, rows filled, batch sizes]
        count = 0
        while plan is None or count < (plan if isinstance(plan, int) else len(plan)):
            if self._stop.is_set():
                return False
            key = plan[count] if self._seq is not None else self._seen
            if self._pending is not None and (self._seq is None or self._pending[0] == key):
                x, y = self._pending[1]  # read (and counted) when fit began
                name, deferred = self._pending[0], False
                self._pending = None
            else:
                try:
                    x, y, name, deferred = self._read(key, quick=True)
                except StopIteration:
                    self._flush(chunk)
                    return True
            count += 1
            r = x.shape[0]
            if chunk is not None and (len(chunk[2]) == self.chunk or r > chunk[2][0]
                                      or chunk[1] + r > self._buffers[chunk[0]][0].shape[0]):
                self._flush(chunk)
                chunk = None
            if chunk is None:
                index = self._take_free()
                if index is None:
                    return False
                if self._buffers[index][0].shape[0] < r:  # a batch larger than the buffers were made for
                    self._buffers[index] = (np.empty((r, x.shape[1]), x.dtype), np.empty((r, y.shape[1]), y.dtype))
                chunk = [index, 0, [], []]
            bx, by = self._buffers[chunk[0]]
            lo = chunk[1]
            bx[lo: lo + r] = x
            if y.ndim == 1:
                by[lo: lo + r] = 0
                by[np.arange(lo, lo + r), y] = 1
            else:
                by[lo: lo + r] = y
            if deferred:
                chunk[3].append((name, lo, lo + r))
            chunk[1] += r
            chunk[2].append(r)
            if r < chunk[2][0]:  # a smaller batch ends a call: the step's batches are equal but the last
                self._flush(chunk)
                chunk = None
        self._flush(chunk)
        return False

    def _flush(self, chunk):
        """Hand a filled chunk to fit, once the values of its quickly read batches are found finite
        (one scan of the chunk: a bad batch is then checked alone, for its error)."""
        if chunk is None:
            return
        index, filled, sizes, deferred = chunk
        if deferred:
            bx, by = self._buffers[index]
            if not (all_finite(bx[:filled]) and all_finite(by[:filled])):
                for name, lo, hi in deferred:
                    self._check(bx[lo:hi], by[lo:hi], f"batch {name}: ")
        self._ready.put(("chunk", index, sizes))

    def _take_free(self):
        while not self._stop.is_set():
            try:
                return self._free.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        return None

    # ---- fit's side -------------------------------------------------------------------------

    def _plan(self):
        if self._seq is None:
            return self._limit
        if self._pos == 0:
            self._perm = (self._rng.permutation(self._len) if self._shuffle else np.arange(self._len))
        lo = self._pos
        hi = self._len if self._limit is None else min(lo + self._limit, self._len)
        self._pos = 0 if hi == self._len else hi
        if self._limit is not None and hi - lo < self._limit and not getattr(self, "_warned", False):
            self._warned = True
            warnings.warn(f"steps_per_epoch={self._limit}: the Sequence ran out after {hi - lo} batches of an epoch "
                          f"({self._len} a pass); that epoch ended there, the next starts a new pass",
                          UserWarning, stacklevel=4)
        return self._perm[lo:hi].tolist()

    def _next_ready(self):
        while True:
            try:
                return self._ready.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("fit's loader thread stopped unexpectedly") from None

    def epoch(self):
        """The epoch's calls; afterwards ``count`` is its number of batches (0: the iterator had
        ended), ``exhausted`` whether the iterator ended."""
        self.count = 0
        if self.exhausted:
            return
        self._tasks.put((self._plan(),))  # (None: the iterator's batches until it ends; None alone stops)
        while True:
            item = self._next_ready()
            if item[0] == "error":
                raise item[1]
            if item[0] == "end":
                self.exhausted = item[1]
                return
            _, index, sizes = item
            k, n = self.count, len(sizes)
            if k + n > self.rows.size:  # an iterator of unknown length: the arrays grow, doubling
                grown = _per_batch_arrays(max(2 * self.rows.size, k + n))
                for new, old in zip(grown, (self.batch_loss, self.batch_correct, self.rows)):
                    new[:k] = old[:k]
                self.batch_loss, self.batch_correct, self.rows = grown
            self.rows[k: k + n] = sizes
            total = int(self.rows[k: k + n].sum())
            if total > self._order.size:
                self._order = np.arange(total, dtype=np.int64)
            bx, by = self._buffers[index]
            try:
                yield Call((bx[:total], by[:total], self._source), self._order[:total], sizes[0], 0, n,
                           self.batch_loss[k:], self.batch_correct[k:], k)
            finally:
                self._free.put(index)
            self.count = k + n

    def end_epoch(self):
        if self._seq is not None and hasattr(self._seq, "on_epoch_end"):
            self._seq.on_epoch_end()

    def close(self):
        if self._thread is None:
            return
        self._stop.set()
        self._tasks.put(None)
        self._thread.join(timeout=1.0)  # a loader blocked in the user's code is left to end (a daemon)


def stream_inputs(model, x, y, validation_split, steps_per_epoch, shuffle):
    """fit's ``StreamFeed`` for a Sequence or an iterator ``x``, after the checks of the arguments
    that do not apply to one; reads and checks the first batch."""
    if y is not None:
        raise ValueError("y must be None when x is a Sequence or a generator: its batches (x, y) hold the targets")
    if validation_split > 0:
        raise ValueError("validation_split needs arrays: with a Sequence or a generator, pass validation_data")
    if distributed.world() is not None:
        raise NotImplementedError("fit on a Sequence or a generator runs in one process: under MPI pass arrays")
    return StreamFeed(x, model._check_xy, steps_per_epoch, bool(shuffle), model._rng, _plain_batches(model))


def _plain_batches(model):
    """(dtype, input width, output width) where a batch of those float arrays (or of integer labels)
    needs no check but finite values (``StreamFeed``'s quick path): a stack whose first layer takes
    plain features, a loss without bounds on the targets; else None."""
    owner = next(c for c in type(model).__mro__ if "_check_x" in c.__dict__)
    first = model._compute_layers()[0]
    if owner.__module__ != "fastnn.network" or type(first).check_input is not Layer.check_input \
            or model.loss.unit_interval:
        return None
    return np.dtype(model.dtype), first.input_dim, model.output_dim


def evaluate_sequence(model, seq):
    """``model``'s validation figures over the batches of the Sequence ``seq``, as ``evaluate``'s on
    their rows as one array: the loss a mean over the rows (plus the weight penalty), the other
    metrics exact, from the predictions. Read in index order, on fit's thread."""
    total, correct, rows, preds, targets = 0.0, 0, 0, [], []
    exact = model._needs_predictions()
    with model._lock:
        for i in range(len(seq)):
            batch = seq[i]
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ValueError(f"validation_data batch {i}: expected a tuple (x, y), got {type(batch).__name__}")
            if len(batch) == 3 and batch[2] is not None:
                raise NotImplementedError(f"validation_data batch {i} has sample weights (a third element): fit does "
                                          "not weight samples yet; return (x, y)")
            x, y = model._check_xy(batch[0], batch[1], prefix=f"validation_data batch {i}: ")
            if is_sparse(x):
                raise TypeError(f"validation_data batch {i}: x is a scipy.sparse matrix; batches must be dense arrays")
            part = model._backend.evaluate(x, y, model.loss.code, x.shape[0])
            total, correct, rows = total + part[0], correct + part[1], rows + x.shape[0]
            if exact:
                preds.append(model._predict_rows(x, x.shape[0]))
                targets.append(y)
    if hasattr(seq, "on_epoch_end"):
        seq.on_epoch_end()
    values = {"loss": float(total / rows + model._penalty()), "accuracy": float(correct / rows)}
    if exact:
        values.update(model._exact_metric_values(np.concatenate(targets), np.concatenate(preds),
                                                 len(targets[0])))  # functions: over the Sequence's batches
    return {k: values[k] for k in model.log_names()}
