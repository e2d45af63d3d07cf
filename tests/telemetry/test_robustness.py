"""Telemetry never breaks the app; no SDK means no work; providers are acquired lazily."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Histogram, NoOpHistogram, NoOpMeter, NoOpMeterProvider
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.engine.events import TelemetryHub, TelemetrySource
from otel_resilience.engine.registry import BULKHEADS
from otel_resilience.telemetry import current_listener, install_default, instrument, providers, uninstrument
from otel_resilience.telemetry.otel import OtelListener

ROOT = Path(__file__).resolve().parents[2]


def ok() -> str:
    return "ok"


class RaisingProcessor(SpanProcessor):
    """A span processor that raises on every span start and end."""

    def on_start(self, span, parent_context=None) -> None:
        raise RuntimeError("processor start")

    def on_end(self, span) -> None:
        raise RuntimeError("processor end")


class RaisingSpanExporter(SpanExporter):
    """An exporter that raises on export."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise RuntimeError("exporter")

    def shutdown(self) -> None:
        pass


class RaisingMetricExporter(MetricExporter):
    """A metric exporter that raises on export (behind a periodic reader)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs
    ) -> MetricExportResult:
        self.calls += 1
        raise RuntimeError("metric exporter")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        pass


class _RaisingHistogram(NoOpHistogram):
    def record(self, amount, attributes=None, context=None) -> None:
        raise RuntimeError("record")


class _RaisingMeter(NoOpMeter):
    def create_histogram(
        self, name, unit="", description="", *, explicit_bucket_boundaries_advisory=None
    ) -> Histogram:
        return _RaisingHistogram(name)


class RaisingMeterProvider(ApiMeterProvider):
    """A meter provider whose histograms raise on record (a broken SDK)."""

    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return _RaisingMeter(name)


@pytest.fixture
def isolated():
    """Restore the default listener after a test that instruments by hand."""
    had_default = current_listener() is not None
    yield
    uninstrument()
    if had_default:
        install_default()


async def test_raising_span_processor_does_not_change_results(isolated, scripted, runner, driver, caplog):
    """A processor that raises on start and end is swallowed, counted and logged once."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(RaisingProcessor())
    listener = instrument(tracer_provider=provider)
    pipeline = scripted("fragile")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        results = [await runner(pipeline, driver, ok) for _ in range(5)]
    assert results == ["ok"] * 5
    assert pipeline.stats.succeeded == 5
    assert listener.errors == 5
    assert len([r for r in caplog.records if "start_execution" in r.getMessage()]) == 1


async def test_raising_span_exporter_does_not_change_results(isolated, scripted, runner, driver):
    """An exporter that raises never reaches the protected call."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(RaisingSpanExporter()))
    instrument(tracer_provider=provider)
    pipeline = scripted("exported")
    assert [await runner(pipeline, driver, ok) for _ in range(3)] == ["ok"] * 3
    provider.shutdown()


async def test_raising_metric_exporter_and_reader_do_not_change_results(isolated, scripted, runner, driver):
    """A periodic reader whose exporter raises runs beside the calls without affecting them."""
    exporter = RaisingMetricExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=5)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    pipeline = scripted("exporting")
    results = [await runner(pipeline, driver, ok) for _ in range(50)]
    reader.collect()
    assert results == ["ok"] * 50
    assert pipeline.stats.succeeded == 50
    provider.shutdown()
    assert exporter.calls >= 1


async def test_raising_instrument_is_swallowed_and_counted(isolated, scripted, runner, driver):
    """A histogram that raises on record is counted as a telemetry error, the call unaffected."""
    listener = instrument(meter_provider=RaisingMeterProvider())
    pipeline = scripted("broken-meter")
    assert await runner(pipeline, driver, ok) == "ok"
    assert listener.errors == 1


class _CollectingMeter(NoOpMeter):
    """A meter that runs each observable callback as it is created: a collection on the same thread."""

    def create_observable_counter(self, name, callbacks=None, unit="", description=""):
        self._collect(callbacks)
        return super().create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(self, name, callbacks=None, unit="", description=""):
        self._collect(callbacks)
        return super().create_observable_gauge(name, callbacks, unit, description)

    @staticmethod
    def _collect(callbacks) -> None:
        for callback in callbacks or ():
            list(callback(CallbackOptions()))


class _CollectingMeterProvider(ApiMeterProvider):
    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        return _CollectingMeter(name)


class _UnreadableStats:
    @property
    def active(self) -> int:
        raise RuntimeError("unreadable bulkhead")

    waiting = max_concurrent = max_waiting = active


class _UnreadableBulkhead:
    """A bulkhead whose counts cannot be read: each observable callback reading them fails."""

    name = "unreadable-bulkhead"
    stats = _UnreadableStats()


def test_a_failing_callback_collected_while_the_global_meter_is_adopted_is_counted_not_a_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The global meter provider is adopted under the listener's lock; an SDK that collects on that
    thread meanwhile runs callbacks whose failure the listener counts: counting takes no lock held
    there (it used to take the same plain lock, and the listener's making hung for ever)."""
    monkeypatch.setattr(providers, "tracer_provider", lambda: None)
    monkeypatch.setattr(providers, "meter_provider", _CollectingMeterProvider)
    made: list[OtelListener] = []
    bulkhead = _UnreadableBulkhead()
    BULKHEADS.register(bulkhead)
    try:
        thread = threading.Thread(target=lambda: made.append(OtelListener(hub=TelemetryHub())), daemon=True)
        thread.start()
        thread.join(10.0)
        assert not thread.is_alive(), "the listener's making deadlocked in its own failure count"
    finally:
        BULKHEADS.unregister(bulkhead)
    (listener,) = made
    assert listener.meter_ready
    assert listener.errors >= 1
    listener.close()


async def test_noop_providers_open_nothing():
    """Explicit no-op providers are accepted and make start_execution return None."""
    listener = OtelListener(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    assert listener.start_execution(TelemetrySource("pipeline", "x", "x"), "x") is None
    assert listener.tracer is None
    assert not listener.meter_ready


@pytest.mark.parametrize("made", ["disabled", "shut_down"])
async def test_providers_that_hand_out_no_op_tracers_and_meters_open_nothing(
    monkeypatch: pytest.MonkeyPatch, made: str
) -> None:
    """An SDK disabled by OTEL_SDK_DISABLED=true (or a meter provider shut down) hands out the API's
    no-op tracer and meter: as with no-op providers, start_execution returns None, no context is
    attached and no instrument is made (each execution paid a context and the no-op calls)."""
    if made == "disabled":
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    meter_provider = MeterProvider(shutdown_on_exit=False)
    if made == "shut_down":
        tracer_provider = NoOpTracerProvider()  # an SDK tracer provider shut down still traces
        meter_provider.shutdown()
    listener = OtelListener(
        tracer_provider=tracer_provider, meter_provider=meter_provider, hub=TelemetryHub()
    )
    try:
        assert listener.start_execution(TelemetrySource("pipeline", "x", "x"), "x") is None
        assert listener.tracer is None
        assert not listener.meter_ready
    finally:
        listener.close()


def _run(code: str, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for variable in ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER"):
        if variable not in env:
            environment.pop(variable, None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_providers_are_acquired_through_the_public_api_only():
    """No telemetry module reaches into OpenTelemetry's private modules or provider globals, but
    the one gate of providers.py that reads whether any provider is set at all (no SDK: the idle
    listener skips the getters, which cost 3-5 µs a call while nothing is set)."""
    private = re.compile(r"\b_internal\b|(?<![A-Z])_(TRACER|METER|LOGGER)_PROVIDER\b")
    for path in (ROOT / "otel_resilience" / "telemetry").rglob("*.py"):
        code = path.read_text(encoding="utf-8")
        if path.name == "providers.py":
            code = code[code.index("from __future__") :]  # its docstring names the gate
            gate = code[code.index("_STATE: Final") : code.index("def tracer_provider()")]
            code = code.replace(gate, "").replace(
                "from opentelemetry._logs import _internal as _logs_state\n", ""
            )
            code = code.replace("from opentelemetry.metrics import _internal as _metrics_state\n", "")
        assert not private.search(code), (path, private.search(code))


def test_the_gate_reads_the_api_state_only_where_the_api_has_it():
    """Chosen at import: an API without one of the three attributes gets the check that always
    lets the getters decide; this one gets the check of the three attributes."""
    assert providers.nothing_set is providers._unset
    assert providers._gate(providers._STATE) is providers._unset
    other_api = providers._gate(((trace, "_TRACER_PROVIDER"), (trace, "_NO_SUCH_PROVIDER")))
    assert other_api is providers._unknown
    assert other_api() is False


def test_without_sdk_calls_work_and_nothing_is_opened():
    """In a fresh process with no providers, calls work, start_execution returns None, no SDK loads."""
    out = _run(
        """
        import asyncio, sys
        from otel_resilience.engine.events import TelemetrySource
        from otel_resilience.engine.pipeline import PipelineBuilder
        from otel_resilience.telemetry import install_default

        listener = install_default()
        pipeline = PipelineBuilder("p").build()

        async def work():
            return 1

        assert asyncio.run(pipeline.execute(work)) == 1
        assert pipeline.execute_sync(lambda: 2) == 2
        assert listener.start_execution(TelemetrySource("pipeline", "p", "p"), "p") is None
        assert listener.tracer is None and not listener.meter_ready and listener.errors == 0
        assert "opentelemetry.sdk" not in sys.modules, sorted(m for m in sys.modules if "sdk" in m)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_providers_set_after_import_are_honoured():
    """Global providers set after the listener is installed are picked up on the next call."""
    out = _run(
        """
        from otel_resilience.engine.events import TelemetrySource
        from otel_resilience.engine.pipeline import PipelineBuilder
        from otel_resilience.telemetry import install_default

        listener = install_default()
        pipeline = PipelineBuilder("late").build()
        pipeline.execute_sync(lambda: 1)
        assert listener.tracer is None

        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        pipeline.execute_sync(lambda: 1)
        assert [s.name for s in exporter.get_finished_spans()] == ["late"]
        assert not listener.meter_ready

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        pipeline.execute_sync(lambda: 1)
        names = [m.name for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics]
        assert "resilience.execution.duration" in names, names
        assert "resilience.executions" in names, names
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_the_api_s_placeholders_given_to_instrument_are_the_global_providers():
    """``instrument(trace.get_tracer_provider(), metrics.get_meter_provider(), ...)`` before an
    SDK is set gives the API's proxy providers: they stand for the global ones, acquired when
    set. Nothing is opened meanwhile, and a policy made before the SDK has its series at 0 once
    it is set (on the proxy meter they were added before the SDK existed, and lost)."""
    out = _run(
        """
        from opentelemetry import _logs, metrics, trace
        from otel_resilience import ResilienceConfig, ResilienceManager
        from otel_resilience.engine.events import TelemetrySource
        from otel_resilience.telemetry import instrument

        listener = instrument(
            trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider()
        )
        handle = ResilienceManager().policy("early", ResilienceConfig(name="early"))
        assert handle.execute_sync(lambda: 1) == 1
        assert listener.start_execution(TelemetrySource("pipeline", "early", "early"), "early") is None
        assert listener.tracer is None and not listener.meter_ready

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        assert handle.execute_sync(lambda: 1) == 1
        assert [s.name for s in exporter.get_finished_spans()] == ["early"]
        reloads = sorted(
            (p.attributes["resilience.reload.outcome"], p.value)
            for rm in reader.get_metrics_data().resource_metrics
            for sm in rm.scope_metrics for m in sm.metrics if m.name == "resilience.reload"
            for p in m.data.data_points
        )
        print(reloads)
        """
    )
    assert out.strip() == "[('failed', 0), ('succeeded', 0)]"


def test_only_the_api_s_proxies_stand_for_the_global_providers():
    """An SDK provider and a no-op one set on purpose are used as given; each signal's proxy is not."""
    from opentelemetry._logs import NoOpLoggerProvider  # noqa: PLC0415
    from opentelemetry._logs._internal import ProxyLoggerProvider  # noqa: PLC0415
    from opentelemetry.metrics._internal import _ProxyMeterProvider  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415
    from opentelemetry.trace import ProxyTracerProvider  # noqa: PLC0415

    kept = [
        TracerProvider(shutdown_on_exit=False),
        MeterProvider(shutdown_on_exit=False),
        LoggerProvider(shutdown_on_exit=False),
        NoOpTracerProvider(),
        NoOpMeterProvider(),
        NoOpLoggerProvider(),
    ]
    assert [providers.given(provider) for provider in kept] == kept
    proxies = [ProxyTracerProvider(), _ProxyMeterProvider(), ProxyLoggerProvider()]
    assert [providers.given(proxy) for proxy in proxies] == [None, None, None]


def test_providers_set_before_import_are_acquired_before_the_first_call():
    """Global providers set before ``import otel_resilience`` are taken at once: a breaker created
    then is exported (its state, its transitions at 0) before any call runs."""
    out = _run(
        """
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        trace.set_tracer_provider(TracerProvider())

        from otel_resilience import CircuitBreaker
        from otel_resilience.telemetry import current_listener

        breaker = CircuitBreaker("early")
        listener = current_listener()
        assert listener.tracer is not None and listener.meter_ready
        data = reader.get_metrics_data()
        points = {
            (m.name, p.attributes.get("resilience.circuit_breaker.state")): p.value
            for rm in ([] if data is None else data.resource_metrics)
            for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points
            if p.attributes.get("resilience.name") == "early"
        }
        print(points[("resilience.circuit_breaker.state", "closed")],
              points[("resilience.circuit_breaker.transitions", "open")])
        """
    )
    assert out.split() == ["1", "0"]


def test_with_a_tracer_provider_only_the_meter_getter_is_not_asked_on_every_call():
    """A tracing-only process: once looked at, the meter provider is asked for again only once the
    API holds one (the getter reads an environment variable on every call while none is set)."""
    out = _run(
        """
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        trace.set_tracer_provider(TracerProvider())
        from otel_resilience.engine.pipeline import PipelineBuilder
        from otel_resilience.telemetry import current_listener

        asked = 0
        getter = metrics.get_meter_provider

        def counted():
            global asked
            asked += 1
            return getter()

        metrics.get_meter_provider = counted
        pipeline = PipelineBuilder("tracing-only").build()
        for _ in range(20):
            pipeline.execute_sync(lambda: 1)
        print(asked)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        pipeline.execute_sync(lambda: 1)
        print(current_listener().meter_ready)
        """
    )
    assert out.split() == ["0", "True"]


def test_with_a_meter_provider_only_the_tracer_is_not_looked_up_on_every_call():
    """A metrics-only process: once looked at, the tracer provider is asked for again only once the
    API holds one (the proxy provider's get_tracer makes a proxy tracer and a no-op tracer each time)."""
    out = _run(
        """
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        from otel_resilience.engine.pipeline import PipelineBuilder
        from otel_resilience.telemetry import current_listener

        asked = 0
        getter = trace.get_tracer_provider
        proxy_get_tracer = trace.ProxyTracerProvider.get_tracer

        def counted():
            global asked
            asked += 1
            return getter()

        def counted_get_tracer(self, *args, **kwargs):
            global asked
            asked += 1
            return proxy_get_tracer(self, *args, **kwargs)

        trace.get_tracer_provider = counted
        trace.ProxyTracerProvider.get_tracer = counted_get_tracer
        pipeline = PipelineBuilder("metrics-only").build()
        for _ in range(20):
            pipeline.execute_sync(lambda: 1)
        print(asked)
        trace.set_tracer_provider(TracerProvider())
        pipeline.execute_sync(lambda: 1)
        print(current_listener().tracer is not None)
        """
    )
    assert out.split() == ["0", "True"]


def test_listener_sleeps_without_sdk_and_wakes_when_providers_are_set():
    """With no SDK the listener leaves event delivery (no event args built) and the next call after a provider is set brings it back."""
    out = _run(
        """
        from otel_resilience import CircuitBreaker, CircuitOpenError, default_alert_system
        from otel_resilience.engine.events import HUB, Event, StrategyTelemetry, TelemetrySource
        from otel_resilience.telemetry import install_default

        listener = install_default()
        breaker = CircuitBreaker("sleepy")
        assert breaker.call_sync(lambda: 1) == 1  # the first call reads the environment
        assert breaker.call_sync(lambda: 1) == 1
        # Only the alert system (created with the breaker) still listens to events.
        assert listener in HUB.execution_listeners and HUB.event_listeners == (default_alert_system(),)
        assert not StrategyTelemetry(TelemetrySource("circuit_breaker", "x")).wants(Event.CALL_REJECTED)

        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        breaker.force_open()
        try:
            breaker.call_sync(lambda: 1)
        except CircuitOpenError:
            pass
        assert set(HUB.event_listeners) == {listener, default_alert_system()}
        names = [m.name for rm in reader.get_metrics_data().resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics]
        assert "resilience.rejections" in names, names
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_a_dormant_listener_removed_and_added_again_goes_back_to_sleep():
    """Re-added, the hub has it awake and asks it on every execution; the first one it is asked
    about puts it back to sleep, so the next executions skip it as before (no SDK)."""
    out = _run(
        """
        from otel_resilience import CircuitBreaker
        from otel_resilience.engine.events import HUB
        from otel_resilience.telemetry import install_default, providers
        from otel_resilience.telemetry.otel import OtelListener

        listener = install_default()
        asked = 0
        start = OtelListener.start_execution

        def counted(self, source, operation):
            global asked
            asked += 1
            return start(self, source, operation)

        OtelListener.start_execution = counted
        breaker = CircuitBreaker("again")
        for _ in range(3):
            assert breaker.call_sync(lambda: 1) == 1
        assert HUB.is_dormant(listener) and HUB.quiet is providers.nothing_set
        before = asked
        for attached in list({id(x): x for x in (*HUB.event_listeners, *HUB.execution_listeners)}.values()):
            HUB.remove_listener(attached)
            HUB.add_listener(attached)
        assert not HUB.is_dormant(listener)
        for _ in range(5):
            assert breaker.call_sync(lambda: 1) == 1
        assert HUB.is_dormant(listener) and HUB.quiet is providers.nothing_set
        assert asked - before == 1, asked - before
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_a_listener_woken_while_another_thread_puts_it_to_sleep_is_left_awake():
    """An execution that found no SDK puts the listener to sleep while another, which found the
    provider just set, wakes it: the hub ends with it awake, so events and attempts reach it."""
    out = _run(
        """
        import threading
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from otel_resilience.engine.events import TelemetryHub, TelemetrySource
        from otel_resilience.telemetry.otel import OtelListener

        class Held(TelemetryHub):
            # Its first "go to sleep" waits for the test (the thread is stopped right there).
            def __init__(self):
                super().__init__()
                self.asked, self.go, self.first = threading.Event(), threading.Event(), True

            def set_dormant(self, listener, *, dormant, asleep_while=None):
                if dormant and self.first:
                    self.first = False
                    self.asked.set()
                    assert self.go.wait(30)
                super().set_dormant(listener, dormant=dormant, asleep_while=asleep_while)

        hub = Held()
        listener = OtelListener(hub=hub)
        hub.add_listener(listener)
        source = TelemetrySource("pipeline", "race", "race")
        sleeping = threading.Thread(target=listener.start_execution, args=(source, "op"))
        sleeping.start()
        assert hub.asked.wait(30)  # it found no SDK and is telling the hub to leave it out
        trace.set_tracer_provider(TracerProvider())
        assert listener.start_execution(source, "op") is not None  # this one found the provider
        hub.go.set()
        sleeping.join()
        assert listener.start_execution(source, "op") is not None
        assert hub.listens(listener) and not hub.is_dormant(listener)
        assert hub.attempt_listeners == (listener,)
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_provider_named_by_environment_variable_is_honoured():
    """OTEL_PYTHON_TRACER_PROVIDER is honoured through the public getter on first use."""
    out = _run(
        """
        from otel_resilience.engine.events import TelemetrySource
        from otel_resilience.telemetry import install_default

        listener = install_default()
        handle = listener.start_execution(TelemetrySource("pipeline", "env", "env"), "env")
        assert handle is not None and listener.tracer is not None
        print("ok")
        """,
        OTEL_PYTHON_TRACER_PROVIDER="sdk_tracer_provider",
    )
    assert out.strip() == "ok"


def test_a_tracer_provider_that_cannot_be_loaded_leaves_a_meter_provider_set_later_acquired() -> None:
    """A provider named by a variable that cannot be loaded is counted once and not asked for again;
    the other signal's provider, set after the import, is still taken at the next call.

    The first failure stopped every look: with a broken OTEL_PYTHON_TRACER_PROVIDER, the meter
    provider the application set itself was never acquired (no metric at all).
    """
    out = _run(
        """
        import logging
        logging.disable(logging.CRITICAL)  # the API logs the provider it failed to load
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from otel_resilience.engine.events import Outcome, TelemetrySource
        from otel_resilience.telemetry import install_default

        listener = install_default()
        source = TelemetrySource("pipeline", "late", "late")
        assert listener.start_execution(source, "late") is None  # the tracer's getter raised
        assert listener.errors == 1
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        for _ in range(3):
            handle = listener.start_execution(source, "late")
            assert handle is not None, "the meter provider set later was not taken"
            listener.end_execution(handle, Outcome.SUCCESS, 0.01, None)
        assert listener.errors == 1  # the broken getter was not asked again
        assert listener.tracer is None
        (scope,) = reader.get_metrics_data().resource_metrics[0].scope_metrics
        (point,) = next(m for m in scope.metrics if m.name == "resilience.execution.duration").data.data_points
        assert point.count == 3
        print("ok")
        """,
        OTEL_PYTHON_TRACER_PROVIDER="no_such_provider",
    )
    assert out.strip() == "ok"


class _RaisingOnStart(SpanProcessor):
    """A span processor that raises on every span start only."""

    def on_start(self, span, parent_context=None) -> None:
        raise RuntimeError("processor start")


def test_a_span_that_fails_to_start_leaves_the_durations_recorded(otel, driver):
    """The execution's and each attempt's duration are recorded when their span's start raises.

    The span is lost, and counted; the histograms are not (a failing span start once dropped the
    execution's duration and a retried attempt's).
    """
    otel.tracer_provider.add_span_processor(_RaisingOnStart())
    manager = ResilienceManager()
    config = ResilienceConfig(
        name="fragile-spans", retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0)
    )
    failures = iter([True, False] * 5)

    def flaky() -> str:
        if next(failures):
            raise ConnectionError("once")
        return "ok"

    async def flaky_async() -> str:
        return flaky()

    for _ in range(5):
        if driver == "sync":
            assert manager.execute_with_resilience_sync(flaky, config) == "ok"
        else:
            assert asyncio.run(manager.execute_with_resilience(flaky_async, config)) == "ok"
    assert sum(p.count for p in otel.points("resilience.execution.duration")) == 5
    assert sum(p.count for p in otel.points("resilience.attempt.duration")) == 10
    assert otel.listener.errors == 10  # each execution's span and each second attempt's
    assert otel.spans() == []
