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
"""
import numpy as np

AVERAGES = ("binary", "macro", "micro", "weighted")


# ---- inputs -----------------------------------------------------------------------------------

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


# ---- regression -------------------------------------------------------------------------------

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


# ---- metrics by name, as compile(metrics=[...]) takes them ------------------------------------

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
# Buckets of the training AUC's score histogram: Keras' AUC uses 200 thresholds.
AUC_BUCKETS = 200
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


def counter_spec(names, n_out):
    """(spec int64 (M, 3), size of counts) of the training counters that ``names`` need (see
    ``fastnn.kernels.metrics``); M = 0 when none does (accuracy has its own count)."""
    from .kernels import metrics as K
    rows, size = [], 0

    def add(kind, n, param=0):
        nonlocal size
        rows.append([kind, size, param])
        size += n

    names = set(names)
    if names & {"tp", "fp", "tn", "fn", "sensitivity", "specificity"} or (
            n_out == 1 and names & {"precision", "recall", "f1"}):
        add(K.CONFUSION, 4)
    if n_out > 1 and names & {"precision", "recall", "f1"}:
        add(K.CLASS_CONFUSION, 3 * n_out)
    if names & {"auc", "pr_auc"}:
        add(K.SCORE_HISTOGRAM, 2 * AUC_BUCKETS * n_out, AUC_BUCKETS)
    if names & set(REGRESSION):
        add(K.REGRESSION_SUMS, 4 * n_out + 2)
    if "top_k_accuracy" in names:
        add(K.TOP_K, 1, TOP_K)
    return np.array(rows, dtype=np.int64).reshape(-1, 3), size


def _histogram_auc(pos, neg):
    """ROC AUC of scores known only by bucket (ties within a bucket count one half)."""
    p, n = pos.sum(), neg.sum()
    if p == 0 or n == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives in lower buckets
    return float(np.sum(pos * (below + 0.5 * neg)) / (p * n))


def _histogram_average_precision(pos, neg):
    """Average precision of scores known only by bucket, buckets as distinct scores."""
    if pos.sum() == 0:
        return 0.0
    used = (pos + neg) > 0
    tps, fps = np.cumsum(pos[::-1][used[::-1]]), np.cumsum(neg[::-1][used[::-1]])
    precision, recall = tps / (tps + fps), tps / pos.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def from_counts(names, spec, counts, n_out, rows):
    """The metrics ``names`` (but accuracy) from the training counters of ``counter_spec``,
    counted over ``rows`` rows."""
    from .kernels import metrics as K
    groups = {int(kind): (int(off), int(param)) for kind, off, param in spec}
    out = {}
    if K.CONFUSION in groups:
        off = groups[K.CONFUSION][0]
        tp, fp, tn, fn = counts[off: off + 4]
        binary = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "sensitivity": _ratio(tp, tp + fn),
                  "specificity": _ratio(tn, tn + fp), "precision": _ratio(tp, tp + fp),
                  "recall": _ratio(tp, tp + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}
        out.update({k: float(v) for k, v in binary.items() if k in names})
    if K.CLASS_CONFUSION in groups:
        off = groups[K.CLASS_CONFUSION][0]
        tp, fp, fn = counts[off: off + 3 * n_out].reshape(3, n_out)
        # scikit-learn averages over the labels that occur; of two classes it takes class 1 alone
        present = (tp + fp + fn) > 0 if n_out != 2 else np.arange(n_out) == 1
        for name, score in (("precision", lambda a, b, c: _ratio(a, a + b)), ("recall", lambda a, b, c: _ratio(a, a + c)),
                            ("f1", lambda a, b, c: _ratio(2 * a, 2 * a + b + c))):
            if name in names:
                out[name] = float(np.mean([score(a, b, c) for a, b, c, keep in zip(tp, fp, fn, present) if keep]))
    if K.SCORE_HISTOGRAM in groups:
        off, buckets = groups[K.SCORE_HISTOGRAM]
        hist = counts[off: off + 2 * buckets * n_out].reshape(n_out, 2, buckets)[list(_averaged_columns(n_out))]
        if "auc" in names:
            out["auc"] = float(np.mean([_histogram_auc(h[0], h[1]) for h in hist]))
        if "pr_auc" in names:
            out["pr_auc"] = float(np.mean([_histogram_average_precision(h[0], h[1]) for h in hist]))
    if K.REGRESSION_SUMS in groups:
        off = groups[K.REGRESSION_SUMS][0]
        per = counts[off: off + 4 * n_out].reshape(n_out, 4)
        sse, sae, sy, sy2 = per.T
        sst = sy2 - sy * sy / max(rows, 1.0)
        r2s = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.where(sse == 0, 1.0, 0.0))
        values = {"mae": sae.sum() / (rows * n_out), "mse": sse.sum() / (rows * n_out),
                  "rmse": np.sqrt(sse.sum() / (rows * n_out)), "r2": r2s.mean(),
                  "cosine_similarity": counts[off + 4 * n_out] / rows}
        out.update({k: float(v) for k, v in values.items() if k in names})
    if K.TOP_K in groups:
        out["top_k_accuracy"] = _ratio(counts[groups[K.TOP_K][0]], rows)
    return out


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
            out[name] = globals()[name](y_true, y_pred)
    return out
