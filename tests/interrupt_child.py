"""A process that solves long problems and reports how each ends when it gets SIGINT.

``python interrupt_child.py SCENARIO...``: for each scenario the problems are built,
``ready NAME`` is printed, the solve starts (the parent sends SIGINT after a while),
and ``done NAME OUTCOME SECONDS THREADS_SECONDS DONE_COUNT`` is printed: how the call
ended (``KeyboardInterrupt``, ``returned`` or the exception), the seconds from the call
to its end, the seconds until this process is back to its threads of before, and the
problems a batch had finished. Every solve would run for minutes if nothing stopped it
(unreachable tolerances, iteration limits in the thousands).
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp

from diffqcp_np import solve_only, solve_only_batch

SCS = dict(solve_method="SCS", eps_abs=1e-15, eps_rel=1e-15, max_iters=10**8)
CLARABEL = dict(solve_method="Clarabel", max_iter=10**4, tol_gap_abs=1e-15,
                tol_gap_rel=1e-15, tol_feas=1e-15)
ECOS = dict(solve_method="ECOS", max_iters=10**4, abstol=1e-15, reltol=1e-15, feastol=1e-15)


def lp(m: int, seed: int) -> tuple:
    """A feasible, bounded sparse LP with ``m`` inequality rows and ``m / 2`` variables."""
    rng = np.random.default_rng(seed)
    n = m // 2
    A = (sp.random(m, n, density=3.0 / n, random_state=rng)
         + sp.vstack([sp.eye(n), sp.csc_matrix((m - n, n))])).tocsc()
    b = A @ rng.standard_normal(n) + np.abs(rng.standard_normal(m))
    c = -A.T @ np.abs(rng.standard_normal(m))
    return A, b, c, {"l": m}


def lps(m: int, count: int) -> list:
    return [list(column) for column in zip(*[lp(m, seed) for seed in range(count)])]


class Counter:
    """A batch progress callback that remembers how many problems finished."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        self.done = done


def scenarios(counter: Counter) -> dict:
    """Name -> (data, call)."""
    def batch(backend, settings, **options):
        return lambda data: solve_only_batch(*data, backend=backend, progress=counter,
                                             **options, **settings)

    return {
        "scs": (lp(4000, 0), lambda data: solve_only(*data, **SCS)),
        "ecos": (lp(1500, 0), lambda data: solve_only(*data, **ECOS)),
        "serial-clarabel": (lps(2500, 6), batch("serial", CLARABEL)),
        "threads-scs": (lps(4000, 4), batch("threads", SCS, n_jobs_forward=2)),
        "threads-clarabel": (lps(6000, 6), batch("threads", CLARABEL, n_jobs_forward=2)),
        "threads-ecos": (lps(1500, 4), batch("threads", ECOS, n_jobs_forward=2)),
        "processes-scs": (lps(4000, 4), batch("processes", SCS, n_jobs_forward=2)),
        # Ctrl-C must still reach Python after ECOS solves overlapped on threads
        "after-threads-ecos": (lps(200, 24), lambda data: (
            solve_only_batch(*data, backend="threads", n_jobs_forward=2, solve_method="ECOS"),
            print("ready-again", flush=True), time.sleep(600))),
    }


def main(names: list[str]) -> None:
    # Ctrl-C as in a terminal: Python installs its handler at start-up only where SIGINT
    # is not ignored, and a process started as a background job (a CI runner, `cmd &`)
    # inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    counter = Counter()
    table = scenarios(counter)
    # start the process pool now: an interrupt while it starts is another matter
    solve_only_batch(*lps(40, 2), backend="processes", n_jobs_forward=2)
    baseline = threading.active_count()
    for name in names:
        data, call = table[name]
        counter.done = 0
        print("ready", name, flush=True)
        start = time.monotonic()
        try:
            call(data)
            outcome = "returned"
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt"
        except Exception as err:  # noqa: BLE001 - reported to the parent
            outcome = type(err).__name__
        elapsed = time.monotonic() - start
        start = time.monotonic()
        while threading.active_count() > baseline and time.monotonic() - start < 60:
            time.sleep(0.02)
        print("done", name, outcome, f"{elapsed:.2f}", f"{time.monotonic() - start:.2f}",
              counter.done, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
