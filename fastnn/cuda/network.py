"""CUDA twin of ``fastnn.kernels.network``: a training step as a short fixed sequence of launches.

The same network table (``layers``, ``alphas``, ``act_off``; see ``kernels/table.py``) and flat
buffers, here device arrays; each layer's launches come from ``cuda/dispatch.py``, by the same
backward rule and the same two fusions as on the CPU (``table.fuse_loss_backward``,
``table.fuse_activation_backward``). One training step, for a network of L dense layers:

1. ``gather_batch``: rows ``order[b * batch_size + r]`` of the resident data set into the
   batch buffers (b read from ``control[C_BATCH]``);
2. per layer, one SGEMM with bias + activation in its epilogue (``dense.dense_forward``);
   the last layer's softmax is left to the loss kernel; the first layer may instead multiply
   only the batch's nonzero inputs (``sparse.nonzero_first_forward``, and its weight gradient
   ``nonzero_first_backward``; the backend times both ways per data set);
3. ``losses.loss_backward``: softmax, loss, accuracy and dL/d(pre-activation) of the last
   layer in one block, which also records the batch's loss and advances the batch counter
   ``control[C_BATCH]`` (from which the next gather derives Dropout's step, ``control[C_STEP]``);
   ``metrics.metric_counts`` then adds the training metrics' counters, if the model has any;
4. per layer, in reverse: dW and db in one TN SGEMM, and (but for the first layer) dx in one
   NT SGEMM whose epilogue multiplies by the previous activation's derivative (the fused
   epilogue, ``fuse_activation_backward``);
5. ``optimizers.optimizer_step``: the optimizers' step counts (one small launch, where the CPU's
   ``apply_optimizers`` advances them), then every optimizer over the whole flat buffer.

That is 3 + 3L launches (12 for 784-100-50-10), with no host synchronization: everything
that changes between steps (batch index, step counts, learning rates, the stop flag) is in
device memory, so the same launches, with the same arguments, serve every step. Hence
``runner.StepRunner`` can capture them once into a CUDA graph of GRAPH_STEPS steps and replay it,
which costs about a microsecond per kernel instead of some 27 µs per launch from Python.
The host reads the batch losses back once per call of ``train_batches``' caller (an epoch).
"""
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..kernels.table import (ACT, ADD_LAYER, ALPHA, CALL_GRADS, CALL_PARAMS, CALL_SIZE, CONCATENATE_LAYER, DENSE_LAYER,
                             EMBEDDING_LAYER, KIND, MULTIPLY_LAYER, N_IN, N_OUT, SLICE_LAYER, SOURCE, SOURCE2,
                             fuse_activation_backward, fuse_loss_backward, shared_gradient_shift)
from . import C_BATCH, C_STEP, C_STEP0, blocks, kernel, launch
from .activations import IDENTITY, SOFTMAX
from .buffers import fill_zero
from .dispatch import IN_PLACE, INTO_DX, layer_backward, layer_forward
from .losses import loss_backward, outputs_loss
from .merge import add_into
from .metrics import metric_counts
from .optimizers import clip_gradients, optimizer_step
from .regularizers import regularization_forward_backward
from .runner import StepRunner  # noqa: F401 (the backend's runner of step plans)
from .sparse import nonzero_first_backward, nonzero_first_forward


@lru_cache(maxsize=None)
def kernels(dtype):
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

    @kernel
    def gather_weights(wb, w, order, control, batch_size, rows):
        """wb[r] = w[order[b * batch_size + r]]: the batch's loss weights, gathered as its rows."""
        r = cuda.grid(1)
        if r < rows:
            wb[r] = w[order[control[C_BATCH] * batch_size + r]]

    return SimpleNamespace(gather_batch=gather_batch, gather_weights=gather_weights)


def view(buffer, lo, size):
    """Elements [lo, lo + size) of a flat device buffer (offsets from the int64 tables)."""
    return buffer[int(lo): int(lo) + int(size)]


def gather_batch(xb, yb, x, y, order, control, batch_size, rows, n_in, n_out, plan=None):
    launch(plan, kernels(np.dtype(x.dtype).name).gather_batch, *blocks(rows * (n_in + n_out)),
           xb, yb, x, y, order, control, batch_size, rows, n_in, n_out)


def gather_weights(wb, w, order, control, batch_size, rows, plan=None):
    launch(plan, kernels(np.dtype(w.dtype).name).gather_weights, *blocks(rows), wb, w, order, control, batch_size,
           rows)


def _node(x, acts, act_off, layers, node, rows):
    """A node's output: a layer's slice of ``acts``, or the gathered batch ``x`` for -1."""
    return x if node < 0 else view(acts, act_off[node + 1], rows * int(layers[node, N_OUT]))


def _node_delta(graph, act_off, layers, node, rows):
    """A node's dL/d(output) in ``graph.deltas``; None for the batch or an input slice (no gradient)."""
    if node < 0 or layers[node, KIND] == SLICE_LAYER:
        return None
    return view(graph.deltas, act_off[node + 1], rows * int(layers[node, N_OUT]))


def network_forward(net, x, work, rows, out=None, defer_softmax=False, plan=None, training=False, control=None,
                    graph=None, nonzero=False):
    """Every layer of ``net`` on the ``rows`` rows of ``x`` (``dispatch.layer_forward``); the last
    writes to ``out`` if given (else its slice of ``work.acts``). ``net.rng`` is Dropout's key (an
    int; the step is on the device, in ``control[C_STEP]``). Returns whether the last layer's
    softmax was deferred to the loss kernel (``defer_softmax`` and a dense last layer with softmax).

    ``training``: Dropout draws its mask from the key and the step in ``control[C_STEP]``;
    otherwise it is skipped (a last Dropout copies its input to its output).
    ``graph`` (``kernels.table.Graph`` of host sources and a device buffer): each layer reads its
    sources' outputs, as in ``kernels.network.network_forward``.
    ``nonzero``: layer 0 (Dense, not the last, no ``graph``) multiplies only x's nonzero entries
    (``sparse.nonzero_first_forward``; ``CUDABackend._nonzero_first`` chooses).
    """
    layers, acts, act_off = net.layers, work.acts, work.act_off
    last = layers.shape[0] - 1
    deferred = bool(defer_softmax and layers[last, KIND] == DENSE_LAYER and layers[last, ACT] == SOFTMAX)
    inp = x
    for k in range(last + 1):
        kind = layers[k, KIND]
        o = out if (out is not None and k == last) else _node(x, acts, act_off, layers, k, rows)
        second = inp
        if graph is not None:
            inp = _node(x, acts, act_off, layers, graph.sources[k, SOURCE], rows)
            second = _node(x, acts, act_off, layers, graph.sources[k, SOURCE2], rows)
        elif kind in (SLICE_LAYER, CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER):
            raise ValueError(f"layers: a merge or input row {k}, but no graph")
        elif kind == EMBEDDING_LAYER and k != 0:
            raise ValueError(f"layers: an Embedding must be the first layer, found in row {k}")
        if nonzero and k == 0:
            nonzero_first_forward(net, x, o, rows, plan=plan)
            inp = o
            continue
        inp = layer_forward(net, k, o, inp, second, work, rows, training=training, keep=k == last or graph is not None,
                            control=control, defer_softmax=deferred and k == last, plan=plan)
    return deferred


def loss_activation(layers):
    """The activation code the loss kernel differentiates with the loss (``losses.loss_backward``'s
    ``act``): the last layer's when ``fuse_loss_backward`` says so, else IDENTITY (dL/d(output))."""
    return int(layers[-1, ACT]) if fuse_loss_backward.py_func(layers) else IDENTITY


def network_backward(net, grads, x, work, rows, plan=None, control=None, nonzero=False):
    """Fill ``grads`` from the loss gradient in ``work.deltas[0]`` (from ``loss_activation``: dL/d(the
    last pre-activation) where ``fuse_loss_backward`` holds), as ``kernels.network.network_backward``:
    ``deltas[cur]`` holds dL/d(layer k's output) when layer k is reached (its pre-activation where a
    fusion applied the derivative), and ``dispatch.layer_backward`` leaves dL/d(its input) there or
    in ``deltas[1 - cur]``. Where ``fuse_activation_backward`` holds, a dense layer's dx SGEMM
    applies the derivative of the layer below in its epilogue. ``nonzero``: as ``network_forward``'s
    (``sparse.nonzero_first_backward``).
    """
    layers, acts, act_off, deltas = net.layers, work.acts, work.act_off, work.deltas
    cur = 0
    applied = fuse_loss_backward.py_func(layers)
    for k in range(layers.shape[0] - 1, -1, -1):
        n_in, n_out = int(layers[k, N_IN]), int(layers[k, N_OUT])
        dout = view(deltas[cur], 0, rows * n_out)
        dx = view(deltas[1 - cur], 0, rows * n_in) if k > 0 else None  # the input batch needs no gradient
        fuse = fuse_activation_backward.py_func(layers, k, True)
        if nonzero and k == 0:
            nonzero_first_backward(net, grads, x, _node(x, acts, act_off, layers, 0, rows), dout, rows, applied,
                                   plan=plan)
            break
        where = layer_backward(net, grads, k, dx, None, None, dout, _node(x, acts, act_off, layers, k - 1, rows), None,
                               _node(x, acts, act_off, layers, k, rows), work, rows, applied=applied, fuse=fuse,
                               control=control, plan=plan)
        if where == INTO_DX:
            cur = 1 - cur
        applied = fuse


def graph_backward(net, grads, x, work, rows, graph, plan=None, control=None):
    """``network_backward`` for a ``Graph``, as ``kernels.network.graph_backward``: the last node's
    buffer in ``graph.deltas`` holds the loss gradient; each layer's ``dispatch.layer_backward``
    leaves dL/d(its inputs), which are added into its sources' buffers (through ``work.deltas[0]``
    as scratch; a merge adds its shares itself). No fusion of a reader's derivative, as on the CPU.
    A shared layer's later calls write their weight gradients into regions of their own, added
    into the layer's at the end (``add_shared_gradients``; ``graph.shared``, a host table)."""
    layers, acts, act_off, deltas = net.layers, work.acts, work.act_off, work.deltas
    last = layers.shape[0] - 1
    applied = fuse_loss_backward.py_func(layers)
    for k in range(last, -1, -1):
        if layers[k, KIND] == SLICE_LAYER:
            continue
        n_in = int(layers[k, N_IN])
        src, src2 = int(graph.sources[k, SOURCE]), int(graph.sources[k, SOURCE2])
        dsum, dsum2 = _node_delta(graph, act_off, layers, src, rows), _node_delta(graph, act_off, layers, src2, rows)
        dx = view(deltas[0], 0, rows * n_in) if dsum is not None else None
        d = _node_delta(graph, act_off, layers, k, rows)
        shift = int(shared_gradient_shift.py_func(graph.shared, k))
        where = layer_backward(net, grads[shift:] if shift else grads, k, dx, dsum, dsum2, d,
                               _node(x, acts, act_off, layers, src, rows), _node(x, acts, act_off, layers, src2, rows),
                               _node(x, acts, act_off, layers, k, rows),
                               work, rows, applied=applied and k == last,
                               fuse=fuse_activation_backward.py_func(layers, k, False), control=control, plan=plan)
        if dsum is not None and where in (INTO_DX, IN_PLACE):
            add_into(dsum, dx if where == INTO_DX else d, rows, n_in, n_in, plan=plan)
    add_shared_gradients(grads, graph.shared, plan=plan)


def add_shared_gradients(grads, shared, plan=None):
    """As ``kernels.network.add_shared_gradients``: each later call's region of ``grads`` added into
    its layer's gradient, one launch per call, in table order (the launches of one stream run in
    order: no two additions race)."""
    for row in shared:
        n = int(row[CALL_SIZE])
        add_into(view(grads, row[CALL_PARAMS], n), view(grads, row[CALL_GRADS], n), 1, n, n, plan=plan)


def train_step(net, train, work, batches, loss, metrics, reg, clip, rows, records, control, plan, graph=None,
               weights=None, outputs=None, nonzero=False):
    """Append one training step on a batch of ``rows`` rows to ``plan`` (see the module docstring);
    ``weights``, ``outputs``, ``nonzero`` as ``train_batches``'."""
    params, layers, alphas, key = net.params, net.layers, net.alphas, net.rng
    acts, act_off, deltas, targets = work.acts, work.act_off, work.deltas, work.targets
    last = layers.shape[0] - 1
    n_in, n_out = int(layers[0, N_IN]), int(layers[last, N_OUT])
    xb = view(acts, act_off[0], rows * n_in)
    yb = view(targets, 0, rows * n_out)
    gather_batch(xb, yb, batches.x, batches.y, batches.order, control, batches.batch_size, rows, n_in, n_out,
                 plan=plan)
    wb = None
    if weights is not None:  # before the loss kernel, which advances control[C_BATCH]
        wb = weights[1][:rows]
        gather_weights(wb, weights[0], batches.order, control, batches.batch_size, rows, plan=plan)
    deferred = network_forward(net, xb, work, rows, defer_softmax=True, plan=plan, training=True, control=control,
                               graph=graph, nonzero=nonzero)
    pred = view(acts, act_off[last + 1], rows * n_out)
    if graph is not None:  # every node's gradient buffer starts at zero; the loss's goes to the last node's
        fill_zero(graph.deltas, plan=plan)
    top = view(deltas[0] if graph is None else graph.deltas, 0 if graph is None else act_off[last + 1], rows * n_out)
    if outputs is not None:
        outputs_loss(records, top, pred, yb, outputs, rows, n_out, control, plan=plan, weights=wb)
    else:
        loss_backward(records, top, pred, yb, loss, loss_activation(layers), alphas[last, ALPHA], rows, n_out,
                      control, softmax_first=deferred, plan=plan, weights=wb)
    if metrics is not None:  # after the loss kernel, which applied a deferred softmax to pred
        metric_counts(metrics.spec, metrics.counts, pred, yb, rows, n_out, control, plan=plan)
    if graph is None:
        network_backward(net, train.grads, xb, work, rows, plan=plan, control=control, nonzero=nonzero)
    else:
        graph_backward(net, train.grads, xb, work, rows, graph, plan=plan, control=control)
    if reg is not None:
        regularization_forward_backward(params, train.grads, reg.table, reg.rows, reg.size, records, control,
                                        plan=plan)
    if clip is not None and train.opt_meta.shape[0]:
        clip_gradients(train.grads, train.opt_meta, train.opt_hyper, clip.tensors, clip.n, clip.longest, clip.sums,
                       control, plan=plan)
    if train.opt_meta.shape[0]:
        optimizer_step(params, *train, control, plan=plan)


def train_batches(net, train, work, batches, loss, records, control, metrics, reg, clip, runner, graph=None,
                  weights=None, outputs=None, nonzero=False):
    """Enqueue training of ``net`` on batches ``batches.first`` .. ``batches.stop - 1`` of the
    rows ``x[order]``, ``y[order]``.

    The bundles of ``kernels.network``, holding device arrays (``batches.x``, ``batches.y`` flat
    row-major, ``order`` int64 positions into them); ``net.rng`` is Dropout's key.
    ``control[C_BATCH]`` must hold ``first`` and ``control[C_STEP0]`` the training step of batch 0
    (the key and that step draw Dropout's masks). ``metrics``: the training counters on the device
    (``spec``, ``counts``: see ``metrics.metric_counts``), or None. ``reg``: the weight penalties on the device
    (``table``, ``rows``, ``size``: see ``regularizers``), or None; ``clip``: the weight tensors
    (``tensors``, ``n``, the largest's size ``longest``) and a float64 scratch ``sums`` when an
    optimizer clips, else None.
    Nothing is read back: the loss and correct count
    of batch b land in ``records[2b]``, ``records[2b + 1]``. Full batches run as one replayed
    plan, a smaller last batch as a plan of its own. ``graph``: a functional model's ``Graph``, or None.
    ``weights``: None, or (a loss weight per row of ``x``, a device buffer of ``batch_size``): each
    row's loss and gradient weighted, as ``kernels.network.train_batches``' (Keras' normalization).
    ``outputs``: None, or the device tables of a model of several outputs (``losses.outputs_loss``),
    whose loss the step takes instead of ``loss``. ``nonzero``: the first layer multiplies only the
    batch's nonzero entries (``network_forward``'s).
    """
    n, batch_size, first, stop = batches.order.size, batches.batch_size, batches.first, batches.stop
    full_stop = min(stop, n // batch_size)
    # What a step's launches depend on: the plan of a step is built once for these (first and
    # stop are not among them: the device's control array says which batch a step trains on).
    args = (net, train, work, batches._replace(first=0, stop=0), loss, metrics, reg, clip)
    nonzero = bool(nonzero)
    for rows, times in ((batch_size, full_stop - first), (n - full_stop * batch_size, stop - max(first, full_stop))):
        if times > 0:
            plan = runner.plan(args + (rows, records, control, graph, weights, outputs, nonzero),
                               lambda p, rows=rows: train_step(*args, rows, records, control, p, graph, weights,
                                                               outputs, nonzero))
            runner.run(plan, times)
