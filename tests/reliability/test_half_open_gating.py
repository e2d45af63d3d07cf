"""Half-open gating: after the open timeout only ``half_open_max_calls`` probes reach the dependency.

A peer lets 20 of 20 concurrent calls through a "half-open" breaker. Here 20 calls start in the
same loop iteration (or in 20 threads released by one barrier) right after the timeout, and
exactly ``half_open_max_calls`` reach the dependency; the others are rejected at once. A probe
whose caller is cancelled midway gives its permit back: the breaker is not wedged.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.fallback import FallbackConfig, FallbackStrategy
from otel_resilience.testing import FakeClock

CALLERS = 20


class Down(Exception):
    """The dependency is down."""


def trip(breaker: CircuitBreaker) -> None:
    """Open the breaker with failures (its threshold is 1 in these tests)."""

    def boom() -> None:
        raise Down

    with pytest.raises(Down):
        breaker.call_sync(boom)
    assert breaker.get_stats()["state"] == "open"


class Dependency:
    """An async dependency that counts who reached it and holds them until released."""

    def __init__(self) -> None:
        self.reached = 0
        self.cancelled = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.reached += 1
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "fresh"


async def start_together(count: int, call) -> list[asyncio.Task[object]]:
    """Start ``count`` tasks that all call at the same loop iteration; return once all have tried."""
    go = asyncio.Event()

    async def caller() -> object:
        await go.wait()
        return await call()

    tasks = [asyncio.create_task(caller()) for _ in range(count)]
    await asyncio.sleep(0)
    go.set()
    for _ in range(10):
        await asyncio.sleep(0)
    return tasks


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_exactly_half_open_max_calls_reach_the_dependency(clock: FakeClock, max_calls: int) -> None:
    """20 concurrent calls right after the open timeout: exactly half_open_max_calls get through."""
    config = CircuitBreakerConfig(
        failure_threshold=1, success_threshold=max_calls, timeout=10.0, half_open_max_calls=max_calls
    )
    breaker = CircuitBreaker(f"gate-{max_calls}", config, clock=clock)
    trip(breaker)
    clock.advance(10.0)
    dependency = Dependency()

    tasks = await start_together(CALLERS, lambda: breaker.call(dependency))

    assert dependency.reached == max_calls
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == CALLERS - max_calls
    for task in rejected:
        error = task.exception()
        assert isinstance(error, CircuitOpenError)
        assert error.state == "half_open"
    assert breaker.get_stats()["half_open_in_flight"] == max_calls
    dependency.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("fresh") == max_calls
    stats = breaker.get_stats()
    assert stats["state"] == "closed"
    assert stats["total_rejected"] == CALLERS - max_calls
    assert stats["half_open_in_flight"] == 0


@pytest.mark.parametrize("max_calls", [1, 3])
async def test_gating_holds_through_the_full_manager_pipeline(clock: FakeClock, max_calls: int) -> None:
    """Through fallback, retry, breaker and bulkhead, still exactly half_open_max_calls probes get through."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=1, success_threshold=1, timeout=10.0, half_open_max_calls=max_calls
        ),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0),
        bulkhead_config=BulkheadConfig(max_concurrent=CALLERS, max_waiting=CALLERS),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="stale"),
        name=f"gated-{max_calls}",
    )

    async def down() -> str:
        raise Down

    assert await manager.execute_with_resilience(down, config) == "stale"
    breaker = manager.get_circuit_breaker(f"gated-{max_calls}")
    assert breaker.get_stats()["state"] == "open"
    clock.advance(10.0)
    dependency = Dependency()

    tasks = await start_together(CALLERS, lambda: manager.execute_with_resilience(dependency, config))

    assert dependency.reached == max_calls
    assert sum(1 for t in tasks if t.done() and t.result() == "stale") == CALLERS - max_calls
    dependency.release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("fresh") == max_calls
    assert breaker.get_stats()["state"] == "closed"
    assert manager.get_bulkhead(f"gated-{max_calls}").get_stats()["active"] == 0


async def test_cancelled_probe_does_not_wedge_the_breaker(clock: FakeClock) -> None:
    """The probe's caller is cancelled midway: its permit comes back and the next call probes."""
    config = CircuitBreakerConfig(
        failure_threshold=1, success_threshold=1, timeout=10.0, half_open_max_calls=1
    )
    breaker = CircuitBreaker("wedge", config, clock=clock)
    trip(breaker)
    clock.advance(10.0)
    first = Dependency()
    tasks = await start_together(CALLERS, lambda: breaker.call(first))
    assert first.reached == 1
    (probe,) = [t for t in tasks if not t.done()]

    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert first.cancelled == 1, "the probe's coroutine was orphaned, not cancelled"
    await asyncio.gather(*tasks, return_exceptions=True)
    stats = breaker.get_stats()
    assert stats["state"] == "half_open"
    assert stats["half_open_in_flight"] == 0
    assert stats["total_failures"] == 1, "the cancelled probe was counted as a failure"
    assert stats["total_cancelled"] == 1

    second = Dependency()
    tasks = await start_together(CALLERS, lambda: breaker.call(second))
    assert second.reached == 1
    second.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("fresh") == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == CALLERS - 1
    assert breaker.get_stats()["state"] == "closed"


async def test_cancelled_probe_inside_the_manager_pipeline_is_not_wedged(clock: FakeClock) -> None:
    """A probe cancelled inside the full pipeline releases breaker permit and bulkhead slot."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0),
        bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=CALLERS),
        timeout=60.0,
        name="wedge-pipeline",
    )

    async def down() -> str:
        raise Down

    with pytest.raises(CircuitOpenError):  # the failure opens it; the retry is then rejected
        await manager.execute_with_resilience(down, config)
    clock.advance(10.0)
    dependency = Dependency()
    probe = asyncio.create_task(manager.execute_with_resilience(dependency, config))
    await dependency.entered.wait()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert dependency.cancelled == 1
    breaker = manager.get_circuit_breaker("wedge-pipeline")
    assert breaker.get_stats()["half_open_in_flight"] == 0
    assert manager.get_bulkhead("wedge-pipeline").get_stats()["active"] == 0

    async def healthy() -> str:
        return "fresh"

    assert await manager.execute_with_resilience(healthy, config) == "fresh"
    assert breaker.get_stats()["state"] == "closed"


@pytest.mark.parametrize("max_calls", [1, 3])
def test_twenty_threads_after_the_timeout_let_exactly_k_through(clock: FakeClock, max_calls: int) -> None:
    """20 threads released by one barrier right after the timeout: exactly k reach the dependency."""
    config = CircuitBreakerConfig(
        failure_threshold=1, success_threshold=1, timeout=10.0, half_open_max_calls=max_calls
    )
    breaker = CircuitBreaker(f"threads-{max_calls}", config, clock=clock)
    trip(breaker)
    clock.advance(10.0)
    barrier = threading.Barrier(CALLERS)
    release = threading.Event()
    lock = threading.Lock()
    reached: list[int] = []
    outcomes: list[object] = []

    def dependency() -> str:
        with lock:
            reached.append(1)
        assert release.wait(timeout=10.0)
        return "fresh"

    def caller() -> None:
        barrier.wait(timeout=10.0)
        try:
            result: object = breaker.call_sync(dependency)
        except CircuitOpenError as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for _ in range(1000):
        with lock:
            if len(outcomes) == CALLERS - max_calls:
                break
        threading.Event().wait(0.005)
    with lock:
        assert len(reached) == max_calls
        assert len(outcomes) == CALLERS - max_calls
    release.set()
    for thread in threads:
        thread.join(timeout=10.0)
        assert not thread.is_alive()
    assert outcomes.count("fresh") == max_calls
    assert breaker.get_stats()["state"] == "closed"
