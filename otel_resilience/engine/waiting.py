"""Waiting in a queue for a place (a bulkhead slot, later a rate limiter's permit): the engine's waiter.

The queue's rules (who is next, how many may wait, when a place is handed over) belong to its
owner, a sans-I/O object behind its own lock that implements :class:`WaitQueue`. What this
module holds is the part that performs the wait, the same for every such queue: a
:class:`Waiter` per queued call, which is both the call's place in the queue and the
:class:`~otel_resilience.engine.step.Wait` its step's ``admit`` returns, so a queued call is one
object. A :class:`SyncWaiter` is a thread blocked on a lock of its own, released to wake it (the
sync driver calls :meth:`SyncWaiter.wait_sync`); an :class:`AsyncWaiter` is a task awaiting a
future of its loop, woken thread-safely (the async driver awaits :meth:`AsyncWaiter.wait`), so
threads and event loops wait in one queue. Both return once a place was handed over and raise
the owner's error (:class:`WaitOwner`) when the wait timed out.

An async wait gives up on its loop's shared timer (:mod:`otel_resilience.engine.timer`: the
:class:`AsyncWaiter` is its own timer entry, so that a queued call allocates nothing more); a timeout
is counted (:meth:`WaitQueue.expire`) when it fires, and reported (:meth:`WaitOwner.wait_timed_out`) by
the waiting task when it resumes, in its own context (its span gets the rejection event), so a
waiter holds no copy of its context. The wait ends as what came first: a caller cancelled after
the timer fired, before its task resumed, is still one timed-out call and one report, made as
the cancellation passes; one whose cancellation was requested before the timer fired (its
task's future is cancelled: :meth:`Waiter.cancel_requested`) is not timed out: the queue counts
it as a cancelled call. A sync wait gives up on its
lock's wait timeout, or sooner at the effective deadline of an enclosing timeout scope
(:func:`~otel_resilience.engine.deadline.time_left`), because a thread cannot be
interrupted later: that is the scope's timeout, not the queue's (the waiter leaves the queue as
a cancelled one does and raises
:class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`), as the scope's
cancellation ends an async wait. A wait ended by a ``BaseException`` (cancellation, interrupt)
leaves the queue (:meth:`WaitQueue.abandon`), giving back a place it was handed in the meantime.

An async waiter's place is *offered* when it is woken and *claimed* (:meth:`WaitQueue.claim`) when
its task runs again; a waiter woken without a place (its loop had stopped, and the offer was
taken back) waits again on a new future until the same deadline.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import math
import threading
from typing import TYPE_CHECKING, Final, Protocol

from otel_resilience.engine.deadline import WaitDeadlineReachedError, deadline_reached, time_left
from otel_resilience.engine.step import Wait
from otel_resilience.engine.timer import TimerEntry, loop_timer

if TYPE_CHECKING:
    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext

__all__ = [
    "ADMITTED",
    "CANCELLED",
    "FULL",
    "GRANTED",
    "TIMED_OUT",
    "WAITING",
    "AsyncWaiter",
    "Enqueued",
    "SyncWaiter",
    "WaitOwner",
    "WaitQueue",
    "Waiter",
    "WaiterState",
    "new_waiter",
]


_get_running_loop: Final = asyncio._get_running_loop  # in asyncio.events.__all__: None outside a loop
"""The loop running on this thread, or ``None`` (what tells whether a waiter's loop runs here)."""


class WaiterState(enum.IntEnum):
    """Where a waiter is (:attr:`Waiter.state`).

    ``WAITING``: in the queue. ``GRANTED``: handed a place (an async waiter's is offered until it
    claims it). ``TIMED_OUT``: left the queue at its timeout. ``CANCELLED``: left the queue
    because it can no longer run (cancelled, or its loop closed).
    """

    WAITING = 0
    GRANTED = 1
    TIMED_OUT = 2
    CANCELLED = 3


class Enqueued(enum.IntEnum):
    """What :meth:`WaitQueue.acquire` returns for a call that does not queue (else its waiter).

    ``ADMITTED``: a place was free, the call holds it and runs at once. ``FULL``: rejected, no
    place free and no room to queue.
    """

    ADMITTED = 0
    FULL = 2


WAITING, GRANTED, TIMED_OUT, CANCELLED = WaiterState
ADMITTED: Final = Enqueued.ADMITTED
FULL: Final = Enqueued.FULL


class WaitOwner(Protocol):
    """What a queue's owner says about the waits in it (a bulkhead's link): how long, and a timeout.

    Attributes:
        name: The owner's name, for the error of a wait an enclosing deadline ended.
        wait_timeout: The longest a call may wait, in seconds.
        clock: The clock an enclosing deadline is read on (sync waits).
    """

    name: str
    wait_timeout: float
    clock: Clock

    def wait_timed_out(self) -> None:
        """Report a wait that timed out: called once, by the waiting call, in its context."""
        ...

    def wait_timeout_error(self, timeout: float) -> Exception:
        """Return the error a timed-out wait raises (``timeout``: the seconds it waited for)."""
        ...


class Waiter(Wait, TimerEntry):
    """A queued call: its place in a :class:`WaitQueue`, and the :class:`Wait` its driver waits on.

    One object per queued call: the queue holds it (``state`` and ``nudged`` change only under
    the queue's lock), and the step's ``admit`` returns it, so the driver awaits :meth:`wait`
    (an :class:`AsyncWaiter`) or calls :meth:`wait_sync` (a :class:`SyncWaiter`). The token of a
    granted wait is ``None``; a timed-out wait is reported and refused by its owner
    (:class:`WaitOwner`).

    Args:
        queue: The queue it waits in.
        owner: How long it may wait; reports a timeout and makes its error.
    """

    __slots__ = ("nudged", "owner", "queue", "state")

    loop: asyncio.AbstractEventLoop | None
    """The event loop it waits on (``None``: a thread's waiter)."""

    def __init__(self, queue: WaitQueue, owner: WaitOwner) -> None:
        self.state = WAITING
        self.nudged = False
        """Whether a wake-up is on its way that the waiter has not seen yet."""
        self.queue = queue
        self.owner = owner

    def ready(self) -> bool:
        """Whether the waiter can take a place now (its thread or event loop is running)."""
        return True

    def gone(self) -> bool:
        """Whether the waiter can never run again (its event loop is closed)."""
        return False

    def overdue(self) -> bool:
        """Whether its timeout has passed but cannot end its wait (its event loop is stopped)."""
        return False

    def cancel_requested(self) -> bool:
        """Whether its call's cancellation was requested and has not reached the wait yet.

        Such a wait ended first by the cancellation (its task's, by its caller or by the scope
        of an enclosing deadline whose timer entry fired first): a queue timeout that comes
        before its task resumes counts it as cancelled (:meth:`WaitQueue.expire`), as the task
        does when it resumes first. A thread's wait is never cancelled so.
        """
        return False

    @abc.abstractmethod
    def wake(self) -> bool:
        """Wake the waiter (to take its place, or to look again); ``False`` if it never can."""

    def fire(self) -> None:
        """Timer callback, at the queue timeout: end the wait if still queued, and wake the waiter.

        The queue counts the wait as what ended it first (:meth:`WaitQueue.expire`): the timeout,
        or a cancellation requested before it (:meth:`cancel_requested`).

        A waiter the queue timed out already (:meth:`overdue`, while its loop was stopped) is
        woken too, and so is one handed a place whose task has not resumed yet: its wake-up may
        never have been sent (an interrupt raised in the thread that handed the place over,
        before it woke the waiter), and a waiter already woken only looks again. The waiting
        call, woken, takes its place, or reports the timeout itself
        (:meth:`WaitOwner.wait_timed_out`).
        """
        self.queue.expire(self)
        self.wake()


class SyncWaiter(Waiter):
    """A thread blocked on a lock of its own, released to wake it."""

    __slots__ = ("signal",)

    loop: None = None
    """A thread's waiter runs on no event loop (an :class:`AsyncWaiter`'s ``loop`` is its loop)."""

    def __init__(self, queue: WaitQueue, owner: WaitOwner) -> None:
        Waiter.__init__(self, queue, owner)  # named, not super(): one per queued call
        self.signal = threading.Lock()
        self.signal.acquire()

    def wake(self) -> bool:
        """Release the thread's lock."""
        self.signal.release()
        return True

    def wait_sync(self) -> None:
        """Block this thread until a place is handed over, or raise at the timeout (or deadline).

        Raises:
            Exception: The owner's :meth:`~WaitOwner.wait_timeout_error` when the queue's timeout
                came first; a :class:`~otel_resilience.engine.deadline.WaitDeadlineReachedError`
                when the deadline of an enclosing scope came first: the waiter leaves the queue
                as a cancelled one does (no queue timeout counted), the steps between see a
                rejection, and the scope raises its own timeout, as its cancellation ends an
                async wait.
        """
        owner = self.owner
        clock = owner.clock
        timeout = owner.wait_timeout
        remaining = time_left()
        cut = remaining < timeout  # the deadline, not the queue's timeout, ends this wait
        if cut:
            timeout = max(remaining, 0.0)
            end = clock.now() + timeout
        try:
            granted = self.signal.acquire(timeout=timeout)
        except BaseException:
            self.queue.abandon(self)
            raise
        if granted:
            return
        if cut:
            self.queue.abandon(self)  # a place handed over meanwhile is passed on
            raise deadline_reached(clock, end, timeout, owner.name, WaitDeadlineReachedError) from None
        if self.queue.expire(self):
            owner.wait_timed_out()
            raise owner.wait_timeout_error(timeout) from None


class AsyncWaiter(Waiter):
    """A task awaiting a future of its loop, woken thread-safely; its own entry in the loop's timer.

    A waiter woken without a place gets a new :attr:`future` from :meth:`WaitQueue.claim`.
    """

    __slots__ = ("future", "loop")

    loop: asyncio.AbstractEventLoop

    def __init__(self, queue: WaitQueue, owner: WaitOwner, loop: asyncio.AbstractEventLoop) -> None:
        Waiter.__init__(self, queue, owner)  # named, not super(): one per queued call
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def ready(self) -> bool:
        """Whether its loop is running (a stopped loop's waiter keeps its place and is nudged)."""
        return self.loop.is_running()

    def gone(self) -> bool:
        """Whether its loop is closed."""
        return self.loop.is_closed()

    def cancel_requested(self) -> bool:
        """Whether its task was cancelled while it awaits :attr:`future` (``Task.cancel`` cancels it)."""
        return self.future.cancelled()

    def overdue(self) -> bool:
        """Whether its loop is stopped past its queue timeout (once its task waits: the timer's time)."""
        loop = self.loop
        return not loop.is_running() and getattr(self, "timer_when", math.inf) <= loop_timer(loop).now()

    def wake(self) -> bool:
        """Complete its future on its loop (thread-safely from another thread); ``False`` if closed.

        Directly only where its loop is the one running here: a loop may run on another thread
        than the one it ran on when the waiter queued, which a direct completion would not wake.
        """
        future = self.future
        try:
            if _get_running_loop() is self.loop:
                _resolve(future)
            else:
                self.loop.call_soon_threadsafe(_resolve, future)
        except RuntimeError:  # its loop is closed: the waiter will never run again
            return False
        return True

    async def wait(self) -> None:
        """Wait on the waiter's loop until a place is handed over, or raise at the timeout."""
        queue = self.queue
        loop = self.loop
        timeout = self.owner.wait_timeout
        timer = loop_timer(loop)
        deadline = timer.now() + timeout
        timer.add(loop, self, deadline)
        try:
            await self.future
            while not queue.claim(self):
                # Woken without a place (its loop had stopped): wait again until the same deadline,
                # re-armed if it passed while the waiter held a place it was offered.
                if not self.armed:
                    timer.add(loop, self, deadline)
                await self.future
        except BaseException:
            queue.abandon(self)
            raise
        finally:
            timer.cancel(self)
            if self.state == TIMED_OUT:  # reported once, by its task, however the wait ended
                self.owner.wait_timed_out()
        if self.state == TIMED_OUT:
            raise self.owner.wait_timeout_error(timeout) from None


def _resolve(future: asyncio.Future[None]) -> None:
    """Complete ``future`` (on its loop) unless it is already done (cancelled, or woken before)."""
    if not future.done():
        future.set_result(None)


def new_waiter(sync: bool, queue: WaitQueue, owner: WaitOwner) -> Waiter:
    """Return a waiter for the driver that runs: this thread's, or the running loop's task's."""
    if sync:
        return SyncWaiter(queue, owner)
    return AsyncWaiter(queue, owner, asyncio.get_running_loop())


class WaitQueue(Protocol):
    """The rules of a FIFO queue of :class:`Waiter`, each method atomic under the owner's lock."""

    def acquire(self, ctx: ExecutionContext, owner: WaitOwner) -> Waiter | Enqueued:
        """Take a place if one is free, else queue a new waiter, else reject.

        The waiter is made only for a call that queues: :func:`new_waiter` of the driver that
        runs (``ctx.sync``) for ``owner``, under the lock, in the same round trip.

        Returns:
            :data:`ADMITTED`, :data:`FULL`, or the queued waiter.
        """
        ...

    def claim(self, waiter: AsyncWaiter) -> bool:
        """Take the place a woken async waiter was offered (called by its task, on its loop).

        Returns:
            ``True`` if the wait is over (the waiter holds a place, or timed out); ``False`` if
            it must await its (new) ``future`` again.
        """
        ...

    def abandon(self, waiter: Waiter) -> None:
        """Forget a cancelled waiter: take it out of the queue, or pass on the place it was handed."""
        ...

    def expire(self, waiter: Waiter) -> bool:
        """End a waiter's wait at its timeout (counting it: timed out, or cancelled if that came first).

        A waiter whose cancellation was requested before (:meth:`Waiter.cancel_requested`) leaves
        counted as cancelled, not timed out: what ended its wait first.

        Returns:
            ``True`` if it left the queue; ``False`` if it was handed a place (just before, or
            as it timed out: it must then run) or is no longer queued.
        """
        ...
