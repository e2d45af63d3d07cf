"""The one table of what each engine event becomes in OpenTelemetry, and the zero series.

:data:`EVENTS` has one row per kind of event the library's patterns report (each
:class:`~otel_resilience.engine.events.Event`, and the kinds a pattern declares in its own
package, :class:`~otel_resilience.engine.events.EventKind`): the attribute key of each of the
event's fields, the span event it adds, the instruments it moves, and the log record it emits.
The OpenTelemetry listener has one generic handler that reads it: a new kind of event adds names
(:mod:`.names`), catalog entries (:mod:`.catalog`, :mod:`.instruments`) and a row here, no code;
a kind with no row (a user's own) is not sent to it (:func:`has_binding`).

:data:`ZERO_SERIES` lists, per pattern kind, the counter series that exist at 0 from the moment
an instance exists.
"""

from __future__ import annotations

from itertools import product
from typing import Final

from otel_resilience.telemetry.semconv.names import (
    ALERT_KIND,
    ALERT_SEVERITY,
    ALERT_SUBJECT,
    ALERT_SUMMARY,
    ALERTS,
    ATTEMPT,
    ATTEMPT_TYPE,
    CB_OPEN_DURATION,
    CB_PREVIOUS_STATE,
    CB_STATE,
    CB_TRANSITION_REASON,
    CB_TRANSITIONS,
    CB_TRANSITIONS_KNOWN,
    CHAOS_DELAY,
    CHAOS_INJECTIONS,
    CHAOS_KIND,
    CHAOS_KINDS,
    ERROR_PATTERN_COUNT,
    ERROR_PATTERN_WINDOW,
    ERROR_PATTERNS,
    ERROR_TYPE,
    EV_ALERT,
    EV_CALL_REJECTED,
    EV_CHAOS_INJECTED,
    EV_FALLBACK,
    EV_HEDGE_DENIED,
    EV_HEDGE_STARTED,
    EV_HEDGE_WON,
    EV_PATTERN,
    EV_PERMIT_WAITED,
    EV_POLICY_RELOADED,
    EV_RECOVERY,
    EV_RELOAD_FAILED,
    EV_RETRY_EXHAUSTED,
    EV_RETRY_SCHEDULED,
    EV_STATE_CHANGED,
    EV_TIMEOUT,
    FALLBACK_EXECUTIONS,
    FALLBACK_RESULT,
    FALLBACK_STRATEGY,
    HEDGE_DENIED_BY,
    HEDGE_DENIED_REASONS,
    HEDGE_TRIGGER,
    HEDGE_WINS,
    HEDGES,
    HEDGES_DENIED,
    NAME,
    OPERATION,
    OPERATION_MODULE,
    PATTERN,
    RECOVERY_ATTEMPTS,
    RECOVERY_RESULT,
    RECOVERY_STRATEGIES,
    RECOVERY_STRATEGY,
    REJECTION_REASON,
    REJECTION_REASONS_BY_PATTERN,
    REJECTIONS,
    RELOAD,
    RELOAD_OUTCOME,
    RELOAD_OUTCOMES,
    RESULTS,
    RETRIES,
    RETRY_DELAY,
    RETRY_DELAY_METRIC,
    RETRY_DELAY_SOURCE,
    RETRY_EXHAUSTED,
    RETRY_STOP_REASON,
    RL_WAIT,
    RL_WAIT_METRIC,
    TIMEOUT_LIMIT,
    TIMEOUT_SCOPE,
    TIMEOUTS,
)
from otel_resilience.telemetry.semconv.specs import (
    EventBinding,
    LogBinding,
    LogEventSpec,
    MetricBinding,
    SpanEventSpec,
    ZeroSeries,
)

__all__ = ["EVENTS", "LOG_EVENTS", "SPAN_EVENTS", "ZERO_SERIES", "binding", "has_binding"]

_ALERT_LOG: Final = LogEventSpec(
    EV_ALERT,
    "from the alert's severity: warning -> WARN, critical -> ERROR",
    "An in-process alert was raised; the body is its summary.",
    (PATTERN, NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT),
)
_PATTERN_LOG: Final = LogEventSpec(
    EV_PATTERN,
    "WARN",
    "A repeated error pattern was detected; the body says which error, where (with the module of a "
    "function the operation is named after) and how often.",
    (PATTERN, NAME, ERROR_TYPE, OPERATION, ERROR_PATTERN_COUNT, ERROR_PATTERN_WINDOW),
    (OPERATION_MODULE,),
)

_RELOAD_FAILED_LOG: Final = LogEventSpec(
    EV_RELOAD_FAILED,
    "WARN",
    "A named policy (`resilience.name`) refused a new configuration and kept its own; the body "
    "names the error.",
    (PATTERN, NAME, RELOAD_OUTCOME, ERROR_TYPE),
)

LOG_EVENTS: Final[tuple[LogEventSpec, ...]] = (_ALERT_LOG, _PATTERN_LOG, _RELOAD_FAILED_LOG)
"""Every log event, in documentation order."""

EVENTS: Final[tuple[EventBinding, ...]] = (
    EventBinding(
        "retry_scheduled",
        (
            ("attempt", ATTEMPT),
            ("delay", RETRY_DELAY),
            ("error_type", ERROR_TYPE),
            ("delay_source", RETRY_DELAY_SOURCE),
        ),
        SpanEventSpec(
            EV_RETRY_SCHEDULED,
            "A failed attempt will be retried after the delay (the backoff is visible on the span), "
            "taken from the policy's strategy or from the outcome.",
            (PATTERN, NAME, ATTEMPT, RETRY_DELAY, RETRY_DELAY_SOURCE),
            (ERROR_TYPE,),
        ),
        (MetricBinding(RETRIES), MetricBinding(RETRY_DELAY_METRIC, RETRY_DELAY)),
        dependency_error=True,
    ),
    EventBinding(
        "retry_exhausted",
        (("attempts", ATTEMPT), ("reason", RETRY_STOP_REASON), ("error_type", ERROR_TYPE)),
        SpanEventSpec(
            EV_RETRY_EXHAUSTED,
            "A retry gave up (once per run of the retry); the last error is re-raised, or the last "
            "result returned.",
            (PATTERN, NAME, ATTEMPT, RETRY_STOP_REASON),
            (ERROR_TYPE,),
        ),
        (MetricBinding(RETRY_EXHAUSTED),),
        dependency_error=True,
    ),
    EventBinding(
        "state_changed",
        (
            ("old", CB_PREVIOUS_STATE),
            ("new", CB_STATE),
            ("reason", CB_TRANSITION_REASON),
            ("duration", CB_OPEN_DURATION),
        ),
        SpanEventSpec(
            EV_STATE_CHANGED,
            "A circuit breaker changed state (a METRICS_ONLY breaker: a trip it would make; an OPEN "
            "breaker forced open again: `open` to `open`, its OPEN period started again).",
            (PATTERN, NAME, CB_PREVIOUS_STATE, CB_STATE, CB_TRANSITION_REASON),
            (CB_OPEN_DURATION,),
        ),
        (MetricBinding(CB_TRANSITIONS),),
    ),
    EventBinding(
        "call_rejected",
        (("reason", REJECTION_REASON),),
        SpanEventSpec(
            EV_CALL_REJECTED,
            "A call was rejected, whatever the reason (a bulkhead's queue timeout included, added to "
            "the waiting call's span when the wait expires).",
            (PATTERN, NAME, REJECTION_REASON),
        ),
        (MetricBinding(REJECTIONS),),
    ),
    EventBinding(
        "timeout",
        (("scope", TIMEOUT_SCOPE), ("timeout", TIMEOUT_LIMIT)),
        SpanEventSpec(EV_TIMEOUT, "A deadline expired.", (PATTERN, NAME, TIMEOUT_SCOPE, TIMEOUT_LIMIT)),
        (MetricBinding(TIMEOUTS),),
    ),
    EventBinding(
        "fallback_used",
        (("strategy", FALLBACK_STRATEGY), ("result", FALLBACK_RESULT), ("error_type", ERROR_TYPE)),
        SpanEventSpec(
            EV_FALLBACK,
            "A fallback ran in place of the failed call.",
            (PATTERN, NAME, FALLBACK_STRATEGY, FALLBACK_RESULT, ERROR_TYPE),
        ),
        (MetricBinding(FALLBACK_EXECUTIONS),),
    ),
    EventBinding(
        "recovery_attempted",
        (("strategy", RECOVERY_STRATEGY), ("result", RECOVERY_RESULT), ("error_type", ERROR_TYPE)),
        SpanEventSpec(
            EV_RECOVERY,
            "A recovery rule acted on an error.",
            (PATTERN, NAME, RECOVERY_STRATEGY, RECOVERY_RESULT, ERROR_TYPE),
        ),
        (MetricBinding(RECOVERY_ATTEMPTS),),
        dependency_error=True,
    ),
    EventBinding(
        "pattern_detected",
        (
            ("error_type", ERROR_TYPE),
            ("operation", OPERATION),
            ("count", ERROR_PATTERN_COUNT),
            ("window", ERROR_PATTERN_WINDOW),
            ("module", OPERATION_MODULE),
        ),
        SpanEventSpec(
            EV_PATTERN,
            "A repeated error pattern was detected.",
            (PATTERN, NAME, ERROR_TYPE, OPERATION, ERROR_PATTERN_COUNT, ERROR_PATTERN_WINDOW),
            (OPERATION_MODULE,),
        ),
        (MetricBinding(ERROR_PATTERNS),),
        LogBinding(
            _PATTERN_LOG,
            "{error_type} repeated {count} times within {window:g} s in {operation!r}",
            body_when_set=(("module", " (module {module!r})"),),
        ),
    ),
    EventBinding(
        "alert_raised",
        (
            ("kind", ALERT_KIND),
            ("severity", ALERT_SEVERITY),
            ("subject", ALERT_SUBJECT),
            ("summary", ALERT_SUMMARY),
        ),
        SpanEventSpec(
            EV_ALERT,
            "An in-process alert was raised.",
            (PATTERN, NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT, ALERT_SUMMARY),
        ),
        (MetricBinding(ALERTS),),
        LogBinding(_ALERT_LOG, "{summary}", severity_field="severity"),
    ),
    EventBinding(
        "permit_waited",
        (("wait", RL_WAIT),),
        SpanEventSpec(
            EV_PERMIT_WAITED,
            "A call waited for its rate-limiter permit and took it (the wait is visible on the span).",
            (PATTERN, NAME, RL_WAIT),
        ),
        (MetricBinding(RL_WAIT_METRIC, RL_WAIT),),
    ),
    EventBinding(
        "chaos_injected",
        (("kind", CHAOS_KIND), ("error_type", ERROR_TYPE), ("delay", CHAOS_DELAY)),
        SpanEventSpec(
            EV_CHAOS_INJECTED,
            "A chaos link injected a fault, a delay or a result (a drill): the span's failure, "
            "slowness or answer was not the dependency's.",
            (PATTERN, NAME, CHAOS_KIND),
            (ERROR_TYPE, CHAOS_DELAY),
        ),
        (MetricBinding(CHAOS_INJECTIONS),),
    ),
    EventBinding(
        "hedge_started",
        (("attempt", ATTEMPT), ("trigger", HEDGE_TRIGGER)),
        SpanEventSpec(
            EV_HEDGE_STARTED,
            "A hedged execution ran another attempt (a hedge), and why; reported as the race ends.",
            (PATTERN, NAME, ATTEMPT, HEDGE_TRIGGER),
        ),
        (MetricBinding(HEDGES),),
    ),
    EventBinding(
        "hedge_denied",
        (("trigger", HEDGE_TRIGGER), ("denied_by", HEDGE_DENIED_BY)),
        SpanEventSpec(
            EV_HEDGE_DENIED,
            "A hedge was due but refused: by the hedge budget, by the execution's cap on attempts, "
            "because the request may be sent only once, by the deadline, or because the policy's "
            "own breaker, bulkhead or rate limiter rejected the hedge (before it called anything) "
            "or the attempt before it.",
            (PATTERN, NAME, HEDGE_TRIGGER, HEDGE_DENIED_BY),
        ),
        (MetricBinding(HEDGES_DENIED),),
    ),
    EventBinding(
        "hedge_won",
        (("attempt", ATTEMPT), ("attempt_type", ATTEMPT_TYPE)),
        SpanEventSpec(
            EV_HEDGE_WON,
            "This attempt's outcome answered a hedged execution in which more than one attempt "
            "ran (added to the winner's attempt span; the others end cancelled).",
            (PATTERN, NAME, ATTEMPT, ATTEMPT_TYPE),
        ),
        (MetricBinding(HEDGE_WINS),),
    ),
    EventBinding(
        "policy_reloaded",
        (("outcome", RELOAD_OUTCOME), ("error_type", ERROR_TYPE)),
        SpanEventSpec(
            EV_POLICY_RELOADED,
            "A named policy took a new configuration (on the span current where it was given): new "
            "calls use it, calls in flight finish under theirs.",
            (PATTERN, NAME, RELOAD_OUTCOME),
            (ERROR_TYPE,),
        ),
        (MetricBinding(RELOAD),),
    ),
    EventBinding(
        "reload_failed",
        (("outcome", RELOAD_OUTCOME), ("error_type", ERROR_TYPE)),
        SpanEventSpec(
            EV_RELOAD_FAILED,
            "A named policy refused a new configuration (it failed validation, or building it "
            "raised) and changed nothing, as Polly reports `ReloadFailed`.",
            (PATTERN, NAME, RELOAD_OUTCOME),
            (ERROR_TYPE,),
        ),
        (MetricBinding(RELOAD),),
        LogBinding(_RELOAD_FAILED_LOG, "reload {outcome} ({error_type}): the policy keeps its configuration"),
    ),
)
"""One row per event kind of the library's patterns: ``Event``'s, in its order, then a pattern's own."""

SPAN_EVENTS: Final[tuple[SpanEventSpec, ...]] = tuple(row.span_event for row in EVENTS)
"""Every span event, in documentation order."""


def _each(key: str, values: tuple[str, ...]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """One label set ``{key: value}`` per value."""
    return tuple(((key, value),) for value in values)


ZERO_SERIES: Final[tuple[ZeroSeries, ...]] = (
    ZeroSeries(
        "circuit_breaker",
        CB_TRANSITIONS,
        tuple(
            ((CB_PREVIOUS_STATE, previous), (CB_STATE, state), (CB_TRANSITION_REASON, reason))
            for previous, state, reason in CB_TRANSITIONS_KNOWN
        ),
        registry="breakers",
    ),
    *(
        ZeroSeries(kind, REJECTIONS, _each(REJECTION_REASON, reasons))
        for kind, reasons in REJECTION_REASONS_BY_PATTERN.items()
    ),
    ZeroSeries("timeout", TIMEOUTS, _each(TIMEOUT_SCOPE, ("total",)), config="scope", equals="total"),
    ZeroSeries("timeout", TIMEOUTS, _each(TIMEOUT_SCOPE, ("attempt",)), config="scope", equals="attempt"),
    ZeroSeries("retry", TIMEOUTS, _each(TIMEOUT_SCOPE, ("attempt",)), config="attempt_timeout"),
    ZeroSeries("retry", RETRY_EXHAUSTED, _each(RETRY_STOP_REASON, ("budget",)), config="budget"),
    ZeroSeries("chaos", CHAOS_INJECTIONS, _each(CHAOS_KIND, CHAOS_KINDS)),
    ZeroSeries(
        "hedging", HEDGES, _each(HEDGE_TRIGGER, ("delay", "failure")), config="mode", equals="latency"
    ),
    ZeroSeries("hedging", HEDGES, _each(HEDGE_TRIGGER, ("parallel",)), config="mode", equals="parallel"),
    ZeroSeries("hedging", HEDGES, _each(HEDGE_TRIGGER, ("failure",)), config="mode", equals="fallback"),
    *(
        ZeroSeries(
            "hedging",
            HEDGES_DENIED,
            tuple(
                ((HEDGE_TRIGGER, t), (HEDGE_DENIED_BY, by)) for t in triggers for by in HEDGE_DENIED_REASONS
            ),
            config="mode",
            equals=mode,
        )
        for mode, triggers in (
            ("latency", ("delay", "failure")),
            ("parallel", ("parallel",)),
            ("fallback", ("failure",)),
        )
    ),
    ZeroSeries("hedging", HEDGE_WINS, _each(ATTEMPT_TYPE, ("original", "hedge"))),
    ZeroSeries("pipeline", RELOAD, _each(RELOAD_OUTCOME, RELOAD_OUTCOMES), registry="policies"),
    ZeroSeries(
        "recovery",
        RECOVERY_ATTEMPTS,
        tuple(
            ((RECOVERY_STRATEGY, strategy), (RECOVERY_RESULT, result))
            for strategy, result in product(RECOVERY_STRATEGIES, RESULTS)
        ),
    ),
)
"""Every counter series known in advance: the transitions of each breaker, the rejection reasons of
each breaker and bulkhead in a policy, the deadline scope of each timeout (and of a retry with an
attempt timeout), the retries a retry budget denied (of each retry with a budget), the injections
of each chaos link, the hedges (by the triggers its mode has) and wins (by attempt type) of each
hedging, the strategies and results of each recovery, and the reload outcomes of each named
policy."""


_BY_EVENT: Final = {row.event: row for row in EVENTS}


def binding(event: str) -> EventBinding:
    """Return the row of the engine event kind ``event`` (an ``Event`` value).

    Raises:
        KeyError: If no row has that event kind.
    """
    return _BY_EVENT[event]


def has_binding(event: str) -> bool:
    """Whether the event kind ``event`` (an ``EventKind`` value) has a row (a user's own kind has none)."""
    return event in _BY_EVENT
