"""The one registry of telemetry names: every instrument, attribute, span and event.

Nothing else in the package spells a metric, attribute or event name: the OTel listener, the
observable instruments, ``docs/telemetry.md``, the dashboards and the alert rules all read
them from here.

Naming follows the OpenTelemetry conventions: a ``resilience.*`` namespace, durations in
seconds (``s``), counters named by a plural noun without ``_total``, and ``{call}``-style
annotation units. Attribute values are bounded: names of policies and instances, closed
enumerations, and exception *class* names (``error.type``). Messages, arguments and results
never appear, unless the application opts in to exception messages on spans
(``instrument(record_messages=True)``). Attempt numbers go on spans only, never on metrics.

:func:`prometheus_series` derives the series names that the OpenTelemetry Prometheus exporter
publishes for an instrument (dots become underscores, the unit becomes a suffix, counters gain
``_total`` and histograms ``_bucket``/``_sum``/``_count``); a test checks it against a real
scrape.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "ATTRIBUTES",
    "DURATION_BOUNDARIES",
    "INSTRUMENTS",
    "LOG_EVENTS",
    "PER_UNIT_WORDS",
    "RETRY_DELAY_BOUNDARIES",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "SPANS",
    "SPAN_EVENTS",
    "UNIT_WORDS",
    "AttributeSpec",
    "InstrumentKind",
    "InstrumentSpec",
    "LogEventSpec",
    "SpanEventSpec",
    "SpanSpec",
    "attribute",
    "instrument",
    "prometheus_name",
    "prometheus_series",
]

SCOPE_NAME: Final = "otel_resilience"
"""The instrumentation scope name of every tracer, meter and logger."""
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic-conventions schema the standard attributes (``error.type``,
``http.request.resend_count``) follow."""


class InstrumentKind(enum.Enum):
    """The kind of an OpenTelemetry instrument. Values are shown in the docs."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    OBSERVABLE_COUNTER = "observable counter"
    OBSERVABLE_GAUGE = "observable gauge"

    @property
    def is_counter(self) -> bool:
        """Whether the instrument is a monotonic sum (exported with ``_total``)."""
        return self in {InstrumentKind.COUNTER, InstrumentKind.OBSERVABLE_COUNTER}


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute key.

    Attributes:
        key: The attribute key.
        type: ``"string"``, ``"int"`` or ``"double"``.
        description: What it holds.
        values: The allowed values of a closed enumeration, or ``()`` for free (bounded) values.
        unit: The unit of a numeric attribute (``"s"``), or ``""``.
    """

    key: str
    type: str
    description: str
    values: tuple[str, ...] = ()
    unit: str = ""


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One metric instrument.

    Attributes:
        name: The instrument name (``resilience.*``).
        kind: The instrument kind.
        unit: The UCUM unit (``s``, ``1``) or an annotation (``{call}``).
        description: What it measures.
        attributes: Keys always present on its points.
        conditional: Keys present only on some points (``error.type`` on failures).
        boundaries: Explicit histogram bucket boundaries (histograms only).
    """

    name: str
    kind: InstrumentKind
    unit: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class SpanSpec:
    """One kind of span.

    Attributes:
        name: The span name (``{operation}`` stands for the operation's name).
        kind: The span kind.
        description: When it is opened and what its status means.
        attributes: Keys always present.
        conditional: Keys present only in some cases.
    """

    name: str
    kind: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpanEventSpec:
    """One span event, added to the current span.

    Attributes:
        name: The event name.
        description: When it is added.
        attributes: Keys always present.
        conditional: Keys present only in some cases.
    """

    name: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LogEventSpec:
    """One log record with an event name (emitted when a logger provider is configured).

    Attributes:
        name: The event name (``LogRecord.event_name``).
        severity: The severity text (the severity number follows it).
        description: When it is emitted; what the body holds.
        attributes: Keys always present.
    """

    name: str
    severity: str
    description: str
    attributes: tuple[str, ...]


# --- attribute keys --------------------------------------------------------------------------

POLICY: Final = "resilience.policy"
PATTERN: Final = "resilience.pattern"
NAME: Final = "resilience.name"
OUTCOME: Final = "resilience.outcome"
ERROR_TYPE: Final = "error.type"
ATTEMPT: Final = "resilience.attempt"
HTTP_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_REQUEST_METHOD: Final = "http.request.method"
"""Read (never written) to recognise the caller's span as an HTTP client span."""
HTTP_METHOD_LEGACY: Final = "http.method"
"""The pre-1.21 spelling of ``http.request.method``, also recognised."""
RETRY_DELAY: Final = "resilience.retry.delay"
RETRY_STOP_REASON: Final = "resilience.retry.stop_reason"
CB_STATE: Final = "resilience.circuit_breaker.state"
CB_PREVIOUS_STATE: Final = "resilience.circuit_breaker.previous_state"
CB_TRANSITION_REASON: Final = "resilience.circuit_breaker.transition_reason"
CB_CALL_RESULT: Final = "resilience.circuit_breaker.call_result"
REJECTION_REASON: Final = "resilience.rejection.reason"
TIMEOUT_SCOPE: Final = "resilience.timeout.scope"
TIMEOUT_LIMIT: Final = "resilience.timeout.limit"
FALLBACK_STRATEGY: Final = "resilience.fallback.strategy"
FALLBACK_RESULT: Final = "resilience.fallback.result"
RECOVERY_STRATEGY: Final = "resilience.recovery.strategy"
RECOVERY_RESULT: Final = "resilience.recovery.result"
OPERATION: Final = "resilience.operation"
ERROR_PATTERN_COUNT: Final = "resilience.error_pattern.count"
ERROR_PATTERN_WINDOW: Final = "resilience.error_pattern.window"
ALERT_KIND: Final = "resilience.alert.kind"
ALERT_SEVERITY: Final = "resilience.alert.severity"
ALERT_SUBJECT: Final = "resilience.alert.subject"
ALERT_SUMMARY: Final = "resilience.alert.summary"
DEPENDENCY_ERROR_TYPE: Final = "resilience.dependency.error.type"

OUTCOME_VALUES: Final = ("success", "recovered", "fallback", "failure", "rejected", "timeout", "cancelled")
"""The values of :class:`otel_resilience.engine.events.Outcome`."""
ERROR_OUTCOMES: Final = frozenset({"failure", "rejected", "timeout"})
"""Outcomes that mark a span as ERROR and carry ``error.type``; the others are not errors."""
PATTERN_VALUES: Final = (
    "pipeline",
    "circuit_breaker",
    "retry",
    "fallback",
    "timeout",
    "bulkhead",
    "recovery",
    "alerts",
)
CB_STATE_VALUES: Final = ("closed", "open", "half_open")
CB_TRANSITION_REASONS: Final = (
    "failure_threshold",
    "timeout_elapsed",
    "probe_failed",
    "probe_succeeded",
    "forced",
    "reset",
    "isolated",
)
CB_CALL_RESULTS: Final = ("success", "failure", "rejected", "ignored", "cancelled")
CB_TRANSITIONS_KNOWN: Final = (
    ("closed", "open", "failure_threshold"),
    ("closed", "open", "forced"),
    ("closed", "open", "isolated"),
    ("open", "half_open", "timeout_elapsed"),
    ("open", "closed", "reset"),
    ("half_open", "closed", "probe_succeeded"),
    ("half_open", "closed", "reset"),
    ("half_open", "open", "probe_failed"),
    ("half_open", "open", "forced"),
    ("half_open", "open", "isolated"),
)
"""Every (previous state, state, reason) a circuit breaker can report: the transition series
that exist, at 0, from the moment a breaker is created."""
REJECTION_REASONS: Final = ("circuit_open", "half_open_full", "bulkhead_full", "queue_timeout")
REJECTION_REASONS_BY_PATTERN: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"circuit_breaker": ("circuit_open", "half_open_full"), "bulkhead": ("bulkhead_full", "queue_timeout")}
)
"""The rejection reasons each pattern kind can report: the rejection series that exist, at 0,
from the moment a pattern of that kind is placed in a pipeline."""
RETRY_STOP_REASONS: Final = ("max_attempts", "deadline", "max_attempts_total", "not_retryable")
TIMEOUT_SCOPES: Final = ("total", "attempt")
FALLBACK_STRATEGIES: Final = ("default_value", "alternative_function", "cached_value", "multiple_attempts")
RECOVERY_STRATEGIES: Final = ("retry", "restart", "fallback", "isolate", "escalate")
RESULTS: Final = ("success", "failure")
ALERT_KINDS: Final = (
    "circuit_open",
    "bulkhead_full",
    "low_recovery_rate",
    "error_pattern",
    "recovery_escalated",
)
ALERT_SEVERITIES: Final = ("warning", "critical")

ATTRIBUTES: Final[tuple[AttributeSpec, ...]] = (
    AttributeSpec(
        POLICY,
        "string",
        "The policy (pipeline) the call ran in; the instance's own name when a pattern is used alone.",
    ),
    AttributeSpec(
        PATTERN,
        "string",
        "The kind of the reporting component (`pipeline` for a manager policy); custom strategies "
        "add their own kind.",
        PATTERN_VALUES,
    ),
    AttributeSpec(
        NAME, "string", "The configured name of the pattern instance (breaker, bulkhead, retry ...)."
    ),
    AttributeSpec(OUTCOME, "string", "How the execution or attempt ended.", OUTCOME_VALUES),
    AttributeSpec(
        ERROR_TYPE,
        "string",
        "The exception's class (`module.Qualname`, builtins unqualified), on failures only "
        "(OTel semantic convention); `_OTHER` when unknown.",
    ),
    AttributeSpec(
        ATTEMPT,
        "int",
        "The attempt number, starting at 1 and unique in the execution: retry attempts and recovery "
        "re-runs share one numbering (spans and span events only, never on metrics).",
    ),
    AttributeSpec(
        HTTP_RESEND_COUNT,
        "int",
        "OTel HTTP convention: `attempt - 1`, set on attempt spans when the caller's span is an "
        "HTTP client span.",
    ),
    AttributeSpec(RETRY_DELAY, "double", "The backoff before the next attempt.", unit="s"),
    AttributeSpec(
        RETRY_STOP_REASON,
        "string",
        "Why retrying stopped: the retry's own `max_attempts`, the deadline, the execution's cap "
        "on attempts in total (`max_attempts_total`, counted across retry and recovery re-runs), "
        "or an error the policy does not retry.",
        RETRY_STOP_REASONS,
    ),
    AttributeSpec(
        CB_STATE, "string", "A circuit breaker state (the new state of a transition).", CB_STATE_VALUES
    ),
    AttributeSpec(CB_PREVIOUS_STATE, "string", "The state a circuit breaker left.", CB_STATE_VALUES),
    AttributeSpec(
        CB_TRANSITION_REASON, "string", "Why a circuit breaker changed state.", CB_TRANSITION_REASONS
    ),
    AttributeSpec(
        CB_CALL_RESULT, "string", "How a call through a circuit breaker was counted.", CB_CALL_RESULTS
    ),
    AttributeSpec(REJECTION_REASON, "string", "Why a call was rejected.", REJECTION_REASONS),
    AttributeSpec(TIMEOUT_SCOPE, "string", "What the expired deadline bounded.", TIMEOUT_SCOPES),
    AttributeSpec(TIMEOUT_LIMIT, "double", "The limit that expired.", unit="s"),
    AttributeSpec(FALLBACK_STRATEGY, "string", "The fallback strategy that ran.", FALLBACK_STRATEGIES),
    AttributeSpec(FALLBACK_RESULT, "string", "Whether the fallback answered.", RESULTS),
    AttributeSpec(RECOVERY_STRATEGY, "string", "The recovery strategy that acted.", RECOVERY_STRATEGIES),
    AttributeSpec(RECOVERY_RESULT, "string", "Whether the recovery succeeded.", RESULTS),
    AttributeSpec(OPERATION, "string", "The operation an error pattern was detected in."),
    AttributeSpec(ERROR_PATTERN_COUNT, "int", "How many times the error repeated within the window."),
    AttributeSpec(ERROR_PATTERN_WINDOW, "double", "The detection window.", unit="s"),
    AttributeSpec(ALERT_KIND, "string", "The kind of alert.", ALERT_KINDS),
    AttributeSpec(ALERT_SEVERITY, "string", "The alert's severity.", ALERT_SEVERITIES),
    AttributeSpec(
        ALERT_SUBJECT, "string", "The breaker, bulkhead, operation or recovery system the alert is about."
    ),
    AttributeSpec(ALERT_SUMMARY, "string", "The alert's one-line summary (span events only; the log body)."),
    AttributeSpec(
        DEPENDENCY_ERROR_TYPE,
        "string",
        "On the execution span: the class (as `error.type`) of the last error an attempt that "
        "reached the dependency raised before the execution retried or gave up, so that an "
        "execution whose last attempt was rejected (`error.type` a rejection) still names the "
        "dependency's own failure. Rejections never set it.",
    ),
)
"""Every attribute key, in documentation order."""

# --- instruments -----------------------------------------------------------------------------

DURATION_BOUNDARIES: Final = (
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
"""Execution duration buckets, in seconds (the SDK's default buckets are for milliseconds)."""
RETRY_DELAY_BOUNDARIES: Final = (
    0.001,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Retry backoff buckets, in seconds."""

EXECUTION_DURATION: Final = "resilience.execution.duration"
ATTEMPT_DURATION: Final = "resilience.attempt.duration"
EXECUTIONS: Final = "resilience.executions"
CB_STATE_METRIC: Final = "resilience.circuit_breaker.state"
CB_TRANSITIONS: Final = "resilience.circuit_breaker.transitions"
CB_CALLS: Final = "resilience.circuit_breaker.calls"
REJECTIONS: Final = "resilience.rejections"
RETRIES: Final = "resilience.retries"
RETRY_DELAY_METRIC: Final = "resilience.retry.delay"
RETRY_EXHAUSTED: Final = "resilience.retry.exhausted"
TIMEOUTS: Final = "resilience.timeouts"
FALLBACK_EXECUTIONS: Final = "resilience.fallback.executions"
BULKHEAD_ACTIVE: Final = "resilience.bulkhead.active"
BULKHEAD_QUEUED: Final = "resilience.bulkhead.queued"
BULKHEAD_CONCURRENCY_LIMIT: Final = "resilience.bulkhead.concurrency.limit"
BULKHEAD_QUEUE_LIMIT: Final = "resilience.bulkhead.queue.limit"
RECOVERY_ATTEMPTS: Final = "resilience.recovery.attempts"
ERROR_PATTERNS: Final = "resilience.recovery.error_patterns"
ALERTS: Final = "resilience.alerts"
TELEMETRY_ERRORS: Final = "resilience.telemetry.errors"

_K = InstrumentKind

INSTRUMENTS: Final[tuple[InstrumentSpec, ...]] = (
    InstrumentSpec(
        EXECUTION_DURATION,
        _K.HISTOGRAM,
        "s",
        "Duration of one logical execution (all attempts, backoffs and fallbacks), recorded inside "
        "the execution span so that exemplars carry its trace. The only synchronous SDK call on a "
        "call that succeeds; switched off per policy with `TelemetrySource.metrics=False`.",
        (POLICY, PATTERN, OUTCOME),
        (ERROR_TYPE,),
        DURATION_BOUNDARIES,
    ),
    InstrumentSpec(
        ATTEMPT_DURATION,
        _K.HISTOGRAM,
        "s",
        "Duration of one attempt of a retry (every attempt, the first included, each timed around "
        "its attempt scope, so also when no span is opened for it): the dependency's own latency, "
        "without backoffs or fallbacks. Recorded only while a meter provider is configured; "
        "nothing is timed otherwise.",
        (POLICY, PATTERN, NAME, OUTCOME),
        (ERROR_TYPE,),
        DURATION_BOUNDARIES,
    ),
    InstrumentSpec(
        EXECUTIONS,
        _K.OBSERVABLE_COUNTER,
        "{execution}",
        "Executions that ended, by outcome, read from each live pipeline's counters "
        "(`PipelineStats`). A pipeline that is garbage-collected stops reporting.",
        (POLICY, PATTERN, OUTCOME),
    ),
    InstrumentSpec(
        CB_STATE_METRIC,
        _K.OBSERVABLE_GAUGE,
        "1",
        "1 for the breaker's current state and 0 for the others, for every live breaker from "
        "the moment it is created.",
        (NAME, CB_STATE),
    ),
    InstrumentSpec(
        CB_TRANSITIONS,
        _K.COUNTER,
        "{transition}",
        "Circuit breaker state transitions.",
        (NAME, CB_PREVIOUS_STATE, CB_STATE, CB_TRANSITION_REASON),
    ),
    InstrumentSpec(
        CB_CALLS,
        _K.OBSERVABLE_COUNTER,
        "{call}",
        "Calls through each live circuit breaker, by how the breaker counted them.",
        (NAME, CB_CALL_RESULT),
    ),
    InstrumentSpec(
        REJECTIONS,
        _K.COUNTER,
        "{call}",
        "Calls rejected without calling the dependency (open breaker, full bulkhead, queue timeout).",
        (POLICY, PATTERN, NAME, REJECTION_REASON),
    ),
    InstrumentSpec(
        RETRIES,
        _K.COUNTER,
        "{retry}",
        "Retries scheduled (failed attempts that will be tried again).",
        (POLICY, NAME),
        (ERROR_TYPE,),
    ),
    InstrumentSpec(
        RETRY_DELAY_METRIC,
        _K.HISTOGRAM,
        "s",
        "Backoff delays before retries.",
        (POLICY, NAME),
        (),
        RETRY_DELAY_BOUNDARIES,
    ),
    InstrumentSpec(
        RETRY_EXHAUSTED,
        _K.COUNTER,
        "{execution}",
        "Executions whose retries ran out; the last error was re-raised.",
        (POLICY, NAME, RETRY_STOP_REASON),
        (ERROR_TYPE,),
    ),
    InstrumentSpec(
        TIMEOUTS,
        _K.COUNTER,
        "{timeout}",
        "Deadlines that expired.",
        (POLICY, PATTERN, NAME, TIMEOUT_SCOPE),
    ),
    InstrumentSpec(
        FALLBACK_EXECUTIONS,
        _K.COUNTER,
        "{execution}",
        "Fallbacks that ran in place of a failed call, by strategy and result.",
        (POLICY, NAME, FALLBACK_STRATEGY, FALLBACK_RESULT, ERROR_TYPE),
    ),
    InstrumentSpec(
        BULKHEAD_ACTIVE,
        _K.OBSERVABLE_GAUGE,
        "{call}",
        "Calls running inside each live bulkhead.",
        (NAME,),
    ),
    InstrumentSpec(
        BULKHEAD_QUEUED,
        _K.OBSERVABLE_GAUGE,
        "{call}",
        "Calls waiting for a slot in each live bulkhead.",
        (NAME,),
    ),
    InstrumentSpec(
        BULKHEAD_CONCURRENCY_LIMIT,
        _K.OBSERVABLE_GAUGE,
        "{call}",
        "The bulkhead's concurrency limit (`max_concurrent`).",
        (NAME,),
    ),
    InstrumentSpec(
        BULKHEAD_QUEUE_LIMIT,
        _K.OBSERVABLE_GAUGE,
        "{call}",
        "The bulkhead's wait-queue limit (`max_waiting`).",
        (NAME,),
    ),
    InstrumentSpec(
        RECOVERY_ATTEMPTS,
        _K.COUNTER,
        "{attempt}",
        "Recovery actions, by strategy and result: the recovery rate is `result=success` over all.",
        (POLICY, NAME, RECOVERY_STRATEGY, RECOVERY_RESULT, ERROR_TYPE),
    ),
    InstrumentSpec(
        ERROR_PATTERNS,
        _K.COUNTER,
        "{pattern}",
        "Repeated error patterns detected (the same error type in the same operation).",
        (POLICY, NAME, ERROR_TYPE, OPERATION),
    ),
    InstrumentSpec(
        ALERTS,
        _K.COUNTER,
        "{alert}",
        "In-process alerts raised, by the alert system (`resilience.name`) that raised them.",
        (NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT),
    ),
    InstrumentSpec(
        TELEMETRY_ERRORS,
        _K.OBSERVABLE_COUNTER,
        "{error}",
        "Exceptions raised inside telemetry code (listeners, instruments, callbacks), swallowed "
        "and logged so that the application is never affected.",
        (),
    ),
)
"""Every instrument, in documentation order."""

# --- spans and events ------------------------------------------------------------------------

EXECUTION_SPAN: Final = "{operation}"
ATTEMPT_SPAN: Final = "{operation} attempt"
ATTEMPT_SPAN_SUFFIX: Final = " attempt"

SPANS: Final[tuple[SpanSpec, ...]] = (
    SpanSpec(
        EXECUTION_SPAN,
        "INTERNAL",
        "One per logical execution (manager policy, decorator, or pattern used alone), a child "
        "of the caller's current span and current while the call runs. Status ERROR with "
        "`error.type` only for outcomes failure, rejected and timeout; success, recovered, "
        "fallback and cancelled leave it unset. After a retried attempt failed, "
        "`resilience.dependency.error.type` names the dependency's last error.",
        (POLICY, PATTERN, OUTCOME),
        (ERROR_TYPE, DEPENDENCY_ERROR_TYPE),
    ),
    SpanSpec(
        ATTEMPT_SPAN,
        "INTERNAL",
        "One per attempt after the execution's first (attempt 2 onwards, numbered uniquely across "
        "retry attempts and recovery re-runs), child of the execution span; attempt 1 runs in the "
        "execution span. A failed attempt is ERROR with `error.type`.",
        (POLICY, PATTERN, NAME, ATTEMPT, OUTCOME),
        (ERROR_TYPE, HTTP_RESEND_COUNT),
    ),
)

EV_RETRY_SCHEDULED: Final = "resilience.retry.scheduled"
EV_RETRY_EXHAUSTED: Final = "resilience.retry.exhausted"
EV_STATE_CHANGED: Final = "resilience.circuit_breaker.state_changed"
EV_CALL_REJECTED: Final = "resilience.call.rejected"
EV_TIMEOUT: Final = "resilience.timeout.expired"
EV_FALLBACK: Final = "resilience.fallback.executed"
EV_RECOVERY: Final = "resilience.recovery.attempted"
EV_PATTERN: Final = "resilience.error_pattern.detected"
EV_ALERT: Final = "resilience.alert.raised"

SPAN_EVENTS: Final[tuple[SpanEventSpec, ...]] = (
    SpanEventSpec(
        EV_RETRY_SCHEDULED,
        "A failed attempt will be retried after the delay (the backoff is visible on the span).",
        (PATTERN, NAME, ATTEMPT, RETRY_DELAY),
        (ERROR_TYPE,),
    ),
    SpanEventSpec(
        EV_RETRY_EXHAUSTED,
        "Retries ran out; the last error is re-raised.",
        (PATTERN, NAME, ATTEMPT, RETRY_STOP_REASON),
        (ERROR_TYPE,),
    ),
    SpanEventSpec(
        EV_STATE_CHANGED,
        "A circuit breaker changed state.",
        (PATTERN, NAME, CB_PREVIOUS_STATE, CB_STATE, CB_TRANSITION_REASON),
    ),
    SpanEventSpec(
        EV_CALL_REJECTED,
        "A call was rejected, whatever the reason (a bulkhead's queue timeout included, added to "
        "the waiting call's span when the wait expires).",
        (PATTERN, NAME, REJECTION_REASON),
    ),
    SpanEventSpec(EV_TIMEOUT, "A deadline expired.", (PATTERN, NAME, TIMEOUT_SCOPE, TIMEOUT_LIMIT)),
    SpanEventSpec(
        EV_FALLBACK,
        "A fallback ran in place of the failed call.",
        (PATTERN, NAME, FALLBACK_STRATEGY, FALLBACK_RESULT, ERROR_TYPE),
    ),
    SpanEventSpec(
        EV_RECOVERY,
        "A recovery rule acted on an error.",
        (PATTERN, NAME, RECOVERY_STRATEGY, RECOVERY_RESULT, ERROR_TYPE),
    ),
    SpanEventSpec(
        EV_PATTERN,
        "A repeated error pattern was detected.",
        (PATTERN, NAME, ERROR_TYPE, OPERATION, ERROR_PATTERN_COUNT, ERROR_PATTERN_WINDOW),
    ),
    SpanEventSpec(
        EV_ALERT,
        "An in-process alert was raised.",
        (PATTERN, NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT, ALERT_SUMMARY),
    ),
)

LOG_EVENTS: Final[tuple[LogEventSpec, ...]] = (
    LogEventSpec(
        EV_ALERT,
        "from the alert's severity: warning -> WARN, critical -> ERROR",
        "An in-process alert was raised; the body is its summary.",
        (PATTERN, NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT),
    ),
    LogEventSpec(
        EV_PATTERN,
        "WARN",
        "A repeated error pattern was detected; the body says which error, where and how often.",
        (PATTERN, NAME, ERROR_TYPE, OPERATION, ERROR_PATTERN_COUNT, ERROR_PATTERN_WINDOW),
    ),
)


def instrument(name: str) -> InstrumentSpec:
    """Return the spec of the instrument called ``name``.

    Raises:
        KeyError: If no instrument has that name.
    """
    for spec in INSTRUMENTS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def attribute(key: str) -> AttributeSpec:
    """Return the spec of the attribute ``key``.

    Raises:
        KeyError: If no attribute has that key.
    """
    for spec in ATTRIBUTES:
        if spec.key == key:
            return spec
    raise KeyError(key)


# --- Prometheus names (as the OTel Prometheus exporter derives them) ------------------------

_INVALID_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9:]+")
_UNIT_ANNOTATION: Final = re.compile(r"{.*}")
UNIT_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "d": "days",
        "h": "hours",
        "min": "minutes",
        "s": "seconds",
        "ms": "milliseconds",
        "us": "microseconds",
        "ns": "nanoseconds",
        "By": "bytes",
        "KiBy": "kibibytes",
        "MiBy": "mebibytes",
        "GiBy": "gibibytes",
        "TiBy": "tibibytes",
        "KBy": "kilobytes",
        "MBy": "megabytes",
        "GBy": "gigabytes",
        "TBy": "terabytes",
        "m": "meters",
        "V": "volts",
        "A": "amperes",
        "J": "joules",
        "W": "watts",
        "g": "grams",
        "Cel": "celsius",
        "Hz": "hertz",
        "1": "",
        "%": "percent",
    }
)
"""Unit words the Prometheus translation appends (as the OTel Prometheus exporter does)."""
PER_UNIT_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "s": "second",
        "m": "minute",
        "h": "hour",
        "d": "day",
        "w": "week",
        "mo": "month",
        "y": "year",
    }
)
"""Words for the ``per`` part of a unit such as ``1/s``."""


def _prometheus_unit(unit: str) -> str:
    """Map a UCUM unit to the Prometheus suffix word (annotations such as ``{call}`` vanish)."""
    unit = _UNIT_ANNOTATION.sub("", unit)
    if unit in UNIT_WORDS:
        return UNIT_WORDS[unit]
    top, slash, bottom = unit.partition("/")
    if slash:
        bottom = _INVALID_NAME_CHARS.sub("_", bottom)
        if bottom:
            top = _INVALID_NAME_CHARS.sub("_", top)
            top = UNIT_WORDS.get(top, top)
            bottom = PER_UNIT_WORDS.get(bottom, bottom)
            return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _INVALID_NAME_CHARS.sub("_", unit).strip("_")


def prometheus_name(spec: InstrumentSpec, *, prefix: str = "") -> str:
    """Return the metric family name the OTel Prometheus exporter gives ``spec``.

    Dots (and every character outside ``[a-zA-Z0-9:]``) become ``_``, the unit becomes a suffix
    (``s`` -> ``_seconds``; annotation units such as ``{call}`` and the unit ``1`` add none),
    and a counter's ``_total`` is left off (it belongs to the sample name).

    Args:
        spec: The instrument.
        prefix: The exporter's ``prefix`` option, if any.

    Returns:
        The family name, e.g. ``resilience_execution_duration_seconds``.
    """
    name = f"{prefix}_{spec.name}" if prefix else spec.name
    if name and name[0].isdigit():
        name = "_" + name[1:]
    name = _INVALID_NAME_CHARS.sub("_", name)
    if spec.kind.is_counter and name.endswith("_total"):
        name = name[: -len("_total")]
    unit = _prometheus_unit(spec.unit)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    return name


def prometheus_series(spec: InstrumentSpec, *, prefix: str = "") -> tuple[str, ...]:
    """Return the sample (series) names a Prometheus scrape shows for ``spec``.

    Counters get ``_total``; histograms ``_bucket``, ``_sum`` and ``_count``; gauges none.

    Args:
        spec: The instrument.
        prefix: The exporter's ``prefix`` option, if any.

    Returns:
        The series names, e.g. ``("resilience_retries_total",)``.
    """
    base = prometheus_name(spec, prefix=prefix)
    if spec.kind.is_counter:
        return (f"{base}_total",)
    if spec.kind is InstrumentKind.HISTOGRAM:
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)
