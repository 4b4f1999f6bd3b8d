"""Measurements of the benchmark suite, run in a worker process under time limits.

The parent hands tasks to a :class:`Worker`. A task that runs past its limit (or
crashes, e.g. out of memory) gets its worker killed and restarted and comes back as
``{"skipped": reason}``; any other result is a dict of numbers. The worker keeps the
current problem (data, solution, reference) between the tasks of one spec, and every
timing uses only the public API of ``diffqcp_np`` and ``diffcp``.

Timings are medians (:func:`adaptive_median`) with JIT warm-up excluded: the worker
runs every code path once on a tiny problem when it starts.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

import diffqcp_np
from diffqcp_np.derivative._ldl import SYMBOLIC_CACHE
from _common import median_time
from suite_problems import Problem, all_cones, find_spec, socp_blocks
from suite_reference import (
    TIGHT,
    DenseReference,
    FiniteDifferenceReference,
    random_direction,
    relative_error,
)

#: Largest N = n + m with a dense reference; above it a sparse LU reference where every
#: cone block is small, else a finite-difference reference.
DENSE_REFERENCE_MAX_N = 6500
#: Largest cone block (SOC dimension, PSD side) of a sparse LU reference.
SPARSE_REFERENCE_MAX_BLOCK = 100
#: Largest N at which diffcp's modes are run.
DIFFCP_MAX_N = {"lsqr": 50_000, "dense": 6000}
#: diffcp 1.1.9's modes, as compared.
DIFFCP_MODES = ("lsqr", "dense")
#: Problems of the batch family (n = 20, m = 40 each).
BATCH_SIZE = {True: 100, False: 1000}


@dataclass(frozen=True)
class Settings:
    """Repeats and time limits of a run.

    Attributes
    ----------
    quick : bool
        Quick sizes (the smoke run).
    max_repeats : int
        Most repeats of one timed quantity.
    budget : float
        Seconds to spend on one timed quantity, which sets its number of repeats.
    timeout : float
        Seconds after which a task is abandoned.
    """

    quick: bool
    max_repeats: int
    budget: float
    timeout: float


FULL = Settings(quick=False, max_repeats=7, budget=3.0, timeout=240.0)
QUICK = Settings(quick=True, max_repeats=3, budget=0.5, timeout=45.0)


def adaptive_median(fn: Callable[[], object], settings: Settings) -> float:
    """Median seconds of ``fn()``: the first call alone if it eats a third of the budget.

    Otherwise the first call is discarded and the median of as many calls as fit in
    ``settings.budget`` (at most ``settings.max_repeats``) is returned.
    """
    first = median_time(fn, 1)
    repeats = min(settings.max_repeats, int(settings.budget / max(first, 1e-9)))
    return first if repeats < 3 else median_time(fn, repeats)


def cone_summary(cone_dict: dict) -> str:
    """Short description of the cones, e.g. ``z 1, l 1000`` or ``q 3×(500–2000)``."""
    parts = []
    for key, value in cone_dict.items():
        if not isinstance(value, list):
            parts.append(f"{key} {value}")
        elif key == "p" or min(value) == max(value):
            parts.append(f"{key} {len(value)}" + ("" if key == "p" else f"×{value[0]}"))
        else:
            parts.append(f"{key} {len(value)}×({min(value)}–{max(value)})")
    return ", ".join(parts)


# -- inside the worker ---------------------------------------------------------------------
class ProblemState:
    """A problem with its random direction, solution and reference, built lazily.

    Parameters
    ----------
    problem : Problem
    """

    def __init__(self, problem: Problem):
        self.problem = problem
        self.direction = random_direction(problem)
        self.reference: DenseReference | FiniteDifferenceReference | None = None
        self._solution: tuple | None = None

    @property
    def solution(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, s)`` from Clarabel with the suite's settings."""
        if self._solution is None:
            p = self.problem
            self._solution = diffqcp_np.solve_only(p.A, p.b, p.c, p.cone_dict, P=p.P,
                                                   solve_method="CLARABEL", **TIGHT)
        return self._solution

    def build_reference(self) -> None:
        """Dense reference where N is small enough, sparse LU where every cone block is
        small, finite differences otherwise."""
        cones = self.problem.cone_dict
        largest_block = max([0, *cones.get("q", []), *cones.get("s", [])])
        if self.problem.N <= DENSE_REFERENCE_MAX_N:
            self.reference = DenseReference(self.problem, *self.solution, self.direction)
        elif largest_block <= SPARSE_REFERENCE_MAX_BLOCK:
            self.reference = DenseReference(self.problem, *self.solution, self.direction,
                                            sparse=True)
        else:
            self.reference = FiniteDifferenceReference(self.problem, self.direction)


_STATE: dict[str, ProblemState] = {}


def _state(name: str, settings: Settings) -> ProblemState:
    if name not in _STATE:
        _STATE.clear()
        _STATE[name] = ProblemState(find_spec(name, settings.quick).build())
    return _STATE[name]


def describe(state: ProblemState) -> dict:
    """Sizes, cones and formulation of the problem."""
    p = state.problem
    return {"n": p.n, "m": p.m, "N": p.N, "nnz_A": int(p.A.nnz),
            "nnz_P": 0 if p.P is None else int(p.P.nnz), "cones": cone_summary(p.cone_dict),
            "power": "p" in p.cone_dict, "note": p.note}


def _warning_notes(caught: list) -> list[str]:
    return sorted({f"{w.category.__name__}: {str(w.message)[:90]}" for w in caught})


def measure_reference(state: ProblemState) -> dict:
    """Build the reference; returns its kind, the seconds it took and solver warnings."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state.build_reference()
    return {"kind": state.reference.kind, "seconds": time.perf_counter() - start,
            "notes": _warning_notes(caught)}


def measure_ours(state: ProblemState, settings: Settings) -> dict:
    """Forward (Clarabel), derivative setup, D and DT of diffqcp_np, and their errors."""
    p, d = state.problem, state.direction
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forward = adaptive_median(lambda: diffqcp_np.solve_only(
            p.A, p.b, p.c, p.cone_dict, P=p.P, solve_method="CLARABEL", **TIGHT), settings)
        x, y, s = state.solution

        def known_pattern_setup():
            return diffqcp_np.derivative(p.A, p.b, p.c, p.cone_dict, x, y, s, P=p.P)

        def setup():  # a pattern never factored before: the ordering is computed
            SYMBOLIC_CACHE.clear()
            return known_pattern_setup()

        out = {"forward": forward, "setup": adaptive_median(setup, settings),
               "setup_dt": adaptive_median(lambda: setup()[1](d.gx, d.gy, d.gs), settings)}
        # setup() left the pattern's analysis cached
        out["setup_dt_known"] = adaptive_median(
            lambda: known_pattern_setup()[1](d.gx, d.gy, d.gs), settings)
        D, DT = setup()
        out["d"] = adaptive_median(lambda: D(d.dA, d.db, d.dc), settings)
        out["dt"] = adaptive_median(lambda: DT(d.gx, d.gy, d.gs), settings)
        jvp = np.concatenate(D(d.dA, d.db, d.dc))
        vjp = DT(d.gx, d.gy, d.gs)
    out["notes"] = _warning_notes(caught)
    if state.reference is not None:
        out["err_d"] = state.reference.jvp_error(jvp)
        out["err_dt"] = state.reference.vjp_error(*vjp)
    return out


def diffcp_solver(cone_dict: dict) -> dict:
    """diffcp's forward solver: Clarabel as ours, but SCS (eps 1e-9) with PSD cones.

    diffcp 1.1.9 permutes ``y`` and ``s`` of PSD blocks wrongly after Clarabel (its
    Clarabel solution differs from SCS's and ours by 100%), so it gets SCS there.
    """
    if cone_dict.get("s"):
        return {"solve_method": "SCS", "eps": 1e-9, "max_iters": 100_000}
    return {"solve_method": "Clarabel", **TIGHT}


def measure_diffcp(state: ProblemState, mode: str, settings: Settings) -> dict:
    """diffcp 1.1.9 (``mode``): forward + setup, one DT and DT's error.

    Against a dense reference, the error is taken at diffcp's own solution (a new
    reference is built there if it differs from ours by more than 1e-7).
    """
    import diffcp

    p, d = state.problem, state.direction
    solver = diffcp_solver(p.cone_dict)

    def solve():
        return diffcp.solve_and_derivative(p.A.copy(), p.b, p.c, p.cone_dict, mode=mode,
                                           **solver)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = {"solver": solver["solve_method"],
               "forward_setup": adaptive_median(solve, settings)}
        x, y, s, _, DT = solve()
        out["dt"] = adaptive_median(lambda: DT(d.gx, d.gy, d.gs), settings)
        dA, db, dc = DT(d.gx, d.gy, d.gs)
    out["notes"] = _warning_notes(caught)
    reference = state.reference
    if isinstance(reference, DenseReference):
        ours = np.concatenate(state.solution)
        if relative_error(np.concatenate([x, y, s]), ours) > 1e-7:
            reference = DenseReference(p, x, y, s, d, sparse=reference.kind == "sparse LU")
    if reference is not None:
        out["err_dt"] = reference.vjp_error(dA, db, dc)
    return out


def _time_batch(run: Callable[[], tuple], cotangents: tuple, settings: Settings) -> dict:
    """Seconds of ``run()`` plus one DT_batch, and of one DT_batch alone."""
    DT_batch = run()[4]
    return {"total": adaptive_median(lambda: run()[4](*cotangents), settings),
            "dt": adaptive_median(lambda: DT_batch(*cotangents), settings)}


def measure_batch(settings: Settings) -> dict:
    """Batch of small same-structure QPs (``bench_batch.small_qps``), forward + DT_batch.

    diffqcp_np gets the QPs (with P) and diffcp the LPs with the same A, b and cones
    (diffcp 1.1.9's lsqr mode takes no P); both solve with Clarabel.
    """
    import diffcp
    from bench_batch import small_qps

    As, bs, cs, cs_lp, cones, Ps = small_qps(BATCH_SIZE[settings.quick])
    rng = np.random.default_rng(1)
    zeros = [np.zeros(40) for _ in As]
    cotangents = ([rng.standard_normal(20) for _ in As], zeros, zeros)
    jobs = {}
    for n_jobs in (1, 2):
        ours = partial(diffqcp_np.solve_and_derivative_batch, As, bs, cs, cones,
                       n_jobs_forward=n_jobs, n_jobs_backward=n_jobs, Ps=Ps,
                       solve_method="CLARABEL")
        theirs = partial(diffcp.solve_and_derivative_batch, As, bs, cs_lp, cones,
                         n_jobs_forward=n_jobs, n_jobs_backward=n_jobs,
                         solve_method="Clarabel")
        jobs[n_jobs] = {"ours": _time_batch(ours, cotangents, settings),
                        "diffcp": _time_batch(theirs, cotangents, settings)}
    return {"problems": len(As), "jobs": jobs}


def warm_up() -> dict:
    """Run every code path once on tiny problems (JIT compilation, imports)."""
    import diffcp

    p = all_cones()
    x, y, s, D, DT = diffqcp_np.solve_and_derivative(p.A, p.b, p.c, p.cone_dict, P=p.P,
                                                     solve_method="CLARABEL")
    D(p.A, p.b, p.c)
    DT(x, y, s)
    small = socp_blocks(4, [3, 3, 3])
    for mode in DIFFCP_MODES:
        out = diffcp.solve_and_derivative(small.A.copy(), small.b, small.c, small.cone_dict,
                                          mode=mode, solve_method="Clarabel")
        out[4](out[0], out[1], out[2])
    return {}


def run_task(task: tuple, settings: Settings) -> dict:
    """Run one task: ``("warmup",)``, ``("batch",)``, ``("describe" | "reference" | "ours",
    name)`` or ``("diffcp", name, mode)``; returns its result dict."""
    kind, *args = task
    if kind == "warmup":
        return warm_up()
    if kind == "batch":
        return measure_batch(settings)
    state = _state(args[0], settings)
    if kind == "describe":
        return describe(state)
    if kind == "reference":
        return measure_reference(state)
    if kind == "ours":
        return measure_ours(state, settings)
    return measure_diffcp(state, args[1], settings)


def serve(conn: Any, settings: Settings) -> None:
    """Worker loop: answer each task received on ``conn`` until ``None`` arrives."""
    warnings.simplefilter("ignore")
    while (task := conn.recv()) is not None:
        try:
            result = run_task(task, settings)
        except Exception as err:  # reported in the table, the suite goes on
            result = {"skipped": f"failed: {type(err).__name__}: {str(err)[:120]}"}
        conn.send(result)


# -- in the parent --------------------------------------------------------------------------
class Worker:
    """A spawned worker process that runs tasks under a time limit.

    Parameters
    ----------
    settings : Settings
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._context = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self._context.Pipe()
        self.process = self._context.Process(target=serve, args=(child, self.settings),
                                             daemon=True)
        self.process.start()
        child.close()
        self.conn.send(("warmup",))
        if not self.conn.poll(self.settings.timeout):
            raise RuntimeError("the worker's warm-up did not finish")
        warm = self.conn.recv()
        if "skipped" in warm:
            raise RuntimeError(f"the worker's warm-up failed: {warm['skipped']}")

    def _restart(self) -> None:
        self.process.kill()
        self.process.join()
        self._start()

    def call(self, task: tuple) -> dict:
        """Run ``task`` in the worker; ``{"skipped": reason}`` past the time limit."""
        limit = self.settings.timeout
        self.conn.send(task)
        try:
            if self.conn.poll(limit):
                return self.conn.recv()
            reason = f"skipped: over the {limit:.0f} s limit"
        except EOFError:
            reason = f"failed: the worker died (exit code {self.process.exitcode})"
        self._restart()
        return {"skipped": reason}

    def close(self) -> None:
        """Stop the worker."""
        self.conn.send(None)
        self.process.join()


def diffcp_skip(row: dict, mode: str) -> str | None:
    """Why diffcp's ``mode`` is not run on a problem (None if it is)."""
    if row["nnz_P"]:
        return "n/a (P)"
    if row["power"]:
        return "n/a (power cone)"
    if row["N"] > DIFFCP_MAX_N[mode]:
        return f"skipped: N > {DIFFCP_MAX_N[mode]}"
    return None


def measure_spec(worker: Worker, name: str) -> dict:
    """Every measurement of one problem: description, reference, ours, diffcp's modes."""
    row = {"name": name, **worker.call(("describe", name))}
    if "skipped" in row:
        return row
    row["reference"] = worker.call(("reference", name))
    row["ours"] = worker.call(("ours", name))
    row["diffcp"] = {}
    for mode in DIFFCP_MODES:
        reason = diffcp_skip(row, mode)
        row["diffcp"][mode] = ({"skipped": reason} if reason
                               else worker.call(("diffcp", name, mode)))
    return row
