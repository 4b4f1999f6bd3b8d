"""Where the values of a cone Jacobian's blocks live, on a pattern that does not depend
on the point (host-side, NumPy; built once per cone product).

Every cone contributes a full block: a 1×1 block per zero-cone or orthant row, a dense
``dim × dim`` block per second-order cone (or only its diagonal, for boundary cones
lifted out of the sparse matrices: dimension above ``lift_above``), a dense block per
PSD cone in vec coordinates and a 3×3 block per exponential, dual exponential and power
cone. Their values are stored back to back in row order, each dense block row-major:
the layout the kernels write (``soc_reduced_blocks``, ``jacobian_exp`` ...) and the
gathers of :mod:`.assembly` read.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..cones.spec import ConeSpec, vec_psd_dim


def segment_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(start, start + count)`` for each pair (int64)."""
    starts, counts = np.asarray(starts, np.int64), np.asarray(counts, np.int64)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts
    return np.repeat(starts - first, counts) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class BlockLayout:
    """The block-diagonal superset pattern of a cone Jacobian and its value storage.

    Attributes
    ----------
    spec : ConeSpec
    lift_above : int
        Second-order cones of larger dimension keep only their diagonal.
    starts, sizes : ndarray of int64
        First row and size of each block, in row order.
    dense : ndarray of bool
        Whether each block is stored dense (else only its diagonal).
    offsets : ndarray of int64
        Start of each block's values in the storage, and its total size last.
    rows, cols, storage : ndarray of int64
        The pattern's entries in CSC order (by column, rows increasing) and where
        each entry's value is in the storage.
    """

    spec: ConeSpec
    lift_above: int
    starts: np.ndarray
    sizes: np.ndarray
    dense: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    storage: np.ndarray

    @classmethod
    def from_spec(cls, spec: ConeSpec, lift_above: int) -> BlockLayout:
        """The layout of ``spec``'s Jacobian; SOC blocks above ``lift_above`` lifted."""
        soc = np.asarray(spec.soc, np.int64)
        sizes = np.concatenate([
            np.ones(spec.zero + spec.nonneg, np.int64), soc,
            np.asarray([vec_psd_dim(k) for k in spec.psd], np.int64),
            np.full(spec.exp + spec.exp_dual + len(spec.power), 3, np.int64)])
        dense = sizes >= 1
        first_soc = spec.zero + spec.nonneg
        dense[first_soc:first_soc + soc.size] = soc <= lift_above
        starts = np.cumsum(sizes) - sizes
        stored = np.where(dense, sizes * sizes, sizes)
        offsets = np.concatenate(([0], np.cumsum(stored))).astype(np.int64)
        # Column j of a dense block holds its rows in order; its entry (r, j) is value
        # (r - start) * size + (j - start) of the row-major block.
        block_of_col = np.repeat(np.arange(sizes.size), sizes)
        col_start, col_size = starts[block_of_col], sizes[block_of_col]
        col_dense = dense[block_of_col]
        per_col = np.where(col_dense, col_size, 1)
        cols = np.repeat(np.arange(int(sizes.sum()), dtype=np.int64), per_col)
        rows = segment_ranges(np.where(col_dense, col_start, np.arange(col_start.size)),
                              per_col)
        block = block_of_col[cols]
        local_r, local_c = rows - starts[block], cols - starts[block]
        storage = offsets[block] + np.where(dense[block], local_r * sizes[block] + local_c,
                                            local_c)
        return cls(spec, lift_above, starts, sizes, dense, offsets, rows, cols, storage)

    @property
    def m(self) -> int:
        """Rows of the Jacobian."""
        return int(self.sizes.sum())

    @property
    def size(self) -> int:
        """Number of stored values."""
        return int(self.offsets[-1])

    @property
    def indptr(self) -> np.ndarray:
        """CSC column pointers of the pattern."""
        return np.concatenate(([0], np.cumsum(np.bincount(self.cols, minlength=self.m)))
                              ).astype(np.int64)

    @functools.cached_property
    def soc_block_offsets(self) -> np.ndarray:
        """Storage offsets of the SOC blocks relative to the first, and their total
        (``soc_reduced_blocks``' ``block_offsets``)."""
        first = self.spec.zero + self.spec.nonneg
        offsets = self.offsets[first:first + len(self.spec.soc) + 1]
        return offsets - offsets[0]
