"""The OpenTelemetry listener: engine events and execution scopes as spans, metrics and logs.

:class:`OtelListener` implements both listener protocols of :mod:`otel_resilience.engine.events`
and decides *how* what the patterns report is shown:

* one INTERNAL span per logical execution, named after the operation, a child of the caller's
  current span and made current while the call runs (so the user's spans nest under it);
  attempt spans (one per attempt after the execution's first: attempt 1 runs in the execution
  span) are children of it;
* span events on the current span for every reported event;
* the duration histogram, recorded inside the execution span before it ends, so that the SDK's
  trace-based exemplar filter attaches its trace id;
* the attempt duration histogram for every attempt scope (the retry opens one per attempt, the
  first included), timed by the listener, recorded inside the attempt span if there is one;
* synchronous counters for rare events, log records for alerts and error patterns; every counter
  series whose labels are known in advance (a breaker's transitions, the rejection reasons of a
  breaker or bulkhead in a policy, a deadline's scope) is added 0 as soon as its pattern exists
  (registry ``on_added`` callbacks, and the live instances when the meter is acquired), so that
  ``increase()`` sees the first event;
* on the execution span, ``resilience.dependency.error.type``: the last error of an attempt
  that reached the dependency, reported by the retry (rejections never set it).

Providers are acquired lazily. Until a real tracer or meter provider is set globally (or passed
in), :meth:`OtelListener.start_execution` returns ``None``: the check reads the API's own
provider globals (the public ``get_tracer_provider()`` costs ~1 µs per call because it looks up
an environment variable; the globals are read-only here and can be set only once, so the
decision is cached as soon as a provider appears). The public getters run once, on first use,
so that providers named by ``OTEL_PYTHON_TRACER_PROVIDER`` / ``OTEL_PYTHON_METER_PROVIDER`` are
honoured too.

Error rule (OTel semantic conventions, "Recording errors"): only the outcomes ``failure``,
``rejected`` and ``timeout`` set status ERROR and ``error.type``; ``success``, ``recovered``
(succeeded after retries or a recovery action) and ``fallback`` are not errors and carry
``resilience.outcome``; ``cancelled`` is not an error either. Exceptions are not recorded as span
events (the conventions advise against it); their messages appear, as the status description,
only with ``record_messages=True``.

``http.request.resend_count``: when the caller's span (the parent of the execution span) is an
SDK span of kind CLIENT with an ``http.request.method`` (or legacy ``http.method``) attribute,
the retried attempt spans carry ``http.request.resend_count = attempt - 1``.

Telemetry never breaks the application: every exception inside this module is caught, counted
in :attr:`OtelListener.errors` and logged to ``logging.getLogger("otel_resilience")`` at most
once a minute per call site.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry._logs import LogRecord, SeverityNumber, get_logger, get_logger_provider
from opentelemetry._logs import _internal as _logs_internal
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_resilience.engine.events import (
    HUB,
    AlertRaised,
    CallRejected,
    Event,
    EventArgs,
    FallbackUsed,
    Outcome,
    PatternDetected,
    RecoveryAttempted,
    RetryExhausted,
    RetryScheduled,
    StateChanged,
    TelemetryHub,
    TelemetrySource,
    TimeoutOccurred,
    error_type_name,
)
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import BREAKERS, PIPELINES, Named
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.observables import Observables

if TYPE_CHECKING:
    from collections.abc import Mapping
    from contextvars import Token

    from opentelemetry._logs import Logger, LoggerProvider
    from opentelemetry.context import Context
    from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ["VERSION", "OtelListener"]

_LOG: Final = logging.getLogger("otel_resilience")
_LOG_INTERVAL: Final = 60.0
"""Seconds between two log lines about failures at the same telemetry call site."""
_MAX_SOURCES: Final = 4096
"""Per-source attribute caches kept before the cache is cleared (sources are per instance)."""
_OTHER_ERROR: Final = "_OTHER"

_HTTP_CLIENT_KEY: Final = otel_context.create_key("otel_resilience.http_client_parent")

_FAST_GLOBALS: Final = (
    hasattr(trace, "_TRACER_PROVIDER")
    and hasattr(_metrics_internal, "_METER_PROVIDER")
    and hasattr(_logs_internal, "_LOGGER_PROVIDER")
)
"""Whether the API keeps its providers in module globals we can read for free."""

_ERROR_OUTCOMES: Final = frozenset({Outcome.FAILURE, Outcome.REJECTED, Outcome.TIMEOUT})
_SEVERITIES: Final = {
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "critical": SeverityNumber.ERROR,
}

Attrs = dict[str, "AttributeValue"]


def _subclass_names(cls: type[BaseException]) -> frozenset[str]:
    """Return the ``error.type`` names of ``cls`` and of every subclass defined so far."""
    names = set()
    pending = [cls]
    while pending:
        current = pending.pop()
        names.add(error_type_name(current.__new__(current)) or "")
        pending.extend(current.__subclasses__())
    return frozenset(names)


_REJECTION_ERRORS: Final = _subclass_names(ExecutionRejectedError)
"""``error.type`` of the library's rejections: errors raised without calling the dependency."""


def _package_version() -> str:
    """Return the installed version of otel-resilience (``0.0.0`` when not installed)."""
    try:
        return importlib.metadata.version("otel-resilience")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


VERSION: Final = _package_version()
"""The instrumentation scope version."""


def _global_tracer_provider() -> TracerProvider | None:
    """Return the globally set tracer provider, or ``None`` while none is set."""
    if _FAST_GLOBALS:
        return trace._TRACER_PROVIDER
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def _global_meter_provider() -> MeterProvider | None:
    """Return the globally set meter provider, or ``None`` while none is set."""
    if _FAST_GLOBALS:
        return _metrics_internal._METER_PROVIDER
    provider = metrics.get_meter_provider()
    return None if type(provider).__name__ == "_ProxyMeterProvider" else provider


class _SourceInfo:
    """Attributes precomputed once per telemetry source (one per pattern instance and pipeline)."""

    __slots__ = (
        "attempt_attrs",
        "attempt_metric_attrs",
        "attempt_name",
        "attempt_operation",
        "duration_attrs",
        "event_attrs",
        "metrics",
        "metrics_only",
        "name",
        "pattern",
        "policy",
        "source",
        "span_attrs",
        "spans",
        "success_attrs",
    )

    def __init__(self, source: TelemetrySource) -> None:
        self.source = source
        self.policy = source.pipeline or source.name
        self.pattern = source.kind
        self.name = source.name
        self.spans = source.spans
        self.metrics = source.metrics
        self.span_attrs: Attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern}
        self.success_attrs: Attrs = {
            sc.POLICY: self.policy,
            sc.PATTERN: self.pattern,
            sc.OUTCOME: Outcome.SUCCESS.value,
        }
        self.duration_attrs: dict[tuple[Outcome, str | None], Attrs] = {}
        self.event_attrs: Attrs = {sc.PATTERN: self.pattern, sc.NAME: self.name}
        self.attempt_attrs: Attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern, sc.NAME: self.name}
        self.attempt_metric_attrs: dict[tuple[Outcome, str | None], Attrs] = {}
        self.attempt_operation = ""
        self.attempt_name = ""
        self.metrics_only = _Scope(self, None, None)

    def duration(self, outcome: Outcome, error_type: str | None) -> Attrs:
        """Return the (cached) histogram attributes for one outcome and error type."""
        key = (outcome, error_type)
        attrs = self.duration_attrs.get(key)
        if attrs is None:
            attrs = {sc.POLICY: self.policy, sc.PATTERN: self.pattern, sc.OUTCOME: outcome.value}
            if error_type is not None:
                attrs[sc.ERROR_TYPE] = error_type
            self.duration_attrs[key] = attrs
        return attrs

    def attempt_metric(self, outcome: Outcome, error_type: str | None) -> Attrs:
        """Return the (cached) attempt-duration attributes for one outcome and error type."""
        key = (outcome, error_type)
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
            self.attempt_metric_attrs[key] = attrs
        return attrs

    def attempt_span_name(self, operation: str) -> str:
        """Return ``"{operation} attempt"``, formatted once per operation."""
        if operation != self.attempt_operation:
            self.attempt_name = operation + sc.ATTEMPT_SPAN_SUFFIX
            self.attempt_operation = operation
        return self.attempt_name


class _Scope:
    """The handle of one execution or attempt scope."""

    __slots__ = ("info", "span", "token")

    def __init__(self, info: _SourceInfo, span: Span | None, token: object) -> None:
        self.info = info
        self.span = span
        self.token = token


class _AttemptScope(_Scope):
    """The handle of one attempt scope: also when it started, for the attempt duration."""

    __slots__ = ("started",)

    def __init__(self, info: _SourceInfo, span: Span | None, token: object, started: float) -> None:
        super().__init__(info, span, token)
        self.started = started


class _Instruments:
    """The synchronous instruments, created once per meter from the semconv specs."""

    __slots__ = (
        "alerts",
        "attempt_duration",
        "duration",
        "exhausted",
        "fallbacks",
        "patterns",
        "recoveries",
        "rejections",
        "retries",
        "retry_delay",
        "timeouts",
        "transitions",
    )

    def __init__(self, meter: Meter) -> None:
        self.duration = _histogram(meter, sc.EXECUTION_DURATION)
        self.attempt_duration = _histogram(meter, sc.ATTEMPT_DURATION)
        self.transitions = _counter(meter, sc.CB_TRANSITIONS)
        self.rejections = _counter(meter, sc.REJECTIONS)
        self.retries = _counter(meter, sc.RETRIES)
        self.retry_delay = _histogram(meter, sc.RETRY_DELAY_METRIC)
        self.exhausted = _counter(meter, sc.RETRY_EXHAUSTED)
        self.timeouts = _counter(meter, sc.TIMEOUTS)
        self.fallbacks = _counter(meter, sc.FALLBACK_EXECUTIONS)
        self.recoveries = _counter(meter, sc.RECOVERY_ATTEMPTS)
        self.patterns = _counter(meter, sc.ERROR_PATTERNS)
        self.alerts = _counter(meter, sc.ALERTS)


def _counter(meter: Meter, name: str) -> Counter:
    spec = sc.instrument(name)
    return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)


def _histogram(meter: Meter, name: str) -> Histogram:
    spec = sc.instrument(name)
    return meter.create_histogram(
        spec.name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=list(spec.boundaries),
    )


class OtelListener:
    """Shows what the patterns report as OpenTelemetry spans, span events, metrics and logs.

    Register it on the engine hub with :func:`otel_resilience.telemetry.instrument` (which also
    removes the previous one) rather than by hand.

    Args:
        tracer_provider: The tracer provider to use; ``None`` for the global one, acquired
            lazily (a provider set after ``import otel_resilience`` is honoured).
        meter_provider: The meter provider to use; ``None`` for the global one, lazily.
        logger_provider: The logger provider for alert and error-pattern log records; ``None``
            for the global one (nothing is emitted until one is set).
        record_messages: Whether failed spans carry the exception message as their status
            description (default ``False``: messages may hold user data).
        hub: The hub whose error count is exported with this listener's own.

    Attributes:
        errors: How many telemetry exceptions this listener caught (each one logged, rate-limited).
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_dormant",
        "_env_checked",
        "_hub",
        "_infos",
        "_instruments",
        "_lock",
        "_log_times",
        "_logger",
        "_logger_provider",
        "_meter_pending",
        "_meter_provider",
        "_observables",
        "_pending",
        "_record_messages",
        "_tracer",
        "_tracer_pending",
        "_tracer_provider",
        "errors",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        record_messages: bool = False,
        hub: TelemetryHub = HUB,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._logger_provider = logger_provider
        self._record_messages = record_messages
        self._hub = hub
        self._lock = threading.Lock()
        self._tracer: Tracer | None = None
        self._instruments: _Instruments | None = None
        self._observables: Observables | None = None
        self._logger: Logger | None = None
        self._infos: dict[int, _SourceInfo] = {}
        self._log_times: dict[str, float] = {}
        self._closed = False
        self._dormant = False
        self.errors = 0
        self._tracer_pending = True
        self._meter_pending = True
        self._pending = True
        self._env_checked = False
        if tracer_provider is not None:
            self._use_tracer_provider(tracer_provider)
        if meter_provider is not None and self._use_meter_provider(meter_provider):
            self._zero_existing()
        self._pending = self._tracer_pending or self._meter_pending

    # --- state -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether the listener still reports (``False`` after :meth:`close`)."""
        return not self._closed

    @property
    def tracer(self) -> Tracer | None:
        """The tracer in use, or ``None`` while no tracer provider is known."""
        return self._tracer

    @property
    def meter_ready(self) -> bool:
        """Whether instruments exist (a meter provider is known)."""
        return self._instruments is not None

    @property
    def total_errors(self) -> int:
        """Telemetry exceptions caught here plus those the hub caught from any listener."""
        return self.errors + self._hub.errors

    def close(self) -> None:
        """Stop reporting: scopes are no longer opened and observable callbacks report nothing."""
        with self._lock:
            self._closed = True
            self._tracer = None
            self._instruments = None
            self._tracer_pending = self._meter_pending = self._pending = False
        with _HOOK_LOCK:
            _ZEROED_BY.discard(self)

    def failed(self, where: str) -> None:
        """Count one telemetry exception and log it (at most once a minute per ``where``).

        Call it from inside an ``except`` block.
        """
        now = time.monotonic()
        with self._lock:
            self.errors += 1
            last = self._log_times.get(where)
            if last is not None and now - last < _LOG_INTERVAL:
                return
            self._log_times[where] = now
        _LOG.warning("otel_resilience telemetry failed in %s (swallowed)", where, exc_info=True)

    def _use_tracer_provider(self, provider: TracerProvider) -> None:
        self._tracer_pending = False
        if not isinstance(provider, trace.NoOpTracerProvider):
            self._tracer = provider.get_tracer(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)

    def _use_meter_provider(self, provider: MeterProvider) -> bool:
        """Create the instruments on ``provider``; return whether there are some now."""
        self._meter_pending = False
        if isinstance(provider, metrics.NoOpMeterProvider):
            return False
        meter = provider.get_meter(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
        self._instruments = _Instruments(meter)
        self._observables = Observables(meter, self)
        return True

    def _no_sdk(self) -> bool:
        """Whether no tracer or meter provider exists, given or global (the no-SDK fast path).

        Two module attribute reads once the environment was checked; the caller has already
        seen that it holds no tracer.
        """
        return (
            self._env_checked
            and _FAST_GLOBALS
            and trace._TRACER_PROVIDER is None
            and _metrics_internal._METER_PROVIDER is None
            and self._instruments is None
        )

    def _no_logger(self) -> bool:
        """Whether no logger provider exists, given or global (alerts and patterns need one)."""
        return self._logger_provider is None and _logs_internal._LOGGER_PROVIDER is None

    # --- zero-initialised series --------------------------------------------------------------

    def _zero_existing(self) -> None:
        """Start every known counter series at 0, now for live instances and later for new ones.

        A counter series that appears at its first increment is born at 1, and ``increase()``
        never sees that first event: the first trip of a breaker would stay invisible. So every
        series whose label set is known in advance (the transitions of each breaker, the
        rejection reasons of each breaker and bulkhead in each policy, the timeout scopes of
        each timeout, the recovery strategies and results of each policy with recovery) is added
        0 as soon as its pattern exists. Bounded (known label sets only) and off the hot path: it
        runs when an instance is registered.
        """
        with _HOOK_LOCK:
            _ZEROED_BY.add(self)
        _hook_registries()
        for breaker in BREAKERS.items():
            self._zero_breaker(breaker)
        for pipeline in PIPELINES.items():
            self._zero_pipeline(pipeline)

    def _zero_breaker(self, breaker: Named) -> None:
        """Add 0 to every transition series of ``breaker``."""
        instruments = self._instruments
        if instruments is None:
            return
        try:
            name = breaker.name
            for previous, state, reason in sc.CB_TRANSITIONS_KNOWN:
                instruments.transitions.add(
                    0,
                    {
                        sc.NAME: name,
                        sc.CB_PREVIOUS_STATE: previous,
                        sc.CB_STATE: state,
                        sc.CB_TRANSITION_REASON: reason,
                    },
                )
        except Exception:  # noqa: BLE001
            self.failed("zero breaker series")

    def _zero_pipeline(self, pipeline: Named) -> None:
        """Add 0 to the rejection and timeout series of every strategy of ``pipeline``."""
        instruments = self._instruments
        if instruments is None or not isinstance(pipeline, Pipeline):
            return
        try:
            source = pipeline.telemetry.source
            policy = source.pipeline or source.name
            for strategy in pipeline.strategies:
                kind, name, config = strategy.kind, strategy.name, strategy.config
                base: Attrs = {sc.POLICY: policy, sc.PATTERN: kind, sc.NAME: name}
                for reason in sc.REJECTION_REASONS_BY_PATTERN.get(kind, ()):
                    instruments.rejections.add(0, {**base, sc.REJECTION_REASON: reason})
                scope = _timeout_scope(kind, config)
                if scope is not None:
                    instruments.timeouts.add(0, {**base, sc.TIMEOUT_SCOPE: scope})
                if kind == "recovery":
                    for strategy_name in sc.RECOVERY_STRATEGIES:
                        for result in sc.RESULTS:
                            instruments.recoveries.add(
                                0,
                                {
                                    sc.POLICY: policy,
                                    sc.NAME: name,
                                    sc.RECOVERY_STRATEGY: strategy_name,
                                    sc.RECOVERY_RESULT: result,
                                },
                            )
        except Exception:  # noqa: BLE001
            self.failed("zero pipeline series")

    def _refresh(self) -> None:
        """Acquire the global tracer and meter as soon as a real provider has been set."""
        if self._env_checked and not (
            (self._tracer_pending and _global_tracer_provider() is not None)
            or (self._meter_pending and _global_meter_provider() is not None)
        ):
            return
        created = False
        try:
            with self._lock:
                if self._closed:
                    return
                if not self._env_checked:
                    # The public getters load a provider named by an OTEL_PYTHON_* variable.
                    trace.get_tracer_provider()
                    metrics.get_meter_provider()
                    get_logger_provider()
                    self._env_checked = True
                if self._tracer_pending:
                    tracer_provider = _global_tracer_provider()
                    if tracer_provider is not None:
                        self._use_tracer_provider(tracer_provider)
                if self._meter_pending:
                    meter_provider = _global_meter_provider()
                    if meter_provider is not None:
                        created = self._use_meter_provider(meter_provider)
                self._pending = self._tracer_pending or self._meter_pending
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            self._pending = False
            self.failed("provider acquisition")
        if created:
            self._zero_existing()

    def _go_dormant(self) -> None:
        """Ask the hub to leave this listener out of event delivery (no SDK: nothing to show).

        Patterns then build no event arguments for it. :meth:`start_execution`, which the hub
        still calls on every execution, wakes it up as soon as a provider has been set.
        """
        self._dormant = True
        self._hub.set_dormant(self, dormant=True)

    def _wake(self) -> None:
        """Ask the hub to deliver events to this listener again."""
        self._dormant = False
        self._hub.set_dormant(self, dormant=False)

    def _info(self, source: TelemetrySource) -> _SourceInfo:
        info = self._infos.get(id(source))
        if info is None or info.source is not source:
            if len(self._infos) >= _MAX_SOURCES:
                self._infos.clear()
            info = _SourceInfo(source)
            self._infos[id(source)] = info
        return info

    # --- ExecutionListener ---------------------------------------------------------------

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        """Open the execution span (if tracing) and return its handle; ``None`` when idle.

        Args:
            source: Who runs the execution (a pipeline or a pattern used alone).
            operation: The operation's name, used as the span name.

        Returns:
            A handle for :meth:`end_execution`, or ``None`` when nothing is recorded.
        """
        tracer = self._tracer
        if self._pending:
            if tracer is None and self._no_sdk():
                # The no-SDK fast path: two module attribute reads. Nothing can be shown, so
                # the listener also asks the hub to stop sending it events until it wakes here.
                # A logger provider (given, or set globally) still wants alerts and patterns.
                if self._no_logger():
                    if not self._dormant:
                        self._go_dormant()
                elif self._dormant:
                    self._wake()  # a logger provider was set globally since it went dormant
                return None
            self._refresh()
            tracer = self._tracer
            if tracer is None and self._instruments is None:
                return None
        if self._dormant:
            self._wake()
        if tracer is None and self._instruments is None:
            return None
        try:
            info = self._info(source)
            if tracer is not None and info.spans:
                parent_ctx = otel_context.get_current()
                parent = trace.get_current_span(parent_ctx)
                parent_sc = parent.get_span_context()
                if not parent_sc.is_valid or parent_sc.trace_flags.sampled:
                    span = tracer.start_span(
                        operation,
                        parent_ctx,
                        SpanKind.INTERNAL,
                        info.span_attrs,
                        record_exception=False,
                        set_status_on_exception=False,
                    )
                    ctx = trace.set_span_in_context(span, parent_ctx)
                    if parent_sc.is_valid and _is_http_client(parent):
                        ctx = otel_context.set_value(_HTTP_CLIENT_KEY, _HTTP_CLIENT_KEY, ctx)
                    return _Scope(info, span, otel_context.attach(ctx))
            if info.metrics and self._instruments is not None:
                return info.metrics_only
        except Exception:  # noqa: BLE001
            self.failed("start_execution")
        return None

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        """Record the duration (inside the span), set the outcome and status, end the span.

        Args:
            handle: What :meth:`start_execution` returned.
            outcome: How the execution ended.
            duration: Its duration in seconds.
            error: The exception that escaped, if any.
        """
        scope = cast("_Scope", handle)
        try:
            info = scope.info
            error_type: str | None = None
            if outcome in _ERROR_OUTCOMES:
                error_type = error_type_name(error) or _OTHER_ERROR
            instruments = self._instruments
            if instruments is not None and info.metrics:
                attrs = (
                    info.success_attrs if outcome is Outcome.SUCCESS else info.duration(outcome, error_type)
                )
                instruments.duration.record(duration, attrs)
            span = scope.span
            if span is not None:
                self._finish_span(span, outcome, error_type, error)
        except Exception:  # noqa: BLE001
            self.failed("end_execution")
        finally:
            if scope.token is not None:
                otel_context.detach(cast("Token[Context]", scope.token))

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        """Open an attempt span, a child of the current (execution) span, and time the attempt.

        Args:
            source: The pattern that runs the attempts (the retry).
            operation: The operation's name.
            attempt: The attempt number (1-based, unique in the execution). Attempt 1 opens no
                span (the execution span covers it); it is only timed.

        Returns:
            A handle for :meth:`end_attempt`, or ``None`` when there is neither a span to open
            nor a meter to record the attempt's duration on.
        """
        tracer = self._tracer
        if self._pending:
            if tracer is None and self._no_sdk():
                # No SDK: no attempt span, nothing timed (module attribute reads). The hub asks
                # only an awake listener, so it has this one awake (re-added since it went
                # dormant): put it back to sleep, so that the next attempts cost no call here.
                if self._no_logger():
                    self._go_dormant()
                return None
            self._refresh()
            tracer = self._tracer
        timed = self._instruments is not None and source.metrics
        spans = tracer is not None and source.spans and attempt > 1
        if not timed and not spans:
            return None
        try:
            info = self._info(source)
            span: Span | None = None
            token: object = None
            if spans and tracer is not None:
                parent_ctx = otel_context.get_current()
                parent_sc = trace.get_current_span(parent_ctx).get_span_context()
                if not parent_sc.is_valid or parent_sc.trace_flags.sampled:
                    attrs = dict(info.attempt_attrs)
                    attrs[sc.ATTEMPT] = attempt
                    if otel_context.get_value(_HTTP_CLIENT_KEY, parent_ctx):
                        attrs[sc.HTTP_RESEND_COUNT] = attempt - 1
                    span = tracer.start_span(
                        info.attempt_span_name(operation),
                        parent_ctx,
                        SpanKind.INTERNAL,
                        attrs,
                        record_exception=False,
                        set_status_on_exception=False,
                    )
                    token = otel_context.attach(trace.set_span_in_context(span, parent_ctx))
            if span is None and not timed:
                return None
            return _AttemptScope(info, span, token, time.perf_counter() if timed else 0.0)
        except Exception:  # noqa: BLE001
            self.failed("start_attempt")
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        """Set the attempt's outcome and status and end its span.

        Args:
            handle: What :meth:`start_attempt` returned.
            outcome: How the attempt ended.
            error: The exception the attempt raised, if any.
        """
        scope = cast("_AttemptScope", handle)
        try:
            error_type = (error_type_name(error) or _OTHER_ERROR) if outcome in _ERROR_OUTCOMES else None
            info = scope.info
            instruments = self._instruments
            if instruments is not None and info.metrics and scope.started:
                # Inside the attempt span, so that exemplars carry its trace.
                instruments.attempt_duration.record(
                    time.perf_counter() - scope.started, info.attempt_metric(outcome, error_type)
                )
            span = scope.span
            if span is not None:
                self._finish_span(span, outcome, error_type, error)
        except Exception:  # noqa: BLE001
            self.failed("end_attempt")
        finally:
            if scope.token is not None:
                otel_context.detach(cast("Token[Context]", scope.token))

    def _finish_span(
        self, span: Span, outcome: Outcome, error_type: str | None, error: BaseException | None
    ) -> None:
        if span.is_recording():
            span.set_attribute(sc.OUTCOME, outcome.value)
            if error_type is not None:
                span.set_attribute(sc.ERROR_TYPE, error_type)
                description = str(error) if self._record_messages and error is not None else None
                span.set_status(Status(StatusCode.ERROR, description))
        span.end()

    # --- TelemetryListener ---------------------------------------------------------------

    def on_event(self, source: TelemetrySource, event: Event, args: EventArgs) -> None:
        """Turn one reported event into a span event, a metric point and (alerts) a log record.

        Args:
            source: Who reported it.
            event: What happened.
            args: The event's typed arguments.
        """
        if self._pending:
            if self._tracer is None and self._no_sdk() and self._no_logger():
                self._go_dormant()  # the hub calls it, so the hub has it awake (re-added)
                return  # the no-SDK fast path, as in start_execution
            self._refresh()
        if self._closed:
            return
        try:
            info = self._info(source)
            span = self._event_span(info)
            instruments = self._instruments
            if isinstance(args, RetryScheduled):
                self._retry_scheduled(info, args, span, instruments)
            elif isinstance(args, RetryExhausted):
                self._retry_exhausted(info, args, span, instruments)
            elif isinstance(args, StateChanged):
                self._state_changed(info, args, span, instruments)
            elif isinstance(args, CallRejected):
                self._rejected(info, args, span, instruments)
            elif isinstance(args, TimeoutOccurred):
                self._timeout(info, args, span, instruments)
            elif isinstance(args, FallbackUsed):
                self._fallback(info, args, span, instruments)
            elif isinstance(args, RecoveryAttempted):
                self._recovery(info, args, span, instruments)
            elif isinstance(args, PatternDetected):
                self._pattern(info, args, span, instruments)
            elif isinstance(args, AlertRaised):
                self._alert(info, args, span, instruments)
        except Exception:  # noqa: BLE001
            self.failed(f"on_event({event.value})")

    def _event_span(self, info: _SourceInfo) -> Span | None:
        """Return the current span if events should be added to it (it is recording)."""
        if self._tracer is None or not info.spans:
            return None
        span = trace.get_current_span()
        return span if span.is_recording() else None

    def _event_attrs(self, info: _SourceInfo, extra: Mapping[str, AttributeValue | None]) -> Attrs:
        return {**info.event_attrs, **{key: value for key, value in extra.items() if value is not None}}

    @staticmethod
    def _metric_attrs(pairs: Mapping[str, AttributeValue | None]) -> Attrs:
        return {key: value for key, value in pairs.items() if value is not None}

    def _retry_scheduled(
        self, info: _SourceInfo, args: RetryScheduled, span: Span | None, instruments: _Instruments | None
    ) -> None:
        if instruments is not None:
            base: Attrs = {sc.POLICY: info.policy, sc.NAME: info.name}
            instruments.retries.add(1, self._metric_attrs({**base, sc.ERROR_TYPE: args.error_type}))
            instruments.retry_delay.record(args.delay, base)
        if span is not None:
            _note_dependency_error(span, args.error_type)
            span.add_event(
                sc.EV_RETRY_SCHEDULED,
                self._event_attrs(
                    info,
                    {sc.ATTEMPT: args.attempt, sc.RETRY_DELAY: args.delay, sc.ERROR_TYPE: args.error_type},
                ),
            )

    def _retry_exhausted(
        self, info: _SourceInfo, args: RetryExhausted, span: Span | None, instruments: _Instruments | None
    ) -> None:
        if instruments is not None:
            instruments.exhausted.add(
                1,
                self._metric_attrs(
                    {
                        sc.POLICY: info.policy,
                        sc.NAME: info.name,
                        sc.RETRY_STOP_REASON: args.reason,
                        sc.ERROR_TYPE: args.error_type,
                    }
                ),
            )
        if span is not None:
            _note_dependency_error(span, args.error_type)
            span.add_event(
                sc.EV_RETRY_EXHAUSTED,
                self._event_attrs(
                    info,
                    {
                        sc.ATTEMPT: args.attempts,
                        sc.RETRY_STOP_REASON: args.reason,
                        sc.ERROR_TYPE: args.error_type,
                    },
                ),
            )

    def _state_changed(
        self, info: _SourceInfo, args: StateChanged, span: Span | None, instruments: _Instruments | None
    ) -> None:
        extra: Attrs = {
            sc.CB_PREVIOUS_STATE: args.old,
            sc.CB_STATE: args.new,
            sc.CB_TRANSITION_REASON: args.reason,
        }
        if instruments is not None:
            instruments.transitions.add(1, {sc.NAME: info.name, **extra})
        if span is not None:
            span.add_event(sc.EV_STATE_CHANGED, self._event_attrs(info, extra))

    def _rejected(
        self, info: _SourceInfo, args: CallRejected, span: Span | None, instruments: _Instruments | None
    ) -> None:
        if instruments is not None:
            instruments.rejections.add(
                1,
                {
                    sc.POLICY: info.policy,
                    sc.PATTERN: info.pattern,
                    sc.NAME: info.name,
                    sc.REJECTION_REASON: args.reason,
                },
            )
        if span is not None:
            span.add_event(sc.EV_CALL_REJECTED, self._event_attrs(info, {sc.REJECTION_REASON: args.reason}))

    def _timeout(
        self, info: _SourceInfo, args: TimeoutOccurred, span: Span | None, instruments: _Instruments | None
    ) -> None:
        if instruments is not None:
            instruments.timeouts.add(
                1,
                {
                    sc.POLICY: info.policy,
                    sc.PATTERN: info.pattern,
                    sc.NAME: info.name,
                    sc.TIMEOUT_SCOPE: args.scope,
                },
            )
        if span is not None:
            span.add_event(
                sc.EV_TIMEOUT,
                self._event_attrs(info, {sc.TIMEOUT_SCOPE: args.scope, sc.TIMEOUT_LIMIT: args.timeout}),
            )

    def _fallback(
        self, info: _SourceInfo, args: FallbackUsed, span: Span | None, instruments: _Instruments | None
    ) -> None:
        extra: Attrs = {
            sc.FALLBACK_STRATEGY: args.strategy,
            sc.FALLBACK_RESULT: args.result,
            sc.ERROR_TYPE: args.error_type,
        }
        if instruments is not None:
            instruments.fallbacks.add(1, {sc.POLICY: info.policy, sc.NAME: info.name, **extra})
        if span is not None:
            span.add_event(sc.EV_FALLBACK, self._event_attrs(info, extra))

    def _recovery(
        self, info: _SourceInfo, args: RecoveryAttempted, span: Span | None, instruments: _Instruments | None
    ) -> None:
        extra: Attrs = {
            sc.RECOVERY_STRATEGY: args.strategy,
            sc.RECOVERY_RESULT: args.result,
            sc.ERROR_TYPE: args.error_type,
        }
        if instruments is not None:
            instruments.recoveries.add(1, {sc.POLICY: info.policy, sc.NAME: info.name, **extra})
        if span is not None:
            span.add_event(sc.EV_RECOVERY, self._event_attrs(info, extra))

    def _pattern(
        self, info: _SourceInfo, args: PatternDetected, span: Span | None, instruments: _Instruments | None
    ) -> None:
        if instruments is not None:
            instruments.patterns.add(
                1,
                {
                    sc.POLICY: info.policy,
                    sc.NAME: info.name,
                    sc.ERROR_TYPE: args.error_type,
                    sc.OPERATION: args.operation,
                },
            )
        attrs = self._event_attrs(
            info,
            {
                sc.ERROR_TYPE: args.error_type,
                sc.OPERATION: args.operation,
                sc.ERROR_PATTERN_COUNT: args.count,
                sc.ERROR_PATTERN_WINDOW: args.window,
            },
        )
        if span is not None:
            span.add_event(sc.EV_PATTERN, attrs)
        body = f"{args.error_type} repeated {args.count} times within {args.window:g} s in {args.operation!r}"
        self._emit_log(sc.EV_PATTERN, SeverityNumber.WARN, body, attrs)

    def _alert(
        self, info: _SourceInfo, args: AlertRaised, span: Span | None, instruments: _Instruments | None
    ) -> None:
        extra: Attrs = {
            sc.ALERT_KIND: args.kind,
            sc.ALERT_SEVERITY: args.severity,
            sc.ALERT_SUBJECT: args.subject,
        }
        if instruments is not None:
            instruments.alerts.add(1, {sc.NAME: info.name, **extra})
        attrs = self._event_attrs(info, extra)
        if span is not None:
            span.add_event(sc.EV_ALERT, {**attrs, sc.ALERT_SUMMARY: args.summary})
        severity = _SEVERITIES.get(args.severity, SeverityNumber.WARN)
        self._emit_log(sc.EV_ALERT, severity, args.summary, attrs)

    def _emit_log(self, event_name: str, severity: SeverityNumber, body: str, attrs: Attrs) -> None:
        """Emit a log record with an event name (a no-op until a logger provider is set)."""
        logger = self._logger
        if logger is None:
            provider = self._logger_provider
            if provider is not None:
                logger = provider.get_logger(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
            else:
                # A proxy logger: it forwards to the global provider once one is set.
                logger = get_logger(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
            self._logger = logger
        logger.emit(
            LogRecord(
                severity_number=severity,
                severity_text=severity.name,
                body=body,
                attributes=attrs,
                event_name=event_name,
            )
        )


def _note_dependency_error(span: Span, error_type: str | None) -> None:
    """Name the dependency's last error on the execution span (current while the retry decides).

    A rejection is not the dependency's error: it leaves the attribute as it was, so that an
    execution whose last attempt was rejected still names what the dependency raised before.
    """
    if error_type is not None and error_type not in _REJECTION_ERRORS:
        span.set_attribute(sc.DEPENDENCY_ERROR_TYPE, error_type)


_ZEROED_BY: Final[weakref.WeakSet[OtelListener]] = weakref.WeakSet()
"""The listeners with instruments, told about every breaker and pipeline created."""
_HOOK_LOCK: Final = threading.Lock()
_hooked: list[bool] = []


def _hook_registries() -> None:
    """Register (once per process) the registry callbacks that zero-initialise new instances."""
    with _HOOK_LOCK:
        if _hooked:
            return
        _hooked.append(True)
    BREAKERS.on_added(_breaker_added)
    PIPELINES.on_added(_pipeline_added)


def _zeroing_listeners() -> tuple[OtelListener, ...]:
    """A snapshot of the listeners to tell about a new instance (taken under the lock)."""
    with _HOOK_LOCK:
        return tuple(_ZEROED_BY)


def _breaker_added(breaker: Named) -> None:
    for listener in _zeroing_listeners():
        listener._zero_breaker(breaker)


def _pipeline_added(pipeline: Named) -> None:
    for listener in _zeroing_listeners():
        listener._zero_pipeline(pipeline)


def _timeout_scope(kind: str, config: object) -> str | None:
    """The timeout scope a strategy reports expiries with, or ``None`` if it has no deadline."""
    if kind == "timeout":
        scope = getattr(config, "scope", None)
        return scope if scope in sc.TIMEOUT_SCOPES else None
    if kind == "retry" and getattr(config, "attempt_timeout", None) is not None:
        return "attempt"
    return None


def _is_http_client(span: Span) -> bool:
    """Whether ``span`` is an (SDK) HTTP client span: kind CLIENT with an HTTP method attribute."""
    if getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    attributes = getattr(span, "attributes", None)
    if not attributes:
        return False
    return sc.HTTP_REQUEST_METHOD in attributes or sc.HTTP_METHOD_LEGACY in attributes
