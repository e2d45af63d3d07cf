"""Deadlines: nested scopes take the minimum, only the tightest arms a timer, own expiry only."""

from __future__ import annotations

import asyncio
import time

import pytest

from otel_resilience.engine import SYSTEM_CLOCK, AsyncDeadline, SyncDeadline, current_deadline, time_remaining
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock


async def test_no_deadline_by_default() -> None:
    """Outside any scope there is no deadline."""
    assert current_deadline() is None
    assert time_remaining(SYSTEM_CLOCK) == float("inf")


async def test_own_deadline_raises_operation_timeout() -> None:
    """A hung call is cancelled at the scope's deadline and surfaces as OperationTimeoutError."""
    seen: list[str] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "op", "attempt"):
            await hang()
    assert time.monotonic() - started < 2.0
    assert seen == ["cancelled"]
    assert info.value.scope == "attempt"
    assert info.value.operation == "op"
    assert isinstance(info.value, TimeoutError)
    assert current_deadline() is None


async def test_outer_deadline_bounds_inner_and_is_reported_as_outer() -> None:
    """An inner scope with a longer timeout is bounded by the outer one, which owns the error."""
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "outer", "total"):
            async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "inner", "attempt") as inner:
                deadline = current_deadline()
                assert deadline is not None
                assert deadline - time.monotonic() < 1.0
                await asyncio.sleep(3600)
    assert info.value.operation == "outer"
    assert inner.expired is False


async def test_inner_tighter_deadline_wins() -> None:
    """A tighter inner scope fires first and the outer scope lets its error through."""
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "outer"):
            async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "inner", "attempt"):
                await asyncio.sleep(3600)
    assert info.value.operation == "inner"


async def test_external_cancellation_propagates_untouched() -> None:
    """A cancel from outside is not turned into a timeout."""
    started = asyncio.Event()

    async def body() -> None:
        async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "op"):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fast_body_leaves_no_deadline_behind() -> None:
    """A body that finishes in time restores the outer deadline."""
    async with AsyncDeadline(SYSTEM_CLOCK, 5.0, "op"):
        assert current_deadline() is not None
    assert current_deadline() is None
    await asyncio.sleep(0)


def test_sync_deadline_publishes_and_enforces_on_return() -> None:
    """Sync code sees the deadline; a result after it is a timeout, an error passes through."""
    clock = FakeClock(100.0)
    with SyncDeadline(clock, 1.0, "op"):
        assert current_deadline() == 101.0
        assert time_remaining(clock) == 1.0
        clock.advance(0.5)
    assert current_deadline() is None
    with pytest.raises(OperationTimeoutError, match="timed out after 1 s"):
        with SyncDeadline(clock, 1.0, "op"):
            clock.advance(1.0)
    with pytest.raises(KeyError):
        with SyncDeadline(clock, 1.0, "op"):
            clock.advance(5.0)
            raise KeyError("k")


def test_sync_outer_deadline_is_kept_by_looser_inner() -> None:
    """A looser inner sync scope does not extend the outer deadline."""
    clock = FakeClock(0.0)
    with SyncDeadline(clock, 1.0, "outer"):
        with SyncDeadline(clock, 10.0, "inner"):
            assert current_deadline() == 1.0
