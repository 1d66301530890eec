"""The zero-skipping first Dense layer (``kernels/sparse.py``) against the dense path: one
training step's first-layer work, the batch gather, the forward product and the weight gradient
(the first layer computes no dx), for the seed (784-100, batch 50) and wide (784-1024, batch 256)
networks' first layers at MNIST's density (19% nonzero) and around it; and ``peers.py``'s
bag-of-words network (50000-256-20 on a CSR matrix, ``peers_sparse.py``) trained through ``fit``.

``python -m benchmarks.bench_sparse`` prints the crossover table that sets
``config.SPARSE_FIRST_LAYER_MAX_DENSITY`` (medians of alternating repeats; BLAS on the threads
``fit`` gives it for the whole step, ``threading.blas_threads_for``)."""
import time

import numpy as np

from fastnn.kernels.activations import RELU
from fastnn.kernels.activations import bias_activation_forward
from fastnn.kernels.dense import (dense_backward, dense_forward, nonzero_rows_product, sparse_dense_backward,
                                  sparse_dense_forward)
from fastnn.kernels.parallel import column_sums
from fastnn.kernels.network import gather_rows
from fastnn.kernels.sparse import SparseBatches, gather_sparse

from . import QUICK, sizes, warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)
from .peers_sparse import BOW_BATCH, bow_weights, fastnn_bow_model, make_bow

SHAPES = [(50, 784, 100), (256, 784, 1024)]  # (batch, inputs, outputs)
DENSITIES = [0.05, 0.1, 0.19, 0.3, 0.45, 0.6]  # the crossover table's
ASV_DENSITIES = [0.19, 0.45]  # MNIST's, and one between the two shapes' crossovers


class FirstLayer:
    """float32 arrays of a first layer and a data set of ``density``, both paths' buffers."""

    def __init__(self, batch, n_in, n_out, density, rows=2000, seed=0):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.data = (rng.random((rows, n_in), dtype=f32) * (rng.random((rows, n_in)) < density)).astype(f32)
        self.order = rng.permutation(rows).astype(np.int64)
        self.W = rng.standard_normal((n_in, n_out), dtype=f32)
        self.b = np.zeros(n_out, f32)
        self.xb = np.empty((batch, n_in), f32)
        self.out = np.empty((batch, n_out), f32)
        self.dz = rng.standard_normal((batch, n_out), dtype=f32)
        self.dx = np.empty((0, n_in), f32)  # the first layer's: none
        self.dW = np.empty((n_in, n_out), f32)
        self.db = np.empty(n_out, f32)
        room = batch * n_in
        self.idx = np.empty(max(n_in, batch) + 64, np.int32)
        self.csr = SparseBatches(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, f32),
                                 np.zeros(batch + 1, np.int64), np.empty(room, np.int32), np.empty(room, f32),
                                 np.zeros(n_in + 1, np.int64), np.empty(room, np.int32), np.empty(room, f32), True)

    def dense(self):
        gather_rows(self.xb, self.data, self.order, 0)
        dense_forward(self.out, self.xb, self.W, self.b, RELU, 0.0)
        dense_backward(self.dx, self.dW, self.db, self.dz, self.xb, self.W)

    def nonzero(self):
        """The dense path with both products over the columns nonzero in each block of 6 rows
        (``kernels/sparse.py: nonzero_first_forward``/``nonzero_first_backward``' kernels)."""
        gather_rows(self.xb, self.data, self.order, 0)
        nonzero_rows_product(self.out, self.xb, self.W, self.idx, 0, self.out.shape[0])
        bias_activation_forward(self.out, self.out, self.b, RELU, 0.0)
        nonzero_rows_product(self.dW, self.xb, self.dz, self.idx, 0, self.dW.shape[0], True)
        column_sums(self.db, self.dz)

    def sparse(self):
        c = self.csr
        gather_sparse(c, self.xb, self.data, self.order, 0)
        sparse_dense_forward(self.out, c.batch_indptr, c.batch_indices, c.batch_values, self.W, self.b, RELU, 0.0)
        sparse_dense_backward(self.dW, self.db, self.dz, c.batch_indptr, c.batch_indices, c.batch_values, c.colptr,
                              c.rows, c.colvalues)


def warm_up():
    a = FirstLayer(2, 3, 4, 0.5, rows=4)
    a.dense()
    a.sparse()
    a.nonzero()
    _bow_model().fit(*make_bow(8, 0), epochs=1, batch_size=4, verbose=0)


def _bow_model():
    """``peers.py``'s bag-of-words network from its fixed Glorot weights, compiled as there."""
    import fastnn
    return fastnn_bow_model(fastnn, bow_weights())


class FirstLayerStep:
    """Gather + forward + dW of the first layer: the dense path, the CSR zero-skipping path, and
    the dense path over each block's nonzero columns."""
    params = [sizes(SHAPES), sizes(ASV_DENSITIES)]
    param_names = ["batch_in_out", "density"]

    def setup(self, shape, density):
        self.a = FirstLayer(*shape, density)
        self.a.dense()
        self.a.sparse()
        self.a.nonzero()

    def time_dense_path(self, shape, density):
        self.a.dense()

    def time_zero_skipping(self, shape, density):
        self.a.sparse()

    def time_nonzero_columns(self, shape, density):
        self.a.nonzero()


class BagOfWordsEpoch:
    """One epoch of ``fit`` on ``rows`` rows of the bag-of-words CSR matrix (about 100 nonzeros a
    row of 50,000), batch 256: the first layer over each batch's nonzeros, Adam over 12.8M
    parameters (``peers.py`` compares it with PyTorch and scikit-learn)."""
    params = [[2_000 if QUICK else 20_000]]
    param_names = ["rows"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    timeout = 600

    def setup(self, rows):
        self.x, self.y = make_bow(rows, 0)
        self.model = _bow_model()
        self.model.fit(self.x[: 2 * BOW_BATCH], self.y[: 2 * BOW_BATCH], epochs=1, batch_size=BOW_BATCH, verbose=0)

    def _epoch(self):
        self.model.fit(self.x, self.y, epochs=1, batch_size=BOW_BATCH, verbose=0)

    def time_fit_epoch(self, rows):
        self._epoch()

    def peakmem_fit_epoch(self, rows):
        """Peak resident memory of a process holding the CSR matrix and training one epoch."""
        self._epoch()

    def track_train_samples_per_second(self, rows):
        """Training rows per second over one epoch. Higher is better."""
        start = time.perf_counter()
        self._epoch()
        return round(rows / (time.perf_counter() - start), 1)

    track_train_samples_per_second.unit = "samples/s"


def crossover(shapes=SHAPES, seconds=4.0):
    """Median microseconds per step of both paths and the median of their per-pair ratio, for
    every shape and density: the two alternate step by step, so that both see the same load
    (on shared cores the ratio is the steadier figure)."""
    from fastnn.threading import blas_threads_for
    warm_up()
    for batch, n_in, n_out in shapes:
        # The whole step's products decide fit's BLAS threads (the seed network's: one).
        rest = n_out * 50 + 500 if n_out == 100 else n_out * n_out + n_out * 10
        for density in DENSITIES:
            a = FirstLayer(batch, n_in, n_out, density)
            dense, sparse, nonzero = [], [], []
            with blas_threads_for(6.0 * batch * (n_in * n_out + rest)):
                end = time.perf_counter() + seconds
                while time.perf_counter() < end or len(dense) < 5:
                    for fn, times in ((a.dense, dense), (a.sparse, sparse), (a.nonzero, nonzero)):
                        t0 = time.perf_counter()
                        fn()
                        times.append(time.perf_counter() - t0)
            dense, sparse, nonzero = (np.array(t) * 1e6 for t in (dense, sparse, nonzero))
            print(f"{batch}x{n_in}x{n_out} density {density:.2f}: dense {np.median(dense):8.1f} us, zero-skipping "
                  f"{np.median(sparse):8.1f} us, ratio {np.median(sparse / dense):.2f}; nonzero columns "
                  f"{np.median(nonzero):8.1f} us, ratio {np.median(nonzero / dense):.2f} ({dense.size} triples)",
                  flush=True)


if __name__ == "__main__":
    import sys
    # Optional: BATCH N_IN N_OUT, one shape instead of the two networks'.
    crossover([tuple(int(v) for v in sys.argv[1:4])] if len(sys.argv) == 4 else SHAPES)
