"""Running a batch's per-problem work serially, on threads, processes or any Executor.

A :class:`Runner` splits the items of a batch into contiguous chunks, runs
``fn(job, item)`` for every item of a chunk as one task, and returns the results in
input order. It owns the policies that every batch pass shares:

* **BLAS threads** are pinned to one per worker with ``threadpoolctl`` around the work of
  each task (a reference-counted pin, so overlapping tasks in one process neither fight
  over the limit nor restore it early); the thread back end pins once around the pool.
* **Errors**: an exception raised by ``fn`` is tagged with its problem's index (an
  attribute :data:`INDEX_ATTRIBUTE`, and a note on Python ≥ 3.11) and re-raised as is;
  anything else that makes a task fail (a worker process killed by a signal,
  ``os._exit`` or the out-of-memory killer, giving ``BrokenProcessPool``; Dask's
  ``KilledWorker``; a payload that cannot be pickled) becomes a ``RuntimeError`` that
  names the problems left unfinished. Pending tasks are cancelled; nothing hangs.
* **Dead workers** (process back end, when the caller gives ``on_lost``): the problems
  whose tasks had finished keep their results, the unfinished ones run again on a new
  pool, at most one task per worker at a time, and the tasks lost to a second death run
  one problem at a time: a problem whose worker dies while it runs alone is the one that
  kills it, and gets ``on_lost``'s result; every other problem gets its own result.
* **Interrupts** (``KeyboardInterrupt`` in the calling thread, or raised by a solver
  in a task): pending tasks are cancelled and the exception propagates at once. Worker
  threads stop at their next problem (and Clarabel between its iterations: see
  :mod:`._cancel`); the process pool is shut down and its workers terminated (they
  ignore SIGINT themselves, so a Ctrl-C in a terminal leaves them to the parent).
* **Warnings** raised in a process pool's workers are recorded there and re-issued in the
  calling process, prefixed with the problem's index. (With other executors they stay
  with the worker: recording them is not thread-safe.)
* **Progress**: a tqdm bar (``progress=True``) or a ``callback(done, total)``.

The process back end keeps one ``ProcessPoolExecutor`` (``forkserver`` start method where
available, else ``spawn``; never ``fork``, which does not mix with OpenMP and Numba's
threading layers) and reuses it across calls; a pool whose worker died (while it was
idle too) is replaced by a new one before its next use.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections import deque
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Sequence, Union

from threadpoolctl import ThreadpoolController

from .._cancel import Stopped, stoppable
from ..caches import on_clear
from .._warnings import warn_at_caller

BACKENDS = ("serial", "threads", "processes")

#: Attribute set on an exception raised while processing a problem: its batch index.
INDEX_ATTRIBUTE = "diffqcp_problem_index"

#: Tasks per worker when the chunk size is left to the runner.
CHUNKS_PER_WORKER = 4

#: New process pools one pass may start after worker deaths before it gives up.
MAX_POOL_RESTARTS = 8

ProgressLike = Union[bool, None, Callable[[int, int], Any]]


# -- BLAS pinning ---------------------------------------------------------------------------
class _BlasPin:
    """Reference-counted ``threadpool_limits(1)`` for the current process.

    The thread pools are found by a :class:`~threadpoolctl.ThreadpoolController`, which
    scans the loaded libraries; it is kept while no module has been imported since (a
    scan costs more than pinning a batch of small problems), and made again otherwise.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter = None
        self._controller: ThreadpoolController | None = None
        self._modules = -1

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                if self._controller is None or len(sys.modules) != self._modules:
                    self._controller = ThreadpoolController()
                    self._modules = len(sys.modules)
                self._limiter = self._controller.limit(limits=1)
            self._depth += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


BLAS_PIN = _BlasPin()


# -- the process pool -----------------------------------------------------------------------
def _mp_context():
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers fork from a server that has imported the package once (only takes
        # effect if this process's fork server is not running yet).
        ctx.set_forkserver_preload(["__main__", "diffqcp_np.batch"])
    return ctx


def _ignore_sigint() -> None:
    """Worker initializer: a Ctrl-C is the parent's to handle (it stops the pool)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _workers(pool: Executor) -> list:
    """The worker processes of a process pool (CPython's record of them; it is dropped
    at shutdown), or none."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _is_broken(pool: ProcessPoolExecutor) -> bool:
    """Whether a worker of ``pool`` has died: CPython's flag (set once the pool's manager
    thread has seen the death), or a worker process found dead now."""
    return (bool(getattr(pool, "_broken", False))
            or any(not process.is_alive() for process in _workers(pool)))


def _stop(pool: Executor) -> None:
    """Terminate the live workers of ``pool``, then shut it down and wait for it.

    A worker killed while it waited for work may have died holding the lock of the
    pool's task queue; the other workers then wait for that lock forever and would
    never read the request to exit, so they are terminated instead of asked. Waiting
    for the shutdown releases the pool's queues (else they are reported as leaked at
    exit).
    """
    for process in _workers(pool):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


class _ProcessPools:
    """The process back end's pool, created on first use and reused while its size fits
    and none of its workers has died.

    A request for another size replaces it; work already submitted to the old pool
    still completes. A pool with a dead worker (killed while the pool was idle, too) is
    replaced before it is handed out again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._size = 0

    def get(self, size: int) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is not None and _is_broken(self._pool):
                _stop(self._pool)
                self._pool = None
            if self._pool is not None and self._size != size:
                self._pool.shutdown(wait=False)
                self._pool = None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=size, mp_context=_mp_context(),
                                                 initializer=_ignore_sigint)
                self._size = size
            return self._pool

    def discard(self, pool: Executor) -> None:
        """Forget ``pool`` (if it is the cached one) and stop it, after a worker died or
        after an interrupt (see :func:`_stop`)."""
        with self._lock:
            if pool is self._pool:
                self._pool = None
        _stop(pool)

    def shutdown(self) -> None:
        """Shut the cached pool down (its workers exit; the next batch starts a new one)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


PROCESS_POOLS = _ProcessPools()
on_clear(PROCESS_POOLS.shutdown)


def _positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def resolve_n_jobs(n_jobs: int, name: str) -> int:
    """``-1`` means every core available to this process; otherwise a positive integer."""
    if n_jobs == -1:
        if hasattr(os, "sched_getaffinity"):
            return len(os.sched_getaffinity(0))
        return os.cpu_count() or 1
    if not _positive_int(n_jobs):
        raise ValueError(f"{name} must be -1 (all cores) or a positive integer, got {n_jobs!r}")
    return int(n_jobs)


# -- progress -------------------------------------------------------------------------------
class _Progress:
    """Reports completed items: a tqdm bar, a callback, or nothing."""

    def __init__(self, progress: ProgressLike, total: int, desc: str) -> None:
        self._bar = None
        self._callback = None
        self._done = 0
        self._total = total
        if progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                warnings.warn("progress=True needs tqdm (pip install tqdm); no progress bar "
                              "is shown", RuntimeWarning, stacklevel=5)
            else:
                self._bar = tqdm(total=total, desc=desc)
        elif callable(progress):
            self._callback = progress
        elif progress not in (False, None):
            raise ValueError(f"progress must be a bool or a callable(done, total), "
                             f"got {progress!r}")

    def update(self, count: int) -> None:
        self._done += count
        if self._bar is not None:
            self._bar.update(count)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# -- tasks ----------------------------------------------------------------------------------
def tag_exception(err: BaseException, index: int) -> None:
    """Mark ``err`` as raised while processing problem ``index`` of the batch."""
    setattr(err, INDEX_ATTRIBUTE, index)
    if hasattr(err, "add_note"):
        err.add_note(f"(raised while processing problem {index} of the batch)")


_tag = tag_exception


def run_chunk(fn: Callable, job: Any, chunk: Sequence, pin_blas: bool,
              record_warnings: bool,
              stop: threading.Event | None = None) -> list[tuple[Any, list]]:
    """Run ``fn(job, item)`` for each item of a chunk (in a worker).

    Parameters
    ----------
    stop : threading.Event, optional
        The batch's stop event (worker threads of this process only): once it is set
        the chunk raises :class:`~._cancel.Stopped` before its next item, and the
        solvers see it (:mod:`._cancel`); an exception raised by an item sets it.

    Returns
    -------
    list of (result, warnings)
        ``warnings`` is a list of ``(category, message)`` when ``record_warnings``.
    """
    with (BLAS_PIN if pin_blas else nullcontext()), \
            (stoppable(stop) if stop is not None else nullcontext()):
        if not record_warnings:
            return [(_run_item(fn, job, item, stop), []) for item in chunk]
        out = []
        with warnings.catch_warnings(record=True) as caught:  # once per chunk: it is slow
            warnings.simplefilter("always")
            for item in chunk:
                first = len(caught)
                result = _run_item(fn, job, item, stop)
                out.append((result, [(w.category, str(w.message)) for w in caught[first:]]))
        return out


def _run_item(fn: Callable, job: Any, item: Any, stop: threading.Event | None) -> Any:
    """``fn(job, item)``; an exception it raises is tagged with the item's problem index
    and stops the batch (``stop``), whose other problems would be thrown away."""
    if stop is not None and stop.is_set():
        raise Stopped("the batch was stopped")
    try:
        return fn(job, item)
    except BaseException as err:
        if stop is not None:
            stop.set()
        if isinstance(err, Exception):
            _tag(err, item.index)
        raise


def describe(indices: Sequence[int], limit: int = 8) -> str:
    """``"problem 3"``, ``"problems 3, 5, 7"`` or ``"problems 3, 4, ... (40 problems)"``."""
    indices = sorted(indices)
    if len(indices) == 1:
        return f"problem {indices[0]}"
    shown = ", ".join(str(i) for i in indices[:limit])
    more = f", ... ({len(indices)} problems)" if len(indices) > limit else ""
    return f"problems {shown}{more}"


def _task_error(err: Exception, problems: Sequence[int]) -> Exception:
    """The exception to raise for a task that failed with ``err`` (not a dead worker)."""
    if hasattr(err, INDEX_ATTRIBUTE):
        return err
    return RuntimeError(f"{describe(problems)}: the executor failed to run the task "
                        f"({type(err).__name__}: {err})")


def _died(problems: Sequence[int], err: BaseException | None = None) -> RuntimeError:
    """The error for problems lost with a worker process that died."""
    cause = f"; {type(err).__name__}: {err}" if err is not None else ""
    return RuntimeError(f"{describe(problems)}: a worker process died before returning "
                        f"(killed by a signal, os._exit or the out-of-memory killer{cause})")


#: A task: the items ``items[start:stop]`` of a pass (a slice, which is what pickles
#: compactly).
Task = tuple[int, int]


class _Pass:
    """One :meth:`Runner.map` call: its items, results and how they are reported."""

    def __init__(self, fn: Callable, job: Any, items: Sequence, progress: _Progress,
                 on_result: Callable[[Any], None] | None) -> None:
        self.fn, self.job, self.items = fn, job, items
        self.progress, self.on_result = progress, on_result
        self.results: list = [None] * len(items)
        self.done = [False] * len(items)

    def chunk(self, task: Task) -> Sequence:
        return self.items[task[0]:task[1]]

    def indices(self, tasks) -> list[int]:
        """The problem indices of ``tasks``' items."""
        return [self.items[k].index for start, stop in tasks for k in range(start, stop)]

    def unfinished(self) -> list[int]:
        return [item.index for item, done in zip(self.items, self.done) if not done]

    def collect(self, task: Task, out: list[tuple[Any, list]]) -> None:
        """Store a finished task's results; re-issue its warnings, report them."""
        for k, (result, caught) in zip(range(*task), out):
            item = self.items[k]
            for category, message in caught:
                warn_at_caller(f"problem {item.index}: {message}", category)
            self.results[k] = result
            self.done[k] = True
            if self.on_result is not None:
                self.on_result(result)
        self.progress.update(task[1] - task[0])

    def give_up(self, k: int, on_lost: Callable[[Any, str], Any]) -> None:
        """Item ``k`` killed its worker, also when it ran alone: ``on_lost``'s result."""
        item = self.items[k]
        message = str(_died([item.index])) + ", also when it was run alone"
        self.collect((k, k + 1), [(on_lost(item, message), [])])


# -- the runner -----------------------------------------------------------------------------
@dataclass
class Runner:
    """Where and how a batch pass runs.

    Attributes
    ----------
    kind : {"serial", "threads", "processes", "executor"}
    n_jobs : int
        Workers (threads, processes) or, for a given executor, the parallelism assumed
        when choosing chunks.
    executor : Executor or None
        The given executor (``kind == "executor"``).
    chunksize : int or None
        Problems per task; default ``ceil(N / (4 n_jobs))``.
    progress : bool or callable
    """

    kind: str
    n_jobs: int
    executor: Executor | None = None
    chunksize: int | None = None
    progress: ProgressLike = False

    @property
    def in_process(self) -> bool:
        """Whether tasks run in this process (objects are shared, not pickled)."""
        return self.kind in ("serial", "threads") or isinstance(self.executor,
                                                                 ThreadPoolExecutor)

    def local(self) -> Runner:
        """This runner if it runs in this process, else threads with as many workers
        (at most the cores of this process) and the same chunks and progress report."""
        if self.in_process:
            return self
        n_jobs = min(self.n_jobs, resolve_n_jobs(-1, "n_jobs"))
        return Runner("threads" if n_jobs > 1 else "serial", n_jobs, None, self.chunksize,
                      self.progress)

    def progress_reporter(self, total: int, desc: str) -> _Progress:
        """This runner's progress report (``update(count)``, ``close()``) for a pass."""
        return _Progress(self.progress, total, desc)

    def _tasks(self, size: int) -> list[Task]:
        if self.kind == "serial":
            step = 1
        elif self.chunksize is not None:
            step = self.chunksize
        else:
            step = max(1, math.ceil(size / (CHUNKS_PER_WORKER * self.n_jobs)))
        return [(k, min(k + step, size)) for k in range(0, size, step)]

    def map(self, fn: Callable, job: Any, items: Sequence, desc: str,
            on_result: Callable[[Any], None] | None = None,
            on_lost: Callable[[Any, str], Any] | None = None) -> list:
        """``[fn(job, item) for item in items]``, run on this back end.

        Parameters
        ----------
        fn : callable
            Module-level function (it is pickled for process and executor back ends).
        job : object
            Settings shared by every item (pickled once per task).
        items : sequence
            Objects with an ``index`` attribute (the problem's index in the batch); a
            slice of it (a chunk) is what a task receives.
        desc : str
            Label of the progress bar.
        on_result : callable, optional
            Called with each result as its task completes (in the calling thread); an
            exception it raises cancels the remaining tasks and propagates.
        on_lost : callable, optional
            Process back end: ``on_lost(item, message)`` is the result of an item whose
            worker process dies whenever it runs (see the module docstring); without it
            a dead worker raises ``RuntimeError`` naming the unfinished problems.

        Raises
        ------
        RuntimeError
            When a worker process dies (and ``on_lost`` is not given, the executor is not
            the process back end's own pool, or pools keep dying) or the executor fails
            to run a task.
        """
        progress = _Progress(self.progress, len(items), desc)
        run = _Pass(fn, job, items, progress, on_result)
        tasks = self._tasks(len(items))
        try:
            if self.kind == "serial":
                for task in tasks:
                    run.collect(task, run_chunk(fn, job, run.chunk(task), False, False))
            elif self.kind == "threads":
                self._run_threads(run, tasks)
            elif self.kind == "processes":
                self._run_processes(run, tasks, on_lost)
            else:
                lost = self._run_tasks(self.executor, run, deque(tasks), None)
                if lost is not None:
                    raise _died(run.unfinished(), lost[1])
        finally:
            progress.close()
        return run.results

    def _run_threads(self, run: _Pass, tasks: list[Task]) -> None:
        """Run on a new thread pool; on any exception the workers are told to stop and
        the pool is left without waiting for them (each finishes its current problem)."""
        stop = threading.Event()
        with BLAS_PIN:
            pool = ThreadPoolExecutor(max_workers=self.n_jobs)
            try:
                self._run_tasks(pool, run, deque(tasks), None, stop)
            except BaseException:
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)

    def _run_processes(self, run: _Pass, tasks: list[Task],
                       on_lost: Callable[[Any, str], Any] | None) -> None:
        """Run on the cached process pool, starting new pools after worker deaths (see
        the module docstring): first all tasks at once, then at most ``n_jobs`` at a time,
        then the tasks lost in that phase one problem at a time."""
        queue: deque[Task] = deque(tasks)
        alone: deque[Task] = deque()
        limit = None
        restarts = 0
        while queue or alone:
            pool = PROCESS_POOLS.get(self.n_jobs)
            one_by_one = bool(alone)
            try:
                lost = self._run_tasks(pool, run, alone if one_by_one else queue,
                                       1 if one_by_one else limit, cancel_on_interrupt=False)
            except KeyboardInterrupt:
                PROCESS_POOLS.discard(pool)
                raise
            if lost is None:
                continue
            PROCESS_POOLS.discard(pool)
            restarts += 1
            running, err = lost
            if on_lost is None or restarts > MAX_POOL_RESTARTS:
                raise _died(run.unfinished(), err)
            if not running:  # the pool had died before this pass reached it
                continue
            if one_by_one:  # it ran alone: this problem kills its worker
                run.give_up(running[0][0], on_lost)
            elif limit is None:
                queue.extendleft(reversed(running))
                limit = self.n_jobs
            else:
                alone.extend((k, k + 1) for start, stop in running for k in range(start, stop))

    def _run_tasks(self, pool: Executor, run: _Pass, tasks: deque[Task], limit: int | None,
                   stop: threading.Event | None = None, cancel_on_interrupt: bool = True
                   ) -> tuple[list[Task], BaseException] | None:
        """Run ``tasks`` (taken from the left) on ``pool``, at most ``limit`` at a time
        (None: all at once), collecting each result as it comes. On an exception the
        tasks not started are cancelled, except after an interrupt without
        ``cancel_on_interrupt``: the caller then shuts the pool down (a process pool
        would fail futures cancelled here once its workers are stopped, an error in
        its manager thread).

        Returns
        -------
        None when every task has run, or, when a worker process died, the tasks that
        were running then (their items have no result; tasks never started stay in
        ``tasks``) and the pool's error.
        """
        record = isinstance(pool, ProcessPoolExecutor)
        futures: dict[Future, Task] = {}
        lost: list[Task] = []
        broken: BaseException | None = None
        stopped = False
        try:
            while tasks or futures:
                while tasks and broken is None and (limit is None or len(futures) < limit):
                    try:
                        future = pool.submit(run_chunk, run.fn, run.job, run.chunk(tasks[0]),
                                             True, record, stop)
                    except BrokenExecutor as err:  # a worker died before this batch
                        broken = err
                        break
                    futures[future] = tasks.popleft()
                if not futures:
                    break
                # after a death every future fails at once: wait for all of them
                done, _ = wait(futures, return_when=ALL_COMPLETED if broken is not None
                               else FIRST_COMPLETED)
                for future in done:
                    task = futures.pop(future)
                    try:
                        out = future.result()
                    except BrokenExecutor as err:
                        broken = err
                        lost.append(task)
                        continue
                    except Stopped:  # the problem that stopped the batch raises below
                        stopped = True
                        continue
                    except Exception as err:
                        raise _task_error(err, run.indices([task])) from err
                    run.collect(task, out)
            if stopped:
                raise Stopped("the batch was stopped")
        except BaseException as err:
            if cancel_on_interrupt or not isinstance(err, KeyboardInterrupt):
                for future in futures:
                    future.cancel()
            raise
        return None if broken is None else (sorted(lost), broken)


def make_runner(backend: str | None, executor: Executor | None, n_jobs: int, name: str,
                n_items: int, chunksize: int | None, progress: ProgressLike) -> Runner:
    """Choose the back end of a batch pass.

    Parameters
    ----------
    backend : {"serial", "threads", "processes"} or None
        None means ``"threads"``, or the given executor.
    executor : Executor or None
        Any ``concurrent.futures.Executor`` (e.g. Dask's ``Client.get_executor()``).
    n_jobs : int
        ``-1`` for all cores; ``1`` runs serially in the calling thread (unless an
        executor is given).
    name : str
        Argument name of ``n_jobs``, for error messages.
    n_items : int
        Batch size (no more workers than problems are started).
    chunksize : int or None
    progress : bool or callable

    Raises
    ------
    ValueError
        On an unknown back end, a back end given together with an executor, or a bad
        ``n_jobs`` or ``chunksize``.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if executor is not None and backend is not None:
        raise ValueError("give either backend or executor, not both")
    if executor is not None and not isinstance(executor, Executor):
        raise ValueError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
    if chunksize is not None and not _positive_int(chunksize):
        raise ValueError(f"chunksize must be a positive integer, got {chunksize!r}")
    n = min(resolve_n_jobs(n_jobs, name), max(n_items, 1))
    if executor is not None:
        return Runner("executor", n, executor, chunksize, progress)
    kind = backend or "threads"
    if n == 1:
        kind = "serial"
    return Runner(kind, n, None, chunksize, progress)
