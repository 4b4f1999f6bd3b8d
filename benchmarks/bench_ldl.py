"""Benchmark: the compiled LDLᵀ against QDLDL's C code on the suite's derivative systems.

For each problem, the reduced matrix M that ``direct`` mode factors (regularised as it
is factored) is taken from a derivative set up at a Clarabel solution; then the
numeric factorisation and one solve are timed with our kernels (analysis cached, as for
every later derivative of the same structure) and with QDLDL's Python binding (which
orders and factors on every call), and the two solutions are compared. Medians over
repeats; JIT warm-up excluded.

Usage::

    python benchmarks/bench_ldl.py [--repeats 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
from importlib import metadata

import numpy as np
import qdldl
import scipy.sparse as sp

import diffqcp_np
import suite_problems as problems
from _common import RESULTS, median_time, write_result
from diffqcp_np._sparse import CSCArrays
from diffqcp_np.derivative._ldl import SYMBOLIC_CACHE, LDLFactor, factorize
from diffqcp_np.derivative.solution_map import SolutionDerivative
from diffqcp_np._validation import check_problem

CASES = {
    "sparse QP n = 10^3": lambda: problems.sparse_qp(1000),
    "sparse QP n = 10^4": lambda: problems.sparse_qp(10_000),
    "sparse LP n = 1000": lambda: problems.sparse_lp_problem(1000),
    "SOCP q = 10×100": lambda: problems.socp_blocks(300, [100] * 10),
    "SOCP q = 500, 1000, 2000": lambda: problems.socp_blocks(1000, [500, 1000, 2000]),
    "entropy n = 3000": lambda: problems.entropy_maximisation(3000, 30),
    "least squares 2000×1000 (dense P)": lambda: problems.least_squares_simplex(2000, 1000),
}


def regularised_M(problem) -> CSCArrays:
    """The regularised upper triangle of M, as ``direct`` mode factors it."""
    x, y, s = diffqcp_np.solve_only(problem.A, problem.b, problem.c, problem.cone_dict,
                                    P=problem.P, solve_method="Clarabel")
    data = check_problem(problem.A, problem.b, problem.c, problem.cone_dict, problem.P)
    derivative = SolutionDerivative(data, x, y, s, mode="direct", factorization="ldl")
    return derivative.solver._reduced.factored_matrix()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "ldl.md"))
    args = parser.parse_args()
    lines = [
        "# LDLᵀ of the reduced derivative system: compiled kernels against QDLDL",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}; numpy {np.__version__}; qdldl "
        f"{metadata.version('qdldl')}; diffqcp_np {diffqcp_np.__version__}. "
        f"Medians over {args.repeats} repeats, JIT warm-up excluded. Ours: numeric "
        "factorisation with the cached analysis (what every later derivative of the "
        "structure pays); QDLDL: its `Solver`, which orders and factors on every call. "
        "The solves compare like with like. Relative difference: between the two "
        "solutions of the regularised M, whose orderings round differently (M is "
        "ill-conditioned for the LP and the entropy problem; refinement against the "
        "exact system removes both errors).",
        "",
        "| problem | N | nnz(M) | nnz(L) | factor: ours / QDLDL (ms) | speed-up | "
        "solve: ours / QDLDL (ms) | speed-up | relative difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for name, make in CASES.items():
        upper = regularised_M(make())
        scipy_upper = sp.csc_matrix((upper.data, upper.indices, upper.indptr))
        size = upper.indptr.size - 1
        ours = factorize(upper)  # analyses the pattern (cached) and warms up the kernels
        symbolic = SYMBOLIC_CACHE.lookup(upper)
        reference = qdldl.Solver(scipy_upper, upper=True)
        b = rng.standard_normal(size)
        t_ours = median_time(lambda u=upper, a=symbolic: LDLFactor(u, a), args.repeats)
        t_qdldl = median_time(lambda u=scipy_upper: qdldl.Solver(u, upper=True), args.repeats)
        s_ours = median_time(lambda f=ours, v=b: f.solve(v), 5 * args.repeats)
        s_qdldl = median_time(lambda f=reference, v=b: f.solve(v), 5 * args.repeats)
        want = reference.solve(b)
        difference = np.linalg.norm(ours.solve(b) - want) / np.linalg.norm(want)
        lines.append(
            f"| {name} | {size} | {upper.indices.size} | {int(symbolic.counts.sum())} | "
            f"{t_ours * 1e3:.3g} / {t_qdldl * 1e3:.3g} | {t_qdldl / t_ours:.2f}× | "
            f"{s_ours * 1e3:.3g} / {s_qdldl * 1e3:.3g} | {s_qdldl / s_ours:.2f}× | "
            f"{difference:.1e} |")
    write_result(lines, args.out)


if __name__ == "__main__":
    main()
