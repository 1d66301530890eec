"""model.predictor(): the trained network for Python and for the user's own @numba.njit code, and
predict's few-row path, which runs on the same object."""
import numba
import numpy as np
import pytest

import fastnn
from fastnn import MLP, BatchNormalization, Dense, Dropout, Input, Model
from fastnn.kernels.dense import row_times_matrix

# predictor() runs 64 rows a pass and model.predict up to 1,024: the products have other shapes,
# which BLAS may round differently in the last bits; 1e-5 is tens of float32 ulps at these sizes.
RTOL = 1e-5


def trained(layers, dtype="float32", seed=3):
    rng = np.random.default_rng(seed)
    n_in = layers[0].input_dim
    x = rng.random((150, n_in)).astype(dtype)
    x[x < 0.6] = 0  # mostly zeros, as an image's pixels: both paths of the few-row product run
    y = rng.integers(0, 3, 150)
    model = MLP(layers, seed=seed, dtype=dtype)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return model, x


def seed_like(dtype="float32"):
    return trained([Dense(12, 8, activation="relu"), Dense(8, 6, activation="tanh"),
                    Dense(6, 3, activation="softmax")], dtype)


@numba.njit
def run_inside(p, x):
    """The user's compiled code: one row at a time into a buffer it owns."""
    out = np.empty((x.shape[0], p.n_out), x.dtype)
    row = np.empty((1, p.n_out), x.dtype)
    for i in range(x.shape[0]):
        p.predict(x[i:i + 1], row)
        out[i, :] = row[0, :]
    return out


@numba.njit
def run_allocating(p, x):
    return p.predict(x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_predictor_gives_predicts_outputs_from_python_and_from_compiled_code(dtype):
    model, x = seed_like(dtype)
    p = model.predictor()
    assert (p.n_in, p.n_out, p.dtype, p.rows) == (12, 3, np.dtype(dtype), 64)
    expected = model.predict(x)
    np.testing.assert_allclose(p.predict(x), expected, rtol=RTOL, atol=1e-7)
    # One row at a time: the same code as a one-row call from Python, so the same bits.
    inside = run_inside(p, x)
    np.testing.assert_array_equal(inside, np.concatenate([p(x[i]) for i in range(x.shape[0])]))
    np.testing.assert_allclose(inside, expected, rtol=RTOL, atol=1e-7)
    np.testing.assert_array_equal(run_allocating(p, x), p.predict(x))
    out = np.full((x.shape[0], 3), np.nan, dtype)
    assert p.predict(x, out) is out
    np.testing.assert_array_equal(out, p.predict(x))


def test_the_predictor_keeps_the_weights_it_was_made_with():
    model, x = seed_like()
    p = model.predictor()
    before = p.predict(x)
    model.fit(x, np.zeros(x.shape[0], int), epochs=1, verbose=0)
    model.set_weights([w * 2 for w in model.get_weights()])
    np.testing.assert_array_equal(p.predict(x), before)
    assert not np.allclose(model.predict(x), before)
    np.testing.assert_allclose(model.predictor().predict(x), model.predict(x), rtol=RTOL, atol=1e-7)


def test_a_copy_has_its_own_workspace_and_the_same_outputs():
    model, x = seed_like()
    p = model.predictor(rows=5)
    q = p.copy()
    assert q.rows == 5
    np.testing.assert_array_equal(q.predict(x), p.predict(x))
    np.testing.assert_allclose(p.predict(x), model.predict(x), rtol=RTOL, atol=1e-7)


def test_shapes_that_do_not_match_raise_from_python_and_from_compiled_code():
    model, x = seed_like()
    p = model.predictor()
    with pytest.raises(ValueError, match="x must have shape"):
        p.predict(x[:, :5])
    with pytest.raises(ValueError, match="out must have shape"):
        p.predict(x, np.empty((x.shape[0], 2), np.float32))
    with pytest.raises(TypeError, match="out must be a C-contiguous array of float32"):
        p.predict(x, np.empty((x.shape[0], 3), np.float64))
    with pytest.raises(ValueError, match="x must have shape"):
        run_inside(p, x[:, :5].copy())
    with pytest.raises(ValueError, match="rows must be"):
        model.predictor(rows=0)


def every_kind_model(kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    if kind == "functional":
        inp = Input(5)
        a = Dense(5, 4, activation="relu")(inp)
        b = Dense(5, 4, activation="tanh")(inp)
        out = Dense(8, 3, activation="softmax")(fastnn.Concatenate()([a, b]))
        model = Model(inp, out)
    else:
        model = MLP([Dense(5, 6, activation="relu"), BatchNormalization(), Dropout(0.3),
                     Dense(6, 3, activation="softmax")], seed=1)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return model, x


# A functional model with -m slow: its graph walker compiles for this test alone.
@pytest.mark.parametrize("kind", ["batchnorm_dropout", pytest.param("functional", marks=pytest.mark.slow)])
def test_every_layer_kind_runs_in_the_predictor(kind):
    model, x = every_kind_model(kind)
    p = model.predictor()
    np.testing.assert_allclose(p.predict(x), model.predict(x), rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(run_inside(p, x), model.predict(x), rtol=RTOL, atol=1e-7)


# Slow: the shared-batches predict of these kinds compiles for this test alone (17 s).
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["batchnorm_dropout", "functional"])
def test_every_layer_kind_runs_in_batches_shared_among_threads(kind, monkeypatch):
    """predict over batches on Numba's threads (``inference.predict_batches_parallel``), every
    thread a workspace of its own, BatchNorm's scratch included: the predictor's answers."""
    from fastnn import cpu_backend
    model, x = every_kind_model(kind)
    monkeypatch.setattr(cpu_backend, "BLAS_PARALLEL_MIN_FLOPS", 0)
    np.testing.assert_allclose(model.predict(x, batch_size=8), model.predictor().predict(x), rtol=RTOL, atol=1e-7)


def test_predicts_few_row_path_equals_the_full_path_and_follows_the_weights():
    model, x = seed_like()
    full = model.predict(x, batch_size=64)
    for n in (1, 2, 4):
        np.testing.assert_allclose(model.predict(x[:n]), full[:n], rtol=RTOL, atol=1e-7)
        np.testing.assert_allclose(model(x[:n]), full[:n], rtol=RTOL, atol=1e-7)
    # Inputs it does not take as they are go the full way, converted and checked as before.
    np.testing.assert_allclose(model.predict(x[:2].astype(np.float64)), full[:2], rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(model.predict(x[:2].tolist()), full[:2], rtol=RTOL, atol=1e-7)
    with pytest.raises(ValueError, match="x"):
        model.predict(x[:1, :5])
    nan_row = x[:1].copy()
    nan_row[0, 0] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):  # as the full path
        model.predict(nan_row)
    assert np.isnan(model.predictor().predict(nan_row)).all()  # the predictor: NaN in, NaN out
    model.set_weights([w * 0.5 for w in model.get_weights()])  # written in place: the path sees it
    np.testing.assert_allclose(model.predict(x[:1]), model.predict(x, batch_size=64)[:1], rtol=RTOL, atol=1e-7)
    model.compile(loss="mse", optimizer="sgd")  # a rebuild: new buffers, a new few-row predictor
    np.testing.assert_allclose(model.predict(x[:1]), model.predict(x, batch_size=64)[:1], rtol=RTOL, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("n_in", [37, 200])  # one partial block of 64 inputs; three whole ones and a partial
def test_row_times_matrix_is_the_vector_matrix_product(density, dtype, n_in):
    rng = np.random.default_rng(int(density * 10))
    W = rng.standard_normal((n_in, 11)).astype(dtype)
    x = rng.standard_normal(n_in).astype(dtype)
    x[rng.permutation(n_in)[: int(round((1 - density) * n_in))]] = 0
    out = np.full(11, np.nan, dtype)
    row_times_matrix(out, x, W)
    expected = x.astype(np.float64) @ W.astype(np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("where", [0, 63, 64, 199])  # the first and last element of a block, the last of x
def test_row_times_matrix_sees_a_nonzero_at_a_block_edge_and_a_nan(where):
    W = np.arange(200 * 3, dtype=np.float32).reshape(200, 3)
    x = np.zeros(200, np.float32)
    x[where] = 2
    out = np.full(3, np.nan, np.float32)
    row_times_matrix(out, x, W)
    np.testing.assert_array_equal(out, 2 * W[where])
    x[where] = np.nan
    row_times_matrix(out, x, W)
    assert np.isnan(out).all()


@pytest.mark.slow
def test_the_surrogate_example_runs(capsys):
    import runpy
    import sys
    path = str(__import__("pathlib").Path(__file__).parents[1] / "examples" / "surrogate_in_numba.py")
    old = sys.argv
    sys.argv = [path, "--quick"]
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert "predictor inside @njit" in out and "model.predict from Python" in out


def test_predict_scans_each_batch_for_nan_in_its_compiled_pass_and_names_the_row():
    model, x = seed_like()
    x = np.ascontiguousarray(np.tile(x, (3, 1)))  # 450 rows: several batches at batch_size=64
    for row, value in ((0, np.nan), (131, np.inf), (449, -np.inf)):
        bad = x.copy()
        bad[row, 5] = value
        for batch_size in (None, 64):
            with pytest.raises(ValueError, match=f"x contains NaN or infinite values.*row {row}$"):
                model.predict(bad, batch_size=batch_size)
    # a float64 value beyond float32's range is infinite once converted, and named so
    big = x.astype(np.float64)
    big[3, 2] = 1e300
    with pytest.raises(ValueError, match="beyond float32's range"):
        model.predict(big)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_first_dense_layers_product_catches_every_nan_or_infinity(dtype):
    """A stack whose first layer is Dense checks its product, not its input (the input is read once):
    a NaN or an infinity in a row makes every column of that row's product one, even in an input
    column whose weights are all zero (NaN * 0 and inf * 0 are NaN), or a row of zeros but for it;
    then the batch is scanned and the row named. Finite rows whose product overflows pass, as
    PyTorch's do."""
    model, x = seed_like(dtype)
    x = np.ascontiguousarray(np.tile(x, (3, 1)))
    weights = model.get_weights()
    weights[0][7] = 0.0  # input column 7 reaches nothing
    model.set_weights(weights)
    for row, col, value in ((0, 7, np.nan), (200, 7, np.inf), (449, 7, -np.inf), (64, 0, np.nan)):
        bad = x.copy()
        bad[row] = 0.0
        bad[row, col] = value
        for batch_size in (None, 64, 1):
            with pytest.raises(ValueError, match=f"x contains NaN or infinite values.*row {row}$"):
                model.predict(bad, batch_size=batch_size)
    huge = x.copy()
    huge[5] = np.finfo(dtype).max
    out = model.predict(huge)  # no error: the input is finite
    assert np.isfinite(np.delete(out, 5, axis=0)).all()


def test_a_model_reading_embedding_ids_has_no_predictor():
    model = MLP([fastnn.Embedding(10, 3), Dense(3, 2, activation="softmax")], seed=0)
    model.compile(loss="categorical_crossentropy")
    with pytest.raises(TypeError, match="Embedding ids"):
        model.predictor()


@pytest.mark.parametrize("dtype", ["float32", pytest.param("float64", marks=pytest.mark.slow)])
def test_batch_predict_over_the_nonzero_columns_is_the_dense_forward_pass(dtype):
    """A first Dense layer wide enough and an input with many zeros: predict multiplies the
    nonzero columns only (``kernels/dense.py: nonzero_rows_product``), with the answer of NumPy's
    dense forward pass (sums in another order: within RTOL); a NaN is still caught and named.
    An input without zeros, or a first layer too narrow for the kernel's blocks, takes GEMM."""
    from fastnn.kernels.simd import SIMD
    model, _ = trained([Dense(120, 96, activation="relu"), Dense(96, 3, activation="softmax")], dtype)
    x = np.random.default_rng(4).random((300, 120)).astype(dtype)
    x[x < 0.95] = 0  # blocks of 6 rows: about a quarter of the columns nonzero
    backend = model._backend
    assert backend._nonzero_first(x, 300, 1) == SIMD
    assert not backend._nonzero_first(x + 1, 300, 1)  # no zeros
    assert not backend._nonzero_first(x[:3], 3, 1)  # too few rows
    assert not backend._nonzero_first(x, 300, 8)  # against BLAS on 8 threads, one thread's product
    W0, b0, W1, b1 = (w.astype(np.float64) for w in model.get_weights())
    z = np.maximum(x @ W0 + b0, 0) @ W1 + b1
    want = np.exp(z - z.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    for batch_size in (None, 64, 7):
        np.testing.assert_allclose(model.predict(x, batch_size=batch_size), want, rtol=RTOL, atol=1e-6)
    bad = x.copy()
    bad[201] = 0
    bad[201, 4] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or infinite values.*row 201$"):
        model.predict(bad)
    narrow, _ = trained([Dense(120, 8, activation="relu"), Dense(8, 3, activation="softmax")], dtype)
    assert not narrow._backend._nonzero_first(x, 300, 1)  # 8 of a block's 32 or 64 columns


@pytest.mark.parametrize("nonzero", [False, True])
def test_batches_shared_among_threads_are_the_serial_passes(nonzero, monkeypatch):
    """``predict_batches_parallel`` runs batches t, t + T, ... on thread t with a workspace of its
    own: every row equals the serial pass's bit for bit (the same batches, BLAS on one thread in
    both), for any thread count, and the first bad row is found whichever thread met it first."""
    from fastnn import cpu_backend
    from fastnn.kernels import inference
    from fastnn.kernels.simd import SIMD
    from fastnn.predictor import inference_workspace
    from fastnn.threading import blas_threads_for
    model, _ = trained([Dense(120, 96, activation="relu"), Dense(96, 3, activation="softmax")])
    x = np.random.default_rng(5).random((300, 120)).astype(np.float32)
    x[x < 0.9] = 0
    backend = model._backend
    nonzero = nonzero and SIMD
    table = backend.spec.table

    def serial(x, batch_size):
        out = np.full((x.shape[0], 3), -1.0, np.float32)
        work, _ = inference_workspace(table, None, batch_size, np.float32)
        bad = inference.predict_batches(out, backend._network(batch_size, measure=False), x, batch_size, work, False,
                                        *backend.kinds, None, True, nonzero)
        return out, bad

    def shared(x, batch_size, threads):
        out = np.full((x.shape[0], 3), -1.0, np.float32)
        works, _ = inference_workspace(table, None, batch_size, np.float32, threads=threads)
        bad = inference.predict_batches_parallel(out, backend._network(batch_size, measure=False), x, batch_size,
                                                 works, *backend.kinds, None, True, nonzero)
        return out, bad

    bad_x = x.copy()
    bad_x[250, 7] = np.inf  # batch 35 of 7 rows
    bad_x[201, 3] = np.nan  # batch 28: the first bad batch, on another thread than batch 35 for 2 and 3 threads
    with blas_threads_for(0):
        want, ok = serial(x, 7)
        assert ok == -1 and (want >= 0).all()
        for threads in (1, 2, 3, 5):
            got, ok = shared(x, 7, threads)
            np.testing.assert_array_equal(got, want)
            assert ok == -1
            assert shared(bad_x, 7, threads)[1] == serial(bad_x, 7)[1] == 196
    # Through predict: the backend shares the batches wherever there are two or more and enough work.
    monkeypatch.setattr(cpu_backend, "BLAS_PARALLEL_MIN_FLOPS", 0)
    np.testing.assert_allclose(model.predict(x, batch_size=7), want, rtol=RTOL, atol=1e-7)
    with pytest.raises(ValueError, match="x contains NaN or infinite values.*row 201$"):
        model.predict(bad_x, batch_size=7)


@pytest.mark.parametrize("weighted", [False, True])
def test_evaluate_shares_its_batches_as_predict_and_gives_the_serial_figures(weighted, monkeypatch):
    """Where predict shares its batches among threads, evaluate predicts a chunk of whole batches at a
    time that way and sums each batch's loss in order (``evaluate_predictions``): the figures of its
    serial pass (``evaluate_batches``), with BLAS on one thread in both, within float32 rounding of
    the predictions (the loss, a float64 sum of 300 rows' terms) and exactly for the correct rows."""
    from fastnn import cpu_backend
    from fastnn.threading import blas_threads_for
    model, _ = trained([Dense(120, 96, activation="relu"), Dense(96, 3, activation="softmax")])
    rng = np.random.default_rng(6)
    x = rng.random((300, 120)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 300)]
    w = rng.random(300).astype(np.float32) if weighted else None
    backend = model._backend
    args = (x, y, model.loss.code, 7) + (() if w is None else (w,))
    with blas_threads_for(0):
        want = backend.evaluate(*args)  # the serial pass: too little work to share
        monkeypatch.setattr(cpu_backend, "BLAS_PARALLEL_MIN_FLOPS", 0)
        monkeypatch.setattr(cpu_backend, "EVALUATE_CHUNK_ELEMENTS", 5 * 7 * 3)  # 9 chunks of 5 batches
        calls = []
        predict = backend.predict
        monkeypatch.setattr(backend, "predict", lambda *a, **k: calls.append(a[0].shape[0]) or predict(*a, **k))
        got = backend.evaluate(*args)
    assert calls == [35] * 8 + [20]
    assert got[1] == want[1] > 0
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    monkeypatch.undo()
    monkeypatch.setattr(cpu_backend, "BLAS_PARALLEL_MIN_FLOPS", 0)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=7, sample_weight=w), want[0] / 300, rtol=1e-6)
