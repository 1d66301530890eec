"""Test-session setup shared by every test file.

The CUDA tests run the kernels of ``fastnn.cuda`` in Numba's CUDA simulator when no GPU is
present. The simulator is chosen when ``numba.cuda`` is first imported, so the switch must
be set here, before any test module imports numba. It changes nothing for the CPU kernels
(``numba.njit`` compiles as usual). With an NVIDIA GPU (or NUMBA_ENABLE_CUDASIM=0 set
explicitly) the same tests run on the device.
"""
import os
import shutil
import sys


def _gpu_visible():
    """Whether an NVIDIA driver is installed, checked without importing numba."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_visible():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# The simulator runs each CUDA thread of a block as a Python thread, and its launcher polls them
# while they take turns on the GIL; at Python's default switch interval (5 ms) most of a launch
# is threads waiting for their turn. 0.1 ms ran the CUDA tests about 4x faster (0.05 ms gained
# nothing more). This test process only: fastnn itself never changes it.
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    sys.setswitchinterval(1e-4)


def _lock_simulated_shared_arrays():
    """The simulator's ``cuda.shared.array`` looks up the block's array for the calling line and
    creates it when missing, with no lock (numba-cuda 0.30): two threads of a block can both
    find none and each get an array of their own. A thread's stores into the shared tiles
    of ``cuda/dense.py``'s gemm then never reach the others, which read uninitialized memory:
    a test failed about one run in five with weights of 1e18 (more often at the short switch
    interval above). The same lookup, under a lock; the caller is still the frame above."""
    import threading
    import traceback

    import numpy as np
    from numba.cuda.simulator import kernelapi

    lock = threading.Lock()
    original = kernelapi.FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory (one buffer), or the simulator's error
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        caller = traceback.extract_stack(sys._getframe())[-2][0:2]
        with lock:
            found = self._allocations.get(caller)
            if found is None:
                # Filled with NaN (other types: bytes of 0xA5), not left as np.empty's leftovers,
                # so that a kernel reading shared memory no thread wrote fails every time.
                found = self._allocations[caller] = np.empty(shape, dtype)
                if dtype.kind in "fc":
                    found.fill(np.nan)
                else:
                    found.view(np.uint8).fill(0xA5)
        return found

    kernelapi.FakeCUDAShared.array = array


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    _lock_simulated_shared_arrays()

# The tests compile into one Numba cache beside pytest's own (or the directory the user chose,
# NUMBA_CACHE_DIR), shared by the pytest-xdist workers and the child processes: fastnn's kernels
# compile once between processes that share a cache (``fastnn.config._compile_once``), so a
# kernel that two test files need is compiled by one worker and loaded by the other. (A cache
# for each worker compiled 145 s of the default run's 490 s of kernels twice.)
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 ".pytest_cache", "numba")


# CI runs the suite first in an environment without the optional packages, then only the tests
# that skipped there in one with all of them. FASTNN_SKIPPED_LOG names the file that collects
# the exact node ids of those tests (a module skipped whole as its file). Under pytest-xdist the
# workers' reports reach the controlling process, which alone writes them.
_skipped_log = None if _worker else os.environ.get("FASTNN_SKIPPED_LOG")


def _log_skipped(nodeid):
    with open(_skipped_log, "a") as f:
        f.write(nodeid + "\n")


def pytest_runtest_logreport(report):
    if _skipped_log and report.skipped and report.when in ("setup", "call"):
        _log_skipped(report.nodeid)


def pytest_collectreport(report):
    if _skipped_log and report.skipped and report.nodeid:
        _log_skipped(report.nodeid)
