"""The catalog: what every instrument, attribute and span is, for the listener and the docs.

``docs/telemetry.md`` is generated from these entries (``python -m otel_resilience.telemetry.docs``).
"""

from __future__ import annotations

from typing import Final

from otel_resilience.telemetry.semconv.names import (
    ALERT_KIND,
    ALERT_KINDS,
    ALERT_SEVERITIES,
    ALERT_SEVERITY,
    ALERT_SUBJECT,
    ALERT_SUMMARY,
    ALERTS,
    ATTEMPT,
    ATTEMPT_DURATION,
    ATTEMPT_SPAN,
    ATTEMPT_TYPE,
    ATTEMPT_TYPES,
    BULKHEAD_ACTIVE,
    BULKHEAD_CONCURRENCY_LIMIT,
    BULKHEAD_QUEUE_LIMIT,
    BULKHEAD_QUEUED,
    CB_CALL_RESULT,
    CB_CALL_RESULTS,
    CB_CALLS,
    CB_FAILURE_RATE,
    CB_FAILURE_RATE_THRESHOLD,
    CB_OPEN_DURATION,
    CB_PREVIOUS_STATE,
    CB_SLOW_CALL_RATE,
    CB_STATE,
    CB_STATE_METRIC,
    CB_STATE_VALUES,
    CB_TRANSITION_REASON,
    CB_TRANSITION_REASONS,
    CB_TRANSITIONS,
    DEPENDENCY_ERROR_TYPE,
    DURATION_BOUNDARIES,
    ERROR_PATTERN_COUNT,
    ERROR_PATTERN_WINDOW,
    ERROR_PATTERNS,
    ERROR_TYPE,
    EXECUTION_DURATION,
    EXECUTION_SPAN,
    EXECUTIONS,
    FALLBACK_EXECUTIONS,
    FALLBACK_RESULT,
    FALLBACK_STRATEGIES,
    FALLBACK_STRATEGY,
    HEDGE_TRIGGER,
    HEDGE_TRIGGERS,
    HEDGE_WINS,
    HEDGES,
    HTTP_RESEND_COUNT,
    NAME,
    OPERATION,
    OUTCOME,
    OUTCOME_VALUES,
    PATTERN,
    PATTERN_VALUES,
    POLICY,
    RECOVERY_ATTEMPTS,
    RECOVERY_RESULT,
    RECOVERY_STRATEGIES,
    RECOVERY_STRATEGY,
    REJECTION_REASON,
    REJECTION_REASONS,
    REJECTIONS,
    RESULTS,
    RETRIES,
    RETRY_BUDGET_AVAILABLE,
    RETRY_DELAY,
    RETRY_DELAY_BOUNDARIES,
    RETRY_DELAY_METRIC,
    RETRY_DELAY_SOURCE,
    RETRY_DELAY_SOURCES,
    RETRY_EXHAUSTED,
    RETRY_STOP_REASON,
    RETRY_STOP_REASONS,
    TELEMETRY_ERRORS,
    TIMEOUT_LIMIT,
    TIMEOUT_SCOPE,
    TIMEOUT_SCOPES,
    TIMEOUTS,
)
from otel_resilience.telemetry.semconv.specs import AttributeSpec, InstrumentKind, InstrumentSpec, SpanSpec

__all__ = ["ATTRIBUTES", "INSTRUMENTS", "SPANS", "attribute", "instrument"]

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
        ATTEMPT_TYPE,
        "string",
        "On the attempts of a hedged execution (attempt spans, and the hedge-win counter): "
        "`original` for the first attempt, `hedge` for every attempt started beside or after it "
        "(the shape of gRPC's `grpc.attempt_type`).",
        ATTEMPT_TYPES,
    ),
    AttributeSpec(
        HEDGE_TRIGGER,
        "string",
        "Why a hedge started: the latest attempt ran longer than the hedge `delay`, an attempt "
        "ended with an outcome that is not acceptable (`failure`), or every attempt starts at "
        "once (`parallel`).",
        HEDGE_TRIGGERS,
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
        "the retry budget (`budget`: retries already added their share of load), a delay the "
        "outcome asked for over the policy's `max_delay`, or an error the policy does not retry.",
        RETRY_STOP_REASONS,
    ),
    AttributeSpec(
        RETRY_DELAY_SOURCE,
        "string",
        "Where the backoff came from: the policy's `strategy`, or the failed attempt's `outcome` "
        "(a `Retry-After` or an error's `retry_after`, through `RetryPolicy.delay_from`).",
        RETRY_DELAY_SOURCES,
    ),
    AttributeSpec(
        CB_STATE, "string", "A circuit breaker state (the new state of a transition).", CB_STATE_VALUES
    ),
    AttributeSpec(CB_PREVIOUS_STATE, "string", "The state a circuit breaker left.", CB_STATE_VALUES),
    AttributeSpec(
        CB_TRANSITION_REASON, "string", "Why a circuit breaker changed state.", CB_TRANSITION_REASONS
    ),
    AttributeSpec(
        CB_OPEN_DURATION, "double", "How long a circuit breaker stays open (on a change to open).", unit="s"
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
        CB_FAILURE_RATE,
        _K.OBSERVABLE_GAUGE,
        "1",
        "Share of failed calls in the sliding window of each live windowed circuit breaker "
        "(0 while the window is empty); breakers without a window report none.",
        (NAME,),
    ),
    InstrumentSpec(
        CB_SLOW_CALL_RATE,
        _K.OBSERVABLE_GAUGE,
        "1",
        "Share of slow calls (slow_call_duration or longer) in the sliding window of each live "
        "windowed circuit breaker.",
        (NAME,),
    ),
    InstrumentSpec(
        CB_FAILURE_RATE_THRESHOLD,
        _K.OBSERVABLE_GAUGE,
        "1",
        "The failure rate at which each live windowed circuit breaker opens (its configured "
        "failure_rate_threshold), to compare the rate with.",
        (NAME,),
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
        RETRY_BUDGET_AVAILABLE,
        _K.OBSERVABLE_GAUGE,
        "{retry}",
        "Retries the retry budget would allow now, for each live retry (name) in each policy that "
        "has a budget; a budget shared by several policies shows under each. The retries it denied "
        "are the executions counted by `resilience.retry.exhausted` with stop reason `budget`.",
        (POLICY, NAME),
    ),
    InstrumentSpec(
        TIMEOUTS,
        _K.COUNTER,
        "{timeout}",
        "Deadlines that expired.",
        (POLICY, PATTERN, NAME, TIMEOUT_SCOPE),
    ),
    InstrumentSpec(
        HEDGES,
        _K.COUNTER,
        "{hedge}",
        "Hedges started: attempts of a hedged execution after the original, by trigger. Each is a "
        "call of the dependency; compare with `resilience.executions` of the policy for the extra "
        "load hedging adds.",
        (POLICY, NAME, HEDGE_TRIGGER),
    ),
    InstrumentSpec(
        HEDGE_WINS,
        _K.COUNTER,
        "{execution}",
        "Hedged executions in which more than one attempt started, by the type of the attempt that "
        "answered (`original` or `hedge`); `hedge` over `resilience.hedging.hedges` is how often "
        "a hedge paid off.",
        (POLICY, NAME, ATTEMPT_TYPE),
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

SPANS: Final[tuple[SpanSpec, ...]] = (
    SpanSpec(
        EXECUTION_SPAN,
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
        "One per attempt after the execution's first (attempt 2 onwards, numbered uniquely across "
        "retry attempts, recovery re-runs and hedges), child of the execution span (or of the "
        "attempt it runs in); attempt 1 runs in the execution span, except in a hedged execution, "
        "where every attempt, the original included, has its span with `resilience.attempt.type`, "
        "the winner carries the `resilience.hedging.won` event (when more than one attempt "
        "started) and the losers end with outcome `cancelled`, not ERROR. A failed attempt is "
        "ERROR with `error.type`.",
        (POLICY, PATTERN, NAME, ATTEMPT, OUTCOME),
        (ERROR_TYPE, HTTP_RESEND_COUNT, ATTEMPT_TYPE),
    ),
)


_INSTRUMENTS_BY_NAME: Final = {spec.name: spec for spec in INSTRUMENTS}
_ATTRIBUTES_BY_KEY: Final = {spec.key: spec for spec in ATTRIBUTES}


def instrument(name: str) -> InstrumentSpec:
    """Return the spec of the instrument called ``name``.

    Raises:
        KeyError: If no instrument has that name.
    """
    return _INSTRUMENTS_BY_NAME[name]


def attribute(key: str) -> AttributeSpec:
    """Return the spec of the attribute ``key``.

    Raises:
        KeyError: If no attribute has that key.
    """
    return _ATTRIBUTES_BY_KEY[key]
