"""Problems that share their structure, given as values: patterns and prepared solves.

The problems of a same-structure batch (one cone dict, one stored pattern of ``A``, one
pattern of ``P``) are solved one by one with the same solver, settings and cones
(:class:`~diffqcp_np.solvers.BatchSolver`). They are given as values on
:class:`SharedPatterns`. A solver module may define
``prepare(cones, patterns, verbose, **settings)``, which does once what only depends on
the structure and returns a :data:`PreparedSolve`; for the others, :func:`generic_prepare`
builds each problem's matrices (cheaply, on the shared patterns) and calls the module's
``solve``. Either way the result is exactly that of ``solve_cone_program`` on the same
problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Optional

import numpy as np
import scipy.sparse as sp

from diffqcp_np.cones.spec import ConeSpec
from diffqcp_np.solvers.base import CSCFactory, SolverResult, drop_zeros

#: ``solve(A, b, c, P, warm_start, raise_on_error) -> SolverResult``: one problem as values
#: (``A`` on the shared pattern, ``P`` the upper triangle's values or None), its warm
#: start already checked.
PreparedSolve = Callable[..., SolverResult]


@dataclass(frozen=True)
class SharedPatterns:
    """The patterns shared by a batch: ``A``'s, and the upper triangle of ``P``'s.

    Attributes
    ----------
    shape : tuple of int
        ``(m, n)``, the shape of ``A``.
    A_indices, A_indptr : ndarray
        Canonical CSC pattern of ``A`` (explicit zeros included).
    P_indices, P_indptr : ndarray or None
        Canonical CSC pattern of the upper triangle of the symmetric ``P`` (None without
        ``P``).
    drop_P_zeros : bool
        Whether a problem's zeros among ``P``'s values are left out of the matrix the
        solver receives, as the single-problem path's symmetrisation leaves them out
        (:class:`~diffqcp_np.derivative.QuadraticTerm`: for upper storage, or a full
        ``P`` whose pattern is not symmetric).
    """

    shape: tuple[int, int]
    A_indices: np.ndarray
    A_indptr: np.ndarray
    P_indices: Optional[np.ndarray] = None
    P_indptr: Optional[np.ndarray] = None
    drop_P_zeros: bool = True

    def P_arrays(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(data, indices, indptr)`` of a problem's upper triangle of ``P``."""
        if self.drop_P_zeros and not values.all():
            return drop_zeros(values, self.P_indices, self.P_indptr)
        return values, self.P_indices, self.P_indptr


class SharedMatrices:
    """Builds a batch member's ``A`` and ``P`` (upper triangle) as SciPy CSC matrices."""

    def __init__(self, patterns: SharedPatterns) -> None:
        m, n = patterns.shape
        self.patterns = patterns
        self._A = CSCFactory(patterns.A_indices, patterns.A_indptr, (m, n))
        self._P = (None if patterns.P_indices is None
                   else CSCFactory(patterns.P_indices, patterns.P_indptr, (n, n)))

    def A(self, values: np.ndarray) -> sp.csc_matrix:
        """``A`` on the shared pattern."""
        return self._A.one(values)

    def P(self, values: Optional[np.ndarray]) -> Optional[sp.csc_matrix]:
        """The upper triangle of ``P`` (None for None; see :meth:`SharedPatterns.P_arrays`)."""
        if values is None:
            return None
        data, indices, indptr = self.patterns.P_arrays(values)
        if data is values:
            return self._P.one(values)
        n = self.patterns.shape[1]
        return sp.csc_matrix((data, indices, indptr), shape=(n, n))


def generic_prepare(module: ModuleType, cones: ConeSpec, patterns: SharedPatterns,
                    verbose: bool, settings: dict[str, Any]) -> PreparedSolve:
    """A prepared solve for a module without ``prepare``: its ``solve`` on built matrices."""
    matrices = SharedMatrices(patterns)

    def solve(A, b, c, P, warm_start, raise_on_error):
        return module.solve(matrices.A(A), b, c, cones, P=matrices.P(P), warm_start=warm_start,
                            verbose=verbose, raise_on_error=raise_on_error, **settings)

    return solve
