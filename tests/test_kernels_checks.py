"""fastnn.kernels.checks against NumPy's own isfinite / range checks."""
import numpy as np
import pytest

from fastnn.kernels.checks import all_finite, count_nonzero, labels_in_range


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "payload-nan"])
@pytest.mark.parametrize("where", [0, 777, -1])
def test_all_finite_finds_one_non_finite_value(dtype, bad, where):
    x = np.random.default_rng(0).standard_normal((37, 29)).astype(dtype)
    assert all_finite(x) and np.isfinite(x).all()
    flat = x.reshape(-1)
    if bad == "payload-nan":  # a NaN with a non-default mantissa is still NaN
        bits = flat.view(np.uint32 if dtype == np.float32 else np.uint64)
        bits[where] = bits.dtype.type(0x7F800001 if dtype == np.float32 else 0x7FF0000000000001)
    else:
        flat[where] = bad
    assert not np.isfinite(x).all()
    assert not all_finite(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_accepts_extreme_finite_values(dtype):
    info = np.finfo(dtype)
    x = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, 0.0, -0.0], dtype=dtype)
    assert all_finite(x)


def test_labels_in_range_matches_numpy():
    labels = np.array([0, 3, 9, 2], dtype=np.int64)
    assert labels_in_range(labels, 10)
    assert not labels_in_range(labels, 9)
    assert not labels_in_range(np.array([0, -1], dtype=np.int64), 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_count_nonzero_equals_numpys_for_every_layout(dtype):
    """-0.0 (a negative number times a zero mask) is a zero, NaN and inf are not; C order, rows
    skipped (the density sample, by a step or a view's stride) and a transposed view."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((41, 23)) * (rng.random((41, 23)) < 0.3)).astype(dtype)
    assert np.signbit(x[x == 0]).any()  # some zeros are -0.0
    x[0, :3] = [np.nan, np.inf, -np.inf]
    x[40, :5] = 1.0  # (the last row, which a step of 4 or 5 reads, and 3 or 6 does not)
    for view in (x, x[::4], x.T, x[:0]):
        for step in (1, 3, 4, 5, 6, 50):
            assert count_nonzero(view, step) == np.count_nonzero(view[::step]), step


def test_density_samples_every_kth_row_of_a_large_array():
    """``sparse_input.density`` of a dense array: the nonzero share of rows 0, k, 2k, ... (k the
    rows over ``DENSITY_SAMPLE_ROWS``), whatever the array's dtype and layout."""
    from fastnn import sparse_input
    rows = 3 * sparse_input.DENSITY_SAMPLE_ROWS + 7
    x = np.zeros((rows, 10), np.float32)
    x[::3, :4] = 1.0  # sampled rows (k = 3): 40% nonzero; the rest all nonzero and never read
    x[1::3] = x[2::3] = 2.0
    for view in (x, np.asfortranarray(x), x.astype(np.float64), x.astype(np.int8)):
        assert sparse_input.density(view) == pytest.approx(0.4)
    assert sparse_input.density(x[:5]) == pytest.approx(np.count_nonzero(x[:5]) / 50)
