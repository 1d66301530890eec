"""Tests of the callbacks (Keras' semantics): History, EarlyStopping, LearningRateScheduler,
ModelCheckpoint, CSVLogger, LambdaCallback with per-batch hooks, the seed framework's
``callbacks={}``, and TensorBoard's clear ImportError without tensorboardX.

References: a twin model trained batch by batch with ``train_on_batch`` (the per-batch losses
and weights fit must reproduce), and weights recorded at each epoch's end.
"""
import csv
import sys

import numpy as np
import pytest

import fastnn
from fastnn import (MLP, SGD, Adam, Callback, CSVLogger, Dense, EarlyStopping, LambdaCallback, LearningRateScheduler,
                    ModelCheckpoint)


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    return (3 * np.eye(3, 4)[labels] + 0.6 * rng.normal(size=(n, 4))).astype(np.float32), labels


def classifier(seed=0, optimizer=None):
    model = MLP([Dense(4, 6, activation="tanh"), Dense(6, 3, activation="softmax")], seed=seed)
    return model.compile("cross_entropy", optimizer or Adam(0.01), metrics=["accuracy"])


class RecordWeights(Callback):
    """The model's weights at the end of each epoch."""

    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


class Scripted(Callback):
    """Writes a scripted value into the epoch's logs under ``key`` (callbacks see one logs dict in order)."""

    def __init__(self, key, values):
        self.key = key
        self.values = values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


# --------------------------------------------------------------------------------------------
# EarlyStopping
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patience, epochs_run", [(0, 2), (1, 2), (2, 3), (4, 5)])
def test_early_stopping_waits_patience_epochs_without_improvement(patience, epochs_run):
    """With a learning rate of 0 the loss never improves after the first epoch; Keras stops at
    the end of the patience-th epoch without improvement (patience 0 and 1 alike)."""
    x, y = blobs()
    model = classifier(optimizer=SGD(0.0))
    stopper = EarlyStopping(monitor="loss", patience=patience)
    # shuffle=False: the same batches in the same order give bit-identical epoch losses.
    history = model.fit(x, y, epochs=20, batch_size=10, shuffle=False, callbacks=[stopper], verbose=0)
    assert len(history.history["loss"]) == epochs_run
    assert stopper.stopped_epoch == epochs_run - 1


def test_early_stopping_min_delta_and_max_mode():
    x, y = blobs()
    scores = [0.5, 0.6, 0.65, 0.66, 0.9, 0.95, 0.96, 0.965]
    stopper = EarlyStopping(monitor="val_score", mode="max", min_delta=0.02, patience=2)
    history = classifier().fit(x, y, epochs=8, callbacks=[Scripted("val_score", scores), stopper], verbose=0)
    # Improvements by more than 0.02: epochs 0, 1, 2, then 4 and 5; 3 (0.66 < 0.67) is none, and
    # 6 and 7 (below 0.97) are the second epoch in a row without one: stop at epoch 7.
    assert history.history["val_score"] == scores
    assert stopper.stopped_epoch == 7
    stopper = EarlyStopping(monitor="val_score", mode="max", min_delta=0.02, patience=1)
    history = classifier().fit(x, y, epochs=8, callbacks=[Scripted("val_score", scores), stopper], verbose=0)
    assert stopper.stopped_epoch == 3 and len(history.history["loss"]) == 4


def test_early_stopping_restores_the_best_weights():
    x, y = blobs()
    recorder = RecordWeights()
    stopper = EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    model = classifier()
    history = model.fit(x, y, epochs=10, batch_size=10, verbose=0,
                        callbacks=[Scripted("score", [3.0, 1.0, 2.0, 4.0, 5.0, 0.0, 0, 0, 0, 0]), recorder, stopper])
    assert len(history.history["loss"]) == 4  # best at epoch 1; epochs 2 and 3 without improvement
    assert not weights_equal(recorder.weights[1], recorder.weights[3])
    assert weights_equal(model.get_weights(), recorder.weights[1])


def test_early_stopping_restores_the_best_weights_when_no_epoch_beats_the_baseline():
    """Keras 3: the best epoch is tracked regardless of the baseline, and restored."""
    x, y = blobs()
    recorder = RecordWeights()
    stopper = EarlyStopping(monitor="score", patience=3, baseline=0.5, restore_best_weights=True)
    model = classifier()
    history = model.fit(x, y, epochs=10, batch_size=10, verbose=0,
                        callbacks=[Scripted("score", [3.0, 1.0, 2.0, 0.8, 0.6]), recorder, stopper])
    assert len(history.history["loss"]) == 3  # three epochs without beating 0.5
    assert stopper.best_epoch == 1 and stopper.best == 1.0
    assert not weights_equal(recorder.weights[1], recorder.weights[2])
    assert weights_equal(model.get_weights(), recorder.weights[1])


def test_early_stopping_restores_the_best_weights_when_training_ends_without_stopping():
    """Keras 3 restores at the end of training, stopped early or not."""
    x, y = blobs()
    recorder = RecordWeights()
    model = classifier()
    model.fit(x, y, epochs=3, batch_size=10, verbose=0,
              callbacks=[Scripted("score", [3.0, 1.0, 2.0]), recorder,
                         EarlyStopping(monitor="score", patience=5, restore_best_weights=True)])
    assert not weights_equal(recorder.weights[1], recorder.weights[2])
    assert weights_equal(model.get_weights(), recorder.weights[1])


def test_early_stopping_without_restore_keeps_the_last_weights():
    x, y = blobs()
    recorder = RecordWeights()
    model = classifier()
    model.fit(x, y, epochs=10, verbose=0, callbacks=[Scripted("score", [3.0, 1.0, 2.0, 4.0, 5.0]), recorder,
                                                     EarlyStopping(monitor="score", patience=2)])
    assert weights_equal(model.get_weights(), recorder.weights[-1])


def test_early_stopping_names_a_missing_metric_in_a_warning_and_trains_on():
    """As Keras: a warning (once), not a crash at the end of the first epoch."""
    x, y = blobs()
    with pytest.warns(RuntimeWarning, match=r"EarlyStopping monitors 'val_loss', which is not among the logged") \
            as caught:
        history = classifier().fit(x, y, epochs=3, callbacks=[EarlyStopping()], verbose=0)
    assert len(history.history["loss"]) == 3
    assert len([w for w in caught if "EarlyStopping" in str(w.message)]) == 1


# --------------------------------------------------------------------------------------------
# LearningRateScheduler
# --------------------------------------------------------------------------------------------

def test_scheduler_sets_the_learning_rate_before_each_epoch():
    x, y = blobs()
    optimizer = Adam(0.01)
    model = classifier(optimizer=optimizer)
    seen = []
    scheduler = LearningRateScheduler(lambda epoch, lr: lr / 2 if epoch else lr)
    spy = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(optimizer.learning_rate))
    model.fit(x, y, epochs=4, verbose=0, callbacks=[scheduler, spy])
    assert seen == [0.01, 0.005, 0.0025, 0.00125]
    assert optimizer.learning_rate == 0.00125


def test_scheduler_to_zero_freezes_the_weights_from_that_epoch_on():
    x, y = blobs()
    recorder = RecordWeights()
    model = MLP([Dense(4, 6, activation="tanh", optimizer=SGD(0.1)), Dense(6, 3, activation="softmax")], seed=0)
    model.compile("cross_entropy", Adam(0.01))  # two optimizers: the schedule sets both
    scheduler = LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else 0.0)
    model.fit(x, y, epochs=5, batch_size=10, callbacks=[scheduler, recorder], verbose=0)
    assert not weights_equal(recorder.weights[0], recorder.weights[1])
    for later in recorder.weights[2:]:
        assert weights_equal(later, recorder.weights[1])
    assert [opt.learning_rate for opt in model.optimizers()] == [0.0, 0.0]


def test_scheduler_passes_a_schedules_current_value_and_replaces_it():
    """lr is the schedule's value at the optimizer's next step, as a float (as Keras passes
    ``optimizer.learning_rate``); the number returned replaces the schedule."""
    x, y = blobs()  # 60 rows, batch 10: 6 updates an epoch
    schedule = fastnn.ExponentialDecay(0.1, 4, 0.5)
    optimizer = SGD(schedule)
    model = classifier(optimizer=optimizer)
    model.fit(x, y, epochs=1, batch_size=10, verbose=0)
    seen = []

    def halve(epoch, lr):
        seen.append(lr)
        return lr / 2

    model.fit(x, y, epochs=2, batch_size=10, verbose=0, callbacks=[LearningRateScheduler(halve)])
    assert type(seen[0]) is float and seen[0] == pytest.approx(0.1 * 0.5 ** (6 / 4))
    assert seen[1] == pytest.approx(seen[0] / 2)  # from then on the callback's plain rate
    assert optimizer.learning_rate == pytest.approx(seen[0] / 4)


def test_scheduler_rejects_a_negative_rate_before_training():
    x, y = blobs()
    model = classifier()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"schedule\(epoch, lr\) must be >= 0"):
        model.fit(x, y, epochs=2, callbacks=[LearningRateScheduler(lambda epoch, lr: -1.0)], verbose=0)
    assert weights_equal(model.get_weights(), before)


# --------------------------------------------------------------------------------------------
# Per-batch hooks
# --------------------------------------------------------------------------------------------

def test_lambda_on_batch_end_sees_each_batch_and_its_loss():
    x, y = blobs(50)
    model, twin = classifier(seed=3), classifier(seed=3)
    calls = []
    hook = LambdaCallback(on_batch_end=lambda batch, logs: calls.append((batch, logs["loss"], logs["accuracy"])))
    history = model.fit(x, y, epochs=2, batch_size=16, shuffle=False, callbacks=[hook], verbose=0)
    assert [c[0] for c in calls] == [0, 1, 2, 3] * 2  # 50 rows: batches of 16, 16, 16, 2
    expected = [twin.train_on_batch(x[i:i + 16], y[i:i + 16]) for _ in range(2) for i in range(0, 50, 16)]
    assert [c[1] for c in calls] == [e[0] for e in expected]
    assert [c[2] for c in calls] == [e[1] for e in expected]
    assert weights_equal(model.get_weights(), twin.get_weights())
    rows = np.array([16, 16, 16, 2])
    assert history.history["loss"][1] == pytest.approx(np.dot([c[1] for c in calls[4:]], rows) / 50, rel=1e-12)


def test_per_batch_callbacks_do_not_change_training():
    """Training in one compiled call per epoch or one per batch gives the same result."""
    x, y = blobs(50)
    a, b = classifier(seed=4), classifier(seed=4)
    ha = a.fit(x, y, epochs=3, batch_size=8, verbose=0)
    hb = b.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[LambdaCallback(on_batch_end=lambda b, l: None)])
    assert ha.history == hb.history
    assert weights_equal(a.get_weights(), b.get_weights())


def test_lambda_callback_hooks_take_kerass_arguments():
    x, y = blobs()
    events = []
    hook = LambdaCallback(on_train_begin=lambda logs: events.append("begin"),
                          on_epoch_begin=lambda epoch, logs: events.append(f"epoch {epoch}"),
                          on_epoch_end=lambda epoch, logs: events.append(f"end {epoch} {sorted(logs)}"),
                          on_train_end=lambda logs: events.append(f"done {sorted(logs)}"))
    classifier().fit(x, y, epochs=2, callbacks=[hook], verbose=0)
    assert events == ["begin", "epoch 0", "end 0 ['accuracy', 'loss']", "epoch 1", "end 1 ['accuracy', 'loss']",
                      "done ['accuracy', 'loss']"]


# --------------------------------------------------------------------------------------------
# ModelCheckpoint and CSVLogger
# --------------------------------------------------------------------------------------------

def test_model_checkpoint_saves_every_epoch(tmp_path):
    x, y = blobs()
    recorder = RecordWeights()
    checkpoint = ModelCheckpoint(tmp_path / "model-{epoch:02d}.npz")
    classifier().fit(x, y, epochs=3, callbacks=[recorder, checkpoint], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-01.npz", "model-02.npz", "model-03.npz"]
    for epoch in range(3):
        saved = fastnn.load_model(tmp_path / f"model-{epoch + 1:02d}.npz")
        assert weights_equal(saved.get_weights(), recorder.weights[epoch])


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = blobs()
    recorder = RecordWeights()
    path = tmp_path / "best.npz"
    checkpoint = ModelCheckpoint(path, monitor="score", save_best_only=True)
    classifier().fit(x, y, epochs=5, verbose=0,
                     callbacks=[Scripted("score", [3.0, 1.0, 2.0, 0.5, 4.0]), recorder, checkpoint])
    assert weights_equal(fastnn.load_model(path).get_weights(), recorder.weights[3])
    assert checkpoint.best == 0.5


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    x, y = blobs()
    path = tmp_path / "log.csv"
    history = classifier().fit(x, y, epochs=3, validation_split=0.2, callbacks=[CSVLogger(path)], verbose=0)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_accuracy", "val_loss"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2]
    for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
        column = rows[0].index(key)
        assert [float(r[column]) for r in rows[1:]] == history.history[key]


# --------------------------------------------------------------------------------------------
# The seed framework's callbacks={} and tensorboard flag
# --------------------------------------------------------------------------------------------

def test_seed_style_callbacks_dict():
    dataset = fastnn.Dataset.from_arrays(*blobs(80), test_size=20, batch_size=10, seed=0)
    model = MLP(seed=0)
    model.addLayer(Dense(inputDim=4, outputDim=3, activation=fastnn.Softmax()))
    history = model.train(dataset, loss=fastnn.CrossEntropy(), epochs=2, metrics=["train_loss"], tensorboard=False,
                          callbacks={}, verbose=0)
    assert list(history.history) == ["train_loss"] and len(history.history["train_loss"]) == 2
    recorder = RecordWeights()
    model.train(dataset, epochs=2, metrics=["train_loss"], callbacks={"weights": recorder}, verbose=0)
    assert len(recorder.weights) == 2 and weights_equal(recorder.weights[-1], model.get_weights())


def test_tensorboard_without_tensorboardx_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    dataset = fastnn.Dataset.from_arrays(*blobs(40), batch_size=10)
    model = MLP([Dense(4, 3, activation="softmax")], seed=0)
    before = model.get_weights()
    with pytest.raises(ImportError, match=r"the TensorBoard callback needs tensorboardX: pip install \"fastnn\[tensorboard\]\""):
        model.train(dataset, loss=fastnn.CrossEntropy(), epochs=1, metrics=["train_loss"], tensorboard=True,
                    callbacks={}, verbose=0)
    assert weights_equal(model.get_weights(), before)
