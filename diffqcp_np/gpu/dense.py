"""Many small dense systems of one size at once, on an array namespace ``xp``: LDLᵀ
without pivoting (for the quasi-definite, regularised M) and its solves.

Every step is a vector operation over the whole batch (``(B, N, N)`` matrices, ``(B, N)``
right-hand sides); the loops run over the ``N`` columns, never over the problems, and
nothing is read back to the host.
"""

from __future__ import annotations

from typing import Any

from ..backend import array_module


def ldlt(K: Any, xp: Any = None) -> tuple[Any, Any]:
    """``K = L diag(d) L'`` for each matrix of a stack ``(B, N, N)`` (lower triangles
    read), ``L`` unit lower triangular: Cholesky's recurrence without pivoting, which
    exists for quasi-definite matrices (and any whose leading minors are nonzero).

    Returns
    -------
    L : array, shape (B, N, N)
    d : array, shape (B, N)
        The pivots; for a quasi-definite M the first n are positive, the others negative.
    """
    xp = array_module(K) if xp is None else xp
    batch, size = K.shape[0], K.shape[-1]
    L = xp.zeros_like(K)
    d = xp.zeros((batch, size), dtype=K.dtype)
    for k in range(size):
        lk = L[:, k, :k]
        dk = K[:, k, k] - xp.sum(lk * lk * d[:, :k], axis=1)
        d[:, k] = dk
        L[:, k, k] = 1.0
        if k + 1 < size:
            w = (lk * d[:, :k])[:, :, None]
            column = K[:, k + 1:, k] - (L[:, k + 1:, :k] @ w)[:, :, 0]
            L[:, k + 1:, k] = column / dk[:, None]
    return L, d


def ldlt_solve(L: Any, d: Any, rhs: Any, xp: Any = None) -> Any:
    """``K⁻¹ rhs`` per problem from :func:`ldlt`'s factors (``rhs``: ``(B, N)``)."""
    xp = array_module(rhs) if xp is None else xp
    batch, size = rhs.shape
    y = xp.zeros((batch, size), dtype=rhs.dtype)
    for k in range(size):  # L y = rhs
        y[:, k] = rhs[:, k] - xp.sum(L[:, k, :k] * y[:, :k], axis=1)
    y = y / d
    x = xp.zeros((batch, size), dtype=rhs.dtype)
    for k in range(size - 1, -1, -1):  # L' x = y
        x[:, k] = y[:, k] - xp.sum(L[:, k + 1:, k] * x[:, k + 1:], axis=1)
    return x


def matvec(K: Any, z: Any, transpose: bool = False) -> Any:
    """``K z`` (or ``K' z``) per problem: ``(B, N, N)`` times ``(B, N)``."""
    if transpose:
        return (z[:, None, :] @ K)[:, 0, :]
    return (K @ z[:, :, None])[:, :, 0]
