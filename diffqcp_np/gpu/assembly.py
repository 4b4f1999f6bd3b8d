"""The values of the derivative matrices by gathers through maps built once per pattern.

Host side (NumPy, once per pattern): the pattern of

* ``M = [[P, A'D], [DA, −E]]``, the reduced symmetric matrix, as the canonical CSC of its
  upper triangle with every diagonal entry stored (last in its column), and
* ``K = [[P, A'D], [−A, I − D]]``, the derivative system,

on the block-diagonal superset pattern of ``D`` and ``E`` (:class:`.layout.BlockLayout`:
every row kept, full cone blocks), so that the pattern is the same for every solution;
and a :class:`GatherMap` per matrix: each stored value is a sum of terms
``weight · src[left] · src[right]`` over one source vector per problem,
``[P values | A values | D values | E values | 1]`` (:func:`sources`).

Device side: the ``gather_values`` kernel, or :func:`gather` on any array namespace
(the same terms summed in the same order: bit for bit the kernel's results), and the
static regularisation ``±δ`` of M's diagonal (``shift_diagonal``, :func:`regularize`).
The terms of ``(A'D)_rc`` are summed in increasing row of D, as the CPU assembly
(:func:`~diffqcp_np.derivative._reduced_numba.assemble_upper`) sums them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import array_module
from .layout import BlockLayout, segment_ranges


@dataclass(frozen=True)
class GatherMap:
    """Value ``k`` of a matrix is the sum, in term order from 0.0, of
    ``weight[t] · src[left[t]] · src[right[t]]`` for ``term_ptr[k] <= t < term_ptr[k+1]``.

    Attributes
    ----------
    term_ptr : ndarray of int64, shape (nnz + 1,)
    left, right : ndarray of int64
        Source indices of each term's two factors.
    weight : ndarray of float64
    sources : int
        Length of a problem's source vector.
    """

    term_ptr: np.ndarray
    left: np.ndarray
    right: np.ndarray
    weight: np.ndarray
    sources: int

    @property
    def nnz(self) -> int:
        """Number of values."""
        return self.term_ptr.size - 1

    @functools.cached_property
    def buckets(self) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                               np.ndarray]:
        """The entries grouped by term count rounded up to a power of two, each group
        with its terms padded to that width (padding: weight 0 on source 0); and the
        position of each entry in the concatenation of the groups' results, the entries
        without terms last."""
        counts = np.diff(self.term_ptr)
        width = np.where(counts > 0, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(
            np.int64), 0)
        groups, order = [], []
        for w in np.unique(width[width > 0]):
            entries = np.flatnonzero(width == w)
            slot = np.arange(w)[None, :]
            valid = slot < counts[entries, None]
            term = np.where(valid, self.term_ptr[entries, None] + slot, 0)
            groups.append((entries, np.where(valid, self.left[term], 0),
                           np.where(valid, self.right[term], 0),
                           np.where(valid, self.weight[term], 0.0)))
            order.append(entries)
        order.append(np.flatnonzero(width == 0))
        position = np.empty(self.nnz, np.int64)
        position[np.concatenate(order)] = np.arange(self.nnz)
        return groups, position


def gather(src: Any, gather_map: GatherMap, xp: Any = None) -> Any:
    """The values ``(B, nnz)`` of a matrix for sources ``(B, sources)`` (one problem a
    row): the ``gather_values`` kernel's arithmetic, on ``xp`` (by default the
    namespace of ``src``)."""
    xp = array_module(src) if xp is None else xp

    def total(terms):
        acc = xp.zeros(terms.shape[:2])
        for t in range(terms.shape[2]):
            acc = acc + terms[:, :, t]
        return acc

    return reduce_terms(src, gather_map, total, xp)


def reduce_terms(src: Any, gather_map: GatherMap, reduction: Any, xp: Any) -> Any:
    """``reduction(terms)`` per entry of ``gather_map`` (``(B, nnz)``; 0 for entries
    without terms): ``terms`` is ``(B, entries, width)``, one bucket of
    :attr:`GatherMap.buckets` at a time (padding terms are 0)."""
    groups, position = gather_map.buckets
    batch = src.shape[0]
    results = []
    for _, left, right, weight in groups:
        shape = (batch,) + left.shape
        terms = (xp.asarray(weight)[None, ...]
                 * xp.reshape(xp.take(src, xp.asarray(left.reshape(-1)), axis=1), shape)
                 * xp.reshape(xp.take(src, xp.asarray(right.reshape(-1)), axis=1), shape))
        results.append(reduction(terms))
    results.append(xp.zeros((batch, int(position.size - sum(g[0].size for g in groups)))))
    return xp.take(xp.concat(results, axis=1), xp.asarray(position), axis=1)


def regularize(values: Any, signs: np.ndarray, delta: Any, xp: Any = None) -> Any:
    """``values + δ_b · signs`` per problem ``b`` (``signs``: +1 on M's first n diagonal
    entries, −1 on the others, 0 elsewhere; see :attr:`ReducedMatrixMap.signs`)."""
    xp = array_module(values) if xp is None else xp
    return values + xp.reshape(delta, (-1, 1)) * xp.asarray(signs)[None, :]


@dataclass(frozen=True)
class SourceLayout:
    """Offsets of the parts of a problem's source vector."""

    P: int
    A: int
    D: int
    E: int
    one: int

    @classmethod
    def of(cls, nnz_P: int, nnz_A: int, layout_size: int) -> SourceLayout:
        return cls(0, nnz_P, nnz_P + nnz_A, nnz_P + nnz_A + layout_size,
                   nnz_P + nnz_A + 2 * layout_size)

    @property
    def size(self) -> int:
        return self.one + 1


def sources(P_values: Any | None, A_values: Any, d: Any, e: Any, xp: Any = None) -> Any:
    """``[P | A | D | E | 1]`` per problem (``(B, ·)`` each; ``P_values`` the values of
    the full symmetric P on its stored pattern, None without P)."""
    xp = array_module(A_values) if xp is None else xp
    batch = A_values.shape[0]
    parts = [] if P_values is None else [P_values]
    return xp.concat(parts + [A_values, d, e, xp.ones((batch, 1))], axis=1)


@dataclass(frozen=True)
class MatrixMap:
    """A matrix's CSC pattern (``size × size``) and the gather of its values."""

    size: int
    indptr: np.ndarray
    indices: np.ndarray
    gather: GatherMap
    source_layout: SourceLayout

    def dense_index(self, symmetric: bool) -> np.ndarray:
        """For each of the ``size²`` entries of the dense matrix (row-major), the
        position of its value, or ``nnz`` where none is stored (the upper triangle's
        value serves both ``(i, j)`` and ``(j, i)`` if ``symmetric``)."""
        n, nnz = self.size, self.indices.size
        cols = np.repeat(np.arange(n), np.diff(self.indptr))
        index = np.full(n * n, nnz, np.int64)
        index[self.indices * n + cols] = np.arange(nnz)
        if symmetric:
            index[cols * n + self.indices] = np.arange(nnz)
        return index


@dataclass(frozen=True)
class ReducedMatrixMap(MatrixMap):
    """:class:`MatrixMap` of M's upper triangle, with its diagonal.

    Attributes
    ----------
    n : int
        Number of variables (M's first n diagonal entries get ``+δ``, the rest ``−δ``).
    diagonal : ndarray of int64
        Position of each diagonal entry among the values.
    """

    n: int
    diagonal: np.ndarray

    @property
    def signs(self) -> np.ndarray:
        """+1 on the first n diagonal entries, −1 on the other diagonal entries, 0 else."""
        out = np.zeros(self.indices.size)
        out[self.diagonal] = np.where(np.arange(self.size) < self.n, 1.0, -1.0)
        return out


def _csc_rows(indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int]):
    """The pattern of a CSC matrix by rows: ``(row_ptr, cols, positions)`` (positions:
    the entries' indices in the CSC arrays), columns increasing within a row."""
    cols = np.repeat(np.arange(shape[1], dtype=np.int64), np.diff(indptr))
    order = np.lexsort((cols, indices))
    row_ptr = np.concatenate(([0], np.cumsum(np.bincount(indices, minlength=shape[0]))))
    return row_ptr.astype(np.int64), cols[order], order.astype(np.int64)


def _coupling_terms(A_indptr, A_indices, shape, layout: BlockLayout, src: SourceLayout):
    """Terms of ``A'D``: for each entry ``(i, c)`` of D and each stored ``A_ir``, the
    term ``A_ir D_ic`` of entry ``(r, c)``. Returns ``(c, r, i, left, right)``."""
    row_ptr, a_cols, a_pos = _csc_rows(A_indptr, A_indices, shape)
    counts = np.diff(row_ptr)[layout.rows]
    d_entry = np.repeat(np.arange(layout.rows.size), counts)
    a_entry = segment_ranges(row_ptr[layout.rows], counts)
    return (layout.cols[d_entry], a_cols[a_entry], layout.rows[d_entry],
            src.A + a_pos[a_entry], src.D + layout.storage[d_entry])


def _build(size, keys_col, keys_row, order_key, left, right, weight, src, extra_cols=None):
    """A MatrixMap from its terms (each with the entry ``(row, col)`` it adds to and a
    key ordering terms within an entry); ``extra_cols``/rows: entries with no terms."""
    if extra_cols is not None:
        keys_col = np.concatenate([keys_col, extra_cols])
        keys_row = np.concatenate([keys_row, extra_cols])
        order_key = np.concatenate([order_key, np.full(extra_cols.size, -1)])
        none = np.full(extra_cols.size, -1)
        left, right = np.concatenate([left, none]), np.concatenate([right, none])
        weight = np.concatenate([weight, np.zeros(extra_cols.size)])
    order = np.lexsort((order_key, keys_row, keys_col))
    keys = keys_col[order] * size + keys_row[order]
    unique = np.unique(keys)
    real = left[order] >= 0  # the placeholder terms of extra entries are dropped
    term_entry = np.searchsorted(unique, keys[real])
    term_ptr = np.concatenate(([0], np.cumsum(np.bincount(term_entry, minlength=unique.size))))
    cols, rows = unique // size, unique % size
    indptr = np.concatenate(([0], np.cumsum(np.bincount(cols, minlength=size))))
    gmap = GatherMap(term_ptr.astype(np.int64), left[order][real].astype(np.int64),
                     right[order][real].astype(np.int64), weight[order][real].astype(float),
                     src.size)
    return indptr.astype(np.int64), rows.astype(np.int64), gmap


def reduced_matrix_map(n: int, P_pattern: tuple[np.ndarray, np.ndarray] | None,
                       A_pattern: tuple[np.ndarray, np.ndarray], layout: BlockLayout
                       ) -> ReducedMatrixMap:
    """The map of M's upper triangle (``(n + m) × (n + m)``, every row of D kept).

    Parameters
    ----------
    n : int
    P_pattern : (indptr, indices) or None
        CSC pattern of the full symmetric ``P`` (its values are the ``P`` sources).
    A_pattern : (indptr, indices)
        CSC pattern of ``A`` (``m × n``).
    layout : BlockLayout
        The layout of D's and E's values (``layout.m == m``).
    """
    m = layout.m
    size = n + m
    P_indptr, P_indices = P_pattern if P_pattern is not None else (
        np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    src = SourceLayout.of(P_indices.size, A_pattern[1].size, layout.size)
    one = src.one
    p_cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(P_indptr))
    p_rows = P_indices.astype(np.int64)
    upper = p_rows <= p_cols
    p_pos = np.flatnonzero(upper)
    c, r, i, a_left, d_right = _coupling_terms(A_pattern[0], A_pattern[1], (m, n), layout, src)
    e_upper = layout.rows <= layout.cols
    cols = [p_cols[upper], n + c, n + layout.cols[e_upper]]
    rows = [p_rows[upper], r, n + layout.rows[e_upper]]
    keys = [np.zeros(p_pos.size, np.int64), i, np.zeros(int(e_upper.sum()), np.int64)]
    left = [src.P + p_pos, a_left, src.E + layout.storage[e_upper]]
    right = [np.full(p_pos.size, one), d_right, np.full(int(e_upper.sum()), one)]
    weight = [np.ones(p_pos.size), np.ones(c.size), -np.ones(int(e_upper.sum()))]
    indptr, indices, gmap = _build(size, *(np.concatenate(x) for x in
                                           (cols, rows, keys, left, right, weight)),
                                   src, extra_cols=np.arange(n, dtype=np.int64))
    return ReducedMatrixMap(size, indptr, indices, gmap, src, n, indptr[1:] - 1)


def kkt_matrix_map(n: int, P_pattern: tuple[np.ndarray, np.ndarray] | None,
                   A_pattern: tuple[np.ndarray, np.ndarray], layout: BlockLayout) -> MatrixMap:
    """The map of ``K = [[P, A'D], [−A, I − D]]`` (all of it, ``(n + m) × (n + m)``),
    parameters as :func:`reduced_matrix_map`."""
    m = layout.m
    size = n + m
    P_indptr, P_indices = P_pattern if P_pattern is not None else (
        np.zeros(n + 1, np.int64), np.zeros(0, np.int64))
    A_indptr, A_indices = A_pattern
    src = SourceLayout.of(P_indices.size, A_indices.size, layout.size)
    one = src.one
    p_cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(P_indptr))
    a_cols = np.repeat(np.arange(n, dtype=np.int64), np.diff(A_indptr))
    c, r, i, a_left, d_right = _coupling_terms(A_indptr, A_indices, (m, n), layout, src)
    diag = np.flatnonzero(layout.rows == layout.cols)
    nP, nA, nD = P_indices.size, A_indices.size, layout.rows.size
    cols = [p_cols, a_cols, n + c, n + layout.cols[diag], n + layout.cols]
    rows = [P_indices.astype(np.int64), n + A_indices.astype(np.int64), r,
            n + layout.rows[diag], n + layout.rows]
    # within an entry of I - D: the 1 first, then -D (as 1.0 - d)
    keys = [np.zeros(nP, np.int64), np.zeros(nA, np.int64), i, np.zeros(diag.size, np.int64),
            np.ones(nD, np.int64)]
    left = [src.P + np.arange(nP), src.A + np.arange(nA), a_left, np.full(diag.size, one),
            src.D + layout.storage]
    right = [np.full(nP, one), np.full(nA, one), d_right, np.full(diag.size, one),
             np.full(nD, one)]
    weight = [np.ones(nP), -np.ones(nA), np.ones(c.size), np.ones(diag.size), -np.ones(nD)]
    indptr, indices, gmap = _build(size, *(np.concatenate(x) for x in
                                           (cols, rows, keys, left, right, weight)), src)
    return MatrixMap(size, indptr, indices, gmap, src)
