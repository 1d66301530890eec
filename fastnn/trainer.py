"""The training loop: ``compile``, ``fit`` and ``train_on_batch`` (Keras' ``Trainer``), mixed
into every model (``fastnn.network.Network``); ``predict`` and ``evaluate``, which ``fit``'s
validation calls, are ``fastnn.inference``'s.

Data path of ``fit`` (all of it, in this file, top to bottom): validate ``x``/``y`` once
(``fastnn.validation``) -> lay the parameters out in one flat buffer and hand it to a
backend (the model's ``_build``) -> per epoch, shuffle an index array in place and call
``backend.train`` once (or once per chunk of batches when a callback or the progress bar
wants to see them, or when one call would run for more than a fraction of a second, which
Ctrl-C could not stop) -> that runs ``fastnn.kernels.network.train_batches``. For every
batch it gathers, runs the forward pass (Dropout active), the loss, the backward pass, the weight
penalty, clipping, the learning-rate schedule and the optimizer step, with no Python in between
and no allocation -> per-epoch logs, validation, callbacks.

Under MPI the same path runs on every rank; what differs is in ``fastnn.distributed``: the
checks that the ranks agree and rank 0's state sent to all (``begin_call``), rank 0 compiling
first (``rank_zero_first``), and the sums over the ranks (``any_rank``, ``sum_over_ranks``,
``share``/``gather_rows``), each a no-op in one process.
"""
import functools
import time
import warnings

import numpy as np

from . import distributed, losses, optimizers
from . import metrics as metrics_
from .activations import Sigmoid, Softmax
from .callbacks import Callback, History, TerminateOnNaN, _Muted
from .layers import Dropout
from .sample_weights import check_sample_weight, row_weights
from .sparse_input import is_sparse
from .validation import check_float, check_int, check_targets

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


class Trainer:
    """compile, fit and train_on_batch, on a ``Network``'s layers and backend."""

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
            if self._frozen_changed():  # layers frozen or thawed: new optimizer slices and tables
                with self._lock:
                    self._build(self.get_weights())
            else:
                self._configure_optimizers()
        return self

    def _frozen_changed(self):
        """Whether a layer's ``trainable`` changed since the network was built or compiled."""
        return tuple(not layer.trainable for layer in self._compute_layers()) != self._spec.frozen

    # ---- checks -------------------------------------------------------------------------------

    def _check_xy(self, x, y, prefix=""):
        x = self._check_x(x, prefix + "x")
        y = check_targets(y, prefix + "y", x.shape[0], self.output_dim, dtype=self.dtype,
                          one_hot_labels=self.output_dim > 1, unit_interval=self.loss.unit_interval, writable=False)
        return x, y

    def _check_sparse_training(self, x):
        if is_sparse(x) and self._backend.name != "cpu":
            raise TypeError(f"x is a scipy.sparse matrix: training on sparse input runs on the CPU only, this model is "
                            f"on {self._backend.name!r}; pass a dense array (x.toarray()) or train on the CPU")

    def _require_compiled(self, what):
        if self.loss is None:
            raise ValueError(f"call compile(loss=...) before {what}")
        self._ensure_built()
        if what in ("fit", "train_on_batch") and self._frozen_changed():
            warnings.warn("a layer's trainable changed since compile: call compile() again for it to take effect "
                          "(until then the model trains as compiled)", UserWarning, stacklevel=4)
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
            callbacks=None, verbose=1, initial_epoch=0, validation_freq=1, sample_weight=None, class_weight=None):
        """Train for ``epochs`` passes over (x, y); returns a ``History``.

        y: integer class labels (one-hot encoded for a multi-output model), one-hot rows, or
        targets of the output's width. The last batch of an epoch may be smaller. Loss and
        accuracy per epoch are averages over that epoch's batches weighted by their rows
        (Keras' convention); validation figures are computed after the epoch, every
        ``validation_freq`` epochs (Keras': after epochs validation_freq, 2 * validation_freq, ...).

        Under MPI (``fastnn.distributed.init()``), ``batch_size`` is the global batch and every
        rank passes the same full arrays; see ``fastnn.distributed``.

        ``sample_weight``: one non-negative weight per row of x; ``class_weight``: a dict
        {class index: weight} (a row's class: the argmax of its target row, or its rounded target
        for one output column; a class not in the dict weighs 1). Not both at once (Keras 3). A
        batch's loss is then sum_i w_i l_i / batch rows (Keras' ``sum_over_batch_size``; l_i the
        row's loss, its mean over columns for an element-wise loss), and so are its gradients; the
        logged metrics (accuracy, ...) stay unweighted, as Keras' ``metrics``.
        ``validation_data`` may be (x_val, y_val, val_sample_weight), which weights the validation loss.
        """
        return self._checked_fit(x, y, epochs, batch_size, validation_data, validation_split, shuffle, callbacks,
                                 verbose, initial_epoch, validation_freq=validation_freq, sample_weight=sample_weight,
                                 class_weight=class_weight)

    def _checked_fit(self, x, y, epochs, batch_size, validation_data, validation_split, shuffle, callbacks, verbose,
                     initial_epoch, labels=None, validation_freq=1, sample_weight=None, class_weight=None):
        """fit's work, for fit and train (their caller holds the training lock). ``labels`` maps log
        keys to the names the epoch lines print them under, in its order; when given, only those
        are printed."""
        epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks, w, w_val = distributed.agree(
            self._fit_inputs, x, y, epochs, batch_size, validation_data, validation_split, verbose, initial_epoch,
            callbacks, sample_weight, class_weight)
        distributed.begin_call(self, {"x": x, "y": y, **({} if x_val is None else {"validation x": x_val,
                                                                                  "validation y": y_val}),
                                              **({} if w is None else {"sample_weight": w})},
                               epochs=epochs, batch_size=batch_size, initial_epoch=initial_epoch, shuffle=bool(shuffle),
                               **{"validation rows": None if x_val is None else x_val.shape[0]})
        validation_freq = check_int(validation_freq, "validation_freq", minimum=1)
        with distributed.fail_together():
            return self._fit(x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch,
                             labels, validation_freq, w, w_val)

    def _fit_inputs(self, x, y, epochs, batch_size, validation_data, validation_split, verbose, initial_epoch,
                    callbacks, sample_weight=None, class_weight=None):
        """fit's arguments checked: (epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks,
        row weights or None, validation row weights or None)."""
        self._require_compiled("fit")
        distributed.check_model(self)
        epochs = check_int(epochs, "epochs", minimum=0)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
        verbose = check_int(verbose, "verbose", minimum=0, maximum=2)
        validation_split = check_float(validation_split, "validation_split", minimum=0.0, maximum=1.0,
                                       max_inclusive=False)
        x, y = self._check_xy(x, y)
        self._check_sparse_training(x)
        w = row_weights(sample_weight, class_weight, y, self.dtype)
        w_val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, val_sample_weight)")
            x_val, y_val = self._check_xy(*validation_data[:2], prefix="validation_data ")
            if len(validation_data) == 3 and validation_data[2] is not None:
                w_val = check_sample_weight(validation_data[2], x_val.shape[0], self.dtype,
                                            "validation_data's sample_weight")
        elif validation_split > 0:
            cut = x.shape[0] - int(x.shape[0] * validation_split)
            if cut in (0, x.shape[0]):
                raise ValueError(f"validation_split={validation_split} leaves an empty training or validation set "
                                 f"of {x.shape[0]} rows")
            x, x_val, y, y_val = x[:cut], x[cut:], y[:cut], y[cut:]
            if w is not None:  # as Keras: the validation rows keep their weights
                w, w_val = w[:cut], w[cut:]
        else:
            x_val = y_val = None
        return epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, _callback_list(callbacks), w, w_val

    def _fit(self, x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch, labels=None,
             validation_freq=1, w=None, w_val=None):
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
            def compile_train():
                # Compiling is not training: done here, out of the first epoch's time and throughput
                # (under MPI rank 0 first, the others then loading its cache).
                if show and self._backend.will_compile():
                    print(self._backend.compile_notice, flush=True)
                note = self._backend.compile_train(data, order, batch_size, 0, 1, self.loss.code,
                                                   self._opt_hyper(), batch_loss, batch_correct, spec, counts,
                                                   *self._weights_arg(w))
                if note and show:
                    print(note, flush=True)
            distributed.rank_zero_first(compile_train)

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
                                          batch_loss, batch_correct, spec, counts, *self._weights_arg(w))
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
            if x_val is not None and (epoch + 1) % validation_freq == 0:
                val = self._evaluate_arrays(x_val, y_val, weights=w_val)
                logs.update({"val_" + k: v for k, v in val.items()})
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            # A callback may stop one rank only (from its own clock or files): any rank stopping
            # stops all, or the others would wait forever in the next epoch's first allreduce.
            self.stop_training = distributed.any_rank(self.stop_training)
            if show:
                shown = labels or {key: key for key in logs}
                line = f"Epoch {epoch + 1}/{epochs} - {seconds:.2f}s - {n / max(seconds, 1e-9):,.0f} samples/s - " \
                       + " - ".join(f"{name}: {logs[key]:.4f}" for key, name in shown.items() if key in logs)
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
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None):
        """One optimizer step on exactly these rows; returns the loss before the step
        (and the accuracy, as a list, when compiled with metrics=['accuracy']).
        ``sample_weight``, ``class_weight``: as ``fit``'s.

        Under MPI the rows are the global batch, the same on every rank (see ``fit``)."""
        x, y, w = distributed.agree(self._train_on_batch_inputs, x, y, sample_weight, class_weight)
        distributed.begin_call(self, {"x": x, "y": y})
        n = x.shape[0]
        batch_loss, batch_correct = np.zeros(1), np.zeros(1, dtype=np.int64)
        spec, counts = self._metric_counters()
        with distributed.fail_together():
            bad = self._backend.train(self._backend.dataset(x, y), np.arange(n, dtype=np.int64), n, 0, 1,
                                      self.loss.code, self._opt_hyper(), batch_loss, batch_correct, spec, counts,
                                      *self._weights_arg(w))
            if bad >= 0:
                raise FloatingPointError(f"the loss is {batch_loss[0]}: training diverged" + self._after_divergence())
            logs = self._logs(batch_loss, batch_correct, np.array([float(n)]), spec, counts, float(n))
            self._average_running_statistics()
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    def _train_on_batch_inputs(self, x, y, sample_weight=None, class_weight=None):
        self._require_compiled("train_on_batch")
        distributed.check_model(self)
        x, y = self._check_xy(x, y)
        self._check_sparse_training(x)
        return x, y, row_weights(sample_weight, class_weight, y, self.dtype)

    # scikit-learn's MLP objective (``fastnn.sklearn``): each batch's divided by its sum of weights,
    # not its rows (``kernels.table.SampleWeights``).
    _weights_over_their_sum = False

    def _weights_arg(self, w):
        """The backend's ``weights`` argument: none at all when unweighted (a backend without
        weights support still trains unweighted models)."""
        if w is None:
            return ()
        return ((w, True),) if self._weights_over_their_sum else (w,)


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
