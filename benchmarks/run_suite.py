"""Benchmark suite: diffqcp_np against diffcp 1.1.9 on every problem family, in one run.

For each problem: Clarabel forward time, derivative setup (factorisation), one D and
one DT, their relative errors against an independent reference (dense solve of a
naively built derivative system, or finite differences of re-solves for large
problems), and diffcp's lsqr and dense DT beside them, with speed-ups. Also a batch of
small QPs, ``import diffqcp_np`` time and the first call's compile time. Writes
``results/suite.md``, ``results/suite.json`` and PNG plots into ``results/``.

Usage::

    python benchmarks/run_suite.py [--quick] [--only FAMILY] [--out-dir DIR]

``--quick`` runs small sizes (a smoke run, under 2 minutes) and ``--only`` one family
(``lsq_simplex``, ``sparse_lp``, ``socp``, ``sdp``, ``exp``, ``power``, ``qp``,
``batch`` or ``startup``); both write files named ``suite_quick.*`` or
``suite_<family>.*`` so that the full results stay in place.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from _common import RESULTS, write_result
from suite_problems import FAMILIES, specs
from suite_report import markdown, plots
from suite_runner import FULL, QUICK, Settings, Worker, measure_spec

EXTRA_FAMILIES = ("batch", "startup")
PACKAGES = ("numpy", "scipy", "numba", "clarabel", "scs", "cvxpy", "diffcp", "diffqcp_np")


def environment() -> list[str]:
    """Machine, Python, package versions and the git commit, as report lines."""
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    return [
        f"Machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cores. "
        f"Python {platform.python_version()}.",
        "",
        f"Packages: {versions}.",
        "",
        f"Commit: {_commit()}.",
    ]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes" if dirty.strip() else "")


def settings_text(settings: Settings) -> str:
    """How many repeats and what time limits, in words."""
    return (f"Timings: medians of up to {settings.max_repeats} repeats within about "
            f"{settings.budget:g} s per quantity (one run where a call takes longer than a "
            f"third of that); each task is abandoned after {settings.timeout:g} s.")


def run_problems(families: list[str], settings: Settings) -> list[dict]:
    """Measure every problem of ``families`` in one worker process."""
    names = [spec.name for family in families for spec in specs(family, settings.quick)]
    if not names:
        return []
    worker = Worker(settings)
    rows = []
    for name in names:
        start = time.perf_counter()
        rows.append(measure_spec(worker, name))
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    worker.close()
    return rows


def run_batch(settings: Settings) -> dict:
    """The batch family in its own worker."""
    worker = Worker(settings)
    result = worker.call(("batch",))
    worker.close()
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", choices=[*FAMILIES, *EXTRA_FAMILIES],
                        help="run one family")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    settings = QUICK if args.quick else FULL
    selected = [args.only] if args.only else [*FAMILIES, *EXTRA_FAMILIES]
    stem = "suite" + (f"_{args.only}" if args.only else "") + ("_quick" if args.quick else "")
    start = time.perf_counter()

    startup = None
    if "startup" in selected:
        import suite_startup

        startup = suite_startup.measure()
    batch = run_batch(settings) if "batch" in selected else None
    rows = run_problems([f for f in selected if f in FAMILIES], settings)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    raw = {"rows": rows, "batch": batch, "startup": startup}
    (args.out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=1))
    figures = plots(rows, args.out_dir, stem) if rows else []
    elapsed = time.perf_counter() - start
    command = " ".join(["python benchmarks/run_suite.py", *sys.argv[1:]])
    header = environment() + ["", f"Command: `{command}`; the run took {elapsed / 60:.1f} min."]
    write_result(markdown(rows, batch, startup, header, figures, settings_text(settings))
                 .splitlines(), str(args.out_dir / f"{stem}.md"))


if __name__ == "__main__":
    main()
