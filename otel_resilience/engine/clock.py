"""Time, injectable: every pattern reads time and sleeps through a :class:`Clock`.

The default, :data:`SYSTEM_CLOCK`, uses ``time.monotonic`` (the same base as asyncio's loop
time), ``asyncio.sleep`` (never ending before its time on that clock, on uvloop's loop too) and
``time.sleep``. Tests inject
:class:`otel_resilience.testing.FakeClock` so that backoffs, waits and breaker timers take no
real time; an async timeout is still cancelled by its event loop's timer, in the loop's own time
(see :mod:`otel_resilience.testing`).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol, SupportsIndex, TypeVar, runtime_checkable

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.validation import fail

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]

F = TypeVar("F", bound="ClockFollower")


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock with async and sync sleeps, in seconds."""

    def now(self) -> float:
        """Return the current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float, /) -> None:
        """Suspend the current task for ``seconds``."""
        ...

    def sleep_sync(self, seconds: float, /) -> None:
        """Block the current thread for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``asyncio.sleep`` and ``time.sleep``."""

    # Hidden from type checkers, which then see ``now`` as the attribute ``__init__`` declares:
    # pyright reads a slot as a class member, and would bind ``time.monotonic`` as a method, so
    # that no instance would be a :class:`Clock` for it.
    if not TYPE_CHECKING:
        __slots__ = ("now",)

    def __init__(self) -> None:
        if inspect.getattr_static(self, "now", None) is _NOW_SLOT:  # a subclass's own ``now`` is kept
            self.now: Callable[[], float] = time.monotonic
            """``time.monotonic`` itself, held in a slot: a caller that reads ``clock.now`` into a
            local and calls it pays a specialised slot read and a C call (on Python 3.11 a
            ``staticmethod`` of the class is looked up unspecialised on every call)."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds`` (``asyncio.sleep``): never less on ``time.monotonic``.

        A sleep that ended before its time sleeps the rest. uvloop's loop sets its timer for the
        delay rounded to the nearest millisecond from its time, the monotonic clock in whole
        milliseconds: ``asyncio.sleep`` there ended up to a millisecond and a half early (a
        retry's backoff too short; a rate limiter's waiter woken before its permit was due slept
        again). The rest, a millisecond or two at most, is waited the same way (a delay that
        rounds to none runs in the loop's next turn), as the loop timer of a uvloop loop waits
        what is left of a deadline (:mod:`otel_resilience.engine.timer`). asyncio's loops run a
        timer at most the clock's resolution early: the same code, two readings of the clock more.
        """
        end = time.monotonic() + seconds
        await asyncio.sleep(seconds)
        while (left := end - time.monotonic()) > 0:  # noqa: ASYNC110 - waits for a time, not an event
            await asyncio.sleep(left)

    def sleep_sync(self, seconds: float) -> None:
        """Block the current thread for ``seconds`` (``time.sleep``)."""
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK" if self is SYSTEM_CLOCK else f"{type(self).__name__}()"

    def __reduce_ex__(self, protocol: SupportsIndex) -> str | tuple[Any, ...]:
        """Pickle and copy :data:`SYSTEM_CLOCK` as itself, the one process-wide clock.

        Another instance is pickled as a new one (it has no state of its own), an instance of a
        subclass as any object of its class.
        """
        if self is SYSTEM_CLOCK:
            return "SYSTEM_CLOCK"
        if type(self) is SystemClock:
            return SystemClock, ()
        return super().__reduce_ex__(protocol)


_NOW_SLOT: Final = vars(SystemClock)["now"]
"""The slot that holds ``now`` (a subclass that defines its own ``now`` leaves it empty)."""


SYSTEM_CLOCK: Final[Clock] = SystemClock()
"""The process-wide real clock, used whenever no clock is injected."""


def check_clock(owner: str, clock: object) -> Clock:
    """Return ``clock`` if it is a :class:`Clock` (``now``, ``sleep``, ``sleep_sync``); raise otherwise.

    The protocol check only asks that the three names exist: a class (``clock=FakeClock`` for
    ``clock=FakeClock()``, whose methods are unbound) and an object whose ``now`` or sleeps are
    not functions are refused here too, not at the first reading of the time.

    Raises:
        TypeError: ``clock`` is not a clock (the message names ``<owner>.clock``).
    """
    if clock is SYSTEM_CLOCK or (
        isinstance(clock, Clock)
        and not isinstance(clock, type)
        and callable(clock.now)
        and callable(clock.sleep)
        and callable(clock.sleep_sync)
    ):
        return clock
    rule = "a Clock (now, sleep, sleep_sync)"
    if isinstance(clock, type):
        rule += f" instance, not a class (pass {clock.__name__}(), not {clock.__name__})"
    raise fail(owner, "clock", rule, clock, kind=TypeError)


class ClockFollower(Protocol):
    """What runs on the process-wide clock (:func:`follow_process_clock`): told of each new one."""

    def _follow_clock(self, clock: Clock, /) -> None:
        """Run on ``clock`` from now on (a call in flight ends on the clock it started on)."""
        ...


_PROCESS_LOCK: Final = fork_safe(threading.Lock())
_PROCESS: list[Clock] = [SYSTEM_CLOCK]
"""The process-wide clock: the process-wide manager's (:func:`set_process_clock`)."""
_FOLLOWERS: Final[weakref.WeakSet[ClockFollower]] = weakref.WeakSet()


def follow_process_clock(build: Callable[[Clock], F]) -> F:
    """Return ``build(clock)`` on the process-wide clock, told of every clock that takes its place.

    The one place the process-wide clock is resolved: what is given no clock of its own and
    follows it (a :func:`~otel_resilience.retry` function, ``retry_sync`` and ``retry_async``
    given no ``clock``, a :class:`~otel_resilience.RetryBudget` given none, the process-wide
    :class:`~otel_resilience.AlertSystem`) is built on it here,
    then moved to each new one by :func:`set_process_clock` (:meth:`ClockFollower._follow_clock`),
    never read again on a call.
    Held weakly: a follower freed is forgotten.
    """
    with _PROCESS_LOCK:  # built on the clock in place, and told of the next: never one missed
        follower = build(_PROCESS[0])
        _FOLLOWERS.add(follower)
    return follower


def set_process_clock(clock: Clock) -> None:
    """Make ``clock`` the process-wide clock, moving every follower onto it (the process-wide manager's).

    Set by :func:`~otel_resilience.manager.decorator.replace_default_manager`, so that
    :func:`otel_resilience.testing.fresh_defaults` gives the block's clock to what follows it.
    """
    with _PROCESS_LOCK:
        if _PROCESS[0] is clock:
            return
        _PROCESS[0] = clock
        for follower in list(_FOLLOWERS):
            follower._follow_clock(clock)
