"""Smoothed derivatives (``derivative_kwargs=dict(smoothing=mu)``).

Oracles: the central-path conditions ``y ∘ s = μ e`` themselves (for the smoothed
projection), finite differences of the projection, a naive dense primal-dual
interior-point method on the central-path equations (:func:`naive.central_path_point`)
for the smoothed solution and, re-solved at perturbed data, for the derivative; the
dot-product adjoint test; the exact derivative (the library's, itself checked against
independent oracles in ``test_derivative.py``) as ``μ → 0``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np as dq
from diffqcp_np import NonDifferentiableWarning
from diffqcp_np._validation import check_problem
from diffqcp_np.cones import pi
from diffqcp_np.cones.smoothing import SmoothedConeJacobian, smoothed_projection
from diffqcp_np.derivative.smoothing import SmoothedDerivative
from naive import central_path_point
from problems import inner, known_solution_problem, random_perturbation, relative_error

CONES = {"z": 2, "l": 4, "q": [3, 5, 1, 4]}


def _jordan_blocks(y, s, cones):
    """The products ``y ∘ s`` of each orthant entry and SOC block."""
    nonneg, start = cones["l"], cones["z"]
    out = list(y[start:start + nonneg] * s[start:start + nonneg])
    start += nonneg
    for q in cones["q"]:
        u, w = y[start:start + q], s[start:start + q]
        out.append(np.concatenate([[u @ w], u[0] * w[1:] + w[0] * u[1:]]))
        start += q
    return out


@pytest.mark.parametrize("mu", [1e-1, 1e-4, 1e-9])
@pytest.mark.parametrize("seed", range(3))
def test_smoothed_projection_is_the_central_path_point(mu, seed):
    v = 3 * np.random.default_rng(seed).standard_normal(2 + 4 + 13)
    y = smoothed_projection(v, CONES, mu)
    s = y - v
    np.testing.assert_array_equal(y[:2], v[:2])  # the zero cone's dual is free
    products = _jordan_blocks(y, s, CONES)
    # s = y − v here carries an absolute rounding error of about eps |v|
    atol = 1e-9 * mu + 1e-14 * np.max(np.abs(v)) ** 2
    for value in products[:4]:
        assert abs(value - mu) <= atol
    for block in products[4:]:
        e = np.zeros(block.size)
        e[0] = mu
        np.testing.assert_allclose(block, e, rtol=0, atol=atol)
    assert np.all(y[2:6] > 0) and np.all(s[2:6] > 0)
    start = 6
    for q in CONES["q"]:
        for u in (y[start:start + q], s[start:start + q]):
            assert u[0] > np.linalg.norm(u[1:])
        start += q


@pytest.mark.parametrize("seed", range(3))
def test_smoothed_jacobian_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(19)
    v[7:10] = [0.0, 0.0, 0.0]  # an SOC block at its vertex (ρ = 0)
    mu, h = 1e-2, 1e-6
    J = SmoothedConeJacobian(v, CONES, mu)
    fd = np.column_stack([(smoothed_projection(v + h * e, CONES, mu)
                           - smoothed_projection(v - h * e, CONES, mu)) / (2 * h)
                          for e in np.eye(v.size)])
    np.testing.assert_allclose(J.to_dense(), fd, atol=1e-8)
    np.testing.assert_allclose(J.to_dense(), J.to_dense().T, atol=1e-15)
    eig = np.linalg.eigvalsh(J.to_dense()[2:, 2:])
    assert eig.min() > 0 and eig.max() < 1  # no kink, no null space
    x = rng.standard_normal(v.size)
    np.testing.assert_allclose(J.matvec(x), J.to_dense() @ x, atol=1e-14)


def test_smoothed_projection_tends_to_the_projection_and_keeps_its_digits():
    v = np.random.default_rng(4).standard_normal(19)
    np.testing.assert_allclose(smoothed_projection(v, CONES, 1e-16), pi(v, CONES, dual=True),
                               atol=1e-7)
    far = np.array([-1e12, 1e12, -1e-3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = smoothed_projection(far, {"l": 3}, 1e-4)
        s = smoothed_projection(-far, {"l": 3}, 1e-4)  # s = Π_μ(v) − v = Π_μ(−v)
    np.testing.assert_allclose(y * s, 1e-4, rtol=1e-12)  # y s = μ to every digit
    np.testing.assert_allclose(y - s, far, rtol=1e-15)


# -- the smoothed solution and its derivative ----------------------------------------------
def _box_lp(n: int = 4, seed: int = 0):
    """min c'x s.t. 0 <= x <= 1 and one loose coupling row: a nondegenerate vertex,
    where dx/dc = 0 exactly."""
    rng = np.random.default_rng(seed)
    A = sp.csc_matrix(np.vstack([-np.eye(n), np.eye(n), rng.standard_normal((1, n))]))
    b = np.concatenate([np.zeros(n), np.ones(n), [10.0]])
    c = rng.standard_normal(n)
    return A, b, c, None, {"l": 2 * n + 1}


def _socp_qp(seed: int = 1):
    """min ½x'Px + c'x s.t. equality rows, nonnegativity and SOC constraints."""
    rng = np.random.default_rng(seed)
    n = 5
    cones = {"z": 1, "l": 3, "q": [3, 4]}
    m = 1 + 3 + 7
    A = sp.csc_matrix(rng.standard_normal((m, n)))
    x0 = rng.standard_normal(n)
    # b with a strictly feasible slack, so that the problem is feasible
    slack = np.concatenate([[0.0], np.ones(3), [2.0, 0.3, -0.4], [3.0, 1.0, 0.5, -1.0]])
    b = A @ x0 + slack
    F = rng.standard_normal((n, n))
    P = sp.csc_matrix(F @ F.T / n + 0.1 * np.eye(n))
    c = rng.standard_normal(n)
    return A, b, c, P, cones


def _degenerate_lp():
    """min x₁ + x₂ s.t. x ≥ 0 and x₁ + x₂ ≥ 0: three active rows in the plane, the dual
    is not unique and the exact derivative does not exist."""
    A = sp.csc_matrix(-np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    return A, np.zeros(3), np.ones(2), None, {"l": 3}


PROBLEMS = {"box_lp": _box_lp, "socp_qp": _socp_qp, "degenerate_lp": _degenerate_lp}


def _solved(problem, mu, **kwargs):
    A, b, c, P, cones = problem
    return dq.solve_and_derivative(A, b, c, cones, P=P, solve_method="Clarabel",
                                   derivative_kwargs=dict(smoothing=mu, **kwargs))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("mu", [1e-2, 1e-5])
def test_smoothed_solution_matches_a_naive_interior_point_method(name, mu):
    A, b, c, P, cones = PROBLEMS[name]()
    x, y, s = dq.solve_only(A, b, c, cones, P=P, solve_method="Clarabel")
    derivative = SmoothedDerivative(check_problem(A, b, c, cones, P), x, y, s, smoothing=mu)
    assert derivative.smoothing.converged
    for got, want in zip((derivative.x, derivative.y, derivative.s),
                         central_path_point(A, b, c, P, cones, mu)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def _perturbation(problem, seed: int):
    A, b, c, P, cones = problem
    rng = np.random.default_rng(seed)
    dA = sp.csc_matrix(A.multiply(rng.standard_normal(A.shape)))
    half = None if P is None else sp.csc_matrix(P.multiply(rng.standard_normal(P.shape)))
    dP = None if P is None else half + half.T  # symmetric, on P's pattern
    return dA, rng.standard_normal(b.size), rng.standard_normal(c.size), dP


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("mode", ["direct", "dense", "lsmr"])
def test_jvp_matches_finite_differences_of_the_smoothed_problem(name, mode):
    problem = PROBLEMS[name]()
    A, b, c, P, cones = problem
    mu, h = 1e-3, 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the smoothed map is differentiable
        if mode == "direct":
            *_, D, _ = _solved(problem, mu)
        else:
            x, y, s = dq.solve_only(A, b, c, cones, P=P, solve_method="Clarabel")
            D, _ = dq.derivative(A, b, c, cones, x, y, s, P=P, mode=mode, smoothing=mu)
    dA, db, dc, dP = _perturbation(problem, seed=7)
    got = D(dA, db, dc, dP=dP)
    plus = central_path_point(A + h * dA, b + h * db, c + h * dc,
                              None if P is None else P + h * dP, cones, mu)
    minus = central_path_point(A - h * dA, b - h * db, c - h * dc,
                               None if P is None else P - h * dP, cones, mu)
    tol = 1e-6 if mode != "lsmr" else 1e-5
    for g, p, q in zip(got, plus, minus):
        want = (p - q) / (2 * h)
        assert relative_error(g, want) < tol


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_vjp_is_the_adjoint_of_the_jvp(name):
    problem = PROBLEMS[name]()
    *_, D, DT = _solved(problem, 1e-4)
    dA, db, dc, dP = _perturbation(problem, seed=3)
    rng = np.random.default_rng(5)
    dx, dy, ds = D(dA, db, dc, dP=dP)
    gx, gy, gs = (rng.standard_normal(v.size) for v in (dx, dy, ds))
    out = DT(gx, gy, gs, return_dP=True)
    lhs = gx @ dx + gy @ dy + gs @ ds
    rhs = inner(out[0], dA) + out[1] @ db + out[2] @ dc
    if dP is not None:
        rhs += inner(out[3], dP)
    assert abs(lhs - rhs) <= 1e-10 * max(abs(lhs), 1.0)


@pytest.mark.parametrize("cones,quadratic", [({"z": 2, "l": 10}, False),
                                             ({"z": 2, "l": 10}, True),
                                             ({"z": 1, "l": 3, "q": [3, 5, 4]}, False)])
def test_smoothed_derivative_tends_to_the_exact_one_at_a_nondegenerate_point(cones,
                                                                            quadratic):
    prob = known_solution_problem(cones, 7, seed=2, quadratic=quadratic)
    rng = np.random.default_rng(0)
    dA, db, dc, dP = random_perturbation(prob, rng)
    D, _ = dq.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                         P=prob.P)
    exact = np.concatenate(D(dA, db, dc, dP=dP))
    errors = []
    for mu in (1e-3, 1e-5, 1e-7, 1e-9):
        Ds, _ = dq.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y,
                              prob.s, P=prob.P, smoothing=mu)
        errors.append(relative_error(np.concatenate(Ds(dA, db, dc, dP=dP)), exact))
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6


def test_smoothed_gradient_is_informative_at_an_lp_vertex():
    """dx/dc is zero at a vertex (the solution jumps between vertices); the smoothed
    derivative says which way x moves: x_i falls as c_i rises."""
    problem = _box_lp()
    A, b, c, _, cones = problem
    n = c.size
    _, _, _, D, DT = dq.solve_and_derivative(A, b, c, cones, solve_method="Clarabel")
    zero_A, zero_b = sp.csc_matrix(A.shape), np.zeros(b.size)
    exact = np.column_stack([D(zero_A, zero_b, e)[0] for e in np.eye(n)])
    np.testing.assert_allclose(exact, 0.0, atol=1e-12)
    *_, Ds, DTs = _solved(problem, 1e-3)
    smoothed = np.column_stack([Ds(zero_A, zero_b, e)[0] for e in np.eye(n)])
    assert np.all(np.diag(smoothed) < -1e-4)
    # DT of the objective-free loss x_0: the gradient in c is row 0 of dx/dc
    np.testing.assert_allclose(DTs(np.eye(n)[0], np.zeros(b.size), np.zeros(b.size))[2],
                               smoothed[0], atol=1e-12)


def test_smoothed_derivative_exists_where_the_exact_one_does_not():
    A, b, c, _, cones = problem = _degenerate_lp()
    x, y, s = dq.solve_only(A, b, c, cones, solve_method="Clarabel")
    D, _ = dq.derivative(A, b, c, cones, x, y, s)
    with pytest.warns(NonDifferentiableWarning):
        D(*_perturbation(problem, 0)[:3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Ds, _, info = dq.derivative(A, b, c, cones, x, y, s, smoothing=1e-4,
                                    return_info=True)
        out = Ds(*_perturbation(problem, 0)[:3])
    assert all(np.all(np.isfinite(v)) for v in out)
    assert info["smoothing"]["converged"] and info["refinement"] is None
    np.testing.assert_allclose(info["y"] * info["s"], 1e-4, rtol=1e-9)


def test_solve_and_derivative_returns_the_solvers_solution_and_reports_the_smoothing():
    A, b, c, P, cones = problem = _socp_qp()
    plain = dq.solve_internal(A, b, c, cones, P=P, solve_method="Clarabel")
    out = dq.solve_and_derivative_internal(A, b, c, cones, P=P, solve_method="Clarabel",
                                           derivative_kwargs=dict(smoothing=1e-3))
    for key in "xys":
        np.testing.assert_array_equal(out[key], plain[key])
    report = out["info"]["smoothing"]
    assert report["mu"] == 1e-3 and report["converged"] and report["steps"] >= 1
    assert "refinement" not in out["info"]
    D = out["D"]
    assert np.all(np.isfinite(D(*_perturbation(problem, 1)[:3])[0]))


@pytest.mark.parametrize("same_structure", [True, False])
def test_batch_gives_each_problems_smoothed_derivative(same_structure):
    problems = [_socp_qp(seed) for seed in (1, 2, 3)]
    if same_structure:  # one A and P, b moved into the cones' interiors: one structure
        A0, b0, c0, P0, cones = problems[0]
        interior = np.zeros(b0.size)
        interior[[1, 2, 3, 4, 7]] = 1.0  # the orthant rows and the SOCs' first entries
        problems = [(A0, b0 + 0.1 * k * interior, c0 + 0.1 * k, P0, cones)
                    for k in range(3)]
    As, bs, cs, Ps, cone_dicts = (list(t) for t in zip(*problems))
    xs, ys, ss, D_batch, DT_batch = dq.solve_and_derivative_batch(
        As, bs, cs, cone_dicts, Ps=Ps, solve_method="Clarabel", n_jobs_forward=2,
        n_jobs_backward=2, derivative_kwargs=dict(smoothing=1e-3))
    assert D_batch.dense_batch is None  # the batched dense derivative is exact-only
    perturbations = [_perturbation(p, i) for i, p in enumerate(problems)]
    dxs = D_batch(*(list(t) for t in zip(*perturbations)))[0]
    gs = DT_batch(dxs, [np.zeros(b.size) for b in bs], [np.zeros(b.size) for b in bs])[2]
    for i, (A, b, c, P, cones) in enumerate(problems):
        D, DT = dq.derivative(A, b, c, cones, xs[i], ys[i], ss[i], P=P, smoothing=1e-3)
        np.testing.assert_allclose(dxs[i], D(*perturbations[i])[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gs[i], DT(dxs[i], np.zeros(b.size), np.zeros(b.size))[2],
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(smoothing=0.0), "positive"), (dict(smoothing=-1e-3), "positive"),
    (dict(smoothing=float("nan")), "positive"), (dict(smoothing="small"), "positive"),
    (dict(smoothing=True), "positive"),
    (dict(smoothing=1e-3, factorization="ldl"), "factorization"),
])
def test_bad_smoothing_options_raise(kwargs, match):
    A, b, c, P, cones = _box_lp()
    x, y, s = dq.solve_only(A, b, c, cones, solve_method="Clarabel")
    with pytest.raises(ValueError, match=match):
        dq.derivative(A, b, c, cones, x, y, s, **kwargs)


@pytest.mark.parametrize("cone_dict", [{"l": 1, "s": [2]}, {"l": 1, "ep": 1},
                                       {"l": 1, "p": [0.5]}])
def test_smoothing_names_the_cones_it_does_not_cover(cone_dict):
    prob = known_solution_problem(cone_dict, 3, seed=0)
    with pytest.raises(ValueError, match="smoothing covers zero, nonnegative, second-order"):
        dq.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                      smoothing=1e-3)


def test_smoothing_is_not_an_option_of_the_lpgd_modes():
    A, b, c, P, cones = _box_lp()
    x, y, s = dq.solve_only(A, b, c, cones, solve_method="Clarabel")
    with pytest.raises(ValueError, match="exact modes"):
        dq.derivative(A, b, c, cones, x, y, s, mode="lpgd", smoothing=1e-3)
