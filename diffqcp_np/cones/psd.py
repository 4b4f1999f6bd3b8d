"""Positive semidefinite cones: vectorisation, projection and Jacobian.

A symmetric matrix ``X`` of side ``k`` is stored as the ``k (k + 1) / 2`` entries of
its lower triangle, column by column, with the off-diagonal entries scaled by
``sqrt(2)`` (the SCS convention)::

    vec(X) = (X11, sqrt(2) X21, ..., sqrt(2) Xk1, X22, sqrt(2) X32, ..., Xkk)

so that ``vec(X)' vec(Y) = tr(XY)``. A product of PSD cones is described by the
list of its sides; its vector is the concatenation of the blocks' vectors. Blocks
of equal side are handled together as a stack (batched ``eigh`` and ``matmul``).
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from ..caches import array_bytes, psd_index_maps

_SQRT2 = np.sqrt(2.0)

#: Eigenvalues with ``|lambda| <= _ZERO_TOL * k * max|lambda|`` count as exact zeros
#: in the Jacobian (they are at the rounding level of ``eigh``).
_ZERO_TOL = 8.0 * np.finfo(np.float64).eps


def _tri(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_index_maps` of side ``k``, kept in ``caches.psd_index_maps``."""
    return psd_index_maps.get_or_make(k, lambda: _index_maps(k), lambda maps: array_bytes(*maps))


def _index_maps(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices, column indices and scales of the vec entries of side ``k``.

    Returns
    -------
    rows, cols : ndarray of int
        Position ``(rows[p], cols[p])`` (``rows >= cols``) of vec entry ``p``.
    scale : ndarray of float
        ``sqrt(2)`` off the diagonal, ``1`` on it.
    """
    cols, rows = np.triu_indices(k)
    scale = np.where(rows == cols, 1.0, _SQRT2)
    for arr in (rows, cols, scale):
        arr.setflags(write=False)
    return rows, cols, scale


def _vec_stack(X: np.ndarray) -> np.ndarray:
    """vec of each matrix of a stack ``(..., k, k)``, read from its lower triangle."""
    rows, cols, scale = _tri(X.shape[-1])
    return X[..., rows, cols] * scale


def _unvec_stack(x: np.ndarray, k: int) -> np.ndarray:
    """Symmetric matrices ``(..., k, k)`` from a stack of vecs ``(..., k(k+1)/2)``."""
    rows, cols, scale = _tri(k)
    X = np.empty(x.shape[:-1] + (k, k))
    entries = x / scale
    X[..., rows, cols] = entries
    X[..., cols, rows] = entries
    return X


def vec_symm(X: np.ndarray) -> np.ndarray:
    """Vectorise a symmetric matrix in the SCS convention.

    Parameters
    ----------
    X : ndarray, shape (k, k)
        Symmetric matrix; only its lower triangle is read (as in diffcp).

    Returns
    -------
    ndarray, shape (k (k + 1) / 2,)
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] != X.shape[1]:
        raise ValueError(f"vec_symm needs a square matrix, got shape {X.shape}")
    return _vec_stack(X)


def unvec_symm(x: np.ndarray, dim: int) -> np.ndarray:
    """Symmetric matrix of side ``dim`` whose SCS vectorisation is ``x``.

    Parameters
    ----------
    x : ndarray, shape (dim (dim + 1) / 2,)
    dim : int
        Side of the matrix.

    Returns
    -------
    ndarray, shape (dim, dim)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (dim * (dim + 1) // 2,):
        raise ValueError(
            f"unvec_symm with dim={dim} needs a vector of length {dim * (dim + 1) // 2}, "
            f"got shape {x.shape}"
        )
    return _unvec_stack(x, dim)


def _groups(v: np.ndarray, sides: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Group the blocks of ``v`` by side.

    Yields
    ------
    k : int
        A distinct side, in order of first appearance.
    index : ndarray of int, shape (n_blocks, k (k + 1) / 2)
        Positions in ``v`` of the entries of each block of side ``k``, in block order.
    """
    sides = [int(k) for k in sides]
    if not sides:
        if v.shape != (0,):
            raise ValueError(f"no PSD cones need an empty vector, got shape {v.shape}")
        return
    if any(k < 1 for k in sides):
        raise ValueError(f"PSD cone sides must be positive integers, got {sides}")
    sizes = np.array([k * (k + 1) // 2 for k in sides], dtype=np.int64)
    if v.shape != (int(sizes.sum()),):
        raise ValueError(
            f"PSD cones of sides {sides} need a vector of length {int(sizes.sum())}, "
            f"got shape {v.shape}"
        )
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    side_arr = np.array(sides, dtype=np.int64)
    for k in dict.fromkeys(sides):
        d = k * (k + 1) // 2
        yield k, starts[side_arr == k][:, None] + np.arange(d)


def project_psd(v: np.ndarray, sides: Sequence[int]) -> np.ndarray:
    """Euclidean projection onto a product of PSD cones.

    Parameters
    ----------
    v : ndarray, shape (sum k (k + 1) / 2,)
        Concatenated SCS vectorisations of the blocks.
    sides : sequence of int
        Side ``k`` of each block, in order.

    Returns
    -------
    ndarray
        ``vec(Q diag(max(lambda, 0)) Q')`` block by block, where ``unvec(v) = Q diag(lambda) Q'``.
    """
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    for k, index in _groups(v, sides):
        lam, Q = np.linalg.eigh(_unvec_stack(v[index], k))
        X = (Q * np.maximum(lam, 0.0)[:, None, :]) @ np.swapaxes(Q, -1, -2)
        out[index] = _vec_stack(X)
    return out


def _weights(lam: np.ndarray) -> np.ndarray:
    """Jacobian weights ``B`` for a stack of eigenvalue vectors ``(n, k)``.

    ``B_ij = (lam_i^+ + lam_j^+) / (|lam_i| + |lam_j|)`` with ``0/0 := 1``, after
    eigenvalues at the rounding level of each block are set to zero: ones on the
    nonnegative-nonnegative block, zeros on the negative-negative block and
    ``lam_i / (lam_i - lam_j)`` for ``lam_i >= 0 > lam_j``.
    """
    k = lam.shape[-1]
    tol = _ZERO_TOL * k * np.abs(lam).max(axis=-1, keepdims=True)
    lam = np.where(np.abs(lam) <= tol, 0.0, lam)
    pos, mag = np.maximum(lam, 0.0), np.abs(lam)
    num = pos[:, :, None] + pos[:, None, :]
    den = mag[:, :, None] + mag[:, None, :]
    zero = den == 0.0
    return np.where(zero, 1.0, num / np.where(zero, 1.0, den))


#: Entries of ``Q' E_q Q`` formed at once by :meth:`PSDJacobian.dense_blocks`.
_DENSE_CHUNK = 1 << 19


class PSDJacobian:
    """Jacobian of the projection onto a product of PSD cones, at a point ``v``.

    With ``unvec(v) = Q diag(lambda) Q'`` for a block, the Jacobian maps
    ``dX`` to ``Q (B o (Q' dX Q)) Q'`` (see :func:`_weights` for ``B``). It is
    symmetric in vec coordinates with eigenvalues ``B_ij`` in ``[0, 1]``.

    Parameters
    ----------
    v : ndarray, shape (sum k (k + 1) / 2,)
        Point of differentiation (concatenated vecs).
    sides : sequence of int
        Side ``k`` of each block, in order.

    Attributes
    ----------
    size : int
        Length of ``v``.
    """

    def __init__(self, v: np.ndarray, sides: Sequence[int]) -> None:
        v = np.asarray(v, dtype=np.float64)
        self._sides = tuple(int(k) for k in sides)
        self._groups = []
        for k, index in _groups(v, self._sides):
            lam, Q = np.linalg.eigh(_unvec_stack(v[index], k))
            self._groups.append((k, index, Q, _weights(lam)))
        self.size = int(v.shape[0])

    def same_as(self, other: PSDJacobian) -> bool:
        """Whether ``other`` is the same Jacobian (same blocks, equal eigenvectors and
        weights)."""
        if self._sides != other._sides:
            return False
        return all(np.array_equal(Q, Q2) and np.array_equal(B, B2)
                   for (_, _, Q, B), (_, _, Q2, B2) in zip(self._groups, other._groups))

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """Apply the Jacobian to ``x`` in ``O(sum k^3)`` operations.

        Parameters
        ----------
        x : ndarray, shape (size,)

        Returns
        -------
        ndarray, shape (size,)
        """
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.size,):
            raise ValueError(f"matvec needs a vector of length {self.size}, got shape {x.shape}")
        out = np.empty_like(x)
        for k, index, Q, B in self._groups:
            Qt = np.swapaxes(Q, -1, -2)
            inner = B * (Qt @ _unvec_stack(x[index], k) @ Q)
            out[index] = _vec_stack(Q @ inner @ Qt)
        return out

    def dense_blocks(self, *spectral_maps: Callable[[np.ndarray], np.ndarray] | None
                     ) -> list[np.ndarray] | list[tuple[np.ndarray, ...]]:
        """Dense Jacobian of each block in vec coordinates, in block order.

        Column ``q`` of a block's Jacobian is the Jacobian applied to the unit vec
        ``e_q``: ``vec(Q (B o (Q' E_q Q)) Q')`` with ``Q' E_q Q`` a sum of two outer
        products of rows of Q. Batched over the columns, that is ``4 k³`` operations per
        column (``k⁵`` for the block) instead of the ``k⁶/4`` of a product of two dense
        vec-space matrices. The result is symmetric with eigenvalues in ``[0, 1]`` up to
        rounding (the ``B_ij``).

        Parameters
        ----------
        *spectral_maps : callable or None
            Each is applied elementwise to the weights ``B`` before assembly, giving the
            matrix function ``f(J)`` (e.g. ``J(I − J)``); ``None`` gives ``J``. The
            products ``Q' E_q Q`` are formed once for all of them.

        Returns
        -------
        list of ndarray, each of shape (k (k + 1) / 2, k (k + 1) / 2)
            Exactly symmetric float64 matrices (without ``spectral_maps``); with them, a
            tuple of such matrices per block, one per map.
        """
        maps = spectral_maps or (None,)
        blocks: list[tuple[np.ndarray, ...] | None] = [None] * len(self._sides)
        position = {}
        for i, k in enumerate(self._sides):
            position.setdefault(k, []).append(i)
        for k, _, Q, B in self._groups:
            rows, cols, scale = _tri(k)
            size = rows.size
            weights = [B if spectral_map is None else spectral_map(B) for spectral_map in maps]
            out = np.empty((len(maps), Q.shape[0], size, size))
            Qt = np.ascontiguousarray(np.swapaxes(Q, -1, -2))
            flat = rows * k + cols
            step = max(1, _DENSE_CHUNK // (k * k))
            for first in range(0, size, step):
                last = min(first + step, size)
                # Q' E_q Q for the unit vecs e_q: E_q = (e_i e_j' + e_j e_i') / t_q, t_q = 2
                # on the diagonal, sqrt(2) off it.
                i, j = rows[first:last], cols[first:last]
                factor = np.where(i == j, 0.5, 1.0 / _SQRT2)[None, :, None]
                half = (Q[:, i, :] * factor)[..., :, None] * Q[:, j, :][..., None, :]
                inner = half + np.swapaxes(half, -1, -2)
                for t, w in enumerate(weights):
                    Y = np.matmul(np.matmul(Q[:, None], w[:, None] * inner), Qt[:, None])
                    out[t, :, first:last] = np.take(Y.reshape(Y.shape[:2] + (k * k,)), flat,
                                                    axis=-1) * scale
            out = 0.5 * (out + np.swapaxes(out, -1, -2))
            for j, i in enumerate(position[k]):
                blocks[i] = tuple(np.ascontiguousarray(out[t, j]) for t in range(len(maps)))
        if not spectral_maps:
            return [block[0] for block in blocks]
        return blocks
