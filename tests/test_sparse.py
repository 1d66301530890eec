"""Sparse inputs: the zero-skipping first-layer kernels against NumPy, the CSR batch gather, and
models trained and run on scipy.sparse inputs against the same models on their dense twins.

Tolerances: the zero-skipping products add a row's nonzero terms in column order, BLAS in its own
blocked order; both are exact sums of the same terms (the skipped ones are exact zeros) but for
rounding, so float64 results agree to a few ulps of the largest term (1e-12 relative here), and
float32 to 1e-5. Models compared after a few Adam steps in float64 agree to 1e-9: Adam divides
each gradient by its running RMS, which keeps a relative rounding difference relative."""
import numpy as np
import pytest
import scipy.sparse as sp

from fastnn import MLP, Model, config
from fastnn import sparse_input as S
from fastnn.kernels import activations as A
from fastnn.kernels import dense as K
from fastnn.kernels.sparse import SparseBatches, gather_sparse
from fastnn.layers import Dense, Embedding, Input
from fastnn.optimizers import Adam

TOL = {np.float32: 1e-5, np.float64: 1e-12}


def sparse_rows(rng, rows, cols, density, dtype):
    """A dense array with exact zeros, an empty row and a row without zeros."""
    x = (rng.normal(size=(rows, cols)) * (rng.random((rows, cols)) < density)).astype(dtype)
    x[1] = 0
    x[2] = rng.normal(size=cols) + 3.0
    return x


def csr_of(x):
    m = sp.csr_matrix(x)
    return m.indptr.astype(np.int64), m.indices.astype(np.int32), m.data


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_dense_forward_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    x = sparse_rows(rng, 7, 11, 0.3, dtype)
    W, b = rng.normal(size=(11, 5)).astype(dtype), rng.normal(size=5).astype(dtype)
    out = np.full((7, 5), np.nan, dtype)  # every entry must be written
    K.sparse_dense_forward(out, *csr_of(x), W, b, A.TANH, 0.0)
    expected = np.tanh(x.astype(np.float64) @ W + b)
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(out[1], np.tanh(b.astype(np.float64)), rtol=TOL[dtype])  # the empty row


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_dense_backward_matches_numpy(dtype):
    rng = np.random.default_rng(1)
    x = sparse_rows(rng, 6, 9, 0.25, dtype)
    x[:, 3] = rng.normal(size=6) + 3.0  # a column of all nonzeros (but the empty row's): 4 at a time, then 1
    x[1] = 0
    dz = rng.normal(size=(6, 4)).astype(dtype)
    dW, db = np.full((9, 4), np.nan, dtype), np.full(4, np.nan, dtype)
    K.sparse_dense_backward(dW, db, dz, *csr_of(x), np.zeros(10, np.int64), np.zeros(54, np.int32),
                            np.zeros(54, dtype))
    np.testing.assert_allclose(dW, x.T.astype(np.float64) @ dz, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(db, dz.sum(axis=0, dtype=np.float64), rtol=TOL[dtype], atol=TOL[dtype])
    assert not dW[np.flatnonzero(~x.any(axis=0))].any()  # a feature with no nonzero: a zero row


def test_sparse_dense_backward_clears_only_the_previous_batch_rows_when_not_fresh():
    """Batch after batch (``fresh=False``), dW is what a fresh call computes, bit for bit: the
    previous batch's rows cleared (its features absent from this batch), nothing else written."""
    rng = np.random.default_rng(7)
    n_in, n_out, rows = 40, 5, 6
    colptr, scratch_rows, scratch_values = np.zeros(n_in + 1, np.int64), np.zeros(n_in * rows, np.int32), \
        np.zeros(n_in * rows)
    dW, db = np.full((n_in, n_out), np.nan), np.zeros(n_out)
    for step in range(4):
        x = np.zeros((rows, n_in))
        features = rng.choice(n_in, size=8, replace=False)  # a few features a batch, as in a bag of words
        x[:, features] = rng.normal(size=(rows, 8)) * (rng.random((rows, 8)) < 0.6)
        dz = rng.normal(size=(rows, n_out))
        K.sparse_dense_backward(dW, db, dz, *csr_of(x), colptr, scratch_rows, scratch_values, step == 0)
        fresh_dW = np.full((n_in, n_out), np.nan)
        K.sparse_dense_backward(fresh_dW, np.zeros(n_out), dz, *csr_of(x), np.zeros(n_in + 1, np.int64),
                                np.zeros(n_in * rows, np.int32), np.zeros(n_in * rows), True)
        np.testing.assert_array_equal(dW, fresh_dW)
        np.testing.assert_allclose(dW, x.T @ dz, rtol=1e-12, atol=1e-12)
        assert not dW[np.flatnonzero(~x.any(axis=0))].any()


@pytest.mark.parametrize("source", ["dense", "csr"])
def test_gather_sparse_writes_the_batch_rows_as_csr(source):
    rng = np.random.default_rng(2)
    x = sparse_rows(rng, 10, 6, 0.3, np.float64)
    order = rng.permutation(10).astype(np.int64)
    rows, room = 4, 4 * 6
    batch = (np.zeros(rows + 1, np.int64), np.zeros(room, np.int32), np.zeros(room), np.zeros(0, np.int64),
             np.zeros(0, np.int32), np.zeros(0))
    if source == "csr":
        bundle = SparseBatches(*csr_of(x), *batch, True)
        data = np.zeros((0, 6))
    else:
        bundle = SparseBatches(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0), *batch, True)
        data = x
    gather_sparse(bundle, np.zeros((rows, 6)), data, order, 3)
    got = sp.csr_matrix((batch[2], batch[1], batch[0]), shape=(rows, 6)).toarray()
    np.testing.assert_array_equal(got, x[order[3:7]])
    assert batch[0][-1] == np.count_nonzero(x[order[3:7]])


def test_gather_sparse_densifies_a_csr_batch():
    rng = np.random.default_rng(3)
    x = sparse_rows(rng, 8, 5, 0.4, np.float32)
    order = rng.permutation(8).astype(np.int64)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))
    xb = np.full((3, 5), np.nan, np.float32)
    gather_sparse(SparseBatches(*csr_of(x), *empty, *empty, False), xb, np.zeros((0, 5), np.float32), order, 5)
    np.testing.assert_array_equal(xb, x[order[5:8]])


def model(seed=3, n_in=12, dtype="float64"):
    m = MLP([Dense(n_in, 8, activation="relu"), Dense(8, 3, activation="softmax")], seed=seed, dtype=dtype)
    m.compile(loss="cross_entropy", optimizer=Adam(0.01), metrics=["accuracy"])
    return m


def data(rows=60, n_in=12, density=0.05, seed=4):
    rng = np.random.default_rng(seed)
    return sparse_rows(rng, rows, n_in, density, np.float64), rng.integers(0, 3, rows)


def assert_same_weights(a, b, rtol=1e-9):
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=rtol)


def dense_path(monkeypatch):
    """The dense path for every dense input (the zero-skipping layer never chosen)."""
    monkeypatch.setattr(S, "SPARSE_FIRST_LAYER_MAX_DENSITY", -1.0)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "csr_array"])
def test_training_on_sparse_input_equals_training_on_its_dense_twin(fmt, monkeypatch):
    x, y = data()
    reference = model()
    with monkeypatch.context() as m:
        dense_path(m)
        reference.fit(x, y, epochs=2, batch_size=16, verbose=0)
    sparse = model()
    xs = sp.csr_array(x) if fmt == "csr_array" else getattr(sp, f"{fmt}_matrix")(x)
    sparse.fit(xs, y, epochs=2, batch_size=16, verbose=0, validation_data=(xs, y))
    assert sparse._backend._csr_batch is not None  # the zero-skipping layer ran
    assert_same_weights(reference, sparse)
    np.testing.assert_allclose(sparse.predict(xs), reference.predict(x), rtol=1e-9)
    np.testing.assert_allclose(sparse.evaluate(xs, y, batch_size=7), reference.evaluate(x, y, batch_size=7),
                               rtol=1e-9)


def test_zero_skipping_on_a_dense_input_equals_the_dense_path(monkeypatch):
    x, y = data(seed=5)
    skipping = model()
    skipping.fit(x, y, epochs=2, batch_size=16, verbose=0)
    skipping.train_on_batch(x[:10], y[:10])
    assert skipping._backend._csr_batch is not None
    reference = model()
    dense_path(monkeypatch)
    reference.fit(x, y, epochs=2, batch_size=16, verbose=0)
    reference.train_on_batch(x[:10], y[:10])
    assert not hasattr(reference._backend, "_csr_batch")
    assert_same_weights(reference, skipping)


def test_a_dense_input_takes_the_dense_path():
    x, y = data(density=1.0)
    x[1] = 1.0  # (data's empty row)
    m = model()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert S.density(x) == 1.0 and not hasattr(m._backend, "_csr_batch")


def test_a_dense_enough_sparse_input_is_densified_per_batch(monkeypatch):
    x, y = data(seed=6, density=0.5)
    reference = model()
    dense_path(monkeypatch)
    reference.fit(x, y, epochs=1, batch_size=16, verbose=0)
    densified = model()
    densified.fit(sp.coo_matrix(x), y, epochs=1, batch_size=16, verbose=0)
    assert densified._backend._csr_batch[1].size == 0  # no room for a CSR batch: densified
    assert_same_weights(reference, densified, rtol=0)  # the same dense path on the same values
    # Then no nonzero at all: the zero-skipping layer, with no room needed but its CSC's column pointers.
    monkeypatch.undo()
    densified.fit(sp.csr_matrix(x.shape), y, epochs=1, batch_size=16, verbose=0)
    assert densified._backend._csr_batch[3].size == 13 and not densified._backend.grads[: 12 * 8].any()


@pytest.mark.slow  # a functional model of its own to compile
def test_a_functional_model_reads_sparse_input_densified():
    x, y = data(seed=7)
    models = []
    for xs in (x, sp.csr_matrix(x)):
        inp = Input(12)
        out = Dense(8, 3, activation="softmax")(Dense(12, 8, activation="relu")(inp))
        m = Model(inp, out, seed=2, dtype="float64")
        m.compile(loss="cross_entropy", optimizer=Adam(0.01))
        m.fit(xs, y, epochs=1, batch_size=16, verbose=0)
        models.append(m)
    assert_same_weights(*models, rtol=0)


def test_sparse_input_is_checked():
    m = model()
    x, y = data()
    with pytest.raises(ValueError, match="x must have 12 features"):
        m.predict(sp.csr_matrix(x[:, :5]))
    bad = sp.csr_matrix(x)
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="x contains NaN"):
        m.fit(bad, y, verbose=0)
    with pytest.raises(ValueError, match="validation_data x contains NaN"):
        m.fit(x, y, verbose=0, validation_data=(bad, y))
    with pytest.raises(TypeError, match="real numbers"):
        m.predict(sp.csr_matrix(x.astype(np.complex128)))
    broken = sp.csr_matrix(x)
    broken.indices[0] = 99  # past the last column: the kernels would write out of bounds
    with pytest.raises(ValueError, match="not a valid sparse matrix"):
        m.predict(broken)
    with pytest.raises(ValueError, match="has 5 rows"):
        m.fit(sp.csr_matrix(x), y[:5], verbose=0)


def test_duplicates_and_unsorted_indices_are_summed_on_a_copy():
    x, _ = data(rows=5)
    m = model()
    coo = sp.coo_matrix(x)
    dup = sp.coo_matrix((np.r_[coo.data, coo.data][::-1], (np.r_[coo.row, coo.row][::-1],
                                                           np.r_[coo.col, coo.col][::-1])), shape=x.shape)
    before = dup.data.copy()
    np.testing.assert_allclose(m.predict(dup), m.predict(2 * x), rtol=1e-12)
    np.testing.assert_array_equal(dup.data, before)


def test_an_embedding_model_refuses_sparse_input():
    m = MLP([Embedding(10, 4, input_length=3), Dense(12, 2)], seed=0)
    with pytest.raises(TypeError, match="Embedding"):
        m.predict(sp.csr_matrix(np.ones((2, 3))))


def test_validation_split_and_train_on_batch_take_sparse_input(monkeypatch):
    x, y = data(seed=8)
    a, b = model(), model()
    a.fit(x, y, epochs=1, batch_size=16, verbose=0, validation_split=0.25)
    history = b.fit(sp.csr_matrix(x), y, epochs=1, batch_size=16, verbose=0, validation_split=0.25)
    assert_same_weights(a, b)
    assert np.isfinite(history.history["val_loss"][0])
    np.testing.assert_allclose(b.train_on_batch(sp.coo_matrix(x[:9]), y[:9]), a.train_on_batch(x[:9], y[:9]),
                               rtol=1e-9)
    assert_same_weights(a, b)


# float32 compiles every pass of this model anew: its seconds go to -m slow.
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, marks=pytest.mark.slow), np.float64])
def test_predict_of_sparse_input_runs_over_its_nonzeros_without_densifying(dtype, monkeypatch):
    """predict of a CSR input whose first layer is Dense: its product over each batch's nonzeros
    (``inference.predict_sparse_batches``), the rest of the network as on the dense twin, at every
    batch size; evaluate's loss from those predictions; nothing densified (toarray refused), and a
    workspace with no room for the input."""
    from fastnn import BatchNormalization, Dropout
    x, y = data(seed=8)
    x = x.astype(dtype)
    m = MLP([Dense(12, 8, activation="relu"), BatchNormalization(), Dropout(0.3),
             Dense(8, 3, activation="softmax")], seed=2, dtype=dtype.__name__)
    m.compile(loss="cross_entropy", optimizer=Adam(0.01)).fit(x, y, epochs=1, batch_size=16, verbose=0)
    dense = m.predict(x)
    xs = sp.csr_matrix(x)
    monkeypatch.setattr(sp.csr_matrix, "toarray", lambda *a, **k: pytest.fail("densified"))
    backend, calls = type(m._backend), []
    original = backend.predict_sparse
    monkeypatch.setattr(backend, "predict_sparse", lambda self, *a: calls.append(1) or original(self, *a))
    for batch_size in (None, 1, 7, 1000):
        np.testing.assert_allclose(m.predict(xs, batch_size=batch_size), dense, rtol=TOL[dtype], atol=TOL[dtype])
    assert len(calls) == 4
    # evaluate (weighted too) and validation: the loss from those predictions, in the same batches
    w = np.linspace(0.0, 2.0, x.shape[0])
    for weights in (None, w):
        np.testing.assert_allclose(m.evaluate(xs, y, batch_size=7, sample_weight=weights),
                                   m.evaluate(x, y, batch_size=7, sample_weight=weights), rtol=10 * TOL[dtype])
    history = m.fit(xs, y, epochs=1, batch_size=16, verbose=0, validation_data=(xs, y)).history
    assert history["val_loss"][0] == pytest.approx(m.evaluate(x, y), rel=10 * TOL[dtype])
    from fastnn.predictor import inference_workspace
    work, _ = inference_workspace(m._backend.spec.table, None, 16, dtype, input_room=False)
    assert work.act_off[0] == work.act_off[1] == 0 and work.acts.size == 16 * (8 + 8 + 8 + 3)


def test_predict_of_a_dense_enough_sparse_input_densifies_chunks(monkeypatch):
    """Above the density rule, or with a first layer that cannot skip zeros, predict densifies a
    chunk of rows at a time, as before: the same numbers."""
    x, y = data(seed=9, density=0.5)
    m = model()
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    calls = []
    monkeypatch.setattr(type(m._backend), "predict_sparse", lambda *a, **k: calls.append(1))
    np.testing.assert_allclose(m.predict(sp.csr_matrix(x)), m.predict(x), rtol=1e-12)
    assert not calls


def test_evaluate_of_a_sparse_input_predicts_it_once(monkeypatch):
    """evaluate with a metric that needs the predictions (AUC) makes them once, over the nonzeros,
    for the loss and the metrics alike, and gives the dense twin's figures."""
    x, y = data()
    m = model()
    m.compile(loss="cross_entropy", optimizer=Adam(0.01), metrics=["accuracy", "auc"])
    reference = m.evaluate(x, y, batch_size=7)  # dense x: the dense path
    calls = []
    original = m._backend.predict_sparse
    monkeypatch.setattr(m._backend, "predict_sparse", lambda *a, **k: calls.append(1) or original(*a, **k))
    figures = m.evaluate(sp.csr_matrix(x), y, batch_size=7)
    assert len(calls) == 1
    np.testing.assert_allclose(figures, reference, rtol=1e-9)


@pytest.mark.parametrize("threads", ["serial", "parallel"])
@pytest.mark.parametrize("dtype", [pytest.param("float64", marks=pytest.mark.slow), "float32"])
def test_the_first_layers_product_over_nonzero_columns_trains_as_the_dense_path(dtype, threads, monkeypatch):
    """A dense input with many zeros and a first layer wide enough: fit's first forward product
    and weight gradient run over each batch's nonzero columns (``kernels/sparse.py:
    nonzero_first_forward``/``nonzero_first_backward``), the same sums as GEMM's up to their
    order; the weights after training match the GEMM path's. "parallel": a step whose products
    would run BLAS on several threads (no FLOPs too few here) runs both on Numba's threads, and
    gathers its batch there too (32 rows of 1,100: above ``PARALLEL_MIN_GATHER``)."""
    from fastnn import cpu_backend
    from fastnn.cpu_backend import CPUBackend
    from fastnn.kernels.simd import SIMD
    from fastnn.threading import get_num_threads
    rng = np.random.default_rng(6)
    x = rng.random((200, 1100)).astype(dtype)
    x[:, 6:776] = 0  # 30% nonzero (the CSR path takes under 10%), 770 columns zero in every row (as
    y = rng.integers(0, 3, 200)  # MNIST's borders), the first and the last nonzero
    if threads == "parallel":
        monkeypatch.setattr(cpu_backend, "BLAS_PARALLEL_MIN_FLOPS", 0)

    def build():
        m = MLP([Dense(1100, 70, activation="relu"), Dense(70, 3, activation="softmax")], seed=3, dtype=dtype)
        m.compile(loss="cross_entropy", optimizer=Adam(0.01))
        return m
    skipping = build()
    skipping.fit(x, y, epochs=2, batch_size=32, verbose=0)
    if threads == "serial" or (config.PARALLEL and get_num_threads() > 1):
        assert skipping._backend._nonzero_plan(x, None, 32) is ((threads == "parallel") if SIMD else None)
    skipping.train_on_batch(x[:40], y[:40])
    assert hasattr(skipping._backend, "_nonzero_idx") == SIMD
    reference = build()
    monkeypatch.setattr(CPUBackend, "_nonzero_plan", lambda self, *args: None)
    reference.fit(x, y, epochs=2, batch_size=32, verbose=0)
    reference.train_on_batch(x[:40], y[:40])
    assert not hasattr(reference._backend, "_nonzero_idx")
    assert_same_weights(reference, skipping, rtol=1e-9 if dtype == "float64" else 2e-5)


@pytest.mark.slow
def test_a_step_calling_the_nonzero_product_by_address_loads_from_the_cache_in_a_new_process(tmp_path):
    """The step calls the product through a symbol that ``kernels/dense.py: nonzero_entry``
    registers: a process that loads the cached step (not compiling it) must register it first,
    else the step fails to load or calls nowhere."""
    import os
    import subprocess
    import sys
    code = ("import numpy as np; from fastnn import MLP, Dense; "
            "x = np.random.default_rng(0).random((96, 40)).astype('float32'); x[:, 6:34] = 0; "
            "m = MLP([Dense(40, 70, activation='relu'), Dense(70, 3, activation='softmax')], seed=0); "
            "m.compile(loss='cross_entropy', optimizer='adam'); "
            "m.fit(x, np.arange(96) % 3, epochs=1, batch_size=32, verbose=0); "
            "print(hasattr(m._backend, '_nonzero_idx'), np.isfinite(m.get_weights()[0]).all())")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for _ in range(2):  # compiles, then loads
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split()[-2:] == ["True", "True"]
