"""Smoothed derivatives: the derivative of the barrier-smoothed problem's solution map.

``derivative_kwargs=dict(smoothing=mu)`` replaces the projection ``Π`` of the residual
map by the smoothed projection ``Π_μ`` (:mod:`diffqcp_np.cones.smoothing`), whose zero
is the solution of the problem with a barrier term of weight ``μ`` (the central-path
point ``y ∘ s = μ e``). Its Jacobian ``DΠ_μ`` has no kink: the derivative is defined
and informative where the exact one is zero (an LP's solution does not move with ``c``
until it jumps to another vertex) or does not exist (degenerate rows, where ``DΠ``
jumps), and it tends to the exact derivative as ``μ → 0`` where that exists.

The smoothed solution is found by Newton steps on the smoothed residual map from the
solution the solver returned (its Jacobian is the derivative's system ``K`` with
``DΠ_μ``, factored by a sparse LU), and the derivative is taken there. ``x``, ``y`` and
``s`` returned to the user stay the solver's; the smoothed solution is the derivative's
(:attr:`SmoothedDerivative.x` and friends).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._sparse import transpose
from .._validation import ProblemData, as_vector
from .._warnings import warn_at_caller
from ..cones.smoothing import SmoothedConeJacobian, check_smoothable, check_smoothing
from .linear_solvers import InaccurateDerivativeWarning
from .patterns import MatrixPattern, QuadraticTerm
from .solution_map import SolutionDerivative

#: Newton steps at most.
MAX_STEPS = 60
#: The smoothed residual (inf-norm, relative to 1 + the data's inf-norms) that ends the
#: Newton steps.
TOLERANCE = 1e-13
#: A step is accepted when it lowers the residual by this fraction of the step length.
ARMIJO = 1e-4
#: Shortest step length tried before the steps stop.
MIN_STEP = 2.0 ** -30


@dataclass(frozen=True)
class SmoothingReport:
    """What the Newton steps to the smoothed solution did.

    Attributes
    ----------
    mu : float
        The smoothing.
    steps : int
        Newton steps taken.
    residual_before, residual_after : float
        Relative inf-norm of the smoothed residual map at the solver's solution and at
        the smoothed solution the derivative is taken at.
    converged : bool
        Whether ``residual_after`` reached :data:`TOLERANCE`.
    """

    mu: float
    steps: int
    residual_before: float
    residual_after: float
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SmoothedDerivative(SolutionDerivative):
    """The exact derivative of the smoothed problem's solution map (see the module
    docstring), at its solution near ``(x, y, s)``.

    Parameters
    ----------
    data : ProblemData
        Zero, nonnegative and second-order cones only.
    x, y, s : ndarray
        A solution of the problem (the Newton steps start there).
    mode : {"direct", "dense", "lsqr", "lsmr"}
        ``direct`` factors K by a sparse LU (the LDLᵀ of the reduced system needs the
        exact cone Jacobian's structure).
    smoothing : float
        ``μ > 0``.
    quadratic : QuadraticTerm, optional
    **solver_options
        As for :class:`SolutionDerivative`; ``factorization`` may only be ``"lu"`` or
        ``"auto"``.

    Raises
    ------
    ValueError
        On cones other than zero, nonnegative and second-order, a ``smoothing`` that is
        not positive, or ``factorization="ldl"``.
    """

    def __init__(self, data: ProblemData, x: np.ndarray, y: np.ndarray, s: np.ndarray,
                 mode: str = "direct", *, smoothing: float,
                 quadratic: QuadraticTerm | None = None, **solver_options: Any) -> None:
        mu = check_smoothing(smoothing)
        check_smoothable(data.cones)
        factorization = solver_options.pop("factorization", "auto")
        if factorization not in ("auto", "lu"):
            raise ValueError("smoothing factors K by a sparse LU: factorization must be "
                             f"'auto' or 'lu', got {factorization!r}")
        if mode == "direct":
            solver_options["factorization"] = "lu"
        quadratic = QuadraticTerm(data.P, data.n) if quadratic is None else quadratic
        point = _SmoothedResidual(data, quadratic, mu)
        x, v, self.smoothing = point.solve(as_vector(x, "x", data.n),
                                           as_vector(y, "y", data.m) - as_vector(s, "s", data.m))
        if not self.smoothing.converged:
            warn_at_caller(
                f"the smoothed solution (smoothing={mu:g}) was found only to a relative "
                f"residual of {self.smoothing.residual_after:.1e} after "
                f"{self.smoothing.steps} Newton steps: the smoothed derivative is "
                "inaccurate (a larger smoothing, or a more accurate solution, helps)",
                InaccurateDerivativeWarning)
        jacobian = SmoothedConeJacobian(v, data.cones, mu)
        y_mu = jacobian.projection
        super().__init__(data, x, y_mu, y_mu - v, mode, quadratic=quadratic,
                         A_pattern=point.pattern, AT=point.AT, cone_jacobian=jacobian,
                         **solver_options)


class _SmoothedResidual:
    """``F_μ(x, v) = (Px + A'Π_μ(v) + c, Ax + Π_μ(v) − v − b)`` and Newton steps to its
    zero."""

    def __init__(self, data: ProblemData, quadratic: QuadraticTerm, mu: float) -> None:
        self.data, self.quadratic, self.mu = data, quadratic, mu
        self.pattern = MatrixPattern(data.A, "A")
        self.AT = transpose(data.A)  # for every step's K and residual
        self.scale = 1.0 + max(_inf_norm(data.b), _inf_norm(data.c),
                               _inf_norm(data.A.data),
                               0.0 if data.P is None else _inf_norm(data.P.data))

    def at(self, x: np.ndarray, v: np.ndarray) -> tuple[SmoothedConeJacobian, np.ndarray]:
        data, P = self.data, self.quadratic.full
        jacobian = SmoothedConeJacobian(v, data.cones, self.mu)
        y = jacobian.projection
        top = self.AT @ y + data.c
        if P is not None:
            top = top + P @ x
        return jacobian, np.concatenate([top, data.A @ x + y - v - data.b])

    def norm(self, residual: np.ndarray) -> float:
        return _inf_norm(residual) / self.scale

    def solve(self, x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                           SmoothingReport]:
        """Damped Newton steps from ``(x, v)``; the last iterate and the report."""
        n = self.data.n
        jacobian, residual = self.at(x, v)
        before = current = self.norm(residual)
        steps = 0
        while current > TOLERANCE and steps < MAX_STEPS:
            system = SolutionDerivative(
                self.data, x, jacobian.projection, jacobian.projection - v, "direct",
                quadratic=self.quadratic, A_pattern=self.pattern, AT=self.AT,
                cone_jacobian=jacobian, factorization="lu")
            # K [dx; dv] = [−F₁; F₂] is the Newton step (K's second block row is −F₂')
            step = system.solver.solve(np.concatenate([-residual[:n], residual[n:]]))
            length = 1.0
            while length >= MIN_STEP:
                trial_x, trial_v = x + length * step[:n], v + length * step[n:]
                trial_jacobian, trial_residual = self.at(trial_x, trial_v)
                trial = self.norm(trial_residual)
                if trial <= (1.0 - ARMIJO * length) * current:
                    break
                length *= 0.5
            else:
                break  # no descent: the residual has stalled at rounding
            x, v, jacobian, residual, current = (trial_x, trial_v, trial_jacobian,
                                                 trial_residual, trial)
            steps += 1
        report = SmoothingReport(self.mu, steps, before, current, current <= TOLERANCE)
        return x, v, report


def _inf_norm(values: np.ndarray) -> float:
    return float(np.max(np.abs(values))) if values.size else 0.0
