"""The package's Numba flags live in fastnn.config alone (stumpy's habit): no kernel module
compiles with flags of its own, and the fastmath set keeps NaN and inf observable."""
import pathlib
import re

import fastnn
from fastnn import config

KERNEL_DIR = pathlib.Path(fastnn.__file__).parent / "kernels"


def test_no_kernel_module_compiles_with_its_own_flags():
    offenders = []
    for path in sorted(KERNEL_DIR.glob("*.py")):
        text = path.read_text()
        for pattern in (r"\bnjit\b", r"numba\.jit\b", r"fastmath\s*=", r"\bcache\s*=", r"parallel\s*=\s*True"):
            if re.search(pattern, text):
                offenders.append(f"{path.name}: {pattern}")
    assert offenders == []


def test_fastmath_flags_leave_nan_and_inf_observable():
    assert "nnan" not in config.FASTMATH and "ninf" not in config.FASTMATH
    assert "fast" not in config.FASTMATH


def test_kernels_detect_nan_through_the_package_flags():
    import numpy as np
    from fastnn.kernels.losses import mse_forward
    pred = np.array([[np.nan, 1.0]], dtype=np.float32)
    assert np.isnan(mse_forward(pred, np.zeros_like(pred)))


def _kernels():
    import importlib
    for path in sorted(KERNEL_DIR.glob("*.py")):
        module = importlib.import_module(f"fastnn.kernels.{path.stem}")
        for name, obj in vars(module).items():
            if hasattr(obj, "targetoptions") and getattr(obj, "__module__", module.__name__) == module.__name__:
                yield name, obj


def test_no_code_is_inlined_into_a_parallel_build():
    """Inlined code compiles with its caller's flags: an inline kernel's prange loops (the
    serial twin of a kernel_pair has them) would become parallel loops nested in a parallel
    caller. So parallel builds are never inline and call no inline kernel."""
    import inspect
    kernels = dict(_kernels())
    inline = {name for name, obj in kernels.items() if obj.targetoptions.get("inline") == "always"}
    parallel = {name for name, obj in kernels.items() if obj.targetoptions.get("parallel")}
    assert len(inline) > 20  # the activation, loss and optimizer primitives
    assert parallel and not parallel & inline
    for name in parallel:
        source = inspect.getsource(kernels[name].py_func)
        assert not [callee for callee in inline if re.search(rf"\b{callee}\(", source)], name
