"""cuDSS through nvmath-python: the device engine's direct solvers (protocol of
:mod:`.engine`).

**None of this has run: it needs a CUDA device.** The orchestration that calls it is
tested on the host against the stand-ins of :mod:`.host_solvers`; what is checked on
the CPU here is the configuration through ``nvmath.bindings.cudss`` (the config
objects work without a device). GPU.md §1 is the source of every call:

* one symmetric system (``batch == 1``): ``nvmath.sparse.advanced.DirectSolver`` with
  ``sparse_system_type=SYMMETRIC`` and ``sparse_system_view=LOWER`` on M's CSC upper
  triangle read as CSR (the same three arrays), ``pivot_type=PIVOT_NONE`` (M is
  quasi-definite once regularised), planned (reordering and symbolic factorisation)
  once at construction; ``factorize(values)`` writes the values into the matrix's own
  buffer and calls ``factorize()`` again (the analysis is reused only for values
  updated in place), whose ``inertia`` is the pivot count;
* a uniform batch (``batch > 1``, one pattern): the low-level bindings, as NVIDIA's
  ``simple_uniform_batch`` sample and Moreau do (the high-level API has only the
  non-uniform batch): one ``matrix_create_csr`` on the shared index arrays with a
  batch-major values buffer of ``batch · nnz``, dense right-hand side and solution
  buffers of ``batch · size``, ``CUDSS_CONFIG_UBATCH_SIZE`` and ``PIVOT_NONE`` set with
  ``config_set``, ANALYSIS once, FACTORIZATION and SOLVE for all members;
* the general fall-back (LU of K with pivoting): one ``DirectSolver`` per member
  (``GENERAL``); K's CSC arrays read as CSR are K', so ``solve(rhs, transpose=True)``
  uses them as they are and ``transpose=False`` a second factorisation of K's CSR form
  (values permuted by a host-built map), made on first use.

Index arrays are int32 (nvmath refuses int64 for batches; GPU.md §1.5).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..backend import cupy_module


def _cudss() -> Any:
    from nvmath.bindings import cudss

    return cudss


def configure(config: int, settings: dict[Any, int]) -> None:
    """Set int32 parameters of a cuDSS config (``ConfigParam`` → value)."""
    cudss = _cudss()
    for param, value in settings.items():
        buffer = np.array(value, dtype=np.int32)
        cudss.config_set(config, int(param), buffer.ctypes.data, buffer.nbytes)


def read_config(config: int, param: Any) -> int:
    """An int32 parameter of a cuDSS config."""
    cudss = _cudss()
    out, written = np.zeros((), np.int32), np.zeros((), np.uint64)
    cudss.config_get(config, int(param), out.ctypes.data, out.nbytes, written.ctypes.data)
    return int(out)


def batch_settings(batch: int) -> dict[Any, int]:
    """The config of a uniform batch of ``batch`` quasi-definite systems: its size, no
    pivoting, the default reordering (COLAMD and BTF_COLAMD are reported unsupported
    with uniform batches)."""
    cudss = _cudss()
    return {cudss.ConfigParam.UBATCH_SIZE: batch,
            cudss.ConfigParam.PIVOT_TYPE: int(cudss.PivotType.PIVOT_NONE),
            cudss.ConfigParam.REORDERING_ALG: int(cudss.ReorderingAlg.DEFAULT)}


def _destroy(cudss: Any, handle: int, config: int, data: int, matrices: tuple) -> None:
    for matrix in matrices:
        cudss.matrix_destroy(matrix)
    cudss.data_destroy(handle, data)
    cudss.config_destroy(config)
    cudss.destroy(handle)


class UniformBatchLDL:
    """LDLᵀ without pivoting of ``batch`` symmetric matrices on one pattern (CSC upper
    triangle ``(indptr, indices)`` = CSR lower triangle), by cuDSS's uniform batch."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int,
                 batch: int) -> None:
        cupy, cudss = cupy_module(), _cudss()
        self.size, self.batch = size, batch
        self._indptr = cupy.asarray(indptr, dtype=cupy.int32)
        self._indices = cupy.asarray(indices, dtype=cupy.int32)
        nnz = int(indices.size)
        self.values = cupy.zeros((batch, nnz))
        self._rhs = cupy.zeros((batch, size))
        self._solution = cupy.zeros((batch, size))
        self._handle = cudss.create()
        cudss.set_stream(self._handle, cupy.cuda.get_current_stream().ptr)
        self._config = cudss.config_create()
        configure(self._config, batch_settings(batch))
        self._data = cudss.data_create(self._handle)
        t = cudss.DataType
        self._A = cudss.matrix_create_csr(
            size, size, nnz, self._indptr.data.ptr, 0, self._indices.data.ptr,
            self.values.data.ptr, t.R_32I, t.R_32I, t.R_64F, cudss.MatrixType.SYMMETRIC,
            cudss.MatrixViewType.LOWER, cudss.IndexBase.ZERO)
        self._b = cudss.matrix_create_dn(size, 1, size, self._rhs.data.ptr, t.R_64F,
                                         cudss.Layout.COL_MAJOR)
        self._x = cudss.matrix_create_dn(size, 1, size, self._solution.data.ptr, t.R_64F,
                                         cudss.Layout.COL_MAJOR)
        self._finalizer = weakref.finalize(self, _destroy, cudss, self._handle, self._config,
                                           self._data, (self._A, self._b, self._x))
        self._execute(cudss.Phase.ANALYSIS)

    def _execute(self, phase: Any) -> None:
        _cudss().execute(self._handle, phase, self._config, self._data, self._A, self._x,
                         self._b)

    def factorize(self, values: Any) -> None:
        """Refactor every member with ``values`` ``(batch, nnz)`` (copied in place)."""
        self.values[...] = values
        self._execute(_cudss().Phase.FACTORIZATION)

    def solve(self, rhs: Any) -> Any:
        """``(batch, size)`` solutions."""
        self._rhs[...] = rhs
        self._execute(_cudss().Phase.SOLVE)
        return self._solution.copy()

    def inertia(self) -> np.ndarray | None:
        """``(batch, 2)`` pivot counts where cuDSS reports them per member, else None."""
        cudss = _cudss()
        out, written = np.zeros(2 * self.batch, np.int32), np.zeros((), np.uint64)
        cudss.data_get(self._handle, self._data, cudss.DataParam.INERTIA, out.ctypes.data,
                       out.nbytes, written.ctypes.data)
        if int(written) != out.nbytes:
            return None
        return out.reshape(self.batch, 2).astype(np.int64)


class SingleLDL:
    """LDLᵀ without pivoting of one symmetric matrix (CSC upper triangle = CSR lower
    triangle) by ``nvmath.sparse.advanced.DirectSolver``, planned once."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int) -> None:
        cupy = cupy_module()
        import cupyx.scipy.sparse as csp
        from nvmath.bindings.cudss import PivotType
        from nvmath.sparse.advanced import (
            DirectSolver,
            DirectSolverMatrixType,
            DirectSolverMatrixViewType,
            DirectSolverOptions,
        )

        self.size, self.batch = size, 1
        self.values = cupy.zeros(int(indices.size))
        self._matrix = csp.csr_matrix((self.values, cupy.asarray(indices, dtype=cupy.int32),
                                       cupy.asarray(indptr, dtype=cupy.int32)),
                                      shape=(size, size))
        self._rhs = cupy.zeros((size, 1), order="F")
        options = DirectSolverOptions(sparse_system_type=DirectSolverMatrixType.SYMMETRIC,
                                      sparse_system_view=DirectSolverMatrixViewType.LOWER)
        self._solver = DirectSolver(self._matrix, self._rhs, options=options)
        self._solver.plan_config.pivot_type = PivotType.PIVOT_NONE
        self._solver.plan()
        self._info = None
        self._finalizer = weakref.finalize(self, self._solver.free)

    def factorize(self, values: Any) -> None:
        """Refactor with ``values`` ``(1, nnz)``, written into the matrix in place."""
        self._matrix.data[...] = values[0]
        self._info = self._solver.factorize()

    def solve(self, rhs: Any) -> Any:
        """``(1, size)`` solution."""
        self._rhs[:, 0] = rhs[0]
        return self._solver.solve().reshape(1, -1)

    def inertia(self) -> np.ndarray:
        """``(1, 2)`` pivot counts (``-1`` where cuDSS reports an error)."""
        if self._info is None or self._info.info != 0:
            return np.full((1, 2), -1, np.int64)
        return np.asarray(self._info.inertia, np.int64).reshape(1, 2)


def symmetric_solver(indptr: np.ndarray, indices: np.ndarray, size: int, batch: int) -> Any:
    """The engine's symmetric factory: :class:`SingleLDL` for one system, else
    :class:`UniformBatchLDL`."""
    if batch == 1:
        return SingleLDL(indptr, indices, size)
    return UniformBatchLDL(indptr, indices, size, batch)


def transpose_map(indptr: np.ndarray, indices: np.ndarray, size: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR arrays ``(indptr, indices)`` of a square matrix given by its CSC
    pattern, and for each CSR entry the position of its value in the CSC arrays."""
    positions = sp.csc_matrix((np.arange(1, indices.size + 1, dtype=np.float64), indices,
                               indptr), shape=(size, size)).tocsr()
    positions.sort_indices()
    return (positions.indptr.astype(np.int64), positions.indices.astype(np.int64),
            positions.data.astype(np.int64) - 1)


class _GeneralLU:
    """LU with pivoting of one matrix given as CSR arrays, by ``DirectSolver``."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int) -> None:
        cupy = cupy_module()
        import cupyx.scipy.sparse as csp
        from nvmath.sparse.advanced import DirectSolver

        self.values = cupy.zeros(int(indices.size))
        self._matrix = csp.csr_matrix((self.values, cupy.asarray(indices, dtype=cupy.int32),
                                       cupy.asarray(indptr, dtype=cupy.int32)),
                                      shape=(size, size))
        self._rhs = cupy.zeros((size, 1), order="F")
        self._solver = DirectSolver(self._matrix, self._rhs)
        self._solver.plan()
        self._info = None
        self._finalizer = weakref.finalize(self, self._solver.free)

    def factorize(self, values: Any) -> None:
        self._matrix.data[...] = values
        self._info = self._solver.factorize()

    def solve(self, rhs: Any) -> Any:
        self._rhs[:, 0] = rhs
        return self._solver.solve()[:, 0]

    def pivot_ratio(self) -> float:
        if self._info is None or self._info.info != 0:
            return 0.0
        pivots = np.abs(np.asarray(self._info.diag.get() if hasattr(self._info.diag, "get")
                                   else self._info.diag))
        if not pivots.size or not np.all(np.isfinite(pivots)) or pivots.max() == 0:
            return 0.0
        return float(pivots.min() / pivots.max())


class GeneralLU:
    """The engine's general factory: LU of ``batch`` matrices on K's CSC pattern, one
    ``DirectSolver`` per member and direction (see the module docstring)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int,
                 batch: int) -> None:
        self.size, self.batch = size, batch
        self._pattern = (indptr, indices)
        self._transposed = [_GeneralLU(indptr, indices, size) for _ in range(batch)]
        self._forward: list[_GeneralLU] | None = None
        self._csr = transpose_map(indptr, indices, size)
        self._values = None

    def factorize(self, values: Any) -> None:
        """Factor K' of every member (K itself on the first solve that needs it)."""
        self._values = values
        for member, lu in enumerate(self._transposed):
            lu.factorize(values[member])
        self._forward = None

    def _factor_forward(self) -> list[_GeneralLU]:
        cupy = cupy_module()
        indptr, indices, position = self._csr
        order = cupy.asarray(position)
        forward = []
        for member in range(self.batch):
            lu = _GeneralLU(indptr, indices, self.size)
            lu.factorize(cupy.take(self._values[member], order))
            forward.append(lu)
        return forward

    def solve(self, rhs: Any, transpose: bool = False) -> Any:
        """``(batch, size)`` solutions with K (or K')."""
        cupy = cupy_module()
        if transpose:
            solvers = self._transposed
        else:
            if self._forward is None:
                self._forward = self._factor_forward()
            solvers = self._forward
        return cupy.stack([lu.solve(rhs[member]) for member, lu in enumerate(solvers)])

    def pivot_ratio(self) -> np.ndarray:
        """``(batch,)``: smallest over largest pivot magnitude (0 where singular)."""
        return np.array([lu.pivot_ratio() for lu in self._transposed])


general_solver = GeneralLU
