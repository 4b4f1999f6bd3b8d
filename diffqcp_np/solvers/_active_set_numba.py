"""Compiled dual active-set method (Goldfarb-Idnani) for small strictly convex QPs.

Solves one problem of :mod:`._batched_ipm_numba`'s form with zero and orthant cones only
and a positive definite ``P``,

    minimize ½x'Px + q'x   subject to  A_z x = b_z,  A_l x ≤ b_l,

by the dual method of Goldfarb and Idnani (1983), as quadprog does: start at the
unconstrained minimiser, add the most violated constraint, keep the factorisation
``P⁻¹ = J J'`` with ``J' N_act = [R; 0]`` (``R`` upper triangular) up to date with Givens
rotations, and drop a constraint when its multiplier would turn negative. Each
addition costs O(n²); the result is a vertex of the active set, complementary to
rounding (``y = 0`` off the active set, ``s = 0`` on it), which is what the derivative
needs. Rows are the constraint normals ``n_i = −a_i`` (``n_i'x ≥ −b_i``), so that the
multipliers are the dual variables ``y``.

:func:`solve_qp` reports failure (``P`` not positive definite, inconsistent or
degenerate constraints it cannot resolve, the step limit) instead of guessing: the
caller then uses the interior-point method, which also certifies infeasibility.
"""

from __future__ import annotations

import numba
import numpy as np

from ..derivative._dense_block_numba import cholesky_in_place

#: Relative size below which a pivot of ``P``'s Cholesky factor counts as zero.
_PD_TOLERANCE = 1e-10
#: A new normal whose component outside the active normals' span (in P⁻¹'s metric) is
#: below this fraction of its norm is treated as linearly dependent on them.
_DEPENDENCE = 1e-12


@numba.njit(nogil=True, cache=True)
def _cholesky_inverse(Pv, P_row, P_col, n, L, JT):  # pragma: no cover - compiled
    """``JT`` = the transpose of ``J = L⁻ᵀ`` (rows of JT are J's columns), ``P = LL'``.

    Returns False if ``P`` is not (numerically) positive definite.
    """
    for i in range(n):
        for j in range(n):
            L[i, j] = 0.0
    for p in range(Pv.size):  # the lower triangle of P from its upper entries
        L[P_col[p], P_row[p]] = Pv[p]
    scale = 0.0
    for i in range(n):
        scale = max(scale, abs(L[i, i]))
    if not scale > 0.0 or not cholesky_in_place(L, _PD_TOLERANCE * scale):
        return False
    # J = L⁻ᵀ is upper triangular; JT = J' = L⁻¹ is lower triangular: solve L X = I.
    for i in range(n):
        for j in range(n):
            JT[i, j] = 0.0
    for col in range(n):
        for i in range(col, n):
            acc = 1.0 if i == col else 0.0
            for k in range(col, i):
                acc -= L[i, k] * JT[k, col]
            JT[i, col] = acc / L[i, i]
    return True


@numba.njit(nogil=True, cache=True)
def _givens(a, b):  # pragma: no cover - compiled
    """``(c, s, h)`` with ``[c s; −s c] [a; b] = [h; 0]``."""
    if b == 0.0:
        return 1.0, 0.0, a
    h = np.hypot(a, b)
    return a / h, b / h, h


@numba.njit(nogil=True, cache=True)
def _rotate_rows(JT, i, j, c, s):  # pragma: no cover - compiled
    """Rows i, j of JT (columns of J) ← the rotation ``[c s; −s c]``."""
    ri, rj = JT[i], JT[j]
    for k in range(ri.size):
        u, v = ri[k], rj[k]
        ri[k] = c * u + s * v
        rj[k] = -s * u + c * v


@numba.njit(nogil=True, cache=True)
def _normal_dot_columns(Av, row_ptr, row_col, row_src, i, JT, d):  # pragma: no cover
    """``d = J' n_i`` with ``n_i = −a_i``: ``d_j = −Σ a_ik J[k, j]``."""
    d[:] = 0.0
    n = d.size
    for p in range(row_ptr[i], row_ptr[i + 1]):
        a, k = Av[row_src[p]], row_col[p]
        for j in range(n):
            d[j] -= a * JT[j, k]


@numba.njit(nogil=True, cache=True)
def solve_qp(Av, bv, qv, Pv, S, work, x, y, s):  # pragma: no cover - compiled
    """Solve one strictly convex QP with zero and orthant cones (module docstring).

    Parameters
    ----------
    Av, bv, qv, Pv : the problem's values (A on the CSC pattern, P's upper entries).
    S : the structure tuple of :func:`._batched_ipm_numba.solve_block`.
    work : tuple of work arrays ``(L, JT, R, d, z, r, u, active, is_active)``: five
        ``(n, n)`` or ``(n,)`` float arrays as named, ``active`` int64 ``(n,)``,
        ``is_active`` bool ``(m,)``.
    x, y, s : outputs.

    Returns
    -------
    int
        The number of steps (additions and drops) if solved, ``−1`` if not (``P`` not
        positive definite, dependent or inconsistent constraints, the step limit).
    """
    dims = S[-1]
    n, m, mz = dims[0], dims[1], dims[2]
    row_ptr, row_col, row_src, P_row, P_col = S[2], S[3], S[4], S[5], S[6]
    L, JT, R, d, z, r, u, active, is_active = work
    if not _cholesky_inverse(Pv, P_row, P_col, n, L, JT):
        return -1
    # x = −P⁻¹ q = −J J' q
    for j in range(n):
        acc = 0.0
        for k in range(n):
            acc += JT[j, k] * qv[k]
        d[j] = acc
    for k in range(n):
        x[k] = 0.0
    for j in range(n):
        for k in range(n):
            x[k] -= d[j] * JT[j, k]
    q = 0  # active constraints
    is_active[:] = False
    steps = 0
    max_steps = 5 * (m + n) + 10
    b_scale = 0.0
    for i in range(m):
        b_scale = max(b_scale, abs(bv[i]))
    next_equality = 0
    while True:
        # -- choose the constraint to add: the equalities in turn, then the most violated
        if next_equality < mz:
            p = next_equality
            next_equality += 1
            viol_p = 0.0
            for e in range(row_ptr[p], row_ptr[p + 1]):
                viol_p += Av[row_src[e]] * x[row_col[e]]
            viol_p = bv[p] - viol_p  # n_p'x − β_p = b_p − a_p'x
            equality = True
        else:
            p = -1
            viol_p = 0.0
            equality = False
            for i in range(mz, m):
                if is_active[i]:
                    continue
                acc = 0.0
                norm = 0.0
                for e in range(row_ptr[i], row_ptr[i + 1]):
                    a = Av[row_src[e]]
                    acc += a * x[row_col[e]]
                    norm = max(norm, abs(a))
                slack = bv[i] - acc
                tol = 1e-13 * (1.0 + abs(bv[i]) + norm * _max_abs(x))
                if slack < -tol and slack < viol_p:
                    viol_p = slack
                    p = i
            if p < 0:
                break  # optimal
        u_p = 0.0
        while True:  # add p, dropping constraints on the way
            steps += 1
            if steps > max_steps:
                return -1
            _normal_dot_columns(Av, row_ptr, row_col, row_src, p, JT, d)
            # z = J₂ d₂ (primal direction), r = R⁻¹ d₁ (dual direction)
            z[:] = 0.0
            d2 = 0.0
            dn = 0.0
            for j in range(n):
                dn += d[j] * d[j]
                if j >= q:
                    d2 += d[j] * d[j]
                    for k in range(n):
                        z[k] += d[j] * JT[j, k]
            for j in range(q - 1, -1, -1):
                acc = d[j]
                for k in range(j + 1, q):
                    acc -= R[j, k] * r[k]
                r[j] = acc / R[j, j]
            # partial step: the first active inequality whose multiplier reaches zero
            t1 = np.inf
            drop = -1
            sign = 1.0
            if equality and viol_p > 0.0:
                sign = -1.0  # an equality may need a negative step (and multiplier)
            for j in range(q):
                if active[j] >= mz and sign * r[j] > 0.0 and u[j] / (sign * r[j]) < t1:
                    t1 = u[j] / (sign * r[j])
                    drop = j
            dependent = not d2 > _DEPENDENCE * dn
            if dependent:
                if equality and abs(viol_p) <= 1e-12 * (1.0 + b_scale):
                    break  # a redundant equality: leave it out
                if drop < 0:
                    return -1  # infeasible (or inconsistent equalities)
                t = sign * t1
            else:
                t2 = -viol_p / d2  # ≥ 0 for inequalities; signed for equalities
                t = t2 if (drop < 0 or abs(t2) <= t1) else sign * t1
            # step
            if not dependent:
                for k in range(n):
                    x[k] += t * z[k]
                viol_p += t * d2
            for j in range(q):
                u[j] -= t * r[j]
            u_p += t
            if not dependent and (drop < 0 or abs(t2) <= t1):
                # full step: add p; rotate d[q:] onto its first entry
                for j in range(n - 1, q, -1):
                    c, sn, h = _givens(d[j - 1], d[j])
                    d[j - 1], d[j] = h, 0.0
                    _rotate_rows(JT, j - 1, j, c, sn)
                if d[q] < 0.0:
                    d[q] = -d[q]
                    for k in range(n):
                        JT[q, k] = -JT[q, k]
                for j in range(q + 1):
                    R[j, q] = d[j]
                active[q] = p
                u[q] = u_p
                is_active[p] = True
                q += 1
                break
            # partial step: drop the constraint at position `drop`, then try p again
            is_active[active[drop]] = False
            for j in range(drop, q - 1):
                active[j] = active[j + 1]
                u[j] = u[j + 1]
                for i in range(q):
                    R[i, j] = R[i, j + 1]
            q -= 1
            for j in range(drop, q):  # R is Hessenberg from `drop`: restore it
                c, sn, h = _givens(R[j, j], R[j + 1, j])
                R[j, j], R[j + 1, j] = h, 0.0
                for k in range(j + 1, q):
                    a, b = R[j, k], R[j + 1, k]
                    R[j, k] = c * a + sn * b
                    R[j + 1, k] = -sn * a + c * b
                _rotate_rows(JT, j, j + 1, c, sn)
    # -- the solution: y = u on the active set; s = b − Ax off it (0 on it)
    y[:] = 0.0
    for j in range(q):
        y[active[j]] = u[j]
    for i in range(m):
        acc = 0.0
        for e in range(row_ptr[i], row_ptr[i + 1]):
            acc += Av[row_src[e]] * x[row_col[e]]
        s[i] = 0.0 if (i < mz or is_active[i]) else max(bv[i] - acc, 0.0)
    for j in range(q):
        if active[j] >= mz and u[j] < 0.0:
            return -1
    return steps


@numba.njit(nogil=True, cache=True)
def _max_abs(x):  # pragma: no cover - compiled
    out = 0.0
    for k in range(x.size):
        out = max(out, abs(x[k]))
    return out
