"""What an on-call engineer relies on: series at 0 before the first event, attempt latency, the
dependency's error behind a rejection, and a span event for every rejection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience.errors import BulkheadTimeoutError, CircuitOpenError, ExecutionRejectedError
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry import semconv as sc

_PREVIOUS, _STATE, _REASON = sc.CB_PREVIOUS_STATE, sc.CB_STATE, sc.CB_TRANSITION_REASON


def _transitions(otel: Any, name: str) -> dict[tuple[str, str, str], int]:
    return {
        (p.attributes[_PREVIOUS], p.attributes[_STATE], p.attributes[_REASON]): p.value
        for p in otel.points(sc.CB_TRANSITIONS)
        if p.attributes[sc.NAME] == name
    }


def _by(otel: Any, metric: str, policy: str, key: str) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[sc.NAME], p.attributes[key]): p.value
        for p in otel.points(metric)
        if p.attributes[sc.POLICY] == policy
    }


@contextlib.contextmanager
def _meter_only() -> Iterator[Any]:
    """Instrument with a meter provider only; yield a function returning the points of a metric."""
    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)

    def points(name: str) -> list[Any]:
        data = reader.get_metrics_data()
        return [
            point
            for rm in data.resource_metrics
            for scope in rm.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    try:
        yield points
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


def _fixed(max_attempts: int, **extra: Any) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts,
        strategy=RetryStrategy.FIXED,
        initial_delay=0.0,
        jitter=Jitter.NONE,
        **extra,
    )


async def _call(manager: ResilienceManager, config: ResilienceConfig, driver: str, fn: Any) -> Any:
    if driver == "sync":
        return manager.execute_with_resilience_sync(fn, config)

    async def wrapped() -> Any:
        return fn()

    return await manager.execute_with_resilience(wrapped, config)


def test_a_new_breaker_has_every_transition_series_at_zero(otel):
    """A breaker created while instrumented exports each of its known transitions at 0 before any trip."""
    breaker = CircuitBreaker("zero-cb", CircuitBreakerConfig(failure_threshold=1))
    assert _transitions(otel, "zero-cb") == dict.fromkeys(sc.CB_TRANSITIONS_KNOWN, 0)
    assert breaker.name == "zero-cb"


def test_a_breaker_older_than_the_listener_gets_its_zero_series_when_the_listener_starts():
    """Instances that exist before the meter is known are zero-initialised when the listener starts."""
    breaker = CircuitBreaker("older-cb", CircuitBreakerConfig(failure_threshold=1))
    with _meter_only() as points:
        mine = [p for p in points(sc.CB_TRANSITIONS) if p.attributes[sc.NAME] == "older-cb"]
        assert len(mine) == len(sc.CB_TRANSITIONS_KNOWN)
        assert {p.value for p in mine} == {0}
    assert breaker.name == "older-cb"


async def test_the_first_trip_moves_a_series_that_was_at_zero(otel, clock, driver, alerts):
    """The first closed -> open of a fresh breaker is an increase from 0 to 1 of an existing series."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(name="trip", circuit_breaker=CircuitBreakerConfig(failure_threshold=1))
    assert await _call(manager, config, driver, lambda: "ok") == "ok"
    before = _transitions(otel, "trip")
    assert before[("closed", "open", "failure_threshold")] == 0
    with pytest.raises(OSError, match="down"):
        await _call(manager, config, driver, _raise(OSError("down")))
    after = _transitions(otel, "trip")
    assert after[("closed", "open", "failure_threshold")] == 1
    assert sum(after.values()) == 1
    assert len(after) == len(sc.CB_TRANSITIONS_KNOWN)


async def test_policy_rejection_and_timeout_series_exist_at_zero_and_count_real_events(
    otel, clock, driver, alerts
):
    """A policy's breaker, bulkhead and deadlines export their rejection and timeout series at 0; a rejection moves its own."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(
        name="zero-policy",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=1),
        retry_policy=_fixed(1, attempt_timeout=5.0),
        timeout=10.0,
    )
    assert await _call(manager, config, driver, lambda: "ok") == "ok"
    assert _by(otel, sc.REJECTIONS, "zero-policy", sc.REJECTION_REASON) == {
        ("zero-policy", "circuit_open"): 0,
        ("zero-policy", "half_open_full"): 0,
        ("zero-policy", "bulkhead_full"): 0,
        ("zero-policy", "queue_timeout"): 0,
    }
    scopes = {
        (p.attributes[sc.PATTERN], p.attributes[sc.TIMEOUT_SCOPE]): p.value
        for p in otel.points(sc.TIMEOUTS)
        if p.attributes[sc.POLICY] == "zero-policy"
    }
    assert scopes == {("timeout", "total"): 0, ("timeout", "attempt"): 0}
    with pytest.raises(OSError, match="down"):
        await _call(manager, config, driver, _raise(OSError("down")))
    with pytest.raises(CircuitOpenError):
        await _call(manager, config, driver, lambda: "never")
    rejections = _by(otel, sc.REJECTIONS, "zero-policy", sc.REJECTION_REASON)
    assert len(rejections) == 4
    assert rejections[("zero-policy", "circuit_open")] == 1


async def test_recovery_series_exist_at_zero_and_count_real_actions(otel, clock, driver, alerts):
    """A policy with recovery exports its recovery series (strategy x result) at 0; a real action moves its own."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    config = ResilienceConfig(name="zero-recovery", enable_recovery=True)
    assert await _call(manager, config, driver, lambda: "ok") == "ok"
    series = {
        (p.attributes[sc.RECOVERY_STRATEGY], p.attributes[sc.RECOVERY_RESULT]): p.value
        for p in otel.points(sc.RECOVERY_ATTEMPTS)
        if p.attributes[sc.POLICY] == "zero-recovery"
    }
    assert series == {(s, r): 0 for s in sc.RECOVERY_STRATEGIES for r in sc.RESULTS}
    assert await _call(manager, config, driver, _flaky(1)) == "ok"
    moved = [
        p for p in otel.points(sc.RECOVERY_ATTEMPTS) if p.attributes[sc.POLICY] == "zero-recovery" and p.value
    ]
    assert [
        (p.attributes[sc.RECOVERY_STRATEGY], p.attributes[sc.RECOVERY_RESULT], p.value) for p in moved
    ] == [("retry", "success", 1)]


def _raise(error: BaseException) -> Any:
    def fn() -> Any:
        raise error

    return fn


def _flaky(failures: int, error: type[BaseException] = ConnectionError) -> Any:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise error("down")
        return "ok"

    return fn


async def test_every_attempt_records_its_own_duration(otel, clock, driver, alerts):
    """Each attempt, the first included, records resilience.attempt.duration with its outcome and error type."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(name="attempts", retry_policy=_fixed(3))
    assert await _call(manager, config, driver, _flaky(2)) == "ok"
    points = {
        (p.attributes[sc.OUTCOME], p.attributes.get(sc.ERROR_TYPE)): p
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == "attempts"
    }
    assert set(points) == {("failure", "ConnectionError"), ("success", None)}
    assert points["failure", "ConnectionError"].count == 2
    assert points["success", None].count == 1
    assert points["success", None].attributes[sc.PATTERN] == "retry"


def test_attempt_duration_is_recorded_with_a_meter_and_no_tracer(clock, alerts):
    """With only a meter provider, attempts are still timed (no span is needed for the metric)."""
    with _meter_only() as points:
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        config = ResilienceConfig(name="meter-only", retry_policy=_fixed(2))
        assert manager.execute_with_resilience_sync(_flaky(1), config) == "ok"
        counts = {
            p.attributes[sc.OUTCOME]: p.count
            for p in points(sc.ATTEMPT_DURATION)
            if p.attributes[sc.POLICY] == "meter-only"
        }
        assert counts == {"failure": 1, "success": 1}


async def test_an_execution_ended_by_a_rejection_names_the_dependency_error(otel, clock, driver, alerts):
    """Attempts fail with ConnectionError, the breaker opens, the last attempt is rejected: the span names both."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(
        name="dep-error",
        retry_policy=_fixed(3),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
    )
    with pytest.raises(CircuitOpenError):
        await _call(manager, config, driver, _flaky(5))
    span = otel.span("dep-error")
    assert span.attributes[sc.ERROR_TYPE] == "otel_resilience.errors.CircuitOpenError"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"


class _OwnRejection(ExecutionRejectedError):
    """A rejection of the application's own (a custom step's), defined after the library was imported."""


async def test_a_rejection_of_a_class_made_after_the_import_never_names_the_dependency_error(
    otel, clock, driver, alerts
):
    """The dependency failed, then an attempt was rejected by a custom rejection: the span names the failure."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(name="own-rejection", retry_policy=_fixed(3))
    calls = iter((ConnectionError("down"), _OwnRejection("shed")))

    def fn() -> str:
        raise next(calls)

    with pytest.raises(_OwnRejection):
        await _call(manager, config, driver, fn)
    span = otel.span("own-rejection")
    assert span.attributes[sc.OUTCOME] == "rejected"
    assert span.attributes[sc.ERROR_TYPE] == f"{__name__}._OwnRejection"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"


async def test_a_queue_timeout_is_a_span_event_on_the_waiting_call(otel, alerts):
    """A call that times out in a bulkhead's queue carries resilience.call.rejected (queue_timeout) on its span."""
    manager = ResilienceManager(alert_system=alerts)
    config = ResilienceConfig(
        name="queued", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05)
    )
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "held"

    async def quick() -> str:
        return "never"

    holder = asyncio.ensure_future(manager.execute_with_resilience(hold, config))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadTimeoutError):
        await manager.execute_with_resilience(quick, config)
    release.set()
    assert await holder == "held"
    rejected = [s for s in otel.spans("queued") if s.attributes[sc.OUTCOME] == "rejected"]
    assert len(rejected) == 1
    events = [e for e in rejected[0].events if e.name == sc.EV_CALL_REJECTED]
    assert [e.attributes[sc.REJECTION_REASON] for e in events] == ["queue_timeout"]
    assert (
        otel.point(
            sc.REJECTIONS,
            resilience__policy="queued",
            resilience__pattern="bulkhead",
            resilience__name="queued",
            resilience__rejection__reason="queue_timeout",
        ).value
        == 1
    )


class _Broken:
    """A counter whose ``add`` raises."""

    def add(self, amount: float, attributes: Any = None) -> None:
        raise RuntimeError("broken counter")


def test_a_failure_while_zeroing_is_counted_and_never_reaches_the_constructor(otel):
    """A telemetry error while starting a new breaker's series at 0 is counted; the breaker is built."""
    instruments = otel.listener._instruments
    assert instruments is not None
    instruments.counters[sc.CB_TRANSITIONS] = _Broken()
    before = otel.listener.errors
    breaker = CircuitBreaker("zero-broken", CircuitBreakerConfig(failure_threshold=1))
    assert breaker.name == "zero-broken"
    assert otel.listener.errors == before + 1


def _failing(*errors: BaseException) -> Any:
    """A function raising ``errors`` in turn, then returning ``"ok"``."""
    pending = iter(errors)

    def fn() -> str:
        error = next(pending, None)
        if error is not None:
            raise error
        return "ok"

    return fn


async def test_a_recovery_rerun_rejected_names_the_dependency_error(otel, clock, driver, alerts):
    """A RETRY rule's re-run rejected by the breaker the failure opened: the span names that failure."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    config = ResilienceConfig(
        name="rerun-rejected",
        enable_recovery=True,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
    )
    with pytest.raises(CircuitOpenError):
        await _call(manager, config, driver, _flaky(5))
    span = otel.span("rerun-rejected")
    assert span.attributes[sc.ERROR_TYPE] == "otel_resilience.errors.CircuitOpenError"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"


async def test_a_recovery_names_its_last_rerun_error_not_the_first(otel, clock, driver, alerts):
    """A re-run failed with another error the rule covers, the next was rejected: the span names the later one."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        OSError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=3, delay=0.0)
    )
    config = ResilienceConfig(
        name="rerun-last",
        enable_recovery=True,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),
    )
    with pytest.raises(CircuitOpenError):
        await _call(manager, config, driver, _failing(ConnectionError("down"), TimeoutError("slow")))
    assert otel.span("rerun-last").attributes[sc.DEPENDENCY_ERROR_TYPE] == "TimeoutError"


async def test_a_recovery_around_a_retry_leaves_the_naming_to_the_retry(otel, clock, driver, alerts):
    """The retry inside saw a later error of the dependency than the recovery: the span keeps the retry's."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        OSError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    config = ResilienceConfig(
        name="rerun-retry",
        enable_recovery=True,
        retry_policy=_fixed(2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3),
    )
    fn = _failing(ConnectionError("a"), ConnectionError("b"), TimeoutError("c"))
    with pytest.raises(CircuitOpenError):
        await _call(manager, config, driver, fn)
    assert otel.span("rerun-retry").attributes[sc.DEPENDENCY_ERROR_TYPE] == "TimeoutError"


async def test_a_recovered_execution_names_the_error_it_recovered_from(otel, clock, driver, alerts):
    """A re-run that returned: the span (outcome recovered) names the dependency's error before it, as a retry's."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    config = ResilienceConfig(name="rerun-ok", enable_recovery=True)
    assert await _call(manager, config, driver, _flaky(1)) == "ok"
    span = otel.span("rerun-ok")
    assert span.attributes[sc.OUTCOME] == "recovered"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"
