"""Checks and normalisation of user data, with errors that name the argument.

Nothing here mutates the caller's arrays: matrices are copied into canonical CSC
form (explicit zeros kept, since they are part of the sparsity pattern that ``DT``
returns gradients on).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from ._fast_checks import all_finite
from .cones.spec import ConeLike, ConeSpec, as_cone_spec


@numba.njit(nogil=True, cache=True)
def _canonical_and_finite(rows, indptr, indices, data):
    """Whether CSC arrays are valid and canonical (rows strictly increasing within each
    column, in ``[0, rows)``) with finite values; reads nothing out of bounds.

    Flat loops without early exits: a row index that does not increase is allowed only
    at the first entry of a column, so the canonical form holds when the number of such
    places equals the number of column starts among them.
    """
    nnz = indices.shape[0]
    columns = indptr.shape[0] - 1
    if indptr[0] != 0 or indptr[columns] != nnz or data.shape[0] != nnz:
        return False
    for j in range(columns):
        if indptr[j + 1] < indptr[j]:
            return False
    descents_at_starts = 0
    for j in range(1, columns):
        start = indptr[j]
        if 0 < start < indptr[j + 1] and indices[start] <= indices[start - 1]:
            descents_at_starts += 1
    descents = 0
    for p in range(1, nnz):
        descents += indices[p] <= indices[p - 1]
    lowest, highest = 0, -1
    nonfinite = 0.0  # NaN once any value is NaN or infinite
    for p in range(nnz):
        lowest = min(lowest, indices[p])
        highest = max(highest, indices[p])
        nonfinite += data[p] * 0.0
    return (descents == descents_at_starts and lowest >= 0 and highest < rows
            and nonfinite == 0.0)


def _canonical_copy(matrix) -> sp.csc_matrix | None:
    """A copy of a float64 ``csc_matrix`` that is canonical and finite already, or None.

    SciPy's conversion constructs twice and re-derives the canonical flag by another
    pass; here one compiled check and a shallow copy with the arrays replaced by copies
    (a third of the time at a few thousand entries, paid by every derivative set up).
    """
    if not (type(matrix) is sp.csc_matrix and matrix.dtype == np.float64
            and matrix.indptr.shape == (matrix.shape[1] + 1,)):
        return None
    if not _canonical_and_finite(matrix.shape[0], matrix.indptr, matrix.indices, matrix.data):
        return None
    out = copy.copy(matrix)
    out.data, out.indices, out.indptr = (matrix.data.copy(), matrix.indices.copy(),
                                         matrix.indptr.copy())
    out.has_canonical_format = True
    return out


def as_csc(matrix, name: str, shape: tuple[int, int] | None = None) -> sp.csc_matrix:
    """Copy ``matrix`` (sparse or dense) into a canonical float64 CSC matrix.

    Explicit zeros of a sparse input are kept; duplicate entries are summed.

    Raises
    ------
    ValueError
        If it is not 2-D, has the wrong shape, or holds NaN or Inf.
    """
    fast = _canonical_copy(matrix) if sp.issparse(matrix) else None  # canonical, finite
    if fast is not None:
        out = fast
    elif sp.issparse(matrix):
        out = sp.csc_matrix(matrix, dtype=np.float64, copy=True)
    else:
        arr = np.asarray(matrix, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got an array of shape {arr.shape}")
        out = sp.csc_matrix(arr)
    if shape is not None and out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if fast is not None:
        return out
    if not all_finite(out.data):
        raise ValueError(f"{name} contains NaN or Inf")
    if not out.has_canonical_format:
        out.sum_duplicates()
    out.sort_indices()
    return out


def as_vector(v, name: str, size: int | None = None, copy: bool = True) -> np.ndarray:
    """``v`` as a contiguous float64 vector, checking its length and finiteness.

    A copy unless ``copy`` is False (for vectors only read, never kept), in which case a
    float64 contiguous ``v`` is returned itself.
    """
    arr = np.array(v, dtype=np.float64, copy=True) if copy else np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        if arr.ndim == 2 and 1 in arr.shape:
            arr = arr.ravel()
        else:
            raise ValueError(f"{name} must be a 1-D vector, got shape {arr.shape}")
    if size is not None and arr.size != size:
        raise ValueError(f"{name} has length {arr.size}, expected {size}")
    arr = np.ascontiguousarray(arr)
    if not all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


@dataclass(frozen=True)
class ProblemData:
    """Validated problem data: copies of the caller's arrays in canonical form."""

    A: sp.csc_matrix
    b: np.ndarray
    c: np.ndarray
    cones: ConeSpec
    P: sp.csc_matrix | None

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def n(self) -> int:
        return self.A.shape[1]


def check_problem(A, b, c, cone_dict: ConeLike, P=None) -> ProblemData:
    """Validate and copy the data of a cone program.

    Raises
    ------
    ValueError
        Naming the argument: shapes that disagree, NaN or Inf, cones whose sizes do not
        add up to the number of rows of ``A``, a ``P`` that is neither symmetric nor
        upper triangular (checked later by :class:`~diffqcp_np.derivative.QuadraticTerm`).
    """
    A = as_csc(A, "A")
    m, n = A.shape
    b = as_vector(b, "b", m)
    c = as_vector(c, "c", n)
    cones = as_cone_spec(cone_dict)
    if cones.dim != m:
        raise ValueError(
            f"cone_dict {cones.to_dict()} describes {cones.dim} rows, but A has {m} rows"
        )
    P_csc = None if P is None else as_csc(P, "P", (n, n))
    return ProblemData(A=A, b=b, c=c, cones=cones, P=P_csc)
