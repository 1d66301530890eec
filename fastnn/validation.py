"""Input validation for every public entry point, in one place.

Numba kernels do no bounds checks: a label of 10 in a 10-class problem would write past the
end of an array and corrupt memory silently. So every array and hyper-parameter is checked
here, before any kernel runs, and a failure names the argument and what was expected.
"""
import numbers

import numpy as np

from .kernels.checks import all_finite

DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype):
    """Normalise ``dtype`` ('float32', 'float64', or the NumPy types) to a NumPy scalar type."""
    name = dtype if isinstance(dtype, str) else None
    # np.dtype(None) means float64: None must not pass silently as a choice of precision.
    if name is None and dtype is not None:
        try:
            name = np.dtype(dtype).name
        except TypeError:  # not a dtype at all: reported below like any other bad value
            pass
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return DTYPES[name]


def check_int(value, name, minimum=None, maximum=None):
    """An integer (not bool) within [minimum, maximum]; returned as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_float(value, name, minimum=None, maximum=None, min_inclusive=True, max_inclusive=True):
    """A finite real number within the given bounds; returned as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and (value < minimum or (not min_inclusive and value == minimum)):
        raise ValueError(f"{name} must be {'>=' if min_inclusive else '>'} {minimum}, got {value}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        raise ValueError(f"{name} must be {'<=' if max_inclusive else '<'} {maximum}, got {value}")
    return value


def _as_numeric_array(x, name):
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got an array of dtype {arr.dtype}")
    if arr.dtype.kind == "f" and (arr.dtype.itemsize < 4 or not arr.dtype.isnative):
        arr = arr.astype(np.float64)  # float16, big-endian: dtypes the kernels are not compiled for
    elif arr.dtype.kind in "iub" and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def check_features(x, name="x", width=None, dtype=np.float32, writable=True, finite=True):
    """A 2-D array of finite numbers, (rows, width), returned C-contiguous in ``dtype``.

    A 1-D array is taken as a single row only when ``width`` says so unambiguously; images
    of shape (rows, 28, 28) are flattened to (rows, 784).

    ``writable``: a read-only array (a memory-mapped file opened 'r', a frozen array) is copied,
    for callers whose kernels take it as a mutable array; False returns it as it is, for a caller
    that only reads it (a model's ``fit``, ``predict`` and ``evaluate``: see ``writable_input``).
    An array already C-contiguous in ``dtype`` is otherwise never copied.
    """
    arr = _as_numeric_array(x, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a 2-D array (rows, features), got a scalar")
    if arr.ndim == 1 and width is not None and arr.shape[0] == width and width > 1:
        arr = arr.reshape(1, -1)
    elif arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected at least one row")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero features per row: expected shape (rows, {width or 'features'})")
    if width is not None and arr.shape[1] != width:
        raise ValueError(f"{name} must have {width} features per row (the model's input width), "
                         f"got shape {np.shape(x)}")
    with np.errstate(over="ignore"):  # a value beyond the dtype's range becomes inf: reported below
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if writable:
        arr = writable_input(arr)
    if finite and not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond {np.dtype(dtype).name}'s range)")
    return arr


def check_targets(y, name, n_rows, width, dtype=np.float32, one_hot_labels=True, unit_interval=False,
                  writable=True):
    """Targets as a C-contiguous (rows, width) array in ``dtype``; ``writable`` as ``check_features``'.

    With ``one_hot_labels`` and ``width > 1``, a 1-D integer array is read as class labels in
    [0, width) and one-hot encoded (as ``torch.nn.CrossEntropyLoss`` takes class indices).
    ``unit_interval`` requires every target in [0, 1] (binary cross-entropy).
    """
    arr = _as_numeric_array(y, name)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array with one entry per row of x, got a scalar")
    if arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but x has {n_rows}: "
                         "they must have the same length")
    if arr.ndim == 1 and width > 1:
        if not one_hot_labels:
            raise ValueError(f"{name} must have shape ({n_rows}, {width}), got {arr.shape}")
        labels = arr
        if labels.dtype.kind == "f":
            if not all_finite(np.ascontiguousarray(labels)):
                raise ValueError(f"{name} contains NaN or infinite values")
            if np.any(labels != np.round(labels)):
                raise ValueError(f"{name} looks like class labels but holds non-integer values")
        outside = (labels < 0) | (labels >= width)  # on the values given: 1e20 is 1e20, not int64's wrap
        if np.any(outside):
            bad = labels[outside][0]
            raise ValueError(f"{name} holds class label {bad.item()!r}, outside [0, {width}) "
                             f"(the model has {width} outputs)")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        out = np.zeros((n_rows, width), dtype=dtype)
        out[np.arange(n_rows), labels] = 1
        return out
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] != width:
        raise ValueError(f"{name} must have {width} columns (the model's output width), got shape {arr.shape}")
    with np.errstate(over="ignore"):
        arr = np.ascontiguousarray(arr, dtype=dtype)
    if writable:
        arr = writable_input(arr)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond {np.dtype(dtype).name}'s range)")
    if unit_interval and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1] for this loss (binary cross-entropy, perceptron), "
                         f"got values in [{arr.min()}, {arr.max()}]")
    return arr


def check_labels(y, name, n_rows=None):
    """Integer class labels as a 1-D int64 array (non-negative)."""
    arr = _as_numeric_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class labels, got shape {arr.shape}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but x has {n_rows}: they must have the same length")
    if arr.dtype.kind == "f" and (not all_finite(np.ascontiguousarray(arr)) or np.any(arr != np.round(arr))):
        raise ValueError(f"{name} must hold integer class labels")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative class label {arr.min()}")
    return arr


def writable_input(arr):
    """``arr``, or a copy where it is read-only (a memory-mapped file, a frozen array): Numba
    types a read-only array as its own type, and the inference passes (``network_forward`` on the
    input itself), which mix the input with their writable buffers, do not compile for it. The
    training step only gathers rows of its input into a workspace, so ``fit`` takes a read-only
    array as it is (a memory-mapped data set is not copied whole)."""
    return arr if arr.flags.writeable else arr.copy()
