"""One row at a time: microseconds per call of a trained network on one MNIST test row, for
fastnn's four ways of calling it and for its peers, each peer in a worker process of its own
(``peers_worker.py``: a clean environment, the same thread count).

    FASTNN_DATA=/path/to/data python benchmarks/latency.py [--threads 2] [--configs seed,wide] [--quick]

Rows of the table, per network (seed 784-100-50-10, wide 784-1024-1024-10; fastnn trains the
first 2,000 training rows for one epoch first, and ONNX Runtime and NumPy get its weights):

* ``model.predict(row)`` and ``model(row)``: fastnn from Python;
* the predictor from Python: ``p = model.predictor()``, ``p.predict(row)``;
* the predictor inside ``@njit``: ``p.predict(row, out)`` in a loop of a user's compiled function;
* PyTorch eager: ``torch.softmax(net(row))`` under ``torch.inference_mode()`` (fused-Adam build);
* ONNX Runtime: ``session.run`` on the model ``model.to_onnx`` exported;
* NumPy by hand: ``x @ W + b``, ReLU and softmax as NumPy expressions (``peers_latency.py``).

Each figure: the mean over 2,000 calls (200 with ``--quick``), median of 5 such rounds, the
callers taking turns (``peers_runs.measure_latency``). The goals of issue 25 are printed last.
The predictor's bound (its weights streamed once) is ``python -m benchmarks.bench_inference``'s.
"""
import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers_runs  # noqa: E402
from peers import clean_env, cpu_info, load_mnist_files  # noqa: E402
from peers_worker import PeerFailed, Worker, short_error  # noqa: E402

CONFIGS = {"seed": ((784, 100, 50, 10), 50), "wide": ((784, 1024, 1024, 10), 256)}
TRAIN_ROWS = 2000
# (label, worker, mode) rows of the table.
ROWS = (("model.predict(row)", "fastnn", "predict"), ("model(row)", "fastnn", "call"),
        ("predictor from Python", "fastnn", "predictor"), ("predictor inside @njit", "fastnn", "njit"),
        ("PyTorch eager", "torch_fused", "call"), ("ONNX Runtime", "onnxruntime", "call"),
        ("NumPy by hand", "numpy", "call"))
OPTIONAL = {"torch_fused": "torch", "onnxruntime": "onnxruntime"}
GOAL_NJIT_US = 3.0          # seed, the predictor inside @njit
GOAL_WIDE_OVER_ORT = 1.2    # wide, fastnn's faster call from Python against ONNX Runtime


def start_workers(threads, data_dir, start_env, log):
    """{peer: Worker} for every peer that starts; the ones that do not, with why, in the log."""
    workers = {}
    for peer in ("fastnn", "torch_fused", "onnxruntime", "numpy"):
        if peer in OPTIONAL and importlib.util.find_spec(OPTIONAL[peer]) is None:
            log(f"{peer}: skipped, {OPTIONAL[peer]} is not installed")
            continue
        try:
            w = workers[peer] = Worker(peer, threads, data_dir, clean_env(start_env, threads))
            changed = ", ".join(sorted(w.env_changed)) or "nothing"
            log(f"{peer}: {w.info['summary']}; environment {sorted(w.environ)}; its import changed {changed}")
        except PeerFailed as exc:
            log(f"{peer}: skipped, {short_error(exc)}")
    if "fastnn" not in workers:
        raise SystemExit("fastnn's worker did not start")
    return workers


def measure(workers, name, data_dir, quick, log):
    """{label: microseconds per call} for config ``name``."""
    sizes, batch = CONFIGS[name]
    fast = workers["fastnn"]
    fast.call("build", sizes=list(sizes), batch_size=batch)
    fast.call("fit_rows", n=TRAIN_ROWS, batch_size=batch, seed=0)
    if "torch_fused" in workers:
        workers["torch_fused"].call("build", sizes=list(sizes), batch_size=batch)
    if "onnxruntime" in workers:
        peers_runs.load_onnx(fast, workers["onnxruntime"], os.path.join(data_dir, f"{name}.onnx"))
    if "numpy" in workers:
        workers["numpy"].call("load_weights", path=fast.call("save_weights", path=os.path.join(data_dir, f"{name}.npz")))
    keyed = {label: (workers[peer], mode) for label, peer, mode in ROWS if peer in workers}
    log(f"{name}: {len(keyed)} callers taking turns")
    seconds = peers_runs.measure_latency(keyed, quick)["seconds"]
    return {label: statistics.median(times) * 1e6 for label, times in seconds.items() if times}


def goals(results):
    """[(goal, PASS/FAIL, text)] of issue 25's one-row goals that these results reach."""
    out = []
    seed = results.get("seed", {})
    if "predictor inside @njit" in seed:
        us = seed["predictor inside @njit"]
        out.append((f"seed, the predictor inside @njit <= {GOAL_NJIT_US} us", us <= GOAL_NJIT_US, f"{us:.2f} us"))
    for name, factor in (("seed", 1.0), ("wide", GOAL_WIDE_OVER_ORT)):
        r = results.get(name, {})
        if "ONNX Runtime" in r and "model.predict(row)" in r:
            best = min(r["model.predict(row)"], r["model(row)"])
            out.append((f"{name}, fastnn's faster call from Python <= {factor}x ONNX Runtime's", best <= factor *
                        r["ONNX Runtime"], f"{best / r['ONNX Runtime']:.2f}x ({best:.1f} against "
                        f"{r['ONNX Runtime']:.1f} us)"))
    return [(g, "PASS" if ok else "FAIL", text) for g, ok, text in out]


def report(results, cpu, threads):
    lines = [f"{cpu['model']}, {cpu['logical']} logical CPUs ({' '.join(cpu['simd'])}), {threads} threads each; "
             f"microseconds per call on one row (median of 5 rounds)"]
    names = list(results)
    lines.append(f"{'':26}" + "".join(f"{n:>12}" for n in names))
    for label, _, _ in ROWS:
        if any(label in results[n] for n in names):
            lines.append(f"{label:26}" + "".join(f"{results[n][label]:12.2f}" if label in results[n] else f"{'-':>12}"
                                                 for n in names))
    lines.append("")
    lines += [f"goal: {g}: {status} ({text})" for g, status, text in goals(results)]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--configs", default="seed,wide", help="comma-separated subset of seed,wide")
    parser.add_argument("--quick", action="store_true", help="200 calls a round instead of 2,000")
    args = parser.parse_args(argv)
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}: expected a subset of {', '.join(CONFIGS)}")

    def log(message):
        print(message, file=sys.stderr, flush=True)

    start_env = dict(os.environ)
    cpu = cpu_info()
    data_dir = tempfile.mkdtemp(prefix="fastnn-latency-")
    workers = {}
    try:
        load_mnist_files(data_dir, start_env)
        workers = start_workers(args.threads, data_dir, start_env, log)
        results = {name: measure(workers, name, data_dir, args.quick, log) for name in names}
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(report(results, cpu, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
