"""Compiled passes over the stacked values of a same-structure batch.

``P``'s symmetric values are gathered from its stored ones through index maps (see
:class:`~diffqcp_np.batch.structure._QuadraticMap`): ``out[k, j] = w (p[k, a_j] +
p[k, b_j])`` with ``p[k, nnz] = 0`` for an index that means "not stored". One pass per
problem, no temporaries.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def gather_symmetric(data, a, b, weight, check_symmetry, sym_tol):
    """``w (p[a] + p[b])`` for every row of ``data`` (``(B, nnz)``), and whether each row
    is symmetric: ``max |p[a] − p[b]| <= sym_tol · max(max |p|, 1)`` (True for all rows
    unless ``check_symmetry``)."""
    count, nnz = data.shape
    size = a.shape[0]
    out = np.empty((count, size))
    symmetric = np.ones(count, dtype=np.bool_)
    for k in range(count):
        largest = 1.0
        asym = 0.0
        for j in range(size):
            pa = data[k, a[j]] if a[j] < nnz else 0.0
            pb = data[k, b[j]] if b[j] < nnz else 0.0
            out[k, j] = weight * (pa + pb)
            if check_symmetry:
                asym = max(asym, abs(pa - pb))
        if check_symmetry and size:
            for j in range(nnz):
                largest = max(largest, abs(data[k, j]))
            symmetric[k] = asym <= sym_tol * largest
    return out, symmetric
