"""Every telemetry name: attribute keys, their closed value sets, instruments, spans and events.

Plain strings only (no OpenTelemetry import): the catalog (:mod:`.catalog`) describes them and
the binding table (:mod:`.bindings`) says which engine event moves which of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "ALERTS",
    "ALERT_KIND",
    "ALERT_KINDS",
    "ALERT_SEVERITIES",
    "ALERT_SEVERITY",
    "ALERT_SUBJECT",
    "ALERT_SUMMARY",
    "ATTEMPT",
    "ATTEMPT_DURATION",
    "ATTEMPT_LATENCY_BUCKETS",
    "ATTEMPT_LATENCY_COUNT",
    "ATTEMPT_LATENCY_SUM",
    "ATTEMPT_SPAN",
    "ATTEMPT_SPAN_SUFFIX",
    "ATTEMPT_TYPE",
    "ATTEMPT_TYPES",
    "BUCKET_BOUND",
    "BULKHEAD_ACTIVE",
    "BULKHEAD_CONCURRENCY_LIMIT",
    "BULKHEAD_QUEUED",
    "BULKHEAD_QUEUE_LIMIT",
    "BULKHEAD_QUEUE_UTILIZATION",
    "BULKHEAD_UTILIZATION",
    "CB_CALLS",
    "CB_CALL_RESULT",
    "CB_CALL_RESULTS",
    "CB_FAILURE_RATE",
    "CB_FAILURE_RATE_THRESHOLD",
    "CB_OPEN_DURATION",
    "CB_PREVIOUS_STATE",
    "CB_SHARED",
    "CB_SLOW_CALL_RATE",
    "CB_STATE",
    "CB_STATE_METRIC",
    "CB_STATE_SEVERITY",
    "CB_STATE_VALUES",
    "CB_TRANSITIONS",
    "CB_TRANSITIONS_KNOWN",
    "CB_TRANSITION_REASON",
    "CB_TRANSITION_REASONS",
    "CHAOS_DELAY",
    "CHAOS_INJECTIONS",
    "CHAOS_KIND",
    "CHAOS_KINDS",
    "CONFIG_FILE",
    "CONFIG_STALE",
    "DEFAULT_LOG_SEVERITY",
    "DEPENDENCY_ERROR_TYPE",
    "DURATION_BOUNDARIES",
    "ERROR_OUTCOMES",
    "ERROR_PATTERNS",
    "ERROR_PATTERN_COUNT",
    "ERROR_PATTERN_WINDOW",
    "ERROR_TYPE",
    "ERROR_TYPE_OTHER",
    "EV_ALERT",
    "EV_CALL_REJECTED",
    "EV_CHAOS_INJECTED",
    "EV_FALLBACK",
    "EV_HEDGE_DENIED",
    "EV_HEDGE_STARTED",
    "EV_HEDGE_WON",
    "EV_PATTERN",
    "EV_PERMIT_WAITED",
    "EV_POLICY_RELOADED",
    "EV_RECOVERY",
    "EV_RELOAD_FAILED",
    "EV_RETRY_EXHAUSTED",
    "EV_RETRY_SCHEDULED",
    "EV_STATE_CHANGED",
    "EV_TIMEOUT",
    "EXECUTIONS",
    "EXECUTION_DURATION",
    "EXECUTION_LATENCY_BUCKETS",
    "EXECUTION_LATENCY_COUNT",
    "EXECUTION_LATENCY_SUM",
    "EXECUTION_SPAN",
    "FAILED_RESULT",
    "FALLBACK_EXECUTIONS",
    "FALLBACK_RESULT",
    "FALLBACK_STRATEGIES",
    "FALLBACK_STRATEGY",
    "HEDGES",
    "HEDGES_DENIED",
    "HEDGE_DENIED_BY",
    "HEDGE_DENIED_REASONS",
    "HEDGE_TRIGGER",
    "HEDGE_TRIGGERS",
    "HEDGE_WINS",
    "HTTP_METHOD_LEGACY",
    "HTTP_REQUEST_METHOD",
    "HTTP_RESEND_COUNT",
    "IN_PROCESS_HISTOGRAMS",
    "KEY",
    "KEY_OVERFLOW",
    "LOG_SEVERITIES",
    "METRIC_OVERFLOW",
    "NAME",
    "OPERATION",
    "OPERATION_MODULE",
    "OUTCOME",
    "OUTCOME_VALUES",
    "PATTERN",
    "PATTERN_VALUES",
    "POLICY",
    "POLICY_KEYS",
    "POLICY_KEY_EVICTIONS",
    "POLICY_KEY_LIMIT",
    "RECOVERY_ATTEMPTS",
    "RECOVERY_RESULT",
    "RECOVERY_STRATEGIES",
    "RECOVERY_STRATEGY",
    "REJECTIONS",
    "REJECTION_REASON",
    "REJECTION_REASONS",
    "REJECTION_REASONS_BY_PATTERN",
    "RELOAD",
    "RELOAD_OUTCOME",
    "RELOAD_OUTCOMES",
    "RESULTS",
    "RETRIES",
    "RETRY_BUDGET_AVAILABLE",
    "RETRY_DELAY",
    "RETRY_DELAY_BOUNDARIES",
    "RETRY_DELAY_METRIC",
    "RETRY_DELAY_SOURCE",
    "RETRY_DELAY_SOURCES",
    "RETRY_EXHAUSTED",
    "RETRY_STOP_REASON",
    "RETRY_STOP_REASONS",
    "RL_KEYS",
    "RL_KEY_EVICTIONS",
    "RL_KEY_LIMIT",
    "RL_PERMITS",
    "RL_PERMIT_RESULT",
    "RL_PERMIT_RESULTS",
    "RL_WAIT",
    "RL_WAIT_METRIC",
    "SCHEMA_URL",
    "SCOPE_NAME",
    "STORE_DEGRADED",
    "STORE_ERRORS",
    "STORE_FALLBACK_PERMITS",
    "STORE_OPERATIONS",
    "STORE_OUTAGES",
    "TELEMETRY_ERRORS",
    "TIMEOUTS",
    "TIMEOUT_ERROR_TYPE",
    "TIMEOUT_LIMIT",
    "TIMEOUT_SCOPE",
    "TIMEOUT_SCOPES",
]

SCOPE_NAME: Final = "otel_resilience"
"""The instrumentation scope name of every tracer, meter and logger."""
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
"""The semantic-conventions schema the standard attributes (``error.type``,
``http.request.resend_count``) follow."""

# --- attribute keys --------------------------------------------------------------------------

POLICY: Final = "resilience.policy"
PATTERN: Final = "resilience.pattern"
NAME: Final = "resilience.name"
OUTCOME: Final = "resilience.outcome"
ERROR_TYPE: Final = "error.type"
ATTEMPT: Final = "resilience.attempt"
ATTEMPT_TYPE: Final = "resilience.attempt.type"
HEDGE_TRIGGER: Final = "resilience.hedging.trigger"
HEDGE_DENIED_BY: Final = "resilience.hedging.denied_by"
HTTP_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_REQUEST_METHOD: Final = "http.request.method"
"""Read (never written) to recognise the caller's span as an HTTP client span."""
HTTP_METHOD_LEGACY: Final = "http.method"
"""The pre-1.21 spelling of ``http.request.method``, also recognised."""
RETRY_DELAY: Final = "resilience.retry.delay"
RETRY_STOP_REASON: Final = "resilience.retry.stop_reason"
RETRY_DELAY_SOURCE: Final = "resilience.retry.delay_source"
CB_STATE: Final = "resilience.circuit_breaker.state"
CB_PREVIOUS_STATE: Final = "resilience.circuit_breaker.previous_state"
CB_TRANSITION_REASON: Final = "resilience.circuit_breaker.transition_reason"
CB_OPEN_DURATION: Final = "resilience.circuit_breaker.open_duration"
CB_CALL_RESULT: Final = "resilience.circuit_breaker.call_result"
REJECTION_REASON: Final = "resilience.rejection.reason"
TIMEOUT_SCOPE: Final = "resilience.timeout.scope"
TIMEOUT_LIMIT: Final = "resilience.timeout.limit"
FALLBACK_STRATEGY: Final = "resilience.fallback.strategy"
FALLBACK_RESULT: Final = "resilience.fallback.result"
RECOVERY_STRATEGY: Final = "resilience.recovery.strategy"
RECOVERY_RESULT: Final = "resilience.recovery.result"
OPERATION: Final = "resilience.operation"
OPERATION_MODULE: Final = "resilience.operation.module"
"""The module of the function an error pattern's operation is named after: two modules' functions
of one name (``users.fetch``, ``orders.fetch``) are two patterns, both of operation ``fetch``."""
ERROR_PATTERN_COUNT: Final = "resilience.error_pattern.count"
ERROR_PATTERN_WINDOW: Final = "resilience.error_pattern.window"
ALERT_KIND: Final = "resilience.alert.kind"
ALERT_SEVERITY: Final = "resilience.alert.severity"
ALERT_SUBJECT: Final = "resilience.alert.subject"
ALERT_SUMMARY: Final = "resilience.alert.summary"
DEPENDENCY_ERROR_TYPE: Final = "resilience.dependency.error.type"
RL_PERMIT_RESULT: Final = "resilience.rate_limiter.permit_result"
RL_WAIT: Final = "resilience.rate_limiter.wait"

BUCKET_BOUND: Final = "le"
"""The upper bound of a bucket of an in-process histogram (``0.005``, ... ``+Inf``), named as
Prometheus names the bound of a histogram bucket, so that ``histogram_quantile`` reads it."""
KEY: Final = "resilience.key"
"""The key of a keyed policy's call: on its execution span always, on its metrics only where the
policy opted in (``key_attribute_limit``)."""
METRIC_OVERFLOW: Final = "otel.metric.overflow"
"""``true`` on the one series of the keys past a policy's ``key_attribute_limit`` (the attribute
the OpenTelemetry SDK sets on the overflow series of a cardinality limit)."""
RELOAD_OUTCOME: Final = "resilience.reload.outcome"
CONFIG_FILE: Final = "resilience.config.file"

CHAOS_KIND: Final = "resilience.chaos.kind"
CHAOS_DELAY: Final = "resilience.chaos.delay"

OUTCOME_VALUES: Final = ("success", "recovered", "fallback", "failure", "rejected", "timeout", "cancelled")
"""The values of :class:`otel_resilience.engine.events.Outcome`."""
ERROR_OUTCOMES: Final = frozenset({"failure", "rejected", "timeout"})
"""Outcomes that mark a span as ERROR and carry ``error.type``; the others are not errors."""
FAILED_RESULT: Final = "failed_result"
"""The ``error.type`` of an execution or attempt that returned a result its policy judged a
failure (``retry_on_result``, ``hedge_on_result``, a breaker's ``record_result``, a fallback's
``handle_result``): no exception names it, so the class of failure is named, one value for all
such results (low cardinality)."""
ERROR_TYPE_OTHER: Final = "_OTHER"
"""The ``error.type`` of an error no exception names and that is no :data:`FAILED_RESULT` nor a
:data:`TIMEOUT_ERROR_TYPE` (the semantic conventions' fallback value)."""
TIMEOUT_ERROR_TYPE: Final = "otel_resilience.errors.OperationTimeoutError"
"""The ``error.type`` of a timeout no exception of its own names: an attempt the effective deadline
ended (an enclosing scope's: its cancellation in a task, its engine error in a thread), named in both
drivers as the ``OperationTimeoutError`` the scope that owns the deadline raises, which the caller
gets. The engine's own deadline errors are named so too (``engine.events.error_type_name``)."""
PATTERN_VALUES: Final = (
    "pipeline",
    "circuit_breaker",
    "retry",
    "fallback",
    "timeout",
    "bulkhead",
    "recovery",
    "alerts",
    "rate_limiter",
    "chaos",
    "hedging",
)
CB_STATE_VALUES: Final = ("closed", "open", "half_open", "disabled", "metrics_only")
CB_STATE_SEVERITY: Final = ("closed", "disabled", "metrics_only", "half_open", "open")
"""Breaker states from the least to the most severe: the one order of the state an operator sees
when breakers of one name disagree, within a process (the state gauge merging namesakes, such as
a keyed policy's keys) and across a service's instances (the dashboards' state timeline).

The states that reject calls come last, open above half_open (which lets probes through). Below
them the two modes an operator sets, both letting every call through: ``metrics_only`` ranks
above ``disabled`` because it is the one with something to watch (it reports the trips it would
make, which ``ResilienceCircuitBreakerWouldOpen`` reads from the metrics_only series), while a
disabled breaker is inert; a disabled namesake must not hide a breaker on trial. Either mode
ranks above closed, so a closed namesake (a new key's breaker) never hides what an operator set."""
CB_TRANSITION_REASONS: Final = (
    "failure_threshold",
    "failure_rate",
    "slow_call_rate",
    "timeout_elapsed",
    "probe_failed",
    "probe_timed_out",
    "probe_succeeded",
    "forced",
    "reset",
    "isolated",
)
_TRIPS: Final = ("failure_threshold", "failure_rate", "slow_call_rate")
CB_CALL_RESULTS: Final = ("success", "failure", "rejected", "ignored", "cancelled")
RL_PERMIT_RESULTS: Final = ("immediate", "waited", "rejected", "cancelled")
"""How a rate limiter answered a request for a permit: taken at once, taken after a wait, refused,
or given back by a waiter that gave up."""
CB_TRANSITIONS_KNOWN: Final = (
    *(("closed", "open", trip) for trip in _TRIPS),
    ("closed", "open", "forced"),
    ("closed", "open", "isolated"),
    ("open", "open", "forced"),
    ("open", "open", "isolated"),
    ("open", "half_open", "timeout_elapsed"),
    ("open", "closed", "reset"),
    ("open", "closed", "forced"),
    ("half_open", "closed", "probe_succeeded"),
    ("half_open", "closed", "reset"),
    ("half_open", "closed", "forced"),
    ("half_open", "open", "probe_failed"),
    ("half_open", "open", "probe_timed_out"),
    ("half_open", "open", "slow_call_rate"),
    ("half_open", "open", "forced"),
    ("half_open", "open", "isolated"),
    *((old, new, "forced") for old in CB_STATE_VALUES for new in ("disabled", "metrics_only") if old != new),
    ("disabled", "open", "forced"),
    ("disabled", "open", "isolated"),
    ("disabled", "closed", "reset"),
    ("disabled", "closed", "forced"),
    ("metrics_only", "open", "forced"),
    ("metrics_only", "open", "isolated"),
    ("metrics_only", "closed", "reset"),
    ("metrics_only", "closed", "forced"),
    *(("metrics_only", "metrics_only", trip) for trip in _TRIPS),
)
"""Every (previous state, state, reason) a circuit breaker can report: the transition series
that exist, at 0, from the moment a breaker is created. A METRICS_ONLY breaker reports each trip
it would make as a change from ``metrics_only`` to ``metrics_only`` with the trip's reason, and a
forced opening (or a lengthening isolation) of an OPEN breaker as ``open`` to ``open``: its OPEN
period starts again, with a new end."""
REJECTION_REASONS: Final = (
    "circuit_open",
    "half_open_full",
    "bulkhead_full",
    "queue_timeout",
    "rate_limited",
)
REJECTION_REASONS_BY_PATTERN: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "circuit_breaker": ("circuit_open", "half_open_full"),
        "bulkhead": ("bulkhead_full", "queue_timeout"),
        "rate_limiter": ("rate_limited",),
    }
)
"""The rejection reasons each pattern kind can report: the rejection series that exist, at 0,
from the moment a pattern of that kind is placed in a pipeline."""
RETRY_STOP_REASONS: Final = (
    "max_attempts",
    "deadline",
    "max_attempts_total",
    "budget",
    "max_delay",
    "not_retryable",
)
RETRY_DELAY_SOURCES: Final = ("strategy", "outcome")
ATTEMPT_TYPES: Final = ("original", "hedge")
"""The values of :data:`ATTEMPT_TYPE`, as gRPC's ``grpc.attempt_type`` has them."""
HEDGE_TRIGGERS: Final = ("delay", "failure", "parallel")
HEDGE_DENIED_REASONS: Final = ("budget", "max_attempts", "not_replayable", "deadline", "rejected")
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
KEY_OVERFLOW: Final = "_OTHER"
"""The ``resilience.key`` of the overflow series (with ``otel.metric.overflow=true``)."""
RELOAD_OUTCOMES: Final = ("succeeded", "failed")
"""Whether a policy took its new configuration, or refused it (and changed nothing)."""
CHAOS_KINDS: Final = ("fault", "latency", "outcome")
"""What a chaos link injects: an exception, a delay before the call, or a result in its place."""


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
EXECUTION_LATENCY_BUCKETS: Final = "resilience.execution.latency.bucket"
EXECUTION_LATENCY_SUM: Final = "resilience.execution.latency.sum"
EXECUTION_LATENCY_COUNT: Final = "resilience.execution.latency.count"
ATTEMPT_LATENCY_BUCKETS: Final = "resilience.attempt.latency.bucket"
ATTEMPT_LATENCY_SUM: Final = "resilience.attempt.latency.sum"
ATTEMPT_LATENCY_COUNT: Final = "resilience.attempt.latency.count"
IN_PROCESS_HISTOGRAMS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        EXECUTION_DURATION: MappingProxyType(
            {
                "bucket": EXECUTION_LATENCY_BUCKETS,
                "sum": EXECUTION_LATENCY_SUM,
                "count": EXECUTION_LATENCY_COUNT,
            }
        ),
        ATTEMPT_DURATION: MappingProxyType(
            {"bucket": ATTEMPT_LATENCY_BUCKETS, "sum": ATTEMPT_LATENCY_SUM, "count": ATTEMPT_LATENCY_COUNT}
        ),
    }
)
"""The duration histograms that ``instrument(in_process_histograms=True)`` keeps in process, each
with the observable counter that exports each of its series in that mode, by the series'
suffix: ``"bucket"`` (cumulative counts by :data:`BUCKET_BOUND`), ``"sum"`` and ``"count"``."""
EXECUTIONS: Final = "resilience.executions"
CB_STATE_METRIC: Final = "resilience.circuit_breaker.state"
CB_TRANSITIONS: Final = "resilience.circuit_breaker.transitions"
CB_CALLS: Final = "resilience.circuit_breaker.calls"
CB_FAILURE_RATE: Final = "resilience.circuit_breaker.failure_rate"
CB_SLOW_CALL_RATE: Final = "resilience.circuit_breaker.slow_call_rate"
CB_FAILURE_RATE_THRESHOLD: Final = "resilience.circuit_breaker.failure_rate_threshold"
REJECTIONS: Final = "resilience.rejections"
RETRIES: Final = "resilience.retries"
RETRY_DELAY_METRIC: Final = "resilience.retry.delay"
RETRY_EXHAUSTED: Final = "resilience.retry.exhausted"
RETRY_BUDGET_AVAILABLE: Final = "resilience.retry.budget.available"
RL_PERMITS: Final = "resilience.rate_limiter.permits"
RL_WAIT_METRIC: Final = "resilience.rate_limiter.wait"
RL_KEYS: Final = "resilience.rate_limiter.keys"
RL_KEY_LIMIT: Final = "resilience.rate_limiter.key_limit"
RL_KEY_EVICTIONS: Final = "resilience.rate_limiter.key_evictions"
TIMEOUTS: Final = "resilience.timeouts"
HEDGES: Final = "resilience.hedging.hedges"
HEDGES_DENIED: Final = "resilience.hedging.denied"
HEDGE_WINS: Final = "resilience.hedging.wins"
FALLBACK_EXECUTIONS: Final = "resilience.fallback.executions"
BULKHEAD_ACTIVE: Final = "resilience.bulkhead.active"
BULKHEAD_QUEUED: Final = "resilience.bulkhead.queued"
BULKHEAD_CONCURRENCY_LIMIT: Final = "resilience.bulkhead.concurrency.limit"
BULKHEAD_QUEUE_LIMIT: Final = "resilience.bulkhead.queue.limit"
BULKHEAD_UTILIZATION: Final = "resilience.bulkhead.utilization"
BULKHEAD_QUEUE_UTILIZATION: Final = "resilience.bulkhead.queue_utilization"
RECOVERY_ATTEMPTS: Final = "resilience.recovery.attempts"
ERROR_PATTERNS: Final = "resilience.recovery.error_patterns"
ALERTS: Final = "resilience.alerts"
TELEMETRY_ERRORS: Final = "resilience.telemetry.errors"
CHAOS_INJECTIONS: Final = "resilience.chaos.injections"
RELOAD: Final = "resilience.reload"
POLICY_KEYS: Final = "resilience.policy.keys"
POLICY_KEY_LIMIT: Final = "resilience.policy.key_limit"
POLICY_KEY_EVICTIONS: Final = "resilience.policy.key_evictions"
CONFIG_STALE: Final = "resilience.config.stale"
CB_SHARED: Final = "resilience.circuit_breaker.shared"
STORE_DEGRADED: Final = "resilience.store.degraded"
STORE_OUTAGES: Final = "resilience.store.outages"
STORE_ERRORS: Final = "resilience.store.errors"
STORE_OPERATIONS: Final = "resilience.store.operations"
STORE_FALLBACK_PERMITS: Final = "resilience.store.fallback_permits"

# --- spans and events ------------------------------------------------------------------------

EXECUTION_SPAN: Final = "{operation}"
ATTEMPT_SPAN: Final = "{operation} attempt"
ATTEMPT_SPAN_SUFFIX: Final = " attempt"

EV_RETRY_SCHEDULED: Final = "resilience.retry.scheduled"
EV_RETRY_EXHAUSTED: Final = "resilience.retry.exhausted"
EV_STATE_CHANGED: Final = "resilience.circuit_breaker.state_changed"
EV_CALL_REJECTED: Final = "resilience.call.rejected"
EV_TIMEOUT: Final = "resilience.timeout.expired"
EV_FALLBACK: Final = "resilience.fallback.executed"
EV_RECOVERY: Final = "resilience.recovery.attempted"
EV_PATTERN: Final = "resilience.error_pattern.detected"
EV_ALERT: Final = "resilience.alert.raised"
EV_PERMIT_WAITED: Final = "resilience.rate_limiter.waited"

EV_CHAOS_INJECTED: Final = "resilience.chaos.injected"
EV_HEDGE_STARTED: Final = "resilience.hedging.started"
EV_HEDGE_DENIED: Final = "resilience.hedging.hedge_denied"
EV_HEDGE_WON: Final = "resilience.hedging.won"
EV_POLICY_RELOADED: Final = "resilience.policy.reloaded"
EV_RELOAD_FAILED: Final = "resilience.policy.reload_failed"

LOG_SEVERITIES: Final[Mapping[str, str]] = MappingProxyType(
    {"info": "INFO", "warning": "WARN", "critical": "ERROR"}
)
"""The log severity (an OpenTelemetry ``SeverityNumber`` name) of each alert severity."""
DEFAULT_LOG_SEVERITY: Final = "WARN"
"""The log severity of an alert whose severity is not in :data:`LOG_SEVERITIES`."""
