"""A model's config, saving and loading, pickling and copying: ``get_config``/``from_config``,
``save``/``load_model`` (the file format itself is ``fastnn.saving``'s), ``pickle`` and
``copy.deepcopy``, all through the same two pieces: the config (JSON-able, no weights) and the
backend's training state.

The model classes register themselves here by their ``config_name`` (``"MLP"``, ``"Model"``),
the name a saved config gives (``model_class``): this module needs none of them.
"""
from __future__ import annotations

import os
from typing import Any

import copy
import threading

import numpy as np

from . import optimizers, saving
from .backend import STATE, check_state
from .base import class_name, deserialize, using_custom_objects
from .layers.base import _function_name
from .layers.user import custom_function
from .layers import Lambda, Layer, _function_name
from .locks import ModelLock

# config_name -> the class that rebuilds such a config (filled by the classes as they are defined).
_MODEL_CLASSES = {}


class Serializable:
    """get_config/from_config, save, pickling and deepcopy of a model (a ``Network``)."""
    config_name = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("config_name"):
            _MODEL_CLASSES[cls.config_name] = cls

    def get_config(self):
        """The architecture, loss, optimizers and metrics as JSON-able data, no weights: what
        ``from_config`` rebuilds. Optimizers shared by several layers appear once."""
        self._ensure_built()
        distinct = self.optimizers()
        if self.optimizer is not None and all(self.optimizer is not d for d in distinct):
            distinct.append(self.optimizer)
        index = {id(opt): i for i, opt in enumerate(distinct)}
        default = getattr(self, "_default_optimizer", None)
        layers = []
        for layer in self.layers:
            config = layer.get_config()
            if getattr(layer, "optimizer", None) is not None:
                config["optimizer"] = {"shared": index[id(layer.optimizer)]}
            layers.append({"class_name": class_name(type(layer)), "config": config})
        return {
            "model": {"name": self.name, "dtype": np.dtype(self.dtype).name, "seed": self.seed},
            "layers": layers,
            "optimizers": [{"class_name": class_name(type(o)), "config": o.get_config()} for o in distinct],
            "compile": None if self.loss is None else {
                "loss": {"class_name": class_name(type(self.loss)), "config": self.loss.get_config()},
                "optimizer": None if self.optimizer is None else index[id(self.optimizer)],
                # A metric given as a function is saved as its import path, found again as Lambda's
                # functions are (``custom_objects``).
                "metrics": self._metrics_config(lambda fn: {"function": _function_name(fn)}),
            },
            # The Adam that serves layers with no optimizer of their own when compile named none.
            "default_optimizer": None if default is None else index.get(id(default)),
        }

    @classmethod
    def from_config(cls, config, device="cpu", build=True):
        """A new model (fresh weights) from ``get_config()``'s data; a ValueError names what is wrong.
        ``build=False`` leaves the weights unallocated (``load_model`` fills them from a file)."""
        try:
            optimizers_ = [deserialize(o) for o in config["optimizers"]]
            model = cls._from_layers(config, [_layer_from_spec(spec, optimizers_) for spec in config["layers"]],
                                     device)
            compiled = config["compile"]
            if compiled is not None:
                model.compile(loss=deserialize(compiled["loss"]),
                              optimizer=None if compiled["optimizer"] is None else optimizers_[compiled["optimizer"]],
                              metrics=_restored_metrics(compiled["metrics"]))
            if config.get("default_optimizer") is not None:
                model._default_optimizer = optimizers_[config["default_optimizer"]]
                if not isinstance(model._default_optimizer, optimizers.Optimizer):
                    raise ValueError(f"default_optimizer names a {type(model._default_optimizer).__name__}")
            if build:
                model._ensure_built()
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"malformed model config: {exc!r}") from None
        return model

    @classmethod
    def _from_layers(cls, config, layers, device):
        """``from_config``'s model from its deserialized layers and the config."""
        raise NotImplementedError

    def __reduce__(self):
        """Pickling (joblib, multiprocessing) goes through the same two pieces as ``save``: the
        config and the backend's training state, so that the unpickled model owns fresh, writable
        arrays on its device (a memory-mapped pickle would otherwise hand the kernels read-only
        ones). A Lambda's functions are named by their import path, as pickle names functions, and
        the unpickling process imports them: a model whose Lambda uses a nested function or a
        lambda, which have none, is a PicklingError naming the layer (``copy.deepcopy`` copies it)."""
        _check_functions_importable(self)
        if self._backend is None or not self._compute_layers():
            return _restore_unbuilt, (type(self), self._attributes())
        return _unpickle, (self.get_config(), self._backend.state(), self._rng.bit_generator.state, self.device)

    def __deepcopy__(self, memo):
        """A copy in memory, rebuilt as unpickling rebuilds it (config and training state) but
        with each Lambda's functions and each user layer's class the same objects as this
        model's (``copy.deepcopy`` never copies a function), so that any model copies, nested
        functions and lambdas included."""
        if self._backend is None or not self._compute_layers():
            twin = _restore_unbuilt(type(self), {})
            memo[id(self)] = twin  # before the layers are copied: their _model is the copy
            twin.__dict__.update(copy.deepcopy(self._attributes(), memo))
            return twin
        config = self.get_config()
        classes = {}
        for spec, layer in zip(config["layers"], self.layers):
            if isinstance(layer, Lambda):  # the functions themselves in place of their names
                spec["config"].update(forward=layer.forward, backward=layer.backward)
            elif layer.is_user_layer():
                if classes.setdefault(spec["class_name"], type(layer)) is not type(layer):
                    raise TypeError(f"cannot copy this model: two of its layer classes are named "
                                    f"{spec['class_name']!r}")
        _user_loss_functions_in(config, self)
        with using_custom_objects(classes):
            return _rebuilt(config, self._backend.state(), self._rng.bit_generator.state, self.device)

    def _attributes(self):
        """What an unbuilt model is made of, without its locks (``_restore_unbuilt`` makes new ones)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_busy", "_lock")}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture, weights and the whole training state to ``path`` (a NumPy .npz
        archive, no pickle; written atomically, see ``fastnn.saving``)."""
        self._check_usable("save")
        config = self.get_config()  # builds a model that was not built yet
        state = self._backend.state()
        check_state(state, state["params"].size, self._backend.opt_meta, self.dtype)  # what load_model checks
        # Where the shuffling stream stands, so that training resumed after loading draws the
        # same epoch orders as the model that was saved.
        config["model"]["rng_state"] = self._rng.bit_generator.state
        saving.write_model_file(path, config, state)


def _user_loss_functions_in(config, model):
    """A user loss's and user metrics' functions themselves in place of their names in ``config``
    (``copy.deepcopy``: the copy uses the same functions)."""
    compiled = config["compile"]
    if compiled is None:
        return
    loss = model.loss
    if hasattr(loss, "gradient_function"):  # a CustomLoss
        compiled["loss"]["config"].update(value=loss.value, gradient=loss.gradient_function)
    compiled["metrics"] = model._metrics_config(lambda fn: {"function": fn})


def _restored_metrics(metrics):
    """The saved ``compile`` metrics with each function found again (``custom_objects``); a model
    of several outputs saved a list per output."""
    return [_restored_metrics(m) if isinstance(m, list) else
            custom_function(m["function"], "metric", owner="compiled") if isinstance(m, dict) else m for m in metrics]


def _restore_unbuilt(cls, attributes):
    model = cls.__new__(cls)
    model.__dict__.update(attributes)
    model._busy, model._lock = threading.Lock(), ModelLock()
    return model


def _unpickle(config, state, rng_state, device):
    # Unpickling imports by name what it rebuilds (as pickle itself does for classes): a
    # Lambda's functions too. load_model never does (it takes custom_objects).
    with using_custom_objects({}, import_functions=True):
        return _rebuilt(config, state, rng_state, device)


def _rebuilt(config, state, rng_state, device):
    """A model from ``get_config()``'s data, the training state and the shuffling generator's state."""
    model = model_class(config).from_config(config, device)
    model._rng.bit_generator.state = rng_state
    model._backend.load_state({name: np.array(value) for name, value in state.items()})
    return model


def _check_functions_importable(model):
    """A PicklingError naming the first Lambda whose function the unpickling process could not
    import by its ``module:qualname``: a nested function, a lambda, or a name that now holds
    another object (pickle's own rule for functions)."""
    import importlib
    import pickle
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Lambda):
            continue
        for what in ("forward", "backward"):
            fn = getattr(layer, what)
            name = _function_name(fn)
            module, _, qualname = name.rpartition(":")
            if "<" in qualname:  # '<locals>' of a nested function, '<lambda>'
                why = "is a nested function or a lambda, which has no import path"
            else:
                try:
                    found = importlib.import_module(module)
                    for part in qualname.split("."):
                        found = getattr(found, part)
                except (ImportError, AttributeError):
                    found = None
                if found is fn or getattr(found, "py_func", None) is getattr(fn, "py_func", fn):
                    continue
                why = "cannot be imported by that name"
            raise pickle.PicklingError(
                f"cannot pickle this model: layer {i} (Lambda)'s {what} {qualname} {why}; pickling names a "
                "Lambda's functions by import path, as pickle names functions. Define it at the top level of a "
                "module to pickle the model; copy.deepcopy copies the model as it is")


def load_model(path: str | os.PathLike[str], device: str = "cpu",
               custom_objects: dict[str, Any] | None = None) -> Any:
    """Rebuild a model saved with ``model.save(path)``: architecture, weights and the whole
    training state, so that ``fit`` continues where the saved model stopped.

    ``custom_objects``: your own layer classes and Lambda functions, by name
    (``{"MyLayer": MyLayer, "my_forward": my_forward}``), as Keras': the file names them, it never
    holds code, and nothing is imported from it. A name of fastnn's (``"Dense"``, ``"Adam"``) is
    always fastnn's class; a class of yours is saved by its import path (``"mymodule:MyLayer"``) and
    found by it if it is defined in this process, or through ``custom_objects``."""
    with using_custom_objects(custom_objects):
        return _load_model(path, device)


def _load_model(path, device):
    where = saving.shown(path)
    with saving.ModelFile(path) as file:
        config = file.config
        try:
            model = model_class(config).from_config(config, device, build=False)
            # The sizes the config claims, checked against the file's headers before any array is
            # read or allocated: a small file must not make the loader build or decompress a huge model.
            n = model.count_params()
            missing = [name for name in STATE if name not in file.headers and name != "rng"]
            if missing:
                raise ValueError(f"{missing[0]} is missing")
            for name in ("params", "state1", "state2"):
                shape, dtype = file.headers[name]
                if shape != (n,) or dtype.kind != "f":
                    raise ValueError(f"{name} must be a float vector of {n} values to match the architecture, the "
                                     f"file holds {dtype} of shape {shape}")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{where!r} holds a malformed model config: {exc!r}") from None
        except ValueError as exc:  # a constructor rejected a value: say which file it came from
            raise ValueError(f"{where!r} holds an invalid model config: {exc}") from None
        arrays = file.read_arrays()
    try:
        # Built from the file's weights: no random initialization to throw away.
        with np.errstate(over="ignore"):
            model._build(model._unflatten(arrays["params"].astype(model.dtype)))
        if config["model"].get("rng_state") is not None:
            model._rng.bit_generator.state = config["model"]["rng_state"]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where!r} holds a malformed model config: {exc!r}") from None
    except ValueError as exc:
        raise ValueError(f"{where!r} holds an invalid model config: {exc}") from None
    # Files written before Dropout existed have no rng: the fresh model's is kept.
    state = {**model._backend.state(), **arrays}
    try:
        model._backend.load_state(state)
        for i, layer in enumerate(model._compute_layers()):
            layer.check_weights(model._layer_weights(layer), f"layer {i} ({type(layer).__name__})")
    except ValueError as exc:
        raise ValueError(f"{where!r}: {exc}") from None
    return model


def _layer_from_spec(spec, optimizers_):
    """A layer from its ``get_config`` entry; its optimizer, if any, one of the shared ``optimizers_``."""
    layer_config = dict(spec["config"])
    if isinstance(layer_config.get("optimizer"), dict):
        layer_config["optimizer"] = optimizers_[layer_config["optimizer"]["shared"]]
    layer = deserialize({"class_name": spec["class_name"], "config": layer_config})
    if not isinstance(layer, Layer):
        raise ValueError(f"{spec['class_name']!r} is not a layer")
    return layer


def model_class(config):
    """The class that rebuilds a saved config: ``MLP``, or the functional ``Model``."""
    name = config.get("model", {}).get("class_name", "MLP") if isinstance(config, dict) else "MLP"
    if name not in _MODEL_CLASSES:
        raise ValueError(f"unknown model class in config: {name!r}")
    return _MODEL_CLASSES[name]
