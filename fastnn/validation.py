"""Input validation for every public entry point, in one place.

Numba kernels do no bounds checks: a label of 10 in a 10-class problem would write past the
end of an array and corrupt memory silently. So every array and hyper-parameter is checked
here, before any kernel runs, and a failure names the argument and what was expected.
"""
import mmap
import numbers
import os

import numpy as np

from .kernels.checks import all_finite

DTYPES = {"float32": np.float32, "float64": np.float64}
# A memory-mapped array larger than this is scanned a slice of this size at a time (``finite``).
_SCAN_BYTES = 64 << 20


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


def check_features(x, name="x", width=None, dtype=np.float32, writable=True, check_finite=True):
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
    if check_finite and not finite(arr):
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond {np.dtype(dtype).name}'s range)")
    return arr


def _shared_mapping(arr):
    """The ``np.memmap`` under ``arr`` when it maps a file shared (mode 'r', 'r+' or 'w+'; a
    copy-on-write one, 'c', may differ from its file), else None."""
    while isinstance(arr, np.ndarray):
        if isinstance(arr, np.memmap) and getattr(arr, "mode", None) in ("r", "r+", "w+") \
                and isinstance(getattr(arr, "_mmap", None), mmap.mmap) and getattr(arr, "filename", None):
            return arr
        arr = arr.base
    return None


def _mapped_range(arr, mapped):
    """(offset in the mapping, offset in the file) of ``arr``'s first byte."""
    at = arr.ctypes.data - np.frombuffer(mapped._mmap, np.uint8).ctypes.data
    return at, mapped.offset - mapped.offset % mmap.ALLOCATIONGRANULARITY + at


def advise(arr, how):
    """Tell the kernel how ``arr``'s pages will be read ('random' or 'normal': the ``MADV_``
    advice), where ``arr`` lies in a shared memory-mapped file larger than _SCAN_BYTES and the
    platform has ``madvise``; returns whether it did. Where the page cache holds a file in large
    folios (Linux 6), a read fault under the default advice maps a whole readahead window, up to
    a megabyte: rows read at random then make most of a file resident, where MADV_RANDOM maps
    the page alone."""
    advice = getattr(mmap, "MADV_" + how.upper(), None)
    mapped = _shared_mapping(arr)
    if mapped is None or arr.nbytes <= _SCAN_BYTES or advice is None:
        return False
    at = _mapped_range(arr, mapped)[0]
    first = at - at % mmap.PAGESIZE
    mapped._mmap.madvise(advice, first, at + arr.nbytes - first)
    return True


def finite(arr):
    """``all_finite(arr)`` for a C-contiguous array. An array in a memory-mapped file larger than
    _SCAN_BYTES is read from the file, a slice at a time into one buffer, not through the
    mapping: checking a file larger than memory makes none of it resident in this process. A
    file larger than half the memory is then dropped from the page cache behind the read
    (POSIX_FADV_DONTNEED), as it could not stay there: the check does not evict the rest of the
    machine's cache, and fit's random reads of the rows it trains on (``advise``) map single
    pages, not the large folios the read left cached."""
    mapped = _shared_mapping(arr)
    if mapped is None or arr.nbytes <= _SCAN_BYTES or not hasattr(os, "posix_fadvise"):
        return all_finite(arr)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    drop = arr.nbytes > memory // 2
    buf = np.empty(_SCAN_BYTES // arr.itemsize, arr.dtype)
    raw = memoryview(buf.view(np.uint8))
    pos = _mapped_range(arr, mapped)[1]
    end = pos + arr.nbytes
    try:
        f = open(mapped.filename, "rb", buffering=0)
    except OSError:  # the file was removed or renamed since it was mapped: through the mapping
        return all_finite(arr)
    with f:
        os.posix_fadvise(f.fileno(), pos, arr.nbytes, os.POSIX_FADV_SEQUENTIAL)
        while pos < end:
            size = f.readinto(raw[: min(raw.nbytes, end - pos)]) if f.seek(pos) == pos else 0
            if size <= 0 or size % arr.itemsize:
                raise OSError(f"could not read {mapped.filename} at byte {pos}")
            if not all_finite(buf[: size // arr.itemsize]):
                return False
            if drop:
                os.posix_fadvise(f.fileno(), pos, size, os.POSIX_FADV_DONTNEED)
            pos += size
    return True


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
    if not finite(arr):
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
