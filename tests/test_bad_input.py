"""Bad input: a clear error naming the argument (and the problem in batches), a live
process, and no silent wrong answer.

Malformed sparse structures could crash the process if a check were missing, so they
run in a subprocess (``bad_input_cases.py``, many Hypothesis cases in one process);
everything else runs here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffqcp_np
from diffqcp_np import (
    NonFiniteDerivativeWarning,
    SolverError,
    derivative,
    solve_and_derivative,
    solve_and_derivative_batch,
    solve_only,
    solve_only_batch,
)
from diffqcp_np.cone_program import solve_internal
from diffqcp_np.derivative.convexity import PSD_TOLERANCE, check_positive_semidefinite
from problems import known_solution_problem, random_perturbation

HERE = Path(__file__).parent
PROPERTY = dict(deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


def small_qp(seed=0):
    return known_solution_problem({"z": 1, "l": 6}, 3, seed=seed)


def raises_naming(name, call, kind=(ValueError, TypeError)):
    """``call()`` raises ``kind`` whose message starts with ``name`` (after ``problem i:``)."""
    with pytest.raises(kind) as info:
        call()
    assert re.match(rf"(problem \d+: )?{name}\b", str(info.value)), str(info.value)
    return info.value


# -- malformed sparse structures: in a subprocess ----------------------------------------------
def test_malformed_sparse_structures_raise_and_the_process_lives():
    package_root = str(Path(diffqcp_np.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(HERE / "bad_input_cases.py"), "40"], env=env,
                         capture_output=True, text=True, timeout=600)
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, f"exit status {run.returncode} (a crash is negative):\n{tail}"
    assert "all cases raised clear errors" in run.stdout


# -- dtypes: complex, strings, None, objects ---------------------------------------------------
NOT_REAL = st.sampled_from(["complex", "string", "none", "object", "ragged"])


def not_real(kind, shape):
    """A value of ``shape`` that is not an array of real numbers."""
    if kind == "complex":
        return np.ones(shape) * (1 + 1j)
    if kind == "string":
        return "abc"
    if kind == "none":
        return None
    if kind == "object":
        return np.array([object()] * int(np.prod(shape)), dtype=object).reshape(shape)
    return [[1.0, 2.0], [3.0]]


@settings(max_examples=25, **PROPERTY)
@given(NOT_REAL, st.sampled_from(["A", "b", "c", "P", "x", "y", "s"]),
       st.booleans())
def test_non_real_problem_data_raise_type_errors_naming_it(kind, name, sparse):
    prob = small_qp()
    args = dict(A=prob.A, b=prob.b, c=prob.c, P=prob.P, x=prob.x, y=prob.y, s=prob.s)
    shape = {"A": prob.A.shape, "P": prob.P.shape}.get(name, (prob.m if name in "bys"
                                                                else prob.n,))
    value = not_real(kind, shape)
    if sparse and kind == "complex" and name in ("A", "P"):
        value = sp.csc_matrix(value)
    args[name] = value
    if name in "xys":  # a solution given to derivative()
        raises_naming(name, lambda: derivative(args["A"], args["b"], args["c"],
                                               prob.cone_dict, args["x"], args["y"],
                                               args["s"], P=args["P"]), TypeError)
        return
    if value is None:  # None means "no P"
        return
    raises_naming(name, lambda: solve_and_derivative(args["A"], args["b"], args["c"],
                                                     prob.cone_dict, P=args["P"]), TypeError)
    batch = [prob.A, prob.A], [prob.b, prob.b], [prob.c, prob.c], [prob.P, prob.P]
    lists = dict(zip("AbcP", (list(v) for v in batch)))
    lists[name][1] = value
    err = raises_naming(name, lambda: solve_only_batch(
        lists["A"], lists["b"], lists["c"], [prob.cone_dict] * 2, Ps=lists["P"],
        backend="serial"), TypeError)
    assert str(err).startswith("problem 1: ")


@settings(max_examples=25, **PROPERTY)
@given(NOT_REAL, st.sampled_from(["dA", "db", "dc", "dP", "dx", "dy", "ds"]))
def test_non_real_perturbations_and_cotangents_raise_type_errors_naming_them(kind, name):
    prob = small_qp()
    _, _, _, D, DT = solve_and_derivative(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                                          solve_method="Clarabel")
    shape = {"dA": prob.A.shape, "dP": prob.P.shape, "db": (prob.m,), "dy": (prob.m,),
             "ds": (prob.m,)}.get(name, (prob.n,))
    value = not_real(kind, shape)
    if value is None:  # None means "no perturbation"
        return
    if name in ("dA", "db", "dc", "dP"):
        args = dict(dA=None, db=None, dc=None, dP=None)
        args[name] = value
        raises_naming(name, lambda: D(**args), TypeError)
    else:
        args = dict(dx=None, dy=None, ds=None)
        args[name] = value
        raises_naming(name, lambda: DT(**args), TypeError)


# -- P must be positive semidefinite -------------------------------------------------------------
def _symmetric(eigenvalues, seed, density=None):
    """A symmetric matrix with the given spectrum: dense from a random orthogonal basis,
    or sparse block diagonal (2 × 2 rotations) when ``density`` is given."""
    rng = np.random.default_rng(seed)
    n = len(eigenvalues)
    if density is None:
        Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
        return sp.csc_matrix((Q * eigenvalues) @ Q.T)
    blocks = []
    for k in range(0, n, 2):
        pair = eigenvalues[k:k + 2]
        if len(pair) == 1:
            blocks.append(np.array([[pair[0]]]))
            continue
        t = rng.uniform(0, np.pi)
        R = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        blocks.append((R * pair) @ R.T)
    perm = rng.permutation(n)  # scattered: ordering matters for the sparse LDLᵀ
    return sp.csc_matrix(sp.block_diag(blocks, format="csc")[perm][:, perm])


def _arrow(n, margin, seed):
    """``[[a, v'], [v, diag(d)]]`` with ``a = v' diag(d)⁻¹ v + margin``: positive
    definite for ``margin > 0``, singular for 0 (up to rounding), indefinite below. Its
    dense first row and column fill the whole factor in their own order."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.5, 2.0, n - 1)
    v = rng.standard_normal(n - 1)
    P = sp.lil_matrix((n, n))
    P.setdiag(np.r_[v @ (v / d) + margin, d])
    P[0, 1:] = v
    P[1:, 0] = v[:, None]
    return sp.csc_matrix(P)


def _spectrum_cases(n, kind, rng):
    """(P, lowest eigenvalue, largest |entry|) for a PSD and a non-PSD matrix of a kind."""
    if kind == "arrow":
        for margin in (0.0, -1e-4 * n):
            P = _arrow(n, margin, int(rng.integers(1000)))
            yield P, margin
        return
    spectrum = rng.uniform(0.0, 2.0, n)
    spectrum[rng.integers(n, size=n // 4 + 1)] = 0.0  # singular, PSD
    spectrum[rng.integers(n)] = -1e-3 * PSD_TOLERANCE * spectrum.max()  # rounding noise
    yield _symmetric(spectrum, int(rng.integers(1000)), None if kind == "dense" else 1), 0.0
    spectrum[rng.integers(n)] = -1e-4 * spectrum.max()
    yield _symmetric(spectrum, int(rng.integers(1000)), None if kind == "dense" else 1), -1.0


# orders and patterns that take each path: compiled dense, LAPACK, sparse LDLᵀ in the
# matrix's own order (scattered 2 × 2 blocks), sparse LDLᵀ after AMD (an arrow)
@pytest.mark.parametrize("n,kind", [(5, "dense"), (60, "dense"), (400, "blocks"),
                                    (400, "arrow")])
def test_psd_check_agrees_with_the_spectrum(n, kind):
    """Rounding noise below the tolerance passes, a clearly negative eigenvalue does not;
    eigenvalues computed by LAPACK are the oracle."""
    rng = np.random.default_rng(n)
    for _ in range(3):
        for P, sign in _spectrum_cases(n, kind, rng):
            lowest = np.linalg.eigvalsh(P.toarray()).min()
            scale = abs(P).max()
            if sign == 0.0:
                assert lowest > -PSD_TOLERANCE * scale
                check_positive_semidefinite(P)
            else:
                assert lowest < -10 * PSD_TOLERANCE * scale
                with pytest.raises(ValueError, match="P is not positive semidefinite"):
                    check_positive_semidefinite(P)


def _with_P(P):
    prob = known_solution_problem({"z": 1, "l": 6}, P.shape[0], seed=3)
    return prob.A, prob.b, prob.c, prob.cone_dict


@pytest.mark.parametrize("upper", [False, True])
def test_non_psd_P_is_refused_by_every_solve(upper):
    P = _symmetric(np.array([1.0, 0.5, -0.2, 2.0]), seed=4)
    P = sp.triu(P, format="csc") if upper else P
    A, b, c, cones = _with_P(P)
    for method in ("SCS", "Clarabel"):
        raises_naming("P", partial(solve_and_derivative, A, b, c, cones, P=P,
                                   solve_method=method), ValueError)
        raises_naming("P", partial(solve_only, A, b, c, cones, P=P, solve_method=method),
                      ValueError)
    good = sp.identity(4, format="csc")
    good = sp.triu(good, format="csc") if upper else good
    for Ps in ([good, P], [P, P]):  # the general and the same-structure batch
        err = raises_naming("P", partial(solve_and_derivative_batch, [A, A], [b, b], [c, c],
                                         [cones] * 2, Ps=Ps, backend="serial"), ValueError)
        assert str(err).startswith(f"problem {1 if Ps[0] is good else 0}: ")


def test_derivative_refuses_a_negative_diagonal_entry():
    prob = small_qp()
    P = sp.csc_matrix(np.diag([1.0, -1.0, 1.0]))
    raises_naming("P", lambda: derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x,
                                          prob.y, prob.s, P=P), ValueError)


# -- D and DT: linear at every scale, non-finite answers reported ---------------------------------
def _both_ways(D, DT, prob, rng):
    d = random_perturbation(prob, rng)
    g = (rng.standard_normal(prob.n), rng.standard_normal(prob.m), rng.standard_normal(prob.m))
    return d, g, D(*d), DT(*g, return_dP=True)


def _scaled(values, t):
    return tuple(None if v is None else v * t for v in values)


def _dense(v):
    return v.toarray() if sp.issparse(v) else v


def _max_relative_error(got, want):
    """``max |got − want| / max |want|``: no squares, which overflow at these scales."""
    return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.parametrize("mode,tol", [("direct", 1e-13), ("dense", 1e-13), ("lsmr", 1e-9)])
@pytest.mark.parametrize("cones", [{"z": 2, "l": 6, "q": [4]}, {"l": 5, "ep": 2, "p": [0.3]},
                                   {"l": 3, "s": [3]}])
def test_derivatives_are_linear_at_extreme_scales(mode, tol, cones):
    """``D(t v) = t D(v)`` and ``DT(t g) = t DT(g)`` to rounding for t = 1e±150, 1e±250
    (the right-hand side is scaled by a power of two before the solve)."""
    prob = known_solution_problem(cones, seed=1)
    D, DT = derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                       P=prob.P, mode=mode)
    d, g, out, out_T = _both_ways(D, DT, prob, np.random.default_rng(0))
    for t in (1e150, 1e-150, 1e250, 1e-250):
        for got, want in zip(D(*_scaled(d, t)), out):
            assert _max_relative_error(got, t * want) < tol
        for got, want in zip(DT(*_scaled(g, t), return_dP=True), out_T):
            assert _max_relative_error(_dense(got), t * _dense(want)) < tol


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_non_finite_answers_warn():
    prob = small_qp()
    _, _, _, D, DT = solve_and_derivative(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                                          solve_method="Clarabel")
    huge = np.full(prob.m, 1.5e308)  # dy + ds overflows
    with pytest.warns(NonFiniteDerivativeWarning, match="DT returned NaN or Inf"):
        DT(None, huge, huge)
    dA = prob.A.copy()
    dA.data[:] = 1.7e308
    with pytest.warns(NonFiniteDerivativeWarning, match="D returned NaN or Inf"):
        D(dA, None, np.full(prob.n, 1.7e308))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # large but representable answers do not warn
        DT(None, np.full(prob.m, 1e200), None)
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(
        [prob.A] * 2, [prob.b] * 2, [prob.c] * 2, [prob.cone_dict] * 2, Ps=[prob.P] * 2,
        backend="serial", solve_method="Clarabel")
    assert DT_batch.dense_batch is not None
    with pytest.warns(NonFiniteDerivativeWarning, match="DT of problem 1"):
        DT_batch([None] * 2, [None, huge], [None, huge])


# -- solver settings, panics ----------------------------------------------------------------------
@pytest.mark.parametrize("method,setting,value", [
    ("SCS", "max_iters", "x"), ("SCS", "max_iters", -1), ("SCS", "max_iters", 2**40),
    ("SCS", "max_iters", 1.5), ("SCS", "normalize", "x"), ("SCS", "eps", "x"),
    ("SCS", "no_such_setting", 1),
    ("Clarabel", "max_iter", "x"), ("Clarabel", "max_iter", -1),
    ("Clarabel", "no_such_setting", 1), ("Clarabel", "direct_solve_method", "x"),
    ("ECOS", "max_iters", "x"), ("ECOS", "feastol", -1.0), ("ECOS", "no_such_setting", 1),
])
def test_bad_solver_settings_raise_naming_the_setting(method, setting, value):
    prob = known_solution_problem({"z": 1, "l": 6}, 3, seed=5, quadratic=method != "ECOS")
    for call in (
        lambda: solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P,
                           solve_method=method, **{setting: value}),
        lambda: solve_only_batch([prob.A] * 2, [prob.b] * 2, [prob.c] * 2,
                                 [prob.cone_dict] * 2, Ps=[prob.P] * 2, backend="serial",
                                 solve_method=method, **{setting: value}),
    ):
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert setting in str(info.value), str(info.value)


def test_a_clarabel_panic_becomes_a_failed_solve():
    """A Rust panic (a BaseException) at the solver boundary is a failed solve:
    SolverError naming it, or the status "failed" with raise_on_error=False."""
    import clarabel

    from diffqcp_np.solvers import clarabel as wrapper

    settings_ = wrapper._settings(False, {})
    P = wrapper._ListCSC([], [], [0, 0], (1, 1))
    A = wrapper._ListCSC([1.0], [5], [0, 1], (1, 1))  # row 5 of a 1-row matrix: a panic
    cones = [clarabel.NonnegativeConeT(1)]
    with pytest.raises(SolverError, match="panic"):
        wrapper._run(P, [1.0], A, [1.0], cones, settings_, None, True)
    result = wrapper._run(P, [1.0], A, [1.0], cones, settings_, None, False)
    assert result.status == "failed" and np.isnan(result.x).all()
    assert "panic" in result.info["solver_status"]


def test_keyboard_interrupt_passes_the_panic_catch(monkeypatch):
    from diffqcp_np.solvers import clarabel as wrapper

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wrapper.clarabel, "DefaultSolver", interrupted)
    prob = small_qp()
    with pytest.raises(KeyboardInterrupt):
        solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, solve_method="Clarabel")


# -- shapes, lists and options ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)])
def test_empty_problems_raise(shape):
    m, n = shape
    A = sp.csc_matrix(shape)
    raises_naming("A", lambda: solve_and_derivative(A, np.zeros(m), np.zeros(n), {"l": m}),
                  ValueError)
    err = raises_naming("A", lambda: solve_only_batch([A], [np.zeros(m)], [np.zeros(n)],
                                                       [{"l": m}]), ValueError)
    assert str(err).startswith("problem 0: ")


@pytest.mark.parametrize("value", [None, 5, "abc", {"a": 1}, np.float64(1.0)])
def test_batch_arguments_must_be_lists(value):
    prob = small_qp()
    raises_naming("As", lambda: solve_only_batch(value, [prob.b], [prob.c],
                                                 [prob.cone_dict]), TypeError)
    raises_naming("cone_dicts", lambda: solve_only_batch([prob.A], [prob.b], [prob.c],
                                                         value), TypeError)


def test_batch_arguments_may_be_generators():
    prob = small_qp()
    got = solve_only_batch((A for A in [prob.A] * 2), iter([prob.b] * 2), (prob.c, prob.c),
                           [prob.cone_dict] * 2, Ps=(P for P in [prob.P] * 2),
                           backend="serial", solve_method="Clarabel")
    want = solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, solve_method="Clarabel")
    for gotten, wanted in zip(got, want):
        np.testing.assert_array_equal(gotten[1], wanted)
    raises_naming("bs", lambda: solve_only_batch([prob.A] * 2, iter([prob.b]), [prob.c] * 2,
                                                 [prob.cone_dict] * 2), ValueError)


def test_derivative_kwargs_must_be_a_dict():
    prob = small_qp()
    raises_naming("derivative_kwargs", lambda: solve_and_derivative(
        prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, derivative_kwargs=3), TypeError)
    raises_naming("derivative_kwargs", lambda: solve_and_derivative_batch(
        [prob.A], [prob.b], [prob.c], [prob.cone_dict], Ps=[prob.P], derivative_kwargs=[1]),
        TypeError)


def test_lpgd_parameters_must_be_numbers():
    prob = small_qp()
    D, DT = derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s,
                       P=prob.P, mode="lpgd")
    with pytest.raises(ValueError, match="tau"):
        DT(np.ones(prob.n), None, None, tau="x")


# -- cone dicts: batches accept exactly what single calls accept --------------------------------
CONE_VALUES = st.one_of(
    st.integers(-1, 4), st.booleans(), st.floats(-1, 4), st.none(), st.text(max_size=2),
    st.integers(0, 4).map(np.int64), st.integers(0, 4).map(np.array),
    st.lists(st.integers(0, 4), max_size=3), st.lists(st.integers(1, 4), max_size=3).map(np.array),
    st.lists(st.floats(-0.9, 0.9), max_size=2),
)


def _outcome(call):
    """``call()``'s results, or the type of its ValueError or TypeError."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        return type(err)


@settings(max_examples=60, **PROPERTY)
@given(st.dictionaries(st.sampled_from(["z", "f", "l", "q", "s", "ep", "ed", "p", "x"]),
                       CONE_VALUES, max_size=3))
def test_batches_and_single_calls_agree_on_cone_dicts(cone_dict):
    """Whatever the cone dict, a single solve and a same-structure batch of two equal
    copies either both raise, or agree; the batch names the problem."""
    from diffqcp_np.cones.spec import as_cone_spec

    try:
        m = as_cone_spec(cone_dict).dim
    except (ValueError, TypeError) as err:
        m, parse_error = 3, type(err)
    else:
        parse_error = None
    if not 0 < m <= 12:
        return
    rng = np.random.default_rng(m)
    A = sp.csc_matrix(rng.standard_normal((m, 2)))
    b, c, P = rng.standard_normal(m), rng.standard_normal(2), sp.identity(2, format="csc")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = _outcome(lambda: solve_internal(A, b, c, cone_dict, P=P,
                                                 solve_method="Clarabel", raise_on_error=False))
        copies = [dict(cone_dict), dict(cone_dict)]
        batch = _outcome(lambda: solve_only_batch([A, A], [b, b], [c, c], copies, Ps=[P, P],
                                                  backend="serial", solve_method="Clarabel",
                                                  raise_on_error=False, return_info=True))
    if parse_error is not None:
        assert single is parse_error and batch is parse_error
        return
    assert not isinstance(single, type) and not isinstance(batch, type)
    status = single["info"]["status"]
    assert [info["status"] for info in batch[3]] == [status, status]
    if status not in ("Solved", "Solved/Inaccurate"):
        return  # a failed batch member gets NaN results
    for k, key in enumerate("xys"):
        np.testing.assert_array_equal(batch[k][0], single[key])
        np.testing.assert_array_equal(batch[k][1], single[key])


def test_cone_dicts_with_numpy_values_and_invalid_twins():
    prob = known_solution_problem({"l": 2, "q": [3, 3]}, 4, seed=6)
    numpy_dict = {"l": np.int64(2), "q": np.array([3, 3])}
    got = solve_only_batch([prob.A] * 2, [prob.b] * 2, [prob.c] * 2,
                           [dict(numpy_dict), dict(numpy_dict)], Ps=[prob.P] * 2,
                           backend="serial", solve_method="Clarabel")
    want = solve_only(prob.A, prob.b, prob.c, prob.cone_dict, P=prob.P, solve_method="Clarabel")
    np.testing.assert_array_equal(got[0][1], want[0])
    D, _ = derivative(prob.A, prob.b, prob.c, {"l": np.array(2), "q": [np.array(3), 3]},
                      prob.x, prob.y, prob.s, P=prob.P)  # 0-d arrays as sizes
    tiny = sp.csc_matrix(np.ones((1, 1)))
    for twin in ({"z": True}, {"z": 1.0}):  # equal to {"z": 1}, yet invalid
        err = raises_naming("cone", partial(solve_only_batch, [tiny] * 2, [np.ones(1)] * 2,
                                            [np.ones(1)] * 2, [{"z": 1}, twin],
                                            backend="serial"), ValueError)
        assert str(err).startswith("problem 1: ")


@pytest.mark.parametrize("n", [6, 20])
def test_batched_psd_check_finds_the_first_matrix_the_single_check_refuses(n):
    """One compiled pass over a same-pattern stack: eigenvalues (LAPACK) are the oracle,
    and the single-matrix check agrees on every member."""
    from diffqcp_np.derivative.convexity import first_not_positive_semidefinite

    rng = np.random.default_rng(n)
    full = sp.csc_matrix(np.ones((n, n)))
    members, bad = [], [5, 9]
    for k in range(12):
        spectrum = rng.uniform(0.0, 2.0, n)
        spectrum[0] = -1e-3 * PSD_TOLERANCE * spectrum.max()  # rounding noise: passes
        if k in bad:
            spectrum[1] = -1e-4 * spectrum.max()
        Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        members.append((Q * spectrum) @ Q.T)
    values = np.stack([M.T.ravel() for M in members])  # CSC order of a dense pattern
    for k, M in enumerate(members):
        assert (np.linalg.eigvalsh(M).min() < -10 * PSD_TOLERANCE * abs(M).max()) == (k in bad)
    assert first_not_positive_semidefinite(full.indptr, full.indices, values) == bad[0]
    assert first_not_positive_semidefinite(full.indptr, full.indices, values[:bad[0]]) == -1
    big = sp.csc_matrix(np.ones((40, 40)))
    assert first_not_positive_semidefinite(big.indptr, big.indices, np.ones((2, 1600))) is None
    for k in (0, bad[0]):  # one matrix repeated (a fixed P): checked once, same answer
        repeated = np.repeat(values[k:k + 1], 7, axis=0)
        want = 0 if k in bad else -1
        assert first_not_positive_semidefinite(full.indptr, full.indices, repeated) == want


def test_same_structure_batch_names_the_problem_whose_P_is_not_psd():
    prob = known_solution_problem({"z": 1, "l": 6}, 4, seed=3)
    good = _symmetric(np.array([1.0, 0.5, 0.2, 2.0]), seed=4)
    bad = _symmetric(np.array([1.0, 0.5, -0.2, 2.0]), seed=4)
    Ps = [good, good, bad, good]  # one pattern: the same-structure path
    assert all(np.array_equal(P.indices, good.indices) for P in Ps)
    with pytest.raises(ValueError, match="problem 2: P is not positive semidefinite"):
        solve_only_batch([prob.A] * 4, [prob.b] * 4, [prob.c] * 4, [prob.cone_dict] * 4,
                         Ps=Ps)
    with pytest.raises(ValueError, match="problem 0: P is not positive semidefinite"):
        solve_only_batch([prob.A] * 4, [prob.b] * 4, [prob.c] * 4, [prob.cone_dict] * 4,
                         Ps=[bad] * 4)  # one repeated P
