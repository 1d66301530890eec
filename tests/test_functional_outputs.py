"""Several outputs in the functional API, as Keras 3: ``Model(inputs, [out_a, out_b])``, a loss
per output and ``loss_weights`` (lists or dicts by output name), y as a list or dict, the logs
"loss" and "<output>_loss" (and "val_" ones), predict returning a list. Against PyTorch: the
weighted sum of the losses, each output's loss and the weights after Adam steps, with an output
that another layer reads and a shared layer; save/load; ONNX's graph outputs; the errors."""
import numpy as np
import pytest

import fastnn
from fastnn import Concatenate, Dense, Input, Model


def two_outputs(dtype="float64", seed=0, optimizer=None, loss=("cross_entropy", "mse"), loss_weights=(1.0, 0.5)):
    """``enc`` shared by both inputs; out_a a softmax; out_b reads out_a as well as the features."""
    a, b = Input((3,)), Input((3,))
    enc = Dense(units=4, activation="tanh")
    h = Concatenate()([enc(a), enc(b)])
    out_a = Dense(units=3, activation="softmax")(h)
    out_b = Dense(units=2, activation=None)(Concatenate()([h, out_a]))
    model = Model(inputs=[a, b], outputs=[out_a, out_b], seed=seed, dtype=dtype)
    return model.compile(list(loss) if isinstance(loss, tuple) else loss, optimizer or fastnn.Adam(0.05),
                         loss_weights=list(loss_weights) if isinstance(loss_weights, tuple) else loss_weights)


def torch_losses(torch, weights, xa, xb, ya, yb):
    We, be, Wa, ba, Wb, bb = weights
    h = torch.cat([torch.tanh(xa @ We + be), torch.tanh(xb @ We + be)], dim=1)
    logits = h @ Wa + ba
    pa = torch.softmax(logits, dim=1)
    pb = torch.cat([h, pa], dim=1) @ Wb + bb
    return torch.nn.functional.cross_entropy(logits, ya), torch.nn.functional.mse_loss(pb, yb)


def data(rows=10, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(rows, 3)), rng.normal(size=(rows, 3)), rng.integers(0, 3, rows),
            rng.normal(size=(rows, 2)))


def test_names_and_widths():
    model = two_outputs()
    assert model.output_names == ["dense_4", "dense_6"]
    assert model.log_names(validation=True) == ["loss", "dense_4_loss", "dense_6_loss", "val_loss",
                                                "val_dense_4_loss", "val_dense_6_loss"]
    assert [w.shape for w in model.get_weights()] == [(3, 4), (4,), (8, 3), (3,), (11, 2), (2,)]
    xa, xb, _, _ = data()
    pa, pb = model.predict([xa, xb])
    assert pa.shape == (10, 3) and pb.shape == (10, 2)
    np.testing.assert_allclose(pa.sum(axis=1), 1.0, rtol=1e-12)
    for training in (False, True):  # no Dropout or BatchNorm: the training-mode pass is the same
        qa, qb = model([xa, xb], training=training)
        np.testing.assert_allclose(qa, pa, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(qb, pb, rtol=1e-12, atol=1e-15)


def test_adam_steps_equal_torch():
    torch = pytest.importorskip("torch")
    xa, xb, ya, yb = data()
    model = two_outputs()
    params = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    opt = torch.optim.Adam(params, lr=0.05, eps=1e-8)
    tensors = [torch.from_numpy(v) for v in (xa, xb, ya, yb)]
    for _ in range(4):
        opt.zero_grad()
        la, lb = torch_losses(torch, params, *tensors)
        loss = la + 0.5 * lb
        loss.backward()
        opt.step()
        np.testing.assert_allclose(model.train_on_batch([xa, xb], [ya, yb]), [loss.item(), la.item(), lb.item()],
                                   rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), params):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_a_zero_weight_trains_only_on_the_other_loss():
    """loss_weights [0, 1]: out_a's own layer gets no gradient, its loss is still logged."""
    torch = pytest.importorskip("torch")
    xa, xb, ya, yb = data()
    model = two_outputs(optimizer=fastnn.SGD(0.3), loss_weights={"dense_4": 0.0, "dense_6": 1.0})
    params = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    la, lb = torch_losses(torch, params, *[torch.from_numpy(v) for v in (xa, xb, ya, yb)])
    lb.backward()
    logs = model.train_on_batch([xa, xb], [ya, yb])
    np.testing.assert_allclose(logs, [lb.item(), la.item(), lb.item()], rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), params):
        np.testing.assert_allclose(mine, (theirs - 0.3 * theirs.grad).detach().numpy(), rtol=1e-10, atol=1e-12)
    assert np.abs(params[2].grad.numpy()).max() > 0  # W_a gets a gradient through out_b's reading out_a


def test_lists_and_dicts_give_the_same_training():
    xa, xb, ya, yb = data(20)
    by_list = two_outputs()
    by_dict = two_outputs(loss={"dense_6": "mse", "dense_4": "cross_entropy"},
                          loss_weights={"dense_6": 0.5, "dense_4": 1.0})
    h1 = by_list.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0, validation_data=([xa, xb], [ya, yb]))
    h2 = by_dict.fit([xa, xb], {"dense_6": yb, "dense_4": ya}, epochs=2, batch_size=8, verbose=0,
                     validation_data=([xa, xb], {"dense_4": ya, "dense_6": yb}))
    assert h1.history == h2.history
    for w1, w2 in zip(by_list.get_weights(), by_dict.get_weights()):
        np.testing.assert_array_equal(w1, w2)


def test_fit_logs_add_up_and_validation_equals_evaluate():
    xa, xb, ya, yb = data(20)
    model = two_outputs()
    history = model.fit([xa, xb], [ya, yb], epochs=3, batch_size=8, verbose=0,
                        validation_data=([xa, xb], [ya, yb])).history
    assert list(history) == model.log_names(validation=True)
    for prefix in ("", "val_"):  # each epoch's loss: the weighted sum of the outputs' (row-weighted means)
        np.testing.assert_allclose(history[prefix + "loss"], np.array(history[prefix + "dense_4_loss"])
                                   + 0.5 * np.array(history[prefix + "dense_6_loss"]), rtol=1e-12)
    evaluated = model.evaluate([xa, xb], [ya, yb], return_dict=True)
    assert evaluated == {k: history["val_" + k][-1] for k in ("loss", "dense_4_loss", "dense_6_loss")}
    pa, pb = model.predict([xa, xb])
    np.testing.assert_allclose(evaluated["dense_6_loss"], np.mean((pb - yb) ** 2), rtol=1e-12)
    np.testing.assert_allclose(evaluated["dense_4_loss"], -np.mean(np.log(pa[np.arange(20), ya])), rtol=1e-10)


def test_float32_agrees_with_float64():
    xa, xb, ya, yb = data()
    results = []
    for dtype in ("float32", "float64"):
        model = two_outputs(dtype)
        model.fit([xa, xb], [ya, yb], epochs=3, batch_size=4, verbose=0)
        results.append(model.get_weights())
    for w32, w64 in zip(*results):
        np.testing.assert_allclose(w32, w64, rtol=1e-3, atol=1e-4)


def test_save_load_pickle_and_copy_round_trip(tmp_path):
    import copy
    import pickle
    xa, xb, ya, yb = data(20)
    model = two_outputs()
    model.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert loaded.output_names == model.output_names and loaded.log_names() == model.log_names()
    for mine, theirs in zip(loaded.predict([xa, xb]), model.predict([xa, xb])):
        np.testing.assert_array_equal(mine, theirs)
    model.fit([xa, xb], [ya, yb], epochs=1, batch_size=8, verbose=0)
    loaded.fit([xa, xb], [ya, yb], epochs=1, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert twin.evaluate([xa, xb], [ya, yb]) == model.evaluate([xa, xb], [ya, yb])


def test_onnx_has_one_graph_output_per_output(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    xa, xb, ya, yb = data(20)
    model = two_outputs(dtype="float32")
    model.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0)
    path = model.to_onnx(tmp_path / "two.onnx")
    proto = onnx.load(str(path))
    assert [o.name for o in proto.graph.output] == ["dense_4", "dense_6"]
    assert len(proto.graph.initializer) == 6  # the shared encoder's W and b once
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["dense_4", "dense_6"], {"input_0": xa.astype(np.float32), "input_1": xb.astype(np.float32)})
    for mine, theirs in zip(got, model.predict([xa.astype(np.float32), xb.astype(np.float32)])):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_errors():
    a = Input((3,))
    h = Dense(units=4)(a)
    out_a, out_b = Dense(units=2, activation="softmax")(h), Dense(units=1)(h)
    with pytest.raises(ValueError, match=r"outputs\[1\] is an Input"):
        Model([a], [out_a, a])
    with pytest.raises(ValueError, match="same layer"):
        Model([a], [out_a, out_a])
    with pytest.raises(ValueError, match="at least one"):
        Model([a], [])
    model = Model([a], [out_a, out_b], seed=0)
    with pytest.raises(ValueError, match="loss must hold 2 entries"):
        model.compile(["cross_entropy"])
    with pytest.raises(ValueError, match="loss names 'out'"):
        model.compile({"out": "mse", "dense_2": "mse"})
    with pytest.raises(ValueError, match="loss gives no entry for output 'dense_3'"):
        model.compile({"dense_2": "mse"})
    with pytest.raises(ValueError, match=r"loss_weights\[1\]"):
        model.compile("mse", loss_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="a list of one entry per output"):
        model.compile("mse", metrics=["mae"])
    with pytest.raises(ValueError, match="metrics names 'z'"):
        model.compile("mse", metrics={"z": "mae"})
    with pytest.raises(TypeError, match="must be a list of one entry per output"):
        model.compile("mse", metrics="mae")
    with pytest.raises(ValueError, match="metrics of output 'dense_2': metric 'mae' does not fit a classification"):
        model.compile(["cross_entropy", "mse"], metrics=["mae", None])

    def loss(y_true, y_pred):
        return 0.0
    with pytest.raises(ValueError, match="'dense_3_loss' is logged twice"):
        model.compile(["cross_entropy", "mse"], metrics=[None, [loss]])
    model.compile(["cross_entropy", "mse"])
    x, ya, yb = np.zeros((4, 3)), np.array([0, 1, 0, 1]), np.zeros((4, 1))
    with pytest.raises(ValueError, match="y must hold 2 entries"):
        model.fit(x, [ya], verbose=0)
    with pytest.raises(ValueError, match="y must be a list of 2 arrays"):
        model.fit(x, ya, verbose=0)
    with pytest.raises(ValueError, match=r"y\['dense_3'\] has 3 rows"):
        model.fit(x, {"dense_2": ya, "dense_3": yb[:3]}, verbose=0)
    with pytest.raises(ValueError, match="validation_data y names 'z'"):
        model.fit(x, [ya, yb], verbose=0, validation_data=(x, {"z": ya, "dense_2": ya, "dense_3": yb}))
    with pytest.raises(ValueError, match="class_weight weighs the classes of a model of one output"):
        model.fit(x, [ya, yb], verbose=0, class_weight={0: 1.0, 1: 2.0})
    with pytest.raises(ValueError, match="a weight array per output is not supported"):
        model.fit(x, [ya, yb], verbose=0, sample_weight=[np.ones(4), np.ones(4)])
    with pytest.raises(ValueError, match="predict_classes"):
        model.predict_classes(x)
    b = Input((3,))
    one = Model([b], Dense(units=1)(b))
    with pytest.raises(ValueError, match="loss_weights weighs the losses of several outputs"):
        one.compile("mse", loss_weights=[2.0])


def cubed_error(y_true, y_pred):
    """A metric function of one output's columns: mean |error|^3."""
    return np.mean(np.abs(y_true - y_pred) ** 3)


def reference_metrics(pa, pb, ya, yb):
    """NumPy's figures of the metrics of ``with_metrics`` on predict's arrays."""
    from fastnn.metrics import roc_auc
    return {"dense_4_accuracy": np.mean(pa.argmax(1) == ya), "dense_4_auc": roc_auc(np.eye(3)[ya], pa),
            "dense_6_mae": np.mean(np.abs(pb - yb)), "dense_6_cubed_error": np.mean(np.abs(pb - yb) ** 3)}


def with_metrics(form="list"):
    metrics = ([["accuracy", "auc"], ["mae", cubed_error]] if form == "list"
               else {"dense_6": ["mean_absolute_error", cubed_error], "dense_4": ["acc", "roc_auc"]})
    return two_outputs().compile(["cross_entropy", "mse"], fastnn.Adam(0.05), metrics=metrics,
                                 loss_weights=[1.0, 0.5])


METRIC_LOGS = ["loss", "dense_4_loss", "dense_6_loss", "dense_4_accuracy", "dense_4_auc", "dense_6_mae",
               "dense_6_cubed_error"]


def test_metrics_per_output_as_keras_names_them():
    """Keras 3's forms (a list of one entry per output, or a dict by output name) and log names
    "<output>_<metric>", each metric on its own output's columns."""
    by_list, by_dict = with_metrics("list"), with_metrics("dict")
    assert by_list.log_names(validation=True) == METRIC_LOGS + ["val_" + n for n in METRIC_LOGS]
    assert by_dict.log_names() == METRIC_LOGS
    xa, xb, ya, yb = data(20)
    h1 = by_list.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0, validation_data=([xa, xb], [ya, yb]))
    h2 = by_dict.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0, validation_data=([xa, xb], [ya, yb]))
    assert h1.history == h2.history
    only_b = two_outputs().compile(["cross_entropy", "mse"], metrics={"dense_6": "mae"})
    assert only_b.log_names() == ["loss", "dense_4_loss", "dense_6_loss", "dense_6_mae"]


def test_metrics_per_output_equal_numpy_in_training_and_evaluate():
    """evaluate (exact, from predict's arrays) and train_on_batch's figures (counted in the compiled
    step on the batch before its update: AUC aside, which training counts over 200 score buckets)
    equal NumPy's on each output's own arrays."""
    xa, xb, ya, yb = data(20)
    model = with_metrics()
    pa, pb = model.predict([xa, xb])
    expected = reference_metrics(pa, pb, ya, yb)
    logged = dict(zip(METRIC_LOGS, model.train_on_batch([xa, xb], [ya, yb])))
    for name, value in expected.items():
        if name != "dense_4_auc":
            np.testing.assert_allclose(logged[name], value, rtol=1e-12, err_msg=name)
    assert 0.0 <= logged["dense_4_auc"] <= 1.0
    pa, pb = model.predict([xa, xb])
    evaluated = model.evaluate([xa, xb], [ya, yb], return_dict=True)
    assert list(evaluated) == METRIC_LOGS
    for name, value in reference_metrics(pa, pb, ya, yb).items():
        np.testing.assert_allclose(evaluated[name], value, rtol=1e-12, err_msg=name)


def test_metrics_per_output_are_saved_and_loaded(tmp_path):
    import pickle
    xa, xb, ya, yb = data(20)
    model = with_metrics()
    model.fit([xa, xb], [ya, yb], epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz", custom_objects={"cubed_error": cubed_error})
    assert loaded.log_names() == METRIC_LOGS
    assert loaded.evaluate([xa, xb], [ya, yb]) == model.evaluate([xa, xb], [ya, yb])
    assert pickle.loads(pickle.dumps(model)).evaluate([xa, xb], [ya, yb]) == model.evaluate([xa, xb], [ya, yb])


def test_one_sample_weight_weighs_every_output_as_torch():
    """Keras 3: one sample_weight array weighs each output's loss (sum_over_batch_size: sum_i w_i l_i
    / rows), "<output>_loss" included (before loss_weights); checked against torch with
    reduction="none", the loss and the weights after Adam steps, and evaluate's weighted figures."""
    torch = pytest.importorskip("torch")
    xa, xb, ya, yb = data()
    w = np.random.default_rng(3).uniform(0.0, 2.0, 10)
    w[4] = 0.0
    model = two_outputs()
    params = [torch.tensor(p, requires_grad=True) for p in model.get_weights()]
    opt = torch.optim.Adam(params, lr=0.05, eps=1e-8)
    tw = torch.from_numpy(w)

    def torch_weighted(params):
        We, be, Wa, ba, Wb, bb = params
        xa_, xb_ = torch.from_numpy(xa), torch.from_numpy(xb)
        h = torch.cat([torch.tanh(xa_ @ We + be), torch.tanh(xb_ @ We + be)], dim=1)
        logits = h @ Wa + ba
        pb = torch.cat([h, torch.softmax(logits, dim=1)], dim=1) @ Wb + bb
        la = (torch.nn.functional.cross_entropy(logits, torch.from_numpy(ya), reduction="none") * tw).mean()
        lb = (torch.nn.functional.mse_loss(pb, torch.from_numpy(yb), reduction="none").mean(1) * tw).mean()
        return la, lb

    for _ in range(3):
        opt.zero_grad()
        la, lb = torch_weighted(params)
        (la + 0.5 * lb).backward()
        opt.step()
        np.testing.assert_allclose(model.train_on_batch([xa, xb], [ya, yb], sample_weight=w),
                                   [la.item() + 0.5 * lb.item(), la.item(), lb.item()], rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), params):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-9, atol=1e-12)
    la, lb = torch_weighted(params)
    np.testing.assert_allclose(model.evaluate([xa, xb], [ya, yb], sample_weight=w, batch_size=4),
                               [la.item() + 0.5 * lb.item(), la.item(), lb.item()], rtol=1e-12)


def test_sample_weight_of_several_outputs_in_fit_and_validation():
    """fit with one weight array: ones train exactly as none; the validation figures (a 3-tuple)
    equal evaluate's with the same weights."""
    xa, xb, ya, yb = data(20)
    plain, ones = two_outputs(), two_outputs()
    h1 = plain.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0)
    h2 = ones.fit([xa, xb], [ya, yb], epochs=2, batch_size=8, verbose=0, sample_weight=np.ones(20))
    for k in h1.history:
        np.testing.assert_allclose(h1.history[k], h2.history[k], rtol=1e-12)
    for a, b in zip(plain.get_weights(), ones.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    w = np.linspace(0.0, 2.0, 20)
    history = ones.fit([xa, xb], [ya, yb], epochs=1, batch_size=8, verbose=0, sample_weight=w,
                       validation_data=([xa, xb], [ya, yb], w)).history
    evaluated = ones.evaluate([xa, xb], [ya, yb], sample_weight=w, return_dict=True)
    assert {k: history["val_" + k][-1] for k in evaluated} == pytest.approx(evaluated, rel=1e-12)
