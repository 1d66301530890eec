"""Dropout: ``dropout_forward(out, x, stream, rate)`` and ``dropout_backward(dx, dout, stream, rate)``.

Inverted dropout (``torch.nn.Dropout``, Keras' ``Dropout``): in training each element is kept
with probability 1 - rate and scaled by 1 / (1 - rate), else zeroed; at inference the layer is
the identity (the network skips it).

The mask is never stored: element i of a layer's (rows, cols) batch is kept when the 64-bit
hash of (stream, i) has its high 32 bits >= ``threshold`` = rate * 2**32, where ``stream`` =
``dropout_stream(key, step, layer)`` mixes the model's random key, the training step and the
layer's index. The backward pass recomputes the same mask from the same three numbers, and the
CUDA twin (``fastnn.cuda.dropout``) compiles these very functions, so CPU and GPU draw the same
masks for the same seed, and a replayed CUDA graph draws new ones each step (the step is read
from device memory). The hash is SplitMix64's finalizer (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014), in unsigned 64-bit integers only, so both
targets compute it bit for bit alike.
"""
import numpy as np

from ..config import kernel

# SplitMix64's increment (the golden ratio) and finalizer multipliers.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)


@kernel(inline=True)
def mix64(z):
    """SplitMix64's finalizer: a bijection of uint64 whose output bits each depend on all input bits."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@kernel(inline=True)
def dropout_stream(key, step, layer):
    """The uint64 from which a layer's mask at one training step is drawn (int64 inputs). A
    negative key (a seed from 2**63 on) counts as its 64 bits; through ``np.int64`` first, since
    NumPy's ``np.uint64`` refuses a negative Python int where the CUDA simulator passes one."""
    z = mix64(np.uint64(np.int64(key)) + _GOLDEN)
    z = mix64(z ^ (np.uint64(step) * _GOLDEN))
    return mix64(z ^ (np.uint64(layer) + _GOLDEN))


@kernel(inline=True)
def dropout_keeps(stream, index, threshold):
    """Whether element ``index`` (row-major in the batch) is kept."""
    return (mix64(np.uint64(stream) ^ (np.uint64(index) * _GOLDEN)) >> _S32) >= threshold


@kernel(inline=True)
def dropout_threshold(rate):
    """rate * 2**32 as uint64: an element is dropped when its 32 random bits are below it."""
    return np.uint64(rate * 4294967296.0)


@kernel(inline=True)
def dropout_forward(out, x, stream, rate, start=0):
    """out = x * keep / (1 - rate) elementwise over the flat (row-major) batch; ``out`` may be ``x``.

    ``start``: the index of x[0] in the whole batch, when x is a part of it (a rank's rows under
    MPI), so that the part draws the same mask as the whole would."""
    threshold = dropout_threshold(rate)
    scale = x.dtype.type(1.0 / (1.0 - rate))
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = x[i] * scale if dropout_keeps(stream, start + i, threshold) else zero


@kernel(inline=True)
def dropout_backward(dx, dout, stream, rate, start=0):
    """dx = dout * keep / (1 - rate), with the forward's mask recomputed; ``dx`` may be ``dout``.

    The layer is linear in its input, so its backward is its forward's pass over dout."""
    dropout_forward(dx, dout, stream, rate, start)
