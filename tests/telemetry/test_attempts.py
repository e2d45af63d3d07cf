"""Attempts as an on-call engineer reads them: every attempt timed, attempt numbers unique per
execution, and the cap on attempts in total visible as the retry's stop reason."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from opentelemetry import trace

from otel_resilience.engine.deadline import (
    DeadlineReachedError,
    WaitDeadlineReachedError,
    sleep_sync_within_deadline,
)
from otel_resilience.engine.events import TelemetryHub, TelemetrySource, error_type_name
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, RetryPolicy, RetryStrategy
from otel_resilience.patterns.timeout import fail_after
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.otel import OtelListener
from otel_resilience.testing import FakeClock

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


def _all_attributes(otel: Any) -> list[Any]:
    """Every attribute value the run exported: on spans, span events and metric points."""
    values: list[Any] = []
    for span in otel.spans():
        values += span.attributes.values()
        for event in span.events:
            values += event.attributes.values()
    for metric in otel.metrics().values():
        for point in metric.data.data_points:
            values += point.attributes.values()
    return values


@pytest.mark.parametrize("cut", ["retry", "retry-late-return", "recovery"])
async def test_an_attempt_an_enclosing_deadline_ends_is_a_timeout_in_both_drivers(
    otel, clock, driver, alerts, cut
):
    """The policy's total timeout ends the running second attempt: `timeout`, the caller's error type, no give-up.

    The dependency fails once, then is slower than the deadline: in a task the deadline's timer
    cancels the attempt, in a thread the attempt ends at the deadline (an engine wait it cut, or,
    under an attempt timeout, a return after it). Both drivers end the attempt's scope the same:
    outcome `timeout`, `error.type` the `OperationTimeoutError` the caller gets (never the
    engine's own deadline error), and the retry neither retries nor gives up on it (no
    `retry.exhausted`, and the execution's dependency error stays the dependency's own).
    """
    sync = driver == "sync"
    # The async deadline's timer runs on the loop's time: a short real one; the slow call moves the
    # fake clock past the deadline too. The sync deadline is only on the fake clock.
    scale = 1.0 if sync else 0.01
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        if sync and cut != "retry-late-return":
            sleep_sync_within_deadline(clock, 10.0, "dependency")  # until the deadline, as chaos's delay
        clock.advance(10.0)

    def late() -> str:
        step()
        return "late"

    async def hung() -> str:
        step()
        await asyncio.Event().wait()  # cancelled by the deadline's timer
        return "never"

    name = _fresh("cut")
    if cut == "recovery":
        manager = _recovering(clock, alerts, reruns=2)
        config = ResilienceConfig(name=name, enable_recovery=True, timeout=5.0 * scale)
        pattern = "recovery"
    else:
        # Under an attempt timeout the second attempt starts after a backoff: its own deadline is
        # later than the total one, which ends it.
        policy = RetryPolicy(
            max_attempts=3,
            strategy=RetryStrategy.FIXED,
            initial_delay=2.0 * scale,
            jitter=Jitter.NONE,
            attempt_timeout=4.0 * scale if cut == "retry-late-return" else None,
        )
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        config = ResilienceConfig(name=name, retry_policy=policy, timeout=5.0 * scale)
        pattern = "retry"
    with pytest.raises(OperationTimeoutError) as caught:
        if sync:
            manager.execute_with_resilience_sync(late, config)
        else:
            await manager.execute_with_resilience(hung, config)
    assert (caught.value.timeout, caught.value.scope) == (5.0 * scale, "total")
    assert len(calls) == 2
    timeout_type = "otel_resilience.errors.OperationTimeoutError"
    ended = {
        (p.attributes[sc.OUTCOME], p.attributes.get(sc.ERROR_TYPE)): p.count
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == name and p.attributes[sc.PATTERN] == pattern
    }
    first = (
        {("failure", "ConnectionError"): 1} if pattern == "retry" else {}
    )  # a re-run is the recovery's 2nd
    assert ended == {**first, ("timeout", timeout_type): 1}
    (attempt,) = otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)
    assert (attempt.attributes[sc.OUTCOME], attempt.attributes[sc.ERROR_TYPE]) == ("timeout", timeout_type)
    assert attempt.status.status_code is trace.StatusCode.ERROR
    execution = otel.span(name)
    assert (execution.attributes[sc.OUTCOME], execution.attributes[sc.ERROR_TYPE]) == (
        "timeout",
        timeout_type,
    )
    assert [e.name for e in execution.events if e.name == sc.EV_RETRY_EXHAUSTED] == []
    assert [
        p.value for p in otel.points(sc.RETRY_EXHAUSTED) if p.attributes[sc.POLICY] == name and p.value
    ] == []
    if pattern == "retry":
        assert execution.attributes[sc.DEPENDENCY_ERROR_TYPE] == "ConnectionError"
    assert not [v for v in _all_attributes(otel) if isinstance(v, str) and "engine.deadline" in v]


async def test_a_sync_policy_under_fail_after_names_the_timeout_the_caller_gets(otel, alerts):
    """A sync policy called in a coroutine under ``fail_after``: the deadline reached in the thread is named as the timeout.

    The attempt timeout's scope finds the earlier deadline of ``fail_after`` passed when the call
    returns, and ends it with the engine's deadline error, which ``fail_after`` raises as its own
    ``OperationTimeoutError``: the execution and its attempt are a `timeout` of that type.
    """
    clock = FakeClock(1000.0)
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    name = _fresh("under-fail-after")
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE, attempt_timeout=60.0)
    config = ResilienceConfig(name=name, retry_policy=policy)

    def late() -> str:
        clock.advance(10.0)
        return "late"

    with pytest.raises(OperationTimeoutError) as caught:
        async with fail_after(5.0, clock=clock, operation="caller"):
            manager.execute_with_resilience_sync(late, config)
    assert caught.value.operation == "caller"
    timeout_type = "otel_resilience.errors.OperationTimeoutError"
    execution = otel.span(name)
    assert (execution.attributes[sc.OUTCOME], execution.attributes[sc.ERROR_TYPE]) == (
        "timeout",
        timeout_type,
    )
    ended = {
        (p.attributes[sc.OUTCOME], p.attributes.get(sc.ERROR_TYPE))
        for p in otel.points(sc.ATTEMPT_DURATION)
        if p.attributes[sc.POLICY] == name
    }
    assert ended == {("timeout", timeout_type)}
    assert not [v for v in _all_attributes(otel) if isinstance(v, str) and "engine.deadline" in v]


def test_the_engine_deadline_errors_are_named_as_the_documented_timeout():
    """error.type never names the engine's own deadline errors: the documented timeout type does."""
    named = {
        error_type_name(kind("op", 1.0, "total"))
        for kind in (OperationTimeoutError, DeadlineReachedError, WaitDeadlineReachedError)
    }
    assert named == {sc.TIMEOUT_ERROR_TYPE}


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
