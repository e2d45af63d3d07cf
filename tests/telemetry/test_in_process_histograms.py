"""Duration histograms kept in process (``instrument(in_process_histograms=True)``).

Exported through three observable counters each: cumulative bucket counts by ``le`` (read by
``histogram_quantile`` as a Prometheus histogram), the sum and the count.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
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
