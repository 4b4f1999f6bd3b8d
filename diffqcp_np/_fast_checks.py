"""Compiled whole-vector tests and reductions for the per-call hot paths.

``np.all(np.isfinite(v))`` and ``np.any(v)`` make a temporary and two passes; these
loops make one pass and stop at the first hit. The scaling by a
power of two that keeps the derivative's solves linear at any scale costs one pass.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def all_finite(values):
    """Whether every entry of a 1-D float array is finite (no NaN or Inf)."""
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            return False
    return True


@numba.njit(nogil=True, cache=True)
def nonzero_positions(values):
    """``np.flatnonzero`` of a 1-D float array (int64), without its ~3 ns per entry."""
    count = 0
    for i in range(values.shape[0]):
        count += values[i] != 0.0
    out = np.empty(count, dtype=np.int64)
    k = 0
    for i in range(values.shape[0]):
        if values[i] != 0.0:
            out[k] = i
            k += 1
    return out


@numba.njit(nogil=True, cache=True)
def largest_magnitude(values):
    """``max |v_i|`` of a 1-D float array (0 when empty), without a temporary."""
    out = 0.0
    for i in range(values.shape[0]):
        out = max(out, abs(values[i]))
    return out


#: :func:`scale_to_unit`'s answer for a vector whose entries are all zero.
ZERO_VECTOR = -(1 << 30)


@numba.njit(nogil=True, cache=True)
def scale_to_unit(values):
    """Multiply a 1-D float array in place by the power of two ``2^-e`` that brings
    ``max |v_i|`` into ``[½, 1)`` and return ``e``: :data:`ZERO_VECTOR` when every entry
    is zero, 0 (nothing changed) when one is not finite. Exact, barring underflow to
    subnormals."""
    size = values.shape[0]
    largest = 0.0
    nonzero = False
    for i in range(size):
        largest = max(largest, abs(values[i]))
        nonzero = nonzero or values[i] != 0.0  # NaN counts as nonzero, as in np.any
    if not nonzero:
        return ZERO_VECTOR
    if not largest < np.inf:
        return 0
    exponent = math.frexp(largest)[1]
    if -1021 <= exponent <= 1021:  # 2^-e is a normal number: one product per entry
        factor = math.ldexp(1.0, -exponent)
        for i in range(size):
            values[i] *= factor
    else:
        for i in range(size):
            values[i] = math.ldexp(values[i], -exponent)
    return exponent


@numba.njit(nogil=True, cache=True)
def unscale(values, exponent):
    """Multiply a 1-D float array in place by ``2^exponent`` (undoing
    :func:`scale_to_unit`); returns ``max |v_i|`` afterwards, or infinity if an entry
    is not finite."""
    factor = math.ldexp(1.0, exponent)
    largest = 0.0
    nonfinite = 0.0  # NaN once any entry is NaN or infinite
    for i in range(values.shape[0]):
        v = math.ldexp(values[i], exponent) if factor == 0.0 or factor == np.inf \
            else values[i] * factor
        values[i] = v
        largest = max(largest, abs(v))
        nonfinite += v * 0.0
    return largest if nonfinite == 0.0 else np.inf
