"""Soak test: memory stays flat over a long training run and over many ``fit`` calls.

    python benchmarks/soak.py [--epochs 50] [--calls 1000] [--quick] [--json out.json]

In one process, on synthetic data (no download):

1. epochs: one ``fit`` of ``--epochs`` epochs of a 784-64-10 classifier (ReLU, softmax,
   cross-entropy, Adam, batch 64) on 2,000 MNIST-shaped rows, with a callback that samples the
   process's resident set at the end of every epoch;
2. fit calls: ``model.fit(x, y, epochs=1, verbose=0)`` called ``--calls`` times in a loop on a
   tiny dataset (64 rows of a 20-32-3 classifier), sampling after every call.

Each part's growth is the resident set at its end minus the resident set after its first epoch
(or call), when the compiled kernels, the workspaces and the allocator's pools are in place:
anything that grows after that is a leak. It passes under ``--limit-mb`` (5 MB); the exit status
is 1 when either part fails. ``--quick`` (5 epochs, 100 calls) is a smoke run, too short to
show a slow leak.

The resident set is read from ``/proc/self/statm`` (resident pages x page size: the current
figure, which can go down); where there is no ``/proc`` (macOS, Windows) the peak figure of
``resource.getrusage`` is used instead, which only rises, so it can only overstate growth.
``bench_soak`` tracks the same two figures in asv.

Not an asv benchmark (asv imports it while discovering the suite: no name here starts with
time_, track_ or peakmem_).
"""
import argparse
import gc
import json
import os
import sys

LIMIT_MB = 5.0


def rss_bytes():
    """The process's resident set in bytes: current (``/proc/self/statm``), or peak where there
    is no ``/proc`` (``resource.getrusage``, in KiB on Linux and bytes on macOS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def _classifier(widths, seed=0):
    from fastnn import MLP, Adam, Dense
    layers = [Dense(a, b, activation="relu" if k < len(widths) - 2 else "softmax")
              for k, (a, b) in enumerate(zip(widths[:-1], widths[1:]))]
    model = MLP(layers, seed=seed)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
    return model


def _data(rows, n_in, n_classes, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((rows, n_in), dtype=np.float32)
    y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, rows)]
    return x, y


def epochs_growth(epochs, rows=2_000):
    """(growth in bytes from the end of the first epoch to the end of the last, samples): one
    ``fit`` of ``epochs`` epochs of 784-64-10, the resident set sampled at every epoch's end."""
    from fastnn import LambdaCallback
    model = _classifier((784, 64, 10))
    x, y = _data(rows, 784, 10)
    samples = []

    def sample(epoch, logs):
        gc.collect()
        samples.append(rss_bytes())

    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, callbacks=[LambdaCallback(on_epoch_end=sample)])
    return samples[-1] - samples[0], samples


def fit_calls_growth(calls, rows=64):
    """(growth in bytes from after the first call to after the last, samples): ``calls`` calls of
    ``model.fit(x, y, epochs=1, verbose=0)`` on ``rows`` rows of a 20-32-3 classifier."""
    model = _classifier((20, 32, 3))
    x, y = _data(rows, 20, 3)
    samples = []
    for _ in range(calls):
        model.fit(x, y, epochs=1, verbose=0)
        gc.collect()
        samples.append(rss_bytes())
    return samples[-1] - samples[0], samples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the long run (default 50)")
    parser.add_argument("--calls", type=int, default=1000, help="fit calls of the loop (default 1000)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 epochs, 100 calls")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB, help="growth allowed, MB (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.calls = 5, 100
    if args.epochs < 2 or args.calls < 2:
        parser.error("--epochs and --calls must be at least 2")

    start = rss_bytes()
    results = {"start_rss_mb": start / 2**20, "limit_mb": args.limit_mb}
    failed = False
    for name, count, run in (("epochs", args.epochs, epochs_growth), ("fit_calls", args.calls, fit_calls_growth)):
        growth, samples = run(count)
        ok = growth / 2**20 < args.limit_mb
        failed |= not ok
        results[name] = {"count": count, "rss_after_first_mb": samples[0] / 2**20,
                         "rss_at_end_mb": samples[-1] / 2**20, "growth_mb": growth / 2**20,
                         "max_mb": max(samples) / 2**20, "passed": ok}
        print(f"{name:>9} x{count}: resident set {samples[0] / 2**20:.1f} MB after the first, "
              f"{samples[-1] / 2**20:.1f} MB at the end: growth {growth / 2**20:+.2f} MB "
              f"(limit {args.limit_mb:g} MB) {'PASS' if ok else 'FAIL'}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
