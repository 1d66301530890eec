"""fastnn's asv benchmark suite: every kernel family, end-to-end training, compile time.

Conventions (after NumPy's, SciPy's and pandas' asv_bench):

- one module per family, ``bench_<family>.py``; a class per operation, sizes and codes as
  ``params``/``param_names``;
- every ``setup`` calls the operation once with the exact arrays it will time, so that Numba's
  compile (or cache load) never lands inside a ``time_`` figure, even under ``asv run --quick``
  (one sample, no warm-up of asv's own);
- compile time is measured on its own, in a fresh interpreter (``bench_compile``).

Numba cache
-----------
Importing this package points ``NUMBA_CACHE_DIR`` at a directory of the suite's own, keyed by a
digest of fastnn's source files: ``$NUMBA_CACHE_DIR/fastnn-bench-<digest>`` when the variable
is set, else ``<tempdir>/fastnn-bench-<uid>/fastnn-bench-<digest>``. One directory per source
version keeps each commit's machine code apart: Numba's index holds one source stamp per
function, so commits sharing a directory would recompile each other out of it at every switch
(``asv continuous``, a history range), and commits older than fastnn's own all-kernel-sources
stamp could even load a caller compiled against another commit's callees (numba#6845).

Every ``bench_*`` module takes :func:`warm_numba_cache` as its ``setup_cache``, so asv compiles
every signature the suite uses once, in one process holding a file lock, before any timed
process starts; the timed processes then only load machine code, no benchmark's ``timeout``
has to cover a cold compile, and no two processes ever write the same cache entry at once
(numba#4807).

Environment variables
---------------------
``FASTNN_DATA``
    Folder holding ``mnist/`` (the four IDX files). Without it the MNIST benchmarks skip.
``FASTNN_BENCH_QUICK=1``
    Shrinks the suite for a smoke pass: the first size of each size list, 6,000 training and
    1,000 predicted rows instead of 60,000 and 10,000 (as parameters, so such figures never
    land in the graphs of full ones).
``FASTNN_BENCH_THREADS=N``
    Runs BLAS' thread pool with N threads and Numba's parallel kernels on N of its threads (unset
    or empty: one per core); ``bench_parallel`` sets its own count, up to one per core.
    ``asv.conf.json`` sets it through ``matrix.env_nobuild`` (1 by default), which applies to
    its virtualenvs and to ``--python=same``, not to ``-E existing:...``.
"""
import hashlib
import importlib.util
import os
import tempfile


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


QUICK = _flag("FASTNN_BENCH_QUICK")

# BLAS reads these when it loads, so they are set before numpy is imported (``setdefault``: an
# explicit OPENBLAS_NUM_THREADS wins). Numba's pool keeps a thread per core (or NUMBA_NUM_THREADS):
# its count is set below, per thread, so that ``bench_parallel`` can still ask for two.
_threads = os.environ.get("FASTNN_BENCH_THREADS", "").strip()
if _threads:
    for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, _threads)

_CACHE_PREFIX = "fastnn-bench-"


def _fastnn_source_digest():
    """SHA-256 (16 hex digits) over the path and bytes of every source file of the installed fastnn."""
    spec = importlib.util.find_spec("fastnn")  # locates the package without importing numba
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    root = list(spec.submodule_search_locations)[0]
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:16]


def _private_numba_cache_dir():
    base = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if os.path.basename(os.path.normpath(base)).startswith(_CACHE_PREFIX):
        return base  # a parent process of this suite already chose it
    if not base:
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        base = os.path.join(tempfile.gettempdir(), f"{_CACHE_PREFIX}{uid}")
    return os.path.join(base, _CACHE_PREFIX + _fastnn_source_digest())


NUMBA_CACHE_DIR = _private_numba_cache_dir()
os.makedirs(NUMBA_CACHE_DIR, exist_ok=True)
os.environ["NUMBA_CACHE_DIR"] = NUMBA_CACHE_DIR

if _threads:
    import fastnn  # noqa: F401  (first: its import lets Numba find TBB before Numba starts its threads)
    import numba
    numba.set_num_threads(max(1, min(int(_threads), numba.config.NUMBA_NUM_THREADS)))

_WARM_MARKER = os.path.join(NUMBA_CACHE_DIR, "warm")


def warm_numba_cache():
    """Compile, into the suite's cache, every kernel signature that any benchmark calls.

    Shared by every module as ``setup_cache`` (asv keys it by this function's location, so it
    runs once per ``asv run``, before the first benchmark). Each ``bench_*`` module lists its
    own calls in a ``warm_up()`` function built from the same array factories as its
    benchmarks, so the signatures match by construction. An exclusive lock makes concurrent
    suites (``asv run --parallel``, two people on one machine) compile one at a time; the
    marker file makes later runs on the same sources a no-op.

    A module whose warm-up fails is reported here and skipped: its benchmarks then fail on
    their own, with their own traceback, instead of failing the whole suite.
    """
    import fcntl
    import importlib
    import pkgutil
    import sys
    import traceback

    with open(os.path.join(NUMBA_CACHE_DIR, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(_WARM_MARKER):
            return None
        failed = []
        for module in pkgutil.iter_modules(__path__):
            if not module.name.startswith("bench_"):
                continue
            try:
                warm_up = getattr(importlib.import_module(f"{__name__}.{module.name}"), "warm_up", None)
                if warm_up is not None:
                    warm_up()
            except Exception:
                failed.append(module.name)
                print(f"warm-up of {module.name} failed:", file=sys.stderr)
                traceback.print_exc()
        if not failed:
            with open(_WARM_MARKER, "w") as f:
                f.write("every signature of the suite is compiled into this cache\n")
    # None: asv passes no cache argument to the benchmarks.
    return None


# Compiling every signature cold takes minutes on two cores.
warm_numba_cache.timeout = 1800


# The two networks every end-to-end benchmark trains: layer widths and batch size.
CONFIGS = {
    "seed": ((784, 100, 50, 10), 50),   # the seed framework's MNIST classifier
    "wide": ((784, 1024, 1024, 10), 256),
}
# Rows of an epoch: MNIST's training set, and of a predict call: its test set (a tenth of
# each under FASTNN_BENCH_QUICK). Benchmarks take them as parameters, so that quick figures
# and full ones never share a graph.
TRAIN_ROWS = 6_000 if QUICK else 60_000
PREDICT_ROWS = 1_000 if QUICK else 10_000


def build_model(config, device="cpu", seed=0):
    """A compiled ``fastnn.MLP`` of ``CONFIGS[config]``: ReLU hidden layers, Softmax output,
    cross-entropy, Adam(1e-3), accuracy; returns (model, batch_size)."""
    from fastnn import MLP, Adam, Dense
    widths, batch = CONFIGS[config]
    layers = [Dense(n_in, n_out, activation="relu" if k < len(widths) - 2 else "softmax")
              for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]))]
    model = MLP(layers, seed=seed, device=device)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
    return model, batch


def synthetic_data(rows, n_in=784, n_classes=10, seed=0):
    """MNIST-shaped training data that needs no download: float32 features in [0, 1) and
    one-hot float32 targets, as ``fit`` holds them after validation (so no conversion is timed)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.random((rows, n_in), dtype=np.float32)
    y = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, rows)]
    return x, y


def sizes(values):
    """A size parameter list: all of ``values``, or only the first under FASTNN_BENCH_QUICK."""
    return list(values[:1]) if QUICK else list(values)


def mnist_or_skip():
    """MNIST as ``fastnn.load_mnist`` returns it, read from ``$FASTNN_DATA`` only (never
    downloaded); raises NotImplementedError, asv's skip, when the files are not there."""
    data = os.environ.get("FASTNN_DATA", "").strip()
    if not data:
        raise NotImplementedError("MNIST benchmarks need FASTNN_DATA (a folder holding mnist/)")
    from fastnn import load_mnist
    try:
        return load_mnist(data_dir=data)
    except FileNotFoundError as exc:
        raise NotImplementedError(f"MNIST not found under FASTNN_DATA={data}: {exc}") from exc
