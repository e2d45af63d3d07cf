"""A keyed policy's breakers share its name on purpose; a namesake of another owner is still warned about."""

from __future__ import annotations

import dataclasses
import gc
import logging

import pytest
from otel_support import Otel

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    RateLimiter,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.telemetry import semconv as sc
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


SHARED = "is a policy of another live ResilienceManager too"
RETRY_ONLY = ResilienceConfig(name="in-two-managers-retry", retry_policy=RetryPolicy(max_attempts=2))


def shared_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if SHARED in r.getMessage()]


def test_two_managers_policies_of_one_name_are_warned_about_naming_the_policy(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem, otel: Otel
) -> None:
    """Their counts are one series, which goes down when either manager is freed: said once, by name."""
    first, second = ResilienceManager(alert_system=alerts), ResilienceManager(alert_system=alerts)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(5):
            first.execute_with_resilience_sync(lambda: None, RETRY_ONLY)
        for _ in range(2):
            second.execute_with_resilience_sync(lambda: None, RETRY_ONLY)
        series = {"resilience.policy": "in-two-managers-retry", "resilience.outcome": "success"}
        assert _exported(otel, sc.EXECUTIONS, series) == 7
        del first  # freed at once: its five calls leave the series
        assert _exported(otel, sc.EXECUTIONS, series) == 2
    found = shared_warnings(caplog)
    assert len(found) == 1, found
    assert "policy 'in-two-managers-retry'" in found[0]
    assert "go down" in found[0]


def test_a_named_policy_beside_another_managers_policy_of_its_name_is_warned_about(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """A handle (``manager.policy``) made where another manager runs a config of its name is told of too."""
    ResilienceManager(alert_system=alerts).execute_with_resilience_sync(lambda: None, RETRY_ONLY)
    second = ResilienceManager(alert_system=alerts)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        second.policy("in-two-managers-retry", RETRY_ONLY)  # the first manager was freed: no namesake
        assert shared_warnings(caplog) == []
        third = ResilienceManager(alert_system=alerts)
        third.execute_with_resilience_sync(lambda: None, RETRY_ONLY)
        third.execute_with_resilience_sync(lambda: None, dataclasses.replace(RETRY_ONLY, timeout=5.0))
    found = shared_warnings(caplog)
    assert len(found) == 1, found  # once per manager and name
    assert "policy 'in-two-managers-retry'" in found[0]


def test_a_named_policy_kept_after_its_manager_was_freed_is_another_managers(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem, otel: Otel
) -> None:
    """A handle whose manager is gone still runs and exports under its name: a new manager's policy of
    that name shares its series, and is warned about (it was silent), naming why."""
    kept = ResilienceManager(alert_system=alerts).policy("in-two-managers-retry", RETRY_ONLY)
    gc.collect()  # its manager is freed; the handle is not
    kept.execute_sync(lambda: None)
    second = ResilienceManager(alert_system=alerts)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        second.execute_with_resilience_sync(lambda: None, RETRY_ONLY)
    series = {"resilience.policy": "in-two-managers-retry", "resilience.outcome": "success"}
    assert _exported(otel, sc.EXECUTIONS, series) == 2
    del second
    gc.collect()
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):  # a named one, the newest of its name
        ResilienceManager(alert_system=alerts).policy("in-two-managers-retry", RETRY_ONLY)
    found = [r.getMessage() for r in caplog.records if "share its telemetry series" in r.getMessage()]
    assert len(found) == 2, found
    for message in found:
        assert (
            "'in-two-managers-retry' is a policy of a ResilienceManager freed while its caller kept"
            in message
        )


def test_one_managers_own_policies_of_one_name_are_no_other_managers(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem
) -> None:
    """Configs and a handle of one name in one manager are its own: only the config warning applies."""
    manager = ResilienceManager(alert_system=alerts)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        manager.execute_with_resilience_sync(lambda: None, RETRY_ONLY)
        manager.policy("in-two-managers-retry", RETRY_ONLY).execute_sync(lambda: None)
        manager.execute_with_resilience_sync(lambda: None, dataclasses.replace(RETRY_ONLY, timeout=5.0))
    assert shared_warnings(caplog) == []


def _exported(otel: Otel, metric: str, attributes: dict[str, str]) -> int:
    """The exported ``metric``, summed over the series whose attributes include ``attributes``."""
    return sum(
        point.value for point in otel.points(metric) if attributes.items() <= dict(point.attributes).items()
    )


def test_a_standalone_rate_limiter_beside_a_policys_of_its_name_is_warned_about(
    caplog: pytest.LogCaptureFixture, alerts: AlertSystem, otel: Otel
) -> None:
    """Their permits are one series, which goes down when either is freed: said, as for a breaker."""
    limits = RateLimiterConfig(rate=1000.0, burst=1000)
    manager = ResilienceManager(alert_system=alerts)
    config = ResilienceConfig(name="limited-twice", rate_limiter=limits)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(5):
            manager.execute_with_resilience_sync(lambda: None, config)
        standalone = RateLimiter("limited-twice", limits)
        for _ in range(2):
            standalone.call_sync(lambda: None)
        permits = {"resilience.name": "limited-twice"}
        assert _exported(otel, sc.RL_PERMITS, permits) == 7
    found = warnings(caplog)
    assert len(found) == 1, found
    assert "a second live rate_limiter is named 'limited-twice'" in found[0]


def test_a_keyed_rate_limiters_own_keys_are_no_namesakes(caplog: pytest.LogCaptureFixture) -> None:
    """Its keys share its name on purpose: made, evicted and made again, they are not warned about."""
    keyed = RateLimiter.per_key("keys-only", RateLimiterConfig(rate=1000.0, burst=1000), max_keys=1)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        kept = keyed.for_key("a")  # kept: evicted, then "a" made again
        for key in ("b", "c", "a", "b"):
            keyed.for_key(key).call_sync(lambda: None)
        kept.call_sync(lambda: None)  # on "a" made again by its use
    assert kept is not keyed.for_key("a")
    assert warnings(caplog) == []
