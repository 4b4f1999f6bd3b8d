"""Sparse LU with partial pivoting whose factors are ours: SuperLU factors, compiled
solves.

SciPy's SuperLU object records its memory in a table of the thread that made it; freed
on any other thread (a factor made on a batch's worker thread and dropped in the caller,
or collected after that thread ended) it frees nothing, and its whole factor leaks
(SciPy 1.17.1: about 790 KB per factor of a 300×300 matrix with 65 000 entries in L and U,
made on one thread and freed on another; nothing when made and freed on one thread;
scipy/scipy#15921; ``perm_r`` and ``perm_c`` are views that keep the object alive, so
holding one is enough). :class:`SparseLU` therefore calls ``splu``, copies L, U and the
two permutations into NumPy arrays and drops the SuperLU object before it returns, on the
thread that made it; its solves are Numba kernels on those arrays (they release the GIL).
The factorisation, pivoting and ordering are SuperLU's: the answers agree with
``SuperLU.solve`` to rounding.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .._sparse import UNSIGNED_INDEX as _U
from .._sparse import unit_transpose_solve


@numba.njit(nogil=True, cache=True)
def _off_diagonal(indptr, indices, data):
    """The CSC arrays of a triangular factor without its diagonal, and the diagonal."""
    n = indptr.shape[0] - 1
    count = 0
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            if indices[p] != j:
                count += 1
    Sp = np.zeros(n + 1, dtype=np.int64)
    Si = np.empty(count, dtype=np.int32)
    Sx = np.empty(count)
    diagonal = np.zeros(n)
    q = 0
    for j in range(n):
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            if i == j:
                diagonal[j] = data[p]
            else:
                Si[q] = i
                Sx[q] = data[p]
                q += 1
        Sp[j + 1] = q
    return Sp, Si, Sx, diagonal


@numba.njit(nogil=True, cache=True)
def _solve(Lp, Li, Lx, Up, Ui, Ux, pivots, perm_r, perm_c, b):
    """``x`` with ``A x = b`` where ``Pr A Pc = L U`` (SciPy's convention: row ``i`` of A is
    row ``perm_r[i]`` of ``Pr A``, column ``perm_c[j]`` of A is column ``j`` of ``A Pc``);
    L unit lower and U upper triangular without their diagonals, U's in ``pivots``."""
    n = b.shape[0]
    x = np.empty(n)
    for i in range(n):
        x[_U(perm_r[i])] = b[i]
    for j in range(n):  # L y = Pr b, by columns
        xj = x[j]
        if xj != 0.0:
            for p in range(_U(Lp[j]), _U(Lp[j + 1])):
                x[_U(Li[p])] -= Lx[p] * xj
    for j in range(n - 1, -1, -1):  # U z = y, by columns
        xj = x[j] / pivots[j]
        x[j] = xj
        if xj != 0.0:
            for p in range(_U(Up[j]), _U(Up[j + 1])):
                x[_U(Ui[p])] -= Ux[p] * xj
    out = np.empty(n)
    for i in range(n):
        out[i] = x[_U(perm_c[i])]
    return out


@numba.njit(nogil=True, cache=True)
def _solve_transpose(Lp, Li, Lx, Up, Ui, Ux, pivots, perm_r, perm_c, b):
    """``x`` with ``A' x = b`` from the factors of :func:`_solve`."""
    n = b.shape[0]
    x = np.empty(n)
    for i in range(n):
        x[_U(perm_c[i])] = b[i]
    for j in range(n):  # U' y = Pc' b: column j of U is row j of U'
        total = x[j]
        for p in range(_U(Up[j]), _U(Up[j + 1])):
            total -= Ux[p] * x[_U(Ui[p])]
        x[j] = total / pivots[j]
    unit_transpose_solve(Lp, Li, Lx, x, n)  # L' z = y
    out = np.empty(n)
    for i in range(n):
        out[i] = x[_U(perm_r[i])]
    return out


class SparseLU:
    """LU factors of a square sparse matrix (SuperLU's), held in NumPy arrays.

    Parameters
    ----------
    K : scipy sparse matrix
    permc_spec : str, default "COLAMD"
        SuperLU's column ordering.

    Raises
    ------
    RuntimeError
        SuperLU's, when the matrix is exactly singular.
    """

    def __init__(self, K: sp.spmatrix, permc_spec: str = "COLAMD") -> None:
        lu = spla.splu(sp.csc_matrix(K), permc_spec=permc_spec)
        L, U = lu.L, lu.U
        self._L = _off_diagonal(L.indptr, L.indices, L.data)[:3]
        *self._U, self.pivots = _off_diagonal(U.indptr, U.indices, U.data)
        # copies: SciPy's perm_r and perm_c are views that keep the SuperLU object alive
        self._perm_r, self._perm_c = lu.perm_r.copy(), lu.perm_c.copy()
        del lu, L, U  # the SuperLU object dies here, on the thread that made it

    def solve(self, b: np.ndarray, trans: str = "N") -> np.ndarray:
        """``K⁻¹ b`` (``trans="N"``) or ``K'⁻¹ b`` (``trans="T"``), as ``SuperLU.solve``."""
        kernel = _solve_transpose if trans == "T" else _solve
        return kernel(*self._L, *self._U, self.pivots, self._perm_r, self._perm_c,
                      np.ascontiguousarray(b, dtype=np.float64))
