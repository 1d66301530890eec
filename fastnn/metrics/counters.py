"""The training counters: which counters of ``fastnn.kernels.metrics`` the named metrics need,
and the metrics' values from those counts."""
import numpy as np

from ..kernels import metrics as K
from .classification import _averaged_columns, _ratio
from .names import REGRESSION, TOP_K

# Buckets of the training AUC's score histogram: Keras' AUC uses 200 thresholds.
AUC_BUCKETS = 200


def counter_spec(names, n_out, first=0, offset=0):
    """(spec int64 (M, 5), size of counts) of the training counters that ``names`` need (see
    ``fastnn.kernels.metrics``), over the ``n_out`` columns from ``first``, their counts from
    ``offset``; M = 0 when none does. "accuracy" is counted too when named (a model of one output
    leaves it out: its loss kernel counts it)."""
    rows, size = [], offset

    def add(kind, n, param=0):
        nonlocal size
        rows.append([kind, size, param, first, n_out])
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
    if "accuracy" in names:
        add(K.CORRECT, 1)
    return np.array(rows, dtype=np.int64).reshape(-1, K.SPEC_COLUMNS), size - offset


def output_counter_spec(outputs):
    """(spec, size) of the counters of several outputs side by side: ``outputs`` (names, first
    column, columns) per output, each output's groups after the previous one's."""
    specs, size = [], 0
    for names, first, cols in outputs:
        spec, n = counter_spec(names, cols, first, size)
        specs.append(spec)
        size += n
    return np.concatenate(specs or [np.zeros((0, K.SPEC_COLUMNS), np.int64)]), size


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


def from_counts(names, spec, counts, n_out, rows, first=0):
    """The metrics ``names`` from the training counters of ``counter_spec`` (accuracy where it
    counted it), counted over ``rows`` rows; ``spec`` may hold other outputs' groups too: those
    of the ``n_out`` columns from ``first`` are read."""
    groups = {int(kind): (int(off), int(param)) for kind, off, param, lo, cols in spec if lo == first}
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
    if K.CORRECT in groups and "accuracy" in names:
        out["accuracy"] = _ratio(counts[groups[K.CORRECT][0]], rows)
    return out
