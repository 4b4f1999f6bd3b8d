"""Benchmark: single problems, Moreau's Solver beside Clarabel plus diffqcp_np's derivative.

For each problem (``suite_problems``: sparse QPs n = 10^3 and 10^4, a sparse LP, an
SOCP, entropy maximisation, logistic regression), in one process, the tools taking
turns (medians over the repeats, warm-up excluded):

* Moreau 0.4.1 ``Solver`` (CPU, ``enable_grad=True``): forward (construction and
  ``solve``) and one ``backward``;
* Clarabel forward (``solve_internal(..., solve_method="Clarabel")``) and diffqcp_np's
  ``derivative(...)`` at its solution (set-up and one ``DT``, ``refine=False``).

Gradient error: the directional derivative of ``L = g'x`` along a random ``(δb, δc)``
from each tool's backward pass, against central differences of re-solves by Clarabel
at tolerance 1e-12 (step 1e-6 relative to the data).

Usage::

    python benchmarks/bench_peers_single.py [--repeats 3] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np
import scipy.sparse as sp

import suite_problems as suite
from _common import RESULTS, write_result


def problems(quick: bool) -> dict:
    scale = 0.1 if quick else 1.0
    return {
        "sparse QP, n = 10^3": suite.sparse_qp(1000),
        "sparse QP, n = 10^4": suite.sparse_qp(int(10000 * scale) or 1000),
        "sparse LP, n = 1000": suite.sparse_lp_problem(int(1000 * scale) or 100),
        "SOCP, cones 50, 100, 200": suite.socp_blocks(300, [50, 100, 200]),
        "entropy, n = 300": suite.entropy_maximisation(300, 10),
        "logistic regression 200×10": suite.logistic_regression(200, 10),
    }


def moreau_cones(cone_dict: dict):
    import moreau

    unknown = set(cone_dict) - {"z", "f", "l", "q", "ep"}
    if unknown:
        raise ValueError(f"cones {sorted(unknown)} not mapped to Moreau here")
    return moreau.Cones(num_zero_cones=cone_dict.get("z", 0) + cone_dict.get("f", 0),
                        num_nonneg_cones=cone_dict.get("l", 0),
                        so_cone_dims=list(cone_dict.get("q", [])),
                        num_exp_cones=cone_dict.get("ep", 0))


def clarabel_x(prob, b, c, tight: bool = True):
    from diffqcp_np import solve_internal

    settings = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, max_iter=400) \
        if tight else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = solve_internal(prob.A, b, c, prob.cone_dict, P=prob.P, solve_method="Clarabel",
                             raise_on_error=False, **settings)
    return out["x"]


def run_one(prob, repeats: int, rng) -> dict:
    import diffqcp_np

    n = prob.n
    g = rng.standard_normal(n)
    db_dir, dc_dir = rng.standard_normal(prob.m), rng.standard_normal(n)
    h = 1e-6 * max(1.0, np.abs(prob.b).max(), np.abs(prob.c).max())
    fd = (g @ clarabel_x(prob, prob.b + h * db_dir, prob.c + h * dc_dir)
          - g @ clarabel_x(prob, prob.b - h * db_dir, prob.c - h * dc_dir)) / (2 * h)
    state: dict = {}

    def ours_forward():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state["sol"] = diffqcp_np.solve_internal(prob.A, prob.b, prob.c, prob.cone_dict,
                                                     P=prob.P, solve_method="Clarabel")

    def ours_backward():
        sol = state["sol"]
        _, DT = diffqcp_np.derivative(prob.A, prob.b, prob.c, prob.cone_dict, sol["x"],
                                      sol["y"], sol["s"], P=prob.P, refine=False)
        state["ours_grad"] = DT(g, np.zeros(prob.m), np.zeros(prob.m))

    fns = {"Clarabel forward": ours_forward, "diffqcp_np derivative + DT": ours_backward}
    note = ""
    try:
        import moreau

        cones = moreau_cones(prob.cone_dict)
        P = sp.csr_matrix(prob.P) if prob.P is not None else sp.csr_matrix((n, n))
        A = sp.csr_matrix(prob.A)

        def moreau_forward():
            solver = moreau.Solver(P, prob.c, A, prob.b, cones=cones,
                                   settings=moreau.Settings(device="cpu", enable_grad=True))
            state["moreau_x"] = np.asarray(solver.solve().x)
            state["moreau"] = solver

        def moreau_backward():
            state["moreau_grad"] = state["moreau"].backward(g)

        fns["Moreau Solver forward"] = moreau_forward
        fns["Moreau backward"] = moreau_backward
    except (ImportError, ValueError) as err:
        note = f"Moreau not run: {err}"
    times = {key: [] for key in fns}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(repeats):
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    out = {key: statistics.median(v) for key, v in times.items()}
    dA, db, dc = state["ours_grad"]
    out["ours error"] = abs(db @ db_dir + dc @ dc_dir - fd) / max(abs(fd), 1e-12)
    if "moreau_grad" in state:
        grad = state["moreau_grad"]
        got = np.asarray(grad["db"]).ravel() @ db_dir + np.asarray(grad["dq"]).ravel() @ dc_dir
        out["Moreau error"] = abs(got - fd) / max(abs(fd), 1e-12)
        out["Moreau x vs Clarabel"] = float(np.abs(state["moreau_x"] - state["sol"]["x"]).max())
    out["note"] = note
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "peers_single.md"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = {name: run_one(prob, args.repeats, rng) for name, prob in problems(args.quick).items()}
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    from importlib.metadata import version

    lines = [
        "# Single problems: Moreau's Solver beside Clarabel + diffqcp_np's derivative",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared (load average before "
        f"{load_before}, after {load_after}); diffqcp_np {version('diffqcp_np')}, moreau "
        f"{version('moreau')}, clarabel {version('clarabel')}. Milliseconds, medians over "
        f"{args.repeats} repeats, the tools taking turns. Gradient error: relative error of "
        "a directional derivative of g'x (random b, c directions) against central "
        "differences of Clarabel re-solves at 1e-12.",
        "",
        "| problem | Clarabel forward | ours derivative + DT | Moreau forward | Moreau backward "
        "| gradient error: ours / Moreau | max abs x difference Moreau vs Clarabel |",
        "|---|---|---|---|---|---|---|",
    ]
    def ms(r: dict, key: str) -> str:
        return f"{r[key] * 1e3:.2f}" if key in r else "–"

    for name, r in rows.items():
        moreau_err = f"{r['Moreau error']:.1e}" if "Moreau error" in r else "–"
        xdiff = f"{r['Moreau x vs Clarabel']:.1e}" if "Moreau x vs Clarabel" in r else "–"
        lines.append(f"| {name} | {ms(r, 'Clarabel forward')} "
                     f"| {ms(r, 'diffqcp_np derivative + DT')} "
                     f"| {ms(r, 'Moreau Solver forward')} | {ms(r, 'Moreau backward')} "
                     f"| {r['ours error']:.1e} / {moreau_err} | {xdiff} |")
    notes = [f"{name}: {r['note']}" for name, r in rows.items() if r["note"]]
    if notes:
        lines += [""] + notes
    write_result(lines, args.out)


if __name__ == "__main__":
    main()
