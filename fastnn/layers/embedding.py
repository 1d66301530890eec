"""The layers that read or mark the model's input entries: Embedding (integer ids to trained
vectors) and Masking (missing values)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import initializers, optimizers, regularizers
from ..base import _jsonable
from ..kernels.table import B_OFF, EMBEDDING_LAYER, KIND, MASKING_LAYER, W_OFF
from ..sparse_input import is_sparse
from ..validation import check_float, check_int
from .base import Input, Layer, as_tensor

__all__ = ["Embedding", "Masking"]  # what ``fastnn`` and ``fastnn.layers`` export


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

    def __init__(self, input_dim: int, output_dim: int, input_length: int = 1, mask_zero: bool = False,
                 combiner: str = "concat", embeddings_initializer: Any = "uniform",
                 embeddings_regularizer: Any = None, optimizer: Any = None) -> None:
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

    def _read_tensors(self, inputs):
        tensor = as_tensor(inputs, f"{type(self).__name__}'s input")
        if not isinstance(tensor.layer, Input):
            raise ValueError("an Embedding reads ids: call it on an Input")
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
        if is_sparse(x):
            raise TypeError(f"{name} is a scipy.sparse matrix, but an Embedding reads dense rows of integer ids: "
                            "pass a dense array (x.toarray())")
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

    def __init__(self, mask_value: float = 0.0, input_dim: int | None = None) -> None:
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
