"""What a call gives back when its coroutine is closed rather than cancelled: never blocking on a lock.

A task left pending when its event loop closed never runs again. The garbage collector frees it
on whichever thread allocates, maybe one that holds a lock of the library (an allocation made
under it), and closes its coroutine there: ``GeneratorExit`` is raised where the coroutine was
suspended, and the code that gives back what the call held (a breaker's permit, a bulkhead's
slot, a retry's counts and its budget's withdrawal, a key's count of calls) runs on that thread.
Taking a lock that thread holds would deadlock it.

The one rule, for every such give-back that takes a lock: it is run by :func:`give_back`, which
runs it at once unless a coroutine is being closed (:func:`closing`) and the lock is held
(:func:`lock_taken`); then it runs on a thread of its own, which waits for the lock while the
thread that holds it goes on and releases it. Everything else (a cancellation, an interrupt, a
coroutine closed while the lock is free) gives back at once, in the caller's thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["Lock", "closing", "give_back", "lock_taken"]


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
    with contextlib.suppress(RuntimeError):  # no new thread at interpreter shutdown: none is needed
        threading.Thread(target=release, args=args, name="resilience-give-back", daemon=True).start()
