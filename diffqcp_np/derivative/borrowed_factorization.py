"""A solver of the derivative system that borrows the factorisation of K at a nearby point.

After a refinement step (:mod:`~diffqcp_np.derivative.solution_refinement`) that keeps
every cone on its face, K at the new point differs from K at the old one only through
the curvature of the cones' boundaries (second-order, PSD, exponential and power
blocks), by about the length of the step. The old factorisation then solves the new K
approximately, and iterative refinement against the new K makes the answer exact: a
solve costs about two solves with a factorisation of its own, instead of a new
factorisation. Where refinement does not get there (the points are too far apart), or
once the borrowed factorisation has served a number of solves (many ``D``/``DT`` calls
at one solution), the new K is factored after all, and that factorisation is kept.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse.linalg as spla

from .linear_solvers import (
    DefectHandler,
    DenseSolver,
    DirectSolver,
    KKTSolver,
    ReducedDirectSolver,
    warn_defect,
)
from .norms import refine

#: Solvers that factor K (and whose factorisation can be lent).
FACTORING = (DirectSolver, ReducedDirectSolver, DenseSolver)


def lender_of(solver: KKTSolver) -> KKTSolver | None:
    """The solver whose factorisation ``solver`` uses, if it may be lent (a factorising,
    nonsingular solver); else None."""
    if isinstance(solver, BorrowedFactorSolver):
        solver = solver.factored
    if isinstance(solver, FACTORING) and not solver.singular:
        return solver
    return None


def approximate_solve(solver: KKTSolver, r: np.ndarray) -> np.ndarray | None:
    """``K⁻¹ r`` from the factorisation that ``solver`` uses (its lender's, if it borrows
    one: then of K at the earlier point), unrefined; None where it has none (iterative
    modes, a singular K)."""
    lender = lender_of(solver)
    return None if lender is None else lender.factor_solve(r, False)


def factorizations(solver: KKTSolver) -> int:
    """How many factorisations of K (or of its reduction) ``solver`` made: none for a
    borrowing solver that did not factor its own K."""
    if isinstance(solver, BorrowedFactorSolver):
        return 0 if solver.own is None else factorizations(solver.own)
    if isinstance(solver, ReducedDirectSolver):
        return 1 + solver.uses_fallback
    return int(isinstance(solver, FACTORING))


class BorrowedFactorSolver(KKTSolver):
    """Solves K (and K') with the factorisation of ``lender``, refined against K itself.

    Each answer is the lender's factor solve (:meth:`~.linear_solvers.DirectSolver.
    factor_solve`), refined (at most ``MAX_REFINEMENT`` steps) until its relative
    residual with K is below ``REFINED``. If it stays above ``ACCEPTED``, or after
    ``BORROWED_SOLVES`` solves, K is factored (``factor()``) and that solver answers from
    then on.

    Parameters
    ----------
    lender : KKTSolver
        A factorising, nonsingular solver of K at a nearby point (see :func:`lender_of`).
    operator : callable
        Returns this point's K as a LinearOperator (``matvec``, ``rmatvec``).
    factor : callable
        Returns a solver that factors this point's K.
    on_defect : callable, default :func:`~.linear_solvers.warn_defect`
        As for :class:`~.linear_solvers.KKTSolver` (where this K, once factored, turns
        out singular).
    """

    name = "direct"
    MAX_REFINEMENT = 10
    REFINED = 1e-13
    ACCEPTED = 1e-10
    BORROWED_SOLVES = 8

    def __init__(self, lender: KKTSolver, operator: Callable[[], spla.LinearOperator],
                 factor: Callable[[], KKTSolver],
                 on_defect: DefectHandler = warn_defect) -> None:
        super().__init__(None, operator, on_defect)
        self.lender = lender
        self._factor = factor
        self.own: KKTSolver | None = None
        self.solves = 0

    @property
    def factored(self) -> KKTSolver:
        """The solver whose factorisation answers: this K's own once factored, else the
        lender."""
        return self.lender if self.own is None else self.own

    def _solve(self, r: np.ndarray, transpose: bool) -> tuple[np.ndarray, float]:
        if self.own is None and self.solves < self.BORROWED_SOLVES:
            self.solves += 1
            z, residual = refine(lambda v: self.lender.factor_solve(v, transpose),
                                 lambda v: self._matvec(v, transpose), r,
                                 self.MAX_REFINEMENT, self.REFINED)
            if residual <= self.ACCEPTED:
                return z, residual
        if self.own is None:
            self.own = self._factor()
            if self.own.singular:  # least squares from now on (see KKTSolver.solve_with_magnitude)
                self._mark_singular(self.own.singular_detail)
                return self._least_squares_answer(r, transpose)
        return self.own._solve(r, transpose)
