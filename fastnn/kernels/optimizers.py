"""Optimizer steps over flat 1-D parameter and gradient arrays, updated in place.

Each kernel is one loop over one array (the model keeps all parameters in one flat buffer)
and reproduces the update of the PyTorch optimizer named in its docstring, operation for
operation, so results agree with torch.optim to float rounding; ``optimizer_step`` dispatches
on the optimizer's code.

One source for both targets: each rule is written once, as an element function
(``sgd_update``, ``adam_update``, ``rmsprop_update``, ``adagrad_update``; the factors
``adam_factors`` and ``square_underflow``; the clipping factors ``clipnorm_scale``,
``global_clipnorm_scale`` and ``clip_value``), which the loops here call (Numba inlines it, so
they vectorize as before) and which ``fastnn.cuda.optimizers`` compiles as CUDA device functions
(``fastnn.cuda.device_twin``). They use ``math``'s functions, which both targets compile, and
take their constants in the arrays' dtype. The step counts are not advanced here but by the
loop that calls the optimizers, once per update, on both targets (``kernels.network.apply_optimizers``,
``cuda.optimizers.optimizer_step``).

One departure: no state is ever a denormal number. A decaying state (momentum, Adam's
moments, RMSprop's average) that falls below the smallest normal number of its dtype is stored
as zero, and a gradient so small that its square would be denormal (|g| below
sqrt(tiny / (1 - beta2)), about 3e-18 in float32) counts as zero in Adam, RMSprop and Adagrad
(SIMD code computes both sides of a select, so the input is cleared before it is squared). A
parameter whose gradient is zero at every step (the weights of MNIST's always-blank border
pixels) would otherwise have its moments decay into denormals within about 800 steps, and Intel
cores compute with denormals some 25-60x slower: Adam over 84,060 such parameters took 2,576 µs
instead of 43 µs, and with gradients of 1e-22, 1,047 µs. torch keeps the denormals; what they
would add to an update is below the rounding of any parameter larger than about 1e-30.

The loops are serial. A parallel build ran Adam over the wide network's 1.86M parameters in
0.64 ms instead of 1.15 ms, but its OpenMP threads then spin and take the cores from the
BLAS threads of the next matrix product (784-256-256-10 trained at 28k instead of 74k
samples/s), and using GNU OpenMP at all breaks fork-based process pools in the user's program.
"""
import math

import numpy as np
from numba import prange

from ..config import PARALLEL_ALIGN, PARALLEL_MIN_ELEMENTS, kernel
from .parallel import block_count

SGD, ADAM, RMSPROP, ADAGRAD, ADAMW = range(5)

# Layout of an optimizer's hyper-parameter vector, as passed to ``optimizer_step``. H_CLIP* are
# its gradient clipping (0: off), applied by ``clip_global_norms`` and ``clip_gradients`` before
# the update. H_CLIP_GROUP: slices of the flat buffers with one nonzero value belong to one
# optimizer (non-trained values, such as BatchNorm's statistics, split an optimizer's
# parameters into several slices), whose global_clipnorm takes the norm over all of them; 0: a
# slice alone. From H_SCHEDULE on, its learning-rate schedule (``kernels.schedules``; kind
# CONSTANT: H_LR as is): N_HYPER columns at least, more for a PiecewiseConstantDecay's
# boundaries and values.
H_LR, H_1, H_2, H_EPS, H_FLAG, H_DECAY, H_CLIPNORM, H_GLOBAL_CLIPNORM, H_CLIPVALUE, H_CLIP_GROUP, H_SCHEDULE = \
    range(11)
N_HYPER = H_SCHEDULE + 8
assert (H_GLOBAL_CLIPNORM, H_CLIPVALUE) == (H_CLIPNORM + 1, H_CLIPNORM + 2)  # any_clipping's slice
# torch.nn.utils.clip_grad_norm_'s guard: scale = max_norm / (total_norm + 1e-6).
GLOBAL_CLIPNORM_EPSILON = 1e-6


def any_clipping(opt_hyper):
    """Whether any optimizer of the (S, >= N_HYPER) hyper-parameter table clips its gradients
    (the backends leave the clipping stage out of a step otherwise)."""
    hyper = np.asarray(opt_hyper, dtype=np.float64)
    # The three clipping columns are adjacent: a slice, not a fancy index (train_on_batch runs this per call).
    return bool(hyper.size) and bool((hyper[:, H_CLIPNORM:H_CLIPVALUE + 1] > 0).any())


# ---- the update rules, one element at a time ----------------------------------------------------
# ``*_update(..., i, ...)`` updates element i of flat arrays in place: the ``*_step`` kernels below
# loop it over a slice, and ``fastnn.cuda.optimizers`` compiles it for one thread per element.
# Hyper-parameters come in the arrays' dtype, cast once by the caller; the float64 factors that
# change with the step come from ``adam_factors`` and ``square_underflow``.

@kernel(inline=True)
def square_underflow(tiny, decay):
    """The |g| below which (1 - decay) g² is denormal, float64 (decay 0: Adagrad's g²)."""
    return math.sqrt(tiny / (1.0 - decay))


@kernel(inline=True)
def sgd_update(params, grads, velocity, i, lr, momentum, nesterov, tiny):
    """torch.optim.SGD(lr, momentum, dampening=0, nesterov) on element i; ``velocity`` untouched at momentum 0."""
    g = grads[i]
    if momentum != 0:
        v = momentum * velocity[i] + g
        v = params.dtype.type(0) if abs(v) < tiny else v  # NaN stays NaN
        velocity[i] = v
        g = g + momentum * v if nesterov else v
    params[i] -= lr * g


@kernel(inline=True)
def adam_factors(lr, beta1, beta2, step, weight_decay):
    """Adam's float64 factors at ``step`` (from 1): (lr / (1 - b1^t), 1 / sqrt(1 - b2^t), AdamW's
    decoupled decay 1 - lr * weight_decay, exactly 1 at weight_decay 0)."""
    return lr / (1.0 - beta1 ** step), 1.0 / math.sqrt(1.0 - beta2 ** step), 1.0 - lr * weight_decay


@kernel(inline=True)
def adam_update(params, grads, m, v, i, b1, b2, eps, step_size, inv_sqrt_bc2, decay, g_small, tiny):
    """torch.optim.Adam / AdamW on element i, with ``adam_factors``' step_size, inv_sqrt_bc2, decay."""
    t = params.dtype.type
    one, zero = t(1), t(0)
    g = grads[i]
    g = zero if abs(g) < g_small else g  # NaN stays NaN
    mi = b1 * m[i] + (one - b1) * g
    vi = b2 * v[i] + (one - b2) * g * g
    mi = zero if abs(mi) < tiny else mi  # NaN stays NaN
    vi = zero if vi < tiny else vi
    m[i] = mi
    v[i] = vi
    params[i] = params[i] * decay - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)


@kernel(inline=True)
def rmsprop_update(params, grads, square_avg, i, lr, rho, eps, g_small, tiny):
    """torch.optim.RMSprop(lr, alpha=rho, eps) on element i."""
    t = params.dtype.type
    g = grads[i]
    g = t(0) if abs(g) < g_small else g
    s = rho * square_avg[i] + (t(1) - rho) * g * g
    s = t(0) if s < tiny else s
    square_avg[i] = s
    params[i] -= lr * g / (math.sqrt(s) + eps)


@kernel(inline=True)
def adagrad_update(params, grads, sum_sq, i, lr, eps, g_small):
    """torch.optim.Adagrad(lr, eps, initial_accumulator_value, lr_decay=0) on element i."""
    g = grads[i]
    g = params.dtype.type(0) if abs(g) < g_small else g
    s = sum_sq[i] + g * g
    sum_sq[i] = s
    params[i] -= lr * g / (math.sqrt(s) + eps)


# ---- the steps over a slice -----------------------------------------------------------------

# Each optimizer's loop compiles as a function of its own, not inlined into optimizer_step: with all
# four loops in one function, LLVM left SGD's unvectorized at 27 ns an element (2.3 ms instead of
# 16 us for the seed network's 84,060 parameters), while each pair of them compiled fine.
@kernel
def sgd_step(params, grads, velocity, lr, momentum, nesterov):
    """torch.optim.SGD(lr, momentum, dampening=0, nesterov): v = m v + g; p -= lr (g + m v if nesterov else v).

    With momentum 0, p -= lr g and ``velocity`` is untouched. The first step gives v = g, as
    torch's buffer initialised from the first gradient, since ``velocity`` starts at zero.
    """
    t = params.dtype.type
    lr_, m, tiny = t(lr), t(momentum), t(np.finfo(params.dtype).tiny)
    for i in range(params.size):
        sgd_update(params, grads, velocity, i, lr_, m, nesterov, tiny)


@kernel
def adam_step(params, grads, m, v, lr, beta1, beta2, eps, step, weight_decay):
    """torch.optim.Adam (Kingma & Ba, Algorithm 1): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), ``step`` = t counting from 1.

    With ``weight_decay`` > 0 it is torch.optim.AdamW (Loshchilov & Hutter's decoupled weight
    decay): p *= 1 - lr * weight_decay first, then the same update. At 0 the factor is exactly 1.
    """
    t = params.dtype.type
    tiny = np.finfo(params.dtype).tiny
    step_size, inv_sqrt_bc2, decay = adam_factors(lr, beta1, beta2, step, weight_decay)
    b1, b2, eps_, step_size_, inv_sqrt_bc2_, decay_ = t(beta1), t(beta2), t(eps), t(step_size), t(inv_sqrt_bc2), \
        t(decay)
    g_small, tiny_ = t(square_underflow(tiny, beta2)), t(tiny)
    for i in range(params.size):
        adam_update(params, grads, m, v, i, b1, b2, eps_, step_size_, inv_sqrt_bc2_, decay_, g_small, tiny_)


@kernel
def rmsprop_step(params, grads, square_avg, lr, rho, eps):
    """torch.optim.RMSprop(lr, alpha=rho, eps): s = rho s + (1-rho) g²; p -= lr g / (sqrt(s) + eps)."""
    t = params.dtype.type
    tiny = np.finfo(params.dtype).tiny
    lr_, rho_, eps_, g_small, tiny_ = t(lr), t(rho), t(eps), t(square_underflow(tiny, rho)), t(tiny)
    for i in range(params.size):
        rmsprop_update(params, grads, square_avg, i, lr_, rho_, eps_, g_small, tiny_)


@kernel
def adagrad_step(params, grads, sum_sq, lr, eps):
    """torch.optim.Adagrad(lr, eps, initial_accumulator_value, lr_decay=0): s += g²; p -= lr g / (sqrt(s) + eps).

    ``sum_sq`` starts at initial_accumulator_value (set by the caller)."""
    t = params.dtype.type
    lr_, eps_, g_small = t(lr), t(eps), t(square_underflow(np.finfo(params.dtype).tiny, 0.0))
    for i in range(params.size):
        adagrad_update(params, grads, sum_sq, i, lr_, eps_, g_small)


# ---- gradient clipping ------------------------------------------------------------------------

@kernel(inline=True)
def clipnorm_scale(square_sum, clipnorm):
    """Keras' clip_by_norm factor c / max(norm, c) for a tensor whose squares sum (float64) to
    ``square_sum``: 1 when the norm is within c, or NaN, so that NaN stays visible."""
    norm = math.sqrt(square_sum)
    return clipnorm / norm if norm > clipnorm else 1.0


@kernel(inline=True)
def global_clipnorm_scale(square_sum, clipnorm):
    """torch.nn.utils.clip_grad_norm_'s factor min(1, c / (norm + 1e-6)) over all of an optimizer's
    gradients, whose squares sum (float64) to ``square_sum``; 1 when the norm is NaN."""
    coef = clipnorm / (math.sqrt(square_sum) + GLOBAL_CLIPNORM_EPSILON)
    return coef if coef < 1.0 else 1.0


@kernel(inline=True)
def clip_value(g, c):
    """g clamped to [-c, c] (torch.nn.utils.clip_grad_value_); NaN stays NaN."""
    return c if g > c else (-c if g < -c else g)


@kernel(inline=True)
def in_clip_group(opt_hyper, s, u):
    """Whether slice ``u`` belongs to slice ``s``'s optimizer (``H_CLIP_GROUP``)."""
    group = opt_hyper[s, H_CLIP_GROUP]
    return u == s or (group != 0.0 and opt_hyper[u, H_CLIP_GROUP] == group)


@kernel(inline=True)
def clip_global_norms(grads, opt_meta, opt_hyper):
    """Every optimizer's ``global_clipnorm`` over all of its slices of the flat buffers
    (``opt_meta`` rows [start, stop, kind] of one ``H_CLIP_GROUP``), as
    torch.nn.utils.clip_grad_norm_ over all its parameters: g * min(1, c / (norm + 1e-6)), the
    norm summed in float64 before any slice is scaled. Run before ``clip_gradients``, which
    leaves global_clipnorm to it; a NaN norm scales nothing, so NaN stays visible."""
    t = grads.dtype.type
    n = opt_meta.shape[0]
    for s in range(n):
        c = opt_hyper[s, H_GLOBAL_CLIPNORM]
        first = c > 0
        for u in range(s):  # an optimizer's slices are clipped together, at its first
            if in_clip_group(opt_hyper, s, u):
                first = False
        if not first:
            continue
        square_sum = 0.0
        for u in range(s, n):
            if in_clip_group(opt_hyper, s, u):
                g = grads[opt_meta[u, 0]:opt_meta[u, 1]]
                for i in range(g.size):
                    square_sum += np.float64(g[i]) * np.float64(g[i])
        coef = global_clipnorm_scale(square_sum, c)
        if coef < 1.0:
            scale = t(coef)
            for u in range(s, n):
                if in_clip_group(opt_hyper, s, u):
                    g = grads[opt_meta[u, 0]:opt_meta[u, 1]]
                    for i in range(g.size):
                        g[i] *= scale


@kernel(inline=True)
def clip_gradients(grads, lo, hi, tensors, hyper):
    """Clip the gradients of one optimizer's slice [lo, hi), in Keras' order, after
    ``clip_global_norms`` (global_clipnorm, exclusive with clipnorm): ``clipnorm`` per weight
    tensor (rows [start, stop) of ``tensors`` inside the slice; keras' clip_by_norm:
    g * c / max(norm, c)); then ``clipvalue`` (clamp to [-c, c],
    torch.nn.utils.clip_grad_value_). Each is off at 0. Norms are summed in float64; a NaN
    norm scales nothing, so NaN stays visible."""
    t = grads.dtype.type
    clipnorm, clipvalue = hyper[H_CLIPNORM], hyper[H_CLIPVALUE]
    # Loops over slice views, not over grads[i] for i in range(lo, hi): LLVM vectorizes these
    # (the same change made the weight penalty 36x faster).
    if clipnorm > 0:
        for k in range(tensors.shape[0]):
            a, b = tensors[k, 0], tensors[k, 1]
            if a >= lo and b <= hi:
                g = grads[a:b]
                square_sum = 0.0
                for i in range(g.size):
                    square_sum += np.float64(g[i]) * np.float64(g[i])
                coef = clipnorm_scale(square_sum, clipnorm)
                if coef < 1.0:
                    scale = t(coef)
                    for i in range(g.size):
                        g[i] *= scale
    if clipvalue > 0:
        c = t(clipvalue)
        g = grads[lo:hi]
        for i in range(g.size):
            g[i] = clip_value(g[i], c)


@kernel
def optimizer_step(kind, params, grads, state1, state2, hyper, step, parallel=None):
    """One update of optimizer ``kind`` over matching flat slices; ``hyper`` laid out as H_*.

    state1/state2: SGD velocity/unused, Adam and AdamW m/v, RMSprop square_avg/unused, Adagrad sum/unused.
    ``parallel``: None, or True for Adam's parallel pass above ``PARALLEL_MIN_ELEMENTS`` (only in a
    parallel build: ``config.parallel_optimizer``). None compiles the parallel kernel out.
    """
    lr, h1, h2, eps, flag = hyper[H_LR], hyper[H_1], hyper[H_2], hyper[H_EPS], hyper[H_FLAG]
    if kind == SGD:
        sgd_step(params, grads, state1, lr, h1, flag != 0)
    elif kind == ADAM or kind == ADAMW:
        decay = hyper[H_DECAY] if kind == ADAMW else 0.0
        if parallel is None:  # (Numba prunes a branch only on a plain ``is None`` test)
            adam_step(params, grads, state1, state2, lr, h1, h2, eps, step, decay)
        elif params.size >= PARALLEL_MIN_ELEMENTS:
            adam_step_parallel(params, grads, state1, state2, lr, h1, h2, eps, step, decay)
        else:
            adam_step(params, grads, state1, state2, lr, h1, h2, eps, step, decay)
    elif kind == RMSPROP:
        rmsprop_step(params, grads, state1, lr, h1, eps)
    elif kind == ADAGRAD:
        adagrad_step(params, grads, state1, lr, eps)
    else:
        raise ValueError("unknown optimizer code")


@kernel(parallel=True)
def adam_step_parallel(params, grads, m, v, lr, beta1, beta2, eps, step, weight_decay):
    """``adam_step`` on one block of the slices per thread: an element's update reads only that
    element, so the result is ``adam_step``'s, bit for bit. Adam and AdamW only: the largest
    serial pass of a step (SGD's loop is a few times cheaper), and each parallel build costs
    about a second of every cold start."""
    n = params.size
    chunks = min(block_count(), n // PARALLEL_ALIGN)
    if chunks < 2:  # set_num_threads(1): no launch (a TBB launch of one block ran 5-10% slower)
        adam_step(params, grads, m, v, lr, beta1, beta2, eps, step, weight_decay)
        return
    size = ((n + chunks - 1) // chunks + PARALLEL_ALIGN - 1) // PARALLEL_ALIGN * PARALLEL_ALIGN
    for c in prange(chunks):
        lo, hi = min(c * size, n), min(c * size + size, n)
        adam_step(params[lo:hi], grads[lo:hi], m[lo:hi], v[lo:hi], lr, beta1, beta2, eps, step, weight_decay)
