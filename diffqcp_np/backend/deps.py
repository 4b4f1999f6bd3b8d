"""Lazy probes of the optional GPU dependencies (CuPy, nvmath-python) and a device.

Nothing here imports CuPy or nvmath-python until a probe asks for it, and each probe
runs once per process. Setting the environment variable ``DIFFQCP_NP_DISABLE_GPU`` to
anything but ``""`` or ``"0"`` turns the GPU path off whatever is installed; it is read
on every call, so it can be set after import.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from types import ModuleType

#: Environment variable that turns the GPU path off.
DISABLE_GPU_VARIABLE = "DIFFQCP_NP_DISABLE_GPU"
#: How to install the GPU dependencies, for error messages.
INSTALL_HINT = ('install the GPU extra of your CUDA major version: '
                'pip install "diffqcp_np[gpu-cu12]" (CUDA 12) or '
                'pip install "diffqcp_np[gpu-cu13]" (CUDA 13)')


class GPUUnavailableError(RuntimeError):
    """The GPU path was asked for, but CuPy, nvmath-python or a CUDA device is missing
    (or the path is turned off by ``DIFFQCP_NP_DISABLE_GPU``)."""


def gpu_disabled() -> bool:
    """Whether ``DIFFQCP_NP_DISABLE_GPU`` turns the GPU path off."""
    return os.environ.get(DISABLE_GPU_VARIABLE, "") not in ("", "0")


@functools.cache
def _import(name: str) -> tuple[ModuleType | None, str | None]:
    """The module ``name`` and None, or None and why it cannot be imported."""
    if importlib.util.find_spec(name) is None:
        return None, f"{name} is not installed"
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return None, f"{name} is installed but failed to import ({type(exc).__name__}: {exc})"


@functools.cache
def _device_problem() -> str | None:
    """Why CuPy sees no usable CUDA device, or None if it sees one (CuPy importable)."""
    cupy = _import("cupy")[0]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver raises CUDARuntimeError
        return f"CuPy finds no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return "CuPy finds no CUDA device (device count 0)"
    return None


def cupy_problem() -> str | None:
    """Why the GPU path cannot run (disabled, no CuPy, no device), or None if it can."""
    if gpu_disabled():
        value = os.environ[DISABLE_GPU_VARIABLE]
        return f"the GPU path is turned off by {DISABLE_GPU_VARIABLE}={value!r}"
    module, problem = _import("cupy")
    if module is None:
        return f"{problem}; {INSTALL_HINT}"
    problem = _device_problem()
    if problem is not None:
        return f"{problem}; the GPU path needs an NVIDIA GPU with its driver"
    return None


def nvmath_problem() -> str | None:
    """Why nvmath-python (cuDSS) cannot be used, or None if it imports (device not checked)."""
    if gpu_disabled():
        return cupy_problem()
    module, problem = _import("nvmath")
    return None if module is not None else f"{problem}; {INSTALL_HINT}"


def cupy_module() -> ModuleType:
    """CuPy, once :func:`cupy_problem` finds nothing wrong.

    Raises
    ------
    GPUUnavailableError
        Naming the reason and, where CuPy is missing, the extra to install.
    """
    problem = cupy_problem()
    if problem is not None:
        raise GPUUnavailableError(problem)
    return _import("cupy")[0]


def installed_module(name: str) -> ModuleType | None:
    """The module ``name`` (e.g. ``"cupy"``, ``"nvmath"``) if it imports, whether or not
    a device exists and the GPU path is enabled."""
    return _import(name)[0]
