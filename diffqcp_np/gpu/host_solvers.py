"""Host stand-ins of the cuDSS solvers, with their protocol (see :mod:`.engine`).

They let the device orchestration run, and be tested, on NumPy: the analysis happens
once at construction (an AMD ordering and the symbolic factorisation of
diffqcp_np's LDLᵀ, :mod:`~diffqcp_np.derivative._ldl`), ``factorize(values)`` writes the
batch-major values into the solver's own buffer and factors every member without
pivoting (a zero pivot fails that member, as cuDSS's ``PIVOT_NONE`` would give a wrong
inertia), and the counters ``analyses``, ``factorizations`` and ``solves`` let tests check
that the analysis is reused. The general solver is SciPy's SuperLU of each member.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._sparse import CSCArrays
from ..derivative._amd_numba import amd_order
from ..derivative._ldl import LDLFactor, LDLSymbolic, ZeroPivotError


class HostSymmetricSolver:
    """LDLᵀ (no pivoting) of ``batch`` symmetric matrices on the CSC upper-triangle
    pattern ``(indptr, indices)`` of size ``size``; every diagonal entry stored."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int,
                 batch: int) -> None:
        self.indptr = np.asarray(indptr, np.int64)
        self.indices = np.asarray(indices, np.int64)
        self.size, self.batch = size, batch
        self.values = np.zeros((batch, self.indices.size))
        pattern = CSCArrays(self.indptr, self.indices, self.values[0])
        self._symbolic = LDLSymbolic.analyse(pattern, amd_order(size, self.indptr,
                                                                self.indices))
        self._factors: list[LDLFactor | None] = [None] * batch
        self.analyses, self.factorizations, self.solves = 1, 0, 0

    def factorize(self, values: np.ndarray) -> None:
        """Factor every member with ``values`` ``(batch, nnz)`` (copied in place)."""
        self.values[...] = values
        self.factorizations += 1
        for b in range(self.batch):
            try:
                self._factors[b] = LDLFactor(
                    CSCArrays(self.indptr, self.indices, self.values[b]), self._symbolic)
            except ZeroPivotError:
                self._factors[b] = None

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``(batch, size)`` solutions (NaN for members whose factorisation failed)."""
        self.solves += 1
        out = np.full((self.batch, self.size), np.nan)
        for b, factor in enumerate(self._factors):
            if factor is not None:
                out[b] = factor.solve(rhs[b])
        return out

    def inertia(self) -> np.ndarray:
        """``(batch, 2)``: positive and negative pivots (``-1`` where failed)."""
        out = np.full((self.batch, 2), -1, np.int64)
        for b, factor in enumerate(self._factors):
            if factor is not None:
                dinv = factor.arrays[3]
                if np.all(np.isfinite(dinv)):
                    out[b] = (np.count_nonzero(dinv > 0), np.count_nonzero(dinv < 0))
        return out


class HostGeneralSolver:
    """Sparse LU with pivoting (SuperLU) of ``batch`` matrices on the CSC pattern
    ``(indptr, indices)`` of size ``size``."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, size: int,
                 batch: int) -> None:
        self.indptr, self.indices = np.asarray(indptr), np.asarray(indices)
        self.size, self.batch = size, batch
        self.values = np.zeros((batch, self.indices.size))
        self._lu: list[Any] = [None] * batch
        self.analyses, self.factorizations, self.solves = 1, 0, 0

    def factorize(self, values: np.ndarray) -> None:
        """Factor every member with ``values`` ``(batch, nnz)`` (copied in place)."""
        self.values[...] = values
        self.factorizations += 1
        for b in range(self.batch):
            matrix = sp.csc_matrix((self.values[b], self.indices, self.indptr),
                                   shape=(self.size, self.size))
            try:
                self._lu[b] = spla.splu(matrix, permc_spec="COLAMD")
            except RuntimeError:  # exactly singular
                self._lu[b] = None

    def solve(self, rhs: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``(batch, size)`` solutions with K (or K'); NaN for singular members."""
        self.solves += 1
        out = np.full((self.batch, self.size), np.nan)
        for b, lu in enumerate(self._lu):
            if lu is not None:
                out[b] = lu.solve(rhs[b], trans="T" if transpose else "N")
        return out

    def pivot_ratio(self) -> np.ndarray:
        """``(batch,)``: smallest over largest magnitude of U's diagonal (0: singular)."""
        out = np.zeros(self.batch)
        for b, lu in enumerate(self._lu):
            if lu is not None:
                pivots = np.abs(lu.U.diagonal())
                if pivots.size and pivots.max() > 0 and np.all(np.isfinite(pivots)):
                    out[b] = pivots.min() / pivots.max()
        return out
