"""End to end on a service whose breaker, bulkhead and rate limiters are used alone and not called yet.

Patterns used alone (a decorator's, or built by hand) are exported from their creation, before any
execution: the service must be on the dashboards at once, in the ``job`` variable of every
dashboard, and the panels of its breaker and bulkhead must show a number (0 where nothing
happened), not "No data". A rate limiter used alone (``try_acquire``, a keyed one) runs no
execution: the variable of the panels that draw it must still offer it.
"""

from __future__ import annotations

import gc
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_prometheus_support import prometheus_scraping, query, served_metrics

from otel_resilience import Bulkhead, BulkheadConfig, CircuitBreaker, RateLimiter, RateLimiterConfig
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks

BREAKERS = "otel-resilience-circuit-breakers"
RETRIES = "otel-resilience-retries-timeouts"
BULKHEADS = "otel-resilience-bulkheads"
PER_EXECUTION = {(BULKHEADS, "Share of executions rejected")}
"""A share of a policy's executions: a bulkhead used alone has none before its first call."""

ALONE = "fresh-alone"
"""A service whose breaker and bulkhead are used alone (a decorator's, or built by hand), not called yet."""


@pytest.fixture(scope="module")
def alone_prometheus(
    prometheus_binary: Path, repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real Prometheus scraping a service that built a breaker and a bulkhead and made no call."""
    gc.collect()  # the policies other tests left behind would put this service in the job variable
    limits = RateLimiterConfig(rate=10.0, burst=2)
    limiter = RateLimiter(f"{ALONE}-limiter", limits)
    limiter.try_acquire()  # its only use: a permit taken, no execution
    keyed = RateLimiter.per_key(f"{ALONE}-keyed-limiter", limits)
    keyed.for_key("tenant").try_acquire()  # exported by name from its first key on
    kept = [
        CircuitBreaker(f"{ALONE}-breaker"),
        Bulkhead(f"{ALONE}-bulkhead", BulkheadConfig()),
        limiter,
        keyed,
    ]

    def idle(stop: threading.Event) -> None:
        stop.wait()

    data = tmp_path_factory.mktemp("prometheus-alone")
    with (
        served_metrics(idle) as address,
        prometheus_scraping(prometheus_binary, data, ALONE, address, repo / "alerts" / ar.RULES_FILE) as (
            base,
            _,
        ),
    ):
        yield base
    del kept


def _job_values(base: str, dashboard: dict[str, Any]) -> set[str]:
    """The values Grafana offers for the dashboard's ``job`` variable (its label_values query)."""
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "job"]
    text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    series = re.fullmatch(r"label_values\((.*), job\)", text)
    assert series is not None, text
    result = query(base, f"count by (job) ({series.group(1)})")
    return {sample["metric"]["job"] for sample in result.get("data", {}).get("result", [])}


@pytest.mark.timeout(90)
def test_a_service_whose_patterns_are_used_alone_is_on_the_dashboards_before_its_first_call(
    alone_prometheus: str, dashboards: dict[str, dict[str, Any]]
) -> None:
    """A breaker and a bulkhead exported from their creation put their service in the ``job`` variable
    of every dashboard, and every panel of their dashboards shows a number before any call."""
    mine = {BREAKERS: f"{ALONE}-breaker", BULKHEADS: f"{ALONE}-bulkhead"}
    deadline = time.monotonic() + 40
    while True:
        problems = [
            f"{d['uid']}: not in the job variable"
            for d in dashboards.values()
            if ALONE not in _job_values(alone_prometheus, d)
        ]
        for dashboard in dashboards.values():
            name = mine.get(dashboard["uid"])
            if name is None:
                continue
            for panel in dashboard["panels"]:
                exprs = [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
                if not exprs or (dashboard["uid"], panel["title"]) in PER_EXECUTION:
                    continue
                answers = [
                    query(
                        alone_prometheus,
                        checks.substitute_grafana(e)
                        .replace("$job", ALONE)
                        .replace("$breaker", name)
                        .replace("$bulkhead", name),
                    )
                    for e in exprs
                ]
                if not any(a.get("data", {}).get("result") for a in answers):
                    problems.append(f"{dashboard['uid']} / {panel['title']}: No data")
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert problems == [], "\n".join(problems)


def _variable_values(base: str, dashboard: dict[str, Any], name: str) -> set[str]:
    """The values Grafana offers for the dashboard's variable ``name`` (its label_values query), all jobs."""
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    found = re.fullmatch(r"label_values\((.*), (\w+)\)", text)
    assert found is not None, text
    series, label = found.groups()
    result = query(base, f"count by ({label}) ({series.replace('$job', ALONE)})")
    return {sample["metric"][label] for sample in result.get("data", {}).get("result", [])}


@pytest.mark.timeout(90)
def test_a_rate_limiter_used_alone_is_offered_by_the_variable_of_its_panels(
    alone_prometheus: str, dashboards: dict[str, dict[str, Any]]
) -> None:
    """A limiter that runs no execution (only try_acquire, or keyed: RateLimiter.per_key) is in the
    list of the variable each rate limiter panel selects its limiters by, so it can be picked there."""
    (dashboard,) = [d for d in dashboards.values() if d["uid"] == RETRIES]
    wanted = {f"{ALONE}-limiter", f"{ALONE}-keyed-limiter"}
    by_variable: dict[str, list[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            if "resilience_rate_limiter_" not in target.get("expr", ""):
                continue
            for variable in re.findall(r'resilience_name=~"\$(\w+)"', target["expr"]):
                by_variable.setdefault(variable, []).append(panel["title"])
    assert by_variable, "no rate limiter panel selects its limiters by name"
    deadline = time.monotonic() + 40
    while True:
        problems = [
            f"${variable} (of {sorted(set(titles))}) lacks {sorted(missing)}"
            for variable, titles in by_variable.items()
            if (missing := wanted - _variable_values(alone_prometheus, dashboard, variable))
        ]
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert problems == [], "\n".join(problems)
