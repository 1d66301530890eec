"""The on-disk cache of the code generated around user functions (``fastnn.user_code``): a key
that changes with every edit the compiled code would see, and new processes that load instead of
compiling, and never run an edited function's old code."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn.user_code import fingerprint

SCALE = 2.0
TABLE = np.arange(3.0)


def helper(x):
    return x + 1.0


def calls_helper(x):
    return helper(x) * SCALE


def reads_table(x):
    return x * TABLE[1]


def _define(source, name="f", **namespace):
    namespace = dict(namespace, np=np)
    exec(textwrap.dedent(source), namespace)  # noqa: S102 (test code)
    return namespace[name]


def test_the_same_code_has_the_same_key_wherever_it_is_defined():
    a = _define("def f(x):\n    return x * x * 3.0\n")
    b = _define("\n\n\ndef f(x):\n    return x * x * 3.0\n")  # other lines, another namespace
    assert fingerprint([a]) == fingerprint([b]) is not None


@pytest.mark.parametrize("edited", [
    "def f(x):\n    return x * x * 4.0\n",         # a constant
    "def f(x):\n    return x * x + 3.0\n",         # an operation
    "def f(y):\n    return y * y * 3.0\n",         # a name
    "def f(x, k=1.0):\n    return x * x * 3.0\n",  # a default
    "def f(x):\n    return np.abs(x * x * 3.0)\n",  # a library call
])
def test_an_edit_changes_the_key(edited):
    assert fingerprint([_define("def f(x):\n    return x * x * 3.0\n")]) != fingerprint([_define(edited)])


def test_a_called_function_a_global_value_an_array_and_a_closure_are_in_the_key():
    base = fingerprint([calls_helper])
    edited_helper = _define("def helper(x):\n    return x + 2.0\n", name="helper")
    assert fingerprint([_define("def f(x):\n    return helper(x) * SCALE\n", helper=helper, SCALE=SCALE)]) == base
    assert fingerprint([_define("def f(x):\n    return helper(x) * SCALE\n", helper=edited_helper,
                                SCALE=SCALE)]) != base
    assert fingerprint([_define("def f(x):\n    return helper(x) * SCALE\n", helper=helper, SCALE=3.0)]) != base
    assert fingerprint([reads_table]) != fingerprint(
        [_define("def f(x):\n    return x * TABLE[1]\n", TABLE=np.arange(3.0) * 2)])

    def make(k):
        def inner(x):
            return x * k
        return inner
    assert fingerprint([make(2.0)]) == fingerprint([make(2.0)]) != fingerprint([make(3.0)])


def test_a_value_with_no_stable_form_turns_the_cache_off():
    class Thing:
        pass
    f = _define("def f(x):\n    return x * thing\n", thing=Thing())
    assert fingerprint([f]) is None


def test_recursive_functions_have_a_key():
    f = _define("def f(x, n):\n    return x if n == 0 else f(x, n - 1)\n")
    assert fingerprint([f]) is not None


_SCRIPT = """
import numba.core.compiler as compiler
import numpy as np
import fastnn

compiles = []
_compile_extra = compiler.compile_extra
def counting(*args, **kwargs):
    compiles.append(getattr(args[3] if len(args) > 3 else kwargs.get("func"), "__qualname__", "?"))
    return _compile_extra(*args, **kwargs)
compiler.compile_extra = counting

def power(x):
    return x * x * x * FACTOR

def power_backward(x, y, dy):
    return dy

FACTOR = np.float32({factor})
model = fastnn.MLP([fastnn.Lambda(power, power_backward, input_dim=3, output_dim=3)])
model.compile("mse", "sgd")
x = np.array([[1.0, 2.0, -1.0]], dtype=np.float32)
print(model.predict(x).tolist())
print(len(compiles))
"""


def _run(factor, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", _SCRIPT.format(factor=factor)], env=env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return eval(out[-2]), int(out[-1])  # noqa: S307 (our own script's output)


@pytest.mark.slow  # three child processes, each compiling
def test_a_new_process_loads_the_user_code_and_an_edit_compiles_anew(tmp_path):
    # Numba's cache of fastnn's kernels (the parent's, warm) is shared; the user code is keyed by its source.
    cache = os.environ.get("NUMBA_CACHE_DIR") or tmp_path
    first, _ = _run(1.0, cache)
    assert first == [[1.0, 8.0, -1.0]]
    again, compiles = _run(1.0, cache)
    assert again == first
    assert compiles == 0, "a second process with the same user functions compiled again"
    # an edit of a global the function reads: the old code must never run
    edited, _ = _run(3.0, cache)
    assert edited == [[3.0, 24.0, -3.0]]


@pytest.mark.parametrize("cached", [True, False])
def test_generated_code_runs_cached_or_in_memory(cached, monkeypatch, tmp_path):
    import numba
    from fastnn import user_code
    monkeypatch.setattr(user_code, "CACHE", cached)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    scope = {"user_f": numba.njit(lambda x: x * 2.0), "K": 3.0}
    f = user_code.compile_generated("def g(x):\n    return np.float64(user_f(x) + K)\n", scope,
                                    {"g": numba.float64(numba.float64)}, "a test", (scope["user_f"],))["g"]
    assert f(1.5) == 6.0
    written = sorted(p.name for p in (tmp_path / "fastnn_user_code").glob("*.py")) \
        if (tmp_path / "fastnn_user_code").exists() else []
    assert len(written) == (1 if cached else 0)


def test_the_key_of_compiled_functions_is_the_same_in_every_process():
    """A dispatcher's options hold a set (fastmath's flags), whose order changes with the hash seed."""
    code = ("from fastnn.user_code import fingerprint; from fastnn.kernels.losses import loss_forward; "
            "print(fingerprint([loss_forward]))")
    keys = {subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=str(seed)),
                           capture_output=True, text=True, check=True).stdout.strip() for seed in (1, 2, 3)}
    assert len(keys) == 1 and None not in keys and "None" not in keys
