"""The backend of each device: ``get_backend('cpu' | 'cuda', dtype)``.

The one module that knows every backend; the backends import only their interface
(``fastnn.backend``), so no module imports one that imports it back. Importing the CUDA backend
does not import ``numba.cuda``: constructing it checks for a usable GPU first.
"""
from .cpu_backend import CPUBackend
from .cuda.backend import CUDABackend

BACKENDS = {"cpu": CPUBackend, "cuda": CUDABackend}


def get_backend(device, dtype):
    """A new backend for ``device`` ('cpu' or 'cuda'); a clear error where one is unavailable."""
    if device not in BACKENDS:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return BACKENDS[device](dtype)
