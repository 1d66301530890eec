"""Weight penalties (Keras' ``kernel_regularizer``/``bias_regularizer``): the penalty's value and
its gradient in one pass.

``reg`` float64 (R, 4), one row per regularized slice of the flat parameter buffer:
[start, stop, l1, l2]. The penalty is sum over rows of l1 * sum|w| + l2 * sum w² (Keras' L1,
L2 and L1L2: no factor 1/2), added to the loss; its gradient l1 * sign(w) + 2 * l2 * w
(sign(0) = 0, as TensorFlow's) is added to the gradient that backpropagation left.
"""
import numpy as np

from ..config import kernel

R_LO, R_HI, R_L1, R_L2 = range(4)


@kernel(inline=True)
def regularization_forward_backward(params, grads, reg):
    """grads += d(penalty)/d(params) over ``reg``'s slices; returns the penalty (float64).

    One loop per term, over slice views, each term skipped at 0: written this way LLVM
    vectorizes the loops (L2 over the seed network's 83,900 kernel weights: 22 us; the single
    loop over ``params[lo:hi]`` with both terms and the sign's branches took 790 us)."""
    t = params.dtype.type
    zero = t(0)
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
                w = p[i]
                abs_sum += np.float64(abs(w))
                g[i] += l1_ * (t(1) if w > zero else (t(-1) if w < zero else zero))
            total += l1 * abs_sum
        if l2 != 0.0:
            two_l2 = t(2.0 * l2)
            square_sum = 0.0
            for i in range(p.size):
                w = p[i]
                square_sum += np.float64(w) * np.float64(w)
                g[i] += two_l2 * w
            total += l2 * square_sum
    return total


def regularization_penalty(params, reg):
    """The penalty alone, in NumPy (for evaluate, where no gradient is taken)."""
    total = 0.0
    for lo, hi, l1, l2 in np.asarray(reg, dtype=np.float64).reshape(-1, 4):
        w = np.asarray(params[int(lo): int(hi)], dtype=np.float64)
        total += l1 * np.abs(w).sum() + l2 * np.square(w).sum()
    return total
