"""Dense (fully connected) layer: ``out = act(x @ W + b)`` with W of shape (in, out).

The matrix products go to BLAS through ``np.dot(a, b, out)``: with ``out=`` it writes in
place, and a transposed operand (``x.T``) is passed to BLAS as a flag, not copied. The bias
and the activation are applied in the same pass over ``out`` (``bias_activation_forward``).
"""
import numpy as np

from ..config import kernel
from .activations import bias_activation_forward
from .parallel import column_sums


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
    column_sums(db, dz)
    if dx.size:
        np.dot(dz, W.T, dx)
