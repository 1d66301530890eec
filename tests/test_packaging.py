"""pyproject.toml's extras bring what the README's commands and the tests of each extra use."""
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]


def names(extra):
    """The distribution names an extra requires (no versions, no extras of their own)."""
    return {re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower() for req in EXTRAS[extra]}


def test_the_onnx_extra_brings_onnxruntime_that_runs_the_exported_file():
    """Was: onnx alone, while the README (and tests/test_onnx.py) run the file with onnxruntime."""
    assert {"onnx", "onnxruntime"} <= names("onnx")


def test_the_test_extra_brings_numba_cuda_without_nvidias_wheels():
    """The CUDA tests run in numba-cuda's simulator (numba's own cannot run the kernels); its
    [cu12] wheels (some GB) are the cuda extra's, for a real GPU. pytest-xdist: pytest's addopts
    (pyproject.toml) ask for -n auto."""
    assert {"pytest", "pytest-xdist", "hypothesis", "numba-cuda"} <= names("test")
    assert not any("[" in req for req in EXTRAS["test"])


def test_the_readme_installs_pytorch_from_its_cpu_index_before_the_torch_extra():
    """An extra cannot choose an index: the README says where PyTorch's CPU build comes from."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu\npip install -e \".[torch]\"" in readme


def _import_cycles_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "tools" / "import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_among_the_modules():
    """Read from every import statement, deferred ones included (``tools/import_cycles.py``)."""
    tool = _import_cycles_tool()
    assert tool.cycles(tool.graph()) == []


def test_the_cycle_check_sees_a_cycle_held_by_a_deferred_import(tmp_path):
    tool = _import_cycles_tool()
    package = tmp_path / "fastnn"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("from .sub import b\n\ndef f():\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    (package / "c.py").write_text("from . import a\n")
    assert tool.cycles(tool.graph(tmp_path)) == [["fastnn.a", "fastnn.sub.b"]]
