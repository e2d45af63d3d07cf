"""``instrument()`` again on the same meter provider: the observable instruments keep reporting.

A meter hands back the observable instrument it made first, with its first callbacks, and drops
the callbacks given again; those first callbacks belonged to a listener that is closed now. The
instruments read through the listener made last on the meter instead.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import BulkheadConfig, ResilienceConfig, ResilienceManager, telemetry
from otel_resilience.engine.events import HUB, Event, RetryScheduled, StrategyTelemetry, TelemetrySource
from otel_resilience.engine.registry import POLICIES
from otel_resilience.telemetry import semconv as sc

OBSERVED = (sc.EXECUTIONS, sc.BULKHEAD_CONCURRENCY_LIMIT, sc.TELEMETRY_ERRORS)


def _points(reader: InMemoryMetricReader, policy: str) -> dict[str, float]:
    """Each observed metric's sum over the series of ``policy`` (telemetry errors: its one series)."""
    found: dict[str, float] = {}
    data = reader.get_metrics_data()
    for resource in [] if data is None else data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in OBSERVED:
                    continue
                for point in metric.data.data_points:
                    name = point.attributes.get(sc.POLICY, point.attributes.get(sc.NAME))
                    if name in (policy, None):
                        found[metric.name] = found.get(metric.name, 0.0) + point.value
    return found


@pytest.mark.parametrize("between", ["nothing", "uninstrument"])
def test_observables_report_after_instrument_again(between: str) -> None:
    """Executions, bulkhead limits and telemetry errors are still exported, and still count on."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    manager = ResilienceManager()
    name = f"again-{between}"  # a name of its own: the registries are the process's
    config = ResilienceConfig(name=name, bulkhead_config=BulkheadConfig(max_concurrent=3))
    try:
        first = telemetry.instrument(meter_provider=provider)
        for _ in range(4):
            manager.execute_with_resilience_sync(lambda: None, config)
        first.failed("a test's own failure")  # a telemetry error, counted by the first listener
        before = _points(reader, name)
        assert (before[sc.EXECUTIONS], before[sc.BULKHEAD_CONCURRENCY_LIMIT]) == (4, 3)
        assert before[sc.TELEMETRY_ERRORS] >= 1
        if between == "uninstrument":
            telemetry.uninstrument()
            assert _points(reader, name) == {}  # uninstrumented: nothing reported
        telemetry.instrument(meter_provider=provider)
        manager.execute_with_resilience_sync(lambda: None, config)
        after = _points(reader, name)
        assert (after[sc.EXECUTIONS], after[sc.BULKHEAD_CONCURRENCY_LIMIT]) == (5, 3)
        assert after[sc.TELEMETRY_ERRORS] >= before[sc.TELEMETRY_ERRORS]  # a counter: never down
    finally:
        telemetry.uninstrument()
        provider.shutdown()


class _Pausing:
    """A named policy whose name, read by the zeroing of a listener made in ``thread``, waits for ``go``.

    It holds that thread's ``instrument()`` after its listener's observables were made and
    before the listener is registered: where another thread's ``instrument()`` may run whole.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self.thread: threading.Thread | None = None
        self.paused = threading.Event()
        self.go = threading.Event()

    @property
    def name(self) -> str:
        if threading.current_thread() is self.thread and not self.go.is_set():
            self.paused.set()
            self.go.wait(10.0)
        return self._name


def test_observables_read_through_the_listener_registered_last_when_two_instrument_calls_overlap() -> None:
    """Thread A's listener is made first and registered last: the instruments read through it.

    They used to read through the listener *made* last (B's), closed when A's replaced it: the
    executions, bulkhead and breaker series vanished for good while A's listener was in place.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    name = "again-overlap"
    config = ResilienceConfig(name=name, bulkhead_config=BulkheadConfig(max_concurrent=3))
    manager = ResilienceManager()
    manager.execute_with_resilience_sync(lambda: None, config)
    pausing = _Pausing("again-overlap-pause")
    POLICIES.register(pausing)
    registered: list[telemetry.OtelListener] = []
    pausing.thread = threading.Thread(
        target=lambda: registered.append(telemetry.instrument(meter_provider=provider))
    )
    try:
        pausing.thread.start()
        assert pausing.paused.wait(10.0)
        telemetry.instrument(meter_provider=provider)  # thread B's, made and registered meanwhile
        pausing.go.set()
        pausing.thread.join(10.0)
        assert telemetry.current_listener() is registered[0]
        points = _points(reader, name)
        assert (points.get(sc.EXECUTIONS), points.get(sc.BULKHEAD_CONCURRENCY_LIMIT)) == (1, 3)
    finally:
        pausing.go.set()
        POLICIES.unregister(pausing)
        telemetry.uninstrument()
        provider.shutdown()


def test_install_default_overlapping_instrument_keeps_the_instrumented_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``install_default()`` that found no listener, overlapped by ``instrument()``, keeps that one.

    It checked for a listener, let go of the lock, and registered one of its own afterwards: the
    listener an overlapping ``instrument()`` had registered meanwhile was replaced and closed. The
    listener it made and did not register is closed, and the observables read through the one in
    place.
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    name = "again-default-overlap"
    config = ResilienceConfig(name=name, bulkhead_config=BulkheadConfig(max_concurrent=3))
    manager = ResilienceManager()
    manager.execute_with_resilience_sync(lambda: None, config)
    had_default = telemetry.current_listener() is not None
    real = telemetry.OtelListener
    made: list[telemetry.OtelListener] = []
    making, go = threading.Event(), threading.Event()
    got: list[telemetry.OtelListener] = []
    worker = threading.Thread(target=lambda: got.append(telemetry.install_default()))

    def make(**kwargs: object) -> telemetry.OtelListener:
        listener = real(**kwargs)  # type: ignore[arg-type]
        if threading.current_thread() is worker:  # install_default's, after it found none
            made.append(listener)
            making.set()
            go.wait(10.0)
        return listener

    telemetry.uninstrument()
    monkeypatch.setattr(telemetry, "OtelListener", make)
    try:
        worker.start()
        assert making.wait(10.0)
        instrumented = telemetry.instrument(meter_provider=provider)  # registered meanwhile
        go.set()
        worker.join(10.0)
        assert telemetry.current_listener() is instrumented
        assert got == [instrumented]
        assert instrumented.active
        assert not made[0].active
        points = _points(reader, name)
        assert (points.get(sc.EXECUTIONS), points.get(sc.BULKHEAD_CONCURRENCY_LIMIT)) == (1, 3)
    finally:
        go.set()
        worker.join(10.0)
        monkeypatch.undo()
        telemetry.uninstrument()
        if had_default:
            telemetry.install_default()
        provider.shutdown()


def test_an_event_reported_while_instrument_replaces_the_listener_reaches_exactly_one_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another thread reports an event while ``instrument()`` closes the listener it replaces.

    The hub swaps the two listeners in one change: the event reaches the new one. It used to
    remove the previous one, close it, then add the new one: an event in between reached neither.
    """
    provider = MeterProvider()
    reporter = StrategyTelemetry(TelemetrySource("retry", "swap-retry"))
    got: list[telemetry.OtelListener] = []
    on_event, close = telemetry.OtelListener.on_event, telemetry.OtelListener.close

    def recording(self: telemetry.OtelListener, source: TelemetrySource, event: Any, args: Any) -> None:
        if source is reporter.source:
            got.append(self)
        on_event(self, source, event, args)

    def reporting_close(self: telemetry.OtelListener, **handover: Any) -> None:
        if self is first:  # the replaced listener, closed by instrument(): report from another thread
            thread = threading.Thread(
                target=reporter.report, args=(Event.RETRY_SCHEDULED, RetryScheduled(1, 0.0, "OSError"))
            )
            thread.start()
            thread.join(10.0)
        close(self, **handover)

    try:
        first = telemetry.instrument(meter_provider=provider)
        monkeypatch.setattr(telemetry.OtelListener, "on_event", recording)
        monkeypatch.setattr(telemetry.OtelListener, "close", reporting_close)
        second = telemetry.instrument(meter_provider=provider)
        assert got == [second]
        reporter.report(Event.RETRY_SCHEDULED, RetryScheduled(2, 0.0, "OSError"))
        assert got == [second, second]
    finally:
        monkeypatch.undo()
        telemetry.uninstrument()
        provider.shutdown()


def test_a_report_that_read_the_routes_before_the_swap_is_counted_once(otel: Any) -> None:
    """A report holds the listeners it read; ``instrument()`` closes one of them before it is reached.

    The closed listener dropped the event: counted by neither listener. It hands what it still
    gets to the listener that replaced it, so the retry is counted once, by the one in place.
    """
    reporter = StrategyTelemetry(TelemetrySource("retry", "swap-late"))
    replaced: list[telemetry.OtelListener] = []

    class _Swapping:
        """A listener routed before the OpenTelemetry one: it swaps that one, in the report's own thread."""

        def on_event(self, source: TelemetrySource, event: Any, args: Any) -> None:
            if source is reporter.source and not replaced:
                replaced.append(telemetry.instrument(meter_provider=otel.meter_provider))

    swapping = _Swapping()
    HUB.remove_listener(otel.listener)
    HUB.add_listener(swapping)
    HUB.add_listener(otel.listener)  # after the swapping one, in every route
    try:
        reporter.report(Event.RETRY_SCHEDULED, RetryScheduled(1, 0.0, "OSError"))
        assert not otel.listener.active
        assert telemetry.current_listener() is replaced[0]
        assert otel.values(sc.RETRIES) == {
            frozenset({(sc.POLICY, "swap-late"), (sc.NAME, "swap-late"), (sc.ERROR_TYPE, "OSError")}): 1
        }
    finally:
        HUB.remove_listener(swapping)


def test_an_execution_in_flight_while_instrument_replaces_the_listener_records_its_duration(
    otel: Any,
) -> None:
    """The execution opened its scope on the listener ``instrument()`` closes before it ends.

    Its end found the closed listener's instruments gone: the execution was counted by
    ``resilience.executions`` and its span exported, but its duration was never recorded.
    """
    manager = ResilienceManager()

    def swapping() -> str:
        telemetry.instrument(otel.tracer_provider, otel.meter_provider, otel.logger_provider)
        return "ok"

    assert manager.execute_with_resilience_sync(swapping, ResilienceConfig(name="in-flight")) == "ok"
    assert not otel.listener.active
    (point,) = [p for p in otel.points(sc.EXECUTION_DURATION) if p.attributes[sc.POLICY] == "in-flight"]
    assert point.count == 1
    assert [s.name for s in otel.spans()] == ["in-flight"]
