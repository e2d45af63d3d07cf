"""One loop timer per event loop, shared by every timed wait of the library on that loop.

A loop timer that is cancelled stays in the loop's own heap (with the context it copied) until
the loop next iterates. A coroutine that makes many quick calls without suspending would pile up
one such timer per call: memory that grows with the number of calls. So every timed wait on a
loop (the deadline of a timeout scope, the queue timeout of a bulkhead waiter) is a
:class:`TimerEntry` in the loop's one :class:`LoopTimer`: a heap behind a single armed loop
timer, set for the earliest entry. An entry that ends early is only marked ended; the heap is
emptied or compacted as it goes, and no loop timer is ever cancelled.
"""

from __future__ import annotations

import contextvars
import heapq
import math
import weakref
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import asyncio

__all__ = ["LoopTimer", "TimerEntry", "loop_timer"]

_IDLE: Final = 0
"""An entry that is not (or no longer) in a heap."""
_ARMED: Final = 1
"""An entry waiting in its loop's heap to fire."""
_ENDED: Final = 2
"""An entry cancelled before it fired; still in the heap (it is dropped lazily)."""
_COMPACT_AFTER: Final = 64
"""Ended entries a heap may hold before it is compacted (when they are also half of it)."""


class TimerEntry(ABC):
    """Something due at a loop time: :meth:`fire` runs then, unless :meth:`LoopTimer.cancel` ran first.

    An entry is in at most one heap at a time: add it once, and again only after it fired (a
    cancelled entry stays in its heap until it is dropped lazily). ``timer_state`` is set by
    :meth:`LoopTimer.add`; read :attr:`armed` only after that.
    """

    __slots__ = ("timer_state",)

    timer_state: int

    @property
    def armed(self) -> bool:
        """Whether the entry, added to a timer, still waits there to fire."""
        return self.timer_state == _ARMED

    @abstractmethod
    def fire(self) -> None:
        """Called by the loop timer once the entry is due (on the loop's thread, in an empty context)."""


class LoopTimer:
    """The timed entries of one event loop, behind one armed loop timer. Used from the loop's thread only."""

    __slots__ = ("_armed_at", "_ended", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._ended = 0
        self._seq = 0
        self._armed_at = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, entry: TimerEntry, when: float) -> None:
        """Fire ``entry`` at loop time ``when`` (on the next iteration if that has passed).

        ``entry`` is new, or has fired (see :class:`TimerEntry`).
        """
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, entry))
        entry.timer_state = _ARMED
        if when < self._armed_at:
            self._arm(loop, when)

    def cancel(self, entry: TimerEntry) -> None:
        """Forget ``entry`` if it has not fired yet (O(1); the heap is emptied or compacted lazily)."""
        if entry.timer_state != _ARMED:
            return
        entry.timer_state = _ENDED
        self._ended += 1
        heap = self._heap
        if self._ended == len(heap):  # the usual case: every entry has ended
            heap.clear()
            self._ended = 0
        elif self._ended > _COMPACT_AFTER and 2 * self._ended > len(heap):
            live = [item for item in heap if item[2].timer_state == _ARMED]
            heapq.heapify(live)
            self._heap = live
            self._ended = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._armed_at = when
        loop.call_at(when, self._expire, loop, when, context=contextvars.Context())

    def _expire(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Loop-timer callback: fire every entry that is due, then re-arm for the next one."""
        if when == self._armed_at:
            self._armed_at = math.inf
        due = max(loop.time(), when)
        heap = self._heap
        while heap:
            entry_when, _, entry = heap[0]
            if entry.timer_state == _ENDED:  # cancelled: it stays so
                heapq.heappop(heap)
                self._ended -= 1
                continue
            if entry_when > due:
                break
            heapq.heappop(heap)
            entry.timer_state = _IDLE
            entry.fire()
        if heap and heap[0][0] < self._armed_at:
            self._arm(loop, heap[0][0])


_TIMERS: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], LoopTimer]] = {}
"""Each loop's timer, keyed by the loop's ``id`` beside a weak reference to the loop, whose death
callback removes the entry: CPython runs it while the loop is freed, before its ``id`` can be
reused, so a key always names the live loop it was made for. Keying by ``id`` spares a look-up
the weak reference it would otherwise make on every call."""


def loop_timer(loop: asyncio.AbstractEventLoop) -> LoopTimer:
    """Return the shared timer of ``loop``, creating it on first use."""
    key = id(loop)
    found = _TIMERS.get(key)
    if found is None:
        found = _TIMERS.setdefault(key, (weakref.ref(loop, lambda _: _TIMERS.pop(key, None)), LoopTimer()))
    return found[1]
