"""The GPU path's array-namespace code on NumPy (and ``array_api_strict`` where it needs
no kernels), against the CPU implementation: cone orchestration, value gathers of M and
K, batched dense LDLᵀ, refinement, LSMR, and the batched dense derivative against
``diffqcp_np.derivative``."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from problems import Problem, known_solution_problem, random_perturbation

import diffqcp_np
from diffqcp_np.cones import as_cone_spec, pi
from diffqcp_np.cones.projection import ConeJacobian
from diffqcp_np.cones.psd import PSDJacobian, project_psd
from diffqcp_np.cones.reduced import _e_weights, _null_weights, reduced_parts
from diffqcp_np.derivative.reduced_system import ReducedSystem
from diffqcp_np.gpu import cones, dense, psd, refine
from diffqcp_np.gpu.assembly import (
    gather,
    kkt_matrix_map,
    reduced_matrix_map,
    regularize,
    sources,
)
from diffqcp_np.gpu.dense_derivative import DenseBatchDerivative, DenseStructure, launch_gather
from diffqcp_np.gpu.layout import BlockLayout

strict = pytest.importorskip("array_api_strict")


@pytest.fixture(params=["numpy", "array_api_strict"])
def xp(request):
    """NumPy, and the strict namespace with data-dependent shapes and boolean indexing
    forbidden (on a GPU both would read sizes back to the host)."""
    if request.param == "numpy":
        yield np
        return
    with strict.ArrayAPIStrictFlags(data_dependent_shapes=False, boolean_indexing=False):
        yield strict

CONE_DICTS = [
    {"z": 2, "l": 6},
    {"l": 3, "q": [3, 5]},
    {"z": 1, "q": [4, 40]},
    {"l": 2, "ep": 2, "ed": 1},
    {"z": 1, "p": [0.3, -0.6, 0.5]},
    {"l": 2, "s": [2, 3]},
    {"s": [2, 3, 2, 1]},
    {"z": 1, "l": 2, "q": [3], "s": [2], "ep": 1, "ed": 1, "p": [0.4, -0.7]},
]


def dense_from_layout(values: np.ndarray, layout: BlockLayout) -> np.ndarray:
    out = np.zeros((layout.m, layout.m))
    out[layout.rows, layout.cols] = values[layout.storage]
    return out


# -- cones --------------------------------------------------------------------------------

@pytest.mark.parametrize("cone_dict", CONE_DICTS)
@pytest.mark.parametrize("lift_above", [32, 3])
def test_cone_projections_and_parts_match_cpu(host_kernels, cone_dict, lift_above):
    spec = as_cone_spec(cone_dict)
    v = np.random.default_rng(7).standard_normal((3, spec.dim))
    for dual in (False, True):
        np.testing.assert_array_equal(cones.project(v, spec, host_kernels, np, dual),
                                      np.stack([pi(row, spec, dual) for row in v]))
    layout = BlockLayout.from_spec(spec, lift_above)
    parts = cones.jacobian_parts(v, layout, host_kernels, np)
    for b, row in enumerate(v):
        cpu = reduced_parts(ConeJacobian(row, spec, dual=True), lift_above)
        for mine, theirs in zip(parts, (cpu.D, cpu.E, cpu.null)):
            np.testing.assert_array_equal(dense_from_layout(mine[b], layout), theirs.toarray())


def test_psd_matches_cpu(xp):
    rng = np.random.default_rng(8)
    for k in (1, 2, 4):
        X = rng.standard_normal((5, k * (k + 1) // 2))
        X[0] = psd.vec(np.eye(k)[None] * np.array([1.0, 0.0, -1.0, 2.0][:k]), np)[0]  # kinks
        out = np.asarray(psd.project(xp.asarray(X), k, xp))
        np.testing.assert_allclose(out, project_psd(X.ravel(), [k] * 5).reshape(5, -1),
                                   rtol=0, atol=1e-14)
        blocks = psd.dense_jacobians(xp.asarray(X), k, xp,
                                     lambda B: (xp.asarray(_e_weights(np.asarray(B))),
                                                xp.asarray(_null_weights(np.asarray(B)))))
        expected = PSDJacobian(X.ravel(), [k] * 5).dense_blocks(None, _e_weights,
                                                                 _null_weights)
        for t in range(3):
            np.testing.assert_allclose(np.asarray(blocks[t]),
                                       np.stack([e[t] for e in expected]), rtol=0, atol=1e-14)


# -- gathers of M and K ---------------------------------------------------------------------

def problem_arrays(cone_dict, seed=0):
    prob = known_solution_problem(cone_dict, seed=seed)
    spec = as_cone_spec(cone_dict)
    return prob, spec, (prob.A.indptr, prob.A.indices), (prob.P.indptr, prob.P.indices)


@pytest.mark.parametrize("cone_dict", CONE_DICTS)
def test_reduced_matrix_gather_equals_cpu_assembly(host_kernels, cone_dict):
    prob, spec, A_pattern, P_pattern = problem_arrays(cone_dict)
    n, m = prob.n, prob.m
    layout = BlockLayout.from_spec(spec, 32)
    M_map = reduced_matrix_map(n, P_pattern, A_pattern, layout)
    d, e, _ = cones.jacobian_parts((prob.y - prob.s)[None], layout, host_kernels, np)
    src = sources(prob.P.data[None], prob.A.data[None], d, e, np)
    arrays = {k: getattr(M_map.gather, k) for k in ("term_ptr", "left", "right", "weight")}
    values = launch_gather(host_kernels, src, M_map.gather, arrays, np)
    np.testing.assert_array_equal(values, gather(src, M_map.gather, np))  # xp == kernel
    cpu = ReducedSystem(prob.P, prob.A, ConeJacobian(prob.y - prob.s, spec, dual=True),
                        transpose_A=lambda: prob.A.T.tocsc())
    regularized = regularize(values, M_map.signs, np.array([cpu.regularization]), np)[0]
    mine = sp.csc_matrix((regularized, M_map.indices, M_map.indptr), shape=(n + m,) * 2)
    keep = np.concatenate([np.arange(n), n + cpu.kept])
    factored = cpu.factored_matrix()
    theirs = sp.csc_matrix((factored.data, factored.indices, factored.indptr),
                           shape=(keep.size,) * 2).toarray()
    np.testing.assert_array_equal(mine.toarray()[np.ix_(keep, keep)], theirs)
    dropped = np.setdiff1d(np.arange(n, n + m), keep)
    assert not np.any(mine.toarray()[:n, dropped])  # rows without D are decoupled


@pytest.mark.parametrize("cone_dict", CONE_DICTS)
def test_kkt_gather_equals_dense_reference(host_kernels, cone_dict):
    prob, spec, A_pattern, P_pattern = problem_arrays(cone_dict, seed=1)
    n, m = prob.n, prob.m
    layout = BlockLayout.from_spec(spec, max(spec.soc, default=0))
    K_map = kkt_matrix_map(n, P_pattern, A_pattern, layout)
    d, e, _ = cones.jacobian_parts((prob.y - prob.s)[None], layout, host_kernels, np)
    values = gather(sources(prob.P.data[None], prob.A.data[None], d, e, np), K_map.gather, np)
    K = sp.csc_matrix((values[0], K_map.indices, K_map.indptr), shape=(n + m,) * 2).toarray()
    D = ConeJacobian(prob.y - prob.s, spec, dual=True).to_dense()
    A = prob.A.toarray()
    reference = np.block([[prob.P.toarray(), A.T @ D], [-A, np.eye(m) - D]])
    np.testing.assert_allclose(K, reference, rtol=0, atol=1e-14 * np.abs(reference).max())
    assert np.array_equal(K[n:, :n], -A) and np.array_equal(K[:n, :n], prob.P.toarray())


def test_gather_on_namespaces_equals_kernel(host_kernels, xp):
    rng = np.random.default_rng(9)
    prob, spec, A_pattern, P_pattern = problem_arrays({"l": 3, "q": [4], "ep": 1}, seed=2)
    layout = BlockLayout.from_spec(spec, 32)
    M_map = reduced_matrix_map(prob.n, P_pattern, A_pattern, layout)
    src = rng.standard_normal((3, M_map.gather.sources))
    arrays = {k: getattr(M_map.gather, k) for k in ("term_ptr", "left", "right", "weight")}
    expected = launch_gather(host_kernels, src, M_map.gather, arrays, np)
    actual = np.asarray(gather(xp.asarray(src), M_map.gather, xp))
    assert actual.tobytes() == expected.tobytes()


# -- dense LDL', refinement, LSMR -----------------------------------------------------------

def quasi_definite(rng, batch, n, k):
    G = rng.standard_normal((batch, n + k, n + k))
    M = 0.5 * (G + np.swapaxes(G, 1, 2))
    M[:, :n, :n] += (n + k) * np.eye(n)
    M[:, n:, n:] -= (n + k) * np.eye(k)
    return M


def test_batched_ldlt_solves_and_inertia(xp):
    rng = np.random.default_rng(10)
    M = quasi_definite(rng, 6, 5, 7)
    rhs = rng.standard_normal((6, 12))
    L, d = dense.ldlt(xp.asarray(M))  # the namespace from the arrays (backend.array_module)
    z = np.asarray(dense.ldlt_solve(L, d, xp.asarray(rhs)))
    np.testing.assert_allclose(z, np.linalg.solve(M, rhs[..., None])[..., 0], rtol=1e-12,
                               atol=1e-12)
    d = np.asarray(d)
    assert (d[:, :5] > 0).all() and (d[:, 5:] < 0).all()
    L = np.asarray(L)
    np.testing.assert_allclose((L * d[:, None, :]) @ np.swapaxes(L, 1, 2), M, atol=1e-12)


def test_refinement_removes_a_perturbation(xp):
    """Solves with a perturbed matrix, refined against the exact one: the error falls to
    rounding; a member whose first answer is exact stays exact."""
    rng = np.random.default_rng(11)
    M = quasi_definite(rng, 4, 3, 4)
    perturbed = M + 1e-6 * quasi_definite(rng, 4, 3, 4)
    L, d = dense.ldlt(xp.asarray(perturbed), xp)
    Mx = xp.asarray(M)
    rhs = rng.standard_normal((4, 7))
    rhs[3] = 0.0
    z, residual = refine.refined_solve(lambda r: dense.ldlt_solve(L, d, r, xp),
                                       lambda z: dense.matvec(Mx, z), xp.asarray(rhs), 4, xp)
    exact = np.linalg.solve(M, rhs[..., None])[..., 0]
    np.testing.assert_allclose(np.asarray(z), exact, rtol=1e-13, atol=1e-13)
    assert np.all(np.asarray(residual)[:3] < 1e-14) and np.asarray(residual)[3] == 0.0
    _, unrefined = refine.refined_solve(lambda r: dense.ldlt_solve(L, d, r, xp),
                                        lambda z: dense.matvec(Mx, z), xp.asarray(rhs), 0, xp)
    assert np.all(np.asarray(unrefined)[:3] > 1e-9)


@pytest.mark.parametrize("check_every", [10, None])
def test_lsmr_matches_scipy(xp, check_every):
    rng = np.random.default_rng(12)
    batch, m, n = 4, 25, 9
    A = rng.standard_normal((batch, m, n))
    A[1, :, -1] = A[1, :, 0]  # rank deficient: the minimum-norm answer
    b = rng.standard_normal((batch, m))
    b[2] = 0.0
    Ax = xp.asarray(A)
    result = refine.lsmr(lambda v: dense.matvec(Ax, v), lambda u: dense.matvec(Ax, u, True),
                         xp.asarray(b), n, xp, atol=1e-12, btol=1e-12, maxiter=200,
                         check_every=check_every)
    for k in range(batch):
        x, istop, itn, normr = spla.lsmr(A[k], b[k], atol=1e-12, btol=1e-12, maxiter=200)[:4]
        np.testing.assert_allclose(np.asarray(result.x)[k], x, rtol=1e-9, atol=1e-12)
        assert int(np.asarray(result.istop)[k]) == istop
        assert int(np.asarray(result.itn)[k]) == itn
        np.testing.assert_allclose(float(np.asarray(result.normr)[k]), normr, rtol=1e-9,
                                   atol=1e-300)


# -- the batched dense derivative -----------------------------------------------------------

def same_structure_batch(cone_dict, size, seed, quadratic=True):
    """Problems with one pattern of A and P and nearby values and solutions."""
    base = known_solution_problem(cone_dict, seed=seed, quadratic=quadratic)
    spec = as_cone_spec(cone_dict)
    rng = np.random.default_rng(seed)
    problems = []
    v0 = base.y - base.s
    for k in range(size):
        A = base.A.copy()
        A.data = A.data * (1.0 + 0.05 * k * rng.standard_normal(A.nnz))
        P = None if base.P is None else base.P.copy()
        if P is not None:
            P.data = P.data * (1.0 + 0.05 * k * rng.uniform(0.0, 1.0))
        v = v0 + 0.05 * k * rng.standard_normal(v0.size)
        y = pi(v, spec, dual=True)
        problems.append((A, P, base.x + 0.1 * k, y, y - v))
    return spec, problems


@pytest.mark.parametrize("cone_dict,quadratic", [(c, True) for c in CONE_DICTS]
                         + [({"z": 2, "l": 8}, False), ({"l": 4, "q": [3, 4]}, False)])
def test_dense_batch_derivative_matches_cpu(host_kernels, cone_dict, quadratic):
    spec, problems = same_structure_batch(cone_dict, 3, seed=3, quadratic=quadratic)
    A0, P0 = problems[0][:2]
    structure = DenseStructure.build(spec, A0.shape[1], (A0.indptr, A0.indices),
                                     None if P0 is None else (P0.indptr, P0.indices))
    A_vals, x, y, s = (np.stack(a) for a in zip(*[(A.data, x, y, s)
                                                  for A, _, x, y, s in problems]))
    P_vals = None if P0 is None else np.stack([P.data for _, P, *_ in problems])
    batch = DenseBatchDerivative(structure, P_vals, A_vals, x, y, s, host_kernels)
    rng = np.random.default_rng(4)
    perturbations, cotangents = [], []
    for A, P, *_ in problems:
        dummy = Problem(A=A, b=None, c=None, cone_dict=cone_dict, P=P, x=None, y=None, s=None)
        perturbations.append(random_perturbation(dummy, rng))
        cotangents.append((rng.standard_normal(A.shape[1]), rng.standard_normal(A.shape[0]),
                           rng.standard_normal(A.shape[0])))
    dA, db, dc = (np.stack([p[i] if i else p[0].data for p in perturbations]) for i in range(3))
    dP = None if P0 is None else np.stack([p[3].data for p in perturbations])
    jvp = batch.jvp(dA, db, dc, dP)
    gx, gy, gs = (np.stack(c) for c in zip(*cotangents))
    vjp = batch.vjp(gx, gy, gs)
    assert np.all(batch.last_residual < 1e-12)
    assert (vjp[3] is None) == (P0 is None)
    for k, (A, P, xk, yk, sk) in enumerate(problems):
        b = A @ xk + sk  # (x, y, s) solves the problem with these b and c
        c = -(A.T @ yk) - (0.0 if P is None else P @ xk)
        D, DT = diffqcp_np.derivative(A, b, c, cone_dict, xk, yk, sk, P=P)
        dAk, dbk, dck, dPk = perturbations[k]
        for mine, theirs in zip(jvp, D(dAk, dbk, dck, dP=dPk)):
            np.testing.assert_allclose(mine[k], theirs, rtol=1e-9, atol=1e-10)
        expected = DT(gx[k], gy[k], gs[k], return_dP=True)
        for mine, theirs in zip(vjp, (expected[0].data, *expected[1:3])):
            np.testing.assert_allclose(mine[k], theirs, rtol=1e-9, atol=1e-10)
        if P is not None:
            np.testing.assert_allclose(vjp[3][k], expected[3].data, rtol=1e-9, atol=1e-10)


def test_lsmr_on_the_batch_system_matches_the_direct_solve(host_kernels):
    spec, problems = same_structure_batch({"l": 3, "q": [4], "ep": 1}, 2, seed=5)
    A0, P0 = problems[0][:2]
    structure = DenseStructure.build(spec, A0.shape[1], (A0.indptr, A0.indices),
                                     (P0.indptr, P0.indices))
    A_vals, P_vals, x, y, s = (np.stack(a) for a in zip(*[(A.data, P.data, x, y, s)
                                                          for A, P, x, y, s in problems]))
    batch = DenseBatchDerivative(structure, P_vals, A_vals, x, y, s, host_kernels, np)
    r = np.random.default_rng(6).standard_normal((2, batch.K.shape[1]))
    for transpose in (False, True):
        direct = batch.solve(r, transpose)
        result = refine.lsmr(lambda z, t=transpose: dense.matvec(batch.K, z, t),
                             lambda w, t=transpose: dense.matvec(batch.K, w, not t), r,
                             r.shape[1], np, atol=1e-14, btol=1e-14, maxiter=500)
        np.testing.assert_allclose(result.x, direct, rtol=1e-8, atol=1e-10)


def test_lsmr_reads_the_device_only_every_check_every_iterations():
    """The only host read in LSMR's loop is ``bool(xp.any(...))`` every ``check_every``
    iterations: count the calls of ``any`` on a NumPy namespace that records them."""
    calls = []
    counting = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np)
                                        if not k.startswith("__")})
    counting.any = lambda *args, **kwargs: calls.append(1) or np.any(*args, **kwargs)
    rng = np.random.default_rng(13)
    A, b = rng.standard_normal((3, 40, 15)), rng.standard_normal((3, 40))
    result = refine.lsmr(lambda v: dense.matvec(A, v), lambda u: dense.matvec(A, u, True), b,
                         15, counting, atol=1e-12, btol=1e-12, maxiter=100, check_every=4)
    iterations = int(result.itn.max())
    assert len(calls) == -(-iterations // 4)
    calls.clear()
    refine.lsmr(lambda v: dense.matvec(A, v), lambda u: dense.matvec(A, u, True), b, 15,
                counting, maxiter=30, check_every=None)
    assert not calls
