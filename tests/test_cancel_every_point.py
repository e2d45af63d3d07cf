"""Cancellation at every suspension point of the calling task, on an event loop of virtual time.

A scenario's call first runs once to the end, its task's suspensions counted: each time the
task's coroutine hands the loop something to wait for (:class:`Suspensions`, which wraps the
coroutine the task runs) is a point. Then, for ``k = 1 .. N``, a fresh scenario runs again and
something happens to the task exactly at its ``k``-th suspension, from inside that very step
(a ``task.cancel()`` made there cancels what the task just began to wait for):

* ``cancel``: ``task.cancel()``;
* ``message``: ``task.cancel("stopped by the caller")``: the caller's ``CancelledError`` carries it;
* ``twice``: two ``task.cancel()`` at once: the task counts both (``cancelling() == 2``);
* ``again``: ``task.cancel()``, and again at the next suspension (the cleanup of the first);
* ``outer timeout``: an ``asyncio.timeout`` around the call expires then: the caller gets that
  timeout's own ``TimeoutError`` and its task's ``cancelling()`` is back to 0;
* ``outer timeout with the next timer``: that ``asyncio.timeout`` expires in the turn of the next
  timer due (a deadline of the library's own firing in the same turn: the outer one still wins);
* ``with the next timer``: ``task.cancel()`` in the loop turn of the next timer due, after it (a
  deadline, a backoff, a hedge's delay expiring in the same turn as the caller's cancellation);
* ``before the next timer``: the same, just before that timer's callback runs;
* ``converted``: ``task.cancel()``, every dependency turning the cancellation it sees into a
  ``ConnectionError`` (as a driver may): that error reaches the caller unchanged, and no step
  acts on it (no fallback answer, no retry, no breaker failure: ``engine.cancelling``); the
  execution itself ends as that error's type, a ``failure`` (docs/design.md).

After every run: the ``CancelledError`` (or the outer timeout) reaches the caller, never
swallowed, never turned into another error or a result; the task's ``cancelling()`` count is the
caller's own; no task is left on the loop and the loop's exception handler heard nothing
(no "Task was destroyed but it is pending", no "exception was never retrieved"); every span
started has ended, and the execution span ends ``cancelled`` with no error status, counted once
in ``resilience.executions`` as ``cancelled``; no bulkhead slot or queue place, no half-open
probe and no rate limiter reservation is left taken (a waiter cancelled before its time gives
its permit back); the statistics add up (a cancelled call is neither a success nor a failure);
the next call works.

The loop jumps to its next timer whenever it would wait, and every clock the scenarios use reads
the loop's time, so that a run is the same sequence of suspensions every time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import math
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode
from otel_support import Otel
from support import needs_task_cancelling

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    fail_after,
    move_on_after,
    resilient,
)

pytestmark = needs_task_cancelling  # the caller's count of cancellations, and asyncio.timeout

LIMIT = 300
"""No scenario's call suspends more often than this."""

VARIANTS = (
    "cancel",
    "message",
    "twice",
    "again",
    "outer timeout",
    "outer timeout with the next timer",
    "with the next timer",
    "before the next timer",
    "converted",
)
MESSAGE = "stopped by the caller"
CALLER = "the caller's span"
SAME_TURN = 1e-10
"""Less than the loop's clock resolution: a timer this much earlier runs in the same turn as the later one, first."""


# -- the loop, its clock, and the counted suspensions ----------------------------------------------


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, which jumps to the next timer whenever the loop would wait."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 1000.0

    def time(self) -> float:
        return self.virtual_now

    def next_timer(self) -> float | None:
        """The virtual time of the next timer due, if any."""
        due = [handle.when() for handle in self._scheduled if not handle.cancelled()]  # type: ignore[attr-defined]
        return min(due) if due else None

    def _run_once(self) -> None:
        if not self._ready:  # type: ignore[attr-defined] # asyncio's own loop
            due = self.next_timer()
            if due is not None:
                self.virtual_now = max(self.virtual_now, due)
        super()._run_once()  # type: ignore[misc]


class LoopClock:
    """The clock of a virtual-time loop: its time, and its sleeps."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.virtual_now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise AssertionError("no sync sleep on the loop's clock")


class Suspensions(Coroutine[Any, Any, Any]):
    """A coroutine that runs ``inner`` and counts its suspensions; calls ``at[n]()`` at the ``n``-th, inside that step.

    A task runs this object as its coroutine: each ``send`` or ``throw`` that returns (rather
    than finishing) is a suspension of the task.
    """

    def __init__(self, inner: Coroutine[Any, Any, Any], at: dict[int, Callable[[], None]]) -> None:
        self.inner = inner
        self.at = at
        self.count = 0

    def _suspended(self, handed: Any) -> Any:
        self.count += 1
        action = self.at.get(self.count)
        if action is not None:
            action()
        return handed

    def send(self, value: Any) -> Any:
        return self._suspended(self.inner.send(value))

    def __next__(self) -> Any:
        return self.send(None)

    def throw(self, *args: Any) -> Any:
        return self._suspended(self.inner.throw(*args))

    def close(self) -> None:
        self.inner.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> Suspensions:
        return self


class OpenSpans(SpanProcessor):
    """The spans started and not yet ended."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        context = span.get_span_context()
        assert context is not None
        self.open[context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        assert context is not None
        self.open.pop(context.span_id, None)


# -- scenarios -------------------------------------------------------------------------------------

_NAMES = itertools.count()


def fresh(name: str) -> str:
    """A pattern or policy name no earlier run used: each run's metric series are its own."""
    return f"{name}-{next(_NAMES)}"


class Dependency:
    """An async dependency that sleeps ``seconds`` per call and fails its first calls with ``failures``.

    With :attr:`converting` set, a call turns the cancellation it sees into a ``ConnectionError``.
    """

    converting = False

    def __init__(
        self, seconds: float = 1.0, failures: tuple[BaseException, ...] = (), answer: str = "fresh"
    ) -> None:
        self.seconds = seconds
        self.failures = failures
        self.answer = answer
        self.started = 0
        self.ended = 0
        self.failed = 0

    async def __call__(self, *args: Any) -> str:
        self.started += 1
        number = self.started
        try:
            await asyncio.sleep(0)
            await asyncio.sleep(self.seconds)
            if number <= len(self.failures):
                self.failed += 1
                raise self.failures[number - 1]
        except asyncio.CancelledError as cancelled:
            if Dependency.converting:
                raise ConnectionError("connection aborted") from cancelled
            raise
        finally:
            self.ended += 1
        return self.answer

    @property
    def running(self) -> int:
        return self.started - self.ended


class Scenario:
    """One run: fresh patterns on the loop's clock, the call, and what must hold afterwards."""

    expected: object = "fresh"
    """What the call returns when nothing cancels it."""
    spans = True
    """Whether the call is one execution, with a span of its own (then checked, and its metrics)."""

    converted = False
    """Whether the cancellation reached the caller as the error a dependency turned it into."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self.loop = loop
        self.clock = LoopClock(loop)
        self.dependency = Dependency()
        self.side: list[asyncio.Task[Any]] = []

    async def prepare(self) -> None:
        """Whatever must hold before the call (a slot taken, a breaker half-open)."""

    def ended_cancelled(self, executions: dict[str, Any]) -> int:
        """The policy's executions that ended by the caller's cancellation.

        One whose cancellation a dependency turned into an error ends as that error's type
        (``engine.guard.Guard._leave``, the pipeline's rule): ``failed``.
        """
        return int(executions["cancelled"]) + (int(executions["failed"]) if self.converted else 0)

    async def call(self) -> Any:
        raise NotImplementedError

    async def settle(self) -> None:
        """Let whatever ran beside the call finish."""
        for task in self.side:
            await task

    def check(self, cancelled: bool) -> None:
        """What must hold after the run, cancelled or not."""
        assert self.dependency.running == 0, "a call of the dependency was left running"

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0  # past any breaker period, rate limiter wait
        self.dependency = Dependency(seconds=0.0)
        assert await self.call() == self.expected


class BreakerProbe(Scenario):
    """The call is the probe of a half-open breaker."""

    async def prepare(self) -> None:
        self.breaker = CircuitBreaker(
            fresh("probe"),
            CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0),
            clock=self.clock,
        )
        with pytest.raises(ConnectionError):
            await self.breaker.call(Dependency(0.0, (ConnectionError("down"),)))
        self.loop.virtual_now += 10.0

    async def call(self) -> Any:
        return await self.breaker.call(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.breaker.get_stats()
        assert stats["half_open_in_flight"] == 0, stats
        assert stats["total_requests"] == (
            stats["total_successes"]
            + stats["total_failures"]
            + stats["total_rejected"]
            + stats["total_ignored"]
            + stats["total_cancelled"]
        ), stats
        assert stats["total_failures"] == 1, stats  # only the one that opened it
        assert stats["total_cancelled"] == (1 if cancelled else 0), stats

    async def next_call_works(self) -> None:
        await super().next_call_works()
        assert self.breaker.get_stats()["state"] == "closed"


class RetryBackoff(Scenario):
    """Two failed attempts, each followed by a backoff, then a success."""

    async def prepare(self) -> None:
        self.retry = Retry(
            fresh("backoff"),
            RetryPolicy(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=2.0, jitter="none"),
            clock=self.clock,
        )
        self.dependency = Dependency(1.0, (ConnectionError("down"), ConnectionError("down")))

    async def call(self) -> Any:
        return await self.retry.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.retry.get_stats()
        assert stats["executions"] == (
            stats["successes"] + stats["exhausted"] + stats["non_retryable"] + stats["cancelled"]
        ), stats
        assert stats["cancelled"] == (1 if cancelled else 0), stats
        assert stats["attempts"] == self.dependency.started, stats


class BulkheadQueue(Scenario):
    """The call waits in the queue behind a running one for the only slot, then runs."""

    async def prepare(self) -> None:
        self.bulkhead = Bulkhead(
            fresh("queue"), BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=30.0)
        )
        self.side.append(asyncio.ensure_future(self.bulkhead.execute(Dependency(3.0))))
        await asyncio.sleep(0)
        assert self.bulkhead.get_stats()["active"] == 1

    async def call(self) -> Any:
        return await self.bulkhead.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.bulkhead.get_stats()
        assert (stats["active"], stats["waiting"], stats["available"]) == (0, 0, 1), stats
        assert (
            stats["total"] == stats["completed"] + stats["rejected"] + stats["timed_out"] + stats["cancelled"]
        )
        # cancelled while waiting (or as a slot was handed to it); cancelled while running: completed
        assert stats["cancelled"] + stats["completed"] == 2, stats


class RateLimiterWait(Scenario):
    """The only permit is taken: the call waits for the next one, then runs."""

    async def prepare(self) -> None:
        self.limiter = RateLimiter(
            fresh("wait"), RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0, max_waiting=2), clock=self.clock
        )
        assert self.limiter.try_acquire()
        self.taken_at = self.loop.virtual_now

    async def call(self) -> Any:
        return await self.limiter.call(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.limiter.get_stats()
        assert stats["waiting"] == 0, stats
        # the setup's permit and the call's request
        assert stats["admitted"] + stats["cancelled"] + stats["rejected"] == 2, stats
        # A waiter cancelled before its time gives its reservation back: what is available is
        # what the setup's permit left, refilled since; a permit the call took is spent, and so
        # is one whose waiter was cancelled at its time (README: "before its time").
        refilled = self.loop.virtual_now - self.taken_at
        spent = stats["admitted"] - 1 + (1 if stats["cancelled"] and refilled >= 1.0 else 0)
        assert math.isclose(stats["available"], min(1.0, refilled - spent), abs_tol=1e-9), (stats, refilled)


class HedgingRace(Scenario):
    """A hedged call: the original is slow, a hedge starts after the delay; the loser is cancelled and awaited."""

    def __init__(self, loop: VirtualTimeLoop, mode: str) -> None:
        super().__init__(loop)
        self.mode = mode

    async def prepare(self) -> None:
        delay = 0.5 if self.mode == "latency" else None
        self.hedging = Hedging(
            fresh("race"),
            HedgingConfig(mode=self.mode, delay=delay, max_attempts=3),  # type: ignore[arg-type]
            clock=self.clock,
        )
        failures = (ConnectionError("down"),) if self.mode == "fallback" else ()
        self.dependency = Dependency(2.0, failures)

    async def call(self) -> Any:
        return await self.hedging.call(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.hedging.get_stats()
        assert stats["executions"] == (
            stats["original_wins"] + stats["hedge_wins"] + stats["failed"] + stats["cancelled"]
        ), stats
        # a caller cancelled once an attempt had won counts as that win (Hedging.get_stats)
        assert stats["cancelled"] <= (1 if cancelled else 0), stats


class TimeoutScope(Scenario):
    """A timeout handler around a call that ends before its deadline (the scope must never answer a cancellation)."""

    expected = "fresh"

    async def prepare(self) -> None:
        self.handler = TimeoutHandler(timeout=5.0, default="default", name=fresh("scope"), clock=self.clock)

    async def call(self) -> Any:
        return await self.handler.with_timeout(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handler.get_stats()
        assert (stats["timeouts"], stats["defaults_returned"]) == (0, 0), stats


class TimeoutFired(Scenario):
    """A timeout handler whose deadline ends the call, answered with its default."""

    expected = "default"

    async def prepare(self) -> None:
        self.handler = TimeoutHandler(timeout=1.0, default="default", name=fresh("fired"), clock=self.clock)
        self.dependency = Dependency(5.0)

    async def call(self) -> Any:
        return await self.handler.with_timeout(self.dependency)

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(5.0)
        assert await self.call() == "default"


class FallbackRunning(Scenario):
    """The call fails; an async fallback function takes a while to answer."""

    expected = "fresh fallback"

    async def prepare(self) -> None:
        self.fallback = Dependency(2.0)

        async def alternative(error: Exception) -> str:
            return await self.fallback() + " fallback"

        self.handler = FallbackHandler(
            FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=alternative),
            name=fresh("fallback"),
            clock=self.clock,
        )
        self.dependency = Dependency(1.0, (ConnectionError("down"),))

    async def call(self) -> Any:
        return await self.handler.execute_with_fallback(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.fallback.running == 0
        stats = self.handler.get_stats()
        assert stats["fallback_failures"] == 0, stats  # a cancelled fallback is no failed one

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0, (ConnectionError("down"),))
        assert await self.call() == "fresh fallback"


def full_config() -> ResilienceConfig:
    """Fallback (of ``KeyError``), total timeout, retry with an attempt timeout, breaker, bulkhead of one slot."""
    return ResilienceConfig(
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value="default", handle_exceptions=(KeyError,)
        ),
        timeout=60.0,
        retry_policy=RetryPolicy(
            max_attempts=3,
            strategy=RetryStrategy.FIXED,
            initial_delay=1.0,
            jitter="none",
            attempt_timeout=10.0,
        ),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=3, timeout=30.0),
    )


class ManagerPolicy(Scenario):
    """Fallback, total timeout, retry, breaker, bulkhead and attempt timeout: queued, retried, answered by the fallback."""

    expected = "default"

    def __init__(self, loop: VirtualTimeLoop, key: bool = False) -> None:
        super().__init__(loop)
        self.key = key

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.handle = self.manager.policy(fresh("full"), full_config())
        self.view: Any = self.handle.for_key("tenant") if self.key else self.handle
        self.side.append(asyncio.ensure_future(self.view.execute(Dependency(2.0))))  # holds the slot a while
        await asyncio.sleep(0)
        self.dependency = Dependency(1.0, (KeyError("wrong"),) * 100)

    async def call(self) -> Any:
        return await self.view.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        executions = stats["executions"]
        ended = (
            executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
        )
        assert ended == executions["total"], executions
        assert self.ended_cancelled(executions) == (1 if cancelled else 0), executions
        bulkhead = stats["bulkhead"]
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert bulkhead["total"] == (
            bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
        ), bulkhead
        breaker = stats["circuit_breaker"]
        assert breaker["total_failures"] == self.dependency.failed, breaker

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0)
        assert await self.call() == "fresh"


class HedgingInRetry(Scenario):
    """A manager policy whose retry runs a hedged race per attempt; every race fails once, then one answers."""

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.handle = self.manager.policy(
            fresh("hedged"),
            ResilienceConfig(
                retry_policy=RetryPolicy(
                    max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=1.0, jitter="none"
                ),
                hedging=HedgingConfig(delay=0.5, max_attempts=2),
                circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
            ),
        )
        self.dependency = Dependency(1.0, (ConnectionError("down"),) * 2)

    async def call(self) -> Any:
        return await self.handle.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        executions = stats["executions"]
        assert self.ended_cancelled(executions) == (1 if cancelled else 0), executions
        hedging = stats["hedging"]
        assert hedging is not None
        assert hedging["executions"] == (
            hedging["original_wins"] + hedging["hedge_wins"] + hedging["failed"] + hedging["cancelled"]
        ), hedging
        breaker = stats["circuit_breaker"]
        assert breaker["total_cancelled"] + breaker["total_successes"] + breaker["total_failures"] == (
            self.dependency.started
        ), (breaker, self.dependency.started)

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0)
        assert await self.call() == "fresh"


class DeadlinesInPolicy(Scenario):
    """A policy whose attempt timeout ends each attempt, between backoffs, until its total timeout ends the call: the fallback answers."""

    expected = "default"

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.handle = self.manager.policy(
            fresh("deadlines"),
            ResilienceConfig(
                fallback_config=FallbackConfig(
                    strategy=FallbackStrategy.DEFAULT_VALUE, default_value="default"
                ),
                timeout=3.5,
                retry_policy=RetryPolicy(
                    max_attempts=5,
                    strategy=RetryStrategy.FIXED,
                    initial_delay=0.25,
                    jitter="none",
                    attempt_timeout=1.0,
                ),
                circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
            ),
        )
        self.dependency = Dependency(5.0)

    async def call(self) -> Any:
        return await self.handle.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        executions = stats["executions"]
        ended = (
            executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
        )
        assert ended == executions["total"], executions
        assert self.ended_cancelled(executions) == (1 if cancelled else 0), executions
        breaker = stats["circuit_breaker"]
        # every attempt the attempt timeout ended is a failure; the one the caller's cancellation
        # (or the total timeout) ended is not
        assert breaker["total_failures"] + breaker["total_cancelled"] == self.dependency.started, breaker

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0)
        assert await self.call() == "fresh"


class Scopes(Scenario):
    """``move_on_after`` inside ``fail_after``: the inner scope moves on, then the call runs again under the outer one."""

    expected = "moved on, fresh"
    spans = False

    async def prepare(self) -> None:
        self.dependency = Dependency(2.0)

    async def call(self) -> Any:
        async with fail_after(10.0, clock=self.clock) as outer:
            async with move_on_after(1.0, clock=self.clock) as inner:
                await self.dependency()
            assert inner.expired
            answer = await self.dependency()
        assert not outer.expired
        return f"moved on, {answer}"

    async def next_call_works(self) -> None:
        self.dependency = Dependency(2.0)
        assert await self.call() == self.expected


class KeyedLimiterWait(Scenario):
    """A key's limiter of a keyed rate limiter: its only permit is taken, the call waits for the next."""

    async def prepare(self) -> None:
        self.keyed = RateLimiter.per_key(
            fresh("keyed"),
            RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0, max_waiting=2),
            clock=self.clock,
        )
        self.limiter = self.keyed.for_key("tenant")
        assert self.limiter.try_acquire()

    async def call(self) -> Any:
        return await self.limiter.call(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.limiter.get_stats()
        assert stats["waiting"] == 0, stats
        assert stats["admitted"] + stats["cancelled"] + stats["rejected"] == 2, stats


class RecoveryDelay(Scenario):
    """A recovery rule re-runs the failed call after a delay."""

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.manager.recovery_system.register_recovery_rule(
            ConnectionResetError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=1.0)
        )
        self.handle = self.manager.policy(
            fresh("recovery"),
            ResilienceConfig(
                enable_recovery=True, circuit_breaker=CircuitBreakerConfig(failure_threshold=10)
            ),
        )
        self.dependency = Dependency(1.0, (ConnectionResetError("reset"),))

    async def call(self) -> Any:
        return await self.handle.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        recovery = self.manager.recovery_system.get_stats()
        assert recovery["attempts"] == recovery["successful_recoveries"] + recovery["failed_recoveries"], (
            recovery
        )
        assert recovery["failed_recoveries"] == 0, "a cancelled recovery is no failed one"
        executions = self.handle.get_stats()["executions"]
        assert self.ended_cancelled(executions) == (1 if cancelled else 0), executions


class ChaosLatency(Scenario):
    """Injected latency before each attempt, inside a retry and a bulkhead."""

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.handle = self.manager.policy(
            fresh("chaos"),
            ResilienceConfig(
                chaos=ChaosConfig(latency_rate=1.0, latency=1.0, seed=1),
                retry_policy=RetryPolicy(max_attempts=2, strategy=RetryStrategy.FIXED, initial_delay=1.0),
                bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1),
            ),
        )
        self.dependency = Dependency(1.0, (ConnectionError("down"),))

    async def call(self) -> Any:
        return await self.handle.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        assert (stats["bulkhead"]["active"], stats["bulkhead"]["waiting"]) == (0, 0), stats["bulkhead"]
        assert self.ended_cancelled(stats["executions"]) == (1 if cancelled else 0), stats["executions"]


class RetryHookBudget(Scenario):
    """A retry on a budget whose ``on_retry`` is async and takes a while; two failed attempts, then a success."""

    async def prepare(self) -> None:
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=100.0, clock=self.clock)
        self.hooked = Dependency(0.5)

        async def on_retry(attempt: int, error: BaseException) -> None:
            await self.hooked()

        self.retry = Retry(
            fresh("hooked"),
            RetryPolicy(
                max_attempts=3,
                strategy=RetryStrategy.FIXED,
                initial_delay=1.0,
                jitter="none",
                budget=self.budget,
            ),
            on_retry=on_retry,
            clock=self.clock,
        )
        for _ in range(3):  # first attempts, so that the budget allows retries
            await self.retry.execute(Dependency(0.0))
        self.base = self.budget.get_stats()["retries"]
        self.dependency = Dependency(1.0, (ConnectionError("down"), ConnectionError("down")))

    async def call(self) -> Any:
        return await self.retry.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert self.hooked.running == 0
        stats = self.retry.get_stats()
        assert stats["cancelled"] == (1 if cancelled else 0), stats
        # the budget holds the retries that ran, no more: one withdrawn for a retry the
        # cancellation stopped (in its hook or its backoff) is given back
        retries = self.budget.get_stats()["retries"] - self.base
        assert retries == max(0, self.dependency.started - 1), (retries, self.dependency.started)


class InnerAsyncioTimeout(Scenario):
    """The dependency bounds its own wait with ``asyncio.timeout`` and answers once it fires, inside a policy's deadlines."""

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.handle = self.manager.policy(
            fresh("inner"),
            ResilienceConfig(
                timeout=10.0,
                retry_policy=RetryPolicy(max_attempts=2, initial_delay=1.0, attempt_timeout=5.0),
                circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
                bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1),
            ),
        )
        self.dependency = Dependency(3.0)

    async def call(self) -> Any:
        async def bounded() -> str:
            try:
                async with asyncio.timeout(1.0):
                    return await self.dependency()
            except TimeoutError:
                return "fresh"

        return await self.handle.execute(bounded)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        assert self.ended_cancelled(stats["executions"]) == (1 if cancelled else 0), stats["executions"]
        assert stats["circuit_breaker"]["total_failures"] == 0, stats["circuit_breaker"]

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(3.0)
        assert await self.call() == "fresh"


class Guards(Scenario):
    """A block under ``limiter.guard()``, ``breaker.guard()`` and ``bulkhead.slot()``: it waits for a permit, probes, queues.

    A guarded block opens no span (``engine.guard.Guard``).
    """

    spans = False

    async def prepare(self) -> None:
        self.limiter = RateLimiter(
            fresh("guard-limiter"), RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0), clock=self.clock
        )
        self.breaker = CircuitBreaker(
            fresh("guard-breaker"),
            CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=1.0),
            clock=self.clock,
        )
        self.bulkhead = Bulkhead(
            fresh("guard-bulkhead"), BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30.0)
        )
        with pytest.raises(ConnectionError):  # the block probes the half-open breaker
            await self.breaker.call(Dependency(0.0, (ConnectionError("down"),)))
        self.loop.virtual_now += 1.0
        assert self.limiter.try_acquire()  # and waits for the next permit
        holder = self.bulkhead.execute(Dependency(2.5))  # holds the slot a while
        self.side.append(asyncio.ensure_future(holder))
        await asyncio.sleep(0)

    async def call(self) -> Any:
        async with self.limiter.guard(), self.breaker.guard(), self.bulkhead.slot():
            return await self.dependency()

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        bulkhead = self.bulkhead.get_stats()
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert self.limiter.get_stats()["waiting"] == 0
        breaker = self.breaker.get_stats()
        assert breaker["half_open_in_flight"] == 0, breaker
        assert breaker["total_failures"] == 1, breaker

    async def next_call_works(self) -> None:
        await super().next_call_works()
        assert self.breaker.get_stats()["state"] == "closed"


class FallbackFunctions(Scenario):
    """MULTIPLE_ATTEMPTS: the call fails, the first fallback function fails after a while, the second answers."""

    expected = "second"

    async def prepare(self) -> None:
        self.first = Dependency(1.0, (ConnectionError("first down"),) * 100)
        self.second = Dependency(1.0, answer="second")

        async def first() -> str:
            return await self.first()

        async def second() -> str:
            return await self.second()

        self.handler = FallbackHandler(
            FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(first, second)),
            name=fresh("functions"),
            clock=self.clock,
        )
        self.dependency = Dependency(1.0, (ConnectionError("down"),) * 100)

    async def call(self) -> Any:
        return await self.handler.execute_with_fallback(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        assert (self.first.running, self.second.running) == (0, 0)
        if cancelled:  # nothing runs after the cancellation
            assert self.second.started <= (1 if self.first.failed else 0)
        stats = self.handler.get_stats()
        assert stats["fallback_failures"] == 0, stats

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.second = Dependency(0.0, answer="second")
        assert await self.call() == "second"


class HedgesQueued(Scenario):
    """A policy hedging in parallel into a bulkhead of one slot: the hedges wait in its queue; a retry around it."""

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=100.0, clock=self.clock)
        self.handle = self.manager.policy(
            fresh("queued"),
            ResilienceConfig(
                retry_policy=RetryPolicy(
                    max_attempts=2,
                    strategy=RetryStrategy.FIXED,
                    initial_delay=1.0,
                    jitter="none",
                    budget=self.budget,
                ),
                hedging=HedgingConfig(mode="parallel", max_attempts=3),
                circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
                bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=4, timeout=30.0),
            ),
        )
        for _ in range(5):  # first attempts, so that the budget allows retries and hedges
            await self.handle.execute(Dependency(0.0))
        self.dependency = Dependency(1.0, (ConnectionError("down"),) * 3)

    async def call(self) -> Any:
        return await self.handle.execute(self.dependency)

    def check(self, cancelled: bool) -> None:
        super().check(cancelled)
        stats = self.handle.get_stats()
        bulkhead = stats["bulkhead"]
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert bulkhead["total"] == (
            bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
        ), bulkhead
        assert self.ended_cancelled(stats["executions"]) == (1 if cancelled else 0), stats["executions"]
        hedging = stats["hedging"]
        assert hedging is not None
        assert hedging["executions"] == (
            hedging["original_wins"] + hedging["hedge_wins"] + hedging["failed"] + hedging["cancelled"]
        ), hedging

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0)
        assert await self.call() == "fresh"


class Decorated(Scenario):
    """The full policy's patterns through ``@resilient`` or ``execute_with_resilience``: its spans and metrics checked."""

    expected = "default"

    def __init__(self, loop: VirtualTimeLoop, form: str) -> None:
        super().__init__(loop)
        self.form = form

    async def prepare(self) -> None:
        self.manager = ResilienceManager(clock=self.clock)
        self.config = dataclasses.replace(full_config(), name=fresh(self.form))
        self.dependency = Dependency(1.0, (KeyError("wrong"),) * 100)

        async def decorated() -> str:
            return await self.dependency()

        self.decorated = resilient(self.config, manager=self.manager)(decorated)

    async def call(self) -> Any:
        if self.form == "decorator":
            return await self.decorated()
        return await self.manager.execute_with_resilience(self.dependency, self.config)

    async def next_call_works(self) -> None:
        self.loop.virtual_now += 600.0
        self.dependency = Dependency(0.0)
        assert await self.call() == "fresh"


SCENARIOS: dict[str, Callable[[VirtualTimeLoop], Scenario]] = {
    "breaker probe": BreakerProbe,
    "retry backoff": RetryBackoff,
    "bulkhead queue": BulkheadQueue,
    "rate limiter wait": RateLimiterWait,
    "hedging latency": lambda loop: HedgingRace(loop, "latency"),
    "hedging parallel": lambda loop: HedgingRace(loop, "parallel"),
    "hedging fallback": lambda loop: HedgingRace(loop, "fallback"),
    "timeout scope": TimeoutScope,
    "timeout fired": TimeoutFired,
    "fallback running": FallbackRunning,
    "manager policy": ManagerPolicy,
    "keyed policy": lambda loop: ManagerPolicy(loop, key=True),
    "hedging in retry": HedgingInRetry,
    "deadlines in a policy": DeadlinesInPolicy,
    "scopes": Scopes,
    "keyed limiter wait": KeyedLimiterWait,
    "recovery delay": RecoveryDelay,
    "chaos latency": ChaosLatency,
    "retry hook and budget": RetryHookBudget,
    "inner asyncio timeout": InnerAsyncioTimeout,
    "guards": Guards,
    "fallback functions": FallbackFunctions,
    "hedges queued": HedgesQueued,
    "decorator": lambda loop: Decorated(loop, "decorator"),
    "execute_with_resilience": lambda loop: Decorated(loop, "adhoc"),
}


# -- one run, and the sweep -------------------------------------------------------------------------


class Result:
    """How the caller's call ended, and its task's ``cancelling()`` count then."""

    def __init__(self) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.cancelling = 0
        self.cancels = 0
        """How many times the harness called ``task.cancel()`` (an outer timeout's own not counted)."""
        self.expired = False
        """Whether the outer timeout expired."""
        self.running = 0
        """The calls of the dependency still running when the call ended (hedges not awaited)."""


def run_once(
    otel: Otel,
    spans: OpenSpans,
    make: Callable[[VirtualTimeLoop], Scenario],
    variant: str,
    k: int | None,
    *,
    reported: list[dict[str, Any]],
) -> tuple[int, Result]:
    """Run one scenario on a loop of its own, acting at its ``k``-th suspension; return the suspensions and the result.

    What the loop's exception handler hears goes to ``reported`` (also once the loop closed: a
    task freed while pending, a future's error never retrieved).
    """
    loop = VirtualTimeLoop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    result = Result()
    suspensions: list[Suspensions] = []

    async def caller(scenario: Scenario, scopes: list[Any]) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            with otel.tracer_provider.get_tracer("caller").start_as_current_span(CALLER):
                if variant.startswith("outer timeout"):
                    async with asyncio.timeout(None) as scope:
                        scopes.append(scope)
                        result.value = await scenario.call()
                else:
                    result.value = await scenario.call()
        except BaseException as error:  # what reached the caller, whatever it is
            result.error = error
        result.running = scenario.dependency.running
        if variant.startswith("outer timeout") and scopes:
            result.expired = scopes[0].expired()
        result.cancelling = task.cancelling()

    async def main() -> None:
        scenario = make(loop)
        await scenario.prepare()
        otel.span_exporter.clear()
        before = cancelled_executions(otel)
        scopes: list[Any] = []
        at: dict[int, Callable[[], None]] = {}
        holder: list[asyncio.Task[Any]] = []

        def cancel(message: str | None = None) -> None:
            result.cancels += 1
            holder[0].cancel(message)

        if k is not None:
            if variant in {"cancel", "converted"}:
                at[k] = cancel
            elif variant == "message":
                at[k] = lambda: cancel(MESSAGE)
            elif variant == "twice":

                def twice() -> None:
                    cancel()
                    cancel()

                at[k] = twice
            elif variant == "again":
                at[k] = cancel
                at[k + 1] = cancel
            elif variant == "outer timeout":
                at[k] = lambda: scopes[0].reschedule(loop.time())
            elif variant == "outer timeout with the next timer":
                at[k] = lambda: scopes[0].reschedule(loop.next_timer() or loop.time())
            elif variant == "with the next timer":

                def with_the_next_timer() -> None:
                    due = loop.next_timer()
                    if due is None:
                        loop.call_soon(cancel)
                    else:
                        loop.call_at(due, cancel)

                at[k] = with_the_next_timer
            elif variant == "before the next timer":

                def before_the_next_timer() -> None:
                    due = loop.next_timer()
                    if due is None:
                        loop.call_soon(cancel)
                    else:  # due first, in the same turn: within the loop's clock resolution
                        loop.call_at(due - SAME_TURN, cancel)

                at[k] = before_the_next_timer
        counted = Suspensions(caller(scenario, scopes), at)
        suspensions.append(counted)
        task = loop.create_task(counted)
        holder.append(task)
        await task
        await scenario.settle()
        for _ in range(3):
            await asyncio.sleep(0)
        left = asyncio.all_tasks() - {asyncio.current_task()}
        assert not left, f"tasks left on the loop: {left}"
        cancelled = check_result(result, scenario, variant)
        scenario.converted = isinstance(result.error, ConnectionError)
        scenario.check(cancelled)
        policy = check_spans(otel, spans, cancelled and scenario.spans, converted=scenario.converted)
        now = cancelled_executions(otel)
        counts = {name: n - before.get(name, 0) for name, n in now.items() if n != before.get(name, 0)}
        if scenario.spans:
            assert counts == ({policy: 1} if policy else {}), f"cancelled executions counted: {counts}"
        await scenario.next_call_works()
        await scenario.settle()

    Dependency.converting = variant == "converted"
    try:
        loop.run_until_complete(main())
    finally:
        Dependency.converting = False
        loop.close()
    assert not reported, reported
    return suspensions[0].count, result


def check_result(result: Result, scenario: Scenario, variant: str) -> bool:
    """What reached the caller is what cancelled it; return whether the call was cancelled (or timed out from outside)."""
    assert result.running == 0, f"the call ended with {result.running} call(s) of its dependency running"
    if result.cancels == 0 and not result.expired:
        assert result.error is None, f"an uncancelled call raised {result.error!r}"
        assert result.value == scenario.expected
        assert result.cancelling == 0
        return False
    if variant.startswith("outer timeout"):
        assert type(result.error) is TimeoutError, (
            f"the outer timeout expired, the caller got {result.error!r} / {result.value!r}"
        )
        assert isinstance(result.error.__cause__, asyncio.CancelledError), result.error.__cause__
        assert result.cancelling == 0, "the outer timeout's cancellation was not taken back"
        return True
    if variant == "converted" and isinstance(result.error, ConnectionError):
        assert isinstance(result.error.__cause__, asyncio.CancelledError), result.error
        assert result.cancelling == 1
        return True
    assert isinstance(result.error, asyncio.CancelledError), (
        f"the task was cancelled, the caller got {result.error!r} / {result.value!r}"
    )
    assert result.cancelling == result.cancels, (
        f"cancelled {result.cancels} time(s), the task's cancelling() count is {result.cancelling}"
    )
    if variant == "message":
        assert result.error.args == (MESSAGE,), result.error.args
    return True


def cancelled_executions(otel: Otel) -> dict[str, float]:
    """The executions counted ``cancelled`` so far, by policy (``resilience.executions``)."""
    found: dict[str, float] = {}
    for point in otel.points("resilience.executions"):
        attributes = dict(point.attributes)
        if attributes.get("resilience.outcome") == "cancelled":
            policy = str(attributes["resilience.policy"])
            found[policy] = found.get(policy, 0) + point.value
    return found


def check_spans(otel: Otel, spans: OpenSpans, cancelled: bool, *, converted: bool = False) -> str | None:
    """Every span started has ended; the outermost execution span ends cancelled (no error) when the call was.

    Returns the policy of the cancelled execution (``None`` when there is none). An execution
    whose cancellation a dependency turned into an error ends as that error's type: a failure.
    """
    assert not spans.open, f"spans left open: {spans.open}"
    for span in otel.spans():
        assert span.attributes is not None
        if "resilience.pattern" in span.attributes:
            assert "resilience.outcome" in span.attributes, (span.name, dict(span.attributes))
    if not cancelled:
        return None
    finished = otel.spans()
    caller = otel.span(CALLER).context.span_id
    roots = [span for span in finished if span.parent is not None and span.parent.span_id == caller]
    assert len(roots) == 1, [span.name for span in roots]
    root = roots[0]
    assert root.attributes is not None
    if converted:
        assert root.attributes.get("resilience.outcome") == "failure", (root.name, dict(root.attributes))
        assert root.attributes.get("error.type") == "ConnectionError", (root.name, dict(root.attributes))
        return None
    assert root.attributes.get("resilience.outcome") == "cancelled", (root.name, dict(root.attributes))
    assert root.status.status_code is StatusCode.UNSET, (root.name, root.status)
    for span in finished:
        assert span.attributes is not None
        if span.attributes.get("resilience.outcome") == "cancelled":
            assert span.status.status_code is StatusCode.UNSET, (span.name, span.status)
    return str(root.attributes["resilience.policy"])


def sweep(otel: Otel, make: Callable[[VirtualTimeLoop], Scenario], variant: str) -> int:
    """Count the suspensions of an uncancelled run, then act at each; return how many there were."""
    spans = OpenSpans()
    otel.tracer_provider.add_span_processor(spans)
    reported: list[dict[str, Any]] = []
    total, _ = run_once(otel, spans, make, variant, None, reported=reported)
    assert 0 < total < LIMIT
    for k in range(1, total + 1):
        try:
            run_once(otel, spans, make, variant, k, reported=reported)
        except AssertionError as error:
            raise AssertionError(f"{variant} at suspension {k} of {total}: {error}") from error
    gc.collect()  # a task dropped while pending, a future's error never retrieved: reported now
    assert not reported, reported
    return total


TIMED_OUT_INSIDE = {"timeout fired", "scopes", "inner asyncio timeout"}
"""Scenarios whose dependency a deadline cancels in every run: one that turns that into an error fails them."""


@pytest.mark.parametrize(
    ("scenario", "variant"),
    [
        (scenario, variant)
        for scenario in SCENARIOS
        for variant in VARIANTS
        if not (variant == "converted" and scenario in TIMED_OUT_INSIDE)
    ],
)
def test_cancelled_at_every_suspension(otel: Otel, scenario: str, variant: str) -> None:
    assert sweep(otel, SCENARIOS[scenario], variant) >= 1


# -- the harness itself ------------------------------------------------------------------------------


class Faulty(Scenario):
    """A call that mishandles its cancellation as ``fault`` says: the sweep must catch it out."""

    spans = False

    def __init__(self, loop: VirtualTimeLoop, fault: str) -> None:
        super().__init__(loop)
        self.fault = fault

    async def call(self) -> Any:
        task = asyncio.current_task()
        assert task is not None
        try:
            return await self.dependency()
        except asyncio.CancelledError:
            if self.fault == "swallowed":
                return "swallowed"
            if self.fault == "taken back":
                task.uncancel()
            elif self.fault == "left running":
                self.loop.create_task(asyncio.sleep(3600.0))
            raise


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("swallowed", "the task was cancelled, the caller got"),
        ("taken back", "the task's cancelling\\(\\) count is 0"),
        ("left running", "tasks left on the loop"),
    ],
)
def test_the_sweep_notices_a_mishandled_cancellation(otel: Otel, fault: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        sweep(otel, lambda loop: Faulty(loop, fault), "cancel")
