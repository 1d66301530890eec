"""Data-parallel training over MPI: the same script on one process or on many.

::

    import fastnn
    rank, size = fastnn.distributed.init()      # (0, 1) outside an MPI job
    model = fastnn.MLP([...], seed=0).compile("cross_entropy", fastnn.Adam(1e-3))
    model.fit(x, y, batch_size=256)             # 256 rows per step in all, split over the ranks
    if rank == 0:
        model.save("model.npz")

    mpirun -n 4 python train.py

After ``init()`` in a job of several processes, ``fit`` and ``train_on_batch`` treat
``batch_size`` as the global batch: every rank holds the full arrays and the same shuffled
order (rank 0's model state and shuffle generator are sent to all at the start of each call),
trains on its contiguous share of each batch's rows, and the gradients are summed with an
``MPI_Allreduce`` inside the compiled step (``fastnn.kernels.distributed``), so every rank
applies the same update and the weights equal those of one process training with the same
batch size (up to the order of floating-point additions). ``evaluate`` and the validation
metrics split the rows over the ranks and sum the results; the logs in ``History`` are
identical on every rank. Only rank 0 prints progress and runs the callbacks that write files
(``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``).

BatchNormalization normalizes each rank's share with its own batch statistics (as PyTorch's
DistributedDataParallel without SyncBatchNorm), so a model with it does not equal one process;
the running statistics are averaged over the ranks at the end of each epoch. ``predict`` is not
split: every rank predicts all the rows it is given.

Before training, the ranks agree on everything that decides how many collective calls each
makes (``epochs``, ``batch_size``, ``initial_epoch``, ``shuffle``, the validation rows, the
model's size, loss and metrics, and the data itself, by a checksum of all its bytes): where they
differ, a ValueError on every rank lists each rank's value. ``verbose`` and the callbacks may
differ: a per-batch callback on one rank has every rank go batch by batch, and a callback that
sets ``stop_training`` on one rank stops every rank at the end of that epoch.

A ValueError or TypeError in the checks of a call, on any rank, is raised on every rank
(naming the rank); any other exception on one rank, inside a training call, ends the whole job
with ``MPI_Abort`` after printing its traceback, rather than leaving the other ranks waiting.

The training loop meets MPI only through this module's functions (``begin_call``,
``rank_zero_first``, ``any_rank``, ``sum_over_ranks``, ``share``, ``gather_rows``), each a no-op
outside MPI.

Needs ``pip install "fastnn[mpi]"`` (mpi4py, numba-mpi and the Open MPI wheel, which provides
``mpirun``); a system Open MPI or MPICH works too. See docs/distributed.md.
"""
import sys
import traceback
import zlib
from collections import namedtuple
from contextlib import contextmanager

import numpy as np

World = namedtuple("World", ["comm", "rank", "size", "handles"])
_world = None


def init():
    """Join the MPI job this process was started in (``mpirun``, ``srun``); returns (rank, size).

    Outside a job of several processes, or without mpi4py installed, returns (0, 1) and fastnn
    trains as usual. Calling it again returns the same answer.
    """
    global _world
    if _world is not None:
        return _world.rank, _world.size
    try:
        from mpi4py import MPI
    except ImportError:
        return 0, 1
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return 0, 1
    from .config import PARALLEL_ACTIVATIONS, PARALLEL_COLUMN_SUMS, PARALLEL_GATHER, PARALLEL_OPTIMIZER
    if PARALLEL_OPTIMIZER or PARALLEL_ACTIVATIONS or PARALLEL_COLUMN_SUMS or PARALLEL_GATHER:
        # Seen: a rank's process crashes (SIGSEGV) in the first step with Adam's TBB pass under
        # Open MPI; until that is understood, MPI jobs run the serial passes.
        raise RuntimeError("fastnn's parallel passes (FASTNN_PARALLEL) do not run under MPI yet: start the job "
                           "with FASTNN_PARALLEL unset or 0 (each rank is a process of its own already)")
    _load_mpi_symbols()
    handles = {"comm": MPI._handleof(comm), "sum": MPI._handleof(MPI.SUM), "in_place": int(MPI.IN_PLACE),
               np.dtype(np.float32): MPI._handleof(MPI.FLOAT), np.dtype(np.float64): MPI._handleof(MPI.DOUBLE)}
    _world = World(comm, comm.Get_rank(), comm.Get_size(), handles)
    return _world.rank, _world.size


def _load_mpi_symbols():
    """Make the MPI library's symbols visible to Numba's linker (mpi4py loads the library with
    local symbols): the compiled step calls ``MPI_Allreduce`` by name. numba-mpi finds the
    library's path."""
    import llvmlite.binding
    try:
        from numba_mpi.common import LIB
    except ImportError as error:
        raise ImportError("fastnn.distributed needs numba-mpi: pip install \"fastnn[mpi]\"") from error
    llvmlite.binding.load_library_permanently(LIB)


def rank():
    """This process's rank in the job (0 outside MPI or before ``init``)."""
    return 0 if _world is None else _world.rank


def size():
    """The number of processes in the job (1 outside MPI or before ``init``)."""
    return 1 if _world is None else _world.size


def world():
    """The job as fastnn uses it (``World``), or None when training runs in one process."""
    return _world


def barrier():
    """Wait until every rank gets here (nothing to wait for outside MPI)."""
    if _world is not None:
        _world.comm.Barrier()


def collective(dtype, size_):
    """The ``kernels.distributed.Collective`` for a step over parameters of ``dtype`` and
    ``size_`` values, or None outside MPI."""
    if _world is None:
        return None
    from .kernels.distributed import Collective
    if size_ >= 2 ** 31:
        raise ValueError(f"under MPI a model can have at most 2**31 - 1 parameter values, this one has {size_}")
    h = _world.handles
    return Collective(_world.rank, _world.size, h["comm"], h["sum"], h[np.dtype(dtype)],
                      h[np.dtype(np.float64)], h["in_place"], np.zeros(2))


def share(n):
    """[lo, hi) of the rows that this rank takes of ``n`` (contiguous; all of them outside MPI)."""
    if _world is None:
        return 0, n
    return n * _world.rank // _world.size, n * (_world.rank + 1) // _world.size


def sum_over_ranks(values):
    """The elementwise sum over the ranks of a float64 array (the array itself outside MPI)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if _world is None:
        return values
    out = np.empty_like(values)
    _world.comm.Allreduce(values, out)
    return out


def gather_rows(part):
    """The ranks' parts, ``share``'s rows of one array, stacked in rank order on every rank."""
    if _world is None:
        return part
    return np.concatenate(_world.comm.allgather(np.ascontiguousarray(part)), axis=0)


def agree(check, *args, **kwargs):
    """``check(*args, **kwargs)`` on every rank; a ValueError or TypeError on any rank is raised
    on every rank, with the first failing rank's message, so that no rank goes on to wait for
    the others in a collective call. Returns ``check``'s result."""
    try:
        result, error = check(*args, **kwargs), None
    except (ValueError, TypeError) as exc:
        if _world is None:
            raise
        result, error = None, exc
    if _world is None:
        return result
    errors = _world.comm.allgather(None if error is None else (type(error).__name__, str(error)))
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        r, (kind, message) = failed[0]
        if error is not None and r == _world.rank:
            raise error
        raise (TypeError if kind == "TypeError" else ValueError)(f"on rank {r}: {message}")
    return result


def check_same_settings(**settings):
    """Under MPI, that every rank passed the same value for each of ``settings`` (plain values
    compared with ``==``): those that decide how many collective calls a training call makes
    (epochs, batch size, validation rows, the model's size, ...). A ValueError on every rank,
    naming each rank's value, rather than a rank waiting forever in an allreduce that another
    rank never calls."""
    if _world is None:
        return
    theirs = _world.comm.allgather(settings)
    for name in settings:
        values = [t[name] for t in theirs]
        if any(v != values[0] for v in values):
            listing = ", ".join(f"rank {r}: {v!r}" for r, v in enumerate(values))
            raise ValueError(f"under MPI the ranks must agree on {name}, but they differ ({listing})")


def check_same_data(**arrays):
    """Under MPI, that every rank was given the same arrays (each rank passes the full data,
    not its own shard): the shape, dtype and a CRC-32 of all the bytes of each, so that a
    difference in any row is seen (two different arrays share a CRC-32 by chance once in 2**32).
    It costs about 80 ms for MNIST's 60000 x 784 float32 images, once per training call."""
    if _world is None:
        return
    mine = {name: (arr.shape, arr.dtype.str, _crc32(arr)) for name, arr in arrays.items()}
    theirs = _world.comm.allgather(mine)
    for name in arrays:
        if any(t[name] != theirs[0][name] for t in theirs):
            shapes = ", ".join(f"rank {r}: {t[name][0]}" for r, t in enumerate(theirs))
            raise ValueError(f"under MPI every rank must pass the same {name} (the full data; fastnn takes each "
                             f"rank's share of every batch itself), but the ranks' {name} differ ({shapes})")


def _crc32(arr):
    """A CRC-32 of all the bytes of a dense array, or of a CSR matrix's three arrays."""
    parts = [arr.data, arr.indices, arr.indptr] if hasattr(arr, "indptr") else [arr]
    crc = 0
    for part in parts:
        crc = zlib.crc32(np.ascontiguousarray(part).reshape(-1).view(np.uint8), crc)
    return crc


def any_rank(flag):
    """True on every rank when ``flag`` is true on at least one (``bool(flag)`` outside MPI)."""
    return bool(sum_over_ranks([float(bool(flag))])[0] > 0)


def broadcast(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself outside MPI)."""
    return obj if _world is None else _world.comm.bcast(obj, root=0)


@contextmanager
def fail_together():
    """Around a block that every rank runs in step: an exception on one rank (other than a
    FloatingPointError, which the summed loss raises on every rank at once) prints its traceback
    and ends the job with MPI_Abort, instead of leaving the other ranks waiting forever."""
    if _world is None:
        yield
        return
    try:
        yield
    except FloatingPointError:
        raise
    except BaseException:
        sys.stderr.write(f"fastnn.distributed: rank {_world.rank} of {_world.size} failed; ending the job:\n"
                         + traceback.format_exc())
        sys.stderr.flush()
        _world.comm.Abort(1)
        raise


# ---- a model's training call under MPI: everything that differs from one process ------------
# (The training loop, ``fastnn.trainer``, calls these at its fixed points; outside MPI each one
# does nothing, or runs its function once.)

def check_model(model):
    """Under MPI, that ``model`` can train distributed: on the CPU, with parameters that MPI can
    sum (``collective``); a ValueError otherwise. Nothing outside MPI."""
    if _world is None:
        return
    if model.device != "cpu":
        raise ValueError(f"under MPI fastnn trains on the CPU only, this model is on {model.device!r}: the CUDA "
                         "path would need a CUDA-aware MPI or NCCL (see docs/distributed.md)")
    model._ensure_built()
    collective(model.dtype, model._backend.params.size)  # a ValueError if MPI cannot sum it


def begin_call(model, data, take_state=True, **settings):
    """Under MPI, before a training call (or evaluate, with ``take_state=False``): that the ranks
    agree on the call's ``settings`` and on the model's own (the number of parameters and the
    dtype make every gradient allreduce; the loss and the metrics decide the counters summed),
    all of which decide the collective calls each rank makes (``check_same_settings``), and that
    they hold the same ``data`` (``check_same_data``); then every rank takes rank 0's training
    state and shuffle generator, so that the ranks start the call alike whatever their seeds or
    earlier calls. ``verbose`` may differ (only rank 0 prints, and the compiled steps make the
    same calls whatever the progress updates); the callbacks may too: a per-batch hook on one
    rank has every rank go batch by batch, and a rank that stops training stops all."""
    if _world is None:
        return
    check_same_settings(**settings, **{
        "the number of parameters": int(model._backend.params.size), "the dtype": np.dtype(model.dtype).name,
        "the loss": type(model.loss).__name__, "the metrics": list(model.metrics)})
    check_same_data(**data)
    if take_state:
        rank0 = _world.rank == 0
        state, rng_state = broadcast((model._backend.state(), model._rng.bit_generator.state) if rank0 else None)
        if not rank0:
            model._backend.load_state(state)
            model._rng.bit_generator.state = rng_state


def rank_zero_first(work):
    """``work()`` on rank 0, then, once it is done, on the other ranks: compiling the kernels,
    which processes writing one cache at once can crash (numba#4807), so that the others load
    rank 0's cache. Outside MPI, ``work()`` once."""
    if rank() == 0:
        work()
        barrier()
    else:
        barrier()
        work()
