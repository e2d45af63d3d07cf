"""Bulkhead: a concurrency limit with a bounded FIFO wait queue, shared by asyncio and threads.

At most ``max_concurrent`` calls run at once; up to ``max_waiting`` more wait in a queue for at
most ``timeout`` seconds each; any further call is rejected at once with
:class:`~otel_resilience.errors.BulkheadFullError`. A call that waited too long gets
:class:`~otel_resilience.errors.BulkheadTimeoutError` (a subclass, ``reason == "queue_timeout"``).

::

    bulkhead = Bulkhead("analysis_pool", BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0))
    result = await bulkhead.execute(analyze_document, doc)
    result = bulkhead.execute_sync(parse_document, raw)      # from a worker thread

Design:

* **One core, two drivers.** The slots, the queue and the counters live in one sans-I/O core
  guarded by one short ``threading.Lock``, never held while the protected function runs and
  never across an ``await``. The async driver (:meth:`Bulkhead.execute`) and the sync driver
  (:meth:`Bulkhead.execute_sync`) share it, so a service may use the same bulkhead from its event
  loop and from worker threads (or from several loops) and the limit holds across all of them.
* **Uncontended cost:** one lock acquisition to take a slot and one to give it back; nothing is
  allocated.
* **FIFO with direct hand-off.** A freed slot is handed to the oldest waiter while the lock is
  held: the slot never becomes free in between, so a new arrival cannot overtake a waiter.
  Async waiters are loop futures, woken with ``loop.call_soon_threadsafe`` when the slot is
  freed on another thread; sync waiters block on a lock of their own.
* **No slot is ever leaked.** A cancelled waiter leaves the queue; a waiter cancelled just
  after it was handed a slot passes the slot on; a running call gives its slot back in a
  ``finally``, whether it returned, raised or was cancelled. A slot handed to a waiter whose
  event loop has been closed is passed on too.
* **A stopped loop holds no slot.** A freed slot skips a waiter whose event loop is not running
  (stopped, not closed): the waiter keeps its place and is nudged, so that it looks again (and
  takes a free slot, or waits on) as soon as its loop runs. An async waiter *claims* the slot it
  was offered when its task resumes; a slot offered to a waiter whose loop stopped before that
  is taken back by the next caller that finds every slot busy, and the waiter goes back to the
  front of the queue. While its loop stays stopped, its queue timeout cannot fire either: it
  ends when the loop runs again.
* **Queue timeouts.** Async waiters give up on their loop's shared timer
  (:mod:`otel_resilience.engine.timer`, real loop time), as timeout scopes do; sync waiters on
  their lock's wait timeout. A sync waiter also gives up at the effective deadline of an
  enclosing timeout scope (:func:`~otel_resilience.engine.context.current_deadline`), because a
  thread cannot be interrupted later; an async waiter is cancelled by its scope instead.
* **Telemetry:** each rejection reports ``Event.CALL_REJECTED`` with
  ``CallRejected(reason="bulkhead_full")`` or ``CallRejected(reason="queue_timeout")``. A queue
  timeout is counted and reported when the wait expires, so a caller cancelled in that same
  instant is still one ``timed_out`` call and one event (it sees ``CancelledError``). Counts
  that move on every call are plain integers in :class:`BulkheadStats`, read by observable
  instruments through :data:`~otel_resilience.engine.registry.BULKHEADS`.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Final, ParamSpec, TypedDict, TypeVar, cast, overload

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext, time_remaining
from otel_resilience.engine.events import CallRejected, Event, StrategyTelemetry, TelemetrySource
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder, protect_with, standalone
from otel_resilience.engine.registry import BULKHEADS
from otel_resilience.engine.strategy import Strategy
from otel_resilience.engine.timer import TimerEntry, loop_timer
from otel_resilience.engine.validation import check_duration, check_int, check_name, fail
from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_TIMEOUT",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadStats",
    "BulkheadStatsDict",
]

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_MAX_CONCURRENT: Final = 10
"""Calls that may run at once unless configured otherwise."""
DEFAULT_MAX_WAITING: Final = 100
"""Calls that may wait for a slot unless configured otherwise (a bounded queue)."""
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds a call may wait in the queue unless configured otherwise."""

_KIND: Final = "bulkhead"

# Waiter states.
_WAITING: Final = 0
_GRANTED: Final = 1
_TIMED_OUT: Final = 2
_CANCELLED: Final = 3

# Results of _BulkheadCore.enqueue.
_ADMITTED: Final = 0
_QUEUED: Final = 1
_FULL: Final = 2

_FULL_EVENT: Final = CallRejected(reason="bulkhead_full")
_TIMEOUT_EVENT: Final = CallRejected(reason="queue_timeout")


@dataclass(frozen=True, slots=True)
class BulkheadConfig:
    """How many calls a :class:`Bulkhead` runs at once, and how many may wait, for how long.

    Args:
        max_concurrent: See the attribute.
        max_waiting: See the attribute.
        timeout: See the attribute; a ``datetime.timedelta`` is accepted and stored as seconds.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If a field is out of range (the message names ``BulkheadConfig.<field>``).
    """

    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    """Calls that may run at once, ``>= 1``. The default value is 10."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Calls that may wait for a slot, ``>= 0``; ``0`` rejects at once when every slot is busy.
    The default value is 100 (bounded, so that an overload cannot pile up without limit)."""
    timeout: float = DEFAULT_TIMEOUT
    """The longest a call may wait in the queue, in seconds, ``> 0`` and finite. The default
    value is 60.0; an enclosing deadline (the manager's total timeout) usually ends the wait
    sooner."""

    def __post_init__(self) -> None:
        owner = "BulkheadConfig"
        check_int(owner, "max_concurrent", self.max_concurrent, minimum=1)
        check_int(owner, "max_waiting", self.max_waiting, minimum=0)
        object.__setattr__(self, "timeout", check_duration(owner, "timeout", self.timeout))


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


class BulkheadStats:
    """Live counters of one bulkhead, as plain integers (cheap to read from gauges).

    Every call that asks for a slot is counted once in ``total`` and, at any moment, is in
    exactly one of: running (``active``), queued (``waiting``), ``completed``, ``rejected``,
    ``timed_out`` or ``cancelled``. Each attribute is read without a lock; two attributes read
    one after the other may be a call apart. :meth:`Bulkhead.get_stats` takes a consistent
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

    __slots__ = (
        "active",
        "cancelled",
        "completed",
        "max_concurrent",
        "max_waiting",
        "peak_active",
        "peak_waiting",
        "rejected",
        "timed_out",
        "total",
        "waiting",
    )

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.active = 0
        self.waiting = 0
        self.total = 0
        self.completed = 0
        self.rejected = 0
        self.timed_out = 0
        self.cancelled = 0
        self.peak_active = 0
        self.peak_waiting = 0

    @property
    def available(self) -> int:
        """Slots free now (``max_concurrent - active``)."""
        return self.max_concurrent - self.active


class _Waiter(abc.ABC):
    """A queued call. ``state`` and ``nudged`` change only under the core's lock."""

    __slots__ = ("nudged", "state")

    def __init__(self) -> None:
        self.state = _WAITING
        self.nudged = False
        """Whether a wake-up is on its way that the waiter has not seen yet."""

    def ready(self) -> bool:
        """Whether the waiter can take a slot now (its thread or event loop is running)."""
        return True

    def gone(self) -> bool:
        """Whether the waiter can never run again (its event loop is closed)."""
        return False

    @abc.abstractmethod
    def wake(self) -> bool:
        """Wake the waiter (to take its slot, or to look again); ``False`` if it never can."""


class _SyncWaiter(_Waiter):
    """A thread blocked on a lock of its own, released to wake it."""

    __slots__ = ("signal",)

    def __init__(self) -> None:
        super().__init__()
        self.signal = threading.Lock()
        self.signal.acquire()

    def wake(self) -> bool:
        self.signal.release()
        return True


class _AsyncWaiter(_Waiter):
    """A task awaiting a future of its loop; woken thread-safely.

    Its slot is *offered* (``_GRANTED``) when it is woken and *claimed* (:meth:`_BulkheadCore.claim`)
    when its task runs again: in between, a slot offered to a waiter whose loop stopped can be
    taken back. A waiter that is woken without a slot (a nudge, or an offer taken back) looks
    again and, if it must keep waiting, awaits a new future. ``context`` is the waiting task's
    context, so that a queue timeout, reported from a loop timer, is reported in the waiting
    call's context (its span gets the rejection event).
    """

    __slots__ = ("context", "future", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.context = contextvars.copy_context()
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.thread = threading.get_ident()

    def ready(self) -> bool:
        return self.loop.is_running()

    def gone(self) -> bool:
        return self.loop.is_closed()

    def wake(self) -> bool:
        future = self.future
        try:
            if threading.get_ident() == self.thread:
                _resolve(future)
            else:
                self.loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:  # its loop is closed: the waiter will never run again
            return False
        return True

    def resolve(self) -> None:
        """Complete the future (on the waiter's loop), unless the task was cancelled."""
        _resolve(self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    """Complete ``future`` (on its loop) unless it is already done (cancelled, or woken before)."""
    if not future.done():
        future.set_result(None)


class _BulkheadCore(BulkheadStats):
    """The sans-I/O state: slots, FIFO queue and counters, behind one short lock.

    Invariant: while a call that can run waits, every slot is taken, because a freed slot goes
    straight to the oldest waiter that can take it. So :meth:`try_acquire` never lets a new
    arrival overtake such a waiter.

    A waiter whose event loop is not running (stopped, not closed) cannot take a slot: it keeps
    its place, the slot goes to the next waiter (or is freed), and the waiter is nudged so that
    it looks again as soon as its loop runs. A slot offered to an async waiter whose loop stopped
    before its task could claim it is taken back by the next caller that finds no free slot
    (:meth:`enqueue`); the waiter returns to the front of the queue.
    """

    __slots__ = ("_lock", "_offered", "_queue")

    def __init__(self, max_concurrent: int, max_waiting: int) -> None:
        super().__init__(max_concurrent, max_waiting)
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self._offered: set[_AsyncWaiter] = set()

    def try_acquire(self) -> bool:
        """Take a free slot (the fast path); ``False`` if every slot is busy."""
        with self._lock:
            if self.active < self.max_concurrent:
                self.total += 1
                self._admit_locked()
                return True
        return False

    def enqueue(self, waiter: _Waiter | None) -> int:
        """Take a slot if one is free (or can be taken back), else queue ``waiter``, else reject.

        Returns:
            ``_ADMITTED``, ``_QUEUED`` or ``_FULL`` (``waiter`` is ``None`` when there is no
            queue).
        """
        wakes = None
        with self._lock:
            self.total += 1
            if self._offered and self.active >= self.max_concurrent:
                wakes = self._reclaim_locked()
            if self.active < self.max_concurrent:
                self._admit_locked()
                status = _ADMITTED
            elif waiter is None or self.waiting >= self.max_waiting:
                self.rejected += 1
                status = _FULL
            else:
                self._queue.append(waiter)
                self.waiting += 1
                self.peak_waiting = max(self.peak_waiting, self.waiting)
                status = _QUEUED
        if wakes:
            self._hand_over(wakes)
        return status

    def release(self) -> None:
        """Give back the slot of a call that finished running (handing it to the oldest waiter)."""
        with self._lock:
            self.completed += 1
            wakes = self._pass_on_locked()
        if wakes:
            self._hand_over(wakes)

    def claim(self, waiter: _AsyncWaiter) -> bool:
        """Take the slot a woken async waiter was offered (called by its task, on its loop).

        A waiter woken without a slot takes one if one is free (it was freed while the waiter's
        loop was not running), or else gets a new future to wait on.

        Returns:
            ``True`` if the wait is over (the waiter holds a slot, or timed out); ``False`` if
            it must await ``waiter.future`` again.
        """
        with self._lock:
            if waiter.state != _WAITING:
                self._offered.discard(waiter)
                return True
            if self.active < self.max_concurrent:
                self._queue.remove(waiter)
                self.waiting -= 1
                self._admit_locked()
                waiter.state = _GRANTED
                return True
            waiter.future = waiter.loop.create_future()
            waiter.nudged = False
            return False

    def abandon(self, waiter: _Waiter) -> None:
        """Forget a cancelled waiter: take it out of the queue, or pass on the slot it was offered."""
        with self._lock:
            state = waiter.state
            if state == _WAITING:
                self._queue.remove(waiter)
                self.waiting -= 1
            elif state != _GRANTED:
                return  # it had already timed out: it holds nothing
            waiter.state = _CANCELLED
            self.cancelled += 1
            wakes = None
            if state == _GRANTED:
                self._offered.discard(cast("_AsyncWaiter", waiter))
                wakes = self._pass_on_locked()
        if wakes:
            self._hand_over(wakes)

    def expire(self, waiter: _Waiter) -> bool:
        """End a waiter's wait at its timeout.

        Returns:
            ``True`` if it left the queue; ``False`` if it was handed a slot just before (it
            must then run) or is no longer queued.
        """
        with self._lock:
            if waiter.state != _WAITING:
                return False
            self._queue.remove(waiter)
            self.waiting -= 1
            self.timed_out += 1
            waiter.state = _TIMED_OUT
            return True

    def snapshot(self, name: str) -> BulkheadStatsDict:
        """Return every counter, read under the lock so that they add up."""
        with self._lock:
            return {
                "name": name,
                "active": self.active,
                "waiting": self.waiting,
                "max_concurrent": self.max_concurrent,
                "max_waiting": self.max_waiting,
                "total": self.total,
                "completed": self.completed,
                "rejected": self.rejected,
                "timed_out": self.timed_out,
                "cancelled": self.cancelled,
                "peak_active": self.peak_active,
                "peak_waiting": self.peak_waiting,
                "available": self.max_concurrent - self.active,
            }

    def _admit_locked(self) -> None:
        self.active += 1
        if self.active > self.peak_active:  # noqa: PLR1730 - on every call: a compare, not a call
            self.peak_active = self.active

    def _pass_on_locked(self) -> list[_Waiter] | None:
        """Hand a slot that is being given up to the oldest waiter that can take it, or free it.

        Returns:
            The waiters to wake once the lock is released: the one offered the slot, and those
            skipped because their loop is not running (nudged once, so that they look again
            when it runs); ``None`` for none.
        """
        queue = self._queue
        if not queue:  # the usual case: nobody waits, so the slot is freed
            self.active -= 1
            return None
        wakes: list[_Waiter] | None = None
        index = 0
        while index < len(queue):
            waiter = queue[index]
            if waiter.ready():
                del queue[index]
                self.waiting -= 1
                waiter.state = _GRANTED
                waiter.nudged = True
                if isinstance(waiter, _AsyncWaiter):
                    self._offered.add(waiter)
                if wakes is None:
                    return [waiter]
                wakes.append(waiter)
                return wakes
            if waiter.gone():  # its loop is closed: it will never run, so it leaves the queue
                del queue[index]
                self.waiting -= 1
                waiter.state = _CANCELLED
                self.cancelled += 1
                continue
            if not waiter.nudged:
                waiter.nudged = True
                if wakes is None:
                    wakes = []
                wakes.append(waiter)
            index += 1
        self.active -= 1
        return wakes

    def _reclaim_locked(self) -> list[_Waiter] | None:
        """Take back the slots offered to async waiters whose loop stopped before they claimed them.

        Each such waiter returns to the front of the queue (its wake-up is still on its way, so
        it looks again when its loop runs), or is dropped if its loop is closed; its slot is
        passed on as a released one would be.
        """
        wakes: list[_Waiter] = []
        for waiter in [w for w in self._offered if not w.ready()]:
            self._offered.discard(waiter)
            if waiter.gone():  # its loop is closed: it will never run
                waiter.state = _CANCELLED
                self.cancelled += 1
            else:
                waiter.state = _WAITING
                self._queue.appendleft(waiter)
                self.waiting += 1
            passed = self._pass_on_locked()
            if passed:
                wakes.extend(passed)
        return wakes

    def _hand_over(self, wakes: list[_Waiter]) -> None:
        """Wake waiters (outside the lock); drop those whose loop is closed, passing on their slot."""
        while wakes:
            waiter = wakes.pop()
            if waiter.wake():
                continue
            with self._lock:  # its loop is closed: it can neither take a slot nor leave the queue
                state = waiter.state
                if state == _WAITING:
                    self._queue.remove(waiter)
                    self.waiting -= 1
                elif state != _GRANTED:
                    continue
                waiter.state = _CANCELLED
                self.cancelled += 1
                if state == _GRANTED:
                    self._offered.discard(cast("_AsyncWaiter", waiter))
                    passed = self._pass_on_locked()
                    if passed:
                        wakes.extend(passed)


class _QueueTimeout(TimerEntry):
    """The queue timeout of one async waiter: an entry of its loop's shared timer."""

    __slots__ = ("_link", "_waiter")

    def __init__(self, link: _BulkheadStrategy, waiter: _AsyncWaiter) -> None:
        self._link = link
        self._waiter = waiter

    def fire(self) -> None:
        """End the wait (if the waiter is still queued)."""
        self._link._expire(self._waiter)


class _BulkheadStrategy(Strategy):
    """A pipeline link bound to a bulkhead's shared slots, with its own telemetry."""

    __slots__ = ("_bulkhead", "_core", "_telemetry")

    kind: ClassVar[str] = _KIND

    def __init__(self, bulkhead: Bulkhead, telemetry: StrategyTelemetry) -> None:
        super().__init__()
        self._bulkhead = bulkhead
        self._core = bulkhead._core
        self._telemetry = telemetry

    @property
    def name(self) -> str:
        """The bulkhead's name."""
        return self._bulkhead.name

    @property
    def config(self) -> BulkheadConfig:
        """The bulkhead's configuration."""
        return self._bulkhead.config

    async def execute(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain holding a slot (waiting for one if needed)."""
        core = self._core
        if not core.try_acquire():
            await self._wait()
        try:
            return await self.next.execute(ctx)
        finally:
            core.release()

    def execute_sync(self, ctx: ExecutionContext) -> Any:
        """Run the rest of the chain holding a slot, blocking the thread while it waits."""
        core = self._core
        if not core.try_acquire():
            self._wait_sync()
        try:
            return self.next.execute_sync(ctx)
        finally:
            core.release()

    async def _wait(self) -> None:
        """Queue on the running loop until a slot is handed over; raise if rejected."""
        core = self._core
        loop = asyncio.get_running_loop()
        timeout = self._bulkhead.config.timeout
        waiter = _AsyncWaiter(loop) if core.max_waiting else None
        deadline = loop.time() + timeout
        status = core.enqueue(waiter)
        if status == _ADMITTED:
            return
        if waiter is None or status == _FULL:
            raise self._full() from None
        timer = loop_timer(loop)
        expiry = _QueueTimeout(self, waiter)
        timer.add(loop, expiry, deadline)
        try:
            await waiter.future
            while not core.claim(waiter):
                # Woken without a slot (its loop had stopped): wait again until the same deadline,
                # re-armed if it passed while the waiter held a slot it was offered.
                if not expiry.armed:
                    timer.add(loop, expiry, deadline)
                await waiter.future
        except BaseException:
            core.abandon(waiter)
            raise
        finally:
            timer.cancel(expiry)
        if waiter.state == _TIMED_OUT:
            raise self._timeout_error(timeout) from None

    def _expire(self, waiter: _AsyncWaiter) -> None:
        """Loop-timer callback: end the wait if the waiter is still queued, and report it now.

        The rejection is counted and reported when the wait ends, not when the caller resumes:
        a caller cancelled in the same loop iteration still counts (once) as timed out, so
        ``timed_out`` and the ``queue_timeout`` events always agree.
        """
        if self._core.expire(waiter):
            waiter.context.run(self._report, _TIMEOUT_EVENT)  # in the waiting call's context
            waiter.resolve()

    def _wait_sync(self) -> None:
        """Queue in this thread until a slot is handed over; raise if rejected."""
        core = self._core
        waiter = _SyncWaiter() if core.max_waiting else None
        status = core.enqueue(waiter)
        if status == _ADMITTED:
            return
        if waiter is None or status == _FULL:
            raise self._full() from None
        bulkhead = self._bulkhead
        timeout = min(bulkhead.config.timeout, time_remaining(bulkhead.clock))
        try:
            granted = waiter.signal.acquire(timeout=max(timeout, 0.0))
        except BaseException:
            core.abandon(waiter)
            raise
        if not granted and core.expire(waiter):
            self._report(_TIMEOUT_EVENT)
            raise self._timeout_error(max(timeout, 0.0)) from None

    def _report(self, event: CallRejected) -> None:
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(Event.CALL_REJECTED, event)

    def _full(self) -> BulkheadFullError:
        self._report(_FULL_EVENT)
        core = self._core
        return BulkheadFullError(self._bulkhead.name, core.max_concurrent, core.max_waiting)

    def _timeout_error(self, timeout: float) -> BulkheadTimeoutError:
        core = self._core
        return BulkheadTimeoutError(self._bulkhead.name, core.max_concurrent, core.max_waiting, timeout)


class _BulkheadSlot:
    """A bulkhead slot held around a block: ``with bulkhead.slot():`` or ``async with bulkhead.slot():``.

    Entering takes a slot, waiting in the bulkhead's FIFO queue when all are busy (raising
    :class:`~otel_resilience.errors.BulkheadFullError` or
    :class:`~otel_resilience.errors.BulkheadTimeoutError` as a call would); leaving gives it back,
    whatever ended the block (cancellation included). One slot object serves one block at a time.
    """

    __slots__ = ("_bulkhead", "_held")

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead
        self._held = False

    def _link(self) -> _BulkheadStrategy:
        if self._held:
            msg = "a Bulkhead.slot() serves one block at a time; call slot() again"
            raise RuntimeError(msg)
        link = self._bulkhead._pipeline.strategies[0]
        return cast("_BulkheadStrategy", link)

    async def __aenter__(self) -> _BulkheadSlot:
        link = self._link()
        if not self._bulkhead._core.try_acquire():
            await link._wait()
        self._held = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._held = False
        self._bulkhead._core.release()

    def __enter__(self) -> _BulkheadSlot:
        link = self._link()
        if not self._bulkhead._core.try_acquire():
            link._wait_sync()
        self._held = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._held = False
        self._bulkhead._core.release()


class Bulkhead:
    """Limits how many calls run at once, with a bounded FIFO queue for the rest.

    One bulkhead may be used from the event loop (:meth:`execute`), from threads
    (:meth:`execute_sync`), as a decorator (:meth:`protect`) and inside pipelines
    (:meth:`as_strategy`) at the same time: all of them share the same slots.

    Args:
        name: The bulkhead's name (bounded: it appears in telemetry).
        config: Limits and queue timeout; ``None`` for :class:`BulkheadConfig` defaults.
        clock: The clock used for execution durations and to read enclosing deadlines.

    Raises:
        TypeError: If ``name`` is not a ``str`` or ``config`` not a :class:`BulkheadConfig`.
        ValueError: If ``name`` is empty.
    """

    __slots__ = ("__weakref__", "_clock", "_config", "_core", "_name", "_standalone", "_telemetry")

    kind: ClassVar[str] = _KIND

    def __init__(
        self, name: str, config: BulkheadConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._name = check_name("Bulkhead", "name", name)
        if config is None:
            config = BulkheadConfig()
        elif not isinstance(config, BulkheadConfig):
            raise fail("Bulkhead", "config", "a BulkheadConfig or None", config, kind=TypeError)
        self._config = config
        self._clock = clock
        self._core = _BulkheadCore(config.max_concurrent, config.max_waiting)
        source = TelemetrySource(_KIND, name)
        self._telemetry = StrategyTelemetry(source)
        self._standalone: Pipeline | None = None
        BULKHEADS.register(self)

    @property
    def _pipeline(self) -> Pipeline:
        """The instance's own one-link pipeline, built on first use."""
        pipeline = self._standalone
        return pipeline if pipeline is not None else standalone(self, "_standalone", self._build_pipeline)

    def _build_pipeline(self) -> Pipeline:
        return (
            PipelineBuilder(self._name, clock=self._clock, source=self._telemetry.source)
            .add(self.as_strategy())
            .build()
        )

    @property
    def name(self) -> str:
        """The bulkhead's name."""
        return self._name

    @property
    def config(self) -> BulkheadConfig:
        """The bulkhead's configuration."""
        return self._config

    @property
    def clock(self) -> Clock:
        """The clock the bulkhead reads time from."""
        return self._clock

    @property
    def telemetry(self) -> StrategyTelemetry:
        """The facade for instance-level events (source without a pipeline)."""
        return self._telemetry

    @property
    def stats(self) -> BulkheadStats:
        """The live counters (no copy; read them from observable gauges)."""
        return self._core

    def get_stats(self) -> BulkheadStatsDict:
        """Return a consistent snapshot of the counters.

        Returns:
            ``name``, ``active``, ``waiting``, ``max_concurrent``, ``max_waiting``, ``total``,
            ``completed``, ``rejected`` (queue full), ``timed_out`` (queue wait expired),
            ``cancelled``, ``peak_active``, ``peak_waiting`` and ``available``; see
            :class:`BulkheadStats`.
        """
        return self._core.snapshot(self._name)

    def as_strategy(self, pipeline: str | None = None) -> Strategy:
        """Return a new, unlinked pipeline link that shares this bulkhead's slots.

        Args:
            pipeline: The name of the pipeline (policy) the link will run in, for telemetry.

        Returns:
            A :class:`~otel_resilience.engine.strategy.Strategy` to add to a
            :class:`~otel_resilience.engine.pipeline.PipelineBuilder`.

        Raises:
            TypeError: If ``pipeline`` is neither ``None`` nor a ``str``.
            ValueError: If ``pipeline`` is empty.
        """
        if pipeline is not None:
            check_name("Bulkhead.as_strategy", "pipeline", pipeline)
        return _BulkheadStrategy(self, StrategyTelemetry(TelemetrySource(_KIND, self._name, pipeline)))

    async def execute(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` in a slot, waiting in the queue if every slot is busy.

        Args:
            fn: The async function to protect.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What ``fn`` returns.

        Raises:
            TypeError: If ``fn`` is not callable.
            BulkheadFullError: If every slot is busy and the queue is full (``fn`` is not called).
            BulkheadTimeoutError: If no slot became free within ``config.timeout``.
            Exception: Whatever ``fn`` raises, unchanged.
        """
        if not callable(fn):
            raise fail("Bulkhead", "execute.fn", "callable", fn, kind=TypeError)
        return await self._pipeline.execute(fn, *args, **kwargs)

    def execute_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` in a slot, blocking this thread while it waits in the queue.

        Args:
            fn: The function to protect.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What ``fn`` returns.

        Raises:
            TypeError: If ``fn`` is not callable.
            BulkheadFullError: If every slot is busy and the queue is full (``fn`` is not called).
            BulkheadTimeoutError: If no slot became free within ``config.timeout`` (or before
                the deadline of an enclosing timeout scope).
            Exception: Whatever ``fn`` raises, unchanged.
        """
        if not callable(fn):
            raise fail("Bulkhead", "execute_sync.fn", "callable", fn, kind=TypeError)
        return self._pipeline.execute_sync(fn, *args, **kwargs)

    def slot(self) -> _BulkheadSlot:
        """Return a context manager that holds one slot of this bulkhead around a block.

        ``async with bulkhead.slot(): ...`` in coroutines, ``with bulkhead.slot(): ...`` in
        threads; use it where the protected work is not one function call.

        Returns:
            A single-use slot holder.
        """
        return _BulkheadSlot(self)

    @overload
    def protect(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def protect(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def protect(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` so that every call runs in this bulkhead.

        A coroutine function gets the async driver, anything else the sync driver; the choice
        is made once, here.

        Args:
            fn: The function to protect.

        Returns:
            A wrapper with ``fn``'s signature (``functools.wraps``).

        Raises:
            TypeError: If ``fn`` is not callable or is an async generator function.
        """
        if not callable(fn):
            raise fail("Bulkhead", "protect.fn", "callable", fn, kind=TypeError)
        return protect_with(self._pipeline, fn)

    def __repr__(self) -> str:
        core = self._core
        return (
            f"Bulkhead({self._name!r}, active={core.active}/{core.max_concurrent}, "
            f"waiting={core.waiting}/{core.max_waiting})"
        )
