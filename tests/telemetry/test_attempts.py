"""Attempts as an on-call engineer reads them: every attempt timed, attempt numbers unique per
execution, and the cap on attempts in total visible as the retry's stop reason."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from opentelemetry import trace

from otel_resilience.engine.events import TelemetryHub, TelemetrySource
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.otel import OtelListener

_names = itertools.count()


def _fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _fixed(max_attempts: int) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts, strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE
    )


def _flaky(failures: int) -> Any:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= failures:
            raise ConnectionError("down")
        return "ok"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


async def _call(manager: ResilienceManager, config: ResilienceConfig, driver: str, fn: Any) -> Any:
    if driver == "sync":
        return manager.execute_with_resilience_sync(fn, config)

    async def wrapped() -> Any:
        return fn()

    return await manager.execute_with_resilience(wrapped, config)


def _recovering(clock: Any, alerts: AlertSystem, reruns: int) -> ResilienceManager:
    """A manager whose recovery re-runs a ConnectionError ``reruns`` times, without delay."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=reruns, delay=0.0)
    )
    return manager


async def test_a_first_attempt_is_timed_but_opens_no_span(otel, clock, driver, alerts):
    """A call that succeeds at once records its attempt duration, and its trace is the execution span alone."""
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    name = _fresh("first")
    config = ResilienceConfig(name=name, retry_policy=_fixed(3))
    assert await _call(manager, config, driver, _flaky(0)) == "ok"
    points = [p for p in otel.points(sc.ATTEMPT_DURATION) if p.attributes[sc.POLICY] == name]
    assert [(p.attributes[sc.OUTCOME], p.attributes[sc.PATTERN], p.count) for p in points] == [
        ("success", "retry", 1)
    ]
    assert [s.name for s in otel.spans()] == [name]


async def test_attempt_spans_are_numbered_uniquely_across_recovery_reruns(otel, clock, driver, alerts):
    """Retry attempts and the recovery re-run of one execution carry attempt numbers 2, 3, 4: none twice."""
    manager = _recovering(clock, alerts, reruns=1)
    name = _fresh("unique")
    config = ResilienceConfig(name=name, retry_policy=_fixed(2), enable_recovery=True)
    assert await _call(manager, config, driver, _flaky(3)) == "ok"
    attempts = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert sorted(s.attributes[sc.ATTEMPT] for s in attempts) == [2, 3, 4]
    execution = otel.span(name)
    scheduled = [e.attributes[sc.ATTEMPT] for e in execution.events if e.name == sc.EV_RETRY_SCHEDULED]
    exhausted = [e.attributes[sc.ATTEMPT] for e in execution.events if e.name == sc.EV_RETRY_EXHAUSTED]
    assert (scheduled, exhausted) == ([1, 3], [2])
    durations = {
        p.attributes[sc.OUTCOME]: p.count
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == name
    }
    assert durations == {"failure": 3, "success": 1}


async def test_a_recovery_rerun_without_a_retry_is_an_attempt_of_its_own(otel, clock, driver, alerts):
    """With no retry inside to open it, the recovery opens each re-run's attempt scope: its span and duration.

    Attempts 2 and 3 are child spans of the execution, as a retry's are, made by the recovery
    (``resilience.pattern`` ``recovery``); the first run is the execution's own, as always.
    """
    manager = _recovering(clock, alerts, reruns=2)
    name = _fresh("rerun-only")
    config = ResilienceConfig(name=name, enable_recovery=True)
    assert await _call(manager, config, driver, _flaky(2)) == "ok"
    execution = otel.span(name)
    attempts = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert sorted(
        (s.attributes[sc.ATTEMPT], s.attributes[sc.OUTCOME], s.attributes[sc.PATTERN]) for s in attempts
    ) == [(2, "failure", "recovery"), (3, "success", "recovery")]
    assert all(s.parent is not None and s.parent.span_id == execution.context.span_id for s in attempts)
    durations = {
        (p.attributes[sc.PATTERN], p.attributes[sc.OUTCOME]): p.count
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == name
    }
    assert durations == {("recovery", "failure"): 1, ("recovery", "success"): 1}


async def test_a_restart_hook_runs_before_its_reruns_attempt_opens(otel, clock, driver, alerts):
    """A RESTART's hook is not part of the attempt: the re-run's span opens once the hook returned."""
    seen: list[str] = []

    def restart() -> None:
        seen.append(getattr(trace.get_current_span(), "name", ""))

    manager = ResilienceManager(clock=clock, alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(strategy=RecoveryStrategy.RESTART, max_attempts=1, delay=0.0, restart_hook=restart),
    )
    name = _fresh("restarted")
    config = ResilienceConfig(name=name, enable_recovery=True)
    assert await _call(manager, config, driver, _flaky(1)) == "ok"
    assert seen == [name]
    (attempt,) = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert (attempt.attributes[sc.ATTEMPT], attempt.attributes[sc.OUTCOME]) == (2, "success")


async def test_the_total_cap_is_the_retry_stop_reason(otel, clock, driver, alerts):
    """A retry stopped by max_attempts_total says so on the span event and on the exhausted counter."""
    manager = _recovering(clock, alerts, reruns=2)
    name = _fresh("capped")
    config = ResilienceConfig(name=name, retry_policy=_fixed(3), enable_recovery=True, max_attempts_total=2)
    fn = _flaky(10)
    with pytest.raises(ConnectionError):
        await _call(manager, config, driver, fn)
    assert fn.calls == [2]
    execution = otel.span(name)
    reasons = [
        e.attributes[sc.RETRY_STOP_REASON] for e in execution.events if e.name == sc.EV_RETRY_EXHAUSTED
    ]
    assert reasons == ["max_attempts_total"]
    exhausted = [p for p in otel.points(sc.RETRY_EXHAUSTED) if p.attributes[sc.POLICY] == name and p.value]
    assert [(p.attributes[sc.RETRY_STOP_REASON], p.value) for p in exhausted] == [("max_attempts_total", 1)]
    recoveries = [p for p in otel.points(sc.RECOVERY_ATTEMPTS) if p.attributes[sc.POLICY] == name and p.value]
    assert [(p.attributes[sc.RECOVERY_RESULT], p.value) for p in recoveries] == [("failure", 1)]


async def test_the_exhausted_counter_counts_each_give_up_and_says_so(otel, clock, driver, alerts):
    """A recovery re-run whose retry gives up again counts again: the instrument counts give-ups.

    One execution, two runs of its retry that ran out (the first, then the recovery's re-run):
    two give-ups, as the span's two events and the budget's denials (one per denied retry) count
    them. The instrument's unit and description say what it counts: give-ups, not executions.
    """
    manager = _recovering(clock, alerts, reruns=1)
    name = _fresh("regiven")
    config = ResilienceConfig(name=name, retry_policy=_fixed(2), enable_recovery=True)
    fn = _flaky(10)
    with pytest.raises(ConnectionError):
        await _call(manager, config, driver, fn)
    assert fn.calls == [4]
    events = [e for e in otel.span(name).events if e.name == sc.EV_RETRY_EXHAUSTED]
    assert len(events) == 2
    exhausted = [p for p in otel.points(sc.RETRY_EXHAUSTED) if p.attributes[sc.POLICY] == name and p.value]
    assert [(p.attributes[sc.RETRY_STOP_REASON], p.value) for p in exhausted] == [("max_attempts", 2)]
    executions = [p.value for p in otel.points(sc.EXECUTIONS) if p.attributes[sc.POLICY] == name]
    assert sum(executions) == 1
    metric = otel.metrics()[sc.RETRY_EXHAUSTED]
    assert metric.unit == "{give_up}"
    assert metric.description.startswith("Times a retry gave up")
    assert "not per execution" in metric.description


def test_the_total_cap_is_a_documented_stop_reason():
    """max_attempts_total is one of the stop reason values the reference documents."""
    assert "max_attempts_total" in sc.RETRY_STOP_REASONS


def test_a_listener_awake_again_without_sdk_leaves_the_attempt_path_at_its_first_attempt():
    """With no SDK, a listener the hub has awake again (re-added) goes back to sleep when asked to time an attempt."""
    hub = TelemetryHub()
    listener = OtelListener(hub=hub)
    hub.add_listener(listener)
    source = TelemetrySource("retry", "sleepy")
    assert listener.start_execution(source, "op") is None  # the first call reads the environment
    assert listener.start_execution(source, "op") is None  # no SDK: the listener sleeps
    assert hub.attempt_listeners == ()
    hub.add_listener(listener)  # telemetry switched off and on again: awake on the hub
    assert hub.attempt_listeners == (listener,)
    assert listener.start_attempt(source, "op", 1) is None
    assert hub.attempt_listeners == ()
