"""Sparse input batches: a CSR data set, and the zero-skipping first Dense layer.

``train_batches`` takes a ``SparseBatches`` bundle (its ``sparse`` argument; None compiles all of
this out) in two cases, which ``fastnn/sparse_input.py`` chooses once per data set:

- ``skip``: the first layer is Dense and the input's measured density is below
  ``config.SPARSE_FIRST_LAYER_MAX_DENSITY``. Each batch is gathered as CSR into the ``batch_*``
  buffers, from a CSR data set (each row's slice copied) or from a dense one (each row scanned
  for nonzeros), and the first layer's forward product and weight gradient run over its nonzeros
  only (``dense.sparse_dense_forward``/``sparse_dense_backward``). Under MPI a rank gathers its own
  share of the batch's rows, as the dense path does.
- otherwise the data set is CSR and each batch is densified into the gathered batch, the dense
  path's input (a functional model, a first layer that is not Dense, or a dense-enough input).

A dense data set with fewer zeros (MNIST: 19% nonzero) keeps the dense path, but its first Dense
layer's forward product and weight gradient may run over the columns nonzero in each block of
the batch's rows (``nonzero_first_forward``/``nonzero_first_backward``, ``train_batches``'
``nonzero``), where ``fastnn/cpu_backend.py: _nonzero_first`` estimates it faster than GEMM.

``indptr``/``indices``/``values``: the CSR data set (int64, int32, the model's dtype); no entries
(``indptr`` empty) for a dense data set, whose rows are in ``Batches.x``. ``batch_indptr``
(batch_size + 1,), ``batch_indices`` and ``batch_values``: the gathered batch's CSR, with room for
its most nonzeros (``sparse_input.batch_capacity``); ``colptr`` (n_in + 1,), ``rows`` and
``colvalues`` (as much room): the batch's CSC, the weight gradient's scratch. All unused (empty)
when not ``skip``.
"""
from collections import namedtuple

from ..config import kernel
from .activations import activation_backward, bias_activation_forward
from .dense import nonzero_product_by_address, sparse_dense_backward, sparse_dense_forward
from .parallel import column_sums
from .table import ACT, ALPHA, B_OFF, N_IN, N_OUT, W_OFF
from .views import matrix_view

SparseBatches = namedtuple("SparseBatches", ["indptr", "indices", "values", "batch_indptr", "batch_indices",
                                             "batch_values", "colptr", "rows", "colvalues", "skip"])


@kernel
def gather_sparse(sparse, xb, x, order, start):
    """The batch of ``xb.shape[0]`` rows ``order[start:]``: as CSR into ``sparse.batch_*`` when
    ``sparse.skip``, else densified into ``xb`` (from the CSR data set)."""
    rows = xb.shape[0]
    indptr, indices, values = sparse.indptr, sparse.indices, sparse.values
    bptr, bind, bval = sparse.batch_indptr, sparse.batch_indices, sparse.batch_values
    csr = indptr.size > 0
    if not sparse.skip:
        for r in range(rows):
            for j in range(xb.shape[1]):
                xb[r, j] = 0
            s = order[start + r]
            for p in range(indptr[s], indptr[s + 1]):
                xb[r, indices[p]] = values[p]
        return
    p = 0
    bptr[0] = 0
    for r in range(rows):
        s = order[start + r]
        if csr:
            for q in range(indptr[s], indptr[s + 1]):
                bind[p] = indices[q]
                bval[p] = values[q]
                p += 1
        else:
            # Branch-free: every value is written, and the cursor moves past the nonzero ones only
            # (a branch per value mispredicts on pixel data); the room is a whole row per row.
            row = x[s]
            for j in range(row.shape[0]):
                v = row[j]
                bind[p] = j
                bval[p] = v
                p += v != 0
        bptr[r + 1] = p


@kernel
def sparse_first_forward(net, sparse, work, rows):
    """Layer 0 (Dense) on the gathered CSR batch of ``rows`` rows, into its output in ``work.acts``."""
    params, layers, alphas = net.params, net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    out = work.acts[work.act_off[1]: work.act_off[1] + rows * n_out].reshape(rows, n_out)
    sparse_dense_forward(out, sparse.batch_indptr[: rows + 1], sparse.batch_indices, sparse.batch_values,
                         params[w: w + n_in * n_out].reshape(n_in, n_out), params[b: b + n_out], layers[0, ACT],
                         alphas[0, ALPHA])


@kernel(inline=True)
def nonzero_first_forward(net, x, work, nonzero):
    """Layer 0 (Dense) on the dense rows ``x``, its product over the columns nonzero in each block
    of rows (``dense.nonzero_rows_product``; ``nonzero`` a ``NonzeroFirst``), into its output in
    ``work.acts``: ``train_batches``' first layer where ``fastnn/cpu_backend.py: _nonzero_plan``
    chose it."""
    params, layers, alphas = net.params, net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    rows = x.shape[0]
    out = matrix_view(work.acts, work.act_off[1], rows, n_out)
    nonzero_product_by_address(out, x, matrix_view(params, w, n_in, n_out), nonzero.idx, 0, rows, False,
                               nonzero.parallel)
    bias_activation_forward(out, out, params[b: b + n_out], layers[0, ACT], alphas[0, ALPHA])


@kernel(inline=True)
def nonzero_first_backward(net, grads, x, work, cur, applied, nonzero):
    """Layer 0's (Dense) gradients from dL/d(its output) in ``work.deltas[cur]`` (dL/d(its
    pre-activation) when ``applied``, as ``sparse_first_backward``'s), on the dense rows ``x``: the
    weight gradient x.T @ dz over, for each block of 6 of x's columns, the rows where any of them
    is nonzero (``dense.nonzero_rows_product``, transposed; ``nonzero`` as the forward's)."""
    layers, alphas = net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    rows = x.shape[0]
    dout = matrix_view(work.deltas[cur], 0, rows, n_out)
    if not applied:
        out = matrix_view(work.acts, work.act_off[1], rows, n_out)
        activation_backward(dout, dout, out, layers[0, ACT], alphas[0, ALPHA])
    nonzero_product_by_address(matrix_view(grads, w, n_in, n_out), x, dout, nonzero.idx, 0, n_in, True,
                               nonzero.parallel)
    column_sums(grads[b: b + n_out], dout)


@kernel(inline=True)
def csr_first_forward(net, indptr, indices, values, work, rows):
    """Layer 0 (Dense) on ``rows`` rows of a CSR matrix given by their own slice of ``indptr``
    (offsets into the whole ``indices`` and ``values``), into its output in ``work.acts``: the
    first layer of ``inference.predict_sparse_batches``."""
    params, layers, alphas = net.params, net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    out = work.acts[work.act_off[1]: work.act_off[1] + rows * n_out].reshape(rows, n_out)
    sparse_dense_forward(out, indptr, indices, values, params[w: w + n_in * n_out].reshape(n_in, n_out),
                         params[b: b + n_out], layers[0, ACT], alphas[0, ALPHA])


@kernel
def sparse_first_backward(net, grads, sparse, work, rows, cur, applied, fresh):
    """Layer 0's (Dense) gradients from dL/d(its output) in ``work.deltas[cur]`` (dL/d(its
    pre-activation) when ``applied``, as ``dispatch.layer_backward``'s), on the CSR batch.
    ``fresh``: as ``sparse_dense_backward``'s (False: its weight gradient is as the previous batch's
    call left it, nothing having written to it since)."""
    layers, alphas = net.layers, net.alphas
    n_in, n_out = layers[0, N_IN], layers[0, N_OUT]
    w, b = layers[0, W_OFF], layers[0, B_OFF]
    dout = work.deltas[cur, : rows * n_out].reshape(rows, n_out)
    if not applied:
        out = work.acts[work.act_off[1]: work.act_off[1] + rows * n_out].reshape(rows, n_out)
        activation_backward(dout, dout, out, layers[0, ACT], alphas[0, ALPHA])
    sparse_dense_backward(grads[w: w + n_in * n_out].reshape(n_in, n_out), grads[b: b + n_out], dout,
                          sparse.batch_indptr[: rows + 1], sparse.batch_indices, sparse.batch_values, sparse.colptr,
                          sparse.rows, sparse.colvalues, fresh)
