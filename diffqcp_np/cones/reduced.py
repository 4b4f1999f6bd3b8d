"""A cone Jacobian split into the pieces of the symmetric reduced derivative system.

For a cone Jacobian ``D`` (symmetric, eigenvalues in [0, 1]) the reduced derivative
system needs ``D`` itself, ``E = D(I − D) + Π₀`` and ``Π₀``, the orthogonal projector
onto the null space of ``D``. All three are block diagonal with the blocks of ``D``.
Large second-order cones on the boundary region would make them dense inside the
block; such a block is split into a diagonal part here and a rank-two remainder,
:class:`LiftedSOC`, that the derivative system handles by a low-rank update instead
of densifying.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np
import scipy.sparse as sp

from .._sparse import CSCArrays
from ._soc_numba import SOC_BOUNDARY, soc_reduced_triplets
from ._sym3_eigen_numba import eigh_3x3
from .projection import ConeJacobian, block_coordinates

#: Boundary SOC blocks of larger dimension than this are lifted instead of densified.
LIFT_SOC_ABOVE = 32
#: Eigenvalues of numerically computed blocks (PSD, exponential, power) below this
#: count as null; the error this makes is removed by iterative refinement.
NULL_EIGENVALUE = 1e-6


@dataclass(frozen=True)
class LiftedSOC:
    """Boundary second-order cones whose rank-two part is kept out of the sparse matrices.

    A lifted block at rows ``start:stop`` with ratio ``a = t/||z||`` and unit tail
    ``u`` has ``D = ½(1+a) I + U C U'``, ``E = ¼(1−a²) I + U F U'`` and ``Π₀ = qq'``
    with ``U = [e₀, (0, u)]``, ``C = [[−a/2, ½], [½, −a/2]]``,
    ``F = q̂q̂' − ¼(1−a²) I₂``, ``q̂ = (1, −1)/√2`` and ``q = U q̂``.

    Attributes
    ----------
    starts, stops : ndarray of int64
        Row ranges of the lifted blocks.
    ratios : ndarray
        ``a`` of each block.
    units : ndarray, shape (m,)
        The unit tails at their rows (zero elsewhere).
    m : int
        Number of rows of the whole Jacobian.
    """

    starts: np.ndarray
    stops: np.ndarray
    ratios: np.ndarray
    units: np.ndarray
    m: int

    @property
    def count(self) -> int:
        """Number of lifted blocks."""
        return int(self.starts.size)

    @cached_property
    def basis(self) -> sp.csc_matrix:
        """``[U₁, U₂, ...]`` as an ``m × 2r`` sparse matrix (columns ``e₀``, ``(0, u)``)."""
        rows, cols, vals = [], [], []
        for j, (start, stop) in enumerate(zip(self.starts, self.stops)):
            rows += [np.array([start]), np.arange(start + 1, stop)]
            cols += [np.array([2 * j]), np.full(stop - start - 1, 2 * j + 1)]
            vals += [np.ones(1), self.units[start + 1:stop]]
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.m, 2 * self.count),
        )

    @cached_property
    def null_vectors(self) -> sp.csc_matrix:
        """``[q₁, q₂, ...]``: unit null vectors of ``D`` in the lifted blocks (``m × r``)."""
        U = self.basis
        combine = sp.kron(sp.identity(self.count), np.array([[1.0], [-1.0]]) / np.sqrt(2))
        return (U @ combine).tocsc()

    @cached_property
    def null_vectors_transposed(self) -> sp.csr_matrix:
        """``[q₁, q₂, ...]'``, kept so that products with it build no transpose."""
        return self.null_vectors.T
    def couplings(self) -> tuple[np.ndarray, np.ndarray]:
        """Stacked 2×2 matrices ``C`` and ``F`` of the blocks, shape (r, 2, 2) each."""
        a = self.ratios
        C = np.empty((a.size, 2, 2))
        C[:, 0, 0] = C[:, 1, 1] = -0.5 * a
        C[:, 0, 1] = C[:, 1, 0] = 0.5
        mid = 0.25 * (1.0 - a * a)
        q_hat = np.array([1.0, -1.0]) / np.sqrt(2)
        F = np.outer(q_hat, q_hat)[None, :, :] - mid[:, None, None] * np.eye(2)[None]
        return C, F


@dataclass(frozen=True)
class ReducedParts:
    """``D``, ``E = D(I − D) + Π₀`` and ``Π₀`` as sparse matrices, plus lifted SOC blocks.

    Inside lifted blocks the matrices hold only the diagonal parts
    (``½(1+a)``, ``¼(1−a²)`` and 0); ``lifted`` holds the rest. ``exact`` is False when
    some block's null space was found from numerically computed eigenvalues (PSD,
    exponential and power cones), whose cut-off ``NULL_EIGENVALUE`` makes the parts
    approximate.
    """

    D: CSCArrays
    E: CSCArrays
    null: CSCArrays
    lifted: LiftedSOC
    exact: bool

    def project_null(self, v: np.ndarray) -> np.ndarray:
        """``Π₀ v``."""
        out = self.null.matvec(v)
        if self.lifted.count:
            out += self.lifted.null_vectors @ (self.lifted.null_vectors_transposed @ v)
        return out


@numba.njit(nogil=True, cache=True)
def _e_weight(lam):
    """Eigenvalue of ``E = D(I − D) + Π₀`` from one of ``D``."""
    return 1.0 if lam < NULL_EIGENVALUE else lam * (1.0 - lam)


@numba.njit(nogil=True, cache=True)
def _null_weight(lam):
    """Eigenvalue of ``Π₀`` from one of ``D``."""
    return 1.0 if lam < NULL_EIGENVALUE else 0.0


@numba.njit(nogil=True, cache=True)
def _flat_weights(lam):
    """:func:`_e_weight` and :func:`_null_weight` of every entry of a flat array."""
    e = np.empty_like(lam)
    null = np.empty_like(lam)
    for i in range(lam.shape[0]):
        e[i] = _e_weight(lam[i])
        null[i] = _null_weight(lam[i])
    return e, null


def _weights(lam, which: int) -> np.ndarray:
    lam = np.asarray(lam, dtype=np.float64)
    return _flat_weights(np.ascontiguousarray(lam).ravel())[which].reshape(lam.shape)


def _e_weights(lam) -> np.ndarray:
    """:func:`_e_weight` of every entry of an array of any shape."""
    return _weights(lam, 0)


def _null_weights(lam) -> np.ndarray:
    """:func:`_null_weight` of every entry of an array of any shape."""
    return _weights(lam, 1)


@numba.njit(nogil=True, cache=True)
def _small_block_parts(blocks):
    """``E`` and ``Π₀`` of each symmetric 3×3 block ``D`` of a ``(k, 3, 3)`` stack, from
    its compiled eigen-decomposition (:func:`~._sym3_eigen_numba.eigh_3x3`).

    Returns
    -------
    E, null : ndarray, shape (k, 3, 3)
    """
    lam, vectors = eigh_3x3(blocks)
    k = blocks.shape[0]
    E = np.zeros((k, 3, 3))
    null = np.zeros((k, 3, 3))
    for b in range(k):
        for t in range(3):
            e_weight, null_weight = _e_weight(lam[b, t]), _null_weight(lam[b, t])
            for i in range(3):
                vi = vectors[b, i, t]
                for j in range(3):
                    product = vi * vectors[b, j, t]
                    E[b, i, j] += e_weight * product
                    null[b, i, j] += null_weight * product
    return E, null


def reduced_parts(jac: ConeJacobian, lift_above: int = LIFT_SOC_ABOVE) -> ReducedParts:
    """Split a cone Jacobian into the pieces of the reduced derivative system.

    Parameters
    ----------
    jac : ConeJacobian
    lift_above : int, default LIFT_SOC_ABOVE
        Boundary SOC blocks of larger dimension are lifted (rank two) instead of
        densified.

    Returns
    -------
    ReducedParts
    """
    spec, sl = jac.spec, jac._slices
    m = jac.shape[0]
    diagonal = jac.diagonal_part
    diagonal_e, is_null = _flat_weights(np.ascontiguousarray(diagonal, dtype=np.float64))
    no_lift = LiftedSOC(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                        np.zeros(m), m)
    if diagonal.size == m:  # zero and orthant cones only: diagonal matrices
        D, E, null = (CSCArrays.from_diagonal(values)
                      for values in (diagonal, diagonal_e, is_null))
        return ReducedParts(D, E, null, no_lift, True)

    rows, cols, d_parts, e_parts, n_parts = [], [], [], [], []

    def add(r, c, d, e, n, offset):
        rows.append(np.asarray(r, np.int64) + offset)
        cols.append(np.asarray(c, np.int64) + offset)
        d_parts.append(np.asarray(d, float))
        e_parts.append(np.asarray(e, float))
        n_parts.append(np.asarray(n, float))

    idx = np.arange(diagonal.size)
    add(idx, idx, diagonal, diagonal_e, is_null, 0)

    offsets = jac._soc_offsets
    codes, ratios, units = jac._soc
    add(*soc_reduced_triplets(offsets, codes, ratios, units, lift_above), sl["q"].start)
    dims = np.diff(offsets)
    lift = (codes == SOC_BOUNDARY) & (dims > lift_above)
    lifted_units = np.zeros(m)
    lifted_units[sl["q"]] = units
    lifted = LiftedSOC(offsets[:-1][lift] + sl["q"].start, offsets[1:][lift] + sl["q"].start,
                       ratios[lift].copy(), lifted_units, m)

    for offset, (d_block, e_block, n_block) in jac.psd_blocks(None, _e_weights,
                                                                _null_weights):
        add(*block_coordinates(1, d_block.shape[0]), d_block.ravel(), e_block.ravel(),
            n_block.ravel(), offset)

    small = jac._small
    if small.shape[0]:
        E, N = _small_block_parts(small)
        add(*block_coordinates(small.shape[0], 3), small.ravel(), E.ravel(), N.ravel(),
            jac._small_start)

    # The blocks are disjoint: one conversion to CSC orders the entries of all three.
    numbered = sp.csc_matrix((np.arange(1.0, sum(r.size for r in rows) + 1),
                              (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    order = numbered.data.astype(np.int64) - 1

    def matrix(parts):
        mat = sp.csc_matrix((np.concatenate(parts)[order], numbered.indices.copy(),
                             numbered.indptr.copy()), shape=(m, m))
        mat.eliminate_zeros()
        return CSCArrays.from_scipy(mat)

    exact = not spec.psd and small.shape[0] == 0
    return ReducedParts(matrix(d_parts), matrix(e_parts), matrix(n_parts), lifted, exact)
