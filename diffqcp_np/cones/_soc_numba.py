"""Numba kernels for the nonnegative orthant and second-order cones.

An SOC Jacobian is stored in O(dim) form: a region code per cone (0 interior, 1 polar,
2 boundary), the ratio ``a = t / ||z||`` and the unit vector ``u = z / ||z||``, so that
``DΠ = ½ [[1, u'], [u, (1 + a) I − a u u']]`` is applied without forming it.
"""

from __future__ import annotations

import numba
import numpy as np

SOC_INTERIOR = 0
SOC_POLAR = 1
SOC_BOUNDARY = 2


@numba.njit(nogil=True, cache=True)
def project_nonneg(v: np.ndarray) -> np.ndarray:
    """Projection onto the nonnegative orthant."""
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        out[i] = v[i] if v[i] > 0.0 else 0.0
    return out


@numba.njit(nogil=True, cache=True)
def jacobian_nonneg(v: np.ndarray) -> np.ndarray:
    """Diagonal of the orthant projection's Jacobian: 1 if v > 0, 0 if v < 0, ½ at 0."""
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        if v[i] > 0.0:
            out[i] = 1.0
        elif v[i] < 0.0:
            out[i] = 0.0
        else:
            out[i] = 0.5
    return out


@numba.njit(nogil=True, cache=True)
def _norm_tail(v: np.ndarray, start: int, stop: int) -> float:
    scale = 0.0
    for j in range(start + 1, stop):
        a = abs(v[j])
        if a > scale:
            scale = a
    if scale == 0.0:
        return 0.0
    total = 0.0
    for j in range(start + 1, stop):
        q = v[j] / scale
        total += q * q
    return scale * np.sqrt(total)


@numba.njit(nogil=True, cache=True)
def project_soc(v: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Projection onto a product of second-order cones.

    Parameters
    ----------
    v : ndarray
        Concatenated cone vectors ``(t, z)``.
    offsets : ndarray of int64
        ``offsets[i]`` is the first entry of cone ``i``; ``offsets[-1] == len(v)``.
    """
    out = np.empty_like(v)
    for i in range(offsets.shape[0] - 1):
        start, stop = offsets[i], offsets[i + 1]
        t = v[start]
        rho = _norm_tail(v, start, stop)
        if rho <= t:
            for j in range(start, stop):
                out[j] = v[j]
        elif rho <= -t:
            for j in range(start, stop):
                out[j] = 0.0
        else:
            scale = 0.5 * (1.0 + t / rho)
            out[start] = scale * rho
            for j in range(start + 1, stop):
                out[j] = scale * v[j]
    return out


@numba.njit(nogil=True, cache=True)
def soc_jacobian_data(v: np.ndarray, offsets: np.ndarray):
    """Region codes, ratios ``t/||z||`` and unit vectors ``z/||z||`` of each SOC.

    Returns
    -------
    codes : ndarray of int8, one per cone
    ratios : ndarray of float64, one per cone (0 unless on the boundary region)
    units : ndarray of float64, same layout as ``v`` (entry at each cone's ``t`` unused)
    """
    k = offsets.shape[0] - 1
    codes = np.empty(k, dtype=np.int8)
    ratios = np.zeros(k)
    units = np.zeros_like(v)
    for i in range(k):
        start, stop = offsets[i], offsets[i + 1]
        t = v[start]
        rho = _norm_tail(v, start, stop)
        if rho <= t:
            codes[i] = SOC_INTERIOR
        elif rho <= -t:
            codes[i] = SOC_POLAR
        else:
            codes[i] = SOC_BOUNDARY
            ratios[i] = t / rho
            for j in range(start + 1, stop):
                units[j] = v[j] / rho
    return codes, ratios, units


@numba.njit(nogil=True, cache=True)
def soc_jacobian_apply(
    x: np.ndarray,
    offsets: np.ndarray,
    codes: np.ndarray,
    ratios: np.ndarray,
    units: np.ndarray,
) -> np.ndarray:
    """Apply the SOC projection Jacobians to ``x`` in O(total dimension)."""
    out = np.empty_like(x)
    for i in range(offsets.shape[0] - 1):
        start, stop = offsets[i], offsets[i + 1]
        code = codes[i]
        if code == SOC_INTERIOR:
            for j in range(start, stop):
                out[j] = x[j]
        elif code == SOC_POLAR:
            for j in range(start, stop):
                out[j] = 0.0
        else:
            a = ratios[i]
            ux = 0.0
            for j in range(start + 1, stop):
                ux += units[j] * x[j]
            out[start] = 0.5 * (x[start] + ux)
            for j in range(start + 1, stop):
                out[j] = 0.5 * (units[j] * x[start] + (1.0 + a) * x[j] - a * units[j] * ux)
    return out


@numba.njit(nogil=True, cache=True)
def soc_jacobian_triplets(
    offsets: np.ndarray, codes: np.ndarray, ratios: np.ndarray, units: np.ndarray
):
    """COO triplets ``(rows, cols, vals)`` of the block-diagonal SOC Jacobian.

    Interior cones give an identity block, polar cones nothing, boundary cones a dense
    ``dim × dim`` block.
    """
    k = offsets.shape[0] - 1
    nnz = 0
    for i in range(k):
        d = offsets[i + 1] - offsets[i]
        if codes[i] == SOC_INTERIOR:
            nnz += d
        elif codes[i] == SOC_BOUNDARY:
            nnz += d * d
    rows = np.empty(nnz, dtype=np.int64)
    cols = np.empty(nnz, dtype=np.int64)
    vals = np.empty(nnz)
    pos = 0
    for i in range(k):
        start, stop = offsets[i], offsets[i + 1]
        if codes[i] == SOC_INTERIOR:
            for j in range(start, stop):
                rows[pos] = j
                cols[pos] = j
                vals[pos] = 1.0
                pos += 1
        elif codes[i] == SOC_BOUNDARY:
            a = ratios[i]
            for r in range(start, stop):
                for c in range(start, stop):
                    if r == start and c == start:
                        val = 0.5
                    elif r == start:
                        val = 0.5 * units[c]
                    elif c == start:
                        val = 0.5 * units[r]
                    else:
                        val = -0.5 * a * units[r] * units[c]
                        if r == c:
                            val += 0.5 * (1.0 + a)
                    rows[pos] = r
                    cols[pos] = c
                    vals[pos] = val
                    pos += 1
    return rows, cols, vals


@numba.njit(nogil=True, cache=True)
def soc_reduced_triplets(
    offsets: np.ndarray, codes: np.ndarray, ratios: np.ndarray, units: np.ndarray,
    lift_above: int,
):
    """Triplets of ``D``, ``E = D(I − D) + Π₀`` and ``Π₀`` for the SOC blocks.

    ``Π₀`` projects onto the null space of ``D``. Interior cones: ``D = I``, ``E = 0``;
    polar cones: ``D = 0``, ``E = Π₀ = I``. A boundary cone (``t/||z|| = a``, unit
    ``u = z/||z||``) has ``D = ½(1+a) I + U C U'`` with ``U = [e₀, (0, u)]``, eigenvalue
    1 along ``(e₀ + u)/√2``, 0 along ``q = (e₀ − u)/√2`` and ``½(1+a)`` elsewhere, so
    ``E = ½(1+a)·½(1−a)(I − UU') + qq'`` and ``Π₀ = qq'``. Boundary cones of dimension
    above ``lift_above`` give only their diagonal parts (``D: ½(1+a)``,
    ``E: ¼(1−a²)``, ``Π₀: 0``); the rank-two rest is lifted by the caller.

    Returns
    -------
    rows, cols : ndarray of int64
    d_vals, e_vals, null_vals : ndarray of float64
    """
    k = offsets.shape[0] - 1
    nnz = 0
    for i in range(k):
        dim = offsets[i + 1] - offsets[i]
        if codes[i] == SOC_BOUNDARY and dim <= lift_above:
            nnz += dim * dim
        else:
            nnz += dim
    rows = np.empty(nnz, dtype=np.int64)
    cols = np.empty(nnz, dtype=np.int64)
    d_vals = np.zeros(nnz)
    e_vals = np.zeros(nnz)
    null_vals = np.zeros(nnz)
    pos = 0
    for i in range(k):
        start, stop = offsets[i], offsets[i + 1]
        code = codes[i]
        half_plus = 0.5 * (1.0 + ratios[i])
        mid = half_plus * (1.0 - half_plus)
        if code == SOC_BOUNDARY and stop - start <= lift_above:
            for r in range(start, stop):
                ur = 1.0 if r == start else -units[r]  # q = (e0 - u)/sqrt2, times sqrt2
                for c in range(start, stop):
                    uc = 1.0 if c == start else -units[c]
                    # D: the dense boundary block; UU' restricted to the tail is u u'.
                    if r == start and c == start:
                        dv = 0.5
                        proj = 1.0
                    elif r == start:
                        dv = 0.5 * units[c]
                        proj = 0.0
                    elif c == start:
                        dv = 0.5 * units[r]
                        proj = 0.0
                    else:
                        dv = -0.5 * ratios[i] * units[r] * units[c]
                        proj = units[r] * units[c]
                        if r == c:
                            dv += half_plus
                    identity = 1.0 if r == c else 0.0
                    null = 0.5 * ur * uc
                    rows[pos] = r
                    cols[pos] = c
                    d_vals[pos] = dv
                    e_vals[pos] = mid * (identity - proj) + null
                    null_vals[pos] = null
                    pos += 1
        else:
            for j in range(start, stop):
                rows[pos] = j
                cols[pos] = j
                if code == SOC_INTERIOR:
                    d_vals[pos] = 1.0
                elif code == SOC_POLAR:
                    e_vals[pos] = 1.0
                    null_vals[pos] = 1.0
                else:
                    d_vals[pos] = half_plus
                    e_vals[pos] = mid
                pos += 1
    return rows, cols, d_vals, e_vals, null_vals
