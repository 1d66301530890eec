"""The callbacks that write ``fit``'s logs to files: ``CSVLogger`` and ``TensorBoard``."""
from __future__ import annotations

import csv
import io
import os
import tempfile

import numpy as np

from ..validation import check_int
from .callback import Callback


class CSVLogger(Callback):
    """Write each epoch's logs as a CSV row to ``filename`` (a header of the metric names, then
    one row per epoch). The file is rewritten whole after each epoch through an atomic write
    (``fastnn.saving.atomic_write``): a crash never leaves a half-written row."""
    writes_files = True

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",") -> None:
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
        from ..saving import atomic_write
        text = io.StringIO(newline="")
        writer = csv.writer(text, delimiter=self.separator)
        if self._keys is not None:
            writer.writerow(["epoch"] + self._keys)
            writer.writerows(self._rows)
        atomic_write(self.filename, lambda f: f.write(text.getvalue().encode()))


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

    def __init__(self, log_dir: str | os.PathLike[str] = "logs", histogram_freq: int = 0,
                 update_freq: str = "epoch") -> None:
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
