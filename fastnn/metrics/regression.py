"""Regression metrics on arrays, equal to scikit-learn's (``cosine_similarity``: Keras')."""
import numpy as np

from .inputs import _as_array


def _regression(y_true, y_pred):
    t = _as_array(y_true, "y_true").astype(np.float64)
    p = _as_array(y_pred, "y_pred").astype(np.float64)
    t, p = t.reshape(t.shape[0], -1), p.reshape(p.shape[0], -1)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    return t, p


def mae(y_true, y_pred):
    """Mean absolute error (``mean_absolute_error``)."""
    t, p = _regression(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def mse(y_true, y_pred):
    """Mean squared error (``mean_squared_error``)."""
    t, p = _regression(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def rmse(y_true, y_pred):
    """Root of the mean squared error over all values (``root_mean_squared_error`` of one output)."""
    return float(np.sqrt(mse(y_true, y_pred)))


def r2(y_true, y_pred):
    """Coefficient of determination (``r2_score``: per output, then the uniform average; an output
    with constant targets scores 1 if predicted exactly, else 0)."""
    t, p = _regression(y_true, y_pred)
    sse = np.sum((t - p) ** 2, axis=0)
    sst = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    scores = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
    return float(scores.mean())


def cosine_similarity(y_true, y_pred):
    """Mean over rows of cos(y_true[i], y_pred[i]) (Keras' metric; a zero row counts 0)."""
    t, p = _regression(y_true, y_pred)
    norms = np.linalg.norm(t, axis=1) * np.linalg.norm(p, axis=1)
    dots = np.sum(t * p, axis=1)
    return float(np.mean(np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)))
