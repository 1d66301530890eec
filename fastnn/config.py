"""Every Numba option and numeric threshold of fastnn lives here, not as literals in kernels.

Kernels are compiled through :func:`kernel`, which applies one set of flags to the whole
package, so a reader (and ``tests/test_config.py``) can check them in one place.
"""
import contextlib
import ctypes
import hashlib
import os
import pathlib
import site
import sys
import warnings

import numba
from numba.core import caching, sigutils
from numba.core.compiler_lock import global_compiler_lock

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
# evaluate, where its batches are shared among threads as predict's: predictions of at most this
# many elements at a time (a whole number of batches), then their losses batch by batch in order.
EVALUATE_CHUNK_ELEMENTS = 1 << 22

# A forward pass over at most this many rows (online inference: one request at a time) runs row
# by row as vector-matrix products rather than one matrix product: BLAS's SGEMM packs W for
# every call, which for one row costs more than the product (kernels/dense.py).
FEW_ROWS = 4
# In such a row, a Dense layer's input with at most this fraction of nonzeros multiplies only
# the rows of W at its nonzeros (an MNIST digit: about 19%; a ReLU layer's output: about half).
# One row, float32, 2-core EPYC, BLAS's vector-matrix product / the rows at the nonzeros, in us:
# 784 -> 100 at 20% nonzeros 3.4 / 1.5, at 50% 3.3 / 2.9, at 100% 3.5 / 6.0; 100 -> 50 at 50%
# 0.35 / 0.29; 1024 -> 1024 at 50% (one thread) about 2x faster by the nonzeros. On a 2-core
# Xeon (AVX-512), with the rows summed four at a time: 784 -> 100 at 50% 3.3 / 2.8, at 60%
# 3.2 / 3.4; 1024 -> 10 at 60% 1.7 / 2.3; 256 -> 256 at 60% 2.3 / 1.9: above a half it is a draw.
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
# A dense input with many exact zeros: the first Dense layer's products (fit: forward and weight
# gradient, serially or on Numba's threads, below; predict: forward) over the columns nonzero in
# each block of 6 rows (``kernels/dense.py: nonzero_rows_product``), where the estimated work
# against GEMM's,
# (the fraction of columns nonzero per block, ``NONZERO_SAMPLE_BLOCKS`` blocks sampled) x (n_out
# rounded up to the kernel's 64 float32 or 32 float64 columns) / n_out x (GEMM's threads), is at
# most this (``CPUBackend._nonzero_first``). 10,000 MNIST rows (41% of the columns nonzero per
# block), 2-core Xeon (AVX-512), both cores, ms, this product / OpenBLAS's GEMM: n_out 1024 40 /
# 50-58, 100 3.6-3.9 / 5.9-6.7, 50 4.1 / 3.8-4.9, 10 4.1 / 2.1-2.9 (the estimates 0.41, 0.53,
# 0.53, 2.7); float64 n_out 100 9.7 / 20.1. Nowhere beside BLAS on several threads: OpenBLAS's
# threads wait busily for 0.1 s after each product, and took a core from the parallel product
# meanwhile (8 ms instead of 3.7). So predict of two batches or more shares them among Numba's
# threads, BLAS on one thread in each (``inference.predict_batches_parallel``), and estimates
# for one thread.
NONZERO_PRODUCT_MAX_WORK = 0.6
# Rows a batch from which it pays: the seed network's first layer at batch 4, one thread, us,
# forward 7.2 -> 4.2, weight gradient 16.2 -> 8.7.
NONZERO_PRODUCT_MIN_ROWS = 4
NONZERO_SAMPLE_BLOCKS = 8  # blocks of 6 rows, spread over the input, the estimate's sample
# Where a training step's products would run BLAS on several threads (``BLAS_PARALLEL_MIN_FLOPS``),
# its first layer's two products over the nonzeros run on Numba's threads instead (each thread
# its own rows of the product), its batch is gathered there too, and the step's other products
# run on one BLAS thread, if the first layer does at least this share of the step's product
# FLOPs: the seed network (784 x 100, 93%), MNIST, step in us, GEMM on OpenBLAS's two threads ->
# the products on Numba's threads: batch 100, 418 -> 300-307; 128, 471-478 -> 364-374; 256,
# 849-850 -> 648-661; 512, 1150-1169 with the serial gather -> 1019-1037 with the parallel one;
# 2048, 5746-5851 -> 4389-4907 -> 3801-3907. Below the FLOPs, on one thread, the product stays
# serial: at batch 50 and 64 the parallel one lost 1-4% of the step (two thread launches a step).
# Not the wide network (43%): its other products need BLAS's threads, which wait busily on the
# cores the parallel product needs.
NONZERO_PARALLEL_MIN_SHARE = 0.75

# A training set with at most this fraction of nonzero inputs (``sparse_input.density``) has the
# CUDA step's first Dense layer timed on the device over each row's nonzeros against the GEMM, and
# the faster kept (``CUDABackend._nonzero_first``); a denser one takes the GEMM untimed. A half:
# where the CPU's estimate calls the nonzero product a draw (``FEW_ROWS_MAX_DENSITY``).
CUDA_NONZERO_MAX_DENSITY = 0.5

# CUDA launch geometry.
CUDA_THREADS_PER_BLOCK = 256

# Work (elements, or rows x columns) below which a pass runs its serial loop: waking TBB's workers
# and joining them costs a few microseconds, which a pass over fewer elements (a few ns each) does
# not win back (docs/performance.md, "Parallel kernels").
PARALLEL_MIN_ELEMENTS = 1 << 16     # the optimizer update (a flat pass, a few ns an element)
PARALLEL_MIN_ACTIVATION = 1 << 15   # bias + activation forward and backward (rows x columns)
PARALLEL_MIN_COLUMN_SUMS = 1 << 15  # the bias gradient's column sums (rows x columns)
PARALLEL_MIN_GATHER = 1 << 15       # the batch gather (rows x columns)
# Chunks of a flat pass start on multiples of this many elements (a 64-byte line of float32), so
# that two threads never write one cache line.
PARALLEL_ALIGN = 16


def _tbb_candidates():
    """Where pip's or conda's ``tbb`` puts its library, which the loader does not search in a
    virtual environment (pip writes it into ``<prefix>/lib``, outside every rpath)."""
    name = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform, "libtbb.so.12")
    return _library_candidates((name,))


def _library_candidates(names):
    """The existing files ``<prefix>/<subdir>/<name>`` over the interpreter's prefixes and the
    user base, in that order: where pip's and conda's wheels of shared libraries put them."""
    prefixes = [sys.prefix, sys.exec_prefix, sys.base_prefix, getattr(site, "USER_BASE", None)]
    subdirs = ("Library/bin", "Lib", "bin", "lib") if sys.platform == "win32" else ("lib",)
    seen = []
    for prefix in prefixes:
        for sub in subdirs:
            for name in names:
                if prefix and os.path.join(prefix, sub, name) not in seen:
                    seen.append(os.path.join(prefix, sub, name))
    return [path for path in seen if os.path.isfile(path)]


def _tbb_loads():
    """Whether Numba's TBB layer loads; if the loader cannot find TBB by itself, TBB is loaded
    first from where the ``tbb`` wheel put it (RTLD_GLOBAL: Numba's ``tbbpool`` then links to it).
    Only Numba's own checks decide: its module imports and its version test passes."""
    from numba.np.ufunc import parallel

    def check():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parallel._check_tbb_version_compatible()
                from numba.np.ufunc import tbbpool  # noqa: F401
            return True
        except (ImportError, OSError):
            return False

    if check():
        return True
    for path in _tbb_candidates():
        try:
            ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
        except OSError:
            continue
        if check():
            return True
    return False


def _parallel_plan():
    """(whether fastnn's kernels run in parallel, why), decided once at import.

    Parallel only on Numba's TBB layer: TBB's idle workers sleep after a short spin, so they
    leave the cores to BLAS, TBB survives a fork, and concurrent launches from several Python
    threads are safe. GNU OpenMP spins against BLAS and hangs forked children; workqueue aborts
    the process on concurrent launches (``predict`` from several threads).

    A threading layer the user chose (``NUMBA_THREADING_LAYER``/``numba.config.THREADING_LAYER``
    other than "default", or another ``THREADING_LAYER_PRIORITY``) is kept: fastnn then runs
    parallel kernels only where that choice puts TBB first (tbb, safe, threadsafe, forksafe, or a
    priority list that starts with tbb) and TBB loads, which is what Numba then loads too. For a
    choice of omp or workqueue, fastnn's kernels stay serial rather than bring the costs above
    into a training loop that the user did not ask to have them. Numba's config is never
    written: with TBB loadable, Numba's default order picks it by itself.
    """
    chosen = os.environ.get("FASTNN_PARALLEL", "").strip().lower()
    if chosen in ("0", "false", "no"):
        return False, "serial: FASTNN_PARALLEL=0"
    from numba.np.ufunc import parallel
    if parallel._is_initialized:  # another library launched Numba's threads first
        layer = numba.threading_layer()
        return layer == "tbb", f"{'parallel' if layer == 'tbb' else 'serial'}: Numba's threads already run on {layer}"
    layer = str(numba.config.THREADING_LAYER).lower()
    priority = list(numba.config.THREADING_LAYER_PRIORITY)
    first = (priority[0] if priority else None) if layer == "default" else \
        "tbb" if layer in ("safe", "threadsafe", "forksafe") else layer
    if first != "tbb":
        return False, f"serial: Numba's threading layer would be {first}"
    if not _tbb_loads():
        return False, "serial: TBB does not load (pip install tbb)"
    return True, "parallel: Numba's TBB threading layer"


PARALLEL, PARALLEL_REASON = _parallel_plan()

# MKL for the matrix products, where the ``mkl`` extra (Intel's ``mkl`` wheel) is installed. On a
# 2-core Xeon (AVX-512) its SGEMM beat SciPy's OpenBLAS by 1.05-1.45x on most of the seed and
# wide networks' shapes and lost 4x on one (256 x 1024 x 10 on two threads), and on AMD cores
# OpenBLAS is the faster library: so each Dense layer's products go to MKL only where timing both
# on that layer's shapes, on the machine it runs on, says so (``fastnn/blas.py``). MKL's
# ``cblas_sgemm`` and ``cblas_dgemm`` are called from compiled code as symbols that this module
# registers with LLVM under fastnn's own names (``fastnn_cblas_sgemm``), so that the compiled step
# stays in Numba's cache (the addresses are registered again at each import) and the library's
# symbols are not made global for other libraries. FASTNN_BLAS=openblas leaves MKL unloaded;
# =mkl gives MKL every product that may run on it (a call on one thread) without timing; unset
# (or "auto"), the timing decides.
BLAS_CHOICES = ("auto", "openblas", "mkl")
BLAS_CHOICE = os.environ.get("FASTNN_BLAS", "auto").strip().lower() or "auto"
MKL_NAMES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.dylib", "mkl_rt.3.dll", "mkl_rt.2.dll")
MKL_THREADING_SEQUENTIAL = 1  # MKL_Set_Threading_Layer's code for no threads (mkl_service.h)
# Whether fastnn's MKL runs on its sequential layer (``_mkl_plan``).
MKL_SEQUENTIAL = False


def _loaded(path):
    """Whether the library at ``path`` is in the process already (loaded by another library)."""
    noload = getattr(os, "RTLD_NOLOAD", None)
    if noload is None:
        return False
    try:
        ctypes.CDLL(path, mode=noload)
        return True
    except OSError:
        return False


def _mkl_plan():
    """(the loaded MKL library or None, why): MKL's single dynamic library, where pip or conda put
    it, loaded privately (RTLD_LOCAL), its two GEMMs and its per-thread thread count registered
    with LLVM as fastnn's symbols."""
    if BLAS_CHOICE not in BLAS_CHOICES:
        raise ValueError(f"FASTNN_BLAS must be one of {', '.join(BLAS_CHOICES)}, got {BLAS_CHOICE!r}")
    if BLAS_CHOICE == "openblas":
        return None, "OpenBLAS only: FASTNN_BLAS=openblas"
    for path in _library_candidates(MKL_NAMES):
        try:
            shared = _loaded(path)
            lib = ctypes.CDLL(path)
            addresses = {name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                         for name in ("cblas_sgemm", "cblas_dgemm", "MKL_Set_Num_Threads_Local")}
            lib.MKL_Set_Num_Threads_Local.restype = ctypes.c_int
            lib.MKL_Set_Num_Threads_Local.argtypes = [ctypes.c_int]
            lib.MKL_Set_Threading_Layer.restype = ctypes.c_int
            lib.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            continue
        # MKL runs only products on one thread (``fastnn/blas.py``), so its sequential layer:
        # then MKL never loads Intel OpenMP's runtime (which its default layer loads at the first
        # product, even on one thread), and a second copy of it in the process (a conda build of
        # PyTorch or NumPy) cannot stop the process ("OMP: Error #15"). Chosen before MKL's first
        # call fixes its layer, and only in a copy of MKL that fastnn loaded: a copy that another
        # library loaded first keeps the layer that library chose.
        global MKL_SEQUENTIAL
        sequential = MKL_THREADING_SEQUENTIAL
        MKL_SEQUENTIAL = not shared and lib.MKL_Set_Threading_Layer(sequential) == sequential
        import llvmlite.binding as llvm
        for name, address in addresses.items():
            llvm.add_symbol("fastnn_" + name, address)
        return lib, f"MKL ({path}) where timing each Dense layer's products picks it" \
            if BLAS_CHOICE == "auto" else f"MKL ({path}) for every product on one thread: FASTNN_BLAS=mkl"
    return None, "OpenBLAS only: the mkl extra is not installed (pip install fastnn[mkl])"


MKL_LIBRARY, BLAS_REASON = _mkl_plan()
MKL = MKL_LIBRARY is not None   # a module constant: without MKL, its calls compile out
# Which passes run in parallel where PARALLEL: module constants that Numba prunes on, so a pass
# that is off compiles no parallel kernel. Each parallel kernel costs cold-start time, more the
# deeper its caller sits (LLVM optimizes a callee again in every compiled caller): the optimizer's
# added about 1 s of CPU time to the seed network's first fit on an empty cache, the activations'
# 3.3 s, the column sums' 0.6 s and the gather's 0.8 s (2 cores, loaded machine). And on a
# 2-core AMD EPYC none paid: the passes outside the products are bound by memory bandwidth there
# (Adam over the wide network 1.01 ms serial, 1.03 ms on two threads), and Adam's parallel pass
# crashed a rank under MPI (``distributed.init`` refuses the pair). So FASTNN_PARALLEL names the
# passes to run in parallel for every model ("optimizer,activations,column_sums,gather", or
# "all"; "1" is "optimizer"), where cores have bandwidth to spare, for long runs of wide networks,
# whose compile is paid once and cached; "0" turns TBB off altogether.
PARALLEL_PASSES = ("optimizer", "activations", "column_sums", "gather")
_chosen = os.environ.get("FASTNN_PARALLEL", "").replace(" ", "").lower()
_chosen = PARALLEL_PASSES if _chosen == "all" else ("optimizer",) if _chosen in ("1", "true", "yes") \
    else tuple(_chosen.split(",")) if _chosen else ()
PARALLEL_PASSES_CHOSEN = PARALLEL and bool(_chosen)
PARALLEL_OPTIMIZER = PARALLEL and "optimizer" in _chosen
PARALLEL_ACTIVATIONS = PARALLEL and "activations" in _chosen
PARALLEL_COLUMN_SUMS = PARALLEL and "column_sums" in _chosen
PARALLEL_GATHER = PARALLEL and "gather" in _chosen
# Without FASTNN_PARALLEL, one pass runs in parallel: Adam over a model of at least this many
# parameters whose products run BLAS on one thread (``parallel_optimizer``). The model chooses it
# when it trains, through an argument of its step, not a constant, so that a smaller model's step
# never compiles the parallel kernel (its cold start stays as it was) and a larger one's compiles
# it once. Adam is bound by its square
# root and division on an Intel Xeon (AVX-512, 2 cores), serial and on two threads: 10.5 and 5.5
# ms over the 12.8M parameters of a 50,000-256-20 bag-of-words network, 1.02 and 0.53 ms over the
# wide network's 1.86M, 163 and 66 us over 300,000, 29 and 22 us over the seed network's 84,060.
# Bound by memory on the AMD EPYC, it neither gains nor loses there.
PARALLEL_OPTIMIZER_MIN_PARAMS = 1 << 18


def parallel_optimizer(n_params, step_flops):
    """Whether a model of ``n_params`` parameters, whose training step's matrix products do
    ``step_flops`` of work, runs Adam's parallel pass (in a parallel build, ``PARALLEL``): every
    model where FASTNN_PARALLEL names the optimizer, none where it names other passes only.
    Without it: a model of at least ``PARALLEL_OPTIMIZER_MIN_PARAMS`` whose products run BLAS
    on one thread (``step_flops`` below ``BLAS_PARALLEL_MIN_FLOPS``, ``threading.blas_threads_for``),
    as a bag-of-words network's do (its first layer skips the zeros). Where BLAS runs on several,
    its threads wait busily between products on the cores the pass would take: in the wide
    network's step on two threads, Adam took 1.43-1.50 ms serial and 1.69-1.83 ms in parallel on
    one Xeon (``benchmarks/scaling.py``), though 1.11 against 0.73 ms on another."""
    if PARALLEL_PASSES_CHOSEN:
        return PARALLEL_OPTIMIZER
    return PARALLEL and n_params >= PARALLEL_OPTIMIZER_MIN_PARAMS and step_flops < BLAS_PARALLEL_MIN_FLOPS


def _kernel_sources_stamp():
    """A hash of every kernel module's source.

    Numba's cache checks only the source file of the function it loads, not the files of
    the functions that it calls (numba#6845): after an edit to ``losses.py``, the cached
    ``network.train_batches`` would still run the old loss. Stamping each fastnn kernel's
    cache entry with all kernel sources makes any change recompile everything that may
    depend on it.
    """
    root = pathlib.Path(__file__).parent
    digest = hashlib.sha256(_build_tag().encode())
    for path in sorted(root.glob("kernels/*.py")) + [root / "config.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _build_tag():
    """What tells this process's build of the kernels from another's in one cache: the serial
    build, or the parallel passes chosen (``FASTNN_PARALLEL``); and whether MKL is loaded.

    It names the cache files, not only their stamp: with the stamp alone, a serial and a parallel
    process sharing a cache write data files of the same names (Numba numbers them per index),
    and one that reads its index while the other rewrites a data file loads the other build's
    machine code, a parallel build into a process that never started Numba's threads.
    """
    mkl = "-mkl" if MKL else ""  # (a build with MKL's calls needs its symbols when it loads)
    if not PARALLEL:  # (a kernel's ``parallel=True`` builds in parallel wherever PARALLEL is)
        return "serial" + mkl
    flags = (PARALLEL_OPTIMIZER, PARALLEL_ACTIVATIONS, PARALLEL_COLUMN_SUMS, PARALLEL_GATHER)
    return "parallel" + "".join(str(int(f)) for f in flags) + mkl


def _install_cache_locators():
    """Put fastnn's stamp in front of Numba's cache locators, for fastnn's functions only, and its
    build tag in their file names (``_build_tag``)."""
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if impl is None or not hasattr(impl, "_locator_classes"):
        return  # an unknown Numba layout: fall back to Numba's own invalidation
    stamp, tag = _kernel_sources_stamp(), _build_tag()
    checked = set()  # the cache folders found writable

    class StampedLocator:
        @classmethod
        def from_function(cls, py_func, py_file):
            if not getattr(py_func, "__module__", "").startswith(__package__ + "."):
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), stamp)

        def get_disambiguator(self):
            return f"{super().get_disambiguator()}_{tag}"

        def ensure_cache_path(self):
            # Numba checks that the folder is writable by creating a file in it, for every kernel
            # at import (about 200 of them: 5 ms of ``import fastnn``); once per folder is enough.
            path = self.get_cache_path()
            if path not in checked:
                super().ensure_cache_path()
                checked.add(path)

    if not any(getattr(c, "_fastnn_stamp", False) for c in impl._locator_classes):
        impl._locator_classes[:0] = [type("Fastnn" + c.__name__, (StampedLocator, c), {"_fastnn_stamp": True})
                                     for c in list(impl._locator_classes)]


if CACHE:
    _install_cache_locators()


KERNEL_OPTIONS = dict(fastmath=FASTMATH, error_model="numpy")  # (for an ``overload``'s jit_options)


def c_entry(fn, signature):
    """``fn`` compiled with the package's flags as a C function of ``signature``, cached: an entry
    that compiled code calls by address (``kernels/dense.py: nonzero_entry``)."""
    return numba.cfunc(signature, cache=CACHE, **KERNEL_OPTIONS)(fn)


def kernel(fn=None, *, inline=False, parallel=False):
    """Compile ``fn`` with the package's flags (``njit``, cached, fastmath without nnan/ninf).

    ``parallel=True``: a parallel build (``prange``) where ``PARALLEL`` (Numba's TBB layer, see
    ``_parallel_plan``), else serial (``prange`` runs as ``range``). Only leaf kernels over rows,
    columns or a flat buffer are parallel, each a function of its own that calls the serial
    kernel on its chunks below a size threshold (``PARALLEL_MIN_*``); the walkers and
    ``train_batches`` stay serial: a parallel build of them would make copies of the reshaped
    views of the flat buffers, and the in-place updates would be lost. Why not OpenMP: its idle
    threads spin and take the cores from BLAS (784-256-256-10 trained at 28k instead of 74k
    samples/s), and after GNU OpenMP has run, a fork-based process pool in the user's program hangs.

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
        if parallel and inline:
            raise ValueError("a parallel kernel cannot be inlined: its caller would run it serially")
        dispatcher = numba.njit(fastmath=FASTMATH, error_model="numpy", nogil=True,
                                parallel=bool(parallel and PARALLEL),
                                inline="always" if inline else "never")(f)
        if CACHE and hasattr(dispatcher, "enable_caching"):
            dispatcher._cache = _CacheOnFirstUse(f)
            dispatcher.compile = _compile_once(dispatcher)
        return dispatcher
    return wrap if fn is None else wrap(fn)


def _compile_once(dispatcher):
    """``dispatcher.compile`` for processes that share one cache (MPI ranks, joblib or pytest-xdist
    workers, a process pool): one of them compiles a kernel for a signature while the others wait
    for it, then load its work from the cache rather than compile it again. Each holds the lock
    file of the (function, signature) pair from its cache lookup to its save.

    The locks nest as calls do (a kernel's compile compiles its callees), so two processes could
    only wait on each other through a recursive call. They are taken under Numba's compiler lock,
    which lets one thread of a process compile at a time: the set of held locks needs no lock of
    its own, and a thread never waits on a file its own process holds."""
    plain = dispatcher.compile

    def compile(sig):
        with global_compiler_lock:
            args, _ = sigutils.normalize_signature(sig)
            if tuple(args) in dispatcher.overloads:  # compiled or loaded before: no file to touch
                return plain(sig)
            with _held_lock(dispatcher._cache.lock_path(args)):
                return plain(sig)
    return compile


_held_locks = set()  # the lock files this process holds, read and written under Numba's compiler lock


@contextlib.contextmanager
def _held_lock(path):
    """``file_lock(path)``, reentrant within the process; none for None or a folder this process
    cannot write (a read-only cache, where nothing is saved). Under Numba's compiler lock only,
    which keeps the other threads of the process out."""
    if path is None or path in _held_locks or not os.access(os.path.dirname(path), os.W_OK):
        yield
        return
    with file_lock(path):
        _held_locks.add(path)
        try:
            yield
        finally:
            _held_locks.discard(path)


@contextlib.contextmanager
def file_lock(path):
    """An exclusive lock on the file ``path`` between processes (POSIX ``flock``; elsewhere none),
    held until the block ends: closing the file releases it."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


class _CacheOnFirstUse:
    """Numba's on-disk cache of one kernel (``caching.FunctionCache``, what ``njit(cache=True)``
    sets up), made when its dispatcher first reads it, at its first call, instead of at import:
    setting it up (finding its folder and index, stamping the source) costs about 0.1 ms a
    kernel, and ``import fastnn`` defines some 200 kernels, most of which a program never calls."""

    def __init__(self, py_func):
        self._fastnn_py_func = py_func
        self._fastnn_cache = None

    def __getattr__(self, name):
        if name.startswith("__") or name.startswith("_fastnn"):
            raise AttributeError(name)
        return getattr(self._fastnn_made(), name)

    def _fastnn_made(self):
        if self._fastnn_cache is None:
            self._fastnn_cache = caching.FunctionCache(self._fastnn_py_func)
        return self._fastnn_cache

    def _fastnn_index(self):
        try:
            return self._fastnn_made()._cache_file._index_path
        except Exception:  # no cache folder found, or a Numba without these attributes
            return None

    def lock_path(self, args):
        """The lock file of this function's kernel for the argument types ``args``, beside the
        function's index (``_compile_once``); None without one."""
        index = self._fastnn_index()
        if index is None:
            return None
        return f"{index}-{hashlib.blake2b(str(args).encode(), digest_size=8).hexdigest()}.lock"

    def load_overload(self, sig, target_context):
        """Numba's load, and what it forgets: the start-up of its threads travels with a kernel
        (``reload_init``) but is not put back on the library it loads, so a kernel compiled in
        this process that calls a parallel kernel loaded from the cache is saved without it. A
        later process that loads the caller alone then runs the parallel loop with no threads
        started: SIGSEGV (numba#8578, numba#9938; the crash of Adam's parallel pass under asv's
        forkserver, docs/performance.md)."""
        cres = self._fastnn_made().load_overload(sig, target_context)
        reload_init = getattr(cres, "reload_init", None)
        if reload_init and hasattr(cres.library, "_reload_init"):
            cres.library._reload_init.update(reload_init)
        return cres

    def save_overload(self, sig, data):
        """Numba's save, one process at a time per function. Numba names a new data file by
        counting the entries of the index it read, so two processes saving kernels of one
        function at once (two signatures: ``_compile_once`` locks one) would write the same file,
        and one would later load the other's machine code (numba#4807: crashes)."""
        index = self._fastnn_index()
        with _held_lock(None if index is None else index + ".lock"):
            return self._fastnn_made().save_overload(sig, data)
