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


class WidePasses:
    """The arrays of the wide step's passes outside its products (random numbers; MNIST's training
    set's size for the gather's source), and each pass as a call, serial or parallel."""
    NAMES = ("gather", "bias_relu", "relu_backward", "column_sums", "adam")

    def __init__(self, rows=60000):
        rng = np.random.default_rng(0)
        self.x = rng.random((rows, 784), dtype=np.float32)
        self.order = rng.permutation(rows)
        self.xb = np.empty((B, 784), np.float32)
        self.h = [rng.standard_normal((B, W)).astype(np.float32) for _ in range(2)]  # activations
        self.d = [rng.standard_normal((B, W)).astype(np.float32) for _ in range(2)]  # their gradients
        self.b = rng.standard_normal(W).astype(np.float32)
        self.p, self.g, self.m = (rng.standard_normal(N_PARAMS).astype(np.float32) for _ in range(3))
        self.v = np.abs(self.g)
        self.db = np.empty(W, np.float32)

    def run_pass(self, name, parallel):
        """One pass as the wide step runs it (the layer passes twice: two hidden layers)."""
        h, d, b, db = self.h, self.d, self.b, self.db
        if name == "gather":
            (P.gather_rows_parallel if parallel else serial_gather)(self.xb, self.x, self.order, 0)
        elif name == "adam":
            (O.adam_step_parallel if parallel else O.adam_step)(self.p, self.g, self.m, self.v, 1e-3, 0.9, 0.999,
                                                                  1e-7, 5, 0.0)
        else:
            for k in range(2):
                if name == "bias_relu":
                    A.bias_relu_parallel(h[k], h[k], b, True) if parallel else serial_bias_relu(h[k], b)
                elif name == "relu_backward":  # (in place, as the step's backward pass: d *= relu'(h))
                    A.relu_backward_parallel(d[k], d[k], h[k]) if parallel else serial_relu_backward(d[k], h[k])
                else:
                    P.column_sums_parallel(db, d[k]) if parallel else serial_column_sums(db, d[k])

    def run(self, parallel):
        for name in self.NAMES:
            self.run_pass(name, parallel)


def main():
    if not config.PARALLEL:
        raise SystemExit(f"no parallel kernels here ({config.PARALLEL_REASON}): set FASTNN_PARALLEL=all")
    passes = WidePasses()
    run = passes.run
    p, g, m, v = passes.p, passes.g, passes.m, passes.v

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
