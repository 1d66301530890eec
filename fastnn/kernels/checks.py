"""Scans that validation needs on large arrays, without a temporary of the array's size."""
import numpy as np

from ..config import kernel


@kernel
def all_finite(x):
    """True when no element of the contiguous array ``x`` is NaN or +-inf (``np.isfinite(x).all()``)."""
    flat = x.reshape(-1)
    for i in range(flat.size):
        if not np.isfinite(flat[i]):
            return False
    return True


@kernel
def labels_in_range(labels, n_classes):
    """True when every integer label lies in [0, n_classes)."""
    for i in range(labels.size):
        if labels[i] < 0 or labels[i] >= n_classes:
            return False
    return True
