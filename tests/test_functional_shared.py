"""Shared layers in the functional API: a layer called on several tensors is one set of weights
whose gradient is the sum of its calls'. Against PyTorch (one nn.Linear / embedding table used
twice): losses and weights after Adam steps, SGD with per-tensor clipping, a shared Embedding;
the gradients against float64 finite differences; the layer appears once in the weights, the
summary and the saved config; a frozen shared layer stays put; the errors."""
import numpy as np
import pytest

import fastnn
from fastnn import Add, Concatenate, Dense, Embedding, Input, Model, Multiply


def shared_graph(dtype="float64", seed=0, optimizer=None, frozen=False):
    """``enc`` on both inputs (a siamese pair) and ``block`` twice in a row (a chain)."""
    a, b = Input((3,)), Input((3,))
    enc = Dense(units=4, activation="tanh")
    block = Dense(units=4, activation="sigmoid")
    ha, hb = enc(a), enc(b)
    r = block(block(Add()([ha, hb])))
    out = Dense(units=2, activation="softmax")(Concatenate()([r, Multiply()([ha, hb])]))
    enc.trainable = not frozen
    model = Model(inputs=[a, b], outputs=out, seed=seed, dtype=dtype)
    return model.compile("cross_entropy", optimizer or fastnn.Adam(0.05))


def torch_graph(torch, weights, xa, xb):
    We, be, Wk, bk, Wo, bo = weights
    ha, hb = torch.tanh(xa @ We + be), torch.tanh(xb @ We + be)
    r = torch.sigmoid(torch.sigmoid((ha + hb) @ Wk + bk) @ Wk + bk)
    return torch.cat([r, ha * hb], dim=1) @ Wo + bo  # logits: cross_entropy applies the softmax


def data(rows=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)), rng.normal(size=(rows, 3)), rng.integers(0, 2, rows)


def test_a_shared_layer_has_one_set_of_weights(capsys):
    model = shared_graph()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 4), (4,), (4, 4), (4,), (8, 2), (2,)]  # enc, block, the output: each once
    assert model.count_params() == 16 + 20 + 18
    assert sum(isinstance(layer, Dense) for layer in model.layers) == 3
    assert len(model._compute_layers()) == 10  # 2 inputs, 2 enc calls, Add, 2 block calls, Multiply, Concat, out
    model.summary()
    text = capsys.readouterr().out
    assert "input_0; input_1" in text  # enc's two calls
    assert "add_3; dense_4" in text  # block reads the Add, then itself
    enc = model.layers[2]
    assert [w.shape for w in enc.get_weights()] == [(3, 4), (4,)]


def test_adam_steps_equal_torch():
    torch = pytest.importorskip("torch")
    xa, xb, y = data()
    model = shared_graph()
    params = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    opt = torch.optim.Adam(params, lr=0.05, eps=1e-8)
    ta, tb, ty = torch.from_numpy(xa), torch.from_numpy(xb), torch.from_numpy(y)
    for _ in range(4):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch_graph(torch, params, ta, tb), ty)
        loss.backward()
        opt.step()
        np.testing.assert_allclose(model.train_on_batch([xa, xb], y), loss.item(), rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), params):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_clipnorm_clips_a_shared_tensor_once():
    """Per-tensor clipping (Keras' clipnorm) of the summed gradient: a shared layer's W is one
    tensor, clipped once, not once per call."""
    torch = pytest.importorskip("torch")
    xa, xb, y = data()
    clip, lr = 0.05, 0.3
    model = shared_graph(optimizer=fastnn.SGD(lr, clipnorm=clip))
    params = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    loss = torch.nn.functional.cross_entropy(torch_graph(torch, params, torch.from_numpy(xa), torch.from_numpy(xb)),
                                             torch.from_numpy(y))
    loss.backward()
    norms = [p.grad.norm().item() for p in params]
    assert max(norms) > 2 * clip  # clipping is active
    model.train_on_batch([xa, xb], y)
    for mine, theirs, norm in zip(model.get_weights(), params, norms):
        g = theirs.grad.numpy() * clip / max(norm, clip)
        np.testing.assert_allclose(mine, theirs.detach().numpy() - lr * g, rtol=1e-9, atol=1e-12)


def test_gradients_equal_finite_differences():
    """dL/dW of the float64 model (the last step's, ``named_weights(gradients=True)``) against
    central differences of ``evaluate``'s loss, for every parameter."""
    xa, xb, y = data(6)
    model = shared_graph(optimizer=fastnn.SGD(1e-3))
    start = model.get_weights()
    model.train_on_batch([xa, xb], y)
    grads = [g for _, _, _, g in model.named_weights(gradients=True)]
    eps = 1e-6
    for i, w in enumerate(start):
        numeric = np.zeros_like(w)
        for j in np.ndindex(w.shape):
            losses = []
            for sign in (1, -1):
                shifted = [v.copy() for v in start]
                shifted[i][j] += sign * eps
                model.set_weights(shifted)
                losses.append(model.evaluate([xa, xb], y, batch_size=len(y)))
            numeric[j] = (losses[0] - losses[1]) / (2 * eps)
        # Central differences of a smooth loss at eps 1e-6: error about eps^2 + 1e-16 / eps.
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-6, atol=1e-8, err_msg=f"weight {i}")


def test_a_shared_embedding_equals_torch():
    """One table read by two id inputs: its gradient is the sum of both lookups' scatters."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    ids1, ids2, y = rng.integers(0, 6, (8, 2)), rng.integers(0, 6, (8, 2)), rng.integers(0, 2, 8)
    i1, i2 = Input((2,)), Input((2,))
    emb = Embedding(6, 3, input_length=2, combiner="sum")
    out = Dense(units=2, activation="softmax")(Concatenate()([emb(i1), emb(i2)]))
    model = Model([i1, i2], out, seed=0, dtype="float64").compile("cross_entropy", fastnn.SGD(0.5))
    table, W, b = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    e1 = torch.nn.functional.embedding(torch.from_numpy(ids1), table).sum(dim=1)
    e2 = torch.nn.functional.embedding(torch.from_numpy(ids2), table).sum(dim=1)
    loss = torch.nn.functional.cross_entropy(torch.cat([e1, e2], dim=1) @ W + b, torch.from_numpy(y))
    loss.backward()
    np.testing.assert_allclose(model.train_on_batch([ids1, ids2], y), loss.item(), rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), (table, W, b)):
        np.testing.assert_allclose(mine, (theirs - 0.5 * theirs.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_float32_agrees_with_float64():
    xa, xb, y = data()
    results = []
    for dtype in ("float32", "float64"):
        model = shared_graph(dtype)
        model.fit([xa, xb], y, epochs=3, batch_size=4, verbose=0)
        results.append(model.get_weights())
    for w32, w64 in zip(*results):
        np.testing.assert_allclose(w32, w64, rtol=1e-3, atol=1e-4)


def test_a_frozen_shared_layer_stays_put():
    xa, xb, y = data()
    model = shared_graph(frozen=True)
    before = model.get_weights()
    model.fit([xa, xb], y, epochs=2, batch_size=4, verbose=0)
    after = model.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert not np.array_equal(after[2], before[2])


def test_save_load_pickle_and_copy_round_trip(tmp_path):
    import copy
    import pickle
    xa, xb, y = data(20)
    model = shared_graph()
    model.fit([xa, xb], y, epochs=2, batch_size=8, verbose=0)
    config = model.get_config()
    assert len(config["layers"]) == 8 and len(config["model"]["calls"]) == 10
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    assert len(loaded.layers) == len(model.layers) and len(loaded._compute_layers()) == 10
    np.testing.assert_array_equal(loaded.predict([xa, xb]), model.predict([xa, xb]))
    model.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    loaded.fit([xa, xb], y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        np.testing.assert_array_equal(twin.predict([xa, xb]), model.predict([xa, xb]))


def test_errors():
    a, b = Input((3,)), Input((2,))
    dense = Dense(units=4)
    dense(a)
    with pytest.raises(ValueError, match=r"widths \[3\].*got \[2\]"):
        dense(b)
    add = Add()
    add([dense(a), dense(a)])
    with pytest.raises(ValueError, match=r"widths \[4, 4\].*got \[4, 2\]"):
        add([dense(a), b])
    with pytest.raises(ValueError, match="reads ids"):
        emb = Embedding(5, 2, input_length=3)
        emb(a)
        emb(dense(a))
    model = Model([a], dense(a))
    with pytest.raises(ValueError, match="already belongs to a model"):
        dense(a)


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_a_shared_normalization_layer_equals_torch(kind):
    """A BatchNormalization (LayerNormalization) called on two tensors, as one torch module used
    twice: each call normalizes its own tensor (by its own batch's statistics), gamma and beta get
    the sum of both calls' gradients, and BatchNorm's running statistics move once per call, in
    call order; then inference with them."""
    torch = pytest.importorskip("torch")
    xa, xb, y = data(12)
    a, b = Input((3,)), Input((3,))
    enc = Dense(units=4, activation="tanh")
    norm = fastnn.BatchNormalization(momentum=0.1) if kind == "batch" else fastnn.LayerNormalization(epsilon=1e-3)
    out = Dense(units=2, activation="softmax")(Concatenate()([norm(enc(a)), norm(enc(b))]))
    model = Model(inputs=[a, b], outputs=out, seed=0, dtype="float64").compile("cross_entropy", fastnn.Adam(0.05))
    weights = model.get_weights()
    tnorm = (torch.nn.BatchNorm1d(4, momentum=0.1, eps=1e-5) if kind == "batch"
             else torch.nn.LayerNorm(4, eps=1e-3)).double()
    with torch.no_grad():
        tnorm.weight.copy_(torch.from_numpy(weights[2]))
        tnorm.bias.copy_(torch.from_numpy(weights[3]))
    We, be, Wo, bo = (torch.tensor(w, requires_grad=True) for w in (weights[0], weights[1], weights[-2], weights[-1]))
    opt = torch.optim.Adam([We, be, tnorm.weight, tnorm.bias, Wo, bo], lr=0.05, eps=1e-8)
    ta, tb, ty = torch.from_numpy(xa), torch.from_numpy(xb), torch.from_numpy(y)

    def logits():
        return torch.cat([tnorm(torch.tanh(ta @ We + be)), tnorm(torch.tanh(tb @ We + be))], dim=1) @ Wo + bo

    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(), ty)
        loss.backward()
        opt.step()
        np.testing.assert_allclose(model.train_on_batch([xa, xb], y), loss.item(), rtol=1e-12)
    theirs = [We, be, tnorm.weight, tnorm.bias] + ([tnorm.running_mean, tnorm.running_var] if kind == "batch" else [])
    for mine, their in zip(model.get_weights(), theirs + [Wo, bo]):
        np.testing.assert_allclose(mine, their.detach().numpy(), rtol=1e-9, atol=1e-12)
    tnorm.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.predict([xa, xb]), torch.softmax(logits(), dim=1).numpy(), rtol=1e-9)
