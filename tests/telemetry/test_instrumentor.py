"""The BaseInstrumentor subclass behind the opentelemetry_instrumentor entry point."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.telemetry import current_listener, install_default
from otel_resilience.telemetry.instrumentor import OtelResilienceInstrumentor


def test_the_entry_point_names_the_instrumentor() -> None:
    """pyproject declares the entry point opentelemetry-instrument looks up, named otel_resilience."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    block = text.split("[project.entry-points.opentelemetry_instrumentor]\n", 1)[1].split("\n\n", 1)[0]
    assert block == 'otel_resilience = "otel_resilience.telemetry.instrumentor:OtelResilienceInstrumentor"'


def test_instrument_and_uninstrument_switch_our_spans() -> None:
    """instrument(tracer_provider=...) reports executions as spans there; uninstrument stops it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OtelResilienceInstrumentor()
    manager = ResilienceManager()
    try:
        instrumentor.instrument(tracer_provider=provider)
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="p"))
        assert exporter.get_finished_spans()
        instrumentor.uninstrument()
        assert current_listener() is None
        count = len(exporter.get_finished_spans())
        manager.execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="p"))
        assert len(exporter.get_finished_spans()) == count
    finally:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
        install_default()
        provider.shutdown()
