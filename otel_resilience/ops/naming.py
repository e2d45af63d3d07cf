"""Prometheus names of our instruments, derived from the registry in one place.

The dashboards and rules never spell a metric or label name: they call :func:`series` and
:func:`label`, which read :mod:`otel_resilience.telemetry.semconv`, so a renamed instrument
either renames every query or fails the generator.

Two exporters turn our instruments into Prometheus series:

* the OpenTelemetry Python Prometheus exporter (a ``/metrics`` endpoint in the service):
  :func:`otel_resilience.telemetry.semconv.prometheus_series`;
* the Collector's ``prometheus`` and ``prometheusremotewrite`` exporters, which translate OTLP
  with Prometheus' ``otlptranslator`` rules: :func:`collector_series`. They agree with the Python
  exporter except that a *gauge* whose unit is ``1`` gains a ``_ratio`` suffix; the shipped
  Collector configs reset such units (see :data:`COLLECTOR_UNIT_OVERRIDES`) so that both routes
  give the same names.

Labels are attribute keys with every run of characters outside ``[a-zA-Z0-9]`` replaced by
``_`` (``resilience.policy`` -> ``resilience_policy``). Prometheus adds ``job`` and
``instance`` when it scrapes; the Collector's exporters derive them from the resource
attributes ``service.name`` (with ``service.namespace``) and ``service.instance.id``. The
service is therefore always the ``job`` label (:data:`SERVICE_LABEL`).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from otel_resilience.telemetry import semconv as sc

__all__ = [
    "ALERTS_SERIES",
    "ALERT_SERIES_LABELS",
    "BUCKET_LABEL",
    "COLLECTOR_UNIT_OVERRIDES",
    "INSTANCE_LABEL",
    "SCRAPE_LABELS",
    "SERVICE_LABEL",
    "collector_name",
    "collector_series",
    "derived_labels",
    "derived_series",
    "label",
    "one_of",
    "series",
    "series_labels",
    "value",
]

SERVICE_LABEL: Final = "job"
"""The label that names the service: set by Prometheus from the scrape job, or by the
Collector's exporters from ``service.namespace``/``service.name``."""
INSTANCE_LABEL: Final = "instance"
"""The label that names one process (scrape target, or ``service.instance.id``)."""
BUCKET_LABEL: Final = "le"
"""The bucket bound label of histogram ``_bucket`` series."""
SCRAPE_LABELS: Final = frozenset({SERVICE_LABEL, INSTANCE_LABEL})
"""Labels every scraped series carries besides its attributes."""
ALERTS_SERIES: Final = "ALERTS"
"""The series Prometheus synthesises for its own alerting rules (pending and firing)."""
ALERT_SERIES_LABELS: Final = frozenset({"alertname", "alertstate", "severity"})
"""Labels of :data:`ALERTS_SERIES` besides the alert's own labels."""

_LABEL_INVALID: Final = re.compile(r"[^a-zA-Z0-9]+")
_NAME_TOKEN_SPLIT: Final = re.compile(r"[^a-zA-Z0-9:]+")
_UNDERSCORES: Final = re.compile(r"__+")
COLLECTOR_UNIT_OVERRIDES: Final = MappingProxyType(
    {
        spec.name: ""
        for spec in sc.INSTRUMENTS
        if spec.unit == "1" and spec.kind is sc.InstrumentKind.OBSERVABLE_GAUGE
    }
)
"""Units the shipped Collector configs reset before the Prometheus exporters, by instrument.

The Collector appends ``_ratio`` to gauges with unit ``1``; the Python exporter does not. An
empty unit gives both the same name, so the configs set it (an OTTL ``transform``). Derived
from the registry: empty once no gauge uses unit ``1``."""


def label(key: str) -> str:
    """Return the Prometheus label of the attribute ``key`` (which must be in the registry).

    Args:
        key: An attribute key of :data:`otel_resilience.telemetry.semconv.ATTRIBUTES`.

    Returns:
        The label name, e.g. ``resilience_policy`` for ``resilience.policy``.

    Raises:
        KeyError: If ``key`` is not a registered attribute.
    """
    sc.attribute(key)
    return _sanitize_label(key)


def _sanitize_label(key: str) -> str:
    if key and key[0].isdigit():
        key = "_" + key[1:]
    return _LABEL_INVALID.sub("_", key)


def series(instrument: str, suffix: str = "") -> str:
    """Return the series name the Prometheus exporters publish for one instrument.

    Args:
        instrument: An instrument name of :data:`otel_resilience.telemetry.semconv.INSTRUMENTS`.
        suffix: For a histogram, which series: ``"bucket"``, ``"sum"`` or ``"count"``.

    Returns:
        The series name, e.g. ``resilience_retries_total``.

    Raises:
        KeyError: If no instrument has that name.
        ValueError: If ``suffix`` does not pick exactly one series of the instrument.
    """
    names = sc.prometheus_series(sc.instrument(instrument))
    wanted = [n for n in names if not suffix or n.endswith("_" + suffix)]
    if len(wanted) != 1:
        msg = f"series({instrument!r}, suffix={suffix!r}) must pick one of {names}, got {wanted}"
        raise ValueError(msg)
    return wanted[0]


def value(key: str, item: str) -> str:
    """Return ``item`` if it is one of the values the registry allows for attribute ``key``.

    Raises:
        KeyError: If ``key`` is not a registered attribute.
        ValueError: If the attribute is not an enumeration or ``item`` is not one of its values.
    """
    allowed = sc.attribute(key).values
    if item not in allowed:
        msg = f"{item!r} is not a value of {key!r} (allowed: {allowed})"
        raise ValueError(msg)
    return item


def one_of(key: str, *items: str) -> str:
    """Return a regex matching any of ``items``, each checked with :func:`value`."""
    return "|".join(value(key, item) for item in items)


def derived_series() -> frozenset[str]:
    """Return every series name derived from the registry (the Python exporter's names)."""
    return frozenset(name for spec in sc.INSTRUMENTS for name in sc.prometheus_series(spec))


def derived_labels() -> frozenset[str]:
    """Return the label of every registered attribute."""
    return frozenset(_sanitize_label(spec.key) for spec in sc.ATTRIBUTES)


def series_labels() -> dict[str, frozenset[str]]:
    """Return, for every derived series, the labels it can carry.

    That is the instrument's attributes (always present or conditional), :data:`SCRAPE_LABELS`,
    and ``le`` on histogram ``_bucket`` series.
    """
    found: dict[str, frozenset[str]] = {}
    for spec in sc.INSTRUMENTS:
        labels = {_sanitize_label(key) for key in (*spec.attributes, *spec.conditional)} | SCRAPE_LABELS
        for name in sc.prometheus_series(spec):
            found[name] = frozenset(labels | {BUCKET_LABEL} if name.endswith("_bucket") else labels)
    return found


def _clean_unit(unit: str) -> str:
    return _UNDERSCORES.sub("_", re.sub(r"[^a-zA-Z0-9:]", "_", unit)).removeprefix("_")


def collector_name(spec: sc.InstrumentSpec, *, unit: str | None = None) -> str:
    """Return the metric family name the Collector's Prometheus exporters give ``spec``.

    A port of ``otlptranslator``'s ``normalizeName`` (strategy
    ``UnderscoreEscapingWithSuffixes``, the exporters' default): the name is split into tokens
    at every character outside ``[a-zA-Z0-9:]``, the unit becomes a suffix unless a token
    already spells it (``{annotations}`` and ``1`` add none), monotonic sums end in ``total``,
    and gauges with unit ``1`` end in ``ratio``.

    Args:
        spec: The instrument.
        unit: The unit as it reaches the exporter, when a processor changed it (default: the
            instrument's own unit).

    Returns:
        The name; for a counter it includes ``_total``, for a histogram it is the base of
        ``_bucket``/``_sum``/``_count``.
    """
    unit = spec.unit if unit is None else unit
    tokens = [token for token in _NAME_TOKEN_SPLIT.split(spec.name) if token]
    main, _, per = unit.partition("/")
    main = main.strip()
    main_word = "" if not main or "{" in main or "}" in main else sc.UNIT_WORDS.get(main, main)
    per = per.strip()
    per_word = "" if not per or "{" in per or "}" in per else sc.PER_UNIT_WORDS.get(per, per)
    main_word = _clean_unit(main_word)
    per_word = _clean_unit(f"per_{per_word}") if per_word else ""
    if main_word in tokens:
        main_word = ""
    per_word = "" if per_word == "per_" else per_word.removesuffix("_")
    if per_word in tokens:
        per_word = ""
    if per_word:
        main_word = main_word.removesuffix("_")
    tokens += [word for word in (main_word, per_word) if word]
    if spec.kind.is_counter:
        tokens = [*(t for t in tokens if t != "total"), "total"]
    if unit == "1" and spec.kind is sc.InstrumentKind.OBSERVABLE_GAUGE:
        tokens = [*(t for t in tokens if t != "ratio"), "ratio"]
    name = "_".join(tokens)
    return "_" + name if name and name[0].isdigit() else name


def collector_series(spec: sc.InstrumentSpec, *, unit: str | None = None) -> tuple[str, ...]:
    """Return the series names a scrape of the Collector's ``prometheus`` exporter shows for ``spec``.

    Args:
        spec: The instrument.
        unit: The unit as it reaches the exporter, when a processor changed it.

    Returns:
        ``(name,)`` for counters and gauges; the ``_bucket``/``_sum``/``_count`` series for
        histograms.
    """
    name = collector_name(spec, unit=unit)
    if spec.kind is sc.InstrumentKind.HISTOGRAM:
        return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
    return (name,)
