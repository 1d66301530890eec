"""Test-session setup shared by every test file.

The CUDA tests run the kernels of ``fastnn.cuda`` in Numba's CUDA simulator when no GPU is
present. The simulator is chosen when ``numba.cuda`` is first imported, so the switch must
be set here, before any test module imports numba. It changes nothing for the CPU kernels
(``numba.njit`` compiles as usual). With an NVIDIA GPU (or NUMBA_ENABLE_CUDASIM=0 set
explicitly) the same tests run on the device.
"""
import os
import shutil


def _gpu_visible():
    """Whether an NVIDIA driver is installed, checked without importing numba."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _gpu_visible():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"


# CI runs the suite first in an environment without the optional packages, then only the tests
# that skipped there in one with all of them. FASTNN_SKIPPED_LOG names the file that collects
# the exact node ids of those tests (a module skipped whole as its file).
_skipped_log = os.environ.get("FASTNN_SKIPPED_LOG")


def _log_skipped(nodeid):
    with open(_skipped_log, "a") as f:
        f.write(nodeid + "\n")


def pytest_runtest_logreport(report):
    if _skipped_log and report.skipped and report.when in ("setup", "call"):
        _log_skipped(report.nodeid)


def pytest_collectreport(report):
    if _skipped_log and report.skipped and report.nodeid:
        _log_skipped(report.nodeid)
