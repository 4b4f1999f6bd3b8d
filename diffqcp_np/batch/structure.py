"""Work shared by a batch of problems with one cone dict and one sparsity pattern.

cvxpylayers solves batches of problems that differ only in their values: every ``A``
has the same stored pattern, every ``P`` too, and every cone dict is the same. For
such a batch :class:`BatchStructure` does once what only depends on the structure:

* (once per structure: the most recent are kept across calls, ``caches.batch_structures``,
  with the forward solvers set up for them and, for ``warm_starts="previous"``, the last
  solutions)
* parsing and validating the cone dict, and checking the patterns of ``A`` and ``P``
  (per problem only the values are checked, for the whole batch at once in the common
  case, :meth:`BatchStructure.problems`; the copies share the pattern's read-only index
  arrays and are built without SciPy's per-matrix checks, :class:`CSCFactory`);
* the transposition map of ``A`` and the map from the stored values of ``P`` to the
  symmetric matrix the objective sees (with the symmetry check as one vector operation),
  and to its upper triangle as the forward solvers read it (:attr:`BatchStructure.patterns`,
  for :class:`~diffqcp_np.solvers.BatchSolver`);
* a template of the derivative system ``K = [[P, A'D], [−A, I−D]]`` on a fixed superset
  pattern (``D`` with full cone blocks), with index maps that fill ``K``'s values from a
  problem's ``P``, ``A`` and cone Jacobian without sparse-matrix algebra (the zeros of
  the superset, e.g. the columns of inactive constraints, are then dropped, so that the
  sparse LU sees the same pattern as on the general path).

:class:`StructuredDerivative` is a :class:`~diffqcp_np.derivative.SolutionDerivative`
built from those maps; its JVP and VJP are the inherited ones. Batches whose derivative
system is small use :mod:`diffqcp_np.batch.dense` instead (dense, batched).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from .._fast_checks import all_finite
from .._input_arrays import (
    NOT_CANONICAL,
    are_index_arrays,
    compressed_arrays,
    has_index_arrays,
    real_values,
)
from .._validation import ProblemData, as_vector
from ..caches import batch_structures
from ..cones.projection import ConeJacobian
from ..cones.spec import ConeSpec, as_cone_spec, vec_psd_dim
from ..derivative import MatrixPattern, QuadraticTerm, SolutionDerivative
from ..derivative.convexity import first_not_positive_semidefinite
from ..derivative.patterns import storage_of
from ..solvers import SharedPatterns
from ..solvers.base import CSCFactory
from ._structure_numba import gather_symmetric


#: Largest cone block whose Jacobian is read by probing (one matvec per column of the
#: largest block); beyond it the Jacobian is read from ``ConeJacobian.to_sparse``.
PROBE_LIMIT = 16


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, copy=True)
    arr.flags.writeable = False
    return arr


def _csc(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray,
         shape: tuple[int, int]) -> sp.csc_matrix:
    """A CSC matrix on a shared canonical pattern (the index arrays are read-only)."""
    out = sp.csc_matrix((data, indices, indptr), shape=shape, copy=False)
    out.has_canonical_format = True
    return out


class ValidatedProblems(Sequence):
    """:meth:`BatchStructure.problems`'s sequence of ``(ProblemData, QuadraticTerm)``.

    The validated values are held stacked; entry ``k`` is built when it is read (the
    batched paths read the stacked values and never build most entries).

    Attributes
    ----------
    stacked : tuple
        ``(A, b, c, P)``: the values the problems' arrays are rows of (``P`` None
        without it).
    convex_before : int
        How many leading problems have a ``P`` known to be positive semidefinite
        (checked for the whole batch at once); the rest are for the caller to check.
    """

    def __init__(self, structure: BatchStructure, stacked: tuple,
                 union: np.ndarray | None = None, zeros: np.ndarray | None = None,
                 convex_before: int = 0) -> None:
        self._structure, self.stacked = structure, stacked
        self._union, self._zeros = union, zeros
        self.convex_before = convex_before

    def __len__(self) -> int:
        return self.stacked[1].shape[0]

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = range(len(self))[k]  # an int in range (IndexError otherwise)
        return self._structure.member(self.stacked, k, self._union, self._zeros)


def _stacked(arrays: Sequence, size: int) -> np.ndarray | None:
    """Finite float64 vectors of length ``size`` as the rows of a new array, or None
    (anything else: the caller checks problem by problem)."""
    if not all(type(a) is np.ndarray and a.dtype == np.float64 and a.shape == (size,)
               for a in arrays):
        return None
    out = (np.concatenate(arrays) if len(arrays) else np.zeros(0)).reshape(len(arrays), size)
    return out if np.isfinite(out).all() else None


def _all_same_pattern(mats: Sequence, ref) -> bool:
    """Whether every matrix is CSC with exactly the stored pattern of ``ref`` (batched),
    in index arrays of an integer type the kernels take."""
    return all_on_pattern(mats, ref.indices, ref.indptr, ref.shape)


#: SciPy's CSC classes themselves (a subclass takes the full per-matrix checks).
_CSC_TYPES = (sp.csc_matrix, sp.csc_array)


def all_on_pattern(mats: Sequence, indices: np.ndarray, indptr: np.ndarray,
                   shape: tuple[int, int]) -> bool:
    """Whether every matrix is CSC of ``shape`` with exactly the stored pattern
    ``(indices, indptr)``, in index arrays of an integer type the kernels take: one
    comparison for the whole batch (matrices sharing the very index arrays are not
    compared)."""
    nnz, cols = indices.size, indptr.size
    others_indices, others_indptr = [], []
    shared_ok = are_index_arrays(indptr, indices)
    for mat in mats:
        if (shared_ok and type(mat) in _CSC_TYPES and mat.indices is indices
                and mat.indptr is indptr and mat.shape == shape):
            continue  # the very (checked) index arrays: nothing to compare
        if not (sp.issparse(mat) and mat.format == "csc" and mat.shape == shape
                and has_index_arrays(mat)):
            return False
        if mat.indices is indices and mat.indptr is indptr:
            continue
        if mat.indices.size != nnz or mat.indptr.size != cols:
            return False
        others_indices.append(mat.indices)
        others_indptr.append(mat.indptr)
    if not others_indices:
        return True
    count = len(others_indices)
    return bool((np.concatenate(others_indptr).reshape(count, cols) == indptr).all()
                and (np.concatenate(others_indices).reshape(count, nnz) == indices).all())


def _canonical_csc(matrix) -> bool:
    """Whether ``matrix`` is a CSC matrix with a valid, canonical structure (sorted,
    duplicate-free, int32 or int64 index arrays exactly as long as its entries; its
    values are checked later, per problem)."""
    if not (sp.issparse(matrix) and matrix.format == "csc" and has_index_arrays(matrix)):
        return False
    try:
        _, indices, _, flags = compressed_arrays(matrix, "A")
    except (ValueError, TypeError):
        return False  # reported, with the problem's index, by the general path
    return indices.size == matrix.indices.size and not flags & NOT_CANONICAL


def _common_cones(cone_dicts: Sequence) -> ConeSpec | None:
    """The cones of every problem when they are all the same, else None.

    Each cone dict is parsed as a single call parses it (so a batch accepts exactly the
    dicts a single call accepts, NumPy values included); one that does not parse gives
    None, and the general path reports it with its problem's index.
    """
    first = None
    seen: set[int] = set()  # the dicts already found equal to the first
    for cones in cone_dicts:
        if id(cones) in seen:
            continue
        try:
            spec = as_cone_spec(cones)
        except (ValueError, TypeError):
            return None
        if first is None:
            first = spec
        elif spec != first:
            return None
        seen.add(id(cones))
    return first


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, start + count)`` for each pair."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(total)


def _block_sizes(spec: ConeSpec) -> np.ndarray:
    """Sizes of the diagonal blocks of a cone Jacobian, in row order."""
    sizes = ([1] * (spec.zero + spec.nonneg) + list(spec.soc)
             + [vec_psd_dim(k) for k in spec.psd]
             + [3] * (spec.exp + spec.exp_dual + len(spec.power)))
    return np.asarray(sizes, dtype=np.int64)


class _JacobianPattern:
    """Block-diagonal superset pattern of a cone Jacobian, and how to read its values.

    Each cone contributes a full block (a 1×1 block per zero-cone or orthant row).
    """

    def __init__(self, spec: ConeSpec) -> None:
        sizes = _block_sizes(spec)
        starts = np.cumsum(sizes) - sizes
        m = int(sizes.sum())
        col_size = np.repeat(sizes, sizes)
        col_start = np.repeat(starts, sizes)
        self.m = m
        self.indptr = np.concatenate(([0], np.cumsum(col_size)))
        self.rows = np.repeat(col_start, col_size) + _ranges(np.zeros(m, np.int64), col_size)
        self.cols = np.repeat(np.arange(m), col_size)
        self.diagonal = (self.rows == self.cols).astype(float)
        self.n_probes = int(sizes.max()) if sizes.size else 0
        # Probe j has a one at the j-th coordinate of every block larger than j; applying
        # the Jacobian to it gives column j of every block.
        self._probe_of_entry = self.cols - np.repeat(col_start, col_size)
        self._probes = np.zeros((self.n_probes, m))
        for j in range(self.n_probes):
            self._probes[j, starts[sizes > j] + j] = 1.0
        self._keys = self.cols * m + self.rows

    @property
    def nnz(self) -> int:
        return self.rows.size

    def values(self, jac: ConeJacobian) -> np.ndarray:
        """The Jacobian's entries on this pattern (zeros where a block has none)."""
        if self.nnz == 0:
            return np.zeros(0)
        if self.n_probes <= PROBE_LIMIT:
            columns = np.stack([jac.matvec(p) for p in self._probes])
            return columns[self._probe_of_entry, self.rows]
        D = jac.to_sparse()
        rows = D.indices.astype(np.int64)
        cols = np.repeat(np.arange(self.m), np.diff(D.indptr))
        out = np.zeros(self.nnz)
        out[np.searchsorted(self._keys, cols * self.m + rows)] = D.data
        return out


class _ProductMap:
    """Values of ``A' D`` on a fixed pattern from the values of ``A'`` and ``D``.

    Parameters
    ----------
    AT_indptr, AT_indices : ndarray
        CSC pattern of ``A'`` (n × m).
    jac : _JacobianPattern
        Superset pattern of ``D`` (m × m).
    n : int
    """

    def __init__(self, AT_indptr, AT_indices, jac: _JacobianPattern, n: int) -> None:
        counts = np.diff(AT_indptr)[jac.rows]
        self._pair_d = np.repeat(np.arange(jac.nnz), counts)
        self._pair_a = _ranges(AT_indptr[jac.rows], counts)
        keys = jac.cols[self._pair_d] * n + AT_indices[self._pair_a]
        unique, self._out = np.unique(keys, return_inverse=True)
        self.indices = unique % n
        self.indptr = np.concatenate(([0], np.cumsum(np.bincount(unique // n, minlength=jac.m))))
        self.nnz = unique.size

    def values(self, AT_data: np.ndarray, D_data: np.ndarray) -> np.ndarray:
        weights = AT_data[self._pair_a] * D_data[self._pair_d]
        return np.bincount(self._out, weights=weights, minlength=self.nnz)


class _SharedQuadratic(QuadraticTerm):
    """A :class:`QuadraticTerm` whose pattern and storage come from a batch structure.

    Same attributes as ``QuadraticTerm`` (``n``, ``storage``, ``pattern``, ``full``);
    ``full`` has been computed by the structure's index maps.
    """

    def __init__(self, n: int, storage: str | None, pattern: MatrixPattern | None,
                 full: sp.csc_matrix | None) -> None:
        self.n, self.storage, self.pattern, self.full = n, storage, pattern, full


class _QuadraticMap:
    """From the stored values of ``P`` to the symmetric matrix of the objective.

    On the union pattern of ``P`` and ``P'``, ``full = w (p[a] + p[b])`` where ``p`` is
    ``P.data`` with a trailing zero (index ``nnz`` means "not stored"): ``w = ½`` and
    ``b`` the transposed entry for full storage, ``w = 1`` and one of ``a``, ``b``
    pointing at the zero for upper-triangle storage.
    """

    def __init__(self, P: sp.csc_matrix, storage: str, sym_tol: float = 1e-10) -> None:
        n = P.shape[0]
        self.pattern = MatrixPattern(P, "P")
        self.storage = storage
        self.sym_tol = sym_tol
        rows, cols = self.pattern.rows, self.pattern.cols
        union = sp.csc_matrix((np.ones(2 * rows.size), (np.r_[rows, cols], np.r_[cols, rows])),
                              shape=(n, n))
        union.sum_duplicates()
        self.indptr = _read_only(union.indptr)
        self.indices = _read_only(union.indices)
        u_rows = union.indices.astype(np.int64)
        u_cols = np.repeat(np.arange(n), np.diff(union.indptr))
        stored = cols * n + rows  # sorted: canonical CSC order
        self._a = self._lookup(stored, u_cols * n + u_rows)
        self._b = self._lookup(stored, u_rows * n + u_cols)
        if storage == "upper":
            lower = u_rows > u_cols
            self._a[lower] = rows.size
            self._b[~lower] = rows.size
        self._weight = 0.5 if storage == "full" else 1.0
        # As QuadraticTerm: a full P on a symmetric pattern is symmetrised entry by entry
        # (its zeros stay stored); otherwise through sparse sums, which drop zeros.
        self.drops_zeros = not (storage == "full" and union.nnz == rows.size)
        upper = u_rows <= u_cols  # the union's upper triangle, as the solvers read it
        self.upper_indices = _read_only(union.indices[upper])
        self.upper_indptr = _read_only(np.concatenate(
            ([0], np.cumsum(np.bincount(u_cols[upper], minlength=n)))).astype(union.indptr.dtype))
        self._upper_a, self._upper_b = self._a[upper], self._b[upper]

    @staticmethod
    def _lookup(stored: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Index of each key among the (sorted) stored keys, or ``len(stored)`` if absent."""
        if stored.size == 0:
            return np.zeros(keys.size, dtype=np.int64)
        pos = np.minimum(np.searchsorted(stored, keys), stored.size - 1)
        return np.where(stored[pos] == keys, pos, stored.size)

    def union_values(self, data: np.ndarray) -> np.ndarray:
        """Entries of the symmetric ``P`` on the union pattern.

        Raises
        ------
        ValueError
            If ``P`` is stored in full but is not symmetric.
        """
        ext = np.append(data, 0.0)
        a, b = ext[self._a], ext[self._b]
        if self.storage == "full" and a.size:
            asym = np.max(np.abs(a - b))
            if asym > self.sym_tol * max(np.max(np.abs(data)), 1.0):
                raise ValueError(
                    f"P is not symmetric (max |P - P'| = {asym:.3g}); pass the full symmetric "
                    "matrix or its upper triangle"
                )
        return self._weight * (a + b)

    def union_values_batch(self, data: np.ndarray) -> np.ndarray | None:
        """:meth:`union_values` for the rows of ``data``; None if one is not symmetric."""
        out, symmetric = gather_symmetric(data, self._a, self._b, self._weight,
                                          self.storage == "full", self.sym_tol)
        return out if symmetric.all() else None

    def upper_values(self, data: np.ndarray) -> np.ndarray:
        """Entries of the symmetric ``P``'s upper triangle on ``upper_indices`` /
        ``upper_indptr``, from the stored values (rows of ``data`` for a 2-D array).

        The same numbers as :meth:`union_values` there (no symmetry check).
        """
        rows = np.ascontiguousarray(data, dtype=np.float64).reshape(-1, data.shape[-1])
        out, _ = gather_symmetric(rows, self._upper_a, self._upper_b, self._weight, False,
                                  0.0)
        return out.reshape(data.shape[:-1] + (self._upper_a.size,))

    def quadratic(self, union_values: np.ndarray, n: int) -> _SharedQuadratic:
        full = sp.csc_matrix((union_values, self.indices.copy(), self.indptr.copy()),
                             shape=(n, n))
        if self.drops_zeros:
            full.eliminate_zeros()
        return _SharedQuadratic(n, self.storage, self.pattern, full)


@dataclass(frozen=True)
class _SystemTemplate:
    """K's pattern, and where each of its stored entries comes from."""

    jacobian: _JacobianPattern
    product: _ProductMap
    order: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray


class BatchStructure:
    """The structure shared by a batch: cones, the patterns of ``A`` and ``P``, maps.

    Build it with :meth:`detect`. Index arrays shared between problems are read-only.

    Parameters
    ----------
    A : scipy.sparse.csc_matrix
        Canonical ``A`` of the first problem (only its pattern is used).
    P : scipy.sparse.csc_matrix or None
        Canonical ``P`` of the first problem.
    storage : {"full", "upper"} or None
        Storage convention of ``P``.
    cones : ConeSpec
    """

    def __init__(self, A: sp.csc_matrix, P: sp.csc_matrix | None, storage: str | None,
                 cones: ConeSpec) -> None:
        self.cones = cones
        self.shape = A.shape
        self._lock = threading.Lock()
        self._derived: dict = {}
        self._previous: list | None = None
        m, n = A.shape
        self.A_indptr, self.A_indices = _read_only(A.indptr), _read_only(A.indices)
        self.A_pattern = MatrixPattern(A, "A")
        ids = sp.csc_matrix((np.arange(1.0, A.nnz + 1), A.indices, A.indptr), shape=A.shape)
        AT = ids.T.tocsc()
        self._AT_perm = AT.data.astype(np.int64) - 1
        self._AT_indptr, self._AT_indices = _read_only(AT.indptr), _read_only(AT.indices)
        self.P_shape = None if P is None else P.shape
        self._P_indptr = None if P is None else _read_only(P.indptr)
        self._P_indices = None if P is None else _read_only(P.indices)
        self._quadratic = None if P is None else _QuadraticMap(P, storage)
        self._A_factory = CSCFactory(self.A_indices, self.A_indptr, A.shape)
        if P is not None:
            q = self._quadratic
            self._P_factory = CSCFactory(self._P_indices, self._P_indptr, P.shape)
            self._full_factory = CSCFactory(_read_only(q.indices), _read_only(q.indptr),
                                            P.shape)

    # -- detection -----------------------------------------------------------------------
    @classmethod
    def detect(cls, As: Sequence, Ps: Sequence, cone_dicts: Sequence) -> BatchStructure | None:
        """The shared structure of a batch, or None when its problems differ in structure.

        A batch qualifies when every ``A`` is a CSC matrix with the same canonical
        (sorted, duplicate-free) stored pattern, every ``P`` likewise (or every ``P`` is
        None), and every cone dict equals the first. Only patterns are inspected here.
        """
        if not As:
            return None
        A0, P0 = As[0], Ps[0]
        if not (_canonical_csc(A0) and _all_same_pattern(As[1:], A0)):
            return None
        if P0 is None:
            if any(P is not None for P in Ps):
                return None
            storage = None
        else:
            if not (_canonical_csc(P0) and P0.shape == (A0.shape[1],) * 2
                    and _all_same_pattern(Ps[1:], P0)):
                return None
            storage = storage_of(P0)
            if storage is None:
                return None
        cones = _common_cones(cone_dicts)
        if cones is None or cones.dim != A0.shape[0] or 0 in A0.shape:
            return None  # reported, with the problem's index, by the general path
        key = (A0.shape, A0.indptr.tobytes(), A0.indices.tobytes(),
               None if P0 is None else (P0.indptr.tobytes(), P0.indices.tobytes()), storage,
               cones)
        # Kept across calls (caches.batch_structures), by patterns and cones: a training
        # loop's batches of one structure share the structural work and the solver set
        # up for it (:meth:`cached`).
        return batch_structures.get_or_make(key, lambda: cls(A0, P0, storage, cones))

    def __getstate__(self) -> dict:
        """Pickled (to worker processes) without what is kept across calls."""
        state = dict(self.__dict__)
        state.update(_lock=None, _derived={}, _previous=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- what is kept per structure across calls ------------------------------------------
    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, built once per structure and ``key`` (e.g. a forward solver and its
        settings) and kept with the structure."""
        with self._lock:
            if key not in self._derived:
                self._derived[key] = make()
            return self._derived[key]

    def remember(self, solutions: list) -> None:
        """Keep the solutions of the last batch of this structure (``(x, y, s)`` or None
        per problem), for ``warm_starts="previous"``."""
        self._previous = solutions

    def previous(self, count: int) -> list | None:
        """The solutions :meth:`remember` kept, if they were as many as ``count``."""
        previous = self._previous
        return previous if previous is not None and len(previous) == count else None

    # -- per-problem data ----------------------------------------------------------------
    @staticmethod
    def _values(mat, name: str) -> np.ndarray:
        """A float64 copy of the values of a matrix on a shared pattern, checked."""
        if mat.data.shape != mat.indices.shape:
            raise ValueError(f"{name} is not a valid CSC matrix: {mat.indices.size} row "
                             f"indices but {mat.data.size} values")
        data = real_values(mat.data, name)
        data = data.copy() if data is mat.data else data
        if not all_finite(data):
            raise ValueError(f"{name} contains NaN or Inf")
        return data

    def problem(self, A, b, c, P) -> tuple[ProblemData, QuadraticTerm]:
        """Validated copies of one problem's data (its pattern is the shared one).

        Raises
        ------
        ValueError
            Naming the argument: NaN or Inf, wrong vector lengths, a non-symmetric ``P``.
        """
        m, n = self.shape
        A_csc = _csc(self._values(A, "A"), self.A_indices, self.A_indptr, self.shape)
        b = as_vector(b, "b", m)
        c = as_vector(c, "c", n)
        if self._quadratic is None:
            return ProblemData(A=A_csc, b=b, c=c, cones=self.cones, P=None), QuadraticTerm(None, n)
        P_data = self._values(P, "P")
        quadratic = self._quadratic.quadratic(self._quadratic.union_values(P_data), n)
        P_csc = _csc(P_data, self._P_indices, self._P_indptr, self.P_shape)
        return ProblemData(A=A_csc, b=b, c=c, cones=self.cones, P=P_csc), quadratic

    def problems(self, As: Sequence, bs: Sequence, cs: Sequence,
                 Ps: Sequence) -> list[tuple[ProblemData, QuadraticTerm]] | None:
        """Validated copies of every problem's data, checked for the whole batch at once.

        The same copies as :meth:`problem` gives, for the common case: float64 values
        and vectors, all finite, every full-storage ``P`` symmetric. Returns None
        otherwise (the caller then checks problem by problem, naming the first failure).
        """
        m, n = self.shape
        count = len(As)
        A_vals = _stacked([A.data for A in As], self.A_pattern.nnz)
        b = _stacked(bs, m)
        c = _stacked(cs, n)
        if A_vals is None or b is None or c is None:
            return None
        q = self._quadratic
        if q is None:
            return ValidatedProblems(self, (A_vals, b, c, None), convex_before=count)
        P_vals = _stacked([P.data for P in Ps], q.pattern.nnz)
        if P_vals is None:
            return None
        union = q.union_values_batch(P_vals)
        if union is None:
            return None
        # rows whose zeros are dropped (as problem() does) get their own pattern
        zeros = ~np.all(union != 0.0, axis=1) & q.drops_zeros
        first = first_not_positive_semidefinite(q.indptr, q.indices, union)
        convex_before = 0 if first is None else count if first < 0 else first
        return ValidatedProblems(self, (A_vals, b, c, P_vals), union, zeros, convex_before)

    def member(self, stacked: tuple, k: int, union: np.ndarray | None,
               zeros: np.ndarray | None) -> tuple[ProblemData, QuadraticTerm]:
        """Problem ``k`` of :meth:`problems`'s stacked values, as :meth:`problem` gives
        it (its arrays are views of the stacked rows).

        Parameters
        ----------
        stacked : tuple
            ``(A, b, c, P)`` values, one row per problem.
        k : int
        union : ndarray or None
            Rows of the symmetric ``P``'s values on the union pattern.
        zeros : ndarray of bool or None
            Per row of ``union``: whether it has zeros the quadratic term drops.
        """
        A_vals, b, c, P_vals = stacked
        n = self.shape[1]
        A = self._A_factory.shared(A_vals[k:k + 1])[0]
        q = self._quadratic
        if q is None:
            return ProblemData(A=A, b=b[k], c=c[k], cones=self.cones, P=None), \
                QuadraticTerm(None, n)
        full = (q.quadratic(union[k], n).full if zeros[k]
                else self._full_factory.shared(union[k:k + 1])[0])
        return (ProblemData(A=A, b=b[k], c=c[k], cones=self.cones,
                            P=self._P_factory.shared(P_vals[k:k + 1])[0]),
                _SharedQuadratic(n, q.storage, q.pattern, full))

    @cached_property
    def patterns(self) -> SharedPatterns:
        """The patterns the forward solver reads: ``A``'s and the upper triangle of ``P``'s."""
        q = self._quadratic
        if q is None:
            return SharedPatterns(self.shape, self.A_indices, self.A_indptr)
        return SharedPatterns(self.shape, self.A_indices, self.A_indptr, q.upper_indices,
                              q.upper_indptr, q.drops_zeros)

    def upper_P(self, P_data: np.ndarray | None) -> np.ndarray | None:
        """The symmetric ``P``'s upper triangle on :attr:`patterns`, from ``P``'s stored
        values (the rows of a 2-D array: one problem each); None without ``P``."""
        if self._quadratic is None or P_data is None:
            return None
        return self._quadratic.upper_values(P_data)

    def transpose(self, A: sp.csc_matrix) -> sp.csc_matrix:
        """``A'`` as CSC (``A`` on the shared pattern)."""
        m, n = self.shape
        return _csc(A.data[self._AT_perm], self._AT_indices, self._AT_indptr, (n, m))

    # -- the derivative system -----------------------------------------------------------
    @cached_property
    def _system(self) -> _SystemTemplate:
        """The template of K (built on first use: solve-only batches never need it)."""
        m, n = self.shape
        jacobian = _JacobianPattern(self.cones)
        product = _ProductMap(self._AT_indptr, self._AT_indices, jacobian, n)
        q = self._quadratic
        # K's blocks, each with its entries numbered (from 1, so that none is zero) in the
        # order of the concatenated sources of assemble(); the numbers read back from the
        # assembled K say where each of its entries comes from.
        patterns = [
            None if q is None else (q.indices, q.indptr, (n, n)),
            (product.indices, product.indptr, (n, m)),
            (self.A_indices, self.A_indptr, (m, n)),
            (jacobian.rows, jacobian.indptr, (m, m)),
        ]
        numbered, first = [], 1
        for pattern in patterns:
            if pattern is None:
                numbered.append(None)
                continue
            indices, indptr, shape = pattern
            ids = np.arange(first, first + indices.size, dtype=float)
            numbered.append(sp.csc_matrix((ids, indices, indptr), shape=shape))
            first += indices.size
        K = sp.bmat([numbered[:2], numbered[2:]], format="csc")
        K.sum_duplicates()
        return _SystemTemplate(jacobian, product, K.data.astype(np.int64) - 1,
                               _read_only(K.indices), _read_only(K.indptr))

    def assemble(self, data: ProblemData, AT: sp.csc_matrix,
                 jacobian: ConeJacobian) -> sp.csc_matrix:
        """``K = [[P, A'D], [−A, I−D]]``, filled through the template.

        The sources, concatenated in this order: P's union values, ``A'D``'s, ``−A``'s
        and ``I − D``'s values.
        """
        system = self._system
        D = system.jacobian.values(jacobian)
        parts = [system.product.values(AT.data, D), -data.A.data, system.jacobian.diagonal - D]
        if self._quadratic is not None:
            parts.insert(0, self._quadratic.union_values(data.P.data))
        sources = np.concatenate(parts)
        N = sum(self.shape)
        K = sp.csc_matrix((sources[system.order], system.indices.copy(), system.indptr.copy()),
                          shape=(N, N))
        # Drop the zeros of the superset pattern (e.g. the columns of inactive
        # constraints in A'D): stored zeros would be fill for the sparse LU.
        K.eliminate_zeros()
        return K

    def derivative(self, data: ProblemData, quadratic: QuadraticTerm, x, y, s,
                   mode: str, **solver_options: Any) -> StructuredDerivative:
        """The exact derivative of one problem at its solution (see StructuredDerivative)."""
        return StructuredDerivative(self, data, quadratic, x, y, s, mode, **solver_options)


class StructuredDerivative(SolutionDerivative):
    """:class:`SolutionDerivative` set up from a :class:`BatchStructure`'s maps.

    The pattern of ``A``, its transpose and the quadratic term come from the structure,
    and ``K`` is filled through the structure's index maps instead of sparse-matrix
    algebra; everything else (``jvp``, ``vjp``, the linear solvers) is inherited.

    Parameters
    ----------
    structure : BatchStructure
    data : ProblemData
        From ``structure.problem``.
    quadratic : QuadraticTerm
        From ``structure.problem``.
    x, y, s : ndarray
    mode : {"direct", "dense", "lsqr", "lsmr"}
    **solver_options
        As for ``SolutionDerivative``.
    """

    def __init__(self, structure: BatchStructure, data: ProblemData,
                 quadratic: QuadraticTerm, x, y, s, mode: str = "direct",
                 **solver_options: Any) -> None:
        self._structure = structure
        super().__init__(data, x, y, s, mode, quadratic=quadratic,
                         A_pattern=structure.A_pattern, AT=structure.transpose(data.A),
                         **solver_options)

    def _assemble(self) -> sp.csc_matrix:
        return self._structure.assemble(self.data, self.AT, self.cone_jacobian)
