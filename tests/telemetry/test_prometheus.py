"""The exported Prometheus names: semconv.prometheus_series() against a real /metrics scrape."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.exporter.prometheus._mapping import map_unit, sanitize_full_name
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.parser import text_string_to_metric_families
from redis_support import free_port

from otel_resilience.engine.events import (
    AlertRaised,
    CallRejected,
    ChaosInjected,
    Event,
    FallbackUsed,
    HedgeDenied,
    HedgeStarted,
    HedgeWon,
    Outcome,
    PatternDetected,
    PermitWaited,
    RecoveryAttempted,
    RetryExhausted,
    RetryScheduled,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
    TimeoutOccurred,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CountWindow
from otel_resilience.patterns.rate_limiter import RateLimiter, RateLimiterConfig
from otel_resilience.patterns.retry import Retry, RetryBudget, RetryPolicy
from otel_resilience.store import RedisStore
from otel_resilience.telemetry import current_listener, install_default, instrument, semconv, uninstrument
from otel_resilience.testing import FakeClock


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def scrape() -> Iterator[str]:
    """Exercise every instrument, serve /metrics over HTTP, and return the scraped text."""
    with _scraped(in_process=False) as text:
        yield text


@pytest.fixture
def in_process_scrape() -> Iterator[str]:
    """The same, with the duration histograms kept in process (``in_process_histograms=True``)."""
    with _scraped(in_process=True) as text:
        yield text


def _exported(*, in_process: bool) -> list[semconv.InstrumentSpec]:
    """The instruments a listener exports: the duration histograms, or their in-process counters."""
    kept = {name for counters in semconv.IN_PROCESS_HISTOGRAMS.values() for name in counters.values()}
    skipped = set(semconv.IN_PROCESS_HISTOGRAMS) if in_process else kept
    return [spec for spec in semconv.INSTRUMENTS if spec.name not in skipped]


@contextlib.contextmanager
def _scraped(*, in_process: bool) -> Iterator[str]:
    had_default = current_listener() is not None
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider, in_process_histograms=in_process)
    breaker = CircuitBreaker("prom-cb", CircuitBreakerConfig(failure_threshold=1))
    windowed = CircuitBreaker(
        "prom-window", CircuitBreakerConfig(sliding_window=CountWindow(10), minimum_calls=2)
    )
    windowed.metrics_only()  # its rate gauges exist from creation; its state is metrics_only
    bulkhead = Bulkhead("prom-bh", BulkheadConfig(max_concurrent=2))
    budgeted = Retry("prom-budget", RetryPolicy(budget=RetryBudget())).as_strategy("prom-policy")  # its level
    limiter = RateLimiter("prom-rl", RateLimiterConfig(rate=1.0, burst=1))  # its permits, from creation
    keyed = RateLimiter.per_key("prom-keyed-rl", RateLimiterConfig(rate=1.0))  # its keys, from creation
    manager = ResilienceManager(clock=FakeClock())  # a watch's start-up wait for a file just written: no time
    named = manager.policy("prom-named", ResilienceConfig())  # its keys; reloads from 0
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "resilience.yaml"
    path.write_text("policies:\n  prom-watched:\n    timeout: 1s\n")
    watch = manager.watch(path, interval=3600)  # its stale gauge, at 0
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", namespace="prom-store", timeout=0.1)
    shared = CircuitBreaker("prom-shared", CircuitBreakerConfig(store=store))  # the store's series
    assert bulkhead.execute_sync(lambda: 1) == 1
    with pytest.raises(ZeroDivisionError):
        breaker.call_sync(lambda: 1 / 0)
    telemetry = StrategyTelemetry(TelemetrySource("retry", "prom-retry", "prom-policy"))
    for event, args in (
        (Event.RETRY_SCHEDULED, RetryScheduled(1, 0.2, "OSError")),
        (Event.RETRY_EXHAUSTED, RetryExhausted(3, "OSError", "max_attempts")),
        (Event.STATE_CHANGED, StateChanged("closed", "open", "forced")),
        (Event.CALL_REJECTED, CallRejected("circuit_open")),
        (Event.TIMEOUT, TimeoutOccurred(1.0, "total")),
        (Event.FALLBACK_USED, FallbackUsed("default_value", "success", "OSError")),
        (Event.RECOVERY_ATTEMPTED, RecoveryAttempted("retry", "success", "OSError")),
        (Event.PATTERN_DETECTED, PatternDetected("OSError", "op", 3, 60.0)),
        (Event.ALERT_RAISED, AlertRaised("circuit_open", "critical", "prom-cb", "opened")),
        (Event.PERMIT_WAITED, PermitWaited(0.25)),
        (Event.CHAOS_INJECTED, ChaosInjected("fault", "OSError")),
        (Event.HEDGE_STARTED, HedgeStarted(2, "delay")),
        (Event.HEDGE_DENIED, HedgeDenied("delay", "budget")),
        (Event.HEDGE_WON, HedgeWon(2, "hedge")),
    ):
        telemetry.report(event, args)
    telemetry.end_attempt(telemetry.start_attempt("prom-op", 2), Outcome.SUCCESS)
    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            yield response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()
        store.close()
        watch.stop()
        folder.cleanup()
        del breaker, windowed, bulkhead, budgeted, limiter, keyed, named, shared


def _sample_names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.parametrize("in_process", [False, True], ids=["sdk-histograms", "in-process-histograms"])
def test_every_instrument_is_scraped_under_its_derived_names(request, in_process):
    """Each instrument's derived series names appear in a real scrape of the exporter (in each mode)."""
    names = _sample_names(request.getfixturevalue("in_process_scrape" if in_process else "scrape"))
    for spec in _exported(in_process=in_process):
        missing = set(semconv.prometheus_series(spec)) - names
        assert not missing, (spec.name, missing, sorted(n for n in names if n.startswith("resilience")))


@pytest.mark.parametrize("in_process", [False, True], ids=["sdk-histograms", "in-process-histograms"])
def test_scrape_has_no_resilience_series_the_registry_does_not_derive(request, in_process):
    """Dashboards can trust the registry: nothing else named resilience_* is exported."""
    derived = {name for spec in _exported(in_process=in_process) for name in semconv.prometheus_series(spec)}
    text = request.getfixturevalue("in_process_scrape" if in_process else "scrape")
    scraped = {name for name in _sample_names(text) if name.startswith("resilience_")}
    assert scraped == derived


def test_in_process_buckets_read_as_a_prometheus_histogram(in_process_scrape):
    """The bucket counter's samples are cumulative by le up to +Inf, which equals the count."""
    families = {family.name: family for family in text_string_to_metric_families(in_process_scrape)}
    bucket = semconv.prometheus_series(semconv.instrument(semconv.ATTEMPT_LATENCY_BUCKETS))[0]
    count = semconv.prometheus_series(semconv.instrument(semconv.ATTEMPT_LATENCY_COUNT))[0]
    samples = [s for f in families.values() for s in f.samples if s.name == bucket]
    counts = [s for f in families.values() for s in f.samples if s.name == count]
    assert [s.labels["le"] for s in samples][-1] == "+Inf"
    values = [s.value for s in samples]
    assert values == sorted(values)
    assert values[-1] == counts[0].value == 1


def test_labels_are_the_sanitised_attribute_keys(scrape):
    """Attribute keys become labels with dots replaced by underscores."""
    families = {family.name: family for family in text_string_to_metric_families(scrape)}
    state = families["resilience_circuit_breaker_state"]
    labels = {key for sample in state.samples for key in sample.labels}
    assert {"resilience_name", "resilience_circuit_breaker_state"} <= labels
    values = {
        sample.labels["resilience_circuit_breaker_state"]: sample.value
        for sample in state.samples
        if sample.labels["resilience_name"] == "prom-cb"
    }
    assert values == {"closed": 0.0, "open": 1.0, "half_open": 0.0, "disabled": 0.0, "metrics_only": 0.0}


@pytest.mark.parametrize(
    ("name", "kind", "unit", "expected"),
    [
        (
            "resilience.execution.duration",
            semconv.InstrumentKind.HISTOGRAM,
            "s",
            "resilience_execution_duration_seconds",
        ),
        ("resilience.retries", semconv.InstrumentKind.COUNTER, "{retry}", "resilience_retries"),
        (
            "resilience.circuit_breaker.state",
            semconv.InstrumentKind.OBSERVABLE_GAUGE,
            "1",
            "resilience_circuit_breaker_state",
        ),
        ("a.b_total", semconv.InstrumentKind.COUNTER, "", "a_b"),
        ("a.size", semconv.InstrumentKind.OBSERVABLE_GAUGE, "By", "a_size_bytes"),
        ("a.rate", semconv.InstrumentKind.OBSERVABLE_GAUGE, "m/s", "a_rate_meters_per_second"),
        ("a.latency_seconds", semconv.InstrumentKind.HISTOGRAM, "s", "a_latency_seconds"),
        ("9lives", semconv.InstrumentKind.OBSERVABLE_GAUGE, "", "_lives"),
    ],
)
def test_prometheus_name_matches_the_exporter_translation(name, kind, unit, expected):
    """The derivation agrees with the exporter's own mapping functions on tricky cases."""
    spec = semconv.InstrumentSpec(name, kind, unit, "", ())
    assert semconv.prometheus_name(spec) == expected
    exporter_base = sanitize_full_name(name)
    if kind.is_counter and exporter_base.endswith("_total"):
        exporter_base = exporter_base[: -len("_total")]
    exporter_unit = map_unit(unit)
    if exporter_unit and not exporter_base.endswith("_" + exporter_unit):
        exporter_base += "_" + exporter_unit
    assert exporter_base == expected


def test_a_key_holding_a_lone_surrogate_leaves_the_scrape_whole() -> None:
    """A key decoded from a request with a lone surrogate (a JSON ``"\\ud800"``), exported as an
    attribute (``key_attribute_limit``): was written as it is, and every scrape of the process then
    failed (``UnicodeEncodeError``); now escaped, ending in a digest of the key, so that it is not
    the key written with those characters."""
    had_default = current_listener() is not None
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False
    )
    instrument(meter_provider=provider)
    try:
        manager = ResilienceManager(clock=FakeClock())
        handle = manager.policy(
            "prom-tenants", ResilienceConfig(circuit_breaker=CircuitBreakerConfig()), key_attribute_limit=10
        )
        for key in ("ok", "bad\ud800", "bad\\ud800"):
            assert handle.for_key(key).execute_sync(lambda: 1) == 1
        text = b"".join(
            make_wsgi_app(registry)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *_: None)
        ).decode()
        keys = {
            sample.labels["resilience_key"]
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("resilience_policy") == "prom-tenants" and "resilience_key" in sample.labels
        }
        assert {"ok", "bad\\ud800"} < keys  # the key written with a backslash, as it is
        escaped = keys - {"ok", "bad\\ud800", ""}  # "": the series of no key
        assert len(escaped) == 1
        assert next(iter(escaped)).startswith("bad\\ud800...#")
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()
