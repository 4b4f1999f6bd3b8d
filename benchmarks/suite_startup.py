"""Start-up costs of diffqcp_np, each measured in a fresh interpreter.

- ``import diffqcp_np`` (warm Numba cache): median over fresh subprocesses.
- The first call: ``solve_and_derivative`` + one D + one DT on a tiny problem over every
  cone type (:func:`suite_problems.all_cones`), with the Numba cache warm and with an
  empty ``NUMBA_CACHE_DIR`` (everything compiled), beside the same call repeated.

Run as a script (``python suite_startup.py``), this module is the first-call child:
it prints its timings as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_IMPORT = ("import time; t = time.perf_counter(); import diffqcp_np; "
           "print(time.perf_counter() - t)")


def _python(args: list[str], env: dict | None = None) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, cwd=Path(__file__).parent)
    return out.stdout.strip().splitlines()[-1]


def import_time(repeats: int = 5) -> float:
    """Median seconds of ``import diffqcp_np`` in a fresh interpreter."""
    return statistics.median(float(_python(["-c", _IMPORT])) for _ in range(repeats))


def first_call(cache_dir: str | None = None) -> dict:
    """Seconds of the first and of a repeated call in a fresh interpreter.

    Parameters
    ----------
    cache_dir : str, optional
        ``NUMBA_CACHE_DIR`` for the child (an empty folder: a cold cache); the default
        cache otherwise.
    """
    env = {"NUMBA_CACHE_DIR": cache_dir} if cache_dir else None
    return json.loads(_python([Path(__file__).name], env))


def measure(repeats: int = 5) -> dict:
    """Import time, and first-call times with a warm and with a cold Numba cache."""
    first_call()  # fills the default cache if the sources changed
    with tempfile.TemporaryDirectory() as empty:
        cold = first_call(empty)
    return {"import": import_time(repeats), "warm": first_call(), "cold": cold}


def _child() -> None:
    start = time.perf_counter()
    import diffqcp_np

    imported = time.perf_counter()
    from suite_problems import all_cones

    p = all_cones()

    def call():
        x, y, s, D, DT = diffqcp_np.solve_and_derivative(p.A, p.b, p.c, p.cone_dict, P=p.P,
                                                         solve_method="CLARABEL")
        D(p.A, p.b, p.c)
        DT(x, y, s)

    times = []
    for _ in range(2):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    print(json.dumps({"import": imported - start, "first": times[0], "again": times[1]}))


if __name__ == "__main__":
    _child()
