"""End to end on a healthy service: every dashboard panel shows a number (0 where nothing happened), never "No data".

dashboards/README.md promises it, and docs/design.md says how: counters whose labels are known in
advance start at 0, and the panels of the others (a retry's or a fallback's error type cannot be
known in advance) answer 0 while none happened. The service below uses every pattern (a breaker, a
retry without a budget, a fallback, timeouts, a bulkhead, a rate limiter, recovery, a chaos link
switched off, hedging) and every call succeeds: no retry, no fallback, no rejection. A real
Prometheus (scrape and rule interval 1 s) scrapes it with alerts/rules.yml loaded, and every
dashboard panel, with Grafana's variables set to this service and its policies, must return a
value; the panels of events a healthy service does not have must read 0.
"""

from __future__ import annotations

import asyncio
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
    RetryPolicy,
)
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks

JOB = "healthy"
POLICIES = "healthy-"
OVERVIEW = "otel-resilience-overview"
RETRIES = "otel-resilience-retries-timeouts"
RECOVERY = "otel-resilience-recovery"

WITHOUT_DATA = {
    # The retry has no budget (the default): there is no budget level to show, and a 0 would read
    # as an exhausted budget.
    (RETRIES, "Retry budget level"),
}
"""The only panels allowed to be empty here, each for a feature this service does not configure."""

ZERO_WHEN_HEALTHY = {
    (OVERVIEW, "Retry rate (retries per execution)"),
    (OVERVIEW, "Fallback rate"),
    (RETRIES, "Retry rate (retries per execution)"),
    (RETRIES, "Retries per second by policy"),
    (RETRIES, "Retries by error type"),
    (RETRIES, "Retries exhausted by stop reason"),
    (RETRIES, "Backoff delay p50 / p95 / p99"),
    (RETRIES, "Retries scheduled and denied by the budget"),
    (RETRIES, "Retries denied by the budget"),
    (RETRIES, "Extra load: hedges and retries per execution"),
    (RECOVERY, "Fallback rate"),
    (RECOVERY, "Fallbacks by strategy and result"),
}
"""Panels of events whose series appear at their first occurrence: on a healthy service, 0."""


def _grafana_ours(expr: str, policies: str = f"{POLICIES}.*") -> str:
    """The template variables set to this service and ``policies`` (the manager names a policy's breaker,
    bulkhead and rate limiter after it; instruments other tests left alive stay out), the intervals to durations."""
    expr = checks.substitute_grafana(expr).replace("$job", JOB)
    for variable in ("policy", "breaker", "bulkhead", "rate_limiter"):
        expr = expr.replace(f"${variable}", policies)
    return expr.replace("$recovery", ".*")


@pytest.fixture(scope="module")
def healthy_service() -> Iterator[str]:
    """The library's /metrics on 127.0.0.1, with successful calls flowing through every pattern."""
    alerts = AlertSystem(name="healthy-alerts")  # not the process-wide one: other tests count its alerts
    manager = ResilienceManager(alert_system=alerts)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value="recovered")
    )
    configs = (
        ResilienceConfig(
            name=f"{POLICIES}checkout",
            circuit_breaker=CircuitBreakerConfig(),
            retry_policy=RetryPolicy(max_attempts=3),
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="degraded"),
            timeout=5.0,
            bulkhead_config=BulkheadConfig(),
            rate_limiter=RateLimiterConfig(rate=1000),
            enable_recovery=True,
            chaos=ChaosConfig(fault_rate=1.0, fault=ConnectionError, enabled=ChaosSwitch()),  # drill off
        ),
        ResilienceConfig(name=f"{POLICIES}search", hedging=HedgingConfig(delay=1.0), timeout=5.0),
    )

    async def answer() -> str:
        return "ok"

    async def calls(stop: threading.Event) -> None:
        while not stop.is_set():
            for config in configs:
                assert await manager.execute_with_resilience(answer, config) == "ok"
            await asyncio.sleep(0.02)

    with served_metrics(lambda stop: asyncio.run(calls(stop))) as address:
        yield address
    alerts.close()


@pytest.fixture(scope="module")
def healthy_prometheus(
    prometheus_binary: Path, repo: Path, healthy_service: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the healthy service every second, with the shipped rules."""
    data = tmp_path_factory.mktemp("prometheus-healthy")
    rules = repo / "alerts" / ar.RULES_FILE
    with prometheus_scraping(prometheus_binary, data, JOB, healthy_service, rules) as (base, _):
        yield base


def _panels(dashboards: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, list[str]]]:
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            exprs = [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
            if exprs:
                yield dashboard["uid"], panel["title"], exprs


def _answers(
    base: str, dashboards: dict[str, dict[str, Any]], policies: str = f"{POLICIES}.*"
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (uid, title): [query(base, _grafana_ours(expr, policies)) for expr in exprs]
        for uid, title, exprs in _panels(dashboards)
    }


def _problems(
    answers: dict[tuple[str, str], list[dict[str, Any]]], without_data: set[tuple[str, str]] = WITHOUT_DATA
) -> list[tuple[str, str, str]]:
    """What a healthy service's dashboards must not show: a rejected query, "No data", a non-zero event rate."""
    found = []
    for panel, results in answers.items():
        if any(result.get("status") != "success" for result in results):
            found.append((*panel, f"rejected: {[r.get('error') for r in results]}"))
            continue
        samples = [float(s["value"][1]) for result in results for s in result["data"]["result"]]
        if not samples and panel not in without_data:
            found.append((*panel, "No data"))
        elif panel in ZERO_WHEN_HEALTHY and any(value != 0 for value in samples):
            found.append((*panel, f"not 0: {samples}"))
    return found


@pytest.mark.timeout(90)
def test_every_panel_shows_a_number_on_a_healthy_service(
    healthy_prometheus: str, dashboards: dict[str, dict[str, Any]]
) -> None:
    """Every panel of every dashboard returns a value (0 for the retries and fallbacks that did not happen)."""
    expected = set(ZERO_WHEN_HEALTHY) | set(WITHOUT_DATA)
    assert expected <= {(uid, title) for uid, title, _ in _panels(dashboards)}
    # Prometheus finds its target ~5 s after start, and a rate needs two scrapes; each rule group
    # evaluates on its own schedule: poll until every panel answers, then report what still does not.
    deadline = time.monotonic() + 40
    while True:
        problems = _problems(_answers(healthy_prometheus, dashboards))
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert problems == [], "\n".join(f"{uid} / {title}: {what}" for uid, title, what in problems)


CHECKOUT_WITHOUT_DATA = WITHOUT_DATA | {
    # The checkout policy does not hedge: the panels of hedging alone have nothing to show for it.
    (RETRIES, "Hedges started by trigger"),
    (RETRIES, "Hedged executions won, by attempt type"),
    (RETRIES, "Hedge payoff (hedge wins per hedge)"),
    (RETRIES, "Hedges denied"),
}
"""The panels allowed to be empty for the checkout policy alone: those of the features it does not configure."""


@pytest.mark.timeout(90)
def test_every_panel_of_a_policy_shows_a_number_for_what_it_configures(
    healthy_prometheus: str, dashboards: dict[str, dict[str, Any]]
) -> None:
    """The policy variable set to one policy (a retry, no hedging): every panel of a pattern it configures
    shows a number, the extra load of its retries included (0 retries per execution, not "No data")."""
    assert {(uid, title) for uid, title, _ in _panels(dashboards)} >= CHECKOUT_WITHOUT_DATA
    deadline = time.monotonic() + 40
    while True:
        answers = _answers(healthy_prometheus, dashboards, f"{POLICIES}checkout")
        problems = _problems(answers, CHECKOUT_WITHOUT_DATA)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert problems == [], "\n".join(f"{uid} / {title}: {what}" for uid, title, what in problems)
