"""The base ``Callback`` (the hooks ``fit`` calls), ``History`` (which ``fit`` returns), and the
two callbacks of no state: ``LambdaCallback`` and ``TerminateOnNaN``."""
from __future__ import annotations

from typing import Any, Callable

import os

from ..base import Configurable


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
            from ..saving import atomic_write
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


class LambdaCallback(Callback):
    """Callbacks from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None, on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None, on_train_end: Callable[..., Any] | None = None,
                 on_batch_end: Callable[..., Any] | None = None) -> None:
        for name, fn in list(locals().items()):
            if name != "self" and fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name} must be callable")
                setattr(self, name, fn)

    def get_config(self):
        return {}


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or infinite (keras.callbacks.TerminateOnNaN),
    instead of ``fit`` raising FloatingPointError. The weights are those before the batch whose
    loss diverged: the compiled step checks the loss before it updates."""

    def get_config(self):
        return {}
