"""Embedding and Masking: kernels against closed-form NumPy and PyTorch's autograd
(``nn.Embedding(padding_idx=0)``, ``nn.EmbeddingBag``, an explicit mask), backward passes against
float64 central finite differences, one training step of a whole model against the same model
in PyTorch, input checks, save/load, and the CUDA twins under the simulator."""
import numpy as np
import pytest

import fastnn
from fastnn import Dense, Embedding, Masking, MLP
from fastnn.kernels import embedding as E
from fastnn.kernels import masking as M

COMBINERS = {"concat": E.CONCAT, "sum": E.SUM, "mean": E.MEAN}


def reference_embedding(ids, table, combiner, mask_zero):
    vectors = table[ids]  # (rows, L, D)
    if mask_zero:
        vectors = vectors * (ids != 0)[:, :, None]
    if combiner == "concat":
        return vectors.reshape(ids.shape[0], -1)
    total = vectors.sum(axis=1)
    if combiner == "sum":
        return total
    count = (ids != 0).sum(axis=1) if mask_zero else np.full(ids.shape[0], ids.shape[1])
    return np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], 0.0)


def problem(dtype, rows=9, length=4, vocabulary=7, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocabulary, (rows, length))
    ids[0] = 0  # a row of padding only
    table = rng.normal(size=(vocabulary, dim)).astype(dtype)
    return ids, table


def run_forward(ids, table, combiner, mask_zero):
    width = table.shape[1] * (ids.shape[1] if combiner == "concat" else 1)
    out = np.full((ids.shape[0], width), np.nan, table.dtype)
    E.embedding_forward(out, ids.astype(table.dtype), table, COMBINERS[combiner], mask_zero)
    return out


def run_backward(ids, table, dout, combiner, mask_zero):
    dtable = np.full_like(table, np.nan)
    E.embedding_backward(dtable, dout, ids.astype(table.dtype), COMBINERS[combiner], mask_zero)
    return dtable


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_embedding_forward_matches_reference(combiner, mask_zero, dtype):
    ids, table = problem(dtype)
    out = run_forward(ids, table, combiner, mask_zero)
    np.testing.assert_allclose(out, reference_embedding(ids, table.astype(np.float64), combiner, mask_zero),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-6)


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_embedding_backward_matches_finite_differences(combiner, mask_zero):
    ids, table = problem(np.float64)
    rng = np.random.default_rng(1)
    out = run_forward(ids, table, combiner, mask_zero)
    weights = rng.normal(size=out.shape)  # L = sum(weights * out): dL/dout = weights
    grad = run_backward(ids, table, weights, combiner, mask_zero)
    numeric = np.zeros_like(table)
    h = 1e-6
    for index in np.ndindex(table.shape):
        plus, minus = table.copy(), table.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = ((weights * run_forward(ids, plus, combiner, mask_zero)).sum()
                          - (weights * run_forward(ids, minus, combiner, mask_zero)).sum()) / (2 * h)
    if mask_zero:
        numeric[0] = 0  # padding gets no gradient (its vector is treated as zero, not used)
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-8)
    if mask_zero:
        assert np.all(grad[0] == 0)


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_embedding_matches_torch_autograd(combiner, mask_zero):
    torch = pytest.importorskip("torch")
    ids, table = problem(np.float64)
    dout = np.random.default_rng(2).normal(size=run_forward(ids, table, combiner, mask_zero).shape)
    padding = 0 if mask_zero else None
    if combiner == "concat":
        module = torch.nn.Embedding(table.shape[0], table.shape[1], padding_idx=padding, dtype=torch.float64)
    else:
        module = torch.nn.EmbeddingBag(table.shape[0], table.shape[1], mode=combiner, padding_idx=padding,
                                       dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(table))
    if mask_zero:  # torch uses the stored padding row; fastnn treats it as zero (and keeps it so)
        with torch.no_grad():
            module.weight[0] = 0
        table = table.copy()
        table[0] = 0
    out = module(torch.from_numpy(ids))
    out = out.reshape(ids.shape[0], -1)
    out.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(run_forward(ids, table, combiner, mask_zero), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(run_backward(ids, table, dout, combiner, mask_zero), module.weight.grad.numpy(),
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masking_forward_backward_match_an_explicit_mask(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (6, 5)).astype(dtype)  # many entries equal the mask value
    out = np.full_like(x, np.nan)
    M.masking_forward(out.reshape(-1), x.reshape(-1), -1.0)
    np.testing.assert_array_equal(out, np.where(x == -1, 0, x))
    dout = rng.normal(size=x.shape).astype(dtype)
    dx = np.full_like(x, np.nan)
    M.masking_backward(dx.reshape(-1), dout.reshape(-1), x.reshape(-1), -1.0)
    xt = torch.from_numpy(x).requires_grad_()
    yt = xt * (xt != -1)
    yt.backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(out, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


def embedding_model(combiner, mask_zero, dtype="float64", device="cpu", optimizer=None):
    model = MLP([Embedding(7, 3, input_length=4, mask_zero=mask_zero, combiner=combiner),
                 Dense(None, 5, activation="tanh"), Masking(0.25), Dense(None, 3, activation="softmax")],
                seed=0, dtype=dtype, device=device)
    return model.compile("cross_entropy", optimizer or fastnn.SGD(0.5))


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("combiner", list(COMBINERS))
def test_one_training_step_equals_torch(combiner, mask_zero):
    """Embedding -> Dense(tanh) -> Masking -> Dense(softmax), cross-entropy, SGD: the weights after one step."""
    torch = pytest.importorskip("torch")
    ids, _ = problem(np.float64, rows=12)
    y = np.random.default_rng(4).integers(0, 3, 12)
    model = embedding_model(combiner, mask_zero)
    table, w1, b1, w2, b2 = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    idt = torch.from_numpy(ids)
    if combiner == "concat":
        h = torch.nn.functional.embedding(idt, table, padding_idx=0 if mask_zero else None)
        if mask_zero:
            h = h * (idt != 0)[:, :, None]
        h = h.reshape(12, -1)
    else:
        h = torch.nn.functional.embedding_bag(idt, table, mode=combiner, padding_idx=0 if mask_zero else None)
    h = torch.tanh(h @ w1 + b1)
    h = h * (h != 0.25)
    logits = h @ w2 + b2
    loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
    loss.backward()
    before = model.train_on_batch(ids, y)
    np.testing.assert_allclose(before, loss.item(), rtol=1e-12)
    for mine, theirs in zip(model.get_weights(), (table, w1, b1, w2, b2)):
        np.testing.assert_allclose(mine, (theirs - 0.5 * theirs.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_masked_entries_pass_no_gradient_through_a_model():
    """A Masking value that occurs in the data: the masked entries' first-layer weights get no gradient."""
    model = MLP([Masking(-1.0, input_dim=3), Dense(3, 2, activation="softmax")], seed=0, dtype="float64")
    model.compile("cross_entropy", fastnn.SGD(1.0))
    x = np.array([[-1.0, 2.0, 0.5], [-1.0, 1.0, -2.0]])  # feature 0 always missing
    before = model.get_weights()
    model.train_on_batch(x, np.array([0, 1]))
    after = model.get_weights()
    np.testing.assert_array_equal(after[0][0], before[0][0])  # no gradient into W[0, :]
    assert not np.array_equal(after[0][1], before[0][1])


@pytest.mark.slow  # a learning run: 40 epochs
def test_padding_stays_zero_and_the_model_learns():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 10, (300, 4))
    y = (np.isin(ids, [3, 7]).sum(axis=1) > 0).astype(int)  # whether the row holds id 3 or 7
    model = MLP([Embedding(10, 8, input_length=4, mask_zero=True, combiner="sum"), Dense(None, 2, activation="softmax")],
                seed=0).compile("cross_entropy", fastnn.Adam(0.05), metrics=["accuracy"])
    history = model.fit(ids, y, epochs=40, batch_size=30, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    assert np.all(model.get_weights()[0][0] == 0)


@pytest.mark.parametrize("bad, message", [(np.array([[0, 1, 2, 10]]), "ids from 0 to 10"),
                                          (np.array([[0, 1, 2, -1]]), "ids from -1 to 2"),
                                          (np.array([[0, 1, 2.5, 3]]), "whole numbers"),
                                          (np.array([[0, 1, np.nan, 3]]), "whole numbers"),
                                          (np.array([[0, 1, 2]]), "input_length=4"),
                                          (np.array([["a", "b", "c", "d"]]), "integer ids")])
def test_bad_ids_are_a_valueerror_before_any_kernel(bad, message):
    model = embedding_model("concat", False)
    with pytest.raises(ValueError, match=message):
        model.predict(bad)
    with pytest.raises(ValueError, match=message):
        model.fit(bad, np.zeros(len(bad), int), verbose=0)


def test_embedding_arguments_and_float32_ids():
    with pytest.raises(ValueError, match="combiner"):
        Embedding(5, 2, combiner="max")
    with pytest.raises(ValueError, match="input_dim must be at least 2"):
        Embedding(1, 2, mask_zero=True)
    with pytest.raises(ValueError, match="Embedding reads rows of input_length=2"):
        MLP([Dense(3, 3), Embedding(5, 2, input_length=2)])
    big = MLP([Embedding(2 ** 25, 1), Dense(None, 1)], dtype="float32")
    with pytest.raises(ValueError, match="not exact in float32"):
        big.predict(np.array([[3]]))
    emb = Embedding(5, 2, input_length=3, combiner="mean")
    assert emb.get_config()["input_dim"] == 5 and emb.get_config()["output_dim"] == 2
    assert (emb.input_dim, emb.output_dim, emb.vocabulary, emb.embedding_dim) == (3, 2, 5, 2)
    rebuilt = fastnn.base.deserialize({"class_name": "Embedding", "config": emb.get_config()})
    assert rebuilt.get_config() == emb.get_config()


def test_set_weights_rejects_a_nonzero_padding_vector():
    model = embedding_model("sum", True)
    weights = model.get_weights()
    weights[0][0] = 1.0
    with pytest.raises(ValueError, match="padding"):
        model.set_weights(weights)


def test_save_and_load_round_trip(tmp_path):
    ids, _ = problem(np.float64, rows=20)
    y = np.random.default_rng(6).integers(0, 3, 20)
    model = embedding_model("mean", True, optimizer=fastnn.Adam(1e-2))
    model.fit(ids, y, epochs=2, batch_size=5, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(ids), model.predict(ids))
    model.fit(ids, y, epochs=1, batch_size=5, verbose=0)
    loaded.fit(ids, y, epochs=1, batch_size=5, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
