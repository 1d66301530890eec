"""Metrics by name, as ``compile(metrics=[...])`` takes them: the names that fit a model, their
aliases, which way is better, and their exact figures from predictions."""
import numpy as np

from .classification import (accuracy, confusion, f1, pr_auc, precision, recall, roc_auc, sensitivity, specificity,
                             top_k_accuracy)
from .inputs import _labels_true
from .regression import cosine_similarity, mae, mse, r2, rmse

# Canonical names, by the kind of model they fit. "Binary" ones need a single output column.
CLASSIFICATION = ("accuracy", "auc", "pr_auc", "precision", "recall", "f1", "top_k_accuracy")
BINARY = ("tp", "fp", "tn", "fn", "sensitivity", "specificity")
REGRESSION = ("mae", "mse", "rmse", "r2", "cosine_similarity")
ALIASES = {"acc": "accuracy", "roc_auc": "auc", "average_precision": "pr_auc", "f1_score": "f1",
           "true_positives": "tp", "false_positives": "fp", "true_negatives": "tn", "false_negatives": "fn",
           "top_5_accuracy": "top_k_accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse",
           "root_mean_squared_error": "rmse"}
# Larger is better for these (EarlyStopping and the like infer mode="max"); smaller for the rest.
HIGHER_IS_BETTER = ("accuracy", "auc", "pr_auc", "precision", "recall", "f1", "top_k_accuracy", "tp", "tn",
                    "sensitivity", "specificity", "r2", "cosine_similarity")
TOP_K = 5


def canonical_names(metrics, classification, n_out):
    """The canonical names of ``metrics`` (a name or a list of names), each checked against the
    model: a ValueError names the metrics that fit it."""
    names = [metrics] if isinstance(metrics, str) else list(metrics or [])
    # accuracy fits every model, as in Keras: rows by argmax, or one output above 0.5
    valid = (CLASSIFICATION + (BINARY if n_out in (None, 1) else ())) if classification \
        else ("accuracy",) + REGRESSION
    out = []
    for m in names:
        if not isinstance(m, str):
            raise TypeError(f"metrics must be names (str), got {type(m).__name__}")
        name = ALIASES.get(m.lower(), m.lower())
        if name not in valid:
            kind = ("a classification model" + ("" if n_out in (None, 1) else f" with {n_out} outputs")
                    if classification else "a regression model (its loss is not a classification loss)")
            raise ValueError(f"metric {m!r} does not fit {kind}; valid: {', '.join(valid)}")
        if name == "top_k_accuracy" and n_out is not None and n_out <= TOP_K:
            raise ValueError(f"metric {m!r} needs more than {TOP_K} classes, the model has {n_out}")
        if name not in out:
            out.append(name)
    return out


# The metrics that from_predictions computes by name alone.
_EXACT = {"precision": precision, "recall": recall, "f1": f1, "sensitivity": sensitivity,
          "specificity": specificity, "mae": mae, "mse": mse, "rmse": rmse, "r2": r2,
          "cosine_similarity": cosine_similarity}


def from_predictions(names, y_true, y_pred):
    """The metrics ``names`` exactly, from targets as ``fit`` holds them (n, C) and predictions."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = accuracy(y_true, y_pred)
        elif name == "auc":
            out[name] = roc_auc(y_true, y_pred) if len(np.unique(_labels_true(y_true))) > 1 else float("nan")
        elif name == "pr_auc":
            out[name] = pr_auc(y_true, y_pred)
        elif name in ("tp", "fp", "tn", "fn"):
            out[name] = float(dict(zip(("tp", "fp", "tn", "fn"), confusion(y_true, y_pred)))[name])
        elif name == "top_k_accuracy":
            out[name] = top_k_accuracy(y_true, y_pred, k=TOP_K)
        else:
            out[name] = _EXACT[name](y_true, y_pred)
    return out
