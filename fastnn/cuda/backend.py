"""``CUDABackend``: a model's arrays on an NVIDIA GPU, driven by the kernels of ``fastnn.cuda``.

The interface is ``fastnn.backend.Backend``'s, as ``fastnn.cpu_backend.CPUBackend``'s, so the model
never branches on the device. Parameters, gradients, optimizer state, workspace, the training set (uploaded once
per fit when it fits in memory), the epoch's order and the per-batch losses all stay on the
device; a call of ``train`` uploads what the host decided (the order of this call's batches,
step counts, hyper-parameters: a few small copies), enqueues every step, and reads the
batch losses, the correct counts and the counters the step kernels advanced (step counts, the
batch where Dropout's stream stands) back once at its end.
"""
import time
from types import SimpleNamespace

import numpy as np

from ..backend import Backend, check_state
from ..config import CUDA_NONZERO_MAX_DENSITY, INFERENCE_BATCH_SIZE
from ..kernels.table import (B_OFF, DENSE_LAYER, KIND, N_IN, N_OUT, W_OFF, Batches, Graph, Network, Outputs, Training,
                               Workspace, workspace_layout)
from ..kernels.losses import PERCEPTRON
from ..kernels.optimizers import ADAMW, H_SCHEDULE, any_clipping
from ..kernels.schedules import COSINE_DECAY
from ..sparse_input import density
from . import C_BAD, C_BATCH, C_STEP0, DATASET_MEMORY_FRACTION, Plan, check_code
from .host import DeviceData, check_cpu_only, check_metric_spec, new_control, require_cuda

# Training state kept on the host: each call of ``train`` uploads it and reads back what the
# kernels made of it.
_HOST_HELD = ("opt_steps", "rng")


class CUDABackend(Backend):
    """Arrays are numba.cuda device arrays; kernels are ``fastnn.cuda``'s. See ``fastnn.backend``."""
    name = "cuda"
    compile_notice = "compiling the CUDA kernels (at the first fit of each process) ..."
    # Whether this process has run a training step yet: numba-cuda compiles a kernel at its
    # first launch, and keeps no cache on disk (see fastnn.cuda.JIT_OPTIONS).
    _stepped = False

    def __init__(self, dtype):
        self.cuda = require_cuda()
        from . import inference, network, regularizers  # import numba.cuda: only once it is known to work
        self._network, self._inference = network, inference
        self._regularizers = regularizers
        self.dtype = np.dtype(dtype)
        self.stream = self.cuda.stream()
        self.runner = network.StepRunner(self.stream)
        self.capacity = 0
        self.spec = self.graph = None
        # Bytes a training set may take to be uploaded whole; None: DATASET_MEMORY_FRACTION
        # of the device memory free when it is uploaded.
        self.dataset_budget = None
        self._small = {}  # name -> device array reused between calls (graphs keep pointers)
        # Whether the step's first layer multiplies only its input's nonzeros: None, timed per data
        # set and batch size (``_nonzero_first``); True or False, chosen.
        self.nonzero_first = None
        self._views, self._bases = {}, {}

    # ---- buffers ----------------------------------------------------------------------------

    def _to_device(self, array):
        return self.cuda.to_device(np.ascontiguousarray(array), stream=self.stream)

    def load(self, spec, state):
        """As ``Backend.load``: the flat buffers are copied to the device; the step counts and the
        random key and step stay on the host, and each call hands them to the device. User layers
        (``spec.user``) run on the CPU only."""
        if spec.user is not None:
            raise ValueError("layers of your own (Lambda, Layer subclasses) run on the CPU only")
        for row in spec.table:
            if row[KIND] == DENSE_LAYER and row[B_OFF] != row[W_OFF] + row[N_IN] * row[N_OUT]:
                raise ValueError("layers: the CUDA backend needs each dense layer's bias right after its "
                                 "weights in the flat buffer ([W, b] layout)")
        state = check_state(state, spec.size, spec.slices.meta, self.dtype)
        self.spec = spec
        self.params = self._to_device(state["params"])
        self.grads = self._to_device(np.zeros(spec.grad_size, dtype=self.dtype))
        self.state1 = self._to_device(state["state1"])
        self.state2 = self._to_device(state["state2"])
        self.opt_steps, self.rng = state["opt_steps"], state["rng"]
        reg = spec.reg
        self.reg = SimpleNamespace(table=self._to_device(reg), rows=reg.shape[0], size=int(reg[:, 1].max())) \
            if reg.shape[0] else None
        tensors = spec.tensors
        self.clip = SimpleNamespace(tensors=self._to_device(tensors), n=tensors.shape[0],
                                    longest=int((tensors[:, 1] - tensors[:, 0]).max(initial=1)),
                                    sums=self.cuda.device_array(max(1, tensors.shape[0]), np.float64)) \
            if tensors.shape[0] else None
        self.capacity = 0
        self.runner.forget()
        self._warmed = set()

    def host(self, name, lo=0, hi=None):
        if name in _HOST_HELD:
            return getattr(self, name)[lo:hi].copy()
        out = getattr(self, name)[lo:hi].copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return out

    def write(self, name, lo, values):
        """Overwrite ``buffer[lo:lo + values.size]`` from a host array."""
        if name in _HOST_HELD:
            getattr(self, name)[lo: lo + np.size(values)] = np.reshape(values, -1)
            return
        values = np.ascontiguousarray(np.reshape(values, -1), dtype=self.dtype)
        if values.size:
            getattr(self, name)[lo: lo + values.size].copy_to_device(values, stream=self.stream)
            self.stream.synchronize()  # the caller may change ``values`` once this returns

    def penalty(self):
        """The penalty summed on the device (``cuda.regularizers``): one float64 comes back."""
        if self.reg is None:
            return 0.0
        total = self._upload("penalty", np.zeros(1))
        plan = Plan(self.stream)
        self._regularizers.regularization_penalty(total, self.params, self.reg.table, self.reg.rows,
                                                  self.reg.size, plan=plan)
        plan.run()
        out = total.copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return float(out[0])

    def _small_array(self, name, size, dtype):
        """A device array of at least ``size`` elements kept between calls, so that captured
        graphs, which replay pointers, stay valid; grows (and moves) only when too small."""
        arr = self._small.get(name)
        if arr is None or arr.size < size or arr.dtype != dtype:
            arr = self.cuda.device_array(max(size, 1), dtype=dtype, stream=self.stream)
            self._small[name] = arr
        return arr

    def _sized(self, name, shape, dtype):
        """A device array of exactly ``shape``, backed by the kept array ``name``; the same object
        while the shape stays, so that the plans built on it (keyed by identity) are reused."""
        shape = tuple(int(d) for d in shape)
        view = self._views.get(name)
        stale = view is None or self._small.get(name) is not self._bases[name]
        if stale or view.shape != shape or view.dtype != dtype:
            size = int(np.prod(shape))
            base = self._small_array(name, size, dtype)
            view = base[:size].reshape(shape) if size else self.cuda.device_array(shape, dtype=dtype)
            self._views[name], self._bases[name] = view, base
        return view

    def _upload(self, name, values):
        """``values`` (host) into the kept device array ``name`` (see ``_sized``)."""
        values = np.ascontiguousarray(values)
        view = self._sized(name, values.shape, values.dtype)
        if values.size:
            view.copy_to_device(values, stream=self.stream)
        return view

    def _outputs(self, loss, name):
        """The device tables of the loss of several outputs (``cuda.losses.Outputs``; its counters
        zeroed), kept between calls as the plans need; None for any other loss."""
        user = getattr(loss, "user", None)
        if not getattr(user, "several_outputs", False):
            return None
        blocks = user._blocks()
        for code, *_ in blocks:
            check_code(code, PERCEPTRON, "loss")
        table = np.array([[c, lo, hi - lo] for c, _, lo, hi in blocks], np.int64)
        return Outputs(self._upload(name + "_blocks", table),
                       self._upload(name + "_weights", np.array([w for _, w, _, _ in blocks], np.float64)),
                       len(blocks), self._upload(name + "_counts", np.zeros(len(blocks))))

    def dataset(self, x, y):
        """The training arrays on the device when they fit (see ``DeviceData``)."""
        x = np.ascontiguousarray(x, dtype=self.dtype)
        y = np.ascontiguousarray(y, dtype=self.dtype)
        self.runner.forget()  # the plans of an earlier data set would keep it on the device
        if x.nbytes + y.nbytes > self._dataset_budget():
            return DeviceData((x, y))
        return DeviceData((x, y), self._to_device(x.reshape(-1)), self._to_device(y.reshape(-1)))

    def _dataset_budget(self):
        if self.dataset_budget is not None:
            return self.dataset_budget
        try:
            return DATASET_MEMORY_FRACTION * self.cuda.current_context().get_memory_info()[0]
        except Exception:  # the simulator has no memory to report
            return float("inf")

    def reserve(self, rows):
        """Workspace for forward and backward passes of up to ``rows`` rows; allocates only
        when it grows, so steady-state training allocates nothing."""
        if rows <= self.capacity:
            return
        act_off, n_acts, deltas_shape, n_targets, n_stats = workspace_layout(self.spec.table, rows)
        # ``stats`` (float64) where a layer needs scratch; the CUDA BatchNorm keeps a feature's sums
        # in its thread's registers and reads none.
        stats = self.cuda.device_array(n_stats, dtype=np.float64, stream=self.stream) if n_stats else None
        self.work = Workspace(self.cuda.device_array(n_acts, dtype=self.dtype, stream=self.stream), act_off,
                              self.cuda.device_array(deltas_shape, dtype=self.dtype, stream=self.stream),
                              self.cuda.device_array(n_targets, dtype=self.dtype, stream=self.stream), stats)
        self.graph = None if self.spec.graph is None else Graph(
            self.spec.graph, self.cuda.device_array(n_acts, dtype=self.dtype, stream=self.stream), self.spec.shared)
        self.capacity = rows
        self.runner.forget()

    # ---- training ---------------------------------------------------------------------------

    def train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct, metrics=None,
              counts=None, user_metrics=None, weights=None):
        """Train on batches [first, stop) of ``data[order]``; see ``kernels.network.train_batches``.

        Returns -1, or the first batch whose loss was not finite (no update was applied from
        it on). ``batch_loss``, ``batch_correct``, the step counts and the training metrics'
        ``counts`` (for the counter spec ``metrics``, None: none) are updated on the host.
        ``weights``: None, or a host array of a loss weight per row (Keras' normalization; scikit-learn's,
        a ``(weights, True)`` pair, is the CPU's only).
        """
        check_cpu_only(loss, user_metrics)
        if isinstance(weights, tuple):
            raise ValueError("sample weights normalized by their sum (scikit-learn's) train on the CPU only")
        if stop <= first:
            return -1
        outputs = self._outputs(loss, "outputs")
        opt_meta = self.opt_meta
        for kind in opt_meta[:, 2]:
            check_code(kind, ADAMW, "optimizer")
        self.reserve(batch_size)
        n = order.size
        meta = self._upload("opt_meta", opt_meta)
        host_hyper = np.asarray(opt_hyper, dtype=np.float64).reshape(opt_meta.shape[0], -1)
        for kind in host_hyper[:, H_SCHEDULE]:
            check_code(kind, COSINE_DECAY, "learning-rate schedule")
        hyper = self._upload("opt_hyper", host_hyper)
        steps = self._upload("opt_steps", self.opt_steps)
        control = self._upload("control", new_control(first, self.rng[1] - first))
        records = self._small_array("records", 2 * stop, np.float64)
        positions = self._sized("order", (n,), np.int64)
        lo, hi = first * batch_size, min(stop * batch_size, n)
        train = Training(self.grads, self.state1, self.state2, meta, hyper, steps)
        # The metric counters, the weight penalties and the clipping scratch (None: not planned into the step)
        counted = None
        if metrics is not None and metrics.shape[0]:
            check_metric_spec(metrics, n_out=int(self.spec.table[-1, N_OUT]))
            counted = SimpleNamespace(spec=self._upload("metric_spec", np.ascontiguousarray(metrics, np.int64)),
                                      counts=self._upload("metric_counts", np.zeros(counts.size)))
        stages = (counted, self.reg, self.clip if any_clipping(host_hyper) else None)
        nonzero = self._nonzero_first(data, batch_size)
        wb = None if weights is None else self._sized("weight_batch", (batch_size,), self.dtype)
        if data.resident:
            positions[lo:hi].copy_to_device(np.ascontiguousarray(order[lo:hi], dtype=np.int64), stream=self.stream)
            self._network.train_batches(self._net(), train, self.work,
                                        Batches(data.x, data.y, positions, batch_size, first, stop), loss,
                                        records, control, *stages, self.runner, self.graph,
                                        None if weights is None else (self._upload("weights", weights), wb),
                                        outputs, nonzero)
        else:
            self._train_streamed(data, order, batch_size, first, stop, train, loss, records, control, stages,
                                 positions, weights, wb, outputs, nonzero)
        CUDABackend._stepped = True
        counted_host = counted.counts.copy_to_host(stream=self.stream) if counted is not None else None
        outputs_host = outputs.counts.copy_to_host(stream=self.stream) if outputs is not None else None
        out = records[2 * first: 2 * stop].copy_to_host(stream=self.stream)
        # The counters as the step kernels left them: the loss kernel advanced each slice's step count
        # and the batch index, and marked the first batch whose loss was not finite.
        done = control.copy_to_host(stream=self.stream)
        advanced = steps.copy_to_host(stream=self.stream) if steps.size else self.opt_steps
        self.stream.synchronize()  # the copies above are asynchronous
        if counted_host is not None:
            counts += counted_host
        if outputs_host is not None:  # the outputs' losses: the counted functions after the counters
            counts[counts.size - outputs.n:] += outputs_host
        batch_loss[first:stop] = out[0::2]
        batch_correct[first:stop] = out[1::2].astype(np.int64)
        bad = int(done[C_BAD])
        self.opt_steps[:] = advanced
        # Dropout's stream stands at the step of the first batch not trained.
        self.rng[1] = done[C_STEP0] + (bad if bad >= 0 else done[C_BATCH])
        return bad

    def compile_train(self, data, order, batch_size, first, stop, loss, opt_hyper, batch_loss, batch_correct,
                      metrics=None, counts=None, user_metrics=None, weights=None):
        """Compile the kernels of ``train``'s step for these arguments, so that compiling does not
        count as training time: numba-cuda compiles a kernel only when it is first launched, so
        the batches [first, stop) (``fit`` asks for one) are trained on, and then the whole
        training state (and the gradients) is put back as it was; the host arrays passed are left
        alone. Once per kind of step and model. Returns None, or a note with the time it took when
        ``will_compile`` said it would compile."""
        check_cpu_only(loss, user_metrics)
        key = (loss, batch_size, None if metrics is None else np.asarray(metrics).tobytes(), data.resident,
               weights is None, self._nonzero_first(data, batch_size),
               any_clipping(np.asarray(opt_hyper, dtype=np.float64).reshape(self.opt_meta.shape[0], -1)))
        if key in self._warmed:
            return None
        compiles = self.will_compile()
        saved = dict(self.state(), grads=self.host("grads"))
        start = time.perf_counter()
        try:
            self.train(data, order, batch_size, first, stop, loss, opt_hyper, batch_loss.copy(),
                       batch_correct.copy(), metrics, None if counts is None else counts.copy(),
                       weights=weights)
        finally:
            for name, values in saved.items():  # not load_state: the state need not be finite
                self.write(name, 0, values)
        self._warmed.add(key)
        return f"compiled the CUDA kernels in {time.perf_counter() - start:.1f} s" if compiles else None

    def will_compile(self):
        """Whether ``fit`` will compile kernels first: no training step has run in this process
        yet (best effort: kernels a new kind of step needs compile at its first launch too);
        False in the simulator, which compiles nothing."""
        from numba import config
        return not CUDABackend._stepped and not config.ENABLE_CUDASIM

    def _nonzero_first(self, data, batch_size):
        """Whether the step's first layer (Dense, not the last, in a stack) multiplies only the
        batch's nonzero inputs (``sparse.nonzero_first_forward``/``nonzero_first_backward``):
        ``nonzero_first`` where it is set; else, on a training set of at most
        ``CUDA_NONZERO_MAX_DENSITY`` nonzeros, whichever of that layer's two products (forward and
        weight gradient) took less device time on a batch of the set, the nonzero kernels or the
        GEMMs (timed once per data set and batch size); else the GEMMs."""
        table = self.spec.table
        if self.spec.graph is not None or table.shape[0] < 2 or table[0, KIND] != DENSE_LAYER:
            return False
        if self.nonzero_first is not None:
            return bool(self.nonzero_first)
        if batch_size not in data.nonzero_first:
            data.nonzero_first[batch_size] = bool(density(data.host[0]) <= CUDA_NONZERO_MAX_DENSITY
                                                  and self._nonzero_faster(data, batch_size))
        return data.nonzero_first[batch_size]

    def _nonzero_faster(self, data, batch_size, repeats=5):
        """Whether the first layer's two products over the nonzeros took less device time than
        its GEMMs, medians of ``repeats`` on the first ``batch_size`` rows of the set (the
        simulator's events time nothing: there, False)."""
        from . import dense, sparse
        from .activations import IDENTITY
        x = data.host[0]
        rows = min(batch_size, x.shape[0])
        n_in, n_out, w, b = (int(self.spec.table[0, c]) for c in (N_IN, N_OUT, W_OFF, B_OFF))
        xb = self._to_device(x[:rows].reshape(-1))
        out = self.cuda.device_array(rows * n_out, self.dtype, stream=self.stream)
        dz = self.cuda.to_device(np.ones(rows * n_out, self.dtype), stream=self.stream)
        dWb = self.cuda.device_array((n_in + 1) * n_out, self.dtype, stream=self.stream)
        W, bias = self.params[w: w + n_in * n_out], self.params[b: b + n_out]

        def gemms(plan):
            dense.dense_forward(out, xb, W, bias, IDENTITY, 0.0, rows, n_in, n_out, plan=plan)
            dense.dense_backward(None, dWb, dz, xb, W, rows, n_in, n_out, plan=plan)

        def nonzeros(plan):
            sparse.nonzero_rows_product(out, xb, W, rows, n_in, n_out, plan=plan)
            sparse.nonzero_rows_product(dWb, xb, dz, rows, n_in, n_out, transposed=True, plan=plan)

        times = []
        for build in (gemms, nonzeros):
            plan = Plan(self.stream)
            build(plan)
            plan.run()  # the first launch compiles
            samples = []
            for _ in range(repeats):
                start, end = self.cuda.event(), self.cuda.event()
                start.record(self.stream)
                plan.run()
                end.record(self.stream)
                end.synchronize()
                samples.append(start.elapsed_time(end))
            times.append(float(np.median(samples)))
        return 0 < times[1] < times[0]

    def _net(self):
        """The network bundle of the CUDA kernels: its ``rng`` is Dropout's key alone (the step
        is handed to the device in ``control``)."""
        return Network(self.params, self.spec.table, self.spec.alphas, int(self.rng[0]))

    def _train_streamed(self, data, order, batch_size, first, stop, train, loss, records, control, stages,
                        positions, weights=None, wb=None, outputs=None, nonzero=False):
        """Training for a data set that does not fit: the rows of as many batches as fit in the
        budget are gathered on the host, uploaded to a staging buffer, and trained on."""
        x, y = data.host
        n = order.size
        row_bytes = (x.shape[1] + y.shape[1]) * self.dtype.itemsize
        per_chunk = int(max(1, min(stop - first, self._dataset_budget() // (row_bytes * batch_size))))
        stage_rows = min(per_chunk * batch_size, n)
        xs = self._small_array("stage_x", stage_rows * x.shape[1], self.dtype)
        ys = self._small_array("stage_y", stage_rows * y.shape[1], self.dtype)
        ws = None if weights is None else self._small_array("stage_w", stage_rows, self.dtype)
        for b0 in range(first, stop, per_chunk):
            b1 = min(b0 + per_chunk, stop)
            lo, hi = b0 * batch_size, min(b1 * batch_size, n)
            rows = order[lo:hi]
            xs[: (hi - lo) * x.shape[1]].copy_to_device(np.ascontiguousarray(x[rows]).reshape(-1), stream=self.stream)
            ys[: (hi - lo) * y.shape[1]].copy_to_device(np.ascontiguousarray(y[rows]).reshape(-1), stream=self.stream)
            if ws is not None:
                ws[: hi - lo].copy_to_device(np.ascontiguousarray(weights[rows]), stream=self.stream)
            # The step gathers rows order[b * batch_size + r]: here, positions in the staging buffer.
            positions[lo:hi].copy_to_device(np.arange(hi - lo, dtype=np.int64), stream=self.stream)
            self._network.train_batches(self._net(), train, self.work, Batches(xs, ys, positions, batch_size, b0, b1),
                                        loss, records, control, *stages, self.runner, self.graph,
                                        None if ws is None else (ws, wb), outputs, nonzero)
            self.stream.synchronize()  # the staging buffer is overwritten next

    # ---- inference --------------------------------------------------------------------------

    def predict(self, x, batch_size=INFERENCE_BATCH_SIZE, training=False):
        x = np.ascontiguousarray(x, dtype=self.dtype)
        n_out = int(self.spec.table[-1, N_OUT])
        host = np.empty((0, n_out), dtype=self.dtype)
        if x.shape[0]:
            self.reserve(batch_size)
            out = self.cuda.device_array(x.shape[0] * n_out, dtype=self.dtype, stream=self.stream)
            control = self._upload("predict_control", new_control(0, self.rng[1]))
            self._inference.predict_batches(out, self._net(), x, batch_size, self.work, self.stream, training=training,
                                          control=control, graph=self.graph)
            host = out.copy_to_host(stream=self.stream).reshape(x.shape[0], n_out)
            self.stream.synchronize()
        if training:  # a training-mode pass is a step of Dropout's stream, as a training step is
            self.rng[1] += 1
        return host

    def evaluate(self, x, y, loss, batch_size=INFERENCE_BATCH_SIZE, weights=None):
        """(sum over batches of loss x rows, number of correct rows), as ``CPUBackend.evaluate``;
        ``weights``: None, or a loss weight per row."""
        check_cpu_only(loss)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        y = np.ascontiguousarray(y, dtype=self.dtype)
        n = x.shape[0]
        if n == 0:
            return 0.0, 0
        outputs = self._outputs(loss, "eval_outputs")
        self.reserve(batch_size)
        n_batches = -(-n // batch_size)
        records = self._small_array("eval_records", 2 * n_batches, np.float64)
        control = self._upload("eval_control", new_control(0, 0))
        wb = None if weights is None else (np.ascontiguousarray(weights, dtype=self.dtype),
                                           self._sized("eval_weight_batch", (batch_size,), self.dtype))
        self._inference.evaluate_batches(self._net(), loss, x, y, batch_size, self.work, records, control,
                                       self.stream, graph=self.graph, weights=wb, outputs=outputs)
        out = records[: 2 * n_batches].copy_to_host(stream=self.stream)
        self.stream.synchronize()
        total, correct = 0.0, 0
        for b in range(n_batches):
            rows = min(batch_size, n - b * batch_size)
            total += float(out[2 * b]) * rows
            correct += int(out[2 * b + 1])
        return total, correct
