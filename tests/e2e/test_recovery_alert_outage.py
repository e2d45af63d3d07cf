"""End to end: ResilienceRecoveryRateLow fires in a hard outage with only the dependency's rules, and resolves after it.

A small service (written below, run as its own process) calls a dependency through the
``ResilienceManager`` with the typical policy: breaker (3 failures, 60 s), retry (2 attempts),
and recovery with a rule for the dependency's error only (``ConnectionError`` -> RETRY); no rule
for our own rejections (``CircuitOpenError``). The dependency is down for 10 minutes of
production time. The service exports its metrics with the OpenTelemetry Prometheus exporter; a
real Prometheus scrapes it every second and evaluates the shipped rules generated at the
service's time scale (0.05: 1 real second = 20 production seconds, ``for: 2m`` = 6 s, every
3 s: the production minute scaled, the interval the scaled file gives its groups).

The alert's firing is read back from Prometheus' own ``ALERTS`` series (``query_range``, one
point per evaluation), so the bounds are measured in Prometheus' evaluation time, not in when this
test happened to poll: it must fire within 5 minutes (production) of the outage's start and stop
within 5 minutes of the dependency's return. About 60 s of real time.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from otel_resilience.ops import alert_rules as ar

SCALE = 0.05
"""Real seconds per production second, for the service and the rules."""
PRODUCTION_MINUTES = 60.0 * SCALE
"""One production minute, in real seconds."""
OUTAGE_START = 3.0
"""Real seconds after the service starts at which the dependency goes down (1 production minute)."""
OUTAGE_LENGTH = 10 * PRODUCTION_MINUTES
"""10 production minutes."""
AFTER = 9 * PRODUCTION_MINUTES
"""How long the service keeps running after the return (the alert must be gone well before)."""
WITHIN = 5 * PRODUCTION_MINUTES
"""The promise: fires within 5 production minutes of the outage, resolves within 5 of the return."""
EVALUATION = ar._seconds(ar.scale_duration(ar.EVALUATION_INTERVAL, SCALE))
"""Real seconds between two evaluations of the scaled rules (their groups' interval: 1m scaled, 3 s)."""
SLACK = 1.0 + EVALUATION
"""Real seconds for the scrape interval (1 s) and one evaluation interval."""

SERVICE = """
import asyncio, json, sys, time
from prometheus_client import CollectorRegistry, start_http_server
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from otel_resilience import (
    CircuitBreakerConfig, RecoveryAction, RecoveryStrategy, ResilienceConfig, ResilienceManager,
    RetryPolicy, RetryStrategy,
)
from otel_resilience.telemetry import instrument

port, scale, start, length, after, timeline = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
registry = CollectorRegistry()
start_http_server(port, "127.0.0.1", registry=registry)
instrument(meter_provider=MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)]))

manager = ResilienceManager()
manager.recovery_system.register_recovery_rule(
    ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=2.0 * scale)
)
config = ResilienceConfig(
    name="ml_service",
    circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0 * scale),
    retry_policy=RetryPolicy(max_attempts=2, strategy=RetryStrategy.EXPONENTIAL, initial_delay=1.0 * scale),
    enable_recovery=True,
)
t0 = time.time()
down = (t0 + start, t0 + start + length)

async def dependency():
    await asyncio.sleep(0.005)
    if down[0] <= time.time() < down[1]:
        raise ConnectionError("ml_service is down")
    return "ok"

async def one():
    try:
        await manager.execute_with_resilience(dependency, config)
    except Exception:
        pass

async def main():
    with open(timeline, "w") as out:
        json.dump({"started": t0, "down": down[0], "up": down[1]}, out)
    tasks = set()
    end = down[1] + after
    while time.time() < end:
        task = asyncio.ensure_future(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.05)  # 20 calls per real second: 1 call/s of production time
    await asyncio.gather(*tasks)

asyncio.run(main())
"""


def _range(prometheus: str, expr: str, start: float, end: float) -> list[tuple[float, float]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1s"})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}", timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return [(float(t), float(v)) for series in answer["data"]["result"] for t, v in series["values"]]


@pytest.fixture(scope="module")
def outage_run(harness, tmp_path_factory):
    """Run the service and a real Prometheus with the scaled shipped rules until the service ends."""
    work = tmp_path_factory.mktemp("recovery-e2e")
    prom_port, service_port = harness.free_port(), harness.free_port()
    (work / ar.RULES_FILE).write_text(ar.render_rules(SCALE), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / ar.RULES_FILE)],
        "scrape_configs": [
            {"job_name": "shop", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (work / "service.py").write_text(SERVICE, encoding="utf-8")
    processes = []
    try:
        prometheus = harness.Process(
            "prometheus",
            [
                str(harness.find_tool("prometheus")),
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--web.external-url=http://127.0.0.1:{prom_port}/",
            ],
            work / "prometheus.log",
        )
        processes.append(prometheus)
        url = f"http://127.0.0.1:{prom_port}"
        deadline = time.monotonic() + 30
        while not _ready(url):
            assert prometheus.exited() is None, prometheus.tail()
            assert time.monotonic() < deadline, prometheus.tail()
            time.sleep(0.2)
        service = harness.Process(
            "service",
            [
                sys.executable,
                str(work / "service.py"),
                str(service_port),
                f"{SCALE:g}",
                f"{OUTAGE_START:g}",
                f"{OUTAGE_LENGTH:g}",
                f"{AFTER:g}",
                str(work / "timeline.json"),
            ],
            work / "service.log",
            env=harness.demo_env(),
        )
        processes.append(service)
        status = service.wait(OUTAGE_START + OUTAGE_LENGTH + AFTER + 60)
        assert status == 0, service.tail()
        time.sleep(SLACK)  # the last scrape and evaluation
        timeline = json.loads((work / "timeline.json").read_text())
        yield url, timeline, prometheus
    finally:
        harness.stop_all(processes)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_recovery_alert_fires_within_5_minutes_of_a_hard_outage_and_resolves_within_5_after(outage_run):
    """With rules for ConnectionError only, ResilienceRecoveryRateLow fires for ml_service <= 5 min into the outage and is gone <= 5 min after the return."""
    url, timeline, prometheus = outage_run
    firing = _range(
        url,
        f'ALERTS{{alertname="{ar.A_RECOVERY_LOW}", alertstate="firing", resilience_policy="ml_service"}}',
        timeline["started"],
        time.time(),
    )
    actions = _range(
        url,
        'sum(resilience_recovery_attempts_total{resilience_policy="ml_service"})',
        timeline["started"],
        time.time(),
    )
    context = (
        f"outage from 0 to {timeline['up'] - timeline['down']:.1f} s; firing at "
        f"{[round(t - timeline['down'], 1) for t, _ in firing]} s after the outage began; "
        f"recovery actions at the end: {actions[-1][1] if actions else 0}\n{prometheus.tail()}"
    )
    print(context.split("\n", 1)[0])
    assert firing, context
    first, last = firing[0][0], firing[-1][0]
    assert timeline["down"] < first <= timeline["down"] + WITHIN + SLACK, context
    assert first < timeline["up"], context
    assert last <= timeline["up"] + WITHIN + SLACK, context
    assert last < timeline["up"] + AFTER - SLACK, context  # resolved while the service still ran
    assert actions, context
    assert actions[-1][1] < 20, context  # a hard outage: the breaker kept errors from the recovery rules
