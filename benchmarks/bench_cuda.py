"""The CUDA path (``MLP(device="cuda")``): one epoch of ``fit``, one ``train_on_batch`` and
``predict`` for the seed and wide networks, from host arrays as a user passes them. Skips where
numba's CUDA target finds no GPU or fastnn has no CUDA backend. Every timed call ends by waiting
for the device, so the figure is the GPU's work, not the launch."""
from . import CONFIGS, PREDICT_ROWS, TRAIN_ROWS, build_model, synthetic_data
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)


def cuda_or_skip():
    """numba.cuda, or NotImplementedError (asv's skip) naming what is missing."""
    try:
        from numba import cuda
        available = cuda.is_available()
    except Exception as exc:  # no CUDA target installed, or no driver
        raise NotImplementedError(f"numba's CUDA target is unavailable: {exc}") from exc
    if not available:
        raise NotImplementedError("no CUDA GPU")
    try:
        import fastnn.cuda  # noqa: F401
    except ImportError as exc:
        raise NotImplementedError(f"fastnn has no CUDA backend: {exc}") from exc
    return cuda


class CudaFitEpoch:
    params = [list(CONFIGS), [TRAIN_ROWS]]
    param_names = ["network", "rows"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, config, rows):
        self.cuda = cuda_or_skip()
        self.model, self.batch = build_model(config, device="cuda")
        self.x, self.y = synthetic_data(rows)
        # Compiles the CUDA kernels before anything is timed.
        self.model.fit(self.x[: 2 * self.batch], self.y[: 2 * self.batch], epochs=1, batch_size=self.batch,
                       verbose=0)
        self.cuda.synchronize()

    def time_cuda_fit_epoch(self, config, rows):
        self.model.fit(self.x, self.y, epochs=1, batch_size=self.batch, verbose=0)
        self.cuda.synchronize()


class CudaTrainOnBatch:
    params = [list(CONFIGS)]
    param_names = ["network"]
    timeout = 600

    def setup(self, config):
        self.cuda = cuda_or_skip()
        self.model, batch = build_model(config, device="cuda")
        self.x, self.y = synthetic_data(batch)
        self.model.train_on_batch(self.x, self.y)
        self.cuda.synchronize()

    def time_cuda_train_on_batch(self, config):
        self.model.train_on_batch(self.x, self.y)
        self.cuda.synchronize()


class CudaPredict:
    params = [list(CONFIGS), [PREDICT_ROWS]]
    param_names = ["network", "rows"]
    timeout = 600

    def setup(self, config, rows):
        self.cuda = cuda_or_skip()
        self.model, _ = build_model(config, device="cuda")
        self.x, _ = synthetic_data(rows)
        self.model.predict(self.x)
        self.cuda.synchronize()

    def time_cuda_predict(self, config, rows):
        self.model.predict(self.x)
        self.cuda.synchronize()
