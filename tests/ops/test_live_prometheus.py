"""End to end: a real Prometheus scrapes the library, evaluates the rules, and answers every dashboard query.

The library serves /metrics on 127.0.0.1 with the OpenTelemetry Prometheus exporter while a thread
keeps calls flowing through a manager policy (failures, retries, a breaker, a fallback, a
bulkhead). Prometheus (scrape and rule interval 1 s) loads alerts/rules.yml. Every dashboard
expression, with Grafana's variables set to "All", is then sent to Prometheus' query API: each
must be accepted, and the panels that must show data while such traffic flows must not be empty
(an empty result means a wrong metric or label name).

All of it runs twice: with the duration histograms recorded through the SDK, and kept in process
(``instrument(in_process_histograms=True)``, exported as counters), whose panels must show the same.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time

import pytest
from live_prometheus_support import prometheus_scraping, query, served_metrics

from otel_resilience import (
    AlertSystem,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CountWindow,
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks, naming
from otel_resilience.patterns.retry import Jitter
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

ALL = ".*"
MUST_SHOW_DATA = {
    ("otel-resilience-overview", "Execution rate by policy and outcome"),
    ("otel-resilience-overview", "Success rate by policy"),
    ("otel-resilience-overview", "Latency p50 / p95 / p99 by policy"),
    ("otel-resilience-overview", "Circuit breaker states"),
    ("otel-resilience-overview", "Bulkhead saturation"),
    ("otel-resilience-overview", "Retry rate (retries per execution)"),
    ("otel-resilience-overview", "Fallback rate"),
    ("otel-resilience-circuit-breakers", "Breakers open or half-open"),
    ("otel-resilience-circuit-breakers", "Failure and slow-call rates"),
    ("otel-resilience-circuit-breakers", "Calls by result"),
    ("otel-resilience-circuit-breakers", "Rejected calls"),
    ("otel-resilience-retries-timeouts", "Retries per second by policy"),
    ("otel-resilience-retries-timeouts", "Retries by error type"),
    ("otel-resilience-retries-timeouts", "Retries exhausted by stop reason"),
    ("otel-resilience-retries-timeouts", "Backoff delay p50 / p95 / p99"),
    ("otel-resilience-retries-timeouts", "Retries scheduled and denied by the budget"),
    ("otel-resilience-retries-timeouts", "Retries denied by the budget"),
    ("otel-resilience-retries-timeouts", "Retry budget level"),
    ("otel-resilience-bulkheads", "Running calls and limit"),
    ("otel-resilience-bulkheads", "Waiting calls and queue limit"),
    ("otel-resilience-bulkheads", "Share of executions rejected"),
    ("otel-resilience-recovery", "Fallbacks by strategy and result"),
}
"""Panels the traffic feeds: each query must return data without its zero leg (``or on ...`` at 0
for a healthy service, which would hide a wrong metric or label name)."""
ZERO_OR_DATA = {
    # Zero-initialised series, or 0 when nothing of a kind happened: never "No data".
    ("otel-resilience-overview", "Latency p95 by outcome"),
    ("otel-resilience-overview", "Firing alerts"),
    ("otel-resilience-circuit-breakers", "Transitions by reason"),
    ("otel-resilience-circuit-breakers", "Would-be trips (metrics_only)"),
    ("otel-resilience-bulkheads", "Rejections by reason"),
    ("otel-resilience-retries-timeouts", "Latency p95 by outcome"),
    ("otel-resilience-recovery", "Failures by error type"),
    ("otel-resilience-recovery", "Error patterns detected"),
    ("otel-resilience-recovery", "In-process alerts raised"),
}
MUST_SHOW_DATA |= ZERO_OR_DATA
_names = itertools.count()


@pytest.fixture(scope="module", params=[False, True], ids=["sdk-histograms", "in-process-histograms"])
def in_process_histograms(request) -> bool:
    """Whether the service keeps its duration histograms in process (instrument(in_process_histograms=True))."""
    return bool(request.param)


@pytest.fixture(scope="module")
def service_metrics(in_process_histograms):
    """The library's /metrics on 127.0.0.1, with calls flowing through a full policy in a thread."""
    clock = FakeClock(1000.0)
    alerts = AlertSystem(clock=clock)  # not the process-wide one: other tests count its alerts
    manager = ResilienceManager(clock=clock, alert_system=alerts)
    config = ResilienceConfig(
        name=f"live-checkout-{next(_names)}",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0),
        # A tight budget: of each loop's 5 first attempts, 1 retry allowed (ratio 0.2), the next denied.
        retry_policy=RetryPolicy(
            max_attempts=2,
            initial_delay=0.1,
            jitter=Jitter.NONE,
            budget=RetryBudget(ratio=0.2, min_retries_per_second=0.0, window=10.0, clock=clock),
        ),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
        bulkhead_config=BulkheadConfig(max_concurrent=4),
    )
    # A breaker on trial: a sliding window (its rate gauges), metrics_only (its would-be trips).
    shadow = CircuitBreaker(
        f"live-shadow-{next(_names)}",
        CircuitBreakerConfig(sliding_window=CountWindow(10), minimum_calls=4, slow_call_duration=30.0),
        clock=clock,
    )
    shadow.metrics_only()

    def broken() -> str:
        raise ConnectionError("down")

    def traffic(stop: threading.Event) -> None:
        while not stop.is_set():
            manager.execute_with_resilience_sync(lambda: "ok", config)
            for _ in range(4):  # fail, retry, trip the breaker, then be rejected by it
                manager.execute_with_resilience_sync(broken, config)
            for call in (lambda: "ok", broken, broken):  # 2 of 3 fail: a would-be trip now and then
                with contextlib.suppress(ConnectionError):
                    shadow.call_sync(call)
            clock.advance(61.0)  # the breaker lets a probe through again
            stop.wait(0.02)

    with served_metrics(traffic, in_process_histograms=in_process_histograms) as address:
        yield address
    alerts.close()


@pytest.fixture(scope="module")
def prometheus(prometheus_binary, repo, service_metrics, tmp_path_factory):
    """A real Prometheus on 127.0.0.1 scraping the service every second, with the shipped rules."""
    data = tmp_path_factory.mktemp("prometheus")
    rules = repo / "alerts" / ar.RULES_FILE
    with prometheus_scraping(prometheus_binary, data, "shop", service_metrics, rules) as (base, process):
        deadline = time.monotonic() + 25
        while True:  # ready, scraped twice, and the rules have recorded the shared rates
            # (the bulkheads group reads the executions group's rate: one evaluation later)
            results = [
                query(base, f'{rule}{{job="shop"}}')
                for rule in (ar.R_RETRY_RATIO, ar.R_BULKHEAD_REJECTION_RATIO)
            ]
            if all(result.get("status") == "success" and result["data"]["result"] for result in results):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = (
                    process.stderr.read().decode() if process.stderr and process.poll() is not None else ""
                )
                pytest.fail(f"Prometheus produced no recorded rates in time: {stderr}")
            time.sleep(0.2)
        yield base


def grafana_all(expr: str) -> str:
    """Set every template variable to Grafana's "All" value (.*) and the intervals to durations."""
    expr = checks.substitute_grafana(expr)
    for variable in ("job", "policy", "breaker", "bulkhead", "rate_limiter", "recovery"):
        expr = expr.replace(f"${variable}", ALL)
    return expr


def without_zero(expr: str) -> str:
    """The query without the leg that answers 0 when it has no series (``or on() 0 * ...`` per service, or 0 per
    policy from the executions rule): what must find the traffic's series."""
    return expr.split("\nor on", 1)[0]


def test_every_dashboard_query_runs_on_real_prometheus_with_data(prometheus, dashboards):
    """Prometheus accepts every dashboard query, and the panels fed by the traffic are not empty (their
    own series, not a zero leg)."""
    empty, rejected = [], []
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            key = (dashboard["uid"], panel["title"])
            for target in panel.get("targets", []):
                expr = target["expr"] if key in ZERO_OR_DATA else without_zero(target["expr"])
                result = query(prometheus, grafana_all(expr))
                if result.get("status") != "success":
                    rejected.append((panel["title"], result.get("error")))
                elif not result["data"]["result"] and key in MUST_SHOW_DATA:
                    empty.append((*key, expr))
    assert rejected == []
    assert empty == []


def test_the_duration_panels_read_the_form_the_service_exports(prometheus, in_process_histograms):
    """The service exports its execution and attempt durations as the SDK histograms or as the in-process
    counters, never both: the latency panels that showed data above read the form of this mode."""
    for histogram, counters in sc.IN_PROCESS_HISTOGRAMS.items():
        exported = {}
        for form, series in (
            ("sdk", naming.series(histogram, "bucket")),
            ("in process", naming.series(counters["bucket"])),
        ):
            result = query(prometheus, f'count({series}{{job="shop"}})')
            assert result["status"] == "success", result
            exported[form] = bool(result["data"]["result"])
        assert exported == {"sdk": not in_process_histograms, "in process": in_process_histograms}, histogram


def test_recorded_series_carry_the_service_label(prometheus):
    """The recording rules' outputs exist for the scraped service, under job="shop"."""
    for record in (
        ar.R_EXECUTIONS,
        ar.R_SUCCESS_RATIO,
        ar.R_BREAKER_OPEN,
        ar.R_BREAKER_WOULD_TRIPS,
        ar.R_BULKHEAD_SATURATION,
    ):
        result = query(prometheus, f'{record}{{job="shop"}}')
        assert result["status"] == "success"
        assert result["data"]["result"], record


def test_a_metrics_only_breaker_would_open_and_is_not_open(prometheus):
    """Real would-be trips make ResilienceCircuitBreakerWouldOpen pending for the metrics_only breaker; it
    rejects nothing, so it is never counted open and ResilienceCircuitBreakerOpen stays away."""
    shadow = 'resilience_name=~"live-shadow-.*"'
    would_open = f'ALERTS{{alertname="{ar.A_BREAKER_WOULD_OPEN}", job="shop", {shadow}}}'
    deadline = time.monotonic() + 20
    while not query(prometheus, would_open)["data"]["result"]:
        assert time.monotonic() < deadline, query(prometheus, f'{ar.R_BREAKER_WOULD_TRIPS}{{job="shop"}}')
        time.sleep(0.5)
    (alert,) = query(prometheus, would_open)["data"]["result"]
    assert alert["metric"]["alertstate"] == "pending"  # for: 5m
    (trips,) = query(prometheus, f'{ar.R_BREAKER_WOULD_TRIPS}{{job="shop", {shadow}}}')["data"]["result"]
    assert float(trips["value"][1]) > 0
    (opened,) = query(prometheus, f'{ar.R_BREAKER_OPEN}{{job="shop", {shadow}}}')["data"]["result"]
    assert float(opened["value"][1]) == 0
    assert query(prometheus, f'ALERTS{{alertname="{ar.A_BREAKER_OPEN}", {shadow}}}')["data"]["result"] == []
