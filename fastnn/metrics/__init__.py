"""Metrics as plain functions on arrays, equal to scikit-learn's (ties included).

``y_true`` may be class labels (n,), one-hot rows (n, C), or 0/1 targets (n,) or (n, 1) for a
binary problem. ``y_score`` is what ``predict`` returns: probabilities (n, C) or the positive
class's probability (n,) or (n, 1). ``y_pred`` is labels, or scores, which become labels as
``fit`` counts them: argmax over C > 1 columns, ``> threshold`` (0.5) for one column.

Classification: ``roc_auc`` (``sklearn.metrics.roc_auc_score``; several classes: one-vs-rest,
macro average, as ``multi_class="ovr"``), ``pr_auc`` (``average_precision_score``, macro over
classes), ``confusion`` -> (tp, fp, tn, fn) of a binary problem, ``precision``, ``recall``,
``f1`` (``average="binary"`` for two classes, ``"macro"`` for more, as scikit-learn's
``average`` argument; an undefined ratio is 0, as ``zero_division=0``), ``sensitivity`` (recall
of a binary problem), ``specificity`` (tn / (tn + fp)), ``accuracy``, ``top_k_accuracy``.
Two classes are a binary problem whose positive class is 1, however given: two score columns
(a two-class softmax) are ranked by column 1 alone, as scikit-learn's binary metrics.
Regression: ``mae``, ``mse``, ``rmse``, ``r2`` (``r2_score``, uniform average over outputs),
``cosine_similarity`` (the mean over rows of the cosine between a target row and a prediction
row, as Keras' metric of that name).

Layout
------
* ``inputs``: the checks and conversions of ``y_true``, ``y_pred`` and ``y_score`` that every
  metric shares;
* ``classification``: the ranking metrics (``roc_auc``, ``pr_auc``) and the counting ones;
* ``regression``: ``mae``, ``mse``, ``rmse``, ``r2``, ``cosine_similarity``;
* ``names``: metrics by name, as ``compile(metrics=[...])`` takes them, and their exact figures
  from predictions;
* ``counters``: the training counters of ``fastnn.kernels.metrics`` that the named metrics need,
  and the metrics' values from those counts.
"""
from .classification import (AVERAGES, accuracy, confusion, f1, pr_auc, precision, recall, roc_auc, sensitivity,
                             specificity, top_k_accuracy)
from .counters import AUC_BUCKETS, counter_spec, from_counts, output_counter_spec
from .names import (ALIASES, BINARY, CLASSIFICATION, HIGHER_IS_BETTER, REGRESSION, TOP_K, canonical_names,
                    from_predictions)
from .regression import cosine_similarity, mae, mse, r2, rmse

__all__ = ["AVERAGES", "accuracy", "confusion", "f1", "pr_auc", "precision", "recall", "roc_auc", "sensitivity",
           "specificity", "top_k_accuracy", "cosine_similarity", "mae", "mse", "r2", "rmse",
           "ALIASES", "BINARY", "CLASSIFICATION", "HIGHER_IS_BETTER", "REGRESSION", "TOP_K", "canonical_names",
           "from_predictions", "AUC_BUCKETS", "counter_spec", "from_counts", "output_counter_spec"]
