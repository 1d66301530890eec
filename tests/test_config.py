"""The package's Numba flags live in fastnn.config alone (stumpy's habit): no kernel module
compiles with flags of its own, and the fastmath set keeps NaN and inf observable."""
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import fastnn
from fastnn import config

KERNEL_DIR = pathlib.Path(fastnn.__file__).parent / "kernels"


def test_no_kernel_module_compiles_with_its_own_flags():
    offenders = []
    for path in sorted(KERNEL_DIR.glob("*.py")):
        text = path.read_text()
        for pattern in (r"\bnjit\b", r"numba\.jit\b", r"fastmath\s*=", r"\bcache\s*=", r"\bparallel\s*=\s*True\)\s*\(",
                        r"inline\s*=\s*True\s*,\s*parallel"):
            if re.search(pattern, text):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_fastmath_flags_leave_nan_and_inf_observable():
    assert "nnan" not in config.FASTMATH and "ninf" not in config.FASTMATH
    assert "fast" not in config.FASTMATH


def test_kernels_detect_nan_through_the_package_flags():
    import numpy as np
    from fastnn.kernels.losses import mse_forward
    pred = np.array([[np.nan, 1.0]], dtype=np.float32)
    assert np.isnan(mse_forward(pred, np.zeros_like(pred)))


def test_parallel_kernels_are_the_named_leaf_kernels_and_only_on_tbb():
    """Only the small leaf kernels named ``*_parallel`` are parallel builds, and only where the
    plan chose Numba's TBB layer: the walkers and ``train_batches`` stay serial (a parallel build
    would make copies of their reshaped views; ``predict_batches_parallel`` only calls the serial
    ``predict_batches``, a function of its own, from each thread), and without TBB (GNU OpenMP's threads spin against
    BLAS and hang forked children) every kernel is serial."""
    import importlib
    kernels = []
    for path in sorted(KERNEL_DIR.glob("*.py")):
        module = importlib.import_module(f"fastnn.kernels.{path.stem}")
        kernels += [(name, obj) for name, obj in vars(module).items() if hasattr(obj, "targetoptions")]
    assert len(kernels) > 30
    parallel = sorted({name for name, obj in kernels if obj.targetoptions.get("parallel")})
    if config.PARALLEL:
        assert parallel == ["adam_step_parallel", "bias_relu_parallel", "column_sums_parallel",
                            "gather_rows_parallel", "mkl_gemm_parallel", "nonzero_rows_product_parallel",
                            "predict_batches_parallel", "relu_backward_parallel"]
    else:
        assert parallel == []
    assert [path.name for path in KERNEL_DIR.glob("*.py")
            if "prange" in path.read_text() and path.stem not in ("parallel", "activations", "optimizers", "dense",
                                                                                  "inference")] == []


def test_the_parallel_plan_keeps_a_layer_the_user_chose():
    """fastnn runs parallel kernels only where Numba's layer is TBB; a user's choice of omp or
    workqueue (environment variable or priority list) keeps every kernel serial, and no plan
    writes Numba's config or the environment."""
    import json
    import os
    import subprocess
    import sys
    code = ("import json, os, numba; before = (dict(os.environ), numba.config.THREADING_LAYER); "
            "from fastnn import config; "
            "print(json.dumps([config.PARALLEL, (dict(os.environ), numba.config.THREADING_LAYER) == before]))")
    results = {}
    on = {"FASTNN_PARALLEL": "1"}  # passes asked for: the threading layer decides
    for name, extra in {"omp": {"NUMBA_THREADING_LAYER": "omp", **on},
                        "workqueue": {"NUMBA_THREADING_LAYER": "workqueue", **on},
                        "priority": {"NUMBA_THREADING_LAYER_PRIORITY": "omp tbb workqueue", **on},
                        "off": {"FASTNN_PARALLEL": "0"}, "default": {},
                        "safe": {"NUMBA_THREADING_LAYER": "safe", "FASTNN_PARALLEL": "1"}}.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING") and k != "FASTNN_PARALLEL"}
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                             timeout=120, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["omp"] == [False, True]
    assert results["workqueue"] == [False, True]
    assert results["priority"] == [False, True]
    assert results["off"] == [False, True]
    assert results["default"] == [config._tbb_loads(), True]  # TBB where it loads, as Numba's default order picks
    assert results["safe"] == [config._tbb_loads(), True]  # TBB is what "safe" asks for


def test_serial_and_parallel_builds_never_share_a_cache_entry_nor_a_cache_file(monkeypatch):
    """A serial build and each choice of parallel passes stamp their cache entries and name their
    files apart (``config._build_tag``): two processes of different builds sharing a cache never
    write the same data file."""
    from fastnn.kernels import activations as A
    tag = config._build_tag()
    assert A.bias_relu_parallel._cache._impl.filename_base.split(".py")[0].endswith("_" + tag)
    seen = set()
    for parallel, optimizer in ((False, False), (True, False), (True, True)):
        monkeypatch.setattr(config, "PARALLEL", parallel)
        monkeypatch.setattr(config, "PARALLEL_OPTIMIZER", optimizer)
        seen.add((config._kernel_sources_stamp(), config._build_tag()))
    assert len({s for s, _ in seen}) == len({t for _, t in seen}) == 3


# Processes sharing a cache (config._compile_once, _CacheOnFirstUse.save_overload). Each child
# imports a kernel defined in tmp_path and plays one part; the lock files are fastnn's own.
_LOCKING_CHILD = """
import json, sys
import numba
from numba.core.compiler_lock import global_compiler_lock
sys.path.insert(0, sys.argv[1])
from fastnn import config
import locked_kernels as m
part = sys.argv[2]
if part == "call":
    print("calling", flush=True)
    print(json.dumps([m.twice(21), sum(m.twice.stats.cache_hits.values()), sum(m.twice.stats.cache_misses.values())]))
else:
    index = m.twice._cache._fastnn_index()
    path = m.twice._cache.lock_path((numba.int64,)) if part == "hold-compile" else index + ".lock"
    with global_compiler_lock, config._held_lock(path):
        print("held", flush=True)
        if sys.stdin.readline().strip() == "compile":
            m.twice(21)  # compiled and saved under the lock held here (reentrant)
            print("compiled", flush=True)
            sys.stdin.readline()
"""


def _locking_children(tmp_path):
    (tmp_path / "locked_kernels.py").write_text("from fastnn.config import kernel\n\n\n@kernel\ndef twice(x):\n"
                                                "    return 2 * x\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}

    def start(part):
        return subprocess.Popen([sys.executable, "-c", _LOCKING_CHILD, str(tmp_path), part], env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return start


def _result(child):
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def test_a_process_waits_for_another_compiling_the_same_kernel_then_loads_it(tmp_path):
    """One process compiles a kernel for a signature; another that needs it meanwhile waits, then
    loads it from the cache: one compile between them (without the lock, two)."""
    start = _locking_children(tmp_path)
    holder = start("hold-compile")
    assert holder.stdout.readline().strip() == "held"
    caller = start("call")
    assert caller.stdout.readline().strip() == "calling"
    time.sleep(0.5)  # the caller reaches the lock, and would compile at once without it
    holder.stdin.write("compile\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "compiled"
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.communicate(timeout=120)
    assert _result(caller) == [42, 1, 0]  # loaded, not compiled


def test_a_process_saves_a_functions_kernels_only_while_no_other_does(tmp_path):
    """Two processes saving kernels of one function at once would name their data files alike
    (numba#4807): a save waits while another process holds the function's save lock; then both
    kernels stay in the cache, each loaded by a later process."""
    start = _locking_children(tmp_path)
    holder = start("hold-save")
    assert holder.stdout.readline().strip() == "held"
    caller = start("call")
    assert caller.stdout.readline().strip() == "calling"
    time.sleep(2.0)  # a compile of twice takes a fraction of this: the caller waits to save
    assert caller.poll() is None
    holder.stdin.write("\n")
    holder.stdin.flush()
    holder.communicate(timeout=120)
    assert _result(caller) == [42, 0, 1]  # compiled, then saved
    assert _result(start("call")) == [42, 1, 0]
