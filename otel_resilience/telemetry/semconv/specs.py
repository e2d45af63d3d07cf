"""The shapes of the registry's entries: instruments, attributes, spans, events, bindings.

What an instrument, attribute, span or event is, and how one engine event is bound to them.
These are plain frozen dataclasses (no OpenTelemetry import); :mod:`.catalog` and
:mod:`.bindings` hold the entries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "AttributeSpec",
    "EventBinding",
    "InstrumentKind",
    "InstrumentSpec",
    "LogBinding",
    "LogEventSpec",
    "MetricBinding",
    "SpanEventSpec",
    "SpanSpec",
    "ZeroSeries",
]


class InstrumentKind(enum.Enum):
    """The kind of an OpenTelemetry instrument. Values are shown in the docs."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    OBSERVABLE_COUNTER = "observable counter"
    OBSERVABLE_GAUGE = "observable gauge"

    @property
    def is_counter(self) -> bool:
        """Whether the instrument is a monotonic sum (exported with ``_total``)."""
        return self in {InstrumentKind.COUNTER, InstrumentKind.OBSERVABLE_COUNTER}


@dataclass(frozen=True, slots=True)
class AttributeSpec:
    """One attribute key.

    Attributes:
        key: The attribute key.
        type: ``"string"``, ``"int"`` or ``"double"``.
        description: What it holds.
        values: The allowed values of a closed enumeration, or ``()`` for free (bounded) values.
        unit: The unit of a numeric attribute (``"s"``), or ``""``.
    """

    key: str
    type: str
    description: str
    values: tuple[str, ...] = ()
    unit: str = ""


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One metric instrument.

    Attributes:
        name: The instrument name (``resilience.*``).
        kind: The instrument kind.
        unit: The UCUM unit (``s``, ``1``) or an annotation (``{call}``).
        description: What it measures.
        attributes: Keys always present on its points.
        conditional: Keys present only on some points (``error.type`` on failures).
        boundaries: Explicit histogram bucket boundaries (histograms only).
    """

    name: str
    kind: InstrumentKind
    unit: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class _Traced:
    """The fields a span and a span event share.

    Attributes:
        name: The span or span event name.
        description: When it is opened or added (and, for a span, what its status means).
        attributes: Keys always present.
        conditional: Keys present only in some cases.
    """

    name: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpanSpec(_Traced):
    """One kind of span: its name (``{operation}`` stands for the operation's name), keys and kind.

    Attributes:
        kind: The span kind (every span of the library is ``INTERNAL``).
    """

    kind: str = "INTERNAL"


@dataclass(frozen=True, slots=True)
class SpanEventSpec(_Traced):
    """One span event, added to the current span: its name, when it is added, and its keys."""


@dataclass(frozen=True, slots=True)
class LogEventSpec:
    """One log record with an event name (emitted when a logger provider is configured).

    Attributes:
        name: The event name (``LogRecord.event_name``).
        severity: The severity text (the severity number follows it).
        description: When it is emitted; what the body holds.
        attributes: Keys always present.
        conditional: Keys present only in some cases (those of the span event it mirrors).
    """

    name: str
    severity: str
    description: str
    attributes: tuple[str, ...]
    conditional: tuple[str, ...] = ()


# --- bindings: what the OpenTelemetry listener does with each engine event -------------------


@dataclass(frozen=True, slots=True)
class MetricBinding:
    """One synchronous instrument an event moves.

    The point carries the instrument's attributes (:attr:`InstrumentSpec.attributes` and
    :attr:`InstrumentSpec.conditional`): ``resilience.policy``, ``resilience.pattern`` and
    ``resilience.name`` from the reporting source, the others from the event; a conditional
    one is left out when the event has no value for it.

    Attributes:
        instrument: The instrument name (a counter or a histogram of the catalog).
        value: The event attribute whose value a histogram records; ``""`` for a counter, which
            is added 1.
    """

    instrument: str
    value: str = ""


@dataclass(frozen=True, slots=True)
class LogBinding:
    """The log record an event also emits (when a logger provider is configured).

    Attributes:
        spec: The log event (name, documented severity, attributes).
        body: The body, a :meth:`str.format` template over the event's field names.
        severity_field: The event field whose value picks the severity through
            ``LOG_SEVERITIES``; ``""`` when the severity is ``spec.severity`` itself.
        body_when_set: ``(field, template)`` pairs: each template is appended to the body when
            the event's ``field`` is not ``None`` (a conditional attribute the body names too).
    """

    spec: LogEventSpec
    body: str
    severity_field: str = ""
    body_when_set: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EventBinding:
    """What the OpenTelemetry listener does with one kind of engine event: one row of the table.

    The event's own ``ATTRIBUTES`` (a class variable of its arguments class in
    :mod:`otel_resilience.engine.events`) name the fields it is described by; :attr:`keys` gives
    each of them its attribute key. Values that are ``None`` are left out everywhere.

    Attributes:
        event: The engine event kind (the value of an ``Event`` member).
        keys: ``(event field, attribute key)`` pairs, one for each of the event's attributes.
        span_event: The span event added to the current recording span, which carries
            ``resilience.pattern``, ``resilience.name`` and every attribute of the event.
        metrics: The synchronous instruments the event moves.
        log: The log record it also emits, if any (with the span event's attributes that the
            log spec lists).
        dependency_error: Whether the event names the dependency's last error on the current
            span (``resilience.dependency.error.type``: the event's ``dependency_error`` field
            when it has one, else from ``error.type``, unless the event's ``rejection`` field
            says its error is a rejection).
    """

    event: str
    keys: tuple[tuple[str, str], ...]
    span_event: SpanEventSpec
    metrics: tuple[MetricBinding, ...] = ()
    log: LogBinding | None = None
    dependency_error: bool = False


@dataclass(frozen=True, slots=True)
class ZeroSeries:
    """Counter series that exist, at 0, from the moment an instance of a pattern kind exists.

    A counter series born at its first increment is born at 1, and ``increase()`` never sees
    that first event; so every series whose labels are known in advance is added 0 as soon as
    its pattern exists. Its ``resilience.policy``, ``resilience.pattern`` and ``resilience.name``
    (those the instrument carries) come from the instance.

    Attributes:
        pattern: The pattern kind (``TelemetrySource.kind``).
        instrument: The counter.
        labels: The other attributes of each series, as ``(key, value)`` pairs.
        registry: ``"pipelines"``: each strategy of that kind in a pipeline, once the pipeline
            is registered; ``"breakers"``: each circuit breaker, once it is created;
            ``"policies"``: each named policy (``manager.policy``), once it is created.
        config: A configuration attribute the strategy must have set (not ``None``) for the
            series to exist; ``""`` when none.
        equals: The value :attr:`config` must have, or ``None`` for any value but ``None``.
    """

    pattern: str
    instrument: str
    labels: tuple[tuple[tuple[str, str], ...], ...]
    registry: str = "pipelines"
    config: str = ""
    equals: str | None = None
