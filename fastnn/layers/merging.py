"""Layers that merge two tensors of the functional API (``fastnn.functional``): Concatenate, Add,
Multiply (Keras' ``layers.merging``). Each is a row of the layer table that reads two rows
(``kernels/table.py``'s graph); their kernels are ``kernels/merge.py`` and ``cuda/merge.py``."""
from __future__ import annotations

from ..kernels.table import ADD_LAYER, CONCATENATE_LAYER, KIND, MULTIPLY_LAYER
from .base import Layer, as_tensor

__all__ = ["Add", "Concatenate", "Multiply"]  # what ``fastnn`` and ``fastnn.layers`` export


class Merge(Layer):
    """Base of the layers that combine two tensors (a list of more is merged pairwise)."""
    code = None
    onnx_op = None  # the ONNX operator of the merge (Concat on the features' axis)

    def __init__(self) -> None:
        pass

    def _read_tensors(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f"{type(self).__name__} takes a list of at least two tensors")
        tensors = [as_tensor(t, f"{type(self).__name__}'s inputs") for t in inputs]
        if len(tensors) > 2:  # one binary merge per extra input: ((a, b), c), ...
            tensors = [type(self)()(tensors[:-1]), tensors[-1]]
        return tensors

    def _connect_tensors(self, inputs):
        tensors = self._read_tensors(inputs)
        self.connect_merge([t.width for t in tensors])
        return tensors

    def onnx_nodes(self, graph, inputs):
        return graph.op(self.onnx_op, inputs, **({"axis": 1} if self.code == CONCATENATE_LAYER else {}))

    def connect_merge(self, widths):
        a, b = widths
        if self.code != CONCATENATE_LAYER and a != b:
            raise ValueError(f"{type(self).__name__} needs tensors of one width, got {a} and {b}")
        self.input_dim = a
        self.output_dim = a + b if self.code == CONCATENATE_LAYER else a

    def table_row(self, offset):
        row = super().table_row(offset)
        row[KIND] = self.code
        return row


class Concatenate(Merge):
    """[a, b]: the tensors' features side by side (``keras.layers.Concatenate`` on the last axis)."""
    code = CONCATENATE_LAYER
    onnx_op = "Concat"


class Add(Merge):
    """a + b, elementwise (``keras.layers.Add``)."""
    code = ADD_LAYER
    onnx_op = "Add"


class Multiply(Merge):
    """a * b, elementwise (``keras.layers.Multiply``)."""
    code = MULTIPLY_LAYER
    onnx_op = "Mul"
