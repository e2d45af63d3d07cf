"""The one exact counter for counts that move on every call, bumped without a lock.

``counter.add()`` is ``next()`` of an :func:`itertools.count`: one call into C that runs to
completion before any other thread can touch the counter (under the GIL, and in free-threaded
builds where ``itertools.count`` is thread-safe), so no increment is ever lost, whereas
``self.n += 1`` is a read, an add and a write that two threads can interleave.

Reading (:attr:`Counter.value`) is rare (metrics export, stats) and takes a lock: it draws one
number from the same count, which tells how many numbers were drawn so far, and subtracts the
numbers earlier reads drew.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Counter"]


class Counter:
    """An exact counter: :meth:`add` from any thread without a lock, :attr:`value` to read it.

    Attributes:
        add: Count one (``next()`` of the underlying count, bound once).
    """

    __slots__ = ("_count", "_lock", "_reads", "add")

    def __init__(self) -> None:
        self._count = itertools.count()
        self.add: Callable[[], int] = self._count.__next__
        self._lock = threading.Lock()
        self._reads = 0

    @property
    def value(self) -> int:
        """How many times :meth:`add` was called."""
        with self._lock:
            drawn = next(self._count)  # every add so far, plus one number per earlier read
            reads = self._reads
            self._reads = reads + 1
        return drawn - reads
