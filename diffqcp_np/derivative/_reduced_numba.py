"""Numba kernels of the reduced derivative system: assembly of M's upper triangle and
products with it.

``M = [[P, A'D], [DA, −E]]`` restricted to the kept rows is assembled in one pass over
the CSC arrays of ``P``, ``A'``, ``D`` and ``E`` (SciPy's sparse products, slicing and
``bmat`` cost milliseconds of fixed overhead at the sizes where the factorisation itself
takes a fraction of one).
"""

from __future__ import annotations

import numba
import numpy as np

from .._sparse import UNSIGNED_INDEX as _U


@numba.njit(nogil=True, cache=True, inline="always")
def _coupling_rows(AT_indptr, AT_indices, D_indptr, D_indices, column, marker, stamp, rows):
    """Distinct rows of ``(A'D)[:, column]`` into ``rows``; returns their count.

    ``marker[i] == stamp`` flags row ``i`` as seen (callers pass a new stamp per column).
    """
    count = 0
    for p in range(D_indptr[column], D_indptr[column + 1]):
        i = D_indices[p]
        for q in range(AT_indptr[i], AT_indptr[i + 1]):
            row = AT_indices[q]
            if marker[row] != stamp:
                marker[row] = stamp
                rows[count] = row
                count += 1
    return count


@numba.njit(nogil=True, cache=True, inline="always")
def _sift_down(indices, data, start, root, size):
    """Restore the max-heap order of ``indices[start:start + size]`` below ``root``."""
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and indices[start + child + 1] > indices[start + child]:
            child += 1
        if indices[start + root] >= indices[start + child]:
            return
        a, b = start + root, start + child
        indices[a], indices[b] = indices[b], indices[a]
        data[a], data[b] = data[b], data[a]
        root = child


@numba.njit(nogil=True, cache=True)
def _sort_segment(indices, data, start, stop):
    """Sort ``indices[start:stop]`` (and ``data`` alongside) in place, by heapsort:
    O(k log k) like ``np.argsort``, whose quicksort and slice assignments take seconds
    to compile."""
    size = stop - start
    for root in range(size // 2 - 1, -1, -1):
        _sift_down(indices, data, start, root, size)
    for end in range(size - 1, 0, -1):
        indices[start], indices[start + end] = indices[start + end], indices[start]
        data[start], data[start + end] = data[start + end], data[start]
        _sift_down(indices, data, start, 0, end)


@numba.njit(nogil=True, cache=True, inline="always")
def _count_upper_P(n, P_indptr, P_indices, indptr):
    """Entries of the first ``n`` columns of M's upper triangle (P's strict upper
    triangle and the diagonal) into ``indptr[1:n+1]``."""
    for j in range(n):
        count = 1  # the diagonal
        for p in range(_U(P_indptr[j]), _U(P_indptr[j + 1])):
            if P_indices[p] < j:
                count += 1
        indptr[j + 1] = count


@numba.njit(nogil=True, cache=True, inline="always")
def _fill_upper_P(n, P_indptr, P_indices, P_data, indptr, indices, data):
    """The first ``n`` columns of M's upper triangle: P's strict upper triangle, rows in
    increasing order, then the diagonal (P's, or a stored zero)."""
    for j in range(n):
        out = indptr[j]
        diagonal = 0.0
        ordered = True
        for p in range(_U(P_indptr[j]), _U(P_indptr[j + 1])):
            i = P_indices[p]
            if i < j:
                if out > indptr[j] and i < indices[_U(out - 1)]:
                    ordered = False
                indices[_U(out)] = i
                data[_U(out)] = P_data[p]
                out += 1
            elif i == j:
                diagonal += P_data[p]
        if not ordered:
            _sort_segment(indices, data, indptr[j], out)
        indices[out] = j
        data[out] = diagonal


@numba.njit(nogil=True, cache=True)
def assemble_upper_diagonal(n, P_indptr, P_indices, P_data, A_indptr, A_indices, A_data,
                            d, e, kept):
    """Upper triangle of M for diagonal ``D = diag(d)`` and ``E = diag(e)``, read from A
    itself (no transpose needed): column ``n + t`` holds row ``kept[t]`` of A times
    ``d[kept[t]]``, its entries meet in increasing column order of A, so they come out
    sorted.

    Parameters are as for :func:`assemble_upper`, with A (``m × n`` CSC) in place of A'
    and the diagonals ``d``, ``e`` in place of D and E. Returns the same canonical CSC.
    """
    k = kept.shape[0]
    m = d.shape[0]
    position = np.full(m, -1, dtype=np.int64)
    for t in range(k):
        position[kept[t]] = t
    indptr = np.zeros(n + k + 1, dtype=np.int64)
    _count_upper_P(n, P_indptr, P_indices, indptr)
    for t in range(k):
        indptr[n + t + 1] = 1  # the diagonal
    for p in range(_U(A_indptr[n])):
        t = position[_U(A_indices[p])]
        if t >= 0:
            indptr[_U(n + t + 1)] += 1
    for j in range(n + k):
        indptr[j + 1] += indptr[j]
    indices = np.empty(indptr[n + k], dtype=np.int64)
    data = np.empty(indptr[n + k])
    _fill_upper_P(n, P_indptr, P_indices, P_data, indptr, indices, data)
    fill = indptr[n:n + k].copy()
    for j in range(n):
        for p in range(_U(A_indptr[j]), _U(A_indptr[j + 1])):
            t = position[_U(A_indices[p])]
            if t >= 0:
                q = _U(fill[_U(t)])
                indices[q] = j
                data[q] = A_data[p] * d[_U(kept[_U(t)])]
                fill[_U(t)] = q + 1
    for t in range(k):
        indices[fill[t]] = n + t
        data[fill[t]] = -e[kept[t]]
    return indptr, indices, data


@numba.njit(nogil=True, cache=True)
def assemble_upper(n, P_indptr, P_indices, P_data, AT_indptr, AT_indices, AT_data,
                   D_indptr, D_indices, D_data, E_indptr, E_indices, E_data, kept):
    """Upper triangle of ``M = [[P, A'D[:, kept]], [·, −E[kept, kept]]]``.

    Parameters
    ----------
    n : int
        Number of variables.
    P_indptr, P_indices, P_data : ndarray
        The full symmetric ``P`` (``n × n`` CSC; only entries with row ≤ column are read;
        empty arrays with ``P_indptr`` all zero for no ``P``).
    AT_indptr, AT_indices, AT_data : ndarray
        ``A'`` (``n × m`` CSC).
    D_indptr, D_indices, D_data, E_indptr, E_indices, E_data : ndarray
        ``D`` and ``E`` (``m × m`` CSC, rows sorted within each column).
    kept : ndarray of int64
        The rows of ``D`` kept in ``M``, increasing.

    Returns
    -------
    indptr, indices, data : ndarray
        Canonical CSC of the upper triangle (``(n + k) × (n + k)``, ``k = kept.size``),
        every diagonal entry stored, last in its column.
    """
    k = kept.shape[0]
    m = D_indptr.shape[0] - 1
    position = np.full(m, -1, dtype=np.int64)
    for t in range(k):
        position[kept[t]] = t
    marker = np.full(n, -1, dtype=np.int64)
    rows = np.empty(n, dtype=np.int64)
    work = np.zeros(n)

    # Pass 1: entries per column.
    indptr = np.zeros(n + k + 1, dtype=np.int64)
    _count_upper_P(n, P_indptr, P_indices, indptr)
    for t in range(k):
        column = kept[t]
        count = _coupling_rows(AT_indptr, AT_indices, D_indptr, D_indices, column,
                               marker, t, rows) + 1
        for p in range(E_indptr[column], E_indptr[column + 1]):
            u = position[E_indices[p]]
            if u >= 0 and u < t:
                count += 1
        indptr[n + t + 1] = count
    for j in range(n + k):
        indptr[j + 1] += indptr[j]

    # Pass 2: values, rows in increasing order, diagonal last.
    indices = np.empty(indptr[n + k], dtype=np.int64)
    data = np.empty(indptr[n + k])
    _fill_upper_P(n, P_indptr, P_indices, P_data, indptr, indices, data)
    marker[:] = -1
    for t in range(k):
        column = kept[t]
        count = 0  # the rows of (A'D)[:, column] as _coupling_rows finds them, summed
        for p in range(D_indptr[column], D_indptr[column + 1]):
            i, d = D_indices[p], D_data[p]
            for q in range(AT_indptr[i], AT_indptr[i + 1]):
                row = AT_indices[q]
                if marker[row] != t:
                    marker[row] = t
                    rows[count] = row
                    count += 1
                work[row] += AT_data[q] * d
        out = indptr[n + t]
        ordered = True
        for c in range(count):
            row = rows[c]
            if c > 0 and row < rows[c - 1]:
                ordered = False
            indices[out] = row
            data[out] = work[row]
            work[row] = 0.0
            out += 1
        if not ordered:
            _sort_segment(indices, data, indptr[n + t], out)
        diagonal = 0.0
        for p in range(E_indptr[column], E_indptr[column + 1]):
            u = position[E_indices[p]]
            if u >= 0 and u < t:
                indices[out] = n + u
                data[out] = -E_data[p]
                out += 1
            elif u == t:
                diagonal -= E_data[p]
        indices[out] = n + t
        data[out] = diagonal
    return indptr, indices, data


@numba.njit(nogil=True, cache=True, inline="always")
def _add_symmetric_product(indptr, indices, data, z, out):
    """``out += M z`` for a symmetric ``M`` given by its upper triangle in CSC form with
    every diagonal entry stored last in its column (as the assembly kernels build it)."""
    for j in range(z.shape[0]):
        zj = z[j]
        last = _U(indptr[j + 1] - 1)
        acc = data[last] * zj
        for p in range(_U(indptr[j]), last):
            i = _U(indices[p])
            value = data[p]
            out[i] += value * zj
            acc += value * z[i]
        out[j] += acc


@numba.njit(nogil=True, cache=True)
def symmetric_upper_matvec(indptr, indices, data, z):
    """``M z`` for a symmetric ``M`` given by its upper triangle in CSC form, every
    diagonal entry stored last in its column."""
    out = np.zeros(z.shape[0])
    _add_symmetric_product(indptr, indices, data, z, out)
    return out


@numba.njit(nogil=True, cache=True)
def symmetric_residual(indptr, indices, data, z, r):
    """``r − M z`` and its Euclidean norm, M as for :func:`symmetric_upper_matvec`."""
    out = np.zeros(z.shape[0])
    _add_symmetric_product(indptr, indices, data, z, out)
    total = 0.0
    for j in range(z.shape[0]):
        out[j] = r[j] - out[j]
        total += out[j] * out[j]
    return out, np.sqrt(total)


@numba.njit(nogil=True, cache=True)
def equilibrating_scale(indptr, indices, data):
    """``s = 1/√(max_j |M_ij|)`` per row of a symmetric M given by its upper triangle
    (1 for an empty row): one pass of Ruiz's equilibration; ``S M S`` has entries of at
    most 1, and rows that differ in scale by orders of magnitude come out within a few
    orders of each other."""
    size = indptr.shape[0] - 1
    largest = np.zeros(size)
    for j in range(size):
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            i = _U(indices[p])
            value = abs(data[p])
            largest[i] = max(largest[i], value)
            largest[j] = max(largest[j], value)
    scale = np.ones(size)
    for i in range(size):
        if largest[i] > 0.0:
            scale[i] = 1.0 / np.sqrt(largest[i])
    return scale


@numba.njit(nogil=True, cache=True)
def scaled_values(indptr, indices, data, scale):
    """Values of ``S M S`` (``S = diag(scale)``) for M's upper triangle in CSC form."""
    out = np.empty(data.shape[0])
    for j in range(indptr.shape[0] - 1):
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            out[p] = data[p] * scale[_U(indices[p])] * scale[j]
    return out


@numba.njit(nogil=True, cache=True)
def shifted_diagonal(indptr, data, n, shift):
    """Values of a quasi-definite upper triangle (diagonal entries last in each column)
    with ``+shift`` added to the first ``n`` diagonal entries and ``−shift`` to the rest."""
    out = data.copy()
    for j in range(indptr.shape[0] - 1):
        out[indptr[j + 1] - 1] += shift if j < n else -shift
    return out


@numba.njit(nogil=True, cache=True, inline="always")
def _mix(z):
    """SplitMix64's output function."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def probe_vector(size, seed):
    """A reproducible pseudo-random unit vector (SplitMix64 draws, uniform in [−1, 1))."""
    golden = np.uint64(0x9E3779B97F4A7C15)
    state = _mix(np.uint64(seed) + golden)
    out = np.empty(size)
    total = 0.0
    for i in range(size):
        state += golden
        value = (_mix(state) >> np.uint64(11)) * (2.0 / 9007199254740992.0) - 1.0
        out[i] = value
        total += value * value
    scale = 1.0 / np.sqrt(total) if total > 0.0 else 0.0
    for i in range(size):
        out[i] *= scale
    return out
