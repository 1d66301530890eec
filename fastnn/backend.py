"""Backends own a model's arrays on one device and run the network kernels on them.

The model (``fastnn.model``) decides what to compute; a backend decides where. Both expose
the same methods, so layers and the model never branch on the device: ``CPUBackend`` calls
``fastnn.kernels.network``; ``CUDABackend`` (``fastnn.cuda.backend``) its twin in ``fastnn.cuda``.
"""
import numpy as np

from .config import INFERENCE_BATCH_SIZE
from .kernels import network
from .kernels.optimizers import H_SCHEDULE, any_clipping
from .kernels.schedules import CONSTANT
from .threading import blas_threads_for


class CPUBackend:
    """Arrays are NumPy arrays in host memory; kernels are Numba CPU functions."""
    name = "cpu"

    def __init__(self, dtype):
        self.dtype = dtype
        self.capacity = 0

    def load(self, layers, alphas, params, state1, state2, rng, reg):
        """Take the network table, the flat buffers, the random key and step and the weight
        penalties' table (host arrays, copied)."""
        self.layers = np.ascontiguousarray(layers, dtype=np.int64)
        self.alphas = network.alpha_table(alphas)
        self.params = np.array(params, dtype=self.dtype)
        self.grads = np.zeros_like(self.params)
        self.state1 = np.array(state1, dtype=self.dtype)
        self.state2 = np.array(state2, dtype=self.dtype)
        self.rng = np.array(rng, dtype=np.int64).reshape(2)
        self.reg = np.array(reg, dtype=np.float64).reshape(-1, 4)
        self.tensors = network.weight_tensors(self.layers)
        # (dropout, batchnorm) for the network kernels: None for a kind no layer is, which then
        # compiles out of the model's kernels.
        self.kinds = tuple(True if np.any(self.layers[:, network.KIND] == kind) else None
                           for kind in (network.DROPOUT_LAYER, network.BATCHNORM_LAYER))
        self.capacity = 0
        # Forward matrix-product FLOPs per row; a training step costs about three times this.
        self.flops_per_row = 2.0 * float(np.sum(self.layers[:, network.N_IN] * self.layers[:, network.N_OUT]
                                                * (self.layers[:, network.KIND] == network.DENSE_LAYER)))

    def host(self, name):
        """A host copy of one of the flat buffers ('params', 'state1', 'state2') or of 'rng'."""
        return getattr(self, name).copy()

    def write(self, name, lo, values):
        """Overwrite ``buffer[lo:lo + values.size]`` from a host array."""
        getattr(self, name)[lo: lo + values.size] = values.reshape(-1)

    def dataset(self, x, y):
        """The training arrays as the kernels read them (a no-op on the CPU)."""
        return x, y

    def reserve(self, rows):
        """Workspace for forward and backward passes of up to ``rows`` rows; allocates only
        when it grows, so steady-state training allocates nothing."""
        if rows <= self.capacity:
            return
        self.act_off, n_acts, deltas_shape, n_targets = network.workspace_layout(self.layers, rows)
        self.acts = np.empty(n_acts, dtype=self.dtype)
        self.deltas = np.empty(deltas_shape, dtype=self.dtype)
        self.targets = np.empty(n_targets, dtype=self.dtype)
        self.capacity = rows

    def train(self, data, order, batch_size, first, stop, loss, opt_meta, opt_hyper, opt_steps,
              batch_loss, batch_correct):
        """Train on batches [first, stop) of ``data[order]``; see ``kernels.network.train_batches``."""
        x, y = data
        self.reserve(batch_size)
        with blas_threads_for(3 * self.flops_per_row * batch_size):
            return network.train_batches(
                self.params, self.grads, self.state1, self.state2, self.layers, self.alphas, loss,
                opt_meta, opt_hyper, opt_steps, x, y, order, batch_size, first, stop,
                self.acts, self.act_off, self.deltas, self.targets, batch_loss, batch_correct, self.rng,
                *self.optional_stages(opt_hyper), *self.kinds)

    def optional_stages(self, opt_hyper):
        """(reg, tensors, schedules) for ``train_batches``: each None where no layer or optimizer
        uses that stage, so that it compiles out of the step."""
        hyper = np.asarray(opt_hyper)
        scheduled = hyper.size and bool(np.any(hyper[:, H_SCHEDULE] != CONSTANT))
        return (self.reg if self.reg.shape[0] else None, self.tensors if any_clipping(hyper) else None,
                True if scheduled else None)

    def predict(self, x, batch_size=INFERENCE_BATCH_SIZE, training=False):
        out = np.empty((x.shape[0], self.layers[-1, network.N_OUT]), dtype=self.dtype)
        self.reserve(batch_size)
        with blas_threads_for(self.flops_per_row * batch_size):
            network.predict_batches(out, self.params, self.layers, self.alphas, x, batch_size,
                                    self.acts, self.act_off, training, self.rng, *self.kinds)
        return out

    def evaluate(self, x, y, loss, batch_size=INFERENCE_BATCH_SIZE):
        self.reserve(batch_size)
        with blas_threads_for(self.flops_per_row * batch_size):
            return network.evaluate_batches(self.params, self.layers, self.alphas, loss, x, y, batch_size,
                                            self.acts, self.act_off, self.rng, *self.kinds)


def get_backend(device, dtype):
    """The backend for ``device`` ('cpu' or 'cuda'); a clear error where one is unavailable."""
    if device == "cpu":
        return CPUBackend(dtype)
    if device == "cuda":
        from .cuda.backend import CUDABackend
        return CUDABackend(dtype)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
