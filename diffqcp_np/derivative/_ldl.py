"""Sparse LDLᵀ of quasi-definite matrices (QDLDL's algorithm) with reusable symbolic
analysis.

The symbolic analysis (our own AMD ordering, :mod:`._amd_numba`; elimination tree, column
counts and the map from the matrix's entries to the permuted upper triangle) is an
object of its own, :class:`LDLSymbolic`, computed once per pattern and shared by every
matrix with that pattern; the numeric factorisation and the solves are Numba kernels
that release the GIL. A trailing block of L that fills almost completely (the Schur
complement of large cone blocks, a dense P, many equality rows) is stored in full,
factored by dense blocked LDLᵀ with BLAS-3 updates (:mod:`._dense_block_numba`) and solved by
contiguous, vectorised loops. With unsigned indices in their inner loops the kernels run
1.2–2.3 times (solves) and 2.5–8 times (factorisations with a cached analysis) faster
than QDLDL through its Python binding, which also orders again on every factorisation,
on the derivative systems of the benchmark suite (``benchmarks/bench_ldl.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .._sparse import UNSIGNED_INDEX as _U
from .._sparse import CSCLike, equal_patterns, unit_transpose_solve
from ..caches import BoundedCache, array_bytes, ldl_analyses
from ._amd_numba import amd_order
from ._dense_block_numba import dense_ldl
from ._reduced_numba import symmetric_residual


@numba.njit(nogil=True, cache=True)
def _elimination_tree(n, Ap, Ai, budget):
    """Elimination tree and column counts of L for an upper-triangular CSC pattern
    (QDLDL_etree), and whether L has at most ``budget`` entries (a negative budget: no
    limit). The walk stops once the count passes the budget, which bounds its cost."""
    work = np.full(n, -1, dtype=np.int64)
    parent = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    total = 0
    for j in range(n):
        work[j] = j
        for p in range(_U(Ap[j]), _U(Ap[j + 1])):
            i = _U(Ai[p])
            while work[i] != j:
                if parent[i] == -1:
                    parent[i] = j
                counts[i] += 1
                total += 1
                work[i] = j
                i = _U(parent[i])
        if 0 <= budget < total:
            return parent, counts, False
    return parent, counts, True


@numba.njit(nogil=True, cache=True)
def _permuted_upper(n, Ap, Ai, inverse):
    """Pattern of the upper triangle of ``C = A[perm][:, perm]`` from that of A's upper
    triangle (``inverse[perm[i]] = i``), and for each entry of A its position in C."""
    counts = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        for p in range(_U(Ap[j]), _U(Ap[j + 1])):
            i = _U(Ai[p])
            counts[_U(max(inverse[i], inverse[j]) + 1)] += 1
    for j in range(n):
        counts[j + 1] += counts[j]
    Cp = counts.copy()
    Ci = np.empty(Cp[n], dtype=np.int64)
    position = np.empty(Ap[n], dtype=np.int64)
    fill = counts[:n].copy()
    for j in range(n):
        for p in range(_U(Ap[j]), _U(Ap[j + 1])):
            i = _U(Ai[p])
            a, b = inverse[i], inverse[j]
            column, row = _U(max(a, b)), min(a, b)
            q = _U(fill[column])
            fill[column] = q + 1
            Ci[q] = row
            position[p] = q
    return Cp, Ci, position


@numba.njit(nogil=True, cache=True)
def _factor(n, Cp, Ci, Cx, parent, counts, dense_from):
    """Numeric LDLᵀ of the upper-triangular CSC ``C`` (QDLDL_factor, up-looking), up to
    the dense trailing block.

    Columns before ``dense_from`` are factored in full. For the rows from ``dense_from``
    on only their entries in those columns are computed; what remains of the trailing
    block is its Schur complement ``S``, returned dense (lower triangle) for
    :func:`~._dense_block_numba.dense_ldl` (``S`` is empty when ``dense_from == n``).
    Returns ``Lp, Li, Lx, Dinv, S`` and whether every pivot so far was nonzero.
    """
    Lp = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):  # the dense trailing block stored in full
        Lp[i + 1] = Lp[i] + (counts[i] if i < dense_from else n - 1 - i)
    Li = np.empty(Lp[n], dtype=np.int32)  # row indices: half the memory traffic of int64
    Lx = np.empty(Lp[n])
    D = np.zeros(n)
    Dinv = np.zeros(n)
    tail = n - dense_from
    S = np.zeros((tail, tail))
    marked = np.zeros(n, dtype=np.bool_)
    y = np.zeros(n)
    pattern = np.empty(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    next_free = Lp[:n].copy()
    for k in range(n):
        # Nonzero pattern of row k of L in the columns before min(k, dense_from): the
        # tree paths from the entries of C[:, k].
        stop = min(k, dense_from)
        count = 0
        for p in range(Cp[k], Cp[k + 1]):
            i = Ci[p]
            if i == k:
                D[k] = Cx[p]
                continue
            y[i] = Cx[p]
            depth = 0
            while i != -1 and i < stop and not marked[i]:
                marked[i] = True
                stack[depth] = i
                depth += 1
                i = parent[i]
            while depth > 0:
                depth -= 1
                pattern[count] = stack[depth]
                count += 1
        # Sparse triangular solve in topological order.
        for t in range(count - 1, -1, -1):
            c = pattern[t]
            yc = y[c]
            q = next_free[c]
            for p in range(_U(Lp[c]), _U(q)):
                y[_U(Li[p])] -= Lx[p] * yc
            Li[q] = k
            Lx[q] = yc * Dinv[c]
            D[k] -= yc * Lx[q]
            next_free[c] += 1
            y[c] = 0.0
            marked[c] = False
        if k >= dense_from:  # row k of the trailing block's Schur complement
            row = k - dense_from
            for c in range(dense_from, k):
                S[row, c - dense_from] = y[c]
                y[c] = 0.0
            S[row, row] = D[k]
            continue
        if D[k] == 0.0:
            return Lp, Li, Lx, Dinv, S, False
        Dinv[k] = 1.0 / D[k]
    return Lp, Li, Lx, Dinv, S, True


@numba.njit(nogil=True, cache=True)
def _store_dense_block(Lp, Li, Lx, Dinv, L, d, dense_from):
    """Write the dense LDLᵀ of the trailing block (unit lower ``L``, pivots ``d``) into
    the columns from ``dense_from`` on (rows in increasing order)."""
    n = Lp.shape[0] - 1
    for c in range(dense_from, n):
        j = c - dense_from
        q = Lp[c]
        for i in range(c + 1, n):
            Li[q] = i
            Lx[q] = L[i - dense_from, j]
            q += 1
        Dinv[c] = 1.0 / d[j]


@numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _dense_dot(values, start, x, first, length):
    """``values[start:start+length] · x[first:first+length]``, vectorised (the sum is
    reassociated)."""
    a = values[start:start + length]
    b = x[first:first + length]
    total = 0.0
    for q in range(length):
        total += a[_U(q)] * b[_U(q)]
    return total


@numba.njit(nogil=True, cache=True)
def _solve(Lp, Li, Lx, Dinv, perm, dense_from, b):
    """``x`` with ``A x = b`` from the factors of ``A[perm][:, perm]``.

    Indices are read as unsigned (``_U``): Numba then drops its negative-index
    wraparound test from every access.
    Columns from ``dense_from`` on are dense below the diagonal (rows stored in order,
    see :attr:`LDLSymbolic.dense_from`): their loops run on contiguous slices without
    reading row indices, which vectorises them (twice as fast on a dense Schur block).
    """
    n = b.shape[0]
    x = np.empty(n)
    for i in range(n):
        x[i] = b[_U(perm[i])]
    for i in range(dense_from):
        xi = x[i]
        for p in range(_U(Lp[i]), _U(Lp[i + 1])):
            x[_U(Li[p])] -= Lx[p] * xi
    for i in range(dense_from, n):
        xi = x[i]
        below = x[i + 1:]
        column = Lx[_U(Lp[i]):_U(Lp[i + 1])]
        for q in range(below.shape[0]):
            below[_U(q)] -= column[_U(q)] * xi
    for i in range(n):
        x[i] *= Dinv[i]
    for i in range(n - 1, dense_from - 1, -1):
        x[i] -= _dense_dot(Lx, _U(Lp[i]), x, i + 1, n - 1 - i)
    unit_transpose_solve(Lp, Li, Lx, x, dense_from)
    out = np.empty(n)
    for i in range(n):
        out[_U(perm[i])] = x[i]
    return out


_TINY = np.finfo(np.float64).tiny


@numba.njit(nogil=True, cache=True, inline="always")
def _norm(v):
    """Euclidean norm by a plain loop (no BLAS call, whose threads can wake up)."""
    total = 0.0
    for i in range(v.shape[0]):
        total += v[i] * v[i]
    return np.sqrt(total)


@numba.njit(nogil=True, cache=True)
def _refined_solve(Lp, Li, Lx, Dinv, perm, dense_from, Mp, Mi, Mx, r, max_steps, tol):
    """Solve ``M z = r`` with the factors of a regularised ``M[perm][:, perm]`` (see
    :func:`_solve`) and
    iterative refinement against the exact ``M`` (upper triangle ``Mp, Mi, Mx``, every
    diagonal entry stored last in its column).

    A step is kept only if it lowers the residual; refinement stops after ``max_steps``
    steps, below ``tol`` (relative to ``r``), or once a step gains less than half.
    Returns ``z`` and its relative residual.
    """
    norm_r = max(_norm(r), _TINY)
    z = _solve(Lp, Li, Lx, Dinv, perm, dense_from, r)
    residual, norm_res = symmetric_residual(Mp, Mi, Mx, z, r)
    for _ in range(max_steps):
        if not norm_res > tol * norm_r:  # also stops on NaN
            break
        candidate = z + _solve(Lp, Li, Lx, Dinv, perm, dense_from, residual)
        new_residual, new_norm = symmetric_residual(Mp, Mi, Mx, candidate, r)
        if not new_norm < norm_res:
            break
        improved = new_norm < 0.5 * norm_res
        z, residual, norm_res = candidate, new_residual, new_norm
        if not improved:
            break
    return z, norm_res / norm_r


@numba.njit(nogil=True, cache=True)
def _checksum(values):
    """A 64-bit digest of an integer array, from four independent multiply–add lanes
    (for cache keys only: equal patterns are confirmed by comparing the arrays)."""
    lanes = np.array([0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0,
                      0x082EFA98EC4E6C89], dtype=np.uint64)
    multiplier = np.uint64(0x9E3779B97F4A7C15)
    size = values.shape[0]
    for start in range(0, size - size % 4, 4):
        for lane in range(4):
            lanes[lane] = (lanes[lane] + np.uint64(values[start + lane])) * multiplier
    digest = np.uint64(size)
    for k in range(size - size % 4, size):
        digest = (digest + np.uint64(values[k])) * multiplier
    for lane in range(4):
        digest = (digest ^ lanes[lane]) * multiplier
        digest ^= digest >> np.uint64(29)
    return digest


@numba.njit(nogil=True, cache=True)
def _unscale(Lp, Li, Lx, Dinv, scale):
    """Turn the factors of ``S A S`` (``S = diag(scale)``, both in the factor's permuted
    order) into factors of ``A`` in place: ``L ← S⁻¹ L S`` (still unit lower
    triangular, same pattern) and ``D ← S⁻¹ D S⁻¹``."""
    n = Lp.shape[0] - 1
    for j in range(n):
        sj = scale[j]
        for p in range(_U(Lp[j]), _U(Lp[j + 1])):
            Lx[p] *= sj / scale[_U(Li[p])]
        Dinv[j] *= sj * sj


#: A trailing block of L is treated as dense from this many columns on ...
DENSE_BLOCK_MIN = 64
#: ... when at least this fraction of its lower triangle fills in.
DENSE_BLOCK_DENSITY = 0.9


@numba.njit(nogil=True, cache=True)
def _dense_block_start(counts, min_columns, density):
    """First column of the largest trailing block of L that is dense enough (at least
    ``min_columns`` columns, filled to ``density``), or ``n`` for none.

    The Schur complement of large SOC or PSD blocks, of a dense P or of many equality
    rows fills such a block; dense kernels run it faster than indexed loops, at the
    price of storing its few structural zeros.
    """
    n = counts.shape[0]
    start = n
    stored = 0  # entries of L in columns j, ..., n−1
    for j in range(n - 1, -1, -1):
        stored += counts[j]
        columns = n - j
        if columns >= min_columns and stored >= density * (columns * (columns - 1) // 2):
            start = j
    return start


class ZeroPivotError(RuntimeError):
    """The numeric factorisation met a zero pivot."""


@dataclass(frozen=True)
class LDLSymbolic:
    """Everything about an LDLᵀ factorisation that depends only on the pattern.

    Attributes
    ----------
    perm : ndarray of int64
        Fill-reducing permutation: the factored matrix is ``A[perm][:, perm]``.
    Cp, Ci : ndarray of int64
        Pattern of the permuted upper triangle.
    position : ndarray of int64
        Position in ``Cp, Ci`` of each stored entry of A's upper triangle.
    parent, counts : ndarray of int64
        Elimination tree and column counts of L.
    dense_from : int
        First column of L's dense trailing block (see :func:`_dense_block_start`, with
        ``DENSE_BLOCK_MIN`` and ``DENSE_BLOCK_DENSITY``): every
        column ``j ≥ dense_from`` stores all rows ``j+1, ..., n−1`` in increasing order,
        explicit zeros included. The block is factored by dense blocked LDLᵀ
        (:mod:`._dense_block_numba`) and solved by contiguous loops.
    """

    perm: np.ndarray
    Cp: np.ndarray
    Ci: np.ndarray
    position: np.ndarray
    parent: np.ndarray
    counts: np.ndarray
    dense_from: int

    @classmethod
    def analyse(cls, upper: CSCLike, perm: np.ndarray) -> LDLSymbolic:
        """Symbolic analysis of a canonical upper-triangular CSC matrix under ``perm``."""
        n = upper.indptr.size - 1
        perm = np.ascontiguousarray(perm, dtype=np.int64)
        inverse = np.empty(n, dtype=np.int64)
        inverse[perm] = np.arange(n)
        Cp, Ci, position = _permuted_upper(n, upper.indptr, upper.indices, inverse)
        parent, counts, _ = _elimination_tree(n, Cp, Ci, -1)
        dense_from = _dense_block_start(counts, DENSE_BLOCK_MIN, DENSE_BLOCK_DENSITY)
        return cls(perm, Cp, Ci, position, parent, counts, dense_from)


class LDLFactor:
    """Numeric LDLᵀ of a quasi-definite matrix given by its upper triangle.

    Parameters
    ----------
    upper : scipy.sparse.csc_matrix or CSCArrays
        Canonical upper triangle (every diagonal entry stored).
    symbolic : LDLSymbolic
        The analysis of ``upper``'s pattern.

    Raises
    ------
    ZeroPivotError
        If a pivot is exactly zero.
    """

    def __init__(self, upper: CSCLike, symbolic: LDLSymbolic) -> None:
        self.symbolic = symbolic
        Cx = np.empty(symbolic.Ci.size)
        Cx[symbolic.position] = upper.data
        n = upper.indptr.size - 1
        self._Lp, self._Li, self._Lx, self._Dinv, schur, ok = _factor(
            n, symbolic.Cp, symbolic.Ci, Cx, symbolic.parent, symbolic.counts,
            symbolic.dense_from)
        if ok and schur.size:
            pivots, ok = dense_ldl(schur)
            if ok:
                _store_dense_block(self._Lp, self._Li, self._Lx, self._Dinv, schur, pivots,
                                   symbolic.dense_from)
        if not ok:
            raise ZeroPivotError("zero pivot in the LDLᵀ factorisation")

    def unscale(self, scale: np.ndarray) -> None:
        """Make this factor of ``S A S`` (``S = diag(scale)``, in A's order) a factor of
        ``A`` itself, so that every solve is with A (:func:`_unscale`)."""
        _unscale(self._Lp, self._Li, self._Lx, self._Dinv,
                 np.ascontiguousarray(scale[self.symbolic.perm]))

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(Lp, Li, Lx, Dinv, perm, dense_from)``: the factors as the compiled kernels
        take them."""
        return (self._Lp, self._Li, self._Lx, self._Dinv, self.symbolic.perm,
                self.symbolic.dense_from)

    def solve(self, b: np.ndarray) -> np.ndarray:
        """Solve ``A x = b``."""
        return _solve(*self.arrays, np.ascontiguousarray(b, dtype=np.float64))

    def refined_solve(self, exact: CSCLike, r: np.ndarray, max_steps: int,
                      tol: float) -> tuple[np.ndarray, float]:
        """Solve ``exact z = r`` by this factor of a nearby matrix and iterative refinement
        (the rules of :func:`~diffqcp_np.derivative.norms.refine`), in one compiled call;
        returns ``z`` and its relative residual.

        Parameters
        ----------
        exact : scipy.sparse.csc_matrix or CSCArrays
            Upper triangle of the symmetric matrix to solve with (the factored one up to
            a regularisation), canonical, with every diagonal entry stored (last in its
            column).
        r : ndarray
        max_steps : int
            Refinement steps at most.
        tol : float
            Relative residual at which refinement stops.
        """
        return _refined_solve(*self.arrays, exact.indptr, exact.indices, exact.data,
                              np.ascontiguousarray(r, dtype=np.float64), max_steps, tol)


class SymbolicCache:
    """The analyses of recently factored patterns (thread-safe, LRU). Only patterns and
    analyses are kept, never numeric factors.

    Parameters
    ----------
    table : BoundedCache, optional
        Where the entries are kept, bounded in patterns and bytes (an entry's bytes: its
        analysis and a copy of the pattern); default a table of ``size`` patterns.
    size : int, default 16
    """

    def __init__(self, table: BoundedCache | None = None, size: int = 16) -> None:
        self.table = table if table is not None else BoundedCache("ldl_analyses", size)

    @staticmethod
    def _key(upper: CSCLike) -> tuple:
        return (upper.indptr.size, upper.indices.size,
                _checksum(upper.indptr), _checksum(upper.indices))

    def lookup(self, upper: CSCLike) -> LDLSymbolic | None:
        """The entry of ``upper``'s pattern, if cached (patterns compared exactly)."""
        entry = self.table.get(self._key(upper))
        if entry is None:
            return None
        indptr, indices, value = entry
        if equal_patterns(indptr, indices, upper.indptr, upper.indices):
            return value
        return None

    def store(self, upper: CSCLike, value: LDLSymbolic) -> None:
        """Remember ``value`` for ``upper``'s pattern."""
        indptr, indices = upper.indptr.copy(), upper.indices.copy()
        self.table.put(self._key(upper), (indptr, indices, value),
                       array_bytes(indptr, indices, value.perm, value.Cp, value.Ci,
                                   value.position, value.parent, value.counts))

    def clear(self) -> None:
        """Forget every pattern."""
        self.table.clear()


#: Patterns factored recently, shared by every derivative in the process (limits and
#: clearing: :mod:`diffqcp_np.caches`).
SYMBOLIC_CACHE = SymbolicCache(ldl_analyses)


def factorize(upper: CSCLike, natural_fill: float = 0.0) -> LDLFactor:
    """LDLᵀ of a quasi-definite matrix given by its canonical upper triangle.

    A new pattern is ordered (AMD) and analysed once; every matrix with a known pattern
    only runs the numeric factorisation.

    Parameters
    ----------
    upper : scipy.sparse.csc_matrix or CSCArrays
    natural_fill : float, default 0
        When positive, a new pattern keeps its own order if its factor then has at most
        this many times as many entries as ``upper`` (banded and block-diagonal
        matrices, which ordering cannot improve much): the bounded count costs less
        than an ordering.

    Raises
    ------
    ZeroPivotError
        If a pivot is exactly zero.
    """
    symbolic = SYMBOLIC_CACHE.lookup(upper)
    if symbolic is None:
        n = upper.indptr.size - 1
        budget = int(natural_fill * upper.indices.size)
        if budget > 0 and _elimination_tree(n, upper.indptr, upper.indices, budget)[2]:
            perm = np.arange(n)
        else:
            perm = amd_order(n, upper.indptr, upper.indices)
        symbolic = LDLSymbolic.analyse(upper, perm)
        SYMBOLIC_CACHE.store(upper, symbolic)
    return LDLFactor(upper, symbolic)
