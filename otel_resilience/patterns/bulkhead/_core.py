"""The bulkhead's sans-I/O state: slots, the FIFO queue of waiters and the counters, behind one lock.

It is the :class:`~otel_resilience.engine.waiting.WaitQueue` the engine's waiters wait in; the
waiting itself (futures, locks, the loop timer) is :mod:`otel_resilience.engine.waiting`'s.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypedDict, cast

from otel_resilience.engine.closing import lock_taken
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.waiting import (
    ADMITTED,
    CANCELLED,
    FULL,
    GRANTED,
    TIMED_OUT,
    WAITING,
    AsyncWaiter,
    Enqueued,
    Waiter,
    WaitOwner,
    new_waiter,
)

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["BulkheadStats", "BulkheadStatsDict"]

_NO_QUEUE: Final[deque[Waiter]] = deque(maxlen=0)
"""The queue of every bulkhead in which no call has queued yet: always empty, never appended to
(:meth:`_BulkheadCore.acquire` gives a bulkhead its own deque first; every other method only
reads it, or removes and re-queues waiters that were queued, so it holds no waiter either)."""
_NO_OFFERS: Final[set[AsyncWaiter]] = set()
"""The offered waiters of every bulkhead that has offered none yet: always empty (only read and
discarded from; :meth:`_BulkheadCore._pass_on_locked` gives a bulkhead its own set first)."""


class BulkheadStatsDict(TypedDict):
    """The snapshot returned by :meth:`Bulkhead.get_stats`."""

    name: str
    active: int
    waiting: int
    max_concurrent: int
    max_waiting: int
    total: int
    completed: int
    rejected: int
    timed_out: int
    cancelled: int
    peak_active: int
    peak_waiting: int
    available: int


@dataclass(slots=True, eq=False, repr=False)
class BulkheadStats:
    """Live counters of one bulkhead, as integers (cheap to read from gauges).

    Every call that asks for a slot is counted once in ``total`` and, at any moment, is in
    exactly one of: running (``active``), queued (``waiting``), ``completed``, ``rejected``,
    ``timed_out`` or ``cancelled``. Each attribute is read without the bulkhead's lock (``total``
    and ``rejected`` add the rejections counted without it, an exact counter); two attributes
    read one after the other may be a call apart. :meth:`Bulkhead.get_stats` takes a consistent
    snapshot. Treat every attribute as read-only.

    Attributes:
        max_concurrent: The concurrency limit.
        max_waiting: The queue limit.
        active: Calls holding a slot now.
        waiting: Calls in the queue now.
        total: Calls that asked for a slot.
        completed: Calls that got a slot and finished running (returned, raised or were
            cancelled while running).
        rejected: Calls rejected at once because every slot was busy and the queue was full.
        timed_out: Calls that waited in the queue longer than the timeout.
        cancelled: Calls cancelled while waiting (or just after a slot was handed to them,
            before they ran).
        peak_active: The highest ``active`` seen.
        peak_waiting: The highest ``waiting`` seen.
    """

    max_concurrent: int
    max_waiting: int
    active: int = field(default=0, init=False)
    waiting: int = field(default=0, init=False)
    completed: int = field(default=0, init=False)
    timed_out: int = field(default=0, init=False)
    cancelled: int = field(default=0, init=False)
    _peak: int = field(default=0, init=False)
    """The highest ``active`` a freed slot left behind (:meth:`_BulkheadCore._pass_on_locked`)."""
    peak_waiting: int = field(default=0, init=False)
    _asked: int = field(default=0, init=False)
    """The calls decided under the lock (admitted, queued or rejected there)."""
    _refused: int = field(default=0, init=False)
    """The calls rejected under the lock."""
    _shed: Counter = field(default_factory=Counter, init=False)
    """The calls rejected without the lock (:meth:`_BulkheadCore.acquire`): ``next()`` from any thread."""

    @property
    def total(self) -> int:
        """Calls that asked for a slot."""
        return self._totals(self._shed.value)[0]

    @property
    def rejected(self) -> int:
        """Calls rejected at once because every slot was busy and the queue was full."""
        return self._totals(self._shed.value)[1]

    def _totals(self, shed: int) -> tuple[int, int]:
        """``total`` and ``rejected``: what was counted under the lock, and ``shed`` rejected without it."""
        return self._asked + shed, self._refused + shed

    @property
    def peak_active(self) -> int:
        """The highest ``active`` seen.

        Recorded where ``active`` goes down, as a slot is freed (the highest it reached since is
        the value it leaves), and read with ``active`` for the calls running now: a call is
        admitted with a plain ``active += 1``. ``active`` is read first, so a slot freed between
        the two reads is seen in one or the other.
        """
        active = self.active
        peak = self._peak
        return max(peak, active)

    @property
    def available(self) -> int:
        """Slots free now (``max_concurrent - active``)."""
        return self.max_concurrent - self.active

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)!r}" for name in _PUBLIC_COUNTS)
        return f"BulkheadStats({counts})"  # the public type, whatever class keeps the counts


_PUBLIC_COUNTS: Final = tuple(
    key for key in BulkheadStatsDict.__annotations__ if key not in ("name", "available")
)
"""What the repr of :class:`BulkheadStats` shows: the counts of its snapshot (:class:`BulkheadStatsDict`)."""


_ROOM_LOOK_EVERY: Final = 64
"""A full queue is looked through for the places of waiters that will never run at one refusal
in this many (:meth:`_BulkheadCore._make_room_locked`)."""


class _BulkheadCore(BulkheadStats):
    """The sans-I/O state: slots, FIFO queue and counters, behind one short lock (a ``WaitQueue``).

    Invariant: while a call that can run waits, every slot is taken, because a freed slot goes
    straight to the oldest waiter that can take it. So :meth:`acquire` never lets a new arrival
    overtake such a waiter.

    A waiter whose event loop is not running (stopped, not closed) cannot take a slot: it keeps
    its place, the slot goes to the next waiter (or is freed), and the waiter is nudged so that
    it looks again as soon as its loop runs. A slot offered to an async waiter whose loop stopped
    before its task could claim it is taken back by the next caller that finds no free slot
    (:meth:`acquire`), or by the next waiter whose timeout comes (:meth:`expire`); the waiter
    returns to the front of the queue. A queued waiter whose loop is closed will never run: it
    leaves the queue, counted cancelled, when a slot is passed on, when it is at the front as a
    caller queues (:meth:`_leave_gone_front_locked`), or when a caller would be
    refused for a full queue (:meth:`_make_room_locked`, which also times out a stopped loop's
    waiter past its queue timeout): a caller is refused only when the queue is full of waiters
    that may still run the call.
    """

    __slots__ = ("_lock", "_offered", "_queue")

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        super().__init__(max_concurrent, max_waiting)
        self._lock = fork_safe(threading.Lock())  # a reload's resize takes it too: see engine.forking
        self._queue: deque[Waiter] = _NO_QUEUE  # a deque of its own once a call queues (~700 B)
        self._offered: set[AsyncWaiter] = _NO_OFFERS  # a set of its own at the first offer

    def acquire(self, ctx: ExecutionContext, owner: WaitOwner) -> Waiter | Enqueued:
        """Take a free slot, else queue a new waiter, else reject: one lock round trip per call.

        A slot offered to a stopped loop's waiter is taken back first when every slot is busy
        (:meth:`_reclaim_locked`). The waiter is made only for a call that queues, under the
        lock: :func:`~otel_resilience.engine.waiting.new_waiter` of the driver that runs
        (``ctx.sync``, nothing else of ``ctx`` is read), for ``owner`` (the bulkhead's link).

        A call that can find no place at all is rejected without the lock: every slot taken, no
        queue allowed (``max_waiting == 0``) and none ever made, so that no waiter holds or is
        offered a slot. Of what decides it only ``active`` moves with the calls, and it is read at
        one instant, at which the locked path would have rejected the call too (a :meth:`resize`
        that runs meanwhile applies from the next call). It is counted by an exact counter
        (:class:`BulkheadStats`).

        Returns:
            ``ADMITTED`` (the call holds a slot), ``FULL`` (rejected and counted: every slot busy
            and the queue full or not allowed), or the queued waiter.
        """
        if self.max_waiting == 0 and self.active >= self.max_concurrent and self._queue is _NO_QUEUE:
            next(self._shed)
            return FULL
        wakes = None
        lock = self._lock
        lock.acquire()  # not `with`: on every call, half the cost
        try:
            self._asked += 1
            if self._offered and self.active >= self.max_concurrent:
                wakes = self._reclaim_locked()
            if self.active < self.max_concurrent:
                self.active += 1  # its peak is recorded as a slot is freed (peak_active)
                return ADMITTED
            if self.waiting >= self.max_waiting and not self._make_room_locked():
                self._refused += 1  # every slot busy and no place in the queue
                return FULL
            waiter = new_waiter(ctx.sync, self, owner)
            queue = self._queue
            if queue is _NO_QUEUE:
                queue = self._queue = deque()
            elif queue and queue[0].loop is not waiter.loop:
                self._leave_gone_front_locked()  # the oldest waiter's loop, not this one's, may be closed
            queue.append(waiter)
            self.waiting += 1
            if self.waiting > self.peak_waiting:  # noqa: PLR1730 - a compare, not a call
                self.peak_waiting = self.waiting
            return waiter
        finally:
            lock.release()
            if wakes:  # outside the lock
                self._hand_over(wakes)

    def release(self) -> None:
        """Give back the slot of a call that finished running (handing it to the oldest waiter)."""
        lock = self._lock
        lock.acquire()  # not `with`: on every call, half the cost
        try:
            self.completed += 1
            wakes = self._pass_on_locked()
        finally:
            lock.release()
        if wakes:
            self._hand_over(wakes)

    def claim(self, waiter: AsyncWaiter) -> bool:
        """Take the slot a woken async waiter was offered (called by its task, on its loop).

        A waiter woken without a slot takes one if one is free (it was freed while the waiter's
        loop was not running), or else gets a new future to wait on.

        Returns:
            ``True`` if the wait is over (the waiter holds a slot, or timed out); ``False`` if
            it must await ``waiter.future`` again.
        """
        lock = self._lock
        lock.acquire()  # not `with`: once per queued async call, half the cost
        try:
            if waiter.state != WAITING:
                self._offered.discard(waiter)
                return True
            if self.active < self.max_concurrent:
                self._queue.remove(waiter)
                self.waiting -= 1
                self.active += 1  # its peak is recorded as a slot is freed (peak_active)
                waiter.state = GRANTED
                return True
            waiter.future = waiter.loop.create_future()
            waiter.nudged = False
            return False
        finally:
            lock.release()

    def abandon(self, waiter: Waiter) -> None:
        """Forget a cancelled waiter: take it out of the queue, or pass on the slot it was offered.

        A waiter that already left (timed out, or dropped because its loop closed: states that
        never change again) holds nothing, and returns without the lock. That is the waiter of a
        task left pending when its loop closed: the garbage collector frees it, once it left the
        queue, by closing its coroutine on whichever thread allocates, maybe one that holds this
        lock (a call queuing here), which a second acquisition would deadlock. A task offered a
        slot just before its loop stopped and closed is freed so while its waiter still holds the
        offer: a waiter whose loop is closed leaves its offer to be taken back as a stopped loop's
        is (:meth:`_reclaim_locked`) when the lock is taken
        (:func:`~otel_resilience.engine.closing.lock_taken`).
        """
        if waiter.state >= TIMED_OUT:  # TIMED_OUT or CANCELLED: it left for good
            return
        if waiter.gone() and lock_taken(self._lock):
            return
        with self._lock:
            state = waiter.state
            if state == WAITING:
                self._queue.remove(waiter)
                self.waiting -= 1
            elif state != GRANTED:
                return  # it had already timed out: it holds nothing
            waiter.state = CANCELLED
            self.cancelled += 1
            wakes = None
            if state == GRANTED:
                self._offered.discard(cast("AsyncWaiter", waiter))
                wakes = self._pass_on_locked()
        if wakes:
            self._hand_over(wakes)

    def expire(self, waiter: Waiter) -> bool:
        """End a waiter's wait at its timeout, unless a free slot or one a stopped loop's waiter holds is its.

        The slots offered to waiters whose loop stopped before they claimed them are taken back
        first (:meth:`_reclaim_locked`), as a new caller that finds every slot busy does: a
        waiter that can run is not timed out while such a slot sits idle, and if it is the
        oldest that can take one, it takes it and runs. So is a slot freed while the loops of all
        the waiters were stopped (they were nudged, to look when their loop runs): its waiter's
        timer, due meanwhile, may come before that look (uvloop runs due timers before the
        callbacks already scheduled), and the slot is handed on as a freed one is.

        Returns:
            ``True`` if it left the queue; ``False`` if it was handed a slot (just before, or
            here: it must then run) or is no longer queued.
        """
        wakes = None
        with self._lock:
            if waiter.state != WAITING:
                return False
            if self._offered:
                wakes = self._reclaim_locked()
            if waiter.state == WAITING and self.active < self.max_concurrent:
                self.active += 1  # the free slot, given up again: to the oldest waiter that can run
                freed = self._pass_on_locked()
                wakes = freed if not wakes else wakes + (freed or [])
            expired = waiter.state == WAITING
            if expired:
                self._expire_locked(waiter)
        if wakes:  # outside the lock
            self._hand_over(wakes)
        return expired

    def _expire_locked(self, waiter: Waiter) -> None:
        """Take the queued ``waiter`` out of the queue at its timeout, counted as what ended its wait first.

        ``timed_out``, unless its cancellation was requested before
        (:meth:`~otel_resilience.engine.waiting.Waiter.cancel_requested`): then ``cancelled``, as
        when its task resumes before the timeout; the task, resuming, finds it gone and raises
        its ``CancelledError`` (no timeout reported).
        """
        self._queue.remove(waiter)
        self.waiting -= 1
        if waiter.cancel_requested():
            waiter.state = CANCELLED
            self.cancelled += 1
        else:
            waiter.state = TIMED_OUT
            self.timed_out += 1

    def resize(self, max_concurrent: int, max_waiting: int) -> None:
        """Change the limits now, keeping every call that runs or waits.

        A lower ``max_concurrent`` cancels nothing: no call is admitted until fewer than the new
        limit run. A higher one hands the new slots to the oldest waiters at once. A lower
        ``max_waiting`` keeps the queued calls; new ones are rejected until the queue is below it.
        """
        wakes: list[Waiter] = []
        with self._lock:
            self.max_concurrent = max_concurrent
            self.max_waiting = max_waiting
            while self._queue and self.active < max_concurrent:
                peak = self._peak
                self.active += 1  # a new slot, passed on as a released one would be
                granted = self.active
                passed = self._pass_on_locked()
                if passed:
                    wakes.extend(passed)
                if self.active < granted:
                    # No waiter could take it (their loops do not run): it was freed, and the
                    # peak its freeing recorded was never held by a call.
                    self._peak = peak
                    break
        if wakes:
            wakes.reverse()  # woken from the end: the oldest waiter first
            self._hand_over(wakes)

    def snapshot(self, name: str) -> BulkheadStatsDict:
        """Return every counter, read under the lock so that they add up."""
        with self._lock:
            total, rejected = self._totals(self._shed.value)
            return {
                "name": name,
                "active": self.active,
                "waiting": self.waiting,
                "max_concurrent": self.max_concurrent,
                "max_waiting": self.max_waiting,
                "total": total,
                "completed": self.completed,
                "rejected": rejected,
                "timed_out": self.timed_out,
                "cancelled": self.cancelled,
                "peak_active": self.peak_active,
                "peak_waiting": self.peak_waiting,
                "available": self.max_concurrent - self.active,
            }

    def _pass_on_locked(self) -> list[Waiter] | None:
        """Hand a slot that is being given up to the oldest waiter that can take it, or free it.

        Returns:
            The waiters to wake once the lock is released: the one offered the slot, and those
            skipped because their loop is not running (nudged once, so that they look again
            when it runs); ``None`` for none.
        """
        wakes: list[Waiter] | None = None
        queue = self._queue
        if queue and self.active <= self.max_concurrent:  # usually nobody waits: the slot is freed
            index = 0
            while index < len(queue):
                waiter = queue[index]
                if waiter.ready():
                    del queue[index]
                    self.waiting -= 1
                    waiter.state = GRANTED
                    waiter.nudged = True
                    if isinstance(waiter, AsyncWaiter):
                        if self._offered is _NO_OFFERS:
                            self._offered = set()
                        self._offered.add(waiter)
                    if wakes is None:
                        return [waiter]
                    wakes.append(waiter)
                    return wakes
                if self._gone_leaves_locked(waiter):
                    continue
                if not waiter.nudged:
                    waiter.nudged = True
                    if wakes is None:
                        wakes = []
                    wakes.append(waiter)
                index += 1
        # Nobody could take it (or the limit was lowered below the calls running: it is freed
        # until they are below it). The highest ``active`` is recorded here, where it goes down.
        active = self.active
        if active > self._peak:  # noqa: PLR1730 - on every release: a compare, not a call
            self._peak = active
        self.active = active - 1
        return wakes

    def _gone_leaves_locked(self, waiter: Waiter) -> bool:
        """Take the queued ``waiter`` out of the queue if it can never run; return whether it left.

        The one rule for a waiter gone while queued (its event loop is closed: it will never run,
        nor leave the queue by itself): it leaves, counted ``cancelled``.
        """
        if not waiter.gone():
            return False
        self._queue.remove(waiter)
        self.waiting -= 1
        waiter.state = CANCELLED
        self.cancelled += 1
        return True

    def _leave_gone_front_locked(self) -> None:
        """Take the waiters at the front of the queue whose loop is closed out of it, as a call queues.

        Such a waiter never runs, and what its task holds is never freed while the queue keeps
        it: maybe the call holding the slot it waits for (a hedge's attempt keeps its race, the
        race its other attempts), which then never gives it back, so that the call queuing now
        would wait out its timeout. Those of a loop closed while they waited are the oldest, so
        the front is looked at, when it waits on another loop than the call queuing now (which
        runs): none on a call that finds a slot, nor on one queuing behind a waiter of its loop.
        """
        queue = self._queue
        while queue and self._gone_leaves_locked(queue[0]):
            pass

    def _make_room_locked(self) -> bool:
        """Free the places of a full queue's waiters that cannot run the call; return whether one is free.

        Called only when a call would be refused (every slot busy, the queue full): a place held
        by a waiter that will never run the call is no reason to refuse one that can. Such a
        waiter's loop is closed (it leaves, counted ``cancelled``), or stopped past its queue
        timeout, which its loop's timer cannot fire (it leaves, counted ``timed_out``, or
        ``cancelled`` if its cancellation was requested before, :meth:`_expire_locked`: when its
        loop runs again, its task raises its timeout, or its cancellation). The queue is looked through
        at the first such refusal and then at every :data:`_ROOM_LOOK_EVERY`-th: under overload
        a rejection stays cheap (a look asks every waiter whether its loop is closed or
        stopped), and those waiters keep their places for that many refusals at most.
        """
        if self._refused % _ROOM_LOOK_EVERY:
            return False
        for waiter in tuple(self._queue):  # a copy: the queue changes as they leave
            if not self._gone_leaves_locked(waiter) and waiter.overdue():
                self._expire_locked(waiter)
        return self.waiting < self.max_waiting

    def _reclaim_locked(self) -> list[Waiter] | None:
        """Take back the slots offered to async waiters whose loop stopped before they claimed them.

        Each such waiter returns to the front of the queue (its wake-up is still on its way, so
        it looks again when its loop runs), or is dropped if its loop is closed; its slot is
        passed on as a released one would be.
        """
        wakes: list[Waiter] = []
        for waiter in [w for w in self._offered if not w.ready()]:
            self._offered.discard(waiter)
            if waiter.gone():  # its loop is closed: it will never run
                waiter.state = CANCELLED
                self.cancelled += 1
            else:
                waiter.state = WAITING
                self._queue.appendleft(waiter)
                self.waiting += 1
            passed = self._pass_on_locked()
            if passed:
                wakes.extend(passed)
        return wakes

    def _hand_over(self, wakes: list[Waiter]) -> None:
        """Wake waiters (outside the lock); drop those whose loop is closed, passing on their slot."""
        while wakes:
            waiter = wakes.pop()
            if waiter.wake():
                continue
            with self._lock:  # its loop is closed: it can neither take a slot nor leave the queue
                state = waiter.state
                if state == WAITING:
                    self._queue.remove(waiter)
                    self.waiting -= 1
                elif state != GRANTED:
                    continue
                waiter.state = CANCELLED
                self.cancelled += 1
                if state == GRANTED:
                    self._offered.discard(cast("AsyncWaiter", waiter))
                    passed = self._pass_on_locked()
                    if passed:
                        wakes.extend(passed)
