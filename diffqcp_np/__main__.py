"""Command line: a demonstration, and the compilation of every kernel ahead of use.

``python -m diffqcp_np`` solves a small conic QP, differentiates it and checks the
derivative against finite differences (exit status 1 if a check fails);
``python -m diffqcp_np --warm-up`` compiles every Numba kernel once (they are cached on
disk for later processes); ``--help`` prints the usage.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__

TIGHT = dict(eps=1e-12, max_iters=100_000)


def demo_problem(seed: int = 0, n: int = 8, k: int = 4):
    """A portfolio-style QP with a budget, long-only weights and a risk (SOC) limit.

    minimize ½ x'Px − μ'x  s.t.  1'x = 1,  x ≥ 0,  ‖F x‖ ≤ r
    in SCS form: rows (z: 1, l: n, q: [k + 1]), with ``n`` assets and ``k`` risk factors.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
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


def _announce_compilation() -> None:
    print("compiling the Numba kernels this problem needs (once: they are cached on disk; "
          "`python -m diffqcp_np --warm-up` compiles all of them) ...", flush=True)


def demo() -> int:
    """Solve, differentiate and check the demo problem; 0 if the checks pass, else 1."""
    from . import solve_and_derivative, solve_only
    from ._warm_up import compilations

    print(f"diffqcp_np {__version__}: solve a conic QP and differentiate its solution map\n")
    A, b, c, cone_dict, P = demo_problem()
    m, n = A.shape
    with compilations(on_first=_announce_compilation) as compiled:
        start = time.perf_counter()
        x, y, s, D, DT = solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
        elapsed = time.perf_counter() - start
    print(f"problem: n={n} variables, m={m} rows, cones {cone_dict}")
    print(f"solution x = {np.array2string(x, precision=4, suppress_small=True)}")
    jit = " (first call includes JIT compilation)" if compiled else ""
    print(f"solve + derivative setup: {elapsed * 1e3:.1f} ms{jit}\n")

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


def warm_up() -> int:
    """Compile every kernel (or find them cached); 1 if some kernel was not reached."""
    from ._warm_up import warm_up as run

    print(f"diffqcp_np {__version__}: compiling every Numba kernel (cached on disk for "
          "later processes)")
    report = run()
    print(f"done in {report['seconds']:.1f} s: {report['compiled']} kernels compiled"
          + (" (all were cached already)" if not report["compiled"] else ""))
    if report["missing"]:
        print(f"not reached by the warm-up: {', '.join(report['missing'])}")
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffqcp_np",
        description="Without options: solve a small conic QP, differentiate its solution "
                    "map and check the derivative against finite differences (exit status "
                    "1 if a check fails).")
    parser.add_argument("--warm-up", action="store_true",
                        help="compile every Numba kernel once, with a progress bar (tqdm "
                             "if installed); they are cached on disk, so later processes "
                             "start without compiling")
    parser.add_argument("--version", action="version", version=f"diffqcp_np {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m diffqcp_np``."""
    args = _parser().parse_args(argv)
    return warm_up() if args.warm_up else demo()


if __name__ == "__main__":
    sys.exit(main())
