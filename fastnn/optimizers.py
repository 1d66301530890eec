"""Optimizers: SGD, Adam, RMSProp, AdaGrad, with PyTorch's update rules and defaults.

An optimizer object holds hyper-parameters only. Its state (momentum, moment estimates)
is per parameter and lives in the model's flat state buffers, so one object may serve
several layers (as in the seed framework) and a step is one kernel over one array slice.
Changing ``learning_rate`` between epochs (a scheduler callback does) takes effect at the
next epoch.

Every optimizer also takes Keras' gradient clipping, applied to its own parameters before each
update: ``clipnorm`` (each weight tensor's gradient scaled to norm <= clipnorm, Keras'
clip_by_norm), ``global_clipnorm`` (all its gradients together, as
``torch.nn.utils.clip_grad_norm_``: scaled by min(1, c / (norm + 1e-6))) and ``clipvalue``
(each element clamped to [-c, c], ``torch.nn.utils.clip_grad_value_``). None is off; clipnorm
and global_clipnorm exclude each other, as in Keras. ``learning_rate`` may be a schedule
(``fastnn.schedules``), evaluated at every update inside the training step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Configurable, resolve
from .kernels import optimizers as K
from .schedules import LearningRateSchedule
from .validation import check_float


class Optimizer(Configurable):
    kind = K.SGD
    initial_state = 0.0
    clipnorm = global_clipnorm = clipvalue = None

    def _set_clipping(self, clipnorm, global_clipnorm, clipvalue):
        for name, value in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm), ("clipvalue", clipvalue)):
            setattr(self, name, None if value is None else
                    check_float(value, name, minimum=0.0, min_inclusive=False))
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("clipnorm and global_clipnorm cannot both be set (as in Keras): choose one")

    def hyper_parameters(self):
        """The vector that ``kernels.optimizers.optimizer_step`` reads (layout ``H_*``), validated;
        a learning-rate schedule fills the columns from ``H_SCHEDULE`` on."""
        lr = _check_learning_rate(self.learning_rate)
        schedule = lr.row() if isinstance(lr, LearningRateSchedule) else np.zeros(0)
        h = np.zeros(max(K.N_HYPER, K.H_SCHEDULE + schedule.size))
        h[K.H_SCHEDULE: K.H_SCHEDULE + schedule.size] = schedule
        h[K.H_LR] = lr.initial_learning_rate if isinstance(lr, LearningRateSchedule) else lr
        h[K.H_CLIPNORM] = self.clipnorm or 0.0
        h[K.H_GLOBAL_CLIPNORM] = self.global_clipnorm or 0.0
        h[K.H_CLIPVALUE] = self.clipvalue or 0.0
        return h

    def step(self, params, grads, state1, state2, step):
        """Apply one update to the flat arrays ``params`` in place (``step`` counts from 1).

        The model calls the kernels directly; this is for using an optimizer on your own arrays,
        which are clipped (if asked) as one weight tensor.
        """
        hyper = self.hyper_parameters()
        if isinstance(self.learning_rate, LearningRateSchedule):
            hyper[K.H_LR] = self.learning_rate(step - 1)
        K.clip_global_norms(grads, np.array([[0, grads.size, self.kind]], dtype=np.int64), hyper.reshape(1, -1))
        K.clip_gradients(grads, 0, grads.size, np.array([[0, grads.size]], dtype=np.int64), hyper)
        K.optimizer_step(self.kind, params, grads, state1, state2, hyper, step)


class SGD(Optimizer):
    """torch.optim.SGD(lr, momentum, nesterov) with dampening 0:
    v = momentum v + g; p -= lr (g + momentum v if nesterov else v); momentum 0 gives p -= lr g."""
    kind = K.SGD

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        self._set_clipping(clipnorm, global_clipnorm, clipvalue)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0, max_inclusive=False)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0 (as torch.optim.SGD)")
        self.nesterov = bool(nesterov)

    def hyper_parameters(self):
        h = super().hyper_parameters()
        h[K.H_1], h[K.H_FLAG] = self.momentum, float(self.nesterov)
        return h


class Adam(Optimizer):
    """torch.optim.Adam(lr, betas=(beta_1, beta_2), eps=epsilon), Kingma & Ba's Algorithm 1 with
    bias correction: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    kind = K.ADAM

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        self._set_clipping(clipnorm, global_clipnorm, clipvalue)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.beta_1 = check_float(beta_1, "beta_1", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.beta_2 = check_float(beta_2, "beta_2", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)

    def hyper_parameters(self):
        h = super().hyper_parameters()
        h[K.H_1], h[K.H_2], h[K.H_EPS] = self.beta_1, self.beta_2, self.epsilon
        return h


class AdamW(Adam):
    """torch.optim.AdamW(lr, betas=(beta_1, beta_2), eps=epsilon, weight_decay) (Loshchilov &
    Hutter, decoupled weight decay): p *= 1 - lr * weight_decay, then Adam's update. Defaults are
    PyTorch's (weight_decay 0.01)."""
    kind = K.ADAMW

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8,
                 weight_decay: float = 0.01, clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, clipnorm, global_clipnorm, clipvalue)
        self.weight_decay = check_float(weight_decay, "weight_decay", minimum=0.0)

    def hyper_parameters(self):
        h = super().hyper_parameters()
        h[K.H_DECAY] = self.weight_decay
        return h


class RMSProp(Optimizer):
    """torch.optim.RMSprop(lr, alpha=rho, eps=epsilon), no momentum, not centered:
    s = rho s + (1-rho) g²; p -= lr g / (sqrt(s) + eps). Defaults are PyTorch's."""
    kind = K.RMSPROP

    def __init__(self, learning_rate: Any = 0.01, rho: float = 0.99, epsilon: float = 1e-8,
                 clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        self._set_clipping(clipnorm, global_clipnorm, clipvalue)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.rho = check_float(rho, "rho", minimum=0.0, maximum=1.0, max_inclusive=False)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)

    def hyper_parameters(self):
        h = super().hyper_parameters()
        h[K.H_1], h[K.H_EPS] = self.rho, self.epsilon
        return h


class AdaGrad(Optimizer):
    """torch.optim.Adagrad(lr, eps=epsilon, initial_accumulator_value), lr_decay 0:
    s += g²; p -= lr g / (sqrt(s) + eps), s starting at initial_accumulator_value."""
    kind = K.ADAGRAD

    def __init__(self, learning_rate: Any = 0.01, epsilon: float = 1e-10, initial_accumulator_value: float = 0.0,
                 clipnorm: float | None = None, global_clipnorm: float | None = None,
                 clipvalue: float | None = None) -> None:
        self._set_clipping(clipnorm, global_clipnorm, clipvalue)
        self.learning_rate = _check_learning_rate(learning_rate)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
        self.initial_accumulator_value = check_float(initial_accumulator_value, "initial_accumulator_value",
                                                     minimum=0.0)

    @property
    def initial_state(self):
        return self.initial_accumulator_value

    def hyper_parameters(self):
        h = super().hyper_parameters()
        h[K.H_EPS] = self.epsilon
        return h


RMSprop = RMSProp
Adagrad = AdaGrad
_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": AdaGrad}


def _check_learning_rate(value):
    """A learning rate: a number >= 0, or a ``fastnn.schedules`` schedule."""
    if isinstance(value, LearningRateSchedule):
        return value
    return check_float(value, "learning_rate", minimum=0.0)


def get(identifier):
    """An optimizer from an instance, a class or a name ('adam', 'adamw', 'sgd', 'rmsprop', 'adagrad')."""
    return resolve(identifier, Optimizer, _BY_NAME, "optimizer")
