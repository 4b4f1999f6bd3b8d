"""Benchmark: projections and Jacobian products on large products of cones.

Times ``pi``, building the Jacobian (``ConeJacobian``), one Jacobian-vector product and
the conversion to a sparse matrix, for 10^5 cones of each 3-D kind, many small and a few
large SOCs, and PSD blocks. Medians over repeats; JIT warm-up excluded.

Usage::

    python benchmarks/bench_cones.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

import diffqcp_np
from _common import RESULTS, median_time
from diffqcp_np.cones import ConeJacobian, as_cone_spec, pi

CASES = {
    "orthant, 10^6 rows": {"l": 1_000_000},
    "SOC, 10^5 cones of dim 3": {"q": [3] * 100_000},
    "SOC, 10 cones of dim 10^4": {"q": [10_000] * 10},
    "exponential, 10^5 cones": {"ep": 100_000},
    "dual exponential, 10^5 cones": {"ed": 100_000},
    "power, 10^5 cones (alpha 0.3)": {"p": [0.3] * 100_000},
    "PSD, 1000 blocks of side 5": {"s": [5] * 1000},
    "PSD, one block of side 100": {"s": [100]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "cones.md"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    lines = [
        "# Cone projections and Jacobians",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}; numpy {np.__version__}; diffqcp_np "
        f"{diffqcp_np.__version__}. Medians over {args.repeats} repeats, JIT warm-up excluded.",
        "",
        "| cones | rows | projection (ms) | Jacobian setup (ms) | JVP (ms) | to sparse (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for name, cones in CASES.items():
        spec = as_cone_spec(cones)
        v = rng.standard_normal(spec.dim)
        dv = rng.standard_normal(spec.dim)
        pi(v, spec), ConeJacobian(v, spec).matvec(dv)  # warm-up
        t_proj = median_time(lambda v=v, spec=spec: pi(v, spec), args.repeats)
        t_jac = median_time(lambda v=v, spec=spec: ConeJacobian(v, spec), args.repeats)
        jac = ConeJacobian(v, spec)
        t_jvp = median_time(lambda jac=jac, dv=dv: jac.matvec(dv), args.repeats)
        large_dense_soc = any(d > 1000 for d in spec.soc)
        t_sparse = float("nan") if large_dense_soc else median_time(jac.to_sparse, 1)
        sparse_cell = "n/a (dense SOC blocks)" if large_dense_soc else f"{t_sparse * 1e3:.1f}"
        lines.append(f"| {name} | {spec.dim} | {t_proj * 1e3:.2f} | {t_jac * 1e3:.2f} | "
                     f"{t_jvp * 1e3:.2f} | {sparse_cell} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
