"""The instrument catalog: what every instrument is, for the listener, the ops files and the docs.

``docs/telemetry.md`` is generated from these entries with the attribute catalog
(:mod:`.catalog`); ``python -m otel_resilience.telemetry.docs``.
"""

from __future__ import annotations

from typing import Final

from otel_resilience.telemetry.semconv.names import (
    ALERT_KIND,
    ALERT_SEVERITY,
    ALERT_SUBJECT,
    ALERTS,
    ATTEMPT_DURATION,
    ATTEMPT_TYPE,
    BUCKET_BOUND,
    BULKHEAD_ACTIVE,
    BULKHEAD_CONCURRENCY_LIMIT,
    BULKHEAD_QUEUE_LIMIT,
    BULKHEAD_QUEUE_UTILIZATION,
    BULKHEAD_QUEUED,
    BULKHEAD_UTILIZATION,
    CB_CALL_RESULT,
    CB_CALLS,
    CB_FAILURE_RATE,
    CB_FAILURE_RATE_THRESHOLD,
    CB_PREVIOUS_STATE,
    CB_SHARED,
    CB_SLOW_CALL_RATE,
    CB_STATE,
    CB_STATE_METRIC,
    CB_STATE_SEVERITY,
    CB_TRANSITION_REASON,
    CB_TRANSITIONS,
    CHAOS_INJECTIONS,
    CHAOS_KIND,
    CONFIG_FILE,
    CONFIG_STALE,
    DURATION_BOUNDARIES,
    ERROR_PATTERNS,
    ERROR_TYPE,
    EXECUTION_DURATION,
    EXECUTIONS,
    FALLBACK_EXECUTIONS,
    FALLBACK_RESULT,
    FALLBACK_STRATEGY,
    HEDGE_DENIED_BY,
    HEDGE_TRIGGER,
    HEDGE_WINS,
    HEDGES,
    HEDGES_DENIED,
    IN_PROCESS_HISTOGRAMS,
    KEY,
    METRIC_OVERFLOW,
    NAME,
    OPERATION,
    OPERATION_MODULE,
    OUTCOME,
    PATTERN,
    POLICY,
    POLICY_KEY_EVICTIONS,
    POLICY_KEY_LIMIT,
    POLICY_KEYS,
    RECOVERY_ATTEMPTS,
    RECOVERY_RESULT,
    RECOVERY_STRATEGY,
    REJECTION_REASON,
    REJECTIONS,
    RELOAD,
    RELOAD_OUTCOME,
    RETRIES,
    RETRY_BUDGET_AVAILABLE,
    RETRY_DELAY_BOUNDARIES,
    RETRY_DELAY_METRIC,
    RETRY_EXHAUSTED,
    RETRY_STOP_REASON,
    RL_KEY_EVICTIONS,
    RL_KEY_LIMIT,
    RL_KEYS,
    RL_PERMIT_RESULT,
    RL_PERMITS,
    RL_WAIT_METRIC,
    STORE_DEGRADED,
    STORE_ERRORS,
    STORE_FALLBACK_PERMITS,
    STORE_OPERATIONS,
    STORE_OUTAGES,
    TELEMETRY_ERRORS,
    TIMEOUT_SCOPE,
    TIMEOUTS,
)
from otel_resilience.telemetry.semconv.specs import InstrumentKind, InstrumentSpec

__all__ = ["INSTRUMENTS", "instrument"]

_K = InstrumentKind
_KEYED = (KEY, METRIC_OVERFLOW)
"""The conditional attributes of the instruments that carry a keyed policy's key, where it opted in."""

_EXECUTION_DURATION = InstrumentSpec(
    EXECUTION_DURATION,
    _K.HISTOGRAM,
    "s",
    "Duration of one logical execution (all attempts, backoffs and fallbacks), recorded inside "
    "the execution span so that exemplars carry its trace. The only synchronous SDK call on a "
    "call that succeeds without a retry or a hedging (which time its attempts too); switched off "
    "per policy with `ResilienceConfig(record_duration=False)` (`TelemetrySource.metrics=False`).",
    (POLICY, PATTERN, OUTCOME),
    (ERROR_TYPE, *_KEYED),
    DURATION_BOUNDARIES,
)
_ATTEMPT_DURATION = InstrumentSpec(
    ATTEMPT_DURATION,
    _K.HISTOGRAM,
    "s",
    "Duration of one attempt of a retry or a hedging (every attempt, the first included, each "
    "timed around its attempt scope, so also when no span is opened for it): the dependency's "
    "own latency, without backoffs or fallbacks. A recovery re-run with no retry or hedging "
    "inside the recovery is timed too (`resilience.pattern` `recovery`: its re-runs only, the "
    "first run being the execution's own). An attempt of a hedged execution carries "
    "`resilience.attempt.type` (`original` or `hedge`), so the hedges' latency can be read "
    "beside the originals'. A retry with a hedging inside it leaves the timing to the hedging, "
    "which times each attempt of its races: every attempt is timed once. Recorded only while a "
    "meter provider is configured; nothing is "
    "timed otherwise.",
    (POLICY, PATTERN, NAME, OUTCOME),
    (ERROR_TYPE, ATTEMPT_TYPE),
    DURATION_BOUNDARIES,
)


def _in_process(histogram: InstrumentSpec) -> tuple[InstrumentSpec, ...]:
    """Return the three observable counters an in-process histogram is exported through.

    Its bucket counts, its sum and its count (see :data:`~.names.IN_PROCESS_HISTOGRAMS`), with
    its attributes.
    """
    counters = IN_PROCESS_HISTOGRAMS[histogram.name]
    kind, attributes, conditional = _K.OBSERVABLE_COUNTER, histogram.attributes, histogram.conditional
    where = f"`{histogram.name}` kept in process (`instrument(in_process_histograms=True)`)"
    return (
        InstrumentSpec(
            counters["bucket"],
            kind,
            "{call}",
            f"{where}: the values at most each bucket's upper bound `le` (cumulative, as Prometheus "
            f"histogram buckets; `+Inf` counts them all). Bounds (s): {_bounds(histogram)}.",
            (*attributes, BUCKET_BOUND),
            conditional,
        ),
        InstrumentSpec(
            counters["sum"], kind, histogram.unit, f"{where}: the sum of its values.", attributes, conditional
        ),
        InstrumentSpec(
            counters["count"], kind, "{call}", f"{where}: how many values it holds.", attributes, conditional
        ),
    )


def _bounds(histogram: InstrumentSpec) -> str:
    """Return a histogram's bucket bounds as the docs show them."""
    return ", ".join(f"{bound:g}" for bound in histogram.boundaries)


INSTRUMENTS: Final[tuple[InstrumentSpec, ...]] = (
    _EXECUTION_DURATION,
    _ATTEMPT_DURATION,
    InstrumentSpec(
        EXECUTIONS,
        _K.OBSERVABLE_COUNTER,
        "{execution}",
        "Executions that ended, by outcome, read from each live pipeline's counters "
        "(`PipelineStats`). A pipeline that is garbage-collected stops reporting; a keyed "
        "policy's evicted keys are counted on (their series never go down).",
        (POLICY, PATTERN, OUTCOME),
        _KEYED,
    ),
    InstrumentSpec(
        CB_STATE_METRIC,
        _K.OBSERVABLE_GAUGE,
        "1",
        "1 for the breaker's current state and 0 for the others, for every live breaker from "
        "the moment it is created. Breakers that share a name (a keyed policy's, one per key) "
        "show the most severe of their states: " + ", ".join(reversed(CB_STATE_SEVERITY)) + ".",
        (NAME, CB_STATE),
    ),
    InstrumentSpec(
        CB_TRANSITIONS,
        _K.COUNTER,
        "{transition}",
        "Circuit breaker state transitions. A keyed policy's keys each have a breaker of their "
        "own under the policy's name: where the policy puts its keys on its metrics, a transition "
        "says which key's breaker made it.",
        (NAME, CB_PREVIOUS_STATE, CB_STATE, CB_TRANSITION_REASON),
        _KEYED,
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
        "Calls rejected without calling the dependency (open breaker, half-open breaker with no probe "
        "place, full bulkhead, bulkhead queue timeout, rate limiter with no permit).",
        (POLICY, PATTERN, NAME, REJECTION_REASON),
        _KEYED,
    ),
    InstrumentSpec(
        RETRIES,
        _K.COUNTER,
        "{retry}",
        "Retries scheduled (failed attempts that will be tried again).",
        (POLICY, NAME),
        (ERROR_TYPE, *_KEYED),
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
        "{give_up}",
        "Times a retry gave up, by why it stopped (attempts ran out, a backoff over the deadline "
        "or `max_delay`, the retry budget, the execution's cap in total, an error not retried "
        "after a retry); the last error was re-raised, or the last result `retry_on_result` "
        "rejected returned (the execution's outcome `failure`). One per run of the retry, not "
        "per execution: a recovery re-run that runs the retry again and gives up again counts "
        "again; with stop reason `budget`, one per denied retry.",
        (POLICY, NAME, RETRY_STOP_REASON),
        (ERROR_TYPE,),
    ),
    InstrumentSpec(
        RL_PERMITS,
        _K.OBSERVABLE_COUNTER,
        "{permit}",
        "Requests for a permit from each live rate limiter (name), by how they were answered, read "
        "from the limiter's counts; the limiters of a keyed limiter share its name and are summed. "
        "Rejected calls are also counted by `resilience.rejections` with reason `rate_limited`.",
        (NAME, RL_PERMIT_RESULT),
    ),
    InstrumentSpec(
        RL_KEYS,
        _K.OBSERVABLE_GAUGE,
        "{key}",
        "Keys a live keyed rate limiter (`RateLimiter.per_key`, by name) keeps now, each with its "
        "own bucket: at most its `max_keys` while they are idle (a key with a use of its limiter "
        "running, or a waiting caller, is not evicted). Summed over keyed limiters of one name; a "
        "keyed policy's keys are `resilience.policy.keys`.",
        (NAME,),
    ),
    InstrumentSpec(
        RL_KEY_LIMIT,
        _K.OBSERVABLE_GAUGE,
        "{key}",
        "The idle keys a live keyed rate limiter keeps at most (its `max_keys`): "
        "`resilience.rate_limiter.keys` at this limit means that new keys evict idle ones "
        "(`resilience.rate_limiter.key_evictions`).",
        (NAME,),
    ),
    InstrumentSpec(
        RL_KEY_EVICTIONS,
        _K.OBSERVABLE_COUNTER,
        "{key}",
        "Keys a live keyed rate limiter evicted (idle past `max_keys`): an evicted key's next "
        "call starts it again with a full bucket, so it may admit up to `burst` more sooner. A "
        "steady rate at `resilience.rate_limiter.key_limit` is churn through more keys than "
        "`max_keys`, which lets a key past its rate.",
        (NAME,),
    ),
    InstrumentSpec(
        RL_WAIT_METRIC,
        _K.HISTOGRAM,
        "s",
        "Time callers waited for a rate-limiter permit they then took (`max_wait` > 0); calls "
        "admitted at once record nothing.",
        (POLICY, NAME),
        (),
        RETRY_DELAY_BOUNDARIES,
    ),
    InstrumentSpec(
        RETRY_BUDGET_AVAILABLE,
        _K.OBSERVABLE_GAUGE,
        "{retry}",
        "Retries the retry budget would allow now, for each live retry (name) in each policy that "
        "has a budget; a budget shared by several policies shows under each. The retries it denied "
        "are counted by `resilience.retry.exhausted` with stop reason `budget`, one per denial.",
        (POLICY, NAME),
    ),
    InstrumentSpec(
        TIMEOUTS,
        _K.COUNTER,
        "{timeout}",
        "Deadlines that expired.",
        (POLICY, PATTERN, NAME, TIMEOUT_SCOPE),
        _KEYED,
    ),
    InstrumentSpec(
        HEDGES,
        _K.COUNTER,
        "{hedge}",
        "Hedges that ran: attempts of a hedged execution after the original, by trigger, counted "
        "as the race ends. A hedge a step inside the hedging rejected (an open breaker, a full "
        "bulkhead) called nothing and is counted in `resilience.hedging.denied` instead; one still "
        "waiting in the bulkhead's queue or for a rate limiter's permit when the race ended called "
        "nothing either, and is counted nowhere; compare with `resilience.executions` of the policy "
        "for the extra load hedging adds.",
        (POLICY, NAME, HEDGE_TRIGGER),
    ),
    InstrumentSpec(
        HEDGES_DENIED,
        _K.COUNTER,
        "{hedge}",
        "Hedges that were due (by trigger) but refused, by what refused them: the hedge budget, "
        "the execution's cap on attempts, an HTTP request that may be sent only once, the "
        "deadline, or a rejection by the policy's own breaker, bulkhead or rate limiter. Many "
        "denials by `budget` mean the budget holds hedging back at the moment the dependency is slow.",
        (POLICY, NAME, HEDGE_TRIGGER, HEDGE_DENIED_BY),
    ),
    InstrumentSpec(
        HEDGE_WINS,
        _K.COUNTER,
        "{execution}",
        "Hedged executions in which more than one attempt ran (got past the policy's own breaker, "
        "bulkhead and rate limiter), by the type of the attempt that answered (`original` or "
        "`hedge`); `hedge` over `resilience.hedging.hedges` is how often a hedge paid off.",
        (POLICY, NAME, ATTEMPT_TYPE),
    ),
    InstrumentSpec(
        FALLBACK_EXECUTIONS,
        _K.COUNTER,
        "{execution}",
        "Fallbacks that ran in place of a failed call, by strategy and result.",
        (POLICY, NAME, FALLBACK_STRATEGY, FALLBACK_RESULT, ERROR_TYPE),
        _KEYED,
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
        BULKHEAD_UTILIZATION,
        _K.OBSERVABLE_GAUGE,
        "1",
        "Share of the concurrency limit in use (active over `max_concurrent`) in the most loaded "
        "live bulkhead of each name. The keys of a keyed policy share its bulkhead's name: this "
        "is its most saturated key's, where `resilience.bulkhead.active` and "
        "`resilience.bulkhead.concurrency.limit` are summed over the keys (one saturated key "
        "among idle ones shows here, and stays one series however many keys there are).",
        (NAME,),
    ),
    InstrumentSpec(
        BULKHEAD_QUEUE_UTILIZATION,
        _K.OBSERVABLE_GAUGE,
        "1",
        "Share of the wait-queue limit in use (queued over `max_waiting`) in the most loaded "
        "live bulkhead of each name; bulkheads without a queue (`max_waiting=0`) report none. "
        "The keys of a keyed policy share its bulkhead's name: this is its most saturated key's "
        "queue, where `resilience.bulkhead.queued` and `resilience.bulkhead.queue.limit` are "
        "summed over the keys (one full queue among idle ones shows here, and stays one series "
        "however many keys there are).",
        (NAME,),
    ),
    InstrumentSpec(
        RECOVERY_ATTEMPTS,
        _K.COUNTER,
        "{attempt}",
        "Recovery actions, by strategy and result: the recovery rate is `result=success` over all. "
        "`error.type` is the error a recovery acted on; the series that exist at 0 from the moment "
        "a policy has recovery (each strategy and result) have none.",
        (POLICY, NAME, RECOVERY_STRATEGY, RECOVERY_RESULT),
        (ERROR_TYPE,),
    ),
    InstrumentSpec(
        ERROR_PATTERNS,
        _K.COUNTER,
        "{pattern}",
        "Repeated error patterns detected (the same error type in the same operation).",
        (POLICY, NAME, ERROR_TYPE, OPERATION),
        (OPERATION_MODULE,),
    ),
    InstrumentSpec(
        ALERTS,
        _K.COUNTER,
        "{alert}",
        "In-process alerts raised, by the alert system (`resilience.name`) that raised them.",
        (NAME, ALERT_KIND, ALERT_SEVERITY, ALERT_SUBJECT),
    ),
    InstrumentSpec(
        CHAOS_INJECTIONS,
        _K.COUNTER,
        "{injection}",
        "Faults, delays and results a chaos link injected (a drill, not an incident): compare with "
        "`resilience.executions` to tell a drill's failures from real ones, or exclude the policy "
        "from alerts while it is non-zero. Every kind's series starts at 0 when a chaos link is "
        "placed in a pipeline.",
        (POLICY, NAME, CHAOS_KIND),
    ),
    InstrumentSpec(
        RELOAD,
        _K.COUNTER,
        "{reload}",
        "New configurations given to a named policy (`manager.reconfigure`, a config file's "
        "reload): `succeeded` when the policy took it, `failed` (with `error.type`) when it was "
        "refused and nothing changed. Both series start at 0 when the policy is created.",
        (POLICY, RELOAD_OUTCOME),
        (ERROR_TYPE,),
    ),
    InstrumentSpec(
        CONFIG_STALE,
        _K.OBSERVABLE_GAUGE,
        "1",
        "For each configuration file a running watch keeps policies in step with: 1 while the "
        "last changed version of the file the watch settled on was refused (it does not load, is "
        "missing, or a policy refused it) and no version was applied since: the configuration in "
        "force is not the file's. 0 while the file applied last is the one on disk. A refusal is "
        "counted once in `resilience.reload`; this stays 1 for as long as the file is left so. "
        "Watches of one file in a process share a series (1 while any of them is stale); a "
        "stopped watch reports none.",
        (CONFIG_FILE,),
    ),
    InstrumentSpec(
        POLICY_KEYS,
        _K.OBSERVABLE_GAUGE,
        "{key}",
        "Keys a named policy keeps now (each with its own breaker, bulkhead and rate limiter), "
        "at most its `max_keys` while they are idle. Idle keys unused for `idle_ttl` are not "
        "counted, even on a policy no call reaches to evict them.",
        (POLICY,),
    ),
    InstrumentSpec(
        POLICY_KEY_LIMIT,
        _K.OBSERVABLE_GAUGE,
        "{key}",
        "The idle keys a named policy keeps at most (its `max_keys`): `resilience.policy.keys` "
        "at this limit means that new keys evict idle ones (`resilience.policy.key_evictions`).",
        (POLICY,),
    ),
    InstrumentSpec(
        POLICY_KEY_EVICTIONS,
        _K.OBSERVABLE_COUNTER,
        "{key}",
        "Keys a named policy evicted (idle past `max_keys`, or unused for `idle_ttl`, as its calls "
        "find them): an evicted key's next call makes it a new breaker, bulkhead and rate limiter "
        "(CLOSED, a full bucket). A steady rate at `resilience.policy.key_limit` is churn through "
        "more keys than `max_keys`.",
        (POLICY,),
    ),
    InstrumentSpec(
        CB_SHARED,
        _K.OBSERVABLE_GAUGE,
        "1",
        "For each live breaker with a shared store (`CircuitBreakerConfig(store=...)`): 1 while "
        "its state is the cluster's, 0 while it runs on local state (its store is unreachable or "
        "closed, or the server refuses one of its keys: `WRONGTYPE`). Breakers of one name (a "
        "keyed policy's keys) share a series: 0 while any of them runs on local state. "
        "Breakers without a store report none.",
        (NAME,),
    ),
    InstrumentSpec(
        STORE_DEGRADED,
        _K.OBSERVABLE_GAUGE,
        "1",
        "1 while a shared store (`RedisStore`, by its namespace in `resilience.name`) is "
        "unreachable or slower than its timeout, and its breakers and rate limiters run on local "
        "state; 0 while it answers.",
        (NAME,),
    ),
    InstrumentSpec(
        STORE_OUTAGES,
        _K.OBSERVABLE_COUNTER,
        "{outage}",
        "Times a shared store became unreachable (each outage counted once, with a log record).",
        (NAME,),
    ),
    InstrumentSpec(
        STORE_ERRORS,
        _K.OBSERVABLE_COUNTER,
        "{error}",
        "Operations on a shared store that failed or timed out (the calls went on, on local state).",
        (NAME,),
    ),
    InstrumentSpec(
        STORE_OPERATIONS,
        _K.OBSERVABLE_COUNTER,
        "{operation}",
        "Operations sent to a shared store (reports of counts, transitions, leases, reads, "
        "rate-limit permits, subscriptions and checks of an idle subscription): its cost, against "
        "`resilience.executions`.",
        (NAME,),
    ),
    InstrumentSpec(
        STORE_FALLBACK_PERMITS,
        _K.OBSERVABLE_COUNTER,
        "{permit}",
        "Calls the shared rate limiters of a store admitted without asking it, while it was "
        'unreachable (`store_fallback="open"`, the default): permits the cluster\'s budget did not '
        "count, so the cluster may have exceeded its limit by this many.",
        (NAME,),
    ),
    InstrumentSpec(
        TELEMETRY_ERRORS,
        _K.OBSERVABLE_COUNTER,
        "{error}",
        "Exceptions raised inside telemetry code (listeners, instruments, callbacks), swallowed "
        "and logged so that the application is never affected.",
        (),
    ),
    *_in_process(_EXECUTION_DURATION),
    *_in_process(_ATTEMPT_DURATION),
)
"""Every instrument, in documentation order."""


_INSTRUMENTS_BY_NAME: Final = {spec.name: spec for spec in INSTRUMENTS}


def instrument(name: str) -> InstrumentSpec:
    """Return the spec of the instrument called ``name``.

    Raises:
        KeyError: If no instrument has that name.
    """
    return _INSTRUMENTS_BY_NAME[name]
