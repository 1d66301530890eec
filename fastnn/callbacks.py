"""Callbacks, Keras-style: small objects whose hooks ``fit`` calls at the start and end of
training, of each epoch and (when a callback defines one) of each batch.

A callback that defines ``on_batch_end(batch, logs)`` makes ``fit`` return to Python after
every batch; otherwise a whole epoch runs inside one compiled call.
"""
import csv
import math

import numpy as np

from .base import Configurable
from .validation import check_float, check_int


class Callback(Configurable):
    model = None

    def set_model(self, model):
        self.model = model

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


class History(Callback):
    """Records each epoch's logs; ``fit`` returns it. ``history`` maps a metric name to its per-epoch list."""

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History({self.history!r})"


def _monitor_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs
    (keras.callbacks.EarlyStopping); ``restore_best_weights`` puts back the best epoch's weights.

    As in Keras, training stops at the end of the ``patience``-th consecutive epoch without
    improvement (patience 0 and 1 both stop at the first one)."""

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False):
        self.monitor = monitor
        self.min_delta = check_float(min_delta, "min_delta", minimum=0.0)
        self.patience = check_int(patience, "patience", minimum=0)
        self.mode = mode
        self.restore_best_weights = bool(restore_best_weights)
        self._sign = 1.0 if _monitor_mode(monitor, mode) == "min" else -1.0

    def on_train_begin(self, logs=None):
        self.best = math.inf
        self.wait = 0
        self.stopped_epoch = None
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in (logs or {}):
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which is not among the logged "
                             f"metrics {sorted(logs or {})}")
        value = self._sign * logs[self.monitor]
        if value < self.best - self.min_delta:
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                self.model.set_weights(self.best_weights)


class LearningRateScheduler(Callback):
    """Set every optimizer's learning rate to ``schedule(epoch, lr)`` before each epoch."""

    def __init__(self, schedule):
        if not callable(schedule):
            raise TypeError("schedule must be callable as schedule(epoch, lr)")
        self.schedule = schedule

    def get_config(self):
        return {}

    def on_epoch_begin(self, epoch, logs=None):
        for opt in self.model.optimizers():
            opt.learning_rate = check_float(self.schedule(epoch, opt.learning_rate), "schedule(epoch, lr)",
                                            minimum=0.0)


class ReduceLROnPlateau(Callback):
    """Multiply every optimizer's learning rate by ``factor`` (not below ``min_lr``) once
    ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs, then wait
    ``cooldown`` epochs before counting again (keras.callbacks.ReduceLROnPlateau, whose defaults
    these are). For optimizers whose ``learning_rate`` is a number; a schedule is left alone."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        self.monitor = monitor
        self.factor = check_float(factor, "factor", minimum=0.0, maximum=1.0, min_inclusive=False,
                                  max_inclusive=False)
        self.patience = check_int(patience, "patience", minimum=0)
        self.verbose = check_int(verbose, "verbose", minimum=0)
        self.mode = mode
        self.min_delta = check_float(min_delta, "min_delta", minimum=0.0)
        self.cooldown = check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_float(min_lr, "min_lr", minimum=0.0)
        self._sign = 1.0 if _monitor_mode(monitor, mode) == "min" else -1.0

    def on_train_begin(self, logs=None):
        self.best = math.inf
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor not in (logs or {}):
            raise ValueError(f"ReduceLROnPlateau monitors {self.monitor!r}, which is not among the logged "
                             f"metrics {sorted(logs or {})}")
        value = self._sign * logs[self.monitor]
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


class ModelCheckpoint(Callback):
    """Save the model to ``filepath`` (formatted with ``epoch`` and the logs) after each epoch,
    or only when ``monitor`` improves with ``save_best_only``."""

    def __init__(self, filepath, monitor="val_loss", save_best_only=False, mode="auto"):
        self.filepath = str(filepath)
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = mode
        self._sign = 1.0 if _monitor_mode(monitor, mode) == "min" else -1.0
        self.best = math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            if self.monitor not in logs:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, not among {sorted(logs)}")
            value = self._sign * logs[self.monitor]
            if not value < self.best:
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class CSVLogger(Callback):
    """Append each epoch's logs as a CSV row to ``filename``."""

    def __init__(self, filename, separator=","):
        self.filename = str(filename)
        self.separator = separator

    def on_train_begin(self, logs=None):
        self._keys = None
        open(self.filename, "w").close()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with open(self.filename, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._keys is None:
                self._keys = sorted(logs)
                writer.writerow(["epoch"] + self._keys)
            writer.writerow([epoch] + [logs.get(k, np.nan) for k in self._keys])


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
    """Write each epoch's logs as TensorBoard scalars to ``log_dir`` (needs the optional
    ``tensorboardX`` package: ``pip install fastnn[tensorboard]``)."""

    def __init__(self, log_dir="logs"):
        self.log_dir = str(log_dir)

    def on_train_begin(self, logs=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoard logging needs tensorboardX: pip install tensorboardX") from None
        self._writer = SummaryWriter(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self._writer.add_scalar(key, value, epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        self._writer.close()
