"""Tests of ``model.save`` and ``fastnn.load_model``: a round trip keeps architecture, weights,
optimizer state (training continued after loading equals training never interrupted) and
shared optimizers; loading never unpickles, and every damaged or tampered file is a ValueError.

References: a twin model trained without interruption, and the saved file's own arrays.
"""
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import (MLP, SGD, Activation, AdaGrad, Adam, Dense, Input, LeakyReLU, RMSProp, load_model)


def blobs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    return (3 * np.eye(3, 4)[labels] + 0.6 * rng.normal(size=(n, 4))).astype(np.float32), labels


def weights_equal(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def build(dtype="float32"):
    """Several layer kinds, a shared optimizer, a per-layer one and compile's default."""
    shared = Adam(0.01, beta_1=0.8)
    model = MLP([Input(4), Dense(output_dim=6, activation=LeakyReLU(0.1), optimizer=shared),
                 Dense(6, 5, activation="tanh", optimizer=SGD(0.05, momentum=0.9, nesterov=True)),
                 Dense(5, 4, activation="relu", optimizer=shared), Dense(4, 3, activation=None),
                 Activation("softmax")], seed=1, dtype=dtype, name="saved")
    return model.compile("cross_entropy", RMSProp(0.01), metrics=["accuracy"])


def small(optimizer):
    model = MLP([Dense(4, 5, activation="tanh"), Dense(5, 3, activation="softmax")], seed=0)
    return model.compile("cross_entropy", optimizer)


def read_archive(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(arrays.pop("config").tobytes().decode()), arrays


def write_archive(path, config, arrays):
    with open(path, "wb") as f:
        np.savez(f, config=np.frombuffer(json.dumps(config).encode(), dtype=np.uint8), **arrays)


@pytest.fixture
def saved(tmp_path):
    """A trained model saved to disk: (path, model)."""
    x, y = blobs()
    model = build()
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    return path, model


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------

def test_round_trip_keeps_architecture_weights_and_predictions(saved):
    path, model = saved
    loaded = load_model(path)
    assert [type(l) for l in loaded.layers] == [type(l) for l in model.layers]
    assert [l.get_config() for l in loaded.layers[:1]] == [model.layers[0].get_config()]
    assert [(l.input_dim, l.output_dim) for l in loaded.layers] == [(l.input_dim, l.output_dim) for l in model.layers]
    assert loaded.name == "saved" and loaded.dtype is np.float32 and loaded.seed == 1
    assert weights_equal(loaded.get_weights(), model.get_weights())
    x, y = blobs(20, seed=5)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)
    assert type(loaded.loss) is type(model.loss) and loaded.metrics == ["accuracy"]
    assert loaded.layers[1].activation.alpha == 0.1
    sgd = loaded.layers[2].optimizer
    assert isinstance(sgd, SGD) and (sgd.learning_rate, sgd.momentum, sgd.nesterov) == (0.05, 0.9, True)
    assert isinstance(loaded.optimizer, RMSProp) and loaded.optimizer.learning_rate == 0.01


def test_shared_optimizers_stay_shared(saved):
    path, _ = saved
    loaded = load_model(path)
    first, third = loaded.layers[1].optimizer, loaded.layers[3].optimizer
    assert first is third and isinstance(first, Adam) and (first.learning_rate, first.beta_1) == (0.01, 0.8)
    assert loaded.layers[4].optimizer is None
    assert [type(o) for o in loaded.optimizers()] == [Adam, SGD, RMSProp]
    first.learning_rate = 0.5
    assert loaded.layers[3].optimizer.learning_rate == 0.5


def test_training_after_loading_continues_as_if_never_saved(saved, tmp_path):
    """Weights, every optimizer's state and step count, and the shuffling stream all survive."""
    path, model = saved
    loaded = load_model(path)
    x, y = blobs()
    h_model = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    h_loaded = loaded.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert h_loaded.history == h_model.history
    assert weights_equal(loaded.get_weights(), model.get_weights())


@pytest.mark.parametrize("make", [lambda: Adam(0.01), lambda: SGD(0.1, momentum=0.5), lambda: RMSProp(0.01),
                                  lambda: AdaGrad(0.1, initial_accumulator_value=0.1)],
                         ids=["adam", "sgd", "rmsprop", "adagrad"])
def test_optimizer_state_survives_for_each_optimizer(make, tmp_path):
    x, y = blobs()
    a, b = small(make()), small(make())
    for model in (a, b):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    a.save(tmp_path / "a.npz")
    a = load_model(tmp_path / "a.npz")
    for model in (a, b):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert weights_equal(a.get_weights(), b.get_weights())
    # A fresh optimizer state would give different weights: the state did matter.
    c = small(make())
    c.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    c.compile("cross_entropy", make())  # a new compile resets the optimizer state
    c.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert not weights_equal(c.get_weights(), b.get_weights())


def test_the_default_adam_survives_with_its_learning_rate(tmp_path):
    x, y = blobs()
    model = MLP([Dense(4, 3, activation="softmax")], seed=0).compile("cross_entropy")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[fastnn.LearningRateScheduler(lambda epoch, lr: 0.05)])
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert [o.learning_rate for o in loaded.optimizers()] == [0.05]
    model.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0)
    assert weights_equal(loaded.get_weights(), model.get_weights())


def test_uncompiled_and_float64_models(tmp_path):
    model = MLP([Dense(3, 2, activation="tanh")], seed=0, dtype="float64")
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    assert loaded.loss is None and loaded.dtype is np.float64
    assert all(w.dtype == np.float64 for w in loaded.get_weights())
    assert weights_equal(loaded.get_weights(), model.get_weights())


def test_save_writes_an_npz_of_json_and_float_arrays(saved):
    path, model = saved
    assert zipfile.is_zipfile(path)
    config, arrays = read_archive(path)  # loads with allow_pickle=False
    assert config["format"] == "fastnn.model" and config["version"] == 1
    assert sorted(arrays) == ["opt_steps", "params", "rng", "state1", "state2"]
    assert arrays["rng"].dtype == np.int64 and arrays["rng"].shape == (2,)
    assert arrays["params"].size == model.count_params()
    np.testing.assert_array_equal(arrays["params"], np.concatenate([w.ravel() for w in model.get_weights()]))


# --------------------------------------------------------------------------------------------
# Damaged and tampered files
# --------------------------------------------------------------------------------------------

def refused_naming_the_file(path, match):
    """load_model(path), as a Path and as a str, raises a ValueError matching ``match`` whose
    message names the file, so that a user loading many files knows which one is bad."""
    for given in (path, str(path)):
        with pytest.raises(ValueError, match=match) as error:
            load_model(given)
        assert str(path) in str(error.value), f"the message does not name the file: {error.value}"


def test_load_never_unpickles(tmp_path, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError("load_model unpickled something")
    monkeypatch.setattr(pickle, "load", spy)
    monkeypatch.setattr(pickle, "loads", spy)
    path = tmp_path / "objects.npz"
    with open(path, "wb") as f:  # an npz whose config is an object array, stored pickled
        np.savez(f, config=np.array([{"format": "fastnn.model"}], dtype=object), params=np.zeros(3))
    refused_naming_the_file(path, r"not a readable fastnn model file")
    path = tmp_path / "pickle.npz"
    path.write_bytes(pickle.dumps({"format": "fastnn.model"}))
    refused_naming_the_file(path, r"not a readable fastnn model file")
    assert calls == []


def _foreign_zip():
    """A valid zip archive that is no model file: a document, as an office suite writes one."""
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<document/>")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, np.random.default_rng(0).bytes(5000), b"PK\x03\x04junk",
                                     _foreign_zip()], ids=["empty", "zeros", "random", "zip-magic", "foreign-zip"])
def test_garbage_files(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    refused_naming_the_file(path, r"not a readable fastnn model file")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, keep):
    path, _ = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[: int(len(data) * keep)])
    refused_naming_the_file(bad, r"not a readable fastnn model file")


def test_a_lone_npy_array(tmp_path):
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(5))
    refused_naming_the_file(path, r"not a readable fastnn model file: it holds one array")


def _tamper(config, arrays, edit):
    edit(config, arrays)
    return config, arrays


def _set(path, value):
    """An edit that sets config[path[0]][path[1]]... to value."""
    def edit(config, arrays):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


TAMPERED = [
    ("format-marker", _set(["format"], "keras"), r"format marker missing"),
    ("version", _set(["version"], 99), r"format version 99"),
    ("unknown-layer-class", _set(["layers", 1, "class_name"], "Conv2D"), r"unknown object in config: 'Conv2D'"),
    ("not-a-layer", _set(["layers", 1], {"class_name": "SGD", "config": {}}), r"'SGD' is not a layer"),
    ("unknown-activation", _set(["layers", 1, "config", "activation", "class_name"], "Swish"), r"'Swish'"),
    ("activation-is-an-optimizer", _set(["layers", 1, "config", "activation"],
                                        {"class_name": "Adam", "config": {}}), r"activation must be"),
    ("unknown-optimizer", _set(["optimizers", 0, "class_name"], "LAMB"), r"'LAMB'"),
    ("bad-hyper-parameter", _set(["optimizers", 0, "config", "learning_rate"], -1.0), r"learning_rate must be >= 0"),
    ("unknown-argument", _set(["layers", 1, "config", "kernel_size"], 3), r"malformed model config"),
    ("wrong-width", _set(["layers", 2, "config", "output_dim"], 7), r"input_dim must match"),
    ("wrong-param-count", _set(["layers", 4, "config", "output_dim"], 4), r"params must be a float vector of \d+"),
    ("bad-shared-index", _set(["layers", 1, "config", "optimizer"], {"shared": 17}), r"malformed model config"),
    ("bad-dtype", _set(["model", "dtype"], "int8"), r"dtype must be"),
    ("bad-seed", _set(["model", "seed"], -3), r"seed must be >= 0"),
    ("bad-rng-state", _set(["model", "rng_state"], {"bit_generator": "MT19937"}), r"PCG64|malformed|state"),
    ("missing-layers", lambda c, a: c.pop("layers"), r"malformed model config"),
    ("layers-not-a-list", _set(["layers"], 5), r"malformed model config"),
    ("unknown-loss", _set(["compile", "loss", "class_name"], "Hinge"), r"'Hinge'"),
    ("loss-is-a-layer", _set(["compile", "loss"], {"class_name": "ReLU", "config": {}}), r"loss must be a Loss"),
    ("bad-metric", _set(["compile", "metrics"], ["bogus"]), r"metric 'bogus' does not fit"),
    ("default-optimizer-not-an-optimizer", lambda c, a: (c["optimizers"].append({"class_name": "ReLU", "config": {}}),
                                                         c.__setitem__("default_optimizer", len(c["optimizers"]) - 1)),
     r"default_optimizer names a ReLU"),
    ("nan-weights", lambda c, a: a["params"].__setitem__(3, np.nan), r"params holds NaN or infinite"),
    ("inf-state", lambda c, a: a["state2"].__setitem__(0, np.inf), r"state2 holds NaN or infinite"),
    ("beyond-float32", lambda c, a: a.__setitem__("params", a["params"].astype(np.float64) * 1e300),
     r"params holds NaN or infinite"),
    ("short-params", lambda c, a: a.__setitem__("params", a["params"][:-1]), r"params must be a float vector"),
    ("int-params", lambda c, a: a.__setitem__("params", a["params"].astype(np.int64)), r"params must be a float"),
    ("2d-params", lambda c, a: a.__setitem__("params", a["params"].reshape(1, -1)), r"params must be a float"),
    ("missing-state", lambda c, a: a.pop("state1"), r"state1 is missing"),
    ("bad-steps", lambda c, a: a.__setitem__("opt_steps", a["opt_steps"][:1]), r"opt_steps must be \d+ step counts"),
    ("negative-steps", lambda c, a: a.__setitem__("opt_steps", -a["opt_steps"] - 1), r"opt_steps must be \d+ step counts"),
    ("steps-beyond-int64", lambda c, a: a.__setitem__("opt_steps", np.full(a["opt_steps"].shape, 2**64 - 1, np.uint64)),
     r"opt_steps must be \d+ step counts >= 0 and < 2\*\*63"),
    ("negative-second-moments", lambda c, a: a["state2"].__setitem__(slice(None), -1.0),
     r"state2 \(Adam's second moments\) must be >= 0"),
    # RMSprop's running averages of squared gradients (the layers that use compile's RMSProp)
    ("negative-square-averages", lambda c, a: a["state1"].__setitem__(slice(None), -1.0),
     r"state1 must be >= 0 where RMSprop and Adagrad keep sums of squares"),
    ("key-beyond-int64", lambda c, a: a.__setitem__("rng", np.array([2**64 - 1, 0], np.uint64)),
     r"rng must be two 64-bit integers"),
    ("rng-step-beyond-int64", lambda c, a: a.__setitem__("rng", np.array([1, 2**63], np.uint64)),
     r"rng must be two 64-bit integers"),
    ("seed-beyond-64-bits", _set(["model", "seed"], 2**64), r"seed must be <= 18446744073709551615"),
]


@pytest.mark.parametrize("edit, match", [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED])
def test_tampered_files_are_value_errors(saved, tmp_path, edit, match):
    path, _ = saved
    config, arrays = read_archive(path)
    edit(config, arrays)
    bad = tmp_path / "tampered.npz"
    write_archive(bad, config, arrays)
    refused_naming_the_file(bad, match)


def test_config_that_is_not_json(saved, tmp_path):
    path, _ = saved
    _, arrays = read_archive(path)
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as f:
        np.savez(f, config=np.frombuffer(b"{not json", dtype=np.uint8), **arrays)
    refused_naming_the_file(bad, r"not a readable fastnn model file")
    with open(bad, "wb") as f:
        np.savez(f, **arrays)  # no config at all
    refused_naming_the_file(bad, r"not a readable fastnn model file")


def test_load_model_of_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        fastnn.load_model(tmp_path / "absent.npz")


# --------------------------------------------------------------------------------------------
# Atomic writes and the backend's training state
# --------------------------------------------------------------------------------------------

@pytest.fixture(params=["unnamed", "named"])
def temporary(request, monkeypatch):
    """atomic_write's two ways to its temporary file: unnamed until complete (O_TMPFILE, where the
    file system has it) and named from the start (everywhere else)."""
    if request.param == "named":
        monkeypatch.setattr(fastnn.saving, "_open_unnamed", lambda folder: None)
    return request.param


def test_a_save_that_fails_midway_leaves_the_old_file_and_no_temporary(saved, monkeypatch, temporary):
    path, model = saved
    before = path.read_bytes()
    real_savez = np.savez

    def crash_after_writing_some(f, **arrays):  # a process killed while the archive is half written
        real_savez(f, config=arrays["config"])
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash_after_writing_some)
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]
    assert weights_equal(load_model(path).get_weights(), model.get_weights())


def test_save_replaces_an_existing_file_with_plain_permissions(saved, tmp_path):
    import os
    import stat
    path, model = saved
    model.fit(*blobs(), epochs=1, batch_size=8, verbose=0)
    model.save(path)
    assert weights_equal(load_model(path).get_weights(), model.get_weights())
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz", "plain.bin"]


def test_save_keeps_the_mode_of_the_file_it_replaces(saved, temporary):
    import stat
    path, model = saved
    os.chmod(path, 0o600)  # a private model
    model.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    fastnn.saving.atomic_write(path, lambda f: f.write(b"x"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_rename_that_fails_leaves_no_temporary(tmp_path, temporary):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(OSError):
        fastnn.saving.atomic_write(tmp_path / "taken", lambda f: f.write(b"data"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_an_unnamed_file_that_cannot_be_linked_is_written_again_with_a_name(saved, monkeypatch):
    """Where /proc refuses to link the O_TMPFILE file (some hardened containers), the save still
    lands, through a named temporary file, and leaves nothing else behind."""
    path, model = saved
    probe = fastnn.saving._open_unnamed(str(path.parent))
    if probe is None:
        pytest.skip("this file system has no O_TMPFILE")
    os.close(probe)

    def refuse(fd, folder, name):
        raise PermissionError("linkat refused")

    monkeypatch.setattr(fastnn.saving, "_link_unnamed", refuse)
    model.fit(*blobs(), epochs=1, batch_size=8, verbose=0)
    model.save(path)
    monkeypatch.undo()
    assert weights_equal(load_model(path).get_weights(), model.get_weights())
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.npz"]


def test_save_through_a_symlink_writes_where_it_points(saved, tmp_path, monkeypatch, temporary):
    path, model = saved
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    target = elsewhere / "real.npz"
    target.write_bytes(b"an old model")
    link = tmp_path / "link.npz"
    link.symlink_to(target)
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append((src, dst)), real_replace(src, dst))[1])
    model.save(link)
    monkeypatch.undo()
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert weights_equal(load_model(target).get_weights(), model.get_weights())
    assert [os.path.dirname(src) for src, _ in renamed] == [str(elsewhere)]  # the temporary file beside the target
    assert sorted(p.name for p in elsewhere.iterdir()) == ["real.npz"]


def test_a_writer_killed_midway_leaves_no_temporary_file(tmp_path):
    """A process killed (SIGKILL: no Python code runs) while atomic_write is writing leaves the
    folder as it was, where the file system can make a file without a name (O_TMPFILE)."""
    import signal
    import subprocess
    import sys
    try:
        os.close(os.open(tmp_path, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (AttributeError, OSError):
        pytest.skip("no O_TMPFILE here: a killed writer may leave its temporary file (see atomic_write)")
    (tmp_path / "model.npz").write_bytes(b"the old file")
    script = ("import sys, time\n"
              "from fastnn.saving import atomic_write\n"
              "def write(f):\n"
              "    f.write(bytes(2**20)); f.flush()\n"
              "    print('writing', flush=True); time.sleep(60)\n"
              "atomic_write(sys.argv[1], write)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "model.npz")], stdout=subprocess.PIPE,
                             cwd=os.path.dirname(os.path.dirname(fastnn.__file__)))
    try:
        assert child.stdout.readline() == b"writing\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert (tmp_path / "model.npz").read_bytes() == b"the old file"


def _write_model(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    small("adam").save(path)
    return [path]


def _write_checkpoints(tmp_path, monkeypatch):
    x, y = blobs()
    small("adam").fit(x, y, epochs=2, batch_size=8, verbose=0,
                      callbacks=[fastnn.ModelCheckpoint(tmp_path / "ck-{epoch}.npz", monitor="loss")])
    return [tmp_path / "ck-1.npz", tmp_path / "ck-2.npz"]


def _write_csv_log(tmp_path, monkeypatch):
    x, y = blobs()
    small("adam").fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[fastnn.CSVLogger(tmp_path / "log.csv")])
    return [tmp_path / "log.csv"]


def _write_plots(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    x, y = blobs()
    history = small("adam").fit(x, y, epochs=2, batch_size=8, verbose=0)
    history.plot(tmp_path / "curves.png")
    history.plot(str(tmp_path / "curves.pdf"))
    # The format still follows the path's suffix, though matplotlib renders into a file object.
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "curves.pdf").read_bytes().startswith(b"%PDF")
    return [tmp_path / "curves.png", tmp_path / "curves.pdf"]


def _write_onnx(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    small("adam").to_onnx(path)
    fastnn.onnx.export(small("sgd"), tmp_path / "other.onnx")
    return [path, tmp_path / "other.onnx"]


def _write_download(tmp_path, monkeypatch):
    import hashlib
    import io
    from fastnn.datasets import mnist
    data = b"an MNIST file" * 1000
    monkeypatch.setattr(mnist, "_open_url", lambda url: io.BytesIO(data))
    mnist._download_verified("https://example.org/f.gz", tmp_path / "f.gz", hashlib.sha256(data).hexdigest())
    assert (tmp_path / "f.gz").read_bytes() == data
    return [tmp_path / "f.gz"]


@pytest.mark.parametrize("writer", [_write_model, _write_checkpoints, _write_csv_log, _write_plots, _write_onnx,
                                    _write_download], ids=lambda f: f.__name__[len("_write_"):])
def test_every_writer_of_files_goes_through_the_atomic_write(writer, tmp_path, monkeypatch):
    """Each file appears by an os.replace from atomic_write's temporary file beside it (named
    ``.<name>.<hex>.tmp``), right after that temporary file's fsync; none is left behind."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync",))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    written = writer(tmp_path, monkeypatch)
    monkeypatch.undo()
    for path in map(os.path.abspath, written):
        folder, name = os.path.split(path)
        replaced = [k for k, event in enumerate(events) if event[0] == "replace" and event[2] == path]
        assert replaced, f"{name} was written without fastnn.saving.atomic_write"
        for k in replaced:
            src = events[k][1]
            assert os.path.dirname(src) == folder
            assert os.path.basename(src).startswith(f".{name}.") and src.endswith(".tmp")
            assert events[k - 1] == ("fsync",), f"{name} was renamed into place before an fsync"
        assert os.path.isfile(path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_backend_state_is_the_whole_training_state(saved):
    """state() is what a file holds; load_state() of it into a fresh model of the same
    architecture makes training continue identically."""
    path, model = saved
    state = model._backend.state()
    assert sorted(state) == sorted(read_archive(path)[1])
    twin = build()
    twin._ensure_built()
    twin._backend.load_state(state)
    twin._rng.bit_generator.state = model._rng.bit_generator.state
    x, y = blobs(seed=3)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    twin.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for name, value in model._backend.state().items():
        np.testing.assert_array_equal(twin._backend.state()[name], value, err_msg=name)


def test_load_state_checks_everything_before_changing_anything(saved):
    _, model = saved
    before = model._backend.state()
    bad = dict(before, rng=np.array([1, -1]))
    with pytest.raises(ValueError, match="rng must be two 64-bit integers"):
        model._backend.load_state(bad)
    with pytest.raises(ValueError, match=r"state lacks \['opt_steps'\]"):
        model._backend.load_state({k: v for k, v in before.items() if k != "opt_steps"})
    with pytest.raises(TypeError, match="state must be a mapping"):
        model._backend.load_state(list(before.values()))
    for name, value in model._backend.state().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.slow  # child processes that compile again
def test_resume_in_a_new_process_is_bit_for_bit(tmp_path):
    """Saved after epoch 1 and loaded in a fresh interpreter, the model's epochs 2 and 3 equal
    those of the run never interrupted: weights, moments and step counts, the schedule's
    position, the shuffling generator, Dropout's stream and BatchNorm's statistics."""
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent("""
        import json
        import sys
        import numpy as np
        import fastnn
        from fastnn import MLP, Dense, Dropout, BatchNormalization, AdamW, CosineDecay
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 5)).astype(np.float32)
        y = rng.integers(0, 3, 120)
        mode, path = sys.argv[1], sys.argv[2]
        if mode == "save":
            model = MLP([Dense(5, 16, activation="relu"), BatchNormalization(), Dropout(0.3),
                         Dense(16, 3, activation="softmax")], seed=7)
            model.compile("cross_entropy", AdamW(CosineDecay(0.01, 50, warmup_steps=5)), metrics=["accuracy"])
            model.fit(x, y, epochs=1, batch_size=16, verbose=0)
            model.save(path)
        else:
            model = fastnn.load_model(path)
        if mode != "save":
            model.fit(x, y, epochs=3, initial_epoch=1, batch_size=16, verbose=0)
            np.savez(path + "." + mode + ".npz", **model._backend.state())
            with open(path + "." + mode + ".json", "w") as f:
                json.dump({"shuffle": model._rng.bit_generator.state, "learning_rate": model.learning_rate_now()}, f)
    """)
    file = tmp_path / "resume.py"
    file.write_text(script)
    path = str(tmp_path / "m.npz")
    for mode in ("save", "resumed", "again"):
        subprocess.run([sys.executable, str(file), mode, path], check=True, cwd=tmp_path)

    def finished(mode):
        """The training state a run ended with: every array of the backend's state() (weights and
        BatchNorm statistics, moments, step counts, Dropout's key and step) and, beside them, the
        shuffling generator's state and the schedule's next learning rate."""
        with np.load(path + "." + mode + ".npz") as arrays:
            state = {name: arrays[name] for name in arrays.files}
        with open(path + "." + mode + ".json") as f:
            return state, json.load(f)

    resumed, resumed_stream = finished("resumed")
    again, again_stream = finished("again")
    assert sorted(resumed) == sorted(fastnn.backend.STATE)
    for name in resumed:  # loading is deterministic
        np.testing.assert_array_equal(again[name], resumed[name], err_msg=name)
    assert again_stream == resumed_stream
    # the uninterrupted run, in this process
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = rng.integers(0, 3, 120)
    model = MLP([Dense(5, 16, activation="relu"), fastnn.BatchNormalization(), fastnn.Dropout(0.3),
                 Dense(16, 3, activation="softmax")], seed=7)
    model.compile("cross_entropy", fastnn.AdamW(fastnn.CosineDecay(0.01, 50, warmup_steps=5)), metrics=["accuracy"])
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    straight = model._backend.state()
    for name in fastnn.backend.STATE:
        assert resumed[name].dtype == straight[name].dtype, name
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)
    # Not only equal but counted: every optimizer slice took 3 epochs of 8 batches; Dropout drew masks.
    assert resumed["opt_steps"].size and (resumed["opt_steps"] == 24).all()
    assert resumed["rng"][1] > 0
    # The shuffling generator stands where the uninterrupted run's does: the next epoch's order
    # (and every later draw) is the same, and so is the schedule's next learning rate.
    assert resumed_stream == {"shuffle": model._rng.bit_generator.state, "learning_rate": model.learning_rate_now()}


# --------------------------------------------------------------------------------------------
# Hostile files: the work a file costs is bounded before anything is decompressed
# --------------------------------------------------------------------------------------------

def npy_bytes(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def rewrite_members(source, target, replace=None, extra=None, compress=zipfile.ZIP_STORED):
    """A copy of the model file ``source`` at ``target``: its members, those in ``replace`` (name ->
    bytes) changed, ``extra`` (name -> bytes) added, each written with ``compress``."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update(replace or {})
    members.update(extra or {})
    with zipfile.ZipFile(target, "w", compression=compress) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.fixture
def decompressed(monkeypatch):
    """A list that counts the bytes decompressed (read from archive members) since it was last set to [0]."""
    counts = [0]
    real_read = zipfile.ZipExtFile.read

    def read(self, n=-1):
        data = real_read(self, n)
        counts[0] += len(data)
        return data
    monkeypatch.setattr(zipfile.ZipExtFile, "read", read)
    return counts


def test_a_member_fastnn_never_writes_is_refused_before_anything_is_decompressed(saved, tmp_path, decompressed):
    path, _ = saved
    bad = tmp_path / "extra.npz"
    zeros = npy_bytes(np.zeros(4 * 2**20, np.uint8))  # 4 MB of zeros, a few kB once deflated
    rewrite_members(path, bad, extra={"extra.npy": zeros}, compress=zipfile.ZIP_DEFLATED)
    assert bad.stat().st_size < 100_000
    decompressed[0] = 0
    refused_naming_the_file(bad, r"unexpected member 'extra.npy'")
    assert decompressed[0] == 0


def test_an_oversized_params_member_is_refused_before_it_is_decompressed(saved, tmp_path, decompressed):
    """The params member holds the right kind of array but 2**17 values (512 kB, within the total
    bound; deflated to a few kB) where the architecture has 104: refused after the headers only."""
    path, model = saved
    bad = tmp_path / "oversized.npz"
    rewrite_members(path, bad, replace={"params.npy": npy_bytes(np.zeros(2**17, np.float32))},
                    compress=zipfile.ZIP_DEFLATED)
    decompressed[0] = 0
    refused_naming_the_file(bad, rf"params must be a float vector of {model.count_params()} values")
    assert decompressed[0] < 64 * 1024


def test_a_member_larger_than_its_header_declares_is_refused(saved, tmp_path, decompressed):
    path, _ = saved
    bad = tmp_path / "padded.npz"
    with zipfile.ZipFile(path) as archive:
        padded = archive.read("state2.npy") + bytes(2**20)  # an array, then 1 MB nothing reads
    rewrite_members(path, bad, replace={"state2.npy": padded}, compress=zipfile.ZIP_DEFLATED)
    decompressed[0] = 0
    refused_naming_the_file(bad, r"'state2.npy' holds \d+ bytes where its header declares \d+")
    assert decompressed[0] < 64 * 1024


def test_members_that_expand_far_beyond_the_file_are_refused(saved, tmp_path, decompressed):
    """Arrays of matching headers, deflated: 3 x 4 MB of zeros in a file of some 15 kB, refused
    by the total bound (the members may expand to 8 times the file, plus 1 MiB)."""
    path, _ = saved
    bad = tmp_path / "bomb.npz"
    big = npy_bytes(np.zeros(2**20, np.float32))
    rewrite_members(path, bad, replace={"params.npy": big, "state1.npy": big, "state2.npy": big},
                    compress=zipfile.ZIP_DEFLATED)
    decompressed[0] = 0
    refused_naming_the_file(bad, r"members would expand to \d+ bytes")
    assert decompressed[0] == 0


def test_a_file_fastnn_wrote_is_no_larger_than_its_members(saved):
    """The bound above leaves room for every file fastnn writes: its members are stored, not deflated."""
    path, _ = saved
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
    assert sum(info.file_size for info in infos) <= path.stat().st_size


def test_a_header_declaring_an_absurd_element_count_is_a_value_error(saved, tmp_path):
    import io
    path, _ = saved
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**11,)})
    bad = tmp_path / "huge.npz"
    rewrite_members(path, bad, replace={"params.npy": b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(16)})
    refused_naming_the_file(bad, r"'params.npy' declares 100000000000 elements, more than")


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_config_nested_too_deep_is_a_value_error(saved, tmp_path):
    path, _ = saved
    _, arrays = read_archive(path)
    bad = tmp_path / "deep.npz"
    text = b"[" * 200_000 + b"]" * 200_000
    with open(bad, "wb") as f:
        np.savez(f, config=np.frombuffer(text, dtype=np.uint8), **arrays)
    refused_naming_the_file(bad, r"config nests deeper than \d+ levels")
    config, arrays = read_archive(path)
    config["layers"][1]["config"]["activation"] = _nested(900)
    write_archive(bad, config, arrays)
    refused_naming_the_file(bad, r"config nests deeper than \d+ levels")


# --------------------------------------------------------------------------------------------
# Which class a name in a file stands for
# --------------------------------------------------------------------------------------------

@pytest.fixture
def own_classes(monkeypatch):
    """Classes a test defines are forgotten after it (fastnn registers every subclass it sees)."""
    monkeypatch.setattr(fastnn.base.Configurable, "_registry", dict(fastnn.base.Configurable._registry))


def test_user_classes_named_like_built_in_ones_do_not_replace_them(own_classes, tmp_path):
    """A user's ``Dense`` subclass and an unrelated ``Adam`` layer, defined after the model: a plain
    file still loads fastnn's Dense and Adam, and so does a deep copy."""
    import copy
    model = small(fastnn.Adam(0.01))
    model.fit(*blobs(), epochs=1, batch_size=8, verbose=0)
    model.save(tmp_path / "plain.npz")

    class Dense(fastnn.Dense):
        pass

    class Adam(fastnn.Layer):
        pass

    for rebuilt in (load_model(tmp_path / "plain.npz"), copy.deepcopy(model)):
        assert [type(layer) for layer in rebuilt.layers] == [fastnn.Dense, fastnn.Dense]
        assert type(rebuilt.optimizer) is fastnn.Adam
        assert weights_equal(rebuilt.get_weights(), model.get_weights())


def test_a_user_class_is_saved_by_its_import_path_and_found_by_it_or_custom_objects(own_classes, tmp_path):
    class Wide(fastnn.Dense):
        pass

    class Other(fastnn.Dense):
        pass

    model = MLP([Wide(4, 3)], seed=0)
    model.save(tmp_path / "wide.npz")
    path = f"{__name__}:{Wide.__qualname__}"
    assert model.get_config()["layers"][0]["class_name"] == path
    assert type(load_model(tmp_path / "wide.npz").layers[0]) is Wide
    for key in ("Wide", path):
        assert type(load_model(tmp_path / "wide.npz", custom_objects={key: Other}).layers[0]) is Other
    # A file that names a user class by its bare name (as earlier versions wrote it) needs custom_objects.
    config, arrays = read_archive(tmp_path / "wide.npz")
    config["layers"][0]["class_name"] = "Wide"
    write_archive(tmp_path / "bare.npz", config, arrays)
    refused_naming_the_file(tmp_path / "bare.npz", r"unknown object in config: 'Wide'.*custom_objects=\{'Wide': Wide\}")
    assert type(load_model(tmp_path / "bare.npz", custom_objects={"Wide": Wide}).layers[0]) is Wide


@pytest.mark.parametrize("seed", [2**63 - 1, 2**63, 2**64 - 1])
def test_every_seed_numpy_and_pytorch_both_take_works(seed, tmp_path):
    """NumPy takes any seed >= 0, torch.manual_seed up to 2**64 - 1: fastnn takes [0, 2**64 - 1]
    (Dropout's key is the seed's 64 bits) and rebuilds the same model from its file."""
    x, y = blobs(20)
    model = MLP([Dense(4, 6, activation="relu"), fastnn.Dropout(0.5), Dense(6, 3, activation="softmax")], seed=seed)
    model.compile("cross_entropy", "adam").fit(x, y, epochs=1, batch_size=5, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    for m in (model, loaded):
        m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert weights_equal(loaded.get_weights(), model.get_weights())


def test_a_seed_beyond_64_bits_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"seed must be <= 18446744073709551615, got 18446744073709551616"):
        MLP(seed=2**64)
