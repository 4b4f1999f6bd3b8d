"""NonDifferentiableWarning fires only for products that do not exist.

Where the derivative system K is singular (the solution is not unique, or strict
complementarity fails), ``K z = r`` still has solutions whenever ``r`` is in K's range.
The least-norm answer is then one of them, and every quantity that does not depend on the
choice is exact: a JVP along a perturbation the solution can follow, a VJP whose
cotangents weigh only unique entries of the solution. These are checked here against
finite differences of re-solves. Only a right-hand side outside K's range (a perturbation
no first-order change can follow, or cotangents on a non-unique entry) warns, naming the
entries involved, at the caller's line.

The model is the one CVXPY users write: ``min ||x - p||^2 s.t. ||x|| <= 1`` with p inside
the ball. CVXPY's canonical form has an epigraph variable t of the norm, free in
``[||x||, 1]`` at the solution, so K is singular; x is unique and smooth in the data.
"""

import numpy as np
import pytest

import diffqcp_np
from diffqcp_np import NonDifferentiableWarning

cp = pytest.importorskip("cvxpy")
from cvxpy.reductions.solvers.conic_solvers.scs_conif import dims_to_solver_dict  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("error::diffqcp_np.NonDifferentiableWarning"),
              pytest.mark.both_small_system_paths]

TIGHT = dict(solve_method="Clarabel", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12,
             max_iter=500)
P_POINT = np.array([0.2, -0.1, 0.3])


def ball_problem():
    """Cone program of CVXPY's ``min ||x - p||^2 s.t. ||x|| <= 1``; x's columns; t's column."""
    x = cp.Variable(3)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - P_POINT)), [cp.norm(x) <= 1])
    data, _, inverse = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": True})
    offsets = next(i.var_offsets for i in inverse if len(getattr(i, "var_offsets", {})) > 1)
    user = np.arange(offsets[x.id], offsets[x.id] + 3)
    n = data["c"].size
    others = sorted(set(range(n)) - set(user) - set(range(user[0] - 3, user[0])))
    assert len(others) == 1  # x, CVXPY's copy x - p, and the norm's epigraph variable t
    args = (data["A"], data["b"], data["c"], dims_to_solver_dict(data["dims"]))
    return args, data["P"], user, others[0]


def _solve_x(A, b, c, cone_dict, P):
    return diffqcp_np.solve_only(A, b, c, cone_dict, P=P, **TIGHT)[0]


def _directions(A, n, t, rng):
    """Random perturbations (dA on A's pattern, db, dc) that leave c_t alone: along dc_t,
    t jumps to a bound (see test_jvp_along_the_epigraph_cost_warns)."""
    dA = A.copy()
    dA.data = rng.standard_normal(dA.nnz)
    db = rng.standard_normal(A.shape[0])
    dc = rng.standard_normal(n)
    dc[t] = 0.0
    return dA, db, dc


def test_derivative_is_singular_yet_every_product_on_x_is_silent_and_exact():
    (A, b, c, cone_dict), P, user, t = ball_problem()
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
    np.testing.assert_allclose(x[user], P_POINT, atol=1e-8)  # inactive: x = p
    assert x[t] > np.linalg.norm(P_POINT) + 1e-3 and x[t] < 1 - 1e-3  # t is not unique
    rng = np.random.default_rng(0)
    gx = np.zeros(x.size)
    gx[user] = rng.standard_normal(3)
    dA_grad, db_grad, dc_grad = DT(gx, np.zeros(y.size), np.zeros(s.size))
    h = 1e-5
    for _ in range(3):
        dA, db, dc = _directions(A, x.size, t, rng)
        dx, _, _ = D(dA, db, dc)
        plus = _solve_x((A + h * dA).tocsc(), b + h * db, c + h * dc, cone_dict, P)
        minus = _solve_x((A - h * dA).tocsc(), b - h * db, c - h * dc, cone_dict, P)
        fd = (plus - minus)[user] / (2 * h)
        np.testing.assert_allclose(dx[user], fd, rtol=1e-5, atol=1e-6)
        pairing = dA_grad.multiply(dA).sum() + db_grad @ db + dc_grad @ dc
        assert pairing == pytest.approx(gx[user] @ fd, rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def solved_ball():
    """The ball problem's data, its solution and derivative, and a unit vector on t."""
    (A, b, c, cone_dict), P, user, t = ball_problem()
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
    return (A, b, c, cone_dict, P, user, t), D, DT, np.eye(x.size)[t]


def test_vjp_on_the_epigraph_variable_warns_naming_it(solved_ball):
    (*_, t), D, DT, on_t = solved_ball
    with pytest.warns(NonDifferentiableWarning, match=rf"not unique .*\(x\[{t}\]") as record:
        DT(on_t, None, None)
    assert [w.filename for w in record] == [__file__]  # the caller's line, not the library's


def test_jvp_along_the_epigraph_cost_warns(solved_ball):
    # c_t > 0 pulls t down to ||x||, c_t < 0 up to 1: the solution jumps.
    (A, b, c, cone_dict, P, user, t), D, DT, dc = solved_ball
    with pytest.warns(NonDifferentiableWarning, match=rf"change of c\[{t}\]") as record:
        D(None, None, dc)
    assert [w.filename for w in record] == [__file__]
    h = 1e-4
    up = _solve_x(A, b, c + h * dc, cone_dict, P)
    down = _solve_x(A, b, c - h * dc, cone_dict, P)
    assert up[t] == pytest.approx(np.linalg.norm(up[user]), abs=1e-6)  # t at its lower bound
    assert down[t] == pytest.approx(1.0, abs=1e-6)  # t at its upper bound


def test_cvxpy_requires_grad_on_the_ball_is_silent():
    """The same model through CVXPY's own DIFFCP path (parameter p, backward, derivative)."""
    handle = diffqcp_np.install_as_diffcp(warn=False)  # other test modules hold diffcp
    try:
        p = cp.Parameter(3, value=P_POINT)
        x = cp.Variable(3)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [cp.norm(x) <= 1])
        problem.solve(requires_grad=True, eps=1e-10)
        np.testing.assert_allclose(x.value, P_POINT, atol=1e-6)
        x.gradient = np.array([1.0, 2.0, 3.0])
        problem.backward()  # x = p here: dp = dx
        np.testing.assert_allclose(p.gradient, [1.0, 2.0, 3.0], atol=1e-5)
        p.delta = np.array([0.01, -0.02, 0.03])
        problem.derivative()
        np.testing.assert_allclose(x.delta, p.delta, atol=1e-6)
    finally:
        handle.uninstall()


def test_singular_batch_member_warns_only_for_the_product_that_does_not_exist():
    (A, b, c, cone_dict), P, user, t = ball_problem()
    xs, ys, ss, D_batch, DT_batch = diffqcp_np.solve_and_derivative_batch(
        [A, A], [b, b], [c, c], [cone_dict, cone_dict], Ps=[P, P], n_jobs_forward=1,
        n_jobs_backward=1, **TIGHT)
    gx = np.zeros(xs[0].size)
    gx[user] = 1.0
    DT_batch([gx, gx], [None, None], [None, None])  # silent
    on_t = gx.copy()
    on_t[t] = 1.0
    with pytest.warns(NonDifferentiableWarning, match=r"^problem 1: ") as record:
        DT_batch([gx, on_t], [None, None], [None, None])
    assert len(record) == 1 and record[0].filename == __file__


@pytest.mark.parametrize("mode", ["direct", "dense", "lsmr"])
def test_consistent_answer_is_the_least_norm_solution(mode):
    from diffqcp_np._validation import check_problem
    from diffqcp_np.derivative import SolutionDerivative

    (A, b, c, cone_dict), P, user, t = ball_problem()
    x, y, s = diffqcp_np.solve_only(A, b, c, cone_dict, P=P, **TIGHT)
    n, m = x.size, y.size
    K = SolutionDerivative(check_problem(A, b, c, cone_dict, P), x, y, s)._assemble().toarray()
    assert np.linalg.matrix_rank(K) == n + m - 1  # one null vector: t's
    db = np.random.default_rng(1).standard_normal(m)
    z = np.linalg.pinv(K) @ np.concatenate([np.zeros(n), -db])  # naive least norm
    D, DT = diffqcp_np.derivative(A, b, c, cone_dict, x, y, s, P=P, mode=mode)
    dx, dy, ds = D(None, db, None)
    np.testing.assert_allclose(dx, z[:n], atol=1e-8)
    np.testing.assert_allclose(ds, dy - z[n:], atol=1e-8)
