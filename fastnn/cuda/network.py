"""CUDA twin of ``fastnn.kernels.network``: a training step as a short fixed sequence of launches.

The same network table (``layers``, ``alphas``, ``act_off``; see ``kernels.network``) and flat
buffers, here device arrays. One training step, for a network of L dense layers:

1. ``gather_batch``: rows ``order[b * batch_size + r]`` of the resident data set into the
   batch buffers (b read from ``control[C_BATCH]``);
2. per layer, one SGEMM with bias + activation in its epilogue (``dense.dense_forward``);
   the last layer's softmax is left to the loss kernel;
3. ``losses.loss_backward``: softmax, loss, accuracy and dL/d(pre-activation) of the last
   layer in one block, which also records the batch's loss and advances step and batch counters;
   ``metrics.metric_counts`` then adds the training metrics' counters, if the model has any;
4. per layer, in reverse: dW and db in one TN SGEMM, and (but for the first layer) dx in one
   NT SGEMM whose epilogue multiplies by the previous activation's derivative;
5. ``optimizers.optimizer_step``: every optimizer over the whole flat buffer.

That is 2 + 3L launches (11 for 784-100-50-10), with no host synchronization: everything
that changes between steps (batch index, step counts, learning rates, the stop flag) is in
device memory, so the same launches, with the same arguments, serve every step. Hence
``StepRunner`` can capture them once into a CUDA graph of GRAPH_STEPS steps and replay it,
which costs about a microsecond per kernel instead of some 27 µs per launch from Python.
The host reads the batch losses back once per call of ``train_batches``' caller (an epoch).
"""
import warnings
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..kernels import network as cpu
from ..kernels.network import (ACT, ACTIVATION_LAYER, ADD_LAYER, ALPHA, B_OFF, BATCHNORM_LAYER,  # noqa: F401
                               CONCATENATE_LAYER, DENSE_LAYER, DROPOUT_LAYER, EMBEDDING_LAYER, EPSILON, KIND,
                               MASKING_LAYER, MULTIPLY_LAYER, N_IN, N_OUT, SLICE_LAYER, SOURCE, SOURCE2, W_OFF)
from . import C_BATCH, C_STEP, C_STEP0, GRAPH_STEPS, N_CONTROL, USE_GRAPHS, Plan, blocks, device_twin, kernel, launch
from .activations import IDENTITY, SOFTMAX, activation_backward, bias_activation_forward
from .batchnorm import batchnorm_backward, batchnorm_forward
from .dense import dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .buffers import fill_zero
from .embedding import embedding_backward, embedding_forward, masking_backward, masking_forward
from .losses import loss_backward, loss_forward
from .metrics import metric_counts
from .optimizers import clip_gradients, optimizer_step
from .regularizers import regularization_forward_backward


merge_element = device_twin(cpu.merge_element)


@lru_cache(maxsize=None)
def kernels(dtype):
    @kernel
    def merge_elements(out, first, second, rows, width, n1, n2, start, kind):
        """A merge layer's or an input's output (``kernels.network.merge_element``), one thread per element."""
        i = cuda.grid(1)
        if i < rows * width:
            r = i // width
            out[i] = merge_element(first, second, r, i - r * width, n1, n2, start, kind)

    @kernel
    def add_elements(dst, src, rows, width, src_width, lo, factor, use_factor):
        """dst[r, j] += src[r, lo + j] (times factor[r, j] with ``use_factor``): a consumer's share of
        a node's gradient."""
        i = cuda.grid(1)
        if i < rows * width:
            r = i // width
            j = i - r * width
            value = src[r * src_width + lo + j]
            if use_factor:
                value *= factor[i]
            dst[i] += value

    @kernel
    def gather_batch(xb, yb, x, y, order, control, batch_size, rows, n_in, n_out):
        """xb[r] = x[order[b * batch_size + r]], yb likewise, one thread per element of both;
        also sets this step's ``control[C_STEP]`` (read by the step's later kernels)."""
        i = cuda.grid(1)
        lo = control[C_BATCH] * batch_size
        if i == 0:
            control[C_STEP] = control[C_STEP0] + control[C_BATCH]
        if i < rows * n_in:
            r = i // n_in
            xb[i] = x[order[lo + r] * n_in + (i - r * n_in)]
        else:
            j = i - rows * n_in
            if j < rows * n_out:
                r = j // n_out
                yb[j] = y[order[lo + r] * n_out + (j - r * n_out)]

    return SimpleNamespace(gather_batch=gather_batch, merge_elements=merge_elements, add_elements=add_elements)


def _view(buffer, lo, size):
    return buffer[int(lo): int(lo) + int(size)]


def gather_batch(xb, yb, x, y, order, control, batch_size, rows, n_in, n_out, plan=None):
    launch(plan, kernels(np.dtype(x.dtype).name).gather_batch, *blocks(rows * (n_in + n_out)),
           xb, yb, x, y, order, control, batch_size, rows, n_in, n_out)


def merge_forward(out, first, second, rows, width, n1, n2, start, kind, plan=None):
    """As ``kernels.network.merge_forward`` on flat device arrays."""
    launch(plan, kernels(np.dtype(out.dtype).name).merge_elements, *blocks(rows * width),
           out, first, second, int(rows), int(width), int(n1), int(n2), int(start), int(kind))


def add_into(dst, src, rows, width, src_width, lo=0, factor=None, plan=None):
    """dst += src[:, lo:lo + width] (times ``factor`` elementwise when given), flat (rows, ...) device arrays."""
    launch(plan, kernels(np.dtype(dst.dtype).name).add_elements, *blocks(rows * width), dst, src, int(rows),
           int(width), int(src_width), int(lo), dst if factor is None else factor, factor is not None)


def _node(x, acts, act_off, layers, node, rows):
    """A node's output: a layer's slice of ``acts``, or the gathered batch ``x`` for -1."""
    return x if node < 0 else _view(acts, act_off[node + 1], rows * int(layers[node, N_OUT]))


def _merge_widths(layers, graph, k):
    """(n1, n2, start) of a merge or input row: the widths of its two sources, an input's first column."""
    n_in, n_out, kind = int(layers[k, N_IN]), int(layers[k, N_OUT]), layers[k, KIND]
    if kind == SLICE_LAYER:
        return n_in, n_in, int(layers[k, B_OFF])
    return n_in, (n_out - n_in if kind == CONCATENATE_LAYER else n_in), 0


def network_forward(net, x, work, rows, out=None, defer_softmax=False, plan=None, training=False, control=None,
                    graph=None):
    """Every layer of ``net`` on the ``rows`` rows of ``x``; the last writes to ``out`` if given
    (else its slice of ``work.acts``). ``net.rng`` is Dropout's key (an int; the step is on the
    device, in ``control[C_STEP]``). Returns whether the last layer's softmax was deferred to the loss kernel
    (``defer_softmax`` and a dense last layer with softmax).

    ``training``: Dropout draws its mask from the key and the step in ``control[C_STEP]``;
    otherwise it is skipped (a last Dropout copies its input to its output).
    ``graph`` (``kernels.network.Graph`` of host sources and a device buffer): each layer reads its
    sources' outputs, as in ``kernels.network.network_forward``.
    """
    params, layers, alphas, key = net
    acts, act_off = work.acts, work.act_off
    last = layers.shape[0] - 1
    deferred = bool(defer_softmax and layers[last, KIND] == DENSE_LAYER and layers[last, ACT] == SOFTMAX)
    inp = x
    for k in range(last + 1):
        n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
        o = out if (out is not None and k == last) else _view(acts, act_off[k + 1], rows * n_out)
        kind = layers[k, KIND]
        if graph is not None:
            inp = _node(x, acts, act_off, layers, graph.sources[k, SOURCE], rows)
        if kind == DENSE_LAYER:
            w, b = layers[k, W_OFF], layers[k, B_OFF]
            dense_forward(o, inp, _view(params, w, n_in * n_out), _view(params, b, n_out), int(layers[k, ACT]),
                          alphas[k, ALPHA], rows, n_in, n_out, defer_softmax=deferred and k == last, plan=plan)
        elif kind == ACTIVATION_LAYER:
            bias_activation_forward(o, inp, None, int(layers[k, ACT]), alphas[k, ALPHA], rows, n_out, plan=plan)
        elif kind == DROPOUT_LAYER:
            if training:
                dropout_forward(o, inp, rows * n_out, key, k, alphas[k, ALPHA], control, plan=plan)
            elif k == last or graph is not None:  # its output is read: rate 0 keeps every element, a copy
                dropout_forward(o, inp, rows * n_out, key, k, 0.0, _inference_control(), plan=plan)
            else:
                continue
        elif kind == BATCHNORM_LAYER:
            batchnorm_forward(o, inp, params, layers[k, W_OFF], layers[k, B_OFF], rows, n_out, training,
                              alphas[k, ALPHA], alphas[k, EPSILON], plan=plan)
        elif kind == EMBEDDING_LAYER:
            if k != 0 and graph is None:
                raise ValueError(f"layers: an Embedding must be the first layer, found in row {k}")
            embedding_forward(o, inp, params, layers[k, W_OFF], rows, n_in, n_out, int(alphas[k, ALPHA]),
                              alphas[k, EPSILON] != 0, plan=plan)
        elif kind == MASKING_LAYER:
            masking_forward(o, inp, rows * n_out, alphas[k, ALPHA], plan=plan)
        elif kind in (SLICE_LAYER, CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER):
            if graph is None:
                raise ValueError(f"layers: a merge or input row {k}, but no graph")
            second = _node(x, acts, act_off, layers, graph.sources[k, SOURCE2], rows)
            merge_forward(o, inp, second, rows, n_out, *_merge_widths(layers, graph, k), kind, plan=plan)
        else:
            raise ValueError(f"layers: unknown layer kind {kind} in row {k}")
        inp = o
    return deferred


def network_backward(net, grads, x, work, rows, plan=None, control=None):
    """Fill ``grads`` from dL/d(pre-activation of the last layer), which is in ``work.deltas[0]``.

    When layer k is reached, ``deltas[cur]`` holds dL/d(its pre-activation); a layer without an
    activation of its own (Dropout) has its output there. Each kind's backward leaves
    dL/d(its input) and, fused into it, the activation derivative of the layer below, so that
    the invariant holds for k - 1: a dense layer's dx SGEMM applies it in its epilogue, an
    Activation or Dropout layer applies it after its own pass.
    """
    params, layers, alphas, key = net
    acts, act_off, deltas = work.acts, work.act_off, work.deltas
    cur = 0
    for k in range(layers.shape[0] - 1, -1, -1):
        n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
        dz = _view(deltas[cur], 0, rows * n_out)
        below = _view(acts, act_off[k], rows * n_in) if k > 0 else x  # this layer's input
        kind = layers[k, KIND]
        if kind == DENSE_LAYER:
            w = layers[k, W_OFF]
            dWb = _view(grads, w, (n_in + 1) * n_out)  # [dW, db]: b follows W in the layout
            W = _view(params, w, n_in * n_out)
            if k > 0:
                dx = _view(deltas[1 - cur], 0, rows * n_in)
                dense_backward(dx, dWb, dz, below, W, rows, n_in, n_out, prev_out=below,
                               prev_act=int(layers[k - 1, ACT]), prev_alpha=alphas[k - 1, ALPHA], plan=plan)
                cur = 1 - cur
            else:
                dense_backward(None, dWb, dz, below, W, rows, n_in, n_out, plan=plan)
            continue
        if kind == DROPOUT_LAYER:
            if k == 0:
                continue  # the input batch needs no gradient
            dropout_backward(dz, dz, rows * n_out, key, k, alphas[k, ALPHA], control, plan=plan)
        elif kind == BATCHNORM_LAYER:
            batchnorm_backward(dz, grads, dz, below, params, layers[k, W_OFF], layers[k, B_OFF], rows, n_out,
                               alphas[k, EPSILON], want_dx=k > 0, plan=plan)
            if k == 0:
                continue
        elif kind == EMBEDDING_LAYER:  # the first layer: the table's gradient only
            embedding_backward(grads, dz, below, layers[k, W_OFF], layers[k, B_OFF], rows, n_in, n_out,
                               int(alphas[k, ALPHA]), alphas[k, EPSILON] != 0, plan=plan)
            continue
        elif kind == MASKING_LAYER:
            if k == 0:
                continue  # the input batch needs no gradient
            masking_backward(dz, dz, below, rows * n_out, alphas[k, ALPHA], plan=plan)
        elif kind != ACTIVATION_LAYER:
            raise ValueError(f"layers: unknown layer kind {kind} in row {k}")
        # dz is now dL/d(this layer's input), the output of layer k - 1: one more derivative
        # makes it dL/d(layer k - 1's pre-activation).
        if k > 0 and layers[k - 1, ACT] != IDENTITY:
            activation_backward(dz, dz, below, int(layers[k - 1, ACT]), alphas[k - 1, ALPHA], rows, n_in, plan=plan)


def graph_backward(net, grads, x, work, rows, graph, plan=None, control=None):
    """``network_backward`` for a ``Graph``, as ``kernels.network.graph_backward``: the last node's
    buffer in ``graph.deltas`` holds dL/d(its pre-activation) (the loss kernel applied the last
    activation); every layer applies its own activation's derivative, then adds dL/d(its inputs)
    into its sources' buffers (through ``work.deltas[0]`` as scratch)."""
    params, layers, alphas, key = net
    acts, act_off, deltas = work.acts, work.act_off, work.deltas
    last = layers.shape[0] - 1
    for k in range(last, -1, -1):
        n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
        kind = layers[k, KIND]
        if kind == SLICE_LAYER:
            continue
        src, src2 = int(graph.sources[k, SOURCE]), int(graph.sources[k, SOURCE2])
        d = _view(graph.deltas, act_off[k + 1], rows * n_out)
        o = _view(acts, act_off[k + 1], rows * n_out)
        inp = _node(x, acts, act_off, layers, src, rows)
        wants = src >= 0 and layers[src, KIND] != SLICE_LAYER
        scratch = _view(deltas[0], 0, rows * n_in)
        if kind in (DENSE_LAYER, ACTIVATION_LAYER) and k != last and layers[k, ACT] != IDENTITY:
            activation_backward(d, d, o, int(layers[k, ACT]), alphas[k, ALPHA], rows, n_out, plan=plan)
        if kind == DENSE_LAYER:
            w = layers[k, W_OFF]
            dense_backward(scratch if wants else None, _view(grads, w, (n_in + 1) * n_out), d, inp,
                           _view(params, w, n_in * n_out), rows, n_in, n_out, plan=plan)
        elif kind == ACTIVATION_LAYER:
            scratch = d
        elif kind == DROPOUT_LAYER:
            dropout_backward(d, d, rows * n_out, key, k, alphas[k, ALPHA], control, plan=plan)
            scratch = d
        elif kind == BATCHNORM_LAYER:
            batchnorm_backward(scratch, grads, d, inp, params, layers[k, W_OFF], layers[k, B_OFF], rows, n_out,
                               alphas[k, EPSILON], want_dx=wants, plan=plan)
        elif kind == EMBEDDING_LAYER:
            embedding_backward(grads, d, inp, layers[k, W_OFF], layers[k, B_OFF], rows, n_in, n_out,
                               int(alphas[k, ALPHA]), alphas[k, EPSILON] != 0, plan=plan)
            continue
        elif kind == MASKING_LAYER:
            if wants:
                masking_backward(scratch, d, inp, rows * n_in, alphas[k, ALPHA], plan=plan)
        elif kind in (CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER):
            other = _node(x, acts, act_off, layers, src2, rows)
            n1, n2, _ = _merge_widths(layers, graph, k)
            if src2 >= 0 and layers[src2, KIND] != SLICE_LAYER:
                target2 = _view(graph.deltas, act_off[src2 + 1], rows * n2)
                add_into(target2, d, rows, n2, n_out, lo=n1 if kind == CONCATENATE_LAYER else 0,
                         factor=inp if kind == MULTIPLY_LAYER else None, plan=plan)
            if wants:
                add_into(_view(graph.deltas, act_off[src + 1], rows * n1), d, rows, n1, n_out,
                         factor=other if kind == MULTIPLY_LAYER else None, plan=plan)
            continue
        else:
            raise ValueError(f"layers: unknown layer kind {kind} in row {k}")
        if wants:
            add_into(_view(graph.deltas, act_off[src + 1], rows * n_in), scratch, rows, n_in, n_in, plan=plan)


def train_step(net, train, work, batches, loss, metrics, reg, clip, rows, records, control, plan, graph=None):
    """Append one training step on a batch of ``rows`` rows to ``plan`` (see the module docstring)."""
    params, layers, alphas, key = net
    acts, act_off, deltas, targets = work.acts, work.act_off, work.deltas, work.targets
    last = layers.shape[0] - 1
    n_in, n_out = int(layers[0, N_IN]), int(layers[last, N_OUT])
    xb = _view(acts, act_off[0], rows * n_in)
    yb = _view(targets, 0, rows * n_out)
    gather_batch(xb, yb, batches.x, batches.y, batches.order, control, batches.batch_size, rows, n_in, n_out,
                 plan=plan)
    deferred = network_forward(net, xb, work, rows, defer_softmax=True, plan=plan, training=True, control=control,
                               graph=graph)
    pred = _view(acts, act_off[last + 1], rows * n_out)
    if graph is not None:  # every node's gradient buffer starts at zero; the loss's goes to the last node's
        fill_zero(graph.deltas, plan=plan)
    top = _view(deltas[0] if graph is None else graph.deltas, 0 if graph is None else act_off[last + 1], rows * n_out)
    loss_backward(records, top, pred, yb, loss, int(layers[last, ACT]),
                  alphas[last, ALPHA], rows, n_out, control, softmax_first=deferred, plan=plan)
    if metrics is not None:  # after the loss kernel, which applied a deferred softmax to pred
        metric_counts(metrics.spec, metrics.counts, pred, yb, rows, n_out, control, plan=plan)
    if graph is None:
        network_backward(net, train.grads, xb, work, rows, plan=plan, control=control)
    else:
        graph_backward(net, train.grads, xb, work, rows, graph, plan=plan, control=control)
    if reg is not None:
        regularization_forward_backward(params, train.grads, reg.table, reg.rows, reg.size, records, control,
                                        plan=plan)
    if clip is not None and train.opt_meta.shape[0]:
        clip_gradients(train.grads, train.opt_meta, train.opt_hyper, clip.tensors, clip.n, clip.sums, control,
                       plan=plan)
    if train.opt_meta.shape[0]:
        optimizer_step(params, *train, control, plan=plan)


def train_batches(net, train, work, batches, loss, records, control, metrics, reg, clip, runner, graph=None):
    """Enqueue training of ``net`` on batches ``batches.first`` .. ``batches.stop - 1`` of the
    rows ``x[order]``, ``y[order]``.

    The bundles of ``kernels.network``, holding device arrays (``batches.x``, ``batches.y`` flat
    row-major, ``order`` int64 positions into them); ``net.rng`` is Dropout's key.
    ``control[C_BATCH]`` must hold ``first`` and ``control[C_STEP0]`` the training step of batch 0
    (the key and that step draw Dropout's masks). ``metrics``: the training counters on the device
    (``spec``, ``counts``: see ``metrics.metric_counts``), or None. ``reg``: the weight penalties on the device
    (``table``, ``rows``, ``size``: see ``regularizers``), or None; ``clip``: the weight tensors
    (``tensors``, ``n``) and a float64 scratch ``sums`` when an optimizer clips, else None.
    Nothing is read back: the loss and correct count
    of batch b land in ``records[2b]``, ``records[2b + 1]``. Full batches run as one replayed
    plan, a smaller last batch as a plan of its own. ``graph``: a functional model's ``Graph``, or None.
    """
    n, batch_size, first, stop = batches.order.size, batches.batch_size, batches.first, batches.stop
    full_stop = min(stop, n // batch_size)
    # What a step's launches depend on: the plan of a step is built once for these (first and
    # stop are not among them: the device's control array says which batch a step trains on).
    args = (net, train, work, batches._replace(first=0, stop=0), loss, metrics, reg, clip)
    for rows, times in ((batch_size, full_stop - first), (n - full_stop * batch_size, stop - max(first, full_stop))):
        if times > 0:
            plan = runner.plan(args + (rows, records, control, graph),
                               lambda p, rows=rows: train_step(*args, rows, records, control, p, graph))
            runner.run(plan, times)


def predict_batches(out, net, x, batch_size, work, stream, training=False, control=None, graph=None):
    """out (flat, n x n_out, device) = network(x[i]) for every row of the host array ``x``,
    ``batch_size`` rows per forward pass, each batch copied into the input slice of ``acts``;
    ``training`` as in ``network_forward`` (Dropout's step in ``control[C_STEP]``)."""
    n, n_in = x.shape
    n_out = int(net.layers[-1, N_OUT])
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        xb = _view(work.acts, work.act_off[0], (hi - lo) * n_in)
        xb.copy_to_device(x[lo:hi].reshape(-1), stream=stream)
        plan = Plan(stream)
        network_forward(net, xb, work, hi - lo, out=_view(out, lo * n_out, (hi - lo) * n_out), plan=plan,
                        training=training, control=control, graph=graph)
        plan.run()


def evaluate_batches(net, loss, x, y, batch_size, work, records, control, steps, stream, graph=None):
    """Enqueue the loss and correct rows of every ``batch_size`` rows of host arrays (x, y) into
    ``records`` (as ``losses.loss_forward``); ``control[C_BATCH]`` must be 0. The caller sums
    loss x rows over the batches, as ``kernels.network.evaluate_batches``."""
    n, n_in = x.shape
    layers, acts, act_off = net.layers, work.acts, work.act_off
    n_out = int(layers[-1, N_OUT])
    last = layers.shape[0] - 1
    for lo in range(0, n, batch_size):
        rows = min(lo + batch_size, n) - lo
        xb = _view(acts, act_off[0], rows * n_in)
        yb = _view(work.targets, 0, rows * n_out)
        xb.copy_to_device(x[lo:lo + rows].reshape(-1), stream=stream)
        yb.copy_to_device(y[lo:lo + rows].reshape(-1), stream=stream)
        plan = Plan(stream)
        deferred = network_forward(net, xb, work, rows, defer_softmax=True, plan=plan, graph=graph)
        loss_forward(records, _view(acts, act_off[last + 1], rows * n_out), yb, loss, rows, n_out, control,
                     softmax_first=deferred, plan=plan)
        plan.run()


@lru_cache(maxsize=1)
def _inference_control():
    """A control array for launches that read none of it (Dropout at rate 0)."""
    return cuda.to_device(np.zeros(N_CONTROL, dtype=np.int64))


class StepRunner:
    """Runs a step plan many times: launch by launch, or as replays of captured CUDA graphs.

    Graphs need a real GPU and the driver API of ``cuda.bindings`` (installed with numba-cuda);
    in the simulator, or with FASTNN_CUDA_GRAPHS=0, or if a capture fails, plans run launch
    by launch, which computes the same thing. The first run of a new plan is always plain: it
    compiles the kernels, which must not happen while a stream is being captured. A graph is
    kept per plan (its kernels, geometry, pointers and scalars, all of which it replays) and
    number of steps.
    """
    MAX_GRAPHS = 16
    MAX_PLANS = 16

    def __init__(self, stream, use_graphs=USE_GRAPHS):
        self.stream = stream
        self.driver = _graph_driver() if use_graphs else None
        self.warm = set()
        self.graphs = {}
        self.plans = {}

    def plan(self, inputs, build):
        """The plan ``build(plan)`` records for these exact ``inputs`` (arrays by identity, the
        rest by value), built once: building costs more host time than replaying a graph."""
        key = tuple(_plan_key(inputs))
        found = self.plans.get(key)
        if found is None:
            if len(self.plans) >= self.MAX_PLANS:
                self.plans.clear()
            plan = Plan(self.stream)
            build(plan)
            # The inputs are kept with the plan so that no id in the key can be reused by a new object.
            found = self.plans[key] = (plan, tuple(inputs))
        return found[0]

    @property
    def uses_graphs(self):
        return self.driver is not None

    def run(self, plan, times):
        if self.driver is None:
            for _ in range(times):
                plan.run()
            return
        key = plan.key()
        if key not in self.warm:
            plan.run()
            times -= 1
            self.warm.add(key)
        done = 0
        try:
            for steps, count in ((GRAPH_STEPS, times // GRAPH_STEPS), (1, times % GRAPH_STEPS)):
                if count:
                    graph = self._graph(plan, key, steps)
                    for _ in range(count):
                        _check(self.driver.cuGraphLaunch(graph, self._handle()))
                        done += steps
        except _GraphError as e:
            # Nothing runs while a stream is captured, and the device counters tell each step
            # where it is: the steps not yet done can run as plain launches.
            warnings.warn(f"CUDA graph capture failed ({e}); training continues with plain kernel launches",
                          RuntimeWarning, stacklevel=2)
            self.driver = None
            for _ in range(times - done):
                plan.run()

    def _handle(self):
        h = self.stream.handle
        return self.driver.CUstream(h.value if hasattr(h, "value") else int(h))

    def _graph(self, plan, key, steps):
        found = self.graphs.get((key, steps))
        if found is not None:
            return found[1]
        if len(self.graphs) >= self.MAX_GRAPHS:
            self.release()
        drv = self.driver
        try:
            h = self._handle()
            _check(drv.cuStreamBeginCapture(h, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_GLOBAL))
        except Exception as e:
            raise _GraphError(str(e)) from e
        try:
            for _ in range(steps):
                plan.run()
        except Exception as e:
            drv.cuStreamEndCapture(h)
            raise _GraphError(str(e)) from e
        try:
            graph = _check(drv.cuStreamEndCapture(h))[0]
            exec_ = _check(drv.cuGraphInstantiate(graph, 0))[0]
        except RuntimeError as e:
            raise _GraphError(str(e)) from e
        self.graphs[(key, steps)] = (graph, exec_)
        return exec_

    def release(self):
        """Destroy the captured graphs (their device memory is the driver's)."""
        for graph, exec_ in self.graphs.values():
            self.driver.cuGraphExecDestroy(exec_)
            self.driver.cuGraphDestroy(graph)
        self.graphs.clear()

    def forget(self):
        """Drop every plan and graph: a plan keeps its arrays alive, which must not outlive the
        buffers the backend has replaced (a new data set, larger workspace, new parameters)."""
        self.plans.clear()
        self.warm.clear()
        if self.driver is not None:
            self.release()


def _plan_key(inputs):
    """The parts of a plan's key: host arrays by value, numbers as they are, bundles (tuples) by
    their fields, everything else (device arrays) by identity."""
    for a in inputs:
        if isinstance(a, tuple):
            yield from _plan_key(a)
        elif isinstance(a, np.ndarray):
            yield a.tobytes()
        elif isinstance(a, (int, float, np.generic)) or a is None:
            yield a
        else:
            yield id(a)


class _GraphError(RuntimeError):
    pass


def _graph_driver():
    """The CUDA driver API module for graph capture, or None where it cannot be used."""
    from numba import config
    if config.ENABLE_CUDASIM:
        return None
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver  # cuda-python before 12.6
        except ImportError:
            return None
    return driver


def _check(result):
    """The values after the CUresult of a ``cuda.bindings.driver`` call; RuntimeError if it failed."""
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise RuntimeError(f"CUDA driver error {err}")
    return result[1:] if isinstance(result, tuple) else ()
