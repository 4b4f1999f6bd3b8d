"""Tests for PSD-cone vectorisation, projection and Jacobian (``diffqcp_np.cones.psd``).

Oracles: diffcp's own ``vec_symm``/``unvec_symm``/``pi``/``dprojection_dense``, CVXPY
with Clarabel, a naive per-block eigen-clipping projection, the Daleckii-Krein
formula for the derivative of a spectral function, and finite differences.
"""

from __future__ import annotations

import cvxpy as cp
import diffcp._diffcp as diffcp_cpp
import diffcp.cones as dc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import block_diag

from diffqcp_np.cones.psd import PSDJacobian, project_psd, unvec_symm, vec_symm
from naive import daleckii_krein, naive_projection, split, vdim


def random_orthogonal(rng: np.random.Generator, k: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((k, k)))
    return Q * np.sign(np.diag(R))


def vec_with_spectrum(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    """vec of ``Q diag(lam) Q'`` for a random orthogonal ``Q``."""
    Q = random_orthogonal(rng, lam.size)
    return dc.vec_symm((Q * lam) @ Q.T)


def central_fd(v: np.ndarray, sides: list[int], x: np.ndarray, h: float) -> np.ndarray:
    return (project_psd(v + h * x, sides) - project_psd(v - h * x, sides)) / (2 * h)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def check_operator(jac: PSDJacobian, sides: list[int], rng: np.random.Generator) -> np.ndarray:
    """matvec = dense, exact symmetry, adjoint test and spectrum in [0, 1]; returns dense."""
    blocks = jac.dense_blocks()
    assert [b.shape for b in blocks] == [(vdim(k), vdim(k)) for k in sides]
    for b in blocks:
        assert b.dtype == np.float64
        assert np.array_equal(b, b.T)
        eig = np.linalg.eigvalsh(b)
        assert eig.min() >= -1e-12 and eig.max() <= 1 + 1e-12
    dense = block_diag(*blocks) if blocks else np.zeros((0, 0))
    a, b = rng.standard_normal((2, jac.size))
    Ja, Jb = jac.matvec(a), jac.matvec(b)
    np.testing.assert_allclose(Ja, dense @ a, atol=1e-12 * (1 + np.abs(a).sum()))
    assert abs(a @ Jb - Ja @ b) <= 1e-12 * np.linalg.norm(a) * np.linalg.norm(b)
    return dense


# --------------------------------------------------------------------------- vec

@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_vec_unvec_match_diffcp(k: int) -> None:
    rng = np.random.default_rng(k)
    M = rng.standard_normal((k, k))
    X = M + M.T
    x = rng.standard_normal(vdim(k))
    np.testing.assert_allclose(vec_symm(X), dc.vec_symm(X), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(vec_symm(M), dc.vec_symm(M), rtol=1e-15, atol=1e-15)  # lower tri
    np.testing.assert_allclose(unvec_symm(x, k), dc.unvec_symm(x, k), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(unvec_symm(vec_symm(X), k), X, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(vec_symm(unvec_symm(x, k)), x, rtol=1e-14, atol=1e-14)
    assert np.array_equal(unvec_symm(x, k), unvec_symm(x, k).T)


def test_vec_layout_and_inner_product() -> None:
    X = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    r = np.sqrt(2)
    np.testing.assert_allclose(vec_symm(X), [1, 2 * r, 3 * r, 4, 5 * r, 6])
    rng = np.random.default_rng(1)
    for k in (1, 2, 5, 9):
        A, B = rng.standard_normal((2, k, k))
        A, B = A + A.T, B + B.T
        assert vec_symm(A) @ vec_symm(B) == pytest.approx(np.trace(A @ B), rel=1e-13)


def test_vec_input_validation() -> None:
    with pytest.raises(ValueError):
        vec_symm(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        unvec_symm(np.zeros(5), 3)


# -------------------------------------------------------------------- projection

SIDE_SETS = [[1], [4], [3, 3, 3], [2, 5, 2, 1, 5], [1, 1, 4]]


@pytest.mark.parametrize("sides", SIDE_SETS)
def test_projection_matches_naive_and_diffcp(sides: list[int]) -> None:
    rng = np.random.default_rng(len(sides) * 10 + sum(sides))
    v = rng.standard_normal(sum(vdim(k) for k in sides))
    p = project_psd(v, sides)
    np.testing.assert_allclose(p, naive_projection(v, sides), atol=1e-13)
    np.testing.assert_allclose(p, dc.pi(v, [("s", sides)]), atol=1e-13)
    for x, k in zip(split(v, sides), sides):  # stacking blocks changes nothing
        np.testing.assert_allclose(project_psd(x, [k]), naive_projection(x, [k]), atol=1e-13)


@pytest.mark.parametrize("sides", [[3, 1, 3], [4, 2]])
def test_projection_matches_cvxpy(sides: list[int]) -> None:
    rng = np.random.default_rng(7)
    v = rng.standard_normal(sum(vdim(k) for k in sides))
    p = project_psd(v, sides)
    for x, k, pk in zip(split(v, sides), sides, split(p, sides)):
        V = dc.unvec_symm(x, k)
        X = cp.Variable((k, k), symmetric=True)
        prob = cp.Problem(cp.Minimize(cp.sum_squares(X - V)), [X >> 0])
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
        np.testing.assert_allclose(unvec_symm(pk, k), X.value, atol=1e-6)


@pytest.mark.parametrize("sides", SIDE_SETS)
def test_moreau_idempotence_orthogonality(sides: list[int]) -> None:
    rng = np.random.default_rng(3)
    v = 10 * rng.standard_normal(sum(vdim(k) for k in sides))
    p, q = project_psd(v, sides), project_psd(-v, sides)
    np.testing.assert_allclose(p - q, v, atol=1e-12)
    np.testing.assert_allclose(project_psd(p, sides), p, atol=1e-12)
    for pk, qk in zip(split(p, sides), split(q, sides)):
        assert abs(pk @ qk) <= 1e-11 * (1 + np.linalg.norm(v) ** 2)
    for pk, k in zip(split(p, sides), sides):
        assert np.linalg.eigvalsh(unvec_symm(pk, k)).min() >= -1e-12


def test_projection_empty_and_validation() -> None:
    assert project_psd(np.zeros(0), []).shape == (0,)
    assert PSDJacobian(np.zeros(0), []).dense_blocks() == []
    with pytest.raises(ValueError):
        project_psd(np.zeros(5), [2])
    with pytest.raises(ValueError):
        project_psd(np.zeros(0), [0])
    with pytest.raises(ValueError):
        PSDJacobian(np.zeros(3), [2]).matvec(np.zeros(4))


# ---------------------------------------------------------------------- Jacobian

@pytest.mark.parametrize("sides", SIDE_SETS + [[30]])
def test_jacobian_random_points(sides: list[int]) -> None:
    rng = np.random.default_rng(sum(sides))
    v = rng.standard_normal(sum(vdim(k) for k in sides))
    jac = PSDJacobian(v, sides)
    dense = check_operator(jac, sides, rng)
    for _ in range(2):
        x = rng.standard_normal(v.size)
        assert rel_err(jac.matvec(x), central_fd(v, sides, x, 1e-6)) < 1e-6
    reference = diffcp_cpp.dprojection_dense(v, dc.parse_cone_dict_cpp([("s", sides)]), False)
    np.testing.assert_allclose(dense, reference, atol=1e-12)
    if max(sides) <= 5:
        dk = block_diag(*[daleckii_krein(x, k) for x, k in zip(split(v, sides), sides)])
        np.testing.assert_allclose(dense, dk, atol=1e-12)


def test_jacobian_keeps_positive_block_off_diagonal() -> None:
    """At diag(1, 2, -1), DPi[E_12] = E_12 (diffqcp 0.4.4 returns 0 there)."""
    X = np.diag([1.0, 2.0, -1.0])
    E = np.zeros((3, 3))
    E[0, 1] = E[1, 0] = 1.0
    G = np.zeros((3, 3))
    G[0, 2] = G[2, 0] = 1.0
    jac = PSDJacobian(vec_symm(X), [3])
    np.testing.assert_allclose(jac.matvec(vec_symm(E)), vec_symm(E), atol=1e-14)
    np.testing.assert_allclose(jac.matvec(vec_symm(G)), 0.5 * vec_symm(G), atol=1e-14)


def test_jacobian_repeated_eigenvalues() -> None:
    rng = np.random.default_rng(11)
    lam = np.array([2.0, 2.0, 2.0, -1.0, -1.0, 3.0, 0.5, 0.5])
    v = vec_with_spectrum(rng, lam)
    jac = PSDJacobian(v, [8])
    dense = check_operator(jac, [8], rng)
    np.testing.assert_allclose(dense, daleckii_krein(v, 8), atol=1e-12)
    for _ in range(3):
        x = rng.standard_normal(v.size)
        assert rel_err(jac.matvec(x), central_fd(v, [8], x, 1e-6)) < 1e-6


def test_jacobian_zero_eigenvalues() -> None:
    """Zero eigenvalues: B = 1 on the whole nonnegative block (0/0 := 1)."""
    rng = np.random.default_rng(5)
    k = 6
    lam = np.array([0.0, 0.0, 1.5, 0.7, -2.0, -0.4])
    Q = random_orthogonal(rng, k)
    v = vec_symm((Q * lam) @ Q.T)
    jac = PSDJacobian(v, [k])
    check_operator(jac, [k], rng)
    Q0 = Q[:, :2]

    # Directions whose zero-zero block vanishes: the projection is differentiable along them.
    for _ in range(3):
        M = rng.standard_normal((k, k))
        M = M + M.T
        M[:2, :2] = 0.0
        x = vec_symm(Q @ M @ Q.T)
        assert rel_err(jac.matvec(x), central_fd(v, [k], x, 1e-6)) < 1e-6

    # PSD zero-zero block: the one-sided derivative equals the Jacobian (B = 1 there).
    for _ in range(3):
        M = rng.standard_normal((k, k))
        M = M + M.T
        W = rng.standard_normal((2, 2))
        M[:2, :2] = W @ W.T
        x = vec_symm(Q @ M @ Q.T)
        h = 1e-7
        forward = (project_psd(v + h * x, [k]) - project_psd(v, [k])) / h
        assert rel_err(jac.matvec(x), forward) < 1e-5

    # Inside the zero eigenspace the Jacobian is the identity.
    S = rng.standard_normal((2, 2))
    x = vec_symm(Q0 @ (S + S.T) @ Q0.T)
    np.testing.assert_allclose(jac.matvec(x), x, atol=1e-12)


def test_jacobian_zero_point_is_identity() -> None:
    sides = [1, 3, 3]
    jac = PSDJacobian(np.zeros(sum(vdim(k) for k in sides)), sides)
    for block, k in zip(jac.dense_blocks(), sides):
        np.testing.assert_array_equal(block, np.eye(vdim(k)))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_jacobian_definite_points(sign: float) -> None:
    rng = np.random.default_rng(2)
    sides = [4, 2, 4]
    v = np.concatenate([vec_with_spectrum(rng, sign * rng.uniform(0.1, 3, k)) for k in sides])
    jac = PSDJacobian(v, sides)
    expected = np.eye(v.size) if sign > 0 else np.zeros((v.size, v.size))
    np.testing.assert_allclose(block_diag(*jac.dense_blocks()), expected, atol=1e-12)
    x = rng.standard_normal(v.size)
    np.testing.assert_allclose(jac.matvec(x), expected @ x, atol=1e-12)


def test_jacobian_side_one_is_orthant_like() -> None:
    v = np.array([2.0, -3.0, 0.0, 1e-300, -1e-300])
    sides = [1] * v.size
    np.testing.assert_array_equal(project_psd(v, sides), np.maximum(v, 0))
    jac = PSDJacobian(v, sides)
    np.testing.assert_array_equal(np.concatenate([b.ravel() for b in jac.dense_blocks()]),
                                  [1.0, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(jac.matvec(np.ones(v.size)), [1.0, 0.0, 1.0, 1.0, 0.0])


def test_dense_blocks_in_block_order() -> None:
    rng = np.random.default_rng(9)
    sides = [3, 1, 2, 3, 1, 2]
    v = rng.standard_normal(sum(vdim(k) for k in sides))
    blocks = PSDJacobian(v, sides).dense_blocks()
    for block, x, k in zip(blocks, split(v, sides), sides):
        np.testing.assert_allclose(block, PSDJacobian(x, [k]).dense_blocks()[0], atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(
    sides=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    log_scale=st.floats(-3, 3),
    neg_fraction=st.floats(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_jacobian_property(sides: list[int], log_scale: float, neg_fraction: float,
                           seed: int) -> None:
    """Spectra bounded away from 0 (|lambda| >= 0.1 scale) so central FD is accurate."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** log_scale
    parts = []
    for k in sides:
        lam = scale * rng.uniform(0.1, 1.0, k)
        lam[rng.random(k) < neg_fraction] *= -1
        parts.append(vec_with_spectrum(rng, lam))
    v = np.concatenate(parts)
    jac = PSDJacobian(v, sides)
    check_operator(jac, sides, rng)
    x = rng.standard_normal(v.size)
    fd = central_fd(v, sides, x, 1e-5 * scale)
    assert np.linalg.norm(jac.matvec(x) - fd) <= 1e-6 * np.linalg.norm(x)
    np.testing.assert_allclose(project_psd(v, sides), naive_projection(v, sides),
                               atol=1e-12 * scale * max(sides))
