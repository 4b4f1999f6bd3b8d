"""Solution refinement for the batched dense derivative, a block of problems at a time.

The Newton steps of :mod:`~diffqcp_np.derivative.solution_refinement` (the same residual
map, norm, line search, stopping rules, detection and report), with every per-problem
operation done for a block of same-structure problems at once: the residuals in one
compiled pass, the projections and cone Jacobians through one combined cone product,
the steps as one compiled pass of solves with the problems' dense factors, the line
search as vector operations over the problems still searching. A problem's factors are
kept while a step leaves its ``D`` unchanged (an orthant problem on the same faces: K
is the same matrix) and refactored, with the other changed problems, otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from .derivative.solution_refinement import (
    MAX_BACKTRACKS,
    MAX_STEPS,
    SUFFICIENT_DECREASE,
    TARGET_RESIDUAL,
    RefinementReport,
    block_maxima,
    face_codes,
    project_dual,
    unsettled_blocks,
)

if TYPE_CHECKING:
    from ._dense_batch import DenseBatchDerivative


@numba.njit(nogil=True, cache=True)
def _residuals(A_rows, A_cols, A_vals, P_vals, U_rows, U_cols, U_a, U_b, U_weight, B, C, X,
               Y, S, DUAL, PRIMAL, stats):  # pragma: no cover - compiled
    """``dual = Px + A'y + c`` and ``primal = Ax + s − b`` for each problem (row) of a
    block, ``A`` on the shared pattern (``A_rows``, ``A_cols``), the symmetric ``P`` from
    its stored values through the union-pattern maps ``U_*`` (as in
    :func:`~diffqcp_np._dense_batch._assemble_kernel`).

    ``stats[b]``: the largest magnitudes of ``c``, ``Px``, ``A'y``, ``b``, ``Ax``, ``s``,
    ``dual`` and ``primal``, and the sums of squares of ``dual`` and ``primal`` (the
    numbers of :func:`~diffqcp_np.derivative._residual_kernel.residual_parts`).
    """
    count, n = X.shape
    m = Y.shape[1]
    nnz_P = P_vals.shape[1]
    Px, ATy, Ax = np.empty(n), np.empty(n), np.empty(m)
    for b in range(count):
        Px[:] = 0.0
        ATy[:] = 0.0
        Ax[:] = 0.0
        for q in range(U_rows.size):
            a, c = U_a[q], U_b[q]
            pa = P_vals[b, a] if a < nnz_P else 0.0
            pc = P_vals[b, c] if c < nnz_P else 0.0
            Px[U_rows[q]] += U_weight * (pa + pc) * X[b, U_cols[q]]
        for q in range(A_rows.size):
            i, j = A_rows[q], A_cols[q]
            ATy[j] += A_vals[b, q] * Y[b, i]
            Ax[i] += A_vals[b, q] * X[b, j]
        for t in range(10):
            stats[b, t] = 0.0
        for j in range(n):
            d = Px[j] + ATy[j] + C[b, j]
            DUAL[b, j] = d
            stats[b, 0] = max(stats[b, 0], abs(C[b, j]))
            stats[b, 1] = max(stats[b, 1], abs(Px[j]))
            stats[b, 2] = max(stats[b, 2], abs(ATy[j]))
            stats[b, 6] = max(stats[b, 6], abs(d))
            stats[b, 8] += d * d
        for i in range(m):
            r = Ax[i] + S[b, i] - B[b, i]
            PRIMAL[b, i] = r
            stats[b, 3] = max(stats[b, 3], abs(B[b, i]))
            stats[b, 4] = max(stats[b, 4], abs(Ax[i]))
            stats[b, 5] = max(stats[b, 5], abs(S[b, i]))
            stats[b, 7] = max(stats[b, 7], abs(r))
            stats[b, 9] += r * r


class _BlockResidual:
    """``F`` at the points of a block of problems, with each problem's scales fixed at the
    first evaluation (as :class:`~diffqcp_np.derivative.solution_refinement.ResidualMap`).
    """

    def __init__(self, batch: DenseBatchDerivative, start: int, stop: int) -> None:
        L = self.layout = batch.layout
        self.block = L.block(stop - start)
        self.A_vals, self.B, self.C = (batch.A_vals[start:stop], batch.B[start:stop],
                                       batch.C[start:stop])
        self.P_vals = batch.P_vals[start:stop]
        self.scales: np.ndarray | None = None

    def __call__(self, X: np.ndarray, V: np.ndarray) -> dict:
        """``F`` at ``(X, V)``: ``Y``, ``S``, ``dual``, ``primal`` (stacked), ``merit`` and
        ``absolute`` (per problem)."""
        L, block = self.layout, self.block
        Y = block.uncombined(project_combined(block, V))
        S = Y - V
        count = X.shape[0]
        dual, primal = np.empty((count, L.n)), np.empty((count, L.m))
        stats = np.empty((count, 10))
        _residuals(L.A_rows, L.A_cols, self.A_vals, self.P_vals, L.U_rows, L.U_cols, L.U_a,
                   L.U_b, L.U_weight, self.B, self.C, X, Y, S, dual, primal, stats)
        if self.scales is None:
            self.scales = np.stack([stats[:, 0:3].max(axis=1), stats[:, 3:6].max(axis=1)], 1)
            self.scales[self.scales == 0.0] = 1.0
        merit = np.sqrt(stats[:, 8] / self.scales[:, 0] ** 2 + stats[:, 9] / self.scales[:, 1] ** 2)
        return dict(X=X, V=V, Y=Y, S=S, dual=dual, primal=primal, merit=merit,
                    absolute=np.maximum(stats[:, 6], stats[:, 7]))


def project_combined(block, V: np.ndarray) -> np.ndarray:
    """``Π_{K*}`` of the rows of ``V`` through the combined cone product (combined order)."""
    return project_dual(block.combined(V), block.spec)


def _per_problem(values: np.ndarray, owner: np.ndarray, count: int) -> np.ndarray:
    """How many of a block's cone blocks are flagged in ``values``, per problem."""
    return np.bincount(owner, weights=values, minlength=count).astype(np.int64)


def refine_block(batch: DenseBatchDerivative, start: int, stop: int) -> None:
    """Refine the solutions of members ``start:stop`` of ``batch`` (factored already) in
    place: ``X``, ``Y``, ``S``, the cone Jacobians' values and the factors of the
    members whose ``D`` changed; ``reports[k]`` for every member refined here (members
    whose factorisation is or becomes singular are left to their per-problem
    derivative, which refines them).
    """
    L = batch.layout
    count, n = stop - start, L.n
    residual = _BlockResidual(batch, start, stop)
    block = residual.block
    spec, owner = block.spec, block.owner
    rows = np.arange(owner.size) < spec.nonneg  # the combined blocks that are orthant rows
    V0 = batch.Y[start:stop] - batch.S[start:stop]
    point = residual(batch.X[start:stop].copy(), V0)
    before = point["merit"].copy()
    singular = batch.singular_members(start, stop)
    gaps = block_maxima(np.abs(block.combined(batch.Y[start:stop] - point["Y"])), spec)
    codes = face_codes(spec, block.combined(point["V"]), block.combined(point["Y"]),
                       block.combined(point["S"]))
    steps, rejected, factored = (np.zeros(count, np.int64) for _ in range(3))
    stalled = np.zeros(count, dtype=bool)
    changed = np.zeros(owner.size, dtype=bool)
    error = point["absolute"].copy()
    jac = None
    for _ in range(MAX_STEPS):
        active = (point["merit"] > TARGET_RESIDUAL) & ~singular & ~stalled
        if not active.any():
            break
        Z = np.concatenate([-point["dual"], point["primal"]], axis=1)
        batch.solve(start, stop, Z, ~active)
        dx, dv = Z[:, :n], Z[:, n:]
        error[active] = np.abs(dv[active]).max(axis=1, initial=0.0)
        t = np.where(active, 1.0, 0.0)
        searching, accepted = active.copy(), np.zeros(count, dtype=bool)
        trial = point
        for _ in range(MAX_BACKTRACKS + 1):
            candidate = residual(point["X"] + t[:, None] * dx, point["V"] + t[:, None] * dv)
            ok = searching & (candidate["merit"] <= (1.0 - SUFFICIENT_DECREASE * t)
                              * point["merit"])
            trial = candidate if np.array_equal(ok, active) else _select(ok, candidate, trial)
            accepted |= ok
            rejected += searching & ~ok
            searching &= ~ok
            if not searching.any():
                break
            t[searching] *= 0.5
        stalled |= searching
        if not accepted.any():
            break
        ratio = np.where(accepted, trial["merit"] / np.where(accepted, point["merit"], 1.0), 1.0)
        new_codes = face_codes(spec, block.combined(trial["V"]), block.combined(trial["Y"]),
                               block.combined(trial["S"]))
        moved = accepted[owner]
        changed = np.where(moved, new_codes != codes, changed)
        codes, point = new_codes, trial
        steps += accepted
        error = np.where(accepted, error * np.minimum(ratio, 1.0), error)
        jac = block.jacobian(point["V"])
        D = block.values(L, jac)
        stale = accepted & np.any(D != batch.D_vals[start:stop], axis=1)
        if stale.any():
            batch.refactor(start + np.flatnonzero(stale), D[stale])
            factored += stale
            singular |= batch.singular_members(start, stop)
    converged = point["merit"] <= TARGET_RESIDUAL
    refined = (steps > 0) & ~singular
    batch.X[start:stop][refined] = point["X"][refined]
    batch.Y[start:stop][refined] = point["Y"][refined]
    batch.S[start:stop][refined] = point["S"][refined]
    if jac is None or not refined.all():
        jac = block.jacobian(batch.Y[start:stop] - batch.S[start:stop])
    V = batch.Y[start:stop] - batch.S[start:stop]
    radius = error[owner] + np.where(refined[owner], 0.0, gaps)
    unsettled = unsettled_blocks(jac, block.combined(V), radius) | (changed & ~converged[owner])
    unresolved_rows = _per_problem(unsettled & rows, owner, count)
    unresolved_cones = _per_problem(unsettled & ~rows, owner, count)
    after = np.where(refined, point["merit"], before)
    for k in np.flatnonzero(~singular):
        status = ("converged" if after[k] <= TARGET_RESIDUAL else "stalled" if stalled[k]
                  else "max_steps")
        batch.reports[start + k] = RefinementReport(
            float(before[k]), float(after[k]), int(steps[k]), int(rejected[k]),
            int(factored[k]), int(unresolved_rows[k]), int(unresolved_cones[k]), status)


def _select(mask: np.ndarray, new: dict, old: dict) -> dict:
    """The problems of ``new`` where ``mask``, the others of ``old``."""
    out = {}
    for key, value in new.items():
        m = mask if value.ndim == 1 else mask[:, None]
        out[key] = np.where(m, value, old[key])
    return out
