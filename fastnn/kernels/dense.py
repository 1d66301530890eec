"""Dense (fully connected) layer: ``out = act(x @ W + b)`` with W of shape (in, out).

The matrix products go to BLAS through ``np.dot(a, b, out)``: with ``out=`` it writes in
place, and a transposed operand (``x.T``) is passed to BLAS as a flag, not copied. Where MKL is
loaded (``config.MKL``), each of a layer's three products can go to MKL's GEMM instead
(``mkl_gemm``), as the bits ``gemm`` of the layer say (``GEMM_FORWARD``, ``GEMM_WEIGHTS``,
``GEMM_INPUT``; chosen by timing, ``fastnn/blas.py``). The bias and the activation are applied in
the same pass over ``out`` (``bias_activation_forward``).
"""
import threading
from collections import namedtuple

import numpy as np
from numba import carray, prange, types
from numba import from_dtype as numba_from_dtype
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import overload

from ..config import FEW_ROWS, FEW_ROWS_MAX_DENSITY, KERNEL_OPTIONS, MKL, PARALLEL, c_entry, kernel
from .activations import bias_activation_forward
from .parallel import block_count, column_sums
from .simd import append_bit_positions, element_at, nonzero_bits, vec_lanes, vec_load, vec_madd, vec_store, vec_zeros

# Which of a Dense layer's products run on MKL: bits of its entry in ``Network.gemm``.
GEMM_FORWARD, GEMM_WEIGHTS, GEMM_INPUT = 1, 2, 4
# ``Network.gemm`` of a step whose MKL products each run as ``tiles`` tiles on Numba's threads
# (``mkl_gemm_parallel``): a type of its own, so that only such a step compiles the tiles' code.
TiledGemm = namedtuple("TiledGemm", ["bits", "tiles"])
# Tiles split the output's columns in multiples of this (a cache line of float32); an output with
# fewer columns than this per tile (an output layer's) is split by rows instead.
TILE_COLUMNS = 16

# cblas_?gemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), MKL's LP64
# interface (32-bit ints), under the names ``config`` registers its addresses with.
_GEMM_ARGS = (types.int32,) * 6
SGEMM = types.ExternalFunction("fastnn_cblas_sgemm", types.void(*_GEMM_ARGS, types.float32, types.intp, types.int32,
                                                                 types.intp, types.int32, types.float32, types.intp,
                                                                 types.int32))
# MKL_Set_Num_Threads_Local(n): MKL's thread count in the calling thread (0: the global one);
# returns the one before.
MKL_LOCAL_THREADS = types.ExternalFunction("fastnn_MKL_Set_Num_Threads_Local", types.int32(types.int32))
DGEMM = types.ExternalFunction("fastnn_cblas_dgemm", types.void(*_GEMM_ARGS, types.float64, types.intp, types.int32,
                                                                 types.intp, types.int32, types.float64, types.intp,
                                                                 types.int32))
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


@kernel(inline=True)
def dense_forward(out, x, W, b, act, alpha, gemm=0, tiles=None):
    """out (B, n_out) = act(x (B, n_in) @ W (n_in, n_out) + b (n_out,)), ``act`` an activation code."""
    dense_product(out, x, W, gemm, tiles)
    bias_activation_forward(out, out, b, act, alpha)


@kernel(inline=True)
def dense_product(out, x, W, gemm=0, tiles=None):
    """out (B, n_out) = x (B, n_in) @ W (n_in, n_out): row by row for a few rows, else BLAS (MKL
    where ``gemm`` has ``GEMM_FORWARD``, as ``tiles`` tiles where that is an int: ``mkl_product``)."""
    if x.shape[0] <= FEW_ROWS:
        for i in range(x.shape[0]):
            row_times_matrix(out[i], x[i], W)
    elif MKL and gemm & GEMM_FORWARD and mkl_product(out, x, W, False, False, tiles):
        return
    else:
        np.dot(x, W, out)


# The product over nonzero columns (``nonzero_rows_product``), for a first layer's input with many
# exact zeros (MNIST's pixels: 81%). Row by row over each row's nonzeros, every term reads a row
# of W from L2 (400 bytes on the seed network for 4 useful flops a float): no faster than BLAS's
# blocked GEMM. A block of 6 rows shares the loads: each column nonzero in any of its rows is
# one W row read and 6 rows' multiply-adds, the sums held in 24 vector registers
# (``kernels/simd.py``). MNIST's blocks of 6 rows have 41% of the columns nonzero, so the block
# does under half of GEMM's multiply-adds, at about 60% of the machine's peak against BLAS's 80%.
NONZERO_BLOCK_ROWS = 6


@kernel
def nonzero_fraction(x, blocks):
    """The mean, over ``blocks`` blocks of ``NONZERO_BLOCK_ROWS`` rows spread evenly over x, of the
    fraction of x's columns that are nonzero in any row of the block: what a block of
    ``nonzero_rows_product`` multiplies, against GEMM's 1."""
    rows, n_in = x.shape
    lanes = vec_lanes(x)
    step = x.strides[0] // x.itemsize
    blocks = max(min(blocks, rows // NONZERO_BLOCK_ROWS), 1)
    count = 0
    for i in range(blocks):
        r0 = i * (rows // blocks)
        for base in range(0, n_in, lanes):
            width = min(lanes, n_in - base)
            bits = nonzero_bits(x, r0 * step + base, width)
            for r in range(r0 + 1, min(r0 + NONZERO_BLOCK_ROWS, rows)):
                bits |= nonzero_bits(x, r * step + base, width)
            while bits:
                bits &= bits - np.uint64(1)
                count += 1
    return count / max(n_in * blocks, 1)


@kernel
def nonzero_rows_product(out, x, W, idx, lo, hi, transposed=False):
    """out[lo:hi] = A[lo:hi] @ W, A = x or, where ``transposed``, x.T (a first layer's weight
    gradient x.T @ dz), each block of ``NONZERO_BLOCK_ROWS`` rows of A over the columns of A
    nonzero in any of its rows (the same sums as GEMM's, in the same order for each row whatever
    its block: a zero term adds exactly 0; a NaN or an infinity is not zero, and goes into the
    sums). x's columns adjacent (its rows may be apart); out and W C-contiguous; ``idx`` int32
    scratch of A.shape[1] + the lanes of a vector."""
    n_inner, n = W.shape
    lanes = vec_lanes(W)
    step = x.strides[0] // x.itemsize
    si, sk = (1, step) if transposed else (step, 1)  # A[i, k] is x's element i * si + k * sk
    for r0 in range(lo, hi, NONZERO_BLOCK_ROWS):
        rows = min(NONZERO_BLOCK_ROWS, hi - r0)
        used = 0
        if transposed:  # A's rows r0.. are x's columns: adjacent in each row k of x
            for k in range(n_inner):
                idx[used] = k
                used += nonzero_bits(x, k * step + r0, rows) != 0
        else:
            for base in range(0, n_inner, lanes):
                width = min(lanes, n_inner - base)
                bits = nonzero_bits(x, r0 * step + base, width)
                for r in range(1, rows):
                    bits |= nonzero_bits(x, (r0 + r) * step + base, width)
                used = append_bit_positions(bits, base, idx, used, x)
        # A block of fewer rows computes its missing rows from its first one, and stores none.
        b0, b1, b2 = r0 * si, (r0 + min(1, rows - 1)) * si, (r0 + min(2, rows - 1)) * si
        b3, b4, b5 = (r0 + min(3, rows - 1)) * si, (r0 + min(4, rows - 1)) * si, (r0 + min(5, rows - 1)) * si
        for c0 in range(0, n, 4 * lanes):
            m0, m1 = min(lanes, n - c0), min(lanes, max(0, n - c0 - lanes))
            m2, m3 = min(lanes, max(0, n - c0 - 2 * lanes)), min(lanes, max(0, n - c0 - 3 * lanes))
            a00, a01, a02, a03 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            a10, a11, a12, a13 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            a20, a21, a22, a23 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            a30, a31, a32, a33 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            a40, a41, a42, a43 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            a50, a51, a52, a53 = vec_zeros(W), vec_zeros(W), vec_zeros(W), vec_zeros(W)
            for p in range(used):
                k = idx[p]
                off = k * n + c0
                w0, w1 = vec_load(W, off, m0), vec_load(W, off + lanes, m1)
                w2, w3 = vec_load(W, off + 2 * lanes, m2), vec_load(W, off + 3 * lanes, m3)
                a = k * sk
                s = element_at(x, b0 + a)
                a00, a01, a02, a03 = madd_block_row(a00, a01, a02, a03, s, w0, w1, w2, w3)
                s = element_at(x, b1 + a)
                a10, a11, a12, a13 = madd_block_row(a10, a11, a12, a13, s, w0, w1, w2, w3)
                s = element_at(x, b2 + a)
                a20, a21, a22, a23 = madd_block_row(a20, a21, a22, a23, s, w0, w1, w2, w3)
                s = element_at(x, b3 + a)
                a30, a31, a32, a33 = madd_block_row(a30, a31, a32, a33, s, w0, w1, w2, w3)
                s = element_at(x, b4 + a)
                a40, a41, a42, a43 = madd_block_row(a40, a41, a42, a43, s, w0, w1, w2, w3)
                s = element_at(x, b5 + a)
                a50, a51, a52, a53 = madd_block_row(a50, a51, a52, a53, s, w0, w1, w2, w3)
            o = r0 * n + c0
            store_block_row(out, o, lanes, m0, m1, m2, m3, a00, a01, a02, a03)
            if rows > 1:
                store_block_row(out, o + n, lanes, m0, m1, m2, m3, a10, a11, a12, a13)
            if rows > 2:
                store_block_row(out, o + 2 * n, lanes, m0, m1, m2, m3, a20, a21, a22, a23)
            if rows > 3:
                store_block_row(out, o + 3 * n, lanes, m0, m1, m2, m3, a30, a31, a32, a33)
            if rows > 4:
                store_block_row(out, o + 4 * n, lanes, m0, m1, m2, m3, a40, a41, a42, a43)
            if rows > 5:
                store_block_row(out, o + 5 * n, lanes, m0, m1, m2, m3, a50, a51, a52, a53)


@kernel(inline=True)
def madd_block_row(a0, a1, a2, a3, s, w0, w1, w2, w3):
    """One row of ``nonzero_rows_product``'s block: its four vectors of sums plus s times W's."""
    return vec_madd(a0, s, w0), vec_madd(a1, s, w1), vec_madd(a2, s, w2), vec_madd(a3, s, w3)


@kernel(inline=True)
def store_block_row(out, o, lanes, m0, m1, m2, m3, a0, a1, a2, a3):
    """One row of ``nonzero_rows_product``'s block into out from element o: its four vectors,
    m0 .. m3 lanes of each."""
    vec_store(a0, out, o, m0)
    vec_store(a1, out, o + lanes, m1)
    vec_store(a2, out, o + 2 * lanes, m2)
    vec_store(a3, out, o + 3 * lanes, m3)


# The step calls ``nonzero_rows_product`` by address (``nonzero_product_by_address``), a C entry
# compiled once per dtype (``nonzero_entry``), rather than linking its code in for LLVM to
# optimize again: the seed network's first fit on MNIST on an empty cache took 14.5 s with it
# linked, 14.0-14.4 by address, 12.4 without the path. Only code that runs after
# ``nonzero_entry`` may call it (the step's call compiles out where its ``nonzero`` is None):
# code that calls a symbol LLVM does not know fails to load. So predict, whose kernel has the
# call whether it runs or not, links the kernel in (``nonzero_rows_product_parallel``).
# x's rows, columns, row step; W's rows, columns; out's rows; lo, hi, transposed, parallel
_ENTRY_ARGS = (types.int64,) * 10


def _nonzero_entry(out_p, x_p, w_p, idx_p, x_rows, x_cols, x_step, n_inner, n, out_rows, lo, hi, transposed, parallel):
    x = carray(x_p, (x_rows, x_step))[:, :x_cols]  # (no read past x's last row's x_cols columns)
    out, W = carray(out_p, (out_rows, n)), carray(w_p, (n_inner, n))
    if parallel:  # (all of out's rows: lo and hi are 0 and its rows)
        nonzero_rows_product_parallel(out, x, W, transposed != 0)
    else:
        nonzero_rows_product(out, x, W, carray(idx_p, (max(n_inner, x_cols) + 64,)), lo, hi, transposed != 0)


_ENTRIES = {}
_ENTRIES_LOCK = threading.Lock()


def nonzero_entry(dtype):
    """Compile (or load from Numba's cache) ``nonzero_rows_product``'s C entry for ``dtype`` and
    register its address with LLVM as ``fastnn_nonzero_rows_product_<dtype>``, the symbol that
    ``nonzero_product_by_address`` calls: before any code that calls it is compiled or loaded."""
    dtype = np.dtype(dtype)
    with _ENTRIES_LOCK:  # one entry per dtype: code linked to a symbol keeps its address for good
        if dtype not in _ENTRIES:
            import llvmlite.binding as llvm
            if PARALLEL:  # the entry calls the parallel kernel: the threading layer's symbols first
                from numba.np.ufunc.parallel import _launch_threads
                _launch_threads()
            pointer = types.CPointer(numba_from_dtype(dtype))
            entry = c_entry(_nonzero_entry, types.void(pointer, pointer, pointer, types.CPointer(types.int32),
                                                       *_ENTRY_ARGS))
            llvm.add_symbol(f"fastnn_nonzero_rows_product_{dtype.name}", entry.address)
            _ENTRIES[dtype] = entry
        return _ENTRIES[dtype]


_BY_ADDRESS = {name: types.ExternalFunction(f"fastnn_nonzero_rows_product_{name}", types.void(*(types.intp,) * 14))
               for name in ("float32", "float64")}


def nonzero_product_by_address(out, x, W, idx, lo, hi, transposed, parallel=False):
    """``nonzero_rows_product`` through its C entry (registered by ``nonzero_entry``); where
    ``parallel``, ``nonzero_rows_product_parallel`` on all of out's rows."""


@overload(nonzero_product_by_address, jit_options=KERNEL_OPTIONS)
def _nonzero_product_by_address(out, x, W, idx, lo, hi, transposed, parallel=False):
    entry = _BY_ADDRESS[str(out.dtype)]

    def call(out, x, W, idx, lo, hi, transposed, parallel=False):
        entry(out.ctypes.data, x.ctypes.data, W.ctypes.data, idx.ctypes.data, x.shape[0], x.shape[1],
              x.strides[0] // x.itemsize, W.shape[0], W.shape[1], out.shape[0], lo, hi, 1 if transposed else 0,
              1 if parallel else 0)
    return call


@kernel(parallel=True)
def nonzero_rows_product_parallel(out, x, W, transposed=False):
    """``nonzero_rows_product`` of all of out's rows (x's rows, or where ``transposed`` its
    columns), one run of whole blocks per thread (each writes its own rows of out, with scratch of
    its own)."""
    rows = x.shape[1] if transposed else x.shape[0]
    chunks = max(min(block_count(), rows // NONZERO_BLOCK_ROWS), 1)
    size = ((rows + chunks - 1) // chunks + NONZERO_BLOCK_ROWS - 1) // NONZERO_BLOCK_ROWS * NONZERO_BLOCK_ROWS
    for c in prange(chunks):
        idx = np.empty(max(x.shape[0], x.shape[1]) + vec_lanes(W), np.int32)
        nonzero_rows_product(out, x, W, idx, min(c * size, rows), min(c * size + size, rows), transposed)


def gemm_bits(gemm, k):
    """Layer k's ``GEMM_*`` bits in ``Network.gemm``: 0 where that is None, from ``bits`` of a
    ``TiledGemm``."""
    if gemm is None:
        return 0
    return (gemm.bits if isinstance(gemm, TiledGemm) else gemm)[k]


def gemm_tiles(gemm):
    """The tiles of each MKL product of a ``TiledGemm``; None (typed so: no tiles' code compiles)
    for any other ``Network.gemm``."""
    return gemm.tiles if isinstance(gemm, TiledGemm) else None


@overload(gemm_bits, jit_options=KERNEL_OPTIONS)
def _gemm_bits(gemm, k):
    if isinstance(gemm, (types.NoneType, types.Omitted)):
        return lambda gemm, k: 0
    if isinstance(gemm, types.BaseTuple):  # (a TiledGemm)
        return lambda gemm, k: gemm[0][k]
    return lambda gemm, k: gemm[k]


@overload(gemm_tiles, jit_options=KERNEL_OPTIONS)
def _gemm_tiles(gemm):
    if isinstance(gemm, types.BaseTuple):
        return lambda gemm: gemm[1]
    return lambda gemm: None


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


def mkl_product(out, a, b, trans_a, trans_b, tiles=None):
    """``mkl_gemm``; where ``tiles`` is an int of 2 or more, ``mkl_gemm_parallel``. Chosen by its
    type: with ``tiles`` None, the tiles' parallel kernel is not compiled in (it cost the seed
    network's first fit on an empty cache 6.5 s)."""


@overload(mkl_product, jit_options=KERNEL_OPTIONS)
def _mkl_product(out, a, b, trans_a, trans_b, tiles=None):
    if not PARALLEL or isinstance(tiles, (types.NoneType, types.Omitted)) or tiles is None:
        return lambda out, a, b, trans_a, trans_b, tiles=None: mkl_gemm(out, a, b, trans_a, trans_b)

    def tiled(out, a, b, trans_a, trans_b, tiles=None):
        if tiles > 1:
            return mkl_gemm_parallel(out, a, b, trans_a, trans_b, tiles)
        return mkl_gemm(out, a, b, trans_a, trans_b)
    return tiled


@kernel(parallel=True)
def mkl_gemm_parallel(out, a, b, trans_a, trans_b, tiles):
    """``mkl_gemm`` as ``tiles`` products on Numba's threads, each one call of MKL on one thread
    (its sequential layer) over a block of out's columns (multiples of ``TILE_COLUMNS``), or of
    its rows for an output of few columns. With every product of a step so, the step runs on one
    pool of threads, which sleep when idle (TBB's): OpenBLAS's threads wait busily for the next
    product on the cores that the step's parallel passes would take. On a 2-core Xeon the wide
    network's eight products took 6.9-7.2 ms as two tiles each against 8.2 ms on OpenBLAS's two
    threads (``fastnn/blas.py`` times both on the machine it runs on)."""
    if not (gemm_operand(a) and gemm_operand(b) and gemm_operand(out)):
        return False
    m, n = out.shape
    by_rows = n < TILE_COLUMNS * tiles
    size = (m + tiles - 1) // tiles if by_rows else \
        ((n + tiles - 1) // tiles + TILE_COLUMNS - 1) // TILE_COLUMNS * TILE_COLUMNS
    for t in prange(tiles):
        if by_rows:
            lo, hi = min(t * size, m), min(t * size + size, m)
            if hi > lo:  # out's rows lo:hi are op(a)'s
                mkl_gemm(out[lo:hi], a[:, lo:hi] if trans_a else a[lo:hi], b, trans_a, trans_b)
        else:
            lo, hi = min(t * size, n), min(t * size + size, n)
            if hi > lo:  # out's columns lo:hi are op(b)'s
                mkl_gemm(out[:, lo:hi], a, b[lo:hi] if trans_b else b[:, lo:hi], trans_a, trans_b)
    return True


@kernel
def repeat_product(out, a, b, layout, mkl, calls, tiles=None):
    """``calls`` times out = a @ b (``layout`` 0), a.T @ b (1) or a @ b.T (2), through MKL (as
    ``tiles`` tiles where that is an int of 2 or more) or ``np.dot``: what ``fastnn/blas.py`` times
    to choose between them."""
    for _ in range(calls):
        if MKL and mkl and mkl_product(out, a, b, layout == 1, layout == 2, tiles):
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
def dense_backward(dx, dW, db, dz, x, W, gemm=0, tiles=None):
    """Gradients of a dense layer from dz = dL/d(x @ W + b) (B, n_out).

    dW = x.T @ dz, db = column sums of dz, dx = dz @ W.T. ``dx`` may be an empty array to
    skip it: the first layer needs no gradient for its input. ``gemm``: as ``dense_product``'s
    (``GEMM_WEIGHTS`` for dW, ``GEMM_INPUT`` for dx).
    """
    if not (MKL and gemm & GEMM_WEIGHTS and mkl_product(dW, x, dz, True, False, tiles)):
        np.dot(x.T, dz, dW)
    column_sums(db, dz)
    if dx.size and not (MKL and gemm & GEMM_INPUT and mkl_product(dx, dz, W, False, True, tiles)):
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
