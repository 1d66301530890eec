"""Dense (fully connected) layer: ``out = act(x @ W + b)`` with W of shape (in, out).

The matrix products go to BLAS through ``np.dot(a, b, out)``: with ``out=`` it writes in
place, and a transposed operand (``x.T``) is passed to BLAS as a flag, not copied. The bias
and the activation are applied in the same pass over ``out`` (``bias_activation_forward``).
"""
import numpy as np

from ..config import FEW_ROWS, FEW_ROWS_MAX_DENSITY, kernel
from .activations import bias_activation_forward


@kernel(inline=True)
def dense_forward(out, x, W, b, act, alpha):
    """out (B, n_out) = act(x (B, n_in) @ W (n_in, n_out) + b (n_out,)), ``act`` an activation code."""
    if x.shape[0] <= FEW_ROWS:
        for i in range(x.shape[0]):
            row_times_matrix(out[i], x[i], W)
    else:
        np.dot(x, W, out)
    bias_activation_forward(out, out, b, act, alpha)


@kernel
def row_times_matrix(out, x, W):
    """out (n_out,) = x (n_in,) @ W (n_in, n_out): BLAS's vector-matrix product, or, where at most
    ``FEW_ROWS_MAX_DENSITY`` of x is nonzero, the sum of W's rows at x's nonzeros."""
    nonzero = 0
    for k in range(x.shape[0]):
        nonzero += x[k] != 0
    if nonzero > FEW_ROWS_MAX_DENSITY * x.shape[0]:
        np.dot(x, W, out)
        return
    out[:] = 0
    for k in range(x.shape[0]):
        a = x[k]
        if a != 0:
            for j in range(out.shape[0]):
                out[j] += a * W[k, j]


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
