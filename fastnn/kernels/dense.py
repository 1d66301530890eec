"""Dense (fully connected) layer: ``out = act(x @ W + b)`` with W of shape (in, out).

The matrix products go to BLAS through ``np.dot(a, b, out)``: with ``out=`` it writes in
place, and a transposed operand (``x.T``) is passed to BLAS as a flag, not copied. Where MKL is
loaded (``config.MKL``), each of a layer's three products can go to MKL's GEMM instead
(``mkl_gemm``), as the bits ``gemm`` of the layer say (``GEMM_FORWARD``, ``GEMM_WEIGHTS``,
``GEMM_INPUT``; chosen by timing, ``fastnn/blas.py``). The bias and the activation are applied in
the same pass over ``out`` (``bias_activation_forward``).
"""
import numpy as np
from numba import types
from numba.cpython.unsafe.numbers import trailing_zeros

from ..config import FEW_ROWS, FEW_ROWS_MAX_DENSITY, MKL, kernel
from .activations import bias_activation_forward
from .parallel import column_sums

# Which of a Dense layer's products run on MKL: bits of its entry in ``Network.gemm``.
GEMM_FORWARD, GEMM_WEIGHTS, GEMM_INPUT = 1, 2, 4

# cblas_?gemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), MKL's LP64
# interface (32-bit ints), under the names ``config`` registers its addresses with.
_GEMM_ARGS = (types.int32,) * 6
SGEMM = types.ExternalFunction("fastnn_cblas_sgemm", types.void(*_GEMM_ARGS, types.float32, types.intp, types.int32,
                                                                 types.intp, types.int32, types.float32, types.intp,
                                                                 types.int32))
DGEMM = types.ExternalFunction("fastnn_cblas_dgemm", types.void(*_GEMM_ARGS, types.float64, types.intp, types.int32,
                                                                 types.intp, types.int32, types.float64, types.intp,
                                                                 types.int32))
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@kernel(inline=True)
def dense_forward(out, x, W, b, act, alpha, gemm=0):
    """out (B, n_out) = act(x (B, n_in) @ W (n_in, n_out) + b (n_out,)), ``act`` an activation code."""
    dense_product(out, x, W, gemm)
    bias_activation_forward(out, out, b, act, alpha)


@kernel(inline=True)
def dense_product(out, x, W, gemm=0):
    """out (B, n_out) = x (B, n_in) @ W (n_in, n_out): row by row for a few rows, else BLAS (MKL
    where ``gemm`` has ``GEMM_FORWARD``)."""
    if x.shape[0] <= FEW_ROWS:
        for i in range(x.shape[0]):
            row_times_matrix(out[i], x[i], W)
    elif MKL and gemm & GEMM_FORWARD and mkl_gemm(out, x, W, False, False):
        return
    else:
        np.dot(x, W, out)


@kernel
def gemm_bits(gemm, k):
    """Layer k's ``GEMM_*`` bits in ``Network.gemm``; 0 where that is None (a statement, not an
    expression: Numba compiles out a branch on None only in an ``if``)."""
    if gemm is None:
        return 0
    return gemm[k]


@kernel
def mkl_gemm(out, a, b, trans_a, trans_b):
    """out = op(a) @ op(b) through MKL's cblas_sgemm or cblas_dgemm (op: transposed where asked),
    every operand row-major with its rows ``strides[0]`` apart; True, or False (nothing done) for
    an operand whose elements are not adjacent or a size past MKL's 32-bit integers."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    size = a.itemsize
    if not (gemm_operand(a) and gemm_operand(b) and gemm_operand(out)):
        return False
    lda, ldb, ldc = max(a.strides[0] // size, 1), max(b.strides[0] // size, 1), max(out.strides[0] // size, 1)
    if m == 0 or n == 0:
        return True
    ta, tb = np.int32(TRANS if trans_a else NO_TRANS), np.int32(TRANS if trans_b else NO_TRANS)
    if size == 4:
        SGEMM(np.int32(ROW_MAJOR), ta, tb, np.int32(m), np.int32(n), np.int32(k), np.float32(1), a.ctypes.data,
              np.int32(lda), b.ctypes.data, np.int32(ldb), np.float32(0), out.ctypes.data, np.int32(ldc))
    else:
        DGEMM(np.int32(ROW_MAJOR), ta, tb, np.int32(m), np.int32(n), np.int32(k), 1.0, a.ctypes.data, np.int32(lda),
              b.ctypes.data, np.int32(ldb), 0.0, out.ctypes.data, np.int32(ldc))
    return True


@kernel
def repeat_product(out, a, b, layout, mkl, calls):
    """``calls`` times out = a @ b (``layout`` 0), a.T @ b (1) or a @ b.T (2), through MKL or
    ``np.dot``: what ``fastnn/blas.py`` times to choose between them."""
    for _ in range(calls):
        if MKL and mkl and mkl_gemm(out, a, b, layout == 1, layout == 2):
            continue
        if layout == 0:
            np.dot(a, b, out)
        elif layout == 1:
            np.dot(a.T, b, out)
        else:
            np.dot(a, b.T, out)


@kernel(inline=True)
def gemm_operand(arr):
    """Whether MKL's GEMM takes ``arr`` as it lies: adjacent elements along its rows, every size
    and row stride within 32-bit integers."""
    big = 2 ** 31 - 1
    return (arr.shape[1] <= 1 or arr.strides[1] == arr.itemsize) and arr.strides[0] // arr.itemsize <= big \
        and arr.shape[0] <= big and arr.shape[1] <= big


@kernel
def row_times_matrix(out, x, W):
    """out (n_out,) = x (n_in,) @ W (n_in, n_out): BLAS's vector-matrix product, or, where at most
    ``FEW_ROWS_MAX_DENSITY`` of x is nonzero, the sum of W's rows at x's nonzeros, four rows per
    pass over ``out``.

    The nonzeros are found without a branch per element: each block of 64 elements becomes a
    bit mask, whose set bits are read off with a count of trailing zeros. A test-and-branch per
    element mispredicts at every change between zero and nonzero (at random, 81% zeros: about
    a third of MNIST-like elements), which cost more than the multiply-adds: the seed network's
    first layer (784 x 100) took 2.7 us a random MNIST-like row that way, 1.4 us now (real MNIST
    rows, whose zeros come in runs, 1.7 and 1.4 us). The mask lives in a register: no index
    buffer, nothing allocated."""
    n = x.shape[0]
    nonzero = 0
    for k in range(n):
        nonzero += x[k] != 0
    if nonzero > FEW_ROWS_MAX_DENSITY * n:
        np.dot(x, W, out)
        return
    out[:] = 0
    one = np.uint64(1)
    for base in range(0, n, 64):
        mask = np.uint64(0)
        count = 0
        for k in range(base, min(base + 64, n)):
            set_ = x[k] != 0
            mask |= np.uint64(set_) << np.uint64(k - base)
            count += set_
        while count >= 4:
            k0 = base + trailing_zeros(mask)
            mask &= mask - one
            k1 = base + trailing_zeros(mask)
            mask &= mask - one
            k2 = base + trailing_zeros(mask)
            mask &= mask - one
            k3 = base + trailing_zeros(mask)
            mask &= mask - one
            a0, a1, a2, a3 = x[k0], x[k1], x[k2], x[k3]
            for j in range(out.shape[0]):
                out[j] += a0 * W[k0, j] + a1 * W[k1, j] + a2 * W[k2, j] + a3 * W[k3, j]
            count -= 4
        while count > 0:
            k = base + trailing_zeros(mask)
            mask &= mask - one
            a = x[k]
            for j in range(out.shape[0]):
                out[j] += a * W[k, j]
            count -= 1


@kernel(inline=True)
def dense_backward(dx, dW, db, dz, x, W, gemm=0):
    """Gradients of a dense layer from dz = dL/d(x @ W + b) (B, n_out).

    dW = x.T @ dz, db = column sums of dz, dx = dz @ W.T. ``dx`` may be an empty array to
    skip it: the first layer needs no gradient for its input. ``gemm``: as ``dense_product``'s
    (``GEMM_WEIGHTS`` for dW, ``GEMM_INPUT`` for dx).
    """
    if not (MKL and gemm & GEMM_WEIGHTS and mkl_gemm(dW, x, dz, True, False)):
        np.dot(x.T, dz, dW)
    column_sums(db, dz)
    if dx.size and not (MKL and gemm & GEMM_INPUT and mkl_gemm(dx, dz, W, False, True)):
        np.dot(dz, W.T, dx)


# The zero-skipping twins of the two passes, for a first layer whose input batch is CSR
# (``kernels/sparse.py``): with W row-major (n_in, n_out), both products are row axpys over the
# batch's nonzeros (i, k), out[i, :] += x[i, k] W[k, :] and dW[k, :] += x[i, k] dz[i, :], whose
# inner loops run over contiguous rows and vectorize. Four nonzeros per pass over the row being
# summed: one load and store of it per four rows added, not per row (1.5-1.8x faster than one at a
# time on the seed and wide networks' first layers). dW sums by column (the batch transposed to
# CSC first), so that each dW row is written once, serially: no two sums share a row.
# Compiled once, not inlined: both passes call it with the same types (its vectorized loops,
# inlined twice, cost a cold start about a second more).
@kernel
def axpy4_rows(o, lo, hi, rows, coef, M):
    """o += sum over p in [lo, hi) of coef[p] * M[rows[p]], four terms per pass over o."""
    p = lo
    while p + 4 <= hi:
        c0, c1, c2, c3 = coef[p], coef[p + 1], coef[p + 2], coef[p + 3]
        m0, m1, m2, m3 = M[rows[p]], M[rows[p + 1]], M[rows[p + 2]], M[rows[p + 3]]
        for j in range(o.shape[0]):
            o[j] += c0 * m0[j] + c1 * m1[j] + c2 * m2[j] + c3 * m3[j]
        p += 4
    while p < hi:
        c = coef[p]
        m = M[rows[p]]
        for j in range(o.shape[0]):
            o[j] += c * m[j]
        p += 1


@kernel(inline=True)
def sparse_dense_forward(out, indptr, indices, values, W, b, act, alpha):
    """``dense_forward`` for x given as CSR: row i's nonzeros are ``values[indptr[i]:indptr[i + 1]]``
    at columns ``indices[...]``; out (B, n_out) with B = indptr.size - 1."""
    for i in range(out.shape[0]):
        o = out[i]
        for j in range(o.shape[0]):
            o[j] = 0
        axpy4_rows(o, indptr[i], indptr[i + 1], indices, values, W)
    bias_activation_forward(out, out, b, act, alpha)


@kernel(inline=True)
def sparse_dense_backward(dW, db, dz, indptr, indices, values, colptr, rows, colvalues, fresh=True):
    """``dense_backward``'s dW = x.T @ dz and db for x given as CSR (as ``sparse_dense_forward``'s);
    no dx: only a first layer reads a CSR batch, and its input needs no gradient. ``colptr``
    (n_in + 1,), ``rows`` and ``colvalues`` (room for the batch's nonzeros): scratch for its CSC,
    left holding each column's end (``colptr[k]``; row k of dW is nonzero only where it exceeds
    the end before it).

    ``fresh``: dW may hold anything, and all of it is cleared. Else dW and ``colptr`` are as this
    kernel left them on the previous batch, and only that batch's rows are cleared: a batch of a
    bag-of-words input touches a sixth of a 50,000-row dW, so clearing all of it was a 51 MB write
    a step, 2 ms of a 20 ms step."""
    n_in = dW.shape[0]
    end = 0
    for k in range(n_in):
        if fresh or colptr[k] > end:  # (fresh: all rows, whatever colptr holds)
            g = dW[k]
            for j in range(g.shape[0]):
                g[j] = 0
        end = colptr[k]
    for k in range(n_in + 1):
        colptr[k] = 0
    for p in range(indptr[0], indptr[dz.shape[0]]):
        colptr[indices[p] + 1] += 1
    for k in range(n_in):
        colptr[k + 1] += colptr[k]
    for i in range(dz.shape[0]):  # a counting sort: colptr[k] moves to column k's end
        for p in range(indptr[i], indptr[i + 1]):
            k = indices[p]
            q = colptr[k]
            rows[q] = i
            colvalues[q] = values[p]
            colptr[k] = q + 1
    lo = 0
    for k in range(n_in):
        if colptr[k] > lo:
            axpy4_rows(dW[k], lo, colptr[k], rows, colvalues, dz)
        lo = colptr[k]
    db[:] = 0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[i, j]
