"""Where the device derivative runs: an array namespace, its kernels, its direct solvers.

An :class:`Engine` bundles what the orchestration (:mod:`.derivative`) is written
against: the array namespace ``xp``, the kernel table (``kernels.project_soc(...)``,
the signatures of :data:`~._signatures.KERNELS`), and two factories of batched direct
solvers with cuDSS's protocol:

* ``symmetric(indptr, indices, size, batch)``: LDLᵀ without pivoting of ``batch``
  symmetric matrices that share the pattern of their CSC upper triangle (read as CSR:
  the lower triangle, cuDSS's ``SYMMETRIC``/``LOWER`` input). The analysis (ordering,
  symbolic factorisation) is done once, at construction; then ``factorize(values)``
  copies the batch-major values ``(batch, nnz)`` into the solver's own buffer (in
  place) and refactors, ``solve(rhs)`` solves ``(batch, size)`` right-hand sides and
  ``inertia()`` returns the ``(batch, 2)`` counts of positive and negative pivots
  (``-1`` where the factorisation failed; None where the solver does not report
  them per member, and then only the singularity test decides);
* ``general(indptr, indices, size, batch)``: LU with pivoting of matrices on a CSC
  pattern (K itself, the fallback); ``factorize(values)``, ``solve(rhs, transpose)``,
  ``pivot_ratio()`` (``(batch,)``, smallest over largest pivot magnitude, 0 where
  singular).

:func:`device_engine` is CuPy, the CUDA kernels and cuDSS (:mod:`.dss`);
:func:`host_engine` is NumPy, a host build of the same kernels (passed in: the test
suite builds it with g++) and the stand-ins of :mod:`.host_solvers`, which implement the
protocol with SciPy and diffqcp_np's LDLᵀ. :func:`current` is the engine that
``device="cuda"`` and device arrays select: the device engine, unless :func:`use`
installed another for the calling context (the seam the tests use).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from ..backend import cupy_module, nvmath_problem
from ..backend.deps import GPUUnavailableError


@dataclass(frozen=True)
class Engine:
    """An array namespace, its kernels and its direct solvers (see the module
    docstring).

    Attributes
    ----------
    name : str
    xp : module
    kernels : object
        Attributes named as the kernels of :data:`~._signatures.KERNELS`.
    symmetric, general : callable
        ``(indptr, indices, size, batch) -> solver``.
    sparse : callable
        ``(values, indices, indptr, shape) -> CSC matrix`` of the namespace (SciPy's for
        NumPy, ``cupyx.scipy.sparse`` for CuPy).
    from_scipy : callable
        A SciPy sparse matrix as a sparse matrix of the namespace (itself on NumPy).
    """

    name: str
    xp: ModuleType
    kernels: Any
    symmetric: Callable[..., Any]
    general: Callable[..., Any]
    sparse: Callable[..., Any]
    from_scipy: Callable[[Any], Any]

    def asarray(self, x: Any) -> Any:
        """``x`` as a float64 array of this engine (copied to the device if needed)."""
        return self.xp.asarray(x, dtype=self.xp.float64)

    def to_host(self, x: Any) -> np.ndarray:
        """A NumPy copy (or view, on NumPy) of an array of this engine."""
        return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)


_CURRENT: contextvars.ContextVar[Engine | None] = contextvars.ContextVar(
    "diffqcp_np_gpu_engine", default=None)


def current() -> Engine:
    """The engine installed by :func:`use`, else :func:`device_engine`.

    Raises
    ------
    GPUUnavailableError
        If no engine is installed and CuPy, nvmath-python or a device is missing.
    """
    engine = _CURRENT.get()
    return device_engine() if engine is None else engine


@contextlib.contextmanager
def use(engine: Engine) -> Iterator[Engine]:
    """Run the device path on ``engine`` inside the ``with`` block (this context only)."""
    token = _CURRENT.set(engine)
    try:
        yield engine
    finally:
        _CURRENT.reset(token)


@functools.cache
def _cuda_engine() -> Engine:
    cupy = cupy_module()
    problem = nvmath_problem()
    if problem is not None:
        raise GPUUnavailableError(f"the device derivative needs cuDSS: {problem}")
    import cupyx.scipy.sparse as csp

    from . import dss
    from ._modules import DeviceKernels

    def sparse(values, indices, indptr, shape):
        return csp.csc_matrix((values, indices, indptr), shape=shape)

    return Engine("cuda", cupy, DeviceKernels(), dss.symmetric_solver, dss.general_solver,
                  sparse, csp.csr_matrix)


def device_engine() -> Engine:
    """CuPy, the CUDA kernels and cuDSS through nvmath-python (built once).

    Raises
    ------
    GPUUnavailableError
        Naming what is missing (CuPy, a device, nvmath-python with cuDSS).
    """
    return _cuda_engine()


def host_engine(kernels: Any) -> Engine:
    """NumPy, the given host build of the kernels, and the host stand-ins of cuDSS
    (:mod:`.host_solvers`)."""
    import scipy.sparse as sp

    from .host_solvers import HostGeneralSolver, HostSymmetricSolver

    def sparse(values, indices, indptr, shape):
        return sp.csc_matrix((values, indices, indptr), shape=shape)

    return Engine("numpy-stand-in", np, kernels, HostSymmetricSolver, HostGeneralSolver,
                  sparse, lambda matrix: matrix)
