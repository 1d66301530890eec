"""Dropout on ``device="cuda"`` against its CPU twin: the device functions are the CPU kernels'
own source compiled for CUDA, so the masks must be equal bit for bit, and a model with Dropout
layers must train on the GPU as on the CPU. Without a GPU this runs in Numba's CUDA simulator
(tests/conftest.py), so sizes stay tiny."""
import numpy as np
import pytest

from fastnn import Adam, Dense, Dropout, Input, MLP
from helpers import cuda_or_skip

cuda = cuda_or_skip()

from fastnn.cuda import C_STEP, N_CONTROL  # noqa: E402
from fastnn.cuda import dropout as CDR  # noqa: E402
from fastnn.kernels import dropout as DR  # noqa: E402

# The simulator runs the uint64 hash in NumPy scalars, which warn when a product wraps (as intended).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
TOL = 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("key, step, layer, rate", [(5, 0, 1, 0.5), (2**62 + 3, 99, 3, 0.2)])
def test_forward_and_backward_masks_equal_the_cpu_bit_for_bit(key, step, layer, rate, dtype):
    x = np.random.default_rng(0).uniform(0.5, 2.0, 37).astype(dtype)
    control = np.zeros(N_CONTROL, dtype=np.int64)
    control[C_STEP] = step
    out = cuda.to_device(np.full_like(x, np.nan))
    CDR.dropout_forward(out, cuda.to_device(x), x.size, key, layer, rate, cuda.to_device(control))
    expected = np.empty_like(x)
    DR.dropout_forward(expected, x, np.uint64(DR.dropout_stream(key, step, layer)), rate)
    np.testing.assert_array_equal(out.copy_to_host(), expected)
    dx = cuda.to_device(x.copy())
    CDR.dropout_backward(dx, dx, x.size, key, layer, rate, cuda.to_device(control))
    np.testing.assert_array_equal(dx.copy_to_host(), expected)  # the same mask and scale on x


def model(device, first=False):
    layers = ([Input(6), Dropout(0.25)] if first else []) + [
        Dense(6, 7, activation="tanh"), Dropout(0.4), Dense(7, 5, activation="relu"), Dropout(0.3),
        Dense(5, 3, activation="softmax")]
    m = MLP(layers, seed=11, device=device)
    m.compile(loss="categorical_crossentropy", optimizer=Adam(0.05), metrics=["accuracy"])
    return m


# A Dropout on the input runs with -m slow: the simulator takes seconds per model.
@pytest.mark.parametrize("first", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_training_with_dropout_matches_the_cpu(first):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((13, 6)).astype(np.float32), rng.integers(0, 3, 13)
    cpu, gpu = model("cpu", first), model("cuda", first)
    gpu.set_weights(cpu.get_weights())
    h_cpu = cpu.fit(x, y, epochs=2, batch_size=4, verbose=0, validation_data=(x, y))
    h_gpu = gpu.fit(x, y, epochs=2, batch_size=4, verbose=0, validation_data=(x, y))
    for k in h_cpu.history:
        np.testing.assert_allclose(h_gpu.history[k], h_cpu.history[k], rtol=0, atol=TOL, err_msg=k)
    for a, b in zip(gpu.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), rtol=0, atol=TOL)
    np.testing.assert_allclose(gpu(x, training=True), cpu(x, training=True), rtol=0, atol=TOL)


def test_a_last_dropout_layer_is_the_identity_at_inference():
    x = np.random.default_rng(5).standard_normal((5, 6)).astype(np.float32)
    m = MLP([Dense(6, 3, activation="sigmoid"), Dropout(0.5)], seed=2, device="cuda")
    m.compile(loss="mse")
    plain = MLP([Dense(6, 3, activation="sigmoid")], device="cuda")
    plain.set_weights(m.get_weights())
    np.testing.assert_allclose(m.predict(x), plain.predict(x), rtol=0, atol=1e-7)
    y = np.zeros((5, 3), np.float32)
    plain.compile(loss="mse")
    assert m.evaluate(x, y) == pytest.approx(plain.evaluate(x, y), abs=1e-7)
