"""Benchmark: solution refinement before differentiating, accuracy and cost.

Accuracy. Random problems with a known, unique, strictly complementary solution (QP, LP,
SOCP, exponential-cone QP and LP), solved at each forward solver's default tolerance:
the fraction whose gradient (one DT with a random cotangent) is off by more than 1e-6
relative from the gradient at the exact solution, without refinement and with it, and
how many of the refined ones are reported (InaccurateDerivativeWarning). Then the
benchmark batch of 1000 small QPs (``bench_batch.small_qps``) through the batched dense
derivative, against the gradients at a tight Clarabel solution.

Cost. On problems of the suite (``suite_problems``) and on the small-QP batch: what
refinement adds to setting up the derivative and one DT, in units of one more DT
(refined minus unrefined, at the same forward solution), for the default (a step that
keeps every face borrows the previous factorisation) and for factoring every point.
BLAS pinned to one thread; medians of CPU time over repeats, the variants taking turns;
warm-up excluded.

Usage::

    python benchmarks/bench_refinement.py [--problems 200] [--repeats 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from functools import partial

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

import diffqcp_np
import suite_problems
from _common import RESULTS, write_result
from bench_batch import small_qps
from diffqcp_np import InaccurateDerivativeWarning, NonDifferentiableWarning
from diffqcp_np._validation import check_problem
from diffqcp_np.cones import as_cone_spec, dpi_matrix, pi
from diffqcp_np.derivative import QuadraticTerm, SolutionDerivative
from diffqcp_np.derivative.solution_refinement import ResidualMap, refine_solution

TIGHT_CLARABEL = dict(tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12, max_iter=500)

#: family: (cones, n (None: as many as active directions), with P)
FAMILIES = {
    "QP": ({"z": 2, "l": 12}, 6, True),
    "LP": ({"z": 2, "l": 14}, None, False),
    "SOCP (QP)": ({"z": 1, "l": 4, "q": [3, 4, 5]}, 5, True),
    "SOCP (LP)": ({"z": 1, "l": 4, "q": [3, 4, 5]}, None, False),
    "exp (QP)": ({"z": 1, "l": 3, "ep": 3}, 4, True),
    "exp (LP)": ({"l": 3, "ep": 2, "ed": 1}, None, False),
}
SOLVERS = ("SCS", "Clarabel", "ECOS")

#: Problems of the suite for the cost table.
COST_PROBLEMS = ["qp/n = 10^3", "qp/n = 10^4", "sparse_lp/n = 1000, A 3000×1000",
                 "socp/n = 300, q = 10×100", "sdp/k = 30, n = 200", "exp/logistic 500×20",
                 "power/projection, 1000 cones"]


# -- problems with a known solution -------------------------------------------------------------
def known_solution(cones: dict, n: int | None, quadratic: bool, seed: int):
    """``(A, b, c, P, x, y, s)`` with a unique, strictly complementary solution and a
    well-conditioned derivative system, or None."""
    rng = np.random.default_rng(seed)
    spec = as_cone_spec(cones)
    m = spec.dim
    v = rng.standard_normal(m)
    D = dpi_matrix(v, spec, dual=True).toarray()
    eig = np.linalg.eigvalsh(D)
    ones, middle = int(np.sum(eig > 1 - 1e-9)), int(np.sum((eig > 1e-9) & (eig < 1 - 1e-9)))
    n = max(n or 1, ones, 1) if quadratic else max(ones + middle // 2, 1)
    P = None
    if quadratic:
        F = sp.random(n, n, density=0.3, random_state=rng)
        P = (F @ F.T + 0.1 * sp.identity(n)).tocsc()
    for _ in range(50):
        A = (sp.random(m, n, density=0.4, random_state=rng, data_rvs=rng.standard_normal)
             + sp.eye(m, n)).tocsc()
        Ad = A.toarray()
        K = np.block([[np.zeros((n, n)) if P is None else P.toarray(), Ad.T @ D],
                      [-Ad, np.eye(m) - D]])
        if np.linalg.cond(K) < 1e3:
            break
    else:
        return None
    y = pi(v, spec, dual=True)
    s, x = y - v, rng.standard_normal(n)
    c = -(A.T @ y) - (P @ x if P is not None else 0.0)
    return A, A @ x + s, c, P, x, y, s


def gradient(DT, cotangent) -> np.ndarray:
    dA, db, dc = DT(*cotangent)
    return np.concatenate([dA.data, db, dc])


def relative_error(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def accuracy_rows(count: int) -> list[str]:
    rows = []
    for family, (cones, n, quadratic) in FAMILIES.items():
        problems = [p for p in (known_solution(cones, n, quadratic, seed)
                                for seed in range(count)) if p is not None]
        for solver in SOLVERS:
            if solver == "ECOS" and quadratic:
                continue
            before = after = reported = silent = solved = 0
            for seed, (A, b, c, P, x, y, s) in enumerate(problems):
                rng = np.random.default_rng(seed)
                cot = (rng.standard_normal(x.size), rng.standard_normal(y.size),
                       rng.standard_normal(y.size))
                want = gradient(diffqcp_np.derivative(A, b, c, cones, x, y, s, P=P)[1], cot)
                try:
                    raw = diffqcp_np.solve_and_derivative_internal(
                        A, b, c, cones, P=P, solve_method=solver, refine=False)
                except diffqcp_np.SolverError:
                    continue
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    out = diffqcp_np.solve_and_derivative_internal(A, b, c, cones, P=P,
                                                                   solve_method=solver)
                flagged = any(issubclass(w.category, (InaccurateDerivativeWarning,
                                                      NonDifferentiableWarning))
                              for w in caught)
                solved += 1
                before += relative_error(gradient(raw["DT"], cot), want) > 1e-6
                off = relative_error(gradient(out["DT"], cot), want) > 1e-6
                after += off
                reported += flagged
                silent += off and not flagged
            rows.append(f"| {family} | {solver} | {solved} | {100 * before / solved:.1f}% "
                        f"| {100 * after / solved:.1f}% | {reported} | {silent} |")
    return rows


def batch_accuracy_rows(count: int) -> list[str]:
    As, bs, cs, _, cones, Ps = small_qps(count)
    rng = np.random.default_rng(7)
    cots = [(rng.standard_normal(20), rng.standard_normal(40), rng.standard_normal(40))
            for _ in As]

    def gradients(**kwargs):
        out = diffqcp_np.solve_and_derivative_batch(As, bs, cs, cones, Ps=Ps,
                                                     backend="serial", **kwargs)
        dAs, dbs, dcs = out[4](*[[c[k] for c in cots] for k in range(3)])
        return [np.concatenate([dA.data, db, dc]) for dA, db, dc in zip(dAs, dbs, dcs)]

    want = gradients(solve_method="Clarabel", refine=False, **TIGHT_CLARABEL)
    rows = []
    for solver in ("Clarabel", "SCS", "auto"):
        fractions = []
        for refine in (False, True):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = gradients(solve_method=solver, refine=refine)
            off = sum(relative_error(g, w) > 1e-6 for g, w in zip(got, want))
            fractions.append(100 * off / len(As))
        flagged = sum(issubclass(w.category, InaccurateDerivativeWarning) for w in caught)
        rows.append(f"| {count} small QPs (batched dense) | {solver} | {len(As)} "
                    f"| {fractions[0]:.1f}% | {fractions[1]:.1f}% | {flagged} warning(s) | |")
    return rows


# -- cost ----------------------------------------------------------------------------------------
def interleaved(fns: dict, repeats: int) -> dict:
    """Median CPU seconds of each function (this process, BLAS on one thread: on a shared
    machine wall-clock differences of a millisecond drown in the other jobs' load), the
    functions taking turns in every repeat."""
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.process_time()
            fn()
            times[key].append(time.process_time() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def cost_row(name: str, repeats: int) -> str:
    p = suite_problems.find_spec(name, quick=False).build()
    x, y, s = diffqcp_np.solve_only(p.A, p.b, p.c, p.cone_dict, P=p.P, solve_method="Clarabel")
    data = check_problem(p.A, p.b, p.c, p.cone_dict, p.P)
    quadratic = QuadraticTerm(data.P, data.n)
    gx = np.random.default_rng(0).standard_normal(p.n)

    def differentiate(borrow: bool = True):
        def build(x, y, s, previous, same_faces):
            return SolutionDerivative(data, x, y, s, quadratic=quadratic, reuse=previous,
                                      same_faces=same_faces and borrow,
                                      A_pattern=None if previous is None else previous.A_pattern)

        out = refine_solution(ResidualMap(data, quadratic.full), x, y, s, build)
        out.derivative.vjp(gx)
        return out

    def plain():  # the derivative at the solver's solution, neither refined nor checked
        derivative = SolutionDerivative(data, x, y, s, quadratic=quadratic)
        derivative.vjp(gx)
        return derivative

    last = differentiate()
    unrefined = plain()
    t = interleaved({"plain": plain, "refined": differentiate,
                     "refactor": partial(differentiate, False),
                     "DT": partial(unrefined.vjp, gx)}, repeats)
    report = last.report
    dt = t["DT"]
    return (f"| {name} | {report.residual_before:.0e} → {report.residual_after:.0e} "
            f"| {report.steps} | {report.factorizations} | {t['plain'] * 1e3:.2f} "
            f"| {dt * 1e3:.3f} | {(t['refined'] - t['plain']) / dt:.1f} "
            f"| {(t['refactor'] - t['plain']) / dt:.1f} |")


def batch_cost_rows(count: int, repeats: int) -> list[str]:
    from diffqcp_np.batch.dense import DenseBatchDerivative
    from diffqcp_np.batch.runner import make_runner
    from diffqcp_np.batch.api import _validate

    As, bs, cs, _, cones, Ps = small_qps(count)
    validated, structure = _validate(As, bs, cs, cones, Ps)
    runner = make_runner("serial", None, 1, "n_jobs", count, None, False)
    gx, none = [np.ones(20)] * count, [None] * count
    rows = []
    for solver in ("Clarabel", "SCS"):
        xs, ys, ss = diffqcp_np.solve_only_batch(As, bs, cs, cones, Ps=Ps, solve_method=solver,
                                                 backend="serial")

        def build(refine, xs=xs, ys=ys, ss=ss):
            return DenseBatchDerivative.build(structure, runner, count, list(range(count)),
                                              validated.stacked, xs, ys, ss, None,
                                              refine=refine)

        built = build(False)
        build(True)
        t = interleaved({"plain": partial(build, False), "refined": partial(build, True),
                         "DT": partial(built.vjp, gx, none, none)}, repeats)
        dt = t["DT"]
        rows.append(f"| {count} small QPs, batched dense ({solver}) | | | "
                    f"| {t['plain'] * 1e3:.2f} | {dt * 1e3:.3f} "
                    f"| {(t['refined'] - t['plain']) / dt:.1f} | |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200,
                        help="problems per family in the accuracy table")
    parser.add_argument("--batch", type=int, default=1000, help="small QPs in the batch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "refinement.md"))
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        accuracy = accuracy_rows(args.problems) + batch_accuracy_rows(args.batch)
        with threadpool_limits(1):
            cost = [cost_row(name, args.repeats) for name in COST_PROBLEMS]
            cost += batch_cost_rows(args.batch, args.repeats)
    lines = [
        "# Solution refinement: accuracy and cost",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other jobs "
        f"(load average {load:.1f} at the start); Python {platform.python_version()}, "
        f"diffqcp_np {diffqcp_np.__version__}. `python benchmarks/bench_refinement.py "
        f"--problems {args.problems} --batch {args.batch} --repeats {args.repeats}`.",
        "",
        "## Gradients off by more than 1e-6 (relative), at the solvers' default tolerances",
        "",
        "Against the gradient at the exact (known) solution; the batch against a tight "
        "Clarabel solution (tolerances 1e-12). *Reported*: problems whose refined "
        "derivative raised InaccurateDerivativeWarning (or NonDifferentiableWarning); "
        "*silent*: off by more than 1e-6 after refinement without a warning.",
        "",
        "| family | solver | problems | off before | off after | reported | silent |",
        "|---|---|---|---|---|---|---|",
        *accuracy,
        "",
        "## Cost: what refinement adds to the derivative (setup + one DT)",
        "",
        "At Clarabel's default-tolerance solution; BLAS on one thread. *Setup + DT*: the "
        "derivative without refinement (nor the check of the solution). *Refined*: "
        "refinement's extra time, check included, in units of one more DT (the target is "
        "at most 1); *every point factored*: the same with no "
        "borrowed factorisations (each accepted step factors its point). Medians of the "
        f"CPU time of {args.repeats} interleaved repeats (wall-clock differences of a "
        "millisecond drown in the other jobs' load here).",
        "",
        "| problem | residual | steps | factorisations | setup + DT (ms) | DT (ms) "
        "| refined (extra DTs) | every point factored (extra DTs) |",
        "|---|---|---|---|---|---|---|---|",
        *cost,
    ]
    write_result(lines, args.out)


if __name__ == "__main__":
    main()
