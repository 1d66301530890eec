"""Merge layers and input slices of a functional model: ``merge_forward(out, first, second, kind, start)``
and ``merge_backward(dx, dx2, dout, first, second, kind)``
(which adds into dx and dx2).

SLICE: out = first[:, start:start + width] (an input of several, cut from the gathered batch);
CONCATENATE: out = [first, second] side by side (Keras' Concatenate(axis=-1)); ADD: first + second;
MULTIPLY: first * second, elementwise (Keras' Add, Multiply). The element function works on flat
row-major arrays: the CUDA twin (``fastnn.cuda.merge``) compiles this very source.
"""
from ..config import kernel
from .table import ADD_LAYER, CONCATENATE_LAYER, MULTIPLY_LAYER, SLICE_LAYER


@kernel(inline=True)
def merge_element(first, second, r, j, n1, n2, start, kind):
    """Element (r, j) of a merge layer's or an input's output, from flat row-major ``first``
    (rows, n1) and ``second`` (rows, n2): SLICE first[r, start + j]; CONCATENATE [first, second];
    ADD first + second; MULTIPLY first * second (the CUDA twin compiles this very function)."""
    if kind == SLICE_LAYER:
        return first[r * n1 + start + j]
    if kind == CONCATENATE_LAYER:
        return first[r * n1 + j] if j < n1 else second[r * n2 + j - n1]
    if kind == ADD_LAYER:
        return first[r * n1 + j] + second[r * n2 + j]
    return first[r * n1 + j] * second[r * n2 + j]


@kernel(inline=True)
def merge_forward(out, first, second, kind, start):
    """out (rows, width) of a merge layer or an input (``merge_element``); ``second`` may be ``first``."""
    rows, width = out.shape
    n1, n2 = first.shape[1], second.shape[1]
    a, b = first.reshape(-1), second.reshape(-1)
    for r in range(rows):
        for j in range(width):
            out[r, j] = merge_element(a, b, r, j, n1, n2, start, kind)


@kernel(inline=True)
def merge_backward(dx, dx2, dout, first, second, kind):
    """A merge layer's backward from dout = dL/d(its output): dL/d(first) is added into ``dx`` and
    dL/d(second) into ``dx2``, its inputs' gradients (nodes' gradients, which sum their readers'
    shares: adding there spares a pass through scratch); either with no rows is skipped (an input
    that needs no gradient)."""
    if dx2.shape[0] > 0:
        lo = first.shape[1] if kind == CONCATENATE_LAYER else 0
        for r in range(dx2.shape[0]):
            for j in range(dx2.shape[1]):
                dx2[r, j] += dout[r, j] * first[r, j] if kind == MULTIPLY_LAYER else dout[r, lo + j]
    for r in range(dx.shape[0]):
        for j in range(dx.shape[1]):
            dx[r, j] += dout[r, j] * second[r, j] if kind == MULTIPLY_LAYER else dout[r, j]
