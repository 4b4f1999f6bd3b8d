"""Whether the quadratic term is convex: a check that ``P`` is positive semidefinite.

A forward solver given a ``P`` that is not positive semidefinite fails with a message
that does not name ``P`` (SCS: an allocation error; Clarabel: insufficient progress) or
returns a point that is not optimal, without a word. :func:`check_positive_semidefinite`
refuses such a ``P`` first. It decides whether ``P + δI`` is positive definite, with
``δ = PSD_TOLERANCE · max|P|``, so that a positive semidefinite ``P`` whose smallest
eigenvalues carry rounding noise passes:

1. one compiled pass over ``P``: a diagonal entry below ``−δ`` refutes, diagonal
   dominance (Gershgorin's discs in ``[−δ, ∞)``) proves;
2. otherwise a factorisation of ``P + δI``, positive definite exactly when every
   pivot is positive: a dense Cholesky for small or dense ``P`` (compiled, or LAPACK's),
   else the sparse LDLᵀ of the derivative (:mod:`._ldl`), whose symbolic analysis is
   kept by pattern (a training loop pays it once) and which keeps a banded or
   block-diagonal pattern in its own order instead of ordering it.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .._sparse import CSCArrays
from ._dense_block_numba import cholesky_in_place
from ._ldl import ZeroPivotError, factorize

#: Eigenvalues of ``P`` down to ``−PSD_TOLERANCE · max|P|`` count as zero.
PSD_TOLERANCE = 1e-9
#: ``P`` is factored by a compiled dense Cholesky up to this order, by LAPACK's up to
#: the next one or when it stores this fraction of its entries.
COMPILED_MAX_ORDER = 32
DENSE_MAX_ORDER = 100
DENSE_MIN_FILL = 0.25
#: A sparse ``P`` keeps its own order when its factor has at most this many times the
#: entries of its upper triangle (:func:`~._ldl.factorize`'s ``natural_fill``).
NATURAL_FILL = 4.0


@numba.njit(nogil=True, cache=True)
def _diagonal_test(indptr, indices, data, tolerance):
    """For a symmetric CSC matrix: ``max |P_ij|``, the first column whose diagonal entry
    is below ``−tolerance · max |P_ij|`` (−1 if none), and whether every Gershgorin disc
    lies in ``[−tolerance · max |P_ij|, ∞)``."""
    n = indptr.shape[0] - 1
    largest = 0.0
    for p in range(indices.shape[0]):
        largest = max(largest, abs(data[p]))
    shift = tolerance * largest
    first_negative = -1
    dominant = True
    for j in range(n):
        diagonal = 0.0
        off = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            if indices[p] == j:
                diagonal += data[p]
            else:
                off += abs(data[p])
        if diagonal < -shift and first_negative < 0:
            first_negative = j
        dominant = dominant and diagonal - off >= -shift
    return largest, first_negative, dominant


@numba.njit(nogil=True, cache=True)
def _small_positive_definite(indptr, indices, data, shift):
    """Whether the symmetric CSC matrix plus ``shift`` on the diagonal is positive
    definite: a dense Cholesky factorisation in place of its lower triangle (small
    matrices, where LAPACK's call costs more than the arithmetic)."""
    n = indptr.shape[0] - 1
    L = np.zeros((n, n))
    for j in range(n):
        L[j, j] = shift
        for p in range(indptr[j], indptr[j + 1]):
            if indices[p] >= j:
                L[indices[p], j] += data[p]
    return cholesky_in_place(L, 0.0)


@numba.njit(nogil=True, cache=True)
def _shifted_upper(indptr, indices, data, shift):
    """CSC arrays of the upper triangle of the symmetric canonical CSC matrix plus
    ``shift`` on the diagonal, every diagonal entry stored (last in its column)."""
    n = indptr.shape[0] - 1
    strict = 0
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            strict += indices[p] < j
    out_indptr = np.empty(n + 1, dtype=np.int64)
    out_indices = np.empty(strict + n, dtype=np.int64)
    out_data = np.empty(strict + n)
    q = 0
    out_indptr[0] = 0
    for j in range(n):
        diagonal = shift
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if i < j:
                out_indices[q] = i
                out_data[q] = data[p]
                q += 1
            elif i == j:
                diagonal += data[p]
        out_indices[q] = j
        out_data[q] = diagonal
        q += 1
        out_indptr[j + 1] = q
    return out_indptr, out_indices, out_data


@numba.njit(nogil=True, cache=True)
def _dense_lower(indptr, indices, data, shift):
    """The lower triangle of the symmetric CSC matrix plus ``shift`` on the diagonal,
    dense in Fortran order (as LAPACK reads it)."""
    n = indptr.shape[0] - 1
    out = np.zeros((n, n)).T  # Fortran order: column j is contiguous
    for j in range(n):
        out[j, j] = shift
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if i >= j:
                out[i, j] += data[p]
    return out


@numba.njit(nogil=True, cache=True)
def _first_not_positive_semidefinite(indptr, indices, values, tolerance):
    """The first row of ``values`` (symmetric matrices on one CSC pattern, small) that
    :func:`check_positive_semidefinite` refuses, or −1."""
    for k in range(values.shape[0]):
        data = values[k]
        largest, negative, dominant = _diagonal_test(indptr, indices, data, tolerance)
        if negative >= 0:
            return k
        if not dominant and not _small_positive_definite(indptr, indices, data,
                                                         tolerance * largest):
            return k
    return -1


def first_not_positive_semidefinite(indptr: np.ndarray, indices: np.ndarray,
                                    values: np.ndarray) -> int | None:
    """For symmetric matrices on one canonical CSC pattern (the rows of ``values``): the
    index of the first that :func:`check_positive_semidefinite` refuses, −1 if none,
    or None where the order is above ``COMPILED_MAX_ORDER`` (check them one by one).

    A stack of one repeated matrix (a batch with a fixed ``P``) is checked once."""
    if indptr.size - 1 > COMPILED_MAX_ORDER:
        return None
    if (values.shape[0] > 1 and np.array_equal(values[-1], values[0])
            and (values == values[0]).all()):
        return int(_first_not_positive_semidefinite(indptr, indices, values[:1],
                                                    PSD_TOLERANCE))
    return int(_first_not_positive_semidefinite(indptr, indices, values, PSD_TOLERANCE))


def _positive_definite(P: sp.csc_matrix, shift: float) -> bool:
    """Whether ``P + shift·I`` is positive definite (every pivot of its factor positive)."""
    n = P.shape[0]
    if n <= COMPILED_MAX_ORDER:
        return _small_positive_definite(P.indptr, P.indices, P.data, shift)
    if n <= DENSE_MAX_ORDER or P.nnz >= DENSE_MIN_FILL * n * n:
        lower = _dense_lower(P.indptr, P.indices, P.data, shift)
        return lapack.dpotrf(lower, lower=1, overwrite_a=1, clean=0)[1] == 0
    upper = CSCArrays(*_shifted_upper(P.indptr, P.indices, P.data, shift))
    try:
        factor = factorize(upper, natural_fill=NATURAL_FILL)
    except ZeroPivotError:
        return False
    return bool(np.all(factor.arrays[3] > 0.0))


def check_positive_semidefinite(P: sp.csc_matrix | None, name: str = "P",
                                factor: bool = True) -> None:
    """Raise unless the symmetric ``P`` is positive semidefinite (to ``PSD_TOLERANCE``).

    Parameters
    ----------
    P : scipy.sparse.csc_matrix or None
        The full symmetric matrix of the objective, canonical (None: nothing to check).
    name : str
        Argument name for the message.
    factor : bool, default True
        Decide by a factorisation where the compiled pass cannot; False checks the
        diagonal only (a necessary condition, for callers that do not solve).

    Raises
    ------
    ValueError
        Naming ``name``, when ``P`` has an eigenvalue below ``−PSD_TOLERANCE · max|P|``
        (with ``factor=False``: a diagonal entry below it): the problem is not convex.
    """
    if P is None:
        return
    largest, negative, dominant = _diagonal_test(P.indptr, P.indices, P.data, PSD_TOLERANCE)
    shift = PSD_TOLERANCE * largest
    if negative >= 0:
        raise ValueError(
            f"{name} is not positive semidefinite (its diagonal entry ({negative}, "
            f"{negative}) is {P[negative, negative]:.3g}): the problem is not convex"
        )
    if dominant or not factor or _positive_definite(P, shift):
        return
    raise ValueError(
        f"{name} is not positive semidefinite (an eigenvalue is below "
        f"-{PSD_TOLERANCE:g}·max|{name}| = {-shift:.3g}): the problem is not convex"
    )
