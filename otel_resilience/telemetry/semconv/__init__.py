"""The one registry of telemetry names: every instrument, attribute, span and event.

Nothing else in the package spells a metric, attribute or event name: the OTel listener, the
observable instruments, ``docs/telemetry.md``, the dashboards and the alert rules all read
them from here.

Naming follows the OpenTelemetry conventions: a ``resilience.*`` namespace, durations in
seconds (``s``), counters named by a plural noun without ``_total``, and ``{call}``-style
annotation units. Attribute values are bounded: names of policies and instances, closed
enumerations, and exception *class* names (``error.type``). Messages, arguments and results
never appear, unless the application opts in to exception messages on spans
(``instrument(record_messages=True)``). Attempt numbers go on spans only, never on metrics.

The registry is one namespace made of:

* :mod:`.names`: the names themselves (attribute keys and their closed value sets,
  instruments, spans, span and log events);
* :mod:`.catalog`: what each attribute, instrument and span is (:data:`ATTRIBUTES`,
  :data:`INSTRUMENTS`, :data:`SPANS`);
* :mod:`.bindings`: the one table of what each engine event becomes (:data:`EVENTS`: its
  attribute keys, span event, instruments and log record) and the series that start at 0
  (:data:`ZERO_SERIES`);
* :mod:`.prometheus`: the series names the OpenTelemetry Prometheus exporter derives
  (:func:`prometheus_series`, checked against a real scrape in the tests);
* :mod:`.specs`: the shapes of those entries.
"""

from __future__ import annotations

from otel_resilience.telemetry.semconv import bindings, catalog, instruments, names, prometheus, specs
from otel_resilience.telemetry.semconv.bindings import *  # noqa: F403
from otel_resilience.telemetry.semconv.catalog import *  # noqa: F403
from otel_resilience.telemetry.semconv.instruments import *  # noqa: F403
from otel_resilience.telemetry.semconv.names import *  # noqa: F403
from otel_resilience.telemetry.semconv.prometheus import *  # noqa: F403
from otel_resilience.telemetry.semconv.specs import *  # noqa: F403

__all__: list[str] = []
__all__ += names.__all__
__all__ += specs.__all__
__all__ += catalog.__all__
__all__ += instruments.__all__
__all__ += bindings.__all__
__all__ += prometheus.__all__
