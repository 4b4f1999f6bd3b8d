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
* **Warnings** raised in a process pool's workers are recorded there and re-issued in the
  calling process, prefixed with the problem's index. (With other executors they stay
  with the worker: recording them is not thread-safe.)
* **Progress**: a tqdm bar (``progress=True``) or a ``callback(done, total)``.

The process back end keeps one ``ProcessPoolExecutor`` (``forkserver`` start method where
available, else ``spawn``; never ``fork``, which does not mix with OpenMP and Numba's
threading layers) and reuses it across calls; a pool whose worker died is discarded.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import threading
import warnings
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    as_completed,
)
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Sequence, Union

from threadpoolctl import threadpool_limits

from ._warnings import warn_at_caller

BACKENDS = ("serial", "threads", "processes")

#: Attribute set on an exception raised while processing a problem: its batch index.
INDEX_ATTRIBUTE = "diffqcp_problem_index"

#: Tasks per worker when the chunk size is left to the runner.
CHUNKS_PER_WORKER = 4

ProgressLike = Union[bool, None, Callable[[int, int], Any]]


# -- BLAS pinning ---------------------------------------------------------------------------
class _BlasPin:
    """Reference-counted ``threadpool_limits(1)`` for the current process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._limiter = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._limiter = threadpool_limits(limits=1)
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


class _ProcessPools:
    """The process back end's pool, created on first use and reused while its size fits.

    A request for another size replaces it; work already submitted to the old pool
    still completes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._size = 0

    def get(self, size: int) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is not None and self._size != size:
                self._pool.shutdown(wait=False)
                self._pool = None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=size, mp_context=_mp_context())
                self._size = size
            return self._pool

    def discard(self, pool: Executor) -> None:
        """Forget ``pool`` (if it is the cached one), e.g. after a worker died."""
        with self._lock:
            if pool is self._pool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


PROCESS_POOLS = _ProcessPools()


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
              record_warnings: bool) -> list[tuple[Any, list]]:
    """Run ``fn(job, item)`` for each item of a chunk (in a worker).

    Returns
    -------
    list of (result, warnings)
        ``warnings`` is a list of ``(category, message)`` when ``record_warnings``.
    """
    with BLAS_PIN if pin_blas else nullcontext():
        if not record_warnings:
            return [(_run_item(fn, job, item), []) for item in chunk]
        out = []
        with warnings.catch_warnings(record=True) as caught:  # once per chunk: it is slow
            warnings.simplefilter("always")
            for item in chunk:
                first = len(caught)
                result = _run_item(fn, job, item)
                out.append((result, [(w.category, str(w.message)) for w in caught[first:]]))
        return out


def _run_item(fn: Callable, job: Any, item: Any) -> Any:
    """``fn(job, item)``; an exception it raises is tagged with the item's problem index."""
    try:
        return fn(job, item)
    except Exception as err:
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


def _task_error(err: Exception, executor: Executor, unfinished: Sequence[int],
                chunk: Sequence[int]) -> Exception:
    """The exception to raise for a failed task."""
    if hasattr(err, INDEX_ATTRIBUTE):
        return err
    if isinstance(err, BrokenExecutor):
        PROCESS_POOLS.discard(executor)
        return RuntimeError(
            f"{describe(unfinished)}: a worker process died before returning (killed by a "
            f"signal, os._exit or the out-of-memory killer; {type(err).__name__}: {err})"
        )
    return RuntimeError(f"{describe(chunk)}: the executor failed to run the task "
                        f"({type(err).__name__}: {err})")


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

    def _chunks(self, items: Sequence) -> list[Sequence]:
        if self.kind == "serial":
            size = 1
        elif self.chunksize is not None:
            size = self.chunksize
        else:
            size = max(1, math.ceil(len(items) / (CHUNKS_PER_WORKER * self.n_jobs)))
        return [items[k:k + size] for k in range(0, len(items), size)]

    def map(self, fn: Callable, job: Any, items: Sequence, desc: str,
            on_result: Callable[[Any], None] | None = None) -> list:
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
        """
        chunks = self._chunks(items)
        results: list[list | None] = [None] * len(chunks)
        progress = _Progress(self.progress, len(items), desc)
        try:
            if self.kind == "serial":
                for k, chunk in enumerate(chunks):
                    results[k] = self._collect(run_chunk(fn, job, chunk, False, False),
                                               chunk, on_result, progress)
            elif self.kind == "threads":
                with BLAS_PIN, ThreadPoolExecutor(max_workers=self.n_jobs) as pool:
                    self._run_on(pool, fn, job, chunks, results, on_result, progress)
            else:
                pool = (PROCESS_POOLS.get(self.n_jobs) if self.kind == "processes"
                        else self.executor)
                self._run_on(pool, fn, job, chunks, results, on_result, progress)
        finally:
            progress.close()
        return [r for chunk_results in results for r in chunk_results]

    def _run_on(self, pool: Executor, fn, job, chunks, results, on_result, progress) -> None:
        record = isinstance(pool, ProcessPoolExecutor)
        futures: dict[Future, int] = {}
        try:
            for k, chunk in enumerate(chunks):
                futures[pool.submit(run_chunk, fn, job, chunk, True, record)] = k
            for future in as_completed(futures):
                k = futures[future]
                try:
                    out = future.result()
                except Exception as err:
                    unfinished = [item.index for j, chunk in enumerate(chunks)
                                  if results[j] is None for item in chunk]
                    chunk = [item.index for item in chunks[k]]
                    raise _task_error(err, pool, unfinished, chunk) from err
                results[k] = self._collect(out, chunks[k], on_result, progress)
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    @staticmethod
    def _collect(out, chunk, on_result, progress) -> list:
        for (result, caught), item in zip(out, chunk):
            for category, message in caught:
                warn_at_caller(f"problem {item.index}: {message}", category)
            if on_result is not None:
                on_result(result)
        progress.update(len(chunk))
        return [result for result, _ in out]


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
