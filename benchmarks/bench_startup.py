"""Benchmark: start-up costs of diffqcp_np, each in a fresh interpreter.

- ``import diffqcp_np``, and the import of its whole API (every public name resolved:
  NumPy, SciPy, Numba, the solvers), with the number of Numba compilations during each
  (there should be none);
- the first ``solve_and_derivative`` + one ``D`` + one ``DT`` on the demo's small conic
  QP (``python -m diffqcp_np``: zero, orthant and second-order cones, n = 8, m = 14),
  with an empty Numba cache (a fresh install: everything the call needs is compiled)
  and with the cache that ``python -m diffqcp_np --warm-up`` leaves, beside the same call
  repeated in the process;
- the same first call on a larger problem of the same kind (n = 40, m = 52: K has more
  than ``SMALL_SYSTEM_N`` rows, so its derivative takes the compiled LDLᵀ path), with an
  empty cache;
- ``python -m diffqcp_np --warm-up`` itself with an empty cache.

Every cold run gets its own empty ``NUMBA_CACHE_DIR``. Wall time and user CPU time are
both recorded (the child's own ``getrusage``): on a shared machine the wall time also
measures the other processes, the CPU time much less so. Medians over the runs.

Usage::

    python benchmarks/bench_startup.py [--repeats 5] [--cold-repeats 3] [--out FILE]

Run with ``--child CASE`` it is one measured child and prints its figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, write_result

HERE = Path(__file__).resolve().parent


# -- the children -------------------------------------------------------------------------
#: ``demo_problem``'s sizes for the larger first call.
LARGE = dict(n=40, k=10)


class _Clock:
    """Wall and user CPU seconds of a block, and the Numba compilations inside it."""

    def __init__(self) -> None:
        self.compiled = 0

    def __enter__(self) -> _Clock:
        self._wall = time.perf_counter()
        self._user = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        self.compiled = 0
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.user = resource.getrusage(resource.RUSAGE_SELF).ru_utime - self._user

    def figures(self) -> dict:
        return {"wall": self.wall, "user": self.user, "compiled": self.compiled}


def _count_compilations(clocks: list[_Clock]) -> None:
    """Count top-level Numba compilations into the innermost open clock."""
    from numba.core import event

    class Listener(event.Listener):
        depth = 0

        def on_start(self, ev):
            if self.depth == 0 and clocks:
                clocks[-1].compiled += 1
            self.depth += 1

        def on_end(self, ev):
            self.depth -= 1

    event.register("numba:compile", Listener())


def _timed(clocks: list[_Clock], fn) -> dict:
    with _Clock() as clock:
        clocks.append(clock)
        fn()
        clocks.pop()
    return clock.figures()


def _child(case: str) -> dict:
    out = {}
    with _Clock() as clock:
        import diffqcp_np
    out["import"] = clock.figures()
    with _Clock() as clock:
        for name in diffqcp_np.__all__:
            getattr(diffqcp_np, name)
    out["api"] = clock.figures()
    # Kernels compiled (or loaded from the cache) by the imports: none expected.
    from diffqcp_np._warm_up import kernels

    compiled_at_import = sum(1 for kernel in kernels().values() if kernel.signatures)
    out["import"]["compiled"] = out["api"]["compiled"] = compiled_at_import
    clocks: list[_Clock] = []
    _count_compilations(clocks)
    if case in ("first", "first_large"):
        from diffqcp_np.__main__ import TIGHT, demo_problem

        A, b, c, cone_dict, P = demo_problem(**LARGE if case == "first_large" else {})

        def call():
            x, y, s, D, DT = diffqcp_np.solve_and_derivative(A, b, c, cone_dict, P=P, **TIGHT)
            D(None, b, c)
            DT(x, None, None)

        out["first"] = _timed(clocks, call)
        out["again"] = _timed(clocks, call)
    elif case == "warm_up":
        report = {}
        out["warm_up"] = _timed(clocks, lambda: report.update(diffqcp_np.warm_up(out=None)))
        out["warm_up"].update(kernels=report["compiled"], missing=report["missing"])
    return out


# -- the parent ---------------------------------------------------------------------------
def _run_child(case: str, cache_dir: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", case],
                            capture_output=True, text=True, check=True, env=env, cwd=HERE)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], phase: str) -> dict:
    return {key: statistics.median(run[phase][key] for run in runs)
            for key in ("wall", "user", "compiled")}


def measure(repeats: int = 5, cold_repeats: int = 3) -> dict:
    """Every figure of the module docstring, as medians (seconds; ``compiled`` counts
    top-level Numba compilations)."""
    with tempfile.TemporaryDirectory() as warm_cache:
        warm_up = [_run_child("warm_up", warm_cache)]  # fills warm_cache
        for _ in range(cold_repeats - 1):
            with tempfile.TemporaryDirectory() as empty:
                warm_up.append(_run_child("warm_up", empty))
        warm = [_run_child("first", warm_cache) for _ in range(repeats)]
    cold, cold_large = [], []
    for _ in range(cold_repeats):
        for case, runs in (("first", cold), ("first_large", cold_large)):
            with tempfile.TemporaryDirectory() as empty:
                runs.append(_run_child(case, empty))
    return {
        "import": _median(warm, "import"),
        "api": _median(warm, "api"),
        "warm": {phase: _median(warm, phase) for phase in ("first", "again")},
        "cold": {phase: _median(cold, phase) for phase in ("first", "again")},
        "cold_large": {phase: _median(cold_large, phase) for phase in ("first", "again")},
        "warm_up": {**_median(warm_up, "warm_up"),
                    "kernels": warm_up[0]["warm_up"]["kernels"],
                    "missing": warm_up[0]["warm_up"]["missing"]},
        "runs": {"repeats": repeats, "cold_repeats": cold_repeats},
    }


def _row(name: str, figures: dict) -> str:
    return (f"| {name} | {figures['wall']:.3g} | {figures['user']:.3g} "
            f"| {figures['compiled']:.0f} |")


def table(result: dict) -> list[str]:
    """The figures as a Markdown table, and the warm-up's coverage."""
    warm_up = result["warm_up"]
    return [
        "| step | wall (s) | user CPU (s) | Numba kernels compiled |",
        "|---|---|---|---|",
        _row("`import diffqcp_np`", result["import"]),
        _row("every public name resolved (NumPy, SciPy, Numba, solvers imported)",
             result["api"]),
        _row("first `solve_and_derivative` + `D` + `DT`, empty cache (fresh install)",
             result["cold"]["first"]),
        _row("the same call again, same process", result["cold"]["again"]),
        _row(f"first call on a larger QP (n = {LARGE['n']}, m = {LARGE['n'] + LARGE['k'] + 2}: "
             "the compiled LDLᵀ path), empty cache", result["cold_large"]["first"]),
        _row("first call with the warm-up's cache", result["warm"]["first"]),
        _row("`python -m diffqcp_np --warm-up`, empty cache", warm_up),
        "",
        f"The warm-up compiled {warm_up['kernels']} kernels; kernels it did not reach: "
        f"{', '.join(warm_up['missing']) or 'none'}.",
    ]


def markdown(result: dict, load: tuple[float, float]) -> list[str]:
    runs = result["runs"]
    return [
        "# Start-up costs",
        "",
        f"Machine: {os.cpu_count()} cores, shared with other processes: load average "
        f"{load[0]:.1f} when the run started, {load[1]:.1f} when it ended. Python "
        f"{sys.version.split()[0]}. Command: `python benchmarks/bench_startup.py`.",
        "",
        f"Medians over {runs['repeats']} fresh interpreters with the cache that the warm-up "
        f"leaves, and over {runs['cold_repeats']} with an empty `NUMBA_CACHE_DIR` each (the "
        "warm-up: the same number of runs).",
        "",
        *table(result),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "startup.md"))
    parser.add_argument("--child", choices=["first", "first_large", "warm_up"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    before = os.getloadavg()[0]
    result = measure(args.repeats, args.cold_repeats)
    after = os.getloadavg()[0]
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
    write_result(markdown(result, (before, after)), args.out)


if __name__ == "__main__":
    main()
