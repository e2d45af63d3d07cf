"""Tests for otel_resilience.patterns.alerts: each alert kind, storm control, subscribers and the default system."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import pickle
import re
import threading
import warnings
import weakref
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.engine.events import (
    HUB,
    AlertRaised,
    CallRejected,
    Event,
    PatternDetected,
    RecoveryAttempted,
    StateChanged,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError, RecoveryEscalatedError
from otel_resilience.ops import alert_rules as ar
from otel_resilience.patterns import alerts as alerts_module
from otel_resilience.patterns.alerts import (
    DEFAULT_BULKHEAD_COOLDOWN,
    DEFAULT_ESCALATION_COOLDOWN,
    DEFAULT_HISTORY_SIZE,
    DEFAULT_MIN_RECOVERY_ATTEMPTS,
    DEFAULT_RECOVERY_RATE_THRESHOLD,
    DEFAULT_RECOVERY_WINDOW,
    MAX_ATTRIBUTE_LENGTH,
    MAX_TRACKED_SUBJECTS,
    UNTRACKED_OUTAGE_COOLDOWN,
    Alert,
    AlertConfig,
    AlertKind,
    AlertSeverity,
    AlertSystem,
    default_alert_system,
)
from otel_resilience.patterns.alerts import system as system_module
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder, FakeClock


@pytest.fixture
def hub() -> TelemetryHub:
    """A private telemetry hub, so that these tests see only their own events."""
    return TelemetryHub()


@pytest.fixture
def system(hub: TelemetryHub, clock: FakeClock) -> Iterator[AlertSystem]:
    """An alert system with small windows, listening on the private hub."""
    config = AlertConfig(min_recovery_attempts=4, recovery_window=10, bulkhead_cooldown=30.0)
    with AlertSystem(config, clock=clock, hub=hub) as alert_system:
        yield alert_system


def reporter(hub: TelemetryHub, kind: str, name: str, pipeline: str | None = None) -> StrategyTelemetry:
    return StrategyTelemetry(TelemetrySource(kind, name, pipeline), hub)


def kinds(system: AlertSystem) -> list[AlertKind]:
    return [alert.kind for alert in system.history]


def open_breaker(tel: StrategyTelemetry, old: str = "closed") -> None:
    tel.report(Event.STATE_CHANGED, StateChanged(old, "open", "failure_threshold"))


def attempts(tel: StrategyTelemetry, *results: str, strategy: str = "retry") -> None:
    for result in results:
        tel.report(Event.RECOVERY_ATTEMPTED, RecoveryAttempted(strategy, result, "ConnectionError"))


# -- configuration ----------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """The documented defaults do not drift."""
    assert DEFAULT_RECOVERY_RATE_THRESHOLD == 0.8
    assert DEFAULT_MIN_RECOVERY_ATTEMPTS == 10
    assert DEFAULT_RECOVERY_WINDOW == 100
    assert DEFAULT_BULKHEAD_COOLDOWN == 60.0
    assert DEFAULT_ESCALATION_COOLDOWN == 60.0
    assert DEFAULT_HISTORY_SIZE == 100
    assert MAX_ATTRIBUTE_LENGTH == 256
    assert AlertConfig() == AlertConfig(0.8, 10, 100, 60.0, 60.0, 100)
    assert [k.value for k in AlertKind] == [
        "circuit_open",
        "bulkhead_full",
        "low_recovery_rate",
        "error_pattern",
        "recovery_escalated",
    ]
    assert [s.value for s in AlertSeverity] == ["warning", "critical"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"recovery_rate_threshold": 0}, ValueError, r"AlertConfig\.recovery_rate_threshold must be > 0"),
        ({"recovery_rate_threshold": 1.5}, ValueError, r"AlertConfig\.recovery_rate_threshold must be <= 1"),
        (
            {"recovery_rate_threshold": float("nan")},
            ValueError,
            r"AlertConfig\.recovery_rate_threshold must be a finite",
        ),
        (
            {"recovery_rate_threshold": "80%"},
            TypeError,
            r"AlertConfig\.recovery_rate_threshold must be a number",
        ),
        ({"min_recovery_attempts": 0}, ValueError, r"AlertConfig\.min_recovery_attempts must be >= 1, got 0"),
        ({"recovery_window": 0}, ValueError, r"AlertConfig\.recovery_window must be >= 1"),
        ({"recovery_window": 5.0}, TypeError, r"AlertConfig\.recovery_window must be an int"),
        (
            {"min_recovery_attempts": 20, "recovery_window": 10},
            ValueError,
            r"AlertConfig\.min_recovery_attempts must be <= recovery_window \(10\), got 20",
        ),
        ({"bulkhead_cooldown": -1}, ValueError, r"AlertConfig\.bulkhead_cooldown must be >= 0 seconds"),
        ({"bulkhead_cooldown": float("inf")}, ValueError, r"AlertConfig\.bulkhead_cooldown must be a finite"),
        ({"escalation_cooldown": "1m"}, TypeError, r"AlertConfig\.escalation_cooldown must be a duration"),
        ({"history_size": 0}, ValueError, r"AlertConfig\.history_size must be >= 1"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Every invalid AlertConfig field raises naming the class, field, rule and value."""
    with pytest.raises(error, match=match):
        AlertConfig(**kwargs)


def test_config_normalises_durations_and_checks_types(hub: TelemetryHub) -> None:
    """Cooldowns accept timedelta; the system refuses a config of the wrong type or an empty name."""
    config = AlertConfig(bulkhead_cooldown=timedelta(minutes=2), escalation_cooldown=0)
    assert (config.bulkhead_cooldown, config.escalation_cooldown) == (120.0, 0.0)
    with pytest.raises(TypeError, match=r"AlertSystem\.config must be an AlertConfig"):
        AlertSystem({"bulkhead_cooldown": 1}, hub=hub)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"AlertSystem\.name"):
        AlertSystem(hub=hub, name="")
    assert hub.event_listeners == ()


def test_a_wrong_clock_or_hub_is_refused_at_construction(hub: TelemetryHub) -> None:
    """A wrong ``clock`` or ``hub`` raises a TypeError naming the field, not an AttributeError later."""
    with pytest.raises(TypeError, match=r"AlertSystem\.clock must be a Clock"):
        AlertSystem(clock=None, hub=hub)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"AlertSystem\.hub must be a TelemetryHub"):
        AlertSystem(hub="global")  # type: ignore[arg-type]
    assert hub.event_listeners == ()


# -- each kind ---------------------------------------------------------------------------------


def test_circuit_open_alerts_once_per_outage_episode(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """Opening from closed raises one critical alert; re-opens before the breaker closes raise none."""
    tel = reporter(hub, "circuit_breaker", "ml_service")
    clock.advance(5)
    open_breaker(tel)
    for reopens in range(1, 4):
        tel.report(Event.STATE_CHANGED, StateChanged("open", "half_open", "timeout_elapsed", reopens - 1))
        tel.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", reopens))
    assert kinds(system) == [AlertKind.CIRCUIT_OPEN]
    tel.report(Event.STATE_CHANGED, StateChanged("half_open", "closed", "probe_succeeded", 3))
    clock.advance(1)
    open_breaker(tel)  # a new outage after the breaker closed
    assert kinds(system) == [AlertKind.CIRCUIT_OPEN, AlertKind.CIRCUIT_OPEN]
    first, second = system.history
    assert (first.severity, first.subject, first.timestamp) == (AlertSeverity.CRITICAL, "ml_service", 1005.0)
    assert first.attributes["reason"] == "failure_threshold"
    assert first.attributes["old"] == "closed"
    assert first.attributes["reopens"] == "0"
    assert first.summary == "circuit breaker 'ml_service' opened (failure_threshold)"
    assert second.timestamp == 1006.0


def test_repr_names_the_system_and_its_counts(hub: TelemetryHub, clock: FakeClock) -> None:
    """An alert system's repr says which it is, whether it listens, and what it raised."""
    system = AlertSystem(clock=clock, hub=hub, name="payments-alerts")
    system.subscribe(lambda alert: None)
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert repr(system) == "AlertSystem('payments-alerts', listening, alerts=1, subscribers=1)"
    system.close()
    assert repr(system) == "AlertSystem('payments-alerts', closed, alerts=1, subscribers=1)"


def test_circuit_open_episodes_are_per_breaker(system: AlertSystem, hub: TelemetryHub) -> None:
    """One breaker's outage episode does not silence another breaker's."""
    for name in ("a", "b"):
        open_breaker(reporter(hub, "circuit_breaker", name))
    reporter(hub, "circuit_breaker", "a").report(
        Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", 1)
    )
    assert [a.subject for a in system.history] == ["a", "b"]


def test_alert_raised_on_a_reopen_carries_the_reopen_count(system: AlertSystem, hub: TelemetryHub) -> None:
    """A system that first sees an episode at a re-open alerts once, with the episode's re-open count."""
    tel = reporter(hub, "circuit_breaker", "late")
    tel.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", 3))
    tel.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", 4))
    (alert,) = system.history
    assert alert.attributes["reopens"] == "3"
    assert alert.summary == "circuit breaker 'late' re-opened (probe_failed), 3 re-opens in this outage"


def test_flapping_breaker_raises_one_alert_per_outage(clock: FakeClock) -> None:
    """A real breaker that flaps HALF_OPEN -> OPEN 93 times with a 10 ms timeout raises one alert until it closes."""
    breaker = CircuitBreaker(
        "flapping", CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=0.01), clock=clock
    )

    def down() -> None:
        raise ConnectionError

    with AlertSystem(clock=clock) as system:
        with pytest.raises(ConnectionError):
            breaker.call_sync(down)
        for _ in range(93):
            clock.advance(0.01)
            with pytest.raises(ConnectionError):
                breaker.call_sync(down)
        assert breaker.stats.times_opened == 94
        assert kinds(system) == [AlertKind.CIRCUIT_OPEN]
        clock.advance(0.01)
        assert breaker.call_sync(lambda: "up") == "up"
        with pytest.raises(ConnectionError):
            breaker.call_sync(down)
        assert kinds(system) == [AlertKind.CIRCUIT_OPEN] * 2
        assert system.get_stats()["by_kind"]["circuit_open"] == 2


def test_bulkhead_full_alerts_once_per_cooldown(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """A storm of full rejections raises one alert per bulkhead per cooldown, queue timeouts in it included."""
    pool = reporter(hub, "bulkhead", "analysis_pool")
    for _ in range(100):
        pool.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    pool.report(Event.CALL_REJECTED, CallRejected("queue_timeout"))  # the same cooldown
    assert kinds(system) == [AlertKind.BULKHEAD_FULL]
    reporter(hub, "bulkhead", "db_pool").report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert [a.subject for a in system.history] == ["analysis_pool", "db_pool"]
    clock.advance(29.9)
    pool.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert len(system.history) == 2
    clock.advance(0.1)
    pool.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert [a.subject for a in system.history] == ["analysis_pool", "db_pool", "analysis_pool"]
    assert system.history[0].severity is AlertSeverity.WARNING


@pytest.mark.parametrize("reason", sc.REJECTION_REASONS_BY_PATTERN["bulkhead"])
def test_every_rejection_the_prometheus_bulkhead_rule_sums_raises_the_bulkhead_alert(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock, reason: str
) -> None:
    """The in-process alert counts the rejections ``ResilienceBulkheadFull`` sums: each reason alone alerts.

    Queue timeouts alone (a bulkhead whose callers all give up in its queue) raise ``BULKHEAD_FULL``
    under the same cooldown as full rejections; the alert says which rejection raised it.
    """
    (rule,) = [
        rule
        for group in ar.rules_document()["groups"]
        for rule in group["rules"]
        if rule.get("record") == ar.R_BULKHEAD_REJECTIONS
    ]
    summed = re.search(r'resilience_rejection_reason=~"([^"]+)"', rule["expr"])
    assert summed is not None
    assert sorted(summed.group(1).split("|")) == sorted(sc.REJECTION_REASONS_BY_PATTERN["bulkhead"])
    pool = reporter(hub, "bulkhead", "queued_pool")
    for _ in range(50):
        pool.report(Event.CALL_REJECTED, CallRejected(reason))
    assert kinds(system) == [AlertKind.BULKHEAD_FULL]
    assert system.history[0].attributes["reason"] == reason
    clock.advance(29.9)
    pool.report(Event.CALL_REJECTED, CallRejected(reason))
    assert len(system.history) == 1  # still cooling down
    clock.advance(0.1)
    pool.report(Event.CALL_REJECTED, CallRejected(reason))
    assert [(a.kind, a.subject) for a in system.history] == [(AlertKind.BULKHEAD_FULL, "queued_pool")] * 2


def test_a_real_bulkheads_queue_timeout_raises_the_bulkhead_alert(clock: FakeClock) -> None:
    """A call that gave up in a real bulkhead's queue raises BULKHEAD_FULL, as a full rejection does."""
    bulkhead = Bulkhead(
        "queue-timeouts", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.01), clock=clock
    )
    with AlertSystem(clock=clock) as system:
        with pytest.raises(BulkheadTimeoutError):  # the inner call waits in the queue behind the outer one
            bulkhead.execute_sync(bulkhead.execute_sync, lambda: None)
        assert bulkhead.stats.timed_out == 1
        assert [(a.kind, a.subject, a.attributes["reason"]) for a in system.history] == [
            (AlertKind.BULKHEAD_FULL, "queue-timeouts", "queue_timeout")
        ]


def keyed(hub: TelemetryHub, kind: str, name: str, key: str) -> StrategyTelemetry:
    return StrategyTelemetry(TelemetrySource(kind, name, key=key), hub)


def test_full_keyed_bulkheads_past_the_cap_share_one_cooldown(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """1 100 full keys rejecting 3 times in one cooldown raise 1 025 alerts, not 3 300: no storm past the cap.

    The first MAX_TRACKED_SUBJECTS keys each have their cooldown; the others share one, whose alert
    says it stands for them. Once the cooldowns end, the same again, and never more keys kept.
    """
    keys = MAX_TRACKED_SUBJECTS + 76
    pools = [keyed(hub, "bulkhead", "tenants", f"tenant-{index}") for index in range(keys)]
    full = CallRejected("bulkhead_full")
    for _ in range(3):
        for pool in pools:
            pool.report(Event.CALL_REJECTED, full)
    assert system.get_stats()["by_kind"]["bulkhead_full"] == MAX_TRACKED_SUBJECTS + 1
    shared = [alert for alert in system.history if "untracked" in alert.attributes]
    assert [(a.attributes["key"], a.attributes["untracked"]) for a in shared] == [
        (f"tenant-{MAX_TRACKED_SUBJECTS}", f"more than {MAX_TRACKED_SUBJECTS} bulkheads")
    ]
    assert shared[0].summary == (
        f"bulkhead 'tenants' (key 'tenant-{MAX_TRACKED_SUBJECTS}') is full and rejecting calls; "
        f"it stands for every full bulkhead past the {MAX_TRACKED_SUBJECTS} tracked (one alert per cooldown)"
    )
    clock.advance(30.0)
    for _ in range(3):
        for pool in pools:
            pool.report(Event.CALL_REJECTED, full)
    assert system.get_stats()["by_kind"]["bulkhead_full"] == 2 * (MAX_TRACKED_SUBJECTS + 1)
    assert len(system._full_cooldowns) == MAX_TRACKED_SUBJECTS


def test_full_bulkheads_past_the_cap_on_many_threads_raise_one_shared_alert(
    system: AlertSystem, hub: TelemetryHub
) -> None:
    """Threads rejecting for 1 100 keys in different orders raise one alert per tracked key and one shared alert."""
    keys = MAX_TRACKED_SUBJECTS + 76
    pools = [keyed(hub, "bulkhead", "tenants", f"tenant-{index}") for index in range(keys)]
    full = CallRejected("bulkhead_full")
    start = threading.Barrier(4)

    def reject(order: list[StrategyTelemetry]) -> None:
        start.wait()
        for _ in range(2):
            for pool in order:
                pool.report(Event.CALL_REJECTED, full)

    orders = [pools, pools[::-1], pools[::2] + pools[1::2], pools[1::2] + pools[::2]]
    threads = [threading.Thread(target=reject, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert system.get_stats()["by_kind"]["bulkhead_full"] == MAX_TRACKED_SUBJECTS + 1
    assert len(system._full_cooldowns) == MAX_TRACKED_SUBJECTS


def test_a_bulkhead_past_the_cap_is_tracked_once_a_cooldown_ended(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """A subject whose cooldown is over makes room: a bulkhead past the cap then alerts for itself."""
    full = CallRejected("bulkhead_full")
    for index in range(MAX_TRACKED_SUBJECTS):
        reporter(hub, "bulkhead", f"pool-{index}").report(Event.CALL_REJECTED, full)
    clock.advance(30.0)
    late = reporter(hub, "bulkhead", "late")
    late.report(Event.CALL_REJECTED, full)
    assert (system.history[-1].subject, "untracked" in system.history[-1].attributes) == ("late", False)
    late.report(Event.CALL_REJECTED, full)
    reporter(hub, "bulkhead", "pool-0").report(Event.CALL_REJECTED, full)  # its cooldown ended: alerts
    assert [a.subject for a in system.history[-2:]] == ["late", "pool-0"]
    assert system.get_stats()["by_kind"]["bulkhead_full"] == MAX_TRACKED_SUBJECTS + 2


def test_escalations_past_the_cap_share_one_cooldown(hub: TelemetryHub, clock: FakeClock) -> None:
    """Error types escalated past the cap share one cooldown, as full bulkheads do; a namesake bulkhead keeps its own."""
    with AlertSystem(clock=clock, hub=hub) as system:
        recovery = reporter(hub, "recovery", "pool-0")
        for _ in range(2):
            for index in range(MAX_TRACKED_SUBJECTS + 5):
                recovery.report(
                    Event.RECOVERY_ATTEMPTED, RecoveryAttempted("escalate", "failure", f"Error{index}")
                )
        assert system.get_stats()["by_kind"]["recovery_escalated"] == MAX_TRACKED_SUBJECTS + 1
        assert system.history[-1].attributes["untracked"] == f"more than {MAX_TRACKED_SUBJECTS} escalations"
        reporter(hub, "bulkhead", "pool-0").report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
        assert (system.history[-1].kind, "untracked" in system.history[-1].attributes) == (
            AlertKind.BULKHEAD_FULL,
            False,
        )


def test_reopens_of_keyed_breakers_past_the_cap_share_one_cooldown(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """1 100 keyed breakers in outage re-opening 3 times raise 1 101 alerts, not 4 400: each opening alerts, re-opens not.

    The re-opens of the outages not tracked share one cooldown (UNTRACKED_OUTAGE_COOLDOWN), whose
    alert says it stands for them; a new outage past the cap still alerts for itself.
    """
    keys = MAX_TRACKED_SUBJECTS + 76
    breakers = [keyed(hub, "circuit_breaker", "tenants", f"tenant-{index}") for index in range(keys)]
    for breaker in breakers:
        open_breaker(breaker)
    assert system.get_stats()["by_kind"]["circuit_open"] == keys
    for reopens in range(1, 4):
        for breaker in breakers:
            breaker.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", reopens))
    assert system.get_stats()["by_kind"]["circuit_open"] == keys + 1
    (shared,) = [alert for alert in system.history if "untracked" in alert.attributes]
    assert shared.attributes["untracked"] == f"more than {MAX_TRACKED_SUBJECTS} breakers"
    assert shared.summary == (
        "circuit breaker 'tenants' (key 'tenant-0') re-opened (probe_failed), 1 re-open in this outage; "
        f"it stands for every breaker in outage past the {MAX_TRACKED_SUBJECTS} tracked (one alert per "
        f"{UNTRACKED_OUTAGE_COOLDOWN:g} s)"
    )
    clock.advance(UNTRACKED_OUTAGE_COOLDOWN)
    for breaker in breakers:
        breaker.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", 4))
    assert system.get_stats()["by_kind"]["circuit_open"] == keys + 2
    breakers[0].report(Event.STATE_CHANGED, StateChanged("half_open", "closed", "probe_succeeded", 4))
    open_breaker(breakers[0])  # a new outage: alerts for itself
    assert system.get_stats()["by_kind"]["circuit_open"] == keys + 3
    assert "untracked" not in system.history[-1].attributes
    assert len(system._episodes) == MAX_TRACKED_SUBJECTS


def test_one_subjects_alerts_are_unchanged_by_the_cap(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """A keyed bulkhead and a keyed breaker alone alert as before: their own cooldown and episode, no shared attribute."""
    pool = keyed(hub, "bulkhead", "tenants", "acme")
    breaker = keyed(hub, "circuit_breaker", "tenants", "acme")
    full = CallRejected("bulkhead_full")
    for _ in range(3):
        pool.report(Event.CALL_REJECTED, full)
        clock.advance(10.0)
    open_breaker(breaker)
    breaker.report(Event.STATE_CHANGED, StateChanged("half_open", "open", "probe_failed", 1))
    pool.report(Event.CALL_REJECTED, full)  # 30 s after the first: its cooldown ended
    assert [(a.kind, a.timestamp, a.summary, dict(a.attributes)) for a in system.history] == [
        (
            AlertKind.BULKHEAD_FULL,
            1000.0,
            "bulkhead 'tenants' (key 'acme') is full and rejecting calls",
            {
                "reason": "bulkhead_full",
                "cooldown": "30",
                "source.kind": "bulkhead",
                "source.name": "tenants",
                "key": "acme",
            },
        ),
        (
            AlertKind.CIRCUIT_OPEN,
            1030.0,
            "circuit breaker 'tenants' (key 'acme') opened (failure_threshold)",
            {
                "old": "closed",
                "reason": "failure_threshold",
                "reopens": "0",
                "source.kind": "circuit_breaker",
                "source.name": "tenants",
                "key": "acme",
            },
        ),
        (
            AlertKind.BULKHEAD_FULL,
            1030.0,
            "bulkhead 'tenants' (key 'acme') is full and rejecting calls",
            {
                "reason": "bulkhead_full",
                "cooldown": "30",
                "source.kind": "bulkhead",
                "source.name": "tenants",
                "key": "acme",
            },
        ),
    ]


def test_recovery_systems_past_the_cap_share_one_rate_window(hub: TelemetryHub, clock: FakeClock) -> None:
    """1 100 recovery systems failing 10 times each, 3 rounds, raise 1 025 alerts, not 3 300: no storm past the cap.

    A window below the threshold is never forgotten (its new window would alert again at once);
    the systems left without room share one window, whose alert says it stands for them.
    """
    systems = MAX_TRACKED_SUBJECTS + 76
    recoveries = [reporter(hub, "recovery", f"recovery-{index}") for index in range(systems)]
    with AlertSystem(clock=clock, hub=hub) as system:
        for _ in range(3):
            for recovery in recoveries:
                attempts(recovery, *["failure"] * 10)
            clock.advance(60.0)
        assert system.get_stats()["by_kind"]["low_recovery_rate"] == MAX_TRACKED_SUBJECTS + 1
        (shared,) = [alert for alert in system.history if "untracked" in alert.attributes]
        assert (shared.subject, shared.attributes["untracked"], shared.attributes["attempts"]) == (
            f"recovery-{MAX_TRACKED_SUBJECTS}",
            f"more than {MAX_TRACKED_SUBJECTS} recovery systems",
            "10",
        )
        assert shared.summary == (
            f"recovery rate of 'recovery-{MAX_TRACKED_SUBJECTS}' with the other untracked recovery systems "
            "fell to 0% over their last 10 attempts (threshold 80%); it stands for every recovery system "
            f"past the {MAX_TRACKED_SUBJECTS} tracked (one alert per fall below the threshold)"
        )
        assert len(system._rates) == MAX_TRACKED_SUBJECTS


def test_a_recovery_system_past_the_cap_is_tracked_once_a_rate_is_back(
    hub: TelemetryHub, clock: FakeClock
) -> None:
    """A window back at the threshold makes room: a recovery system past the cap then alerts for itself.

    The least recently seen window above the threshold is the one forgotten, never one below it.
    """
    config = AlertConfig(min_recovery_attempts=4, recovery_window=10)
    with AlertSystem(config, clock=clock, hub=hub) as system:
        recoveries = [reporter(hub, "recovery", f"recovery-{index}") for index in range(MAX_TRACKED_SUBJECTS)]
        for recovery in recoveries:
            attempts(recovery, *["failure"] * 4)
        late = reporter(hub, "recovery", "late")
        attempts(late, *["failure"] * 4)  # no room: the shared window
        assert (
            system.history[-1].attributes["untracked"] == f"more than {MAX_TRACKED_SUBJECTS} recovery systems"
        )
        attempts(recoveries[7], *["success"] * 10)  # back above the threshold: re-armed
        attempts(recoveries[3], *["success"] * 10)
        attempts(late, *["failure"] * 4)  # forgets recovery-7, the least recently seen re-armed
        assert (system.history[-1].subject, "untracked" in system.history[-1].attributes) == ("late", False)
        assert "recovery-7" not in system._rates
        assert "recovery-3" in system._rates
        attempts(recoveries[0], *["failure"] * 10)  # still below in its own window: nothing
        attempts(recoveries[5], "failure")  # a new attempt of a system whose window is kept
        assert system.get_stats()["by_kind"]["low_recovery_rate"] == MAX_TRACKED_SUBJECTS + 2
        assert len(system._rates) == MAX_TRACKED_SUBJECTS


def test_a_name_given_again_past_the_cap_leaves_room_for_the_next_rate_back_at_the_threshold(
    hub: TelemetryHub, clock: FakeClock
) -> None:
    """A window below the threshold forgotten because its name is given again no longer holds its place."""
    config = AlertConfig(min_recovery_attempts=4, recovery_window=10)
    with AlertSystem(config, clock=clock, hub=hub) as system:
        recoveries = [reporter(hub, "recovery", f"gone-{index}") for index in range(MAX_TRACKED_SUBJECTS)]
        for recovery in recoveries:
            attempts(recovery, *["failure"] * 4)
        ErrorRecoverySystem("gone-0", clock=clock)  # a name given again: its rate starts clean
        attempts(reporter(hub, "recovery", "fresh"), *["failure"] * 4)  # the room it left
        attempts(recoveries[9], *["success"] * 10)  # back at the threshold: the one to forget
        attempts(reporter(hub, "recovery", "late"), *["failure"] * 4)
        assert (system.history[-1].subject, "untracked" in system.history[-1].attributes) == ("late", False)
        assert "gone-9" not in system._rates
        assert system.get_stats()["by_kind"]["low_recovery_rate"] == MAX_TRACKED_SUBJECTS + 2


def test_one_recovery_systems_rate_alerts_are_unchanged_by_the_cap(
    hub: TelemetryHub, clock: FakeClock
) -> None:
    """A recovery system alone alerts as before: once per fall below the threshold, its own window, no shared attribute."""
    with AlertSystem(clock=clock, hub=hub) as system:
        recovery = reporter(hub, "recovery", "payments")
        attempts(recovery, *["failure"] * 10)
        clock.advance(5.0)
        attempts(recovery, *["failure"] * 30)
        attempts(recovery, *["success"] * 100)  # back above the threshold: re-armed
        clock.advance(5.0)
        attempts(recovery, *["failure"] * 21)  # 79 of its last 100
        assert [(a.kind, a.subject, a.timestamp, a.summary, dict(a.attributes)) for a in system.history] == [
            (
                AlertKind.LOW_RECOVERY_RATE,
                "payments",
                1000.0,
                "recovery rate of 'payments' fell to 0% over its last 10 attempts (threshold 80%)",
                {
                    "rate": "0.0000",
                    "attempts": "10",
                    "threshold": "0.8",
                    "source.kind": "recovery",
                    "source.name": "payments",
                },
            ),
            (
                AlertKind.LOW_RECOVERY_RATE,
                "payments",
                1010.0,
                "recovery rate of 'payments' fell to 79% over its last 100 attempts (threshold 80%)",
                {
                    "rate": "0.7900",
                    "attempts": "100",
                    "threshold": "0.8",
                    "source.kind": "recovery",
                    "source.name": "payments",
                },
            ),
        ]
        assert len(system._rates) == 1


def test_low_recovery_rate_needs_min_attempts(hub: TelemetryHub, clock: FakeClock) -> None:
    """With the default minimum of 10 attempts, 1 failure out of 2 raises nothing."""
    with AlertSystem(clock=clock, hub=hub) as system:
        attempts(reporter(hub, "recovery", "recovery"), "success", "failure")
        assert system.history == ()
        attempts(reporter(hub, "recovery", "recovery"), *["failure"] * 8)
        assert kinds(system) == [AlertKind.LOW_RECOVERY_RATE]


def test_low_recovery_rate_alerts_once_per_crossing_and_rearms(
    system: AlertSystem, hub: TelemetryHub
) -> None:
    """The rate alert fires once when it falls below the threshold and again only after recovering."""
    tel = reporter(hub, "recovery", "recovery")
    attempts(tel, "failure", "failure", "failure")
    assert system.history == ()
    attempts(tel, "failure")
    assert kinds(system) == [AlertKind.LOW_RECOVERY_RATE]
    alert = system.history[0]
    assert (alert.subject, alert.attributes["rate"], alert.attributes["attempts"]) == (
        "recovery",
        "0.0000",
        "4",
    )
    attempts(tel, *["failure"] * 5)
    assert len(system.history) == 1
    attempts(tel, *["success"] * 8)  # window of 10: 8 successes of 10 -> 0.8, re-armed
    assert len(system.history) == 1
    attempts(tel, "failure", "failure")  # each pushes an old failure out: still 8 of 10
    assert len(system.history) == 1
    attempts(tel, "failure")  # now a success leaves: 7 of 10
    assert kinds(system) == [AlertKind.LOW_RECOVERY_RATE, AlertKind.LOW_RECOVERY_RATE]


@pytest.mark.parametrize(
    ("threshold", "successes", "summary"),
    [
        (0.8, 159, "fell to 79.5% over its last 200 attempts (threshold 80%)"),
        (0.755, 150, "fell to 75% over its last 200 attempts (threshold 75.5%)"),
        (0.8, 0, "fell to 0% over its last 200 attempts (threshold 80%)"),
    ],
)
def test_low_recovery_rate_summary_shows_a_rate_below_the_threshold(
    hub: TelemetryHub, clock: FakeClock, threshold: float, successes: int, summary: str
) -> None:
    """The summary never rounds the rate up to the threshold it fell below, nor rounds the threshold."""
    config = AlertConfig(recovery_rate_threshold=threshold, min_recovery_attempts=200, recovery_window=200)
    with AlertSystem(config, clock=clock, hub=hub) as system:
        attempts(reporter(hub, "recovery", "r"), *["success"] * successes, *["failure"] * (200 - successes))
        (alert,) = system.history
    assert alert.summary == f"recovery rate of 'r' {summary}"


def test_recovery_rate_is_per_recovery_system(system: AlertSystem, hub: TelemetryHub) -> None:
    """Each recovery system has its own window: successes elsewhere do not hide a failing one."""
    attempts(reporter(hub, "recovery", "good"), *["success"] * 10)
    attempts(reporter(hub, "recovery", "bad"), *["failure"] * 4)
    assert [(a.kind, a.subject) for a in system.history] == [(AlertKind.LOW_RECOVERY_RATE, "bad")]


def test_error_pattern_alerts(system: AlertSystem, hub: TelemetryHub) -> None:
    """A detected pattern raises one warning about the operation."""
    reporter(hub, "recovery", "recovery").report(
        Event.PATTERN_DETECTED, PatternDetected("ConnectionError", "fetch", 5, 60.0)
    )
    (alert,) = system.history
    assert (alert.kind, alert.severity, alert.subject) == (
        AlertKind.ERROR_PATTERN,
        AlertSeverity.WARNING,
        "fetch",
    )
    assert dict(alert.attributes) == {
        "error_type": "ConnectionError",
        "operation": "fetch",
        "count": "5",
        "window": "60",
        "source.kind": "recovery",
        "source.name": "recovery",
    }


def test_bulkhead_full_storm_from_many_threads_alerts_once(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """Threads reporting full rejections at once raise one alert per cooldown, not one per thread."""
    pool = reporter(hub, "bulkhead", "shared_pool")
    threads, rounds = 8, 200
    start = threading.Barrier(threads)

    def storm() -> None:
        start.wait()
        for _ in range(rounds):
            pool.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))

    workers = [threading.Thread(target=storm) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert kinds(system) == [AlertKind.BULKHEAD_FULL]
    clock.advance(30.0)
    workers = [threading.Thread(target=storm) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert kinds(system) == [AlertKind.BULKHEAD_FULL] * 2


@pytest.mark.parametrize(("cooldown", "alerts"), [(0.0, 2), (30.0, 1)])
def test_a_rejection_that_found_the_cooldown_over_is_judged_again_when_it_takes_the_lock(
    hub: TelemetryHub, clock: FakeClock, cooldown: float, alerts: int
) -> None:
    """Another thread alerting between a rejection's look and its lock is judged by the cooldown, as in turn.

    Two rejections of one bulkhead at one instant: with no cooldown each alerts, as they do one
    after the other, also when the second thread's alert comes just before the first takes the
    lock; with a cooldown the first one's alert silences the other.
    """
    system = AlertSystem(AlertConfig(bulkhead_cooldown=cooldown), clock=clock, hub=hub)
    pool = reporter(hub, "bulkhead", "shared_pool")

    def reject() -> None:
        pool.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))

    first = threading.Thread(target=reject)
    pause = _Pause(first, reject)  # the other rejection, start to end, as the first takes the lock
    system._lock = _PausingLock(system._lock, pause)  # type: ignore[assignment]
    first.start()
    first.join(timeout=10)
    assert pause.done
    assert kinds(system) == [AlertKind.BULKHEAD_FULL] * alerts
    system.close()


def test_escalation_alerts_with_cooldown(system: AlertSystem, hub: TelemetryHub, clock: FakeClock) -> None:
    """An escalation raises a critical alert, at most once per system and error type per cooldown."""
    tel = reporter(hub, "recovery", "recovery", "policy")
    attempts(tel, "failure", strategy="escalate")
    attempts(tel, "failure", strategy="escalate")
    assert kinds(system) == [AlertKind.RECOVERY_ESCALATED]
    alert = system.history[0]
    assert alert.severity is AlertSeverity.CRITICAL
    assert (alert.attributes["error_type"], alert.attributes["pipeline"]) == ("ConnectionError", "policy")
    clock.advance(DEFAULT_ESCALATION_COOLDOWN)
    attempts(tel, "failure", strategy="escalate")
    assert kinds(system) == [AlertKind.RECOVERY_ESCALATED] * 2


def test_patterns_of_two_modules_namesakes_raise_alerts_that_say_which_function(clock: FakeClock) -> None:
    """``users.fetch`` and ``orders.fetch`` are two patterns: their alerts name the module, not only ``fetch``."""
    recovery = ErrorRecoverySystem("namesake-recovery", clock=clock, pattern_threshold=2)
    with AlertSystem(clock=clock) as system:
        for module in ("users", "orders"):
            namespace: dict[str, Any] = {"__name__": module}
            exec("def fetch():\n    raise ConnectionError(" + repr(module) + ")\n", namespace)
            for _ in range(2):
                with pytest.raises(ConnectionError):
                    recovery.execute_sync(namespace["fetch"])
    users, orders = system.history
    assert (users.kind, orders.kind) == (AlertKind.ERROR_PATTERN, AlertKind.ERROR_PATTERN)
    assert users.summary == "ConnectionError in 'fetch' (module 'users') repeated 2 times within 60 s"
    assert orders.summary == "ConnectionError in 'fetch' (module 'orders') repeated 2 times within 60 s"
    assert (users.attributes["module"], orders.attributes["module"]) == ("users", "orders")
    assert users.subject == orders.subject == "fetch"


def test_a_pattern_of_a_named_operation_says_no_module(clock: FakeClock) -> None:
    """An operation the caller named is no function's: its alert reads as before, with no module."""
    recovery = ErrorRecoverySystem("named-op-recovery", clock=clock, pattern_threshold=2)
    with AlertSystem(clock=clock) as system:
        for _ in range(2):
            with pytest.raises(KeyError):
                recovery.recover_from_error_sync(KeyError("k"), {"operation_name": "lookup"})
    (alert,) = system.history
    assert alert.summary == "KeyError in 'lookup' repeated 2 times within 60 s"
    assert "module" not in alert.attributes


def test_alerts_from_a_real_recovery_system(clock: FakeClock) -> None:
    """An ErrorRecoverySystem's escalations and patterns on the global hub raise alerts end to end."""
    recovery = ErrorRecoverySystem("e2e-recovery", clock=clock, pattern_threshold=2)
    recovery.register_recovery_rule(KeyError, RecoveryAction(RecoveryStrategy.ESCALATE))
    with AlertSystem(clock=clock) as system:
        for _ in range(2):
            with pytest.raises(Exception, match="escalated"):
                recovery.recover_from_error_sync(KeyError("k"), {"operation_name": "lookup"})
    assert kinds(system) == [AlertKind.RECOVERY_ESCALATED, AlertKind.ERROR_PATTERN]
    assert system.history[0].subject == "e2e-recovery"
    assert system.history[1].subject == "lookup"


def test_escalations_of_error_types_named_alike_up_to_the_attribute_limit_alert_each(
    clock: FakeClock,
) -> None:
    """Two classes whose names differ only past the attribute limit are two error types: two alerts."""
    recovery = ErrorRecoverySystem("long-types-recovery", clock=clock)
    stem = "Refused" * MAX_ATTRIBUTE_LENGTH
    first, second = (type(stem + tail, (ConnectionError,), {}) for tail in ("A", "B"))
    recovery.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.ESCALATE))
    with AlertSystem(clock=clock) as system, EventRecorder() as recorder:
        for kind in (first, second, second):
            with pytest.raises(RecoveryEscalatedError):
                recovery.recover_from_error_sync(kind(), {"operation_name": "op"})
    assert kinds(system) == [AlertKind.RECOVERY_ESCALATED] * 2  # the second's own cooldown silenced it once
    one, other = system.history
    assert one.summary != other.summary  # two error types never read alike
    assert all(len(alert.summary) <= MAX_ATTRIBUTE_LENGTH for alert in system.history)
    shown = error_type_name(first())
    assert shown == error_type_name(second())  # telemetry shows them by one bounded name, as before
    assert one.attributes["error_type"] == other.attributes["error_type"] == shown
    attempted = recorder.of(Event.RECOVERY_ATTEMPTED)
    assert attempted == [RecoveryAttempted("escalate", "failure", shown)] * 3


# -- delivery ----------------------------------------------------------------------------------


def test_alert_raised_is_reported_without_recursion(system: AlertSystem, hub: TelemetryHub) -> None:
    """Each alert is reported once as ALERT_RAISED from the "alerts" source, and raises no further alert."""
    with EventRecorder(hub) as recorder:
        open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert len(system.history) == 1
    (raised,) = recorder.of(Event.ALERT_RAISED)
    assert isinstance(raised, AlertRaised)
    assert (raised.kind, raised.severity, raised.subject) == ("circuit_open", "critical", "db")
    assert recorder.sources(Event.ALERT_RAISED) == [TelemetrySource("alerts", "alerts")]


def test_subscribers_receive_alerts_and_can_unsubscribe(system: AlertSystem, hub: TelemetryHub) -> None:
    """A subscriber gets every alert until it unsubscribes; unsubscribing twice is harmless."""
    received: list[Alert] = []
    unsubscribe = system.subscribe(received.append)
    tel = reporter(hub, "circuit_breaker", "db")
    open_breaker(tel)
    assert [a.kind for a in received] == [AlertKind.CIRCUIT_OPEN]
    assert system.get_stats()["subscribers"] == 1
    unsubscribe()
    unsubscribe()
    open_breaker(tel)
    assert len(received) == 1
    assert system.get_stats()["subscribers"] == 0
    with pytest.raises(TypeError, match=r"AlertSystem\.subscribe\.callback must be callable"):
        system.subscribe("print")  # type: ignore[arg-type]


def test_a_callback_that_cannot_take_the_alert_is_refused_at_subscribe(system: AlertSystem) -> None:
    """Called as ``callback(alert)``: one that cannot take it is refused naming it (was: subscribed,
    then every alert logged and counted Python's ``TypeError`` in ``callback_errors``)."""
    for callback in (lambda: None, lambda alert, extra: None):
        with pytest.raises(
            TypeError, match=r"^AlertSystem\.subscribe\.callback must be callable as callback\(alert\)"
        ):
            system.subscribe(callback)
        with pytest.raises(
            TypeError, match=r"^AlertSystem\.subscribe\.callback must be callable as callback\(alert\)"
        ):
            alerts_module.subscribe(callback)
    assert system.get_stats()["subscribers"] == 0


def test_failing_callback_is_logged_and_counted(
    system: AlertSystem, hub: TelemetryHub, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber that raises never reaches the reporter; later subscribers still get the alert."""

    def broken(alert: Alert) -> None:
        raise RuntimeError("subscriber bug")

    received: list[Alert] = []
    system.subscribe(broken)
    system.subscribe(received.append)
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert len(received) == 1
    assert system.get_stats()["callback_errors"] == 1
    assert hub.errors == 0
    assert "alert subscriber" in caplog.text


def test_an_async_subscriber_fired_from_a_thread_with_no_loop_runs_to_completion_there(
    system: AlertSystem, hub: TelemetryHub
) -> None:
    """An async subscriber runs as a breaker's async callbacks do: reported from a thread with no
    running loop, to completion in a loop of its own there, before the report returns (was: refused
    at subscribe, "must be a sync callable")."""
    awaited: list[tuple[str, int]] = []

    async def notify(alert: Alert) -> None:
        await asyncio.sleep(0)
        awaited.append((alert.subject, threading.get_ident()))

    system.subscribe(notify)
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert awaited == [("db", threading.get_ident())]
    assert system.get_stats()["callback_errors"] == 0


def test_an_async_subscriber_fired_in_a_running_loop_runs_as_a_task_of_it(
    system: AlertSystem, hub: TelemetryHub
) -> None:
    """Reported from a coroutine, an async subscriber runs as a task of the running loop: the report
    does not wait for it (the process-wide ``subscribe`` takes one too)."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def notify(alert: Alert) -> None:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())

    async def main() -> None:
        system.subscribe(notify)
        unsubscribe = alerts_module.subscribe(notify)
        try:
            open_breaker(reporter(hub, "circuit_breaker", "db"))
            assert loops == []  # not yet: a task of this loop
            for _ in range(5):
                await asyncio.sleep(0)
            assert loops == [asyncio.get_running_loop()]
        finally:
            unsubscribe()

    asyncio.run(main())
    assert system.get_stats()["callback_errors"] == 0


@pytest.mark.parametrize("in_loop", [False, True], ids=["thread", "loop"])
def test_an_async_subscriber_that_raises_is_logged_and_counted(
    system: AlertSystem, hub: TelemetryHub, caplog: pytest.LogCaptureFixture, in_loop: bool
) -> None:
    """What an async subscriber raises, in its own loop or as a task, is logged and counted as a sync
    one's is, and never reaches the reporter."""

    async def broken(alert: Alert) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("subscriber bug")

    system.subscribe(broken)

    async def main() -> None:
        open_breaker(reporter(hub, "circuit_breaker", "db"))
        for _ in range(5):
            await asyncio.sleep(0)

    if in_loop:
        asyncio.run(main())
    else:
        open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert system.get_stats()["callback_errors"] == 1
    assert hub.errors == 0
    assert "alert subscriber" in caplog.text
    assert "subscriber bug" in caplog.text
    # The subscriber's error alone: not chained to the look for a running loop (was: "RuntimeError:
    # no running event loop", then "During handling of the above exception...").
    assert "no running event loop" not in caplog.text
    assert "During handling" not in caplog.text


def test_a_generator_function_is_refused_at_subscribe(system: AlertSystem, hub: TelemetryHub) -> None:
    """A generator function's body runs only as its iterator is consumed, which no one does: refused."""

    def notify(alert: Alert) -> Iterator[None]:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it a generator function

    async def notify_async(alert: Alert) -> Any:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it an async generator function

    for callback in (notify, notify_async):
        with pytest.raises(
            TypeError, match=r"AlertSystem\.subscribe\.callback must be a function or an async function"
        ):
            system.subscribe(callback)
        with pytest.raises(
            TypeError, match=r"AlertSystem\.subscribe\.callback must be a function or an async function"
        ):
            alerts_module.subscribe(callback)
    assert system.get_stats()["subscribers"] == 0


def test_an_object_whose_call_is_a_generator_function_is_refused_at_subscribe(system: AlertSystem) -> None:
    """A callable object whose ``__call__`` is a generator function, sync or async, never runs its body: refused."""

    class Notifier:
        def __call__(self, alert: Alert) -> Iterator[None]:
            raise AssertionError("never run")
            yield  # pragma: no cover - makes it a generator function

    class AsyncNotifier:
        async def __call__(self, alert: Alert) -> Any:
            raise AssertionError("never run")
            yield  # pragma: no cover - makes it an async generator function

    for callback in (Notifier(), AsyncNotifier()):
        with pytest.raises(
            TypeError, match=r"AlertSystem\.subscribe\.callback must be a function or an async function"
        ):
            system.subscribe(callback)
        with pytest.raises(
            TypeError, match=r"AlertSystem\.subscribe\.callback must be a function or an async function"
        ):
            alerts_module.subscribe(callback)
    assert system.get_stats()["subscribers"] == 0


def test_callback_returning_a_coroutine_runs_it(system: AlertSystem, hub: TelemetryHub) -> None:
    """A sync callback that returns a coroutine (a lambda calling an async function) has it run, as a
    breaker's callback has (was: closed, logged and counted as failed)."""
    awaited: list[Alert] = []

    async def notify(alert: Alert) -> None:
        awaited.append(alert)

    system.subscribe(lambda alert: notify(alert))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        open_breaker(reporter(hub, "circuit_breaker", "db"))
        gc.collect()
    assert [alert.subject for alert in awaited] == ["db"]
    assert system.get_stats()["callback_errors"] == 0


def test_callback_returning_a_generator_is_counted_as_failed(
    system: AlertSystem, hub: TelemetryHub, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber that returns a generator (sync or async) never runs its body: logged, counted."""
    ran: list[str] = []
    seen: list[Alert] = []

    def notify(alert: Alert) -> Iterator[None]:
        ran.append("generator")
        yield

    def notify_async(alert: Alert) -> Any:
        async def notifying() -> Any:
            ran.append("async generator")
            yield

        return notifying()

    for callback in (lambda alert: notify(alert), notify_async, seen.append):
        system.subscribe(callback)
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert ran == []
    assert [alert.subject for alert in seen] == ["db"]
    assert system.get_stats()["callback_errors"] == 2
    assert caplog.text.count("alert subscriber") == 2
    assert "never runs" in caplog.text


def test_history_is_bounded_and_stats_count_by_kind(hub: TelemetryHub, clock: FakeClock) -> None:
    """The history keeps the most recent alerts only; stats count every alert by kind."""
    with AlertSystem(AlertConfig(history_size=2), clock=clock, hub=hub) as system:
        for name in ("a", "b", "c"):
            open_breaker(reporter(hub, "circuit_breaker", name))
        reporter(hub, "bulkhead", "pool").report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
        assert [a.subject for a in system.history] == ["c", "pool"]
        stats = system.get_stats()
    assert stats["total"] == 4
    assert stats["by_kind"] == {
        "circuit_open": 3,
        "bulkhead_full": 1,
        "low_recovery_rate": 0,
        "error_pattern": 0,
        "recovery_escalated": 0,
    }


def test_attributes_are_bounded_and_read_only(system: AlertSystem, hub: TelemetryHub) -> None:
    """Long subjects and values are cut to MAX_ATTRIBUTE_LENGTH and the attributes cannot be changed."""
    long_name = "x" * 1000
    reporter(hub, "recovery", "r").report(Event.PATTERN_DETECTED, PatternDetected("E", long_name, 5, 1.0))
    (alert,) = system.history
    assert len(alert.subject) == MAX_ATTRIBUTE_LENGTH
    assert alert.subject.endswith("...")
    assert all(len(value) <= MAX_ATTRIBUTE_LENGTH for value in alert.attributes.values())
    with pytest.raises(TypeError):
        alert.attributes["operation"] = "y"  # type: ignore[index]


def test_summaries_are_cut_as_every_value(system: AlertSystem, hub: TelemetryHub) -> None:
    """A summary made of long names (each cut already) is itself cut to MAX_ATTRIBUTE_LENGTH, as a key is."""
    name, key = "b" * MAX_ATTRIBUTE_LENGTH, "k" * 1000
    tel = StrategyTelemetry(TelemetrySource("circuit_breaker", name, key=key), hub)
    open_breaker(tel)
    StrategyTelemetry(TelemetrySource("bulkhead", name, key=key), hub).report(
        Event.CALL_REJECTED, CallRejected("bulkhead_full")
    )
    long = "x" * 1000
    reporter(hub, "recovery", "r").report(Event.PATTERN_DETECTED, PatternDetected(long, long, 5, 1.0))
    attempts(reporter(hub, "recovery", name), "failure", "failure", strategy="escalate")
    assert kinds(system) == [
        AlertKind.CIRCUIT_OPEN,
        AlertKind.BULKHEAD_FULL,
        AlertKind.ERROR_PATTERN,
        AlertKind.RECOVERY_ESCALATED,
    ]
    for alert in system.history:
        assert len(alert.summary) == MAX_ATTRIBUTE_LENGTH, alert.kind
        assert "...#" in alert.summary[-20:], alert.kind  # a digest of the whole: two subjects, two summaries
        assert alert.summary.startswith(("circuit breaker 'bbb", "bulkhead 'bbb", "xxx", "ConnectionError"))


def test_alerts_are_hashable_values(system: AlertSystem, hub: TelemetryHub, clock: FakeClock) -> None:
    """An alert (a frozen value) can be hashed: kept in a set or used as a key; equal alerts hash alike."""
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    reporter(hub, "bulkhead", "pool").report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    opened, full = system.history
    assert len({opened, full, opened}) == 2
    copy = Alert(
        opened.kind, opened.severity, opened.subject, opened.summary, opened.timestamp, opened.attributes
    )
    assert copy == opened
    assert hash(copy) == hash(opened)
    assert isinstance(
        hash(Alert(AlertKind.ERROR_PATTERN, AlertSeverity.WARNING, "op", "x", clock.now())), int
    )


def test_alerts_can_be_pickled_copied_and_turned_into_dicts(
    system: AlertSystem, hub: TelemetryHub, clock: FakeClock
) -> None:
    """An alert a subscriber hands on (to another process, a deep copy, ``asdict``) keeps its read-only attributes."""
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    (alert,) = system.history
    for again in (pickle.loads(pickle.dumps(alert)), copy.deepcopy(alert), copy.copy(alert)):
        assert again == alert
        assert hash(again) == hash(alert)
        assert dict(again.attributes) == dict(alert.attributes)
        with pytest.raises(TypeError):
            again.attributes["reason"] = "y"  # type: ignore[index]
    fields = dataclasses.asdict(alert)
    assert dict(fields["attributes"]) == {
        "old": "closed",
        "reason": "failure_threshold",
        "reopens": "0",
        "source.kind": "circuit_breaker",
        "source.name": "db",
    }
    assert fields["kind"] is AlertKind.CIRCUIT_OPEN
    bare = Alert(AlertKind.ERROR_PATTERN, AlertSeverity.WARNING, "op", "x", clock.now())
    assert pickle.loads(pickle.dumps(bare)) == bare
    assert dataclasses.asdict(bare)["attributes"] == {}


def test_close_stops_listening(hub: TelemetryHub, clock: FakeClock) -> None:
    """After close the system is off the hub and raises nothing more."""
    system = AlertSystem(clock=clock, hub=hub)
    assert system in hub.event_listeners
    system.close()
    system.close()
    assert system.closed
    assert system not in hub.event_listeners
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert system.history == ()


def test_a_system_closed_while_an_event_is_on_its_way_raises_nothing_for_it(
    hub: TelemetryHub, clock: FakeClock
) -> None:
    """An event already routed to it when it was closed (another listener's, or another thread's,
    dispatch) raises no alert after close() returned: the system taking its place alerts once."""
    closing: list[AlertSystem] = []

    class Closer:
        def on_event(self, source: TelemetrySource, event: Event, args: object) -> None:
            if event is Event.STATE_CHANGED:
                closing[0].close()

    hub.add_listener(Closer())
    closed, successor = AlertSystem(clock=clock, hub=hub), AlertSystem(clock=clock, hub=hub)
    closing.append(closed)
    heard: list[Alert] = []
    closed.subscribe(heard.append)
    open_breaker(reporter(hub, "circuit_breaker", "db"))
    assert closed.closed
    assert (closed.history, heard, closed.get_stats()["total"]) == ((), [], 0)
    assert kinds(successor) == [AlertKind.CIRCUIT_OPEN]


def test_subscribe_while_raising_from_many_threads(system: AlertSystem, hub: TelemetryHub) -> None:
    """Alerts raised from many threads while others (un)subscribe are all counted and delivered."""
    steady: list[Alert] = []
    lock = threading.Lock()

    def collect(alert: Alert) -> None:
        with lock:
            steady.append(alert)

    system.subscribe(collect)
    raisers, churners, per_thread = 4, 4, 200
    barrier = threading.Barrier(raisers + churners)
    failures: list[BaseException] = []

    def raiser(index: int) -> None:
        tel = reporter(hub, "circuit_breaker", f"b{index}")
        try:
            barrier.wait(timeout=5)
            for _ in range(per_thread):
                open_breaker(tel)
        except BaseException as exc:
            failures.append(exc)

    def churner() -> None:
        try:
            barrier.wait(timeout=5)
            for _ in range(per_thread):
                system.subscribe(lambda alert: None)()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=raiser, args=(i,)) for i in range(raisers)]
    threads += [threading.Thread(target=churner) for _ in range(churners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not failures
    assert len(steady) == raisers * per_thread
    stats = system.get_stats()
    assert stats["by_kind"]["circuit_open"] == raisers * per_thread
    assert stats["subscribers"] == 1


# -- the process-wide system -------------------------------------------------------------------


@pytest.fixture
def fresh_default() -> Iterator[None]:
    """Close the process-wide alert system after the test, so other tests see a quiet global hub."""
    yield
    default_alert_system().close()


@pytest.mark.usefixtures("fresh_default")
def test_default_system_is_lazy_shared_and_on_the_global_hub() -> None:
    """default_alert_system returns one instance on the global hub; module subscribe delegates to it."""
    first = default_alert_system()
    assert default_alert_system() is first
    assert first in HUB.event_listeners
    received: list[Alert] = []
    unsubscribe = alerts_module.subscribe(received.append)
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "global-db")))
    unsubscribe()
    assert [(a.kind, a.subject) for a in received] == [(AlertKind.CIRCUIT_OPEN, "global-db")]
    first.close()
    second = default_alert_system()
    assert second is not first
    assert second in HUB.event_listeners
    assert first not in HUB.event_listeners


@pytest.mark.usefixtures("fresh_default")
def test_default_system_is_created_once_under_contention() -> None:
    """Threads asking for the default system at once all get the same instance."""
    default_alert_system().close()
    threads = 8
    barrier = threading.Barrier(threads)
    got: list[AlertSystem] = []

    def worker() -> None:
        barrier.wait(timeout=5)
        got.append(default_alert_system())

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=10)
    assert len(got) == threads
    assert len({id(s) for s in got}) == 1
    assert sum(1 for listener in HUB.event_listeners if isinstance(listener, AlertSystem)) == 1


def _trip_breaker(clock: FakeClock) -> str:
    breaker = CircuitBreaker("early-breaker", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call_sync(_raise_connection_error)
    return "early-breaker"


def _fill_bulkhead(clock: FakeClock) -> str:
    bulkhead = Bulkhead("early-bulkhead", BulkheadConfig(max_concurrent=1, max_waiting=0), clock=clock)
    with pytest.raises(BulkheadFullError):
        bulkhead.execute_sync(bulkhead.execute_sync, lambda: None)  # the inner call finds the slot taken
    return "early-bulkhead"


def _escalate(clock: FakeClock) -> str:
    recovery = ErrorRecoverySystem("early-recovery", clock=clock)
    recovery.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.ESCALATE))
    with pytest.raises(RecoveryEscalatedError):
        recovery.recover_from_error_sync(ConnectionError())
    return "early-recovery"


def _raise_connection_error() -> None:
    raise ConnectionError


@pytest.mark.usefixtures("fresh_default")
@pytest.mark.parametrize(
    ("act", "kind"),
    [
        (_trip_breaker, AlertKind.CIRCUIT_OPEN),
        (_fill_bulkhead, AlertKind.BULKHEAD_FULL),
        (_escalate, AlertKind.RECOVERY_ESCALATED),
    ],
    ids=["breaker", "bulkhead", "recovery"],
)
def test_default_system_exists_with_the_first_pattern(act: Any, kind: AlertKind, clock: FakeClock) -> None:
    """A pattern that alerts before anyone asked for the default alert system still has its alert recorded."""
    default_alert_system().close()
    subject = act(clock)
    assert [(a.kind, a.subject) for a in default_alert_system().history] == [(kind, subject)]


def _alert_systems() -> list[AlertSystem]:
    """The alert systems on the global hub (an application's by its weak proxy, equal to it)."""
    return [listener for listener in HUB.event_listeners if isinstance(listener, AlertSystem)]


@pytest.mark.usefixtures("fresh_default")
def test_no_default_system_beside_the_applications_own(clock: FakeClock) -> None:
    """The first breaker creates the default alert system, unless the application's own one listens already."""
    default_alert_system().close()
    assert _alert_systems() == []
    CircuitBreaker("first-breaker", clock=clock)
    (created,) = _alert_systems()
    assert created is default_alert_system()
    created.close()
    with AlertSystem(clock=clock) as own:
        _trip_breaker(clock)
        assert _alert_systems() == [own]
        assert kinds(own) == [AlertKind.CIRCUIT_OPEN]


def test_a_manager_refuses_an_alert_system_that_does_not_hear_its_patterns(
    hub: TelemetryHub, clock: FakeClock
) -> None:
    """An alert system that is closed, or listens on another hub, never counts the manager's alerts: refused."""
    closed = AlertSystem(clock=clock)
    closed.close()
    with AlertSystem(clock=clock, hub=hub) as elsewhere:
        for refused in (closed, elsewhere):
            with pytest.raises(ValueError, match=r"ResilienceManager\.alert_system must be .*global hub"):
                ResilienceManager(clock=clock, alert_system=refused)
    with AlertSystem(clock=clock) as listening:
        assert ResilienceManager(clock=clock, alert_system=listening).alert_system is listening


@pytest.mark.usefixtures("fresh_default")
def test_a_manager_given_no_alert_system_reports_through_the_applications_own(clock: FakeClock) -> None:
    """A manager (and ``subscribe``) made after the application's alert system use it: each alert is raised once."""
    default_alert_system().close()
    with AlertSystem(clock=clock) as own, EventRecorder() as recorder:
        manager = ResilienceManager(clock=clock)
        subscribed: list[Alert] = []
        unsubscribe = alerts_module.subscribe(subscribed.append)
        config = ResilienceConfig(
            name="own-alerts", circuit_breaker=CircuitBreakerConfig(failure_threshold=1)
        )
        with pytest.raises(ConnectionError):
            manager.execute_with_resilience_sync(_raise_connection_error, config)
        unsubscribe()
        assert manager.alert_system is own
        assert _alert_systems() == [own]
        assert [(a.kind, a.subject) for a in subscribed] == [(AlertKind.CIRCUIT_OPEN, "own-alerts")]
        raised = [args for args in recorder.of(Event.ALERT_RAISED) if isinstance(args, AlertRaised)]
        assert [(args.kind, args.subject) for args in raised] == [("circuit_open", "own-alerts")]
        assert manager.get_resilience_statistics()["alerts"]["total"] == 1


@pytest.mark.usefixtures("fresh_default")
def test_the_process_wide_system_is_made_again_once_the_applications_own_is_closed(clock: FakeClock) -> None:
    """The application's alert system stands in only while it listens: closed, the process-wide one is made."""
    default_alert_system().close()
    with AlertSystem(clock=clock) as own:
        assert default_alert_system() is own
    made = default_alert_system()
    assert made is not own
    assert _alert_systems() == [made]


def _open_policy_breaker(manager: ResilienceManager, name: str) -> None:
    """Open the breaker of a new policy ``name`` of ``manager``: one ``circuit_open`` alert."""
    config = ResilienceConfig(name=name, circuit_breaker=CircuitBreakerConfig(failure_threshold=1))
    with pytest.raises(ConnectionError):
        manager.execute_with_resilience_sync(_raise_connection_error, config)


def _alert_counts(manager: ResilienceManager) -> tuple[int, int]:
    stats = manager.get_resilience_statistics()["alerts"]
    return stats["total"], stats["by_kind"]["circuit_open"]


def _closed_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "alert statistics carry on" in r.getMessage()]


@pytest.mark.usefixtures("fresh_default")
def test_a_managers_alert_counts_carry_on_once_its_alert_system_is_closed(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the alert system a manager was given neither freezes nor loses the manager's alert counts.

    The manager says so (a warning, once) and reports the alert system standing in for the
    process-wide one, made for the manager's next pattern; the closed system keeps its own counts.
    """
    default_alert_system().close()
    own = AlertSystem(clock=clock)
    manager = ResilienceManager(clock=clock, alert_system=own)
    _open_policy_breaker(manager, "before-close")
    assert _alert_counts(manager) == (1, 1)
    own.close()
    _open_policy_breaker(manager, "after-close")
    assert _alert_counts(manager) == (2, 2)
    assert manager.alert_system is default_alert_system()
    assert manager.alert_system is not own
    assert own.get_stats()["total"] == 1
    assert len(_closed_warnings(caplog)) == 1
    assert repr(own) in _closed_warnings(caplog)[0]
    _open_policy_breaker(manager, "later")
    assert _alert_counts(manager) == (3, 3)
    assert len(_closed_warnings(caplog)) == 1


@pytest.mark.usefixtures("fresh_default")
@pytest.mark.parametrize("read_between", [True, False], ids=["read-after-each-close", "read-at-the-end"])
def test_a_manager_counts_each_alert_once_across_closes_of_its_alert_systems(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, read_between: bool
) -> None:
    """Alerts heard by the successor before the close are not the manager's; those after it all are.

    The process-wide system listens beside the application's own from the start: it counts what
    the closed one counted (not counted twice) and what came after the close, before the manager
    next read its statistics (none lost). Its own close in turn hands over to the one made next,
    whether or not the manager read its statistics in between.
    """
    default_alert_system().close()
    earlier = ResilienceManager(clock=clock)
    _open_policy_breaker(earlier, "heard-before-the-manager")
    process_wide = default_alert_system()
    own = AlertSystem(clock=clock)
    assert _alert_systems() == [process_wide, own]
    manager = ResilienceManager(clock=clock, alert_system=own)
    _open_policy_breaker(manager, "heard-by-both")
    own.close()
    _open_policy_breaker(manager, "after-the-close")
    _open_policy_breaker(earlier, "after-the-close-elsewhere")
    assert process_wide.get_stats()["total"] == 4
    if read_between:
        assert _alert_counts(manager) == (3, 3)
        assert manager.alert_system is process_wide
    process_wide.close()
    _open_policy_breaker(manager, "after-the-second-close")
    assert _alert_counts(manager) == (4, 4)
    assert manager.alert_system is default_alert_system() is not process_wide
    assert (
        len(_closed_warnings(caplog)) == 1
    )  # the system given was left once; the process-wide one is followed


@pytest.mark.usefixtures("fresh_default")
def test_a_manager_given_no_alert_system_follows_the_process_wide_one_when_it_is_closed(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A manager given no alert system reports the process-wide role: closed and made again, its counts go on."""
    default_alert_system().close()
    manager = ResilienceManager(clock=clock)
    _open_policy_breaker(manager, "first-instance")
    first = manager.alert_system
    first.close()
    _open_policy_breaker(manager, "second-instance")
    assert _alert_counts(manager) == (2, 2)
    assert manager.alert_system is default_alert_system() is not first
    assert _closed_warnings(caplog) == []


def test_hub_spares_the_alert_system_events_it_cannot_alert_on(
    system: AlertSystem, hub: TelemetryHub
) -> None:
    """Breaker rejections and retries are not routed to the alert system; bulkhead rejections and state changes are."""
    breaker = TelemetrySource("circuit_breaker", "b")
    assert system not in hub.route(breaker, Event.CALL_REJECTED)
    assert system not in hub.route(TelemetrySource("retry", "r"), Event.RETRY_SCHEDULED)
    assert system in hub.route(TelemetrySource("bulkhead", "h"), Event.CALL_REJECTED)
    assert system in hub.route(breaker, Event.STATE_CHANGED)
    assert system in hub.route(TelemetrySource("recovery", "x"), Event.PATTERN_DETECTED)
    assert not StrategyTelemetry(breaker, hub).wants(Event.CALL_REJECTED)


# -- lifetime: an alert system lives as long as its owner holds it ------------------------------


class _Sink:
    """A subscriber whose lifetime a test can watch."""

    def __init__(self) -> None:
        self.received: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.received.append(alert)


@pytest.mark.parametrize("cycle", [False, True], ids=["plain", "subscriber-holding-the-system"])
def test_an_alert_system_dropped_without_close_is_freed_and_hears_nothing(
    hub: TelemetryHub, clock: FakeClock, cycle: bool
) -> None:
    """The hub does not keep an alert system alive: dropped, it and its subscribers are freed and leave the hub."""
    sink = _Sink()
    system = AlertSystem(clock=clock, hub=hub)
    unsubscribe = system.subscribe(sink)  # kept: it does not keep the system alive
    if cycle:  # a subscriber that reads the system keeps it in a reference cycle
        system.subscribe(lambda alert, owner=system: owner.history)
    open_breaker(reporter(hub, "circuit_breaker", "before"))
    assert [alert.subject for alert in sink.received] == ["before"]
    system_ref, sink_ref = weakref.ref(system), weakref.ref(sink)
    del system, sink
    gc.collect()
    assert system_ref() is None
    assert sink_ref() is None
    assert hub.event_listeners == ()
    open_breaker(reporter(hub, "circuit_breaker", "after"))
    bulkhead = reporter(hub, "bulkhead", "pool")
    bulkhead.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    assert hub.errors == 0
    unsubscribe()


@pytest.mark.usefixtures("fresh_default")
def test_an_applications_alert_system_dropped_without_close_no_longer_stands_in(clock: FakeClock) -> None:
    """Dropped, the application's own alert system is freed; the process-wide one takes its place."""
    default_alert_system().close()
    own = AlertSystem(clock=clock)
    assert default_alert_system() is own
    own_ref = weakref.ref(own)
    del own
    gc.collect()
    assert own_ref() is None
    made = default_alert_system()
    assert _alert_systems() == [made]
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "after-own")))
    assert [alert.subject for alert in made.history] == ["after-own"]


@pytest.mark.usefixtures("fresh_default")
@pytest.mark.parametrize("leave", ["close", "drop"])
def test_a_subscription_made_while_the_applications_own_stands_in_moves_to_the_process_wide_one(
    clock: FakeClock, leave: str
) -> None:
    """``subscribe()`` follows the process-wide alert system: once the application's own stops, its successor."""
    default_alert_system().close()
    own = AlertSystem(clock=clock)
    received: list[Alert] = []
    unsubscribe = alerts_module.subscribe(received.append)
    assert own.get_stats()["subscribers"] == 1
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "while-own")))
    if leave == "close":
        own.close()
        assert own.get_stats()["subscribers"] == 1  # until a successor takes the subscription over
    else:
        del own
        gc.collect()
    made = default_alert_system()
    assert _alert_systems() == [made]
    assert made.get_stats()["subscribers"] == 1
    if leave == "close":
        assert own.get_stats()["subscribers"] == 0  # taken over, not copied: each alert is delivered once
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "after-own")))
    assert [alert.subject for alert in received] == ["while-own", "after-own"]
    made.close()
    successor = default_alert_system()
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "after-successor")))
    assert [alert.subject for alert in received] == ["while-own", "after-own", "after-successor"]
    unsubscribe()
    unsubscribe()
    assert successor.get_stats()["subscribers"] == 0
    open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "unsubscribed")))
    assert [alert.subject for alert in received] == ["while-own", "after-own", "after-successor"]


@pytest.mark.usefixtures("fresh_default")
def test_a_module_subscription_moves_at_the_close_to_the_system_already_standing_in(clock: FakeClock) -> None:
    """Closed, the application's system hands ``subscribe()``'s subscriptions to the one listening beside it at once.

    That one stands in from the close on and alerts: its alerts reach the subscriber without
    waiting for a pattern, a manager or ``default_alert_system()`` to look it up, and each once.
    """
    default_alert_system().close()
    own, beside = AlertSystem(clock=clock), AlertSystem(clock=clock)
    received: list[Alert] = []
    unsubscribe = alerts_module.subscribe(received.append)
    try:
        open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "while-own")))
        own.close()
        assert (own.get_stats()["subscribers"], beside.get_stats()["subscribers"]) == (0, 1)
        open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "after-own")))
        assert [alert.subject for alert in received] == ["while-own", "after-own"]
        assert default_alert_system() is beside
        open_breaker(StrategyTelemetry(TelemetrySource("circuit_breaker", "looked-up")))
        assert [alert.subject for alert in received] == ["while-own", "after-own", "looked-up"]
    finally:
        unsubscribe()
        beside.close()
    assert beside.get_stats()["subscribers"] == 0


@pytest.mark.usefixtures("fresh_default")
def test_a_refused_module_subscription_is_not_kept(clock: FakeClock) -> None:
    """A generator function refused by ``subscribe()`` is not carried to a later process-wide system."""
    default_alert_system().close()

    def handler(alert: Alert) -> Iterator[None]:  # pragma: no cover - refused
        del alert
        yield

    with pytest.raises(TypeError, match="not a generator function"):
        alerts_module.subscribe(handler)
    default_alert_system().close()
    assert default_alert_system().get_stats()["subscribers"] == 0


class _Pause:
    """Once: when ``pauser`` first takes a lock, runs ``meanwhile`` in another thread to its end first."""

    def __init__(self, pauser: threading.Thread, meanwhile: Any) -> None:
        self._pauser = pauser
        self._meanwhile = meanwhile
        self.done = False

    def __call__(self) -> None:
        if threading.current_thread() is self._pauser and not self.done:
            self.done = True
            other = threading.Thread(target=self._meanwhile)
            other.start()
            other.join(timeout=10)


class _PausingLock:
    """A lock that calls ``pause`` before each acquisition."""

    def __init__(self, lock: Any, pause: _Pause) -> None:
        self._lock = lock
        self._pause = pause

    def __enter__(self) -> _PausingLock:
        self._pause()
        self._lock.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)


@pytest.mark.usefixtures("fresh_default")
def test_an_alert_system_made_while_the_process_wide_one_is_looked_for_stands_in(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking for the application's system and making the process-wide one is one step: never two systems.

    The application's system is made (in another thread) just as ``default_alert_system()`` takes
    the module's lock: it is found, and no process-wide system is made beside it.
    """
    default_alert_system().close()
    made: list[AlertSystem] = []
    got: list[AlertSystem] = []
    barrier = threading.Barrier(2)

    def look() -> None:
        barrier.wait(timeout=10)
        got.append(default_alert_system())

    looker = threading.Thread(target=look)
    pause = _Pause(looker, lambda: made.append(AlertSystem(clock=clock)))
    for module, name in ((system_module, "_ALERT_SYSTEMS_LOCK"), (alerts_module, "_DEFAULT_LOCK")):
        monkeypatch.setattr(module, name, _PausingLock(getattr(module, name), pause))
    looker.start()
    barrier.wait(timeout=10)
    looker.join(timeout=10)
    assert pause.done
    (own,) = made
    try:
        assert got == [own]
        assert _alert_systems() == [own]
    finally:
        own.close()


@pytest.mark.parametrize("wants", ["raises", "says yes"])
def test_an_alert_system_counts_no_rejection_but_a_bulkheads_whatever_routed_it(
    hub: TelemetryHub, clock: FakeClock, wants: str
) -> None:
    """Only a bulkhead's rejections count towards ``bulkhead_full``: a breaker's (or a rate limiter's)
    routed to the system anyway (its ``wants`` overridden, or raising: the hub then routes it every
    event) raises no alert. A broken ``wants`` is counted by the hub once per route, not per event."""

    class Routed(AlertSystem):
        def wants(self, source: TelemetrySource, event: Any) -> bool:
            if wants == "raises":
                raise RuntimeError("broken filter")
            return True

    with Routed(AlertConfig(bulkhead_cooldown=30.0), clock=clock, hub=hub) as routed:
        breaker, limiter = reporter(hub, "circuit_breaker", "b"), reporter(hub, "rate_limiter", "l")
        errors: list[int] = []
        for _ in range(3):
            breaker.report(Event.CALL_REJECTED, CallRejected("circuit_open"))
            limiter.report(Event.CALL_REJECTED, CallRejected("rate_limited"))
            errors.append(hub.errors)
        assert kinds(routed) == []
        assert errors == [2, 2, 2] if wants == "raises" else [0, 0, 0]  # one per (kind, event)
        reporter(hub, "bulkhead", "h").report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))
        assert kinds(routed) == [AlertKind.BULKHEAD_FULL]
