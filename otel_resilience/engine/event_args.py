"""The arguments of each kind of event a pattern reports (see :mod:`otel_resilience.engine.events`).

Each is a slotted dataclass that listeners must treat as read-only (not frozen: a frozen
dataclass costs three times as much to build, and a pattern may share one instance between
reports). Each names, in its class variable ``ATTRIBUTES``, the fields that describe it to
telemetry, in order (a field left out, such as :attr:`StateChanged.reopens`, is for listeners
that want it); a listener can show any event from those fields with no code per kind: the
OpenTelemetry listener gives each of them its attribute key through the table
:data:`otel_resilience.telemetry.semconv.EVENTS`. Every such class is an :class:`EventArgs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

__all__ = [
    "AlertRaised",
    "CallRejected",
    "ChaosInjected",
    "EventArgs",
    "FallbackUsed",
    "HedgeDenied",
    "HedgeStarted",
    "HedgeWon",
    "PatternDetected",
    "PermitWaited",
    "PolicyReloaded",
    "RecoveryAttempted",
    "ReloadFailed",
    "RetryExhausted",
    "RetryScheduled",
    "StateChanged",
    "TimeoutOccurred",
]


@dataclass(slots=True)
class RetryScheduled:
    """A failed attempt will be retried after ``delay`` seconds."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("attempt", "delay", "error_type", "delay_source")

    attempt: int
    """The number of the attempt that failed (1-based, unique in the execution): around a race of
    attempts, the one that answered (the winner, else the original), not a hedge started beside it."""
    delay: float
    """Seconds of backoff before the next attempt."""
    error_type: str | None
    """The failed attempt's exception class name, or ``None`` when a result was retried."""
    delay_source: str = "strategy"
    """Where the delay came from: ``"strategy"`` (the policy's backoff) or ``"outcome"`` (the
    delay the failed attempt's error or result asked for, through ``RetryPolicy.delay_from``)."""
    rejection: bool = False
    """Whether the error is not the dependency's, which was not called: a rejection (an
    :class:`~otel_resilience.errors.ExecutionRejectedError`) or a fault a chaos link injected in
    its place, so that it names no failure of the dependency's."""


@dataclass(slots=True)
class RetryExhausted:
    """Attempts ran out (or the deadline left no room); the last error is re-raised."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("attempts", "reason", "error_type")

    attempts: int
    """The number of the last attempt (1-based, unique in the execution: with recovery
    re-runs, more than the retry's own ``max_attempts``): the one whose outcome the retry gave up
    on (around a race of attempts, the one that answered)."""
    error_type: str | None
    reason: str
    """``"max_attempts"``, ``"deadline"``, ``"max_attempts_total"`` (the execution made its cap
    of attempts in total), ``"budget"`` (the retry budget allowed no retry), ``"max_delay"`` (the
    delay the outcome asked for was over ``max_delay``) or ``"not_retryable"``."""
    rejection: bool = False
    """Whether the error is a rejection (as :attr:`RetryScheduled.rejection`)."""


@dataclass(slots=True)
class StateChanged:
    """A circuit breaker moved from one state to another."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("old", "new", "reason", "duration")

    old: str
    new: str
    """The new state; a METRICS_ONLY breaker reports a trip it would make as a change from
    ``"metrics_only"`` to ``"metrics_only"`` with the trip's reason, and an OPEN breaker forced
    open again (``"forced"``, or an ``"isolated"`` that lengthens its opening) a change from
    ``"open"`` to ``"open"``: its OPEN period starts again, with a new end."""
    reason: str
    """``"failure_threshold"``, ``"failure_rate"``, ``"slow_call_rate"``,
    ``"timeout_elapsed"``, ``"probe_failed"``, ``"probe_timed_out"``, ``"probe_succeeded"``,
    ``"forced"``, ``"reset"`` or ``"isolated"``."""
    reopens: int = 0
    """Re-opens so far in the current outage episode (which starts when the breaker opens from
    CLOSED and ends when it closes): 0 on the opening transition, 1 after the first
    HALF_OPEN -> OPEN, ...; a transition to CLOSED carries the episode's total."""
    duration: float | None = None
    """Seconds the breaker stays OPEN (``inf`` when forced open until reset), on a change to
    OPEN (and on a would-be trip of METRICS_ONLY); ``None`` otherwise. Telemetry leaves ``inf``
    out (``resilience.circuit_breaker.open_duration`` is absent): an opening until reset has no
    length."""


@dataclass(slots=True)
class CallRejected:
    """A call was rejected without calling the dependency."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("reason",)

    reason: str
    """``"circuit_open"``, ``"half_open_full"``, ``"bulkhead_full"``, ``"queue_timeout"`` or
    ``"rate_limited"``."""


@dataclass(slots=True)
class TimeoutOccurred:
    """A deadline expired."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("scope", "timeout")

    timeout: float
    """The deadline that expired, in seconds."""
    scope: str
    """``"total"`` or ``"attempt"``."""


@dataclass(slots=True)
class _StrategyOutcome:
    """What a strategy that acts on an error did: the arguments of a fallback or a recovery."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("strategy", "result", "error_type")

    strategy: str
    result: str
    """``"success"`` (the strategy answered or recovered) or ``"failure"`` (it could not)."""
    error_type: str


@dataclass(slots=True)
class FallbackUsed(_StrategyOutcome):
    """A fallback ran in place of a failed call."""


@dataclass(slots=True)
class RecoveryAttempted(_StrategyOutcome):
    """A recovery rule acted on an error."""

    dependency_error: str | None = field(default=None, compare=False)
    """The class name of the last error of the dependency's the recovery saw (the error it acted
    on, or a re-run's since), named on the execution span; ``None`` when it names none: a step
    inside it names each failure itself (a retry), or it saw none (a fault a chaos link injected).
    Not compared: an event is what the rule did, with what result, on which error."""
    error_type_key: str | None = field(default=None, compare=False, repr=False)
    """What tells the error's type apart, for an escalation (``None`` otherwise):
    :func:`~otel_resilience.engine.events.error_type_key`, which differs from ``error_type`` only
    for a name cut past the attribute limit (then ending in a digest of the whole). No attribute
    (telemetry shows ``error_type``): what an alert system keys an escalation's cooldown by, so
    that two classes named alike up to the cut are two error types. Not compared, as above."""


@dataclass(slots=True)
class PatternDetected:
    """The same error (type + operation) repeated ``count`` times within ``window`` seconds."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("error_type", "operation", "count", "window", "module")

    error_type: str
    """The repeated error's exception class name."""
    operation: str
    """The operation (the function's name, or the one the caller gave) it was raised in."""
    count: int
    """The occurrences that make a pattern (the system's ``pattern_threshold``)."""
    window: float
    """The window's length in seconds."""
    module: str | None = None
    """The module of the function ``operation`` is named after (``""`` for a function without
    one), which the pattern's fingerprint holds too: two modules' functions of one name are two
    patterns of one ``operation``. ``None`` for an operation that is no function's name (a
    policy's, or one the caller gave)."""


@dataclass(slots=True)
class AlertRaised:
    """An in-process alert was raised."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("kind", "severity", "subject", "summary")

    kind: str
    """The alert's kind (an ``AlertKind`` value, such as ``"circuit_open"``)."""
    severity: str
    """The alert's severity (an ``AlertSeverity`` value)."""
    subject: str
    """The breaker, bulkhead, operation or recovery system the alert is about."""
    summary: str
    """The alert's one-line description."""


@dataclass(slots=True)
class PermitWaited:
    """A caller waited for its rate-limiter permit and took it."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("wait",)

    wait: float
    """Seconds from the request to the permit (on the limiter's clock)."""


@dataclass(slots=True)
class ChaosInjected:
    """A chaos link injected a fault, a delay or a result in place of (or before) the real call."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("kind", "error_type", "delay")

    kind: str
    """``"fault"`` (an exception raised before the dependency was called), ``"latency"`` (a
    delay before the call) or ``"outcome"`` (a result returned without calling it)."""
    error_type: str | None = None
    """The injected exception's class name (``"fault"`` only)."""
    delay: float | None = None
    """The injected delay in seconds (``"latency"`` only)."""


@dataclass(slots=True)
class HedgeStarted:
    """A hedged execution ran another attempt beside (or after) the ones before it.

    Reported as the race ends, for each hedge that ran: one the policy's own breaker, bulkhead
    or rate limiter rejected before it called anything is a :class:`HedgeDenied` instead, and one
    still waiting for its admission (a bulkhead's queue, a rate limiter's permit) when the race
    ended called nothing either, and is reported nowhere.
    """

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("attempt", "trigger")

    attempt: int
    """The number of the attempt that started (unique in the execution)."""
    trigger: str
    """Why: ``"delay"`` (the latest attempt ran longer than the hedge delay, even a delay of 0:
    latency mode), ``"failure"`` (an attempt ended with an outcome that is not acceptable) or
    ``"parallel"`` (every attempt at once: parallel mode)."""


@dataclass(slots=True)
class HedgeDenied:
    """A hedge was due (its trigger fired) but was refused, so the execution goes on without it."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("trigger", "denied_by")

    trigger: str
    """The trigger that made it due (as :class:`HedgeStarted` names them)."""
    denied_by: str
    """``"budget"`` (the hedge budget had none to give), ``"not_replayable"`` (the request may be
    sent only once: an HTTP integration's budget says so), ``"max_attempts"`` (the execution's
    cap on attempts in total was reached), ``"deadline"`` (the effective deadline had passed
    when the hedge came due) or ``"rejected"`` (the hedge, before it called anything, or the
    attempt before it was rejected by the policy's own breaker, bulkhead or rate limiter, which
    every further attempt would meet)."""


@dataclass(slots=True)
class HedgeWon:
    """An attempt's outcome answered a hedged execution in which more than one attempt ran.

    An attempt ran unless it is pending (its task never ran), turned away by the policy's own
    breaker, bulkhead or rate limiter, or still waiting for its admission (a bulkhead's queue, a
    rate limiter's permit) when the race was won.

    Reported from the winning attempt while its scope is open, so a tracing listener marks the
    winner's attempt span; the other attempts end cancelled.
    """

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("attempt", "attempt_type")

    attempt: int
    """The winner's attempt number: the one it started with, as its attempt span (not the number a
    retry inside it took last)."""
    attempt_type: str
    """``"original"`` (the first attempt) or ``"hedge"``."""


@dataclass(slots=True)
class PolicyReloaded:
    """A policy took a new configuration: new calls use it, calls in flight finish under theirs."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("outcome", "error_type")

    generation: int
    """The policy's configuration number after the reload (1 for its first configuration)."""
    outcome: str = "succeeded"
    """Always ``"succeeded"`` (the value :class:`ReloadFailed` has as ``"failed"``)."""
    error_type: str | None = None
    """Always ``None``: nothing failed (the field :class:`ReloadFailed` fills)."""


@dataclass(slots=True)
class ReloadFailed:
    """A new configuration for a policy was refused: nothing changed (Polly's ``ReloadFailed``)."""

    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("outcome", "error_type")

    error_type: str | None
    """The class name of the error that refused it (``ValueError`` for a config that fails
    validation)."""
    generation: int
    """The policy's configuration number, unchanged (0 when no policy has the name)."""
    outcome: str = "failed"
    """Always ``"failed"``."""


class EventArgs(Protocol):
    """What the arguments of every kind of event are: a class naming its telemetry fields.

    The classes above are the arguments of :class:`~otel_resilience.engine.events.Event`'s kinds;
    a pattern's own kinds have argument classes of the pattern's own, shaped alike (a slotted
    dataclass with ``ATTRIBUTES``), in its package. A listener tells them apart with
    ``isinstance``.
    """

    ATTRIBUTES: ClassVar[tuple[str, ...]]
    """The fields that describe the event to telemetry, in order."""
