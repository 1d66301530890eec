"""Defects found by trying fastnn as a new user would; each test failed before its fix."""
import json
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import MLP, Dense
from helpers import UserDense


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return (2.0 * np.eye(3, 5)[labels] + rng.normal(size=(n, 5))).astype(np.float32), labels


def small(seed=0, **compile_args):
    model = MLP([Dense(5, 16, activation="relu"), Dense(16, 3, activation="softmax")], seed=seed)
    return model.compile("cross_entropy", compile_args.pop("optimizer", "adam"), **compile_args)


# ---- threads ---------------------------------------------------------------------------------

def test_predict_from_many_threads_on_a_model_not_yet_used():
    """Was: AttributeError from the half-built backend, and other weights than seed 0 gives."""
    x, _ = blobs()
    expected = small().predict(x)
    for _ in range(5):
        model = small()
        results, errors = [], []

        def work():
            try:
                results.append(model.predict(x))
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for r in results:
            np.testing.assert_array_equal(r, expected)


def test_predict_from_many_threads_on_a_used_model_is_right(monkeypatch):
    """Was: 'total size of new array must be unchanged' and silently wrong outputs while one
    thread's call grew the workspace under another's."""
    monkeypatch.setattr(sys, "getswitchinterval", sys.getswitchinterval)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        x, y = blobs(n=600)
        model = small()
        model.fit(x, y, epochs=1, verbose=0)
        sizes = [1, 7, 64, 333, 600]
        # Expected outputs at the batch size the threads use: a product of another shape may
        # round differently in the last place (OpenBLAS's Haswell kernels do at 7 and 333 rows).
        expected = {n: model.predict(x[:n], batch_size=max(1, n // 2)) for n in sizes}
        errors, wrong = [], []

        def work(k):
            try:
                for i in range(40):
                    n = sizes[(i + k) % len(sizes)]
                    if not np.array_equal(model.predict(x[:n], batch_size=max(1, n // 2)), expected[n]):
                        wrong.append(n)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors and not wrong


def test_a_second_training_call_while_one_runs_is_refused():
    x, y = blobs()
    model = small()
    seen = []

    class Intruder(fastnn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with pytest.raises(RuntimeError, match="already training"):
                model.fit(x, y, epochs=1, verbose=0)
            with pytest.raises(RuntimeError, match="architecture cannot change"):
                model.add(Dense(3, 2))  # was: trained on mismatched targets, loss 57, no error
            seen.append(epoch)

    model.fit(x, y, epochs=2, verbose=0, callbacks=[Intruder()])
    assert seen == [0, 1] and len(model.layers) == 2


# ---- inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [np.array([0, 1, 2, 1] * 50, np.float16), np.array([0, 1, 2, 1] * 50, ">f8"),
                                    np.array([0, 1, 2, 1] * 50, ">i4")])
def test_labels_of_any_real_dtype_and_byte_order(labels):
    """Was: NotImplementedError: float16 / TypingError: Unsupported array dtype."""
    x, _ = blobs()
    history = small().fit(x, labels, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_a_huge_label_is_reported_as_given():
    """Was: 'class label -9223372036854775808'."""
    x, labels = blobs()
    labels = labels.astype(np.float64)
    labels[3] = 1e20
    with pytest.raises(ValueError, match=r"class label 1e\+20, outside \[0, 3\)"):
        small().fit(x, labels, epochs=1, verbose=0)


def test_a_batch_larger_than_the_data_is_one_batch():
    """Was: fit(batch_size=10**9) on 20 rows tried to allocate 55.9 GiB."""
    x, y = blobs(n=20)
    model = small()
    model.fit(x, y, batch_size=10 ** 9, epochs=2, verbose=0)
    assert model._backend.capacity == 20
    assert model._backend.state()["opt_steps"].tolist() == [2]


def test_binary_cross_entropy_on_unbounded_outputs_says_what_is_wrong():
    """Was: a loss of 43.07 and advice to lower the learning rate."""
    x, _ = blobs()
    y = (x[:, 0] > 0).astype(np.float32)
    model = MLP([Dense(5, 1, activation=None)]).compile("binary_crossentropy", "adam")
    with pytest.raises(ValueError, match="BinaryCrossEntropy takes probabilities.*activation is Identity"):
        model.fit(x, y, verbose=0)


def test_star_import_exports_no_submodules():
    """Was: after ``import threading; from fastnn import *``, threading.Thread was gone."""
    namespace = {}
    exec("import threading\nfrom fastnn import *", namespace)
    assert namespace["threading"].Thread is threading.Thread
    assert {"threading", "model", "config", "kernels", "backend", "metrics"}.isdisjoint(fastnn.__all__)
    assert {"MLP", "Dense", "Adam", "load_model", "TerminateOnNaN"} <= set(fastnn.__all__)


# ---- divergence --------------------------------------------------------------------------------

def test_a_model_whose_weights_diverged_refuses_to_predict_or_save(tmp_path):
    """Was: predict returned inf without a word, evaluate nan, and save wrote a file that
    load_model refused."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = x[:, :1].copy()
    x[70] = 1e30  # its update sends the weights to inf; the next batch's loss is NaN
    model = MLP([Dense(3, 1, activation=None)], seed=0).compile("mse", fastnn.SGD(0.01))
    with pytest.raises(FloatingPointError, match="weights are no longer finite"):
        model.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    for call in (lambda: model.predict(x), lambda: model.evaluate(x, y), lambda: model.save(tmp_path / "m.npz")):
        with pytest.raises(ValueError, match="training diverged"):
            call()
    assert not (tmp_path / "m.npz").exists()
    model.set_weights([np.ones((3, 1), np.float32), np.zeros(1, np.float32)])
    assert np.isfinite(model.predict(x[:5])).all()
    model.save(tmp_path / "m.npz")
    fastnn.load_model(tmp_path / "m.npz")


def test_a_diverged_loss_with_finite_weights_keeps_them():
    x, _ = blobs()
    y = x[:, :2].copy()
    x[5] = np.float32(3e38)  # the first batch's outputs overflow: its loss is inf, no update ran
    model = MLP([Dense(5, 2, activation=None)], seed=0).compile("mse", "adam")
    with pytest.raises(FloatingPointError, match="weights are those before that batch"):
        model.fit(x, y, batch_size=32, shuffle=False, verbose=0)
    assert np.isfinite(model.predict(x[10:20])).all()


# ---- loading -----------------------------------------------------------------------------------

def _claiming(tmp_path, width):
    """A small saved model whose config claims a hidden layer of ``width`` units."""
    model = small()
    model.save(tmp_path / "small.npz")
    with np.load(tmp_path / "small.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    config = json.loads(arrays.pop("config").tobytes().decode())
    config["layers"][0]["config"]["output_dim"] = width
    config["layers"][1]["config"]["input_dim"] = width
    path = tmp_path / "claims.npz"
    with open(path, "wb") as f:
        np.savez(f, config=np.frombuffer(json.dumps(config).encode(), np.uint8), **arrays)
    return path


@pytest.mark.parametrize("width", [8000, 10 ** 6, 10 ** 12])
def test_a_file_claiming_huge_layers_is_refused_before_allocating(tmp_path, width):
    """Was: 5.4 s and 2 GB before the refusal (8000), MemoryError instead of ValueError (10^6)."""
    path = _claiming(tmp_path, width)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="params must be a float vector of"):
            fastnn.load_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6


def test_loading_does_not_initialize_the_weights_first(tmp_path, monkeypatch):
    model = small()
    model.save(tmp_path / "m.npz")
    calls = []
    real = fastnn.Dense.initial_weights
    monkeypatch.setattr(fastnn.Dense, "initial_weights", lambda self, *a: calls.append(1) or real(self, *a))
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert calls == []
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ---- Ctrl-C ------------------------------------------------------------------------------------

def test_an_interrupt_stops_between_chunks_with_the_model_consistent(monkeypatch):
    """Was: a KeyboardInterrupt arrived only when the whole epoch had run in one compiled call."""
    import fastnn.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "_CHUNK_FLOPS", 1.0)  # one batch per call
    x, y = blobs(n=320)
    model = small()
    backend = model._ensure_built() or model._backend
    real_train, calls = backend.train, []

    def train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # Python delivers Ctrl-C between two calls
        return real_train(*args, **kwargs)

    monkeypatch.setattr(backend, "train", train)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert backend.state()["opt_steps"].tolist() == [3]  # three whole batches, nothing half-done
    monkeypatch.setattr(backend, "train", real_train)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)  # and training goes on
    assert np.isfinite(model.predict(x)).all()


def test_building_a_large_layer_makes_few_copies():
    """Was: Dense(8000, 8000), 256 MB of parameters, peaked at 2.05 GB (8 buffers' worth).
    Training needs four (parameters, gradients, two optimizer states); the float64 draw of
    the initializer adds a fifth and a half while it runs."""
    tracemalloc.start()
    try:
        model = MLP([Dense(3000, 3000, activation="relu")], seed=0)
        model._ensure_built()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5.5 * model.count_params() * 4


# ---- misuse of Embedding, Model and compile --------------------------------------------------

def embedding_model():
    model = MLP([fastnn.Embedding(10, 4, input_length=2), Dense(None, 3, activation="softmax")], seed=0)
    return model.compile("cross_entropy", "adam")


def test_an_embedding_model_refuses_empty_input():
    """Was: predict raised 'range() arg 3 must not be zero' and fit a ZeroDivisionError."""
    model = embedding_model()
    empty = np.zeros((0, 2), np.int64)
    with pytest.raises(ValueError, match=r"x is empty: expected at least one row"):
        model.predict(empty)
    with pytest.raises(ValueError, match=r"x is empty: expected at least one row"):
        model.fit(empty, np.zeros(0, np.int64), verbose=0)
    with pytest.raises(ValueError, match=r"x is empty: expected at least one row"):
        model.evaluate(empty, np.zeros(0, np.int64))


def test_an_embedding_of_no_ids_is_refused():
    """A table of 0 rows can look up nothing: refused as Keras refuses input_dim <= 0."""
    for rows in (0, -1):
        with pytest.raises(ValueError, match=r"input_dim must be >= 1"):
            fastnn.Embedding(rows, 4)


def test_an_embedding_after_another_layer_is_refused_at_add():
    """Was: accepted when the previous layer's width equalled input_length, failing only at fit."""
    model = MLP([Dense(3, 2)])
    with pytest.raises(ValueError, match=r"Embedding reads integer ids: it must be the first layer"):
        model.add(fastnn.Embedding(10, 4, input_length=2))
    assert len(model.layers) == 1
    first = MLP([fastnn.Input((2,))]).add(fastnn.Embedding(10, 4, input_length=2))  # after an Input: first
    assert len(first.layers) == 2


@pytest.mark.slow  # a graph compiled for it alone
def test_the_same_input_twice_is_refused_and_the_input_stays_usable():
    """Was: an error naming no Input, and the Input marked as belonging to a model, so that
    building the right model with it failed too."""
    a = fastnn.Input((3,))
    out = Dense(units=2, activation="softmax")(a)
    with pytest.raises(ValueError, match=r"inputs\[1\] is inputs\[0\] again: each Input appears once"):
        fastnn.Model(inputs=[a, a], outputs=out)
    model = fastnn.Model(inputs=[a], outputs=out).compile("cross_entropy", "adam")
    x, y = blobs(n=20)
    model.fit(x[:, :3], y % 2, epochs=1, verbose=0)
    assert model.predict(x[:, :3]).shape == (20, 2)


def test_compile_while_fit_runs_is_refused():
    """Was: accepted from a callback, and later epochs logged other metrics (a ragged History)."""
    x, y = blobs()
    model = small(metrics=["accuracy"])
    errors = []

    class Recompile(fastnn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            try:
                model.compile("cross_entropy", "sgd", metrics=["accuracy", "f1"])
            except RuntimeError as exc:
                errors.append(str(exc))

    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[Recompile()])
    assert len(errors) == 2 and "compile" in errors[0] and "training" in errors[0]
    assert sorted(history.history) == ["accuracy", "loss"]
    assert all(len(v) == 2 for v in history.history.values())
    assert model.metrics == ["accuracy"] and isinstance(model.optimizer, fastnn.optimizers.Adam)


# ---- read-only inputs --------------------------------------------------------------------------

def memmapped(path, array, mode):
    np.save(path, array)
    return np.load(path, mmap_mode=mode)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_fit_trains_on_a_memory_mapped_file_without_copying_it(tmp_path, mode):
    """Was: a read-only memmap (mode 'r') was copied whole before training, 2 GB of data peaking
    at 4.3 GB; the training step only gathers its rows, so it takes the file's pages as they are."""
    x, labels = blobs(n=96)
    mx = memmapped(tmp_path / "x.npy", x, mode)
    my = memmapped(tmp_path / "y.npy", np.eye(3, dtype=np.float32)[labels], mode)
    model = small()
    backend = model._ensure_built() or model._backend
    real_train, seen = backend.train, []

    def train(data, *args, **kwargs):
        seen.append(data)
        return real_train(data, *args, **kwargs)

    backend.train = train
    history = model.fit(mx, my, epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    assert seen and all(np.shares_memory(x_, mx) and np.shares_memory(y_, my) for x_, y_, *_ in seen)
    assert np.isfinite(history.history["val_loss"]).all()
    # The same training on an in-memory copy: the same weights.
    reference = small()
    reference.fit(x, np.eye(3, dtype=np.float32)[labels], epochs=2, batch_size=16, verbose=0, validation_split=0.25)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(mx), model.predict(x))
    assert model.evaluate(mx, my) == model.evaluate(x, np.eye(3, dtype=np.float32)[labels])
    assert not np.shares_memory(mx, model.predict(mx))


def test_a_functional_model_of_one_input_trains_on_a_read_only_array_without_copying_it():
    x, labels = blobs(n=64)
    x.setflags(write=False)
    a = fastnn.Input((5,))
    model = fastnn.Model(a, Dense(units=3, activation="softmax")(a), seed=0).compile("cross_entropy", "adam")
    backend = model._ensure_built() or model._backend
    real_train, seen = backend.train, []

    def train(data, *args, **kwargs):
        seen.append(data[0])
        return real_train(data, *args, **kwargs)

    backend.train = train
    model.fit(x, labels, epochs=1, batch_size=16, verbose=0)
    assert seen and all(np.shares_memory(s, x) for s in seen)
    assert np.isfinite(model.predict(x)).all()


# ---- Ctrl-C between calls into the compiled loop, for every kind of layer -----------------------


def batches_per_call(model, x, y, batch_size):
    """The number of batches of each call into the compiled loop during one epoch of fit (the
    calls recorded, not run: only their sizes are wanted)."""
    backend = model._ensure_built() or model._backend
    sizes = []

    def train(data, order, batch_size, first, stop, *args, **kwargs):
        sizes.append(stop - first)
        return -1

    backend.train = train
    model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    assert sum(sizes) == -(-len(x) // batch_size)
    return sizes


def test_a_large_embedding_table_makes_short_calls():
    """Was: one call for the whole epoch (6.3 s for a 300k-row table), since the calls were sized
    by the dense layers' products alone; every step's optimizer update runs over the whole table.
    Measured on 2 cores: 1.8 ns per parameter a step (Embedding(300000, 32), batch 32), so
    2.5e8 parameter updates take about 0.45 s."""
    model = MLP([fastnn.Embedding(100_000, 16), Dense(None, 2, activation="softmax")], seed=0)
    model.compile("cross_entropy", "adam")
    x = np.arange(2000).reshape(-1, 1) % 100_000
    sizes = batches_per_call(model, x, x[:, 0] % 2, batch_size=1)
    assert max(sizes) * model.count_params() <= 2.5e8


@pytest.mark.slow  # a large user layer compiles anew; the Embedding twin above checks the same by default
def test_a_large_user_layer_makes_short_calls(monkeypatch):
    """Was: one call for the whole epoch, a user layer's work counting for nothing. Its functions
    count as a Dense layer of as many parameters (6 FLOPs per row and parameter, forward and
    backward), so a call holds at most _CHUNK_FLOPS of them (lowered here, so that the user
    layer alone decides: the dense layers' products would allow the whole epoch in one call)."""
    import fastnn.trainer as trainer_module
    monkeypatch.setattr(trainer_module, "_CHUNK_FLOPS", 1e9)
    model = MLP([Dense(4, 500, activation="relu"), UserDense(500), Dense(None, 2, activation="softmax")], seed=0)
    model.compile("cross_entropy", "adam")
    x, y = blobs(n=960)
    sizes = batches_per_call(model, x[:, :4], y % 2, batch_size=32)
    assert len(sizes) > 1 and max(sizes) * 6 * 32 * model.layers[1].count_params() <= 1e9


def test_a_small_dense_model_still_runs_an_epoch_in_one_call():
    """The calls are sized by what they cost: a small model's epoch stays one call (each call
    costs Python and a BLAS setting)."""
    x, y = blobs(n=600)
    assert batches_per_call(small(), x, y, batch_size=32) == [19]
