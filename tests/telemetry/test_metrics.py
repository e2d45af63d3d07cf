"""Metrics: the duration histogram and its exemplars, event counters, observable instruments."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest
from opentelemetry import trace

from otel_resilience.engine.events import (
    HUB,
    AlertRaised,
    CallRejected,
    Event,
    FallbackUsed,
    Outcome,
    PatternDetected,
    RecoveryAttempted,
    RetryExhausted,
    RetryScheduled,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
    TimeoutOccurred,
)
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.errors import BulkheadFullError
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
)
from otel_resilience.patterns.fallback import FallbackConfig, FallbackStrategy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry import uninstrument


def ok() -> int:
    return 1


@pytest.fixture
def alerts():
    """An alert system of our own (closed afterwards), so a manager leaves no listener behind."""
    system = AlertSystem(name="metrics-alerts")
    yield system
    system.close()


def boom() -> None:
    raise KeyError("k")


def _duration(policy: str, outcome: str, error_type: str | None = None) -> dict[str, str]:
    attrs = {"resilience.policy": policy, "resilience.pattern": "pipeline", "resilience.outcome": outcome}
    if error_type:
        attrs["error.type"] = error_type
    return attrs


def _point(otel, name: str, attrs: dict[str, object]):
    matches = [p for p in otel.points(name) if dict(p.attributes) == attrs]
    assert len(matches) == 1, (name, attrs, [dict(p.attributes) for p in otel.points(name)])
    return matches[0]


async def test_duration_histogram_by_policy_and_outcome(otel, scripted, runner, driver):
    """The histogram has one series per outcome, error.type only on failures, second buckets."""
    pipeline = scripted("calc")
    for _ in range(3):
        await runner(pipeline, driver, ok)
    with pytest.raises(KeyError):
        await runner(pipeline, driver, boom)
    success = _point(otel, sc.EXECUTION_DURATION, _duration("calc", "success"))
    failure = _point(otel, sc.EXECUTION_DURATION, _duration("calc", "failure", "KeyError"))
    assert (success.count, failure.count) == (3, 1)
    assert tuple(success.explicit_bounds) == sc.DURATION_BOUNDARIES
    assert success.explicit_bounds[0] == 0.001
    assert success.explicit_bounds[-1] == 60.0
    assert otel.metrics()[sc.EXECUTION_DURATION].unit == "s"


async def test_duration_exemplar_carries_execution_span_trace_id(otel, scripted, runner, driver):
    """The histogram is recorded inside the execution span, so its exemplar names that span."""
    await runner(scripted("traced"), driver, ok)
    span = otel.span("traced")
    point = _point(otel, sc.EXECUTION_DURATION, _duration("traced", "success"))
    assert point.exemplars, "no exemplar recorded"
    exemplar = point.exemplars[0]
    assert exemplar.trace_id == span.context.trace_id
    assert exemplar.span_id == span.context.span_id


async def test_duration_switched_off_per_policy(otel, scripted, runner, driver):
    """A source with metrics=False records no histogram point but still opens its span."""
    await runner(scripted("nometrics", metrics=False), driver, ok)
    assert otel.span("nometrics")
    assert [
        p for p in otel.points(sc.EXECUTION_DURATION) if p.attributes["resilience.policy"] == "nometrics"
    ] == []


EVENTS = [
    (
        Event.RETRY_SCHEDULED,
        RetryScheduled(1, 0.5, "ConnectionError"),
        sc.RETRIES,
        {"resilience.policy": "pol", "resilience.name": "inst", "error.type": "ConnectionError"},
        sc.EV_RETRY_SCHEDULED,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.attempt": 1,
            "resilience.retry.delay": 0.5,
            "resilience.retry.delay_source": "strategy",
            "error.type": "ConnectionError",
        },
    ),
    (
        Event.RETRY_EXHAUSTED,
        RetryExhausted(3, None, "max_attempts"),
        sc.RETRY_EXHAUSTED,
        {
            "resilience.policy": "pol",
            "resilience.name": "inst",
            "resilience.retry.stop_reason": "max_attempts",
        },
        sc.EV_RETRY_EXHAUSTED,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.attempt": 3,
            "resilience.retry.stop_reason": "max_attempts",
        },
    ),
    (
        Event.STATE_CHANGED,
        StateChanged("closed", "open", "failure_threshold"),
        sc.CB_TRANSITIONS,
        {
            "resilience.name": "inst",
            "resilience.circuit_breaker.previous_state": "closed",
            "resilience.circuit_breaker.state": "open",
            "resilience.circuit_breaker.transition_reason": "failure_threshold",
        },
        sc.EV_STATE_CHANGED,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.circuit_breaker.previous_state": "closed",
            "resilience.circuit_breaker.state": "open",
            "resilience.circuit_breaker.transition_reason": "failure_threshold",
        },
    ),
    (
        Event.CALL_REJECTED,
        CallRejected("bulkhead_full"),
        sc.REJECTIONS,
        {
            "resilience.policy": "pol",
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.rejection.reason": "bulkhead_full",
        },
        sc.EV_CALL_REJECTED,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.rejection.reason": "bulkhead_full",
        },
    ),
    (
        Event.TIMEOUT,
        TimeoutOccurred(2.5, "attempt"),
        sc.TIMEOUTS,
        {
            "resilience.policy": "pol",
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.timeout.scope": "attempt",
        },
        sc.EV_TIMEOUT,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.timeout.scope": "attempt",
            "resilience.timeout.limit": 2.5,
        },
    ),
    (
        Event.FALLBACK_USED,
        FallbackUsed("cached_value", "success", "TimeoutError"),
        sc.FALLBACK_EXECUTIONS,
        {
            "resilience.policy": "pol",
            "resilience.name": "inst",
            "resilience.fallback.strategy": "cached_value",
            "resilience.fallback.result": "success",
            "error.type": "TimeoutError",
        },
        sc.EV_FALLBACK,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.fallback.strategy": "cached_value",
            "resilience.fallback.result": "success",
            "error.type": "TimeoutError",
        },
    ),
    (
        Event.RECOVERY_ATTEMPTED,
        RecoveryAttempted("restart", "failure", "OSError"),
        sc.RECOVERY_ATTEMPTS,
        {
            "resilience.policy": "pol",
            "resilience.name": "inst",
            "resilience.recovery.strategy": "restart",
            "resilience.recovery.result": "failure",
            "error.type": "OSError",
        },
        sc.EV_RECOVERY,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.recovery.strategy": "restart",
            "resilience.recovery.result": "failure",
            "error.type": "OSError",
        },
    ),
    (
        Event.PATTERN_DETECTED,
        PatternDetected("OSError", "load", 5, 60.0),
        sc.ERROR_PATTERNS,
        {
            "resilience.policy": "pol",
            "resilience.name": "inst",
            "error.type": "OSError",
            "resilience.operation": "load",
        },
        sc.EV_PATTERN,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "error.type": "OSError",
            "resilience.operation": "load",
            "resilience.error_pattern.count": 5,
            "resilience.error_pattern.window": 60.0,
        },
    ),
    (
        Event.ALERT_RAISED,
        AlertRaised("circuit_open", "critical", "ml", "breaker 'ml' opened"),
        sc.ALERTS,
        {
            "resilience.name": "inst",
            "resilience.alert.kind": "circuit_open",
            "resilience.alert.severity": "critical",
            "resilience.alert.subject": "ml",
        },
        sc.EV_ALERT,
        {
            "resilience.pattern": "retry",
            "resilience.name": "inst",
            "resilience.alert.kind": "circuit_open",
            "resilience.alert.severity": "critical",
            "resilience.alert.subject": "ml",
            "resilience.alert.summary": "breaker 'ml' opened",
        },
    ),
]


@pytest.mark.parametrize(
    ("event", "args", "metric", "metric_attrs", "span_event", "event_attrs"),
    EVENTS,
    ids=[e[0].value for e in EVENTS],
)
async def test_event_moves_its_counter_and_adds_a_span_event(
    otel, *, event, args, metric, metric_attrs, span_event, event_attrs
):
    """Every reported event increments its counter (exact attributes) and adds a span event."""
    telemetry = StrategyTelemetry(TelemetrySource("retry", "inst", "pol"))
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("caller"):
        telemetry.report(event, args)
        telemetry.report(event, args)
    assert _point(otel, metric, metric_attrs).value == 2
    caller = otel.span("caller")
    assert [e.name for e in caller.events] == [span_event, span_event]
    assert dict(caller.events[0].attributes) == event_attrs
    assert otel.listener.errors == 0


async def test_metric_attributes_match_the_registry():
    """Every metric attribute set used by the event tests is what semconv declares."""
    for _, _, metric, metric_attrs, _, _ in EVENTS:
        spec = sc.instrument(metric)
        keys = set(metric_attrs)
        assert set(spec.attributes) <= keys <= set(spec.attributes) | set(spec.conditional), metric


async def test_retry_delay_histogram_records_backoff(otel):
    """Each scheduled retry records its delay in the second-scale retry-delay histogram."""
    telemetry = StrategyTelemetry(TelemetrySource("retry", "inst", "pol"))
    for delay in (0.1, 0.2, 0.4):
        telemetry.report(Event.RETRY_SCHEDULED, RetryScheduled(1, delay, None))
    point = _point(otel, sc.RETRY_DELAY_METRIC, {"resilience.policy": "pol", "resilience.name": "inst"})
    assert point.count == 3
    assert point.sum == pytest.approx(0.7)
    assert tuple(point.explicit_bounds) == sc.RETRY_DELAY_BOUNDARIES
    assert _point(otel, sc.RETRIES, {"resilience.policy": "pol", "resilience.name": "inst"}).value == 3


async def test_span_events_skip_non_recording_spans(otel):
    """Outside any recording span an event moves its metric but adds no span event."""
    telemetry = StrategyTelemetry(TelemetrySource("circuit_breaker", "lonely"))
    telemetry.report(Event.CALL_REJECTED, CallRejected("circuit_open"))
    assert trace.get_current_span() is trace.INVALID_SPAN
    point = _point(
        otel,
        sc.REJECTIONS,
        {
            "resilience.policy": "lonely",
            "resilience.pattern": "circuit_breaker",
            "resilience.name": "lonely",
            "resilience.rejection.reason": "circuit_open",
        },
    )
    assert point.value == 1
    assert otel.spans() == []


async def test_executions_observable_counts_every_outcome(otel, scripted, runner, driver):
    """resilience.executions reads PipelineStats: one series per outcome, zeros included."""
    pipeline = scripted("counted")
    await runner(pipeline, driver, ok)
    await runner(pipeline, driver, ok)
    with pytest.raises(KeyError):
        await runner(pipeline, driver, boom)
    values = {
        p.attributes["resilience.outcome"]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes["resilience.policy"] == "counted"
    }
    assert values == {
        "success": 2,
        "recovered": 0,
        "fallback": 0,
        "failure": 1,
        "rejected": 0,
        "timeout": 0,
        "cancelled": 0,
    }
    assert sum(values.values()) == pipeline.stats.total


async def test_executions_split_failures_from_rejections_and_timeouts(otel, scripted, runner, driver):
    """Rejections and timeouts are their own outcomes, not also counted as failures."""
    pipelines = [scripted(f"split-{mode}", mode) for mode in ("reject", "timeout")]
    for pipeline in pipelines:
        with pytest.raises(Exception):  # noqa: B017
            await runner(pipeline, driver, ok)
    values = {
        (p.attributes["resilience.policy"], p.attributes["resilience.outcome"]): p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes["resilience.policy"].startswith("split-")
    }
    assert values[("split-reject", "rejected")] == 1
    assert values[("split-reject", "failure")] == 0
    assert values[("split-timeout", "timeout")] == 1
    assert values[("split-timeout", "failure")] == 0


async def test_breaker_state_gauge_through_closed_open_half_open_closed(otel, clock):
    """The state gauge is 1 for the current state and 0 for the others, from creation on."""

    breaker = CircuitBreaker(
        "gauge-cb", CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0), clock=clock
    )

    def states() -> dict[str, int]:
        return {
            p.attributes["resilience.circuit_breaker.state"]: p.value
            for p in otel.points(sc.CB_STATE_METRIC)
            if p.attributes["resilience.name"] == "gauge-cb"
        }

    assert states() == {"closed": 1, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 0}
    with pytest.raises(ValueError, match="down"):
        breaker.call_sync(_fail)
    assert states() == {"closed": 0, "open": 1, "half_open": 0, "disabled": 0, "metrics_only": 0}
    clock.advance(10.0)
    assert states() == {"closed": 0, "open": 0, "half_open": 1, "disabled": 0, "metrics_only": 0}
    assert breaker.call_sync(ok) == 1
    assert states() == {"closed": 1, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 0}
    transitions = {
        (
            p.attributes["resilience.circuit_breaker.previous_state"],
            p.attributes["resilience.circuit_breaker.state"],
        ): p.value
        for p in otel.points(sc.CB_TRANSITIONS)
        if p.attributes["resilience.name"] == "gauge-cb" and p.value  # the other known transitions stay at 0
    }
    assert transitions == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}
    calls = {
        p.attributes["resilience.circuit_breaker.call_result"]: p.value
        for p in otel.points(sc.CB_CALLS)
        if p.attributes["resilience.name"] == "gauge-cb"
    }
    stats = breaker.get_stats()
    assert calls["success"] == stats["total_successes"] == 1
    assert calls["failure"] == stats["total_failures"] == 1


def _fail() -> None:
    raise ValueError("down")


async def test_collecting_the_state_gauge_moves_no_breaker_and_runs_no_callback(otel, clock):
    """A collection reads the state a call would see (half_open once the timer elapsed) without moving it.

    The SDK runs the callbacks of a collection under its own lock: a transition made there would
    run the breaker's on_state_change callbacks in the exporter's thread, under that lock (a
    callback that flushes the meter provider would never return), and report the transition
    from it. The next call makes the move, in its own thread, as when nobody collects.
    """
    breaker = CircuitBreaker(
        "peeked-cb", CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0), clock=clock
    )
    changes: list[tuple[str, str]] = []
    breaker.on_state_change(lambda change: changes.append((change.old, change.new)))
    with pytest.raises(ValueError, match="down"):
        breaker.call_sync(_fail)
    clock.advance(10.0)
    state = _point(otel, sc.CB_STATE_METRIC, {"resilience.name": "peeked-cb", sc.CB_STATE: "half_open"})
    assert state.value == 1
    assert changes == [("closed", "open")]
    assert breaker.peek_state() is CircuitState.HALF_OPEN
    assert breaker.call_sync(ok) == 1
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_windowed_breaker_gauges_and_would_be_trips_of_metrics_only(otel, clock):
    """What the dashboards and ResilienceCircuitBreakerWouldOpen read: the rates, the threshold, the state
    metrics_only, and each would-be trip as metrics_only -> metrics_only, after which the window is empty."""
    config = CircuitBreakerConfig(
        sliding_window=CountWindow(10), minimum_calls=4, failure_rate_threshold=0.5, slow_call_duration=1.0
    )
    shadow = CircuitBreaker("shadow-cb", config, clock=clock)
    plain = CircuitBreaker("plain-cb", CircuitBreakerConfig(), clock=clock)
    shadow.metrics_only()

    def gauge(name: str, breaker: str) -> list[float]:
        return [p.value for p in otel.points(name) if p.attributes["resilience.name"] == breaker]

    def slow() -> int:
        clock.advance(1.0)
        return 1

    assert shadow.call_sync(slow) == 1
    with pytest.raises(ValueError, match="down"):
        shadow.call_sync(_fail)
    assert gauge(sc.CB_FAILURE_RATE, "shadow-cb") == [0.5]
    assert gauge(sc.CB_SLOW_CALL_RATE, "shadow-cb") == [0.5]
    assert gauge(sc.CB_FAILURE_RATE_THRESHOLD, "shadow-cb") == [0.5]
    for name in (sc.CB_FAILURE_RATE, sc.CB_SLOW_CALL_RATE, sc.CB_FAILURE_RATE_THRESHOLD):
        assert gauge(name, "plain-cb") == []  # no sliding window, no rates
    assert plain.rates() is None
    for _ in range(2):  # 4 calls, 3 failed: the trip it would make
        with pytest.raises(ValueError, match="down"):
            shadow.call_sync(_fail)
    assert shadow.state is CircuitState.METRICS_ONLY
    states = {
        p.attributes["resilience.circuit_breaker.state"]: p.value
        for p in otel.points(sc.CB_STATE_METRIC)
        if p.attributes["resilience.name"] == "shadow-cb"
    }
    assert states == {"closed": 0, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 1}
    would = {
        p.attributes["resilience.circuit_breaker.transition_reason"]: p.value
        for p in otel.points(sc.CB_TRANSITIONS)
        if p.attributes["resilience.name"] == "shadow-cb"
        and p.attributes["resilience.circuit_breaker.previous_state"] == "metrics_only"
        and p.attributes["resilience.circuit_breaker.state"] == "metrics_only"
    }
    assert would == {"failure_threshold": 0, "failure_rate": 1, "slow_call_rate": 0}
    assert gauge(sc.CB_FAILURE_RATE, "shadow-cb") == [0.0]  # the window starts again: the saw-tooth


async def test_bulkhead_gauges_show_active_queued_and_limits(otel):
    """Active, queued and both limits are read from the live bulkhead."""

    bulkhead = Bulkhead("gauge-bh", BulkheadConfig(max_concurrent=1, max_waiting=3, timeout=5.0))
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    running = asyncio.create_task(bulkhead.execute(hold))
    await entered.wait()
    waiting = asyncio.create_task(bulkhead.execute(hold))
    await asyncio.sleep(0)

    def gauge(name: str) -> int:
        return _point(otel, name, {"resilience.name": "gauge-bh"}).value

    assert gauge(sc.BULKHEAD_ACTIVE) == 1
    assert gauge(sc.BULKHEAD_QUEUED) == 1
    assert gauge(sc.BULKHEAD_CONCURRENCY_LIMIT) == 1
    assert gauge(sc.BULKHEAD_QUEUE_LIMIT) == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(running, waiting), 5)
    assert gauge(sc.BULKHEAD_ACTIVE) == 0
    assert gauge(sc.BULKHEAD_QUEUED) == 0


async def test_bulkhead_rejection_counted_by_reason(otel):
    """A full bulkhead's rejection moves resilience.rejections with reason bulkhead_full."""

    bulkhead = Bulkhead("full-bh", BulkheadConfig(max_concurrent=1, max_waiting=0))
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> None:
        entered.set()
        await release.wait()

    running = asyncio.create_task(bulkhead.execute(hold))
    await entered.wait()
    with pytest.raises(BulkheadFullError):
        await bulkhead.execute(hold)
    release.set()
    await asyncio.wait_for(running, 5)
    point = _point(
        otel,
        sc.REJECTIONS,
        {
            "resilience.policy": "full-bh",
            "resilience.pattern": "bulkhead",
            "resilience.name": "full-bh",
            "resilience.rejection.reason": "bulkhead_full",
        },
    )
    assert point.value == 1
    outcomes = {s.attributes["resilience.outcome"]: s for s in otel.spans("full-bh")}
    assert set(outcomes) == {"success", "rejected"}
    # The bulkhead_full alert of the process-wide alert system may join the rejection's span.
    assert [e.name for e in outcomes["rejected"].events if e.name != sc.EV_ALERT] == [sc.EV_CALL_REJECTED]
    assert outcomes["success"].events == ()


class _BrokenBreaker:
    """A registry entry whose state cannot be read."""

    __slots__ = ("__weakref__",)

    name = "broken"

    def peek_state(self):
        raise RuntimeError("boom")

    @property
    def stats(self):
        raise RuntimeError("boom")

    @property
    def failure_rate_threshold(self):
        raise RuntimeError("boom")

    def rates(self):
        raise RuntimeError("boom")


async def test_failing_observable_callback_is_counted_not_raised(otel):
    """A callback that raises reports nothing for that collection and counts a telemetry error."""
    broken = _BrokenBreaker()
    BREAKERS.register(broken)
    try:
        before = otel.listener.errors
        otel.metrics()
        assert otel.listener.errors >= before + 2
        errors = otel.points(sc.TELEMETRY_ERRORS)
        assert errors[0].value == otel.listener.errors + HUB.errors
    finally:
        del broken


async def test_observables_report_nothing_after_uninstrument(otel):
    """After uninstrument the old listener's callbacks return no observations."""

    uninstrument()
    assert otel.listener.active is False
    assert otel.points(sc.EXECUTIONS) == []
    assert otel.points(sc.TELEMETRY_ERRORS) == []


async def test_same_named_breakers_share_series_by_one_rule(otel, alerts):
    """A standalone OPEN breaker beside a manager's CLOSED one of its name exports open, and summed calls."""
    manager = ResilienceManager(alert_system=alerts)
    names = [f"ml_service-{i}" for i in range(8)]  # several pairs: no registry order can hide the rule
    standalones = []
    for name in names:
        config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1), name=name)
        assert manager.execute_with_resilience_sync(ok, config) == 1
        standalone = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=1, timeout=60.0))
        with pytest.raises(ValueError, match="down"):
            standalone.call_sync(_fail)
        standalones.append(standalone)
        assert manager.get_circuit_breaker(name).get_stats()["state"] == "closed"
    for name in names:
        states = {
            p.attributes["resilience.circuit_breaker.state"]: p.value
            for p in otel.points(sc.CB_STATE_METRIC)
            if p.attributes["resilience.name"] == name
        }
        assert states == {"closed": 0, "open": 1, "half_open": 0, "disabled": 0, "metrics_only": 0}
        calls = {
            p.attributes["resilience.circuit_breaker.call_result"]: p.value
            for p in otel.points(sc.CB_CALLS)
            if p.attributes["resilience.name"] == name
        }
        assert calls["success"] == 1
        assert calls["failure"] == 1


async def test_a_new_keys_closed_breaker_never_hides_a_state_an_operator_set(otel, alerts):
    """A keyed policy's state series show a key's METRICS_ONLY (or DISABLED) breaker whatever key calls next.

    Its keys' breakers share the policy's name; the most recent one comes first. A CLOSED breaker
    of a key that calls afterwards must not hide the state an operator set on another key's: the
    shipped would-open alert reads the metrics_only series.
    """
    manager = ResilienceManager(alert_system=alerts)
    policy = manager.policy("tenants-trial", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))

    def states() -> dict[str, int]:
        return {
            p.attributes[sc.CB_STATE]: p.value
            for p in otel.points(sc.CB_STATE_METRIC)
            if p.attributes["resilience.name"] == "tenants-trial"
        }

    tried = policy.for_key("tenant-1").circuit_breaker
    assert tried is not None
    tried.metrics_only()
    policy.for_key("tenant-2").execute_sync(ok)
    assert states() == {"closed": 0, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 1}
    tried.disable()
    policy.for_key("tenant-3").execute_sync(ok)
    assert states() == {"closed": 0, "open": 0, "half_open": 0, "disabled": 1, "metrics_only": 0}
    opened = policy.for_key("tenant-4").circuit_breaker
    assert opened is not None
    opened.force_open()
    assert states() == {"closed": 0, "open": 1, "half_open": 0, "disabled": 0, "metrics_only": 0}


@pytest.mark.parametrize("first_disabled", [True, False])
def test_namesakes_disabled_and_metrics_only_export_metrics_only(otel, first_disabled):
    """Two live breakers of one name, one DISABLED and one METRICS_ONLY, export metrics_only in either order.

    The order is ``sc.CB_STATE_SEVERITY``, the one the dashboards' state timeline takes across
    instances too: a metrics_only breaker's would-be trips are what the would-open alert reads.
    """
    first, second = CircuitBreaker("split-mode"), CircuitBreaker("split-mode")
    (first if first_disabled else second).disable()
    (second if first_disabled else first).metrics_only()
    states = {
        p.attributes[sc.CB_STATE]: p.value
        for p in otel.points(sc.CB_STATE_METRIC)
        if p.attributes["resilience.name"] == "split-mode"
    }
    assert states == {"closed": 0, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 1}
    assert sc.CB_STATE_SEVERITY.index("metrics_only") > sc.CB_STATE_SEVERITY.index("disabled")


def test_a_second_live_breaker_or_bulkhead_of_a_name_is_logged(caplog):
    """Registering a breaker or bulkhead while a live namesake exists logs that their series combine; a unique name logs nothing."""
    first = CircuitBreaker("namesake-breaker")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        second = CircuitBreaker("namesake-breaker")
        pool = Bulkhead("namesake-pool")
        other_pool = Bulkhead("namesake-pool")
        CircuitBreaker("namesake-unique")
    warned = [r.getMessage() for r in caplog.records if "telemetry series are combined" in r.getMessage()]
    assert len(warned) == 2
    assert "circuit_breaker is named 'namesake-breaker'" in warned[0]
    assert "bulkhead is named 'namesake-pool'" in warned[1]
    assert first is not second
    assert pool is not other_pool


async def test_same_named_bulkheads_export_summed_gauges(otel):
    """Two live bulkheads of one name export one series: their limits summed."""
    first = Bulkhead("twin-bh", BulkheadConfig(max_concurrent=2, max_waiting=1))
    second = Bulkhead("twin-bh", BulkheadConfig(max_concurrent=3, max_waiting=1))
    assert _point(otel, sc.BULKHEAD_CONCURRENCY_LIMIT, {"resilience.name": "twin-bh"}).value == 5
    assert _point(otel, sc.BULKHEAD_QUEUE_LIMIT, {"resilience.name": "twin-bh"}).value == 2
    assert first.name == second.name


async def test_same_named_windowed_breakers_export_the_highest_rates_and_lowest_threshold(otel, clock):
    """Namesakes with windows report their highest rates and lowest threshold; a windowless one adds nothing."""
    loose = CircuitBreakerConfig(sliding_window=CountWindow(10), minimum_calls=10, failure_rate_threshold=0.9)
    tight = CircuitBreakerConfig(sliding_window=CountWindow(10), minimum_calls=10, failure_rate_threshold=0.4)
    calm = CircuitBreaker("twin-rates", loose, clock=clock)
    failing = CircuitBreaker("twin-rates", tight, clock=clock)
    windowless = CircuitBreaker("twin-rates", CircuitBreakerConfig(), clock=clock)
    assert calm.call_sync(ok) == 1
    for _ in range(3):
        with pytest.raises(ValueError, match="down"):
            failing.call_sync(_fail)
    assert failing.call_sync(ok) == 1
    only = {"resilience.name": "twin-rates"}
    assert _point(otel, sc.CB_FAILURE_RATE, only).value == pytest.approx(0.75)
    assert _point(otel, sc.CB_SLOW_CALL_RATE, only).value == 0
    assert _point(otel, sc.CB_FAILURE_RATE_THRESHOLD, only).value == pytest.approx(0.4)
    assert windowless.rates() is None


async def test_same_named_policies_in_two_managers_export_summed_executions(otel, alerts):
    """Two live pipelines of one policy name share its executions series: each outcome summed."""
    managers = [ResilienceManager(alert_system=alerts) for _ in range(2)]
    for calls, manager in enumerate(managers, start=1):
        for _ in range(calls):
            manager.execute_with_resilience_sync(ok, ResilienceConfig(name="twin-policy"))
    values = {
        p.attributes["resilience.outcome"]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes["resilience.policy"] == "twin-policy"
    }
    assert values == {outcome.value: 3 if outcome is Outcome.SUCCESS else 0 for outcome in Outcome}


async def test_evicted_policies_stop_being_exported(otel, alerts):
    """Only the manager's live policies are collected: evicted ones leave the exported series."""
    manager = ResilienceManager(max_policies=3, alert_system=alerts)
    for i in range(30):
        manager.execute_with_resilience_sync(ok, ResilienceConfig(name=f"churn-{i}"))
    gc.collect()
    exported = {
        p.attributes["resilience.policy"]
        for p in otel.points(sc.EXECUTIONS)
        if p.attributes["resilience.policy"].startswith("churn-")
    }
    live = set(manager.get_resilience_statistics()["policies"])
    assert exported == live
    assert len(live) <= 3
    assert manager.get_resilience_statistics()["executions"]["total"] == 30


async def test_per_call_unhashable_configs_keep_one_exported_series_moving(otel, alerts):
    """A config rebuilt per call with a dict default exports one executions series that counts every call."""
    manager = ResilienceManager(alert_system=alerts)

    def config() -> ResilienceConfig:
        return ResilienceConfig(
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
            ),
            name="per-call-dict",
        )

    for _ in range(1100):
        manager.execute_with_resilience_sync(ok, config())
    gc.collect()
    point = _point(
        otel,
        sc.EXECUTIONS,
        {
            "resilience.policy": "per-call-dict",
            "resilience.pattern": "pipeline",
            "resilience.outcome": "success",
        },
    )
    assert point.value == 1100
