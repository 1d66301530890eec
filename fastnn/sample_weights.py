"""``fit``'s ``sample_weight`` and ``class_weight``, and ``evaluate``'s ``sample_weight``: checked at
the API boundary and turned into one loss weight per row, which the compiled step gathers with
each batch (``kernels.network.train_batches``' ``weights``).

Keras 3's rules: a row's class is the argmax of its target row (one-hot or probability targets),
or its target rounded for a single output column; a class missing from ``class_weight`` weighs 1;
``sample_weight`` and ``class_weight`` together are a ValueError (Keras 3's data adapters refuse
them). A batch's loss is ``sum_i w_i l_i / B`` (Keras' ``sum_over_batch_size``), not divided by
the sum of the weights.
"""
import numbers

import numpy as np


def row_weights(sample_weight, class_weight, y, dtype, prefix=""):
    """One weight per row of the checked targets ``y`` (n, C), in ``dtype``; None when both are None."""
    if sample_weight is None and class_weight is None:
        return None
    if sample_weight is not None and class_weight is not None:
        raise ValueError(f"{prefix}sample_weight and class_weight cannot both be given (as Keras 3): multiply the "
                         "class weights into sample_weight instead")
    n = y.shape[0]
    if sample_weight is not None:
        return check_sample_weight(sample_weight, n, dtype, prefix + "sample_weight")
    return class_weights_to_rows(class_weight, y, dtype)


def check_sample_weight(sample_weight, n, dtype, name="sample_weight"):
    """A 1-D array of ``n`` finite, non-negative real weights, as a C-contiguous array of ``dtype``."""
    if isinstance(sample_weight, (str, bytes)):
        raise TypeError(f"{name} must be a 1-D array of {n} non-negative weights, got {type(sample_weight).__name__}")
    arr = np.asarray(sample_weight)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be a 1-D array of real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array of one weight per row ({n},), got shape {arr.shape}")
    with np.errstate(over="ignore"):  # an overflow is the ValueError below
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} must be finite (in {np.dtype(dtype).name}), got a NaN or infinite weight")
    if (out < 0).any():
        raise ValueError(f"{name} must be >= 0, got {float(out.min())}")
    return out


def class_weights_to_rows(class_weight, y, dtype):
    """Each row's class weight (Keras 3's ``class_weight_to_sample_weights``)."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class index: weight}}, got {type(class_weight).__name__}")
    table = {}
    for key, value in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral):
            raise TypeError(f"class_weight's keys must be integer class indices, got {key!r}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
                or value < 0:
            raise ValueError(f"class_weight[{key!r}] must be a finite number >= 0, got {value!r}")
        table[int(key)] = float(value)
    classes = np.argmax(y, axis=1) if y.shape[1] > 1 else np.round(y[:, 0]).astype(np.int64)
    out = np.ones(y.shape[0], dtype=dtype)
    for c, w in table.items():
        out[classes == c] = w
    return out
