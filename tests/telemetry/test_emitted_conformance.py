"""What the library really emits, checked against the registry docs/telemetry.md is generated from.

A broad run of every pattern (alone and in policies, both drivers, successes, failures,
rejections, timeouts, fallbacks, recoveries, hedges, chaos, reloads, keys) through the real SDK,
then the other way round from the registry's own tests: every metric, span, span event and log
record emitted must be documented, with its documented unit, kind and bucket bounds, only
documented attribute keys (each required one present), values of the documented type and, for
closed enumerations, in the documented set.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum
from opentelemetry.trace import SpanKind, StatusCode
from otel_support import Otel

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CountWindow,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.manager.watch import ConfigWatch
from otel_resilience.patterns.rate_limiter import KeyedRateLimiter
from otel_resilience.telemetry import instrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

_ATTRIBUTES = {spec.key: spec for spec in sc.ATTRIBUTES}
_INSTRUMENTS = {spec.name: spec for spec in sc.INSTRUMENTS}
_SPAN_EVENTS = {spec.name: spec for spec in sc.SPAN_EVENTS}
_LOG_EVENTS = {spec.name: spec for spec in sc.LOG_EVENTS}
_TYPES: dict[str, type] = {"string": str, "int": int, "double": float, "boolean": bool}
_DATA: dict[sc.InstrumentKind, type] = {
    sc.InstrumentKind.HISTOGRAM: Histogram,
    sc.InstrumentKind.COUNTER: Sum,
    sc.InstrumentKind.OBSERVABLE_COUNTER: Sum,
    sc.InstrumentKind.OBSERVABLE_GAUGE: Gauge,
}


class DependencyError(Exception):
    """The dependency's own failure."""


class Escalated(Exception):
    """An error the recovery rules escalate."""


def _fail() -> None:
    raise DependencyError("secret")


def _escalated() -> None:
    raise Escalated("secret")


async def _afail() -> None:
    raise DependencyError("secret")


async def _aok() -> int:
    return 1


def _attribute_problems(
    where: str, attributes: dict[str, Any], allowed: set[str], required: tuple[str, ...]
) -> list[str]:
    problems = []
    for key, value in attributes.items():
        spec = _ATTRIBUTES.get(key)
        if key not in allowed or spec is None:
            problems.append(f"{where}: undocumented attribute {key}={value!r}")
            continue
        if type(value) is not _TYPES[spec.type]:
            problems.append(f"{where}: {key}={value!r} is not a {spec.type}")
        if spec.values and value not in spec.values:
            problems.append(f"{where}: {key}={value!r} not among {spec.values}")
    if (
        sc.METRIC_OVERFLOW not in attributes
    ):  # the overflow series of a histogram kept in process has no other key
        problems += [
            f"{where}: no {key} in {sorted(attributes)}" for key in required if key not in attributes
        ]
    return problems


def _metric_problems(otel: Otel) -> tuple[list[str], set[str]]:
    problems, seen = [], set()
    data = otel.reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            if scope.scope.name != sc.SCOPE_NAME:
                continue
            for metric in scope.metrics:
                seen.add(metric.name)
                spec = _INSTRUMENTS.get(metric.name)
                if spec is None:
                    problems.append(f"undocumented metric {metric.name}")
                    continue
                where = f"metric {metric.name}"
                if metric.unit != spec.unit:
                    problems.append(f"{where}: unit {metric.unit!r}, documented {spec.unit!r}")
                if not isinstance(metric.data, _DATA[spec.kind]):
                    problems.append(f"{where}: {type(metric.data).__name__}, documented {spec.kind.value}")
                if isinstance(metric.data, Sum) and not metric.data.is_monotonic:
                    problems.append(f"{where}: not monotonic")
                allowed = {*spec.attributes, *spec.conditional}
                for point in metric.data.data_points:
                    problems += _attribute_problems(where, dict(point.attributes), allowed, spec.attributes)
                    if isinstance(metric.data, Histogram) and tuple(point.explicit_bounds) != spec.boundaries:
                        problems.append(
                            f"{where}: bounds {point.explicit_bounds}, documented {spec.boundaries}"
                        )
    return problems, seen


def _trace_problems(otel: Otel) -> tuple[list[str], set[str]]:
    problems, seen = [], set()
    execution, attempt = sc.SPANS
    for span in otel.span_exporter.get_finished_spans():
        ours = span.instrumentation_scope is not None and span.instrumentation_scope.name == sc.SCOPE_NAME
        if ours:
            spec = attempt if span.name.endswith(" attempt") else execution
            where = f"span {spec.name} ({span.name})"
            attributes = dict(span.attributes or {})
            problems += _attribute_problems(
                where, attributes, {*spec.attributes, *spec.conditional}, spec.attributes
            )
            if span.kind is not SpanKind[spec.kind]:
                problems.append(f"{where}: kind {span.kind}")
            error = span.status.status_code is StatusCode.ERROR
            if error != (attributes.get(sc.OUTCOME) in sc.ERROR_OUTCOMES):
                problems.append(f"{where}: status {span.status.status_code} for {attributes.get(sc.OUTCOME)}")
            if error != (sc.ERROR_TYPE in attributes):
                problems.append(
                    f"{where}: error.type {attributes.get(sc.ERROR_TYPE)} with status {span.status}"
                )
        for event in span.events:
            event_spec = _SPAN_EVENTS.get(event.name)
            if event_spec is None:
                if ours:  # an exception event, say: the library adds none
                    problems.append(f"undocumented span event {event.name}")
                continue
            seen.add(event.name)
            allowed = {*event_spec.attributes, *event_spec.conditional}
            problems += _attribute_problems(
                f"event {event.name}", dict(event.attributes or {}), allowed, event_spec.attributes
            )
    return problems, seen


def _log_problems(otel: Otel) -> tuple[list[str], set[str]]:
    problems, seen = [], set()
    for record in otel.logs():
        spec = _LOG_EVENTS.get(record.event_name)
        if spec is None:
            problems.append(f"undocumented log event {record.event_name}")
            continue
        seen.add(spec.name)
        attributes = dict(record.attributes or {})
        problems += _attribute_problems(
            f"log {spec.name}", attributes, {*spec.attributes, *spec.conditional}, spec.attributes
        )
        if spec.severity in {"WARN", "ERROR"} and record.severity_text != spec.severity:
            problems.append(f"log {spec.name}: severity {record.severity_text}, documented {spec.severity}")
        if record.severity_text != record.severity_number.name:
            problems.append(f"log {spec.name}: severity {record.severity_text} / {record.severity_number}")
    return problems, seen


def _attempt(call: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # whatever the policy answers, only its telemetry is checked
        call()


async def _attempt_async(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # as above
        await call()


def _exercise(otel: Otel, folder: Path) -> tuple[ConfigWatch, KeyedRateLimiter[str]]:
    """Run every pattern through its telemetry: successes, failures, rejections, timeouts, ...

    Returns the watch of a configuration file of ``folder`` it left refused (stop it once read), and
    a keyed rate limiter that evicted a key (its keys are exported while it lives).
    """
    recovery = ErrorRecoverySystem(pattern_threshold=2)
    recovery.register_recovery_rule(
        DependencyError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.001)
    )
    recovery.register_recovery_rule(Escalated, RecoveryAction(strategy=RecoveryStrategy.ESCALATE))
    manager = ResilienceManager(recovery_system=recovery)
    retry = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01)
    default = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0)
    window = CircuitBreakerConfig(
        sliding_window=CountWindow(4), failure_rate_threshold=0.5, minimum_calls=2, slow_call_duration=60.0
    )
    configs = [
        ResilienceConfig(name="plain"),
        ResilienceConfig(name="retried", retry_policy=retry),
        ResilienceConfig(
            name="by-result",
            retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.001, retry_on_result=bool),
        ),
        ResilienceConfig(name="breaker", circuit_breaker=CircuitBreakerConfig(failure_threshold=2)),
        ResilienceConfig(name="windowed", circuit_breaker=window),
        ResilienceConfig(name="fallback", retry_policy=retry, fallback_config=default),
        ResilienceConfig(name="bulkheaded", bulkhead_config=BulkheadConfig(max_concurrent=2, max_waiting=1)),
        ResilienceConfig(name="limited", rate_limiter=RateLimiterConfig(rate=0.001, burst=1)),
        ResilienceConfig(name="recovered", enable_recovery=True, max_attempts_total=5),
        ResilienceConfig(
            name="chaos-fault", chaos=ChaosConfig(fault_rate=1.0, fault=DependencyError("drill"))
        ),
        ResilienceConfig(name="chaos-latency", chaos=ChaosConfig(latency_rate=1.0, latency=0.001)),
        ResilienceConfig(name="chaos-outcome", chaos=ChaosConfig(outcome_rate=1.0, outcome=0)),
        ResilienceConfig(
            name="budgeted",
            retry_policy=RetryPolicy(
                max_attempts=3,
                initial_delay=0.001,
                budget=RetryBudget(ratio=0.0, min_retries_per_second=0.001),
            ),
        ),
    ]
    tracer = otel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller"):
        for config in configs:
            for call in (lambda: 1, _fail, _fail, _escalated, _fail):
                _attempt(lambda config=config, call=call: manager.execute_with_resilience_sync(call, config))
        keyed = manager.policy("keyed", ResilienceConfig(retry_policy=retry), key_attribute_limit=1)
        for key in ("a", "b", "c"):
            _attempt(lambda key=key: keyed.for_key(key).execute_sync(_fail))
        manager.reconfigure("keyed", ResilienceConfig(retry_policy=RetryPolicy(max_attempts=2)))
        watched = folder / "resilience.yaml"
        watched.write_text("policies:\n  watched:\n    timeout: 1s\n")
        # On a fake clock: the watch's start-up wait for the file just written takes no time.
        watch = ResilienceManager(clock=FakeClock()).watch(watched, interval=3600)
        watched.write_text("policies: [")  # no YAML: refused once two looks find it the same
        watch.check()
        watch.check()
        _attempt(lambda: manager.reconfigure("keyed", ResilienceConfig(name="another")))
        breaker = CircuitBreaker("alone", CircuitBreakerConfig(failure_threshold=1))
        _attempt(lambda: breaker.run_sync(_fail))
        breaker.force_open()
        breaker.metrics_only()
        breaker.reset()
        limiter = RateLimiter(
            "waiting", RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0), clock=FakeClock()
        )
        limiter.try_acquire()
        limiter.try_acquire()
        keyed = RateLimiter.per_key(
            "keyed-limiter", RateLimiterConfig(rate=1.0), max_keys=1, clock=FakeClock()
        )
        for tenant in ("a", "b"):
            keyed.for_key(tenant).try_acquire()

        async def run_async() -> None:
            hang = asyncio.Event()

            async def blocked() -> None:
                await hang.wait()

            await _attempt_async(lambda: limiter.run(_aok))
            bulkhead = Bulkhead("bulkhead", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.01))

            async def release() -> None:  # after the third call was refused and the second timed out
                await asyncio.sleep(0.05)
                hang.set()

            await asyncio.gather(
                *(bulkhead.run(blocked) for _ in range(3)), release(), return_exceptions=True
            )
            timed = [
                ResilienceConfig(name="total", timeout=0.01),
                ResilienceConfig(
                    name="per-attempt",
                    retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.001, attempt_timeout=0.01),
                ),
            ]
            for config in timed:
                stuck = asyncio.Event()
                await _attempt_async(
                    lambda config=config, stuck=stuck: manager.execute_with_resilience(stuck.wait, config)
                )
            hedged = ResilienceConfig(name="hedged", hedging=HedgingConfig(delay=0.001, max_attempts=2))
            started = []

            async def original_hangs() -> int:  # the hedge answers, the original is cancelled
                started.append(1)
                if len(started) == 1:
                    await asyncio.Event().wait()
                return 1

            for call in (_afail, original_hangs):
                await _attempt_async(lambda call=call: manager.execute_with_resilience(call, hedged))
            for config in configs[:3]:
                await _attempt_async(lambda config=config: manager.execute_with_resilience(_afail, config))

        asyncio.run(run_async())
    return watch, keyed


@pytest.fixture(params=["sdk-histograms", "in-process-histograms"])
def exercised(request: pytest.FixtureRequest, otel: Otel) -> Iterator[Otel]:
    if request.param == "in-process-histograms":
        instrument(
            otel.tracer_provider, otel.meter_provider, otel.logger_provider, in_process_histograms=True
        )
    with tempfile.TemporaryDirectory() as folder:
        watch, _keyed = _exercise(otel, Path(folder))
        try:
            yield otel
        finally:
            watch.stop()


def test_every_metric_emitted_is_documented_with_its_unit_kind_bounds_and_attributes(exercised: Otel) -> None:
    problems, seen = _metric_problems(exercised)
    assert problems == []
    in_process = sc.EXECUTION_DURATION not in seen
    durations = {spec.name for spec in sc.INSTRUMENTS if ".latency." in spec.name}
    expected = {
        spec.name
        for spec in sc.INSTRUMENTS
        if spec.name not in durations
        and ".store." not in spec.name
        and spec.name != "resilience.circuit_breaker.shared"
    }
    if in_process:
        expected = (expected - {sc.EXECUTION_DURATION, sc.ATTEMPT_DURATION}) | durations
    assert expected <= seen, sorted(expected - seen)


def test_every_span_and_span_event_emitted_is_documented(exercised: Otel) -> None:
    problems, seen = _trace_problems(exercised)
    assert problems == []
    assert set(_SPAN_EVENTS) - seen <= {"resilience.hedging.hedge_denied"}, sorted(set(_SPAN_EVENTS) - seen)


def test_every_log_record_emitted_is_documented(exercised: Otel) -> None:
    problems, seen = _log_problems(exercised)
    assert problems == []
    assert seen == set(_LOG_EVENTS)
