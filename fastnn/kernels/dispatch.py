"""One layer of any kind, forward and backward: the only place where the CPU passes branch on a
layer's kind (``kernels/table.py`` lists the kinds). The walkers of ``kernels/network.py`` (the
stack and the graph) route buffers and call these; ``fastnn/cuda/dispatch.py`` is the CUDA twin,
name for name.

An optional kind's argument (``dropout``, ``batchnorm``, ``embedding``, ``masking``, ``user``,
and ``graph`` for the merge layers) None compiles that kind's branch out: Numba prunes a branch
on ``is None`` of a None-typed argument before it inlines the branch's kernels, which keeps a
plain model's cold start short. That is why the two are functions of their own, not inlined into
the walkers: inlined, every kind's kernels would be spliced in before the pruning could drop
them (the first fit of the seed network took about 18 s of CPU time that way, against 14 s).
"""
import numpy as np

from ..config import kernel
from .activations import IDENTITY, activation_backward, bias_activation_forward
from .batchnorm import batchnorm_backward, batchnorm_forward
from .dense import dense_backward, dense_forward, gemm_bits, gemm_tiles
from .dropout import dropout_backward, dropout_forward, dropout_stream
from .embedding import embedding_backward, embedding_dim, embedding_forward
from .layernorm import layernorm_backward, layernorm_forward
from .masking import masking_backward, masking_forward
from .merge import merge_backward, merge_forward
from .table import (ACT, ACTIVATION_LAYER, ADD_LAYER, ALPHA, B_OFF, BATCHNORM_LAYER, CONCATENATE_LAYER, DENSE_LAYER,
                    DROPOUT_LAYER, EMBEDDING_LAYER, EPSILON, KIND, LAYERNORM_LAYER, MASKING_LAYER, MULTIPLY_LAYER,
                    N_IN, N_OUT, RNG_KEY, RNG_STEP, SLICE_LAYER, USER_LAYER, W_OFF)
from .views import matrix_view

# Where ``layer_backward`` leaves dL/d(the layer's input).
NO_INPUT_GRADIENT, IN_PLACE, INTO_DX, ADDED = range(4)


@kernel
def layer_forward(net, k, out, inp, second, work, training, keep, row0, dropout, batchnorm, embedding, masking,
                  user, graph):
    """Layer k of ``net`` on ``inp`` (rows, n_in) into ``out`` (rows, n_out); ``second``: a merge
    layer's second input. Returns the layer's output: ``out``, or ``inp`` itself for a Dropout at
    inference unless ``keep`` (other layers read ``out``: a copy).

    ``training``: Dropout draws its mask for step ``net.rng[RNG_STEP]`` (``row0``: the index of
    inp's first row in the whole batch), BatchNorm uses the batch's statistics and updates its
    running ones; otherwise Dropout is the identity and BatchNorm uses its running statistics.
    ``graph`` None (a stack): merge layers and input slices are an error, and their code compiles
    out, as an optional kind's.
    """
    params, layers, alphas, rng, gemm = net
    n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
    kind = layers[k, KIND]
    if kind == DENSE_LAYER:
        w, b = layers[k, W_OFF], layers[k, B_OFF]
        dense_forward(out, inp, matrix_view(params, w, n_in, n_out), params[b: b + n_out],
                      layers[k, ACT], alphas[k, ALPHA], gemm_bits(gemm, k), gemm_tiles(gemm))
    elif kind == ACTIVATION_LAYER:
        bias_activation_forward(out, inp, params[0:0], layers[k, ACT], alphas[k, ALPHA])
    elif kind == DROPOUT_LAYER:
        if dropout is None:
            raise ValueError("a Dropout layer, but dropout=None")
        if training:
            stream = dropout_stream(rng[RNG_KEY], rng[RNG_STEP], k)
            dropout_forward(out.reshape(-1), inp.reshape(-1), stream, alphas[k, ALPHA], row0 * n_out)
        elif keep:
            merge_forward(out, inp, inp, SLICE_LAYER, 0)  # a copy
        else:
            return inp  # its output is its input: nothing copied
    elif kind == BATCHNORM_LAYER:
        if batchnorm is None:
            raise ValueError("a BatchNorm layer, but batchnorm=None")
        # A frozen BatchNorm (momentum -1) runs in inference mode in training too.
        batchnorm_forward(out, inp, params, layers[k, W_OFF], layers[k, B_OFF], training and alphas[k, ALPHA] >= 0,
                          alphas[k, ALPHA], alphas[k, EPSILON], work.stats)
    elif kind == LAYERNORM_LAYER:
        if batchnorm is None:  # the normalization kinds' argument
            raise ValueError("a LayerNormalization layer, but batchnorm=None")
        layernorm_forward(out, inp, params, layers[k, W_OFF], layers[k, B_OFF], alphas[k, EPSILON],
                          np.int64(alphas[k, ALPHA]))
    elif kind == EMBEDDING_LAYER:
        if embedding is None:
            raise ValueError("an Embedding layer, but embedding=None")
        combiner = np.int64(alphas[k, ALPHA])
        table = params[layers[k, W_OFF]: layers[k, B_OFF]].reshape(-1, embedding_dim(combiner, n_out, n_in))
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
        merge_forward(out, inp, second, kind, layers[k, B_OFF])
    else:
        raise ValueError("unknown layer kind")
    return out


@kernel
def layer_backward(net, grads, k, dx, dsum, dsum2, dout, inp, second, out, work, row0, applied, fuse, dropout,
                   batchnorm, embedding, masking, user, graph):
    """Layer k's gradients into ``grads`` and dL/d(its input), from ``dout`` = dL/d(its output)
    (or dL/d(its pre-activation) when ``applied``: the pass above applied this layer's activation
    derivative, ``table.fuse_loss_backward``/``fuse_activation_backward``). ``inp``, ``second``,
    ``out``: its inputs and output of the forward pass.

    Returns where dL/d(its input) is: ``INTO_DX``, written into ``dx``; ``IN_PLACE``, in ``dout``
    (an elementwise layer works in place); ``ADDED``, already added into ``dsum`` and ``dsum2``,
    the gradients of its input nodes in a graph (a merge layer, which exists only there);
    ``NO_INPUT_GRADIENT`` (an Embedding's ids, an input slice). ``dx`` (``dsum``, ``dsum2``) with
    no rows: that input needs no gradient. ``fuse``
    (``table.fuse_activation_backward``): a dense layer also applies layer k - 1's activation
    derivative to ``dx`` (from ``inp``, that layer's output). ``graph`` as in ``layer_forward``.
    """
    params, layers, alphas, rng, gemm = net
    n_in, n_out = layers[k, N_IN], layers[k, N_OUT]
    kind = layers[k, KIND]
    wanted = dx.shape[0] > 0
    if kind == DENSE_LAYER:
        if not applied:
            activation_backward(dout, dout, out, layers[k, ACT], alphas[k, ALPHA])
        w, b = layers[k, W_OFF], layers[k, B_OFF]
        dense_backward(dx, matrix_view(grads, w, n_in, n_out), grads[b: b + n_out], dout, inp,
                       matrix_view(params, w, n_in, n_out), gemm_bits(gemm, k), gemm_tiles(gemm))
        if fuse and wanted:
            activation_backward(dx, dx, inp, layers[k - 1, ACT], alphas[k - 1, ALPHA])
        return INTO_DX
    elif kind == ACTIVATION_LAYER:
        if wanted and not applied and layers[k, ACT] != IDENTITY:
            activation_backward(dout, dout, out, layers[k, ACT], alphas[k, ALPHA])
        return IN_PLACE
    elif kind == DROPOUT_LAYER:
        if dropout is None:
            raise ValueError("a Dropout layer, but dropout=None")
        if wanted:
            flat = dout.reshape(-1)
            dropout_backward(flat, flat, dropout_stream(rng[RNG_KEY], rng[RNG_STEP], k), alphas[k, ALPHA],
                             row0 * n_out)
        return IN_PLACE
    elif kind == BATCHNORM_LAYER:
        if batchnorm is None:
            raise ValueError("a BatchNorm layer, but batchnorm=None")
        batchnorm_backward(dx, grads, dout, inp, params, layers[k, W_OFF], layers[k, B_OFF], alphas[k, EPSILON],
                           work.stats, alphas[k, ALPHA] < 0)
        return INTO_DX
    elif kind == LAYERNORM_LAYER:
        if batchnorm is None:
            raise ValueError("a LayerNormalization layer, but batchnorm=None")
        layernorm_backward(dx, grads, dout, inp, params, layers[k, W_OFF], layers[k, B_OFF], alphas[k, EPSILON],
                           np.int64(alphas[k, ALPHA]), work.stats)
        return INTO_DX
    elif kind == EMBEDDING_LAYER:
        if embedding is None:
            raise ValueError("an Embedding layer, but embedding=None")
        combiner = np.int64(alphas[k, ALPHA])
        table = grads[layers[k, W_OFF]: layers[k, B_OFF]].reshape(-1, embedding_dim(combiner, n_out, n_in))
        embedding_backward(table, dout, inp, combiner, alphas[k, EPSILON] != 0)
        return NO_INPUT_GRADIENT
    elif kind == MASKING_LAYER:
        if masking is None:
            raise ValueError("a Masking layer, but masking=None")
        if wanted:
            flat = dout.reshape(-1)
            masking_backward(flat, flat, inp.reshape(-1), alphas[k, ALPHA])
        return IN_PLACE
    elif kind == USER_LAYER:
        if user is None:
            raise ValueError("a user layer, but user=None")
        user.backward[layers[k, B_OFF]](inp, params, out, dout, grads, dx)
        return INTO_DX
    elif kind == SLICE_LAYER or kind == CONCATENATE_LAYER or kind == ADD_LAYER or kind == MULTIPLY_LAYER:
        if graph is None:
            raise ValueError("a merge or input layer, but graph=None")
        if kind == SLICE_LAYER:
            return NO_INPUT_GRADIENT
        merge_backward(dsum, dsum2, dout, inp, second, kind)
        return ADDED
    raise ValueError("unknown layer kind")
