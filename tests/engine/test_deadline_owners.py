"""Who reports a deadline: a task that caught a cancellation, a sync call under an async timeout."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from otel_resilience import (
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    TimeoutHandler,
    fail_after,
    move_on_after,
)
from otel_resilience.engine import AsyncDeadline, SyncDeadline, current_deadline
from otel_resilience.engine.context import DeadlineReachedError, sleep_sync_within_deadline
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock


async def _catch_one_cancellation() -> None:
    """Cancel the running task and catch it, as `asyncio.shield`'s documented idiom does."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 1  # left up: the state every later scope must cope with


async def _handler() -> object:
    return await TimeoutHandler(0.05).with_timeout(asyncio.sleep, 30)


async def _handler_default() -> object:
    return await TimeoutHandler(0.05, default="default").with_timeout(asyncio.sleep, 30)


async def _fail_after() -> object:
    async with fail_after(0.05):
        await asyncio.sleep(30)
    return "unreachable"


async def _move_on_after() -> object:
    async with move_on_after(0.05) as scope:
        await asyncio.sleep(30)
    return f"moved on, expired={scope.expired}"


async def _manager_fallback() -> object:
    config = ResilienceConfig(
        name="caught-cancellation",
        timeout=0.05,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
    )
    return await ResilienceManager().execute_with_resilience(asyncio.sleep, config, 30)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_handler, OperationTimeoutError),
        (_handler_default, "default"),
        (_fail_after, OperationTimeoutError),
        (_move_on_after, "moved on, expired=True"),
        (_manager_fallback, "fallback"),
    ],
)
async def test_a_task_that_caught_a_cancellation_still_gets_its_timeouts(
    scope: Callable[[], Awaitable[object]], expected: object
) -> None:
    """A cancellation caught earlier leaves the task's count up: an expired scope still owns its own."""
    await _catch_one_cancellation()
    if isinstance(expected, type):
        with pytest.raises(expected):
            await scope()
    else:
        assert await scope() == expected
    assert current_deadline() is None


async def test_a_pending_cancellation_from_elsewhere_still_passes_through() -> None:
    """The scope expired, but another cancellation came too: it propagates as CancelledError."""
    deadline = AsyncDeadline(FakeClock(), 0.05, "op")

    async def body() -> None:
        task = asyncio.current_task()
        assert task is not None
        async with deadline:
            deadline.fire()  # our own deadline is due...
            task.cancel()  # ...and someone else cancels the task as well
            await asyncio.sleep(30)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(body())
    assert deadline.expired


def _late(clock: FakeClock, seconds: float) -> Callable[[], str]:
    def call() -> str:
        clock.advance(seconds)  # the call takes `seconds` and returns
        return "late result"

    return call


@pytest.mark.parametrize("took", [5.0, 0.7])
async def test_a_sync_call_under_a_tighter_async_timeout_that_returns_late_is_the_async_timeout(
    took: float,
) -> None:
    """Past the async scope's 0.5 s (and past the sync 1 s or not): the async scope reports it."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, name="inner-sync", default="inner default", clock=clock)
    outer = TimeoutHandler(0.5, name="outer-async", clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, took))

    with pytest.raises(OperationTimeoutError) as caught:
        await outer.with_timeout(body)
    assert (caught.value.operation, caught.value.timeout) == ("outer-async", 0.5)
    assert type(caught.value) is OperationTimeoutError  # the scope's own, converted
    assert outer.get_stats()["timeouts"] == 1
    assert inner.get_stats()["timeouts"] == 0


async def test_a_sync_call_under_a_looser_async_timeout_judges_its_own_deadline() -> None:
    """The sync scope's 1 s is the tightest: its default answers, the async scope sees a success."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, name="inner-sync", default="inner default", clock=clock)
    outer = TimeoutHandler(60.0, name="outer-async", clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, 5.0))

    assert await outer.with_timeout(body) == "inner default"
    assert (inner.get_stats()["timeouts"], outer.get_stats()["timeouts"]) == (1, 0)


async def test_a_sync_call_in_time_under_a_tighter_async_timeout_returns() -> None:
    """Before the binding deadline the result is the result."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, 0.2))

    assert await TimeoutHandler(0.5, clock=clock).with_timeout(body) == "late result"


async def test_an_async_scope_turns_a_deadline_reached_by_sync_code_into_its_own_timeout() -> None:
    """An engine wait in sync code under the task's scope stops at its deadline: the scope's timeout."""
    clock = FakeClock(0.0)
    scope = AsyncDeadline(clock, 2.0, "outer", "total")
    with pytest.raises(OperationTimeoutError) as caught:
        async with scope:
            sleep_sync_within_deadline(clock, 60.0, "inner")  # blocks the loop: no timer can fire
    assert type(caught.value) is OperationTimeoutError
    assert (caught.value.operation, caught.value.scope, scope.expired) == ("outer", "total", True)
    assert clock.now() == 2.0


async def test_a_deadline_reached_error_raised_before_the_deadline_stays_what_it_is() -> None:
    """Raised by hand, before the scope's deadline: not the scope's timeout."""
    scope = AsyncDeadline(FakeClock(0.0), 2.0, "outer")
    with pytest.raises(DeadlineReachedError):
        async with scope:
            raise DeadlineReachedError("op", 1.0, "total")
    assert not scope.expired


def test_a_looser_sync_scope_that_returns_late_lets_the_outer_report_it() -> None:
    """The inner 10 s scope returns at 5 s, past the outer 2 s: the outer's timeout, as for a wait."""
    clock = FakeClock(0.0)
    seen: list[Any] = []
    outer, inner = SyncDeadline(clock, 2.0, "outer", "total"), SyncDeadline(clock, 10.0, "inner", "attempt")
    with pytest.raises(OperationTimeoutError) as caught, outer:
        try:
            with inner:
                clock.advance(5.0)
        except DeadlineReachedError as reached:  # what a step between the two scopes sees
            seen.append(reached)
            raise
    assert (caught.value.operation, caught.value.scope, outer.expired, inner.expired) == (
        "outer",
        "total",
        True,
        False,
    )
    assert [type(error) for error in seen] == [DeadlineReachedError]
    assert seen[0].timeout == 2.0  # what was left of the binding deadline when the inner began
