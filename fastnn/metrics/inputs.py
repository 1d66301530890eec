"""The checks and conversions of ``y_true``, ``y_pred`` and ``y_score`` that every metric shares
(the forms they may take are in ``fastnn.metrics``' docstring)."""
import numpy as np


def _as_array(a, name):
    a = np.asarray(a)
    if a.dtype == object or a.ndim not in (1, 2) or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D or 2-D numeric array, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a


def _labels_true(y_true, n_classes=None):
    """Integer labels (n,) from labels, one-hot rows or 0/1 targets."""
    y = _as_array(y_true, "y_true")
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    y = y.reshape(-1)
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError("y_true must hold class labels (integers), one-hot rows or 0/1 targets")
    y = y.astype(np.int64)
    if (y < 0).any() or (n_classes is not None and (y >= n_classes).any()):
        raise ValueError(f"y_true must hold labels in [0, {n_classes or 'n_classes'}), got {y.min()}..{y.max()}")
    return y


def _labels_pred(y_pred, threshold=0.5):
    """Labels from labels or scores: argmax over several columns, ``> threshold`` for one."""
    p = _as_array(y_pred, "y_pred")
    if p.ndim == 2 and p.shape[1] > 1:
        return p.argmax(axis=1)
    p = p.reshape(-1)
    if p.dtype.kind == "f" and not np.isin(p, (0.0, 1.0)).all():
        return (p > threshold).astype(np.int64)
    return p.astype(np.int64)


def _same_rows(a, b, names):
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same number of rows, "
                         f"got {a.shape[0]} and {b.shape[0]}")


def _scores(y_true, y_score):
    """(one-hot truth (n, C), scores (n, C)) for the ranking metrics; C = 1 for a binary problem
    given as one score column (truth: the positive class)."""
    s = _as_array(y_score, "y_score").astype(np.float64)
    s = s.reshape(-1, 1) if s.ndim == 1 else s
    t = _as_array(y_true, "y_true")
    _same_rows(t, s, ("y_true", "y_score"))
    if s.shape[1] == 1:
        truth = _labels_true(t, 2).reshape(-1, 1)
        return truth, s
    if t.ndim == 2 and t.shape[1] == s.shape[1]:
        return (t == t.max(axis=1, keepdims=True)).astype(np.int64) if t.dtype.kind == "f" else t.astype(np.int64), s
    labels = _labels_true(t, s.shape[1])
    return np.eye(s.shape[1], dtype=np.int64)[labels], s
