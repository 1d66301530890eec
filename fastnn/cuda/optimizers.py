"""CUDA twin of ``fastnn.kernels.optimizers``: every optimizer over the flat buffer in one launch.

The update rules are not rewritten here: ``sgd_update``, ``adam_update``, ``rmsprop_update``,
``adagrad_update``, their factors (``adam_factors``, ``square_underflow``), the clipping factors
and the learning-rate schedules are the CPU kernels' own Python source, compiled as device
functions (``fastnn.cuda.device_twin``). One thread per parameter finds which optimizer's slice
it is in (``meta`` rows [start, stop, kind], as ``opt_meta`` on the CPU; a model has a handful),
casts that optimizer's hyper-parameters to the arrays' dtype as the CPU step does, and applies
its rule to its element. Step counts and hyper-parameters are read from device memory, so a
captured graph replays correctly after a learning-rate change; the step counts advance here, in
``optimizer_step``, as they do on the CPU in the loop that calls the optimizers
(``kernels.network.apply_optimizers``); no update is applied, nor step counted, once a batch's
loss was not finite (``control[C_BAD]``), as the CPU loop stops there.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import optimizers as cpu
from ..kernels import schedules as cpu_schedules
from ..kernels.optimizers import (ADAGRAD, ADAM, ADAMW, H_1, H_2, H_CLIPNORM, H_CLIPVALUE,  # noqa: F401
                                  H_DECAY, H_EPS, H_FLAG, H_GLOBAL_CLIPNORM, H_LR, H_SCHEDULE, RMSPROP, SGD)
from ..kernels.schedules import CONSTANT
from . import C_BAD, REDUCE_THREADS, blocks, device_twin, kernel, launch, reduce_threads
from .metrics import block_sum

learning_rate_at = device_twin(cpu_schedules.learning_rate_at)
square_underflow = device_twin(cpu.square_underflow)
adam_factors = device_twin(cpu.adam_factors)
sgd_update = device_twin(cpu.sgd_update)
adam_update = device_twin(cpu.adam_update)
rmsprop_update = device_twin(cpu.rmsprop_update)
adagrad_update = device_twin(cpu.adagrad_update)
in_clip_group = device_twin(cpu.in_clip_group)
clipnorm_scale = device_twin(cpu.clipnorm_scale)
global_clipnorm_scale = device_twin(cpu.global_clipnorm_scale)
clip_value = device_twin(cpu.clip_value)


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


@kernel
def advance_steps(steps, n_segments, control):
    """steps[s] += 1 for every optimizer slice, unless a batch's loss was not finite
    (``control[C_BAD]``): the step's update about to run is number steps[s], as on the CPU
    (``kernels.network.apply_optimizers``). A launch of its own, before the update's: the
    update's threads all read the count, and no thread of a launch can know when all others have."""
    s = cuda.grid(1)
    if s < n_segments and control[C_BAD] < 0:
        steps[s] += 1


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))
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
        # steps[s] counts this update (``advance_steps``): the schedule's step is one less.
        lr = hyper[s, H_LR]
        if hyper[s, H_SCHEDULE] != CONSTANT:
            lr = learning_rate_at(hyper[s], H_SCHEDULE, steps[s] - 1)
        if kind == SGD:
            sgd_update(params, grads, state1, i, T(lr), T(hyper[s, H_1]), hyper[s, H_FLAG] != 0.0, TINY)
        elif kind == ADAM or kind == ADAMW:
            beta1, beta2 = hyper[s, H_1], hyper[s, H_2]
            step_size, inv_sqrt_bc2, decay = adam_factors(lr, beta1, beta2, steps[s],
                                                          hyper[s, H_DECAY] if kind == ADAMW else 0.0)
            adam_update(params, grads, state1, state2, i, T(beta1), T(beta2), T(hyper[s, H_EPS]), T(step_size),
                        T(inv_sqrt_bc2), T(decay), T(square_underflow(TINY64, beta2)), TINY)
        elif kind == RMSPROP:
            rho = hyper[s, H_1]
            rmsprop_update(params, grads, state1, i, T(lr), T(rho), T(hyper[s, H_EPS]),
                           T(square_underflow(TINY64, rho)), TINY)
        else:
            adagrad_update(params, grads, state1, i, T(lr), T(hyper[s, H_EPS]), T(square_underflow(TINY64, 0.0)))

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
                    coef = clipnorm_scale(sums[k], clipnorm)
                    if coef < 1.0:
                        g = g * T(coef)
        elif global_clipnorm > 0.0:  # over every slice of this optimizer
            total = 0.0
            for u in range(n_segments):
                if in_clip_group(hyper, s, u):
                    for k in range(n_tensors):
                        if tensors[k, 0] >= meta[u, 0] and tensors[k, 1] <= meta[u, 1]:
                            total += sums[k]
            coef = global_clipnorm_scale(total, global_clipnorm)
            if coef < 1.0:
                g = g * T(coef)
        if clipvalue > 0.0:
            g = clip_value(g, T(clipvalue))
        grads[i] = g

    return SimpleNamespace(optimizer_step_elements=optimizer_step_elements, tensor_square_sums=tensor_square_sums,
                           clip_elements=clip_elements)


def clip_gradients(grads, meta, hyper, tensors, n_tensors, longest, sums, control, plan=None):
    """Every optimizer's gradient clipping (``hyper``'s H_CLIP* columns) over the flat device
    gradients, as ``kernels.optimizers.clip_gradients``: each tensor's sum of squares (rows of
    ``tensors``, the largest ``longest`` elements; float64 into ``sums``), then one thread per
    element scales and clamps."""
    k = kernels(np.dtype(grads.dtype).name)
    launch(plan, k.tensor_square_sums, int(n_tensors), reduce_threads(longest), grads, tensors, sums)
    launch(plan, k.clip_elements, *blocks(grads.size), grads, meta, hyper, meta.shape[0], tensors, int(n_tensors),
           sums, control)


def optimizer_step(params, grads, state1, state2, meta, hyper, steps, control, plan=None):
    """One update of every optimizer on its slice of the flat device buffers, its step count
    advanced first, as ``kernels.network.apply_optimizers`` does on the CPU.

    meta int64 (S, 3) [start, stop, kind] sorted by start; hyper float64 (S, N_HYPER); steps
    int64 (S,), the updates each optimizer has made (+1 here: the update runs at step steps[s],
    counting from 1, as ``kernels.optimizers``); state1/state2 as there. Skipped entirely, the
    counts too, while ``control[C_BAD]`` >= 0.
    """
    n_segments = meta.shape[0]
    launch(plan, advance_steps, *blocks(n_segments), steps, n_segments, control)
    launch(plan, kernels(np.dtype(params.dtype).name).optimizer_step_elements, *blocks(params.size),
           params, grads, state1, state2, meta, hyper, steps, n_segments, control)
