"""What every public fastnn object shares: hyper-parameters kept as given, a JSON-able
config, and the seed framework's camelCase keywords.

The seed framework spells keywords in camelCase (``inputDim``, ``learningRate``); fastnn's
API is snake_case like Keras and scikit-learn. ``Configurable`` translates once, for every
subclass, so ``Dense(inputDim=3, outputDim=4)`` and ``Dense(input_dim=3, output_dim=4)`` are
the same call. A subclass lists other historical names in ``_aliases`` (e.g. LeakyReLU's
``epsilon`` for ``alpha``).
"""
import contextlib
import contextvars
import functools
import inspect
import re

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name):
    """'learningRate' -> 'learning_rate'; snake_case names pass unchanged."""
    return _CAMEL.sub(r"_\1", name).lower()


def translate_kwargs(func, aliases, kwargs):
    """Map camelCase keywords and ``aliases`` onto ``func``'s parameter names.

    A keyword that ``func`` accepts as spelled is never renamed; passing the same parameter
    under two spellings is an error, as it would be in Python.
    """
    accepted = inspect.signature(func).parameters
    out = {}
    for key, value in kwargs.items():
        name = key if key in accepted else aliases.get(key, snake_case(key))
        if name in out:
            raise TypeError(f"{func.__qualname__}() got {name!r} twice (once as {key!r})")
        out[name] = value
    return out


def accepts_seed_keywords(func, aliases=None):
    """Wrap ``func`` so that it takes the seed's camelCase keywords too."""
    aliases = aliases or {}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **translate_kwargs(func, aliases, kwargs))
    return wrapper


class Configurable:
    """Base of layers, activations, losses, optimizers, initializers and callbacks.

    Subclasses store each ``__init__`` argument under its own name (scikit-learn's rule),
    which makes ``get_config`` and ``repr`` derivable from the signature, and ``deserialize``
    able to rebuild any of them from JSON without running code from the file.
    """
    _aliases = {}
    _registry = {}  # class_name(cls) -> cls, for every subclass defined so far

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Configurable._registry[class_name(cls)] = cls
        if "__init__" in cls.__dict__:
            cls.__init__ = accepts_seed_keywords(cls.__dict__["__init__"], cls._aliases)

    @classmethod
    def _param_names(cls):
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_config(self):
        """The constructor arguments as a JSON-able dict: ``type(self)(**get_config())`` rebuilds it."""
        return {name: _jsonable(getattr(self, name)) for name in self._param_names()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def class_name(cls):
    """The name a config gives ``cls``: a fastnn class its bare name (``"Dense"``), any other class
    its import path ``"module:qualname"`` (as a Lambda's functions), so that a class of the user's
    named like a fastnn class never stands in for it."""
    if cls.__module__ == "fastnn" or cls.__module__.startswith("fastnn."):
        return cls.__name__
    return f"{cls.__module__}:{cls.__qualname__}"


def _jsonable(value):
    if isinstance(value, Configurable):
        return {"class_name": class_name(type(value)), "config": value.get_config()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def deserialize(value):
    """Inverse of ``get_config``: rebuild ``{"class_name": ..., "config": ...}`` dicts, recursively.

    Only classes defined as fastnn Configurables can be named, and their constructors
    validate every argument, so a tampered file yields an error, never arbitrary objects. A
    name is looked up in ``custom_objects`` first (as written, or its qualname or bare name),
    then among fastnn's classes (a bare name) or the user's classes defined so far (an import
    path ``module:qualname``, as ``class_name`` writes it).
    """
    if isinstance(value, dict) and set(value) == {"class_name", "config"}:
        name = value["class_name"]
        if not isinstance(name, str):
            raise ValueError(f"malformed object in config: class_name {name!r}")
        cls = _find_class(name)
        if not isinstance(value["config"], dict):
            raise ValueError(f"malformed object in config: {name!r}")
        config = {k: deserialize(v) for k, v in value["config"].items()}
        # Attributes set after construction (a layer's trainable), not constructor arguments.
        after = {k: config.pop(k) for k in getattr(cls, "_config_attributes", ()) if k in config}
        obj = cls(**config)
        for k, v in after.items():
            setattr(obj, k, v)
        return obj
    if isinstance(value, list):
        return [deserialize(v) for v in value]
    return value


def _find_class(name):
    """The class a config's ``class_name`` stands for (see ``deserialize``)."""
    module, _, qualname = name.rpartition(":")
    bare = qualname.split(".")[-1]
    objects = custom_objects()
    for key in (name, qualname, bare):
        if key in objects:
            cls = objects[key]
            if not (isinstance(cls, type) and issubclass(cls, Configurable)):
                raise ValueError(f"custom_objects[{key!r}] must be a subclass of a fastnn class (such as fastnn.Layer)")
            return cls
    cls = Configurable._registry.get(name)
    if cls is None and module and may_import_functions():  # unpickling: import as pickle would
        import importlib
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, Configurable)):
            raise ValueError(f"{name!r} is not a subclass of a fastnn class")
    if cls is None:
        raise ValueError(f"unknown object in config: {name!r}; if it is your own class, pass "
                         f"custom_objects={{{bare!r}: {bare}}} to load_model")
    return cls


def resolve(identifier, base, by_name, what):
    """An instance of ``base`` from an instance, a subclass, or a name in ``by_name``."""
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, base):
        return identifier()
    if isinstance(identifier, str) and identifier.lower() in by_name:
        return by_name[identifier.lower()]()
    raise ValueError(f"{what} must be a {base.__name__} or one of {sorted(by_name)}, got {identifier!r}")


_CUSTOM_OBJECTS = contextvars.ContextVar("fastnn_custom_objects", default=({}, False))


def custom_objects():
    """The ``custom_objects`` of the ``load_model`` call in progress (name -> class or function)."""
    return _CUSTOM_OBJECTS.get()[0]


def may_import_functions():
    """Whether a Lambda's function may be imported by its ``module:qualname`` (unpickling only)."""
    return _CUSTOM_OBJECTS.get()[1]


@contextlib.contextmanager
def using_custom_objects(objects, import_functions=False):
    """Within the block, ``deserialize`` and Lambda resolve names through ``objects`` first."""
    if objects is not None and not isinstance(objects, dict):
        raise TypeError(f"custom_objects must be a dict of name -> class or function, got {type(objects).__name__}")
    token = _CUSTOM_OBJECTS.set((dict(objects or {}), import_functions))
    try:
        yield
    finally:
        _CUSTOM_OBJECTS.reset(token)
