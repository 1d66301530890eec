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
# Each module's ``__all__`` is its public layers: a new layer is exported here and by ``fastnn``
# from the module that defines it, with no list to edit elsewhere (numpy's way).
from . import base, core, embedding, merging, normalization, user
from .base import *  # noqa: F401,F403
from .core import *  # noqa: F401,F403
from .embedding import *  # noqa: F401,F403
from .merging import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .user import *  # noqa: F401,F403

# What other modules import from ``fastnn.layers``, and what pickles of older versions name there.
from .base import Tensor, _function_name, as_tensor, check_weight_list  # noqa: F401
from .core import _SEED_DEFAULT_ACTIVATION  # noqa: F401
from .merging import Merge  # noqa: F401
from .user import custom_function  # noqa: F401

__all__ = []
__all__ += base.__all__
__all__ += core.__all__
__all__ += embedding.__all__
__all__ += merging.__all__
__all__ += normalization.__all__
__all__ += user.__all__
