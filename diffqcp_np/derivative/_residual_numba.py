"""The residual map's products and norms in one compiled pass (see
:class:`~diffqcp_np.derivative.solution_refinement.ResidualMap`)."""

from __future__ import annotations

import numba
import numpy as np

from .._sparse import UNSIGNED_INDEX as _U


@numba.njit(nogil=True, cache=True)
def residual_parts(Ap, Ai, Ax, Pp, Pi, Pv, b, c, x, y, s, dual, primal):
    """``dual = Px + A'y + c`` and ``primal = Ax + s − b`` (written in place), for ``A``
    and the full symmetric ``P`` in CSC form (``P`` with no entries: no quadratic term).

    Returns
    -------
    tuple of float
        The largest magnitudes of ``c``, ``Px``, ``A'y``, ``b``, ``Ax``, ``s``, ``dual``
        and ``primal``, and the sums of squares of ``dual`` and ``primal``.
    """
    n, m = c.shape[0], b.shape[0]
    for i in range(m):
        primal[i] = 0.0
    c_max = px_max = aty_max = dual_max = dual_squares = 0.0
    for j in range(n):
        xj = x[j]
        aty = 0.0
        for p in range(_U(Ap[j]), _U(Ap[j + 1])):
            i = _U(Ai[p])
            aty += Ax[p] * y[i]
            primal[i] += Ax[p] * xj
        px = 0.0  # column j of the symmetric P is its row j
        for p in range(_U(Pp[j]), _U(Pp[j + 1])):
            px += Pv[p] * x[_U(Pi[p])]
        d = px + aty + c[j]
        dual[j] = d
        c_max = max(c_max, abs(c[j]))
        px_max = max(px_max, abs(px))
        aty_max = max(aty_max, abs(aty))
        dual_max = max(dual_max, abs(d))
        dual_squares += d * d
    b_max = ax_max = s_max = primal_max = primal_squares = 0.0
    for i in range(m):
        ax = primal[i]
        r = ax + s[i] - b[i]
        primal[i] = r
        b_max = max(b_max, abs(b[i]))
        ax_max = max(ax_max, abs(ax))
        s_max = max(s_max, abs(s[i]))
        primal_max = max(primal_max, abs(r))
        primal_squares += r * r
    return (c_max, px_max, aty_max, b_max, ax_max, s_max, dual_max, primal_max, dual_squares,
            primal_squares)


@numba.njit(nogil=True, cache=True)
def orthant_point(v, zero):
    """``y = Π_{K*}(v)`` and ``s = y − v`` for the zero cone (its first ``zero`` rows, where
    ``K*`` is the whole space) and the orthant (the other rows), in one pass."""
    m = v.shape[0]
    y, s = np.empty(m), np.empty(m)
    orthant_point_into(v, zero, y, s)
    return y, s


@numba.njit(nogil=True, cache=True, inline="always")
def orthant_point_into(v, zero, y, s):
    """:func:`orthant_point` written into ``y`` and ``s``."""
    m = v.shape[0]
    for i in range(zero):
        y[i] = v[i]
        s[i] = 0.0
    for i in range(zero, m):
        if v[i] > 0.0:
            y[i] = v[i]
            s[i] = 0.0
        else:
            y[i] = 0.0
            s[i] = -v[i]


@numba.njit(nogil=True, cache=True)
def orthant_step(Ap, Ai, Ax, Pp, Pi, Pv, b, c, zero, x0, v0, step, t):
    """The point ``x = x0 + t·step[:n]``, ``v = v0 + t·step[n:]``, its ``y, s``
    (:func:`orthant_point`) and the residual there (:func:`residual_parts`), in one call.

    Returns
    -------
    x, v, y, s, dual, primal : ndarray
    parts : tuple of float
        As returned by :func:`residual_parts`.
    """
    n, m = x0.shape[0], v0.shape[0]
    x, v = np.empty(n), np.empty(m)
    for j in range(n):
        x[j] = x0[j] + t * step[j]
    for i in range(m):
        v[i] = v0[i] + t * step[n + i]
    y, s = orthant_point(v, zero)
    dual, primal = np.empty(n), np.empty(m)
    parts = residual_parts(Ap, Ai, Ax, Pp, Pi, Pv, b, c, x, y, s, dual, primal)
    return x, v, y, s, dual, primal, parts
