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
    ATTEMPT,
    ATTEMPT_SPAN,
    ATTEMPT_TYPE,
    ATTEMPT_TYPES,
    BUCKET_BOUND,
    CB_CALL_RESULT,
    CB_CALL_RESULTS,
    CB_OPEN_DURATION,
    CB_PREVIOUS_STATE,
    CB_STATE,
    CB_STATE_VALUES,
    CB_TRANSITION_REASON,
    CB_TRANSITION_REASONS,
    CHAOS_DELAY,
    CHAOS_KIND,
    CHAOS_KINDS,
    CONFIG_FILE,
    DEPENDENCY_ERROR_TYPE,
    ERROR_PATTERN_COUNT,
    ERROR_PATTERN_WINDOW,
    ERROR_TYPE,
    ERROR_TYPE_OTHER,
    EXECUTION_SPAN,
    FAILED_RESULT,
    FALLBACK_RESULT,
    FALLBACK_STRATEGIES,
    FALLBACK_STRATEGY,
    HEDGE_DENIED_BY,
    HEDGE_DENIED_REASONS,
    HEDGE_TRIGGER,
    HEDGE_TRIGGERS,
    HTTP_RESEND_COUNT,
    KEY,
    METRIC_OVERFLOW,
    NAME,
    OPERATION,
    OPERATION_MODULE,
    OUTCOME,
    OUTCOME_VALUES,
    PATTERN,
    PATTERN_VALUES,
    POLICY,
    RECOVERY_RESULT,
    RECOVERY_STRATEGIES,
    RECOVERY_STRATEGY,
    REJECTION_REASON,
    REJECTION_REASONS,
    RELOAD_OUTCOME,
    RELOAD_OUTCOMES,
    RESULTS,
    RETRY_DELAY,
    RETRY_DELAY_SOURCE,
    RETRY_DELAY_SOURCES,
    RETRY_STOP_REASON,
    RETRY_STOP_REASONS,
    RL_PERMIT_RESULT,
    RL_PERMIT_RESULTS,
    RL_WAIT,
    TIMEOUT_ERROR_TYPE,
    TIMEOUT_LIMIT,
    TIMEOUT_SCOPE,
    TIMEOUT_SCOPES,
)
from otel_resilience.telemetry.semconv.specs import AttributeSpec, SpanSpec

__all__ = ["ATTRIBUTES", "SPANS", "attribute"]

ATTRIBUTES: Final[tuple[AttributeSpec, ...]] = (
    AttributeSpec(
        POLICY,
        "string",
        "The policy (pipeline) the call ran in; the instance's own name when a pattern is used alone. "
        "As every name, at most 256 characters: a longer configured name is refused at construction "
        "(a `ValueError` naming its field), never cut; a name taken from a function (a policy "
        "named after the function it runs) is cut as a long `resilience.key` is.",
    ),
    AttributeSpec(
        PATTERN,
        "string",
        "The kind of the reporting component (`pipeline` for a manager policy); custom strategies "
        "add their own kind.",
        PATTERN_VALUES,
    ),
    AttributeSpec(
        NAME,
        "string",
        "The configured name of the pattern instance (breaker, bulkhead, retry ...); at most 256 "
        "characters, as `resilience.policy`.",
    ),
    AttributeSpec(OUTCOME, "string", "How the execution or attempt ended.", OUTCOME_VALUES),
    AttributeSpec(
        ERROR_TYPE,
        "string",
        "The exception's class (`module.Qualname`, builtins unqualified), on failures only "
        f"(OTel semantic convention); `{FAILED_RESULT}` for a returned result the policy judged a "
        "failure (`retry_on_result`, `hedge_on_result`, a breaker's `record_result`, a fallback's "
        "`handle_result`), which no exception names, on spans and execution metrics (the retry's "
        "events and counters carry none for it; the fallback's name the error it answered, "
        "`otel_resilience.errors.UnacceptedResultError`, which its function is given); "
        f"`{TIMEOUT_ERROR_TYPE}` for a timeout the effective deadline made, as the "
        "caller gets it: an attempt an enclosing deadline ended, and the engine's own deadline "
        f"errors, never shown by their class; `{ERROR_TYPE_OTHER}` when unknown.",
    ),
    AttributeSpec(
        BUCKET_BOUND,
        "string",
        "The upper bound of a bucket of a duration histogram kept in process "
        "(`instrument(in_process_histograms=True)`), in seconds as Prometheus writes a bucket "
        "bound (`0.005`, `1.0`, `+Inf`): on its `.bucket` counter only.",
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
        "Why a hedge started: the latest attempt ran longer than the hedge `delay` (`delay`, in "
        "latency mode, even when the delay is 0), an attempt ended with an outcome that is not "
        "acceptable (`failure`), or every attempt starts at once (`parallel`, in parallel mode). "
        "The trigger follows the mode: latency mode reports `delay` and `failure`, parallel mode "
        "`parallel`, fallback mode `failure`.",
        HEDGE_TRIGGERS,
    ),
    AttributeSpec(
        HEDGE_DENIED_BY,
        "string",
        "What refused a hedge that was due: the hedge budget had no hedge to give (`budget`), "
        "the execution had made all the attempts it may make in total (`max_attempts`), the "
        "request may be sent only once (`not_replayable`: an HTTP request such as a POST, through "
        "the HTTP integrations), the effective deadline had passed when the hedge came due "
        "(`deadline`), or an attempt was rejected by the policy's own breaker, "
        "bulkhead or rate limiter, which every further attempt would meet (`rejected`).",
        HEDGE_DENIED_REASONS,
    ),
    AttributeSpec(
        HTTP_RESEND_COUNT,
        "int",
        "OTel HTTP convention: how many times the request was sent before (any reason: a "
        "retry, a hedge, a redirect's hop, an authentication challenge), set on the attempt "
        "spans of resends when the caller's span is an HTTP client span: `attempt - 1` in its "
        "first execution, on from the earlier executions' sends in the same client span (never "
        "on the first send's span).",
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
        CB_OPEN_DURATION,
        "double",
        "How long a circuit breaker stays open (on a change to open), or, on a trip a "
        "METRICS_ONLY breaker would make (`metrics_only` to `metrics_only`), how long it would "
        "have opened (it does not open); absent when it is forced open until reset, which has no "
        "length (never `inf`).",
        unit="s",
    ),
    AttributeSpec(
        CB_CALL_RESULT, "string", "How a call through a circuit breaker was counted.", CB_CALL_RESULTS
    ),
    AttributeSpec(REJECTION_REASON, "string", "Why a call was rejected.", REJECTION_REASONS),
    AttributeSpec(
        RL_PERMIT_RESULT,
        "string",
        "How a rate limiter answered a request for a permit: taken at once (`immediate`), taken "
        "after a wait (`waited`), refused (`rejected`, `try_acquire` refusals included), or given "
        "back by a waiter that was cancelled or timed out (`cancelled`).",
        RL_PERMIT_RESULTS,
    ),
    AttributeSpec(RL_WAIT, "double", "How long a caller waited for its rate-limiter permit.", unit="s"),
    AttributeSpec(TIMEOUT_SCOPE, "string", "What the expired deadline bounded.", TIMEOUT_SCOPES),
    AttributeSpec(TIMEOUT_LIMIT, "double", "The limit that expired.", unit="s"),
    AttributeSpec(FALLBACK_STRATEGY, "string", "The fallback strategy that ran.", FALLBACK_STRATEGIES),
    AttributeSpec(FALLBACK_RESULT, "string", "Whether the fallback answered.", RESULTS),
    AttributeSpec(RECOVERY_STRATEGY, "string", "The recovery strategy that acted.", RECOVERY_STRATEGIES),
    AttributeSpec(RECOVERY_RESULT, "string", "Whether the recovery succeeded.", RESULTS),
    AttributeSpec(OPERATION, "string", "The operation an error pattern was detected in."),
    AttributeSpec(
        OPERATION_MODULE,
        "string",
        "The module of the function the operation is named after (a function used alone, or the "
        "operation of a caught error): two modules' functions of one name (`users.fetch`, "
        '`orders.fetch`) are two patterns, both of operation `fetch`, told apart by it (`""` for a '
        "function without a module; cut as a long `resilience.key` is). Absent when the operation "
        "is a policy's or one the caller named.",
    ),
    AttributeSpec(ERROR_PATTERN_COUNT, "int", "How many times the error repeated within the window."),
    AttributeSpec(ERROR_PATTERN_WINDOW, "double", "The detection window.", unit="s"),
    AttributeSpec(ALERT_KIND, "string", "The kind of alert.", ALERT_KINDS),
    AttributeSpec(ALERT_SEVERITY, "string", "The alert's severity.", ALERT_SEVERITIES),
    AttributeSpec(
        ALERT_SUBJECT, "string", "The breaker, bulkhead, operation or recovery system the alert is about."
    ),
    AttributeSpec(
        ALERT_SUMMARY,
        "string",
        "The alert's one-line summary (span events only; the log body), at most 256 characters: "
        "a longer one, made of long names, is cut as a long `resilience.key` is.",
    ),
    AttributeSpec(
        DEPENDENCY_ERROR_TYPE,
        "string",
        "On the execution span: the class (as `error.type`) of the last error an attempt that "
        "reached the dependency raised before the execution retried, re-ran it (a recovery "
        "rule's RETRY or RESTART, unless a retry inside it names them) or gave up, so that an "
        "execution whose last attempt was rejected (`error.type` a rejection) still names the "
        "dependency's own failure. Rejections never set it, nor faults a chaos link injected in "
        "the dependency's place (a drill: the dependency was not called).",
    ),
    AttributeSpec(
        CHAOS_KIND,
        "string",
        "What a chaos link injected: a `fault` (an exception raised before the dependency was "
        "called), a `latency` (a delay before the call) or an `outcome` (a result returned in "
        "place of the call).",
        CHAOS_KINDS,
    ),
    AttributeSpec(CHAOS_DELAY, "double", "The delay a chaos link injected (latency only).", unit="s"),
    AttributeSpec(
        KEY,
        "string",
        "The key of a call through a keyed policy (`handle.for_key(key)`), as `str(key)`, what the "
        "policy knows a key by (keys with one text are one key): on its execution span always; on "
        "its metrics only where the policy opted in (`key_attribute_limit=N`): the first N keys by "
        "name, every later key (and a key `_OTHER`) as `_OTHER` (with `otel.metric.overflow`). Keys "
        "must be bounded values that are not secrets; a key longer than 256 characters is cut to "
        "236, `...#` and 16 hexadecimal digits of a digest of the whole key (two keys, two values).",
    ),
    AttributeSpec(
        METRIC_OVERFLOW,
        "boolean",
        "`true` on the one series of the keys past a policy's `key_attribute_limit` "
        '(`resilience.key="_OTHER"`), as the OpenTelemetry SDK marks its cardinality-limit '
        "overflow series: the calls are counted, not dropped.",
    ),
    AttributeSpec(
        RELOAD_OUTCOME,
        "string",
        "Whether a policy took a new configuration (`succeeded`) or refused it and changed "
        "nothing (`failed`).",
        RELOAD_OUTCOMES,
    ),
    AttributeSpec(
        CONFIG_FILE,
        "string",
        "A configuration file a watch (`manager.watch(path)`) keeps the policies in step with: its "
        "absolute path.",
    ),
)
"""Every attribute key, in documentation order."""

SPANS: Final[tuple[SpanSpec, ...]] = (
    SpanSpec(
        EXECUTION_SPAN,
        "One per logical execution (manager policy, decorator, or pattern used alone), a child "
        "of the caller's current span and current while the call runs. Status ERROR with "
        "`error.type` only for outcomes failure, rejected and timeout; success, recovered, "
        "fallback and cancelled leave it unset. A returned result the policy judged a failure "
        "(`retry_on_result`, `hedge_on_result`, a breaker's `record_result` or a fallback's "
        f"`handle_result` rejected it) is a failure, `error.type` `{FAILED_RESULT}`. After a "
        "retried attempt or a recovery re-run failed, "
        "`resilience.dependency.error.type` names the dependency's last error. A call through a "
        "keyed policy carries its `resilience.key`.",
        (POLICY, PATTERN, OUTCOME),
        (ERROR_TYPE, DEPENDENCY_ERROR_TYPE, KEY),
    ),
    SpanSpec(
        ATTEMPT_SPAN,
        "One per attempt after the execution's first (attempt 2 onwards, numbered uniquely across "
        "retry attempts, recovery re-runs and hedges), child of the execution span (or of the "
        "attempt it runs in); attempt 1 runs in the execution span, except in a hedged execution, "
        "where every attempt, the original included, has its span with `resilience.attempt.type`, "
        "the winner carries the `resilience.hedging.won` event (when more than one attempt "
        "ran) and the losers end with outcome `cancelled`, not ERROR. A failed attempt is "
        "ERROR with `error.type`; one that an enclosing deadline ended (a retry's attempt, a "
        "recovery re-run, a hedged attempt still running at the deadline) ends `timeout`, "
        f"`error.type` `{TIMEOUT_ERROR_TYPE}`, in both drivers (but a sync retry's attempt with "
        "no `attempt_timeout` that returned a result: its retry's `success`), and so does the "
        "execution of a policy nested in that deadline's scope. "
        "Opened by the retry or the hedging that makes the attempt, one span per attempt: a "
        "retry with a hedging inside it opens none, each of its attempts being the original of "
        "a race, whose span the hedging opens (a child of the execution span, as every attempt "
        "of that race); a recovery re-run with neither inside the recovery is opened by the "
        "recovery (`resilience.pattern` `recovery`).",
        (POLICY, PATTERN, NAME, ATTEMPT, OUTCOME),
        (ERROR_TYPE, HTTP_RESEND_COUNT, ATTEMPT_TYPE),
    ),
)


_ATTRIBUTES_BY_KEY: Final = {spec.key: spec for spec in ATTRIBUTES}


def attribute(key: str) -> AttributeSpec:
    """Return the spec of the attribute ``key``.

    Raises:
        KeyError: If no attribute has that key.
    """
    return _ATTRIBUTES_BY_KEY[key]
