"""CUDA twin of ``fastnn.kernels.merge``: merge layers and input slices, one thread per element.

The element function is the CPU kernel's own Python source compiled as a device function
(``fastnn.cuda.device_twin``); the backward pass adds each input's share into its node's
gradient (``add_elements``), as the CPU's does.
"""
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..kernels import merge as cpu
from ..kernels.table import B_OFF, CONCATENATE_LAYER, KIND, MULTIPLY_LAYER, N_IN, N_OUT, SLICE_LAYER
from . import blocks, device_twin, kernel, launch

merge_element = device_twin(cpu.merge_element)


@lru_cache(maxsize=None)
def kernels(dtype):
    @kernel
    def merge_elements(out, first, second, rows, width, n1, n2, start, kind):
        """A merge layer's or an input's output (``kernels.merge.merge_element``), one thread per element."""
        i = cuda.grid(1)
        if i < rows * width:
            r = i // width
            out[i] = merge_element(first, second, r, i - r * width, n1, n2, start, kind)

    @kernel
    def add_elements(dst, src, rows, width, src_width, lo, factor, use_factor):
        """dst[r, j] += src[r, lo + j] (times factor[r, j] with ``use_factor``): a reader's share of
        a node's gradient."""
        i = cuda.grid(1)
        if i < rows * width:
            r = i // width
            j = i - r * width
            value = src[r * src_width + lo + j]
            if use_factor:
                value *= factor[i]
            dst[i] += value

    return SimpleNamespace(merge_elements=merge_elements, add_elements=add_elements)


def merge_widths(layers, k):
    """(n1, n2, start) of a merge or input row k: the widths of its two inputs, an input's first column."""
    n_in, n_out, kind = int(layers[k, N_IN]), int(layers[k, N_OUT]), layers[k, KIND]
    if kind == SLICE_LAYER:
        return n_in, n_in, int(layers[k, B_OFF])
    return n_in, (n_out - n_in if kind == CONCATENATE_LAYER else n_in), 0


def merge_forward(out, first, second, rows, width, n1, n2, start, kind, plan=None):
    """As ``kernels.merge.merge_forward`` on flat device arrays."""
    launch(plan, kernels(np.dtype(out.dtype).name).merge_elements, *blocks(rows * width),
           out, first, second, int(rows), int(width), int(n1), int(n2), int(start), int(kind))


def add_into(dst, src, rows, width, src_width, lo=0, factor=None, plan=None):
    """dst += src[:, lo:lo + width] (times ``factor`` elementwise when given), flat (rows, ...) device arrays."""
    launch(plan, kernels(np.dtype(dst.dtype).name).add_elements, *blocks(rows * width), dst, src, int(rows),
           int(width), int(src_width), int(lo), dst if factor is None else factor, factor is not None)


def merge_backward(dx, dx2, dout, first, second, rows, n1, n2, n_out, kind, plan=None):
    """As ``kernels.merge.merge_backward``: dL/d(first) added into ``dx``, dL/d(second) into ``dx2``
    (either None: not needed)."""
    multiply = kind == MULTIPLY_LAYER
    if dx2 is not None:
        add_into(dx2, dout, rows, n2, n_out, lo=n1 if kind == CONCATENATE_LAYER else 0,
                 factor=first if multiply else None, plan=plan)
    if dx is not None:
        add_into(dx, dout, rows, n1, n_out, factor=second if multiply else None, plan=plan)
