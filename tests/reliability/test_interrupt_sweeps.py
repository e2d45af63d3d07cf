"""Interrupts (``KeyboardInterrupt``) at every point of a call, through a whole policy, sync and async.

The sync analogue of the cancellation sweeps: an interrupt raised by the protected function, by a
user hook (a predicate, ``delay_from``, a restart hook, the fallback function, a state change
callback) or by a telemetry listener (an event, an execution or attempt
scope), at its ``n``-th call, for ``n = 0, 1, 2, ...`` until a call completes. After each
interrupted call the interrupt reached the caller, and nothing is left taken or miscounted: the
bulkhead and the rate limiter have nobody running or waiting and their counts add up, the
breaker has no probe in flight (the next call probes), the retry budget holds exactly the
retries that ran, and the next call works.

And with real signals: a thread's bulkhead queue, a rate limiter's wait and a retry's backoff,
each interrupted by a signal while the main thread blocks in it.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from otel_support import Otel
from support import until_sync

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    ChaosConfig,
    CircuitBreakerConfig,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.engine.events import HUB, Event, EventArgs, Outcome, TelemetrySource
from otel_resilience.testing import AttemptRecorder, FakeClock

_NAMES = itertools.count()


class Interrupter:
    """Counts the points it is asked about while ``armed``; raises ``KeyboardInterrupt`` at the ``at``-th (from 0)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.count = 0
        self.where: str | None = None
        self.armed = False

    def point(self, where: str) -> None:
        if not self.armed:
            return
        count = self.count
        self.count += 1
        if count == self.at:
            self.where = where
            raise KeyboardInterrupt(where)


class InterruptingListener:
    """A telemetry listener (events and scopes) that is a point of its :class:`Interrupter` at every call."""

    def __init__(self, interrupter: Interrupter) -> None:
        self.interrupter = interrupter

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        self.interrupter.point(f"event {event.value}")

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        self.interrupter.point("start_execution")
        return self

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        self.interrupter.point("end_execution")

    def start_attempt(
        self, source: TelemetrySource, operation: str, attempt: int, attempt_type: str | None = None
    ) -> object:
        self.interrupter.point("start_attempt")
        return self

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        self.interrupter.point("end_attempt")


def recorder_into(seen: list[int]) -> AttemptRecorder:
    recorder = AttemptRecorder()
    recorder.seen = seen
    return recorder


class Policy:
    """A policy with every pattern a sync call can use, whose call starts with its breaker OPEN and due.

    The call waits for a rate limiter permit, probes the half-open breaker (twice: an ignored error
    gives the probe back), is retried, reopens the breaker, is re-run by a recovery rule once the
    breaker is due again, probes and fails again, and the fallback answers. Its hooks and the dependency are points of ``interrupter``
    (when ``hooks``); a listener's calls are (when ``listener``).
    """

    def __init__(self, interrupter: Interrupter, *, hooks: bool) -> None:
        self.interrupter = interrupter
        self.hooks = hooks
        self.clock = FakeClock(1000.0)
        self.manager = ResilienceManager(clock=self.clock)
        self.budget = RetryBudget(ratio=1.0, min_retries_per_second=1.0, window=30.0, clock=self.clock)
        self.runs: list[int] = []
        self.attempts: list[int] = []
        self.calls = 0
        point = self.point
        self.manager.recovery_system.register_recovery_rule(
            KeyError,
            RecoveryAction(
                strategy=RecoveryStrategy.RESTART,
                max_attempts=1,
                delay=1.0,
                restart_hook=lambda: point("restart_hook"),
            ),
        )
        config = ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.ALTERNATIVE_FUNCTION,
                fallback_function=lambda error: point("fallback_function") or "fallback",
                handle_exceptions=lambda error: point("handle_exceptions") or isinstance(error, LookupError),
            ),
            rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0),
            timeout=60.0,
            enable_recovery=True,
            retry_policy=RetryPolicy(
                max_attempts=3,
                initial_delay=0.1,
                budget=self.budget,
                retry_on=lambda error: point("retry_on") or isinstance(error, (ConnectionError, KeyError)),
                delay_from=lambda outcome: point("delay_from"),
            ),
            circuit_breaker=CircuitBreakerConfig(
                failure_threshold=1,
                success_threshold=1,
                timeout=0.5,
                ignore_exceptions=(ConnectionResetError,),
            ),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1),
            chaos=ChaosConfig(
                latency_rate=1.0, latency=0.01, seed=1, enabled=lambda ctx: point("chaos.enabled") or True
            ),
            extra_strategies=(
                ExtraStrategy(lambda _policy: recorder_into(self.runs), inside="recovery"),
                ExtraStrategy(lambda _policy: recorder_into(self.attempts), inside="retry"),
            ),
        )
        self.handle = self.manager.policy(f"interrupted-{next(_NAMES)}", config)
        self.view = self.handle.for_key("k")
        breaker = self.view.circuit_breaker
        assert breaker is not None
        self.breaker = breaker
        self.unwatch = breaker.on_state_change(lambda change: point(f"state change to {change.new}"))
        # The breaker opens and its period passes (it is HALF_OPEN at the call's first attempt);
        # the only permit of the rate limiter is taken: the call waits 0.4 s for the next one.
        with pytest.raises(ValueError, match="down"):
            self.view.execute_sync(self.failing)
        self.clock.advance(0.6)
        self.limiter_asked = self.rate_limiter()["admitted"] + self.rate_limiter()["cancelled"]
        self.budget_base = self.budget.get_stats()["retries"]
        for seen in (self.runs, self.attempts):
            seen.clear()
        interrupter.armed = True  # from the call on

    def point(self, where: str) -> None:
        if self.hooks:
            self.interrupter.point(where)

    @staticmethod
    def failing() -> None:
        raise ValueError("down")  # neither retried, recovered nor answered: it opens the breaker

    def dependency(self) -> str:
        """Attempts 1 and 2 are reset (ignored by the breaker), 3 fails, the recovery's re-run too: the fallback answers."""
        self.calls += 1
        self.point(f"call {self.calls}")
        if self.calls <= 2:
            raise ConnectionResetError("reset")
        if self.calls == 3:
            raise KeyError("down")
        raise IndexError("gone")

    async def adependency(self) -> str:
        await asyncio.sleep(0)
        return self.dependency()

    def rate_limiter(self) -> dict[str, Any]:
        stats = self.handle.get_stats()["rate_limiter"]
        assert stats is not None
        return stats

    def close(self) -> None:
        self.interrupter.armed = False
        self.unwatch()

    def check(self, interrupted: bool) -> None:
        stats = self.handle.get_stats()
        bulkhead = stats["bulkhead"]
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert (
            bulkhead["total"]
            == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
        )
        limiter = self.rate_limiter()
        assert limiter["waiting"] == 0
        asked = limiter["admitted"] + limiter["cancelled"] - self.limiter_asked
        assert asked == (1 if stats["executions"]["total"] > 1 else 0), limiter
        assert self.breaker.get_stats()["half_open_in_flight"] == 0, self.breaker.get_stats()
        executions = stats["executions"]
        assert executions["total"] == (
            executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
        )
        assert executions["cancelled"] <= (1 if interrupted else 0), executions
        retries = sum(1 for attempt in self.attempts if attempt not in self.runs)  # not a run's first
        assert self.budget.get_stats()["retries"] - self.budget_base == retries, (
            self.budget.get_stats(),
            retries,
        )

    def next_call_works(self) -> None:
        self.clock.advance(60.0)
        assert self.view.execute_sync(lambda: "next") == "next"
        assert self.breaker.get_stats()["state"] == "closed"


@pytest.fixture
def listening() -> Iterator[Callable[[Interrupter], None]]:
    """Registers an interrupting listener for the test (removed afterwards)."""
    added: list[InterruptingListener] = []

    def listen(interrupter: Interrupter) -> None:
        listener = InterruptingListener(interrupter)
        added.append(listener)
        HUB.add_listener(listener)

    yield listen
    for listener in added:
        HUB.remove_listener(listener)


def sweep(
    run: Callable[[Interrupter], tuple[Policy, object]], listen: Callable[[Interrupter], None] | None
) -> set[str]:
    """Interrupt the call at its n-th point, n = 0, 1, ...; return where the interrupts landed."""
    landed: set[str] = set()
    for at in range(400):
        interrupter = Interrupter(at)
        if listen is not None:
            listen(interrupter)
        policy, result = run(interrupter)
        policy.close()
        interrupted = interrupter.where is not None
        if interrupted:
            assert result == ("interrupted", interrupter.where), (at, result)
            landed.add(interrupter.where)
        else:
            assert result == ("returned", "fallback"), (at, result)
        policy.check(interrupted)
        policy.next_call_works()
        if not interrupted:
            return landed
    raise AssertionError("the call was interrupted every time")


def run_sync(interrupter: Interrupter, *, hooks: bool) -> tuple[Policy, object]:
    policy = Policy(interrupter, hooks=hooks)
    try:
        return policy, ("returned", policy.view.execute_sync(policy.dependency))
    except KeyboardInterrupt as interrupt:
        return policy, ("interrupted", str(interrupt))


def run_async(interrupter: Interrupter, *, hooks: bool) -> tuple[Policy, object]:
    policy = Policy(interrupter, hooks=hooks)

    async def call() -> object:
        try:
            return ("returned", await policy.view.execute(policy.adependency))
        except KeyboardInterrupt as interrupt:
            return ("interrupted", str(interrupt))

    return policy, asyncio.run(call())


EVERY_HOOK = {
    "chaos.enabled",
    "retry_on",
    "delay_from",
    "restart_hook",
    "handle_exceptions",
    "fallback_function",
    "state change to half_open",
    "state change to open",
    "call 1",
    "call 4",
}


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_an_interrupt_from_the_function_or_a_hook_at_each_point(driver: str) -> None:
    runner = run_sync if driver == "sync" else run_async
    landed = sweep(lambda interrupter: runner(interrupter, hooks=True), None)
    assert landed >= EVERY_HOOK, EVERY_HOOK - landed


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_an_interrupt_from_a_telemetry_listener_at_each_point(
    driver: str, listening: Callable[[Interrupter], None]
) -> None:
    runner = run_sync if driver == "sync" else run_async
    landed = sweep(lambda interrupter: runner(interrupter, hooks=False), listening)
    expected = {
        "start_execution",
        "start_attempt",
        "end_attempt",
        "end_execution",
        "event state_changed",
        "event retry_scheduled",
        "event retry_exhausted",
        "event chaos_injected",
        "event permit_waited",
        "event recovery_attempted",
        "event fallback_used",
    }
    assert landed >= expected, expected - landed


class OpenSpans(SpanProcessor):
    """The spans started and not ended yet, by span id."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: object = None) -> None:
        self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.open.pop(span.context.span_id, None)


class InterruptedScope:
    """An execution listener that raises ``KeyboardInterrupt`` as it opens or closes a scope, once.

    ``where`` is one of its methods: ``start_execution`` or ``end_execution``, or the
    ``start_attempt`` or ``end_attempt`` of attempt 2 (attempt 1 opens no span).
    """

    def __init__(self, where: str) -> None:
        self.where = where

    def interrupt(self, where: str) -> None:
        if where == self.where:
            self.where = ""
            raise KeyboardInterrupt(where)

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        pass

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        self.interrupt("start_execution")
        return self

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        self.interrupt("end_execution")

    def start_attempt(
        self, source: TelemetrySource, operation: str, attempt: int, attempt_type: str | None = None
    ) -> object:
        if attempt == 2:
            self.interrupt("start_attempt")
        return attempt

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        if handle == 2:
            self.interrupt("end_attempt")


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("where", ["start_execution", "start_attempt", "end_attempt", "end_execution"])
async def test_a_listener_interrupted_in_a_scope_leaves_no_span_open_or_current(
    driver: str, where: str, otel: Otel
) -> None:
    """The spans the other listeners opened end (``cancelled``, when the interrupt came as they opened).

    The span current before the call is current again, in the thread or the task.
    """
    spans = OpenSpans()
    otel.tracer_provider.add_span_processor(spans)
    listener = InterruptedScope(where)
    HUB.add_listener(listener)  # after the SDK's listener: it opens its scopes first, closes them last
    calls: list[int] = []

    def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    async def adependency() -> str:
        return dependency()

    manager = ResilienceManager(clock=FakeClock())
    name = f"scoped-{next(_NAMES)}"
    config = ResilienceConfig(name=name, retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0))
    try:
        with otel.tracer_provider.get_tracer("test").start_as_current_span("request") as request:
            with pytest.raises(KeyboardInterrupt, match=where):
                if driver == "sync":
                    manager.execute_with_resilience_sync(dependency, config)
                else:
                    await manager.execute_with_resilience(adependency, config)
            assert trace.get_current_span() is request
    finally:
        HUB.remove_listener(listener)
    assert spans.open == {}
    ended = [span for span in otel.spans() if span.name.startswith(name)]
    assert ended, "the execution span was never opened"
    if where.startswith("start"):
        assert {span.attributes["resilience.outcome"] for span in ended if span.attributes} == {"cancelled"}


# -- real signals: the main thread interrupted while it blocks in a wait ----------------------------


class SignalledInterrupt(KeyboardInterrupt):
    """What the test's signal handler raises in the main thread."""


@pytest.fixture
def interrupt_main() -> Iterator[Callable[[Callable[[], bool]], threading.Thread]]:
    """``interrupt_main(ready)``: once ``ready()`` holds, a thread signals the main thread, which raises.

    The signal is SIGUSR1, its handler raising :class:`SignalledInterrupt`, so that a stray
    interrupt is never the test runner's own.
    """
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    previous = signal.signal(signal.SIGUSR1, _raise_interrupt)
    threads: list[threading.Thread] = []

    def start(ready: Callable[[], bool]) -> threading.Thread:
        def send() -> None:
            until_sync(ready)
            time.sleep(0.02)  # the main thread is blocked in the wait by now
            assert main is not None
            signal.pthread_kill(main, signal.SIGUSR1)

        thread = threading.Thread(target=send, daemon=True)
        threads.append(thread)
        thread.start()
        return thread

    try:
        yield start
    finally:
        for thread in threads:
            thread.join(5.0)
        signal.signal(signal.SIGUSR1, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise SignalledInterrupt


def test_a_thread_queued_in_a_bulkhead_is_interrupted_between_others(
    interrupt_main: Callable[[Callable[[], bool]], threading.Thread],
) -> None:
    """Threads queue for a busy slot; the main thread, second in the queue, is interrupted.

    It leaves the queue: the one ahead and the one behind it run in their turn, the interrupted call
    is counted cancelled (once), the bulkhead's counts add up and its next call runs.
    """
    manager = ResilienceManager()
    config = ResilienceConfig(
        name=f"threads-{next(_NAMES)}",
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=3, timeout=10.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
    )
    handle = manager.policy(str(config.name), config)
    bulkhead = handle.for_key("k").bulkhead
    assert bulkhead is not None
    release = threading.Event()
    order: list[str] = []

    def hold() -> str:
        release.wait(10.0)
        order.append("holder")
        return "held"

    def queued(label: str) -> Callable[[], str]:
        def run() -> str:
            order.append(label)
            return label

        return run

    results: dict[str, object] = {}

    def call(label: str, fn: Callable[[], str]) -> None:
        results[label] = handle.for_key("k").execute_sync(fn)

    holder = threading.Thread(target=call, args=("holder", hold))
    holder.start()
    until_sync(lambda: bulkhead.get_stats()["active"] == 1)
    ahead = threading.Thread(target=call, args=("ahead", queued("ahead")))
    ahead.start()
    until_sync(lambda: bulkhead.get_stats()["waiting"] == 1)
    behind = threading.Thread(target=call, args=("behind", queued("behind")))
    interrupt_main(lambda: bulkhead.get_stats()["waiting"] == 3)
    starter = threading.Timer(0.005, behind.start)  # queues behind the main thread
    starter.start()
    with pytest.raises(SignalledInterrupt):
        handle.for_key("k").execute_sync(queued("main"))
    starter.join()
    assert bulkhead.get_stats()["waiting"] == 2
    release.set()
    for thread in (holder, ahead, behind):
        thread.join(10.0)
    assert order == ["holder", "ahead", "behind"]
    assert results == {"holder": "held", "ahead": "ahead", "behind": "behind"}
    counts = bulkhead.get_stats()
    assert (counts["active"], counts["waiting"], counts["cancelled"], counts["completed"]) == (0, 0, 1, 3)
    assert (
        counts["total"]
        == counts["completed"] + counts["rejected"] + counts["timed_out"] + counts["cancelled"]
    )
    assert handle.get_stats()["executions"]["cancelled"] == 1
    assert handle.for_key("k").execute_sync(lambda: "next") == "next"


def test_a_slot_waiting_in_a_thread_is_interrupted(
    interrupt_main: Callable[[Callable[[], bool]], threading.Thread], otel: Any
) -> None:
    """``with bulkhead.slot():`` interrupted in the queue: counted as a cancelled execution, and the holder serves again."""
    bulkhead = Bulkhead(f"slot-{next(_NAMES)}", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=10.0))
    release = threading.Event()

    def hold() -> None:
        with bulkhead.slot():
            release.wait(10.0)

    holder = threading.Thread(target=hold)
    holder.start()
    until_sync(lambda: bulkhead.get_stats()["active"] == 1)
    slot = bulkhead.slot()
    interrupt_main(lambda: bulkhead.get_stats()["waiting"] == 1)
    with pytest.raises(SignalledInterrupt), slot:
        pytest.fail("the block ran")
    release.set()
    holder.join(10.0)
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["cancelled"], stats["completed"]) == (0, 0, 1, 1)
    exported = {
        dict(point.attributes)["resilience.outcome"]: point.value
        for point in otel.points("resilience.executions")
        if dict(point.attributes).get("resilience.policy") == bulkhead.name and point.value
    }
    assert exported == {"success": 1, "cancelled": 1}
    with slot:
        assert bulkhead.get_stats()["active"] == 1


class BlockingClock(FakeClock):
    """A fake clock whose sync sleeps block the thread (until a signal interrupts them), saying when they start."""

    __slots__ = ("sleeping",)

    def __init__(self, start: float = 1000.0) -> None:
        super().__init__(start)
        self.sleeping = threading.Event()

    def sleep_sync(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        threading.Event().wait(10.0)  # only an interrupt ends it in time
        raise AssertionError("the sleep was not interrupted")


def test_a_thread_waiting_for_a_permit_is_interrupted(
    interrupt_main: Callable[[Callable[[], bool]], threading.Thread],
) -> None:
    """The interrupted waiter gives its reservation back: the next caller gets the permit it held."""
    clock = BlockingClock()
    manager = ResilienceManager(clock=clock)
    handle = manager.policy(
        f"permits-{next(_NAMES)}",
        ResilienceConfig(rate_limiter=RateLimiterConfig(rate=1.0, burst=1, max_wait=2.0)),
    )
    assert handle.execute_sync(lambda: "first") == "first"

    def limiter() -> dict[str, Any]:
        stats = handle.get_stats()["rate_limiter"]
        assert stats is not None
        return stats

    interrupt_main(clock.sleeping.is_set)
    with pytest.raises(SignalledInterrupt):
        handle.execute_sync(lambda: "interrupted")
    counts = limiter()
    assert (counts["admitted"], counts["cancelled"], counts["waiting"]) == (1, 1, 0)
    clock.advance(1.0)  # the permit the waiter gave back is due: taken at once, no sleep
    assert handle.execute_sync(lambda: "next") == "next"
    assert (limiter()["admitted"], limiter()["waited"]) == (2, 0)
    assert handle.get_stats()["executions"]["cancelled"] == 1


def test_a_thread_in_a_retry_backoff_is_interrupted(
    interrupt_main: Callable[[Callable[[], bool]], threading.Thread],
) -> None:
    """Interrupted in its backoff's sleep, the retry never runs: the budget has it back, the breaker counts no more."""
    clock = BlockingClock()
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=30.0, clock=clock)
    config = ResilienceConfig(
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=5.0, jitter="none", budget=budget),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
    )
    handle = ResilienceManager(clock=clock).policy(f"backoff-{next(_NAMES)}", config)
    for _ in range(3):
        handle.for_key("k").execute_sync(lambda: "warm")
    calls: list[int] = []

    def failing() -> None:
        calls.append(1)
        raise ConnectionError("down")

    interrupt_main(clock.sleeping.is_set)
    with pytest.raises(SignalledInterrupt):
        handle.for_key("k").execute_sync(failing)
    assert clock.sleeps == [5.0]
    assert calls == [1]
    assert budget.get_stats()["retries"] == 0
    breaker = handle.for_key("k").circuit_breaker
    assert breaker is not None
    assert (breaker.get_stats()["total_failures"], breaker.get_stats()["total_cancelled"]) == (1, 0)
    assert handle.get_stats()["executions"]["cancelled"] == 1
    assert handle.for_key("k").execute_sync(lambda: "next") == "next"
