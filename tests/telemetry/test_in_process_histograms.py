"""Duration histograms kept in process (``instrument(in_process_histograms=True)``).

Exported through three observable counters each: cumulative bucket counts by ``le`` (read by
``histogram_quantile`` as a Prometheus histogram), the sum and the count.
"""

from __future__ import annotations

import itertools
import math
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from otel_support import Otel

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.telemetry import instrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.histograms import InProcessHistogram
from otel_resilience.testing import FakeClock


@pytest.fixture
def collected(otel: Otel) -> Otel:
    """The ``otel`` fixture's providers, instrumented again with the histograms kept in process."""
    instrument(otel.tracer_provider, otel.meter_provider, otel.logger_provider, in_process_histograms=True)
    return otel


def _by_attributes(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(point.attributes.items()): point.value for point in metric.data.data_points}


def test_execution_durations_are_bucketed_as_prometheus_does(collected: Otel) -> None:
    """Values at a bound count in that bound's bucket; buckets are cumulative; +Inf is the count."""
    clock = FakeClock()
    source = TelemetrySource("pipeline", "timed", "timed")
    pipeline = PipelineBuilder("timed", clock=clock, source=source).build()
    for seconds in (0.003, 0.005, 0.0051, 2.0, 100.0):
        pipeline.execute_sync(clock.advance, seconds)
    metrics = collected.metrics()
    assert sc.EXECUTION_DURATION not in metrics  # not recorded through the SDK's histogram
    base = {sc.POLICY: "timed", sc.PATTERN: "pipeline", sc.OUTCOME: "success"}
    buckets = _by_attributes(metrics[sc.EXECUTION_LATENCY_BUCKETS])

    def at(le: str) -> int:
        count: int = buckets[frozenset({**base, sc.BUCKET_BOUND: le}.items())]
        return count

    assert [at(le) for le in ("0.001", "0.0025", "0.005", "0.01", "1.0", "2.5", "60.0", "+Inf")] == [
        0, 0, 2, 3, 3, 4, 4, 5,
    ]  # fmt: skip
    assert len(buckets) == len(sc.DURATION_BOUNDARIES) + 1
    assert _by_attributes(metrics[sc.EXECUTION_LATENCY_COUNT]) == {frozenset(base.items()): 5}
    (total,) = _by_attributes(metrics[sc.EXECUTION_LATENCY_SUM]).values()
    assert total == pytest.approx(102.0131)


def test_instrumenting_the_same_provider_again_counts_on(collected: Otel) -> None:
    """A second instrument() on the provider (a switch changed) keeps what was counted: no counter goes down.

    The SDK keeps an instrument's points per meter, whatever the listener; so do the histograms
    kept in process, which the new listener's collections read.
    """
    clock = FakeClock()
    source = TelemetrySource("pipeline", "reinstrumented", "reinstrumented")
    pipeline = PipelineBuilder("reinstrumented", clock=clock, source=source).build()
    base = frozenset({sc.POLICY: "reinstrumented", sc.PATTERN: "pipeline", sc.OUTCOME: "success"}.items())

    def counted() -> tuple[int, float]:
        metrics = collected.metrics()
        total = _by_attributes(metrics[sc.EXECUTION_LATENCY_SUM])[base]
        return _by_attributes(metrics[sc.EXECUTION_LATENCY_COUNT])[base], total

    for _ in range(3):
        pipeline.execute_sync(clock.advance, 0.5)
    assert counted() == (3, pytest.approx(1.5))
    instrument(
        collected.tracer_provider,
        collected.meter_provider,
        collected.logger_provider,
        in_process_histograms=True,
        record_messages=True,
    )
    pipeline.execute_sync(clock.advance, 0.5)
    assert counted() == (4, pytest.approx(2.0))


def test_attempt_durations_and_failures_keep_their_attributes(collected: Otel) -> None:
    """A retried failure: each attempt counted under its outcome and error type, the execution too."""
    retry = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter="none")  # type: ignore[arg-type]

    def fail() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        ResilienceManager().execute_with_resilience_sync(
            fail, ResilienceConfig(name="flaky", retry_policy=retry)
        )
    metrics = collected.metrics()
    assert sc.ATTEMPT_DURATION not in metrics
    attempts = _by_attributes(metrics[sc.ATTEMPT_LATENCY_COUNT])
    assert list(attempts.values()) == [3]
    (attributes,) = attempts
    assert dict(attributes)[sc.ERROR_TYPE] == "ConnectionError"
    executions = _by_attributes(metrics[sc.EXECUTION_LATENCY_COUNT])
    assert [dict(key)[sc.OUTCOME] for key in executions] == ["failure"]
    assert all(value == 1 for value in executions.values())


def test_records_from_many_threads_are_all_counted() -> None:
    """8 threads x 2 000 records of 0.5 s: exact count, exact sum, nothing lost."""
    histogram = InProcessHistogram(sc.DURATION_BOUNDARIES)
    attributes = {sc.POLICY: "threads"}
    barrier = threading.Barrier(8)

    def record() -> None:
        barrier.wait(timeout=5)
        for _ in range(2000):
            histogram.record(0.5, attributes)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [o.value for o in histogram.counts()] == [16000]
    assert [o.value for o in histogram.sums()] == [8000.0]
    assert {o.attributes[sc.BUCKET_BOUND]: o.value for o in histogram.buckets()}["0.25"] == 0
    assert {o.attributes[sc.BUCKET_BOUND]: o.value for o in histogram.buckets()}["0.5"] == 16000


def test_equal_attribute_sets_share_a_series_and_sets_past_the_limit_overflow() -> None:
    """A set is one series however many dicts name it; sets past the limit share the overflow series."""
    histogram = InProcessHistogram((1.0,), limit=2)
    histogram.record(0.5, {sc.POLICY: "a"})
    histogram.record(0.5, {sc.POLICY: "a"})  # another dict, the same set
    histogram.record(2.0, {sc.POLICY: "b"})
    histogram.record(0.5, {sc.POLICY: "c"})
    histogram.record(0.5, {sc.POLICY: "d"})
    counts = {frozenset(o.attributes.items()): o.value for o in histogram.counts()}
    assert counts == {
        frozenset({sc.POLICY: "a"}.items()): 2,
        frozenset({sc.POLICY: "b"}.items()): 1,
        frozenset({sc.METRIC_OVERFLOW: True}.items()): 2,
    }


def test_dicts_made_again_and_again_neither_overflow_nor_pile_up() -> None:
    """A listener that drops its cached dicts and makes new ones (many sources) keeps one series per
    set, and the histogram keeps no more than a bounded number of the dicts it has seen."""
    histogram = InProcessHistogram((1.0,), limit=3)
    for _ in range(100):
        for policy in ("a", "b"):
            histogram.record(0.5, {sc.POLICY: policy})  # a new dict every time
    assert {o.attributes[sc.POLICY]: o.value for o in histogram.counts()} == {"a": 100, "b": 100}
    assert len(histogram._by_dict) <= 4 * 3


@pytest.mark.parametrize(
    ("boundaries", "limit", "kind", "field"),
    [
        ((), 10, ValueError, "boundaries"),
        ((1.0, 1.0), 10, ValueError, "boundaries"),
        ((2.0, 1.0), 10, ValueError, "boundaries"),
        ((1.0,), 0, ValueError, "limit"),
        ((0.1, float("nan"), 1.0), 10, ValueError, r"boundaries\[1\]"),
        ((0.1, float("inf")), 10, ValueError, r"boundaries\[1\]"),
        ((float("-inf"), 1.0), 10, ValueError, r"boundaries\[0\]"),
        (("0.1", "1"), 10, TypeError, r"boundaries\[0\]"),
        ((True, 2.0), 10, TypeError, r"boundaries\[0\]"),
        ("12", 10, TypeError, "boundaries"),
        (None, 10, TypeError, "boundaries"),
        ((1.0,), 2.5, TypeError, "limit"),
        ((1.0,), True, TypeError, "limit"),
        ((1.0,), "10", TypeError, "limit"),
    ],
)
def test_bad_arguments_are_refused_naming_the_field(
    boundaries: Any, limit: Any, kind: type[Exception], field: str
) -> None:
    """Refused at construction, the error naming the field, never taken silently: a NaN or an
    infinite bound (its bucket would be labelled ``le="nan"`` or ``"inf"`` beside ``+Inf``, and a
    NaN breaks the bisection), a text or a bool taken for numbers, a limit that is no int."""
    with pytest.raises(kind, match=f"InProcessHistogram.{field}"):
        InProcessHistogram(boundaries, limit=limit)


def test_durations_the_sdk_histogram_refuses_are_not_counted() -> None:
    """Negative, NaN and infinite durations: the SDK's histogram drops them, so does this one.

    Counted, a negative duration made the sum counter go down (a counter reset to ``rate``) and a
    NaN made it NaN for good; now each is refused with a ValueError (which the listener counts
    as a telemetry error), and the counts, sum and buckets are the SDK histogram's.
    """
    reader = InMemoryMetricReader()
    sdk = (
        MeterProvider(metric_readers=[reader])
        .get_meter("reference")
        .create_histogram("reference", explicit_bucket_boundaries_advisory=list(sc.DURATION_BOUNDARIES))
    )
    histogram = InProcessHistogram(sc.DURATION_BOUNDARIES)
    attributes = {sc.POLICY: "refused"}
    for value in (0.0, -0.0, 5e-324, 0.001, 60.0, 60.5, 1e308):
        sdk.record(value, attributes)
        histogram.record(value, attributes)
    for value in (-1.0, -5e-324, math.nan, math.inf, -math.inf):
        sdk.record(value, attributes)
        with pytest.raises(ValueError, match="duration must be finite and non-negative"):
            histogram.record(value, attributes)
    (point,) = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert [o.value for o in histogram.counts()] == [point.count] == [7]
    assert [o.value for o in histogram.sums()] == [point.sum]
    assert [o.value for o in histogram.buckets()] == list(itertools.accumulate(point.bucket_counts))


@pytest.mark.parametrize("boundaries", [(-1.0, 0.5, 1.0), (-0.001,), (-5e-324, 1.0)])
def test_a_bound_below_zero_is_refused_naming_it(boundaries: tuple[float, ...]) -> None:
    """Durations are never negative: a bound below 0 is refused at construction, naming it.

    Taken, it sat below the bisection's own floor (the largest negative float), so the bounds
    searched were no longer in order: a duration of -0.5 s under bounds (-1, 0.5, 1) was counted
    in the 0.5 s bucket and took the sum counter down, where the SDK's histogram drops it.
    """
    with pytest.raises(ValueError, match=r"InProcessHistogram.boundaries\[0\] must be >= 0"):
        InProcessHistogram(boundaries)


def test_a_clock_stepping_back_is_a_telemetry_error_not_a_negative_duration(collected: Otel) -> None:
    """A pipeline clock read going back: the sum counter does not go down, the error is counted."""
    readings = iter((10.0, 11.0, 20.0, 5.0))

    class SteppingClock(FakeClock):
        def now(self) -> float:
            return next(readings)

    clock = SteppingClock()
    source = TelemetrySource("pipeline", "stepped", "stepped")
    pipeline = PipelineBuilder("stepped", clock=clock, source=source).build()
    # The telemetry errors counter is the process's: what earlier tests counted is read first.
    counted = collected.metrics().get(sc.TELEMETRY_ERRORS)
    errors_before = 0 if counted is None else sum(_by_attributes(counted).values())
    pipeline.execute_sync(lambda: None)
    pipeline.execute_sync(lambda: None)
    metrics = collected.metrics()
    assert list(_by_attributes(metrics[sc.EXECUTION_LATENCY_COUNT]).values()) == [1]
    assert list(_by_attributes(metrics[sc.EXECUTION_LATENCY_SUM]).values()) == [1.0]
    assert sum(_by_attributes(metrics[sc.TELEMETRY_ERRORS]).values()) == errors_before + 1


def test_one_collection_reads_the_three_counters_from_one_snapshot() -> None:
    """A record between the reads of the bucket, sum and count counters waits for the next collection.

    Read each from its own copy, a collection under load exported a ``.count`` above the ``+Inf``
    bucket (196 collections of 200 with two threads executing), as no histogram's point can be.
    """
    histogram = InProcessHistogram(sc.DURATION_BOUNDARIES)
    attributes = {sc.POLICY: "snapshot"}
    histogram.record(0.5, attributes)
    assert [o.value for o in histogram.buckets()][-1] == 1
    histogram.record(2.0, attributes)  # lands while the collection reads its other counters
    assert [o.value for o in histogram.sums()] == [0.5]
    assert [o.value for o in histogram.counts()] == [1]
    # the next collection, in whichever order its counters are read, has it
    assert [o.value for o in histogram.counts()] == [2]
    assert [o.value for o in histogram.sums()] == [2.5]
    assert [o.value for o in histogram.buckets()][-1] == 2


def test_collections_under_load_export_points_a_histogram_could(collected: Otel) -> None:
    """Threads execute while a reader collects: per collection, ``.count`` is the ``+Inf`` bucket."""
    pipeline = PipelineBuilder("loaded", source=TelemetrySource("pipeline", "loaded", "loaded")).build()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            pipeline.execute_sync(lambda: None)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(50):
            metrics = collected.metrics()
            if sc.EXECUTION_LATENCY_COUNT not in metrics:
                continue
            (count,) = (p.value for p in metrics[sc.EXECUTION_LATENCY_COUNT].data.data_points)
            (every,) = (
                p.value
                for p in metrics[sc.EXECUTION_LATENCY_BUCKETS].data.data_points
                if p.attributes[sc.BUCKET_BOUND] == "+Inf"
            )
            assert count == every
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
