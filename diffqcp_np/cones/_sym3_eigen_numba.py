"""Eigen-decompositions of stacked symmetric 3×3 matrices, compiled.

The exponential and power cones' Jacobians are 3×3 blocks; the reduced derivative
system needs matrix functions of each (``E = D(I − D) + Π₀`` and the null projector
``Π₀``, see :mod:`..reduced`). ``np.linalg.eigh`` on a ``(k, 3, 3)`` stack calls
LAPACK once per matrix; cyclic Jacobi rotations in one compiled loop cost less and are
as accurate (backward stable, eigenvalues
to a few ulps of the matrix norm).
"""

from __future__ import annotations

import numba
import numpy as np

#: Jacobi sweeps at most (three rotations each; 3×3 blocks converge in four or five).
_MAX_SWEEPS = 30


@numba.njit(nogil=True, cache=True)
def _jacobi_eigh(A, V):
    """Diagonalise the symmetric 3×3 ``A`` in place by cyclic Jacobi rotations,
    accumulating them into ``V`` (set to the identity first): afterwards
    ``A_in = V diag(A) V'``."""
    for i in range(3):
        for j in range(3):
            V[i, j] = 1.0 if i == j else 0.0
    scale = 0.0  # max |A_ij| (not a sum of squares, which overflows from 1e154 on)
    for i in range(3):
        for j in range(3):
            scale = max(scale, abs(A[i, j]))
    for _ in range(_MAX_SWEEPS):
        off = max(abs(A[0, 1]), abs(A[0, 2]), abs(A[1, 2]))
        if off <= 1e-18 * scale:  # also for the zero matrix
            return
        for p in range(2):
            for q in range(p + 1, 3):
                apq = A[p, q]
                if apq == 0.0:
                    continue
                theta = (A[q, q] - A[p, p]) / (2.0 * apq)
                if abs(theta) > 1e150:  # θ² would overflow: t ≈ 1/(2θ)
                    t = 0.5 / theta
                else:
                    t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                    if theta < 0.0:
                        t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for k in range(3):  # A ← A J
                    akp, akq = A[k, p], A[k, q]
                    A[k, p] = c * akp - s * akq
                    A[k, q] = s * akp + c * akq
                for k in range(3):  # A ← J' A
                    apk, aqk = A[p, k], A[q, k]
                    A[p, k] = c * apk - s * aqk
                    A[q, k] = s * apk + c * aqk
                A[p, q] = A[q, p] = 0.0
                for k in range(3):  # V ← V J
                    vkp, vkq = V[k, p], V[k, q]
                    V[k, p] = c * vkp - s * vkq
                    V[k, q] = s * vkp + c * vkq


@numba.njit(nogil=True, cache=True)
def eigh_3x3(blocks):
    """Eigenvalues ``(k, 3)`` and eigenvectors ``(k, 3, 3)`` (columns) of the symmetric
    blocks of a ``(k, 3, 3)`` stack (only the upper triangle is read), unsorted."""
    k = blocks.shape[0]
    lam = np.empty((k, 3))
    vectors = np.empty((k, 3, 3))
    A = np.empty((3, 3))
    for b in range(k):
        for i in range(3):
            for j in range(i, 3):
                A[i, j] = A[j, i] = blocks[b, i, j]
        _jacobi_eigh(A, vectors[b])
        for i in range(3):
            lam[b, i] = A[i, i]
    return lam, vectors
