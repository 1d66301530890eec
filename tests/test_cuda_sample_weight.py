"""sample_weight and class_weight on ``device="cuda"``: the loss kernel weights each row's term and
gradient, the weights gathered with the batch on the device (or staged with a streamed data set's
rows); the CPU's figures and weights within float32 rounding (in the simulator without a GPU)."""
import numpy as np
import pytest

from fastnn import MLP, Adam, Dense
from helpers import cuda_or_skip

cuda = cuda_or_skip()

TOL = 1e-4


@pytest.fixture
def data():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((11, 4)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, 11).astype(np.float32)
    w[2] = 0.0
    return x, rng.integers(0, 3, 11), w


def model(device, activation="softmax", loss="categorical_crossentropy"):
    m = MLP([Dense(4, 5, activation="tanh"), Dense(5, 3, activation=activation)], seed=2, device=device)
    return m.compile(loss=loss, optimizer=Adam(0.05), metrics=["accuracy"])


def assert_close(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=TOL)


# Streamed (data staged from the host) with -m slow: the simulator takes seconds per model.
@pytest.mark.parametrize("streamed", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_weighted_fit_and_evaluate_match_cpu(data, streamed):
    x, y, w = data
    models = {d: model(d) for d in ("cpu", "cuda")}
    if streamed:
        models["cuda"].get_weights()  # builds the backend
        models["cuda"]._backend.dataset_budget = 2 * 4 * (4 + 3) * 4  # two batches of rows at a time
    hist = {d: m.fit(x, y, epochs=2, batch_size=4, verbose=0, sample_weight=w, validation_data=(x[:5], y[:5], w[:5]))
            for d, m in models.items()}
    for key in hist["cpu"].history:
        np.testing.assert_allclose(hist["cuda"].history[key], hist["cpu"].history[key], rtol=0, atol=TOL)
    assert_close(models["cpu"], models["cuda"])
    for m in models.values():
        assert m.evaluate(x, y, sample_weight=w)[0] != pytest.approx(m.evaluate(x, y)[0], rel=1e-3)
    np.testing.assert_allclose(models["cuda"].evaluate(x, y, batch_size=4, sample_weight=w),
                               models["cpu"].evaluate(x, y, batch_size=4, sample_weight=w), rtol=0, atol=TOL)


def test_class_weight_with_sigmoid_and_mse_match_cpu(data):
    x, y, _ = data
    for activation, loss, target in (("sigmoid", "binary_crossentropy", np.eye(3, dtype=np.float32)[y]),
                                     ("linear", "mse", x[:, :3])):
        cpu, gpu = model("cpu", activation, loss), model("cuda", activation, loss)
        for m in (cpu, gpu):
            m.train_on_batch(x, target, class_weight={0: 3.0, 2: 0.5})
        assert_close(cpu, gpu)


def test_sklearn_normalization_is_refused_on_cuda(data):
    x, y, w = data
    m = model("cuda")
    m._weights_over_their_sum = True
    with pytest.raises(ValueError, match="CPU only"):
        m.train_on_batch(x, y, sample_weight=w)
