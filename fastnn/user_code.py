"""Code fastnn generates around users' functions (user layers, losses, metrics), compiled once and
kept on disk, so that a model with such functions starts in a new process as fast as one without.

Numba caches a function only if its source is in a file, and it checks only that file's time
stamp, never the code of the functions it calls (numba#6845): a cached wrapper would go on
running an edited user function's old code. So each generated module is written to a file whose
name is a hash of everything its compiled code depends on: the generated source, the code of the
user functions it calls (bytecode, constants, defaults, closures, and, recursively, the functions
and values their globals name), the compile options and Numba's version. Edited code hashes to
another file, which compiles once; the old one is never read again. A function whose globals
hold something with no stable value (an object, a class) is compiled in memory in each process,
as if the cache were off (``FASTNN_NO_CACHE=1``).

The files live in Numba's cache directory when the user set one (``NUMBA_CACHE_DIR``), else in
the user's cache directory (``~/.cache/fastnn`` on Linux), and may be deleted at any time.
"""
import hashlib
import importlib.util
import os
import sys
import tempfile
import types as pytypes

import numba
import numpy as np

from .config import CACHE, FASTMATH, file_lock

_LIBRARIES = ("numpy", "numba", "math", "cmath", "scipy", "builtins")


class _Unstable(Exception):
    """A value with no stable fingerprint: the code is compiled in memory."""


def _fingerprint(value, h, seen):
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        h.update(repr((type(value).__name__, value)).encode())
    elif isinstance(value, np.generic):
        h.update(repr((value.dtype.str, value.item())).encode())
    elif isinstance(value, np.ndarray):  # Numba freezes a global array into the code
        h.update(repr((value.dtype.str, value.shape)).encode())
        h.update(hashlib.sha256(np.ascontiguousarray(value).tobytes()).digest())
    elif isinstance(value, (tuple, list)):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _fingerprint(item, h, seen)
    elif isinstance(value, np.dtype):
        h.update(value.str.encode())
    elif isinstance(value, pytypes.ModuleType):
        h.update(f"module {value.__name__}".encode())
    elif isinstance(value, numba.core.dispatcher.Dispatcher):
        # Sets (fastmath's flags) sorted: their repr's order changes with each process's hash seed.
        h.update(repr(sorted((k, sorted(v) if isinstance(v, (set, frozenset)) else v)
                             for k, v in value.targetoptions.items())).encode())
        _fingerprint(value.py_func, h, seen)
    elif isinstance(value, pytypes.FunctionType):
        if id(value) in seen:
            h.update(b"seen")
            return
        seen.add(id(value))
        module = (getattr(value, "__module__", None) or "").split(".")[0]
        if module in _LIBRARIES:  # Numba compiles its own version of these: its version is hashed
            h.update(f"{value.__module__}.{value.__qualname__}".encode())
            return
        _code(value.__code__, value.__globals__, h, seen)
        _fingerprint(value.__defaults__, h, seen)
        _fingerprint(tuple((value.__kwdefaults__ or {}).items()), h, seen)
        for cell in value.__closure__ or ():
            _fingerprint(cell.cell_contents, h, seen)
    elif isinstance(value, (pytypes.BuiltinFunctionType, np.ufunc)) or \
            (getattr(value, "__module__", None) or "").split(".")[0] in _LIBRARIES:
        h.update(f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}".encode())
    else:
        raise _Unstable(type(value).__name__)


def _code(code, globals_, h, seen):
    h.update(repr((code.co_code, code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars,
                   code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode())
    for const in code.co_consts:
        if isinstance(const, pytypes.CodeType):  # a nested function or comprehension
            _code(const, globals_, h, seen)
        else:
            _fingerprint(const, h, seen)
    # co_names also holds attribute names; a global of the same name is hashed too, which can only
    # make the key stricter. A module's attributes the code reads (helpers.f) are hashed through it.
    for name in code.co_names:
        if name in globals_:
            value = globals_[name]
            _fingerprint(value, h, seen)
            if isinstance(value, pytypes.ModuleType) and value.__name__.split(".")[0] not in _LIBRARIES:
                for attr in code.co_names:
                    if hasattr(value, attr):
                        _fingerprint(getattr(value, attr), h, seen)


def fingerprint(functions, *parts):
    """A hex digest of ``functions``' code and ``parts``; None if some value has no stable one."""
    h = hashlib.sha256(repr((numba.__version__, np.__version__, sys.version_info[:2], sorted(FASTMATH),
                             parts)).encode())
    try:
        for fn in functions:
            _fingerprint(fn, h, set())
    except _Unstable:
        return None
    return h.hexdigest()


def _directory():
    """Where the generated modules are written; None if there is nowhere to write."""
    root = numba.config.CACHE_DIR
    if root:
        path = os.path.join(root, "fastnn_user_code")
    elif sys.platform == "win32":
        path = os.path.join(os.environ.get("LOCALAPPDATA", os.path.expanduser("~")), "fastnn", "Cache")
    elif sys.platform == "darwin":
        path = os.path.join(os.path.expanduser("~"), "Library", "Caches", "fastnn")
    else:
        path = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "fastnn")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


def _write_once(path, text):
    """``text`` into ``path`` unless it is there already: written beside and renamed, so that a
    process reading it never sees half a file, and left alone once there, so that its time stamp
    (Numba's cache key) stays."""
    if os.path.exists(path):
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def compile_generated(source, scope, entries, label, user_functions):
    """The functions ``entries`` (name -> Numba signature: a full one, or a tuple of argument
    types) of the generated module ``source``, whose free names are bound by ``scope`` (the user
    functions, compiled: Numba dispatchers; constants), compiled with fastnn's options.

    Cached on disk (see the module's docstring) under a key of ``source``, the entries'
    signatures and ``user_functions``' code; compiled in memory when that is off or impossible.
    ``label`` names the code in tracebacks."""
    options = dict(fastmath=FASTMATH, error_model="numpy")
    key = fingerprint(user_functions, source, sorted((n, str(s)) for n, s in entries.items()),
                      sorted((k, repr(v)) for k, v in scope.items() if not callable(v))) if CACHE else None
    directory = _directory() if key else None
    if directory is None:
        namespace = {"np": np, **scope}  # as the module file's ``import numpy as np``
        exec(compile(source, f"<fastnn {label}>", "exec"), namespace)  # noqa: S102 (code generated here)
        return {n: numba.njit(s, **options)(namespace[n]) for n, s in entries.items()}
    name = f"fastnn_user_{key[:32]}"
    path = os.path.join(directory, name + ".py")
    # One process at a time compiles and writes a key's cache entries, the others then load them:
    # processes writing one entry at once can crash (numba#4807): MPI ranks, joblib workers.
    with file_lock(path + ".lock"):
        _write_once(path, f"# Generated by fastnn for {label}; safe to delete.\nimport numpy as np\n\n{source}")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        vars(module).update(scope)
        sys.modules.setdefault(name, module)
        return {n: numba.njit(s, cache=True, **options)(getattr(module, n)) for n, s in entries.items()}
