"""The ``opentelemetry_instrumentor`` entry point (extra ``instrumentation``).

``opentelemetry-instrument`` finds :class:`OtelResilienceInstrumentor` through the
``opentelemetry_instrumentor`` entry point named ``otel_resilience``, lists it, and skips it when
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names ``otel_resilience``. It only calls
:func:`otel_resilience.telemetry.instrument` / :func:`~otel_resilience.telemetry.uninstrument`,
which keep working without this extra.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any, Final

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.telemetry import instrument, uninstrument

__all__ = ["OtelResilienceInstrumentor"]

_KEYWORDS: Final = tuple(inspect.signature(instrument).parameters)
"""What ``instrument()`` takes: the keywords the instrumentor hands on as they were given."""


class OtelResilienceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Reports otel_resilience's spans, metrics and logs through the given (or global) providers.

    ``instrument(...)`` takes the keywords of :func:`otel_resilience.telemetry.instrument` and
    hands on those it is given (any other, such as the base class's own, is left out): one not
    given is read from its ``OTEL_RESILIENCE_*`` switch, as ``instrument()`` does.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """No library to instrument: the patterns are this package's own."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        instrument(**{key: kwargs[key] for key in _KEYWORDS if key in kwargs})

    def _uninstrument(self, **kwargs: Any) -> None:  # noqa: ARG002 - the BaseInstrumentor signature
        uninstrument()
