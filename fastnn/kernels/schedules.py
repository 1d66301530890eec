"""Learning-rate schedules evaluated at every step inside the training step: ``learning_rate_at``.

An optimizer's hyper-parameter row (``kernels.optimizers``, layout ``H_*``) holds its schedule
from column ``H_SCHEDULE`` on: [kind, initial learning rate, p1, p2, p3, p4, n, boundaries (n),
values (n + 1)]. ``step`` is the number of updates made before this one (Keras'
``optimizer.iterations``, from 0). The formulas are Keras' (``keras.optimizers.schedules``).
The same Python source is compiled for the CPU and, as device functions, for CUDA
(``fastnn.cuda.optimizers``), so both devices use the same rates; an unknown kind raises here
and is refused on the host before a CUDA launch (``fastnn.cuda.backend``), since device code cannot raise.
"""
import math

from ..config import kernel

CONSTANT, EXPONENTIAL_DECAY, INVERSE_TIME_DECAY, PIECEWISE_CONSTANT_DECAY, COSINE_DECAY = range(5)
# Offsets within a schedule, from its first column.
S_KIND, S_INITIAL, S_1, S_2, S_3, S_4, S_N, S_TABLE = range(8)


@kernel(inline=True)
def learning_rate_at(hyper, start, step):
    """The learning rate for update number ``step`` (from 0) of the schedule at hyper[start:]."""
    kind = int(hyper[start + S_KIND])
    initial = hyper[start + S_INITIAL]
    s = float(step)
    if kind == EXPONENTIAL_DECAY or kind == INVERSE_TIME_DECAY:
        # p1 decay_steps, p2 decay_rate, p3 staircase (0/1)
        p = s / hyper[start + S_1]
        if hyper[start + S_3] != 0.0:
            p = math.floor(p)
        if kind == EXPONENTIAL_DECAY:
            return initial * hyper[start + S_2] ** p
        return initial / (1.0 + hyper[start + S_2] * p)
    if kind == PIECEWISE_CONSTANT_DECAY:
        n = int(hyper[start + S_N])
        for i in range(n):
            if s <= hyper[start + S_TABLE + i]:
                return hyper[start + S_TABLE + n + i]
        return hyper[start + S_TABLE + n + n]
    if kind == COSINE_DECAY:
        # p1 decay_steps, p2 alpha, p3 warmup_steps, p4 warmup_target (NaN: none)
        decay_steps, alpha, warmup_steps, target = hyper[start + S_1], hyper[start + S_2], hyper[start + S_3], \
            hyper[start + S_4]
        peak = initial
        if target == target:  # a warmup target is set
            if s < warmup_steps:
                return initial + (target - initial) * (s / warmup_steps)
            s = max(s - warmup_steps, 0.0)
            peak = target
        s = min(s, decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * s / decay_steps))
        return peak * ((1.0 - alpha) * cosine + alpha)
    if kind == CONSTANT:
        return initial
    raise ValueError("unknown learning-rate schedule code")
