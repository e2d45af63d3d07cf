"""The shipped alert rules on series as a fleet exports them: restarts, several instances, keyed policies.

`alerts/rules_test.yml` checks each alert on one instance that never restarts. Here promtool runs the
same rules on what operators see too: a process that restarts (its counters start again at 0, after a
scrape that failed), instances that start later (their series are born while the window is open,
some already at 1), and keyed policies (a series per key, and the one overflow series of the keys past
the limit). The firing alerts are read from Prometheus' ALERTS series.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import naming
from otel_resilience.telemetry import semconv as sc

_TRIPS = {
    naming.label(sc.CB_PREVIOUS_STATE): "closed",
    naming.label(sc.CB_STATE): "open",
    naming.label(sc.CB_TRANSITION_REASON): "failure_threshold",
}

_FAULT = {naming.label(sc.CHAOS_KIND): "fault"}


def _series(instrument: str, instance: str, **labels: str) -> str:
    body = ", ".join(
        f'{key}="{value}"' for key, value in {"job": "shop", "instance": instance, **labels}.items()
    )
    return f"{naming.series(instrument)}{{{body}}}"


def _executions(instance: str, outcome: str, policy: str = "api", **labels: str) -> str:
    return _series(
        sc.EXECUTIONS,
        instance,
        resilience_policy=policy,
        resilience_pattern="pipeline",
        resilience_outcome=outcome,
        **labels,
    )


_CASES = {
    # Two trips, the process restarts (a failed scrape, the counter back at 0), a third trip: 3 in 30m.
    "flapping across a restart": (
        [(_series(sc.CB_TRANSITIONS, "a", resilience_name="db", **_TRIPS), "0x40 1 1 1 2 2 stale 0 0 1x12")],
        {"56m": {ar.A_BREAKER_FLAPPING}},
    ),
    # Trips long ago, then a restart: the counter going back to 0 is not a trip.
    "old trips and a restart stay silent": (
        [(_series(sc.CB_TRANSITIONS, "a", resilience_name="db", **_TRIPS), "0x5 1 2 3x40 stale 0x20")],
        {"60m": set(), "70m": set()},
    ),
    # Each instance's breaker is a breaker of its own (no shared state): instance a (an older library: its
    # series appear at the first trip, at 1) trips twice and instance b, started later, once: no breaker
    # tripped 3 times, whatever their sum; a's third trip makes it flap, its first one counted.
    "flapping in one of two instances, its first trip included": (
        [
            (_series(sc.CB_TRANSITIONS, "a", resilience_name="db", **_TRIPS), "_x20 1 1 1 1 2x10 3x5"),
            (_series(sc.CB_TRANSITIONS, "b", resilience_name="db", **_TRIPS), "_x30 1x10"),
        ],
        {"29m": set(), "33m": set(), "37m": {ar.A_BREAKER_FLAPPING}},
    ),
    # A keyed policy on two instances: one key of its own, and the overflow series of the others on the
    # instance that restarts; 20 of 70 executions a minute shed for 20 minutes.
    "rate limited keyed policy over two instances, one restarting": (
        [
            (_executions("a", "success", resilience_key="t1"), "0+50x30"),
            (_executions("a", "rejected", resilience_key="t1"), "0+10x30"),
            (
                _series(
                    sc.REJECTIONS,
                    "a",
                    resilience_policy="api",
                    resilience_pattern="rate_limiter",
                    resilience_name="api",
                    resilience_rejection_reason="rate_limited",
                    resilience_key="t1",
                ),
                "0+10x30",
            ),
            (
                _executions("b", "rejected", resilience_key=sc.KEY_OVERFLOW, otel_metric_overflow="true"),
                "0+10x10 stale 0+10x18",
            ),
            (
                _series(
                    sc.REJECTIONS,
                    "b",
                    resilience_policy="api",
                    resilience_pattern="rate_limiter",
                    resilience_name="api",
                    resilience_rejection_reason="rate_limited",
                    resilience_key=sc.KEY_OVERFLOW,
                    otel_metric_overflow="true",
                ),
                "0+10x10 stale 0+10x18",
            ),
        ],
        {"25m": {ar.A_RATE_LIMITED}},
    ),
    # 0.75 retries per execution; the process restarts at 10m (both counters back at 0): the storm goes on.
    "retry storm across a restart": (
        [
            (_executions("a", "success"), "0+60x9 stale 0+60x20"),
            (
                _series(sc.RETRIES, "a", resilience_policy="api", resilience_name="api"),
                "0+45x9 stale 0+45x20",
            ),
        ],
        {"14m": {ar.A_RETRY_STORM}, "25m": {ar.A_RETRY_STORM}},
    ),
    # Prometheus cannot scrape the process for 40 minutes (restarting, or the target unreachable): the
    # series come back at the values they had; a drill and a refused reload long over are not counted again.
    "a gap in the scrapes does not count old events again": (
        [
            (
                _series(sc.CHAOS_INJECTIONS, "a", resilience_policy="api", resilience_name="api", **_FAULT),
                "0x5 10 20 30 40 50x35 _x40 50x30",
            ),
            (
                _series(
                    sc.RELOAD,
                    "a",
                    resilience_policy="api",
                    resilience_reload_outcome="failed",
                    error_type="ValueError",
                ),
                "_x5 1x40 _x40 1x30",
            ),
        ],
        {"8m": {ar.A_CHAOS_DRILL, ar.A_RELOAD_FAILED}, "40m": set(), "86m": set(), "100m": set()},
    ),
    # A breaker open in one of two instances: the alert names the breaker, not the instance.
    "breaker open in one of two instances": (
        [
            *(
                (
                    _series(
                        sc.CB_STATE_METRIC, instance, resilience_name="db", resilience_circuit_breaker_state=s
                    ),
                    f"{int(s == state)}x20",
                )
                for instance, state in (("a", "open"), ("b", "closed"))
                for s in sc.CB_STATE_VALUES
            ),
            (
                _series(
                    sc.REJECTIONS,
                    "a",
                    resilience_policy="db",
                    resilience_pattern="circuit_breaker",
                    resilience_name="db",
                    resilience_rejection_reason="circuit_open",
                ),
                "0+10x20",
            ),
        ],
        {"5m": {ar.A_BREAKER_OPEN}},
    ),
    # A keyed policy: one key's breaker opened as that key's calls stopped; with no call to probe it,
    # it stays half-open (its timeout elapsed), and the breaker's state series shows the most severe
    # state of its keys. The other keys are called on, and nothing is rejected: no page.
    "breaker of a key no call reaches any more, beside keys called on": (
        [
            *(
                (
                    _series(
                        sc.CB_STATE_METRIC, "a", resilience_name="db", resilience_circuit_breaker_state=s
                    ),
                    f"{int(s == 'closed')}x4 {int(s == 'open')} {int(s == 'half_open')}x60",
                )
                for s in sc.CB_STATE_VALUES
            ),
            (
                _series(
                    sc.CB_CALLS, "a", resilience_name="db", resilience_circuit_breaker_call_result="success"
                ),
                "0+50x65",
            ),
            (
                _series(
                    sc.REJECTIONS,
                    "a",
                    resilience_policy="db",
                    resilience_pattern="circuit_breaker",
                    resilience_name="db",
                    resilience_rejection_reason="circuit_open",
                ),
                "0x4 10 20x60",
            ),
            (_executions("a", "success", policy="db"), "0+50x65"),
        ],
        {"6m": {ar.A_BREAKER_OPEN}, "12m": set(), "30m": set(), "60m": set()},
    ),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_the_shipped_rules_on_a_fleet(promtool, repo, tmp_path, case):
    """Each alert fires (or stays silent) as its runbook says, across restarts, instances and keys."""
    series, expected = _CASES[case]
    firing = f'count by (alertname) (ALERTS{{alertstate="firing", {naming.SERVICE_LABEL}="shop"}})'
    tests = {
        "rule_files": [str(repo / "alerts" / ar.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series],
                "promql_expr_test": [
                    {
                        "expr": firing,
                        "eval_time": at,
                        "exp_samples": [
                            {"labels": f'{{alertname="{alert}"}}', "value": 1} for alert in sorted(alerts)
                        ],
                    }
                    for at, alerts in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / "fleet.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (case, result.stdout + result.stderr)
