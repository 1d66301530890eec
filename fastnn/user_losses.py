"""Losses and metrics written by users, compiled for the compiled step as user layers are.

A user loss (``fastnn.CustomLoss``) gives ``value(y_true, y_pred) -> float`` (the batch's loss,
already reduced) and ``gradient(y_true, y_pred) -> dL/dy_pred``; a user metric is a function
``metric(y_true, y_pred) -> float``. They are compiled with ``numba.njit`` and wrapped in
functions of fixed signatures,

    value(pred, target) -> float64
    gradient(dpred, pred, target)          dpred[:] = dL/dpred
    weighted(pred, target, weights) -> float64    the value with a weight per row
    metric(pred, target, weights) -> float64      weights: the batch's, or none (size 0)

(the kernels' argument order, predictions first), which ``kernels.network`` takes as first-class
functions (``loss_fns``; ``user_metrics`` through a None-typed optional argument, so a model with
built-in metrics compiles none of it). A built-in loss reaches the step the same way
(``loss_kernels``: its own kernels in functions of these signatures), so that one compiled step
serves every loss and a model compiles its own loss alone. As user layers' wrappers
(``fastnn.user_layers``), these are generated source compiled through ``fastnn.user_code``:
cached on disk under a key of the user functions' code.
"""
from collections import namedtuple
from functools import lru_cache

import numba
import numpy as np
from numba import types
from numba.core.typing.typeof import typeof_impl
from numba.typed import List

from .config import kernel
from .kernels.losses import LOSS_KERNELS, loss_forward, scale_block, weighted_loss_finish
from .user_code import compile_generated
from .user_layers import _compile, quietly

# The loss code the kernels get with a user loss: no built-in loss has it, so no fused
# loss-activation gradient applies and the loss counts as a mean over rows under MPI.
USER_LOSS = -1

# Each function in a typed List of one: Numba types it by the function's signature (a first-class
# function type), not by its identity (which would compile the step anew for each loss), and
# passes it to a kernel at the cost of a pointer, where a tuple of compiled functions costs
# 150 us of typing and 70 us of address lookups at every call (each train_on_batch, evaluate).
class UserLoss(namedtuple("UserLoss", ["value", "gradient", "weighted"])):
    """(value, gradient, weighted), each a typed List of one function, and its Numba type, worked
    out once (``_numba_type_``): Numba works out a tuple's type at every call (12 us here)."""


@kernel
def function_lists(value, gradient, weighted):
    """Each 1-tuple's function in a typed List of one (``loss_bundle``), built here, compiled and
    cached once per signature: built from Python, a typed List compiles its methods in every
    process (0.7 s)."""
    values, gradients, weighteds = List(), List(), List()
    values.append(value[0])
    gradients.append(gradient[0])
    weighteds.append(weighted[0])
    return values, gradients, weighteds


def loss_bundle(value, gradient, weighted):
    """The ``UserLoss`` of three compiled functions, each of one signature."""
    lists = quietly(function_lists, (value,), (gradient,), (weighted,))
    for functions, fn in zip(lists, (value, gradient, weighted)):
        functions.keep = fn  # the List holds the function's address, not a reference
    return UserLoss(*lists)


@typeof_impl.register(UserLoss)
def _typeof_loss_bundle(bundle, context):
    if "_numba_type_" not in vars(bundle):
        bundle._numba_type_ = types.BaseTuple.from_types([f._numba_type_ for f in bundle], UserLoss)
    return bundle._numba_type_


# ``no_weights``: the empty array the functions get in an unweighted step.
UserMetrics = namedtuple("UserMetrics", ["functions", "offset", "no_weights"])


class LossCode(int):
    """A loss code (``Loss.code``) that also carries the user loss it stands for (``user``): the
    trainer hands ``loss.code`` to the backends, which then find the user's functions on it."""

    def __new__(cls, code, user):
        self = super().__new__(cls, code)
        self.user = user
        return self


_VALUE_WRAPPER = '''
def value(pred, target):
    return np.float64(user_value(target, pred))


def weighted(pred, target, weights):
    raise ValueError("a loss of your own takes no sample weights")  # (refused before any step)
'''

_GRADIENT_WRAPPER = '''
def gradient(dpred, pred, target):
    g = user_gradient(target, pred)
    if g.shape[0] != dpred.shape[0] or g.shape[1] != dpred.shape[1]:
        raise ValueError(MESSAGE)
    for i in range(dpred.shape[0]):
        for j in range(dpred.shape[1]):
            dpred[i, j] = g[i, j]
'''

# Metrics are unweighted, as Keras' ``metrics``: they ignore ``weights``.
_METRIC_WRAPPER = '''
def metric(pred, target, weights):
    return np.float64(user_metric(target, pred))
'''


def _numba_message(exc):
    return " ".join(str(exc).strip().splitlines()[:6])


@lru_cache(maxsize=64)
def user_loss_kernels(value, gradient, dtype, name):
    """The compiled (value, gradient) wrappers of a user loss for arrays of ``dtype``; a TypeError
    naming the loss if Numba cannot compile them (a value that is not a number, say)."""
    T = numba.from_dtype(np.dtype(dtype))
    m = T[:, ::1]
    try:
        compiled = compile_generated(_VALUE_WRAPPER, {"user_value": _compile(value, f"loss {name}'s value")},
                                     {"value": types.float64(m, m), "weighted": types.float64(m, m, T[::1])},
                                     f"loss {name}", (value,))
    except numba.core.errors.NumbaError as exc:
        raise TypeError(f"loss {name}: value(y_true, y_pred) must return a float (the batch's loss, reduced) "
                        f"and compile with Numba: {_numba_message(exc)}") from None
    message = (f"loss {name}: gradient returned an array of another shape than y_pred (it must be dL/dy_pred, of "
               f"y_pred's shape)")
    try:
        fg = compile_generated(_GRADIENT_WRAPPER, {"user_gradient": _compile(gradient, f"loss {name}'s gradient"),
                                                   "MESSAGE": message},
                               {"gradient": types.void(m, m, m)}, f"loss {name}", (gradient,))["gradient"]
    except numba.core.errors.NumbaError as exc:
        raise TypeError(f"loss {name}: gradient(y_true, y_pred) must return a 2-D array of y_pred's shape "
                        f"and compile with Numba: {_numba_message(exc)}") from None
    return loss_bundle(compiled["value"], fg, compiled["weighted"])


def probe_loss(kernels, n_out, dtype):
    """Call a user loss's wrappers once on two rows, so that a gradient of the wrong shape is a
    ValueError naming the loss now rather than at the first batch."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.1, 0.9, (2, n_out)).astype(dtype)
    target = rng.uniform(0.1, 0.9, (2, n_out)).astype(dtype)
    kernels.value[0](pred, target)
    kernels.gradient[0](np.zeros_like(pred), pred, target)


def _loss_terms(code, weight, lo, hi):
    """Generated lines that add the built-in loss ``code`` on columns [lo, hi) (all: None), times
    ``weight``, into ``total`` (value, weighted) and write its gradient into ``dpred``'s columns,
    through that loss's own kernels (``kernels.losses.LOSS_KERNELS``); and the names they use."""
    forward, backward = (k.py_func.__name__ for k in LOSS_KERNELS[code])
    cols, row = ("", "") if lo is None else (f"[:, {lo}:{hi}]", f", {lo}:{hi}")
    times = "" if weight == 1.0 else f"{float(weight)!r} * "
    value = [f"    total += {times}{forward}(pred{cols}, target{cols})"]
    weighted = ["    part = 0.0",
                "    for i in range(pred.shape[0]):",
                f"        part += np.float64(weights[i]) * {forward}(pred[i: i + 1{row}], target[i: i + 1{row}])",
                f"    total += {times}weighted_loss_finish({code}, part, pred.shape[0])"]
    gradient = [f"    {backward}(dpred{cols}, pred{cols}, target{cols})"]
    if weight != 1.0:
        gradient.append(f"    scale_block(dpred{cols}, dpred.dtype.type({float(weight)!r}))")
    return value, weighted, gradient, {forward: LOSS_KERNELS[code][0], backward: LOSS_KERNELS[code][1]}


@lru_cache(maxsize=64)
def loss_kernels(code, dtype, weighted=True):
    """A built-in loss's (value, gradient, weighted) functions, of a user loss's signatures: the
    step takes them as it takes a user loss's, and so compiles this loss's kernels alone, not the
    ten of ``loss_forward``'s branches (seconds of a cold start). The value with weights is
    ``kernels.losses.weighted_loss_forward``'s. ``weighted`` False: for a step without weights,
    which never calls it (``train_batches`` drops the call on ``weights is None``), a stand-in
    shared by every loss of the dtype, so that the loss's own is not compiled (0.3 s)."""
    return _loss_bundle(((code, 1.0, None, None),), np.dtype(dtype), f"loss {code}", weighted)


_UNWEIGHTED = '''
def weighted(pred, target, weights):
    raise ValueError("a step built without sample weights got some")
'''


@lru_cache(maxsize=4)
def _unweighted(dtype):
    """The ``weighted`` stand-in of ``loss_kernels(..., weighted=False)``."""
    T = numba.from_dtype(dtype)
    return compile_generated(_UNWEIGHTED, {}, {"weighted": types.float64(T[:, ::1], T[:, ::1], T[::1])},
                             "an unweighted step", ())["weighted"]


@lru_cache(maxsize=64)
def output_loss_kernels(blocks, dtype):
    """The (value, gradient, weighted) wrappers of a model of several outputs
    (``losses.OutputLosses``): ``blocks`` (loss code, weight, first column, stop column) per output;
    the value is the weighted sum of the built-in losses' values on each output's columns (with a
    weight per row: each output's ``weighted_loss_forward``, as Keras weighs every output's loss by
    the one ``sample_weight``), the gradient each output's loss gradient times its weight, in its
    columns (the step scales its rows by their weights)."""
    return _loss_bundle(blocks, np.dtype(dtype), "outputs' losses")


def _loss_bundle(blocks, dtype, label, weighted=True):
    """The (value, gradient, weighted) functions of the loss ``blocks`` (``_loss_terms``' arguments
    per output); without ``weighted``, ``_unweighted``'s stand-in for the last. The weighted value
    is a module of its own, so that the value and gradient compile once either way."""
    T = numba.from_dtype(dtype)
    m = T[:, ::1]
    lines = {"value": ["def value(pred, target):", "    total = 0.0"],
             "weighted": ["def weighted(pred, target, weights):", "    total = 0.0"],
             "gradient": ["def gradient(dpred, pred, target):"]}
    scope = {"scale_block": scale_block, "weighted_loss_finish": weighted_loss_finish}
    for block in blocks:
        *terms, names = _loss_terms(*block)
        for name, more in zip(("value", "weighted", "gradient"), terms):
            lines[name] += more
        scope.update(names)
    # The built-in kernels stand where a user's functions would: their code is in the cache key.
    compiled = compile_generated("\n".join(lines["value"] + ["    return total", ""] + lines["gradient"] + [""]),
                                 scope, {"value": types.float64(m, m), "gradient": types.void(m, m, m)}, label,
                                 tuple(scope.values()))
    if weighted:
        compiled.update(compile_generated("\n".join(lines["weighted"] + ["    return total", ""]), scope,
                                          {"weighted": types.float64(m, m, T[::1])}, label, tuple(scope.values())))
    else:
        compiled["weighted"] = _unweighted(dtype)
    return loss_bundle(compiled["value"], compiled["gradient"], compiled["weighted"])


class OutputLoss(namedtuple("OutputLoss", ["code", "first", "stop"])):
    """One output's loss of several: the built-in loss ``code`` on columns [first, stop) of the
    outputs side by side, which the compiled step counts as it counts a metric function
    (``user_metric_kernel``), weighted by the rows' weights as the loss is."""

    def __call__(self, y_true, y_pred):
        return loss_forward(self.code, np.ascontiguousarray(y_pred[:, self.first:self.stop]),
                            np.ascontiguousarray(y_true[:, self.first:self.stop]))


class OutputMetric(namedtuple("OutputMetric", ["function", "first", "stop"])):
    """A user metric on one output of several: ``function(y_true, y_pred)`` on columns
    [first, stop) of the outputs side by side (``functional.Model.compile``)."""

    def __call__(self, y_true, y_pred):
        return self.function(np.asarray(y_true)[:, self.first:self.stop], np.asarray(y_pred)[:, self.first:self.stop])


@lru_cache(maxsize=64)
def user_metric_kernel(fn, dtype, name):
    """The compiled wrapper of a user metric (a function, or an ``OutputMetric``) for arrays of
    ``dtype``."""
    T = numba.from_dtype(np.dtype(dtype))
    signature = {"metric": types.float64(T[:, ::1], T[:, ::1], T[::1])}
    if isinstance(fn, OutputLoss):
        return _output_loss_metric(fn, np.dtype(dtype))
    source = _METRIC_WRAPPER
    if isinstance(fn, OutputMetric):
        source = source.replace("(target, pred)", f"(target[:, {fn.first}:{fn.stop}], pred[:, {fn.first}:{fn.stop}])")
        fn = fn.function
    try:
        return compile_generated(source, {"user_metric": _compile(fn, f"metric {name}")}, signature,
                                 f"metric {name}", (fn,))["metric"]
    except numba.core.errors.NumbaError as exc:
        raise TypeError(f"metric {name}: metric(y_true, y_pred) must return a float and compile with Numba: "
                        f"{_numba_message(exc)}") from None


def _output_loss_metric(fn, dtype):
    """An ``OutputLoss``'s metric wrapper: its output's loss, weighted as the loss is."""
    T = numba.from_dtype(dtype)
    value, weighted, _, scope = _loss_terms(fn.code, 1.0, fn.first, fn.stop)
    scope["weighted_loss_finish"] = weighted_loss_finish
    source = "\n".join(["def metric(pred, target, weights):", "    total = 0.0", "    if weights.shape[0] == 0:"]
                       + ["    " + line for line in value] + ["        return total"]
                       + weighted + ["    return total", ""])
    return compile_generated(source, scope, {"metric": types.float64(T[:, ::1], T[:, ::1], T[::1])},
                             "an output's loss", tuple(scope.values()))["metric"]


def metric_bundle(functions, dtype, offset):
    """``train_batches``' ``user_metrics`` argument: the metrics' wrappers, and where their sums
    start in the counts; None without user metrics."""
    if not functions:
        return None
    return UserMetrics(tuple(user_metric_kernel(fn, np.dtype(dtype), name) for name, fn in functions), offset,
                       np.empty(0, dtype))


def user_metric_values(functions, y, pred, batch_size, dtype, weights=None):
    """The user metrics (``(name, function)``) as in training: the mean over batches of
    ``batch_size`` rows of each function's value, weighted by the batch's rows, through the same
    compiled functions the training step calls (``fastnn.user_losses``), which get ``weights``
    (None: unweighted) as there."""
    out = {}
    n = y.shape[0]
    y = np.ascontiguousarray(y, dtype=dtype)
    pred = np.ascontiguousarray(pred, dtype=dtype)
    weights = np.empty(0, dtype) if weights is None else np.ascontiguousarray(weights, dtype=dtype)
    for name, fn in functions:
        kernel = user_metric_kernel(fn, np.dtype(dtype), name)
        total = 0.0
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            total += quietly(kernel, pred[lo:hi], y[lo:hi], weights[lo:hi]) * (hi - lo)
        out[name] = float(total / n) if n else float("nan")
    return out


def split_metrics(metrics):
    """(the metrics given by name, (name, function) of those given as functions): a function is
    logged under its ``__name__``, as Keras names it."""
    if metrics is None or isinstance(metrics, str):
        return metrics, ()
    names, functions = [], []
    for m in list(metrics):
        if isinstance(m, str):
            names.append(m)
            continue
        if not callable(m) or isinstance(m, type):
            raise TypeError(f"metrics must be names (str) or functions metric(y_true, y_pred) -> float, got {m!r}")
        name = getattr(getattr(m, "py_func", m), "__name__", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"metrics: the function {m!r} needs a name (a def, not a lambda): its figure is logged "
                             "under it")
        if name in (n for n, _ in functions):
            raise ValueError(f"metrics: two functions named {name!r}")
        functions.append((name, m))
    return names, tuple(functions)


def check_device_runs_loss(device, loss, user_metrics, why):
    """A ValueError if ``device`` is not the CPU and the loss or a metric is the user's
    (``fastnn.user_losses``): as user layers, they run on the CPU only."""
    if device == "cpu":
        return
    if getattr(loss, "kernels", None) is not None and not getattr(loss, "several_outputs", False):
        raise ValueError(f"loss {loss.name} is a loss of your own (CustomLoss): such losses run on the CPU only "
                         f"({why})")
    if user_metrics:
        raise ValueError(f"metric {user_metrics[0][0]} is a function of your own: such metrics run on the CPU only "
                         f"({why})")
