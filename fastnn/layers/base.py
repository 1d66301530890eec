"""The base of every layer (``Layer``), the functional API's ``Input`` and ``Tensor``, and the
helpers the other layer modules and the network share (``check_weight_list``, ``_function_name``).
"""
from __future__ import annotations

import numba
import numpy as np

from .. import initializers
from ..base import Configurable
from ..kernels.table import B_OFF, KIND, N_IN, N_OUT, USER_LAYER, W_OFF
from ..sparse_input import check_sparse, is_sparse
from ..validation import check_features, check_int

__all__ = ["Input", "Layer"]  # what ``fastnn`` and ``fastnn.layers`` export


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
    # Keras' trainable: set after construction, kept in the config only when False.
    _config_attributes = ("trainable",)
    _trainable = True

    @property
    def trainable(self) -> bool:
        """False freezes the layer, as in Keras: no optimizer updates its weights, and a frozen
        BatchNormalization runs in inference mode in training too (its running statistics, not
        the batch's, and not updated). Takes effect at the next ``compile``."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable must be True or False, got {value!r}")
        self._trainable = bool(value)

    def get_config(self):
        config = super().get_config()
        if not self.trainable:
            config["trainable"] = False
        return config

    def trainable_weight_count(self):
        """How many of ``weight_shapes``' arrays an optimizer trains (the first ones), 0 when frozen."""
        if not self.trainable:
            return 0
        n, total = 0, self.count_trainable_params()
        for shape in self.weight_shapes():
            if total <= 0:
                break
            total -= int(np.prod(shape))
            n += 1
        return n

    def is_user_layer(self):
        return self.forward is not None

    def __call__(self, inputs):
        """The functional API (``fastnn.Model``): connect this layer to a tensor (or, for a merge
        layer, a list of tensors) and return its output tensor. Called again on other tensors of
        the same widths, the layer is shared, as in Keras: each call is a node of the graph, all
        with the layer's one set of weights, whose gradient is the sum over the calls."""
        if self._model is not None:
            raise ValueError(f"this {type(self).__name__} already belongs to a model: call a new layer")
        if getattr(self, "_called", False):
            tensors = self._read_tensors(inputs)
            widths = [t.width for t in tensors]
            if widths != self._call_widths:
                raise ValueError(f"inputs: this {type(self).__name__} was first called on tensors of widths "
                                 f"{self._call_widths}, a shared layer takes the same widths again, got {widths}")
        else:
            tensors = self._connect_tensors(inputs)
            self._called = True
            self._call_widths = [t.width for t in tensors]
        return Tensor(self, tensors, self.output_dim)

    def _read_tensors(self, inputs):
        """The tensors a call reads (one; a merge takes a list), checked, nothing connected."""
        return [as_tensor(inputs, f"{type(self).__name__}'s input")]

    def _connect_tensors(self, inputs):
        """Connect to what ``__call__`` got (one tensor; a merge takes a list); returns the tensors read."""
        tensors = self._read_tensors(inputs)
        self.connect(tensors[0].width)
        return tensors

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
        from ..user_layers import user_layer_kernels
        weights = []
        for shape in self.weight_shapes():
            weights.append((offset, shape))
            offset += int(np.prod(shape))
        # Qualified names, not module paths: the name is compiled into the wrappers' messages, so it
        # is part of their cache key, which should not change when a script's functions move from
        # __main__ into an imported module.
        name = f"{type(self).__name__} ({_qualname(self.forward)}, {_qualname(self.backward)})"
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

    def check_input(self, x, name, dtype, finite=True):
        """``x``, the model's input when this is its first layer, checked (a ValueError or
        TypeError names ``name``) and as the kernels read it: a C-contiguous 2-D array of ``dtype``,
        read-only if ``x`` is (the backends copy it where a pass needs it writable, see
        ``validation.writable_input``); a scipy.sparse ``x`` as a canonical CSR matrix of ``dtype``
        (``sparse_input.check_sparse``), never densified. ``finite=False`` leaves the scan for NaN
        and infinity to the caller (predict's compiled pass does it a batch at a time)."""
        if is_sparse(x):
            return check_sparse(x, name, self.input_dim, dtype)
        return check_features(x, name, width=self.input_dim, dtype=dtype, writable=False, check_finite=finite)

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
        layer's functions are counted as a Dense layer of as many parameters (a product over all
        of them for every row, forward and backward: nothing more is known of them). Counted as
        memory-bound values instead, they made a user-written dense layer's step look 50 times
        its cost, and fit call the loop every 15 batches of 50 instead of every 522 (the seed
        network with user-written hidden layers)."""
        flops = 6.0 * rows * self.count_params() if self.is_user_layer() else 0.0
        return flops, float(rows) * 3 * self.output_dim

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

    def __init__(self, shape: int | tuple[int, ...]) -> None:
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


def _qualname(fn):
    fn = getattr(fn, "py_func", fn)
    return getattr(fn, "__qualname__", repr(fn))


def _function_name(fn):
    """``module:qualname`` of a function (how a saved Lambda names it)."""
    fn = getattr(fn, "py_func", fn)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
