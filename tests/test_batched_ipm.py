"""Tests of the batched dense interior-point method ("IPM", solve_method="auto").

Oracles: Clarabel at tight tolerance (solutions and active sets), finite differences by
re-solving (derivatives at the IPM's solution), hand-made infeasible and unbounded
problems, and the defining identities of the Nesterov-Todd scaling and step lengths.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from diffqcp_np import derivative, solve_and_derivative_batch, solve_only_batch
from diffqcp_np.cones import as_cone_spec
from diffqcp_np.solvers import (
    SharedPatterns,
    SolverError,
    resolve_solve_method,
    solve_cone_program,
)
from diffqcp_np.solvers import _batched_ipm_numba as kernels
from diffqcp_np.solvers.batched_ipm import BLOCK_SIZE, BatchedIPM, settings_array
from problems import known_solution_problem, relative_error

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

TIGHT_CLARABEL = dict(solve_method="Clarabel", tol_gap_abs=1e-13, tol_gap_rel=1e-13,
                      tol_feas=1e-13, max_iter=400)


def same_structure(cone_dict, count, n=None, quadratic=True, seed=0, spread=0.05):
    """``count`` problems on one pattern, each with its own known unique solution.

    The first problem's solution (:func:`known_solution_problem`: sizes chosen for
    uniqueness) is varied without changing its faces: every cone block of ``y`` and
    ``s`` scaled by its own positive factor, the zero-cone part of ``y`` and ``x`` drawn
    anew; ``A`` and ``P`` are perturbed by ``spread``.
    """
    base = known_solution_problem(cone_dict, n, seed=seed, quadratic=quadratic)
    spec = as_cone_spec(cone_dict)
    blocks = [(spec.zero + i, spec.zero + i + 1) for i in range(spec.nonneg)]
    start = spec.zero + spec.nonneg
    for d in spec.soc:
        blocks.append((start, start + d))
        start += d
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        A = base.A.copy()
        A.data = A.data * (1 + spread * rng.standard_normal(A.nnz))
        P = None
        if quadratic:
            F = rng.standard_normal(base.P.shape) * spread
            P = sp.csc_matrix(base.P.toarray() + F @ F.T)
        y, s = base.y.copy(), base.s.copy()
        y[:spec.zero] = rng.standard_normal(spec.zero)
        for lo, hi in blocks:
            y[lo:hi] *= rng.uniform(0.5, 2.0)
            s[lo:hi] *= rng.uniform(0.5, 2.0)
        x = rng.standard_normal(A.shape[1])
        b = A @ x + s
        c = -(A.T @ y) - (0 if P is None else P @ x)
        out.append(dict(A=A, b=b, c=c, cone_dict=cone_dict, P=P, x=x, y=y, s=s))
    return out


def args_of(probs):
    return dict(As=[p["A"] for p in probs], bs=[p["b"] for p in probs],
                cs=[p["c"] for p in probs], cone_dicts=[p["cone_dict"] for p in probs],
                Ps=[p["P"] for p in probs])


CASES = {
    "qp": ({"z": 3, "l": 12}, 8, True),
    "lp": ({"z": 2, "l": 14}, None, False),
    "socp": ({"z": 1, "l": 3, "q": [5, 5, 4]}, 8, True),
    "socp_lp": ({"l": 4, "q": [5, 5]}, None, False),
}


def test_members_it_fails_on_are_solved_again_by_the_fallback():
    """A member that the interior-point method cannot solve (here a warm start at the
    cones' vertex, hardly moved inside: it stalls) is solved again by the fallback
    solver (as "auto" sets one up), whose optimal result replaces the failure."""
    probs = same_structure({"z": 2, "l": 10, "q": [4]}, 4, 6, seed=7)
    m, n = probs[0]["A"].shape
    warm = [None, None, (np.zeros(n), np.zeros(m), np.zeros(m)), None]
    settings = dict(warm_start_shift=1e-14)
    infos = solve_only_batch(**args_of(probs), warm_starts=warm, return_info=True,
                             raise_on_error=False, solve_method="IPM", **settings)[3]
    assert [i["canonical_status"] for i in infos] == ["optimal", "optimal", "failed",
                                                      "optimal"]
    A0 = probs[0]["A"]
    upper = sp.triu(probs[0]["P"], format="csc")
    patterns = SharedPatterns(A0.shape, A0.indices, A0.indptr, upper.indices, upper.indptr)
    solver = BatchedIPM(as_cone_spec(probs[0]["cone_dict"]), patterns, fallback="Clarabel",
                        **settings)
    out = solver.solve(np.stack([p["A"].data for p in probs]), np.stack([p["b"] for p in probs]),
                       np.stack([p["c"] for p in probs]),
                       np.stack([sp.triu(p["P"], format="csc").data for p in probs]), warm)
    results = [out.result(k) for k in range(4)]
    assert [r.info["solver"] for r in results] == ["IPM", "IPM", "CLARABEL", "IPM"]
    # the optimal members' results from the stacked arrays are the same results
    optimal = out.optimal()
    assert optimal.tolist() == [True, True, False, True]
    for k in (0, 1, 3):
        assert out.optimal_info(k) == results[k].info and results[k].status == "optimal"
        for got, want in ((out.x[k], results[k].x), (out.y[k], results[k].y),
                          (out.s[k], results[k].s)):
            np.testing.assert_array_equal(got, want)
    assert all(r.status == "optimal" for r in results)
    assert relative_error(results[2].x, probs[2]["x"]) < 1e-6


def face_codes(v: np.ndarray, spec) -> np.ndarray:
    """Per cone block of ``v = y − s``: 1 where ``y`` is inside its cone (``s = 0``),
    −1 where ``s`` is (``y = 0``), 0 where both are on the boundary; ``margin`` is how
    far (relative) the block is from the nearest change of face."""
    codes, margins = [], []
    for i in range(spec.zero, spec.zero + spec.nonneg):
        codes.append(np.sign(v[i]))
        margins.append(abs(v[i]))
    lo = spec.zero + spec.nonneg
    for d in spec.soc:
        t, r = v[lo], np.linalg.norm(v[lo + 1:lo + d])
        lo += d
        codes.append(1 if r < t else (-1 if r < -t else 0))
        margins.append(min(abs(t - r), abs(t + r)) / max(abs(t) + r, 1e-300))
    return np.array(codes), np.array(margins)


@pytest.mark.filterwarnings("ignore::diffqcp_np.solvers.base.InaccurateSolutionWarning")
def test_a_thousand_socps_match_their_known_solutions_and_clarabels_faces():
    """1000 members, each with its own faces (most second-order cones with s and y both
    on the boundary): all solved, x, y, s at the rounding level of the known solution,
    every cone on the known solution's face and on Clarabel's (tolerances 1e-12).
    Clarabel's own x there is only within ~1e-4 of the known solution (its iterates,
    like any interior-point method's with Nesterov-Todd scaling, leave a cone's s and y
    out of line by ~√μ; this method polishes its solution, see _batched_ipm_numba)."""
    from bench_peers import small_socps  # the benchmark's SOCP batch

    As, bs, cs, cone_dicts, Ps, xs, ys, ss = small_socps(1000, seed=11, solutions=True)
    probs = [dict(A=A, b=b, c=c, cone_dict=d, P=P, x=x, y=y, s=s)
             for A, b, c, d, P, x, y, s in zip(As, bs, cs, cone_dicts, Ps, xs, ys, ss)]
    spec = as_cone_spec(cone_dicts[0])
    xs, ys, ss, infos = solve_only_batch(**args_of(probs), return_info=True,
                                         solve_method="IPM")
    assert all(i["solver_status"] == "Solved" for i in infos)
    clarabel_error = 0.0
    for p, x, y, s in zip(probs, xs, ys, ss):
        scale = 1 + max(np.abs(p["x"]).max(), np.abs(p["y"]).max(), np.abs(p["s"]).max())
        for got, want in ((x, p["x"]), (y, p["y"]), (s, p["s"])):
            assert np.abs(got - want).max() < 1e-10 * scale
        known, _ = face_codes(p["y"] - p["s"], spec)
        np.testing.assert_array_equal(face_codes(y - s, spec)[0], known)
        want = solve_cone_program(p["A"], p["b"], p["c"], spec, P=p["P"], solve_method="Clarabel",
                                  tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
                                  max_iter=400, raise_on_error=False)
        codes, margins = face_codes(want.y - want.s, spec)
        decided = margins > 1e-4  # Clarabel's point decides the block's face
        np.testing.assert_array_equal(codes[decided], known[decided])
        clarabel_error = max(clarabel_error, np.abs(want.x - p["x"]).max() / scale)
    assert clarabel_error < 1e-3


# Clarabel at 1e-13 ends some second-order cone problems "AlmostSolved"
@pytest.mark.filterwarnings("ignore::diffqcp_np.solvers.base.InaccurateSolutionWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_finds_the_known_solutions_and_clarabels_active_sets(case):
    """x, y and s to 1e-9 relative (the polished solution); Clarabel's x to its own
    accuracy on second-order cones (1e-5) and the same active sets."""
    cone_dict, n, quadratic = CASES[case]
    probs = same_structure(cone_dict, 12, n, quadratic, seed=3)
    xs, ys, ss, infos = solve_only_batch(**args_of(probs), return_info=True,
                                         solve_method="IPM")
    spec = as_cone_spec(cone_dict)
    orthant = slice(spec.zero, spec.zero + spec.nonneg)
    for p, x, y, s, info in zip(probs, xs, ys, ss, infos):
        assert info["solver"] == "IPM" and info["canonical_status"] == "optimal"
        assert info["iter"] > 0 and info["solve_time"] >= 0
        assert relative_error(x, p["x"]) < 1e-9
        assert relative_error(y, p["y"]) < 1e-9 and relative_error(s, p["s"]) < 1e-9
        want = solve_cone_program(p["A"], p["b"], p["c"], spec, P=p["P"], **TIGHT_CLARABEL)
        assert relative_error(x, want.x) < (1e-5 if spec.soc else 1e-7)
        # the same active set, strictly complementary
        np.testing.assert_array_equal(y[orthant] > s[orthant], want.y[orthant] > want.s[orthant])
        assert np.all(np.maximum(y[orthant], s[orthant])
                      > 1e6 * np.minimum(y[orthant], s[orthant]))


def finite_difference(p, direction, h=1e-5, **solver):
    """Central difference of x along (db, dc) by re-solving (Clarabel at tight tolerance
    unless ``solver`` names another)."""
    spec = as_cone_spec(p["cone_dict"])
    db, dc = direction
    settings = solver or TIGHT_CLARABEL
    plus = solve_cone_program(p["A"], p["b"] + h * db, p["c"] + h * dc, spec, P=p["P"],
                              **settings)
    minus = solve_cone_program(p["A"], p["b"] - h * db, p["c"] - h * dc, spec, P=p["P"],
                               **settings)
    return (plus.x - minus.x) / (2 * h)


@pytest.mark.parametrize("refine", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_derivative_at_its_solution_is_the_derivative_at_the_known_solution(case, refine):
    """With and without the solution refinement before differentiating (the forward
    solution itself is accurate enough): the derivative at the known solution to 1e-8,
    and finite differences, of Clarabel's solutions on the QPs and of this method's own
    on the others (Clarabel's second-order cone solutions are too coarse for a finite
    difference, see above)."""
    cone_dict, n, quadratic = CASES[case]
    probs = same_structure(cone_dict, 4, n, quadratic, seed=5)
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**args_of(probs),
                                                               solve_method="IPM",
                                                               refine=refine)
    rng = np.random.default_rng(0)
    dirs = [(rng.standard_normal(p["b"].size), rng.standard_normal(p["c"].size))
            for p in probs]
    dxs, _, _ = D_batch([None] * 4, [d[0] for d in dirs], [d[1] for d in dirs])
    for p, dx, d in zip(probs, dxs, dirs):
        D, _ = derivative(p["A"], p["b"], p["c"], p["cone_dict"], p["x"], p["y"], p["s"],
                          P=p["P"])
        assert relative_error(dx, D(None, d[0], d[1])[0]) < 1e-8
        if case == "qp":
            assert relative_error(dx, finite_difference(p, d)) < 1e-6
        else:
            assert relative_error(dx, finite_difference(p, d, 1e-6, solve_method="IPM")) < 1e-6


@pytest.mark.parametrize("cone_dict", [{"z": 2, "l": 10, "q": [4]}, {"z": 2, "l": 14}])
def test_results_do_not_depend_on_threads_or_blocks(cone_dict):
    """Interior-point (with a SOC) and active-set (polyhedral QPs) problems."""
    probs = same_structure(cone_dict, 2 * BLOCK_SIZE + 5, 6, seed=7)
    one = solve_only_batch(**args_of(probs), n_jobs_forward=1, return_info=True,
                           solve_method="IPM")
    two = solve_only_batch(**args_of(probs), n_jobs_forward=2, return_info=True,
                           solve_method="IPM")
    alone = solve_only_batch(**args_of(probs[-3:]), n_jobs_forward=1, solve_method="IPM")
    for k in range(3):
        for a, b in zip(one[k], two[k]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(one[k][-3:], alone[k]):
            np.testing.assert_array_equal(a, b)
    assert [i["iter"] for i in one[3]] == [i["iter"] for i in two[3]]


def infeasible_and_unbounded():
    """Problem 1 primal infeasible (x ≤ −1 and x ≥ 1), problem 2 unbounded below (an LP
    with a free direction), problems 0 and 3 fine; one structure."""
    A = sp.csc_matrix(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]]))
    cone = {"l": 3}
    good = dict(A=A, b=np.array([1.0, 1.0, 0.0]), c=np.array([0.3, 1.0]), cone_dict=cone,
                P=None)
    infeasible = dict(good, b=np.array([-1.0, -1.0, 0.0]))
    unbounded = dict(good, c=np.array([0.3, -1.0]))
    return [good, infeasible, unbounded, dict(good, c=np.array([-0.2, 2.0]))]


def test_infeasible_and_unbounded_members_are_isolated():
    probs = infeasible_and_unbounded()
    with pytest.raises(SolverError, match=r"^Solver ipm returned status PrimalInfeasible\. "
                                          r".*\(problem 1 of the batch\)"):
        solve_only_batch(**args_of(probs))
    xs, ys, ss, D_batch, DT_batch, infos = solve_and_derivative_batch(
        **args_of(probs), raise_on_error=False, return_info=True)
    assert [i["canonical_status"] for i in infos] == ["optimal", "infeasible", "unbounded",
                                                      "optimal"]
    assert infos[1]["solver_status"] == "PrimalInfeasible"
    assert infos[2]["solver_status"] == "DualInfeasible"
    for k in (1, 2):
        assert all(np.isnan(v).all() for v in (xs[k], ys[k], ss[k]))
    np.testing.assert_allclose(xs[0], [-1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(xs[3], [1.0, 0.0], atol=1e-9)
    dAs, dbs, dcs = DT_batch([np.ones(2)] * 4, [None] * 4, [None] * 4)
    assert np.isnan(dcs[1]).all() and np.isfinite(dcs[0]).all()


def test_certificates_of_single_solves():
    probs = infeasible_and_unbounded()
    spec = as_cone_spec(probs[0]["cone_dict"])
    inf = solve_cone_program(probs[1]["A"], probs[1]["b"], probs[1]["c"], spec,
                             solve_method="IPM", raise_on_error=False)
    assert inf.status == "infeasible"
    y = inf.y  # A'y = 0, b'y = −1, y ≥ 0
    assert np.abs(probs[1]["A"].T @ y).max() < 1e-8 and probs[1]["b"] @ y == pytest.approx(-1)
    assert y.min() > -1e-12
    unb = solve_cone_program(probs[2]["A"], probs[2]["b"], probs[2]["c"], spec,
                             solve_method="IPM", raise_on_error=False)
    assert unb.status == "unbounded"  # Ax + s = 0, s ≥ 0, c'x = −1
    assert np.abs(probs[2]["A"] @ unb.x + unb.s).max() < 1e-8
    assert probs[2]["c"] @ unb.x == pytest.approx(-1) and unb.s.min() > -1e-12


def test_degenerate_and_rank_deficient_problems_are_solved():
    """An LP whose solutions form a face (c = −A'y with few active rows), and a QP with
    a duplicated equality row and a duplicated active inequality."""
    base = same_structure({"z": 2, "l": 12}, 1, 8, quadratic=False, seed=11)[0]
    lp = dict(base, c=-(base["A"].T @ np.r_[1.0, -1.0, np.zeros(11), 1.0]))
    A = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0],
                  [0.0, 0.0, -1.0]])
    qp = dict(A=sp.csc_matrix(A), b=np.array([1.0, 1.0, 0.2, 0.2, 0.0]),
              c=np.array([-1.0, 0.0, 1.0]), cone_dict={"z": 2, "l": 3},
              P=sp.csc_matrix(np.eye(3)))
    for p in (lp, qp):
        x, y, s, info = (v[0] for v in solve_only_batch(**args_of([p]), return_info=True))
        assert info["canonical_status"] in ("optimal", "optimal_inaccurate")
        want = solve_cone_program(p["A"], p["b"], p["c"], as_cone_spec(p["cone_dict"]),
                                  P=p["P"], **TIGHT_CLARABEL)
        value = p["c"] @ x + (0 if p["P"] is None else 0.5 * x @ (p["P"] @ x))
        wanted = p["c"] @ want.x + (0 if p["P"] is None else 0.5 * want.x @ (p["P"] @ want.x))
        assert value == pytest.approx(wanted, abs=1e-7)
        assert np.abs(p["A"] @ x + s - p["b"]).max() < 1e-8
    np.testing.assert_allclose(x, [0.2, 0.8, 0.0], atol=1e-8)


@pytest.mark.parametrize("quadratic", [True, False])
def test_warm_starts_cut_interior_point_iterations(quadratic):
    """After a 0.1% change of b; the active-set method (strictly convex QPs) ignores warm
    starts, so that the QPs here go to the interior-point method."""
    probs = same_structure({"z": 2, "l": 14}, 20, 8, quadratic=quadratic, seed=13)
    settings = dict(solve_method="IPM", active_set=False)
    xs, ys, ss, infos = solve_only_batch(**args_of(probs), return_info=True, **settings)
    rng = np.random.default_rng(1)
    moved = [dict(p, b=p["b"] * (1 + 1e-3 * rng.standard_normal(p["b"].size))) for p in probs]
    cold = solve_only_batch(**args_of(moved), return_info=True, **settings)
    warm = solve_only_batch(**args_of(moved), warm_starts=list(zip(xs, ys, ss)),
                            return_info=True, **settings)
    assert sum(i["iter"] for i in warm[3]) < 0.75 * sum(i["iter"] for i in cold[3])
    assert all(i["method"] == "interior_point" for i in warm[3])
    for a, b in zip(warm[0], cold[0]):
        assert relative_error(a, b) < 1e-7


def test_active_set_method_for_strictly_convex_qps():
    """QPs with P ≻ 0 and polyhedral cones: the dual active-set method, exactly
    complementary; an infeasible member goes to the interior-point method, which
    certifies it; active_set=False asks for the interior-point method."""
    probs = same_structure({"z": 2, "l": 14}, 6, 8, seed=19)
    infeasible = dict(probs[1])
    A = infeasible["A"].toarray()
    A[-1], A[-2] = A[2], -A[2]  # a_2'x ≤ b_2 - 1 and -a_2'x ≤ -b_2: no x
    infeasible["A"] = sp.csc_matrix(A)
    infeasible["b"] = infeasible["b"].copy()
    infeasible["b"][-2:] = [-1.0, -infeasible["b"][2] - 2.0]
    xs, ys, ss, infos = solve_only_batch(**args_of(probs), return_info=True)
    assert all(i["method"] == "active_set" for i in infos)
    for p, x, y, s in zip(probs, xs, ys, ss):
        assert relative_error(x, p["x"]) < 1e-10 and relative_error(y, p["y"]) < 1e-10
        assert np.all((y == 0) | (s == 0)) and s @ y == 0
    ipm = solve_only_batch(**args_of(probs), return_info=True, active_set=False)
    assert all(i["method"] == "interior_point" for i in ipm[3])
    for x, x_ipm in zip(xs, ipm[0]):
        assert relative_error(x, x_ipm) < 1e-8
    single = args_of([infeasible])
    infos = solve_only_batch(**single, return_info=True, raise_on_error=False)[3]
    assert infos[0]["canonical_status"] == "infeasible"
    assert infos[0]["method"] == "interior_point"


def test_auto_picks_the_solver_it_can():
    polyhedral = as_cone_spec({"z": 1, "l": 8})
    soc = as_cone_spec({"z": 1, "l": 5, "q": [3]})
    assert resolve_solve_method("auto", polyhedral, (9, 4), {}) == "IPM"
    assert resolve_solve_method("AUTO", polyhedral, (9, 4), {"tol_feas": 1e-9}) == "IPM"
    assert resolve_solve_method("auto", polyhedral, (9, 4), {"eps": 1e-6}) == "SCS"
    assert resolve_solve_method("auto", polyhedral, (300, 4), {}) == "SCS"
    assert resolve_solve_method("auto", soc, (9, 4), {}) == "SCS"  # SOCs: not yet
    assert resolve_solve_method("auto", as_cone_spec({"l": 1, "ep": 1}), (4, 2), {}) == "SCS"
    assert resolve_solve_method("Clarabel", soc, (9, 4), {}) == "Clarabel"
    probs = same_structure({"z": 1, "l": 8}, 3, 4, seed=17)
    assert solve_only_batch(**args_of(probs), return_info=True)[3][0]["solver"] == "IPM"
    info = solve_only_batch(**args_of(probs), return_info=True, eps=1e-8)[3][0]
    assert info["solver"] == "SCS"
    socps = same_structure({"z": 1, "l": 5, "q": [3]}, 3, 4, seed=17)
    assert solve_only_batch(**args_of(socps), return_info=True)[3][0]["solver"] == "SCS"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = solve_only_batch(**args_of(socps), return_info=True, solve_method="IPM",
                                max_iter=3, raise_on_error=False)[3][0]
    assert info["iter"] == 3


def test_settings_and_cones_are_checked():
    with pytest.raises(ValueError, match="unknown IPM setting 'eps'"):
        settings_array(eps=1e-3)
    with pytest.raises(ValueError, match="max_step_fraction"):
        settings_array(max_step_fraction=1.5)
    with pytest.raises(ValueError, match="max_iter"):
        settings_array(max_iter=2.5)
    spec = as_cone_spec({"l": 1, "s": [2]})
    patterns = SharedPatterns((4, 1), np.arange(4), np.array([0, 4]))
    with pytest.raises(ValueError, match=r"IPM does not support PSD"):
        BatchedIPM(spec, patterns)


# -- the kernels' cone algebra ----------------------------------------------------------------
def soc_structure(dims):
    """A structure tuple with only the cone fields the scaling kernels read."""
    start = np.cumsum([0] + list(dims[:-1])).astype(np.int64)
    empty = np.zeros(0, dtype=np.int64)
    d = np.zeros(kernels.N_DIMS, dtype=np.int64)
    d[kernels.D_M] = sum(dims)
    d[kernels.D_NSOC] = len(dims)
    return (empty,) * 7 + (start, np.asarray(dims, dtype=np.int64)) + (empty,) * 3 + (d,)


def interior_point(rng, d):
    u = rng.standard_normal(d)
    u[0] = np.linalg.norm(u[1:]) + rng.uniform(1e-3, 2.0)
    return u


def test_nesterov_todd_scaling_identities():
    rng = np.random.default_rng(2)
    dims = [1, 2, 3, 5]
    S = soc_structure(dims)
    m = sum(dims)
    for _ in range(20):
        s = np.concatenate([interior_point(rng, d) for d in dims])
        z = np.concatenate([interior_point(rng, d) for d in dims])
        w, eta, beta, lam = np.ones(m), np.empty(4), np.empty(4), np.empty(m)
        assert kernels._update_scaling(S, s, z, w, eta, beta, lam)
        Wz, Winv_s = np.empty(m), np.empty(m)
        kernels._apply_w(S, z, Wz, w, eta, beta, 1)
        kernels._apply_w(S, s, Winv_s, w, eta, beta, -1)
        np.testing.assert_allclose(Wz, Winv_s, rtol=1e-10, atol=1e-12)  # W z = W⁻¹ s = λ
        np.testing.assert_allclose(lam, Wz, rtol=1e-10, atol=1e-12)
        back, H, HH = np.empty(m), np.empty(m), np.empty(m)
        kernels._apply_w(S, Wz, back, w, eta, beta, -1)
        np.testing.assert_allclose(back, z, rtol=1e-10, atol=1e-12)
        kernels._apply_w(S, z, H, w, eta, beta, 2)  # W² z = s
        np.testing.assert_allclose(H, s, rtol=1e-10, atol=1e-12)
        kernels._apply_w(S, s, HH, w, eta, beta, -2)
        np.testing.assert_allclose(HH, z, rtol=1e-10, atol=1e-12)
        # λ ∘ (λ \ v) = v
        v = rng.standard_normal(m)
        x, again = np.empty(m), np.empty(m)
        kernels._jordan_solve(S, lam, v, x)
        kernels._jordan(S, lam, x, again)
        np.testing.assert_allclose(again, v, rtol=1e-9, atol=1e-9)


def soc_margin(u: np.ndarray) -> float:
    """``u0 − ‖u1‖``: positive inside the second-order cone."""
    return u[0] - np.linalg.norm(u[1:])


def test_soc_step_length_reaches_the_boundary():
    rng = np.random.default_rng(4)
    for _ in range(200):
        d = int(rng.integers(1, 6))
        u = interior_point(rng, d)
        du = rng.standard_normal(d) * rng.uniform(0.1, 10)
        t = kernels._soc_step(u, du, 0, d, np.inf)
        if np.isfinite(t):
            scale = 1 + np.abs(u).max() + t * np.abs(du).max()
            assert abs(soc_margin(u + t * du)) < 1e-9 * scale
            assert soc_margin(u + 0.999 * t * du) > 0
        else:
            assert all(soc_margin(u + a * du) > 0 for a in (1.0, 10.0, 1e3))


def test_warm_starts_from_the_previous_batch_of_the_structure():
    """Every batch of a structure leaves its solutions for the next one's
    ``warm_starts="previous"`` (a structure of its own here: the first call starts cold)."""
    probs = same_structure({"z": 2, "l": 15}, 20, 8, quadratic=False, seed=23)
    rng = np.random.default_rng(2)
    moved = [dict(p, b=p["b"] * (1 + 1e-3 * rng.standard_normal(p["b"].size))) for p in probs]
    first = solve_only_batch(**args_of(probs), warm_starts="previous", return_info=True)[3]
    again = solve_only_batch(**args_of(moved), warm_starts="previous", return_info=True)
    fewer = solve_only_batch(**args_of(moved[:5]), warm_starts="previous", return_info=True)[3]
    cold_moved = solve_only_batch(**args_of(moved), return_info=True)
    cold = solve_only_batch(**args_of(probs), return_info=True)[3]
    assert [i["iter"] for i in first] == [i["iter"] for i in cold]
    assert sum(i["iter"] for i in again[3]) < 0.75 * sum(i["iter"] for i in cold_moved[3])
    for a, b in zip(again[0], cold_moved[0]):
        assert relative_error(a, b) < 1e-7
    # a batch of another size has no previous solutions: a cold start
    assert [i["iter"] for i in fewer] == [i["iter"] for i in cold_moved[3][:5]]
    with pytest.raises(ValueError, match='warm_starts must be .* or "previous"'):
        solve_only_batch(**args_of(probs), warm_starts="last")


def test_structure_and_its_solver_are_set_up_once():
    from diffqcp_np.batch.structure import BatchStructure

    probs = same_structure({"z": 1, "l": 6}, 3, 4, seed=29)
    args = args_of(probs)
    first = BatchStructure.detect(args["As"], args["Ps"], args["cone_dicts"])
    again = BatchStructure.detect([p.copy() for p in args["As"]], args["Ps"],
                                  args["cone_dicts"])
    assert first is again
    made = []
    assert first.cached("k", lambda: made.append(1) or "solver") == "solver"
    assert first.cached("k", lambda: made.append(1) or "other") == "solver" and made == [1]
