"""Numba kernels: projection onto 3-D power cones and its Jacobian.

The power cone with parameter ``0 < alpha < 1`` is
``K_alpha = {(x, y, z) : x^alpha y^(1 - alpha) >= |z|, x, y >= 0}`` (SCS's ``p`` cone).
Its polar is ``-K_alpha*`` with
``K_alpha* = {(u, v, w) : (u / alpha)^alpha (v / (1 - alpha))^(1 - alpha) >= |w|, u, v >= 0}``.

Projection of ``v0 = (x0, y0, z0)``, ``rho = |z0|`` (Hien, "Differential properties of
Euclidean projection onto power cone", 2015): outside ``K`` and its polar and with
``z0 != 0``, the projection ``(x, y, sign(z0) r)`` lies on the boundary, with
``lam = r (rho - r) > 0`` and

    x^2 - x0 x = alpha lam,   y^2 - y0 y = (1 - alpha) lam,
    f(r) = alpha ln x + (1 - alpha) ln y - ln r = 0.

``f`` is strictly decreasing on ``(0, rho)``: ``r f'(r) = -N`` with

    N = alpha (X + r^2) / (X + lam) + (1 - alpha) (Y + r^2) / (Y + lam) > 0,
    X = x^2 / alpha,  Y = y^2 / (1 - alpha).

The point is first scaled to unit max-norm (the projection is positively homogeneous).
The root is found by a Newton iteration in ``ln r`` on ``(0, rho/2]``, or in ``ln d``,
``d = rho - r``, on ``(0, rho/2]`` (the sign of ``f(rho/2)`` decides), safeguarded by a
bracket and geometric bisection, to a relative step of 1e-14. Carrying ``r`` and ``d``
separately keeps both accurate: one of them is tiny when ``|z0|`` is small and
``alpha != 1/2`` (e.g. ``d / rho ~ rho^((2 alpha - 1) / (1 - alpha))`` for ``x0 > 0 > y0``).
Where ``lam`` would underflow (below ``_TINY``) the limit ``lam -> 0`` is used.

Jacobian: implicit differentiation of the three equations above, in the equivalent
form of the optimality conditions ``p + mu grad h(p) = v0``, ``h(p) = 0`` of the
projection onto the boundary ``h = ln r - alpha ln x - (1 - alpha) ln y = 0``
(``mu = lam``). With ``P = X + lam``, ``Q = Y + lam`` and ``c = (r - d) r / N``, in the
coordinates ``(x0, y0, rho)``:

    J = [[X/P - c x^2/P^2,   -c x y/(P Q),      r x/(P N)],
         [-c x y/(P Q),      Y/Q - c y^2/Q^2,   r y/(Q N)],
         [r x/(P N),         r y/(Q N),         r^2 (alpha/P + (1-alpha)/Q) / N]]

and the sign of ``z0`` is restored on the third row and column. ``P, Q >= lam`` and
``N >= min(1, r / d)`` are sums of positive terms, so nothing cancels or divides by zero.

At ``z0 = 0`` (outside ``K`` and its polar, so one of ``x0, y0`` is positive and the
other negative) the projection is ``(x0+, y0+, 0)`` and ``d z / d z0`` is the limit of
``r / rho``: with ``x0 > 0 > y0`` it is 1 for ``alpha > 1/2``, 0 for ``alpha < 1/2`` and
``k / (1 + k)``, ``k = x0 / (2 |y0|)``, for ``alpha = 1/2`` (symmetrically with the roles of
``x0, y0`` and ``alpha, 1 - alpha`` exchanged). The projection is differentiable there
and this is its derivative, but ``r / rho`` tends to it slowly for ``alpha`` near 1/2.

Points of ``K`` (boundary included) get the identity, points of the polar get zero.
"""

from __future__ import annotations

import math

import numba
import numpy as np

#: Newton stops once the relative step in ``ln r`` (or ``ln d``) is below this.
_NEWTON_TOL = 1e-14
_MAX_ITERS = 200
#: Below this ``lam = r d`` (after scaling to unit max-norm) is treated as zero.
_TINY = 1e-280


@numba.njit(nogil=True, cache=True)
def _root_xi(x0: float, lam: float, c: float) -> float:
    """Positive root ``x`` of ``x^2 - x0 x - c lam = 0``, without cancellation."""
    a = math.sqrt(x0 * x0 + 4.0 * c * lam)
    if x0 >= 0.0:
        return 0.5 * (x0 + a)
    return 2.0 * c * lam / (a - x0)


@numba.njit(nogil=True, cache=True)
def _boundary_terms(x0: float, y0: float, r: float, d: float, alpha: float):
    """Boundary point for given ``r`` and ``d = rho - r``, and the quantities of ``f``.

    Returns
    -------
    tuple of float
        ``(x, y, P, Q, N, f)`` as defined in the module docstring.
    """
    beta = 1.0 - alpha
    lam = r * d
    x = _root_xi(x0, lam, alpha)
    y = _root_xi(y0, lam, beta)
    xx = x * x / alpha
    yy = y * y / beta
    p = xx + lam
    q = yy + lam
    r2 = r * r
    n = alpha * (xx + r2) / p + beta * (yy + r2) / q
    f = alpha * math.log(x) + beta * math.log(y) - math.log(r)
    return x, y, p, q, n, f


@numba.njit(nogil=True, cache=True)
def _limit_gain(x0: float, y0: float, alpha: float) -> float:
    """Limit of ``r / rho`` as ``rho -> 0`` with ``x0, y0, alpha`` fixed.

    It is ``d z / d z0`` at ``z0 = 0`` for a point outside the cone and its polar.
    """
    if x0 <= 0.0 and y0 <= 0.0:
        return 0.0
    if x0 > 0.0 and y0 > 0.0:
        return 1.0
    if x0 <= 0.0:  # exchange the roles of x and y so that x0 > 0 >= y0
        x0, y0, alpha = y0, x0, 1.0 - alpha
    if y0 == 0.0 or alpha > 0.5:
        return 1.0
    if alpha < 0.5:
        return 0.0
    return x0 / (x0 - 2.0 * y0)  # k / (1 + k) with k = x0 / (2 |y0|)


@numba.njit(nogil=True, cache=True)
def _solve_boundary(x0: float, y0: float, rho: float, alpha: float):
    """Root of ``f`` on ``(0, rho)`` by bracketed Newton steps in a log variable.

    Parameters
    ----------
    x0, y0 : float
        First two coordinates of the point, scaled so that ``max(|x0|, |y0|, rho) = 1``.
    rho : float
        ``|z0| > 0``.
    alpha : float
        Cone parameter in ``(0, 1)``.

    Returns
    -------
    tuple of float
        ``(r, d)`` with ``r + d = rho``. Where ``lam = r d`` would underflow the limit
        ``rho -> 0`` (or ``r d -> 0``) is returned, with ``r d < _TINY``.
    """
    if rho * rho <= 4.0 * _TINY:
        gain = _limit_gain(x0, y0, alpha)
        return gain * rho, (1.0 - gain) * rho
    half = 0.5 * rho
    # Smallest s evaluated, so that lam = s (rho - s) >= _TINY.
    floor = 2.0 * _TINY / rho
    f_half = _boundary_terms(x0, y0, half, half, alpha)[5]
    if f_half == 0.0:
        return half, half
    # The unknown s is r (upper=False) or d (upper=True), s in (0, rho/2]; with
    # g = f (resp. -f), g is decreasing in s and g(0+) > 0 > g(rho/2).
    upper = f_half > 0.0
    lo = 0.0
    hi = half
    s = half
    for _ in range(_MAX_ITERS):
        other = rho - s
        if upper:
            _, _, _, _, n, f = _boundary_terms(x0, y0, other, s, alpha)
            g = -f
            slope = n * s / other  # -dg/dln(s)
        else:
            _, _, _, _, n, f = _boundary_terms(x0, y0, s, other, alpha)
            g = f
            slope = n
        if g == 0.0:
            break
        if g > 0.0:
            lo = s
        else:
            hi = s
            if s <= floor:  # the root underflows: take the limit s -> 0
                s = 0.0
                break
        u = g / slope
        # The more cautious of the Newton steps in s and in ln(s).
        s_new = max(s * (1.0 + u) if u > 0.0 else s * math.exp(u), floor)
        if abs(u) <= _NEWTON_TOL:
            s = s_new
            break
        if not (lo < s_new < hi):
            s_new = math.sqrt(lo) * math.sqrt(hi) if lo > 0.0 else floor
        s = s_new
        if hi - lo <= 4e-16 * hi:
            break
    if upper:
        return rho - s, s
    return s, rho - s


@numba.njit(nogil=True, cache=True)
def _in_cone(x0: float, y0: float, rho: float, alpha: float) -> bool:
    """Whether ``(x0, y0, +-rho)`` lies in ``K_alpha``."""
    return x0 >= 0.0 and y0 >= 0.0 and x0**alpha * y0 ** (1.0 - alpha) >= rho


@numba.njit(nogil=True, cache=True)
def _in_polar(x0: float, y0: float, rho: float, alpha: float) -> bool:
    """Whether ``(x0, y0, +-rho)`` lies in the polar cone ``-K_alpha*``."""
    beta = 1.0 - alpha
    return (
        x0 <= 0.0
        and y0 <= 0.0
        and (-x0) ** alpha * (-y0) ** beta >= rho * alpha**alpha * beta**beta
    )


@numba.njit(nogil=True, cache=True)
def _project_one(x0: float, y0: float, z0: float, alpha: float):
    """Projection of one point onto ``K_alpha``; returns ``(x, y, z)``."""
    rho = abs(z0)
    if _in_cone(x0, y0, rho, alpha):
        return x0, y0, z0
    if _in_polar(x0, y0, rho, alpha):
        return 0.0, 0.0, 0.0
    scale = max(abs(x0), abs(y0), rho)
    rho_s = rho / scale
    if rho_s == 0.0:
        return max(x0, 0.0), max(y0, 0.0), 0.0
    xs = x0 / scale
    ys = y0 / scale
    r, d = _solve_boundary(xs, ys, rho_s, alpha)
    lam = r * d
    x = _root_xi(xs, lam, alpha) * scale
    y = _root_xi(ys, lam, 1.0 - alpha) * scale
    return x, y, math.copysign(r * scale, z0)


@numba.njit(nogil=True, cache=True)
def _jacobian_one(x0: float, y0: float, z0: float, alpha: float, out: np.ndarray) -> None:
    """Write the 3x3 Jacobian of the projection at one point into ``out`` (zeroed)."""
    rho = abs(z0)
    if _in_cone(x0, y0, rho, alpha):
        for i in range(3):
            out[i, i] = 1.0
        return
    if _in_polar(x0, y0, rho, alpha):
        return
    out[0, 0] = 1.0 if x0 > 0.0 else 0.0
    out[1, 1] = 1.0 if y0 > 0.0 else 0.0
    scale = max(abs(x0), abs(y0), rho)
    rho_s = rho / scale
    if rho_s == 0.0:
        out[2, 2] = _limit_gain(x0, y0, alpha)
        return
    xs = x0 / scale
    ys = y0 / scale
    r, d = _solve_boundary(xs, ys, rho_s, alpha)
    if r * d < _TINY:  # underflow: the limit r d -> 0
        out[2, 2] = r / (r + d)
        return
    x, y, p, q, n, _ = _boundary_terms(xs, ys, r, d, alpha)
    c = (r - d) * r / n
    ux = x / p
    uy = y / q
    sign = 1.0 if z0 > 0.0 else -1.0
    out[0, 0] = x * x / (alpha * p) - c * ux * ux
    out[1, 1] = y * y / ((1.0 - alpha) * q) - c * uy * uy
    out[2, 2] = r * r * (alpha / p + (1.0 - alpha) / q) / n
    out[0, 1] = out[1, 0] = -c * ux * uy
    out[0, 2] = out[2, 0] = sign * r * ux / n
    out[1, 2] = out[2, 1] = sign * r * uy / n


@numba.njit(nogil=True, cache=True)
def project_power(v: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Project onto a product of 3-D power cones.

    Parameters
    ----------
    v : numpy.ndarray
        float64 vector of length ``3 k``: the cones' ``(x, y, z)`` back to back.
    alpha : numpy.ndarray
        float64 vector of length ``k``, each in ``(0, 1)``.

    Returns
    -------
    numpy.ndarray
        The projection of ``v`` onto ``K_alpha[0] x ... x K_alpha[k-1]``.
    """
    out = np.empty(3 * alpha.shape[0])
    for i in range(alpha.shape[0]):
        x, y, z = _project_one(v[3 * i], v[3 * i + 1], v[3 * i + 2], alpha[i])
        out[3 * i] = x
        out[3 * i + 1] = y
        out[3 * i + 2] = z
    return out


@numba.njit(nogil=True, cache=True)
def jacobian_power(v: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Jacobians of the projection onto a product of 3-D power cones.

    Parameters
    ----------
    v : numpy.ndarray
        float64 vector of length ``3 k``: the cones' ``(x, y, z)`` back to back.
    alpha : numpy.ndarray
        float64 vector of length ``k``, each in ``(0, 1)``.

    Returns
    -------
    numpy.ndarray
        float64 array ``(k, 3, 3)``; entry ``i`` is the (symmetric, eigenvalues in
        ``[0, 1]``) Jacobian of the projection onto ``K_alpha[i]`` at ``v[3i:3i+3]``.
        At nondifferentiable points an element of the generalized Jacobian is returned.
    """
    out = np.zeros((alpha.shape[0], 3, 3))
    for i in range(alpha.shape[0]):
        _jacobian_one(v[3 * i], v[3 * i + 1], v[3 * i + 2], alpha[i], out[i])
    return out
