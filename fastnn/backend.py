"""Backends own a model's arrays on one device and run the network kernels on them.

The model (``fastnn.model``) decides what to compute; a backend decides where. Both expose
the same methods, so layers and the model never branch on the device: ``CPUBackend`` calls
``fastnn.kernels.network``; ``CUDABackend`` (``fastnn.cuda.backend``) its twin in ``fastnn.cuda``.

A backend owns all of a model's training state (``STATE``): the flat parameter buffer (which
also holds BatchNorm's running statistics, outside every optimizer's slice), the two optimizer
state buffers, each optimizer slice's step count, and Dropout's random key and step. ``state()``
returns host copies of all of it and ``load_state()`` takes them back: saving, loading and moving
a model between devices go through these two and nothing else.
"""
import os
import time
from collections.abc import Mapping

import numba
import numpy as np

from . import distributed
from .config import INFERENCE_BATCH_SIZE
from .kernels import network
from . import user_layers as user_kernels
from .kernels.optimizers import ADAGRAD, H_SCHEDULE, RMSPROP, any_clipping
from .kernels.schedules import CONSTANT
from .threading import blas_threads_for
from .validation import writable_input


# The training state, in the order ``state()`` lists it: the flat parameter buffer, the two
# optimizer state buffers (momentum, moments), each optimizer slice's step count, and Dropout's
# random key and the training step count.
STATE = ("params", "state1", "state2", "opt_steps", "rng")


# What the 64-bit integers of the state may hold: step counts from 0 to INT64_MAX; the random key
# any int64 (the generator reads its 64 bits, ``kernels.dropout.dropout_stream``).
INT64_MAX = 2**63 - 1


def check_state(state, size, opt_meta, dtype):
    """``state`` (a mapping with every name of ``STATE``) as host arrays of the backend's types,
    checked against the ranges the kernels assume: float buffers of ``size`` finite values cast to
    ``dtype``, ``state2`` (Adam's second moments, 0 elsewhere) >= 0 and ``state1`` >= 0 in the
    slices of ``opt_meta`` (int (S, 3) [start, stop, kind]) where RMSprop and Adagrad keep sums of
    squares, S step counts in [0, 2**63), and the random key (any int64) and step (in [0, 2**63)).
    A ValueError names the first entry that is not."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of {STATE}, got {type(state).__name__}")
    missing = [name for name in STATE if name not in state]
    if missing:
        raise ValueError(f"state lacks {missing}")
    out = {}
    for name in ("params", "state1", "state2"):
        arr = np.asarray(state[name])
        if arr.ndim != 1 or arr.size != size or arr.dtype.kind != "f":
            raise ValueError(f"{name} must be a float vector of {size} values to match the architecture, "
                             f"got {arr.dtype} of shape {arr.shape}")
        with np.errstate(over="ignore"):  # checked after the cast: 1e300 is inf in float32
            # No copy when already of dtype: load takes fresh arrays as its own; load_state copies.
            out[name] = arr.astype(dtype, copy=False)
        if not np.isfinite(out[name]).all():
            raise ValueError(f"{name} holds NaN or infinite values")
    # A negative sum of squares makes the step's square root NaN (or, not yet, a huge step).
    if (out["state2"] < 0).any():
        raise ValueError("state2 (Adam's second moments) must be >= 0")
    for lo, hi, kind in np.asarray(opt_meta, dtype=np.int64).reshape(-1, 3):
        if kind in (RMSPROP, ADAGRAD) and (out["state1"][lo:hi] < 0).any():
            raise ValueError("state1 must be >= 0 where RMSprop and Adagrad keep sums of squares")
    slices = np.shape(opt_meta)[0]
    steps = np.asarray(state["opt_steps"])
    if (steps.shape != (slices,) or steps.dtype.kind not in "iu" or (steps < 0).any()
            or (steps > INT64_MAX).any()):
        raise ValueError(f"opt_steps must be {slices} step counts >= 0 and < 2**63 (one per optimizer slice), "
                         f"got {steps.dtype} of shape {steps.shape}")
    out["opt_steps"] = steps.astype(np.int64)
    rng = np.asarray(state["rng"])
    if (rng.shape != (2,) or rng.dtype.kind not in "iu" or not -INT64_MAX - 1 <= rng[0] <= INT64_MAX
            or not 0 <= rng[1] <= INT64_MAX):
        raise ValueError("rng must be two 64-bit integers (the random key, signed; the step count, >= 0)")
    out["rng"] = rng.astype(np.int64)
    return out


_NO_COUNTS = np.zeros(0)


class Backend:
    """What both backends share: the training state behind ``state()``/``load_state()`` and the
    optimizers' slices, through each backend's ``host``/``write``."""
    # Whether ``train`` runs all its batches in one compiled call, during which Python, and so a
    # KeyboardInterrupt, waits: fit then keeps each call short (``MLP._batches_per_call``).
    compiled_loop = False

    def state(self):
        """Host copies of the whole training state, keyed by the names of ``STATE``."""
        return {name: self.host(name) for name in STATE}

    def load_state(self, state):
        """Replace the whole training state with ``state`` (as ``state()`` returns it); nothing
        changes unless every entry matches this backend's network and optimizers."""
        state = check_state(state, self.params.size, self.opt_meta, self.dtype)
        for name in STATE:
            self.write(name, 0, state[name])

    def fill(self, name, lo, hi, value):
        """``buffer[lo:hi] = value`` (through ``write``; a backend may do it in place)."""
        self.write(name, lo, np.full(hi - lo, value, dtype=self.dtype))

    def configure_optimizers(self, opt_meta, initial):
        """Set the optimizers' slices, int64 (S, 3) [start, stop, kind] of the flat buffers, and
        reset their state: ``state1`` to each slice's ``initial[s]`` (0 outside every slice),
        ``state2`` and the step counts to 0."""
        self.opt_meta = np.ascontiguousarray(opt_meta, dtype=np.int64).reshape(-1, 3)
        self.fill("state1", 0, self.params.size, 0.0)
        self.fill("state2", 0, self.params.size, 0.0)
        for (lo, hi, _), value in zip(self.opt_meta, initial):
            if value:
                self.fill("state1", lo, hi, value)
        self.opt_steps = np.zeros(self.opt_meta.shape[0], np.int64)  # on the host on every backend


class CPUBackend(Backend):
    """Arrays are NumPy arrays in host memory; kernels are Numba CPU functions."""
    name = "cpu"
    compiled_loop = True
    # What fit prints while compile_train runs, when will_compile says it will compile.
    compile_notice = "compiling kernels (first run only, about 15 s on two cores) ..."

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.capacity = 0
        self.graph_sources = None

    def load(self, layers, alphas, reg, opt_meta, state, user=None, graph=None, user_sizes=()):
        """Take the network table, the weight penalties' table, the optimizers' slices (as
        ``configure_optimizers``) and the training state (as ``state()``). Float buffers already of
        the backend's dtype are taken as they are, not copied: the caller hands over fresh arrays
        (a model's buffers can be hundreds of MB each). ``user``: the user layers' compiled functions
        (``user_layers.bundle``), or None; ``user_sizes``: each user layer's trainable weights' sizes,
        which gradient clipping takes as tensors (``kernels.network.weight_tensors``). ``graph``:
        int64 (L, 2), the nodes each layer reads (``kernels.network.Graph``), or None for a stack."""
        self.graph_sources = None if graph is None else np.ascontiguousarray(graph, dtype=np.int64)
        self.layers = np.ascontiguousarray(layers, dtype=np.int64)
        self.alphas = network.alpha_table(alphas)
        self.opt_meta = np.ascontiguousarray(opt_meta, dtype=np.int64).reshape(-1, 3)
        state = check_state(state, np.size(state["params"]), self.opt_meta, self.dtype)
        self.params = state["params"]
        self.grads = np.zeros_like(self.params)
        self.state1, self.state2 = state["state1"], state["state2"]
        self.opt_steps, self.rng = state["opt_steps"], state["rng"]
        self.reg = np.array(reg, dtype=np.float64).reshape(-1, 4)
        self.tensors = network.weight_tensors(self.layers, user_sizes)
        # (dropout, batchnorm, embedding, masking) for the network kernels: None for a kind no layer is, which then
        # compiles out of the model's kernels.
        self.kinds = tuple(True if np.any(self.layers[:, network.KIND] == kind) else None
                           for kind in network.OPTIONAL_KINDS[:-1]) + (user,)
        self.capacity = 0
        # Forward matrix-product FLOPs per row; a training step costs about three times this.
        self.flops_per_row = 2.0 * float(np.sum(self.layers[:, network.N_IN] * self.layers[:, network.N_OUT]
                                                * (self.layers[:, network.KIND] == network.DENSE_LAYER)))

    def host(self, name):
        """A host copy of one entry of the training state (a name of ``STATE``)."""
        return getattr(self, name).copy()

    def fill(self, name, lo, hi, value):
        """``buffer[lo:hi] = value``, in place."""
        getattr(self, name)[lo:hi] = value

    def write(self, name, lo, values):
        """Overwrite ``buffer[lo:lo + values.size]`` from a host array."""
        getattr(self, name)[lo: lo + values.size] = values.reshape(-1)

    def dataset(self, x, y):
        """The training arrays as the kernels read them (a no-op on the CPU)."""
        return x, y

    def reserve(self, rows):
        """Workspace for forward and backward passes of up to ``rows`` rows; allocates only
        when it grows, so steady-state training allocates nothing."""
        if rows <= self.capacity:
            return
        act_off, n_acts, deltas_shape, n_targets, n_stats = network.workspace_layout(self.layers, rows)
        self.work = network.Workspace(np.empty(n_acts, dtype=self.dtype), act_off,
                                      np.empty(deltas_shape, dtype=self.dtype), np.empty(n_targets, dtype=self.dtype),
                                      np.empty(n_stats))
        self.graph = None if self.graph_sources is None else network.Graph(self.graph_sources,
                                                                           np.empty(n_acts, dtype=self.dtype))
        self.capacity = rows

    def train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct, metrics=None,
              counts=None):
        """Train on batches [first, stop) of ``data[order]``; see ``kernels.network.train_batches``.
        ``opt_hyper``: each optimizer slice's hyper-parameters, read from the optimizers now;
        ``metrics``: the training counters' spec (None: none), added to the host array ``counts``."""
        args = self._train_args(data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                                metrics, counts)
        with blas_threads_for(3 * self.flops_per_row * batch_size):
            return self._run(network.train_batches, *args)

    def compile_train(self, *args):
        """Compile (or load from Numba's cache) the training step for ``train``'s arguments
        without running it; returns None, or a note for the user when it had to be compiled:
        a cold first run takes seconds, which should not count as training time."""
        dispatcher = network.train_batches
        types = self._run(lambda values: tuple(numba.typeof(a) for a in values), self._train_args(*args))
        if types in dispatcher.overloads:
            return None
        misses = dispatcher.stats.cache_misses.copy()
        start = time.perf_counter()
        self._run(dispatcher.compile, types)
        if dispatcher.stats.cache_misses == misses:
            return None
        return f"compiled the training kernels in {time.perf_counter() - start:.1f} s (first run only: later runs " \
               "load them from Numba's cache)"

    def will_compile(self):
        """Whether the training step has never been compiled on this machine (no cache index),
        so that the first ``fit`` takes seconds of compiling. Best effort: False if unknown."""
        try:
            return not os.path.exists(network.train_batches._cache._cache_file._index_path)
        except Exception:  # caching off, or a Numba without these attributes
            return False

    def _train_args(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                    metrics=None, counts=None):
        x, y = data
        self.reserve(batch_size)
        train = network.Training(self.grads, self.state1, self.state2, self.opt_meta, opt_hyper, self.opt_steps)
        return (self._network(), train, self.work, network.Batches(x, y, order, batch_size, first, stop), loss,
                batch_loss, batch_correct, _NO_COUNTS if counts is None else counts,
                metrics if metrics is not None and metrics.shape[0] else None,
                *self.optional_stages(opt_hyper), *self.kinds, self._collective(), self.graph)

    def _run(self, kernel, *args):
        """``kernel(*args)``; with user layers, without Numba's notice that their first-class
        functions are an experimental feature (``fastnn.user_layers``)."""
        if self.kinds[-1] is None:
            return kernel(*args)
        return user_kernels.quietly(kernel, *args)

    def _collective(self):
        """None in one process; under MPI the step's ``kernels.distributed.Collective``."""
        return distributed.collective(self.dtype, self.params.size)

    def _network(self):
        # Built per call, not kept: load_state and configure_optimizers may replace the arrays.
        return network.Network(self.params, self.layers, self.alphas, self.rng)

    def optional_stages(self, opt_hyper):
        """(reg, tensors, schedules) for ``train_batches``: each None where no layer or optimizer
        uses that stage, so that it compiles out of the step."""
        hyper = np.asarray(opt_hyper)
        scheduled = hyper.size and bool(np.any(hyper[:, H_SCHEDULE] != CONSTANT))
        return (self.reg if self.reg.shape[0] else None, self.tensors if any_clipping(hyper) else None,
                True if scheduled else None)

    def predict(self, x, batch_size=INFERENCE_BATCH_SIZE, training=False):
        """``x`` may be read-only (a memory-mapped file): then it is copied, since the inference pass
        runs on the input itself (``validation.writable_input``); ``train`` takes it as it is."""
        x = writable_input(x)
        out = np.empty((x.shape[0], self.layers[-1, network.N_OUT]), dtype=self.dtype)
        self.reserve(batch_size)
        with blas_threads_for(self.flops_per_row * batch_size):
            self._run(network.predict_batches, out, self._network(), x, batch_size, self.work, training, *self.kinds,
                      self.graph)
        return out

    def evaluate(self, x, y, loss, batch_size=INFERENCE_BATCH_SIZE):
        """As ``predict``, a read-only ``x`` or ``y`` is copied."""
        x, y = writable_input(x), writable_input(y)
        self.reserve(batch_size)
        with blas_threads_for(self.flops_per_row * batch_size):
            return self._run(network.evaluate_batches, self._network(), loss, x, y, batch_size, self.work, *self.kinds,
                             self.graph)


def get_backend(device, dtype):
    """The backend for ``device`` ('cpu' or 'cuda'); a clear error where one is unavailable."""
    if device == "cpu":
        return CPUBackend(dtype)
    if device == "cuda":
        from .cuda.backend import CUDABackend
        return CUDABackend(dtype)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
