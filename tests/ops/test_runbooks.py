"""The runbooks agree with the alerts they serve and with what the library does.

Each runbook opens with the alert's severity and labels: an operator reads them to know what the
alert names (and what Alertmanager matches on), so every label the alert carries is listed. Its
mitigation tells how to change the library's settings: a change it advises must move the alert's
cause in the direction it says.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from typing import Any, Final

import pytest

import otel_resilience
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks
from otel_resilience.patterns.recovery import DEFAULT_PATTERN_THRESHOLD, DEFAULT_PATTERN_WINDOW
from otel_resilience.patterns.recovery.detector import PatternDetector

_HEADER: re.Pattern[str] = re.compile(
    r"\*\*Severity:\*\*(?P<severity>.*?)\*\*Labels:\*\*(?P<labels>.*?)The\s+value", re.DOTALL
)


def _alerts_with_labels(rules: dict[str, Any]) -> dict[str, tuple[set[str], set[str]]]:
    """Alert name -> (its severities, the labels its expression keeps), read from the rules file."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    recorded: dict[str, frozenset[str]] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            analysis = checks.analyse(str(rule["expr"]), checks.known_series(recorded))
            assert analysis.labels is not None, rule
            if "record" in rule:
                recorded[rule["record"]] = analysis.labels
                continue
            severities, labels = found.setdefault(rule["alert"], (set(), set()))
            severities.add(rule["labels"]["severity"])
            labels.update(analysis.labels)
    return found


def test_every_runbook_names_the_severity_and_every_label_of_its_alert(repo, rules):
    """The header of each runbook lists each severity of its alert and every label the alert carries."""
    problems = []
    for alert, (severities, labels) in sorted(_alerts_with_labels(rules).items()):
        text = (repo / "docs" / "runbooks" / f"{alert}.md").read_text()
        header = _HEADER.search(text)
        assert header is not None, f"{alert}: no **Severity:** ... **Labels:** ... The value header"
        named_severities = set(re.findall(r"`(\w+)`", header.group("severity")))
        named_labels = set(re.findall(r"`(\w+)`", header.group("labels")))
        if severities - named_severities:
            problems.append(f"{alert}: severities {sorted(severities - named_severities)} not named")
        if labels - named_labels:
            problems.append(f"{alert}: labels {sorted(labels - named_labels)} not named")
    assert problems == [], "\n".join(problems)


def _detected(threshold: int, window: float, every: float, seconds: float = 900.0) -> int:
    """Patterns detected for one error that repeats every ``every`` seconds for ``seconds``."""
    detector = PatternDetector(threshold, window, max_fingerprints=10)
    steps = int(seconds / every)
    return sum(
        detector.record_locked(("ConnectionError", "fetch", None), step * every) for step in range(steps + 1)
    )


def test_the_error_pattern_runbook_advises_settings_that_detect_less(repo):
    """An expected error the defaults report as a pattern is no longer one after the runbook's advice.

    A pattern is `pattern_threshold` errors within `pattern_window` seconds: a higher threshold or a
    shorter window needs the errors closer together. A longer window makes more of them patterns.
    """
    text = (repo / "docs" / "runbooks" / f"{ar.A_ERROR_PATTERN}.md").read_text()
    mitigation = text.split("## Mitigation", 1)[1]
    advice = re.search(
        r"(?P<threshold>raise|lower)\s+`pattern_threshold`\s+or\s+(?P<window>shorten|lengthen)\s+`pattern_window`",
        mitigation,
    )
    assert advice is not None, mitigation
    threshold, window = DEFAULT_PATTERN_THRESHOLD, DEFAULT_PATTERN_WINDOW
    every = window / (threshold + 1)  # six errors a window: a pattern with the defaults
    assert _detected(threshold, window, every) > 0
    advised_threshold = threshold * 2 if advice["threshold"] == "raise" else max(2, threshold // 2)
    advised_window = window / 2 if advice["window"] == "shorten" else window * 2
    assert _detected(advised_threshold, window, every) == 0, advice.group(0)
    assert _detected(threshold, advised_window, every) == 0, advice.group(0)


def test_the_retry_storm_runbook_advises_the_retry_budget_that_stops_a_storm(repo):
    """A retry budget is what caps retries across every call (max_attempts caps one call only): the
    runbook of a retry storm advises one, with a configuration the library accepts."""
    text = (repo / "docs" / "runbooks" / f"{ar.A_RETRY_STORM}.md").read_text()
    mitigation = text.split("## Mitigation", 1)[1]
    snippets = [code for code in re.findall(r"`([^`]+)`", mitigation) if code.startswith("RetryPolicy(")]
    namespace = {name: getattr(otel_resilience, name) for name in otel_resilience.__all__}
    policies = [eval(code, namespace) for code in snippets]
    assert any(isinstance(p, otel_resilience.RetryPolicy) and p.budget is not None for p in policies), (
        mitigation
    )


def _scraped_series(in_process: bool) -> list[dict[str, str]]:
    """promtool input series of a real scrape: a policy whose fallback answers (its breaker opens, then
    rejects) and one without a fallback whose calls fail; each counter at 0, then its scraped value."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument  # noqa: PLC0415

    had_default = current_listener() is not None
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False
    )
    instrument(meter_provider=provider, in_process_histograms=in_process)
    alerts = otel_resilience.AlertSystem(name="runbook-alerts")  # other tests count the process-wide one's
    try:
        manager = otel_resilience.ResilienceManager(alert_system=alerts)
        answered = otel_resilience.ResilienceConfig(
            name="runbook-answered",
            circuit_breaker=otel_resilience.CircuitBreakerConfig(failure_threshold=2, timeout=600.0),
            fallback_config=otel_resilience.FallbackConfig(
                strategy=otel_resilience.FallbackStrategy.DEFAULT_VALUE, default_value="degraded"
            ),
        )
        failing = otel_resilience.ResilienceConfig(
            name="runbook-failing", circuit_breaker=otel_resilience.CircuitBreakerConfig(failure_threshold=2)
        )

        def broken() -> str:
            raise ConnectionError("down")

        def invalid() -> str:
            raise ValueError("bad")

        for _ in range(4):  # two failures open the breaker, then two rejections: all answered
            assert manager.execute_with_resilience_sync(broken, answered) == "degraded"
        with contextlib.suppress(ValueError):
            manager.execute_with_resilience_sync(invalid, failing)
        text = generate_latest(registry).decode()
    finally:
        alerts.close()
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.startswith("resilience_") or sample.value <= 0:
                continue
            labels = {k: v for k, v in sample.labels.items() if not k.startswith("otel_scope")}
            matchers = ", ".join(f'{k}="{v}"' for k, v in sorted({**labels, "job": "shop"}.items()))
            series.append(
                {
                    "series": f"{sample.name}{{{matchers}}}",
                    "values": f"0 {' '.join([f'{sample.value:g}'] * 6)}",
                }
            )
    return series


_STEP_3: Final = {("runbook-answered", "ConnectionError"), ("runbook-failing", "ValueError")}
"""The errors the breakers of :func:`_scraped_series` counted as failures, by policy."""


def _error_types(
    promtool, tmp_path, series: list[dict[str, str]], expr: str, expected: set[tuple[str, str]]
) -> str:
    """promtool's complaint when ``expr`` does not name exactly the ``expected`` (policy, error type)
    pairs at 5m (else "")."""
    tests = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": f"count by (resilience_policy, error_type) (({expr}) > 0)",
                        "eval_time": "5m",
                        "exp_samples": [
                            {"labels": f'{{resilience_policy="{policy}", error_type="{error}"}}', "value": 1}
                            for policy, error in sorted(expected)
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "errors.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


@pytest.mark.parametrize("in_process", [False, True], ids=["sdk-histograms", "in-process-histograms"])
def test_the_breaker_open_runbook_names_the_errors_that_opened_it_behind_a_fallback(
    promtool, repo, tmp_path, in_process
):
    """Step 3 of the breaker-open runbook (which errors opened it) names them for a policy whose fallback
    answered every call, as for one without a fallback: never the breaker's own rejections."""
    text = (repo / "docs" / "runbooks" / f"{ar.A_BREAKER_OPEN}.md").read_text()
    (step,) = [e for e in checks.markdown_expressions(text) if re.match(r"sum by \([^)]*\berror_type\)", e)]
    step = step.replace("<job>", "shop")
    assert _error_types(promtool, tmp_path, _scraped_series(in_process), step, _STEP_3) == ""


@pytest.mark.parametrize("in_process", [False, True], ids=["sdk-histograms", "in-process-histograms"])
def test_the_failures_panel_the_runbooks_point_to_shows_the_errors_a_fallback_answered(
    promtool, dashboards, tmp_path, in_process
):
    """Panel "Failures by error type" (step 3 of the breaker-open runbook, step 2 of the fallback-rate one)
    shows the errors of a policy whose fallback answered every call, its breaker's rejections included,
    as it does for a policy without a fallback."""
    (panel,) = [p for d in dashboards.values() for p in d["panels"] if p["title"] == "Failures by error type"]
    (target,) = panel["targets"]
    expr = checks.substitute_grafana(target["expr"]).replace("$job", "shop")
    expr = re.sub(r"\$\w+", ".*", expr)
    expected = _STEP_3 | {("runbook-answered", "otel_resilience.errors.CircuitOpenError")}
    assert _error_types(promtool, tmp_path, _scraped_series(in_process), expr, expected) == ""


_BORN_AT_ONE: Final = {
    # The first refused reload of an error type: its series appears at 1 (the zero series has none).
    ar.A_RELOAD_FAILED: (
        "resilience_reload_total",
        'resilience_policy="p", resilience_reload_outcome="failed"',
        "TypeError",
    ),
    # The first failed recovery action on an error type (the zero series have no error type).
    ar.A_RECOVERY_LOW: (
        "resilience_recovery_attempts_total",
        (
            'resilience_policy="p", resilience_name="r", resilience_recovery_strategy="retry", '
            'resilience_recovery_result="failure"'
        ),
        "ConnectionError",
    ),
}


@pytest.mark.parametrize("alert", sorted(_BORN_AT_ONE))
def test_runbook_queries_by_error_type_count_the_first_event(promtool, repo, recorded, tmp_path, alert):
    """A runbook query that names a rare event's error types counts the first one: its series appears at
    its first increment, already at 1, which ``increase()`` alone misses (the one refused reload that
    fired the alert would read 0)."""
    counter, labels, error_type = _BORN_AT_ONE[alert]
    text = (repo / "docs" / "runbooks" / f"{alert}.md").read_text()
    known = checks.known_series(recorded)
    blocks = [
        e.replace("<job>", "shop").replace("<policy>", "p")
        for e in checks.markdown_expressions(text)
        if "error_type" in (checks.analyse(e, known).labels or ())
    ]
    assert blocks, alert
    tests = {
        "rule_files": [str(repo / "alerts" / ar.RULES_FILE)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{counter}{{job="shop", {labels}, error_type="{error_type}"}}',
                        "values": "_ _ _ 1 1 1 1 1 1 1 1",
                    },
                ],
                "promql_expr_test": [
                    {
                        "expr": f"count by (error_type) (({block}) > 0)",
                        "eval_time": "8m",
                        "exp_samples": [{"labels": f'{{error_type="{error_type}"}}', "value": 1}],
                    }
                    for block in blocks
                ],
            }
        ],
    }
    path = tmp_path / "first.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("in_process", [False, True], ids=["sdk-histograms", "in-process-histograms"])
def test_the_error_pattern_runbook_finds_the_policies_an_error_reaches_behind_a_fallback(
    promtool, repo, tmp_path, in_process
):
    """The error-pattern runbook's query of the policies that see the alert's error type finds a policy
    whose fallback answered it, as one whose calls failed with it."""
    text = (repo / "docs" / "runbooks" / f"{ar.A_ERROR_PATTERN}.md").read_text()
    (query,) = [e for e in checks.markdown_expressions(text) if "<error_type>" in e]
    series = _scraped_series(in_process)
    for policy, error in sorted(_STEP_3):
        expr = query.replace("<job>", "shop").replace("<error_type>", error)
        expr = f'label_replace({expr}, "error_type", "{error}", "", "")'
        assert _error_types(promtool, tmp_path, series, expr, {(policy, error)}) == "", error


def test_runbook_latency_percentiles_leave_rejections_out(repo):
    """A runbook's percentile of execution durations leaves rejected executions out, as the latency panels
    do: a rejection returns at once, and during an outage (an open breaker) they would pull the
    percentile the runbook compares with the timeout down."""
    durations = re.compile(
        r"(resilience_execution_duration_seconds_bucket|resilience_execution_latency_bucket_total)\{([^}]*)\}"
    )
    seen = 0
    for path in sorted((repo / "docs" / "runbooks").glob("*.md")):
        for expr in checks.markdown_expressions(path.read_text()):
            if "histogram_quantile" not in expr:
                continue
            for series, matchers in durations.findall(expr):
                seen += 1
                assert 'resilience_outcome!="rejected"' in matchers, (path.name, series, matchers)
    assert seen
