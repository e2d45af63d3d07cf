"""The breakers of a keyed policy (one per key, one name) have an outage episode each, and say their key."""

from __future__ import annotations

import pytest

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager
from otel_resilience.engine.events import Event, StateChanged
from otel_resilience.patterns.alerts import AlertKind, AlertSystem
from otel_resilience.patterns.circuit_breaker import CircuitState
from otel_resilience.testing import EventRecorder, FakeClock

BREAKER = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=10.0)
)


def boom() -> None:
    raise ConnectionError("down")


def fail(manager: ResilienceManager, key: str) -> None:
    with pytest.raises(ConnectionError):
        manager.policy("payments", BREAKER).for_key(key).execute_sync(boom)


def test_each_key_has_its_own_outage_episode(
    manager: ResilienceManager, clock: FakeClock, alerts: AlertSystem
) -> None:
    payments = manager.policy("payments", BREAKER)
    fail(manager, "host-a")  # a's outage starts: an alert
    fail(manager, "host-b")  # b's outage starts: an alert of its own
    clock.advance(10.0)
    assert payments.for_key("host-a").execute_sync(lambda: "up") == "up"  # a's probe: a closes
    assert payments.for_key("host-a").circuit_breaker.state is CircuitState.CLOSED
    fail(manager, "host-b")  # b's probe fails: b re-opens, still in its own outage
    opened = [alert for alert in alerts.history if alert.kind is AlertKind.CIRCUIT_OPEN]
    assert [(a.attributes["key"], a.attributes["reopens"]) for a in opened] == [
        ("host-a", "0"),
        ("host-b", "0"),
    ]
    assert [a.summary for a in opened] == [
        "circuit breaker 'payments' (key 'host-a') opened (failure_threshold)",
        "circuit breaker 'payments' (key 'host-b') opened (failure_threshold)",
    ]
    assert {a.subject for a in opened} == {"payments"}


def test_a_keys_state_changes_carry_its_key(manager: ResilienceManager, clock: FakeClock) -> None:
    recorder = EventRecorder()
    with recorder:
        fail(manager, "host-a")
        clock.advance(10.0)
        manager.policy("payments", BREAKER).for_key("host-a").execute_sync(lambda: "up")
    changes = [
        (source.name, source.key, args.new)
        for source, event, args in recorder.events
        if event is Event.STATE_CHANGED and isinstance(args, StateChanged)
    ]
    assert changes == [
        ("payments", "host-a", "open"),
        ("payments", "host-a", "half_open"),
        ("payments", "host-a", "closed"),
    ]


def test_a_policys_unkeyed_breaker_has_no_key(manager: ResilienceManager, alerts: AlertSystem) -> None:
    with pytest.raises(ConnectionError):
        manager.policy("payments", BREAKER).execute_sync(boom)
    (opened,) = [alert for alert in alerts.history if alert.kind is AlertKind.CIRCUIT_OPEN]
    assert "key" not in opened.attributes
    assert opened.summary == "circuit breaker 'payments' opened (failure_threshold)"
