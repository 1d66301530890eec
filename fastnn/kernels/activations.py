"""Activation kernels: ``<name>_forward(out, x[, alpha])`` and ``<name>_backward(dx, dout, out[, alpha])``.

The primitives work on one contiguous 1-D vector (a row, or a whole flattened matrix for the
elementwise ones; softmax is row-wise). Every backward reads the forward's *output*, never
its input, so the network keeps one buffer per layer: for sigmoid s' = s(1-s), tanh
t' = 1-t², relu/leaky-relu/elu by the sign of the output (which is why LeakyReLU needs
alpha >= 0 and ELU alpha > 0). ``in place`` is allowed: ``out`` may be ``x``, ``dx`` may be ``dout``.

The 2-D drivers ``bias_activation_forward`` / ``activation_backward`` add the bias and apply
an activation chosen by its integer code, in place over one array (their docstrings say why).

One source for both targets: each formula is written once, as an element function
(``<name>_forward_value``, ``<name>_backward_value``, the softmax row functions), which the
primitives here loop (Numba inlines it, so the loops vectorize as before) and which
``fastnn.cuda.activations`` compiles as a CUDA device function (``fastnn.cuda.device_twin``).
They use ``math``'s functions, which both targets compile (NumPy's ufuncs do not compile for
CUDA), and take their constants typed by the caller.
"""
import math

from numba import prange

from ..config import PARALLEL_ACTIVATIONS, PARALLEL_MIN_ACTIVATION, kernel
from .parallel import block_count

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTMAX, HEAVISIDE = range(8)


# ---- the formulas, one element at a time ------------------------------------------------------
# ``<name>_forward_value(v, ...)`` is act(v); ``<name>_backward_value(dout, out, ...)`` is
# dout * act'(.) from the forward's output. The vector primitives below loop them, and
# ``fastnn.cuda.activations`` compiles them as device functions (elementwise kernels, and the
# SGEMM epilogues that apply an activation where the product is written). Constants come in the
# value's dtype from the caller (``one``, ``zero``, ``alpha``): a literal would make the
# arithmetic float64.

@kernel(inline=True)
def sigmoid_forward_value(v, one):
    """1 / (1 + exp(-v)), computed from exp(-|v|) so neither branch overflows."""
    if v >= 0:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


@kernel(inline=True)
def sigmoid_backward_value(dout, out, one):
    return dout * out * (one - out)


@kernel(inline=True)
def tanh_forward_value(v):
    return math.tanh(v)


@kernel(inline=True)
def tanh_backward_value(dout, out, one):
    return dout * (one - out * out)


@kernel(inline=True)
def relu_forward_value(v, zero):
    """NaN stays NaN, as torch.relu's: a diverged layer must not look finite to the next."""
    return zero if v < zero else v


@kernel(inline=True)
def relu_backward_value(dout, out, zero):
    """Derivative 0 at x == 0, as torch.nn.ReLU."""
    return dout if out > zero else zero


@kernel(inline=True)
def leaky_relu_forward_value(v, alpha):
    """max(alpha*v, v) for 0 <= alpha <= 1: torch.nn.LeakyReLU(negative_slope=alpha)."""
    return v if v > 0 else alpha * v


@kernel(inline=True)
def leaky_relu_backward_value(dout, out, alpha):
    return dout if out > 0 else alpha * dout


@kernel(inline=True)
def elu_forward_value(v, alpha):
    """v for v > 0, alpha*(exp(v)-1) otherwise: torch.nn.ELU(alpha)."""
    return v if v > 0 else alpha * math.expm1(v)


@kernel(inline=True)
def elu_backward_value(dout, out, alpha):
    """For x <= 0, d/dx alpha*(e^x - 1) = alpha*e^x = out + alpha."""
    return dout if out > 0 else dout * (out + alpha)


@kernel(inline=True)
def heaviside_forward_value(v, one, zero):
    """The perceptron's step: 1 for v > 0, else 0 (the seed's convention at 0). Its backward is
    straight-through: the step has derivative 0 almost everywhere, so it passes ``dout``
    unchanged; with the PerceptronCriterion loss this makes SGD the perceptron learning rule."""
    return one if v > zero else zero


@kernel(inline=True)
def softmax_row_forward(out, x, lo, cols):
    """out[lo:lo+cols] = exp(x - max x) / sum exp(x - max x) over one row of a flat array
    (torch.softmax(x, dim=-1)); ``out`` may be ``x``."""
    m = x[lo]
    for j in range(1, cols):
        if x[lo + j] > m:
            m = x[lo + j]
    total = x.dtype.type(0)
    for j in range(cols):
        e = math.exp(x[lo + j] - m)
        out[lo + j] = e
        total += e
    inv = x.dtype.type(1) / total
    for j in range(cols):
        out[lo + j] *= inv


@kernel(inline=True)
def softmax_row_backward(dx, dout, out, lo, cols):
    """Jacobian-vector product of one row of flat arrays: dx = s * (dout - <dout, s>); ``dx`` may be ``dout``."""
    dot = out.dtype.type(0)
    for j in range(cols):
        dot += dout[lo + j] * out[lo + j]
    for j in range(cols):
        dx[lo + j] = out[lo + j] * (dout[lo + j] - dot)


# ---- the vector primitives ----------------------------------------------------------------------

@kernel(inline=True)
def identity_forward(out, x):
    for i in range(x.size):
        out[i] = x[i]


@kernel(inline=True)
def identity_backward(dx, dout, out):
    for i in range(dout.size):
        dx[i] = dout[i]


@kernel(inline=True)
def sigmoid_forward(out, x):
    one = x.dtype.type(1)
    for i in range(x.size):
        out[i] = sigmoid_forward_value(x[i], one)


@kernel(inline=True)
def sigmoid_backward(dx, dout, out):
    one = out.dtype.type(1)
    for i in range(out.size):
        dx[i] = sigmoid_backward_value(dout[i], out[i], one)


@kernel(inline=True)
def tanh_forward(out, x):
    for i in range(x.size):
        out[i] = tanh_forward_value(x[i])


@kernel(inline=True)
def tanh_backward(dx, dout, out):
    one = out.dtype.type(1)
    for i in range(out.size):
        dx[i] = tanh_backward_value(dout[i], out[i], one)


@kernel(inline=True)
def relu_forward(out, x):
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = relu_forward_value(x[i], zero)


@kernel(inline=True)
def relu_backward(dx, dout, out):
    zero = out.dtype.type(0)
    for i in range(out.size):
        dx[i] = relu_backward_value(dout[i], out[i], zero)


@kernel(inline=True)
def leaky_relu_forward(out, x, alpha):
    a = x.dtype.type(alpha)
    for i in range(x.size):
        out[i] = leaky_relu_forward_value(x[i], a)


@kernel(inline=True)
def leaky_relu_backward(dx, dout, out, alpha):
    a = out.dtype.type(alpha)
    for i in range(out.size):
        dx[i] = leaky_relu_backward_value(dout[i], out[i], a)


@kernel(inline=True)
def elu_forward(out, x, alpha):
    a = x.dtype.type(alpha)
    for i in range(x.size):
        out[i] = elu_forward_value(x[i], a)


@kernel(inline=True)
def elu_backward(dx, dout, out, alpha):
    a = out.dtype.type(alpha)
    for i in range(out.size):
        dx[i] = elu_backward_value(dout[i], out[i], a)


@kernel(inline=True)
def softmax_forward(out, x):
    """softmax over one row (``softmax_row_forward``)."""
    softmax_row_forward(out, x, 0, x.size)


@kernel(inline=True)
def softmax_backward(dx, dout, out):
    softmax_row_backward(dx, dout, out, 0, out.size)


@kernel(inline=True)
def heaviside_forward(out, x):
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for i in range(x.size):
        out[i] = heaviside_forward_value(x[i], one, zero)


@kernel(inline=True)
def heaviside_backward(dx, dout, out):
    """Straight-through (see ``heaviside_forward_value``)."""
    for i in range(dout.size):
        dx[i] = dout[i]


@kernel
def activation_row_forward(act, z, alpha):
    """z = act(z) in place for activation ``act`` (a code above) over one contiguous vector: a
    row, or for the elementwise kinds a whole matrix flattened (softmax is row-wise).

    One array on purpose. The primitive is inlined here as ``relu_forward(z, z)``, so LLVM sees
    one pointer and vectorizes it. Given two arguments that are the same array, its runtime
    overlap check fails and the scalar loop runs: bias + ReLU over 256 x 1024 took 149 us
    that way against 29 us."""
    if act == IDENTITY:
        pass
    elif act == SIGMOID:
        sigmoid_forward(z, z)
    elif act == TANH:
        tanh_forward(z, z)
    elif act == RELU:
        relu_forward(z, z)
    elif act == LEAKY_RELU:
        leaky_relu_forward(z, z, alpha)
    elif act == ELU:
        elu_forward(z, z, alpha)
    elif act == SOFTMAX:
        softmax_forward(z, z)
    elif act == HEAVISIDE:
        heaviside_forward(z, z)
    else:
        raise ValueError("unknown activation code")


@kernel
def activation_row_backward(act, d, out, alpha):
    """d = d * act'(.) in place, from the forward's output ``out``, over one vector as in
    ``activation_row_forward`` (one array for the gradient, for the same reason)."""
    if act == IDENTITY:
        pass
    elif act == SIGMOID:
        sigmoid_backward(d, d, out)
    elif act == TANH:
        tanh_backward(d, d, out)
    elif act == RELU:
        relu_backward(d, d, out)
    elif act == LEAKY_RELU:
        leaky_relu_backward(d, d, out, alpha)
    elif act == ELU:
        elu_backward(d, d, out, alpha)
    elif act == SOFTMAX:
        softmax_backward(d, d, out)
    elif act == HEAVISIDE:
        pass  # straight-through: heaviside_backward passes d unchanged
    else:
        raise ValueError("unknown activation code")


@kernel
def bias_activation_forward(out, x, b, act, alpha):
    """out[i] = act(x[i] + b) row by row (b may be empty: no bias). ``out`` may be ``x``; both are
    C-contiguous.

    A distinct ``x`` is copied into ``out`` first and the rest runs in place, so that every
    loop writes one array that it alone reads (see ``activation_row_forward``). The elementwise
    activations then run as one call over the whole matrix and softmax row by row inlined here:
    a call per row cost about 30 ns, which at batch 2048 and 10 outputs was more than the
    row's work. On Numba's TBB layer (``config.PARALLEL``), bias + ReLU or bias alone over a large
    matrix runs on blocks of rows in parallel (``bias_relu_parallel``); the other activations stay
    serial: a parallel build of this whole dispatcher cost about 1.3 s of every cold start.
    """
    rows, cols = x.shape
    if PARALLEL_ACTIVATIONS and (act == RELU or act == IDENTITY) and x.size >= PARALLEL_MIN_ACTIVATION:
        bias_relu_parallel(out, x, b, act == RELU)
        return
    if out.ctypes.data != x.ctypes.data:
        identity_forward(out.reshape(-1), x.reshape(-1))
    if b.size:
        for i in range(rows):
            row = out[i]
            for j in range(cols):
                row[j] += b[j]
    if act == SOFTMAX:
        for i in range(rows):
            row = out[i]
            softmax_forward(row, row)
    else:
        activation_row_forward(act, out.reshape(-1), alpha)


@kernel
def activation_backward(dx, dout, out, act, alpha):
    """dx = dout * act'(.) row by row, from the forward's output. ``dx`` may be ``dout``; all are
    C-contiguous (a distinct ``dout`` is copied into ``dx`` first, as in ``bias_activation_forward``, which
    also says why the elementwise kinds run as one call over the whole matrix)."""
    if PARALLEL_ACTIVATIONS and act == RELU and out.size >= PARALLEL_MIN_ACTIVATION:
        relu_backward_parallel(dx, dout, out)
        return
    if dx.ctypes.data != dout.ctypes.data:
        identity_forward(dx.reshape(-1), dout.reshape(-1))
    if act == SOFTMAX:
        for i in range(out.shape[0]):
            row = dx[i]
            softmax_backward(row, row, out[i])
    else:
        activation_row_backward(act, dx.reshape(-1), out.reshape(-1), alpha)


# ---- parallel builds (config.PARALLEL) ----------------------------------------------------------
# Only reached under ``if PARALLEL``, a constant that Numba prunes on: a serial build never
# compiles them. One block of rows per thread; each row is computed alone, as the serial kernels
# compute it, so the results are theirs bit for bit.

@kernel(parallel=True)
def bias_relu_parallel(out, x, b, relu):
    """out = relu(x + b) (``relu``) or x + b, on blocks of rows; ``b`` may be empty."""
    rows, cols = x.shape
    chunks = max(min(block_count(), rows), 1)
    zero = x.dtype.type(0)
    copy = out.ctypes.data != x.ctypes.data
    for c in prange(chunks):
        for i in range(rows * c // chunks, rows * (c + 1) // chunks):
            # One array written and read per loop (o; b only read), as activation_row_forward says why.
            o = out[i]
            if copy:
                identity_forward(o, x[i])
            if b.size and relu:
                for j in range(cols):
                    o[j] = relu_forward_value(o[j] + b[j], zero)
            elif b.size:
                for j in range(cols):
                    o[j] += b[j]
            elif relu:
                for j in range(cols):
                    o[j] = relu_forward_value(o[j], zero)


@kernel(parallel=True)
def relu_backward_parallel(dx, dout, out):
    """dx = dout * relu'(.) from the forward's output, on blocks of rows."""
    rows, cols = out.shape
    chunks = max(min(block_count(), rows), 1)
    zero = out.dtype.type(0)
    for c in prange(chunks):
        for i in range(rows * c // chunks, rows * (c + 1) // chunks):
            d, g, o = dx[i], dout[i], out[i]
            for j in range(cols):
                d[j] = relu_backward_value(g[j], o[j], zero)
