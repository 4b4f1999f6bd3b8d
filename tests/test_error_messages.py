"""SolverError messages start with diffcp 1.1.9's text for the same solver and status.

Code written for diffcp matches its messages with regular expressions (CVXPY's and
cvxpylayers' tests use ``r"Solver scs returned status.*"``,
``r"Solver ecos returned status Infeasible"``); diffcp itself, run on the same problems,
is the oracle.
"""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np
from diffqcp_np import SolverError

diffcp = pytest.importorskip("diffcp")
clarabel = pytest.importorskip("clarabel")


def _lp_infeasible():  # x <= -1 and x >= 1
    return sp.csc_matrix([[1.0], [-1.0]]), np.array([-1.0, -1.0]), np.array([1.0]), {"z": 0, "l": 2}


def _lp_unbounded():  # min -x s.t. x >= 0
    return sp.csc_matrix([[-1.0]]), np.array([0.0]), np.array([-1.0]), {"z": 0, "l": 1}


def _socp_infeasible():  # ||(x1, x2)|| <= -1
    A = sp.csc_matrix(np.vstack([np.zeros((1, 2)), -np.eye(2)]))
    return A, np.array([-1.0, 0.0, 0.0]), np.array([1.0, 1.0]), {"z": 0, "l": 0, "q": [3]}


PROBLEMS = {"lp_infeasible": _lp_infeasible, "lp_unbounded": _lp_unbounded,
            "socp_infeasible": _socp_infeasible}


def _message(solve, *args, **kwargs):
    """The SolverError message of ``solve(*args, **kwargs)``, or None if it returned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both libraries warn on inaccurate solutions
        try:
            solve(*args, **kwargs)
        except SolverError as err:
            return str(err)
        except diffcp.SolverError as err:
            return str(err)
    return None


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("solve_method, limits", [
    ("SCS", {}), ("SCS", {"max_iters": 1}), ("SCS", {"max_iters": 3}),
    ("ECOS", {}), ("ECOS", {"max_iters": 1}), ("ECOS", {"max_iters": 3}),
])
def test_messages_start_with_diffcps(name, solve_method, limits):
    A, b, c, cone_dict = PROBLEMS[name]()
    expected = _message(diffcp.solve_only, A, b, c, cone_dict, solve_method=solve_method,
                        **limits)
    ours = _message(diffqcp_np.solve_only, A, b, c, cone_dict, solve_method=solve_method,
                    **limits)
    if expected is None:  # diffcp returns an (inaccurate) solution: so do we
        assert ours is None
        return
    assert ours is not None and ours.startswith(expected), (ours, expected)
    assert len(ours) > len(expected)  # our detail follows diffcp's text


def _clarabel_status(A, b, c, cone_dict, **settings):
    """Clarabel's own status on the problem (diffcp 1.1.9 never raises for Clarabel)."""
    options = clarabel.DefaultSettings()
    options.verbose = False
    for key, value in settings.items():
        setattr(options, key, value)
    cones = [clarabel.NonnegativeConeT(cone_dict["l"])] if cone_dict["l"] else []
    cones += [clarabel.SecondOrderConeT(q) for q in cone_dict.get("q", [])]
    n = c.size
    return clarabel.DefaultSolver(sp.csc_matrix((n, n)), c, A, b, cones, options).solve().status


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("settings", [{}, {"max_iter": 1}])
def test_clarabel_messages_in_diffcps_pattern(name, settings):
    A, b, c, cone_dict = PROBLEMS[name]()
    assert _message(diffcp.solve_only, A, b, c, cone_dict, solve_method="Clarabel",
                    **settings) is None  # the diffcp fault we do not copy
    status = _clarabel_status(A, b, c, cone_dict, **settings)
    ours = _message(diffqcp_np.solve_only, A, b, c, cone_dict, solve_method="Clarabel",
                    **settings)
    assert ours is not None
    assert ours.startswith(f"Solver clarabel returned status {status}. "), ours


def test_the_regular_expressions_users_write_match():
    A, b, c, cone_dict = _lp_infeasible()
    with pytest.raises(SolverError, match=r"^Solver scs returned status.*"):
        diffqcp_np.solve_and_derivative(A, b, c, cone_dict)
    with pytest.raises(SolverError, match=r"^Solver ecos returned status Infeasible"):
        diffqcp_np.solve_and_derivative(A, b, c, cone_dict, solve_method="ECOS")


def test_message_details():
    A, b, c, cone_dict = _lp_infeasible()
    message = _message(diffqcp_np.solve_only, A, b, c, cone_dict, solve_method="ECOS",
                       max_iters=1)
    assert re.fullmatch(r"Solver ecos errored\. The solver stopped without a solution: .*\. "
                        r"Solver status: -1 \(Maximum number of iterations reached\); "
                        r"canonical status: 'failed'; iterations: 1\.", message), message


def test_batch_message_starts_with_diffcps_and_names_the_problem():
    A, b, c, cone_dict = _lp_infeasible()
    expected = _message(diffcp.solve_only, A, b, c, cone_dict)
    Au, bu, cu, cone_u = _lp_unbounded()  # with -cu: min x s.t. x >= 0, solvable
    ours = _message(diffqcp_np.solve_only_batch, [Au, A], [bu, b], [-cu, c],
                    [cone_u, cone_dict], n_jobs_forward=1, solve_method="SCS")  # diffcp's
    assert ours.startswith(expected) and ours.endswith("(problem 1 of the batch)"), ours


@pytest.mark.parametrize("mode, side", [("lpgd_right", "right"), ("lpgd_left", "left")])
def test_lpgd_resolve_failure_in_diffcps_words(mode, side):
    # min x s.t. x >= 0: perturbing c by -tau * 2 makes it unbounded
    A, b, c, cone_dict = sp.csc_matrix([[-1.0]]), np.array([0.0]), np.array([1.0]), {"l": 1}
    _, _, _, D, DT = diffqcp_np.solve_and_derivative(A, b, c, cone_dict, mode=mode,
                                                     derivative_kwargs={"tau": 1.0})
    sign = 1.0 if side == "right" else -1.0
    with pytest.raises(SolverError) as err:
        D(None, None, np.array([-2.0 * sign]))
    assert str(err.value).startswith(
        f"Computation of {side}-perturbed problem failed: Solver scs returned status unbounded")
