"""Saving and loading models without pickle.

A saved model is a NumPy ``.npz`` archive: ``config`` (the architecture, loss, optimizers
and metrics as JSON text, stored as bytes), ``params``, ``state1``, ``state2`` (the flat
parameter and optimizer-state buffers), ``opt_steps`` and ``rng`` (Dropout's random key and
the training step count). Loading reads it with
``allow_pickle=False`` and rebuilds objects only through fastnn's own constructors, which
validate every argument; any mismatch is a ValueError.
"""
import json
import os
import zipfile

import numpy as np

from .base import deserialize
from .layers import Layer
from .optimizers import Optimizer

FORMAT = "fastnn.model"
VERSION = 1


def save_model(model, path):
    """Write ``model`` to ``path`` (exactly that name; no suffix is added)."""
    model._ensure_built()
    distinct = model.optimizers()
    if model.optimizer is not None and all(model.optimizer is not d for d in distinct):
        distinct.append(model.optimizer)
    index = {id(opt): i for i, opt in enumerate(distinct)}
    default = getattr(model, "_default_optimizer", None)
    layers = []
    for layer in model.layers:
        config = layer.get_config()
        if getattr(layer, "optimizer", None) is not None:
            config["optimizer"] = {"shared": index[id(layer.optimizer)]}
        layers.append({"class_name": type(layer).__name__, "config": config})
    config = {
        "format": FORMAT, "version": VERSION,
        "model": {"name": model.name, "dtype": np.dtype(model.dtype).name, "seed": model.seed,
                  # Where the shuffling stream stands, so that training resumed after loading
                  # draws the same epoch orders as the model that was saved.
                  "rng_state": model._rng.bit_generator.state},
        "layers": layers,
        "optimizers": [{"class_name": type(o).__name__, "config": o.get_config()} for o in distinct],
        "compile": None if model.loss is None else {
            "loss": {"class_name": type(model.loss).__name__, "config": model.loss.get_config()},
            "optimizer": None if model.optimizer is None else index[id(model.optimizer)],
            "metrics": model.metrics,
        },
        # The Adam that serves layers with no optimizer of their own when compile named none.
        "default_optimizer": None if default is None else index.get(id(default)),
    }
    arrays = {name: model._backend.host(name) for name in ("params", "state1", "state2", "rng")}
    with open(path, "wb") as f:
        np.savez(f, config=np.frombuffer(json.dumps(config).encode(), dtype=np.uint8),
                 opt_steps=model._opt_steps, **arrays)


def load_model(path, device="cpu"):
    """Rebuild a model saved with ``model.save(path)``, weights and optimizer state included."""
    from .model import MLP
    shown = os.fspath(path) if isinstance(path, os.PathLike) else path  # 'model.npz', not PosixPath(...)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no model file at {shown!r}")
    try:
        # Opened here, not by np.load: np.load leaves its own file open when the zip is damaged.
        with open(path, "rb") as f:
            archive = np.load(f, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a lone .npy array
                raise ValueError(f"it holds one array of shape {archive.shape}, not an .npz archive")
            with archive:
                arrays = {k: archive[k] for k in archive.files}
        config = json.loads(arrays.pop("config").tobytes().decode())
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{shown!r} is not a readable fastnn model file: {exc}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{shown!r} is not a fastnn model file (format marker missing)")
    if config.get("version") != VERSION:
        raise ValueError(f"{shown!r} has format version {config.get('version')}, this fastnn reads {VERSION}")
    try:
        optimizers = [deserialize(o) for o in config["optimizers"]]
        model = MLP(seed=config["model"]["seed"], dtype=config["model"]["dtype"], device=device,
                    name=config["model"]["name"])
        for spec in config["layers"]:
            layer_config = dict(spec["config"])
            if isinstance(layer_config.get("optimizer"), dict):
                layer_config["optimizer"] = optimizers[layer_config["optimizer"]["shared"]]
            layer = deserialize({"class_name": spec["class_name"], "config": layer_config})
            if not isinstance(layer, Layer):
                raise ValueError(f"{spec['class_name']!r} is not a layer")
            model.add(layer)
        compiled = config["compile"]
        if compiled is not None:
            model.compile(loss=deserialize(compiled["loss"]),
                          optimizer=None if compiled["optimizer"] is None else optimizers[compiled["optimizer"]],
                          metrics=compiled["metrics"])
        if config.get("default_optimizer") is not None:
            model._default_optimizer = optimizers[config["default_optimizer"]]
            if not isinstance(model._default_optimizer, Optimizer):
                raise ValueError(f"default_optimizer names a {type(model._default_optimizer).__name__}")
        model._ensure_built()
        if config["model"].get("rng_state") is not None:
            model._rng.bit_generator.state = config["model"]["rng_state"]
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{shown!r} holds a malformed model config: {exc!r}") from None
    except ValueError as exc:  # a constructor rejected a value: say which file it came from
        raise ValueError(f"{shown!r} holds an invalid model config: {exc}") from None
    n = model.count_params()
    for name in ("params", "state1", "state2"):
        arr = arrays.get(name)
        if arr is None or arr.ndim != 1 or arr.size != n or arr.dtype.kind != "f":
            raise ValueError(f"{shown!r}: {name} must be a float vector of {n} values to match the architecture")
        with np.errstate(over="ignore"):  # checked after the cast: 1e300 is inf in float32
            values = arr.astype(model.dtype)
        if not np.isfinite(values).all():
            raise ValueError(f"{shown!r}: {name} holds NaN or infinite values")
        model._backend.write(name, 0, values)
    steps = arrays.get("opt_steps")
    if steps is None or steps.shape != model._opt_steps.shape or steps.dtype.kind not in "iu" or (steps < 0).any():
        raise ValueError(f"{shown!r}: opt_steps does not match the model's optimizers")
    model._opt_steps[:] = steps
    rng = arrays.get("rng")  # files written before Dropout existed have none: the fresh model's is kept
    if rng is not None:
        if rng.shape != (2,) or rng.dtype.kind not in "iu" or rng[1] < 0:
            raise ValueError(f"{shown!r}: rng must be two integers (random key, step count >= 0)")
        model._backend.write("rng", 0, rng.astype(np.int64))
    return model
