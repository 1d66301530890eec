"""Learning-rate schedules, as Keras' (``keras.optimizers.schedules``): pass one as any
optimizer's ``learning_rate`` and the rate is evaluated at every step inside the compiled
training step (``fastnn.kernels.schedules``), from the optimizer's update count (Keras'
``optimizer.iterations``: 0 at the first update). ``schedule(step)`` gives the rate in Python.

The ``LearningRateScheduler`` callback, which sets a plain learning rate once per epoch, keeps
working for optimizers whose rate is a number.
"""
import math

import numpy as np

from .base import Configurable
from .kernels import schedules as K
from .validation import check_float, check_int


class LearningRateSchedule(Configurable):
    """Base class: ``row()`` is the schedule as the kernels read it, ``__call__(step)`` the rate."""
    kind = K.CONSTANT

    def row(self):
        """[kind, initial, p1, p2, p3, p4, n, boundaries (n), values (n + 1)] (float64)."""
        return np.array([self.kind, self.initial_learning_rate, *self._params(), 0.0], dtype=np.float64)

    def _params(self):
        return (0.0, 0.0, 0.0, 0.0)

    def __call__(self, step):
        step = check_int(step, "step", minimum=0)
        row = self.row()
        return float(K.learning_rate_at(row, 0, step))


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps); with ``staircase`` the exponent
    is rounded down (keras.optimizers.schedules.ExponentialDecay)."""
    kind = K.EXPONENTIAL_DECAY

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = check_float(initial_learning_rate, "initial_learning_rate", minimum=0.0)
        self.decay_steps = check_float(decay_steps, "decay_steps", minimum=0.0, min_inclusive=False)
        self.decay_rate = check_float(decay_rate, "decay_rate", minimum=0.0)
        self.staircase = _check_bool(staircase, "staircase")

    def _params(self):
        return (self.decay_steps, self.decay_rate, float(self.staircase), 0.0)


class InverseTimeDecay(ExponentialDecay):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps); with ``staircase`` the ratio
    step / decay_steps is rounded down (keras.optimizers.schedules.InverseTimeDecay)."""
    kind = K.INVERSE_TIME_DECAY


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] up to step boundaries[0], values[i] for boundaries[i-1] < step <= boundaries[i],
    values[-1] after the last boundary (keras.optimizers.schedules.PiecewiseConstantDecay)."""
    kind = K.PIECEWISE_CONSTANT_DECAY

    def __init__(self, boundaries, values):
        if not isinstance(boundaries, (list, tuple)) or not isinstance(values, (list, tuple)):
            raise TypeError("boundaries and values must be lists of numbers")
        self.boundaries = [check_float(b, "boundaries") for b in boundaries]
        self.values = [check_float(v, "values", minimum=0.0) for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"values must hold one more entry than boundaries: got {len(self.values)} values "
                             f"for {len(self.boundaries)} boundaries")
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must be strictly increasing, got {self.boundaries}")

    @property
    def initial_learning_rate(self):
        return self.values[0]

    def row(self):
        return np.array([self.kind, self.values[0], 0.0, 0.0, 0.0, 0.0, len(self.boundaries), *self.boundaries,
                         *self.values], dtype=np.float64)


class CosineDecay(LearningRateSchedule):
    """Cosine decay from initial_learning_rate (or, after ``warmup_steps`` of linear warmup, from
    ``warmup_target``) to alpha times it over ``decay_steps``, then constant
    (keras.optimizers.schedules.CosineDecay; no warmup unless ``warmup_target`` is given)."""
    kind = K.COSINE_DECAY

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
        self.initial_learning_rate = check_float(initial_learning_rate, "initial_learning_rate", minimum=0.0)
        self.decay_steps = check_float(decay_steps, "decay_steps", minimum=0.0, min_inclusive=False)
        self.alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0)
        self.warmup_target = None if warmup_target is None else check_float(warmup_target, "warmup_target",
                                                                            minimum=0.0)
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", minimum=0)
        if self.warmup_target is not None and self.warmup_steps == 0:
            raise ValueError("warmup_target needs warmup_steps > 0")

    def _params(self):
        return (self.decay_steps, self.alpha, float(self.warmup_steps),
                math.nan if self.warmup_target is None else self.warmup_target)


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)
