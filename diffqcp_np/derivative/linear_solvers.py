"""Solvers for the derivative system ``K z = r`` and its transpose ``K' z = r``.

``direct`` factors the symmetric reduced system once (LDLᵀ, see
:mod:`~diffqcp_np.derivative.reduced_system`), refines every answer against the exact K,
and falls back to a sparse LU of K itself (SuperLU's factors, held by
:class:`~._sparse_lu.SparseLU`) when refinement stalls;
``dense`` does the same with a dense LU (tiny problems); ``lsqr`` and ``lsmr`` run
matrix-free on K with forwarded tolerances and check the true residual. Where K is
singular or numerically so, every solver returns the least-squares answer of least norm;
where that answer leaves a residual (the right-hand side is not in K's range) it reports
the residual through ``on_defect`` (:class:`NonDifferentiableWarning` by default).
"""

from __future__ import annotations

import warnings
from functools import cached_property
from numbers import Integral, Real
from typing import Any, Callable

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._fast_checks import ZERO_VECTOR, scale_to_unit, unscale
from .._warnings import warn_at_caller
from ._sparse_lu import SparseLU
from .norms import refine, vector_norm
from .reduced_system import FactorizationError

#: Pivot ratio below which a factorisation is treated as singular.
SINGULAR_PIVOT_RATIO = 1e-13
#: Relative residual above which an answer is reported as inaccurate.
RESIDUAL_WARN = 1e-6
#: Relative residual of a least-squares answer (singular K) above which the right-hand
#: side is taken to have a part outside K's range: the requested product does not exist.
DEFECT_RESIDUAL = 1e-8


class NonDifferentiableWarning(RuntimeWarning):
    """The requested derivative product does not exist at this point.

    The derivative system is singular (a non-unique solution, or no strict
    complementarity) and the product depends on the non-unique part: a perturbation the
    solution cannot follow to first order, or cotangents that weigh entries of the
    solution that are not unique. A least-squares answer is returned.
    """


class InaccurateDerivativeWarning(RuntimeWarning):
    """The derivative may be inaccurate: an iterative solve of the derivative system
    stopped with a large residual, or the solution does not decide the face of every
    cone (see :mod:`~diffqcp_np.derivative.solution_refinement`)."""


#: Called with ``(defect, transpose, detail)`` when a least-squares answer leaves the
#: residual ``defect = K z - r`` (or ``K' z - r``); ``detail`` says why K is singular.
DefectHandler = Callable[[np.ndarray, bool, str], None]


def _relative_residual(matvec: Callable, z: np.ndarray, r: np.ndarray) -> float:
    norm_r = vector_norm(r)
    return float(vector_norm(matvec(z) - r) / max(norm_r, np.finfo(float).tiny))


def _least_squares(op: spla.LinearOperator, r: np.ndarray) -> np.ndarray:
    n = op.shape[1]
    return spla.lsmr(op, r, atol=1e-14, btol=1e-14, maxiter=20 * n)[0]


def warn_defect(defect: np.ndarray, transpose: bool, detail: str) -> None:
    """The default :data:`DefectHandler`: a :class:`NonDifferentiableWarning`."""
    system = "K'" if transpose else "K"
    warn_at_caller(
        f"the derivative system is singular ({detail}) and the right-hand side has a part "
        f"outside the range of {system}: the requested product does not exist at this "
        "point; returning a least-squares answer", NonDifferentiableWarning)


class KKTSolver:
    """Base class: solves with K and K' and records the last relative residual.

    Parameters
    ----------
    K : scipy.sparse matrix or None
        The assembled matrix (direct and dense modes).
    operator : callable
        Returns K as a LinearOperator with ``matvec`` and ``rmatvec``; called on first use
        of :attr:`operator` (a solve through a factorisation never needs it).
    on_defect : callable, default :func:`warn_defect`
        Called as ``on_defect(defect, transpose, detail)`` when K is singular and a
        right-hand side has a part outside its range (see :meth:`_least_squares_answer`).
    """

    name = "base"

    def __init__(self, K: sp.spmatrix | None,
                 operator: Callable[[], spla.LinearOperator],
                 on_defect: DefectHandler = warn_defect, **options: Any):
        self.K = K
        self._make_operator = operator
        self.on_defect = on_defect
        self.last_residual = 0.0
        self.singular = False
        self.singular_detail = ""
        if options:
            raise ValueError(
                f"unknown options {sorted(options)} for the {self.name!r} derivative mode"
            )

    @cached_property
    def operator(self) -> spla.LinearOperator:
        """K as a LinearOperator, built on first use."""
        return self._make_operator()

    def solve(self, r: np.ndarray) -> np.ndarray:
        """Solve ``K z = r``."""
        return self.solve_with_magnitude(r)[0]

    def solve_transpose(self, r: np.ndarray) -> np.ndarray:
        """Solve ``K' z = r``."""
        return self.solve_with_magnitude(r, transpose=True)[0]

    def solve_with_magnitude(self, r: np.ndarray, transpose: bool = False,
                             overwrite: bool = False) -> tuple[np.ndarray, float]:
        """Solve ``K z = r`` (``K' z = r``); returns ``z`` and ``max |z_i|`` (infinity if
        an entry is not finite).

        The solve is of ``r`` times the power of two that brings ``max |r_i|`` into
        ``[½, 1)``, and ``z`` is scaled back: exact, so the answer for ``2ᵏ r`` is
        ``2ᵏ`` times the answer for ``r``, while the norms inside the solve (refinement,
        residual checks) neither overflow nor underflow. ``r`` is scaled in place when
        ``overwrite`` (a scratch vector of the caller's), else left as it was.
        """
        r = r if overwrite else r.copy()
        exponent = scale_to_unit(r)
        if exponent == ZERO_VECTOR:
            self.last_residual = 0.0
            return np.zeros_like(r), 0.0
        solve = self._least_squares_answer if self.singular else self._solve
        z, self.last_residual = solve(r, transpose)
        return z, unscale(z, exponent)

    def _matvec(self, z: np.ndarray, transpose: bool) -> np.ndarray:
        """``K z`` or ``K' z``: one sparse product when K is assembled, else the operator."""
        if self.K is not None:
            return self.K.T @ z if transpose else self.K @ z
        return self.operator.rmatvec(z) if transpose else self.operator.matvec(z)

    def _relative_residual(self, z: np.ndarray, r: np.ndarray, transpose: bool) -> float:
        return _relative_residual(lambda v: self._matvec(v, transpose), z, r)

    #: Iterative refinement: at most this many steps, stopping below this relative residual.
    MAX_REFINEMENT = 1
    REFINED = 1e-12

    def _refined(self, approx: Callable[[np.ndarray], np.ndarray], r: np.ndarray,
                 transpose: bool) -> tuple[np.ndarray, float]:
        """``approx(r)`` refined against the exact K (or K'), and its relative residual."""
        return refine(approx, lambda v: self._matvec(v, transpose), r,
                      self.MAX_REFINEMENT, self.REFINED)

    def _check_pivots(self, pivots: np.ndarray) -> None:
        """Mark K singular (and warn) when its LU pivots are zero, non-finite or tiny."""
        pivots = np.abs(pivots)
        ratio = pivots.min() / pivots.max() if pivots.size and pivots.max() > 0 else 0.0
        if not np.isfinite(ratio) or ratio < SINGULAR_PIVOT_RATIO:
            self._mark_singular(f"LU pivot ratio {ratio:.1e}")

    def _mark_singular(self, detail: str) -> None:
        """Answer every later solve by least squares; ``detail`` says why."""
        self.singular = True
        self.singular_detail = detail

    def _least_squares(self, r: np.ndarray, transpose: bool) -> np.ndarray:
        """A least-squares answer where K is singular (LSMR on the operator)."""
        return _least_squares(self.operator.T if transpose else self.operator, r)

    def _least_squares_answer(self, r: np.ndarray,
                              transpose: bool) -> tuple[np.ndarray, float]:
        """:meth:`_least_squares` and its relative residual; a residual above
        ``DEFECT_RESIDUAL`` is passed to ``on_defect``.

        Where K is singular, ``K z = r`` has solutions exactly when ``r`` is orthogonal to
        the null space of ``K'``; the answer is then the solution of least norm (and any
        quantity that does not depend on the choice is exact). Otherwise no solution
        exists and the residual ``K z - r`` is ``r``'s part in that null space (for ``K'``,
        a null vector of K).
        """
        z = self._least_squares(r, transpose)
        defect = self._matvec(z, transpose) - r
        residual = float(vector_norm(defect) / max(vector_norm(r), np.finfo(float).tiny))
        if residual > DEFECT_RESIDUAL:
            self.on_defect(defect, transpose, self.singular_detail or "numerically singular")
        return z, residual

    def _solve(self, r: np.ndarray, transpose: bool) -> tuple[np.ndarray, float]:
        """The solution and its relative residual."""
        raise NotImplementedError


class DirectSolver(KKTSolver):
    """Sparse LU of K (:class:`~._sparse_lu.SparseLU`: SuperLU's factors in our arrays,
    so that no SuperLU object outlives the thread that made it), factored once and reused
    for K and K' solves; a dense LU (LAPACK) when K is given as a dense array
    (``permc_spec`` is then unused).

    One step of iterative refinement is taken when the first residual exceeds 1e-12.
    """

    name = "direct"

    def __init__(self, K, operator, on_defect: DefectHandler = warn_defect,
                 permc_spec: str = "COLAMD", **options):
        super().__init__(K, operator, on_defect, **options)
        self._dense_lu = None
        if isinstance(K, np.ndarray):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", la.LinAlgWarning)
                self._dense_lu = la.lu_factor(K, check_finite=False)
            self._check_pivots(np.diag(self._dense_lu[0]))
            return
        try:
            self._lu = SparseLU(K, permc_spec=permc_spec)
        except RuntimeError as err:  # exactly singular
            self._mark_singular(f"sparse LU: {err}")
            return
        self._check_pivots(self._lu.pivots)

    def factor_solve(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        """``K⁻¹ v`` (or ``K'⁻¹ v``) with the LU factors, unrefined."""
        if self._dense_lu is not None:
            return la.lu_solve(self._dense_lu, v, trans=1 if transpose else 0,
                               check_finite=False)
        return self._lu.solve(v, trans="T" if transpose else "N")

    def _solve(self, r, transpose):
        return self._refined(lambda v: self.factor_solve(v, transpose), r, transpose)


class ReducedDirectSolver(KKTSolver):
    """LDLᵀ of the reduced symmetric system, refined; LU of K as a fallback.

    Each answer is refined (at most ``MAX_REFINEMENT`` steps) until its relative residual
    is below ``REFINED``: the residual with the exact M where the reduction is exact
    (zero, orthant and second-order cones; then each step costs one triangular solve and
    one product with M), with K otherwise. If the reduced system looks singular when
    factored, even after a symmetric equilibration (badly scaled rows make a regular M
    look singular), or refinement stalls above ``ACCEPTED``, the solver switches for good
    to
    :class:`DirectSolver` on the assembled K, whose pivot check decides whether the
    point is non-differentiable.

    Parameters
    ----------
    reduced : callable
        Builds (and factors) the :class:`ReducedSystem`: approximate K and K' solves and
        a singularity estimate.
    assemble : callable
        Returns the sparse K (called only for the fallback).
    operator : callable
        Returns K as a LinearOperator (see :class:`KKTSolver`).
    permc_spec : str, default "COLAMD"
        Column ordering of the fallback LU.
    """

    name = "direct"
    MAX_REFINEMENT = 10
    REFINED = 1e-13
    ACCEPTED = 1e-10

    def __init__(self, reduced: Callable[[], Any], assemble: Callable[[], sp.spmatrix],
                 operator: Callable[[], spla.LinearOperator],
                 on_defect: DefectHandler = warn_defect, permc_spec: str = "COLAMD",
                 **options):
        super().__init__(None, operator, on_defect, **options)
        self._assemble = assemble
        self._permc_spec = permc_spec
        self._fallback: DirectSolver | None = None
        try:
            self._reduced = reduced()
        except FactorizationError:
            self._switch_to_lu()
            return
        if self._reduced.nearly_singular() and not self._reduced.equilibrate():
            self._switch_to_lu()

    @property
    def uses_fallback(self) -> bool:
        """Whether the LU of K took over (zero pivots, a nearly singular reduced system,
        or stalled refinement)."""
        return self._fallback is not None

    def _switch_to_lu(self) -> None:
        self._fallback = DirectSolver(self._assemble(), lambda: self.operator,
                                      self.on_defect, permc_spec=self._permc_spec)
        self.K = self._fallback.K
        self.singular = self._fallback.singular
        self.singular_detail = self._fallback.singular_detail

    def factor_solve(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        """An approximate ``K⁻¹ v`` (or ``K'⁻¹ v``) from the factorisation, unrefined: one
        compiled call where D is diagonal or the reduction :attr:`~.ReducedSystem.fused`
        (:meth:`~.ReducedSystem.refined_solve` with no refinement step)."""
        if self._fallback is not None:
            return self._fallback.factor_solve(v, transpose)
        reduced = self._reduced
        if reduced.parts.D.diagonal is not None or reduced.fused:
            return reduced.refined_solve(v, transpose, 0, 0.0)[0]
        return reduced.solve_transpose(v) if transpose else reduced.solve(v)

    def _solve(self, r, transpose):
        if self._fallback is None:
            z, residual = self._reduced_solve(r, transpose)
            if residual <= self.ACCEPTED:
                return z, residual
            self._switch_to_lu()
        if self.singular:
            return self._least_squares_answer(r, transpose)
        return self._fallback._solve(r, transpose)

    def _reduced_solve(self, r: np.ndarray, transpose: bool) -> tuple[np.ndarray, float]:
        """Refined solve through M: refined on M itself where the reduction is exact
        (each step one triangular solve and one product with M), else M-refined solves
        refined against K (compiled products where no SOC block is lifted)."""
        reduced = self._reduced
        if reduced.exact:
            return reduced.refined_solve(r, transpose, self.MAX_REFINEMENT, self.REFINED)
        if reduced.fused:
            def approx(v):
                return reduced.refined_solve(v, transpose, self.MAX_REFINEMENT,
                                             self.REFINED)[0]

            return refine(approx, lambda v: reduced.product(v, transpose), r,
                          self.MAX_REFINEMENT, self.REFINED)
        approx = reduced.solve_transpose if transpose else reduced.solve
        return self._refined(approx, r, transpose)


class DenseSolver(KKTSolver):
    """Dense LU of K, for small problems."""

    name = "dense"

    def __init__(self, K, operator, on_defect: DefectHandler = warn_defect, **options):
        super().__init__(K, operator, on_defect, **options)
        self._dense = K.toarray() if sp.issparse(K) else np.asarray(K)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", la.LinAlgWarning)
            self._lu = la.lu_factor(self._dense, check_finite=False)
        self._check_pivots(np.diag(self._lu[0]))

    def _least_squares(self, r, transpose):
        return la.lstsq(self._dense.T if transpose else self._dense, r, check_finite=False)[0]

    def factor_solve(self, v: np.ndarray, transpose: bool) -> np.ndarray:
        """``K⁻¹ v`` (or ``K'⁻¹ v``) with the LU factors."""
        return la.lu_solve(self._lu, v, trans=1 if transpose else 0, check_finite=False)

    def _solve(self, r, transpose):
        z = self.factor_solve(r, transpose)
        return z, self._relative_residual(z, r, transpose)


class IterativeSolver(KKTSolver):
    """LSQR or LSMR on K, matrix-free.

    An answer with a relative residual above ``RESIDUAL_WARN`` raises an
    :class:`InaccurateDerivativeWarning`, unless the method reports a least-squares
    solution (its ``istop`` 2: K is singular and the right-hand side is not in its range),
    which goes to ``on_defect``.

    Parameters
    ----------
    method : {"lsqr", "lsmr"}
    atol, btol : float, default 1e-12
        Stopping tolerances forwarded to SciPy.
    maxiter : int, optional
        Iteration limit; default ``10 · N``.
    """

    def __init__(self, K, operator, on_defect: DefectHandler = warn_defect,
                 method: str = "lsmr", atol: float = 1e-12, btol: float = 1e-12,
                 maxiter: int | None = None, **options):
        self.name = method
        super().__init__(K, operator, on_defect, **options)
        self.method = method
        self.atol, self.btol = atol, btol
        self.maxiter = maxiter if maxiter is not None else 10 * self.operator.shape[0]
        self.last_iterations = 0

    def _solve(self, r, transpose):
        op = self.operator.T if transpose else self.operator
        if self.method == "lsqr":
            out = spla.lsqr(op, r, atol=self.atol, btol=self.btol, iter_lim=self.maxiter)
        else:
            out = spla.lsmr(op, r, atol=self.atol, btol=self.btol, maxiter=self.maxiter)
        z, stop, self.last_iterations = out[0], out[1], out[2]
        defect = self._matvec(z, transpose) - r
        residual = float(vector_norm(defect) / max(vector_norm(r), np.finfo(float).tiny))
        if stop == 2 and residual > DEFECT_RESIDUAL:  # a least-squares solution: no solution
            self.on_defect(defect, transpose,
                           f"{self.method} ended at a least-squares solution")
        elif residual > RESIDUAL_WARN:
            warn_at_caller(
                f"{self.method} stopped after {self.last_iterations} iterations with relative "
                f"residual {residual:.2e}; the derivative may be inaccurate (tighten atol/btol, "
                "raise maxiter, or use mode='direct')",
                InaccurateDerivativeWarning,
            )
        return z, residual


#: Column orderings of SciPy's sparse LU (``permc_spec``).
PERMC_SPECS = ("NATURAL", "MMD_ATA", "MMD_AT_PLUS_A", "COLAMD")


def _check_options(options: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming a linear-solver option whose value is not accepted."""
    if "permc_spec" in options and options["permc_spec"] not in PERMC_SPECS:
        raise ValueError(f"permc_spec must be one of {PERMC_SPECS}, got "
                         f"{options['permc_spec']!r}")
    for name in ("atol", "btol"):
        value = options.get(name, 0.0)
        if not (isinstance(value, Real) and not isinstance(value, bool) and value >= 0):
            raise ValueError(f"{name} must be a nonnegative number, got {value!r}")
    maxiter = options.get("maxiter")
    if maxiter is not None and not (isinstance(maxiter, Integral)
                                    and not isinstance(maxiter, bool) and maxiter > 0):
        raise ValueError(f"maxiter must be a positive integer, got {maxiter!r}")


def make_solver(mode: str, assemble: Callable[[], sp.spmatrix],
                operator: Callable[[], spla.LinearOperator],
                reduced: Callable[[], Any] | None = None,
                factorization: str = "auto", prefer_lu: bool = False,
                on_defect: DefectHandler = warn_defect, **options: Any) -> KKTSolver:
    """Build the solver of the derivative system for ``mode``.

    Parameters
    ----------
    mode : {"direct", "dense", "lsqr", "lsmr"}
    assemble : callable
        Returns the sparse K (direct and dense modes; called only when needed).
    operator : callable
        Returns K as a LinearOperator (built only where a solver needs it).
    reduced : callable, optional
        Returns the reduced symmetric system (direct mode with ``factorization="ldl"``).
    factorization : {"auto", "ldl", "lu"}, default "auto"
        Direct mode: LDLᵀ of the reduced symmetric system (refined, with LU of K as a
        fallback), or LU of K from the start. ``"auto"`` is ``"lu"`` when
        ``prefer_lu`` and ``"ldl"`` otherwise.
    prefer_lu : bool, default False
        Whether ``"auto"`` means ``"lu"``: the caller's choice where the cones include
        PSD blocks (their dense blocks in the reduced system cost three dense products
        each, more than the LU saves) or where K is small and assembled dense.
    on_defect : callable, default :func:`warn_defect`
        See :class:`KKTSolver`.
    **options
        Options of the chosen solver.

    Raises
    ------
    ValueError
        On an unknown option or a value out of range: ``permc_spec`` not one of
        :data:`PERMC_SPECS`, ``atol``/``btol`` not a nonnegative number, ``maxiter`` not a
        positive integer.
    """
    _check_options(options)
    if mode == "direct":
        if factorization == "auto":
            factorization = "lu" if prefer_lu else "ldl"
        if factorization == "lu":
            return DirectSolver(assemble(), operator, on_defect, **options)
        if factorization != "ldl":
            raise ValueError(
                f"factorization must be 'auto', 'ldl' or 'lu', got {factorization!r}")
        return ReducedDirectSolver(reduced, assemble, operator, on_defect, **options)
    if mode == "dense":
        return DenseSolver(assemble(), operator, on_defect, **options)
    if mode in ("lsqr", "lsmr"):
        return IterativeSolver(None, operator, on_defect, method=mode, **options)
    raise ValueError(f"no linear solver for mode {mode!r}")
