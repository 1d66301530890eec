"""The core layers: Dense, Activation, Dropout."""
from __future__ import annotations

from typing import Any

from .. import activations, initializers, optimizers, regularizers
from ..kernels.table import ACT, ACTIVATION_LAYER, B_OFF, DENSE_LAYER, DROPOUT_LAYER, KIND, W_OFF
from ..validation import check_float, check_int
from .base import Layer

__all__ = ["Activation", "Dense", "Dropout"]  # what ``fastnn`` and ``fastnn.layers`` export

_SEED_DEFAULT_ACTIVATION = "sigmoid"


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

    def __init__(self, input_dim: int | None = None, output_dim: int | None = None,
                 activation: Any = _SEED_DEFAULT_ACTIVATION, optimizer: Any = None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None) -> None:
        if output_dim is None:
            # Dense(16) means Keras' Dense(units=16), but the seed's Dense(input_dim, output_dim) comes first.
            units = "n" if input_dim is None else repr(input_dim)
            given = "" if input_dim is None else f" (Dense({units}) sets input_dim={units})"
            raise TypeError(f"Dense needs output_dim, the number of units{given}: write Dense(units={units}) as in "
                            "Keras, or Dense(input_dim, output_dim) as in the seed's API")
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

    def __init__(self, activation: Any) -> None:
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

    def __init__(self, rate: float) -> None:
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
