"""One loop timer per event loop, shared by every timed wait of the library on that loop.

A loop timer that is cancelled stays in the loop's own heap (with the context it copied) until
the loop next iterates. A coroutine that makes many quick calls without suspending would pile up
one such timer per call: memory that grows with the number of calls. So every timed wait on a
loop (the deadline of a timeout scope, the queue timeout of a bulkhead waiter) is a
:class:`TimerEntry` in the loop's one :class:`LoopTimer`, behind a single armed loop timer set
for the earliest entry. An entry that ends early is only marked ended; the timer drops it as it
goes, and no loop timer is ever cancelled.

Most entries of a loop come due in the order they were added (waits of one timeout started one
after another: a bulkhead's queue, a policy's timeout scopes), so the timer keeps them in a
first-in-first-out *lane*, a deque in deadline order, and only an entry due sooner than the
lane's last goes to a heap: an entry in order costs an append and no tuple, and the waits that
end in the order they began (a queue's) leave from the lane's front.

An entry's time is on its timer's clock (:attr:`LoopTimer.now`), which is the loop's time on
every loop but uvloop's. uvloop's loop time is the monotonic clock in whole milliseconds, and it
sets a loop timer for a delay rounded to the nearest millisecond: a deadline on the system clock
would fire up to a millisecond and a half before that clock reached it, and every reader of a
deadline tells its cancellation from the caller's by the time left on that clock. The timer of
a uvloop loop (:class:`_MillisecondLoopTimer`) keeps its entries on the monotonic clock itself
and fires none before its time there. Which timer a loop gets is decided once, when its timer is
made (:func:`loop_timer`).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import heapq
import math
import sys
import time
import weakref
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any, Final, cast

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LoopTimer", "TimerEntry", "before_full_collection", "loop_timer"]

_IDLE: Final = 0
"""An entry that is not (or no longer) in a timer."""
_IN_HEAP: Final = 1
"""An entry waiting in its timer's heap to fire."""
_ENDED: Final = 2
"""An entry cancelled before it fired; still in its heap or lane (it is dropped lazily)."""
_IN_LANE: Final = 3
"""An entry waiting in its timer's lane to fire."""
_COMPACT_AFTER: Final = 64
"""Ended entries a heap or a lane may hold before it is compacted (when they are also half of it)."""


def _worth_compacting(ended: int, size: int) -> bool:
    """Whether a heap or lane of ``size`` entries, ``ended`` of them cancelled, is rebuilt now.

    Past :data:`_COMPACT_AFTER` ended entries, once they are half of it: each entry is copied
    O(1) times on average, and a container never holds more than twice its live entries.
    """
    return ended > _COMPACT_AFTER and 2 * ended > size


class TimerEntry(ABC):
    """Something due at a loop time: :meth:`fire` runs then, unless :meth:`LoopTimer.cancel` ran first.

    An entry is in at most one timer at a time: add it once, and again only after it fired (a
    cancelled entry stays in its heap or lane until it is dropped lazily). ``timer_state`` and
    ``timer_when`` (its loop time) are set by :meth:`LoopTimer.add`; read :attr:`armed` only
    after that.
    """

    __slots__ = ("timer_state", "timer_when")

    timer_state: int
    timer_when: float

    @property
    def armed(self) -> bool:
        """Whether the entry, added to a timer, still waits there to fire."""
        state = self.timer_state
        return state == _IN_LANE or state == _IN_HEAP  # noqa: PLR1714 - two compares, no tuple

    @abstractmethod
    def fire(self) -> None:
        """Called by the loop timer once the entry is due (on the loop's thread, in an empty context)."""


class _LetGo(dict[Any, Any]):
    """The held scopes of a closed loop's timer, once it let go of them (:meth:`LoopTimer.forget`): none.

    A held scope whose task is freed later leaves its own list of its task's held scopes, then
    deletes its task's key when the list is empty, as on a live timer: here the key is gone.
    """

    __slots__ = ()

    def __delitem__(self, key: object) -> None:
        self.pop(key, None)


class LoopTimer:
    """The timed entries of one event loop, behind one armed loop timer. Used from the loop's thread only.

    Attributes:
        now: The clock the entries' times are on (``timer.now() + seconds`` is due in ``seconds``):
            the loop's time, read without holding the loop (:func:`loop_timer`).
    """

    __slots__ = ("_armed_at", "_heap", "_heap_ended", "_lane", "_lane_ended", "_seq", "held", "now")

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        # Per task, entries held back, which one of the task's entries firing adds: the deadline
        # scopes an earlier one of their task binds (kept and read by engine.deadline). Here, so
        # that a closed loop's are dropped with its timer (_drop_closed).
        self.held: dict[asyncio.Task[Any], list[TimerEntry]] = {}
        self._lane: deque[TimerEntry] = deque()
        self._lane_ended = 0
        self._heap: list[tuple[float, int, TimerEntry]] = []
        self._heap_ended = 0
        self._seq = 0
        self._armed_at = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, entry: TimerEntry, when: float) -> None:
        """Fire ``entry`` at ``when`` on the timer's clock, :attr:`now` (next iteration if that has passed).

        ``entry`` is new, or has fired (see :class:`TimerEntry`). It joins the lane when it is
        due no sooner than the lane's last entry, else the heap.
        """
        entry.timer_when = when
        lane = self._lane
        if not lane or when >= lane[-1].timer_when:
            lane.append(entry)
            entry.timer_state = _IN_LANE
        else:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, entry))
            entry.timer_state = _IN_HEAP
        if when < self._armed_at:
            self._arm(loop, when)

    def cancel(self, entry: TimerEntry) -> None:
        """Forget ``entry`` if it has not fired yet (O(1) amortised; dropped or compacted lazily)."""
        state = entry.timer_state
        if state == _IN_LANE:
            self._leave_lane(entry)
        elif state == _IN_HEAP:
            entry.timer_state = _ENDED
            self._heap_ended += 1
            self._tidy_heap()

    def forget(self) -> None:
        """Let go of every entry: this is a closed loop's timer, which never fires again.

        Its entries hold their tasks (a scope its task, a queued bulkhead call its future), and
        one of them kept alive elsewhere (a waiter a bulkhead still queues) keeps this timer: the
        other tasks of the loop, among them the call that holds the slot that waiter waits for,
        would never be freed. Each entry is left idle first, so that one left later (as the
        collector frees its task, on any thread) cancels nothing here: an entry still listed is
        reachable, and so not being freed, until then. The held scopes go too: a scope left later
        leaves its own list, and finds its task's key gone (:class:`_LetGo`).
        """
        for entry in self._lane:
            entry.timer_state = _IDLE
        for _, _, entry in self._heap:
            entry.timer_state = _IDLE
        self._lane = deque()
        self._heap = []
        self._lane_ended = self._heap_ended = 0
        self.held = _LetGo()  # its keys are tasks

    def _leave_lane(self, entry: TimerEntry) -> None:
        """Take ``entry`` out of the lane: at once from the front, else lazily (compacted when half ended).

        The lane's front is never an ended entry: the ended ones behind it leave with it (a front
        that fires leaves here too, :meth:`_expire`).
        """
        lane = self._lane
        if lane[0] is entry:  # the usual case: waits end in the order they began
            lane.popleft()
            entry.timer_state = _IDLE
            while lane and lane[0].timer_state == _ENDED:
                lane.popleft()
                self._lane_ended -= 1
            return
        entry.timer_state = _ENDED
        self._lane_ended += 1
        if _worth_compacting(self._lane_ended, len(lane)):
            live = [item for item in lane if item.timer_state == _IN_LANE]
            lane.clear()  # in place: a running _expire holds this deque
            lane.extend(live)
            self._lane_ended = 0

    def _tidy_heap(self) -> None:
        """Empty the heap when every entry ended; compact it when half ended."""
        heap = self._heap
        if self._heap_ended == len(heap):
            heap.clear()
            self._heap_ended = 0
        elif _worth_compacting(self._heap_ended, len(heap)):
            heap[:] = [item for item in heap if item[2].timer_state == _IN_HEAP]  # in place, as above
            heapq.heapify(heap)
            self._heap_ended = 0

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Arm the loop timer for ``when``; one due already runs before any task's next step.

        ``call_at`` for a time that has passed only makes the callback ready on the loop's next
        iteration, after the steps of the tasks already scheduled: a deadline entered expired (a
        zero budget) would let its task run on to its second suspension. Such an entry fires
        from ``call_soon`` instead, as ``asyncio.timeout(0)`` does. Only an entry due sooner
        than the armed time comes here: the scopes entered while the loop timer is armed for an
        earlier time (most of them) never read the loop's time again.
        """
        self._armed_at = when
        if when <= self.now():
            loop.call_soon(self._expire, loop, when, context=contextvars.Context())
        else:
            loop.call_at(when, self._expire, loop, when, context=contextvars.Context())

    def _next(self) -> TimerEntry | None:
        """Return the earliest entry that has not ended, or ``None``.

        The heap's ended entries before it are dropped here; the lane's front is never an ended
        entry (:meth:`_leave_lane`, by which every front leaves).
        """
        heap, lane = self._heap, self._lane
        while heap and heap[0][2].timer_state == _ENDED:
            heapq.heappop(heap)
            self._heap_ended -= 1
        if heap and (not lane or heap[0][0] < lane[0].timer_when):
            return heap[0][2]
        return lane[0] if lane else None

    def _expire(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Loop-timer callback: fire every entry that is due, in deadline order, then re-arm for the next."""
        if when == self._armed_at:
            self._armed_at = math.inf
        due = max(self.now(), when)
        while (entry := self._next()) is not None and entry.timer_when <= due:
            if entry.timer_state == _IN_HEAP:
                heapq.heappop(self._heap)
                entry.timer_state = _IDLE
            else:  # the lane's front: it leaves as a cancelled front does
                self._leave_lane(entry)
            entry.fire()
        if entry is not None and entry.timer_when < self._armed_at:
            self._arm(loop, entry.timer_when)


class _MillisecondLoopTimer(LoopTimer):
    """The timer of a uvloop loop: entries on the monotonic clock, none fired before its time there.

    uvloop's loop time is the monotonic clock in whole milliseconds (up to one behind it), and
    ``call_at`` sets a loop timer for the delay rounded to the nearest millisecond: a loop timer
    may run up to a millisecond and a half before the monotonic clock reaches the time it was
    set for. So the loop timer is set for the whole milliseconds of the wait but one, which runs
    before the time (up to two milliseconds), and what is left is waited turn by turn of the
    loop, as asyncio's loop waits for a timer due sooner than its next turn: the entry fires in
    the first turn at or past its time, never before it, nor milliseconds after it (a caller's
    cancellation then would be taken for the deadline's). A wake-up for a time no longer armed
    is dropped. An entry due already fires as on every loop (:meth:`LoopTimer._arm`).
    """

    __slots__ = ()

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        wait = when - self.now()
        if wait <= 0.0:
            LoopTimer._arm(self, loop, when)
            return
        self._armed_at = when
        self._set(loop, when, wait)

    def _set(self, loop: asyncio.AbstractEventLoop, when: float, wait: float) -> None:
        """Wake up before ``when``, ``wait`` seconds away: its whole milliseconds but one, else next turn."""
        whole = math.ceil(wait * 1000.0) - 1
        if whole > 0:
            loop.call_at(loop.time() + whole / 1000.0, self._wake, loop, when, context=contextvars.Context())
        else:
            loop.call_soon(self._wake, loop, when, context=contextvars.Context())

    def _wake(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        """Loop-timer callback: expire at ``when`` once it is reached; until then, wait for it again."""
        wait = when - self.now()
        if wait <= 0.0:
            self._expire(loop, when)
        elif when == self._armed_at:
            self._set(loop, when, wait)


def _monotonic() -> float:
    """The time of asyncio's own loops (``BaseEventLoop.time``): the monotonic clock, read the same way."""
    return time.monotonic()


def _time_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """Return a reader of ``loop``'s own time (a loop of its own clock) that does not hold the loop."""
    ref = weakref.ref(loop)

    def now() -> float:
        return cast("asyncio.AbstractEventLoop", ref()).time()  # the timer is dropped with its loop

    return now


_ASYNCIO_TIME: Final = asyncio.BaseEventLoop.time


def _new_timer(loop: asyncio.AbstractEventLoop) -> LoopTimer:
    """Make ``loop``'s timer, on the clock its time is: chosen once per loop, never per call.

    asyncio's loops read the monotonic clock (:func:`_monotonic`, what their ``time`` runs);
    uvloop's count it in whole milliseconds (:class:`_MillisecondLoopTimer`); any other loop
    (one of a virtual time) is timed on its own ``time``.
    """
    kind = getattr(type(loop), "time", None)
    if kind is _ASYNCIO_TIME:
        return LoopTimer(_monotonic)
    uvloop = sys.modules.get("uvloop.loop")  # imported by whoever made a uvloop loop
    if kind is not None and kind is getattr(getattr(uvloop, "Loop", None), "time", None):
        return _MillisecondLoopTimer(_monotonic)
    return LoopTimer(_time_of(loop))


_TIMERS: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], LoopTimer]] = {}
"""Each loop's timer, keyed by the loop's ``id`` beside a weak reference to the loop, whose death
callback removes the entry: CPython runs it while the loop is freed, before its ``id`` can be
reused, so a key always names the live loop it was made for. Keying by ``id`` spares a look-up
the weak reference it would otherwise make on every call.

A loop closed while entries were pending (its tasks never resumed: ``loop.close()`` without
cancelling them) would never be freed: its timer holds the entries, which hold their tasks and
so the loop. Such a timer is dropped when the next loop makes its timer (:func:`_drop_closed`),
so that the closed loop, its timer and its tasks become garbage; and before every full collection
(:func:`_before_full_collection`), where no loop makes a timer after it (the later calls are
threads', or run on loops that made theirs before), so that the collection frees them."""


def loop_timer(loop: asyncio.AbstractEventLoop) -> LoopTimer:
    """Return the shared timer of ``loop``, creating it on first use."""
    key = id(loop)
    found = _TIMERS.get(key)
    if found is None:
        _drop_closed()
        entry = (weakref.ref(loop, lambda _: _TIMERS.pop(key, None)), _new_timer(loop))
        found = _TIMERS.setdefault(key, entry)
    return found[1]


def _drop_closed() -> None:
    """Forget the timers of closed loops (once per new loop's timer, and per full collection).

    A closed loop runs nothing again, so its timer has nothing left to fire: it lets go of its
    entries (:meth:`LoopTimer.forget`), which an entry kept alive elsewhere would otherwise keep
    with the timer. The key stays unused while the closed loop lives, so its death callback, if
    it still runs, removes nothing else. The keys are copied to a list before any is looked at:
    copying them makes nothing the collector tracks, so no collection runs while the table is
    read, and a key removed meanwhile (a loop's death callback, a drop before a full collection:
    :func:`_before_full_collection`) is skipped.
    """
    for key in list(_TIMERS):
        found = _TIMERS.get(key)
        if found is None:
            continue
        loop = found[0]()
        if loop is not None and loop.is_closed() and _TIMERS.pop(key, None) is not None:
            found[1].forget()  # by the one thread that took it out


_CLOSED_LOOP_DROPS: list[Callable[[], None]] = []
"""What else lets go of closed loops before a full collection (:func:`before_full_collection`)."""


def before_full_collection(drop: Callable[[], None]) -> None:
    """Run ``drop`` before every full collection, after the timers of closed loops are dropped.

    For a table of the library's that holds what a closed loop's pending work opened (a store's
    client of the loop), which holds the loop: ``drop`` lets go of them, and the collection then
    frees the loop, as it does the timers' (:func:`_before_full_collection`). It runs in whichever
    thread allocates, maybe one that holds the table's lock: it must neither block nor raise.
    """
    _CLOSED_LOOP_DROPS.append(drop)


def _before_full_collection(phase: str, info: dict[str, int]) -> None:
    """``gc.callbacks``: drop the timers of closed loops before a full collection, which then frees them.

    A closed loop's timer kept the loop's pending tasks until the next loop made its timer; with
    no such loop (the later calls run in threads, or on loops whose timers were made before), a
    task holding a bulkhead slot was never freed, and the slot never given back. Only a full
    collection can free a loop that lived long enough to be old, so the younger ones ask nothing.
    The other tables of closed loops' things are dropped then too (:func:`before_full_collection`).
    """
    if phase == "start" and info["generation"] == _OLDEST:
        if _TIMERS:
            _drop_closed()
        for drop in _CLOSED_LOOP_DROPS:
            drop()


_OLDEST: Final = 2
"""The generation of the collector's full collections (``gc.collect()``'s default)."""

gc.callbacks.append(_before_full_collection)
