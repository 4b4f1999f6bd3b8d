"""Benchmark: a batch of 1000 small QPs, forward plus backward, diffqcp_np vs diffcp.

Every problem has the same structure (one cone dict, one sparsity pattern, different
values: the cvxpylayers case): n = 20 variables, m = 40 rows (5 equalities, 35
inequalities), a positive definite P for diffqcp_np. diffcp 1.1.9 cannot use P in its
default (lsqr) mode, so it gets the same A, b and cones with P = None and c = −A'y (a
bounded LP of the same size). diffqcp_np runs serially (one worker), on threads and on
processes (two workers); every ratio is against diffcp with as many workers, timed in the
same run. Medians over repeats; warm-up (JIT compilation, the process pool's start)
excluded.

Usage::

    python benchmarks/bench_batch.py [--problems 1000] [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import warnings
from functools import partial
from importlib.metadata import version

import numpy as np
import scipy.sparse as sp

import diffqcp_np
from _common import RESULTS, median_time, write_result


def small_qps(count: int, n: int = 20, zero: int = 5, nonneg: int = 35, seed: int = 0):
    """Same-structure QPs: random values on one pattern, each with a known interior dual."""
    rng = np.random.default_rng(seed)
    m = zero + nonneg
    pattern = sp.random(m, n, density=0.3, random_state=rng, format="csc") + sp.eye(m, n)
    pattern = sp.csc_matrix(pattern)
    pattern.sort_indices()
    As, bs, cs, cs_lp, Ps = [], [], [], [], []
    for _ in range(count):
        A = pattern.copy()
        A.data = rng.standard_normal(A.nnz)
        F = rng.standard_normal((n, n)) / np.sqrt(n)
        P = sp.csc_matrix(F @ F.T + 0.1 * np.eye(n))
        x = rng.standard_normal(n)
        v = rng.standard_normal(m)
        v[zero:] -= 1.0  # about 16% of the inequalities active: a unique, nondegenerate solution
        y = np.concatenate([v[:zero], np.maximum(v[zero:], 0)])
        s = np.concatenate([np.zeros(zero), np.maximum(-v[zero:], 0)])
        As.append(A)
        bs.append(A @ x + s)
        cs.append(-(A.T @ y) - P @ x)
        cs_lp.append(-(A.T @ y))  # dual feasible without P: the LP stays bounded
        Ps.append(P)
    return As, bs, cs, cs_lp, [{"z": zero, "l": nonneg}] * count, Ps


#: (workers, diffqcp_np back end, forward solver); diffcp runs with the same workers.
CONFIGS = [
    (1, "serial", "SCS"), (1, "serial", "Clarabel"),
    (2, "threads", "SCS"), (2, "threads", "Clarabel"),
    (2, "processes", "SCS"), (2, "processes", "Clarabel"),
]


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median wall-clock seconds of each function, the functions taking turns in every
    repeat (so that a change in the machine's load affects them alike)."""
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(median_time(fn, 1))
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "batch.md"))
    args = parser.parse_args()
    import diffcp

    As, bs, cs, cs_lp, cones, Ps = small_qps(args.problems)
    B = len(As)
    rng = np.random.default_rng(1)
    dxs = [rng.standard_normal(20) for _ in range(B)]
    zeros = [np.zeros(40) for _ in range(B)]

    def ours(n_jobs, backend, solve_method):
        return diffqcp_np.solve_and_derivative_batch(
            As, bs, cs, cones, n_jobs_forward=n_jobs, n_jobs_backward=n_jobs, Ps=Ps,
            solve_method=solve_method, backend=backend)

    def ours_full(n_jobs, backend, solve_method):
        out = ours(n_jobs, backend, solve_method)
        out[4](dxs, zeros, zeros, return_dP=True)

    def theirs_full(n_jobs):
        out = diffcp.solve_and_derivative_batch(
            [A.copy() for A in As], bs, cs_lp, cones, n_jobs_forward=n_jobs,
            n_jobs_backward=n_jobs)
        out[4](dxs, zeros, zeros)

    fns = {("diffcp", n_jobs): partial(theirs_full, n_jobs) for n_jobs in (1, 2)}
    fns.update({config: partial(ours_full, *config) for config in CONFIGS})
    for fn in fns.values():  # warm-up: JIT compilation, the process pool's start
        fn()
    t = interleaved_medians(fns, args.repeats)
    t_backward = {}
    for config in CONFIGS:
        batch = ours(*config)
        t_backward[config] = median_time(lambda batch=batch: batch[4](dxs, zeros, zeros),
                                         args.repeats)

    lines = [
        f"# Batch of {B} small QPs (n = 20, m = 40), forward + one DT_batch",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}; diffcp {version('diffcp')} (lsqr, SCS, P = None, "
        f"its default thread pool); diffqcp_np {diffqcp_np.__version__} (direct, with P; "
        f"SCS as diffcp, or Clarabel). Medians over {args.repeats} repeats, the "
        "configurations taking turns; warm-up excluded.",
        "",
        "| workers | diffqcp_np back end | forward solver | diffcp (ms/problem) "
        "| diffqcp_np (ms/problem) | throughput ratio "
        "| diffqcp_np DT_batch alone (µs/problem) |",
        "|---|---|---|---|---|---|---|",
    ]
    for config in CONFIGS:
        n_jobs, backend, method = config
        theirs, mine = t[("diffcp", n_jobs)], t[config]
        lines.append(f"| {n_jobs} | {backend} | {method} | {theirs / B * 1e3:.2f} "
                     f"| {mine / B * 1e3:.2f} | {theirs / mine:.1f}× "
                     f"| {t_backward[config] / B * 1e6:.0f} |")
    write_result(lines, args.out)


if __name__ == "__main__":  # the guard matters: process-pool workers import this module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
