"""Tests of fastnn.kernels.dropout: the mask equals the plain-Python SplitMix64 reference
(``helpers.naive_dropout_keep``) bit for bit, the kept fraction and the scale are those of
inverted dropout (``torch.nn.Dropout``), and the backward pass recomputes the forward's mask."""
import numpy as np
import pytest

from fastnn.kernels import dropout as D
from helpers import naive_dropout_keep

DTYPES = [np.float32, np.float64]


def stream(key, step, layer):
    # Numba returns a uint64 as a Python int, which it would read back as int64: keep it unsigned.
    return np.uint64(D.dropout_stream(key, step, layer))


def forward(x, key, step, layer, rate):
    out = np.full_like(x, np.nan)
    D.dropout_forward(out.reshape(-1), x.reshape(-1), stream(key, step, layer), rate)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("key, step, layer, rate", [(0, 0, 0, 0.5), (1234, 17, 2, 0.3), (2**62 + 5, 10**9, 7, 0.9),
                                                    (2**63 - 1, 5, 1, 0.1)])
def test_mask_and_scale_match_the_reference(key, step, layer, rate, dtype):
    x = np.random.default_rng(0).uniform(0.5, 2.0, (7, 13)).astype(dtype)
    keep = naive_dropout_keep(key, step, layer, x.shape, rate)
    out = forward(x, key, step, layer, rate)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out != 0, keep)  # bit for bit the reference's mask
    np.testing.assert_allclose(out, np.where(keep, x / (1.0 - rate), 0.0), rtol=4e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropped_fraction_is_the_rate(rate):
    n = 200_000
    out = forward(np.ones(n), 99, 3, 1, rate)
    dropped = np.mean(out == 0)
    assert abs(dropped - rate) < 5 * np.sqrt(rate * (1 - rate) / n)  # five binomial standard deviations
    np.testing.assert_allclose(out[out != 0], 1.0 / (1.0 - rate), rtol=1e-15)


def test_rate_zero_is_the_identity():
    x = np.random.default_rng(1).standard_normal(1000)
    np.testing.assert_array_equal(forward(x, 5, 6, 7, 0.0), x)


def test_masks_differ_by_key_step_and_layer_and_repeat_otherwise():
    x = np.ones(4096)
    base = forward(x, 1, 2, 3, 0.5) == 0
    np.testing.assert_array_equal(forward(x, 1, 2, 3, 0.5) == 0, base)
    for other in ((2, 2, 3), (1, 3, 3), (1, 2, 4)):
        agree = np.mean((forward(x, *other, 0.5) == 0) == base)
        assert 0.45 < agree < 0.55, other  # independent masks agree on about half the elements


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_recomputes_the_forward_mask(dtype):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.5, 2.0, 500).astype(dtype)
    dout = rng.standard_normal(500).astype(dtype)
    s = stream(8, 9, 10)
    out = np.empty_like(x)
    D.dropout_forward(out, x, s, 0.4)
    dx = np.full_like(dout, np.nan)
    D.dropout_backward(dx, dout, s, 0.4)
    # out = x * mask * s, so d out / d x = mask * s: dx = dout * out / x
    np.testing.assert_allclose(dx, dout * out / x, rtol=2e-7 if dtype == np.float32 else 1e-15)
    assert dx.dtype == dtype
    in_place = dout.copy()
    D.dropout_backward(in_place, in_place, s, 0.4)
    np.testing.assert_array_equal(in_place, dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_part_of_the_batch_draws_the_whole_batch_mask(dtype):
    """Under MPI a rank runs rows [r0, r1) of a batch: with start = r0 * cols it gets exactly those
    rows of the mask (forward and backward) that the whole batch would."""
    x = np.random.default_rng(1).uniform(0.5, 2.0, (9, 5)).astype(dtype)
    s = stream(42, 3, 1)
    whole = forward(x, 42, 3, 1, 0.4)
    r0, r1 = 4, 9
    part = np.full_like(x[r0:r1], np.nan)
    D.dropout_forward(part.reshape(-1), x[r0:r1].reshape(-1), s, 0.4, r0 * x.shape[1])
    np.testing.assert_array_equal(part, whole[r0:r1])
    back = np.full_like(part, np.nan)
    D.dropout_backward(back.reshape(-1), x[r0:r1].reshape(-1), s, 0.4, r0 * x.shape[1])
    np.testing.assert_array_equal(back, whole[r0:r1])
    assert not np.array_equal(forward(x[r0:r1], 42, 3, 1, 0.4), whole[r0:r1])  # start matters
