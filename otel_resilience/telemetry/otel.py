"""The OpenTelemetry listener: engine events and execution scopes as spans, metrics and logs.

:class:`OtelListener` implements both listener protocols of :mod:`otel_resilience.engine.events`
and decides *how* what the patterns report is shown:

* one INTERNAL span per logical execution, named after the operation, a child of the caller's
  current span and made current while the call runs (so the user's spans nest under it);
  attempt spans (one per attempt after the execution's first: attempt 1 runs in the execution
  span, unless it is the original of a hedged execution) are children of it;
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
  that reached the dependency, reported by the retry, or by a recovery that re-ran it with no
  retry inside (rejections never set it).

Providers are acquired lazily through the public API (:mod:`otel_resilience.telemetry.providers`), so
that a provider set after the import, or named by an ``OTEL_PYTHON_*_PROVIDER`` variable, is honoured.
Until one is set globally (or passed in), :meth:`OtelListener.start_execution` asks whether one has been
set since and returns ``None``; a global provider is set once, so it is acquired once.

Events need no code here: :meth:`OtelListener.on_event` does what the event's row of
:data:`otel_resilience.telemetry.semconv.EVENTS` says, through :mod:`otel_resilience.telemetry.binding`.

Error rule (OTel semantic conventions, "Recording errors"): only the outcomes ``failure``, ``rejected``
and ``timeout`` set status ERROR and ``error.type``; ``success``, ``recovered`` (succeeded after retries
or a recovery action) and ``fallback`` are not errors and carry ``resilience.outcome``; ``cancelled`` is
not an error either. A result the policy judged a failure (``retry_on_result``, ``hedge_on_result``, a
breaker's ``record_result`` or a fallback's ``handle_result`` rejected the one returned) is a ``failure``,
its ``error.type`` ``failed_result`` (:data:`~otel_resilience.telemetry.semconv.FAILED_RESULT`, chosen by
:func:`~otel_resilience.telemetry.scopes.error_type_of`). Exceptions are not recorded
as span events (the conventions advise against it); their messages appear, as the status description,
only with ``record_messages=True``.
``http.request.resend_count``, ``resilience.key``: see :mod:`otel_resilience.telemetry.scopes`.

Telemetry never breaks the application: every exception here is caught, counted in
:attr:`OtelListener.errors` and logged (``otel_resilience``, once a minute per call site at most).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final

from opentelemetry import metrics, trace
from opentelemetry._logs import LogRecord, get_logger
from opentelemetry.trace import Tracer

from otel_resilience.engine.closing import closing, later
from otel_resilience.engine.counting import Counter, CounterValue
from otel_resilience.engine.events import (
    HUB,
    EventArgs,
    EventKind,
    Outcome,
    TelemetryHub,
    TelemetrySource,
)
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.logging_rate import LogRate
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.validation import fail
from otel_resilience.telemetry import binding, providers
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.observables import Observables
from otel_resilience.telemetry.providers import VERSION
from otel_resilience.telemetry.scopes import (
    DURATIONS_OFF,
    SPANS_OFF,
    SWITCHED_OFF,
    AttemptScope,
    Scope,
    SourceInfos,
    current_key,
    enter_key,
    enter_switches,
    error_type_of,
    event_span,
    finish_span,
    leave,
    leave_closed,
    open_attempt_span,
    open_execution_span,
)

_SUCCESS: Final = Outcome.SUCCESS  # bound once: a member read off its enum class costs ~55 ns
_CANCELLED: Final = Outcome.CANCELLED

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextvars import Token

    from opentelemetry._logs import Logger, LoggerProvider
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["VERSION", "OtelListener"]

_LOG: Final = logging.getLogger("otel_resilience")


def _no_op(made: object, no_op: type) -> bool:
    """Whether a provider handed out the API's no-op tracer or meter (``no_op``): nothing to open.

    A no-op provider does, and so does an SDK provider disabled by ``OTEL_SDK_DISABLED=true`` (or a
    meter provider shut down): the listener then opens no span and makes no instrument, as with
    no SDK, rather than paying a context and the no-op calls on every execution. The class itself
    only: a subclass of it is a tracer or meter that does something of its own.
    """
    return type(made) is no_op


class OtelListener:
    """Shows what the patterns report as OpenTelemetry spans, span events, metrics and logs.

    Register it on the engine hub with :func:`otel_resilience.telemetry.instrument` (which also
    removes the previous one) rather than by hand.

    Args:
        tracer_provider: The tracer provider to use; ``None`` (or the API's proxy, see
            :func:`~otel_resilience.telemetry.providers.given`) for the global one, acquired
            lazily (a provider set after ``import otel_resilience`` is honoured).
        meter_provider: The meter provider to use; ``None`` for the global one, lazily.
        logger_provider: The logger provider for alert and error-pattern log records; ``None``
            for the global one (nothing is emitted until one is set).
        record_messages: Whether failed spans carry the exception message as their status
            description (default ``False``: messages may hold user data).
        spans: Whether sources open spans and add span events (default ``True``).
        record_duration: Whether sources record the duration histograms (default ``True``).
        in_process_histograms: Whether the duration histograms are kept in process (default
            ``False``: the SDK's; see :mod:`otel_resilience.telemetry.histograms`).
        hub: The hub whose error count is exported with this listener's own.

    Raises:
        TypeError: ``record_messages``, ``spans``, ``record_duration`` or
            ``in_process_histograms`` is not a bool, or a provider given lacks its getter
            (``get_tracer``, ``get_meter``, ``get_logger``: a provider of another signal).

    Attributes:
        errors: How many telemetry exceptions this listener caught (each one logged, rate-limited).
    """

    __slots__ = (
        "__weakref__",
        "_closed",
        "_dormant",
        "_errors",
        "_has_logger",
        "_hub",
        "_in_process",
        "_infos",
        "_instruments",
        "_lock",
        "_log_rate",
        "_logger",
        "_logger_pending",
        "_logger_provider",
        "_meter_pending",
        "_observables",
        "_pending",
        "_record_messages",
        "_successor",
        "_tracer",
        "_tracer_pending",
        "_zeroing",
    )

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
        record_messages: bool = False,
        spans: bool = True,
        record_duration: bool = True,
        in_process_histograms: bool = False,
        hub: TelemetryHub = HUB,
    ) -> None:
        for field, value in (
            ("record_messages", record_messages),
            ("spans", spans),
            ("record_duration", record_duration),
            ("in_process_histograms", in_process_histograms),
        ):
            if not isinstance(value, bool):  # "false" or 0 would be read by truth, silently
                raise fail("OtelListener", field, "a bool", value, kind=TypeError)
        for field, provider, getter, kind in (
            ("tracer_provider", tracer_provider, "get_tracer", "TracerProvider"),
            ("meter_provider", meter_provider, "get_meter", "MeterProvider"),
            ("logger_provider", logger_provider, "get_logger", "LoggerProvider"),
        ):
            if provider is not None and not callable(getattr(provider, getter, None)):
                # a logger provider is first used at the first alert, where its failure is swallowed
                raise fail(
                    "OtelListener", field, f"a {kind} (with {getter}) or None", provider, kind=TypeError
                )
        # The API's proxy (a getter's answer while none is set) stands for the global provider.
        tracer_provider = providers.given(tracer_provider)
        meter_provider = providers.given(meter_provider)
        logger_provider = providers.given(logger_provider)
        self._logger_provider = logger_provider
        self._in_process = in_process_histograms
        self._record_messages = record_messages
        self._hub = hub
        self._lock = fork_safe(threading.Lock())
        self._tracer: Tracer | None = None
        self._instruments: binding.Instruments | None = None
        self._observables: Observables | None = None
        self._zeroing: binding.Zeroing | None = None
        self._logger: Logger | None = None
        self._infos = SourceInfos(spans, record_duration)
        self._log_rate = LogRate()
        self._closed = False
        self._successor: weakref.ref[OtelListener] | None = None
        self._dormant = False
        self._errors = Counter()
        self._tracer_pending = self._meter_pending = True
        self._has_logger = logger_provider is not None
        self._logger_pending = not self._has_logger
        if tracer_provider is not None:
            self._use_tracer_provider(tracer_provider)
        if meter_provider is not None:
            self._use_meter_provider(meter_provider)
            self._zero_existing()
        self._pending = self._tracer_pending or self._meter_pending
        if self._pending:
            # Global providers set already are taken now, so that the live instances are
            # exported before any call; those set later, at the first execution or event after.
            self._acquire()

    # --- state -------------------------------------------------------------------------------

    errors = CounterValue("_errors", "How many telemetry exceptions this listener caught.")

    @property
    def active(self) -> bool:
        """Whether the listener still reports (``False`` after :meth:`close`)."""
        return not self._closed

    tracer = ReadOnly[Tracer | None]("_tracer", "The tracer in use, or ``None`` before a tracer provider.")

    @property
    def meter_ready(self) -> bool:
        """Whether instruments exist (a meter provider is known)."""
        return self._instruments is not None and not self._closed  # closed: its successor's, if any

    @property
    def total_errors(self) -> int:
        """Telemetry exceptions caught here plus those the hub caught from any listener."""
        return self.errors + self._hub.errors

    def close(self, *, successor: OtelListener | None = None) -> None:
        """Stop reporting: scopes are no longer opened and observable callbacks report nothing.

        Args:
            successor: The listener registered in its place on the hub, if any. An event still
                delivered here (a report that read the hub's routes before the swap, in another
                thread or in a listener before this one) goes to it, so it is shown once, never
                dropped; and an execution or attempt in flight here records its duration on the
                successor's instruments. With none, both are dropped (telemetry turned off).
        """
        with self._lock:
            # Before it is closed: a report that finds it closed hands over. Held weakly: a closed
            # listener (kept by its meter's callbacks) keeps no chain of its successors alive.
            self._successor = None if successor is None else weakref.ref(successor)
            self._closed = True
            self._tracer = None
            self._instruments = None if successor is None else successor._instruments
            self._tracer_pending = self._meter_pending = self._pending = False
        zeroing = self._zeroing
        if zeroing is not None:
            zeroing.stop()

    def take_observables(self) -> None:
        """Have the observable instruments of its meter read through this listener (it is registered).

        Until then they read through the listener made last on the meter, which may be another
        one: made by an overlapping :func:`~otel_resilience.telemetry.instrument`, or the one this
        replaced, if it acquired the global meter provider meanwhile. A listener whose meter
        provider is still to be acquired takes them when it acquires it.
        """
        with self._lock:  # as _adopt: a closed listener takes nothing
            observables = None if self._closed else self._observables
            if observables is not None:
                observables.claim()

    def failed(self, where: str) -> None:
        """Count one telemetry exception and log it (at most once a minute per ``where``).

        Call it from inside an ``except`` block. It takes no lock: it is called wherever telemetry
        fails, an observable callback included, which an SDK may run on the thread that holds the
        listener's lock (a collection while :meth:`_adopt` creates the instruments).
        """
        next(self._errors)  # exact from any thread (``+= 1`` could lose one)
        left_out = self._log_rate.due(where)
        if left_out is not None:
            _LOG.warning(
                "otel_resilience telemetry failed in %s (swallowed; %d not logged since the last report)",
                where,
                left_out,
                exc_info=True,
            )

    # --- providers ---------------------------------------------------------------------------

    def _use_tracer_provider(self, provider: TracerProvider) -> None:
        """Take ``provider``'s tracer (none when it hands out the no-op one, see :func:`_no_op`)."""
        self._tracer_pending = False
        tracer = provider.get_tracer(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
        if not _no_op(tracer, trace.NoOpTracer):
            self._tracer = tracer

    def _use_meter_provider(self, provider: MeterProvider) -> None:
        """Create the instruments on ``provider``'s meter (none on the no-op one, see :func:`_no_op`)."""
        self._meter_pending = False
        meter = provider.get_meter(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
        if _no_op(meter, metrics.NoOpMeter):
            return
        self._instruments = instruments = binding.Instruments(meter, in_process=self._in_process)
        self._observables = Observables(meter, self, instruments.in_process)
        self._zeroing = binding.Zeroing(instruments, self.failed)

    def _zero_existing(self) -> None:
        """Start every known counter series at 0, now for live instances and later for new ones."""
        zeroing = self._zeroing
        if zeroing is not None:
            zeroing.start()

    def _acquire(self) -> bool:
        """Acquire the global providers still pending, if set now; return whether anything records.

        Asks the public getters of the pending providers only (a global provider can be set
        once, so each is acquired once). A getter that raises (a provider named by an
        environment variable that cannot be loaded) is counted once, and not asked again: that
        signal's only (:meth:`_unloadable`), the other one's provider is still taken once set.
        """
        if self._tracer_pending:
            try:
                tracer_provider = providers.tracer_provider()
            except Exception:  # noqa: BLE001 - telemetry must never break the app
                self._unloadable("tracer")
                tracer_provider = None
        else:
            tracer_provider = None
        if self._meter_pending:
            try:
                meter_provider = providers.meter_provider()
            except Exception:  # noqa: BLE001
                self._unloadable("meter")
                meter_provider = None
        else:
            meter_provider = None
        if tracer_provider is not None or meter_provider is not None:
            try:
                self._adopt(tracer_provider, meter_provider)
            except Exception:  # noqa: BLE001
                self._pending = False
                self.failed("provider acquisition")
        return self._tracer is not None or self._instruments is not None

    def _unloadable(self, signal: str) -> None:
        """The getter of ``signal`` (``"tracer"`` or ``"meter"``) raised: count it, and ask it no more.

        Called inside the ``except`` block. The other signal stays pending: a provider of it that
        the application sets itself is still acquired at the next call.
        """
        with self._lock:
            if signal == "tracer":
                self._tracer_pending = False
            else:
                self._meter_pending = False
            self._pending = self._tracer_pending or self._meter_pending
        self.failed(f"{signal} provider acquisition")

    def _adopt(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
        """Use the global providers just found (unless closed meanwhile)."""
        zero = False
        with self._lock:
            if self._closed:
                return
            if tracer_provider is not None and self._tracer_pending:
                self._use_tracer_provider(tracer_provider)
            if meter_provider is not None and self._meter_pending:
                self._use_meter_provider(meter_provider)
                zero = True
            self._pending = self._tracer_pending or self._meter_pending
        if zero:
            self._zero_existing()

    def _no_logger(self) -> bool:
        """Whether no logger provider exists, given or global (alerts and patterns need one)."""
        if self._logger_pending:
            try:
                found = providers.logger_provider() is not None
            except Exception:  # noqa: BLE001
                found = False
                self._logger_pending = False
                self.failed("logger provider acquisition")
            if found:
                self._has_logger = True
                self._logger_pending = False
        return not self._has_logger

    def _rest(self) -> None:
        """With nothing to show, leave event delivery unless a logger provider wants events."""
        if self._no_logger():
            if not self._dormant:
                self._go_dormant()
        elif self._dormant:
            self._wake()  # a logger provider was set globally since it went dormant

    def _go_dormant(self) -> None:
        """Ask the hub to leave this listener out of event delivery (no SDK: nothing to show).

        Patterns then build no event arguments for it. :meth:`start_execution`, which the hub
        still calls on every execution, wakes it up as soon as a provider has been set.
        """
        self._dormant = True
        # Providers pending: start_execution returns None while nothing is set; the hub may skip it.
        check = providers.nothing_set if self._pending else None
        hub = self._hub
        hub.set_dormant(self, dormant=True, asleep_while=check)
        if not self._dormant:
            # Woken meanwhile by an execution that found a provider (:meth:`_wake`, which may have
            # told the hub before this did): awake it stays, else it would never be woken again.
            hub.set_dormant(self, dormant=False)

    def _wake(self) -> None:
        """Ask the hub to deliver events to this listener again."""
        self._dormant = False
        self._hub.set_dormant(self, dormant=False)

    # --- ExecutionListener ---------------------------------------------------------------

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        """Open the execution span (if tracing) and return its handle; ``None`` when idle.

        With no SDK, this is where the listener asks whether a provider has been set since the
        last execution (and wakes up if so); until then nothing is created. A keyed execution
        whose policy opted in makes its key current for its events (:func:`enter_key`); one whose
        source switched spans or durations off makes that current for its attempts and events
        (:func:`enter_switches`).

        Args:
            source: Who runs the execution (a pipeline or a pattern used alone).
            operation: The operation's name, used as the span name.

        Returns:
            A handle for :meth:`end_execution`, or ``None`` when nothing is recorded.
        """
        if self._pending:
            if self._dormant and providers.nothing_set():  # idle, and still nothing to look for
                if not self._hub.is_dormant(self):  # re-added: asked on every execution till told
                    self._go_dormant()
                return None
            if not self._acquire():
                self._rest()
                return None
        if self._dormant:
            self._wake()
        tracer = self._tracer
        if tracer is None and self._instruments is None:
            return None
        try:
            info = self._infos.get(source)
            scope = None
            if tracer and info.spans:
                try:
                    scope = open_execution_span(tracer, info, operation)
                except Exception:  # noqa: BLE001 - a span processor's, say: the duration is still recorded
                    self.failed("start_execution")
            if scope is None and info.metrics and self._instruments is not None:
                scope = info.metrics_only
            if info.key_attrs is not None:  # its events carry the key, even with no span nor duration
                scope = enter_key(info.metrics_only if scope is None else scope)
            if SWITCHED_OFF.get() == info.switched_off:  # the common case: no call made
                return scope
            return enter_switches(scope, info)
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
        scope: Scope = handle  # type: ignore[assignment] # start_execution's (no typing.cast: a call)
        if outcome is _CANCELLED and closing():
            self._end_closed(scope, self.end_execution, outcome, duration, error)
            return
        error_type = None
        try:
            error_type = error_type_of(outcome, error)
            info, instruments = scope.info, self._instruments
            if instruments is not None and info.metrics:
                success = outcome is _SUCCESS
                attrs = info.success_attrs if success else info.duration(outcome, error_type)
                instruments.duration.record(duration, attrs)
        except Exception:  # noqa: BLE001
            self.failed("end_execution")
        self._finish(scope, outcome, error_type, error, "end_execution")

    def start_attempt(
        self, source: TelemetrySource, operation: str, attempt: int, attempt_type: str | None = None
    ) -> object:
        """Open an attempt span, a child of the current (execution) span, and time the attempt.

        Args:
            source: The pattern that runs the attempts (a retry, a hedging).
            operation: The operation's name.
            attempt: The attempt number (1-based, unique in the execution). An untyped attempt 1
                opens no span (the execution span covers it); it is only timed.
            attempt_type: ``"original"`` or ``"hedge"``: a hedged execution's attempt, each with
                its span (the original too) and ``resilience.attempt.type``.

        Returns:
            A handle for :meth:`end_attempt`, or ``None`` when there is neither a span to open
            nor a meter to record the attempt's duration on.
        """
        if self._pending and not self._acquire():
            # No SDK: nothing to do. The hub asks only an awake listener, so it has this one
            # awake (re-added since it went dormant): back to sleep, the next attempts cost nothing.
            if self._no_logger():
                self._go_dormant()
            return None
        tracer, info = self._tracer, self._infos.get(source)
        off = SWITCHED_OFF.get()  # what the execution running it switched off holds for it too
        timed = self._instruments is not None and info.metrics and not off & DURATIONS_OFF
        spans = tracer is not None and info.spans and not off & SPANS_OFF
        spans = spans and (attempt > 1 or attempt_type is not None)
        if not timed and not spans:
            return None
        try:
            span: Span | None = None
            token: Token[Context] | None = None
            if spans and tracer is not None:
                try:
                    span, token = open_attempt_span(tracer, info, operation, attempt, attempt_type)
                except Exception:  # noqa: BLE001 - a span processor's, say: the attempt is still timed
                    self.failed("start_attempt")
            if span is None and not timed:
                return None
            return AttemptScope(info, span, token, time.perf_counter() if timed else 0.0, attempt_type)
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
        scope: AttemptScope = handle  # type: ignore[assignment] # start_attempt's (no typing.cast: a call)
        if outcome is _CANCELLED and closing():
            self._end_closed(scope, self.end_attempt, outcome, error)
            return
        error_type = None
        try:
            error_type = error_type_of(outcome, error)
            info, instruments = scope.info, self._instruments
            if instruments is not None and info.metrics and scope.started:
                instruments.attempt_duration.record(
                    time.perf_counter() - scope.started,
                    info.attempt_metric(outcome, error_type, scope.attempt_type),
                )
        except Exception:  # noqa: BLE001
            self.failed("end_attempt")
        self._finish(scope, outcome, error_type, error, "end_attempt")

    def _finish(
        self, scope: Scope, outcome: Outcome, error_type: str | None, error: BaseException | None, where: str
    ) -> None:
        """End a scope's span (after its duration, for exemplars) and restore the context it replaced."""
        try:
            span = scope.span
            if span is not None:
                finish_span(span, outcome, error_type, error, record_messages=self._record_messages)
        except Exception:  # noqa: BLE001
            self.failed(where)
        finally:
            leave(scope)

    @staticmethod
    def _end_closed(scope: Scope, end: Callable[..., None], *args: object) -> None:
        """End the scope of a call whose coroutine is being closed: on the thread of later work.

        The collector may close it on a thread that holds a lock of the SDK (an export, a
        measurement under way: :mod:`~otel_resilience.engine.closing`), which ending its span or
        recording its duration would take again. What the scope made current is restored here,
        where it was made current if anywhere (:func:`leave_closed`); ``end`` runs later, on
        the library's own thread, where nothing is left to restore.
        """
        leave_closed(scope)
        later(end, scope, *args)

    # --- TelemetryListener ---------------------------------------------------------------

    def wants(self, source: TelemetrySource, event: EventKind) -> bool:  # noqa: ARG002 - the hub's filter signature
        """Whether the binding table shows ``event``: a kind of a pattern's own with no row is not sent here.

        Asked once per kind of source and event (the hub keeps the answer), so a kind nothing
        here can show costs its reports no call of this listener, and no failure.
        """
        return sc.has_binding(event._value_)

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        """Do what the event's row of the binding table says: metrics, span event, log record.

        Args:
            source: Who reported it.
            event: What happened.
            args: The event's typed arguments.
        """
        if self._pending and not self._acquire() and self._no_logger():
            self._go_dormant()  # the hub calls it, so the hub has it awake (re-added)
            return  # the no-SDK fast path, as in start_execution
        # Read before the check: :meth:`close` marks it closed before it lets them go, so what is
        # read here while it is open was in use, and an event it reaches once closed is handed over.
        instruments, tracer = self._instruments, self._tracer
        if self._closed:
            successor = None if self._successor is None else self._successor()
            if successor is not None:  # none: telemetry turned off (or the successor is gone too)
                successor.on_event(source, event, args)
            return
        try:
            info = self._infos.get(source)
            plan = binding.plan(event, args)
            values = binding.event_values(plan, args)
            if instruments is not None:
                key = info.key_attrs or current_key(info.policy)  # a key's own source says its key
                binding.record_metrics(instruments, plan, info, values, key)
            span = event_span(tracer, info)
            if span is not None:
                binding.add_span_event(span, plan, info, values, args)
            if plan.log is not None:
                self._emit_log(binding.log_record(plan.log, plan, info, values, args))
        except Exception:  # noqa: BLE001
            self.failed(f"on_event({event.value})")

    def _emit_log(self, record: LogRecord) -> None:
        """Emit a log record with an event name (a no-op until a logger provider is set)."""
        logger = self._logger
        if logger is None:
            # Without a provider given, a proxy logger: it forwards to the global one once set.
            provider = self._logger_provider
            get = get_logger if provider is None else provider.get_logger
            logger = self._logger = get(sc.SCOPE_NAME, VERSION, schema_url=sc.SCHEMA_URL)
        logger.emit(record)
