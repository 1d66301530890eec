"""Loss kernels: ``<name>_forward(pred, target) -> float`` and ``<name>_backward(dpred, pred, target)``.

``pred`` and ``target`` are (B, C) arrays; the value is accumulated in float64 and returned;
the backward writes dL/dpred for the same reduction as the forward. Each docstring names
the PyTorch (or Keras, where PyTorch has none) function whose value it equals.

Two pairs are fused with the activation before them, because their joint gradient is both
cheaper and exact where the chain rule through the activation would lose precision:
softmax + cross-entropy (dz = p - y) and sigmoid + binary cross-entropy (dz = p - y).
"""
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


@kernel(inline=True)
def mse_forward(pred, target):
    """mean((pred - target)²) over all elements: torch.nn.MSELoss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            d = np.float64(pred[i, j]) - np.float64(target[i, j])
            total += d * d
    return total / pred.size


@kernel(inline=True)
def mse_backward(dpred, pred, target):
    scale = pred.dtype.type(2.0 / pred.size)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = scale * (pred[i, j] - target[i, j])


@kernel(inline=True)
def sse_forward(pred, target):
    """sum((pred - target)²) over all elements: torch.nn.MSELoss(reduction='sum')."""
    return mse_forward(pred, target) * pred.size


@kernel(inline=True)
def sse_backward(dpred, pred, target):
    two = pred.dtype.type(2)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = two * (pred[i, j] - target[i, j])


@kernel(inline=True)
def mae_forward(pred, target):
    """mean(|pred - target|): torch.nn.L1Loss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            total += abs(np.float64(pred[i, j]) - np.float64(target[i, j]))
    return total / pred.size


@kernel(inline=True)
def mae_backward(dpred, pred, target):
    """sign(pred - target) / N, with 0 where they are equal (as torch.sign)."""
    scale = pred.dtype.type(1.0 / pred.size)
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = scale * np.sign(pred[i, j] - target[i, j])


@kernel(inline=True)
def mape_forward(pred, target):
    """100 * mean(|target - pred| / max(|target|, eps)): keras.losses.MeanAbsolutePercentageError."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            t = np.float64(target[i, j])
            total += abs(t - np.float64(pred[i, j])) / max(abs(t), PROB_EPSILON)
    return 100.0 * total / pred.size


@kernel(inline=True)
def mape_backward(dpred, pred, target):
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            t = np.float64(target[i, j])
            g = 100.0 * np.sign(np.float64(pred[i, j]) - t) / (max(abs(t), PROB_EPSILON) * pred.size)
            dpred[i, j] = g


@kernel(inline=True)
def msle_forward(pred, target):
    """mean((log1p(max(pred, eps)) - log1p(max(target, eps)))²): keras.losses.MeanSquaredLogarithmicError."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            d = (np.log1p(max(np.float64(pred[i, j]), PROB_EPSILON))
                 - np.log1p(max(np.float64(target[i, j]), PROB_EPSILON)))
            total += d * d
    return total / pred.size


@kernel(inline=True)
def msle_backward(dpred, pred, target):
    """Zero where pred was clamped at eps, as the clamp's derivative."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            p = np.float64(pred[i, j])
            if p <= PROB_EPSILON:
                dpred[i, j] = 0
            else:
                d = np.log1p(p) - np.log1p(max(np.float64(target[i, j]), PROB_EPSILON))
                dpred[i, j] = 2.0 * d / ((1.0 + p) * pred.size)


@kernel(inline=True)
def row_dot_products(pred, target, i):
    """(<p, p>, <t, t>, <p, t>) of row i, in float64."""
    pp = 0.0
    tt = 0.0
    pt = 0.0
    for j in range(pred.shape[1]):
        p = np.float64(pred[i, j])
        t = np.float64(target[i, j])
        pp += p * p
        tt += t * t
        pt += p * t
    return pp, tt, pt


@kernel(inline=True)
def cosine_similarity_forward(pred, target):
    """-mean over rows of <p/|p|, t/|t|>: keras.losses.CosineSimilarity (norms floored at 1e-6)."""
    total = 0.0
    for i in range(pred.shape[0]):
        pp, tt, pt = row_dot_products(pred, target, i)
        total += pt / (np.sqrt(max(pp, COSINE_EPSILON)) * np.sqrt(max(tt, COSINE_EPSILON)))
    return -total / pred.shape[0]


@kernel(inline=True)
def cosine_similarity_backward(dpred, pred, target):
    """d/dp of -<p, t>/(|p||t|) / B = -(t/|t| - cos * p/|p|) / (|p| B)."""
    rows = pred.shape[0]
    for i in range(rows):
        pp, tt, pt = row_dot_products(pred, target, i)
        np_ = np.sqrt(max(pp, COSINE_EPSILON))
        nt = np.sqrt(max(tt, COSINE_EPSILON))
        cos = pt / (np_ * nt)
        for j in range(pred.shape[1]):
            if pp > COSINE_EPSILON:
                g = (np.float64(target[i, j]) / nt - cos * np.float64(pred[i, j]) / np_) / np_
            else:  # the floored norm is a constant: only the numerator varies
                g = np.float64(target[i, j]) / (np_ * nt)
            dpred[i, j] = -g / rows


@kernel(inline=True)
def cross_entropy_forward(pred, target):
    """mean over rows of -sum_j t_j log(max(p_j, eps)), pred being probabilities.

    After a Softmax layer this equals torch.nn.CrossEntropyLoss() on the logits (class
    indices or probability targets), up to the clamp at eps = 1e-7 on each probability.
    """
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            t = np.float64(target[i, j])
            if t != 0.0:
                total -= t * np.log(max(np.float64(pred[i, j]), PROB_EPSILON))
    return total / pred.shape[0]


@kernel(inline=True)
def cross_entropy_backward(dpred, pred, target):
    """-t / p / B, zero where p was clamped."""
    rows = pred.shape[0]
    for i in range(rows):
        for j in range(pred.shape[1]):
            p = np.float64(pred[i, j])
            dpred[i, j] = -np.float64(target[i, j]) / (p * rows) if p > PROB_EPSILON else 0.0


@kernel(inline=True)
def softmax_cross_entropy_backward(dlogits, probs, target):
    """dL/dz for L = cross_entropy(softmax(z)): (p * sum_j t_j - t) / B, i.e. (p - t)/B for one-hot t."""
    rows = probs.shape[0]
    inv_rows = probs.dtype.type(1.0 / rows)
    for i in range(rows):
        mass = probs.dtype.type(0)
        for j in range(probs.shape[1]):
            mass += target[i, j]
        for j in range(probs.shape[1]):
            dlogits[i, j] = (probs[i, j] * mass - target[i, j]) * inv_rows


@kernel(inline=True)
def binary_cross_entropy_forward(pred, target):
    """-mean(t log p + (1-t) log(1-p)) with each log clamped at -100: torch.nn.BCELoss()."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            p = np.float64(pred[i, j])
            t = np.float64(target[i, j])
            # A NaN p fails both tests and reaches the total (max keeps a NaN first argument):
            # a diverged network must not score a finite loss, which train_batches would miss.
            lp = BCE_LOG_MIN if p <= 0 else max(np.log(p), BCE_LOG_MIN)
            lq = BCE_LOG_MIN if p >= 1 else max(np.log1p(-p), BCE_LOG_MIN)
            total -= t * lp + (1.0 - t) * lq
    return total / pred.size


@kernel(inline=True)
def binary_cross_entropy_backward(dpred, pred, target):
    """(p - t) / max(p(1-p), 1e-12) / N, as torch's BCELoss backward."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            p = np.float64(pred[i, j])
            dpred[i, j] = (p - np.float64(target[i, j])) / (max(p * (1.0 - p), BCE_GRAD_EPSILON) * pred.size)


@kernel(inline=True)
def sigmoid_binary_cross_entropy_backward(dlogits, probs, target):
    """dL/dz for L = binary_cross_entropy(sigmoid(z)): (p - t) / N."""
    scale = probs.dtype.type(1.0 / probs.size)
    for i in range(probs.shape[0]):
        for j in range(probs.shape[1]):
            dlogits[i, j] = (probs[i, j] - target[i, j]) * scale


@kernel(inline=True)
def kl_divergence_forward(pred, target):
    """mean over rows of sum_j t_j log(t_j / p_j), both clipped to [eps, 1]: keras.losses.KLDivergence
    (torch.nn.KLDivLoss(reduction='batchmean') on log(pred))."""
    total = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            t = min(max(np.float64(target[i, j]), PROB_EPSILON), 1.0)
            p = min(max(np.float64(pred[i, j]), PROB_EPSILON), 1.0)
            total += t * np.log(t / p)
    return total / pred.shape[0]


@kernel(inline=True)
def kl_divergence_backward(dpred, pred, target):
    """-t / p / B inside the clip, zero where pred was clipped."""
    rows = pred.shape[0]
    for i in range(rows):
        for j in range(pred.shape[1]):
            p = np.float64(pred[i, j])
            if PROB_EPSILON < p < 1.0:
                t = min(max(np.float64(target[i, j]), PROB_EPSILON), 1.0)
                dpred[i, j] = -t / (p * rows)
            else:
                dpred[i, j] = 0.0


@kernel(inline=True)
def perceptron_forward(pred, target):
    """Fraction of outputs that differ from their 0/1 target (the perceptron's error rate)."""
    wrong = 0.0
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if pred[i, j] != target[i, j]:
                wrong += 1.0
    return wrong / pred.size


@kernel(inline=True)
def perceptron_backward(dpred, pred, target):
    """pred - target, summed (not averaged) over the batch: with a Heaviside layer (whose
    backward passes gradients straight through) and SGD(lr), one sample's update is Rosenblatt's
    rule w += lr (t - y) x, b += lr (t - y)."""
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            dpred[i, j] = pred[i, j] - target[i, j]


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
