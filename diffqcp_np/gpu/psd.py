"""PSD cones on an array namespace ``xp``: projection and dense Jacobian blocks from
batched ``eigh`` (``cupy.linalg.eigh`` on a GPU, LAPACK on NumPy).

The same formulas as :mod:`diffqcp_np.cones.psd` (SCS's scaled lower-triangle
vectorisation; the Jacobian ``dX ↦ Q (B ∘ (Q' dX Q)) Q'``), written with gathers only
(``xp.take``), so that they run on any array-API namespace. Blocks of one side are
handled together, for every problem of a batch at once.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from ..backend import array_module

#: Eigenvalues with ``|λ| <= _ZERO_TOL · k · max|λ|`` count as zeros (as on the CPU).
_ZERO_TOL = float(8.0 * np.finfo(np.float64).eps)


@functools.lru_cache(maxsize=64)
def vec_maps(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host maps of side ``k``: for each vec entry its flat position ``i·k + j`` in the
    matrix (``i >= j``) and its scale (√2 off the diagonal), and for each of the ``k²``
    matrix entries the vec entry holding it."""
    cols, rows = np.triu_indices(k)  # vec order: column by column of the lower triangle
    flat = rows * k + cols
    scale = np.where(rows == cols, 1.0, np.sqrt(2.0))
    entry = np.empty(k * k, np.int64)
    entry[flat] = np.arange(flat.size)
    entry[cols * k + rows] = np.arange(flat.size)
    for arr in (flat, scale, entry):
        arr.setflags(write=False)
    return flat, scale, entry


def unvec(x: Any, k: int, xp: Any) -> Any:
    """Symmetric matrices ``(..., k, k)`` from vecs ``(..., k(k+1)/2)``."""
    _, scale, entry = vec_maps(k)
    entries = x / xp.asarray(scale)
    out = xp.take(xp.reshape(entries, (-1, entries.shape[-1])), xp.asarray(entry), axis=1)
    return xp.reshape(out, tuple(x.shape[:-1]) + (k, k))


def vec(X: Any, xp: Any) -> Any:
    """vecs ``(..., k(k+1)/2)`` of matrices ``(..., k, k)`` (lower triangles read)."""
    k = X.shape[-1]
    flat, scale, _ = vec_maps(k)
    out = xp.take(xp.reshape(X, (-1, k * k)), xp.asarray(flat), axis=1) * xp.asarray(scale)
    return xp.reshape(out, tuple(X.shape[:-2]) + (flat.size,))


def project(x: Any, k: int, xp: Any = None) -> Any:
    """Projections of vecs ``(n, k(k+1)/2)`` onto the PSD cone of side ``k`` (``xp``: the
    arrays' namespace by default)."""
    xp = array_module(x) if xp is None else xp
    lam, Q = xp.linalg.eigh(unvec(x, k, xp))
    positive = xp.where(lam > 0.0, lam, 0.0)
    return vec((Q * positive[:, None, :]) @ xp.matrix_transpose(Q), xp)


def jacobian_weights(lam: Any, xp: Any) -> Any:
    """``B_ij = (λᵢ⁺ + λⱼ⁺) / (|λᵢ| + |λⱼ|)`` (0/0 = 1) for eigenvalues ``(n, k)``, after
    eigenvalues at the rounding level of their block are set to zero."""
    k = lam.shape[-1]
    mag = xp.abs(lam)
    tol = _ZERO_TOL * k * xp.max(mag, axis=-1, keepdims=True)
    lam = xp.where(mag <= tol, 0.0, lam)
    mag = xp.abs(lam)
    pos = xp.where(lam > 0.0, lam, 0.0)
    num = pos[:, :, None] + pos[:, None, :]
    den = mag[:, :, None] + mag[:, None, :]
    zero = den == 0.0
    return xp.where(zero, 1.0, num / xp.where(zero, 1.0, den))


def dense_jacobians(x: Any, k: int, xp: Any = None,
                    spectral_maps: Callable[[Any], tuple[Any, ...]] | None = None) -> list[Any]:
    """Dense Jacobians ``(n, s, s)`` (``s = k(k+1)/2``, vec coordinates, symmetric) of
    the projections at vecs ``x`` (``(n, s)``), then one stack per array that
    ``spectral_maps(B)`` returns, a function ``f`` applied elementwise to the weights
    ``B``: the matrix functions ``f(J)``.

    Column ``q`` of ``J`` is ``vec(Q (B ∘ (Q' E_q Q)) Q')`` for the unit vec ``e_q``;
    ``Q' E_q Q`` is a sum of two outer products of rows of ``Q``.
    """
    xp = array_module(x) if xp is None else xp
    lam, Q = xp.linalg.eigh(unvec(x, k, xp))
    B = jacobian_weights(lam, xp)
    flat, scale, _ = vec_maps(k)
    rows, cols = flat // k, flat % k
    factor = xp.asarray(np.where(rows == cols, 0.5, 1.0 / np.sqrt(2.0)))
    Qi = xp.take(Q, xp.asarray(rows), axis=1) * factor[None, :, None]  # (n, s, k)
    Qj = xp.take(Q, xp.asarray(cols), axis=1)
    half = Qi[:, :, :, None] * Qj[:, :, None, :]  # (n, s, k, k)
    inner = half + xp.matrix_transpose(half)
    Qt = xp.matrix_transpose(Q)
    out = []
    for weights in (B, *(spectral_maps(B) if spectral_maps is not None else ())):
        Y = (Q[:, None, ...] @ (weights[:, None, ...] * inner)) @ Qt[:, None, ...]
        columns = vec(Y, xp)  # row q: vec of J e_q, i.e. column q of the symmetric J
        out.append(0.5 * (columns + xp.matrix_transpose(columns)))
    return out
