"""Telemetry faults never reach the application: zero failed calls, results unchanged.

The same deterministic workload (successes, failures answered by a fallback, retries that
recover, rejections by an open breaker, rejections by a full bulkhead) runs through the full
manager pipeline, async and sync, first with no telemetry and then under each fault:

* a metric reader that raises whenever it collects, collecting while the calls run;
* a span exporter that raises (synchronously, in the caller's thread, and from a batch thread);
* a span processor that raises when spans start and end;
* an OTLP/HTTP endpoint that is down (a closed port), for spans and metrics;
* engine listeners that raise from every method.

Every result must equal the baseline's, and the statistics must be the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.events import HUB
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.testing import FakeClock

CALLS = 300


class Boom(RuntimeError):
    """Raised by broken telemetry."""


class RaisingReader(InMemoryMetricReader):
    """A metric reader that raises every time it receives collected metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self.attempts += 1
        raise Boom("reader")


class RaisingSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.attempts = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.attempts += 1
        raise Boom("exporter")

    def shutdown(self) -> None:
        pass


class RaisingProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise Boom("processor start")

    def on_end(self, span: ReadableSpan) -> None:
        raise Boom("processor end")


class RaisingListener:
    """An engine listener (both protocols) that raises from every method."""

    def on_event(self, *args: Any) -> None:
        raise Boom("on_event")

    def start_execution(self, *args: Any) -> object:
        raise Boom("start_execution")

    def end_execution(self, *args: Any) -> None:
        raise Boom("end_execution")

    def start_attempt(self, *args: Any) -> object:
        raise Boom("start_attempt")

    def end_attempt(self, *args: Any) -> None:
        raise Boom("end_attempt")


class HalfBrokenListener(RaisingListener):
    """Opens scopes (so the end methods run) and raises when closing them."""

    def start_execution(self, *args: Any) -> object:
        return object()

    def start_attempt(self, *args: Any) -> object:
        return object()


def closed_port() -> int:
    """A local port nobody listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def restore_instrumentation() -> Iterator[None]:
    """Put the process-wide listener back as it was."""
    had_default = current_listener() is not None
    try:
        yield
    finally:
        uninstrument()
        if had_default:
            install_default()


class Workload:
    """A deterministic mix of outcomes through three policies of one manager."""

    def __init__(self) -> None:
        self.manager = ResilienceManager(clock=FakeClock(1000.0))
        fallback = FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=-1)
        self.main = ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(failure_threshold=10_000),
            retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0),
            bulkhead_config=BulkheadConfig(max_concurrent=4),
            fallback_config=fallback,
            timeout=60.0,
            name="faults-main",
        )
        self.open = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(), name="faults-open")
        self.full = ResilienceConfig(
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0), name="faults-full"
        )
        self.manager.get_circuit_breaker("faults-open", self.open.circuit_breaker).force_open()
        self.seen: dict[int, int] = {}

    def outcome(self, i: int) -> int:
        """Fail every 5th call always, every 7th call on its first attempt only."""
        if i % 5 == 0:
            raise ConnectionError(i)
        attempt = self.seen[i] = self.seen.get(i, 0) + 1
        if i % 7 == 0 and attempt == 1:
            raise TimeoutError(i)
        return 2 * i

    async def run_async(self) -> list[object]:
        results: list[object] = []

        async def fn(i: int) -> int:
            return self.outcome(i)

        hold = asyncio.Event()

        async def holder() -> None:
            await hold.wait()

        occupant = asyncio.create_task(self.manager.execute_with_resilience(holder, self.full))
        await asyncio.sleep(0)
        for i in range(CALLS):
            results.append(await self.manager.execute_with_resilience(fn, self.main, i))
            for config in (self.open, self.full):
                try:
                    await self.manager.execute_with_resilience(fn, config, i)
                except Exception as error:
                    results.append(type(error).__name__)
        hold.set()
        await occupant
        return results

    def run_sync(self) -> list[object]:
        results: list[object] = []
        hold = threading.Event()
        entered = threading.Event()

        def holder() -> None:
            entered.set()
            hold.wait(timeout=10.0)

        occupant = threading.Thread(
            target=self.manager.execute_with_resilience_sync, args=(holder, self.full)
        )
        occupant.start()
        assert entered.wait(timeout=5.0)
        try:
            for i in range(CALLS):
                results.append(self.manager.execute_with_resilience_sync(self.outcome, self.main, i))
                for config in (self.open, self.full):
                    try:
                        self.manager.execute_with_resilience_sync(self.outcome, config, i)
                    except Exception as error:
                        results.append(type(error).__name__)
        finally:
            hold.set()
            occupant.join(timeout=5.0)
        return results

    def summary(self) -> dict[str, Any]:
        stats = self.manager.get_resilience_statistics()
        return {
            "executions": dict(stats["executions"].items()),
            "policies": stats["policies"],
            "breakers": {
                n: {k: v for k, v in b.items() if k != "retry_after"}
                for n, b in stats["circuit_breakers"].items()
            },
            "bulkheads": stats["bulkheads"],
        }


async def run_workload(driver: str) -> tuple[list[object], dict[str, Any]]:
    workload = Workload()
    results = await workload.run_async() if driver == "async" else workload.run_sync()
    return results, workload.summary()


def reader_that_raises() -> Callable[[], object]:
    """Instrument with a reader that raises, and collect through it continuously while calls run."""
    reader = RaisingReader()
    instrument(meter_provider=MeterProvider(metric_readers=[reader], shutdown_on_exit=False))
    stop = threading.Event()

    def collect_all_the_time() -> None:
        while not stop.is_set():
            with contextlib.suppress(Boom):
                reader.collect()
            stop.wait(0.001)

    collector = threading.Thread(target=collect_all_the_time)
    collector.start()

    def finish() -> None:
        stop.set()
        collector.join(timeout=5.0)
        assert reader.attempts > 0, "the reader never collected"

    return finish


def otlp_endpoint_down() -> Callable[[], object]:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    port = closed_port()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=0.5),
            schedule_delay_millis=20,
        )
    )
    metric_reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"http://127.0.0.1:{port}/v1/metrics", timeout=0.5),
        export_interval_millis=20,
    )
    meter_provider = MeterProvider(metric_readers=[metric_reader], shutdown_on_exit=False)
    instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def finish() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown(timeout_millis=2_000)

    return finish


def span_exporter_that_raises(batch: bool) -> Callable[[], object]:
    exporter = RaisingSpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=10) if batch else SimpleSpanProcessor(exporter)
    )
    instrument(tracer_provider=provider)

    def finish() -> None:
        provider.shutdown()
        assert exporter.attempts > 0, "the exporter was never called"

    return finish


def processor_that_raises() -> Callable[[], object]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(RaisingProcessor())
    instrument(tracer_provider=provider)
    return provider.shutdown


def listeners_that_raise() -> Callable[[], object]:
    uninstrument()
    broken = (RaisingListener(), HalfBrokenListener())
    for listener in broken:
        HUB.add_listener(listener)
    errors_before = HUB.errors

    def finish() -> None:
        for listener in broken:
            HUB.remove_listener(listener)
        assert HUB.errors > errors_before, "the broken listeners were never called"

    return finish


FAULTS: dict[str, Callable[[], Callable[[], object]]] = {
    "metric-reader-raises": reader_that_raises,
    "span-exporter-raises-inline": lambda: span_exporter_that_raises(batch=False),
    "span-exporter-raises-in-batch": lambda: span_exporter_that_raises(batch=True),
    "span-processor-raises": processor_that_raises,
    "otlp-endpoint-down": otlp_endpoint_down,
    "engine-listeners-raise": listeners_that_raise,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("driver", ["async", "sync"])
async def test_broken_telemetry_changes_no_result(
    fault: str, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Under each telemetry fault every call returns what it returns without telemetry."""
    uninstrument()
    baseline_results, baseline_stats = await run_workload(driver)

    finish = FAULTS[fault]()
    try:
        results, stats = await run_workload(driver)
    finally:
        finish()

    assert results == baseline_results
    assert stats == baseline_stats
    if fault == "otlp-endpoint-down":
        assert any(r.name.startswith("opentelemetry.exporter.otlp") for r in caplog.records), (
            "no export was tried"
        )
    executions = stats["executions"]
    assert executions["total"] == 3 * CALLS + 1
    assert executions["failed"] == executions["rejected"] == 2 * CALLS, "only the two rejecting policies fail"
    assert executions["fallback"] == CALLS // 5 + (CALLS % 5 > 0)
