"""The public API's type hints: a user's script passes mypy --strict against them (the package
ships py.typed), and ``fastnn.__all__``, written out for type checkers, lists every public name."""
import os
import pathlib
import subprocess
import sys

import pytest

import fastnn

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_all_lists_every_public_name_and_no_submodule():
    public = sorted(name for name, value in vars(fastnn).items()
                    if not name.startswith("_") and not isinstance(value, type(os)))
    assert sorted(fastnn.__all__) == public  # each once: the layers' names come from ``fastnn.layers.__all__``


def test_the_package_ships_its_py_typed_marker():
    assert (ROOT / "fastnn" / "py.typed").is_file()
    assert "py.typed" in (ROOT / "pyproject.toml").read_text()


def test_a_users_script_passes_mypy_strict():
    pytest.importorskip("mypy", reason="mypy (the test extra) checks the type hints")
    script = ROOT / "tests" / "typing" / "user_script.py"
    # fastnn's own modules are read for their types, their bodies not checked (--follow-imports=silent):
    # the hints are the API's promise to the user, the kernels are Numba code.
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                           str(script)], capture_output=True, text=True, cwd=script.parent, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
