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


def test_no_kernel_is_a_parallel_build():
    """No kernel starts Numba's threading layer: its OpenMP threads would spin and take the
    cores from BLAS, and a fork-based pool in the user's program would hang after GNU OpenMP ran
    (tests/test_host_process.py checks the process side)."""
    import importlib
    kernels = []
    for path in sorted(KERNEL_DIR.glob("*.py")):
        module = importlib.import_module(f"fastnn.kernels.{path.stem}")
        kernels += [(name, obj) for name, obj in vars(module).items() if hasattr(obj, "targetoptions")]
    assert len(kernels) > 30
    assert [name for name, obj in kernels if obj.targetoptions.get("parallel")] == []
    assert [path.name for path in KERNEL_DIR.glob("*.py") if "prange" in path.read_text()] == []
