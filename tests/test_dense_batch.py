"""The batched dense derivative of same-structure batches (diffqcp_np.batch.dense).

Oracle: ``solve_and_derivative`` on each problem alone. The batched path must give the
same D and DT outputs (to 1e-10), dA and dP on exactly the stored patterns, warn for a
singular member and keep the others exact, and must actually be the path taken.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import diffqcp_np.batch.structure as batch_structure
import diffqcp_np.batch.dense as dense_batch
from diffqcp_np.batch.runner import Runner
from diffqcp_np import NonDifferentiableWarning, solve_and_derivative, solve_and_derivative_batch
from problems import (
    Problem,
    assert_close,
    known_solution_problem,
    random_like,
    random_perturbations,
    relative_error,
)

SCS = dict(solve_method="SCS", eps=1e-9, max_iters=20000)
TOL = 1e-10


def same_structure(cone_dict, count=3, storage="full", seed=0, n=None, explicit_zero=True):
    """Problems that differ only in their values; ``storage=None``: no P."""
    base = known_solution_problem(cone_dict, n, seed=seed, quadratic=storage is not None)
    A0 = base.A
    if explicit_zero:  # an explicit zero in A's stored pattern, kept by dA
        i, j = np.argwhere(A0.toarray() == 0)[0]
        coo = A0.tocoo()
        A0 = sp.csc_matrix((np.r_[coo.data, 0.0], (np.r_[coo.row, i], np.r_[coo.col, j])),
                           shape=A0.shape)
        A0.sort_indices()
    rng = np.random.default_rng(seed)
    probs = []
    for _ in range(count):
        A = A0.copy()
        A.data = A.data * (1 + 0.01 * rng.standard_normal(A.nnz))
        P = None
        if storage is not None:
            R = random_like(base.P, rng)
            P = (base.P + 0.01 * (R + R.T)).tocsc()
        b = A @ base.x + base.s
        c = -(A.T @ base.y) - (P @ base.x if P is not None else 0.0)
        if storage == "upper":
            P = sp.triu(P, format="csc")
        probs.append(Problem(A=A, b=b, c=c, cone_dict=dict(base.cone_dict), P=P, x=base.x,
                             y=base.y, s=base.s))
    return probs


def batch_args(probs):
    return dict(As=[p.A for p in probs], bs=[p.b for p in probs], cs=[p.c for p in probs],
                cone_dicts=[p.cone_dict for p in probs], Ps=[p.P for p in probs])


def check_against_single_solves(probs, out, mode="direct", skip=(), **kwargs):
    xs, ys, ss, D_batch, DT_batch = out
    rng = np.random.default_rng(1)
    perts = random_perturbations(probs)
    cots = [(rng.standard_normal(p.n), rng.standard_normal(p.m), rng.standard_normal(p.m))
            for p in probs]
    dxs, dys, dss = D_batch(*[[d[k] for d in perts] for k in range(3)],
                            dPs=[d[3] for d in perts])
    grads = DT_batch(*[[g[k] for g in cots] for k in range(3)], return_dP=True)
    for i, p in enumerate(probs):
        if i in skip:
            continue
        # the batch functions' default solver, "auto", as the single solve's
        x, y, s, D, DT = solve_and_derivative(p.A, p.b, p.c, p.cone_dict, P=p.P, mode=mode,
                                              **{"solve_method": "auto", **kwargs})
        assert relative_error(xs[i], x) < TOL and relative_error(ys[i], y) < TOL
        for got, want in zip((dxs[i], dys[i], dss[i]), D(*perts[i][:3], dP=perts[i][3])):
            assert relative_error(got, want) < TOL, i
        want = DT(*cots[i], return_dP=True)
        for k, (got_k, want_k) in enumerate(zip((g[i] for g in grads), want)):
            if sp.issparse(want_k):
                assert sp.isspmatrix_csc(got_k) and got_k.shape == want_k.shape
                np.testing.assert_array_equal(got_k.indices, want_k.indices)
                np.testing.assert_array_equal(got_k.indptr, want_k.indptr)
                got_k.check_format(full_check=True)
                got_k, want_k = got_k.toarray(), want_k.toarray()
            assert relative_error(got_k, want_k) < TOL, (i, k)
    return grads


CONES = [
    {"z": 2, "l": 6},
    {"z": 1, "l": 3, "q": [3, 4], "ep": 1, "ed": 1, "s": [2], "p": [0.3, -0.6]},
]


@pytest.mark.parametrize("storage", ["full", "upper", None])
@pytest.mark.parametrize("cones", CONES, ids=["orthant", "mixed"])
def test_agrees_with_single_solves(cones, storage):
    probs = same_structure(cones, storage=storage, seed=3)
    out = solve_and_derivative_batch(**batch_args(probs), backend="serial", **SCS)
    dense = out[4].dense_batch
    assert dense is not None and out[3].dense_batch is dense  # the batched path is taken
    assert not dense.singular.any()
    dAs, _, _, dPs = check_against_single_solves(probs, out, **SCS)
    for p, dA, dP in zip(probs, dAs, dPs):  # exactly the stored patterns, zeros included
        assert dA.nnz == p.A.nnz
        if p.P is not None:
            assert dP.nnz == p.P.nnz
            np.testing.assert_array_equal(dP.indices, p.P.indices)
    assert dAs[0].indices is not dAs[1].indices  # each output owns its arrays
    dAs[0].data[:] = 7.0
    dAs[0].eliminate_zeros()
    assert not np.any(dAs[1].data == 7.0)


def test_dense_mode_threads_blocks_and_sparse_jacobian_reading(monkeypatch):
    """Several blocks of different sizes on two threads; D read from to_sparse."""
    monkeypatch.setattr(dense_batch, "BLOCK_BYTES", 1)  # MIN_BLOCK problems per block
    monkeypatch.setattr(dense_batch, "MIN_PER_THREAD", 1)  # blocks on both threads
    monkeypatch.setattr(batch_structure, "PROBE_LIMIT", 0)
    probs = same_structure(CONES[1], count=dense_batch.MIN_BLOCK + 3, storage="upper",
                           seed=4)
    out = solve_and_derivative_batch(**batch_args(probs), backend="threads", n_jobs_forward=2,
                                     n_jobs_backward=2, mode="dense", **SCS)
    assert out[4].dense_batch is not None
    check_against_single_solves(probs, out, mode="dense", **SCS)


@pytest.mark.parametrize("count,min_per_thread", [(20, 1), (20, 64), (131, 64)])
def test_threads_change_no_result(count, min_per_thread, monkeypatch):
    """The setup and refinement on two threads (spans split at any member) or serially
    (a batch below ``2 * MIN_PER_THREAD``) give bit-identical solutions and gradients."""
    monkeypatch.setattr(dense_batch, "MIN_PER_THREAD", min_per_thread)
    kinds = []  # how each set-up ran

    def spy(kind, *args):
        kinds.append(kind)
        return Runner(kind, *args)

    monkeypatch.setattr(dense_batch, "Runner", spy)
    probs = same_structure(CONES[0], count=count, storage="upper", seed=7)
    rng = np.random.default_rng(3)
    cots = [rng.standard_normal(p.n) for p in probs]
    outs = []
    for jobs in (1, 2):
        xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(
            **batch_args(probs), backend="threads", n_jobs_forward=jobs,
            n_jobs_backward=jobs, solve_method="SCS", eps=1e-6)
        assert DT_batch.dense_batch is not None
        dAs, dbs, dcs, dPs = DT_batch(cots, [None] * count, [None] * count, return_dP=True)
        outs.append([xs, ys, ss, [d.data for d in dAs], dbs, dcs, [d.data for d in dPs]])
    assert kinds == ["serial", "threads" if count >= 2 * min_per_thread else "serial"]
    for serial, threaded in zip(*outs):
        for a, b in zip(serial, threaded):
            np.testing.assert_array_equal(a, b)


def test_without_numba_lapack_binding(monkeypatch):
    monkeypatch.setattr(dense_batch, "_GETRF", None)  # SciPy's getrf wrapper instead
    probs = same_structure(CONES[0], storage="full", seed=5)
    out = solve_and_derivative_batch(**batch_args(probs), backend="serial", **SCS)
    assert out[4].dense_batch is not None
    check_against_single_solves(probs, out, **SCS)


def test_rows_where_D_vanishes_are_dropped_from_the_factorisation():
    from diffqcp_np.cones import dpi_matrix

    probs = same_structure(CONES[1], count=2, storage="full", seed=6)
    out = solve_and_derivative_batch(**batch_args(probs), backend="serial", **SCS)
    dense = out[4].dense_batch
    n = probs[0].n
    for k, p in enumerate(probs):
        D = dpi_matrix(out[1][k] - out[2][k], p.cone_dict, dual=True).toarray()
        kept = np.flatnonzero(np.any(D != 0, axis=0) | np.any(D != 0, axis=1))
        assert kept.size < p.m  # some cone rows are dropped here
        assert dense.nk[k] == n + kept.size
        np.testing.assert_array_equal(dense.order[k, n:dense.nk[k]], n + kept)
    check_against_single_solves(probs, out, **SCS)


def degenerate_batch():
    """Three 1-variable QPs; problem 1 has two identical active rows (K is singular)."""
    probs = []
    for A, c in (([[-1.0], [1.0]], 0.5), ([[-1.0], [-1.0]], 3.0), ([[-1.0], [1.0]], -0.25)):
        probs.append(dict(A=sp.csc_matrix(np.array(A)), b=np.ones(2), c=np.array([c]),
                          cone_dict={"l": 2}, P=sp.csc_matrix(np.array([[1.0]]))))
    return probs


@pytest.mark.parametrize("backend", ["serial", "threads"])
def test_singular_member_warns_and_others_stay_exact(backend, monkeypatch):
    monkeypatch.setattr(dense_batch, "MIN_PER_THREAD", 1)  # threads: one member each
    probs = degenerate_batch()
    args = dict(As=[p["A"] for p in probs], bs=[p["b"] for p in probs],
                cs=[p["c"] for p in probs], cone_dicts=[p["cone_dict"] for p in probs],
                Ps=[p["P"] for p in probs])
    # the interior-point method: it splits y between the two rows, where the active-set
    # method's vertex leaves the second row out (y = s = 0) and K is not singular
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**args, backend=backend,
                                                               active_set=False)
    dense = DT_batch.dense_batch
    assert dense is not None
    assert dense.singular.tolist() == [False, True, False] and list(dense.fallbacks) == [1]
    gx = [np.array([1.0]), np.array([0.5]), np.array([-2.0])]
    gy = [np.array([0.3, -0.2]), None, np.array([1.0, 2.0])]
    dAs, dbs, dcs, dPs = DT_batch(gx, gy, [None] * 3, return_dP=True)  # they all exist
    dxs, dys, dss = D_batch(args["As"], args["bs"], args["cs"], dPs=args["Ps"])
    with pytest.warns(NonDifferentiableWarning, match=r"^problem 1: .*y\[0, 1\]") as record:
        DT_batch(gx, [None, np.array([1.0, 0.0]), None], [None] * 3)  # weighs y0 alone
    assert {w.filename for w in record} == {__file__}
    for i, p in enumerate(probs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonDifferentiableWarning)
            x, y, s, D, DT = solve_and_derivative(p["A"], p["b"], p["c"], p["cone_dict"],
                                                  P=p["P"], solve_method="auto",
                                                  active_set=False)
        assert all(np.all(np.isfinite(v)) for v in (dbs[i], dcs[i], dxs[i], dys[i], dss[i]))
        want = DT(gx[i], gy[i], None, return_dP=True)
        got = (dAs[i].toarray(), dbs[i], dcs[i], dPs[i].toarray())
        for g, w in zip(got, (want[0].toarray(), want[1], want[2], want[3].toarray())):
            assert_close(g, w, 1e-8 if i == 1 else TOL)
        for g, w in zip((dxs[i], dys[i], dss[i]), D(p["A"], p["b"], p["c"], dP=p["P"])):
            assert_close(g, w, 1e-8 if i == 1 else TOL)


def test_path_selection(monkeypatch):
    probs = same_structure(CONES[0], count=2, storage="full", seed=7)
    args = batch_args(probs)
    assert solve_and_derivative_batch(**args, backend="serial")[4].dense_batch is not None
    assert solve_and_derivative_batch(**args, backend="serial",
                                      mode="lsqr")[4].dense_batch is None
    # set up in this process whatever the back end of the forward pass
    out = solve_and_derivative_batch(**args, backend="processes", n_jobs_forward=2)
    assert out[4].dense_batch is not None
    check_against_single_solves(probs, out)
    assert solve_and_derivative_batch(
        **args, backend="serial", derivative_kwargs={"permc_spec": "NATURAL"}
    )[4].dense_batch is not None
    monkeypatch.setattr(dense_batch, "DENSE_MAX_DIM", sum(probs[0].A.shape) - 1)
    out = solve_and_derivative_batch(**args, backend="serial")
    assert out[4].dense_batch is None  # the per-problem path, still exact
    check_against_single_solves(probs, out)


def test_bad_cotangents_and_perturbations_name_the_problem():
    probs = same_structure(CONES[0], count=3, storage="upper", seed=8)
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(**batch_args(probs),
                                                               backend="serial")
    bad = list(xs)
    bad[2] = np.full(xs[2].size, np.nan)
    with pytest.raises(ValueError, match="dx contains NaN") as info:
        DT_batch(bad, [None] * 3, [None] * 3)
    assert info.value.diffqcp_problem_index == 2
    dAs = [None, sp.csc_matrix(np.ones(probs[1].A.shape)), None]  # off the pattern
    with pytest.raises(ValueError, match="outside the sparsity pattern") as info:
        D_batch(dAs, [None] * 3, [None] * 3)
    assert info.value.diffqcp_problem_index == 1
    with pytest.raises(TypeError, match="unexpected keyword"):
        DT_batch(xs, ys, ss, bogus=1)
    # a dense dA on the pattern, and the LPGD-only keywords, are accepted
    dA_dense = [p.A.toarray() for p in probs]
    got = D_batch(dA_dense, [None] * 3, [None] * 3, tau=1.0)[0]
    want = D_batch([p.A for p in probs], [None] * 3, [None] * 3)[0]
    assert all(relative_error(g, w) < 1e-14 for g, w in zip(got, want))


# -- batched validation of same-structure data -----------------------------------------------
def test_batched_validation_gives_the_per_problem_copies():
    """``BatchStructure.problems`` equals ``problem`` called per problem, explicit zeros
    (which the objective's symmetric P drops) included."""
    rng = np.random.default_rng(9)
    n, m = 4, 6
    A0 = sp.random(m, n, density=0.5, random_state=rng, format="csc") + sp.eye(m, n)
    A0 = sp.csc_matrix(A0)
    mask = np.ones((n, n))
    mask[0, 1] = mask[1, 0] = 0.0  # stored, sometimes zero
    for storage in ("full", "upper"):
        As, bs, cs, Ps = [], [], [], []
        for k in range(4):
            A = A0.copy()
            A.data = rng.standard_normal(A.nnz)
            S = rng.standard_normal((n, n))
            S = S + S.T
            if k % 2:
                S *= mask
            # every entry of the (upper) triangle stored, zeros included: one pattern
            stored = np.nonzero(np.triu(np.ones((n, n))) if storage == "upper"
                                else np.ones((n, n)))
            P = sp.csc_matrix((S[stored], stored), shape=(n, n))
            P.sort_indices()
            As.append(A)
            bs.append(rng.standard_normal(m))
            cs.append(rng.standard_normal(n))
            Ps.append(P)
        cones = [{"l": m}] * 4
        structure = batch_structure.BatchStructure.detect(As, Ps, cones)
        assert structure is not None
        assert Ps[1].nnz == Ps[0].nnz and np.any(Ps[1].data == 0)
        batched = structure.problems(As, bs, cs, Ps)
        assert batched is not None
        for args, (data, quad) in zip(zip(As, bs, cs, Ps), batched):
            want_data, want_quad = structure.problem(*args)
            for got, want in ((data.A, want_data.A), (data.P, want_data.P),
                              (quad.full, want_quad.full)):
                assert sp.isspmatrix_csc(got) and got.has_canonical_format
                got.check_format(full_check=True)
                np.testing.assert_array_equal(got.indptr, want.indptr)
                np.testing.assert_array_equal(got.indices, want.indices)
                np.testing.assert_array_equal(got.data, want.data)
            np.testing.assert_array_equal(data.b, want_data.b)
            np.testing.assert_array_equal(data.c, want_data.c)
            assert data.b is not args[1] and quad.storage == want_quad.storage


@pytest.mark.parametrize("bad,match", [("A", "problem 2: A contains NaN"),
                                       ("P", "problem 2: P is not symmetric"),
                                       ("b", "problem 2: b contains NaN")])
def test_batched_validation_names_the_bad_problem(bad, match):
    probs = same_structure(CONES[0], count=4, storage="full", seed=10)
    args = batch_args(probs)
    if bad == "A":
        args["As"][2] = args["As"][2].copy()
        args["As"][2].data[0] = np.nan
    elif bad == "P":  # same pattern, one off-diagonal value changed
        P = args["Ps"][2].copy()
        cols = np.repeat(np.arange(P.shape[1]), np.diff(P.indptr))
        P.data[np.flatnonzero(P.indices != cols)[0]] += 1.0
        args["Ps"][2] = P
    else:
        args["bs"][2] = args["bs"][2].copy()
        args["bs"][2][0] = np.inf
    with pytest.raises(ValueError, match=match):
        solve_and_derivative_batch(**args, backend="serial")


def test_refinement_reports_hold_plain_python_values():
    """info["refinement"] of the batched dense path: Python numbers and strings (JSON),
    the same fields as a single solve's report."""
    import json

    from diffqcp_np.derivative.solution_refinement import RefinementReport

    probs = same_structure(CONES[0], count=5, storage="upper", seed=11)
    *_, DT_batch, infos = solve_and_derivative_batch(**batch_args(probs), solve_method="SCS",
                                                     return_info=True)
    assert DT_batch.dense_batch is not None
    fields = RefinementReport(0.0, 0.0).as_dict().keys()  # a single solve's report's
    json.dumps(infos)
    for info in infos:
        report = info["refinement"]
        assert report.keys() == fields and report["steps"] >= 1
        assert all(type(v) in (int, float, str) for v in report.values())
