"""Alerts and detected error patterns as OTel log records with an event name."""

from __future__ import annotations

from opentelemetry._logs import SeverityNumber

from otel_resilience.engine.events import (
    AlertRaised,
    Event,
    PatternDetected,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
)
from otel_resilience.telemetry import semconv as sc


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
