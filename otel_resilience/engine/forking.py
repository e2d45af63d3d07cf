"""The library's locks and random generators in a process made by ``os.fork()``: fit for the child.

A pre-fork server (gunicorn ``--preload``, ``multiprocessing`` with the ``fork`` method, Celery's
prefork pool) forks a process whose other threads may hold one of the library's locks at that
instant: the metrics reader's thread collecting (a registry, the counters' read lock, a bulkhead's
or a policy's lock), a configuration watch applying a file, a call admitted in a worker thread.
Only the forking thread goes on in the child, so such a lock would stay held there forever, and
the child's first call, stats read or collection that needs it would hang.

Every lock that work other than a call may hold is made free again in the child as it starts
(``os.register_at_fork``), before any of the child's own code runs: :func:`fork_safe` registers
a lock for that, in one weak set (the lock's owner keeps it alive, not this module). That is
every module-wide lock, the registries', and the locks of what a metrics collection, a watch or
a shared store's threads read or change (managers, policy handles and their keys, which a reload
holds while it brings every key to the new config, a bulkhead, which a reload resizes, budgets,
rate limiters, alert and recovery systems, telemetry, stores). The state a lock guards is the
parent's as the fork found it; the critical sections are a few statements that never call user
code, so what a thread had half done in one is at worst one update short (a reload is longer:
the keys it had not reached yet catch up with the new config at their next call, as a key made
during a reload does).

The locks that only a call takes (a pattern's counts, a retry's statistics) are not registered:
a fork with calls in flight in other threads leaves the child without what those calls held
anyway (a bulkhead slot, a probe, a permit are never given back there), so a pre-fork server
forks with none in flight, as it does, and those locks are free. A snapshot of those counts
(``get_stats()``, maybe in a thread of its own) takes such a lock only under the counters' read
lock, which the fork waits for (:func:`~otel_resilience.engine.counting.snapshot`): no snapshot
holds one at a fork. Registering them would cost a
weak reference for each pattern instance (about 500 B per policy). A ``CACHED_VALUE`` fallback's
lock is the exception: a background cache write ends (counting its error) after its call
returned, so it and the write order's lock are registered. Waits that belong to a thread of
the parent (a queued sync call's own lock) are not registered either: that thread does not exist
in the child.

A random generator seeded from the operating system (chaos's, with no ``seed``) would be copied
into every child in the state the fork found it, so every worker of a pre-fork server would draw
the same sequence (inject faults on the same runs). :func:`fork_reseeded` registers such a
generator, and the child seeds it again from the operating system as it starts, as the standard
library does for the ``random`` module's own. A generator given a seed is never registered: its
sequence is what its user asked for, and goes on in each child from where the fork found it.
"""

from __future__ import annotations

import os
import weakref
from typing import TYPE_CHECKING, Final, TypeVar

if TYPE_CHECKING:
    import random

__all__ = ["fork_reseeded", "fork_safe"]

_L = TypeVar("_L")

_LOCKS: Final[weakref.WeakSet[object]] = weakref.WeakSet()
"""Every live lock :func:`fork_safe` registered."""
_GENERATORS: Final[weakref.WeakSet[random.Random]] = weakref.WeakSet()
"""Every live random generator :func:`fork_reseeded` registered."""


def fork_safe(lock: _L) -> _L:
    """Return ``lock`` (a new ``threading.Lock`` or ``RLock``), made free again in a forked child.

    One weak reference per lock, when it is made (never per call).
    """
    _LOCKS.add(lock)
    return lock


def fork_reseeded(generator: random.Random) -> random.Random:
    """Return ``generator`` (a ``random.Random`` made without a seed), seeded anew in a forked child.

    One weak reference per generator, when it is made (never per draw). Register only a
    generator made without a seed: one made with a seed replays in every child.
    """
    _GENERATORS.add(generator)
    return generator


def _in_child() -> None:
    """``os.register_at_fork(after_in_child=...)``: free every registered lock, reseed every generator.

    One thread runs. A generator is seeded from the operating system (``os.urandom``), so each
    child draws a sequence of its own.
    """
    for lock in list(_LOCKS):
        lock._at_fork_reinit()  # type: ignore[attr-defined] # what the standard library's locks do
    for generator in list(_GENERATORS):
        generator.seed()


if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_in_child)
