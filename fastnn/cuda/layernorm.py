"""CUDA twin of ``fastnn.kernels.layernorm``: one thread per row for the output and dx, one per
feature for dgamma and dbeta.

The row and column functions are the CPU kernels' own Python source, compiled as device
functions (``fastnn.cuda.device_twin``), so both targets compute the same statistics in the
same order. ``stats`` is the workspace's float64 scratch (``layernorm_stats_size``).
"""
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..kernels import layernorm as cpu
from . import blocks, device_twin, kernel, launch

layernorm_row_statistics = device_twin(cpu.layernorm_row_statistics)
layernorm_forward_row = device_twin(cpu.layernorm_forward_row, layernorm_row_statistics=layernorm_row_statistics)
layernorm_backward_row = device_twin(cpu.layernorm_backward_row, layernorm_row_statistics=layernorm_row_statistics)
layernorm_param_grads_column = device_twin(cpu.layernorm_param_grads_column)


@lru_cache(maxsize=None)
def kernels(dtype):
    @kernel
    def layernorm_forward_rows(out, x, params, w, b, rows, n, epsilon, flags):
        r = cuda.grid(1)
        if r < rows:
            layernorm_forward_row(out, x, params, w, b, r, n, epsilon, flags)

    @kernel
    def layernorm_backward_rows(dx, dout, x, params, w, rows, n, epsilon, flags, stats, want_dx):
        r = cuda.grid(1)
        if r < rows:
            layernorm_backward_row(dx, dout, x, params, w, r, n, epsilon, flags, stats, want_dx)

    @kernel
    def layernorm_param_grads_columns(grads, dout, x, w, b, rows, n, flags, stats):
        j = cuda.grid(1)
        if j < n:
            layernorm_param_grads_column(grads, dout, x, w, b, rows, n, j, flags, stats)

    return SimpleNamespace(layernorm_forward_rows=layernorm_forward_rows,
                           layernorm_backward_rows=layernorm_backward_rows,
                           layernorm_param_grads_columns=layernorm_param_grads_columns)


def layernorm_forward(out, x, params, w, b, rows, n, epsilon, flags, plan=None):
    """As ``kernels.layernorm.layernorm_forward`` on flat (rows, n) device arrays."""
    launch(plan, kernels(np.dtype(x.dtype).name).layernorm_forward_rows, *blocks(rows),
           out, x, params, int(w), int(b), int(rows), int(n), float(epsilon), int(flags))


def layernorm_backward(dx, grads, dout, x, params, w, b, rows, n, epsilon, flags, stats, want_dx=True, plan=None):
    """As ``kernels.layernorm.layernorm_backward``; ``dx`` may be ``dout``: the row pass that
    writes dx runs after the feature sums, and a first pass (without dx) keeps the rows' statistics."""
    k = kernels(np.dtype(x.dtype).name)
    launch(plan, k.layernorm_backward_rows, *blocks(rows),
           dx, dout, x, params, int(w), int(rows), int(n), float(epsilon), int(flags), stats, False)
    launch(plan, k.layernorm_param_grads_columns, *blocks(n),
           grads, dout, x, int(w), int(b), int(rows), int(n), int(flags), stats)
    if want_dx:
        launch(plan, k.layernorm_backward_rows, *blocks(rows),
               dx, dout, x, params, int(w), int(rows), int(n), float(epsilon), int(flags), stats, True)
