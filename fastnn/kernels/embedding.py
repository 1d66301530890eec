"""Embedding: ``embedding_forward(out, ids, table, combiner, mask_zero)`` and
``embedding_backward(dtable, dout, ids, combiner, mask_zero)``.

Each row of ``ids`` (rows, L) holds L integer ids (stored in the network's float dtype; the
model checks that they are integers in [0, V) before any kernel runs, and that the dtype holds
them exactly). ``table`` is (V, D). The combiners:

- ``CONCAT``: out[r, t*D:(t+1)*D] = table[ids[r, t]], width L*D (Keras' Embedding then Flatten);
- ``SUM``: out[r] = sum_t table[ids[r, t]], width D (``torch.nn.EmbeddingBag(mode="sum")``);
- ``MEAN``: that sum divided by the number of the row's counted ids (``mode="mean"``).

``mask_zero``: id 0 is padding, as PyTorch's ``padding_idx=0``: its vector counts as zero (a
row of padding only gives zeros), it gets no gradient, and "mean" leaves it out of the count.

The backward pass is a scatter-add into the rows of ``dtable`` that the batch uses (after
zeroing it), not a dense product. An embedding is a network's first layer: no dx.

The element functions work on flat row-major arrays: the CUDA twin (``fastnn.cuda.embedding``)
compiles them as device functions, one thread per output element (forward) or per (row, id,
column) with an atomic add (backward).
"""
import numpy as np

from ..config import kernel

CONCAT, SUM, MEAN = range(3)


@kernel(inline=True)
def embedding_dim(combiner, n_out, n_ids):
    """D, the width of one vector, from the layer's output width and ids per row."""
    return n_out // n_ids if combiner == CONCAT else n_out


@kernel(inline=True)
def embedding_scale(ids, r, n_ids, combiner, mask_zero):
    """What each id's vector of row r is multiplied by: 1, or 1 / (counted ids) for MEAN (0 for a
    row of padding only)."""
    if combiner != MEAN:
        return 1.0
    count = 0
    for t in range(n_ids):
        if not (mask_zero and ids[r * n_ids + t] == 0):
            count += 1
    return 1.0 / count if count > 0 else 0.0


@kernel(inline=True)
def embedding_element(ids, table, r, c, n_ids, dim, combiner, mask_zero, scale):
    """out[r, c], ``table`` flat (V * D), ``scale`` from ``embedding_scale``."""
    if combiner == CONCAT:
        i = np.int64(ids[r * n_ids + c // dim])
        return 0.0 if (mask_zero and i == 0) else table[i * dim + c % dim]
    total = 0.0
    for t in range(n_ids):
        i = np.int64(ids[r * n_ids + t])
        if not (mask_zero and i == 0):
            total += table[i * dim + c]
    return total * scale


@kernel(inline=True)
def embedding_forward(out, ids, table, combiner, mask_zero):
    """out as the module docstring says: (rows, L*D) for CONCAT, else (rows, D)."""
    rows, n_ids = ids.shape
    dim = table.shape[1]
    flat_ids, flat_table = ids.reshape(-1), table.reshape(-1)
    for r in range(rows):
        scale = embedding_scale(flat_ids, r, n_ids, combiner, mask_zero)
        for c in range(out.shape[1]):
            out[r, c] = embedding_element(flat_ids, flat_table, r, c, n_ids, dim, combiner, mask_zero, scale)


@kernel(inline=True)
def embedding_backward(dtable, dout, ids, combiner, mask_zero):
    """dtable = dL/dtable: zeros, plus each row's dout (times ``embedding_scale``) added into the
    rows of its ids."""
    rows, n_ids = ids.shape
    dim = dtable.shape[1]
    flat_ids = ids.reshape(-1)
    for v in range(dtable.shape[0]):
        for j in range(dim):
            dtable[v, j] = 0
    for r in range(rows):
        scale = dout.dtype.type(embedding_scale(flat_ids, r, n_ids, combiner, mask_zero))
        for t in range(n_ids):
            i = np.int64(ids[r, t])
            if mask_zero and i == 0:
                continue
            base = t * dim if combiner == CONCAT else 0
            for j in range(dim):
                dtable[i, j] += dout[r, base + j] * scale
