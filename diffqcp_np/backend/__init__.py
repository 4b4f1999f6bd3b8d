"""The back-end choke point: which array module an array lives in, and copies between
host and device.

Only this package (and :mod:`diffqcp_np.gpu`, through it) imports CuPy, and only when an
array of CuPy's or a device copy asks for it: NumPy input never triggers the import.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .deps import (
    DISABLE_GPU_VARIABLE,
    INSTALL_HINT,
    GPUUnavailableError,
    cupy_module,
    cupy_problem,
    gpu_disabled,
    nvmath_problem,
)

__all__ = [
    "DEVICES", "DISABLE_GPU_VARIABLE", "INSTALL_HINT", "GPUUnavailableError", "array_module",
    "cupy_problem", "device_requested", "gpu_disabled", "is_device_array", "nvmath_problem",
    "to_device", "to_host",
]

#: Values of the entry points' ``device`` argument (None: from the arrays' types).
DEVICES = ("cpu", "cuda")


def is_device_array(x: Any) -> bool:
    """Whether ``x`` is a CuPy array or a ``cupyx.scipy.sparse`` matrix (by its type's
    module: CuPy is not imported to answer)."""
    return type(x).__module__.split(".", 1)[0] in ("cupy", "cupyx")


def device_requested(device: str | None, arrays: dict[str, Any]) -> bool:
    """Whether an entry point takes the device path: ``device="cuda"``, or ``device``
    None and one of ``arrays`` (by argument name) a CuPy array or sparse matrix.

    Raises
    ------
    ValueError
        For a ``device`` not in :data:`DEVICES`, or ``device="cpu"`` with a device
        array (naming the argument).
    """
    if device is not None and device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)} or None, got {device!r}")
    on_device = [name for name, x in arrays.items() if is_device_array(x)]
    if device == "cpu" and on_device:
        raise ValueError(f"device='cpu' but {on_device[0]} is a CuPy array; pass host "
                         "arrays, or device='cuda'")
    return device == "cuda" or (device is None and bool(on_device))


def array_module(*arrays: Any) -> ModuleType:
    """The array namespace of the arguments (PyLops' ``get_array_module``).

    CuPy if any argument is a CuPy array or sparse matrix; else the namespace of the
    first argument that declares one through ``__array_namespace__`` and is not a NumPy
    array (e.g. ``array_api_strict``); else NumPy (also for scalars, lists, SciPy
    matrices and no arguments).

    Raises
    ------
    GPUUnavailableError
        If a CuPy array is passed while the GPU path is turned off.
    """
    if any(is_device_array(x) for x in arrays):
        return cupy_module()
    for x in arrays:
        if not isinstance(x, np.ndarray) and hasattr(x, "__array_namespace__"):
            return x.__array_namespace__()
    return np


def to_host(x: Any) -> np.ndarray:
    """A NumPy array with the values of ``x`` (a copy from the device for CuPy arrays;
    ``x`` itself for NumPy arrays)."""
    if is_device_array(x):
        return x.get()
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(x)


def to_device(x: Any) -> Any:
    """A CuPy array with the values of ``x`` (``x`` itself if it is one already).

    Raises
    ------
    GPUUnavailableError
        If CuPy or a CUDA device is missing, or the GPU path is turned off.
    """
    cupy = cupy_module()
    return cupy.asarray(x)
