"""Optimizer kernels through ``optimizer_step``, as the training loop calls them: one update of
the whole flat parameter buffer, for every optimizer kind, at the parameter counts of a small
layer, the seed network and the wide network."""
import numpy as np

from fastnn.kernels import optimizers as O
from fastnn.kernels.optimizers import N_HYPER

from . import sizes, warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)


def _hyper(lr, h1=0.0, h2=0.0, eps=0.0, flag=0.0, decay=0.0):
    hyper = np.zeros(N_HYPER)
    hyper[[O.H_LR, O.H_1, O.H_2, O.H_EPS, O.H_FLAG, O.H_DECAY]] = lr, h1, h2, eps, flag, decay
    return hyper


# kind -> (code, hyper-parameters as the optimizer objects pass them, PyTorch's defaults).
OPTIMIZERS = {
    "sgd_momentum": (O.SGD, (0.01, 0.9)),
    "adam": (O.ADAM, (0.001, 0.9, 0.999, 1e-8)),
    "adamw": (O.ADAMW, (0.001, 0.9, 0.999, 1e-8, 0.0, 0.01)),
    "rmsprop": (O.RMSPROP, (0.01, 0.99, 0.0, 1e-8)),
    "adagrad": (O.ADAGRAD, (0.01, 0.0, 0.0, 1e-10)),
}
# A small layer; 784*100+100 + 100*50+50 + 50*10+10 (seed); 784*1024+1024 + 1024*1024+1024 + 1024*10+10 (wide).
SIZES = [10_000, 84_060, 1_863_690]


class OptimizerArrays:
    def __init__(self, kind, n, seed=0):
        rng = np.random.default_rng(seed)
        self.code, hyper = OPTIMIZERS[kind]
        self.hyper = _hyper(*hyper)
        self.params = rng.standard_normal(n, dtype=np.float32)
        self.grads = rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)
        self.state1 = np.zeros(n, np.float32)
        self.state2 = np.zeros(n, np.float32)

    def step(self):
        # A fixed step count: Adam's bias correction costs the same at every step.
        O.optimizer_step(self.code, self.params, self.grads, self.state1, self.state2, self.hyper, 10)


def warm_up():
    OptimizerArrays("adam", 4).step()


class OptimizerStep:
    params = [list(OPTIMIZERS), sizes(SIZES)]
    param_names = ["optimizer", "n_params"]

    def setup(self, kind, n):
        self.a = OptimizerArrays(kind, n)
        self.a.step()

    def time_optimizer_step(self, kind, n):
        self.a.step()
