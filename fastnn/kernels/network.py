"""The whole network as kernels: forward, backward and the training loop over many batches.

This file is the data path of ``MLP.fit``. For each batch, ``train_batches`` runs these stages in
order:
1. Gather a shuffled batch.
2. ``network_forward`` in training mode: layer by layer (GEMM, then bias + activation in one
   pass); Dropout draws its mask for this step.
3. Evaluate the loss; count the training metrics (``kernels/metrics.py``).
4. ``network_backward``: the loss gradient, fused with a softmax or sigmoid where possible, then
   each layer in reverse.
5. Add the weight penalty and its gradient (``kernels/regularizers.py``).
6. ``apply_optimizers``: for each optimizer's slice of the flat parameter buffer, clip the
   gradients, take this step's learning rate from the schedule, and update.
Under MPI (``collective``, ``kernels/distributed.py``) each rank runs stages 2-4 on its share
of the batch's rows; the loss is summed over the ranks before it is checked (every rank then
stops at the same batch) and the gradients between stages 4 and 5, so every rank takes the
same step.
The Python side calls it once per epoch (or per chunk of batches when a callback or progress
bar wants to see them), so no Python runs per batch.

A network is described by arrays, not objects, so that one compiled function serves every
architecture:

- ``layers`` int64 (L, 6), one row per layer: offset of W and of b in ``params``, input and
  output width, activation code, and the layer's kind (``ACTIVATION_LAYER``, ``DENSE_LAYER``,
  ``DROPOUT_LAYER``, ``BATCHNORM_LAYER``, ``EMBEDDING_LAYER``, ``MASKING_LAYER``). Each kind has
  its forward/backward pair (``kernels/dense.py``, ``kernels/activations.py``,
  ``kernels/dropout.py``, ``kernels/batchnorm.py``, ``kernels/embedding.py``,
  ``kernels/masking.py``) and one branch in ``network_forward`` and ``network_backward``; an
  unknown kind raises. A BatchNorm layer's W and b are its gamma and beta; its running mean and
  variance follow b in ``params``, outside every optimizer's slice. An Embedding's W is its
  table, which ends where its b would start (the first layer only: its input is the ids). A
  user layer's (``fastnn/user_layers.py``) b column is its index into the ``user`` functions.
- ``alphas`` float64 (L, 2): the layer's float parameters: [the activation's alpha (LeakyReLU,
  ELU), a Dropout's rate, a BatchNorm's momentum, a Masking's mask value or an Embedding's
  combiner code; a BatchNorm's epsilon, or 1 for an Embedding with mask_zero].
- ``rng`` int64 (2,): the model's random key and its training step count; Dropout's masks are
  a function of the two and of the layer's index (see ``kernels/dropout.py``).
- ``tensors`` int64 (T, 2): [start, stop) of every trained weight tensor in ``params`` (a dense
  layer's W and b, a user layer's trainable weights), for per-tensor gradient clipping.
- ``reg`` float64 (R, 4): the weight penalties, [start, stop, l1, l2] per penalized slice of
  ``params`` (``kernels/regularizers.py``); R = 0 without regularizers.
- ``acts`` one flat buffer for every layer's output; layer k writes rows x ``layers[k, N_OUT]``
  values from ``act_off[k + 1]``; ``act_off[0]`` is where a gathered input batch goes.
- ``deltas`` (2, capacity): two gradient buffers used in turn going backward.
- ``opt_meta`` int64 (S, 3): start, stop, kind of each optimizer's slice of ``params``;
  ``opt_hyper`` float64 (S, >= N_HYPER); ``opt_steps`` int64 (S,), the step counts.
"""
from collections import namedtuple

import numpy as np

from ..config import kernel
from .activations import SIGMOID, SOFTMAX, bias_activation_forward, activation_backward
from .batchnorm import STATS_ROWS, batchnorm_backward, batchnorm_forward
from .dense import dense_backward, dense_forward
from .distributed import allreduce_gradients, allreduce_loss, rank_rows
from .embedding import embedding_backward, embedding_dim, embedding_forward
from .masking import masking_backward, masking_forward
from .dropout import dropout_backward, dropout_forward, dropout_stream
from .losses import (BINARY_CROSS_ENTROPY, CROSS_ENTROPY, loss_backward, loss_forward, loss_is_summed,
                     sigmoid_binary_cross_entropy_backward, softmax_cross_entropy_backward)
from .metrics import count_correct, metric_counts
from .optimizers import H_LR, H_SCHEDULE, clip_global_norms, clip_gradients, optimizer_step
from .schedules import CONSTANT, learning_rate_at
from .regularizers import regularization_forward_backward

# The kernels' arguments, bundled by what they are (Numba types a named tuple of arrays as one
# argument and keeps the field names inside compiled code). The CUDA twins take the same bundles.
Network = namedtuple("Network", ["params", "layers", "alphas", "rng"])
Network.__doc__ = """What every pass reads: the flat parameter buffer, ``layers``, ``alphas`` and ``rng``."""
Workspace = namedtuple("Workspace", ["acts", "act_off", "deltas", "targets", "stats"])
Workspace.__doc__ = """Scratch of the passes (``workspace_layout``): activations, the two gradient buffers, the
gathered targets, and float64 per-feature scratch for BatchNorm's CPU passes (the CUDA twin needs none)."""
Training = namedtuple("Training", ["grads", "state1", "state2", "opt_meta", "opt_hyper", "opt_steps"])
Training.__doc__ = """What only training touches: the flat gradient buffer and the optimizers' state and tables."""
Batches = namedtuple("Batches", ["x", "y", "order", "batch_size", "first", "stop"])
Graph = namedtuple("Graph", ["sources", "deltas"])
Graph.__doc__ = """A model with several inputs or branches (``fastnn.Model``): ``sources`` int64 (L, 2), the
nodes each layer reads (a row index, -1 for the gathered batch, -1 for a second input it lacks);
``deltas``, one gradient buffer laid out as ``work.acts`` (node k's dL/d(output) at
``act_off[k + 1]``), where the layers that read a node add their share."""
Batches.__doc__ = """Which rows to train on: batches ``first`` .. ``stop - 1`` of ``x[order]``, ``y[order]``."""

W_OFF, B_OFF, N_IN, N_OUT, ACT, KIND = range(6)
SOURCE, SOURCE2 = range(2)
(ACTIVATION_LAYER, DENSE_LAYER, DROPOUT_LAYER, BATCHNORM_LAYER, EMBEDDING_LAYER, MASKING_LAYER, USER_LAYER, SLICE_LAYER,
 CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER) = range(11)
# The kinds whose code compiles out of a network without them: the network kernels' arguments
# dropout, batchnorm, embedding, masking, user, in this order (``user`` carries the user layers'
# functions, ``fastnn.user_layers.UserLayers``, instead of True).
OPTIONAL_KINDS = (DROPOUT_LAYER, BATCHNORM_LAYER, EMBEDDING_LAYER, MASKING_LAYER, USER_LAYER)
ALPHA, EPSILON = range(2)
RNG_KEY, RNG_STEP = range(2)


@kernel(inline=True)
def fused_loss_activation(loss, act):
    """Whether the last activation and the loss are differentiated as one (see losses.py)."""
    return (loss == CROSS_ENTROPY and act == SOFTMAX) or (loss == BINARY_CROSS_ENTROPY and act == SIGMOID)


@kernel(inline=True)
def gather_rows(dst, src, order, start):
    """dst[r] = src[order[start + r]] for every row of dst.

    Element loops rather than slice assignment: a slice assignment compiles numba's
    shape-mismatch error formatting, seconds of every cold start."""
    for r in range(dst.shape[0]):
        s = order[start + r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[s, j]


@kernel
def network_forward(net, x, work, training, dropout=True, batchnorm=True, embedding=True, masking=True, user=None,
                    row0=0, graph=None):
    """Run every layer of ``net`` on the rows of ``x``; returns the last layer's output (a view of
    ``work.acts``, or of ``x`` when the layers after it are all inactive).

    ``training``: Dropout draws its mask for step ``net.rng[RNG_STEP]`` and BatchNorm normalizes with
    the batch's statistics and updates its running ones; otherwise Dropout is the identity and
    is skipped (its output is its input, nothing is copied) and BatchNorm uses its running statistics.

    ``dropout``/``batchnorm``/``embedding``/``masking``/``user`` None: the network has no such layer, and the kind's code compiles
    out (Numba drops a branch on ``is None`` of a None-typed argument before typing it), which
    keeps it out of a plain model's cold start.

    ``row0``: the index of x's first row in the whole batch, when x is a rank's share of it
    (Dropout then draws the whole batch's mask for these rows).

    ``graph`` (a ``Graph``, None for a stack of layers): layer k reads the nodes
    ``graph.sources[k]`` instead of layer k - 1; the last layer is the output.
    """
    params, layers, alphas, rng = net
    acts, act_off = work.acts, work.act_off
    rows = x.shape[0]
    inp = x
    for k in range(layers.shape[0]):
        n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
        out = acts[act_off[k + 1]: act_off[k + 1] + rows * n_out].reshape(rows, n_out)
        kind = layers[k, KIND]
        if graph is not None:
            inp = node_output(x, work, layers, graph.sources[k, SOURCE], rows)
        if kind == DENSE_LAYER:
            w, b = layers[k, W_OFF], layers[k, B_OFF]
            W = params[w: w + n_in * n_out].reshape(n_in, n_out)
            dense_forward(out, inp, W, params[b: b + n_out], layers[k, ACT], alphas[k, ALPHA])
        elif kind == ACTIVATION_LAYER:
            bias_activation_forward(out, inp, params[0:0], layers[k, ACT], alphas[k, ALPHA])
        elif kind == DROPOUT_LAYER:
            if dropout is None:
                raise ValueError("a Dropout layer, but dropout=None")
            if not training:
                if graph is None:
                    continue  # its output is its input: nothing copied
                merge_forward(out, inp, inp, SLICE_LAYER, 0)  # other layers read its slot: a copy
                continue
            stream = dropout_stream(rng[RNG_KEY], rng[RNG_STEP], k)
            dropout_forward(out.reshape(-1), inp.reshape(-1), stream, alphas[k, ALPHA], row0 * n_out)
        elif kind == BATCHNORM_LAYER:
            if batchnorm is None:
                raise ValueError("a BatchNorm layer, but batchnorm=None")
            batchnorm_forward(out, inp, params, layers[k, W_OFF], layers[k, B_OFF], training, alphas[k, ALPHA],
                              alphas[k, EPSILON], work.stats)
        elif kind == EMBEDDING_LAYER:
            if embedding is None or (graph is None and k != 0):
                raise ValueError("an Embedding layer, but embedding=None or not the first layer")
            combiner = np.int64(alphas[k, ALPHA])
            dim = embedding_dim(combiner, n_out, n_in)
            table = params[layers[k, W_OFF]: layers[k, B_OFF]].reshape(-1, dim)
            embedding_forward(out, inp, table, combiner, alphas[k, EPSILON] != 0)
        elif kind == MASKING_LAYER:
            if masking is None:
                raise ValueError("a Masking layer, but masking=None")
            masking_forward(out.reshape(-1), inp.reshape(-1), alphas[k, ALPHA])
        elif kind == USER_LAYER:
            if user is None:
                raise ValueError("a user layer, but user=None")
            user.forward[layers[k, B_OFF]](inp, params, out)
        elif kind == SLICE_LAYER or kind == CONCATENATE_LAYER or kind == ADD_LAYER or kind == MULTIPLY_LAYER:
            if graph is None:
                raise ValueError("a merge or input layer, but graph=None")
            second = node_output(x, work, layers, graph.sources[k, SOURCE2], rows)
            merge_forward(out, inp, second, kind, layers[k, B_OFF])
        else:
            raise ValueError("unknown layer kind")
        inp = out
    return inp


@kernel(inline=True)
def loss_gradient(dout, pred, target, loss, last, grad_scale):
    """dout = dL/d(the last layer's output), times ``grad_scale``; ``last`` is that layer's row.
    Returns whether it is dL/d(its pre-activation) instead: a Dense or Activation layer whose
    activation is differentiated with the loss as one (``fused_loss_activation``)."""
    fused = (last[KIND] == DENSE_LAYER or last[KIND] == ACTIVATION_LAYER) and fused_loss_activation(loss, last[ACT])
    if fused and loss == CROSS_ENTROPY:
        softmax_cross_entropy_backward(dout, pred, target)
    elif fused:
        sigmoid_binary_cross_entropy_backward(dout, pred, target)
    else:
        loss_backward(loss, dout, pred, target)
    if grad_scale != 1.0:
        scale = dout.dtype.type(grad_scale)
        for i in range(dout.shape[0]):
            for j in range(dout.shape[1]):
                dout[i, j] *= scale
    return fused


@kernel
def network_backward(net, grads, x, work, loss, target, dropout=True, batchnorm=True, embedding=True, masking=True,
                     user=None, row0=0, grad_scale=1.0):
    """Fill ``grads`` with dL/dparams for the batch whose training forward pass is in ``work.acts``.

    One rule for every kind: ``work.deltas[cur]`` holds dL/d(layer k's output) when layer k is
    reached, and the layer's backward leaves dL/d(its input) there (an in-place pass) or in
    ``deltas[1 - cur]`` (a dense layer's dx), which then becomes ``cur``. The loss and the
    last activation are differentiated as one where ``fused_loss_activation`` says so.
    ``dropout``/``batchnorm``/``embedding``/``masking``/``user``/``row0`` as in ``network_forward``. ``grad_scale`` multiplies the
    loss gradient (a rank's share of a batch's rows, under MPI); every later pass is linear in
    it, so it scales every gradient.
    """
    params, layers, alphas, rng = net
    acts, act_off, deltas = work.acts, work.act_off, work.deltas
    rows = x.shape[0]
    last = layers.shape[0] - 1
    n_last = layers[last, N_OUT]
    pred = acts[act_off[last + 1]: act_off[last + 1] + rows * n_last].reshape(rows, n_last)
    cur = 0
    fused = loss_gradient(deltas[cur, : rows * n_last].reshape(rows, n_last), pred, target, loss, layers[last],
                          grad_scale)
    for k in range(last, -1, -1):
        n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
        out = acts[act_off[k + 1]: act_off[k + 1] + rows * n_out].reshape(rows, n_out)
        dout = deltas[cur, : rows * n_out].reshape(rows, n_out)
        kind = layers[k, KIND]
        if kind == DROPOUT_LAYER:
            if dropout is None:
                raise ValueError("a Dropout layer, but dropout=None")
            if k > 0:  # the input batch needs no gradient
                stream = dropout_stream(rng[RNG_KEY], rng[RNG_STEP], k)
                flat = dout.reshape(-1)
                dropout_backward(flat, flat, stream, alphas[k, ALPHA], row0 * n_out)
            continue
        if kind == BATCHNORM_LAYER:  # no activation of its own; dL/d(its input) in place
            if batchnorm is None:
                raise ValueError("a BatchNorm layer, but batchnorm=None")
            inp = x if k == 0 else acts[act_off[k]: act_off[k] + rows * n_in].reshape(rows, n_in)
            batchnorm_backward(dout if k > 0 else dout[:0], grads, dout, inp, params, layers[k, W_OFF],
                               layers[k, B_OFF], alphas[k, EPSILON], work.stats)
            continue
        if kind == EMBEDDING_LAYER:  # the first layer: the table's gradient only
            if embedding is None:
                raise ValueError("an Embedding layer, but embedding=None")
            combiner = np.int64(alphas[k, ALPHA])
            dim = embedding_dim(combiner, n_out, n_in)
            dtable = grads[layers[k, W_OFF]: layers[k, B_OFF]].reshape(-1, dim)
            embedding_backward(dtable, dout, x, combiner, alphas[k, EPSILON] != 0)
            continue
        if kind == MASKING_LAYER:
            if masking is None:
                raise ValueError("a Masking layer, but masking=None")
            if k > 0:  # the input batch needs no gradient
                inp = acts[act_off[k]: act_off[k] + rows * n_in]
                flat = dout.reshape(-1)
                masking_backward(flat, flat, inp, alphas[k, ALPHA])
            continue
        if kind == USER_LAYER:  # dL/d(its input) into the other buffer, as a dense layer's dx
            if user is None:
                raise ValueError("a user layer, but user=None")
            inp = x if k == 0 else acts[act_off[k]: act_off[k] + rows * n_in].reshape(rows, n_in)
            dx = deltas[1 - cur, : (rows * n_in if k > 0 else 0)].reshape(rows if k > 0 else 0, n_in)
            user.backward[layers[k, B_OFF]](inp, params, out, dout, grads, dx)
            cur = 1 - cur
            continue
        if not (k == last and fused):
            activation_backward(dout, dout, out, layers[k, ACT], alphas[k, ALPHA])
        if kind == DENSE_LAYER:
            inp = x if k == 0 else acts[act_off[k]: act_off[k] + rows * n_in].reshape(rows, n_in)
            w, b = layers[k, W_OFF], layers[k, B_OFF]
            W = params[w: w + n_in * n_out].reshape(n_in, n_out)
            dW = grads[w: w + n_in * n_out].reshape(n_in, n_out)
            # The input batch needs no gradient: an empty dx tells dense_backward to skip it.
            dx = deltas[1 - cur, : (rows * n_in if k > 0 else 0)].reshape(rows if k > 0 else 0, n_in)
            dense_backward(dx, dW, grads[b: b + n_out], dout, inp, W)
            cur = 1 - cur
        elif kind != ACTIVATION_LAYER:
            raise ValueError("unknown layer kind")


@kernel(inline=True)
def node_output(x, work, layers, node, rows):
    """The output of node ``node`` (a layer's row) for ``rows`` rows; the gathered batch for -1."""
    if node < 0:
        return x
    n = layers[node, N_OUT]
    return work.acts[work.act_off[node + 1]: work.act_off[node + 1] + rows * n].reshape(rows, n)


@kernel(inline=True)
def node_delta(graph, work, layers, node, rows):
    """Node ``node``'s dL/d(output) in ``graph.deltas``."""
    n = layers[node, N_OUT]
    return graph.deltas[work.act_off[node + 1]: work.act_off[node + 1] + rows * n].reshape(rows, n)


@kernel(inline=True)
def merge_element(first, second, r, j, n1, n2, start, kind):
    """Element (r, j) of a merge layer's or an input's output, from flat row-major ``first``
    (rows, n1) and ``second`` (rows, n2): SLICE first[r, start + j]; CONCATENATE [first, second];
    ADD first + second; MULTIPLY first * second (the CUDA twin compiles this very function)."""
    if kind == SLICE_LAYER:
        return first[r * n1 + start + j]
    if kind == CONCATENATE_LAYER:
        return first[r * n1 + j] if j < n1 else second[r * n2 + j - n1]
    if kind == ADD_LAYER:
        return first[r * n1 + j] + second[r * n2 + j]
    return first[r * n1 + j] * second[r * n2 + j]


@kernel(inline=True)
def merge_forward(out, first, second, kind, start):
    """out (rows, width) of a merge layer or an input (``merge_element``); ``second`` may be ``first``."""
    rows, width = out.shape
    n1, n2 = first.shape[1], second.shape[1]
    a, b = first.reshape(-1), second.reshape(-1)
    for r in range(rows):
        for j in range(width):
            out[r, j] = merge_element(a, b, r, j, n1, n2, start, kind)


@kernel(inline=True)
def add_into(dst, src, lo):
    """dst += src[:, lo:lo + dst.shape[1]] (a node's gradient gets a consumer's share)."""
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] += src[r, lo + j]


@kernel(inline=True)
def add_product_into(dst, d, factor):
    """dst += d * factor elementwise (a Multiply's gradient to one of its inputs)."""
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] += d[r, j] * factor[r, j]


@kernel
def graph_backward(net, grads, x, work, loss, target, graph, dropout=True, batchnorm=True, embedding=True, masking=True,
                   user=None, row0=0, grad_scale=1.0):
    """``network_backward`` for a ``Graph``: every node's gradient buffer starts at zero, the loss
    gradient goes to the last node's, and each layer, in reverse order, adds dL/d(its inputs) into
    its sources' buffers (a node read by several layers sums their shares) after its own
    gradients. The gathered batch and input slices need no gradient."""
    params, layers, alphas, rng = net
    rows = x.shape[0]
    last = layers.shape[0] - 1
    for k in range(last + 1):
        d = node_delta(graph, work, layers, k, rows)
        for r in range(rows):
            for j in range(d.shape[1]):
                d[r, j] = 0
    fused = loss_gradient(node_delta(graph, work, layers, last, rows), node_output(x, work, layers, last, rows), target,
                          loss, layers[last], grad_scale)
    for k in range(last, -1, -1):
        n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
        kind = layers[k, KIND]
        if kind == SLICE_LAYER:
            continue
        src, src2 = graph.sources[k, SOURCE], graph.sources[k, SOURCE2]
        out = node_output(x, work, layers, k, rows)
        d = node_delta(graph, work, layers, k, rows)
        inp = node_output(x, work, layers, src, rows)
        wants = src >= 0 and layers[src, KIND] != SLICE_LAYER
        scratch = work.deltas[0, : (rows * n_in if wants else 0)].reshape(rows if wants else 0, n_in)
        if kind == DENSE_LAYER or kind == ACTIVATION_LAYER:
            if not (k == last and fused):
                activation_backward(d, d, out, layers[k, ACT], alphas[k, ALPHA])
            if kind == DENSE_LAYER:
                w, b = layers[k, W_OFF], layers[k, B_OFF]
                W = params[w: w + n_in * n_out].reshape(n_in, n_out)
                dense_backward(scratch, grads[w: w + n_in * n_out].reshape(n_in, n_out), grads[b: b + n_out], d, inp, W)
            else:
                scratch = d  # dL/d(its input) is its own, after the activation's derivative
        elif kind == DROPOUT_LAYER:
            if dropout is None:
                raise ValueError("a Dropout layer, but dropout=None")
            flat = d.reshape(-1)
            dropout_backward(flat, flat, dropout_stream(rng[RNG_KEY], rng[RNG_STEP], k), alphas[k, ALPHA], row0 * n_out)
            scratch = d
        elif kind == BATCHNORM_LAYER:
            if batchnorm is None:
                raise ValueError("a BatchNorm layer, but batchnorm=None")
            batchnorm_backward(scratch, grads, d, inp, params, layers[k, W_OFF], layers[k, B_OFF], alphas[k, EPSILON],
                               work.stats)
        elif kind == EMBEDDING_LAYER:
            if embedding is None:
                raise ValueError("an Embedding layer, but embedding=None")
            combiner = np.int64(alphas[k, ALPHA])
            table = grads[layers[k, W_OFF]: layers[k, B_OFF]].reshape(-1, embedding_dim(combiner, n_out, n_in))
            embedding_backward(table, d, inp, combiner, alphas[k, EPSILON] != 0)
            continue
        elif kind == MASKING_LAYER:
            if masking is None:
                raise ValueError("a Masking layer, but masking=None")
            if wants:
                masking_backward(scratch.reshape(-1), d.reshape(-1), inp.reshape(-1), alphas[k, ALPHA])
        elif kind == USER_LAYER:
            if user is None:
                raise ValueError("a user layer, but user=None")
            user.backward[layers[k, B_OFF]](inp, params, out, d, grads, scratch)
        elif kind == CONCATENATE_LAYER or kind == ADD_LAYER or kind == MULTIPLY_LAYER:
            other = node_output(x, work, layers, src2, rows)
            if src2 >= 0 and layers[src2, KIND] != SLICE_LAYER:
                target2 = node_delta(graph, work, layers, src2, rows)
                if kind == CONCATENATE_LAYER:
                    add_into(target2, d, n_in)
                elif kind == ADD_LAYER:
                    add_into(target2, d, 0)
                else:
                    add_product_into(target2, d, inp)
            if wants:
                if kind == MULTIPLY_LAYER:
                    for r in range(rows):
                        for j in range(n_in):
                            scratch[r, j] = d[r, j] * other[r, j]
                else:
                    for r in range(rows):
                        for j in range(n_in):
                            scratch[r, j] = d[r, j]
        else:
            raise ValueError("unknown layer kind")
        if wants:
            add_into(node_delta(graph, work, layers, src, rows), scratch, 0)


@kernel
def apply_optimizers(params, train, tensors, schedules):
    """One step of every optimizer on its own slice of the flat buffers, after clipping the
    slice's gradients as the optimizer asks (global_clipnorm over all of an optimizer's slices
    first, ``clip_global_norms``; ``tensors``: [start, stop) of every weight tensor, for clipnorm),
    at the learning rate its schedule gives for this step (written into ``opt_hyper[s, H_LR]``).

    ``tensors`` None: no optimizer clips; ``schedules`` None: no optimizer has a schedule. Numba
    drops a branch on ``is None`` of a None-typed argument before typing it, so a model without
    clipping or schedules compiles neither (seconds of a cold start).
    """
    grads, state1, state2, opt_meta, opt_hyper, opt_steps = train
    if tensors is not None:
        clip_global_norms(grads, opt_meta, opt_hyper)
    for s in range(opt_meta.shape[0]):
        lo, hi = opt_meta[s, 0], opt_meta[s, 1]
        if tensors is not None:
            clip_gradients(grads, lo, hi, tensors, opt_hyper[s])
        if schedules is not None:
            if opt_hyper[s, H_SCHEDULE] != CONSTANT:
                opt_hyper[s, H_LR] = learning_rate_at(opt_hyper[s], H_SCHEDULE, opt_steps[s])
        opt_steps[s] += 1
        optimizer_step(opt_meta[s, 2], params[lo:hi], grads[lo:hi], state1[lo:hi], state2[lo:hi],
                       opt_hyper[s], opt_steps[s])


def workspace_layout(layers, rows):
    """The workspace of passes over up to ``rows`` rows, for both backends: (act_off, size of
    ``acts``, shape of ``deltas``, size of ``targets``, size of ``stats``). ``act_off[k]`` is where
    layer k's input starts in ``acts`` (``act_off[0]``: the gathered batch), ``act_off[k + 1]`` its
    output; ``stats`` fits the widest BatchNorm layer (0 without one)."""
    layers = np.asarray(layers, dtype=np.int64).reshape(-1, 6)
    widths = np.concatenate([[layers[0, N_IN]], layers[:, N_OUT]])
    act_off = np.concatenate([[0], np.cumsum(widths * rows)]).astype(np.int64)
    batchnorm = layers[layers[:, KIND] == BATCHNORM_LAYER, N_OUT]
    n_stats = STATS_ROWS * int(batchnorm.max()) if batchnorm.size else 0
    return act_off, int(act_off[-1]), (2, int(rows * widths.max())), int(rows * widths[-1]), n_stats


def alpha_table(alphas):
    """``alphas`` as the kernels read it, float64 (L, 2); a 1-D array of one float per layer (the
    layout before BatchNorm's epsilon) becomes the first column."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim == 1:
        alphas = np.stack([alphas, np.zeros_like(alphas)], axis=1)
    if alphas.ndim != 2 or alphas.shape[1] != 2:
        raise ValueError(f"alphas must have shape (layers, 2), got {alphas.shape}")
    return np.ascontiguousarray(alphas)


def weight_tensors(layers, user_sizes=()):
    """``tensors`` for the network table ``layers``: [start, stop) of each dense layer's W and b,
    each BatchNorm's gamma and beta, each Embedding's table and each user layer's trainable
    weights, whose sizes the table does not hold: ``user_sizes[i]`` lists user layer i's (the
    index in its row's b column), in order from its W offset."""
    rows = []
    for w, b, n_in, n_out, _, kind in np.asarray(layers, dtype=np.int64).reshape(-1, 6):
        if kind == USER_LAYER:
            if b >= len(user_sizes):
                raise ValueError(f"user_sizes lists {len(user_sizes)} user layers, the table names user layer {b}")
            for size in user_sizes[b]:
                rows.append([w, w + size])
                w += size
        elif kind == DENSE_LAYER:
            rows += [[w, w + n_in * n_out], [b, b + n_out]]
        elif kind == BATCHNORM_LAYER:
            rows += [[w, w + n_out], [b, b + n_out]]
        elif kind == EMBEDDING_LAYER:
            rows += [[w, b]]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


@kernel
def train_batches(net, train, work, batches, loss, batch_loss, batch_correct, counts, metrics, reg, tensors, schedules,
                  dropout=True, batchnorm=True, embedding=True, masking=True, user=None, collective=None, graph=None):
    """Train ``net`` on batches ``batches.first`` .. ``batches.stop - 1`` of the rows
    ``x[order]``, ``y[order]``.

    Writes each batch's loss (with the weight penalty of ``reg``) and number of correct rows into
    ``batch_loss``/``batch_correct``, and adds the counters of the training metrics ``metrics``
    (``kernels.metrics.metric_counts``' spec) to ``counts``.
    Returns -1, or the index of the first batch whose loss was NaN or infinite (training
    stops there, before that batch's update). ``net.rng[RNG_STEP]`` advances by one per batch trained.
    ``metrics``, ``reg``, ``tensors``, ``schedules``: None for a model without counted metrics,
    weight penalties, clipping or schedules, whose code then compiles out (see ``apply_optimizers``); ``dropout``,
    ``batchnorm``, ``embedding``, ``masking``, ``user`` likewise for layer kinds (see ``network_forward``). These stay arguments of
    their own, outside the bundles: Numba drops a branch only on a None-typed argument.

    ``collective``: None in one process; under MPI, a ``kernels.distributed.Collective``: this rank
    trains on its share of each batch's rows, ``batch_loss``/``batch_correct`` get the whole
    batch's figures, ``counts`` this rank's rows only (the caller sums them over the ranks).
    ``graph``: None for a stack of layers, or a model's ``Graph``.
    """
    x, y, order, batch_size, first, stop = batches
    acts, act_off, targets = work.acts, work.act_off, work.targets
    n = order.size
    n_in = x.shape[1]
    n_out = y.shape[1]
    for bi in range(first, stop):
        lo = bi * batch_size
        rows = min(lo + batch_size, n) - lo
        r0, r1 = 0, rows
        if collective is not None:
            r0, r1 = rank_rows(rows, collective.rank, collective.size)
        local = r1 - r0
        xb = acts[act_off[0]: act_off[0] + local * n_in].reshape(local, n_in)
        yb = targets[: local * n_out].reshape(local, n_out)
        gather_rows(xb, x, order, lo + r0)
        gather_rows(yb, y, order, lo + r0)
        value = 0.0
        correct = 0
        if local > 0:  # a rank's share of a batch smaller than the job is empty
            pred = network_forward(net, xb, work, True, dropout, batchnorm, embedding, masking, user, r0, graph)
            value = loss_forward(loss, pred, yb)
            correct = count_correct(pred, yb)
            if metrics is not None:  # a diverged batch's counts are never read
                metric_counts(metrics, counts, pred, yb)
        share = 1.0
        if collective is not None:
            share = 1.0 if loss_is_summed(loss) else local / rows
            value, correct = allreduce_loss(collective, value * share, correct)
        batch_loss[bi] = value
        if not np.isfinite(value):
            return bi
        batch_correct[bi] = correct
        if local > 0:
            if graph is None:  # (Numba prunes a branch only on a plain ``is None`` test)
                network_backward(net, train.grads, xb, work, loss, yb, dropout, batchnorm, embedding, masking, user,
                                 r0, share)
            else:
                graph_backward(net, train.grads, xb, work, loss, yb, graph, dropout, batchnorm, embedding, masking,
                               user, r0, share)
        else:
            for i in range(train.grads.size):
                train.grads[i] = 0
        if collective is not None:
            allreduce_gradients(collective, train.grads)
        if reg is not None:
            batch_loss[bi] = value + regularization_forward_backward(net.params, train.grads, reg)
        apply_optimizers(net.params, train, tensors, schedules)
        net.rng[RNG_STEP] += 1
    return -1


@kernel
def predict_batches(out, net, x, batch_size, work, training, dropout=True, batchnorm=True, embedding=True, masking=True,
                    user=None, graph=None):
    """out[i] = network(x[i]) for every row, ``batch_size`` rows per forward pass: in inference
    mode, or with ``training`` as ``network_forward``'s (Dropout active, step ``net.rng[RNG_STEP]``)."""
    n = x.shape[0]
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        pred = network_forward(net, x[lo:hi], work, training, dropout, batchnorm, embedding, masking, user, 0, graph)
        for i in range(hi - lo):
            for j in range(pred.shape[1]):
                out[lo + i, j] = pred[i, j]


@kernel
def evaluate_batches(net, loss, x, y, batch_size, work, dropout=True, batchnorm=True, embedding=True, masking=True,
                     user=None, graph=None):
    """(sum over batches of loss x rows, number of correct rows) over all rows of ``x``, in
    inference mode (``net.rng`` is not read)."""
    n = x.shape[0]
    total = 0.0
    correct = 0
    for lo in range(0, n, batch_size):
        hi = min(lo + batch_size, n)
        pred = network_forward(net, x[lo:hi], work, False, dropout, batchnorm, embedding, masking, user, 0, graph)
        total += loss_forward(loss, pred, y[lo:hi]) * (hi - lo)
        correct += count_correct(pred, y[lo:hi])
    return total, correct
