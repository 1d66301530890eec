"""CUDA twins of ``fastnn.kernels.embedding`` and ``fastnn.kernels.masking``.

The element functions are the CPU kernels' own Python source compiled as device functions
(``fastnn.cuda.device_twin``): the forward pass runs one thread per output element; the
backward pass zeroes the table's gradient, then runs one thread per (row, id, column) that adds
its share with an atomic add (rows that share an id add into the same places). Masking is one
thread per element.
"""
from functools import lru_cache
from types import SimpleNamespace

import numba
import numpy as np
from numba import cuda

from ..kernels import embedding as cpu
from ..kernels.embedding import CONCAT, MEAN
from . import blocks, check_code, device_twin, kernel, launch
from .buffers import fill_zero

embedding_scale = device_twin(cpu.embedding_scale)
embedding_element = device_twin(cpu.embedding_element)


@lru_cache(maxsize=None)
def kernels(dtype):
    T = numba.from_dtype(np.dtype(dtype))

    @kernel
    def embedding_forward_elements(out, ids, params, w, rows, n_ids, dim, n_out, combiner, mask_zero):
        i = cuda.grid(1)
        if i < rows * n_out:
            r = i // n_out
            scale = embedding_scale(ids, r, n_ids, combiner, mask_zero)
            out[i] = T(embedding_element(ids, params[w:], r, i - r * n_out, n_ids, dim, combiner, mask_zero, scale))

    @kernel
    def embedding_backward_elements(grads, dout, ids, w, rows, n_ids, dim, n_out, combiner, mask_zero):
        i = cuda.grid(1)
        if i < rows * n_ids * dim:
            r = i // (n_ids * dim)
            t = (i // dim) % n_ids
            j = i % dim
            v = np.int64(ids[r * n_ids + t])
            if not (mask_zero and v == 0):
                scale = T(embedding_scale(ids, r, n_ids, combiner, mask_zero))
                base = t * dim if combiner == CONCAT else 0
                cuda.atomic.add(grads, w + v * dim + j, dout[r * n_out + base + j] * scale)

    @kernel
    def masking_elements(out, x, ref, size, mask_value):
        """out[i] = 0 where ref[i] == mask_value, else x[i]: the forward pass (ref = x) and the
        backward pass (x = dout, ref = the layer's input); ``out`` may be ``x``."""
        i = cuda.grid(1)
        if i < size:
            out[i] = T(0) if ref[i] == T(mask_value) else x[i]

    return SimpleNamespace(embedding_forward_elements=embedding_forward_elements,
                           embedding_backward_elements=embedding_backward_elements,
                           masking_elements=masking_elements)


def embedding_forward(out, ids, params, w, rows, n_ids, n_out, combiner, mask_zero, plan=None):
    """As ``kernels.embedding.embedding_forward``: flat device arrays, the table at ``params[w:]``."""
    check_code(combiner, MEAN, "embedding combiner")
    dim = cpu.embedding_dim.py_func(combiner, n_out, n_ids)
    launch(plan, kernels(np.dtype(out.dtype).name).embedding_forward_elements, *blocks(rows * n_out),
           out, ids, params, int(w), int(rows), int(n_ids), int(dim), int(n_out), int(combiner), bool(mask_zero))


def embedding_backward(grads, dout, ids, w, b, rows, n_ids, n_out, combiner, mask_zero, plan=None):
    """As ``kernels.embedding.embedding_backward`` into the table's gradient, ``grads[w:b]``."""
    check_code(combiner, MEAN, "embedding combiner")
    dim = cpu.embedding_dim.py_func(combiner, n_out, n_ids)
    fill_zero(grads[int(w): int(b)], plan=plan)
    launch(plan, kernels(np.dtype(grads.dtype).name).embedding_backward_elements, *blocks(rows * n_ids * dim), grads, dout, ids, int(w), int(rows),
           int(n_ids), int(dim), int(n_out), int(combiner), bool(mask_zero))


def masking_forward(out, x, size, mask_value, plan=None):
    """As ``kernels.masking.masking_forward`` over the first ``size`` elements."""
    launch(plan, kernels(np.dtype(x.dtype).name).masking_elements, *blocks(size), out, x, x, int(size),
           float(mask_value))


def masking_backward(dx, dout, x, size, mask_value, plan=None):
    """As ``kernels.masking.masking_backward``; ``dx`` may be ``dout``."""
    launch(plan, kernels(np.dtype(x.dtype).name).masking_elements, *blocks(size), dx, dout, x, int(size),
           float(mask_value))
