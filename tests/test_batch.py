"""Batches: every back end agrees with single solves; failures, crashes, warm starts, progress.

The oracle is ``solve_and_derivative`` called on each problem alone: the batch must
return the same solutions and the same derivative and adjoint-derivative outputs, in
input order, whatever the back end (serial, threads, processes, a Dask cluster).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np.batch.structure as batch_structure
from diffqcp_np.cones import as_cone_spec
from diffqcp_np import (
    NonDifferentiableWarning,
    SolverError,
    solve_and_derivative,
    solve_and_derivative_batch,
    solve_only_batch,
)
from diffqcp_np.batch.runner import run_chunk
from diffqcp_np.cone_program import solve_internal
from problems import (
    Problem,
    assert_close,
    known_solution_problem,
    psd_perturbed,
    random_perturbations,
    relative_error,
)

SCS = dict(solve_method="SCS", eps=1e-9, max_iters=20000)
TOL = 1e-10


# -- problems ---------------------------------------------------------------------------------
def mixed_batch():
    """Problems of different sizes, cones and patterns, with and without P."""
    specs = [({"z": 2, "l": 10}, 8, True), ({"l": 3, "q": [3, 5]}, None, False),
             ({"l": 2, "ep": 2, "ed": 1}, 4, True), ({"l": 1, "s": [3, 2]}, None, False),
             ({"z": 1, "l": 6}, 4, True)]
    probs = [known_solution_problem(c, n, seed=20 + k, quadratic=q)
             for k, (c, n, q) in enumerate(specs)]
    probs[-1].P = sp.triu(probs[-1].P, format="csc")  # upper-triangle storage
    return probs


def same_structure_batch(count=5, storage="full", seed=30):
    """Problems that differ only in their values (the cvxpylayers case)."""
    base = known_solution_problem({"z": 1, "l": 4, "q": [3], "ep": 1}, 5, seed=seed)
    rng = np.random.default_rng(seed)
    probs = []
    for _ in range(count):
        A = base.A.copy()
        A.data = A.data * (1 + 0.01 * rng.standard_normal(A.nnz))
        P = psd_perturbed(base.P, rng)
        b = A @ base.x + base.s
        c = -(A.T @ base.y) - P @ base.x
        P = sp.triu(P, format="csc") if storage == "upper" else P
        probs.append(Problem(A=A, b=b, c=c, cone_dict=dict(base.cone_dict), P=P, x=base.x,
                             y=base.y, s=base.s))
    return probs


def tiny_problem(b):
    """min ½x² + ½x  s.t.  −b2 ≤ x ≤ b1: solution −½ (interior), infeasible if b1 + b2 < 0."""
    return dict(A=sp.csc_matrix(np.array([[1.0], [-1.0]])), b=np.asarray(b, float),
                c=np.array([0.5]), cone_dict={"l": 2}, P=sp.csc_matrix(np.array([[1.0]])))


def batch_args(probs):
    return dict(As=[p.A for p in probs], bs=[p.b for p in probs], cs=[p.c for p in probs],
                cone_dicts=[p.cone_dict for p in probs], Ps=[p.P for p in probs])


def tiny_args(bs):
    probs = [tiny_problem(b) for b in bs]
    return dict(As=[p["A"] for p in probs], bs=[p["b"] for p in probs],
                cs=[p["c"] for p in probs], cone_dicts=[p["cone_dict"] for p in probs],
                Ps=[p["P"] for p in probs])


def cotangents(probs, seed=1):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(p.n), rng.standard_normal(p.m), rng.standard_normal(p.m))
            for p in probs]


def dense(a):
    return a.toarray() if sp.issparse(a) else a


def assert_agrees_with_single_solves(probs, out, mode="direct", **kwargs):
    xs, ys, ss, D_batch, DT_batch = out
    perts, cots = random_perturbations(probs), cotangents(probs)
    dxs, dys, dss = D_batch(*[[d[k] for d in perts] for k in range(3)],
                            dPs=[d[3] for d in perts])
    grads = DT_batch(*[[g[k] for g in cots] for k in range(3)], return_dP=True)
    for i, p in enumerate(probs):
        x, y, s, D, DT = solve_and_derivative(p.A, p.b, p.c, p.cone_dict, P=p.P, mode=mode,
                                              **kwargs)
        for got, want in zip((xs[i], ys[i], ss[i]), (x, y, s)):
            assert relative_error(got, want) < TOL, i
        for got, want in zip((dxs[i], dys[i], dss[i]), D(*perts[i][:3], dP=perts[i][3])):
            assert relative_error(got, want) < TOL, i
        want = DT(*cots[i], return_dP=True)
        for k, (got_k, want_k) in enumerate(zip((g[i] for g in grads), want)):
            if sp.issparse(want_k):  # same stored pattern, e.g. dA.data read by position
                assert np.array_equal(got_k.indices, want_k.indices)
                assert np.array_equal(got_k.indptr, want_k.indptr)
            assert relative_error(dense(got_k), dense(want_k)) < TOL, (i, k)


# -- back ends --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dask_executor():
    distributed = pytest.importorskip(
        "distributed", reason="distributed (Dask) is not installed: pip install distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        yield client.get_executor()


def backend_kwargs(name, request):
    if name == "dask":
        return {"executor": request.getfixturevalue("dask_executor")}
    return {"backend": name}


BACKENDS = ["serial", "threads", "processes", "dask"]


@pytest.mark.parametrize("kind", ["mixed", "same_structure"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_with_single_solves(backend, kind, request):
    probs = mixed_batch() if kind == "mixed" else same_structure_batch()
    out = solve_and_derivative_batch(**batch_args(probs), **backend_kwargs(backend, request),
                                     **SCS)
    assert_agrees_with_single_solves(probs, out, **SCS)


@pytest.mark.parametrize("storage,probe_limit", [("upper", 16), ("full", 0)])
def test_same_structure_path_with_upper_P_and_sparse_jacobian(storage, probe_limit,
                                                              monkeypatch):
    monkeypatch.setattr(batch_structure, "PROBE_LIMIT", probe_limit)
    probs = same_structure_batch(3, storage=storage, seed=31)
    args = batch_args(probs)
    assert batch_structure.BatchStructure.detect(args["As"], args["Ps"],
                                                 args["cone_dicts"]) is not None
    out = solve_and_derivative_batch(**args, backend="serial", **SCS)
    assert_agrees_with_single_solves(probs, out, **SCS)


def test_structure_is_detected_only_when_shared():
    detect = batch_structure.BatchStructure.detect
    same = batch_args(same_structure_batch(3))
    assert detect(same["As"], same["Ps"], same["cone_dicts"]) is not None
    mixed = batch_args(mixed_batch())
    assert detect(mixed["As"], mixed["Ps"], mixed["cone_dicts"]) is None
    other_cones = same["cone_dicts"][:2] + [{"z": 1, "l": 4, "q": [3], "ed": 1}]
    assert detect(same["As"], same["Ps"], other_cones) is None
    assert detect(same["As"], same["Ps"][:2] + [None], same["cone_dicts"]) is None


def test_pattern_check_of_matrices_sharing_the_index_arrays():
    """all_on_pattern against a dense oracle (the matrices' own patterns compared one by
    one): matrices that share the reference's index arrays pass without a comparison only
    where their type, shape and index types are right."""
    from diffqcp_np.solvers.base import CSCFactory

    ref = sp.random(6, 4, density=0.5, format="csc", random_state=1)
    shared = CSCFactory(ref.indices, ref.indptr, ref.shape).shared(np.ones((3, ref.nnz)))

    class Subclass(sp.csc_matrix):
        pass

    def oracle(mats, shape):
        return all(sp.issparse(M) and M.format == "csc" and M.shape == shape
                   and np.array_equal(M.indptr, ref.indptr)
                   and np.array_equal(M.indices, ref.indices) for M in mats)

    wide = sp.csc_matrix((np.ones(ref.nnz), ref.indices, ref.indptr), shape=(7, 4))
    cases = [shared, shared + [Subclass(shared[0])], shared + [wide], shared + [ref.tocsr()],
             shared + [ref.copy()], shared + [sp.eye(6, 4, format="csc")]]
    for mats in cases:
        got = batch_structure.all_on_pattern(mats, ref.indices, ref.indptr, ref.shape)
        assert got == oracle(mats, ref.shape)
    assert batch_structure.all_on_pattern(shared, ref.indices, ref.indptr, (6, 5)) is False
    replaced = CSCFactory(ref.indices, ref.indptr, ref.shape).shared(np.ones((1, ref.nnz)))
    replaced[0].indices = ref.indices.astype(np.uint8)  # not an index type the kernels take
    assert not batch_structure.all_on_pattern(shared + replaced, ref.indices, ref.indptr,
                                              ref.shape)


def test_lpgd_mode_on_processes_agrees_with_single_solves():
    probs = same_structure_batch(3, seed=32)
    options = dict(SCS, derivative_kwargs=dict(tau=1e-4))
    out = solve_and_derivative_batch(**batch_args(probs), mode="lpgd", backend="processes",
                                     **options)
    assert_agrees_with_single_solves(probs, out, mode="lpgd", **options)


def test_results_keep_input_order():
    sizes = [40, 30, 4, 3, 2, 1]  # the large problems first: the small ones finish earlier
    probs = [known_solution_problem({"l": m}, 2, seed=40 + m) for m in sizes]
    xs, ys, ss = solve_only_batch(**batch_args(probs), n_jobs_forward=2, chunksize=1,
                                  backend="threads", **SCS)
    for p, x, y in zip(probs, xs, ys):
        assert x.shape == (p.n,) and y.shape == (p.m,)
        np.testing.assert_allclose(x, p.x, atol=1e-6)
        np.testing.assert_allclose(y, p.y, atol=1e-6)


def test_blas_threads_pinned_in_workers_and_restored_after():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    seen = []

    def record(done, total):
        seen.append([lib["num_threads"] for lib in threadpoolctl.threadpool_info()])

    # SCS: the batched solver of "auto" calls no BLAS and pins nothing
    solve_only_batch(**tiny_args([[1.0, 1.0]] * 4), backend="threads", n_jobs_forward=2,
                     progress=record, solve_method="SCS")
    assert all(n == 1 for counts in seen for n in counts)
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before


# -- the same-structure forward (one BatchSolver, problems as values) -------------------------
ALL_CONES = {"z": 1, "l": 3, "q": [3], "s": [3], "ep": 1, "ed": 1, "p": [0.3, -0.4]}
ECOS_CONES = {"z": 1, "l": 3, "q": [3], "ep": 1, "ed": 1}


def stored_zeros(P: sp.csc_matrix, zeros: list, keep: list) -> sp.csc_matrix:
    """``P`` with the entries at ``zeros`` set to 0, still stored where listed in ``keep``."""
    dense = P.toarray()
    for i, j in zeros:
        dense[i, j] = 0.0
    rows, cols = np.nonzero(dense)
    rows, cols = np.r_[rows, [i for i, _ in keep]], np.r_[cols, [j for _, j in keep]]
    return sp.csc_matrix((dense[rows, cols], (rows, cols)), shape=P.shape)


def structured_forward_batch(cones, storage, seed=35):
    """A same-structure batch whose last problem has a zero value where P is stored and
    where A is stored in rows that a solver reorders or scales (PSD, dual exponential,
    power cones).

    ``storage="full-asymmetric"``: a full P whose pattern is not symmetric (an entry
    stored as an explicit zero, its transpose not stored), in every problem.
    """
    base = known_solution_problem(cones, None, seed=seed, quadratic=storage is not None)
    rng = np.random.default_rng(seed)
    n = base.A.shape[1]
    slices = as_cone_spec(cones).slices()
    transformed_rows = [sl.start + 1 for key, sl in slices.items()
                        if key in ("s", "ed", "p") and sl.stop > sl.start + 1]
    probs = []
    for k in range(3):
        A = base.A.copy()
        A.data = A.data * (1 + 0.01 * rng.standard_normal(A.nnz))
        if k == 2:
            for row in transformed_rows:
                A.data[np.flatnonzero(A.indices == row)[:1]] = 0.0
        P = None
        if storage is not None:
            P = psd_perturbed(base.P, rng)
            pair, last = [(0, n - 1), (n - 1, 0)], k == 2
            if storage == "upper":
                P = stored_zeros(sp.triu(P, format="csc"), pair[:1] if last else [],
                                 pair[:1])
            elif storage == "full":
                P = stored_zeros(P, pair if last else [], pair)
            else:
                P = stored_zeros(P, pair + ([(1, n - 1), (n - 1, 1)] if last else []),
                                 pair[:1] + [(1, n - 1), (n - 1, 1)])
        probs.append(Problem(A=A, b=A @ base.x + base.s, c=-(A.T @ base.y), cone_dict=cones,
                             P=P, x=base.x, y=base.y, s=base.s))
    return probs


@pytest.mark.parametrize("backend", ["serial", "processes"])
@pytest.mark.parametrize("solver,cones,storage", [
    ("SCS", ALL_CONES, "full"), ("SCS", ALL_CONES, "full-asymmetric"),
    ("Clarabel", ALL_CONES, "full"), ("Clarabel", ALL_CONES, "full-asymmetric"),
    ("Clarabel", ALL_CONES, "upper"), ("Clarabel", ALL_CONES, None),
    ("ECOS", ECOS_CONES, None),
])
def test_same_structure_forward_equals_single_solves(solver, cones, storage, backend):
    probs = structured_forward_batch(cones, storage)
    args = batch_args(probs)
    assert batch_structure.BatchStructure.detect(args["As"], args["Ps"],
                                                 args["cone_dicts"]) is not None
    settings = dict(SCS, solve_method=solver) if solver == "SCS" else dict(solve_method=solver)
    xs, ys, ss, infos = solve_only_batch(**args, backend=backend, n_jobs_forward=2,
                                         return_info=True, **settings)
    for i, p in enumerate(probs):
        want = solve_internal(p.A, p.b, p.c, p.cone_dict, P=p.P, **settings)
        for got, wanted in zip((xs[i], ys[i], ss[i]), (want["x"], want["y"], want["s"])):
            np.testing.assert_array_equal(got, wanted)  # the same data reach the solver
        assert infos[i]["status"] == want["info"]["status"]


def test_same_structure_forward_errors_name_the_problem():
    args = tiny_args([[1.0, 1.0]] * 3)
    with pytest.raises(ValueError, match="unknown Clarabel setting") as info:
        solve_only_batch(**args, backend="serial", solve_method="Clarabel", no_such_setting=1)
    assert info.value.diffqcp_problem_index == 0
    warm = [None, (np.zeros(1), np.zeros(3), np.zeros(2)), None]
    with pytest.raises(ValueError, match="warm_start y") as info:
        solve_only_batch(**args, warm_starts=warm, backend="serial")
    assert info.value.diffqcp_problem_index == 1


def test_each_problem_keeps_its_own_warnings_in_a_chunk():
    def fn(job, item):
        if item.index % 2:
            warnings.warn(f"odd {item.index}", RuntimeWarning, stacklevel=2)
        return item.index

    items = [SimpleNamespace(index=i) for i in range(4)]
    out = run_chunk(fn, None, items, False, True)
    assert [result for result, _ in out] == [0, 1, 2, 3]
    assert [caught for _, caught in out] == [
        [], [(RuntimeWarning, "odd 1")], [], [(RuntimeWarning, "odd 3")]]


# -- failures ---------------------------------------------------------------------------------
FEASIBLE_AND_NOT = [[1.0, 1.0], [2.0, 1.0], [-1.0, -1.0], [1.0, 3.0]]  # problem 2 infeasible


@pytest.mark.parametrize("solver", ["auto", "SCS"])
@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("shared", [True, False])
def test_failed_problem_is_isolated(backend, shared, solver):
    args = tiny_args(FEASIBLE_AND_NOT)
    if not shared:  # a problem of another structure: the general path
        other = known_solution_problem({"z": 2, "l": 10}, 8, seed=50)
        for key, value in batch_args([other]).items():
            args[key].append(value[0])
    wording = "ipm returned status PrimalInfeasible" if solver == "auto" else \
        "scs returned status infeasible"
    with pytest.raises(SolverError, match=rf"^Solver {wording}.*problem 2 "):
        solve_and_derivative_batch(**args, backend=backend, solve_method=solver)

    xs, ys, ss, D_batch, DT_batch, infos = solve_and_derivative_batch(
        **args, backend=backend, raise_on_error=False, return_info=True, solve_method=solver)
    assert "infeasible" in infos[2]["status"].lower()
    assert xs[2].shape == (1,) and ys[2].shape == ss[2].shape == (2,)
    assert all(np.isnan(v).all() for v in (xs[2], ys[2], ss[2]))
    size = len(xs)
    dxs, dys, dss = D_batch(args["As"], args["bs"], args["cs"], dPs=args["Ps"])
    dAs, dbs, dcs, dPs = DT_batch(xs, [None] * size, [None] * size, return_dP=True)
    assert np.isnan(dxs[2]).all() and np.isnan(dys[2]).all() and np.isnan(dss[2]).all()
    assert np.isnan(dbs[2]).all() and np.isnan(dcs[2]).all()
    assert dAs[2].nnz == args["As"][2].nnz and np.isnan(dAs[2].data).all()
    assert dPs[2].nnz == args["Ps"][2].nnz and np.isnan(dPs[2].data).all()
    for i in (0, 1, 3):
        x, y, s, D, DT = solve_and_derivative(args["As"][i], args["bs"][i], args["cs"][i],
                                              args["cone_dicts"][i], P=args["Ps"][i],
                                              solve_method=solver)
        assert relative_error(xs[i], x) < TOL and relative_error(ss[i], s) < TOL
        assert infos[i]["canonical_status"] == "optimal"
        want = D(args["As"][i], args["bs"][i], args["cs"][i], dP=args["Ps"][i])
        for g, w in zip((dxs[i], dys[i], dss[i]), want):
            assert_close(g, w, TOL, floor=1e-4)  # some entries vanish up to rounding
        assert relative_error(dcs[i], DT(xs[i], None, None)[2]) < TOL


class WorkerKiller:
    """A warm start whose conversion to an array kills the (worker) process converting it."""

    def __init__(self) -> None:
        self.parent = os.getpid()

    def __array__(self, dtype=None, copy=None):
        if os.getpid() != self.parent:
            os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("the warm start was converted in the test process")


def test_killed_worker_raises_promptly_and_pool_recovers():
    args = tiny_args([[1.0, 1.0]] * 4)
    warm = [None, None, (WorkerKiller(), np.zeros(2), np.zeros(2)), None]
    outcome = {}

    def run():
        try:
            solve_only_batch(**args, warm_starts=warm, backend="processes", n_jobs_forward=2,
                             chunksize=1, solve_method="SCS")
        except Exception as err:  # noqa: BLE001 - the outcome is checked below
            outcome["error"] = err

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the batch hangs after a worker died"
    assert time.monotonic() - start < 60
    err = outcome.get("error")
    assert isinstance(err, RuntimeError) and not isinstance(err, SolverError)
    assert "died" in str(err) and "2" in str(err).split(":")[0]
    # the broken pool has been discarded: the next batch gets a fresh one
    xs, _, _ = solve_only_batch(**args, backend="processes", n_jobs_forward=2)
    assert relative_error(xs[0], [-0.5]) < 1e-3


def test_exception_in_a_problem_names_it():
    args = tiny_args([[1.0, 1.0]] * 3)
    with pytest.raises(ValueError, match="unknown options") as info:
        solve_and_derivative_batch(**args, backend="threads",
                                   derivative_kwargs={"no_such_option": 1})
    assert info.value.diffqcp_problem_index in range(3)


def test_worker_warnings_reach_the_caller_with_the_problem_index():
    """A degenerate problem (two identical active rows: K is singular) on processes."""
    args = tiny_args([[1.0, 1.0]])
    for key, value in dict(As=sp.csc_matrix(np.array([[-1.0], [-1.0]])), bs=np.ones(2),
                           cs=np.ones(1), cone_dicts={"l": 2}, Ps=None).items():
        args[key].append(value)
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**args, backend="processes")
    DT_batch(xs, [None] * 2, [None] * 2)  # x is unique: silent
    with pytest.warns(NonDifferentiableWarning, match=r"^problem 1: ") as record:
        DT_batch(xs, [None, np.array([1.0, 0.0])], [None] * 2)  # weighs y0 alone
    assert {w.filename for w in record} == {__file__}


# -- warm starts, progress, inputs ------------------------------------------------------------
def test_warm_starts_cut_iterations():
    probs = mixed_batch()[:3]
    settings = dict(solve_method="SCS", eps=1e-8, max_iters=20000)
    xs, ys, ss, infos = solve_only_batch(**batch_args(probs), return_info=True, **settings)
    warm = list(zip(xs, ys, ss))
    xs2, _, _, infos2 = solve_only_batch(**batch_args(probs), warm_starts=warm,
                                         return_info=True, **settings)
    cold = sum(i["iter"] for i in infos)
    hot = sum(i["iter"] for i in infos2)
    assert hot < 0.5 * cold, (cold, hot)
    assert all(relative_error(a, b) < 1e-6 for a, b in zip(xs2, xs))


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_progress_callback_counts_problems(backend):
    args = tiny_args([[1.0, 1.0 + k] for k in range(7)])
    calls = []
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(
        **args, backend=backend, chunksize=2, progress=lambda done, total: calls.append(
            (done, total)))
    assert calls[-1] == (7, 7) and all(t == 7 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    DT_batch(xs, [None] * 7, [None] * 7)
    assert calls[-1] == (7, 7)


def test_progress_bar_and_missing_tqdm(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    args = tiny_args([[1.0, 1.0]] * 3)
    solve_only_batch(**args, progress=True)
    assert "3/3" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.warns(RuntimeWarning, match="tqdm"):
        xs, _, _ = solve_only_batch(**args, progress=True)
    assert len(xs) == 3


@pytest.mark.parametrize("drop", ["bs", "cs", "cone_dicts", "warm_starts", "Ps"])
def test_list_length_mismatch_names_the_argument(drop):
    args = tiny_args([[1.0, 1.0]] * 3)
    args["warm_starts"] = [None] * 3
    args[drop] = args[drop][:2]
    with pytest.raises(ValueError, match=drop):
        solve_and_derivative_batch(**args)


def test_derivative_list_mismatch_names_the_argument():
    args = tiny_args([[1.0, 1.0]] * 3)
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**args)
    with pytest.raises(ValueError, match="dbs"):
        D_batch(args["As"], args["bs"][:2], args["cs"])
    with pytest.raises(ValueError, match="dxs"):
        DT_batch(xs[:1], ys, ss)


@pytest.mark.parametrize("change,match", [
    (dict(backend="gpu"), "backend must be one of"),
    (dict(backend="threads", executor="pool"), "either backend or executor"),
    (dict(n_jobs_forward=0), "n_jobs_forward"),
    (dict(chunksize=0), "chunksize"),
    (dict(progress="yes"), "progress"),
    (dict(mode="newton"), "unknown mode"),
])
def test_bad_options(change, match):
    with pytest.raises(ValueError, match=match):
        solve_and_derivative_batch(**tiny_args([[1.0, 1.0]] * 2), **change)


def test_bad_problem_data_names_problem_and_argument():
    args = tiny_args([[1.0, 1.0]] * 3)
    args["bs"][1] = np.ones(3)
    with pytest.raises(ValueError, match=r"problem 1: b has length 3"):
        solve_and_derivative_batch(**args)


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_inputs_are_not_mutated(backend):
    probs = same_structure_batch(3, seed=33)
    i, j = np.argwhere(probs[0].A.toarray() == 0)[0]
    nnz = probs[0].A.nnz
    for p in probs:  # an explicit zero in the stored pattern of A, at the same place
        coo = p.A.tocoo()
        p.A = sp.csc_matrix((np.r_[coo.data, 0.0], (np.r_[coo.row, i], np.r_[coo.col, j])),
                            shape=p.A.shape)
    args = batch_args(probs)
    saved = [(p.A.data.copy(), p.A.indices.copy(), p.A.indptr.copy(), p.b.copy(), p.c.copy(),
              p.P.data.copy()) for p in probs]
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**args, backend=backend)
    dAs, _, _ = DT_batch(xs, ys, ss)
    for p, before, dA in zip(probs, saved, dAs):
        assert dA.nnz == p.A.nnz == nnz + 1
        after = (p.A.data, p.A.indices, p.A.indptr, p.b, p.c, p.P.data)
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("storage", ["full", "upper"])
def test_stacked_P_values_match_the_dense_symmetric_matrix(storage):
    """The compiled gathers of a same-structure batch's P (union pattern for the
    derivative, upper triangle for the solvers) against dense NumPy, and a full-storage
    member that is not symmetric is refused."""
    rng = np.random.default_rng(0)
    n = 7
    mask = rng.random((n, n)) < 0.4
    mask = mask | mask.T | np.eye(n, dtype=bool)
    pattern = sp.csc_matrix(np.where(mask, 1.0, 0.0))
    if storage == "upper":
        pattern = sp.triu(pattern, format="csc")
    qmap = batch_structure._QuadraticMap(pattern, storage)
    dense = []
    for _ in range(5):
        M = np.where(mask, rng.standard_normal((n, n)), 0.0)
        dense.append(M + M.T)
    stored_cols = np.repeat(np.arange(n), np.diff(pattern.indptr))
    rows = np.stack([D[pattern.indices, stored_cols] for D in dense])  # CSC order
    union = qmap.union_values_batch(rows)
    cols = np.repeat(np.arange(n), np.diff(qmap.indptr))
    for k, D in enumerate(dense):
        np.testing.assert_array_equal(union[k], qmap.union_values(rows[k]))
        np.testing.assert_allclose(union[k], D[qmap.indices, cols], rtol=1e-15)
    upper = qmap.upper_values(rows)
    upper_cols = np.repeat(np.arange(n), np.diff(qmap.upper_indptr))
    for k, D in enumerate(dense):
        np.testing.assert_allclose(upper[k], D[qmap.upper_indices, upper_cols], rtol=1e-15)
    np.testing.assert_array_equal(qmap.upper_values(rows[0]), upper[0])  # one row, 1-D
    if storage == "full":
        skewed = rows.copy()
        i, j = 0, next(p for p in range(n) if p != 0 and mask[p, 0])
        entry = np.flatnonzero((pattern.indices == i) & (stored_cols == j))
        skewed[3, entry] += 1.0
        assert qmap.union_values_batch(skewed) is None
        assert qmap.union_values_batch(np.delete(skewed, 3, axis=0)) is not None
