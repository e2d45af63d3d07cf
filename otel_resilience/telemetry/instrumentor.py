"""The ``opentelemetry_instrumentor`` entry point (extra ``instrumentation``).

``opentelemetry-instrument`` finds :class:`OtelResilienceInstrumentor` through the
``opentelemetry_instrumentor`` entry point named ``otel_resilience``, lists it, and skips it when
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``otel_resilience``. It only calls
:func:`otel_resilience.telemetry.instrument` / :func:`~otel_resilience.telemetry.uninstrument`,
which keep working without this extra.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.telemetry import instrument, uninstrument

__all__ = ["OtelResilienceInstrumentor"]


class OtelResilienceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Reports otel_resilience's spans, metrics and logs through the given (or global) providers.

    ``instrument(tracer_provider=..., meter_provider=..., logger_provider=...,
    record_messages=False)`` takes the keywords of :func:`otel_resilience.telemetry.instrument`.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """No library to instrument: the patterns are this package's own."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        instrument(
            kwargs.get("tracer_provider"),
            kwargs.get("meter_provider"),
            kwargs.get("logger_provider"),
            record_messages=bool(kwargs.get("record_messages", False)),
            in_process_histograms=kwargs.get("in_process_histograms"),
        )

    def _uninstrument(self, **kwargs: Any) -> None:  # noqa: ARG002 - the BaseInstrumentor signature
        uninstrument()
