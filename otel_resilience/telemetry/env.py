"""``OTEL_RESILIENCE_*`` environment switches: what :func:`~otel_resilience.telemetry.instrument` reads.

Each switch is read when the matching keyword of ``instrument()`` is not given (an explicit
keyword wins), and applied once per telemetry source (its precomputed ``SourceInfo``), so that an
execution pays nothing for it. Booleans follow the OpenTelemetry environment-variable
specification: ``true`` (any case) is true; anything else, unset or empty included, is false,
with a warning for a value other than ``true`` or ``false``.

Each variable's name is a constant of :mod:`otel_resilience.environment_variables` (re-exported
here), the module the ``opentelemetry_environment_variables`` entry point names:
``opentelemetry-instrument`` makes an option of each (``--resilience_spans_disabled true``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from otel_resilience.environment_variables import (
    OTEL_RESILIENCE_DURATION_DISABLED,
    OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS,
    OTEL_RESILIENCE_RECORD_MESSAGES,
    OTEL_RESILIENCE_SPANS_DISABLED,
)

__all__ = [
    "DISABLED_INSTRUMENTATIONS",
    "DISABLE_ALL",
    "DURATION_DISABLED",
    "ENTRY_POINT",
    "IN_PROCESS_HISTOGRAMS",
    "OTEL_RESILIENCE_DURATION_DISABLED",
    "OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS",
    "OTEL_RESILIENCE_RECORD_MESSAGES",
    "OTEL_RESILIENCE_SPANS_DISABLED",
    "RECORD_MESSAGES",
    "SPANS_DISABLED",
    "SWITCHES",
    "Switch",
    "env_flag",
    "instrumentation_disabled",
    "resolve",
]

DISABLED_INSTRUMENTATIONS: Final = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
"""OpenTelemetry's list of instrumentations not to load; ``otel_resilience`` or ``*`` in it turns ours off.

Not a module constant of its name: opentelemetry-instrumentation's own module declares it, and
``opentelemetry-instrument`` refuses an option declared twice."""
ENTRY_POINT: Final = "otel_resilience"
"""The name of our ``opentelemetry_instrumentor`` entry point."""

_LOG: Final = logging.getLogger("otel_resilience.telemetry")
_WARNED: Final[set[tuple[str, str]]] = set()
"""The ``(variable, value)`` pairs warned about already: each is read by every ``instrument()``
(the import's and ``opentelemetry-instrument``'s instrumentor's), and warned about once."""


@dataclass(frozen=True, slots=True)
class Switch:
    """One environment switch.

    Attributes:
        variable: The environment variable.
        keyword: The ``instrument()`` keyword it stands for when that is not given.
        inverted: Whether ``true`` turns the keyword off (a ``*_DISABLED`` switch).
        description: What it does (docs/telemetry.md).
    """

    variable: str
    keyword: str
    inverted: bool
    description: str


SPANS_DISABLED: Final = Switch(
    OTEL_RESILIENCE_SPANS_DISABLED,
    "spans",
    True,  # noqa: FBT003 - inverted
    "No execution or attempt span and no span event (metrics and log records stay).",
)
DURATION_DISABLED: Final = Switch(
    OTEL_RESILIENCE_DURATION_DISABLED,
    "record_duration",
    True,  # noqa: FBT003 - inverted
    "No `resilience.execution.duration` nor `resilience.attempt.duration` histogram "
    "(the synchronous metric calls of a call that succeeds).",
)
RECORD_MESSAGES: Final = Switch(
    OTEL_RESILIENCE_RECORD_MESSAGES,
    "record_messages",
    False,  # noqa: FBT003 - not inverted
    "Failed spans carry the exception message as their status description (messages may hold user data).",
)
IN_PROCESS_HISTOGRAMS: Final = Switch(
    OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS,
    "in_process_histograms",
    False,  # noqa: FBT003 - not inverted
    "The two duration histograms are kept in process and exported through observable counters "
    "(`resilience.execution.latency.*`, `resilience.attempt.latency.*`): about 25 times cheaper "
    "per record than the SDK's histogram, without exemplars.",
)
SWITCHES: Final = (SPANS_DISABLED, DURATION_DISABLED, RECORD_MESSAGES, IN_PROCESS_HISTOGRAMS)
"""Every switch, in the order docs/telemetry.md lists them."""


def env_flag(variable: str, environ: Mapping[str, str] | None = None) -> bool:
    """Return the boolean of ``variable``: ``true`` (any case, spaces ignored) is true, all else false.

    A value other than ``true``/``false`` (or empty) is read as false, and logged as a warning
    the first time it is read.
    """
    raw = (os.environ if environ is None else environ).get(variable)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value == "true":
        return True
    if value not in ("false", "") and (variable, raw) not in _WARNED:
        _WARNED.add((variable, raw))
        _LOG.warning("%s=%r is neither true nor false: read as false", variable, raw)
    return False


def resolve(switch: Switch, given: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    """Return the keyword's value: ``given`` when not ``None``, else what ``switch``'s variable says."""
    if given is not None:
        return given
    return env_flag(switch.variable, environ) != switch.inverted


DISABLE_ALL: Final = "*"
"""The name in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` that disables every instrumentation."""


def instrumentation_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """Return whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``otel_resilience`` or ``*``.

    The list is read as ``opentelemetry-instrument`` reads it (opentelemetry-instrumentation's
    ``_load_instrumentors``): split on commas, each name stripped of surrounding whitespace,
    names compared exactly (case included); a ``*`` among them disables every instrumentation,
    ours included. Then ``import otel_resilience`` registers no listener (an explicit
    ``instrument()`` still does), and ``opentelemetry-instrument`` does not load the instrumentor.
    """
    raw = (os.environ if environ is None else environ).get(DISABLED_INSTRUMENTATIONS, "")
    names = {name.strip() for name in raw.split(",")}
    return ENTRY_POINT in names or DISABLE_ALL in names
