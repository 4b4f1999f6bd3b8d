"""The Numba AMD ordering: valid permutations, fill close to SuiteSparse AMD's (read back
from QDLDL), dense rows last, input handling."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import qdldl
import scipy.sparse as sp

from diffqcp_np.derivative._amd_numba import _amd_order, _index_array, amd_order
from diffqcp_np.derivative._ldl import LDLSymbolic

# ---------------------------------------------------------------------------------------
# Corpus: canonical upper triangles (diagonal stored unless said otherwise).


def _upper(M: sp.spmatrix) -> sp.csc_matrix:
    """Canonical upper triangle of the pattern of ``M + M'`` plus the diagonal."""
    M = sp.csc_matrix(M, dtype=float)
    S = abs(M) + abs(M.T) + sp.identity(M.shape[0])
    upper = sp.triu(S, format="csc")
    upper.sum_duplicates()
    upper.sort_indices()
    upper.data[:] = 1.0
    return upper


def _kkt(N: int, seed: int = 0, dense_column: bool = False) -> sp.csc_matrix:
    """KKT-like ``[[P, A'], [A, −I]]`` of a random sparse QP of order about ``N``: ``P``
    with about 5 entries per column plus the diagonal, ``A`` (a subset of the rows)
    with about 2 per column; optionally a column coupled to every other one."""
    rng = np.random.default_rng(seed)
    n = max(1, round(0.6 * N))
    m = max(1, N - n)
    F = sp.random(n, n, density=min(1.0, 2.5 / n), random_state=rng)
    A = sp.random(m, n, density=min(1.0, 2.0 / m), random_state=rng)
    M = sp.bmat([[F + F.T, A.T], [A, sp.identity(m)]], format="csc")
    if dense_column:
        M = M.tolil()
        M[:, N // 3] = 1.0
        M = M.tocsc()
    return _upper(M)


def _banded_qp_kkt(n: int, seed: int = 0) -> sp.csc_matrix:
    """Reduced system of a banded QP: ``P = B'B`` (3 bands), ``n/2`` general rows with 5
    bands and box rows on a random half of the variables (the library's suite QP)."""
    rng = np.random.default_rng(seed)
    B = sp.diags([np.ones(n - k) for k in range(3)], range(3))
    G = sp.diags([np.ones(n // 2) for _ in range(5)], range(5), shape=(n // 2, n))
    box = sp.identity(n, format="csr")[np.flatnonzero(rng.random(n) < 0.5)]
    A = sp.vstack([G, box])
    return _upper(sp.bmat([[B.T @ B, A.T], [A, sp.identity(A.shape[0])]]))


def _grid(k: int) -> sp.csc_matrix:
    """5-point Laplacian on a ``k × k`` grid."""
    T = sp.diags([np.ones(k - 1), np.ones(k - 1)], [-1, 1])
    return _upper(sp.kron(T, sp.identity(k)) + sp.kron(sp.identity(k), T))


def _arrow(n: int, dense: list[int], seed: int = 0, extra: float = 0.0) -> sp.csc_matrix:
    """Diagonal plus full rows/columns ``dense`` plus random entries (``extra`` per row)."""
    rng = np.random.default_rng(seed)
    M = sp.random(n, n, density=extra / n, random_state=rng).tolil()
    for d in dense:
        M[d, :] = 1.0
    return _upper(M)


def _random(n: int, density: float, seed: int) -> sp.csc_matrix:
    return _upper(sp.random(n, n, density=density, random_state=np.random.default_rng(seed)))


def _blocks(seed: int) -> sp.csc_matrix:
    """Disconnected random blocks (and isolated nodes)."""
    rng = np.random.default_rng(seed)
    blocks = [sp.random(b, b, density=0.3, random_state=rng) for b in (1, 7, 30, 1, 55, 12)]
    return _upper(sp.block_diag(blocks))


CORPUS = {
    "kkt10": lambda: _kkt(10),
    "kkt100": lambda: _kkt(100, seed=1),
    "kkt1500": lambda: _kkt(1500, seed=2),
    "kkt3000": lambda: _kkt(3000, seed=3),
    "banded_qp_kkt15000": lambda: _banded_qp_kkt(7500),
    "kkt_dense_column": lambda: _kkt(1500, seed=4, dense_column=True),
    "grid30": lambda: _grid(30),
    "grid60": lambda: _grid(60),
    "grid100": lambda: _grid(100),
    "arrow": lambda: _arrow(300, [0]),
    "arrow3": lambda: _arrow(400, [5, 50, 123], extra=2.0),
    "random_sparse": lambda: _random(300, 0.01, 5),
    "random_medium": lambda: _random(200, 0.05, 6),
    "random_dense": lambda: _random(60, 0.5, 7),
    "full": lambda: _upper(np.ones((12, 12))),
    "diagonal": lambda: _upper(sp.csc_matrix((50, 50))),
    "blocks": lambda: _blocks(8),
    "single": lambda: _upper(sp.csc_matrix((1, 1))),
}

@functools.cache
def _matrix(name: str) -> sp.csc_matrix:
    return CORPUS[name]()


def _order(upper: sp.csc_matrix, **kwargs) -> np.ndarray:
    return amd_order(upper.shape[0], upper.indptr, upper.indices, **kwargs)


def _nnz_L(upper: sp.csc_matrix, perm: np.ndarray) -> int:
    return int(LDLSymbolic.analyse(upper, perm).counts.sum())


def _suitesparse_amd(upper: sp.csc_matrix) -> np.ndarray:
    """SuiteSparse AMD's ordering, read back from QDLDL's factorisation of a diagonally
    dominant matrix with ``upper``'s pattern."""
    n = upper.shape[0]
    values = sp.triu(upper, 1, format="csc")
    values.data[:] = 1.0
    dominant = values + (n + 1.0) * sp.identity(n, format="csc")
    return np.asarray(qdldl.Solver(sp.csc_matrix(dominant), upper=True).factors()[2])


def _assert_permutation(perm: np.ndarray, n: int) -> None:
    assert perm.dtype == np.int64
    assert perm.shape == (n,)
    np.testing.assert_array_equal(np.sort(perm), np.arange(n))


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_ordering_is_a_permutation(name):
    upper = _matrix(name)
    _assert_permutation(_order(upper), upper.shape[0])
    _assert_permutation(_order(upper, aggressive=False), upper.shape[0])
    _assert_permutation(_order(upper, dense_factor=-1.0), upper.shape[0])


@pytest.mark.parametrize("name", sorted(set(CORPUS) - {"single"}))
def test_fill_within_ten_percent_of_suitesparse_amd(name):
    upper = _matrix(name)
    ours = _nnz_L(upper, _order(upper))
    reference = _nnz_L(upper, _suitesparse_amd(upper))
    assert ours <= 1.10 * reference, (ours, reference)


@pytest.mark.parametrize("name", ["kkt1500", "grid30", "arrow3", "random_medium"])
def test_fill_without_aggressive_absorption_close_too(name):
    upper = _matrix(name)
    ours = _nnz_L(upper, _order(upper, aggressive=False))
    assert ours <= 1.10 * _nnz_L(upper, _suitesparse_amd(upper))


@pytest.mark.parametrize("k, most", [(30, 0.5), (60, 0.3), (100, 0.25)])
def test_grid_fill_much_lower_than_in_the_natural_order(k, most):
    upper = _matrix(f"grid{k}")
    natural = _nnz_L(upper, np.arange(upper.shape[0]))
    assert _nnz_L(upper, _order(upper)) < most * natural


def test_dense_rows_come_last():
    upper = _matrix("arrow3")
    assert set(_order(upper)[-3:]) == {5, 50, 123}
    upper = _matrix("kkt_dense_column")
    assert _order(upper)[-1] == 1500 // 3


def test_dense_threshold_follows_dense_factor():
    # A hub joined to 150 leaves, beside a 15 × 15 grid (n = 376). With the threshold
    # max(16, f √n) below 150 (f = 5: 97) the hub is dense and goes last; above it
    # (f = 10: 194) or without dense rows (f < 0) the hub is eliminated with its leaves,
    # long before the grid.
    hub = 150
    star = sp.lil_matrix((hub + 1, hub + 1))
    star[hub, :hub] = 1.0
    upper = _upper(sp.block_diag([star, _grid(15)]))
    assert _order(upper, dense_factor=5.0)[-1] == hub
    for factor in (10.0, -1.0):
        assert np.flatnonzero(_order(upper, dense_factor=factor) == hub)[0] < hub + 1


@pytest.mark.parametrize("name", ["kkt1500", "banded_qp_kkt15000", "grid60", "arrow3"])
def test_int32_and_int64_inputs_give_the_same_ordering(name):
    upper = _matrix(name)
    n = upper.shape[0]
    small = amd_order(n, upper.indptr.astype(np.int32), upper.indices.astype(np.int32))
    large = amd_order(n, upper.indptr.astype(np.int64), upper.indices.astype(np.int64))
    np.testing.assert_array_equal(small, large)
    other = amd_order(n, upper.indptr.astype(np.int64), upper.indices.astype(np.int16))
    np.testing.assert_array_equal(small, other)


def test_index_arrays_are_not_copied_and_not_modified():
    upper = _matrix("kkt1500")
    for dtype in (np.int32, np.int64):
        indptr = upper.indptr.astype(dtype)
        indices = upper.indices.astype(dtype)
        assert _index_array(indptr) is indptr
        assert _index_array(indices) is indices
        keep = indptr.copy(), indices.copy()
        amd_order(upper.shape[0], indptr, indices)
        np.testing.assert_array_equal(indptr, keep[0])
        np.testing.assert_array_equal(indices, keep[1])


@pytest.mark.parametrize("name", ["kkt100", "kkt1500", "grid30", "random_medium", "arrow3"])
def test_stored_diagonal_does_not_change_the_ordering(name):
    upper = _matrix(name)
    bare = sp.triu(upper, 1, format="csc")
    bare.sort_indices()
    assert bare.nnz < upper.nnz
    np.testing.assert_array_equal(_order(bare), _order(upper))


def test_entries_below_the_diagonal_are_ignored():
    upper = _matrix("grid30")
    full = (upper + sp.triu(upper, 1).T).tocsc()
    full.sort_indices()
    assert full.nnz > upper.nnz
    np.testing.assert_array_equal(_order(full), _order(upper))


@pytest.mark.parametrize("name", ["kkt100", "kkt1500", "grid30", "arrow3", "random_dense"])
@pytest.mark.parametrize("room", [0, 8])
def test_compaction_and_growth_do_not_change_the_ordering(name, room):
    # No free room after the lists: the first element built from other elements
    # compacts the workspace (and grows it when compaction frees too little); 8 free
    # entries: compaction after compaction. Neither may change the ordering.
    upper = _matrix(name)
    n = upper.shape[0]
    for aggressive in (True, False):
        want = amd_order(n, upper.indptr, upper.indices, aggressive=aggressive)
        got = _amd_order(n, upper.indptr, upper.indices, 10.0, aggressive, room)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["kkt1500", "grid30", "arrow3", "blocks", "banded_qp_kkt15000"])
def test_elimination_tree_is_postordered(name):
    # Without aggressive absorption the assembly tree is the (supernodal) elimination
    # tree, so its post-order leaves every subtree of the etree numbered contiguously,
    # each node right after its descendants.
    upper = _matrix(name)
    parent = LDLSymbolic.analyse(upper, _order(upper, aggressive=False)).parent
    n = parent.size
    size = np.ones(n, dtype=np.int64)
    first = np.arange(n)
    for k in range(n):
        if parent[k] != -1:
            size[parent[k]] += size[k]
            first[parent[k]] = min(first[parent[k]], first[k])
    np.testing.assert_array_equal(first, np.arange(n) - size + 1)


def test_small_and_degenerate_matrices():
    empty = amd_order(0, np.zeros(1, dtype=np.int32), np.zeros(0, dtype=np.int32))
    assert empty.dtype == np.int64 and empty.shape == (0,)
    np.testing.assert_array_equal(amd_order(1, np.array([0, 0]), np.array([], dtype=int)), [0])
    np.testing.assert_array_equal(amd_order(1, np.array([0, 1]), np.array([0])), [0])
    # fill is the same in every order here: these check that the orderings are valid
    full = _matrix("full")
    _assert_permutation(_order(full), 12)
    assert _nnz_L(full, _order(full)) == 12 * 11 // 2
    diagonal = _matrix("diagonal")
    _assert_permutation(_order(diagonal), 50)
    assert _nnz_L(diagonal, _order(diagonal)) == 0
    # Only dense rows: every row of a 20 × 20 full matrix is dense for dense_factor 0.
    full20 = _upper(np.ones((20, 20)))
    _assert_permutation(_order(full20, dense_factor=0.0), 20)


def test_invalid_patterns_are_rejected():
    with pytest.raises(ValueError, match="indptr"):
        amd_order(3, np.array([0, 1, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="out of range"):
        amd_order(2, np.array([0, 1, 2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="out of range"):
        amd_order(2, np.array([0, 0, 1]), np.array([-1]))
    with pytest.raises(ValueError, match="indptr"):
        amd_order(2, np.array([0, 2, 1]), np.array([0, 1]))
    with pytest.raises(ValueError):
        amd_order(-1, np.array([0]), np.array([]))
