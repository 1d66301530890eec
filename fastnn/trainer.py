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
from __future__ import annotations

import functools
import time
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import distributed, losses, optimizers, validation
from .activations import Sigmoid, Softmax
from .callbacks import Callback, History, TerminateOnNaN, _Muted
from .data import is_batch_source, is_sequence
from .data.feed import ArrayFeed, StreamFeed, evaluate_sequence, stream_inputs
from .layers import Dropout
from .sample_weights import check_sample_weight, row_weights
from .sparse_input import is_sparse
from .compiled_metrics import CompiledMetrics
from .user_losses import check_device_runs_loss
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

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11


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


class Trainer(CompiledMetrics):
    """compile, fit and train_on_batch, on a ``Network``'s layers and backend (the compiled
    metrics' bookkeeping: ``compiled_metrics.CompiledMetrics``)."""

    def compile(self, loss: Any = "cross_entropy", optimizer: Any = None, metrics: Sequence[str] | None = None) -> Self:
        """Set the loss, the default optimizer (for layers without their own) and the metrics that
        ``fit`` logs and ``evaluate`` returns, by name (``fastnn.metrics``): 'accuracy', 'auc',
        'pr_auc', 'precision', 'recall', 'f1', 'top_k_accuracy'; for one output column also 'tp',
        'fp', 'tn', 'fn', 'sensitivity', 'specificity'; for regression losses 'mae', 'mse', 'rmse',
        'r2', 'cosine_similarity'. Training figures are counted inside the compiled step over the
        epoch's batches (AUC over 200 score buckets, as Keras' thresholds); validation and
        ``evaluate`` figures are exact, from ``predict``'s output.

        ``loss``: a name, a ``Loss``, or a loss of your own (``fastnn.CustomLoss``). A metric may
        also be a function ``metric(y_true, y_pred) -> float`` of NumPy arrays (compiled with Numba;
        CPU only), logged under its ``__name__`` as Keras does: its figure is its mean over the
        batches weighted by their rows (Keras' for a stateless metric function), counted inside
        the compiled step in training (over the epoch's batches, as the other training figures)
        and from the predictions, batch by batch, for validation and ``evaluate``."""
        if self._busy.locked():  # a callback's compile would change the logs of the epochs still to come
            raise RuntimeError("compile: the model is training (fit or train_on_batch is running, here or in another "
                               "thread): its loss, optimizer and metrics cannot change until that returns")
        # Everything is checked before anything is set: a failed compile leaves the model as it was.
        loss = losses.get(loss)
        optimizer = None if optimizer is None else optimizers.get(optimizer)
        names, user_metrics, groups = self._resolve_metrics(metrics, loss)
        check_device_runs_loss(self.device, loss, user_metrics, f"this model is on {self.device!r}")
        self.loss, self.optimizer = loss, optimizer
        self.metrics, self._user_metrics, self._metric_groups = names, user_metrics, groups
        self._output_losses = loss.output_functions() if getattr(loss, "several_outputs", False) else ()
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
    def fit(self, x, y=None, epochs=1, batch_size=None, validation_data=None, validation_split=0.0, shuffle=True,
            callbacks=None, verbose=1, initial_epoch=0, validation_freq=1, steps_per_epoch=None,
            sample_weight=None, class_weight=None):
        """Train for ``epochs`` passes over (x, y); returns a ``History``.

        y: integer class labels (one-hot encoded for a multi-output model), one-hot rows, or
        targets of the output's width. The last batch of an epoch may be smaller. Loss and
        accuracy per epoch are averages over that epoch's batches weighted by their rows
        (Keras' convention); validation figures are computed after the epoch, every
        ``validation_freq`` epochs (Keras': after epochs validation_freq, 2 * validation_freq, ...).
        ``batch_size``: 32 by default.

        x may instead be a ``fastnn.data.Sequence`` (any object with ``__len__`` and
        ``__getitem__(i)`` returning ``(x, y)``), or a generator or iterator of ``(x, y)``
        batches; then y and batch_size are not given (the batches hold them), and the batches
        are read on a background thread while the step trains (see ``fastnn.data``).
        ``validation_data`` may be a Sequence too.

        ``steps_per_epoch``: batches per epoch. By default a pass over the arrays or the
        Sequence, or an iterator's batches until it ends. When given, each epoch trains that
        many batches and the next goes on where it stopped, as Keras 3: over arrays, their
        shuffled order runs on across epochs and is drawn anew when the rows run out; the end
        of the rows (or of a Sequence) ends that epoch early (with a warning), and the next
        starts a new pass. An endless generator needs it. An epoch in which an iterator yields
        no batch stops training, with a warning.

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
                                 verbose, initial_epoch, validation_freq=validation_freq,
                                 steps_per_epoch=steps_per_epoch, sample_weight=sample_weight,
                                 class_weight=class_weight)

    def _checked_fit(self, x, y, epochs, batch_size, validation_data, validation_split, shuffle, callbacks, verbose,
                     initial_epoch, labels=None, validation_freq=1, steps_per_epoch=None, sample_weight=None,
                     class_weight=None):
        """fit's work, for fit and train (their caller holds the training lock). ``labels`` maps log
        keys to the names the epoch lines print them under, in its order; when given, only those
        are printed."""
        (epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks, steps_per_epoch, w,
         w_val) = distributed.agree(self._fit_inputs, x, y, epochs, batch_size, validation_data, validation_split,
                                    verbose, initial_epoch, callbacks, steps_per_epoch, shuffle, sample_weight,
                                    class_weight)
        # Rows of a memory-mapped file read in a random order: each read maps its own page only.
        mapped = shuffle and not isinstance(x, StreamFeed) and validation.advise(x, "random")
        try:
            if not isinstance(x, StreamFeed):  # (a Sequence or generator is refused under MPI)
                distributed.begin_call(self, {"x": x, "y": y, **({} if x_val is None else {"validation x": x_val,
                                                                                          "validation y": y_val}),
                                              **({} if w is None else {"sample_weight": w})},
                                       epochs=epochs, batch_size=batch_size, initial_epoch=initial_epoch,
                                       shuffle=bool(shuffle), steps_per_epoch=steps_per_epoch,
                                       **{"validation rows": None if x_val is None else x_val.shape[0]})
            validation_freq = check_int(validation_freq, "validation_freq", minimum=1)
            with distributed.fail_together():
                return self._fit(x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch,
                                 labels, validation_freq, steps_per_epoch, w, w_val)
        finally:
            if isinstance(x, StreamFeed):
                x.close()
            if mapped:
                validation.advise(x, "normal")

    def _fit_inputs(self, x, y, epochs, batch_size, validation_data, validation_split, verbose, initial_epoch,
                    callbacks, steps_per_epoch=None, shuffle=True, sample_weight=None, class_weight=None):
        """fit's arguments checked: (epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, callbacks,
        steps_per_epoch, row weights or None, validation row weights or None); x a ``StreamFeed`` (and y
        None) for a Sequence or an iterator of batches."""
        self._require_compiled("fit")
        distributed.check_model(self)
        epochs = check_int(epochs, "epochs", minimum=0)
        streamed = is_batch_source(x)
        if streamed and batch_size is not None:
            raise ValueError("batch_size must be None when x is a Sequence or a generator: its batches set their size")
        batch_size = 32 if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        initial_epoch = check_int(initial_epoch, "initial_epoch", minimum=0)
        verbose = check_int(verbose, "verbose", minimum=0, maximum=2)
        validation_split = check_float(validation_split, "validation_split", minimum=0.0, maximum=1.0,
                                       max_inclusive=False)
        if steps_per_epoch is not None:
            steps_per_epoch = check_int(steps_per_epoch, "steps_per_epoch", minimum=1)
        if streamed:
            if sample_weight is not None or class_weight is not None:
                raise ValueError("sample_weight and class_weight go with arrays; a Sequence or generator gives no "
                                 "per-row weights to fit yet")
            x_val, y_val, w_val = (None, None, None) if validation_data is None else \
                self._validation_inputs(validation_data)
            # The first batch is read and checked here, before anything compiles or trains.
            x = stream_inputs(self, x, y, validation_split, steps_per_epoch, shuffle)
            return epochs, None, initial_epoch, verbose, x, None, x_val, y_val, _callback_list(callbacks), \
                steps_per_epoch, None, w_val
        if y is None:
            raise TypeError("y must be a numeric array, got None: fit takes targets y with arrays x (or a "
                            "Sequence or generator of (x, y) batches as x)")
        x, y = self._check_xy(x, y)
        self._check_sparse_training(x)
        w = self._row_weights(sample_weight, class_weight, y)
        w_val = None
        if validation_data is not None:
            x_val, y_val, w_val = self._validation_inputs(validation_data)
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
        return (epochs, batch_size, initial_epoch, verbose, x, y, x_val, y_val, _callback_list(callbacks),
                steps_per_epoch, w, w_val)

    def _validation_inputs(self, validation_data):
        """(x_val, y_val, row weights or None) checked, or (the Sequence, None, None)."""
        if is_sequence(validation_data):
            if len(validation_data) < 1:
                raise ValueError("validation_data is a Sequence of no batches: expected at least one")
            return validation_data, None, None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, val_sample_weight), "
                             "or a fastnn.data.Sequence")
        x_val, y_val = self._check_xy(*validation_data[:2], prefix="validation_data ")
        w_val = None
        if len(validation_data) == 3 and validation_data[2] is not None:
            w_val = self._weights_for_loss(check_sample_weight(validation_data[2], x_val.shape[0], self.dtype,
                                                               "validation_data's sample_weight"))
        return x_val, y_val, w_val

    def _fit(self, x, y, epochs, batch_size, x_val, y_val, shuffle, callbacks, verbose, initial_epoch, labels=None,
             validation_freq=1, steps_per_epoch=None, w=None, w_val=None):
        rank0 = distributed.rank() == 0
        show = verbose if rank0 else 0  # only rank 0 prints; chunks follow ``verbose`` on every rank alike
        callbacks = [cb if rank0 or not cb.writes_files else _Muted(cb) for cb in callbacks]
        history = History()
        # Last, as in Keras: History records what the other callbacks add to an epoch's logs.
        callbacks = callbacks + [history]
        for cb in callbacks:
            cb.set_model(self)

        if isinstance(x, StreamFeed):
            feed = x
        else:
            # As Keras: a batch larger than the data is the whole data, once.
            feed = ArrayFeed(self._backend.dataset(x, y), x.shape[0], min(batch_size, x.shape[0]), steps_per_epoch,
                             shuffle, self._rng)
        spec, counts = self._metric_counters()
        # Under MPI a rank that logs each batch sums its metric counters over the ranks at each
        # batch: if one rank does, all do.
        per_batch = distributed.any_rank(any(cb.wants_batches() for cb in callbacks))
        feed.start(self._batches_per_call(feed.batch_size, feed.steps or 2**40, per_batch, verbose), self._backend)
        bar = _progress_bar(show, feed.steps)

        if verbose or distributed.world() is not None:
            def compile_train():
                # Compiling is not training: done here, out of the first epoch's time and throughput
                # (under MPI rank 0 first, the others then loading its cache).
                if show and self._backend.will_compile():
                    print(self._backend.compile_notice, flush=True)
                c = feed.sample
                note = self._backend.compile_train(c.data, c.order, c.batch_size, 0, 1, self.loss.code,
                                                   self._opt_hyper(), c.batch_loss, c.batch_correct, spec, counts,
                                                   **self._user_metric_args(), **self._weights_arg(w))
                if note and show:
                    print(note, flush=True)
            distributed.rank_zero_first(compile_train)

        self.stop_training = False
        # Hooks get their logs positionally, as Keras passes them: a LambdaCallback's
        # functions take (logs) and (epoch, logs).
        logs = {}
        params = {"epochs": epochs, "steps": feed.steps, "verbose": verbose,
                  "metrics": self.log_names(validation=x_val is not None)}
        for cb in callbacks:
            cb.set_params(params)
            cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            hyper = self._opt_hyper()
            counts[:] = 0.0  # training metrics are over the epoch's batches, as Keras'
            if bar is not None:
                bar.reset()
                bar.set_description(f"Epoch {epoch + 1}/{epochs}")
            start = time.perf_counter()
            bad, done = -1, None
            for c in feed.epoch():
                bad = self._backend.train(c.data, c.order, c.batch_size, c.first, c.stop, self.loss.code, hyper,
                                          c.batch_loss, c.batch_correct, spec, counts, **self._user_metric_args(),
                                          **self._weights_arg(w))
                lo, first, stop = feed.first, c.offset + c.first, c.offset + c.stop
                if bad >= 0:
                    where = f"batch {c.offset + bad - lo + 1}: invalid loss {c.batch_loss[bad]}"
                    if any(isinstance(cb, TerminateOnNaN) for cb in callbacks):
                        print(f"Epoch {epoch + 1}, {where}, terminating training{self._after_divergence()}")
                        self.stop_training = True
                        break
                    raise FloatingPointError(
                        f"the loss became {c.batch_loss[bad]} at epoch {epoch + 1}, batch {c.offset + bad - lo + 1}: "
                        "training diverged (try a lower learning_rate, or check the data's scale)"
                        + self._after_divergence())
                done = stop
                if per_batch:
                    blogs = self._logs(feed.batch_loss[first:stop], feed.batch_correct[first:stop],
                                       feed.rows[first:stop], spec, counts, feed.rows[lo:stop].sum())
                    for cb in callbacks:
                        if cb.wants_batches():
                            cb.on_batch_end(first - lo, blogs)
                if bar is not None:
                    bar.update(stop - first)
            seconds = time.perf_counter() - start
            if self.stop_training and bad >= 0:  # TerminateOnNaN: no logs of a diverged epoch
                break
            if done is None:  # an iterator that had ended: as Keras, training stops
                warnings.warn(f"x ran out of batches at epoch {epoch + 1}: training stops there (a generator yields "
                              "its batches once: pass one that yields steps_per_epoch * epochs batches, or a "
                              "Sequence)", UserWarning, stacklevel=4)
                break
            feed.end_epoch()
            lo = feed.first
            rows = feed.rows[lo:done]
            logs = self._logs(feed.batch_loss[lo:done], feed.batch_correct[lo:done], rows, spec, counts, rows.sum())
            self._average_running_statistics()
            if x_val is not None and (epoch + 1) % validation_freq == 0:
                val = evaluate_sequence(self, x_val) if y_val is None else self._evaluate_arrays(x_val, y_val, weights=w_val)
                logs.update({"val_" + k: v for k, v in val.items()})
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            # A callback may stop one rank only (from its own clock or files): any rank stopping
            # stops all, or the others would wait forever in the next epoch's first allreduce.
            self.stop_training = distributed.any_rank(self.stop_training)
            if show:
                shown = labels or {key: key for key in logs}
                line = f"Epoch {epoch + 1}/{epochs} - {seconds:.2f}s - {rows.sum() / max(seconds, 1e-9):,.0f} " \
                       "samples/s - " + " - ".join(f"{name}: {logs[key]:.4f}" for key, name in shown.items()
                                                    if key in logs)
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
                                      **self._user_metric_args(), **self._weights_arg(w))
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
        return x, y, self._row_weights(sample_weight, class_weight, y)

    # scikit-learn's MLP objective (``fastnn.sklearn``): each batch's divided by its sum of weights,
    # not its rows (``kernels.table.SampleWeights``).
    _weights_over_their_sum = False

    def _row_weights(self, sample_weight, class_weight, y):
        """The loss weight of each row of ``y`` (None: unweighted) from ``sample_weight`` and
        ``class_weight``. With several outputs, as Keras 3: one ``sample_weight`` array weighs every
        output's loss, and ``class_weight`` is refused."""
        if getattr(self.loss, "several_outputs", False):
            if class_weight is not None:
                raise ValueError("class_weight weighs the classes of a model of one output (as Keras'); weigh the rows "
                                 "of a model of several outputs with sample_weight")
            if isinstance(sample_weight, dict) or (isinstance(sample_weight, (list, tuple))
                                                   and any(np.ndim(w) > 0 for w in sample_weight)):
                raise ValueError("sample_weight of a model of several outputs: one array of a weight per row, which "
                                 "weighs every output's loss (a weight array per output is not supported)")
        return self._weights_for_loss(row_weights(sample_weight, class_weight, y, self.dtype))

    def _weights_for_loss(self, w):
        """``w``, after checking that the loss takes row weights: a loss of your own (``CustomLoss``)
        gives its batch's value already reduced, which fastnn cannot weight per row."""
        if w is not None and getattr(self.loss, "several_outputs", False):
            return w
        if w is not None and getattr(self.loss, "kernels", None) is not None:
            raise ValueError(f"sample_weight and class_weight need a built-in loss: {self.loss.name} is a loss of "
                             "your own, whose value is already reduced over the batch (weight the rows inside it)")
        return w

    def _weights_arg(self, w):
        """The backend's ``weights`` argument: none at all when unweighted (a backend without
        weights support still trains unweighted models)."""
        if w is None:
            return {}
        return {"weights": (w, True) if self._weights_over_their_sum else w}


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

