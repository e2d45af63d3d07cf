"""Alerts and detected error patterns as OTel log records with an event name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry._logs import SeverityNumber

from otel_resilience.engine.events import (
    AlertRaised,
    Event,
    PatternDetected,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
)
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]


async def test_alert_is_a_log_record_with_event_name(otel):
    """An alert becomes a log record named resilience.alert.raised whose body is the summary."""
    telemetry = StrategyTelemetry(TelemetrySource("alerts", "default"))
    telemetry.report(Event.ALERT_RAISED, AlertRaised("circuit_open", "critical", "ml", "breaker 'ml' opened"))
    (record,) = otel.logs()
    assert record.event_name == sc.EV_ALERT
    assert record.body == "breaker 'ml' opened"
    assert record.severity_number is SeverityNumber.ERROR
    assert dict(record.attributes) == {
        "resilience.pattern": "alerts",
        "resilience.name": "default",
        "resilience.alert.kind": "circuit_open",
        "resilience.alert.severity": "critical",
        "resilience.alert.subject": "ml",
    }


async def test_an_event_record_is_stamped_with_the_time_it_happened(otel):
    """The record carries its timestamp (when it was emitted, on the wall clock), as the OpenTelemetry
    SDK's events are stamped: without one, OTLP sends ``time_unix_nano`` 0, "unknown"."""
    telemetry = StrategyTelemetry(TelemetrySource("alerts", "default"))
    telemetry.report(Event.ALERT_RAISED, AlertRaised("circuit_open", "critical", "ml", "breaker 'ml' opened"))
    (record,) = otel.logs()
    assert record.timestamp is not None
    assert abs(record.timestamp - time.time_ns()) < 60 * 10**9  # now, on the wall clock (generous)


async def test_warning_alert_logs_at_warn(otel):
    """A warning alert is logged with severity WARN."""
    telemetry = StrategyTelemetry(TelemetrySource("alerts", "default"))
    telemetry.report(Event.ALERT_RAISED, AlertRaised("bulkhead_full", "warning", "pool", "pool is full"))
    (record,) = otel.logs()
    assert record.severity_number is SeverityNumber.WARN
    assert record.severity_text == "WARN"


async def test_pattern_detected_is_a_log_record(otel):
    """A detected error pattern becomes a WARN log record with its bounded attributes."""
    telemetry = StrategyTelemetry(TelemetrySource("recovery", "rec"))
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("job") as span:
        telemetry.report(Event.PATTERN_DETECTED, PatternDetected("OSError", "load", 5, 30.0))
    (record,) = otel.logs()
    assert record.event_name == sc.EV_PATTERN
    assert record.severity_number is SeverityNumber.WARN
    assert record.body == "OSError repeated 5 times within 30 s in 'load'"
    assert record.attributes["resilience.error_pattern.count"] == 5
    assert record.trace_id == span.get_span_context().trace_id


async def test_other_events_emit_no_log_record(otel):
    """Only alerts and error patterns are logged; a state change is a metric and span event only."""
    StrategyTelemetry(TelemetrySource("circuit_breaker", "cb")).report(
        Event.STATE_CHANGED, StateChanged("closed", "open", "failure_threshold")
    )
    assert otel.logs() == []


def _down() -> None:
    raise ConnectionError


async def test_one_outage_episode_is_one_alert_log_record(otel, clock: FakeClock):
    """A breaker re-opening 50 times in one outage yields one alert log record; closing and tripping again, a second."""
    breaker = CircuitBreaker(
        "episode-logged",
        CircuitBreakerConfig(failure_threshold=1, success_threshold=1, timeout=0.01),
        clock=clock,
    )
    with AlertSystem(clock=clock, name="episode-alerts"):
        with pytest.raises(ConnectionError):
            breaker.call_sync(_down)
        for _ in range(50):
            clock.advance(0.01)
            with pytest.raises(ConnectionError):
                breaker.call_sync(_down)

        def alert_records() -> list:
            return [
                r
                for r in otel.logs()
                if r.event_name == sc.EV_ALERT and r.attributes["resilience.name"] == "episode-alerts"
            ]

        (record,) = alert_records()
        assert record.body == "circuit breaker 'episode-logged' opened (failure_threshold)"
        assert record.attributes["resilience.alert.subject"] == "episode-logged"
        clock.advance(0.01)
        assert breaker.call_sync(lambda: "up") == "up"
        with pytest.raises(ConnectionError):
            breaker.call_sync(_down)
        assert len(alert_records()) == 2


def test_alerts_are_logged_with_only_a_global_logger_provider():
    """With only a global LoggerProvider (no tracer or meter provider) an alert is still a log record."""
    code = """
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

        from otel_resilience import CircuitBreaker, CircuitBreakerConfig, default_alert_system
        from otel_resilience.telemetry import install_default

        listener = install_default()
        default_alert_system()
        breaker = CircuitBreaker("logged", CircuitBreakerConfig(failure_threshold=1))
        assert breaker.call_sync(lambda: 1) == 1
        assert breaker.call_sync(lambda: 1) == 1  # no SDK yet: the listener sleeps

        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider()
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        set_logger_provider(provider)

        def down():
            raise ConnectionError

        try:
            breaker.call_sync(down)
        except ConnectionError:
            pass
        records = [r.log_record for r in exporter.get_finished_logs()]
        print([(r.event_name, r.body) for r in records])
        """
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    for variable in (
        "OTEL_PYTHON_TRACER_PROVIDER",
        "OTEL_PYTHON_METER_PROVIDER",
        "OTEL_PYTHON_LOGGER_PROVIDER",
    ):
        environment.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        [(sc.EV_ALERT, "circuit breaker 'logged' opened (failure_threshold)")]
    )
