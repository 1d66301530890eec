"""The compiled training loop, ``fastnn.kernels.network.train_batches``, for one batch: gather,
forward, loss, backward and Adam update of the whole network with no Python in between; and
the same step with each learning-rate schedule, evaluated inside the step at every update.

The network is laid out by hand in the kernels' own format (the ``layers`` table documented in
``fastnn/kernels/network.py``) and run through ``CPUBackend``, so the figure is the kernels'
alone: no validation, no per-epoch bookkeeping.
"""
import numpy as np

from fastnn import CosineDecay, ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay
from fastnn.cpu_backend import CPUBackend
from fastnn.kernels.activations import RELU, SOFTMAX
from fastnn.kernels.losses import CROSS_ENTROPY
from fastnn.kernels.network import ACT, B_OFF, DENSE_LAYER, KIND, N_IN, N_OUT, W_OFF
from fastnn.kernels.optimizers import ADAM, H_1, H_2, H_EPS, H_LR, H_SCHEDULE, N_HYPER
from fastnn.spec import NetworkSpec

from . import CONFIGS, synthetic_data, warm_numba_cache as setup_cache  # noqa: F401

# Batches of training data to cycle through, so that successive steps read different rows.
BATCHES = 16
# Adam's learning rate as each schedule kind (None: the constant 1e-3 of TrainStep, whose step
# compiles without the schedule stage).
SCHEDULES = {
    "constant": None,
    "exponential_decay": ExponentialDecay(1e-3, 1000, 0.9),
    "inverse_time_decay": InverseTimeDecay(1e-3, 1000, 0.5, staircase=True),
    "piecewise_constant_decay": PiecewiseConstantDecay([1000, 2000, 3000], [1e-3, 5e-4, 2e-4, 1e-4]),
    "cosine_decay": CosineDecay(1e-4, 1000, warmup_target=1e-3, warmup_steps=100),
}


class TrainingLoop:
    """Flat buffers, layer table and workspace of one network, ready for ``train_batches``."""

    def __init__(self, widths, batch, seed=0, schedule=None):
        rng = np.random.default_rng(seed)
        n_layers = len(widths) - 1
        self.layers = np.zeros((n_layers, 6), np.int64)
        offset, chunks = 0, []
        for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            row = self.layers[k]
            row[W_OFF], row[B_OFF] = offset, offset + n_in * n_out
            row[N_IN], row[N_OUT] = n_in, n_out
            row[ACT], row[KIND] = (SOFTMAX if k == n_layers - 1 else RELU), DENSE_LAYER
            chunks += [rng.standard_normal(n_in * n_out) * np.sqrt(2.0 / n_in), np.zeros(n_out)]
            offset += n_in * n_out + n_out
        params = np.concatenate(chunks).astype(np.float32)
        self.backend = CPUBackend(np.float32)
        spec = NetworkSpec(table=self.layers, alphas=np.zeros((n_layers, 2)), reg=np.zeros((0, 4)),
                           slices=[[0, params.size, ADAM]], size=params.size)
        self.backend.load(spec, {"params": params, "state1": np.zeros_like(params), "state2": np.zeros_like(params),
                                 "opt_steps": np.zeros(1, np.int64), "rng": np.zeros(2, np.int64)})
        row = np.zeros(0) if schedule is None else schedule.row()
        self.opt_hyper = np.zeros((1, max(N_HYPER, H_SCHEDULE + row.size)))
        self.opt_hyper[0, [H_LR, H_1, H_2, H_EPS]] = 1e-3, 0.9, 0.999, 1e-8
        self.opt_hyper[0, H_SCHEDULE: H_SCHEDULE + row.size] = row
        self.data = self.backend.dataset(*synthetic_data(batch * BATCHES, widths[0], widths[-1], seed))
        self.order = np.arange(batch * BATCHES, dtype=np.int64)
        self.batch = batch
        self.batch_loss = np.zeros(BATCHES)
        self.batch_correct = np.zeros(BATCHES, np.int64)
        self.next_batch = 0

    def step(self):
        """One optimizer step on the next batch; fails loudly should the loss stop being finite."""
        bi = self.next_batch
        self.next_batch = (bi + 1) % BATCHES
        bad = self.backend.train(self.data, self.order, self.batch, bi, bi + 1, CROSS_ENTROPY, self.opt_hyper,
                                 self.batch_loss, self.batch_correct)
        if bad >= 0:
            raise FloatingPointError(f"training diverged at batch {bad}")


def warm_up():
    TrainingLoop((3, 4, 2), 2).step()
    TrainingLoop((3, 4, 2), 2, schedule=SCHEDULES["cosine_decay"]).step()  # the step with its schedule stage


class TrainStep:
    """One full training step (forward, loss, backward, Adam) of the seed and wide networks."""
    params = [list(CONFIGS)]
    param_names = ["network"]

    def setup(self, config):
        self.loop = TrainingLoop(*CONFIGS[config])
        self.loop.step()

    def time_train_step(self, config):
        self.loop.step()


class ScheduledTrainStep:
    """TrainStep of the seed network (the smallest step, where the per-update rate weighs most)
    with Adam's learning rate as each schedule kind, against the constant rate."""
    params = [list(SCHEDULES)]
    param_names = ["schedule"]

    def setup(self, schedule):
        self.loop = TrainingLoop(*CONFIGS["seed"], schedule=SCHEDULES[schedule])
        self.loop.step()

    def time_scheduled_train_step(self, schedule):
        self.loop.step()
