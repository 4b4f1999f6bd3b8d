"""The GPU path: CUDA kernels for CuPy and device-side algorithms written on an array
namespace.

**Nothing of this package has run on a GPU yet.** Its kernels are compiled and run on
the CPU by the test suite (a host build of the same ``.cu`` files, compared with the
Numba kernels), compiled for sm_80/sm_90 by NVRTC and nvcc, and its array-namespace
code runs on NumPy against the CPU derivative; see the README.

Importing this package imports neither CuPy nor nvmath-python; :func:`available` and
:func:`require` probe them (once per process). Install them with the extra of your CUDA
major version, ``diffqcp_np[gpu-cu12]`` or ``diffqcp_np[gpu-cu13]``.
"""

from __future__ import annotations

from types import ModuleType

from ..backend import GPUUnavailableError, cupy_module, cupy_problem
from ..backend.deps import installed_module

__all__ = ["GPUUnavailableError", "available", "device_error", "require", "versions"]


def available() -> bool:
    """Whether the GPU path can run: CuPy imports, it sees a CUDA device, and
    ``DIFFQCP_NP_DISABLE_GPU`` is not set."""
    return cupy_problem() is None


def device_error() -> str | None:
    """Why the GPU path cannot run (naming the extra to install where CuPy is missing),
    or None if it can."""
    return cupy_problem()


def require() -> ModuleType:
    """CuPy, if the GPU path can run.

    Raises
    ------
    GPUUnavailableError
        With :func:`device_error`'s message.
    """
    return cupy_module()


def versions() -> dict[str, str | None]:
    """Versions of CuPy, its CUDA runtime, NVRTC and nvmath-python (None where missing
    or where no driver answers); imports them if they are installed."""
    out: dict[str, str | None] = {"cupy": None, "cuda_runtime": None, "nvrtc": None,
                                  "nvmath": None}
    cupy, nvmath = installed_module("cupy"), installed_module("nvmath")
    if cupy is not None:
        out["cupy"] = cupy.__version__
        for key, query in (("cuda_runtime", lambda: cupy.cuda.runtime.runtimeGetVersion()),
                           ("nvrtc", lambda: ".".join(map(str, cupy.cuda.nvrtc.getVersion())))):
            try:
                out[key] = str(query())
            except Exception:  # noqa: BLE001 - no driver or library: unknown
                out[key] = None
    if nvmath is not None:
        out["nvmath"] = nvmath.__version__
    return out
