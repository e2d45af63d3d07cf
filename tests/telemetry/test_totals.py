"""After 10 000 seeded random calls, every metric total equals the patterns' own statistics."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.patterns.fallback import FallbackConfig, FallbackStrategy
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.patterns.retry import Jitter, Retry, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

CALLS = 10_000
OUTCOME_KEYS = {
    "success": "successful_first_attempt",
    "recovered": "successful_after_failure",
    "fallback": "fallback",
    "rejected": "rejected",
    "timeout": "timeouts",
    "cancelled": "cancelled",
}


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """Metrics only (no tracer), so 10 000 calls stay fast."""
    had_default = current_listener() is not None
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    yield metric_reader
    uninstrument()
    if had_default:
        install_default()
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    return points


def total(points: dict[str, list[Any]], name: str, **where: Any) -> int:
    """Sum a counter's values (or a histogram's counts) over points matching ``where``."""
    wanted = {key.replace("__", "."): value for key, value in where.items()}
    found = 0
    for point in points.get(name, []):
        if all(point.attributes.get(key) == value for key, value in wanted.items()):
            found += point.value if hasattr(point, "value") else point.count
    return found


def test_metric_totals_equal_statistics_after_10000_mixed_calls(reader):
    """Counters, histogram counts and observables agree exactly with get_stats() everywhere."""
    rng = random.Random(20240611)
    clock = FakeClock(1000.0)
    alerts = AlertSystem(clock=clock, name="totals-alerts")
    recovery = ErrorRecoverySystem("totals-recovery", clock=clock, pattern_threshold=5)
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    manager = ResilienceManager(clock=clock, alert_system=alerts, recovery_system=recovery)
    retry_policy = RetryPolicy(
        max_attempts=2, strategy=RetryStrategy.FIXED, initial_delay=0.01, jitter=Jitter.NONE
    )
    policies = {
        "totals-guarded": ResilienceConfig(
            name="totals-guarded",
            circuit_breaker=CircuitBreakerConfig(failure_threshold=4, success_threshold=1, timeout=1.0),
            retry_policy=retry_policy,
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.DEFAULT_VALUE, default_value="dflt", handle_exceptions=(ValueError,)
            ),
        ),
        "totals-recovery": ResilienceConfig(name="totals-recovery", enable_recovery=True),
        "totals-timeout": ResilienceConfig(name="totals-timeout", timeout=1.0),
    }
    retry = Retry("totals-retry", retry_policy, clock=clock)
    breaker = CircuitBreaker(
        "totals-cb", CircuitBreakerConfig(failure_threshold=3, success_threshold=1, timeout=2.0), clock=clock
    )

    def behaviour(kind: str):
        calls = [0]

        def fn() -> str:
            calls[0] += 1
            if kind == "flaky" and calls[0] == 1:
                raise ConnectionError("first call only")
            if kind == "conn":
                raise ConnectionError("c")
            if kind == "value":
                raise ValueError("v")
            if kind == "slow":
                clock.advance(1.5)
            return "ok"

        return fn

    kinds = ["ok", "ok", "ok", "flaky", "conn", "value", "slow"]
    raised: Counter[str] = Counter()
    targets = [*policies, "retry", "breaker"]
    try:
        for _ in range(CALLS):
            target = rng.choice(targets)
            fn = behaviour(rng.choice(kinds))
            if rng.random() < 0.05:
                clock.advance(rng.uniform(0.0, 3.0))
            try:
                if target == "retry":
                    retry.execute_sync(fn)
                elif target == "breaker":
                    breaker.call_sync(fn)
                else:
                    manager.execute_with_resilience_sync(fn, policies[target])
            except Exception as error:
                raised[type(error).__name__] += 1
        points = collect(reader)
        stats = manager.get_resilience_statistics()
        assert sum(raised.values()) > 0

        for name in policies:
            counts = stats["policies"][name]
            observed = {
                p.attributes["resilience.outcome"]: p.value
                for p in points[sc.EXECUTIONS]
                if p.attributes["resilience.policy"] == name
                and p.attributes["resilience.pattern"] == "pipeline"
            }
            expected = {outcome: counts[key] for outcome, key in OUTCOME_KEYS.items()}
            expected["failure"] = counts["failed"] - counts["rejected"] - counts["timeouts"]
            assert observed == expected, name
            assert sum(observed.values()) == counts["total"]
            for outcome, count in expected.items():
                assert (
                    total(points, sc.EXECUTION_DURATION, resilience__policy=name, resilience__outcome=outcome)
                    == count
                )

        assert (
            total(points, sc.TIMEOUTS, resilience__policy="totals-timeout")
            == stats["policies"]["totals-timeout"]["timeouts"]
        )
        assert stats["policies"]["totals-timeout"]["timeouts"] > 0
        assert (
            total(points, sc.FALLBACK_EXECUTIONS, resilience__policy="totals-guarded")
            == (stats["policies"]["totals-guarded"]["fallback"])
        )

        for cb_name, cb_stats in (
            ("totals-guarded", stats["circuit_breakers"]["totals-guarded"]),
            ("totals-cb", breaker.get_stats()),
        ):
            for result, key in (
                ("success", "total_successes"),
                ("failure", "total_failures"),
                ("rejected", "total_rejected"),
                ("ignored", "total_ignored"),
                ("cancelled", "total_cancelled"),
            ):
                assert (
                    total(
                        points,
                        sc.CB_CALLS,
                        resilience__name=cb_name,
                        resilience__circuit_breaker__call_result=result,
                    )
                    == cb_stats[key]
                ), (cb_name, result)
            opened = total(
                points, sc.CB_TRANSITIONS, resilience__name=cb_name, resilience__circuit_breaker__state="open"
            )
            assert opened == cb_stats["times_opened"] > 0
            rejected = total(
                points, sc.REJECTIONS, resilience__name=cb_name, resilience__pattern="circuit_breaker"
            )
            assert rejected == cb_stats["total_rejected"] > 0

        retry_stats = retry.get_stats()
        assert total(points, sc.RETRIES, resilience__name="totals-retry") == retry_stats["retries"] > 0
        assert total(points, sc.RETRY_DELAY_METRIC, resilience__name="totals-retry") == retry_stats["retries"]
        assert (
            total(points, sc.RETRY_EXHAUSTED, resilience__name="totals-retry") == retry_stats["exhausted"] > 0
        )

        recovery_stats = stats["error_recovery"]
        for result, key in (("success", "successful"), ("failure", "failed")):
            assert (
                total(
                    points,
                    sc.RECOVERY_ATTEMPTS,
                    resilience__name="totals-recovery",
                    resilience__recovery__result=result,
                )
                == recovery_stats["by_strategy"]["retry"][key]
            )
        assert recovery_stats["attempts"] > 0
        assert (
            total(points, sc.ERROR_PATTERNS, resilience__name="totals-recovery")
            == recovery_stats["patterns_detected"]
        )

        by_kind = alerts.get_stats()["by_kind"]
        for kind, count in by_kind.items():
            assert (
                total(points, sc.ALERTS, resilience__name="totals-alerts", resilience__alert__kind=kind)
                == count
            )
        assert sum(by_kind.values()) > 0
        assert recovery_stats["patterns_detected"] > 0
        assert recovery_stats["successful_recoveries"] > 0
        assert stats["policies"]["totals-guarded"]["successful_after_failure"] > 0
        assert stats["policies"]["totals-guarded"]["fallback"] > 0
    finally:
        alerts.close()
