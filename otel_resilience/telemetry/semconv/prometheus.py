"""Prometheus names, as the OpenTelemetry Prometheus exporter derives them from an instrument.

:func:`prometheus_series` derives the series names that the exporter publishes for an
instrument (dots become underscores, the unit becomes a suffix, counters gain ``_total`` and
histograms ``_bucket``/``_sum``/``_count``); a test checks it against a real scrape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from otel_resilience.telemetry.semconv.specs import InstrumentKind, InstrumentSpec

__all__ = ["PER_UNIT_WORDS", "UNIT_WORDS", "prometheus_name", "prometheus_series"]

_INVALID_NAME_CHARS: Final = re.compile(r"[^a-zA-Z0-9:]+")
_UNIT_ANNOTATION: Final = re.compile(r"{.*}")
UNIT_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "d": "days",
        "h": "hours",
        "min": "minutes",
        "s": "seconds",
        "ms": "milliseconds",
        "us": "microseconds",
        "ns": "nanoseconds",
        "By": "bytes",
        "KiBy": "kibibytes",
        "MiBy": "mebibytes",
        "GiBy": "gibibytes",
        "TiBy": "tibibytes",
        "KBy": "kilobytes",
        "MBy": "megabytes",
        "GBy": "gigabytes",
        "TBy": "terabytes",
        "m": "meters",
        "V": "volts",
        "A": "amperes",
        "J": "joules",
        "W": "watts",
        "g": "grams",
        "Cel": "celsius",
        "Hz": "hertz",
        "1": "",
        "%": "percent",
    }
)
"""Unit words the Prometheus translation appends (as the OTel Prometheus exporter does)."""
PER_UNIT_WORDS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "s": "second",
        "m": "minute",
        "h": "hour",
        "d": "day",
        "w": "week",
        "mo": "month",
        "y": "year",
    }
)
"""Words for the ``per`` part of a unit such as ``1/s``."""


def _prometheus_unit(unit: str) -> str:
    """Map a UCUM unit to the Prometheus suffix word (annotations such as ``{call}`` vanish)."""
    unit = _UNIT_ANNOTATION.sub("", unit)
    if unit in UNIT_WORDS:
        return UNIT_WORDS[unit]
    top, slash, bottom = unit.partition("/")
    if slash:
        bottom = _INVALID_NAME_CHARS.sub("_", bottom)
        if bottom:
            top = _INVALID_NAME_CHARS.sub("_", top)
            top = UNIT_WORDS.get(top, top)
            bottom = PER_UNIT_WORDS.get(bottom, bottom)
            return f"{top}_per_{bottom}" if top else f"per_{bottom}"
    return _INVALID_NAME_CHARS.sub("_", unit).strip("_")


def prometheus_name(spec: InstrumentSpec, *, prefix: str = "") -> str:
    """Return the metric family name the OTel Prometheus exporter gives ``spec``.

    Dots (and every character outside ``[a-zA-Z0-9:]``) become ``_``, the unit becomes a suffix
    (``s`` -> ``_seconds``; annotation units such as ``{call}`` and the unit ``1`` add none),
    and a counter's ``_total`` is left off (it belongs to the sample name).

    Args:
        spec: The instrument.
        prefix: The exporter's ``prefix`` option, if any.

    Returns:
        The family name, e.g. ``resilience_execution_duration_seconds``.
    """
    name = f"{prefix}_{spec.name}" if prefix else spec.name
    if name and name[0].isdigit():
        name = "_" + name[1:]
    name = _INVALID_NAME_CHARS.sub("_", name)
    if spec.kind.is_counter and name.endswith("_total"):
        name = name[: -len("_total")]
    unit = _prometheus_unit(spec.unit)
    if unit and not name.endswith("_" + unit):
        name = f"{name}_{unit}"
    return name


def prometheus_series(spec: InstrumentSpec, *, prefix: str = "") -> tuple[str, ...]:
    """Return the sample (series) names a Prometheus scrape shows for ``spec``.

    Counters get ``_total``; histograms ``_bucket``, ``_sum`` and ``_count``; gauges none.

    Args:
        spec: The instrument.
        prefix: The exporter's ``prefix`` option, if any.

    Returns:
        The series names, e.g. ``("resilience_retries_total",)``.
    """
    base = prometheus_name(spec, prefix=prefix)
    if spec.kind.is_counter:
        return (f"{base}_total",)
    if spec.kind is InstrumentKind.HISTOGRAM:
        return (f"{base}_bucket", f"{base}_sum", f"{base}_count")
    return (base,)
