"""Chaos with the OpenTelemetry SDK: every injection is a marked span event and a counted drill."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest

from otel_resilience import (
    Chaos,
    ChaosConfig,
    ChaosSwitch,
    CircuitBreakerConfig,
    CircuitOpenError,
    FallbackConfig,
    FallbackStrategy,
    Jitter,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.patterns.chaos.rules import FAULT, LATENCY, OUTCOME
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

_ids = itertools.count()


def _series(policy: str, kind: str, name: str | None = None) -> dict[str, str]:
    """The injections series of ``kind`` in ``policy``, as ``Otel.point`` keyword arguments."""
    return {
        "resilience__policy": policy,
        "resilience__name": name or policy,
        "resilience__chaos__kind": kind,
    }


def _chaos_events(span: Any) -> list[dict[str, Any]]:
    return [dict(event.attributes) for event in span.events if event.name == sc.EV_CHAOS_INJECTED]


async def test_an_injected_fault_marks_each_attempt_span_and_is_counted(otel: Any, driver: str) -> None:
    """Two attempts, both failed by chaos: each attempt's span carries the fault event; the counter says 2."""
    manager = ResilienceManager(clock=FakeClock())
    name = f"drill-{next(_ids)}"
    config = ResilienceConfig(
        name=name,
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError),
    )

    def dependency() -> str:
        return "real"

    async def dependency_async() -> str:
        return "real"

    if driver == "sync":
        assert manager.execute_with_resilience_sync(dependency, config) == "degraded"
    else:
        assert await manager.execute_with_resilience(dependency_async, config) == "degraded"
    fault = {
        "resilience.pattern": "chaos",
        "resilience.name": name,
        "resilience.chaos.kind": "fault",
        "error.type": "ConnectionError",
    }
    assert _chaos_events(otel.span(name)) == [fault]  # attempt 1 runs in the execution span
    assert [_chaos_events(span) for span in otel.spans(name + sc.ATTEMPT_SPAN_SUFFIX)] == [[fault]]
    assert otel.point(sc.CHAOS_INJECTIONS, **_series(name, "fault")).value == 2
    assert otel.point(sc.CHAOS_INJECTIONS, **_series(name, "latency")).value == 0
    assert otel.point(sc.CHAOS_INJECTIONS, **_series(name, "outcome")).value == 0


async def test_a_delay_and_a_result_are_marked_with_their_kind(otel: Any, driver: str) -> None:
    """A delayed fake answer: two events on the span, the delay with its seconds, then the result."""
    chaos = Chaos(
        "fake-api",
        ChaosConfig(latency_rate=1.0, latency=1.5, outcome_rate=1.0, outcome="fake"),
        clock=FakeClock(),
    )

    async def dependency() -> str:
        return "real"

    result = chaos.call_sync(lambda: "real") if driver == "sync" else await chaos.call(dependency)
    assert result == "fake"
    span = otel.span("fake-api")
    assert span.attributes[sc.OUTCOME] == "success"
    assert _chaos_events(span) == [
        {
            "resilience.pattern": "chaos",
            "resilience.name": "fake-api",
            "resilience.chaos.kind": "latency",
            "resilience.chaos.delay": 1.5,
        },
        {"resilience.pattern": "chaos", "resilience.name": "fake-api", "resilience.chaos.kind": "outcome"},
    ]
    assert otel.point(sc.CHAOS_INJECTIONS, **_series("fake-api", "latency")).value == 1
    assert otel.point(sc.CHAOS_INJECTIONS, **_series("fake-api", "outcome")).value == 1


async def test_a_policy_with_chaos_exports_every_kind_at_zero_before_any_drill(otel: Any) -> None:
    """The three injection series exist at 0 as soon as the policy exists, while its switch is off."""
    manager = ResilienceManager(clock=FakeClock())
    name = f"armed-{next(_ids)}"
    config = ResilienceConfig(
        name=name, chaos=ChaosConfig(fault_rate=0.5, fault=ConnectionError, enabled=ChaosSwitch())
    )

    async def dependency() -> str:
        return "real"

    assert await manager.execute_with_resilience(dependency, config) == "real"
    for kind in sc.CHAOS_KINDS:
        assert otel.point(sc.CHAOS_INJECTIONS, **_series(name, kind)).value == 0
    assert _chaos_events(otel.span(name)) == []


def test_the_kinds_chaos_reports_are_the_declared_closed_set() -> None:
    """The kinds the chaos rules report are exactly the values of resilience.chaos.kind, in order."""
    assert (FAULT, LATENCY, OUTCOME) == sc.CHAOS_KINDS == sc.attribute(sc.CHAOS_KIND).values


async def test_an_injected_fault_is_not_named_as_the_dependencys_error(otel: Any, driver: str) -> None:
    """A retried fault chaos injected leaves ``resilience.dependency.error.type`` unset; a real one sets it."""
    manager = ResilienceManager(clock=FakeClock())
    name = f"drill-dep-{next(_ids)}"
    switch = ChaosSwitch(on=True)
    config = ResilienceConfig(
        name=name,
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=Jitter.NONE),
        chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=switch),
    )
    calls = []

    def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError  # the dependency's own failure, after chaos is switched off
        return "real"

    async def dependency_async() -> str:
        return dependency()

    async def run() -> Any:
        if driver == "sync":
            return manager.execute_with_resilience_sync(dependency, config)
        return await manager.execute_with_resilience(dependency_async, config)

    with contextlib.suppress(ConnectionError):
        await run()
    drill = otel.span(name)
    assert drill.attributes[sc.ERROR_TYPE] == "ConnectionError"  # what the caller got
    assert sc.DEPENDENCY_ERROR_TYPE not in drill.attributes  # the dependency was never called
    assert calls == []
    otel.span_exporter.clear()
    switch.disable()
    assert await run() == "real"
    real = otel.span(name)
    assert real.attributes[sc.DEPENDENCY_ERROR_TYPE] == "TimeoutError"


async def test_a_fault_a_recovery_rule_re_ran_for_is_not_named_as_the_dependencys_error(
    otel: Any, driver: str
) -> None:
    """A RETRY rule's re-runs of injected faults leave ``resilience.dependency.error.type`` unset; a real one sets it."""
    manager = ResilienceManager(clock=FakeClock())
    manager.recovery_system.register_recovery_rule(
        OSError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    name = f"drill-rerun-{next(_ids)}"
    switch = ChaosSwitch(on=True)
    config = ResilienceConfig(
        name=name,
        enable_recovery=True,
        chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=switch),
    )
    calls = []

    def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise TimeoutError  # the dependency's own failure, after chaos is switched off
        return "real"

    async def dependency_async() -> str:
        return dependency()

    async def run() -> Any:
        if driver == "sync":
            return manager.execute_with_resilience_sync(dependency, config)
        return await manager.execute_with_resilience(dependency_async, config)

    with contextlib.suppress(ConnectionError):
        await run()
    drill = otel.span(name)
    assert drill.attributes[sc.ERROR_TYPE] == "ConnectionError"
    assert sc.DEPENDENCY_ERROR_TYPE not in drill.attributes
    assert calls == []
    otel.span_exporter.clear()
    switch.disable()
    assert await run() == "real"
    assert otel.span(name).attributes[sc.DEPENDENCY_ERROR_TYPE] == "TimeoutError"


async def test_a_rerun_after_an_injected_fault_names_the_dependencys_own_error(
    otel: Any, driver: str
) -> None:
    """A drill's fault started the recovery, the re-run reached the dependency: the span names its error."""
    switch = ChaosSwitch(on=True)
    manager = ResilienceManager(clock=FakeClock())
    manager.recovery_system.register_recovery_rule(
        OSError,
        RecoveryAction(RecoveryStrategy.RESTART, max_attempts=2, delay=0.0, restart_hook=switch.disable),
    )
    name = f"drill-then-real-{next(_ids)}"
    config = ResilienceConfig(
        name=name,
        enable_recovery=True,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2),  # the drill's fault, then the real one
        chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=switch),
    )

    def dependency() -> str:
        raise TimeoutError  # the dependency's own failure, once the restart switched chaos off

    async def dependency_async() -> str:
        return dependency()

    with pytest.raises(CircuitOpenError):
        if driver == "sync":
            manager.execute_with_resilience_sync(dependency, config)
        else:
            await manager.execute_with_resilience(dependency_async, config)
    span = otel.span(name)
    assert span.attributes[sc.ERROR_TYPE] == "otel_resilience.errors.CircuitOpenError"
    assert span.attributes[sc.DEPENDENCY_ERROR_TYPE] == "TimeoutError"
