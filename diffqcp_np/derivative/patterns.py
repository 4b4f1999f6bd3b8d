"""Sparsity patterns of A and P: perturbations in, gradients out.

``DT`` returns ``dA`` on exactly the caller's stored pattern of ``A`` (explicit zeros
included, canonical CSC order: cvxpylayers reads ``dA.data`` by position) and ``dP`` on
the stored pattern of ``P``. The storage convention of ``P`` fixes what its stored
entries mean:

* ``"full"``: the whole symmetric matrix is stored; the objective sees ``sym(P)``;
* ``"upper"``: only the upper triangle is stored; ``P = U + triu(U, 1)'``.

``DT``'s ``dP`` is the exact adjoint of ``D``'s ``dP`` argument under that convention, so
with upper storage an off-diagonal gradient entry is twice the symmetric gradient's.
"""

from __future__ import annotations

import copy
from functools import cached_property

import numba
import numpy as np
import scipy.sparse as sp

from .._fast_checks import all_finite, largest_magnitude
from .._input_arrays import has_index_arrays
from .._sparse import UNSIGNED_INDEX as _U
from .._sparse import column_indices, equal_patterns
from .._validation import as_csc


@numba.njit(nogil=True, cache=True)
def _outer_difference_on_pattern(indptr, indices, y, w1, w2, x):
    """``y[i] w1[j] − w2[i] x[j]`` for each stored (i, j) of a CSC pattern."""
    out = np.empty(indices.shape[0])
    for j in range(indptr.shape[0] - 1):
        w1j, xj = w1[j], x[j]
        for k in range(_U(indptr[j]), _U(indptr[j + 1])):
            i = _U(indices[k])
            out[k] = y[i] * w1j - w2[i] * xj
    return out


@numba.njit(nogil=True, cache=True)
def _sym_outer_on_pattern(indptr, indices, w, x, off_diagonal_scale):
    """``scale · ½(w[i] x[j] + x[i] w[j])`` for each stored (i, j) of a CSC pattern;
    scale is 1 on the diagonal."""
    out = np.empty(indices.shape[0])
    for j in range(indptr.shape[0] - 1):
        for k in range(indptr[j], indptr[j + 1]):
            i = indices[k]
            val = 0.5 * (w[i] * x[j] + x[i] * w[j])
            out[k] = val if i == j else off_diagonal_scale * val
    return out


@numba.njit(nogil=True, cache=True)
def _triangles_stored(indptr, indices):
    """Whether a CSC pattern stores entries below and above the diagonal."""
    lower = upper = False
    for j in range(indptr.shape[0] - 1):
        for k in range(indptr[j], indptr[j + 1]):
            if indices[k] > j:
                lower = True
            elif indices[k] < j:
                upper = True
    return lower, upper


@numba.njit(nogil=True, cache=True)
def _full_from_upper(indptr, indices, data):
    """The CSC arrays of ``U + triu(U, 1)'`` from a canonical upper triangle ``U``,
    without its zero values (as SciPy's sum drops them): column ``j`` holds its own
    entries (rows ≤ j, in order) followed by row ``j`` of the strict upper part (rows
    > j, in column order, so sorted)."""
    n = indptr.shape[0] - 1
    counts = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        for k in range(indptr[j], indptr[j + 1]):
            if data[k] != 0.0:
                counts[j + 1] += 1
                if indices[k] < j:
                    counts[indices[k] + 1] += 1
    out_indptr = np.cumsum(counts)
    out_indices = np.empty(out_indptr[n], dtype=np.int64)
    out_data = np.empty(out_indptr[n])
    cursor = out_indptr[:n].copy()
    for j in range(n):  # the upper part first: every column's own entries lead
        for k in range(indptr[j], indptr[j + 1]):
            if data[k] != 0.0:
                out_indices[cursor[j]] = indices[k]
                out_data[cursor[j]] = data[k]
                cursor[j] += 1
    for j in range(n):  # then the mirrored entries, column by column (rows ascending)
        for k in range(indptr[j], indptr[j + 1]):
            i = indices[k]
            if i < j and data[k] != 0.0:
                out_indices[cursor[i]] = j
                out_data[cursor[i]] = data[k]
                cursor[i] += 1
    return out_indptr, out_indices, out_data


def storage_of(P: sp.csc_matrix) -> str | None:
    """P's storage convention from its pattern: ``"full"`` when it stores entries on both
    sides of the diagonal, ``"upper"`` when none below it, None when only below it."""
    lower, upper = _triangles_stored(P.indptr, P.indices)
    if lower:
        return "full" if upper else None
    return "upper"


@numba.njit(nogil=True, cache=True)
def _symmetry_defect(indptr, indices, data):
    """``max |P_ij − P_ji|`` over the stored entries of a canonical CSC matrix (−1 if
    some stored ``(i, j)`` has no stored ``(j, i)``), ``max |P_ij|`` and the position of
    each entry's mirror ``(j, i)`` (the last two valid only for a symmetric pattern).

    One pass: columns are visited in order, so when the pattern is symmetric the mirror of
    each entry of column ``j`` is the next entry not yet matched in its column
    (``cursor``); an entry without a mirror finds another row there.
    """
    n = indptr.shape[0] - 1
    cursor = np.empty(n, dtype=np.int64)
    for j in range(n):
        cursor[j] = indptr[j]
    mirror = np.empty(indices.shape[0], dtype=np.int64)
    defect = largest = 0.0
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            q = cursor[i]
            if q >= indptr[i + 1] or indices[q] != j:
                return -1.0, largest, mirror
            cursor[i] = q + 1
            mirror[p] = q
            defect = max(defect, abs(data[p] - data[q]))
            largest = max(largest, abs(data[p]))
    return defect, largest, mirror


class MatrixPattern:
    """The stored pattern of a canonical CSC matrix, for perturbations and gradients.

    Parameters
    ----------
    matrix : scipy.sparse.csc_matrix
        Canonical (sorted, no duplicates) CSC matrix; explicit zeros count as stored.
    name : str
        Argument name used in error messages (``"A"`` or ``"P"``).
    """

    def __init__(self, matrix: sp.csc_matrix, name: str) -> None:
        self.name = name
        self.shape = matrix.shape
        self.indptr = matrix.indptr.copy()
        self.indices = matrix.indices.copy()
        self._template = matrix  # shallow-copied by with_values, its arrays replaced

    @cached_property
    def rows(self) -> np.ndarray:
        """Row index of each stored entry (int64)."""
        return self.indices.astype(np.int64)

    @cached_property
    def cols(self) -> np.ndarray:
        """Column index of each stored entry (int64)."""
        return column_indices(self.indptr)

    @cached_property
    def _keys(self) -> np.ndarray:
        """Column-major keys of the stored entries: sorted, since the CSC is canonical."""
        return self.cols * self.shape[0] + self.rows

    @property
    def nnz(self) -> int:
        return self.indices.size

    def with_values(self, values: np.ndarray) -> sp.csc_matrix:
        """A CSC matrix on exactly this pattern with the given float64 data (taken, not
        copied), owning copies of the index arrays.

        A shallow copy of the matrix this pattern was read from, its arrays replaced:
        SciPy's constructor re-checks the format on every call, which costs more than
        the gradient itself at moderate sizes; the pattern was checked when it was read.
        """
        matrix = copy.copy(self._template)
        matrix.data = values
        matrix.indices = self.indices.copy()
        matrix.indptr = self.indptr.copy()
        return matrix

    def perturbation(self, d, argname: str) -> sp.csc_matrix:
        """Validate a perturbation ``d`` of this matrix and return it as canonical CSC.

        Raises
        ------
        ValueError
            If ``d`` has the wrong shape, holds NaN/Inf, or has nonzero entries outside
            the stored pattern.
        """
        return self._on_pattern(d, argname)[0]

    def _on_pattern(self, d, argname: str) -> tuple[sp.csc_matrix, np.ndarray]:
        """:meth:`perturbation`'s matrix and the pattern position of each of its entries."""
        d = as_csc(d, argname, self.shape)
        d.eliminate_zeros()
        pos = np.zeros(0, dtype=np.int64)
        if d.nnz:
            d_cols = column_indices(d.indptr)
            key_d = d_cols * self.shape[0] + d.indices.astype(np.int64)
            pos = np.minimum(np.searchsorted(self._keys, key_d), max(self.nnz - 1, 0))
            outside = (self._keys[pos] != key_d) if self.nnz else np.ones(key_d.size, bool)
            if outside.any():
                i, j = int(d.indices[outside][0]), int(d_cols[outside][0])
                raise ValueError(
                    f"{argname} has {int(outside.sum())} nonzero entries outside the sparsity "
                    f"pattern of {self.name} (first at ({i}, {j})); store explicit zeros in "
                    f"{self.name} where perturbations are wanted"
                )
        return d, pos


    def _same_pattern(self, d) -> bool:
        """Whether ``d`` is a float64 CSC matrix storing exactly this pattern."""
        return (sp.issparse(d) and d.format == "csc" and d.dtype == np.float64
                and d.shape == self.shape and d.data.shape == self.indices.shape
                and has_index_arrays(d)
                and equal_patterns(d.indptr, d.indices, self.indptr, self.indices))

    def perturbation_values(self, d, argname: str) -> np.ndarray:
        """The values of a perturbation ``d`` at this pattern's stored entries (zero where
        ``d`` stores nothing), validated as by :meth:`perturbation`.

        A float64 CSC ``d`` on exactly this pattern (as in a training loop or from
        cvxpylayers) is read in place: its ``data`` is returned, not copied.
        """
        if self._same_pattern(d):
            if not all_finite(d.data):
                raise ValueError(f"{argname} contains NaN or Inf")
            return d.data
        d, positions = self._on_pattern(d, argname)
        values = np.zeros(self.nnz)
        values[positions] = d.data
        return values

    def products(self, values: np.ndarray, x: np.ndarray,
                 y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(V' y, V x)`` for the matrix ``V`` with ``values`` on this pattern."""
        return _pattern_products(self.indptr, self.indices, values, x, y)


@numba.njit(nogil=True, cache=True)
def _pattern_products(indptr, indices, values, x, y):
    """``(V' y, V x)`` for the CSC matrix ``V`` given by its arrays, in one pass."""
    n = indptr.shape[0] - 1
    transposed = np.empty(n)
    product = np.zeros(y.shape[0])
    for j in range(n):
        acc = 0.0
        xj = x[j]
        for p in range(_U(indptr[j]), _U(indptr[j + 1])):
            i = _U(indices[p])
            value = values[p]
            acc += value * y[i]
            product[i] += value * xj
        transposed[j] = acc
    return transposed, product


def gradient_A(pattern: MatrixPattern, y, w1, w2, x) -> sp.csc_matrix:
    """``dA_ij = y_i w1_j − w2_i x_j`` on A's stored pattern."""
    values = _outer_difference_on_pattern(pattern.indptr, pattern.indices, y, w1, w2, x)
    return pattern.with_values(values)


class QuadraticTerm:
    """The quadratic objective term ``½ x'Px`` and its storage convention.

    Parameters
    ----------
    P : scipy.sparse.csc_matrix or None
        Canonical CSC copy of the caller's ``P``: the full symmetric matrix or its upper
        triangle.
    n : int
        Number of variables.
    sym_tol : float
        Relative tolerance of the symmetry check for full storage.

    Raises
    ------
    ValueError
        If ``P`` stores entries below the diagonal but is not symmetric.
    """

    def __init__(self, P: sp.csc_matrix | None, n: int, sym_tol: float = 1e-10) -> None:
        self.n = n
        if P is None:
            self.storage = None
            self.pattern = None
            self.full = None
            return
        self.pattern = MatrixPattern(P, "P")
        self.storage = storage_of(P)
        if self.storage is None:
            raise ValueError(
                "P stores entries only below the diagonal: pass the full symmetric matrix "
                "or its upper triangle"
            )
        if self.storage == "full":
            self.full = self._symmetrized(P, sym_tol)
        else:
            self.full = self._expand_upper(P)

    @staticmethod
    def _symmetrized(P: sp.csc_matrix, sym_tol: float) -> sp.csc_matrix:
        """``(P + P')/2`` after checking that ``P`` is symmetric to ``sym_tol`` (relative);
        ``P`` itself when it is exactly symmetric."""
        asym, largest, mirror = _symmetry_defect(P.indptr, P.indices, P.data)
        if asym == 0.0:
            full = P
        elif asym > 0.0:  # symmetric pattern: average entry by entry, pattern kept
            full = sp.csc_matrix(((P.data + P.data[mirror]) * 0.5, P.indices.copy(),
                                  P.indptr.copy()), shape=P.shape)
        else:
            PT = P.T.tocsc()
            full = ((P + PT) * 0.5).tocsc()
            difference = (P - PT).data
            asym = float(np.abs(difference).max()) if difference.size else 0.0
            largest = largest_magnitude(P.data)
        scale = max(largest, 1.0)
        if asym > sym_tol * scale:
            raise ValueError(
                f"P is not symmetric (max |P - P'| = {asym:.3g}); pass the full symmetric "
                "matrix or its upper triangle"
            )
        return full

    @staticmethod
    def _expand_upper(U: sp.csc_matrix) -> sp.csc_matrix:
        """``U + triu(U, 1)'`` of a canonical upper triangle, canonical, zeros dropped."""
        indptr, indices, data = _full_from_upper(U.indptr, U.indices, U.data)
        index = (np.int32 if U.indices.dtype == np.int32
                 and indptr[-1] <= np.iinfo(np.int32).max else np.int64)
        full = sp.csc_matrix((data, indices.astype(index), indptr.astype(index)),
                             shape=U.shape)
        full.has_canonical_format = True
        return full

    def expand(self, dP) -> sp.csc_matrix:
        """The symmetric perturbation of the objective that ``dP`` stands for.

        ``dP`` is read in P's storage convention (for upper storage, entries below the
        diagonal are ignored); its nonzeros must lie on P's stored pattern.
        """
        if self.pattern is None:
            raise ValueError("dP was given but the problem has no P")
        d = self.pattern.perturbation(dP, "dP")
        if self.storage == "upper":
            return self._expand_upper(sp.triu(d).tocsc())
        return ((d + d.T) * 0.5).tocsc()

    def gradient(self, w1: np.ndarray, x: np.ndarray) -> sp.csc_matrix:
        """Adjoint of :meth:`expand` applied to ``½(w1 x' + x w1')``, on P's stored pattern."""
        scale = 2.0 if self.storage == "upper" else 1.0
        values = _sym_outer_on_pattern(self.pattern.indptr, self.pattern.indices, w1, x, scale)
        return self.pattern.with_values(values)

    def lagrangian_gradient(self, x: np.ndarray) -> np.ndarray:
        """Values of ``∂(½ x'P(θ)x)/∂θ`` on P's stored pattern (used by LPGD)."""
        scale = 2.0 if self.storage == "upper" else 1.0
        return _sym_outer_on_pattern(self.pattern.indptr, self.pattern.indices, x, x, scale) * 0.5
