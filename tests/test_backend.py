"""The network's specification and the backends' interface: a spec is built once per build and
handed whole to a backend, which owns the training state, advances its counters, and gives the
weight penalty and the running statistics itself.

References: the penalty in plain NumPy over ``get_weights`` (``naive_penalty``); BatchNorm's
running statistics as ``get_weights`` returns them; the CPU backend's counters for the CUDA
backend's (in the simulator without a GPU, tests/conftest.py).
"""
import ast
import inspect
import pathlib

import numpy as np
import pytest

import fastnn
from fastnn import SGD, Adam, BatchNormalization, Dense, Dropout, MLP
from fastnn.backend import Backend
from fastnn.cpu_backend import CPUBackend
from fastnn import spec as spec_module
from helpers import UserDense

PACKAGE = pathlib.Path(fastnn.__file__).parent


def naive_penalty(model):
    """Keras' penalty, l1 * sum|w| + l2 * sum w², over each regularized weight of ``get_weights``, in float64."""
    total, weights = 0.0, iter(model.get_weights())
    for layer in model.layers:
        for name in layer.weight_names():
            w = np.asarray(next(weights), dtype=np.float64)
            reg = getattr(layer, {"kernel": "kernel_regularizer", "bias": "bias_regularizer",
                                  "embeddings": "embeddings_regularizer"}.get(name, ""), None)
            if reg is not None:
                l1, l2 = reg.factors()
                total += l1 * np.abs(w).sum() + l2 * np.square(w).sum()
    return total


def regularized(device="cpu", dtype="float32", dropout=()):
    model = MLP([Dense(6, 5, activation="relu", kernel_regularizer=fastnn.L1L2(0.01, 0.02),
                       bias_regularizer=fastnn.L2(0.5)),
                 BatchNormalization(), *dropout,
                 Dense(5, 3, activation="softmax", kernel_regularizer=fastnn.L1(0.03))],
                seed=2, dtype=dtype, device=device)
    model.compile(loss="categorical_crossentropy", optimizer=Adam(0.05))
    return model


def data(rows=11):
    rng = np.random.default_rng(4)
    return rng.standard_normal((rows, 6)).astype(np.float32), rng.integers(0, 3, rows)


# ---- the spec -------------------------------------------------------------------------------

def test_the_spec_is_built_once_per_build_and_nothing_is_written_into_the_layers(monkeypatch):
    calls = []
    build = spec_module.build_spec
    monkeypatch.setattr("fastnn.network.build_spec", lambda *a, **k: calls.append(1) or build(*a, **k))
    model = regularized()
    x, y = data()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.evaluate(x, y)
    model.compile(loss="categorical_crossentropy", optimizer=SGD(0.1))  # new optimizer slices, same network
    assert len(calls) == 1
    assert model._backend.spec is model._spec
    for layer in model.layers:
        assert not {"_offset", "_user_index"} & set(vars(layer))
    # Each layer's offset is where its weights start in the flat buffer.
    flat = np.concatenate([w.ravel() for w in model.get_weights()])
    for layer in model.layers:
        lo = model._spec.offset(layer)
        np.testing.assert_array_equal(flat[lo: lo + layer.count_params()],
                                      np.concatenate([w.ravel() for w in layer.get_weights()]))
    with pytest.raises(ValueError, match="not a layer of this network"):
        model._spec.offset(Dense(2, 2))


def test_compile_gives_the_same_network_new_slices_and_the_backend_resets_their_state():
    model = regularized()
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    table = model._spec.table
    model.compile(loss="categorical_crossentropy", optimizer=fastnn.Adagrad(0.1, initial_accumulator_value=0.25))
    assert model._spec.table is table and model._backend.spec is model._spec
    state = model._backend.state()
    assert state["opt_steps"].tolist() == [0] * model._spec.slices.meta.shape[0]
    for lo, hi, _ in model._spec.slices.meta:
        np.testing.assert_array_equal(state["state1"][lo:hi], 0.25)
    np.testing.assert_array_equal(state["state2"], 0.0)


def test_a_user_layers_row_holds_its_index_among_the_user_layers():
    from fastnn.kernels.network import B_OFF, KIND, USER_LAYER, W_OFF
    model = MLP([UserDense(4, input_dim=3), Dense(4, 4), UserDense(2)], seed=0)
    model.predict(np.zeros((1, 3), np.float32))
    rows = model._spec.table[model._spec.table[:, KIND] == USER_LAYER]
    assert rows[:, B_OFF].tolist() == [0, 1]
    assert rows[:, W_OFF].tolist() == [model._spec.offset(model.layers[0]), model._spec.offset(model.layers[2])]
    assert len(model._spec.user.forward) == 2


# ---- the interface --------------------------------------------------------------------------

def test_every_backend_implements_the_whole_interface():
    from fastnn.cuda.backend import CUDABackend
    for cls in (CPUBackend, CUDABackend):
        assert issubclass(cls, Backend)
        assert not cls.__abstractmethods__, f"{cls.__name__} lacks {sorted(cls.__abstractmethods__)}"
    assert {"load", "host", "write", "penalty", "dataset", "reserve", "train", "compile_train", "will_compile",
            "predict", "evaluate"} <= Backend.__abstractmethods__


def _imports(path):
    """The fastnn modules ``path`` imports, anywhere in it (a deferred import is an import too)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fastnn")}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if not name.startswith("fastnn"):
                continue
            for alias in node.names:  # ``from . import network`` imports the module fastnn.x.network
                sub = f"{name}.{alias.name}"
                found.add(sub if (PACKAGE.parent / (sub.replace(".", "/") + ".py")).exists() else name)
    return found


def test_no_import_circle_runs_through_the_backends_or_the_spec():
    graph = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): _imports(p)
             for p in PACKAGE.rglob("*.py")}
    watched = ["fastnn.backend", "fastnn.cpu_backend", "fastnn.cuda.backend", "fastnn.devices", "fastnn.spec"]
    for start in watched:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} imports itself back"
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))
    assert "fastnn.cuda.backend" not in _imports(PACKAGE / "backend.py")
    assert "fastnn.backend" in _imports(PACKAGE / "cuda" / "backend.py")


# ---- what the backend gives -----------------------------------------------------------------

def test_the_backend_gives_the_numpy_penalty_and_evaluate_adds_it():
    model = regularized(dtype="float64")
    x, y = data()
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    assert model._backend.penalty() == pytest.approx(naive_penalty(model), rel=1e-12)
    assert naive_penalty(model) > 0
    total, _ = model._backend.evaluate(x.astype(np.float64), np.eye(3)[y], model.loss.code, 32)
    assert model.evaluate(x, y) == pytest.approx(total / x.shape[0] + naive_penalty(model), rel=1e-12)
    plain = MLP([Dense(6, 3, activation="softmax")], seed=0)
    plain.predict(x)
    assert plain._backend.penalty() == 0.0


def test_the_backend_gives_and_takes_the_running_statistics():
    model = regularized()
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    weights = model.layers[1].get_weights()  # gamma, beta, running mean, running variance
    stats = model._backend.running_statistics()
    np.testing.assert_array_equal(stats, np.concatenate(weights[2:]))
    model._backend.load_running_statistics(stats + 1)
    after = model.layers[1].get_weights()
    np.testing.assert_array_equal(np.concatenate(after[2:]), stats + 1)
    for a, b in zip(after[:2], weights[:2]):
        np.testing.assert_array_equal(a, b)


def test_a_training_mode_call_advances_dropouts_step_once():
    model = MLP([Dense(6, 4), Dropout(0.5), Dense(4, 3, activation="softmax")], seed=5)
    x, _ = data()
    step = model._backend.host("rng")[1] if model._backend is not None else 0
    first = model(x, training=True)
    assert model._backend.host("rng")[1] == step + 1
    second = model(x, training=True)
    assert model._backend.host("rng")[1] == step + 2
    assert not np.array_equal(first, second)  # another step, other masks
    model.predict(x)
    assert model._backend.host("rng")[1] == step + 2


def test_a_backend_copies_only_the_range_asked_for():
    model = regularized()
    model.predict(data()[0])
    whole = model._backend.host("params")
    np.testing.assert_array_equal(model._backend.host("params", 3, 9), whole[3:9])
    assert "lo=0, hi=None" in str(inspect.signature(type(model._backend).host))


# ---- the same on CUDA -----------------------------------------------------------------------

def test_cuda_penalty_running_statistics_and_counters_match_the_cpu():
    from helpers import cuda_or_skip
    cuda_or_skip()
    x, y = data()
    models = {device: regularized(device, dropout=[Dropout(0.25)]) for device in ("cpu", "cuda")}
    bad = np.eye(3, dtype=np.float32)[y]
    bad[6] = np.nan  # the loss of the second batch of 4 is NaN
    diverged = {}
    for model in models.values():
        model.fit(x[:4], y[:4], epochs=2, batch_size=2, verbose=0)
        model(x[:4], training=True)
    cpu, gpu = models["cpu"]._backend, models["cuda"]._backend
    for model in models.values():
        assert model._backend.penalty() == pytest.approx(naive_penalty(model), rel=1e-12)
        np.testing.assert_array_equal(model._backend.running_statistics(),
                                      np.concatenate(model.layers[1].get_weights()[2:]))
    models["cuda"].set_weights(models["cpu"].get_weights())
    assert gpu.penalty() == pytest.approx(cpu.penalty(), rel=1e-12)
    for device, model in models.items():
        # Past fit's checks of the data, which refuse NaN: the backend's own call.
        backend = model._backend
        diverged[device] = backend.train(backend.dataset(x, bad), np.arange(11), 4, 0, 3, model.loss.code,
                                         model._opt_hyper(), np.zeros(3), np.zeros(3, np.int64))
    assert diverged["cuda"] == diverged["cpu"] == 1
    # No update from the diverged batch on: each counter counts the batches trained before it.
    assert gpu.host("opt_steps").tolist() == cpu.host("opt_steps").tolist() == [4 + 1] * len(cpu.opt_meta)
    assert gpu.host("rng").tolist() == cpu.host("rng").tolist()
    assert cpu.host("rng")[1] == 4 + 1 + 1  # four steps, one training-mode call, the good batch
