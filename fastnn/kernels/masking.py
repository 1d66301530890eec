"""Masking: ``masking_forward(out, x, mask_value)`` and ``masking_backward(dx, dout, x, mask_value)``.

Entries of x equal to ``mask_value`` are missing: the layer passes 0 for them to the next layer
and no gradient back through them; every other entry passes unchanged. (Keras' Masking skips
whole timesteps of sequence layers; fastnn's layers are not sequential, so the mask is per entry.)
"""
from ..config import kernel


@kernel(inline=True)
def masking_forward(out, x, mask_value):
    """out = 0 where x == mask_value, else x (flat arrays; ``out`` may be ``x``)."""
    zero = out.dtype.type(0)
    value = x.dtype.type(mask_value)
    for i in range(x.size):
        out[i] = zero if x[i] == value else x[i]


@kernel(inline=True)
def masking_backward(dx, dout, x, mask_value):
    """dx = 0 where x == mask_value, else dout (flat arrays; ``dx`` may be ``dout``)."""
    zero = dx.dtype.type(0)
    value = x.dtype.type(mask_value)
    for i in range(x.size):
        dx[i] = zero if x[i] == value else dout[i]
