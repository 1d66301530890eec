"""The arguments of ``fit`` and ``train_on_batch`` checked and put in the form the training loop
takes (Keras' data adapters' part): the model compiled and usable, ``x``/``y`` (arrays, a
``scipy.sparse`` matrix, a ``Sequence`` or an iterator of batches), the validation data or split,
the row weights from ``sample_weight``/``class_weight``, the callbacks. Every check runs here,
before ``fastnn.trainer`` hands anything to a backend: the kernels check no bounds.
"""
from __future__ import annotations

import warnings

import numpy as np

from . import distributed, losses
from .activations import Sigmoid, Softmax
from .callbacks import Callback
from .data import is_batch_source, is_sequence
from .data.feed import stream_inputs
from .layers import Dropout
from .sample_weights import check_sample_weight, row_weights
from .sparse_input import is_sparse
from .validation import check_float, check_int, check_targets


class FitInputs:
    """The checks of training's arguments, a mixin of ``fastnn.trainer.Trainer``."""

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
