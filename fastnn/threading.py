"""Thread control for both pools that fastnn's kernels use: Numba's (elementwise kernels,
optimizer steps) and the BLAS library's (matrix products, called through SciPy's BLAS).

Both default to one thread per core. fastnn sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is
already set (``fastnn.config``), so that Numba's idle threads do not spin while BLAS works;
BLAS itself runs on one thread for small products (``config.BLAS_PARALLEL_MIN_FLOPS``). ``set_num_threads(n)`` sets both, so they never
oversubscribe the cores; ``threading_info()`` shows what is in use. The environment
variables ``NUMBA_NUM_THREADS``, ``NUMBA_THREADING_LAYER`` and ``OPENBLAS_NUM_THREADS`` set
the same before start-up.
"""
import numba
import threadpoolctl

from .validation import check_int


def set_num_threads(n):
    """Use ``n`` threads in Numba's parallel kernels and in BLAS (1 <= n <= NUMBA_NUM_THREADS)."""
    n = check_int(n, "n", minimum=1, maximum=numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    # Numba's np.dot calls SciPy's BLAS, which is loaded lazily: load it so the limit reaches it.
    import scipy.linalg.cython_blas  # noqa: F401
    threadpoolctl.threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """The number of threads Numba's parallel kernels use."""
    return numba.get_num_threads()


def threading_info():
    """Numba's threading layer and thread count, and each loaded BLAS library with its threads.

    The threading layer is known once a parallel kernel has run; this runs a tiny one first.
    """
    from .kernels.optimizers import sgd_step_parallel
    import numpy as np
    p = np.zeros(1, np.float32)
    sgd_step_parallel(p, p, p, 0.0, 0.0, False)
    return {
        "numba_threading_layer": numba.threading_layer(),
        "numba_num_threads": numba.get_num_threads(),
        "blas": [{k: info[k] for k in ("internal_api", "num_threads", "version", "filepath") if k in info}
                 for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"],
    }
