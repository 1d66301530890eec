"""Threads: fastnn's matrix products run on the BLAS library that Numba's ``np.dot`` calls
(SciPy's), whose threads do most of the parallel work; where Numba's threading layer is TBB
(``config.PARALLEL``), the largest passes outside the products run on Numba's threads too
(``kernels/parallel.py``).

fastnn changes nothing in the process beyond itself: it writes no environment variable, starts
no OpenMP runtime (so fork-based process pools keep working), and sets no library's threads for
good. While one of its own calls runs (``fit``, ``predict``, ``evaluate``, ...), it limits the
threads of that one BLAS library: to one thread for products too small to pay for more
(``config.BLAS_PARALLEL_MIN_FLOPS``), else to ``set_num_threads(n)`` if that was called; the
previous count is back when the call returns; ``set_num_threads(n)`` sets Numba's thread count
as well, in the calling thread, for the duration of a call that runs a parallel pass (a call that
runs none does not start Numba's threads). NumPy's own BLAS, PyTorch's and any other
library's pools are never touched. ``OPENBLAS_NUM_THREADS`` (read by OpenBLAS at start-up)
sets the default.
"""
from __future__ import annotations

from typing import Any

import contextlib
import os
import sys
import threading

from .config import BLAS_PARALLEL_MIN_FLOPS, BLAS_REASON, MKL_LIBRARY, PARALLEL, PARALLEL_PASSES_CHOSEN, PARALLEL_REASON
from .validation import check_int

_num_threads = None     # set_num_threads(n); None: the BLAS library's own count
_blas = None            # threadpoolctl controller of the BLAS library Numba calls, made once
_calls = threading.Lock()   # guards the two below
_active = 0             # fastnn calls inside blas_threads_for right now (predicts from several threads)
_before = None          # the BLAS thread counts that the first of them found, put back by the last
_local = threading.local()  # .threads: the BLAS thread count of the fastnn call running in this thread


def _import_threadpoolctl():
    """threadpoolctl, imported without the ``KMP_DUPLICATE_LIB_OK=True`` that its import writes
    into ``os.environ`` (a setting that hides the duplicate-OpenMP error in every library and
    child process): the variable is put back as it was."""
    if "threadpoolctl" in sys.modules:
        return sys.modules["threadpoolctl"]
    key = "KMP_DUPLICATE_LIB_OK"
    before = os.environ.get(key)
    import threadpoolctl
    if before is None:
        os.environ.pop(key, None)
    elif os.environ.get(key) != before:
        os.environ[key] = before
    return threadpoolctl


def _blas_controller():
    """A threadpoolctl controller for the BLAS library that Numba's ``np.dot`` calls: the one
    ``scipy.linalg.cython_blas`` is linked against. Where SciPy shares its BLAS with NumPy (one
    system library), that library is the one; the BLAS NumPy ships on its own is left alone."""
    global _blas
    if _blas is None:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library if it is not loaded yet)
        controller = _import_threadpoolctl().ThreadpoolController().select(user_api="blas")
        scipy_dir = os.path.realpath(os.path.dirname(scipy.__file__))  # .../scipy; wheels: .../scipy.libs
        ours = [lib.filepath for lib in controller.lib_controllers
                if os.path.realpath(lib.filepath).startswith(scipy_dir)]
        # (MKL, where loaded, takes its count per call and thread instead: blas_threads_for)
        others = [lib.filepath for lib in controller.lib_controllers if lib.internal_api != "mkl"]
        _blas = controller.select(filepath=ours or others)
    return _blas


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in fastnn's calls from now on (1 <= n <= cores): BLAS threads in its matrix
    products and, where fastnn's passes run in parallel, Numba threads in those.

    Applies inside fastnn's calls only; other libraries in the process keep their own threads.
    """
    global _num_threads
    _num_threads = check_int(n, "n", minimum=1, maximum=os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of BLAS threads fastnn's matrix products use: ``set_num_threads``' value,
    else the BLAS library's own count."""
    if _num_threads is not None:
        return _num_threads
    counts = [lib.num_threads for lib in _blas_controller().lib_controllers]
    return max(counts) if counts else 1


@contextlib.contextmanager
def blas_threads_for(flops, parallel=PARALLEL_PASSES_CHOSEN):
    """A context for a fastnn call whose matrix products do ``flops`` of work per batch: BLAS on
    one thread below ``BLAS_PARALLEL_MIN_FLOPS`` (waking threads costs more than the product),
    else on ``set_num_threads``' count (or its own). The count the first call found is back
    when the last one returns.

    Calls from several threads at once (predicts, which run concurrently) share one count: the
    library has one. While two or more run, it is one thread: they are the parallelism then,
    and each product runs in its caller's thread instead of queueing for the BLAS pool.
    ``parallel``: whether the call may run a parallel pass (then Numba's count is
    ``set_num_threads``' too); by default, whether FASTNN_PARALLEL chose any."""
    global _active, _before
    limit = 1 if flops < BLAS_PARALLEL_MIN_FLOPS else _num_threads
    libs = _blas_controller().lib_controllers
    with _calls:
        if _active == 0:
            _before = [lib.num_threads for lib in libs]
        _active += 1
        target = 1 if _active > 1 else limit
        if target is not None:
            for lib in libs:
                if lib.num_threads != target:
                    lib.set_num_threads(target)
        threads = target if target is not None else libs[0].num_threads if libs else 1
    outer = getattr(_local, "threads", None)
    _local.threads = threads
    # MKL's count in this thread only (MKL_Set_Num_Threads_Local), the same as OpenBLAS's.
    mkl_before = MKL_LIBRARY.MKL_Set_Num_Threads_Local(threads) if MKL_LIBRARY is not None else None
    try:
        with _numba_threads(_num_threads) if parallel and _num_threads is not None else contextlib.nullcontext():
            yield
    finally:
        _local.threads = outer
        if mkl_before is not None:
            MKL_LIBRARY.MKL_Set_Num_Threads_Local(mkl_before)
        with _calls:
            _active -= 1
            if _active == 0:
                for lib, n in zip(libs, _before):
                    if lib.num_threads != n:
                        lib.set_num_threads(n)


def call_blas_threads():
    """The BLAS thread count of the fastnn call running in this thread (``blas_threads_for``), or
    None outside one."""
    return getattr(_local, "threads", None)


@contextlib.contextmanager
def _numba_threads(n):
    """Numba's thread count at ``n`` (at most the threads Numba launched) in this thread, put back
    after. Numba's count is per calling thread, so another thread's fastnn call (or the user's own
    parallel code) is not affected."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def threading_info() -> dict[str, Any]:
    """What fastnn's calls run on: the thread count they use and the BLAS library (name, version,
    threads outside fastnn's calls, the CPU core type it picked, its file)."""
    keys = ("internal_api", "version", "num_threads", "architecture", "threading_layer", "filepath")
    return {
        "num_threads": get_num_threads(),
        "kernels": PARALLEL_REASON if PARALLEL else f"serial Numba ({PARALLEL_REASON})",
        "blas": [{k: info[k] for k in keys if k in info} for info in _blas_controller().info()],
        "products": BLAS_REASON,
    }
