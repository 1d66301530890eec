"""Data parallelism inside the compiled step: ``rank_rows`` (a rank's share of a global batch),
``allreduce_sum`` and the two reductions of a training step, ``allreduce_loss`` and
``allreduce_gradients``.

Under MPI (``fastnn.distributed``) every rank holds the same network and the same shuffled
order; in each global batch of ``rows`` rows, rank r trains on the contiguous rows
``rank_rows(rows, r, size)``. Its loss gradient is scaled by local rows / rows (for the mean
losses; 1 for the summed ones), so the sum over ranks of the local gradients is the gradient of
the global batch, which ``allreduce_gradients`` leaves on every rank before the weight penalty,
clipping and the update, which then run alike everywhere.

``MPI_Allreduce`` is called through Numba's ``ExternalFunction``: a symbol that LLVM resolves
when the code is linked (``fastnn.distributed.init`` makes the MPI library's symbols visible), so
the step stays in Numba's on-disk cache. numba-mpi's ``allreduce`` holds ctypes pointers, which
Numba refuses to cache ("uses dynamic globals"), and (as of 1.3) has no float32. The MPI handles
(communicator, operation, datatypes) and the buffers' addresses are passed as integers: handles
are pointers in Open MPI, ints in MPICH; both arrive whole in the argument registers of the
x86-64 and AArch64 calling conventions.
"""
from collections import namedtuple

import numpy as np
from numba import types

from ..config import kernel

MPI_ALLREDUCE = types.ExternalFunction(
    "MPI_Allreduce", types.int32(types.intp, types.intp, types.int32, types.intp, types.intp, types.intp))

Collective = namedtuple("Collective", ["rank", "size", "comm", "op_sum", "datatype", "double", "in_place", "scalars"])
Collective.__doc__ = """The MPI job as the step sees it: this rank and the number of ranks; the handles of the
communicator, of MPI_SUM, of the parameters' datatype (MPI_FLOAT or MPI_DOUBLE) and of MPI_DOUBLE;
the value of MPI_IN_PLACE (as mpi4py gives it); ``scalars``, float64 (4,) scratch."""


@kernel(inline=True)
def rank_rows(rows, rank, size):
    """[lo, hi) of this rank's rows in a batch of ``rows``: contiguous, sizes differing by at most one."""
    return rows * rank // size, rows * (rank + 1) // size


@kernel
def allreduce_sum(send, recv, count, datatype, comm, op_sum):
    """The elementwise sum over all ranks of ``count`` values at address ``send`` into ``recv``
    (``send`` may be MPI_IN_PLACE: then ``recv`` holds this rank's values and gets the sums)."""
    if MPI_ALLREDUCE(send, recv, np.int32(count), datatype, op_sum, comm) != 0:
        raise RuntimeError("MPI_Allreduce failed")


@kernel
def allreduce_loss(coll, loss_part, correct):
    """(the batch's loss, its correct rows) summed over the ranks; ``loss_part`` is this rank's
    share of the batch's loss (already scaled by its share of the rows)."""
    coll.scalars[0] = loss_part
    coll.scalars[1] = correct
    allreduce_sum(coll.in_place, coll.scalars.ctypes.data, 2, coll.double, coll.comm, coll.op_sum)
    return coll.scalars[0], np.int64(coll.scalars[1])


@kernel
def allreduce_gradients(coll, grads):
    """grads = their sum over the ranks, in place (no copy of the buffer)."""
    allreduce_sum(coll.in_place, grads.ctypes.data, grads.size, coll.datatype, coll.comm, coll.op_sum)
