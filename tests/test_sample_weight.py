"""sample_weight and class_weight: the loss and one step against PyTorch's reduction='none' losses
times the weights over the batch's rows (Keras 3's ``sum_over_batch_size``), the equivalences
(class weights as sample weights, weights of 1 as none, zero weights as absent rows), evaluate,
validation data, and the checks at the API boundary."""
import numpy as np
import pytest

from fastnn import MLP, SGD, Dense
from fastnn.kernels import losses as K

ROWS, N_IN, N_OUT = 12, 5, 3


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, N_IN))
    labels = rng.integers(0, N_OUT, ROWS)
    w = rng.uniform(0.0, 2.0, ROWS)
    w[3] = 0.0
    return x, labels, w


def model(activation, loss, lr=0.5):
    m = MLP([Dense(N_IN, 4, activation="tanh"), Dense(4, N_OUT, activation=activation)], seed=3, dtype="float64")
    m.compile(loss=loss, optimizer=SGD(lr))
    return m


CASES = {  # fastnn's (activation, loss), targets, and torch's per-row loss on the logits
    "mse": ("linear", "mse"),
    "cross_entropy": ("softmax", "categorical_crossentropy"),
    "bce": ("sigmoid", "binary_crossentropy"),
}


def torch_rows(torch, name, z, labels, targets):
    F = torch.nn.functional
    if name == "mse":
        return ((z - targets) ** 2).mean(1)
    if name == "cross_entropy":
        return F.cross_entropy(z, labels, reduction="none")
    return F.binary_cross_entropy_with_logits(z, targets, reduction="none").mean(1)


@pytest.mark.parametrize("name", list(CASES))
def test_weighted_loss_and_step_equal_torchs(name):
    """(loss(reduction='none') * w).sum() / rows, and the SGD step on its gradient (the fused
    softmax and sigmoid gradients weighted too); a zero weight among them."""
    torch = pytest.importorskip("torch")
    x, labels, w = data()
    targets = np.eye(N_OUT)[labels] if name != "mse" else np.random.default_rng(1).normal(size=(ROWS, N_OUT))
    m = model(*CASES[name])
    params = [torch.tensor(p, requires_grad=True) for p in m.get_weights()]
    w1, b1, w2, b2 = params
    z = torch.tanh(torch.tensor(x) @ w1 + b1) @ w2 + b2
    expected = (torch_rows(torch, name, z, torch.tensor(labels), torch.tensor(targets)) * torch.tensor(w)).sum() / ROWS
    expected.backward()
    loss = m.train_on_batch(x, labels if name == "cross_entropy" else targets, sample_weight=w)
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-12)
    for ours, p in zip(m.get_weights(), params):
        assert np.any(p.grad.numpy() != 0)
        np.testing.assert_allclose(ours, (p - 0.5 * p.grad).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_weighted_loss_forward_of_every_loss():
    """Weights of 1: the unweighted loss (up to the order of the additions); weights c: c times it,
    for every loss code, the summed SSE included."""
    rng = np.random.default_rng(2)
    pred = rng.uniform(0.05, 0.95, size=(6, 3))
    pred /= pred.sum(1, keepdims=True)
    target = np.eye(3)[rng.integers(0, 3, 6)]
    for code in range(10):
        plain = K.loss_forward(code, pred, target)
        np.testing.assert_allclose(K.weighted_loss_forward(code, pred, target, np.ones(6)), plain, rtol=1e-13)
        np.testing.assert_allclose(K.weighted_loss_forward(code, pred, target, np.full(6, 2.5)), 2.5 * plain,
                                   rtol=1e-13)
        w = rng.uniform(0, 2, 6)
        rows = np.array([K.loss_forward(code, pred[i:i + 1], target[i:i + 1]) for i in range(6)])
        assert rows.std() > 0 or code == K.PERCEPTRON
        expected = (w * rows).sum() / (1 if code == K.SSE else 6)
        np.testing.assert_allclose(K.weighted_loss_forward(code, pred, target, w), expected, rtol=1e-13)


def test_weights_of_one_train_as_no_weights_bit_for_bit():
    x, labels, _ = data()
    a, b = model("softmax", "categorical_crossentropy"), model("softmax", "categorical_crossentropy")
    ha = a.fit(x, labels, epochs=2, batch_size=5, verbose=0)
    hb = b.fit(x, labels, epochs=2, batch_size=5, verbose=0, sample_weight=np.ones(ROWS))
    for p, q in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(p, q)
    np.testing.assert_allclose(hb.history["loss"], ha.history["loss"], rtol=1e-13)


def test_class_weight_is_the_equivalent_sample_weight():
    """Keras 3: a row weighs its class's weight; a class missing from the dict weighs 1."""
    x, labels, _ = data()
    class_weight = {0: 0.25, 2: 3.0}
    a, b = model("softmax", "categorical_crossentropy"), model("softmax", "categorical_crossentropy")
    ha = a.fit(x, labels, epochs=2, batch_size=5, verbose=0, class_weight=class_weight)
    hb = b.fit(x, labels, epochs=2, batch_size=5, verbose=0,
               sample_weight=np.array([class_weight.get(c, 1.0) for c in labels]))
    for p, q in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(p, q)
    assert ha.history["loss"] == hb.history["loss"]
    # One-hot targets: the class is the argmax; a single sigmoid output: the rounded target.
    c = model("softmax", "categorical_crossentropy")
    c.fit(x, np.eye(N_OUT)[labels], epochs=2, batch_size=5, verbose=0, class_weight=class_weight)
    for p, q in zip(a.get_weights(), c.get_weights()):
        assert np.array_equal(p, q)
    from fastnn.sample_weights import class_weights_to_rows
    assert list(class_weights_to_rows({1: 4.0}, np.array([[0.2], [0.7], [1.0]]), np.float64)) == [1.0, 4.0, 4.0]


def test_zero_weight_rows_contribute_nothing():
    x, labels, w = data()
    a, b = model("softmax", "categorical_crossentropy"), model("softmax", "categorical_crossentropy")
    w = w.copy()
    w[[0, 5]] = 0.0
    x2, labels2 = x.copy(), labels.copy()
    x2[[0, 5]] = [[50.0] * N_IN, [-30.0] * N_IN]
    labels2[[0, 5]] = (labels[[0, 5]] + 1) % N_OUT
    la = a.train_on_batch(x, labels, sample_weight=w)
    lb = b.train_on_batch(x2, labels2, sample_weight=w)
    assert la == pytest.approx(lb, rel=1e-14)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)


def test_evaluate_weights_the_loss_per_batch_as_keras():
    """Each batch's sum_i w_i l_i / rows, averaged over batches by their rows: sum_i w_i l_i / n."""
    x, labels, w = data()
    m = model("softmax", "categorical_crossentropy")
    p = m.predict(x)
    rows = -np.log(p[np.arange(ROWS), labels])
    np.testing.assert_allclose(m.evaluate(x, labels, batch_size=5, sample_weight=w), (w * rows).sum() / ROWS,
                               rtol=1e-12)
    assert m.evaluate(x, labels, sample_weight=np.ones(ROWS)) == pytest.approx(m.evaluate(x, labels), rel=1e-13)


def test_validation_data_with_weights_and_validation_split_keep_their_weights():
    x, labels, w = data()
    m = model("softmax", "categorical_crossentropy", lr=0.0)
    h = m.fit(x, labels, epochs=1, batch_size=4, verbose=0, validation_data=(x[:6], labels[:6], w[:6]))
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x[:6], labels[:6], sample_weight=w[:6]), rel=1e-13)
    h = m.fit(x, labels, epochs=1, batch_size=4, verbose=0, validation_split=0.25, sample_weight=w)
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x[9:], labels[9:], sample_weight=w[9:]), rel=1e-13)
    assert h.history["val_loss"][0] != pytest.approx(m.evaluate(x[9:], labels[9:]), rel=1e-6)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sample_weight": np.ones(ROWS - 1)}, ValueError, "one weight per row"),
    ({"sample_weight": np.ones((ROWS, 1))}, ValueError, "1-D"),
    ({"sample_weight": -np.ones(ROWS)}, ValueError, ">= 0"),
    ({"sample_weight": np.full(ROWS, np.nan)}, ValueError, "finite"),
    ({"sample_weight": np.array(["a"] * ROWS)}, TypeError, "real numbers"),
    ({"sample_weight": "weights"}, TypeError, "sample_weight"),
    ({"sample_weight": np.ones(ROWS), "class_weight": {0: 1.0}}, ValueError, "both"),
    ({"class_weight": [1.0, 2.0, 3.0]}, TypeError, "dict"),
    ({"class_weight": {0: -1.0}}, ValueError, r"class_weight\[0\]"),
    ({"class_weight": {"a": 1.0}}, TypeError, "integer"),
    ({"validation_data": (np.zeros((2, N_IN)), [0, 1], [1.0])}, ValueError, "validation_data's sample_weight"),
])
def test_bad_weights_are_refused_before_training(kwargs, error, match):
    x, labels, _ = data()
    m = model("softmax", "categorical_crossentropy")
    before = m.get_weights()
    with pytest.raises(error, match=match):
        m.fit(x, labels, epochs=1, verbose=0, **kwargs)
    for p, q in zip(before, m.get_weights()):
        assert np.array_equal(p, q)
    if "sample_weight" in kwargs and "class_weight" not in kwargs:
        with pytest.raises(error, match=match):
            m.evaluate(x, labels, sample_weight=kwargs["sample_weight"])
    with pytest.raises(ValueError, match="one weight per row"):
        m.train_on_batch(x, labels, sample_weight=np.ones(2))


def test_weights_that_overflow_the_models_dtype_are_refused():
    from fastnn.sample_weights import check_sample_weight
    with pytest.raises(ValueError, match="finite"):
        check_sample_weight(np.full(3, 1e300), 3, np.float32)


def test_weights_over_their_sum_scale_the_whole_step():
    """scikit-learn's normalization (``SampleWeights.normalize``): the batch's objective, weight
    penalty included, times rows / sum of weights; for SGD, the Keras-normalized step at a
    learning rate that many times larger."""
    from fastnn import L2
    x, labels, w = data()
    c = ROWS / w.sum()

    def penalized(lr):
        m = MLP([Dense(N_IN, 4, activation="tanh", kernel_regularizer=L2(0.01)),
                 Dense(4, N_OUT, activation="softmax")], seed=3, dtype="float64")
        return m.compile(loss="categorical_crossentropy", optimizer=SGD(lr))
    a, b = penalized(0.5), penalized(0.5 * c)
    a._weights_over_their_sum = True
    la, lb = a.train_on_batch(x, labels, sample_weight=w), b.train_on_batch(x, labels, sample_weight=w)
    assert la == pytest.approx(c * lb, rel=1e-13)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # (by message: without scikit-learn the test skips)
def test_sklearn_integer_weights_equal_repeated_rows():
    """scikit-learn's check_sample_weight_equivalence, on one full batch: the weighted fit
    predicts as the fit on the rows repeated."""
    pytest.importorskip("sklearn")
    from fastnn.sklearn import MLPClassifier, MLPRegressor
    from sklearn.metrics import accuracy_score
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=20)
    w = rng.integers(0, 3, 20)
    kwargs = dict(hidden_layer_sizes=(4,), max_iter=20, random_state=0, shuffle=False)
    weighted = MLPRegressor(**kwargs).fit(x, y, sample_weight=w)
    repeated = MLPRegressor(**kwargs).fit(np.repeat(x, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.predict(x), repeated.predict(x), rtol=1e-9, atol=1e-12)
    assert weighted.loss_curve_ == pytest.approx(repeated.loss_curve_, rel=1e-9)
    unweighted = MLPRegressor(**kwargs).fit(x, y)
    assert not np.allclose(weighted.predict(x), unweighted.predict(x), rtol=1e-4)
    clf = MLPClassifier(**kwargs).fit(x, y > 0, sample_weight=w)
    assert clf.score(x, y > 0, sample_weight=w) == accuracy_score(y > 0, clf.predict(x), sample_weight=w)
    with pytest.raises(ValueError, match="sample_weight"):
        MLPRegressor(**kwargs).fit(x, y, sample_weight=-np.ones(20))


def test_unweighted_evaluation_never_calls_the_weighted_loss():
    """weights=None drops the weighted loss's call before typing: an evaluation through a bundle
    whose weighted function raises (a user loss's, which takes no weights) runs unweighted and
    raises weighted; through the built-in bundle, weights of one give the unweighted value."""
    import numba
    from fastnn.kernels import inference as I
    from fastnn.kernels import network as N
    from fastnn.kernels.table import workspace_layout
    from fastnn.user_losses import UserLoss, loss_kernels
    m = model("softmax", "categorical_crossentropy")
    m.get_weights()  # builds the network
    spec = m._spec
    act_off, n_acts, deltas_shape, n_targets, n_stats = workspace_layout(spec.table, 4)
    work = N.Workspace(np.zeros(n_acts), act_off, np.zeros(deltas_shape), np.zeros(n_targets), np.zeros(n_stats))
    net = N.Network(m._backend.params, spec.table, spec.alphas, m._backend.rng)
    x, labels, w = data()
    y = np.eye(N_OUT)[labels]
    fresh = numba.njit(cache=False)(I.evaluate_batches.py_func)
    args = (net, x, y, 4, work, None, None, None, None, None, None)  # ..., user, graph
    builtin = loss_kernels(K.CROSS_ENTROPY, np.float64)
    plain_value = fresh(*args, builtin, None)
    assert fresh(*args, builtin, np.ones(ROWS))[0] == pytest.approx(plain_value[0], rel=1e-13)
    unweighable = UserLoss(builtin.value, builtin.gradient, user_loss_kernels_weighted())
    assert fresh(*args, unweighable, None) == plain_value
    with pytest.raises(ValueError, match="takes no sample weights"):
        fresh(*args, unweighable, np.ones(ROWS))


def user_loss_kernels_weighted():
    """A user loss's ``weighted`` wrapper (float64), which raises."""
    from fastnn.user_losses import user_loss_kernels

    def value(y_true, y_pred):
        return 0.0

    def gradient(y_true, y_pred):
        return y_pred * 0.0
    return user_loss_kernels(value, gradient, np.dtype(np.float64), "probe").weighted


@pytest.mark.slow  # a weighted graph step: compiled code no other test shares
def test_a_functional_model_weights_as_the_stack():
    from fastnn import Input, Model
    x, labels, w = data()
    a = Input((N_IN,))
    out = Dense(units=N_OUT, activation="softmax")(Dense(units=4, activation="tanh")(a))
    g = Model(inputs=a, outputs=out, seed=0, dtype="float64").compile("categorical_crossentropy", SGD(0.5))
    m = model("softmax", "categorical_crossentropy")
    g.set_weights(m.get_weights())
    assert g.train_on_batch(x, labels, sample_weight=w) == pytest.approx(
        m.train_on_batch(x, labels, sample_weight=w), rel=1e-13)
    for p, q in zip(g.get_weights(), m.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-15)
