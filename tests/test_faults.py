"""Faults: worker processes that die, and Ctrl-C.

* A process-pool worker killed while the pool is idle: the next batch gets a new pool.
* A worker killed during a batch: with ``raise_on_error=False`` only the problem that
  kills it gets NaN results (and says why), every other problem its own result; with
  ``raise_on_error=True`` a ``RuntimeError`` (never a ``SolverError``); the next batch
  works either way.
* SIGINT sent to a process that solves (one problem; a serial, threaded or process
  batch; every forward solver) ends the call promptly with ``KeyboardInterrupt``, and a
  threaded batch leaves no thread running.

The oracle of every result is the same problem solved alone (serially).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from diffqcp_np import solve_and_derivative_batch, solve_only_batch
from diffqcp_np.batch import runner as batch_runner
from diffqcp_np.batch.runner import PROCESS_POOLS, Runner
from test_batch import WorkerKiller

# -- dead workers -----------------------------------------------------------------------------
PROBLEM = dict(A=sp.csc_matrix(np.array([[1.0], [-1.0]])), c=np.array([0.5]),
               cone_dict={"l": 2}, P=sp.csc_matrix(np.array([[1.0]])))


def batch_args(bounds: list) -> dict:
    """``min ½x² + ½x  s.t.  −b2 ≤ x ≤ b1`` per ``(b1, b2)``: ``x = max(−½, −b2)``."""
    size = len(bounds)
    return dict(As=[PROBLEM["A"]] * size, bs=[np.array(b, float) for b in bounds],
                cs=[PROBLEM["c"]] * size, cone_dicts=[PROBLEM["cone_dict"]] * size,
                Ps=[PROBLEM["P"]] * size)


BOUNDS = [[1.0, 0.25 + 0.1 * k] for k in range(8)]
EXPECTED_X = [max(-0.5, -b2) for _, b2 in BOUNDS]
SETTINGS = dict(solve_method="Clarabel", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)


def killing_warm_starts(size: int, killers: tuple) -> list:
    return [(WorkerKiller(), np.zeros(2), np.zeros(2)) if i in killers else None
            for i in range(size)]


def kill_a_worker(which: int = 0) -> None:
    """SIGKILL worker ``which`` of the (started) pool and wait until it is dead."""
    process = batch_runner._workers(PROCESS_POOLS.get(2))[which]
    os.kill(process.pid, signal.SIGKILL)
    process.join(30)
    assert not process.is_alive()


@pytest.mark.parametrize("which", [0, 1])
def test_worker_killed_while_the_pool_is_idle_is_replaced(which):
    """Of two idle workers one waits for a task holding the task queue's lock, the other
    for that lock: killing either leaves a pool that is replaced (killing the holder
    once left the other worker waiting forever, and shutting the pool down hung)."""
    args = batch_args(BOUNDS)
    first = solve_only_batch(**args, backend="processes", n_jobs_forward=2, **SETTINGS)[0]
    kill_a_worker(which)
    xs = solve_only_batch(**args, backend="processes", n_jobs_forward=2, **SETTINGS)[0]
    for x, x_first, want in zip(xs, first, EXPECTED_X):
        assert x == pytest.approx(x_first, abs=1e-12) and x == pytest.approx(want, abs=1e-7)


def test_worker_killed_during_a_batch_loses_only_its_problem():
    """Problems 2 and 5 kill the worker running them; chunks of three problems, so that
    each killer shares its task with innocent problems."""
    args = batch_args(BOUNDS)
    warm = killing_warm_starts(len(BOUNDS), (2, 5))
    xs, ys, ss, D_batch, DT_batch, infos = solve_and_derivative_batch(
        **args, warm_starts=warm, backend="processes", n_jobs_forward=2, n_jobs_backward=2,
        chunksize=3, raise_on_error=False, return_info=True, **SETTINGS)
    serial = solve_and_derivative_batch(**args, backend="serial", **SETTINGS)
    for i in (2, 5):
        assert np.isnan(xs[i]).all() and np.isnan(ys[i]).all() and np.isnan(ss[i]).all()
        assert infos[i]["solver_status"] == "worker process died"
        assert infos[i]["error_message"].startswith(f"problem {i}: a worker process died")
    dcs = DT_batch([np.ones(1)] * len(xs), [None] * len(xs), [None] * len(xs))[2]
    want = serial[4]([np.ones(1)] * len(xs), [None] * len(xs), [None] * len(xs))[2]
    for i in set(range(len(BOUNDS))) - {2, 5}:
        assert infos[i]["status"] == "Solved"
        assert xs[i] == pytest.approx(serial[0][i], abs=1e-12)
        assert dcs[i] == pytest.approx(want[i], abs=1e-9)
    assert np.isnan(dcs[2]).all() and np.isnan(dcs[5]).all()
    # the next batch works, on a new pool
    xs = solve_only_batch(**args, backend="processes", n_jobs_forward=2, **SETTINGS)[0]
    assert np.allclose(np.concatenate(xs), EXPECTED_X, atol=1e-7)


def test_worker_killed_during_a_batch_raises_runtime_error_by_default():
    args = batch_args(BOUNDS[:4])
    with pytest.raises(RuntimeError, match=r"problems? .*\b2\b.*worker process died"):
        solve_only_batch(**args, warm_starts=killing_warm_starts(4, (2,)),
                         backend="processes", n_jobs_forward=2, **SETTINGS)
    xs = solve_only_batch(**args, backend="processes", n_jobs_forward=2, **SETTINGS)[0]
    assert np.allclose(np.concatenate(xs), EXPECTED_X[:4], atol=1e-7)


def _die_on_odd(job, item):
    """Runner task: kill the worker on odd items, else return twice the item."""
    if item.index % 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * item.index


def test_runner_gives_lost_results_and_gives_up_when_pools_keep_dying(monkeypatch):
    """The runner as ``D_batch`` uses it: ``on_lost`` fills in each problem whose worker
    dies when it runs alone; a pass whose pools keep dying raises."""
    items = [SimpleNamespace(index=i) for i in range(6)]
    runner = Runner("processes", 2, chunksize=2)
    out = runner.map(_die_on_odd, None, items, "test",
                     on_lost=lambda item, message: ("lost", item.index, message))
    assert out[0::2] == [0, 4, 8]
    for i, lost in zip((1, 3, 5), out[1::2]):
        assert lost[:2] == ("lost", i) and lost[2].startswith(f"problem {i}: a worker")
    monkeypatch.setattr(batch_runner, "MAX_POOL_RESTARTS", 1)
    with pytest.raises(RuntimeError, match="worker process died"):
        runner.map(_die_on_odd, None, items, "test", on_lost=lambda item, message: None)


# -- Ctrl-C -----------------------------------------------------------------------------------
CHILD = Path(__file__).with_name("interrupt_child.py")
#: Seconds from SIGINT to the end of the call, and to the end of its worker threads,
#: within which an interrupted call counts as prompt (without the interrupt each call
#: runs for minutes).
PROMPT = 10.0
#: Seconds after which the child of ``run_interrupted`` is killed whatever it is doing.
WATCHDOG = 300.0


def run_interrupted(names: list[str], delay: float = 0.7) -> dict:
    """Run the scenarios of ``interrupt_child.py``, sending SIGINT ``delay`` seconds
    into each; name -> (outcome, seconds, thread seconds, problems done)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(CHILD.parent.parent), os.environ.get("PYTHONPATH", "")]))
    results = {}
    with subprocess.Popen([sys.executable, str(CHILD), *names], stdout=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                          env=env, start_new_session=True) as child:
        # a child that an interrupt failed to stop is killed with its workers (which hold
        # its stdout open), so the test fails, never hangs
        watchdog = threading.Timer(WATCHDOG, os.killpg, (child.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in child.stdout:
                words = line.split()
                if words[0] == "ready-again" or (words[0] == "ready"
                                                  and not words[1].startswith("after-")):
                    time.sleep(delay)
                    child.send_signal(signal.SIGINT)
                elif words[0] == "done":
                    name, outcome, seconds, threads, done = words[1:]
                    results[name] = (outcome, float(seconds), float(threads), int(done))
            child.wait(timeout=60)
        finally:
            watchdog.cancel()
            child.kill()
    return results


@pytest.mark.slow
@pytest.mark.skipif(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                    reason="SIGINT is ignored in this process (started as a background job)")
def test_sigint_stops_solves_and_batches_promptly():
    names = ["scs", "ecos", "serial-clarabel", "threads-scs", "threads-clarabel",
             "threads-ecos", "processes-scs", "after-threads-ecos"]
    results = run_interrupted(names)
    assert sorted(results) == sorted(names)
    for name, (outcome, seconds, threads, _done) in results.items():
        assert outcome == "KeyboardInterrupt", (name, outcome)
        assert seconds < PROMPT + 1 and threads < PROMPT, (name, seconds, threads)
    # Clarabel ignores signals: a serial batch stops after the problem it was solving
    assert results["serial-clarabel"][3] < 6
