"""Builds diffqcp_np's CUDA C kernels for the host with g++ through the shim, and runs
them from Python with ctypes (test infrastructure; not shipped).

The launch wrappers and the ctypes signatures both come from the package's kernel
table (``diffqcp_np.gpu._signatures.KERNELS``), so there is no second list to keep in
step with the ``.cu`` files.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from diffqcp_np.gpu import _signatures
from diffqcp_np.gpu._signatures import KERNELS, PRELUDE, SOURCES, launch_geometry

SHIM = Path(__file__).with_name("cuda_host_shim.h")
KERNEL_DIR = Path(_signatures.__file__).with_name("kernels")

#: Flags of every build: no FMA contraction (Numba's LLVM does not contract either).
COMMON_FLAGS = ["-std=c++20", "-fPIC", "-shared", "-ffp-contract=off", "-Wall", "-Wextra",
                "-Werror"]
#: Extra flags per build flavour (later flags win).
FLAVOURS = {
    "serial": ["-O2"],
    "sanitize": ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                 "-fno-sanitize-recover=all"],
    "fma": ["-O2", "-mfma", "-ffp-contract=fast"],
}


def compiler() -> str | None:
    """The host C++ compiler (``$CXX`` or g++), or None."""
    return shutil.which(os.environ.get("CXX", "g++"))


def host_source() -> str:
    """The translation unit: the prelude, every kernel file, one launcher per kernel."""
    lines = [f'#include "{PRELUDE}"'] + [f'#include "{s}"' for s in SOURCES]
    for sig in KERNELS.values():
        params = ", ".join(p.c_declaration for p in sig.params)
        args = ", ".join(p.name for p in sig.params)
        lines.append(f"DQ_EXPORT({sig.name}, ({params}), ({args}))")
    return "\n".join(lines) + "\n"


def build(flavour: str, directory: Path, source: str | None = None,
          defines: tuple[str, ...] = ()) -> Path:
    """Compile the kernels (or ``source``, a translation unit) into a shared library.

    Raises
    ------
    RuntimeError
        With the compiler's messages, if the build fails.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cpp = directory / f"host_{flavour}.cpp"
    cpp.write_text(host_source() if source is None else source)
    lib = directory / f"libkernels_{flavour}.so"
    command = [compiler(), *COMMON_FLAGS, *FLAVOURS[flavour], *defines, "-include", str(SHIM),
               "-I", str(KERNEL_DIR), str(cpp), "-o", str(lib)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"host build failed: {' '.join(command)}\n{result.stderr}")
    return lib


_CTYPES = {"double": ctypes.c_double, "long long": ctypes.c_longlong}


class HostKernels:
    """The kernels of a host build, called as the CuPy launchers are:
    ``kernels.project_soc(v, offsets, ncones, out)`` with NumPy arrays.

    Parameters
    ----------
    path : Path
        A library from :func:`build`.
    geometry : (int, int), optional
        ``(grid, block)`` of every launch; by default the package's
        :func:`~diffqcp_np.gpu._signatures.launch_geometry` of the kernel's work size.
    """

    def __init__(self, path: Path, geometry: tuple[int, int] | None = None) -> None:
        self.path, self.geometry = path, geometry
        self._lib = ctypes.CDLL(str(path))
        for sig in KERNELS.values():
            function = getattr(self._lib, f"launch_{sig.name}")
            function.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
                ctypes.c_void_p if p.pointer else _CTYPES[p.base] for p in sig.params]
            function.restype = None

    def with_geometry(self, grid: int, block: int) -> HostKernels:
        """The same library launched with a fixed ``(grid, block)``."""
        return HostKernels(self.path, (grid, block))

    def launch(self, name: str, *args) -> None:
        """Run kernel ``name`` over a launch (serially: every block and thread in turn)."""
        sig = KERNELS[name]
        args = sig.check_arguments(args)
        grid, block = self.geometry or launch_geometry(sig.work_items(args))
        values = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in args]
        getattr(self._lib, f"launch_{name}")(grid, block, *values)

    def __getattr__(self, name: str):
        if name not in KERNELS:
            raise AttributeError(name)
        return lambda *args: self.launch(name, *args)
