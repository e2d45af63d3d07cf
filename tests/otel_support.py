"""The real OpenTelemetry SDK with in-memory exporters, for any test: the ``otel`` fixture's parts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.telemetry.otel import OtelListener


@dataclass
class Otel:
    """The providers, exporters and listener of one test, with lookup helpers (by name only)."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    span_exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    log_exporter: InMemoryLogRecordExporter
    listener: OtelListener

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those called ``name``."""
        return [s for s in self.span_exporter.get_finished_spans() if name is None or s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name``."""
        found = self.spans(name)
        assert len(found) == 1, [s.name for s in self.span_exporter.get_finished_spans()]
        return found[0]

    def metrics(self) -> dict[str, Any]:
        """Collect once and return ``{metric name: metric}`` for the otel_resilience scope."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                if scope_metrics.scope.name != "otel_resilience":
                    continue
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
        return found

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (empty when it has none)."""
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def point(self, name: str, **attributes: Any) -> Any:
        """The one point of ``name`` whose attributes equal ``attributes`` (keys with dots as ``__``)."""
        wanted = {key.replace("__", "."): value for key, value in attributes.items()}
        matches = [p for p in self.points(name) if dict(p.attributes) == wanted]
        assert len(matches) == 1, (name, wanted, [dict(p.attributes) for p in self.points(name)])
        return matches[0]

    def values(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        """``{frozenset(attributes): value or count}`` for every point of ``name``."""
        result: dict[frozenset[tuple[str, Any]], Any] = {}
        for p in self.points(name):
            result[frozenset(p.attributes.items())] = p.value if hasattr(p, "value") else p.count
        return result

    def logs(self) -> list[Any]:
        """The emitted API log records, in order."""
        return [r.log_record for r in self.log_exporter.get_finished_logs()]


@contextmanager
def instrumented() -> Iterator[Otel]:
    """Instrument with fresh SDK providers for a block; uninstrument afterwards (the ``otel`` fixture's body)."""
    had_default = current_listener() is not None
    span_exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    listener = instrument(tracer_provider, meter_provider, logger_provider)
    try:
        yield Otel(
            tracer_provider,
            meter_provider,
            logger_provider,
            span_exporter,
            reader,
            log_exporter,
            listener,
        )
    finally:
        uninstrument()
        if had_default:
            install_default()
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Instrument with fresh SDK providers for one test; uninstrument afterwards."""
    with instrumented() as otel_parts:
        yield otel_parts


def attempts_ended(otel: Otel, pattern: str, name: str) -> dict[tuple[str, str | None], int]:
    """The attempt durations ``pattern`` ``name`` recorded, counted by outcome and error type."""
    from otel_resilience.telemetry import semconv as sc  # noqa: PLC0415 - the instrument's names

    found: dict[tuple[str, str | None], int] = {}
    for point in otel.points(sc.ATTEMPT_DURATION):
        attributes = dict(point.attributes)
        if attributes.get(sc.PATTERN) == pattern and attributes.get("resilience.name") == name:
            key = (attributes[sc.OUTCOME], attributes.get(sc.ERROR_TYPE))
            found[key] = found.get(key, 0) + point.count
    return found
