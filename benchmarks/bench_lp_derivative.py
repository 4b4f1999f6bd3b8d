"""Benchmark: one DT on a sparse LP (n = 1000, A 3000×1000), diffqcp_np direct vs diffcp.

The LP has box constraints (2000 rows) plus 1000 sparse random rows and a known,
unique, strictly complementary solution. Both libraries solve it with SCS; each DT is
compared against a dense reference solve of the reduced system at that library's own
solution point. Timings are medians over repeats in one run; JIT warm-up is excluded.

Usage::

    python benchmarks/bench_lp_derivative.py [--repeats 5] [--dense] [--out FILE]

``--dense`` also times diffcp's dense mode (about 10 s per call on a 2-core machine).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import scipy.sparse as sp

import diffqcp_np
from _common import RESULTS, median_time, write_result
from diffqcp_np.cones import dpi_matrix


def sparse_lp(n: int = 1000, extra_rows: int = 1000, nnz_per_row: int = 10, seed: int = 0):
    """Box-constrained LP plus sparse random rows, with a unique known solution."""
    rng = np.random.default_rng(seed)
    G = sp.random(extra_rows, n, density=nnz_per_row / n, random_state=rng,
                  data_rvs=rng.standard_normal, format="csr")
    G = (G + sp.eye(extra_rows, n)).tocsc()
    A = sp.vstack([sp.identity(n), -sp.identity(n), G]).tocsc()  # x <= 1, -x <= 1, Gx <= h
    m = A.shape[0]
    # Active set: half the variables at a bound, the rest pinned by as many random rows.
    x = rng.uniform(-0.5, 0.5, n)
    at_bound = rng.permutation(n)[: n // 2]
    free = np.setdiff1d(np.arange(n), at_bound)
    upper = rng.random(at_bound.size) < 0.5
    x[at_bound[upper]] = 1.0
    x[at_bound[~upper]] = -1.0
    # row i of G has a diagonal entry in column i: rows "free" make G[free, free] nonsingular
    active = np.concatenate([at_bound[upper], n + at_bound[~upper], 2 * n + free])
    y = np.zeros(m)
    y[active] = rng.uniform(0.5, 1.5, active.size)
    s = rng.uniform(0.1, 1.0, m)
    s[active] = 0.0
    b = A @ x + s
    c = -(A.T @ y)
    return A, b, c, {"l": m}


def dense_reference_vjp(A, x, y, s, cone_dict, gx, gy, gs):
    """Dense solve of K' w = −[gx; D(gy + gs) − gs] (numpy, no factor reuse)."""
    m, n = A.shape
    D = dpi_matrix(y - s, cone_dict, dual=True).toarray()
    Ad = A.toarray()
    K = np.block([[np.zeros((n, n)), Ad.T @ D], [-Ad, np.eye(m) - D]])
    rhs = -np.concatenate([gx, D @ (gy + gs) - gs])
    w = np.linalg.solve(K.T, rhs)
    return w[:n], w[n:]  # dc, db


def rel(got: tuple, ref: tuple) -> float:
    """Relative error of the concatenated vectors ``got`` against ``ref``."""
    a, b = np.concatenate(got), np.concatenate(ref)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dense", action="store_true", help="also time diffcp dense mode")
    default_out = RESULTS / "lp_derivative.md"
    parser.add_argument("--out", default=str(default_out))
    args = parser.parse_args()
    import diffcp

    A, b, c, cones = sparse_lp()
    m, n = A.shape
    rng = np.random.default_rng(1)
    gx = rng.standard_normal(n)
    gy, gs = rng.standard_normal(m), np.zeros(m)
    solver = dict(solve_method="SCS", eps=1e-9, max_iters=100_000)

    # warm-up: JIT compilation of the cone kernels
    diffqcp_np.solve_and_derivative(A, b, c, cones, **solver)[4](gx, gy, gs)

    rows = []
    # diffqcp_np, direct mode
    t0 = time.perf_counter()
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(A, b, c, cones, **solver)
    forward_and_setup = time.perf_counter() - t0
    ours_first = median_time(
        lambda: diffqcp_np.derivative(A, b, c, cones, x, y, s)[1](gx, gy, gs), args.repeats)
    ours_reuse = median_time(lambda: DT(gx, gy, gs), args.repeats)
    dA, db, dc = DT(gx, gy, gs)
    dc_ref, db_ref = dense_reference_vjp(A, x, y, s, cones, gx, gy, gs)
    ours_err = rel((dc, db), (dc_ref, db_ref))

    # diffcp, lsqr (its default) and optionally dense
    def diffcp_run(mode):
        out = diffcp.solve_and_derivative(A.copy(), b, c, cones, mode=mode, **solver)
        return out

    xd, yd, sd, _, DT_lsqr = diffcp_run("lsqr")
    lsqr_time = median_time(lambda: DT_lsqr(gx, gy, gs), args.repeats)
    _, db_l, dc_l = DT_lsqr(gx, gy, gs)
    dc_ref_d, db_ref_d = dense_reference_vjp(A, xd, yd, sd, cones, gx, gy, gs)
    lsqr_err = rel((dc_l, db_l), (dc_ref_d, db_ref_d))
    rows.append(("diffcp lsqr (one DT)", lsqr_time, lsqr_err))
    if args.dense:
        _, _, _, _, DT_dense = diffcp_run("dense")
        dense_time = median_time(lambda: DT_dense(gx, gy, gs), 1)
        _, db_dd, dc_dd = DT_dense(gx, gy, gs)
        rows.append(("diffcp dense (one DT)", dense_time,
                     rel((dc_dd, db_dd), (dc_ref_d, db_ref_d))))
    rows.append(("diffqcp_np direct, first DT incl. factorisation", ours_first, ours_err))
    rows.append(("diffqcp_np direct, DT reusing the factorisation", ours_reuse, ours_err))

    lines = [
        "# One DT on a sparse LP (n = 1000, A 3000×1000, "
        f"{A.nnz} nonzeros)",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{__import__('os').cpu_count()} cores; Python {platform.python_version()}; "
        f"numpy {np.__version__}; scipy {__import__('scipy').__version__}; "
        f"diffcp {diffcp.__version__ if hasattr(diffcp, '__version__') else '?'}; "
        f"diffqcp_np {diffqcp_np.__version__}.",
        f"Forward solve (SCS, eps 1e-9) plus derivative setup: {forward_and_setup:.3f} s. "
        f"Medians over {args.repeats} repeats, JIT warm-up excluded.",
        "Error: relative error of (dc, db) against a dense solve of the reduced system at the "
        "same solution.",
        "",
        "| method | time (s) | speed-up vs diffcp lsqr | relative error |",
        "|---|---|---|---|",
    ]
    for name, t, err in rows:
        lines.append(f"| {name} | {t:.4f} | {lsqr_time / t:.1f}× | {err:.1e} |")
    write_result(lines, args.out)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        main()
