"""What ``backend.CUDABackend`` does on the host around its launches: find a usable
``numba.cuda`` (a clear error where it is missing), check what the device kernels read
unchecked (metric counter rows; losses and metrics that run on the CPU only), hold the training
arrays (``DeviceData``) and fill a fresh ``control`` array. Imports no ``numba.cuda`` itself.
"""
import numpy as np

from ..kernels.metrics import CORRECT, SPEC_COLUMNS
from . import C_BAD, C_BATCH, C_STEP, C_STEP0, N_CONTROL, check_code

_INSTALL_HINT = "pip install 'fastnn[cuda]' (NVIDIA's numba-cuda package)"


def require_cuda():
    """``numba.cuda``, or a RuntimeError naming what is missing."""
    try:
        from numba import cuda
    except ImportError as e:
        raise RuntimeError(f"device='cuda' needs numba.cuda, which is not installed: {_INSTALL_HINT}") from e
    from numba import config
    if not config.ENABLE_CUDASIM and getattr(cuda, "implementation", "NVIDIA") != "NVIDIA":
        raise RuntimeError("device='cuda' needs NVIDIA's numba-cuda package; numba's own CUDA target, "
                           f"deprecated, cannot compile fastnn's kernels: {_INSTALL_HINT}")
    try:
        available = cuda.is_available()
    except Exception as e:  # a broken driver or toolkit install
        raise RuntimeError(f"device='cuda': numba.cuda cannot initialize CUDA ({e})") from e
    if not available:
        raise RuntimeError("device='cuda' found no usable NVIDIA GPU: numba.cuda.is_available() is False "
                           "(no GPU, or no NVIDIA driver; numba.cuda.detect() tells more). Use device='cpu'.")
    return cuda


class DeviceData:
    """The training arrays as ``CUDABackend.train`` reads them: flat device copies when they fit
    in device memory (``x``, ``y``), else the host arrays, streamed in chunks (``host``)."""

    def __init__(self, host, x=None, y=None):
        self.host = host
        self.x = x
        self.y = y
        self.nonzero_first = {}  # batch size -> the step's first layer over the nonzeros (CUDABackend._nonzero_first)

    @property
    def resident(self):
        return self.x is not None



def new_control(first, step0):
    """A fresh ``control`` array (see ``fastnn.cuda.C_BATCH``): at batch ``first``, no bad batch yet,
    batch 0 at training step ``step0`` (so batch ``first`` at step0 + first)."""
    control = np.empty(N_CONTROL, dtype=np.int64)
    control[C_BATCH] = first
    control[C_BAD] = -1
    control[C_STEP0] = step0
    control[C_STEP] = step0 + first
    return control


def check_metric_spec(spec, n_out):
    """A ValueError unless every row of the host ``spec`` has a known kind and columns within the
    ``n_out`` outputs: the device kernel (``metrics.metric_counts``) reads them unchecked (the CPU
    twin checks them itself)."""
    for kind, _, _, first, cols in np.asarray(spec, np.int64).reshape(-1, SPEC_COLUMNS):
        check_code(kind, CORRECT, "metric counter")
        if first < 0 or cols < 1 or first + cols > n_out:
            raise ValueError(f"metric counter of columns [{first}, {first + cols}) outside the {n_out} outputs")


def check_cpu_only(loss, user_metrics=None):
    """A ValueError for a loss or metrics of the user's (``fastnn.user_losses``): as user layers,
    they run on the CPU only (the CUDA step has no first-class functions). The loss of several
    outputs (``losses.OutputLosses``) has its own kernel here, which counts the outputs' losses
    (the functions in ``user_metrics``; metric functions of the user's are refused before, by
    ``compile`` and ``to``: ``user_losses.check_device_runs_loss``)."""
    user = getattr(loss, "user", None)
    if getattr(user, "several_outputs", False):
        return
    if user is not None:
        raise ValueError(f"loss {user.name}: losses of your own (CustomLoss) run on the CPU only; train this model "
                         "on the CPU (device='cpu', or model.to('cpu'))")
    if user_metrics is not None:
        raise ValueError("metrics of your own (functions in compile(metrics=[...])) run on the CPU only; train this "
                         "model on the CPU (device='cpu', or model.to('cpu'))")
