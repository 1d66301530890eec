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

Only where the call's products run BLAS on one thread (``threading.blas_threads_for``: a step
under ``BLAS_PARALLEL_MIN_FLOPS``, or ``set_num_threads(1)``), so that MKL never starts a thread
of Intel OpenMP, its threading runtime (fastnn's copy of MKL runs on MKL's sequential layer:
``config.MKL_SEQUENTIAL``). On several threads each library keeps its own pool, whose
threads wait busily for the next product (OpenBLAS's for a while, Intel OpenMP's for 200 ms):
alternating products of the two libraries then run against the other's waiting threads, and 50 x
784 x 100 took 0.9 ms through MKL instead of 0.04 ms. And an OpenMP runtime with threads is what
fastnn keeps out of its host process: GNU OpenMP's hung forked children, and a fork-based pool's
children hung once, in CI, after their parent's products ran through MKL on two threads (not in
eight later runs). All MKL would give there is a few percent (the wide network's step on two
threads, every product through MKL: 9.2 ms against 9.7-10.0 ms through OpenBLAS on that Xeon).
So a call on several threads runs every product on OpenBLAS. FASTNN_BLAS=mkl gives MKL every product of a call on one
thread without timing; =openblas leaves MKL unloaded (``config.BLAS_CHOICE``).
"""
import math
import threading
import time

import numpy as np

from . import config
from .kernels.dense import GEMM_FORWARD, GEMM_INPUT, GEMM_WEIGHTS, repeat_product
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

_choices = {}                 # (dtype, rows, n_in, n_out, product, threads) -> MKL or not
_lock = threading.Lock()      # one timing at a time: two at once would time each other


def plan(table, rows, dtype, backward, threads, measure=True, skip_first=False):
    """``Network.gemm`` for a call over batches of ``rows`` rows: None without MKL, else int64
    (L,) with the ``GEMM_*`` bits of the products that MKL runs faster. ``backward``: training
    (three products a layer), else the forward product only. ``threads``: the BLAS thread count
    the call's products run on (``threading.call_blas_threads``; None: outside a call, nothing
    timed). ``measure`` False: zeros, for a call that only needs the types. ``skip_first``: the
    first layer runs over a CSR input's nonzeros (no BLAS), and is not timed."""
    if not config.MKL:
        return None
    gemm = np.zeros(table.shape[0], np.int64)
    if not measure or rows <= config.FEW_ROWS:  # (a few rows run row by row, not through BLAS)
        return gemm
    if threads != 1:
        return gemm
    products = ((GEMM_FORWARD, GEMM_WEIGHTS, GEMM_INPUT) if backward else (GEMM_FORWARD,))
    for k in range(1 if skip_first else 0, table.shape[0]):
        if table[k, KIND] != DENSE_LAYER:
            continue
        n_in, n_out = int(table[k, N_IN]), int(table[k, N_OUT])
        for product in products:
            if product == GEMM_INPUT and k == 0:
                continue  # a first layer's input needs no gradient
            if config.BLAS_CHOICE == "mkl" or mkl_faster(np.dtype(dtype), rows, n_in, n_out, product, threads):
                gemm[k] |= product
    return gemm


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
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, n_in)).astype(dtype)
    W = rng.uniform(-1, 1, (n_in, n_out)).astype(dtype)
    dz = rng.uniform(-1, 1, (rows, n_out)).astype(dtype)
    if product == GEMM_FORWARD:
        layout, out, a, b = 0, np.empty((rows, n_out), dtype), x, W
    elif product == GEMM_WEIGHTS:
        layout, out, a, b = 1, np.empty((n_in, n_out), dtype), x, dz
    else:
        layout, out, a, b = 2, np.empty((rows, n_in), dtype), dz, W
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
