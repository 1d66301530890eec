"""Loss functions. Each object names a kernel pair in ``fastnn.kernels.losses`` (its ``code``).

Reductions follow PyTorch where it has the loss (mean over all elements for MSE/MAE/BCE,
mean over rows for cross-entropy), Keras otherwise; each docstring says which function the
value equals. ``loss(pred, target)`` returns the value, ``loss.gradient(pred, target)`` the
gradient with respect to ``pred``.
"""
import numpy as np

from .base import Configurable, resolve
from .kernels import losses as K
from .validation import check_features, check_float, check_int, check_targets


class Loss(Configurable):
    """Base class. ``takes_labels``: 1-D integer targets are class indices, one-hot encoded.
    ``unit_interval``: targets must lie in [0, 1]."""
    code = K.MSE
    classification = False  # whether classification metrics (accuracy, AUC, ...) fit its models
    takes_labels = False
    unit_interval = False

    def _arrays(self, pred, target):
        pred = np.asarray(pred)
        dtype = pred.dtype if pred.dtype in (np.float32, np.float64) else np.float64
        pred = check_features(pred.reshape(-1, 1) if pred.ndim == 1 else pred, "pred", dtype=dtype)
        target = check_targets(target, "target", pred.shape[0], pred.shape[1], dtype=dtype,
                               one_hot_labels=self.takes_labels, unit_interval=self.unit_interval)
        return pred, target

    def __call__(self, pred, target):
        """The loss value (a Python float) of predictions ``pred`` against ``target``."""
        pred, target = self._arrays(pred, target)
        return float(K.loss_forward(self.code, pred, target))

    def gradient(self, pred, target):
        """dL/dpred, an array of pred's shape (2-D)."""
        pred, target = self._arrays(pred, target)
        out = np.empty_like(pred)
        K.loss_backward(self.code, out, pred, target)
        return out


class MSE(Loss):
    """Mean squared error, mean over all elements: torch.nn.MSELoss()."""
    code = K.MSE


class SSE(Loss):
    """Sum of squared errors over all elements: torch.nn.MSELoss(reduction='sum')."""
    code = K.SSE


class MAE(Loss):
    """Mean absolute error: torch.nn.L1Loss()."""
    code = K.MAE


class MAPE(Loss):
    """Mean absolute percentage error, 100 * mean(|t - p| / max(|t|, 1e-7)): keras.losses.MeanAbsolutePercentageError."""
    code = K.MAPE


class MSLE(Loss):
    """Mean squared logarithmic error (inputs clamped at 1e-7): keras.losses.MeanSquaredLogarithmicError."""
    code = K.MSLE


class CosineSimilarity(Loss):
    """Negative mean cosine similarity of rows: keras.losses.CosineSimilarity (values in [-1, 1])."""
    code = K.COSINE_SIMILARITY


class CrossEntropy(Loss):
    """Categorical cross-entropy, mean over rows, of probabilities against one-hot (or
    probability) targets or integer class labels.

    After a Softmax layer it equals torch.nn.CrossEntropyLoss() on the logits, and the
    gradient is computed fused, as (p - y) / batch.
    """
    code = K.CROSS_ENTROPY
    classification = True
    takes_labels = True


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy of probabilities, mean over all elements: torch.nn.BCELoss().
    Targets must lie in [0, 1]; after a Sigmoid layer the gradient is fused as (p - y) / N."""
    code = K.BINARY_CROSS_ENTROPY
    classification = True
    unit_interval = True


class KLDivergence(Loss):
    """Kullback-Leibler divergence sum t log(t / p), mean over rows, both clipped to [1e-7, 1]:
    keras.losses.KLDivergence."""
    code = K.KL_DIVERGENCE
    classification = True
    takes_labels = True


class PerceptronCriterion(Loss):
    """The perceptron's rule as a loss: value = fraction of wrong 0/1 outputs; gradient =
    pred - target summed over the batch, so SGD through a Heaviside layer performs
    Rosenblatt's update w += lr (t - y) x."""
    code = K.PERCEPTRON
    classification = True
    unit_interval = True


class CustomLoss(Loss):
    """A loss of your own: ``value(y_true, y_pred) -> float``, the batch's loss already reduced
    (a mean over rows, as the built-in losses), and ``gradient(y_true, y_pred) -> dL/dy_pred``,
    an array of y_pred's shape; both on 2-D arrays (rows by outputs), written with NumPy
    operations, compiled with Numba and run inside the compiled step.

    Why two functions: Keras takes ``loss=fn(y_true, y_pred)`` and differentiates it, PyTorch
    writes a loss as a ``torch.autograd.Function`` with ``forward`` and ``backward``; fastnn has
    no automatic differentiation, so it takes the PyTorch form, with Keras' argument order. As
    with ``Lambda`` the functions are plain functions rather than methods: Numba compiles
    functions, and a saved model names them (``module:qualname``), restored through
    ``load_model(..., custom_objects={"my_value": my_value, "my_gradient": my_gradient})``.

    ``name``: the loss's name in errors (default: the value function's). ``classification``:
    whether classification metrics (accuracy, AUC, ...) fit its models. Under MPI the value is
    taken as a mean over rows. The gradient goes through the last layer's activation by the chain
    rule (never the fused softmax/cross-entropy formula of ``CrossEntropy``). CPU only.
    ``loss(pred, target)`` and ``loss.gradient(pred, target)`` call the functions as written
    (Python), in the argument order of fastnn's other losses.
    """

    def __init__(self, value, gradient, name=None, classification=False):
        from .layers.user import custom_function
        value = custom_function(value, "value", owner="CustomLoss")
        gradient = custom_function(gradient, "gradient", owner="CustomLoss")
        for fn, what in ((value, "value"), (gradient, "gradient")):
            if not callable(fn):
                raise TypeError(f"CustomLoss's {what} must be a function of (y_true, y_pred), got {fn!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"CustomLoss's name must be a str, got {type(name).__name__}")
        self.value, self.gradient_function = value, gradient
        self.name = name or getattr(getattr(value, "py_func", value), "__name__", "custom_loss")
        self.classification = bool(classification)
        self._probed = set()

    @property
    def code(self):
        from .user_losses import USER_LOSS, LossCode
        return LossCode(USER_LOSS, self)

    def get_config(self):
        from .layers.base import _function_name
        return {"value": _function_name(self.value), "gradient": _function_name(self.gradient_function),
                "name": self.name, "classification": self.classification}

    def kernels(self, dtype, n_out):
        """The compiled wrappers (``fastnn.user_losses``) for arrays of ``dtype`` and ``n_out`` columns."""
        from .user_losses import probe_loss, user_loss_kernels
        dtype = np.dtype(dtype)
        compiled = user_loss_kernels(self.value, self.gradient_function, dtype, self.name)
        if (dtype, n_out) not in self._probed:
            probe_loss(compiled, n_out, dtype)
            self._probed.add((dtype, n_out))
        return compiled

    def __call__(self, pred, target):
        pred, target = self._arrays(pred, target)
        return float(self.value(target, pred))

    def gradient(self, pred, target):
        pred, target = self._arrays(pred, target)
        out = np.asarray(self.gradient_function(target, pred))
        if out.shape != pred.shape:
            raise ValueError(f"loss {self.name}: gradient returned shape {out.shape}, y_pred's is {pred.shape}")
        return out


class OutputLosses(Loss):
    """The loss of a functional ``Model`` of several outputs (``Model.compile`` builds it from
    Keras' ``loss`` and ``loss_weights``): ``losses[i]``, a built-in loss, on output i, whose
    predictions and targets are columns [sum(widths[:i]), sum(widths[:i + 1])) of the model's
    outputs side by side; the value is sum_i weights[i] * losses[i], each output's loss a mean
    over the batch as that loss's own, and so is its gradient. ``names``: the outputs' names,
    which the logs give each output's loss (``<name>_loss``).

    The formulas are the built-in losses' kernels (``kernels/losses.py``) on each output's
    columns: on the CPU compiled into one value and one gradient function of the outputs side by
    side (``fastnn.user_losses.output_loss_kernels``), which the compiled step takes as it takes a
    loss of your own; on CUDA their device twins in one kernel (``cuda.losses.outputs_loss``).
    Neither fuses the gradient with the output's activation (softmax with cross-entropy goes
    through the softmax's derivative, as any other loss would)."""
    classification = False
    several_outputs = True

    def __init__(self, losses, weights, names, widths):
        if not isinstance(losses, (list, tuple)) or not losses:
            raise TypeError("OutputLosses' losses must be a list of losses, one per output")
        self.losses = [get(lo) for lo in losses]
        n = len(self.losses)
        for what, value in (("weights", weights), ("names", names), ("widths", widths)):
            if not isinstance(value, (list, tuple)) or len(value) != n:
                raise ValueError(f"OutputLosses' {what} must be a list of {n} entries, one per loss")
        for i, lo in enumerate(self.losses):
            if getattr(lo, "kernels", None) is not None or isinstance(lo, OutputLosses):
                raise ValueError(f"loss[{i}]: {lo.name if hasattr(lo, 'name') else lo!r} is a loss of your own; the "
                                 "losses of several outputs are built-in ones")
        self.weights = [check_float(w, f"loss_weights[{i}]", minimum=0.0) for i, w in enumerate(weights)]
        self.names = [str(name) for name in names]
        self.widths = [check_int(w, f"OutputLosses' widths[{i}]", minimum=1) for i, w in enumerate(widths)]
        self.name = "the outputs' losses"
        self.unit_interval = False  # each output's targets are checked against its own loss

    @property
    def code(self):
        from .user_losses import USER_LOSS, LossCode
        return LossCode(USER_LOSS, self)

    def _blocks(self):
        """(loss code, weight, first column, stop column) of each output."""
        ends = np.cumsum(self.widths)
        return [(int(lo.code), w, int(e - n), int(e)) for lo, w, n, e in zip(self.losses, self.weights, self.widths,
                                                                             ends)]

    def kernels(self, dtype, n_out):
        """The compiled value and gradient functions for arrays of ``dtype`` (``fastnn.user_losses``)."""
        from .user_losses import output_loss_kernels
        if n_out != sum(self.widths):
            raise ValueError(f"OutputLosses of outputs {sum(self.widths)} wide in all, the model's are {n_out}")
        return output_loss_kernels(tuple(self._blocks()), np.dtype(dtype))

    def output_functions(self):
        """(``<name>_loss``, function(y_true, y_pred) -> output i's loss) of each output, which
        the compiled step counts as it counts metric functions."""
        from .user_losses import OutputLoss
        return tuple((f"{name}_loss", OutputLoss(code, lo, hi))
                     for name, (code, _, lo, hi) in zip(self.names, self._blocks()))

    def __call__(self, pred, target):
        pred, target = np.asarray(pred), np.asarray(target)
        return float(sum(w * lo(pred[:, a:b], target[:, a:b])
                         for lo, (_, w, a, b) in zip(self.losses, self._blocks())))

    def gradient(self, pred, target):
        pred, target = np.asarray(pred), np.asarray(target)
        return np.concatenate([w * lo.gradient(pred[:, a:b], target[:, a:b])
                               for lo, (_, w, a, b) in zip(self.losses, self._blocks())], axis=1)


_BY_NAME = {
    "mse": MSE, "mean_squared_error": MSE, "sse": SSE, "sum_squared_error": SSE,
    "mae": MAE, "mean_absolute_error": MAE, "mape": MAPE, "mean_absolute_percentage_error": MAPE,
    "msle": MSLE, "mean_squared_logarithmic_error": MSLE, "cosine_similarity": CosineSimilarity,
    "cross_entropy": CrossEntropy, "categorical_crossentropy": CrossEntropy,
    "sparse_categorical_crossentropy": CrossEntropy, "crossentropy": CrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy, "binary_cross_entropy": BinaryCrossEntropy, "bce": BinaryCrossEntropy,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "perceptron": PerceptronCriterion,
}


def get(identifier):
    """A loss from an instance, a class or a name ('mse', 'categorical_crossentropy', ...)."""
    if callable(identifier) and not isinstance(identifier, (Configurable, type)):
        name = getattr(identifier, "__name__", repr(identifier))
        raise TypeError(f"loss={name}: a plain function gives the loss's value only, and fastnn has no automatic "
                        "differentiation: it needs the gradient too. Pass fastnn.CustomLoss(value, gradient) with "
                        f"value={name}(y_true, y_pred) -> float and gradient(y_true, y_pred) -> dL/dy_pred (an array "
                        "of y_pred's shape)")
    return resolve(identifier, Loss, _BY_NAME, "loss")
