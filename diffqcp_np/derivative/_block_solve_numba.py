"""A refined K or K' solve in one compiled call, and compiled products with K and K',
for a block-diagonal D given in CSC form (no lifted SOC blocks).

This is :meth:`ReducedSystem.reduce`, the refined M solve and
:meth:`ReducedSystem.recover` fused, as :mod:`._diagonal_solve_numba` does for a diagonal D,
with the null-space projector ``Π₀`` as a second block-diagonal matrix. Exponential,
power and small second-order cone blocks take this path; at moderate sizes the Python
plumbing of the stepwise path (and SciPy's products with K) cost as much as the
triangular solves.
"""

from __future__ import annotations

import numba
import numpy as np

from .._sparse import add_csc_product, add_csc_transpose_product
from ._ldl import _refined_solve


@numba.njit(nogil=True, cache=True)
def block_refined_solve(Lp, Li, Lx, Dinv, perm, dense_from, Mp, Mi, Mx, Ap, Ai, Ax,
                        Dp, Di, Dx, Np, Ni, Nx, kept, r, transpose, max_steps, tol):
    """Solve ``K z = r`` (or ``K' z = r`` if ``transpose``) through M.

    Parameters
    ----------
    Lp, Li, Lx, Dinv, perm, dense_from
        LDLᵀ factors of the regularised M (see :class:`~._ldl.LDLFactor`).
    Mp, Mi, Mx
        Upper triangle of the exact M, refined against.
    Ap, Ai, Ax
        A in CSC form (``m × n``).
    Dp, Di, Dx, Np, Ni, Nx
        D and ``Π₀`` in CSC form (``m × m``, symmetric).
    kept : ndarray
        The rows where D has entries, increasing: the last block of M.
    r : ndarray (n + m,)
    transpose : bool
    max_steps : int
    tol : float
        Refinement rules of :func:`~._ldl._refined_solve`.

    Returns
    -------
    z : ndarray (n + m,)
    residual : float
        Relative residual of the M system.
    """
    n = Ap.shape[0] - 1
    m = r.shape[0] - n
    size = kept.shape[0]
    r2 = r[n:]
    rhs = np.empty(n + size)
    for j in range(n):  # loops, not slice assignments: those compile a shape check
        rhs[j] = r[j]   # for seconds
    work = np.zeros(m)
    if transpose:  # M [z₁; u] = [r₁ + A'Π₀r₂; (r₂ − Π₀r₂)[kept]]
        if Nx.shape[0]:  # D has a null space
            add_csc_product(Np, Ni, Nx, r2, work, 1.0)
            add_csc_transpose_product(Ap, Ai, Ax, work, rhs[:n], 1.0)
        for t in range(size):
            rhs[n + t] = r2[kept[t]] - work[kept[t]]
    else:  # M [dx; t] = [r₁; −(D r₂)[kept]]
        add_csc_product(Dp, Di, Dx, r2, work, 1.0)
        for t in range(size):
            rhs[n + t] = -work[kept[t]]
    sol, residual = _refined_solve(Lp, Li, Lx, Dinv, perm, dense_from, Mp, Mi, Mx, rhs,
                                   max_steps, tol)
    z = np.empty(n + m)
    for j in range(n):
        z[j] = sol[j]
    expanded = np.zeros(m)
    for t in range(size):
        expanded[kept[t]] = sol[n + t]
    if transpose:  # z₂ = Π₀r₂ − D u
        for i in range(m):
            z[n + i] = work[i]
        add_csc_product(Dp, Di, Dx, expanded, z[n:], -1.0)
    else:  # dv = t + Π₀(r₂ + A dx)
        for i in range(m):
            z[n + i] = expanded[i]
        if Nx.shape[0]:  # D has a null space
            carried = r2.copy()
            add_csc_product(Ap, Ai, Ax, sol[:n], carried, 1.0)
            add_csc_product(Np, Ni, Nx, carried, z[n:], 1.0)
    return z, residual


@numba.njit(nogil=True, cache=True)
def kkt_product(Pp, Pi, Px, Ap, Ai, Ax, Dp, Di, Dx, z, transpose):
    """``K z`` (or ``K' z``) for ``K = [[P, A'D], [−A, I − D]]``, P full symmetric.

    Parameters
    ----------
    Pp, Pi, Px
        P in CSC form (``n × n``; an empty matrix for none).
    Ap, Ai, Ax
        A in CSC form (``m × n``).
    Dp, Di, Dx
        D in CSC form (``m × m``, symmetric).
    z : ndarray (n + m,)
    transpose : bool
    """
    n = Ap.shape[0] - 1
    m = z.shape[0] - n
    z1, z2 = z[:n], z[n:]
    out = np.zeros(n + m)
    top, bottom = out[:n], out[n:]
    add_csc_product(Pp, Pi, Px, z1, top, 1.0)
    for i in range(m):
        bottom[i] = z2[i]
    add_csc_product(Dp, Di, Dx, z2, bottom, -1.0)
    if transpose:  # [P z₁ − A'z₂; D A z₁ + (I − D) z₂]
        add_csc_transpose_product(Ap, Ai, Ax, z2, top, -1.0)
        product = np.zeros(m)
        add_csc_product(Ap, Ai, Ax, z1, product, 1.0)
        add_csc_product(Dp, Di, Dx, product, bottom, 1.0)
    else:  # [P z₁ + A'D z₂; −A z₁ + (I − D) z₂]
        product = np.zeros(m)
        add_csc_product(Dp, Di, Dx, z2, product, 1.0)
        add_csc_transpose_product(Ap, Ai, Ax, product, top, 1.0)
        add_csc_product(Ap, Ai, Ax, z1, bottom, -1.0)
    return out
