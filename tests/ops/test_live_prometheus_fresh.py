"""End to end on a service that has made no call yet: every dashboard panel shows 0, never "No data".

A named policy exports its series from its creation (executions, rejections, timeouts, breaker
states and calls, bulkhead slots, rate-limiter permits, reloads: all at 0), so a service that has
just started, or that nothing called yet, is on the dashboards at once. Its panels must read 0
where nothing happened (no execution, so no retry, fallback, timeout or rejection per execution),
not "No data", which reads as a broken query or a service that is not scraped. The service's two
policies configure every pattern (recovery, a chaos link switched off, hedging included); the
panels only a call can give a value (a percentile of no duration, a share of no execution) are
the exceptions, listed below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_prometheus_support import prometheus_scraping, query, served_metrics

from otel_resilience import (
    AlertSystem,
    BulkheadConfig,
    ChaosConfig,
    ChaosSwitch,
    CircuitBreakerConfig,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks

JOB = "fresh"
POLICY = "fresh-checkout"
OVERVIEW = "otel-resilience-overview"
RETRIES = "otel-resilience-retries-timeouts"
RECOVERY = "otel-resilience-recovery"
BULKHEADS = "otel-resilience-bulkheads"

NO_CALL_NO_VALUE = {
    # A percentile of durations: no call, no duration (0 s would read as a fast dependency).
    (OVERVIEW, "Latency p50 / p95 / p99 by policy"),
    (OVERVIEW, "Latency p95 by outcome"),
    (RETRIES, "Latency p50 / p95 / p99 by policy"),
    (RETRIES, "Latency p95 by outcome"),
    # A share of no execution is no number: 0 % would read as every call failing.
    (OVERVIEW, "Success rate by policy"),
}
"""The panels allowed to show no data for a service that has made no call yet."""
LEVELS = {
    (BULKHEADS, "Running calls and limit"),
    (BULKHEADS, "Waiting calls and queue limit"),
    (RETRIES, "Retry budget level"),
    (OVERVIEW, "Recovery rate"),
    (RECOVERY, "Recovery rate"),
    (OVERVIEW, "Keys in use"),
}
"""The panels that show a configured limit or a level, not an event count: the retries a full budget
allows before any call, a recovery rate of 1 while no action was made (nothing failed to recover),
a keyed policy's max_keys beside its 0 keys."""


def _serve(stop: threading.Event) -> None:
    """In the child: named policies of every pattern, and no call until ``stop``."""
    alerts = AlertSystem(name="fresh-alerts")
    manager = ResilienceManager(alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value="recovered")
    )
    manager.policy(
        POLICY,
        ResilienceConfig(
            circuit_breaker=CircuitBreakerConfig(),
            retry_policy=RetryPolicy(max_attempts=3, budget=RetryBudget(ratio=0.2)),
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
            timeout=5.0,
            bulkhead_config=BulkheadConfig(),
            rate_limiter=RateLimiterConfig(rate=1000),
            enable_recovery=True,
            chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=ChaosSwitch()),  # drill off
        ),
    )
    manager.policy(f"{POLICY}-hedged", ResilienceConfig(hedging=HedgingConfig(delay=1.0), timeout=5.0))
    stop.wait()
    alerts.close()


def _child() -> None:
    """The fresh service's process: serve /metrics, print the address, stop when stdin closes."""
    with served_metrics(_serve) as address:
        print(address, flush=True)
        sys.stdin.read()


@pytest.fixture(scope="module")
def fresh_service() -> Iterator[str]:
    """The library's /metrics on 127.0.0.1, in a process of its own: named policies of every pattern, no call.

    A process of its own: the test process holds what other tests made (breakers half open,
    telemetry errors counted), which a fresh service has not.
    """
    tests = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)])}
    code = "import sys; sys.path.insert(0, sys.argv[1]); import test_live_prometheus_fresh as t; t._child()"
    with subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).resolve().parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            address = child.stdout.readline().strip()
            assert address, f"the fresh service did not start (exit code {child.poll()})"
            yield address
        finally:
            child.stdin.close()
            try:
                child.wait(20)
            except subprocess.TimeoutExpired:
                child.kill()


@pytest.fixture(scope="module")
def fresh_prometheus(
    prometheus_binary: Path, repo: Path, fresh_service: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the fresh service every second, with the shipped rules."""
    data = tmp_path_factory.mktemp("prometheus-fresh")
    rules = repo / "alerts" / ar.RULES_FILE
    with prometheus_scraping(prometheus_binary, data, JOB, fresh_service, rules) as (base, _):
        yield base


def _ours(expr: str) -> str:
    """The template variables set to this service and its policy (its breaker, bulkhead and rate limiter share its name)."""
    expr = checks.substitute_grafana(expr).replace("$job", JOB)
    for variable in ("policy", "breaker", "bulkhead", "rate_limiter"):
        expr = expr.replace(f"${variable}", f"{POLICY}.*")
    return expr.replace("$recovery", ".*")


def _problems(base: str, dashboards: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            exprs = [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
            if not exprs:
                continue
            key = (dashboard["uid"], panel["title"])
            results = [query(base, _ours(expr)) for expr in exprs]
            if any(result.get("status") != "success" for result in results):
                found.append(f"{key}: rejected: {[r.get('error') for r in results]}")
                continue
            samples = [float(s["value"][1]) for result in results for s in result["data"]["result"]]
            if key in NO_CALL_NO_VALUE:
                found += [f"{key}: has data {samples}, remove it from NO_CALL_NO_VALUE"] if samples else []
            elif not samples:
                found.append(f"{key}: No data")
            elif key not in LEVELS and any(value != 0 for value in samples):
                found.append(f"{key}: not 0: {samples}")
    return found


@pytest.mark.timeout(90)
def test_every_panel_shows_zero_before_the_first_call(
    fresh_prometheus: str, dashboards: dict[str, dict[str, Any]]
) -> None:
    """Every panel of a pattern the policy configures reads 0 before any call, not "No data"."""
    deadline = time.monotonic() + 40
    while True:
        problems = _problems(fresh_prometheus, dashboards)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert problems == [], "\n".join(problems)
