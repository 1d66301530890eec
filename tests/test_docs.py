"""What the README and docs state, checked against what the code does: each statement here was
wrong or missing once. The reference is the behaviour itself, run next to the sentence."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from fastnn import MLP, BatchNorm, Dense, Dropout

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def one_line(text):
    """``text`` with its line breaks and runs of spaces made single spaces."""
    return re.sub(r"\s+", " ", text)


def test_a_training_mode_call_updates_batchnorms_statistics_and_trains_no_weight_as_documented():
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    model = MLP([Dense(3, 4, activation="relu"), BatchNorm(), Dropout(0.5), Dense(4, 2, activation="softmax")],
                seed=0).compile("cross_entropy", "adam")
    before = model.get_weights()
    model(x, training=True)
    after = model.get_weights()
    moved = [not np.array_equal(a, b) for a, b in zip(before, after)]
    # Dense (W, b), BatchNorm (gamma, beta, running mean, running variance), Dense (W, b)
    assert moved == [False, False, False, False, True, True, False, False]
    readme = one_line(README)
    assert ("`training=True` is the training-mode forward pass over all rows at once: Dropout draws new masks, "
            "and BatchNorm normalizes with the batch and updates its running statistics") in readme
    assert "no weight is trained" in readme
    doc = one_line(MLP.__call__.__doc__)
    assert "updates its running statistics" in doc and "No weight is trained" in doc
    assert "Nothing is learned" not in doc


def test_the_readme_says_user_layers_run_without_bounds_checks_and_how_to_turn_them_on():
    readme = one_line(README)
    assert "They run compiled without bounds checks" in readme
    assert "`NUMBA_BOUNDSCHECK=1` in the environment makes every compiled function check (an IndexError" in readme
    # What the sentence promises: with the variable set, a user function indexing past its row
    # is an IndexError (here from the shape probe when the layer is added), not a crash.
    code = textwrap.dedent("""
        import numpy as np
        from fastnn import MLP, Dense, Lambda
        def shifted(x):
            out = np.empty_like(x)
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    out[i, j] = x[i, j + 1]
            return out
        try:
            MLP([Dense(3, 4), Lambda(shifted, lambda x, y, dy: dy)])
        except IndexError as e:
            print("IndexError", e)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "NUMBA_BOUNDSCHECK": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("IndexError"), done.stdout + done.stderr


# asv's discovery (asv_runner.discovery, asv 0.6): every module of the benchmark package is
# imported; a public function, or a method of a public class, is a benchmark when its name
# matches one of these; its parameter lists come from the method, else its class, else the module.
DISCOVER = textwrap.dedent(r"""
    import collections, importlib, inspect, json, math, pkgutil, re
    import benchmarks
    KINDS = {"mem": r"^(Mem[A-Z_].+)|(mem_.+)$", "peakmem": r"^(PeakMem[A-Z_].+)|(peakmem_.+)$",
             "time": r"^(Time[A-Z_].+)|(time_.+)$", "timeraw": r"^(Timeraw[A-Z_].+)|(timeraw_.+)$",
             "track": r"^(Track[A-Z_].+)|(track_.+)$"}
    kinds, combinations = collections.Counter(), 0
    def found(name, sources):
        global combinations
        kind = next((k for k, pattern in KINDS.items() if re.match(pattern, name)), None)
        if kind is None:
            return
        params = next((s.params for s in sources if hasattr(s, "params")), [])
        params = [params] if params and not isinstance(params[0], (list, tuple)) else params
        kinds[kind] += 1
        combinations += math.prod(len(p) for p in params)
    for info in pkgutil.walk_packages(benchmarks.__path__, "benchmarks."):
        module = importlib.import_module(info.name)
        for name, value in [(k, v) for k, v in vars(module).items() if not k.startswith("_")]:
            if inspect.isclass(value) and not inspect.isabstract(value):
                for method_name, method in inspect.getmembers(value):
                    if inspect.isfunction(method) or inspect.ismethod(method):
                        found(method_name, [method, value, module])
            elif inspect.isfunction(value):
                found(name, [value, module])
    print(json.dumps({"kinds": kinds, "combinations": combinations}))
""")


def test_the_benchmark_count_in_docs_benchmarks_md_is_the_suites():
    """Was: "32 benchmarks" and 133 combinations while asv ran 34 and 135."""
    done = subprocess.run([sys.executable, "-c", DISCOVER], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    suite = json.loads(done.stdout.splitlines()[-1])
    doc = one_line((ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8"))
    stated = re.search(r"runs (\d+) parameter combinations \((\d+) benchmarks: (\d+) `time_`, (\d+) `timeraw_`, "
                       r"(\d+) `peakmem_`, (\d+) `track_`", doc)
    assert stated, "docs/benchmarks.md no longer states the suite's size in the expected words"
    kinds = suite["kinds"]
    assert [int(n) for n in stated.groups()] == [suite["combinations"], sum(kinds.values()), kinds.get("time", 0),
                                                 kinds.get("timeraw", 0), kinds.get("peakmem", 0),
                                                 kinds.get("track", 0)]
    assert not kinds.get("mem"), "a mem_ benchmark: add it to the sentence in docs/benchmarks.md"
