"""The engine's timed waits on uvloop's event loop (what uvicorn runs whenever uvloop is installed).

uvloop's loop time is the monotonic clock in whole milliseconds, and it sets a loop timer for a
delay rounded to the nearest millisecond: a loop timer may run up to a millisecond and a half
before the system clock reaches the time it was set for. A deadline scope on the system clock
must still fire only once that clock reached its deadline, as on asyncio's own loop: every reader
of a deadline (:func:`~otel_resilience.engine.deadline.ended_by_deadline`, a retry, a hedge, an
HTTP integration) tells the deadline's cancellation from the caller's by ``time_left() <= 0``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    OperationTimeoutError,
    TimeoutHandler,
    fail_after,
)
from otel_resilience.engine import SYSTEM_CLOCK, AsyncDeadline, time_left
from otel_resilience.engine.timer import TimerEntry, loop_timer
from otel_resilience.errors import BulkheadTimeoutError

if sys.platform == "win32":  # pragma: no cover - uvloop runs on POSIX only
    pytest.skip("uvloop runs on POSIX only", allow_module_level=True)

import uvloop  # after the platform check: the test extra installs it everywhere else

BUDGETS = [0.0005 + 0.0003 * (i % 20) for i in range(200)]
"""Deadlines of half a millisecond to six: as many positions as possible between two whole
milliseconds of uvloop's loop time (a third of them fired early before the fix)."""


def _on_uvloop(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` on a new uvloop loop (the loop uvicorn uses), closed afterwards."""
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_scope_fires_once_the_system_clock_reached_its_deadline() -> None:
    """Every cancellation of a scope on the system clock comes with no time left (before: up to 0.8 ms left)."""

    async def main() -> list[float]:
        early = []
        for budget in BUDGETS:
            with pytest.raises(OperationTimeoutError):
                async with AsyncDeadline(SYSTEM_CLOCK, budget, "op"):
                    try:
                        await asyncio.sleep(1.0)
                    except asyncio.CancelledError:
                        if (left := time_left()) > 0:
                            early.append(left)
                        raise
        return early

    assert _on_uvloop(main) == []


def test_an_execution_an_enclosing_deadline_ends_is_a_timeout() -> None:
    """A policy's execution inside a tighter ``fail_after`` is a ``timeout``, never ``cancelled``
    (before: 32 of 100 were counted cancelled)."""
    inner = TimeoutHandler(60.0, name="inner-uvloop")

    async def main() -> None:
        for budget in BUDGETS[:100]:
            with pytest.raises(OperationTimeoutError):
                async with fail_after(budget, operation="caller"):
                    await inner.with_timeout(asyncio.Event().wait)

    _on_uvloop(main)
    stats = inner._pipeline.stats
    assert (stats.timeouts, stats.cancelled) == (100, 0)


def test_a_zero_timeout_cancels_the_block_at_its_first_await() -> None:
    """A scope entered expired fires before its task's next step, as ``asyncio.timeout(0)`` does."""

    async def main() -> list[str]:
        reached = []
        with pytest.raises(OperationTimeoutError):
            async with AsyncDeadline(SYSTEM_CLOCK, 0.0, "zero"):
                await asyncio.sleep(0)
                reached.append("after the first await")
        return reached

    assert _on_uvloop(main) == []


def test_a_queued_call_waits_its_whole_queue_timeout() -> None:
    """A call queued in a full bulkhead gives up no sooner than its queue timeout on the monotonic clock."""
    timeout = 0.0014
    bulkhead = Bulkhead("uvloop-queue", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=timeout))

    async def main() -> list[float]:
        release = asyncio.Event()
        holder = asyncio.create_task(bulkhead.execute(release.wait))
        await asyncio.sleep(0)
        short = []
        for _ in range(50):
            started = time.monotonic()
            with pytest.raises(BulkheadTimeoutError):
                await bulkhead.execute(release.wait)
            if (waited := time.monotonic() - started) < timeout:
                short.append(waited)
        release.set()
        await holder
        return short

    assert _on_uvloop(main) == []
    assert bulkhead.get_stats()["timed_out"] == 50


class _Stamp(TimerEntry):
    """Records the timer's time when it fires."""

    __slots__ = ("fired_at", "timer")

    def __init__(self, timer: Any) -> None:
        self.timer = timer
        self.fired_at: float | None = None

    def fire(self) -> None:
        self.fired_at = self.timer.now()


def test_the_loop_timer_fires_no_entry_before_its_time() -> None:
    """The shared timer fires each entry at or after its time on the timer's clock, in order."""

    async def main() -> list[tuple[float, float | None]]:
        loop = asyncio.get_running_loop()
        timer = loop_timer(loop)
        stamps = []
        for budget in BUDGETS[:60]:
            stamp = _Stamp(timer)
            when = timer.now() + budget
            timer.add(loop, stamp, when)
            stamps.append((when, stamp))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        while any(stamp.fired_at is None for _, stamp in stamps):
            await asyncio.sleep(0.01)
        return [(when, stamp.fired_at) for when, stamp in stamps if stamp.fired_at < when]  # type: ignore[operator]

    assert _on_uvloop(main) == []
