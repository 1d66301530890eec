"""CUDA twin of ``fastnn.kernels.metrics``: rows whose prediction matches the target, and the
training metrics' counters.

``correct_row`` (the CPU kernels' own source, as ``row_argmax``, compiled by
``fastnn.cuda.device_twin``) is the device function the loss kernel calls on each row it visits
(so accuracy costs no launch during training); ``count_correct`` is a one-block kernel for a
whole matrix; ``metric_counts`` adds a batch's counters, one thread per row, with the CPU's
``metric_row_counts`` (atomically, through its own ``add_count``).
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import metrics as cpu
from . import C_BAD, REDUCE_THREADS, blocks, device_twin, kernel, launch, reduce_threads

row_argmax = device_twin(cpu.row_argmax)
correct_row = device_twin(cpu.correct_row)


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
    """The metric device functions (the same for every dtype: the thresholds compare exactly)."""
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


def count_correct(result, pred, target, rows, cols, plan=None):
    """result[0] = correct rows of (rows, cols) ``pred`` against ``target`` (int64 device array)."""
    launch(plan, kernels(np.dtype(pred.dtype).name).count_correct_block, 1, reduce_threads(rows),
           result, pred, target, rows, cols)


@kernel(device=True)
def atomic_add_count(counts, index, value):
    """``kernels.metrics.add_count`` for rows that run in parallel."""
    cuda.atomic.add(counts, index, value)


metric_row_counts = device_twin(cpu.metric_row_counts, add_count=atomic_add_count)


@kernel
def metric_counts_rows(spec, n_spec, counts, pred, target, rows, cols, control):
    """One thread per row: its counters for every row of ``spec`` added to ``counts`` (float64,
    atomically), as ``kernels.metrics.metric_counts``; nothing once ``control[C_BAD]`` >= 0."""
    i = cuda.grid(1)
    if i >= rows or control[C_BAD] >= 0:
        return
    for m in range(n_spec):
        metric_row_counts(spec[m, 0], spec[m, 1], spec[m, 2], counts, pred, target, i * cols + spec[m, 3], spec[m, 4])


def metric_counts(spec, counts, pred, target, rows, cols, control, plan=None):
    """Add the training counters of ``spec`` (device int64 (M, 5), as the CPU twin's; codes
    and columns checked on the host: ``host.check_metric_spec``) for the (rows, cols) batch to the float64 device array ``counts``."""
    launch(plan, metric_counts_rows, *blocks(rows),
           spec, spec.shape[0], counts, pred, target, rows, cols, control)
