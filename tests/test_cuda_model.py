"""End-to-end tests of ``device="cuda"``: the same model trained on the CPU and on the GPU agrees.

The reference is the CPU path itself (``device="cpu"``, tested against NumPy and PyTorch by
the other test files): fit, train_on_batch, evaluate, predict, save/load, get/set_weights
and moving a model between devices must give the CPU's numbers within float32 rounding.
Without a GPU the kernels run in Numba's CUDA simulator (tests/conftest.py), one Python
thread per GPU thread, so the networks and data sets here are tiny.
"""
import sys
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Activation, Adam, Dense, MLP, RMSprop
from helpers import cuda_or_skip

cuda = cuda_or_skip()

# The bar for a few epochs of float32 training on two devices.
TOL = 1e-4


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((11, 6)).astype(np.float32)
    return x, rng.integers(0, 3, 11)


def classifier(device, dtype="float32"):
    model = MLP([Dense(6, 5, activation="relu"), Dense(5, 3, activation="softmax")], seed=1, dtype=dtype,
                device=device)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(0.05), metrics=["accuracy"])
    return model


def assert_weights_close(a, b, tol=TOL):
    assert len(a.get_weights()) == len(b.get_weights())
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=0, atol=tol)


def assert_history_close(ha, hb, tol=TOL):
    assert ha.history.keys() == hb.history.keys()
    for key in ha.history:
        np.testing.assert_allclose(ha.history[key], hb.history[key], rtol=0, atol=tol, err_msg=key)


def test_fit_predict_evaluate_match_cpu(data):
    """Batches of 4 over 11 rows (the last one ragged), shuffled, with validation, 3 epochs."""
    x, y = data
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    hist = {d: m.fit(x, y, epochs=3, batch_size=4, validation_data=(x[:5], y[:5]), verbose=0)
            for d, m in models.items()}
    assert hist["cpu"].history["loss"][-1] < hist["cpu"].history["loss"][0]  # it learned something
    assert_history_close(hist["cpu"], hist["cuda"])
    assert_weights_close(models["cpu"], models["cuda"])
    np.testing.assert_allclose(models["cuda"].predict(x), models["cpu"].predict(x), atol=TOL)
    np.testing.assert_allclose(models["cuda"].predict(x, batch_size=3), models["cpu"].predict(x), atol=TOL)
    np.testing.assert_allclose(models["cuda"].evaluate(x, y, batch_size=4), models["cpu"].evaluate(x, y, batch_size=4),
                               atol=TOL)
    assert models["cuda"]._backend.state()["opt_steps"].tolist() == models["cpu"]._backend.state()["opt_steps"].tolist() == [9]


def test_train_on_batch_matches_cpu(data):
    x, y = data
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    for _ in range(2):
        results = {d: m.train_on_batch(x[:7], y[:7]) for d, m in models.items()}
        np.testing.assert_allclose(results["cuda"], results["cpu"], atol=TOL)
    assert_weights_close(models["cpu"], models["cuda"])


@pytest.mark.parametrize("case", ["activation_layers_mse_sgd", "sigmoid_bce_rmsprop"])
def test_other_layers_losses_and_optimizers_match_cpu(case):
    """Activation layers (their own backward launches), a softmax that is not fused with the
    loss, a single sigmoid output with binary accuracy, SGD with Nesterov momentum, RMSprop."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    if case == "activation_layers_mse_sgd":
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 9)]
    else:
        y = (x[:, :1] > 0).astype(np.float32)
    models = {}
    for device in ("cpu", "cuda"):
        if case == "activation_layers_mse_sgd":
            model = MLP([Dense(5, 4, activation="tanh"), Activation("leaky_relu"), Dense(4, 3, activation=None),
                         Activation("softmax")], seed=2, device=device)
            model.compile(loss="mse", optimizer=SGD(0.5, momentum=0.9, nesterov=True), metrics=["accuracy"])
        else:
            model = MLP([Dense(5, 3, activation="sigmoid"), Dense(3, 1, activation="sigmoid")], seed=2, device=device)
            model.compile(loss="binary_crossentropy", optimizer=RMSprop(0.01), metrics=["accuracy"])
        models[device] = (model, model.fit(x, y, epochs=2, batch_size=4, verbose=0))
    assert_history_close(models["cpu"][1], models["cuda"][1])
    assert_weights_close(models["cpu"][0], models["cuda"][0])


def test_float64_model_matches_cpu_closely(data):
    x, y = data
    models = {d: classifier(d, dtype="float64") for d in ("cpu", "cuda")}
    hist = {d: m.fit(x, y, epochs=1, batch_size=4, verbose=0) for d, m in models.items()}
    assert models["cuda"].get_weights()[0].dtype == np.float64
    assert_history_close(hist["cpu"], hist["cuda"], tol=1e-10)
    assert_weights_close(models["cpu"], models["cuda"], tol=1e-10)


def test_save_load_and_moving_between_devices_keep_training_state(data, tmp_path):
    """Weights and optimizer state survive save/load and to(); training then continues alike."""
    x, y = data
    model = classifier("cuda")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = {d: fastnn.load_model(tmp_path / "m.npz", device=d) for d in ("cpu", "cuda")}
    for other in loaded.values():
        assert_weights_close(model, other, tol=0)
    moved = classifier("cpu")
    moved.set_weights(model.get_weights())
    assert_weights_close(model, moved, tol=0)
    model.to("cpu")
    assert model.device == "cpu"
    model.to("cuda")
    for m in [model, *loaded.values()]:
        m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    assert_weights_close(loaded["cpu"], loaded["cuda"])
    assert_weights_close(loaded["cpu"], model)


def test_divergence_stops_at_the_same_batch_as_cpu():
    """A loss that is not finite stops training before that batch's update, on both devices."""
    x = np.full((8, 2), 1e18, np.float32)
    y = np.ones((8, 1), np.float32)
    models, errors = {}, {}
    for device in ("cpu", "cuda"):
        models[device] = MLP([Dense(2, 1, activation=None)], seed=0, device=device)
        models[device].compile(loss="mse", optimizer=SGD(1e10))
        # The simulator runs the kernels as NumPy scalars, which warn of the overflow.
        with pytest.raises(FloatingPointError) as e, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            models[device].fit(x, y, epochs=1, batch_size=2, verbose=0, shuffle=False)
        errors[device] = str(e.value)
    assert errors["cuda"] == errors["cpu"]
    assert "batch 2" in errors["cpu"]
    assert models["cuda"]._backend.state()["opt_steps"].tolist() == models["cpu"]._backend.state()["opt_steps"].tolist() == [1]
    for wa, wb in zip(models["cpu"].get_weights(), models["cuda"].get_weights()):
        np.testing.assert_allclose(wb, wa, rtol=1e-5)


def test_a_data_set_too_large_for_the_device_is_streamed(data):
    x, y = data
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    models["cuda"].get_weights()  # builds the backend
    models["cuda"]._backend.dataset_budget = 2 * 4 * (6 + 3) * 4  # two batches of rows at a time
    hist = {d: m.fit(x, y, epochs=2, batch_size=4, verbose=0) for d, m in models.items()}
    assert not models["cuda"]._backend.dataset(x, np.eye(3, dtype=np.float32)[y]).resident
    assert_history_close(hist["cpu"], hist["cuda"])
    assert_weights_close(models["cpu"], models["cuda"])


@pytest.mark.parametrize("streamed", [False, True])
def test_a_first_layer_over_the_nonzeros_matches_cpu(data, streamed, monkeypatch):
    """The CUDA step with its first layer over the batch's nonzero inputs (chosen: ``nonzero_first``)
    trains as the CPU does, resident or streamed; the CPU path it is compared with is GEMM's or its
    own nonzero product, as its estimate picks."""
    from fastnn.cuda import sparse as CS
    x, y = data
    x = np.where(np.random.default_rng(5).random(x.shape) < 0.7, 0, x).astype(np.float32)
    x[2] = 0
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    models["cuda"].get_weights()  # builds the backend
    backend = models["cuda"]._backend
    backend.nonzero_first = True
    if streamed:
        backend.dataset_budget = 2 * 4 * (6 + 3) * 4
    products = []
    kernel = CS.nonzero_rows_product
    monkeypatch.setattr(CS, "nonzero_rows_product", lambda *a, **k: products.append(k.get("transposed", False))
                        or kernel(*a, **k))
    hist = {d: m.fit(x, y, epochs=3, batch_size=4, verbose=0) for d, m in models.items()}
    assert sorted(set(products)) == [False, True]  # the forward and the weight gradient
    assert hist["cpu"].history["loss"][-1] < hist["cpu"].history["loss"][0]
    assert_history_close(hist["cpu"], hist["cuda"])
    assert_weights_close(models["cpu"], models["cuda"])


def test_the_first_layer_is_timed_once_per_data_set_and_batch_size_and_only_on_many_zeros(data, monkeypatch):
    x, y = data
    model = classifier("cuda")
    model.get_weights()
    backend = model._backend
    timed = []
    monkeypatch.setattr(type(backend), "_nonzero_faster", lambda self, d, b: timed.append(b) or True)
    y1 = np.eye(3, dtype=np.float32)[y]
    dense = backend.dataset(x, y1)
    assert backend._nonzero_first(dense, 4) is False and timed == []  # no zeros: GEMM, untimed
    sparse = backend.dataset(np.where(x > 0.5, x, 0), y1)
    assert [backend._nonzero_first(sparse, b) for b in (4, 4, 3)] == [True, True, True] and timed == [4, 3]
    backend.nonzero_first = False
    assert backend._nonzero_first(sparse, 4) is False


def test_timing_the_first_layer_in_the_simulator_keeps_the_gemm(data):
    """The simulator's events measure nothing: the timing runs both paths and keeps the GEMM's."""
    from numba import config
    if not config.ENABLE_CUDASIM:
        pytest.skip("on a GPU the choice is the device's timing")
    x, y = data
    model = classifier("cuda")
    model.get_weights()
    backend = model._backend
    assert backend._nonzero_faster(backend.dataset(np.where(x > 0.5, x, 0), np.eye(3, dtype=np.float32)[y]), 4) \
        is False


def test_a_failed_graph_capture_falls_back_to_plain_launches(data):
    class NoCapture:  # a driver whose stream capture always fails
        class CUstreamCaptureMode:
            CU_STREAM_CAPTURE_MODE_GLOBAL = 0

        @staticmethod
        def CUstream(handle):
            return handle

        @staticmethod
        def cuStreamBeginCapture(stream, mode):
            return (1,)

    x, y = data
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    models["cuda"].get_weights()
    runner = models["cuda"]._backend.runner
    runner.driver = NoCapture()
    with pytest.warns(RuntimeWarning, match="graph capture failed"):
        hist = {d: m.fit(x, y, epochs=1, batch_size=2, verbose=0) for d, m in models.items()}
    assert not runner.uses_graphs
    assert_history_close(hist["cpu"], hist["cuda"])
    assert_weights_close(models["cpu"], models["cuda"])


def test_missing_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
        MLP([Dense(2, 1)], device="cuda")
    model = MLP([Dense(2, 1)])
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
        model.to("cuda")
    assert model.device == "cpu"


def test_missing_numba_cuda_is_a_clear_error(monkeypatch):
    import numba
    monkeypatch.delattr(numba, "cuda")
    monkeypatch.setitem(sys.modules, "numba.cuda", None)
    with pytest.raises(RuntimeError, match=r"numba-cuda"):
        MLP([Dense(2, 1)], device="cuda")


def test_numbas_own_cuda_target_on_a_gpu_is_a_clear_error(monkeypatch):
    """numba's built-in (deprecated) CUDA target cannot compile the kernels: say so up front."""
    import numba
    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(cuda, "implementation", "Built-in", raising=False)
    with pytest.raises(RuntimeError, match="numba-cuda"):
        MLP([Dense(2, 1)], device="cuda")


def test_no_warning_on_a_plain_fit(data):
    """numba-cuda warns about grids under 128 blocks (on a GPU): small by design here."""
    x, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        classifier("cuda").fit(x, y, epochs=1, batch_size=11, verbose=0)


# sum and mean differ from concat in the combiner's few lines; the simulator's seconds go to -m slow.
@pytest.mark.parametrize("combiner", ["concat", pytest.param("sum", marks=pytest.mark.slow),
                                      pytest.param("mean", marks=pytest.mark.slow)])
def test_embedding_and_masking_match_cpu(combiner):
    """Embedding (with padding) -> Masking -> Dense: the CUDA twins (scatter-add with atomics) agree."""
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 6, (9, 3))
    ids[0] = 0
    y = rng.integers(0, 2, 9)
    models = {}
    for device in ("cpu", "cuda"):
        model = MLP([fastnn.Embedding(6, 2, input_length=3, mask_zero=True, combiner=combiner),
                     fastnn.Masking(0.0), Dense(None, 2, activation="softmax")], seed=2, device=device)
        model.compile("cross_entropy", Adam(0.05))
        model.fit(ids, y, epochs=2, batch_size=4, verbose=0)
        models[device] = model
    assert_weights_close(models["cpu"], models["cuda"])
    np.testing.assert_allclose(models["cpu"].predict(ids), models["cuda"].predict(ids), atol=TOL)
    assert np.all(models["cuda"].get_weights()[0][0] == 0)


# Dropout's hash wraps around in uint64 by design; the simulator's NumPy scalars warn of it.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.slow  # its CPU twin compiles a graph step (Embedding, Dropout, merges) no default test shares
def test_functional_model_matches_cpu():
    """Two inputs, fan-out, Concatenate, Multiply, Add, Dropout and an Embedding input on CUDA."""
    from fastnn import Add, Concatenate, Input, Model, Multiply
    rng = np.random.default_rng(6)
    ids, xb = rng.integers(0, 5, (9, 2)), rng.standard_normal((9, 3)).astype(np.float32)
    y = rng.integers(0, 2, 9)
    models = {}
    for device in ("cpu", "cuda"):
        a, b = Input((2,)), Input((3,))
        ha = fastnn.Embedding(5, 2, input_length=2, combiner="sum")(a)
        hb = Dense(units=2, activation="tanh")(b)
        h = Concatenate()([ha, hb, Multiply()([ha, hb])])
        h = fastnn.Dropout(0.3)(Dense(units=4, activation="relu")(h))
        out = Dense(units=2, activation="softmax")(Add()([h, Dense(units=4, activation="sigmoid")(hb)]))
        model = Model([a, b], out, seed=3, device=device)
        model.compile("cross_entropy", Adam(0.05))
        models[device] = (model, model.fit([ids, xb], y, epochs=2, batch_size=4, verbose=0))
    assert_weights_close(models["cpu"][0], models["cuda"][0])
    assert_history_close(models["cpu"][1], models["cuda"][1])
    np.testing.assert_allclose(models["cpu"][0].predict([ids, xb]), models["cuda"][0].predict([ids, xb]), atol=TOL)
    assert abs(models["cpu"][0].evaluate([ids, xb], y) - models["cuda"][0].evaluate([ids, xb], y)) < TOL


# Dropout's hash wraps around in uint64 by design; the simulator's NumPy scalars warn of it.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_compile_train_runs_a_step_on_a_copy_of_the_state_and_changes_nothing(data, monkeypatch):
    """numba-cuda compiles at a kernel's first launch: compile_train runs one throwaway step (once
    per kind of step), and fit with verbose=1, which calls it, trains as fit with verbose=0."""
    x, y = data

    def model():
        m = MLP([Dense(6, 5, activation="relu"), fastnn.Dropout(0.3), Dense(5, 3, activation="softmax")], seed=1,
                device="cuda")
        return m.compile(loss="categorical_crossentropy", optimizer=Adam(0.05), metrics=["accuracy", "auc"])

    m = model()
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    backend = m._backend
    before = dict(backend.state(), grads=backend.host("grads"))
    steps = []
    train = backend.train
    monkeypatch.setattr(backend, "train", lambda *a, **k: steps.append(a[3:5]) or train(*a, **k))
    spec, counts = m._metric_counters()
    host = (np.zeros(3), np.zeros(3, np.int64), counts)
    args = (backend.dataset(x, np.eye(3, dtype=np.float32)[y]), np.arange(11, dtype=np.int64), 4, 0, 1,
            m.loss.code, m._opt_hyper(), host[0], host[1], spec, host[2])
    assert backend.compile_train(*args) is None  # the simulator compiles nothing: no note
    assert steps == [(0, 1)]
    after = dict(backend.state(), grads=backend.host("grads"))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not any(a.any() for a in host)  # the caller's arrays are left alone
    backend.compile_train(*args)
    assert steps == [(0, 1)]  # once per kind of step
    monkeypatch.undo()

    quiet, shown = model(), model()
    h_quiet = quiet.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0).history
    h_shown = shown.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=1).history
    assert shown._backend._warmed  # verbose=1 ran the throwaway step
    for name in h_quiet:
        np.testing.assert_allclose(h_shown[name], h_quiet[name], rtol=1e-6, err_msg=name)
    for a, b in zip(quiet.get_weights(), shown.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert np.array_equal(quiet._backend.host("rng"), shown._backend.host("rng"))
    assert np.array_equal(quiet._backend.host("opt_steps"), shown._backend.host("opt_steps"))


# Dropout's hash wraps around in uint64 by design; the simulator's NumPy scalars warn of it.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("seed", [pytest.param(2**63 - 1, marks=pytest.mark.slow), 2**64 - 1])
def test_a_seed_of_64_bits_draws_the_cpus_dropout_masks(data, seed):
    """A seed from 2**63 on is Dropout's key as a negative int64 (its 64 bits): the GPU draws
    the same masks from it as the CPU."""
    x, y = data
    models = {}
    for device in ("cpu", "cuda"):
        model = MLP([Dense(6, 5, activation="relu"), fastnn.Dropout(0.5), Dense(5, 3, activation="softmax")], seed=seed,
                    device=device)
        models[device] = model.compile(loss="categorical_crossentropy", optimizer=Adam(0.05))
        model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert_weights_close(models["cpu"], models["cuda"])


@pytest.mark.parametrize("streamed", [False, True])
def test_read_only_arrays_train_and_predict_as_writable_ones(data, streamed):
    """fit takes a read-only array (a memmap opened 'r') as it is: uploaded whole, or streamed."""
    x, y = data
    x_ro, y_ro = x.copy(), np.eye(3, dtype=np.float32)[y]
    x_ro.setflags(write=False)
    y_ro.setflags(write=False)
    models = {d: classifier(d) for d in ("cpu", "cuda")}
    if streamed:
        models["cuda"].get_weights()
        models["cuda"]._backend.dataset_budget = 2 * 4 * (6 + 3) * 4
    hist = {d: m.fit(x_ro, y_ro, epochs=2, batch_size=4, validation_split=0.3, verbose=0) for d, m in models.items()}
    assert_history_close(hist["cpu"], hist["cuda"])
    assert_weights_close(models["cpu"], models["cuda"])
    np.testing.assert_allclose(models["cuda"].predict(x_ro), models["cpu"].predict(x), rtol=0, atol=TOL)


def test_a_functional_model_moves_to_cuda_and_back():
    """``to`` takes the graph's sources to the CUDA backend and back: predictions match the CPU's."""
    from fastnn import Concatenate, Input, Model
    rng = np.random.default_rng(2)
    xa, xb = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 2)).astype(np.float32)
    a, b = Input((3,)), Input((2,))
    h = Concatenate()([Dense(units=2, activation="tanh")(a), Dense(units=2, activation="relu")(b)])
    model = Model([a, b], Dense(units=2, activation="softmax")(h), seed=0)
    expected = model.predict([xa, xb])
    model.to("cuda")
    np.testing.assert_allclose(model.predict([xa, xb]), expected, atol=TOL)
    model.to("cpu")
    np.testing.assert_array_equal(model.predict([xa, xb]), expected)


@pytest.mark.slow  # a graph step with a shared Embedding that no default test compiles (a shared Dense: below)
def test_shared_layers_match_cpu():
    """A layer on two inputs, a layer twice in a chain and a shared Embedding on CUDA: the later
    calls' weight gradients land in their own regions and are added into the layer's."""
    from fastnn import Add, Concatenate, Input, Model
    rng = np.random.default_rng(7)
    xa, xb = rng.standard_normal((9, 3)).astype(np.float32), rng.standard_normal((9, 3)).astype(np.float32)
    ids = rng.integers(0, 5, (9, 2))
    y = rng.integers(0, 2, 9)
    models = {}
    for device in ("cpu", "cuda"):
        a, b, i = Input((3,)), Input((3,)), Input((2,))
        enc, block = Dense(units=3, activation="tanh"), Dense(units=3, activation="sigmoid")
        emb = fastnn.Embedding(5, 2, input_length=2, combiner="sum")
        h = block(block(Add()([enc(a), enc(b)])))
        out = Dense(units=2, activation="softmax")(Concatenate()([h, emb(i), Add()([emb(i), emb(i)])]))
        model = Model([a, b, i], out, seed=3, device=device)
        model.compile("cross_entropy", Adam(0.05))
        models[device] = (model, model.fit([xa, xb, ids], y, epochs=2, batch_size=4, verbose=0))
    assert_weights_close(models["cpu"][0], models["cuda"][0])
    assert_history_close(models["cpu"][1], models["cuda"][1])
    np.testing.assert_allclose(models["cpu"][0].predict([xa, xb, ids]), models["cuda"][0].predict([xa, xb, ids]),
                               atol=TOL)



# Each case compiles a several-output step for the simulator and the CPU (35 s cold, the default
# run's longest test): -m slow's, so that the default run stays under 5 minutes on two cores.
@pytest.mark.slow
@pytest.mark.parametrize("weighted", [False, True])
def test_several_outputs_match_cpu(weighted):
    """Two outputs (one read by the other's layer) with their losses weighted, a shared layer: the
    loss of the outputs side by side, each output's block reduced in turn, and its logs; each
    output's metrics counted on its columns; one sample_weight array weighing every output."""
    from fastnn import Concatenate, Input, Model
    rng = np.random.default_rng(8)
    xa, xb = rng.standard_normal((9, 3)).astype(np.float32), rng.standard_normal((9, 3)).astype(np.float32)
    ya, yb = rng.integers(0, 3, 9), rng.standard_normal((9, 2)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, 9).astype(np.float32) if weighted else None
    models = {}
    for device in ("cpu", "cuda"):
        a, b = Input((3,)), Input((3,))
        enc = Dense(units=4, activation="tanh")
        h = Concatenate()([enc(a), enc(b)])
        out_a = Dense(units=3, activation="softmax")(h)
        out_b = Dense(units=2)(Concatenate()([h, out_a]))
        model = Model([a, b], [out_a, out_b], seed=3, device=device)
        model.compile({"dense_4": "cross_entropy", "dense_6": "mae"}, Adam(0.05), loss_weights=[1.0, 0.5],
                      metrics={"dense_4": ["accuracy", "auc"], "dense_6": "r2"})
        models[device] = (model, model.fit([xa, xb], [ya, yb], epochs=2, batch_size=4, verbose=0,
                                           validation_data=([xa, xb], [ya, yb]), sample_weight=w))
    cpu, cuda = models["cpu"], models["cuda"]
    names = ["loss", "dense_4_loss", "dense_6_loss", "dense_4_accuracy", "dense_4_auc", "dense_6_r2"]
    assert list(cuda[1].history) == names + ["val_" + n for n in names]
    assert_weights_close(cpu[0], cuda[0])
    assert_history_close(cpu[1], cuda[1])
    for mine, theirs in zip(cpu[0].predict([xa, xb]), cuda[0].predict([xa, xb])):
        np.testing.assert_allclose(mine, theirs, atol=TOL)
    np.testing.assert_allclose(cpu[0].evaluate([xa, xb], [ya, yb]), cuda[0].evaluate([xa, xb], [ya, yb]), atol=TOL)
