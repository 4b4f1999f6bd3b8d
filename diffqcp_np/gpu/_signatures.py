"""The one table of the CUDA kernels: source file, C parameters, work size.

It drives the CuPy launchers (:mod:`._modules`: argument checks and conversions) and
the test suite's host build of the same sources (ctypes signatures and launch
wrappers); a test checks it against the ``extern "C" __global__`` declarations of the
``.cu`` files. This module imports neither CuPy nor Numba.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: C parameter types the kernels use: pointer types by the dtype they point at.
POINTER_DTYPES = {"double": np.dtype(np.float64), "long long": np.dtype(np.int64),
                  "signed char": np.dtype(np.int8)}
#: Scalar C types and the NumPy scalar types passed for them.
SCALAR_TYPES = {"double": np.float64, "long long": np.int64}
#: Threads per block of a default launch.
DEFAULT_BLOCK = 128
#: Most blocks of a default launch (the kernels loop over the rest: grid-stride loops).
MAX_GRID = 1 << 16


@dataclass(frozen=True)
class Param:
    """One C parameter: its name, base type, and whether it is a (const) pointer."""

    name: str
    base: str
    pointer: bool
    const: bool

    @classmethod
    def parse(cls, declaration: str) -> Param:
        """A parameter from its C declaration, e.g. ``"const double* __restrict__ v"``."""
        words = declaration.replace("*", " * ").replace("__restrict__", " ").split()
        name, words = words[-1], words[:-1]
        pointer = "*" in words
        const = "const" in words
        base = " ".join(w for w in words if w not in ("*", "const"))
        if base not in (POINTER_DTYPES if pointer else SCALAR_TYPES):
            raise ValueError(f"unsupported kernel parameter type in {declaration!r}")
        return cls(name, base, pointer, const)

    @property
    def c_declaration(self) -> str:
        """The declaration in the normal form the table and the test compare."""
        const, star = "const " if self.const else "", "*" if self.pointer else ""
        return f"{const}{self.base}{star} {self.name}"


@dataclass(frozen=True)
class KernelSignature:
    """A kernel: its name, the ``.cu`` file that defines it, its parameters, and the
    scalar parameters whose product is its number of work items (threads wanted)."""

    name: str
    source: str
    params: tuple[Param, ...]
    work: tuple[str, ...]

    def work_items(self, args: tuple) -> int:
        """The number of work items of a launch with (checked) arguments ``args``."""
        values = {p.name: a for p, a in zip(self.params, args)}
        return int(math.prod(int(values[name]) for name in self.work))

    def check_arguments(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The arguments as the kernel takes them: arrays checked (dtype, C-contiguous,
        writeable for non-const pointers), scalars converted to the exact C type.

        Arrays of any module with ``dtype`` and ``flags`` pass (NumPy for the host
        build, CuPy for the device; CuPy arrays have no ``writeable`` flag).

        Raises
        ------
        TypeError
            Naming the kernel and the parameter, for a wrong count, dtype or layout.
        """
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        out = []
        for param, arg in zip(self.params, args):
            if not param.pointer:
                if hasattr(arg, "dtype") and getattr(arg, "ndim", 0) != 0:
                    raise TypeError(f"{self.name}: {param.name} must be a scalar")
                out.append(SCALAR_TYPES[param.base](arg))
                continue
            dtype = POINTER_DTYPES[param.base]
            if getattr(arg, "dtype", None) != dtype:
                raise TypeError(f"{self.name}: {param.name} must be an array of {dtype}, "
                                f"got {getattr(arg, 'dtype', type(arg).__name__)}")
            if not arg.flags.c_contiguous:
                raise TypeError(f"{self.name}: {param.name} must be C-contiguous")
            if not param.const and not getattr(arg.flags, "writeable", True):
                raise TypeError(f"{self.name}: {param.name} is written and must be writeable")
            out.append(arg)
        return tuple(out)


def launch_geometry(items: int, block: int = DEFAULT_BLOCK) -> tuple[int, int]:
    """``(grid, block)`` of a one-dimensional launch for ``items`` work items (at least
    one block, at most :data:`MAX_GRID`; grid-stride loops cover the rest)."""
    return max(1, min(-(-items // block), MAX_GRID)), block


def _kernel(name: str, source: str, params: str, *work: str) -> KernelSignature:
    return KernelSignature(name, source, tuple(Param.parse(p) for p in params.split(",")),
                           work)


#: Every kernel of ``kernels/*.cu``, by name.
KERNELS: dict[str, KernelSignature] = {k.name: k for k in (
    _kernel("project_nonneg", "orthant_soc.cu", "const double* v, long long n, double* out",
            "n"),
    _kernel("jacobian_nonneg", "orthant_soc.cu", "const double* v, long long n, double* out",
            "n"),
    _kernel("project_soc", "orthant_soc.cu",
            "const double* v, const long long* offsets, long long ncones, double* out",
            "ncones"),
    _kernel("soc_jacobian_data", "orthant_soc.cu",
            "const double* v, const long long* offsets, long long ncones, signed char* codes,"
            " double* ratios, double* units", "ncones"),
    _kernel("soc_jacobian_apply", "orthant_soc.cu",
            "const double* x, const long long* offsets, long long ncones,"
            " const signed char* codes, const double* ratios, const double* units,"
            " double* out", "ncones"),
    _kernel("soc_reduced_blocks", "orthant_soc.cu",
            "const long long* offsets, long long ncones, const signed char* codes,"
            " const double* ratios, const double* units, const long long* block_offsets,"
            " long long lift_above, double* d, double* e, double* null", "ncones"),
    _kernel("project_exp", "exp.cu", "const double* v, long long ncones, double* out",
            "ncones"),
    _kernel("jacobian_exp", "exp.cu", "const double* v, long long ncones, double* jac",
            "ncones"),
    _kernel("project_power", "power.cu",
            "const double* v, const double* alpha, long long ncones, double* out", "ncones"),
    _kernel("jacobian_power", "power.cu",
            "const double* v, const double* alpha, long long ncones, double* jac", "ncones"),
    _kernel("sym3_eigh", "sym3.cu",
            "const double* blocks, long long nblocks, double* lam, double* vectors",
            "nblocks"),
    _kernel("sym3_reduced_parts", "sym3.cu",
            "const double* blocks, long long nblocks, double* e, double* null", "nblocks"),
    _kernel("eigen_weights", "sym3.cu",
            "const double* lam, long long n, double* e, double* null", "n"),
    _kernel("gather_values", "assemble.cu",
            "const double* src, long long src_stride, const long long* term_ptr,"
            " const long long* left, const long long* right, const double* weight,"
            " long long nnz, long long batch, double* out", "nnz", "batch"),
    _kernel("shift_diagonal", "assemble.cu",
            "double* values, long long nnz, const long long* diagonal, long long size,"
            " long long n_positive, const double* delta, long long batch", "size", "batch"),
)}

#: The kernel source files, in the order the host build includes them.
SOURCES: tuple[str, ...] = tuple(dict.fromkeys(k.source for k in KERNELS.values()))
#: Definitions every source file uses; prepended to each file when it is compiled.
PRELUDE = "_prelude.cu"
