"""CUDA twin of ``fastnn.kernels.regularizers``: the weight penalty's gradient, added to ``grads``,
and its value, added to the batch's recorded loss, in one launch; and the penalty alone, for
evaluate (``regularization_penalty``), summed the same way into a float64 ``total``.

One thread per parameter up to the last penalized one; each block sums its threads' penalty
in shared memory and adds the sum to ``records[2 * (control[C_BATCH] - 1)]``, the loss of the
batch the loss kernel has just recorded (atomically: blocks finish in any order, so the float64
sum is rounded in a varying order, far below float32 resolution). Each element's terms are the
CPU kernel's own functions (``l1_value``, ``l2_value``, ``l1_gradient``, ``l2_gradient``),
compiled as device functions (``fastnn.cuda.device_twin``).
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import regularizers as cpu
from ..kernels.regularizers import R_HI, R_L1, R_L2, R_LO
from . import C_BATCH, REDUCE_THREADS, device_twin, kernel, launch, reduce_threads
from .metrics import block_sum

F64 = numba.float64
l1_value = device_twin(cpu.l1_value)
l2_value = device_twin(cpu.l2_value)
l1_gradient = device_twin(cpu.l1_gradient)
l2_gradient = device_twin(cpu.l2_gradient)


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE = T(0), T(1)

    @kernel
    def regularization_elements(params, grads, reg, n_reg, size, records, control):
        part = cuda.shared.array(REDUCE_THREADS, F64)
        tid = cuda.threadIdx.x
        i = cuda.grid(1)
        value = 0.0
        if i < size:
            for r in range(n_reg):
                if reg[r, R_LO] <= i < reg[r, R_HI]:
                    w = params[i]
                    l1, l2 = reg[r, R_L1], reg[r, R_L2]
                    value = l1 * l1_value(w) + l2 * l2_value(w)
                    grads[i] += l1_gradient(w, T(l1), ONE, ZERO) + l2_gradient(w, T(2.0 * l2))
        part[tid] = value
        block_sum(part)
        if tid == 0 and part[0] != 0.0:
            cuda.atomic.add(records, 2 * (control[C_BATCH] - 1), part[0])

    @kernel
    def penalty_elements(total, params, reg, n_reg, size):
        """The penalty alone (``regularization_penalty``), one thread per parameter."""
        part = cuda.shared.array(REDUCE_THREADS, F64)
        tid = cuda.threadIdx.x
        i = cuda.grid(1)
        value = 0.0
        if i < size:
            w = params[i]
            for r in range(n_reg):
                if reg[r, R_LO] <= i < reg[r, R_HI]:
                    value += reg[r, R_L1] * l1_value(w) + reg[r, R_L2] * l2_value(w)
        part[tid] = value
        block_sum(part)
        if tid == 0 and part[0] != 0.0:
            cuda.atomic.add(total, 0, part[0])

    return SimpleNamespace(regularization_elements=regularization_elements, penalty_elements=penalty_elements)


def regularization_forward_backward(params, grads, reg, n_reg, size, records, control, plan=None):
    """As ``kernels.regularizers.regularization_forward_backward`` for the device table ``reg``
    (``n_reg`` rows, penalized parameters below ``size``), after the step's loss kernel."""
    threads = reduce_threads(size)
    launch(plan, kernels(np.dtype(params.dtype).name).regularization_elements, -(-size // threads), threads,
           params, grads, reg, int(n_reg), int(size), records, control)


def regularization_penalty(total, params, reg, n_reg, size, plan=None):
    """total[0] += sum over the ``n_reg`` rows of the device table ``reg`` of l1 * sum|w| + l2 * sum w²
    (float64; ``total`` a zeroed float64 device array), for penalized parameters below ``size``:
    ``kernels.regularizers.regularization_penalty`` for ``CUDABackend.penalty``, so that evaluate
    reads one float64 back rather than the whole parameter buffer."""
    if size <= 0:
        return
    threads = reduce_threads(size)
    launch(plan, kernels(np.dtype(params.dtype).name).penalty_elements, -(-size // threads), threads,
           total, params, reg, int(n_reg), int(size))
