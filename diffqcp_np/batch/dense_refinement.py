"""Solution refinement for the batched dense derivative, a block of problems at a time.

The Newton steps of :mod:`~diffqcp_np.derivative.solution_refinement` (the same residual
map, norm, line search, stopping rules, detection and report), with every per-problem
operation done for a block of same-structure problems at once: the residuals in one
compiled pass, the projections and cone Jacobians through one combined cone product,
the steps as one compiled pass of solves with the problems' dense factors, the line
search as vector operations over the problems still searching. A problem's factors are
kept while a step leaves its ``D`` unchanged (an orthant problem on the same faces: K
is the same matrix) and refactored, with the other changed problems, otherwise.

Where the cones are the zero cone and the orthant (LPs, QPs), the same steps run in one
compiled pass, member by member, refactoring in the kernel
(:func:`~diffqcp_np.batch._dense_numba._refine_orthant_kernel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._dense_numba import _refine_orthant_kernel, _residuals
from ..derivative.linear_solvers import SINGULAR_PIVOT_RATIO
from ..derivative.solution_refinement import (
    MAX_BACKTRACKS,
    MAX_STEPS,
    SUFFICIENT_DECREASE,
    TARGET_RESIDUAL,
    RefinementReport,
    block_maxima,
    face_codes,
    polyhedral,
    project_dual,
    unsettled_blocks,
)

if TYPE_CHECKING:
    from .dense import DenseBatchDerivative


_FIELDS = ("X", "V", "Y", "S", "dual", "primal", "merit", "absolute")


class _Points:
    """The current points of a block of problems and their residuals (each field an array
    with one row per problem), and the residual map ``F`` with each problem's scales
    fixed at its first evaluation (as :class:`~diffqcp_np.derivative.solution_refinement.
    ResidualMap`)."""

    def __init__(self, batch: DenseBatchDerivative, start: int, stop: int) -> None:
        self.batch, self.start = batch, start
        self.layout = batch.layout
        count = stop - start
        self.scales = np.zeros((count, 2))
        self.fields = self.evaluate(np.arange(count), batch.X[start:stop].copy(),
                                    batch.Y[start:stop] - batch.S[start:stop], first=True)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.fields[key]

    def evaluate(self, rows: np.ndarray, X: np.ndarray, V: np.ndarray,
                 first: bool = False) -> dict:
        """``F`` at ``(X, V)`` for the block's problems ``rows``: the fields of
        :data:`_FIELDS`, one row per entry of ``rows``."""
        L, batch, start = self.layout, self.batch, self.start
        block = L.block(rows.size)
        Y = block.uncombined(project_dual(block.combined(V), block.spec))
        S = Y - V
        dual, primal = np.empty((rows.size, L.n)), np.empty((rows.size, L.m))
        stats = np.empty((rows.size, 10))
        span = rows + start
        _residuals(span, L.A_indptr, L.A_indices, batch.A_vals, L.U_indptr, L.U_rows,
                   batch.P_union, batch.B, batch.C, X, Y, S, dual, primal, stats)
        if first:
            scales = np.stack([stats[:, 0:3].max(axis=1), stats[:, 3:6].max(axis=1)], 1)
            scales[scales == 0.0] = 1.0
            self.scales[rows] = scales
        scales = self.scales[rows]
        merit = np.sqrt(stats[:, 8] / scales[:, 0] ** 2 + stats[:, 9] / scales[:, 1] ** 2)
        return dict(X=X, V=V, Y=Y, S=S, dual=dual, primal=primal, merit=merit,
                    absolute=np.maximum(stats[:, 6], stats[:, 7]))

    def take(self, rows: np.ndarray, values: dict, mask: np.ndarray | None = None) -> None:
        """Make ``values`` (rows for ``rows``; only where ``mask``) the current points."""
        if mask is not None:
            rows, values = rows[mask], {key: value[mask] for key, value in values.items()}
        for key in _FIELDS:
            self.fields[key][rows] = values[key]


def _faces(block, values: dict) -> np.ndarray:
    """Face codes ``(problems, blocks)`` at the points in ``values``."""
    return block.by_problem(face_codes(block.spec, block.combined(values["V"]),
                                       block.combined(values["Y"]),
                                       block.combined(values["S"])))


def _line_search(points: _Points, rows: np.ndarray, dx: np.ndarray, dv: np.ndarray,
                 rejected: np.ndarray) -> np.ndarray:
    """Backtrack along ``(dx, dv)`` for the problems ``rows``: the points that lower the
    residual enough become the current ones. Returns which of ``rows`` moved."""
    t = np.ones(rows.size)
    searching = np.ones(rows.size, dtype=bool)
    merit = points["merit"][rows]
    for _ in range(MAX_BACKTRACKS + 1):
        live = np.flatnonzero(searching)
        sub = rows[live]
        step = t[live, None]
        trial = points.evaluate(sub, points["X"][sub] + step * dx[live],
                                points["V"][sub] + step * dv[live])
        ok = trial["merit"] <= (1.0 - SUFFICIENT_DECREASE * t[live]) * merit[live]
        points.take(sub, trial, ok)
        rejected[sub[~ok]] += 1
        searching[live[ok]] = False
        if not searching.any():
            break
        t[searching] *= 0.5
    return ~searching


#: ``status`` codes of the refinement outcomes, as the report names them.
_STATUS_NAMES = np.array(["converged", "stalled", "max_steps"])


def refine_block(batch: DenseBatchDerivative, start: int, stop: int) -> None:
    """Refine the solutions of members ``start:stop`` of ``batch`` (factored already) in
    place: ``X``, ``Y``, ``S``, the cone Jacobians' values and the factors of the
    members whose ``D`` changed; ``reports[k]`` for every member refined here (members
    whose factorisation is or becomes singular are left to their per-problem
    derivative, which refines them).

    Where the cones are the zero cone and the orthant, one compiled pass refines each
    member on its own (:func:`~._dense_numba._refine_orthant_kernel`); otherwise
    each step works on the members still refining, through the combined cone product.
    """
    L = batch.layout
    if polyhedral(L.spec) and L.diagonal_D and batch.refactors_compiled:
        outcome = _refine_orthant(batch, start, stop)
    else:
        outcome = _refine_cones(batch, start, stop)
    singular, *fields, status = outcome
    kept = np.flatnonzero(~singular)
    columns = [a[kept].tolist() for a in fields] + [_STATUS_NAMES[status[kept]].tolist()]
    for k, *values in zip(kept.tolist(), *columns):
        batch.reports[start + k] = RefinementReport(*values)


def _refine_orthant(batch: DenseBatchDerivative, start: int, stop: int) -> tuple:
    """:func:`refine_block` for zero and orthant cones, compiled; returns what
    :func:`_refine_cones` returns."""
    L = batch.layout
    count = stop - start
    singular = np.zeros(count, dtype=bool)
    before, after = np.zeros(count), np.zeros(count)
    steps, rejected, factored, rows, status = (np.zeros(count, np.int64) for _ in range(5))
    _refine_orthant_kernel(start, stop, L.spec.zero, batch.LU, batch.nk, batch.order,
                           batch.piv, batch.pivot_ratio, batch.A_vals, batch.P_union,
                           batch.D_vals, batch.B, batch.C, batch.X, batch.Y, batch.S,
                           L.A_rows, L.A_cols, L.U_rows, L.U_cols, L.D_rows, L.D_cols,
                           L.Ar_ptr, L.Ar_cols, L.Ar_pos, L.n, SINGULAR_PIVOT_RATIO,
                           singular, before, after, steps, rejected, factored, rows, status)
    return (singular, before, after, steps, rejected, factored, rows,
            np.zeros(count, np.int64), status)


def _refine_cones(batch: DenseBatchDerivative, start: int, stop: int) -> tuple:
    """:func:`refine_block` for any cones, a step for all the members still refining at a
    time. Returns, per member: whether it is singular (then unrefined and unreported),
    the report's ``before``, ``after``, ``steps``, ``rejected``, ``factored``, unresolved
    rows and cones, and the status code (:data:`_STATUS_NAMES`)."""
    L = batch.layout
    count, n = stop - start, L.n
    points = _Points(batch, start, stop)
    block = L.block(count)
    before = points["merit"].copy()
    singular = batch.singular_members(start, stop)
    gaps = block.by_problem(block_maxima(
        np.abs(block.combined(batch.Y[start:stop] - points["Y"])), block.spec))
    codes = _faces(block, points.fields)
    is_row = np.arange(codes.shape[1]) < L.spec.nonneg  # the orthant rows' blocks
    steps, rejected, factored = (np.zeros(count, np.int64) for _ in range(3))
    stalled = np.zeros(count, dtype=bool)
    changed = np.zeros(codes.shape, dtype=bool)
    error = points["absolute"].copy()
    for _ in range(MAX_STEPS):
        rows = np.flatnonzero((points["merit"] > TARGET_RESIDUAL) & ~singular & ~stalled)
        if not rows.size:
            break
        Z = np.concatenate([-points["dual"][rows], points["primal"][rows]], axis=1)
        batch.solve(start + rows, Z)
        previous = points["merit"][rows]
        error[rows] = np.abs(Z[:, n:]).max(axis=1, initial=0.0)
        moved = _line_search(points, rows, Z[:, :n], Z[:, n:], rejected)
        stalled[rows[~moved]] = True
        acc = rows[moved]
        if not acc.size:
            break
        steps[acc] += 1
        error[acc] *= np.minimum(points["merit"][acc] / previous[moved], 1.0)
        sub = L.block(acc.size)
        new_codes = _faces(sub, {key: points[key][acc] for key in ("V", "Y", "S")})
        changed[acc] = new_codes != codes[acc]
        codes[acc] = new_codes
        D = sub.jacobian_values(L, points["V"][acc])
        stale = np.any(D != batch.D_vals[start + acc], axis=1)
        if stale.any():
            batch.refactor(start + acc[stale], D[stale])
            factored[acc[stale]] += 1
            singular |= batch.singular_members(start, stop)
    refined = (steps > 0) & ~singular
    for key, field in (("X", batch.X), ("Y", batch.Y), ("S", batch.S)):
        field[start:stop][refined] = points[key][refined]
    V = batch.Y[start:stop] - batch.S[start:stop]
    converged = points["merit"] <= TARGET_RESIDUAL
    radius = error[:, None] + np.where(refined[:, None], 0.0, gaps)
    unsettled = block.by_problem(unsettled_blocks(block.jacobian(V), block.combined(V),
                                                  block.by_kind(radius)))
    unsettled |= changed & ~converged[:, None]
    unresolved_rows = np.count_nonzero(unsettled & is_row, axis=1)
    unresolved_cones = np.count_nonzero(unsettled & ~is_row, axis=1)
    after = np.where(refined, points["merit"], before)
    status = np.where(after <= TARGET_RESIDUAL, 0, np.where(stalled, 1, 2))
    return (singular, before, after, steps, rejected, factored, unresolved_rows,
            unresolved_cones, status)
