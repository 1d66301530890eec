"""``kernels.views.matrix_view``: the walkers' views of the flat buffers, made without NumPy's
reshape, against the slice-and-reshape they replace."""
import numpy as np
import pytest

from fastnn.kernels.views import matrix_view


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("lo,rows,cols", [(0, 3, 4), (5, 2, 7), (19, 1, 1), (20, 0, 3), (0, 4, 5)])
def test_matrix_view_is_the_reshaped_slice(dtype, lo, rows, cols):
    a = np.arange(20, dtype=dtype)
    v = matrix_view(a, lo, rows, cols)
    want = a[lo: lo + rows * cols].reshape(rows, cols)
    assert v.shape == (rows, cols) and v.dtype == a.dtype and v.flags.c_contiguous
    np.testing.assert_array_equal(v, want)


def test_matrix_view_writes_through_to_the_buffer():
    a = np.zeros(12, np.float32)
    v = matrix_view(a, 2, 2, 3)
    v[1, 2] = 7
    v[0, 0] = -1
    assert a[2 + 1 * 3 + 2] == 7 and a[2] == -1 and np.count_nonzero(a) == 2


def test_matrix_view_keeps_its_buffer_alive():
    # The view holds a reference to the buffer's memory, as a slice does: dropping the buffer
    # leaves the view's values intact.
    a = np.arange(8, dtype=np.float64)
    v = matrix_view(a, 2, 3, 2)
    del a
    np.testing.assert_array_equal(v, np.arange(2, 8, dtype=np.float64).reshape(3, 2))


@pytest.mark.parametrize("lo,rows,cols", [(0, 5, 5), (18, 1, 3), (-1, 1, 1), (0, -1, 2), (0, 2, -1)])
def test_matrix_view_outside_the_buffer_is_a_value_error(lo, rows, cols):
    with pytest.raises(ValueError, match="not inside the buffer"):
        matrix_view(np.zeros(20, np.float32), lo, rows, cols)
