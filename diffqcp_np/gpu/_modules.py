"""CuPy modules and launchers for the kernels of ``kernels/*.cu``, compiled on first use.

Each ``.cu`` file is compiled, with ``_prelude.cu`` prepended, into one
``cupy.RawModule`` by NVRTC. CuPy adds ``-ftz=true`` (single precision only), ``-arch``
for the current device, ``--device-as-default-execution-space`` and, for NVRTC 12.8 and
newer, ``--pch``; the options here are :data:`COMPILE_OPTIONS`, plus ``--fmad=false``
for the build that does only IEEE ``+ − × / sqrt`` in source order (bitwise comparable
with the CPU kernels where they need no ``exp``/``log``/``pow``). Nothing here runs
without CuPy and a CUDA device.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from ..backend import cupy_module, is_device_array
from ._signatures import KERNELS, PRELUDE, KernelSignature, launch_geometry

#: NVRTC options beside those CuPy adds itself.
COMPILE_OPTIONS: tuple[str, ...] = ("-std=c++17",)
#: Added for the build without fused multiply-adds.
NO_FMA_OPTIONS: tuple[str, ...] = ("--fmad=false",)


def kernel_source(source: str) -> str:
    """The code compiled for the kernel file ``source``: the prelude, then the file."""
    folder = resources.files(__package__).joinpath("kernels")
    return (folder.joinpath(PRELUDE).read_text(encoding="utf-8") + "\n"
            + folder.joinpath(source).read_text(encoding="utf-8"))


def compile_options(fmad: bool) -> tuple[str, ...]:
    """The NVRTC options of a build with (``fmad``) or without fused multiply-adds."""
    return COMPILE_OPTIONS + (() if fmad else NO_FMA_OPTIONS)


@functools.cache
def raw_module(source: str, fmad: bool = True) -> Any:
    """The ``cupy.RawModule`` of one kernel file (compiled when a function is first
    looked up; CuPy caches the binary on disk)."""
    cupy = cupy_module()
    return cupy.RawModule(code=kernel_source(source), options=compile_options(fmad))


class Launcher:
    """Launches one kernel: ``launcher(*args)`` with the arguments of its C signature.

    Arrays must be CuPy arrays of the parameter's dtype, C-contiguous; scalars are
    converted to the exact C type (CuPy does not check kernel arguments). The launch
    geometry comes from the kernel's work size unless ``grid`` and ``block`` are given.
    """

    def __init__(self, signature: KernelSignature, fmad: bool = True) -> None:
        self.signature, self.fmad = signature, fmad

    def __call__(self, *args: Any, grid: int | None = None, block: int | None = None) -> None:
        args = self.signature.check_arguments(args)
        for param, arg in zip(self.signature.params, args):
            if param.pointer and not is_device_array(arg):
                raise TypeError(f"{self.signature.name}: {param.name} must be a CuPy array, "
                                f"got {type(arg).__name__}")
        items = self.signature.work_items(args)
        if items == 0:
            return
        if grid is None or block is None:
            grid, block = launch_geometry(items)
        function = raw_module(self.signature.source, self.fmad).get_function(
            self.signature.name)
        function((grid,), (block,), args)


class DeviceKernels:
    """The kernels of :data:`~._signatures.KERNELS` on the current CUDA device, as
    attributes: ``DeviceKernels().project_soc(v, offsets, ncones, out)``.

    Parameters
    ----------
    fmad : bool, default True
        Let NVRTC contract multiplications and additions into FMAs (its default).
    """

    def __init__(self, fmad: bool = True) -> None:
        self.fmad = fmad

    def __getattr__(self, name: str) -> Launcher:
        if name not in KERNELS:
            raise AttributeError(name)
        launcher = Launcher(KERNELS[name], self.fmad)
        setattr(self, name, launcher)
        return launcher
