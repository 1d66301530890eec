"""The layout of a network as the kernels read it: tables, kind codes, bundles and workspace.

A network is described by arrays, not objects, so that one compiled function serves every
architecture. Both targets read the same tables (on CUDA as device arrays, ``layers`` and
``alphas`` also on the host, where the launchers are chosen).

- ``layers`` int64 (L, 6), one row per layer, columns ``W_OFF``, ``B_OFF``, ``N_IN``, ``N_OUT``,
  ``ACT``, ``KIND``: where the layer's weights start in ``params``, its input and output width,
  its activation code (``kernels/activations.py``; IDENTITY for a kind without one) and its kind.
  ``B_OFF`` by kind: a Dense layer's bias; a BatchNorm's beta (gamma is at ``W_OFF``; its running
  mean and variance follow beta, outside every optimizer's slice); a LayerNormalization's beta
  (gamma at ``W_OFF``; either is -1 where the layer lacks it); an Embedding's table ends there
  (its table is ``params[W_OFF:B_OFF]``); a user layer's (``fastnn/user_layers.py``) index into
  the ``user`` functions; an input slice's first column of the gathered batch. Each kind has
  one forward and one backward branch per target, in ``kernels/dispatch.py`` and
  ``cuda/dispatch.py``; an unknown kind raises there.
- ``alphas`` float64 (L, 2), columns ``ALPHA``, ``EPSILON``: [the activation's alpha (LeakyReLU,
  ELU), a Dropout's rate, a BatchNorm's momentum, a Masking's mask value, an Embedding's
  combiner code or a LayerNormalization's flags (``kernels/layernorm.py``: CENTER, SCALE); a
  BatchNorm's or LayerNormalization's epsilon, or 1 for an Embedding with mask_zero].
- ``rng`` int64 (2,), ``RNG_KEY``, ``RNG_STEP``: the model's random key and its training step
  count; Dropout's masks are a function of the two and of the layer's index
  (``kernels/dropout.py``). The step advances by one per batch trained. On the CPU, in one
  place: the end of each step of ``network.train_batches``. On CUDA the device derives each
  step's ``control[C_STEP]`` = ``control[C_STEP0]`` + ``control[C_BATCH]`` in the gather kernel
  (the loss kernel advances ``C_BATCH``), and the host's ``rng`` catches up once per call with
  the batches trained. (A training-mode call outside ``fit``, ``model(x, training=True)``,
  counts as one step, which the backend's ``predict`` advances.)
- ``sources`` int64 (L, 2), ``SOURCE``, ``SOURCE2``, a functional model's only (``Graph``): the
  nodes layer k reads (a row index, -1 for the gathered batch, -1 for a second input it lacks).
- ``shared`` int64 (S, 4), ``CALL_ROW``, ``CALL_PARAMS``, ``CALL_GRADS``, ``CALL_SIZE``, a
  functional model's only (``Graph``): one row per later call of a shared layer (a layer called on
  several tensors has one table row per call, all with the same ``W_OFF``/``B_OFF``). The backward
  kernels write a layer's weight gradients by assignment, so call ``CALL_ROW`` writes its own into
  ``grads[CALL_GRADS: CALL_GRADS + CALL_SIZE]``, a region after the parameters' length (the
  gradient buffer is that much longer than ``params``), as if its parameters started there instead
  of at ``CALL_PARAMS`` (its walker hands it ``grads`` shifted by ``shared_gradient_shift``); once
  the backward pass is done, each region is added into ``grads[CALL_PARAMS: CALL_PARAMS +
  CALL_SIZE]`` (``add_shared_gradients`` of both targets), so a shared layer's gradient is the sum
  over its calls. S = 0 without shared layers.
- Several outputs (a functional model's): hidden Concatenate rows after all the others put the
  outputs side by side as the last row's output, which is all the passes see; the loss is then
  ``losses.OutputLosses``, each output's built-in loss on its columns. The CPU step takes it as a
  user loss (``user_losses.output_loss_kernels``), the CUDA step as an ``Outputs`` bundle.
- ``tensors`` int64 (T, 2): [start, stop) of every trained weight tensor in ``params``, for
  per-tensor gradient clipping (``weight_tensors``).
- ``reg`` float64 (R, 4): the weight penalties, [start, stop, l1, l2] per penalized slice of
  ``params`` (``kernels/regularizers.py``); R = 0 without regularizers.
- ``opt_meta`` int64 (S, 3): start, stop, kind of each optimizer's slice of ``params``;
  ``opt_hyper`` float64 (S, >= N_HYPER); ``opt_steps`` int64 (S,), the step counts.

The workspace (``workspace_layout``): ``acts``, one flat buffer for every layer's output (layer k
writes rows x ``layers[k, N_OUT]`` values from ``act_off[k + 1]``; ``act_off[0]`` is where a
gathered input batch goes); ``deltas`` (2, capacity), two gradient buffers a stack uses in turn
going backward (a graph uses them as scratch); ``targets``, the gathered targets; ``stats``,
float64 scratch of the normalization layers: BatchNorm's per-feature sums on the CPU,
LayerNormalization's per-row statistics on both targets.

The backward rule, on every walker of both targets: layer k's backward receives dL/d(its output)
and leaves dL/d(its input), applying its own activation's derivative. Two fusions are named
exceptions, decided by the predicates below on both targets (the CUDA launchers call their Python source,
``.py_func``, on the host tables): the loss pass also applies the last
layer's activation derivative (``fuse_loss_backward``; with the cross-entropy pairs as one
formula, ``fused_loss_activation``), and a dense layer's dx pass also applies the derivative of
the layer it reads (``fuse_activation_backward``). The layer whose derivative was applied then
skips it.
"""
from collections import namedtuple

import numpy as np

from ..config import kernel
from .activations import IDENTITY, SIGMOID, SOFTMAX
from .batchnorm import STATS_ROWS
from .layernorm import layernorm_stats_size
from .losses import BINARY_CROSS_ENTROPY, CROSS_ENTROPY

# The kernels' arguments, bundled by what they are (Numba types a named tuple of arrays as one
# argument and keeps the field names inside compiled code). The CUDA twins take the same bundles.
Network = namedtuple("Network", ["params", "layers", "alphas", "rng", "gemm"], defaults=(None,))
Network.__doc__ = """What every pass reads: the flat parameter buffer, ``layers``, ``alphas``, ``rng``, and
``gemm``: None (every product through Numba's ``np.dot``), or int64 (L,), which of each Dense
layer's products run on MKL (bits of ``dense.GEMM_*``), or a ``dense.TiledGemm`` of those bits and
the tiles each runs as (``fastnn/blas.py``; the CPU only)."""
Workspace = namedtuple("Workspace", ["acts", "act_off", "deltas", "targets", "stats"])
Workspace.__doc__ = """Scratch of the passes (``workspace_layout``): activations, the two gradient buffers, the
gathered targets, and float64 per-feature scratch for BatchNorm's CPU passes (the CUDA twin needs none)."""
NonzeroFirst = namedtuple("NonzeroFirst", ["idx", "parallel"])
NonzeroFirst.__doc__ = """A first Dense layer whose passes run over the columns nonzero in each block of a batch's
rows (``sparse.nonzero_first_forward``): ``idx`` int32 scratch (room for the input's columns and a
batch's rows, and a vector's lanes), ``parallel`` whether on Numba's threads."""
Training = namedtuple("Training", ["grads", "state1", "state2", "opt_meta", "opt_hyper", "opt_steps"])
Training.__doc__ = """What only training touches: the flat gradient buffer and the optimizers' state and tables."""
Batches = namedtuple("Batches", ["x", "y", "order", "batch_size", "first", "stop"])
Batches.__doc__ = """Which rows to train on: batches ``first`` .. ``stop - 1`` of ``x[order]``, ``y[order]``."""
SampleWeights = namedtuple("SampleWeights", ["values", "batch", "normalize"])
SampleWeights.__doc__ = """Per-row loss weights (``fit``'s sample_weight or class_weight): ``values`` one per row of
the data set, gathered with each batch (``order``) into ``batch`` (at least a batch of rows). ``normalize``
False: Keras' batch loss sum_i w_i l_i / rows; True: scikit-learn's MLP objective, the whole batch's
objective (weight penalty included) times rows / sum_i w_i, so the loss is sum_i w_i l_i / sum_i w_i."""
Outputs = namedtuple("Outputs", ["blocks", "weights", "n", "counts"])
Outputs.__doc__ = """The loss of several outputs as the CUDA step reads it (``cuda.losses.outputs_loss``):
``blocks`` int64 (m, 3) [loss code, first column, width] of each output among the outputs side by
side, ``weights`` float64 (m,) their loss weights, ``n`` = m, ``counts`` float64 (m,) where each
batch adds each output's own loss x rows (the logs' ``<output>_loss``)."""
Graph = namedtuple("Graph", ["sources", "deltas", "shared"], defaults=(np.zeros((0, 4), np.int64),))
Graph.__doc__ = """A model with several inputs or branches (``fastnn.Model``): ``sources`` int64 (L, 2), the
nodes each layer reads (a row index, -1 for the gathered batch, -1 for a second input it lacks);
``deltas``, one gradient buffer laid out as ``work.acts`` (node k's dL/d(output) at
``act_off[k + 1]``), where the layers that read a node add their share; ``shared`` int64 (S, 4), the
later calls of shared layers and where their weight gradients go (none by default)."""

W_OFF, B_OFF, N_IN, N_OUT, ACT, KIND = range(6)
SOURCE, SOURCE2 = range(2)
CALL_ROW, CALL_PARAMS, CALL_GRADS, CALL_SIZE = range(4)
(ACTIVATION_LAYER, DENSE_LAYER, DROPOUT_LAYER, BATCHNORM_LAYER, EMBEDDING_LAYER, MASKING_LAYER, USER_LAYER, SLICE_LAYER,
 CONCATENATE_LAYER, ADD_LAYER, MULTIPLY_LAYER, LAYERNORM_LAYER) = range(12)
# The kinds whose code compiles out of a network without them, in groups: the network kernels'
# arguments dropout, batchnorm (every normalization kind), embedding, masking, user, in this
# order (``user`` carries the user layers' functions, ``fastnn.user_layers.UserLayers``, instead
# of True; ``optional_kinds``).
OPTIONAL_KINDS = ((DROPOUT_LAYER,), (BATCHNORM_LAYER, LAYERNORM_LAYER), (EMBEDDING_LAYER,), (MASKING_LAYER,),
                  (USER_LAYER,))
ALPHA, EPSILON = range(2)
RNG_KEY, RNG_STEP = range(2)


@kernel(inline=True)
def fused_loss_activation(loss, act):
    """Whether the last activation and the loss are differentiated as one formula (softmax with
    cross-entropy, sigmoid with binary cross-entropy: dz = p - t, scaled; see losses.py)."""
    return (loss == CROSS_ENTROPY and act == SOFTMAX) or (loss == BINARY_CROSS_ENTROPY and act == SIGMOID)


@kernel(inline=True)
def fuse_loss_backward(layers):
    """Whether the loss's gradient pass also applies the last layer's activation derivative, so
    that it hands dL/d(the last pre-activation) to that layer, which then skips the derivative.
    True when the last layer has an activation: its derivative is computable from its output,
    which the loss pass reads anyway (on CUDA it costs no launch of its own)."""
    kind = layers[layers.shape[0] - 1, KIND]
    return kind == DENSE_LAYER or kind == ACTIVATION_LAYER


@kernel(inline=True)
def fuse_activation_backward(layers, k, sole_reader):
    """Whether layer k's dx pass also applies layer k - 1's activation derivative (as llm.c's
    ``matmul_backward(..., pre_gelu)``): its result is then dL/d(layer k - 1's pre-activation),
    and layer k - 1 skips the derivative. On CUDA the derivative runs in the dx GEMM's epilogue,
    saving a launch and a pass; the CPU applies it right after the dx product.

    True when layer k is Dense and reads layer k - 1 as that layer's only reader (``sole_reader``:
    always in a stack; a graph's node may have several, whose shares must all be summed first),
    and layer k - 1 is a Dense or Activation layer whose activation is elementwise and not the
    identity (softmax's derivative is row-wise; the identity's is 1, nothing to apply)."""
    if k == 0 or not sole_reader or layers[k, KIND] != DENSE_LAYER:
        return False
    kind, act = layers[k - 1, KIND], layers[k - 1, ACT]
    return (kind == DENSE_LAYER or kind == ACTIVATION_LAYER) and act != IDENTITY and act != SOFTMAX


@kernel(inline=True)
def shared_gradient_shift(shared, k):
    """How far after its parameters row k writes its weight gradients in ``grads``: 0, but for a
    later call of a shared layer (``shared``), which writes into its own region."""
    for i in range(shared.shape[0]):
        if shared[i, CALL_ROW] == k:
            return shared[i, CALL_GRADS] - shared[i, CALL_PARAMS]
    return 0


def workspace_layout(layers, rows):
    """The workspace of passes over up to ``rows`` rows, for both backends: (act_off, size of
    ``acts``, shape of ``deltas``, size of ``targets``, size of ``stats``). ``act_off[k]`` is where
    layer k's input starts in ``acts`` (``act_off[0]``: the gathered batch), ``act_off[k + 1]`` its
    output; ``stats`` fits the widest BatchNorm layer and the widest LayerNormalization (0 without
    either)."""
    layers = np.asarray(layers, dtype=np.int64).reshape(-1, 6)
    widths = np.concatenate([[layers[0, N_IN]], layers[:, N_OUT]])
    act_off = np.concatenate([[0], np.cumsum(widths * rows)]).astype(np.int64)
    batchnorm = layers[layers[:, KIND] == BATCHNORM_LAYER, N_OUT]
    layernorm = layers[layers[:, KIND] == LAYERNORM_LAYER, N_OUT]
    n_stats = max(STATS_ROWS * int(batchnorm.max()) if batchnorm.size else 0,
                  layernorm_stats_size(rows, int(layernorm.max())) if layernorm.size else 0)
    return act_off, int(act_off[-1]), (2, int(rows * widths.max())), int(rows * widths[-1]), n_stats


def optional_kinds(layers, user=None):
    """The network kernels' optional-kind arguments (dropout, batchnorm, embedding, masking, user)
    for the table ``layers``: True where a layer is of the group's kinds, else None, which
    compiles the group's code out; ``user``: the user layers' functions (None without any)."""
    kinds = np.asarray(layers, dtype=np.int64).reshape(-1, 6)[:, KIND]
    return tuple(True if np.isin(kinds, group).any() else None for group in OPTIONAL_KINDS[:-1]) + (user,)


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
        elif kind == LAYERNORM_LAYER:  # gamma and beta, those it has (-1 for the other)
            rows += [[o, o + n_out] for o in (w, b) if o >= 0]
        elif kind == EMBEDDING_LAYER:
            rows += [[w, b]]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)
