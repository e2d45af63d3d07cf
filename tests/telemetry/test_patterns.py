"""Every pattern through the real manager: exact span, event, metric and log output."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from otel_support import instrumented

from otel_resilience.errors import BulkheadFullError, CircuitOpenError, OperationTimeoutError
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem, default_alert_system
from otel_resilience.patterns.bulkhead import BulkheadConfig
from otel_resilience.patterns.circuit_breaker import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
)
from otel_resilience.patterns.fallback import FallbackConfig, FallbackStrategy
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import semconv as sc


@pytest.fixture
def alerts(clock):
    """The only alert system on the global hub (closed afterwards), so alerts are attributed to it."""
    default_alert_system().close()
    system = AlertSystem(clock=clock, name="tel-alerts")
    yield system
    system.close()


@pytest.fixture
def manager(clock, alerts):
    """A manager on the fake clock with its own recovery system and alert system."""
    return ResilienceManager(
        clock=clock,
        alert_system=alerts,
        recovery_system=ErrorRecoverySystem("tel-recovery", clock=clock),
    )


async def call(manager: ResilienceManager, config: ResilienceConfig, driver: str, fn: Any) -> Any:
    """Run ``fn`` (sync) under ``config`` with the async or the sync driver."""
    if driver == "sync":
        return manager.execute_with_resilience_sync(fn, config)

    async def wrapped() -> Any:
        return fn()

    return await manager.execute_with_resilience(wrapped, config)


def script(*steps: object):
    """A function that raises or returns the next step on every call."""
    it = iter(steps)

    def fn() -> object:
        step = next(it)
        if isinstance(step, BaseException):
            raise step
        return step

    return fn


def fixed(max_attempts: int, delay: float = 0.5) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=max_attempts, strategy=RetryStrategy.FIXED, initial_delay=delay, jitter=Jitter.NONE
    )


def event_names(span) -> list[str]:
    return [e.name for e in span.events]


async def test_retry_then_success(otel, manager, driver):
    """A call that succeeds on attempt 2 is 'recovered', not an error; the backoff is a span event."""
    config = ResilienceConfig(name="tel-retry", retry_policy=fixed(3))
    assert await call(manager, config, driver, script(ConnectionError("down"), "ok")) == "ok"
    execution = otel.span("tel-retry")
    assert execution.attributes["resilience.outcome"] == "recovered"
    assert execution.status.status_code is StatusCode.UNSET
    assert event_names(execution) == [sc.EV_RETRY_SCHEDULED]
    assert dict(execution.events[0].attributes) == {
        "resilience.pattern": "retry",
        "resilience.name": "tel-retry",
        "resilience.attempt": 1,
        "resilience.retry.delay": 0.5,
        "resilience.retry.delay_source": "strategy",
        "error.type": "ConnectionError",
    }
    attempt = otel.span("tel-retry attempt")
    assert attempt.parent.span_id == execution.context.span_id
    assert attempt.attributes["resilience.attempt"] == 2
    assert attempt.attributes["resilience.outcome"] == "success"
    retry_attrs = {"resilience.policy": "tel-retry", "resilience.name": "tel-retry"}
    assert otel.point(sc.RETRIES, **_k(retry_attrs, **{"error.type": "ConnectionError"})).value == 1
    delay = otel.point(sc.RETRY_DELAY_METRIC, **_k(retry_attrs))
    assert (delay.count, delay.sum) == (1, 0.5)
    duration = otel.point(sc.EXECUTION_DURATION, **_k(_pipeline("tel-retry", "recovered")))
    assert duration.count == 1


async def test_exhausted_retries(otel, manager, driver):
    """Exhausted retries fail the execution; each failed attempt span is ERROR with error.type."""
    config = ResilienceConfig(name="tel-exhaust", retry_policy=fixed(3))
    failing = script(*(ConnectionError(str(i)) for i in range(3)))
    with pytest.raises(ConnectionError):
        await call(manager, config, driver, failing)
    execution = otel.span("tel-exhaust")
    assert execution.status.status_code is StatusCode.ERROR
    assert execution.attributes["error.type"] == "ConnectionError"
    assert event_names(execution) == [sc.EV_RETRY_SCHEDULED, sc.EV_RETRY_SCHEDULED, sc.EV_RETRY_EXHAUSTED]
    assert execution.events[2].attributes["resilience.retry.stop_reason"] == "max_attempts"
    attempts = otel.spans("tel-exhaust attempt")
    assert [s.attributes["resilience.attempt"] for s in attempts] == [2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert all(s.attributes["error.type"] == "ConnectionError" for s in attempts)
    exhausted = otel.point(
        sc.RETRY_EXHAUSTED,
        **_k(
            {"resilience.policy": "tel-exhaust", "resilience.name": "tel-exhaust"},
            **{"resilience.retry.stop_reason": "max_attempts", "error.type": "ConnectionError"},
        ),
    )
    assert exhausted.value == 1


async def test_breaker_cycle_rejection_and_alert(otel, manager, clock, alerts, driver):
    """closed -> open (alert) -> rejection -> half-open -> closed, on spans, metrics and logs."""

    config = ResilienceConfig(
        name="tel-cb",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=30.0),
    )
    for _ in range(2):
        with pytest.raises(OSError, match="io"):
            await call(manager, config, driver, script(OSError("io")))
    with pytest.raises(CircuitOpenError):
        await call(manager, config, driver, script("never"))
    clock.advance(30.0)
    assert await call(manager, config, driver, script("ok")) == "ok"

    first, tripping, rejected, probe = otel.spans("tel-cb")
    assert event_names(first) == []
    assert event_names(tripping) == [sc.EV_STATE_CHANGED, sc.EV_ALERT]
    assert tripping.events[0].attributes["resilience.circuit_breaker.state"] == "open"
    assert tripping.events[0].attributes["resilience.circuit_breaker.open_duration"] == 30.0
    assert all("resilience.circuit_breaker.open_duration" not in e.attributes for e in probe.events)
    assert tripping.events[1].attributes["resilience.alert.kind"] == "circuit_open"
    assert rejected.attributes["resilience.outcome"] == "rejected"
    assert rejected.status.status_code is StatusCode.ERROR
    assert event_names(rejected) == [sc.EV_CALL_REJECTED]
    assert rejected.events[0].attributes["resilience.rejection.reason"] == "circuit_open"
    assert [dict(e.attributes)["resilience.circuit_breaker.state"] for e in probe.events] == [
        "half_open",
        "closed",
    ]
    assert probe.attributes["resilience.outcome"] == "success"

    states = {
        p.attributes["resilience.circuit_breaker.state"]: p.value
        for p in otel.points(sc.CB_STATE_METRIC)
        if p.attributes["resilience.name"] == "tel-cb"
    }
    assert states == {"closed": 1, "open": 0, "half_open": 0, "disabled": 0, "metrics_only": 0}
    transitions = {
        (
            p.attributes["resilience.circuit_breaker.previous_state"],
            p.attributes["resilience.circuit_breaker.state"],
        ): p.value
        for p in otel.points(sc.CB_TRANSITIONS)
        if p.attributes["resilience.name"] == "tel-cb" and p.value  # the other known transitions stay at 0
    }
    assert transitions == {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}
    rejections = otel.point(
        sc.REJECTIONS,
        **_k(
            {
                "resilience.policy": "tel-cb",
                "resilience.pattern": "circuit_breaker",
                "resilience.name": "tel-cb",
            },
            **{"resilience.rejection.reason": "circuit_open"},
        ),
    )
    assert rejections.value == 1
    (alert,) = alerts.history
    alert_point = otel.point(
        sc.ALERTS,
        **_k(
            {"resilience.name": "tel-alerts"},
            **{
                "resilience.alert.kind": "circuit_open",
                "resilience.alert.severity": alert.severity.value,
                "resilience.alert.subject": "tel-cb",
            },
        ),
    )
    assert alert_point.value == 1
    (log,) = [r for r in otel.logs() if r.event_name == sc.EV_ALERT]
    assert log.body == alert.summary
    assert log.trace_id == tripping.context.trace_id


async def test_bulkhead_rejection(otel, manager):
    """A full bulkhead rejects: span outcome rejected, reason bulkhead_full, gauges and counter."""

    config = ResilienceConfig(name="tel-bh", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    release = asyncio.Event()
    entered = asyncio.Event()

    async def hold() -> str:
        entered.set()
        await release.wait()
        return "done"

    running = asyncio.create_task(manager.execute_with_resilience(hold, config))
    await entered.wait()
    assert otel.point(sc.BULKHEAD_ACTIVE, resilience__name="tel-bh").value == 1
    with pytest.raises(BulkheadFullError):
        await manager.execute_with_resilience(hold, config)
    release.set()
    assert await asyncio.wait_for(running, 5) == "done"
    outcomes = {s.attributes["resilience.outcome"]: s for s in otel.spans("tel-bh")}
    assert set(outcomes) == {"success", "rejected"}
    assert outcomes["rejected"].events[0].name == sc.EV_CALL_REJECTED
    assert outcomes["rejected"].events[0].attributes["resilience.rejection.reason"] == "bulkhead_full"
    point = otel.point(
        sc.REJECTIONS,
        **_k(
            {"resilience.policy": "tel-bh", "resilience.pattern": "bulkhead", "resilience.name": "tel-bh"},
            **{"resilience.rejection.reason": "bulkhead_full"},
        ),
    )
    assert point.value == 1
    assert otel.point(sc.BULKHEAD_ACTIVE, resilience__name="tel-bh").value == 0


async def test_total_timeout(otel, alerts):
    """An expired total deadline is outcome timeout (ERROR) with a timeout span event and counter."""
    manager = ResilienceManager(alert_system=alerts)
    config = ResilienceConfig(name="tel-timeout", timeout=0.05)

    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(OperationTimeoutError):
        await manager.execute_with_resilience(slow, config)
    span = otel.span("tel-timeout")
    assert span.attributes["resilience.outcome"] == "timeout"
    assert span.attributes["error.type"] == "otel_resilience.errors.OperationTimeoutError"
    assert span.status.status_code is StatusCode.ERROR
    assert event_names(span) == [sc.EV_TIMEOUT]
    assert dict(span.events[0].attributes) == {
        "resilience.pattern": "timeout",
        "resilience.name": "tel-timeout",
        "resilience.timeout.scope": "total",
        "resilience.timeout.limit": 0.05,
    }
    point = otel.point(
        sc.TIMEOUTS,
        **_k(
            {
                "resilience.policy": "tel-timeout",
                "resilience.pattern": "timeout",
                "resilience.name": "tel-timeout",
            },
            **{"resilience.timeout.scope": "total"},
        ),
    )
    assert point.value == 1


class DictCache:
    """A minimal cache service."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def _fallbacks() -> list[tuple[str, FallbackConfig, list[object], object]]:
    def broken(*_args: object) -> None:
        raise RuntimeError("also down")

    return [
        (
            "default_value",
            FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="dflt"),
            [],
            "dflt",
        ),
        (
            "alternative_function",
            FallbackConfig(
                strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=lambda _e: "alt"
            ),
            [],
            "alt",
        ),
        (
            "cached_value",
            FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=DictCache()),
            ["cached"],
            "cached",
        ),
        (
            "multiple_attempts",
            FallbackConfig(
                strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=(broken, lambda: "second")
            ),
            [],
            "second",
        ),
    ]


@pytest.mark.parametrize(
    ("strategy", "fallback", "warmup", "expected"), _fallbacks(), ids=lambda v: str(v)[:20]
)
async def test_each_fallback_strategy(otel, manager, driver, *, strategy, fallback, warmup, expected):
    """A fallback answer is outcome fallback (not an error) with a fallback.executed event."""
    config = ResilienceConfig(name=f"tel-fb-{strategy}", fallback_config=fallback)
    for value in warmup:
        assert await call(manager, config, driver, script(value)) == value
    assert await call(manager, config, driver, script(ValueError("bad"))) == expected
    span = otel.spans(f"tel-fb-{strategy}")[-1]
    assert span.attributes["resilience.outcome"] == "fallback"
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in span.attributes
    (event,) = [e for e in span.events if e.name == sc.EV_FALLBACK]
    assert dict(event.attributes) == {
        "resilience.pattern": "fallback",
        "resilience.name": f"tel-fb-{strategy}",
        "resilience.fallback.strategy": strategy,
        "resilience.fallback.result": "success",
        "error.type": "ValueError",
    }
    point = otel.point(
        sc.FALLBACK_EXECUTIONS,
        **_k(
            {"resilience.policy": f"tel-fb-{strategy}", "resilience.name": f"tel-fb-{strategy}"},
            **{
                "resilience.fallback.strategy": strategy,
                "resilience.fallback.result": "success",
                "error.type": "ValueError",
            },
        ),
    )
    assert point.value == 1
    assert otel.point(sc.EXECUTION_DURATION, **_k(_pipeline(f"tel-fb-{strategy}", "fallback"))).count == 1


@pytest.mark.parametrize(
    ("steps", "result"),
    [((ConnectionError("a"), "ok"), "success"), ((ConnectionError("a"), ConnectionError("b")), "failure")],
)
async def test_recovery_success_and_failure(otel, manager, driver, steps, result):
    """A recovery rule's action is a span event and a counter by strategy and result."""
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    config = ResilienceConfig(name="tel-recovery-policy", enable_recovery=True)
    fn = script(*steps)
    if result == "success":
        assert await call(manager, config, driver, fn) == "ok"
    else:
        with pytest.raises(ConnectionError):
            await call(manager, config, driver, fn)
    span = otel.span("tel-recovery-policy")
    (event,) = [e for e in span.events if e.name == sc.EV_RECOVERY]
    assert dict(event.attributes) == {
        "resilience.pattern": "recovery",
        "resilience.name": "tel-recovery",
        "resilience.recovery.strategy": "retry",
        "resilience.recovery.result": result,
        "error.type": "ConnectionError",
    }
    assert span.attributes["resilience.outcome"] == ("recovered" if result == "success" else "failure")
    point = otel.point(
        sc.RECOVERY_ATTEMPTS,
        **_k(
            {"resilience.policy": "tel-recovery-policy", "resilience.name": "tel-recovery"},
            **{
                "resilience.recovery.strategy": "retry",
                "resilience.recovery.result": result,
                "error.type": "ConnectionError",
            },
        ),
    )
    assert point.value == 1
    stats = manager.recovery_system.get_stats()
    key = "successful" if result == "success" else "failed"
    assert stats["by_strategy"]["retry"][key] == 1


async def test_an_error_pattern_is_counted_under_the_policy_the_calls_ran_in(otel, clock, alerts, driver):
    """An error pattern detected in a policy's calls carries that policy in ``resilience.policy``.

    The Alertmanager example mutes ResilienceErrorPatternRepeated by ``resilience_policy`` (an
    open breaker of that policy, a chaos drill on it): the series must name the policy, as
    ``resilience.recovery.attempts`` of the same calls does, not the recovery system.
    """
    recovery = ErrorRecoverySystem("tel-patterns", clock=clock, pattern_threshold=2)
    manager = ResilienceManager(clock=clock, alert_system=alerts, recovery_system=recovery)
    config = ResilienceConfig(name="tel-pattern-policy", enable_recovery=True)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await call(manager, config, driver, script(ConnectionError("down")))
    point = otel.point(
        sc.ERROR_PATTERNS,
        **_k(
            {"resilience.policy": "tel-pattern-policy", "resilience.name": "tel-patterns"},
            **{"error.type": "ConnectionError", "resilience.operation": "tel-pattern-policy"},
        ),
    )
    assert point.value == 1
    (alert,) = [a for a in alerts.history if a.kind.value == "error_pattern"]
    assert alert.attributes["pipeline"] == "tel-pattern-policy"


def _namesake(module: str) -> Any:
    """A function named ``fetch`` of module ``module`` (as ``users.fetch`` and ``orders.fetch`` are)."""
    namespace: dict[str, Any] = {"__name__": module}
    exec("def fetch():\n    raise ConnectionError(" + repr(module) + ")\n", namespace)
    return namespace["fetch"]


def test_the_patterns_of_two_modules_namesakes_are_two_series_naming_their_module(otel, clock, alerts):
    """``users.fetch`` and ``orders.fetch`` are two patterns: two series, each with its module.

    Both operations are named ``fetch``: counted on one series, the two patterns read as one
    operation's two, and ResilienceErrorPatternRepeated could not say which function fails.
    """
    recovery = ErrorRecoverySystem("tel-namesakes", clock=clock, pattern_threshold=2)
    for module in ("users", "orders"):
        fetch = _namesake(module)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                recovery.execute_sync(fetch)
    found = {
        dict(p.attributes).get(sc.OPERATION_MODULE): p.value
        for p in otel.points(sc.ERROR_PATTERNS)
        if dict(p.attributes)[sc.NAME] == "tel-namesakes"
    }
    assert found == {"users": 1, "orders": 1}
    assert {dict(p.attributes)[sc.OPERATION] for p in otel.points(sc.ERROR_PATTERNS)} >= {"fetch"}


def test_the_log_records_of_two_modules_namesakes_patterns_name_their_module(otel, clock, alerts):
    """The ``resilience.error_pattern.detected`` log record says where, as the span event does.

    Its body says which error, where and how often: for ``users.fetch`` and ``orders.fetch`` both
    records read ``... in 'fetch'``, the same line twice, and carried no module attribute, while
    the span event, the metric and the alert named the module.
    """
    recovery = ErrorRecoverySystem("tel-namesake-logs", clock=clock, pattern_threshold=2)
    for module in ("users", "orders"):
        fetch = _namesake(module)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                recovery.execute_sync(fetch)
    records = [
        r
        for r in otel.logs()
        if r.event_name == sc.EV_PATTERN and r.attributes[sc.NAME] == "tel-namesake-logs"
    ]
    assert [(r.body, r.attributes.get(sc.OPERATION_MODULE)) for r in records] == [
        ("ConnectionError repeated 2 times within 60 s in 'fetch' (module 'users')", "users"),
        ("ConnectionError repeated 2 times within 60 s in 'fetch' (module 'orders')", "orders"),
    ]


def test_a_pattern_of_an_operation_not_named_after_a_function_has_no_module(otel, clock, alerts):
    """A policy's or a caller's operation name is no function's: its pattern carries no module."""
    recovery = ErrorRecoverySystem("tel-no-module", clock=clock, pattern_threshold=2)
    for _ in range(2):
        with pytest.raises(KeyError):
            recovery.recover_from_error_sync(KeyError("k"), {"operation_name": "lookup"})
    (point,) = [p for p in otel.points(sc.ERROR_PATTERNS) if dict(p.attributes)[sc.NAME] == "tel-no-module"]
    assert sc.OPERATION_MODULE not in dict(point.attributes)
    (record,) = [
        r for r in otel.logs() if r.event_name == sc.EV_PATTERN and r.attributes[sc.NAME] == "tel-no-module"
    ]
    assert sc.OPERATION_MODULE not in dict(record.attributes)
    assert record.body == "KeyError repeated 2 times within 60 s in 'lookup'"


async def test_pattern_used_alone_opens_its_own_span(otel, clock):
    """A breaker used alone is its own execution span (pattern circuit_breaker, policy = its name)."""

    breaker = CircuitBreaker("tel-alone", clock=clock)
    assert await breaker.call(asyncio.sleep, 0, "x") == "x"
    span = otel.span("tel-alone")
    assert dict(span.attributes) == {
        "resilience.policy": "tel-alone",
        "resilience.pattern": "circuit_breaker",
        "resilience.outcome": "success",
    }


def _k(base: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Attributes as ``Otel.point`` keyword arguments (dots spelled ``__``)."""
    return {key.replace(".", "__"): value for key, value in {**base, **extra}.items()}


def _pipeline(policy: str, outcome: str) -> dict[str, str]:
    return {"resilience.policy": policy, "resilience.pattern": "pipeline", "resilience.outcome": outcome}


def test_a_slow_call_is_a_success_in_its_span_even_when_it_trips_the_breaker(otel, clock):
    """Issue 15: a call slower than slow_call_duration is counted as slow, but its span says success
    (status unset, outcome success); the one that trips on the slow-call rate carries the OPEN event."""
    config = CircuitBreakerConfig(
        sliding_window=CountWindow(2),
        minimum_calls=2,
        slow_call_duration=1.0,
        slow_call_rate_threshold=1.0,
    )
    breaker = CircuitBreaker("tel-slow", config, clock=clock)

    def slow() -> str:
        clock.advance(2.0)
        return "slow"

    assert breaker.call_sync(slow) == "slow"
    assert breaker.call_sync(slow) == "slow"
    assert breaker.state is CircuitState.OPEN
    first, tripping = otel.spans("tel-slow")
    for span in (first, tripping):
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes["resilience.outcome"] == "success"
        assert "error.type" not in span.attributes
    assert event_names(first) == []
    changed = [e for e in tripping.events if e.name == sc.EV_STATE_CHANGED]
    assert [e.attributes["resilience.circuit_breaker.state"] for e in changed] == ["open"]
    assert changed[0].attributes["resilience.circuit_breaker.transition_reason"] == "slow_call_rate"


@pytest.mark.parametrize("alerts_first", [True, False], ids=["alerts-first", "instrumented-first"])
async def test_an_alert_is_recorded_after_its_cause_whatever_listens_first(clock, alerts_first):
    """A span shows the state change or rejection before the alert it raised, whichever of the alert
    system and the SDK listener was registered first."""
    default_alert_system().close()
    with contextlib.ExitStack() as stack:
        if alerts_first:
            alerts = stack.enter_context(AlertSystem(clock=clock, name="order-alerts"))
            otel = stack.enter_context(instrumented())
        else:
            otel = stack.enter_context(instrumented())
            alerts = stack.enter_context(AlertSystem(clock=clock, name="order-alerts"))
        manager = ResilienceManager(clock=clock, alert_system=alerts)
        breaker = ResilienceConfig(name="order-cb", circuit_breaker=CircuitBreakerConfig(failure_threshold=1))
        with pytest.raises(OSError, match="io"):
            await call(manager, breaker, "async", script(OSError("io")))
        (tripping,) = otel.spans("order-cb")
        assert event_names(tripping) == [sc.EV_STATE_CHANGED, sc.EV_ALERT]

        config = ResilienceConfig(
            name="order-bh", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0)
        )
        release = asyncio.Event()
        entered = asyncio.Event()

        async def hold() -> str:
            entered.set()
            await release.wait()
            return "done"

        running = asyncio.create_task(manager.execute_with_resilience(hold, config))
        await entered.wait()
        with pytest.raises(BulkheadFullError):
            await manager.execute_with_resilience(hold, config)
        release.set()
        assert await asyncio.wait_for(running, 5) == "done"
        rejected = next(s for s in otel.spans("order-bh") if s.attributes["resilience.outcome"] == "rejected")
        assert event_names(rejected) == [sc.EV_CALL_REJECTED, sc.EV_ALERT]
        assert [a.kind.value for a in alerts.history] == ["circuit_open", "bulkhead_full"]
