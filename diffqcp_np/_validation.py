"""Checks and normalisation of user data, with errors that name the argument.

Nothing here mutates the caller's arrays: matrices are copied into canonical CSC
form (explicit zeros kept, since they are part of the sparsity pattern that ``DT``
returns gradients on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._fast_checks import all_finite
from ._input_arrays import (
    NOT_FINITE,
    as_real_array,
    compressed_arrays,
    coordinate_arrays,
    real_values,
)
from .cones.spec import ConeLike, ConeSpec, as_cone_spec


def _csc_copy(template, indptr: np.ndarray, indices: np.ndarray,
              data: np.ndarray) -> sp.csc_matrix:
    """A canonical CSC matrix owning copies of validated canonical arrays.

    For a ``csc_matrix`` template, a shallow copy of its instance state with the arrays
    replaced: SciPy's conversion constructs twice and re-derives the canonical flag by
    another pass (a third of the time at a few thousand entries, paid by every
    derivative set up), and ``copy.copy`` takes the slower pickling protocol.
    """
    if type(template) is sp.csc_matrix and data is template.data:
        out = object.__new__(sp.csc_matrix)
        out.__dict__ = dict(template.__dict__)
        out.data, out.indices, out.indptr = data.copy(), indices.copy(), indptr.copy()
    else:
        out = sp.csc_matrix((data.copy(), indices.copy(), indptr.copy()),
                            shape=template.shape)
    out.has_canonical_format = True
    return out


def _sparse_as_csc(matrix, name: str) -> sp.csc_matrix:
    """A canonical float64 CSC copy of a SciPy sparse matrix (any format), its structure
    checked before anything compiled reads it."""
    fmt = matrix.format
    if fmt in ("csc", "csr"):
        indptr, indices, data, flags = compressed_arrays(matrix, name)
        if flags & NOT_FINITE:
            raise ValueError(f"{name} contains NaN or Inf")
        if fmt == "csc" and not flags:
            return _csc_copy(matrix, indptr, indices, data)
        kind = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
        out = kind((data.copy(), indices.copy(), indptr.copy()), shape=matrix.shape)
        out = out.tocsc() if fmt == "csr" else out
    else:
        if fmt == "coo":
            rows, cols, data = coordinate_arrays(matrix, name)
            out = sp.csc_matrix((data, (rows, cols)), shape=matrix.shape)
        else:
            real_values(np.empty(0, matrix.dtype), name)  # complex or non-numeric
            try:
                if fmt == "bsr":
                    matrix.check_format(full_check=True)
                out = sp.csc_matrix(matrix, dtype=np.float64, copy=True)
            except (ValueError, TypeError, IndexError) as err:
                raise ValueError(f"{name} is not a valid sparse matrix: {err}") from err
        if not all_finite(out.data):
            raise ValueError(f"{name} contains NaN or Inf")
    out.sum_duplicates()
    out.sort_indices()
    return out


def as_csc(matrix, name: str, shape: tuple[int, int] | None = None) -> sp.csc_matrix:
    """Copy ``matrix`` (sparse or dense) into a canonical float64 CSC matrix.

    Explicit zeros of a sparse input are kept; duplicate entries are summed. The
    structure of a sparse input is checked before anything compiled reads it
    (:mod:`._input_arrays`).

    Raises
    ------
    ValueError
        If it is not 2-D, has the wrong shape, a broken sparse structure (indices out of
        range, ``indptr`` that decreases or does not end at the number of entries), or
        holds NaN or Inf.
    TypeError
        If its values are complex or not numbers.
    """
    if sp.issparse(matrix):
        out = _sparse_as_csc(matrix, name)
    else:
        arr = as_real_array(matrix, name, "a sparse matrix or a 2-D array of real numbers")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got an array of shape {arr.shape}")
        if not all_finite(arr.reshape(-1)):
            raise ValueError(f"{name} contains NaN or Inf")
        out = sp.csc_matrix(arr)
    if shape is not None and out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    return out


def as_vector(v, name: str, size: int | None = None, copy: bool = True) -> np.ndarray:
    """``v`` as a contiguous float64 vector, checking its length and finiteness.

    A copy unless ``copy`` is False (for vectors only read, never kept), in which case a
    float64 contiguous ``v`` is returned itself.

    Raises
    ------
    TypeError
        If ``v`` is complex, or not an array of real numbers (a string, None, ...).
    ValueError
        If it is not a vector of length ``size``, or holds NaN or Inf.
    """
    if type(v) is np.ndarray and v.dtype == np.float64:
        arr = v
    else:
        arr = as_real_array(v, name, "a vector of real numbers")
    if copy and (arr is v or arr.base is not None):  # may share the caller's memory
        arr = arr.copy()
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
    if m == 0 or n == 0:
        raise ValueError(
            f"A has shape {A.shape}: a problem needs at least one variable and one "
            "constraint row (the forward solvers take no empty problems)")
    b = as_vector(b, "b", m)
    c = as_vector(c, "c", n)
    cones = as_cone_spec(cone_dict)
    if cones.dim != m:
        raise ValueError(
            f"cone_dict {cones.to_dict()} describes {cones.dim} rows, but A has {m} rows"
        )
    P_csc = None if P is None else as_csc(P, "P", (n, n))
    return ProblemData(A=A, b=b, c=c, cones=cones, P=P_csc)
