"""One row at a time: ``model.predict(row)`` from Python, ``model.predictor()`` from Python and
inside an ``@njit`` loop, against the time the network's weights take to stream through the
caches once (a pass reading every weight: the bound of a one-row forward pass, which reads each
weight once and does one multiply-add with it).

    python -m benchmarks.bench_inference     # the table and the goals (MNIST's rows too if $FASTNN_DATA has them)

Under asv the figures are ``track_`` values in microseconds per row (medians of 5 runs of
2,000 rows), for the seed and wide networks, on MNIST-like rows (81% zeros, as MNIST's pixels)
and on rows without zeros.
"""
import statistics
import time

import numpy as np

from . import build_model
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

ROWS = 2_000
REPEATS = 5
# Issue goals for the seed network, one row inside compiled code.
GOAL_NJIT_US = 3.0
GOAL_NJIT_OVER_STREAM = 2.0


def rows_like(kind, n=ROWS, n_in=784, seed=0):
    """``n`` rows of ``n_in`` float32 pixels in [0, 1); 'mnist': 81% of them zero, as MNIST's."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, n_in), dtype=np.float32)
    if kind == "mnist":
        x[rng.random((n, n_in)) < 0.81] = 0
    return x


def _kernels():
    import numba

    @numba.njit
    def predict_rows(p, x, out):
        """The user's loop: one row at a time, into a buffer it owns."""
        for i in range(x.shape[0]):
            p.predict(x[i:i + 1], out)
        return out

    @numba.njit(fastmath=True)
    def stream(w, times):
        """Read every weight ``times`` times; the sum keeps the reads from being optimized away."""
        s = np.float32(0)
        for _ in range(times):
            for j in range(w.size):
                s += w[j]
        return s

    return predict_rows, stream


def per_row(run, rows):
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) / rows * 1e6)
    return statistics.median(times)


class OneRow:
    params = [["seed", "wide"], ["mnist", "dense"]]
    param_names = ["network", "input"]
    timeout = 300

    def setup(self, config, kind):
        self.model, _ = build_model(config)
        self.x = rows_like(kind)
        self.p = self.model.predictor()
        self.out = np.empty((1, self.p.n_out), np.float32)
        self.weights = np.concatenate([w.ravel() for w in self.model.get_weights()])
        self.predict_rows, self.stream = _kernels()
        self.predict_rows(self.p, self.x[:2], self.out)
        self.stream(self.weights, 1)
        self.model.predict(self.x[:1])

    def track_model_predict_us(self, config, kind):
        """``model.predict(row)`` from Python, microseconds per row."""
        rows = self.x[:ROWS // 4]
        return per_row(lambda: [self.model.predict(rows[i:i + 1]) for i in range(rows.shape[0])], rows.shape[0])

    def track_predictor_njit_us(self, config, kind):
        """``p.predict(row, out)`` inside an ``@njit`` loop, microseconds per row."""
        return per_row(lambda: self.predict_rows(self.p, self.x, self.out), ROWS)

    def track_weights_stream_us(self, config, kind):
        """One pass reading every weight (the bound of a one-row forward pass), microseconds."""
        return per_row(lambda: self.stream(self.weights, ROWS), ROWS)

    track_model_predict_us.unit = track_predictor_njit_us.unit = track_weights_stream_us.unit = "us"


def concurrent_rows_per_second(config, threads, rows=256, calls=12):
    """Rows per second of ``threads`` Python threads each calling ``model.predict`` on ``rows`` rows
    ``calls`` times on one model (median of 3 runs)."""
    import threading
    model, _ = build_model(config)
    x = rows_like("dense", rows)
    model.predict(x)
    results = []
    for _ in range(3):
        barrier = threading.Barrier(threads + 1)

        def work():
            barrier.wait()
            for _ in range(calls):
                model.predict(x)

        pool = [threading.Thread(target=work) for _ in range(threads)]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        results.append(threads * calls * rows / (time.perf_counter() - start))
    return statistics.median(results)


def main():
    import os
    kinds = ["mnist", "dense"]
    mnist = None
    if os.environ.get("FASTNN_DATA"):
        try:
            import fastnn
            mnist = np.ascontiguousarray(fastnn.load_mnist()[2][:ROWS])
            kinds = ["MNIST test rows"] + kinds
        except (OSError, RuntimeError, ValueError):
            pass
    print(f"{'network':8s} {'input':16s} {'model.predict':>14s} {'predictor, py':>14s} {'inside @njit':>13s} "
          f"{'weights once':>13s} {'njit/weights':>13s}   (us per row, median of {REPEATS} x {ROWS:,} rows)")
    results = {}
    for config in ("seed", "wide"):
        for kind in kinds:
            bench = OneRow()
            bench.setup(config, "mnist" if kind == "MNIST test rows" else kind)
            if kind == "MNIST test rows":
                bench.x = mnist
            python = per_row(lambda: [bench.p.predict(bench.x[i:i + 1]) for i in range(500)], 500)
            row = (bench.track_model_predict_us(config, kind), python, bench.track_predictor_njit_us(config, kind),
                   bench.track_weights_stream_us(config, kind))
            results[config, kind] = row
            print(f"{config:8s} {kind:16s} {row[0]:14.2f} {row[1]:14.2f} {row[2]:13.2f} {row[3]:13.2f} "
                  f"{row[2] / row[3]:13.2f}")
    import fastnn
    print("\npredict from several Python threads on one model, 256 rows a call (rows/s, median of 3);")
    print("BLAS threads: its own count, then fastnn.set_num_threads(1) (one core a call: the threads are the parallelism)")
    for blas in (None, 1):
        if blas is not None:
            fastnn.set_num_threads(blas)
        for config in ("seed", "wide"):
            figures = {n: concurrent_rows_per_second(config, n) for n in (1, 2, 4)}
            print(f"  {config:6s} BLAS {blas or 'own':>3} " + "  ".join(
                f"{n} thread{'s' if n > 1 else ' '}: {v:>9,.0f}" for n, v in figures.items())
                + f"   (2 threads / 1: {figures[2] / figures[1]:.2f}x)")
    njit, stream = results["seed", kinds[0]][2], results["seed", kinds[0]][3]
    print(f"\ngoal: seed, one row inside @njit ({kinds[0]}) <= {GOAL_NJIT_US} us: "
          f"{'PASS' if njit <= GOAL_NJIT_US else 'FAIL'} ({njit:.2f} us)")
    print(f"goal: ... within {GOAL_NJIT_OVER_STREAM}x of its weights streaming once: "
          f"{'PASS' if njit <= GOAL_NJIT_OVER_STREAM * stream else 'FAIL'} ({njit / stream:.2f}x of {stream:.2f} us)")


if __name__ == "__main__":
    main()
