"""CUDA twin of ``fastnn.kernels.metrics``: rows whose prediction matches the target.

``correct_row`` is the device function the loss kernel calls on each row it visits (so
accuracy costs no launch during training); ``count_correct`` is a one-block kernel for a
whole matrix.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from . import REDUCE_THREADS, kernel, launch


@kernel(device=True)
def block_sum(part):
    """Sum ``part`` (a shared array of one entry per thread of a power-of-two block) into
    ``part[0]``, by halving; every thread of the block must call it. The one tree reduction of
    fastnn.cuda: the loss, metric, regularization and clipping kernels use it."""
    tid = cuda.threadIdx.x
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            part[tid] += part[tid + s]
        cuda.syncthreads()
        s //= 2


@lru_cache(maxsize=None)
def device_functions(dtype):
    HALF = numba.from_dtype(np.dtype(dtype))(0.5)

    @kernel(device=True)
    def correct_row(pred, target, lo, cols):
        """1 when the row at ``lo`` is right: argmax equality for cols > 1 (first maximum
        wins, as NumPy), threshold at 0.5 for one column (binary accuracy); else 0."""
        if cols == 1:
            return 1 if (pred[lo] > HALF) == (target[lo] > HALF) else 0
        best_p = 0
        best_t = 0
        for j in range(1, cols):
            if pred[lo + j] > pred[lo + best_p]:
                best_p = j
            if target[lo + j] > target[lo + best_t]:
                best_t = j
        return 1 if best_p == best_t else 0

    return SimpleNamespace(correct_row=correct_row)


@lru_cache(maxsize=None)
def kernels(dtype):
    correct_row = device_functions(dtype).correct_row

    @kernel
    def count_correct_block(result, pred, target, rows, cols):
        hits = cuda.shared.array(REDUCE_THREADS, numba.int64)
        tid = cuda.threadIdx.x
        n = 0
        for r in range(tid, rows, cuda.blockDim.x):
            n += correct_row(pred, target, r * cols, cols)
        hits[tid] = n
        block_sum(hits)
        if tid == 0:
            result[0] = hits[0]

    return SimpleNamespace(count_correct_block=count_correct_block)


def reduce_threads(rows):
    """Threads of a one-block reduction over ``rows`` rows: a power of two, at most REDUCE_THREADS."""
    t = 1
    while t < rows and t < REDUCE_THREADS:
        t *= 2
    return t


def count_correct(result, pred, target, rows, cols, plan=None):
    """result[0] = correct rows of (rows, cols) ``pred`` against ``target`` (int64 device array)."""
    launch(plan, kernels(np.dtype(pred.dtype).name).count_correct_block, 1, reduce_threads(rows),
           result, pred, target, rows, cols)
