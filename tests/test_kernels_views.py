"""``kernels.views.matrix_view``: the walkers' views of the flat buffers, made without NumPy's
reshape, against the slice-and-reshape they replace."""
import sys

import numba
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


@numba.njit
def sum_of_views(a, n):
    """n views made and dropped in compiled code, as the walkers make them."""
    total = 0.0
    for i in range(n):
        total += matrix_view(a, i % 4, 4, 4)[3, 3]
    return total


def test_matrix_views_made_in_compiled_code_release_their_buffer():
    # Each view takes a reference to the buffer's memory and gives it back when dropped: a
    # view that kept its reference would keep the array alive (one more reference to it after
    # the call), one that gave back too many would free memory still in use.
    a = np.arange(20, dtype=np.float64)
    sum_of_views(a, 1)
    before = sys.getrefcount(a)
    assert sum_of_views(a, 100) == sum(a[i % 4 + 15] for i in range(100))
    assert sys.getrefcount(a) == before


@pytest.mark.parametrize("lo,rows,cols", [(0, 5, 5), (18, 1, 3), (-1, 1, 1), (0, -1, 2), (0, 2, -1)])
def test_matrix_view_outside_the_buffer_is_a_value_error(lo, rows, cols):
    with pytest.raises(ValueError, match="not inside the buffer"):
        matrix_view(np.zeros(20, np.float32), lo, rows, cols)
