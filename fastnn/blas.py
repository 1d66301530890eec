"""Which BLAS library runs each Dense layer's matrix products: SciPy's OpenBLAS (through Numba's
``np.dot``) or, where the ``mkl`` extra is installed (``config.MKL``), Intel's MKL.

Neither library wins everywhere: on a 2-core Xeon (AVX-512), on one thread, MKL's SGEMM ran the
seed network's first layer (50 x 784 x 100) 1.45x faster than OpenBLAS and its dW 1.27x faster,
and 50 x 100 x 50 10% slower; on AMD cores OpenBLAS is the faster library. So ``plan`` times
both libraries on each of a layer's products (the forward product, and for training dW = x.T @ dz
and dx = dz @ W.T) at the call's batch size and dtype, on the machine it runs on, and gives MKL
the products it runs at least ``MKL_MARGIN`` faster. Each shape is timed once per process (14 ms
for the seed network's five products at batch 50, 0.2 s for the wide network's at batch 256 on
one thread; at most about ``PLAN_MAX_FLOPS`` of work per product timed: larger batches are timed
at fewer rows).

Per product where the call's products run BLAS on one thread (``threading.blas_threads_for``: a
step under ``BLAS_PARALLEL_MIN_FLOPS``, or ``set_num_threads(1)``). fastnn's copy of MKL runs on
MKL's sequential layer (``config.MKL_SEQUENTIAL``): it never starts a thread of its own, and no
OpenMP runtime comes into the process (GNU OpenMP's hung forked children; a fork-based pool's
children hung once, in CI, after their parent's products ran through MKL on Intel OpenMP's two
threads).

On several threads, a training step's products run either all on OpenBLAS's threads or all as
MKL tiles on Numba's threads (``kernels/dense.py: mkl_gemm_parallel``: each product split into one
block of its output per thread, each block one sequential MKL call), whichever ``tiles_faster``
times faster for the whole step on the machine it runs on. Not some of each: OpenBLAS's threads
wait busily for about 0.1 s after a product, so a product on Numba's threads between two of
OpenBLAS's runs against them (50 x 784 x 100 through MKL on two threads: 0.9 ms instead of
0.04). With tiles, the step runs on one pool of threads, whose idle workers sleep (TBB's), so
that Adam's parallel pass pays there too (``cpu_backend._parallel_optimizer``). On a 2-core Xeon
(AVX-512) the wide network's eight products took 6.9-7.2 ms as tiles against 8.2 ms on OpenBLAS's
two threads, and its step 8.2-8.9 ms against 10.2-10.4 ms. Inference on several threads keeps
OpenBLAS's threads (``predict`` shares its batches among Numba's threads instead, one BLAS thread
each). FASTNN_BLAS=mkl gives MKL every product without timing (as tiles on several threads);
=openblas leaves MKL unloaded (``config.BLAS_CHOICE``).
"""
import math
import threading
import time

import numpy as np

from . import config
from .kernels.dense import GEMM_FORWARD, GEMM_INPUT, GEMM_WEIGHTS, TiledGemm, repeat_product
from .kernels.table import DENSE_LAYER, KIND, N_IN, N_OUT

# MKL takes a product only if its best time is below this share of OpenBLAS's: a tie stays with
# OpenBLAS, and timing noise does not flip the choice from one process to the next.
MKL_MARGIN = 0.95
# Work of one timed product at most; a batch above it is timed at fewer rows (a product's speed
# per FLOP changes little past a few hundred rows).
PLAN_MAX_FLOPS = 2e9
# Each library runs a product for at least this long per timed round (several calls of a small
# one), three rounds, alternating, the best round counted.
ROUND_SECONDS = 3e-4
ROUNDS = 3

_choices = {}                 # (dtype, rows, n_in, n_out, product, threads) or (dtype, rows, step, threads) -> MKL
_lock = threading.Lock()      # one timing at a time: two at once would time each other


def plan(table, rows, dtype, backward, threads, measure=True, skip_first=False):
    """``Network.gemm`` for a call over batches of ``rows`` rows: None without MKL, else int64
    (L,) with the ``GEMM_*`` bits of the products that MKL runs faster, in a ``TiledGemm`` with
    the tiles of each where they run as tiles (a training call on several threads). ``backward``: training
    (three products a layer), else the forward product only. ``threads``: the BLAS thread count
    the call's products run on (``threading.call_blas_threads``; None: outside a call, nothing
    timed). ``measure`` False: zeros, for a call that only needs the types. ``skip_first``: the
    first layer runs over a CSR input's nonzeros (no BLAS), and is not timed."""
    if not config.MKL:
        return None
    gemm = np.zeros(table.shape[0], np.int64)
    if not measure or rows <= config.FEW_ROWS or threads is None:  # (a few rows: row by row, no BLAS)
        return gemm
    products = ((GEMM_FORWARD, GEMM_WEIGHTS, GEMM_INPUT) if backward else (GEMM_FORWARD,))
    step = [(k, int(table[k, N_IN]), int(table[k, N_OUT]), product)
            for k in range(1 if skip_first else 0, table.shape[0]) if table[k, KIND] == DENSE_LAYER
            for product in products if not (product == GEMM_INPUT and k == 0)]  # (layer 0's input: no gradient)
    if threads == 1:
        for k, n_in, n_out, product in step:
            if config.BLAS_CHOICE == "mkl" or mkl_faster(np.dtype(dtype), rows, n_in, n_out, product, threads):
                gemm[k] |= product
    elif step and tiles_possible(backward) and (config.BLAS_CHOICE == "mkl" or
                                                tiles_faster(np.dtype(dtype), rows, step, threads)):
        for k, _, _, product in step:
            gemm[k] |= product
        return TiledGemm(gemm, threads)
    return gemm


def tiles_possible(backward=True):
    """Whether a training call on several threads may run its products as MKL tiles on Numba's
    threads (``kernels/dense.py: mkl_gemm_parallel``): MKL on its sequential layer in fastnn's own
    copy, Numba's threads on TBB, one process (under MPI the steps stay serial)."""
    from . import distributed
    return backward and config.MKL and config.MKL_SEQUENTIAL and config.PARALLEL and distributed.world() is None


def tiles_faster(dtype, rows, step, threads):
    """Whether the products of ``step`` ((layer, n_in, n_out, product) each), each as ``threads``
    MKL tiles on Numba's threads, take at most ``MKL_MARGIN`` of their time on OpenBLAS's
    ``threads`` threads; timed once per process and step.

    All of a step's products one way or the other: OpenBLAS's threads wait busily after a product
    (for about 0.1 s), so a product on Numba's threads between two of OpenBLAS's runs against
    them (an MKL product of 50 x 784 x 100 on two threads: 0.9 ms instead of 0.04; the wide
    network's step as tiles, alternating with OpenBLAS's: 12-17 ms instead of 7). So each way
    runs every product of the step, a warm-up and three rounds, the best round counted, the tiles
    first: timed after OpenBLAS's, they would run against its waiting threads."""
    key = (dtype.str, rows, tuple(step), threads)
    with _lock:
        if key not in _choices:
            cut = min(int(PLAN_MAX_FLOPS / (2.0 * n_in * n_out)) for _, n_in, n_out, _ in step)
            calls = [_operands(dtype, max(min(rows, cut), config.FEW_ROWS + 1), n_in, n_out, product)
                     for _, n_in, n_out, product in step]
            best = [math.inf, math.inf]
            for lib in (1,) * (ROUNDS + 1) + (0,) * (ROUNDS + 1):
                start = time.perf_counter()
                for out, a, b, layout in calls:
                    repeat_product(out, a, b, layout, bool(lib), 1, threads)
                best[lib] = min(best[lib], time.perf_counter() - start)
            _choices[key] = best[1] < MKL_MARGIN * best[0]
        return _choices[key]


def tiled(gemm):
    """Whether ``plan``'s ``gemm`` runs its products as tiles."""
    return isinstance(gemm, TiledGemm) and gemm.tiles > 1


def _operands(dtype, rows, n_in, n_out, product):
    """(out, a, b, layout) for ``repeat_product``: ``product`` of a (rows x n_in) @ (n_in x n_out)
    layer on random numbers."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, n_in)).astype(dtype)
    W = rng.uniform(-1, 1, (n_in, n_out)).astype(dtype)
    dz = rng.uniform(-1, 1, (rows, n_out)).astype(dtype)
    if product == GEMM_FORWARD:
        return np.empty((rows, n_out), dtype), x, W, 0
    if product == GEMM_WEIGHTS:
        return np.empty((n_in, n_out), dtype), x, dz, 1
    return np.empty((rows, n_in), dtype), dz, W, 2


def mkl_faster(dtype, rows, n_in, n_out, product, threads):
    """Whether MKL runs ``product`` of a (rows x n_in) @ (n_in x n_out) layer at least
    ``MKL_MARGIN`` faster than OpenBLAS, timed once per process and shape."""
    key = (dtype.str, rows, n_in, n_out, product, threads)
    with _lock:
        if key not in _choices:
            ob, mkl = time_product(dtype, rows, n_in, n_out, product)
            _choices[key] = mkl < MKL_MARGIN * ob
        return _choices[key]


def time_product(dtype, rows, n_in, n_out, product):
    """(OpenBLAS's, MKL's) best time per call, in seconds, of ``product`` at these sizes; the
    rows cut so that one call does at most ``PLAN_MAX_FLOPS``."""
    rows = max(min(rows, int(PLAN_MAX_FLOPS / (2.0 * n_in * n_out))), config.FEW_ROWS + 1)
    out, a, b, layout = _operands(dtype, rows, n_in, n_out, product)
    best = [math.inf, math.inf]
    calls = 1
    for lib in (0, 1, 0, 1):  # warm-up (a library's first call sets it up); the second sets the calls per round
        start = time.perf_counter()
        repeat_product(out, a, b, layout, bool(lib), 1)
        calls = max(calls, min(100, int(ROUND_SECONDS / max(time.perf_counter() - start, 1e-9)) + 1))
    for _ in range(ROUNDS):
        for lib in (0, 1):
            start = time.perf_counter()
            repeat_product(out, a, b, layout, bool(lib), calls)
            best[lib] = min(best[lib], (time.perf_counter() - start) / calls)
    return best[0], best[1]


def choices():
    """The timings' outcomes so far: {(dtype, rows, n_in, n_out, product, threads): MKL or not}."""
    with _lock:
        return dict(_choices)
