"""The example Alertmanager config: checked by amtool, routed and inhibited by the real Alertmanager."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml
from support import stop_process

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import alertmanager as am
from otel_resilience.ops import checks


def run(*command):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def config_path(repo):
    return repo / "alerts" / am.ALERTMANAGER_FILE


def test_amtool_check_config_is_clean(amtool, config_path):
    """amtool check-config accepts alerts/alertmanager.yml."""
    result = run(amtool, "check-config", config_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("labels", "receiver"), am.ROUTE_CASES)
def test_routes_send_each_severity_to_its_receiver(amtool, config_path, labels, receiver):
    """critical goes to the pager, warning (and anything else) to chat: amtool config routes test."""
    pairs = [f"{key}={value}" for key, value in labels.items()]
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={config_path}",
        f"--verify.receivers={receiver}",
        *pairs,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_receiver_fails_the_route_test(amtool, config_path):
    """The route test bites: a warning is not routed to the pager."""
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={config_path}",
        f"--verify.receivers={am.PAGER_RECEIVER}",
        "severity=warning",
        f"alertname={ar.A_RETRY_STORM}",
    )
    assert result.returncode != 0


def test_alerts_are_grouped_by_alertname_and_service(config_path):
    """The root route groups by alertname and job (the service)."""
    config = yaml.safe_load(config_path.read_text())
    assert config["route"]["group_by"] == ["alertname", "job"]


def test_inhibition_rules_are_present(config_path):
    """Critical mutes warning; an open breaker mutes its bulkhead and fallback alerts; full mutes near-full."""
    rules = yaml.safe_load(config_path.read_text())["inhibit_rules"]
    pairs = {(tuple(r["source_matchers"]), tuple(r["target_matchers"])): r["equal"] for r in rules}
    assert pairs[(('severity="critical"',), ('severity="warning"',))][:2] == ["alertname", "job"]
    muted = (f'alertname=~"{ar.A_BULKHEAD_FULL}|{ar.A_BULKHEAD_NEAR}|{ar.A_FALLBACK_HIGH}"',)
    assert pairs[((f'alertname="{ar.A_BREAKER_OPEN}"',), muted)] == ["job", "resilience_name"]
    assert pairs[((f'alertname="{ar.A_BULKHEAD_FULL}"',), (f'alertname="{ar.A_BULKHEAD_NEAR}"',))] == [
        "job",
        "resilience_name",
    ]
    rejecting = (f'alertname=~"{ar.A_BREAKER_OPEN}|{ar.A_BULKHEAD_FULL}"',)
    assert pairs[(rejecting, (f'alertname="{ar.A_ERROR_PATTERN}"',))] == ["job", "resilience_policy"]
    muted = (f'alertname=~"{"|".join(am.DRILL_MUTED)}"',)
    assert pairs[((f'alertname="{ar.A_CHAOS_DRILL}"',), muted)] == ["job", "resilience_policy"]
    assert not {ar.A_BREAKER_OPEN, ar.A_BREAKER_FLAPPING, ar.A_BULKHEAD_FULL, ar.A_RATE_LIMITED} & set(
        am.DRILL_MUTED
    )


def test_every_alert_a_drill_mutes_carries_the_policy(rules):
    """The drill notice and every alert it mutes keep resilience_policy, or the inhibition could never match."""
    labels = checks.recorded_series(rules)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in (*am.DRILL_MUTED, ar.A_CHAOS_DRILL):
                analysis = checks.analyse(rule["expr"], checks.known_series(labels))
                assert analysis.labels is not None
                assert "resilience_policy" in analysis.labels, rule["alert"]


def test_the_job_label_is_an_option_of_grouping_and_inhibitions():
    """alertmanager_document(job_label) groups and inhibits by that label instead of job."""
    document = am.alertmanager_document("service")
    assert document["route"]["group_by"] == ["alertname", "service"]
    assert all(
        "service" in rule["equal"] and "job" not in rule["equal"] for rule in document["inhibit_rules"]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


@pytest.fixture
def alertmanager_url(alertmanager_binary, config_path, tmp_path):
    """A real Alertmanager on 127.0.0.1 running the shipped config (clustering off)."""
    port = free_port()
    process = subprocess.Popen(
        [
            str(alertmanager_binary),
            f"--config.file={config_path}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"alertmanager did not start: {process.stderr.read().decode() if process.stderr else ''}"
                    )
                time.sleep(0.05)
        yield url
    finally:
        stop_process(process)


def test_real_alertmanager_applies_the_inhibitions(alertmanager_url):
    """An open breaker mutes the same-named bulkhead and fallback alerts, and critical mutes warning."""
    base = {"job": "shop"}
    sent = {
        "breaker-critical": {
            **base,
            "alertname": ar.A_BREAKER_OPEN,
            "severity": "critical",
            "resilience_name": "payments",
        },
        "breaker-warning": {
            **base,
            "alertname": ar.A_BREAKER_OPEN,
            "severity": "warning",
            "resilience_name": "payments",
        },
        "bulkhead-same": {
            **base,
            "alertname": ar.A_BULKHEAD_FULL,
            "severity": "warning",
            "resilience_name": "payments",
        },
        "fallback-same": {
            **base,
            "alertname": ar.A_FALLBACK_HIGH,
            "severity": "warning",
            "resilience_name": "payments",
            "resilience_policy": "payments",
        },
        "bulkhead-other": {
            **base,
            "alertname": ar.A_BULKHEAD_FULL,
            "severity": "warning",
            "resilience_name": "db",
        },
        "near-other": {
            **base,
            "alertname": ar.A_BULKHEAD_NEAR,
            "severity": "warning",
            "resilience_name": "db",
        },
        "retry-storm": {
            **base,
            "alertname": ar.A_RETRY_STORM,
            "severity": "warning",
            "resilience_policy": "payments",
        },
    }
    expected = {
        "breaker-critical": False,
        "breaker-warning": True,
        "bulkhead-same": True,
        "fallback-same": True,
        "bulkhead-other": False,
        "near-other": True,
        "retry-storm": False,
    }
    assert _inhibited(alertmanager_url, sent, expected) == expected


def test_real_alertmanager_mutes_error_patterns_while_the_policy_rejects(alertmanager_url):
    """An open breaker or a full bulkhead mutes ResilienceErrorPatternRepeated of the same policy, not of another."""

    def pattern(policy):
        return {
            "job": "shop",
            "alertname": ar.A_ERROR_PATTERN,
            "severity": "warning",
            "resilience_policy": policy,
            "resilience_name": "recovery",
            "resilience_operation": "call",
            "error_type": "ConnectionError",
        }

    sent = {
        "breaker": {
            "job": "shop",
            "alertname": ar.A_BREAKER_OPEN,
            "severity": "warning",
            "resilience_name": "ml_service",
            "resilience_policy": "ml_service",
        },
        "bulkhead": {
            "job": "shop",
            "alertname": ar.A_BULKHEAD_FULL,
            "severity": "warning",
            "resilience_name": "database",
            "resilience_policy": "database",
        },
        "pattern-breaker": pattern("ml_service"),
        "pattern-bulkhead": pattern("database"),
        "pattern-other": pattern("content_api"),
    }
    expected = {
        "breaker": False,
        "bulkhead": False,
        "pattern-breaker": True,
        "pattern-bulkhead": True,
        "pattern-other": False,
    }
    assert _inhibited(alertmanager_url, sent, expected) == expected


def test_real_alertmanager_mutes_what_a_drill_causes_on_its_policy_and_keeps_rejections(alertmanager_url):
    """A chaos drill on ml_service mutes its retry storm, timeouts, recovery and near-saturation alerts, not
    its open breaker nor its full bulkhead, nor any alert of another policy."""

    def alert(name, policy, **labels):
        return {
            "job": "shop",
            "alertname": name,
            "severity": "warning",
            "resilience_policy": policy,
            **labels,
        }

    sent = {
        "drill": alert(ar.A_CHAOS_DRILL, "ml_service", severity="info"),
        "storm": alert(ar.A_RETRY_STORM, "ml_service"),
        "timeouts": alert(ar.A_TIMEOUTS, "ml_service"),
        "recovery": alert(ar.A_RECOVERY_LOW, "ml_service", resilience_name="recovery"),
        # Bulkheads named apart from the breaker, so that only the drill could mute them.
        "near": alert(ar.A_BULKHEAD_NEAR, "ml_service", resilience_name="ml_cache"),
        "breaker": alert(ar.A_BREAKER_OPEN, "ml_service", resilience_name="ml_service"),
        "full": alert(ar.A_BULKHEAD_FULL, "ml_service", resilience_name="ml_pool"),
        "other-storm": alert(ar.A_RETRY_STORM, "content_api"),
        "other-job": {**alert(ar.A_TIMEOUTS, "ml_service"), "job": "search"},
    }
    expected = {
        "drill": False,
        "storm": True,
        "timeouts": True,
        "recovery": True,
        "near": True,
        "breaker": False,
        "full": False,
        "other-storm": False,
        "other-job": False,
    }
    assert _inhibited(alertmanager_url, sent, expected) == expected


def _inhibited(alertmanager_url: str, sent: dict, expected: dict) -> dict:
    """Send ``sent`` (name -> labels) to a real Alertmanager; return name -> inhibited once it equals ``expected`` (or after 10 s)."""
    http(f"{alertmanager_url}/api/v2/alerts", [{"labels": labels} for labels in sent.values()])
    deadline = time.monotonic() + 10
    while True:
        alerts = http(f"{alertmanager_url}/api/v2/alerts")
        by_labels = {
            json.dumps(a["labels"], sort_keys=True): bool(a["status"]["inhibitedBy"]) for a in alerts
        }
        inhibited = {key: by_labels.get(json.dumps(labels, sort_keys=True)) for key, labels in sent.items()}
        if inhibited == expected or time.monotonic() > deadline:
            return inhibited
        time.sleep(0.05)
