"""What an enclosing deadline ends is a ``timeout``, in both drivers: an execution, a hedged attempt.

docs/telemetry.md: an attempt that an enclosing deadline ended (a total timeout, a
``TimeoutHandler``, ``fail_after``) is a ``timeout`` with the ``error.type`` of the timeout the
caller gets, in both drivers. An execution of a policy nested in that scope ends the same way:
the async driver sees the deadline's cancellation, the sync one the deadline reached in its
thread; neither is the caller's cancellation, nor a rejection.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from opentelemetry import trace
from support import until

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    Hedging,
    HedgingConfig,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    TimeoutHandler,
    fail_after,
)
from otel_resilience.engine import SYSTEM_CLOCK, SyncDeadline
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

TIMEOUT_TYPE = "otel_resilience.errors.OperationTimeoutError"
OUTER = 0.02
"""The enclosing deadline of the async runs (seconds on the loop's clock): it fires while the call
waits on an event nobody sets, so no figure below depends on how long it took."""


def _execution(otel, name: str) -> tuple[object, object, object]:
    span = otel.span(name)
    return span.attributes[sc.OUTCOME], span.attributes.get(sc.ERROR_TYPE), span.status.status_code


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_an_execution_an_enclosing_deadline_ends_is_a_timeout(otel, driver: str) -> None:
    """A 60 s timeout inside a tighter enclosing scope: its execution is a ``timeout``, not ``cancelled``."""
    name = f"inner-{driver}"
    if driver == "sync":
        clock = FakeClock(0.0)
        inner = TimeoutHandler(60.0, name=name, clock=clock)
        with pytest.raises(OperationTimeoutError) as caught, SyncDeadline(clock, 1.0, "caller"):
            inner.with_timeout_sync(clock.advance, 5.0)  # returns past the caller's deadline
    else:
        inner = TimeoutHandler(60.0, name=name)
        with pytest.raises(OperationTimeoutError) as caught:
            async with fail_after(OUTER, operation="caller"):
                await inner.with_timeout(asyncio.Event().wait)
    assert caught.value.operation == "caller"
    assert _execution(otel, name) == ("timeout", TIMEOUT_TYPE, trace.StatusCode.ERROR)
    stats = inner._pipeline.stats
    assert (stats.timeouts, stats.cancelled, stats.rejected) == (1, 0, 0)


@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_a_queued_execution_an_enclosing_deadline_ends_is_a_timeout(otel, driver: str) -> None:
    """A call queued in a full bulkhead when the enclosing deadline comes: a ``timeout``, neither rejected nor cancelled."""
    name = f"queue-{driver}"
    bulkhead = Bulkhead(name, BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30.0))
    if driver == "sync":
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            holding.set()
            release.wait(10.0)

        holder = threading.Thread(target=bulkhead.execute_sync, args=(hold,))
        holder.start()
        try:
            assert holding.wait(10.0)
            with pytest.raises(OperationTimeoutError), SyncDeadline(SYSTEM_CLOCK, 0.05, "caller"):
                bulkhead.execute_sync(lambda: "ran")
        finally:
            release.set()
            holder.join(10.0)
    else:
        release = asyncio.Event()
        holder = asyncio.create_task(bulkhead.execute(release.wait))
        await until(lambda: bulkhead.get_stats()["active"] == 1)
        try:
            with pytest.raises(OperationTimeoutError):
                async with fail_after(OUTER, operation="caller"):
                    await bulkhead.execute(asyncio.sleep, 0)
        finally:
            release.set()
            await holder
    queued = [s for s in otel.spans(name) if s.attributes[sc.OUTCOME] != "success"]
    assert [(s.attributes[sc.OUTCOME], s.attributes.get(sc.ERROR_TYPE)) for s in queued] == [
        ("timeout", TIMEOUT_TYPE)
    ]
    stats = bulkhead._pipeline.stats
    assert (stats.timeouts, stats.cancelled, stats.rejected, stats.succeeded) == (1, 0, 0, 1)


@pytest.mark.parametrize("deadline", ["enclosing scope", "policy's total timeout"])
async def test_hedged_attempts_the_total_deadline_ends_are_timeouts(otel, deadline: str) -> None:
    """Both attempts of a parallel hedge still running at the deadline end ``timeout``, not ``cancelled``."""
    name = f"cut-hedges-{len(deadline)}"
    config = HedgingConfig(mode="parallel", max_attempts=2)
    with pytest.raises(OperationTimeoutError):
        if deadline == "enclosing scope":
            async with fail_after(OUTER, operation="caller"):
                await Hedging(name, config).call(asyncio.Event().wait)
        else:
            policy = ResilienceConfig(name=name, timeout=OUTER, hedging=config)
            await ResilienceManager().execute_with_resilience(asyncio.Event().wait, policy)
    attempts = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert sorted(
        (s.attributes[sc.ATTEMPT_TYPE], s.attributes[sc.OUTCOME], s.attributes.get(sc.ERROR_TYPE))
        for s in attempts
    ) == [("hedge", "timeout", TIMEOUT_TYPE), ("original", "timeout", TIMEOUT_TYPE)]
    assert all(s.status.status_code is trace.StatusCode.ERROR for s in attempts)
    assert _execution(otel, name) == ("timeout", TIMEOUT_TYPE, trace.StatusCode.ERROR)


async def test_hedged_losers_after_a_win_are_still_cancelled(otel) -> None:
    """The race's own cancellation of a loser is no deadline's: it ends ``cancelled``, as documented."""
    hedging = Hedging("losers", HedgingConfig(mode="parallel", max_attempts=2))
    calls = [0]

    async def first_waits_forever() -> str:
        calls[0] += 1
        if calls[0] == 1:
            await asyncio.Event().wait()
        return "hedge"

    async with fail_after(60.0):
        assert await hedging.call(first_waits_forever) == "hedge"
    outcomes = sorted(
        (s.attributes[sc.ATTEMPT_TYPE], s.attributes[sc.OUTCOME])
        for s in otel.spans("losers" + sc.ATTEMPT_SPAN_SUFFIX)
    )
    assert outcomes == [("hedge", "success"), ("original", "cancelled")]


async def test_a_guarded_block_an_enclosing_deadline_ends_is_a_timeout() -> None:
    """``async with breaker.guard()`` cut by the enclosing deadline counts a timeout, as a call does."""
    breaker = CircuitBreaker("guarded-cut", CircuitBreakerConfig(failure_threshold=1))
    with pytest.raises(OperationTimeoutError):
        async with fail_after(OUTER, operation="caller"), breaker.guard():
            await asyncio.Event().wait()
    stats = breaker._pipeline.stats
    assert (stats.timeouts, stats.cancelled) == (1, 0)
    assert breaker.get_stats()["state"] == "closed"  # a cancellation to the breaker: no failure counted
