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
from .cones.spec import ConeLike, ConeSpec, as_cone_spec


def as_csc(matrix, name: str, shape: tuple[int, int] | None = None) -> sp.csc_matrix:
    """Copy ``matrix`` (sparse or dense) into a canonical float64 CSC matrix.

    Explicit zeros of a sparse input are kept; duplicate entries are summed.

    Raises
    ------
    ValueError
        If it is not 2-D, has the wrong shape, or holds NaN or Inf.
    """
    if sp.issparse(matrix):
        out = sp.csc_matrix(matrix, dtype=np.float64, copy=True)
    else:
        arr = np.asarray(matrix, dtype=np.float64)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got an array of shape {arr.shape}")
        out = sp.csc_matrix(arr)
    if shape is not None and out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
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
