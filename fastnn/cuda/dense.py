"""CUDA twin of ``fastnn.kernels.dense``: a tiled, register-blocked SGEMM with fused epilogues.

``C = op(A) @ op(B)`` for row-major flat arrays, op a transpose or not, fixed when the
kernel is built (three variants serve a dense layer: NN forward, TN for dW, NT for dx).
A block computes a BM x BN tile of C: it steps through K BK at a time, each thread loading
a few elements of the A and B slices into shared memory (padded so that the stores hit
distinct banks), then every thread multiplies a column of the A slice by a row of the B
slice into its own TM x TN accumulators, which live in registers (the loops over the tile
have constant trip counts and unroll), while the next slice's loads are already on their way
into registers. Thread (ty, tx) owns groups of four consecutive rows and columns (rows
ty*4 .. ty*4+3, then the same 4*TY further on, likewise for columns), so that it reads each
slice's A column and B row as 16-byte shared-memory loads (the 128x128 tile's 8 + 8 values in
four loads instead of sixteen; 4096^3 on an H200 went from 17.3 to 19.3 TFLOP/s). Edges of any
size are zero-filled on load and masked on store. A small matrix with a long K is split along K
(``split_count``, ``split_k_sum``).

The epilogue runs on the accumulators before the single store of C (through a shared-memory
slab, which keeps the accumulators in registers; see the kernel):

- ``EPI_BIAS_ACT`` (forward): ``act(acc + b[n])``, the layer's bias and elementwise activation;
- ``EPI_ACT_GRAD`` (dx): ``act'(acc)`` from the previous layer's output, so dx comes out as the
  gradient with respect to the previous layer's pre-activation: the fused epilogue, used where
  ``kernels.table.fuse_activation_backward`` holds (the CPU applies the same derivative right
  after its dx product);
- ``EPI_NONE``.

The bias gradient costs no kernel either: the layout [W, b] puts db right after dW, so the
TN GEMM computes both as ``[x, 1].T @ dz``, ``x.T`` with a row of ones appended.
"""
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from . import DEFAULT_SM_COUNT, TILE_16, TILE_MIN_FILL, TILES, _simulated, blocks, kernel, launch
from .activations import IDENTITY, SOFTMAX, bias_activation_forward, activation_backward, device_functions

EPI_NONE, EPI_BIAS_ACT, EPI_ACT_GRAD = range(3)


@lru_cache(maxsize=None)
def gemm_kernel(dtype, trans_a, trans_b, epilogue, tile):
    """The SGEMM kernel ``gemm(C, ldc, A, lda, B, ldb, M, N, K, ones_row, E, lde, act, alpha, k_chunk, c_split)``.

    C (M, N) = op(A) (M, K) @ op(B) (K, N), then the epilogue. A is stored (M, K), or (K, M)
    when ``trans_a``; B (K, N), or (N, K) when ``trans_b``; ld* are the stored row lengths.
    With ``trans_a``, rows ``ones_row`` .. M-1 of op(A) read as ones (M = ones_row + 1 appends
    the bias row; ones_row = M appends none). E is the bias (EPI_BIAS_ACT) or the previous
    layer's output with row length ``lde`` (EPI_ACT_GRAD), read by the epilogue only.

    Split K: block z of the grid's third dimension sums K's range [z * k_chunk, (z + 1) * k_chunk)
    only and writes at C + z * c_split (``k_chunk`` = K and one z: no split); the caller then sums
    the parts (``split_k_sum``), with EPI_NONE here.
    """
    T = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE = T(0), T(1)
    BM, BN, BK, TM, TN = tile
    TX, TY = BN // TN, BM // TM
    TX_BITS = TX.bit_length() - 1
    assert TX == 1 << TX_BITS, "threads per tile row must be a power of two"
    NT = TX * TY
    A_LOADS, B_LOADS = BM * BK // NT, BN * BK // NT
    # Rows and columns per group of a thread's tile: one 16-byte shared load each.
    VM, VN = min(4, TM), min(4, TN)
    # Padding so that a warp's stores along K into the k-major tiles spread over the banks; a
    # multiple of 4 keeps every row of the slices 16-byte aligned for the grouped loads.
    PAD = 4
    # 16-byte aligned slices (the simulator takes no alignment; it has no loads to group).
    ALIGN = None if _simulated() else 16
    A_SHAPE, B_SHAPE = (BK, BM + PAD), (BK, BN + PAD)
    SLAB_SHAPE, SLAB_LOADS = (TY, BN + 1), TY * BN // NT
    ACC = TM * TN
    TRANS_A, TRANS_B, EPI = bool(trans_a), bool(trans_b), epilogue
    f = device_functions(dtype)
    forward_value, backward_value = f.activation_forward_value, f.activation_backward_value

    @kernel(device=True)
    def row_of(ty, i):
        """Row of the block's tile held in accumulator row i of thread row ty."""
        return (i // VM) * (TY * VM) + ty * VM + i % VM

    @kernel(device=True)
    def col_of(tx, j):
        return (j // VN) * (TX * VN) + tx * VN + j % VN

    @kernel(device=True)
    def load_a(regs, A, lda, M, K, ones_row, m0, k0, tid):
        """This thread's elements of the (BM, BK) slice of op(A) at (m0, k0), zero outside it."""
        for e in range(A_LOADS):
            idx = tid + e * NT
            if TRANS_A:  # stored (K, M): consecutive threads along m read consecutive addresses
                m = m0 + idx % BM
                k = k0 + idx // BM
            else:  # stored (M, K): consecutive threads along k
                m = m0 + idx // BK
                k = k0 + idx % BK
            v = ZERO
            if TRANS_A:
                if k < K:
                    if m < ones_row:
                        v = A[k * lda + m]
                    elif m < M:
                        v = ONE
            elif m < M and k < K:
                v = A[m * lda + k]
            regs[e] = v

    @kernel(device=True)
    def store_a(As, regs, tid):
        for e in range(A_LOADS):
            idx = tid + e * NT
            if TRANS_A:
                As[idx // BM, idx % BM] = regs[e]
            else:
                As[idx % BK, idx // BK] = regs[e]

    @kernel(device=True)
    def load_b(regs, B, ldb, N, K, n0, k0, tid):
        """This thread's elements of the (BK, BN) slice of op(B) at (k0, n0), zero outside it."""
        for e in range(B_LOADS):
            idx = tid + e * NT
            if TRANS_B:  # stored (N, K)
                n = n0 + idx // BK
                k = k0 + idx % BK
            else:  # stored (K, N)
                n = n0 + idx % BN
                k = k0 + idx // BN
            v = ZERO
            if n < N and k < K:
                v = B[n * ldb + k] if TRANS_B else B[k * ldb + n]
            regs[e] = v

    @kernel(device=True)
    def store_b(Bs, regs, tid):
        for e in range(B_LOADS):
            idx = tid + e * NT
            if TRANS_B:
                Bs[idx % BK, idx // BK] = regs[e]
            else:
                Bs[idx // BN, idx % BN] = regs[e]

    @kernel
    def gemm(C, ldc, A, lda, B, ldb, M, N, K, ones_row, E, lde, act, alpha, k_chunk, c_split):
        As = cuda.shared.array(A_SHAPE, T, alignment=ALIGN)
        Bs = cuda.shared.array(B_SHAPE, T, alignment=ALIGN)
        slab = cuda.shared.array(SLAB_SHAPE, T)
        acc = cuda.local.array(ACC, T)
        a_reg = cuda.local.array(TM, T)
        b_reg = cuda.local.array(TN, T)
        a_next = cuda.local.array(A_LOADS, T)
        b_next = cuda.local.array(B_LOADS, T)
        tid = cuda.threadIdx.x
        # Bit operations (TX is a power of two): the compiler then knows tx, ty >= 0 and drops
        # the negative-index handling that would hide the grouped loads' common base.
        tx = tid & (TX - 1)
        ty = tid >> TX_BITS
        m0 = cuda.blockIdx.y * BM
        n0 = cuda.blockIdx.x * BN
        a_base, b_base = ty * VM, tx * VN
        for i in range(ACC):
            acc[i] = ZERO
        k_begin = cuda.blockIdx.z * k_chunk
        k_end = min(K, k_begin + k_chunk)
        c0 = cuda.blockIdx.z * c_split
        load_a(a_next, A, lda, M, k_end, ones_row, m0, k_begin, tid)
        load_b(b_next, B, ldb, N, k_end, n0, k_begin, tid)
        for k0 in range(k_begin, k_end, BK):
            store_a(As, a_next, tid)
            store_b(Bs, b_next, tid)
            cuda.syncthreads()
            # The next slice's loads are issued before this slice's arithmetic, which hides
            # their latency behind it (register double buffering).
            if k0 + BK < k_end:
                load_a(a_next, A, lda, M, k_end, ones_row, m0, k0 + BK, tid)
                load_b(b_next, B, ldb, N, k_end, n0, k0 + BK, tid)
            for kk in range(BK):
                # Constant offsets from one base per thread: the compiler then sees each
                # group's four addresses as consecutive and aligned, and loads them at once.
                for i in range(TM):
                    a_reg[i] = As[kk, a_base + row_of(0, i)]
                for j in range(TN):
                    b_reg[j] = Bs[kk, b_base + col_of(0, j)]
                for i in range(TM):
                    for j in range(TN):
                        acc[i * TN + j] += a_reg[i] * b_reg[j]
            cuda.syncthreads()
        if EPI == EPI_NONE:
            for i in range(TM):
                m = m0 + row_of(ty, i)
                if m < M:
                    for j in range(TN):
                        n = n0 + col_of(tx, j)
                        if n < N:
                            C[c0 + m * ldc + n] = acc[i * TN + j]
            return
        # The epilogue's activation is too much code to unroll TM * TN times, and a loop that
        # is not unrolled would index ``acc`` at run time, which moves it out of registers
        # into local memory. So the tile goes out one row of each thread's tile at a time
        # through shared memory, where the block applies the epilogue in a plain loop; the
        # rows of ``acc`` shift forward after each, so only constant indices ever touch it.
        for i in range(TM):
            for j in range(TN):
                slab[ty, col_of(tx, j)] = acc[j]
            for q in range(ACC - TN):
                acc[q] = acc[q + TN]
            cuda.syncthreads()
            for e in range(SLAB_LOADS):
                idx = tid + e * NT
                r = idx // BN
                c = idx % BN
                m = m0 + row_of(r, i)
                n = n0 + c
                if m < M and n < N:
                    v = slab[r, c]
                    if EPI == EPI_BIAS_ACT:
                        v = forward_value(act, v + E[n], alpha)
                    else:
                        v = backward_value(act, v, E[m * lde + n], alpha)
                    C[m * ldc + n] = v
            cuda.syncthreads()

    return gemm


def _sm_count():
    try:
        return int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
    except Exception:  # the simulator's device has no attributes
        return DEFAULT_SM_COUNT


# Split K: each split sums at least this much of K, and there are at most this many.
SPLIT_MIN_K = 128
MAX_SPLITS = 16


def choose_tile(M, N, K=0):
    """The largest tile that cuts (M, N) into enough blocks without padding it much, else the
    16 x 16 tile when K is long enough to split (``split_count``), else the smallest.

    A large tile reuses each loaded element more (TM + TN loads per TM * TN multiply-adds), but
    a matrix cut into too few blocks leaves multiprocessors idle. "Enough" is per tile
    (``TILE_MIN_FILL``, blocks per multiprocessor): a 64 x 64 tile runs several blocks on each,
    and on an H200 it beat the 16 x 16 tile with 64 blocks on 132 multiprocessors (256 x 1024
    x 1024), while the 128 x 128 tile lost to it with 56 (785 x 1024 x 256). A tile whose
    padded area is over twice the matrix's computes mostly zeros (64 x 64 on 4096 x 10).
    """
    sms = _sm_count()
    for tile in TILES[:-1]:
        rows, cols = -(-M // tile[0]), -(-N // tile[1])
        if rows * cols >= TILE_MIN_FILL[tile] * sms and rows * tile[0] * cols * tile[1] <= 2 * M * N:
            return tile
    return TILE_16 if K >= 2 * SPLIT_MIN_K else TILES[-1]


def split_count(M, N, K, tile):
    """How many parts to split K into: enough for the blocks to fill the GPU when ``tile`` alone
    cuts C into too few (a batch of 50 against 784 inputs makes 28 blocks of 16 x 16 on 132
    multiprocessors, each walking all 784), each part at least SPLIT_MIN_K long; else 1."""
    n_blocks = -(-M // tile[0]) * -(-N // tile[1])
    sms = _sm_count()
    if n_blocks >= TILE_MIN_FILL[tile] * sms or K < 2 * SPLIT_MIN_K:
        return 1
    return min(-(-sms // n_blocks), K // SPLIT_MIN_K, MAX_SPLITS)


@lru_cache(maxsize=None)
def split_k_sum_kernel(dtype, epilogue):
    """``split_k_sum(C, ldc, parts, splits, M, N, E, lde, act, alpha)``: C (M, N) = the epilogue
    of the sum of ``splits`` partial products (``parts``, contiguous (splits, M, N)), summed
    in a fixed order, so that results do not vary from run to run as atomic adds would."""
    f = device_functions(dtype)
    forward_value, backward_value = f.activation_forward_value, f.activation_backward_value
    EPI = epilogue

    @kernel
    def split_k_sum(C, ldc, parts, splits, M, N, E, lde, act, alpha):
        i = cuda.grid(1)
        if i < M * N:
            m = i // N
            n = i - m * N
            v = parts[i]
            for z in range(1, splits):
                v += parts[z * M * N + i]
            if EPI == EPI_BIAS_ACT:
                v = forward_value(act, v + E[n], alpha)
            elif EPI == EPI_ACT_GRAD:
                v = backward_value(act, v, E[m * lde + n], alpha)
            C[m * ldc + n] = v

    return split_k_sum


_workspaces = {}


def _workspace(dtype, size):
    """A device scratch array of at least ``size`` elements for split-K parts, one per dtype,
    replaced by a larger one when a plan needs more (plans keep the arrays they were built with)."""
    name = np.dtype(dtype).name
    found = _workspaces.get(name)
    if found is None or found.size < size:
        found = _workspaces[name] = cuda.device_array(max(size, 2 * (found.size if found is not None else 0)),
                                                      np.dtype(dtype))
    return found


def _launch_gemm(plan, dtype, trans_a, trans_b, epi, tile, C, ldc, A, lda, B, ldb, M, N, K, ones_row, E, lde,
                 act, alpha, splits=None):
    """One GEMM with its epilogue; split along K (a GEMM into a workspace, then ``split_k_sum``)
    when ``splits`` > 1, or, with ``splits`` None, when neither it nor ``tile`` is given and
    ``split_count`` says so."""
    chosen = tile is None
    tile = tile or choose_tile(M, N, K)
    if splits is None:
        splits = split_count(M, N, K, tile) if chosen else 1
    grid = (-(-N // tile[1]), -(-M // tile[0]))
    threads = (tile[0] // tile[3]) * (tile[1] // tile[4])
    if splits <= 1:
        launch(plan, gemm_kernel(np.dtype(dtype).name, trans_a, trans_b, epi, tile), grid, threads,
               C, ldc, A, lda, B, ldb, M, N, K, ones_row, E, lde, act, float(alpha), K, 0)
        return
    chunk = -(-K // splits)
    chunk = -(-chunk // tile[2]) * tile[2]  # whole slices of BK per part
    splits = -(-K // chunk)
    parts = _workspace(dtype, splits * M * N)
    launch(plan, gemm_kernel(np.dtype(dtype).name, trans_a, trans_b, EPI_NONE, tile), grid + (splits,), threads,
           parts, N, A, lda, B, ldb, M, N, K, ones_row, parts, 0, IDENTITY, 0.0, chunk, M * N)
    launch(plan, split_k_sum_kernel(np.dtype(dtype).name, epi), *blocks(M * N),
           C, ldc, parts, splits, M, N, E, lde, act, float(alpha))


def sgemm(C, A, B, M, N, K, trans_a=False, trans_b=False, tile=None, plan=None, splits=None):
    """C (M, N) = op(A) @ op(B), flat row-major device arrays; A stored (K, M) when ``trans_a``,
    B stored (N, K) when ``trans_b``. ``tile`` None picks one by size (``choose_tile``), and
    ``splits`` None splits K by ``split_count`` then."""
    _launch_gemm(plan, C.dtype, trans_a, trans_b, EPI_NONE, tile, C, N, A, M if trans_a else K, B,
                 K if trans_b else N, M, N, K, M, C, 0, IDENTITY, 0.0, splits)


def dense_forward(out, x, W, b, act, alpha, rows, n_in, n_out, defer_softmax=False, tile=None, plan=None):
    """out (rows, n_out) = act(x (rows, n_in) @ W (n_in, n_out) + b), one GEMM with the bias and
    an elementwise activation in its epilogue. Softmax takes one row kernel more, unless
    ``defer_softmax`` (the loss kernel applies it, ``losses.loss_forward_backward``)."""
    if act == SOFTMAX:
        _launch_gemm(plan, out.dtype, False, False, EPI_BIAS_ACT, tile, out, n_out, x, n_in, W, n_out,
                     rows, n_out, n_in, rows, b, 0, IDENTITY, 0.0)
        if not defer_softmax:
            bias_activation_forward(out, out, None, SOFTMAX, 0.0, rows, n_out, plan=plan)
    else:
        _launch_gemm(plan, out.dtype, False, False, EPI_BIAS_ACT, tile, out, n_out, x, n_in, W, n_out,
                     rows, n_out, n_in, rows, b, 0, act, alpha)


def dense_backward(dx, dWb, dz, x, W, rows, n_in, n_out, prev_out=None, prev_act=IDENTITY, prev_alpha=0.0,
                   tile=None, plan=None):
    """Gradients of a dense layer from dz = dL/d(x @ W + b) (rows, n_out).

    dWb ((n_in + 1) * n_out): dW = x.T @ dz followed by db = column sums of dz, in one TN GEMM.
    dx (rows, n_in) = dz @ W.T, times act'(prev_out) of the previous layer's activation
    ``prev_act`` when ``prev_out`` is given (the fused epilogue of
    ``kernels.table.fuse_activation_backward``; softmax takes one row kernel more); ``dx`` None
    skips it (the first layer). As ``kernels.dense.dense_backward``.
    """
    _launch_gemm(plan, dz.dtype, True, False, EPI_NONE, tile, dWb, n_out, x, n_in, dz, n_out,
                 n_in + 1, n_out, rows, n_in, dWb, 0, IDENTITY, 0.0)
    if dx is None:
        return
    if prev_out is None or prev_act == SOFTMAX:
        _launch_gemm(plan, dz.dtype, False, True, EPI_NONE, tile, dx, n_in, dz, n_out, W, n_out,
                     rows, n_in, n_out, rows, dx, 0, IDENTITY, 0.0)
        if prev_out is not None:
            activation_backward(dx, dx, prev_out, SOFTMAX, 0.0, rows, n_in, plan=plan)
    else:
        _launch_gemm(plan, dz.dtype, False, True, EPI_ACT_GRAD, tile, dx, n_in, dz, n_out, W, n_out,
                     rows, n_in, n_out, rows, prev_out, n_in, prev_act, prev_alpha)


# The zero-skipping first layer's twins (a CSR batch, and a dense batch's nonzeros), in a module of their own.
from .sparse import nonzero_rows_product, sparse_dense_backward, sparse_dense_forward  # noqa: E402, F401
