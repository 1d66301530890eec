"""The callbacks that watch one logged metric (``EarlyStopping``, ``ReduceLROnPlateau``,
``ModelCheckpoint``), and ``LearningRateScheduler``, which sets the learning rate each epoch."""
from __future__ import annotations

from typing import Callable

import math
import os
import warnings

from ..validation import check_float, check_int
from .callback import Callback


def _monitor_mode(monitor, mode):
    """``mode``, with "auto" resolved from the metric's name: "max" for the metrics where larger
    is better (accuracy, AUC, precision, recall, F1, ...; ``fastnn.metrics.HIGHER_IS_BETTER``),
    "min" for losses and errors. Keras' own "auto" guesses "min" for AUC (keras#15138)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    if mode == "auto":
        from ..metrics import ALIASES, HIGHER_IS_BETTER
        name = monitor[4:] if monitor.startswith("val_") else monitor
        name = ALIASES.get(name, name)
        mode = "max" if name in HIGHER_IS_BETTER or "acc" in name else "min"
    return mode


def _is_fit_metric(name):
    """Whether ``name`` is a log key that only ``fit`` writes: 'loss' or a metric name (an alias
    included) of ``fastnn.metrics``, with or without ``val_``."""
    from ..metrics import ALIASES, BINARY, CLASSIFICATION, REGRESSION
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

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 baseline: float | None = None, restore_best_weights: bool = False) -> None:
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

    def __init__(self, schedule: Callable[[int, float], float]) -> None:
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

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
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

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto") -> None:
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
