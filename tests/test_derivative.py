"""The derivative at a known solution: adjoint test, naive dense references, conventions.

The tests with a ``backend`` argument run on the CPU path and on the device path (on
NumPy with the cuDSS stand-ins, and on CuPy with cuDSS where a GPU is present; see
``conftest.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from diffqcp_np import NonDifferentiableWarning, derivative
from naive import active_set_reference, residual_map_reference
from problems import (
    inner,
    known_solution_problem,
    random_like,
    random_perturbation,
    relative_error,
)

CONE_FAMILIES = {
    "lp": ({"z": 2, "l": 12}, 6, False),
    "qp": ({"z": 2, "l": 10}, 8, True),
    "socp": ({"z": 1, "l": 3, "q": [3, 5, 4]}, 7, False),
    "socp_qp": ({"l": 2, "q": [4, 6]}, 6, True),
    "sdp": ({"z": 1, "s": [2, 3, 4]}, 5, False),
    "exp": ({"l": 2, "ep": 3, "ed": 2}, 6, True),
    "power": ({"l": 1, "p": [0.3, -0.6, 0.75]}, 5, True),
    "mixed": ({"z": 2, "l": 3, "q": [3, 4], "s": [3], "ep": 2, "ed": 1, "p": [0.4, -0.5]},
              9, True),
}


def family(name: str, seed: int = 0):
    cones, n, quadratic = CONE_FAMILIES[name]
    return known_solution_problem(cones, n, seed=seed, quadratic=quadratic)


pytestmark = [pytest.mark.filterwarnings(
    "error::diffqcp_np.NonDifferentiableWarning",
    "error::diffqcp_np.InaccurateDerivativeWarning",
), pytest.mark.both_small_system_paths]


@pytest.mark.parametrize("name", list(CONE_FAMILIES))
@pytest.mark.parametrize("mode,tol", [("direct", 1e-10), ("dense", 1e-10), ("lsmr", 1e-7),
                                      ("lsqr", 1e-7)])
def test_adjoint_dot_product(name, mode, tol, backend):
    if not backend.supports(mode):
        pytest.skip(f"no mode {mode!r} on the {backend.name} back end")
    prob = family(name)
    rng = np.random.default_rng(1)
    D, DT = backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y,
                               prob.s, P=prob.P, mode=mode)
    dA, db, dc, dP = random_perturbation(prob, rng)
    dx, dy, ds = D(dA, db, dc, dP=dP)
    gx, gy, gs = (rng.standard_normal(k) for k in (prob.n, prob.m, prob.m))
    out = DT(gx, gy, gs, return_dP=True)
    lhs = gx @ dx + gy @ dy + gs @ ds
    rhs = inner(out[0], dA) + out[1] @ db + out[2] @ dc
    if dP is not None:
        rhs += inner(out[3], dP)
    assert abs(lhs - rhs) <= tol * max(abs(lhs), 1.0)


@pytest.mark.parametrize("name", ["lp", "qp"])
@pytest.mark.parametrize("mode", ["direct", "dense", "lsmr"])
def test_jvp_matches_active_set_reference(name, mode, backend):
    if not backend.supports(mode):
        pytest.skip(f"no mode {mode!r} on the {backend.name} back end")
    prob = family(name, seed=3)
    rng = np.random.default_rng(4)
    dA, db, dc, dP = random_perturbation(prob, rng)
    D, _ = backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                              P=prob.P, mode=mode)
    got = D(dA, db, dc, dP=dP)
    want = active_set_reference(prob, dA, db, dc, dP)
    tol = 1e-10 if mode != "lsmr" else 1e-7
    for g, w in zip(got, want):
        assert relative_error(g, w) < tol


@pytest.mark.parametrize("name", list(CONE_FAMILIES))
def test_jvp_matches_residual_map_reference(name, backend):
    prob = family(name, seed=5)
    rng = np.random.default_rng(6)
    dA, db, dc, dP = random_perturbation(prob, rng)
    D, _ = backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                              P=prob.P)
    got = D(dA, db, dc, dP=dP)
    want = residual_map_reference(prob, dA, db, dc, dP)
    for g, w in zip(got, want):
        assert relative_error(g, w) < 1e-5


def test_dP_upper_and_full_storage_agree_and_are_adjoint(backend):
    prob = family("qp", seed=7)
    rng = np.random.default_rng(8)
    P_full = prob.P
    P_upper = sp.triu(P_full, format="csc")
    dP_full = random_like(P_full, rng)
    dP_full = ((dP_full + dP_full.T) * 0.5).tocsc()
    dP_upper = sp.triu(dP_full, format="csc")
    args = (prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    D_full, DT_full = backend.derivative(*args, P=P_full)
    D_upper, DT_upper = backend.derivative(*args, P=P_upper)
    dx_full = D_full(None, None, None, dP=dP_full)[0]
    dx_upper = D_upper(None, None, None, dP=dP_upper)[0]
    assert relative_error(dx_upper, dx_full) < 1e-12
    gx = rng.standard_normal(prob.n)
    g_full = DT_full(gx, None, None, return_dP=True)[3]
    g_upper = DT_upper(gx, None, None, return_dP=True)[3]
    # Same pattern as the given P; upper off-diagonals carry twice the symmetric gradient.
    assert g_upper.nnz == P_upper.nnz
    np.testing.assert_array_equal(g_upper.indices, P_upper.indices)
    G = g_full.toarray()
    expected_upper = np.triu(G + G.T - np.diag(np.diag(G)))
    np.testing.assert_allclose(g_upper.toarray(), expected_upper, atol=1e-12)
    # Adjoint on the stored pattern.
    assert abs(inner(g_upper, dP_upper) - gx @ dx_upper) < 1e-10 * max(1, abs(gx @ dx_upper))


def test_dA_keeps_explicit_zeros_in_canonical_order(backend):
    prob = family("lp", seed=9)
    dense = prob.A.toarray()
    rows, cols = np.nonzero(dense)
    zi, zj = np.nonzero(dense == 0)
    # store explicit zeros at half of the structurally empty positions
    rows = np.concatenate([rows, zi[::2]])
    cols = np.concatenate([cols, zj[::2]])
    A = sp.csc_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape)
    assert np.sum(A.data == 0) == zi[::2].size > 0
    A_copy = A.copy()
    D, DT = backend.derivative(A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    dA = DT(np.ones(prob.n), np.zeros(prob.m), np.zeros(prob.m))[0]
    assert isinstance(dA, sp.csc_matrix)
    np.testing.assert_array_equal(dA.indptr, A.indptr)
    np.testing.assert_array_equal(dA.indices, A.indices)
    assert dA.has_sorted_indices
    # caller's matrix untouched (diffcp deletes its explicit zeros)
    np.testing.assert_array_equal(A.data, A_copy.data)
    np.testing.assert_array_equal(A.indices, A_copy.indices)


def test_small_perturbation_is_not_rounded_to_zero(backend):
    prob = family("qp", seed=10)
    rng = np.random.default_rng(11)
    D, DT = backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                               P=prob.P)
    db = rng.standard_normal(prob.m)
    dx = D(None, db, None)[0]
    dx_tiny = D(None, 1e-14 * db, None)[0]
    assert np.linalg.norm(dx) > 0
    assert relative_error(dx_tiny, 1e-14 * dx) < 1e-10
    gx = rng.standard_normal(prob.n)
    db_grad = DT(1e-15 * gx, None, None)[1]
    assert relative_error(db_grad, 1e-15 * DT(gx, None, None)[1]) < 1e-10


@pytest.mark.parametrize("mode", ["direct", "dense", "lsqr", "lsmr"])
def test_non_differentiable_point_warns_only_for_products_that_do_not_exist(mode, backend):
    if not backend.supports(mode):
        pytest.skip(f"no mode {mode!r} on the {backend.name} back end")
    # Two identical inequality rows, both active: the dual is not unique (y0 + y1 is).
    A = sp.csc_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    x = np.array([1.0, 1.0])
    s = np.array([0.0, 0.0, 0.0, 1.0])
    y = np.array([1.0, 1.0, 2.0, 0.0])
    b = A @ x + s
    c = -(A.T @ y)
    D, DT = backend.derivative(A, b, c, {"l": 4}, x, y, s, mode=mode)  # silent (filter)
    dx, dy, ds = D(None, np.ones(4), None)  # the two rows move together: exists
    dA, db, dc = DT(np.ones(2), np.zeros(4), np.zeros(4))  # x is unique: exists
    np.testing.assert_allclose(dx, [1.0, 1.0], atol=1e-9)  # x = (b0, b2) near this point
    np.testing.assert_allclose(dc, 0.0, atol=1e-9)  # x does not depend on c here
    np.testing.assert_allclose(db[:2].sum(), 1.0, atol=1e-9)  # d(x0 + x1)/d(b0 = b1)
    with pytest.warns(NonDifferentiableWarning, match=r"change of b\[0, 1\]") as record:
        D(None, np.array([1.0, 0.0, 0.0, 0.0]), None)  # one row only: one becomes inactive
    assert record[0].filename == __file__ or backend.wraps
    with pytest.warns(NonDifferentiableWarning, match=r"not unique at this point \(y\[0, 1\]\)"):
        DT(None, np.array([1.0, 0.0, 0.0, 0.0]), None)  # weighs y0 alone
    for arr in (dx, dy, ds, db, dc, dA.data):
        assert np.all(np.isfinite(arr))


@pytest.mark.parametrize("which,match", [
    ("dA", "dA has shape"), ("db", "db has length"), ("dc", "dc contains NaN"),
])
def test_jvp_bad_input(which, match):
    prob = family("lp")
    D, _ = derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    bad = {"dA": sp.csc_matrix(np.ones((prob.m + 1, prob.n))), "db": np.ones(prob.m - 1),
           "dc": np.full(prob.n, np.nan)}
    kwargs = dict(dA=None, db=None, dc=None)
    kwargs[which] = bad[which]
    with pytest.raises(ValueError, match=match):
        D(**kwargs)


def test_dA_outside_pattern_is_rejected(backend):
    prob = family("lp")
    A = prob.A
    D, _ = backend.derivative(A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    i, j = np.argwhere(A.toarray() == 0)[0]
    dA = sp.csc_matrix(([1.0], ([i], [j])), shape=A.shape)
    with pytest.raises(ValueError, match="outside the sparsity pattern of A"):
        D(dA, None, None)


def test_asymmetric_P_is_rejected(backend):
    prob = family("qp")
    P = prob.P.toarray()
    P[0, 1] += 1.0
    with pytest.raises(ValueError, match="P is not symmetric"):
        backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                           P=P)


def test_unknown_mode_is_rejected():
    prob = family("lp")
    with pytest.raises(ValueError, match="unknown mode"):
        derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s, mode="qr")


def test_dP_of_wrong_shape_or_without_P_is_rejected(backend):
    prob = family("qp")
    D, _ = backend.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                              P=prob.P)
    with pytest.raises(ValueError, match="dP has shape"):
        D(None, None, None, dP=np.eye(prob.n + 1))
    lp = family("lp")
    D_lp, DT_lp = backend.derivative(lp.A, lp.b, lp.c, lp.cone_dict, lp.x, lp.y, lp.s)
    with pytest.raises(ValueError, match="no P"):
        D_lp(None, None, None, dP=np.eye(lp.n))
    # without P, the gradient with respect to P is an empty matrix of the right shape
    dP = DT_lp(np.ones(lp.n), None, None, return_dP=True)[3]
    assert dP.shape == (lp.n, lp.n) and dP.nnz == 0


@pytest.mark.parametrize("case", ["exact", "rounding", "pattern"])
def test_full_P_is_symmetrised_against_a_dense_average(case):
    """Exactly symmetric P is used as given; a P off by rounding, or with an explicit
    zero mirrored by nothing, is replaced by (P + P')/2; the check names P otherwise."""
    from diffqcp_np.derivative.patterns import QuadraticTerm

    rng = np.random.default_rng(0)
    F = rng.standard_normal((6, 6))
    P = F @ F.T
    if case == "rounding":
        P[0, 1] += 1e-13
    P = sp.csc_matrix(P)
    if case == "pattern":  # an explicit zero at (0, 5) with nothing stored at (5, 0)
        dense = P.toarray()
        dense[0, 5] = dense[5, 0] = 0.0
        rows, cols = np.nonzero(dense)
        P = sp.csc_matrix((np.r_[dense[rows, cols], 0.0], (np.r_[rows, 0], np.r_[cols, 5])),
                          shape=(6, 6))
        assert P.nnz == rows.size + 1
    quad = QuadraticTerm(P, 6)
    dense = P.toarray()
    np.testing.assert_allclose(quad.full.toarray(), 0.5 * (dense + dense.T), rtol=0, atol=0)
    if case == "exact":
        assert quad.full is P
    bad = P.toarray()
    bad[0, 1] += 1e-3
    with pytest.raises(ValueError, match="P is not symmetric"):
        QuadraticTerm(sp.csc_matrix(bad), 6)


def test_symmetry_defect_matches_a_dense_check():
    """The one-pass symmetry check against a dense comparison of patterns and values, on
    random small matrices (symmetric, nearly symmetric, lone entries at either end of a
    column), and its mirror positions against a lookup of the stored entries."""
    from diffqcp_np.derivative.patterns import _symmetry_defect

    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 7))
        M = sp.random(n, n, density=rng.uniform(0.2, 1.0), random_state=rng).toarray()
        if rng.random() < 0.6:
            M = M + M.T
        if rng.random() < 0.3:
            M[rng.integers(n), rng.integers(n)] += 1e-12
        stored = M != 0
        if rng.random() < 0.3:  # an explicit zero, mirrored or not
            i, j = rng.integers(n), rng.integers(n)
            stored[i, j] = True
            if rng.random() < 0.5:
                stored[j, i] = True
        rows, cols = np.nonzero(stored)
        A = sp.csc_matrix((M[rows, cols], (rows, cols)), shape=(n, n))
        A.sort_indices()
        expected = -1.0 if (stored != stored.T).any() else float(np.abs(M - M.T).max())
        defect, largest, mirror = _symmetry_defect(A.indptr, A.indices, A.data)
        assert defect == expected
        if defect >= 0:  # each entry's mirror: the stored (j, i) of a dense lookup
            assert largest == np.abs(M).max()
            cols = np.repeat(np.arange(n), np.diff(A.indptr))
            position = {(r, c): p for p, (r, c) in enumerate(zip(A.indices, cols))}
            assert [position[(c, r)] for r, c in zip(A.indices, cols)] == list(mirror)


def test_perturbation_values_and_products_on_the_pattern_match_dense_algebra():
    """dA on exactly A's pattern is read in place; any other form lands on the same
    values; the one-pass products equal the dense ones; NaN is named."""
    from diffqcp_np.derivative.patterns import MatrixPattern

    rng = np.random.default_rng(3)
    A = sp.random(7, 5, density=0.5, random_state=rng, format="csc")
    A.sort_indices()
    pattern = MatrixPattern(A, "A")
    same = A.copy()
    same.data = rng.standard_normal(A.nnz)
    values = pattern.perturbation_values(same, "dA")
    assert values is same.data  # no copy on the fast path
    dense = same.toarray()
    np.testing.assert_array_equal(pattern.perturbation_values(dense, "dA"), values)
    partial = same.copy()
    partial.data[::2] = 0.0
    partial.eliminate_zeros()  # a sub-pattern: the other entries are zero
    expected = np.where(np.arange(A.nnz) % 2 == 0, 0.0, same.data)
    np.testing.assert_array_equal(pattern.perturbation_values(partial, "dA"), expected)
    x, y = rng.standard_normal(5), rng.standard_normal(7)
    transposed, product = pattern.products(values, x, y)
    np.testing.assert_allclose(transposed, dense.T @ y, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(product, dense @ x, rtol=1e-14, atol=1e-14)
    same.data[0] = np.nan
    with pytest.raises(ValueError, match="dA contains NaN"):
        pattern.perturbation_values(same, "dA")


def test_gradients_on_the_pattern_own_their_arrays():
    """``with_values`` (a copied template) gives the matrix SciPy's constructor gives,
    and two results share no index arrays with each other or with the pattern."""
    from diffqcp_np.derivative.patterns import MatrixPattern

    rng = np.random.default_rng(4)
    A = sp.random(9, 6, density=0.4, random_state=rng, format="csc")
    A.sort_indices()
    pattern = MatrixPattern(A, "A")
    values = rng.standard_normal(A.nnz)
    got = pattern.with_values(values)
    want = sp.csc_matrix((values, A.indices, A.indptr), shape=A.shape)
    assert isinstance(got, sp.csc_matrix) and got.shape == A.shape
    np.testing.assert_array_equal(got.toarray(), want.toarray())
    other = pattern.with_values(np.zeros(A.nnz))
    for first, second in ((got, other), (got, pattern), (other, pattern)):
        assert not np.shares_memory(first.indices, second.indices)
        assert not np.shares_memory(first.indptr, second.indptr)
    got.eliminate_zeros()  # in-place edits of one result leave the next intact
    got.indices[:] = 0
    np.testing.assert_array_equal(pattern.with_values(values).toarray(), want.toarray())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_fast_vector_checks_agree_with_numpy(bad):
    from diffqcp_np._fast_checks import ZERO_VECTOR, all_finite, scale_to_unit

    rng = np.random.default_rng(5)
    for size in (0, 1, 7, 1000):
        v = rng.standard_normal(size)
        assert all_finite(v) == bool(np.all(np.isfinite(v)))
        assert (scale_to_unit(v.copy()) == ZERO_VECTOR) == (not np.any(v))
        assert scale_to_unit(np.zeros(size)) == ZERO_VECTOR
        if size:
            v[rng.integers(size)] = bad
            assert not all_finite(v)
            only_bad = np.where(np.isfinite(v), 0.0, v)
            assert scale_to_unit(only_bad) == 0  # not all zero, not scaled
            np.testing.assert_array_equal(only_bad, np.where(np.isfinite(v), 0.0, v))


@pytest.mark.parametrize("exponent", [0, -3, 5, -1074, -1040, -600, 600, 1023])
def test_power_of_two_scaling_is_exact(exponent):
    """``scale_to_unit`` brings max |v| into [1/2, 1) by a power of two, and ``unscale``
    restores every entry bit for bit (including subnormal and near-overflow scales)."""
    from diffqcp_np._fast_checks import scale_to_unit, unscale

    rng = np.random.default_rng(7)
    v = np.ldexp(rng.uniform(0.5, 1.0, 9) * rng.choice([-1.0, 1.0], 9), exponent)
    v[3] = 0.0
    scaled = v.copy()
    e = scale_to_unit(scaled)
    assert 0.5 <= np.abs(scaled).max() < 1.0
    np.testing.assert_array_equal(scaled, np.ldexp(v, -e))
    assert unscale(scaled, e) == np.abs(v).max()
    np.testing.assert_array_equal(scaled, v)
    assert unscale(np.array([1.0, np.inf]), 0) == np.inf
    assert unscale(np.array([np.nan, 1.0]), 3) == np.inf


def test_fast_reductions_agree_with_numpy():
    from diffqcp_np._fast_checks import largest_magnitude, nonzero_positions
    from diffqcp_np.cones.reduced import NULL_EIGENVALUE, _e_weights, _null_weights

    rng = np.random.default_rng(6)
    for size in (0, 1, 7, 1000):
        v = rng.standard_normal(size) * (rng.random(size) < 0.4)
        np.testing.assert_array_equal(nonzero_positions(v), np.flatnonzero(v))
        assert largest_magnitude(v) == (np.abs(v).max() if size else 0.0)
        d = rng.choice([0.0, 1e-7, 0.5, 1.0], size) * rng.random(size) ** (rng.random() < 0.5)
        in_null = d < NULL_EIGENVALUE
        np.testing.assert_array_equal(_e_weights(d), np.where(in_null, 1.0, d * (1 - d)))
        np.testing.assert_array_equal(_null_weights(d), in_null.astype(float))


@pytest.mark.parametrize("seed", range(40))
def test_upper_storage_expands_to_the_full_matrix(seed):
    """P stored as its upper triangle (explicit zeros included) becomes the dense
    ``U + triu(U, 1)'`` in canonical CSC, its zeros left out."""
    from diffqcp_np.derivative import QuadraticTerm

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    U = sp.triu(sp.random(n, n, density=rng.uniform(0.05, 1.0), random_state=rng)).tocsc()
    U.data[rng.random(U.nnz) < 0.2] = 0.0
    U.data[np.flatnonzero(U.indices == np.repeat(np.arange(n), np.diff(U.indptr)))] += 1.0
    full = QuadraticTerm(U, n).full
    dense = U.toarray()
    np.testing.assert_array_equal(full.toarray(), dense + np.triu(dense, 1).T)
    assert full.has_sorted_indices and full.nnz == np.count_nonzero(full.toarray())
