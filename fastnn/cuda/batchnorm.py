"""CUDA twin of ``fastnn.kernels.batchnorm``: one thread per feature (column).

The column functions are not rewritten here: they are the CPU kernels' own Python source,
compiled as device functions (``fastnn.cuda.device_twin``), so both targets compute the same
statistics in the same order. Adjacent threads read adjacent columns of a row, so the reads
of each row are coalesced.
"""
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda

from ..kernels import batchnorm as cpu
from . import blocks, device_twin, kernel, launch

batchnorm_column_statistics = device_twin(cpu.batchnorm_column_statistics)
batchnorm_forward_column = device_twin(cpu.batchnorm_forward_column,
                                       batchnorm_column_statistics=batchnorm_column_statistics)
batchnorm_backward_column = device_twin(cpu.batchnorm_backward_column,
                                        batchnorm_column_statistics=batchnorm_column_statistics)


@lru_cache(maxsize=None)
def kernels(dtype):
    @kernel
    def batchnorm_forward_columns(out, x, params, w, b, rows, n, training, momentum, epsilon):
        j = cuda.grid(1)
        if j < n:
            batchnorm_forward_column(out, x, params, w, b, rows, n, j, training, momentum, epsilon)

    @kernel
    def batchnorm_backward_columns(dx, grads, dout, x, params, w, b, rows, n, epsilon, want_dx, frozen):
        j = cuda.grid(1)
        if j < n:
            batchnorm_backward_column(dx, grads, dout, x, params, w, b, rows, n, j, epsilon, want_dx, frozen)

    return SimpleNamespace(batchnorm_forward_columns=batchnorm_forward_columns,
                           batchnorm_backward_columns=batchnorm_backward_columns)


def batchnorm_forward(out, x, params, w, b, rows, n, training, momentum, epsilon, plan=None):
    """As ``kernels.batchnorm.batchnorm_forward`` on flat (rows, n) device arrays."""
    launch(plan, kernels(np.dtype(x.dtype).name).batchnorm_forward_columns, *blocks(n),
           out, x, params, int(w), int(b), int(rows), int(n), bool(training), float(momentum), float(epsilon))


def batchnorm_backward(dx, grads, dout, x, params, w, b, rows, n, epsilon, want_dx=True, frozen=False, plan=None):
    """As ``kernels.batchnorm.batchnorm_backward``; ``dx`` may be ``dout``."""
    launch(plan, kernels(np.dtype(x.dtype).name).batchnorm_backward_columns, *blocks(n),
           dx, grads, dout, x, params, int(w), int(b), int(rows), int(n), float(epsilon), bool(want_dx),
           bool(frozen))
