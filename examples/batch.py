"""Differentiate a batch of projections onto the probability simplex, in parallel.

Each problem projects a target ``t`` onto the simplex::

    minimize ½‖x − t‖²  subject to  1'x = 1,  x ≥ 0

(SCS form: ``P = I``, ``c = −t``, ``A = [1'; −I]``, ``b = [1; 0]``, cones ``z=1, l=n``).
All problems share one cone dict and one sparsity pattern, as in cvxpylayers, so the
batch takes the same-structure fast path. The projection and its Jacobian have closed
forms, which the batch results are checked against:
``x = max(t − τ, 0)`` and ``dx/dt = I_S − 1_S 1_S' / |S|`` on the support ``S``.

Run: ``python examples/batch.py`` (the runtime install is enough).
"""

import time

import numpy as np
import scipy.sparse as sp

from diffqcp_np import solve_and_derivative_batch


def simplex_problem(t: np.ndarray):
    n = t.size
    A = sp.vstack([np.ones((1, n)), -sp.identity(n)], format="csc")
    b = np.r_[1.0, np.zeros(n)]
    return A, b, -t, {"z": 1, "l": n}, sp.identity(n, format="csc")


def simplex_projection(t: np.ndarray) -> np.ndarray:
    u = np.sort(t)[::-1]
    cumulative = np.cumsum(u) - 1
    k = np.nonzero(u - cumulative / np.arange(1, t.size + 1) > 0)[0][-1]
    return np.maximum(t - cumulative[k] / (k + 1), 0)


def main() -> None:
    rng = np.random.default_rng(0)
    batch, n = 256, 20
    targets = [rng.standard_normal(n) for _ in range(batch)]
    As, bs, cs, cone_dicts, Ps = map(list, zip(*(simplex_problem(t) for t in targets)))

    start = time.perf_counter()
    xs, ys, ss, D_batch, DT_batch = solve_and_derivative_batch(
        As, bs, cs, cone_dicts, Ps=Ps, eps=1e-10, max_iters=10000)  # threads, all cores
    forward = time.perf_counter() - start

    # Gradient of the loss sum_k w'x_k with respect to each target: since c = −t, it is −dc.
    w = rng.standard_normal(n)
    start = time.perf_counter()
    _, _, dcs = DT_batch([w] * batch, [None] * batch, [None] * batch)
    backward = time.perf_counter() - start

    x_error = max(np.abs(x - simplex_projection(t)).max() for x, t in zip(xs, targets))
    grad_error = 0.0
    for x, dc in zip(xs, dcs):
        support = (x > 1e-6).astype(float)
        exact = support * w - support * (support @ w) / support.sum()
        grad_error = max(grad_error, np.abs(-dc - exact).max())

    print(f"{batch} simplex projections (n={n}): forward {forward * 1e3:.0f} ms, "
          f"backward {backward * 1e3:.0f} ms")
    print(f"max |x - closed form|            = {x_error:.1e}")
    print(f"max |gradient - closed form|     = {grad_error:.1e}")


if __name__ == "__main__":
    main()
