"""Stopping a batch's work on the worker threads of this process.

When the thread that runs a batch on threads is interrupted (``KeyboardInterrupt``), or
a problem raises on a worker thread (a solver that caught SIGINT itself raises
``KeyboardInterrupt`` there), the batch's stop event is set: each worker thread stops
before its next problem and before its next solve, and a forward solver that can be
stopped between its iterations (Clarabel, through its termination callback) stops
there. Python runs signal handlers in the main thread only, so a worker learns of an
interrupt through this event.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()


class Stopped(KeyboardInterrupt):
    """Raised on a worker thread whose batch has been stopped (by an interrupt, or by
    an exception in another problem, which is the one the batch raises)."""


@contextmanager
def stoppable(event: threading.Event) -> Iterator[None]:
    """Make ``event`` the stop event of the work run by this thread inside the block."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def stop_event() -> threading.Event | None:
    """The stop event of the batch this thread is working for, or None (the calling
    thread itself, a serial batch, a worker process)."""
    return getattr(_local, "event", None)


def check_stop() -> None:
    """Raise :class:`Stopped` if this thread's batch has been stopped."""
    event = stop_event()
    if event is not None and event.is_set():
        raise Stopped("the batch was stopped")


def interrupted(message: str) -> KeyboardInterrupt:
    """The ``KeyboardInterrupt`` to raise for a solve that SIGINT stopped; the batch this
    thread works for (if any) is stopped first, so that no other worker starts a solve
    that the signal, already spent, would not stop."""
    event = stop_event()
    if event is not None:
        event.set()
    return KeyboardInterrupt(message)
