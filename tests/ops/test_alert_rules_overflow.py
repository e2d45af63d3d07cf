"""The series the OpenTelemetry SDK folds into its cardinality-limit overflow series are alerted on.

Past 2 000 attribute sets per instrument (the Python SDK's default) the SDK records every new set
in one series, ``otel.metric.overflow=true``, with no other attribute: the calls are counted, but
under no policy, breaker or key, where no dashboard panel or alert that groups by them sees them.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from otel_support import instrumented

from otel_resilience import CircuitBreaker, CircuitBreakerConfig
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import naming
from otel_resilience.telemetry import semconv as sc

_SHOP = {"job": "shop", "instance": "shop-1:9464"}


def _series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{key}="{value}"' for key, value in {**_SHOP, **labels}.items()) + "}"


def _fired(promtool, repo, tmp_path, input_series, at):
    """The alerts of the committed rules that fire at ``at`` on ``input_series``, by promtool."""
    document = {
        "rule_files": [str(repo / "alerts" / ar.RULES_FILE)],
        "evaluation_interval": ar.EVALUATION_INTERVAL,
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in input_series],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": a, "exp_alerts": []} for a in ar.ALERT_NAMES
                ],
            }
        ],
    }
    path = tmp_path / "overflow_test.yml"
    path.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return set(re.findall(rf"alertname: (\w+), time: {at}", result.stdout + result.stderr)), result


def test_a_breaker_trip_past_the_sdk_cardinality_limit_fires_the_overflow_alert(promtool, repo, tmp_path):
    """Each breaker starts with 34 transition series, so the 59th breaker of a process fills the SDK's
    default limit: the 60th one's trip is only in the SDK's overflow series, which an alert reports."""
    with instrumented() as otel:
        breakers = [CircuitBreaker(f"b{n}", CircuitBreakerConfig(failure_threshold=1)) for n in range(60)]

        def broken() -> None:
            raise ConnectionError

        with pytest.raises(ConnectionError):
            breakers[-1].call_sync(broken)
        moved = [dict(p.attributes) for p in otel.points(sc.CB_TRANSITIONS) if p.value]
    assert moved == [{sc.METRIC_OVERFLOW: True}]  # the trip: under no breaker name
    overflow = _series(naming.series(sc.CB_TRANSITIONS), {naming.label(sc.METRIC_OVERFLOW): "true"})
    fired, result = _fired(promtool, repo, tmp_path, [(overflow, "_x5 1 1 2 2 3 3")], "10m")
    assert fired == {"ResilienceTelemetryOverflow"}, result.stdout + result.stderr


def test_the_keys_past_a_policys_key_attribute_limit_fire_no_overflow_alert(promtool, repo, tmp_path):
    """The library's own overflow series of a keyed policy (``resilience_key="_OTHER"``, with
    ``otel_metric_overflow="true"``) is the limit the policy chose: it fires nothing."""
    labels = {
        naming.label(sc.POLICY): "tenants",
        naming.label(sc.PATTERN): "pipeline",
        naming.label(sc.OUTCOME): "success",
        naming.label(sc.KEY): sc.KEY_OVERFLOW,
        naming.label(sc.METRIC_OVERFLOW): "true",
    }
    keyed = _series(naming.series(sc.EXECUTIONS), labels)
    fired, result = _fired(promtool, repo, tmp_path, [(keyed, "_x5 1+1x20")], "10m")
    assert fired == set(), result.stdout + result.stderr
