"""Dense (fully connected) layer: ``out = act(x @ W + b)`` with W of shape (in, out).

The matrix products go to BLAS through ``np.dot(a, b, out)``: with ``out=`` it writes in
place, and a transposed operand (``x.T``) is passed to BLAS as a flag, not copied. The bias
and the activation are applied in the same pass over ``out`` (``bias_activation_forward``).
"""
import numpy as np

from ..config import kernel
from .activations import bias_activation_forward


@kernel(inline=True)
def dense_forward(out, x, W, b, act, alpha):
    """out (B, n_out) = act(x (B, n_in) @ W (n_in, n_out) + b (n_out,)), ``act`` an activation code."""
    np.dot(x, W, out)
    bias_activation_forward(out, out, b, act, alpha)


@kernel(inline=True)
def dense_backward(dx, dW, db, dz, x, W):
    """Gradients of a dense layer from dz = dL/d(x @ W + b) (B, n_out).

    dW = x.T @ dz, db = column sums of dz, dx = dz @ W.T. ``dx`` may be an empty array to
    skip it: the first layer needs no gradient for its input.
    """
    np.dot(x.T, dz, dW)
    db[:] = 0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[i, j]
    if dx.size:
        np.dot(dz, W.T, dx)


# The zero-skipping twins of the two passes, for a first layer whose input batch is CSR
# (``kernels/sparse.py``): with W row-major (n_in, n_out), both products are row axpys over the
# batch's nonzeros (i, k), out[i, :] += x[i, k] W[k, :] and dW[k, :] += x[i, k] dz[i, :], whose
# inner loops run over contiguous rows and vectorize. Serial, so the dW rows' += do not race.
@kernel(inline=True)
def sparse_dense_forward(out, indptr, indices, values, W, b, act, alpha):
    """``dense_forward`` for x given as CSR: row i's nonzeros are ``values[indptr[i]:indptr[i + 1]]``
    at columns ``indices[...]``; out (B, n_out) with B = indptr.size - 1."""
    for i in range(out.shape[0]):
        o = out[i]
        for j in range(o.shape[0]):
            o[j] = 0
        for p in range(indptr[i], indptr[i + 1]):
            v = values[p]
            w = W[indices[p]]
            for j in range(o.shape[0]):
                o[j] += v * w[j]
    bias_activation_forward(out, out, b, act, alpha)


@kernel(inline=True)
def sparse_dense_backward(dW, db, dz, indptr, indices, values):
    """``dense_backward``'s dW = x.T @ dz and db for x given as CSR (as ``sparse_dense_forward``'s);
    no dx: only a first layer reads a CSR batch, and its input needs no gradient."""
    for k in range(dW.shape[0]):
        for j in range(dW.shape[1]):
            dW[k, j] = 0
    db[:] = 0
    for i in range(dz.shape[0]):
        d = dz[i]
        for j in range(d.shape[0]):
            db[j] += d[j]
        for p in range(indptr[i], indptr[i + 1]):
            v = values[p]
            g = dW[indices[p]]
            for j in range(d.shape[0]):
                g[j] += v * d[j]
