"""solve_and_derivative end to end: finite differences by re-solving, diffcp, modes, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np
from diffqcp_np import SolverError, derivative, solve_and_derivative, solve_only
from diffqcp_np.cone_program import solve_and_derivative_internal, solve_internal
from problems import (
    assert_close,
    known_solution_problem,
    random_perturbation,
    relative_error,
)

pytestmark = pytest.mark.both_small_system_paths

TIGHT_CLARABEL = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=500)
# The finite-difference oracle: SCS at eps 1e-12 is the most accurate forward solver here.
TIGHT_SCS = dict(eps=1e-12, max_iters=100000)

FAMILIES = {
    # name: (cones, n, quadratic, finite-difference tolerance)
    "lp": ({"z": 1, "l": 10}, None, False, 1e-5),
    "qp": ({"z": 2, "l": 10}, 8, True, 1e-5),
    "socp": ({"l": 3, "q": [3, 5]}, None, False, 1e-5),
    "socp_qp": ({"z": 1, "q": [4, 3]}, 5, True, 1e-5),
    "sdp": ({"l": 1, "s": [3, 2]}, None, False, 1e-5),
    "exp": ({"l": 2, "ep": 2, "ed": 1}, 4, True, 1e-4),
    "power": ({"l": 1, "p": [0.3, -0.6]}, 4, True, 1e-4),
    "mixed": ({"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "p": [0.5]}, 5, True, 1e-4),
}


def family(name, seed=0):
    cones, n, quadratic, tol = FAMILIES[name]
    return known_solution_problem(cones, n, seed=seed, quadratic=quadratic), tol


def oracle_solver(name):
    """The most accurate forward solver for a family: interior point for LP/QP, else SCS."""
    return ("Clarabel", TIGHT_CLARABEL) if name in ("lp", "qp") else ("SCS", TIGHT_SCS)


def resolve(prob, t, d, name):
    dA, db, dc, dP = d
    P = None if prob.P is None else prob.P + t * dP
    method, settings = oracle_solver(name)
    return solve_only(prob.A + t * dA, prob.b + t * db, prob.c + t * dc, prob.cone_dict,
                      P=P, solve_method=method, **settings)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_jvp_matches_finite_differences_of_resolves(name):
    prob, tol = family(name, seed=1)
    rng = np.random.default_rng(2)
    d = random_perturbation(prob, rng)
    method, settings = oracle_solver(name)
    x, y, s, D, DT = solve_and_derivative(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                                          solve_method=method, **settings)
    assert relative_error(x, prob.x) < 1e-7
    got = D(*d[:3], dP=d[3])
    h = 1e-5
    plus, minus = resolve(prob, h, d, name), resolve(prob, -h, d, name)
    for g, p, mi in zip(got, plus, minus):
        assert relative_error(g, (p - mi) / (2 * h)) < tol


@pytest.mark.parametrize("name", ["lp", "socp", "exp"])
def test_agrees_with_diffcp_dense_mode(name):
    diffcp = pytest.importorskip("diffcp")
    cones, n, _, _ = FAMILIES[name]
    cones = {k: v for k, v in cones.items() if k != "ed"}  # diffcp 1.1.9's exp support only
    prob = known_solution_problem(cones, n, seed=3, quadratic=False)
    rng = np.random.default_rng(4)
    x, y, s, D_ref, DT_ref = diffcp.solve_and_derivative(
        prob.A.copy(), prob.b, prob.c, prob.cone_dict, mode="dense", solve_method="SCS",
        eps=1e-12, max_iters=100000)
    D, DT = derivative(prob.A, prob.b, prob.c, prob.cone_dict, x, y, s)
    dA, db, dc, _ = random_perturbation(prob, rng)
    for g, w in zip(D(dA, db, dc), D_ref(dA, db, dc)):
        assert relative_error(g, w) < 1e-8
    gx, gy, gs = (rng.standard_normal(k) for k in (prob.n, prob.m, prob.m))
    ours, ref = DT(gx, gy, gs), DT_ref(gx, gy, gs)
    assert relative_error(ours[0].toarray(), ref[0].toarray()) < 1e-8
    assert relative_error(ours[1], ref[1]) < 1e-8
    assert relative_error(ours[2], ref[2]) < 1e-8


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("mode", ["dense", "lsqr", "lsmr"])
def test_exact_modes_agree_with_direct(mode, name):
    prob, _ = family(name, seed=5)
    rng = np.random.default_rng(6)
    d = random_perturbation(prob, rng)
    args = (prob.A, prob.b, prob.c, prob.cone_dict)
    ref = solve_and_derivative(*args, P=prob.P, mode="direct", solve_method="Clarabel")
    other = solve_and_derivative(*args, P=prob.P, mode=mode, solve_method="Clarabel")
    for g, w in zip(other[3](*d[:3], dP=d[3]), ref[3](*d[:3], dP=d[3])):
        assert_close(g, w, 1e-7, floor=1.0)  # data and outputs are O(1)
    g = rng.standard_normal(prob.n)
    got, want = other[4](g, None, None, return_dP=True), ref[4](g, None, None, return_dP=True)
    for a, b in zip(got, want):
        a, b = (a.toarray(), b.toarray()) if sp.issparse(a) else (a, b)
        assert_close(a, b, 1e-7, floor=1.0)


@pytest.mark.parametrize("mode", ["lpgd", "lpgd_right", "lpgd_left"])
def test_lpgd_modes_approach_the_exact_derivative(mode):
    prob, _ = family("qp", seed=7)
    rng = np.random.default_rng(8)
    d = random_perturbation(prob, rng)
    args = (prob.A, prob.b, prob.c, prob.cone_dict)
    exact = solve_and_derivative(*args, P=prob.P, solve_method="Clarabel", **TIGHT_CLARABEL)
    lpgd = solve_and_derivative(*args, P=prob.P, mode=mode, solve_method="Clarabel",
                                derivative_kwargs=dict(tau=1e-6, rho=0.0), **TIGHT_CLARABEL)
    tol = 1e-4 if mode == "lpgd" else 1e-3
    for g, w in zip(lpgd[3](*d[:3], dP=d[3]), exact[3](*d[:3], dP=d[3])):
        assert relative_error(g, w) < tol
    gx = rng.standard_normal(prob.n)
    gs = rng.standard_normal(prob.m)
    got = lpgd[4](gx, None, gs, return_dP=True)
    want = exact[4](gx, None, gs, return_dP=True)
    for a, b in zip(got, want):
        a, b = (a.toarray(), b.toarray()) if sp.issparse(a) else (a, b)
        assert relative_error(a, b) < tol


@pytest.mark.filterwarnings("error::diffqcp_np.NonDifferentiableWarning")
def test_cvxpy_quadratic_problem_data():
    cp = pytest.importorskip("cvxpy")
    from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict

    rng = np.random.default_rng(9)
    n = 6
    F = rng.standard_normal((8, n))
    x = cp.Variable(n)
    objective = 0.5 * cp.quad_form(x, F.T @ F + 0.1 * np.eye(n)) + rng.standard_normal(n) @ x
    problem = cp.Problem(cp.Minimize(objective),
                         [cp.sum(x) == 1, x >= -0.5, cp.norm(x, 2) <= 1.0])
    data, _, inverse_data = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": True})
    # the last reduction with variable offsets (cone-matrix stuffing) places x in the data
    offset = [inv.var_offsets[x.id] for inv in inverse_data
              if x.id in (getattr(inv, "var_offsets", None) or {})][-1]
    cone_dict = dims_to_solver_dict(data["dims"])
    A, b, c, P = data["A"], data["b"], data["c"], data["P"]
    xs, ys, ss, D, DT = solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT_SCS)
    problem.solve(solver=cp.CLARABEL)
    assert relative_error(xs[offset:offset + n], x.value) < 1e-5  # CVXPY at default tolerance
    dc = rng.standard_normal(c.size)
    h = 1e-5
    plus = solve_only(A, b, c + h * dc, cone_dict, P=P, **TIGHT_SCS)
    minus = solve_only(A, b, c - h * dc, cone_dict, P=P, **TIGHT_SCS)
    assert relative_error(D(None, None, dc)[0], (plus[0] - minus[0]) / (2 * h)) < 1e-5


@pytest.mark.parametrize("solve_method", ["SCS", "Clarabel", "ECOS"])
def test_solvers_raise_on_infeasible_and_unbounded(solve_method):
    A = sp.csc_matrix(np.array([[1.0], [-1.0]]))
    infeasible_b = np.array([-1.0, -1.0])  # x <= -1 and x >= 1
    with pytest.raises(SolverError):
        solve_and_derivative(A, infeasible_b, np.array([1.0]), {"l": 2}, solve_method=solve_method)
    A_unb = sp.csc_matrix(np.array([[-1.0]]))
    with pytest.raises(SolverError):
        solve_and_derivative(A_unb, np.array([0.0]), np.array([-1.0]), {"l": 1},
                             solve_method=solve_method)


def test_raise_on_error_false_returns_status_and_unavailable_derivative():
    A = sp.csc_matrix(np.array([[1.0], [-1.0]]))
    out = solve_and_derivative_internal(A, np.array([-1.0, -1.0]), np.array([1.0]), {"l": 2},
                                        solve_method="Clarabel", raise_on_error=False)
    assert "infeasible" in str(out["info"]["status"]).lower()
    with pytest.raises(SolverError):
        out["DT"](np.ones(1), np.zeros(2), np.zeros(2))


def test_inputs_are_not_mutated():
    prob, _ = family("qp", seed=10)
    dense = prob.A.toarray()
    rows, cols = np.nonzero(np.ones_like(dense))
    A = sp.csc_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape)  # explicit zeros
    P = sp.triu(prob.P, format="csc")
    saved = [A.data.copy(), A.indices.copy(), A.indptr.copy(), prob.b.copy(), prob.c.copy(),
             P.data.copy()]
    x, y, s, D, DT = solve_and_derivative(A, prob.b, prob.c, prob.cone_dict, P=P,
                                          solve_method="SCS", eps=1e-9)
    dA = DT(np.ones(prob.n), np.zeros(prob.m), np.zeros(prob.m))[0]
    assert dA.nnz == A.nnz
    for before, after in zip(saved, [A.data, A.indices, A.indptr, prob.b, prob.c, P.data]):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("change,match", [
    (dict(b=np.ones(3)), "b has length"),
    (dict(c=np.array([np.inf])), "c has length|c contains"),
    (dict(cone_dict={"l": 2}), "describes 2 rows"),
    (dict(cone_dict={"l": 11, "x": 1}), "unknown cone key 'x'"),
    (dict(cone_dict={"q": [-1]}), "invalid size"),
    (dict(cone_dict={"p": [1.5]}), "alpha"),
    (dict(A=np.full((11, 4), np.nan)), "A contains NaN"),
    (dict(P=np.ones((3, 3))), "P has shape"),
    (dict(mode="newton"), "unknown mode"),
])
def test_bad_input_names_the_argument(change, match):
    prob, _ = family("lp", seed=11)
    kwargs = dict(A=prob.A, b=prob.b, c=prob.c, cone_dict=prob.cone_dict)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        solve_and_derivative(**kwargs)


def test_ecos_with_P_points_to_other_solvers():
    prob, _ = family("qp", seed=12)
    with pytest.raises(ValueError, match="(?i)clarabel|scs"):
        solve_and_derivative(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                             solve_method="ECOS")


def test_solve_internal_info_has_cvxpy_keys():
    prob, _ = family("qp", seed=13)
    for method in ("SCS", "Clarabel"):
        info = solve_internal(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                              solve_method=method)["info"]
        for key in ("status", "solve_time", "setup_time", "iter", "pobj"):
            assert key in info, (method, key)


def test_version_is_plain():
    parts = diffqcp_np.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_warm_start_is_accepted():
    prob, _ = family("qp", seed=14)
    x, y, s = solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, eps=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x2, _, _ = solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                              warm_start=(x, y, s), eps=1e-8)
    assert relative_error(x2, x) < 1e-5


def _reference_csc(matrix) -> sp.csc_matrix:
    """SciPy's own conversion to canonical float64 CSC (explicit zeros kept)."""
    out = sp.csc_matrix(matrix, dtype=np.float64, copy=True)
    out.sum_duplicates()
    out.sort_indices()
    return out


def test_matrix_reading_matches_scipy_on_every_kind_of_input():
    """The compiled fast path for canonical float64 CSC input and SciPy's conversion
    give the same matrix; inputs off the fast path (unsorted, duplicates, other formats
    and dtypes, malformed arrays) take SciPy's path; nothing is shared or mutated."""
    from diffqcp_np._input_arrays import (
        INVALID,
        NOT_CANONICAL,
        NOT_FINITE,
        compressed_arrays,
        compressed_status,
    )
    from diffqcp_np._validation import as_csc

    rng = np.random.default_rng(12)
    for _ in range(40):
        rows, cols = rng.integers(1, 12, size=2)
        M = sp.random(rows, cols, density=rng.uniform(0, 0.6), random_state=rng, format="csc")
        M.data[rng.random(M.nnz) < 0.2] = 0.0  # explicit zeros stay stored
        variants = [M, M.tocsr(), sp.csc_array(M), M.astype(np.float32)]
        assert compressed_arrays(M, "A")[3] == 0  # canonical and finite: the fast path
        if M.nnz >= 2:
            unsorted = M.copy()
            unsorted.indices = unsorted.indices[::-1].copy()  # rows out of order
            unsorted.data = unsorted.data[::-1].copy()
            unsorted.indptr = np.array([0] * cols + [M.nnz], dtype=M.indptr.dtype)
            variants.append(unsorted)
            duplicated = sp.csc_matrix((np.r_[M.data, M.data[:1]],
                                        (np.r_[M.tocoo().row, M.tocoo().row[:1]],
                                         np.r_[M.tocoo().col, M.tocoo().col[:1]])),
                                       shape=M.shape)
            variants.append(duplicated)
        for variant in variants:
            before = variant.copy()
            got, want = as_csc(variant, "A"), _reference_csc(variant)
            assert type(got) is sp.csc_matrix and got.dtype == np.float64
            np.testing.assert_array_equal(got.indptr, want.indptr)
            np.testing.assert_array_equal(got.indices, want.indices)
            np.testing.assert_array_equal(got.data, want.data)
            assert got.has_canonical_format
            assert not np.shares_memory(got.data, variant.data)
            assert not np.shares_memory(got.indices, variant.indices)
            assert (variant != before).nnz == 0
    # the check itself: its flags
    A = sp.csc_matrix(np.array([[1.0, 0, 2], [0, 3, 0], [4, 0, 5]]))
    assert compressed_status(3, 3, A.indptr, A.indices, A.data) == 0
    assert compressed_status(2, 3, A.indptr, A.indices, A.data) == INVALID  # row out of range
    for bad in (np.nan, np.inf):
        data = A.data.copy()
        data[2] = bad
        assert compressed_status(3, 3, A.indptr, A.indices, data) == NOT_FINITE
    repeated = A.indices.copy()
    repeated[1] = repeated[0]  # a duplicate row within column 0
    assert compressed_status(3, 3, A.indptr, repeated, A.data) == NOT_CANONICAL
    assert compressed_status(3, 3, np.array([0, 9, 3, 5]), A.indices, A.data) == INVALID
    assert compressed_status(3, 3, np.array([0, 2, 3, 6]), A.indices, A.data) == INVALID
