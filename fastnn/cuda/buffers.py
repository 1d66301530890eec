"""Kernels on whole device buffers, with no CPU twin (the CPU kernels zero in their own loops):
``fill_zero``, for the gradients that later kernels add into (an Embedding's table, a
functional model's per-node gradients)."""
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from . import blocks, kernel, launch


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))

    @kernel
    def zero_elements(out, size):
        i = cuda.grid(1)
        if i < size:
            out[i] = T(0)

    return zero_elements


def fill_zero(out, plan=None):
    """out[:] = 0 for a flat device array."""
    launch(plan, kernels(np.dtype(out.dtype).name), *blocks(out.size), out, int(out.size))
