"""Metric kernels on (B, C) predictions and targets.

The row functions (``row_argmax``, ``correct_row``, ``metric_row_counts``) work on one row of flat
arrays: the CUDA twin (``fastnn.cuda.metrics``) compiles this very source as device functions.
"""
import math

import numpy as np

from ..config import kernel


@kernel(inline=True)
def row_argmax(a, lo, cols):
    """The index of the first maximum of a[lo], ..., a[lo + cols - 1] (NumPy's argmax) of a
    flat array: one source for the CPU (a row view, lo = 0) and the CUDA twin (flat buffers)."""
    best = 0
    for j in range(1, cols):
        if a[lo + j] > a[lo + best]:
            best = j
    return best


@kernel(inline=True)
def correct_row(pred, target, lo, cols):
    """1 when the row at ``lo`` of flat arrays is right, else 0: argmax equality for cols > 1
    (one-hot or probability targets; the first maximum wins, as NumPy's), threshold at 0.5 for
    one column (binary accuracy). The CUDA loss kernel compiles it for each row it visits."""
    if cols == 1:
        return 1 if (pred[lo] > 0.5) == (target[lo] > 0.5) else 0
    return 1 if row_argmax(pred, lo, cols) == row_argmax(target, lo, cols) else 0


@kernel(inline=True)
def count_correct(pred, target):
    """Rows of (B, C) arrays whose prediction matches the target (``correct_row``)."""
    rows, cols = pred.shape
    correct = 0
    for i in range(rows):
        correct += correct_row(pred[i], target[i], 0, cols)
    return correct


# Training metrics counted inside the compiled step. ``spec`` int64 (M, 5), one row per group of
# counters: [kind, offset into ``counts``, parameter, first column, columns]: the group reads
# columns [first, first + columns) of the predictions and targets (a model's whole output, or one
# output of several side by side); ``counts`` float64, summed over the batches of an epoch; the
# metrics follow from them (``fastnn.metrics.from_counts``).
# - CONFUSION, one column: [tp, fp, tn, fn], prediction and target > 0.5 positive.
# - CLASS_CONFUSION, C columns: [tp per class | fp per class | fn per class], classes by argmax.
# - SCORE_HISTOGRAM, parameter T buckets: per column c, positives then negatives counted by
#   score bucket min(floor(score * T), T - 1) at counts[off + (2c + negative) T + bucket].
# - REGRESSION_SUMS, C columns: per column [squared error, absolute error, target, target²]
#   sums, then the sum of the rows' cosines and the number of rows.
# - TOP_K, parameter k: rows whose target class is among the k highest scores (ties ranked as
#   scikit-learn's top_k_accuracy_score: among equal scores the higher class index first).
# - CORRECT: rows that ``correct_row`` counts right (the accuracy of one output of several; a
#   model's own accuracy comes with its loss, ``count_correct``).
CONFUSION, CLASS_CONFUSION, SCORE_HISTOGRAM, REGRESSION_SUMS, TOP_K, CORRECT = range(6)
SPEC_COLUMNS = 5


@kernel(inline=True)
def add_count(counts, index, value):
    """counts[index] += value. The CUDA twin adds atomically (its rows run in parallel): it
    compiles ``metric_row_counts`` with its own ``add_count`` bound in this one's place."""
    counts[index] += value


@kernel(inline=True)
def metric_row_counts(kind, off, param, counts, pred, target, lo, cols):
    """Add the counters of one group of ``spec`` ([kind, off, param]) for the row at ``lo`` of
    flat arrays to ``counts``."""
    if kind == CONFUSION:
        p = pred[lo] > 0.5
        t = target[lo] > 0.5
        add_count(counts, off + (0 if p and t else (1 if p else (2 if not t else 3))), 1.0)
    elif kind == CLASS_CONFUSION:
        bp = row_argmax(pred, lo, cols)
        bt = row_argmax(target, lo, cols)
        if bp == bt:
            add_count(counts, off + bp, 1.0)
        else:
            add_count(counts, off + cols + bp, 1.0)
            add_count(counts, off + 2 * cols + bt, 1.0)
    elif kind == SCORE_HISTOGRAM:
        for j in range(cols):
            s = pred[lo + j]
            b = param - 1
            if s < 1.0:  # NaN fails every comparison: the top bucket, never out of range
                b = int(s * param) if s > 0.0 else 0
            negative = 0 if target[lo + j] > 0.5 else 1
            add_count(counts, off + (2 * j + negative) * param + b, 1.0)
    elif kind == REGRESSION_SUMS:
        dot = 0.0
        nt = 0.0
        npred = 0.0
        for j in range(cols):
            t = np.float64(target[lo + j])
            p = np.float64(pred[lo + j])
            e = p - t
            add_count(counts, off + 4 * j, e * e)
            add_count(counts, off + 4 * j + 1, abs(e))
            add_count(counts, off + 4 * j + 2, t)
            add_count(counts, off + 4 * j + 3, t * t)
            dot += t * p
            nt += t * t
            npred += p * p
        norm = math.sqrt(nt * npred)
        if norm > 0.0:
            add_count(counts, off + 4 * cols, dot / norm)
        add_count(counts, off + 4 * cols + 1, 1.0)
    elif kind == TOP_K:
        bt = row_argmax(target, lo, cols)
        above = 0
        for j in range(cols):
            if pred[lo + j] > pred[lo + bt] or (pred[lo + j] == pred[lo + bt] and j > bt):
                above += 1
        if above < param:
            add_count(counts, off, 1.0)
    elif kind == CORRECT:
        add_count(counts, off, 1.0 * correct_row(pred, target, lo, cols))


@kernel
def metric_counts(spec, counts, pred, target):
    """Add the counters of every row of ``spec`` for this batch's (pred, target) to ``counts``."""
    for m in range(spec.shape[0]):
        kind, off, param, first, cols = spec[m, 0], spec[m, 1], spec[m, 2], spec[m, 3], spec[m, 4]
        if kind < CONFUSION or kind > CORRECT or first < 0 or cols < 1 or first + cols > pred.shape[1]:
            raise ValueError("metric counter spec out of range")
        for i in range(pred.shape[0]):
            metric_row_counts(kind, off, param, counts, pred[i], target[i], first, cols)
