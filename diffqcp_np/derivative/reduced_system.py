"""The derivative system as a symmetric quasi-definite matrix, factored by LDLᵀ.

``K = [[P, A'D], [−A, I−D]]`` is not symmetric, but multiplying its second block row by
``D`` makes it so. With ``Π₀`` the projector onto the null space of ``D`` (where that
row says ``Π₀ dv = Π₀(r₂ + A dx)`` outright) and ``E = D(I−D) + Π₀``,

    M = [[P, A'D], [DA, −E]]

is symmetric, has the sparsity of an interior-point solver's KKT matrix (an active
inequality row of A appears once, an inactive one not at all) and is quasi-definite up
to its zero diagonal entries, so a sparse LDLᵀ with a fill-reducing ordering (QDLDL,
AMD) and a small static regularisation factors it; iterative refinement against the
exact K removes the regularisation's error. Both K and K' solves reduce to M solves:

* ``K [dx; dv] = [r₁; r₂]``: ``M [dx; t] = [r₁; −D r₂]``, ``dv = t + Π₀(r₂ + A dx)``;
* ``K' [z₁; z₂] = [r₁; r₂]``: ``M [z₁; u] = [r₁ + A'Π₀ r₂; r₂ − Π₀ r₂]``,
  ``z₂ = Π₀ r₂ − D u``.

Large boundary SOC blocks enter M through their diagonal part only; the rank-two rest
``W S W'`` is applied with the Sherman–Morrison–Woodbury formula, so no cone block is
ever densified.
"""

from __future__ import annotations

import numpy as np
import qdldl
import scipy.linalg as la
import scipy.sparse as sp

from ..cones.projection import ConeJacobian
from ..cones.reduced import LiftedSOC, ReducedParts, reduced_parts
from .norms import vector_norm

#: Static regularisations of M tried in turn, relative to its largest entry (at least 1).
#: M is quasi-definite once regularised, but rounding can still produce a zero pivot
#: in QDLDL (which does not pivot) when P is singular, as in LPs; a larger value cures it.
REGULARIZATIONS = (1e-9, 1e-7, 1e-5)


class FactorizationError(RuntimeError):
    """QDLDL met a zero pivot at every regularisation tried."""


def _two_by_two_inverse(C: np.ndarray) -> np.ndarray:
    """Inverses of stacked symmetric 2×2 matrices."""
    det = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] * C[:, 1, 0]
    inv = np.empty_like(C)
    inv[:, 0, 0], inv[:, 1, 1] = C[:, 1, 1] / det, C[:, 0, 0] / det
    inv[:, 0, 1], inv[:, 1, 0] = -C[:, 0, 1] / det, -C[:, 1, 0] / det
    return inv


def _low_rank_inverse(lifted: LiftedSOC) -> np.ndarray:
    """``S⁻¹`` for ``S = [[0, C], [C, −F]]`` (block diagonal C, F), dense ``4r × 4r``.

    ``S⁻¹ = [[C⁻¹ F C⁻¹, C⁻¹], [C⁻¹, 0]]``.
    """
    C, F = lifted.couplings()
    C_inv = _two_by_two_inverse(C)
    r2 = 2 * lifted.count
    C_inv_dense = la.block_diag(*C_inv)
    top_left = la.block_diag(*(C_inv @ F @ C_inv))
    return np.block([[top_left, C_inv_dense], [C_inv_dense, np.zeros((r2, r2))]])


class ReducedSystem:
    """Solves with K and K' through an LDLᵀ factorisation of the symmetric M.

    The answers are accurate to about the regularisation times the condition number of
    M; the caller refines them against the exact K.

    Parameters
    ----------
    P : scipy.sparse.csc_matrix or None
        The full symmetric quadratic term (``n × n``).
    A, AT : scipy.sparse.csc_matrix
        The constraint matrix and its transpose.
    jacobian : ConeJacobian
        ``D = DΠ_{K*}(y − s)``.
    """

    def __init__(self, P: sp.csc_matrix | None, A: sp.csc_matrix, AT: sp.csc_matrix,
                 jacobian: ConeJacobian) -> None:
        self.A, self.AT, self.jacobian = A, AT, jacobian
        self.m, self.n = A.shape
        self.parts: ReducedParts = reduced_parts(jacobian)
        # Rows where D vanishes are in D's null space: decoupled from M (their part of
        # the answer comes from Π₀), so M keeps only the others.
        self.kept = np.flatnonzero(np.diff(self.parts.D.indptr))
        self._ldl = self._factor(P)
        self._woodbury = self._woodbury_terms() if self.parts.lifted.count else None

    def _upper_matrix(self, P: sp.csc_matrix | None, delta: float) -> sp.csc_matrix:
        """The upper triangle of M regularised by ``±delta`` (``+`` on the ``x`` block),
        canonical, with every diagonal entry stored (last in its column)."""
        n, k = self.n, self.kept.size
        top = sp.csc_matrix((n, n)) if P is None else sp.triu(P, format="csc")
        coupling = (self.AT @ self.parts.D[:, self.kept]).tocsc()
        bottom = sp.triu(self.parts.E[self.kept][:, self.kept], format="csc")
        upper = sp.bmat([[top + delta * sp.identity(n, format="csc"), coupling],
                         [None, -bottom - delta * sp.identity(k, format="csc")]], format="csc")
        upper.sum_duplicates()  # QDLDL needs canonical CSC (sorted, no duplicates)
        return upper

    def _factor(self, P: sp.csc_matrix | None) -> qdldl.Solver:
        """QDLDL of M regularised by ``±δ``, ``δ = REGULARIZATIONS[i] · max(1, max|M_ij|)``,
        with the smallest one that meets no zero pivot.

        Raises
        ------
        FactorizationError
            If every regularisation in ``REGULARIZATIONS`` meets a zero pivot.
        """
        first = REGULARIZATIONS[0]
        upper = self._upper_matrix(P, first)
        diagonal = upper.indptr[1:] - 1
        signs = np.concatenate([np.ones(self.n), -np.ones(self.kept.size)])
        unregularized = upper.data[diagonal] - signs * first
        upper.data[diagonal] = unregularized
        scale = max(1.0, float(np.abs(upper.data).max()))
        for regularization in REGULARIZATIONS:
            # Only the diagonal changes between attempts.
            self.regularization = regularization * scale
            upper.data[diagonal] = unregularized + signs * self.regularization
            try:
                return qdldl.Solver(upper, upper=True)
            except RuntimeError:
                continue
        raise FactorizationError("QDLDL met a zero pivot in the reduced system")

    def _woodbury_terms(self) -> tuple[sp.csc_matrix, np.ndarray, tuple]:
        """``W``, ``M₀⁻¹ W`` and the LU factors of the capacitance ``S⁻¹ + W' M₀⁻¹ W``."""
        lifted = self.parts.lifted
        U = lifted.basis
        W = sp.bmat([[(self.AT @ U).tocsc(), None], [None, U[self.kept]]], format="csc")
        dense_W = W.toarray()
        Z = np.column_stack([self._ldl.solve(np.ascontiguousarray(col)) for col in dense_W.T])
        capacitance = _low_rank_inverse(lifted) + W.T @ Z
        return W, Z, la.lu_factor(capacitance, check_finite=False)

    def solve_symmetric(self, rhs: np.ndarray) -> np.ndarray:
        """Approximately solve ``M z = rhs``."""
        z = self._ldl.solve(np.ascontiguousarray(rhs))
        if self._woodbury is not None:
            W, Z, lu = self._woodbury
            z = z - Z @ la.lu_solve(lu, W.T @ z, check_finite=False)
        return z

    def nearly_singular(self, seed: int = 0) -> bool:
        """Whether M is singular up to its regularisation.

        One step of inverse iteration from a random unit vector: a singular M answers
        with a norm of about ``1/(δ √N)`` (δ the regularisation), a nonsingular one with
        at most ``1/|λ_min(M)|``; a norm above ``10⁻⁴/δ`` flags the matrix (the caller
        then decides with a pivoting LU of K).
        """
        z = np.random.default_rng(seed).standard_normal(self.n + self.kept.size)
        growth = vector_norm(self.solve_symmetric(z / vector_norm(z)))
        return not growth < 1e-4 / self.regularization

    def _expand(self, kept_values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.m)
        out[self.kept] = kept_values
        return out

    def solve(self, r: np.ndarray) -> np.ndarray:
        """Approximately solve ``K z = r``."""
        n = self.n
        r1, r2 = r[:n], r[n:]
        rhs2 = -self.jacobian.matvec(r2)[self.kept]
        sol = self.solve_symmetric(np.concatenate([r1, rhs2]))
        dx, t = sol[:n], self._expand(sol[n:])
        return np.concatenate([dx, t + self.parts.project_null(r2 + self.A @ dx)])

    def solve_transpose(self, r: np.ndarray) -> np.ndarray:
        """Approximately solve ``K' z = r``."""
        n = self.n
        r1, r2 = r[:n], r[n:]
        null_r2 = self.parts.project_null(r2)
        rhs2 = (r2 - null_r2)[self.kept]
        sol = self.solve_symmetric(np.concatenate([r1 + self.AT @ null_r2, rhs2]))
        z1, u = sol[:n], self._expand(sol[n:])
        return np.concatenate([z1, null_r2 - self.jacobian.matvec(u)])
