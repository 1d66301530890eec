"""Batch normalization: ``batchnorm_forward(out, x, params, w, b, training, momentum, epsilon)`` and
``batchnorm_backward(dx, grads, dout, x, params, w, b, epsilon)``, with ``torch.nn.BatchNorm1d``'s
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

Each function works on one column of flat row-major (rows, n) arrays, so that the CPU loops
over columns and the CUDA twin (``fastnn.cuda.batchnorm``) runs one thread per column of the
very same source. Sums are float64.
"""
import math

from ..config import kernel


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
def batchnorm_forward_column(out, x, params, w, b, rows, n, j, training, momentum, epsilon):
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
def batchnorm_backward_column(dx, grads, dout, x, params, w, b, rows, n, j, epsilon, want_dx):
    """dgamma and dbeta of column j into ``grads``; dx (which may be ``dout``) when ``want_dx``."""
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
def batchnorm_forward(out, x, params, w, b, training, momentum, epsilon):
    """out (rows, n) = the layer on x (rows, n), in training mode with batch statistics (and the
    running statistics updated) or at inference with the running statistics."""
    rows, n = x.shape
    flat_out, flat_x = out.reshape(-1), x.reshape(-1)
    for j in range(n):
        batchnorm_forward_column(flat_out, flat_x, params, w, b, rows, n, j, training, momentum, epsilon)


@kernel(inline=True)
def batchnorm_backward(dx, grads, dout, x, params, w, b, epsilon):
    """dgamma, dbeta into ``grads`` and dx (rows, n) from dout (rows, n) and the layer's input x;
    ``dx`` with zero rows skips it (the input batch needs none); ``dx`` may be ``dout``."""
    rows, n = x.shape
    want_dx = dx.shape[0] > 0
    flat_dx, flat_dout, flat_x = dx.reshape(-1), dout.reshape(-1), x.reshape(-1)
    for j in range(n):
        batchnorm_backward_column(flat_dx, grads, flat_dout, flat_x, params, w, b, rows, n, j, epsilon, want_dx)
