"""The name registry: naming rules, completeness, and agreement with the engine and patterns."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from otel_resilience.engine import event_args as ea
from otel_resilience.engine import hedge
from otel_resilience.engine.events import Event, EventKind, Outcome
from otel_resilience.telemetry import instrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.env import RECORD_MESSAGES, resolve
from otel_resilience.telemetry.otel import OtelListener

_UNIT = re.compile(r"^(s|1|\{[a-z_]+\})$")


def test_instrument_names_follow_otel_rules():
    """Names are unique, lower-case, in resilience.*, never end in _total, units are s/1/{x}."""
    names = [spec.name for spec in sc.INSTRUMENTS]
    assert len(names) == len(set(names))
    for spec in sc.INSTRUMENTS:
        assert re.fullmatch(r"resilience(\.[a-z_]+)+", spec.name), spec.name
        assert not spec.name.endswith(("_total", ".total")), spec.name
        assert _UNIT.match(spec.unit), (spec.name, spec.unit)
        assert spec.description.endswith("."), spec.name
        if "duration" in spec.name or "delay" in spec.name:
            assert spec.unit == "s", spec.name


def test_no_metric_name_is_a_prefix_namespace_of_another():
    """No metric name is also the namespace of another metric (OTel naming guidance)."""
    names = {spec.name for spec in sc.INSTRUMENTS}
    for name in names:
        assert not any(other.startswith(name + ".") for other in names), name


def test_histograms_have_second_scale_boundaries():
    """Histograms carry explicit, increasing boundaries; execution duration spans 1 ms .. 60 s."""
    for spec in sc.INSTRUMENTS:
        if spec.kind is sc.InstrumentKind.HISTOGRAM:
            assert spec.boundaries, spec.name
            assert list(spec.boundaries) == sorted(set(spec.boundaries)), spec.name
        else:
            assert spec.boundaries == (), spec.name
    duration = sc.instrument(sc.EXECUTION_DURATION)
    assert (duration.boundaries[0], duration.boundaries[-1]) == (0.001, 60.0)


def test_every_referenced_attribute_is_declared_once():
    """Instruments, spans and events only use declared keys; every declared key is used."""
    declared = [a.key for a in sc.ATTRIBUTES]
    assert len(declared) == len(set(declared))
    used: set[str] = set()
    for group in (sc.INSTRUMENTS, sc.SPANS, sc.SPAN_EVENTS):
        for item in group:
            keys = (*item.attributes, *item.conditional)
            assert len(keys) == len(set(keys)), item.name
            used.update(keys)
    for log in sc.LOG_EVENTS:
        used.update(log.attributes)
    assert used <= set(declared), used - set(declared)
    assert set(declared) <= used, set(declared) - used


def test_attempt_numbers_never_on_metrics():
    """The attempt number goes on spans and span events only, never on a metric."""
    for spec in sc.INSTRUMENTS:
        assert sc.ATTEMPT not in spec.attributes + spec.conditional
        assert sc.ALERT_SUMMARY not in spec.attributes + spec.conditional


def test_outcome_values_are_the_engine_outcomes():
    """The outcome enumeration is exactly engine.events.Outcome's values."""
    assert set(sc.attribute(sc.OUTCOME).values) == {o.value for o in Outcome}
    assert {o.value for o in Outcome if o.value in sc.ERROR_OUTCOMES} == {"failure", "rejected", "timeout"}


def _library_kinds() -> list[EventKind]:
    """Every event kind the library declares: Event's, then those a pattern package declares of its own."""
    importlib.import_module("otel_resilience")  # every pattern package
    found, pending = [], [EventKind]
    while pending:
        cls = pending.pop(0)
        if cls is not EventKind and cls.__module__.startswith("otel_resilience."):
            found.extend(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_every_engine_event_has_a_span_event():
    """Each kind of event the library declares maps to one span event name in the registry."""
    names = {e.name for e in sc.SPAN_EVENTS}
    assert len(names) == len(sc.SPAN_EVENTS) == len(_library_kinds())


_ARGS = {
    Event.RETRY_SCHEDULED: ea.RetryScheduled,
    Event.RETRY_EXHAUSTED: ea.RetryExhausted,
    Event.STATE_CHANGED: ea.StateChanged,
    Event.CALL_REJECTED: ea.CallRejected,
    Event.TIMEOUT: ea.TimeoutOccurred,
    Event.FALLBACK_USED: ea.FallbackUsed,
    Event.RECOVERY_ATTEMPTED: ea.RecoveryAttempted,
    Event.PATTERN_DETECTED: ea.PatternDetected,
    Event.ALERT_RAISED: ea.AlertRaised,
    Event.PERMIT_WAITED: ea.PermitWaited,
    Event.CHAOS_INJECTED: ea.ChaosInjected,
    Event.HEDGE_STARTED: ea.HedgeStarted,
    Event.HEDGE_DENIED: ea.HedgeDenied,
    Event.HEDGE_WON: ea.HedgeWon,
    Event.POLICY_RELOADED: ea.PolicyReloaded,
    Event.RELOAD_FAILED: ea.ReloadFailed,
}
_SOURCE_KEYS = {sc.POLICY, sc.PATTERN, sc.NAME}


def test_the_binding_table_has_one_row_per_event_kind_in_order():
    """semconv.EVENTS lists every Event kind once, in the enum's order, then a pattern's own; binding() finds each."""
    kinds = _library_kinds()
    assert kinds[: len(Event)] == list(Event)
    assert [row.event for row in sc.EVENTS] == [event.value for event in kinds]
    assert all(sc.binding(event.value).event == event.value for event in kinds)
    assert all(sc.has_binding(event.value) for event in kinds)
    with pytest.raises(KeyError):
        sc.binding("nope")
    assert not sc.has_binding("nope")


@pytest.mark.parametrize("event", list(Event))
def test_a_row_gives_a_key_to_each_attribute_its_event_names(event):
    """The row maps exactly the fields the event's arguments class names in ATTRIBUTES, to declared keys."""
    args_type = _ARGS[event]
    row = sc.binding(event.value)
    fields = [field for field, _ in row.keys]
    assert sorted(fields) == sorted(args_type.ATTRIBUTES)
    assert set(args_type.ATTRIBUTES) <= set(args_type.__dataclass_fields__)
    declared = {a.key for a in sc.ATTRIBUTES}
    assert {key for _, key in row.keys} <= declared


@pytest.mark.parametrize("row", sc.EVENTS, ids=lambda row: row.event)
def test_a_span_event_carries_the_source_names_and_every_event_attribute(row):
    """The documented span event attributes are resilience.pattern, resilience.name and the row's keys."""
    spec = row.span_event
    assert set(spec.attributes) | set(spec.conditional) == {sc.PATTERN, sc.NAME} | {k for _, k in row.keys}
    assert spec in sc.SPAN_EVENTS


@pytest.mark.parametrize("row", sc.EVENTS, ids=lambda row: row.event)
def test_a_metric_binding_names_a_synchronous_instrument_the_event_can_fill(row):
    """Counters add 1, histograms record one of the event's values; every other attribute comes from the event.

    (Or, for resilience.key and otel.metric.overflow, from the keyed execution the event happens in.)
    """
    keys = {k for _, k in row.keys}
    assert row.metrics
    for binding in row.metrics:
        spec = sc.instrument(binding.instrument)
        if spec.kind is sc.InstrumentKind.HISTOGRAM:
            assert binding.value in keys
        else:
            assert spec.kind is sc.InstrumentKind.COUNTER
            assert binding.value == ""
        assert set(spec.attributes) | set(spec.conditional) <= _SOURCE_KEYS | keys | {
            sc.KEY,
            sc.METRIC_OVERFLOW,
        }


@pytest.mark.parametrize("row", [row for row in sc.EVENTS if row.log is not None], ids=lambda row: row.event)
def test_a_log_binding_formats_its_body_from_the_event_fields(row):
    """The log body is a template over the event's fields; its attributes are some of the span event's."""
    log = row.log
    assert log is not None
    assert log.spec in sc.LOG_EVENTS
    span_keys = set(row.span_event.attributes) | set(row.span_event.conditional)
    assert set(log.spec.attributes) <= span_keys
    fields = {field: 1.5 for field, _ in row.keys}
    assert log.body.format_map(fields)
    if log.severity_field:
        assert log.severity_field in fields
    for severity in (*sc.LOG_SEVERITIES.values(), sc.DEFAULT_LOG_SEVERITY):
        assert severity in {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"}


@pytest.mark.parametrize("row", sc.ZERO_SERIES, ids=lambda row: f"{row.pattern}:{row.instrument}")
def test_a_zero_series_is_a_counter_series_with_known_labels(row):
    """Each zero series is a counter's, labelled with allowed values of its own attributes."""
    spec = sc.instrument(row.instrument)
    assert spec.kind is sc.InstrumentKind.COUNTER
    assert row.pattern in sc.PATTERN_VALUES
    assert row.registry in {"pipelines", "breakers", "policies"}
    assert row.labels
    for labels in row.labels:
        for key, value in labels:
            assert key in spec.attributes
            assert key not in _SOURCE_KEYS
            assert value in sc.attribute(key).values


@pytest.mark.parametrize(
    ("key", "module", "enum_name"),
    [
        (sc.CB_STATE, "otel_resilience.patterns.circuit_breaker", "CircuitState"),
        (sc.FALLBACK_STRATEGY, "otel_resilience.patterns.fallback", "FallbackStrategy"),
        (sc.RECOVERY_STRATEGY, "otel_resilience.patterns.recovery", "RecoveryStrategy"),
        (sc.ALERT_KIND, "otel_resilience.patterns.alerts", "AlertKind"),
        (sc.ALERT_SEVERITY, "otel_resilience.patterns.alerts", "AlertSeverity"),
    ],
)
def test_closed_enumerations_match_the_pattern_enums(key, module, enum_name):
    """The allowed values listed here are exactly the patterns' enum values."""
    enum_class = getattr(importlib.import_module(module), enum_name)
    assert set(sc.attribute(key).values) == {member.value for member in enum_class}


def test_hedging_values_are_the_engines():
    """The attempt types and hedge triggers listed here are exactly the engine's (engine.hedge)."""
    assert sc.attribute(sc.ATTEMPT_TYPE).values == hedge.ATTEMPT_TYPES == ("original", "hedge")
    assert set(sc.attribute(sc.HEDGE_TRIGGER).values) == set(hedge.TRIGGERS)


def test_lookup_of_unknown_names_raises_key_error():
    """instrument() and attribute() refuse names that are not in the registry."""
    with pytest.raises(KeyError):
        sc.instrument("resilience.nope")
    with pytest.raises(KeyError):
        sc.attribute("resilience.nope")


def test_prometheus_series_shapes():
    """Counters get _total, histograms _bucket/_sum/_count, gauges the bare name."""
    assert sc.prometheus_series(sc.instrument(sc.RETRIES)) == ("resilience_retries_total",)
    assert sc.prometheus_series(sc.instrument(sc.EXECUTION_DURATION)) == (
        "resilience_execution_duration_seconds_bucket",
        "resilience_execution_duration_seconds_sum",
        "resilience_execution_duration_seconds_count",
    )
    assert sc.prometheus_series(sc.instrument(sc.BULKHEAD_ACTIVE)) == ("resilience_bulkhead_active",)
    assert sc.prometheus_series(sc.instrument(sc.RETRIES), prefix="app") == ("app_resilience_retries_total",)


def test_public_names_are_pinned():
    """Dashboards and alert rules rely on these exact names; renaming one must be deliberate."""
    assert sc.SCOPE_NAME == "otel_resilience"
    assert sc.SCHEMA_URL == "https://opentelemetry.io/schemas/1.44.0"
    assert [spec.name for spec in sc.INSTRUMENTS] == [
        "resilience.execution.duration",
        "resilience.attempt.duration",
        "resilience.executions",
        "resilience.circuit_breaker.state",
        "resilience.circuit_breaker.transitions",
        "resilience.circuit_breaker.calls",
        "resilience.circuit_breaker.failure_rate",
        "resilience.circuit_breaker.slow_call_rate",
        "resilience.circuit_breaker.failure_rate_threshold",
        "resilience.rejections",
        "resilience.retries",
        "resilience.retry.delay",
        "resilience.retry.exhausted",
        "resilience.rate_limiter.permits",
        "resilience.rate_limiter.keys",
        "resilience.rate_limiter.key_limit",
        "resilience.rate_limiter.key_evictions",
        "resilience.rate_limiter.wait",
        "resilience.retry.budget.available",
        "resilience.timeouts",
        "resilience.hedging.hedges",
        "resilience.hedging.denied",
        "resilience.hedging.wins",
        "resilience.fallback.executions",
        "resilience.bulkhead.active",
        "resilience.bulkhead.queued",
        "resilience.bulkhead.concurrency.limit",
        "resilience.bulkhead.queue.limit",
        "resilience.bulkhead.utilization",
        "resilience.bulkhead.queue_utilization",
        "resilience.recovery.attempts",
        "resilience.recovery.error_patterns",
        "resilience.alerts",
        "resilience.chaos.injections",
        "resilience.reload",
        "resilience.config.stale",
        "resilience.policy.keys",
        "resilience.policy.key_limit",
        "resilience.policy.key_evictions",
        "resilience.circuit_breaker.shared",
        "resilience.store.degraded",
        "resilience.store.outages",
        "resilience.store.errors",
        "resilience.store.operations",
        "resilience.store.fallback_permits",
        "resilience.telemetry.errors",
        "resilience.execution.latency.bucket",
        "resilience.execution.latency.sum",
        "resilience.execution.latency.count",
        "resilience.attempt.latency.bucket",
        "resilience.attempt.latency.sum",
        "resilience.attempt.latency.count",
    ]
    assert sc.BUCKET_BOUND == "le"
    assert sc.DURATION_BOUNDARIES == (
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
    )


def test_the_keyed_attributes_are_on_the_instruments_a_top_keys_panel_reads():
    """resilience.key (and the overflow mark) may be on executions, durations and the event counters, never elsewhere."""
    keyed = {spec.name for spec in sc.INSTRUMENTS if sc.KEY in spec.conditional}
    assert keyed == {
        sc.EXECUTIONS,
        sc.EXECUTION_DURATION,
        *sc.IN_PROCESS_HISTOGRAMS[sc.EXECUTION_DURATION].values(),  # its in-process form
        sc.REJECTIONS,
        sc.RETRIES,
        sc.TIMEOUTS,
        sc.FALLBACK_EXECUTIONS,
        sc.CB_TRANSITIONS,  # each key's breaker is its own: the flapping rule counts its trips alone
    }
    for spec in sc.INSTRUMENTS:
        assert sc.KEY not in spec.attributes, spec.name
        assert (sc.KEY in spec.conditional) == (sc.METRIC_OVERFLOW in spec.conditional), spec.name
    assert sc.KEY_OVERFLOW == "_OTHER"
    assert sc.attribute(sc.RELOAD_OUTCOME).values == ("succeeded", "failed")


def test_record_messages_is_off_by_default():
    """Exception messages stay out of telemetry unless the application opts in."""
    assert (
        inspect.signature(instrument).parameters["record_messages"].default is None
    )  # the env's, false unset
    assert resolve(RECORD_MESSAGES, None, {}) is False
    assert inspect.signature(OtelListener).parameters["record_messages"].default is False


def test_breaker_state_severity_orders_every_state_once():
    """The one severity order of breaker states holds every state once: closed least, open most."""
    assert sorted(sc.CB_STATE_SEVERITY) == sorted(sc.CB_STATE_VALUES)
    assert sc.CB_STATE_SEVERITY[0] == "closed"
    assert sc.CB_STATE_SEVERITY[-1] == "open"
