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
from .callbacks import History, TerminateOnNaN, _Muted
from .compiled_metrics import CompiledMetrics
from .data.feed import ArrayFeed, StreamFeed, evaluate_sequence
from .fit_inputs import FitInputs
from .user_losses import check_device_runs_loss
from .validation import check_int

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


class Trainer(CompiledMetrics, FitInputs):
    """compile, fit and train_on_batch, on a ``Network``'s layers and backend (the compiled
    metrics' bookkeeping: ``compiled_metrics.CompiledMetrics``; the checks of their arguments:
    ``fit_inputs.FitInputs``)."""

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

def _progress_bar(verbose, total):
    if verbose != 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)

