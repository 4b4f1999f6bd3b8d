"""SparseLU: SuperLU's factors held in our arrays, solved by compiled kernels.

Oracles: a dense solve of the same matrix (NumPy), and SciPy's own SuperLU solve.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from diffqcp_np.derivative._sparse_lu import SparseLU


def pivoting_matrix(size: int, seed: int) -> sp.csc_matrix:
    """Sparse, unsymmetric and nonsingular, with zeros on the diagonal in places: LU needs
    row pivoting (a random row permutation of a matrix with a dominant diagonal)."""
    rng = np.random.default_rng(seed)
    M = sp.random(size, size, density=0.05, random_state=rng, data_rvs=rng.standard_normal)
    M = M + sp.diags(3.0 + rng.random(size))
    return sp.csc_matrix(M[rng.permutation(size)])


@pytest.mark.parametrize("size, seed", [(1, 0), (7, 1), (60, 2), (300, 3)])
@pytest.mark.parametrize("trans", ["N", "T"])
@pytest.mark.parametrize("permc_spec", ["COLAMD", "NATURAL"])
def test_solves_match_a_dense_solve_and_superlu(size, seed, trans, permc_spec):
    K = pivoting_matrix(size, seed)
    dense = K.toarray()
    b = np.random.default_rng(seed).standard_normal(size)
    z = SparseLU(K, permc_spec).solve(b, trans)
    want = np.linalg.solve(dense.T if trans == "T" else dense, b)
    scale = np.linalg.cond(dense) * np.linalg.norm(want)
    assert np.linalg.norm(z - want) <= 1e-14 * scale
    superlu = spla.splu(K, permc_spec=permc_spec).solve(b, trans=trans)
    assert np.linalg.norm(z - superlu) <= 1e-14 * scale


def test_pivots_are_the_diagonal_of_u():
    K = pivoting_matrix(60, 4)
    assert np.array_equal(SparseLU(K).pivots, spla.splu(K).U.diagonal())


def test_singular_matrix_raises_superlus_error():
    with pytest.raises(RuntimeError, match="singular"):
        SparseLU(sp.csc_matrix((np.ones(1), ([0], [0])), shape=(2, 2)))


def test_inputs_are_not_modified():
    K = pivoting_matrix(30, 5)
    copy = K.copy()
    b = np.ones(30)
    SparseLU(K).solve(b)
    assert (K != copy).nnz == 0 and np.array_equal(b, np.ones(30))
