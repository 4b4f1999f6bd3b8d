"""LDLᵀ without pivoting of a dense symmetric quasi-definite block, blocked for BLAS.

The trailing block of L that fills completely (the Schur complement of large SOC or
PSD blocks, of a dense P, of many equality rows) holds most of the factorisation's work
on such problems. Factored column by column with indexed loops it runs at a fraction of
the machine's speed; here each panel of ``BLOCK`` columns is factored by a small
compiled kernel and the trailing update is one matrix product (BLAS level 3).
Quasi-definite matrices need no pivoting in any symmetric ordering, so the sparse
kernel's ordering is kept.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.linalg import lapack

#: Columns per panel.
BLOCK = 128


@numba.njit(nogil=True, cache=True)
def _panel_ldl(A, d):
    """Unblocked LDLᵀ of the square ``A`` in place (its lower triangle; the strictly
    lower part becomes the unit lower factor), pivots into ``d``. Returns whether every
    pivot was nonzero."""
    size = A.shape[0]
    work = np.empty(size)
    for j in range(size):
        for k in range(j):
            work[k] = A[j, k] * d[k]
        pivot = A[j, j]
        for k in range(j):
            pivot -= work[k] * A[j, k]
        if pivot == 0.0:
            return False
        d[j] = pivot
        for i in range(j + 1, size):
            acc = A[i, j]
            for k in range(j):
                acc -= A[i, k] * work[k]
            A[i, j] = acc / pivot
    return True


@numba.njit(nogil=True, cache=True)
def cholesky_in_place(L, floor):
    """Cholesky factor ``L`` (``A = L L'``) of the symmetric ``A`` whose lower triangle
    ``L`` holds, in place (unblocked, for small matrices). Returns False, stopping there,
    at the first pivot ``d_j`` (before its square root) not above ``floor``."""
    n = L.shape[0]
    for j in range(n):
        d = L[j, j]
        for k in range(j):
            d -= L[j, k] * L[j, k]
        if not d > floor:
            return False
        d = np.sqrt(d)
        L[j, j] = d
        for i in range(j + 1, n):
            acc = L[i, j]
            for k in range(j):
                acc -= L[i, k] * L[j, k]
            L[i, j] = acc / d
    return True


def dense_ldl(S: np.ndarray) -> tuple[np.ndarray, bool]:
    """LDLᵀ of the symmetric ``S`` (lower triangle read) in place.

    Parameters
    ----------
    S : ndarray (t, t), C-contiguous
        On return its strictly lower triangle holds the unit lower factor L; the upper
        triangle is left as scratch.

    Returns
    -------
    d : ndarray (t,)
        The pivots (D of the factorisation).
    ok : bool
        False if a pivot was exactly zero (the factorisation stops there).
    """
    size = S.shape[0]
    d = np.empty(size)
    for start in range(0, size, BLOCK):
        stop = min(start + BLOCK, size)
        panel = np.ascontiguousarray(S[start:stop, start:stop])
        if not _panel_ldl(panel, d[start:stop]):
            return d, False
        S[start:stop, start:stop] = panel
        if stop == size:
            break
        # L₂₁ D₁ = S₂₁ L₁₁⁻ᵀ (dtrtri leaves the other triangle and the diagonal as they
        # were: scratch and the pivots' original entries).
        inverse = np.tril(lapack.dtrtri(panel, lower=1, unitdiag=1)[0], -1)
        np.fill_diagonal(inverse, 1.0)
        scaled = S[stop:, start:stop] @ inverse.T
        below = scaled / d[start:stop]
        S[stop:, start:stop] = below
        # S₂₂ −= L₂₁ D₁ L₂₁ᵀ on the lower triangle only, one block column at a time.
        for first in range(0, size - stop, BLOCK):
            last = min(first + BLOCK, size - stop)
            S[stop + first:, stop + first:stop + last] -= scaled[first:] @ below[first:last].T
    return d, True
