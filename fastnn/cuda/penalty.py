"""The weight penalty's value on the device, for ``CUDABackend.penalty``: the twin of
``kernels.regularizers.regularization_penalty``, so that evaluate reads one float64 back rather
than the whole parameter buffer.

One thread per parameter up to the last penalized one; each block sums its threads' terms in
float64 shared memory (``metrics.block_sum``) and adds the sum to ``total[0]`` atomically.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
from numba import cuda

from ..kernels.regularizers import R_HI, R_L1, R_L2, R_LO
from . import REDUCE_THREADS, kernel, launch, reduce_threads
from .metrics import block_sum

F64 = numba.float64


@lru_cache(maxsize=None)
def kernels():
    @kernel
    def penalty_elements(total, params, reg, n_reg, size):
        part = cuda.shared.array(REDUCE_THREADS, F64)
        tid = cuda.threadIdx.x
        i = cuda.grid(1)
        value = 0.0
        if i < size:
            w = F64(params[i])
            for r in range(n_reg):
                if reg[r, R_LO] <= i < reg[r, R_HI]:
                    value += reg[r, R_L1] * abs(w) + reg[r, R_L2] * w * w
        part[tid] = value
        block_sum(part)
        if tid == 0 and part[0] != 0.0:
            cuda.atomic.add(total, 0, part[0])

    return SimpleNamespace(penalty_elements=penalty_elements)


def regularization_penalty(total, params, reg, n_reg, size, plan=None):
    """total[0] += sum over the ``n_reg`` rows of the device table ``reg`` of l1 * sum|w| + l2 * sum w²
    (float64; ``total`` a zeroed float64 device array), for penalized parameters below ``size``."""
    if size <= 0:
        return
    threads = reduce_threads(size)
    launch(plan, kernels().penalty_elements, -(-size // threads), threads,
           total, params, reg, int(n_reg), int(size))
