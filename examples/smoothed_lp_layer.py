"""Train through an LP layer with smoothed derivatives (cvxpylayers + diffqcp_np, PyTorch).

The layer picks the k best of n items, an LP whose solution is a vertex of

    maximize θ'x   subject to  0 ≤ x ≤ 1,  1'x ≤ k,

and we learn the scores θ so that it picks the items a hidden score vector picks. The
LP's solution does not move with θ until it jumps to another vertex: its exact
derivative is zero, and gradient descent on the exact gradient never moves θ. With
``derivative_kwargs={"smoothing": mu}`` the layer differentiates the barrier-smoothed
LP's solution instead (diffqcp_np.derivative.smoothing): the gradient says which way
each score should go, and the layer learns the hidden choice.

Run: ``python examples/smoothed_lp_layer.py`` (needs cvxpylayers >= 1.2 and torch:
``pip install "diffqcp_np[layers]" torch``; torch's CPU build is enough, see the README).
"""

import cvxpy as cp
import numpy as np
import torch
from cvxpylayers.torch import CvxpyLayer

from diffqcp_np.layers import DiffqcpSolver

n, k = 8, 3
rng = np.random.default_rng(0)
hidden = rng.standard_normal(n)
target = np.zeros(n)
target[np.argsort(hidden)[-k:]] = 1.0  # the k items the hidden scores pick

x = cp.Variable(n)
theta = cp.Parameter(n)
problem = cp.Problem(cp.Maximize(theta @ x), [x >= 0, x <= 1, cp.sum(x) <= k])


def train(derivative_kwargs: dict, steps: int = 60) -> tuple[float, float, float]:
    """Gradient descent on ‖x(θ) − target‖²; the first and last loss, and the largest
    gradient entry seen."""
    layer = CvxpyLayer(problem, parameters=[theta], variables=[x],
                       solver=DiffqcpSolver(solve_method="Clarabel",
                                            derivative_kwargs=derivative_kwargs))
    scores = torch.zeros(n, dtype=torch.float64)
    scores[:] = torch.tensor(rng.permutation(np.linspace(-1, 1, n)))  # a wrong guess
    scores.requires_grad_(True)
    optimizer = torch.optim.SGD([scores], lr=0.5)
    losses, largest = [], 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        (choice,) = layer(scores)
        loss = ((choice - torch.tensor(target)) ** 2).sum()
        loss.backward()
        largest = max(largest, float(scores.grad.abs().max()))
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1], largest


first, last, largest = train({})
print(f"exact derivative:    loss {first:.3f} -> {last:.3f}   (largest gradient entry "
      f"{largest:.1e}: the LP's vertex does not move with θ)")
first_s, last_s, largest_s = train({"smoothing": 1e-2})
print(f"smoothed (mu=1e-2):  loss {first_s:.3f} -> {last_s:.3f}   (largest gradient entry "
      f"{largest_s:.1e})")
assert last_s < 0.1 * first_s, "the smoothed gradient should have taught the layer"
