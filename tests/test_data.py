"""fit on a ``fastnn.data.Sequence`` or a generator of batches, and ``steps_per_epoch``.

Reference: the same batches as arrays (``fit`` with ``shuffle=False``, or ``train_on_batch`` one
batch at a time). Each batch runs the same compiled step on the same rows, so the weights and
the logs must agree bit for bit; validation figures, over batches of other shapes, to float32's
rounding.
"""
import threading
import time
import traceback

import numpy as np
import pytest

import fastnn
from fastnn import MLP, Adam, Dense, LambdaCallback
from fastnn.data import Sequence


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    return (3 * np.eye(3, 4)[labels] + 0.6 * rng.normal(size=(n, 4))).astype(np.float32), labels


def classifier(seed=0):
    model = MLP([Dense(4, 6, activation="tanh"), Dense(6, 3, activation="softmax")], seed=seed)
    return model.compile("cross_entropy", Adam(0.01), metrics=["accuracy"])


X, LABELS = blobs()


class Slices(Sequence):
    """Batches of ``size`` rows sliced from the arrays, in index order; records what is read."""

    def __init__(self, x=X, y=LABELS, size=16):
        self.x, self.y, self.size = x, y, size
        self.read, self.ends = [], 0

    def __len__(self):
        return -(-self.x.shape[0] // self.size)

    def __getitem__(self, i):
        self.read.append(i)
        return self.x[i * self.size: (i + 1) * self.size], self.y[i * self.size: (i + 1) * self.size]

    def on_epoch_end(self):
        self.ends += 1


class DuckSlices:
    """The protocol without the base class."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return X[i * 16: (i + 1) * 16], LABELS[i * 16: (i + 1) * 16]


def batches(x=X, y=LABELS, size=16, passes=None):
    """A generator of the arrays' batches, pass after pass (``passes`` of them; None: endless)."""
    done = 0
    while passes is None or done < passes:
        for lo in range(0, x.shape[0], size):
            yield x[lo: lo + size], y[lo: lo + size]
        done += 1


def assert_same_weights(a, b):
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "fastnn-fit-loader"]


@pytest.mark.parametrize("source", ["sequence", "duck", "generator"])
def test_batches_from_a_sequence_or_generator_train_as_the_same_arrays(source):
    reference = classifier()
    expected = reference.fit(X, LABELS, epochs=3, batch_size=16, shuffle=False, verbose=0).history
    model = classifier()
    if source == "generator":
        history = model.fit(batches(passes=3), epochs=3, shuffle=False, verbose=0, steps_per_epoch=4).history
    else:
        history = model.fit(Slices() if source == "sequence" else DuckSlices(), epochs=3, shuffle=False,
                            verbose=0).history
    assert history == expected
    assert_same_weights(model, reference)
    assert not loader_threads()


def test_batches_of_several_sizes_train_as_train_on_batch():
    """A smaller batch ends a call into the step, a larger one grows the chunk buffers."""
    sizes = [16, 16, 8, 16, 24, 5, 5]
    edges = np.cumsum([0] + sizes)
    x, labels = blobs(n=edges[-1])
    parts = [(x[lo:hi], labels[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]
    reference = classifier()
    losses = [reference.train_on_batch(x, y)[0] for x, y in parts]
    model = classifier()
    history = model.fit(iter(parts), epochs=1, verbose=0)
    assert_same_weights(model, reference)
    rows = np.array(sizes, dtype=np.float64)
    assert history.history["loss"][0] == pytest.approx(float(np.dot(losses, rows) / rows.sum()), rel=1e-12)


def test_on_epoch_end_and_shuffled_batch_order():
    seq = Slices()
    classifier().fit(seq, epochs=3, verbose=0)
    assert seq.ends == 3
    passes = [seq.read[i:i + 4] for i in range(0, 12, 4)]
    assert all(sorted(p) == [0, 1, 2, 3] for p in passes)
    assert any(p != [0, 1, 2, 3] for p in passes)  # shuffle=True: a new order each pass (seed 0)


def test_steps_per_epoch_over_arrays_goes_on_where_the_last_epoch_stopped():
    """Three epochs of two batches of a four-batch pass: the pass, then half of the next."""
    model = classifier()
    history = model.fit(X, LABELS, epochs=3, batch_size=16, shuffle=False, verbose=0, steps_per_epoch=2).history
    reference = classifier()
    first = reference.fit(X, LABELS, epochs=1, batch_size=16, shuffle=False, verbose=0)
    reference.fit(X[:32], LABELS[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert_same_weights(model, reference)
    assert len(history["loss"]) == 3
    assert history["loss"][0] != first.history["loss"][0]  # two batches, not the pass


def test_steps_per_epoch_beyond_the_data_ends_the_epoch_with_a_warning():
    model = classifier()
    with pytest.warns(UserWarning, match="steps_per_epoch=9"):
        history = model.fit(Slices(), epochs=2, shuffle=False, verbose=0, steps_per_epoch=9).history
    reference = classifier()
    assert history == reference.fit(X, LABELS, epochs=2, batch_size=16, shuffle=False, verbose=0).history


def test_a_finite_generator_ends_training_when_it_runs_out():
    model = classifier()
    with pytest.warns(UserWarning, match="ran out of batches at epoch 2"):
        history = model.fit(batches(passes=1), epochs=3, verbose=0).history
    assert len(history["loss"]) == 1
    reference = classifier()
    reference.fit(X, LABELS, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert_same_weights(model, reference)


def test_validation_data_as_a_sequence():
    xv, lv = blobs(n=40, seed=1)
    seq = Slices(xv, lv, size=16)
    model = classifier()
    model.compile("cross_entropy", Adam(0.01), metrics=["accuracy", "auc"])
    history = model.fit(Slices(), epochs=2, verbose=0, validation_data=seq).history
    assert seq.ends == 2
    expected = model.evaluate(xv, lv, return_dict=True)
    for key, value in expected.items():
        # float32 sums over batches of 16 rows here, of 40 in evaluate
        assert history["val_" + key][-1] == pytest.approx(value, rel=1e-5)


def max_probability(y_true, y_pred):
    """A metric function: the mean of each row's largest probability (a mean over rows, so the same
    over any batches)."""
    total = 0.0
    for i in range(y_pred.shape[0]):
        total += y_pred[i].max()
    return total / y_pred.shape[0]


def test_validation_from_a_sequence_with_metric_functions_equals_evaluate():
    """A metric function is computed over the Sequence's own batches (it once went to the table of
    named metrics and raised a KeyError)."""
    xv, lv = blobs(n=40, seed=1)
    model = classifier()
    model.compile("cross_entropy", Adam(0.01), metrics=["accuracy", max_probability])
    history = model.fit(Slices(), epochs=1, verbose=0, validation_data=Slices(xv, lv, size=16)).history
    expected = model.evaluate(xv, lv, return_dict=True)
    assert history["val_max_probability"][-1] == pytest.approx(expected["max_probability"], rel=1e-5)


class Failing(Slices):
    def __getitem__(self, i):
        if i == 2:
            raise KeyError("no such file")
        return super().__getitem__(i)


def test_a_loader_exception_reaches_fit_with_its_traceback():
    model = classifier()
    with pytest.raises(KeyError, match="no such file") as info:
        model.fit(Failing(), epochs=2, shuffle=False, verbose=0)
    assert "__getitem__" in "".join(traceback.format_tb(info.value.__traceback__))
    time.sleep(0.3)
    assert not loader_threads()


def test_an_interrupt_in_a_callback_stops_the_loader_thread():
    interrupt = LambdaCallback(on_batch_end=lambda batch, logs: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        classifier().fit(batches(), epochs=2, steps_per_epoch=1000, verbose=0, callbacks=[interrupt])
    deadline = time.monotonic() + 2.0
    while loader_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not loader_threads()


def with_batch(index, x=None, y=None, extra=()):
    """A Sequence whose batch ``index`` is replaced."""
    class Bad(Slices):
        def __getitem__(self, i):
            bx, by = super().__getitem__(i)
            if i != index:
                return bx, by
            return (bx if x is None else x, by if y is None else y, *extra)
    return Bad()


def nan_rows():
    bad = X[:16].copy()
    bad[3, 1] = np.nan
    return bad


@pytest.mark.parametrize("seq, error, match", [
    (with_batch(2, x=nan_rows()), ValueError, r"batch 2: x contains NaN"),
    (with_batch(1, y=np.full(16, 7)), ValueError, r"batch 1: y holds class label 7"),
    (with_batch(3, x=np.ones((12, 5), np.float32)), ValueError, r"batch 3: x must have 4 features"),
    (with_batch(0, x=X[:16], y=LABELS[:15]), ValueError, r"batch 0: y has 15 rows but x has 16"),
    (with_batch(1, extra=(np.ones(16),)), NotImplementedError, r"batch 1 has sample weights"),
])
def test_a_bad_batch_raises_naming_its_index(seq, error, match):
    model = classifier()
    before = model.get_weights()
    with pytest.raises(error, match=match):
        model.fit(seq, epochs=1, shuffle=False, verbose=0)
    if "batch 0" in match:  # the first batch is checked before anything trains
        assert_same_weights(model, type("W", (), {"get_weights": lambda self: before})())


def test_not_a_batch_and_arguments_that_do_not_apply():
    model = classifier()
    with pytest.raises(ValueError, match=r"batch 0: expected a tuple \(x, y\)"):
        model.fit(iter([X[:16]]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y must be None"):
        model.fit(Slices(), LABELS, verbose=0)
    with pytest.raises(ValueError, match="batch_size must be None"):
        model.fit(Slices(), batch_size=16, verbose=0)
    with pytest.raises(ValueError, match="validation_split needs arrays"):
        model.fit(Slices(), validation_split=0.2, verbose=0)
    with pytest.raises(TypeError, match="y must be a numeric array, got None"):
        model.fit(X, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch must be >= 1"):
        model.fit(X, LABELS, steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match="yields no batches"):
        model.fit(iter([]), verbose=0)


def test_what_fit_reads_as_batches():
    assert fastnn.data.is_batch_source(Slices()) and fastnn.data.is_batch_source(DuckSlices())
    assert fastnn.data.is_batch_source(batches()) and fastnn.data.is_batch_source(iter([]))
    assert not any(fastnn.data.is_batch_source(v) for v in (X, [[1.0]], (1.0,), X.tolist()))


def test_a_large_memory_mapped_file_is_checked_slice_by_slice_from_the_file(tmp_path, monkeypatch):
    """The check reads the file (at the array's offset in it: .npy header, rows sliced off) a
    slice at a time; a NaN in the last slice is found, one just before the array is not its."""
    from fastnn import validation
    monkeypatch.setattr(validation, "_SCAN_BYTES", 4096)
    rows = np.random.default_rng(0).random((1000, 4), dtype=np.float32)
    rows[3, 0] = np.nan
    np.save(tmp_path / "x.npy", rows)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert validation._shared_mapping(mapped[4:]) is not None
    assert validation.finite(np.asarray(mapped[4:]))
    assert not validation.finite(mapped[3:])
    rows[3, 0], rows[-1, 3] = 0.0, np.inf
    np.save(tmp_path / "x.npy", rows)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not validation.finite(mapped[1:])
    assert validation.finite(mapped[:-1])
    with pytest.raises(ValueError, match="x contains NaN or infinite"):
        classifier().fit(mapped, np.zeros(1000, np.int64), verbose=0)


def test_a_mapped_file_removed_since_is_checked_through_its_mapping(tmp_path, monkeypatch):
    from fastnn import validation
    monkeypatch.setattr(validation, "_SCAN_BYTES", 4096)
    rows = np.ones((1000, 4), np.float32)
    rows[-1, 0] = np.nan
    np.save(tmp_path / "x.npy", rows)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    (tmp_path / "x.npy").unlink()
    assert not validation.finite(mapped) and validation.finite(mapped[:-1])


def test_the_first_batch_read_at_the_start_serves_the_first_epoch_only():
    """fit reads batch 0 to check it before training; a later epoch reads it again, after
    on_epoch_end (which may change the batches)."""
    seq = Slices()
    classifier().fit(seq, epochs=3, shuffle=False, verbose=0, steps_per_epoch=2)
    assert seq.read == [0, 1, 2, 3, 0, 1]
