"""Matrix views of the flat buffers (parameters, gradients, activations), as the walkers take a
layer's weights, output or gradient from them.

``matrix_view(a, lo, rows, cols)`` is ``a[lo: lo + rows * cols].reshape(rows, cols)`` with the same
check of sizes, made without NumPy's reshape. Numba lowers ``reshape`` to a C call
(``numba_attempt_nocopy_reshape``, about 19 ns), and a one-row forward pass makes two views per
layer: on the seed network six calls, 0.15-0.2 us of a 3 us row in compiled code
(``benchmarks/bench_inference.py``). A flat C-contiguous buffer needs none of what that call
works out: the view's strides are (cols, 1) elements.
"""
from numba import types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from ..config import kernel


@kernel(inline=True)
def matrix_view(a, lo, rows, cols):
    """``a[lo: lo + rows * cols]`` (``a`` 1-D, C-contiguous) as a C-contiguous (rows, cols) view;
    ValueError where that is not inside ``a``, as NumPy's reshape of the slice would raise."""
    if lo < 0 or rows < 0 or cols < 0 or lo + rows * cols > a.shape[0]:
        raise ValueError("matrix_view: rows x cols from lo is not inside the buffer")
    return _matrix_view(a, lo, rows, cols)


@intrinsic
def _matrix_view(typingctx, a, lo, rows, cols):
    """The view itself, unchecked: the data pointer moved by ``lo`` elements, shape (rows, cols),
    strides (cols, 1) elements; it holds a reference to ``a``'s memory, as a slice does."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"):
        return None
    view = types.Array(a.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        src = make_array(signature.args[0])(context, builder, args[0])
        first, n_rows, n_cols = (context.cast(builder, v, t, types.intp)
                                 for v, t in zip(args[1:], signature.args[1:]))
        itemsize = src.itemsize
        out = make_array(view)(context, builder)
        populate_array(out, data=builder.gep(src.data, [first]), shape=[n_rows, n_cols],
                       strides=[builder.mul(n_cols, itemsize), itemsize], itemsize=itemsize, meminfo=src.meminfo,
                       parent=src.parent)
        value = out._getvalue()
        context.nrt.incref(builder, view, value)
        return value

    return view(a, lo, rows, cols), codegen
