"""CUDA twin of ``fastnn.kernels.dispatch``: one layer of any kind, forward and backward, as launches.

The only place where the CUDA passes branch on a layer's kind; the walkers of ``cuda/network.py``
route buffers and call these, as the CPU's do. The same contracts, on flat device arrays with
their sizes: an input that needs no gradient is None instead of an array of no rows. User layers
run on the CPU only (the CUDA backend refuses them).
"""
from functools import lru_cache

import numpy as np
from numba import cuda

from ..kernels.dispatch import ADDED, IN_PLACE, INTO_DX, NO_INPUT_GRADIENT
from ..kernels.table import (ACT, ACTIVATION_LAYER, ADD_LAYER, ALPHA, B_OFF, BATCHNORM_LAYER, CONCATENATE_LAYER,
                             DENSE_LAYER, DROPOUT_LAYER, EMBEDDING_LAYER, EPSILON, KIND, LAYERNORM_LAYER, MASKING_LAYER,
                             MULTIPLY_LAYER, N_IN, N_OUT, SLICE_LAYER, W_OFF)
from ..kernels import batchnorm as cpu_batchnorm
from ..kernels import layernorm as cpu_layernorm
from . import N_CONTROL, EachIndex
from .activations import IDENTITY, activation_backward, bias_activation_forward
from .dense import dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .embedding import embedding_backward, embedding_forward, masking_backward, masking_forward
from .merge import merge_backward, merge_forward, merge_widths

__all__ = ["ADDED", "IN_PLACE", "INTO_DX", "NO_INPUT_GRADIENT", "batchnorm_backward", "batchnorm_forward",
           "layer_backward", "layer_forward", "layernorm_backward", "layernorm_forward"]


def _view(buffer, lo, size):
    return buffer[int(lo): int(lo) + int(size)]


# The normalization kinds' CPU kernels are functions of one feature (BatchNorm) or one row
# (LayerNormalization): on CUDA that very source runs one thread per feature or row
# (``EachIndex``), so both targets compute the same statistics in the same order, with no CUDA
# module of their own. Their launchers below have the CPU kernels' names and contracts, on flat
# (rows, n) device arrays.
_batchnorm_forward_columns = EachIndex(cpu_batchnorm.batchnorm_forward_column)
_batchnorm_backward_columns = EachIndex(cpu_batchnorm.batchnorm_backward_column)
_layernorm_forward_rows = EachIndex(cpu_layernorm.layernorm_forward_row)
_layernorm_backward_rows = EachIndex(cpu_layernorm.layernorm_backward_row)
_layernorm_param_grads_columns = EachIndex(cpu_layernorm.layernorm_param_grads_column)


def batchnorm_forward(out, x, params, w, b, rows, n, training, momentum, epsilon, plan=None):
    """As ``kernels.batchnorm.batchnorm_forward``. Adjacent threads read adjacent columns of a
    row, so the reads of each row are coalesced."""
    _batchnorm_forward_columns(n, out, x, params, int(w), int(b), int(rows), int(n), bool(training),
                               float(momentum), float(epsilon), plan=plan)


def batchnorm_backward(dx, grads, dout, x, params, w, b, rows, n, epsilon, want_dx=True, frozen=False, plan=None):
    """As ``kernels.batchnorm.batchnorm_backward``; ``dx`` may be ``dout``."""
    _batchnorm_backward_columns(n, dx, grads, dout, x, params, int(w), int(b), int(rows), int(n), float(epsilon),
                                bool(want_dx), bool(frozen), plan=plan)


def layernorm_forward(out, x, params, w, b, rows, n, epsilon, flags, plan=None):
    """As ``kernels.layernorm.layernorm_forward``."""
    _layernorm_forward_rows(rows, out, x, params, int(w), int(b), int(n), float(epsilon), int(flags), plan=plan)


def layernorm_backward(dx, grads, dout, x, params, w, b, rows, n, epsilon, flags, stats, want_dx=True, plan=None):
    """As ``kernels.layernorm.layernorm_backward``; ``dx`` may be ``dout``: the row pass that
    writes dx runs after the feature sums, and a first pass (without dx) keeps the rows'
    statistics in ``stats`` (the workspace's float64 scratch, ``layernorm_stats_size``)."""
    row_args = (dout, x, params, int(w), int(n), float(epsilon), int(flags), stats)
    _layernorm_backward_rows(rows, dx, *row_args, False, plan=plan)
    _layernorm_param_grads_columns(n, grads, dout, x, int(w), int(b), int(rows), int(n), int(flags), stats, plan=plan)
    if want_dx:
        _layernorm_backward_rows(rows, dx, *row_args, True, plan=plan)


def layer_forward(net, k, out, inp, second, work, rows, training=False, keep=True, control=None, defer_softmax=False,
                  plan=None):
    """As ``kernels.dispatch.layer_forward``: layer k on ``inp`` into ``out``; returns its output
    (``inp`` for a Dropout at inference unless ``keep``). ``work``: the workspace (its float64
    ``stats``, the scratch of normalization layers; None where no layer needs any). ``net.rng`` is
    Dropout's key (an int; the step is in ``control[C_STEP]`` on the device). ``defer_softmax``: a dense layer leaves its
    softmax to the loss kernel (the forward half of ``table.fuse_loss_backward``)."""
    params, layers, alphas, key = net.params, net.layers, net.alphas, net.rng
    n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
    kind = layers[k, KIND]
    if kind == DENSE_LAYER:
        w, b = layers[k, W_OFF], layers[k, B_OFF]
        dense_forward(out, inp, _view(params, w, n_in * n_out), _view(params, b, n_out), int(layers[k, ACT]),
                      alphas[k, ALPHA], rows, n_in, n_out, defer_softmax=defer_softmax, plan=plan)
    elif kind == ACTIVATION_LAYER:
        bias_activation_forward(out, inp, None, int(layers[k, ACT]), alphas[k, ALPHA], rows, n_out, plan=plan)
    elif kind == DROPOUT_LAYER:
        if training:
            dropout_forward(out, inp, rows * n_out, key, k, alphas[k, ALPHA], control, plan=plan)
        elif keep:  # rate 0 keeps every element: a copy
            dropout_forward(out, inp, rows * n_out, key, k, 0.0, _inference_control(), plan=plan)
        else:
            return inp
    elif kind == BATCHNORM_LAYER:
        batchnorm_forward(out, inp, params, layers[k, W_OFF], layers[k, B_OFF], rows, n_out,
                          training and alphas[k, ALPHA] >= 0, alphas[k, ALPHA], alphas[k, EPSILON], plan=plan)
    elif kind == LAYERNORM_LAYER:
        layernorm_forward(out, inp, params, layers[k, W_OFF], layers[k, B_OFF], rows, n_out, alphas[k, EPSILON],
                          int(alphas[k, ALPHA]), plan=plan)
    elif kind == EMBEDDING_LAYER:
        embedding_forward(out, inp, params, layers[k, W_OFF], rows, n_in, n_out, int(alphas[k, ALPHA]),
                          alphas[k, EPSILON] != 0, plan=plan)
    elif kind == MASKING_LAYER:
        masking_forward(out, inp, rows * n_out, alphas[k, ALPHA], plan=plan)
    elif kind in (SLICE_LAYER, CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER):
        merge_forward(out, inp, second, rows, n_out, *merge_widths(layers, k), kind, plan=plan)
    else:
        raise ValueError(f"layers: unknown layer kind {kind} in row {k}")
    return out


def layer_backward(net, grads, k, dx, dsum, dsum2, dout, inp, second, out, work, rows, applied=False, fuse=False,
                   control=None, plan=None):
    """As ``kernels.dispatch.layer_backward``: layer k's gradients into ``grads`` and dL/d(its
    input) from ``dout`` = dL/d(its output) (its pre-activation when ``applied``); returns where
    that went (``INTO_DX``, ``IN_PLACE`` in ``dout``, ``ADDED`` into ``dsum``/``dsum2``, or
    ``NO_INPUT_GRADIENT``). ``dx``, ``dsum``, ``dsum2`` None: not needed. ``fuse``
    (``table.fuse_activation_backward``): the dense layer's dx GEMM applies layer k - 1's
    activation derivative in its epilogue."""
    params, layers, alphas, key = net.params, net.layers, net.alphas, net.rng
    n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
    kind = layers[k, KIND]
    act = int(layers[k, ACT])
    if kind == DENSE_LAYER:
        if not applied and act != IDENTITY:
            activation_backward(dout, dout, out, act, alphas[k, ALPHA], rows, n_out, plan=plan)
        w = layers[k, W_OFF]
        dWb = _view(grads, w, (n_in + 1) * n_out)  # [dW, db]: b follows W in the layout
        W = _view(params, w, n_in * n_out)
        if fuse and dx is not None:
            dense_backward(dx, dWb, dout, inp, W, rows, n_in, n_out, prev_out=inp, prev_act=int(layers[k - 1, ACT]),
                           prev_alpha=alphas[k - 1, ALPHA], plan=plan)
        else:
            dense_backward(dx, dWb, dout, inp, W, rows, n_in, n_out, plan=plan)
        return INTO_DX
    if kind == ACTIVATION_LAYER:
        if dx is not None and not applied and act != IDENTITY:
            activation_backward(dout, dout, out, act, alphas[k, ALPHA], rows, n_out, plan=plan)
        return IN_PLACE
    if kind == DROPOUT_LAYER:
        if dx is not None:
            dropout_backward(dout, dout, rows * n_out, key, k, alphas[k, ALPHA], control, plan=plan)
        return IN_PLACE
    if kind == BATCHNORM_LAYER:
        batchnorm_backward(dout if dx is None else dx, grads, dout, inp, params, layers[k, W_OFF], layers[k, B_OFF],
                           rows, n_out, alphas[k, EPSILON], want_dx=dx is not None, frozen=alphas[k, ALPHA] < 0,
                           plan=plan)
        return INTO_DX
    if kind == LAYERNORM_LAYER:
        layernorm_backward(dout if dx is None else dx, grads, dout, inp, params, layers[k, W_OFF], layers[k, B_OFF],
                           rows, n_out, alphas[k, EPSILON], int(alphas[k, ALPHA]), work.stats, want_dx=dx is not None,
                           plan=plan)
        return INTO_DX
    if kind == EMBEDDING_LAYER:
        embedding_backward(grads, dout, inp, layers[k, W_OFF], layers[k, B_OFF], rows, n_in, n_out,
                           int(alphas[k, ALPHA]), alphas[k, EPSILON] != 0, plan=plan)
        return NO_INPUT_GRADIENT
    if kind == MASKING_LAYER:
        if dx is not None:
            masking_backward(dout, dout, inp, rows * n_out, alphas[k, ALPHA], plan=plan)
        return IN_PLACE
    if kind in (CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER):
        n1, n2, _ = merge_widths(layers, k)
        merge_backward(dsum, dsum2, dout, inp, second, rows, n1, n2, n_out, kind, plan=plan)
        return ADDED
    if kind == SLICE_LAYER:
        return NO_INPUT_GRADIENT
    raise ValueError(f"layers: unknown layer kind {kind} in row {k}")


@lru_cache(maxsize=1)
def _inference_control():
    """A control array for launches that read none of it (Dropout at rate 0)."""
    return cuda.to_device(np.zeros(N_CONTROL, dtype=np.int64))
