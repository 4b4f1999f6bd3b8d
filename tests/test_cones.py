"""The cone layer: parsing, the orthant and SOC kernels, and the product dispatcher.

Per-kind kernels for the exponential, power and PSD cones have their own test files;
here the whole product (every cone kind, primal and dual) is checked against
independent references: CVXPY projections, Moreau's identity, central differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

from diffqcp_np import cones
from diffqcp_np.cones import (ConeJacobian, ConeSpec, as_cone_spec, dpi, dpi_matrix,
                              parse_cone_dict, pi)

ALL_CONES = {"z": 2, "l": 3, "q": [3, 1, 5], "s": [1, 2, 3], "ep": 2, "ed": 2,
             "p": [0.3, -0.7, 0.5]}


# -- parsing ---------------------------------------------------------------------------------

def test_constants_and_parse_match_diffcp_names():
    assert (cones.ZERO, cones.POS, cones.SOC, cones.PSD, cones.EXP, cones.EXP_DUAL,
            cones.POWER) == ("z", "l", "q", "s", "ep", "ed", "p")
    parsed = parse_cone_dict({"f": 2, "l": 3, "q": [], "ep": 0, "p": [0.5]})
    assert parsed == [("z", 2), ("l", 3), ("p", [0.5])]
    # parsed output is accepted wherever a dict is
    assert as_cone_spec(parsed) == as_cone_spec({"z": 2, "l": 3, "p": [0.5]})


def test_spec_sizes_and_empty_cvxpy_keys():
    spec = as_cone_spec({"z": 1, "l": 2, "q": [3], "s": [3], "ep": 1, "ed": 1, "p": [0.5],
                         "pnd": [], "psd": []})  # CVXPY emits extra empty keys
    assert spec.dim == 1 + 2 + 3 + 6 + 3 + 3 + 3


@pytest.mark.parametrize("bad,match", [
    ({"x": 3}, "unknown cone key 'x'"),
    ({"l": -1}, "nonnegative integer"),
    ({"l": 2.5}, "nonnegative integer"),
    ({"q": [3, -2]}, "invalid size"),
    ({"q": [2.0]}, "invalid size"),
    ({"s": [0]}, "invalid size"),
    ({"p": [0.0]}, "alpha"),
    ({"p": [1.0]}, "alpha"),
    ({"p": [-1.5]}, "alpha"),
    ({"z": 1, "f": 2}, "given twice"),
])
def test_bad_cone_dicts(bad, match):
    with pytest.raises(ValueError, match=match):
        as_cone_spec(bad)


def test_equal_cone_dicts_share_one_validated_spec():
    first = as_cone_spec({"l": 2, "q": [3, 4], "p": [0.5, -0.25]})
    again = as_cone_spec({"l": 2, "q": (3, 4), "p": [0.5, -0.25]})
    assert again is first  # validated and laid out once
    assert as_cone_spec([("l", 2), ("q", [3, 4]), ("p", [0.5, -0.25])]) is first
    assert first == ConeSpec(nonneg=2, soc=(3, 4), power=(0.5, -0.25))
    # values equal to a cached one but of another type are still checked
    for bad in ({"l": 2.0}, {"l": True, "q": [3, 4]}, {"q": [3, 4.0]}, {"p": [True]}):
        with pytest.raises(ValueError):
            as_cone_spec(bad)
    # numpy sizes (not cached) give the same spec
    assert as_cone_spec({"l": np.int64(2), "q": np.array([3, 4]),
                         "p": np.array([0.5, -0.25])}) == first


def test_vector_length_must_match():
    with pytest.raises(ValueError, match="need a vector of length 5"):
        pi(np.zeros(4), {"l": 5})
    with pytest.raises(ValueError, match="need a vector of length 5"):
        dpi(np.zeros(6), {"l": 5})


@pytest.mark.parametrize("x, message", [
    ("abc", "^x must be a vector of real numbers"),
    (["a", "b", "c"], "^x must be a vector of real numbers"),
    (np.array([1j, 2, 3]), "^x has complex values"),
    ([[1.0, 2.0], [3.0]], "^x must be a vector of real numbers"),
])
@pytest.mark.parametrize("function", [pi, dpi])
def test_non_numeric_point_is_a_type_error_naming_x(function, x, message):
    with pytest.raises(TypeError, match=message):
        function(x, {"l": 3})


def test_integer_and_list_points_are_projected_as_floats():
    np.testing.assert_array_equal(pi([1, -2, 3], {"l": 3}), [1.0, 0.0, 3.0])


# -- orthant and SOC kernels against CVXPY ------------------------------------------------------

def cvxpy_projection(v, kind):
    cp = pytest.importorskip("cvxpy")
    x = cp.Variable(v.size)
    constraint = [x >= 0] if kind == "l" else [cp.SOC(x[0], x[1:])]
    cp.Problem(cp.Minimize(cp.sum_squares(x - v)), constraint).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return x.value


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@pytest.mark.parametrize("kind,dim", [("l", 7), ("q", 2), ("q", 6), ("q", 30)])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_orthant_and_soc_projection_against_cvxpy(kind, dim, scale):
    rng = np.random.default_rng(dim)
    cone = {"l": dim} if kind == "l" else {"q": [dim]}
    for _ in range(3):
        v = scale * rng.standard_normal(dim)
        ref = cvxpy_projection(v / scale, kind) * scale
        np.testing.assert_allclose(pi(v, cone), ref, rtol=0, atol=1e-6 * scale)


def test_soc_regions():
    cone = {"q": [3]}
    inside = np.array([2.0, 1.0, -1.0])
    polar = np.array([-2.0, 1.0, 1.0])
    np.testing.assert_array_equal(pi(inside, cone), inside)
    np.testing.assert_array_equal(pi(polar, cone), 0.0)
    np.testing.assert_array_equal(dpi_matrix(inside, cone).toarray(), np.eye(3))
    assert dpi_matrix(polar, cone).nnz == 0


# -- the product of every cone, primal and dual ------------------------------------------------

def random_point(spec, rng, scale=1.0):
    return scale * rng.standard_normal(spec.dim)


@pytest.mark.parametrize("dual", [False, True])
def test_moreau_identity_and_idempotence_for_every_cone(dual):
    spec = as_cone_spec(ALL_CONES)
    rng = np.random.default_rng(0)
    for scale in (1e-2, 1.0, 1e2):
        v = random_point(spec, rng, scale)
        p = pi(v, spec, dual=dual)
        # v = Π_K(v) − Π_{K*}(−v)   (and the same with K and K* swapped)
        np.testing.assert_allclose(p - pi(-v, spec, dual=not dual), v, atol=1e-9 * scale)
        np.testing.assert_allclose(pi(p, spec, dual=dual), p, atol=1e-9 * scale)
        # Π_K(v) ⟂ Π_K(v) − v
        assert abs(p @ (p - v)) <= 1e-8 * scale**2 * spec.dim


def central_difference_jacobian(v, spec, dual, eps=1e-7):
    cols = [(pi(v + eps * e, spec, dual) - pi(v - eps * e, spec, dual)) / (2 * eps)
            for e in np.eye(v.size)]
    return np.column_stack(cols)


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_product_jacobian_against_finite_differences(dual, seed):
    spec = as_cone_spec(ALL_CONES)
    rng = np.random.default_rng(seed)
    v = random_point(spec, rng)
    fd = central_difference_jacobian(v, spec, dual)
    J = dpi_matrix(v, spec, dual=dual).toarray()
    np.testing.assert_allclose(J, fd, atol=1e-6)


@pytest.mark.parametrize("dual", [False, True])
def test_operator_matrix_and_symmetry_agree(dual):
    spec = as_cone_spec(ALL_CONES)
    rng = np.random.default_rng(4)
    v = random_point(spec, rng)
    op = dpi(v, spec, dual=dual)
    assert isinstance(op, spla.LinearOperator)
    M = dpi_matrix(v, spec, dual=dual)
    a, b = rng.standard_normal(spec.dim), rng.standard_normal(spec.dim)
    np.testing.assert_allclose(op.matvec(a), M @ a, atol=1e-12)
    assert abs(a @ op.matvec(b) - op.matvec(a) @ b) < 1e-12
    np.testing.assert_allclose(op.rmatvec(a), op.matvec(a))
    eig = np.linalg.eigvalsh(M.toarray())
    assert eig.min() > -1e-10 and eig.max() < 1 + 1e-10


@pytest.mark.parametrize("dual", [False, True])
def test_dense_jacobian_is_the_sparse_one_densified(dual):
    spec = as_cone_spec(ALL_CONES)
    v = random_point(spec, np.random.default_rng(6))
    J = ConeJacobian(v, spec, dual=dual)
    np.testing.assert_array_equal(J.to_dense(), J.to_sparse().toarray())


def test_sparse_jacobian_has_no_block_larger_than_its_cone():
    spec = as_cone_spec({"l": 4, "q": [5, 3], "s": [3], "ep": 2})
    v = np.random.default_rng(5).standard_normal(spec.dim)
    M = dpi_matrix(v, spec).toarray()
    block_starts = np.cumsum([0, 1, 1, 1, 1, 5, 3, 6, 3, 3])
    mask = np.zeros_like(M, dtype=bool)
    for a, b in zip(block_starts[:-1], block_starts[1:]):
        mask[a:b, a:b] = True
    assert np.all(M[~mask] == 0)


def test_zero_cone_jacobian_is_zero_primal_and_identity_dual():
    v = np.array([1.0, -2.0])
    assert dpi_matrix(v, {"z": 2}).nnz == 0
    np.testing.assert_array_equal(dpi_matrix(v, {"z": 2}, dual=True).toarray(), np.eye(2))
    np.testing.assert_array_equal(pi(v, {"z": 2}), 0.0)
    np.testing.assert_array_equal(pi(v, {"z": 2}, dual=True), v)


def test_agrees_with_diffcp_pi():
    diffcp = pytest.importorskip("diffcp")
    cone_dict = {"z": 2, "l": 3, "q": [3, 4], "s": [2, 3], "ep": 2, "ed": 1}
    spec = as_cone_spec(cone_dict)
    rng = np.random.default_rng(6)
    for dual in (False, True):
        v = random_point(spec, rng)
        ref = diffcp.cones.pi(v, diffcp.cones.parse_cone_dict(cone_dict), dual=dual)
        # diffcp's exponential projection is less accurate (bisection): 1e-6 there
        np.testing.assert_allclose(pi(v, cone_dict, dual=dual), ref, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    nonneg=st.integers(0, 4),
    soc=st.lists(st.integers(1, 6), max_size=3),
    psd=st.lists(st.integers(1, 4), max_size=2),
    exp=st.integers(0, 2),
    exp_dual=st.integers(0, 2),
    power=st.lists(st.floats(0.05, 0.95) | st.floats(-0.95, -0.05), max_size=2),
    log_scale=st.floats(-3, 3),
    seed=st.integers(0, 2**32 - 1),
    dual=st.booleans(),
)
def test_property_random_products(nonneg, soc, psd, exp, exp_dual, power, log_scale, seed, dual):
    cone_dict = {"z": 1, "l": nonneg, "q": soc, "s": psd, "ep": exp, "ed": exp_dual, "p": power}
    spec = as_cone_spec(cone_dict)
    scale = 10.0**log_scale
    v = scale * np.random.default_rng(seed).standard_normal(spec.dim)
    p = pi(v, spec, dual=dual)
    np.testing.assert_allclose(p - pi(-v, spec, dual=not dual), v, atol=1e-8 * scale)
    J = ConeJacobian(v, spec, dual=dual)
    M = J.to_sparse().toarray()
    assert np.all(np.isfinite(M))
    np.testing.assert_allclose(M, M.T, atol=1e-12)
    # Euler: the projection is positively homogeneous, so DΠ(v) v = Π(v)
    np.testing.assert_allclose(J.matvec(v), p, atol=1e-6 * scale)


def _symmetric_stack(rng, count):
    """Random symmetric 3×3 blocks with hard cases: eigenvalues exactly 0 and 1, repeated
    eigenvalues, diagonal and zero blocks, tiny off-diagonal entries, extreme scales (1e±200)."""
    Q = np.linalg.qr(rng.standard_normal((count, 3, 3)))[0]
    lam = rng.choice([0.0, 1.0, 0.25, 0.25, 0.8], (count, 3))
    lam[::4] = rng.random((lam[::4].shape[0], 3))
    blocks = Q @ (lam[..., None] * np.swapaxes(Q, 1, 2))
    blocks = 0.5 * (blocks + np.swapaxes(blocks, 1, 2))
    blocks[::7] = np.eye(3) * rng.random((blocks[::7].shape[0], 1, 3))  # diagonal
    blocks[1] = 0.0
    blocks[2] = np.diag([0.5, 0.5, 1e-3])
    blocks[2, 0, 1] = blocks[2, 1, 0] = 1e-200
    blocks[3] *= 1e200
    blocks[5] *= 1e-200
    return blocks


def test_jacobi_eigh_3x3_against_lapack():
    from diffqcp_np.cones._sym3_eigen_numba import eigh_3x3

    rng = np.random.default_rng(3)
    blocks = _symmetric_stack(rng, 500)
    lam, V = eigh_3x3(blocks)
    want = np.linalg.eigvalsh(blocks)
    scale = np.abs(blocks).max(axis=(1, 2))
    assert np.all(np.abs(np.sort(lam, axis=1) - want) <= 1e-14 * scale[:, None])
    np.testing.assert_allclose(np.swapaxes(V, 1, 2) @ V, np.broadcast_to(np.eye(3), V.shape),
                               atol=1e-14)
    rebuilt = V @ (lam[..., None] * np.swapaxes(V, 1, 2))
    assert np.all(np.abs(rebuilt - blocks) <= 1e-14 * scale[:, None, None])


def test_small_block_parts_match_dense_matrix_functions():
    """E = D(I − D) + Π₀ and Π₀ of each block, against LAPACK's eigenvectors; the
    eigenvalues are kept away from the null cut-off, where rounding decides."""
    from diffqcp_np.cones.reduced import NULL_EIGENVALUE, _small_block_parts

    rng = np.random.default_rng(4)
    blocks = _symmetric_stack(rng, 500)
    blocks[3] /= 1e200  # eigenvalues of a cone Jacobian lie in [0, 1]
    blocks[5] *= 1e200
    E, null = _small_block_parts(blocks)
    lam, V = np.linalg.eigh(blocks)
    assert not np.any(np.abs(lam - NULL_EIGENVALUE) < 1e-9)
    in_null = lam < NULL_EIGENVALUE
    Vt = np.swapaxes(V, 1, 2)
    want_null = V @ (in_null[..., None] * Vt)
    want_E = V @ (np.where(in_null, 1.0, lam * (1 - lam))[..., None] * Vt)
    np.testing.assert_allclose(null, want_null, atol=1e-14)
    np.testing.assert_allclose(E, want_E, atol=1e-14)
    D = blocks
    np.testing.assert_allclose(E, D - D @ D + null, atol=1e-13)  # the definition
