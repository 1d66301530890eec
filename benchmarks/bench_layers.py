"""The other layer kinds, end to end: what a layer written by a user (``fastnn.Layer`` subclass,
compiled with Numba and called inside the step) costs against the built-in Dense, and one epoch
of an Embedding model.

``UserLayerEpoch``: one ``fit`` epoch of the seed network (784-100-50-10, batch 50, Adam) with
its two hidden layers as built-in ``Dense(activation="relu")`` or as a user-written dense layer
(``x @ kernel + bias``, NumPy in the user's functions, which allocate their results) followed by
``Activation("relu")``; the ratio of the two is the cost of writing a layer yourself."""
import numpy as np

from . import CONFIGS, TRAIN_ROWS, synthetic_data
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

import fastnn


class UserDense(fastnn.Layer):
    """A dense layer without activation, as a user would write it."""

    def __init__(self, units, input_dim=None):
        self.units = units
        self.input_dim = input_dim

    def build(self, input_dim):
        self.add_weight("kernel", (input_dim, self.units))
        self.add_weight("bias", (self.units,), initializer="zeros")
        return self.units

    @staticmethod
    def forward(x, kernel, bias):
        return x @ kernel + bias

    @staticmethod
    def backward(x, kernel, bias, y, dy):
        return dy @ kernel.T, (x.T @ dy, dy.sum(axis=0))


def seed_model(kind):
    widths, batch = CONFIGS["seed"]
    layers = []
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        if kind == "builtin":
            layers.append(fastnn.Dense(n_in, n_out, activation="relu"))
        else:
            layers += [UserDense(n_out, input_dim=n_in), fastnn.Activation("relu")]
    layers.append(fastnn.Dense(widths[-2], widths[-1], activation="softmax"))
    model = fastnn.MLP(layers, seed=0).compile("categorical_crossentropy", fastnn.Adam(1e-3))
    return model, batch


class UserLayerEpoch:
    params = [["builtin", "user"], [TRAIN_ROWS]]
    param_names = ["dense", "rows"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 900

    def setup(self, kind, rows):
        self.x, self.y = synthetic_data(rows)
        self.model, self.batch = seed_model(kind)
        self.model.fit(self.x[: 2 * self.batch], self.y[: 2 * self.batch], epochs=1, batch_size=self.batch,
                       verbose=0)

    def time_fit_epoch(self, kind, rows):
        self.model.fit(self.x, self.y, epochs=1, batch_size=self.batch, verbose=0)


class EmbeddingEpoch:
    """One ``fit`` epoch of Embedding(10,000 ids, 32, 20 ids a row, combiner) -> Dense(64, relu)
    -> Dense(2, softmax), batch 64, Adam: the scatter-add backward and Adam over the table."""
    params = [["concat", "mean"], [TRAIN_ROWS]]
    param_names = ["combiner", "rows"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 900

    def setup(self, combiner, rows):
        rng = np.random.default_rng(0)
        self.ids = rng.integers(0, 10_000, (rows, 20))
        self.y = rng.integers(0, 2, rows)
        self.model = fastnn.MLP([fastnn.Embedding(10_000, 32, input_length=20, mask_zero=True, combiner=combiner),
                                 fastnn.Dense(None, 64, activation="relu"), fastnn.Dense(None, 2, activation="softmax")],
                                seed=0).compile("cross_entropy", fastnn.Adam(1e-3))
        self.model.fit(self.ids[:128], self.y[:128], epochs=1, batch_size=64, verbose=0)

    def time_fit_epoch(self, combiner, rows):
        self.model.fit(self.ids, self.y, epochs=1, batch_size=64, verbose=0)
