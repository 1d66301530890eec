"""The model: ``MLP`` (alias ``Sequential``), a stack of layers trained Keras-style.

Data path of ``fit`` (all of it, top to bottom): validate ``x``/``y`` once
(``fastnn.validation``) -> lay the parameters out in one flat buffer and hand it to a
backend (``_build``) -> per epoch, shuffle an index array in place and call
``backend.train`` once (or once per chunk of batches when a callback or the progress bar
wants to see them, or when one call would run for more than a fraction of a second, which
Ctrl-C could not stop) -> that runs ``fastnn.kernels.network.train_batches``. For every
batch it gathers, runs the forward pass (Dropout active), the loss, the backward pass, the weight
penalty, clipping, the learning-rate schedule and the optimizer step, with no Python in between
and no allocation -> per-epoch logs, validation, callbacks.
"""
import copy
import functools
import os
import threading
import time

import numpy as np

from . import distributed, losses, optimizers, saving
from . import metrics as metrics_
from .activations import Sigmoid, Softmax
from .backend import INT64_MAX, STATE, check_state
from .base import class_name, deserialize, using_custom_objects
from .callbacks import Callback, History, TensorBoard, TerminateOnNaN, _Muted
from .config import INFERENCE_BATCH_SIZE
from .devices import get_backend
from . import user_layers as user_kernels
from .layers import Dropout, Embedding, Input, Lambda, Layer, _function_name, check_weight_list
from .schedules import LearningRateSchedule
from .spec import build_spec
from .validation import check_dtype, check_float, check_int, check_targets

# Batches per call into the compiled loop while a progress bar is shown: often enough for
# a smooth bar, rarely enough that the calls cost nothing measurable.
_PROGRESS_UPDATES_PER_EPOCH = 20
# Matrix-product FLOPs per call into the compiled training loop at most (see _batches_per_call):
# at the 35 to 70 GFLOP/s of a training step's products on two cores, 0.3 to 0.6 s.
_CHUNK_FLOPS = 2e10
# What a value touched by a memory-bound pass costs in FLOPs of matrix product, for the same
# sizing. Measured with fit on 2 shared cores: the products of a 256-512-512-10 step at batch 256
# ran at 35 GFLOP/s (0.029 ns a FLOP); an Embedding(300000, 32) step, Adam over the table, took
# 1.8 ns a parameter (62 FLOPs' worth); ReLU, Dropout, tanh and BatchNorm over 4096 values a row
# 7.8 ns a value, forward and backward (270: three passes of 90).
_VALUE_FLOPS = 100.0


def _one_training_call(method):
    """fit and train_on_batch run one at a time per model: a second call while one runs (from
    another thread, or from a callback) is a RuntimeError, not a silent mix of two trainings.
    The call also holds the model's lock, so that predict from other threads waits."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(f"{method.__name__}: the model is already training (fit or train_on_batch is running, "
                               "here or in another thread); train one model from one thread at a time")
        try:
            with self._lock:
                return method(self, *args, **kwargs)
        finally:
            self._busy.release()
    return wrapper


class MLP:
    """A multi-layer perceptron: ``MLP([Dense(784, 100, activation="relu"), ...])`` or ``add`` layer by layer.

    - ``seed``: makes weight initialization and shuffling reproducible: an integer in [0, 2**64 - 1]
      (what both NumPy and torch.manual_seed take).
    - ``dtype``: 'float32' (default) or 'float64', for parameters and computation.
    - ``device``: 'cpu' (default) or 'cuda' (needs numba-cuda and an NVIDIA GPU).
    """

    def __init__(self, layers=None, seed=None, dtype="float32", device="cpu", name=None):
        # NumPy takes seeds >= 0, torch.manual_seed up to 2**64 - 1: fastnn takes both ranges' overlap.
        self.seed = None if seed is None else check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        self.dtype = check_dtype(dtype)
        self.device = device
        self.name = name or "mlp"
        self.layers = []
        self.loss = None
        self.optimizer = None
        self.metrics = []
        self.stop_training = False
        self._rng = np.random.default_rng(self.seed)
        self._backend = None
        self._diverged = None  # why the weights are not finite, after fit raised FloatingPointError
        self._busy = threading.Lock()  # held by fit and train_on_batch: one training call at a time
        self._lock = threading.RLock()  # held by every call that uses the backend's buffers
        get_backend(device, self.dtype)  # fail now, not at the first fit, if the device is missing
        for layer in layers or []:
            self.add(layer)

    # ---- building -------------------------------------------------------------------------

    def add(self, layer):
        """Append a layer; its input_dim must match the previous layer's output."""
        if self._busy.locked():
            raise RuntimeError("the model is training (fit or train_on_batch is running, here or in another "
                               "thread): its architecture cannot change until that returns")
        if not isinstance(layer, Layer):
            raise TypeError("layer must be a fastnn layer (Dense, Activation, Dropout, BatchNormalization, Input), "
                            f"got {type(layer).__name__}")
        if layer._model is not None:
            raise ValueError(f"this {type(layer).__name__} already belongs to a model: create a new layer")
        if isinstance(layer, Input) and self.layers:
            raise ValueError("Input must be the first layer")
        layer.connect(self.layers[-1].output_dim if self.layers else None)
        if isinstance(layer, Embedding) and self._compute_layers():
            raise ValueError("an Embedding reads integer ids: it must be the first layer (after an optional Input), "
                             f"but the model already has {type(self._compute_layers()[-1]).__name__} layers")
        if layer.input_dim is None:
            raise ValueError(f"the first layer needs input_dim (or add an Input first): {layer!r}")
        weights = self.get_weights() if self._backend is not None else None
        layer._model = self
        self.layers.append(layer)
        if weights is not None:  # keep trained weights; only the new layer is initialised
            self._build(weights + self._initial_weights([layer]))
        return self

    addLayer = add  # the seed framework's name

    def _initial_weights(self, layers):
        return [w for layer in layers if layer.count_params()
                for w in layer.initial_weights(self._rng, self.dtype)]

    def _compute_layers(self):
        return [layer for layer in self.layers if not isinstance(layer, Input)]

    def _ensure_built(self):
        if self._backend is None:
            with self._lock:  # two threads' first predict must not build twice
                if self._backend is None:
                    if not self._compute_layers():
                        raise ValueError("the model has no layers: add a Dense or Activation layer first")
                    self._build(self._initial_weights(self.layers))

    def _build(self, weights):
        """Lay ``weights`` out in one flat buffer, [W1, b1, W2, b2, ...], build the network's
        specification (``fastnn.spec``) and load both into a new backend.

        The random key and step (Dropout's masks) carry over from an earlier build."""
        self._check_device_runs_layers(self.device, f"this model is on {self.device!r}")
        spec = build_spec(self._compute_layers(), self.dtype, self.optimizer or _default_optimizer(self),
                          graph=self._graph_table(), table_row=self._table_row)
        params = np.concatenate([np.ravel(w) for w in weights]).astype(self.dtype, copy=False) if weights \
            else np.zeros(0, self.dtype)
        rng = self._backend.host("rng") if self._backend is not None else np.array([self._random_key(), 0])
        if spec.user is not None:
            _probe_user_layers([layer for layer in spec.layers if layer.is_user_layer()],
                               zip(spec.user.forward, spec.user.backward), params)
        backend = get_backend(self.device, self.dtype)
        # The backend takes these fresh arrays as its own (no copies: a Dense(8000, 8000) is 256 MB
        # a buffer), with the optimizer state the spec's slices start from.
        state1 = np.zeros_like(params)
        for (lo, hi, _), value in zip(spec.slices.meta, spec.slices.initial):
            state1[lo:hi] = value
        backend.load(spec, {"params": params, "state1": state1, "state2": np.zeros_like(params),
                            "opt_steps": np.zeros(spec.slices.meta.shape[0], np.int64), "rng": rng})
        self._spec, self._backend = spec, backend

    def _check_device_runs_layers(self, device, why):
        """A ValueError (``why`` says what was asked) if ``device`` cannot run one of the layers:
        user layers (Lambda, Layer subclasses) run on the CPU only."""
        users = [layer for layer in self._compute_layers() if layer.is_user_layer()]
        if users and device != "cpu":
            raise ValueError(f"{type(users[0]).__name__} is a layer of your own: such layers run on the CPU only "
                             f"({why})")

    def _table_row(self, layer, offset):
        """A layer's row of the kernels' table (a functional ``Model`` makes its inputs' rows)."""
        return layer.table_row(offset)

    def _graph_table(self):
        """The rows' sources (``kernels.network.Graph``) of a functional ``Model``; None for a stack."""
        return None

    def _random_key(self):
        """The key of Dropout's masks: the seed itself, so that a seed fixes them (and the shuffling
        stream is left as it was); without a seed, fresh entropy."""
        if self.seed is not None:
            return self.seed - 2**64 if self.seed > INT64_MAX else self.seed  # its 64 bits, as an int64
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))

    def _configure_optimizers(self):
        """Give each run of consecutive layers that share an optimizer one slice of the flat
        buffers (a new spec of the same network), and reset the optimizer state (momentum,
        moments, step counts)."""
        self._spec = self._spec.with_optimizer(self.optimizer or _default_optimizer(self))
        self._backend.configure_optimizers(self._spec)

    def optimizers(self):
        """The distinct optimizer objects that update this model's parameters."""
        self._ensure_built()
        return self._spec.slices.distinct()

    def _opt_hyper(self):
        """Hyper-parameters read from the optimizer objects now (a scheduler may have changed them)."""
        return self._spec.slices.hyper()

    def compile(self, loss="cross_entropy", optimizer=None, metrics=None):
        """Set the loss, the default optimizer (for layers without their own) and the metrics that
        ``fit`` logs and ``evaluate`` returns, by name (``fastnn.metrics``): 'accuracy', 'auc',
        'pr_auc', 'precision', 'recall', 'f1', 'top_k_accuracy'; for one output column also 'tp',
        'fp', 'tn', 'fn', 'sensitivity', 'specificity'; for regression losses 'mae', 'mse', 'rmse',
        'r2', 'cosine_similarity'. Training figures are counted inside the compiled step over the
        epoch's batches (AUC over 200 score buckets, as Keras' thresholds); validation and
        ``evaluate`` figures are exact, from ``predict``'s output."""
        if self._busy.locked():  # a callback's compile would change the logs of the epochs still to come
            raise RuntimeError("compile: the model is training (fit or train_on_batch is running, here or in another "
                               "thread): its loss, optimizer and metrics cannot change until that returns")
        # Everything is checked before anything is set: a failed compile leaves the model as it was.
        loss = losses.get(loss)
        optimizer = None if optimizer is None else optimizers.get(optimizer)
        metrics = metrics_.canonical_names(metrics, loss.classification, self.output_dim)
        self.loss, self.optimizer = loss, optimizer
        self.metrics = metrics
        if self._backend is not None:
            self._configure_optimizers()
        return self

    # ---- data -----------------------------------------------------------------------------

    @property
    def input_dim(self):
        return self.layers[0].input_dim if self.layers else None

    @property
    def output_dim(self):
        return self.layers[-1].output_dim if self.layers else None

    def _check_xy(self, x, y, prefix=""):
        x = self._check_x(x, prefix + "x")
        y = check_targets(y, prefix + "y", x.shape[0], self.output_dim, dtype=self.dtype,
                          one_hot_labels=self.output_dim > 1, unit_interval=self.loss.unit_interval, writable=False)
        return x, y

    def _check_x(self, x, name):
        """The model's input checked by its first layer (an Embedding wants ids) and as the kernels read it."""
        self._ensure_built()
        return self._compute_layers()[0].check_input(x, name, self.dtype)

    def _require_compiled(self, what):
        if self.loss is None:
            raise ValueError(f"call compile(loss=...) before {what}")
        self._ensure_built()
        if self.loss.code == losses.BinaryCrossEntropy.code:
            act = self._output_activation()
            if not isinstance(act, (Sigmoid, Softmax)):
                raise ValueError(f"BinaryCrossEntropy takes probabilities, outputs in [0, 1], but the last layer's "
                                 f"activation is {type(act).__name__ if act is not None else 'none'}: end the model "
                                 "in a sigmoid (or softmax), as PyTorch's BCELoss requires")

    def _output_activation(self):
        """The activation that bounds the output: the last layer's (Dropout passes it through;
        BatchNorm, which has none, gives None)."""
        for layer in reversed(self._compute_layers()):
            if isinstance(layer, Dropout):
                continue
            return getattr(layer, "activation", None)
        return None

    def _check_usable(self, what):
        if self._diverged is not None:
            raise ValueError(f"cannot {what}: {self._diverged}")

    # ---- training -------------------------------------------------------------------------

    @_one_training_call
    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, validation_split=0.0, shuffle=True,
            callbacks=None, verbose=1, initial_epoch=0):
        """Train for ``epochs`` passes over (x, y); returns a ``History``.

        y: integer class labels (one-hot encoded for a multi-output model), one-hot rows, or
        targets of the output's width. The last batch of an epoch may be smaller. Loss and
        accuracy per epoch are averages over that epoch's batches weighted by their rows
        (Keras' convention); validation figures are computed after the epoch.

        Under MPI (``fastnn.distributed.init()``), ``batch_size`` is the global batch and every
        rank passes the same full arrays; see ``fastnn.distributed``.
        """
        return self._checked_fit(x, y, epochs, batch_size, validation_data, validation_split, shuffle, callbacks,
                                 verbose, initial_epoch)

    def _checked_fit(self, x, y, epochs, batch_size, validation_data, validation_split, shuffle, callbacks, verbose,
                     initial_epoch, labels=None):
        """fit's work, for fit and train (their caller holds the training lock). ``labels`` maps log
        keys to the names the epoch lines print them under, in its order; when given, only those
        are printed."""
        epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks = distributed.agree(
            self._fit_inputs, x, y, epochs, batch_size, validation_data, validation_split, verbose, initial_epoch,
            callbacks)
        if distributed.world() is not None:
            self._check_same_on_every_rank(epochs=epochs, batch_size=batch_size, initial_epoch=initial_epoch,
                                           shuffle=bool(shuffle),
                                           **{"validation rows": None if x_val is None else x_val.shape[0]})
            distributed.check_same_data(x=x, y=y, **({} if x_val is None else {"validation x": x_val,
                                                                                  "validation y": y_val}))
            self._take_rank_zero_state()
        with distributed.fail_together():
            return self._fit(x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch,
                             labels)

    def _fit_inputs(self, x, y, epochs, batch_size, validation_data, validation_split, verbose, initial_epoch,
                    callbacks):
        """fit's arguments checked: (epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks)."""
        self._require_compiled("fit")
        self._check_distributable()
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
        verbose = check_int(verbose, "verbose", minimum=0, maximum=2)
        validation_split = check_float(validation_split, "validation_split", minimum=0.0, maximum=1.0,
                                       max_inclusive=False)
        x, y = self._check_xy(x, y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a tuple (x_val, y_val)")
            x_val, y_val = self._check_xy(*validation_data, prefix="validation_data ")
        elif validation_split > 0:
            cut = x.shape[0] - int(x.shape[0] * validation_split)
            if cut in (0, x.shape[0]):
                raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                                 f"of {x.shape[0]} rows")
            x, x_val, y, y_val = x[:cut], x[cut:], y[:cut], y[cut:]
        else:
            x_val = y_val = None
        return epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, _callback_list(callbacks)

    def _check_distributable(self):
        if distributed.world() is None:
            return
        if self.device != "cpu":
            raise ValueError(f"under MPI fastnn trains on the CPU only, this model is on {self.device!r}: the CUDA "
                             "path would need a CUDA-aware MPI or NCCL (see docs/distributed.md)")
        self._ensure_built()
        distributed.collective(self.dtype, self._backend.params.size)  # a ValueError if MPI cannot sum it

    def _check_same_on_every_rank(self, **settings):
        """Under MPI, before a training call (or evaluate): that the ranks agree on the call's ``settings`` and
        on the model's own (the number of parameters and the dtype make every gradient allreduce;
        the loss and the metrics decide the counters summed), all of which decide the collective
        calls each rank makes (``distributed.check_same_settings``). ``verbose`` may differ (only
        rank 0 prints, and the compiled steps make the same calls whatever the progress updates);
        the callbacks may too: a per-batch hook on one rank has every rank go batch by batch, and a
        rank that stops training stops all (``_fit``)."""
        distributed.check_same_settings(**settings, **{
            "the number of parameters": int(self._backend.params.size), "the dtype": np.dtype(self.dtype).name,
            "the loss": type(self.loss).__name__, "the metrics": list(self.metrics)})

    def _take_rank_zero_state(self):
        """Under MPI: every rank takes rank 0's training state and shuffle generator, so that the
        ranks start a training call alike whatever their seeds or earlier calls."""
        rank0 = distributed.rank() == 0
        state, rng_state = distributed.broadcast((self._backend.state(), self._rng.bit_generator.state)
                                                 if rank0 else None)
        if not rank0:
            self._backend.load_state(state)
            self._rng.bit_generator.state = rng_state

    def _average_running_statistics(self):
        """Under MPI: BatchNorm's running statistics, which each rank updates from its own rows,
        averaged over the ranks so that all hold the same model."""
        if distributed.world() is None:
            return
        statistics = self._backend.running_statistics()
        if statistics.size:
            self._backend.load_running_statistics(distributed.sum_over_ranks(statistics) / distributed.size())

    def _fit(self, x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch, labels=None):
        rank0 = distributed.rank() == 0
        show = verbose if rank0 else 0  # only rank 0 prints; chunks follow ``verbose`` on every rank alike
        callbacks = [cb if rank0 or not cb.writes_files else _Muted(cb) for cb in callbacks]
        history = History()
        # Last, as in Keras: History records what the other callbacks add to an epoch's logs.
        callbacks = callbacks + [history]
        for cb in callbacks:
            cb.set_model(self)

        n = x.shape[0]
        batch_size = min(batch_size, n)  # as Keras: a batch larger than the data is the whole data, once
        n_batches = -(-n // batch_size)
        rows = np.full(n_batches, batch_size, dtype=np.float64)
        rows[-1] = n - batch_size * (n_batches - 1)
        batch_loss = np.zeros(n_batches)
        batch_correct = np.zeros(n_batches, dtype=np.int64)
        spec, counts = self._metric_counters()
        order = np.arange(n, dtype=np.int64)
        rows_in_order = order.copy()
        data = self._backend.dataset(x, y)
        # Under MPI a rank that logs each batch sums its metric counters over the ranks at each
        # batch: if one rank does, all do.
        per_batch = distributed.any_rank(any(cb.wants_batches() for cb in callbacks))
        chunk = self._batches_per_call(batch_size, n_batches, per_batch, verbose)
        bar = _progress_bar(show, n_batches)

        if n_batches and (verbose or distributed.world() is not None):
            # Compiling is not training: done here, out of the first epoch's time and throughput.
            # Under MPI rank 0 compiles first and the others then load its cache: processes
            # writing one cache at once can crash (numba#4807).
            for turn in (True, False):
                if turn == rank0:
                    if show and self._backend.will_compile():
                        print(self._backend.compile_notice, flush=True)
                    note = self._backend.compile_train(data, order, batch_size, 0, 1, self.loss.code,
                                                       self._opt_hyper(), batch_loss, batch_correct, spec, counts)
                    if note and show:
                        print(note, flush=True)
                if turn:
                    distributed.barrier()

        self.stop_training = False
        # Hooks get their logs positionally, as Keras passes them: a LambdaCallback's
        # functions take (logs) and (epoch, logs).
        logs = {}
        params = {"epochs": epochs, "steps": n_batches, "verbose": verbose,
                  "metrics": self.log_names(validation=x_val is not None)}
        for cb in callbacks:
            cb.set_params(params)
            cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            if shuffle:
                # Each epoch's order is a fresh permutation drawn from the generator, not a shuffle
                # of the last one: it then depends on the generator's state alone, which save
                # keeps, so that training resumed in a new fit call draws the same orders.
                order[:] = rows_in_order
                self._rng.shuffle(order)
            hyper = self._opt_hyper()
            counts[:] = 0.0  # training metrics are over the epoch's batches, as Keras'
            if bar is not None:
                bar.reset()
                bar.set_description(f"Epoch {epoch + 1}/{epochs}")
            start = time.perf_counter()
            for first in range(0, n_batches, chunk):
                stop = min(first + chunk, n_batches)
                bad = self._backend.train(data, order, batch_size, first, stop, self.loss.code, hyper,
                                          batch_loss, batch_correct, spec, counts)
                if bad >= 0:
                    if any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
                        print(f"Epoch {epoch + 1}, batch {bad + 1}: invalid loss {batch_loss[bad]}, terminating "
                              f"training{self._after_divergence()}")
                        self.stop_training = True
                        break
                    raise FloatingPointError(
                        f"the loss became {batch_loss[bad]} at epoch {epoch + 1}, batch {bad + 1}: training "
                        "diverged (try a lower learning_rate, or check the data's scale)" + self._after_divergence())
                if per_batch:
                    blogs = self._logs(batch_loss[first:stop], batch_correct[first:stop], rows[first:stop], spec,
                                       counts, rows[:stop].sum())
                    for cb in callbacks:
                        if cb.wants_batches():
                            cb.on_batch_end(first, blogs)
                if bar is not None:
                    bar.update(stop - first)
            seconds = time.perf_counter() - start
            if self.stop_training and bad >= 0:  # TerminateOnNaN: no logs of a diverged epoch
                break
            logs = self._logs(batch_loss, batch_correct, rows, spec, counts, rows.sum())
            self._average_running_statistics()
            if x_val is not None:
                val = self._evaluate_arrays(x_val, y_val)
                logs.update({"val_" + k: v for k, v in val.items()})
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            # A callback may stop one rank only (from its own clock or files): any rank stopping
            # stops all, or the others would wait forever in the next epoch's first allreduce.
            self.stop_training = distributed.any_rank(self.stop_training)
            if show:
                shown = labels or {key: key for key in logs}
                line = f"Epoch {epoch + 1}/{epochs} - {seconds:.2f}s - {n / max(seconds, 1e-9):,.0f} samples/s - " \
                       + " - ".join(f"{name}: {logs[key]:.4f}" for key, name in shown.items())
                (bar.write if bar is not None else print)(line)
            if self.stop_training:
                break
        if bar is not None:
            bar.close()
        for cb in callbacks:
            cb.on_train_end(logs)
        return history

    def _batches_per_call(self, batch_size, n_batches, per_batch, verbose):
        """How many batches fit trains per call into the backend: one when a callback wants each
        batch, a twentieth of the epoch for a progress bar, else the whole epoch; and, where the
        backend runs them in one compiled call, at most what costs _CHUNK_FLOPS (a fraction of a
        second). Python sees Ctrl-C only between such calls: short ones let a KeyboardInterrupt
        stop training promptly, between two batches, with the model consistent. A step's cost
        counts every layer (``Layer.step_work``: products, and every value a memory-bound pass
        touches at _VALUE_FLOPS) and the optimizers' update of every parameter."""
        chunk = 1 if per_batch else (max(1, n_batches // _PROGRESS_UPDATES_PER_EPOCH) if verbose == 1
                                     else n_batches)
        if not self._backend.compiled_loop:
            return chunk
        step = _VALUE_FLOPS * self.count_params()
        for layer in self._compute_layers():
            flops, values = layer.step_work(batch_size)
            step += flops + _VALUE_FLOPS * values
        return min(chunk, max(1, int(_CHUNK_FLOPS // max(step, 1.0))))

    def _after_divergence(self):
        """After a non-finite loss: the weights are those before that batch; if they are not
        finite themselves (the previous update blew them up), the model is marked unusable (predict,
        evaluate and save refuse it) until new weights are set or loaded. Returns the message's tail."""
        params = self._backend.host("params")
        if np.isfinite(params).all():
            return "; the weights are those before that batch"
        self._diverged = ("training diverged and left weights that are not finite; set_weights, or load a "
                          "checkpoint, to use the model again")
        return "; the weights are no longer finite: the model cannot predict or be saved until new weights are set"

    def log_names(self, validation=False):
        """The keys of each epoch's logs in ``fit`` (``History.history``'s): 'loss' and the compiled
        metrics, then, with validation data, the same with ``val_``. Callbacks get them before
        training as ``params["metrics"]`` (Keras 2's name)."""
        names = ["loss"] + self.metrics
        return names + ["val_" + k for k in names] if validation else names

    def _metric_counters(self):
        """(spec or None, zeroed counts) of the training metrics counted in the compiled step."""
        spec, size = metrics_.counter_spec([m for m in self.metrics if m != "accuracy"], self.output_dim)
        return (spec if spec.shape[0] else None), np.zeros(size)

    def _logs(self, batch_loss, batch_correct, rows, spec=None, counts=None, counted_rows=0.0):
        """Loss (and accuracy) weighted over these batches' rows; the other metrics from the
        epoch's counters, over the ``counted_rows`` rows counted so far."""
        total = rows.sum()
        values = {"loss": float(np.dot(batch_loss, rows) / total)}
        if "accuracy" in self.metrics:
            values["accuracy"] = float(batch_correct.sum() / total)
        if spec is not None:  # each rank counted its own rows
            counts = distributed.sum_over_ranks(counts)
            values.update(metrics_.from_counts(self.metrics, spec, counts, self.output_dim, counted_rows))
        return {k: values[k] for k in self.log_names()}

    @_one_training_call
    def train_on_batch(self, x, y):
        """One optimizer step on exactly these rows; returns the loss before the step
        (and the accuracy, as a list, when compiled with metrics=['accuracy']).

        Under MPI the rows are the global batch, the same on every rank (see ``fit``)."""
        x, y = distributed.agree(self._train_on_batch_inputs, x, y)
        if distributed.world() is not None:
            self._check_same_on_every_rank()
            distributed.check_same_data(x=x, y=y)
            self._take_rank_zero_state()
        n = x.shape[0]
        batch_loss, batch_correct = np.zeros(1), np.zeros(1, dtype=np.int64)
        spec, counts = self._metric_counters()
        with distributed.fail_together():
            bad = self._backend.train(self._backend.dataset(x, y), np.arange(n, dtype=np.int64), n, 0, 1,
                                      self.loss.code, self._opt_hyper(), batch_loss, batch_correct, spec, counts)
            if bad >= 0:
                raise FloatingPointError(f"the loss is {batch_loss[0]}: training diverged" + self._after_divergence())
            logs = self._logs(batch_loss, batch_correct, np.array([float(n)]), spec, counts, float(n))
            self._average_running_statistics()
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _train_on_batch_inputs(self, x, y):
        self._require_compiled("train_on_batch")
        self._check_distributable()
        return self._check_xy(x, y)

    @_one_training_call
    def train(self, dataset, loss=None, epochs=10, metrics=("train_loss", "train_accuracy"), tensorboard=False,
              callbacks=None, verbose=1):
        """The seed framework's training call: ``classifier.train(dataset, loss=CrossEntropy(), epochs=10,
        metrics=["train_loss", "test_loss", "train_accuracy", "test_accuracy"], tensorboard=False, callbacks={})``.

        Trains on ``dataset.x_train`` in batches of ``dataset.batch_size``; "test_*" metrics are
        measured on the dataset's test rows after each epoch. Returns a History keyed by the
        metric names asked for, and prints each epoch's figures under those names. Callbacks
        see fit's logs (``loss``, ``val_loss``, ...).
        """
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        known = {}  # the seed's name -> fit's log key
        for m in metrics:
            split = m.split("_", 1) if isinstance(m, str) else []
            if len(split) != 2 or split[0] not in ("train", "test"):
                raise ValueError(f"metrics must be names 'train_<metric>' or 'test_<metric>' (train_loss, "
                                 f"test_accuracy, train_auc, ...), got {m!r}")
            known[m] = ("" if split[0] == "train" else "val_") + split[1]
        # Loss and metrics only: a second train() call continues with the optimizers' state, as
        # a second fit() does (compile would reset it).
        loss = losses.get(loss if loss is not None else (self.loss or "cross_entropy"))
        names = [k.split("_", 1)[1] for k in metrics]
        chosen = metrics_.canonical_names([n for n in names if n != "loss"], loss.classification, self.output_dim)
        for m in metrics:  # the logs use canonical names: 'test_acc' is logged as 'val_accuracy'
            prefix, name = m.split("_", 1)
            if name != "loss":
                name = metrics_.canonical_names([name], loss.classification, self.output_dim)[0]
            known[m] = ("" if prefix == "train" else "val_") + name
        self.loss, self.metrics = loss, chosen
        wants_test = any(m.startswith("test_") for m in metrics)
        if wants_test and len(dataset.x_test) == 0:
            raise ValueError("test metrics were asked for but the dataset has no test rows")
        callbacks = _callback_list(callbacks)
        if tensorboard:
            board = TensorBoard()
            callbacks.append(board)
            if verbose:
                print(f"TensorBoard logs: {os.path.abspath(board.log_dir)} (view with: tensorboard --logdir "
                      f"{board.log_dir})")
        history = self._checked_fit(dataset.x_train, dataset.y_train, epochs, dataset.batch_size,
                                    (dataset.x_test, dataset.y_test) if wants_test else None, 0.0, True, callbacks,
                                    verbose, 0, labels={key: m for m, key in known.items()})
        history.history = {m: history.history[known[m]] for m in metrics}
        return history

    # ---- inference ------------------------------------------------------------------------

    def predict(self, x, batch_size=None, verbose=0):
        """The last layer's output for every row of ``x`` (e.g. class probabilities after Softmax).

        Safe to call from several threads on one model (they take turns on its buffers)."""
        self._ensure_built()
        self._check_usable("predict")
        x = self._check_x(x, "x")
        batch_size = INFERENCE_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        with self._lock:
            return self._backend.predict(x, min(batch_size, x.shape[0]))

    def __call__(self, x, training=False):
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
        with self._lock:
            return self._backend.predict(x, max(1, x.shape[0]), training=True)

    def predict_classes(self, x, batch_size=None):
        """The most probable class of each row (threshold 0.5 for a single output)."""
        p = self.predict(x, batch_size)
        return (p[:, 0] > 0.5).astype(np.int64) if p.shape[1] == 1 else p.argmax(axis=1)

    def evaluate(self, x, y, batch_size=None, verbose=0, return_dict=False):
        """The loss on (x, y) (and accuracy: a list [loss, accuracy] when compiled with it).

        Under MPI every rank passes the same rows and batch_size and gets the same figures: each
        rank evaluates its share of the rows."""
        x, y, batch_size = distributed.agree(self._evaluate_inputs, x, y, batch_size)
        if distributed.world() is not None:
            # batch_size decides each rank's share of the rows, the metrics what is gathered.
            self._check_same_on_every_rank(batch_size=batch_size)
            distributed.check_same_data(x=x, y=y)
        logs = self._evaluate_arrays(x, y, batch_size)
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _evaluate_inputs(self, x, y, batch_size):
        self._require_compiled("evaluate")
        x, y = self._check_xy(x, y)
        self._check_usable("evaluate")
        batch_size = INFERENCE_BATCH_SIZE if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        return x, y, batch_size

    def _evaluate_arrays(self, x, y, batch_size=INFERENCE_BATCH_SIZE):
        self._check_usable("evaluate")
        with self._lock:
            return self._evaluate_locked(x, y, batch_size)

    def _evaluate_locked(self, x, y, batch_size):
        # Under MPI each rank takes whole batches of the ones that one process would evaluate, so
        # that the loss (a mean over batches, weighted by their rows, as Keras') is the same.
        batch_size = min(batch_size, x.shape[0])
        first, stop = distributed.share(-(-x.shape[0] // batch_size))  # all batches in one process
        lo, hi = first * batch_size, min(stop * batch_size, x.shape[0])
        x_part, y_part = x[lo:hi], y[lo:hi]
        total, correct = self._backend.evaluate(x_part, y_part, self.loss.code, batch_size) if hi > lo else (0.0, 0)
        total, correct = distributed.sum_over_ranks([total, correct])
        # Keras' evaluate reports the loss with the weight penalty, as fit logs it.
        penalty = self._backend.penalty()
        values = {"loss": float(total / x.shape[0] + penalty), "accuracy": float(correct / x.shape[0])}
        exact = [m for m in self.metrics if m != "accuracy"]
        if exact:  # exact over all rows, from the predictions
            pred = self._backend.predict(x_part, batch_size) if hi > lo else np.empty((0, self.output_dim), self.dtype)
            values.update(metrics_.from_predictions(exact, y, distributed.gather_rows(pred)))
        return {k: values[k] for k in self.log_names()}

    # ---- weights and description ----------------------------------------------------------

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self):
        """All parameters as [W1, b1, W2, b2, ...] (new arrays; W of shape (input_dim, output_dim))."""
        self._ensure_built()
        params = self._backend.host("params")
        return _split(params, [s for layer in self.layers for s in layer.weight_shapes()])

    def set_weights(self, weights):
        """Replace all parameters; ``weights`` as ``get_weights()`` returns them."""
        self._ensure_built()
        shapes = [s for layer in self.layers for s in layer.weight_shapes()]
        arrays = check_weight_list(weights, shapes, "weights", self.dtype)
        start = 0
        for layer in self.layers:
            n = len(layer.weight_shapes())
            layer.check_weights(arrays[start: start + n], f"weights[{start}:{start + n}]")
            start += n
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, self.dtype)
        with self._lock:
            self._backend.write("params", 0, flat)
        self._diverged = None

    def _layer_weights(self, layer):
        self._ensure_built()
        lo = self._spec.offset(layer)
        return _split(self._backend.host("params", lo, lo + layer.count_params()), layer.weight_shapes())

    def _set_layer_weights(self, layer, weights):
        self._ensure_built()
        arrays = check_weight_list(weights, layer.weight_shapes(), "weights", self.dtype)
        layer.check_weights(arrays, "weights")
        if arrays:
            self._backend.write("params", self._spec.offset(layer), np.concatenate([a.ravel() for a in arrays]))

    def layer_names(self):
        """Each layer's name as ``summary`` shows it: '<class in lower case>_<index>'."""
        return [f"{type(layer).__name__.lower()}_{i}" for i, layer in enumerate(self.layers)]

    def named_weights(self, gradients=False):
        """[(layer name, weight name, array)] of every parameter array; with ``gradients``,
        (layer name, weight name, array, gradient of the last training step) (zeros before any)."""
        self._ensure_built()
        params = self._backend.host("params")
        grads = self._backend.host("grads") if gradients else None
        out = []
        for name, layer in zip(self.layer_names(), self.layers):
            if isinstance(layer, Input):
                continue
            lo, n = self._spec.offset(layer), layer.count_params()
            arrays = _split(params[lo: lo + n], layer.weight_shapes())
            grad_arrays = _split(grads[lo: lo + n], layer.weight_shapes()) if gradients else []
            for j, (weight_name, array) in enumerate(zip(layer.weight_names(), arrays)):
                out.append((name, weight_name, array) + ((grad_arrays[j],) if gradients else ()))
        return out

    def learning_rate_now(self, optimizer=None):
        """The learning rate of ``optimizer``'s next step (default: the first optimizer's), a
        schedule evaluated at its step count (as Keras' ``optimizer.learning_rate``), or None for
        a model with no trained parameters."""
        self._ensure_built()
        owners = self._spec.slices.optimizers
        slices = [i for i, opt in enumerate(owners) if optimizer is None or opt is optimizer]
        if not slices:
            if optimizer is None:
                return None
            raise ValueError("optimizer updates none of this model's parameters")
        opt = owners[slices[0]]
        if isinstance(opt.learning_rate, LearningRateSchedule):
            return float(opt.learning_rate(int(self._backend.host("opt_steps")[slices[0]])))
        return float(opt.learning_rate)

    def summary(self, print_fn=print):
        """Print a table of layers, output widths and parameter counts (Keras' ``summary``)."""
        names = [f"{name} ({type(layer).__name__})" for name, layer in zip(self.layer_names(), self.layers)]
        width = max([28] + [len(n) + 2 for n in names])
        lines = [f'Model: "{self.name}" ({np.dtype(self.dtype).name}, {self.device})',
                 f"{'Layer (type)':<{width}}{'Output Shape':<16}{'Activation':<14}{'Param #':>10}"]
        for name, layer in zip(names, self.layers):
            act = type(layer.activation).__name__ if hasattr(layer, "activation") else ""
            lines.append(f"{name:<{width}}{str((None, layer.output_dim)):<16}{act:<14}{layer.count_params():>10,}")
        print_fn("\n".join(lines + self._parameter_totals()))

    def _parameter_totals(self):
        """``summary``'s last lines: total, trainable and non-trainable parameters."""
        trainable = sum(layer.count_trainable_params() for layer in self.layers)
        return [f"Total params: {self.count_params():,}", f"Trainable params: {trainable:,}",
                f"Non-trainable params: {self.count_params() - trainable:,}"]

    def to(self, device):
        """Move parameters and optimizer state to ``device`` ('cpu' or 'cuda'); returns self. The
        new backend runs what the old one ran (a functional ``Model``'s graph, the user layers'
        compiled functions). A model with user layers stays on the CPU: ``to('cuda')`` is a
        ValueError naming the layer, raised before anything moves, and the model stays usable."""
        backend = get_backend(device, self.dtype)
        self._check_device_runs_layers(device, f"the model stays on {self.device!r}")
        with self._lock:  # not while fit or predict runs on the old backend's buffers
            if self._backend is not None:
                backend.load(self._spec, self._backend.state())
                self._backend = backend
            self.device = device
        return self

    def get_config(self):
        """The architecture, loss, optimizers and metrics as JSON-able data, no weights: what
        ``from_config`` rebuilds. Optimizers shared by several layers appear once."""
        self._ensure_built()
        distinct = self.optimizers()
        if self.optimizer is not None and all(self.optimizer is not d for d in distinct):
            distinct.append(self.optimizer)
        index = {id(opt): i for i, opt in enumerate(distinct)}
        default = getattr(self, "_default_optimizer", None)
        layers = []
        for layer in self.layers:
            config = layer.get_config()
            if getattr(layer, "optimizer", None) is not None:
                config["optimizer"] = {"shared": index[id(layer.optimizer)]}
            layers.append({"class_name": class_name(type(layer)), "config": config})
        return {
            "model": {"name": self.name, "dtype": np.dtype(self.dtype).name, "seed": self.seed},
            "layers": layers,
            "optimizers": [{"class_name": class_name(type(o)), "config": o.get_config()} for o in distinct],
            "compile": None if self.loss is None else {
                "loss": {"class_name": class_name(type(self.loss)), "config": self.loss.get_config()},
                "optimizer": None if self.optimizer is None else index[id(self.optimizer)],
                "metrics": self.metrics,
            },
            # The Adam that serves layers with no optimizer of their own when compile named none.
            "default_optimizer": None if default is None else index.get(id(default)),
        }

    @classmethod
    def from_config(cls, config, device="cpu", build=True):
        """A new model (fresh weights) from ``get_config()``'s data; a ValueError names what is wrong.
        ``build=False`` leaves the weights unallocated (``load_model`` fills them from a file)."""
        try:
            optimizers_ = [deserialize(o) for o in config["optimizers"]]
            model = cls._from_layers(config, [_layer_from_spec(spec, optimizers_) for spec in config["layers"]],
                                     device)
            compiled = config["compile"]
            if compiled is not None:
                model.compile(loss=deserialize(compiled["loss"]),
                              optimizer=None if compiled["optimizer"] is None else optimizers_[compiled["optimizer"]],
                              metrics=compiled["metrics"])
            if config.get("default_optimizer") is not None:
                model._default_optimizer = optimizers_[config["default_optimizer"]]
                if not isinstance(model._default_optimizer, optimizers.Optimizer):
                    raise ValueError(f"default_optimizer names a {type(model._default_optimizer).__name__}")
            if build:
                model._ensure_built()
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed model config: {exc!r}") from None
        return model

    @classmethod
    def _from_layers(cls, config, layers, device):
        """``from_config``'s model from its deserialized layers: a stack, in order."""
        model = cls(seed=config["model"]["seed"], dtype=config["model"]["dtype"], device=device,
                    name=config["model"]["name"])
        for layer in layers:
            model.add(layer)
        return model

    def to_onnx(self, path, opset=17):
        """Export for inference as an ONNX file (``fastnn.onnx.export``; needs the onnx package)."""
        from .onnx import export
        return export(self, path, opset)

    def __reduce__(self):
        """Pickling (joblib, multiprocessing) goes through the same two pieces as ``save``: the
        config and the backend's training state, so that the unpickled model owns fresh, writable
        arrays on its device (a memory-mapped pickle would otherwise hand the kernels read-only
        ones). A Lambda's functions are named by their import path, as pickle names functions, and
        the unpickling process imports them: a model whose Lambda uses a nested function or a
        lambda, which have none, is a PicklingError naming the layer (``copy.deepcopy`` copies it)."""
        _check_functions_importable(self)
        if self._backend is None or not self._compute_layers():
            return _restore_unbuilt, (type(self), self._attributes())
        return _unpickle, (self.get_config(), self._backend.state(), self._rng.bit_generator.state, self.device)

    def __deepcopy__(self, memo):
        """A copy in memory, rebuilt as unpickling rebuilds it (config and training state) but
        with each Lambda's functions and each user layer's class the same objects as this
        model's (``copy.deepcopy`` never copies a function), so that any model copies, nested
        functions and lambdas included."""
        if self._backend is None or not self._compute_layers():
            twin = _restore_unbuilt(type(self), {})
            memo[id(self)] = twin  # before the layers are copied: their _model is the copy
            twin.__dict__.update(copy.deepcopy(self._attributes(), memo))
            return twin
        config = self.get_config()
        classes = {}
        for spec, layer in zip(config["layers"], self.layers):
            if isinstance(layer, Lambda):  # the functions themselves in place of their names
                spec["config"].update(forward=layer.forward, backward=layer.backward)
            elif layer.is_user_layer():
                if classes.setdefault(spec["class_name"], type(layer)) is not type(layer):
                    raise TypeError(f"cannot copy this model: two of its layer classes are named "
                                    f"{spec['class_name']!r}")
        with using_custom_objects(classes):
            return _rebuilt(config, self._backend.state(), self._rng.bit_generator.state, self.device)

    def _attributes(self):
        """What an unbuilt model is made of, without its locks (``_restore_unbuilt`` makes new ones)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_busy", "_lock")}

    def save(self, path):
        """Save architecture, weights and the whole training state to ``path`` (a NumPy .npz
        archive, no pickle; written atomically, see ``fastnn.saving``)."""
        self._check_usable("save")
        config = self.get_config()  # builds a model that was not built yet
        state = self._backend.state()
        check_state(state, state["params"].size, self._backend.opt_meta, self.dtype)  # what load_model checks
        # Where the shuffling stream stands, so that training resumed after loading draws the
        # same epoch orders as the model that was saved.
        config["model"]["rng_state"] = self._rng.bit_generator.state
        saving.write_model_file(path, config, state)

    def __repr__(self):
        return f"MLP(layers={self.layers!r}, dtype={np.dtype(self.dtype).name!r}, device={self.device!r})"


Sequential = MLP


def _restore_unbuilt(cls, attributes):
    model = cls.__new__(cls)
    model.__dict__.update(attributes)
    model._busy, model._lock = threading.Lock(), threading.RLock()
    return model


def _unpickle(config, state, rng_state, device):
    # Unpickling imports by name what it rebuilds (as pickle itself does for classes): a
    # Lambda's functions too. load_model never does (it takes custom_objects).
    with using_custom_objects({}, import_functions=True):
        return _rebuilt(config, state, rng_state, device)


def _rebuilt(config, state, rng_state, device):
    """A model from ``get_config()``'s data, the training state and the shuffling generator's state."""
    model = model_class(config).from_config(config, device)
    model._rng.bit_generator.state = rng_state
    model._backend.load_state({name: np.array(value) for name, value in state.items()})
    return model


def _check_functions_importable(model):
    """A PicklingError naming the first Lambda whose function the unpickling process could not
    import by its ``module:qualname``: a nested function, a lambda, or a name that now holds
    another object (pickle's own rule for functions)."""
    import importlib
    import pickle
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Lambda):
            continue
        for what in ("forward", "backward"):
            fn = getattr(layer, what)
            name = _function_name(fn)
            module, _, qualname = name.rpartition(":")
            if "<" in qualname:  # '<locals>' of a nested function, '<lambda>'
                why = "is a nested function or a lambda, which has no import path"
            else:
                try:
                    found = importlib.import_module(module)
                    for part in qualname.split("."):
                        found = getattr(found, part)
                except (ImportError, AttributeError):
                    found = None
                if found is fn or getattr(found, "py_func", None) is getattr(fn, "py_func", fn):
                    continue
                why = "cannot be imported by that name"
            raise pickle.PicklingError(
                f"cannot pickle this model: layer {i} (Lambda)'s {what} {qualname} {why}; pickling names a "
                "Lambda's functions by import path, as pickle names functions. Define it at the top level of a "
                "module to pickle the model; copy.deepcopy copies the model as it is")


def load_model(path, device="cpu", custom_objects=None):
    """Rebuild a model saved with ``model.save(path)``: architecture, weights and the whole
    training state, so that ``fit`` continues where the saved model stopped.

    ``custom_objects``: your own layer classes and Lambda functions, by name
    (``{"MyLayer": MyLayer, "my_forward": my_forward}``), as Keras': the file names them, it never
    holds code, and nothing is imported from it. A name of fastnn's (``"Dense"``, ``"Adam"``) is
    always fastnn's class; a class of yours is saved by its import path (``"mymodule:MyLayer"``) and
    found by it if it is defined in this process, or through ``custom_objects``."""
    with using_custom_objects(custom_objects):
        return _load_model(path, device)


def _load_model(path, device):
    where = saving.shown(path)
    with saving.ModelFile(path) as file:
        config = file.config
        try:
            model = model_class(config).from_config(config, device, build=False)
            # The sizes the config claims, checked against the file's headers before any array is
            # read or allocated: a small file must not make the loader build or decompress a huge model.
            n = model.count_params()
            missing = [name for name in STATE if name not in file.headers and name != "rng"]
            if missing:
                raise ValueError(f"{missing[0]} is missing")
            for name in ("params", "state1", "state2"):
                shape, dtype = file.headers[name]
                if shape != (n,) or dtype.kind != "f":
                    raise ValueError(f"{name} must be a float vector of {n} values to match the architecture, the "
                                     f"file holds {dtype} of shape {shape}")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where!r} holds a malformed model config: {exc!r}") from None
        except ValueError as exc:  # a constructor rejected a value: say which file it came from
            raise ValueError(f"{where!r} holds an invalid model config: {exc}") from None
        arrays = file.read_arrays()
    try:
        # Built from the file's weights: no random initialization to throw away.
        with np.errstate(over="ignore"):
            model._build(_split(arrays["params"].astype(model.dtype), [s for layer in model.layers
                                                                      for s in layer.weight_shapes()]))
        if config["model"].get("rng_state") is not None:
            model._rng.bit_generator.state = config["model"]["rng_state"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where!r} holds a malformed model config: {exc!r}") from None
    except ValueError as exc:
        raise ValueError(f"{where!r} holds an invalid model config: {exc}") from None
    # Files written before Dropout existed have no rng: the fresh model's is kept.
    state = {**model._backend.state(), **arrays}
    try:
        model._backend.load_state(state)
        for i, layer in enumerate(model._compute_layers()):
            layer.check_weights(model._layer_weights(layer), f"layer {i} ({type(layer).__name__})")
    except ValueError as exc:
        raise ValueError(f"{where!r}: {exc}") from None
    return model


def _probe_user_layers(layers, kernels, params):
    """Run each user layer's compiled wrappers once on two rows of random data, so that a function
    returning the wrong shape is a ValueError naming it now, not an error at the first batch."""
    rng = np.random.default_rng(0)
    for layer, (forward, backward) in zip(layers, kernels):
        x = rng.standard_normal((2, layer.input_dim)).astype(params.dtype)
        y = np.zeros((2, layer.output_dim), params.dtype)
        try:
            user_kernels.quietly(forward, x, params, y)
            dx = np.zeros_like(x)
            user_kernels.quietly(backward, x, params, y, np.ones_like(y), np.zeros_like(params), dx)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


def _layer_from_spec(spec, optimizers_):
    """A layer from its ``get_config`` entry; its optimizer, if any, one of the shared ``optimizers_``."""
    layer_config = dict(spec["config"])
    if isinstance(layer_config.get("optimizer"), dict):
        layer_config["optimizer"] = optimizers_[layer_config["optimizer"]["shared"]]
    layer = deserialize({"class_name": spec["class_name"], "config": layer_config})
    if not isinstance(layer, Layer):
        raise ValueError(f"{spec['class_name']!r} is not a layer")
    return layer


def model_class(config):
    """The class that rebuilds a saved config: ``MLP``, or the functional ``Model``."""
    name = config.get("model", {}).get("class_name", "MLP") if isinstance(config, dict) else "MLP"
    if name == "Model":
        from .functional import Model
        return Model
    if name != "MLP":
        raise ValueError(f"unknown model class in config: {name!r}")
    return MLP


def _default_optimizer(model):
    """Adam, the seed framework's default optimizer, created once per model."""
    if getattr(model, "_default_optimizer", None) is None:
        model._default_optimizer = optimizers.Adam()
    return model._default_optimizer


def _split(flat, shapes):
    out, pos = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        out.append(flat[pos: pos + n].reshape(shape).copy())
        pos += n
    return out


def _callback_list(callbacks):
    """Callbacks as a list; the seed framework passes a dict (``callbacks={}``)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, dict):
        callbacks = list(callbacks.values())
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be fastnn Callback objects, got {type(cb).__name__}")
    return callbacks


def _progress_bar(verbose, total):
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)


class Perceptron(MLP):
    """Rosenblatt's single-layer perceptron: Dense + Heaviside step, trained by the perceptron rule
    w += learning_rate (t - y) x, b += learning_rate (t - y) for each sample (batch_size=1),
    through the PerceptronCriterion loss and SGD. Targets are 0/1; weights start at zero."""

    def __init__(self, input_dim, output_dim=1, learning_rate=1.0, seed=None, dtype="float32"):
        from .activations import Heaviside
        from .layers import Dense
        super().__init__(seed=seed, dtype=dtype)
        self.add(Dense(input_dim, output_dim, activation=Heaviside(), optimizer=optimizers.SGD(learning_rate),
                       kernel_initializer="zeros"))
        self.compile(loss=losses.PerceptronCriterion(), metrics=["accuracy"])

    def fit(self, x, y, epochs=10, batch_size=1, **kwargs):
        return super().fit(x, y, epochs=epochs, batch_size=batch_size, **kwargs)
