"""A keyed policy's breakers share its name on purpose; a namesake of another owner is still warned about."""

from __future__ import annotations

import logging

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.testing import FakeClock

KEYED = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), bulkhead_config=BulkheadConfig())
WARNING = "their telemetry series are combined"


@pytest.fixture
def alerts() -> AlertSystem:
    system = AlertSystem(name="namesake-alerts", clock=FakeClock(1000.0))
    yield system
    system.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_a_policys_own_keys_are_no_namesakes(caplog: pytest.LogCaptureFixture, alerts: AlertSystem) -> None:
    policy = ResilienceManager(alert_system=alerts).policy("own-keys-only", KEYED)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for key in ("a", "b", "c"):
            policy.for_key(key).execute_sync(lambda: None)
        policy.execute_sync(lambda: None)
    assert warnings(caplog) == []


def test_a_standalone_breaker_made_before_a_keyed_policy_of_its_name_is_warned_about(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """The warning does not depend on which of the two was made first."""
    standalone = CircuitBreaker("made-first", CircuitBreakerConfig())
    policy = ResilienceManager(alert_system=alerts).policy("made-first", KEYED)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        policy.for_key("a").execute_sync(lambda: None)
        policy.for_key("b").execute_sync(lambda: None)
    found = warnings(caplog)
    assert len(found) == 1, found
    assert "circuit_breaker is named 'made-first'" in found[0]
    assert standalone.name == "made-first"


def test_two_managers_keyed_policies_of_one_name_are_warned_about_once_each(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """Each policy hears of the other once per kind, however their keys' creations alternate."""
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        first = ResilienceManager(alert_system=alerts).policy("in-two-managers", KEYED)
        second = ResilienceManager(alert_system=alerts).policy("in-two-managers", KEYED)
        for key in ("a", "b", "c"):
            first.for_key(key).execute_sync(lambda: None)
            second.for_key(key).execute_sync(lambda: None)
    found = warnings(caplog)
    assert sorted(m.split(" is named")[0] for m in found) == [
        "a second live bulkhead",
        "a second live bulkhead",
        "a second live circuit_breaker",
        "a second live circuit_breaker",
    ], found
