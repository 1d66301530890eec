"""CUDA kernels, written with ``numba.cuda``: the twins of ``fastnn.kernels`` where the training
step needs one, named after the CPU module they mirror.

- Twins, same names and contracts: ``activations``, ``dense``, ``dropout``, ``merge``,
  ``losses``, ``metrics``, ``optimizers``, ``regularizers``, ``dispatch`` (one layer of any
  kind), ``network`` (the walkers and the training step as a fixed sequence of launches, which
  ``runner.StepRunner`` replays, as CUDA graphs where it can) and ``inference`` (predict's and
  evaluate's batches); ``embedding`` holds the twins of both ``kernels.embedding`` and
  ``kernels.masking``.
- Without a module of their own here: ``kernels.table`` (the layout, read on the host by both
  targets), ``kernels.schedules`` (compiled into ``optimizers`` from the CPU source),
  ``kernels.batchnorm`` and ``kernels.layernorm`` (functions of one feature or one row, run
  from the CPU source one thread each by ``EachIndex``; their launchers are in ``dispatch``),
  ``kernels.checks`` and ``kernels.distributed`` (host-side or CPU-only concerns).
- Only here: ``buffers`` (``fill_zero``), ``runner``, ``backend.CUDABackend``, which owns a model's
  device arrays, and ``host`` (its checks and arrays on the host).

Kernels and their host-side launchers take outputs first, then inputs, then sizes; every array
is a flat 1-D device array, so that one compiled kernel serves every shape. Where the element
math is the CPU's own source, ``device_twin`` compiles it as a device function, and
``EachIndex`` runs a CPU kernel of one index over every index.

Kernels are built per dtype (float32 or float64) by cached factories, so that every
constant in them has the array's type: Numba types ``float32 * 2.0`` as float64, and the
CUDA simulator, which runs kernels as Python, would hide such a promotion.

Importing this package does not import ``numba.cuda``: ``CUDABackend`` checks for it first,
so that a missing package or GPU is a clear error, not an ImportError from deep inside.
"""
import os

from ..config import CUDA_THREADS_PER_BLOCK

# Elementwise kernels: threads per block (fewer when there are fewer elements).
THREADS = CUDA_THREADS_PER_BLOCK
# Single-block reductions (loss, accuracy): the most threads, a power of two, and the size of
# their shared-memory scratch.
REDUCE_THREADS = CUDA_THREADS_PER_BLOCK

# SGEMM tiles, (BM, BN, BK, TM, TN): a block computes a BM x BN tile of C, stepping through K
# BK at a time in shared memory; each of its (BM/TM) * (BN/TN) threads keeps a TM x TN tile
# of C in registers. The large tile has the most reuse per load; the small ones leave
# enough blocks to keep more of the GPU busy when a matrix is small (``dense.choose_tile``).
# The choice among them (``dense.choose_tile``) follows a tile sweep on an H200
# (benchmarks/gpu.py --tiles).
TILE_128 = (128, 128, 8, 8, 8)
TILE_64 = (64, 64, 16, 4, 4)
TILE_16 = (16, 16, 16, 2, 2)
TILE_8 = (8, 8, 16, 2, 2)
TILES = (TILE_128, TILE_64, TILE_16, TILE_8)
# Blocks per multiprocessor below which a tile is passed over for a smaller one.
TILE_MIN_FILL = {TILE_128: 1.0, TILE_64: 0.25, TILE_16: 1.0, TILE_8: 0.0}
# Streaming multiprocessors assumed when the device does not say (the simulator): an H100's.
DEFAULT_SM_COUNT = 132

# Training steps per captured CUDA graph: one graph launch then replaces this many steps of
# kernel launches. FASTNN_CUDA_GRAPHS=0 turns graphs off (plain launches every step).
GRAPH_STEPS = 16
USE_GRAPHS = os.environ.get("FASTNN_CUDA_GRAPHS", "1") not in ("0", "false", "no")

# The training set is uploaded once per fit when it takes at most this fraction of the free
# device memory; otherwise it is streamed to the device a chunk at a time.
DATASET_MEMORY_FRACTION = 0.5

# Layout of the int64 ``control`` array that the training-step kernels share on the device
# (a captured graph replays fixed arguments, so what changes from step to step lives here):
# the index of the batch being trained, the first batch whose loss was not finite (-1 while
# none was), after which no update is applied, the training step of the batch being trained
# (Dropout's masks depend on it; the step's gather kernel writes it), and the step that batch 0
# of this call would have (C_STEP = C_STEP0 + C_BATCH).
C_BATCH, C_BAD, C_STEP, C_STEP0 = range(4)
N_CONTROL = 4

# No fastmath: it would allow approximate division, square root and exp (results would
# leave float32 rounding of the CPU's), flush denormals, and assume no NaN/Inf (a diverging
# loss would go unseen, as on the CPU side; see config.FASTMATH).
# No on-disk cache: the kernels are closures built per dtype, tile and layout, which
# numba-cuda's cache tells apart only by pickling their cells (device functions among them),
# and it checks the source of the kernel's own file, not of the device functions it inlines
# from the others (numba#6845): a stale kernel must never run. Each process compiles the
# kernels it uses at their first launch instead.
JIT_OPTIONS = {"fastmath": False, "cache": False}


def kernel(fn=None, *, device=False):
    """``numba.cuda.jit`` with the package's options; ``device=True`` for device functions."""
    from numba import cuda

    def wrap(f):
        return cuda.jit(device=device, **JIT_OPTIONS)(f)
    return wrap if fn is None else wrap(fn)


_TWINS = {}


def device_twin(cpu_kernel, **callees):
    """``cpu_kernel``'s own Python source compiled as a CUDA device function: one source for both
    targets, as for Dropout's hash and the learning-rate schedules. The CPU kernels it calls are
    bound to their own device twins (made the same way, once each); ``callees`` (by global
    name) replaces one of them with a device function of the caller's, such as an atomic add."""
    import types
    from numba.core.registry import CPUDispatcher
    if not callees and cpu_kernel in _TWINS:
        return _TWINS[cpu_kernel]
    fn = cpu_kernel.py_func
    scope = dict(fn.__globals__)
    for name in fn.__code__.co_names:
        if name not in callees and isinstance(scope.get(name), CPUDispatcher):
            scope[name] = device_twin(scope[name])
    scope.update(callees)
    twin = kernel(types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__),
                  device=True)
    if not callees:
        _TWINS[cpu_kernel] = twin
    return twin


def _each_index(count, args):
    """``EachIndex``'s kernel; ``cuda`` and ``device`` are the globals it is built with."""
    i = cuda.grid(1)  # noqa: F821
    if i < count:
        device(i, *args)  # noqa: F821


class EachIndex:
    """A CUDA kernel of one thread per index i < ``count`` that runs the CPU kernel
    ``cpu_kernel(i, *args)`` from its own source (``device_twin``): the twin of a CPU loop
    ``for i in range(count): cpu_kernel(i, *args)``, for the kinds whose kernels are written as
    one row's or one feature's function (BatchNorm, LayerNormalization), so they need no CUDA
    module of their own. ``each(count, *args, plan=None)`` launches it (or adds it to ``plan``);
    the arguments travel as one tuple, which Numba types member by member."""

    def __init__(self, cpu_kernel):
        self.cpu_kernel = cpu_kernel
        self._kernel = None

    @property
    def kernel(self):
        if self._kernel is None:  # built at first use, so that importing compiles nothing
            import types
            from numba import cuda
            # Globals, not a closure: the simulator swaps a kernel's global ``cuda`` for its own.
            scope = {"cuda": cuda, "device": device_twin(self.cpu_kernel)}
            self._kernel = kernel(types.FunctionType(_each_index.__code__, scope, "each_index"))
        return self._kernel

    def __call__(self, count, *args, plan=None):
        # ``args``' scalars are Python's, as every launch's (the launchers cast table entries), so
        # that a step's plan keys (``Plan.key``) are alike and each kernel compiles once.
        launch(plan, self.kernel, *blocks(int(count)), int(count), args)


class Plan:
    """Kernel launches recorded in order, to be replayed as one training step.

    Every launcher in this package takes ``plan=None``: with a plan it appends its launches
    (a kernel configured for grid, block and the plan's stream, and its arguments) instead of
    running them, so a step is built once and replayed without rebuilding arguments, or
    captured into a CUDA graph (``runner.StepRunner``).
    """

    def __init__(self, stream=0):
        self.stream = stream
        self.launches = []
        self._key = None

    def add(self, kernel_, grid, block, args):
        # The simulator's kernel[grid, block] configures the kernel object itself and returns
        # it, so a configuration cannot be kept there: it is made again at each run.
        configured = None if _simulated() else _configure(kernel_, grid, block, self.stream)
        self.launches.append((configured, args, (kernel_, grid, block)))

    def run(self):
        for configured, args, (kernel_, grid, block) in self.launches:
            (configured or _configure(kernel_, grid, block, self.stream))(*args)

    def key(self):
        """What a captured graph of this plan depends on: kernels, geometry, device pointers, scalars."""
        if self._key is None or self._key[0] != len(self.launches):
            self._key = (len(self.launches), tuple((id(k), g, b, tuple(_arg_key(a) for a in args))
                                                   for _, args, (k, g, b) in self.launches))
        return self._key[1]


def _arg_key(a):
    if isinstance(a, tuple):  # ``EachIndex``'s arguments
        return tuple(_arg_key(x) for x in a)
    ptr = getattr(a, "device_ctypes_pointer", None)
    if ptr is not None:
        return ("ptr", ptr.value, a.size)
    try:
        hash(a)
    except TypeError:  # an array without a device pointer (the simulator's)
        return ("id", id(a))
    return a


def check_code(code, last, what):
    """A ValueError unless 0 <= ``code`` <= ``last``: device code cannot raise, so every launcher
    checks the codes it passes on the host, where the CPU kernels' dispatch has its error branch."""
    if not 0 <= int(code) <= last:
        raise ValueError(f"unknown {what} code {int(code)} (valid: 0..{last})")


def launch(plan, kernel_, grid, block, *args):
    """Run ``kernel_[grid, block](*args)`` now, or append it to ``plan``."""
    if plan is None:
        _configure(kernel_, grid, block, 0)(*args)
    else:
        plan.add(kernel_, grid, block, args)


def _simulated():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def _configure(kernel_, grid, block, stream):
    """``kernel_[grid, block, stream]``, without numba-cuda's warning about grids under 128
    blocks: the loss kernel is one block by design, and a small network's layers are small."""
    import warnings
    with warnings.catch_warnings():
        # By its message: numba-cuda raises its own NumbaPerformanceWarning class
        # (numba.cuda.core.errors), not numba.core.errors' one, and versions differ.
        warnings.filterwarnings("ignore", message=r".*Grid size \d+ will likely result in GPU under-utilization")
        return kernel_[grid, block, stream]


def reduce_threads(size):
    """Threads of a block that reduces ``size`` elements: a power of two (``block_sum`` halves
    it), at most REDUCE_THREADS, and no more than the elements need (the simulator runs every
    thread in Python, idle or not)."""
    t = 1
    while t < size and t < REDUCE_THREADS:
        t *= 2
    return t


def blocks(size, threads=THREADS):
    """(grid, block) for one thread per element of ``size``, blocks no larger than needed
    (a block of a few threads still takes a warp on the GPU, but the simulator, which runs
    every thread in Python, is spared the idle ones)."""
    block = min(threads, max(1, size))
    return max(1, -(-size // block)), block
