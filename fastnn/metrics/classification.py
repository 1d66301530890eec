"""Classification metrics on arrays, equal to scikit-learn's (ties included): the ranking metrics
``roc_auc`` and ``pr_auc``, and the counting ones (``confusion``, ``precision``, ``recall``, ``f1``,
``sensitivity``, ``specificity``, ``accuracy``, ``top_k_accuracy``)."""
import numpy as np

from .inputs import _as_array, _labels_pred, _labels_true, _same_rows, _scores

AVERAGES = ("binary", "macro", "micro", "weighted")


# ---- ranking metrics --------------------------------------------------------------------------

def _binary_roc_auc(truth, score):
    """The Mann-Whitney form of the ROC curve's area: tied scores count one half, which is the
    trapezoidal area scikit-learn computes."""
    pos = truth == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC is undefined when y_true holds one class only")
    from scipy.stats import rankdata  # here, not at import: scipy.stats takes a second to import
    ranks = rankdata(score)  # average ranks of ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary_average_precision(truth, score):
    """sum over distinct thresholds, high to low, of (R_k - R_{k-1}) P_k."""
    n_pos = int(truth.sum())
    if n_pos == 0:
        return 0.0  # scikit-learn: no positive sample, recall undefined; it warns and returns 0 (-0.0)
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), t.size - 1]  # the last row of each distinct score
    tps = np.cumsum(t)[last]
    fps = last + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _averaged_columns(n_columns):
    """The classes (score columns) a metric averages over: all of them, but for two (a two-class
    softmax) the positive class alone, 1, as scikit-learn's binary metrics (``average="binary"``)."""
    return [1] if n_columns == 2 else range(n_columns)


def roc_auc(y_true, y_score):
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``); for several classes the
    one-vs-rest macro average (``multi_class="ovr"``); for two score columns that of column 1
    (``roc_auc_score(y, score[:, 1])``, which both columns' average equals)."""
    truth, s = _scores(y_true, y_score)
    return float(np.mean([_binary_roc_auc(truth[:, c], s[:, c]) for c in _averaged_columns(s.shape[1])]))


def pr_auc(y_true, y_score):
    """Area under the precision-recall curve as average precision
    (``sklearn.metrics.average_precision_score``); for two score columns that of the positive
    class, column 1 (``average_precision_score(y, score[:, 1])``); for more, the macro average
    over classes."""
    truth, s = _scores(y_true, y_score)
    return float(np.mean([_binary_average_precision(truth[:, c], s[:, c]) for c in _averaged_columns(s.shape[1])]))


# ---- counting metrics -------------------------------------------------------------------------

def _pair(y_true, y_pred):
    t, p = _labels_true(y_true), _labels_pred(y_pred)
    _same_rows(t, p, ("y_true", "y_pred"))
    return t, p


def confusion(y_true, y_pred):
    """(tp, fp, tn, fn) of a binary problem, class 1 positive (``confusion_matrix(...).ravel()``
    is (tn, fp, fn, tp))."""
    t, p = _pair(y_true, y_pred)
    if t.max(initial=0) > 1 or p.max(initial=0) > 1:
        raise ValueError("confusion is for binary problems (labels 0 and 1); use precision/recall with "
                         "average='macro' for several classes")
    tp = int(np.sum((p == 1) & (t == 1)))
    fp = int(np.sum((p == 1) & (t == 0)))
    tn = int(np.sum((p == 0) & (t == 0)))
    fn = int(np.sum((p == 0) & (t == 1)))
    return tp, fp, tn, fn


def _ratio(a, b):
    return float(a / b) if b else 0.0


def _per_class(t, p):
    classes = np.union1d(t, p)
    tp = np.array([np.sum((p == c) & (t == c)) for c in classes], dtype=np.float64)
    fp = np.array([np.sum((p == c) & (t != c)) for c in classes], dtype=np.float64)
    fn = np.array([np.sum((p != c) & (t == c)) for c in classes], dtype=np.float64)
    return classes, tp, fp, fn


def _averaged(y_true, y_pred, average, score):
    """``score(tp, fp, fn)`` averaged as scikit-learn's ``average`` argument."""
    t, p = _pair(y_true, y_pred)
    binary = t.max(initial=0) <= 1 and p.max(initial=0) <= 1
    average = ("binary" if binary else "macro") if average is None else average
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES} or None, got {average!r}")
    if average == "binary":
        if not binary:
            raise ValueError("average='binary' is for labels 0 and 1; use 'macro', 'micro' or 'weighted'")
        tp, fp, _, fn = confusion(t, p)
        return score(tp, fp, fn)
    classes, tp, fp, fn = _per_class(t, p)
    if average == "micro":
        return score(tp.sum(), fp.sum(), fn.sum())
    values = np.array([score(a, b, c) for a, b, c in zip(tp, fp, fn)])
    if average == "macro":
        return float(values.mean())
    support = tp + fn
    return _ratio(float(np.dot(values, support)), support.sum())


def precision(y_true, y_pred, average=None):
    """tp / (tp + fp) (``precision_score``; ``average`` None: 'binary' for labels 0/1, else 'macro')."""
    return _averaged(y_true, y_pred, average, lambda tp, fp, fn: _ratio(tp, tp + fp))


def recall(y_true, y_pred, average=None):
    """tp / (tp + fn) (``recall_score``; ``average`` as ``precision``)."""
    return _averaged(y_true, y_pred, average, lambda tp, fp, fn: _ratio(tp, tp + fn))


def f1(y_true, y_pred, average=None):
    """2 tp / (2 tp + fp + fn) (``f1_score``; ``average`` as ``precision``)."""
    return _averaged(y_true, y_pred, average, lambda tp, fp, fn: _ratio(2 * tp, 2 * tp + fp + fn))


def sensitivity(y_true, y_pred):
    """tp / (tp + fn) of a binary problem: its recall."""
    tp, _, _, fn = confusion(y_true, y_pred)
    return _ratio(tp, tp + fn)


def specificity(y_true, y_pred):
    """tn / (tn + fp) of a binary problem: the recall of class 0."""
    _, fp, tn, _ = confusion(y_true, y_pred)
    return _ratio(tn, tn + fp)


def accuracy(y_true, y_pred):
    """The fraction of rows whose label is right (``accuracy_score``)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def top_k_accuracy(y_true, y_score, k=5):
    """The fraction of rows whose class is among the ``k`` highest scores
    (``top_k_accuracy_score``, with its order among tied scores)."""
    s = _as_array(y_score, "y_score")
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError("top_k_accuracy needs scores of shape (n, C) with C >= 2")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    t = _labels_true(y_true, s.shape[1])
    _same_rows(t, s, ("y_true", "y_score"))
    if k >= s.shape[1]:
        return 1.0
    top = np.argsort(s, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean((top == t[:, None]).any(axis=1)))
