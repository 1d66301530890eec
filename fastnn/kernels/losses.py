"""Loss kernels: ``<name>_forward(pred, target) -> float`` and ``<name>_backward(dpred, pred, target)``.

``pred`` and ``target`` are (B, C) arrays; the value is accumulated in float64 and returned;
the backward writes dL/dpred for the same reduction as the forward. Each docstring names
the PyTorch (or Keras, where PyTorch has none) function whose value it equals.

Two pairs are fused with the activation before them, because their joint gradient is both
cheaper and exact where the chain rule through the activation would lose precision:
softmax + cross-entropy (dz = p - y) and sigmoid + binary cross-entropy (dz = p - y).

One source for both targets: each formula is written once, as an element function
(``<name>_value``, ``<name>_gradient``) or a row function on flat arrays (cosine similarity, the
fused gradients), with the reduction in ``loss_finish``; the kernels here loop them, and
``fastnn.cuda.losses`` compiles them as CUDA device functions (``fastnn.cuda.device_twin``).
Clamps use ``nan_max``/``nan_min``, so a NaN prediction gives a NaN loss on both targets.
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
# lo = 0). The (B, C) kernels below loop them, and ``fastnn.cuda.losses`` compiles these very
# functions for its loss kernel, a thread per row. ``math``'s functions and ``nan_max``/``nan_min``
# compile for both targets; constants in the arrays' dtype come from the caller.

@kernel(inline=True)
def nan_max(a, b):
    """max(a, b), NaN when either is. Python's max, and CUDA's (fmax), return the other operand
    of a NaN: a clamp such as max(p, eps) would give a diverged model a finite loss."""
    if a != a or b != b:
        return a + b
    return a if a > b else b


@kernel(inline=True)
def nan_min(a, b):
    """min(a, b), NaN when either is (see ``nan_max``)."""
    if a != a or b != b:
        return a + b
    return a if a < b else b


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


# ---- the (B, C) kernels -------------------------------------------------------------------------

@kernel(inline=True)
def mse_forward(pred, target):
    """mean((pred - target)²) over all elements: torch.nn.MSELoss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += squared_error_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(MSE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def mse_backward(dpred, pred, target):
    scale = pred.dtype.type(2.0 / pred.size)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = squared_error_gradient(pred[i, j], target[i, j], scale)


@kernel(inline=True)
def sse_forward(pred, target):
    """sum((pred - target)²) over all elements: torch.nn.MSELoss(reduction='sum')."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += squared_error_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(SSE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def sse_backward(dpred, pred, target):
    two = pred.dtype.type(2)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = squared_error_gradient(pred[i, j], target[i, j], two)


@kernel(inline=True)
def mae_forward(pred, target):
    """mean(|pred - target|): torch.nn.L1Loss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += absolute_error_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(MAE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def mae_backward(dpred, pred, target):
    """sign(pred - target) / N, with 0 where they are equal (as torch.sign)."""
    scale, one = pred.dtype.type(1.0 / pred.size), pred.dtype.type(1)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = absolute_error_gradient(pred[i, j], target[i, j], scale, one)


@kernel(inline=True)
def mape_forward(pred, target):
    """100 * mean(|target - pred| / max(|target|, eps)): keras.losses.MeanAbsolutePercentageError."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += percentage_error_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(MAPE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def mape_backward(dpred, pred, target):
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = percentage_error_gradient(np.float64(pred[i, j]), np.float64(target[i, j]), pred.size)


@kernel(inline=True)
def msle_forward(pred, target):
    """mean((log1p(max(pred, eps)) - log1p(max(target, eps)))²): keras.losses.MeanSquaredLogarithmicError."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += squared_log_error_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(MSLE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def msle_backward(dpred, pred, target):
    """Zero where pred was clamped at eps, as the clamp's derivative."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = squared_log_error_gradient(np.float64(pred[i, j]), np.float64(target[i, j]), pred.size)


@kernel(inline=True)
def cosine_similarity_forward(pred, target):
    """-mean over rows of <p/|p|, t/|t|>: keras.losses.CosineSimilarity (norms floored at 1e-6)."""
    total = 0.0
    for i in range(pred.shape[0]):
        total += cosine_similarity_row_value(pred[i], target[i], 0, pred.shape[1])
    return loss_finish(COSINE_SIMILARITY, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def cosine_similarity_backward(dpred, pred, target):
    """d/dp of -<p, t>/(|p||t|) / B = -(t/|t| - cos * p/|p|) / (|p| B)."""
    for i in range(pred.shape[0]):
        cosine_similarity_row_gradient(dpred[i], pred[i], target[i], 0, pred.shape[1], pred.shape[0])


@kernel(inline=True)
def cross_entropy_forward(pred, target):
    """mean over rows of -sum_j t_j log(max(p_j, eps)), pred being probabilities.

    After a Softmax layer this equals torch.nn.CrossEntropyLoss() on the logits (class
    indices or probability targets), up to the clamp at eps = 1e-7 on each probability.
    """
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += cross_entropy_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(CROSS_ENTROPY, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def cross_entropy_backward(dpred, pred, target):
    """-t / p / B, zero where p was clamped."""
    rows = pred.shape[0]
    for i in range(rows):
        for j in range(pred.shape[1]):
            dpred[i, j] = cross_entropy_gradient(np.float64(pred[i, j]), np.float64(target[i, j]), rows)


@kernel(inline=True)
def softmax_cross_entropy_backward(dlogits, probs, target):
    """dL/dz for L = cross_entropy(softmax(z)): (p * sum_j t_j - t) / B, i.e. (p - t)/B for one-hot t."""
    rows, cols = probs.shape
    for i in range(rows):
        softmax_cross_entropy_row_gradient(dlogits[i], probs[i], target[i], 0, cols, rows)


@kernel(inline=True)
def binary_cross_entropy_forward(pred, target):
    """-mean(t log p + (1-t) log(1-p)) with each log clamped at -100: torch.nn.BCELoss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += binary_cross_entropy_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(BINARY_CROSS_ENTROPY, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def binary_cross_entropy_backward(dpred, pred, target):
    """(p - t) / max(p(1-p), 1e-12) / N, as torch's BCELoss backward."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = binary_cross_entropy_gradient(np.float64(pred[i, j]), np.float64(target[i, j]), pred.size)


@kernel(inline=True)
def sigmoid_binary_cross_entropy_backward(dlogits, probs, target):
    """dL/dz for L = binary_cross_entropy(sigmoid(z)): (p - t) / N."""
    rows, cols = probs.shape
    for i in range(rows):
        sigmoid_binary_cross_entropy_row_gradient(dlogits[i], probs[i], target[i], 0, cols, rows)


@kernel(inline=True)
def kl_divergence_forward(pred, target):
    """mean over rows of sum_j t_j log(t_j / p_j), both clipped to [eps, 1]: keras.losses.KLDivergence
    (torch.nn.KLDivLoss(reduction='batchmean') on log(pred))."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += kl_divergence_value(np.float64(pred[i, j]), np.float64(target[i, j]))
    return loss_finish(KL_DIVERGENCE, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def kl_divergence_backward(dpred, pred, target):
    """-t / p / B inside the clip, zero where pred was clipped."""
    rows = pred.shape[0]
    for i in range(rows):
        for j in range(pred.shape[1]):
            dpred[i, j] = kl_divergence_gradient(np.float64(pred[i, j]), np.float64(target[i, j]), rows)


@kernel(inline=True)
def perceptron_forward(pred, target):
    """Fraction of outputs that differ from their 0/1 target (the perceptron's error rate)."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += perceptron_value(pred[i, j], target[i, j])
    return loss_finish(PERCEPTRON, total, pred.shape[0], pred.shape[1])


@kernel(inline=True)
def perceptron_backward(dpred, pred, target):
    """pred - target, summed (not averaged) over the batch: with a Heaviside layer (whose
    backward passes gradients straight through) and SGD(lr), one sample's update is Rosenblatt's
    rule w += lr (t - y) x, b += lr (t - y)."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = perceptron_gradient(pred[i, j], target[i, j])


@kernel(inline=True)
def loss_is_summed(loss):
    """Whether the loss sums over the batch's rows (SSE, the perceptron's) rather than averaging."""
    return loss == SSE or loss == PERCEPTRON


@kernel
def loss_forward(loss, pred, target):
    """The value of loss ``loss`` (a code above)."""
    if loss == MSE:
        return mse_forward(pred, target)
    elif loss == SSE:
        return sse_forward(pred, target)
    elif loss == MAE:
        return mae_forward(pred, target)
    elif loss == MAPE:
        return mape_forward(pred, target)
    elif loss == MSLE:
        return msle_forward(pred, target)
    elif loss == COSINE_SIMILARITY:
        return cosine_similarity_forward(pred, target)
    elif loss == CROSS_ENTROPY:
        return cross_entropy_forward(pred, target)
    elif loss == BINARY_CROSS_ENTROPY:
        return binary_cross_entropy_forward(pred, target)
    elif loss == KL_DIVERGENCE:
        return kl_divergence_forward(pred, target)
    elif loss == PERCEPTRON:
        return perceptron_forward(pred, target)
    raise ValueError("unknown loss code")


@kernel
def loss_backward(loss, dpred, pred, target):
    if loss == MSE:
        mse_backward(dpred, pred, target)
    elif loss == SSE:
        sse_backward(dpred, pred, target)
    elif loss == MAE:
        mae_backward(dpred, pred, target)
    elif loss == MAPE:
        mape_backward(dpred, pred, target)
    elif loss == MSLE:
        msle_backward(dpred, pred, target)
    elif loss == COSINE_SIMILARITY:
        cosine_similarity_backward(dpred, pred, target)
    elif loss == CROSS_ENTROPY:
        cross_entropy_backward(dpred, pred, target)
    elif loss == BINARY_CROSS_ENTROPY:
        binary_cross_entropy_backward(dpred, pred, target)
    elif loss == KL_DIVERGENCE:
        kl_divergence_backward(dpred, pred, target)
    elif loss == PERCEPTRON:
        perceptron_backward(dpred, pred, target)
    else:
        raise ValueError("unknown loss code")
