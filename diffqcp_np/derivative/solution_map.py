"""Exact JVP and VJP of the solution map of a cone program with a quadratic objective.

With ``D = DΠ_{K*}(y − s)`` the solution map is the zero of
``(Px + A'Π_{K*}(v) + c, Ax + Π_{K*}(v) − v − b)``, so its derivative solves

    K = [  P    A'D  ]
        [ −A    I−D  ]

JVP: ``K [dx; dv] = −[dP x + dA'y + dc; −dA x + db]``, ``dy = D dv``, ``ds = D dv − dv``.
VJP: ``K' [w1; w2] = −[gx; D(gy + gs) − gs]``, then ``dc = w1``, ``db = w2``,
``dA_ij = y_i w1_j − w2_i x_j`` and ``dP = ½(w1 x' + x w1')`` on the stored patterns.

K is nonsingular exactly where the solution map is differentiable, unlike the singular
homogeneous embedding that diffcp solves by least squares.
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._fast_checks import all_finite, largest_magnitude
from .._sparse import transpose
from .._validation import ProblemData, as_vector
from .._warnings import warn_at_caller
from ..cones.projection import ConeJacobian
from .borrowed_factorization import BorrowedFactorSolver, lender_of
from .linear_solvers import KKTSolver, NonDifferentiableWarning, make_solver
from .patterns import MatrixPattern, QuadraticTerm, gradient_A
from .reduced_system import ReducedSystem

EXACT_MODES = ("direct", "dense", "lsqr", "lsmr")

# Keyword arguments that diffcp's D/DT accept and ignore in the exact modes (LPGD
# parameters, iterative-solver tolerances that diffcp's own examples pass, the mode that
# diffcp's batch wrappers forward); anything else is a TypeError, not a silent typo.
_IGNORED_DIFFCP_KWARGS = ("tau", "rho", "atol", "btol", "maxiter", "iter_lim", "mode")


#: K is assembled and factored dense (LAPACK) where PSD blocks alone fill this fraction of
#: it: a sparse LU of a K that dense spends most of its time on sparse bookkeeping ...
DENSE_SYSTEM_FILL = 0.2
#: ... up to this many rows (K and its LU factors take 2 · 8 N² bytes) ...
DENSE_SYSTEM_MAX_N = 6000
#: ... and wherever K has at most this many rows: a dense LU of so small a K is as fast as
#: the sparse LDLᵀ of its reduced system, and needs no compiled kernel (the first call of
#: a fresh install compiles none of the ordering and factorisation kernels).
SMALL_SYSTEM_N = 64


#: Entries within this fraction of the largest are named in NonDifferentiableWarning.
_NAMED_FRACTION = 1e-3
#: At most this many indices are named per vector.
_NAMED_MAX = 6


def _named_entries(parts: dict[str, np.ndarray]) -> str:
    """``"x[6], s[3, 4]"``: the entries of the named vectors that are not negligible."""
    largest = max((float(np.max(np.abs(v))) for v in parts.values() if v.size), default=0.0)
    names = []
    for name, vector in parts.items():
        index = np.flatnonzero(np.abs(vector) > _NAMED_FRACTION * largest)
        if index.size:
            shown = ", ".join(str(i) for i in index[:_NAMED_MAX])
            names.append(f"{name}[{shown}{', ...' if index.size > _NAMED_MAX else ''}]")
    return ", ".join(names)


def warn_nondifferentiable(defect: np.ndarray, transpose: bool, n: int,
                           cone_matvec: Callable[[np.ndarray], np.ndarray],
                           detail: str) -> None:
    """Warn that the requested product does not exist, and say which part fails.

    K is singular here. A JVP's right-hand side then has a part outside K's range,
    which ``defect`` (the least-squares residual) is, row by row: a perturbation of
    ``c`` (rows of x) and ``b`` (rows of the constraints) that no first-order change of
    the solution can follow. A VJP's residual is a null vector of K, the change of
    ``(x, y, s)`` that the derivative leaves undetermined (``cone_matvec`` applies D to
    its ``v`` part): the cotangents weigh it.
    """
    if transpose:
        dv = defect[n:]
        dy = cone_matvec(dv)
        where = _named_entries({"x": defect[:n], "y": dy, "s": dy - dv})
        what = (f"the cotangents weigh entries of the solution that are not unique at "
                f"this point ({where}), so the gradient asked for does not exist")
    else:
        where = _named_entries({"c": defect[:n], "b": defect[n:]})
        what = (f"the perturbation has a part that no first-order change of the "
                f"solution can follow (it acts as a change of {where}): the solution map "
                "has no directional derivative along it")
    warn_at_caller(f"{what} (the derivative system is singular: {detail}); returning the "
                   "least-squares answer", NonDifferentiableWarning)


class NonFiniteDerivativeWarning(RuntimeWarning):
    """``D`` or ``DT`` computed NaN or Inf from finite input: the perturbations or
    cotangents are too large for the answer to be represented in float64."""


def _check_unused_kwargs(kwargs: dict) -> None:
    unknown = sorted(set(kwargs) - set(_IGNORED_DIFFCP_KWARGS))
    if unknown:
        raise TypeError(f"unexpected keyword arguments {unknown}")


def warn_if_not_finite(name: str, *arrays: np.ndarray) -> None:
    """Warn (:class:`NonFiniteDerivativeWarning`) when an output array holds NaN or Inf.

    Called only where the outputs may have overflowed: when the largest magnitude of the
    solve's answer (:meth:`~.linear_solvers.KKTSolver.solve_with_magnitude`) times how
    much an output can exceed it reaches :data:`_SAFE`.
    """
    if not all(all_finite(a) for a in arrays):
        warn_not_finite(name)


def warn_not_finite(name: str) -> None:
    """Warn that ``name`` returned NaN or Inf (:class:`NonFiniteDerivativeWarning`, at the
    caller's line)."""
    warn_at_caller(f"{name} returned NaN or Inf: the answer is too large for float64 (scale "
                   "the perturbations or cotangents down; the derivative is linear)",
                   NonFiniteDerivativeWarning)


#: Outputs bounded by this cannot have overflowed on the way.
_SAFE = 1e300


class SolutionDerivative:
    """Derivative of the solution map at a solution ``(x, y, s)``, exact modes.

    The derivative system is set up (and, in ``direct``/``dense`` mode, factored) once
    here; :meth:`jvp` and :meth:`vjp` reuse it.

    Parameters
    ----------
    data : ProblemData
        Validated problem data.
    x, y, s : ndarray
        Primal solution, dual solution and slack.
    mode : {"direct", "dense", "lsqr", "lsmr"}
    quadratic : QuadraticTerm, optional
        The quadratic term of ``data.P`` when the caller has it already (the forward
        solve builds it); built here otherwise.
    A_pattern : MatrixPattern, optional
        The stored pattern of ``data.A`` (shared across a same-structure batch).
    AT : scipy.sparse.csc_matrix, optional
        ``data.A.T`` in CSC form, if already computed.
    reuse : SolutionDerivative, optional
        A derivative of the same problem, in the same mode, at another point (a step of
        :mod:`~diffqcp_np.derivative.solution_refinement`): where its cone Jacobian
        equals this point's, K is the same matrix and its solver (with its
        factorisation) is shared instead of factoring again.
    same_faces : bool, default False
        Whether this point lies on the same face of every cone as ``reuse``'s, close to
        it: then K differs from ``reuse``'s only by the cones' curvature, and ``reuse``'s
        factorisation serves as an approximate solver, refined against this K
        (:class:`~diffqcp_np.derivative.borrowed_factorization.BorrowedFactorSolver`).
    cone_jacobian : optional
        The Jacobian ``D`` to use instead of ``DΠ_{K*}(y − s)``: a
        :class:`~diffqcp_np.cones.smoothing.SmoothedConeJacobian`
        (:mod:`~diffqcp_np.derivative.smoothing`), with ``factorization="lu"`` in direct
        mode.
    **solver_options
        Options of the linear solver: ``factorization`` ("auto", the default: "lu" with
        PSD cones or where K is small enough to be dense (``SMALL_SYSTEM_N`` rows), else
        "ldl"; "ldl": LDLᵀ of the reduced symmetric system; "lu": LU of K) and
        ``permc_spec`` (LU column ordering) in direct mode; ``atol``, ``btol``,
        ``maxiter`` (lsqr, lsmr).
    """

    def __init__(self, data: ProblemData, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                 mode: str = "direct", *, quadratic: QuadraticTerm | None = None,
                 A_pattern: MatrixPattern | None = None, AT: sp.csc_matrix | None = None,
                 reuse: SolutionDerivative | None = None, same_faces: bool = False,
                 cone_jacobian: Any = None, **solver_options: Any) -> None:
        if mode not in EXACT_MODES:
            raise ValueError(f"mode must be one of {EXACT_MODES}, got {mode!r}")
        self.mode = mode
        self.data = data
        m, n = data.m, data.n
        self.x = as_vector(x, "x", n)
        self.y = as_vector(y, "y", m)
        self.s = as_vector(s, "s", m)
        self.A = data.A
        if AT is None and reuse is not None and "AT" in reuse.__dict__:
            AT = reuse.AT
        if AT is not None:
            self.AT = AT
        self.A_pattern = MatrixPattern(data.A, "A") if A_pattern is None else A_pattern
        self.quadratic = QuadraticTerm(data.P, n) if quadratic is None else quadratic
        self.cone_jacobian = (ConeJacobian(self.y - self.s, data.cones, dual=True)
                              if cone_jacobian is None else cone_jacobian)
        self._solver_options = solver_options
        self.solver: KKTSolver = self._reused_solver(reuse, same_faces) or self._factored()

    def moved_to(self, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> SolutionDerivative:
        """This derivative at another point ``(x, y, s)`` of the problem where the cone
        Jacobian is the same matrix (a refinement step that changed no orthant row's
        sign): K, its solver, the cone Jacobian and the patterns are shared, only the
        point (used by the products with ``dA`` and ``dP``) is new: copies of the given
        arrays, finite float64 vectors of the right lengths (not checked)."""
        moved = copy.copy(self)
        moved.__dict__.pop("_gradient_bound", None)
        moved.x, moved.y, moved.s = x.copy(), y.copy(), s.copy()
        return moved

    def _reused_solver(self, reuse: SolutionDerivative | None,
                       same_faces: bool) -> KKTSolver | None:
        """``reuse``'s solver where K is the same matrix, a solver that borrows its
        factorisation where the point is on the same faces, else None."""
        if reuse is None or reuse.mode != self.mode:
            return None
        if reuse.cone_jacobian.same_as(self.cone_jacobian):
            return reuse.solver
        lender = lender_of(reuse.solver) if same_faces else None
        if lender is None:
            return None
        return BorrowedFactorSolver(lender, self._operator, self._factored,
                                    on_defect=self._warn_defect)

    def _factored(self) -> KKTSolver:
        """The solver of this point's K in this mode (factored in direct and dense mode):
        where K is assembled dense (:meth:`_dense_system`), ``factorization="auto"`` is
        its LU."""
        dense = self._dense_system()
        return make_solver(self.mode, self._assemble_dense if dense else self._assemble,
                           self._operator, reduced=self._reduced,
                           prefer_lu=dense or bool(self.data.cones.psd),
                           on_defect=self._warn_defect, **self._solver_options)

    @cached_property
    def AT(self) -> sp.csc_matrix:
        """``A'`` in CSC form, built on first use (the reduced system of zero and orthant
        cones never needs it)."""
        return transpose(self.A)

    # -- the system -------------------------------------------------------------------
    def _assemble(self) -> sp.csc_matrix:
        m, n = self.data.m, self.data.n
        D = self.cone_jacobian.to_sparse()
        P = self.quadratic.full if self.quadratic.full is not None else sp.csc_matrix((n, n))
        return sp.bmat(
            [[P, self.AT @ D], [-self.A, sp.identity(m, format="csc") - D]], format="csc"
        )

    def _dense_system(self) -> bool:
        """Whether K is assembled and factored dense: where it has at most
        ``SMALL_SYSTEM_N`` rows, or where its PSD blocks alone fill at least
        ``DENSE_SYSTEM_FILL`` of it (their Jacobians are dense, and so is A'D in their
        rows), at most ``DENSE_SYSTEM_MAX_N`` rows."""
        size = self.data.m + self.data.n
        if size <= SMALL_SYSTEM_N:
            return True
        psd_entries = sum((k * (k + 1) // 2) ** 2 for k in self.data.cones.psd)
        return size <= DENSE_SYSTEM_MAX_N and psd_entries >= DENSE_SYSTEM_FILL * size * size

    def _assemble_dense(self) -> np.ndarray:
        """K as a dense array (see :meth:`_dense_system`)."""
        m, n = self.data.m, self.data.n
        D = self.cone_jacobian.to_dense()
        K = np.zeros((n + m, n + m))
        if self.quadratic.full is not None:
            K[:n, :n] = self.quadratic.full.toarray()
        K[:n, n:] = self.AT @ D
        K[n:, :n] = -self.A.toarray()
        np.negative(D, out=K[n:, n:])
        K[n:, n:].flat[::m + 1] += 1.0
        return K

    def _reduced(self) -> ReducedSystem:
        return ReducedSystem(self.quadratic.full, self.A, self.cone_jacobian,
                             transpose_A=lambda: self.AT)

    def _operator(self) -> spla.LinearOperator:
        m, n = self.data.m, self.data.n
        P = self.quadratic.full
        D = self.cone_jacobian.matvec

        def matvec(z):
            zx, zv = z[:n], z[n:]
            top = self.AT @ D(zv)
            if P is not None:
                top = top + P @ zx
            return np.concatenate([top, -(self.A @ zx) + zv - D(zv)])

        def rmatvec(w):
            w1, w2 = w[:n], w[n:]
            top = -(self.AT @ w2)
            if P is not None:
                top = top + P @ w1
            return np.concatenate([top, D(self.A @ w1) + w2 - D(w2)])

        return spla.LinearOperator((n + m, n + m), matvec=matvec, rmatvec=rmatvec, dtype=float)

    def _warn_defect(self, defect: np.ndarray, transpose: bool, detail: str) -> None:
        """:func:`warn_nondifferentiable` at this point."""
        warn_nondifferentiable(defect, transpose, self.data.n, self.cone_jacobian.matvec,
                               detail)

    @property
    def last_residual(self) -> float:
        """Relative residual of the most recent solve with K or K'."""
        return self.solver.last_residual

    # -- JVP ----------------------------------------------------------------------------
    def jvp(self, dA=None, db=None, dc=None, dP=None, **kwargs: Any):
        """Apply the derivative to perturbations of the data.

        Parameters
        ----------
        dA : sparse or dense (m, n), optional
            Perturbation of ``A``; its nonzeros must lie on A's stored pattern.
        db : ndarray (m,), optional
        dc : ndarray (n,), optional
        dP : sparse or dense (n, n), optional
            Perturbation of ``P`` in P's storage convention (full symmetric, or upper
            triangle when ``P`` was given as its upper triangle).

        Returns
        -------
        dx, dy, ds : ndarray
        """
        if kwargs:
            _check_unused_kwargs(kwargs)
        m, n = self.data.m, self.data.n
        rhs = np.zeros(n + m)  # [dP x + dA'y + dc; −dA x + db], negated below
        rhs_x, rhs_v = rhs[:n], rhs[n:]
        if dc is not None:
            rhs_x[:] = as_vector(dc, "dc", n, copy=False)
        if db is not None:
            rhs_v[:] = as_vector(db, "db", m, copy=False)
        if dA is not None:
            values = self.A_pattern.perturbation_values(dA, "dA")
            dA_y, dA_x = self.A_pattern.products(values, self.x, self.y)
            rhs_x += dA_y
            rhs_v -= dA_x
        if dP is not None:
            rhs_x += self.quadratic.expand(dP) @ self.x
        z, largest = self.solver.solve_with_magnitude(np.negative(rhs, out=rhs),
                                                      overwrite=True)
        dx, dv = z[:n], z[n:]
        dy = self.cone_jacobian.matvec(dv)
        ds = dy - dv
        # |D dv|₂ <= |dv|₂ (D's eigenvalues lie in [0, 1]): dy and ds stay below this
        if not largest * 2.0 * (m + 1) ** 0.5 < _SAFE:
            warn_if_not_finite("D", dx, dy, ds)
        return dx, dy, ds

    # -- VJP ----------------------------------------------------------------------------
    def vjp(self, dx=None, dy=None, ds=None, return_dP: bool = False, **kwargs: Any):
        """Apply the adjoint of the derivative to cotangents of ``(x, y, s)``.

        Parameters
        ----------
        dx : ndarray (n,), optional
        dy, ds : ndarray (m,), optional
        return_dP : bool, default False
            Also return the gradient with respect to ``P``.

        Returns
        -------
        dA : scipy.sparse.csc_matrix
            On exactly A's stored pattern (explicit zeros included, canonical order).
        db : ndarray (m,)
        dc : ndarray (n,)
        dP : scipy.sparse.csc_matrix
            Only if ``return_dP``; on P's stored pattern, the exact adjoint of
            :meth:`jvp`'s ``dP`` argument (an empty matrix when the problem has no P).
        """
        if kwargs:
            _check_unused_kwargs(kwargs)
        m, n = self.data.m, self.data.n
        rhs = np.zeros(n + m)
        if dx is not None:
            rhs[:n] = as_vector(dx, "dx", n, copy=False)
        if dy is not None or ds is not None:
            gy = None if dy is None else as_vector(dy, "dy", m, copy=False)
            gs = None if ds is None else as_vector(ds, "ds", m, copy=False)
            total = gs if gy is None else (gy if gs is None else gy + gs)
            rhs[n:] = self.cone_jacobian.matvec(total)
            if gs is not None:
                rhs[n:] -= gs
        w, largest = self.solver.solve_with_magnitude(np.negative(rhs, out=rhs),
                                                      transpose=True, overwrite=True)
        w1, w2 = w[:n], w[n:]
        dA = gradient_A(self.A_pattern, self.y, w1, w2, self.x)
        if not return_dP:
            if not largest * self._gradient_bound < _SAFE:
                warn_if_not_finite("DT", w, dA.data)
            return dA, w2, w1
        if self.quadratic.pattern is None:
            dP = sp.csc_matrix((n, n))
        else:
            dP = self.quadratic.gradient(w1, self.x)
        if not largest * self._gradient_bound < _SAFE:
            warn_if_not_finite("DT", w, dA.data, dP.data)
        return dA, w2, w1, dP

    @cached_property
    def _gradient_bound(self) -> float:
        """How much larger than ``max |w|`` an entry of ``dA`` or ``dP`` can be:
        ``|y_i w1_j − w2_i x_j| <= max|w| (max|x| + max|y|)``, twice that for ``dP``."""
        return 1.0 + 2.0 * (largest_magnitude(self.x) + largest_magnitude(self.y))
