"""Benchmark: the sparse LU of K held in our arrays (``SparseLU``) against SciPy's SuperLU
object, on derivative systems that take the LU path, and the memory each leaves behind.

For each problem, K is assembled at a point ``v = y − s`` with ``y = Π_{K*}(v)`` (the
derivative system depends on the cones' point only); then the factorisation (``splu``
alone, and ``SparseLU``: ``splu`` plus the copy of L, U and the permutations) and one
solve with K and one with K' are timed, and both answers' relative residuals are
reported. Medians over repeats; JIT warm-up excluded. Memory: a factor of the first
matrix made on a worker thread and dropped in the calling thread, repeated, and the
growth of the resident set (after ``malloc_trim``) per factor.

Usage::

    python benchmarks/bench_sparse_lu.py [--repeats 20] [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import diffqcp_np
import suite_problems as problems
from _common import RESULTS, median_time, write_result
from diffqcp_np._validation import check_problem
from diffqcp_np.cones import pi
from diffqcp_np.derivative._sparse_lu import SparseLU
from diffqcp_np.derivative.solution_map import SolutionDerivative


def _mixed_psd(rows_l: int, sides: list[int], n: int, density: float, seed: int):
    """A QP over an orthant and small PSD blocks, and its ``v`` (sparse-LU path: PSD
    cones, far from the dense-system threshold)."""
    rng = np.random.default_rng(seed)
    cones = {"l": rows_l, "s": sides}
    m = rows_l + sum(k * (k + 1) // 2 for k in sides)
    A = (sp.random(m, n, density=density, random_state=rng) + sp.eye(m, n)).tocsc()
    F = sp.random(n, n, density=density, random_state=rng)
    return A, cones, rng.standard_normal(m), (F @ F.T + 0.1 * sp.identity(n)).tocsc()


def _captured(make):
    """(A, cones, v, P) of a suite problem built from a known solution."""
    captured = {}
    original = problems.with_known_solution

    def capture(A, cone_dict, v, rng, P=None, note=""):
        captured["args"] = (problems._clean(A), cone_dict, v, P)
        return original(A, cone_dict, v, rng, P, note)

    problems.with_known_solution = capture
    try:
        make()
    finally:
        problems.with_known_solution = original
    return captured["args"]


CASES = {
    "QP, l = 100, s = [4]": lambda: _mixed_psd(100, [4], 60, 0.2, 0),
    "LP, l = 1000, s = [5] × 40": lambda: _mixed_psd(1000, [5] * 40, 800, 0.01, 1),
    "SDP k = 20": lambda: _captured(lambda: problems.sdp_block(20, 100)),
    "SDP k = 40": lambda: _captured(lambda: problems.sdp_block(40, 400)),
    "sparse QP n = 10^4": lambda: _captured(lambda: problems.sparse_qp(10_000)),
}


def assembled_K(A, cones, v, P) -> sp.csc_matrix:
    y = pi(v, cones, dual=True)
    data = check_problem(A, np.zeros(A.shape[0]), np.zeros(A.shape[1]), cones, P)
    return SolutionDerivative(data, np.zeros(A.shape[1]), y, y - v,
                              factorization="ldl")._assemble()


def _rss() -> int:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth_per_factor(make, count: int = 200) -> float:
    """Resident-set growth (bytes) per factor made on a worker thread and dropped here."""
    with ThreadPoolExecutor(1) as worker:
        worker.submit(make).result()
        gc.collect()
        before = _rss()
        for _ in range(count):
            factor = worker.submit(make).result()
            del factor
        gc.collect()
        return (_rss() - before) / count


def _residual(factor, K: sp.csc_matrix, b: np.ndarray) -> float:
    """The larger relative residual of the K and K' solves of ``b``."""
    return max(np.linalg.norm(M @ factor.solve(b, trans=t) - b) / np.linalg.norm(b)
               for t, M in (("N", K), ("T", K.T)))


def table_row(name: str, K: sp.csc_matrix, b: np.ndarray, repeats: int) -> str:
    lu, ours = spla.splu(K), SparseLU(K)
    ours.solve(b), ours.solve(b, "T")  # compile
    t_splu = median_time(lambda: spla.splu(K), repeats)
    t_ours = median_time(lambda: SparseLU(K), repeats)
    solves = [median_time(lambda f=f, t=t: f.solve(b, trans=t), 5 * repeats)
              for t in ("N", "T") for f in (lu, ours)]
    return (f"| {name} | {K.shape[0]} | {K.nnz} | {lu.L.nnz + lu.U.nnz} | "
            f"{t_splu * 1e3:.3g} / {t_ours * 1e3:.3g} | "
            f"{solves[0] * 1e6:.0f} / {solves[1] * 1e6:.0f} | "
            f"{solves[2] * 1e6:.0f} / {solves[3] * 1e6:.0f} | "
            f"{_residual(lu, K, b):.1e} / {_residual(ours, K, b):.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=str(RESULTS / "sparse_lu.md"))
    args = parser.parse_args()
    lines = [
        "# Sparse LU of K: SciPy's SuperLU object against SparseLU (SuperLU's factors in "
        "our arrays, compiled solves)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared); Python "
        f"{platform.python_version()}; scipy {scipy.__version__}; diffqcp_np "
        f"{diffqcp_np.__version__}. Medians over {args.repeats} repeats (solves: "
        f"{5 * args.repeats}), JIT warm-up excluded. Residuals: the larger of "
        "‖Kz − b‖/‖b‖ and ‖K'z − b‖/‖b‖.",
        "",
        "| problem | N | nnz(K) | nnz(L+U) | factor: splu / SparseLU (ms) | "
        "solve K: SuperLU / ours (µs) | solve K': SuperLU / ours (µs) | "
        "residual: SuperLU / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    first = None
    for name, make in CASES.items():
        K = assembled_K(*make())
        first = K if first is None else first
        lines.append(table_row(name, K, rng.standard_normal(K.shape[0]), args.repeats))
    lines += [
        "",
        f"Memory ({next(iter(CASES))}; each factor made on a worker thread, "
        "dropped in the calling thread; resident set after `malloc_trim`): SuperLU "
        f"object {growth_per_factor(lambda: spla.splu(first)) / 1024:.1f} KB per factor, "
        f"SparseLU {growth_per_factor(lambda: SparseLU(first)) / 1024:.1f} KB per factor.",
    ]
    write_result(lines, args.out)


if __name__ == "__main__":
    main()
