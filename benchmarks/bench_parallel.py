"""The parallel passes: the wide network's passes outside its matrix products (the batch gather,
bias + ReLU and ReLU's derivative over two 256 x 1024 layers, their column sums, Adam over its
1,863,690 parameters), each as the serial loop and as its parallel kernel, on 1 and 2 of Numba's
threads (``benchmarks/parallel_passes.py``'s arrays and calls), and the speed-up of all of them
together at 2 threads over the serial loops: the figure of ``peers.py``'s parallel-passes goal,
without the products around it.

Needs Numba's TBB layer (``fastnn.config.PARALLEL``); the 2-thread cases need two of Numba's
threads (``FASTNN_BENCH_THREADS=2 asv run -b bench_parallel``; asv.conf.json's default is 1).
Elsewhere they skip."""
import time

import numba

from fastnn import config

from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)
from .parallel_passes import WidePasses


def _available(threads):
    if not config.PARALLEL:
        raise NotImplementedError(f"no parallel kernels here: {config.PARALLEL_REASON}")
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise NotImplementedError(f"{threads} threads asked for, Numba has {numba.config.NUMBA_NUM_THREADS}")


def warm_up():
    if not config.PARALLEL:
        return
    passes = WidePasses(rows=512)
    passes.run(False)
    passes.run(True)


class ParallelPasses:
    """One pass (``WidePasses.NAMES``), serial (``parallel`` False, one thread) or as its parallel
    kernel on ``threads`` threads."""
    params = [list(WidePasses.NAMES), [False, True], [1, 2]]
    param_names = ["pass", "parallel", "threads"]

    def setup(self, name, parallel, threads):
        self.before = numba.get_num_threads()  # (asv calls teardown after a skip too)
        _available(threads)
        if not parallel and threads > 1:
            raise NotImplementedError("the serial loops run on one thread")
        self.passes = WidePasses()
        numba.set_num_threads(threads)
        self.passes.run_pass(name, parallel)

    def teardown(self, name, parallel, threads):
        numba.set_num_threads(self.before)

    def time_pass(self, name, parallel, threads):
        self.passes.run_pass(name, parallel)


class ParallelSpeedup:
    """All of the passes: serial time over parallel time at 2 threads (the goal is 1.7x)."""
    repeat = 1
    number = 1
    timeout = 300

    def setup(self):
        _available(2)
        self.passes = WidePasses()
        self.passes.run(False)
        self.passes.run(True)

    def track_speedup_at_two_threads(self):
        """Medians of 15 alternating rounds of 20 calls each way. Higher is better."""
        before = numba.get_num_threads()
        times = {False: [], True: []}
        try:
            for _ in range(15):
                for parallel in (False, True):
                    numba.set_num_threads(2 if parallel else 1)
                    start = time.perf_counter()
                    for _ in range(20):
                        self.passes.run(parallel)
                    times[parallel].append(time.perf_counter() - start)
        finally:
            numba.set_num_threads(before)
        median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        return round(median[False] / median[True], 3)

    track_speedup_at_two_threads.unit = "speed-up"
