"""The symmetric reduced derivative system (direct mode's LDLᵀ path) against dense oracles.

Oracles: dense eigendecompositions of the cone Jacobian (for ``E = D(I−D) + Π₀`` and
``Π₀``), dense solves of the assembled K, and the LU-of-K path of direct mode.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg as la
import scipy.sparse as sp

from diffqcp_np import solve_and_derivative
from diffqcp_np._validation import check_problem
from diffqcp_np.cones import ConeJacobian, as_cone_spec, pi
from diffqcp_np.cones.reduced import LIFT_SOC_ABOVE, reduced_parts
from diffqcp_np.derivative import _ldl, solution_map
from diffqcp_np.derivative.linear_solvers import (
    DirectSolver,
    NonDifferentiableWarning,
    ReducedDirectSolver,
)
from diffqcp_np.derivative.solution_map import SolutionDerivative
from naive import dense_eigen_parts
from problems import known_solution_problem, random_perturbation, relative_error

LARGE_SOC = LIFT_SOC_ABOVE + 8
MIXED = {"z": 2, "l": 6, "q": [3, 5, LARGE_SOC, LARGE_SOC + 3], "s": [3], "ep": 2, "ed": 1,
         "p": [0.3, -0.6]}


def _jacobian(cone_dict: dict, seed: int) -> ConeJacobian:
    """The dual cone Jacobian at a random point (SOC blocks on their boundary region)."""
    v = np.random.default_rng(seed).standard_normal(as_cone_spec(cone_dict).dim)
    return ConeJacobian(v, cone_dict, dual=True)

FAMILIES = {
    "lp": ({"z": 2, "l": 12}, False),
    "qp": ({"z": 2, "l": 12}, True),
    "small_soc": ({"l": 3, "q": [3, 6, LIFT_SOC_ABOVE]}, True),
    "large_soc": ({"l": 3, "q": [LARGE_SOC, LARGE_SOC + 5]}, False),
    "large_soc_qp": ({"l": 3, "q": [LARGE_SOC]}, True),
    "sdp": ({"l": 2, "s": [4]}, False),
    "exp": ({"l": 2, "ep": 2, "ed": 1}, True),
    "power": ({"l": 2, "p": [0.4, -0.7]}, True),
    "mixed": ({"z": 1, "l": 4, "q": [3, LARGE_SOC], "s": [2], "ep": 1, "p": [0.4]}, True),
}


def _reassembled_parts(parts):
    """Dense ``D``, ``E``, ``Π₀`` from the sparse parts plus the lifted rank-two terms."""
    D, E, N = (mat.toarray() for mat in (parts.D, parts.E, parts.null))
    lifted = parts.lifted
    if lifted.count:
        U = lifted.basis.toarray()
        C, F = lifted.couplings()
        D += U @ la.block_diag(*C) @ U.T
        E += U @ la.block_diag(*F) @ U.T
        Q = lifted.null_vectors.toarray()
        N += Q @ Q.T
    return D, E, N


@pytest.mark.parametrize("seed", range(4))
def test_parts_match_a_dense_eigendecomposition(seed):
    jac = _jacobian(MIXED, seed)
    parts = reduced_parts(jac)
    assert parts.lifted.count >= 1  # the large boundary cones are lifted, not densified
    for got, want in zip(_reassembled_parts(parts), dense_eigen_parts(jac)):
        np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("dual", [True, False])
def test_diagonal_parts_of_zero_and_orthant_cones_match_a_dense_eigendecomposition(dual):
    v = np.random.default_rng(5).standard_normal(14)
    v[[4, 9]] = 0.0  # Jacobian ½ at the kink
    jac = ConeJacobian(v, {"z": 3, "l": 11}, dual=dual)
    parts = reduced_parts(jac)
    assert parts.exact and parts.lifted.count == 0
    for got, want in zip(_reassembled_parts(parts), dense_eigen_parts(jac)):
        np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_array_equal(parts.null.matvec(v), dense_eigen_parts(jac)[2] @ v)


def test_null_projector_is_an_orthogonal_projector_onto_the_null_space_of_D():
    jac = _jacobian(MIXED, 7)
    D, _, N = _reassembled_parts(reduced_parts(jac))
    np.testing.assert_allclose(N @ N, N, atol=1e-10)
    np.testing.assert_allclose(D @ N, 0.0, atol=1e-10)
    assert round(np.trace(N)) == int(np.sum(np.linalg.eigvalsh(D) < 1e-9))


def _dense_K(sd: SolutionDerivative) -> np.ndarray:
    return sd._assemble().toarray()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_direct_solves_match_a_dense_solve_of_K(name):
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=3, quadratic=quadratic)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct",
                            factorization="ldl")
    assert not sd.solver.uses_fallback
    K = _dense_K(sd)
    rng = np.random.default_rng(0)
    r = rng.standard_normal(K.shape[0])
    np.testing.assert_allclose(sd.solver.solve(r), np.linalg.solve(K, r), rtol=0, atol=1e-9)
    np.testing.assert_allclose(sd.solver.solve_transpose(r), np.linalg.solve(K.T, r),
                               rtol=0, atol=1e-9)
    assert sd.last_residual < 1e-12
    # the unrefined reduced solve is already close: the regularisation is small
    approx = sd.solver._reduced.solve(r)
    assert relative_error(approx, np.linalg.solve(K, r)) < 1e-5


@pytest.mark.parametrize("name", ["qp", "large_soc", "mixed"])
def test_ldl_and_lu_factorizations_agree_through_the_api(name):
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=5, quadratic=quadratic)
    rng = np.random.default_rng(1)
    dA, db, dc, dP = random_perturbation(prob, rng)
    gx, gy = rng.standard_normal(prob.n), rng.standard_normal(prob.m)
    results = []
    for factorization in ("ldl", "lu"):
        _, _, _, D, DT = solve_and_derivative(
            prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, solve_method="CLARABEL",
            derivative_kwargs={"factorization": factorization})
        results.append((D(dA, db, dc, dP=dP), DT(gx, gy, None, return_dP=True)))
    (jvp_ldl, vjp_ldl), (jvp_lu, vjp_lu) = results
    for got, want in zip(jvp_ldl, jvp_lu):
        assert relative_error(got, want) < 1e-10
    for got, want in zip(vjp_ldl, vjp_lu):
        got, want = (v.toarray() if hasattr(v, "toarray") else v for v in (got, want))
        assert relative_error(got, want) < 1e-10


def test_singular_system_falls_back_to_lu_and_warns_on_inconsistent_solves():
    # Two identical active rows: the dual is not unique, K is singular.
    A = sp.csc_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    x, y = np.array([1.0, 1.0]), np.array([1.0, 1.0, 2.0, 0.0])
    s = np.array([0.0, 0.0, 0.0, 1.0])
    data = check_problem(A, A @ x + s, -(A.T @ y), {"l": 4}, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonDifferentiableWarning)
        sd = SolutionDerivative(data, x, y, s, mode="direct", factorization="ldl")
        assert sd.solver.uses_fallback and sd.solver.singular
        K = _dense_K(sd)
        consistent = K @ np.arange(1.0, 7.0)  # in K's range: solved silently
        z = sd.solver.solve(consistent)
        np.testing.assert_allclose(K @ z, consistent, atol=1e-12)
        np.testing.assert_allclose(z, np.linalg.pinv(K) @ consistent, atol=1e-10)  # least norm
    with pytest.warns(NonDifferentiableWarning, match=r"change of b\[0, 1\]"):
        sd.solver.solve(np.eye(6)[2])  # row 0 of the constraints alone: not in K's range


def test_unknown_factorization_is_rejected():
    prob = known_solution_problem({"l": 4}, seed=0)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    with pytest.raises(ValueError, match="factorization"):
        SolutionDerivative(data, prob.x, prob.y, prob.s, factorization="cholesky")


def test_ill_conditioned_but_nonsingular_stays_exact():
    """A badly scaled (but nonsingular) problem: LDLᵀ may hand over to LU, never warns."""
    prob = known_solution_problem({"z": 1, "l": 8}, seed=2, quadratic=True)
    scale = np.ones(prob.m)
    scale[0] = 1e-6
    A = (prob.A.multiply(scale[:, None])).tocsc()
    data = check_problem(A, prob.b * scale, prob.c, prob.cone_dict, prob.P)
    y = prob.y / scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonDifferentiableWarning)
        sd = SolutionDerivative(data, prob.x, y, prob.s * scale, mode="direct")
    K = _dense_K(sd)
    r = np.random.default_rng(0).standard_normal(K.shape[0])
    assert relative_error(sd.solver.solve(r), np.linalg.solve(K, r)) < 1e-8


def test_zero_pivot_at_every_regularization_hands_over_to_lu(monkeypatch):
    from diffqcp_np.derivative import reduced_system

    attempts = []

    def zero_pivot(matrix):
        attempts.append(matrix.tocsc().diagonal())
        raise reduced_system.ZeroPivotError("zero pivot")

    monkeypatch.setattr(reduced_system, "factorize", zero_pivot)
    prob = known_solution_problem({"z": 1, "l": 8}, seed=4, quadratic=True)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct", factorization="ldl")
    assert sd.solver.uses_fallback and not sd.solver.singular
    # every regularisation was tried, each a larger shift of the diagonal (+ on x, − below)
    assert len(attempts) == len(reduced_system.REGULARIZATIONS)
    shifts = [a - attempts[0] for a in attempts[1:]]
    assert all(np.all(d[:prob.n] > 0) and np.all(d[prob.n:] < 0) for d in shifts)
    K = _dense_K(sd)
    r = np.random.default_rng(0).standard_normal(K.shape[0])
    assert relative_error(sd.solver.solve_transpose(r), np.linalg.solve(K.T, r)) < 1e-10


@pytest.mark.parametrize("small_system_path", ["dense"], indirect=True)  # the default routing
@pytest.mark.parametrize("cone_dict, n, expected, dense", [
    ({"l": 2, "s": [3]}, None, DirectSolver, True),  # small: dense LU
    ({"l": 2, "q": [4]}, None, DirectSolver, True),
    ({"l": 40, "s": [3]}, None, DirectSolver, False),  # PSD: sparse LU
    ({"l": 40, "q": [4]}, None, ReducedDirectSolver, False),  # LDLᵀ of the reduced system
])
def test_auto_factorization_is_lu_for_psd_cones_and_small_systems(cone_dict, n, expected,
                                                                  dense):
    prob = known_solution_problem(cone_dict, n=n, seed=1)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s)
    assert type(sd.solver) is expected
    assert (data.m + data.n <= solution_map.SMALL_SYSTEM_N) == dense == sd._dense_system()
    if expected is DirectSolver:
        assert (sd.solver._dense_lu is not None) == dense
    K = _dense_K(sd)
    r = np.random.default_rng(2).standard_normal(K.shape[0])
    assert relative_error(sd.solver.solve(r), np.linalg.solve(K, r)) < 1e-12


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_assembled_M_matches_a_dense_construction(name):
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=6, quadratic=quadratic)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct", factorization="ldl")
    reduced = sd.solver._reduced
    parts, kept, n = reduced.parts, reduced.kept, prob.n
    A = prob.A.toarray()
    P = np.zeros((n, n)) if sd.quadratic.full is None else sd.quadratic.full.toarray()
    D, E = parts.D.toarray()[:, kept], parts.E.toarray()[np.ix_(kept, kept)]
    want = np.block([[P, A.T @ D], [D.T @ A, -E]])
    got = reduced._upper.toarray()
    np.testing.assert_allclose(got, np.triu(want), atol=1e-14)
    assert np.all(np.diff(reduced._upper.indptr) >= 1)
    assert np.all(reduced._upper.indices[reduced._upper.indptr[1:] - 1]
                  == np.arange(got.shape[0]))  # every diagonal stored, last in its column
    assert parts.exact == (name in ("lp", "qp", "small_soc", "large_soc", "large_soc_qp"))


@pytest.mark.parametrize("name", ["lp", "large_soc_qp"])
def test_exact_reductions_refine_on_M_to_the_dense_answer(name, monkeypatch):
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=8, quadratic=quadratic)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct", factorization="ldl")
    K = _dense_K(sd)
    # the K-space refinement must not be used where M is exact
    monkeypatch.setattr(sd.solver, "_refined", None)
    r = np.random.default_rng(2).standard_normal(K.shape[0])
    for transpose, matrix in ((False, K), (True, K.T)):
        z = sd.solver.solve_transpose(r) if transpose else sd.solver.solve(r)
        assert relative_error(z, np.linalg.solve(matrix, r)) < 1e-11
        assert np.linalg.norm(matrix @ z - r) / np.linalg.norm(r) < 1e-12


def _fused_and_stepwise(reduced, r, transpose):
    """The one-call refined solve and its stepwise twin (reduce, refined M solve,
    recover), each with its M residual."""
    fused, residual = reduced.refined_solve(r, transpose, 10, 1e-13)
    rhs, carried = reduced.reduce(r, transpose)
    sol, stepwise_residual = reduced.refined_solve_symmetric(rhs, 10, 1e-13)
    return fused, residual, reduced.recover(sol, carried, transpose), stepwise_residual


@pytest.mark.parametrize("name", ["lp", "qp"])
def test_fused_diagonal_solve_matches_the_stepwise_reduction_and_a_dense_solve(name):
    """Zero and orthant cones take one compiled call; it must give what reduce, the
    refined M solve and recover give one by one, and K's dense solution, for
    right-hand sides with and without a part in D's null space."""
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=9, quadratic=quadratic)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct", factorization="ldl")
    reduced = sd.solver._reduced
    diagonal = reduced.parts.D.diagonal
    assert diagonal is not None and 0 < reduced.kept.size < prob.m  # both kinds of rows
    K = _dense_K(sd)
    rng = np.random.default_rng(9)
    full = rng.standard_normal(K.shape[0])
    no_null = full.copy()
    no_null[prob.n:][diagonal == 0.0] = 0.0
    for r in (full, no_null):
        for transpose, matrix in ((False, K), (True, K.T)):
            fused, residual, stepwise, stepwise_residual = _fused_and_stepwise(
                reduced, r, transpose)
            np.testing.assert_allclose(fused, stepwise, rtol=1e-12, atol=1e-13)
            assert residual < 1e-13 and stepwise_residual < 1e-13  # equal up to rounding
            assert relative_error(fused, np.linalg.solve(matrix, r)) < 1e-11


def test_psd_and_lifted_soc_blocks_take_the_stepwise_path():
    for name in ("sdp", "large_soc"):
        cone_dict, quadratic = FAMILIES[name]
        prob = known_solution_problem(cone_dict, seed=10, quadratic=quadratic)
        data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
        sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct",
                                factorization="ldl")
        assert not sd.solver._reduced.fused


@pytest.mark.parametrize("name", ["small_soc", "exp", "power"])
def test_fused_block_solve_matches_the_stepwise_reduction_and_a_dense_solve(name, monkeypatch):
    """Block-diagonal D without lifted SOC blocks: one compiled call gives what reduce,
    the refined M solve and recover give one by one, and K's dense solution; the
    compiled product with K (or K') is the dense product; the solver reaches K's dense
    solution through these alone (SciPy's operator is never called)."""
    cone_dict, quadratic = FAMILIES[name]
    prob = known_solution_problem(cone_dict, seed=10, quadratic=quadratic)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct", factorization="ldl")
    reduced = sd.solver._reduced
    assert reduced.fused and reduced.parts.D.diagonal is None
    assert 0 < reduced.kept.size < prob.m  # D has a null space
    K = _dense_K(sd)
    rng = np.random.default_rng(10)
    null = reduced.parts.null.toarray()
    full = rng.standard_normal(K.shape[0])
    no_null = full.copy()
    no_null[prob.n:] -= null @ no_null[prob.n:]
    for r in (full, no_null):
        for transpose, matrix in ((False, K), (True, K.T)):
            fused, residual, stepwise, stepwise_residual = _fused_and_stepwise(
                reduced, r, transpose)
            np.testing.assert_allclose(fused, stepwise, rtol=1e-11, atol=1e-12)
            assert residual < 1e-12 and stepwise_residual < 1e-12
            assert relative_error(fused, np.linalg.solve(matrix, r)) < 1e-10
            np.testing.assert_allclose(reduced.product(r, transpose), matrix @ r,
                                       rtol=1e-13, atol=1e-13)
    monkeypatch.setattr(sd.solver.operator, "matvec", None)
    monkeypatch.setattr(sd.solver.operator, "rmatvec", None)
    for transpose, matrix in ((False, K), (True, K.T)):
        z = sd.solver.solve_transpose(full) if transpose else sd.solver.solve(full)
        assert relative_error(z, np.linalg.solve(matrix, full)) < 1e-11
        assert sd.last_residual < 1e-12


def _ldl_derivative_at_random_point(A, P, cone_dict, rng) -> SolutionDerivative:
    """Direct mode with LDLᵀ at the solution ``y = Π_{K*}(v)``, ``s = y − v`` for a random
    ``v`` and ``x``, with ``b``, ``c`` made to fit."""
    spec = as_cone_spec(cone_dict)
    v = rng.standard_normal(spec.dim)
    y = pi(v, spec, dual=True)
    s, x = y - v, rng.standard_normal(A.shape[1])
    data = check_problem(A, A @ x + s, -(A.T @ y) - P @ x, cone_dict, P)
    return SolutionDerivative(data, x, y, s, mode="direct", factorization="ldl")


def _assert_solves_match_dense_solves(sd: SolutionDerivative, rng, tol: float) -> None:
    K = _dense_K(sd)
    r = rng.standard_normal(K.shape[0])
    for transpose, matrix in ((False, K), (True, K.T)):
        z = sd.solver.solve_transpose(r) if transpose else sd.solver.solve(r)
        assert relative_error(z, np.linalg.solve(matrix, r)) < tol


@pytest.mark.parametrize("cone_dict, path", [({"z": 5, "l": 40}, "diagonal"),
                                             ({"z": 5, "l": 20, "ep": 8}, "fused"),
                                             ({"l": 10, "q": [LARGE_SOC, 5]}, "lifted")])
def test_dense_trailing_block_through_the_solver(cone_dict, path):
    """A dense P fills a trailing block of L (dense blocked LDLᵀ, contiguous solves) on
    each solve path (diagonal D, fused block-diagonal D, lifted SOC blocks): K and K'
    solves match dense solves of K."""
    rng = np.random.default_rng(0)
    spec = as_cone_spec(cone_dict)
    m, n = spec.dim, 90
    F = rng.standard_normal((n, n))
    P = sp.csc_matrix(F @ F.T / n + np.eye(n))
    A = (sp.random(m, n, density=0.1, random_state=rng, data_rvs=rng.standard_normal)
         + sp.eye(m, n)).tocsc()
    sd = _ldl_derivative_at_random_point(A, P, cone_dict, rng)
    reduced = sd.solver._reduced
    assert not sd.solver.uses_fallback
    assert reduced._ldl.symbolic.dense_from <= n + reduced.kept.size - _ldl.DENSE_BLOCK_MIN
    assert path == ("diagonal" if reduced.parts.D.diagonal is not None
                    else "fused" if reduced.fused else "lifted")
    _assert_solves_match_dense_solves(sd, rng, 1e-11)


def test_psd_heavy_system_is_assembled_and_factored_dense():
    """PSD blocks that fill most of K: K is assembled dense (equal to the sparse
    assembly) and factored by LAPACK; its solves match dense solves of the sparse K, and
    the same problem with the sparse path gives the same derivatives."""

    prob = known_solution_problem({"l": 2, "s": [9]}, n=30, seed=0, quadratic=True)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    assert data.m + data.n > solution_map.SMALL_SYSTEM_N  # dense for its PSD block alone
    sd = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct")
    assert sd._dense_system() and sd.solver._dense_lu is not None
    K = sd._assemble().toarray()
    np.testing.assert_allclose(sd._assemble_dense(), K, rtol=0, atol=1e-15)
    r = np.random.default_rng(4).standard_normal(K.shape[0])
    for transpose, matrix in ((False, K), (True, K.T)):
        z = sd.solver.solve_transpose(r) if transpose else sd.solver.solve(r)
        assert relative_error(z, np.linalg.solve(matrix, r)) < 1e-12
    original = solution_map.DENSE_SYSTEM_FILL
    try:
        solution_map.DENSE_SYSTEM_FILL = 2.0  # never dense
        sparse = SolutionDerivative(data, prob.x, prob.y, prob.s, mode="direct")
    finally:
        solution_map.DENSE_SYSTEM_FILL = original
    assert sparse.solver._dense_lu is None
    rng = np.random.default_rng(5)
    g = rng.standard_normal(prob.n), rng.standard_normal(prob.m), rng.standard_normal(prob.m)

    def flat(dA, db, dc):
        return np.concatenate([dA.toarray().ravel(), db, dc])

    assert relative_error(flat(*sd.vjp(*g)), flat(*sparse.vjp(*g))) < 1e-11


def test_badly_scaled_rows_are_equilibrated_instead_of_handed_to_lu():
    """A large P beside unit constraint rows: regularised relative to max|M|, M looks
    singular; the equilibrated factor keeps it on LDLᵀ, and its solves match dense
    solves of K."""
    rng = np.random.default_rng(7)
    cone_dict, n = {"z": 1, "l": 60}, 60
    F = rng.standard_normal((2 * n, n))
    P = sp.csc_matrix(1e4 * (F.T @ F / (2 * n) + 0.01 * np.eye(n)))
    A = sp.vstack([np.ones((1, n)), -sp.identity(n)], format="csc")
    sd = _ldl_derivative_at_random_point(A, P, cone_dict, rng)
    reduced = sd.solver._reduced
    assert not sd.solver.uses_fallback and reduced._scale is not None
    _assert_solves_match_dense_solves(sd, rng, 1e-10)
    # the factored matrix is S M S regularised: its own factor solves M through S
    from diffqcp_np.derivative._ldl import factorize

    scaled = factorize(reduced.factored_matrix())
    b = rng.standard_normal(reduced.n + reduced.kept.size)
    scale = reduced._scale
    np.testing.assert_allclose(reduced._ldl.solve(b), scale * scaled.solve(scale * b),
                               rtol=1e-8)
