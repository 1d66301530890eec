"""The loss formulas, one element (or one row) at a time: the single source that the CPU's loss
kernels (``fastnn.kernels.losses``) loop and ``fastnn.cuda.losses`` compiles as CUDA device
functions (``fastnn.cuda.device_twin``), with the loss codes and the clamps they share.

Each formula is an element function (``<name>_value``, ``<name>_gradient``) or a row function on
flat arrays (cosine similarity, the gradients fused with softmax and sigmoid), and the reduction
is ``loss_finish``. Clamps use ``nan_max``/``nan_min``, so a NaN prediction gives a NaN loss on
both targets.
"""
import math

import numpy as np

from ..config import kernel

MSE, SSE, MAE, MAPE, MSLE, COSINE_SIMILARITY, CROSS_ENTROPY, BINARY_CROSS_ENTROPY, \
    KL_DIVERGENCE, PERCEPTRON = range(10)

# Clamp of probabilities inside logarithms, as Keras' backend epsilon.
PROB_EPSILON = 1e-7
# torch.nn.BCELoss clamps each log term at -100.
BCE_LOG_MIN = -100.0
# torch's BCE backward divides by max(p(1-p), 1e-12).
BCE_GRAD_EPSILON = 1e-12
# Keras' l2_normalize floor on the squared norm.
COSINE_EPSILON = 1e-12


# ---- the formulas, one element (or row) at a time ------------------------------------------------
# ``<name>_value(p, t)`` is one element's term of the loss (float64 in and out), before the
# reduction ``loss_finish``; ``<name>_gradient`` is its dL/dpred; cosine similarity and the two
# fused gradients work on one row of flat arrays (pred[lo:lo+cols]; the CPU passes a row view and
# lo = 0). The (B, C) kernels of ``losses`` loop them, and ``fastnn.cuda.losses`` compiles these very
# functions for its loss kernel, a thread per row. ``math``'s functions and ``nan_max``/``nan_min``
# compile for both targets; constants in the arrays' dtype come from the caller.

@kernel(inline=True)
def nan_max(a, b):
    """max(a, b) for a bound ``b`` that is never NaN (every use clamps at a constant), NaN when
    ``a`` is. Python's max, and CUDA's (fmax), return the other operand of a NaN: a clamp such as
    max(p, eps) would give a diverged model a finite loss.

    One select and no branch, so that the loss loops still vectorize (tested for NaN first,
    KL divergence's forward took 16.1 us instead of 13.3 on the benchmark's 256 x 10): a NaN
    ``a`` fails ``b > a`` and is kept."""
    return b if b > a else a


@kernel(inline=True)
def nan_min(a, b):
    """min(a, b) for a bound ``b`` that is never NaN, NaN when ``a`` is (see ``nan_max``)."""
    return b if b < a else a


@kernel(inline=True)
def sign(v, one):
    """1, -1 or 0 in ``one``'s type; NaN stays NaN (as np.sign and torch.sign)."""
    if v > 0:
        return one
    if v < 0:
        return -one
    return v


@kernel(inline=True)
def squared_error_value(p, t):
    d = p - t
    return d * d


@kernel(inline=True)
def squared_error_gradient(p, t, scale):
    """scale * (p - t), in the arrays' dtype: scale = 2 / N (MSE) or 2 (SSE)."""
    return scale * (p - t)


@kernel(inline=True)
def absolute_error_value(p, t):
    return abs(p - t)


@kernel(inline=True)
def absolute_error_gradient(p, t, scale, one):
    """scale * sign(p - t), 0 where they are equal; scale = 1 / N."""
    return scale * sign(p - t, one)


@kernel(inline=True)
def percentage_error_value(p, t):
    return abs(t - p) / nan_max(abs(t), PROB_EPSILON)


@kernel(inline=True)
def percentage_error_gradient(p, t, size):
    return 100.0 * sign(p - t, 1.0) / (nan_max(abs(t), PROB_EPSILON) * size)


@kernel(inline=True)
def squared_log_error_value(p, t):
    d = math.log1p(nan_max(p, PROB_EPSILON)) - math.log1p(nan_max(t, PROB_EPSILON))
    return d * d


@kernel(inline=True)
def squared_log_error_gradient(p, t, size):
    """Zero where pred was clamped at eps, as the clamp's derivative."""
    if p <= PROB_EPSILON:
        return 0.0
    d = math.log1p(p) - math.log1p(nan_max(t, PROB_EPSILON))
    return 2.0 * d / ((1.0 + p) * size)


@kernel(inline=True)
def cross_entropy_value(p, t):
    return -t * math.log(nan_max(p, PROB_EPSILON)) if t != 0.0 else 0.0


@kernel(inline=True)
def cross_entropy_gradient(p, t, rows):
    """-t / p / B, zero where p was clamped."""
    return -t / (p * rows) if p > PROB_EPSILON else 0.0


@kernel(inline=True)
def binary_cross_entropy_value(p, t):
    """Each log clamped at -100. A NaN p fails both tests and reaches the value: a diverged
    network must not score a finite loss, which the training loop would miss."""
    lp = BCE_LOG_MIN if p <= 0.0 else nan_max(math.log(p), BCE_LOG_MIN)
    lq = BCE_LOG_MIN if p >= 1.0 else nan_max(math.log1p(-p), BCE_LOG_MIN)
    return -(t * lp + (1.0 - t) * lq)


@kernel(inline=True)
def binary_cross_entropy_gradient(p, t, size):
    """(p - t) / max(p(1-p), 1e-12) / N, as torch's BCELoss backward."""
    return (p - t) / (nan_max(p * (1.0 - p), BCE_GRAD_EPSILON) * size)


@kernel(inline=True)
def kl_divergence_value(p, t):
    t = nan_min(nan_max(t, PROB_EPSILON), 1.0)
    p = nan_min(nan_max(p, PROB_EPSILON), 1.0)
    return t * math.log(t / p)


@kernel(inline=True)
def kl_divergence_gradient(p, t, rows):
    """-t / p / B inside the clip, zero where pred was clipped."""
    if PROB_EPSILON < p < 1.0:
        return -nan_min(nan_max(t, PROB_EPSILON), 1.0) / (p * rows)
    return 0.0


@kernel(inline=True)
def perceptron_value(p, t):
    """1 for an output that differs from its target (NaN does)."""
    return 1.0 if p != t else 0.0


@kernel(inline=True)
def perceptron_gradient(p, t):
    """p - t, summed over the batch, not averaged."""
    return p - t


@kernel(inline=True)
def row_dot_products(pred, target, lo, cols):
    """(<p, p>, <t, t>, <p, t>) of the row at ``lo``, in float64."""
    pp = 0.0
    tt = 0.0
    pt = 0.0
    for j in range(cols):
        p = np.float64(pred[lo + j])
        t = np.float64(target[lo + j])
        pp += p * p
        tt += t * t
        pt += p * t
    return pp, tt, pt


@kernel(inline=True)
def cosine_similarity_row_value(pred, target, lo, cols):
    """<p/|p|, t/|t|> of the row at ``lo``, float64 (norms floored at sqrt(1e-12))."""
    pp, tt, pt = row_dot_products(pred, target, lo, cols)
    return pt / (math.sqrt(nan_max(pp, COSINE_EPSILON)) * math.sqrt(nan_max(tt, COSINE_EPSILON)))


@kernel(inline=True)
def cosine_similarity_row_gradient(dz, pred, target, lo, cols, rows):
    """d/dp of -<p, t>/(|p||t|) / B = -(t/|t| - cos * p/|p|) / (|p| B) for the row at ``lo``."""
    pp, tt, pt = row_dot_products(pred, target, lo, cols)
    np_ = math.sqrt(nan_max(pp, COSINE_EPSILON))
    nt = math.sqrt(nan_max(tt, COSINE_EPSILON))
    cos = pt / (np_ * nt)
    # Reciprocals taken once: divisions left in the loop are turned into products (fastmath's
    # arcp) in some callers and not others, and the results would differ by an ulp.
    inv_np, inv_nt, inv_rows = 1.0 / np_, 1.0 / nt, 1.0 / rows
    for j in range(cols):
        if pp > COSINE_EPSILON:
            g = (np.float64(target[lo + j]) * inv_nt - cos * np.float64(pred[lo + j]) * inv_np) * inv_np
        else:  # the floored norm is a constant: only the numerator varies
            g = np.float64(target[lo + j]) * inv_np * inv_nt
        dz[lo + j] = -g * inv_rows


@kernel(inline=True)
def softmax_cross_entropy_row_gradient(dz, probs, target, lo, cols, rows):
    """dL/dz of one row for L = cross_entropy(softmax(z)): (p * sum_j t_j - t) / B."""
    inv_rows = dz.dtype.type(1.0 / rows)
    mass = dz.dtype.type(0)
    for j in range(cols):
        mass += target[lo + j]
    for j in range(cols):
        dz[lo + j] = (probs[lo + j] * mass - target[lo + j]) * inv_rows


@kernel(inline=True)
def sigmoid_binary_cross_entropy_row_gradient(dz, probs, target, lo, cols, rows):
    """dL/dz of one row for L = binary_cross_entropy(sigmoid(z)): (p - t) / N."""
    scale = dz.dtype.type(1.0 / (rows * cols))
    for j in range(cols):
        dz[lo + j] = (probs[lo + j] - target[lo + j]) * scale


@kernel(inline=True)
def loss_finish(loss, total, rows, cols):
    """The loss from the sum of its terms: the mean over elements, or over rows, or the sum, as
    each loss's docstring says."""
    size = rows * cols
    if loss == SSE:
        return total / size * size  # as mse * size
    if loss == MAPE:
        return 100.0 * total / size
    if loss == CROSS_ENTROPY or loss == KL_DIVERGENCE:
        return total / rows
    if loss == COSINE_SIMILARITY:
        return -total / rows
    return total / size
