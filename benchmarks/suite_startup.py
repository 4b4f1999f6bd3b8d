"""Start-up costs for the suite's report: :mod:`bench_startup`'s figures, fewer runs."""

from __future__ import annotations

import bench_startup


def measure(repeats: int = 3, cold_repeats: int = 1) -> dict:
    """See :func:`bench_startup.measure`."""
    return bench_startup.measure(repeats, cold_repeats)
