"""Compiled kernels of the batched dense interior-point method (see :mod:`.batched_ipm`).

One call of :func:`solve_block` solves a block of same-structure problems

    minimize ½x'Px + q'x   subject to  Ax + s = b,  s ∈ K,
    K = {0}^mz × R+^ml × Q^{d_1} × ... × Q^{d_k}   (rows in this order),

one after the other, in compiled code that releases the GIL. Each problem is solved by a
primal-dual interior-point method on the homogeneous embedding of Clarabel (Goulart and
Chen, 2024), which handles the quadratic objective and detects infeasibility:

    Px + A'z + qτ = 0,   Ax + s = bτ,   q'x + b'z + x'Px/τ + κ = 0,
    (s, z) ∈ K × K*,  τ, κ ≥ 0,

with Nesterov-Todd scaling ``W`` (diagonal on the orthant, ``η W̄`` with a hyperbolic
Householder ``W̄`` on a second-order cone, ``λ = Wz = W⁻¹s``), Mehrotra's predictor-
corrector steps and a 0.99 fraction to the boundary.

The Newton systems are ``K [Δx; Δz] = [r1; r2]`` with ``K = [[P, A'], [A, −H]]``,
``H = W²`` on the cone rows and ``H = 0`` on the zero-cone rows. Orthant rows with
``H_ii = s_i/z_i ≥ 1`` (inactive-looking) and every second-order cone are eliminated,
``Δz = H⁻¹(AΔx − r)``, which adds ``A_k' H_k⁻¹ A_k`` to the ``x`` block; the other
orthant rows stay, beside the zero-cone rows, in the dense symmetric quasi-definite

    M = [[P + Σ_elim A_k' H_k⁻¹ A_k + εI,  A_kept'       ],
         [A_kept,                          −H_kept − εI  ]]

(``H_kept`` is 0 on the zero-cone rows). Keeping the orthant rows with small ``H`` out of
the elimination keeps huge weights ``H⁻¹`` out of the factor: the normal equations of
all rows break down on degenerate LPs, this does not. A second-order cone's ``H`` is not
kept as an explicit matrix: near the boundary its entries are ~``1/μ`` and rounding
loses its eigenvalue ~``μ``; its ``A_k' H_k⁻¹ A_k`` is the Gram matrix of
``W_k⁻¹ A_k`` (on the columns its rows touch), which keeps both. ``M`` is factored by a
right-looking LDLᵀ without pivoting (pivot signs fixed by the quasi-definite structure);
with second-order cones, or where it had to replace a pivot, every solve with it is
refined iteratively against the unregularised ``K``.

Layout: ``A`` as values on one CSC pattern (with a CSR view: per row, its entries'
columns and positions), ``P`` as the values of its upper triangle at coordinates
``(P_row, P_col)``. The structure's arrays travel as one tuple ``S`` (see
:func:`solve_block`). Problems are independent: a problem's result does not depend on
the block that holds it, nor on the thread that runs it.
"""

from __future__ import annotations

import numba
import numpy as np

from diffqcp_np.solvers._active_set_numba import solve_qp

# -- settings (the float64 array ``opts``) ------------------------------------------------------
TOL_FEAS, TOL_GAP_ABS, TOL_GAP_REL, TOL_INFEAS_ABS, TOL_INFEAS_REL = 0, 1, 2, 3, 4
REDUCED_TOL_FEAS, REDUCED_TOL_GAP_ABS, REDUCED_TOL_GAP_REL, REDUCED_TOL_INFEAS = 5, 6, 7, 8
MAX_ITER, STATIC_REG, MAX_STEP_FRACTION, WARM_SHIFT, MAX_REFINE, MIN_STEP = 9, 10, 11, 12, 13, 14
ACTIVE_SET = 15
N_OPTS = 16

# -- methods (the int64 array ``method``) -------------------------------------------------------
INTERIOR_POINT, ACTIVE_SET_METHOD = 0, 1

# -- statuses (the int64 array ``status``) ------------------------------------------------------
UNSOLVED, SOLVED, ALMOST_SOLVED = 0, 1, 2
PRIMAL_INFEASIBLE, DUAL_INFEASIBLE = 3, 4
ALMOST_PRIMAL_INFEASIBLE, ALMOST_DUAL_INFEASIBLE = 5, 6
MAX_ITERATIONS, NUMERICAL_ERROR, INSUFFICIENT_PROGRESS = 7, 8, 9

# -- per-problem figures (the float64 array ``figures``) ----------------------------------------
F_POBJ, F_DOBJ, F_RES_PRIMAL, F_RES_DUAL, F_GAP = 0, 1, 2, 3, 4
N_FIGURES = 5

# -- the structure's dimensions (the int64 array ``dims``, last entry of ``S``) -------------------
D_N, D_M, D_MZ, D_ML, D_NSOC, D_MAX_SOC_DIM, D_MAX_SOC_COLS = 0, 1, 2, 3, 4, 5, 6
N_DIMS = 7

_EPS = np.finfo(np.float64).eps
#: A positive pivot that keeps less than this fraction of its diagonal entry is mostly
#: rounding error.
_CANCELLATION = 1e-14
#: Refinement stops at this relative residual of the full system.
_REFINE_TOL = 1e-13
#: What :func:`_ldl_factor` reports.
FACTOR_FAILED, FACTOR_OK, FACTOR_MODIFIED = 0, 1, 2


# -- products with the data ---------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _a_mul(Av, S, x, out):  # pragma: no cover - compiled
    """``out = A x`` (row by row, through the CSR view)."""
    row_ptr, row_col, row_src = S[2], S[3], S[4]
    for i in range(out.size):
        acc = 0.0
        for p in range(row_ptr[i], row_ptr[i + 1]):
            acc += Av[row_src[p]] * x[row_col[p]]
        out[i] = acc


@numba.njit(nogil=True, cache=True)
def _at_mul(Av, S, z, out):  # pragma: no cover - compiled
    """``out = A' z`` (column by column of A)."""
    A_indptr, A_indices = S[0], S[1]
    for j in range(out.size):
        acc = 0.0
        for p in range(A_indptr[j], A_indptr[j + 1]):
            acc += Av[p] * z[A_indices[p]]
        out[j] = acc


@numba.njit(nogil=True, cache=True)
def _p_mul(Pv, S, x, out):  # pragma: no cover - compiled
    """``out = P x`` from the upper triangle's entries."""
    P_row, P_col = S[5], S[6]
    out[:] = 0.0
    for p in range(Pv.size):
        i, j, v = P_row[p], P_col[p], Pv[p]
        out[i] += v * x[j]
        if i != j:
            out[j] += v * x[i]


@numba.njit(nogil=True, cache=True)
def _dot(u, v):  # pragma: no cover - compiled
    acc = 0.0
    for i in range(u.size):
        acc += u[i] * v[i]
    return acc


@numba.njit(nogil=True, cache=True)
def _norm_inf(u):  # pragma: no cover - compiled
    """``max |u_i|`` (NaN if an entry is NaN)."""
    out = 0.0
    for i in range(u.size):
        a = abs(u[i])
        if a > out or a != a:
            out = a
    return out


# -- cones: scaling, Jordan algebra, step lengths -------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _soc_norm1(u, lo, d):  # pragma: no cover - compiled
    """``‖u1‖`` of the block ``u[lo:lo+d] = (u0, u1)``."""
    r = 0.0
    for i in range(lo + 1, lo + d):
        r += u[i] * u[i]
    return np.sqrt(r)


@numba.njit(nogil=True, cache=True)
def _soc_residual(u, lo, d):  # pragma: no cover - compiled
    """``u0² − ‖u1‖²`` of a block, as ``(u0 − ‖u1‖)(u0 + ‖u1‖)``."""
    r = _soc_norm1(u, lo, d)
    return (u[lo] - r) * (u[lo] + r)


@numba.njit(nogil=True, cache=True)
def _update_scaling(S, s, z, w, eta, lam):  # pragma: no cover - compiled
    """Nesterov-Todd scaling at ``(s, z)`` and ``λ = W z``.

    Orthant rows: ``w = √(s/z)``, ``λ = √(sz)``. Second-order cone k: ``w`` holds the
    unit hyperbolic vector ``w̄ = (s̄ + J z̄) / (2γ)`` (``w̄'Jw̄ = 1``; ``s̄, z̄`` the
    points normalised to ``u'Ju = 1``, ``γ² = (1 + s̄'z̄)/2``) and ``eta[k] = η =
    (s'Js / z'Jz)^¼``, so that ``W = η W̄``.

    Returns False if a point has left its cone's interior.
    """
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        if not (s[i] > 0.0 and z[i] > 0.0):
            return False
        w[i] = np.sqrt(s[i] / z[i])
        lam[i] = np.sqrt(s[i] * z[i])
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        rs = _soc_residual(s, lo, d)
        rz = _soc_residual(z, lo, d)
        if not (rs > 0.0 and rz > 0.0 and s[lo] > 0.0 and z[lo] > 0.0):
            return False
        sn, zn = np.sqrt(rs), np.sqrt(rz)
        dot = 0.0
        for i in range(lo, lo + d):
            dot += (s[i] / sn) * (z[i] / zn)
        gamma = np.sqrt(0.5 * (1.0 + dot))
        w[lo] = (s[lo] / sn + z[lo] / zn) / (2.0 * gamma)
        for i in range(lo + 1, lo + d):
            w[i] = (s[i] / sn - z[i] / zn) / (2.0 * gamma)
        eta[k] = np.sqrt(sn / zn)
    _apply_w(S, z, lam, w, eta, False)
    return True


@numba.njit(nogil=True, cache=True)
def _apply_w(S, u, out, w, eta, inverse):  # pragma: no cover - compiled
    """``out = W u`` (``W⁻¹ u`` if ``inverse``) on the cone rows; ``out`` may be ``u``.

    ``W̄ u = (w0 u0 + w1'u1, u1 + (u0 + w1'u1/(1 + w0)) w1)``, and ``W̄⁻¹ = J W̄ J``.
    """
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        out[i] = u[i] / w[i] if inverse else u[i] * w[i]
    sign = -1.0 if inverse else 1.0
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        w0 = w[lo]
        scale = 1.0 / eta[k] if inverse else eta[k]
        w1u1 = 0.0
        for i in range(lo + 1, lo + d):
            w1u1 += w[i] * u[i]
        u0 = u[lo]
        out[lo] = scale * (w0 * u0 + sign * w1u1)
        f = w1u1 / (1.0 + w0) + sign * u0
        for i in range(lo + 1, lo + d):
            out[i] = scale * (u[i] + f * w[i])


@numba.njit(nogil=True, cache=True)
def _apply_h(S, u, w, eta, identity, inverse):  # pragma: no cover - compiled
    """``u ← H u`` (``H⁻¹ u`` if ``inverse``) in place on the cone rows, ``H = W²``."""
    if identity:
        return
    _apply_w(S, u, u, w, eta, inverse)
    _apply_w(S, u, u, w, eta, inverse)


@numba.njit(nogil=True, cache=True)
def _jordan(S, u, v, out):  # pragma: no cover - compiled
    """``out = u ∘ v`` (elementwise on the orthant, ``(u'v, u0 v1 + v0 u1)`` on a SOC)."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        out[i] = u[i] * v[i]
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        acc = 0.0
        for i in range(lo, lo + d):
            acc += u[i] * v[i]
        u0, v0 = u[lo], v[lo]
        for i in range(lo + 1, lo + d):
            out[i] = u0 * v[i] + v0 * u[i]
        out[lo] = acc


@numba.njit(nogil=True, cache=True)
def _jordan_solve(S, lam, d, out):  # pragma: no cover - compiled
    """``out = λ \\ d``, the solution of ``λ ∘ out = d``."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        out[i] = d[i] / lam[i]
    for k in range(soc_start.size):
        lo, dim = soc_start[k], soc_dim[k]
        l0 = lam[lo]
        l1d1 = 0.0
        for i in range(lo + 1, lo + dim):
            l1d1 += lam[i] * d[i]
        x0 = (l0 * d[lo] - l1d1) / _soc_residual(lam, lo, dim)
        out[lo] = x0
        for i in range(lo + 1, lo + dim):
            out[i] = (d[i] - x0 * lam[i]) / l0


@numba.njit(nogil=True, cache=True)
def _soc_step(u, du, lo, d, alpha):  # pragma: no cover - compiled
    """Largest step ≤ alpha keeping ``u + t du`` in the second-order cone (u interior):
    the smallest positive root of ``(u0 + t du0)² = ‖u1 + t du1‖²``."""
    a = du[lo] * du[lo]
    b = u[lo] * du[lo]
    for i in range(lo + 1, lo + d):
        a -= du[i] * du[i]
        b -= u[i] * du[i]
    b *= 2.0
    c = max(0.0, _soc_residual(u, lo, d))
    disc = b * b - 4.0 * a * c
    if (a > 0.0 and b > 0.0) or disc < 0.0:
        return alpha  # both roots negative, or none: the ray stays inside
    if a == 0.0:
        return min(alpha, -c / b) if b < 0.0 else alpha
    t = -b - np.sqrt(disc) if b >= 0.0 else -b + np.sqrt(disc)
    r1 = 2.0 * c / t if t != 0.0 else np.inf
    r2 = t / (2.0 * a)
    if not r1 >= 0.0:
        r1 = np.inf
    if not r2 >= 0.0:
        r2 = np.inf
    return min(alpha, r1, r2)


@numba.njit(nogil=True, cache=True)
def _max_step(S, u, du, alpha):  # pragma: no cover - compiled
    """Largest step ≤ alpha keeping ``u + t du`` in the cones (zero-cone rows ignored)."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        if du[i] < 0.0:
            alpha = min(alpha, -u[i] / du[i])
    for k in range(soc_start.size):
        alpha = _soc_step(u, du, soc_start[k], soc_dim[k], alpha)
    return alpha


@numba.njit(nogil=True, cache=True)
def _shift_to_cone(S, u, floor):  # pragma: no cover - compiled
    """Clarabel's start: the orthant rows moved by ``1 − min`` when their minimum is below
    ``floor``, each SOC block likewise along ``e``; the zero-cone rows are left alone."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    if ml > 0:
        low = np.inf
        for i in range(mz, mz + ml):
            low = min(low, u[i])
        if low < floor:
            for i in range(mz, mz + ml):
                u[i] = (u[i] - low) + 1.0
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        gap = u[lo] - _soc_norm1(u, lo, d)
        if gap < floor:
            u[lo] = (u[lo] - gap) + 1.0


@numba.njit(nogil=True, cache=True)
def _push_inside(S, u, shift):  # pragma: no cover - compiled
    """A warm start moved at least ``shift`` inside each cone (elementwise on the
    orthant, along ``e`` on a SOC); the zero-cone rows are left alone."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        if not u[i] >= shift:
            u[i] = shift
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        gap = u[lo] - _soc_norm1(u, lo, d)
        if gap < shift:
            u[lo] += shift - gap


# -- the reduced Newton system --------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _choose_kept(S, w, eta, identity, pos):  # pragma: no cover - compiled
    """Where each row sits in ``M``: ``pos[i]`` (``−1`` for an eliminated cone row).

    Zero-cone rows follow the ``n`` columns of ``x``; then the orthant rows with
    ``H_ii = s_i/z_i < 1``. Returns the size of ``M``.
    """
    dims = S[-1]
    n, mz, ml = dims[D_N], dims[D_MZ], dims[D_ML]
    nk = n + mz
    for r in range(mz):
        pos[r] = n + r
    for i in range(mz, pos.size):
        pos[i] = -1
    if identity:
        return nk
    for i in range(mz, mz + ml):
        if w[i] < 1.0:
            pos[i] = nk
            nk += 1
    return nk


@numba.njit(nogil=True, cache=True)
def _form_kkt(S, M, nk, Av, Pv, w, eta, identity, pos, reg, G):  # pragma: no cover - compiled
    """The lower triangle of ``M`` (module docstring) for the rows placed by ``pos``.

    ``identity``: ``H = I`` on the cone rows (Clarabel's initial point). ``G`` is a
    work array of at least (largest SOC) × (most columns a SOC's rows touch).
    """
    dims = S[-1]
    n, mz, ml = dims[D_N], dims[D_MZ], dims[D_ML]
    row_ptr, row_col, row_src, P_row, P_col = S[2], S[3], S[4], S[5], S[6]
    soc_start, soc_dim, soc_col_ptr, soc_cols, row_loc = S[7], S[8], S[9], S[10], S[11]
    for i in range(nk):
        for j in range(i + 1):
            M[i, j] = 0.0
    for p in range(Pv.size):  # P (its upper entries (i, j) are M's lower (j, i))
        M[P_col[p], P_row[p]] += Pv[p]
    for i in range(n):
        M[i, i] += reg
    for r in range(mz):  # equality rows
        for p in range(row_ptr[r], row_ptr[r + 1]):
            M[n + r, row_col[p]] = Av[row_src[p]]
        M[n + r, n + r] = -reg
    for i in range(mz, mz + ml):
        if pos[i] >= 0:  # kept: A's row and −H_ii − ε
            for p in range(row_ptr[i], row_ptr[i + 1]):
                M[pos[i], row_col[p]] = Av[row_src[p]]
            M[pos[i], pos[i]] = -w[i] * w[i] - reg
            continue
        h = 1.0 if identity else 1.0 / (w[i] * w[i])  # eliminated: (z/s) a_i a_i'
        for p in range(row_ptr[i], row_ptr[i + 1]):
            cp = row_col[p]
            hv = h * Av[row_src[p]]
            for q in range(row_ptr[i], p + 1):  # a row's columns ascend: cq <= cp
                M[cp, row_col[q]] += hv * Av[row_src[q]]
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        # G = W⁻¹ A_k on the cone's columns, M += G'G
        c0, nc = soc_col_ptr[k], soc_col_ptr[k + 1] - soc_col_ptr[k]
        for r in range(d):
            for a in range(nc):
                G[r, a] = 0.0
        for r in range(d):
            i = lo + r
            for p in range(row_ptr[i], row_ptr[i + 1]):
                G[r, row_loc[p]] = Av[row_src[p]]
        if not identity:
            w0 = w[lo]
            inv_eta = 1.0 / eta[k]
            for a in range(nc):
                u0 = G[0, a]
                w1u1 = 0.0
                for r in range(1, d):
                    w1u1 += w[lo + r] * G[r, a]
                f = w1u1 / (1.0 + w0) - u0
                G[0, a] = inv_eta * (w0 * u0 - w1u1)
                for r in range(1, d):
                    G[r, a] = inv_eta * (G[r, a] + f * w[lo + r])
        for a in range(nc):
            ca = soc_cols[c0 + a]
            for bb in range(a + 1):
                acc = 0.0
                for r in range(d):
                    acc += G[r, a] * G[r, bb]
                M[ca, soc_cols[c0 + bb]] += acc


@numba.njit(nogil=True, cache=True)
def _ldl_factor(M, nk, n, reg, col, diag):  # pragma: no cover - compiled
    """In-place LDLᵀ of the lower triangle of ``M[:nk, :nk]`` (unit L below the diagonal,
    D on it); ``col`` and ``diag`` (length ≥ nk) are work space.

    Pivots ``< n`` must be positive: one that keeps less than :data:`_CANCELLATION` of
    its diagonal entry (mostly rounding error) is raised to that fraction (at least
    ``reg``). The others must be negative: one that rounding has pushed above
    ``−reg/2`` (dependent rows) is set to ``−reg``.

    Returns
    -------
    int
        :data:`FACTOR_FAILED` if a pivot is not finite, :data:`FACTOR_MODIFIED` if a
        pivot was replaced, :data:`FACTOR_OK` otherwise.
    """
    status = FACTOR_OK
    for j in range(nk):
        diag[j] = M[j, j]
    for j in range(nk):
        d = M[j, j]
        if not np.isfinite(d):
            return FACTOR_FAILED
        if j < n:
            if not d > _CANCELLATION * diag[j]:
                d = max(_CANCELLATION * diag[j], reg)
                status = FACTOR_MODIFIED
        elif not d < -0.5 * reg:
            d = -reg
            status = FACTOR_MODIFIED
        M[j, j] = d
        for i in range(j + 1, nk):
            col[i] = M[i, j]
        inv = 1.0 / d
        for i in range(j + 1, nk):
            f = col[i] * inv
            M[i, j] = f
            row = M[i]
            for k in range(j + 1, i + 1):
                row[k] -= f * col[k]
    return status


@numba.njit(nogil=True, cache=True)
def _ldl_solve(M, nk, r):  # pragma: no cover - compiled
    """Solve ``L D L' u = r`` in place with the factors of :func:`_ldl_factor`."""
    for i in range(nk):
        acc = r[i]
        row = M[i]
        for k in range(i):
            acc -= row[k] * r[k]
        r[i] = acc
    for i in range(nk):
        r[i] /= M[i, i]
    for i in range(nk - 1, -1, -1):
        acc = r[i]
        for k in range(i + 1, nk):
            acc -= M[k, i] * r[k]
        r[i] = acc


@numba.njit(nogil=True, cache=True)
def _reduced_solve(S, M, nk, Av, w, eta, identity, pos, r1, r2, out_x, out_z, sol,
                   tm):  # pragma: no cover - compiled
    """``[out_x; out_z] = K⁻¹ [r1; r2]`` through the factors of ``M`` (no refinement)."""
    n, mz = S[-1][D_N], S[-1][D_MZ]
    for i in range(tm.size):
        tm[i] = r2[i] if pos[i] < 0 else 0.0
    _apply_h(S, tm, w, eta, identity, True)
    _at_mul(Av, S, tm, sol[:n])
    for j in range(n):
        sol[j] += r1[j]
    for i in range(tm.size):
        if pos[i] >= 0:
            sol[pos[i]] = r2[i]
    _ldl_solve(M, nk, sol)
    for j in range(n):
        out_x[j] = sol[j]
    _a_mul(Av, S, out_x, tm)
    for i in range(mz, tm.size):
        tm[i] -= r2[i]
    _apply_h(S, tm, w, eta, identity, True)
    for i in range(tm.size):
        out_z[i] = tm[i] if pos[i] < 0 else sol[pos[i]]


@numba.njit(nogil=True, cache=True)
def _kkt_solve(S, M, nk, Av, Pv, w, eta, identity, pos, max_refine, r1, r2, out_x, out_z,
               work):  # pragma: no cover - compiled
    """Solve ``K [out_x; out_z] = [r1; r2]`` through the factors of ``M``, refined
    iteratively against the unregularised ``K`` (until the relative residual stops
    halving or falls below :data:`_REFINE_TOL`)."""
    sol, e1, e2, cx, cz, tm, tn = work
    n, mz = S[-1][D_N], S[-1][D_MZ]
    _reduced_solve(S, M, nk, Av, w, eta, identity, pos, r1, r2, out_x, out_z, sol, tm)
    scale_1 = 1.0 + _norm_inf(r1)
    scale_2 = 1.0 + _norm_inf(r2)
    previous = np.inf
    for _ in range(max_refine):
        # e1 = r1 − P x − A'z,  e2 = r2 − A x + H z
        _p_mul(Pv, S, out_x, tn)
        _at_mul(Av, S, out_z, e1)
        for j in range(n):
            e1[j] = r1[j] - tn[j] - e1[j]
        for i in range(tm.size):
            tm[i] = out_z[i]
        _apply_h(S, tm, w, eta, identity, False)
        _a_mul(Av, S, out_x, e2)
        for r in range(mz):
            e2[r] = r2[r] - e2[r]
        for i in range(mz, e2.size):
            e2[i] = r2[i] - e2[i] + tm[i]
        err = max(_norm_inf(e1) / scale_1, _norm_inf(e2) / scale_2)
        if not (err > _REFINE_TOL and err < 0.5 * previous):
            break
        previous = err
        _reduced_solve(S, M, nk, Av, w, eta, identity, pos, e1, e2, cx, cz, sol, tm)
        for j in range(n):
            out_x[j] += cx[j]
        for i in range(e2.size):
            out_z[i] += cz[i]


# -- one problem ---------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _accept(S, Av, bv, qv, Pv, x, y, s, nb, nq, tol, figures, Px, Ax, ATz,
            tm):  # pragma: no cover - compiled
    """Whether an active-set solution passes the interior-point method's feasibility test
    (its gap ``s'y`` is zero by construction); fills its ``figures``."""
    _p_mul(Pv, S, x, Px)
    _a_mul(Av, S, x, Ax)
    _at_mul(Av, S, y, ATz)
    for i in range(tm.size):
        tm[i] = Ax[i] + s[i] - bv[i]
    res_p = _norm_inf(tm)
    for j in range(x.size):
        Px[j] += ATz[j] + qv[j]
    res_d = _norm_inf(Px)
    _p_mul(Pv, S, x, Px)
    xPx = _dot(x, Px)
    pobj = 0.5 * xPx + _dot(qv, x)
    dobj = -0.5 * xPx - _dot(bv, y)
    figures[F_POBJ] = pobj
    figures[F_DOBJ] = dobj
    figures[F_RES_PRIMAL] = res_p
    figures[F_RES_DUAL] = res_d
    figures[F_GAP] = abs(pobj - dobj)
    feas_p = res_p / max(1.0, nb, _norm_inf(Ax), _norm_inf(s))
    feas_d = res_d / max(1.0, nq, _norm_inf(Px), _norm_inf(ATz))
    return feas_p <= tol and feas_d <= tol



@numba.njit(nogil=True, cache=True)
def _fail_outputs(k, x_out, y_out, s_out, figures):  # pragma: no cover - compiled
    """NaN outputs for problem ``k``."""
    x_out[k] = np.nan
    y_out[k] = np.nan
    s_out[k] = np.nan
    figures[k] = np.nan


@numba.njit(nogil=True, cache=True)
def solve_block(S, A_vals, b_all, c_all, P_vals, opts, warm, warm_x, warm_y, warm_s,
                x_out, y_out, s_out, status, iters, figures,
                method):  # pragma: no cover - compiled
    """Solve every problem of a block (the rows of the data arrays) in turn.

    Parameters
    ----------
    S : tuple
        The structure: ``(A_indptr, A_indices, row_ptr, row_col, row_src, P_row, P_col,
        soc_start, soc_dim, soc_col_ptr, soc_cols, row_loc, dims)``: A's CSC pattern;
        its CSR view (``row_src``: position in A's values); the upper-triangle
        coordinates of P; each SOC's first row and size, the sorted columns its rows
        touch (``soc_col_ptr``, ``soc_cols``) and each entry's place among them
        (``row_loc``); and ``dims`` (see ``D_*``).
    A_vals : (B, nnzA)
    b_all, c_all : (B, m), (B, n)
    P_vals : (B, nnzP), nnzP possibly 0.
    opts : float64 settings (indices at the top of this module).
    warm : (B,) bool; warm_x, warm_y, warm_s the warm starts where ``warm``.
    x_out, y_out, s_out, status, iters, figures, method : outputs, one row per problem.

    With ``opts[ACTIVE_SET]`` set and no second-order cones, a problem whose ``P`` is
    positive definite is first solved by the dual active-set method
    (:func:`._active_set_numba.solve_qp`); its solution is kept if it passes this
    method's feasibility tolerance, and the interior-point method runs otherwise.
    """
    dims = S[-1]
    n, m, mz, ml, nsoc = dims[D_N], dims[D_M], dims[D_MZ], dims[D_ML], dims[D_NSOC]
    degree = ml + nsoc
    max_iter = int(opts[MAX_ITER])
    max_refine = int(opts[MAX_REFINE])
    reg = opts[STATIC_REG]
    size = n + m
    M = np.empty((max(size, 1), max(size, 1)))
    G = np.empty((max(dims[D_MAX_SOC_DIM], 1), max(dims[D_MAX_SOC_COLS], 1)))
    col, diag, sol = np.empty(size + 1), np.empty(size + 1), np.empty(size + 1)
    pos = np.empty(m, dtype=np.int64)
    work = (sol, np.empty(n), np.empty(m), np.empty(n), np.empty(m), np.empty(m), np.empty(n))
    x, dx, x1, x2, r1, rx, Px, qP = (np.empty(n), np.empty(n), np.empty(n), np.empty(n),
                                     np.empty(n), np.empty(n), np.empty(n), np.empty(n))
    z, s, dz, dsv, z1, z2, r2, rz = (np.empty(m), np.empty(m), np.empty(m), np.empty(m),
                                     np.empty(m), np.empty(m), np.empty(m), np.empty(m))
    w, lam, tm, tl, Ax, ds_aff, dz_aff = (np.ones(m), np.empty(m), np.empty(m), np.empty(m),
                                          np.empty(m), np.empty(m), np.empty(m))
    ATz = np.empty(n)
    eta = np.ones(max(nsoc, 1))
    active_set = opts[ACTIVE_SET] != 0.0 and nsoc == 0 and P_vals.shape[1] > 0
    qp_work = (np.empty((n, n)), np.empty((n, n)), np.empty((n, n)), np.empty(n),
               np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=np.int64),
               np.empty(m, dtype=np.bool_))
    for k in range(A_vals.shape[0]):
        Av, bv, qv, Pv = A_vals[k], b_all[k], c_all[k], P_vals[k]
        nb, nq = _norm_inf(bv), _norm_inf(qv)
        method[k] = INTERIOR_POINT
        if active_set:
            steps = solve_qp(Av, bv, qv, Pv, S, qp_work, x_out[k], y_out[k], s_out[k])
            if steps >= 0 and _accept(S, Av, bv, qv, Pv, x_out[k], y_out[k], s_out[k], nb,
                                      nq, opts[TOL_FEAS], figures[k], Px, Ax, ATz, tl):
                status[k] = SOLVED
                iters[k] = steps
                method[k] = ACTIVE_SET_METHOD
                continue
        # -- initial point ------------------------------------------------------------------
        if warm[k]:
            x[:] = warm_x[k]
            z[:] = warm_y[k]
            s[:] = warm_s[k]
            s[:mz] = 0.0
            _push_inside(S, s, opts[WARM_SHIFT])
            _push_inside(S, z, opts[WARM_SHIFT])
            tau = 1.0
            kappa = opts[WARM_SHIFT]
        else:
            nk = _choose_kept(S, w, eta, True, pos)
            _form_kkt(S, M, nk, Av, Pv, w, eta, True, pos, reg, G)
            factored = _ldl_factor(M, nk, n, reg, col, diag)
            if factored == FACTOR_FAILED:
                status[k] = NUMERICAL_ERROR
                iters[k] = 0
                _fail_outputs(k, x_out, y_out, s_out, figures)
                continue
            quadratic = False
            for p in range(Pv.size):
                quadratic = quadratic or Pv[p] != 0.0
            for j in range(n):
                r1[j] = 0.0 if not quadratic else -qv[j]
            # QP: [x; z] from [−q; b]; LP: x (and s) from [0; b], z from [−q; 0]
            refine = max_refine if (nsoc or factored == FACTOR_MODIFIED) else 0
            _kkt_solve(S, M, nk, Av, Pv, w, eta, True, pos, refine, r1, bv, x, z, work)
            for i in range(m):
                s[i] = -z[i]
            if not quadratic:
                for j in range(n):
                    r1[j] = -qv[j]
                r2[:] = 0.0
                _kkt_solve(S, M, nk, Av, Pv, w, eta, True, pos, refine, r1, r2, dx, z,
                           work)
            s[:mz] = 0.0
            _shift_to_cone(S, s, np.sqrt(_EPS))
            _shift_to_cone(S, z, np.sqrt(_EPS))
            tau = 1.0
            kappa = 1.0
        # -- iterations -----------------------------------------------------------------------
        code = UNSOLVED
        stop = UNSOLVED  # a reason to stop, found while stepping from the last iterate
        it = 0
        pobj = dobj = res_p = res_d = gap = np.nan
        feas_p = feas_d = gap_rel = np.inf
        while True:
            _p_mul(Pv, S, x, Px)
            _a_mul(Av, S, x, Ax)
            _at_mul(Av, S, z, ATz)
            xPx = _dot(x, Px)
            qx, bz = _dot(qv, x), _dot(bv, z)
            for j in range(n):
                rx[j] = Px[j] + ATz[j] + qv[j] * tau
            for i in range(m):
                rz[i] = Ax[i] + s[i] - bv[i] * tau
            rtau = qx + bz + kappa + xPx / tau
            # optimality, on the normalised iterate
            inv_tau = 1.0 / tau
            pobj = (0.5 * xPx * inv_tau + qx) * inv_tau
            dobj = (-0.5 * xPx * inv_tau - bz) * inv_tau
            res_p = _norm_inf(rz) * inv_tau
            res_d = _norm_inf(rx) * inv_tau
            feas_p = res_p / max(1.0, nb, _norm_inf(Ax) * inv_tau, _norm_inf(s) * inv_tau)
            feas_d = res_d / max(1.0, nq, _norm_inf(Px) * inv_tau, _norm_inf(ATz) * inv_tau)
            # the gap: the larger of the objectives' and the complementarity s'z
            sz = 0.0
            for i in range(mz, m):
                sz += s[i] * z[i]
            gap = max(abs(pobj - dobj), abs(sz) * inv_tau * inv_tau)
            gap_rel = gap / max(1.0, min(abs(pobj), abs(dobj)))
            if not (np.isfinite(feas_p) and np.isfinite(feas_d) and np.isfinite(gap)):
                code = NUMERICAL_ERROR
                break
            if (feas_p <= opts[TOL_FEAS] and feas_d <= opts[TOL_FEAS]
                    and (gap <= opts[TOL_GAP_ABS] or gap_rel <= opts[TOL_GAP_REL])):
                code = SOLVED
                break
            # infeasibility certificates, on the unnormalised iterate, once κ > τ
            if kappa > tau:
                if bz < -opts[TOL_INFEAS_ABS] and _norm_inf(ATz) <= opts[TOL_INFEAS_REL] * -bz:
                    code = PRIMAL_INFEASIBLE
                    break
                if qx < -opts[TOL_INFEAS_ABS]:
                    for i in range(m):
                        tl[i] = Ax[i] + s[i]
                    tl[:mz] = Ax[:mz]
                    if max(_norm_inf(tl), _norm_inf(Px)) <= opts[TOL_INFEAS_REL] * -qx:
                        code = DUAL_INFEASIBLE
                        break
            if stop != UNSOLVED or it >= max_iter:
                code = stop if stop != UNSOLVED else MAX_ITERATIONS
                break
            # -- Newton system ------------------------------------------------------------------
            if not _update_scaling(S, s, z, w, eta, lam):
                stop = NUMERICAL_ERROR
                continue
            mu = kappa * tau
            for i in range(mz, m):
                mu += s[i] * z[i]
            mu /= degree + 1
            nk = _choose_kept(S, w, eta, False, pos)
            _form_kkt(S, M, nk, Av, Pv, w, eta, False, pos, reg, G)
            factored = _ldl_factor(M, nk, n, reg, col, diag)
            if factored == FACTOR_FAILED:
                stop = NUMERICAL_ERROR
                continue
            # refined with second-order cones (their Gram form needs it), or where pivots
            # were replaced; on polyhedral cones the regularised factor's answers are as
            # good otherwise (same iterations and accuracy, in about half the time)
            refine = max_refine if (nsoc or factored == FACTOR_MODIFIED) else 0
            for j in range(n):
                r1[j] = -qv[j]
            _kkt_solve(S, M, nk, Av, Pv, w, eta, False, pos, refine, r1, bv, x1, z1, work)
            for j in range(n):
                qP[j] = qv[j] + 2.0 * Px[j] * inv_tau
            denom = _dot(qP, x1) + _dot(bv, z1) - xPx * inv_tau * inv_tau - kappa * inv_tau
            # predictor (σ = 0), then corrector
            sigma = 0.0
            alpha = 0.0
            dtau = dkappa = 0.0
            for phase in range(2):
                if phase == 0:
                    _jordan(S, lam, lam, dsv)  # ds = λ∘λ
                    d_kappa = tau * kappa
                else:  # ds = λ∘λ + (W⁻¹Δs_a)∘(WΔz_a) − σμe
                    _apply_w(S, ds_aff, tm, w, eta, True)
                    _apply_w(S, dz_aff, tl, w, eta, False)
                    _jordan(S, tm, tl, dsv)
                    _jordan(S, lam, lam, tm)
                    for i in range(mz, m):
                        dsv[i] += tm[i]
                    for i in range(mz, mz + ml):
                        dsv[i] -= sigma * mu
                    for kk in range(nsoc):
                        dsv[S[7][kk]] -= sigma * mu
                    d_kappa = tau * kappa + dtau * dkappa - sigma * mu
                keep = 1.0 - sigma
                # [r1; r2] = [−(1−σ) rx; −(1−σ) rz + W(λ \ ds)]
                _jordan_solve(S, lam, dsv, tl)  # tl = λ \ ds
                _apply_w(S, tl, r2, w, eta, False)
                r2[:mz] = 0.0
                for i in range(m):
                    r2[i] -= keep * rz[i]
                for j in range(n):
                    r1[j] = -keep * rx[j]
                _kkt_solve(S, M, nk, Av, Pv, w, eta, False, pos, refine, r1, r2, x2, z2,
                           work)
                dtau = (-keep * rtau + d_kappa * inv_tau - _dot(qP, x2) - _dot(bv, z2)) / denom
                for j in range(n):
                    dx[j] = x2[j] + dtau * x1[j]
                for i in range(m):
                    dz[i] = z2[i] + dtau * z1[i]
                # Δs = −W(λ \ ds + W Δz) on the cone rows, 0 on the zero-cone rows
                target = ds_aff if phase == 0 else tl
                _apply_w(S, dz, tm, w, eta, False)
                for i in range(mz, m):
                    tm[i] += tl[i]
                _apply_w(S, tm, target, w, eta, False)
                target[:mz] = 0.0
                for i in range(mz, m):
                    target[i] = -target[i]
                dkappa = -(d_kappa + kappa * dtau) * inv_tau
                alpha = 1.0
                if dtau < 0.0:
                    alpha = min(alpha, -tau / dtau)
                if dkappa < 0.0:
                    alpha = min(alpha, -kappa / dkappa)
                alpha = _max_step(S, s, target, alpha)
                alpha = _max_step(S, z, dz, alpha)
                if phase == 0:
                    dz_aff[:] = dz
                    sigma = (1.0 - alpha) ** 3
            alpha *= opts[MAX_STEP_FRACTION]
            for j in range(n):
                x[j] += alpha * dx[j]
            for i in range(m):
                z[i] += alpha * dz[i]
                s[i] += alpha * tl[i]
            tau += alpha * dtau
            kappa += alpha * dkappa
            it += 1
            if not alpha >= opts[MIN_STEP]:
                stop = INSUFFICIENT_PROGRESS
        # -- result -----------------------------------------------------------------------------
        if code == MAX_ITERATIONS or code == NUMERICAL_ERROR or code == INSUFFICIENT_PROGRESS:
            if (feas_p <= opts[REDUCED_TOL_FEAS] and feas_d <= opts[REDUCED_TOL_FEAS]
                    and (gap <= opts[REDUCED_TOL_GAP_ABS]
                         or gap_rel <= opts[REDUCED_TOL_GAP_REL])):
                code = ALMOST_SOLVED
            elif kappa > tau and np.isfinite(kappa):
                bz, qx = _dot(bv, z), _dot(qv, x)
                if bz < 0.0 and _norm_inf(ATz) <= opts[REDUCED_TOL_INFEAS] * -bz:
                    code = ALMOST_PRIMAL_INFEASIBLE
                elif qx < 0.0:
                    for i in range(m):
                        tl[i] = Ax[i] + s[i]
                    tl[:mz] = Ax[:mz]
                    if max(_norm_inf(tl), _norm_inf(Px)) <= opts[REDUCED_TOL_INFEAS] * -qx:
                        code = ALMOST_DUAL_INFEASIBLE
        status[k] = code
        iters[k] = it
        figures[k, F_POBJ] = pobj
        figures[k, F_DOBJ] = dobj
        figures[k, F_RES_PRIMAL] = res_p
        figures[k, F_RES_DUAL] = res_d
        figures[k, F_GAP] = gap
        if code == PRIMAL_INFEASIBLE or code == ALMOST_PRIMAL_INFEASIBLE:
            scale = -1.0 / _dot(bv, z)
            x_out[k] = np.nan
            s_out[k] = np.nan
            for i in range(m):
                y_out[k, i] = z[i] * scale
        elif code == DUAL_INFEASIBLE or code == ALMOST_DUAL_INFEASIBLE:
            scale = -1.0 / _dot(qv, x)
            y_out[k] = np.nan
            for j in range(n):
                x_out[k, j] = x[j] * scale
            for i in range(m):
                s_out[k, i] = s[i] * scale
            s_out[k, :mz] = 0.0
        else:
            for j in range(n):
                x_out[k, j] = x[j] * inv_tau
            for i in range(m):
                y_out[k, i] = z[i] * inv_tau
                s_out[k, i] = s[i] * inv_tau
            s_out[k, :mz] = 0.0
