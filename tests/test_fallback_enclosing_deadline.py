"""A fallback's own calls that an enclosing deadline ends pass that deadline to its scope, in both drivers.

README "Fallback": cancellation never triggers the fallback, and an enclosing scope's deadline,
reached, is its scope's to answer. The async driver sees the deadline as its task's
cancellation, whatever the fallback was calling when it fired (a ``fallback_functions`` entry,
the cache's ``get``); the sync driver sees it as the deadline reached in its thread (a wait the
deadline cut, a block that returned past it). Either way the caller gets the scope's timeout:
no later fallback function runs past the deadline, no cache error is counted or logged for it,
and the call's own error does not take the timeout's place.
"""

from __future__ import annotations

import asyncio

import pytest

from otel_resilience import OperationTimeoutError, TimeoutHandler, fail_after
from otel_resilience.engine import SyncDeadline
from otel_resilience.patterns.fallback import FallbackConfig, FallbackHandler, FallbackStrategy
from otel_resilience.testing import FakeClock

OUTER = 0.02
"""The enclosing deadline of the async runs (seconds): it fires while the fallback waits on an
event nobody sets, so no figure below depends on how long it took."""


def _down() -> str:
    raise ConnectionError("down")


async def _down_async() -> str:
    raise ConnectionError("down")


def _slow_then_spare(clock: FakeClock, called: list[tuple[str, float]]) -> FallbackHandler:
    """MULTIPLE_ATTEMPTS of ``slow`` (its sync call returns 5 s later on ``clock``), then ``spare``;
    each call recorded in ``called`` with its time."""
    inner = TimeoutHandler(60.0, name="spare-timeout", clock=clock)

    def slow() -> str:
        called.append(("slow", clock.now()))
        return inner.with_timeout_sync(lambda: clock.advance(5.0) or "slow")  # past the caller's deadline

    def spare() -> str:
        called.append(("spare", clock.now()))
        return "spare"

    config = FallbackConfig(FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=[slow, spare])
    return FallbackHandler(config, clock=clock)


def test_no_fallback_function_runs_after_the_callers_deadline_ended_the_one_before_sync() -> None:
    clock = FakeClock(0.0)
    called: list[tuple[str, float]] = []
    handler = _slow_then_spare(clock, called)
    with pytest.raises(OperationTimeoutError), SyncDeadline(clock, 1.0, "caller"):
        handler.execute_with_fallback_sync(_down)
    assert called == [("slow", 0.0)]  # before the fix: the spare ran at t=5.0, past the deadline
    stats = handler.get_stats()
    assert (stats["fallback_successes"], stats["fallback_failures"]) == (0, 0)


async def test_no_fallback_function_runs_after_the_callers_deadline_ended_the_one_before_async() -> None:
    called: list[str] = []

    async def slow() -> str:
        called.append("slow")
        await asyncio.Event().wait()
        return "slow"

    async def spare() -> str:
        called.append("spare")
        return "spare"

    config = FallbackConfig(FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=[slow, spare])
    handler = FallbackHandler(config)
    with pytest.raises(OperationTimeoutError):
        async with fail_after(OUTER, operation="caller"):
            await handler.execute_with_fallback(_down_async)
    assert called == ["slow"]


class _SlowCache:
    """A cache whose ``get`` returns past the caller's deadline (sync) or never (async)."""

    def __init__(self, clock: FakeClock | None) -> None:
        self.clock = clock

    def get(self, key: str) -> object:
        clock = self.clock
        if clock is None:
            return asyncio.Event().wait()
        return TimeoutHandler(60.0, name="cache-timeout", clock=clock).with_timeout_sync(
            lambda: clock.advance(5.0) or "cached"
        )

    def set(self, key: str, value: object) -> None:
        pass


def test_a_cache_read_the_callers_deadline_ended_raises_the_timeout_not_the_calls_error_sync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(0.0)
    config = FallbackConfig(FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=_SlowCache(clock))
    handler = FallbackHandler(config, clock=clock)
    with pytest.raises(OperationTimeoutError), SyncDeadline(clock, 1.0, "caller"):
        handler.execute_with_fallback_sync(_down)  # before the fix: ConnectionError("down")
    stats = handler.get_stats()
    assert (stats["cache_errors"], stats["fallback_failures"]) == (0, 0)
    assert "cache_service.get" not in caplog.text  # no cache failure logged for the deadline


async def test_a_cache_read_the_callers_deadline_ended_raises_the_timeout_not_the_calls_error_async() -> None:
    config = FallbackConfig(FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=_SlowCache(None))
    handler = FallbackHandler(config)
    with pytest.raises(OperationTimeoutError):
        async with fail_after(OUTER, operation="caller"):
            await handler.execute_with_fallback(_down_async)
    stats = handler.get_stats()
    assert (stats["cache_errors"], stats["fallback_failures"]) == (0, 0)


async def test_a_sync_fallback_function_that_returned_past_an_async_deadline_passes_it_to_its_scope() -> None:
    """The async driver calling a sync function that saw the deadline reached in its thread."""
    clock = FakeClock(0.0)
    called: list[tuple[str, float]] = []
    handler = _slow_then_spare(clock, called)
    with pytest.raises(OperationTimeoutError):
        async with fail_after(1.0, clock=clock, operation="caller"):
            await handler.execute_with_fallback(_down_async)  # before the fix: "spare", at t=5.0
    assert called == [("slow", 0.0)]
    stats = handler.get_stats()
    assert (stats["fallback_successes"], stats["fallback_failures"]) == (0, 0)
