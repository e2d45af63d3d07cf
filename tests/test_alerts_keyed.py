"""The breakers of a keyed policy (one per key, one name) have an outage episode each, and say their key."""

from __future__ import annotations

import threading

import pytest

from otel_resilience import BulkheadConfig, CircuitBreakerConfig, ResilienceConfig, ResilienceManager
from otel_resilience.engine.events import Event, StateChanged, key_attribute
from otel_resilience.errors import BulkheadFullError
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


def test_each_keys_full_bulkhead_alerts_and_names_its_key(
    manager: ResilienceManager, alerts: AlertSystem
) -> None:
    """A keyed policy has a bulkhead per key: one key's cooldown does not silence another key's alert."""
    payments = manager.policy(
        "payments", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    )
    for key in ("host-a", "host-b"):
        entered, release = threading.Event(), threading.Event()

        def hold(entered: threading.Event = entered, release: threading.Event = release) -> None:
            entered.set()
            release.wait(5.0)

        holder = threading.Thread(target=payments.for_key(key).execute_sync, args=(hold,))
        holder.start()
        assert entered.wait(5.0)
        try:
            with pytest.raises(BulkheadFullError):
                payments.for_key(key).execute_sync(lambda: "never")
        finally:
            release.set()
            holder.join(5.0)
    full = [alert for alert in alerts.history if alert.kind is AlertKind.BULKHEAD_FULL]
    assert [a.attributes.get("key") for a in full] == ["host-a", "host-b"]
    assert [a.summary for a in full] == [
        "bulkhead 'payments' (key 'host-a') is full and rejecting calls",
        "bulkhead 'payments' (key 'host-b') is full and rejecting calls",
    ]
    assert {a.subject for a in full} == {"payments"}


def test_an_unkeyed_full_bulkhead_has_no_key(manager: ResilienceManager, alerts: AlertSystem) -> None:
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(5.0)

    policy = manager.policy(
        "orders", ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))
    )
    holder = threading.Thread(target=policy.execute_sync, args=(hold,))
    holder.start()
    assert entered.wait(5.0)
    try:
        with pytest.raises(BulkheadFullError):
            policy.execute_sync(lambda: "never")
    finally:
        release.set()
        holder.join(5.0)
    (full,) = [alert for alert in alerts.history if alert.kind is AlertKind.BULKHEAD_FULL]
    assert "key" not in full.attributes
    assert full.summary == "bulkhead 'orders' is full and rejecting calls"


def test_two_long_keys_are_told_apart_in_their_alerts(
    manager: ResilienceManager, alerts: AlertSystem
) -> None:
    """Two keys that differ past the 256th character are two breakers: their alerts say two keys.

    The alert's ``key`` attribute and summary cut each key as any long text (253 and ``...``),
    so both alerts named one key, and an operator grouping by key saw one outage of two breakers.
    """
    first, second = "host-" + "x" * 300 + "-1", "host-" + "x" * 300 + "-2"
    fail(manager, first)
    fail(manager, second)
    opened = [alert for alert in alerts.history if alert.kind is AlertKind.CIRCUIT_OPEN]
    keys = [alert.attributes["key"] for alert in opened]
    assert keys == [key_attribute(first), key_attribute(second)]  # as on the keys' spans and metrics
    assert len(set(keys)) == 2
    assert all(len(key) <= 256 for key in keys)
    summaries = [alert.summary for alert in opened]
    assert len(set(summaries)) == 2  # cut as the keys are: a digest of the whole ends each
    assert all(len(summary) <= 256 and "(key 'host-xxx" in summary for summary in summaries)
