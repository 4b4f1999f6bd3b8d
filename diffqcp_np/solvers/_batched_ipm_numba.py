"""Compiled kernels of the batched dense interior-point method (see :mod:`.batched_ipm`).

One call of :func:`solve_block` solves a block of same-structure problems

    minimize ½x'Px + q'x   subject to  Ax + s = b,  s ∈ K,
    K = {0}^mz × R+^ml × Q^{d_1} × ... × Q^{d_k}   (rows in this order),

one after the other, in compiled code that releases the GIL. Each problem is solved by a
primal-dual interior-point method on the homogeneous embedding of Clarabel (Goulart and
Chen, 2024), which handles the quadratic objective and detects infeasibility:

    Px + A'z + qτ = 0,   Ax + s = bτ,   q'x + b'z + x'Px/τ + κ = 0,
    (s, z) ∈ K × K*,  τ, κ ≥ 0,

with Nesterov-Todd scaling ``W`` (``λ = Wz = W⁻¹s``), Mehrotra's predictor-corrector
steps and a 0.99 fraction to the boundary.

Scaling of a second-order cone, in the normalised form of Vandenberghe's CVXOPT notes:
``W = η W̄`` with ``η = (s'Js / z'Jz)^¼`` and the hyperbolic rotation ``W̄`` of the unit
vector ``w̄ = (s̄ + J z̄) / (2γ)`` (``s̄, z̄`` scaled to ``u'Ju = 1``, the ``J``-norm taken
as ``(u0 − ‖u1‖)(u0 + ‖u1‖)``). ``W̄`` is kept as its eigen-decomposition: with
``ŵ = w̄1/‖w̄1‖``, ``β = w̄0 + ‖w̄1‖ ≥ 1`` and ``c± = (1, ±ŵ)/√2``,

    W̄ = β c₊c₊' + β⁻¹ c₋c₋' + Π⊥      (Π⊥ the projector on the rest),

so that every power of ``W`` applies one factor per eigenvector and nothing cancels,
however large ``β`` grows near the solution (a cone whose ``s`` and ``z`` both end on its
boundary drives ``β`` to ~``μ^(-1/2)``). ``λ`` comes from CVXOPT's closed form, not from
the product ``Wz`` (which cancels to ~``μ^(1/2)`` from terms ~``μ^(-1/4)``).

The Newton systems are ``K [Δx; Δz] = [r1; r2]`` with ``K = [[P, A'], [A, −H]]``,
``H = W²`` on the cone rows and ``H = 0`` on the zero-cone rows. ``H⁻¹`` is split, cone
by cone, into the directions where it exceeds 1 (kept) and the rest ``E`` (eliminated,
``Δz = E(AΔx − r2) + U p``); the kept directions ``U`` (orthonormal) and their
variables ``p`` stay in the dense symmetric quasi-definite

    M = [[P + A'EA + εI,  A'U              ],
         [U'A,            −(U'H⁻¹U)⁻¹ − εI ]]

beside the zero-cone rows: an orthant row where ``z_i/s_i > 1``; for a second-order
cone the direction ``c₋`` where ``(β/η)² > 1`` (one row: the cone's "active" direction
when ``s`` and ``z`` are both on its boundary), or all its rows (block ``−W²``) where the
eigenvalue ``η⁻²`` of the rest exceeds :data:`_KEEP_ALL` (``s`` at the cone's vertex).
No weight that grows without bound as ``μ → 0`` enters the factor, so that its
condition stays bounded. ``M`` is factored by a right-looking LDLᵀ without pivoting
(pivot signs fixed by the quasi-definite structure); with second-order cones, or where
it had to replace a pivot, every solve with it is refined iteratively against the
unregularised ``K``. ``Δs`` comes from the linearised primal equation
``AΔx + Δs − bΔτ = −(1 − σ) r_z``, so that the primal residual falls by the step's
factor and the complementarity equation's large factors of ``W²`` never multiply the
solve's rounding errors.

Termination follows Clarabel: primal residual ``‖Ax + s − b‖∞`` relative to
``max(1, ‖b‖∞ + ‖x‖∞ + ‖s‖∞)``, dual residual ``‖Px + A'y + q‖∞`` relative to
``max(1, ‖q‖∞ + ‖x‖∞ + ‖y‖∞)``, ``κ/τ ≤ 1`` and the gap (the larger of the objectives'
difference and ``s'y``) absolute or relative to ``max(1, min(|pobj|, |dobj|))``.

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
F_POBJ, F_DOBJ, F_RES_PRIMAL, F_RES_DUAL, F_GAP, F_POLISH = 0, 1, 2, 3, 4, 5
N_FIGURES = 6

# -- the structure's dimensions (the int64 array ``dims``, last entry of ``S``) -------------------
D_N, D_M, D_MZ, D_ML, D_NSOC, D_MAX_SOC_DIM, D_MAX_SOC_COLS = 0, 1, 2, 3, 4, 5, 6
N_DIMS = 7

# -- how a second-order cone enters ``M`` (the int64 array ``soc_mode``) ---------------------------
SOC_ELIMINATED, SOC_KEEP_ONE, SOC_KEEP_ALL = 0, 1, 2

_EPS = np.finfo(np.float64).eps
_SQRT_HALF = np.sqrt(0.5)
#: A positive pivot that keeps less than this fraction of its diagonal entry is mostly
#: rounding error.
_CANCELLATION = 1e-14
#: Refinement stops at this relative residual of the full system.
_REFINE_TOL = 1e-13
#: A second-order cone keeps all its rows in ``M`` where ``η⁻²``, the eigenvalue of
#: ``H⁻¹`` off the plane of ``e`` and ``ŵ``, exceeds this (its ``s`` nears the vertex);
#: below it that eigenvalue stays bounded as ``μ → 0`` and is eliminated.
_KEEP_ALL = 100.0
#: At most this many polishing Newton steps (:func:`_polish`) after the interior-point
#: method; none once the relative KKT residual is at or below :data:`_POLISH_TARGET`.
_POLISH_STEPS = 2
_POLISH_TARGET = 1e-13
#: Columns per panel of :func:`_ldl_factor` (its updates of the rest are of this rank).
_PANEL = 4
#: A pivot within this multiple of the regularisation of zero makes the solves refine.
_REFINE_PIVOT = 1e4
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
def _update_scaling(S, s, z, w, eta, beta, lam):  # pragma: no cover - compiled
    """Nesterov-Todd scaling at ``(s, z)`` and ``λ = W z``.

    Orthant rows: ``w = √(s/z)``, ``λ = √(sz)``. Second-order cone k (module
    docstring): ``w`` holds the unit vector ``ŵ`` in the block's rows after the first,
    ``eta[k] = η`` and ``beta[k] = β = w̄0 + ‖w̄1‖`` (with ``w̄0 = √(1 + ‖w̄1‖²)``, so that
    ``w̄'Jw̄ = 1`` whatever the rounding), and ``λ = √(‖s‖_J ‖z‖_J) λ̄`` with CVXOPT's
    ``λ̄ = (γ, ((γ + z̄0) s̄1 + (γ + s̄0) z̄1) / (s̄0 + z̄0 + 2γ))``.

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
        # w̄1 = (s̄1 − z̄1) / (2γ): its norm r and direction ŵ
        r = 0.0
        for i in range(lo + 1, lo + d):
            w[i] = s[i] / sn - z[i] / zn
            r += w[i] * w[i]
        r = np.sqrt(r)
        if r > 0.0:
            for i in range(lo + 1, lo + d):
                w[i] /= r
        elif d > 1:  # W̄ = I: any unit ŵ
            w[lo + 1] = 1.0
        r /= 2.0 * gamma
        beta[k] = np.sqrt(1.0 + r * r) + r
        eta[k] = np.sqrt(sn / zn)
        s0, z0 = s[lo] / sn, z[lo] / zn
        root = np.sqrt(sn * zn)
        lam[lo] = root * gamma
        f = root / (s0 + z0 + 2.0 * gamma)
        for i in range(lo + 1, lo + d):
            lam[i] = f * ((gamma + z0) * (s[i] / sn) + (gamma + s0) * (z[i] / zn))
    return True


@numba.njit(nogil=True, cache=True)
def _identity_scaling(S, w, eta, beta):  # pragma: no cover - compiled
    """``W = I`` (Clarabel's initial point)."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        w[i] = 1.0
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        for i in range(lo + 1, lo + d):
            w[i] = 0.0
        if d > 1:
            w[lo + 1] = 1.0
        eta[k] = 1.0
        beta[k] = 1.0


@numba.njit(nogil=True, cache=True)
def _soc_apply(u, out, wv, gp, gm, gperp):  # pragma: no cover - compiled
    """``out = (gp c₊c₊' + gm c₋c₋' + gperp Π⊥) u`` on one cone's block, with
    ``c± = (1, ±ŵ)/√2`` and ``ŵ = wv[1:]``; ``out`` may be ``u``."""
    t = 0.0
    for i in range(1, u.size):
        t += wv[i] * u[i]
    u0 = u[0]
    a = gp * 0.5 * (u0 + t)
    b = gm * 0.5 * (u0 - t)
    f = a - b - gperp * t
    out[0] = a + b
    for i in range(1, u.size):
        out[i] = gperp * u[i] + f * wv[i]


@numba.njit(nogil=True, cache=True)
def _apply_w(S, u, out, w, eta, beta, power):  # pragma: no cover - compiled
    """``out = W^power u`` on the cone rows (``power`` in −2, −1, 1, 2); ``out`` may be
    ``u``. On a second-order cone ``W`` has the eigenvalues ``ηβ`` (``c₊``), ``η/β``
    (``c₋``) and ``η`` (the rest)."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        out[i] = u[i] * w[i] ** power
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        e = eta[k] ** power
        bp = beta[k] ** power
        _soc_apply(u[lo:lo + d], out[lo:lo + d], w[lo:lo + d], e * bp, e / bp, e)


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
    the smallest positive root of ``(u0 + t du0)² = ‖u1 + t du1‖²``, and at most the
    step at which ``u0 + t du0`` reaches 0 (all a cone of one row has; it keeps a
    rounded discriminant from letting the ray through the vertex into ``−K``)."""
    if du[lo] < 0.0:
        alpha = min(alpha, -u[lo] / du[lo])
    if d == 1:
        return alpha
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
def _choose_modes(S, eta, beta, soc_mode):  # pragma: no cover - compiled
    """How each second-order cone enters ``M`` (module docstring): all its rows where
    ``η⁻² > ``:data:`_KEEP_ALL` (or, for a cone of one row, ``η < 1``), the direction
    ``c₋`` where ``β > η``, nothing otherwise."""
    soc_dim = S[8]
    for k in range(soc_dim.size):
        d = soc_dim[k]
        if eta[k] * eta[k] * _KEEP_ALL < 1.0 or (d == 1 and eta[k] < 1.0):
            soc_mode[k] = SOC_KEEP_ALL
        elif beta[k] > eta[k] and d > 1:
            soc_mode[k] = SOC_KEEP_ONE
        else:
            soc_mode[k] = SOC_ELIMINATED


@numba.njit(nogil=True, cache=True)
def _place_kept(S, w, soc_mode, pos, soc_pos):  # pragma: no cover - compiled
    """Where each kept direction sits in ``M``; returns ``M``'s size.

    Zero-cone rows follow the ``n`` columns of ``x``; then the orthant rows with
    ``H_ii = w_i² < 1`` (``pos[i]``, ``−1`` for an eliminated row); then the kept
    directions of each second-order cone from ``soc_pos[k]`` on (one row for
    :data:`SOC_KEEP_ONE`, the cone's rows for :data:`SOC_KEEP_ALL`).
    """
    dims = S[-1]
    n, mz, ml = dims[D_N], dims[D_MZ], dims[D_ML]
    soc_dim = S[8]
    nk = n + mz
    for r in range(mz):
        pos[r] = n + r
    for i in range(mz, pos.size):
        pos[i] = -1
    for i in range(mz, mz + ml):
        if w[i] < 1.0:
            pos[i] = nk
            nk += 1
    for k in range(soc_dim.size):
        soc_pos[k] = nk
        if soc_mode[k] == SOC_KEEP_ALL:
            nk += soc_dim[k]
        elif soc_mode[k] == SOC_KEEP_ONE:
            nk += 1
    return nk


@numba.njit(nogil=True, cache=True)
def _form_kkt(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, reg, G, SG,
              SAA):  # pragma: no cover - compiled
    """The lower triangle of ``M`` (module docstring) for the directions placed by
    :func:`_place_kept`, from the second-order cones' blocks of :func:`_soc_blocks`
    (``SG``, ``SAA``). ``G`` is a work array of at least (most columns a SOC's rows
    touch) × 2."""
    dims = S[-1]
    n, mz, ml = dims[D_N], dims[D_MZ], dims[D_ML]
    row_ptr, row_col, row_src, P_row, P_col = S[2], S[3], S[4], S[5], S[6]
    soc_start, soc_dim, soc_col_ptr, soc_cols = S[7], S[8], S[9], S[10]
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
        h = 1.0 / (w[i] * w[i])  # eliminated: (z/s) a_i a_i'
        for p in range(row_ptr[i], row_ptr[i + 1]):
            cp = row_col[p]
            hv = h * Av[row_src[p]]
            for q in range(row_ptr[i], p + 1):  # a row's columns ascend: cq <= cp
                M[cp, row_col[q]] += hv * Av[row_src[q]]
    g_off = a_off = 0
    for k in range(soc_start.size):
        lo, d, pk = soc_start[k], soc_dim[k], soc_pos[k]
        wv = w[lo:lo + d]
        if soc_mode[k] == SOC_KEEP_ALL:  # A_k's rows and −W² − εI
            e2 = eta[k] * eta[k]
            r = 0.5 * (beta[k] - 1.0 / beta[k])  # ‖w̄1‖
            w0 = 0.5 * (beta[k] + 1.0 / beta[k])
            for a in range(d):
                i = lo + a
                for p in range(row_ptr[i], row_ptr[i + 1]):
                    M[pk + a, row_col[p]] = Av[row_src[p]]
            # W̄² = 2w̄w̄' − J
            M[pk, pk] = -e2 * (w0 * w0 + r * r) - reg
            for a in range(1, d):
                M[pk + a, pk] = -e2 * 2.0 * w0 * r * wv[a]
                for bb in range(1, a + 1):
                    M[pk + a, pk + bb] = -e2 * 2.0 * r * r * wv[a] * wv[bb]
                M[pk + a, pk + a] -= e2 + reg
            nc = soc_col_ptr[k + 1] - soc_col_ptr[k]
            g_off += nc * d
            a_off += nc * nc
            continue
        # A_k'EA_k = e A_k'A_k + (e₊ − e) gg' + (e₋ − e) hh',  g = A_k'c₊, h = A_k'c₋
        c0, nc = soc_col_ptr[k], soc_col_ptr[k + 1] - soc_col_ptr[k]
        Gk = SG[g_off:g_off + nc * d]
        AA = SAA[a_off:a_off + nc * nc]
        for a in range(nc):
            t = 0.0
            for r in range(1, d):
                t += wv[r] * Gk[a * d + r]
            G[a, 0] = _SQRT_HALF * (Gk[a * d] + t)
            G[a, 1] = _SQRT_HALF * (Gk[a * d] - t)
        e = 1.0 / (eta[k] * eta[k])
        b2 = beta[k] * beta[k]
        e_minus = e * b2
        if soc_mode[k] == SOC_KEEP_ONE:  # the row c₋'A_k, and −(η/β)² − ε
            for a in range(nc):
                M[pk, soc_cols[c0 + a]] = G[a, 1]
            M[pk, pk] = -1.0 / e_minus - reg
            e_minus = 0.0
        f_plus, f_minus = e / b2 - e, e_minus - e
        for a in range(nc):
            ca = soc_cols[c0 + a]
            ga, ha = f_plus * G[a, 0], f_minus * G[a, 1]
            for bb in range(a + 1):
                M[ca, soc_cols[c0 + bb]] += e * AA[a * nc + bb] + ga * G[bb, 0] + ha * G[bb, 1]
        g_off += nc * d
        a_off += nc * nc


@numba.njit(nogil=True, cache=True)
def _soc_blocks(S, Av, SG, SAA):  # pragma: no cover - compiled
    """Each second-order cone's block of ``A`` as a dense (columns it touches) × (its
    rows) array, and the lower triangle of its ``A_k'A_k``, one after the other in the
    flat arrays ``SG`` and ``SAA`` (what :func:`_form_kkt` reads)."""
    row_ptr, row_src = S[2], S[4]
    soc_start, soc_dim, soc_col_ptr, row_loc = S[7], S[8], S[9], S[11]
    g_off = a_off = 0
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        nc = soc_col_ptr[k + 1] - soc_col_ptr[k]
        for q in range(nc * d):
            SG[g_off + q] = 0.0
        for r in range(d):
            i = lo + r
            for p in range(row_ptr[i], row_ptr[i + 1]):
                SG[g_off + row_loc[p] * d + r] = Av[row_src[p]]
        for a in range(nc):
            for bb in range(a + 1):
                acc = 0.0
                for r in range(d):
                    acc += SG[g_off + a * d + r] * SG[g_off + bb * d + r]
                SAA[a_off + a * nc + bb] = acc
        g_off += nc * d
        a_off += nc * nc


@numba.njit(nogil=True, cache=True)
def _ldl_factor(M, nk, n, reg, U, diag):  # pragma: no cover - compiled
    """In-place LDLᵀ of the lower triangle of ``M[:nk, :nk]`` (unit L below the diagonal,
    D on it), by panels of :data:`_PANEL` columns and rank-:data:`_PANEL` updates of the
    rest; ``U`` (``_PANEL`` × ≥ nk) and ``diag`` (≥ nk) are work space.

    Pivots ``< n`` must be positive: one that keeps less than :data:`_CANCELLATION` of
    its diagonal entry (mostly rounding error) is raised to that fraction (at least
    ``reg``). The others must be negative: one that rounding has pushed above
    ``−reg/2`` (dependent rows) is set to ``−reg``.

    Returns
    -------
    int
        :data:`FACTOR_FAILED` if a pivot is not finite; :data:`FACTOR_MODIFIED` if a
        pivot was replaced or is within :data:`_REFINE_PIVOT` times ``reg`` of zero (the
        regularisation is no longer small beside it: solves need refinement);
        :data:`FACTOR_OK` otherwise.
    """
    status = FACTOR_OK
    for j in range(nk):
        diag[j] = M[j, j]
    for jb in range(0, nk, _PANEL):
        je = min(jb + _PANEL, nk)
        for j in range(jb, je):  # the panel, column by column
            d = M[j, j]
            if not np.isfinite(d):
                return FACTOR_FAILED
            if j < n:
                if not d > _CANCELLATION * diag[j]:
                    d = max(_CANCELLATION * diag[j], reg)
                    status = FACTOR_MODIFIED
                elif d < _REFINE_PIVOT * reg:
                    status = FACTOR_MODIFIED
            elif not d < -0.5 * reg:
                d = -reg
                status = FACTOR_MODIFIED
            elif d > -_REFINE_PIVOT * reg:
                status = FACTOR_MODIFIED
            M[j, j] = d
            inv = 1.0 / d
            for i in range(j + 1, nk):
                U[j - jb, i] = M[i, j]  # d_j l_ij
                M[i, j] *= inv
            for jj in range(j + 1, je):
                u = U[j - jb, jj]
                for i in range(jj, nk):
                    M[i, jj] -= M[i, j] * u
        if je - jb == _PANEL:  # M[i, k] −= Σ_b l_ib d_b l_kb  (je ≤ k ≤ i)
            u0, u1, u2, u3 = U[0], U[1], U[2], U[3]
            for i in range(je, nk):
                l0, l1, l2, l3 = M[i, jb], M[i, jb + 1], M[i, jb + 2], M[i, jb + 3]
                for k in range(je, i + 1):
                    M[i, k] -= l0 * u0[k] + l1 * u1[k] + l2 * u2[k] + l3 * u3[k]
        # (a last, narrower panel leaves nothing to update)
    return status


@numba.njit(nogil=True, cache=True)
def _ldl_solve(M, nk, r):  # pragma: no cover - compiled
    """Solve ``L D L' u = r`` in place with the factors of :func:`_ldl_factor`."""
    for i in range(nk):
        acc = r[i]
        for k in range(i):
            acc -= M[i, k] * r[k]
        r[i] = acc
    for i in range(nk):
        r[i] /= M[i, i]
    for i in range(nk - 1, -1, -1):
        acc = r[i]
        for k in range(i + 1, nk):
            acc -= M[k, i] * r[k]
        r[i] = acc


@numba.njit(nogil=True, cache=True)
def _apply_elimination(S, u, out, w, eta, beta, soc_mode):  # pragma: no cover - compiled
    """``out = E u`` on the cone rows: the eliminated part of ``H⁻¹`` (0 on kept
    orthant rows, on a kept cone direction and on the zero-cone rows)."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz):
        out[i] = 0.0
    for i in range(mz, mz + ml):
        out[i] = 0.0 if w[i] < 1.0 else u[i] / (w[i] * w[i])
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        if soc_mode[k] == SOC_KEEP_ALL:
            for i in range(lo, lo + d):
                out[i] = 0.0
            continue
        e = 1.0 / (eta[k] * eta[k])
        b2 = beta[k] * beta[k]
        gm = e * b2 if soc_mode[k] == SOC_ELIMINATED else 0.0
        _soc_apply(u[lo:lo + d], out[lo:lo + d], w[lo:lo + d], e / b2, gm, e)


@numba.njit(nogil=True, cache=True)
def _reduced_solve(S, M, nk, Av, w, eta, beta, pos, soc_mode, soc_pos, r1, r2, out_x, out_z,
                   sol, tm):  # pragma: no cover - compiled
    """``[out_x; out_z] = K⁻¹ [r1; r2]`` through the factors of ``M`` (no refinement):
    ``M [Δx; p] = [r1 + A'E r2; U' r2]``, then ``Δz = E(AΔx − r2) + U p``."""
    n, mz = S[-1][D_N], S[-1][D_MZ]
    soc_start, soc_dim = S[7], S[8]
    _apply_elimination(S, r2, tm, w, eta, beta, soc_mode)
    _at_mul(Av, S, tm, sol[:n])
    for j in range(n):
        sol[j] += r1[j]
    for i in range(tm.size):
        if pos[i] >= 0:
            sol[pos[i]] = r2[i]
    for k in range(soc_start.size):
        lo, d, pk = soc_start[k], soc_dim[k], soc_pos[k]
        if soc_mode[k] == SOC_KEEP_ALL:
            for a in range(d):
                sol[pk + a] = r2[lo + a]
        elif soc_mode[k] == SOC_KEEP_ONE:
            t = r2[lo]
            for i in range(lo + 1, lo + d):
                t -= w[i] * r2[i]
            sol[pk] = _SQRT_HALF * t
    _ldl_solve(M, nk, sol)
    for j in range(n):
        out_x[j] = sol[j]
    _a_mul(Av, S, out_x, tm)
    for i in range(mz, tm.size):
        tm[i] -= r2[i]
    _apply_elimination(S, tm, out_z, w, eta, beta, soc_mode)
    for i in range(tm.size):
        if pos[i] >= 0:
            out_z[i] = sol[pos[i]]
    for k in range(soc_start.size):
        lo, d, pk = soc_start[k], soc_dim[k], soc_pos[k]
        if soc_mode[k] == SOC_KEEP_ALL:
            for a in range(d):
                out_z[lo + a] = sol[pk + a]
        elif soc_mode[k] == SOC_KEEP_ONE:  # + p c₋
            p = _SQRT_HALF * sol[pk]
            out_z[lo] += p
            for i in range(lo + 1, lo + d):
                out_z[i] -= p * w[i]


@numba.njit(nogil=True, cache=True)
def _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, max_refine, r1, r2,
               out_x, out_z, work):  # pragma: no cover - compiled
    """Solve ``K [out_x; out_z] = [r1; r2]`` through the factors of ``M``, refined
    iteratively against the unregularised ``K`` (until the relative residual stops
    halving or falls below :data:`_REFINE_TOL`)."""
    sol, e1, e2, cx, cz, tm, tn = work
    n, mz = S[-1][D_N], S[-1][D_MZ]
    _reduced_solve(S, M, nk, Av, w, eta, beta, pos, soc_mode, soc_pos, r1, r2, out_x, out_z,
                   sol, tm)
    scale_1 = 1.0 + _norm_inf(r1)
    scale_2 = 1.0 + _norm_inf(r2)
    previous = np.inf
    for _ in range(max_refine):
        # e1 = r1 − P x − A'z,  e2 = r2 − A x + H z
        _p_mul(Pv, S, out_x, tn)
        _at_mul(Av, S, out_z, e1)
        for j in range(n):
            e1[j] = r1[j] - tn[j] - e1[j]
        _apply_w(S, out_z, tm, w, eta, beta, 2)
        _a_mul(Av, S, out_x, e2)
        for r in range(mz):
            e2[r] = r2[r] - e2[r]
        for i in range(mz, e2.size):
            e2[i] = r2[i] - e2[i] + tm[i]
        err = max(_norm_inf(e1) / scale_1, _norm_inf(e2) / scale_2)
        if not (err > _REFINE_TOL and err < 0.5 * previous):
            break
        previous = err
        _reduced_solve(S, M, nk, Av, w, eta, beta, pos, soc_mode, soc_pos, e1, e2, cx, cz,
                       sol, tm)
        for j in range(n):
            out_x[j] += cx[j]
        for i in range(e2.size):
            out_z[i] += cz[i]


@numba.njit(nogil=True, cache=True)
def _step_s(S, wd, dz, w, eta, beta, pos, soc_mode, ds):  # pragma: no cover - compiled
    """``Δs`` from ``ds`` = the linearised primal equation's ``−(1−σ) r_z − AΔx + bΔτ``:
    kept as it is on the eliminated directions (where it equals the complementarity
    equation's ``−W(λ \\ ds) − HΔz`` to rounding, and ``H``'s large eigenvalues would
    multiply ``Δz``'s rounding errors), replaced by ``−U'wd − (U'HU) U'Δz`` on the kept
    directions ``U`` (``wd = W(λ \\ ds)``), where the solve's regularised rows leave the
    primal equation off; zero on the zero-cone rows."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz):
        ds[i] = 0.0
    for i in range(mz, mz + ml):
        if pos[i] >= 0:
            ds[i] = -wd[i] - w[i] * w[i] * dz[i]
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        if soc_mode[k] == SOC_KEEP_ALL:
            e = eta[k] * eta[k]
            b2 = beta[k] * beta[k]
            _soc_apply(dz[lo:lo + d], ds[lo:lo + d], w[lo:lo + d], e * b2, e / b2, e)
            for i in range(lo, lo + d):
                ds[i] = -wd[i] - ds[i]
        elif soc_mode[k] == SOC_KEEP_ONE:  # the c₋ coordinate
            want = wd[lo]
            have = ds[lo]
            along = dz[lo]
            for i in range(lo + 1, lo + d):
                want -= w[i] * wd[i]
                have -= w[i] * ds[i]
                along -= w[i] * dz[i]
            h = (eta[k] / beta[k]) ** 2
            f = 0.5 * (-(want + h * along) - have)  # (target − current) c₋'s coordinate / √2
            ds[lo] += f
            for i in range(lo + 1, lo + d):
                ds[i] -= f * w[i]


# -- polish: Newton steps on the KKT residual at the end --------------------------------------
@numba.njit(nogil=True, cache=True)
def _project_pair(S, v, y, s):  # pragma: no cover - compiled
    """``y = Π_{K*}(v)`` and ``s = y − v``, each cone's pair on its face in closed form
    (complementary to rounding); zero-cone rows ``y = v``, ``s = 0``."""
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz):
        y[i] = v[i]
        s[i] = 0.0
    for i in range(mz, mz + ml):
        y[i] = max(v[i], 0.0)
        s[i] = max(-v[i], 0.0)
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        t, rho = v[lo], _soc_norm1(v, lo, d)
        if rho <= t:
            for i in range(lo, lo + d):
                y[i] = v[i]
                s[i] = 0.0
        elif rho <= -t:
            for i in range(lo, lo + d):
                y[i] = 0.0
                s[i] = -v[i]
        else:
            y[lo] = 0.5 * (rho + t)
            s[lo] = 0.5 * (rho - t)
            fy, fs = y[lo] / rho, s[lo] / rho
            for i in range(lo + 1, lo + d):
                y[i] = fy * v[i]
                s[i] = -fs * v[i]


@numba.njit(nogil=True, cache=True)
def _polish_scaling(S, v, w, eta, beta, soc_mode):  # pragma: no cover - compiled
    """Weights that make ``K`` the Jacobian of the KKT residual at ``v = y − s``.

    With ``D = DΠ_{K*}(v)`` the Newton step on ``(Px + A'Π(v) + q, Ax + Π(v) − v − b)``
    solves ``K [Δx; Δy] = −F`` with ``H = D⁺ − I``: ``H = 0`` where ``D = 1`` (an active
    orthant row, a cone with ``y`` inside: kept with a zero pivot), ``Δy = 0`` where
    ``D = 0`` (``H⁻¹ = 0``), and on a cone with ``y`` and ``s`` both on its boundary
    ``H⁻¹ = (ρ + t)/(ρ − t)`` off the plane of ``e`` and ``v``'s direction. In this
    module's terms (IEEE infinities and zeros): ``w = 0`` or ``∞`` on the orthant;
    ``η = 0`` (all rows kept) or ``∞`` (eliminated, weight 0) for a cone with ``y`` or
    ``s`` inside; ``ŵ = −v1/ρ``, ``η = √((ρ − t)/(ρ + t))`` and ``β = ∞`` (``c₋``, the ray
    of ``y``, kept with a zero pivot) for a cone with both on its boundary.
    """
    mz, ml = S[-1][D_MZ], S[-1][D_ML]
    soc_start, soc_dim = S[7], S[8]
    for i in range(mz, mz + ml):
        w[i] = 0.0 if v[i] > 0.0 else np.inf
    for k in range(soc_start.size):
        lo, d = soc_start[k], soc_dim[k]
        t, rho = v[lo], _soc_norm1(v, lo, d)
        if rho <= t or rho <= -t:
            soc_mode[k] = SOC_KEEP_ALL if rho <= t else SOC_ELIMINATED
            eta[k] = 0.0 if rho <= t else np.inf
            beta[k] = 1.0
            for i in range(lo + 1, lo + d):
                w[i] = 0.0
            if d > 1:
                w[lo + 1] = 1.0
            continue
        soc_mode[k] = SOC_KEEP_ONE
        eta[k] = np.sqrt((rho - t) / (rho + t))
        beta[k] = np.inf
        for i in range(lo + 1, lo + d):
            w[i] = -v[i] / rho


@numba.njit(nogil=True, cache=True)
def _kkt_residual(S, Av, bv, qv, Pv, x, y, s, F1, F2, Px, scale_p,
                  scale_d):  # pragma: no cover - compiled
    """``F1 = Px + A'y + q``, ``F2 = Ax + s − b`` (also fills ``Px``); returns the larger
    of ``‖F2‖∞ / scale_p`` and ``‖F1‖∞ / scale_d``."""
    _p_mul(Pv, S, x, Px)
    _at_mul(Av, S, y, F1)
    for j in range(x.size):
        F1[j] += Px[j] + qv[j]
    _a_mul(Av, S, x, F2)
    for i in range(F2.size):
        F2[i] += s[i] - bv[i]
    return max(_norm_inf(F2) / scale_p, _norm_inf(F1) / scale_d)


@numba.njit(nogil=True, cache=True)
def _polish(S, Av, bv, qv, Pv, x, y, s, reg, scale_p, scale_d, mats, ints, VN,
            VM):  # pragma: no cover - compiled
    """Newton steps on the KKT residual from the interior-point method's solution.

    The solution's ``v = y − s`` is projected (``y``, ``s`` complementary on their
    faces), then each step solves ``K [Δx; Δy] = −F`` with the weights of
    :func:`_polish_scaling` (no refinement: ``H`` has infinite eigenvalues), takes
    ``Δs = −F2 − AΔx``, moves ``v`` by ``Δy − Δs`` and projects again. A step is kept
    only if it lowers the residual; at most :data:`_POLISH_STEPS`. The iterates of an
    interior-point method with Nesterov-Todd scaling stay close to the central path in
    the scaled point ``λ`` only, which lets a cone's ``s`` and ``y`` end out of line by
    ~``√μ``; at a regular solution one Newton step takes that to ~``μ``.

    ``x``, ``y``, ``s`` are replaced by the polished point. Returns the number of
    steps kept.
    """
    M, G, U, diag, sol, eta, beta, SG, SAA = mats
    pos, soc_mode, soc_pos = ints
    n = x.size
    dx, F1, Px, xn = VN[0], VN[1], VN[2], VN[3]
    v, vn, yn, sn, F2, dy, ds, w = VM[0], VM[1], VM[2], VM[3], VM[4], VM[5], VM[6], VM[7]
    work = (sol, VN[9], VM[16], VN[10], VM[17], VM[18], VN[11])
    mz = S[-1][D_MZ]
    for i in range(v.size):
        v[i] = y[i] - s[i]
    _project_pair(S, v, y, s)
    merit = _kkt_residual(S, Av, bv, qv, Pv, x, y, s, F1, F2, Px, scale_p, scale_d)
    kept = 0
    for _ in range(_POLISH_STEPS):
        if not merit > _POLISH_TARGET:
            break
        _polish_scaling(S, v, w, eta, beta, soc_mode)
        nk = _place_kept(S, w, soc_mode, pos, soc_pos)
        _form_kkt(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, reg, G, SG, SAA)
        if _ldl_factor(M, nk, n, reg, U, diag) == FACTOR_FAILED:
            break
        for j in range(n):
            F1[j] = -F1[j]
        for i in range(v.size):
            F2[i] = -F2[i]
        _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, 0, F1, F2, dx,
                   dy, work)
        _a_mul(Av, S, dx, ds)
        for i in range(mz):
            vn[i] = v[i] + dy[i]
        for i in range(mz, v.size):
            vn[i] = v[i] + dy[i] - (F2[i] - ds[i])
        for j in range(n):
            xn[j] = x[j] + dx[j]
        _project_pair(S, vn, yn, sn)
        trial = _kkt_residual(S, Av, bv, qv, Pv, xn, yn, sn, F1, F2, Px, scale_p, scale_d)
        if not trial < merit:
            break
        merit = trial
        kept += 1
        x[:] = xn
        v[:] = vn
        y[:] = yn
        s[:] = sn
    return kept


# -- one problem ---------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _relative_residuals(res_p, res_d, nb, nq, nx, ny, ns):  # pragma: no cover - compiled
    """Clarabel's relative primal and dual residuals (infinity norms)."""
    return res_p / max(1.0, nb + nx + ns), res_d / max(1.0, nq + nx + ny)


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
        ATz[j] += Px[j] + qv[j]  # the dual residual
    res_d = _norm_inf(ATz)
    xPx = _dot(x, Px)
    pobj = 0.5 * xPx + _dot(qv, x)
    dobj = -0.5 * xPx - _dot(bv, y)
    figures[F_POBJ] = pobj
    figures[F_DOBJ] = dobj
    figures[F_RES_PRIMAL] = res_p
    figures[F_RES_DUAL] = res_d
    figures[F_GAP] = abs(pobj - dobj)
    figures[F_POLISH] = 0.0
    feas_p, feas_d = _relative_residuals(res_p, res_d, nb, nq, _norm_inf(x), _norm_inf(y),
                                         _norm_inf(s))
    return feas_p <= tol and feas_d <= tol


@numba.njit(nogil=True, cache=True)
def _interior_point(S, Av, bv, qv, Pv, opts, warm, wx, wy, ws, x_out, y_out, s_out, figures,
                    mats, ints, VN, VM):  # pragma: no cover - compiled
    """The interior-point method on one problem; returns ``(status, iterations)`` and
    writes the problem's outputs. Work space: ``mats = (M, G, U, diag, sol, eta, beta,
    SG, SAA)``, ``ints = (pos, soc_mode, soc_pos)``, and the rows of ``VN`` (length n)
    and ``VM`` (length m)."""
    dims = S[-1]
    n, m, mz, ml, nsoc = dims[D_N], dims[D_M], dims[D_MZ], dims[D_ML], dims[D_NSOC]
    degree = ml + nsoc
    max_iter = int(opts[MAX_ITER])
    max_refine = int(opts[MAX_REFINE])
    reg = opts[STATIC_REG]
    M, G, U, diag, sol, eta, beta, SG, SAA = mats
    pos, soc_mode, soc_pos = ints
    x, dx, x1, x2, r1, rx, Px, qP, ATz = VN[0], VN[1], VN[2], VN[3], VN[4], VN[5], VN[6], \
        VN[7], VN[8]
    z, s, dz, dsv, z1, z2, r2, rz = VM[0], VM[1], VM[2], VM[3], VM[4], VM[5], VM[6], VM[7]
    w, lam, tm, tl, Ax, ds_aff, dz_aff, ds = VM[8], VM[9], VM[10], VM[11], VM[12], VM[13], \
        VM[14], VM[15]
    work = (sol, VN[9], VM[16], VN[10], VM[17], VM[18], VN[11])
    nb, nq = _norm_inf(bv), _norm_inf(qv)
    _soc_blocks(S, Av, SG, SAA)
    # -- initial point ----------------------------------------------------------------------
    if warm:
        x[:] = wx
        z[:] = wy
        s[:] = ws
        s[:mz] = 0.0
        _push_inside(S, s, opts[WARM_SHIFT])
        _push_inside(S, z, opts[WARM_SHIFT])
        tau = 1.0
        kappa = opts[WARM_SHIFT]
    else:
        _identity_scaling(S, w, eta, beta)
        _choose_modes(S, eta, beta, soc_mode)
        nk = _place_kept(S, w, soc_mode, pos, soc_pos)
        _form_kkt(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, reg, G, SG, SAA)
        factored = _ldl_factor(M, nk, n, reg, U, diag)
        if factored == FACTOR_FAILED:
            x_out[:] = np.nan
            y_out[:] = np.nan
            s_out[:] = np.nan
            figures[:] = np.nan
            return NUMERICAL_ERROR, 0
        quadratic = False
        for p in range(Pv.size):
            quadratic = quadratic or Pv[p] != 0.0
        for j in range(n):
            r1[j] = 0.0 if not quadratic else -qv[j]
        # QP: [x; z] from [−q; b]; LP: x (and s) from [0; b], z from [−q; 0]
        refine = max_refine if factored == FACTOR_MODIFIED else 0
        _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, refine, r1, bv, x,
                   z, work)
        for i in range(m):
            s[i] = -z[i]
        if not quadratic:
            for j in range(n):
                r1[j] = -qv[j]
            r2[:] = 0.0
            _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, refine, r1,
                       r2, dx, z, work)
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
    inv_tau = 1.0
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
        feas_p, feas_d = _relative_residuals(res_p, res_d, nb, nq, _norm_inf(x) * inv_tau,
                                             _norm_inf(z) * inv_tau, _norm_inf(s) * inv_tau)
        # the gap: the larger of the objectives' and the complementarity s'z
        sz = 0.0
        for i in range(mz, m):
            sz += s[i] * z[i]
        gap = max(abs(pobj - dobj), abs(sz) * inv_tau * inv_tau)
        gap_rel = gap / max(1.0, min(abs(pobj), abs(dobj)))
        if not (np.isfinite(feas_p) and np.isfinite(feas_d) and np.isfinite(gap)):
            code = NUMERICAL_ERROR
            break
        if (feas_p <= opts[TOL_FEAS] and feas_d <= opts[TOL_FEAS] and kappa <= tau
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
        if not _update_scaling(S, s, z, w, eta, beta, lam):
            stop = NUMERICAL_ERROR
            continue
        mu = kappa * tau
        for i in range(mz, m):
            mu += s[i] * z[i]
        mu /= degree + 1
        _choose_modes(S, eta, beta, soc_mode)
        nk = _place_kept(S, w, soc_mode, pos, soc_pos)
        _form_kkt(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, reg, G, SG, SAA)
        factored = _ldl_factor(M, nk, n, reg, U, diag)
        if factored == FACTOR_FAILED:
            stop = NUMERICAL_ERROR
            continue
        # refined where the regularisation is not small beside a pivot (or replaced
        # one); the regularised factor's answers are as good otherwise
        refine = max_refine if factored == FACTOR_MODIFIED else 0
        for j in range(n):
            r1[j] = -qv[j]
        _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, refine, r1, bv, x1,
                   z1, work)
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
                _apply_w(S, ds_aff, tm, w, eta, beta, -1)
                _apply_w(S, dz_aff, tl, w, eta, beta, 1)
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
            _apply_w(S, tl, r2, w, eta, beta, 1)
            r2[:mz] = 0.0
            tl[:] = r2  # W(λ \ ds)
            for i in range(m):
                r2[i] -= keep * rz[i]
            for j in range(n):
                r1[j] = -keep * rx[j]
            _kkt_solve(S, M, nk, Av, Pv, w, eta, beta, pos, soc_mode, soc_pos, refine, r1, r2,
                       x2, z2, work)
            dtau = (-keep * rtau + d_kappa * inv_tau - _dot(qP, x2) - _dot(bv, z2)) / denom
            for j in range(n):
                dx[j] = x2[j] + dtau * x1[j]
            for i in range(m):
                dz[i] = z2[i] + dtau * z1[i]
            target = ds_aff if phase == 0 else ds
            _a_mul(Av, S, dx, tm)
            for i in range(m):
                target[i] = -keep * rz[i] - tm[i] + bv[i] * dtau
            _step_s(S, tl, dz, w, eta, beta, pos, soc_mode, target)
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
            s[i] += alpha * ds[i]
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
    figures[F_POBJ] = pobj
    figures[F_DOBJ] = dobj
    figures[F_RES_PRIMAL] = res_p
    figures[F_RES_DUAL] = res_d
    figures[F_GAP] = gap
    if code == PRIMAL_INFEASIBLE or code == ALMOST_PRIMAL_INFEASIBLE:
        scale = -1.0 / _dot(bv, z)
        x_out[:] = np.nan
        s_out[:] = np.nan
        for i in range(m):
            y_out[i] = z[i] * scale
    elif code == DUAL_INFEASIBLE or code == ALMOST_DUAL_INFEASIBLE:
        scale = -1.0 / _dot(qv, x)
        y_out[:] = np.nan
        for j in range(n):
            x_out[j] = x[j] * scale
        for i in range(m):
            s_out[i] = s[i] * scale
        s_out[:mz] = 0.0
    else:
        for j in range(n):
            x_out[j] = x[j] * inv_tau
        for i in range(m):
            y_out[i] = z[i] * inv_tau
            s_out[i] = s[i] * inv_tau
        s_out[:mz] = 0.0
    figures[F_POLISH] = 0.0
    if code == SOLVED or code == ALMOST_SOLVED:
        scale_p = max(1.0, nb + _norm_inf(x_out) + _norm_inf(s_out))
        scale_d = max(1.0, nq + _norm_inf(x_out) + _norm_inf(y_out))
        steps = _polish(S, Av, bv, qv, Pv, x_out, y_out, s_out, reg, scale_p, scale_d, mats,
                        ints, VN, VM)
        figures[F_POLISH] = steps
        if steps:
            F1, F2, Px = VN[0], VM[0], VN[1]
            _kkt_residual(S, Av, bv, qv, Pv, x_out, y_out, s_out, F1, F2, Px, 1.0, 1.0)
            xPx = _dot(x_out, Px)
            figures[F_POBJ] = 0.5 * xPx + _dot(qv, x_out)
            figures[F_DOBJ] = -0.5 * xPx - _dot(bv, y_out)
            figures[F_RES_PRIMAL] = _norm_inf(F2)
            figures[F_RES_DUAL] = _norm_inf(F1)
            figures[F_GAP] = abs(figures[F_POBJ] - figures[F_DOBJ])
    return code, it


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
    n, m, nsoc = dims[D_N], dims[D_M], dims[D_NSOC]
    size = max(n + m, 1)
    soc_cols = np.diff(S[9])
    g_size, a_size = np.sum(soc_cols * S[8]), np.sum(soc_cols * soc_cols)
    mats = (np.empty((size, size)), np.empty((max(dims[D_MAX_SOC_COLS], 1), 2)),
            np.empty((_PANEL, size + 1)), np.empty(size + 1), np.empty(size + 1),
            np.ones(max(nsoc, 1)), np.ones(max(nsoc, 1)), np.empty(max(g_size, 1)),
            np.empty(max(a_size, 1)))
    ints = (np.empty(m, dtype=np.int64), np.empty(max(nsoc, 1), dtype=np.int64),
            np.empty(max(nsoc, 1), dtype=np.int64))
    VN = np.empty((12, n))
    VM = np.ones((19, m))
    active_set = opts[ACTIVE_SET] != 0.0 and nsoc == 0 and P_vals.shape[1] > 0
    qp_work = (np.empty((n, n)), np.empty((n, n)), np.empty((n, n)), np.empty(n),
               np.empty(n), np.empty(n), np.empty(n), np.empty(n, dtype=np.int64),
               np.empty(m, dtype=np.bool_))
    for k in range(A_vals.shape[0]):
        Av, bv, qv, Pv = A_vals[k], b_all[k], c_all[k], P_vals[k]
        method[k] = INTERIOR_POINT
        if active_set:
            steps = solve_qp(Av, bv, qv, Pv, S, qp_work, x_out[k], y_out[k], s_out[k])
            if steps >= 0 and _accept(S, Av, bv, qv, Pv, x_out[k], y_out[k], s_out[k],
                                      _norm_inf(bv), _norm_inf(qv), opts[TOL_FEAS],
                                      figures[k], VN[0], VM[0, :m], VN[1], VM[1, :m]):
                status[k] = SOLVED
                iters[k] = steps
                method[k] = ACTIVE_SET_METHOD
                continue
        code, it = _interior_point(S, Av, bv, qv, Pv, opts, warm[k], warm_x[k], warm_y[k],
                                   warm_s[k], x_out[k], y_out[k], s_out[k], figures[k], mats,
                                   ints, VN, VM)
        status[k] = code
        iters[k] = it
