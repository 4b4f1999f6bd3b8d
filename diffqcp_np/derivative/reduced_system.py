"""The derivative system as a symmetric quasi-definite matrix, factored by LDLᵀ.

``K = [[P, A'D], [−A, I−D]]`` is not symmetric, but multiplying its second block row by
``D`` makes it so. With ``Π₀`` the projector onto the null space of ``D`` (where that
row says ``Π₀ dv = Π₀(r₂ + A dx)`` outright) and ``E = D(I−D) + Π₀``,

    M = [[P, A'D], [DA, −E]]

is symmetric, has the sparsity of an interior-point solver's KKT matrix (an active
inequality row of A appears once, an inactive one not at all) and is quasi-definite up
to its zero diagonal entries, so a sparse LDLᵀ with a fill-reducing ordering (QDLDL's
algorithm and an AMD ordering, see :mod:`._ldl`; the symbolic analysis is reused for
every M with the same pattern) and a
small static regularisation factors it; iterative refinement against the exact M (or K)
removes the regularisation's error. Both K and K' solves reduce to M solves:

* ``K [dx; dv] = [r₁; r₂]``: ``M [dx; t] = [r₁; −D r₂]``, ``dv = t + Π₀(r₂ + A dx)``;
* ``K' [z₁; z₂] = [r₁; r₂]``: ``M [z₁; u] = [r₁ + A'Π₀ r₂; r₂ − Π₀ r₂]``,
  ``z₂ = Π₀ r₂ − D u``.

Large boundary SOC blocks enter M through their diagonal part only; the rank-two rest
``W S W'`` is applied with the Sherman–Morrison–Woodbury formula, so no cone block is
ever densified.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp

from .._fast_checks import largest_magnitude, nonzero_positions
from .._sparse import CSCArrays
from ..cones.projection import ConeJacobian
from ..cones.reduced import LiftedSOC, ReducedParts, reduced_parts
from ._block_solve_numba import block_refined_solve, kkt_product
from ._diagonal_solve_numba import diagonal_refined_solve
from ._ldl import LDLFactor, ZeroPivotError, factorize
from ._reduced_numba import (
    assemble_upper,
    assemble_upper_diagonal,
    equilibrating_scale,
    probe_vector,
    scaled_values,
    shifted_diagonal,
    symmetric_upper_matvec,
)
from .norms import refine, vector_norm

#: Static regularisations of M tried in turn, relative to its largest entry (at least 1).
#: M is quasi-definite once regularised, but rounding can still produce a zero pivot
#: in the LDLᵀ (which does not pivot) when P is singular, as in LPs; a larger value cures it.
REGULARIZATIONS = (1e-9, 1e-7, 1e-5)


class FactorizationError(RuntimeError):
    """The LDLᵀ factorisation met a zero pivot at every regularisation tried."""


def _two_by_two_inverse(C: np.ndarray) -> np.ndarray:
    """Inverses of stacked symmetric 2×2 matrices."""
    det = C[:, 0, 0] * C[:, 1, 1] - C[:, 0, 1] * C[:, 1, 0]
    inv = np.empty_like(C)
    inv[:, 0, 0], inv[:, 1, 1] = C[:, 1, 1] / det, C[:, 0, 0] / det
    inv[:, 0, 1], inv[:, 1, 0] = -C[:, 0, 1] / det, -C[:, 1, 0] / det
    return inv


def _low_rank_matrix(lifted: LiftedSOC) -> np.ndarray:
    """``S = [[0, C], [C, −F]]`` (block diagonal C, F), dense ``4r × 4r``: the lifted
    SOC blocks add ``W S W'`` to M."""
    C, F = lifted.couplings()
    C_dense, F_dense = la.block_diag(*C), la.block_diag(*F)
    return np.block([[np.zeros_like(C_dense), C_dense], [C_dense, -F_dense]])


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
    A : scipy.sparse.csc_matrix
        The constraint matrix.
    jacobian : ConeJacobian
        ``D = DΠ_{K*}(y − s)``.
    transpose_A : callable
        Returns ``A'`` in CSC form (the caller's cached copy); called only where A' is
        needed (D not diagonal).
    """

    def __init__(self, P: sp.csc_matrix | None, A: sp.csc_matrix, jacobian: ConeJacobian,
                 transpose_A: Callable[[], sp.csc_matrix]) -> None:
        self.A, self.jacobian = A, jacobian
        self._transpose_A = transpose_A
        self.m, self.n = A.shape
        self.parts: ReducedParts = reduced_parts(jacobian)
        self._P_arrays = ((np.zeros(self.n + 1, np.int32), np.zeros(0, np.int32), np.zeros(0))
                          if P is None else (P.indptr, P.indices, P.data))
        # Rows where D vanishes are in D's null space: decoupled from M (their part of
        # the answer comes from Π₀), so M keeps only the others.
        diagonal = self.parts.D.diagonal
        self.kept = (nonzero_positions(diagonal) if diagonal is not None
                     else np.flatnonzero(np.diff(self.parts.D.indptr)))
        self._ldl = self._factor()
        self._woodbury = None
        if self.parts.lifted.count:
            self._low_rank = _low_rank_matrix(self.parts.lifted)
            self._woodbury = self._woodbury_terms()

    @property
    def AT(self) -> sp.csc_matrix:
        """``A'`` in CSC form (built by the caller on first use)."""
        return self._transpose_A()

    def _upper_matrix(self) -> CSCArrays:
        """The unregularised upper triangle of M, canonical, with every diagonal entry
        stored (last in its column)."""
        n, P_arrays = self.n, self._P_arrays
        parts = self.parts
        if parts.D.diagonal is not None:
            A = self.A
            return CSCArrays(*assemble_upper_diagonal(
                n, *P_arrays, A.indptr, A.indices, A.data, parts.D.diagonal,
                parts.E.diagonal, self.kept))
        AT = self.AT
        indptr, indices, data = assemble_upper(
            n, *P_arrays, AT.indptr, AT.indices, AT.data,
            parts.D.indptr, parts.D.indices, parts.D.data,
            parts.E.indptr, parts.E.indices, parts.E.data, self.kept)
        return CSCArrays(indptr, indices, data)

    def _factor(self) -> LDLFactor:
        """LDLᵀ of M regularised by ``±δ``, ``δ = REGULARIZATIONS[i] · max(1, max|M_ij|)``,
        with the smallest one that meets no zero pivot. The symbolic analysis (AMD
        ordering, elimination tree) is shared by every M with the same pattern.

        Raises
        ------
        FactorizationError
            If every regularisation in ``REGULARIZATIONS`` meets a zero pivot.
        """
        self._upper = upper = self._upper_matrix()
        self._scale = None
        largest = max(1.0, largest_magnitude(upper.data))
        factor, self.regularization = self._first_factor(upper.data, largest)
        if factor is None:
            raise FactorizationError(
                "zero pivot in the reduced system at every regularisation")
        return factor

    def _first_factor(self, values: np.ndarray,
                      largest: float) -> tuple[LDLFactor | None, float]:
        """LDLᵀ of M's pattern with ``values`` regularised by ``±δ`` (``+`` on the first n
        diagonal entries), ``δ = REGULARIZATIONS[i] · largest`` for the first ``i`` that
        meets no zero pivot; ``(None, 0)`` if every one does."""
        for regularization in REGULARIZATIONS:
            delta = regularization * largest
            try:
                return factorize(self._regularized(values, delta)), delta
            except ZeroPivotError:
                continue
        return None, 0.0

    def _regularized(self, values: np.ndarray, delta: float) -> CSCArrays:
        """M's pattern with ``values``, ``+δ`` on the first n diagonal entries and ``−δ``
        on the rest."""
        upper = self._upper
        return CSCArrays(upper.indptr, upper.indices,
                         shifted_diagonal(upper.indptr, values, self.n, delta))

    def factored_matrix(self) -> CSCArrays:
        """The upper triangle that was factored: M regularised by ``±δ``, or ``S M S`` so
        regularised after :meth:`equilibrate` (whose factor was then turned into M's)."""
        upper = self._upper
        values = (upper.data if self._scale is None
                  else scaled_values(upper.indptr, upper.indices, upper.data, self._scale))
        return self._regularized(values, self.regularization)

    def equilibrate(self) -> bool:
        """Factor M again with a symmetric diagonal scaling ``S M S`` (one pass of Ruiz's
        equilibration, :func:`~._reduced_numba.equilibrating_scale`), regularised by
        ``±δ`` relative to the scaled matrix; keep that factor (turned into one of M, see
        :meth:`LDLFactor.unscale`) if the scaled M does not look singular
        (:meth:`nearly_singular`).

        For an M whose rows differ in scale (a large P beside unit constraint rows), a
        regularisation relative to ``max|M|`` swamps the small rows and makes M look
        singular; scaled, it is relative to each row. Returns whether the scaled factor
        was kept.
        """
        upper = self._upper
        scale = equilibrating_scale(upper.indptr, upper.indices, upper.data)
        factor, delta = self._first_factor(
            scaled_values(upper.indptr, upper.indices, upper.data, scale), 1.0)
        if factor is None:
            return False
        factor.unscale(scale)
        previous = self._ldl, self._scale, self.regularization, self._woodbury
        self._ldl, self._scale, self.regularization = factor, scale, delta
        if self.parts.lifted.count:
            self._woodbury = self._woodbury_terms()
        if not self.nearly_singular():
            return True
        self._ldl, self._scale, self.regularization, self._woodbury = previous
        return False

    def _woodbury_terms(self) -> tuple[sp.csc_matrix, sp.csr_matrix, np.ndarray, tuple]:
        """``W``, ``W'`` (kept: SciPy builds a transpose object per ``W.T``), ``M₀⁻¹ W``
        and the LU factors of the capacitance ``S⁻¹ + W' M₀⁻¹ W``."""
        lifted = self.parts.lifted
        U = lifted.basis
        W = sp.bmat([[(self.AT @ U).tocsc(), None], [None, U[self.kept]]], format="csc")
        dense_W = W.toarray()
        Z = np.column_stack([self._ldl.solve(col) for col in dense_W.T])
        WT = W.T
        capacitance = _low_rank_inverse(lifted) + WT @ Z
        return W, WT, Z, la.lu_factor(capacitance, check_finite=False)

    def solve_symmetric(self, rhs: np.ndarray) -> np.ndarray:
        """Approximately solve ``M z = rhs``."""
        z = self._ldl.solve(rhs)
        if self._woodbury is not None:
            _, WT, Z, lu = self._woodbury
            z = z - Z @ la.lu_solve(lu, WT @ z, check_finite=False)
        return z

    def refined_solve_symmetric(self, rhs: np.ndarray, max_steps: int,
                                tol: float) -> tuple[np.ndarray, float]:
        """Solve ``M z = rhs`` refined against the exact M (see
        :func:`~diffqcp_np.derivative.norms.refine`); one compiled call when no lifted SOC
        blocks need the Woodbury correction. Returns ``z`` and its relative residual."""
        if self._woodbury is None:
            return self._ldl.refined_solve(self._upper, rhs, max_steps, tol)
        return refine(self.solve_symmetric, self.matvec_symmetric, rhs, max_steps, tol)

    def refined_solve(self, r: np.ndarray, transpose: bool, max_steps: int,
                      tol: float) -> tuple[np.ndarray, float]:
        """Solve ``K z = r`` (or ``K' z = r``) through M, refined against the exact M.
        Returns ``z`` and the relative residual of the M system, which is K's where the
        reduction is :attr:`exact`.

        One compiled call without lifted SOC blocks (:func:`~._diagonal_solve_numba.
        diagonal_refined_solve` for a diagonal D, :func:`~._block_solve_numba.
        block_refined_solve` otherwise); else :meth:`reduce`,
        :meth:`refined_solve_symmetric` and :meth:`recover`.
        """
        parts, upper, A = self.parts, self._upper, self.A
        if parts.D.diagonal is not None:
            return diagonal_refined_solve(*self._ldl.arrays, upper.indptr, upper.indices,
                                          upper.data, A.indptr, A.indices, A.data,
                                          parts.D.diagonal, self.kept, r, transpose,
                                          max_steps, tol)
        if self.fused:
            D, null = parts.D, parts.null
            return block_refined_solve(*self._ldl.arrays, upper.indptr, upper.indices,
                                       upper.data, A.indptr, A.indices, A.data, D.indptr,
                                       D.indices, D.data, null.indptr, null.indices,
                                       null.data, self.kept, r, transpose, max_steps, tol)
        rhs, carried = self.reduce(r, transpose)
        sol, residual = self.refined_solve_symmetric(rhs, max_steps, tol)
        return self.recover(sol, carried, transpose), residual

    def nearly_singular(self) -> bool:
        """Whether M is singular up to its regularisation.

        One step of inverse iteration from a pseudo-random unit vector: a singular M answers
        with a norm of about ``1/(δ √N)`` (δ the regularisation), a nonsingular one with
        at most ``1/|λ_min(M)|``; a norm above ``10⁻⁴/δ`` flags the matrix (the caller
        then tries :meth:`equilibrate`, and decides with a pivoting LU of K if it is
        still flagged). After :meth:`equilibrate` the test runs on the scaled ``S M S``.
        """
        probe = probe_vector(self.n + self.kept.size, 0)
        if self._scale is None:
            growth = vector_norm(self.solve_symmetric(probe))
        else:  # (S M S)⁻¹ p = S⁻¹ M⁻¹ S⁻¹ p
            growth = vector_norm(self.solve_symmetric(probe / self._scale) / self._scale)
        return not growth < 1e-4 / self.regularization

    def matvec_symmetric(self, z: np.ndarray) -> np.ndarray:
        """``M z`` with the exact (unregularised) M."""
        upper = self._upper
        out = symmetric_upper_matvec(upper.indptr, upper.indices, upper.data, z)
        if self._woodbury is not None:
            W, WT = self._woodbury[:2]
            out += W @ (self._low_rank @ (WT @ z))
        return out

    @property
    def fused(self) -> bool:
        """Whether :meth:`refined_solve` and :meth:`product` are single compiled calls
        (:mod:`._block_solve_numba`): where D's sparse parts hold all of D (no lifted SOC
        blocks) and are cheap to apply (no PSD blocks, whose dense D block of
        ``k²(k+1)²/4`` entries costs far more than their structured product)."""
        return self._woodbury is None and not self.jacobian.spec.psd

    def product(self, z: np.ndarray, transpose: bool) -> np.ndarray:
        """``K z`` (or ``K' z``), compiled; only where :attr:`fused` (D's sparse parts
        then hold all of D)."""
        D, A = self.parts.D, self.A
        return kkt_product(*self._P_arrays, A.indptr, A.indices, A.data, D.indptr,
                           D.indices, D.data, z, transpose)

    @property
    def exact(self) -> bool:
        """Whether solving M exactly solves K (no cone block's null space was estimated
        from numerically computed eigenvalues); then refinement can run on M."""
        return self.parts.exact

    def _expand(self, kept_values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.m)
        out[self.kept] = kept_values
        return out

    def reduce(self, r: np.ndarray, transpose: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The right-hand side of the M system equivalent to ``K z = r`` (or ``K' z = r``),
        and what :meth:`recover` needs besides M's solution."""
        n = self.n
        r1, r2 = r[:n], r[n:]
        if not r2.any():  # e.g. a cotangent of x alone
            return np.concatenate([r1, np.zeros(self.kept.size)]), np.zeros(self.m)
        rhs = np.empty(n + self.kept.size)
        if transpose:
            null_r2 = self.parts.project_null(r2)
            np.add(r1, self.AT @ null_r2, out=rhs[:n])
            np.subtract(r2[self.kept], null_r2[self.kept], out=rhs[n:])
            return rhs, null_r2
        rhs[:n] = r1
        np.negative(self.jacobian.matvec(r2)[self.kept], out=rhs[n:])
        return rhs, r2

    def recover(self, sol: np.ndarray, carried: np.ndarray,
                transpose: bool = False) -> np.ndarray:
        """The solution of ``K z = r`` (or ``K' z = r``) from that of the M system."""
        n = self.n
        out = np.empty(n + self.m)
        out[:n] = sol[:n]
        if transpose:
            np.subtract(carried, self.jacobian.matvec(self._expand(sol[n:])), out=out[n:])
        else:
            np.add(self._expand(sol[n:]), self.parts.project_null(carried + self.A @ sol[:n]),
                   out=out[n:])
        return out

    def solve(self, r: np.ndarray) -> np.ndarray:
        """Approximately solve ``K z = r``."""
        rhs, carried = self.reduce(r)
        return self.recover(self.solve_symmetric(rhs), carried)

    def solve_transpose(self, r: np.ndarray) -> np.ndarray:
        """Approximately solve ``K' z = r``."""
        rhs, carried = self.reduce(r, transpose=True)
        return self.recover(self.solve_symmetric(rhs), carried, transpose=True)
