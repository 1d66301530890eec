"""fastnn leaves the process it is imported into alone: no environment variables written (its
own or its dependencies'), no OpenMP runtime started, other libraries' BLAS threads untouched,
and fork-based process pools work after any fastnn call.

Each check runs in a fresh interpreter, so nothing earlier in the test session (another test
importing threadpoolctl, say) can hide a change or cause one.
"""
import os
import sys
import textwrap

import pytest

from helpers import TRAIN, run_python


@pytest.mark.slow  # a child process that compiles and trains
def test_environment_is_unchanged_by_import_fit_and_threading_calls():
    # The snapshot is taken before anything of fastnn (or its dependencies) is imported.
    code = "import json, os\nbefore = dict(os.environ)\nimport fastnn\nafter_import = dict(os.environ)\n" \
        + TRAIN + textwrap.dedent("""
        fit_once(0)
        fastnn.set_num_threads(1)
        fit_once(1)
        fastnn.get_num_threads()
        fastnn.threading_info()
        after = dict(os.environ)
        diff = lambda a, b: sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print(json.dumps({"import": diff(before, after_import), "use": diff(before, after)}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_DUPLICATE_LIB_OK")}
    assert run_python(code, env) == {"import": [], "use": []}


def test_a_variable_the_user_set_is_kept_as_it_was():
    code = TRAIN + textwrap.dedent("""
        import json, os
        fit_once(0)
        print(json.dumps({k: os.environ.get(k) for k in ("KMP_DUPLICATE_LIB_OK", "OMP_WAIT_POLICY")}))
    """)
    env = dict(os.environ, KMP_DUPLICATE_LIB_OK="FALSE", OMP_WAIT_POLICY="ACTIVE")
    assert run_python(code, env) == {"KMP_DUPLICATE_LIB_OK": "FALSE", "OMP_WAIT_POLICY": "ACTIVE"}


def test_a_child_process_sees_the_parents_environment():
    code = TRAIN + textwrap.dedent("""
        import json, os, subprocess, sys
        fit_once(0)
        fastnn.threading_info()
        child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
                               capture_output=True, text=True, check=True)
        seen = json.loads(child.stdout)
        print(json.dumps({"same": seen == dict(os.environ), "leaked": sorted(
            k for k in ("OMP_WAIT_POLICY", "KMP_DUPLICATE_LIB_OK") if k in seen)}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_DUPLICATE_LIB_OK")}
    assert run_python(code, env) == {"same": True, "leaked": []}


def test_no_openmp_runtime_is_loaded():
    """Numba's OpenMP and workqueue layers (omppool with GNU OpenMP, workqueue) are never started:
    fastnn's parallel kernels run on TBB alone (``fastnn.config._parallel_plan``)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps (Linux)")
    code = TRAIN + textwrap.dedent("""
        import json
        fit_once(0)
        fastnn.threading_info()
        maps = open("/proc/self/maps").read()
        print(json.dumps(sorted({name for name in ("omppool", "workqueue", "libgomp")
                                 if name in maps})))
    """)
    assert run_python(code) == []


def test_a_cpu_model_never_imports_numba_cuda():
    """Importing fastnn and training and predicting on the CPU imports no CUDA module: numba-cuda,
    where installed, takes over half a second to import (its ml_dtypes alone 0.56 s), which a
    CPU user would pay at every start (the CUDA backend imports it when a model is put on a GPU)."""
    code = TRAIN + textwrap.dedent("""
        import json, sys
        fit_once(0)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(("numba.cuda", "ml_dtypes", "cuda.")))))
    """)
    assert run_python(code) == []


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_pool_of_fits_returns_after_the_parent_trained():
    """The user's multiprocessing.Pool (fork) fitting models, after the parent fitted the same
    model and asked for threading_info(): every worker's fit returns, with the parent's result.
    With GNU OpenMP started in the parent the children hung ("fork() called from a process
    already using GNU OpenMP")."""
    code = TRAIN + textwrap.dedent("""
        import json, multiprocessing
        parent = fit_once(0)
        fastnn.threading_info()
        with multiprocessing.get_context("fork").Pool(2) as pool:
            children = pool.map_async(fit_once, [0, 1]).get(timeout=120)
        print(json.dumps({"parent": parent, "children": children}))
    """)
    result = run_python(code, timeout=240)
    assert result["children"][0] == pytest.approx(result["parent"], rel=1e-6)
    assert result["children"][1] > 0


def test_other_blas_libraries_keep_their_thread_counts():
    """fastnn limits only the BLAS that Numba calls (SciPy's), and only during its own calls:
    NumPy's BLAS (a library of its own in the wheels) and SciPy's own count are as before, and
    MKL's where the mkl extra is installed (fastnn sets it per call and thread). MKL's first
    product loads Intel's OpenMP runtime, a library that was not there before: only the counts of
    the libraries loaded before the fit are compared."""
    code = TRAIN + textwrap.dedent("""
        import json
        import threadpoolctl
        import scipy.linalg.cython_blas
        before = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
        fastnn.set_num_threads(1)
        fit_once(0)
        fastnn.threading_info()
        after = {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
        used = [b["filepath"] for b in fastnn.threading_info()["blas"]]
        print(json.dumps({"same": before == {k: after.get(k) for k in before}, "used": used,
                          "libraries": list(before)}))
    """)
    result = run_python(code)
    assert result["same"]
    assert result["used"] and set(result["used"]) <= set(result["libraries"])
