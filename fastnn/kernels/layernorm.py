"""Layer normalization: ``layernorm_forward(out, x, params, w, b, epsilon, flags)`` and
``layernorm_backward(dx, grads, dout, x, params, w, b, epsilon, flags, stats)``, with
``torch.nn.LayerNorm``'s conventions (Ba, Kiros & Hinton, 2016) and Keras' arguments.

Each row of a (rows, n) batch is normalized with its own mean and biased variance, in training
and at inference alike (no running statistics):
out = gamma * (x - mean) / sqrt(var + epsilon) + beta. ``flags`` says which of gamma (``SCALE``)
and beta (``CENTER``) the layer has; a layer's trained vectors lie in ``params`` from ``w``
(gamma, when scaled) and ``b`` (beta, when centered), n values each.

Backward, with xhat = (x - mean) / sqrt(var + epsilon) and g = dout * gamma (dout without gamma):
dbeta = sum_r dout, dgamma = sum_r dout * xhat,
dx = (g - mean_j(g) - xhat * mean_j(g * xhat)) / sqrt(var + epsilon).

The row functions work on one row of flat row-major (rows, n) arrays and the column function
on one feature, the index first: on CUDA this very source runs one thread per row or per
feature (``fastnn.cuda.EachIndex``, launched by ``fastnn.cuda.dispatch``). The backward pass keeps each row's mean and 1/std in ``stats``
(float64, the workspace's scratch: ``layernorm_stats_size``) for the feature sums. The CPU form
of those sums walks the batch row by row (a column walk reads memory a row apart at every step)
with the same arithmetic in the same order per feature. Sums are float64.
"""
import math

from ..config import kernel

# ``flags`` bits: the layer has beta (center) / gamma (scale).
CENTER, SCALE = 1, 2


def layernorm_stats_size(rows, n):
    """Float64 scratch values the backward pass needs: mean and 1/std per row, then two
    accumulators per feature (the CPU form's)."""
    return 2 * rows + 2 * n


@kernel(inline=True)
def layernorm_row_statistics(x, r, n, epsilon):
    """(mean, 1 / sqrt(biased variance + epsilon)) of row r, in float64, by two passes."""
    mean = 0.0
    for j in range(n):
        mean += x[r * n + j]
    mean /= n
    var = 0.0
    for j in range(n):
        d = x[r * n + j] - mean
        var += d * d
    return mean, 1.0 / math.sqrt(var / n + epsilon)


@kernel(inline=True)
def layernorm_forward_row(r, out, x, params, w, b, n, epsilon, flags):
    """Row r of the layer's output."""
    mean, inv_std = layernorm_row_statistics(x, r, n, epsilon)
    for j in range(n):
        y = (x[r * n + j] - mean) * inv_std
        if flags & SCALE:
            y *= params[w + j]
        if flags & CENTER:
            y += params[b + j]
        out[r * n + j] = y


@kernel(inline=True)
def layernorm_backward_row(r, dx, dout, x, params, w, n, epsilon, flags, stats, want_dx):
    """Row r's mean and 1/std into ``stats[2r]``, ``stats[2r + 1]``; dx of row r (which may be
    ``dout``) when ``want_dx``."""
    mean, inv_std = layernorm_row_statistics(x, r, n, epsilon)
    stats[2 * r] = mean
    stats[2 * r + 1] = inv_std
    if want_dx:
        sum_g = 0.0
        sum_gx = 0.0
        for j in range(n):
            g = 1.0 * dout[r * n + j]
            if flags & SCALE:
                g *= params[w + j]
            sum_g += g
            sum_gx += g * (x[r * n + j] - mean) * inv_std
        mean_g = sum_g / n
        mean_gx = sum_gx / n
        for j in range(n):
            g = 1.0 * dout[r * n + j]
            if flags & SCALE:
                g *= params[w + j]
            xhat = (x[r * n + j] - mean) * inv_std
            dx[r * n + j] = (g - mean_g - xhat * mean_gx) * inv_std


@kernel(inline=True)
def layernorm_param_grads_column(j, grads, dout, x, w, b, rows, n, flags, stats):
    """dgamma and dbeta of feature j into ``grads``, from the rows' statistics in ``stats``."""
    dgamma = 0.0
    dbeta = 0.0
    for r in range(rows):
        g = 1.0 * dout[r * n + j]
        dbeta += g
        dgamma += g * (x[r * n + j] - stats[2 * r]) * stats[2 * r + 1]
    if flags & SCALE:
        grads[w + j] = dgamma
    if flags & CENTER:
        grads[b + j] = dbeta


@kernel(inline=True)
def layernorm_forward(out, x, params, w, b, epsilon, flags):
    """out (rows, n) = the layer on x (rows, n)."""
    rows, n = x.shape
    flat_out, flat_x = out.reshape(-1), x.reshape(-1)
    for r in range(rows):
        layernorm_forward_row(r, flat_out, flat_x, params, w, b, n, epsilon, flags)


@kernel(inline=True)
def layernorm_backward(dx, grads, dout, x, params, w, b, epsilon, flags, stats):
    """dgamma, dbeta into ``grads`` and dx (rows, n) from dout (rows, n) and the layer's input x;
    ``dx`` with zero rows skips it (the input batch needs none); ``dx`` may be ``dout`` (the
    feature sums are taken first). ``stats``: float64 scratch of ``layernorm_stats_size``."""
    rows, n = x.shape
    flat_dout, flat_x = dout.reshape(-1), x.reshape(-1)
    for r in range(rows):
        layernorm_backward_row(r, flat_dout, flat_dout, flat_x, params, w, n, epsilon, flags, stats, False)
    # ``layernorm_param_grads_column``'s sums, accumulated row by row in the same order.
    acc = stats[2 * rows: 2 * rows + 2 * n]
    for j in range(2 * n):
        acc[j] = 0.0
    for r in range(rows):
        mean, inv_std = stats[2 * r], stats[2 * r + 1]
        for j in range(n):
            g = 1.0 * dout[r, j]
            acc[n + j] += g
            acc[j] += g * (x[r, j] - mean) * inv_std
    for j in range(n):
        if flags & SCALE:
            grads[w + j] = acc[j]
        if flags & CENTER:
            grads[b + j] = acc[n + j]
    if dx.shape[0] > 0:
        flat_dx = dx.reshape(-1)
        for r in range(rows):
            layernorm_backward_row(r, flat_dx, flat_dout, flat_x, params, w, n, epsilon, flags, stats, True)
