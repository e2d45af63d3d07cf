"""OpenTelemetry for the demo: the SDK, ``/metrics`` for Prometheus, and OTLP on request.

* Metrics: an SDK ``MeterProvider`` with the Prometheus exporter's reader on a private
  ``prometheus_client`` registry, served at ``http://HOST:PORT/metrics`` by
  ``prometheus_client``'s threaded WSGI server. A busy port fails at start with a clear message.
* ``--otlp-endpoint URL``: OTLP over **HTTP/protobuf** (``opentelemetry-exporter-otlp-proto-http``):
  metrics to ``URL/v1/metrics`` every 2 s and spans to ``URL/v1/traces`` (batched every second).
  HTTP/protobuf was chosen over gRPC because it needs no ``grpcio`` wheel, every OTLP receiver
  (the Collector, ``rotel``, Jaeger, Tempo) accepts it on port 4318, and it goes through plain
  HTTP proxies.
* Spans exist only with ``--otlp-endpoint`` (there is nowhere else to send them).

The providers are handed to :func:`otel_resilience.telemetry.instrumented` for the run; nothing
is set globally, and the listener registered before the run is registered again after it, so the
demo can run inside another process (its tests) without side effects.

This is the only module of the demo that imports OpenTelemetry; each import carries
``noqa: TID251`` because the rule (only ``otel_resilience/telemetry`` may import OpenTelemetry)
protects the library, and the demo is an application of it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final
from wsgiref.simple_server import WSGIServer

from opentelemetry.metrics import NoOpMeter  # noqa: TID251 - the demo is an application
from opentelemetry.sdk.metrics import MeterProvider  # noqa: TID251
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader  # noqa: TID251
from opentelemetry.sdk.resources import Resource  # noqa: TID251
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: TID251
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: TID251
from prometheus_client import CollectorRegistry, start_http_server

import otel_resilience
from otel_resilience.demo.options import OTLP_PATHS
from otel_resilience.telemetry import instrumented

if TYPE_CHECKING:
    from otel_resilience.demo.options import DemoOptions

__all__ = [
    "OTLP_EXPORT_TIMEOUT",
    "OTLP_FLUSH_TIMEOUT",
    "OTLP_METRICS_INTERVAL",
    "DemoTelemetry",
    "MetricsServerError",
]

_LOG: Final = logging.getLogger("otel_resilience.demo")
_METRICS_PATH, _TRACES_PATH = OTLP_PATHS

OTLP_METRICS_INTERVAL: Final = 2.0
"""Seconds between two OTLP metric exports."""
OTLP_EXPORT_TIMEOUT: Final = 2.0
"""Seconds one OTLP export may take, its retries included (the SDK's default, 10 s, would make
Ctrl-C wait tens of seconds for a receiver that is down: the exports still due are flushed at
the end of the run)."""
OTLP_FLUSH_TIMEOUT: Final = 2.0
"""Seconds the spans still queued at the end of the run get to leave; the batches left after it
are dropped (with a receiver that is down, each batch would take its :data:`OTLP_EXPORT_TIMEOUT`,
and a full queue is 32 of them: the SDK gives up only after 30 s)."""
_SPAN_BATCH_DELAY_MS: Final = 1000.0
_SPAN_QUEUE: Final = 16_384
"""Spans buffered before the batch processor drops (the demo makes a few hundred per second)."""


class _FirstExportError(logging.Filter):
    """Lets the first warning or error of the OTLP exporters through and counts the others.

    The exporters log every failed export and every retry of one: a receiver that is down would
    write a few lines a second for the whole run, into the live view. The first says it is down.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._shown = False
        self.hidden = 0
        """Warnings and errors not shown."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is shown: anything under a warning, and the first warning or error."""
        if record.levelno < logging.WARNING:
            return True
        with self._lock:
            if self._shown:
                self.hidden += 1
                return False
            self._shown = True
        record.msg = (
            f"{record.msg} (the next OTLP export errors are not shown: their number is given at the end)"
        )
        return True


class MetricsServerError(RuntimeError):
    """The ``/metrics`` server could not start (the port is busy, the address is wrong...)."""


class _FlushBound(SpanExporter):
    """Exports through ``exporter`` until the deadline :meth:`close_in` sets, then drops each batch.

    The batch processor exports every span still queued when its provider shuts down, one batch
    after the other, whatever each takes; this bounds the whole flush instead.
    """

    def __init__(self, exporter: SpanExporter, clock: Callable[[], float] = time.monotonic) -> None:
        self._exporter = exporter
        self._clock = clock
        self._deadline: float | None = None
        self.dropped = 0
        """Spans dropped after the deadline."""

    def close_in(self, seconds: float) -> None:
        """Drop the batches that come more than ``seconds`` from now (on its clock, ``time.monotonic``)."""
        self._deadline = self._clock() + seconds

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export ``spans``, or drop them once the deadline has passed."""
        deadline = self._deadline
        if deadline is not None and self._clock() >= deadline:
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        return self._exporter.export(spans)

    def shutdown(self) -> None:
        """Shut the OTLP exporter down."""
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the OTLP exporter (it buffers nothing)."""
        return self._exporter.force_flush(timeout_millis)


class DemoTelemetry:
    """The demo's OpenTelemetry SDK, started by :meth:`start` and flushed by :meth:`stop`.

    Args:
        options: The run's options (host, port, OTLP endpoint, scenario and seed as resource
            attributes).

    Attributes:
        registry: The ``prometheus_client`` registry ``/metrics`` serves.
        meter_provider: The SDK meter provider (set by :meth:`start`).
        tracer_provider: The SDK tracer provider, only with an OTLP endpoint.
        url: The ``/metrics`` URL actually served, or ``None``.
        disabled: Whether the SDK is turned off (``OTEL_SDK_DISABLED=true``): its providers then
            record and export nothing (set by :meth:`start`).
    """

    def __init__(self, options: DemoOptions) -> None:
        self._options = options
        self.registry = CollectorRegistry()
        self.meter_provider: MeterProvider | None = None
        self.tracer_provider: TracerProvider | None = None
        self.url: str | None = None
        self.disabled = False
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._instrumented = contextlib.ExitStack()
        self._spans: _FlushBound | None = None
        self._export_errors: _FirstExportError | None = None
        self._export_loggers: list[logging.Logger] = []

    def start(self) -> None:
        """Build the providers, serve ``/metrics`` and instrument the library.

        Raises:
            MetricsServerError: The ``/metrics`` server could not listen on ``host:port``.
        """
        # Imported here: the exporters are optional dependencies of the demo's optional parts.
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415, TID251

        options = self._options
        resource = Resource.create(
            {
                "service.name": "otel-resilience-demo",
                "service.version": str(otel_resilience.__version__),
                "demo.scenario": options.scenario,
                "demo.seed": options.seed,
            }
        )
        readers: list[MetricReader] = [PrometheusMetricReader(registry=self.registry)]
        if options.otlp_endpoint is not None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415, TID251
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415, TID251
                OTLPSpanExporter,
            )

            self._export_errors = _FirstExportError()
            self._export_loggers = [
                logging.getLogger(exporter.__module__) for exporter in (OTLPMetricExporter, OTLPSpanExporter)
            ]
            for logger in self._export_loggers:
                logger.addFilter(self._export_errors)
            readers.append(
                PeriodicExportingMetricReader(
                    OTLPMetricExporter(
                        endpoint=f"{options.otlp_endpoint}{_METRICS_PATH}", timeout=OTLP_EXPORT_TIMEOUT
                    ),
                    export_interval_millis=OTLP_METRICS_INTERVAL * 1000,
                )
            )
            self.tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._spans = _FlushBound(
                OTLPSpanExporter(
                    endpoint=f"{options.otlp_endpoint}{_TRACES_PATH}", timeout=OTLP_EXPORT_TIMEOUT
                )
            )
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    self._spans,
                    max_queue_size=_SPAN_QUEUE,
                    schedule_delay_millis=_SPAN_BATCH_DELAY_MS,
                )
            )
        self.meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
        # The SDK's own answer: a disabled provider hands out the API's no-op meter.
        self.disabled = type(self.meter_provider.get_meter("otel_resilience.demo")) is NoOpMeter
        if options.port is not None:
            try:
                self._server, self._thread = start_http_server(
                    options.port, options.host, registry=self.registry
                )
            except OSError as error:
                self._shutdown_providers()
                hint = (
                    "another process (another demo?) listens there; choose another --port"
                    if error.errno == errno.EADDRINUSE
                    else "check --host and --port"
                )
                reason = error.strerror or str(error)
                msg = f"cannot serve /metrics on {options.host}:{options.port}: {reason}; {hint}"
                raise MetricsServerError(msg) from error
            self.url = options.metrics_url
        self._instrumented.enter_context(
            instrumented(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)
        )

    def stop(self) -> None:
        """Put the listener from before the run back, shut the providers down, stop serving ``/metrics``."""
        self._instrumented.close()
        self._shutdown_providers()
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _shutdown_providers(self) -> None:
        if self.tracer_provider is not None:
            spans = self._spans
            if spans is not None:
                spans.close_in(OTLP_FLUSH_TIMEOUT)
            self.tracer_provider.shutdown()
            self.tracer_provider = None
            if spans is not None and spans.dropped:
                _LOG.warning(
                    "%d span(s) not exported: the OTLP receiver did not take them within %g s of the end",
                    spans.dropped,
                    OTLP_FLUSH_TIMEOUT,
                )
            self._spans = None
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
            self.meter_provider = None
        export_errors = self._export_errors
        if export_errors is not None:  # after the shutdown: its last exports are counted too
            for logger in self._export_loggers:
                logger.removeFilter(export_errors)
            self._export_errors = None
            self._export_loggers = []
            if export_errors.hidden:
                _LOG.warning("%d more OTLP export error(s) not shown (after the first)", export_errors.hidden)
