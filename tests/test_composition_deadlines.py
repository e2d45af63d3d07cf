"""A policy's total deadline across its layers: a wait it cuts short is its timeout, in both drivers."""

from __future__ import annotations

import asyncio
import threading

import pytest
from support import until, until_sync

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.context import SyncDeadline
from otel_resilience.errors import BulkheadTimeoutError
from otel_resilience.testing import FakeClock

QUEUE = BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30.0)
"""One slot, one place in the queue, a queue timeout far past the deadlines below."""


def queued_behind_a_holder(manager: ResilienceManager, config: ResilienceConfig, driver: str) -> object:
    """Hold the one slot of bulkhead "orders", queue a call of ``config`` behind it, return what it got.

    The holder runs under a policy of its own with no deadline (it shares the bulkhead by name),
    so that only the queued call's deadline can end anything; it is released once that call ended.
    """
    holder_config = ResilienceConfig(
        name="holder", bulkhead_name="orders", bulkhead_config=config.bulkhead_config
    )
    active = lambda: manager.get_resilience_statistics()["bulkheads"].get("orders", {}).get("active")  # noqa: E731
    if driver == "sync":
        release = threading.Event()
        holder = threading.Thread(
            target=manager.execute_with_resilience_sync, args=(release.wait, holder_config)
        )
        holder.start()
        until_sync(lambda: active() == 1)
        try:
            return _outcome(lambda: manager.execute_with_resilience_sync(lambda: "queued", config))
        finally:
            release.set()
            holder.join(10.0)

    async def main() -> object:
        gate = asyncio.Event()

        async def hold() -> None:
            await gate.wait()

        async def queued() -> str:
            return "queued"

        held = asyncio.create_task(manager.execute_with_resilience(hold, holder_config))
        await until(lambda: active() == 1)
        try:
            try:
                return await manager.execute_with_resilience(queued, config)
            except Exception as error:  # the outcome under test
                return error
        finally:
            gate.set()
            await held

    return asyncio.run(main())


def _outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except Exception as error:  # the outcome under test
        return error


def test_a_total_timeout_ends_a_queued_call_as_a_total_timeout(driver: str) -> None:
    """A call queued in the bulkhead when the policy's total deadline passes is a total timeout, sync or async.

    Not the bulkhead's queue timeout (a rejection): the execution counts a timeout, and the
    bulkhead a waiter that left its queue, not a timed-out one. The dependency was never called:
    the breaker around the bulkhead counts no failure, retry does not retry it.
    """
    manager = ResilienceManager(clock=FakeClock(1000.0))
    config = ResilienceConfig(
        name="orders",
        bulkhead_config=QUEUE,
        timeout=0.05,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0),
    )
    got = queued_behind_a_holder(manager, config, driver)
    assert isinstance(got, OperationTimeoutError)
    assert not isinstance(got, BulkheadTimeoutError)
    assert (got.scope, got.operation, got.timeout) == ("total", "orders", 0.05)
    stats = manager.get_resilience_statistics()
    executions, bulkhead, breaker = (
        stats["policies"]["orders"],
        stats["bulkheads"]["orders"],
        stats["circuit_breakers"]["orders"],
    )
    assert (executions["total"], executions["timeouts"], executions["rejected"]) == (1, 1, 0)
    assert (bulkhead["timed_out"], bulkhead["cancelled"], bulkhead["waiting"], bulkhead["active"]) == (
        0,
        1,
        0,
        0,
    )
    assert bulkhead["total"] == 2  # the holder and one queued attempt: not retried
    assert (breaker["total_failures"], breaker["times_opened"]) == (0, 0)


def test_the_fallback_sees_the_total_timeout_of_a_queued_call(driver: str) -> None:
    """The fallback answers a call the total deadline ended in the queue with that timeout, in both drivers."""
    seen: list[BaseException] = []

    def answer(error: BaseException) -> str:
        seen.append(error)
        return "fallback"

    manager = ResilienceManager(clock=FakeClock(1000.0))
    fallback = FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=answer)
    config = ResilienceConfig(name="orders", bulkhead_config=QUEUE, timeout=0.05, fallback_config=fallback)
    assert queued_behind_a_holder(manager, config, driver) == "fallback"
    assert isinstance(seen[0], OperationTimeoutError)
    assert not isinstance(seen[0], BulkheadTimeoutError)
    assert seen[0].scope == "total"


def test_a_sync_scope_raises_its_own_timeout_for_a_wait_it_cut_short() -> None:
    """A thread queued in a bulkhead under a shorter deadline gets that scope's timeout when it passes."""
    bulkhead = Bulkhead("scoped", QUEUE)
    release = threading.Event()
    holder = threading.Thread(target=lambda: bulkhead.execute_sync(release.wait))
    holder.start()
    try:
        until_sync(lambda: bulkhead.stats.active == 1)
        with pytest.raises(OperationTimeoutError) as info, SyncDeadline(SYSTEM_CLOCK, 0.05, "checkout"):
            bulkhead.execute_sync(lambda: "never")
    finally:
        release.set()
        holder.join(10.0)
    assert type(info.value) is OperationTimeoutError
    assert (info.value.operation, info.value.timeout) == ("checkout", 0.05)
    assert bulkhead.stats.timed_out == 0
    assert bulkhead.stats.cancelled == 1
    assert bulkhead.stats.waiting == 0
    assert bulkhead.stats.active == 0
