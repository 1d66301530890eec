"""The frameworks that ``peers.py`` compares, one class per peer, each run inside a worker
process of its own (``peers_worker.py``); plus what every peer shares: the initial weights,
the FLOP count, the peak-memory probe, and the peers' names and labels.

Only numpy and the standard library are imported at module level: asv imports this module as
``benchmarks.peers_adapters`` while it discovers the suite, and ``peers.py`` (the parent
process, which must load no framework) imports it for the names. Each framework is imported
inside its peer's ``__init__``, in the worker.
"""
import os
import time
import warnings

import numpy as np

# The peers, in report order. PyTorch eager runs as three peers, one per Adam implementation
# (``torch.optim.Adam(fused=True)``, ``(foreach=True)`` and its default), each in its own worker.
TORCH_VARIANTS = ("fused", "foreach", "default")
TORCH_PEERS = tuple(f"torch_{v}" for v in TORCH_VARIANTS)
PEER_NAMES = ("fastnn",) + TORCH_PEERS + ("torch_compile", "jax", "sklearn")
PEER_MODULES = dict({p: "torch" for p in TORCH_PEERS}, fastnn="fastnn", torch_compile="torch", jax="jax",
                    sklearn="sklearn")
PEER_LABELS = dict({p: f"PyTorch eager ({p[len('torch_'):]})" for p in TORCH_PEERS}, fastnn="fastnn",
                   torch_compile="torch.compile", jax="JAX jit", sklearn="scikit-learn", torch="PyTorch eager",
                   onnxruntime="ONNX Runtime")
N_CLASSES = 10


def torch_variant(peer):
    """'fused' for 'torch_fused'; None for a peer that is not a PyTorch eager variant."""
    return peer[len("torch_"):] if peer in TORCH_PEERS else None


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


def maxrss_mb():
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


def blas_text(entries):
    """'openblas 0.3.27 (SkylakeX, pthreads, 2 threads)' per threadpoolctl entry, joined by '; '."""
    out = []
    for b in entries:
        details = [str(b[k]) for k in ("architecture", "threading_layer") if b.get(k)]
        if b.get("num_threads") is not None:
            details.append(f"{b['num_threads']} threads")
        out.append(f"{b.get('internal_api', '?')} {b.get('version') or '?'} ({', '.join(details)})")
    return "; ".join(out) or "none found"


# --------------------------------------------------------------------------------------------
# Peers: build(sizes, batch_size) -> reset() -> fit_rows(n, batch_size, seed) -> accuracy()
# --------------------------------------------------------------------------------------------

# The regularized config ("bn_dropout"): after each hidden ReLU, BatchNorm1d (momentum 0.1,
# epsilon 1e-5, PyTorch's defaults and fastnn's) and Dropout at this rate, in every peer.
DROPOUT_RATE = 0.2


class Peer:
    """fit_rows trains one shuffled pass over the first ``n`` training rows and returns its
    seconds, measured inside the worker. info() returns {"summary": str, "blas": str}."""

    def set_data(self, x, y, x_test, y_test):
        self.x, self.y, self.x_test, self.y_test = x, y, x_test, y_test

    def load_data(self, data_dir, variant="plain"):
        """MNIST from ``data_dir``'s .npy files; variant "std": the standardized pixels
        (x_train_std.npy, x_test_std.npy), the same labels."""
        suffix = "" if variant == "plain" else f"_{variant}"
        self.data_dir, self.variant = data_dir, variant
        self.set_data(*(np.load(os.path.join(data_dir, f"{name}{suffix if name.startswith('x') else ''}.npy"))
                        for name in ("x_train", "y_train", "x_test", "y_test")))

    def use_data(self, variant):
        if variant != self.variant:
            self.load_data(self.data_dir, variant)

    def latency_seconds(self, mode, calls):
        """Mean seconds of one call on one test row, over ``calls`` calls (after one call)."""
        run = self.one_row_call(mode, self.x_test[:1])
        run()
        start = time.perf_counter()
        for _ in range(calls):
            run()
        return (time.perf_counter() - start) / calls

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
        return maxrss_mb()


class FastnnPeer(Peer):
    def __init__(self, threads, options):
        import fastnn
        fastnn.set_num_threads(threads)
        self.fastnn = fastnn

    def info(self):
        import numba
        threading = self.fastnn.threading_info()
        return {"summary": f"fastnn {self.fastnn.__version__}, numba {numba.__version__}, "
                           f"kernels: {threading.get('kernels', '?')}, {threading['num_threads']} BLAS threads, "
                           f"products: {threading.get('products', 'OpenBLAS')}",
                "blas": blas_text(threading.get("blas", []))}

    def build(self, sizes, batch_size, style="plain"):
        fn = self.fastnn
        layers = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers.append(fn.Dense(a, b, activation="relu"))
            if style == "bn_dropout":
                layers += [fn.BatchNormalization(), fn.Dropout(DROPOUT_RATE)]
        layers.append(fn.Dense(sizes[-2], sizes[-1], activation="softmax"))
        self.model = fn.MLP(layers, seed=0)
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        # compile() on a built model resets the optimizer state (moments, step counts)
        self.model.compile(loss="cross_entropy", optimizer=self.fastnn.Adam(1e-3), metrics=["accuracy"])
        dense = iter(zip(self.initial[0::2], self.initial[1::2]))
        for layer in self.model.layers:
            if isinstance(layer, self.fastnn.Dense):
                layer.set_weights(list(next(dense)))
            elif isinstance(layer, self.fastnn.BatchNormalization):  # gamma 1, beta 0, mean 0, variance 1
                n = layer.output_dim
                layer.set_weights([np.ones(n), np.zeros(n), np.zeros(n), np.ones(n)])

    def fit_rows(self, n, batch_size, seed):
        x, y = self.x[:n], self.y[:n]
        start = time.perf_counter()
        self.model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)  # shuffles internally
        return time.perf_counter() - start

    def probabilities(self):
        return self.model.predict(self.x_test)

    def export_onnx(self, path):
        self.model.to_onnx(path)
        return path

    def one_row_call(self, mode, row):
        """``model.predict(row)`` ("predict"), ``model(row)`` ("call") or the predictor's
        ``p.predict(row)`` from Python ("predictor")."""
        model = self.model
        if mode == "predictor":
            p = model.predictor()
            return lambda: p.predict(row)
        return (lambda: model.predict(row)) if mode == "predict" else (lambda: model(row))

    def latency_seconds(self, mode, calls):
        """As ``Peer.latency_seconds``; mode "njit": the predictor called ``calls`` times on the
        row inside one ``@numba.njit`` loop (a user's compiled code), timed as that one call."""
        if mode != "njit":
            return super().latency_seconds(mode, calls)
        p, row = self.model.predictor(), self.x_test[:1]
        out = np.empty((1, p.n_out), row.dtype)
        loop = self._njit_loop()
        loop(p, row, out, 1)  # compiles
        start = time.perf_counter()
        loop(p, row, out, calls)
        return (time.perf_counter() - start) / calls

    def _njit_loop(self):
        if not hasattr(self, "_loop"):
            import numba

            @numba.njit
            def loop(p, row, out, calls):
                for _ in range(calls):
                    p.predict(row, out)
                return out
            self._loop = loop
        return self._loop

    def save_weights(self, path):
        """The model's weights (``get_weights``: W, b of each Dense layer in order) as ``.npz``."""
        np.savez(path, *self.model.get_weights())
        return path

    def products_seconds(self, sizes, batch_size, rows):
        """Seconds of the dense products alone of one epoch (``step_limit``), in this process."""
        import step_limit
        return step_limit.products_seconds(sizes, batch_size, rows)

    def predict_products_seconds(self, sizes, rows):
        """Seconds of predict's forward products alone on ``rows`` rows (``step_limit``)."""
        import step_limit
        return step_limit.predict_products_seconds(sizes, rows)


class TorchPeer(Peer):
    """PyTorch eager; ``adam`` picks torch.optim.Adam's implementation: fused=True, foreach=True,
    or its default (no argument)."""
    compiled = False
    adam = "default"

    def __init__(self, threads, options):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch

    def info(self):
        torch = self.torch
        mode = "torch.compile(dynamic=False), inductor" if self.compiled else "eager"
        # the BLAS of a torch build: the "BLAS_INFO=..." build setting and the MKL / oneDNN lines
        shown = torch.__config__.show()
        parts = [line.strip(" -") for line in shown.splitlines()
                 if any(k in line for k in ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenBLAS"))
                 and "Build settings" not in line]
        for setting in shown.replace("\n", ",").split(","):
            if setting.strip().startswith("BLAS_INFO="):
                parts.insert(0, setting.strip())
        try:
            capability = torch.backends.cpu.get_cpu_capability()
        except AttributeError:
            capability = "?"
        return {"summary": f"torch {torch.__version__} {mode}, {torch.get_num_threads()} threads, "
                           f"Adam({', '.join(f'{k}={v}' for k, v in self.adam_kwargs().items())})",
                "blas": "; ".join(parts) + f"; MKL available {torch.backends.mkl.is_available()}, "
                        f"oneDNN available {torch.backends.mkldnn.is_available()}; CPU capability {capability}"}

    def adam_kwargs(self):
        return {"fused": {"fused": True}, "foreach": {"foreach": True}}.get(self.adam, {})

    def set_data(self, x, y, x_test, y_test):
        super().set_data(x, y, x_test, y_test)
        torch = self.torch
        self.x_t, self.y_t = torch.from_numpy(x), torch.from_numpy(y)
        self.x_test_t = torch.from_numpy(x_test)

    def build(self, sizes, batch_size, style="plain"):
        nn = self.torch.nn
        modules = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                modules.append(nn.ReLU())
                if style == "bn_dropout":
                    modules += [nn.BatchNorm1d(b), nn.Dropout(DROPOUT_RATE)]
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
        for module in self.net:
            if isinstance(module, torch.nn.BatchNorm1d):
                module.reset_parameters()  # gamma 1, beta 0, running mean 0 and variance 1
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, **self.adam_kwargs())

    def fit_rows(self, n, batch_size, seed):
        torch = self.torch
        self.net.train()
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

    def one_row_call(self, mode, row):
        torch, forward = self.torch, self.forward
        row = torch.from_numpy(row)
        self.net.eval()

        def run():
            with torch.inference_mode():
                return torch.softmax(forward(row), dim=1)
        return run

    def probabilities(self):
        torch = self.torch
        self.net.eval()  # Dropout off, BatchNorm's running statistics
        with torch.no_grad():
            return torch.softmax(self.forward(self.x_test_t), dim=1).numpy()


class TorchFusedPeer(TorchPeer):
    adam = "fused"


class TorchForeachPeer(TorchPeer):
    adam = "foreach"


class TorchDefaultPeer(TorchPeer):
    adam = "default"


class TorchCompilePeer(TorchPeer):
    compiled = True
    adam = "fused"


class JaxPeer(Peer):
    def __init__(self, threads, options):
        import jax
        self.jax = jax
        try:
            import optax
        except ImportError:
            optax = None
        self.optax = optax

    def info(self):
        import os
        jax = self.jax
        opt = f"optax {self.optax.__version__} adam" if self.optax else "hand-written Adam"
        return {"summary": f"jax {jax.__version__} jit on {jax.devices()[0].platform}, {opt}, "
                           f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} "
                           "CPUs (XLA's own thread pool)",
                "blas": "none: XLA's own CPU GEMMs (Eigen / oneDNN), no external BLAS library"}

    def set_data(self, x, y, x_test, y_test):
        super().set_data(x, y, x_test, y_test)
        jnp = self.jax.numpy
        self.x_j, self.y_j = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
        self.x_test_j = jnp.asarray(x_test)

    def build(self, sizes, batch_size, style="plain"):
        import functools
        jax = self.jax
        jnp = jax.numpy
        self.style = style
        regularized = style == "bn_dropout"

        def logits(params, stats, x, key, training):
            """(logits, new running statistics); with BatchNorm1d's and Dropout's rules for bn_dropout."""
            new_stats = []
            for i, (w, b) in enumerate(params["dense"][:-1]):
                x = jax.nn.relu(x @ w + b)
                if regularized:
                    gamma, beta = params["bn"][i]
                    mean, var = stats[i]
                    if training:
                        rows = x.shape[0]
                        mean, var = jnp.mean(x, axis=0), jnp.var(x, axis=0)
                        new_stats.append((0.9 * stats[i][0] + 0.1 * mean,
                                          0.9 * stats[i][1] + 0.1 * var * rows / max(rows - 1, 1)))
                    x = gamma * (x - mean) / jnp.sqrt(var + 1e-5) + beta
                    if training:
                        keep = jax.random.bernoulli(jax.random.fold_in(key, i), 1.0 - DROPOUT_RATE, x.shape)
                        x = jnp.where(keep, x / (1.0 - DROPOUT_RATE), 0.0)
            w, b = params["dense"][-1]
            return x @ w + b, (new_stats if training else stats)

        def loss(params, stats, x, y, key):
            out, new_stats = logits(params, stats, x, key, True)
            log_p = jax.nn.log_softmax(out)
            return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1)), new_stats

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

        base_key = jax.random.PRNGKey(0)

        @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
        def step(params, state, stats, t, x, y, index):
            xb, yb = x[index], y[index]  # the gather runs inside the jitted step
            key = jax.random.fold_in(base_key, t)  # Dropout's masks for this step
            (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params, stats, xb, yb, key)
            params, state = update(grads, state, params)
            return params, state, stats, t + 1, value

        self.step = step
        self.predict_fn = jax.jit(lambda params, stats, x: jax.nn.softmax(logits(params, stats, x, None, False)[0]))
        self.widths = sizes[1:-1]
        self.initial = glorot_weights(sizes)
        self.reset()

    def reset(self):
        jnp = self.jax.numpy
        # copies: the step donates these buffers, which must never alias self.initial
        self.params = {"dense": [(jnp.asarray(w.copy()), jnp.asarray(b.copy()))
                                 for w, b in zip(self.initial[0::2], self.initial[1::2])]}
        self.stats = []
        if self.style == "bn_dropout":
            self.params["bn"] = [(jnp.ones(n, jnp.float32), jnp.zeros(n, jnp.float32)) for n in self.widths]
            self.stats = [(jnp.zeros(n, jnp.float32), jnp.ones(n, jnp.float32)) for n in self.widths]
        self.state = self.init_state(self.params)
        self.t = jnp.zeros((), jnp.int32)

    def fit_rows(self, n, batch_size, seed):
        start = time.perf_counter()
        order = np.random.default_rng(seed).permutation(n).astype(np.int32)
        params, state, stats, t = self.params, self.state, self.stats, self.t
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "donated buffers were not usable" on some builds
            for lo in range(0, n, batch_size):
                params, state, stats, t, _ = self.step(params, state, stats, t, self.x_j, self.y_j,
                                                       order[lo:lo + batch_size])
        self.jax.block_until_ready(params)
        self.params, self.state, self.stats, self.t = params, state, stats, t
        return time.perf_counter() - start

    def probabilities(self):
        return np.asarray(self.jax.block_until_ready(self.predict_fn(self.params, self.stats, self.x_test_j)))


class SklearnPeer(Peer):
    def __init__(self, threads, options):
        import sklearn
        import threadpoolctl
        self.limits = threadpoolctl.threadpool_limits(limits=threads)  # kept: the limit lasts while it lives
        self.threadpoolctl = threadpoolctl
        self.sklearn = sklearn

    def info(self):
        blas = [b for b in self.threadpoolctl.threadpool_info() if b.get("user_api") == "blas"]
        return {"summary": f"scikit-learn {self.sklearn.__version__} MLPClassifier(solver='adam', alpha=0) "
                           "partial_fit",
                "blas": blas_text(blas)}

    def build(self, sizes, batch_size, style="plain"):
        if style != "plain":
            raise NotImplementedError("MLPClassifier has no BatchNorm or Dropout")
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


PEER_CLASSES = {"fastnn": FastnnPeer, "torch_fused": TorchFusedPeer, "torch_foreach": TorchForeachPeer,
                "torch_default": TorchDefaultPeer, "torch_compile": TorchCompilePeer, "jax": JaxPeer,
                "sklearn": SklearnPeer}
