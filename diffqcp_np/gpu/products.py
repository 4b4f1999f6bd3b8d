"""Sparse products on fixed patterns, batched, as value gathers.

A product ``y = V z`` with ``V`` on a fixed pattern is a :class:`~.assembly.GatherMap`
over the source vector ``[V's values | z]``: output ``i`` sums ``V[k] · z[col_k]`` over
the stored entries ``k`` of row ``i``. The maps are built once per pattern on the host
(NumPy); on the device one ``gather_values`` launch computes the product for every
problem of a batch (values ``(B, nnz)``, vectors ``(B, ·)``), the same arithmetic as
:func:`~.assembly.gather` on any namespace. A :class:`BoundProduct` keeps the values in
its source buffer, so a product only writes ``z`` into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .assembly import GatherMap, reduce_terms

#: Index arrays of a GatherMap, as the ``gather_values`` kernel takes them.
MAP_ARRAYS = ("term_ptr", "left", "right", "weight")


def terms_map(out: np.ndarray, left: np.ndarray, right: np.ndarray, weight: np.ndarray,
         outputs: int, sources: int) -> GatherMap:
    """The GatherMap whose output ``out[t]`` gets the term ``t`` (terms kept in their
    given order within an output)."""
    order = np.argsort(out, kind="stable")
    term_ptr = np.concatenate(([0], np.cumsum(np.bincount(out, minlength=outputs))))
    return GatherMap(term_ptr.astype(np.int64), left[order].astype(np.int64),
                     right[order].astype(np.int64), weight[order].astype(float), sources)


def product_map(indptr: np.ndarray, indices: np.ndarray, shape: tuple[int, int],
                transpose: bool = False) -> GatherMap:
    """``V z`` (or ``V' z``) for the CSC pattern ``(indptr, indices)`` of an ``r × c``
    matrix ``V``; sources ``[V's values (nnz) | z]``."""
    rows = np.asarray(indices, np.int64)
    cols = np.repeat(np.arange(shape[1], dtype=np.int64), np.diff(indptr))
    nnz = rows.size
    out, inner = (cols, rows) if transpose else (rows, cols)
    outputs = shape[1] if transpose else shape[0]
    return terms_map(out, np.arange(nnz), nnz + inner, np.ones(nnz), outputs,
                nnz + (shape[0] if transpose else shape[1]))


def _symmetric_terms(indptr: np.ndarray, indices: np.ndarray, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """For a symmetric M by the CSC pattern of its upper triangle: per term (each
    stored entry, and the mirror of each off-diagonal one) its row, the position of its
    value and its column; and nnz."""
    rows = np.asarray(indices, np.int64)
    cols = np.repeat(np.arange(size, dtype=np.int64), np.diff(indptr))
    strict = np.flatnonzero(rows != cols)
    return (np.concatenate([rows, cols[strict]]),
            np.concatenate([np.arange(rows.size), strict]),
            np.concatenate([cols, rows[strict]]), rows.size)


def symmetric_magnitude_map(indptr: np.ndarray, indices: np.ndarray, size: int) -> GatherMap:
    """For each row of a symmetric M (CSC upper triangle), its entries' values as
    terms ``value · 1``: :func:`row_maxima` reads the largest magnitude per row.
    Sources ``[M's values | 1]``."""
    out, left, _, nnz = _symmetric_terms(indptr, indices, size)
    return terms_map(out, left, np.full(out.size, nnz), np.ones(out.size), size, nnz + 1)


def row_maxima(src: Any, gather_map: GatherMap, xp: Any) -> Any:
    """``max_t |weight · src[left] · src[right]|`` per output of ``gather_map``
    (``(B, outputs)``; 0 for outputs without terms), sources ``(B, sources)``."""
    return reduce_terms(src, gather_map, lambda terms: xp.max(xp.abs(terms), axis=2), xp)


@dataclass(frozen=True)
class DeviceMap:
    """A GatherMap with its index arrays on an array namespace."""

    gather_map: GatherMap
    arrays: dict

    @classmethod
    def on(cls, gather_map: GatherMap, xp: Any) -> DeviceMap:
        return cls(gather_map, {k: xp.asarray(getattr(gather_map, k)) for k in MAP_ARRAYS})

    def __call__(self, src: Any, kernels: Any, xp: Any) -> Any:
        """The map's outputs ``(B, nnz)`` for sources ``(B, sources)`` (contiguous)."""
        batch, gmap = src.shape[0], self.gather_map
        out = xp.empty(batch * gmap.nnz)
        a = self.arrays
        kernels.gather_values(xp.reshape(src, (-1,)), gmap.sources, a["term_ptr"], a["left"],
                              a["right"], a["weight"], gmap.nnz, batch, out)
        return xp.reshape(out, (batch, gmap.nnz))


class BoundProduct:
    """``z ↦ V z`` per problem for fixed values of ``V`` (``(B, nnz)``): the values
    sit in a source buffer ``(B, nnz + len(z))`` once, each product writes ``z`` into
    its tail and runs one gather."""

    def __init__(self, product: DeviceMap, values: Any, kernels: Any, xp: Any) -> None:
        self.product, self.kernels, self.xp = product, kernels, xp
        batch, nnz = values.shape
        self.nnz = nnz
        self._buffer = xp.zeros((batch, product.gather_map.sources))
        self._buffer[:, :nnz] = values

    def __call__(self, z: Any) -> Any:
        self._buffer[:, self.nnz:] = z
        return self.product(self._buffer, self.kernels, self.xp)


def apply_product(product: DeviceMap, values: Any, z: Any, kernels: Any, xp: Any) -> Any:
    """``V z`` per problem for values ``(B, nnz)`` used once."""
    return product(xp.concat([values, z], axis=1), kernels, xp)
