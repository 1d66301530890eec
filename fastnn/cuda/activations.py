"""CUDA twin of ``fastnn.kernels.activations``: the same activations, codes and conventions.

The formulas are not rewritten here: every ``<name>_forward_value`` / ``<name>_backward_value``
and the softmax row functions are the CPU kernels' own Python source, compiled as device
functions (``fastnn.cuda.device_twin``). ``device_functions(dtype)`` adds the dispatch on the
activation code, with the constants typed to ``dtype``: ``activation_forward_value(act, v,
alpha)`` and ``activation_backward_value(act, dout, out, alpha)`` for the elementwise
activations (the backward reads the forward's output), ``softmax_row_forward`` /
``softmax_row_backward`` for the row-wise one. The SGEMM epilogues (``dense``) and the loss
kernel (``losses``) call them, which is how bias, activation and its derivative cost no launch
of their own in a dense network.

Launchers ``bias_activation_forward`` / ``activation_backward`` apply them to a whole
(rows, cols) matrix, for Activation layers and wherever no GEMM precedes.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import activations as cpu
from ..kernels.activations import (ELU, HEAVISIDE, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SOFTMAX,  # noqa: F401
                                   TANH)
from . import blocks, check_code, device_twin, kernel, launch

sigmoid_forward_value = device_twin(cpu.sigmoid_forward_value)
sigmoid_backward_value = device_twin(cpu.sigmoid_backward_value)
tanh_forward_value = device_twin(cpu.tanh_forward_value)
tanh_backward_value = device_twin(cpu.tanh_backward_value)
relu_forward_value = device_twin(cpu.relu_forward_value)
relu_backward_value = device_twin(cpu.relu_backward_value)
leaky_relu_forward_value = device_twin(cpu.leaky_relu_forward_value)
leaky_relu_backward_value = device_twin(cpu.leaky_relu_backward_value)
elu_forward_value = device_twin(cpu.elu_forward_value)
elu_backward_value = device_twin(cpu.elu_backward_value)
heaviside_forward_value = device_twin(cpu.heaviside_forward_value)
softmax_row_forward = device_twin(cpu.softmax_row_forward)
softmax_row_backward = device_twin(cpu.softmax_row_backward)


@lru_cache(maxsize=None)
def device_functions(dtype):
    """The activation device functions for arrays of ``dtype``."""
    T = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE = T(0), T(1)

    @kernel(device=True)
    def activation_forward_value(act, v, alpha):
        """act(v) for an elementwise activation code; softmax (row-wise) passes v through."""
        if act == SIGMOID:
            return sigmoid_forward_value(v, ONE)
        if act == TANH:
            return tanh_forward_value(v)
        if act == RELU:
            return relu_forward_value(v, ZERO)
        if act == LEAKY_RELU:
            return leaky_relu_forward_value(v, T(alpha))
        if act == ELU:
            return elu_forward_value(v, T(alpha))
        if act == HEAVISIDE:
            return heaviside_forward_value(v, ONE, ZERO)
        return v

    @kernel(device=True)
    def activation_backward_value(act, dout, out, alpha):
        """dout * act'(.) from the forward's output ``out``; identity, heaviside (straight
        through) and softmax (row-wise, see ``softmax_row_backward``) pass dout through."""
        if act == SIGMOID:
            return sigmoid_backward_value(dout, out, ONE)
        if act == TANH:
            return tanh_backward_value(dout, out, ONE)
        if act == RELU:
            return relu_backward_value(dout, out, ZERO)
        if act == LEAKY_RELU:
            return leaky_relu_backward_value(dout, out, T(alpha))
        if act == ELU:
            return elu_backward_value(dout, out, T(alpha))
        return dout

    return SimpleNamespace(activation_forward_value=activation_forward_value,
                           activation_backward_value=activation_backward_value,
                           softmax_row_forward=softmax_row_forward,
                           softmax_row_backward=softmax_row_backward)


@lru_cache(maxsize=None)
def kernels(dtype):
    """The (rows, cols) activation kernels for ``dtype``: one thread per element, or per row for softmax."""
    f = device_functions(dtype)
    forward_value, backward_value = f.activation_forward_value, f.activation_backward_value
    softmax_row_forward, softmax_row_backward = f.softmax_row_forward, f.softmax_row_backward

    @kernel
    def bias_activation_elements(out, x, b, has_bias, act, alpha, rows, cols):
        i = cuda.grid(1)
        if i < rows * cols:
            v = x[i]
            if has_bias:
                v += b[i % cols]
            out[i] = forward_value(act, v, alpha)

    @kernel
    def bias_softmax_rows(out, x, b, has_bias, rows, cols):
        r = cuda.grid(1)
        if r < rows:
            lo = r * cols
            if has_bias:
                for j in range(cols):
                    out[lo + j] = x[lo + j] + b[j]
                softmax_row_forward(out, out, lo, cols)
            else:
                softmax_row_forward(out, x, lo, cols)

    @kernel
    def activation_backward_elements(dx, dout, out, act, alpha, rows, cols):
        i = cuda.grid(1)
        if i < rows * cols:
            dx[i] = backward_value(act, dout[i], out[i], alpha)

    @kernel
    def softmax_backward_rows(dx, dout, out, rows, cols):
        r = cuda.grid(1)
        if r < rows:
            softmax_row_backward(dx, dout, out, r * cols, cols)

    return SimpleNamespace(bias_activation_elements=bias_activation_elements, bias_softmax_rows=bias_softmax_rows,
                           activation_backward_elements=activation_backward_elements,
                           softmax_backward_rows=softmax_backward_rows)


def bias_activation_forward(out, x, b, act, alpha, rows, cols, plan=None):
    """out = act(x + b) for (rows, cols) row-major ``x`` (flat device arrays); ``b`` None: no
    bias. ``out`` may be ``x``. As ``kernels.activations.bias_activation_forward``."""
    check_code(act, HEAVISIDE, "activation")
    k = kernels(np.dtype(x.dtype).name)
    has_bias = b is not None
    b = b if has_bias else x
    if act == SOFTMAX:
        launch(plan, k.bias_softmax_rows, *blocks(rows), out, x, b, has_bias, rows, cols)
    else:
        launch(plan, k.bias_activation_elements, *blocks(rows * cols), out, x, b, has_bias, act, float(alpha),
               rows, cols)


def activation_backward(dx, dout, out, act, alpha, rows, cols, plan=None):
    """dx = dout * act'(.) from the forward's output ``out``; ``dx`` may be ``dout``.
    As ``kernels.activations.activation_backward``."""
    check_code(act, HEAVISIDE, "activation")
    k = kernels(np.dtype(out.dtype).name)
    if act == SOFTMAX:
        launch(plan, k.softmax_backward_rows, *blocks(rows), dx, dout, out, rows, cols)
    else:
        launch(plan, k.activation_backward_elements, *blocks(rows * cols), dx, dout, out, act, float(alpha),
               rows, cols)
