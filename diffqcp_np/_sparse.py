"""Small sparse-matrix kernels where SciPy's fixed costs exceed the work itself."""

from __future__ import annotations

from typing import Union

import numba
import numpy as np
import scipy.sparse as sp


#: Index type for the hot loops of Numba kernels: an unsigned index spares every array
#: access Numba's negative-index wraparound test.
UNSIGNED_INDEX = np.uint64
_U = UNSIGNED_INDEX


def column_indices(indptr: np.ndarray) -> np.ndarray:
    """Column index (int64) of each stored entry of a CSC matrix."""
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


@numba.njit(nogil=True, cache=True)
def equal_patterns(indptr, indices, other_indptr, other_indices):
    """Whether two CSC patterns (index arrays of any integer types) are the same."""
    if indptr.shape[0] != other_indptr.shape[0] or indices.shape[0] != other_indices.shape[0]:
        return False
    for j in range(indptr.shape[0]):
        if indptr[j] != other_indptr[j]:
            return False
    for p in range(indices.shape[0]):
        if indices[p] != other_indices[p]:
            return False
    return True


@numba.njit(nogil=True, cache=True)
def _transpose_arrays(rows, indptr, indices, data):
    """CSC arrays (int32 indices) of the transpose of a ``rows × n`` CSC matrix; the
    rows of each column come out sorted."""
    n = indptr.shape[0] - 1
    nnz = indptr[n]
    out_indptr = np.zeros(rows + 1, dtype=np.int32)
    for p in range(nnz):
        out_indptr[indices[p] + 1] += 1
    for i in range(rows):
        out_indptr[i + 1] += out_indptr[i]
    fill = out_indptr[:rows].copy()
    out_indices = np.empty(nnz, dtype=np.int32)
    out_data = np.empty(nnz)
    for j in range(n):
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            row = _U(indices[p])
            q = _U(fill[row])
            fill[row] = q + 1
            out_indices[q] = j
            out_data[q] = data[p]
    return out_data, out_indices, out_indptr


def transpose(matrix: sp.csc_matrix) -> sp.csc_matrix:
    """The transpose of a CSC matrix, in canonical CSC form.

    Parameters
    ----------
    matrix : scipy.sparse.csc_matrix
        With at most 2³¹ − 1 stored entries and rows.
    """
    rows, cols = matrix.shape
    return sp.csc_matrix(_transpose_arrays(rows, matrix.indptr, matrix.indices, matrix.data),
                         shape=(cols, rows))


@numba.njit(nogil=True, cache=True, inline="always")
def add_csc_product(indptr, indices, data, v, out, scale):
    """``out += scale · X v`` for ``X`` in CSC form (``v`` has X's column count)."""
    for j in range(indptr.shape[0] - 1):
        vj = scale * v[j]
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            out[_U(indices[p])] += data[p] * vj


@numba.njit(nogil=True, cache=True, inline="always")
def add_csc_transpose_product(indptr, indices, data, v, out, scale):
    """``out += scale · X' v`` for ``X`` in CSC form (``out`` has X's column count)."""
    for j in range(indptr.shape[0] - 1):
        acc = 0.0
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            acc += data[p] * v[_U(indices[p])]
        out[j] += scale * acc


@numba.njit(nogil=True, cache=True, inline="always")
def unit_transpose_solve(indptr, indices, data, x, columns):
    """``x ← L'⁻¹ x`` in place, on rows ``0 .. columns−1``, for a unit lower triangular
    ``L`` stored in CSC form without its diagonal (column ``j`` of L is row ``j`` of L';
    rows from ``columns`` on are taken as solved already)."""
    for j in range(columns - 1, -1, -1):
        total = x[j]
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            total -= data[p] * x[_U(indices[p])]
        x[j] = total


@numba.njit(nogil=True, cache=True)
def _csc_matvec(indptr, indices, data, v):
    """``A v`` for a square CSC matrix ``A``."""
    out = np.zeros(indptr.shape[0] - 1)
    add_csc_product(indptr, indices, data, v, out, 1.0)
    return out


@numba.njit(nogil=True, cache=True)
def _diagonal_csc(values):
    """CSC arrays ``(indptr, indices, data)`` of ``diag(values)`` without stored zeros
    (branch-free: the zero pattern of a cone Jacobian is unpredictable)."""
    size = values.shape[0]
    indptr = np.empty(size + 1, dtype=np.int32)
    rows = np.empty(size, dtype=np.int32)
    data = np.empty(size)
    count = 0
    indptr[0] = 0
    for i in range(size):
        rows[count] = i
        data[count] = values[i]
        count += values[i] != 0.0
        indptr[i + 1] = count
    return indptr, rows[:count], data[:count]


class CSCArrays:
    """A square sparse matrix as bare CSC arrays (rows sorted within each column).

    For matrices that only feed Numba kernels, where building SciPy matrices would cost
    more than the kernels themselves at moderate sizes. A diagonal matrix made by
    :meth:`from_diagonal` keeps its whole diagonal (zeros included) as ``diagonal``:
    products take one vectorised multiplication, and its CSC arrays are built only if
    something reads them. ``diagonal`` is None otherwise.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> None:
        self.indptr, self.indices, self.data = indptr, indices, data
        self.diagonal: np.ndarray | None = None

    @classmethod
    def from_diagonal(cls, values: np.ndarray) -> CSCArrays:
        """``diag(values)`` (``values`` kept, not copied)."""
        matrix = cls.__new__(cls)
        matrix.diagonal = values
        return matrix

    def __getattr__(self, name: str):
        # Called only for attributes not set: the CSC arrays of a diagonal matrix.
        if name in ("indptr", "indices", "data") and self.__dict__.get("diagonal") is not None:
            self.indptr, self.indices, self.data = _diagonal_csc(self.diagonal)
            return self.__dict__[name]
        raise AttributeError(name)

    @classmethod
    def from_scipy(cls, matrix: sp.csc_matrix) -> CSCArrays:
        """The arrays of a canonical CSC matrix (shared, not copied)."""
        return cls(matrix.indptr, matrix.indices, matrix.data)

    @property
    def size(self) -> int:
        """Number of rows (and columns)."""
        if self.diagonal is not None:
            return self.diagonal.size
        return self.indptr.size - 1

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """The product with a vector."""
        if self.diagonal is not None:
            return self.diagonal * v
        return _csc_matvec(self.indptr, self.indices, self.data, v)

    def tocsc(self) -> sp.csc_matrix:
        """A SciPy copy."""
        return sp.csc_matrix((self.data.copy(), self.indices.copy(), self.indptr.copy()),
                             shape=(self.size, self.size))

    def toarray(self) -> np.ndarray:
        """A dense copy."""
        return self.tocsc().toarray()


#: What kernels taking CSC arrays accept: a SciPy CSC matrix or bare arrays.
CSCLike = Union[sp.csc_matrix, CSCArrays]
