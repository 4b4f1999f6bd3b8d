"""Solution refinement before differentiating, and detection of undecided faces.

Oracles: the derivative at a problem's known exact solution (tests/problems.py), the
derivative at a tight-tolerance solve, central finite differences of tight re-solves,
and naive reference code for the face margins.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np
from diffqcp_np import (
    InaccurateDerivativeWarning,
    NonDifferentiableWarning,
    derivative,
    solve_and_derivative,
    solve_only,
)
from diffqcp_np.batch.structure import BatchStructure
from diffqcp_np._validation import check_problem
from diffqcp_np.cone_program import solve_and_derivative_internal
from diffqcp_np.cones import ConeJacobian, as_cone_spec, pi
from diffqcp_np.derivative import QuadraticTerm, SolutionDerivative
from diffqcp_np.derivative import solution_refinement as refinement
from diffqcp_np.derivative.borrowed_factorization import BorrowedFactorSolver
from problems import known_solution_problem, random_perturbation, relative_error

pytestmark = pytest.mark.both_small_system_paths

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

TIGHT_CLARABEL = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, max_iter=500)

# name: (cones, n, quadratic)
FAMILIES = {
    "qp": ({"z": 2, "l": 12}, 6, True),
    "lp": ({"z": 2, "l": 14}, None, False),
    "socp": ({"z": 1, "l": 4, "q": [3, 4, 5]}, 5, True),
    "socp_lp": ({"z": 1, "l": 4, "q": [3, 4, 5]}, None, False),
    "exp": ({"z": 1, "l": 3, "ep": 3}, 4, True),
    "exp_lp": ({"l": 3, "ep": 2, "ed": 1}, None, False),
}
SOLVERS = ("SCS", "Clarabel", "ECOS")
PROBLEMS_PER_CASE = 12


def gradient(DT, cotangent) -> np.ndarray:
    dA, db, dc = DT(*cotangent)
    return np.concatenate([dA.data, db, dc])


def cotangent_of(prob, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(prob.n), rng.standard_normal(prob.m), rng.standard_normal(prob.m)


def exact_gradient(prob, cotangent) -> np.ndarray:
    """The gradient at the problem's known exact solution."""
    _, DT = derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s, P=prob.P)
    return gradient(DT, cotangent)


def refined(prob, solver, **kwargs):
    """``solve_and_derivative_internal`` at the solver's defaults, and whether it warned."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = solve_and_derivative_internal(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                                            solve_method=solver, **kwargs)
    warned = any(issubclass(w.category, (InaccurateDerivativeWarning,
                                         NonDifferentiableWarning)) for w in caught)
    return out, warned


# -- problem 262 of the batch benchmark ---------------------------------------------------------
@pytest.fixture(scope="module")
def problem_262():
    from bench_batch import small_qps

    As, bs, cs, _, cones, Ps = small_qps(263)
    return As[262], bs[262], cs[262], cones[262], Ps[262]


def test_problem_262_is_refined_onto_the_right_face(problem_262):
    """Clarabel at its defaults leaves row 15 (active: y = 1.5e-4, s = 2e-7 at a tight
    solution) with y = 2.5e-4, s = 4.3e-4; D reads it as inactive and DT was 25% off."""
    A, b, c, cone_dict, P = problem_262
    cot = (np.ones(A.shape[1]), np.zeros(A.shape[0]), np.zeros(A.shape[0]))
    tight = solve_and_derivative(A, b, c, cone_dict, P=P, solve_method="Clarabel",
                                 **TIGHT_CLARABEL)
    assert tight[1][15] > 1e-4 and tight[2][15] < 1e-8
    want = gradient(tight[4], cot)

    with pytest.warns(InaccurateDerivativeWarning, match="1 inequality row"):
        raw = solve_and_derivative_internal(A, b, c, cone_dict, P=P, solve_method="Clarabel",
                                            refine=False)
    assert raw["y"][15] > 1e-4 and raw["s"][15] > 1e-4  # the solver's undecided row
    assert relative_error(gradient(raw["DT"], cot), want) > 0.1
    assert raw["info"]["refinement"]["unresolved_rows"] == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error", InaccurateDerivativeWarning)
        out = solve_and_derivative_internal(A, b, c, cone_dict, P=P, solve_method="Clarabel")
    report = out["info"]["refinement"]
    assert report["status"] == "converged" and report["residual_after"] <= 1e-14
    assert report["residual_before"] > 1e-6 and report["steps"] >= 1
    assert report["factorizations"] >= 1 and report["unresolved"] == 0  # the face changed
    assert out["y"][15] > 1e-4 and out["s"][15] == 0.0
    assert relative_error(gradient(out["DT"], cot), want) < 1e-8


# -- the oracle over families and solvers -------------------------------------------------------
CASES = [(name, solver) for name in FAMILIES for solver in SOLVERS
         if not (solver == "ECOS" and FAMILIES[name][2])]


@pytest.mark.parametrize("name,solver", CASES)
def test_refined_derivative_matches_the_exact_solution_or_warns(name, solver):
    cones, n, quadratic = FAMILIES[name]
    wrong_before = 0
    for seed in range(PROBLEMS_PER_CASE):
        try:
            prob = known_solution_problem(cones, n=n, seed=seed, quadratic=quadratic)
        except RuntimeError:  # no well-conditioned problem with this seed
            continue
        cot = cotangent_of(prob, seed)
        want = exact_gradient(prob, cot)
        out, warned = refined(prob, solver)
        report = out["info"]["refinement"]
        assert report["residual_after"] <= report["residual_before"]
        if not warned:
            assert relative_error(gradient(out["DT"], cot), want) < 1e-8, seed
            assert report["status"] == "converged", seed
        raw, _ = refined(prob, solver, refine=False)
        wrong_before += relative_error(gradient(raw["DT"], cot), want) > 1e-6
    if solver == "SCS":  # at its default tolerance refinement has work to do
        assert wrong_before > 0


@pytest.mark.parametrize("name", ["qp", "socp", "exp_lp"])
def test_refined_and_tight_solutions_agree_with_finite_differences(name):
    cones, n, quadratic = FAMILIES[name]
    prob = known_solution_problem(cones, n=n, seed=3, quadratic=quadratic)
    rng = np.random.default_rng(4)
    d = random_perturbation(prob, rng)
    args = (prob.A, prob.b, prob.c, prob.cone_dict)
    refined_D = solve_and_derivative(*args, P=prob.P, solve_method="SCS")[3]
    tight_D = solve_and_derivative(*args, P=prob.P, solve_method="SCS", eps=1e-12,
                                   max_iters=100000, refine=False)[3]

    def resolve(t):  # the most accurate solver: interior point for QP, else SCS
        dA, db, dc, dP = d
        P = None if prob.P is None else prob.P + t * dP
        settings = (dict(solve_method="Clarabel", **TIGHT_CLARABEL) if name == "qp"
                    else dict(solve_method="SCS", eps=1e-12, max_iters=100000))
        return solve_only(prob.A + t * dA, prob.b + t * db, prob.c + t * dc, prob.cone_dict,
                          P=P, **settings)

    h = 1e-5
    fd = [(p - m) / (2 * h) for p, m in zip(resolve(h), resolve(-h))]
    for D in (refined_D, tight_D):
        for got, want in zip(D(*d[:3], dP=d[3]), fd):
            assert relative_error(got, want) < 1e-5
    for got, want in zip(refined_D(*d[:3], dP=d[3]), tight_D(*d[:3], dP=d[3])):
        assert relative_error(got, want) < 1e-8


@pytest.mark.parametrize("cones,n", [({"l": 2, "s": [3, 2]}, None),
                                     ({"l": 1, "p": [0.3, -0.6, 0.5]}, 4),
                                     ({"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "ed": 1,
                                       "p": [0.4]}, 5)])
def test_psd_and_power_cones_are_refined(cones, n):
    for seed in range(3):
        prob = known_solution_problem(cones, n=n, seed=seed, quadratic=n is not None)
        cot = cotangent_of(prob, seed)
        out, warned = refined(prob, "SCS")
        report = out["info"]["refinement"]
        assert not warned and report["status"] == "converged", (seed, report)
        assert relative_error(out["x"], prob.x) < 1e-10
        assert relative_error(gradient(out["DT"], cot), exact_gradient(prob, cot)) < 1e-8


# -- safeguards, options and reports ---------------------------------------------------------------
def test_an_exact_solution_is_returned_unchanged():
    prob = known_solution_problem({"z": 1, "l": 6, "q": [3]}, n=4, seed=0)
    D, DT, info = derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                             P=prob.P, refine=True, return_info=True)
    report = info["refinement"]
    assert report["steps"] == 0 and report["status"] == "converged"
    for got, given in zip((info["x"], info["y"], info["s"]), (prob.x, prob.y, prob.s)):
        np.testing.assert_array_equal(got, given)


def test_derivative_refines_only_when_asked():
    prob = known_solution_problem({"z": 2, "l": 12}, n=6, seed=5)
    x, y, s = solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P)
    args = (prob.A, prob.b, prob.c, prob.cone_dict, x, y, s)
    *_, off = derivative(*args, P=prob.P, return_info=True)
    assert off["refinement"]["status"] == "off" and off["x"] is not x
    np.testing.assert_array_equal(off["x"], x)
    *_, on = derivative(*args, P=prob.P, refine=True, return_info=True)
    assert on["refinement"]["status"] == "converged"
    assert relative_error(on["x"], prob.x) < 1e-12 < relative_error(x, prob.x)
    D, DT = derivative(*args, P=prob.P, mode="lpgd", refine=True)  # LPGD: neither
    *_, lpgd = derivative(*args, P=prob.P, mode="lpgd", return_info=True)
    assert lpgd["refinement"] is None


@pytest.mark.parametrize("mode", ["dense", "lsmr"])
def test_refinement_in_the_other_exact_modes(mode):
    prob = known_solution_problem({"z": 1, "l": 8, "q": [3]}, n=4, seed=2)
    cot = cotangent_of(prob, 0)
    out, warned = refined(prob, "SCS", mode=mode)
    assert not warned and out["info"]["refinement"]["status"] == "converged"
    assert relative_error(gradient(out["DT"], cot), exact_gradient(prob, cot)) < 1e-8


def test_a_weakly_active_row_is_reported():
    """y_i = s_i = 0 at the solution: no solution decides whether row i is active."""
    prob = known_solution_problem({"z": 1, "l": 8}, n=4, seed=1)
    spec = as_cone_spec(prob.cone_dict)
    v = prob.y - prob.s
    i = 1 + int(np.argmin(np.abs(v[1:])))
    v[i] = 0.0
    y, s = pi(v, spec, dual=True), pi(v, spec, dual=True) - v
    b = prob.A @ prob.x + s
    c = -(prob.A.T @ y) - prob.P @ prob.x
    with pytest.warns(InaccurateDerivativeWarning, match="1 inequality row"):
        D, DT, info = derivative(prob.A, b, c, prob.cone_dict, prob.x, y, s, P=prob.P,
                                 refine=True, return_info=True)
    assert info["refinement"]["unresolved_rows"] == 1


def test_refinement_at_a_non_unique_solution_leaves_the_products_to_report():
    """min 0 s.t. x1 + x2 = 1, x >= 0: every point of the segment solves it. Refinement
    (least-squares steps: K is singular) keeps a solution; DT on x, which depends on the
    choice, warns; DT on what is unique (y) does not."""
    A = sp.csc_matrix(np.array([[1.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
    b, c = np.array([1.0, 0.0, 0.0]), np.zeros(2)
    out = solve_and_derivative_internal(A, b, c, {"z": 1, "l": 2}, solve_method="SCS")
    report = out["info"]["refinement"]
    assert report["residual_after"] <= max(report["residual_before"], 1e-13)
    assert abs(out["x"].sum() - 1) < 1e-12 and np.all(out["x"] > 0)
    with pytest.warns(NonDifferentiableWarning):
        out["DT"](np.array([1.0, 0.0]), None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out["DT"](None, np.array([1.0, 0.0, 0.0]), None)


def test_refinement_keeps_the_forward_solvers_info_and_adds_its_report():
    prob = known_solution_problem({"z": 1, "l": 6}, n=3, seed=0)
    out = solve_and_derivative_internal(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P)
    info = out["info"]
    assert info["status"] == "solved" and "iter" in info
    assert set(info["refinement"]) == {
        "residual_before", "residual_after", "steps", "rejected", "factorizations",
        "unresolved_rows", "unresolved_cones", "unresolved", "status"}


# -- the pieces --------------------------------------------------------------------------------
def test_residual_map_matches_dense_algebra():
    prob = known_solution_problem({"z": 1, "l": 3, "q": [3], "ep": 1}, n=4, seed=0)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal(prob.n), rng.standard_normal(prob.m)
    res = refinement.ResidualMap(data, QuadraticTerm(data.P, data.n).full)(x, v)
    A, P = prob.A.toarray(), prob.P.toarray()
    y = pi(v, prob.cone_dict, dual=True)
    np.testing.assert_allclose(res.y, y, rtol=0, atol=1e-15)
    np.testing.assert_allclose(res.dual, P @ x + A.T @ y + prob.c, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(res.primal, A @ x + (y - v) - prob.b, rtol=1e-13, atol=1e-13)
    dual_scale = max(np.abs(prob.c).max(), np.abs(P @ x).max(), np.abs(A.T @ y).max())
    primal_scale = max(np.abs(prob.b).max(), np.abs(A @ x).max(), np.abs(y - v).max())
    want = np.hypot(np.linalg.norm(res.dual) / dual_scale,
                    np.linalg.norm(res.primal) / primal_scale)
    assert res.merit == pytest.approx(want, rel=1e-12)
    assert res.absolute == max(np.abs(res.dual).max(), np.abs(res.primal).max())


def _naive_margins(v, cones):
    """Distance of each block of v to a change of face, from the cone definitions."""
    spec = as_cone_spec(cones)
    out, row = [], spec.zero
    for _ in range(spec.nonneg):
        out.append(abs(v[row]))
        row += 1
    for dim in spec.soc:
        t, rho = v[row], np.linalg.norm(v[row + 1:row + dim])
        out.append(min(abs(rho - t), abs(rho + t)) / np.sqrt(2))
        row += dim
    return np.array(out)


def test_margins_of_orthant_and_second_order_blocks_match_the_definitions():
    cones = {"z": 2, "l": 5, "q": [3, 4]}
    spec = as_cone_spec(cones)
    rng = np.random.default_rng(1)
    for _ in range(20):
        v = rng.standard_normal(spec.dim)
        margins = _naive_margins(v, cones)
        jac = ConeJacobian(v, spec, dual=True)
        below, above = margins * (1 - 1e-9), margins * (1 + 1e-9)
        assert not refinement.unsettled_blocks(jac, v, below).any()
        assert refinement.unsettled_blocks(jac, v, above).all()


def test_psd_and_three_dimensional_blocks_near_a_change_of_face_are_unsettled():
    spec = as_cone_spec({"s": [2], "ep": 1, "p": [0.4]})
    # PSD block with eigenvalues 1e-3 and -2; exp and power blocks inside their cones,
    # one 1e-3 away from the boundary.
    X = np.diag([1e-3, -2.0])
    exp_block = np.array([0.0, 1.0, 1.0 + 1e-3])  # s·e^(r/s) = 1 <= t (in K_exp)
    power_block = np.array([1.0, 1.0, 0.3])  # interior of K_0.4
    v = np.concatenate([[X[0, 0], 0.0, X[1, 1]], -exp_block, -power_block])
    jac = ConeJacobian(v, spec, dual=True)
    tight = refinement.unsettled_blocks(jac, v, np.full(3, 1e-5))
    loose = refinement.unsettled_blocks(jac, v, np.full(3, 1e-2))
    assert tight.tolist() == [False, False, False]
    assert loose.tolist() == [True, True, False]


def test_face_codes_tell_the_faces_apart():
    spec = as_cone_spec({"z": 1, "l": 2, "q": [3, 3, 3]})
    v = np.array([0.3, 1.0, -1.0, 2.0, 1.0, 0.0, -2.0, 1.0, 0.0, 0.5, 1.0, 0.0])
    y = pi(v, spec, dual=True)
    assert refinement.face_codes(spec, v, y, y - v).tolist() == [2, 0, 2, 0, 1]


def test_borrowed_factorisation_solves_the_new_system_and_factors_when_needed():
    prob = known_solution_problem({"z": 1, "l": 3, "q": [4, 5], "ep": 1}, n=5, seed=0)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    rng = np.random.default_rng(0)
    near = SolutionDerivative(data, prob.x, prob.y, prob.s)
    v = prob.y - prob.s + 1e-6 * rng.standard_normal(prob.m)  # the same faces
    y = pi(v, prob.cone_dict, dual=True)
    here = SolutionDerivative(data, prob.x, y, y - v, reuse=near, same_faces=True)
    fresh = SolutionDerivative(data, prob.x, y, y - v)
    assert isinstance(here.solver, BorrowedFactorSolver) and here.solver.own is None
    r = rng.standard_normal(prob.n + prob.m)
    for transpose in (False, True):
        solve = fresh.solver.solve_transpose if transpose else fresh.solver.solve
        got = here.solver.solve_transpose(r) if transpose else here.solver.solve(r)
        assert relative_error(got, solve(r)) < 1e-11
    assert here.solver.own is None  # no factorisation so far
    for _ in range(BorrowedFactorSolver.BORROWED_SOLVES):
        here.solver.solve(r)
    assert here.solver.own is not None  # many solves: K factored after all
    assert relative_error(here.solver.solve(r), fresh.solver.solve(r)) < 1e-11

    far = prob.y - prob.s
    far[1:4] *= -1  # the orthant rows on their other faces: K too far from the lender's
    y_far = pi(far, prob.cone_dict, dual=True)
    there = SolutionDerivative(data, prob.x, y_far, y_far - far, reuse=near, same_faces=True)
    fresh = SolutionDerivative(data, prob.x, y_far, y_far - far)
    assert relative_error(there.solver.solve(r), fresh.solver.solve(r)) < 1e-12
    assert there.solver.own is not None  # refinement did not converge: K factored


def test_same_face_orthant_step_shares_the_factorisation():
    prob = known_solution_problem({"z": 2, "l": 12}, n=6, seed=0)
    data = check_problem(prob.A, prob.b, prob.c, prob.cone_dict, prob.P)
    first = SolutionDerivative(data, prob.x, prob.y, prob.s)
    v = prob.y - prob.s
    moved = v * (1 + 1e-3)  # same signs: the same D
    y = pi(moved, prob.cone_dict, dual=True)
    second = SolutionDerivative(data, prob.x, y, y - moved, reuse=first)
    assert second.solver is first.solver


# -- batches -------------------------------------------------------------------------------------
def _batch_gradients(DT_batch, cotangents) -> list[np.ndarray]:
    dAs, dbs, dcs = DT_batch(*[[c[k] for c in cotangents] for k in range(3)])
    return [np.concatenate([dA.data, db, dc]) for dA, db, dc in zip(dAs, dbs, dcs)]


@pytest.fixture(scope="module")
def small_qps_1000():
    from bench_batch import small_qps

    As, bs, cs, _, cones, Ps = small_qps(1000)
    rng = np.random.default_rng(7)
    cots = [(rng.standard_normal(20), rng.standard_normal(40), rng.standard_normal(40))
            for _ in As]
    tight = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, Ps=Ps,
                                                   solve_method="Clarabel", refine=False,
                                                   backend="serial", **TIGHT_CLARABEL)
    return dict(As=As, bs=bs, cs=cs, cone_dicts=cones, Ps=Ps), cots, _batch_gradients(
        tight[4], cots)


@pytest.mark.parametrize("solver", ["Clarabel", "SCS"])
def test_1000_small_qps_refined_in_the_batched_dense_path(small_qps_1000, solver):
    """The benchmark's batch (n = 20, m = 40) at the solver's defaults, through the batched
    dense derivative: every refined gradient matches the one at a tight-tolerance solution
    to 1e-8, or its problem is reported; without refinement some are far off (262 among
    them, for Clarabel)."""
    args, cots, want = small_qps_1000
    with warnings.catch_warnings():
        warnings.simplefilter("error", InaccurateDerivativeWarning)
        xs, ys, ss, D_batch, DT_batch, infos = diffqcp_np.solve_and_derivative_batch(
            **args, solve_method=solver, return_info=True, backend="serial")
    assert D_batch.dense_batch is not None
    reports = [info["refinement"] for info in infos]
    got = _batch_gradients(DT_batch, cots)
    for i, (g, w, report) in enumerate(zip(got, want, reports)):
        assert report["status"] == "converged" and report["unresolved"] == 0, i
        assert relative_error(g, w) < 1e-8, i
    assert ys[262][15] > 1e-4 and ss[262][15] == 0.0
    assert sum(r["factorizations"] for r in reports) >= 1  # some face changed
    raw = diffqcp_np.solve_and_derivative_batch(**args, solve_method=solver, refine=False,
                                                backend="serial")
    off = [relative_error(g, w) > 1e-6 for g, w in zip(_batch_gradients(raw[4], cots), want)]
    assert sum(off) >= 1
    if solver == "Clarabel":
        assert off[262]


def _lp_batch(count: int, seed: int) -> dict:
    """A same-structure batch of LPs (zero and orthant cones, no P) with known solutions:
    one problem's A perturbed, b and c kept consistent with its solution."""
    base = known_solution_problem({"z": 2, "l": 14}, seed=seed, quadratic=False)
    rng = np.random.default_rng(seed)
    As, bs, cs = [], [], []
    for _ in range(count):
        A = base.A.copy()
        A.data = A.data * (1 + 0.01 * rng.standard_normal(A.nnz))
        As.append(A)
        bs.append(A @ base.x + base.s)
        cs.append(-(A.T @ base.y))
    return dict(As=As, bs=bs, cs=cs, cone_dicts=[base.cone_dict] * count)


@pytest.mark.parametrize("family", ["QP", "LP"])
@pytest.mark.parametrize("solver", ["SCS", "Clarabel"])
def test_compiled_orthant_refinement_takes_the_general_steps(small_qps_1000, family, solver,
                                                             monkeypatch):
    """Zero and orthant cones: the compiled per-member refinement (refactoring in the
    kernel) and the general path (each step over the block, through the combined cone
    product) take the same steps and reach the same refined solutions and gradients, to
    rounding (the compiled residual sums in another order)."""
    import diffqcp_np.batch.dense_refinement as dense_refinement
    from diffqcp_np.batch.dense import DenseBatchDerivative

    args = small_qps_1000[0] if family == "QP" else _lp_batch(300, seed=3)
    compiled_calls = []
    original = dense_refinement._refine_orthant
    monkeypatch.setattr(dense_refinement, "_refine_orthant",
                        lambda *a: compiled_calls.append(a[1:]) or original(*a))
    rng = np.random.default_rng(2)
    count, n = len(args["As"]), args["As"][0].shape[1]
    cots = [rng.standard_normal(n) for _ in range(count)]
    runs, calls_so_far = [], 0
    for compiled in (True, False):
        monkeypatch.setattr(DenseBatchDerivative, "refactors_compiled", compiled)
        xs, ys, ss, _, DT_batch, infos = diffqcp_np.solve_and_derivative_batch(
            **args, solve_method=solver, return_info=True, backend="serial")
        assert DT_batch.dense_batch is not None
        dAs, dbs, dcs = DT_batch(cots, [None] * count, [None] * count)
        runs.append((xs, ys, ss, [np.concatenate([a.data, b, c]) for a, b, c in
                                  zip(dAs, dbs, dcs)], [i["refinement"] for i in infos]))
        ran = len(compiled_calls)
        assert ran > 0 if compiled else ran == calls_so_far  # which path refined
        calls_so_far = ran
    counts = ("steps", "rejected", "factorizations", "unresolved_rows", "unresolved_cones",
              "status")
    (*fast, fast_reports), (*general, general_reports) = runs
    for k in range(count):
        for key in counts:
            assert fast_reports[k][key] == general_reports[k][key], (k, key)
        assert fast_reports[k]["residual_after"] <= refinement.TARGET_RESIDUAL
        assert fast_reports[k]["residual_before"] == pytest.approx(
            general_reports[k]["residual_before"], rel=1e-8)
        for got, want in zip(fast, general):
            assert relative_error(got[k], want[k]) < 1e-12, k
    assert sum(r["steps"] for r in fast_reports) >= count // 2
    if family == "QP":  # some face changed: the kernel refactored
        assert sum(r["factorizations"] for r in fast_reports) >= 1


def test_a_member_singular_after_a_refactorisation_is_left_to_its_fallback(small_qps_1000,
                                                                          monkeypatch):
    """A refinement step that changes D and leaves the new factorisation below the
    singularity threshold: both refinement paths stop that member, keep its solution as
    given and leave it (unreported) to its per-problem fallback; the other members are
    refined alike."""
    import diffqcp_np.batch.dense as dense_batch
    import diffqcp_np.batch.dense_refinement as dense_refinement
    from diffqcp_np.batch.api import _validate
    from diffqcp_np.batch.dense import DenseBatchDerivative
    from diffqcp_np.batch.runner import make_runner

    args = small_qps_1000[0]
    count = len(args["As"])
    validated, structure = _validate(args["As"], args["bs"], args["cs"], args["cone_dicts"],
                                     args["Ps"])
    runner = make_runner("serial", None, 1, "n_jobs", count, None, False)
    xs, ys, ss = diffqcp_np.solve_only_batch(**args, solve_method="SCS", backend="serial")

    def build(refine):
        return DenseBatchDerivative.build(structure, runner, count, list(range(count)),
                                          validated.stacked, xs, ys, ss, lambda i: None,
                                          refine=refine)

    given, refined = build(False), build(True)
    lowered = [k for k, r in enumerate(refined.reports) if r.factorizations
               and refined.pivot_ratio[k] < given.pivot_ratio[k]]
    assert lowered  # SCS's solutions of this batch: some refactorisation lowers the ratio
    k = lowered[0]
    threshold = 0.5 * (given.pivot_ratio[k] + refined.pivot_ratio[k])
    monkeypatch.setattr(dense_batch, "SINGULAR_PIVOT_RATIO", threshold)
    monkeypatch.setattr(dense_refinement, "SINGULAR_PIVOT_RATIO", threshold)
    outs = []
    for compiled in (True, False):
        monkeypatch.setattr(DenseBatchDerivative, "refactors_compiled", compiled)
        outs.append(build(True))
    fast, general = outs
    np.testing.assert_array_equal(fast.singular, general.singular)
    assert fast.singular[k] and fast.reports[k] is None and general.reports[k] is None
    np.testing.assert_array_equal(fast.X[k], xs[k])
    assert k in fast.fallbacks
    for j in np.flatnonzero(~fast.singular):
        assert fast.reports[j].steps == general.reports[j].steps, j
        assert relative_error(fast.X[j], general.X[j]) < 1e-12, j


def test_same_structure_sparse_path_refines_like_single_solves():
    """A same-structure batch too large for the batched dense derivative (N > 200): each
    problem's structured derivative refines as a single solve does."""
    from suite_problems import sparse_qp

    probs = [sparse_qp(100, seed=k) for k in range(3)]  # one banded pattern, N = 350
    assert BatchStructure.detect([p.A for p in probs], [p.P for p in probs],
                                 [p.cone_dict for p in probs]) is not None
    out = diffqcp_np.solve_and_derivative_batch(
        [p.A for p in probs], [p.b for p in probs], [p.c for p in probs],
        [p.cone_dict for p in probs], Ps=[p.P for p in probs], solve_method="SCS",
        return_info=True, backend="serial")
    assert out[4].dense_batch is None
    for k, p in enumerate(probs):
        single = solve_and_derivative_internal(p.A, p.b, p.c, p.cone_dict, P=p.P)
        assert out[5][k]["refinement"] == single["info"]["refinement"]
        for got, want in zip(out[:3], ("x", "y", "s")):
            assert relative_error(got[k], single[want]) < 1e-13


def _weakly_active(seed):
    """A problem whose exact solution has one orthant row with y_i = s_i = 0."""
    prob = known_solution_problem({"z": 1, "l": 8}, n=4, seed=seed)
    v = prob.y - prob.s
    v[1 + int(np.argmin(np.abs(v[1:])))] = 0.0
    y = pi(v, prob.cone_dict, dual=True)
    return prob, y, y - v


@pytest.mark.parametrize("backend", ["serial", "processes"])
def test_a_batch_names_its_undecided_problems_once(backend):
    probs = [known_solution_problem({"z": 1, "l": 8}, n=4, seed=1), _weakly_active(1)[0]]
    degenerate, y, s = _weakly_active(1)
    b = [probs[0].b, degenerate.A @ degenerate.x + s]
    c = [probs[0].c, -(degenerate.A.T @ y) - degenerate.P @ degenerate.x]
    with pytest.warns(InaccurateDerivativeWarning, match=r"^problem 1 \(1 of 2\)") as caught:
        out = diffqcp_np.solve_and_derivative_batch(
            [p.A for p in probs], b, c, [p.cone_dict for p in probs], Ps=[p.P for p in probs],
            solve_method="Clarabel", return_info=True, backend=backend, **TIGHT_CLARABEL)
    assert len([w for w in caught if w.category is InaccurateDerivativeWarning]) == 1
    assert out[5][0]["refinement"]["unresolved"] == 0
    assert out[5][1]["refinement"]["unresolved_rows"] == 1


def test_batches_without_refinement_return_the_forward_solutions():
    probs = [known_solution_problem({"z": 2, "l": 12}, n=6, seed=k) for k in range(3)]
    args = dict(As=[p.A for p in probs], bs=[p.b for p in probs], cs=[p.c for p in probs],
                cone_dicts=[p.cone_dict for p in probs], Ps=[p.P for p in probs])
    forward = diffqcp_np.solve_only_batch(**args, backend="serial")
    out = diffqcp_np.solve_and_derivative_batch(**args, refine=False, return_info=True,
                                                backend="serial")
    for got, want in zip(out[:3], forward):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert all("refinement" not in info for info in out[5])
    refined = diffqcp_np.solve_and_derivative_batch(**args, backend="serial")
    assert all(relative_error(x, p.x) < 1e-12 for x, p in zip(refined[0], probs))


def _same_structure(cones, count, seed):
    """Problems that differ only in their values (small: the batched dense derivative)."""
    base = known_solution_problem(cones, 5, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        A = base.A.copy()
        A.data = A.data * (1 + 0.01 * rng.standard_normal(A.nnz))
        out.append((A, A @ base.x + base.s, -(A.T @ base.y) - base.P @ base.x))
    return base, out


@pytest.mark.parametrize("cones", [{"z": 1, "l": 3, "q": [3, 4], "ep": 1, "ed": 1, "s": [2],
                                    "p": [0.3, -0.6]}, {"l": 4, "q": [5]}],
                         ids=["mixed", "soc"])
def test_batched_dense_refinement_of_curved_cones_matches_single_solves(cones):
    """At SCS's defaults every face stays but D moves with the point: the batched path
    refactors, the single path takes chord steps; both reach the same refined solution."""
    base, probs = _same_structure(cones, 6, seed=4)
    out = diffqcp_np.solve_and_derivative_batch(
        [p[0] for p in probs], [p[1] for p in probs], [p[2] for p in probs],
        [base.cone_dict] * 6, Ps=[base.P] * 6, solve_method="SCS", return_info=True,
        backend="serial")
    assert out[4].dense_batch is not None
    cots = [cotangent_of(base, k) for k in range(6)]
    got = _batch_gradients(out[4], cots)
    for k, (A, b, c) in enumerate(probs):
        single = solve_and_derivative_internal(A, b, c, base.cone_dict, P=base.P)
        report, want = out[5][k]["refinement"], single["info"]["refinement"]
        assert report["status"] == want["status"] == "converged"
        # the batched path takes Newton steps (a factorisation each); the single path
        # chord steps with the factorisation at the given point while they contract
        assert report["steps"] >= 1 and report["factorizations"] >= report["steps"]
        assert want["steps"] >= 1 and want["factorizations"] <= want["steps"] + 1
        assert relative_error(out[0][k], single["x"]) < 1e-12
        assert relative_error(got[k], gradient(single["DT"], cots[k])) < 1e-10


def test_the_refinement_benchmark_runs_and_finds_no_silent_errors():
    """benchmarks/bench_refinement.py at a tiny size (two problems per family): no row of
    its accuracy table has a refined gradient off by more than 1e-6 without a warning."""
    import bench_refinement

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = bench_refinement.accuracy_rows(2)
    assert len(rows) == 15
    assert all(row.rstrip(" |").endswith("| 0") for row in rows), rows
