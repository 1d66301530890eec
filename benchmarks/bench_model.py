"""End to end through the public API: ``MLP.fit`` for one epoch, ``train_on_batch`` and
``predict``, for the seed (784-100-50-10, batch 50) and wide (784-1024-1024-10, batch 256)
networks, on MNIST-shaped synthetic data, which needs no download and makes every run train
on the same numbers. The row counts are parameters, so that figures taken with
FASTNN_BENCH_QUICK (fewer rows) are never mistaken for full ones."""
import statistics
import time

from . import CONFIGS, PREDICT_ROWS, TRAIN_ROWS, build_model, synthetic_data
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)


def warm_up():
    model, _ = build_model("seed")
    x, y = synthetic_data(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    model.train_on_batch(x, y)
    model.predict(x)
    model.evaluate(x, y)


class FitEpoch:
    """One epoch of ``fit``: shuffle, every batch in the compiled loop, the epoch's logs."""
    params = [list(CONFIGS), [TRAIN_ROWS]]
    param_names = ["network", "rows"]
    # An epoch of the wide network takes seconds: a few samples, no asv warm-up (setup did it).
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 900

    def setup(self, config, rows):
        self.x, self.y = synthetic_data(rows)
        self.model, self.batch = build_model(config)
        self.model.fit(self.x[: 2 * self.batch], self.y[: 2 * self.batch], epochs=1, batch_size=self.batch,
                       verbose=0)

    def _epoch(self):
        self.model.fit(self.x, self.y, epochs=1, batch_size=self.batch, verbose=0)

    def time_fit_epoch(self, config, rows):
        self._epoch()

    def peakmem_fit_epoch(self, config, rows):
        """Peak resident memory of a process that holds the training set and trains one epoch."""
        self._epoch()

    def track_train_samples_per_second(self, config, rows):
        """Training rows per second over one epoch, as ``fit(verbose=1)`` prints it. Higher is better."""
        start = time.perf_counter()
        self._epoch()
        return round(rows / (time.perf_counter() - start), 1)

    track_train_samples_per_second.unit = "samples/s"


class FitEpochMetrics(FitEpoch):
    """``FitEpoch`` with the training metrics counted inside the compiled step:
    metrics=["accuracy", "auc", "precision", "recall"] (AUC over 200 score buckets per class).
    Against ``FitEpoch.time_fit_epoch`` of the same commit: what counting them costs."""
    METRICS = ["accuracy", "auc", "precision", "recall"]

    def setup(self, config, rows):
        FitEpoch.setup(self, config, rows)
        self.model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=self.METRICS)
        self.model.fit(self.x[: 2 * self.batch], self.y[: 2 * self.batch], epochs=1, batch_size=self.batch,
                       verbose=0)

    def time_fit_epoch(self, config, rows):
        self._epoch()

    def peakmem_fit_epoch(self, config, rows):
        self._epoch()

    def track_train_samples_per_second(self, config, rows):
        return FitEpoch.track_train_samples_per_second(self, config, rows)

    track_train_samples_per_second.unit = "samples/s"


class StepLimit:
    """fastnn's distance to the limit of its training step: the epoch's dense matrix products run
    alone (``step_limit.products_seconds``: same shapes, same BLAS, same threads) as a percentage
    of the epoch's ``fit`` time. Higher is better; 100 is a step that is nothing but its products."""
    params = [list(CONFIGS), [TRAIN_ROWS]]
    param_names = ["network", "rows"]
    number = 1
    repeat = 1
    warmup_time = 0.0
    timeout = 900

    def setup(self, config, rows):
        from .step_limit import products_seconds
        FitEpoch.setup(self, config, rows)
        self.products = products_seconds(list(CONFIGS[config][0]), self.batch, rows, repeats=10)

    def track_products_percent_of_step(self, config, rows):
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            self.model.fit(self.x, self.y, epochs=1, batch_size=self.batch, verbose=0)
            seconds.append(time.perf_counter() - start)
        return round(100.0 * self.products / statistics.median(seconds), 1)

    track_products_percent_of_step.unit = "% products"  # regression_check: higher is better


class TrainOnBatch:
    """``train_on_batch``: one optimizer step through the public API, input validation included."""
    params = [list(CONFIGS)]
    param_names = ["network"]

    def setup(self, config):
        self.model, batch = build_model(config)
        self.x, self.y = synthetic_data(batch)
        self.model.train_on_batch(self.x, self.y)

    def time_train_on_batch(self, config):
        self.model.train_on_batch(self.x, self.y)


class Predict:
    """``predict`` on MNIST's test-set size, in fastnn's default inference batches."""
    params = [list(CONFIGS), [PREDICT_ROWS]]
    param_names = ["network", "rows"]

    def setup(self, config, rows):
        self.model, _ = build_model(config)
        self.x, _ = synthetic_data(rows)
        self.model.predict(self.x)

    def time_predict(self, config, rows):
        self.model.predict(self.x)
