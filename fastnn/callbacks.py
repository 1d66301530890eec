"""Callbacks, Keras-style: small objects whose hooks ``fit`` calls at the start and end of
training, of each epoch and (when a callback defines one) of each batch.

A callback that defines ``on_batch_end(batch, logs)`` makes ``fit`` return to Python after
every batch; otherwise a whole epoch runs inside one compiled call.
"""
import csv
import io
import math
import os
import tempfile
import warnings

import numpy as np

from .base import Configurable
from .validation import check_float, check_int


class Callback(Configurable):
    model = None
    # What fit tells its callbacks before training, as Keras' ``params``: "epochs", "steps" (batches
    # per epoch), "verbose" and, as Keras 2 gave it, "metrics" (the names each epoch's logs will have).
    params = {}
    # Under MPI only rank 0 runs a callback that writes files (fastnn.distributed).
    writes_files = False

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def wants_batches(self):
        """True when this callback has a per-batch hook (``on_batch_end(batch, logs)``)."""
        return hasattr(self, "on_batch_end")


class _Muted(Callback):
    """A callback that writes files, on a rank other than 0 under MPI: it does nothing, but asks
    for batches as the callback does, so that every rank calls the compiled loop in the same chunks."""

    def __init__(self, callback):
        self.callback = callback

    def wants_batches(self):
        return self.callback.wants_batches()

    def on_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """Records each epoch's logs; ``fit`` returns it. ``history`` maps a metric name to its per-epoch list."""

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def plot(self, path=None, metrics=None):
        """Training curves (the seed's Figure 8): one panel per metric (loss first), its training
        and validation (``val_``) values per epoch. ``metrics``: the names to draw (default: all
        logged); ``path``: also save the figure there (PNG, PDF, ... by its suffix), atomically
        (``fastnn.saving.atomic_write``). Returns the matplotlib Figure. Needs matplotlib
        (``pip install "fastnn[plot]"``)."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError('History.plot needs matplotlib: pip install "fastnn[plot]"') from None
        logged = [k for k in self.history if not k.startswith("val_")]
        names = logged if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
        for name in names:
            if name not in self.history and "val_" + name not in self.history:
                raise ValueError(f"metrics: {name!r} was not logged; logged: {sorted(self.history)}")
        if not names:
            raise ValueError("nothing to plot: the history is empty")
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names):
            for key, label in ((name, "training"), ("val_" + name, "validation")):
                if key in self.history:
                    ax.plot(epochs, self.history[key], marker="o", label=label)
            ax.set_title(name)
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.legend()
        fig.tight_layout()
        if path is not None:
            from .saving import atomic_write
            path = os.fspath(path)
            # Rendered into the atomic writer's file, whose name tells matplotlib nothing: the
            # format comes from the path's suffix here, and a path without one gets matplotlib's
            # default format appended, as savefig(path) does.
            fmt = os.path.splitext(path)[1][1:].lower()
            if not fmt:
                fmt = fig.canvas.get_default_filetype()
                path = path.rstrip(".") + "." + fmt
            atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=110))
        return fig

    def __repr__(self):
        return f"History({self.history!r})"


def _monitor_mode(monitor, mode):
    """``mode``, with "auto" resolved from the metric's name: "max" for the metrics where larger
    is better (accuracy, AUC, precision, recall, F1, ...; ``fastnn.metrics.HIGHER_IS_BETTER``),
    "min" for losses and errors. Keras' own "auto" guesses "min" for AUC (keras#15138)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    if mode == "auto":
        from .metrics import ALIASES, HIGHER_IS_BETTER
        name = monitor[4:] if monitor.startswith("val_") else monitor
        name = ALIASES.get(name, name)
        mode = "max" if name in HIGHER_IS_BETTER or "acc" in name else "min"
    return mode


def _is_fit_metric(name):
    """Whether ``name`` is a log key that only ``fit`` writes: 'loss' or a metric name (an alias
    included) of ``fastnn.metrics``, with or without ``val_``."""
    from .metrics import ALIASES, BINARY, CLASSIFICATION, REGRESSION
    name = name[4:] if name.startswith("val_") else name
    return name == "loss" or ALIASES.get(name, name) in CLASSIFICATION + BINARY + REGRESSION


class _Monitor(Callback):
    """What the callbacks that watch one logged metric share: the direction of improvement,
    and a warning (once, as Keras) when that metric is never logged."""

    def _setup_monitor(self, monitor, mode):
        self.monitor = monitor
        self.mode = mode
        self._sign = 1.0 if _monitor_mode(monitor, mode) == "min" else -1.0
        self._warned = False

    def on_train_begin(self, logs=None):
        # A metric name of fastnn's that this fit will not log is most likely a mistake (a metric
        # not compiled, or no validation data): said before the first epoch, not after it. Other
        # names may be logged by another callback, so they wait for the first epoch's logs.
        logged = self.params.get("metrics")
        if logged is not None and self.monitor not in logged and _is_fit_metric(self.monitor):
            self._warn(logged, " unless another callback adds it")

    def _warn(self, logged, unless=""):
        if not self._warned:
            warnings.warn(f"{type(self).__name__} monitors {self.monitor!r}, which is not among the logged "
                          f"metrics {sorted(logged)}; it does nothing{unless}", RuntimeWarning, stacklevel=3)
            self._warned = True

    def _monitored(self, logs):
        """``sign * logs[monitor]`` (smaller is better), or None, with a warning the first time,
        when the logs lack it."""
        logs = logs or {}
        if self.monitor not in logs:
            self._warn(logs)
            return None
        return self._sign * logs[self.monitor]


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (keras.callbacks.EarlyStopping). ``mode`` "auto" infers the direction from the name (see
    ``_monitor_mode``). ``baseline``: training stops unless the monitored value improves on it
    by more than ``min_delta`` within ``patience`` epochs.

    As in Keras, training stops at the end of the ``patience``-th consecutive epoch without
    improvement (patience 0 and 1 both stop at the first one).

    ``restore_best_weights``, as Keras 3: the weights of the epoch with the best monitored value
    are kept whether or not it beat ``baseline`` (the first epoch's when none is better), and
    are put back when training ends, stopped early or not; ``best_epoch`` names that epoch.
    The stopping rule under ``baseline`` is the one Keras 3 documents (its code also never stops
    on an epoch that improves on the best so far, which fastnn does not copy)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", baseline=None,
                 restore_best_weights=False):
        self._setup_monitor(monitor, mode)
        self.min_delta = check_float(min_delta, "min_delta", minimum=0.0)
        self.patience = check_int(patience, "patience", minimum=0)
        self.baseline = None if baseline is None else check_float(baseline, "baseline")
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = math.inf
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitored(logs)
        if value is None:
            return
        improved = value < self.best - self.min_delta
        if improved:
            self.best = value
        if improved or self.best_epoch is None:  # as Keras 3: the first epoch's weights until one improves
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
        # Patience starts over only when the baseline is beaten too.
        if improved and (self.baseline is None or value < self._sign * self.baseline - self.min_delta):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Set every optimizer's learning rate to ``schedule(epoch, lr)`` before each epoch
    (keras.callbacks.LearningRateScheduler). ``lr`` is the optimizer's current rate as a number:
    for a ``LearningRateSchedule``, its value at the optimizer's next step, as Keras passes it.
    The number returned then replaces the schedule (Keras 3 raises TypeError there instead)."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("schedule must be callable as schedule(epoch, lr)")
        self.schedule = schedule

    def get_config(self):
        return {}

    def on_epoch_begin(self, epoch, logs=None):
        for opt in self.model.optimizers():
            opt.learning_rate = check_float(self.schedule(epoch, self.model.learning_rate_now(opt)),
                                            "schedule(epoch, lr)", minimum=0.0)


class ReduceLROnPlateau(_Monitor):
    """Multiply every optimizer's learning rate by ``factor`` (not below ``min_lr``) once
    ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, then wait
    ``cooldown`` epochs before counting again (keras.callbacks.ReduceLROnPlateau, whose defaults
    these are). For optimizers whose ``learning_rate`` is a number; a schedule is left alone."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        self._setup_monitor(monitor, mode)
        self.factor = check_float(factor, "factor", minimum=0.0, maximum=1.0, min_inclusive=False,
                                  max_inclusive=False)
        self.patience = check_int(patience, "patience", minimum=0)
        self.verbose = check_int(verbose, "verbose", minimum=0)
        self.min_delta = check_float(min_delta, "min_delta", minimum=0.0)
        self.cooldown = check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_float(min_lr, "min_lr", minimum=0.0)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best = math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self._monitored(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            for opt in self.model.optimizers():
                if isinstance(opt.learning_rate, (int, float)) and opt.learning_rate > self.min_lr:
                    opt.learning_rate = max(opt.learning_rate * self.factor, self.min_lr)
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {opt.learning_rate}.")
            self.cooldown_counter, self.wait = self.cooldown, 0


class ModelCheckpoint(_Monitor):
    """Save the model to ``filepath`` (formatted with ``epoch`` and the logs) after each epoch,
    or only when ``monitor`` improves with ``save_best_only`` (``mode`` as ``EarlyStopping``'s).
    Each save is atomic (``fastnn.saving``): a crash never leaves a broken checkpoint."""
    writes_files = True

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath = str(filepath)
        self._setup_monitor(monitor, mode)
        self.save_best_only = bool(save_best_only)
        self.best = math.inf

    def on_train_begin(self, logs=None):
        if self.save_best_only:  # else the monitor is not read
            super().on_train_begin(logs)
        folder = os.path.dirname(os.path.abspath(self.filepath.format_map(_AnyLogs(epoch=1))))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise ValueError(f"ModelCheckpoint cannot write to {folder!r} (filepath {self.filepath!r})")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._monitored(logs)
            if value is None or not value < self.best:
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class _AnyLogs(dict):
    """Formats ``{val_loss:.2f}``-style fields of a file path before any logs exist."""

    def __missing__(self, key):
        return 0.0


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite (keras.callbacks.TerminateOnNaN),
    instead of ``fit`` raising FloatingPointError. The weights are those before the batch whose
    loss diverged: the compiled step checks the loss before it updates."""

    def get_config(self):
        return {}


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row to ``filename`` (a header of the metric names, then
    one row per epoch). The file is rewritten whole after each epoch through an atomic write
    (``fastnn.saving.atomic_write``): a crash never leaves a half-written row."""
    writes_files = True

    def __init__(self, filename, separator=","):
        self.filename = str(filename)
        self.separator = separator

    def on_train_begin(self, logs=None):
        self._keys = None
        self._rows = []
        self._write()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
        self._rows.append([epoch] + [logs.get(k, np.nan) for k in self._keys])
        self._write()

    def _write(self):
        from .saving import atomic_write
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=self.separator)
        if self._keys is not None:
            writer.writerow(["epoch"] + self._keys)
            writer.writerows(self._rows)
        atomic_write(self.filename, lambda f: f.write(text.getvalue().encode()))


class LambdaCallback(Callback):
    """Callbacks from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_batch_end=None):
        for name, fn in list(locals().items()):
            if name != "self" and fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name} must be callable")
                setattr(self, name, fn)

    def get_config(self):
        return {}


class TensorBoard(Callback):
    """Write what ``fit`` logs for TensorBoard, laid out as Keras writes it: ``log_dir/train`` and
    ``log_dir/validation``, one scalar per epoch named ``epoch_loss``, ``epoch_<metric>`` (the
    ``val_`` figures in ``validation/`` under the same names) and ``epoch_learning_rate``.
    ``histogram_freq`` N > 0: every N epochs, a histogram of each layer's weights
    (``<layer>/<weight>``) and of their last gradients (``<layer>/<weight>_gradient``).
    ``update_freq``: "epoch", or N to write the training loss (``batch_loss``) every N batches.

    Needs the optional ``tensorboardX`` writer: ``pip install "fastnn[tensorboard]"``; view with
    ``tensorboard --logdir <log_dir>``. A ``log_dir`` that cannot be written is a ValueError
    when training starts.

    The event files are the one thing fastnn writes without ``fastnn.saving.atomic_write``: they
    are append-only logs, written record by record by tensorboardX (each record carries its
    length and a checksum), so an interrupted run leaves a log that TensorBoard reads up to its
    last complete record."""
    writes_files = True

    def __init__(self, log_dir="logs", histogram_freq=0, update_freq="epoch"):
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = check_int(histogram_freq, "histogram_freq", minimum=0)
        if update_freq != "epoch":
            update_freq = check_int(update_freq, "update_freq (or 'epoch')", minimum=1)
        self.update_freq = update_freq
        self._writers = {}

    def get_config(self):
        return {"log_dir": self.log_dir, "histogram_freq": self.histogram_freq, "update_freq": self.update_freq}

    def wants_batches(self):
        return self.update_freq != "epoch"

    def _writer(self, part):
        if part not in self._writers:
            self._writers[part] = self._summary_writer(os.path.join(self.log_dir, part))
        return self._writers[part]

    def on_train_begin(self, logs=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError('the TensorBoard callback needs tensorboardX: pip install "fastnn[tensorboard]"') from None
        self._summary_writer = SummaryWriter
        for part in ("train", "validation"):
            folder = os.path.join(self.log_dir, part)
            try:
                os.makedirs(folder, exist_ok=True)
                with tempfile.TemporaryFile(dir=folder):
                    pass
            except OSError as exc:
                raise ValueError(f"TensorBoard cannot write to log_dir {self.log_dir!r}: {exc}") from None
        self._writers = {}
        self._seen_batches = 0
        self._writer("train")

    def on_batch_end(self, batch, logs=None):
        self._seen_batches += 1
        if self._seen_batches % self.update_freq == 0 and "loss" in (logs or {}):
            self._writer("train").add_scalar("batch_loss", logs["loss"], self._seen_batches)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            part, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(part).add_scalar("epoch_" + name, value, epoch)
        rate = self.model.learning_rate_now() if self.model is not None else None
        if rate is not None:
            self._writer("train").add_scalar("epoch_learning_rate", rate, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0 and self.model is not None:
            for layer_name, weight_name, weight, gradient in self.model.named_weights(gradients=True):
                tag = f"{layer_name}/{weight_name}"
                self._writer("train").add_histogram(tag, weight, epoch)
                self._writer("train").add_histogram(tag + "_gradient", gradient, epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
