"""`--otlp-endpoint`: metrics and traces reach an OTLP/HTTP receiver, with retry events and attempt spans."""

from __future__ import annotations

import io
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from shared_workers import wait_for

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.demo.app import run_demo
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.otel import OTLP_EXPORT_TIMEOUT, OTLP_FLUSH_TIMEOUT, DemoTelemetry, _FlushBound
from otel_resilience.demo.view import PlainView

_BATCH = 512
"""Spans per export of the batch span processor (its default, which the demo keeps)."""


class _Receiver(ThreadingHTTPServer):
    """Keeps the body of every POST by path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.bodies.setdefault(self.path, []).append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib signature
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    """An OTLP/HTTP receiver on an ephemeral port."""
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_metrics_and_traces_reach_an_otlp_receiver(receiver: _Receiver) -> None:
    """Spans of executions and retried attempts, with retry events, and the metrics arrive over OTLP/HTTP."""
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    options = DemoOptions(
        scenario="steady", duration=2.5, time_scale=0.01, port=None, plain=True, otlp_endpoint=endpoint
    )
    summary = await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=False)
    assert summary["lost_calls"] == 0
    with receiver.lock:
        bodies = {path: list(items) for path, items in receiver.bodies.items()}
    assert set(bodies) == {"/v1/metrics", "/v1/traces"}
    spans = [
        span
        for body in bodies["/v1/traces"]
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for span in spans}
    assert {"ml_service", "database", "content_api"} <= names
    assert any(name.endswith(" attempt") for name in names)
    events = {event.name for span in spans for event in span.events}
    assert "resilience.retry.scheduled" in events
    metrics = {
        metric.name
        for body in bodies["/v1/metrics"]
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert {"resilience.executions", "resilience.execution.duration", "resilience.retries"} <= metrics


def test_stop_does_not_wait_long_for_an_unreachable_receiver() -> None:
    """Ctrl-C ends a demo whose OTLP receiver is down in seconds, not after the SDK's 10 s per export."""
    with socket.socket() as probe:  # a port nothing listens on: every export is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telemetry = DemoTelemetry(DemoOptions(port=None, otlp_endpoint=f"http://127.0.0.1:{port}"))
    telemetry.start()
    try:
        ResilienceManager().execute_with_resilience_sync(lambda: "ok", ResilienceConfig(name="otlp_down"))
    finally:
        started = time.monotonic()
        telemetry.stop()
    assert time.monotonic() - started < 10.0  # was about 16 s: each export retried for 10 s


class _DownReceiver(SpanExporter):
    """A receiver that is down: each export takes its whole timeout, on a clock of the test's, and fails.

    The first export waits until the run ends (the flush's deadline is set): it is the batch in
    flight then, and every other batch is still queued.
    """

    def __init__(self, bound: _FlushBound) -> None:
        self.bound = bound
        self.now = 0.0
        self.batches = 0

    def clock(self) -> float:
        return self.now

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        wait_for(lambda: self.bound._deadline is not None, 10.0, "the end of the run")
        self.batches += 1
        self.now += OTLP_EXPORT_TIMEOUT
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_stop_gives_up_the_spans_still_queued_for_an_unreachable_receiver() -> None:
    """A run whose receiver is down ends with thousands of spans queued: stopping does not export them
    batch after batch, each for its 2 s of retries (about 30 s, the SDK's bound), but gives the queue
    one flush time and drops the rest."""
    batches = 30  # the queue of a few seconds of a fast run
    with socket.socket() as probe:  # a port nothing listens on: the metrics' export is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telemetry = DemoTelemetry(DemoOptions(port=None, otlp_endpoint=f"http://127.0.0.1:{port}"))
    telemetry.start()
    try:
        assert telemetry.tracer_provider is not None
        bound = telemetry._spans
        assert bound is not None
        receiver = _DownReceiver(bound)
        bound._exporter.shutdown()
        bound._exporter, bound._clock = receiver, receiver.clock
        tracer = telemetry.tracer_provider.get_tracer("demo-test")
        for _ in range(batches * _BATCH):
            tracer.start_span("queued").end()
    finally:
        telemetry.stop()
    # The flush time lets the batches start that its exports' timeouts fit in (the one in flight), no other.
    exported = math.ceil(OTLP_FLUSH_TIMEOUT / OTLP_EXPORT_TIMEOUT)
    assert receiver.batches == exported < batches
    assert bound.dropped == (batches - exported) * _BATCH


_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)


def test_a_receiver_that_is_down_is_reported_once_not_at_every_export(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The exporters log each failed export and each retry (about 4 lines a second with a receiver that
    is down, into the live view): the run shows the first one and counts the others, once, at the end."""
    with socket.socket() as probe:  # a port nothing listens on: every export is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    telemetry = DemoTelemetry(DemoOptions(port=None, otlp_endpoint=f"http://127.0.0.1:{port}"))
    caplog.set_level(logging.WARNING)
    telemetry.start()
    try:
        for name in _EXPORTER_LOGGERS:  # what the exporters log in a minute of a run
            for _ in range(100):
                logging.getLogger(name).warning("Transient error %s encountered while exporting", "refused")
                logging.getLogger(name).error(
                    "Failed to export batch due to timeout, max retries or shutdown."
                )
    finally:
        telemetry.stop()
    shown = [record for record in caplog.records if record.name in _EXPORTER_LOGGERS]
    assert len(shown) == 1
    assert "not shown" in shown[0].getMessage()
    counted = [record.getMessage() for record in caplog.records if record.name == "otel_resilience.demo"]
    assert any("OTLP export error(s) not shown" in message for message in counted)
    caplog.clear()
    logging.getLogger(_EXPORTER_LOGGERS[0]).warning("after the run")  # the exporters' logging as it was
    assert [record.getMessage() for record in caplog.records] == ["after the run"]
