"""Layers: Input, Dense, Activation, Dropout, BatchNormalization, LayerNormalization, Embedding,
Masking, and the merges of the functional API (Concatenate, Add, Multiply).

A layer holds its configuration; its weights live in the model's flat parameter buffer,
laid out [W1, b1, W2, b2, ...] with each W of shape (input_dim, output_dim). The model
assigns each layer its offsets when it builds; ``get_weights``/``set_weights`` read and
write through them.

The layers live in one module per concern: ``base`` (``Layer``, ``Input``, ``Tensor`` and the
helpers), ``core`` (Dense, Activation, Dropout), ``normalization`` (BatchNormalization,
LayerNormalization), ``embedding`` (Embedding, Masking), ``merging`` (Concatenate, Add,
Multiply) and ``user`` (Lambda); every name is importable from ``fastnn.layers`` as well.
"""
# What other modules import from ``fastnn.layers``, and what pickles of older versions name there.
from .base import Input, Layer, Tensor, _function_name, as_tensor, check_weight_list  # noqa: F401
from .core import _SEED_DEFAULT_ACTIVATION, Activation, Dense, Dropout  # noqa: F401
from .embedding import Embedding, Masking  # noqa: F401
from .merging import Add, Concatenate, Merge, Multiply  # noqa: F401
from .normalization import BatchNorm, BatchNormalization, LayerNormalization  # noqa: F401
from .user import Lambda, custom_function  # noqa: F401
