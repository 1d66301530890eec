"""Lambda, a layer from two functions of the user's, and how a saved config finds them again
(``custom_function``). A subclass of ``Layer`` with its own ``build``/``forward``/``backward`` is
the other kind of user layer (see ``Layer``'s docstring)."""
from __future__ import annotations

from typing import Any, Callable

import numba
import numpy as np

from ..validation import check_int
from .base import Layer, _function_name

__all__ = ["Lambda"]  # what ``fastnn`` and ``fastnn.layers`` export


class Lambda(Layer):
    """A layer from two functions of NumPy arrays: ``forward(x) -> y`` and ``backward(x, y, dy) -> dx``
    (x, y, dy, dx 2-D: rows by features), compiled with Numba and run inside the compiled step.
    ``output_dim``: the output width (None: found by calling ``forward`` on a row of zeros). A
    function that Numba cannot compile, or that returns the wrong shape, is a ValueError naming it
    when the model is built.

    Saved as the functions' import paths (``module:qualname``), never pickled: ``load_model`` then
    needs them in ``custom_objects`` (``{"my_forward": my_forward, ...}``). Pickling a model names
    them the same way, so it takes functions defined at a module's top level (a nested function
    or a lambda is a PicklingError naming the layer); ``copy.deepcopy`` keeps the functions
    themselves, so it copies any model. CPU only.
    """
    _lambda_style = True

    def __init__(self, forward: Callable[..., Any], backward: Callable[..., Any], output_dim: int | None = None,
                 input_dim: int | None = None) -> None:
        self.forward = custom_function(forward, "forward")
        self.backward = custom_function(backward, "backward")
        for fn, what in ((self.forward, "forward"), (self.backward, "backward")):
            if not callable(fn):
                raise TypeError(f"Lambda's {what} must be a function, got {fn!r}")
        self.output_dim = None if output_dim is None else check_int(output_dim, "output_dim", minimum=1)
        self.input_dim = None if input_dim is None else check_int(input_dim, "input_dim", minimum=1)

    def get_config(self):
        return {"forward": _function_name(self.forward), "backward": _function_name(self.backward),
                "output_dim": self.output_dim, "input_dim": self.input_dim}

    def connect(self, input_dim):
        super().connect(input_dim)
        if self.output_dim is None and self.input_dim is not None:
            from ..user_layers import forward_probe
            try:
                y = forward_probe(self.forward, f"Lambda's forward {_function_name(self.forward)}")(
                    np.zeros((1, self.input_dim)))
            except numba.core.errors.NumbaError as exc:
                raise ValueError(f"Lambda's forward {_function_name(self.forward)}: Numba cannot compile it: "
                                 + " ".join(str(exc).strip().splitlines()[:4])) from None
            if getattr(y, "ndim", 0) != 2 or y.shape[0] != 1:
                raise ValueError(f"Lambda's forward {_function_name(self.forward)} must return a 2-D array of one "
                                 f"row per input row, got {getattr(y, 'shape', type(y).__name__)}")
            self.output_dim = int(y.shape[1])


def custom_function(value, what, owner="Lambda"):
    """A Lambda's function: itself, or, from a saved config, the ``module:qualname`` string looked up
    in ``load_model``'s ``custom_objects`` (by that string, the qualname or the bare name)."""
    if not isinstance(value, str):
        return value
    from ..base import custom_objects, may_import_functions
    objects = custom_objects()
    module, _, qualname = value.rpartition(":")
    for key in (value, qualname, qualname.split(".")[-1]):
        if key in objects:
            return objects[key]
    if may_import_functions() and module:
        import importlib
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found
    raise ValueError(f"the model's {owner} {what} is {value!r}: pass it to load_model as "
                     f"custom_objects={{{qualname.split('.')[-1]!r}: {qualname.split('.')[-1]}}}")
