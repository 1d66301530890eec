"""Tests of fastnn.kernels.simd (vectors as values in compiled code) and of the kernel built on
it, ``dense.nonzero_rows_product``: each intrinsic against NumPy at every lane count, and the
product over nonzero columns against float64 NumPy, serial and parallel."""
import numba
import numpy as np
import pytest

from fastnn.kernels import dense as K
from fastnn.kernels.simd import (SIMD, append_bit_positions, nonzero_bits, vec_lanes, vec_load, vec_madd, vec_store,
                                 vec_zeros)

pytestmark = pytest.mark.skipif(not SIMD, reason="the vector intrinsics need LLVM 20 (Numba 0.62 or later)")
DTYPES = [np.float32, np.float64]


@numba.njit
def _load_madd_store(a, off, count, s, dst, dst_off):
    v = vec_madd(vec_zeros(a), s, vec_load(a, off, count))
    vec_store(v, dst, dst_off, count)
    return vec_lanes(a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_load_madd_store_touch_count_lanes_only(dtype):
    lanes = 64 // np.dtype(dtype).itemsize
    a = np.arange(1, 3 * lanes + 1, dtype=dtype)
    for count in range(lanes + 1):
        for off in (0, 1, lanes + 3):
            dst = np.full(3 * lanes, -7, dtype)
            assert _load_madd_store(a, off, count, 2.5, dst, 5) == lanes
            want = np.full(3 * lanes, -7, dtype)
            want[5: 5 + count] = 2.5 * a[off: off + count]
            np.testing.assert_array_equal(dst, want)


@numba.njit
def _positions(a, off, count, idx, start):
    return append_bit_positions(nonzero_bits(a, off, count), off + 100, idx, start, a)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonzero_bits_and_their_positions(dtype):
    lanes = 64 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    for count in range(lanes + 1):
        a = rng.choice(np.array([0.0, -0.0, 1.5, np.nan, np.inf, -2.0], dtype), size=2 * lanes)
        idx = np.full(3 * lanes, -1, np.int32)
        n = _positions(a, 2, count, idx, 4)
        want = 100 + 2 + np.flatnonzero(a[2: 2 + count] != 0)  # NaN != 0; -0.0 == 0
        assert n == 4 + want.size
        np.testing.assert_array_equal(idx[4:n], want)
        assert (idx[:4] == -1).all()


def _mnist_like(rng, rows, n_in, dtype, density=0.2):
    x = rng.random((rows, n_in)).astype(dtype)
    x[rng.random((rows, n_in)) > density] = 0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (17, 3), (16, 64), (40, 65), (784, 100), (33, 130)])
def test_nonzero_rows_product_is_the_product(dtype, n_in, n_out):
    """Every block size (1-6 rows, the last block short), column counts around the 4-vector
    blocks, a range [lo, hi) written and nothing else, x's rows apart (a column slice)."""
    rng = np.random.default_rng(n_in * 1000 + n_out)
    wide = _mnist_like(rng, 23, n_in + 5, dtype)
    x = wide[:, 2: 2 + n_in]  # rows n_in + 5 elements apart
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    want = x.astype(np.float64) @ W.astype(np.float64)
    lanes = 64 // np.dtype(dtype).itemsize
    idx = np.empty(n_in + lanes, np.int32)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for lo, hi in ((0, 23), (3, 4), (5, 17), (0, 6), (22, 23)):
        out = np.full((23, n_out), np.nan, dtype)
        K.nonzero_rows_product(out, x, W, idx, lo, hi)
        np.testing.assert_allclose(out[lo:hi], want[lo:hi], rtol=tol, atol=tol * np.abs(W).sum(axis=0).max())
        assert np.isnan(out[:lo]).all() and np.isnan(out[hi:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_product_is_the_serial_one_bit_for_bit(dtype):
    """The threads take whole blocks from row 0 on (of x's columns, transposed), as the serial loop
    does: same sums, same order."""
    rng = np.random.default_rng(5)
    for rows in (1, 5, 6, 7, 64, 301):
        x = _mnist_like(rng, rows, 50, dtype)
        W = rng.standard_normal((50, 70)).astype(dtype)
        serial, parallel = np.empty((rows, 70), dtype), np.empty((rows, 70), dtype)
        K.nonzero_rows_product(serial, x, W, np.empty(50 + 16, np.int32), 0, rows)
        K.nonzero_rows_product_parallel(parallel, x, W)
        np.testing.assert_array_equal(parallel, serial)
        # The weight gradient x.T @ dz: blocks of x's columns.
        dz = rng.standard_normal((rows, 70)).astype(dtype)
        serial, parallel = np.empty((50, 70), dtype), np.empty((50, 70), dtype)
        K.nonzero_rows_product(serial, x, dz, np.empty(max(50, rows) + 16, np.int32), 0, 50, True)
        K.nonzero_rows_product_parallel(parallel, x, dz, True)
        np.testing.assert_array_equal(parallel, serial)


def test_nan_and_infinity_reach_every_column_of_their_row():
    """As BLAS's product does: NaN * 0 and inf * 0 are NaN, so a check of the product sees them."""
    rng = np.random.default_rng(6)
    x = _mnist_like(rng, 12, 40, np.float32)
    W = rng.standard_normal((40, 20)).astype(np.float32)
    W[7] = 0
    x[2] = 0
    x[2, 7] = np.nan
    x[9, 7] = np.inf
    out = np.empty((12, 20), np.float32)
    K.nonzero_rows_product_parallel(out, x, W)
    assert np.isnan(out[2]).all() and np.isnan(out[9]).all()
    assert np.isfinite(np.delete(out, [2, 9], axis=0)).all()


def test_nonzero_fraction_counts_the_columns_of_blocks_of_six_rows():
    x = np.zeros((18, 40), np.float32)
    x[0, 3] = x[5, 3] = x[5, 39] = 1
    x[8, 10] = 1  # past the first block
    assert K.nonzero_fraction(x, 1) == pytest.approx(2 / 40)
    assert K.nonzero_fraction(x, 3) == pytest.approx((2 + 1 + 0) / 120)  # blocks from rows 0, 6, 12
    assert K.nonzero_fraction(x, 99) == pytest.approx(3 / 120)  # at most rows // 6 blocks
    assert K.nonzero_fraction(np.ones((2, 5)), 4) == 1.0
    x[1, 20] = np.nan
    assert K.nonzero_fraction(x, 1) == pytest.approx(3 / 40)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, n_in, n_out", [(1, 1, 1), (23, 17, 3), (50, 40, 65), (7, 13, 130)])
def test_transposed_nonzero_rows_product_is_the_weight_gradient(dtype, rows, n_in, n_out):
    """transposed: out[lo:hi] = x.T[lo:hi] @ dz, blocks of 6 of x's columns over the rows where
    any of them is nonzero; x's rows apart; rows [lo, hi) written and nothing else."""
    rng = np.random.default_rng(rows * 100 + n_in)
    x = _mnist_like(rng, rows, n_in + 3, dtype)[:, 1: 1 + n_in]
    dz = rng.standard_normal((rows, n_out)).astype(dtype)
    want = x.T.astype(np.float64) @ dz.astype(np.float64)
    idx = np.empty(rows + 16, np.int32)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for lo, hi in ((0, n_in), (n_in // 3, n_in // 3 + 1), (n_in // 2, n_in)):
        out = np.full((n_in, n_out), np.nan, dtype)
        K.nonzero_rows_product(out, x, dz, idx, lo, hi, True)
        np.testing.assert_allclose(out[lo:hi], want[lo:hi], rtol=tol, atol=tol * np.abs(dz).sum(axis=0).max())
        assert np.isnan(out[:lo]).all() and np.isnan(out[hi:]).all()


def test_fetch_add_hands_out_every_value_once_among_threads():
    """``fetch_add`` on a shared counter from Numba's threads at once: each of the 20,000 calls
    gets a value of its own, and the counter ends at their number. Some work between the calls
    keeps the threads running side by side (a plain load and store lost additions here)."""
    from fastnn.kernels.simd import fetch_add

    @numba.njit(parallel=True)
    def take(counter, got, work):
        for i in numba.prange(got.size):
            got[i] = fetch_add(counter, 0, 1)
            s = 0.0
            for k in range(200):
                s += np.sqrt(k + i + 1.0)
            work[i] = s

    counter, got = np.zeros(1, np.int64), np.empty(20_000, np.int64)
    take(counter, got, np.empty(got.size))
    assert counter[0] == got.size
    np.testing.assert_array_equal(np.sort(got), np.arange(got.size))
