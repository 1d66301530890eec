"""Inference over many batches as kernels: ``predict`` and ``evaluate``'s data path (the CPU
backend calls each once per call), the walkers' forward pass in inference mode
(``network.network_forward``) batch after batch, each batch's predictions copied out as it ends.

``predict_batches`` checks each batch for NaN or infinity just before its pass, while its rows
are in cache (through the first Dense layer's product where there is one:
``first_dense_checked``); ``predict_sparse_batches`` runs a CSR input's first layer over its
nonzeros; ``evaluate_batches`` sums each batch's loss times its rows and the correct rows, and
``evaluate_predictions`` does the same from predictions made already.
"""
import numpy as np
from numba import prange

from ..config import MKL, PARALLEL, kernel
from .activations import bias_activation_forward
from .checks import all_finite
from .dense import (MKL_LOCAL_THREADS, dense_forward, dense_product, gemm_bits, nonzero_rows_product,
                    nonzero_rows_product_parallel)
from .dispatch import layer_forward
from .metrics import count_correct
from .network import network_forward, node_output
from .simd import SIMD, fetch_add, vec_lanes
from .sparse import csr_first_forward
from .table import ACT, ALPHA, B_OFF, DENSE_LAYER, KIND, N_IN, N_OUT, W_OFF, Workspace
from .views import matrix_view


@kernel
def predict_batches(out, net, x, batch_size, work, training, dropout=True, batchnorm=True, embedding=True, masking=True,
                    user=None, graph=None, check=False, nonzero=False, counter=None, idx=None):
    """out[i] = network(x[i]) for every row, ``batch_size`` rows per forward pass: in inference
    mode, or with ``training`` as ``network_forward``'s (Dropout active, step ``net.rng[RNG_STEP]``).
    Returns -1, or with ``check`` the first row of the first batch holding a NaN or an infinity
    (nothing from it on is computed): each batch is scanned just before its pass, while its rows
    are in cache, instead of the whole input once more before it. ``nonzero``: a stack's first
    Dense layer multiplies x's nonzero columns only (``dense.nonzero_rows_product_parallel``, or
    serially with ``idx`` as its scratch). ``counter``: None, every batch in order; or an int64
    array whose element 0 hands out the next batch to whichever thread asks
    (``predict_batches_parallel``): each thread takes batches until none is left."""
    n = x.shape[0]
    dense_first = graph is None and net.layers[0, KIND] == DENSE_LAYER
    b = 0
    if counter is not None:  # (Numba prunes a branch only on a plain ``is None`` test)
        b = fetch_add(counter, 0, 1)
    while b * batch_size < n:
        lo = b * batch_size
        if counter is None:
            b += 1
        else:
            b = fetch_add(counter, 0, 1)
        hi = min(lo + batch_size, n)
        first = 0
        if dense_first and (check or nonzero):
            if not first_dense_checked(net, x[lo:hi], work, check, nonzero, idx):
                return lo
            first = 1
        elif check and not all_finite(x[lo:hi]):
            return lo
        pred = network_forward(net, x[lo:hi], work, training, dropout, batchnorm, embedding, masking, user, 0, graph,
                               first)
        for i in range(hi - lo):
            for j in range(pred.shape[1]):
                out[lo + i, j] = pred[i, j]
    return -1


@kernel(parallel=True)
def predict_batches_parallel(out, net, x, batch_size, works, dropout=True, batchnorm=True, embedding=True,
                             masking=True, user=None, graph=None, check=False, nonzero=False):
    """``predict_batches`` in inference mode with its batches shared among Numba's threads: each
    thread takes the next batch not yet taken (``simd.fetch_add`` on a shared counter) until none
    is left, so that a thread whose core is busy with other work takes fewer (with a fixed share,
    batches t, t + T, ... on thread t, the call waited for the slowest thread). Each thread has a
    workspace of its own (``works``: a ``Workspace`` whose ``acts`` and ``stats`` have a row per
    thread) and runs its products on one BLAS thread (the caller's ``blas_threads_for``). Every
    batch is the serial path's, rows and all, so each row's result is the serial path's on one BLAS
    thread (MKL's too, where ``net.gemm`` gives it products: its count is set in each thread),
    whichever thread ran it. Why not BLAS's own threads: OpenBLAS's wait busily for 0.1 s after
    each product and took the second core from the first layer's parallel nonzero product (the
    wide network, 10,000 rows: 170-180 ms against 131-137 through GEMM); with one pool doing all
    the work, every pass of the network runs on every core. Returns as ``predict_batches``: the
    first row of the first batch holding a NaN or an infinity, or -1 (every batch before a bad one
    was handed out before it, and run)."""
    threads = works.acts.shape[0]
    bad = np.empty(threads, np.int64)
    counter = np.zeros(1, np.int64)
    for t in prange(threads):
        work = Workspace(works.acts[t], works.act_off, works.deltas, works.targets, works.stats[t])
        idx = np.empty(x.shape[1] + vec_lanes(x), np.int32)  # (as nonzero_rows_product_parallel's)
        before = np.int32(0)
        if MKL:  # MKL on one thread in this thread, as in the caller's: never a team of Intel OpenMP's
            before = MKL_LOCAL_THREADS(np.int32(1))
        bad[t] = predict_batches(out, net, x, batch_size, work, False, dropout, batchnorm, embedding, masking, user,
                                 graph, check, nonzero, counter, idx)
        if MKL:
            MKL_LOCAL_THREADS(before)
    first = -1
    for t in range(threads):
        if bad[t] >= 0 and (first < 0 or bad[t] < first):
            first = bad[t]
    return first


@kernel(inline=True)
def first_dense_checked(net, x, work, check=True, nonzero=False, idx=None):
    """Layer 0 (a stack's Dense layer) on the rows ``x`` for ``predict_batches``: its product
    first (over x's nonzero columns where ``nonzero``), then, with ``check`` and only where the
    product holds a NaN or an infinity, a scan of the rows themselves; bias and activation after.
    False (nothing more computed) when a row of ``x`` is not finite.
    A NaN or an infinity anywhere in a row makes every column of that row's product one (NaN times
    anything, 0 included, is NaN; inf times 0 is NaN), so the product's check misses none; a
    product that overflows from finite rows passes, as before. The rows are read once, by the
    product, instead of twice: a scan before it streamed them from memory, 3.3 of the 12 ms of a
    predict of 10,000 MNIST rows; the product (rows x n_out) is small and in cache."""
    params, layers, alphas = net.params, net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    rows = x.shape[0]
    out = matrix_view(work.acts, work.act_off[1], rows, n_out)
    W = matrix_view(params, w, n_in, n_out)
    if SIMD and nonzero and idx is not None:
        nonzero_rows_product(out, x, W, idx, 0, rows)
    elif SIMD and PARALLEL and nonzero:
        nonzero_rows_product_parallel(out, x, W)
    else:
        dense_product(out, x, W, gemm_bits(net.gemm, 0))
    if check and not all_finite(out) and not all_finite(x):
        return False
    bias_activation_forward(out, out, params[b: b + n_out], layers[0, ACT], alphas[0, ALPHA])
    return True


@kernel
def predict_sparse_batches(out, net, indptr, indices, values, batch_size, work, dropout=True, batchnorm=True,
                           embedding=True, masking=True, user=None):
    """``predict_batches`` (inference mode) of a CSR matrix (``indptr`` int64 of its n + 1 row
    offsets, ``indices`` int32, ``values`` of the model's dtype; canonical and checked) whose first
    layer, a Dense layer of a stack, runs over each batch's nonzeros only
    (``sparse.csr_first_forward``); the layers after it as ``network_forward``'s. The workspace
    needs no room for the input (``work.act_off[0] == act_off[1]``): nothing is densified."""
    n = indptr.size - 1
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        csr_first_forward(net, indptr[lo: hi + 1], indices, values, work, hi - lo)
        # (x: a stand-in of the batch's rows and no columns; with first = 1 no layer reads it)
        pred = network_forward(net, work.acts[:0].reshape(hi - lo, 0), work, bool(False), dropout, batchnorm,
                               embedding, masking, user, 0, None, np.int64(1))
        for i in range(hi - lo):
            for j in range(pred.shape[1]):
                out[lo + i, j] = pred[i, j]


@kernel
def few_rows_forward(net, x, work, dropout=True, batchnorm=True, embedding=True, masking=True, user=None, graph=None):
    """``network_forward`` in inference mode, for a few rows at a time (``Predictor``, and through
    it ``model.predict`` of a few rows): a stack's Dense layers run here, every other layer
    through ``layer_forward``. A one-row pass of a layer takes a microsecond or less, and the
    call into the layer dispatcher was a tenth of it: Numba counts a reference up and down (an
    atomic add each) for every array of the network and workspace tuples it passes. Not in
    ``network_forward``: training and batch predict share that one, whose passes are long, and
    the Dense pass spliced into it cost about 0.9 s more compiling at a model's first fit (here,
    0.2 s at a predictor's first call). A graph goes to ``network_forward`` as it is."""
    if graph is not None:
        return network_forward(net, x, work, bool(False), dropout, batchnorm, embedding, masking, user, 0, graph,
                               np.int64(0))
    params, layers, alphas = net.params, net.layers, net.alphas
    rows = x.shape[0]
    inp = x
    for k in range(layers.shape[0]):
        out = node_output(x, work, layers, k, rows)
        if layers[k, KIND] == DENSE_LAYER:
            n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
            w, b = layers[k, W_OFF], layers[k, B_OFF]
            dense_forward(out, inp, matrix_view(params, w, n_in, n_out), params[b: b + n_out],
                          layers[k, ACT], alphas[k, ALPHA], gemm_bits(net.gemm, k))
            inp = out
        else:
            inp = layer_forward(net, k, out, inp, inp, work, bool(False), False, 0, dropout, batchnorm, embedding,
                                masking, user, None)
    return inp


@kernel
def evaluate_batches(net, x, y, batch_size, work, dropout=True, batchnorm=True, embedding=True, masking=True,
                     user=None, graph=None, loss_fns=None, weights=None):
    """(sum over batches of loss x rows, number of correct rows) over all rows of ``x``, in
    inference mode (``net.rng`` is not read). ``loss_fns``: the loss's functions, as
    ``train_batches``'. ``weights``: None, or one loss weight per row of ``x`` (each batch's loss as
    ``losses.weighted_loss_forward``; the correct rows unweighted)."""
    n = x.shape[0]
    total = 0.0
    correct = 0
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        pred = network_forward(net, x[lo:hi], work, bool(False), dropout, batchnorm, embedding, masking, user, 0,
                               graph, np.int64(0))  # a plain bool and an int64, as in train_batches
        total += batch_loss_value(pred, y[lo:hi], loss_fns, weights, lo) * (hi - lo)
        correct += count_correct(pred, y[lo:hi])
    return total, correct


@kernel(inline=True)
def batch_loss_value(pred, y, loss_fns, weights, lo):
    """The loss of one batch, the rows from ``lo``: unweighted (``weights`` None) or with the
    batch's share of ``weights``, one per row of the whole input."""
    if weights is None:
        return loss_fns.value[0](pred, y)
    return loss_fns.weighted[0](pred, y, weights[lo: lo + pred.shape[0]])


@kernel
def evaluate_predictions(pred, y, batch_size, loss_fns, weights=None):
    """``evaluate_batches``' (sum over batches of loss x rows, correct rows) from the predictions
    ``pred`` of all rows, made already (``predict_sparse_batches``), in the same batches."""
    n = pred.shape[0]
    total = 0.0
    correct = 0
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        total += batch_loss_value(pred[lo:hi], y[lo:hi], loss_fns, weights, lo) * (hi - lo)
        correct += count_correct(pred[lo:hi], y[lo:hi])
    return total, correct
