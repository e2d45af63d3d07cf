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
    Hedging,
    HedgingConfig,
    Jitter,
    OperationTimeoutError,
    RateLimiter,
    RateLimiterConfig,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    fail_after,
    retry_async,
)
from otel_resilience.engine import SYSTEM_CLOCK, AsyncDeadline, SystemClock, time_left
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


def test_a_system_clock_sleep_ends_once_the_monotonic_clock_passed_its_time() -> None:
    """``await SYSTEM_CLOCK.sleep(d)`` returns once ``time.monotonic()`` moved ``d`` on, never before
    (before: uvloop's rounded timer ended 136 of 300 such sleeps up to 0.5 ms early)."""

    async def main() -> list[float]:
        early = []
        for budget in BUDGETS:
            start = time.monotonic()
            await SYSTEM_CLOCK.sleep(budget)
            if (short := start + budget - time.monotonic()) > 0:
                early.append(short)
        return early

    assert _on_uvloop(main) == []


def test_a_retry_backs_off_its_whole_delay() -> None:
    """Each attempt starts its whole backoff after the one before failed, on the system clock
    (before: all 59 backoffs of 1.3 ms were short, down to 1.07 ms)."""
    delay = 0.0013
    policy = RetryPolicy(
        max_attempts=60, strategy=RetryStrategy.FIXED, initial_delay=delay, jitter=Jitter.NONE
    )
    starts: list[float] = []
    failed: list[float] = []

    async def failing() -> None:
        starts.append(time.monotonic())
        failed.append(time.monotonic())
        raise ConnectionError("flaky")

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await retry_async(failing, policy=policy)

    _on_uvloop(main)
    gaps = [start - end for end, start in zip(failed, starts[1:], strict=False)]
    assert len(gaps) == 59
    assert [gap for gap in gaps if gap < delay] == []


class _CountedSleeps(SystemClock):
    """The system clock, counting its async sleeps."""

    __slots__ = ("sleeps",)

    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


def test_a_permit_waited_for_is_slept_for_once() -> None:
    """A rate limiter's caller that waits for its permit sleeps once for it, on the system clock
    (before: its sleep ended early, and it slept again, turn by turn of the loop, until the permit
    was due: 7631 sleeps for 98 permits waited for; none was taken early, none refused)."""
    clock = _CountedSleeps()
    limiter = RateLimiter(
        "uvloop-permits", RateLimiterConfig(rate=1 / 0.0013, burst=1, max_wait=1.0), clock=clock
    )

    async def main() -> None:
        for _ in range(100):
            await limiter.call(asyncio.sleep, 0)

    _on_uvloop(main)
    stats = limiter.get_stats()
    assert stats["admitted"] == 100
    # At most one sleep per permit waited for: a caller the loop ran late (a loaded machine) finds
    # its permit due and sleeps none.
    assert 0 < clock.sleeps <= stats["waited"]


def test_a_hedge_by_delay_starts_once_its_delay_passed() -> None:
    """A hedge starts no sooner than its delay after the attempt before it, on the system clock,
    whose delay the race waits beside the attempts in flight (before: 54 of 60 hedges of a 1.3 ms
    delay started early, from 1.10 ms)."""
    delay = 0.0013
    hedging = Hedging("uvloop-hedge", HedgingConfig(delay=delay, max_attempts=2))

    async def main() -> tuple[list[float], int]:
        early = []
        hedged = 0
        starts: list[float] = []

        async def slow() -> None:
            starts.append(time.monotonic())
            await asyncio.sleep(0.05)

        for _ in range(60):
            starts.clear()
            before = time.monotonic()
            await hedging.call(slow)
            if len(starts) < 2:  # the original answered first (a loop held up past 50 ms): no hedge
                continue
            hedged += 1
            if (waited := starts[1] - before) < delay:
                early.append(waited)
        return early, hedged

    early, hedged = _on_uvloop(main)
    assert early == []
    assert hedged >= 30  # most races hedge: the original sleeps 40 times the delay
