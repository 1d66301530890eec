"""Weight penalties (Keras' ``kernel_regularizer``/``bias_regularizer``): the penalty's value and
its gradient in one pass.

``reg`` float64 (R, 4), one row per regularized slice of the flat parameter buffer:
[start, stop, l1, l2]. The penalty is sum over rows of l1 * sum|w| + l2 * sum w² (Keras' L1,
L2 and L1L2: no factor 1/2), added to the loss; its gradient l1 * sign(w) + 2 * l2 * w
(sign(0) = 0, as TensorFlow's) is added to the gradient that backpropagation left.

One source for both targets: each element's terms (``l1_value``, ``l2_value``, ``l1_gradient``,
``l2_gradient``) are written once; the loops here call them and ``fastnn.cuda.regularizers``
compiles them as CUDA device functions (``fastnn.cuda.device_twin``).
"""
import numpy as np

from ..config import kernel

R_LO, R_HI, R_L1, R_L2 = range(4)


# One element's terms, written once: the loops below and the CUDA twin
# (``fastnn.cuda.regularizers``, one thread per parameter) call them. Values are float64; the
# gradients are in the parameters' dtype, their constants typed by the caller.

@kernel(inline=True)
def l1_value(w):
    """|w|, float64."""
    return abs(np.float64(w))


@kernel(inline=True)
def l2_value(w):
    """w², float64."""
    return np.float64(w) * np.float64(w)


@kernel(inline=True)
def l1_gradient(w, l1, one, zero):
    """l1 * sign(w), with sign(0) = 0 (TensorFlow's), and 0 for NaN."""
    return l1 * (one if w > zero else (-one if w < zero else zero))


@kernel(inline=True)
def l2_gradient(w, two_l2):
    """2 * l2 * w (``two_l2`` = 2 * l2)."""
    return two_l2 * w


@kernel(inline=True)
def regularization_forward_backward(params, grads, reg):
    """grads += d(penalty)/d(params) over ``reg``'s slices; returns the penalty (float64).

    One loop per term, over slice views, each term skipped at 0: written this way LLVM
    vectorizes the loops (L2 over the seed network's 83,900 kernel weights: 22 us; the single
    loop over ``params[lo:hi]`` with both terms and the sign's branches took 790 us)."""
    t = params.dtype.type
    one, zero = t(1), t(0)
    total = 0.0
    for r in range(reg.shape[0]):
        lo, hi = int(reg[r, R_LO]), int(reg[r, R_HI])
        l1, l2 = reg[r, R_L1], reg[r, R_L2]
        p = params[lo:hi]
        g = grads[lo:hi]
        if l1 != 0.0:
            l1_ = t(l1)
            abs_sum = 0.0
            for i in range(p.size):
                abs_sum += l1_value(p[i])
                g[i] += l1_gradient(p[i], l1_, one, zero)
            total += l1 * abs_sum
        if l2 != 0.0:
            two_l2 = t(2.0 * l2)
            square_sum = 0.0
            for i in range(p.size):
                square_sum += l2_value(p[i])
                g[i] += l2_gradient(p[i], two_l2)
            total += l2 * square_sum
    return total


@kernel
def penalty_of(params, reg):
    """The penalty alone, over ``reg``'s slices, as ``regularization_forward_backward`` sums it."""
    total = 0.0
    for r in range(reg.shape[0]):
        lo, hi = int(reg[r, R_LO]), int(reg[r, R_HI])
        p = params[lo:hi]
        abs_sum = 0.0
        square_sum = 0.0
        for i in range(p.size):
            abs_sum += l1_value(p[i])
            square_sum += l2_value(p[i])
        total += reg[r, R_L1] * abs_sum + reg[r, R_L2] * square_sum
    return total


def regularization_penalty(params, reg):
    """The penalty alone (for evaluate, where no gradient is taken), ``reg`` as any (R, 4) array-like."""
    reg = np.ascontiguousarray(reg, dtype=np.float64).reshape(-1, 4)
    return float(penalty_of(np.ascontiguousarray(params).reshape(-1), reg)) if reg.shape[0] else 0.0
