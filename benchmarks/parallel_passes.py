"""The wide network's passes outside the matrix products, serial against their parallel kernels at 1
and 2 Numba threads, in one process (alternating, medians): the gather of a batch of 256 MNIST-sized
rows, bias + ReLU forward and ReLU backward over two 256 x 1024 layers, two column sums, and Adam
over the 1,863,690 parameters of 784-1024-1024-10.

    FASTNN_PARALLEL=all python benchmarks/parallel_passes.py

Needs Numba's TBB layer and the passes asked for (``fastnn.config.PARALLEL``). The serial side is the serial loops as
written in the kernels (which, in a parallel build, branch to the parallel kernels above the
thresholds, so they are written out here).
"""
import time

import numba
import numpy as np

from fastnn import config
from fastnn.kernels import activations as A
from fastnn.kernels import optimizers as O
from fastnn.kernels import parallel as P

B, W = 256, 1024
N_PARAMS = 784 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10


@numba.njit(fastmath=config.FASTMATH, error_model="numpy")
def serial_gather(dst, src, order, start):
    for r in range(dst.shape[0]):
        s = order[start + r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[s, j]


@numba.njit(fastmath=config.FASTMATH, error_model="numpy")
def serial_bias_relu(out, b):
    for i in range(out.shape[0]):
        row = out[i]
        for j in range(out.shape[1]):
            row[j] += b[j]
    z = out.reshape(-1)
    zero = z.dtype.type(0)
    for i in range(z.size):
        z[i] = z[i] if z[i] > zero else zero


@numba.njit(fastmath=config.FASTMATH, error_model="numpy")
def serial_relu_backward(d, out):
    d, o = d.reshape(-1), out.reshape(-1)
    zero = d.dtype.type(0)
    for i in range(d.size):
        d[i] = d[i] if o[i] > zero else zero


@numba.njit(fastmath=config.FASTMATH, error_model="numpy")
def serial_column_sums(db, dz):
    db[:] = 0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            db[j] += dz[i, j]


def main():
    if not config.PARALLEL:
        raise SystemExit(f"no parallel kernels here ({config.PARALLEL_REASON}): set FASTNN_PARALLEL=all")
    rng = np.random.default_rng(0)
    x = rng.random((60000, 784), dtype=np.float32)
    order = rng.permutation(60000)
    xb = np.empty((B, 784), np.float32)
    h = [rng.standard_normal((B, W)).astype(np.float32) for _ in range(2)]
    b = rng.standard_normal(W).astype(np.float32)
    p, g, m = (rng.standard_normal(N_PARAMS).astype(np.float32) for _ in range(3))
    v = np.abs(g)
    db = np.empty(W, np.float32)

    def run(parallel):
        if parallel:
            P.gather_rows_parallel(xb, x, order, 0)
            for k in range(2):
                A.bias_relu_parallel(h[k], h[k], b, True)
                A.relu_backward_parallel(h[k], h[k], h[k])
                P.column_sums_parallel(db, h[k])
            O.adam_step_parallel(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 5, 0.0)
        else:
            serial_gather(xb, x, order, 0)
            for k in range(2):
                serial_bias_relu(h[k], b)
                serial_relu_backward(h[k], h[k])
                serial_column_sums(db, h[k])
            O.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 5, 0.0)

    run(False)
    run(True)  # compiles
    times = {}
    for _ in range(15):
        for label, parallel, threads in (("serial", False, 1), ("parallel x1", True, 1), ("parallel x2", True, 2)):
            numba.set_num_threads(threads)
            start = time.perf_counter()
            for _ in range(20):
                run(parallel)
            times.setdefault(label, []).append((time.perf_counter() - start) / 20 * 1e6)
    for label, ts in times.items():
        print(f"passes, {label:<12} median {np.median(ts):7.0f} us, min {min(ts):7.0f} us")
    for label, f in (("Adam serial", O.adam_step), ("Adam parallel", O.adam_step_parallel)):
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ts = []
            for _ in range(30):
                start = time.perf_counter()
                f(p, g, m, v, 1e-3, 0.9, 0.999, 1e-7, 5, 0.0)
                ts.append((time.perf_counter() - start) * 1e6)
            print(f"{label} x{threads}: median {np.median(ts):.0f} us, min {min(ts):.0f} us")


if __name__ == "__main__":
    main()
