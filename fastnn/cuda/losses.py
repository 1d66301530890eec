"""CUDA twin of ``fastnn.kernels.losses``: every loss, its gradient, and accuracy, in one kernel.

The formulas are not rewritten here: each loss's element value and gradient, cosine
similarity's row functions, the reduction (``loss_finish``: mean over elements, or over rows, as
each CPU docstring says) and the fused gradients of softmax + cross-entropy and sigmoid + binary
cross-entropy (dz = (p - t) / B, resp. / N) are the CPU kernels' own Python source, compiled as
device functions (``fastnn.cuda.device_twin``); ``loss_row_value`` and ``loss_row_gradient`` only
dispatch on the loss code, which the loss kernel learns at run time. After any other pair the
row's gradient is multiplied by the last activation's derivative in the same pass, so the
kernel hands the backward pass dL/d(pre-activation).

``loss_forward_backward`` runs all of that as a single block (a thread per row, then a
tree reduction in shared memory), and during training it also does the bookkeeping that
must not wait for the host: the batch's loss and correct count go to ``record``, a loss
that is not finite stops all later updates (``control[C_BAD]``), and the batch index advances.
(The optimizers' step counts advance in their own step, ``optimizers.optimizer_step``, as on the CPU.)
The last layer's softmax may be deferred to this kernel (``softmax_first``), which saves its launch.
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import losses as cpu
from ..kernels.losses import (BCE_GRAD_EPSILON, BCE_LOG_MIN, BINARY_CROSS_ENTROPY, COSINE_EPSILON,  # noqa: F401
                              COSINE_SIMILARITY, CROSS_ENTROPY, KL_DIVERGENCE, MAE, MAPE, MSE, MSLE, PERCEPTRON,
                              PROB_EPSILON, SSE)
from . import C_BAD, C_BATCH, REDUCE_THREADS, check_code, device_twin, kernel, launch, reduce_threads
from .activations import HEAVISIDE, SIGMOID, SOFTMAX, device_functions as activation_functions
from .metrics import block_sum, device_functions as metric_functions

F64 = numba.float64


nan_max = device_twin(cpu.nan_max)
nan_min = device_twin(cpu.nan_min)
sign = device_twin(cpu.sign)
squared_error_value = device_twin(cpu.squared_error_value)
squared_error_gradient = device_twin(cpu.squared_error_gradient)
absolute_error_value = device_twin(cpu.absolute_error_value)
absolute_error_gradient = device_twin(cpu.absolute_error_gradient)
percentage_error_value = device_twin(cpu.percentage_error_value)
percentage_error_gradient = device_twin(cpu.percentage_error_gradient)
squared_log_error_value = device_twin(cpu.squared_log_error_value)
squared_log_error_gradient = device_twin(cpu.squared_log_error_gradient)
cross_entropy_value = device_twin(cpu.cross_entropy_value)
cross_entropy_gradient = device_twin(cpu.cross_entropy_gradient)
binary_cross_entropy_value = device_twin(cpu.binary_cross_entropy_value)
binary_cross_entropy_gradient = device_twin(cpu.binary_cross_entropy_gradient)
kl_divergence_value = device_twin(cpu.kl_divergence_value)
kl_divergence_gradient = device_twin(cpu.kl_divergence_gradient)
perceptron_value = device_twin(cpu.perceptron_value)
perceptron_gradient = device_twin(cpu.perceptron_gradient)
row_dot_products = device_twin(cpu.row_dot_products)
cosine_similarity_row_value = device_twin(cpu.cosine_similarity_row_value)
cosine_similarity_row_gradient = device_twin(cpu.cosine_similarity_row_gradient)
softmax_cross_entropy_row_gradient = device_twin(cpu.softmax_cross_entropy_row_gradient)
sigmoid_binary_cross_entropy_row_gradient = device_twin(cpu.sigmoid_binary_cross_entropy_row_gradient)
loss_finish = device_twin(cpu.loss_finish)


@kernel(device=True)
def loss_row_value(loss, pred, target, lo, cols):
    """The row's term of loss ``loss`` (float64), before ``loss_finish``: the CPU kernels' sum
    over the row's elements, for a code only known on the device."""
    if loss == COSINE_SIMILARITY:
        return cosine_similarity_row_value(pred, target, lo, cols)
    total = 0.0
    for j in range(cols):
        p = F64(pred[lo + j])
        t = F64(target[lo + j])
        if loss == MSE or loss == SSE:
            total += squared_error_value(p, t)
        elif loss == MAE:
            total += absolute_error_value(p, t)
        elif loss == MAPE:
            total += percentage_error_value(p, t)
        elif loss == MSLE:
            total += squared_log_error_value(p, t)
        elif loss == CROSS_ENTROPY:
            total += cross_entropy_value(p, t)
        elif loss == BINARY_CROSS_ENTROPY:
            total += binary_cross_entropy_value(p, t)
        elif loss == KL_DIVERGENCE:
            total += kl_divergence_value(p, t)
        else:
            total += perceptron_value(pred[lo + j], target[lo + j])
    return total


@kernel(device=True)
def loss_row_gradient(loss, dz, pred, target, lo, cols, rows):
    """dL/dpred of the row at ``lo`` into ``dz``, with the scales the CPU kernels cast to the dtype."""
    if loss == COSINE_SIMILARITY:
        cosine_similarity_row_gradient(dz, pred, target, lo, cols, rows)
        return
    size = rows * cols
    T = dz.dtype.type
    one = T(1)
    scale = T(2.0 / size) if loss == MSE else (T(2) if loss == SSE else T(1.0 / size))
    for j in range(cols):
        p = pred[lo + j]
        t = target[lo + j]
        if loss == MSE or loss == SSE:
            dz[lo + j] = squared_error_gradient(p, t, scale)
        elif loss == MAE:
            dz[lo + j] = absolute_error_gradient(p, t, scale, one)
        elif loss == MAPE:
            dz[lo + j] = percentage_error_gradient(F64(p), F64(t), size)
        elif loss == MSLE:
            dz[lo + j] = squared_log_error_gradient(F64(p), F64(t), size)
        elif loss == CROSS_ENTROPY:
            dz[lo + j] = cross_entropy_gradient(F64(p), F64(t), rows)
        elif loss == BINARY_CROSS_ENTROPY:
            dz[lo + j] = binary_cross_entropy_gradient(F64(p), F64(t), size)
        elif loss == KL_DIVERGENCE:
            dz[lo + j] = kl_divergence_gradient(F64(p), F64(t), rows)
        else:
            dz[lo + j] = perceptron_gradient(p, t)


@lru_cache(maxsize=None)
def kernels(dtype, weighted=False):
    """The loss kernel; ``weighted`` (a constant of its compile: the unweighted kernel has no
    trace of it) multiplies each row's loss term and gradient by ``weights[r]``, as
    ``kernels.losses.weighted_loss_forward`` and ``weight_rows``."""
    a = activation_functions(dtype)
    softmax_row_forward, softmax_row_backward = a.softmax_row_forward, a.softmax_row_backward
    backward_value = a.activation_backward_value
    correct_row = metric_functions(dtype).correct_row

    @kernel
    def loss_step(record, dz, pred, target, rows, cols, loss, act, alpha, softmax_first, train, control, weights):
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
            if weighted:
                total += F64(weights[r]) * loss_row_value(loss, pred, target, lo, cols)
            else:
                total += loss_row_value(loss, pred, target, lo, cols)
            n += correct_row(pred, target, lo, cols)
            if train:
                if fused_ce:
                    softmax_cross_entropy_row_gradient(dz, pred, target, lo, cols, rows)
                elif fused_bce:
                    sigmoid_binary_cross_entropy_row_gradient(dz, pred, target, lo, cols, rows)
                else:
                    loss_row_gradient(loss, dz, pred, target, lo, cols, rows)
                    if act == SOFTMAX:
                        softmax_row_backward(dz, dz, pred, lo, cols)
                    else:
                        for j in range(cols):
                            dz[lo + j] = backward_value(act, dz[lo + j], pred[lo + j], alpha)
                if weighted:
                    w = weights[r]
                    for j in range(cols):
                        dz[lo + j] *= w
        total_part[tid] = total
        hits[tid] = n
        block_sum(total_part)
        block_sum(hits)
        if tid == 0:
            value = loss_finish(loss, total_part[0], rows, cols)
            b = control[C_BATCH]
            record[2 * b] = value
            record[2 * b + 1] = F64(hits[0])
            if train and not math.isfinite(value) and control[C_BAD] < 0:
                control[C_BAD] = b
            control[C_BATCH] = b + 1

    @kernel
    def outputs_loss_step(record, dz, pred, target, rows, cols, blocks, weights, n_outputs, train, control, counts,
                          row_weights):
        """The loss of several outputs side by side (``losses.OutputLosses``): output i's loss
        ``blocks[i, 0]`` on its ``blocks[i, 2]`` columns from ``blocks[i, 1]``, reduced over the
        block one output after another; the value sum_i weights[i] * loss_i, each output's own
        loss x rows added into ``counts[i]``, and with ``train`` dz = each output's gradient times
        its weight (no activation: the outputs' hidden Concatenate row is the last). ``weighted``:
        each row's terms and gradient also times ``row_weights[r]``, in every output."""
        total_part = cuda.shared.array(REDUCE_THREADS, F64)
        tid = cuda.threadIdx.x
        T = dz.dtype.type
        value = 0.0
        for i in range(n_outputs):
            loss, start, width = blocks[i, 0], blocks[i, 1], blocks[i, 2]
            weight = T(weights[i])
            total = 0.0
            for r in range(tid, rows, cuda.blockDim.x):
                lo = r * cols + start
                scale = weight
                if weighted:
                    total += F64(row_weights[r]) * loss_row_value(loss, pred, target, lo, width)
                    scale = weight * row_weights[r]
                else:
                    total += loss_row_value(loss, pred, target, lo, width)
                if train:
                    loss_row_gradient(loss, dz, pred, target, lo, width, rows)
                    for j in range(width):
                        dz[lo + j] *= scale
            total_part[tid] = total
            block_sum(total_part)
            if tid == 0:
                own = loss_finish(loss, total_part[0], rows, width)
                value += weights[i] * own
                counts[i] += own * rows
            cuda.syncthreads()  # total_part is the next output's
        if tid == 0:
            b = control[C_BATCH]
            record[2 * b] = value
            record[2 * b + 1] = 0.0
            if train and not math.isfinite(value) and control[C_BAD] < 0:
                control[C_BAD] = b
            control[C_BATCH] = b + 1

    return SimpleNamespace(loss_step=loss_step, outputs_loss_step=outputs_loss_step)


def loss_forward_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, train=True,
                          softmax_first=False, plan=None, weights=None):
    """Loss and correct rows of (rows, cols) ``pred`` against ``target`` into
    ``record[2b]``, ``record[2b + 1]`` (float64), b = ``control[C_BATCH]``, which then advances.

    With ``train``: also dz = dL/d(pre-activation of the last layer, activation ``act``), and
    ``control[C_BAD]`` = b if the loss is not finite and no earlier batch's was not (the
    optimizers then neither update nor count a step: ``optimizers.optimizer_step``).
    ``softmax_first`` applies the deferred softmax to ``pred`` in place. ``weights``: None, or
    the batch's per-row loss weights (a device array of ``rows`` values in pred's dtype).
    """
    check_code(loss, PERCEPTRON, "loss")
    check_code(act, HEAVISIDE, "activation")
    launch(plan, kernels(np.dtype(pred.dtype).name, weights is not None).loss_step, 1, reduce_threads(rows),
           record, dz if dz is not None else pred, pred, target, rows, cols, loss, act, float(alpha),
           bool(softmax_first), bool(train), control, weights if weights is not None else pred)


def loss_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, softmax_first=False, plan=None,
                  weights=None):
    """The training form: dz, and the value recorded on the way (one kernel; see ``loss_forward_backward``)."""
    loss_forward_backward(record, dz, pred, target, loss, act, alpha, rows, cols, control, train=True,
                          softmax_first=softmax_first, plan=plan, weights=weights)


def loss_forward(record, pred, target, loss, rows, cols, control, softmax_first=False, plan=None, weights=None):
    """The value (and correct rows) of loss ``loss`` only: ``loss_forward_backward`` without ``train``."""
    loss_forward_backward(record, None, pred, target, loss, SOFTMAX if softmax_first else 0, 0.0, rows, cols,
                          control, train=False, softmax_first=softmax_first, plan=plan, weights=weights)


def outputs_loss(record, dz, pred, target, outputs, rows, cols, control, train=True, plan=None, weights=None):
    """``loss_forward_backward`` of several outputs side by side (``outputs``: the device tables of
    ``losses.OutputLosses``, ``blocks`` int64 (m, 3) [loss code, first column, width], ``weights``
    float64 (m,), and ``counts`` float64 (m,), where each batch adds each output's loss x rows).
    ``weights``: None, or the batch's per-row loss weights, which weigh every output's loss."""
    launch(plan, kernels(np.dtype(pred.dtype).name, weights is not None).outputs_loss_step, 1, reduce_threads(rows),
           record, dz if dz is not None else pred, pred, target, rows, cols, outputs.blocks, outputs.weights,
           outputs.n, bool(train), control, outputs.counts, weights if weights is not None else pred)
