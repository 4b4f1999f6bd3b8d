"""Newton refinement of a solution before it is differentiated, and the checks that say
when a solution cannot be trusted to differentiate at.

The solution map is the zero of the residual map (DESIGN.md §3)

    F(x, v) = (Px + A'Π(v) + c,  Ax + Π(v) − v − b),    v = y − s,  Π = Π_{K*},

whose Jacobian ``[[P, A'D], [A, D − I]]`` (``D = DΠ(v)``) is ``diag(I, −I) K`` with K
the derivative system. A Newton step therefore solves ``K [dx; dv] = [−F₁; F₂]`` with
the factorisation that the derivative uses (in the spirit of Busseti, Moursi and Boyd,
"Solution refinement at regular points of conic problems", 2019, who refine on the
homogeneous embedding). Where the step keeps every cone on its face (same ``D``), K is
the same matrix and its factorisation is reused; where a face changes (an inequality
that the solver left on the wrong side of its kink), the new point is factored, and
that factorisation is the derivative's. At a regular point (unique solution, strict
complementarity) a few steps bring a default-tolerance solution to a residual at the
rounding level, ``y = Π(v)`` and ``s = Π(v) − v`` exactly complementary.

Safeguards: a step is accepted only if the normalised residual (:class:`ResidualMap`)
falls by a sufficient amount, halving the step otherwise; refinement stops at the
target residual, when no step along the Newton direction gains, or after a number of
steps; a solution is never replaced by a worse one. Where K is singular its solver's
least-squares answer is the step (it may still lead to a regular point).

Detection (:func:`unsettled_blocks`): a cone block (an inequality row, a second-order,
PSD, exponential or power cone) is *unresolved* when the point does not decide its
face: its distance to the nearest change of face is within the point's error estimate
(the size of the last Newton step, or the complementarity gap ``y − Π(y − s)`` and the
residual of an unrefined point), or its face still changed in the last step when
refinement did not converge. Unresolved blocks, or a refined residual that stays above
:data:`WARN_RESIDUAL`, raise :class:`InaccurateDerivativeWarning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Protocol

import numpy as np
import scipy.sparse as sp

from .._fast_checks import all_finite
from .._validation import ProblemData
from .._warnings import warn_at_caller
from ..cones.projection import ConeJacobian, pi
from ..cones._soc_numba import jacobian_nonneg
from ..cones.psd import _unvec_stack
from ..cones.spec import ConeSpec, vec_psd_dim
from ._residual_numba import orthant_point, orthant_step, residual_parts
from .borrowed_factorization import approximate_solve, factorizations, lender_of
from .linear_solvers import InaccurateDerivativeWarning, KKTSolver

#: Refinement stops once the normalised residual is at or below this (the step that
#: gets there usually lands at the rounding level, 1e-16 to 1e-15).
TARGET_RESIDUAL = 1e-13
#: At most this many accepted Newton steps.
MAX_STEPS = 10
#: A step is halved at most this many times before refinement gives up.
MAX_BACKTRACKS = 5
#: Sufficient decrease: a step of length t must bring the residual to ``(1 − σ t)`` of it.
SUFFICIENT_DECREASE = 1e-4

#: On curved cones, the next step reuses K's factorisation at an earlier point (a chord
#: step) only while the residual contracts at least this much per step; otherwise, and
#: whenever a chord step is rejected, the derivative is built again at the new point.
CHORD_CONTRACTION = 0.1
#: A residual above this after refinement is reported as inaccurate.
WARN_RESIDUAL = 1e-9
#: The Jacobian of a 3-D cone block that changes by more than this (largest entry)
#: within the error radius has changed face.
FACE_JUMP = 0.1
#: 3-D cone blocks are probed for a change of face only where the error radius exceeds
#: this fraction of the block's largest entry.
PROBE_FLOOR = 1e-12

#: Refinement outcomes (``RefinementReport.status``).
STATUSES = ("converged", "stalled", "max_steps", "singular", "off")


class Differentiable(Protocol):
    """What refinement needs of a derivative: its point (validated copies), its cone
    Jacobian and the solver of K."""

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    cone_jacobian: ConeJacobian
    solver: KKTSolver


#: ``build(x, y, s, previous, same_faces)``: the derivative at ``(x, y, s)``, reusing
#: what it can of ``previous`` (a derivative of the same problem at an earlier point, or
#: None), whose point lies on the same face of every cone if ``same_faces``.
Builder = Callable[[np.ndarray, np.ndarray, np.ndarray, Any, bool], Differentiable]


# -- the residual map ---------------------------------------------------------------------
@dataclass(frozen=True)
class Residual:
    """``F`` at a point ``(x, v)``, with ``y = Π(v)``, ``s = Π(v) − v``, its largest entry
    ``absolute`` and its normalised norm ``merit`` (see :class:`ResidualMap`)."""

    x: np.ndarray
    v: np.ndarray
    y: np.ndarray
    s: np.ndarray
    dual: np.ndarray  # F₁ = Px + A'y + c
    primal: np.ndarray  # F₂ = Ax + s − b
    absolute: float
    merit: float


def _scale(*norms: float) -> float:
    largest = max(norms)
    return largest if largest > 0.0 else 1.0


def _max_abs(v: np.ndarray) -> float:
    return float(np.max(np.abs(v))) if v.size else 0.0


def project_dual(v: np.ndarray, spec: ConeSpec) -> np.ndarray:
    """``Π_{K*}(v)``; without a few NumPy calls' overhead where the cones are the zero
    cone and the orthant."""
    if spec.nonneg + spec.zero < spec.dim:
        return pi(v, spec, dual=True)
    y = v.copy()
    np.maximum(y[spec.zero:], 0.0, out=y[spec.zero:])
    return y


class ResidualMap:
    """The residual map ``F(x, v)`` of a problem and its normalised norm.

    The norm is ``(‖F₁‖² / σ_d² + ‖F₂‖² / σ_p²)^½`` with the scales of the terms at the
    first point evaluated: ``σ_d = max(‖c‖∞, ‖Px‖∞, ‖A'y‖∞)`` and
    ``σ_p = max(‖b‖∞, ‖Ax‖∞, ‖s‖∞)`` (fixed afterwards, so that residuals at different
    points compare; a Euclidean norm, whose square is smooth where F is, for the line
    search).

    Parameters
    ----------
    data : ProblemData
    P : scipy.sparse.csc_matrix or None
        The full symmetric quadratic term.
    """

    def __init__(self, data: ProblemData, P: sp.csc_matrix | None) -> None:
        self.data = data
        self._P = ((np.zeros(data.n + 1, np.int32), np.zeros(0, np.int32), np.zeros(0))
                   if P is None else (P.indptr, P.indices, P.data))
        self._scales: tuple[float, float] | None = None
        self._matrices = (data.A.indptr, data.A.indices, data.A.data, *self._P, data.b, data.c)
        self._polyhedral = polyhedral(data.cones)

    def __call__(self, x: np.ndarray, v: np.ndarray) -> Residual:
        """``F(x, v)``."""
        data = self.data
        if self._polyhedral:
            y, s = orthant_point(v, data.cones.zero)
        else:
            y = pi(v, data.cones, dual=True)
            s = y - v
        dual, primal = np.empty(data.n), np.empty(data.m)
        parts = residual_parts(*self._matrices, x, y, s, dual, primal)
        return self._residual(x, v, y, s, dual, primal, parts)

    def step(self, point: Residual, step: np.ndarray, t: float) -> Residual:
        """``F`` at ``(point.x, point.v) + t·step`` (one compiled call on zero and orthant
        cones)."""
        if not self._polyhedral:
            n = point.x.size
            return self(point.x + t * step[:n], point.v + t * step[n:])
        return self._residual(*orthant_step(*self._matrices, self.data.cones.zero, point.x,
                                            point.v, step, t))

    def _residual(self, x: np.ndarray, v: np.ndarray, y: np.ndarray, s: np.ndarray,
                  dual: np.ndarray, primal: np.ndarray, parts: tuple) -> Residual:
        """The :class:`Residual` from :func:`~._residual_numba.residual_parts`'s numbers
        (the first call fixes the scales)."""
        (c_max, px_max, aty_max, b_max, ax_max, s_max, dual_max, primal_max, dual_squares,
         primal_squares) = parts
        if self._scales is None:
            self._scales = (_scale(c_max, px_max, aty_max), _scale(b_max, ax_max, s_max))
        merit = math.sqrt(dual_squares / self._scales[0] ** 2
                          + primal_squares / self._scales[1] ** 2)
        return Residual(x, v, y, s, dual, primal, max(dual_max, primal_max), merit)


# -- faces of the cones ---------------------------------------------------------------------
@lru_cache(maxsize=64)
def block_starts(spec: ConeSpec) -> np.ndarray:
    """First row of every cone block but the zero cone's rows: each orthant row, then
    every second-order, PSD, exponential, dual exponential and power cone (read-only)."""
    sizes = np.concatenate([np.ones(spec.nonneg, np.int64), np.asarray(spec.soc, np.int64),
                            [vec_psd_dim(k) for k in spec.psd],
                            np.full(spec.exp + spec.exp_dual + len(spec.power), 3)])
    starts = spec.zero + np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)))[:-1]
    starts.flags.writeable = False
    return starts


def polyhedral(spec: ConeSpec) -> bool:
    """Whether the cones are the zero cone and the orthant only: ``Π`` is then piecewise
    affine, every block one row, and ``DΠ`` the same matrix wherever no row's sign
    changes."""
    return spec.zero + spec.nonneg == spec.dim


def block_count(spec: ConeSpec) -> int:
    """The number of cone blocks (see :func:`block_starts`)."""
    return (spec.nonneg + len(spec.soc) + len(spec.psd) + spec.exp + spec.exp_dual
            + len(spec.power))


def block_maxima(values: np.ndarray, spec: ConeSpec) -> np.ndarray:
    """The largest of ``values`` (one per row of the cones) in each cone block (see
    :func:`block_starts`; a view of ``values`` where every block is one row)."""
    if polyhedral(spec):
        return values[spec.zero:]
    starts = block_starts(spec)
    if starts.size == 0:
        return np.zeros(0)
    return np.maximum.reduceat(values, starts)


def orthant_changes(jacobian: ConeJacobian, v: np.ndarray) -> np.ndarray:
    """Where ``DΠ`` at ``v`` differs from ``jacobian`` on the orthant rows (zero and
    orthant cones only: elsewhere ``DΠ`` is the same matrix)."""
    spec = jacobian.spec
    d = jacobian_nonneg(v[spec.zero:])
    return d != jacobian.diagonal_part[spec.zero:]


def _psd_eigenvalues(v: np.ndarray, spec: ConeSpec) -> list[np.ndarray]:
    """The eigenvalues of each PSD block of ``v``, in block order."""
    out, start = [], spec.slices()["s"].start
    for k in spec.psd:
        size = vec_psd_dim(k)
        out.append(np.linalg.eigvalsh(_unvec_stack(v[start:start + size], k)))
        start += size
    return out


def face_codes(spec: ConeSpec, v: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The face of each cone block (see :func:`block_starts`) of ``Π_{K*}`` at ``v``,
    from ``y = Π_{K*}(v)`` and ``s = y − v``.

    0 where ``y`` vanishes on the block (the polar of ``K*``), 2 where ``s`` does (the
    interior of ``K*``), 1 between (a curved boundary, or an orthant row at ``v = 0``
    counts as 0); PSD cones: ``3 +`` the number of positive eigenvalues. Two points
    whose codes differ somewhere lie on different faces.
    """
    if spec.zero + spec.nonneg == spec.dim:  # one row per block
        y, s = y[spec.zero:], s[spec.zero:]
        return np.where(y == 0.0, 0, np.where(s == 0.0, 2, 1))
    codes = np.where(block_maxima(np.abs(y), spec) == 0.0, 0,
                     np.where(block_maxima(np.abs(s), spec) == 0.0, 2, 1))
    if spec.psd:
        first = spec.nonneg + len(spec.soc)
        codes[first:first + len(spec.psd)] = [3 + int(np.sum(lam > 0.0))
                                              for lam in _psd_eigenvalues(v, spec)]
    return codes


def _soc_margins(v: np.ndarray, spec: ConeSpec) -> np.ndarray:
    """Distance of each second-order block of ``v`` to the surfaces ``‖z‖ = ±t`` where its
    projection changes face."""
    out, start = np.empty(len(spec.soc)), spec.slices()["q"].start
    for i, dim in enumerate(spec.soc):
        t, rho = v[start], float(np.linalg.norm(v[start + 1:start + dim]))
        out[i] = min(abs(rho - t), abs(rho + t)) / np.sqrt(2.0)
        start += dim
    return out


def _small_spec(spec: ConeSpec, copies: int) -> ConeSpec:
    """The 3-D cones of ``spec``, each kind repeated ``copies`` times."""
    return ConeSpec(exp=spec.exp * copies, exp_dual=spec.exp_dual * copies,
                    power=spec.power * copies)


def _small_jumps(jacobian: ConeJacobian, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Whether the Jacobian of each 3-D cone block jumps (by more than ``FACE_JUMP``) at
    one of the six points ``v ± radius·e_j`` of its block (not probed, and False, where
    the radius is at the rounding level of the block, below ``PROBE_FLOOR`` of it)."""
    spec = jacobian.spec
    sl = spec.slices()
    points = v[sl["ep"].start:sl["p"].stop].reshape(-1, 3)
    if not np.any(radius > PROBE_FLOOR * np.abs(points).max(axis=1, initial=0.0)):
        return np.zeros(points.shape[0], dtype=bool)
    offsets = np.concatenate([np.eye(3), -np.eye(3)])  # (6, 3)
    probes = points[None, :, :] + radius[None, :, None] * offsets[:, None, :]  # (6, k, 3)
    kinds = np.cumsum([0, spec.exp, spec.exp_dual, len(spec.power)])
    # The probes of each kind, probe-major within the kind (the order of _small_spec).
    stacked = np.concatenate([probes[:, kinds[i]:kinds[i + 1]].reshape(-1)
                              for i in range(3)])
    probed = ConeJacobian(stacked, _small_spec(spec, 6), dual=True)._small
    blocks = np.concatenate([probed[6 * kinds[i]:6 * kinds[i + 1]].reshape(
        6, kinds[i + 1] - kinds[i], 3, 3) for i in range(3)], axis=1)
    change = np.abs(blocks - jacobian._small[None]).max(axis=(0, 2, 3))
    return change > FACE_JUMP


def unsettled_blocks(jacobian: ConeJacobian, v: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Whether each cone block (see :func:`block_starts`) is within ``radius`` (one per
    block) of a point where its face changes.

    Orthant rows: ``|v_i| ≤ radius``; second-order cones: the distance to the surfaces
    ``‖z‖ = ±t``; PSD cones: the smallest eigenvalue in magnitude; 3-D cones: whether
    the Jacobian jumps at one of the points ``v ± radius·e_j``.
    """
    spec = jacobian.spec
    rows = v[spec.zero:spec.zero + spec.nonneg]
    if polyhedral(spec):
        return np.abs(rows) <= radius
    nonneg, soc, psd = spec.nonneg, len(spec.soc), len(spec.psd)
    out = np.empty(radius.size, dtype=bool)
    out[:nonneg] = np.abs(rows) <= radius[:nonneg]
    if soc:
        out[nonneg:nonneg + soc] = _soc_margins(v, spec) <= radius[nonneg:nonneg + soc]
    if psd:
        lowest = np.array([np.abs(lam).min() for lam in _psd_eigenvalues(v, spec)])
        out[nonneg + soc:nonneg + soc + psd] = (lowest
                                                <= radius[nonneg + soc:nonneg + soc + psd])
    if nonneg + soc + psd < radius.size:
        out[nonneg + soc + psd:] = _small_jumps(jacobian, v, radius[nonneg + soc + psd:])
    return out


# -- the report -----------------------------------------------------------------------------
@dataclass
class RefinementReport:
    """What refinement did (``info["refinement"]`` is :meth:`as_dict`).

    Attributes
    ----------
    residual_before, residual_after : float
        Normalised residual of the given solution and of the returned one.
    steps : int
        Accepted Newton steps.
    rejected : int
        Trial steps rejected by the line search (each halves the step).
    factorizations : int
        Factorisations of K beyond the first: one per accepted step that changed a face,
        and one where a step's factorisation could not be borrowed (see
        :mod:`~diffqcp_np.derivative.borrowed_factorization`), so far.
    unresolved_rows, unresolved_cones : int
        Inequality rows and cones (second-order, PSD, exponential, power) whose face
        the returned solution does not decide.
    status : str
        ``"converged"`` (target residual reached), ``"stalled"`` (no step along the
        Newton direction lowers the residual), ``"max_steps"``, ``"singular"`` (not
        converged, and K is singular at the returned point: not a regular point), or
        ``"off"`` (not refined; the solution was only checked).
    """

    residual_before: float
    residual_after: float
    steps: int = 0
    rejected: int = 0
    factorizations: int = 0
    unresolved_rows: int = 0
    unresolved_cones: int = 0
    status: str = "off"

    @property
    def unresolved(self) -> int:
        """Unresolved rows and cones together."""
        return self.unresolved_rows + self.unresolved_cones

    @property
    def inaccurate(self) -> bool:
        """Whether the derivative at the returned solution may be wrong: some face is
        not decided, or refinement (if it ran) left the residual above
        ``WARN_RESIDUAL``. (An unrefined solution's residual alone is not reported: its
        derivative is as accurate as the solution.)"""
        if self.unresolved:
            return True
        return self.status != "off" and not self.residual_after <= WARN_RESIDUAL

    def as_dict(self) -> dict:
        """The report as a plain dict (its fields, and ``unresolved``)."""
        return dict(vars(self), unresolved=self.unresolved)

    def message(self) -> str:
        """The warning text for an inaccurate derivative."""
        parts = []
        if self.unresolved_rows:
            parts.append(f"{self.unresolved_rows} inequality row"
                         f"{'s' if self.unresolved_rows > 1 else ''}")
        if self.unresolved_cones:
            parts.append(f"{self.unresolved_cones} cone{'s' if self.unresolved_cones > 1 else ''}")
        what = (f"the solution does not decide the face of {' and '.join(parts)} (active or "
                "not)" if parts else "the solution is inaccurate")
        done = ("without refinement" if self.status == "off"
                else f"after {self.steps} refinement step{'s' if self.steps != 1 else ''} "
                     f"({self.status})")
        return (f"{what}: residual {self.residual_after:.1e} {done}, so the derivative may "
                "be inaccurate; solve with a tighter tolerance"
                + (" or refine the solution (refine=True)" if self.status == "off" else ""))


def warn_inaccurate(report: RefinementReport) -> None:
    """Raise :class:`InaccurateDerivativeWarning` (at the caller's line) if the report
    says so."""
    if report.inaccurate:
        warn_at_caller(report.message(), InaccurateDerivativeWarning)


# -- refinement -----------------------------------------------------------------------------
@dataclass
class Refinement:
    """A derivative at a (possibly refined) solution: ``derivative`` is taken at
    ``(x, y, s)``; ``report`` says what refinement did."""

    derivative: Any
    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    report: RefinementReport


def _ignore_defect(defect: np.ndarray, transpose: bool, detail: str) -> None:
    """A :data:`~.linear_solvers.DefectHandler` that reports nothing."""


def _inexact_step(solver: KKTSolver, rhs: np.ndarray) -> np.ndarray | None:
    """An inexact Newton step ``K⁻¹ rhs``: the unrefined answer of the factorisation that
    ``solver`` uses (:func:`~.borrowed_factorization.approximate_solve`; at a point where
    it borrows one, K's at an earlier point), or None where it has none or the answer
    is not finite. The step is measured by the residual map itself, so refining the
    solve would only duplicate the next step (on zero and orthant cones, where F is
    affine on a face, a Newton step *is* a step of iterative refinement)."""
    step = approximate_solve(solver, rhs)
    return step if step is not None and all_finite(step) else None


def _trial(residual_map: ResidualMap, point: Residual, step: np.ndarray,
           t: float) -> Residual | None:
    """The residual at ``point + t·step`` if it falls by a sufficient amount, else None."""
    trial = residual_map.step(point, step, t)
    return trial if trial.merit <= (1.0 - SUFFICIENT_DECREASE * t) * point.merit else None


def _line_search(residual_map: ResidualMap, point: Residual, step: np.ndarray,
                 report: RefinementReport) -> Residual | None:
    """The first of the steps ``t = 1, ½, ¼, …`` (``MAX_BACKTRACKS`` halvings) that
    :func:`_trial` accepts, counting the rejected ones in ``report``; None if none is."""
    t = 1.0
    for _ in range(MAX_BACKTRACKS + 1):
        trial = _trial(residual_map, point, step, t)
        if trial is not None:
            return trial
        report.rejected += 1
        t *= 0.5
    return None


def _rebuilt(build: Callable, point: Residual, previous: Differentiable,
             solvers: list[KKTSolver]) -> Differentiable:
    """The derivative built at ``point`` on the faces of ``previous`` (its solver added to
    ``solvers`` where it is a new one)."""
    derivative = build(point.x, point.y, point.s, previous, True)
    if derivative.solver is not previous.solver:
        solvers.append(derivative.solver)
    return derivative


def _newton_step(solver: KKTSolver, rhs: np.ndarray) -> np.ndarray:
    """The Newton step ``K⁻¹ rhs``, refined; where K is singular, its least-squares answer
    without a warning (a Newton step's right-hand side need not lie in K's range; the
    derivative's products are reported as usual)."""
    report, solver.on_defect = solver.on_defect, _ignore_defect
    try:
        return solver.solve(rhs)
    finally:
        solver.on_defect = report


def _gaps(y: np.ndarray, point: Residual, spec: ConeSpec) -> np.ndarray:
    """The complementarity gap of a given solution ``(y, s)`` in each cone block: ``y``
    against ``Π(y − s)`` (``point`` is the residual at ``y − s``)."""
    return block_maxima(np.abs(y - point.y), spec)


def _unresolved(jacobian: ConeJacobian, v: np.ndarray, error: float, gaps: np.ndarray,
                changed: np.ndarray) -> tuple[int, int]:
    """Unresolved inequality rows and cones: within ``error`` plus their complementarity
    gap of a change of face, or marked in ``changed``."""
    unsettled = unsettled_blocks(jacobian, v, error + gaps) | changed
    rows = int(np.count_nonzero(unsettled[:jacobian.spec.nonneg]))
    return rows, int(np.count_nonzero(unsettled)) - rows


def refine_solution(residual_map: ResidualMap, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                    build: Builder, refine: bool = True, max_steps: int = MAX_STEPS,
                    target: float = TARGET_RESIDUAL) -> Refinement:
    """Refine ``(x, y, s)`` by Newton steps on the residual map and set up the derivative
    at the result; check what the result decides.

    Parameters
    ----------
    residual_map : ResidualMap
        The problem's residual map.
    x, y, s : array_like
        The solution, e.g. from a forward solver at its default tolerance (validated by
        ``build``).
    build : callable
        ``build(x, y, s, previous, same_faces)`` sets up the derivative (a
        :class:`Differentiable`, e.g. a ``SolutionDerivative``) at a point, reusing what
        it can of ``previous`` (the derivative at the last point, or None; on the same
        face of every cone if ``same_faces``). The derivative at the returned point is
        the last one built: no factorisation is made twice.
    refine : bool, default True
        Take Newton steps; otherwise only set up the derivative and check the solution.
    max_steps : int, default MAX_STEPS
    target : float, default TARGET_RESIDUAL
        Normalised residual at which refinement stops.

    Returns
    -------
    Refinement
        The derivative, the returned solution (the given arrays when no step was
        accepted) and the report.
    """
    derivative = build(x, y, s, None, False)
    x, y, s = derivative.x, derivative.y, derivative.s
    n = x.size
    point = residual_map(x, y - s)
    spec = derivative.cone_jacobian.spec
    report = RefinementReport(point.merit, point.merit)
    given = point
    nothing = np.zeros(block_count(spec), dtype=bool)
    if not refine:
        report.status = "off"
        report.unresolved_rows, report.unresolved_cones = _unresolved(
            derivative.cone_jacobian, point.v, point.absolute, _gaps(y, point, spec), nothing)
        return Refinement(derivative, x, y, s, report)
    affine = polyhedral(spec)  # a step that keeps D keeps K: the same derivative
    codes = None if affine else face_codes(spec, point.v, point.y, point.s)
    solvers = []  # the solvers of K at the points after the first
    changed = nothing
    error = point.absolute  # estimate of the distance to the solution (in v)
    report.status = "max_steps"
    inexact = True  # unrefined solves, until one fails to give a full step
    stale = False  # whether ``derivative`` is at an earlier point than ``point``
    while point.merit > target and report.steps < max_steps:
        rhs = np.concatenate([-point.dual, point.primal])
        trial = None
        if inexact:
            step = _inexact_step(derivative.solver, rhs)
            trial = None if step is None else _trial(residual_map, point, step, 1.0)
            inexact = trial is not None
        if trial is None:
            step = _newton_step(derivative.solver, rhs)
            trial = _line_search(residual_map, point, step, report)
        error = _max_abs(step[n:])  # Newton's step: the first-order distance to the solution
        if trial is None and stale:
            # The chord step (K at an earlier point) failed: linearise again here.
            derivative, stale = _rebuilt(build, point, derivative, solvers), False
            continue
        if trial is None:
            report.status = "stalled"
            break
        ratio = trial.merit / point.merit
        previous = derivative
        if affine:
            changed = orthant_changes(previous.cone_jacobian, trial.v)
            if not changed.any() and hasattr(previous, "moved_to"):
                derivative = previous.moved_to(trial.x, trial.y, trial.s)
            else:
                derivative = build(trial.x, trial.y, trial.s, previous, not changed.any())
        else:
            new_codes = face_codes(spec, trial.v, trial.y, trial.s)
            changed, codes = new_codes != codes, new_codes
            # On the same faces the next steps are chord steps with this factorisation
            # (lent to the derivative at the last point, built after the loop).
            stale = (not changed.any() and ratio <= CHORD_CONTRACTION
                     and lender_of(previous.solver) is not None)
            if not stale:
                derivative = build(trial.x, trial.y, trial.s, previous, not changed.any())
        if derivative.solver is not previous.solver:
            solvers.append(derivative.solver)
        point = trial
        report.steps += 1
        error *= min(ratio, 1.0)  # the distance left, as the residual shrank
    if stale:
        derivative = _rebuilt(build, point, derivative, solvers)
    if point.merit <= target:
        report.status = "converged"
        changed = nothing
    elif derivative.solver.singular:
        report.status = "singular"
    report.residual_after = point.merit
    report.factorizations = sum(factorizations(solver) for solver in solvers)
    # After a step y = Π(v) and s = Π(v) − v: no complementarity gap is left.
    gaps = _gaps(y, given, spec) if report.steps == 0 else np.zeros(nothing.size)
    report.unresolved_rows, report.unresolved_cones = _unresolved(
        derivative.cone_jacobian, point.v, error, gaps, changed)
    if report.steps == 0:
        return Refinement(derivative, x, y, s, report)
    return Refinement(derivative, point.x, point.y, point.s, report)
