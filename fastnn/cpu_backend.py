"""``CPUBackend``: a network's arrays in host memory, driven by the Numba kernels of ``fastnn.kernels``.

The interface is ``fastnn.backend.Backend``'s; ``fastnn.cuda.backend.CUDABackend`` is its twin.
Every array the kernels change (parameters, gradients, optimizer state, step counts, the random
stream) is a NumPy array held here and handed to ``kernels.network.train_batches``, which
advances the counters itself.
"""
import os
import time

import numba
import numpy as np

from . import blas, distributed
from . import user_layers as user_kernels
from .backend import Backend, check_state
from .config import (BLAS_PARALLEL_MIN_FLOPS, EVALUATE_CHUNK_ELEMENTS, INFERENCE_BATCH_SIZE, NONZERO_PARALLEL_MIN_SHARE,
                     NONZERO_PRODUCT_MAX_WORK, NONZERO_PRODUCT_MIN_ROWS, NONZERO_SAMPLE_BLOCKS, PARALLEL,
                     PARALLEL_PASSES_CHOSEN, parallel_optimizer)
from .kernels import dense, inference, network
from .kernels.simd import SIMD, VECTOR_BITS
from .kernels.table import optional_kinds
from .kernels.optimizers import H_SCHEDULE, any_clipping
from .kernels.regularizers import regularization_penalty
from .kernels.schedules import CONSTANT
from .kernels.sparse import SparseBatches
from .sparse_input import SparseSource
from .predictor import inference_workspace
from .threading import blas_threads_for, call_blas_threads, get_num_threads
from .user_losses import UserMetrics, loss_kernels
from .validation import writable_input


_NO_COUNTS = np.zeros(0)


class CPUBackend(Backend):
    """Arrays are NumPy arrays in host memory; kernels are Numba CPU functions."""
    name = "cpu"
    compiled_loop = True
    concurrent_inference = True  # the kernels release the GIL; each predict takes a spare workspace
    # What fit prints while compile_train runs, when will_compile says it will compile.
    compile_notice = "compiling kernels (first run only, about 15 s on two cores) ..."

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.capacity = 0
        self.spec = None

    def load(self, spec, state):
        self.spec = spec
        state = check_state(state, spec.size, spec.slices.meta, self.dtype)
        self.params = state["params"]
        self.grads = np.zeros(spec.grad_size, dtype=self.dtype)  # (shared layers' regions after the params')
        self.state1, self.state2 = state["state1"], state["state2"]
        self.opt_steps, self.rng = state["opt_steps"], state["rng"]
        table = spec.table
        # (dropout, batchnorm, embedding, masking) for the network kernels: None for a kind no layer is, which then
        # compiles out of the model's kernels.
        self.kinds = optional_kinds(table, spec.user)
        self.capacity = 0
        self._spares = []  # (rows, workspace, graph) of inference passes, one taken per running predict
        # Forward matrix-product FLOPs per row, which decide BLAS's thread count; a training step
        # costs about three times this. Less the first layer's where it skips a sparse input's zeros:
        # its passes are fastnn's own loops then, and BLAS's second thread would spin through them
        # (and through Adam's parallel pass) on the core they need.
        dense_flops = 2.0 * table[:, network.N_IN] * table[:, network.N_OUT] * (table[:, network.KIND] == network.DENSE_LAYER)
        self.flops_per_row = float(np.sum(dense_flops))
        self.sparse_flops_per_row = float(np.sum(dense_flops[1:]))

    def host(self, name, lo=0, hi=None):
        return getattr(self, name)[lo:hi].copy()

    def fill(self, name, lo, hi, value):
        """``buffer[lo:hi] = value``, in place."""
        getattr(self, name)[lo:hi] = value

    def write(self, name, lo, values):
        """Overwrite ``buffer[lo:lo + values.size]`` from a host array."""
        getattr(self, name)[lo: lo + values.size] = values.reshape(-1)

    def penalty(self):
        """The penalty's NumPy sum over the penalized slices of the buffer itself."""
        return regularization_penalty(self.params, self.spec.reg) if self.spec.reg.shape[0] else 0.0

    def dataset(self, x, y):
        """The training arrays as the kernels read them: (x, y, a ``SparseSource`` or None), the
        last where ``x`` is scipy.sparse or its first layer skips zeros (``sparse_input``)."""
        table = self.spec.table
        first_dense = self.spec.graph is None and table[0, network.KIND] == network.DENSE_LAYER
        return x, y, SparseSource.choose(x, first_dense, self.dtype)

    def reserve(self, rows):
        if rows <= self.capacity:
            return
        act_off, n_acts, deltas_shape, n_targets, n_stats = network.workspace_layout(self.spec.table, rows)
        self.work = network.Workspace(np.empty(n_acts, dtype=self.dtype), act_off,
                                      np.empty(deltas_shape, dtype=self.dtype), np.empty(n_targets, dtype=self.dtype),
                                      np.empty(n_stats))
        self.graph = None if self.spec.graph is None else network.Graph(self.spec.graph,
                                                                        np.empty(n_acts, dtype=self.dtype),
                                                                        self.spec.shared)
        self.capacity = rows

    def _workspace(self, rows, threads=0):
        """(rows, workspace, graph) for an inference pass of up to ``rows`` rows, not in use by
        another thread: a spare one (``list.pop`` is atomic), else a new one; ``threads``: one
        with a row of ``acts`` and ``stats`` per thread (``predict_batches_parallel``), 0 for
        ``predict_batches``. The caller appends it back to ``_spares``."""
        spares = self._spares
        for _ in range(len(spares)):
            try:
                spare = spares.pop()
            except IndexError:
                break
            if spare[0] >= rows and (spare[1].acts.shape[0] if spare[1].acts.ndim == 2 else 0) == threads:
                return spare
            spares.insert(0, spare)  # another shape: left for the calls that want it
        return (rows, *inference_workspace(self.spec.table, self.spec.graph, rows, self.dtype, threads=threads))

    def _sparse_batches(self, source, batch_size):
        """``train_batches``' ``sparse`` bundle for ``source`` (None: the dense path), with batch
        buffers that grow only (no allocation once training runs)."""
        if source is None:
            return None
        n_in = self.spec.table[0, network.N_IN]
        room = source.batch_capacity(batch_size, n_in)
        held = getattr(self, "_csr_batch", None)
        csc = n_in + 1 if source.skip else 0
        if held is None or held[0].size < batch_size + 1 or held[1].size < room or held[3].size < csc:
            held = (np.zeros(batch_size + 1, np.int64), np.empty(room, np.int32), np.empty(room, self.dtype),
                    np.zeros(csc, np.int64), np.empty(room, np.int32), np.empty(room, self.dtype))
            self._csr_batch = held
        return SparseBatches(source.indptr, source.indices, source.values, *held, source.skip)

    def train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct, metrics=None,
              counts=None, user_metrics=None, weights=None):
        nonzero = self._nonzero_plan(data[0], data[2], batch_size)
        with self._train_threads(data[2], batch_size, nonzero):
            # (inside: the products' library is chosen at the thread count they run on)
            args = self._train_args(data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                                    metrics, counts, user_metrics, weights, nonzero=nonzero)
            return self._run(network.train_batches, *args)

    def _train_threads(self, source, batch_size, nonzero):
        """``train``'s ``blas_threads_for``: BLAS's threads by the step's FLOPs, and Numba's count
        set too where the step may run a parallel pass (Adam's, a parallel first layer, MKL tiles)."""
        parallel = self._parallel_optimizer(source, batch_size) is not None
        return blas_threads_for(self._blas_flops(source, batch_size, nonzero),
                                PARALLEL_PASSES_CHOSEN or parallel or nonzero is True or blas.tiles_possible())

    def _blas_flops(self, source, batch_size, nonzero):
        """``blas_threads_for``'s FLOPs for a training step: its products' (``_step_flops``), or
        none (one BLAS thread) beside a first layer that runs on Numba's threads."""
        return 0 if nonzero is True else self._step_flops(source, batch_size)

    def _step_flops(self, source, batch_size):
        """The FLOPs of a training step's matrix products (forward, and the two products of the
        backward pass), without a zero-skipping first layer's, which BLAS does not run."""
        flops = self.sparse_flops_per_row if source is not None and source.skip else self.flops_per_row
        return 3 * flops * batch_size

    def compile_train(self, *args, **kwargs):
        """Compile (or load from Numba's cache) the training step for ``train``'s arguments
        without running it; returns None, or a note for the user when it had to be compiled:
        a cold first run takes seconds, which should not count as training time."""
        dispatcher = network.train_batches
        nonzero = self._nonzero_plan(args[0][0], args[0][2], args[2])
        with self._train_threads(args[0][2], args[2], nonzero):
            # The products' library timed as train's first call would (once per process): a step
            # whose products run as tiles has types of its own (``blas.plan``'s ``TiledGemm``).
            values = self._train_args(*args, **kwargs, nonzero=nonzero)
        run = user_kernels.quietly if self._user_functions(values) else self._run
        types = run(lambda: tuple(numba.typeof(a) for a in values))
        if types in dispatcher.overloads:
            return None
        misses = dispatcher.stats.cache_misses.copy()
        start = time.perf_counter()
        run(dispatcher.compile, types)
        if dispatcher.stats.cache_misses == misses:
            return None
        return f"compiled the training kernels in {time.perf_counter() - start:.1f} s (first run only: later runs " \
               "load them from Numba's cache)"

    def will_compile(self):
        """Whether the training step has never been compiled on this machine (no cache index),
        so that the first ``fit`` takes seconds of compiling. Best effort: False if unknown."""
        try:
            return not os.path.exists(network.train_batches._cache._cache_file._index_path)
        except Exception:  # caching off, or a Numba without these attributes
            return False

    def _train_args(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                    metrics=None, counts=None, user_metrics=None, weights=None, nonzero=None):
        """``train_batches``' arguments, inside ``_train_threads`` (the products' library is timed
        there: ``fastnn.blas``); ``nonzero``: ``_nonzero_plan``'s."""
        x, y, source = data
        self.reserve(batch_size)
        train = network.Training(self.grads, self.state1, self.state2, self.spec.slices.meta, opt_hyper,
                                 self.opt_steps)
        sparse = self._sparse_batches(source, batch_size)
        if source is not None and not source.dense:  # the rows are in the bundle; x gives the width
            x = np.zeros((0, x.shape[1]), self.dtype)
        collective = self._collective()
        skip = source is not None and source.skip
        net = self._network(batch_size, True, skip)
        parallel = self._parallel_optimizer(source, batch_size, blas.tiled(net.gemm))
        return (net, train, self.work,
                network.Batches(x, y, order, batch_size, first, stop), int(loss), batch_loss, batch_correct,
                _NO_COUNTS if counts is None else counts,
                metrics if metrics is not None and metrics.shape[0] else None,
                *self.optional_stages(opt_hyper), *self.kinds, collective, self.graph, sparse,
                self._loss_kernels(loss, weights), self._sample_weights(weights, batch_size),
                None if user_metrics is None else user_metrics(self.dtype), parallel,
                self._nonzero_first_args(nonzero, x, batch_size),
                True if nonzero is True else None)  # (parallel_gather: as the first layer, on Numba's threads)

    def _nonzero_plan(self, x, source, batch_size):
        """How a training step on the dense rows ``x`` runs its first layer's two products: over
        each batch's nonzero columns on Numba's threads where BLAS would have several (True; the
        other products on one BLAS thread, ``config.NONZERO_PARALLEL_MIN_SHARE``), serially
        (False), or by GEMM (None), by ``_nonzero_first``'s estimate against GEMM."""
        if source is not None:
            return None
        threads = 1 if self._step_flops(source, batch_size) < BLAS_PARALLEL_MIN_FLOPS else get_num_threads()
        first = self.flops_per_row - self.sparse_flops_per_row
        if PARALLEL and threads > 1 and first >= NONZERO_PARALLEL_MIN_SHARE * self.flops_per_row \
                and self._nonzero_first(x, batch_size, 1):
            return True
        return False if self._nonzero_first(x, batch_size, threads) else None

    def _nonzero_first_args(self, nonzero, x, batch_size):
        """``train_batches``' ``nonzero`` for ``_nonzero_plan``'s choice: None, or a
        ``NonzeroFirst`` with int32 scratch that grows only."""
        if nonzero is None:
            return None
        dense.nonzero_entry(self.dtype)
        room = max(x.shape[1], batch_size) + 64  # the input's columns or a batch's rows, and a vector's lanes
        held = getattr(self, "_nonzero_idx", None)
        if held is None or held.size < room:
            held = self._nonzero_idx = np.empty(room, np.int32)
        return network.NonzeroFirst(held, nonzero)

    def _parallel_optimizer(self, source, batch_size, tiled=False):
        """The step's ``parallel`` argument: True where Adam's parallel pass runs, else None.
        ``tiled``: the step's products run as tiles on Numba's threads (``fastnn.blas.tiled``), no
        BLAS threads beside the pass, as where BLAS runs on one thread. Under MPI the passes stay
        serial (``distributed.init``)."""
        flops = 0 if tiled else self._step_flops(source, batch_size)
        if self._collective() is None and parallel_optimizer(self.params.size, flops):
            return True
        return None

    def _loss_kernels(self, loss, weights):
        """``train_batches``' ``loss_fns``: the loss's compiled functions, a user loss's (its code
        carries the loss, ``fastnn.user_losses.LossCode``) or a built-in one's, so that the step
        compiles this one loss rather than every built-in (``fastnn.user_losses.loss_kernels``;
        its weighted value only for a step with ``weights``)."""
        user = getattr(loss, "user", None)
        if user is None:
            return loss_kernels(int(loss), self.dtype, weights is not None)
        return user.kernels(self.dtype, int(self.spec.table[-1, network.N_OUT]))

    def _sample_weights(self, weights, batch_size):
        """``train_batches``' ``weights`` bundle (None: unweighted, compiled out), with a batch
        buffer that grows only. ``weights``: a loss weight per row, or ``(weights, True)`` for
        scikit-learn's normalization (``kernels.table.SampleWeights``)."""
        if weights is None:
            return None
        weights, normalize = weights if isinstance(weights, tuple) else (weights, False)
        held = getattr(self, "_weight_batch", None)
        if held is None or held.size < batch_size:
            held = self._weight_batch = np.empty(batch_size, self.dtype)
        return network.SampleWeights(weights, held, bool(normalize))

    def _run(self, kernel, *args):
        """``kernel(*args)``; with user layers or metrics, without Numba's notice that their first-class
        functions are an experimental feature (``fastnn.user_layers``). A loss's functions
        (``fastnn.user_losses.UserLoss``) raise no notice: their typed Lists are typed without
        one, so a plain fit or train_on_batch call sets up no warnings filter."""
        if self.kinds[-1] is None and not self._user_functions(args):
            return kernel(*args)
        return user_kernels.quietly(kernel, *args)

    @staticmethod
    def _user_functions(args):
        """Whether ``args`` hold user metrics' functions (``fastnn.user_losses``)."""
        return UserMetrics in map(type, args)  # (a generator over the ~24 arguments cost 6 us a step)

    def _collective(self):
        """None in one process; under MPI the step's ``kernels.distributed.Collective``."""
        return distributed.collective(self.dtype, self.params.size)

    def _network(self, rows=0, backward=False, skip_first=False, measure=True):
        """The ``Network`` bundle for a call over batches of ``rows`` rows (``backward``: training),
        inside its ``blas_threads_for``: the products' library timed for that thread count
        (``fastnn.blas``; ``skip_first``: the first layer skips a CSR input's zeros, no BLAS).
        Built per call, not kept: load and configure_optimizers may replace the arrays."""
        gemm = blas.plan(self.spec.table, rows, self.dtype, backward, call_blas_threads(), measure, skip_first)
        return network.Network(self.params, self.spec.table, self.spec.alphas, self.rng, gemm)

    def optional_stages(self, opt_hyper):
        """(reg, tensors, schedules) for ``train_batches``: each None where no layer or optimizer
        uses that stage, so that it compiles out of the step."""
        hyper = np.asarray(opt_hyper)
        scheduled = hyper.size and bool((hyper[:, H_SCHEDULE] != CONSTANT).any())
        return (self.spec.reg if self.spec.reg.shape[0] else None, self.spec.tensors if any_clipping(hyper) else None,
                True if scheduled else None)

    checks_finite_input = True  # predict(check=True) scans the input in its compiled pass

    def predict(self, x, batch_size=INFERENCE_BATCH_SIZE, training=False, check=False):
        """``x`` may be read-only (a memory-mapped file): then it is copied, since the inference pass
        runs on the input itself (``validation.writable_input``); ``train`` takes it as it is."""
        x = writable_input(x)
        out = np.empty((x.shape[0], self.spec.table[-1, network.N_OUT]), dtype=self.dtype)
        if training:  # under the model's exclusive lock: the training workspace, and a step of Dropout's stream
            self.reserve(batch_size)
            with blas_threads_for(self.flops_per_row * batch_size):
                self._run(inference.predict_batches, out, self._network(min(batch_size, x.shape[0])), x, batch_size,
                          self.work, True, *self.kinds, self.graph)
            self.rng[network.RNG_STEP] += 1
            return out
        rows = min(batch_size, x.shape[0])
        threads = 1
        if self._shares_batches(x.shape[0], batch_size):
            # Batches on Numba's threads, BLAS on one thread in each (inference.predict_batches_parallel).
            with blas_threads_for(0, True):
                threads = min(numba.get_num_threads(), -(-x.shape[0] // batch_size))
                if threads > 1:
                    nonzero = self._nonzero_first(x, rows, 1)
                    spare = self._workspace(batch_size, threads)
                    try:
                        bad = self._run(inference.predict_batches_parallel, out, self._network(rows),
                                        x, batch_size, spare[1], *self.kinds, spare[2], bool(check), nonzero)
                    finally:
                        self._spares.append(spare)
        if threads < 2:
            spare = self._workspace(batch_size)
            # In parallel where BLAS's other layers run on one thread: OpenBLAS's threads wait busily
            # for 0.1 s after each product, taking a core from the parallel one.
            nonzero = PARALLEL and self.sparse_flops_per_row * rows < BLAS_PARALLEL_MIN_FLOPS \
                and self._nonzero_first(x, rows, 1)
            try:
                with blas_threads_for((self.sparse_flops_per_row if nonzero else self.flops_per_row) * batch_size,
                                      PARALLEL_PASSES_CHOSEN or nonzero):
                    bad = self._run(inference.predict_batches, out, self._network(rows), x,
                                    batch_size, spare[1], False, *self.kinds, spare[2], bool(check), nonzero)
            finally:
                self._spares.append(spare)
        if bad >= 0:
            row = bad + int(np.argmin(np.isfinite(x[bad: bad + batch_size]).all(axis=1)))
            raise ValueError(f"x contains NaN or infinite values (or values beyond {self.dtype.name}'s range): "
                             f"row {row}")
        return out

    def _shares_batches(self, n, batch_size):
        """Whether ``predict`` of ``n`` rows may share its batches among Numba's threads: two batches
        or more, with enough work for BLAS's threads (``BLAS_PARALLEL_MIN_FLOPS``), which run one
        each there."""
        return PARALLEL and n > batch_size and self.flops_per_row * n >= BLAS_PARALLEL_MIN_FLOPS

    def _nonzero_first(self, x, rows, threads):
        """Whether the first layer's forward product over ``rows`` rows of ``x`` a batch runs over
        their nonzero columns only (a stack whose first layer is Dense; x dense, its rows' columns
        adjacent): by the estimate ``config.NONZERO_PRODUCT_MAX_WORK`` describes, against GEMM on
        ``threads`` threads where the product runs on one (training), or on as many (predict)."""
        if not (SIMD and self.sparse_first_layer() and rows >= NONZERO_PRODUCT_MIN_ROWS and x.dtype == self.dtype
                and x.ndim == 2 and x.shape[0] > 0 and x.strides[1] == x.itemsize):
            return False
        n_out = int(self.spec.table[0, network.N_OUT])
        block = 4 * (VECTOR_BITS // (8 * x.itemsize))
        padded = -(-n_out // block) * block
        work = dense.nonzero_fraction(x, NONZERO_SAMPLE_BLOCKS) * padded / n_out
        return work * threads <= NONZERO_PRODUCT_MAX_WORK

    def sparse_first_layer(self):
        """Whether a CSR input can run this network's first layer over its nonzeros only: a stack
        whose first layer is Dense (``predict_sparse``; training's rule, ``dataset``)."""
        return self.spec.graph is None and self.spec.table[0, network.KIND] == network.DENSE_LAYER

    def predict_sparse(self, x, batch_size=INFERENCE_BATCH_SIZE):
        """``predict`` of ``x``, a canonical CSR matrix of this model's dtype and input width
        (``sparse_input.check_sparse``), where ``sparse_first_layer``: the first layer's product
        over each batch's nonzeros, nothing densified, and a workspace with no room for the input
        (a batch of 1,024 rows of 50,000 features would take 205 MB, as its densified copy)."""
        out = np.empty((x.shape[0], self.spec.table[-1, network.N_OUT]), dtype=self.dtype)
        work, _ = inference_workspace(self.spec.table, None, batch_size, self.dtype, input_room=False)
        with blas_threads_for(self.sparse_flops_per_row * batch_size):
            self._run(inference.predict_sparse_batches, out, self._network(min(batch_size, x.shape[0]), False, True),
                      x.indptr.astype(np.int64, copy=False),
                      x.indices.astype(np.int32, copy=False), x.data, batch_size, work, *self.kinds)
        return out

    def evaluate_predictions(self, pred, y, loss, batch_size=INFERENCE_BATCH_SIZE, weights=None):
        """``evaluate``'s (loss x rows summed over batches, correct rows) of predictions made already
        (``predict_sparse``'s), batch by batch as ``evaluate``'s."""
        return self._run(inference.evaluate_predictions, pred, y, batch_size, self._loss_kernels(loss, weights),
                         weights)

    def evaluate(self, x, y, loss, batch_size=INFERENCE_BATCH_SIZE, weights=None):
        """As ``predict``, a read-only ``x`` or ``y`` is copied. ``weights``: None, or a loss
        weight per row. Where ``predict`` shares its batches among threads, so does evaluate: the
        predictions of ``EVALUATE_CHUNK_ELEMENTS`` at a time (whole batches), then their losses
        batch by batch in order (``evaluate_predictions``), the serial pass's batches and sums."""
        x, y = writable_input(x), writable_input(y)
        n = x.shape[0]
        if self._shares_batches(n, batch_size):
            n_out = int(self.spec.table[-1, network.N_OUT])
            chunk = batch_size * max(1, EVALUATE_CHUNK_ELEMENTS // (batch_size * n_out))
            total, correct = 0.0, 0
            for lo in range(0, n, chunk):
                hi = min(lo + chunk, n)
                part = self.evaluate_predictions(self.predict(x[lo:hi], batch_size), y[lo:hi], loss, batch_size,
                                                 None if weights is None else weights[lo:hi])
                total, correct = total + part[0], correct + part[1]
            return total, correct
        self.reserve(batch_size)
        with blas_threads_for(self.flops_per_row * batch_size):
            return self._run(inference.evaluate_batches, self._network(min(batch_size, x.shape[0])), x, y, batch_size,
                             self.work, *self.kinds, self.graph, self._loss_kernels(loss, weights), weights)

