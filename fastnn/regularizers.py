"""Weight regularizers, as Keras': ``Dense(kernel_regularizer=L2(1e-4), bias_regularizer=L1(1e-5))``.

The penalty (L1: l1 * sum|w|; L2: l2 * sum w², no factor 1/2; L1L2: both) is added to the
training loss, so the loss that ``fit`` logs includes it, as Keras' does, and so does
``evaluate``'s. Its gradient is added to the weights' gradient inside the compiled training
step (``fastnn.kernels.regularizers``). Keras' defaults: L1(0.01), L2(0.01), L1L2(0, 0).
"""
from .base import Configurable, resolve
from .validation import check_float


class Regularizer(Configurable):
    """Base class: ``factors()`` is (l1, l2)."""
    l1 = 0.0
    l2 = 0.0

    def factors(self):
        return self.l1, self.l2


class L1(Regularizer):
    """l1 * sum(|w|) (``keras.regularizers.L1``); ``alpha`` is accepted for ``l1``."""
    _aliases = {"alpha": "l1"}

    def __init__(self, l1=0.01):
        self.l1 = check_float(l1, "l1", minimum=0.0)


class L2(Regularizer):
    """l2 * sum(w²) (``keras.regularizers.L2``); ``alpha`` is accepted for ``l2``."""
    _aliases = {"alpha": "l2"}

    def __init__(self, l2=0.01):
        self.l2 = check_float(l2, "l2", minimum=0.0)


class L1L2(Regularizer):
    """l1 * sum(|w|) + l2 * sum(w²) (``keras.regularizers.L1L2``)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = check_float(l1, "l1", minimum=0.0)
        self.l2 = check_float(l2, "l2", minimum=0.0)


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2}


def get(identifier, what="regularizer"):
    """A regularizer from an instance, a class, a name ('l1', 'l2', 'l1_l2'), or None."""
    return None if identifier is None else resolve(identifier, Regularizer, _BY_NAME, what)
