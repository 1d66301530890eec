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
