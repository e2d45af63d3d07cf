"""Time, injectable: every pattern reads time and sleeps through a :class:`Clock`.

The default, :data:`SYSTEM_CLOCK`, uses ``time.monotonic`` (the same base as asyncio's loop
time), ``asyncio.sleep`` and ``time.sleep``. Tests inject
:class:`otel_resilience.testing.FakeClock` so that no test waits for real time to pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable

from otel_resilience.engine.validation import fail

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock with async and sync sleeps, in seconds."""

    def now(self) -> float:
        """Return the current monotonic time in seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds``."""
        ...

    def sleep_sync(self, seconds: float) -> None:
        """Block the current thread for ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``asyncio.sleep`` and ``time.sleep``."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now: Callable[[], float] = time.monotonic
        """``time.monotonic`` itself, held in a slot: a caller that reads ``clock.now`` into a
        local and calls it pays a specialised slot read and a C call (on Python 3.11 a
        ``staticmethod`` of the class is looked up unspecialised on every call)."""

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds`` (``asyncio.sleep``)."""
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        """Block the current thread for ``seconds`` (``time.sleep``)."""
        time.sleep(seconds)

    def __repr__(self) -> str:
        return "SYSTEM_CLOCK"

    def __reduce__(self) -> str:
        return "SYSTEM_CLOCK"  # pickled and copied as the one process-wide clock


SYSTEM_CLOCK: Final[Clock] = SystemClock()
"""The process-wide real clock, used whenever no clock is injected."""


def check_clock(owner: str, clock: object) -> Clock:
    """Return ``clock`` if it is a :class:`Clock` (``now``, ``sleep``, ``sleep_sync``); raise otherwise.

    Raises:
        TypeError: ``clock`` is not a clock (the message names ``<owner>.clock``).
    """
    if clock is SYSTEM_CLOCK or isinstance(clock, Clock):
        return clock
    raise fail(owner, "clock", "a Clock (now, sleep, sleep_sync)", clock, kind=TypeError)
