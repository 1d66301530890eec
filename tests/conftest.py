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

# Under pytest-xdist each worker compiles into a Numba cache of its own: processes writing one
# cache at once can crash (numba#4807). The caches persist, as Numba's own would, in the
# directory the user chose (NUMBA_CACHE_DIR) or beside pytest's cache.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _root = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".pytest_cache", "numba")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_root, _worker)


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
