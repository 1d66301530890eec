"""Metrics in training: the compiled counters against fastnn.metrics and scikit-learn, the logs
of fit/evaluate, compile's checks, the callbacks that read metrics (mode inference,
TerminateOnNaN, warnings), TensorBoard files read back by TensorBoard's own EventAccumulator,
History.plot, and the CUDA counters against the CPU's under the simulator."""

import numpy as np
import pytest

import fastnn
from fastnn import MLP, SGD, Adam, Dense
from fastnn import metrics as M
from fastnn.kernels import metrics as K
from helpers import cuda_or_skip

sk = pytest.importorskip("sklearn.metrics")


def blobs(n=240, classes=3, seed=0, width=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = (1.5 * np.eye(classes, width)[labels] + rng.normal(size=(n, width))).astype(np.float32)
    return x, labels


def binary_data(n=240, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = ((x[:, 0] + 0.5 * x[:, 1] + 0.7 * rng.normal(size=n)) > 0).astype(np.float32)
    return x, y


def classifier(classes=3, width=5, lr=0.05, seed=0, device="cpu"):
    if classes == 1:
        layers = [Dense(width, 8, activation="tanh"), Dense(8, 1, activation="sigmoid")]
        loss = "binary_crossentropy"
    else:
        layers = [Dense(width, 8, activation="tanh"), Dense(8, classes, activation="softmax")]
        loss = "cross_entropy"
    return MLP(layers, seed=seed, device=device), loss


# ---- the counter kernel ----------------------------------------------------------------------

def counters(names, pred, target):
    spec, size = M.counter_spec(names, pred.shape[1])
    counts = np.zeros(size)
    half = pred.shape[0] // 2  # two batches, summed as an epoch's are
    K.metric_counts(spec, counts, pred[:half], target[:half])
    K.metric_counts(spec, counts, pred[half:], target[half:])
    return M.from_counts(names, spec, counts, pred.shape[1], pred.shape[0])


def test_counters_of_a_binary_output_equal_the_exact_metrics():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 2, (101, 1)).astype(np.float32)
    pred = np.clip(0.35 * target + rng.uniform(0, 0.65, (101, 1)), 0, 1).astype(np.float32)
    pred[:5] = [[0.0], [1.0], [0.5], [0.999], [0.0049]]  # the ends and the threshold itself
    names = ["tp", "fp", "tn", "fn", "precision", "recall", "f1", "sensitivity", "specificity", "auc", "pr_auc"]
    got = counters(names, pred, target)
    for name in ("tp", "fp", "tn", "fn", "precision", "recall", "f1", "sensitivity", "specificity"):
        assert got[name] == pytest.approx(M.from_predictions([name], target, pred)[name]), name
    # AUC over 200 score buckets: exactly the AUC of the bucketed scores
    bucket = np.minimum(np.floor(pred[:, 0].astype(np.float64) * M.AUC_BUCKETS), M.AUC_BUCKETS - 1)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(target[:, 0], bucket), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(target[:, 0], bucket), abs=1e-12)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(target[:, 0], pred[:, 0]), abs=0.01)


def test_counters_of_several_classes_equal_the_exact_metrics():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 7, 90)
    target = np.eye(7, dtype=np.float32)[labels]
    raw = rng.uniform(size=(90, 7)) + np.eye(7)[labels] * 0.8
    pred = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    got = counters(["precision", "recall", "f1", "top_k_accuracy", "auc"], pred, target)
    p = pred.argmax(axis=1)
    assert got["precision"] == pytest.approx(sk.precision_score(labels, p, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(sk.recall_score(labels, p, average="macro", zero_division=0))
    assert got["f1"] == pytest.approx(sk.f1_score(labels, p, average="macro", zero_division=0))
    assert got["top_k_accuracy"] == pytest.approx(sk.top_k_accuracy_score(labels, pred, k=5, labels=range(7)))
    bucket = np.minimum(np.floor(pred.astype(np.float64) * M.AUC_BUCKETS), M.AUC_BUCKETS - 1)
    assert got["auc"] == pytest.approx(np.mean([sk.roc_auc_score(target[:, c], bucket[:, c]) for c in range(7)]))


def test_top_k_counts_ties_as_sklearn():
    pred = np.array([[0.2, 0.2, 0.2, 0.2, 0.2, 0.0, 0.0]] * 7, dtype=np.float32)
    labels = np.arange(7)
    got = counters(["top_k_accuracy"], pred, np.eye(7, dtype=np.float32)[labels])
    assert got["top_k_accuracy"] == pytest.approx(sk.top_k_accuracy_score(labels, pred, k=5, labels=range(7)))


def test_regression_counters_equal_the_exact_metrics():
    rng = np.random.default_rng(5)
    target = rng.normal(size=(64, 3))
    pred = target + 0.4 * rng.normal(size=(64, 3))
    names = ["mae", "mse", "rmse", "r2", "cosine_similarity"]
    got = counters(names, pred, target)
    exact = M.from_predictions(names, target, pred)
    for name in names:
        assert got[name] == pytest.approx(exact[name], rel=1e-9), name


@pytest.mark.parametrize("row", [[99, 0, 0, 0, 1], [K.CONFUSION, 0, 0, 1, 1], [K.CONFUSION, 0, 0, -1, 1],
                                 [K.CONFUSION, 0, 0, 0, 0]])
def test_an_unknown_counter_kind_or_columns_out_of_range_is_an_error(row):
    """The CPU kernel checks each spec row (kind, and columns within the predictions') before
    reading: a bad one would read out of bounds."""
    with pytest.raises(ValueError, match="metric counter spec out of range"):
        K.metric_counts(np.array([row]), np.zeros(4), np.zeros((2, 1)), np.zeros((2, 1)))


def test_counters_of_a_column_range_equal_those_of_its_columns_alone():
    """A spec row reads columns [first, first + columns) of wider arrays: the counts equal those of
    the same metrics on those columns as arrays of their own (several outputs side by side)."""
    rng = np.random.default_rng(2)
    left, right = rng.uniform(size=(30, 2)), rng.uniform(size=(30, 4))
    target_right = np.eye(4)[rng.integers(0, 4, 30)]
    pred, target = np.hstack([left, right]), np.hstack([rng.uniform(size=(30, 2)), target_right])
    names = ["accuracy", "auc", "precision", "recall", "mae", "r2"]
    spec, size = M.output_counter_spec([([], 0, 2), (names, 2, 4)])
    counts = np.zeros(size)
    K.metric_counts(spec, counts, pred, target)
    alone, size_alone = M.counter_spec(names, 4)
    counts_alone = np.zeros(size_alone)
    K.metric_counts(alone, counts_alone, np.ascontiguousarray(right), target_right)
    np.testing.assert_array_equal(counts, counts_alone)
    assert M.from_counts(names, spec, counts, 4, 30, first=2) == M.from_counts(names, alone, counts_alone, 4, 30)
    assert M.from_counts(["accuracy"], spec, counts, 4, 30, first=2)["accuracy"] == np.mean(
        right.argmax(1) == target_right.argmax(1))


# ---- fit, evaluate, compile ------------------------------------------------------------------

def test_training_metrics_are_over_the_epochs_batches_and_validation_ones_exact():
    """With a learning rate of 0 the weights never move, so the epoch's counted metrics must
    equal the metrics of predict on the training rows (AUC: on 200 buckets)."""
    x, labels = blobs()
    model, loss = classifier()
    names = ["accuracy", "precision", "recall", "f1", "auc", "pr_auc"]
    model.compile(loss, SGD(0.0), metrics=names)
    history = model.fit(x, labels, epochs=1, batch_size=32, validation_data=(x[:100], labels[:100]), verbose=0)
    pred = model.predict(x)
    p = pred.argmax(axis=1)
    assert history.history["accuracy"][0] == pytest.approx(sk.accuracy_score(labels, p))
    assert history.history["precision"][0] == pytest.approx(sk.precision_score(labels, p, average="macro"))
    assert history.history["f1"][0] == pytest.approx(sk.f1_score(labels, p, average="macro"))
    assert history.history["auc"][0] == pytest.approx(sk.roc_auc_score(labels, pred, multi_class="ovr"), abs=0.01)
    vp = model.predict(x[:100])
    assert history.history["val_auc"][0] == pytest.approx(sk.roc_auc_score(labels[:100], vp, multi_class="ovr"))
    assert history.history["val_pr_auc"][0] == pytest.approx(
        sk.average_precision_score(np.eye(3)[labels[:100]], vp, average="macro"))
    assert history.history["val_recall"][0] == pytest.approx(sk.recall_score(labels[:100], vp.argmax(1),
                                                                              average="macro"))
    assert list(history.history) == ["loss"] + names + ["val_loss"] + ["val_" + n for n in names]
    result = model.evaluate(x[:100], labels[:100], return_dict=True)
    assert result["auc"] == pytest.approx(history.history["val_auc"][0])


def test_a_two_class_softmax_logs_the_metrics_of_class_1_as_sklearns_binary_use():
    x, labels = blobs(classes=2)
    model, loss = classifier(classes=2)
    names = ["precision", "recall", "f1", "auc", "pr_auc"]
    model.compile(loss, SGD(0.0), metrics=names)  # weights fixed: training figures of predict's output
    history = model.fit(x, labels, epochs=1, batch_size=32, validation_data=(x[:100], labels[:100]), verbose=0)
    pred = model.predict(x)[:, 1]
    bucket = np.minimum(np.floor(pred.astype(np.float64) * M.AUC_BUCKETS), M.AUC_BUCKETS - 1)
    assert history.history["pr_auc"][0] == pytest.approx(sk.average_precision_score(labels, bucket))
    assert history.history["auc"][0] == pytest.approx(sk.roc_auc_score(labels, bucket))
    vp = model.predict(x[:100])[:, 1]
    assert history.history["val_pr_auc"][0] == pytest.approx(sk.average_precision_score(labels[:100], vp))
    assert history.history["val_auc"][0] == pytest.approx(sk.roc_auc_score(labels[:100], vp))
    for name, score in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        assert history.history[name][0] == pytest.approx(score(labels, pred > 0.5)), name
        assert history.history["val_" + name][0] == pytest.approx(score(labels[:100], vp > 0.5)), name


def test_binary_metrics_in_fit_and_evaluate():
    x, y = binary_data()
    model, loss = classifier(classes=1, width=4)
    model.compile(loss, Adam(0.05), metrics=["auc", "tp", "fn", "specificity", "acc"])
    history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.25, verbose=0)
    assert history.history["auc"][-1] > 0.8
    xv, yv = x[180:], y[180:]
    pred = model.predict(xv)[:, 0]
    tn, fp, fn, tp = sk.confusion_matrix(yv, pred > 0.5).ravel()
    assert history.history["val_tp"][-1] == tp and history.history["val_fn"][-1] == fn
    assert history.history["val_specificity"][-1] == pytest.approx(tn / (tn + fp))
    assert history.history["val_auc"][-1] == pytest.approx(sk.roc_auc_score(yv, pred))
    assert history.history["val_accuracy"][-1] == pytest.approx(sk.accuracy_score(yv, pred > 0.5))
    assert model.evaluate(xv, yv)[1] == pytest.approx(sk.roc_auc_score(yv, pred))


def test_regression_metrics_in_fit():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x @ np.array([[1.0, -1.0], [0.5, 0.2], [0.0, 1.0]])).astype(np.float32)
    model = MLP([Dense(3, 2, activation=None)], seed=0).compile("mse", SGD(0.0), metrics=["mae", "r2", "rmse"])
    history = model.fit(x, y, epochs=1, batch_size=32, validation_data=(x, y), verbose=0)
    pred = model.predict(x)
    for name, ref in (("mae", sk.mean_absolute_error(y, pred)), ("r2", sk.r2_score(y, pred)),
                      ("rmse", np.sqrt(sk.mean_squared_error(y, pred)))):
        assert history.history[name][0] == pytest.approx(ref, rel=1e-4), name
        assert history.history["val_" + name][0] == pytest.approx(ref, rel=1e-4), name


@pytest.mark.parametrize("loss, n_out, metrics, match", [
    ("cross_entropy", 3, ["mae"], r"'mae' does not fit a classification model.*valid: accuracy, auc"),
    ("mse", 2, ["precision"], r"'precision' does not fit a regression model.*valid: accuracy, mae"),
    ("cross_entropy", 3, ["tp"], r"'tp' does not fit a classification model with 3 outputs"),
    ("cross_entropy", 3, ["top_k_accuracy"], r"needs more than 5 classes"),
    ("cross_entropy", 3, ["bogus"], r"'bogus' does not fit"),
])
def test_metrics_that_do_not_fit_the_model_are_errors_at_compile(loss, n_out, metrics, match):
    model = MLP([Dense(4, n_out, activation="softmax" if loss == "cross_entropy" else None)])
    with pytest.raises(ValueError, match=match):
        model.compile(loss, "adam", metrics=metrics)
    assert model.loss is None  # a failed compile changes nothing


def test_the_seed_train_call_takes_any_metric_as_train_or_test():
    ds = fastnn.Dataset("digits", batch_size=32, seed=0)
    model = MLP([Dense(64, 16, activation="relu"), Dense(16, 10, activation="softmax")], seed=0)
    model.compile("cross_entropy", "adam")
    history = model.train(ds, epochs=2, metrics=["train_loss", "train_auc", "test_auc", "test_acc"], verbose=0)
    assert list(history.history) == ["train_loss", "train_auc", "test_auc", "test_acc"]
    assert all(len(v) == 2 for v in history.history.values())
    assert history.history["test_auc"][-1] > 0.9
    with pytest.raises(ValueError, match="'train_<metric>' or 'test_<metric>'"):
        model.train(ds, epochs=1, metrics=["val_loss"], verbose=0)


# ---- callbacks -------------------------------------------------------------------------------

@pytest.mark.parametrize("monitor, mode", [
    ("val_auc", "max"), ("auc", "max"), ("val_precision", "max"), ("recall", "max"), ("val_f1", "max"),
    ("val_accuracy", "max"), ("acc", "max"), ("val_r2", "max"), ("val_loss", "min"), ("mae", "min"),
    ("val_rmse", "min"), ("fp", "min"), ("val_tn", "max"),
])
def test_the_inferred_mode_follows_the_metric(monitor, mode):
    stop = fastnn.EarlyStopping(monitor=monitor, patience=1)
    stop.on_train_begin()
    model = type("M", (), {"stop_training": False})()
    stop.set_model(model)
    rising = [0.5, 0.6, 0.7, 0.65]
    for epoch, value in enumerate(rising):
        stop.on_epoch_end(epoch, {monitor: value})
        if model.stop_training:
            break
    # "max": the fall at the last epoch stops it; "min": the first rise does
    assert stop.stopped_epoch == (3 if mode == "max" else 1)


def test_early_stopping_with_a_baseline_and_restore_best_weights():
    x, labels = blobs()
    model, loss = classifier(lr=0.05)
    model.compile(loss, Adam(0.05), metrics=["auc"])
    stop = fastnn.EarlyStopping(monitor="val_auc", baseline=1.01, patience=4, restore_best_weights=True)
    weights = []
    record = fastnn.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    history = model.fit(x, labels, epochs=10, batch_size=32, validation_split=0.3, callbacks=[record, stop],
                        verbose=0)
    assert len(history.history["loss"]) == 4  # nothing beats an AUC of 1.01
    # As Keras 3: the best epoch's weights are restored although it did not beat the baseline
    best = int(np.argmax(history.history["val_auc"]))  # the first of equal values, as EarlyStopping keeps
    assert stop.best_epoch == best and best < 3  # an earlier epoch: a real restore
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights[best]))


def test_a_monitor_never_logged_warns_once_before_the_first_epoch_and_does_not_stop(tmp_path):
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam")
    warned_at_epoch_begin = []

    def count(epoch, logs):
        warned_at_epoch_begin.append(len([w for w in caught if "monitors 'val_auc'" in str(w.message)]))

    callbacks = [fastnn.EarlyStopping(monitor="val_auc", patience=0), fastnn.ReduceLROnPlateau(monitor="val_auc"),
                 fastnn.ModelCheckpoint(tmp_path / "m.npz", monitor="val_auc", save_best_only=True),
                 fastnn.LambdaCallback(on_epoch_begin=count)]
    with pytest.warns(RuntimeWarning, match="monitors 'val_auc'") as caught:
        history = model.fit(x, labels, epochs=3, batch_size=64, callbacks=callbacks, verbose=0)
    assert len(history.history["loss"]) == 3
    assert warned_at_epoch_begin == [3, 3, 3]  # one each, all before the first epoch
    for name in ("EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint"):
        assert len([w for w in caught if name in str(w.message)]) == 1, name
    assert "it does nothing unless another callback adds it" in str(caught[0].message)


def test_a_monitor_logged_by_fit_or_by_another_callback_does_not_warn(recwarn):
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam", metrics=["auc"])
    assert model.log_names() == ["loss", "auc"]
    assert model.log_names(validation=True) == ["loss", "auc", "val_loss", "val_auc"]
    params = []
    add_score = fastnn.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(score=-epoch))
    callbacks = [fastnn.LambdaCallback(on_train_begin=lambda logs: params.append(dict(callbacks[0].params))),
                 fastnn.EarlyStopping(monitor="val_auc", patience=5), add_score,
                 fastnn.EarlyStopping(monitor="score", patience=5)]
    history = model.fit(x, labels, epochs=2, batch_size=64, validation_split=0.25, callbacks=callbacks, verbose=0)
    assert not [w for w in recwarn if "monitors" in str(w.message)]
    assert params == [{"epochs": 2, "steps": 3, "verbose": 0, "metrics": ["loss", "auc", "val_loss", "val_auc"]}]
    assert list(history.history) == ["loss", "auc", "val_loss", "val_auc", "score"]


def test_terminate_on_nan_stops_instead_of_raising(capsys):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(96, 3)).astype(np.float32)
    y = x[:, :1].copy()
    x[70] = 1e30  # finite, but its update sends the weights to inf: the next batch's loss is NaN

    def model():
        return MLP([Dense(3, 1, activation=None)], seed=0).compile("mse", SGD(0.01))

    with pytest.raises(FloatingPointError):
        model().fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    m = model()
    history = m.fit(x, y, epochs=2, batch_size=32, shuffle=False, callbacks=[fastnn.TerminateOnNaN()], verbose=0)
    # epoch 1 ends (with a huge loss); epoch 2 stops at its first batch, before any update
    assert len(history.history["loss"]) == 1
    assert "Epoch 2, batch 1: invalid loss nan, terminating training; the weights are no longer finite" \
        in capsys.readouterr().out
    assert m.stop_training


def test_model_checkpoint_refuses_a_folder_it_cannot_write(tmp_path):
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam")
    with pytest.raises(ValueError, match="ModelCheckpoint cannot write"):
        model.fit(x, labels, epochs=1, callbacks=[fastnn.ModelCheckpoint(tmp_path / "missing" / "m.npz")],
                  verbose=0)


def test_model_checkpoint_infers_max_for_val_auc_and_keeps_the_best_epoch(tmp_path):
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, Adam(0.05), metrics=["auc"])
    weights = []
    record = fastnn.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()))
    best = fastnn.ModelCheckpoint(tmp_path / "m-{epoch}.npz", monitor="val_auc", save_best_only=True)
    history = model.fit(x, labels, epochs=4, batch_size=32, validation_split=0.3, callbacks=[record, best],
                        verbose=0)
    auc = history.history["val_auc"]
    improved = [e for e in range(4) if auc[e] > max(auc[:e], default=-np.inf)]
    assert improved != list(range(4)) and len(improved) > 1  # some epochs are not saved: a real choice
    assert sorted(int(p.stem[2:]) - 1 for p in tmp_path.glob("m-*.npz")) == improved
    saved = fastnn.load_model(tmp_path / f"m-{improved[-1] + 1}.npz")
    assert improved[-1] == int(np.argmax(auc)) and -best.best == max(auc)
    assert all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), weights[improved[-1]]))


# ---- TensorBoard and curves ------------------------------------------------------------------

def test_tensorboard_files_read_back_by_tensorboard(tmp_path):
    pytest.importorskip("tensorboardX")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, Adam(fastnn.ExponentialDecay(0.05, 10, 0.5)), metrics=["accuracy", "auc"])
    board = fastnn.TensorBoard(tmp_path / "logs", histogram_freq=1)
    model.fit(x, labels, epochs=3, batch_size=32, validation_split=0.25, callbacks=[board], verbose=0)

    def read(part):
        events = accumulator.EventAccumulator(str(tmp_path / "logs" / part), size_guidance={"histograms": 0})
        events.Reload()
        return events

    train, validation = read("train"), read("validation")
    for name in ("epoch_loss", "epoch_accuracy", "epoch_auc", "epoch_learning_rate"):
        assert [e.step for e in train.Scalars(name)] == [0, 1, 2], name
    for name in ("epoch_loss", "epoch_accuracy", "epoch_auc"):
        assert [e.step for e in validation.Scalars(name)] == [0, 1, 2], name
    rates = [e.value for e in train.Scalars("epoch_learning_rate")]
    assert rates[0] > rates[1] > rates[2]  # the schedule decays with the steps
    tags = train.Tags()["histograms"]
    assert "dense_0/kernel" in tags and "dense_1/bias_gradient" in tags


def test_tensorboard_update_freq_writes_the_batch_loss_every_n_batches(tmp_path):
    pytest.importorskip("tensorboardX")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    x, labels = blobs()  # 240 rows in batches of 32: 8 batches per epoch, 24 in all
    model, loss = classifier()
    model.compile(loss, "adam")
    losses = []
    record = fastnn.LambdaCallback(on_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    board = fastnn.TensorBoard(tmp_path, update_freq=5)
    model.fit(x, labels, epochs=3, batch_size=32, callbacks=[record, board], verbose=0)
    events = accumulator.EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    points = events.Scalars("batch_loss")
    assert len(losses) == 24 and len(points) == 24 // 5
    assert [e.step for e in points] == [5, 10, 15, 20]  # counted across epochs
    assert [e.value for e in points] == pytest.approx([losses[i - 1] for i in (5, 10, 15, 20)])


def test_the_seed_train_call_with_tensorboard_writes_to_logs_and_says_so(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorboardX")
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.chdir(tmp_path)
    dataset = fastnn.Dataset.from_arrays(*blobs(), test_size=60, batch_size=32, seed=0)
    model, loss = classifier()
    history = model.train(dataset, loss=fastnn.CrossEntropy(), epochs=2, metrics=["train_loss", "test_accuracy"],
                          tensorboard=True, verbose=1)
    out = capsys.readouterr().out
    assert f"TensorBoard logs: {tmp_path / 'logs'} (view with: tensorboard --logdir logs)" in out
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["train", "validation"]
    events = {}
    for part in ("train", "validation"):
        events[part] = accumulator.EventAccumulator(str(tmp_path / "logs" / part))
        events[part].Reload()
    assert [e.value for e in events["train"].Scalars("epoch_loss")] == pytest.approx(history.history["train_loss"])
    assert [e.value for e in events["validation"].Scalars("epoch_accuracy")] == \
        pytest.approx(history.history["test_accuracy"])


def test_tensorboard_refuses_a_log_dir_it_cannot_write(tmp_path):
    pytest.importorskip("tensorboardX")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam")
    with pytest.raises(ValueError, match="TensorBoard cannot write to log_dir"):
        model.fit(x, labels, epochs=1, callbacks=[fastnn.TensorBoard(blocker / "logs")], verbose=0)


def test_history_plot_renders_training_and_validation_curves(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam", metrics=["accuracy", "auc"])
    history = model.fit(x, labels, epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    fig = history.plot(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy", "auc"]
    assert [len(line.get_xdata()) for line in fig.axes[2].lines] == [3, 3]
    with pytest.raises(ValueError, match="'f1' was not logged"):
        history.plot(metrics=["f1"])


# ---- CUDA ------------------------------------------------------------------------------------

def test_cuda_counters_equal_the_cpus():
    cuda_or_skip()
    x, labels = blobs(n=96, classes=7, width=8)
    results = {}
    for device in ("cpu", "cuda"):
        model, loss = classifier(classes=7, width=8, device=device)
        model.compile(loss, SGD(0.1), metrics=["accuracy", "auc", "precision", "recall", "top_k_accuracy"])
        results[device] = model.fit(x, labels, epochs=2, batch_size=32, shuffle=False, verbose=0).history
    for name, values in results["cpu"].items():
        np.testing.assert_allclose(results["cuda"][name], values, rtol=1e-5, err_msg=name)
    rng = np.random.default_rng(7)
    xr = rng.normal(size=(48, 3)).astype(np.float32)
    yr = (xr @ rng.normal(size=(3, 2))).astype(np.float32)
    for device in ("cpu", "cuda"):
        model = MLP([Dense(3, 2, activation=None)], seed=0, device=device)
        model.compile("mse", SGD(0.01), metrics=["mae", "mse", "r2", "cosine_similarity"])
        results[device] = model.fit(xr, yr, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    for name, values in results["cpu"].items():
        np.testing.assert_allclose(results["cuda"][name], values, rtol=1e-5, err_msg=name)
    xb, yb = binary_data(n=64)
    for device in ("cpu", "cuda"):
        model, loss = classifier(classes=1, width=4, device=device)
        model.compile(loss, SGD(0.1), metrics=["tp", "fp", "tn", "fn", "auc", "pr_auc"])
        results[device] = model.fit(xb, yb, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    for name, values in results["cpu"].items():
        np.testing.assert_allclose(results["cuda"][name], values, rtol=1e-5, err_msg=name)


def test_the_first_fit_compiles_outside_the_epochs_time(capsys):
    """compile_train compiles (or loads) the step without running it, and says so only when it
    had to compile; a second call for the same types does nothing."""
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam", metrics=["accuracy", "recall"])
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0)
    backend = model._backend
    args = (backend.dataset(x, np.eye(3, dtype=np.float32)[labels]), np.arange(240, dtype=np.int64), 32, 0, 1,
            model.loss.code, model._opt_hyper(), np.zeros(8), np.zeros(8, np.int64), *model._metric_counters())
    assert backend.compile_train(*args) is None  # compiled by the fit above
    assert isinstance(backend.will_compile(), bool)
    before = model.get_weights()
    assert backend.compile_train(*args) is None and all(np.array_equal(a, b) for a, b in
                                                         zip(before, model.get_weights()))


def test_the_compile_notice_is_printed_and_the_compile_kept_out_of_the_epochs_time(monkeypatch, capsys):
    """When will_compile says so, fit (verbose=1) prints the notice before compile_train runs,
    and the first epoch's time and throughput start after it: a 1 s compile counts nowhere."""
    import re
    import time
    x, labels = blobs()
    model, loss = classifier()
    model.compile(loss, "adam")
    model.fit(x, labels, epochs=1, batch_size=32, verbose=0)  # the step compiled: the epoch takes milliseconds
    backend = model._backend
    compile_train = backend.compile_train
    events = []

    def slow_compile(*args):
        events.append(capsys.readouterr().out)  # what was printed before compiling
        time.sleep(1.0)
        return compile_train(*args)

    monkeypatch.setattr(backend, "will_compile", lambda: True)
    monkeypatch.setattr(backend, "compile_train", slow_compile)
    start = time.perf_counter()
    model.fit(x, labels, epochs=1, batch_size=32, verbose=1)
    assert time.perf_counter() - start >= 1.0
    assert events == [backend.compile_notice + "\n"]
    assert backend.compile_notice == "compiling kernels (first run only, about 15 s on two cores) ..."
    seconds = float(re.search(r"Epoch 1/1 - (\d+\.\d+)s - ", capsys.readouterr().out).group(1))
    assert seconds < 0.5
