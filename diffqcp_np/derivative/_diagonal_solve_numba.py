"""A refined K or K' solve in one compiled call, for a diagonal D (zero and orthant
cones only).

This is :meth:`ReducedSystem.reduce`, the refined M solve and
:meth:`ReducedSystem.recover` fused: with ``D = diag(d)`` the null-space projector is
``Π₀ = diag(d == 0)`` and M keeps the rows ``kept`` where ``d ≠ 0``, so both reductions
take a few passes over ``r`` and one product with A. At moderate sizes the Python
plumbing of the general path costs as much as the two triangular solves.
"""

from __future__ import annotations

import numba
import numpy as np

from .._sparse import add_csc_product, add_csc_transpose_product
from ._ldl import _refined_solve


@numba.njit(nogil=True, cache=True)
def diagonal_refined_solve(Lp, Li, Lx, Dinv, perm, dense_from, Mp, Mi, Mx, Ap, Ai, Ax, d,
                           kept, r, transpose, max_steps, tol):
    """Solve ``K z = r`` (or ``K' z = r`` if ``transpose``) for ``D = diag(d)``.

    Parameters and returns as for :func:`~._block_solve_numba.block_refined_solve`, with the
    diagonal ``d`` (length m) in place of D's and Π₀'s CSC arrays (``Π₀ = diag(d == 0)``)
    and ``kept`` the rows where ``d ≠ 0``.
    """
    n = Ap.shape[0] - 1
    m = d.shape[0]
    size = kept.shape[0]
    rhs = np.empty(n + size)
    null_part = np.zeros(m)  # Π₀ r₂ (transpose) or Π₀(r₂ + A dx) (not)
    if transpose:
        null_nonzero = False
        for i in range(m):
            if d[i] == 0.0 and r[n + i] != 0.0:
                null_part[i] = r[n + i]
                null_nonzero = True
        for j in range(n):  # r₁ + A'Π₀r₂
            rhs[j] = r[j]
        if null_nonzero:  # not for cotangents of x and y alone
            add_csc_transpose_product(Ap, Ai, Ax, null_part, rhs[:n], 1.0)
        for t in range(size):
            rhs[n + t] = r[n + kept[t]]
    else:
        for j in range(n):
            rhs[j] = r[j]
        for t in range(size):
            i = kept[t]
            rhs[n + t] = -d[i] * r[n + i]
    sol, residual = _refined_solve(Lp, Li, Lx, Dinv, perm, dense_from, Mp, Mi, Mx, rhs, max_steps,
                                   tol)
    z = np.empty(n + m)
    for j in range(n):
        z[j] = sol[j]
    if transpose:  # z₂ = Π₀r₂ − D u
        for i in range(m):
            z[n + i] = null_part[i]
        for t in range(size):
            i = kept[t]
            z[n + i] -= d[i] * sol[n + t]
    else:  # dv = t + Π₀(r₂ + A dx)
        if size < m:  # some rows in D's null space
            add_csc_product(Ap, Ai, Ax, sol[:n], null_part, 1.0)
        for i in range(m):
            z[n + i] = r[n + i] + null_part[i] if d[i] == 0.0 else 0.0
        for t in range(size):
            z[n + kept[t]] = sol[n + t]
    return z, residual
