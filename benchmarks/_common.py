"""Helpers shared by the benchmark scripts: timing, result files, the tests' oracles."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"
#: The tests' folder: its ``naive`` module holds the dense oracles that the benchmarks
#: share with the tests (on the import path once this module is imported).
TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_result(lines: list[str], out: str) -> None:
    """Print a Markdown table and write it to ``out``."""
    text = "\n".join(lines) + "\n"
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
