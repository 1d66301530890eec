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
    with pytest.raises(ValueError, match="metrics"):
        model.compile("mse", metrics=["mae"])
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
    with pytest.raises(ValueError, match="sample_weight and class_weight"):
        model.fit(x, [ya, yb], verbose=0, sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="predict_classes"):
        model.predict_classes(x)
    b = Input((3,))
    one = Model([b], Dense(units=1)(b))
    with pytest.raises(ValueError, match="loss_weights weighs the losses of several outputs"):
        one.compile("mse", loss_weights=[2.0])
