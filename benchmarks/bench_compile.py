"""Start-up costs, each in a fresh interpreter (``timeraw_``): importing fastnn, and the first
training call of a new process, which compiles the kernels (cold: an empty Numba cache, as a
user's very first run) or loads them from the cache (warm: every later run).

The first call is one ``fit`` epoch, one ``predict`` and one ``evaluate`` on a few rows of the
seed network: together they reach every kernel a training script uses.
"""
from . import warm_numba_cache as setup_cache  # noqa: F401  (asv runs it once, first)

# Runs untimed in the fresh interpreter before the timed statement. For a cold cache it points
# Numba at an empty folder of its own (removed at exit) before numba is imported.
_COLD_CACHE = """
import atexit, os, shutil, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastnn-cold-cache-")
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], True)
"""
_MODEL = """
import numpy as np
from fastnn import MLP, Adam, Dense
model = MLP([Dense(784, 100, activation="relu"), Dense(100, 50, activation="relu"),
             Dense(50, 10, activation="softmax")], seed=0)
model.compile(loss="categorical_crossentropy", optimizer=Adam(1e-3), metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.random((100, 784), dtype=np.float32)
y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 100)]
"""
_FIRST_CALLS = """
model.fit(x, y, epochs=1, batch_size=50, verbose=0)
model.predict(x)
model.evaluate(x, y)
"""


class Compile:
    params = [["cold", "warm"]]
    param_names = ["numba_cache"]
    # A cold compile takes a minute or more: few samples, one round, no warm-up run.
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0.0
    rounds = 1
    timeout = 900

    def timeraw_first_fit(self, cache):
        """Seconds from a fresh interpreter with fastnn imported to the end of its first fit/predict/evaluate."""
        return _FIRST_CALLS, (_COLD_CACHE if cache == "cold" else "") + _MODEL


def timeraw_import_fastnn():
    """Seconds to ``import fastnn`` (numba included) in a fresh interpreter."""
    return "import fastnn"
