"""CUDA twin of ``fastnn.kernels.optimizers``: every optimizer over the flat buffer in one launch.

One thread per parameter finds which optimizer's slice it is in (``meta`` rows [start, stop,
kind], as ``opt_meta`` on the CPU; a model has a handful) and applies that optimizer's
update with the CPU kernel's formula operation for operation (the PyTorch rule each CPU
docstring names). Step counts and hyper-parameters are read from device memory, so a
captured graph replays correctly after a learning-rate change, and no update is applied
once a batch's loss was not finite (``control[C_BAD]``), as the CPU loop stops there.
"""
import math
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels.optimizers import (ADAGRAD, ADAM, ADAMW, GLOBAL_CLIPNORM_EPSILON, H_1, H_2,  # noqa: F401
                                  H_CLIP_GROUP, H_CLIPNORM, H_CLIPVALUE, H_DECAY, H_EPS, H_FLAG, H_GLOBAL_CLIPNORM, H_LR,
                                  H_SCHEDULE, RMSPROP, SGD)
from ..kernels import schedules as cpu_schedules
from ..kernels.schedules import CONSTANT
from . import C_BAD, REDUCE_THREADS, blocks, device_twin, kernel, launch
from .metrics import block_sum

learning_rate_at = device_twin(cpu_schedules.learning_rate_at)


@kernel(device=True)
def slice_of(i, meta, n_segments):
    """The optimizer slice (row of ``meta``, sorted by start) holding element ``i``, or -1."""
    s = 0
    while s < n_segments - 1 and i >= meta[s, 1]:
        s += 1
    return s if meta[s, 0] <= i < meta[s, 1] else -1


@kernel(device=True)
def active_slice(i, size, meta, n_segments, control):
    """``slice_of`` element ``i`` of a flat buffer of ``size``, or -1 when there is nothing to do
    there: past the end, in no slice, or after a batch whose loss was not finite (control[C_BAD])."""
    if i >= size or control[C_BAD] >= 0:
        return -1
    return slice_of(i, meta, n_segments)


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))
    ZERO, ONE = T(0), T(1)
    # States below the smallest normal number are stored as zero, as on the CPU (kernels.optimizers).
    TINY64 = float(np.finfo(np.dtype(dtype)).tiny)
    TINY = T(TINY64)

    @kernel
    def optimizer_step_elements(params, grads, state1, state2, meta, hyper, steps, n_segments, control):
        i = cuda.grid(1)
        s = active_slice(i, params.size, meta, n_segments, control)
        if s < 0:
            return
        kind = meta[s, 2]
        # steps[s] already counts this update (the loss kernel advanced it): the schedule's step is one less.
        lr = hyper[s, H_LR]
        if hyper[s, H_SCHEDULE] != CONSTANT:
            lr = learning_rate_at(hyper[s], H_SCHEDULE, steps[s] - 1)
        g = grads[i]
        if kind == SGD:  # torch.optim.SGD(lr, momentum, dampening=0, nesterov)
            m = T(hyper[s, H_1])
            if m != ZERO:
                v = m * state1[i] + g
                v = ZERO if abs(v) < TINY else v
                state1[i] = v
                g = g + m * v if hyper[s, H_FLAG] != 0.0 else v
            params[i] -= T(lr) * g
        elif kind == ADAM or kind == ADAMW:  # torch.optim.Adam, torch.optim.AdamW
            decay = T(1.0 - lr * hyper[s, H_DECAY]) if kind == ADAMW else ONE
            beta1 = hyper[s, H_1]
            beta2 = hyper[s, H_2]
            step = steps[s]
            b1 = T(beta1)
            b2 = T(beta2)
            step_size = T(lr / (1.0 - beta1 ** step))
            inv_sqrt_bc2 = T(1.0 / math.sqrt(1.0 - beta2 ** step))
            g = ZERO if abs(g) < T(math.sqrt(TINY64 / (1.0 - beta2))) else g
            mi = b1 * state1[i] + (ONE - b1) * g
            vi = b2 * state2[i] + (ONE - b2) * g * g
            mi = ZERO if abs(mi) < TINY else mi
            vi = ZERO if vi < TINY else vi
            state1[i] = mi
            state2[i] = vi
            params[i] = params[i] * decay - step_size * mi / (math.sqrt(vi) * inv_sqrt_bc2 + T(hyper[s, H_EPS]))
        elif kind == RMSPROP:  # torch.optim.RMSprop(lr, alpha=rho, eps)
            rho = T(hyper[s, H_1])
            g = ZERO if abs(g) < T(math.sqrt(TINY64 / (1.0 - hyper[s, H_1]))) else g
            sq = rho * state1[i] + (ONE - rho) * g * g
            sq = ZERO if sq < TINY else sq
            state1[i] = sq
            params[i] -= T(lr) * g / (math.sqrt(sq) + T(hyper[s, H_EPS]))
        else:  # torch.optim.Adagrad(lr, eps, initial_accumulator_value)
            g = ZERO if abs(g) < T(math.sqrt(TINY64)) else g
            sq = state1[i] + g * g
            state1[i] = sq
            params[i] -= T(lr) * g / (math.sqrt(sq) + T(hyper[s, H_EPS]))

    @kernel
    def tensor_square_sums(grads, tensors, sums):
        """sums[k] = sum of grads² over tensor k (float64): one block per tensor."""
        part = cuda.shared.array(REDUCE_THREADS, numba.float64)
        k = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        acc = 0.0
        for i in range(tensors[k, 0] + tid, tensors[k, 1], cuda.blockDim.x):
            g = numba.float64(grads[i])
            acc += g * g
        part[tid] = acc
        block_sum(part)
        if tid == 0:
            sums[k] = part[0]

    @kernel
    def clip_elements(grads, meta, hyper, n_segments, tensors, n_tensors, sums, control):
        """``kernels.optimizers.clip_gradients`` for every slice at once, from ``sums``."""
        i = cuda.grid(1)
        s = active_slice(i, grads.size, meta, n_segments, control)
        if s < 0:
            return
        lo, hi = meta[s, 0], meta[s, 1]
        g = grads[i]
        clipnorm, global_clipnorm, clipvalue = hyper[s, H_CLIPNORM], hyper[s, H_GLOBAL_CLIPNORM], hyper[s, H_CLIPVALUE]
        if clipnorm > 0.0:
            for k in range(n_tensors):
                if tensors[k, 0] <= i < tensors[k, 1] and tensors[k, 0] >= lo and tensors[k, 1] <= hi:
                    norm = math.sqrt(sums[k])
                    if norm > clipnorm:
                        g = g * T(clipnorm / norm)
        elif global_clipnorm > 0.0:
            # Over every slice of this optimizer (``kernels.optimizers.in_clip_group``).
            group = hyper[s, H_CLIP_GROUP]
            total = 0.0
            for u in range(n_segments):
                if u == s or (group != 0.0 and hyper[u, H_CLIP_GROUP] == group):
                    for k in range(n_tensors):
                        if tensors[k, 0] >= meta[u, 0] and tensors[k, 1] <= meta[u, 1]:
                            total += sums[k]
            coef = global_clipnorm / (math.sqrt(total) + GLOBAL_CLIPNORM_EPSILON)
            if coef < 1.0:
                g = g * T(coef)
        if clipvalue > 0.0:
            c = T(clipvalue)
            g = c if g > c else (-c if g < -c else g)
        grads[i] = g

    return SimpleNamespace(optimizer_step_elements=optimizer_step_elements, tensor_square_sums=tensor_square_sums,
                           clip_elements=clip_elements)


def clip_gradients(grads, meta, hyper, tensors, n_tensors, sums, control, plan=None):
    """Every optimizer's gradient clipping (``hyper``'s H_CLIP* columns) over the flat device
    gradients, as ``kernels.optimizers.clip_gradients``: each tensor's sum of squares (rows of
    ``tensors``, float64 into ``sums``), then one thread per element scales and clamps."""
    k = kernels(np.dtype(grads.dtype).name)
    launch(plan, k.tensor_square_sums, int(n_tensors), REDUCE_THREADS, grads, tensors, sums)
    launch(plan, k.clip_elements, *blocks(grads.size), grads, meta, hyper, meta.shape[0], tensors, int(n_tensors),
           sums, control)


def optimizer_step(params, grads, state1, state2, meta, hyper, steps, control, plan=None):
    """One update of every optimizer on its slice of the flat device buffers.

    meta int64 (S, 3) [start, stop, kind] sorted by start; hyper float64 (S, N_HYPER); steps
    int64 (S,), the step each optimizer is at (counting from 1, as ``kernels.optimizers``);
    state1/state2 as there. Skipped entirely while ``control[C_BAD]`` >= 0.
    """
    launch(plan, kernels(np.dtype(params.dtype).name).optimizer_step_elements, *blocks(params.size),
           params, grads, state1, state2, meta, hyper, steps, meta.shape[0], control)
