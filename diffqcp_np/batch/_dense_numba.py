"""The compiled kernels of the batched dense derivative (:mod:`.dense`) and of its
solution refinement (:mod:`.dense_refinement`), on the CPU (Numba).

Each kernel works on a stack of same-structure problems, one row of its arrays per
problem, and releases the GIL.
"""

from __future__ import annotations

import numba
import numpy as np

from .._sparse import UNSIGNED_INDEX as _U
from ..derivative._ldl import _dense_dot
from ..derivative._residual_numba import orthant_point_into, residual_parts
from ..derivative.solution_refinement import (
    MAX_BACKTRACKS,
    MAX_STEPS,
    SUFFICIENT_DECREASE,
    TARGET_RESIDUAL,
)

# Storage: problem b's system lives in the first ``nk[b]²`` entries of ``LU[b]`` (an
# ``N × N`` slot), as the C-order ``K_red'`` (which LAPACK reads column-major as
# ``K_red``, ``lda = nk[b]``). ``K_red`` is ``K`` without the rows and columns ``n + i``
# of the cone rows ``i`` where ``D`` is zero (row and column): there column ``n + i`` of
# ``K`` is the unit vector ``e_{n+i}`` and row ``n + i`` is ``[−A_i, e_i']``, so
#
#     K z = r:   solve K_red on the kept unknowns, then  v_i = r_{n+i} + A_i x;
#     K' w = g:  w_{n+i} = g_{n+i}, and K_red' w_kept = g_kept + [Σ_i A_i' g_{n+i}; 0].
#
# (For the orthant that drops every inactive constraint: at the benchmark's QPs the
# 60 × 60 systems shrink to about 30 × 30.) ``order[b]`` lists the kept indices of
# ``0..N−1`` first (ascending), then the dropped ones.

def _lapack_getrf():
    """Numba's binding of LAPACK ``dgetrf`` (SciPy's LAPACK), or None if unavailable."""
    try:
        from numba import types
        from numba.np.linalg import _LAPACK

        return _LAPACK().numba_xxgetrf(types.float64)
    except Exception:  # noqa: BLE001 - numba's internal API changed: use SciPy's wrapper
        return None


_GETRF = _lapack_getrf()
_KIND_D = ord("d")


@numba.njit(nogil=True, cache=True, inline="always")
def _pivot_ratio(F, k):  # pragma: no cover - compiled
    """``min |U_ii| / max |U_ii|`` of one factorisation (NaN if a pivot is not finite)."""
    lo, hi, finite = np.inf, 0.0, True
    for i in range(k):
        v = abs(F[i * k + i])
        if not np.isfinite(v):
            finite = False
        lo = min(lo, v)
        hi = max(hi, v)
    if not finite:
        return np.nan
    if k == 0:
        return 1.0
    return lo / hi if hi > 0.0 else 0.0


@numba.njit(nogil=True, cache=True)
def _pivot_ratios(LU, nk, ratio):  # pragma: no cover - compiled
    """:func:`_pivot_ratio` of each factorisation."""
    for b in range(LU.shape[0]):
        ratio[b] = _pivot_ratio(LU[b].reshape(-1), nk[b])


if _GETRF is not None:
    @numba.njit(nogil=True, cache=True, inline="always")
    def _getrf_member(F, k, piv):  # pragma: no cover - compiled
        """LU of one ``K_red`` in place (0-based pivots)."""
        if k > 0:
            _GETRF(_KIND_D, k, k, F.ctypes, k, piv.ctypes)
            for i in range(k):
                piv[i] -= 1

    @numba.njit(nogil=True, cache=True)
    def _getrf_kernel(LU, nk, piv):  # pragma: no cover - compiled
        """LU of each ``K_red`` in place (0-based pivots)."""
        for b in range(LU.shape[0]):
            _getrf_member(LU[b], nk[b], piv[b])
else:
    _getrf_kernel = None


@numba.njit(nogil=True, cache=True, inline="always")
def _assemble_member(F, order, A_vals, P_union, D_vals, A_rows, A_cols, U_rows, U_cols,
                     D_rows, D_cols, Ar_ptr, Ar_cols, Ar_pos, n, active,
                     pos):  # pragma: no cover - compiled
    """Write one problem's ``K_red'`` (C order, in ``F``) and ``order``; returns ``nk``
    (see :func:`_assemble_kernel`; ``active``, ``pos``: workspaces of lengths m, N)."""
    N = order.size
    m = N - n
    active[:] = False
    for e in range(D_rows.size):
        if D_vals[e] != 0.0:
            active[D_rows[e]] = True
            active[D_cols[e]] = True
    k = n
    for j in range(n):
        pos[j] = j
        order[j] = j
    for i in range(m):
        if active[i]:
            pos[n + i] = k
            order[k] = n + i
            k += 1
        else:
            pos[n + i] = -1
    t = k
    for i in range(m):
        if not active[i]:
            order[t] = n + i
            t += 1
    F[:k * k] = 0.0
    for q in range(A_rows.size):
        col = pos[n + A_rows[q]]
        if col >= 0:
            F[A_cols[q] * k + col] = -A_vals[q]
    for q in range(U_rows.size):
        F[U_rows[q] * k + U_cols[q]] = P_union[q]
    for j in range(n, k):
        F[j * k + j] = 1.0
    for e in range(D_rows.size):
        d = D_vals[e]
        if d != 0.0:
            r, c = D_rows[e], D_cols[e]
            pc = pos[n + c]
            F[pc * k + pos[n + r]] -= d
            for q in range(Ar_ptr[r], Ar_ptr[r + 1]):
                F[pc * k + Ar_cols[q]] += d * A_vals[Ar_pos[q]]
    return k


@numba.njit(nogil=True, cache=True)
def _assemble_kernel(LU, nk, order, A_vals, P_union, D_vals, A_rows, A_cols, U_rows, U_cols,
                     D_rows, D_cols, Ar_ptr, Ar_cols, Ar_pos, n):  # pragma: no cover - compiled
    """Write each problem's ``K_red'`` (C order) from its values, and ``nk``, ``order``.

    ``K' = [[P, −A'], [D'A, I − D']]``. ``P_union[b]`` holds the symmetric P's entries
    ``(U_rows, U_cols)`` (its union pattern, CSC order); ``(D_rows[e], D_cols[e])`` is
    the superset pattern of ``D``; ``Ar_*`` is A's pattern by rows (``Ar_pos``: the
    position of each entry in A's CSC values).
    """
    N = LU.shape[1]
    active = np.empty(N - n, dtype=np.bool_)
    pos = np.empty(N, dtype=np.int64)
    for b in range(LU.shape[0]):
        nk[b] = _assemble_member(LU[b].reshape(-1), order[b], A_vals[b], P_union[b],
                                 D_vals[b], A_rows, A_cols, U_rows, U_cols, D_rows, D_cols,
                                 Ar_ptr, Ar_cols, Ar_pos, n, active, pos)


@numba.njit(nogil=True, cache=True, inline="always")
def _lu_solve(F, k, piv, r, transpose):  # pragma: no cover - compiled
    """Solve ``K_red z = r`` (or ``K_red' z = r``) in place in ``r[:k]``.

    ``F[j k + i]`` is entry ``(i, j)`` of the LAPACK factors of ``K_red = P L U``;
    ``piv`` is 0-based (row ``i`` was interchanged with row ``piv[i]``).
    """
    if not transpose:
        for i in range(k):
            p = piv[i]
            if p != i:
                t = r[i]
                r[i] = r[p]
                r[p] = t
        for j in range(k):  # L y = r, column by column (L(i, j) = F[j k + i])
            rj = r[j]
            if rj != 0.0:
                base = j * k
                for i in range(j + 1, k):
                    r[i] -= F[base + i] * rj
        for j in range(k - 1, -1, -1):  # U z = y
            base = j * k
            r[j] /= F[base + j]
            rj = r[j]
            if rj != 0.0:
                for i in range(j):
                    r[i] -= F[base + i] * rj
    else:
        for i in range(k):  # U' t = r, row by row (U(j, i) = F[i k + j])
            base = i * k
            acc = r[i]
            for j in range(i):
                acc -= F[base + j] * r[j]
            r[i] = acc / F[base + i]
        for i in range(k - 1, -1, -1):  # L' u = t
            base = i * k
            acc = r[i]
            for j in range(i + 1, k):
                acc -= F[base + j] * r[j]
            r[i] = acc
        for i in range(k - 1, -1, -1):
            p = piv[i]
            if p != i:
                t = r[i]
                r[i] = r[p]
                r[p] = t


@numba.njit(nogil=True, cache=True)
def _vjp_kernel(LU, nk, order, piv, skip, A_vals, D_vals, D_rows, D_cols, X, Y, GX, GY, GS,
                A_rows, A_cols, Ar_ptr, Ar_cols, Ar_pos, P_rows, P_cols, P_scale, W, dA,
                dP):  # pragma: no cover - compiled
    """``K' w = −[gx; D(gy + gs) − gs]``, then dA (and dP if it has rows) per problem."""
    count, N = W.shape[0], W.shape[1]
    n = X.shape[1]
    red = np.empty(N)
    for b in range(count):
        g = W[b]
        if skip[b]:
            g[:] = np.nan
            continue
        for j in range(n):
            g[j] = -GX[b, j]
        for i in range(N - n):
            g[n + i] = GS[b, i]
        for e in range(D_rows.size):
            c = D_cols[e]
            g[n + D_rows[e]] -= D_vals[b, e] * (GY[b, c] + GS[b, c])
        k = nk[b]
        for t in range(k, N):  # dropped rows: w_{n+i} = g_{n+i}, moved to the right
            i = order[b, t] - n
            wi = g[n + i]
            if wi != 0.0:
                for q in range(Ar_ptr[i], Ar_ptr[i + 1]):
                    g[Ar_cols[q]] += A_vals[b, Ar_pos[q]] * wi
        for t in range(k):
            red[t] = g[order[b, t]]
        _lu_solve(LU[b].reshape(-1), k, piv[b], red, True)
        for t in range(k):
            g[order[b, t]] = red[t]
        for q in range(A_rows.size):
            i, j = A_rows[q], A_cols[q]
            dA[b, q] = Y[b, i] * g[j] - g[n + i] * X[b, j]
        if dP.shape[0]:
            for q in range(P_rows.size):
                i, j = P_rows[q], P_cols[q]
                dP[b, q] = 0.5 * (g[i] * X[b, j] + X[b, i] * g[j]) * P_scale[q]


@numba.njit(nogil=True, cache=True, inline="always")
def _solve_member(F, k, order, piv, A_vals, Ar_ptr, Ar_cols, Ar_pos, n,
                  z, red):  # pragma: no cover - compiled
    """Solve ``K z = r`` in place (``z`` holds ``r``) with one problem's factors of
    ``K_red`` (see the storage notes above; ``red``: workspace of length N)."""
    N = z.shape[0]
    for t in range(k):
        red[t] = z[order[t]]
    _lu_solve(F, k, piv, red, False)
    for t in range(k):
        z[order[t]] = red[t]
    for t in range(k, N):  # dropped rows: v_i = r_{n+i} + A_i x
        i = order[t] - n
        acc = z[n + i]
        for q in range(Ar_ptr[i], Ar_ptr[i + 1]):
            acc += A_vals[Ar_pos[q]] * z[Ar_cols[q]]
        z[n + i] = acc


@numba.njit(nogil=True, cache=True)
def _solve_kernel(LU, nk, order, piv, rows, A_vals, Ar_ptr, Ar_cols, Ar_pos, n,
                  Z):  # pragma: no cover - compiled
    """``K z = r`` for problem ``rows[k]``, in place in row ``k`` of ``Z``."""
    red = np.empty(Z.shape[1])
    for k in range(rows.size):
        b = rows[k]
        _solve_member(LU[b].reshape(-1), nk[b], order[b], piv[b], A_vals[b], Ar_ptr,
                      Ar_cols, Ar_pos, n, Z[k], red)


@numba.njit(nogil=True, cache=True)
def _jvp_kernel(LU, nk, order, piv, skip, A_vals, D_vals, D_rows, D_cols, X, Y, DC, DB, DAv,
                A_rows, A_cols, Ar_ptr, Ar_cols, Ar_pos, DPv, U_rows, U_cols, U_a, U_b,
                U_weight, Z, DY):  # pragma: no cover - compiled
    """``K [dx; dv] = −[dP x + dA'y + dc; −dA x + db]``; ``dy = D dv`` (in ``DY``).

    ``dP`` is read from its stored values ``DPv`` as in :func:`_assemble_kernel`.
    """
    count, N = Z.shape[0], Z.shape[1]
    n = X.shape[1]
    nnz_P = DPv.shape[1]
    red = np.empty(N)
    for b in range(count):
        z = Z[b]
        if skip[b]:
            z[:] = np.nan
            DY[b, :] = np.nan
            continue
        for j in range(n):
            z[j] = DC[b, j]
        for i in range(N - n):
            z[n + i] = DB[b, i]
        if DAv.shape[0]:
            for q in range(A_rows.size):
                i, j = A_rows[q], A_cols[q]
                z[j] += DAv[b, q] * Y[b, i]
                z[n + i] -= DAv[b, q] * X[b, j]
        if DPv.shape[0]:
            for q in range(U_rows.size):
                a, c = U_a[q], U_b[q]
                pa = DPv[b, a] if a < nnz_P else 0.0
                pc = DPv[b, c] if c < nnz_P else 0.0
                z[U_rows[q]] += U_weight * (pa + pc) * X[b, U_cols[q]]
        for j in range(N):
            z[j] = -z[j]
        _solve_member(LU[b].reshape(-1), nk[b], order[b], piv[b], A_vals[b], Ar_ptr, Ar_cols,
                      Ar_pos, n, z, red)
        dy = DY[b]
        dy[:] = 0.0
        for e in range(D_rows.size):
            dy[D_rows[e]] += D_vals[b, e] * z[n + D_cols[e]]


# -- solution refinement ----------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _residuals(rows, A_indptr, A_indices, A_vals, U_indptr, U_rows, P_union, B, C, X, Y, S,
               DUAL, PRIMAL, stats):  # pragma: no cover - compiled
    """:func:`~diffqcp_np.derivative._residual_numba.residual_parts` for problem
    ``rows[k]`` at row ``k`` of ``X, Y, S``, ``DUAL``, ``PRIMAL`` and ``stats`` (``A``
    on its CSC pattern, the symmetric ``P`` on the union pattern ``(U_indptr, U_rows)``)."""
    for k in range(rows.size):
        b = rows[k]
        (stats[k, 0], stats[k, 1], stats[k, 2], stats[k, 3], stats[k, 4], stats[k, 5],
         stats[k, 6], stats[k, 7], stats[k, 8], stats[k, 9]) = residual_parts(
            A_indptr, A_indices, A_vals[b], U_indptr, U_rows, P_union[b], B[b], C[b], X[k],
            Y[k], S[k], DUAL[k], PRIMAL[k])


@numba.njit(nogil=True, cache=True, inline="always")
def _densify(A_rows, A_cols, A_vals, U_rows, U_cols, P_union, n, Ad,
             Pd):  # pragma: no cover - compiled
    """Write one problem's ``A`` (m × n) and symmetric ``P`` (n × n) into ``Ad`` and ``Pd``
    (flat, C order; zero off the shared patterns, which the caller sets once) from its
    values (``P`` as in :func:`_assemble_kernel`)."""
    for q in range(A_rows.size):
        Ad[A_rows[q] * n + A_cols[q]] = A_vals[q]
    for q in range(U_rows.size):
        Pd[U_rows[q] * n + U_cols[q]] = P_union[q]


@numba.njit(nogil=True, cache=True, inline="always")
def _dense_residual(Ad, Pd, b, c, x, y, s, dual, primal, stats, ATy):  # pragma: no cover
    """:func:`~diffqcp_np.derivative._residual_numba.residual_parts` (its numbers in
    ``stats``) with ``A`` and ``P`` dense (:func:`_densify`), in vectorised loops (the
    sums reassociated), for the small problems of the batched dense derivative."""
    n, m = x.size, y.size
    ATy[:] = 0.0
    for i in range(m):
        yi = y[i]
        if yi != 0.0:
            base = i * n
            for j in range(n):
                ATy[_U(j)] += Ad[_U(base + j)] * yi
    for t in range(10):
        stats[t] = 0.0
    for j in range(n):
        px = _dense_dot(Pd, j * n, x, 0, n)
        d = px + ATy[j] + c[j]
        dual[j] = d
        stats[0] = max(stats[0], abs(c[j]))
        stats[1] = max(stats[1], abs(px))
        stats[2] = max(stats[2], abs(ATy[j]))
        stats[6] = max(stats[6], abs(d))
        stats[8] += d * d
    for i in range(m):
        ax = _dense_dot(Ad, i * n, x, 0, n)
        r = ax + s[i] - b[i]
        primal[i] = r
        stats[3] = max(stats[3], abs(b[i]))
        stats[4] = max(stats[4], abs(ax))
        stats[5] = max(stats[5], abs(s[i]))
        stats[7] = max(stats[7], abs(r))
        stats[9] += r * r


@numba.njit(nogil=True, cache=True, inline="always")
def _merit(stats, scales):  # pragma: no cover - compiled
    """The normalised residual from :func:`_dense_residual`'s ``stats``."""
    return np.sqrt(stats[8] / scales[0] ** 2 + stats[9] / scales[1] ** 2)


@numba.njit(nogil=True, cache=True, inline="always")
def _orthant_face(y, s):  # pragma: no cover - compiled
    """The face code of an orthant row (as :func:`~diffqcp_np.derivative.
    solution_refinement.face_codes`)."""
    if y == 0.0:
        return 0
    return 2 if s == 0.0 else 1


if _GETRF is not None:
    @numba.njit(nogil=True, cache=True)
    def _refine_orthant_kernel(start, stop, zero, LU, nk, order, piv, ratio, A_vals,
                               P_union, D_vals, B, C, X, Y, S, A_rows, A_cols, U_rows, U_cols,
                               D_rows, D_cols, Ar_ptr, Ar_cols, Ar_pos, n,
                               min_ratio, singular, before, after, steps, rejected, factored,
                               unresolved, status):  # pragma: no cover - compiled
        """Refine members ``start:stop`` whose cones are the zero cone and the orthant (``D``
        diagonal: ``D_rows[e] = D_cols[e]``), each on its own, in place.

        The steps of :func:`~diffqcp_np.batch.dense_refinement.refine_block` for one
        member: Newton steps through its factors, the line search, the face codes, a
        refactorisation where a step changes ``D``, and the final settledness test. Output
        arrays (index ``k − start``): ``singular`` (factorisation singular at the start or
        after a refactorisation: the member is left unrefined and unreported), the report's
        ``before``, ``after``, ``steps``, ``rejected``, ``factored``, ``unresolved`` rows
        and ``status`` (0 converged, 1 stalled, 2 maximum steps).
        """
        N, m = n + Y.shape[1], Y.shape[1]
        rows = m - zero
        x, v, y, s = np.empty(n), np.empty(m), np.empty(m), np.empty(m)
        xt, vt, yt, st = np.empty(n), np.empty(m), np.empty(m), np.empty(m)
        dual, primal, dual_t, primal_t = np.empty(n), np.empty(m), np.empty(n), np.empty(m)
        stats, scales = np.empty(10), np.empty(2)
        Ad, Pd, ATy = np.zeros(m * n), np.zeros(n * n), np.empty(n)
        z, red = np.empty(N), np.empty(N)
        gaps = np.empty(rows)
        codes = np.empty(rows, dtype=np.int64)
        changed = np.empty(rows, dtype=np.bool_)
        D = np.empty(D_rows.size)
        active, pos = np.empty(m, dtype=np.bool_), np.empty(N, dtype=np.int64)
        for b in range(start, stop):
            o = b - start
            steps[o] = 0
            rejected[o] = 0
            factored[o] = 0
            unresolved[o] = 0
            status[o] = 2
            is_singular = not (ratio[b] >= min_ratio)  # NaN: singular
            singular[o] = is_singular
            if is_singular:
                continue
            a_vals, p_union, bb, cc = A_vals[b], P_union[b], B[b], C[b]
            x[:] = X[b]
            for i in range(m):
                v[i] = Y[b, i] - S[b, i]
            orthant_point_into(v, zero, y, s)
            _densify(A_rows, A_cols, a_vals, U_rows, U_cols, p_union, n, Ad, Pd)
            _dense_residual(Ad, Pd, bb, cc, x, y, s, dual, primal, stats, ATy)
            scales[0] = max(stats[0], stats[1], stats[2])
            scales[1] = max(stats[3], stats[4], stats[5])
            for t in range(2):
                if scales[t] == 0.0:
                    scales[t] = 1.0
            merit = _merit(stats, scales)
            before[o] = merit
            error = max(stats[6], stats[7])
            for i in range(rows):
                gaps[i] = abs(Y[b, zero + i] - y[zero + i])
                codes[i] = _orthant_face(y[zero + i], s[zero + i])
                changed[i] = False
            stalled = False
            for _ in range(MAX_STEPS):
                if not merit > TARGET_RESIDUAL or stalled or is_singular:
                    break
                for j in range(n):
                    z[j] = -dual[j]
                for i in range(m):
                    z[n + i] = primal[i]
                _solve_member(LU[b].reshape(-1), nk[b], order[b], piv[b], a_vals, Ar_ptr,
                              Ar_cols, Ar_pos, n, z, red)
                error = 0.0
                for i in range(m):
                    error = max(error, abs(z[n + i]))
                    if z[n + i] != z[n + i]:
                        error = np.nan
                        break
                previous = merit
                t = 1.0
                moved = False
                for _ in range(MAX_BACKTRACKS + 1):
                    for j in range(n):
                        xt[j] = x[j] + t * z[j]
                    for i in range(m):
                        vt[i] = v[i] + t * z[n + i]
                    orthant_point_into(vt, zero, yt, st)
                    _dense_residual(Ad, Pd, bb, cc, xt, yt, st, dual_t, primal_t, stats,
                                    ATy)
                    trial = _merit(stats, scales)
                    if trial <= (1.0 - SUFFICIENT_DECREASE * t) * merit:
                        x, xt = xt, x
                        v, vt = vt, v
                        y, yt = yt, y
                        s, st = st, s
                        dual, dual_t = dual_t, dual
                        primal, primal_t = primal_t, primal
                        merit = trial
                        moved = True
                        break
                    rejected[o] += 1
                    t *= 0.5
                if not moved:
                    stalled = True
                    break
                steps[o] += 1
                error *= min(merit / previous, 1.0)
                for i in range(rows):
                    code = _orthant_face(y[zero + i], s[zero + i])
                    changed[i] = code != codes[i]
                    codes[i] = code
                stale = False
                for e in range(D_rows.size):
                    i = D_rows[e]
                    D[e] = 1.0 if i < zero or v[i] > 0.0 else (0.5 if v[i] == 0.0 else 0.0)
                    stale |= D[e] != D_vals[b, e]
                if stale:
                    D_vals[b] = D
                    F = LU[b].reshape(-1)
                    k = _assemble_member(F, order[b], a_vals, p_union, D_vals[b], A_rows,
                                         A_cols, U_rows, U_cols, D_rows, D_cols, Ar_ptr,
                                         Ar_cols, Ar_pos, n, active, pos)
                    nk[b] = k
                    _getrf_member(LU[b], k, piv[b])
                    ratio[b] = _pivot_ratio(F, k)
                    factored[o] += 1
                    is_singular = not (ratio[b] >= min_ratio)
            singular[o] = is_singular
            if is_singular:
                continue
            refined = steps[o] > 0
            if refined:
                X[b] = x
                Y[b] = y
                S[b] = s
            converged = merit <= TARGET_RESIDUAL
            count = 0
            for i in range(rows):
                vi = Y[b, zero + i] - S[b, zero + i]
                radius = error + (0.0 if refined else gaps[i])
                if abs(vi) <= radius or (changed[i] and not converged):
                    count += 1
            unresolved[o] = count
            after[o] = merit if refined else before[o]
            if after[o] <= TARGET_RESIDUAL:
                status[o] = 0
            elif stalled:
                status[o] = 1
else:
    _refine_orthant_kernel = None
