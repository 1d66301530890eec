"""scipy.sparse inputs, and the choice of the zero-skipping first layer (``kernels/sparse.py``).

A sparse ``x`` (any scipy.sparse matrix or array: CSR, CSC, COO, ...) is checked once at the
API boundary and converted to one canonical CSR matrix of the model's dtype (``check_sparse``),
never densified whole: ``fit`` gathers each batch from it (as CSR, or densified one batch at a
time), and ``predict``/``evaluate`` densify one chunk of rows at a time (``dense_chunks``).

Per data set, ``fit`` measures the input's density (``density``: the stored values of a sparse
matrix; the nonzeros of a sample of a dense one's rows) and, where the model's first layer is
Dense in a stack of layers and the density is at most ``config.SPARSE_FIRST_LAYER_MAX_DENSITY``,
trains that layer on each batch's nonzeros only (``SparseSource``).
"""
import sys

import numpy as np

from .config import SPARSE_FIRST_LAYER_MAX_DENSITY
from .kernels.checks import all_finite, count_nonzero

# Rows of a dense input whose nonzeros estimate its density: enough for two decimals, and
# cheap next to an epoch (1000 of MNIST's rows: about 0.3 ms).
DENSITY_SAMPLE_ROWS = 1000


def is_sparse(x):
    """Whether ``x`` is a scipy.sparse matrix or array (without importing scipy.sparse: such an
    object exists only once it is imported)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(x)


def check_sparse(x, name, width, dtype):
    """``x`` (scipy.sparse) as a canonical ``scipy.sparse.csr_matrix`` (sorted indices, no
    duplicates, summed as scipy sums them) of ``dtype`` with ``width`` columns; ``x`` itself is
    never changed. A ValueError or TypeError names ``name``."""
    import scipy.sparse as sp

    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D sparse matrix (rows, features), got {x.ndim} dimensions")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got a sparse matrix of dtype {x.dtype}")
    rows, cols = x.shape
    if rows == 0:
        raise ValueError(f"{name} is empty: expected at least one row")
    if cols != width:
        raise ValueError(f"{name} must have {width} features per row (the model's input width), got shape {x.shape}")
    if cols >= 2**31:
        raise ValueError(f"{name} has {cols} columns: at most 2**31 - 1 are supported")
    csr = x.tocsr()
    with np.errstate(over="ignore"):  # a value beyond the dtype's range becomes inf: reported below
        values = csr.data.astype(dtype)  # a copy: the sums of duplicates below never reach x
    indices, indptr = csr.indices, csr.indptr
    out = sp.csr_matrix((values, indices, indptr), shape=csr.shape, copy=False)
    try:
        out.check_format(full_check=True)  # the kernels index with these unchecked
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid sparse matrix: {exc}") from None
    if not out.has_canonical_format:
        out = sp.csr_matrix((values, indices.copy(), indptr.copy()), shape=csr.shape, copy=False)
        out.sum_duplicates()
    if not all_finite(out.data):
        raise ValueError(f"{name} contains NaN or infinite values (or values beyond {np.dtype(dtype).name}'s range)")
    return out


def density(x):
    """The fraction of ``x``'s entries that are stored (sparse) or nonzero (dense: over up to
    ``DENSITY_SAMPLE_ROWS`` rows evenly spaced)."""
    if is_sparse(x):
        return x.nnz / max(1, x.shape[0] * x.shape[1])
    step = max(1, x.shape[0] // DENSITY_SAMPLE_ROWS)
    rows = -(-x.shape[0] // step)  # (the rows of x[::step])
    if x.ndim == 2 and x.dtype in (np.float32, np.float64):  # the models' dtypes: one compile each
        nonzeros = count_nonzero(x, step)
    else:
        nonzeros = np.count_nonzero(x[::step])
    return nonzeros / max(1, rows * (x.size // max(1, x.shape[0])))


class SparseSource:
    """How ``train_batches`` reads one data set (``CPUBackend.dataset``): its CSR arrays as the
    kernels read them (``indptr`` int64, ``indices`` int32; none for a dense data set), and
    whether the first layer skips zeros (``skip``)."""

    def __init__(self, x, skip, dtype):
        self.skip = skip
        self.dense = not is_sparse(x)
        if self.dense:
            self.indptr, self.indices = np.zeros(0, np.int64), np.zeros(0, np.int32)
            self.values = np.zeros(0, dtype)
            self.row_nnz = None
        else:
            self.indptr = x.indptr.astype(np.int64, copy=False)
            self.indices = x.indices.astype(np.int32, copy=False)
            self.values = x.data
            # The largest nonzero counts first: a batch holds at most the sum of the top rows'.
            self.row_nnz = np.cumsum(np.sort(np.diff(self.indptr))[::-1])

    @classmethod
    def choose(cls, x, first_dense, dtype):
        """A ``SparseSource`` for ``x``, or None for the dense path (a dense ``x`` that is dense
        enough, or whose model's first layer cannot skip zeros)."""
        skip = skips_zeros(x, first_dense)
        if not skip and not is_sparse(x):
            return None
        return cls(x, skip, dtype)

    def batch_capacity(self, batch_size, n_in):
        """Room for the nonzeros of any batch of ``batch_size`` rows: the densest rows' for a CSR
        data set, a whole row per row for a dense one (``kernels.sparse.gather_sparse`` scans)."""
        if not self.skip:
            return 0
        if self.dense:
            return batch_size * n_in
        return int(self.row_nnz[min(batch_size, self.row_nnz.size) - 1]) if self.row_nnz.size else 0


def skips_zeros(x, first_dense):
    """Whether the first layer runs over ``x``'s nonzeros only, in training and in predict: it can
    (``first_dense``: a Dense first layer of a stack) and ``x`` is at most
    ``config.SPARSE_FIRST_LAYER_MAX_DENSITY`` nonzero."""
    return bool(first_dense) and density(x) <= SPARSE_FIRST_LAYER_MAX_DENSITY


def dense_chunks(x, batch_size, rows=None):
    """(lo, hi, dense rows x[lo:hi]) over ``x``, a whole number of ``batch_size`` batches per chunk
    (``rows`` at most, default ``config.INFERENCE_BATCH_SIZE``), so that the batches are those of
    one pass over a dense ``x``; a sparse ``x`` is densified one chunk at a time."""
    from .config import INFERENCE_BATCH_SIZE

    step = batch_size * max(1, (rows or INFERENCE_BATCH_SIZE) // batch_size)
    for lo in range(0, x.shape[0], step):
        hi = min(lo + step, x.shape[0])
        part = x[lo:hi]
        yield lo, hi, (part.toarray() if is_sparse(part) else part)
