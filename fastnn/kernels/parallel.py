"""Parallel passes on Numba's TBB layer (``config.PARALLEL``), and the two passes that have no module
of their own: the bias gradient's column sums (``dense_backward``) and the batch gather
(``train_batches``).

How every parallel pass of fastnn is built: the serial kernel keeps its code, and above a size
threshold (``config.PARALLEL_MIN_*``) branches to a small ``config.kernel(parallel=True)`` kernel
under ``if PARALLEL_<PASS> and ...``, a module constant (config.py) that Numba prunes on, so a
serial build never compiles the parallel kernel and is the code of before. The parallel kernel
cuts the work into one block per thread (rows, columns, or elements aligned to
``PARALLEL_ALIGN``); each block writes only its own outputs, computed as the serial loop
computes them, so results are the serial kernel's bit for bit. Parallel kernels are kept small and
few: each is a function of its own whose compile (its parfor, and LLVM over everything it calls)
costs 0.5-1.3 s of a cold start, so a parallel build of a whole dispatcher (the activations, the
four optimizers) did not fit.

``block_count()``: how many blocks a parallel kernel splits its work into. In a parallel build,
Numba's threads: ``_iget_num_threads``, the intrinsic that Numba's own prange lowering calls
(``numba.get_num_threads()`` reaches the threading layer through a ctypes pointer, which keeps a
function out of Numba's cache). In a serial build (only the tests call these kernels there: every
caller prunes them), a fixed 4, run one after another: the intrinsic starts the threading layer
when it is compiled, not when its code is loaded from the cache, so a serial build loaded from a
warm cache called a null pointer (a segfault in the test suite's second run).
"""
from numba import prange

from ..config import (PARALLEL, PARALLEL_ALIGN, PARALLEL_COLUMN_SUMS, PARALLEL_GATHER, PARALLEL_MIN_COLUMN_SUMS,
                      PARALLEL_MIN_GATHER, kernel)
from .simd import SIMD, prefetch_line

if PARALLEL:
    from numba.np.ufunc.parallel import _iget_num_threads as block_count
else:
    @kernel(inline=True)
    def block_count():
        return 4


@kernel(inline=True)
def column_sums(db, dz):
    """db = the column sums of dz (B, n)."""
    if PARALLEL_COLUMN_SUMS and dz.size >= PARALLEL_MIN_COLUMN_SUMS:
        column_sums_parallel(db, dz)
        return
    db[:] = 0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[i, j]


@kernel(parallel=True)
def column_sums_parallel(db, dz):
    """``column_sums`` over blocks of columns, one per thread: each block sums its own columns over
    every row, in the serial order (no thread adds into another's)."""
    rows, cols = dz.shape
    chunks = max(min(block_count(), cols // PARALLEL_ALIGN), 1)
    size = ((cols + chunks - 1) // chunks + PARALLEL_ALIGN - 1) // PARALLEL_ALIGN * PARALLEL_ALIGN
    for c in prange(chunks):
        lo, hi = min(c * size, cols), min(c * size + size, cols)
        # Over views from 0: an index from ``lo`` may be negative as far as LLVM knows, and its
        # wraparound test kept the loop scalar (256 x 1024 on two threads: 200 us, serial 38 us).
        block = db[lo:hi]
        block[:] = 0
        for i in range(rows):
            row = dz[i, lo:hi]
            for j in range(hi - lo):
                block[j] += row[j]


@kernel(inline=True)
def gather_rows(dst, src, order, start, parallel=None):
    """dst[r] = src[order[start + r]] for every row of dst; on Numba's threads above
    ``PARALLEL_MIN_GATHER`` where FASTNN_PARALLEL names the gather or ``parallel`` is True (a
    step's own choice, ``train_batches``' ``parallel_gather``).

    Element loops rather than slice assignment: a slice assignment compiles numba's
    shape-mismatch error formatting, seconds of every cold start."""
    if (PARALLEL_GATHER or parallel is not None) and dst.size >= PARALLEL_MIN_GATHER:
        gather_rows_parallel(dst, src, order, start)
        return
    copy_rows(dst, src, order, start, 0, dst.shape[0])


@kernel(inline=True)
def copy_rows(dst, src, order, start, lo, hi):
    """dst[r] = src[order[start + r]] for r in [lo, hi), every row's cache lines asked for first
    (``simd.prefetch_line``): the rows lie at random places of a large array, and one copy loop
    has only a few of its lines on their way from memory at a time; the hints put all of them on
    their way at once (the seed network's step at batch 50: 2-3% shorter)."""
    if SIMD and src.flags.c_contiguous:  # (SIMD: an LLVM whose intrinsics simd.py names)
        line = max(1, 64 // src.itemsize)
        for r in range(lo, hi):
            row = order[start + r] * src.shape[1]
            for j in range(0, src.shape[1], line):
                prefetch_line(src, row + j)
    for r in range(lo, hi):
        s = order[start + r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[s, j]


@kernel(parallel=True)
def gather_rows_parallel(dst, src, order, start):
    """``gather_rows`` over blocks of rows, one per thread."""
    rows = dst.shape[0]
    chunks = max(min(block_count(), rows), 1)
    for c in prange(chunks):
        copy_rows(dst, src, order, start, rows * c // chunks, rows * (c + 1) // chunks)
