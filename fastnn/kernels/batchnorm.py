"""Batch normalization: ``batchnorm_forward(out, x, params, w, b, training, momentum, epsilon, stats)``
and ``batchnorm_backward(dx, grads, dout, x, params, w, b, epsilon, stats)``, with ``torch.nn.BatchNorm1d``'s
conventions (Ioffe & Szegedy, 2015).

A layer's four vectors of width n lie in ``params`` from ``w``: gamma at ``w``, beta at ``b`` =
``w + n``, then the running mean and the running variance. Only gamma and beta are trained; the
running statistics are written by the forward pass in training and read at inference.

- Training: each column j of the batch is normalized with its batch mean and biased variance,
  out = gamma * (x - mean) / sqrt(var + epsilon) + beta, and the running statistics move as
  running = (1 - momentum) * running + momentum * batch, with the unbiased variance
  (var * rows / (rows - 1); a batch of one row adds its biased variance, 0).
- Inference: the same formula with the running mean and variance.
- Backward (training mode): with xhat = (x - mean) / sqrt(var + epsilon),
  dbeta = sum_r dout, dgamma = sum_r dout * xhat,
  dx = gamma / sqrt(var + epsilon) / rows * (rows * dout - dbeta - xhat * dgamma).
  The batch statistics are recomputed from x rather than kept from the forward pass, as
  Dropout recomputes its mask: no workspace, and the same numbers.
- Frozen (Keras' ``trainable=False``; the table's momentum -1): inference mode in training too,
  so its backward is that of a fixed affine map, dx = dout * gamma / sqrt(running var + epsilon),
  and gamma and beta get no gradient (no optimizer reads them).

The column functions work on one feature (column) of flat row-major (rows, n) arrays, the
feature's index first: on CUDA this very source runs one thread per feature
(``fastnn.cuda.EachIndex``, launched by ``fastnn.cuda.dispatch``). The CPU
forms (``batchnorm_forward``, ``batchnorm_backward``) walk the batch row by row with the same
arithmetic in the same order: they agree bit for bit in float32 and within an ulp in float64,
where the compiler may fuse a multiply-add in one loop and not the other (tested). Sums are
float64.
"""
import math

from ..config import kernel

# Float64 values per feature of the CPU passes' scratch (``stats``): five vectors of width n.
STATS_ROWS = 5


@kernel(inline=True)
def batchnorm_column_statistics(x, rows, n, j):
    """(mean, biased variance) of column j, in float64, by two passes (no cancellation)."""
    mean = 0.0
    for r in range(rows):
        mean += x[r * n + j]
    mean /= rows
    var = 0.0
    for r in range(rows):
        d = x[r * n + j] - mean
        var += d * d
    return mean, var / rows


@kernel(inline=True)
def batchnorm_forward_column(j, out, x, params, w, b, rows, n, training, momentum, epsilon):
    """Column j of the layer's output; in training also its running statistics."""
    if training:
        mean, var = batchnorm_column_statistics(x, rows, n, j)
        unbiased = var * rows / (rows - 1) if rows > 1 else var
        params[b + n + j] = (1.0 - momentum) * params[b + n + j] + momentum * mean
        params[b + 2 * n + j] = (1.0 - momentum) * params[b + 2 * n + j] + momentum * unbiased
    else:
        mean = 1.0 * params[b + n + j]
        var = 1.0 * params[b + 2 * n + j]
    scale = params[w + j] / math.sqrt(var + epsilon)
    shift = params[b + j] - mean * scale
    for r in range(rows):
        out[r * n + j] = x[r * n + j] * scale + shift


@kernel(inline=True)
def batchnorm_backward_column(j, dx, grads, dout, x, params, w, b, rows, n, epsilon, want_dx, frozen):
    """dgamma and dbeta of column j into ``grads``; dx (which may be ``dout``) when ``want_dx``.
    ``frozen``: the inference-mode backward (module docstring)."""
    if frozen:
        if want_dx:
            c = params[w + j] / math.sqrt(params[b + 2 * n + j] + epsilon)
            for r in range(rows):
                dx[r * n + j] = c * dout[r * n + j]
        return
    mean, var = batchnorm_column_statistics(x, rows, n, j)
    inv_std = 1.0 / math.sqrt(var + epsilon)
    dgamma = 0.0
    dbeta = 0.0
    for r in range(rows):
        g = 1.0 * dout[r * n + j]
        dbeta += g
        dgamma += g * (x[r * n + j] - mean) * inv_std
    grads[w + j] = dgamma
    grads[b + j] = dbeta
    if want_dx:
        c = params[w + j] * inv_std / rows
        for r in range(rows):
            xhat = (x[r * n + j] - mean) * inv_std
            dx[r * n + j] = c * (rows * dout[r * n + j] - dbeta - xhat * dgamma)


@kernel(inline=True)
def batch_statistics(x, mean, var):
    """mean and var (float64, zeroed, one entry per feature) = ``batchnorm_column_statistics`` of
    every column of x (rows, n), row by row: the same sums in the same order."""
    rows, n = x.shape
    for r in range(rows):
        for j in range(n):
            mean[j] += x[r, j]
    for j in range(n):
        mean[j] /= rows
    for r in range(rows):
        for j in range(n):
            d = x[r, j] - mean[j]
            var[j] += d * d
    for j in range(n):
        var[j] /= rows


@kernel(inline=True)
def batchnorm_forward(out, x, params, w, b, training, momentum, epsilon, stats):
    """out (rows, n) = the layer on x (rows, n), in training mode with batch statistics (and the
    running statistics updated) or at inference with the running statistics. ``stats``: float64
    scratch of at least ``STATS_ROWS * n`` values (the workspace's), so that nothing is allocated.

    Row by row, with one float64 accumulator per feature: the column functions above walk
    memory a row apart at every step, which took 2.5 ms instead of 0.2 ms on a 256 x 1024
    batch. Each feature's sums run over the rows in the same order, with the same arithmetic."""
    rows, n = x.shape
    for j in range(2 * n):
        stats[j] = 0.0
    mean, var = stats[0:n], stats[n:2 * n]  # then shift and scale
    if training:
        batch_statistics(x, mean, var)
        for j in range(n):
            unbiased = var[j] * rows / (rows - 1) if rows > 1 else var[j]
            params[b + n + j] = (1.0 - momentum) * params[b + n + j] + momentum * mean[j]
            params[b + 2 * n + j] = (1.0 - momentum) * params[b + 2 * n + j] + momentum * unbiased
    else:
        for j in range(n):
            mean[j] = params[b + n + j]
            var[j] = params[b + 2 * n + j]
    for j in range(n):
        scale = params[w + j] / math.sqrt(var[j] + epsilon)
        mean[j] = params[b + j] - mean[j] * scale
        var[j] = scale
    for r in range(rows):
        for j in range(n):
            out[r, j] = x[r, j] * var[j] + mean[j]


@kernel(inline=True)
def batchnorm_backward(dx, grads, dout, x, params, w, b, epsilon, stats, frozen=False):
    """dgamma, dbeta into ``grads`` and dx (rows, n) from dout (rows, n) and the layer's input x;
    ``dx`` with zero rows skips it (the input batch needs none); ``dx`` may be ``dout``.
    Row by row as ``batchnorm_forward``, with the column function's arithmetic; ``stats`` as there.
    ``frozen``: the inference-mode backward (module docstring)."""
    rows, n = x.shape
    if frozen:
        for j in range(n):
            stats[j] = params[w + j] / math.sqrt(params[b + 2 * n + j] + epsilon)
        if dx.shape[0] > 0:
            for r in range(rows):
                for j in range(n):
                    dx[r, j] = stats[j] * dout[r, j]
        return
    for j in range(STATS_ROWS * n):
        stats[j] = 0.0
    acc = stats[: STATS_ROWS * n].reshape(STATS_ROWS, n)  # mean, var then 1/std, dgamma, dbeta, dx's factor
    mean, inv_std, dgamma, dbeta, c = acc[0], acc[1], acc[2], acc[3], acc[4]
    batch_statistics(x, mean, inv_std)
    for j in range(n):
        inv_std[j] = 1.0 / math.sqrt(inv_std[j] + epsilon)
    for r in range(rows):
        for j in range(n):
            g = 1.0 * dout[r, j]
            dbeta[j] += g
            dgamma[j] += g * (x[r, j] - mean[j]) * inv_std[j]
    for j in range(n):
        grads[w + j] = dgamma[j]
        grads[b + j] = dbeta[j]
    if dx.shape[0] > 0:
        for j in range(n):
            c[j] = params[w + j] * inv_std[j] / rows
        for r in range(rows):
            for j in range(n):
                xhat = (x[r, j] - mean[j]) * inv_std[j]
                dx[r, j] = c[j] * (rows * dout[r, j] - dbeta[j] - xhat * dgamma[j])
