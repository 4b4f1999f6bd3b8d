"""The device derivative's orchestration on NumPy, against the CPU derivative: cuDSS's
protocol through its host stand-ins (analysis once per pattern, values factored in
place, batch-major values, inertia), the fall-backs, the dispatch seam and the input
checks; the cuDSS configuration through nvmath's bindings where nvmath is installed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from problems import known_solution_problem, random_perturbation

import diffqcp_np
from diffqcp_np.cones import as_cone_spec, pi
from diffqcp_np.gpu import api, dss
from diffqcp_np.gpu import engine as engines
from diffqcp_np.gpu.derivative import DeviceBatchDerivative
from diffqcp_np.gpu.host_solvers import HostSymmetricSolver


@pytest.fixture
def stand_in(host_kernels, fresh_structures):
    engine = engines.host_engine(host_kernels)
    with engines.use(engine):
        yield engine


def cpu_and_device(prob, **kwargs):
    args = (prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    return (diffqcp_np.derivative(*args, P=prob.P),
            diffqcp_np.derivative(*args, P=prob.P, device="cuda", **kwargs))


def assert_same_products(cpu, device, prob, seed=0, rtol=1e-9):
    rng = np.random.default_rng(seed)
    dA, db, dc, dP = random_perturbation(prob, rng)
    for mine, theirs in zip(device[0](dA, db, dc, dP=dP), cpu[0](dA, db, dc, dP=dP)):
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol)
    g = [rng.standard_normal(k) for k in (prob.n, prob.m, prob.m)]
    for mine, theirs in zip(device[1](*g, return_dP=True), cpu[1](*g, return_dP=True)):
        if sp.issparse(theirs):
            np.testing.assert_array_equal(mine.indices, theirs.indices)
            mine, theirs = mine.data, theirs.data
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol)


def test_analysis_once_per_pattern_and_values_factored_in_place(stand_in):
    """Two solutions of one structure share the planned solver (one analysis); each
    factors its own values into the solver's buffer, and interleaved use refactors
    instead of answering with the other's factors."""
    prob = known_solution_problem({"z": 2, "l": 10, "q": [3, 4]}, 8, seed=1)
    cpu_1, dev_1 = cpu_and_device(prob)
    slot = next(iter(next(iter(api.STRUCTURE_CACHE._entries.values()))._solvers.values()))
    solver = slot.solver
    assert isinstance(solver, HostSymmetricSolver) and solver.analyses == 1
    v = prob.y - prob.s + 0.3 * np.random.default_rng(2).standard_normal(prob.m)
    y = pi(v, prob.cone_dict, dual=True)
    other = type(prob)(prob.A, prob.A @ prob.x + (y - v), -(prob.A.T @ y) - prob.P @ prob.x,
                       prob.cone_dict, prob.P, prob.x, y, y - v)
    cpu_2, dev_2 = cpu_and_device(other)
    assert len(api.STRUCTURE_CACHE._entries) == 1 and solver.analyses == 1
    factored = solver.factorizations
    assert_same_products(cpu_1, dev_1, prob)  # refactors for the first derivative ...
    assert solver.factorizations == factored + 1
    assert_same_products(cpu_1, dev_1, prob, seed=1)  # ... once
    assert solver.factorizations == factored + 1
    assert_same_products(cpu_2, dev_2, other)
    assert solver.factorizations == factored + 2


def test_batch_major_values_match_single_cpu_derivatives(stand_in):
    """A batch of three problems of one structure (values ``(3, nnz)``) in one
    factorisation of the stand-in's uniform batch: every member's JVP and VJP equal the
    CPU derivative's."""
    base = known_solution_problem({"z": 1, "l": 6, "q": [4], "ep": 1}, 6, seed=3)
    spec = as_cone_spec(base.cone_dict)
    rng = np.random.default_rng(4)
    problems = []
    for k in range(3):
        A = base.A.copy()
        A.data = A.data * (1 + 0.1 * k * rng.standard_normal(A.nnz))
        v = base.y - base.s + 0.2 * k * rng.standard_normal(base.m)
        y = pi(v, spec, dual=True)
        x = base.x + 0.1 * k
        problems.append(type(base)(A, A @ x + y - v, -(A.T @ y) - base.P @ x, base.cone_dict,
                                   base.P, x, y, y - v))
    structure, A_vals, P_vals, _, _ = api.prepare(base.A, base.cone_dict, base.P, stand_in)
    stack = [np.stack([getattr(p, k) for p in problems]) for k in ("x", "y", "s")]
    batch = DeviceBatchDerivative(structure, stand_in, np.stack([p.A.data for p in problems]),
                                  *stack, P_values=np.stack([base.P.data] * 3))
    assert batch._slot.solver.batch == 3 and batch._slot.solver.factorizations == 1
    assert list(batch.paths) == ["ldl"] * 3
    perturbations = [random_perturbation(p, rng) for p in problems]
    dA = np.stack([d[0].data for d in perturbations])
    db, dc = (np.stack([d[i] for d in perturbations]) for i in (1, 2))
    dP = np.stack([d[3].data for d in perturbations])
    jvp = batch.jvp(dA, db, dc, dP)
    g = [rng.standard_normal((3, k)) for k in (base.n, base.m, base.m)]
    vjp = batch.vjp(*g)
    assert np.all(batch.last_residual < 1e-12)
    for k, p in enumerate(problems):
        D, DT = diffqcp_np.derivative(p.A, p.b, p.c, p.cone_dict, p.x, p.y, p.s, P=p.P)
        d = perturbations[k]
        for mine, theirs in zip(jvp, D(d[0], d[1], d[2], dP=d[3])):
            np.testing.assert_allclose(mine[k], theirs, rtol=1e-9, atol=1e-10)
        expected = DT(*(gi[k] for gi in g), return_dP=True)
        for mine, theirs in zip(vjp, (expected[0].data, expected[1], expected[2],
                                      expected[3].data)):
            np.testing.assert_allclose(mine[k], theirs, rtol=1e-9, atol=1e-10)


def test_badly_scaled_rows_are_equilibrated(stand_in):
    """A large P beside unit constraint rows looks singular regularised relative to
    max|M| (as on the CPU): the member is equilibrated and stays on LDLᵀ."""
    rng = np.random.default_rng(7)
    n = 60
    F = rng.standard_normal((2 * n, n))
    P = sp.csc_matrix(1e4 * (F.T @ F / (2 * n) + 0.01 * np.eye(n)))
    A = sp.vstack([np.ones((1, n)), -sp.identity(n)], format="csc")
    cone_dict = {"z": 1, "l": n}
    v = rng.standard_normal(n + 1)
    y = pi(v, cone_dict, dual=True)
    s, x = y - v, rng.standard_normal(n)
    prob = type(known_solution_problem({"l": 2}, 1))(A, A @ x + s, -(A.T @ y) - P @ x,
                                                     cone_dict, P, x, y, s)
    cpu, device = cpu_and_device(prob)
    _, _, info = diffqcp_np.derivative(prob.A, prob.b, prob.c, cone_dict, x, y, s, P=P,
                                       device="cuda", return_info=True)
    assert info["path"] == "ldl-equilibrated"
    assert_same_products(cpu, device, prob, rtol=1e-8)


class _WrongInertia(HostSymmetricSolver):
    """A stand-in whose factorisations always report a wrong inertia (as a wrong-signed
    pivot would): every regularisation fails."""

    def inertia(self):
        return np.zeros((self.batch, 2), np.int64)


def test_wrong_inertia_at_every_regularisation_falls_back_to_lu(host_kernels,
                                                                fresh_structures):
    engine = engines.host_engine(host_kernels)
    engine = dataclasses.replace(engine, name="wrong-inertia", symmetric=_WrongInertia)
    prob = known_solution_problem({"z": 2, "l": 8, "q": [3]}, 6, seed=5)
    with engines.use(engine):
        cpu, device = cpu_and_device(prob)
        info = diffqcp_np.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y,
                                     prob.s, P=prob.P, device="cuda", return_info=True)[2]
        assert info["path"] == "lu"
        slot = next(iter(next(iter(api.STRUCTURE_CACHE._entries.values()))
                         ._solvers.values()))
        assert slot.solver.factorizations == 3 * 2  # three regularisations, two setups
        assert_same_products(cpu, device, prob)


def test_singular_points_are_answered_by_least_squares(stand_in):
    A = sp.csc_matrix(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    x, s, y = np.array([1.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 1, 2, 0])
    D, DT, info = diffqcp_np.derivative(A, A @ x + s, -(A.T @ y), {"l": 4}, x, y, s,
                                        device="cuda", return_info=True)
    assert info["path"] == "least-squares"
    np.testing.assert_allclose(D(None, np.ones(4), None)[0], [1.0, 1.0], atol=1e-9)


def test_solve_and_derivative_on_the_device(stand_in):
    prob = known_solution_problem({"z": 1, "l": 8}, 5, seed=6)
    kwargs = dict(solve_method="Clarabel", P=prob.P, tol_gap_abs=1e-11, tol_gap_rel=1e-11,
                  tol_feas=1e-11)
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(prob.A, prob.b, prob.c, prob.cone_dict,
                                                     device="cuda", refine=False, **kwargs)
    x0, y0, s0, D0, DT0 = diffqcp_np.solve_and_derivative(prob.A, prob.b, prob.c,
                                                          prob.cone_dict, refine=False,
                                                          **kwargs)
    np.testing.assert_array_equal(x, x0)
    rng = np.random.default_rng(7)
    db = rng.standard_normal(prob.m)
    np.testing.assert_allclose(D(None, db, None)[0], D0(None, db, None)[0], rtol=1e-9,
                               atol=1e-12)
    gx = rng.standard_normal(prob.n)
    np.testing.assert_allclose(DT(gx, None, None)[0].data, DT0(gx, None, None)[0].data,
                               rtol=1e-9, atol=1e-12)


def test_values_as_perturbations_and_output_patterns(stand_in):
    """``dA``/``dP`` given as values on the stored patterns (the device fast path) equal
    the matrices; ``dA``/``dP`` come out on the stored patterns with their own index
    arrays."""
    prob = known_solution_problem({"l": 6, "q": [3]}, 5, seed=8)
    P_upper = sp.triu(prob.P, format="csc")
    D, DT = diffqcp_np.derivative(prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y,
                                  prob.s, P=P_upper, device="cuda")
    rng = np.random.default_rng(9)
    dA = sp.csc_matrix((rng.standard_normal(prob.A.nnz), prob.A.indices, prob.A.indptr),
                       shape=prob.A.shape)
    dP = sp.csc_matrix((rng.standard_normal(P_upper.nnz), P_upper.indices, P_upper.indptr),
                       shape=P_upper.shape)
    for a, b in zip(D(dA.data, None, None, dP=dP.data), D(dA, None, None, dP=dP)):
        np.testing.assert_array_equal(a, b)
    out = DT(np.ones(prob.n), None, None, return_dP=True)
    assert out[3].shape == P_upper.shape and out[3].nnz == P_upper.nnz
    np.testing.assert_array_equal(out[3].indices, P_upper.indices)
    out[0].indices[:] = 0  # the caller may edit the result
    np.testing.assert_array_equal(DT(np.ones(prob.n), None, None)[0].indices, prob.A.indices)
    with pytest.raises(ValueError, match="dA given as values has length"):
        D(dA.data[:-1], None, None)


@pytest.mark.parametrize("bad,match", [
    (dict(x=np.full(5, np.nan)), "x contains NaN"),
    (dict(y=np.ones(3)), "y has length"),
    (dict(mode="lsqr"), "mode 'lsqr' is not available on the device"),
    (dict(atol=1e-3), r"unknown derivative_kwargs \['atol'\] on the device"),
    (dict(cone_dict={"l": 3}), "describes 3 rows"),
    (dict(refine=True), "refine=True is not available on the device"),
])
def test_device_inputs_are_checked(stand_in, bad, match):
    prob = known_solution_problem({"l": 8}, 5, seed=10)
    args = dict(A=prob.A, b=prob.b, c=prob.c, cone_dict=prob.cone_dict, x=prob.x, y=prob.y,
                s=prob.s, P=prob.P, device="cuda")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        diffqcp_np.derivative(**args)


def test_device_argument_is_checked():
    prob = known_solution_problem({"l": 4}, 2, seed=11)
    args = (prob.A, prob.b, prob.c, prob.cone_dict, prob.x, prob.y, prob.s)
    with pytest.raises(ValueError, match="device must be one of"):
        diffqcp_np.derivative(*args, device="gpu0")
    fake = type("ndarray", (), {"__module__": "cupy"})()
    with pytest.raises(ValueError, match="device='cpu' but x is a CuPy array"):
        diffqcp_np.derivative(prob.A, prob.b, prob.c, prob.cone_dict, fake, prob.y, prob.s,
                              device="cpu")


def test_numpy_inputs_never_touch_cupy():
    code = ("import sys, numpy as np, scipy.sparse as sp, diffqcp_np; "
            "A = sp.csc_matrix(np.array([[1.0], [-1.0]])); x = np.array([0.5]); "
            "y = np.array([1.0, 0.0]); s = np.array([0.0, 1.5]); "
            "D, DT = diffqcp_np.derivative(A, A @ x + s, -(A.T @ y), {'l': 2}, x, y, s); "
            "DT(np.ones(1), None, None); "
            "print(sorted({'cupy', 'cupyx', 'nvmath'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_transpose_map_gives_the_csr_of_k():
    rng = np.random.default_rng(12)
    K = sp.random(9, 9, density=0.4, random_state=rng, format="csc")
    K.sort_indices()
    indptr, indices, position = dss.transpose_map(K.indptr, K.indices, 9)
    csr = K.tocsr()
    csr.sort_indices()
    np.testing.assert_array_equal(indptr, csr.indptr)
    np.testing.assert_array_equal(indices, csr.indices)
    np.testing.assert_array_equal(K.data[position], csr.data)


def test_uniform_batch_configuration_through_nvmath():
    """The config of a uniform batch, set and read back through nvmath's cuDSS bindings
    (config objects work without a device; cudss.create() does not)."""
    cudss = pytest.importorskip("nvmath.bindings.cudss", exc_type=ImportError)
    try:
        config = cudss.config_create()
    except Exception as exc:  # noqa: BLE001 - a missing libcudss shows here
        pytest.skip(f"cuDSS library not loadable: {exc}")
    try:
        dss.configure(config, dss.batch_settings(64))
        assert dss.read_config(config, cudss.ConfigParam.UBATCH_SIZE) == 64
        assert dss.read_config(config, cudss.ConfigParam.PIVOT_TYPE) == int(
            cudss.PivotType.PIVOT_NONE)
        assert dss.read_config(config, cudss.ConfigParam.REORDERING_ALG) == int(
            cudss.ReorderingAlg.DEFAULT)
    finally:
        cudss.config_destroy(config)


def batch_problems(count, seed, cone_dict=None):
    base = known_solution_problem(cone_dict or {"z": 1, "l": 8}, 5, seed=seed)
    rng = np.random.default_rng(seed)
    As = []
    for _ in range(count):
        A = base.A.copy()
        A.data = A.data * (1 + 0.05 * rng.standard_normal(A.nnz))
        As.append(A)
    bs = [A @ base.x + base.s for A in As]
    cs = [-(A.T @ base.y) - base.P @ base.x for A in As]
    return As, bs, cs, [base.cone_dict] * count, [base.P] * count


TIGHT = dict(solve_method="Clarabel", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)


def test_batch_on_the_device_matches_the_cpu_batch(stand_in):
    """Two structures (two groups, one factorisation each) and a failed problem (NaN
    results, the others kept): every member's JVP and VJP equal the CPU batch's at the
    same solutions (the CPU's refinement off: the device path does not refine)."""
    first, second = batch_problems(3, 1), batch_problems(2, 2, {"l": 6, "q": [3]})
    As, bs, cs, cones, Ps = (a + b for a, b in zip(first, second))
    bs[1] = bs[1].copy()
    As[1] = sp.vstack([As[1][:1], -As[1][:1], As[1][2:]], format="csc")  # infeasible:
    bs[1][:2] = [0.0, -1.0]  # a'x = 0 and -a'x + s = -1, s >= 0 on an orthant row pair
    kwargs = dict(Ps=Ps, raise_on_error=False, **TIGHT)
    out = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, device="cuda", **kwargs)
    ref = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, refine=False, **kwargs)
    assert out[3].device_batch is None  # two structures and a failure
    rng = np.random.default_rng(3)
    g = [(rng.standard_normal(A.shape[1]), rng.standard_normal(A.shape[0]), None)
         for A in As]
    mine, theirs = (r[4](*zip(*g), return_dP=True) for r in (out, ref))
    for k in range(len(As)):
        for a, b in zip((m[k] for m in mine), (t[k] for t in theirs)):
            if sp.issparse(b):
                a, b = a.toarray(), b.toarray()
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
    assert np.isnan(mine[1][1]).all() and np.isfinite(mine[1][0]).all()
    dbs = [rng.standard_normal(A.shape[0]) for A in As]
    for a, b in zip(out[3](None, dbs, None)[0], ref[3](None, dbs, None)[0]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_same_structure_batch_is_one_stacked_derivative(stand_in):
    As, bs, cs, cones, Ps = batch_problems(4, 4)
    xs, ys, ss, D, DT = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, Ps=Ps,
                                                              device="cuda", **TIGHT)
    batch = DT.device_batch
    assert batch is not None and batch.batch == 4
    rng = np.random.default_rng(5)
    gx = rng.standard_normal((4, As[0].shape[1]))
    dA, db, dc, dP = batch.vjp(gx, None, None)  # stacked: values on the patterns
    listed = DT(list(gx), None, None, return_dP=True)
    np.testing.assert_array_equal(dA, np.stack([a.data for a in listed[0]]))
    np.testing.assert_array_equal(dP, np.stack([p.data for p in listed[3]]))
    with pytest.raises(ValueError, match="dbs has 3 entries"):
        D(None, [None] * 3, None)
