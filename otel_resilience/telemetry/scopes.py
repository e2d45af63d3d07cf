"""What the OpenTelemetry listener keeps per telemetry source and per open scope, and its spans.

A :class:`SourceInfo` holds the attributes of one source (a pattern instance or a pipeline),
computed once, so that a call formats no attribute dictionary; a :class:`Scope` is the handle of
one execution or attempt scope; :func:`open_execution_span`, :func:`open_attempt_span` and
:func:`finish_span` open and close their spans.

``http.request.resend_count``: when the caller's span (the parent of the execution span) is an
SDK span of kind CLIENT with an ``http.request.method`` (or legacy ``http.method``) attribute,
the attempt spans of resends carry ``http.request.resend_count``: how many times the request
was sent before, counted over every execution that ran in that client span (one HTTP request:
its redirects' hops and an authentication's second send run as executions of their own in it,
with the requests and aiohttp instrumentations), so ``attempt - 1`` in its first execution, and
on from the sends of the earlier ones (:func:`_sends_in`). The semantic conventions set it only
on a resend, so the first send's span has none (a hedged execution's original, in the first
execution).

A source's own switches (``ResilienceConfig(spans=False, record_duration=False)``) hold for
everything its execution runs: :func:`enter_switches` makes them current (:data:`SWITCHED_OFF`),
and the attempts and span events inside it read them there, whichever source reports them.
"""

from __future__ import annotations

import contextvars
import weakref
from typing import TYPE_CHECKING, Final, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience.engine.events import Outcome, TelemetrySource, error_type_name, key_attribute
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.binding import key_attributes

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "DURATIONS_OFF",
    "KEYED_EXECUTION",
    "MAX_ATTRIBUTE_SETS",
    "MAX_SOURCES",
    "SPANS_OFF",
    "SWITCHED_OFF",
    "AttemptScope",
    "Attrs",
    "Scope",
    "SourceInfo",
    "SourceInfos",
    "current_key",
    "enter_key",
    "enter_switches",
    "error_type_of",
    "event_span",
    "finish_span",
    "leave",
    "leave_closed",
    "open_attempt_span",
    "open_execution_span",
]

Attrs = dict[str, "AttributeValue"]
K = TypeVar("K")

MAX_SOURCES: Final = 4096
"""Per-source attribute caches kept before the cache is cleared (sources are per instance)."""

MAX_ATTRIBUTE_SETS: Final = 256
"""Attribute sets each of a source's caches (:attr:`SourceInfo.duration_attrs`,
:attr:`SourceInfo.attempt_metric_attrs`) keeps before it is cleared: one per error type seen, and
error types are classes, which a program may create at run time (one per request). The series
themselves are bounded where they are kept (the SDK's cardinality limit, or
:data:`~otel_resilience.telemetry.histograms.SERIES_LIMIT`), beyond which they share the
``otel.metric.overflow`` series."""

_FAILURE: Final = Outcome.FAILURE
_TIMEOUT: Final = Outcome.TIMEOUT
_ERROR_OUTCOMES: Final = frozenset({Outcome.FAILURE, Outcome.REJECTED, Outcome.TIMEOUT})

_HTTP_CLIENT_KEY: Final = otel_context.create_key("otel_resilience.http_client_parent")
"""Set in the execution span's context when the caller's span is an HTTP client span, to that span
and the sends made in it before the execution (:func:`_sends_in`); cleared in that of an
execution nested in it, whose caller is another span."""

_SENDS: Final[weakref.WeakKeyDictionary[Span, int]] = weakref.WeakKeyDictionary()
"""How many sends (attempts) the executions run in each HTTP client span made so far, while the
span lives: one request's, whose resend count runs on over all of them."""

KEYED_EXECUTION: Final[contextvars.ContextVar[tuple[str, Attrs] | None]] = contextvars.ContextVar(
    "otel_resilience_keyed_execution", default=None
)
"""The policy and the key metric attributes of the keyed execution running now (where its policy
opted in to a key metric attribute), so that the events reported inside it carry the key."""


SPANS_OFF: Final = 1
"""In :data:`SWITCHED_OFF`: the execution running now opens no attempt span and adds no span event."""
DURATIONS_OFF: Final = 2
"""In :data:`SWITCHED_OFF`: the execution running now records no attempt duration."""
SWITCHED_OFF: Final[contextvars.ContextVar[int]] = contextvars.ContextVar(
    "otel_resilience_switched_off", default=0
)
"""What the execution running now switched off (:data:`SPANS_OFF`, :data:`DURATIONS_OFF`) for
everything it runs: its retry's and hedging's attempts, and the events reported inside it (a
breaker's state change, an alert), whose own sources have no switch of the policy's."""


def current_key(policy: str) -> Attrs | None:
    """Return the key metric attributes of the keyed execution of ``policy`` running now, if any."""
    found = KEYED_EXECUTION.get()
    return found[1] if found is not None and found[0] == policy else None


class SourceInfo:
    """Attributes precomputed once per telemetry source (one per pattern instance and pipeline).

    Attributes:
        source: The source.
        policy: ``resilience.policy``: the pipeline's name, or the instance's own.
        pattern: ``resilience.pattern``: the source's kind.
        name: ``resilience.name``: the instance's name.
        spans: Whether spans (and span events) are wanted for it: the source's wish and the
            listener's switch (``OTEL_RESILIENCE_SPANS_DISABLED``), combined once here.
        metrics: Whether its duration histograms are recorded (the source's wish and
            ``OTEL_RESILIENCE_DURATION_DISABLED``).
        source_values: ``resilience.policy``, ``resilience.pattern`` and ``resilience.name``.
        span_attrs: The execution span's attributes at start.
        success_attrs: The duration histogram's attributes of a success.
        duration_attrs: The duration histogram's attributes of the other outcomes, by outcome
            and error type (at most :data:`MAX_ATTRIBUTE_SETS`).
        attempt_metric_attrs: The attempt duration's attributes, by outcome, error type and
            attempt type (at most :data:`MAX_ATTRIBUTE_SETS`).
        event_attrs: The attributes every span event starts with.
        attempt_attrs: The attempt span's attributes at start (before its number).
        metrics_only: The scope handle of an execution that opens no span.
        key_attrs: The key metric attributes of a keyed policy's pipeline that opted in, else
            ``None`` (then the key is a span attribute only).
        switched_off: What the source's own switches turn off for everything its execution
            runs (:data:`SPANS_OFF`, :data:`DURATIONS_OFF`; 0 for none).
    """

    __slots__ = (
        "attempt_attrs",
        "attempt_metric_attrs",
        "attempt_name",
        "attempt_operation",
        "duration_attrs",
        "event_attrs",
        "key_attrs",
        "metrics",
        "metrics_only",
        "name",
        "pattern",
        "policy",
        "source",
        "source_values",
        "span_attrs",
        "spans",
        "success_attrs",
        "switched_off",
    )

    def __init__(self, source: TelemetrySource, spans: bool = True, metrics: bool = True) -> None:
        self.source = source
        self.policy = source.pipeline or source.name
        self.pattern = source.kind
        self.name = source.name
        self.spans = source.spans and spans
        self.metrics = source.metrics and metrics
        self.switched_off = (0 if source.spans else SPANS_OFF) | (0 if source.metrics else DURATIONS_OFF)
        self.source_values: Attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern, sc.NAME: self.name}
        self.span_attrs: Attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern}
        if source.key is not None:
            self.span_attrs[sc.KEY] = key_attribute(source.key)
        self.key_attrs: Attrs | None = None
        if source.metric_key is not None:
            self.key_attrs = key_attributes(source.metric_key)
        self.success_attrs: Attrs = {
            sc.POLICY: self.policy,
            sc.PATTERN: self.pattern,
            sc.OUTCOME: Outcome.SUCCESS.value,
            **(self.key_attrs or {}),
        }
        self.duration_attrs: dict[tuple[Outcome, str | None], Attrs] = {}
        self.event_attrs: Attrs = {sc.PATTERN: self.pattern, sc.NAME: self.name}
        self.attempt_attrs: Attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern, sc.NAME: self.name}
        self.attempt_metric_attrs: dict[tuple[Outcome, str | None, str | None], Attrs] = {}
        self.attempt_operation = ""
        self.attempt_name = ""
        self.metrics_only = Scope(self, None, None)

    def duration(self, outcome: Outcome, error_type: str | None) -> Attrs:
        """Return the (cached) histogram attributes for one outcome and error type."""
        key = (outcome, error_type)
        attrs = self.duration_attrs.get(key)
        if attrs is None:
            attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern, sc.OUTCOME: outcome.value}
            if error_type is not None:
                attrs[sc.ERROR_TYPE] = error_type
            if self.key_attrs is not None:
                attrs.update(self.key_attrs)
            _keep(self.duration_attrs, key, attrs)
        return attrs

    def attempt_metric(self, outcome: Outcome, error_type: str | None, attempt_type: str | None) -> Attrs:
        """Return the (cached) attempt-duration attributes for one outcome, error and attempt type."""
        key = (outcome, error_type, attempt_type)
        attrs = self.attempt_metric_attrs.get(key)
        if attrs is None:
            attrs = {
                sc.POLICY: self.policy,
                sc.PATTERN: self.pattern,
                sc.NAME: self.name,
                sc.OUTCOME: outcome.value,
            }
            if error_type is not None:
                attrs[sc.ERROR_TYPE] = error_type
            if attempt_type is not None:
                attrs[sc.ATTEMPT_TYPE] = attempt_type
            _keep(self.attempt_metric_attrs, key, attrs)
        return attrs

    def attempt_span_name(self, operation: str) -> str:
        """Return ``"{operation} attempt"``, formatted once per operation."""
        if operation != self.attempt_operation:
            self.attempt_name = operation + sc.ATTEMPT_SPAN_SUFFIX
            self.attempt_operation = operation
        return self.attempt_name


def _keep(cache: dict[K, Attrs], key: K, attrs: Attrs) -> None:
    """Cache ``attrs`` under ``key``, clearing ``cache`` first when it holds :data:`MAX_ATTRIBUTE_SETS`.

    Only a miss gets here: a repeated attribute set costs one lookup. The dicts handed out
    before a clear stay valid (nothing changes them); their sets are made again when next seen.
    """
    if len(cache) >= MAX_ATTRIBUTE_SETS:
        cache.clear()
    cache[key] = attrs


class SourceInfos:
    """The :class:`SourceInfo` of each source, by identity, bounded by :data:`MAX_SOURCES`.

    Args:
        spans: The listener's span switch, applied to every source's info.
        metrics: The listener's duration switch, applied to every source's info.
    """

    __slots__ = ("_infos", "metrics", "spans")

    def __init__(self, spans: bool = True, metrics: bool = True) -> None:
        self._infos: dict[int, SourceInfo] = {}
        self.spans = spans
        self.metrics = metrics

    def get(self, source: TelemetrySource) -> SourceInfo:
        """Return the info of ``source``, made on first use."""
        info = self._infos.get(id(source))
        if info is None or info.source is not source:
            if len(self._infos) >= MAX_SOURCES:
                self._infos.clear()
            info = SourceInfo(source, self.spans, self.metrics)
            self._infos[id(source)] = info
        return info


class Scope:
    """The handle of one execution or attempt scope.

    Attributes:
        info: The source's attributes.
        span: The span opened, or ``None`` (metrics only).
        token: The context token to detach when the scope ends, or ``None``.
        key_token: The :data:`KEYED_EXECUTION` token to reset when a keyed execution ends.
        switch_token: The :data:`SWITCHED_OFF` token to reset when the execution ends.
    """

    __slots__ = ("info", "key_token", "span", "switch_token", "token")

    def __init__(self, info: SourceInfo, span: Span | None, token: Token[Context] | None) -> None:
        self.info = info
        self.span = span
        self.token = token
        self.key_token: contextvars.Token[tuple[str, Attrs] | None] | None = None
        self.switch_token: contextvars.Token[int] | None = None


class AttemptScope(Scope):
    """The handle of one attempt scope: also when it started and its type, for the attempt duration.

    Attributes:
        started: ``time.perf_counter()`` when the attempt started, or 0 when it is not timed.
        attempt_type: ``"original"`` or ``"hedge"`` for an attempt of a hedged execution, else
            ``None``.
    """

    __slots__ = ("attempt_type", "started")

    def __init__(
        self,
        info: SourceInfo,
        span: Span | None,
        token: Token[Context] | None,
        started: float,
        attempt_type: str | None,
    ) -> None:
        super().__init__(info, span, token)
        self.started = started
        self.attempt_type = attempt_type


def enter_key(scope: Scope) -> Scope:
    """Make a keyed execution's key current for the events inside it; return its (own) scope.

    The shared metrics-only scope of its source is replaced by one of its own, which holds the
    token that :func:`leave` resets when the execution ends.
    """
    info = scope.info
    if scope is info.metrics_only:
        scope = Scope(info, None, None)
    scope.key_token = KEYED_EXECUTION.set((info.policy, cast("Attrs", info.key_attrs)))
    return scope


def enter_switches(scope: Scope | None, info: SourceInfo) -> Scope:
    """Make an execution's own switches current for what it runs; return its scope.

    Called when they differ from those current (an execution with a switch off, or one nested
    in it): the execution gets a scope of its own (even one that records nothing), which holds
    the token that :func:`leave` resets.
    """
    if scope is None or scope is info.metrics_only:
        scope = Scope(info, None, None)
    scope.switch_token = SWITCHED_OFF.set(info.switched_off)
    return scope


def leave(scope: Scope) -> None:
    """Restore what a scope made current when it began: its switches, its key, its context."""
    if scope.switch_token is not None:
        SWITCHED_OFF.reset(scope.switch_token)
    if scope.key_token is not None:
        KEYED_EXECUTION.reset(scope.key_token)
    if scope.token is not None:
        otel_context.detach(scope.token)


def leave_closed(scope: Scope) -> None:
    """:func:`leave` for a scope whose coroutine is being closed: restore nothing in another context.

    The garbage collector closes the coroutine of a task its closed loop left pending on whichever
    thread allocates, in that thread's context, not the task's: what the scope made current went
    with the task, and the context current here is not the scope's to change (resetting a token of
    another context raises, and OpenTelemetry logs a detach there as an error). A coroutine closed
    by hand in its own context restores as any scope does. Either way the scope holds no token
    afterwards: a :func:`leave` of it (where its span is ended, later) restores nothing.
    """
    switch_token, key_token, token = scope.switch_token, scope.key_token, scope.token
    scope.switch_token = scope.key_token = scope.token = None
    try:
        if switch_token is not None:
            SWITCHED_OFF.reset(switch_token)
        if key_token is not None:
            KEYED_EXECUTION.reset(key_token)
    except ValueError:  # a token of another context: nothing current here is the scope's
        return
    if token is not None and trace.get_current_span() is scope.span:
        otel_context.detach(token)


def open_execution_span(tracer: Tracer, info: SourceInfo, operation: str) -> Scope | None:
    """Open the execution span and make it current; ``None`` when the caller's span is not sampled."""
    parent_ctx = otel_context.get_current()
    parent = trace.get_current_span(parent_ctx)
    parent_sc = parent.get_span_context()
    if parent_sc.is_valid and not parent_sc.trace_flags.sampled:
        return None
    span = tracer.start_span(
        operation,
        parent_ctx,
        SpanKind.INTERNAL,
        info.span_attrs,
        record_exception=False,
        set_status_on_exception=False,
    )
    ctx = trace.set_span_in_context(span, parent_ctx)
    http_client = parent_sc.is_valid and _is_http_client(parent)
    if http_client or parent_ctx.get(_HTTP_CLIENT_KEY) is not None:
        # Its own caller decides: the mark of an HTTP execution it is nested in is not its own.
        ctx = otel_context.set_value(_HTTP_CLIENT_KEY, _sends_in(parent) if http_client else None, ctx)
    return Scope(info, span, otel_context.attach(ctx))


def _sends_in(client: Span) -> tuple[Span | None, int]:
    """Count an execution's first send in the HTTP client span ``client``; return it and the sends before.

    An HTTP client span that wraps a whole request (the requests instrumentation's, around
    ``Session.send``; aiohttp's, opened before its client middlewares) holds an execution per
    hop of a redirect and per send of an authentication flow, each a new request to the
    integration: the request's resend count runs on over them. A span that takes no weak
    reference counts each execution alone (``None`` in place of the span).
    """
    try:
        before = _SENDS.get(client, 0)
    except TypeError:
        return None, 0
    _sent(client, before)
    return client, before


def _sent(client: Span, count: int) -> None:
    """Record a send whose resend count is ``count`` in the HTTP client span ``client`` (the one rule)."""
    if _SENDS.get(client, 0) <= count:
        _SENDS[client] = count + 1


def open_attempt_span(
    tracer: Tracer, info: SourceInfo, operation: str, attempt: int, attempt_type: str | None = None
) -> tuple[Span | None, Token[Context] | None]:
    """Open an attempt span and make it current; return it and the context token to detach.

    ``attempt_type`` (a hedged execution's attempts only) becomes ``resilience.attempt.type``.
    ``(None, None)`` when the current span is not sampled.
    """
    parent_ctx = otel_context.get_current()
    parent_sc = trace.get_current_span(parent_ctx).get_span_context()
    if parent_sc.is_valid and not parent_sc.trace_flags.sampled:
        return None, None
    attrs = dict(info.attempt_attrs)
    attrs[sc.ATTEMPT] = attempt
    if attempt_type is not None:
        attrs[sc.ATTEMPT_TYPE] = attempt_type
    http = otel_context.get_value(_HTTP_CLIENT_KEY, parent_ctx)
    if http is not None:  # in an HTTP client span: the request's sends before this one
        client, before = cast("tuple[Span | None, int]", http)
        count = before + attempt - 1
        if count:  # a resend: not the first send
            attrs[sc.HTTP_RESEND_COUNT] = count
        if attempt > 1 and client is not None:
            _sent(client, count)
    span = tracer.start_span(
        info.attempt_span_name(operation),
        parent_ctx,
        SpanKind.INTERNAL,
        attrs,
        record_exception=False,
        set_status_on_exception=False,
    )
    return span, otel_context.attach(trace.set_span_in_context(span, parent_ctx))


def event_span(tracer: Tracer | None, info: SourceInfo) -> Span | None:
    """Return the current span if ``info``'s events should be added to it (it is recording).

    Never inside an execution whose spans are switched off, whichever source reports the event.
    """
    if tracer is None or not info.spans or SWITCHED_OFF.get() & SPANS_OFF:
        return None
    span = trace.get_current_span()
    return span if span.is_recording() else None


def error_type_of(outcome: Outcome, error: BaseException | None) -> str | None:
    """Return the ``error.type`` of an execution or attempt, ``None`` unless ``outcome`` is an error.

    Only ``failure``, ``rejected`` and ``timeout`` are errors, each named by its exception's
    class. A ``failure`` with no exception returned a result its policy judged a failure
    (:meth:`~otel_resilience.engine.context.ExecutionContext.result_failed`, a breaker's
    ``record_result``, a retry's rejected attempt):
    :data:`~otel_resilience.telemetry.semconv.FAILED_RESULT`. A ``timeout`` with no exception is
    an attempt the effective deadline ended
    (:func:`~otel_resilience.engine.stats.attempt_ended`, in both drivers), named as the
    timeout the deadline's scope raises: :data:`~otel_resilience.telemetry.semconv.TIMEOUT_ERROR_TYPE`.
    ``_OTHER`` names any other error without one.
    """
    if outcome not in _ERROR_OUTCOMES:
        return None
    if error is not None:
        return error_type_name(error)
    if outcome is _FAILURE:
        return sc.FAILED_RESULT
    return sc.TIMEOUT_ERROR_TYPE if outcome is _TIMEOUT else sc.ERROR_TYPE_OTHER


def finish_span(
    span: Span,
    outcome: Outcome,
    error_type: str | None,
    error: BaseException | None,
    *,
    record_messages: bool,
) -> None:
    """Set the outcome (and, for an error, ``error.type`` and status ERROR) and end ``span``.

    The span is ended, and an error's status set, whatever raises on the way (an exception whose
    ``str()`` fails under ``record_messages``): the exception then propagates, to be counted.
    """
    try:
        if span.is_recording():
            span.set_attribute(sc.OUTCOME, outcome._value_)  # Enum.value is a Python-level property
            if error_type is not None:
                span.set_attribute(sc.ERROR_TYPE, error_type)
                description = None
                try:
                    if record_messages and error is not None:
                        description = str(error)
                finally:
                    span.set_status(Status(StatusCode.ERROR, description))
    finally:
        span.end()


def _is_http_client(span: Span) -> bool:
    """Whether ``span`` is an (SDK) HTTP client span: kind CLIENT with an HTTP method attribute."""
    if getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    return sc.HTTP_REQUEST_METHOD in attributes or sc.HTTP_METHOD_LEGACY in attributes
