"""Threads: the sync drivers never serialise callers, and no count is lost under contention.

A peer's sync breaker holds its lock around the user's call, so 4 threads take 4 times as long.
Here 4 threads meet at a barrier *inside* the protected call: if the library serialised them,
the barrier would time out. Then 8 threads x 10 000 calls, with the interpreter switching
threads every microsecond, must leave every count exact: breaker, bulkhead and manager. A
snapshot (``get_stats()``) taken by another thread while they run always adds up, even when a
whole call runs between two of its reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    FallbackConfig,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
)
from otel_resilience.engine.counting import Counter
from otel_resilience.patterns.alerts import AlertSystem

THREADS = 8
CALLS = 10_000


class Flaky(Exception):
    """Raised by every seventh call."""


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(index)`` in ``count`` threads started together."""
    start_line = threading.Barrier(count + 1)
    errors: list[BaseException] = []

    def body(index: int) -> None:
        start_line.wait(timeout=10.0)
        try:
            target(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    start_line.wait(timeout=10.0)
    for thread in threads:
        thread.join(timeout=60.0)
        assert not thread.is_alive(), "a thread hung"
    assert not errors, errors[:3]


def meeting(parties: int) -> Callable[[], str]:
    """A call that only returns once ``parties`` callers are inside it at the same time."""
    barrier = threading.Barrier(parties)

    def call() -> str:
        barrier.wait(timeout=10.0)  # BrokenBarrierError if the callers were serialised
        return "done"

    return call


@pytest.mark.parametrize("via", ["breaker", "bulkhead", "manager"])
def test_four_threads_run_concurrently_through_the_sync_drivers(via: str) -> None:
    """4 threads meet inside the protected call: the sync drivers let them all in at once."""
    call = meeting(4)
    results: list[str] = []
    if via == "breaker":
        breaker = CircuitBreaker("concurrent-breaker")

        def target(_: int) -> None:
            results.append(breaker.call_sync(call))

    elif via == "bulkhead":
        bulkhead = Bulkhead("concurrent-bulkhead", BulkheadConfig(max_concurrent=4))

        def target(_: int) -> None:
            results.append(bulkhead.execute_sync(call))

    else:
        manager = ResilienceManager()
        config = ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(),
            bulkhead_config=BulkheadConfig(max_concurrent=4),
            retry_policy=RetryPolicy(max_attempts=2),
            timeout=5.0,
            name="concurrent-manager",
        )

        def target(_: int) -> None:
            results.append(manager.execute_with_resilience_sync(call, config))

    run_threads(4, target)
    assert results == ["done"] * 4  # serialised calls would have broken the barrier: no call returns


def flaky_call() -> Callable[[int], str]:
    """Fail on every seventh call number."""

    def call(n: int) -> str:
        if n % 7 == 0:
            raise Flaky
        return "ok"

    return call


@pytest.mark.usefixtures("fast_switching")
def test_eight_threads_lose_no_breaker_count() -> None:
    """8 threads x 10 000 calls through one sync breaker: every success and failure is counted."""
    breaker = CircuitBreaker("contended-breaker", CircuitBreakerConfig(failure_threshold=1000))
    call = flaky_call()

    def target(index: int) -> None:
        for i in range(CALLS):
            with contextlib.suppress(Flaky):
                breaker.call_sync(call, index * CALLS + i)

    run_threads(THREADS, target)
    failures = sum(1 for n in range(THREADS * CALLS) if n % 7 == 0)
    stats = breaker.get_stats()
    assert stats["total_failures"] == failures
    assert stats["total_successes"] == THREADS * CALLS - failures
    assert stats["total_requests"] == THREADS * CALLS
    assert stats["state"] == "closed"


@pytest.mark.usefixtures("fast_switching")
def test_eight_threads_lose_no_bulkhead_count() -> None:
    """8 threads x 10 000 calls through a 3-slot bulkhead: every slot returned, every call counted."""
    bulkhead = Bulkhead(
        "contended-bulkhead", BulkheadConfig(max_concurrent=3, max_waiting=THREADS, timeout=30.0)
    )
    inside = 0
    peak = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        time.sleep(0)  # give the other threads the interpreter while this one holds a slot
        with lock:
            inside -= 1

    def target(_: int) -> None:
        for _ in range(CALLS):
            bulkhead.execute_sync(call)

    run_threads(THREADS, target)
    stats = bulkhead.get_stats()
    assert peak <= 3
    assert stats["total"] == THREADS * CALLS
    assert stats["completed"] == THREADS * CALLS
    assert stats["active"] == 0
    assert stats["waiting"] == 0
    assert stats["rejected"] == stats["timed_out"] == stats["cancelled"] == 0
    assert stats["peak_active"] <= 3
    assert stats["peak_waiting"] > 0, "the threads never contended for a slot"


@pytest.mark.usefixtures("fast_switching")
def test_eight_threads_lose_no_manager_count() -> None:
    """8 threads x 10 000 calls through the manager: executions, breaker and bulkhead all add up."""
    manager = ResilienceManager()
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1000),
        bulkhead_config=BulkheadConfig(max_concurrent=4, max_waiting=THREADS, timeout=30.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
        name="contended-manager",
    )
    call = flaky_call()
    answers = [0] * THREADS

    def target(index: int) -> None:
        for i in range(CALLS):
            if manager.execute_with_resilience_sync(call, config, index * CALLS + i) == "ok":
                answers[index] += 1

    run_threads(THREADS, target)
    failures = sum(1 for n in range(THREADS * CALLS) if n % 7 == 0)
    stats = manager.get_resilience_statistics()
    executions = stats["executions"]
    assert executions["total"] == THREADS * CALLS
    assert executions["successful"] == sum(answers) == THREADS * CALLS - failures
    assert executions["fallback"] == failures
    assert executions["failed"] == executions["cancelled"] == 0
    breaker = stats["circuit_breakers"]["contended-manager"]
    assert breaker["total_successes"] == THREADS * CALLS - failures
    assert breaker["total_failures"] == failures
    bulkhead = stats["bulkheads"]["contended-manager"]
    assert bulkhead["completed"] == bulkhead["total"] == THREADS * CALLS
    assert bulkhead["active"] == bulkhead["waiting"] == 0


@pytest.mark.usefixtures("fast_switching")
def test_an_event_loop_and_threads_share_one_breaker_without_losing_counts() -> None:
    """Async calls on a loop and sync calls in 4 threads hit one breaker: totals are exact."""
    breaker = CircuitBreaker("shared-breaker", CircuitBreakerConfig(failure_threshold=1000))
    call = flaky_call()

    async def async_call(n: int) -> str:
        return call(n)

    async def loop_side() -> None:
        for n in range(CALLS):
            with contextlib.suppress(Flaky):
                await breaker.call(async_call, n)

    def target(index: int) -> None:
        if index == 0:
            asyncio.run(loop_side())
            return
        for n in range(CALLS):
            with contextlib.suppress(Flaky):
                breaker.call_sync(call, n)

    run_threads(5, target)
    failures = 5 * sum(1 for n in range(CALLS) if n % 7 == 0)
    stats = breaker.get_stats()
    assert stats["total_failures"] == failures
    assert stats["total_successes"] == 5 * CALLS - failures


class Snapshots:
    """A thread that takes ``read()`` snapshots until stopped and keeps those ``check`` refuses."""

    def __init__(self, read: Callable[[], dict], check: Callable[[dict], bool]) -> None:
        self.bad: list[dict] = []
        self.taken = 0
        self._read, self._check = read, check
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            snapshot = self._read()
            self.taken += 1
            if not self._check(snapshot):
                self.bad.append(snapshot)

    def __enter__(self) -> Snapshots:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10.0)
        assert not self._thread.is_alive(), "the snapshot thread hung"


def breaker_adds_up(stats: dict) -> bool:
    parts = ("total_successes", "total_failures", "total_rejected", "total_ignored", "total_cancelled")
    return stats["total_requests"] == sum(stats[part] for part in parts)


def bulkhead_adds_up(stats: dict) -> bool:
    parts = ("completed", "rejected", "timed_out", "cancelled", "active", "waiting")
    return stats["total"] == sum(stats[part] for part in parts)


@pytest.mark.usefixtures("fast_switching")
def test_a_breaker_snapshot_adds_up_while_threads_call_it_and_trip_it() -> None:
    """get_stats() from another thread: total_requests is always the sum of the counts it shows."""
    breaker = CircuitBreaker("snapshot-breaker", CircuitBreakerConfig(failure_threshold=2, timeout=0.001))
    call = flaky_call()

    def target(index: int) -> None:
        for i in range(CALLS):
            with contextlib.suppress(Flaky, CircuitOpenError):
                breaker.call_sync(call, index * CALLS + i)
            if index == 0 and i % 50 == 0:
                breaker.force_open(0.001)  # OPEN: rejections are counted without the lock

    with Snapshots(breaker.get_stats, breaker_adds_up) as snapshots:
        run_threads(3, target)
    assert snapshots.taken > 0
    assert snapshots.bad == []
    stats = breaker.get_stats()
    assert stats["total_requests"] == 3 * CALLS
    assert breaker_adds_up(stats)


@pytest.mark.usefixtures("fast_switching")
def test_a_policy_s_bulkhead_counts_add_up_in_every_snapshot() -> None:
    """A keyed policy's get_stats() from another thread: its bulkhead total is what ended plus what runs."""
    alerts = AlertSystem(name="snapshot-alerts")
    try:
        manager = ResilienceManager(alert_system=alerts)
        policy = manager.policy(
            "snapshot-policy",
            ResilienceConfig(
                bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=THREADS, timeout=30.0)
            ),
        )

        def target(index: int) -> None:
            view = policy.for_key(index % 2)
            for _ in range(1_500):
                view.execute_sync(time.sleep, 0)

        with Snapshots(lambda: policy.get_stats()["bulkhead"], bulkhead_adds_up) as snapshots:
            run_threads(4, target)
        assert snapshots.taken > 0
        assert snapshots.bad == []
        stats = policy.get_stats()["bulkhead"]
        assert stats["total"] == stats["completed"] == 4 * 1_500
    finally:
        alerts.close()


def retry_adds_up(stats: dict) -> bool:
    successes = stats["first_attempt_successes"] + stats["successes_after_retry"]
    ended = successes + stats["exhausted"] + stats["non_retryable"] + stats["cancelled"]
    return stats["successes"] == successes and stats["executions"] == ended


@pytest.mark.usefixtures("fast_switching")
def test_a_retry_snapshot_adds_up_while_threads_retry() -> None:
    """Retry.get_stats() from another thread: executions and successes are the sums of the counts shown."""
    retry = Retry("snapshot-retry", RetryPolicy(max_attempts=2, initial_delay=0.0))
    call = flaky_call()

    def target(index: int) -> None:
        for i in range(CALLS):
            with contextlib.suppress(Flaky):
                retry.execute_sync(call, index * CALLS + i)

    with Snapshots(retry.get_stats, retry_adds_up) as snapshots:
        run_threads(3, target)
    assert snapshots.taken > 0
    assert snapshots.bad == []
    stats = retry.get_stats()
    failures = sum(1 for n in range(3 * CALLS) if n % 7 == 0)
    assert stats["executions"] == 3 * CALLS
    assert stats["attempts"] == 3 * CALLS + failures
    assert stats["exhausted"] == failures


def chaos_adds_up(stats: dict) -> bool:
    return stats["runs"] >= stats["faults"] + stats["outcomes"] and stats["runs"] >= stats["latencies"]


class RunsOnceWhenRead(Counter):
    """A counter that, the first time a snapshot reads it, lets ``then`` run a whole call first.

    What another thread could do between two reads of one snapshot, made to happen there.
    """

    __slots__ = ("then",)

    @property
    def value(self) -> int:
        value = Counter.value.fget(self)  # type: ignore[attr-defined]
        then, self.then = self.then, None
        if then is not None:
            then()
        return int(value)


def test_a_run_between_two_reads_of_a_chaos_snapshot_never_shows_an_injection_without_its_run() -> None:
    """A run (and its fault) that happens while get_stats() reads: the snapshot still adds up."""
    chaos = Chaos("between-reads-chaos", ChaosConfig(fault_rate=1.0, fault=Flaky))

    def one_faulted_run() -> None:
        with pytest.raises(Flaky):
            chaos.call_sync(str)

    runs = RunsOnceWhenRead()
    runs.then = one_faulted_run
    chaos._rules._runs = runs
    assert chaos_adds_up(chaos.get_stats())
    stats = chaos.get_stats()
    assert (stats["runs"], stats["faults"]) == (1, 1)


def test_an_execution_between_two_reads_of_a_hedging_snapshot_never_shows_more_ended_than_entered() -> None:
    """An execution (in another thread's loop) that ends while get_stats() reads: ended <= entered."""
    hedging = Hedging("between-reads-hedging", HedgingConfig(delay=10.0, max_attempts=2))

    async def answer() -> str:
        return "ok"

    def one_execution_in_another_loop() -> None:
        thread = threading.Thread(target=asyncio.run, args=(hedging.call(answer),))
        thread.start()
        thread.join(10.0)
        assert not thread.is_alive()

    entered = RunsOnceWhenRead()
    entered.then = one_execution_in_another_loop
    hedging._core.executions = entered  # before its first link is made, which counts into it
    stats = hedging.get_stats()
    ended = stats["original_wins"] + stats["hedge_wins"] + stats["failed"] + stats["cancelled"]
    assert stats["executions"] >= ended
    stats = hedging.get_stats()
    assert (stats["executions"], stats["original_wins"]) == (1, 1)
