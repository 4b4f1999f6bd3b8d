"""Compiled whole-vector tests for the per-call hot paths.

``np.all(np.isfinite(v))`` and ``np.any(v)`` cost about 2 µs each on vectors of a
thousand entries (a temporary and two passes); these loops cost a fraction of that and
stop at the first hit.
"""

from __future__ import annotations

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
def any_nonzero(values):
    """Whether a 1-D float array has a nonzero entry (NaN counts as nonzero, as in
    ``np.any``)."""
    for i in range(values.shape[0]):
        if values[i] != 0.0:
            return True
    return False
