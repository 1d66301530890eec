"""The limit of a training step: the time of its own dense matrix products, run back to back.

A training step of an MLP with layer widths ``sizes`` and batch B does, per dense layer k,
x_k @ W_k forward, x_k.T @ dz_k for the weight gradient and (except for the first layer)
dz_k @ W_k.T for the input gradient. ``products_seconds`` runs exactly these products (the same
shapes, the same BLAS through Numba's ``np.dot``, or MKL's GEMM (as tiles on Numba's threads
where the step runs them so) for the products where fastnn picks MKL (``fastnn/blas.py``, with
the ``mkl`` extra), with the number of BLAS threads fastnn's
own rule picks for that step) and nothing else, on random data that holds no denormal numbers.
What a step costs beyond that figure is everything that is not a matrix product: gather,
elementwise passes, loss, optimizer, and the hand-over between them. ``peers.py`` prints
products / step time per framework as its "distance to the limit"; ``bench_model.StepLimit``
tracks fastnn's in asv. ``predict_products_seconds`` is the same for ``predict``: the forward
products alone, over the rows in fastnn's inference batches.

Not a benchmark itself (asv imports it while discovering the suite and finds none here).
"""
import time

import numpy as np


def _products_kernel():
    import numba

    from fastnn.kernels.dense import GEMM_FORWARD, GEMM_INPUT, GEMM_WEIGHTS, repeat_product

    @numba.njit(cache=False)
    def products(weights, xs, dzs, dws, gemm, tiles):  # (tiles: None, or MKL's tiles as the step's)
        n_layers = len(weights)
        for k in range(n_layers):
            repeat_product(xs[k + 1], xs[k], weights[k], 0, gemm[k] & GEMM_FORWARD != 0, 1, tiles)
        for k in range(n_layers - 1, -1, -1):
            repeat_product(dws[k], xs[k], dzs[k + 1], 1, gemm[k] & GEMM_WEIGHTS != 0, 1, tiles)
            if k > 0:
                repeat_product(dzs[k], dzs[k + 1], weights[k], 2, gemm[k] & GEMM_INPUT != 0, 1, tiles)
    return products


def _forward_kernel():
    import numba

    from fastnn.kernels.dense import GEMM_FORWARD, repeat_product

    @numba.njit(cache=False)
    def forward(weights, xs, gemm):
        for k in range(len(weights)):
            repeat_product(xs[k + 1], xs[k], weights[k], 0, gemm[k] & GEMM_FORWARD != 0, 1)
    return forward


def _gemm(sizes, batch, backward):
    """fastnn's choice of library for each layer's products (``fastnn.blas.plan``; zeros: OpenBLAS
    for all), inside the call's ``blas_threads_for``."""
    from fastnn import blas
    from fastnn.kernels.table import DENSE_LAYER, KIND, N_IN, N_OUT
    from fastnn.threading import call_blas_threads

    table = np.zeros((len(sizes) - 1, 6), np.int64)
    table[:, N_IN], table[:, N_OUT], table[:, KIND] = sizes[:-1], sizes[1:], DENSE_LAYER
    gemm = blas.plan(table, batch, np.float32, backward, call_blas_threads())
    return np.zeros(len(sizes) - 1, np.int64) if gemm is None else gemm


def _median_seconds(call, repeats):
    """Median seconds of ``call()`` over at least ``repeats`` calls and about half a second
    (small steps take microseconds), after a first call that compiles and warms the buffers."""
    call()
    start = time.perf_counter()
    call()
    calls = max(repeats, int(0.5 / max(time.perf_counter() - start, 1e-6)))
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _random_weights(rng, sizes):
    """(weights of every dense layer, forward matrix-product FLOPs per row) for layer widths ``sizes``."""
    from numba.typed import List

    pairs = list(zip(sizes[:-1], sizes[1:]))
    return List([rng.standard_normal(p).astype(np.float32) for p in pairs]), 2.0 * sum(a * b for a, b in pairs)


def _over_rows(batch_seconds, rows, batch_size):
    """Seconds of ``rows`` rows run in batches of ``batch_size`` (full ones, then the smaller last
    one), from ``batch_seconds(batch)``."""
    full, tail = divmod(rows, batch_size)
    return full * batch_seconds(batch_size) + (batch_seconds(tail) if tail else 0.0)


def predict_products_seconds(sizes, rows, batch_size=None, repeats=7):
    """Median seconds of the forward products alone of ``predict`` on ``rows`` rows, in batches
    of ``batch_size`` (fastnn's inference batch by default), with the BLAS threads fastnn's
    rule picks for them."""
    from numba.typed import List

    from fastnn.config import INFERENCE_BATCH_SIZE
    from fastnn.threading import blas_threads_for

    batch_size = min(rows, batch_size or INFERENCE_BATCH_SIZE)
    forward = _forward_kernel()
    rng = np.random.default_rng(0)
    weights, flops_per_row = _random_weights(rng, sizes)

    def batch_seconds(batch):
        xs = List([rng.standard_normal((batch, a)).astype(np.float32) for a in sizes])
        with blas_threads_for(flops_per_row * batch):  # the rule of fastnn's predict
            gemm = _gemm(sizes, batch, False)
            return _median_seconds(lambda: forward(weights, xs, gemm), repeats)

    return _over_rows(batch_seconds, rows, batch_size)


def products_seconds(sizes, batch_size, rows=None, repeats=20):
    """Median seconds (over at least ``repeats`` calls) of one step's products at ``batch_size`` rows; with ``rows``, of one epoch
    of ``rows`` rows (full batches and the smaller last one, as ``fit`` runs them)."""
    from numba.typed import List

    from fastnn.threading import blas_threads_for

    products = _products_kernel()
    rng = np.random.default_rng(0)
    weights, flops_per_row = _random_weights(rng, sizes)

    def step_seconds(batch):
        xs = List([rng.standard_normal((batch, a)).astype(np.float32) for a in sizes])
        dzs = List([rng.standard_normal((batch, a)).astype(np.float32) for a in sizes])
        dws = List([np.empty((a, b), np.float32) for a, b in zip(sizes[:-1], sizes[1:])])
        with blas_threads_for(3 * flops_per_row * batch):  # the rule of fastnn's training step
            gemm = _gemm(sizes, batch, True)
            tiles = getattr(gemm, "tiles", None)  # (a TiledGemm: the step's products as MKL tiles)
            bits = getattr(gemm, "bits", gemm)
            return _median_seconds(lambda: products(weights, xs, dzs, dws, bits, tiles), repeats)

    return step_seconds(batch_size) if rows is None else _over_rows(step_seconds, rows, batch_size)
