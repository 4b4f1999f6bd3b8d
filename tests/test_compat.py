"""diffqcp_np as a drop-in for diffcp 1.1.9: diffcp-style scripts, ``utils``, and CVXPY.

(a) diffcp-style code run on ``import diffqcp_np as diffcp``, checked against finite
    differences by re-solving;
(b) ``diffqcp_np.utils`` against the real diffcp's ``utils`` (same outputs);
(c) ``install_as_diffcp()`` under unmodified CVXPY: ``solve(requires_grad=True)``,
    ``backward()`` and ``derivative()`` checked against finite differences of re-solves
    with Clarabel, and shown to run through diffqcp_np. A fixture restores
    ``sys.modules`` so other tests see the real diffcp.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np

pytestmark = pytest.mark.both_small_system_paths

cp = pytest.importorskip("cvxpy")

ROOT = Path(__file__).resolve().parents[1]
TIGHT_SCS = dict(eps=1e-12, max_iters=100000)
TIGHT_CLARABEL = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
                      tol_ktratio=1e-10, max_iter=500)
# Settings for the requires_grad solves (CVXPY forwards them to diffcp, i.e. to us).
SCS_GRAD = dict(eps_abs=1e-10, eps_rel=1e-10, max_iters=200000)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def _diffcp_entries() -> dict:
    return {k: v for k, v in sys.modules.items() if k == "diffcp" or k.startswith("diffcp.")}


@pytest.fixture
def real_diffcp():
    return pytest.importorskip("diffcp")


@pytest.fixture
def as_diffcp(monkeypatch):
    """diffqcp_np registered as ``diffcp``; its ``solve_and_derivative_internal`` counted.

    Restores every ``diffcp`` entry of ``sys.modules`` afterwards.
    """
    before = _diffcp_entries()
    calls = []
    original = diffqcp_np.solve_and_derivative_internal

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(diffqcp_np, "solve_and_derivative_internal", spy)
    alias = diffqcp_np.install_as_diffcp(warn=False)
    try:
        yield calls
    finally:
        alias.uninstall()
        for name in list(_diffcp_entries()):
            del sys.modules[name]
        sys.modules.update(before)
    assert _diffcp_entries() == before


# ---------------------------------------------------------------------------------------
# (a) diffcp-style scripts on ``import diffqcp_np as diffcp``
# ---------------------------------------------------------------------------------------

def test_diffcp_readme_script_matches_finite_differences():
    import diffqcp_np as diffcp  # the only change to diffcp's README example

    def random_cone_prog(m, n, cone_dict):
        cone_list = diffcp.cones.parse_cone_dict(cone_dict)
        z = np.random.randn(m)
        s_star = diffcp.cones.pi(z, cone_list, dual=False)
        y_star = s_star - z
        A = sp.csc_matrix(np.random.randn(m, n))
        x_star = np.random.randn(n)
        return A, A @ x_star + s_star, -A.T @ y_star, x_star, y_star, s_star

    np.random.seed(1)  # a draw with a unique solution (strict complementarity)
    cone_dict = {diffcp.ZERO: 3, diffcp.POS: 3, diffcp.SOC: [5]}
    m, n = 3 + 3 + 5, 5
    A, b, c, x_star, y_star, s_star = random_cone_prog(m, n, cone_dict)
    x, y, s, D, DT = diffcp.solve_and_derivative(A, b, c, cone_dict, eps=1e-12,
                                                 max_iters=100000)
    assert rel_err(x, x_star) < 1e-7 and rel_err(y, y_star) < 1e-7

    nonzeros = A.nonzero()
    dA = sp.csc_matrix((1e-4 * np.random.randn(A.size), nonzeros), shape=A.shape)
    db, dc = 1e-4 * np.random.randn(m), 1e-4 * np.random.randn(n)
    dx, dy, ds = D(dA, db, dc)

    h = 1e-3  # the perturbation is already 1e-4 in size
    plus = diffcp.solve_only(A + h * dA, b + h * db, c + h * dc, cone_dict, **TIGHT_SCS)
    minus = diffcp.solve_only(A - h * dA, b - h * db, c - h * dc, cone_dict, **TIGHT_SCS)
    for got, p, q in zip((dx, dy, ds), plus, minus):
        assert rel_err(got, (p - q) / (2 * h)) < 1e-5

    # the adjoint part of the README: DT(c, 0, 0) is the gradient of the optimal value
    # c'x*: with respect to b it is -y (LP/SOCP duality), with respect to c it is 0 here
    # up to the x* term, and it is the adjoint of D
    dA_T, db_T, dc_T = DT(c, np.zeros(m), np.zeros(m))
    assert rel_err(db_T, -y) < 1e-7
    assert sp.issparse(dA_T) and dA_T.shape == A.shape
    inner = dA_T.multiply(dA).sum() + db_T @ db + dc_T @ dc
    assert abs(inner - c @ dx) < 1e-9 * max(1.0, abs(c @ dx))


def test_least_squares_script_gradient_matches_finite_differences():
    import diffqcp_np as diffcp

    A, b, c, cone_dict = diffcp.utils.least_squares_eq_scs_data(20, 4, seed=1)
    x, y, s, D, DT = diffcp.solve_and_derivative(A, b, c, cone_dict, eps=1e-12,
                                                 max_iters=100000)
    rng = np.random.default_rng(2)
    g = rng.standard_normal(x.size)
    dA_T, db_T, dc_T = DT(g, np.zeros(y.size), np.zeros(s.size))
    # the pattern CVXPY and cvxpylayers rely on: dA on exactly A's stored pattern
    A_csc = sp.csc_matrix(A)
    assert np.array_equal(dA_T.indptr, A_csc.indptr)
    assert np.array_equal(dA_T.indices, A_csc.indices)

    dA = diffcp.utils.get_random_like(A, lambda k: rng.standard_normal(k))
    db, dc = rng.standard_normal(b.size), rng.standard_normal(c.size)
    predicted = dA_T.multiply(dA).sum() + db_T @ db + dc_T @ dc
    h = 1e-5

    def value(t):
        return g @ diffcp.solve_only(A + t * dA, b + t * db, c + t * dc, cone_dict,
                                     solve_method="Clarabel", **TIGHT_CLARABEL)[0]

    fd = (value(h) - value(-h)) / (2 * h)
    assert abs(predicted - fd) < 1e-5 * max(1.0, abs(fd))
    assert rel_err(D(dA, db, dc)[0] @ g, fd) < 1e-5


def test_diffcp_names_are_present(real_diffcp):
    import diffqcp_np as diffcp

    for name in ("ZERO", "POS", "SOC", "PSD", "EXP", "SolverError", "__version__", "cones",
                 "utils", "cone_program", "solve_and_derivative", "solve_and_derivative_batch",
                 "solve_and_derivative_internal", "solve_internal", "solve_only",
                 "solve_only_batch"):
        assert hasattr(diffcp, name), name
    for name in ("ZERO", "POS", "SOC", "PSD", "EXP", "EXP_DUAL"):
        assert getattr(diffcp.cones, name) == getattr(real_diffcp.cones, name)
    public = [n for n in dir(real_diffcp.utils)
              if not n.startswith("_") and callable(getattr(real_diffcp.utils, n))
              and getattr(real_diffcp.utils, n).__module__ == "diffcp.utils"]
    assert public and all(hasattr(diffcp.utils, n) for n in public), public
    # diffcp.cone_program's names that user code imports
    from diffqcp_np.cone_program import SolverError, solve_and_derivative_batch, solve_only_batch
    assert SolverError is diffcp.SolverError
    assert solve_and_derivative_batch is diffcp.solve_and_derivative_batch
    assert solve_only_batch is diffcp.solve_only_batch
    parts = diffcp.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_batch_with_diffcp_keyword_names():
    import diffqcp_np as diffcp

    data = [diffcp.utils.least_squares_eq_scs_data(12, 3, seed=k) for k in (4, 5)]
    As, bs, cs, Ks = (list(t) for t in zip(*data))
    xs, ys, ss, D_batch, DT_batch = diffcp.solve_and_derivative_batch(
        As=As, bs=bs, cs=cs, cone_dicts=Ks, n_jobs_forward=1, n_jobs_backward=1, eps=1e-10)
    for k in range(2):
        x = diffcp.solve_only(As[k], bs[k], cs[k], Ks[k], eps=1e-10)[0]
        assert rel_err(xs[k], x) < 1e-6
    dAs, dbs, dcs = DT_batch(xs, [np.zeros(b.size) for b in bs], [np.zeros(b.size) for b in bs])
    for k in range(2):
        single = diffcp.solve_and_derivative(As[k], bs[k], cs[k], Ks[k], eps=1e-10)[4]
        assert rel_err(dbs[k], single(xs[k], np.zeros(bs[k].size), np.zeros(bs[k].size))[1]) < 1e-5


def test_cone_program_pi_matches_diffcp(real_diffcp):
    rng = np.random.default_rng(0)
    cones = real_diffcp.cones.parse_cone_dict({"z": 2, "l": 3, "q": [4], "s": [3]})
    z = (rng.standard_normal(3), rng.standard_normal(2 + 3 + 4 + 6), np.array([-0.5]))
    ours = diffqcp_np.cone_program.pi(z, cones)
    theirs = real_diffcp.cone_program.pi(z, cones)
    assert np.allclose(ours, theirs, atol=1e-12)


# ---------------------------------------------------------------------------------------
# (b) utils against the real diffcp
# ---------------------------------------------------------------------------------------

def test_least_squares_eq_scs_data_identical_to_diffcp(real_diffcp):
    theirs = real_diffcp.utils.least_squares_eq_scs_data(30, 6, seed=3)
    after_theirs = np.random.rand(3)
    ours = diffqcp_np.utils.least_squares_eq_scs_data(30, 6, seed=3)
    after_ours = np.random.rand(3)
    assert (sp.csc_matrix(ours[0]) != sp.csc_matrix(theirs[0])).nnz == 0
    assert np.array_equal(ours[1], theirs[1]) and np.array_equal(ours[2], theirs[2])
    assert ours[3] == theirs[3]
    # same side effect on NumPy's global generator, so scripts draw the same numbers
    assert np.array_equal(after_ours, after_theirs)
    with pytest.raises(ValueError, match="m >= n"):
        diffqcp_np.utils.least_squares_eq_scs_data(3, 5)


def test_scs_data_from_cvxpy_problem_identical_to_diffcp(real_diffcp):
    x = cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.norm(x - np.arange(3.0), 2) + cp.sum(x)), [x >= -1])
    ours = diffqcp_np.utils.scs_data_from_cvxpy_problem(prob)
    theirs = real_diffcp.utils.scs_data_from_cvxpy_problem(prob)
    assert abs(ours[0] - theirs[0]).max() == 0
    assert np.array_equal(ours[1], theirs[1]) and np.array_equal(ours[2], theirs[2])
    assert ours[3] == theirs[3] and ours[3]["q"] == [4]


@pytest.mark.parametrize("fmt", ["csc", "csr", "coo"])
def test_get_random_like_identical_to_diffcp(real_diffcp, fmt):
    A = sp.random(7, 5, density=0.5, random_state=1, format=fmt)
    np.random.seed(7)
    theirs = real_diffcp.utils.get_random_like(A, np.random.randn)
    np.random.seed(7)
    ours = diffqcp_np.utils.get_random_like(A, np.random.randn)
    assert isinstance(ours, sp.csc_matrix) and ours.shape == A.shape
    assert abs(ours - theirs).max() == 0 and ours.nnz == A.nnz


def test_get_random_like_keeps_explicit_zeros(real_diffcp):
    A = sp.csc_matrix(np.array([[1.0, 0.0], [2.0, 3.0]]))
    A.data[1] = 0.0  # entry (1, 0) stored as an explicit zero
    R = diffqcp_np.utils.get_random_like(A, lambda k: np.arange(1.0, k + 1))
    assert np.array_equal(R.toarray(), [[1.0, 0.0], [2.0, 3.0]])
    with pytest.raises(ValueError):  # diffcp draws A.nnz values for fewer positions
        real_diffcp.utils.get_random_like(A, lambda k: np.arange(1.0, k + 1))


@pytest.mark.parametrize("A, randomness, error, message", [
    ("abc", np.random.randn, TypeError, "^A must be a matrix of real numbers"),
    (np.ones(3), np.random.randn, ValueError, "^A must be a 2-D matrix"),
    (np.eye(3), 5, TypeError, "^randomness must be a callable"),
    (np.eye(3), lambda k: np.ones(k + 1), ValueError, r"^randomness\(k\) must return k = 3"),
    (np.eye(3), lambda k: ["x"] * k, TypeError, r"^randomness\(k\) must be"),
])
def test_get_random_like_names_bad_arguments(A, randomness, error, message):
    with pytest.raises(error, match=message):
        diffqcp_np.utils.get_random_like(A, randomness)


def test_regularize_and_embed_identical_to_diffcp(real_diffcp):
    rng = np.random.default_rng(0)
    A = sp.random(6, 4, density=0.6, random_state=2, format="csc")
    b, c = rng.standard_normal(6), rng.standard_normal(4)
    F = sp.random(4, 4, density=0.5, random_state=3, format="csc")
    P = (F + F.T).tocsc()
    for args in ((P, 0.3, 4), (None, 0.3, 4), (P, 0.0, 4), (None, 0.0, 4)):
        ours, theirs = diffqcp_np.utils.regularize_P(*args), real_diffcp.utils.regularize_P(*args)
        if theirs is None:
            assert ours is None
        else:
            assert abs(ours - theirs).max() == 0
    for Pk in (P, None):
        cone_dict = {"z": 1, "l": 2, "q": [3]}
        ours = diffqcp_np.utils.embed_problem(A, b, c, Pk, cone_dict)
        theirs = real_diffcp.utils.embed_problem(A, b, c, Pk, cone_dict)
        assert abs(ours[0] - theirs[0]).max() == 0 and ours[0].format == "csc"
        assert np.array_equal(ours[1], theirs[1]) and np.array_equal(ours[2], theirs[2])
        assert (ours[3] is None) == (theirs[3] is None)
        if Pk is not None:
            assert abs(ours[3] - theirs[3]).max() == 0 and ours[3].shape == (10, 10)
        assert ours[4] == theirs[4] == {"z": 7, "l": 2, "q": [3]}
        assert cone_dict == {"z": 1, "l": 2, "q": [3]}  # not mutated
    # the zero cone under its alias "f" is folded into "z" (diffcp would return both)
    assert diffqcp_np.utils.embed_problem(A, b, c, None, {"f": 1, "l": 5})[4] == {"l": 5, "z": 7}


def test_lpgd_helpers_match_diffcp(real_diffcp):
    A, b, c, K = real_diffcp.utils.least_squares_eq_scs_data(10, 3, seed=2)
    A = sp.csc_matrix(A)
    x, y, s = diffqcp_np.solve_only(A, b, c, K, eps=1e-12, max_iters=100000)
    rng = np.random.default_rng(3)
    dx = rng.standard_normal(x.size)
    dy, ds = rng.standard_normal(y.size), rng.standard_normal(y.size)
    settings = dict(eps=1e-12, max_iters=100000)
    tau, rho = 1e-2, 0.1
    dA = diffqcp_np.utils.get_random_like(A, rng.standard_normal)
    db, dc = rng.standard_normal(y.size), rng.standard_normal(x.size)
    ours = diffqcp_np.utils.compute_perturbed_solution(
        dA, db, dc, None, tau, rho, A, b, c, None, K, x, y, s, dict(settings), "SCS")
    theirs = real_diffcp.utils.compute_perturbed_solution(
        dA, db, dc, None, tau, rho, A.copy(), b, c, None, K, x, y, s, dict(settings), "SCS",
        real_diffcp.solve_internal)
    for a, t in zip(ours, theirs):
        assert rel_err(a, t) < 1e-6
    for ds_k in (np.zeros(y.size), ds):  # plain and embedded branches
        ours = diffqcp_np.utils.compute_adjoint_perturbed_solution(
            dx, dy, ds_k, tau, rho, A, b, c, None, K, x, y, s, dict(settings), "SCS")
        theirs = real_diffcp.utils.compute_adjoint_perturbed_solution(
            dx, dy, ds_k, tau, rho, A.copy(), b, c, None, K, x, y, s, dict(settings), "SCS",
            real_diffcp.solve_internal)
        for a, t in zip(ours, theirs):
            assert rel_err(a, t) < 1e-6


# ---------------------------------------------------------------------------------------
# (c) install_as_diffcp under unmodified CVXPY
# ---------------------------------------------------------------------------------------

def _lp():
    """LP with a unique, nondegenerate vertex; G has zeros (explicit zeros in CVXPY's A)."""
    rng = np.random.default_rng(11)
    n, m = 3, 6
    G0 = rng.standard_normal((m, n))
    G0[0, 1] = 0.0  # rows 0..n-1 are the active constraints
    G0[2, 2] = 0.0
    x0 = rng.standard_normal(n)
    slack = np.r_[np.zeros(n), rng.uniform(0.5, 1.5, m - n)]
    h0 = G0 @ x0 + slack
    c0 = -G0[:n].T @ rng.uniform(0.5, 1.5, n)
    G, h, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    G.value, h.value, c.value = G0, h0, c0
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(c @ x), [G @ x <= h])
    return prob, x, [G, h, c]


def _qp():
    """Nonnegative least squares with an l1 term (CVXPY turns the square into an SOC)."""
    rng = np.random.default_rng(12)
    F, g, mu = cp.Parameter((6, 4)), cp.Parameter(6), cp.Parameter(nonneg=True)
    F.value, mu.value = rng.standard_normal((6, 4)), 0.3
    # three components positive, one held at zero by x >= 0
    g.value = F.value @ np.array([1.0, 0.5, -0.5, 2.0]) + 0.1 * rng.standard_normal(6)
    x = cp.Variable(4)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + mu * cp.sum(x)), [x >= 0])
    return prob, x, [F, g, mu]


def _socp():
    """minimize p'x over a ball plus a half-space: x* on the sphere, off the plane."""
    rng = np.random.default_rng(13)
    p, x0, r = cp.Parameter(3), cp.Parameter(3), cp.Parameter(nonneg=True)
    p.value, x0.value, r.value = rng.standard_normal(3), rng.standard_normal(3), 1.5
    x = cp.Variable(3)
    prob = cp.Problem(cp.Minimize(p @ x), [cp.norm(x - x0, 2) <= r, cp.sum(x) <= 10.0])
    return prob, x, [p, x0, r]


PROBLEMS = {"lp": _lp, "qp": _qp, "socp": _socp}


def _reference_x(prob, x):
    prob.solve(solver=cp.CLARABEL, **TIGHT_CLARABEL)
    assert prob.status == cp.OPTIMAL
    return np.array(x.value, dtype=float)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_cvxpy_backward_and_derivative_match_finite_differences(as_diffcp, name):
    import diffcp  # what CVXPY imports at solve time

    assert diffcp is diffqcp_np and sys.modules["diffcp.cone_program"] is diffqcp_np.cone_program
    prob, x, params = PROBLEMS[name]()
    prob.solve(requires_grad=True, **SCS_GRAD)
    assert prob.status == cp.OPTIMAL and prob.solver_stats.solver_name == "DIFFCP"
    assert len(as_diffcp) == 1 and as_diffcp[0]["raise_on_error"] is False
    cache = prob._solver_cache["DIFFCP"]
    assert cache["info"]["solver"] == "SCS" and "canonical_status" in cache["info"]
    x_grad_solve = np.array(x.value)

    rng = np.random.default_rng(3)
    weights = rng.standard_normal(x.shape)
    x.gradient = weights
    prob.backward()
    grads = {p.id: np.array(p.gradient, dtype=float) for p in params}
    deltas = {p.id: rng.standard_normal(p.shape) for p in params}
    for p in params:
        p.delta = deltas[p.id]
    prob.derivative()
    x_delta = np.array(x.delta, dtype=float)

    # finite differences by re-solving with Clarabel (independent of diffcp/diffqcp_np)
    base = {p.id: np.array(p.value, dtype=float) for p in params}
    x_ref = _reference_x(prob, x)
    assert rel_err(x_grad_solve, x_ref) < 1e-7
    h = 1e-6

    def x_at(shift):
        for p in params:
            p.value = base[p.id] + shift.get(p.id, 0.0)
        return _reference_x(prob, x)

    for p in params:  # backward: every parameter entry
        fd = np.zeros(p.shape)
        for idx in np.ndindex(*p.shape):
            e = np.zeros(p.shape)
            e[idx] = h
            fd[idx] = weights @ (x_at({p.id: e}) - x_at({p.id: -e})) / (2 * h)
        assert np.allclose(grads[p.id], fd, rtol=1e-4, atol=1e-5), (name, p.name(), grads[p.id], fd)
    fd_delta = (x_at({k: h * d for k, d in deltas.items()})
                - x_at({k: -h * d for k, d in deltas.items()})) / (2 * h)
    assert np.allclose(x_delta, fd_delta, rtol=1e-4, atol=1e-5), (x_delta, fd_delta)
    for p in params:
        p.value = base[p.id]
    if name == "lp":  # gradients at CVXPY's explicit zeros of A are not dropped
        G = params[0]
        assert abs(grads[G.id][0, 1]) > 1e-3 and abs(grads[G.id][2, 2]) > 1e-3


TIGHT_BY_SOLVER = {"ECOS": dict(abstol=1e-10, reltol=1e-10, feastol=1e-10),
                   "CLARABEL": TIGHT_CLARABEL}


@pytest.mark.parametrize("solve_method", ["ECOS", "CLARABEL"])
def test_cvxpy_other_forward_solvers(as_diffcp, solve_method):
    """CVXPY reads these solvers' info keys (status, solveTime, ...) differently from SCS's."""
    prob, x, params = _socp()
    prob.solve(requires_grad=True, **SCS_GRAD)
    x.gradient = np.ones(3)
    prob.backward()
    reference = [np.array(p.gradient, dtype=float) for p in params]
    x_scs = np.array(x.value)

    prob, x, params = _socp()
    prob.solve(requires_grad=True, solve_method=solve_method, **TIGHT_BY_SOLVER[solve_method])
    assert prob.status == cp.OPTIMAL
    assert as_diffcp[-1]["solve_method"] == solve_method
    assert prob._solver_cache["DIFFCP"]["info"]["solver"] == solve_method
    assert prob.solver_stats.solve_time >= 0 and prob.solver_stats.num_iters > 0
    assert rel_err(x.value, x_scs) < 1e-6
    x.gradient = np.ones(3)
    prob.backward()
    for p, ref in zip(params, reference):
        assert np.allclose(p.gradient, ref, rtol=1e-5, atol=1e-6)


def test_cvxpy_infeasible_problem_reports_status_without_raising(as_diffcp):
    p = cp.Parameter(nonneg=True)
    p.value = 1.0
    x = cp.Variable(2)
    prob = cp.Problem(cp.Minimize(cp.sum(x)), [x >= p, cp.sum(x) <= -1.0])
    prob.solve(requires_grad=True)
    assert prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE)
    assert as_diffcp[-1]["raise_on_error"] is False
    with pytest.raises(cp.error.SolverError):
        prob.backward()


def test_cvxpy_accepts_the_version_and_lists_diffcp(as_diffcp):
    from cvxpy.reductions.solvers.conic_solvers.diffcp_conif import DIFFCP

    DIFFCP().import_solver()  # parses diffcp.__version__, refuses 1.0.z with z < 15
    assert "DIFFCP" in cp.installed_solvers()


def test_cvxpy_docstring_example_exactly(as_diffcp):
    # Problem.backward's and Problem.derivative's own examples, as CVXPY documents them
    b = cp.Parameter()
    x = cp.Variable()
    problem = cp.Problem(cp.Minimize(cp.square(x - 2 * b)), [x >= 0])
    b.value = 3.0
    problem.solve(requires_grad=True, **SCS_GRAD)
    x.gradient = 4.0
    problem.backward()
    np.testing.assert_allclose(b.gradient, 8.0, rtol=1e-6)
    b.delta = 1e-3
    problem.derivative()
    np.testing.assert_allclose(x.delta, 2e-3, rtol=1e-6)
    assert len(as_diffcp) == 1


def test_cvxpy_passes_mode_and_warm_start_through(as_diffcp):
    """``solve(requires_grad=True, mode=...)`` reaches us; a re-solve is warm-started."""
    b = cp.Parameter()
    x = cp.Variable(2)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - 2 * b) + x[0]), [x >= 0])
    for k, mode in enumerate(("direct", "dense", "lsqr", "lsmr")):
        b.value = 3.0 + 0.1 * k
        problem.solve(requires_grad=True, mode=mode, **SCS_GRAD)
        assert as_diffcp[-1]["mode"] == mode
        assert (as_diffcp[-1]["warm_start"] is not None) == (k > 0)
        np.testing.assert_allclose(x.value, [2 * b.value - 0.5, 2 * b.value], rtol=1e-8)
        x.gradient = np.array([1.0, 3.0])
        problem.backward()
        np.testing.assert_allclose(b.gradient, 8.0, rtol=1e-6)
        b.delta = 1e-3
        problem.derivative()
        np.testing.assert_allclose(x.delta, [2e-3, 2e-3], rtol=1e-6)


def test_cvxpy_eps_overrides_cvxpy_default_tolerances(as_diffcp):
    b = cp.Parameter()
    x = cp.Variable()
    problem = cp.Problem(cp.Minimize(cp.square(x - 2 * b)), [x >= 0])
    b.value = 3.0
    problem.solve(requires_grad=True, eps=1e-10)  # CVXPY also passes eps_abs=eps_rel=1e-5
    assert abs(x.value - 6.0) < 1e-8


def test_adjoint_ignores_options_like_diffcp():
    A, b, c, K = diffqcp_np.utils.least_squares_eq_scs_data(12, 3, seed=0)
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(A, b, c, K)
    zeros = np.zeros(y.size)
    with_options = DT(c, zeros, zeros, atol=1e-10, btol=1e-10)
    plain = DT(c, zeros, zeros)
    np.testing.assert_array_equal(with_options[0].toarray(), plain[0].toarray())
    for got, want in zip(with_options[1:], plain[1:]):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(TypeError, match="unexpected keyword"):
        DT(c, zeros, zeros, atoll=1e-10)  # a typo is not silently ignored


def test_install_restores_real_diffcp_and_is_idempotent(real_diffcp):
    import diffcp.cone_program  # noqa: F401  (make sure the real submodules are loaded)

    before = _diffcp_entries()
    first = diffqcp_np.install_as_diffcp(warn=False)
    try:
        assert diffqcp_np.install_as_diffcp(warn=False) is first
        assert sys.modules["diffcp"] is diffqcp_np
        assert sys.modules["diffcp.utils"] is diffqcp_np.utils
        assert sys.modules["diffcp.cones"] is diffqcp_np.cones
        assert "diffcp._diffcp" not in sys.modules  # no stale real submodule left behind
        from diffcp.cone_program import SolverError
        assert SolverError is diffqcp_np.SolverError
        assert first.replaced["diffcp"] is real_diffcp
    finally:
        first.uninstall()
    assert _diffcp_entries() == before
    import diffcp
    assert diffcp is real_diffcp and diffcp.cone_program.__name__ == "diffcp.cone_program"
    with diffqcp_np.install_as_diffcp(warn=False):
        assert sys.modules["diffcp"] is diffqcp_np
    assert sys.modules["diffcp"] is real_diffcp


def test_install_warns_about_modules_holding_the_real_diffcp(real_diffcp):
    user = types.ModuleType("user_code_with_diffcp")
    user.diffcp = real_diffcp
    user.sd = real_diffcp.solve_and_derivative
    sys.modules[user.__name__] = user
    try:
        with pytest.warns(RuntimeWarning, match="user_code_with_diffcp") as record:
            alias = diffqcp_np.install_as_diffcp()
        alias.uninstall()
        assert "user_code_with_diffcp" in alias.stale_references
        assert len(record) == 1
    finally:
        del sys.modules[user.__name__]


def test_install_without_real_diffcp_after_cvxpy_import():
    """In a fresh interpreter where diffcp cannot be imported, CVXPY imported first."""
    script = textwrap.dedent("""
        import sys
        sys.modules["diffcp"] = None  # as if diffcp were not installed
        import numpy as np, cvxpy as cp
        from cvxpy.reductions.solvers import defines
        assert "DIFFCP" not in defines.INSTALLED_SOLVERS
        import diffqcp_np
        alias = diffqcp_np.install_as_diffcp()
        assert "DIFFCP" in defines.INSTALLED_SOLVERS
        p = cp.Parameter(); x = cp.Variable()
        prob = cp.Problem(cp.Minimize(cp.square(x - 2 * p)), [x >= 0]); p.value = 3.0
        prob.solve(requires_grad=True, eps_abs=1e-10, eps_rel=1e-10)
        x.gradient = 4.0; prob.backward()
        p.delta = 1e-3; prob.derivative()
        alias.uninstall()
        assert "DIFFCP" not in defines.INSTALLED_SOLVERS and sys.modules["diffcp"] is None
        print(repr(float(x.value)), repr(float(p.gradient)), repr(float(x.delta)))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    value, grad, delta = map(float, out.stdout.split())
    assert abs(value - 6.0) < 1e-7 and abs(grad - 8.0) < 1e-6 and abs(delta - 2e-3) < 1e-9
