"""Tests of the CUDA kernels (fastnn.cuda) against NumPy references and their CPU twins.

Every kernel is run on small random inputs and compared with the ``naive_*`` NumPy
reference below (the SGEMM, the gather) or with its twin in ``fastnn.kernels``, which the
CPU tests check against closed forms, finite differences and PyTorch. Without a GPU the
kernels run in Numba's CUDA simulator (tests/conftest.py), which executes every thread in
Python: shapes stay tiny, and ragged (no dimension a multiple of a tile) so that every
masked edge is exercised.
"""
import numpy as np
import pytest

from helpers import cuda_or_skip

cuda = cuda_or_skip()

from fastnn.cuda import (C_BAD, C_BATCH, C_STEP, C_STEP0, N_CONTROL, TILE_8, TILE_16, TILE_64, TILE_128,  # noqa: E402
                         TILE_MIN_FILL, TILES, Plan, launch)
from fastnn.cuda import activations as CA  # noqa: E402
from fastnn.cuda import dense as CD  # noqa: E402
from fastnn.cuda import losses as CL  # noqa: E402
from fastnn.cuda import metrics as CM  # noqa: E402
from fastnn.cuda import network as CN  # noqa: E402
from fastnn.cuda import optimizers as CO  # noqa: E402
from fastnn.kernels import activations as A  # noqa: E402
from fastnn.kernels import dense as D  # noqa: E402
from fastnn.kernels import losses as L  # noqa: E402
from fastnn.kernels import metrics as M  # noqa: E402
from fastnn.kernels import network as N  # noqa: E402
from fastnn.user_losses import loss_kernels  # noqa: E402
from fastnn.kernels import optimizers as O  # noqa: E402
from test_kernels_network import RNG, setup_network, stack_as_graph  # noqa: E402
from test_kernels_network import network as cpu_network  # noqa: E402
from test_kernels_network import workspace as cpu_workspace  # noqa: E402

ALPHA = {A.LEAKY_RELU: 0.1, A.ELU: 1.3}
CODES = range(8)
# float32 results of the same formula on two devices: libm and CUDA's libdevice may differ
# in the last bit of exp/tanh/log, and sums may be ordered differently.
RTOL, ATOL = 2e-5, 1e-6


# ---- references ---------------------------------------------------------------------------

def naive_matmul(a, b):
    return np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)


def naive_gather(x, order, lo, rows):
    return x[order[lo: lo + rows]]


# ---- helpers ------------------------------------------------------------------------------

@pytest.fixture
def rng():
    return np.random.default_rng(7)


def dev(a):
    """A flat device copy of ``a``."""
    return cuda.to_device(np.ascontiguousarray(a).reshape(-1))


def back(d, shape=None):
    out = d.copy_to_host()
    return out if shape is None else out.reshape(shape)


def control(batch=0, bad=-1, step0=0):
    c = np.zeros(N_CONTROL, np.int64)
    c[C_BATCH], c[C_BAD], c[C_STEP0] = batch, bad, step0
    return dev(c)


def away_from_zero(rng, shape, dtype=np.float32):
    """|x| in [0.05, 2]: no kink of relu/leaky relu/elu/step lies within rounding of an input."""
    return (rng.uniform(0.05, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


# ---- SGEMM --------------------------------------------------------------------------------

# Every tile on a ragged shape whose K takes at least two slices, the smallest also on several
# blocks in each direction; each layout a dense layer uses (NN forward, TN dW, NT dx), and TT.
TRANSPOSES = [(False, False), (True, False), (False, True), (True, True)]
GEMM_CASES = ([(TILE_8, 7, 13, 5, ta, tb) for ta, tb in TRANSPOSES]
              + [(TILE_8, 17, 10, 19, ta, tb) for ta, tb in TRANSPOSES]
              + [(TILE_16, 20, 18, 19, ta, tb) for ta, tb in TRANSPOSES]
              + [(TILE_64, 7, 13, 21, ta, tb) for ta, tb in TRANSPOSES[:3]]
              + [(TILE_128, 9, 11, 13, ta, tb) for ta, tb in TRANSPOSES[:3]])


@pytest.mark.parametrize("tile,m,n,k,trans_a,trans_b", GEMM_CASES)
def test_sgemm_matches_naive_matmul(tile, m, n, k, trans_a, trans_b, rng):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = cuda.device_array(m * n, np.float32)
    CD.sgemm(c, dev(a.T if trans_a else a), dev(b.T if trans_b else b), m, n, k, trans_a, trans_b, tile=tile)
    np.testing.assert_allclose(back(c, (m, n)), naive_matmul(a, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("splits", [2, 3])
def test_sgemm_split_along_k_matches_naive_matmul(splits, trans_a, trans_b, rng):
    """K = 37 in 2 or 3 parts of whole 16-slices (the last part shorter), summed by split_k_sum."""
    m, n, k = 5, 9, 37
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = cuda.device_array(m * n, np.float32)
    CD.sgemm(c, dev(a.T if trans_a else a), dev(b.T if trans_b else b), m, n, k, trans_a, trans_b, tile=TILE_8,
             splits=splits)
    np.testing.assert_allclose(back(c, (m, n)), naive_matmul(a, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("epi", [CD.EPI_BIAS_ACT, CD.EPI_ACT_GRAD])
def test_split_k_applies_the_epilogue_after_the_sum(epi, rng):
    """A split GEMM with an epilogue equals the unsplit one: bias + activation (forward) or the
    previous layer's activation derivative (dx), applied once to the summed product."""
    m, n, k = 6, 7, 40
    act = A.TANH
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    e = rng.standard_normal(n).astype(np.float32) if epi == CD.EPI_BIAS_ACT else \
        np.tanh(rng.standard_normal((m, n))).astype(np.float32)
    out = {}
    for splits in (1, 3):
        c = cuda.device_array(m * n, np.float32)
        CD._launch_gemm(None, np.float32, False, False, epi, TILE_8, c, n, dev(x), k, dev(w), n, m, n, k, m, dev(e),
                        n, act, 0.0, splits)
        out[splits] = back(c, (m, n))
    np.testing.assert_allclose(out[3], out[1], rtol=1e-5, atol=1e-6)
    z = naive_matmul(x, w)
    ref = np.tanh(z + e) if epi == CD.EPI_BIAS_ACT else z * (1.0 - e.astype(np.float64) ** 2)
    np.testing.assert_allclose(out[3], ref, rtol=1e-5, atol=1e-5)


def test_a_long_k_on_a_small_matrix_is_split(monkeypatch):
    monkeypatch.setattr(CD, "_sm_count", lambda: 132)
    # The seed network's first layer at batch 50: 28 blocks of 16 x 16 would each walk K = 784.
    assert CD.choose_tile(50, 100, 784) == TILE_16
    assert CD.split_count(50, 100, 784, TILE_16) == 5  # 140 blocks, parts of 160
    assert CD.split_count(50, 100, 100, CD.choose_tile(50, 100, 100)) == 1  # too short to split
    assert CD.split_count(256, 1024, 1024, CD.choose_tile(256, 1024, 1024)) == 1  # 64 x 64 fills the GPU


def test_sgemm_float64(rng):
    m, n, k = 6, 9, 17
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    c = cuda.device_array(m * n, np.float64)
    CD.sgemm(c, dev(a), dev(b), m, n, k, tile=TILE_8)
    np.testing.assert_allclose(back(c, (m, n)), a @ b, rtol=1e-13, atol=1e-13)


def test_choose_tile_fills_the_gpu_with_the_largest_tile(monkeypatch):
    monkeypatch.setattr(CD, "_sm_count", lambda: 132)  # an H100's or H200's, where the rule was tuned
    # The sweep on an H200 (docs/gpu.md): the fastest tile per shape of the benchmark's networks.
    assert CD.choose_tile(4096, 4096) == TILE_128
    assert CD.choose_tile(785, 4096) == TILE_128
    assert CD.choose_tile(256, 1024) == TILE_64
    assert CD.choose_tile(785, 1024) == TILE_64
    assert CD.choose_tile(4096, 10) == TILE_16  # 64 x 64 would pad 10 columns to 64
    assert CD.choose_tile(512, 100) == TILE_16
    assert CD.choose_tile(5, 7) == TILES[-1]
    for m, n in [(50, 100), (256, 1024), (1024, 784), (4096, 10), (300, 70)]:
        tile = CD.choose_tile(m, n)
        blocks = -(-m // tile[0]) * -(-n // tile[1])
        assert blocks >= TILE_MIN_FILL[tile] * 132 or tile == TILES[-1]
        for t in TILES[:TILES.index(tile)]:  # every larger tile: too few blocks, or mostly padding
            rows, cols = -(-m // t[0]), -(-n // t[1])
            assert rows * cols < TILE_MIN_FILL[t] * 132 or rows * cols * t[0] * t[1] > 2 * m * n


# ---- dense layer --------------------------------------------------------------------------

def cpu_dense_forward(x, w, b, act, alpha):
    out = np.empty((x.shape[0], w.shape[1]), x.dtype)
    D.dense_forward(out, x, w, b, act, alpha)
    return out


@pytest.mark.parametrize("act", CODES)
def test_dense_forward_matches_cpu(act, rng):
    rows, n_in, n_out = 5, 7, 6
    x, w, b = rng.standard_normal((rows, n_in)), rng.standard_normal((n_in, n_out)), rng.standard_normal(n_out)
    x, w, b = (v.astype(np.float32) for v in (x, w, b))
    alpha = ALPHA.get(act, 0.0)
    out = cuda.device_array(rows * n_out, np.float32)
    CD.dense_forward(out, dev(x), dev(w), dev(b), act, alpha, rows, n_in, n_out, tile=TILE_8)
    expected = cpu_dense_forward(x, w, b, act, alpha)
    if act == A.HEAVISIDE:  # a pre-activation within rounding of 0 may step either way
        z = naive_matmul(x, w) + b
        keep = np.abs(z) > 1e-5
        np.testing.assert_array_equal(back(out, expected.shape)[keep], expected[keep])
    else:
        np.testing.assert_allclose(back(out, expected.shape), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tile", [TILE_16, TILE_64, TILE_128])
def test_dense_forward_epilogue_on_every_tile(tile, rng):
    """The epilogue leaves through shared memory one row of each thread's tile at a time."""
    rows, n_in, n_out = 19, 5, 18
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((rows, n_in), (n_in, n_out), (n_out,)))
    out = cuda.device_array(rows * n_out, np.float32)
    CD.dense_forward(out, dev(x), dev(w), dev(b), A.ELU, 1.3, rows, n_in, n_out, tile=tile)
    np.testing.assert_allclose(back(out, (rows, n_out)), cpu_dense_forward(x, w, b, A.ELU, 1.3), rtol=RTOL, atol=ATOL)


def test_dense_forward_can_defer_softmax(rng):
    rows, n_in, n_out = 4, 3, 5
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((rows, n_in), (n_in, n_out), (n_out,)))
    out = cuda.device_array(rows * n_out, np.float32)
    CD.dense_forward(out, dev(x), dev(w), dev(b), A.SOFTMAX, 0.0, rows, n_in, n_out, defer_softmax=True)
    np.testing.assert_allclose(back(out, (rows, n_out)), naive_matmul(x, w) + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prev_act", CODES)
def test_dense_backward_matches_cpu(prev_act, rng):
    """dW, db in one GEMM with a row of ones; dx with the previous activation's derivative fused."""
    rows, n_in, n_out = 6, 5, 4
    x = rng.standard_normal((rows, n_in)).astype(np.float32)
    prev_alpha = ALPHA.get(prev_act, 0.0)
    prev_out = np.empty_like(x)
    A.bias_activation_forward(prev_out, away_from_zero(rng, (rows, n_in)), np.zeros(0, np.float32), prev_act,
                              prev_alpha)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    dz = rng.standard_normal((rows, n_out)).astype(np.float32)
    dWb = cuda.device_array((n_in + 1) * n_out, np.float32)
    dx = cuda.device_array(rows * n_in, np.float32)
    CD.dense_backward(dx, dWb, dev(dz), dev(prev_out), dev(w), rows, n_in, n_out, prev_out=dev(prev_out),
                      prev_act=prev_act, prev_alpha=prev_alpha, tile=TILE_8)
    dW, db, dx_cpu = np.empty_like(w), np.empty(n_out, np.float32), np.empty_like(x)
    D.dense_backward(dx_cpu, dW, db, dz, prev_out, w)
    A.activation_backward(dx_cpu, dx_cpu, prev_out, prev_act, prev_alpha)
    got = back(dWb)
    np.testing.assert_allclose(got[: n_in * n_out].reshape(n_in, n_out), dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[n_in * n_out:], db, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[: n_in * n_out].reshape(n_in, n_out), naive_matmul(prev_out.T, dz), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(back(dx, x.shape), dx_cpu, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("tile", [TILE_16, TILE_64])
def test_dense_backward_first_layer_on_larger_tiles(tile, rng):
    rows, n_in, n_out = 18, 17, 3
    x, dz = rng.standard_normal((rows, n_in)).astype(np.float32), rng.standard_normal((rows, n_out)).astype(np.float32)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    dWb = cuda.device_array((n_in + 1) * n_out, np.float32)
    CD.dense_backward(None, dWb, dev(dz), dev(x), dev(w), rows, n_in, n_out, tile=tile)
    expected = np.vstack([naive_matmul(x.T, dz), dz.astype(np.float64).sum(axis=0)])
    np.testing.assert_allclose(back(dWb, (n_in + 1, n_out)), expected, rtol=1e-5, atol=1e-5)


# ---- activations --------------------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("act", CODES)
def test_bias_activation_forward_matches_cpu(act, with_bias, rng):
    rows, cols = 3, 5
    x = away_from_zero(rng, (rows, cols))
    b = (0.01 * rng.standard_normal(cols)).astype(np.float32) if with_bias else np.zeros(0, np.float32)
    out = cuda.device_array(rows * cols, np.float32)
    CA.bias_activation_forward(out, dev(x), dev(b) if with_bias else None, act, ALPHA.get(act, 0.0), rows, cols)
    expected = np.empty_like(x)
    A.bias_activation_forward(expected, x, b, act, ALPHA.get(act, 0.0))
    np.testing.assert_allclose(back(out, x.shape), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("act", CODES)
def test_activation_backward_matches_cpu_in_place(act, rng):
    rows, cols = 3, 5
    out = np.empty((rows, cols), np.float32)
    A.bias_activation_forward(out, away_from_zero(rng, (rows, cols)), np.zeros(0, np.float32), act,
                              ALPHA.get(act, 0.0))
    dout = rng.standard_normal((rows, cols)).astype(np.float32)
    d = dev(dout)
    CA.activation_backward(d, d, dev(out), act, ALPHA.get(act, 0.0), rows, cols)
    expected = dout.copy()
    A.activation_backward(expected, expected, out, act, ALPHA.get(act, 0.0))
    np.testing.assert_allclose(back(d, out.shape), expected, rtol=RTOL, atol=ATOL)


# ---- losses and accuracy ------------------------------------------------------------------

def loss_inputs(rng, loss, act, rows, cols):
    """A prediction as the activation ``act`` would output it, and a target in the loss's domain."""
    z = rng.standard_normal((rows, cols))
    pred = np.empty((rows, cols), np.float32)
    A.bias_activation_forward(pred, z.astype(np.float32), np.zeros(0, np.float32), act, ALPHA.get(act, 0.0))
    if loss in (L.CROSS_ENTROPY, L.KL_DIVERGENCE):
        target = np.eye(cols, dtype=np.float32)[rng.integers(0, cols, rows)]
        # Cross-entropy gets rows that do not sum to 1: its fused gradient scales p by the sum.
        target = (0.8 * target + (0.2 / cols if loss == L.KL_DIVERGENCE else 0.1)).astype(np.float32)
    elif loss in (L.BINARY_CROSS_ENTROPY, L.PERCEPTRON):
        target = (rng.random((rows, cols)) > 0.5).astype(np.float32)
    elif loss == L.MSLE:
        target = rng.uniform(0.0, 2.0, (rows, cols)).astype(np.float32)
    else:
        target = rng.standard_normal((rows, cols)).astype(np.float32)
    return pred, target


def cpu_loss_step(loss, act, alpha, pred, target):
    """Value, correct rows and dL/d(pre-activation), as kernels.network computes them."""
    value = L.loss_forward(loss, pred, target)
    dz = np.empty_like(pred)
    if loss == L.CROSS_ENTROPY and act == A.SOFTMAX:
        L.softmax_cross_entropy_backward(dz, pred, target)
    elif loss == L.BINARY_CROSS_ENTROPY and act == A.SIGMOID:
        L.sigmoid_binary_cross_entropy_backward(dz, pred, target)
    else:
        L.loss_backward(loss, dz, pred, target)
        A.activation_backward(dz, dz, pred, act, alpha)
    return value, M.count_correct(pred, target), dz


LOSS_CASES = [  # (loss, the last activation)
    (L.MSE, A.IDENTITY), (L.MSE, A.SOFTMAX), (L.SSE, A.TANH), (L.MAE, A.LEAKY_RELU), (L.MAPE, A.IDENTITY),
    (L.MSLE, A.RELU), (L.COSINE_SIMILARITY, A.ELU), (L.CROSS_ENTROPY, A.SOFTMAX), (L.CROSS_ENTROPY, A.SIGMOID),
    (L.BINARY_CROSS_ENTROPY, A.SIGMOID), (L.BINARY_CROSS_ENTROPY, A.SOFTMAX), (L.KL_DIVERGENCE, A.SOFTMAX),
    (L.PERCEPTRON, A.HEAVISIDE),
]


@pytest.mark.parametrize("loss,act", LOSS_CASES)
def test_loss_step_matches_cpu(loss, act, rng):
    rows, cols = 5, 3
    pred, target = loss_inputs(rng, loss, act, rows, cols)
    alpha = ALPHA.get(act, 0.0)
    records, dz = cuda.to_device(np.full(6, np.nan)), cuda.device_array(rows * cols, np.float32)
    ctrl = control(batch=2)
    CL.loss_backward(records, dz, dev(pred), dev(target), loss, act, alpha, rows, cols, ctrl)
    value, correct, dz_cpu = cpu_loss_step(loss, act, alpha, pred, target)
    rec = back(records)
    np.testing.assert_allclose(rec[4], value, rtol=1e-6)
    assert rec[5] == correct
    assert np.isnan(rec[:4]).all()  # batch 2 only
    np.testing.assert_allclose(back(dz, pred.shape), dz_cpu, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(back(ctrl)[[C_BATCH, C_BAD]], [3, -1])


@pytest.mark.parametrize("loss", [L.CROSS_ENTROPY, L.MSE])
def test_loss_step_applies_a_deferred_softmax(loss, rng):
    rows, cols = 4, 5
    logits = rng.standard_normal((rows, cols)).astype(np.float32)
    probs = np.empty_like(logits)
    A.bias_activation_forward(probs, logits, np.zeros(0, np.float32), A.SOFTMAX, 0.0)
    target = np.eye(cols, dtype=np.float32)[rng.integers(0, cols, rows)]
    records, dz, pred = cuda.device_array(2, np.float64), cuda.device_array(rows * cols, np.float32), dev(logits)
    CL.loss_backward(records, dz, pred, dev(target), loss, A.SOFTMAX, 0.0, rows, cols, control(), softmax_first=True)
    value, correct, dz_cpu = cpu_loss_step(loss, A.SOFTMAX, 0.0, probs, target)
    np.testing.assert_allclose(back(pred, probs.shape), probs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(back(records), [value, correct], rtol=1e-6)
    np.testing.assert_allclose(back(dz, probs.shape), dz_cpu, rtol=RTOL, atol=ATOL)


def test_loss_forward_records_the_value_and_advances_the_batch(rng):
    rows, cols = 4, 3
    pred, target = loss_inputs(rng, L.MAE, A.IDENTITY, rows, cols)
    records, ctrl = cuda.device_array(2, np.float64), control()
    CL.loss_forward(records, dev(pred), dev(target), L.MAE, rows, cols, ctrl)
    np.testing.assert_allclose(back(records), [L.loss_forward(L.MAE, pred, target), M.count_correct(pred, target)],
                               rtol=1e-6)
    assert back(ctrl)[C_BATCH] == 1


@pytest.mark.parametrize("bad_before", [False, True])
def test_loss_step_flags_a_loss_that_is_not_finite(bad_before, rng):
    """The flag names the first batch whose loss was not finite (no update, nor step counted, from it on)."""
    rows, cols = 3, 2
    pred = np.full((rows, cols), np.nan, np.float32) if not bad_before else rng.random((rows, cols)).astype(np.float32)
    target = rng.random((rows, cols)).astype(np.float32)
    records = cuda.device_array(4, np.float64)
    ctrl = control(batch=1, bad=0 if bad_before else -1)
    dz = cuda.device_array(rows * cols, np.float32)
    CL.loss_backward(records, dz, dev(pred), dev(target), L.BINARY_CROSS_ENTROPY, A.IDENTITY, 0.0, rows, cols, ctrl)
    np.testing.assert_array_equal(back(ctrl)[[C_BATCH, C_BAD]], [2, 0 if bad_before else 1])
    assert np.isfinite(back(records)[2]) == bad_before


@pytest.mark.parametrize("cols", [1, 4])
def test_count_correct_matches_cpu(cols, rng):
    rows = 9
    pred = rng.random((rows, cols)).astype(np.float32)
    target = np.eye(cols, dtype=np.float32)[rng.integers(0, cols, rows)] if cols > 1 \
        else (rng.random((rows, 1)) > 0.5).astype(np.float32)
    result = cuda.device_array(1, np.int64)
    CM.count_correct(result, dev(pred), dev(target), rows, cols)
    expected = M.count_correct(pred, target)
    assert 0 < expected < rows  # the test can tell right from wrong rows
    assert back(result)[0] == expected


# ---- optimizers ---------------------------------------------------------------------------

def test_optimizer_step_matches_cpu_on_every_segment(rng):
    """Five optimizers on five slices of one flat buffer, one launch per step, three steps."""
    segments = [(0, 7, O.ADAM, [0.01, 0.9, 0.999, 1e-8, 0, 0]), (7, 12, O.SGD, [0.1, 0.9, 0, 0, 1, 0]),
                (12, 20, O.RMSPROP, [0.01, 0.9, 0, 1e-8, 0, 0]), (20, 26, O.ADAGRAD, [0.1, 0, 0, 1e-10, 0, 0]),
                (26, 33, O.ADAMW, [0.01, 0.9, 0.999, 1e-8, 0, 0.3])]
    meta = np.array([s[:3] for s in segments], np.int64)
    hyper = np.array([np.pad(s[3], (0, O.N_HYPER - len(s[3]))) for s in segments], np.float64)
    params = rng.standard_normal(33).astype(np.float32)
    state1 = np.zeros(33, np.float32)
    state1[20:26] = 0.1  # Adagrad's initial accumulator
    state2 = np.zeros(33, np.float32)
    d = {name: dev(a) for name, a in (("p", params), ("s1", state1), ("s2", state2))}
    d_meta, d_hyper = cuda.to_device(meta), cuda.to_device(hyper)
    ctrl, steps = control(), dev(np.zeros(5, np.int64))
    for step in range(1, 4):
        grads = rng.standard_normal(33).astype(np.float32)
        CO.optimizer_step(d["p"], dev(grads), d["s1"], d["s2"], d_meta, d_hyper, steps, ctrl)
        np.testing.assert_array_equal(back(steps), [step] * 5)  # advanced by the step itself, as on the CPU
        for (lo, hi, kind, _), h in zip(segments, hyper):
            O.optimizer_step(kind, params[lo:hi], grads[lo:hi], state1[lo:hi], state2[lo:hi], h, step)
    # The CPU kernels' fastmath (reciprocals, contracted multiply-adds) moves float32 results by
    # a few ulps of an update; both stay within test_kernels_optimizers' float32 tolerance.
    np.testing.assert_allclose(back(d["p"]), params, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back(d["s1"]), state1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(back(d["s2"]), state2, rtol=1e-5, atol=1e-6)


def test_optimizer_step_is_skipped_after_a_bad_batch(rng):
    """No update and no step counted once a batch's loss was not finite."""
    params = rng.standard_normal(5).astype(np.float32)
    d, steps = dev(params), dev(np.ones(1, np.int64))
    CO.optimizer_step(d, dev(np.ones(5, np.float32)), dev(np.zeros(5, np.float32)), dev(np.zeros(5, np.float32)),
                      cuda.to_device(np.array([[0, 5, O.SGD]], np.int64)),
                      cuda.to_device(np.pad([[0.1]], ((0, 0), (0, O.N_HYPER - 1)))), steps, control(bad=3))
    np.testing.assert_array_equal(back(d), params)
    assert back(steps)[0] == 1


# ---- network ------------------------------------------------------------------------------

def test_gather_batch_matches_naive(rng):
    n, n_in, n_out, batch_size = 11, 3, 2, 4
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    y = rng.standard_normal((n, n_out)).astype(np.float32)
    order = rng.permutation(n).astype(np.int64)
    rows = 3  # the last, ragged batch: batch 2 holds rows 8, 9, 10
    xb, yb = cuda.device_array(rows * n_in, np.float32), cuda.device_array(rows * n_out, np.float32)
    ctrl = control(batch=2, step0=40)
    CN.gather_batch(xb, yb, dev(x), dev(y), dev(order), ctrl, batch_size, rows, n_in, n_out)
    np.testing.assert_array_equal(back(xb, (rows, n_in)), naive_gather(x, order, 8, rows))
    np.testing.assert_array_equal(back(yb, (rows, n_out)), naive_gather(y, order, 8, rows))
    assert back(ctrl)[C_STEP] == 42  # the step's training step, for Dropout: step0 + batch


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_optimizer_step_flushes_denormals_as_the_cpu_does(rng):
    """Denormal states and gradients too small to square: the CUDA update equals the CPU's."""
    tiny = np.finfo(np.float32).tiny
    segments = [(0, 6, O.ADAM, [0.01, 0.9, 0.999, 1e-8, 0, 0]), (6, 12, O.SGD, [0.1, 0.9, 0, 0, 0, 0]),
                (12, 18, O.RMSPROP, [0.01, 0.9, 0, 1e-8, 0, 0]), (18, 24, O.ADAGRAD, [0.1, 0, 0, 1e-10, 0, 0])]
    meta = np.array([s[:3] for s in segments], np.int64)
    hyper = np.array([np.pad(s[3], (0, O.N_HYPER - len(s[3]))) for s in segments], np.float64)
    pattern = np.array([0.5, 1.01, 3.0, 1e4, 0.0, 2.0], np.float32) * np.float32(tiny)
    state1, state2 = np.tile(pattern, 4), np.tile(pattern[::-1], 4)
    grads = np.tile(np.array([0.0, 1e-22, -1e-19, 1e-17, 1e-3, -2e-3], np.float32), 4)
    params = rng.standard_normal(24).astype(np.float32)
    d = {name: dev(a) for name, a in (("p", params), ("s1", state1), ("s2", state2))}
    CO.optimizer_step(d["p"], dev(grads), d["s1"], d["s2"], cuda.to_device(meta), cuda.to_device(hyper),
                      dev(np.full(4, 1, np.int64)), control())  # advanced to step 2
    for (lo, hi, kind, _), h in zip(segments, hyper):
        O.optimizer_step(kind, params[lo:hi], grads[lo:hi], state1[lo:hi], state2[lo:hi], h, 2)
    # The decaying states: Adam's m and v, SGD's velocity, RMSprop's average (Adagrad's sum only
    # grows, and state2 is unused but by Adam): none is left denormal.
    for name, cpu, decayed in (("s1", state1, state1[:18]), ("s2", state2, state2[:6])):
        assert not np.any((np.abs(decayed) > 0) & (np.abs(decayed) < tiny)), name
        np.testing.assert_allclose(back(d[name]), cpu, rtol=1e-5, atol=0, err_msg=name)
    np.testing.assert_allclose(back(d["p"]), params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", range(10))
def test_a_nan_prediction_gives_the_cpus_loss(loss, rng):
    """A NaN prediction makes every loss NaN on both devices (the perceptron's counts it as a
    miss on both). CUDA's max and min return the other operand of a NaN, so a clamp such as
    max(p, eps) would turn it into a finite loss on a GPU and hide a diverged model."""
    rows, cols = 3, 4
    pred, target = loss_inputs(rng, loss, A.IDENTITY, rows, cols)
    pred[1, 2] = np.nan
    records, ctrl = cuda.device_array(2, np.float64), control()
    CL.loss_forward(records, dev(pred), dev(target), loss, rows, cols, ctrl)
    cpu = L.loss_forward(loss, pred, target)
    assert np.isnan(cpu) == (loss != L.PERCEPTRON)
    assert np.isnan(back(records)[0]) == np.isnan(cpu)


def test_nan_max_and_min_propagate_a_nan_value_on_both_targets():
    """The clamps keep a NaN value (their second argument is always a constant bound), where
    Python's max and CUDA's fmax would return the bound."""
    @cuda.jit
    def probe(out, a, b):
        i = cuda.grid(1)
        if i < a.size:
            out[2 * i] = CL.nan_max(a[i], b[i])
            out[2 * i + 1] = CL.nan_min(a[i], b[i])

    a = np.array([np.nan, 1.0, 2.0, 3.0])
    b = np.array([1.0, 0.5, 5.0, -1.0])
    expected = [np.nan, np.nan, 1.0, 0.5, 5.0, 2.0, 3.0, -1.0]
    out = cuda.device_array(8, np.float64)
    launch(None, probe, 1, 4, out, dev(a), dev(b))
    np.testing.assert_array_equal(back(out), expected)
    cpu = [f(x, y) for x, y in zip(a, b) for f in (L.nan_max, L.nan_min)]
    np.testing.assert_array_equal(cpu, expected)


# ---- the walkers: one backward rule and the CPU's fusions -----------------------------------

# Fused and unfused pairs on both sides of every kind that a CUDA stack can hold.
WALKED = ("tanh_softmax_ce_fused", "leaky_sigmoid_bce_fused", "bare_tanh_in_the_middle_mse",
          "identity_then_bare_softmax_ce_fused", "bare_leaky_first_sse", "softmax_then_bce_unfused",
          "three_hidden_layers_ce", "dropout_between_dense_ce", "dropout_after_a_softmax_mse",
          "batchnorm_between_dense_ce", "batchnorm_on_the_input_and_after_elu_mse")


def cpu_gradients(net, loss, x, target):
    params, grads, work = net.params.copy(), np.full(net.params.size, np.nan), cpu_workspace(net, x.shape[0])
    N.network_forward(cpu_network(net, params), x, work, True, True, True, True, True)
    N.network_backward(cpu_network(net, params), grads, x, work, loss, target,
                       loss_fns=loss_kernels(loss, x.dtype))
    return grads


def cuda_gradients(net, loss, x, target, graph=False):
    """(dL/dparams, launches) of one CUDA training step with no optimizer (``network.train_step``:
    gather, forward, loss kernel, the stack's or the graph's walker), float64, Dropout's step RNG[1]."""
    rows = x.shape[0]
    act_off, n_acts, deltas_shape, n_targets, _ = N.workspace_layout(net.layers, rows)
    work = N.Workspace(dev(np.full(n_acts, np.nan)), act_off, cuda.to_device(np.full(deltas_shape, np.nan)),
                       dev(np.full(n_targets, np.nan)), None)
    g = N.Graph(stack_as_graph(net, rows).sources, dev(np.full(n_acts, np.nan))) if graph else None
    grads = dev(np.full(net.params.size, np.nan))
    train = N.Training(grads, dev(np.zeros(1)), dev(np.zeros(1)), np.zeros((0, 3), np.int64),
                       cuda.to_device(np.zeros((1, O.N_HYPER))), dev(np.zeros(1, np.int64)))
    batches = N.Batches(dev(x), dev(target), dev(np.arange(rows, dtype=np.int64)), rows, 0, 1)
    plan = Plan()
    CN.train_step(N.Network(dev(net.params), net.layers, net.alphas, int(RNG[0])), train, work, batches, loss, None,
                  None, None, rows, dev(np.zeros(2)), control(step0=int(RNG[1])), plan, g)
    plan.run()
    return back(grads), len(plan.launches)


class _NeverFuse:
    """``fuse_activation_backward`` saying no everywhere (its ``py_func`` is what the launchers call)."""
    @staticmethod
    def py_func(layers, k, sole_reader):
        return False


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # Dropout's hash, run as NumPy scalars
@pytest.mark.parametrize("name", WALKED)
def test_cuda_walkers_give_the_cpus_gradients_with_and_without_the_fused_epilogue(name, monkeypatch):
    """The CUDA stack walker (with the dx epilogue where ``fuse_activation_backward`` holds, and
    with it turned off), the CUDA graph walker and the CPU stack walker give the same gradients:
    every walker hands dL/d(output) between layers, and the fusions change where a derivative is
    applied, not what is computed. The fused step has one launch fewer per fused pair."""
    net, loss, x, target = setup_network(name)
    trained = np.setdiff1d(np.arange(net.params.size), net.frozen)
    expected = cpu_gradients(net, loss, x, target)[trained]
    fused, launches = cuda_gradients(net, loss, x, target)
    graph, _ = cuda_gradients(net, loss, x, target, graph=True)
    monkeypatch.setattr(CN, "fuse_activation_backward", _NeverFuse)
    unfused, unfused_launches = cuda_gradients(net, loss, x, target)
    for grads in (fused, graph, unfused):
        np.testing.assert_allclose(grads[trained], expected, rtol=1e-9, atol=1e-12)
    # An Activation layer on the batch needs no derivative unfused: no launch saved there.
    pairs = sum(bool(N.fuse_activation_backward(net.layers, k, True)) and (k > 1 or net.layers[0, N.KIND] == N.DENSE_LAYER)
                for k in range(net.layers.shape[0]))
    assert unfused_launches - launches == pairs


# ---- the zero-skipping first layer (CSR batch) -----------------------------------------------

def csr_batch(rng, rows, n_in):
    """float32 rows with exact zeros, an empty row and a row without zeros, as CSR (sorted)."""
    x = (rng.standard_normal((rows, n_in)) * (rng.random((rows, n_in)) < 0.3)).astype(np.float32)
    x[1] = 0
    x[2] = rng.standard_normal(n_in) + 3.0
    indptr = np.concatenate([[0], np.cumsum((x != 0).sum(axis=1))]).astype(np.int64)
    rows_, cols = np.nonzero(x)
    return x, indptr, cols.astype(np.int32), x[rows_, cols]


@pytest.mark.parametrize("act", [A.TANH, A.SOFTMAX])
def test_sparse_dense_forward_matches_cpu(act, rng):
    rows, n_in, n_out = 5, 7, 6
    x, indptr, indices, values = csr_batch(rng, rows, n_in)
    w, b = rng.standard_normal((n_in, n_out)).astype(np.float32), rng.standard_normal(n_out).astype(np.float32)
    out = cuda.device_array(rows * n_out, np.float32)
    CD.sparse_dense_forward(out, dev(indptr), dev(indices), dev(values), dev(w), dev(b), act, 0.0, rows, n_out)
    expected = np.empty((rows, n_out), np.float32)
    D.sparse_dense_forward(expected, indptr, indices, values, w, b, act, 0.0)
    np.testing.assert_allclose(back(out, (rows, n_out)), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(expected, cpu_dense_forward(x, w, b, act, 0.0), rtol=RTOL, atol=ATOL)


def test_sparse_dense_backward_matches_cpu(rng):
    """dW through the batch's CSC (built on the device), db after it as dense_backward lays it out."""
    rows, n_in, n_out = 6, 5, 4
    x, indptr, indices, values = csr_batch(rng, rows, n_in)
    dz = rng.standard_normal((rows, n_out)).astype(np.float32)
    dWb = cuda.device_array((n_in + 1) * n_out, np.float32)
    nnz = values.size
    CD.sparse_dense_backward(dWb, dev(dz), dev(indptr), dev(indices), dev(values),
                             cuda.device_array(n_in + 1, np.int64), cuda.device_array(nnz, np.int32),
                             cuda.device_array(nnz, np.float32), rows, n_in, n_out)
    dW, db = np.empty((n_in, n_out), np.float32), np.empty(n_out, np.float32)
    D.sparse_dense_backward(dW, db, dz, indptr, indices, values, np.zeros(n_in + 1, np.int64),
                            np.zeros(nnz, np.int32), np.zeros(nnz, np.float32))
    got = back(dWb)
    np.testing.assert_allclose(got[: n_in * n_out].reshape(n_in, n_out), dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[n_in * n_out:], db, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dW, naive_matmul(x.T, dz), rtol=1e-5, atol=1e-5)
def zeros_batch(rng, rows, n_in):
    """float32 rows, about 70% exact zeros, an all-zero row and a row without zeros."""
    x, _, _, _ = csr_batch(rng, rows, n_in)
    return x


@pytest.mark.parametrize("rows, n_in, n_out", [(5, 7, 6), (9, 12, 33)])
def test_nonzero_rows_product_matches_cpu(rows, n_in, n_out, rng):
    """Forward x @ W and, transposed, [x.T @ dz; column sums of dz], each over x's nonzero entries,
    as the CPU kernel (which sums the same terms) and NumPy's float64 products."""
    x = zeros_batch(rng, rows, n_in)
    w = rng.standard_normal((n_in, n_out)).astype(np.float32)
    dz = rng.standard_normal((rows, n_out)).astype(np.float32)
    out = cuda.device_array(rows * n_out, np.float32)
    CD.nonzero_rows_product(out, dev(x), dev(w), rows, n_in, n_out)
    expected = np.empty((rows, n_out), np.float32)
    D.nonzero_rows_product(expected, x, w, np.empty(n_in + 64, np.int32), 0, rows)
    np.testing.assert_allclose(back(out, (rows, n_out)), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(back(out, (rows, n_out)), naive_matmul(x, w), rtol=1e-5, atol=1e-5)
    assert not back(out, (rows, n_out))[1].any()  # the all-zero row
    dWb = cuda.device_array((n_in + 1) * n_out, np.float32)
    CD.nonzero_rows_product(dWb, dev(x), dev(dz), rows, n_in, n_out, transposed=True)
    dW = np.empty((n_in, n_out), np.float32)
    D.nonzero_rows_product(dW, x, dz, np.empty(max(n_in, rows) + 64, np.int32), 0, n_in, True)
    got = back(dWb, (n_in + 1, n_out))
    np.testing.assert_allclose(got[:n_in], dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got[:n_in], naive_matmul(x.T, dz), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[n_in], dz.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("applied", [False, True])
def test_nonzero_first_layer_matches_the_gemm_layer(applied, rng):
    """``sparse.nonzero_first_forward``/``backward`` give layer 0's output and [dW; db] as the GEMM
    path (``dispatch.layer_forward``/``layer_backward``) does."""
    from fastnn.cuda import dispatch as CDP
    from fastnn.cuda import sparse as CS
    from fastnn.kernels.table import DENSE_LAYER, Network
    rows, n_in, n_out = 6, 9, 5
    layers = np.zeros((2, 6), np.int64)  # W_OFF, B_OFF, N_IN, N_OUT, ACT, KIND
    layers[0] = [0, n_in * n_out, n_in, n_out, A.TANH, DENSE_LAYER]
    w1 = (n_in + 1) * n_out
    layers[1] = [w1, w1 + n_out * 3, n_out, 3, A.IDENTITY, DENSE_LAYER]
    size = w1 + (n_out + 1) * 3
    params = dev(rng.standard_normal(size).astype(np.float32))
    net = Network(params, layers, np.zeros((2, 2)), 0)
    x = dev(zeros_batch(rng, rows, n_in))
    dz = rng.standard_normal((rows, n_out)).astype(np.float32)
    outs, grads = [], []
    for nonzero in (False, True):
        out = cuda.device_array(rows * n_out, np.float32)
        g = dev(np.zeros(size, np.float32))
        if nonzero:
            CS.nonzero_first_forward(net, x, out, rows)
            CS.nonzero_first_backward(net, g, x, out, dev(dz), rows, applied)
        else:
            CDP.layer_forward(net, 0, out, x, x, None, rows)
            CDP.layer_backward(net, g, 0, None, None, None, dev(dz), x, None, out, None, rows, applied=applied)
        outs.append(back(out))
        grads.append(back(g))
    np.testing.assert_allclose(outs[1], outs[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads[1], grads[0], rtol=RTOL, atol=ATOL)
    assert np.abs(grads[1][:w1]).sum() > 0 and not grads[1][w1:].any()  # layer 0's [dW; db] only


