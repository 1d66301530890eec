"""What a backend is: the interface by which the model runs a network on one device.

The model decides what to compute; a backend decides where. ``Backend`` lists every method a
backend provides, so layers and the model never branch on the device; ``CPUBackend``
(``fastnn.cpu_backend``) runs ``fastnn.kernels``, ``CUDABackend`` (``fastnn.cuda.backend``) their
twins in ``fastnn.cuda``; ``fastnn.devices.get_backend`` picks one by the device's name.

A backend takes a network whole, as a ``fastnn.spec.NetworkSpec`` (tables, penalties, graph, user
functions, optimizer slices), and owns all of its training state (``STATE``): the flat parameter
buffer (which also holds BatchNorm's running statistics, outside every optimizer's slice), the
two optimizer state buffers, each optimizer slice's step count, and Dropout's random key and
step. Its kernels advance the counters as they train; ``state()`` returns host copies of all of
it and ``load_state()`` takes them back: saving, loading and moving a model between devices go
through these two and nothing else. The weight penalty and the running statistics are read where
the parameters live (``penalty``, ``running_statistics``), not from a host copy of the buffer.
"""
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from .kernels.optimizers import ADAGRAD, RMSPROP


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


class Backend(ABC):
    """A network's arrays on one device and the kernels that run on them.

    ``spec`` is the ``NetworkSpec`` loaded last; ``dtype`` the float type of the buffers. The
    buffers are named as in ``STATE``, plus ``grads`` (the last step's gradients)."""
    name = None  # the device's name: 'cpu', 'cuda'
    # Whether ``train`` runs all its batches in one compiled call, during which Python, and so a
    # KeyboardInterrupt, waits: fit then keeps each call short (``MLP._batches_per_call``).
    compiled_loop = False
    # Whether inference-mode ``predict`` may run from several threads at once (each call then
    # needs its own scratch); else the model's calls take turns (``fastnn.locks``).
    concurrent_inference = False
    # What fit prints while compile_train runs, when will_compile says it will compile.
    compile_notice = ""

    # ---- the network and its state ------------------------------------------------------------

    @abstractmethod
    def load(self, spec, state):
        """Take the network ``spec`` (a ``NetworkSpec``) and its training state (host arrays keyed
        by the names of ``STATE``, checked by ``check_state``). Float buffers already of the
        backend's dtype may be taken as they are, not copied: the caller hands over fresh arrays (a
        model's buffers can be hundreds of MB each)."""

    @property
    def opt_meta(self):
        """The optimizers' slices of the flat buffers, int64 (S, 3) [start, stop, kind]."""
        return self.spec.slices.meta

    def configure_optimizers(self, spec):
        """Take ``spec`` (the loaded network with new optimizer slices, ``NetworkSpec.with_optimizer``)
        and reset the optimizer state: ``state1`` to each slice's initial value (0 outside every
        slice), ``state2`` and the step counts to 0."""
        if spec.table is not self.spec.table:
            raise ValueError("configure_optimizers takes the loaded network with new optimizers, not another network")
        self.spec = spec
        size = spec.size
        self.fill("state1", 0, size, 0.0)
        self.fill("state2", 0, size, 0.0)
        for (lo, hi, _), value in zip(spec.slices.meta, spec.slices.initial):
            if value:
                self.fill("state1", lo, hi, value)
        self.opt_steps = np.zeros(spec.slices.meta.shape[0], np.int64)  # a host array on every backend

    def state(self):
        """Host copies of the whole training state, keyed by the names of ``STATE``."""
        return {name: self.host(name) for name in STATE}

    def load_state(self, state):
        """Replace the whole training state with ``state`` (as ``state()`` returns it); nothing
        changes unless every entry matches this backend's network and optimizers."""
        state = check_state(state, self.spec.size, self.opt_meta, self.dtype)
        for name in STATE:
            self.write(name, 0, state[name])

    @abstractmethod
    def host(self, name, lo=0, hi=None):
        """A host copy of ``buffer[lo:hi]`` of one entry of the training state (a name of
        ``STATE``, or ``grads``); the whole of it by default."""

    @abstractmethod
    def write(self, name, lo, values):
        """Overwrite ``buffer[lo:lo + values.size]`` from a host array."""

    def fill(self, name, lo, hi, value):
        """``buffer[lo:hi] = value`` (through ``write``; a backend may do it in place)."""
        self.write(name, lo, np.full(hi - lo, value, dtype=self.dtype))

    @abstractmethod
    def penalty(self):
        """The weight penalty of the parameters as they are now (float; 0.0 without regularizers),
        computed where they live: Keras adds it to the loss that evaluate reports."""

    def running_statistics(self):
        """Host copies of the statistics no optimizer trains (BatchNorm's running mean and
        variance), the spec's ``running_statistics`` ranges one after the other (float, (n,))."""
        parts = [self.host("params", lo, hi) for lo, hi in self.spec.running_statistics]
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)

    def load_running_statistics(self, values):
        """Write ``values`` (as ``running_statistics`` returns them) back into their ranges."""
        values = np.asarray(values, dtype=self.dtype).reshape(-1)
        at = 0
        for lo, hi in self.spec.running_statistics:
            self.write("params", int(lo), values[at: at + hi - lo])
            at += hi - lo

    # ---- training -----------------------------------------------------------------------------

    @abstractmethod
    def dataset(self, x, y):
        """The training arrays as ``train`` reads them."""

    @abstractmethod
    def reserve(self, rows):
        """Workspace for forward and backward passes of up to ``rows`` rows; allocates only when it
        grows, so steady-state training allocates nothing."""

    @abstractmethod
    def train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct, metrics=None,
              counts=None, user_metrics=None, weights=None):
        """Train on batches [first, stop) of ``data[order]`` (``data`` from ``dataset``); see
        ``kernels.network.train_batches``. ``opt_hyper``: each optimizer slice's hyper-parameters
        (``OptimizerSlices.hyper``); ``batch_loss`` and ``batch_correct`` (host arrays) receive each
        batch's loss and correct rows; ``metrics``: the training counters' spec (None: none),
        added to the host array ``counts``. Advances the step counts and Dropout's step by the
        batches trained. Returns -1, or the first batch whose loss was not finite (no update was
        applied from it on). ``loss``: a loss code; a user loss's (``fastnn.user_losses.LossCode``)
        carries the loss. ``user_metrics``: None, or a function of the dtype giving
        ``train_batches``' ``user_metrics`` bundle (their sums go to ``counts`` too). ``weights``:
        None, or a loss weight per row of the data set (host array of the model's dtype), gathered
        with the batches."""

    @abstractmethod
    def compile_train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                      metrics=None, counts=None, user_metrics=None, weights=None):
        """Compile the training step for ``train``'s arguments without changing the training
        state; returns None, or a note for the user with the time it took."""

    @abstractmethod
    def will_compile(self):
        """Whether the first ``fit`` will take seconds of compiling (best effort)."""

    # ---- inference ----------------------------------------------------------------------------

    @abstractmethod
    def predict(self, x, batch_size, training=False):
        """The network's output for every row of the host array ``x`` (a host array). ``training``:
        the training-mode forward pass (Dropout's masks for the current step, which it then
        advances; BatchNorm normalizes with the batch and updates its running statistics)."""

    @abstractmethod
    def evaluate(self, x, y, loss, batch_size, weights=None):
        """(sum over batches of the loss times the batch's rows, number of correct rows);
        ``weights``: None, or a loss weight per row (``kernels.losses.weighted_loss_forward``)."""
