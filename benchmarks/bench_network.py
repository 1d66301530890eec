"""The compiled training loop, ``fastnn.kernels.network.train_batches``, for one batch: gather,
forward, loss, backward and Adam update of the whole network with no Python in between.

The network is laid out by hand in the kernels' own format (the ``layers`` table documented in
``fastnn/kernels/network.py``) and run through ``CPUBackend``, so the figure is the kernels'
alone: no validation, no per-epoch bookkeeping.
"""
import numpy as np

from fastnn.backend import CPUBackend
from fastnn.kernels.activations import RELU, SOFTMAX
from fastnn.kernels.losses import CROSS_ENTROPY
from fastnn.kernels.network import ACT, B_OFF, DENSE_LAYER, KIND, N_IN, N_OUT, W_OFF
from fastnn.kernels.optimizers import ADAM, H_1, H_2, H_EPS, H_LR, N_HYPER

from . import CONFIGS, synthetic_data, warm_numba_cache as setup_cache  # noqa: F401

# Batches of training data to cycle through, so that successive steps read different rows.
BATCHES = 16


class TrainingLoop:
    """Flat buffers, layer table and workspace of one network, ready for ``train_batches``."""

    def __init__(self, widths, batch, seed=0):
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
        self.backend.load(self.layers, np.zeros((n_layers, 2)), np.zeros((0, 4)), [[0, params.size, ADAM]],
                          {"params": params, "state1": np.zeros_like(params), "state2": np.zeros_like(params),
                           "opt_steps": np.zeros(1, np.int64), "rng": np.zeros(2, np.int64)})
        self.opt_hyper = np.zeros((1, N_HYPER))
        self.opt_hyper[0, [H_LR, H_1, H_2, H_EPS]] = 1e-3, 0.9, 0.999, 1e-8
        self.data = synthetic_data(batch * BATCHES, widths[0], widths[-1], seed)
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


class TrainStep:
    """One full training step (forward, loss, backward, Adam) of the seed and wide networks."""
    params = [list(CONFIGS)]
    param_names = ["network"]

    def setup(self, config):
        self.loop = TrainingLoop(*CONFIGS[config])
        self.loop.step()

    def time_train_step(self, config):
        self.loop.step()
