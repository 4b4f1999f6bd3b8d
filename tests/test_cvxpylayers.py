"""diffqcp_np behind cvxpylayers: the custom solver backend, the DIFFCP backend, legacy 0.1.x.

Every test checks gradients: the layer's backward pass against central finite differences
of the layer's own forward output, re-solved at θ ± h with tight Clarabel tolerances.

(a) ``diffqcp_np.layers.DiffqcpSolver`` (cvxpylayers >= 1.2 ``SolverInterface``) in the
    PyTorch and JAX layers, with parameters in the quadratic objective ``P`` (what the
    DIFFCP backend cannot differentiate) and without, single and batched;
(b) cvxpylayers 1.x's DIFFCP backend after ``install_as_diffcp()`` (and after
    ``install_diffcp_backend()`` when ``diffcp_if`` was imported first), shown to run on
    diffqcp_np;
(c) legacy cvxpylayers 0.1.x after ``install_as_diffcp()``, in a subprocess that puts the
    0.1.6 wheel (downloaded once with pip into pytest's cache, or given by the environment
    variable ``DIFFQCP_LEGACY_CVXPYLAYERS``: a wheel or a folder holding ``cvxpylayers/``)
    ahead of the installed cvxpylayers 1.x; skipped, with the reason, if it cannot be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import diffqcp_np

cp = pytest.importorskip("cvxpy")
cvxpylayers = pytest.importorskip("cvxpylayers")

try:  # cvxpylayers >= 1.2 (SolverInterface); the legacy test also runs under 0.1.x
    from diffqcp_np.layers import DiffqcpSolver
except ImportError as exc:
    DiffqcpSolver = None
    _NO_INTERFACE = f"cvxpylayers {getattr(cvxpylayers, '__version__', '?')} has no " \
                    f"SolverInterface ({exc})"
else:
    _NO_INTERFACE = ""
needs_interface = pytest.mark.skipif(DiffqcpSolver is None, reason=_NO_INTERFACE)
needs_v1 = pytest.mark.skipif(
    str(getattr(cvxpylayers, "__version__", "0")).startswith("0."),
    reason="the DIFFCP backend (cvxpylayers.interfaces.diffcp_if) is cvxpylayers 1.x's")

ROOT = Path(__file__).resolve().parents[1]
TIGHT = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, tol_ktratio=1e-10,
             max_iter=500)
H = 1e-6
RTOL, ATOL = 2e-5, 2e-7


def tight_solver() -> DiffqcpSolver:
    return DiffqcpSolver(solve_method="Clarabel", **TIGHT)


def assert_grad_close(got, want, what: str) -> None:
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(float(np.abs(want).max()), 1.0)
    err = float(np.abs(got - want).max())
    assert err <= ATOL + RTOL * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def fd_gradient(f, values: list[np.ndarray], h: float = H) -> list[np.ndarray]:
    """Central finite differences of the scalar f(*values), entry by entry."""
    grads = []
    for k, v in enumerate(values):
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            plus = [u.copy() for u in values]
            minus = [u.copy() for u in values]
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (f(*plus) - f(*minus)) / (2 * h)
        grads.append(g)
    return grads


# -- problems ------------------------------------------------------------------------------------
N_ASSETS, N_FACTORS = 4, 2


def portfolio_P_param():
    """½ w'Σw − μ'w, 1'w = 1, w ≥ 0 with Σ a PSD parameter: Σ enters P."""
    w = cp.Variable(N_ASSETS)
    Sigma = cp.Parameter((N_ASSETS, N_ASSETS), PSD=True)
    mu = cp.Parameter(N_ASSETS)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, Sigma) - mu @ w),
                         [cp.sum(w) == 1, w >= 0])
    return problem, [Sigma, mu], [w]


def portfolio_factor_param():
    """½‖F'w‖² − μ'w, 1'w = 1, w ≥ 0 with F a parameter (P constant, F in A)."""
    w = cp.Variable(N_ASSETS)
    F = cp.Parameter((N_ASSETS, N_FACTORS))
    mu = cp.Parameter(N_ASSETS)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(F.T @ w) + 0.05 * cp.sum_squares(w)
                                     - mu @ w), [cp.sum(w) == 1, w >= 0])
    return problem, [F, mu], [w]


def l1_regression():
    """A linear program (no P at all): ½‖Ax − b‖₁, x ≥ 0 (cvxpylayers' README example)."""
    x = cp.Variable(2)
    A = cp.Parameter((3, 2))
    b = cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
    return problem, [A, b], [x]


def soc_exp_problem():
    """Second-order and exponential cones; also returns a constraint's dual variable."""
    x = cp.Variable(3)
    a = cp.Parameter(3)
    r = cp.Parameter(pos=True)
    con = cp.norm(x, 2) <= r
    problem = cp.Problem(cp.Minimize(a @ x - cp.sum(cp.log(x + 2))), [con])
    return problem, [a, r], [x, con.dual_variables[0]]


RNG_SEED = 20240611


def _nondegenerate(F, mu) -> bool:
    """At least two assets held and strict complementarity with a margin (FD-friendly)."""
    w = cp.Variable(N_ASSETS)
    long_only = w >= 0
    cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, sigma_of(F)) - mu @ w),
               [cp.sum(w) == 1, long_only]).solve(solver="CLARABEL")
    margin = np.min(w.value + long_only.dual_value)
    return bool(np.sum(w.value > 1e-6) >= 2 and margin > 0.02)


def portfolio_values(rng, batch: int | None = None, shared_mu: bool = False):
    """Factors F and returns μ (μ unbatched if shared_mu) of nondegenerate portfolios.

    Both portfolio problems solve min ½ w'(FF' + 0.1 I)w − μ'w over the simplex.
    """
    shape = () if batch is None else (batch,)
    while True:
        F = rng.standard_normal(shape + (N_ASSETS, N_FACTORS))
        mu = 0.1 * rng.standard_normal((() if shared_mu else shape) + (N_ASSETS,))
        Fs = F.reshape(-1, N_ASSETS, N_FACTORS)
        mus = np.broadcast_to(mu, (len(Fs), N_ASSETS))
        if all(_nondegenerate(Fi, mi) for Fi, mi in zip(Fs, mus)):
            return F, mu


def sigma_of(F, xp=np):
    """Σ = FF' + 0.1 I (batched over leading axes)."""
    Ft = xp.swapaxes(F, -1, -2)
    return F @ Ft + 0.1 * xp.eye(F.shape[-2])


# -- (a) PyTorch ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def th():
    torch = pytest.importorskip("torch")
    from cvxpylayers.torch import CvxpyLayer

    return torch, CvxpyLayer


def torch_loss_and_grads(th_mod, layer, build, values, weights):
    """Loss Σ_k ⟨weights_k, output_k⟩ and its gradient with respect to ``values``."""
    tt = th_mod
    tensors = [tt.tensor(v, dtype=tt.float64, requires_grad=True) for v in values]
    outputs = layer(*build(*tensors))
    loss = sum((o * tt.tensor(wk)).sum() for o, wk in zip(outputs, weights))
    loss.backward()
    return float(loss.detach()), [t.grad.numpy().copy() for t in tensors]


def torch_forward(th_mod, layer, build, weights):
    tt = th_mod

    def f(*values):
        with tt.no_grad():
            outputs = layer(*build(*[tt.tensor(v, dtype=tt.float64) for v in values]))
        return float(sum((o.numpy() * wk).sum() for o, wk in zip(outputs, weights)))

    return f


@needs_interface
@pytest.mark.parametrize("batch", [None, 3])
def test_torch_P_parameter(th, batch):
    """Gradient reaches F through Σ = FF' + 0.1I, which enters P; μ is broadcast."""
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_P_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED)
    F, mu = portfolio_values(rng, batch, shared_mu=True)  # μ broadcast over the batch
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]

    def build(F_, mu_):
        return sigma_of(F_, tt), mu_

    _, grads = torch_loss_and_grads(tt, layer, build, [F, mu], weights)
    fd = fd_gradient(torch_forward(tt, layer, build, weights), [F, mu])
    assert_grad_close(grads[0], fd[0], "dF")
    assert_grad_close(grads[1], fd[1], "dmu")
    assert np.abs(grads[0]).max() > 1e-3  # P really is differentiated
    with pytest.raises(ValueError, match="DPP"):  # what the DIFFCP backend cannot do
        CvxpyLayer(problem, parameters=params, variables=variables, solver="DIFFCP")

    # the forward output is CVXPY's solution
    (w,) = variables
    with tt.no_grad():
        out = layer(sigma_of(tt.tensor(F), tt), tt.tensor(mu))[0].numpy()
    for i in range(batch or 1):
        params[0].value = sigma_of(F[i] if batch else F)
        params[1].value = mu
        problem.solve(solver="CLARABEL", **TIGHT)
        np.testing.assert_allclose(out[i] if batch else out, w.value, atol=1e-7)


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_torch_factor_in_constraints(th, batch):
    """½‖F'w‖² − μ'w with F a parameter (the quadratic objective has a constant P)."""
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_factor_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 1)
    F, mu = portfolio_values(rng, batch)
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]
    _, grads = torch_loss_and_grads(tt, layer, lambda a, b: (a, b), [F, mu], weights)
    fd = fd_gradient(torch_forward(tt, layer, lambda a, b: (a, b), weights), [F, mu])
    assert_grad_close(grads[0], fd[0], "dF")
    assert_grad_close(grads[1], fd[1], "dmu")


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_torch_linear_program(th, batch):
    """No quadratic objective (cvxpylayers passes P = None)."""
    tt, CvxpyLayer = th
    problem, params, variables = l1_regression()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 2)
    shape = (batch,) if batch else ()
    A, b = rng.standard_normal(shape + (3, 2)), rng.standard_normal(shape + (3,))
    weights = [rng.standard_normal(shape + (2,))]
    _, grads = torch_loss_and_grads(tt, layer, lambda a, c: (a, c), [A, b], weights)
    fd = fd_gradient(torch_forward(tt, layer, lambda a, c: (a, c), weights), [A, b])
    assert_grad_close(grads[0], fd[0], "dA")
    assert_grad_close(grads[1], fd[1], "db")


@needs_interface
def test_torch_soc_exp_and_dual_output(th):
    """Second-order and exponential cones; a dual variable as a layer output.

    SCS at eps 1e-12 (Clarabel stops near 1e-9 on exponential cones, too coarse for the
    differences); h = 1e-3 keeps the solver's error out of the differences.
    """
    tt, CvxpyLayer = th
    problem, params, variables = soc_exp_problem()
    solver = DiffqcpSolver(solve_method="SCS", eps=1e-12, max_iters=200000)
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=solver)
    rng = np.random.default_rng(RNG_SEED + 3)
    a, r = rng.standard_normal(3), np.array(0.8)
    weights = [rng.standard_normal(3), np.array(1.3)]
    build = lambda a_, r_: (a_, r_)  # noqa: E731
    _, grads = torch_loss_and_grads(tt, layer, build, [a, r], weights)
    fd = fd_gradient(torch_forward(tt, layer, build, weights), [a, r], h=1e-3)
    assert_grad_close(grads[0], fd[0], "da")
    assert_grad_close(grads[1], fd[1], "dr")
    # the outputs (primal x and the SCS-convention dual of the cone constraint) are CVXPY's
    params[0].value, params[1].value = a, r
    problem.solve(solver="SCS", eps=1e-10, max_iters=200000)
    with tt.no_grad():
        x_out, dual_out = layer(tt.tensor(a), tt.tensor(r))
    np.testing.assert_allclose(x_out.numpy(), variables[0].value, atol=1e-6)
    np.testing.assert_allclose(dual_out.numpy(), problem.constraints[0].dual_value, atol=1e-6)


@needs_interface
def test_torch_shared_solver(th):
    """One DiffqcpSolver instance serving two layers gives each its own gradients."""
    tt, CvxpyLayer = th
    shared = tight_solver()
    p1, par1, var1 = portfolio_P_param()
    p2, par2, var2 = l1_regression()
    layer1 = CvxpyLayer(p1, parameters=par1, variables=var1, solver=shared)
    layer2 = CvxpyLayer(p2, parameters=par2, variables=var2, solver=shared)
    rng = np.random.default_rng(RNG_SEED + 4)
    F, mu = portfolio_values(rng)
    A, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    w1, w2 = [rng.standard_normal(N_ASSETS)], [rng.standard_normal(2)]
    build1 = lambda F_, mu_: (sigma_of(F_, tt), mu_)  # noqa: E731
    _, g1 = torch_loss_and_grads(tt, layer1, build1, [F, mu], w1)
    _, g2 = torch_loss_and_grads(tt, layer2, lambda a, c: (a, c), [A, b], w2)
    fresh = CvxpyLayer(p2, parameters=par2, variables=var2, solver=tight_solver())
    _, g2f = torch_loss_and_grads(tt, fresh, lambda a, c: (a, c), [A, b], w2)
    for got, want in zip(g2, g2f):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    fd = fd_gradient(torch_forward(tt, layer1, build1, w1), [F, mu])
    assert_grad_close(g1[0], fd[0], "dF")


@needs_interface
def test_torch_float32_inputs(th):
    """float32 parameters: solved in float64; the gradient reaches F in float32.

    (cvxpylayers' CPU path evaluates the canonical data with SciPy in float64, so the
    layer's output is float64 whatever the inputs.)
    """
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_P_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 5)
    F, mu = portfolio_values(rng)
    c = rng.standard_normal(N_ASSETS)
    F32 = tt.tensor(F, dtype=tt.float32, requires_grad=True)
    (w32,) = layer(sigma_of(F32, tt), tt.tensor(mu, dtype=tt.float32))
    (w32 * tt.tensor(c, dtype=w32.dtype)).sum().backward()
    assert F32.grad.dtype == tt.float32
    _, g64 = torch_loss_and_grads(tt, layer, lambda F_, mu_: (sigma_of(F_, tt), mu_),
                                  [F, mu], [c])
    np.testing.assert_allclose(F32.grad.numpy(), g64[0], rtol=1e-3, atol=1e-4)


# -- (a) JAX -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jx():
    jax = pytest.importorskip("jax")
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    from cvxpylayers.jax import CvxpyLayer

    yield jax, CvxpyLayer
    jax.config.update("jax_enable_x64", previous)


def jax_loss(layer, build, weights):
    def loss(*values):
        outputs = layer(*build(*values))
        return sum((o * wk).sum() for o, wk in zip(outputs, weights))

    return loss


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_jax_P_parameter(jx, batch):
    jax, CvxpyLayer = jx
    jnp = jax.numpy
    problem, params, variables = portfolio_P_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 10)
    F, mu = portfolio_values(rng, batch)
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]
    loss = jax_loss(layer, lambda F_, mu_: (sigma_of(F_, jnp), mu_), weights)
    grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(F), jnp.asarray(mu))
    fd = fd_gradient(lambda F_, mu_: float(loss(jnp.asarray(F_), jnp.asarray(mu_))), [F, mu])
    assert_grad_close(grads[0], fd[0], "dF")
    assert_grad_close(grads[1], fd[1], "dmu")
    assert np.abs(np.asarray(grads[0])).max() > 1e-3


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_jax_without_P(jx, batch):
    jax, CvxpyLayer = jx
    jnp = jax.numpy
    problem, params, variables = l1_regression()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 11)
    shape = (batch,) if batch else ()
    A, b = rng.standard_normal(shape + (3, 2)), rng.standard_normal(shape + (3,))
    weights = [rng.standard_normal(shape + (2,))]
    loss = jax_loss(layer, lambda a, c: (a, c), weights)
    grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(A), jnp.asarray(b))
    fd = fd_gradient(lambda a, c: float(loss(jnp.asarray(a), jnp.asarray(c))), [A, b])
    assert_grad_close(grads[0], fd[0], "dA")
    assert_grad_close(grads[1], fd[1], "db")


@needs_interface
def test_jax_matches_torch(jx, th):
    """Both frameworks' layers give the same gradients (same backend, same problem)."""
    jax, JaxLayer = jx
    tt, TorchLayer = th
    jnp = jax.numpy
    problem, params, variables = portfolio_factor_param()
    rng = np.random.default_rng(RNG_SEED + 12)
    F, mu = portfolio_values(rng, 2)
    weights = [rng.standard_normal((2, N_ASSETS))]
    jlayer = JaxLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    tlayer = TorchLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    gj = jax.grad(jax_loss(jlayer, lambda a, b: (a, b), weights), argnums=(0, 1))(
        jnp.asarray(F), jnp.asarray(mu))
    _, gt = torch_loss_and_grads(tt, tlayer, lambda a, b: (a, b), [F, mu], weights)
    for a, b in zip(gj, gt):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-8, atol=1e-11)


# -- (b) the DIFFCP backend of cvxpylayers 1.x --------------------------------------------------
DIFFCP_IF = "cvxpylayers.interfaces.diffcp_if"


@pytest.fixture
def diffcp_backend(monkeypatch):
    """install_as_diffcp() before cvxpylayers imports diffcp_if; counts our batch calls.

    Restores ``sys.modules`` (diffcp and diffcp_if) afterwards.
    """
    saved = {k: v for k, v in sys.modules.items()
             if k == "diffcp" or k.startswith("diffcp.") or k == DIFFCP_IF}
    sys.modules.pop(DIFFCP_IF, None)  # so that it is imported after the alias
    calls = []
    original = diffqcp_np.solve_and_derivative_batch

    def counting(*args, **kwargs):
        calls.append(kwargs.get("solve_method"))
        return original(*args, **kwargs)

    monkeypatch.setattr(diffqcp_np, "solve_and_derivative_batch", counting)
    handle = diffqcp_np.install_as_diffcp(warn=False)  # other test modules hold the real one
    try:
        yield calls
    finally:
        handle.uninstall()
        for k in [k for k in sys.modules if k == "diffcp" or k.startswith("diffcp.")
                  or k == DIFFCP_IF]:
            del sys.modules[k]
        sys.modules.update(saved)


# SCS (the DIFFCP default): Clarabel stops near 1e-8 on the second-order-cone form of the
# quadratic objective that the DIFFCP canonicalisation produces, too coarse for the differences.
DIFFCP_ARGS = dict(solve_method="SCS", eps=1e-12, max_iters=100000)


@needs_v1
@needs_interface
def test_diffcp_backend_torch(th, diffcp_backend):
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_factor_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables)  # solver=DIFFCP
    assert sys.modules[DIFFCP_IF].diffcp is diffqcp_np
    rng = np.random.default_rng(RNG_SEED + 20)
    F, mu = portfolio_values(rng, 2)
    weights = [rng.standard_normal((2, N_ASSETS))]

    def run(*tensors):
        return layer(*tensors, solver_args=DIFFCP_ARGS)

    _, grads = torch_loss_and_grads(tt, run, lambda a, b: (a, b), [F, mu], weights)
    assert diffcp_backend, "the DIFFCP backend did not call diffqcp_np"
    fd = fd_gradient(torch_forward(tt, run, lambda a, b: (a, b), weights), [F, mu])
    assert_grad_close(grads[0], fd[0], "dF")
    assert_grad_close(grads[1], fd[1], "dmu")
    # the DIFFCP backend (quadratic term as a second-order cone) agrees with DiffqcpSolver
    custom = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    _, g_custom = torch_loss_and_grads(tt, custom, lambda a, b: (a, b), [F, mu], weights)
    for a, b in zip(grads, g_custom):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


@needs_v1
def test_diffcp_backend_jax(jx, diffcp_backend):
    jax, CvxpyLayer = jx
    jnp = jax.numpy
    problem, params, variables = l1_regression()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver="DIFFCP")
    rng = np.random.default_rng(RNG_SEED + 21)
    A, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    weights = [rng.standard_normal(2)]

    def run(*arrays):
        return layer(*arrays, solver_args=DIFFCP_ARGS)

    loss = jax_loss(run, lambda a, c: (a, c), weights)
    grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(A), jnp.asarray(b))
    assert diffcp_backend
    fd = fd_gradient(lambda a, c: float(loss(jnp.asarray(a), jnp.asarray(c))), [A, b])
    assert_grad_close(grads[0], fd[0], "dA")
    assert_grad_close(grads[1], fd[1], "db")


@needs_v1
def test_install_diffcp_backend_after_diffcp_if(th, monkeypatch):
    """diffcp_if imported first (with the real diffcp): install_diffcp_backend rebinds it."""
    import importlib
    import warnings

    from diffqcp_np.layers import install_diffcp_backend

    tt, CvxpyLayer = th
    module = importlib.import_module(DIFFCP_IF)
    before = module.__dict__.get("diffcp")
    calls = []
    original = diffqcp_np.solve_and_derivative_batch
    monkeypatch.setattr(diffqcp_np, "solve_and_derivative_batch",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    saved = {k: v for k, v in sys.modules.items() if k == "diffcp" or k.startswith("diffcp.")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        handle = install_diffcp_backend()
    try:
        assert module.diffcp is diffqcp_np
        problem, params, variables = l1_regression()
        layer = CvxpyLayer(problem, parameters=params, variables=variables)
        rng = np.random.default_rng(RNG_SEED + 22)
        A, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
        weights = [rng.standard_normal(2)]

        def run(*tensors):
            return layer(*tensors, solver_args=DIFFCP_ARGS)

        _, grads = torch_loss_and_grads(tt, run, lambda a, c: (a, c), [A, b], weights)
        assert calls
        fd = fd_gradient(torch_forward(tt, run, lambda a, c: (a, c), weights), [A, b])
        assert_grad_close(grads[0], fd[0], "dA")
        assert_grad_close(grads[1], fd[1], "db")
    finally:
        handle.uninstall()
        for k in [k for k in sys.modules if k == "diffcp" or k.startswith("diffcp.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    assert module.__dict__.get("diffcp") is before


# -- (c) legacy cvxpylayers 0.1.x ---------------------------------------------------------------
LEGACY_VERSION = "0.1.6"

LEGACY_SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import diffqcp_np
    diffqcp_np.install_as_diffcp()          # before cvxpylayers imports diffcp
    import cvxpy as cp
    import torch
    import cvxpylayers
    from cvxpylayers.torch import CvxpyLayer
    import cvxpylayers.torch.cvxpylayer as legacy_module

    calls = []
    original = diffqcp_np.solve_and_derivative_batch
    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    diffqcp_np.solve_and_derivative_batch = counting

    n, k = 4, 2
    w = cp.Variable(n); F = cp.Parameter((n, k)); mu = cp.Parameter(n)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(F.T @ w) + 0.05 * cp.sum_squares(w)
                                     - mu @ w), [cp.sum(w) == 1, w >= 0])
    layer = CvxpyLayer(problem, parameters=[F, mu], variables=[w])
    args = json.loads(sys.argv[1])
    rng = np.random.default_rng(args["seed"])
    Fv = rng.standard_normal((2, n, k)); muv = 0.3 * rng.standard_normal((2, n))
    c = rng.standard_normal((2, n))
    solver_args = args["solver_args"]

    def loss(Fa, ma):
        (out,) = layer(Fa, ma, solver_args=solver_args)
        return (out * torch.tensor(c)).sum()

    Ft = torch.tensor(Fv, requires_grad=True); mt = torch.tensor(muv, requires_grad=True)
    loss(Ft, mt).backward()
    h = args["h"]
    values = [Fv, muv]
    fd = []
    for k, v in enumerate(values):
        g = np.zeros_like(v)
        for idx in np.ndindex(v.shape):
            plus = [u.copy() for u in values]; minus = [u.copy() for u in values]
            plus[k][idx] += h; minus[k][idx] -= h
            with torch.no_grad():
                fp = float(loss(*map(torch.tensor, plus)))
                fm = float(loss(*map(torch.tensor, minus)))
            g[idx] = (fp - fm) / (2 * h)
        fd.append(g.tolist())
    print("RESULT" + json.dumps({
        "version": getattr(cvxpylayers, "__version__", "?"),
        "file": cvxpylayers.__file__,
        "uses_diffqcp": legacy_module.diffcp is diffqcp_np,
        "calls": len(calls),
        "grads": [Ft.grad.numpy().tolist(), mt.grad.numpy().tolist()],
        "fd": fd,
    }))
""")


def _legacy_source(cache_dir: Path) -> str | None:
    """A folder holding cvxpylayers 0.1.x, or None when the installed one is 0.1.x."""
    if str(getattr(cvxpylayers, "__version__", "")).startswith("0.1."):
        return None
    given = os.environ.get("DIFFQCP_LEGACY_CVXPYLAYERS")
    wheel = None
    if given:
        path = Path(given)
        if path.is_dir() and (path / "cvxpylayers").is_dir():
            return str(path)
        if path.is_file():
            wheel = path
        else:
            pytest.skip(f"DIFFQCP_LEGACY_CVXPYLAYERS={given!r} is neither a wheel nor a folder "
                        "holding cvxpylayers/")
    target = cache_dir / f"cvxpylayers-{LEGACY_VERSION}"
    if (target / "cvxpylayers" / "torch" / "cvxpylayer.py").is_file():
        return str(target)
    if wheel is None:
        download = cache_dir / "wheels"
        download.mkdir(parents=True, exist_ok=True)
        found = sorted(download.glob(f"cvxpylayers-{LEGACY_VERSION}-*.whl"))
        if not found:
            cmd = [sys.executable, "-m", "pip", "download", f"cvxpylayers=={LEGACY_VERSION}",
                   "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(download)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            except (OSError, subprocess.TimeoutExpired) as exc:
                pytest.skip(f"cannot download cvxpylayers {LEGACY_VERSION} with pip: {exc}")
            found = sorted(download.glob(f"cvxpylayers-{LEGACY_VERSION}-*.whl"))
            if proc.returncode != 0 or not found:
                pytest.skip(f"cvxpylayers {LEGACY_VERSION} cannot be downloaded with pip "
                            f"(offline?): {proc.stderr.strip()[-300:]}")
        wheel = found[0]
    tmp = target.with_suffix(".partial")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
    if not (tmp / "cvxpylayers" / "torch" / "cvxpylayer.py").is_file():
        pytest.skip(f"{wheel} holds no cvxpylayers/torch/cvxpylayer.py")
    os.replace(tmp, target)
    return str(target)


def test_legacy_cvxpylayers_torch(th, request, tmp_path_factory):
    """cvxpylayers 0.1.x (which imports diffcp at the top) after install_as_diffcp()."""
    cache = getattr(request.config, "cache", None)
    cache_dir = (Path(cache.mkdir("diffqcp-legacy-cvxpylayers")) if cache is not None
                 else tmp_path_factory.mktemp("legacy-cvxpylayers"))
    folder = _legacy_source(cache_dir)
    env = dict(os.environ)
    paths = ([folder] if folder else []) + [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    settings = {"seed": RNG_SEED + 30, "h": H, "solver_args": DIFFCP_ARGS}
    proc = subprocess.run([sys.executable, "-c", LEGACY_SCRIPT, json.dumps(settings)],
                          capture_output=True, text=True, env=env, timeout=240)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        last = tail.splitlines()[-1] if tail else ""
        if ("ModuleNotFoundError" in last or "ImportError" in last) and "cvxpylayers" in tail:
            pytest.skip(f"cvxpylayers {LEGACY_VERSION} does not import beside CVXPY "
                        f"{cp.__version__}: {tail[-400:]}")
        pytest.fail(f"legacy cvxpylayers run failed:\n{tail}")
    result = json.loads(lines[-1][len("RESULT"):])
    assert result["version"].startswith("0.1."), result
    assert result["uses_diffqcp"], "legacy cvxpylayers kept the real diffcp"
    assert result["calls"] > 0
    assert_grad_close(result["grads"][0], result["fd"][0], "legacy dF")
    assert_grad_close(result["grads"][1], result["fd"][1], "legacy dmu")


# -- the example ---------------------------------------------------------------------------------
@needs_interface
def test_example_learns_P(th):
    """examples/cvxpylayers_torch.py: training through P makes the loss fall (it asserts so)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "cvxpylayers_torch.py")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [float(line.split()[3]) for line in proc.stdout.splitlines()
              if line.startswith("step")]
    assert len(losses) == 11 and losses[-1] < 0.1 * losses[0], proc.stdout


# -- the device path (run here on NumPy with the cuDSS stand-ins; DLPack round trips) -----------
@pytest.fixture
def stand_in_engine(host_kernels, fresh_structures):
    from diffqcp_np.gpu import engine as engines

    engine = engines.host_engine(host_kernels)
    with engines.use(engine):
        yield engine


@needs_interface
@pytest.mark.parametrize("batch", [None, 3])
def test_torch_device_path_matches_the_cpu_path(th, stand_in_engine, fresh_structures, batch):
    """``DiffqcpSolver(device="cuda")``: the derivatives set up on the engine (here the
    stand-in's NumPy), tensors moved by DLPack; gradients equal the CPU path's."""
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_P_param()
    rng = np.random.default_rng(RNG_SEED + 20)
    F, mu = portfolio_values(rng, batch, shared_mu=True)
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]
    results = []
    for device in (None, "cuda"):
        solver = DiffqcpSolver(solve_method="Clarabel", device=device, **TIGHT)
        layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=solver)
        results.append(torch_loss_and_grads(tt, layer, lambda F_, mu_: (sigma_of(F_, tt), mu_),
                                            [F, mu], weights))
    (loss_cpu, grads_cpu), (loss_dev, grads_dev) = results
    assert len(fresh_structures._entries) == 1  # the device path ran (one structure)
    assert loss_dev == pytest.approx(loss_cpu, rel=1e-12)
    for got, want in zip(grads_dev, grads_cpu):
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_jax_device_path_matches_the_cpu_path(jx, stand_in_engine, fresh_structures, batch):
    jax, CvxpyLayer = jx
    jnp = jax.numpy
    problem, params, variables = portfolio_P_param()
    rng = np.random.default_rng(RNG_SEED + 21)
    F, mu = portfolio_values(rng, batch)
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]
    grads = []
    for device in (None, "cuda"):
        solver = DiffqcpSolver(solve_method="Clarabel", device=device, **TIGHT)
        layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=solver)
        loss = jax_loss(layer, lambda F_, mu_: (sigma_of(F_, jnp), mu_), weights)
        grads.append(jax.grad(loss, argnums=(0, 1))(jnp.asarray(F), jnp.asarray(mu)))
    assert len(fresh_structures._entries) == 1  # the device path ran (one structure)
    for got, want in zip(*grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-8, atol=1e-10)


def test_dlpack_round_trips_share_memory(th, jx):
    """torch and JAX arrays to the engine's namespace and back by DLPack: no copies on
    the host (on a GPU the same calls keep CUDA memory on the device; not run here)."""
    from diffqcp_np.gpu import engine as engines
    from diffqcp_np.gpu.interop import device_for, from_framework, on_cuda, to_jax, to_torch

    tt, _ = th
    jax, _ = jx
    engine = engines.host_engine(kernels=None)
    t = tt.arange(6, dtype=tt.float64, requires_grad=True)
    a = from_framework(t, engine)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.detach().numpy())
    back = to_torch(a, tt.float64, t.device)
    assert back.data_ptr() == t.data_ptr()
    assert to_torch(a, tt.float32, t.device).dtype == tt.float32
    j = jax.numpy.arange(4.0)
    np.testing.assert_array_equal(from_framework(j, engine), np.arange(4.0))
    transposed = np.arange(6.0).reshape(2, 3).T
    np.testing.assert_array_equal(np.asarray(to_jax(transposed, jax.numpy.float64)),
                                  transposed)
    assert not on_cuda(t) and not on_cuda(j)
    assert device_for(None, t) is None and device_for("cuda", t) == "cuda"
    with pytest.raises(ValueError, match="device must be"):
        device_for("tpu", t)


# -- (d) diffqcp_np.jax_layer: jax.jit, jax.vmap, jax.grad -----------------------------------
@pytest.fixture
def jit_layer(jx):
    pytest.importorskip("diffqcp_np.jax_layer", reason="needs JAX and cvxpylayers >= 1.2")
    from diffqcp_np.jax_layer import CvxpyLayer

    return CvxpyLayer


@pytest.fixture
def batch_calls(monkeypatch):
    """Sizes of the batches the layer hands to diffqcp_np, per call."""
    import diffqcp_np.batch as batch_module

    calls = []
    for name in ("solve_and_derivative_batch", "solve_only_batch"):
        original = getattr(batch_module, name)

        def counting(As, *args, _original=original, _name=name, **kwargs):
            calls.append((_name, len(As)))
            return _original(As, *args, **kwargs)

        monkeypatch.setattr(batch_module, name, counting)
    return calls


@needs_interface
@pytest.mark.parametrize("batch", [None, 2])
def test_jit_layer_jit_and_grad(jx, jit_layer, batch):
    """jit(loss) and jit(grad(loss)) equal the eager stock layer's and finite differences
    (Σ = FF' + 0.1I enters P)."""
    jax, StockLayer = jx
    jnp = jax.numpy
    problem, params, variables = portfolio_P_param()
    rng = np.random.default_rng(RNG_SEED + 30)
    F, mu = portfolio_values(rng, batch)
    weights = [rng.standard_normal(((batch,) if batch else ()) + (N_ASSETS,))]
    build = lambda F_, mu_: (sigma_of(F_, jnp), mu_)  # noqa: E731
    layer = jit_layer(problem, parameters=params, variables=variables, solver=tight_solver())
    stock = StockLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    loss = jax_loss(layer, build, weights)
    args = (jnp.asarray(F), jnp.asarray(mu))
    want = jax.grad(jax_loss(stock, build, weights), argnums=(0, 1))(*args)
    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(*args)
    assert float(jax.jit(loss)(*args)) == pytest.approx(
        float(jax_loss(stock, build, weights)(*args)), rel=1e-10, abs=1e-12)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-11)
    jitted = jax.jit(loss)
    fd = fd_gradient(lambda F_, mu_: float(jitted(jnp.asarray(F_), jnp.asarray(mu_))), [F, mu])
    assert_grad_close(got[0], fd[0], "dF")
    assert_grad_close(got[1], fd[1], "dmu")
    assert np.abs(np.asarray(got[0])).max() > 1e-3


@needs_interface
def test_jit_layer_vmap_is_one_batch_call(jx, jit_layer, batch_calls):
    """vmap(grad) over F (μ shared) is one batch solve of all problems, with each member's
    gradient equal to its own eager one; grad of a vmapped sum reaches the shared μ."""
    jax, _ = jx
    jnp = jax.numpy
    problem, params, variables = portfolio_P_param()
    rng = np.random.default_rng(RNG_SEED + 31)
    F, mu = portfolio_values(rng, 3, shared_mu=True)
    weights = [rng.standard_normal(N_ASSETS)]
    layer = jit_layer(problem, parameters=params, variables=variables, solver=tight_solver())
    loss = jax_loss(layer, lambda F_, mu_: (sigma_of(F_, jnp), mu_), weights)
    per_member = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None)))
    batch_calls.clear()
    dF, dmu = per_member(jnp.asarray(F), jnp.asarray(mu))
    assert batch_calls == [("solve_and_derivative_batch", 3)]
    assert dF.shape == F.shape and dmu.shape == (3, N_ASSETS)
    for i in range(3):
        eager = jax.grad(loss, argnums=(0, 1))(jnp.asarray(F[i]), jnp.asarray(mu))
        np.testing.assert_allclose(np.asarray(dF[i]), np.asarray(eager[0]), rtol=1e-8,
                                   atol=1e-11)
        np.testing.assert_allclose(np.asarray(dmu[i]), np.asarray(eager[1]), rtol=1e-8,
                                   atol=1e-11)
    total = jax.jit(jax.grad(lambda F_, mu_: jax.vmap(loss, in_axes=(0, None))(F_, mu_).sum(),
                             argnums=1))
    batch_calls.clear()
    np.testing.assert_allclose(np.asarray(total(jnp.asarray(F), jnp.asarray(mu))),
                               np.asarray(dmu).sum(axis=0), rtol=1e-8, atol=1e-11)
    assert batch_calls == [("solve_and_derivative_batch", 3)]
    # vmap of a batched call (cvxpylayers' own batch axis inside): still one call
    batch_calls.clear()
    out = jax.jit(jax.vmap(lambda F_: layer(sigma_of(F_, jnp), jnp.asarray(mu))[0]))(
        jnp.asarray(np.stack([F[:2], F[1:]])))
    assert batch_calls == [("solve_only_batch", 4)] and out.shape == (2, 2, N_ASSETS)
    np.testing.assert_allclose(np.asarray(out[1, 0]), np.asarray(out[0, 1]), atol=1e-12)


@needs_interface
def test_jit_layer_linear_program_and_lost_state(jx, jit_layer):
    """No P (an LP); a backward pass whose kept derivative was cleared solves again and
    gives the same gradient."""
    jax, _ = jx
    jnp = jax.numpy
    problem, params, variables = l1_regression()
    layer = jit_layer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 32)
    A, b = rng.standard_normal((3, 2)), rng.standard_normal(3)
    weights = [rng.standard_normal(2)]
    loss = jax_loss(layer, lambda a, c: (a, c), weights)
    args = (jnp.asarray(A), jnp.asarray(b))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(*args)
    fd = fd_gradient(lambda a, c: float(loss(jnp.asarray(a), jnp.asarray(c))), [A, b])
    assert_grad_close(grads[0], fd[0], "dA")
    assert_grad_close(grads[1], fd[1], "db")
    value, pullback = jax.vjp(loss, *args)
    diffqcp_np.clear_caches()
    for got, want in zip(pullback(jnp.ones_like(value)), grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


@needs_interface
def test_jit_layer_float32(jx, jit_layer):
    """float32 parameters are solved in float64; outputs and gradients are float32, equal to
    the float64 ones to float32 rounding; also with jax_enable_x64 off (all float32)."""
    jax, _ = jx
    jnp = jax.numpy
    problem, params, variables = portfolio_P_param()
    rng = np.random.default_rng(RNG_SEED + 33)
    F, mu = portfolio_values(rng, 2)
    weights = [rng.standard_normal((2, N_ASSETS)).astype(np.float32)]
    build = lambda F_, mu_: (sigma_of(F_, jnp).astype(F_.dtype), mu_)  # noqa: E731
    layer = jit_layer(problem, parameters=params, variables=variables, solver=tight_solver())
    loss = jax_loss(layer, build, weights)
    g64 = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(F), jnp.asarray(mu))
    (w32,) = layer(*build(jnp.asarray(F, jnp.float32), jnp.asarray(mu, jnp.float32)))
    assert w32.dtype == jnp.float32
    results = [jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(F, jnp.float32),
                                                     jnp.asarray(mu, jnp.float32))]
    jax.config.update("jax_enable_x64", False)
    try:
        narrow = jit_layer(problem, parameters=params, variables=variables,
                           solver=tight_solver())
        assert narrow.q.data.dtype == jnp.float32
        results.append(jax.jit(jax.grad(jax_loss(narrow, build, weights), argnums=(0, 1)))(
            jnp.asarray(F, jnp.float32), jnp.asarray(mu, jnp.float32)))
    finally:
        jax.config.update("jax_enable_x64", True)
    for g32 in results:
        for got, want in zip(g32, g64):
            assert got.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-3, atol=1e-4)


# -- (e) diffqcp_np.torch_layer: torch.compile ---------------------------------------------------
@needs_interface
@pytest.mark.parametrize("dtype, backend", [("float64", "inductor"), ("float32", "aot_eager")])
# TorchDynamo itself reads .grad of the layer's (non-leaf) outputs when it resumes after the
# graph break, and torch warns about that read.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_torch_layer_under_torch_compile(th, dtype, backend):
    """A compiled model around the layer: one graph break (the layer), no error; loss and
    gradients equal the eager model's, in the parameters' dtype, on their device."""
    tt, _ = th
    pytest.importorskip("diffqcp_np.torch_layer")
    from diffqcp_np.torch_layer import CvxpyLayer

    problem, params, variables = portfolio_factor_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables, solver=tight_solver())
    rng = np.random.default_rng(RNG_SEED + 40)
    F, mu = portfolio_values(rng, 2)
    dt = getattr(tt, dtype)
    weights = tt.tensor(rng.standard_normal((2, N_ASSETS)), dtype=dt)
    mix = tt.tensor(np.eye(N_FACTORS) + 0.1 * rng.standard_normal((N_FACTORS, N_FACTORS)),
                    dtype=dt)

    def model(F_, mu_):
        (w_star,) = layer(F_ @ mix, tt.tanh(mu_))
        return (w_star * weights).sum() + (w_star ** 2).sum()

    results = []
    for run in (tt.compile(model, backend=backend), model):
        F_t = tt.tensor(F, dtype=dt, requires_grad=True)
        mu_t = tt.tensor(mu, dtype=dt, requires_grad=True)
        loss = run(F_t, mu_t)
        loss.backward()
        assert loss.dtype == dt and loss.device == F_t.device
        assert F_t.grad.dtype == dt and mu_t.grad.dtype == dt
        results.append((float(loss.detach()), F_t.grad.numpy(), mu_t.grad.numpy()))
    (loss_c, dF_c, dmu_c), (loss_e, dF_e, dmu_e) = results
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    assert loss_c == pytest.approx(loss_e, **{"rel": tol["rtol"], "abs": tol["atol"]})
    np.testing.assert_allclose(dF_c, dF_e, **tol)
    np.testing.assert_allclose(dmu_c, dmu_e, **tol)
    assert np.abs(dF_c).max() > 1e-3
    explanation = tt._dynamo.explain(model)(tt.tensor(F, dtype=dt), tt.tensor(mu, dtype=dt))
    assert explanation.graph_break_count <= 1
    (w_star,) = layer(tt.tensor(F, dtype=dt), tt.tensor(mu, dtype=dt))
    assert w_star.dtype == dt


# -- (f) warm starts in the layers ---------------------------------------------------------------
WARM_SOLVERS = {"IPM": dict(solve_method="IPM", active_set=False),  # the interior-point method
                "SCS": dict(solve_method="SCS", eps=1e-9)}


def _iterations(solver) -> list[int]:
    return [int(info["iter"]) for info in solver.last_info]


@needs_interface
@pytest.mark.parametrize("method", sorted(WARM_SOLVERS))
def test_torch_layer_warm_start(th, method):
    """A step of a training loop (parameters moved by 0.1%): the warm-started layer gives the
    cold layer's solutions and gradients (to the solver's tolerance; both are refined) in
    fewer iterations; a call with another batch size starts cold."""
    tt, _ = th
    pytest.importorskip("diffqcp_np.torch_layer")
    from diffqcp_np.torch_layer import CvxpyLayer

    problem, params, variables = portfolio_factor_param()
    cold_solver, warm_solver = (DiffqcpSolver(**WARM_SOLVERS[method]) for _ in range(2))
    cold = CvxpyLayer(problem, parameters=params, variables=variables, solver=cold_solver)
    warm = CvxpyLayer(problem, parameters=params, variables=variables, solver=warm_solver)
    rng = np.random.default_rng(RNG_SEED + 50)
    F, mu = portfolio_values(rng, 3)
    weights = [rng.standard_normal((3, N_ASSETS))]
    step = [F + 1e-3 * rng.standard_normal(F.shape), mu + 1e-3 * rng.standard_normal(mu.shape)]
    warm(tt.tensor(F), tt.tensor(mu), warm_start=True)  # the previous step: a cold start
    _, g_warm = torch_loss_and_grads(tt, lambda *a: warm(*a, warm_start=True),
                                     lambda a, b: (a, b), step, weights)
    warm_its = _iterations(warm_solver)
    _, g_cold = torch_loss_and_grads(tt, cold, lambda a, b: (a, b), step, weights)
    cold_its = _iterations(cold_solver)
    assert len(warm_its) == len(cold_its) == 3
    assert all(w <= c for w, c in zip(warm_its, cold_its)) and sum(warm_its) < sum(cold_its), \
        (warm_its, cold_its)
    for a, b in zip(g_warm, g_cold):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    with tt.no_grad():
        (w_warm,) = warm(*[tt.tensor(v) for v in step], warm_start=True)
        (w_cold,) = cold(*[tt.tensor(v) for v in step])
    np.testing.assert_allclose(w_warm.numpy(), w_cold.numpy(), atol=1e-8)
    # another batch size: nothing to start from, so the same iterations as a cold start
    warm(tt.tensor(F[:2]), tt.tensor(mu[:2]), warm_start=True)
    cold(tt.tensor(F[:2]), tt.tensor(mu[:2]))
    assert _iterations(warm_solver) == _iterations(cold_solver)


@needs_interface
def test_warm_start_option_errors(th):
    """warm_start with a solver that takes no warm start, a non-bool, or both forms."""
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_factor_param()
    rng = np.random.default_rng(RNG_SEED + 51)
    F, mu = (tt.tensor(v) for v in portfolio_values(rng, 2))
    with pytest.raises(TypeError, match="^warm_start must be True or False"):
        DiffqcpSolver(warm_start="yes")
    layer = CvxpyLayer(problem, parameters=params, variables=variables,
                       solver=DiffqcpSolver(solve_method="Clarabel"))
    with pytest.raises(ValueError, match="^warm_start=True needs a forward solver"):
        layer(F, mu, solver_args={"warm_start": True})
    layer = CvxpyLayer(problem, parameters=params, variables=variables,
                       solver=DiffqcpSolver(solve_method="SCS", warm_start=True))
    with pytest.raises(ValueError, match="warm_starts were both given"):
        layer(F, mu, solver_args={"warm_starts": [None, None]})
    # the stock layer with a DiffqcpSolver(warm_start=True): the second call starts warm
    layer(F, mu)
    first = _iterations(layer.ctx.solver)
    layer(F, mu)
    assert sum(_iterations(layer.ctx.solver)) < sum(first)


@needs_interface
def test_jit_layer_warm_start(jx, jit_layer):
    """jit(grad) of the JAX layer with warm_start=True: the second step starts from the first
    step's solutions (fewer interior-point iterations) and equals the cold layer's."""
    jax, _ = jx
    jnp = jax.numpy
    problem, params, variables = l1_regression()  # an LP: the interior-point method
    rng = np.random.default_rng(RNG_SEED + 52)
    A, b = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3))
    weights = [rng.standard_normal((4, 2))]
    solvers = [DiffqcpSolver(**WARM_SOLVERS["IPM"]) for _ in range(2)]
    cold, warm = (jit_layer(problem, parameters=params, variables=variables, solver=s)
                  for s in solvers)

    def loss_of(layer, warm_start):
        def loss(a, c):
            (x,) = layer(a, c, warm_start=warm_start)
            return (x * weights[0]).sum()
        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    warm_step, cold_step = loss_of(warm, True), loss_of(cold, False)
    warm_step(jnp.asarray(A), jnp.asarray(b))
    step = (jnp.asarray(A + 1e-3 * rng.standard_normal(A.shape)),
            jnp.asarray(b + 1e-3 * rng.standard_normal(b.shape)))
    value_w, grads_w = warm_step(*step)
    warm_its = _iterations(solvers[1])
    value_c, grads_c = cold_step(*step)
    cold_its = _iterations(solvers[0])
    assert all(w <= c for w, c in zip(warm_its, cold_its)) and sum(warm_its) < sum(cold_its), \
        (warm_its, cold_its)
    assert float(value_w) == pytest.approx(float(value_c), rel=1e-8, abs=1e-10)
    for a, c in zip(grads_w, grads_c):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-6, atol=1e-8)


@needs_v1
def test_diffcp_backend_warm_starts_previous(th, monkeypatch):
    """cvxpylayers' DIFFCP backend on diffqcp_np: solver_args={"warm_starts": "previous"}
    reaches the batch solve, which starts SCS from the previous step's solutions."""
    tt, CvxpyLayer = th
    saved = {k: v for k, v in sys.modules.items()
             if k == "diffcp" or k.startswith("diffcp.") or k == DIFFCP_IF}
    sys.modules.pop(DIFFCP_IF, None)
    infos = []
    original = diffqcp_np.solve_and_derivative_batch

    def recording(*args, **kwargs):
        *out, info = original(*args, return_info=True, **kwargs)
        infos.append([int(i["iter"]) for i in info])
        return tuple(out)

    monkeypatch.setattr(diffqcp_np, "solve_and_derivative_batch", recording)
    handle = diffqcp_np.install_as_diffcp(warn=False)
    try:
        problem, params, variables = portfolio_factor_param()  # P as a second-order cone
        layer = CvxpyLayer(problem, parameters=params, variables=variables)  # DIFFCP
        rng = np.random.default_rng(RNG_SEED + 53)
        F, mu = portfolio_values(rng, 3)
        step = [F + 1e-3 * rng.standard_normal(F.shape), mu + 1e-3 * rng.standard_normal(mu.shape)]
        args = dict(solve_method="SCS", eps=1e-9)
        weights = [rng.standard_normal((3, N_ASSETS))]

        def run(previous):
            extra = {"warm_starts": "previous"} if previous else {}
            return lambda *t: layer(*t, solver_args=dict(args, **extra))

        torch_loss_and_grads(tt, run(False), lambda a, c: (a, c), [F, mu], weights)
        _, g_warm = torch_loss_and_grads(tt, run(True), lambda a, c: (a, c), step, weights)
        _, g_cold = torch_loss_and_grads(tt, run(False), lambda a, c: (a, c), step, weights)
    finally:
        handle.uninstall()
        for k in [k for k in sys.modules if k == "diffcp" or k.startswith("diffcp.")
                  or k == DIFFCP_IF]:
            del sys.modules[k]
        sys.modules.update(saved)
    _, warm_its, cold_its = infos
    assert all(w <= c for w, c in zip(warm_its, cold_its)) and sum(warm_its) < sum(cold_its), \
        (warm_its, cold_its)
    for a, c in zip(g_warm, g_cold):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-8)


@needs_interface
def test_refine_option_without_grad(th):
    """DiffqcpSolver(refine=False), a derivative-only option, is dropped where no gradient is
    needed (the forward-only batch solve does not take it)."""
    tt, CvxpyLayer = th
    problem, params, variables = portfolio_factor_param()
    layer = CvxpyLayer(problem, parameters=params, variables=variables,
                       solver=DiffqcpSolver(refine=False, **TIGHT))
    rng = np.random.default_rng(RNG_SEED + 54)
    F, mu = (tt.tensor(v) for v in portfolio_values(rng, 2))
    with tt.no_grad():
        (w,) = layer(F, mu)
    (w_grad,) = layer(F.requires_grad_(), mu)
    np.testing.assert_allclose(w.numpy(), w_grad.detach().numpy(), atol=1e-9)


@needs_interface
def test_torch_layer_with_smoothing_has_a_gradient_at_an_lp_vertex():
    """An LP layer's exact gradient in its costs is zero (the vertex does not move);
    with ``derivative_kwargs={"smoothing": mu}`` it is the smoothed LP's, nonzero, and
    points the right way: raising a cost lowers that coordinate."""
    torch = pytest.importorskip("torch")
    from cvxpylayers.torch import CvxpyLayer

    x = cp.Variable(3)
    c = cp.Parameter(3)
    problem = cp.Problem(cp.Minimize(c @ x), [x >= 0, x <= 1])
    grads = {}
    for name, args in (("exact", {}), ("smoothed", {"derivative_kwargs": {"smoothing": 1e-3}})):
        layer = CvxpyLayer(problem, parameters=[c], variables=[x],
                           solver=DiffqcpSolver(solve_method="Clarabel", **args))
        theta = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64, requires_grad=True)
        (solution,) = layer(theta)
        solution.sum().backward()
        grads[name] = theta.grad.numpy()
    np.testing.assert_allclose(grads["exact"], 0.0, atol=1e-9)
    assert np.all(grads["smoothed"] < -1e-4)


@needs_interface
def test_default_forward_solver_is_the_batched_ipm_where_it_applies(th):
    """DiffqcpSolver(): the batched interior-point method ("auto") for a small QP layer with
    zero and orthant cones only (its gradients those of a tight Clarabel solve), Clarabel
    for second-order and exponential cones and for Clarabel's own settings."""
    tt, CvxpyLayer = th
    w, mu = cp.Variable(N_ASSETS), cp.Parameter(N_ASSETS)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(w) - mu @ w),
                         [cp.sum(w) == 1, w >= 0])
    rng = np.random.default_rng(RNG_SEED + 61)
    values = [0.3 * rng.standard_normal((3, N_ASSETS))]
    weights = [rng.standard_normal((3, N_ASSETS))]
    grads = {}
    for name, solver in (("default", DiffqcpSolver()), ("tight", tight_solver())):
        layer = CvxpyLayer(problem, parameters=[mu], variables=[w], solver=solver)
        _, grads[name] = torch_loss_and_grads(tt, layer, lambda m: (m,), values, weights)
        used = {info["solver"] for info in layer.ctx.solver.last_info}
        assert used == ({"IPM"} if name == "default" else {"CLARABEL"}), (name, used)
    assert_grad_close(grads["default"][0], grads["tight"][0], "dmu")

    layer = CvxpyLayer(problem, parameters=[mu], variables=[w],
                       solver=DiffqcpSolver(**TIGHT))  # Clarabel's settings: Clarabel
    layer(tt.tensor(values[0]))
    assert {info["solver"] for info in layer.ctx.solver.last_info} == {"CLARABEL"}
    problem, params, variables = soc_exp_problem()
    layer = CvxpyLayer(problem, parameters=params, variables=variables,
                       solver=DiffqcpSolver())
    layer(tt.tensor(rng.standard_normal(3)), tt.tensor(0.8))
    assert {info["solver"] for info in layer.ctx.solver.last_info} == {"CLARABEL"}
