"""A cvxpylayers layer on diffqcp_np inside ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

The layer solves the long-only mean-variance portfolio

    minimize ½ w'Σw − μ'w   subject to  1'w = 1,  w ≥ 0,     Σ = FF' + δI,

and a jitted training step fits the factor ``F`` so that the portfolios match those of a
hidden model, one per expected-return vector ``μ`` of a batch. The step's ``jax.vmap``
over the batch becomes one batch solve (one call of
``diffqcp_np.solve_and_derivative_batch``), its backward pass one batched adjoint.

Run: ``python examples/jax_jit_vmap.py`` (needs JAX and cvxpylayers >= 1.2:
``pip install "diffqcp_np[layers]" jax``).
"""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from diffqcp_np.jax_layer import CvxpyLayer

jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
n, k, delta = 6, 2, 0.05  # assets, factors, idiosyncratic variance

w = cp.Variable(n)
Sigma = cp.Parameter((n, n), PSD=True)
mu = cp.Parameter(n)
problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, Sigma) - mu @ w),
                     [cp.sum(w) == 1, w >= 0])
layer = CvxpyLayer(problem, parameters=[Sigma, mu], variables=[w])


def portfolio(F, mu_):
    (w_star,) = layer(F @ F.T + delta * jnp.eye(n), mu_)
    return w_star


batched = jax.vmap(portfolio, in_axes=(None, 0))  # one batch solve per call

F_true = jnp.asarray(rng.standard_normal((n, k)))
mus = 0.2 * jnp.asarray(rng.standard_normal((16, n)))
targets = jax.jit(batched)(F_true, mus)


@jax.jit
def step(F):
    def loss(F_):
        return jnp.sum((batched(F_, mus) - targets) ** 2)

    value, grad = jax.value_and_grad(loss)(F)
    return value, F - 0.05 * grad / (jnp.linalg.norm(grad) + 1e-12)


F = 0.5 * jnp.asarray(rng.standard_normal((n, k)))
losses = []
for it in range(11):
    value, F = step(F)
    losses.append(float(value))
    print(f"step {it:2d}  loss {losses[-1]:.5f}")
assert losses[-1] < losses[0], "the jitted training step did not reduce the loss"
