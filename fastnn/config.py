"""Every Numba option and numeric threshold of fastnn lives here, not as literals in kernels.

Kernels are compiled through :func:`kernel`, which applies one set of flags to the whole
package, so a reader (and ``tests/test_config.py``) can check them in one place.
"""
import hashlib
import os
import pathlib

import numba
from numba.core import caching

# fastmath without 'nnan' and 'ninf': with those two, isnan/isfinite fold to False
# (numba#9383) and a diverging loss would go unnoticed. The rest lets LLVM vectorize
# reductions and contract multiply-adds.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Compiled kernels persist between processes. FASTNN_NO_CACHE=1 turns this off, e.g. when
# several processes would write the same cache at once (numba#4807).
CACHE = os.environ.get("FASTNN_NO_CACHE", "0") not in ("1", "true", "yes")

# Matrix-product work (FLOPs of one training step, or of one inference batch) below which BLAS
# runs on one thread. Two costs weigh against a second thread on small steps: waking and joining
# it for products of a few microseconds, and, after each product, OpenBLAS's worker spinning on
# the other core while the step's serial passes run (Adam over the seed network's 84k
# parameters took 57 us in the step with one BLAS thread and 90 us with two). Measured with
# ``fit`` on MNIST, 2-core Xeon (AVX-512), 784-100-50-10, samples/s with 2 threads / 1 thread:
# batch 32 (16M FLOPs a step) 0.94, 50 (25M) 0.94, 64 (32M) 0.94, 100 (50M) 1.09, 128 (64M) 1.14,
# 256 (129M) 1.26; 784-64-64-10 at batch 256 (84M) 1.25. On cores that other processes compete
# for, a descheduled BLAS thread stalls every product it takes part in (5-20x slower seen at
# batch 50): there, fastnn.set_num_threads(1) is the faster setting.
BLAS_PARALLEL_MIN_FLOPS = 4e7

# Rows per forward pass in predict/evaluate: large enough for efficient GEMMs, small enough
# that the activations of a wide network stay in cache.
INFERENCE_BATCH_SIZE = 1024

# A forward pass over at most this many rows (online inference: one request at a time) runs row
# by row as vector-matrix products rather than one matrix product: BLAS's SGEMM packs W for
# every call, which for one row costs more than the product (kernels/dense.py).
FEW_ROWS = 4
# In such a row, a Dense layer's input with at most this fraction of nonzeros multiplies only
# the rows of W at its nonzeros (an MNIST digit: about 19%; a ReLU layer's output: about half).
# One row, float32, 2-core EPYC, BLAS's vector-matrix product / the rows at the nonzeros, in us:
# 784 -> 100 at 20% nonzeros 3.4 / 1.5, at 50% 3.3 / 2.9, at 100% 3.5 / 6.0; 100 -> 50 at 50%
# 0.35 / 0.29; 1024 -> 1024 at 50% (one thread) about 2x faster by the nonzeros.
FEW_ROWS_MAX_DENSITY = 0.5

# Density (fraction of nonzero inputs) at or below which a stack's first Dense layer trains on
# each batch's nonzeros only (``kernels/sparse.py``), measured per data set
# (``sparse_input.density``). The first layer's gather + forward + dW, zero-skipping time / dense
# time, float32, medians of step-by-step alternating pairs (``python -m benchmarks.bench_sparse``,
# 2 cores shared with other work), at densities 0.05 0.10 0.19 0.30 0.45 0.60, BLAS on one thread:
#   784-100 at batch 50:   0.55 0.72 0.99 1.36 1.95 2.60
#   784-256 at batch 128:  0.32 0.48 0.83 1.23 2.00 2.32
#   784-1024 at batch 256: 0.32 0.53 0.89 1.44 2.03 2.81
# The crossover is about 0.2 against one BLAS thread (fit gives the seed network's step one), and
# lower where fit gives BLAS both cores (wider layers; an idle second core halves the dense time,
# a busy one does not: with BLAS on two loaded cores the 784-1024 ratios were 0.03 0.23 0.28 0.43
# 0.71 1.54). So 0.1, where the zero-skipping path is clearly faster (bag-of-words data, 1-5%
# nonzero); MNIST (19%) stays on the dense path, which also spares its first fit the path's
# compile (2-3 s of CPU time).
SPARSE_FIRST_LAYER_MAX_DENSITY = 0.1

# CUDA launch geometry.
CUDA_THREADS_PER_BLOCK = 256


def _kernel_sources_stamp():
    """A hash of every kernel module's source.

    Numba's cache checks only the source file of the function it loads, not the files of
    the functions that it calls (numba#6845): after an edit to ``losses.py``, the cached
    ``network.train_batches`` would still run the old loss. Stamping each fastnn kernel's
    cache entry with all kernel sources makes any change recompile everything that may
    depend on it.
    """
    root = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.glob("kernels/*.py")) + [root / "config.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _install_cache_locators():
    """Put fastnn's stamp in front of Numba's cache locators, for fastnn's functions only."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None or not hasattr(impl, "_locator_classes"):
        return  # an unknown Numba layout: fall back to Numba's own invalidation
    stamp = _kernel_sources_stamp()

    class StampedLocator:
        @classmethod
        def from_function(cls, py_func, py_file):
            if not getattr(py_func, "__module__", "").startswith(__package__ + "."):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), stamp)

    if not any(getattr(c, "_fastnn_stamp", False) for c in impl._locator_classes):
        impl._locator_classes[:0] = [type("Fastnn" + c.__name__, (StampedLocator, c), {"_fastnn_stamp": True})
                                     for c in list(impl._locator_classes)]


if CACHE:
    _install_cache_locators()


def kernel(fn=None, *, inline=False):
    """Compile ``fn`` with the package's flags (``njit``, cached, fastmath without nnan/ninf).

    Every kernel is serial (no ``parallel=True``): the cores belong to BLAS's threads, which run
    the matrix products. Numba's parallel builds start an OpenMP runtime whose idle threads spin
    and take the cores from BLAS (784-256-256-10 trained at 28k instead of 74k samples/s), and
    after GNU OpenMP has run, a fork-based process pool in the user's program hangs.

    ``inline=True`` is for small kernels with one or two call sites (one activation, one loss,
    one optimizer's element update, a dense layer's pass): Numba then splices their code into the
    caller instead of compiling each as a function of its own, which costs 0.2-0.3 s of a cold
    start apiece (typing, lowering, an LLVM module, a cache file). Inlining these cut the first
    fit of a new model from about 23 to 17 s (CPU time, paired runs on an empty cache). Called
    directly, as the tests do, an inline kernel compiles as usual. Not for dispatchers with
    many branches, nor for functions with many call sites: each gets a copy, and inlining the
    dispatchers as well made the cold start slower (about 22 s; everything inlined: 41 s). Nor
    for loops that LLVM must optimize alone: the four optimizers' loops inlined into one
    dispatcher left SGD's unvectorized, 150x slower (``kernels/optimizers.py``).

    ``nogil``: a kernel called from Python lets other Python threads run meanwhile, so that
    predicts from several threads run at the same time (``fastnn.locks``).
    """
    def wrap(f):
        return numba.njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy", nogil=True,
                          inline="always" if inline else "never")(f)
    return wrap if fn is None else wrap(fn)
