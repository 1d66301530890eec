"""Layers: Input, Dense, Activation, Dropout, BatchNormalization, LayerNormalization, Embedding,
Masking.

A layer holds its configuration; its weights live in the model's flat parameter buffer,
laid out [W1, b1, W2, b2, ...] with each W of shape (input_dim, output_dim). The model
assigns each layer its offsets when it builds; ``get_weights``/``set_weights`` read and
write through them.
"""
import numba
import numpy as np

from . import activations, initializers, optimizers, regularizers
from .base import Configurable, _jsonable
from .kernels.layernorm import CENTER, SCALE
from .kernels.table import (ACT, ACTIVATION_LAYER, B_OFF, BATCHNORM_LAYER, DENSE_LAYER, DROPOUT_LAYER, EMBEDDING_LAYER,
                            KIND, LAYERNORM_LAYER, MASKING_LAYER, N_IN, N_OUT, USER_LAYER, W_OFF)
from .validation import check_features, check_float, check_int

_SEED_DEFAULT_ACTIVATION = "sigmoid"


class Layer(Configurable):
    """Base class of every layer. ``input_dim``/``output_dim`` are widths; ``_model`` is set when added.

    Your own layer: subclass it with ``build(self, input_dim)``, which declares the weights with
    ``self.add_weight(name, shape, initializer="glorot_uniform", trainable=True)`` (trainable ones
    first) and returns the output width, and two static methods of NumPy arrays,
    ``forward(x, *weights) -> y`` and ``backward(x, *weights, y, dy) -> (dx, (dW, ...))`` (one
    gradient per weight, in declaration order; return zeros for a non-trainable one). fastnn
    compiles them with Numba when the model is built and runs them inside the compiled step;
    the weights live in the model's flat buffers, are trained by the optimizer like any other,
    and are saved. Keep ``__init__`` arguments as attributes of the same names, as for every
    fastnn object: ``get_config`` reads them. In a float32 model keep constants typed
    (``x.dtype.type(1.0)``): Numba types a bare ``1.0`` as float64. CPU only.
    """
    input_dim = None
    output_dim = None
    _model = None
    forward = None  # a user layer's functions (see above); None for the built-in layers
    backward = None
    _lambda_style = False  # backward(x, y, dy) -> dx, as a Lambda's

    def is_user_layer(self):
        return self.forward is not None

    def __call__(self, inputs):
        """The functional API (``fastnn.Model``): connect this layer to a tensor (or, for a merge
        layer, a list of tensors) and return its output tensor."""
        if getattr(self, "_called", False):
            raise ValueError(f"this {type(self).__name__} was already called on a tensor: a layer is used once "
                             "(create another for another branch)")
        tensors = self._connect_tensors(inputs)
        self._called = True
        return Tensor(self, tensors, self.output_dim)

    def _connect_tensors(self, inputs):
        """Connect to what ``__call__`` got (one tensor; a merge takes a list); returns the tensors read."""
        tensor = as_tensor(inputs, f"{type(self).__name__}'s input")
        self.connect(tensor.width)
        return [tensor]

    def onnx_nodes(self, graph, inputs):
        """The ONNX export of this layer (``fastnn.onnx``): adds its nodes to ``graph`` (an
        ``onnx.GraphBuilder``), reading the tensors named ``inputs``, and returns its output's name."""
        raise ValueError(f"{type(self).__name__} has no ONNX export")

    def add_weight(self, name, shape, initializer="glorot_uniform", trainable=True):
        """Declare a weight of a user layer (in ``build``); returns its index among the layer's weights."""
        if not hasattr(self, "_declared"):
            raise ValueError("add_weight is for a layer's build(self, input_dim) method")
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        shape = tuple(check_int(d, f"shape of weight {name!r}", minimum=1) for d in shape)
        if trainable and any(not w["trainable"] for w in self._declared):
            raise ValueError(f"{type(self).__name__}.add_weight({name!r}): declare the trainable weights before the "
                             "non-trainable ones")
        self._declared.append({"name": str(name), "shape": shape, "initializer": initializers.get(initializer),
                               "trainable": bool(trainable)})
        return len(self._declared) - 1

    def build(self, input_dim):
        """A user layer's weights and output width (see the class docstring)."""
        raise NotImplementedError(f"{type(self).__name__} defines forward/backward but no build(self, input_dim)")

    def weight_shapes(self):
        """Shapes of this layer's parameter arrays, in buffer order."""
        return [w["shape"] for w in getattr(self, "_declared", [])]

    def weight_names(self):
        """Names of this layer's parameter arrays, in the order of ``weight_shapes`` (Keras')."""
        if hasattr(self, "_declared"):
            return [w["name"] for w in self._declared]
        return [f"weight_{i}" for i in range(len(self.weight_shapes()))]

    def count_params(self):
        return int(sum(np.prod(s) for s in self.weight_shapes()))

    def count_trainable_params(self):
        """Parameters an optimizer updates: the first this many of the layer's slice (the rest,
        such as BatchNorm's running statistics, are written by the forward pass only)."""
        if hasattr(self, "_declared"):
            return int(sum(np.prod(w["shape"]) for w in self._declared if w["trainable"]))
        return self.count_params()

    def trainable_weight_sizes(self):
        """The sizes of a user layer's trainable weights, in buffer order: the tensors that
        gradient clipping's clipnorm clips each by its own norm."""
        return [int(np.prod(w["shape"])) for w in getattr(self, "_declared", []) if w["trainable"]]

    def connect(self, input_dim):
        """Fix the input width from the previous layer; a mismatch names ``input_dim``. A user
        layer is built here: its weights are declared and its output width known."""
        if self.input_dim is None:
            self.input_dim = input_dim
        elif input_dim is not None and self.input_dim != input_dim:
            raise ValueError(f"{type(self).__name__} has input_dim={self.input_dim} but the previous "
                             f"layer outputs {input_dim} features: input_dim must match")
        if self.is_user_layer() and self.input_dim is not None and not self._lambda_style:
            self._declared = []
            width = self.build(self.input_dim)
            self.output_dim = check_int(width, f"{type(self).__name__}.build's return value (the output width)",
                                        minimum=1)

    def initial_weights(self, rng, dtype):
        return [w["initializer"](w["shape"], rng, dtype) for w in getattr(self, "_declared", [])]

    def user_kernels(self, dtype, offset):
        """A user layer's (forward, backward) wrappers (``fastnn.user_layers``), its weights starting at
        ``offset`` in the flat buffers."""
        from .user_layers import user_layer_kernels
        weights = []
        for shape in self.weight_shapes():
            weights.append((offset, shape))
            offset += int(np.prod(shape))
        name = f"{type(self).__name__} ({_function_name(self.forward)}, {_function_name(self.backward)})"
        try:
            return user_layer_kernels(self.forward, self.backward, weights, dtype, self._lambda_style, name)
        except numba.core.errors.NumbaError as exc:
            text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:8])
            hint = ""
            if np.dtype(dtype) == np.float32 and "float64" in text:
                hint = (" (in a float32 model, a Python float constant such as 1.0 makes float64 arrays: write "
                        "x.dtype.type(1.0))")
            raise ValueError(f"{name}: Numba cannot compile the layer's functions for {np.dtype(dtype).name} "
                             f"arrays{hint}: {text}") from None

    def check_weights(self, arrays, name):
        """A ValueError naming ``name`` if ``arrays`` (shapes and finiteness already checked) are
        not valid weights for this layer; any finite values are, unless a layer says otherwise."""

    def check_input(self, x, name, dtype):
        """``x``, the model's input when this is its first layer, checked (a ValueError or
        TypeError names ``name``) and as the kernels read it: a C-contiguous 2-D array of ``dtype``,
        read-only if ``x`` is (the backends copy it where a pass needs it writable, see
        ``validation.writable_input``)."""
        return check_features(x, name, width=self.input_dim, dtype=dtype, writable=False)

    def table_row(self, offset):
        """This layer's row of the kernels' ``layers`` table, its parameters starting at ``offset``."""
        row = np.zeros(6, np.int64)
        row[N_IN], row[N_OUT] = self.input_dim, self.output_dim
        if self.is_user_layer():
            # b: the layer's index among the model's user layers, which the spec sets (``fastnn.spec``).
            row[W_OFF], row[B_OFF], row[KIND] = offset, -1, USER_LAYER
        return row

    def regularized_slices(self, offset):
        """Rows [start, stop, l1, l2] of the kernels' ``reg`` table for this layer's penalized
        parameters, its parameters starting at ``offset`` in the flat buffer."""
        return []

    def step_work(self, rows):
        """(matrix-product FLOPs, values touched by memory-bound passes) of this layer in one
        training step of ``rows`` rows, forward and backward: what ``fit`` sizes its calls into
        the compiled loop by (``Trainer._batches_per_call``). Here: the layer's outputs, each read and
        written about three times (activations, Dropout, BatchNorm, Masking, merges); a user
        layer's functions are counted as running over all its parameters for every row, forward
        and backward (nothing more is known of them)."""
        values = 3 * self.output_dim
        if self.is_user_layer():
            values += 3 * self.count_params()
        return 0.0, float(rows) * values

    def table_floats(self):
        """This layer's row of the kernels' ``alphas``: [its activation's alpha, a Dropout's rate or
        a BatchNorm's momentum; a BatchNorm's epsilon]."""
        activation = getattr(self, "activation", None)
        return [float(activation.alpha) if activation is not None else 0.0, 0.0]

    def get_weights(self):
        """The layer's parameters as a list of new NumPy arrays ([] before the model is built)."""
        if self._model is None or not self.weight_shapes():
            return []
        return self._model._layer_weights(self)

    def set_weights(self, weights):
        """Replace the layer's parameters; shapes must equal ``[w.shape for w in get_weights()]``."""
        if self._model is None:
            raise ValueError(f"{type(self).__name__} must be added to a model before set_weights")
        self._model._set_layer_weights(self, weights)


class Input(Layer):
    """The input's shape, e.g. ``Input((784,))`` or ``Input(784)``; images (28, 28) are flattened."""

    def __init__(self, shape):
        shape = (shape,) if np.isscalar(shape) else tuple(shape)
        if not shape:
            raise ValueError("shape must name at least one dimension, got ()")
        self.shape = tuple(check_int(d, "shape", minimum=1) for d in shape)
        self.output_dim = int(np.prod(self.shape))
        self.input_dim = self.output_dim

    def _connect_tensors(self, inputs):
        as_tensor(inputs, f"{type(self).__name__}'s input")
        raise TypeError("an Input is not called: pass it to other layers")

    def onnx_nodes(self, graph, inputs):
        return inputs[0]


class Tensor:
    """What a layer outputs when called in the functional API: the layer, the tensors it read,
    and its width (``shape`` is (None, width), as Keras')."""

    def __init__(self, layer, inputs, width):
        self.layer, self.inputs, self.width = layer, list(inputs), int(width)

    @property
    def shape(self):
        return (None, self.width)

    def __repr__(self):
        return f"<Tensor shape={self.shape} from {type(self.layer).__name__}>"


def as_tensor(value, what):
    """``value`` as a ``Tensor``: itself, or an ``Input``'s own tensor."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, Input):
        if not hasattr(value, "_tensor"):
            value._tensor = Tensor(value, [], value.output_dim)
        return value._tensor
    raise TypeError(f"{what} must be a tensor (an Input, or what a layer call returned), got {type(value).__name__}")


class Dense(Layer):
    """Fully connected layer: act(x @ W + b), W of shape (input_dim, output_dim).

    - ``input_dim`` may be left out after the first layer (taken from the previous one).
    - ``activation`` defaults to Sigmoid, as in the seed framework (None means identity).
    - ``optimizer`` None means the one given to ``compile`` (Adam if none), the seed's default;
      a layer's own optimizer wins over compile's. One object may serve several layers.
    - ``kernel_initializer`` defaults to Glorot uniform and ``bias_initializer`` to zeros (Keras).
    - ``kernel_regularizer``/``bias_regularizer``: ``L1``, ``L2``, ``L1L2`` (``fastnn.regularizers``)
      or their names; the penalty is added to the loss, as Keras adds it.
    The seed's ``inputDim``/``outputDim`` and Keras' ``units`` are accepted.
    """
    _aliases = {"units": "output_dim"}

    def __init__(self, input_dim=None, output_dim=None, activation=_SEED_DEFAULT_ACTIVATION, optimizer=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None):
        if output_dim is None:
            raise TypeError("Dense needs output_dim (the number of units)")
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)
        self.output_dim = check_int(output_dim, "output_dim", minimum=1)
        self.activation = activations.get(activation)
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, "bias_regularizer")

    def weight_shapes(self):
        return [(self.input_dim, self.output_dim), (self.output_dim,)]

    def weight_names(self):
        return ["kernel", "bias"]

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF], row[B_OFF] = offset, offset + self.input_dim * self.output_dim
        row[ACT], row[KIND] = self.activation.code, DENSE_LAYER
        return row

    def step_work(self, rows):
        flops, values = super().step_work(rows)
        return flops + 6.0 * rows * self.input_dim * self.output_dim, values  # x @ W; dx and dW backward

    def regularized_slices(self, offset):
        n_w = self.input_dim * self.output_dim
        rows = []
        for reg, lo, n in ((self.kernel_regularizer, offset, n_w), (self.bias_regularizer, offset + n_w,
                                                                  self.output_dim)):
            if reg is not None and any(reg.factors()):
                rows.append([lo, lo + n, *reg.factors()])
        return rows

    def initial_weights(self, rng, dtype):
        return [self.kernel_initializer(self.weight_shapes()[0], rng, dtype),
                self.bias_initializer(self.weight_shapes()[1], rng, dtype)]

    def onnx_nodes(self, graph, inputs):
        """MatMul (W as fastnn keeps it, (in, out)) and Add, then the activation's operator."""
        W, b = self.get_weights()
        product = graph.op("MatMul", [inputs[0], graph.constant("W", W)])
        return graph.activation(self.activation, graph.op("Add", [product, graph.constant("b", b)]))


class Activation(Layer):
    """An activation as a layer of its own: ``Activation("softmax")``, ``Activation(ReLU())``."""

    def __init__(self, activation):
        self.activation = activations.get(activation)

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim

    def table_row(self, offset):
        row = super().table_row(offset)
        row[ACT], row[KIND] = self.activation.code, ACTIVATION_LAYER
        return row

    def onnx_nodes(self, graph, inputs):
        return graph.activation(self.activation, inputs[0])


class Dropout(Layer):
    """Inverted dropout, as ``torch.nn.Dropout(p=rate)`` and Keras' ``Dropout(rate)``.

    In training each input element is zeroed with probability ``rate`` and the others are
    scaled by 1 / (1 - rate), so the expected output equals the input; at inference
    (``predict``, ``evaluate``, validation) the layer passes its input through untouched.
    Masks come from a counter-based hash of the model's seed, the training step, the layer's
    position and the element's (``fastnn.kernels.dropout``): the same seed gives the same masks,
    on the CPU and on CUDA, and each step draws new ones. Usable first (on the input) or between
    any layers; it has no parameters.
    """

    def __init__(self, rate):
        self.rate = check_float(rate, "rate", minimum=0.0, maximum=1.0, max_inclusive=False)

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim

    def table_row(self, offset):
        row = super().table_row(offset)
        row[KIND] = DROPOUT_LAYER
        return row

    def table_floats(self):
        return [self.rate, 0.0]

    def onnx_nodes(self, graph, inputs):
        return inputs[0]  # the identity at inference


class BatchNormalization(Layer):
    """Batch normalization over the features, as ``torch.nn.BatchNorm1d(num_features, eps=epsilon,
    momentum=momentum)`` (Ioffe & Szegedy, 2015).

    In training each feature is normalized with the batch's mean and biased variance, then
    scaled by gamma and shifted by beta (both trained by the layer's optimizer, initially 1 and
    0), and the running statistics move as running = (1 - momentum) * running + momentum *
    batch, with the unbiased variance (PyTorch's convention; Keras' ``momentum`` is 1 minus
    this one). At inference (``predict``, ``evaluate``, validation) the running mean and
    variance (initially 0 and 1) are used instead. ``model(x, training=True)`` normalizes with
    the batch and updates the running statistics, as in Keras and PyTorch. ``get_weights()``
    returns [gamma, beta, running_mean, running_var]. ``epsilon`` keeps a constant feature
    (variance 0) finite. Alias: ``BatchNorm``.
    """

    def __init__(self, input_dim=None, momentum=0.1, epsilon=1e-5, optimizer=None):
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)
        self.momentum = check_float(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        if self.input_dim is not None:
            self.output_dim = self.input_dim

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim

    def weight_shapes(self):
        return [(self.output_dim,)] * 4

    def weight_names(self):
        return ["gamma", "beta", "moving_mean", "moving_variance"]

    def count_trainable_params(self):
        return 2 * self.output_dim

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF], row[B_OFF], row[KIND] = offset, offset + self.output_dim, BATCHNORM_LAYER
        return row

    def table_floats(self):
        return [self.momentum, self.epsilon]

    def check_weights(self, arrays, name):
        if np.any(arrays[3] < 0):
            raise ValueError(f"{name}: running_var (the fourth array) must be >= 0, got {np.min(arrays[3])}")

    def initial_weights(self, rng, dtype):
        n = self.output_dim
        return [np.ones(n, dtype), np.zeros(n, dtype), np.zeros(n, dtype), np.ones(n, dtype)]

    def onnx_nodes(self, graph, inputs):
        """Folded into Mul and Add with the running statistics:
        x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))."""
        gamma, beta, mean, var = (w.astype(np.float64) for w in self.get_weights())
        scale = gamma / np.sqrt(var + self.epsilon)
        return graph.op("Add", [graph.op("Mul", [inputs[0], graph.constant("bn_scale", scale)]),
                                graph.constant("bn_shift", beta - mean * scale)])


BatchNorm = BatchNormalization


class LayerNormalization(Layer):
    """Layer normalization over the features, as Keras' ``LayerNormalization(axis=-1,
    epsilon=1e-3, center=True, scale=True)`` and ``torch.nn.LayerNorm(features, eps=epsilon,
    elementwise_affine=scale, bias=center)`` (Ba, Kiros & Hinton, 2016).

    Each row is normalized with its own mean and biased variance, then scaled by gamma (if
    ``scale``; trained, initially 1) and shifted by beta (if ``center``; trained, initially 0).
    Training and inference compute the same thing: there are no running statistics.
    ``get_weights()`` returns [gamma, beta], those the layer has. ``axis``: the feature axis, -1
    or 1 (a model's inputs are (rows, features)).
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, input_dim=None, optimizer=None):
        if isinstance(axis, (bool, np.bool_)) or axis not in (-1, 1):
            raise ValueError(f"axis must be -1 or 1 (the features of a (rows, features) input), got {axis!r}")
        self.axis = int(axis)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0, min_inclusive=False)
        for name, value in (("center", center), ("scale", scale)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.center, self.scale = bool(center), bool(scale)
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        if self.input_dim is not None:
            self.output_dim = self.input_dim

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim

    def weight_shapes(self):
        return [(self.output_dim,)] * (self.scale + self.center)

    def weight_names(self):
        return ["gamma"] * self.scale + ["beta"] * self.center

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF] = offset if self.scale else -1
        row[B_OFF] = offset + self.scale * self.output_dim if self.center else -1
        row[KIND] = LAYERNORM_LAYER
        return row

    def table_floats(self):
        return [float(SCALE * self.scale + CENTER * self.center), self.epsilon]

    def initial_weights(self, rng, dtype):
        n = self.output_dim
        return [np.ones(n, dtype)] * self.scale + [np.zeros(n, dtype)] * self.center

    def onnx_nodes(self, graph, inputs):
        """ONNX's LayerNormalization (opset 17) over the last axis; a constant gamma of ones and beta
        of zeros stand in for those the layer lacks."""
        if graph.opset < 17:
            raise ValueError(f"opset must be at least 17 for LayerNormalization's operator, got {graph.opset}")
        weights = iter(self.get_weights())
        n = self.output_dim
        gamma = next(weights) if self.scale else np.ones(n)
        beta = next(weights) if self.center else np.zeros(n)
        return graph.op("LayerNormalization", [inputs[0], graph.constant("ln_gamma", gamma),
                                               graph.constant("ln_beta", beta)], axis=-1, epsilon=self.epsilon)


def check_weight_list(weights, shapes, name, dtype):
    """``weights`` as a list of arrays of exactly ``shapes``, finite, in ``dtype``."""
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"{name} must be a list of arrays, got {type(weights).__name__}")
    if len(weights) != len(shapes):
        raise ValueError(f"{name} must hold {len(shapes)} arrays of shapes {shapes}, got {len(weights)}")
    out = []
    for i, (w, shape) in enumerate(zip(weights, shapes)):
        arr = np.asarray(w)
        if arr.shape != tuple(shape):
            raise ValueError(f"{name}[{i}] must have shape {tuple(shape)}, got {arr.shape}")
        out.append(check_features(arr.reshape(1, -1), f"{name}[{i}]", dtype=dtype).reshape(shape))
    return out


class Embedding(Layer):
    """Integer ids to trained vectors: ``Embedding(input_dim, output_dim, input_length=1,
    mask_zero=False, combiner="concat")``, as Keras' ``Embedding`` (``input_dim`` ids, vectors of
    ``output_dim``) and ``torch.nn.Embedding``/``EmbeddingBag``.

    The model's input is then rows of ``input_length`` ids (integers in [0, input_dim), in any
    numeric dtype; anything else is a ValueError before any kernel runs). ``combiner``:
    "concat" puts the row's vectors side by side (width ``input_length * output_dim``, Keras'
    Embedding followed by Flatten); "sum" and "mean" add or average them (width ``output_dim``,
    ``torch.nn.EmbeddingBag``). ``mask_zero=True``: id 0 is padding (PyTorch's ``padding_idx=0``):
    its vector is zero and never trained, and "mean" leaves it out. The gradient is a scatter-add
    into the rows the batch uses (``fastnn.kernels.embedding``). An Embedding is the first layer
    (after an optional ``Input((input_length,))``).

    As for every layer, the attributes ``input_dim`` and ``output_dim`` are the layer's input and
    output widths (``input_length`` and the combined width); the vocabulary and vector sizes are
    ``vocabulary`` and ``embedding_dim``, and ``get_config`` keeps Keras' names.
    ``embeddings_initializer`` defaults to Keras' uniform(-0.05, 0.05).

    ``input_dim`` is at least 1: a table of no rows has no valid id, so every input would be
    refused; it is a ValueError here, as in Keras (PyTorch's ``nn.Embedding(0, d)`` is accepted
    but can look nothing up).
    """
    combiners = ("concat", "sum", "mean")

    def __init__(self, input_dim, output_dim, input_length=1, mask_zero=False, combiner="concat",
                 embeddings_initializer="uniform", embeddings_regularizer=None, optimizer=None):
        self.vocabulary = check_int(input_dim, "input_dim", minimum=1)
        self.embedding_dim = check_int(output_dim, "output_dim", minimum=1)
        self.input_length = check_int(input_length, "input_length", minimum=1)
        if not isinstance(mask_zero, (bool, np.bool_)):
            raise TypeError(f"mask_zero must be True or False, got {mask_zero!r}")
        self.mask_zero = bool(mask_zero)
        if combiner not in self.combiners:
            raise ValueError(f"combiner must be one of {self.combiners}, got {combiner!r}")
        if self.mask_zero and self.vocabulary < 2:
            raise ValueError("mask_zero=True reserves id 0 for padding: input_dim must be at least 2")
        self.combiner = combiner
        self.embeddings_initializer = initializers.get(
            initializers.RandomUniform(-0.05, 0.05) if embeddings_initializer == "uniform" else embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer, "embeddings_regularizer")
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        self.input_dim = self.input_length
        width = self.embedding_dim * (self.input_length if combiner == "concat" else 1)
        self.output_dim = width

    def get_config(self):
        config = {name: getattr(self, name, None) for name in self._param_names()}
        config.update(input_dim=self.vocabulary, output_dim=self.embedding_dim)
        return {k: _jsonable(v) for k, v in config.items()}

    def _connect_tensors(self, inputs):
        tensor = as_tensor(inputs, f"{type(self).__name__}'s input")
        if not isinstance(tensor.layer, Input):
            raise ValueError("an Embedding reads ids: call it on an Input")
        self.connect(tensor.width)
        return [tensor]

    def onnx_nodes(self, graph, inputs):
        """Gather of the table (the input holds the ids as floats); with mask_zero the table's row 0
        is zero (fastnn keeps it so), so padding gathers zeros; "mean" then divides by the count of
        ids that are not padding."""
        index = graph.op("Cast", [inputs[0]], to=graph.int64_type)
        vectors = graph.op("Gather", [graph.constant("embeddings", self.get_weights()[0]), index], axis=0)  # (N, L, D)
        if self.combiner == "concat":
            return graph.op("Reshape", [vectors, graph.int64("shape", [-1, self.output_dim])])
        total = graph.op("ReduceSum", [vectors, graph.int64("axis", [1])], keepdims=0)
        if self.combiner == "sum":
            return total
        if not self.mask_zero:
            return graph.op("Div", [total, graph.constant("length", np.array(self.input_length))])
        padding = graph.op("Equal", [index, graph.int64("padding", 0)])
        counted = graph.op("ReduceSum", [graph.op("Cast", [graph.op("Not", [padding])], to=graph.float_type),
                                         graph.int64("axis", [1])], keepdims=1)
        return graph.op("Div", [total, graph.op("Max", [counted, graph.constant("one", np.ones(()))])])

    def connect(self, input_dim):
        if input_dim is not None and input_dim != self.input_length:
            raise ValueError(f"Embedding reads rows of input_length={self.input_length} ids, but its input has "
                             f"{input_dim} features: an Embedding is the first layer (after an optional Input of "
                             "the same length)")

    def weight_shapes(self):
        return [(self.vocabulary, self.embedding_dim)]

    def weight_names(self):
        return ["embeddings"]

    def table_row(self, offset):
        row = super().table_row(offset)
        row[W_OFF], row[B_OFF] = offset, offset + self.vocabulary * self.embedding_dim
        row[KIND] = EMBEDDING_LAYER
        return row

    def table_floats(self):
        return [float(self.combiners.index(self.combiner)), float(self.mask_zero)]

    def step_work(self, rows):
        flops, values = super().step_work(rows)
        return flops, values + 2.0 * rows * self.input_length * self.embedding_dim  # gathered; scattered back

    def regularized_slices(self, offset):
        reg = self.embeddings_regularizer
        if reg is None or not any(reg.factors()):
            return []
        return [[offset, offset + self.vocabulary * self.embedding_dim, *reg.factors()]]

    def check_weights(self, arrays, name):
        if self.mask_zero and np.any(arrays[0][0] != 0):
            raise ValueError(f"{name}: with mask_zero=True the vector of id 0 (padding) must be zero")

    def initial_weights(self, rng, dtype):
        table = self.embeddings_initializer(self.weight_shapes()[0], rng, dtype)
        if self.mask_zero:
            table[0] = 0  # PyTorch's padding_idx row: zero, never trained
        return [table]

    def check_input(self, x, name, dtype):
        """``x`` as the float array the kernels read, after checking it holds ids: integers in
        [0, vocabulary) that ``dtype`` represents exactly. A ValueError names ``name``."""
        raw = np.asarray(x)
        if raw.dtype.kind not in "iuf" or raw.dtype == np.float16:
            raise ValueError(f"{name} must hold integer ids for the Embedding, got dtype {raw.dtype}")
        if raw.ndim == 1 and self.input_length == 1:
            raw = raw.reshape(-1, 1)
        if raw.ndim != 2 or raw.shape[1] != self.input_length:
            raise ValueError(f"{name} must be rows of input_length={self.input_length} ids, got shape {raw.shape}")
        if raw.shape[0] == 0:  # as check_features: no batch to run, and a batch size of 0 rows
            raise ValueError(f"{name} is empty: expected at least one row")
        if raw.size:
            if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (raw == np.round(raw))):
                raise ValueError(f"{name} must hold integer ids for the Embedding: found values that are not "
                                 "whole numbers")
            low, high = raw.min(), raw.max()
            if low < 0 or high >= self.vocabulary:
                raise ValueError(f"{name} holds ids from {low} to {high}; the Embedding's ids are 0 .. "
                                 f"{self.vocabulary - 1} (input_dim={self.vocabulary})")
        if self.vocabulary > 2 ** np.finfo(dtype).nmant + 1:
            raise ValueError(f"an Embedding of {self.vocabulary} ids in a {np.dtype(dtype).name} model: ids above "
                             f"2**{np.finfo(dtype).nmant + 1} are not exact in {np.dtype(dtype).name}; use "
                             "dtype='float64'")
        return np.ascontiguousarray(raw, dtype=dtype)


class Masking(Layer):
    """Missing values: entries equal to ``mask_value`` pass to the next layer as 0, and no
    gradient flows back through them (``fastnn.kernels.masking``); other entries pass unchanged.
    Keras' ``Masking(mask_value)`` marks whole timesteps for sequence layers; fastnn's layers are
    not sequential, so the mask is per entry. No parameters."""

    def __init__(self, mask_value=0.0, input_dim=None):
        self.mask_value = check_float(mask_value, "mask_value")
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)

    def connect(self, input_dim):
        super().connect(input_dim)
        self.output_dim = self.input_dim

    def table_row(self, offset):
        row = super().table_row(offset)
        row[KIND] = MASKING_LAYER
        return row

    def table_floats(self):
        return [self.mask_value, 0.0]

    def onnx_nodes(self, graph, inputs):
        missing = graph.op("Equal", [inputs[0], graph.constant("mask_value", np.array(self.mask_value))])
        return graph.op("Where", [missing, graph.constant("zero", np.zeros(())), inputs[0]])


def _function_name(fn):
    """``module:qualname`` of a function (how a saved Lambda names it)."""
    fn = getattr(fn, "py_func", fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


class Lambda(Layer):
    """A layer from two functions of NumPy arrays: ``forward(x) -> y`` and ``backward(x, y, dy) -> dx``
    (x, y, dy, dx 2-D: rows by features), compiled with Numba and run inside the compiled step.
    ``output_dim``: the output width (None: found by calling ``forward`` on a row of zeros). A
    function that Numba cannot compile, or that returns the wrong shape, is a ValueError naming it
    when the model is built.

    Saved as the functions' import paths (``module:qualname``), never pickled: ``load_model`` then
    needs them in ``custom_objects`` (``{"my_forward": my_forward, ...}``). Pickling a model names
    them the same way, so it takes functions defined at a module's top level (a nested function
    or a lambda is a PicklingError naming the layer); ``copy.deepcopy`` keeps the functions
    themselves, so it copies any model. CPU only.
    """
    _lambda_style = True

    def __init__(self, forward, backward, output_dim=None, input_dim=None):
        self.forward = custom_function(forward, "forward")
        self.backward = custom_function(backward, "backward")
        for fn, what in ((self.forward, "forward"), (self.backward, "backward")):
            if not callable(fn):
                raise TypeError(f"Lambda's {what} must be a function, got {fn!r}")
        self.output_dim = None if output_dim is None else check_int(output_dim, "output_dim", minimum=1)
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)

    def get_config(self):
        return {"forward": _function_name(self.forward), "backward": _function_name(self.backward),
                "output_dim": self.output_dim, "input_dim": self.input_dim}

    def connect(self, input_dim):
        super().connect(input_dim)
        if self.output_dim is None and self.input_dim is not None:
            from .user_layers import _compile
            fn = _compile(self.forward, f"Lambda's forward {_function_name(self.forward)}")
            try:
                y = fn(np.zeros((1, self.input_dim)))
            except numba.core.errors.NumbaError as exc:
                raise ValueError(f"Lambda's forward {_function_name(self.forward)}: Numba cannot compile it: "
                                 + " ".join(str(exc).strip().splitlines()[:4])) from None
            if getattr(y, "ndim", 0) != 2 or y.shape[0] != 1:
                raise ValueError(f"Lambda's forward {_function_name(self.forward)} must return a 2-D array of one "
                                 f"row per input row, got {getattr(y, 'shape', type(y).__name__)}")
            self.output_dim = int(y.shape[1])


def custom_function(value, what):
    """A Lambda's function: itself, or, from a saved config, the ``module:qualname`` string looked up
    in ``load_model``'s ``custom_objects`` (by that string, the qualname or the bare name)."""
    if not isinstance(value, str):
        return value
    from .base import custom_objects, may_import_functions
    objects = custom_objects()
    module, _, qualname = value.rpartition(":")
    for key in (value, qualname, qualname.split(".")[-1]):
        if key in objects:
            return objects[key]
    if may_import_functions() and module:
        import importlib
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found
    raise ValueError(f"the model's Lambda {what} is {value!r}: pass it to load_model as "
                     f"custom_objects={{{qualname.split('.')[-1]!r}: {qualname.split('.')[-1]}}}")
