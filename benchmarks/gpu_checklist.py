"""GPU.md §6.5 in one script, for a session that gets a CUDA device (issue 19).

Runs every step of the checklist, each recorded as passed, failed or skipped (with its
reason) in ``OUT/checklist.json`` and ``OUT/checklist.md``; logs of the pytest runs and
the benchmark (``bench_gpu.py``) go under ``OUT`` as well. ``OUT`` is ``--out`` or
``$OUT``.

0. environment: ``nvidia-smi``, CuPy, nvmath-python and cuDSS versions, libcudss found;
1–3. kernel parity, cuSPARSE products, batched ``eigh``:
   ``tests/gpu_host/test_gpu_device_parity.py``;
4. cuDSS on single systems: the reduced M of a set of problems, inertia ``(n, m)``,
   refined residual against K at most 1e-13;
5. reuse: new values factored in place without a new analysis give the right answers;
   plan, factorisation and solve times;
6. uniform batch of 64 and 10^4 members: each member as its single solve (1e-12), time
   per member;
7. batched dense LDLᵀ (``gpu.dense``) of 10^4 systems with N = 60 against NumPy;
8. end to end: the back-end oracle tests on the ``cuda`` back end, and D/DT without
   host synchronisation (``cupyx.allow_synchronize(False)``);
9. ``compute-sanitizer`` memcheck and racecheck of the parity test, where installed;

then the benchmark. ``--stand-in`` runs steps 4–8 (8 without the device's oracle
tests) on NumPy with the stand-ins of cuDSS (the script's own test; no GPU result) and
skips the rest.

Usage::

    python benchmarks/gpu_checklist.py [--out DIR] [--stand-in] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_gpu  # noqa: E402

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from problems import known_solution_problem  # noqa: E402

from diffqcp_np.gpu import engine as engines  # noqa: E402

#: Problems of steps 4, 5 and 8 (cones, n, quadratic).
PROBLEMS = [({"z": 2, "l": 12}, 6, False), ({"z": 2, "l": 10}, 8, True),
            ({"z": 1, "l": 3, "q": [3, 5, 4]}, 7, False), ({"l": 2, "ep": 3, "ed": 2}, 6, True),
            ({"l": 1, "p": [0.3, -0.6, 0.75]}, 5, True), ({"z": 1, "s": [2, 3]}, 5, False)]


class Skip(Exception):
    """A step that cannot run here (the message says why)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder (or $OUT)")
    parser.add_argument("--stand-in", action="store_true",
                        help="steps 4-8 on the NumPy stand-ins; the others skipped")
    parser.add_argument("--quick", action="store_true", help="smaller batches and benchmark")
    parser.add_argument("--no-bench", action="store_true", help="skip the benchmark")
    args = parser.parse_args(argv)
    if args.out is None:
        if not os.environ.get("OUT"):
            parser.error("give --out or set $OUT")
        args.out = Path(os.environ["OUT"])
    return args


def _require_device(args) -> None:
    if args.stand_in:
        raise Skip("stand-in run: needs a CUDA device")


def _pytest(args, name: str, *targets: str, extra: tuple[str, ...] = ()) -> dict:
    log = args.out / f"pytest_{name}.txt"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *extra, *targets], capture_output=True, text=True, cwd=ROOT,
                            timeout=900)
    log.write_text(result.stdout + result.stderr)
    summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    if result.returncode != 0:
        raise AssertionError(f"pytest failed: {summary} (log {log.name})")
    return {"summary": summary, "log": log.name}


def step_environment(args, engine) -> dict:
    env = bench_gpu.environment(engine)
    libraries = _query_files("libcudss*")
    env["libcudss"] = libraries
    if not args.stand_in and not libraries:
        raise AssertionError("no libcudss found")
    return env


def _query_files(pattern: str) -> list[str]:
    import site

    found = []
    for folder in site.getsitepackages() + [site.getusersitepackages()]:
        found += [str(p) for p in Path(folder).glob(f"nvidia/**/{pattern}")]
    return sorted(found)[:10]


def step_kernels(args, engine) -> dict:
    _require_device(args)
    return _pytest(args, "parity", "tests/gpu_host/test_gpu_device_parity.py")


def _derivatives(engine, problems):
    from diffqcp_np.gpu.api import prepare
    from diffqcp_np.gpu.derivative import DeviceBatchDerivative

    for cones, n, quadratic in problems:
        prob = known_solution_problem(cones, n, seed=0, quadratic=quadratic)
        with engines.use(engine):
            structure, A, P, _, _ = prepare(prob.A, cones, prob.P, engine)
        point = [engine.asarray(v)[None, :] for v in (prob.x, prob.y, prob.s)]
        yield prob, DeviceBatchDerivative(structure, engine, A[None, :], *point,
                                          P_values=None if P is None else P[None, :])


def step_single(args, engine) -> dict:
    """Inertia (n, m) of the factored M and refined residuals against K."""
    out = []
    for prob, batch in _derivatives(engine, PROBLEMS):
        inertia = batch._slot.solver.inertia()
        inertia = None if inertia is None else engine.to_host(inertia)[0].tolist()
        rhs = engine.asarray(np.random.default_rng(1).standard_normal((1, prob.n + prob.m)))
        residuals = []
        for transpose in (False, True):
            batch.solve(rhs, transpose)
            residuals.append(float(engine.to_host(batch.last_residual)[0]))
        out.append({"cones": prob.cone_dict, "path": str(batch.paths[0]), "inertia": inertia,
                    "expected_inertia": [batch.n, batch.m], "residuals": residuals})
        if max(residuals) > 1e-13:
            raise AssertionError(f"residual {max(residuals):.1e} > 1e-13: {out[-1]}")
        if batch.paths[0].startswith("ldl") and inertia not in (None, [batch.n, batch.m]):
            raise AssertionError(f"inertia {inertia}: {out[-1]}")
    return {"problems": out}


def _timed(fn: Callable[[], Any], engine) -> float:
    start = time.perf_counter()
    fn()
    bench_gpu.synchronize(engine)
    return time.perf_counter() - start


def _m_values(prob, engine):
    """M's pattern and regularised values of a problem (one member)."""
    _, batch = next(_derivatives(engine, [(prob.cone_dict, prob.n, prob.P is not None)]))
    return batch.structure, batch._factored


def step_reuse(args, engine) -> dict:
    """Refactoring new values in place (no new analysis) answers as a solver planned
    afresh for them (M's static regularisation makes its solves accurate only to about
    1e-7 before refinement, so the comparison is with the same factorisation)."""
    prob = known_solution_problem({"z": 2, "l": 12, "q": [3, 4]}, 8, seed=1)
    structure, values = _m_values(prob, engine)
    M = structure.M
    times = {}
    solver = None

    def plan():
        nonlocal solver
        solver = engine.symmetric(M.indptr, M.indices, structure.size, 1)

    times["plan"] = _timed(plan, engine)
    times["factorize"] = _timed(lambda: solver.factorize(values), engine)
    rhs = engine.asarray(np.random.default_rng(3).standard_normal((1, structure.size)))
    times["solve"] = _timed(lambda: solver.solve(rhs), engine)
    errors = []
    for scale in (1.0, 1.7):
        new = values * scale
        solver.factorize(new)  # in place, same analysis
        z = engine.to_host(solver.solve(rhs))[0]
        fresh = engine.symmetric(M.indptr, M.indices, structure.size, 1)  # a new analysis
        fresh.factorize(new)
        reference = engine.to_host(fresh.solve(rhs))[0]
        errors.append(float(np.linalg.norm(z - reference) / np.linalg.norm(reference)))
    if max(errors) > 1e-12:
        raise AssertionError(f"refactored in place: {max(errors):.1e} from a fresh solver")
    return {"times_s": times, "difference_from_fresh": errors}


def step_uniform_batch(args, engine) -> dict:
    """Members of a uniform batch equal their single solves."""
    prob = known_solution_problem({"z": 2, "l": 16, "q": [4]}, 8, seed=4)
    structure, values = _m_values(prob, engine)
    M, xp = structure.M, engine.xp
    out = {}
    sizes = (8, 64) if args.stand_in or args.quick else (64, 10_000)
    rng = np.random.default_rng(5)
    for batch in sizes:
        scales = engine.asarray(1.0 + 0.1 * rng.random((batch, 1)))
        stacked = values * scales
        rhs = engine.asarray(rng.standard_normal((batch, structure.size)))
        solver = engine.symmetric(M.indptr, M.indices, structure.size, batch)
        seconds = _timed(lambda s=solver, v=stacked: s.factorize(v), engine)
        z = solver.solve(rhs)
        single = engine.symmetric(M.indptr, M.indices, structure.size, 1)
        worst = 0.0
        for k in list(range(min(batch, 64))) + [batch - 1]:
            single.factorize(stacked[k:k + 1])
            reference = single.solve(rhs[k:k + 1])
            difference = float(engine.to_host(xp.max(xp.abs(z[k] - reference[0]))))
            worst = max(worst, difference / max(float(engine.to_host(
                xp.max(xp.abs(reference)))), 1e-300))
        out[str(batch)] = {"factorize_s_per_member": seconds / batch, "worst_relative": worst}
        if worst > 1e-12:
            raise AssertionError(f"batch {batch}: a member differs by {worst:.1e}")
    return out


def step_dense(args, engine) -> dict:
    from diffqcp_np.gpu import dense

    rng = np.random.default_rng(6)
    count, n, k = (200 if args.stand_in else 1000 if args.quick else 10_000), 30, 30
    G = rng.standard_normal((count, n + k, n + k))
    M = 0.5 * (G + np.swapaxes(G, 1, 2))
    M[:, :n, :n] += (n + k) * np.eye(n)
    M[:, n:, n:] -= (n + k) * np.eye(k)
    rhs = rng.standard_normal((count, n + k))
    Md, rd = engine.asarray(M), engine.asarray(rhs)
    factors = None

    def factor():
        nonlocal factors
        factors = dense.ldlt(Md)

    seconds = _timed(factor, engine)
    z = engine.to_host(dense.ldlt_solve(*factors, rd))
    error = float(np.max(np.abs(z - np.linalg.solve(M, rhs[..., None])[..., 0])))
    if error > 1e-10:
        raise AssertionError(f"batched dense LDL' off by {error:.1e}")
    return {"systems": count, "N": n + k, "factor_s": seconds, "max_error": error}


def step_end_to_end(args, engine) -> dict:
    out = {}
    if not args.stand_in:
        out["oracle_tests"] = _pytest(args, "backends", "tests/test_derivative.py",
                                      "tests/gpu_host/test_gpu_orchestration.py",
                                      extra=("-k", "cuda or orchestration"))
    prob = known_solution_problem({"z": 1, "l": 10, "q": [3]}, 6, seed=7)
    import diffqcp_np

    with engines.use(engine):
        point = [engine.asarray(v) for v in (prob.b, prob.c, prob.x, prob.y, prob.s)]
        D, DT = diffqcp_np.derivative(prob.A, *point[:2], prob.cone_dict, *point[2:],
                                      P=prob.P, device="cuda")
    g = engine.asarray(np.ones(prob.n))
    db = engine.asarray(np.ones(prob.m))
    if engine.name == "cuda":
        import cupyx

        with cupyx.allow_synchronize(False):
            D(None, db, None)
            DT(g, None, None)
        out["no_synchronisation"] = "D and DT ran under cupyx.allow_synchronize(False)"
    else:
        D(None, db, None)
        DT(g, None, None)
        out["no_synchronisation"] = "not checked (stand-in)"
    return out


def step_sanitizer(args, engine) -> dict:
    _require_device(args)
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        raise Skip("compute-sanitizer not installed")
    out = {}
    for check in ("memcheck", "racecheck"):
        result = subprocess.run([tool, "--tool", check, "--error-exitcode", "3",
                                 sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                 "tests/gpu_host/test_gpu_device_parity.py"],
                                capture_output=True, text=True, cwd=ROOT, timeout=900)
        (args.out / f"sanitizer_{check}.txt").write_text(result.stdout + result.stderr)
        out[check] = result.returncode
        if result.returncode != 0:
            raise AssertionError(f"{check} exit code {result.returncode}")
    return out


STEPS: list[tuple[str, Callable]] = [
    ("0 environment", step_environment), ("1-3 kernels, cuSPARSE, eigh", step_kernels),
    ("4 cuDSS single systems", step_single), ("5 reuse of the analysis", step_reuse),
    ("6 uniform batch", step_uniform_batch), ("7 batched dense", step_dense),
    ("8 end to end", step_end_to_end), ("9 compute-sanitizer", step_sanitizer),
]


def run_step(function: Callable, args, engine) -> dict:
    start = time.perf_counter()
    try:
        record = {"status": "passed", "details": function(args, engine)}
    except Skip as reason:
        record = {"status": "skipped", "details": str(reason)}
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, the run goes on
        record = {"status": "failed", "details": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()}
    record["seconds"] = time.perf_counter() - start
    return record


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    engine = bench_gpu.stand_in_engine() if args.stand_in else engines.device_engine()
    results = {name: run_step(function, args, engine) for name, function in STEPS}
    if not args.no_bench:
        bench_args = ["--out", str(args.out)] + (["--quick"] if args.quick else []) + (
            ["--stand-in"] if args.stand_in else [])
        results["benchmark"] = run_step(lambda a, e: bench_gpu.report(bench_gpu.main(
            bench_args)), args, engine)
    (args.out / "checklist.json").write_text(json.dumps(results, indent=2, default=str))
    lines = ["# GPU checklist (GPU.md 6.5)", "", "| step | status | seconds | details |",
             "|---|---|---|---|"]
    for name, record in results.items():
        details = str(record["details"]).replace("\n", " ").replace("|", "/")[:300]
        lines.append(f"| {name} | {record['status']} | {record['seconds']:.1f} | {details} |")
    (args.out / "checklist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
