"""CUDA twins of the zero-skipping first layer's passes, ``kernels.dense.sparse_dense_forward`` and
``sparse_dense_backward`` (re-exported by ``cuda/dense.py``): a batch given as CSR (``indptr``
(rows + 1,), ``indices``, ``values``, each row's indices sorted, as ``kernels/sparse.py``
gathers it), W and every other array flat and row-major as ``cuda/dense.py``'s.

- forward: a thread per (row i, output column j) sums row i's nonzeros times W[k, j]; the threads
  of a warp take consecutive j, so that each nonzero's W row is read coalesced.
- dW: a thread per (input feature k, output column j) sums column k's nonzeros times dz[i, j],
  from the batch transposed to CSC first: each dW element is written once, by one thread, in a
  fixed order, so the result is deterministic and needs no zeroing pass, where atomic adds into
  dW (a thread per nonzero and column) would need both and vary in rounding from run to run.
  The CSC takes three launches: a thread per feature counts its nonzeros (a binary search of
  each row's sorted indices), one thread sums the counts into ``colptr`` (n_in + 1 values), and
  a thread per feature writes its column, rows in order. db (the column sums of dz, after dW in
  ``dWb`` as ``dense_backward`` lays them out) takes a thread per column.

Not wired into the CUDA backend yet (its gather writes dense batches): see the module's tests.

The first layer over a dense batch's nonzero entries (``kernels.dense.nonzero_rows_product`` and
``kernels.sparse.nonzero_first_forward``/``nonzero_first_backward``'s twins): a thread per element
of the product, which multiplies only where x is nonzero. A warp's threads take consecutive
output columns, so they share the row i (forward) or the input feature k (dW) whose x[i, k]
they test: one broadcast load, the same branch in every thread, and the row of W (or dz) read
coalesced. Each element is summed by one thread, in a fixed order (k, or the batch's rows,
ascending): deterministic, with no atomics and no zeroing pass. Unlike the GEMM's tiles, which
reuse each load many times from shared memory, this kernel reads W for every nonzero: it can win
only where most of x is zero, and the CUDA backend times both on the data set before choosing
(``CUDABackend._nonzero_first``).
"""
from functools import lru_cache

import numba
import numpy as np
from numba import cuda

from ..kernels.table import ACT, ALPHA, B_OFF, N_IN, N_OUT, W_OFF
from . import blocks, kernel, launch
from .activations import IDENTITY, SOFTMAX, activation_backward, bias_activation_forward, device_functions


@kernel(device=True)
def find_in_row(indices, lo, hi, k):
    """Where column ``k`` is in the sorted ``indices[lo:hi]``, or -1."""
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < k:
            lo = mid + 1
        else:
            hi = mid
    return lo if lo < end and indices[lo] == k else -1


@kernel(device=True)
def column_sum(dz, j, rows, n_out, acc):
    """``acc`` plus column j of the (rows, n_out) ``dz``, summed in row order: db's element j."""
    for i in range(rows):
        acc += dz[i * n_out + j]
    return acc


@lru_cache(maxsize=None)
def sparse_forward_kernel(dtype):
    forward_value = device_functions(dtype).activation_forward_value
    ZERO = numba.from_dtype(np.dtype(dtype))(0)  # sums in the arrays' type, not float64

    @kernel
    def sparse_forward(out, indptr, indices, values, W, b, rows, n_out, act, alpha):
        t = cuda.grid(1)
        if t < rows * n_out:
            i = t // n_out
            j = t - i * n_out
            acc = ZERO
            for p in range(indptr[i], indptr[i + 1]):
                acc += values[p] * W[indices[p] * n_out + j]
            out[t] = forward_value(act, acc + b[j], alpha)

    return sparse_forward


@kernel
def csc_count(colptr, indptr, indices, rows, n_in):
    k = cuda.grid(1)
    if k < n_in:
        count = 0
        for i in range(rows):
            if find_in_row(indices, indptr[i], indptr[i + 1], k) >= 0:
                count += 1
        colptr[k + 1] = count


@kernel
def csc_scan(colptr, n_in):
    if cuda.grid(1) == 0:
        colptr[0] = 0
        for k in range(n_in):
            colptr[k + 1] += colptr[k]


@kernel
def csc_fill(csc_rows, csc_values, colptr, indptr, indices, values, rows, n_in):
    k = cuda.grid(1)
    if k < n_in:
        q = colptr[k]
        for i in range(rows):
            p = find_in_row(indices, indptr[i], indptr[i + 1], k)
            if p >= 0:
                csc_rows[q] = i
                csc_values[q] = values[p]
                q += 1


@lru_cache(maxsize=None)
def sparse_weight_gradient_kernel(dtype):
    ZERO = numba.from_dtype(np.dtype(dtype))(0)

    @kernel
    def sparse_weight_gradient(dWb, dz, colptr, csc_rows, csc_values, rows, n_in, n_out):
        t = cuda.grid(1)
        if t < n_in * n_out:
            k = t // n_out
            j = t - k * n_out
            acc = ZERO
            for q in range(colptr[k], colptr[k + 1]):
                acc += csc_values[q] * dz[csc_rows[q] * n_out + j]
            dWb[t] = acc
        elif t < (n_in + 1) * n_out:  # the bias row
            dWb[t] = column_sum(dz, t - n_in * n_out, rows, n_out, ZERO)

    return sparse_weight_gradient


def sparse_dense_forward(out, indptr, indices, values, W, b, act, alpha, rows, n_out, defer_softmax=False, plan=None):
    """out (rows, n_out) = act(x @ W + b) for the CSR batch x; softmax as ``dense_forward``'s (a row
    kernel more, unless ``defer_softmax``)."""
    launch(plan, sparse_forward_kernel(out.dtype.name), *blocks(rows * n_out), out, indptr, indices, values, W, b,
           rows, n_out, IDENTITY if act == SOFTMAX else act, float(alpha))
    if act == SOFTMAX and not defer_softmax:
        bias_activation_forward(out, out, None, SOFTMAX, 0.0, rows, n_out, plan=plan)


def sparse_dense_backward(dWb, dz, indptr, indices, values, colptr, csc_rows, csc_values, rows, n_in, n_out,
                          plan=None):
    """dWb ((n_in + 1) * n_out) = [x.T @ dz; column sums of dz] for the CSR batch x (no dx: a first
    layer's); ``colptr`` (n_in + 1,), ``csc_rows`` and ``csc_values`` (room for the batch's
    nonzeros): the batch's CSC, built here."""
    launch(plan, csc_count, *blocks(n_in), colptr, indptr, indices, rows, n_in)
    launch(plan, csc_scan, 1, 1, colptr, n_in)
    launch(plan, csc_fill, *blocks(n_in), csc_rows, csc_values, colptr, indptr, indices, values, rows, n_in)
    launch(plan, sparse_weight_gradient_kernel(dz.dtype.name), *blocks((n_in + 1) * n_out), dWb, dz, colptr, csc_rows,
           csc_values, rows, n_in, n_out)


@lru_cache(maxsize=None)
def nonzero_product_kernel(dtype):
    ZERO = numba.from_dtype(np.dtype(dtype))(0)  # sums in the arrays' type, not float64

    @kernel
    def nonzero_product(out, x, W, m, n_inner, n_out, si, sk, bias_row):
        """out (m, n_out) = A @ W over A's nonzero entries, A[i, k] = x[i * si + k * sk] (x, or x.T
        with the strides swapped); ``bias_row``: a row more, W's column sums."""
        t = cuda.grid(1)
        if t < m * n_out:
            i = t // n_out
            j = t - i * n_out
            acc = ZERO
            for k in range(n_inner):
                v = x[i * si + k * sk]
                if v != ZERO:
                    acc += v * W[k * n_out + j]
            out[t] = acc
        elif bias_row and t < (m + 1) * n_out:
            out[t] = column_sum(W, t - m * n_out, n_inner, n_out, ZERO)

    return nonzero_product


def nonzero_rows_product(out, x, W, rows, n_in, n_out, transposed=False, plan=None):
    """out (rows, n_out) = x (rows, n_in) @ W (n_in, n_out), each row summed over its nonzero
    columns; ``transposed``: out (n_in + 1, n_out) = [x.T @ W; column sums of W] for W (rows,
    n_out), a dz (``dense_backward``'s [dW; db] layout). Flat row-major device arrays. As the CPU's
    kernel, one kernel serves both, by the strides of A = x or x.T."""
    kernel_ = nonzero_product_kernel(out.dtype.name)
    if transposed:
        launch(plan, kernel_, *blocks((n_in + 1) * n_out), out, x, W, n_in, rows, n_out, 1, n_in, True)
    else:
        launch(plan, kernel_, *blocks(rows * n_out), out, x, W, rows, n_in, n_out, n_in, 1, False)


def _first_layer(net):
    """Layer 0's (n_in, n_out, W's offset, b's offset, activation, alpha)."""
    layers = net.layers
    return (int(layers[0, N_IN]), int(layers[0, N_OUT]), int(layers[0, W_OFF]), int(layers[0, B_OFF]),
            int(layers[0, ACT]), float(net.alphas[0, ALPHA]))


def nonzero_first_forward(net, x, out, rows, plan=None):
    """As ``kernels.sparse.nonzero_first_forward``: layer 0 (Dense, not the last layer) on the dense
    rows ``x`` into ``out``, its product over each row's nonzero columns, then its bias and
    activation."""
    n_in, n_out, w, b, act, alpha = _first_layer(net)
    nonzero_rows_product(out, x, net.params[w: w + n_in * n_out], rows, n_in, n_out, plan=plan)
    bias_activation_forward(out, out, net.params[b: b + n_out], act, alpha, rows, n_out, plan=plan)


def nonzero_first_backward(net, grads, x, out, dout, rows, applied, plan=None):
    """As ``kernels.sparse.nonzero_first_backward``: layer 0's [dW; db] from dL/d(its output)
    ``dout`` (dL/d(its pre-activation) when ``applied``; ``out`` its output), on the dense rows ``x``."""
    n_in, n_out, w, _, act, alpha = _first_layer(net)
    if not applied and act != IDENTITY:
        activation_backward(dout, dout, out, act, alpha, rows, n_out, plan=plan)
    nonzero_rows_product(grads[w: w + (n_in + 1) * n_out], x, dout, rows, n_in, n_out, transposed=True, plan=plan)
