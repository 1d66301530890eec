"""CUDA twin of ``fastnn.kernels.dropout``: inverted dropout, one thread per element.

The mask functions are not rewritten here: ``mix64``, ``dropout_stream``, ``dropout_keeps`` and
``dropout_threshold`` are the CPU kernels' own Python source, compiled as device functions
(``fastnn.cuda.device_twin``), so both targets hash (key, step, layer, element) bit for bit alike and draw
the same masks. The step is read from ``control[C_STEP]`` (written by the step's gather
kernel), so a replayed CUDA graph draws new masks at every step.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import dropout as cpu
from . import C_STEP, blocks, device_twin, kernel, launch


mix64 = device_twin(cpu.mix64)
dropout_stream = device_twin(cpu.dropout_stream)
dropout_keeps = device_twin(cpu.dropout_keeps)
dropout_threshold = device_twin(cpu.dropout_threshold)


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))

    @kernel
    def dropout_elements(out, x, size, key, layer, rate, control):
        """out[i] = x[i] * keep / (1 - rate) for i < size; ``out`` may be ``x`` (also the backward:
        dx = dout * keep / (1 - rate), the same mask)."""
        i = cuda.grid(1)
        if i < size:
            stream = dropout_stream(key, control[C_STEP], layer)
            if dropout_keeps(stream, i, dropout_threshold(rate)):
                out[i] = x[i] * T(1.0 / (1.0 - rate))
            else:
                out[i] = T(0)

    return SimpleNamespace(dropout_elements=dropout_elements)


def dropout_forward(out, x, size, key, layer, rate, control, plan=None):
    """As ``kernels.dropout.dropout_forward`` over the first ``size`` elements of flat device
    arrays, for the layer at index ``layer`` and the step in ``control[C_STEP]``."""
    launch(plan, kernels(np.dtype(x.dtype).name).dropout_elements, *blocks(size),
           out, x, size, int(key), int(layer), float(rate), control)


def dropout_backward(dx, dout, size, key, layer, rate, control, plan=None):
    """As ``kernels.dropout.dropout_backward``: the forward's mask, recomputed."""
    dropout_forward(dx, dout, size, key, layer, rate, control, plan=plan)
