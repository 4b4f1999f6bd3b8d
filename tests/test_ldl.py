"""The LDLᵀ with reusable symbolic analysis, against dense solves and QDLDL itself."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import qdldl
import scipy.sparse as sp

from diffqcp_np._sparse import CSCArrays
from diffqcp_np.derivative import _ldl
from diffqcp_np.derivative._ldl import (
    LDLFactor,
    LDLSymbolic,
    SymbolicCache,
    ZeroPivotError,
    factorize,
)
from diffqcp_np.derivative._reduced_numba import symmetric_residual, symmetric_upper_matvec


def _quasi_definite(n: int, k: int, seed: int, density: float = 0.15) -> sp.csc_matrix:
    """``[[H, B'], [B, −G]]`` with H, G positive definite: quasi-definite, so LDLᵀ exists
    in every symmetric ordering. Returned as the canonical upper triangle."""
    rng = np.random.default_rng(seed)
    F = sp.random(n, n, density=density, random_state=rng)
    H = F @ F.T + sp.identity(n)
    B = sp.random(k, n, density=density, random_state=rng)
    G = sp.diags(rng.uniform(0.1, 1.0, k))
    M = sp.bmat([[H, B.T], [B, -G]], format="csc")
    upper = sp.triu(M, format="csc")
    upper.sort_indices()
    return upper


def _qdldl(upper: sp.csc_matrix) -> qdldl.Solver:
    """QDLDL's own factorisation (SuiteSparse AMD ordering, C kernels): the reference."""
    return qdldl.Solver(upper, upper=True)


def _qdldl_ordering(upper: sp.csc_matrix) -> np.ndarray:
    return np.asarray(_qdldl(upper).factors()[2], dtype=np.int64)


def _dense(upper: sp.csc_matrix) -> np.ndarray:
    U = upper.toarray()
    return U + np.triu(U, 1).T


@pytest.fixture(autouse=True)
def _fresh_cache():
    _ldl.SYMBOLIC_CACHE.clear()
    yield
    _ldl.SYMBOLIC_CACHE.clear()


@pytest.mark.parametrize("seed", range(3))
def test_numeric_factor_solves_like_a_dense_solve_in_any_ordering(seed):
    upper = _quasi_definite(40, 25, seed)
    size = upper.shape[0]
    b = np.random.default_rng(seed).standard_normal(size)
    want = np.linalg.solve(_dense(upper), b)
    for perm in (np.arange(size), np.random.default_rng(seed).permutation(size),
                 _qdldl_ordering(upper)):
        factor = LDLFactor(upper, LDLSymbolic.analyse(upper, perm))
        np.testing.assert_allclose(factor.solve(b), want, rtol=1e-10, atol=1e-12)


def test_numeric_factor_matches_qdldl_in_its_ordering():
    upper = _quasi_definite(300, 200, 7, density=0.02)
    reference = _qdldl(upper)
    factor = LDLFactor(upper, LDLSymbolic.analyse(upper, reference.factors()[2]))
    b = np.random.default_rng(0).standard_normal(upper.shape[0])
    np.testing.assert_allclose(factor.solve(b), reference.solve(b), rtol=1e-13, atol=1e-13)


def test_pattern_is_analysed_once_then_reused_with_new_values():
    upper = _quasi_definite(30, 20, 1)
    b = np.random.default_rng(1).standard_normal(upper.shape[0])
    first = factorize(upper)
    assert isinstance(first, LDLFactor)
    assert _ldl.SYMBOLIC_CACHE.lookup(upper) is first.symbolic
    rescaled = upper.copy()
    rescaled.data = rescaled.data * np.random.default_rng(2).uniform(0.5, 2.0, upper.nnz)
    rescaled.data[rescaled.indptr[1:] - 1] = upper.data[upper.indptr[1:] - 1] * 3.0
    for matrix in (upper, rescaled, rescaled):
        factor = factorize(matrix)
        assert factor.symbolic is first.symbolic  # the analysis is shared
        np.testing.assert_allclose(factor.solve(b), np.linalg.solve(_dense(matrix), b),
                                   rtol=1e-10, atol=1e-12)


def test_cache_tells_patterns_apart_and_forgets_the_oldest():
    cache = SymbolicCache(size=2)
    mats = [_quasi_definite(10 + i, 5, i) for i in range(3)]
    for mat in mats:
        cache.store(mat, LDLSymbolic.analyse(mat, np.arange(mat.shape[0])))
    assert cache.lookup(mats[0]) is None  # evicted
    assert cache.lookup(mats[2]).perm.size == mats[2].shape[0]
    other = mats[2].copy()
    other.indices = other.indices.copy()
    other.indices[0] += 1  # same sizes, different pattern
    assert cache.lookup(other) is None


def test_zero_pivot_raises():
    # [[0, 1], [1, 0]]: a zero pivot in any ordering.
    upper = sp.csc_matrix((np.array([0.0, 1.0, 0.0]), np.array([0, 0, 1]),
                           np.array([0, 1, 3])), shape=(2, 2))
    for perm in (np.arange(2), np.array([1, 0])):
        with pytest.raises(ZeroPivotError):
            LDLFactor(upper, LDLSymbolic.analyse(upper, perm))
    with pytest.raises(ZeroPivotError):
        factorize(upper)


def test_threads_factor_the_same_pattern_concurrently():
    upper = _quasi_definite(60, 40, 3)
    factorize(upper)  # analysed: the threads all take the reuse path
    rng = np.random.default_rng(4)
    matrices = []
    for _ in range(8):
        mat = upper.copy()
        mat.data = mat.data * rng.uniform(0.8, 1.2, mat.nnz)
        matrices.append(mat)
    b = rng.standard_normal(upper.shape[0])
    results = [None] * len(matrices)

    def work(i):
        results[i] = factorize(matrices[i]).solve(b)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(matrices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for mat, got in zip(matrices, results):
        np.testing.assert_allclose(got, np.linalg.solve(_dense(mat), b), rtol=1e-9, atol=1e-11)


def test_symmetric_upper_matvec_matches_the_dense_product():
    upper = _quasi_definite(25, 15, 5)
    z = np.random.default_rng(5).standard_normal(upper.shape[0])
    got = symmetric_upper_matvec(upper.indptr, upper.indices, upper.data, z)
    np.testing.assert_allclose(got, _dense(upper) @ z, rtol=1e-13, atol=1e-13)


def test_symmetric_residual_matches_the_dense_residual():
    upper = _quasi_definite(25, 15, 6)
    assert np.all(upper.indices[upper.indptr[1:] - 1] == np.arange(40))  # diagonal last
    rng = np.random.default_rng(6)
    z, r = rng.standard_normal(40), rng.standard_normal(40)
    residual, norm = symmetric_residual(upper.indptr, upper.indices, upper.data, z, r)
    want = r - _dense(upper) @ z
    np.testing.assert_allclose(residual, want, rtol=1e-13, atol=1e-13)
    assert norm == pytest.approx(np.linalg.norm(want), rel=1e-13)


def test_heavy_fill_is_factored_by_the_compiled_kernels_like_qdldl():
    """A dense 240×240 block (the fill of a large cone or a dense P): the compiled
    factorisation in QDLDL's ordering matches QDLDL's own solve, and ``factorize``
    (our ordering) a dense solve."""
    dense_block = _quasi_definite(240, 0, 9, density=1.0)
    b = np.random.default_rng(9).standard_normal(240)
    reference = _qdldl(dense_block)
    ours = LDLFactor(dense_block, LDLSymbolic.analyse(dense_block, reference.factors()[2]))
    np.testing.assert_allclose(ours.solve(b), reference.solve(b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(factorize(dense_block).solve(b),
                               np.linalg.solve(_dense(dense_block), b), rtol=1e-9, atol=1e-11)


def test_refined_solve_reaches_the_exact_matrix_from_a_regularised_factor():
    """The compiled refinement against the exact M agrees with the Python refinement and
    with a dense solve, starting from the factor of a visibly shifted M."""
    from diffqcp_np.derivative.norms import refine

    exact = _quasi_definite(50, 30, 11)
    shifted = exact.copy()
    diagonal = shifted.indptr[1:] - 1
    shifted.data[diagonal] += np.r_[np.ones(50), -np.ones(30)] * 1e-4
    factor = LDLFactor(shifted, LDLSymbolic.analyse(shifted, np.arange(80)))
    r = np.random.default_rng(11).standard_normal(80)
    want = np.linalg.solve(_dense(exact), r)
    assert np.linalg.norm(factor.solve(r) - want) > 1e-6 * np.linalg.norm(want)
    z, residual = factor.refined_solve(exact, r, 10, 1e-13)
    np.testing.assert_allclose(z, want, rtol=1e-11, atol=1e-12)
    assert residual < 1e-13

    def exact_product(v):
        return symmetric_upper_matvec(exact.indptr, exact.indices, exact.data, v)

    z_python, residual_python = refine(factor.solve, exact_product, r, 10, 1e-13)
    np.testing.assert_allclose(z, z_python, rtol=1e-14, atol=1e-14)
    assert residual == pytest.approx(residual_python, rel=1e-6)
    z_none, residual_none = factor.refined_solve(exact, r, 0, 1e-13)  # no steps allowed
    np.testing.assert_allclose(z_none, factor.solve(r))
    assert residual_none > 1e-8


def _symbolic_fill(upper: sp.csc_matrix, perm: np.ndarray) -> np.ndarray:
    """Boolean pattern of L for ``M[perm][:, perm]`` by naive dense symbolic elimination."""
    pattern = _dense(upper)[np.ix_(perm, perm)] != 0
    n = pattern.shape[0]
    for k in range(n):
        below = np.flatnonzero(pattern[k + 1:, k]) + k + 1
        pattern[np.ix_(below, below)] = True
    return np.tril(pattern, -1)


@pytest.mark.parametrize("seed", range(3))
def test_dense_trailing_block_is_found_and_factored_like_a_dense_solve(seed):
    """A sparse block coupled to many dense rows (equality constraints) fills a dense
    trailing block of L: ``dense_from`` is where naive symbolic elimination says the
    largest trailing block of at least ``DENSE_BLOCK_MIN`` columns fills to
    ``DENSE_BLOCK_DENSITY``; the factor (that block by dense LDLᵀ, its solves by
    contiguous loops) solves like a dense solve and like the all-sparse factor."""
    rng = np.random.default_rng(seed)
    n, k = 150, 80
    H = sp.diags(rng.uniform(1.0, 2.0, n)) + sp.random(n, n, density=0.01, random_state=rng)
    H = (H + H.T) / 2 + 2 * sp.identity(n)
    B = sp.random(k, n, density=0.3, random_state=rng)  # dense enough to fill the Schur block
    upper = sp.triu(sp.bmat([[H, B.T], [B, -sp.identity(k)]]), format="csc")
    upper.sort_indices()
    factor = factorize(upper)
    symbolic = factor.symbolic
    fill = _symbolic_fill(upper, symbolic.perm)
    size = n + k
    want_from = size
    for j in range(size - _ldl.DENSE_BLOCK_MIN, -1, -1):
        columns = size - j
        if fill[j:, j:].sum() >= _ldl.DENSE_BLOCK_DENSITY * columns * (columns - 1) / 2:
            want_from = j
    assert symbolic.dense_from == want_from
    assert symbolic.dense_from <= size - k  # at least the coupled rows
    np.testing.assert_array_equal(symbolic.counts, fill.sum(axis=0))
    b = rng.standard_normal(size)
    np.testing.assert_allclose(factor.solve(b), np.linalg.solve(_dense(upper), b),
                               rtol=1e-11, atol=1e-12)
    sparse_only = LDLSymbolic(*(getattr(symbolic, f) for f in
                                ("perm", "Cp", "Ci", "position", "parent", "counts")),
                              dense_from=size)  # every column by the sparse kernel
    np.testing.assert_allclose(LDLFactor(upper, sparse_only).solve(b), factor.solve(b),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("size", [5, 128, 300])
def test_dense_ldl_reproduces_a_quasi_definite_matrix(size):
    """Blocked dense LDLᵀ without pivoting (panels of ``BLOCK`` columns, BLAS updates):
    ``L D Lᵀ`` gives back the matrix, across panel boundaries and ragged last panels."""
    from diffqcp_np.derivative._dense_block_numba import dense_ldl

    upper = _quasi_definite(size - size // 3, size // 3, size, density=1.0)
    S = _dense(upper)
    work = np.ascontiguousarray(np.tril(S) + np.triu(np.full_like(S, np.nan), 1))
    d, ok = dense_ldl(work)  # the upper triangle is never read
    assert ok
    L = np.tril(work, -1) + np.eye(size)
    np.testing.assert_allclose(L @ np.diag(d) @ L.T, S, rtol=0, atol=1e-11 * np.abs(S).max())
    assert np.all(d[: size - size // 3] > 0) and np.all(d[size - size // 3:] < 0)


def test_dense_ldl_reports_a_zero_pivot():
    from diffqcp_np.derivative._dense_block_numba import dense_ldl

    S = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 2.0], [0.0, 2.0, 3.0]])
    assert not dense_ldl(S.copy())[1]


def test_factor_of_a_scaled_matrix_unscaled_solves_the_matrix():
    """Factors of ``S A S`` turned into factors of A (``L ← S⁻¹LS``, ``D ← S⁻¹DS⁻¹``):
    solves with A match a dense solve, for a matrix whose rows differ in scale by 10^8;
    the equilibrating scale matches a naive computation."""
    from diffqcp_np.derivative._reduced_numba import equilibrating_scale, scaled_values

    upper = _quasi_definite(40, 25, 12)
    row_scale = np.logspace(-4, 4, 65)
    upper = sp.csc_matrix(sp.diags(row_scale) @ upper @ sp.diags(row_scale))
    upper.sort_indices()
    full = np.abs(_dense(upper))
    scale = equilibrating_scale(upper.indptr, upper.indices, upper.data)
    np.testing.assert_allclose(scale, 1 / np.sqrt(full.max(axis=1)), rtol=1e-15)
    scaled = CSCArrays(upper.indptr, upper.indices,
                       scaled_values(upper.indptr, upper.indices, upper.data, scale))
    scaled_rows = np.abs(_dense(sp.csc_matrix((scaled.data, scaled.indices, scaled.indptr),
                                              shape=upper.shape))).max(axis=1)
    rows_before = full.max(axis=1)
    assert scaled_rows.max() <= 1.0 + 1e-14
    assert scaled_rows.min() / scaled_rows.max() > 1e4 * rows_before.min() / rows_before.max()
    factor = factorize(scaled)
    factor.unscale(scale)
    b = np.random.default_rng(12).standard_normal(65)
    np.testing.assert_allclose(factor.solve(b), np.linalg.solve(_dense(upper), b),
                               rtol=1e-9, atol=0)
