"""A deadline that fired is counted and reported, also when the call swallowed its cancellation."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import StatusCode
from otel_support import Otel

from otel_resilience import TimeoutHandler, fail_after, time_left
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.retry import Retry, RetryPolicy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock


async def stubborn() -> str:
    """Catch the deadline's cancellation and return a value (the callee's decision)."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        return "swallowed"
    return "never"


def _timeouts(otel: Otel, name: str) -> int:
    return sum(int(p.value) for p in otel.points(sc.TIMEOUTS) if p.attributes.get(sc.NAME) == name)


async def test_a_timeout_whose_call_swallowed_its_cancellation_counts_the_expired_deadline(
    otel: Otel,
) -> None:
    """The value gets through, the execution succeeded, and the deadline that fired is a timeout.

    It was counted nowhere: no ``resilience.timeouts``, no ``resilience.timeout.expired`` event
    and ``timeouts`` 0 in the handler's statistics, although its own deadline expired.
    """
    handler = TimeoutHandler(0.02, name="swallowed-total", default="default")
    assert await handler.with_timeout(stubborn) == "swallowed"
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    span = otel.span("swallowed-total")
    assert span.attributes[sc.OUTCOME] == "success"
    assert span.status.status_code is StatusCode.UNSET
    assert [(e.name, dict(e.attributes)) for e in span.events] == [
        (
            sc.EV_TIMEOUT,
            {
                sc.PATTERN: "timeout",
                sc.NAME: "swallowed-total",
                "resilience.timeout.scope": "total",
                "resilience.timeout.limit": 0.02,
            },
        )
    ]
    assert _timeouts(otel, "swallowed-total") == 1


async def test_a_policy_whose_call_swallowed_its_cancellation_counts_the_expired_deadline(otel: Otel) -> None:
    """The same through a manager policy's total timeout."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="swallowed-policy", timeout=0.02)
    assert await manager.execute_with_resilience(stubborn, config) == "swallowed"
    span = otel.span("swallowed-policy")
    assert span.attributes[sc.OUTCOME] == "success"
    assert [e.name for e in span.events] == [sc.EV_TIMEOUT]
    assert _timeouts(otel, "swallowed-policy") == 1


async def test_a_call_in_time_counts_no_timeout(otel: Otel) -> None:
    """A call that ends before its deadline reports nothing."""

    async def quick() -> str:
        return "quick"

    handler = TimeoutHandler(5.0, name="in-time")
    assert await handler.with_timeout(quick) == "quick"
    assert handler.get_stats()["timeouts"] == 0
    assert otel.span("in-time").events == ()
    assert _timeouts(otel, "in-time") == 0


async def test_a_retry_attempt_that_swallowed_its_timeout_counts_it(otel: Otel) -> None:
    """An attempt cut by the retry's attempt_timeout that caught it and returned: counted, not retried."""
    retry = Retry("swallowed-attempt", RetryPolicy(max_attempts=3, initial_delay=0.0, attempt_timeout=0.02))
    assert await retry.execute(stubborn) == "swallowed"
    assert retry.get_stats()["attempt_timeouts"] == 1
    span = otel.span("swallowed-attempt")
    assert span.attributes[sc.OUTCOME] == "success"
    timeout_events = [dict(e.attributes) for e in span.events if e.name == sc.EV_TIMEOUT]
    assert timeout_events == [
        {
            sc.PATTERN: "retry",
            sc.NAME: "swallowed-attempt",
            "resilience.timeout.scope": "attempt",
            "resilience.timeout.limit": 0.02,
        }
    ]
    assert _timeouts(otel, "swallowed-attempt") == 1


async def test_an_async_with_scope_whose_block_swallowed_its_cancellation_just_ends() -> None:
    """``fail_after`` reports nothing: the block's value goes through and ``expired`` says it fired."""
    async with fail_after(0.02) as scope:
        value = await stubborn()
    assert (value, scope.expired) == ("swallowed", True)


def _raises_its_socket_timeout(clock: FakeClock) -> str:
    """A sync callee that waits what is left of its deadline (a socket timeout) and raises the socket's timeout."""
    clock.advance(time_left())
    raise TimeoutError("timed out")  # socket.timeout


def test_a_sync_timeout_whose_call_raised_its_own_error_at_the_deadline_counts_the_expired_deadline(
    otel: Otel,
) -> None:
    """The callee's error gets through, the execution failed with it, and the deadline that expired is a timeout.

    A sync callee was counted nowhere (no ``resilience.timeouts``, no event), where the async
    driver counts the same callee: dashboards saw no timeouts of sync services.
    """
    clock = FakeClock(1000.0)
    handler = TimeoutHandler(5.0, name="sync-own-error", default="default", clock=clock)
    with pytest.raises(TimeoutError, match="timed out"):
        handler.with_timeout_sync(_raises_its_socket_timeout, clock)
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    span = otel.span("sync-own-error")
    assert span.attributes[sc.OUTCOME] == "failure"
    assert [(e.name, dict(e.attributes)) for e in span.events if e.name == sc.EV_TIMEOUT] == [
        (
            sc.EV_TIMEOUT,
            {
                sc.PATTERN: "timeout",
                sc.NAME: "sync-own-error",
                "resilience.timeout.scope": "total",
                "resilience.timeout.limit": 5.0,
            },
        )
    ]
    assert _timeouts(otel, "sync-own-error") == 1


def test_a_sync_policy_whose_call_raised_its_own_error_at_the_deadline_counts_the_expired_deadline(
    otel: Otel,
) -> None:
    """The same through a manager policy's total timeout, and through its retry's attempt_timeout."""
    clock = FakeClock(1000.0)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(name="sync-own-error-policy", timeout=5.0)
    with pytest.raises(TimeoutError, match="timed out"):
        manager.execute_with_resilience_sync(_raises_its_socket_timeout, config, clock)
    span = otel.span("sync-own-error-policy")
    assert [e.name for e in span.events if e.name == sc.EV_TIMEOUT] == [sc.EV_TIMEOUT]
    assert _timeouts(otel, "sync-own-error-policy") == 1

    policy = RetryPolicy(max_attempts=1, attempt_timeout=2.0)
    attempts = ResilienceConfig(name="sync-own-error-attempt", timeout=None, retry_policy=policy)
    with pytest.raises(TimeoutError, match="timed out"):
        manager.execute_with_resilience_sync(_raises_its_socket_timeout, attempts, clock)
    span = otel.span("sync-own-error-attempt")
    timeout_events = [dict(e.attributes) for e in span.events if e.name == sc.EV_TIMEOUT]
    assert [(e["resilience.timeout.scope"], e["resilience.timeout.limit"]) for e in timeout_events] == [
        ("attempt", 2.0)
    ]
    assert _timeouts(otel, "sync-own-error-attempt") == 1
