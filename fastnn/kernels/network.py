"""The whole network as kernels: forward, backward and the training loop over many batches
(predict's and evaluate's loops: ``kernels/inference.py``).

This file is the data path of ``MLP.fit``. For each batch, ``train_batches`` runs these stages in
order:
1. Gather a shuffled batch.
2. ``network_forward`` in training mode, layer by layer (``dispatch.layer_forward``); Dropout
   draws its mask for this step.
3. Evaluate the loss; count the training metrics (``kernels/metrics.py``).
4. ``network_backward`` (``graph_backward`` for a functional model): the loss gradient, then each
   layer in reverse (``dispatch.layer_backward``), by the one rule and the two named fusions of
   ``kernels/table.py``.
5. Add the weight penalty and its gradient (``kernels/regularizers.py``).
6. ``apply_optimizers``: for each optimizer's slice of the flat parameter buffer, clip the
   gradients, take this step's learning rate from the schedule, and update.
7. Advance the step count ``net.rng[RNG_STEP]`` (its one place on the CPU).
Under MPI (``collective``, ``kernels/distributed.py``) each rank runs stages 2-4 on its share
of the batch's rows; the loss is summed over the ranks before it is checked (every rank then
stops at the same batch) and the gradients between stages 4 and 5, so every rank takes the
same step.
The Python side calls it once per epoch (or per chunk of batches when a callback or progress
bar wants to see them), so no Python runs per batch.

The tables, kind codes, bundles and the workspace's layout are in ``kernels/table.py`` (imported
here under the same names). The walkers below only route buffers: which node a layer reads,
where dL/d(its input) goes, and, in a graph, the sum over a node's readers.
"""
import numpy as np

from ..config import kernel
from .activations import activation_backward
from .dispatch import IN_PLACE, INTO_DX, layer_backward, layer_forward
from .distributed import allreduce_gradients, allreduce_loss, rank_rows
from .losses import (CROSS_ENTROPY, loss_is_summed, sigmoid_binary_cross_entropy_backward,
                     softmax_cross_entropy_backward, batch_weight_scale, scale_values, weight_rows)
from .metrics import count_correct, metric_counts
from .optimizers import H_LR, H_SCHEDULE, clip_global_norms, clip_gradients, optimizer_step
from .parallel import gather_rows
from .regularizers import regularization_forward_backward
from .schedules import CONSTANT, learning_rate_at
from .sparse import (gather_sparse, nonzero_first_backward, nonzero_first_forward, sparse_first_backward,
                     sparse_first_forward)
from .table import (ACT, ACTIVATION_LAYER, ADD_LAYER, ALPHA, B_OFF, BATCHNORM_LAYER, CONCATENATE_LAYER,  # noqa: F401
                    DENSE_LAYER, DROPOUT_LAYER, EMBEDDING_LAYER, EPSILON, KIND, MASKING_LAYER, MULTIPLY_LAYER, N_IN,
                    N_OUT, OPTIONAL_KINDS, RNG_KEY, RNG_STEP, SLICE_LAYER, SOURCE, SOURCE2, USER_LAYER, W_OFF, Batches,
                    CALL_GRADS, CALL_PARAMS, CALL_SIZE, Graph, Network, NonzeroFirst, SampleWeights, Training,
                    Workspace, alpha_table, fuse_activation_backward, fuse_loss_backward, fused_loss_activation,
                    shared_gradient_shift, weight_tensors, workspace_layout)
from .views import matrix_view


@kernel
def network_forward(net, x, work, training, dropout=True, batchnorm=True, embedding=True, masking=True, user=None,
                    row0=0, graph=None, first=0):
    """Run every layer of ``net`` on the rows of ``x``; returns the last layer's output (a view of
    ``work.acts``, or of ``x`` when the layers after it are all inactive).

    ``training``: Dropout draws its mask for step ``net.rng[RNG_STEP]`` and BatchNorm normalizes with
    the batch's statistics and updates its running ones; otherwise Dropout is the identity and
    is skipped (its output is its input, nothing is copied) and BatchNorm uses its running statistics.

    ``dropout``/``batchnorm``/``embedding``/``masking``/``user`` None: the network has no such
    layer, and the kind's code compiles out (``kernels/dispatch.py``), which keeps it out of a
    plain model's cold start.

    ``row0``: the index of x's first row in the whole batch, when x is a rank's share of it
    (Dropout then draws the whole batch's mask for these rows).

    ``graph`` (a ``Graph``, None for a stack of layers): layer k reads the nodes
    ``graph.sources[k]`` instead of layer k - 1; the last layer is the output.

    ``first``: the layers before it have run already (their outputs are in ``work.acts``; a
    stack's zero-skipping first layer, ``kernels/sparse.py``).
    """
    layers = net.layers
    rows = x.shape[0]
    inp = node_output(x, work, layers, first - 1, rows)
    for k in range(first, layers.shape[0]):
        kind = layers[k, KIND]
        out = node_output(x, work, layers, k, rows)
        second = inp
        if graph is not None:
            inp = node_output(x, work, layers, graph.sources[k, SOURCE], rows)
            second = node_output(x, work, layers, graph.sources[k, SOURCE2], rows)
        elif kind == EMBEDDING_LAYER and k != 0:
            raise ValueError("an Embedding layer, but not the first layer")
        inp = layer_forward(net, k, out, inp, second, work, training, graph is not None, row0, dropout, batchnorm,
                            embedding, masking, user, graph)
    return inp


# Compiled on its own, not inlined: its types do not depend on a model's layer kinds, so one compile
# serves every model of a dtype (inlined, each new kind of model typed it again: 0.5 s of its 7.5).
@kernel
def loss_gradient(dout, pred, target, loss, layers, alphas, grad_scale, loss_fns=None, weights=None):
    """dout = dL/d(the last layer's output), times ``grad_scale``; or dL/d(its pre-activation) when
    ``fuse_loss_backward`` says so, which this returns (the cross-entropy pairs as one formula,
    ``fused_loss_activation``; any other activation's derivative applied after the loss's).
    ``loss_fns`` as ``train_batches``'; ``weights``: None, or the batch's per-row loss weights
    (``losses.weight_rows``)."""
    last = layers.shape[0] - 1
    fuse = fuse_loss_backward(layers)
    paired = fuse and fused_loss_activation(loss, layers[last, ACT])
    if paired and loss == CROSS_ENTROPY:
        softmax_cross_entropy_backward(dout, pred, target)
    elif paired:
        sigmoid_binary_cross_entropy_backward(dout, pred, target)
    else:
        loss_fns.gradient[0](dout, pred, target)
    if weights is not None:
        weight_rows(dout, weights)
    if grad_scale != 1.0:
        scale = dout.dtype.type(grad_scale)
        for i in range(dout.shape[0]):
            for j in range(dout.shape[1]):
                dout[i, j] *= scale
    if fuse and not paired:
        activation_backward(dout, dout, pred, layers[last, ACT], alphas[last, ALPHA])
    return fuse


@kernel
def network_backward(net, grads, x, work, loss, target, dropout=True, batchnorm=True, embedding=True, masking=True,
                     user=None, row0=0, grad_scale=1.0, stop=0, loss_fns=None, weights=None):
    """Fill ``grads`` with dL/dparams for the batch whose training forward pass is in ``work.acts``.

    ``work.deltas[cur]`` holds dL/d(layer k's output) when layer k is reached (dL/d(its
    pre-activation) where a fusion applied its derivative already, ``kernels/table.py``); the
    layer's backward leaves dL/d(its input) there (in place) or in ``deltas[1 - cur]``, which then
    becomes ``cur``. ``dropout``/``batchnorm``/``embedding``/``masking``/``user``/``row0`` as in
    ``network_forward``. ``grad_scale`` multiplies the loss gradient (a rank's share of a batch's
    rows, under MPI); every later pass is linear in it, so it scales every gradient.
    ``weights`` as ``loss_gradient``'s.
    """
    layers, deltas = net.layers, work.deltas
    rows = x.shape[0]
    last = layers.shape[0] - 1
    n_last = layers[last, N_OUT]
    cur = 0
    applied = loss_gradient(matrix_view(deltas[cur], 0, rows, n_last), node_output(x, work, layers, last, rows),
                            target, loss, layers, net.alphas, grad_scale, loss_fns, weights)
    for k in range(last, stop - 1, -1):
        n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
        inp = node_output(x, work, layers, k - 1, rows)
        dout = matrix_view(deltas[cur], 0, rows, n_out)
        # The input batch needs no gradient: a dx of no rows says so.
        dx = matrix_view(deltas[1 - cur], 0, rows if k > 0 else 0, n_in)
        fuse = fuse_activation_backward(layers, k, True)
        out = node_output(x, work, layers, k, rows)
        where = layer_backward(net, grads, k, dx, dx[:0], dx[:0], dout, inp, inp, out, work, row0, applied, fuse,
                               dropout, batchnorm, embedding, masking, user, None)
        if where == INTO_DX:
            cur = 1 - cur
        applied = fuse
    return cur, applied


@kernel(inline=True)
def node_output(x, work, layers, node, rows):
    """The output of node ``node`` (a layer's row) for ``rows`` rows; the gathered batch for -1."""
    if node < 0:
        return x
    n = layers[node, N_OUT]
    return matrix_view(work.acts, work.act_off[node + 1], rows, n)


@kernel(inline=True)
def node_delta(graph, work, layers, node, rows):
    """Node ``node``'s dL/d(output) in ``graph.deltas``; none (no rows) for the batch or an input
    slice, which need no gradient."""
    if node < 0 or layers[node, KIND] == SLICE_LAYER:
        return matrix_view(graph.deltas, 0, 0, 1)
    n = layers[node, N_OUT]
    return matrix_view(graph.deltas, work.act_off[node + 1], rows, n)


@kernel(inline=True)
def add_into(dst, src):
    """dst += src elementwise (a node's gradient gets a reader's share)."""
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] += src[r, j]


@kernel
def graph_backward(net, grads, x, work, loss, target, graph, dropout=True, batchnorm=True, embedding=True, masking=True,
                   user=None, row0=0, grad_scale=1.0, loss_fns=None, weights=None):
    """``network_backward`` for a ``Graph``: every node's gradient buffer starts at zero, the loss
    gradient goes to the last node's, and each layer, in reverse order, adds dL/d(its inputs) into
    its sources' buffers (a node read by several layers sums their shares) after its own
    gradients. The gathered batch and input slices need no gradient. No dense layer fuses its
    reader's activation derivative (``fuse_activation_backward`` with ``sole_reader`` False): a
    node's gradient is complete only once all its readers have added theirs. A shared layer's
    later calls write their weight gradients into regions of their own, added into the layer's
    at the end (``graph.shared``, ``table.py``)."""
    layers = net.layers
    rows = x.shape[0]
    last = layers.shape[0] - 1
    for k in range(last + 1):
        d = node_delta(graph, work, layers, k, rows)
        for r in range(d.shape[0]):
            for j in range(d.shape[1]):
                d[r, j] = 0
    applied = loss_gradient(node_delta(graph, work, layers, last, rows), node_output(x, work, layers, last, rows),
                            target, loss, layers, net.alphas, grad_scale, loss_fns, weights)
    for k in range(last, -1, -1):
        if layers[k, KIND] == SLICE_LAYER:
            continue
        n_in = layers[k, N_IN]
        src, src2 = graph.sources[k, SOURCE], graph.sources[k, SOURCE2]
        d = node_delta(graph, work, layers, k, rows)
        target_delta = node_delta(graph, work, layers, src, rows)
        wants = target_delta.shape[0] > 0
        scratch = matrix_view(work.deltas[0], 0, rows if wants else 0, n_in)
        # A later call of a shared layer writes its weight gradients into its own region (table.py).
        where = layer_backward(net, grads[shared_gradient_shift(graph.shared, k):], k, scratch, target_delta,
                               node_delta(graph, work, layers, src2, rows), d,
                               node_output(x, work, layers, src, rows), node_output(x, work, layers, src2, rows),
                               node_output(x, work, layers, k, rows), work, row0, applied and k == last,
                               fuse_activation_backward(layers, k, False), dropout, batchnorm, embedding, masking,
                               user, graph)
        if wants and (where == INTO_DX or where == IN_PLACE):
            add_into(target_delta, scratch if where == INTO_DX else d)
    add_shared_gradients(grads, graph.shared)


@kernel(inline=True)
def add_shared_gradients(grads, shared):
    """Each later call's weight gradients (``table.py``: ``shared``) added into its layer's own, in
    table order (one thread: no two additions race on a layer called three times)."""
    for i in range(shared.shape[0]):
        dst, src = shared[i, CALL_PARAMS], shared[i, CALL_GRADS]
        for j in range(shared[i, CALL_SIZE]):
            grads[dst + j] += grads[src + j]


@kernel
def apply_optimizers(params, train, tensors, schedules, parallel=None):
    """One step of every optimizer on its own slice of the flat buffers, after clipping the
    slice's gradients as the optimizer asks (global_clipnorm over all of an optimizer's slices
    first, ``clip_global_norms``; ``tensors``: [start, stop) of every weight tensor, for clipnorm),
    at the learning rate its schedule gives for this step (written into ``opt_hyper[s, H_LR]``).

    ``tensors`` None: no optimizer clips; ``schedules`` None: no optimizer has a schedule. Numba
    drops a branch on ``is None`` of a None-typed argument before typing it, so a model without
    clipping or schedules compiles neither (seconds of a cold start). ``parallel``: as
    ``optimizers.optimizer_step``'s.
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
                       opt_hyper[s], opt_steps[s], parallel)


@kernel
def train_batches(net, train, work, batches, loss, batch_loss, batch_correct, counts, metrics, reg, tensors, schedules,
                  dropout=True, batchnorm=True, embedding=True, masking=True, user=None, collective=None, graph=None,
                  sparse=None, loss_fns=None, weights=None, user_metrics=None, parallel_optimizer=None, nonzero=None,
                  parallel_gather=None):
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
    ``sparse``: None, or a ``kernels.sparse.SparseBatches``: a CSR data set, or a first Dense layer
    that skips the input's zeros (then its passes run here, and the walkers start after it).
    ``loss``: the loss's code, for the fused loss-activation gradients and MPI's reduction;
    ``loss_fns``: its compiled value, gradient and weighted value (``fastnn.user_losses.UserLoss``):
    a user loss's, or a built-in one's (``user_losses.loss_kernels``), called through their
    addresses, so that a step compiles its own loss alone and one compile serves every loss
    (calling ``loss_forward(loss, ...)`` here compiled all ten: 2.6 s of a cold start).
    ``user_metrics``: None, or a ``fastnn.user_losses.UserMetrics``: each user metric's value on
    the batch, times the batch's rows, is added to ``counts[offset + i]`` (their mean over rows is
    the epoch's figure).
    ``parallel_optimizer``: None, or True: Adam's parallel pass (``config.parallel_optimizer``).
    ``parallel_gather``: None, or True: the batch's rows gathered on Numba's threads
    (``parallel.gather_rows_parallel``), chosen per step as ``parallel_optimizer`` is (its kernel
    compiles only into a step that may run it).
    ``nonzero``: None, or a ``NonzeroFirst``: the first Dense layer's passes over the batch's nonzero
    columns (``sparse.nonzero_first_forward``/``nonzero_first_backward``), on a dense input with
    many zeros.
    ``weights``: None, or a ``SampleWeights``: each row's loss and gradient weighted
    (``losses.weighted_loss_forward``); the training metrics stay unweighted, as Keras' ``metrics``
    (their functions get the weights, and only the outputs' losses of several use them).
    """
    x, y, order, batch_size, first, stop = batches
    acts, act_off, targets = work.acts, work.act_off, work.targets
    n = order.size
    n_in = x.shape[1]
    n_out = y.shape[1]
    # Whether, between two batches, the zero-skipping first layer's weight gradient keeps zero in
    # every row that the batch had no nonzero for, so that the next batch clears only those rows
    # (``sparse_dense_backward``): not where a weight penalty, the allreduce or clipping writes to
    # the gradient as a whole.
    rows_kept = reg is None and collective is None and tensors is None
    for bi in range(first, stop):
        lo = bi * batch_size
        rows = min(lo + batch_size, n) - lo
        r0, r1 = 0, rows
        if collective is not None:
            r0, r1 = rank_rows(rows, collective.rank, collective.size)
        local = r1 - r0
        xb = matrix_view(acts, act_off[0], local, n_in)
        yb = matrix_view(targets, 0, local, n_out)
        # The layers run before the walkers: the zero-skipping first layer. An int64, never the literal 0
        # (Numba compiles a callee again for a literal argument): predict's is one, so training, predict
        # and evaluate share one compiled network_forward (0.5 s of a first predict).
        skip = np.int64(0)
        if sparse is None:
            gather_rows(xb, x, order, lo + r0, parallel_gather)
        else:
            gather_sparse(sparse, xb, x, order, lo + r0)
            if sparse.skip:
                skip = np.int64(1)
        gather_rows(yb, y, order, lo + r0)
        ran = skip  # the layers run before the walkers (``nonzero``: the first, both ways)
        wb = None
        scale = 1.0  # scikit-learn's normalization (SampleWeights.normalize), applied after the allreduce
        if weights is not None:
            wb = weights.batch[:local]
            for r in range(local):
                wb[r] = weights.values[order[lo + r0 + r]]
            if weights.normalize:
                scale = batch_weight_scale(weights.values, order, lo, rows)
        value = 0.0
        correct = 0
        if local > 0:  # a rank's share of a batch smaller than the job is empty
            # bool(True), not True: Numba compiles a function again for each literal argument, and
            # predict passes a plain bool; so training, predict and evaluate share one compiled
            # network_forward and layer_forward (a model's first fit and predict: 1.5 s less).
            if sparse is not None:  # (Numba prunes a branch only on a plain ``is None`` test)
                if skip:
                    sparse_first_forward(net, sparse, work, local)
            if nonzero is not None:
                nonzero_first_forward(net, xb, work, nonzero)
                ran = np.int64(1)
            pred = network_forward(net, xb, work, bool(True), dropout, batchnorm, embedding, masking, user, r0, graph,
                                   ran)
            # (the weights as weights.batch[:local], not wb: a first-class function takes no Optional)
            if weights is None:
                value = loss_fns.value[0](pred, yb)
            else:
                value = loss_fns.weighted[0](pred, yb, weights.batch[:local])
            correct = count_correct(pred, yb)
            if metrics is not None:  # a diverged batch's counts are never read
                metric_counts(metrics, counts, pred, yb)
            if user_metrics is not None:
                for i in range(len(user_metrics.functions)):
                    if weights is None:
                        figure = user_metrics.functions[i](pred, yb, user_metrics.no_weights)
                    else:
                        figure = user_metrics.functions[i](pred, yb, weights.batch[:local])
                    counts[user_metrics.offset + i] += figure * local
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
                cur, applied = network_backward(net, train.grads, xb, work, loss, yb, dropout, batchnorm, embedding,
                                                masking, user, r0, share, ran, loss_fns, wb)
                if sparse is not None:
                    if skip:
                        sparse_first_backward(net, train.grads, sparse, work, local, cur, applied,
                                              bi == first or not rows_kept)
                if nonzero is not None:
                    nonzero_first_backward(net, train.grads, xb, work, cur, applied, nonzero)
            else:
                graph_backward(net, train.grads, xb, work, loss, yb, graph, dropout, batchnorm, embedding, masking,
                               user, r0, share, loss_fns, wb)
        else:
            for i in range(train.grads.size):
                train.grads[i] = 0
        if collective is not None:
            allreduce_gradients(collective, train.grads)
        if reg is not None:
            batch_loss[bi] = value + regularization_forward_backward(net.params, train.grads, reg)
        if weights is not None:
            if weights.normalize:
                batch_loss[bi] *= scale
                scale_values(train.grads, train.grads.dtype.type(scale))
        apply_optimizers(net.params, train, tensors, schedules, parallel_optimizer)
        net.rng[RNG_STEP] += 1
    return -1
