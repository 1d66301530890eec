"""fastnn against PyTorch (eager and torch.compile), JAX and scikit-learn, side by side in one run.

    python benchmarks/peers.py [--quick] [--repeats N] [--peers fastnn,torch,torch_compile,jax,sklearn]
                               [--sweep | --no-sweep] [--plot PATH] [--json PATH] [--threads N]

The peers are the ``bench`` extra (``pip install -e ".[bench]"``), never a dependency of
fastnn; a peer that is not installed, or fails to start, is skipped and the report says why.

What is measured, and how
-------------------------
* Data: real MNIST from ``fastnn.load_mnist()`` (``$FASTNN_DATA``), float32 pixels in [0, 1],
  the same arrays for every peer. A measurement is one shuffled epoch of 60,000 samples
  (sweep points use fewer, at least 20 batches; throughput is samples / seconds).
* Model: ReLU hidden layers, softmax + cross-entropy, Adam(1e-3), every peer starting from
  the same Glorot-uniform weights and zero biases; each repeat starts again from them with a
  fresh optimizer state, and the test accuracy (10,000 rows) after that epoch is reported.
* Each peer runs in a process of its own (no two OpenMP runtimes or thread pools share a
  process), all alive at once, and the peers take turns within each repeat (the order
  rotates from repeat to repeat). Every peer is warmed up first on full and tail-sized
  batches, so JIT compilation and first-call costs are excluded (and reported apart).
  Samples/s is the median over repeats; ratio = fastnn's median / the peer's median.
* Threads: ``--threads`` for every peer: ``fastnn.set_num_threads``,
  ``torch.set_num_threads``, ``XLA_FLAGS`` before JAX is imported, threadpoolctl for
  scikit-learn, and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``/``OPENBLAS_NUM_THREADS``.
* PyTorch eager uses ``Adam(fused=True)`` (its fastest CPU Adam; ``--torch-adam`` changes it),
  an ``index_select`` gather per batch from a shuffled index; ``torch.compile`` compiles the
  network (``dynamic=False``). JAX runs a jitted step (gather, forward, backward, optax Adam,
  or a hand-written Adam without optax) with donated buffers. scikit-learn runs one
  ``MLPClassifier.partial_fit`` epoch (``solver='adam'``, ``alpha=0``).
* FLOPs per training sample: 2·Σ in·out (forward) + 2·Σ in·out (weight gradients)
  + 2·Σ in·out over all layers but the first (input gradients; the data needs none). Biases,
  activations, loss and optimizer are not counted. GFLOP/s = samples/s x that, and % peak
  divides by the float32 GEMM peak that NumPy reaches in this run (2048^3, same threads).
* predict: class probabilities for the 10,000 test rows (torch under ``torch.no_grad()``,
  JAX jitted), median of several calls.
* Start-up: a new Python process imports fastnn, builds the 784-100-50-10 model and trains
  one batch; wall time from spawn to exit, with an empty Numba cache (cold) and then with
  the cache that run left (warm).
* Peak memory: a fresh process per peer loads the data and trains one epoch of the seed
  config; its peak resident set (VmHWM, i.e. ``ru_maxrss`` of that process image) at the end.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

PEER_NAMES = ("fastnn", "torch", "torch_compile", "jax", "sklearn")
_PEER_MODULES = {"fastnn": "fastnn", "torch": "torch", "torch_compile": "torch", "jax": "jax",
                 "sklearn": "sklearn"}
_PEER_LABELS = {"fastnn": "fastnn", "torch": "PyTorch eager", "torch_compile": "torch.compile",
                "jax": "JAX jit", "sklearn": "scikit-learn"}

SEED_SIZES = (784, 100, 50, 10)
SEED_BATCH = 50
WIDE_SIZES = (784, 1024, 1024, 10)
WIDE_BATCH = 256
EPOCH_ROWS = 60000
N_CLASSES = 10

# Sweep points: (batch size or width) -> training rows per measurement. At least 20 batches
# each, and about a second or more for the slowest peer.
SWEEP_BATCHES = {1: 3000, 8: 8000, 32: 20000, 128: 30000, 512: 60000, 2048: 60000}
SWEEP_WIDTHS = {64: 30000, 256: 30000, 1024: 15360, 4096: 5120}
SWEEP_WIDTH_BATCH = 256
QUICK_BATCHES = {8: 1600, 512: 5120}
QUICK_WIDTHS = {64: 5120, 1024: 2560}

# The goals of the benchmark, stated once.
GOAL_SEED_RATIO = 4.0
GOAL_WIDE_RATIO = 1.3
GOAL_WIDE_PEAK_FRACTION = 0.77
GOAL_PREDICT_RATIO = 2.0
GOAL_WARM_START_S = 2.0
GOAL_COLD_START_S = 20.0
GOAL_MEMORY_FRACTION = 0.5
# "Equal accuracy": fastnn's median test accuracy at most this far below PyTorch's.
ACCURACY_TOLERANCE = 0.01

_PAUSE_BETWEEN_PEERS_S = 0.3  # lets the previous peer's spinning worker threads go to sleep
_CALL_TIMEOUT_S = 1800


# --------------------------------------------------------------------------------------------
# Shared definitions: weights, FLOPs
# --------------------------------------------------------------------------------------------

def glorot_weights(sizes, seed=0):
    """[W1, b1, W2, b2, ...]: W (fan_in, fan_out) Glorot-uniform float32, b zeros; the same in
    every process for the same ``sizes`` and ``seed``."""
    rng = np.random.default_rng(seed)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32))
        weights.append(np.zeros(fan_out, np.float32))
    return weights


def flops_per_sample(sizes):
    """Training FLOPs per sample: forward, weight gradients and input gradients of the GEMMs
    (no input gradient for the first layer)."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 4 * sum(products) + 2 * sum(products[1:])


def _maxrss_mb():
    """This process's peak resident memory in MB. VmHWM where Linux has it: ru_maxrss of a
    spawned child starts from its parent's peak (the kernel carries it across fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


# --------------------------------------------------------------------------------------------
# Peers: one class per framework, run inside a worker process of its own
# --------------------------------------------------------------------------------------------

class _Peer:
    """build(sizes, batch_size) -> reset() -> fit_rows(n, batch_size, seed) -> accuracy().

    fit_rows trains one shuffled pass over the first ``n`` training rows and returns its
    seconds, measured inside the worker."""

    def set_data(self, x, y, x_test, y_test):
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test

    def warm_up(self, batch_size, rows, seed=12345):
        """Train on ``rows`` rows (full and tail-sized batches), then go back to the initial state."""
        seconds = self.fit_rows(rows, batch_size, seed)
        self.reset()
        return seconds

    def accuracy(self):
        return float(np.mean(self.probabilities().argmax(axis=1) == self.y_test))

    def predict_seconds(self):
        start = time.perf_counter()
        self.probabilities()
        return time.perf_counter() - start

    def maxrss_mb(self):
        return _maxrss_mb()


class _FastnnPeer(_Peer):
    def __init__(self, threads, options):
        import fastnn
        fastnn.set_num_threads(threads)
        self.fastnn = fastnn

    def info(self):
        import numba
        threading = self.fastnn.threading_info()
        blas = ", ".join(f"{b['internal_api']} {b.get('version', '')}" for b in threading["blas"])
        return (f"fastnn {self.fastnn.__version__}, numba {numba.__version__}, threading layer "
                f"{threading['numba_threading_layer']} x{threading['numba_num_threads']}, BLAS {blas}")

    def build(self, sizes, batch_size):
        fn = self.fastnn
        layers = [fn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
        layers.append(fn.Dense(sizes[-2], sizes[-1], activation="softmax"))
        self.model = fn.MLP(layers, seed=0)
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        # compile() on a built model resets the optimizer state (moments, step counts)
        self.model.compile(loss="cross_entropy", optimizer=self.fastnn.Adam(1e-3), metrics=["accuracy"])
        self.model.set_weights(self.initial)

    def fit_rows(self, n, batch_size, seed):
        x, y = self.x[:n], self.y[:n]
        start = time.perf_counter()
        self.model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # shuffles internally
        return time.perf_counter() - start

    def probabilities(self):
        return self.model.predict(self.x_test)


class _TorchPeer(_Peer):
    compiled = False

    def __init__(self, threads, options):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.adam = options.get("torch_adam", "fused")

    def info(self):
        torch = self.torch
        mode = "torch.compile(dynamic=False), inductor" if self.compiled else "eager"
        return (f"torch {torch.__version__} {mode}, {torch.get_num_threads()} threads, Adam({self.adam}), "
                f"MKL {torch.backends.mkl.is_available()}, oneDNN {torch.backends.mkldnn.is_available()}")

    def set_data(self, x, y, x_test, y_test):
        super().set_data(x, y, x_test, y_test)
        torch = self.torch
        self.x_t, self.y_t = torch.from_numpy(x), torch.from_numpy(y)
        self.x_test_t = torch.from_numpy(x_test)

    def build(self, sizes, batch_size):
        nn = self.torch.nn
        modules = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                modules.append(nn.ReLU())
        self.net = nn.Sequential(*modules)
        self.linears = [m for m in modules if isinstance(m, nn.Linear)]
        self.forward = self.torch.compile(self.net, dynamic=False) if self.compiled else self.net
        self.loss_fn = nn.CrossEntropyLoss()  # mean over the batch of -log softmax
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        torch = self.torch
        with torch.no_grad():
            for linear, w, b in zip(self.linears, self.initial[0::2], self.initial[1::2]):
                linear.weight.copy_(torch.from_numpy(w.T))  # torch keeps (out, in)
                linear.bias.copy_(torch.from_numpy(b))
        kwargs = {"fused": True} if self.adam == "fused" else {"foreach": True} if self.adam == "foreach" else {}
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, **kwargs)

    def fit_rows(self, n, batch_size, seed):
        torch = self.torch
        start = time.perf_counter()
        order = torch.from_numpy(np.random.default_rng(seed).permutation(n))
        for lo in range(0, n, batch_size):
            index = order[lo:lo + batch_size]
            xb, yb = self.x_t.index_select(0, index), self.y_t.index_select(0, index)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.forward(xb), yb)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def probabilities(self):
        torch = self.torch
        with torch.no_grad():
            return torch.softmax(self.forward(self.x_test_t), dim=1).numpy()


class _TorchCompilePeer(_TorchPeer):
    compiled = True


class _JaxPeer(_Peer):
    def __init__(self, threads, options):
        # XLA reads its flags once, when jax is first imported
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true "
                                   f"intra_op_parallelism_threads={threads}").strip()
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax
        self.jax = jax
        try:
            import optax
        except ImportError:
            optax = None
        self.optax = optax

    def info(self):
        jax = self.jax
        opt = f"optax {self.optax.__version__} adam" if self.optax else "hand-written Adam"
        return f"jax {jax.__version__} jit on {jax.devices()[0].platform}, {opt}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}"

    def set_data(self, x, y, x_test, y_test):
        super().set_data(x, y, x_test, y_test)
        jnp = self.jax.numpy
        self.x_j, self.y_j = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
        self.x_test_j = jnp.asarray(x_test)

    def build(self, sizes, batch_size):
        import functools
        jax = self.jax
        jnp = jax.numpy

        def logits(params, x):
            for w, b in params[:-1]:
                x = jax.nn.relu(x @ w + b)
            w, b = params[-1]
            return x @ w + b

        def loss(params, x, y):
            log_p = jax.nn.log_softmax(logits(params, x))
            return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))

        if self.optax is not None:
            optimizer = self.optax.adam(1e-3)
            self.init_state = optimizer.init

            def update(grads, state, params):
                updates, state = optimizer.update(grads, state, params)
                return self.optax.apply_updates(params, updates), state
        else:
            beta1, beta2, eps, lr = 0.9, 0.999, 1e-8, 1e-3

            def init_state(params):
                zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
                return (jnp.zeros((), jnp.int32), zeros, zeros)

            def update(grads, state, params):
                t, m, v = state
                t = t + 1
                m = jax.tree_util.tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, m, grads)
                v = jax.tree_util.tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, v, grads)
                c1, c2 = 1 - beta1 ** t, 1 - beta2 ** t
                params = jax.tree_util.tree_map(
                    lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v)
                return params, (t, m, v)
            self.init_state = init_state

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def step(params, state, x, y, index):
            xb, yb = x[index], y[index]
            value, grads = jax.value_and_grad(loss)(params, xb, yb)
            params, state = update(grads, state, params)
            return params, state, value

        self.step = step
        self.predict_fn = jax.jit(lambda params, x: jax.nn.softmax(logits(params, x)))
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        jnp = self.jax.numpy
        # copies: the step donates these buffers, which must never alias self.initial
        self.params = [(jnp.asarray(w.copy()), jnp.asarray(b.copy()))
                       for w, b in zip(self.initial[0::2], self.initial[1::2])]
        self.state = self.init_state(self.params)

    def fit_rows(self, n, batch_size, seed):
        start = time.perf_counter()
        order = np.random.default_rng(seed).permutation(n).astype(np.int32)
        params, state = self.params, self.state
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "donated buffers were not usable" on some builds
            for lo in range(0, n, batch_size):
                params, state, _ = self.step(params, state, self.x_j, self.y_j, order[lo:lo + batch_size])
        self.jax.block_until_ready(params)
        self.params, self.state = params, state
        return time.perf_counter() - start

    def probabilities(self):
        return np.asarray(self.jax.block_until_ready(self.predict_fn(self.params, self.x_test_j)))


class _SklearnPeer(_Peer):
    def __init__(self, threads, options):
        import sklearn
        import threadpoolctl
        self.limits = threadpoolctl.threadpool_limits(limits=threads)  # kept: the limit lasts while it lives
        self.sklearn = sklearn

    def info(self):
        return f"scikit-learn {self.sklearn.__version__} MLPClassifier(solver='adam', alpha=0) partial_fit"

    def build(self, sizes, batch_size):
        from sklearn.neural_network import MLPClassifier
        self.clf = MLPClassifier(hidden_layer_sizes=tuple(sizes[1:-1]), activation="relu", solver="adam",
                                 alpha=0.0, batch_size=batch_size, learning_rate_init=1e-3, max_iter=1,
                                 shuffle=True, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the first partial_fit creates coefs_; reset() then replaces them with the shared ones
            self.clf.partial_fit(self.x[:batch_size], self.y[:batch_size], classes=np.arange(N_CLASSES))
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        clf = self.clf
        dtype = clf.coefs_[0].dtype
        clf.coefs_ = [w.astype(dtype, copy=True) for w in self.initial[0::2]]
        clf.intercepts_ = [b.astype(dtype, copy=True) for b in self.initial[1::2]]
        if hasattr(clf, "_optimizer"):
            del clf._optimizer  # partial_fit then builds a fresh Adam over the new arrays

    def fit_rows(self, n, batch_size, seed):
        self.clf.batch_size = batch_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            self.clf.partial_fit(self.x[:n], self.y[:n])  # one shuffled epoch
            return time.perf_counter() - start

    def probabilities(self):
        return self.clf.predict_proba(self.x_test)


_PEER_CLASSES = {"fastnn": _FastnnPeer, "torch": _TorchPeer, "torch_compile": _TorchCompilePeer,
                 "jax": _JaxPeer, "sklearn": _SklearnPeer}


def _serve(conn, peer, threads, data_dir, options):
    """A worker process: import one framework, load the data, answer (method, kwargs) calls."""
    try:
        rss = {"python": _maxrss_mb()}
        impl = _PEER_CLASSES[peer](threads, options)
        rss["import"] = _maxrss_mb()
        impl.set_data(*(np.load(os.path.join(data_dir, f"{name}.npy"))
                        for name in ("x_train", "y_train", "x_test", "y_test")))
        rss["data"] = _maxrss_mb()
        conn.send(("ok", {"info": impl.info(), "rss": rss}))
    except BaseException:  # reported to the parent, which skips this peer
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        message = conn.recv()
        if message is None:
            return
        method, kwargs = message
        try:
            conn.send(("ok", getattr(impl, method)(**kwargs)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class _PeerFailed(RuntimeError):
    pass


class _Worker:
    def __init__(self, peer, threads, data_dir, options):
        import multiprocessing
        context = multiprocessing.get_context("spawn")
        self.peer = peer
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, peer, threads, data_dir, options), daemon=True)
        self.process.start()
        child.close()
        started = self._receive(_CALL_TIMEOUT_S)
        self.info, self.rss = started["info"], started["rss"]

    def call(self, method, **kwargs):
        self.conn.send((method, kwargs))
        return self._receive(_CALL_TIMEOUT_S)

    def _receive(self, timeout):
        try:
            ready = self.conn.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.process.kill()
            raise _PeerFailed(f"{self.peer}: no answer within {timeout} s")
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            raise _PeerFailed(f"{self.peer}: worker process died (exit code {self.process.exitcode})") from None
        if status == "error":
            raise _PeerFailed(payload)
        return payload

    def close(self):
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _short_error(exc):
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Measurements driven from the parent
# --------------------------------------------------------------------------------------------

def _gemm_peak(threads):
    """NumPy float32 matmul GFLOP/s (best of several) at 2048^3 and at the seed's first layer
    (50x784 @ 784x100), with ``threads`` BLAS threads."""
    import threadpoolctl
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
    time.sleep(_PAUSE_BETWEEN_PEERS_S)
    return out


def _pause():
    time.sleep(_PAUSE_BETWEEN_PEERS_S)


def _measure_config(workers, name, sizes, batch_size, rows, repeats, log):
    """Warm every peer up, then ``repeats`` rounds of one epoch each, peers taking turns."""
    tail = rows % batch_size
    warm_rows = min(rows, 2 * batch_size + tail) if rows > 2 * batch_size else rows
    result = {"config": name, "sizes": list(sizes), "batch_size": batch_size, "rows": rows, "peers": {}}
    active = []
    for peer, worker in workers.items():
        try:
            start = time.perf_counter()
            worker.call("build", sizes=list(sizes), batch_size=batch_size)
            worker.call("warm_up", batch_size=batch_size, rows=warm_rows)
            result["peers"][peer] = {"warm_up_s": time.perf_counter() - start, "seconds": [], "accuracy": []}
            active.append(peer)
        except _PeerFailed as exc:
            result["peers"][peer] = {"error": _short_error(exc)}
            log(f"  {peer} skipped for {name}: {_short_error(exc)}")
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
            except _PeerFailed as exc:
                entry["error"] = _short_error(exc)
                log(f"  {peer} failed on {name}: {entry['error']}")
            _pause()
    for peer in active:
        entry = result["peers"][peer]
        if entry["seconds"]:
            entry["samples_per_s"] = rows / statistics.median(entry["seconds"])
            entry["accuracy_median"] = statistics.median(entry["accuracy"])
    return result


def _measure_predict(workers, peers, repeats):
    """Seconds per predict of the 10,000 test rows with each peer's current model, peers taking turns."""
    times = {p: [] for p in peers}
    for p in peers:
        try:
            workers[p].call("predict_seconds")  # warm-up (first call, JIT for a new shape)
        except _PeerFailed:
            times.pop(p)
    for _ in range(repeats):
        for p in list(times):
            times[p].append(workers[p].call("predict_seconds"))
            _pause()
    return times


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
print(json.dumps({{"import_s": t1 - t0, "first_batch_s": t2 - t1}}))
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
print(json.dumps({{"import_s": t1 - t0, "first_batch_s": t2 - t1}}))
""",
}


def _startup_run(peer, threads, env):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _STARTUP_CODE[peer].format(threads=threads)], env=env,
                          capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise _PeerFailed(done.stderr.strip() or f"exit code {done.returncode}")
    inner = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **inner}


def _measure_startup(threads, peers, cold, torch_runs, log):
    """Time to the first trained batch in a new process. fastnn runs twice: cold is the first
    run, on an empty Numba cache, warm the second, on the cache the first left (without
    ``cold``, both use the caller's cache and only the second counts). PyTorch for reference,
    the last of ``torch_runs`` runs."""
    import shutil
    out = {}
    scratch = tempfile.mkdtemp(prefix="fastnn-peers-startup-")
    try:
        env = dict(os.environ)
        env.pop("FASTNN_NO_CACHE", None)
        if "fastnn" in peers:
            try:
                if cold:
                    env = dict(env, NUMBA_CACHE_DIR=os.path.join(scratch, "numba"))
                first = _startup_run("fastnn", threads, env)
                if cold:
                    out["fastnn_cold"] = first
                # the second run: even the caller's cache may be stale when fastnn's sources changed
                out["fastnn_warm"] = _startup_run("fastnn", threads, env)
            except (_PeerFailed, subprocess.TimeoutExpired) as exc:
                out["fastnn_error"] = _short_error(exc)
        if "torch" in peers or "torch_compile" in peers:
            try:
                out["torch"] = [_startup_run("torch", threads, env) for _ in range(torch_runs)][-1]
            except (_PeerFailed, subprocess.TimeoutExpired) as exc:
                out["torch_error"] = _short_error(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def _measure_memory(peers, threads, data_dir, options, rows, log):
    """Peak resident memory of a fresh process per peer that loads the data and trains one
    epoch of the seed config."""
    out = {}
    for peer in peers:
        worker = None
        try:
            worker = _Worker(peer, threads, data_dir, options)
            worker.call("build", sizes=list(SEED_SIZES), batch_size=SEED_BATCH)
            worker.call("fit_rows", n=rows, batch_size=SEED_BATCH, seed=0)
            out[peer] = dict(worker.rss, peak=worker.call("maxrss_mb"))
        except _PeerFailed as exc:
            out[peer] = {"error": _short_error(exc)}
            log(f"  memory run of {peer} failed: {_short_error(exc)}")
        finally:
            if worker is not None:
                worker.close()
        _pause()
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _config_table(result, peak, lines):
    sizes, batch = result["sizes"], result["batch_size"]
    fps = flops_per_sample(sizes)
    base = result["peers"].get("fastnn", {}).get("samples_per_s")
    title = f"{result['config']}: {'-'.join(map(str, sizes))}, batch {batch}, {result['rows']:,} rows/epoch, " \
            f"{fps / 1e6:.3f} MFLOP/sample"
    lines.append(title)
    lines.append(f"  {'peer':<15}{'samples/s':>12}{'min-max':>21}{'fastnn/peer':>13}{'test acc':>10}"
                 f"{'GFLOP/s':>10}{'% peak':>8}{'warm-up s':>11}")
    for peer, entry in result["peers"].items():
        if "samples_per_s" not in entry:
            lines.append(f"  {_PEER_LABELS[peer]:<15}skipped: {entry.get('error', 'no measurement')}")
            continue
        rate = entry["samples_per_s"]
        rates = [result["rows"] / s for s in entry["seconds"]]
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        ratio = f"{base / rate:.2f}x" if base else "-"
        gflops = rate * fps / 1e9
        lines.append(f"  {_PEER_LABELS[peer]:<15}{rate:>12,.0f}{spread:>21}{ratio:>13}"
                     f"{entry['accuracy_median']:>10.4f}{gflops:>10.1f}{100 * gflops / peak:>7.1f}%"
                     f"{entry['warm_up_s']:>11.1f}")


def _rate(result, peer):
    return result["peers"].get(peer, {}).get("samples_per_s")


def _ratio_goal(result, target, peak, small_peak, extra_check=None):
    """(status, text) for fastnn/torch >= target on one measured config, with the reason when it fails."""
    fast, torch = _rate(result, "fastnn"), _rate(result, "torch")
    if not fast or not torch:
        return "SKIP", "fastnn or PyTorch eager not measured"
    fps = flops_per_sample(result["sizes"])
    ratio = fast / torch
    fast_pct, torch_pct = 100 * fast * fps / 1e9 / peak, 100 * torch * fps / 1e9 / peak
    text = f"{ratio:.2f}x (fastnn {fast:,.0f}/s = {fast_pct:.0f}% of GEMM peak, PyTorch {torch:,.0f}/s = {torch_pct:.0f}%)"
    ok = ratio >= target
    if extra_check is not None:
        ok_extra, extra_text = extra_check
        ok = ok and ok_extra
        text += "; " + extra_text
    if not ok:
        bound = 100.0 / torch_pct
        if bound < target:
            text += (f"; why: PyTorch already runs at {torch_pct:.0f}% of the GEMM peak, so even fastnn at 100% "
                     f"would be only {bound:.2f}x")
        elif fast_pct > 60:
            text += f"; why: fastnn is GEMM-bound ({fast_pct:.0f}% of peak) and PyTorch is close behind"
        else:
            per_batch_us = 1e6 * result["batch_size"] / fast
            text += (f"; why: fastnn reaches only {fast_pct:.0f}% of the GEMM peak: {per_batch_us:.0f} us per "
                     f"batch of {result['batch_size']}, so per-batch overhead or small-GEMM efficiency dominates "
                     f"(NumPy alone: {small_peak:.0f} GFLOP/s at 50x784x100)")
    return ("PASS" if ok else "FAIL"), text


def _report(run):
    lines = []
    peak = max(run["gemm_start"]["2048^3"], run.get("gemm_end", {}).get("2048^3", 0.0))
    small_peak = max(run["gemm_start"]["50x784x100"], run.get("gemm_end", {}).get("50x784x100", 0.0))
    lines.append(f"NumPy float32 GEMM peak, {run['threads']} threads: {peak:.1f} GFLOP/s at 2048^3, "
                 f"{small_peak:.1f} GFLOP/s at 50x784x100 (best of start and end of run)")
    lines.append("FLOPs/sample = 2*sum(in*out) forward + 2*sum(in*out) weight grads + 2*sum(in*out, layers 2..L) "
                 "input grads; GFLOP/s = samples/s * that; % peak = of the 2048^3 GEMM peak")
    lines.append("")
    for result in run["configs"]:
        _config_table(result, peak, lines)
        lines.append("")

    if run.get("predict"):
        lines.append("predict (10,000 test rows -> probabilities; rows/s, median)")
        for name, times in run["predict"].items():
            base = times.get("fastnn")
            parts = []
            for peer, secs in times.items():
                med = statistics.median(secs)
                ratio = f" ({med / statistics.median(base):.2f}x)" if base and peer != "fastnn" else ""
                parts.append(f"{_PEER_LABELS[peer]} {10000 / med:,.0f}{ratio}")
            lines.append(f"  {name}: " + ", ".join(parts) + "   (x = fastnn/peer)")
        lines.append("")

    startup = run.get("startup", {})
    if startup:
        lines.append("start-up (new process -> import -> build seed model -> first trained batch; wall s)")
        for key, label in (("fastnn_cold", "fastnn, empty Numba cache"), ("fastnn_warm", "fastnn, warm Numba cache"),
                           ("torch", "PyTorch eager")):
            if key in startup:
                s = startup[key]
                lines.append(f"  {label:<28}{s['wall_s']:>6.2f} s  (import {s['import_s']:.2f} s, "
                             f"build + first batch {s['first_batch_s']:.2f} s)")
        for key in ("fastnn_error", "torch_error"):
            if key in startup:
                lines.append(f"  {key}: {startup[key]}")
        lines.append("")

    memory = run.get("memory", {})
    if memory:
        lines.append(f"peak memory (fresh process: import, load MNIST, train one {run['memory_rows']:,}-row epoch "
                     "of the seed config; peak resident set, MB)")
        for peer, m in memory.items():
            if "error" in m:
                lines.append(f"  {_PEER_LABELS[peer]:<15}failed: {m['error']}")
            else:
                lines.append(f"  {_PEER_LABELS[peer]:<15}{m['peak']:>8.0f} MB   (python+numpy {m['python']:.0f}, "
                             f"after import {m['import']:.0f}, after data {m['data']:.0f})")
        lines.append("")

    if run.get("sweep"):
        lines.append("sweep (samples/s, median; ratio = fastnn/peer)")
        for kind, label in (("batch", "batch size (784-100-50-10)"),
                            ("width", f"hidden width h (784-h-h-10, batch {SWEEP_WIDTH_BATCH})")):
            points = [r for r in run["sweep"] if r["kind"] == kind]
            if not points:
                continue
            peers = [p for p in PEER_NAMES if any(p in r["peers"] for r in points)]
            lines.append(f"  {label:<42}" + "".join(f"{_PEER_LABELS[p]:>15}" for p in peers)
                         + f"{'fastnn GFLOP/s':>16}{'% peak':>8}")
            for r in points:
                fps = flops_per_sample(r["sizes"])
                cells = []
                for p in peers:
                    rate = _rate(r, p)
                    fast = _rate(r, "fastnn")
                    if rate is None:
                        cells.append(f"{'-':>15}")
                    elif p == "fastnn":
                        cells.append(f"{rate:>15,.0f}")
                    else:
                        cells.append(f"{f'{rate:,.0f} ({fast / rate:.1f}x)' if fast else f'{rate:,.0f}':>15}")
                fast = _rate(r, "fastnn")
                gf = fast * fps / 1e9 if fast else 0.0
                lines.append(f"  {r['value']:<42}" + "".join(cells) + f"{gf:>16.1f}{100 * gf / peak:>7.1f}%")
        lines.append("")

    lines.append("goals")
    goals = []
    by_name = {r["config"]: r for r in run["configs"]}
    if "seed" in by_name:
        status, text = _ratio_goal(by_name["seed"], GOAL_SEED_RATIO, peak, small_peak, _accuracy_check(by_name["seed"]))
        goals.append((f"seed training >= {GOAL_SEED_RATIO}x PyTorch eager at equal accuracy", status, text))
    if "wide" in by_name:
        r = by_name["wide"]
        fast = _rate(r, "fastnn")
        pct = fast * flops_per_sample(r["sizes"]) / 1e9 / peak if fast else 0.0
        status, text = _ratio_goal(r, GOAL_WIDE_RATIO, peak, small_peak,
                                   (pct >= GOAL_WIDE_PEAK_FRACTION,
                                    f"{100 * pct:.0f}% of GEMM peak (goal {100 * GOAL_WIDE_PEAK_FRACTION:.0f}%)"))
        goals.append((f"wide training >= {GOAL_WIDE_RATIO}x PyTorch eager and >= "
                      f"{100 * GOAL_WIDE_PEAK_FRACTION:.0f}% of GEMM peak", status, text))
    for name, times in (run.get("predict") or {}).items():
        if "fastnn" in times and "torch" in times:
            ratio = statistics.median(times["torch"]) / statistics.median(times["fastnn"])
            goals.append((f"predict 10,000 rows ({name}) >= {GOAL_PREDICT_RATIO}x PyTorch no_grad",
                          "PASS" if ratio >= GOAL_PREDICT_RATIO else "FAIL", f"{ratio:.2f}x"))
    if "fastnn_warm" in startup:
        s = startup["fastnn_warm"]["wall_s"]
        goals.append((f"start-up, warm cache <= {GOAL_WARM_START_S} s", "PASS" if s <= GOAL_WARM_START_S else "FAIL",
                      f"{s:.2f} s (import {startup['fastnn_warm']['import_s']:.2f} s)"))
    if "fastnn_cold" in startup:
        s = startup["fastnn_cold"]["wall_s"]
        goals.append((f"start-up, cold cache <= {GOAL_COLD_START_S} s", "PASS" if s <= GOAL_COLD_START_S else "FAIL",
                      f"{s:.2f} s"))
    elif startup:
        goals.append((f"start-up, cold cache <= {GOAL_COLD_START_S} s", "SKIP", "not measured (--quick; add --cold)"))
    if "peak" in memory.get("fastnn", {}) and "peak" in memory.get("torch", {}):
        fast, torch = memory["fastnn"], memory["torch"]
        ratio = fast["peak"] / torch["peak"]
        text = f"{ratio:.2f}x ({fast['peak']:.0f} MB vs {torch['peak']:.0f} MB)"
        if ratio > GOAL_MEMORY_FRACTION:
            # both hold the same MNIST arrays; without them the frameworks' own memory compares
            data_f, data_t = fast["data"] - fast["import"], torch["data"] - torch["import"]
            own_f, own_t = fast["peak"] - data_f, torch["peak"] - data_t
            text += (f"; why: both processes hold the same {data_f:.0f} MB of MNIST float32 arrays; without them "
                     f"fastnn {own_f:.0f} MB vs PyTorch {own_t:.0f} MB = {own_f / own_t:.2f}x (fastnn: python+numpy "
                     f"{fast['python']:.0f}, import +{fast['import'] - fast['python']:.0f}, training "
                     f"+{fast['peak'] - fast['data']:.0f}; PyTorch: import +{torch['import'] - torch['python']:.0f}, "
                     f"training +{torch['peak'] - torch['data']:.0f})")
        goals.append((f"peak training memory <= {GOAL_MEMORY_FRACTION}x PyTorch's",
                      "PASS" if ratio <= GOAL_MEMORY_FRACTION else "FAIL", text))
    for r in run.get("sweep", []):
        target = GOAL_SEED_RATIO if r["kind"] == "batch" else GOAL_WIDE_RATIO
        status, text = _ratio_goal(r, target, peak, small_peak)
        goals.append((f"sweep {r['kind']} {r['value']}: >= {target}x PyTorch eager", status, text))
    load = max(run["load_start"][0], run.get("load_end", (0.0,))[0])
    if load > 1.5:
        goals = [(g, s, t + f" (machine busy: load average up to {load:.1f})" if s == "FAIL" else t)
                 for g, s, t in goals]
    for goal, status, text in goals:
        lines.append(f"  [{status}] {goal}: {text}")
    run["goals"] = [{"goal": g, "status": s, "detail": t} for g, s, t in goals]
    return "\n".join(lines)


def _accuracy_check(result):
    fast = result["peers"].get("fastnn", {}).get("accuracy_median")
    torch = result["peers"].get("torch", {}).get("accuracy_median")
    if fast is None or torch is None:
        return False, "accuracy not measured"
    ok = fast >= torch - ACCURACY_TOLERANCE
    return ok, f"test accuracy fastnn {fast:.4f} vs PyTorch {torch:.4f} (equal: within {ACCURACY_TOLERANCE:.2f})"


def _plot(run, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, kind, xlabel in ((axes[0], "batch", "batch size (784-100-50-10)"),
                             (axes[1], "width", f"hidden width h (784-h-h-10, batch {SWEEP_WIDTH_BATCH})")):
        points = [r for r in run["sweep"] if r["kind"] == kind]
        for peer in PEER_NAMES:
            xs = [r["value"] for r in points if _rate(r, peer)]
            ys = [_rate(r, peer) for r in points if _rate(r, peer)]
            if xs:
                ax.plot(xs, ys, marker="o", label=_PEER_LABELS[peer], linewidth=2.5 if peer == "fastnn" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks([r["value"] for r in points])
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training samples/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    busy = " - machine busy, unreliable" if max(run["load_start"][0], run["load_end"][0]) > 1.5 else ""
    fig.suptitle(f"MNIST training throughput, float32, Adam, {run['threads']} threads ({run['machine']}){busy}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def _machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 5,000 rows, 1 repeat, small sweep, no cold start-up, no torch.compile "
                             "unless named in --peers")
    parser.add_argument("--repeats", type=int, default=None, help="epochs per peer and config (default 5; quick 1)")
    parser.add_argument("--sweep-repeats", type=int, default=None, help="repeats per sweep point (default 3; quick 1)")
    parser.add_argument("--peers", default=None, help=f"comma-separated subset of {','.join(PEER_NAMES)} "
                                                      "(default: all installed)")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                        help="batch-size and width sweep (default on)")
    parser.add_argument("--sweep-peers", default=None,
                        help="peers in the sweep (default: the chosen peers except torch_compile)")
    parser.add_argument("--cold", action=argparse.BooleanOptionalAction, default=None,
                        help="measure the cold-cache start-up (default: on, off with --quick)")
    parser.add_argument("--plot", default="docs/peers.png", help="PNG of the sweep (default docs/peers.png; "
                                                                 "'' for none)")
    parser.add_argument("--json", default=None, help="write all raw timings here")
    parser.add_argument("--threads", type=int, default=2, help="threads for every peer (default 2)")
    parser.add_argument("--torch-adam", choices=["fused", "foreach", "default"], default="fused",
                        help="PyTorch Adam implementation (default fused, its fastest on CPU)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    for name in ("peers", "sweep_peers"):
        value = getattr(args, name)
        if value is not None:
            chosen = [p.strip() for p in value.split(",") if p.strip()]
            unknown = [p for p in chosen if p not in PEER_NAMES]
            if unknown:
                parser.error(f"--{name.replace('_', '-')}: unknown {unknown}; choose from {list(PEER_NAMES)}")
            setattr(args, name, chosen)
    return args


def main(argv=None):
    args = _parse_args(argv)
    import importlib.util
    import shutil

    t0 = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    quick = args.quick
    repeats = args.repeats or (1 if quick else 5)
    sweep_repeats = args.sweep_repeats or (1 if quick else 3)
    main_rows = 5000 if quick else EPOCH_ROWS
    cold = (not quick) if args.cold is None else args.cold
    requested = args.peers or [p for p in PEER_NAMES if not (quick and p == "torch_compile")]
    skipped = {}
    peers = []
    for p in requested:
        if importlib.util.find_spec(_PEER_MODULES[p]) is None:
            skipped[p] = f"{_PEER_MODULES[p]} is not installed"
        else:
            peers.append(p)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by every worker
    options = {"torch_adam": args.torch_adam}

    run = {"machine": _machine(), "threads": args.threads, "python": sys.version.split()[0],
           "numpy": np.__version__, "load_start": os.getloadavg(), "quick": quick, "repeats": repeats,
           "skipped": skipped, "peer_info": {}, "configs": [], "sweep": []}
    log(f"{run['machine']}; load average {run['load_start'][0]:.2f}; threads {args.threads}")
    if run["load_start"][0] > 1.5:
        log("warning: the machine is busy (load average > 1.5); ratios will be noisy")

    import fastnn
    x_train, y_train, x_test, y_test = fastnn.load_mnist()
    log(f"fastnn imported and MNIST loaded: {x_train.shape[0]:,} + {x_test.shape[0]:,} rows")
    data_dir = tempfile.mkdtemp(prefix="fastnn-peers-data-")
    workers = {}
    try:
        for name, array in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
            np.save(os.path.join(data_dir, f"{name}.npy"), array)
        del x_train, y_train, x_test, y_test

        run["gemm_start"] = _gemm_peak(args.threads)
        log(f"GEMM peak: {run['gemm_start']['2048^3']:.1f} GFLOP/s (2048^3), "
            f"{run['gemm_start']['50x784x100']:.1f} (50x784x100)")
        for p in peers:
            log(f"starting {p} ...")
            try:
                workers[p] = _Worker(p, args.threads, data_dir, options)
                run["peer_info"][p] = workers[p].info
                log(f"  {workers[p].info}")
            except _PeerFailed as exc:
                skipped[p] = _short_error(exc)
                log(f"  {p} skipped: {skipped[p]}")
        if "fastnn" not in workers:
            raise SystemExit("fastnn itself did not start: " + skipped.get("fastnn", "not requested"))

        run["predict"] = {}
        for name, sizes, batch in (("seed", SEED_SIZES, SEED_BATCH), ("wide", WIDE_SIZES, WIDE_BATCH)):
            log(f"config {name} {'-'.join(map(str, sizes))} batch {batch}: {repeats} x {main_rows:,} rows per peer")
            result = _measure_config(workers, name, sizes, batch, main_rows, repeats, log)
            run["configs"].append(result)
            trained = [p for p in workers if result["peers"].get(p, {}).get("samples_per_s")]
            run["predict"][name] = _measure_predict(workers, trained, 3 if quick else 7)

        if args.sweep:
            sweep_peers = [p for p in (args.sweep_peers or [p for p in workers if p != "torch_compile"])
                           if p in workers]
            if "torch_compile" in sweep_peers:
                log("note: torch.compile in the sweep recompiles for every point")
            sweep_workers = {p: workers[p] for p in sweep_peers}
            batches, widths = (QUICK_BATCHES, QUICK_WIDTHS) if quick else (SWEEP_BATCHES, SWEEP_WIDTHS)
            points = [("batch", b, SEED_SIZES, b, rows) for b, rows in batches.items()]
            points += [("width", w, (784, w, w, 10), SWEEP_WIDTH_BATCH, rows) for w, rows in widths.items()]
            for kind, value, sizes, batch, rows in points:
                log(f"sweep {kind} {value}: {'-'.join(map(str, sizes))} batch {batch}, {rows:,} rows")
                result = _measure_config(sweep_workers, f"{kind}={value}", sizes, batch, rows, sweep_repeats, log)
                result.update(kind=kind, value=value)
                run["sweep"].append(result)

        for worker in workers.values():
            worker.close()
        workers = {}

        log("start-up runs ...")
        run["startup"] = _measure_startup(args.threads, peers, cold, 1 if quick else 2, log)
        memory_peers = [p for p in peers if p not in skipped and p != "torch_compile"
                        and (not quick or p in ("fastnn", "torch"))]
        run["memory_rows"] = main_rows
        log("peak-memory runs ...")
        run["memory"] = _measure_memory(memory_peers, args.threads, data_dir, options, main_rows, log)
        run["gemm_end"] = _gemm_peak(args.threads)
        run["load_end"] = os.getloadavg()
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(data_dir, ignore_errors=True)

    header = [f"fastnn vs peers on {run['machine']}, Python {run['python']}, NumPy {run['numpy']}, "
              f"{args.threads} threads; load average {run['load_start'][0]:.2f} at start, "
              f"{run['load_end'][0]:.2f} at end"]
    for p, info in run["peer_info"].items():
        header.append(f"  {_PEER_LABELS[p]}: {info}")
    for p, why in skipped.items():
        header.append(f"  {_PEER_LABELS[p]}: skipped ({why})")
    if max(run["load_start"][0], run["load_end"][0]) > 1.5:
        header.append("  WARNING: the machine was busy during this run; ratios are unreliable")
    header.append(f"  medians of {repeats} epoch(s) per peer and config (sweep: {sweep_repeats}); peers alternate")
    text = "\n".join(header) + "\n\n" + _report(run)
    print(text)
    if args.plot and run["sweep"]:
        _plot(run, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(run, f, indent=1, default=float)
        print(f"raw timings: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
