"""Zero series carry every attribute the reference (docs/telemetry.md) lists as always present.

A zero series is exported with its source's keys and its own labels only: an attribute its
instrument documents as always present but that the zero series cannot know (the error type of
an error that has not happened) must be documented as conditional ("if any").
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.telemetry import semconv as sc

_SOURCE_KEYS = {sc.POLICY, sc.PATTERN, sc.NAME}


@pytest.mark.parametrize("row", sc.ZERO_SERIES, ids=lambda row: f"{row.pattern}:{row.instrument}")
def test_a_zero_series_has_every_attribute_documented_as_always_present(row: sc.ZeroSeries) -> None:
    """The source's keys and the row's labels cover the instrument's required attributes."""
    spec = sc.instrument(row.instrument)
    for labels in row.labels:
        missing = set(spec.attributes) - _SOURCE_KEYS - {key for key, _ in labels}
        assert not missing, (
            f"{row.instrument}: zero series {labels} lack {sorted(missing)} (mark them conditional)"
        )


def _check_points(otel: Any) -> int:
    """Every exported point has its instrument's required attributes and no undocumented one."""
    checked = 0
    for name, metric in otel.metrics().items():
        if not name.startswith("resilience."):
            continue
        spec = sc.instrument(name)
        for point in metric.data.data_points:
            keys = set(point.attributes)
            assert set(spec.attributes) <= keys, (name, dict(point.attributes))
            assert keys <= set(spec.attributes) | set(spec.conditional), (name, dict(point.attributes))
            checked += 1
    return checked


def test_recovery_zero_series_and_real_actions_match_the_reference(otel: Any) -> None:
    """resilience.recovery.attempts at 0 (no error.type) and after a real recovery (with it)."""
    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        KeyError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value=0)
    )
    config = ResilienceConfig(name="rec", enable_recovery=True)
    manager.execute_with_resilience_sync(lambda: 1, config)
    zero = [p for p in otel.points(sc.RECOVERY_ATTEMPTS) if p.attributes[sc.POLICY] == "rec"]
    assert zero
    assert all(p.value == 0 for p in zero)
    assert _check_points(otel)

    def fail() -> int:
        raise KeyError("k")

    manager.execute_with_resilience_sync(fail, config)
    moved = [p for p in otel.points(sc.RECOVERY_ATTEMPTS) if p.attributes[sc.POLICY] == "rec" and p.value]
    assert moved
    assert all(p.attributes[sc.ERROR_TYPE] == "KeyError" for p in moved)
    assert _check_points(otel)


def test_every_point_of_a_healthy_policy_with_every_pattern_matches_the_reference(otel: Any) -> None:
    """A healthy policy with each pattern: its points (zero series included) have the documented attributes."""
    manager = ResilienceManager()
    config = ResilienceConfig(
        name="all",
        circuit_breaker=CircuitBreakerConfig(),
        retry_policy=RetryPolicy(max_attempts=3),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0),
        timeout=5.0,
        bulkhead_config=BulkheadConfig(),
        rate_limiter=RateLimiterConfig(rate=1000),
        enable_recovery=True,
    )
    for _ in range(3):
        assert manager.execute_with_resilience_sync(lambda: 1, config) == 1
    assert _check_points(otel) > 10
