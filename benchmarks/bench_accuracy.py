"""Learning, not speed: MNIST test accuracy after one epoch of the seed and wide networks.

A change that makes training faster by breaking it (a lost in-place update, a race in a
parallel kernel, a wrong gradient) leaves the time_ figures looking better and shows up here.
Seeded, so a given build on a given machine and thread count gives the same figure every run.
Needs MNIST under ``$FASTNN_DATA``; skips without it.
"""
from . import CONFIGS, QUICK, build_model, mnist_or_skip
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# Training rows: all of MNIST's, or the first tenth for a smoke pass (a parameter, so that
# the two kinds of figure never share a graph).
TRAIN_ROWS = 6_000 if QUICK else 60_000


class MnistOneEpoch:
    params = [list(CONFIGS), [TRAIN_ROWS]]
    param_names = ["network", "train_rows"]
    timeout = 900

    def setup(self, config, rows):
        x_train, y_train, self.x_test, self.y_test = mnist_or_skip()
        self.x_train, self.y_train = x_train[:rows], y_train[:rows]
        self.model, self.batch = build_model(config)

    def track_mnist_test_accuracy(self, config, rows):
        """Fraction of the 10,000 test digits classified correctly after one epoch. Higher is better."""
        self.model.fit(self.x_train, self.y_train, epochs=1, batch_size=self.batch, verbose=0)
        _, accuracy = self.model.evaluate(self.x_test, self.y_test)
        return accuracy

    track_mnist_test_accuracy.unit = "accuracy"
