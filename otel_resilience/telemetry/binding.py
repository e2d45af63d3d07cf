"""The OpenTelemetry side of the binding table: instruments, and what an event or a new instance moves.

The table is :data:`otel_resilience.telemetry.semconv.EVENTS`; this module reads it, with no
code per kind of event:

* :class:`Instruments` creates every synchronous instrument of the catalog on a meter;
* :func:`plan` resolves an event's row against the fields its arguments class names
  (``ATTRIBUTES``), once per kind; :func:`event_values`, :func:`record_metrics`,
  :func:`add_span_event` and :func:`log_record` then do what the row says;
* :class:`Zeroing` adds 0 to the series of
  :data:`otel_resilience.telemetry.semconv.ZERO_SERIES` of every instance, live or new.
"""

from __future__ import annotations

import threading
import time
import weakref
from math import isfinite
from typing import TYPE_CHECKING, Final, cast

from opentelemetry._logs import LogRecord, SeverityNumber

from otel_resilience.engine.events import EventArgs, EventKind, key_attribute
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import BREAKERS, PIPELINES, POLICIES
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.histograms import InProcessHistogram, of_meter

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.metrics import Counter, Histogram, Meter
    from opentelemetry.trace import Span

    from otel_resilience.engine.registry import Named
    from otel_resilience.telemetry.scopes import Attrs, SourceInfo

__all__ = [
    "Instruments",
    "Plan",
    "Zeroing",
    "add_span_event",
    "event_values",
    "key_attributes",
    "keyed",
    "log_record",
    "plan",
    "record_metrics",
]

_SOURCE_KEYS: Final = (sc.POLICY, sc.PATTERN, sc.NAME)
"""The attributes a point takes from its source rather than from the event."""
_KEYED: Final = (sc.KEY, sc.METRIC_OVERFLOW)
"""The attributes a point takes from the keyed execution it happens in (where the policy opted in)."""
_UNSET: Final = object()
"""An event's missing ``dependency_error`` field (``None`` is a value: it names none)."""


class Instruments:
    """The synchronous instruments of the catalog, created once per meter.

    Args:
        meter: The meter to create them on.
        in_process: Whether the two duration histograms are kept in process
            (:class:`~otel_resilience.telemetry.histograms.InProcessHistogram`, one per meter
            and name whatever the listener, exported by the observable counters of
            :data:`~otel_resilience.telemetry.semconv.IN_PROCESS_HISTOGRAMS`) rather than
            created on the meter.

    Attributes:
        counters: The counters, by name.
        histograms: The histograms created on the meter, by name.
        in_process: The histograms kept in process, by name (empty unless ``in_process``).
        duration: The execution duration histogram (the one a successful call records).
        attempt_duration: The attempt duration histogram.
    """

    __slots__ = ("attempt_duration", "counters", "duration", "histograms", "in_process")

    def __init__(self, meter: Meter, *, in_process: bool = False) -> None:
        self.counters: dict[str, Counter] = {}
        self.histograms: dict[str, Histogram] = {}
        self.in_process: dict[str, InProcessHistogram] = {}
        for spec in sc.INSTRUMENTS:
            if spec.kind is sc.InstrumentKind.COUNTER:
                self.counters[spec.name] = meter.create_counter(
                    spec.name, unit=spec.unit, description=spec.description
                )
            elif in_process and spec.name in sc.IN_PROCESS_HISTOGRAMS:
                self.in_process[spec.name] = of_meter(meter, spec.name, spec.boundaries)
            elif spec.kind is sc.InstrumentKind.HISTOGRAM:
                self.histograms[spec.name] = meter.create_histogram(
                    spec.name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.boundaries),
                )
        recorders: dict[str, Histogram | InProcessHistogram] = {**self.histograms, **self.in_process}
        self.duration = recorders[sc.EXECUTION_DURATION]
        self.attempt_duration = recorders[sc.ATTEMPT_DURATION]


def _keys(instrument: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split an instrument's attributes into those of the source and those of the event."""
    spec = sc.instrument(instrument)
    keys = tuple(k for k in (*spec.attributes, *spec.conditional) if k not in _KEYED)
    return tuple(k for k in keys if k in _SOURCE_KEYS), tuple(k for k in keys if k not in _SOURCE_KEYS)


def keyed(instrument: str) -> bool:
    """Whether ``instrument``'s points carry the key of a keyed execution (where its policy opted in)."""
    return sc.KEY in sc.instrument(instrument).conditional


def key_attributes(key: str) -> Attrs:
    """Return the metric attributes of a key: ``resilience.key``, and the overflow mark for ``_OTHER``.

    A key longer than :data:`~otel_resilience.engine.events.MAX_ATTRIBUTE_LENGTH` is cut, as on
    the execution span (:func:`~otel_resilience.engine.events.key_attribute`).
    """
    if key == sc.KEY_OVERFLOW:
        return {sc.KEY: key, sc.METRIC_OVERFLOW: True}
    return {sc.KEY: key_attribute(key)}


class Plan:
    """One row of the binding table, resolved for the arguments class of its event.

    Attributes:
        args_type: The arguments class it was resolved for.
        fields: ``(field, attribute key)`` pairs, in the order the event names its attributes.
        metrics: ``(instrument, recorded value key or "", source keys, event keys, keyed)`` per
            metric (``keyed``: it carries the key of a keyed execution, where opted in).
        span_event: The span event's name.
        log: The log record's binding, if any.
        log_keys: The attributes the log record carries.
        dependency_error: Whether the event names the dependency's last error on the span.
    """

    __slots__ = ("args_type", "dependency_error", "fields", "log", "log_keys", "metrics", "span_event")

    def __init__(self, row: sc.EventBinding, args_type: type[EventArgs]) -> None:
        keys = dict(row.keys)
        self.args_type = args_type
        self.fields = tuple((field, keys[field]) for field in args_type.ATTRIBUTES)
        self.metrics = tuple(
            (m.instrument, m.value, *_keys(m.instrument), keyed(m.instrument)) for m in row.metrics
        )
        self.span_event = row.span_event.name
        self.log = row.log
        spec = row.log.spec if row.log is not None else None
        self.log_keys = frozenset((*spec.attributes, *spec.conditional) if spec is not None else ())
        self.dependency_error = row.dependency_error


_PLANS: Final[dict[EventKind, Plan]] = {}


def plan(event: EventKind, args: EventArgs) -> Plan:
    """Return the (cached) plan of ``event`` reported with arguments of the class of ``args``.

    Raises:
        KeyError: If the table has no row for ``event`` or names no key for one of its fields.
    """
    found = _PLANS.get(event)
    if found is None or found.args_type is not type(args):
        found = _PLANS[event] = Plan(sc.binding(event._value_), type(args))
    return found


def event_values(plan: Plan, args: EventArgs) -> Attrs:
    """Return the event's attributes by key, in its own order, leaving out ``None`` values.

    A number that is not finite is left out too: it says "no such length" (``inf``: a breaker
    forced open until reset), and exporters refuse it (JSON has no ``inf``, Prometheus reads
    no bucket for it). The one rule of every event's values: its span event, metrics and log
    record read them here.
    """
    values: Attrs = {}
    for field, key in plan.fields:
        value = getattr(args, field)
        if value is not None and (type(value) is not float or isfinite(value)):
            values[key] = value
    return values


def record_metrics(
    instruments: Instruments, plan: Plan, info: SourceInfo, values: Attrs, key: Attrs | None = None
) -> None:
    """Add 1 to each counter of the event, record each histogram's value.

    ``key``: the key attributes of the keyed execution the event happens in (see
    :func:`key_attributes`), added to the instruments that carry them; ``None`` for none.
    """
    source = info.source_values
    for name, value_key, source_keys, event_keys, carries_key in plan.metrics:
        attrs = {key: source[key] for key in source_keys}
        for attr in event_keys:
            value = values.get(attr)
            if value is not None:
                attrs[attr] = value
        if key is not None and carries_key:
            attrs.update(key)
        if value_key:
            recorded = values.get(value_key)
            if recorded is not None:  # left out when not finite (:func:`event_values`): no point
                instruments.histograms[name].record(cast("float", recorded), attrs)
        else:
            instruments.counters[name].add(1, attrs)


def add_span_event(span: Span, plan: Plan, info: SourceInfo, values: Attrs, args: EventArgs) -> None:
    """Add the event to ``span`` (a recording span), with the source's names and its values.

    An event that names the dependency's last error (``plan.dependency_error``) sets it on the
    span: its own ``dependency_error`` when it has that field (a recovery's, which may name a
    later error than the one it acted on, or none), else its ``error.type``, unless its error is
    a rejection (its ``rejection``, which the reporting pattern decides by the outcomes' one
    rule): a rejection is not the dependency's error, so an execution whose last attempt was
    rejected still names what the dependency raised before.
    """
    if plan.dependency_error:
        error_type = getattr(args, "dependency_error", _UNSET)
        if error_type is _UNSET:
            error_type = None if getattr(args, "rejection", False) else values.get(sc.ERROR_TYPE)
        if isinstance(error_type, str):
            span.set_attribute(sc.DEPENDENCY_ERROR_TYPE, error_type)
    span.add_event(plan.span_event, {**info.event_attrs, **values})


def log_record(log: sc.LogBinding, plan: Plan, info: SourceInfo, values: Attrs, args: EventArgs) -> LogRecord:
    """Return the log record ``log`` (the plan's) of the event, stamped with the time it is made.

    An event's record carries the time it happened (now, on the wall clock), as the OpenTelemetry
    SDK stamps its events: without one, OTLP sends ``time_unix_nano`` 0, "unknown", and a backend
    has only the time a processor observed it.
    """
    fields = {field: getattr(args, field) for field, _ in plan.fields}
    severity = log.spec.severity
    if log.severity_field:
        severity = sc.LOG_SEVERITIES.get(fields[log.severity_field], sc.DEFAULT_LOG_SEVERITY)
    number = SeverityNumber[severity]
    attrs = {key: value for key, value in {**info.event_attrs, **values}.items() if key in plan.log_keys}
    body = log.body.format_map(fields)
    for field, template in log.body_when_set:
        if fields[field] is not None:
            body += template.format_map(fields)
    return LogRecord(
        timestamp=time.time_ns(),
        severity_number=number,
        severity_text=number.name,
        body=body,
        attributes=attrs,
        event_name=log.spec.name,
    )


# --- zero-initialised series -----------------------------------------------------------------


def _zero_rows() -> dict[tuple[str, str], tuple[sc.ZeroSeries, ...]]:
    rows: dict[tuple[str, str], tuple[sc.ZeroSeries, ...]] = {}
    for row in sc.ZERO_SERIES:
        key = (row.registry, row.pattern)
        rows[key] = (*rows.get(key, ()), row)
    return rows


_ZERO_ROWS: Final = _zero_rows()


def _zero(
    instruments: Instruments, registry: str, source: Attrs, config: object, key: Attrs | None = None
) -> None:
    """Add 0 to every known series of one instance (``source`` holds its kind and names).

    ``key``: the key attributes of a keyed policy's pipeline (where it opted in), which the
    series of the instruments that carry a key get too.
    """
    for row in _ZERO_ROWS.get((registry, cast("str", source[sc.PATTERN])), ()):
        if row.config:
            value = getattr(config, row.config, None)
            if value is None or (row.equals is not None and value != row.equals):
                continue
        counter = instruments.counters[row.instrument]
        source_keys, _ = _keys(row.instrument)
        base = {attr: source[attr] for attr in source_keys}
        if key is not None and keyed(row.instrument):
            base.update(key)
        for labels in row.labels:
            counter.add(0, {**base, **dict(labels)})


def _zero_breaker(instruments: Instruments, breaker: Named) -> None:
    """Add 0 to every series known in advance of a circuit breaker (its transitions)."""
    _zero(instruments, "breakers", {sc.PATTERN: "circuit_breaker", sc.NAME: breaker.name}, None)


def _zero_policy(instruments: Instruments, policy: Named) -> None:
    """Add 0 to every series known in advance of a named policy (its reload outcomes)."""
    values: Attrs = {sc.POLICY: policy.name, sc.PATTERN: "pipeline", sc.NAME: policy.name}
    _zero(instruments, "policies", values, None)


def _zero_pipeline(instruments: Instruments, pipeline: Named) -> None:
    """Add 0 to every series known in advance of each strategy of ``pipeline``."""
    if not isinstance(pipeline, Pipeline):
        return
    source = pipeline.telemetry.source
    policy = source.pipeline or source.name
    key = None if source.metric_key is None else key_attributes(source.metric_key)
    for strategy in pipeline.strategies:
        values: Attrs = {sc.POLICY: policy, sc.PATTERN: strategy.kind, sc.NAME: strategy.name}
        _zero(instruments, "pipelines", values, strategy.config, key)


class Zeroing:
    """Starts the known series of every breaker, pipeline and named policy at 0 on one set of instruments.

    A counter series that appears at its first increment is born at 1, and ``increase()``
    never sees that first event: the first trip of a breaker would stay invisible. So every
    series of :data:`otel_resilience.telemetry.semconv.ZERO_SERIES` is added 0 as soon as its
    pattern exists: :meth:`start` does it for the live instances and, until :meth:`stop`, for
    every new one (registry ``on_added`` callbacks). Bounded (known label sets only) and off
    the hot path: it runs when an instance is registered.

    Args:
        instruments: Where the series are.
        failed: Counts and logs an exception (called inside an ``except`` block).
    """

    __slots__ = ("__weakref__", "_failed", "_instruments")

    def __init__(self, instruments: Instruments, failed: Callable[[str], None]) -> None:
        self._instruments = instruments
        self._failed = failed

    def start(self) -> None:
        """Zero the series of the live instances, and of every new one until :meth:`stop`."""
        with _HOOK_LOCK:
            _STARTED.add(self)
        _hook_registries()
        for breaker in BREAKERS.items():
            self.breaker(breaker)
        for pipeline in PIPELINES.items():
            self.pipeline(pipeline)
        for policy in POLICIES.items():
            self.policy(policy)

    def stop(self) -> None:
        """Leave new instances alone."""
        with _HOOK_LOCK:
            _STARTED.discard(self)

    def breaker(self, breaker: Named) -> None:
        """Add 0 to every transition series of ``breaker``; never raises."""
        try:
            _zero_breaker(self._instruments, breaker)
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            self._failed("zero breaker series")

    def pipeline(self, pipeline: Named) -> None:
        """Add 0 to the known series of every strategy of ``pipeline``; never raises."""
        try:
            _zero_pipeline(self._instruments, pipeline)
        except Exception:  # noqa: BLE001
            self._failed("zero pipeline series")

    def policy(self, policy: Named) -> None:
        """Add 0 to the known series of a named policy; never raises."""
        try:
            _zero_policy(self._instruments, policy)
        except Exception:  # noqa: BLE001
            self._failed("zero policy series")


_STARTED: Final[weakref.WeakSet[Zeroing]] = weakref.WeakSet()
"""The started :class:`Zeroing`, told about every breaker and pipeline created."""
_HOOK_LOCK: Final = fork_safe(threading.Lock())
_hooked: list[bool] = []


def _hook_registries() -> None:
    """Register (once per process) the registry callbacks that zero-initialise new instances."""
    with _HOOK_LOCK:
        if _hooked:
            return
        _hooked.append(True)
    BREAKERS.on_added(_breaker_added)
    PIPELINES.on_added(_pipeline_added)
    POLICIES.on_added(_policy_added)


def _started() -> tuple[Zeroing, ...]:
    """A snapshot of the started zeroers (taken under the lock)."""
    with _HOOK_LOCK:
        return tuple(_STARTED)


def _breaker_added(breaker: Named) -> None:
    for zero in _started():
        zero.breaker(breaker)


def _pipeline_added(pipeline: Named) -> None:
    for zero in _started():
        zero.pipeline(pipeline)


def _policy_added(policy: Named) -> None:
    for zero in _started():
        zero.policy(policy)
