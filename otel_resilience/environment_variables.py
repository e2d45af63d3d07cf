"""The ``OTEL_RESILIENCE_*`` environment variables the package reads, each a constant of its name.

As ``opentelemetry.sdk.environment_variables``: the ``opentelemetry_environment_variables`` entry
point ``otel_resilience`` names this module, and ``opentelemetry-instrument`` makes an option of
every name here that starts with ``OTEL_`` (``--resilience_config resilience.yaml``,
``--resilience_spans_disabled true``). It is the one place of each name: its reader imports it
from here (:mod:`otel_resilience.config.loader`, :mod:`otel_resilience.telemetry.env`). It
imports nothing of the package (the lowest layer), so that every module may import it, and
holds no other ``OTEL_*`` name: the launcher refuses an option declared twice, so a name another
distribution declares (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``) stays out.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "OTEL_RESILIENCE_CONFIG",
    "OTEL_RESILIENCE_DURATION_DISABLED",
    "OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS",
    "OTEL_RESILIENCE_RECORD_MESSAGES",
    "OTEL_RESILIENCE_SPANS_DISABLED",
]

OTEL_RESILIENCE_CONFIG: Final = "OTEL_RESILIENCE_CONFIG"
"""The configuration file read at start-up (:func:`otel_resilience.config.from_env`)."""
OTEL_RESILIENCE_SPANS_DISABLED: Final = "OTEL_RESILIENCE_SPANS_DISABLED"
"""``true``: no span (:data:`otel_resilience.telemetry.env.SPANS_DISABLED`)."""
OTEL_RESILIENCE_DURATION_DISABLED: Final = "OTEL_RESILIENCE_DURATION_DISABLED"
"""``true``: no duration histogram (:data:`otel_resilience.telemetry.env.DURATION_DISABLED`)."""
OTEL_RESILIENCE_RECORD_MESSAGES: Final = "OTEL_RESILIENCE_RECORD_MESSAGES"
"""``true``: exception messages on failed spans (:data:`otel_resilience.telemetry.env.RECORD_MESSAGES`)."""
OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS: Final = "OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS"
"""``true``: in-process duration histograms (:data:`otel_resilience.telemetry.env.IN_PROCESS_HISTOGRAMS`)."""
