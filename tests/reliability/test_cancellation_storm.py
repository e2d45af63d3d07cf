"""Cancellation storms through the full manager pipeline.

10 000 executions run through fallback, total timeout, recovery, retry, breaker, bulkhead and
attempt timeout, against a dependency that answers, fails, dawdles or hangs, while half of the
callers are cancelled at a random moment: waiting in the bulkhead queue, inside the call,
during a retry backoff or a recovery delay, inside the fallback. Afterwards:

* no permit or slot is leaked (breaker half-open in-flight 0, bulkhead active 0, waiting 0);
* the breaker counted exactly what the dependency did: a cancelled call is never a failure and
  never a success;
* no task and no armed loop timer is left behind;
* every call of the dependency (and of the fallback) ended: returned, raised, or saw
  ``CancelledError``: nothing was orphaned;
* every execution is accounted for in the manager's statistics.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest
from loops_support import LoopTimers

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    ExecutionRejectedError,
    FallbackConfig,
    FallbackStrategy,
    OperationTimeoutError,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.events import (
    HUB,
    CallRejected,
    Event,
    EventArgs,
    TelemetrySource,
    TimeoutOccurred,
)

EXECUTIONS = 10_000
WINDOW = 48
SEED = 20240607


class StormClock:
    """The real clock, counting sleeps (retry backoffs, recovery delays) cut short by cancellation."""

    def __init__(self) -> None:
        self.sleeps_cancelled = 0

    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.sleeps_cancelled += 1
            raise

    def sleep_sync(self, seconds: float) -> None:
        time.sleep(seconds)


class Tracked:
    """Counts how each invocation of a coroutine function ended."""

    def __init__(self) -> None:
        self.ended: Counter[str] = Counter()
        self.running = 0

    def enter(self) -> None:
        self.ended["started"] += 1
        self.running += 1

    def leave(self, how: str) -> None:
        self.ended[how] += 1
        self.running -= 1


class Dependency(Tracked):
    """Answers, fails (two kinds), dawdles or hangs, at random."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.healthy = False

    async def __call__(self) -> str:
        self.enter()
        try:
            roll = 0.0 if self.healthy else self.rng.random()
            if roll < 0.50:
                await asyncio.sleep(0)
                result = "fresh"
            elif roll < 0.70:
                await asyncio.sleep(0.001)
                raise ConnectionRefusedError("down")
            elif roll < 0.80:
                await asyncio.sleep(0)
                raise ConnectionResetError("reset")
            elif roll < 0.95:
                await asyncio.sleep(self.rng.uniform(0.001, 0.006))
                result = "slow"
            else:
                await asyncio.sleep(5.0)  # hangs: only a deadline ends it
                result = "late"
        except asyncio.CancelledError:
            self.leave("cancelled")
            raise
        except Exception:
            self.leave("raised")
            raise
        self.leave("returned")
        return result


class Fallback(Tracked):
    """An alternative function that takes a moment, so that callers get cancelled inside it."""

    async def __call__(self, error: Exception) -> str:
        self.enter()
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            self.leave("cancelled")
            raise
        self.leave("returned")
        return "fallback"


class EventCounter:
    """A telemetry listener that counts this policy's attempt timeouts and queue timeouts."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.attempt_timeouts = 0
        self.queue_timeouts = 0

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        if source.pipeline != self.policy:
            return
        if isinstance(args, TimeoutOccurred) and args.scope == "attempt":
            self.attempt_timeouts += 1
        elif isinstance(args, CallRejected) and args.reason == "queue_timeout":
            self.queue_timeouts += 1


def storm_config(fallback: Fallback) -> ResilienceConfig:
    return ResilienceConfig(
        name="storm",
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=8, success_threshold=2, timeout=0.01, half_open_max_calls=2
        ),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.004, attempt_timeout=0.01),
        bulkhead_config=BulkheadConfig(max_concurrent=8, max_waiting=24, timeout=0.004),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION,
            fallback_function=fallback,
            handle_exceptions=(ConnectionError, ExecutionRejectedError),
        ),
        timeout=0.03,
        enable_recovery=True,
    )


@pytest.mark.timeout(60)
async def test_cancellation_storm_leaks_nothing_and_counts_exactly() -> None:
    """10 000 executions, half cancelled at random points: no leak, no orphan, exact counts."""
    rng = random.Random(SEED)
    clock = StormClock()
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionResetError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.001)
    )
    dependency = Dependency(rng)
    fallback = Fallback()
    config = storm_config(fallback)
    timeouts = EventCounter("storm")
    HUB.add_listener(timeouts)
    loop = asyncio.get_running_loop()
    timers = LoopTimers(loop)
    window = asyncio.Semaphore(WINDOW)
    outcomes: Counter[str] = Counter()
    cancel_handles: set[asyncio.TimerHandle] = set()
    tasks: set[asyncio.Task[str]] = set()

    def finished(task: asyncio.Task[str], handle: asyncio.TimerHandle | None) -> None:
        window.release()
        tasks.discard(task)
        if handle is not None:
            handle.cancel()
            cancel_handles.discard(handle)
        if task.cancelled():
            # A task cancelled before its first step never called the manager: uvloop runs a due
            # timer (the cancellation) before the callbacks already scheduled (that first step).
            outcomes["cancelled" if task in began else "cancelled before it began"] += 1
            began.discard(task)
            return
        began.discard(task)
        error = task.exception()
        if error is None:
            outcomes[task.result()] += 1
        elif isinstance(error, OperationTimeoutError):
            outcomes["timeout"] += 1
        else:
            outcomes[f"error:{type(error).__name__}"] += 1

    began: set[asyncio.Task[str]] = set()  # the tasks whose execution began (until they end)

    async def execution() -> str:
        began.add(asyncio.current_task())  # type: ignore[arg-type]
        return await manager.execute_with_resilience(dependency, config)

    started = time.monotonic()
    try:
        for _ in range(EXECUTIONS):
            await window.acquire()
            task = asyncio.create_task(execution())
            tasks.add(task)
            handle = None
            if rng.random() < 0.5:
                handle = loop.call_later(rng.uniform(0.0, 0.012), task.cancel)
                cancel_handles.add(handle)
            task.add_done_callback(lambda t, h=handle: finished(t, h))
        while tasks:
            await asyncio.wait(set(tasks))
    finally:
        HUB.remove_listener(timeouts)
    elapsed = time.monotonic() - started

    # Every execution ended and is accounted for, by the caller and by the manager.
    assert sum(outcomes.values()) == EXECUTIONS, outcomes
    assert not [k for k in outcomes if k.startswith("error:")], outcomes
    executions = manager.get_resilience_statistics()["executions"]
    assert executions["total"] == EXECUTIONS - outcomes["cancelled before it began"]
    assert executions["cancelled"] == outcomes["cancelled"]
    assert executions["fallback"] == outcomes["fallback"]
    assert executions["successful"] == outcomes["fresh"] + outcomes["slow"]
    assert executions["timeouts"] == outcomes["timeout"]
    assert executions["failed"] == outcomes["timeout"]

    # The storm hit every point it was meant to.
    bulkhead = manager.get_bulkhead("storm").get_stats()
    assert outcomes["cancelled"] > 1000, outcomes
    assert dependency.ended["cancelled"] > 0, "no cancellation landed inside the call"
    assert fallback.ended["cancelled"] > 0, "no cancellation landed inside the fallback"
    assert clock.sleeps_cancelled > 0, "no cancellation landed during a backoff"
    assert bulkhead["cancelled"] > 0, "no cancellation landed in the bulkhead queue"
    assert bulkhead["timed_out"] > 0
    assert bulkhead["rejected"] > 0

    # Nothing was orphaned: every invocation ended one way or the other.
    for tracked in (dependency, fallback):
        ended = tracked.ended
        assert tracked.running == 0
        assert ended["started"] == ended["returned"] + ended["raised"] + ended["cancelled"], ended

    # No slot and no permit leaked; the bulkhead's books balance.
    assert bulkhead["active"] == 0
    assert bulkhead["waiting"] == 0
    assert (
        bulkhead["total"]
        == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
    )
    assert bulkhead["completed"] == dependency.ended["started"]
    breaker = manager.get_circuit_breaker("storm").get_stats()
    assert breaker["half_open_in_flight"] == 0

    # The breaker counted what the dependency did, and nothing for cancelled calls.
    assert breaker["total_successes"] == dependency.ended["returned"]
    assert breaker["total_failures"] == dependency.ended["raised"] + timeouts.attempt_timeouts
    # A queue timeout whose caller is cancelled in the same instant is one timed-out call for
    # the bulkhead (and one event) but a cancellation for the breaker: the sums still balance.
    caller_cancelled_in_call = dependency.ended["cancelled"] - timeouts.attempt_timeouts
    assert breaker["total_ignored"] <= bulkhead["rejected"] + bulkhead["timed_out"]
    assert breaker["total_ignored"] + breaker["total_cancelled"] == (
        bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"] + caller_cancelled_in_call
    )
    assert timeouts.queue_timeouts == bulkhead["timed_out"], "queue-timeout events disagree with the stats"

    # Nothing is left behind on the loop: no task, and (once the shared deadline timer has run
    # out, within one total timeout) no armed timer.
    assert asyncio.all_tasks() == {asyncio.current_task()}
    await asyncio.sleep(0.05)
    armed = timers.armed()
    timers.close()
    assert not armed, armed

    # And the breaker is not wedged: once healthy, calls go through and it closes.
    dependency.healthy = True
    await asyncio.sleep(0.02)
    for _ in range(5):
        assert await manager.execute_with_resilience(dependency, config) == "fresh"
    assert manager.get_circuit_breaker("storm").get_stats()["state"] == "closed"
    assert elapsed < 20.0
