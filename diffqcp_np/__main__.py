"""Demonstration: solve a small conic QP, differentiate it, check against finite differences.

Run with ``python -m diffqcp_np``. Exits with status 1 if a check fails.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import scipy.sparse as sp

from . import __version__, solve_and_derivative, solve_only

TIGHT = dict(eps=1e-12, max_iters=100_000)


def demo_problem(seed: int = 0):
    """A portfolio-style QP with a budget, long-only weights and a risk (SOC) limit.

    minimize ½ x'Px − μ'x  s.t.  1'x = 1,  x ≥ 0,  ‖F x‖ ≤ r
    in SCS form: rows (z: 1, l: n, q: [k + 1]).
    """
    rng = np.random.default_rng(seed)
    n, k = 8, 4
    F = rng.standard_normal((k, n)) / np.sqrt(n)
    P = sp.csc_matrix(np.diag(rng.uniform(0.5, 1.5, n)))
    mu = rng.uniform(0.0, 1.0, n)
    A = sp.vstack([
        sp.csc_matrix(np.ones((1, n))),          # budget (zero cone)
        -sp.identity(n),                         # x >= 0 (orthant)
        sp.csc_matrix(np.vstack([np.zeros((1, n)), -F])),  # (r, F x) in SOC
    ]).tocsc()
    b = np.concatenate([[1.0], np.zeros(n), [0.35], np.zeros(k)])
    cone_dict = {"z": 1, "l": n, "q": [k + 1]}
    return A, b, -mu, cone_dict, P


def main() -> int:
    print(f"diffqcp_np {__version__}: solve a conic QP and differentiate its solution map\n")
    A, b, c, cone_dict, P = demo_problem()
    m, n = A.shape
    start = time.perf_counter()
    x, y, s, D, DT = solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
    elapsed = time.perf_counter() - start
    print(f"problem: n={n} variables, m={m} rows, cones {cone_dict}")
    print(f"solution x = {np.array2string(x, precision=4, suppress_small=True)}")
    print(f"solve + derivative setup: {elapsed * 1e3:.1f} ms (first call includes JIT)\n")

    rng = np.random.default_rng(1)
    db = rng.standard_normal(m)
    dc = rng.standard_normal(n)
    dx, dy, ds = D(None, db, dc)
    h = 1e-5
    x_plus = solve_only(A, b + h * db, c + h * dc, cone_dict, P=P, **TIGHT)[0]
    x_minus = solve_only(A, b - h * db, c - h * dc, cone_dict, P=P, **TIGHT)[0]
    fd = (x_plus - x_minus) / (2 * h)
    jvp_error = np.linalg.norm(dx - fd) / np.linalg.norm(fd)
    print(f"JVP  dx                  = {np.array2string(dx, precision=4, suppress_small=True)}")
    print(f"finite differences       = {np.array2string(fd, precision=4, suppress_small=True)}")
    print(f"relative error           = {jvp_error:.2e}")

    gx = rng.standard_normal(n)
    dA, db_bar, dc_bar, dP = DT(gx, np.zeros(m), np.zeros(m), return_dP=True)
    lhs = gx @ dx
    rhs = db_bar @ db + dc_bar @ dc
    adjoint_error = abs(lhs - rhs) / max(abs(lhs), 1e-300)
    print(f"\nVJP adjoint test <gx, D(db, dc)> = {lhs:.10f}, <DT(gx), (db, dc)> = {rhs:.10f}")
    print(f"relative error           = {adjoint_error:.2e}")
    print(f"dA on A's pattern: {dA.nnz} entries; dP on P's pattern: {dP.nnz} entries")

    ok = jvp_error < 1e-5 and adjoint_error < 1e-9
    print("\n" + ("OK: derivative matches finite differences" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
