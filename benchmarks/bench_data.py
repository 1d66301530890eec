"""``fit`` on data that does not sit in arrays in memory (``fastnn.data``):

- a ``Sequence`` of MNIST batches sliced from the arrays, against ``fit`` on the same arrays
  (same batches: ``shuffle=False``), for the seed (batch 50) and wide (batch 256) networks: what
  reading batches through Python on the loader thread costs (goal: within 1.15x);
- a memory-mapped float32 file of ``--gb`` GB (30 by default; written sparse: the file's pages
  that are never written take no disk), trained on for a few hundred batches of random rows:
  the process's peak resident memory (goal: under 2 GB), in a child process of its own.

``python -m benchmarks.bench_data`` prints both tables (medians of alternating runs); MNIST
comes from ``$FASTNN_DATA`` (synthetic MNIST-shaped data without it).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import CONFIGS, QUICK, build_model, synthetic_data
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

MEMMAP_WIDTH = 1024  # float32: a 4 KiB page a row
MEMMAP_LAYERS = (MEMMAP_WIDTH, 512, 10)


class Slices:
    """MNIST's batches sliced from the arrays, in order (``fastnn.data.Sequence``'s protocol)."""

    def __init__(self, x, y, batch):
        self.x, self.y, self.batch = x, y, batch

    def __len__(self):
        return -(-self.x.shape[0] // self.batch)

    def __getitem__(self, i):
        lo = i * self.batch
        return self.x[lo: lo + self.batch], self.y[lo: lo + self.batch]


def mnist_rows(rows):
    """(x, one-hot y, source name): MNIST's first ``rows`` training rows, or synthetic ones."""
    data = os.environ.get("FASTNN_DATA", "").strip()
    if data:
        try:
            from fastnn import load_mnist
            x_train, y_train, _, _ = load_mnist(data_dir=data)
            x = np.ascontiguousarray(x_train[:rows], dtype=np.float32)
            y = np.eye(10, dtype=np.float32)[y_train[:rows]]  # one-hot, as fit holds it
            return x, y, "MNIST"
        except (FileNotFoundError, OSError):
            pass
    x, y = synthetic_data(rows)
    return x, y, "synthetic"


def warm_up():
    model, _ = build_model("seed")
    x, y = synthetic_data(8)
    model.fit(Slices(x, y, 4), epochs=1, verbose=0)


class SequenceEpoch:
    """One epoch of ``fit``: from arrays, and from a Sequence of the same batches."""
    params = [list(CONFIGS), ["arrays", "sequence"]]
    param_names = ["network", "source"]
    number = 1
    repeat = (2, 5, 60.0)
    warmup_time = 0.0
    timeout = 900

    def setup(self, config, source):
        self.model, self.batch = build_model(config)
        x, y, _ = mnist_rows(6000 if QUICK or config == "wide" else 60000)
        self.args = (x, y) if source == "arrays" else (Slices(x, y, self.batch),)
        self.kwargs = {"batch_size": self.batch} if source == "arrays" else {}
        self.model.fit(*_head(self.args, self.batch), epochs=1, verbose=0, **self.kwargs)

    def time_epoch(self, config, source):
        self.model.fit(*self.args, epochs=1, shuffle=False, verbose=0, **self.kwargs)


def _head(args, batch):
    """Two batches of ``args``, to compile on."""
    if len(args) == 2:
        return args[0][: 2 * batch], args[1][: 2 * batch]
    return (Slices(args[0].x[: 2 * batch], args[0].y[: 2 * batch], batch),)


def compare(config, rows, repeats):
    """Samples per second of an epoch from arrays and from a Sequence: medians of ``repeats``
    alternating epochs, each from a fresh copy of the same weights."""
    x, y, name = mnist_rows(rows)
    model, batch = build_model(config)
    start_weights = model.get_weights()
    seq = Slices(x, y, batch)
    model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
    model.fit(Slices(x[: 2 * batch], y[: 2 * batch], batch), epochs=1, verbose=0)
    seconds = {"arrays": [], "sequence": []}
    for _ in range(repeats):
        for source in seconds:
            model.set_weights(start_weights)
            args, kwargs = ((x, y), {"batch_size": batch}) if source == "arrays" else ((seq,), {})
            t = time.perf_counter()
            model.fit(*args, epochs=1, shuffle=False, verbose=0, **kwargs)
            seconds[source].append(time.perf_counter() - t)
    rate = {k: rows / statistics.median(v) for k, v in seconds.items()}
    return {"network": config, "batch": batch, "rows": rows, "data": name, "arrays": rate["arrays"],
            "sequence": rate["sequence"], "ratio": rate["arrays"] / rate["sequence"]}


def memmap_run(gb, batches, batch_size=256, seed=0):
    """Train ``batches`` batches of random rows of a ``gb`` GB memory-mapped file (a sparse file:
    zeros, but every 512th row written); returns the figures with the peak RSS in MB. Run it in
    a fresh process: the peak is the process's."""
    from fastnn import MLP, Adam, Dense
    rows = int(gb * 2**30) // (MEMMAP_WIDTH * 4)
    rng = np.random.default_rng(seed)
    rss_start = _maxrss_mb()
    with tempfile.TemporaryDirectory(dir=os.environ.get("FASTNN_BENCH_TMP")) as tmp:
        path = os.path.join(tmp, "x.npy")
        x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, MEMMAP_WIDTH))
        offset = x.offset
        del x  # a header and a hole: no page of the data is written through the mapping
        with open(path, "r+b") as f:
            some = rng.random((MEMMAP_WIDTH,), dtype=np.float32).tobytes()
            for r in range(0, rows, 512):
                os.pwrite(f.fileno(), some, offset + r * MEMMAP_WIDTH * 4)
        labels = rng.integers(0, 10, rows)
        x = np.load(path, mmap_mode="r")
        model = MLP([Dense(MEMMAP_LAYERS[0], MEMMAP_LAYERS[1], activation="relu"),
                     Dense(MEMMAP_LAYERS[1], MEMMAP_LAYERS[2], activation="softmax")], seed=seed)
        model.compile("cross_entropy", Adam(1e-3))
        t = time.perf_counter()
        history = model.fit(x, labels, batch_size=batch_size, steps_per_epoch=batches, epochs=1, verbose=0)
        seconds = time.perf_counter() - t
        disk_mb = os.stat(path).st_blocks * 512 / 2**20
        del x
    return {"gb": gb, "rows": rows, "width": MEMMAP_WIDTH, "batches": batches, "batch": batch_size,
            "fit_s": seconds, "loss": history.history["loss"][0], "file_disk_mb": disk_mb,
            "rss_start_mb": rss_start, "peak_rss_mb": _maxrss_mb()}


def _maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=30.0, help="size of the memory-mapped file (default 30)")
    parser.add_argument("--batches", type=int, default=300, help="batches trained on the file (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="alternating epochs per source (default 5)")
    parser.add_argument("--wide-rows", type=int, default=15000, help="rows of the wide network's epoch")
    parser.add_argument("--skip-sequence", action="store_true")
    parser.add_argument("--skip-memmap", action="store_true")
    parser.add_argument("--memmap-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memmap_child:
        print(json.dumps(memmap_run(args.gb, args.batches)))
        return
    if not args.skip_sequence:
        print(f"{'network':8}{'batch':>6}{'rows':>7}  {'data':10}{'arrays /s':>12}{'Sequence /s':>13}{'ratio':>7}")
        for config, rows in (("seed", 60000), ("wide", args.wide_rows)):
            r = compare(config, rows, args.repeats)
            print(f"{config:8}{r['batch']:>6}{rows:>7}  {r['data']:10}{r['arrays']:>12,.0f}{r['sequence']:>13,.0f}"
                  f"{r['ratio']:>7.3f}", flush=True)
        print(f"(samples/s, medians of {args.repeats} alternating epochs; ratio = arrays / Sequence, goal <= 1.15)")
    if not args.skip_memmap:
        child = subprocess.run([sys.executable, "-m", "benchmarks.bench_data", "--memmap-child", "--gb", str(args.gb),
                                "--batches", str(args.batches)], capture_output=True, text=True, check=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"\nmemory-mapped file: {r['gb']:g} GB ({r['rows']:,} rows of {r['width']} float32, "
              f"{r['file_disk_mb']:.0f} MB on disk), {r['batches']} batches of {r['batch']} random rows, "
              f"{'-'.join(map(str, MEMMAP_LAYERS))}: fit {r['fit_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(after imports {r['rss_start_mb']:.0f} MB; goal < 2048)")


if __name__ == "__main__":
    main()
