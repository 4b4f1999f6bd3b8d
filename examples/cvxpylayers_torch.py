"""Learn a covariance factor through a portfolio layer (cvxpylayers + diffqcp_np, PyTorch).

The layer solves the long-only mean-variance portfolio

    minimize ½ w'Σw − μ'w   subject to  1'w = 1,  w ≥ 0,     Σ = FF' + δI,

with ``Σ`` a CVXPY parameter that enters the quadratic objective ``P``. diffqcp_np's
``DiffqcpSolver`` keeps ``P`` in the cone program and differentiates through it; the
DIFFCP backend cannot (it rewrites ``½ w'Σw`` as a second-order cone, which is not DPP in
``Σ``). We observe the portfolios a hidden factor model ``F_true`` chooses for many
expected-return vectors ``μ`` and fit ``F`` so that the layer reproduces them. The loss
goes down, and ``FF'`` moves towards ``F_true F_true'`` (the portfolios pin ``Σ`` down only
partly, and ``F`` itself only up to a rotation).

Run: ``python examples/cvxpylayers_torch.py`` (needs cvxpylayers >= 1.2 and torch:
``pip install "diffqcp_np[layers]" torch``; torch's CPU build is enough, see the README).
"""

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

from diffqcp_np.layers import DiffqcpSolver

torch.manual_seed(0)
rng = np.random.default_rng(0)
n, k, delta = 8, 2, 0.05  # assets, factors, idiosyncratic variance

w = cp.Variable(n)
Sigma = cp.Parameter((n, n), PSD=True)
mu = cp.Parameter(n)
problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(w, Sigma) - mu @ w),
                     [cp.sum(w) == 1, w >= 0])
layer = CvxpyLayer(problem, parameters=[Sigma, mu], variables=[w], solver=DiffqcpSolver())


def covariance(F):
    return F @ F.T + delta * torch.eye(n, dtype=F.dtype)


# data: portfolios chosen by the hidden model for 64 return vectors
F_true = torch.tensor(rng.standard_normal((n, k)), dtype=torch.float64)
mus = 0.2 * torch.tensor(rng.standard_normal((64, n)), dtype=torch.float64)
with torch.no_grad():
    (targets,) = layer(covariance(F_true), mus)  # a batch of 64 solves

F = torch.nn.Parameter(0.5 * torch.randn(n, k, dtype=torch.float64))
optimizer = torch.optim.Adam([F], lr=0.05)
losses = []
for step in range(101):
    batch = torch.randint(0, len(mus), (16,))
    optimizer.zero_grad()
    (portfolios,) = layer(covariance(F), mus[batch])  # Σ shared, μ batched
    loss = ((portfolios - targets[batch]) ** 2).sum(dim=1).mean()
    loss.backward()  # through P: dloss/dΣ, then dΣ/dF by autograd
    optimizer.step()
    losses.append(loss.item())
    if step % 10 == 0:
        with torch.no_grad():
            gap = torch.linalg.norm(covariance(F) - covariance(F_true)) / torch.linalg.norm(
                covariance(F_true))
        print(f"step {step:3d}  loss {loss.item():.3e}  relative error of Σ {gap.item():.3f}")

with torch.no_grad():
    (fitted,) = layer(covariance(F), mus)
    final = ((fitted - targets) ** 2).sum(dim=1).mean().item()
print(f"loss over all 64 portfolios: {np.mean(losses[:5]):.3e} (first steps) -> {final:.3e}")
assert final < 0.1 * np.mean(losses[:5]), "the loss did not go down"
