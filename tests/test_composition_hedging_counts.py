"""Hedging in a policy: how an execution is counted whose hedges met the links inside the hedging."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)


def parallel_policy(manager: ResilienceManager, name: str) -> Any:
    """Three attempts at once, and room for one of them: the hedges are turned away by the bulkhead."""
    return manager.policy(
        name,
        ResilienceConfig(
            hedging=HedgingConfig(mode="parallel", max_attempts=3),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=5),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        ),
    )


def outcomes(otel: Any, name: str) -> dict[str, int]:
    """The ``resilience.executions`` counts of policy ``name`` by outcome (non-zero only)."""
    found = {}
    for attributes, value in otel.values("resilience.executions").items():
        attributes = dict(attributes)
        if attributes.get("resilience.policy") == name and value:
            found[attributes["resilience.outcome"]] = value
    return found


async def test_hedges_the_bulkhead_rejected_do_not_make_the_original_a_recovery(otel: Any) -> None:
    """The original answers while its hedges were rejected: a first-attempt success, not a recovery.

    A rejected hedge never called the dependency: there was no failure to recover from.
    """
    manager = ResilienceManager()
    handle = parallel_policy(manager, "quotes")

    async def answer() -> str:
        while handle.get_stats()["bulkhead"]["rejected"] < 2:  # both hedges turned away first
            await asyncio.sleep(0)
        return "quote"

    assert await handle.execute(answer) == "quote"
    stats = handle.get_stats()
    assert stats["bulkhead"]["rejected"] == 2
    assert stats["circuit_breaker"]["total_ignored"] == 2  # the rejections are no failures either
    assert stats["circuit_breaker"]["total_failures"] == 0
    executions = stats["executions"]
    assert (executions["successful_first_attempt"], executions["successful_after_failure"]) == (1, 0)
    assert outcomes(otel, "quotes") == {"success": 1}


async def test_hedges_that_failed_still_make_the_original_a_recovery(otel: Any) -> None:
    """The rule's other side: hedges that called the dependency and failed make the win a recovery."""
    manager = ResilienceManager()
    handle = manager.policy(
        "prices",
        ResilienceConfig(
            hedging=HedgingConfig(mode="parallel", max_attempts=3),
            circuit_breaker=CircuitBreakerConfig(failure_threshold=5),
        ),
    )
    calls = 0

    async def first_slow_others_fail() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("replica down")
        while handle.get_stats()["circuit_breaker"]["total_failures"] < 2:
            await asyncio.sleep(0)
        return "price"

    assert await handle.execute(first_slow_others_fail) == "price"
    executions = handle.get_stats()["executions"]
    assert (executions["successful_first_attempt"], executions["successful_after_failure"]) == (0, 1)
    assert outcomes(otel, "prices") == {"recovered": 1}


@pytest.mark.parametrize(
    "hedging",
    [
        HedgingConfig(delay=60.0, max_attempts=1),
        HedgingConfig(mode="fallback"),
        HedgingConfig(mode="parallel"),
    ],
    ids=["one-attempt", "fallback", "parallel"],
)
async def test_a_race_that_wins_after_a_retry_of_a_failed_race_is_a_recovery(
    otel: Any, hedging: HedgingConfig
) -> None:
    """Retry around hedging: the first race found no answer, the retry's race won at its first attempt.

    The execution returned after failed attempts: a recovery, as without hedging, whatever the
    winning race looked like on its own.
    """
    manager = ResilienceManager()
    handle = manager.policy(
        "search",
        ResilienceConfig(hedging=hedging, retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0)),
    )
    failures = hedging.max_attempts  # the whole first race fails
    calls = 0

    async def fail_first_race() -> str:
        nonlocal calls
        calls += 1
        failing = calls <= failures
        await asyncio.sleep(0)
        if failing:
            raise ConnectionError("replica down")
        return "hit"

    assert await handle.execute(fail_first_race) == "hit"
    executions = handle.get_stats()["executions"]
    assert (executions["successful_first_attempt"], executions["successful_after_failure"]) == (0, 1)
    assert outcomes(otel, "search") == {"recovered": 1}


async def test_a_race_with_no_acceptable_result_after_a_retry_is_a_failure(otel: Any) -> None:
    """The retry's race answers with the original's result (none was acceptable): a failure.

    The first race failed (its original raised) and the retry's race found no acceptable
    result either: the result the caller gets is one the hedging judged unacceptable, so the
    execution neither succeeded nor recovered.
    """
    manager = ResilienceManager()
    handle = manager.policy(
        "stale",
        ResilienceConfig(
            hedging=HedgingConfig(mode="parallel", hedge_on_result=lambda result: result == "stale"),
            retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0),
        ),
    )
    calls = 0

    async def stale_after_a_failure() -> str:
        nonlocal calls
        calls += 1
        first = calls == 1
        await asyncio.sleep(0)
        if first:
            raise ConnectionError("replica down")
        return "stale"

    assert await handle.execute(stale_after_a_failure) == "stale"
    assert calls == 4
    executions = handle.get_stats()["executions"]
    assert (executions["successful"], executions["failed"]) == (0, 1)
    assert outcomes(otel, "stale") == {"failure": 1}


async def test_a_loser_that_fails_as_it_is_cancelled_does_not_make_the_win_a_recovery(otel: Any) -> None:
    """The original answers with no failure before it; the hedge it beat raises while it is cancelled.

    That error ends an attempt after the race was won (it is the loser's way out, not a failure
    the execution recovered from): the execution is a first-attempt success, as it would be had
    the loser ended with the cancellation itself.
    """
    manager = ResilienceManager()
    handle = manager.policy(
        "orders-loser-on-cancel", ResilienceConfig(hedging=HedgingConfig(mode="parallel", max_attempts=2))
    )
    hedge_running = asyncio.Event()
    calls = 0

    async def original_wins_hedge_fails_on_cancel() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await hedge_running.wait()
            return "order"
        hedge_running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionResetError("connection reset while closing") from None
        return "never"

    assert await handle.execute(original_wins_hedge_fails_on_cancel) == "order"
    stats = handle.get_stats()
    executions = stats["executions"]
    assert (executions["successful_first_attempt"], executions["successful_after_failure"]) == (1, 0)
    assert outcomes(otel, "orders-loser-on-cancel") == {"success": 1}
