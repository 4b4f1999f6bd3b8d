"""Numba kernels: projection onto the exponential cone and its Jacobian.

The exponential cone (SCS order ``(r, s, t)``) is
``K = cl{(r, s, t) : s > 0, s exp(r / s) <= t}``; its polar is ``K° = -K*``,
``K° = cl{(r, s, t) : r > 0, r exp(s / r - 1) <= -t}``.

Projection of ``v0 = (r0, s0, t0)`` (Friberg, "Projection onto the exponential cone:
a univariate root-finding problem", Optim. Methods Softw., 2023). With

    q(rho) = rho^2 - rho + 1,  lp(rho) = (rho - 1) r0 + s0,  ld(rho) = r0 - rho s0,

the points ``p = lp/q (rho, 1, e^rho)`` (on the boundary of ``K``) and
``d = ld/q (1, 1 - rho, -e^-rho)`` (on the boundary of ``K°``) are orthogonal and satisfy
``p + d = v0`` in their first two coordinates for every ``rho``. The third coordinate
matches at the root of

    h(rho) = lp e^rho - ld e^-rho - q t0,

which is increasing on the interval where ``lp > 0`` and ``ld > 0``; then ``p = Π_K(v0)``
and ``rho = r / s`` at the projection. The root is bracketed by that interval and by
``p_t >= t0`` (``t0 > 0``) or ``d_t <= t0`` (``t0 < 0``), using the maxima of ``lp/q`` and
``ld/q`` over ``rho``, ``(2D + 2 s0 - r0) / 3`` and ``(2D + 2 r0 - s0) / 3`` with
``D = sqrt(r0^2 - r0 s0 + s0^2)``; it is found by a safeguarded Newton iteration on
``h e^-|rho|`` (same iterates as on ``h``, no overflow). Each point is first divided by a
power of two that brings its max-norm into ``[1, 2)``: exact, so the result is accurate to
rounding at any magnitude.

Other regions: ``v0 in K`` gives ``v0``; ``v0 in K°`` gives 0; ``r0 <= 0, s0 <= 0`` gives
``(r0, 0, max(t0, 0))``. Near the face ``s = 0`` (``r0 > 0``, ``s0 <= 0``, ``1 - s0/r0`` beyond
``_RHO_FACE``) the projection is ``(0, 0, max(t0, 0))`` to machine precision; near the face
``r = 0`` of the polar (``r0 <= 0 < s0``, ``r0/s0`` below ``-_RHO_FACE``) it is
``(r0, s0, s0 e^(r0/s0))``.

Jacobian: ``I`` on ``K`` (boundary included), 0 on ``K°`` (origin included),
``diag(1[r0<0], 0, 1[t0>=0])`` for ``r0 <= 0, s0 <= 0``, ``diag(0, 0, 1[t0>0])`` near the face
``s = 0`` and ``diag(1, 1, 0)`` near the face ``r = 0`` of the polar (the limits of the formula
below, reached there to machine precision). Otherwise implicit differentiation of the KKT
system ``p - v0 + mu grad g(p) = 0``, ``g(p) = s e^(r/s) - t = 0``: the Hessian of ``g`` is
``(e^rho / s) a a'`` with ``a = (1, -rho, 0)``, the constraint normal is
``b ∝ (1, 1 - rho, -e^-rho)`` and ``mu e^rho / s = ld / lp``. Restricted to the tangent
plane ``b^⊥``,

    J = I - b b'/|b|^2 - u u' / (|b|^2 (k |b|^2 + |w|^2)),   w = a × b,  u = b × w,

with ``k = lp / ld >= 0``. ``w`` has no cancellation, ``|w| >= 1`` and ``|b| >= 1`` for the
scaling of ``b`` used (largest entry ±1), so ``J`` is finite everywhere and symmetric, with
eigenvalues ``0`` (along ``b``), ``1`` and ``k |b|^2 / (k |b|^2 + |w|^2)``. As ``s -> 0`` on the
face (``k -> 0``, ``b -> (1, 1 - rho, 0)/|b|``) it tends to ``diag(0, 0, 1)``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Bracket clip for ``rho``; roots lie well inside once the face cases are removed.
_RHO_MAX = 1000.0
#: Beyond this ``|rho|``, ``e^-|rho|`` is below double precision relative to the input.
_RHO_FACE = 750.0
_MAX_ITERS = 200
#: ``h`` is zero to rounding once ``|h|`` is below this times the sum of its terms.
_NOISE = 8.0 * 2.220446049250313e-16
#: Newton stops once the step is below this, relative to ``max(1, |rho|)``.
_STEP_TOL = 4.0 * 2.220446049250313e-16
#: Relative slack on the bounds derived from ``t0`` (they are exact up to rounding).
_BOUND_SLACK = 1e-12

_IN_CONE = 0
_IN_POLAR = 1
_NEGATIVE = 2
_FACE = 3
_POLAR_FACE = 4
_ROOT = 5


@numba.njit(nogil=True, cache=True)
def _check_length(v: np.ndarray) -> None:
    if v.shape[0] % 3 != 0:
        raise ValueError("exponential cones: length of v must be a multiple of 3")


@numba.njit(nogil=True, cache=True)
def _scale(r0: float, s0: float, t0: float) -> float:
    """Power of two ``2^e`` with ``max(|r0|, |s0|, |t0|)`` in ``[2^e, 2^(e+1))`` (0 if all 0)."""
    amax = max(abs(r0), abs(s0), abs(t0))
    if amax == 0.0:
        return 0.0
    return math.ldexp(1.0, math.frexp(amax)[1] - 1)


@numba.njit(nogil=True, cache=True)
def _classify(r: float, s: float, t: float) -> int:
    """Region of ``(r, s, t)`` (scaled to max-norm in ``[1, 2)``)."""
    if (s > 0.0 and s * math.exp(r / s) <= t) or (s == 0.0 and r <= 0.0 and t >= 0.0):
        return _IN_CONE
    if (r > 0.0 and r * math.exp(s / r - 1.0) <= -t) or (r == 0.0 and s <= 0.0 and t <= 0.0):
        return _IN_POLAR
    if r <= 0.0 and s <= 0.0:
        return _NEGATIVE
    if r > 0.0 and s <= 0.0 and 1.0 - s / r > _RHO_FACE:
        return _FACE
    if r <= 0.0 and r / s < -_RHO_FACE:
        return _POLAR_FACE
    return _ROOT


@numba.njit(nogil=True, cache=True)
def _h(r: float, s: float, t: float, rho: float):
    """``h(rho)``, ``h'(rho)`` and a bound on the terms that ``h`` sums.

    All three are multiplied by ``e^-|rho|``; the third, times a few ``eps``, bounds the
    rounding error of the first.
    """
    q = rho * rho - rho + 1.0
    lp = (rho - 1.0) * r + s
    ld = r - rho * s
    mp = abs((rho - 1.0) * r) + abs(s)
    md = abs(r) + abs(rho * s)
    dlp = rho * r + s
    dld = r + s - rho * s
    tq = (2.0 * rho - 1.0) * t
    if rho >= 0.0:
        e = math.exp(-rho)
        e2 = e * e
        qt = q * t * e
        return lp - ld * e2 - qt, dlp + dld * e2 - tq * e, mp + md * e2 + abs(qt)
    e = math.exp(rho)
    e2 = e * e
    qt = q * t * e
    return lp * e2 - ld - qt, dlp * e2 + dld - tq * e, mp * e2 + md + abs(qt)


@numba.njit(nogil=True, cache=True)
def _bracket(r: float, s: float, t: float):
    """Interval ``(lo, hi)`` holding the root of ``h`` (root case only).

    The ends are exact or slackened bounds, so ``h(lo) <= 0 <= h(hi)`` up to rounding; a
    root within rounding of an end is found by :func:`_solve_rho` all the same.
    """
    vlo = -_RHO_MAX
    vhi = _RHO_MAX
    if r > 0.0:
        vlo = max(vlo, 1.0 - s / r)
    if s > 0.0:
        vhi = min(vhi, r / s)
    lo = vlo
    hi = vhi
    dd = math.sqrt(r * r - r * s + s * s)
    if t > 0.0:
        pmax = (2.0 * dd + 2.0 * s - r) / 3.0
        if pmax > 0.0:
            bound = math.log(t / pmax)
            lo = max(lo, bound - _BOUND_SLACK * max(1.0, abs(bound)))
    elif t < 0.0:
        dmax = (2.0 * dd + 2.0 * r - s) / 3.0
        if dmax > 0.0:
            bound = -math.log(-t / dmax)
            hi = min(hi, bound + _BOUND_SLACK * max(1.0, abs(bound)))
    return _expand(r, s, t, min(lo, vhi), max(hi, vlo))


@numba.njit(nogil=True, cache=True)
def _expand(r: float, s: float, t: float, lo: float, hi: float):
    """Shrink a clipped side of ``(lo, hi)`` by a doubling search from the other side."""
    if hi == _RHO_MAX and lo > -_RHO_MAX:
        step = 1.0
        while lo + step < hi:
            x = lo + step
            if _h(r, s, t, x)[0] >= 0.0:
                return lo, x
            lo = x
            step *= 2.0
    elif lo == -_RHO_MAX and hi < _RHO_MAX:
        step = 1.0
        while hi - step > lo:
            x = hi - step
            if _h(r, s, t, x)[0] <= 0.0:
                return x, hi
            hi = x
            step *= 2.0
    return lo, hi


@numba.njit(nogil=True, cache=True)
def _solve_rho(r: float, s: float, t: float) -> float:
    """Root of ``h`` (ratio ``r/s`` at the projection) by safeguarded Newton."""
    lo, hi = _bracket(r, s, t)
    x = 0.5 * (lo + hi)
    dx_old = hi - lo
    for _ in range(_MAX_ITERS):
        f, df, fmag = _h(r, s, t, x)
        if abs(f) <= _NOISE * fmag:
            return x
        if f < 0.0:
            lo = x
        else:
            hi = x
        newton_ok = df > 0.0 and abs(2.0 * f) <= abs(dx_old * df)
        xn = x - f / df if newton_ok else 0.5 * (lo + hi)
        if not lo < xn < hi:
            xn = 0.5 * (lo + hi)
        dx_old = xn - x
        if abs(dx_old) <= _STEP_TOL * max(1.0, abs(x)) or xn == lo or xn == hi:
            return xn
        x = xn
    return x


@numba.njit(nogil=True, cache=True)
def _root_point(r: float, s: float, t: float, rho: float):
    """Projection ``p(rho)`` on the boundary of ``K``, computed without cancellation.

    For ``rho > 0`` the height comes from the polar part, ``p_t = t0 + ld e^-rho / q``,
    and ``p_s = p_t e^-rho``; otherwise ``p_s = lp / q`` and ``p_t = p_s e^rho``.
    """
    q = rho * rho - rho + 1.0
    if rho > 0.0:
        e = math.exp(-rho)
        pt = max(t + max(r - rho * s, 0.0) * e / q, 0.0)
        ps = pt * e
        return rho * ps, ps, pt
    ps = max((rho - 1.0) * r + s, 0.0) / q
    return rho * ps, ps, ps * math.exp(rho)


@numba.njit(nogil=True, cache=True)
def _project_scaled(r: float, s: float, t: float):
    """Projection of a point scaled to max-norm in ``[1, 2)``."""
    case = _classify(r, s, t)
    if case == _IN_CONE:
        return r, s, t
    if case == _IN_POLAR:
        return 0.0, 0.0, 0.0
    if case == _NEGATIVE:
        return r, 0.0, max(t, 0.0)
    if case == _FACE:
        return 0.0, 0.0, max(t, 0.0)
    if case == _POLAR_FACE:
        return r, s, s * math.exp(r / s)
    return _root_point(r, s, t, _solve_rho(r, s, t))


@numba.njit(nogil=True, cache=True)
def project_exp(v: np.ndarray) -> np.ndarray:
    """Project onto the exponential cone, cone by cone.

    Parameters
    ----------
    v : numpy.ndarray
        Finite float64 array of length ``3 k``: ``k`` points ``(r, s, t)`` back to back.

    Returns
    -------
    numpy.ndarray
        Projections onto ``K_exp``, same shape as ``v``.

    Raises
    ------
    ValueError
        If the length of ``v`` is not a multiple of 3.
    """
    _check_length(v)
    out = np.empty(v.shape[0], dtype=np.float64)
    for i in range(v.shape[0] // 3):
        r0, s0, t0 = v[3 * i], v[3 * i + 1], v[3 * i + 2]
        sc = _scale(r0, s0, t0)
        if sc == 0.0:
            out[3 * i : 3 * i + 3] = 0.0
            continue
        pr, ps, pt = _project_scaled(r0 / sc, s0 / sc, t0 / sc)
        out[3 * i] = pr * sc
        out[3 * i + 1] = ps * sc
        out[3 * i + 2] = pt * sc
    return out


@numba.njit(nogil=True, cache=True)
def _jacobian_root(r: float, s: float, t: float, jac: np.ndarray) -> None:
    """Write the root-case Jacobian (module docstring) into the 3x3 array ``jac``."""
    rho = _solve_rho(r, s, t)
    lp = max((rho - 1.0) * r + s, 0.0)
    ld = max(r - rho * s, 0.0)
    # b: constraint normal, largest entry 1 in magnitude; w = a x b, a = (1, -rho, 0).
    if rho > 0.0:
        b0, b1, b2 = 1.0, 1.0 - rho, -math.exp(-rho)
        w2 = 1.0
    else:
        b0 = math.exp(rho)
        b1, b2 = b0 * (1.0 - rho), -1.0
        w2 = b0
    w0, w1 = -rho * b2, -b2
    u0, u1, u2 = b1 * w2 - b2 * w1, b2 * w0 - b0 * w2, b0 * w1 - b1 * w0
    bb = b0 * b0 + b1 * b1 + b2 * b2
    ww = w0 * w0 + w1 * w1 + w2 * w2
    cu = 0.0 if ld == 0.0 else 1.0 / (bb * (lp / ld * bb + ww))
    b = (b0, b1, b2)
    u = (u0, u1, u2)
    for i in range(3):
        for j in range(i, 3):
            val = (1.0 if i == j else 0.0) - b[i] * b[j] / bb - cu * u[i] * u[j]
            jac[i, j] = val
            jac[j, i] = val


@numba.njit(nogil=True, cache=True)
def _jacobian_scaled(r: float, s: float, t: float, jac: np.ndarray) -> None:
    """Write the Jacobian at a scaled point into the zeroed 3x3 array ``jac``."""
    case = _classify(r, s, t)
    if case == _IN_CONE:
        for i in range(3):
            jac[i, i] = 1.0
    elif case == _NEGATIVE:
        jac[0, 0] = 1.0 if r < 0.0 else 0.0
        jac[2, 2] = 1.0 if t >= 0.0 else 0.0
    elif case == _FACE:
        jac[2, 2] = 1.0 if t > 0.0 else 0.0
    elif case == _POLAR_FACE:
        jac[0, 0] = 1.0
        jac[1, 1] = 1.0
    elif case == _ROOT:
        _jacobian_root(r, s, t, jac)


@numba.njit(nogil=True, cache=True)
def jacobian_exp(v: np.ndarray) -> np.ndarray:
    """Jacobians of the projection onto the exponential cone, cone by cone.

    Parameters
    ----------
    v : numpy.ndarray
        Finite float64 array of length ``3 k``: ``k`` points ``(r, s, t)`` back to back.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(k, 3, 3)``; entry ``i`` is the (symmetric) Jacobian of
        ``Π_{K_exp}`` at the ``i``-th point.

    Raises
    ------
    ValueError
        If the length of ``v`` is not a multiple of 3.
    """
    _check_length(v)
    k = v.shape[0] // 3
    out = np.zeros((k, 3, 3), dtype=np.float64)
    for i in range(k):
        r0, s0, t0 = v[3 * i], v[3 * i + 1], v[3 * i + 2]
        sc = _scale(r0, s0, t0)
        if sc == 0.0:
            continue
        _jacobian_scaled(r0 / sc, s0 / sc, t0 / sc, out[i])
    return out
