"""CUDA twin of ``fastnn.kernels.losses``: every loss, its gradient, and accuracy, in one kernel.

Each loss is a sum of per-row terms, so one device function gives a row's contribution to
the value (accumulated in float64, as on the CPU) and another writes the row's gradient,
with the formulas of the CPU kernels operation for operation and the same reductions
(mean over elements, or over rows, as each CPU docstring says). Softmax + cross-entropy and
sigmoid + binary cross-entropy are differentiated as one (dz = (p - t) / B, resp. / N), as
on the CPU; after any other pair the row's gradient is multiplied by the last activation's
derivative in the same pass, so the kernel hands the backward pass dL/d(pre-activation).

``loss_forward_backward`` runs all of that as a single block (a thread per row, then a
tree reduction in shared memory), and during training it also does the bookkeeping that
must not wait for the host: the batch's loss and correct count go to ``record``, a loss
that is not finite stops all later updates (``control[C_BAD]``), and the batch index advances.
(The optimizers' step counts advance in their own step, ``optimizers.optimizer_step``, as on the CPU.) The last layer's softmax may be deferred to
this kernel (``softmax_first``), which saves its launch.
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels.losses import (BCE_GRAD_EPSILON, BCE_LOG_MIN, BINARY_CROSS_ENTROPY, COSINE_EPSILON,  # noqa: F401
                              COSINE_SIMILARITY, CROSS_ENTROPY, KL_DIVERGENCE, MAE, MAPE, MSE, MSLE, PERCEPTRON,
                              PROB_EPSILON, SSE)
from . import C_BAD, C_BATCH, REDUCE_THREADS, check_code, kernel, launch
from .activations import HEAVISIDE, SIGMOID, SOFTMAX, device_functions as activation_functions
from .metrics import block_sum, device_functions as metric_functions, reduce_threads

F64 = numba.float64


@kernel(device=True)
def nan_max(a, b):
    """max(a, b), NaN when either is, as on the CPU. CUDA's max is fmax, which returns the other
    operand: a NaN prediction would give a finite loss, and a diverged model would go unseen."""
    if a != a or b != b:
        return a + b
    return a if a > b else b


@kernel(device=True)
def nan_min(a, b):
    """min(a, b), NaN when either is (see ``nan_max``)."""
    if a != a or b != b:
        return a + b
    return a if a < b else b


@lru_cache(maxsize=None)
def device_functions(dtype):
    T = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE, TWO = T(0), T(1), T(2)

    @kernel(device=True)
    def sign(v):
        if v > ZERO:
            return ONE
        if v < ZERO:
            return -ONE
        return v  # 0, or NaN as np.sign

    @kernel(device=True)
    def sign64(v):
        if v > 0.0:
            return 1.0
        if v < 0.0:
            return -1.0
        return v

    @kernel(device=True)
    def row_dot_products(pred, target, lo, cols):
        """(<p, p>, <t, t>, <p, t>) of the row at ``lo``, in float64 (cosine similarity)."""
        pp = 0.0
        tt = 0.0
        pt = 0.0
        for j in range(cols):
            p = F64(pred[lo + j])
            t = F64(target[lo + j])
            pp += p * p
            tt += t * t
            pt += p * t
        return pp, tt, pt

    @kernel(device=True)
    def row_value(loss, pred, target, lo, cols):
        """The row's term of the loss, before the reduction ``finish`` applies (float64)."""
        total = 0.0
        if loss == COSINE_SIMILARITY:
            pp, tt, pt = row_dot_products(pred, target, lo, cols)
            return pt / (math.sqrt(nan_max(pp, COSINE_EPSILON)) * math.sqrt(nan_max(tt, COSINE_EPSILON)))
        for j in range(cols):
            p = F64(pred[lo + j])
            t = F64(target[lo + j])
            if loss == MSE or loss == SSE:
                d = p - t
                total += d * d
            elif loss == MAE:
                total += abs(p - t)
            elif loss == MAPE:
                total += abs(t - p) / nan_max(abs(t), PROB_EPSILON)
            elif loss == MSLE:
                d = math.log1p(nan_max(p, PROB_EPSILON)) - math.log1p(nan_max(t, PROB_EPSILON))
                total += d * d
            elif loss == CROSS_ENTROPY:
                if t != 0.0:
                    total -= t * math.log(nan_max(p, PROB_EPSILON))
            elif loss == BINARY_CROSS_ENTROPY:
                # A NaN p fails both tests and reaches the total, as on the CPU.
                lp = BCE_LOG_MIN if p <= 0.0 else nan_max(math.log(p), BCE_LOG_MIN)
                lq = BCE_LOG_MIN if p >= 1.0 else nan_max(math.log1p(-p), BCE_LOG_MIN)
                total -= t * lp + (1.0 - t) * lq
            elif loss == KL_DIVERGENCE:
                t = nan_min(nan_max(t, PROB_EPSILON), 1.0)
                p = nan_min(nan_max(p, PROB_EPSILON), 1.0)
                total += t * math.log(t / p)
            elif pred[lo + j] != target[lo + j]:  # perceptron: outputs that differ
                total += 1.0
        return total

    @kernel(device=True)
    def finish(loss, total, rows, cols):
        """The loss from the sum of row terms: the mean over elements or rows of each CPU loss."""
        size = rows * cols
        if loss == SSE:
            return total / size * size  # as the CPU: mse * size
        if loss == MAPE:
            return 100.0 * total / size
        if loss == CROSS_ENTROPY or loss == KL_DIVERGENCE:
            return total / rows
        if loss == COSINE_SIMILARITY:
            return -total / rows
        return total / size

    @kernel(device=True)
    def row_gradient(loss, dz, pred, target, lo, cols, rows):
        """dL/dpred for the row at ``lo``, written to ``dz``."""
        size = rows * cols
        if loss == COSINE_SIMILARITY:
            pp, tt, pt = row_dot_products(pred, target, lo, cols)
            np_ = math.sqrt(max(pp, COSINE_EPSILON))
            nt = math.sqrt(max(tt, COSINE_EPSILON))
            cos = pt / (np_ * nt)
            for j in range(cols):
                if pp > COSINE_EPSILON:
                    g = (F64(target[lo + j]) / nt - cos * F64(pred[lo + j]) / np_) / np_
                else:  # the floored norm is a constant: only the numerator varies
                    g = F64(target[lo + j]) / (np_ * nt)
                dz[lo + j] = T(-g / rows)
            return
        mse_scale = T(2.0 / size)
        mae_scale = T(1.0 / size)
        for j in range(cols):
            p = pred[lo + j]
            t = target[lo + j]
            p64 = F64(p)
            t64 = F64(t)
            if loss == MSE:
                g = mse_scale * (p - t)
            elif loss == SSE:
                g = TWO * (p - t)
            elif loss == MAE:
                g = mae_scale * sign(p - t)
            elif loss == MAPE:
                g = T(100.0 * sign64(p64 - t64) / (max(abs(t64), PROB_EPSILON) * size))
            elif loss == MSLE:
                if p64 <= PROB_EPSILON:
                    g = ZERO
                else:
                    d = math.log1p(p64) - math.log1p(max(t64, PROB_EPSILON))
                    g = T(2.0 * d / ((1.0 + p64) * size))
            elif loss == CROSS_ENTROPY:
                g = T(-t64 / (p64 * rows)) if p64 > PROB_EPSILON else ZERO
            elif loss == BINARY_CROSS_ENTROPY:
                g = T((p64 - t64) / (max(p64 * (1.0 - p64), BCE_GRAD_EPSILON) * size))
            elif loss == KL_DIVERGENCE:
                if PROB_EPSILON < p64 < 1.0:
                    g = T(-min(max(t64, PROB_EPSILON), 1.0) / (p64 * rows))
                else:
                    g = ZERO
            else:  # perceptron: summed, not averaged
                g = p - t
            dz[lo + j] = g

    @kernel(device=True)
    def softmax_cross_entropy_row_gradient(dz, probs, target, lo, cols, rows):
        """(p * sum_j t_j - t) / B: (p - t) / B for one-hot t."""
        inv_rows = T(1.0 / rows)
        mass = ZERO
        for j in range(cols):
            mass += target[lo + j]
        for j in range(cols):
            dz[lo + j] = (probs[lo + j] * mass - target[lo + j]) * inv_rows

    @kernel(device=True)
    def sigmoid_binary_cross_entropy_row_gradient(dz, probs, target, lo, cols, rows):
        """(p - t) / N."""
        scale = T(1.0 / (rows * cols))
        for j in range(cols):
            dz[lo + j] = (probs[lo + j] - target[lo + j]) * scale

    return SimpleNamespace(row_value=row_value, finish=finish, row_gradient=row_gradient,
                           softmax_cross_entropy_row_gradient=softmax_cross_entropy_row_gradient,
                           sigmoid_binary_cross_entropy_row_gradient=sigmoid_binary_cross_entropy_row_gradient)


@lru_cache(maxsize=None)
def kernels(dtype):
    f = device_functions(dtype)
    a = activation_functions(dtype)
    row_value, finish, row_gradient = f.row_value, f.finish, f.row_gradient
    softmax_ce, sigmoid_bce = f.softmax_cross_entropy_row_gradient, f.sigmoid_binary_cross_entropy_row_gradient
    softmax_row_forward, softmax_row_backward = a.softmax_row_forward, a.softmax_row_backward
    backward_value = a.activation_backward_value
    correct_row = metric_functions(dtype).correct_row

    @kernel
    def loss_step(record, dz, pred, target, rows, cols, loss, act, alpha, softmax_first, train, control):
        total_part = cuda.shared.array(REDUCE_THREADS, F64)
        hits = cuda.shared.array(REDUCE_THREADS, numba.int64)
        tid = cuda.threadIdx.x
        fused_ce = loss == CROSS_ENTROPY and act == SOFTMAX
        fused_bce = loss == BINARY_CROSS_ENTROPY and act == SIGMOID
        total = 0.0
        n = 0
        for r in range(tid, rows, cuda.blockDim.x):
            lo = r * cols
            if softmax_first:
                softmax_row_forward(pred, pred, lo, cols)
            total += row_value(loss, pred, target, lo, cols)
            n += correct_row(pred, target, lo, cols)
            if train:
                if fused_ce:
                    softmax_ce(dz, pred, target, lo, cols, rows)
                elif fused_bce:
                    sigmoid_bce(dz, pred, target, lo, cols, rows)
                else:
                    row_gradient(loss, dz, pred, target, lo, cols, rows)
                    if act == SOFTMAX:
                        softmax_row_backward(dz, dz, pred, lo, cols)
                    else:
                        for j in range(cols):
                            dz[lo + j] = backward_value(act, dz[lo + j], pred[lo + j], alpha)
        total_part[tid] = total
        hits[tid] = n
        block_sum(total_part)
        block_sum(hits)
        if tid == 0:
            value = finish(loss, total_part[0], rows, cols)
            b = control[C_BATCH]
            record[2 * b] = value
            record[2 * b + 1] = F64(hits[0])
            if train and not math.isfinite(value) and control[C_BAD] < 0:
                control[C_BAD] = b
            control[C_BATCH] = b + 1

    return SimpleNamespace(loss_step=loss_step)


def loss_forward_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, train=True,
                          softmax_first=False, plan=None):
    """Loss and correct rows of (rows, cols) ``pred`` against ``target`` into
    ``record[2b]``, ``record[2b + 1]`` (float64), b = ``control[C_BATCH]``, which then advances.

    With ``train``: also dz = dL/d(pre-activation of the last layer, activation ``act``), and
    ``control[C_BAD]`` = b if the loss is not finite and no earlier batch's was not (the
    optimizers then neither update nor count a step: ``optimizers.optimizer_step``).
    ``softmax_first`` applies the deferred softmax to ``pred`` in place.
    """
    check_code(loss, PERCEPTRON, "loss")
    check_code(act, HEAVISIDE, "activation")
    launch(plan, kernels(np.dtype(pred.dtype).name).loss_step, 1, reduce_threads(rows),
           record, dz if dz is not None else pred, pred, target, rows, cols, loss, act, float(alpha),
           bool(softmax_first), bool(train), control)


def loss_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, softmax_first=False, plan=None):
    """The training form: dz, and the value recorded on the way (one kernel; see ``loss_forward_backward``)."""
    loss_forward_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, train=True,
                          softmax_first=softmax_first, plan=plan)


def loss_forward(record, pred, target, loss, rows, cols, control, softmax_first=False, plan=None):
    """The value (and correct rows) of loss ``loss`` only: ``loss_forward_backward`` without ``train``."""
    loss_forward_backward(record, None, pred, target, loss, SOFTMAX if softmax_first else 0, 0.0, rows, cols,
                          control, train=False, softmax_first=softmax_first, plan=plan)
