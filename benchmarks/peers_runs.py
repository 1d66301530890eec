"""The runs of ``peers.py`` beyond the MNIST configs, driven from its (framework-free) process:
the bag-of-words benchmark (``peers_sparse``), ONNX Runtime's predict and the one-row latency
(``peers_onnx``), and the parallel passes (fastnn's wide step at 1 and at 2 threads).
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peers_sparse import BOW_BATCH, BOW_PEER_MODULES as BOW_MODULES, BOW_PEERS, BOW_TORCH_PEERS  # noqa: E402
from peers_worker import PeerFailed, Worker, short_error  # noqa: E402

_PAUSE_S = 0.3  # as peers.py: the previous peer's spinning threads go to sleep
BOW_TRAIN_ROWS, BOW_TEST_ROWS, BOW_MEASURED_ROWS = 100_000, 10_000, 25_000
QUICK_BOW = (5_000, 1_000, 2_560)
LATENCY_CALLS, QUICK_LATENCY_CALLS, LATENCY_REPEATS = 2000, 200, 5
PARALLEL_ROWS, QUICK_PARALLEL_ROWS, PARALLEL_REPEATS = 15_360, 2_560, 3


def _worker_error(exc):
    """The last line of a worker's traceback, without the exception's class name for ours."""
    text = short_error(exc)
    return text.split(": ", 1)[1] if text.startswith("NotImplementedError: ") else text


# --------------------------------------------------------------------------------------------
# Bag of words
# --------------------------------------------------------------------------------------------

def measure_bow(peers, threads, data_dir, env_for, quick, repeats, log, sizes=None):
    """The bag-of-words benchmark: data made in a subprocess, then one fresh worker per peer of
    ``peers`` (all alive at once, taking turns), each: build, warm-up, ``repeats`` rounds of
    reset + one measured pass over the first measured rows + test accuracy; then its peak
    resident memory. ``env_for(peer)``: the peer's clean environment; ``sizes``: (training,
    test, measured) rows instead of the defaults (tests)."""
    train, test, rows = sizes or (QUICK_BOW if quick else (BOW_TRAIN_ROWS, BOW_TEST_ROWS, BOW_MEASURED_ROWS))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers_sparse.py")
    done = subprocess.run([sys.executable, script, data_dir, str(train), str(test)], env=env_for(None),
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return {"error": "making the data failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]}
    import json
    out = {"data": json.loads(done.stdout.strip().splitlines()[-1]), "rows": rows, "batch_size": BOW_BATCH,
           "peers": {}}
    log(f"bag of words: {train:,} + {test:,} rows, {out['data']['nnz_per_row']:.0f} nonzeros a row; "
        f"{repeats} x {rows:,} rows per peer")
    workers = {}
    try:
        for peer in peers:
            entry = out["peers"][peer] = {}
            try:
                w = workers[peer] = Worker(peer, threads, data_dir, env_for(peer), options={"train_rows": train})
                entry.update(summary=w.info["summary"], rss=w.rss)
                start = time.perf_counter()
                w.call("build", batch_size=BOW_BATCH)
                w.call("warm_up", batch_size=BOW_BATCH, rows=2 * BOW_BATCH + rows % BOW_BATCH)
                entry.update(warm_up_s=time.perf_counter() - start, seconds=[], accuracy=[])
            except PeerFailed as exc:
                entry["error"] = _worker_error(exc)
                log(f"  {peer} skipped: {entry['error']}")
                if peer in workers:
                    workers.pop(peer).close()
            time.sleep(_PAUSE_S)
        active = list(workers)
        for r in range(repeats):
            for peer in active[r % len(active):] + active[:r % len(active)] if active else []:
                entry = out["peers"][peer]
                if "error" in entry:
                    continue
                try:
                    workers[peer].call("reset")
                    entry["seconds"].append(workers[peer].call("fit_rows", n=rows, batch_size=BOW_BATCH, seed=r))
                    entry["accuracy"].append(workers[peer].call("accuracy"))
                except PeerFailed as exc:
                    entry["error"] = _worker_error(exc)
                    log(f"  {peer} failed: {entry['error']}")
                time.sleep(_PAUSE_S)
        for peer in active:
            entry = out["peers"][peer]
            if entry.get("seconds"):
                entry["samples_per_s"] = rows / statistics.median(entry["seconds"])
                entry["accuracy_median"] = statistics.median(entry["accuracy"])
                entry["peak_mb"] = workers[peer].call("maxrss_mb")
                log(f"  {peer}: {entry['samples_per_s']:,.0f} samples/s, test accuracy {entry['accuracy_median']:.4f}, "
                    f"peak {entry['peak_mb']:.0f} MB")
    finally:
        for w in workers.values():
            w.close()
    variants = [p for p in BOW_TORCH_PEERS if out["peers"].get(p, {}).get("samples_per_s")]
    out["torch_best"] = max(variants, key=lambda p: out["peers"][p]["samples_per_s"]) if variants else None
    return out


def bow_peers(chosen):
    """The bag-of-words peers for the --peers list ``chosen``: fastnn always, PyTorch's fused and
    foreach variants when any PyTorch eager variant is chosen, scikit-learn when chosen."""
    keep = ["bow_fastnn"]
    if any(p.startswith("torch_") and p != "torch_compile" for p in chosen):
        keep += list(BOW_TORCH_PEERS)
    if "sklearn" in chosen:
        keep.append("bow_sklearn")
    return [p for p in BOW_PEERS if p in keep]


# --------------------------------------------------------------------------------------------
# ONNX Runtime and the one-row latency
# --------------------------------------------------------------------------------------------

def load_onnx(fastnn_worker, onnx_worker, path):
    """fastnn's current model exported to ``path`` and loaded by ONNX Runtime's worker."""
    fastnn_worker.call("export_onnx", path=path)
    onnx_worker.call("load_model", path=path)


def measure_latency(calls_by_key, quick):
    """{key: [mean seconds per one-row call] x LATENCY_REPEATS}; ``calls_by_key``: key -> (worker,
    mode). The keys take turns in each repeat; the first call of each is a warm-up."""
    calls = QUICK_LATENCY_CALLS if quick else LATENCY_CALLS
    out = {}
    for key, (worker, mode) in calls_by_key.items():
        try:
            worker.call("latency_seconds", mode=mode, calls=10)
            out[key] = []
        except PeerFailed:
            pass
    for _ in range(LATENCY_REPEATS):
        for key in list(out):
            worker, mode = calls_by_key[key]
            try:
                out[key].append(worker.call("latency_seconds", mode=mode, calls=calls))
            except PeerFailed:
                out.pop(key)
            time.sleep(_PAUSE_S)
    return {"calls": calls, "seconds": out}


# --------------------------------------------------------------------------------------------
# Parallel passes: fastnn's wide step at 1 and 2 threads
# --------------------------------------------------------------------------------------------

def measure_parallel(sizes, batch_size, data_dir, env_for, usable_cpus, quick, log):
    """fastnn's wide epoch and its products-alone time in two fresh workers, one at 1 thread and
    one at 2, taking turns; {"1": {"seconds": [...], "products_s"}, "2": {...}, "rows"} or
    {"skip": reason}."""
    if usable_cpus < 2:
        return {"skip": f"{usable_cpus} usable CPU: no second thread to measure"}
    rows = QUICK_PARALLEL_ROWS if quick else PARALLEL_ROWS
    out, workers = {"rows": rows, "batch_size": batch_size}, {}
    try:
        for threads in (1, 2):
            w = workers[threads] = Worker("fastnn", threads, data_dir, env_for(threads))
            w.call("build", sizes=list(sizes), batch_size=batch_size)
            w.call("warm_up", batch_size=batch_size, rows=2 * batch_size)
            out[str(threads)] = {"seconds": []}
        for r in range(PARALLEL_REPEATS):
            for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                workers[threads].call("reset")
                out[str(threads)]["seconds"].append(
                    workers[threads].call("fit_rows", n=rows, batch_size=batch_size, seed=r))
                time.sleep(_PAUSE_S)
        for threads in (1, 2):
            out[str(threads)]["products_s"] = workers[threads].call("products_seconds", sizes=list(sizes),
                                                                    batch_size=batch_size, rows=rows)
    except PeerFailed as exc:
        out = {"skip": f"fastnn failed: {short_error(exc)}"}
        log(f"  parallel passes: {out['skip']}")
    finally:
        for w in workers.values():
            w.close()
    return out


def outside_products(parallel, threads):
    """Seconds of the epoch outside its dense products at ``threads`` (the median epoch less the
    products alone), or None."""
    entry = parallel.get(str(threads))
    if not entry or not entry.get("seconds") or entry.get("products_s") is None:
        return None
    return statistics.median(entry["seconds"]) - entry["products_s"]

