"""Benchmark: a small training loop through a cvxpylayers layer, per backend, one run.

The layer is the QP of ``bench_batch.small_qps`` in CVXPY form (n = 20 variables, 5
equality and 35 inequality rows, a fixed positive definite ``Q``), with the linear term
``q`` predicted from features by a linear model ``q = W f`` (PyTorch). A training step
is one forward pass through the layer for a batch of B feature vectors and one
backward pass of the loss ``‖x(q) − x_target‖²``, then an Adam step on ``W``. Every
backend trains the same model from the same start on the same batches, the backends
taking turns within each repeat (medians of the per-step times over the steps of all
repeats; the first step of each, which compiles, is excluded):

* ``diffqcp_np``: the layer's default, ``diffqcp_np.layers.DiffqcpSolver()`` (here the
  batched forward solver of small QPs, ``Q`` kept as the QP's ``P``), and ``diffqcp_np,
  Clarabel``: ``DiffqcpSolver(solve_method="Clarabel")``, one Clarabel solve per problem;
* ``DIFFCP``: cvxpylayers' own backend, diffcp 1.1.9 with SCS (``Q`` becomes a
  second-order cone there);
* ``MOREAU``: cvxpylayers' Moreau backend (Moreau 0.4.1, CPU), where it is installed.

Besides the times the report gives each backend's loss after the last step and the
relative difference of its first gradient from ``diffqcp_np``'s (the same gradient up
to the solvers' tolerances).

Usage::

    python benchmarks/bench_training_loop.py [--batch 32 256] [--steps 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from _common import RESULTS, write_result

N, EQ, INEQ, FEATURES = 20, 5, 35, 8


def _problem(seed: int = 0):
    """The CVXPY problem, its parameter, its variable and a feasible data set."""
    import cvxpy as cp

    rng = np.random.default_rng(seed)
    F = rng.standard_normal((N, N)) / np.sqrt(N)
    Q = F @ F.T + 0.1 * np.eye(N)
    A = rng.standard_normal((EQ, N))
    G = rng.standard_normal((INEQ, N))
    x0 = rng.standard_normal(N)
    b, h = A @ x0, G @ x0 + rng.uniform(0.1, 1.0, INEQ)
    x = cp.Variable(N)
    q = cp.Parameter(N)
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x),
                         [A @ x == b, G @ x <= h])
    return problem, q, x


def _backends() -> dict[str, object]:
    """Name -> the ``solver`` argument of ``CvxpyLayer``, for the installed backends."""
    from diffqcp_np.layers import DiffqcpSolver

    out = {"diffqcp_np": DiffqcpSolver(),
           "diffqcp_np, Clarabel": DiffqcpSolver(solve_method="Clarabel"), "DIFFCP": "DIFFCP"}
    try:
        import moreau.torch  # noqa: F401
    except ImportError:
        pass
    else:
        out["MOREAU"] = "MOREAU"
    return out


def _data(batch: int, steps: int, seed: int = 1):
    """Features and targets for every step: targets are the layer's solutions for a
    hidden model ``W_true``."""
    rng = np.random.default_rng(seed)
    W_true = rng.standard_normal((N, FEATURES))
    features = [rng.standard_normal((batch, FEATURES)) for _ in range(steps)]
    return W_true, features


def _run(layer, torch, W_true, features, W_start) -> tuple[list[float], float, np.ndarray]:
    """Train from ``W_start``; per-step seconds, last loss, first gradient."""
    W = torch.nn.Parameter(torch.tensor(W_start))
    optimizer = torch.optim.Adam([W], lr=0.05)
    times, first_grad, loss = [], None, float("nan")
    for f in features:
        f = torch.tensor(f)
        with torch.no_grad():
            (target,) = layer(f @ torch.tensor(W_true).T)
        start = time.perf_counter()
        optimizer.zero_grad()
        (x,) = layer(f @ W.T)
        value = ((x - target) ** 2).sum(dim=1).mean()
        value.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        if first_grad is None:
            first_grad = W.grad.detach().numpy().copy()
        loss = value.item()
    return times, loss, first_grad


def measure(batches: list[int], steps: int, repeats: int) -> list[dict]:
    import torch
    from cvxpylayers.torch import CvxpyLayer

    torch.set_num_threads(1)
    problem, q, x = _problem()
    backends = _backends()
    layers = {name: CvxpyLayer(problem, parameters=[q], variables=[x], solver=solver)
              for name, solver in backends.items()}
    rows = []
    for batch in batches:
        W_true, features = _data(batch, steps + 1)
        W_start = 0.5 * np.random.default_rng(2).standard_normal((N, FEATURES))
        times = {name: [] for name in layers}
        results = {}
        for _ in range(repeats):
            for name, layer in layers.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the peers' own warnings
                    step_times, loss, grad = _run(layer, torch, W_true, features, W_start)
                times[name] += step_times[1:]  # the first step compiles
                results[name] = (loss, grad)
        ours = results["diffqcp_np"][1]
        for name in layers:
            loss, grad = results[name]
            rows.append(dict(
                batch=batch, backend=name, step_ms=1e3 * statistics.median(times[name]),
                loss=loss,
                grad_diff=float(np.linalg.norm(grad - ours) / np.linalg.norm(ours))))
    return rows


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def report(rows: list[dict], steps: int, repeats: int) -> list[str]:
    lines = [
        "# A small training loop through a cvxpylayers layer",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch on 1 thread; Python "
        f"{platform.python_version()}; cvxpylayers {_version('cvxpylayers')}, cvxpy "
        f"{_version('cvxpy')}, torch {_version('torch')}, diffcp {_version('diffcp')}, "
        f"moreau {_version('moreau')}, diffqcp_np {_version('diffqcp_np')}.",
        "",
        f"QP layer (n = {N}, {EQ} equality and {INEQ} inequality rows), q = W f with "
        f"{FEATURES} features; one step = forward + backward + Adam for a batch of B. "
        f"Median over {steps} steps × {repeats} repeats (first step of each excluded); "
        "backends take turns in every repeat. `grad vs ours`: relative difference of the "
        "first gradient from diffqcp_np's.",
        "",
        "| B | backend | ms / step | µs / problem | speed-up of diffqcp_np | loss after the "
        "last step | grad vs ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ours = next(r for r in rows if r["batch"] == row["batch"]
                    and r["backend"] == "diffqcp_np")
        lines.append(
            f"| {row['batch']} | {row['backend']} | {row['step_ms']:.3g} | "
            f"{1e3 * row['step_ms'] / row['batch']:.3g} | "
            f"{row['step_ms'] / ours['step_ms']:.3g}× | {row['loss']:.3g} | "
            f"{row['grad_diff']:.1e} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "training_loop.md"))
    args = parser.parse_args()
    rows = measure(args.batch, args.steps, args.repeats)
    write_result(report(rows, args.steps, args.repeats), args.out)


if __name__ == "__main__":
    main()
