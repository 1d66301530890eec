"""fastnn against PyTorch (eager and torch.compile), JAX and scikit-learn, side by side in one run.

    python benchmarks/peers.py [--quick] [--repeats N] [--peers fastnn,torch,torch_compile,jax,sklearn]
                               [--torch-adam fused,foreach,default] [--sweep | --no-sweep]
                               [--sweep-peers ...] [--cold | --no-cold] [--plot PATH] [--json PATH]
                               [--threads N] [--bow | --no-bow] [--parallel | --no-parallel] [--onnx | --no-onnx]
    python benchmarks/peers.py --from-json PATH [--plot PATH]     # the report of a saved run, again

The peers are the ``bench`` extra (``pip install -e ".[bench]"``), never a dependency of
fastnn; a peer that is not installed, or fails to start, is skipped and the report says why.
Peer names: fastnn, torch_fused, torch_foreach, torch_default (PyTorch eager, one per Adam
implementation; ``torch`` stands for those that ``--torch-adam`` selects, all three by
default), torch_compile, jax, sklearn.

Files: this one (command line and orchestration: the measured configs, predict, start-up and
memory runs), ``peers_adapters.py`` (one class per framework), ``peers_worker.py`` (the worker
process and its protocol), ``peers_report.py`` (report, goals, plot), ``peers_sparse.py`` (the
bag-of-words data and peers), ``peers_onnx.py`` (ONNX Runtime), ``peers_runs.py`` (the
bag-of-words, latency and parallel-passes runs), ``peers_goals.py`` (their tables and goals).

What is measured, and how
-------------------------
* Clean environment per peer. This process imports no framework (not even fastnn): MNIST is
  loaded by ``fastnn.load_mnist()`` (``$FASTNN_DATA``) in a short subprocess that saves it as
  ``.npy`` files, and the NumPy GEMM peak is measured in another. Each peer then runs in a
  process of its own, started by file path (``python benchmarks/peers_worker.py``, so the
  ``benchmarks`` package and its ``__init__`` never reach it) with an environment built from a
  whitelist of the one this script was started with: PATH, HOME, USER, LOGNAME, LANG, LC_ALL,
  LC_CTYPE, TMPDIR, TERM, VIRTUAL_ENV, PYTHONPATH (those set), plus OMP_NUM_THREADS =
  MKL_NUM_THREADS = OPENBLAS_NUM_THREADS = ``--threads``. Nothing else (no FASTNN_*, NUMBA_*,
  OMP_WAIT_POLICY, KMP_*). The
  start-up and memory runs use the same environment (the cold start-up adds an empty
  ``NUMBA_CACHE_DIR``). Each worker reports its ``os.environ`` after importing its framework and
  setting it up, and every variable that import and set-up changed; the report prints both, the
  CPU (model, SIMD flags, cores) and each peer's BLAS library and core type.
* Data: the same MNIST arrays for every peer, float32 pixels in [0, 1]. A measurement is one
  shuffled epoch of 60,000 samples (sweep points use fewer, at least 20 batches; throughput is
  samples / seconds).
* Model: ReLU hidden layers, softmax + cross-entropy, Adam(1e-3), every peer starting from
  the same Glorot-uniform weights and zero biases; each repeat starts again from them with a
  fresh optimizer state, and the test accuracy (10,000 rows) after that epoch is reported.
  Configs: seed 784-100-50-10 at batch 50, wide 784-1024-1024-10 at batch 256, wide_std: the
  wide network on standardized MNIST (each pixel (x - mean) / std with the training rows'
  statistics, std 0 counted as 1; made in the MNIST subprocess, the test rows with the training
  statistics), and seed+bn+dropout: the seed network with BatchNorm (PyTorch's BatchNorm1d
  defaults) and Dropout(0.2) after each hidden ReLU, in every peer that has them (scikit-learn
  has not).
* All workers are alive at once (no two OpenMP runtimes or thread pools share a process), and
  the peers take turns within each repeat (the order rotates from repeat to repeat). Every peer
  is warmed up first on full and tail-sized batches, so JIT compilation and first-call costs
  are excluded (and reported apart). Samples/s is the median over repeats; ratio = fastnn's
  median / the peer's median.
* Threads: ``--threads`` for every peer: ``fastnn.set_num_threads``, ``torch.set_num_threads``,
  threadpoolctl for scikit-learn, and the three ``*_NUM_THREADS`` variables above. JAX has no
  documented thread-count setting for its CPU client (it sizes its pool by the CPUs it may use),
  so when ``--threads`` is below the usable CPUs, every worker pins itself to that many CPUs
  (``os.sched_setaffinity``) before importing its framework; at the default (all CPUs) nothing
  is pinned and JAX runs with its own defaults.
* Fastest documented configuration of each peer, measured in the same run. PyTorch eager runs
  three times, each in its own worker: ``Adam(fused=True)``, ``Adam(foreach=True)`` and the
  default; all three rows are shown, and "PyTorch eager" in ratios and goals is the fastest of
  them for that config ("PyTorch eager (best: fused)"). The sweep runs one variant: the seed
  config's fastest at the batch-size points, the wide config's at the width points. Batches
  are ``index_select`` gathers from a shuffled index. ``torch.compile`` compiles the network
  (``dynamic=False``) with fused Adam. JAX runs a jitted step (gather, forward, backward, optax
  Adam, or a hand-written Adam without optax) with donated buffers. scikit-learn runs one
  ``MLPClassifier.partial_fit`` epoch (``solver='adam'``, ``alpha=0``).
* FLOPs per training sample: 2·Σ in·out (forward) + 2·Σ in·out (weight gradients)
  + 2·Σ in·out over all layers but the first (input gradients; the data needs none). Biases,
  activations, loss and optimizer are not counted. GFLOP/s = samples/s x that, and % peak
  divides by the float32 GEMM peak that NumPy reaches in this run (2048^3, same threads).
* predict: class probabilities for the 10,000 test rows (torch under ``torch.no_grad()``,
  with the config's fastest eager variant; JAX jitted; ONNX Runtime on the model fastnn's
  worker exported with ``model.to_onnx`` after the config's epochs, so the same weights, in a
  worker of its own: ``intra_op_num_threads`` = ``--threads``, ``inter_op_num_threads`` = 1),
  median of several calls; seed, wide and seed+bn+dropout (inference mode).
* One-row latency (seed and wide): mean seconds per call over 2,000 calls on one test row,
  median of 5 such rounds, the callers taking turns: fastnn ``model.predict(row)`` and
  ``model(row)``, PyTorch eager (the fastest variant) under ``torch.inference_mode()`` with
  the softmax, ONNX Runtime ``session.run``.
* Bag of words (``peers_sparse.py``): 50000-256-20 on made-up Zipf-distributed CSR data
  (about 100 nonzeros a row, 20 classes from a sparse linear teacher), batch 256, Adam 1e-3;
  fastnn ``fit(csr_matrix, y)`` (skipped, with the reason, where fastnn does not take
  scipy.sparse input), PyTorch eager with ``torch.sparse.mm`` (fused and foreach Adam, the
  faster one counts), scikit-learn ``MLPClassifier.partial_fit`` on the CSR matrix. 25,000
  of the 100,000 training rows per measured pass (scikit-learn takes minutes per 100,000),
  test accuracy on 10,000 more; a fresh worker per peer, alive together, taking turns; its
  peak resident set (VmHWM) at the end.
* Parallel passes: fastnn's wide epoch (15,360 rows) and its products-alone time in two fresh
  workers, at 1 and at 2 threads; the time outside the products at 1 thread / at 2.
* Start-up: a new Python process imports fastnn, builds the 784-100-50-10 model and trains
  one batch; seconds from launch to the end of that batch (and to exit), with an empty Numba
  cache (cold) and then with the cache that run left (warm).
* Peak memory (information): a fresh process per peer loads the data and trains one epoch of
  the seed config; its peak resident set (VmHWM) at the end.

Goals (PASS / FAIL with the reason / SKIP when a peer is missing; see ``peers_report.py``)
------------------------------------------------------------------------------------------
* seed network (784-100-50-10, batch 50): >= 3x PyTorch eager (best variant) and >= 2x
  JAX samples/s, at equal test accuracy (fastnn at most 0.01 below each); its dense products
  alone >= 75% of its step time (wide: 95%);
* wide network (784-1024-1024-10, batch 256): >= 1.3x PyTorch eager and >= 1.1x JAX;
* wide_std (standardized MNIST): >= 1.0x every peer;
* every point of the batch and width sweep: >= 1.0x every peer measured there;
* predict of 10,000 rows (seed, wide, seed+bn+dropout): >= 1.0x every peer, ONNX Runtime included;
* one-row latency: seed fastnn <= ONNX Runtime, wide <= 1.2x ONNX Runtime (fastnn's faster call);
* bag of words: >= 5x scikit-learn and >= 2x PyTorch samples/s, with a lower peak memory than each;
* the scikit-learn estimator API: ``fastnn.sklearn.MLPClassifier`` >= 4x scikit-learn's, equal accuracy;
* parallel passes: the wide step outside its products >= 1.7x faster at 2 threads than at 1
  (SKIP on a 1-CPU machine);
* start-up to the first trained batch: <= 1 s with a warm Numba cache, <= 15 s cold.
"""
import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers_report  # noqa: E402
import peers_runs  # noqa: E402
from peers_adapters import PEER_MODULES, PEER_NAMES, TORCH_PEERS, TORCH_VARIANTS, blas_text  # noqa: E402
from peers_worker import PeerFailed, Worker, short_error  # noqa: E402

SEED_SIZES = (784, 100, 50, 10)
SEED_BATCH = 50
WIDE_SIZES = (784, 1024, 1024, 10)
WIDE_BATCH = 256
EPOCH_ROWS = 60000
PREDICT_ROWS = 10_000  # MNIST's test set, which every peer predicts

# Sweep points: (batch size or width) -> training rows per measurement. At least 20 batches
# each, and about a second or more for the slowest peer.
SWEEP_BATCHES = {1: 3000, 8: 8000, 32: 20000, 128: 30000, 512: 60000, 2048: 60000}
SWEEP_WIDTHS = {64: 30000, 256: 30000, 1024: 15360, 4096: 5120}
SWEEP_WIDTH_BATCH = 256
QUICK_BATCHES = {8: 1600, 512: 5120}
QUICK_WIDTHS = {64: 5120, 1024: 2560}

# The environment of every child process: these names from the caller's environment (where
# set), and the thread counts. Nothing else.
CLEAN_ENV_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TERM",
                   "VIRTUAL_ENV", "PYTHONPATH")
THREAD_ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SIMD_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")

_PAUSE_BETWEEN_PEERS_S = 0.3  # lets the previous peer's spinning worker threads go to sleep
_SUBPROCESS_TIMEOUT_S = 900
_DATA_NAMES = ("x_train", "y_train", "x_test", "y_test")


def clean_env(start_env, threads, peer=None):
    """The whole environment of a child process: the whitelisted names of ``start_env`` and the
    thread counts."""
    env = {k: start_env[k] for k in CLEAN_ENV_NAMES if k in start_env}
    env.update({k: str(threads) for k in THREAD_ENV_NAMES})
    return env


def _pause():
    time.sleep(_PAUSE_BETWEEN_PEERS_S)


def _run_code(code, args, env, what):
    """Run ``python -c code args...`` with exactly ``env``; its last stdout line, parsed as JSON."""
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=_SUBPROCESS_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise PeerFailed(f"{what} failed: " + (done.stderr.strip() or f"exit code {done.returncode}"))
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# Machine: CPU, data, GEMM peak (the last two in subprocesses: this process imports no library)
# --------------------------------------------------------------------------------------------

def cpu_info():
    """Model name, the SIMD flags of SIMD_FLAGS it has (and lacks), logical CPUs, physical cores."""
    model, flags, cores, physical = "unknown CPU", None, set(), "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
                elif key == "physical id":
                    physical = value.strip()
                elif key == "core id":
                    cores.add((physical, value.strip()))
    except OSError:
        pass
    flags = flags or set()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"model": model, "simd": [f for f in SIMD_FLAGS if f in flags],
            "simd_missing": [f for f in SIMD_FLAGS if f not in flags] if flags else [],
            "logical": os.cpu_count(), "cores": len(cores) or None, "usable": usable}


_LOAD_MNIST_CODE = """
import json, os, sys
import numpy as np
import fastnn
arrays = fastnn.load_mnist()
for name, array in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
    np.save(os.path.join(sys.argv[1], name + ".npy"), array)
# wide_std's data: per-pixel (x - mean) / std with the training rows' statistics (std 0 -> 1)
x, x_test = arrays[0].astype(np.float64), arrays[2].astype(np.float64)
mean, std = x.mean(axis=0), x.std(axis=0)
std[std == 0] = 1.0
for name, array in (("x_train_std", x), ("x_test_std", x_test)):
    np.save(os.path.join(sys.argv[1], name + ".npy"), ((array - mean) / std).astype(np.float32))
print(json.dumps([int(a.shape[0]) for a in arrays]))
"""


def load_mnist_files(data_dir, env):
    """Save MNIST as x_train.npy, ... into ``data_dir`` from a subprocess (the caller's own
    environment: it needs FASTNN_DATA or the user cache); returns the row counts."""
    return _run_code(_LOAD_MNIST_CODE, [data_dir], env, "loading MNIST")


_GEMM_CODE = """
import json, sys, time
import numpy as np
import threadpoolctl
threads = int(sys.argv[1])
rng = np.random.default_rng(0)
out = {}
with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
    for label, (m, k, n), calls in (("2048^3", (2048, 2048, 2048), 1), ("50x784x100", (50, 784, 100), 2000)):
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        c = np.empty((m, n), np.float32)
        np.matmul(a, b, out=c)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(calls):
                np.matmul(a, b, out=c)
            best = min(best, (time.perf_counter() - start) / calls)
        out[label] = 2.0 * m * k * n / best / 1e9
    keys = ("internal_api", "version", "num_threads", "architecture", "threading_layer", "filepath")
    blas = [{k: i.get(k) for k in keys} for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
print(json.dumps({"gflops": out, "numpy": np.__version__, "blas": blas}))
"""


def gemm_peak(threads, env):
    """NumPy float32 matmul GFLOP/s (best of several) at 2048^3 and at the seed's first layer
    (50x784x100) with ``threads`` BLAS threads, in a clean subprocess; plus NumPy's version and
    its BLAS (threadpoolctl: internal_api, version, architecture)."""
    done = _run_code(_GEMM_CODE, [threads], env, "GEMM peak")
    _pause()
    return dict(done["gflops"], numpy=done["numpy"], blas=blas_text(done["blas"]), blas_info=done["blas"])


_SKLEARN_API_CODE = """
import json, sys, time, warnings
import numpy as np
module, data_dir, threads, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batch_size = "auto" if sys.argv[5] == "auto" else int(sys.argv[5])
learning_rate = float(sys.argv[6])
import threadpoolctl
if module == "fastnn":
    import fastnn
    fastnn.set_num_threads(threads)
    from fastnn.sklearn import MLPClassifier
else:
    from sklearn.neural_network import MLPClassifier
x, y, xt, yt = (np.load(f"{{data_dir}}/{{n}}.npy") for n in ("x_train", "y_train", "x_test", "y_test"))
# The seed network, scikit-learn's own defaults otherwise (Adam, alpha 1e-4); exactly
# ``epochs`` passes: no early stop (tol=0 and a patience beyond max_iter).
clf = MLPClassifier(hidden_layer_sizes=(100, 50), max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
                    batch_size=batch_size, learning_rate_init=learning_rate, random_state=0)
with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    clf.fit(x[:200], y[:200])  # compiles fastnn's kernels (a cold cache would count seconds); warms both
    start = time.perf_counter()
    clf.fit(x, y)
    seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "epochs": clf.n_iter_, "batch_size": str(batch_size),
                  "learning_rate": learning_rate, "accuracy": float(clf.score(xt, yt))}}))
"""

# (batch size, learning_rate_init, epochs) of each estimator run, the same for both libraries:
# scikit-learn's defaults (batch 200, 1e-3) for ``epochs`` passes, then faster settings that may
# reach the same test accuracy in fewer passes. Equal accuracy compares each library's fastest
# run that reaches the defaults' accuracy, so neither library alone gets tuned settings.
SKLEARN_SETTINGS = (("auto", 1e-3, None), (200, 2e-3, 2), (64, 2e-3, 1), (50, 1e-3, 2))


def measure_sklearn_api(data_dir, threads, env, epochs, log):
    """``fastnn.sklearn.MLPClassifier`` against ``sklearn.neural_network.MLPClassifier`` on
    MNIST's 60,000 rows (float32), each ``fit`` in a clean process of its own, at every setting
    of ``SKLEARN_SETTINGS`` (None epochs: ``epochs``). Seconds and test accuracy of each, as
    {"runs": [{"library", "batch_size", "learning_rate", "epochs", "seconds", "accuracy"}, ...]}."""
    runs = []
    for batch, learning_rate, n in SKLEARN_SETTINGS:
        n = epochs if n is None else min(epochs, n)
        for module in ("fastnn", "sklearn"):
            entry = {"library": module, "batch_size": str(batch), "learning_rate": learning_rate, "epochs": n}
            try:
                entry.update(_run_code(_SKLEARN_API_CODE.format(), [module, data_dir, threads, n, batch, learning_rate],
                                       clean_env(env, threads), f"{module} MLPClassifier"))
                log(f"  {module}: {entry['seconds']:.2f} s for {entry['epochs']} epochs at batch {batch}, "
                    f"learning rate {learning_rate:g}, test accuracy {entry['accuracy']:.4f}")
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                entry["error"] = short_error(exc)
                log(f"  {module} MLPClassifier failed: {entry['error']}")
            runs.append(entry)
            _pause()
    return {"runs": runs}


# --------------------------------------------------------------------------------------------
# Training and predict, driven from this process
# --------------------------------------------------------------------------------------------

def measure_config(workers, name, sizes, batch_size, rows, repeats, log, style="plain", data="plain"):
    """Warm every peer up, then ``repeats`` rounds of one epoch each, peers taking turns.
    ``style``: "plain" (Dense + ReLU) or "bn_dropout" (BatchNorm and Dropout after each hidden ReLU);
    ``data``: "plain" (pixels in [0, 1]) or "std" (standardized pixels).
    ``result["torch_best"]``: the fastest PyTorch eager variant measured (None if none)."""
    tail = rows % batch_size
    warm_rows = min(rows, 2 * batch_size + tail) if rows > 2 * batch_size else rows
    result = {"config": name, "sizes": list(sizes), "batch_size": batch_size, "rows": rows, "style": style,
              "data": data, "peers": {}}
    active = []
    for peer, worker in workers.items():
        try:
            worker.call("use_data", variant=data)
            start = time.perf_counter()
            worker.call("build", sizes=list(sizes), batch_size=batch_size, style=style)
            worker.call("warm_up", batch_size=batch_size, rows=warm_rows)
            result["peers"][peer] = {"warm_up_s": time.perf_counter() - start, "seconds": [], "accuracy": []}
            active.append(peer)
        except PeerFailed as exc:
            result["peers"][peer] = {"error": short_error(exc)}
            log(f"  {peer} skipped for {name}: {short_error(exc)}")
        _pause()
    for r in range(repeats):
        turn = active[r % len(active):] + active[:r % len(active)] if active else []
        for peer in turn:
            worker = workers[peer]
            entry = result["peers"][peer]
            if "error" in entry:
                continue
            try:
                worker.call("reset")
                seconds = worker.call("fit_rows", n=rows, batch_size=batch_size, seed=r)
                entry["seconds"].append(seconds)
                entry["accuracy"].append(worker.call("accuracy"))
            except PeerFailed as exc:
                entry["error"] = short_error(exc)
                log(f"  {peer} failed on {name}: {entry['error']}")
            _pause()
    for peer in active:
        entry = result["peers"][peer]
        if entry["seconds"]:
            entry["samples_per_s"] = rows / statistics.median(entry["seconds"])
            entry["accuracy_median"] = statistics.median(entry["accuracy"])
    if "fastnn" in active and "error" not in result["peers"]["fastnn"]:
        try:  # the limit: the epoch's dense products alone, in fastnn's process, after its epochs
            result["products_s"] = workers["fastnn"].call("products_seconds", sizes=list(sizes),
                                                          batch_size=batch_size, rows=rows)
        except PeerFailed as exc:
            log(f"  products-alone measurement failed on {name}: {short_error(exc)}")
    variants = [p for p in TORCH_PEERS if result["peers"].get(p, {}).get("samples_per_s")]
    result["torch_best"] = max(variants, key=lambda p: result["peers"][p]["samples_per_s"]) if variants else None
    return result


def measure_predict(workers, peers, repeats):
    """Seconds per predict of the 10,000 test rows with each peer's current model, peers taking turns."""
    times = {p: [] for p in peers}
    for p in peers:
        try:
            workers[p].call("predict_seconds")  # warm-up (first call, JIT for a new shape)
        except PeerFailed:
            times.pop(p)
    for _ in range(repeats):
        for p in list(times):
            try:
                times[p].append(workers[p].call("predict_seconds"))
            except PeerFailed:
                times.pop(p)
            _pause()
    return times


# --------------------------------------------------------------------------------------------
# Start-up and memory: fresh processes, the same clean environment
# --------------------------------------------------------------------------------------------

_STARTUP_CODE = {
    "fastnn": """
import json, time
t0 = time.perf_counter()
import numpy as np
import fastnn
fastnn.set_num_threads({threads})
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x, y = rng.random((50, 784), dtype=np.float32), rng.integers(0, 10, 50)
model = fastnn.MLP([fastnn.Dense(784, 100, activation="relu"), fastnn.Dense(100, 50, activation="relu"),
                    fastnn.Dense(50, 10, activation="softmax")], seed=0)
model.compile(loss="cross_entropy", optimizer=fastnn.Adam(1e-3), metrics=["accuracy"])
model.fit(x, y, epochs=1, batch_size=50, verbose=0)
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_batch_s": t2 - t1, "first_batch_epoch": time.time()}}))
""",
    "torch": """
import json, time
t0 = time.perf_counter()
import numpy as np
import torch
torch.set_num_threads({threads})
t1 = time.perf_counter()
rng = np.random.default_rng(0)
x, y = torch.from_numpy(rng.random((50, 784), dtype=np.float32)), torch.from_numpy(rng.integers(0, 10, 50))
net = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.ReLU(), torch.nn.Linear(100, 50), torch.nn.ReLU(),
                          torch.nn.Linear(50, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
opt.zero_grad(); torch.nn.functional.cross_entropy(net(x), y).backward(); opt.step()
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_batch_s": t2 - t1, "first_batch_epoch": time.time()}}))
""",
}


def _startup_run(peer, threads, env):
    launched = time.time()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _STARTUP_CODE[peer].format(threads=threads)], env=env,
                          capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise PeerFailed(done.stderr.strip() or f"exit code {done.returncode}")
    inner = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "first_batch_at_s": inner.pop("first_batch_epoch") - launched, **inner}


def measure_startup(threads, env, peers, cold, torch_runs, log):
    """Seconds from launch to the first trained batch of a new process, with ``env``. fastnn
    runs twice: cold is the first run, on an empty Numba cache (NUMBA_CACHE_DIR added to
    ``env``), warm the second, on the cache the first left (without ``cold``, both use Numba's
    default cache and only the second counts). PyTorch for reference, the last of
    ``torch_runs`` runs."""
    out = {}
    scratch = tempfile.mkdtemp(prefix="fastnn-peers-startup-")
    try:
        if "fastnn" in peers:
            fastnn_env = dict(env, NUMBA_CACHE_DIR=os.path.join(scratch, "numba")) if cold else env
            try:
                first = _startup_run("fastnn", threads, fastnn_env)
                if cold:
                    out["fastnn_cold"] = first
                # the second run: even the default cache may be stale when fastnn's sources changed
                out["fastnn_warm"] = _startup_run("fastnn", threads, fastnn_env)
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                out["fastnn_error"] = short_error(exc)
                log(f"  fastnn start-up failed: {out['fastnn_error']}")
        if any(p in peers for p in TORCH_PEERS + ("torch_compile",)):
            try:
                out["torch"] = [_startup_run("torch", threads, env) for _ in range(torch_runs)][-1]
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                out["torch_error"] = short_error(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def measure_memory(peers, threads, data_dir, start_env, rows, log):
    """Peak resident memory of a fresh process per peer that loads the data and trains one
    epoch of the seed config."""
    out = {}
    for peer in peers:
        worker = None
        try:
            worker = Worker(peer, threads, data_dir, clean_env(start_env, threads, peer))
            worker.call("build", sizes=list(SEED_SIZES), batch_size=SEED_BATCH)
            worker.call("fit_rows", n=rows, batch_size=SEED_BATCH, seed=0)
            out[peer] = dict(worker.rss, peak=worker.call("maxrss_mb"))
        except PeerFailed as exc:
            out[peer] = {"error": short_error(exc)}
            log(f"  memory run of {peer} failed: {short_error(exc)}")
        finally:
            if worker is not None:
                worker.close()
        _pause()
    return out


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

# The plot docs/performance.md shows, tracked in git: a quick run (a smoke test) writes its plot
# beside the system's temporary files instead, unless --plot names a path.
DOCS_PLOT = "docs/peers.png"
QUICK_PLOT = os.path.join(tempfile.gettempdir(), "fastnn-peers-quick.png")


def default_plot(quick):
    """Where the sweep's plot goes when --plot is not given."""
    return QUICK_PLOT if quick else DOCS_PLOT


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ",".join(("torch",) + PEER_NAMES)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5,000 rows, 1 repeat, small sweep, no cold start-up, no torch.compile "
                             "unless named in --peers")
    parser.add_argument("--repeats", type=int, default=None, help="epochs per peer and config (default 5; quick 1)")
    parser.add_argument("--sweep-repeats", type=int, default=None, help="repeats per sweep point (default 3; quick 1)")
    parser.add_argument("--peers", default=None, help=f"comma-separated subset of {names} (default: all "
                                                      "installed; 'torch' = the --torch-adam variants)")
    parser.add_argument("--torch-adam", default=",".join(TORCH_VARIANTS),
                        help="PyTorch eager Adam variants that 'torch' and the default peer list stand for, "
                             "comma-separated subset of fused,foreach,default (default: all three; the fastest "
                             "one per config is the 'PyTorch eager' of ratios and goals)")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                        help="batch-size and width sweep (default on)")
    parser.add_argument("--sweep-peers", default=None,
                        help="peers in the sweep (default: the chosen peers except torch_compile, PyTorch eager "
                             "as 'torch': the seed config's fastest variant for batch points, the wide config's "
                             "for width points)")
    parser.add_argument("--cold", action=argparse.BooleanOptionalAction, default=None,
                        help="measure the cold-cache start-up (default: on, off with --quick)")
    parser.add_argument("--plot", default=None, help=f"PNG of the sweep (default {DOCS_PLOT}, with --quick "
                                                     f"{QUICK_PLOT}; '' for none)")
    parser.add_argument("--json", default=None, help="write all raw timings here")
    parser.add_argument("--from-json", default=None, metavar="PATH",
                        help="measure nothing: print the report (and --plot) of a run saved with --json")
    parser.add_argument("--threads", type=int, default=2, help="threads for every peer (default 2)")
    parser.add_argument("--bow", action=argparse.BooleanOptionalAction, default=True,
                        help="the bag-of-words benchmark (default on)")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                        help="the parallel-passes run: fastnn's wide step at 1 and 2 threads (default on)")
    parser.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                        help="ONNX Runtime as a predict and latency peer (default on)")
    args = parser.parse_args(argv)
    if args.plot is None and not args.from_json:  # a saved run's plot follows its own quick flag (main)
        args.plot = default_plot(args.quick)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    variants = [v.strip() for v in args.torch_adam.split(",") if v.strip()]
    unknown = [v for v in variants if v not in TORCH_VARIANTS]
    if unknown or not variants:
        parser.error(f"--torch-adam: unknown {unknown}; choose from {list(TORCH_VARIANTS)}")
    args.torch_adam = variants
    torch_peers = [f"torch_{v}" for v in TORCH_VARIANTS if v in variants]
    for name in ("peers", "sweep_peers"):
        value = getattr(args, name)
        if value is None:
            continue
        chosen = []
        for p in (p.strip() for p in value.split(",") if p.strip()):
            if p not in ("torch",) + PEER_NAMES:
                parser.error(f"--{name.replace('_', '-')}: unknown {p!r}; choose from {names}")
            # in --peers, 'torch' expands to its variants; in --sweep-peers it stays the best one
            for q in (torch_peers if p == "torch" and name == "peers" else [p]):
                if q not in chosen:
                    chosen.append(q)
        setattr(args, name, chosen)
    if args.peers is None:
        args.peers = [p for p in PEER_NAMES if not (p in TORCH_PEERS and p not in torch_peers)
                      and not (args.quick and p == "torch_compile")]
    return args


def main(argv=None):
    # First of all: the environment this script was started with, the source of every child's.
    start_env = dict(os.environ)
    args = _parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            run = json.load(f)
        print(peers_report.report(run))
        plot = default_plot(run.get("quick")) if args.plot is None else args.plot
        if plot and run.get("sweep"):
            peers_report.plot(run, plot)
            print(f"\nplot: {plot}")
        return 0
    t0 = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    quick = args.quick
    repeats = args.repeats or (1 if quick else 5)
    sweep_repeats = args.sweep_repeats or (1 if quick else 3)
    main_rows = 5000 if quick else EPOCH_ROWS
    cold = (not quick) if args.cold is None else args.cold
    threads = args.threads
    env = clean_env(start_env, threads)
    skipped = {}
    peers = []
    for p in args.peers:
        if importlib.util.find_spec(PEER_MODULES[p]) is None:  # finds, does not import
            skipped[p] = f"{PEER_MODULES[p]} is not installed"
        else:
            peers.append(p)

    cpu = cpu_info()
    machine = f"{cpu['model']}, {cpu['logical']} logical CPUs"
    run = {"machine": machine, "cpu": cpu, "threads": threads, "python": sys.version.split()[0],
           "load_start": os.getloadavg(), "quick": quick, "repeats": repeats, "sweep_repeats": sweep_repeats,
           "clean_env_names": [k for k in CLEAN_ENV_NAMES if k in start_env], "skipped": skipped,
           "peer_info": {}, "configs": [], "sweep": []}
    log(f"{machine}; load average {run['load_start'][0]:.2f}; threads {threads}")
    if run["load_start"][0] > peers_report.BUSY_LOAD:
        log("warning: the machine is busy (load average > 1.5); ratios will be noisy")

    data_dir = tempfile.mkdtemp(prefix="fastnn-peers-data-")
    workers, onnx = {}, None
    try:
        try:
            mnist_rows = load_mnist_files(data_dir, start_env)
        except (PeerFailed, subprocess.TimeoutExpired) as exc:
            raise SystemExit(str(exc)) from None
        log(f"MNIST loaded (in a subprocess): {mnist_rows[0]:,} + {mnist_rows[2]:,} rows")

        run["gemm_start"] = gemm_peak(threads, env)
        run["numpy"] = run["gemm_start"]["numpy"]
        log(f"GEMM peak: {run['gemm_start']['2048^3']:.1f} GFLOP/s (2048^3), "
            f"{run['gemm_start']['50x784x100']:.1f} (50x784x100); NumPy's BLAS {run['gemm_start']['blas']}")
        for p in peers:
            log(f"starting {p} ...")
            try:
                w = workers[p] = Worker(p, threads, data_dir, clean_env(start_env, threads, p))
                run["peer_info"][p] = {"info": w.info, "environ": w.environ, "env_changed": w.env_changed,
                                       "rss": w.rss}
                log(f"  {w.info['summary']}")
            except PeerFailed as exc:
                workers.pop(p, None)
                skipped[p] = short_error(exc)
                log(f"  {p} skipped: {skipped[p]}")
        if "fastnn" not in workers:
            raise SystemExit("fastnn itself did not start: " + skipped.get("fastnn", "not requested"))
        onnx = None  # ONNX Runtime: a predict peer only, on the models fastnn's worker exports
        if args.onnx and importlib.util.find_spec("onnxruntime") is None:
            skipped["onnxruntime"] = "onnxruntime is not installed"
        elif args.onnx:
            try:
                onnx = Worker("onnxruntime", threads, data_dir, clean_env(start_env, threads))
                run["peer_info"]["onnxruntime"] = {"info": onnx.info, "environ": onnx.environ,
                                                   "env_changed": onnx.env_changed, "rss": onnx.rss}
            except PeerFailed as exc:
                skipped["onnxruntime"] = short_error(exc)

        run["predict"], run["latency"] = {}, {}
        best = {}
        for name, sizes, batch, style, data in (("seed", SEED_SIZES, SEED_BATCH, "plain", "plain"),
                                                ("wide", WIDE_SIZES, WIDE_BATCH, "plain", "plain"),
                                                ("wide_std", WIDE_SIZES, WIDE_BATCH, "plain", "std"),
                                                ("seed+bn+dropout", SEED_SIZES, SEED_BATCH, "bn_dropout", "plain")):
            log(f"config {name} {'-'.join(map(str, sizes))} batch {batch}: {repeats} x {main_rows:,} rows per peer")
            result = measure_config(workers, name, sizes, batch, main_rows, repeats, log, style, data)
            run["configs"].append(result)
            best[name] = result["torch_best"]
            if best[name]:
                log(f"  fastest PyTorch eager variant: {best[name]}")
            if data != "plain":  # predict and latency: the same network as wide
                continue
            # predict: one PyTorch eager variant (the forward pass is the same in all three)
            trained = [p for p in workers if result["peers"].get(p, {}).get("samples_per_s")
                       and (p not in TORCH_PEERS or p == best[name])]
            predict_workers = dict(workers)
            if onnx is not None and "fastnn" in trained:
                try:
                    peers_runs.load_onnx(workers["fastnn"], onnx, os.path.join(data_dir, f"{style}-{sizes[1]}.onnx"))
                    predict_workers["onnxruntime"] = onnx
                    trained.append("onnxruntime")
                except PeerFailed as exc:
                    run.setdefault("onnx_errors", {})[name] = short_error(exc)
                    log(f"  ONNX export or load failed on {name}: {short_error(exc)}")
            run["predict"][name] = measure_predict(predict_workers, trained, 3 if quick else 7)
            if name in ("seed", "wide") and "fastnn" in trained:
                keyed = {"fastnn_predict": (workers["fastnn"], "predict"), "fastnn_call": (workers["fastnn"], "call")}
                if best[name]:
                    keyed["torch"] = (workers[best[name]], "call")
                if "onnxruntime" in trained:
                    keyed["onnxruntime"] = (onnx, "call")
                log(f"  one-row latency: {', '.join(keyed)}")
                run["latency"][name] = dict(peers_runs.measure_latency(keyed, quick), torch=best[name])
            if "fastnn" in trained:  # predict's limit: its forward products alone, in fastnn's process
                try:
                    run.setdefault("predict_products_s", {})[name] = workers["fastnn"].call(
                        "predict_products_seconds", sizes=list(sizes), rows=PREDICT_ROWS)
                except PeerFailed as exc:
                    log(f"  predict products-alone measurement failed on {name}: {short_error(exc)}")

        if importlib.util.find_spec("sklearn") is not None:
            epochs = 1 if quick else 5
            log(f"scikit-learn estimator API: MLPClassifier, seed network, {epochs} epoch(s) of MNIST per library")
            run["sklearn_api"] = measure_sklearn_api(data_dir, threads, start_env, epochs, log)

        if args.sweep:
            run["sweep_torch"] = {"batch": best["seed"], "width": best["wide"]}
            default = ["torch" if p in TORCH_PEERS else p for p in workers if p != "torch_compile"]
            sweep_peers = list(dict.fromkeys(args.sweep_peers or default))
            if "torch_compile" in sweep_peers:
                log("note: torch.compile in the sweep recompiles for every point")
            batches, widths = (QUICK_BATCHES, QUICK_WIDTHS) if quick else (SWEEP_BATCHES, SWEEP_WIDTHS)
            points = [("batch", b, SEED_SIZES, b, rows) for b, rows in batches.items()]
            points += [("width", w, (784, w, w, 10), SWEEP_WIDTH_BATCH, rows) for w, rows in widths.items()]
            for kind, value, sizes, batch, rows in points:
                keys = [run["sweep_torch"][kind] if p == "torch" else p for p in sweep_peers]
                sweep_workers = {p: workers[p] for p in keys if p in workers}
                log(f"sweep {kind} {value}: {'-'.join(map(str, sizes))} batch {batch}, {rows:,} rows")
                result = measure_config(sweep_workers, f"{kind}={value}", sizes, batch, rows, sweep_repeats, log)
                result.update(kind=kind, value=value)
                run["sweep"].append(result)

        for worker in list(workers.values()) + ([onnx] if onnx is not None else []):
            worker.close()
        workers, onnx = {}, None

        if args.bow:
            bow = peers_runs.bow_peers(peers)
            bow_skipped = [p for p in bow if importlib.util.find_spec(peers_runs.BOW_MODULES[p]) is None]
            run["bow"] = peers_runs.measure_bow([p for p in bow if p not in bow_skipped], threads, data_dir,
                                                lambda p: clean_env(start_env, threads), quick,
                                                min(repeats, 3), log)
            for p in bow_skipped:
                run["bow"].setdefault("peers", {})[p] = {"error": f"{peers_runs.BOW_MODULES[p]} is not installed"}
        if args.parallel:
            log("parallel passes: fastnn's wide step at 1 and at 2 threads, fresh workers")
            run["parallel"] = peers_runs.measure_parallel(WIDE_SIZES, WIDE_BATCH, data_dir,
                                                          lambda t: clean_env(start_env, t), cpu["usable"], quick, log)

        log("start-up runs ...")
        run["startup"] = measure_startup(threads, env, peers, cold, 1 if quick else 2, log)
        torch_memory = best["seed"] or next((p for p in TORCH_PEERS if p in peers and p not in skipped), None)
        memory_peers = [p for p in peers if p not in skipped and p != "torch_compile"
                        and (p not in TORCH_PEERS or p == torch_memory)
                        and (not quick or p in ("fastnn", torch_memory))]
        run["memory_rows"] = main_rows
        log("peak-memory runs ...")
        run["memory"] = measure_memory(memory_peers, threads, data_dir, start_env, main_rows, log)
        run["gemm_end"] = gemm_peak(threads, env)
        run["load_end"] = os.getloadavg()
    finally:
        for worker in list(workers.values()) + ([onnx] if onnx is not None else []):
            worker.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(peers_report.report(run))
    if args.plot and run["sweep"]:
        peers_report.plot(run, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1, default=float)
        print(f"raw timings: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
