"""Loss kernels: ``<name>_forward(pred, target) -> float`` and ``<name>_backward(dpred, pred, target)``.

``pred`` and ``target`` are (B, C) arrays; the value is accumulated in float64 and returned;
the backward writes dL/dpred for the same reduction as the forward. Each docstring names
the PyTorch (or Keras, where PyTorch has none) function whose value it equals.

Two pairs are fused with the activation before them, because their joint gradient is both
cheaper and exact where the chain rule through the activation would lose precision:
softmax + cross-entropy (dz = p - y) and sigmoid + binary cross-entropy (dz = p - y).

One source for both targets: each formula is written once, in ``loss_formulas`` (with the loss
codes and clamps, all importable from here too); the kernels here loop them, and
``fastnn.cuda.losses`` compiles them as CUDA device functions (``fastnn.cuda.device_twin``).
"""
import numpy as np

from ..config import kernel
# The formulas and codes are part of this module's interface too (``fastnn.cuda.losses`` and the tests read them here).
from .loss_formulas import (  # noqa: F401
    BCE_GRAD_EPSILON, BCE_LOG_MIN, BINARY_CROSS_ENTROPY, COSINE_EPSILON, COSINE_SIMILARITY, CROSS_ENTROPY,
    KL_DIVERGENCE, MAE, MAPE, MSE, MSLE, PERCEPTRON, PROB_EPSILON, SSE, absolute_error_gradient, absolute_error_value,
    binary_cross_entropy_gradient, binary_cross_entropy_value, cosine_similarity_row_gradient,
    cosine_similarity_row_value, cross_entropy_gradient, cross_entropy_value, kl_divergence_gradient,
    kl_divergence_value, loss_finish, nan_max, nan_min, percentage_error_gradient, percentage_error_value,
    perceptron_gradient, perceptron_value, row_dot_products, sigmoid_binary_cross_entropy_row_gradient, sign,
    softmax_cross_entropy_row_gradient, squared_error_gradient, squared_error_value, squared_log_error_gradient,
    squared_log_error_value)


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
def weighted_loss_forward(loss, pred, target, weights):
    """Keras' ``sum_over_batch_size`` reduction of per-row weighted losses: sum_i w_i l_i / B, l_i
    being row i's loss (its mean over columns for an element-wise loss, as Keras'), B the rows
    (torch: ``(loss(reduction='none').mean(1) * w).sum() / B``); the summed losses (SSE) are
    not divided. Weights of 1 give the unweighted loss up to the order of the additions."""
    total = 0.0
    for i in range(pred.shape[0]):
        total += np.float64(weights[i]) * loss_forward(loss, pred[i: i + 1], target[i: i + 1])
    return weighted_loss_finish(loss, total, pred.shape[0])


@kernel(inline=True)
def weighted_loss_finish(loss, total, rows):
    """The weighted loss from sum_i w_i l_i over ``rows`` rows: divided by the rows, but for the
    summed SSE."""
    if loss == SSE or rows == 0:
        return total
    return total / rows


@kernel(inline=True)
def weight_rows(dpred, weights):
    """dpred[i] *= w_i: every loss's gradient of row i depends on row i alone, its reduction
    being a constant (1/B, 1/N or 1), so the weighted loss's gradient is the unweighted one's
    rows scaled; for the softmax and sigmoid fusions, dL/dz too. Weights of 1 change no bit."""
    for i in range(dpred.shape[0]):
        w = dpred.dtype.type(weights[i])
        for j in range(dpred.shape[1]):
            dpred[i, j] *= w


@kernel(inline=True)
def batch_weight_scale(weights, order, lo, rows):
    """rows / (the sum of the weights of the batch's ``rows`` rows from ``lo``), over the whole
    batch (every rank holds all the weights); 0 for a batch whose weights are all 0, which then
    changes nothing (scikit-learn's would divide by zero)."""
    total = 0.0
    for r in range(rows):
        total += weights[order[lo + r]]
    return rows / total if total > 0 else 0.0


@kernel(inline=True)
def scale_values(values, scale):
    """values *= scale (the whole gradient buffer, for ``batch_weight_scale``)."""
    for i in range(values.size):
        values[i] *= scale


@kernel
def scale_block(block, scale):
    """block *= scale, row by row: a 2-D view such as one output's columns of the loss gradient
    (``user_losses.output_loss_kernels``)."""
    for i in range(block.shape[0]):
        scale_values(block[i], scale)


# Each loss's (forward, backward) kernels by code, for code that names one loss: a model's step
# compiles its own loss's alone (``fastnn.user_losses.loss_kernels``), not ``loss_forward``'s ten.
LOSS_KERNELS = {MSE: (mse_forward, mse_backward), SSE: (sse_forward, sse_backward), MAE: (mae_forward, mae_backward),
                MAPE: (mape_forward, mape_backward), MSLE: (msle_forward, msle_backward),
                COSINE_SIMILARITY: (cosine_similarity_forward, cosine_similarity_backward),
                CROSS_ENTROPY: (cross_entropy_forward, cross_entropy_backward),
                BINARY_CROSS_ENTROPY: (binary_cross_entropy_forward, binary_cross_entropy_backward),
                KL_DIVERGENCE: (kl_divergence_forward, kl_divergence_backward),
                PERCEPTRON: (perceptron_forward, perceptron_backward)}


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
