"""Start-up costs, each in a fresh interpreter (``timeraw_``): importing fastnn, and the first
training call of a new process, which compiles the kernels (cold: an empty Numba cache, as a
user's very first run) or loads them from the cache (warm: every later run).

The first call is one ``fit`` epoch, one ``predict`` and one ``evaluate`` on a few rows, for
three kinds of model (``model``): the seed network; a model with functions of the user's own
(a ``Lambda``, a ``Layer`` subclass with a weight, a ``CustomLoss`` and a metric function), whose
generated wrappers fastnn caches on disk under a key of the functions' code
(``fastnn.user_code``); and ``fastnn.sklearn.MLPClassifier`` (``fit``, ``predict``, ``score`` on
float64 data, scikit-learn imported). ``timeraw_load_model`` is ``load_model`` of the user-function
model, saved by another process, and one ``predict``: with a warm cache it compiles nothing.

Run as a script, ``python -m benchmarks.bench_compile [--repeat N]`` times every case in new
processes with a clean environment (cold: a new empty cache each run; warm: a cache the first
run filled) and prints the medians.
"""
from . import sizes
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# Runs untimed in the fresh interpreter before the timed statement. For a cold cache it points
# Numba at an empty folder of its own (removed at exit) before numba is imported.
_COLD_CACHE = """
import atexit, os, shutil, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastnn-cold-cache-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)
"""
_DATA = """
import numpy as np
rng = np.random.default_rng(0)
x = rng.random((100, 784), dtype=np.float32)
y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 100)]
"""
_USER_FUNCTIONS = """
import fastnn

def cube(x):
    return x * x * x

def cube_backward(x, y, dy):
    return 3 * x * x * dy

class Scale(fastnn.Layer):
    def build(self, input_dim):
        self.add_weight("scale", (input_dim,), initializer="ones")
        return input_dim

    @staticmethod
    def forward(x, scale):
        return x * scale

    @staticmethod
    def backward(x, scale, y, dy):
        return dy * scale, ((dy * x).sum(axis=0),)

def huber(y_true, y_pred):
    d = y_pred - y_true
    return np.mean(np.where(np.abs(d) < 1.0, 0.5 * d * d, np.abs(d) - 0.5))

def huber_gradient(y_true, y_pred):
    d = y_pred - y_true
    return np.where(np.abs(d) < 1.0, d, np.sign(d)) / d.size

def max_error(y_true, y_pred):
    return np.max(np.abs(y_pred - y_true))

CUSTOM_OBJECTS = {"Scale": Scale, "cube": cube, "cube_backward": cube_backward, "huber": huber,
                  "huber_gradient": huber_gradient, "max_error": max_error}
"""
_MODELS = {
    "seed": _DATA + """
from fastnn import MLP, Adam, Dense
model = MLP([Dense(784, 100, activation="relu"), Dense(100, 50, activation="relu"),
             Dense(50, 10, activation="softmax")], seed=0)
model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
""",
    "user_functions": _DATA + _USER_FUNCTIONS + """
from fastnn import MLP, Dense, Lambda
model = MLP([Dense(784, 32, activation="tanh"), Lambda(cube, cube_backward), Scale(), Dense(None, 10)], seed=0)
model.compile(loss=fastnn.CustomLoss(huber, huber_gradient), optimizer="adam", metrics=["mae", max_error])
""",
    "sklearn": _DATA + """
from fastnn.sklearn import MLPClassifier
x, y = x.astype(np.float64), y.argmax(axis=1)
model = MLPClassifier(hidden_layer_sizes=(100, 50), max_iter=1, batch_size=50, random_state=0)
""",
}
_FIRST_CALLS = {
    "seed": """
model.fit(x, y, epochs=1, batch_size=50, verbose=0)
model.predict(x)
model.evaluate(x, y, verbose=0)
""",
    "sklearn": """
model.fit(x, y)
model.predict(x)
model.score(x, y)
""",
}
_FIRST_CALLS["user_functions"] = _FIRST_CALLS["seed"]
_LOAD = _DATA + _USER_FUNCTIONS + """
model = fastnn.load_model(__PATH__, custom_objects=CUSTOM_OBJECTS)
model.predict(x)
"""


def _first_calls(model):
    return _MODELS[model] + _FIRST_CALLS[model]


def _available(model):
    """Whether this environment can run ``model``'s case: the estimator needs scikit-learn, an
    optional extra (asv's environments install it: asv.conf.json)."""
    import importlib.util
    return model != "sklearn" or importlib.util.find_spec("sklearn") is not None


_SAVE = _MODELS["user_functions"] + """
model.fit(x, y, epochs=1, batch_size=50, verbose=0)
model.save(__PATH__)
"""


def _save_user_model(path):
    """The user-function model, trained a step and saved to ``path`` (in this process)."""
    exec(_SAVE.replace("__PATH__", repr(path)), {"__name__": "__main__"})  # noqa: S102 (this module's own code)


def warm_up():
    """The suite's cache gets the kernels of every model's first calls (the seed model's come
    from the other modules' warm-ups too)."""
    for model in filter(_available, _MODELS):  # as __main__, as in the timed interpreters (``python -c``)
        exec(_first_calls(model), {"__name__": "__main__"})  # noqa: S102 (this module's own code)


class Compile:
    params = [["cold", "warm"], sizes(["seed", "user_functions", "sklearn"])]
    param_names = ["numba_cache", "model"]
    # A cold compile takes a minute or more: few samples, one round, no warm-up run.
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 900

    def setup(self, cache, model):
        if not _available(model):
            raise NotImplementedError("scikit-learn is not installed")  # asv: skipped

    def timeraw_first_fit(self, cache, model):
        """Seconds from a fresh interpreter with fastnn imported to the end of its first fit/predict/evaluate."""
        return _FIRST_CALLS[model], (_COLD_CACHE if cache == "cold" else "") + "import fastnn\n" + _MODELS[model]


class LoadModel:
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 300

    def setup(self):
        import os
        import tempfile
        self.path = os.path.join(tempfile.mkdtemp(prefix="fastnn-bench-load-"), "user_functions.npz")
        _save_user_model(self.path)

    def timeraw_load_model(self):
        """Seconds for ``load_model`` of a model with user functions (saved by another process)
        and one ``predict``, in a fresh interpreter, warm cache: no compiling."""
        return _LOAD.replace("__PATH__", repr(self.path)), ""


def timeraw_import_fastnn():
    """Seconds to ``import fastnn`` (numba included) in a fresh interpreter."""
    return "import fastnn"


def _run(code, cache_dir):
    """Seconds of ``code`` in a new interpreter with a clean environment (PATH, HOME and
    NUMBA_CACHE_DIR only), fastnn's import included."""
    import os
    import subprocess
    import sys
    import time
    env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    env["NUMBA_CACHE_DIR"] = cache_dir
    t = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, check=True)
    return time.perf_counter() - t


def main():
    import argparse
    import os
    import shutil
    import statistics
    import tempfile
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (median printed)")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="fastnn-bench-compile-")
    try:
        # The cases take turns, so that a load on the machine weighs on each alike; the first cold
        # run of a model fills the cache its warm runs read.
        models = [m for m in _MODELS if _available(m)]
        cold, warm = {m: [] for m in models}, {m: [] for m in models}
        for i in range(args.repeat):
            for model in models:
                cache = os.path.join(root, model if i == 0 else f"{model}-cold-{i}")
                cold[model].append(_run("import fastnn\n" + _first_calls(model), cache))
        path = os.path.join(root, "user_functions.npz")
        _run(_SAVE.replace("__PATH__", repr(path)), os.path.join(root, "user_functions"))
        load, imports = [], {"import fastnn": [], **({"import fastnn.sklearn": []} if _available("sklearn") else {})}
        for i in range(args.repeat):
            for statement, times in imports.items():
                times.append(_run(statement, os.path.join(root, "seed")))
            for model in models:
                warm[model].append(_run("import fastnn\n" + _first_calls(model), os.path.join(root, model)))
            load.append(_run(_LOAD.replace("__PATH__", repr(path)), os.path.join(root, "user_functions")))
        rows = [(f"first fit, {m}", cold[m], warm[m]) for m in models]
        rows.append(("load_model + predict, user_functions", [], load))
        rows += [(statement, [], times) for statement, times in imports.items()]
        print(f"seconds in a new process, fastnn's import included, median of {args.repeat}")
        print(f"{'case':<40} {'cold cache':>11} {'warm cache':>11}")
        for name, cold, warm in rows:
            c = f"{statistics.median(cold):.2f}" if cold else "-"
            print(f"{name:<40} {c:>11} {statistics.median(warm):>11.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
