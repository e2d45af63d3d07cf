"""The one exact counter for counts that move on every call, bumped without a lock.

A :class:`Counter` is an :func:`itertools.count` bumped with ``next(counter)``: one call into C
that runs to completion before any other thread can touch the counter (under the GIL, and in
free-threaded builds where ``itertools.count`` is thread-safe), so no increment is ever lost,
whereas ``self.n += 1`` is a read, an add and a write that two threads can interleave.

Reading (:attr:`Counter.value`) is rare (metrics export, stats) and takes a lock: it draws one
number from the same count, which tells how many numbers were drawn so far, and subtracts the
numbers earlier reads drew. One lock serves the reads of every counter (a read holds it for a
few bytecodes, never while anything else runs), so a counter is one small object: a process
keeps two per breaker and about fifteen per policy. A class shows a counter as a read-only
``int`` attribute with a :class:`CounterValue`.

:class:`Counts` is the base of a pattern's shared state when all its links count on every call
is the execution: one such counter, and a lock for the rarer counts.
"""

from __future__ import annotations

import abc
import itertools
import os
import threading
from typing import TYPE_CHECKING, Final, TypeVar, overload

__all__ = ["Counter", "CounterValue", "Counts", "add_to", "read_all", "snapshot"]


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    _Count = itertools.count[int]
else:
    _Count = itertools.count  # not subscriptable at run time


_T = TypeVar("_T")

_READS: Final = threading.RLock()
"""The lock of every counter's reads and bulk adds (:attr:`Counter.value`, :meth:`Counter.add`),
and of every snapshot that holds a lock of calls (:func:`snapshot`).

Held across ``os.fork()`` (it is never held while anything else runs): a read is never half done
in a forked child, whose counters then count on from the parent's values, and the child finds
the lock free. Reentrant: a snapshot reads counters while it holds it."""
if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(before=_READS.acquire, after_in_parent=_READS.release, after_in_child=_READS.release)


class Counter(_Count):
    """An exact counter: ``next(counter)`` from any thread without a lock; :attr:`value` reads it."""

    __slots__ = ("_reads",)
    # No __init__: itertools.count starts itself in __new__, so a counter is made with no Python
    # frame; ``_reads`` (the numbers reads drew, see _read) is set by the first read or add.

    @property
    def value(self) -> int:
        """How many times ``next(counter)`` was called (reads not included)."""
        with _READS:
            return self._read()

    def _read(self) -> int:
        """The value, read with ``_READS`` held (the one rule of a read)."""
        drawn = next(self)  # every increment so far, plus one number per earlier read
        reads = self._drawn_by_reads()
        self._reads = reads + 1
        return drawn - reads

    def _drawn_by_reads(self) -> int:
        """The numbers reads drew, less the counts added (``0`` until the first read or add)."""
        return getattr(self, "_reads", 0)

    def add(self, count: int) -> None:
        """Add ``count`` (``>= 0``) at once: a rare bulk increment, under the read lock.

        For counts carried over from another counter (a retired instance's, folded into totals
        that must never go down); ``next(counter)`` stays the one way to count on a hot path.
        """
        with _READS:
            self._reads = self._drawn_by_reads() - count

    def __reduce__(self) -> tuple[type[Counter], tuple[int]]:
        """Copied or pickled as a new counter at this one's :attr:`value`.

        Not as an ``itertools.count`` is: at the numbers drawn, reads included, which a copy
        would count as increments (and 3.12 warns of, 3.14 refuses).
        """
        return (type(self), (self.value,))


def snapshot(lock: threading.Lock, read: Callable[[], _T]) -> _T:
    """Return ``read()``, run under ``lock``, a lock the calls of a pattern take to count.

    The one rule of a read of such a lock outside a call (``get_stats()``, maybe in a thread of
    its own): ``lock`` is taken only under :data:`_READS`, which ``os.fork()`` waits for. So no
    snapshot holds it at a fork, and a forked child's calls find it free (a call in flight at
    the fork is the one thing that can hold it there: see ``engine.forking``), at no cost to
    the calls, which take ``lock`` alone.
    """
    with _READS, lock:
        return read()


def read_all(counters: Iterable[Counter]) -> list[int]:
    """Return the :attr:`Counter.value` of each counter, read in one hold of the read lock.

    For a reader of many counts at once (an observable callback reads seven per pipeline):
    one lock round trip instead of one per counter.
    """
    with _READS:
        return [counter._read() for counter in counters]


class CounterValue:
    """A read-only ``int`` attribute: the value of the :class:`Counter` the instance keeps in another.

    ``retries = CounterValue("_retries", "Backoffs scheduled.")`` in a class body reads
    ``self._retries.value``, where the counting code bumps ``next(self._retries)``. A subclass
    that keeps its counters elsewhere overrides :meth:`counter`.

    Args:
        counter: The name of the attribute that holds the counter.
        doc: The attribute's docstring.
    """

    def __init__(self, counter: str, doc: str) -> None:
        self._counter = counter
        self.__doc__ = doc

    def counter(self, instance: object) -> Counter:
        """Return the counter of ``instance`` this attribute reads."""
        counter: Counter = getattr(instance, self._counter)
        return counter

    @overload
    def __get__(self, instance: None, owner: type) -> CounterValue: ...

    @overload
    def __get__(self, instance: object, owner: type) -> int: ...

    def __get__(self, instance: object, owner: type) -> int | CounterValue:
        return self if instance is None else self.counter(instance).value


class Counts(abc.ABC):
    """The counts of a pattern instance: its executions, exact and lock-free, and rarer counts.

    :attr:`executions` is the :class:`Counter` its links give the driver as their ``entries``
    (bumped once per execution a link admitted, without a lock); a subclass keeps its other
    counts as plain integers, changes them under :attr:`lock` and lists them in :meth:`counts`,
    which :meth:`stats` reads under that lock.
    """

    __slots__ = ("executions", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # taken by calls only: see engine.forking
        self.executions = Counter()

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Return the counts other than ``executions``, in snapshot order (called under :attr:`lock`)."""

    def stats(self) -> dict[str, int]:
        """Return a snapshot: ``executions``, then :meth:`counts`, all read under :attr:`lock`."""
        return snapshot(self.lock, self._snapshot)

    def _snapshot(self) -> dict[str, int]:
        return {"executions": self.executions.value, **self.counts()}


def add_to(into: object, counts: dict[str, int], sign: int = 1) -> None:
    """Add each of ``counts`` to the attribute of that name of ``into`` (``sign=-1``: take it out).

    For the plain-integer totals that hold what evicted or retired instances counted.
    """
    for name, value in counts.items():
        setattr(into, name, getattr(into, name) + sign * value)
