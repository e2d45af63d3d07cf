"""OTEL_RESILIENCE_* environment switches, read by instrument() when its keyword is not given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.telemetry import current_listener, env, install_default, instrument, uninstrument
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

VARIABLES = [switch.variable for switch in env.SWITCHES]


class Run:
    """Fresh providers; ``go(**keywords)`` instruments, runs a retried failure and collects."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def go(self, **keywords: Any) -> tuple[list[Any], set[str]]:
        instrument(self.tracer_provider, self.meter_provider, **keywords)
        retry = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter="none")  # type: ignore[arg-type]
        config = ResilienceConfig(name="env", retry_policy=retry)

        def fail() -> None:
            raise ConnectionError("secret-detail")

        with pytest.raises(ConnectionError):
            ResilienceManager().execute_with_resilience_sync(fail, config)
        data = self.reader.get_metrics_data()
        names = {
            metric.name
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }
        return list(self.spans.get_finished_spans()), names


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    had_default = current_listener() is not None
    made = Run()
    try:
        yield made
    finally:
        uninstrument()
        if had_default:
            install_default()
        made.tracer_provider.shutdown()
        made.meter_provider.shutdown()


def test_unset_everything_is_on_and_messages_are_not_recorded(run: Run) -> None:
    """Without variables: execution and attempt spans, both histograms, no exception message."""
    spans, names = run.go()
    assert {span.name for span in spans} >= {"env", "env attempt"}
    assert {"resilience.execution.duration", "resilience.attempt.duration"} <= names
    assert all("secret-detail" not in (span.status.description or "") for span in spans)


def test_spans_disabled_keeps_the_metrics(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESILIENCE_SPANS_DISABLED=TRUE (any case): no span at all, the histograms stay."""
    monkeypatch.setenv("OTEL_RESILIENCE_SPANS_DISABLED", "TRUE")
    spans, names = run.go()
    assert spans == []
    assert "resilience.execution.duration" in names


def test_duration_disabled_keeps_the_spans(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESILIENCE_DURATION_DISABLED=true: no duration histogram, spans stay."""
    monkeypatch.setenv("OTEL_RESILIENCE_DURATION_DISABLED", "true")
    spans, names = run.go()
    assert not names & {"resilience.execution.duration", "resilience.attempt.duration"}
    assert {span.name for span in spans} >= {"env", "env attempt"}


def test_in_process_histograms_from_the_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS=true: the durations arrive as the in-process counters."""
    monkeypatch.setenv("OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS", "true")
    _, names = run.go()
    assert not names & {"resilience.execution.duration", "resilience.attempt.duration"}
    assert {
        "resilience.execution.latency.bucket",
        "resilience.execution.latency.sum",
        "resilience.execution.latency.count",
        "resilience.attempt.latency.bucket",
    } <= names


def test_record_messages_from_the_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """OTEL_RESILIENCE_RECORD_MESSAGES=true puts the message in the failed span's status."""
    monkeypatch.setenv("OTEL_RESILIENCE_RECORD_MESSAGES", " True ")
    spans, _ = run.go()
    assert any("secret-detail" in (span.status.description or "") for span in spans)


def test_a_keyword_wins_over_the_environment(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """instrument(spans=True) opens spans even with OTEL_RESILIENCE_SPANS_DISABLED=true."""
    monkeypatch.setenv("OTEL_RESILIENCE_SPANS_DISABLED", "true")
    monkeypatch.setenv("OTEL_RESILIENCE_RECORD_MESSAGES", "true")
    spans, _ = run.go(spans=True, record_messages=False)
    assert {span.name for span in spans} >= {"env"}
    assert all("secret-detail" not in (span.status.description or "") for span in spans)


def test_a_policy_that_switches_spans_off_stays_off(run: Run) -> None:
    """The listener's switch combines with the policy's own: either turns spans off."""
    instrument(run.tracer_provider, run.meter_provider, spans=True)
    ResilienceManager().execute_with_resilience_sync(lambda: 1, ResilienceConfig(name="quiet", spans=False))
    assert run.spans.get_finished_spans() == ()


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("TrUe", True), ("false", False), ("", False)])
def test_booleans_follow_the_otel_spec(raw: str, expected: bool, caplog: pytest.LogCaptureFixture) -> None:
    """'true' in any case is true; 'false' and empty are false, with no warning."""
    with caplog.at_level(logging.WARNING, "otel_resilience.telemetry"):
        assert env.env_flag("X", {"X": raw}) is expected
    assert caplog.records == []


def test_another_value_is_false_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """'1' or 'yes' is false (the OTel rule) and logged as a warning naming the variable."""
    with caplog.at_level(logging.WARNING, "otel_resilience.telemetry"):
        assert (
            env.env_flag("OTEL_RESILIENCE_SPANS_DISABLED", {"OTEL_RESILIENCE_SPANS_DISABLED": "1"}) is False
        )
    assert "OTEL_RESILIENCE_SPANS_DISABLED" in caplog.text
    assert env.resolve(env.SPANS_DISABLED, None, {}) is True
    assert env.resolve(env.SPANS_DISABLED, None, {"OTEL_RESILIENCE_SPANS_DISABLED": "true"}) is False
    assert env.resolve(env.RECORD_MESSAGES, None, {"OTEL_RESILIENCE_RECORD_MESSAGES": "true"}) is True


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        (None, False),
        ("", False),
        ("otel_resilience", True),
        ("requests , otel_resilience,httpx", True),
        ("otel_resilience_extra,requests", False),
    ],
)
def test_the_disabled_instrumentations_list_names_us_exactly(value: str | None, disabled: bool) -> None:
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns us off only when one of its names is ours."""
    environ = {} if value is None else {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": value}
    assert env.instrumentation_disabled(environ) is disabled


@pytest.mark.parametrize("keyword", [switch.keyword for switch in env.SWITCHES])
@pytest.mark.parametrize("value", ["false", 0, 1, "true"])
def test_a_keyword_that_is_not_a_bool_is_refused(run: Run, keyword: str, value: object) -> None:
    """``instrument(spans="false")`` is a TypeError naming the keyword, never read as true.

    The listener in place is kept: nothing changes when the new one cannot be made.
    """
    before = instrument(run.tracer_provider, run.meter_provider)
    with pytest.raises(TypeError, match=rf"\b{keyword}\b.*a bool"):
        instrument(run.tracer_provider, run.meter_provider, **{keyword: value})
    assert current_listener() is before
    assert before.active


@pytest.mark.parametrize("keyword", ["tracer_provider", "meter_provider", "logger_provider"])
def test_a_provider_of_another_signal_is_refused(run: Run, keyword: str) -> None:
    """``instrument(logger_provider=tracer_provider)`` is a TypeError naming the keyword, at once.

    A logger provider without ``get_logger`` used to be taken, and to fail only at the first
    alert, swallowed as a telemetry error: no log record ever left. The listener in place is kept.
    """
    before = instrument(run.tracer_provider, run.meter_provider)
    wrong = run.meter_provider if keyword == "tracer_provider" else run.tracer_provider
    with pytest.raises(TypeError, match=rf"\b{keyword}\b.*Provider"):
        instrument(**{keyword: wrong})
    assert current_listener() is before
    assert before.active


def test_a_bad_value_is_warned_about_once(
    run: Run, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The import's listener and the instrumentor's both read the switches: one warning per bad value.

    Another bad value later is warned about too.
    """
    monkeypatch.setenv("OTEL_RESILIENCE_DURATION_DISABLED", "yes-please")
    with caplog.at_level(logging.WARNING, "otel_resilience.telemetry"):
        run.go()
        run.go()
        monkeypatch.setenv("OTEL_RESILIENCE_DURATION_DISABLED", "no-thanks")
        run.go()
    warned = [r.getMessage() for r in caplog.records if "OTEL_RESILIENCE_DURATION_DISABLED" in r.getMessage()]
    assert len(warned) == 2, warned
    assert "yes-please" in warned[0]
    assert "no-thanks" in warned[1]


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("switched_off", ["environment", "policy"])
def test_a_keyed_policy_s_counters_keep_the_key_with_spans_and_durations_off(
    run: Run, monkeypatch: pytest.MonkeyPatch, switched_off: str, driver: str
) -> None:
    """Spans and durations both off (the two switches, or the policy's own): the key still labels
    the counters of a policy that opted in (``key_attribute_limit``), as with either one on.

    The key used to be made current only by an execution that opened a span or timed itself, so
    a keyed call's retries and rejections were counted on the policy's unkeyed series instead.
    """
    own: dict[str, bool] = {}
    if switched_off == "environment":
        monkeypatch.setenv("OTEL_RESILIENCE_SPANS_DISABLED", "true")
        monkeypatch.setenv("OTEL_RESILIENCE_DURATION_DISABLED", "true")
    else:
        own = {"spans": False, "record_duration": False}
    instrument(run.tracer_provider, run.meter_provider)
    name = f"keyed-off-{switched_off}-{driver}"
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0, jitter="none"),  # type: ignore[arg-type]
        **own,
    )
    policy = ResilienceManager(clock=FakeClock(1000.0)).policy(name, config, key_attribute_limit=5)

    def fail() -> None:
        raise ConnectionError("down")

    async def fail_async() -> None:
        fail()

    for _ in range(2):  # a failure that is retried and then rejected (the breaker opened), then a rejection
        with pytest.raises((ConnectionError, CircuitOpenError)):
            if driver == "sync":
                policy.for_key("acme").execute_sync(fail)
            else:
                asyncio.run(policy.for_key("acme").execute(fail_async))
    counted = {
        (metric.name, point.attributes.get(sc.KEY))
        for resource in run.reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name in (sc.RETRIES, sc.REJECTIONS)
        for point in metric.data.data_points
        if point.attributes.get(sc.POLICY) == name and point.value
    }
    assert counted == {(sc.RETRIES, "acme"), (sc.REJECTIONS, "acme")}
    assert run.spans.get_finished_spans() == ()
