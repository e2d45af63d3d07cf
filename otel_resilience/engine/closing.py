"""What a call gives back when its coroutine is closed rather than cancelled: never blocking on a lock.

A task left pending when its event loop closed never runs again. The garbage collector frees it
on whichever thread allocates, maybe one that holds a lock of the library or of the OpenTelemetry
SDK (an allocation made under it: an export, a measurement recorded), and closes its coroutine
there: ``GeneratorExit`` is raised where the coroutine was suspended, and the code that gives back
what the call held (a breaker's permit, a bulkhead's slot, a retry's counts and its budget's
withdrawal, a key's count of calls) and ends its telemetry runs on that thread. Taking a lock
that thread holds would deadlock it.

The one rule, for every such give-back that takes a lock: it is run by :func:`give_back`, which
runs it at once unless a coroutine is being closed (:func:`closing`) and the lock is held
(:func:`lock_taken`); then it is left to the library's thread of later work (:func:`later`),
which waits for the lock while the thread that holds it goes on and releases it. The SDK's
locks cannot be tried from here: what ends a closed call's telemetry (its spans ended, its
durations recorded) always goes to that thread. Everything else (a cancellation, an interrupt, a
coroutine closed while the lock is free) gives back at once, in the caller's thread.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from typing import Final, Protocol

from otel_resilience.engine.forking import fork_safe

__all__ = ["Lock", "closing", "give_back", "later", "lock_taken", "settled"]

_LOG: Final = logging.getLogger(__name__)

_LATER: Final[queue.SimpleQueue[tuple[Callable[..., object], tuple[object, ...]]]] = queue.SimpleQueue()
"""The work :func:`later` was given, in order. A ``SimpleQueue``'s ``put`` is reentrant: it takes
no lock a thread could hold while the collector runs on it."""
_STARTING: Final = fork_safe(threading.Lock())
"""Held while the thread of later work is started: tried, never waited for (free in a forked child)."""
_worker_pid = 0
"""The process whose thread of later work runs (none in a child forked since: it starts its own)."""


class Lock(Protocol):
    """A lock :func:`lock_taken` can try: a ``threading.Lock`` (an ``RLock`` would let its holder in)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...  # noqa: D102

    def release(self) -> None: ...  # noqa: D102


def closing() -> bool:
    """Whether the exception being handled is ``GeneratorExit``: a coroutine is being closed.

    True in an ``except`` or ``finally`` block that ``GeneratorExit`` entered: what a coroutine
    runs when the garbage collector (or ``close()``) ends it where it was suspended.
    """
    return sys.exc_info()[0] is GeneratorExit


def lock_taken(lock: Lock) -> bool:
    """Whether ``lock`` is held now, maybe by this very thread (code the collector runs under it).

    Tried, never waited for: when it was free, it is released again at once.
    """
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


def give_back(lock: Lock, release: Callable[..., object], *args: object) -> None:
    """Call ``release(*args)``, which takes ``lock``, never blocking on it while a coroutine is being closed.

    Called where what a call held is given back on its way out (a cancellation hook, a
    ``finally``). When the exception being handled is ``GeneratorExit`` (:func:`closing`) and
    ``lock`` is held (:func:`lock_taken`), this thread may be the one that holds it: ``release``
    then runs on a daemon thread of its own, which waits for the lock. At interpreter shutdown,
    when no thread can start, nothing is given back: nothing will ask for it again.
    """
    if not (closing() and lock_taken(lock)):
        release(*args)
        return
    later(release, *args)


def later(work: Callable[..., object], *args: object) -> None:
    """Call ``work(*args)`` on the library's thread of later work, after what it was given before.

    For what a coroutine being closed (:func:`closing`) must not do on the thread the collector
    runs on: wait for a lock that thread may hold. Never blocks: the thread (a daemon, started at
    the first such call in a process) runs the work in order; what raises is logged there. At
    interpreter shutdown, when no thread can start, the work is never run: nothing will ask for
    what it gives back.
    """
    _LATER.put((work, args))
    if _worker_pid != os.getpid():
        _start()


def _start() -> None:
    """Start the thread of later work, unless it runs (or this or another thread is starting it)."""
    global _worker_pid  # noqa: PLW0603 - one thread per process
    if not _STARTING.acquire(blocking=False):  # maybe this very thread, the collector run inside
        return  # whoever holds it starts the thread, which takes what was just put
    try:
        if _worker_pid != os.getpid():
            threading.Thread(target=_work, name="resilience-later", daemon=True).start()
            _worker_pid = os.getpid()
    except RuntimeError:  # no new thread at interpreter shutdown: none is needed
        pass
    finally:
        _STARTING.release()


def _work() -> None:
    """Run what :func:`later` is given, in order, for the life of the process."""
    while True:
        work, args = _LATER.get()
        try:
            work(*args)
        except BaseException:  # noqa: BLE001 - the thread goes on: later work of others waits on it
            _LOG.exception("later work %r failed", work)
        del work, args


def settled(timeout: float | None = None) -> bool:
    """Wait until what :func:`later` was given so far has run; ``False`` if ``timeout`` passed first.

    For tests, and for a process that wants a closed call's telemetry ended before it reads it.
    """
    done = threading.Event()
    later(done.set)
    return done.wait(timeout)
