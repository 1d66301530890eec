"""Layers written by users (``Lambda``, subclasses of ``fastnn.Layer``) inside the compiled step.

A user layer gives two functions of NumPy arrays: ``forward(x, *weights) -> y`` and
``backward(x, *weights, y, dy) -> (dx, (dW, ...))`` (a ``Lambda``: ``forward(x)`` and
``backward(x, y, dy) -> dx``). ``user_layer_kernels`` compiles them with Numba and wraps them in
two functions of one signature for every user layer of a model,

    forward(x, params, out)                    out[:] = y
    backward(x, params, y, dy, grads, dx)      dx[:] = dL/dx (when dx has rows), the weights'
                                               gradients into their places in grads

with the layer's weights read from (and their gradients written to) fixed offsets of the flat
buffers. The network kernels take the model's wrappers as one ``UserLayers`` bundle of two
tuples of first-class functions (``user`` argument; a layer's row holds its index into them), so
one compiled step serves any user layers of these signatures, and stays in Numba's cache. The
wrappers are generated source, compiled with the users' functions through ``fastnn.user_code``,
which caches them on disk under a key of the functions' code (a new process loads them; an
edited function compiles anew), which is why this module is not among ``fastnn/kernels``.
"""
import warnings
from collections import namedtuple
from functools import lru_cache

import numba
import numpy as np
from numba import types

from .config import FASTMATH
from .user_code import compile_generated

UserLayers = namedtuple("UserLayers", ["forward", "backward"])


def signatures(dtype):
    """(forward, backward) signatures of the wrappers for arrays of ``dtype``."""
    T = numba.from_dtype(np.dtype(dtype))
    m, v = T[:, ::1], T[::1]
    return types.void(m, v, m), types.void(m, v, m, m, v, m)


def _compile(fn, what):
    """``fn`` compiled lazily with Numba (a dispatcher); a TypeError naming ``what`` if it is not a function."""
    if isinstance(fn, numba.core.registry.CPUDispatcher):
        return fn
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise TypeError(f"{what} must be a Python function written with NumPy operations, got {fn!r}")
    return numba.njit(fastmath=FASTMATH, error_model="numpy")(fn)


_WRAPPER = '''
def forward(x, params, out):
    y = user_forward(x{weights})
    if y.shape != out.shape:
        raise ValueError("SHAPE_ERROR_FORWARD")
    out[:] = y

def backward(x, params, y, dy, grads, dx):
    result = user_backward(x{weights}, {tail})
    {unpack}
    if dx.shape[0]:
        if dx_.shape != dx.shape:
            raise ValueError("SHAPE_ERROR_BACKWARD")
        dx[:] = dx_
{store}
'''


def user_layer_kernels(forward, backward, weights, dtype, lambda_style, name):
    """The (forward, backward) wrappers of one user layer: ``weights`` is a list of (offset,
    shape) of its arrays in the flat buffers. ``lambda_style``: ``backward(x, y, dy) -> dx``.

    Compiled once per process for the same functions, layout and dtype: a model built again (a
    rebuild, ``load_model``, a copy, ``to``) reuses them instead of compiling for seconds more."""
    weights = tuple((int(o), tuple(int(d) for d in s)) for o, s in weights)
    args = (forward, backward, weights, np.dtype(dtype), bool(lambda_style), name)
    try:
        hash(args)
    except TypeError:  # not functions: ``_compile`` says so
        return _user_layer_kernels.__wrapped__(*args)
    return _user_layer_kernels(*args)


@lru_cache(maxsize=256)
def _user_layer_kernels(forward, backward, weights, dtype, lambda_style, name):
    fwd = _compile(forward, f"{name}'s forward")
    bwd = _compile(backward, f"{name}'s backward")
    reads = "".join(f", params[{o}:{o + int(np.prod(s))}].reshape({tuple(int(d) for d in s)})" for o, s in weights)
    if lambda_style:
        unpack, store = "dx_ = result", ""
    else:
        unpack = "dx_, dws = result"
        store = "".join(
            f"    if dws[{i}].shape != {tuple(int(d) for d in s)}:\n"
            f"        raise ValueError(\"SHAPE_ERROR_GRADIENT\")\n"
            f"    grads[{o}:{o + int(np.prod(s))}].reshape({tuple(int(d) for d in s)})[...] = dws[{i}]\n"
            for i, (o, s) in enumerate(weights))
    source = _WRAPPER.format(weights=reads, tail="y, dy", unpack=unpack, store=store)
    for marker, message in (("SHAPE_ERROR_FORWARD", "forward returned an array of another shape than the layer's "
                                                    "output"),
                            ("SHAPE_ERROR_BACKWARD", "backward returned dx of another shape than x"),
                            ("SHAPE_ERROR_GRADIENT", "backward returned a weight gradient of another shape than its "
                                                     "weight")):
        source = source.replace(f'"{marker}"', repr(f"{name}: {message}"))
    sig_f, sig_b = signatures(dtype)
    compiled = compile_generated(source, {"user_forward": fwd, "user_backward": bwd},
                                 {"forward": sig_f, "backward": sig_b}, f"user layer {name}", (forward, backward))
    return compiled["forward"], compiled["backward"]


@lru_cache(maxsize=64)
def forward_probe(forward, name):
    """``forward`` compiled for float64 rows (a cached wrapper): a Lambda calls it once on zeros to
    find its output width."""
    return compile_generated("def probe(x):\n    return user_forward(x)\n", {"user_forward": _compile(forward, name)},
                             {"probe": (types.float64[:, ::1],)}, name, (forward,))["probe"]


def bundle(pairs):
    """The network kernels' ``user`` argument for a model's user layers, in layer order; None without any."""
    if not pairs:
        return None
    return UserLayers(tuple(f for f, _ in pairs), tuple(b for _, b in pairs))


def quietly(call, *args):
    """``call(*args)`` without Numba's notice that first-class functions are experimental."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaExperimentalFeatureWarning)
        return call(*args)
