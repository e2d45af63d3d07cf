"""The Prometheus rules: linted and unit-tested by the real promtool, tied to the registry."""

from __future__ import annotations

import copy
import pickle
import re
import subprocess

import pytest
import yaml

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import alertmanager, checks, naming
from otel_resilience.patterns import alerts as inprocess
from otel_resilience.telemetry import semconv as sc

REQUIRED_ALERTS = {
    "ResilienceCircuitBreakerOpen",
    "ResilienceCircuitBreakerFlapping",
    "ResilienceCircuitBreakerWouldOpen",
    "ResilienceBulkheadFull",
    "ResilienceBulkheadNearSaturation",
    "ResilienceRecoveryRateLow",
    "ResilienceErrorPatternRepeated",
    "ResilienceRetryStorm",
    "ResilienceHighFallbackRate",
    "ResilienceTimeoutsRising",
    "ResilienceRetryBudgetExhausted",
    "ResilienceRateLimitedSustained",
    "ResilienceRateLimiterRefusing",
    "ResilienceChaosDrillActive",
    "ResilienceReloadFailed",
    "ResilienceConfigStale",
    "ResilienceSharedStoreDegraded",
    "ResilienceSharedStoreFlapping",
    "ResilienceTelemetryOverflow",
}


def run(*command, cwd=None):
    return subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=60, check=False, cwd=cwd
    )


def alert_rules_of(rules):
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_lint_is_clean(promtool, repo):
    """promtool check rules --lint=all --lint-fatal accepts alerts/rules.yml."""
    result = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", repo / "alerts" / "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool, repo):
    """promtool test rules runs every alert scenario in alerts/rules_test.yml and passes."""
    result = run(promtool, "test", "rules", repo / "alerts" / "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists():
    """The issue's alerts all exist, each with a runbook-named alert."""
    assert set(ar.ALERT_NAMES) == REQUIRED_ALERTS


def test_every_alert_is_unit_tested_firing_and_silent(rules, rules_test):
    """Every alert of rules.yml is in rules_test.yml, expected to fire at some time and to be silent at others."""
    names = {rule["alert"] for rule in alert_rules_of(rules)}
    checks_by_alert: dict[str, list[int]] = {}
    for case in rules_test["tests"]:
        for check in case.get("alert_rule_test", []):
            checks_by_alert.setdefault(check["alertname"], []).append(len(check["exp_alerts"]))
    assert set(checks_by_alert) == names
    for name, counts in checks_by_alert.items():
        assert any(counts), f"{name} never expected to fire"
        assert counts[0] == 0, f"{name}: the first check must show it pending (its `for` respected)"
        assert counts[-1] == 0, f"{name}: the last check must show it resolved"


def test_every_series_in_the_unit_tests_is_derived(rules_test):
    """The promtool test inputs use only series and labels derived from semconv."""
    assert checks.check_rules_test(rules_test) == []


def test_every_rule_references_only_derived_or_recorded_series(rules):
    """Each rule parses, selects derived or earlier-recorded series, and uses labels those carry."""
    assert checks.check_rules(rules) == []


def test_alerts_carry_severity_summary_description_and_runbook(rules, repo):
    """Each alert has a severity label and annotations; its runbook exists with the four sections."""
    for rule in alert_rules_of(rules):
        assert rule["labels"]["severity"] in (
            sc.ALERT_SEVERITIES if rule["alert"] != ar.A_CHAOS_DRILL else ("info",)
        )
        assert rule["labels"]["severity"] in ar.RULE_SEVERITIES
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations)
        assert "$value" in annotations["description"]
        assert re.search(
            r"\$labels\.(resilience_policy|resilience_name|resilience_config_file|metric)",
            annotations["description"],
        )
        assert annotations["runbook_url"].endswith(f"/docs/runbooks/{rule['alert']}.md")
        runbook = (repo / "docs" / "runbooks" / f"{rule['alert']}.md").read_text()
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in runbook, (rule["alert"], section)


def test_runbook_queries_reference_only_derived_or_recorded_series(repo, recorded):
    """Every ```promql block of every runbook passes the same name check as the rules."""
    runbooks = sorted((repo / "docs" / "runbooks").glob("*.md"))
    assert {p.stem for p in runbooks} >= REQUIRED_ALERTS
    for path in runbooks:
        text = path.read_text()
        assert "```promql" in text, path.name
        assert checks.check_markdown(text, recorded) == [], path.name


def test_breaker_open_severity_grows_with_duration(rules):
    """The breaker-open alert warns first and pages later (severity by duration)."""
    ladder = {
        r["labels"]["severity"]: r["for"] for r in alert_rules_of(rules) if r["alert"] == ar.A_BREAKER_OPEN
    }
    assert ladder == {"warning": ar.BREAKER_OPEN_WARNING_FOR, "critical": ar.BREAKER_OPEN_CRITICAL_FOR}


@pytest.mark.parametrize("scale", [1e-6, 1e-5])
def test_a_time_scale_under_a_millisecond_per_rule_duration_is_refused(scale):
    """A time scale that would make a rule duration shorter than 1 ms is refused, naming time_scale.

    At 1e-6 the breaker-open warning (1m) and its critical (10m) would both wait 1 ms: the
    page would fire with the warning. At 1e-5 the 1m and 2m durations would both be 1 ms.
    """
    with pytest.raises(ValueError, match=r"time_scale=1e-0[56] .*'1m'.* under 1 ms"):
        ar.render_rules(scale)


def test_a_scaled_duration_just_under_a_millisecond_is_not_written_as_one():
    """The refusal says how far under 1 ms it is (``:g`` wrote "1 ms: under 1 ms")."""
    with pytest.raises(ValueError, match=r"makes '1m' 0\.999999996 ms: under 1 ms"):
        ar.render_rules(0.0000166666666)


def test_the_smallest_time_scale_keeps_the_breaker_open_ladder():
    """At the smallest time scale the shipped rules accept (1 ms per production minute, their shortest
    duration), the breaker-open alert still warns before it pages."""
    text = ar.render_rules(1 / 60_000)
    ladder = {
        r["labels"]["severity"]: r["for"]
        for r in alert_rules_of(yaml.safe_load(text))
        if r["alert"] == ar.A_BREAKER_OPEN
    }
    assert ladder == {"warning": "1ms", "critical": "10ms"}


def test_a_time_scale_that_rounds_an_adapted_ladder_to_one_length_is_refused():
    """An adapted warning (1m) and critical (70s) both round to 1 ms at the smallest time scale:
    the page would fire with the warning, so that scale is refused, naming time_scale."""
    options = ar.RuleOptions(breaker_open_warning_for="1m", breaker_open_critical_for="70s")
    with pytest.raises(
        ValueError,
        match=r"time_scale=1\.666\d*e-05 makes breaker_open_warning_for \('1m'\) and "
        r"breaker_open_critical_for \('70s'\) both 1ms",
    ):
        ar.render_rules(1 / 60_000, options)
    ladder = {
        r["labels"]["severity"]: r["for"]
        for r in alert_rules_of(yaml.safe_load(ar.render_rules(1e-4, options)))
        if r["alert"] == ar.A_BREAKER_OPEN
    }
    assert ladder == {"warning": "6ms", "critical": "7ms"}


def test_thresholds_are_pinned():
    """The thresholds users rely on are pinned (the dashboards draw the same constants)."""
    assert (ar.RETRY_STORM_RATIO, ar.FALLBACK_RATIO, ar.TIMEOUT_RATIO) == (0.5, 0.1, 0.05)
    assert (ar.BULKHEAD_NEAR_SATURATION, ar.BULKHEAD_FULL_SATURATION) == (0.8, 1.0)
    assert (ar.BREAKER_FLAPPING_TRIPS, ar.BREAKER_FLAPPING_WINDOW) == (3, "30m")
    assert (ar.BREAKER_WOULD_OPEN_WINDOW, ar.BREAKER_WOULD_OPEN_FOR) == ("5m", "5m")
    assert (ar.RECOVERY_RATE_THRESHOLD, ar.RECOVERY_MIN_ATTEMPTS, ar.RECOVERY_WINDOW) == (0.8, 10, "5m")
    assert (ar.RECOVERY_SPARSE_WINDOW, ar.RECOVERY_FOR) == ("1h", "2m")
    assert (ar.BULKHEAD_REJECTION_RATIO, ar.BULKHEAD_FULL_FOR) == (0.05, "2m")
    assert (ar.MIN_EXECUTION_RATE, ar.RATE_WINDOW, ar.RATIO_ALERT_FOR) == (0.1, "5m", "10m")
    assert (ar.RETRY_BUDGET_WINDOW, ar.RETRY_BUDGET_FOR) == ("5m", "10m")
    assert (ar.RATE_LIMITED_RATIO, ar.RATE_LIMITED_FOR) == (0.1, "5m")
    assert ar.STORE_DEGRADED_FOR == "2m"
    assert (ar.STORE_FLAPPING_OUTAGES, ar.STORE_FLAPPING_WINDOW, ar.STORE_FLAPPING_FOR) == (3, "30m", "2m")
    assert (ar.RELOAD_FAILED_WINDOW, ar.CONFIG_STALE_FOR) == ("15m", "15m")


def test_recovery_threshold_matches_the_in_process_alert():
    """Prometheus and the in-process alert agree on the recovery threshold and its minimum attempts."""
    assert ar.RECOVERY_RATE_THRESHOLD == inprocess.DEFAULT_RECOVERY_RATE_THRESHOLD
    assert ar.RECOVERY_MIN_ATTEMPTS == inprocess.DEFAULT_MIN_RECOVERY_ATTEMPTS


def test_thresholds_appear_in_the_rule_expressions(rules):
    """Each threshold constant is the number its alert's expression compares with."""
    exprs = {(r["alert"], r["labels"]["severity"]): r["expr"] for r in alert_rules_of(rules)}
    expected = {
        ar.A_RETRY_STORM: f"> {ar.RETRY_STORM_RATIO:g}",
        ar.A_FALLBACK_HIGH: f"> {ar.FALLBACK_RATIO:g}",
        ar.A_TIMEOUTS: f"> {ar.TIMEOUT_RATIO:g}",
        ar.A_BULKHEAD_NEAR: f">= {ar.BULKHEAD_NEAR_SATURATION:g}",
        ar.A_BULKHEAD_FULL: f"> {ar.BULKHEAD_REJECTION_RATIO:g}",
        ar.A_BREAKER_FLAPPING: f">= {ar.BREAKER_FLAPPING_TRIPS}",
        ar.A_BREAKER_WOULD_OPEN: f"{ar.R_BREAKER_WOULD_TRIPS} > 0",
        ar.A_RECOVERY_LOW: f"< {ar.RECOVERY_RATE_THRESHOLD:g}",
        ar.A_RETRY_BUDGET: f"{ar.R_RETRY_BUDGET_DENIALS} > 0",
        ar.A_RATE_LIMITED: f"> {ar.RATE_LIMITED_RATIO:g}",
    }
    for alert, comparison in expected.items():
        assert comparison in exprs[(alert, "warning")], alert


# --- the checks bite ------------------------------------------------------------------------


def mutated(rules, alert, old, new):
    copy_ = copy.deepcopy(rules)
    for group in copy_["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert or rule.get("record") == alert:
                assert old in rule["expr"]
                rule["expr"] = rule["expr"].replace(old, new)
    return copy_


@pytest.mark.parametrize(
    ("target", "old", "new", "problem"),
    [
        (
            ar.R_RETRIES,
            "resilience_retries_total",
            "resilience_retry_total",
            "unknown series 'resilience_retry_total'",
        ),
        (
            ar.R_EXECUTIONS_BY_OUTCOME,
            "resilience_outcome)",
            "resilience_result)",
            "groups by 'resilience_result'",
        ),
        (ar.R_BREAKER_OPEN, '"open|half_open"', '"open|half_opened"', "'half_opened' is not one of"),
        (
            ar.A_BREAKER_WOULD_OPEN,
            'state="metrics_only"',
            'state="metric_only"',
            "'metric_only' is not one of",
        ),
        (ar.A_RETRY_STORM, ar.R_RETRY_RATIO, "job_policy:resilience_retry_ratio", "unknown series"),
        (
            ar.A_FALLBACK_HIGH,
            "on (job, resilience_policy)",
            "on (job, resilience_outcome)",
            "vector matching on 'resilience_outcome'",
        ),
        # The breaker-open alert copies its policy from the breaker's name, for Alertmanager's
        # inhibitions: a source label the input lacks would copy nothing, silently.
        (
            ar.A_BREAKER_OPEN,
            '"resilience_name", "(.+)"',
            '"resilience_nmae", "(.+)"',
            "label_replace reads 'resilience_nmae', which its input lacks",
        ),
    ],
)
def test_a_broken_rule_fails_the_name_check(rules, target, old, new, problem):
    """A misspelled series, label or value in any rule makes check_rules report it."""
    found = checks.check_rules(mutated(rules, target, old, new))
    assert any(problem in line for line in found), found


def test_an_annotation_using_a_dropped_label_fails_the_check(rules):
    """An annotation that shows a label the expression aggregates away is reported."""
    broken = copy.deepcopy(rules)
    for rule in alert_rules_of(broken):
        if rule["alert"] == ar.A_RETRY_STORM:
            rule["annotations"]["summary"] += " ({{ $labels.instance }})"
    assert any("$labels.instance" in line for line in checks.check_rules(broken))


def test_a_broken_threshold_fails_the_promtool_unit_tests(promtool, rules, rules_test, tmp_path):
    """The unit tests catch a changed threshold: promtool test rules fails on the mutated file."""
    broken = mutated(rules, ar.A_RETRY_STORM, f"> {ar.RETRY_STORM_RATIO:g}", "> 0.8")
    result = _own_unit_tests(promtool, broken, rules_test, ar.A_RETRY_STORM, tmp_path)
    assert result.returncode != 0
    assert ar.A_RETRY_STORM in result.stdout + result.stderr


def _unit_tests_of(rules_test, alert):
    """The promtool test groups that check ``alert`` (each group runs on its own series), with its checks only.

    A group's checks of other alerts and of expressions are dropped: a failure of the file is
    then the alert's own (with :func:`_rules_read_by`, other rules are not evaluated).
    """
    document = copy.deepcopy(rules_test)
    document["tests"] = [
        case
        for case in document["tests"]
        if any(check["alertname"] == alert for check in case.get("alert_rule_test", []))
    ]
    assert document["tests"], alert
    for case in document["tests"]:
        case["alert_rule_test"] = [check for check in case["alert_rule_test"] if check["alertname"] == alert]
        case.pop("promql_expr_test", None)
    return document


_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def _rules_read_by(rules, alert):
    """``rules`` cut to ``alert`` and the rules it reads, directly or through others, in their order.

    promtool evaluates every rule of its files at every step of a test: the recording rules are
    most of a unit test's time. A rule is read by its record's name (or, for an alert, its name,
    as ``ALERTS`` selects it) appearing in a rule kept.
    """
    by_name = {
        rule.get("record") or rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]
    }
    kept, todo = set(), [alert]
    while todo:
        name = todo.pop()
        if name in kept:
            continue
        kept.add(name)
        todo.extend(token for token in _NAME.findall(by_name[name]["expr"]) if token in by_name)
    document = copy.deepcopy(rules)
    for group in document["groups"]:
        group["rules"] = [rule for rule in group["rules"] if (rule.get("record") or rule["alert"]) in kept]
    document["groups"] = [group for group in document["groups"] if group["rules"]]
    return document


def _own_unit_tests(promtool, rules, rules_test, alert, directory):
    """Run ``alert``'s own promtool unit tests on ``rules`` cut to what it reads."""
    (directory / ar.RULES_FILE).write_text(yaml.safe_dump(_rules_read_by(rules, alert)))
    (directory / ar.RULES_TEST_FILE).write_text(yaml.safe_dump(_unit_tests_of(rules_test, alert)))
    return run(promtool, "test", "rules", directory / ar.RULES_TEST_FILE)


@pytest.mark.parametrize("alert", sorted(REQUIRED_ALERTS))
def test_an_alerts_own_unit_tests_pass_on_the_rules_it_reads(promtool, rules, rules_test, tmp_path, alert):
    """The cut the mutation tests below run on passes as it is: their failures are the change's."""
    result = _own_unit_tests(promtool, rules, rules_test, alert, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "change",
    [
        # The ratio alerts: above the threshold (a case between it and 1.5 times it fires, one
        # between half of it and it stays silent, exactly at it stays silent), with at least 0.1
        # executions/s (a policy at exactly 0.1/s is judged).
        *(
            case
            for alert, ratio in (
                (ar.A_RETRY_STORM, ar.RETRY_STORM_RATIO),
                (ar.A_FALLBACK_HIGH, ar.FALLBACK_RATIO),
                (ar.A_TIMEOUTS, ar.TIMEOUT_RATIO),
                (ar.A_BULKHEAD_FULL, ar.BULKHEAD_REJECTION_RATIO),
                (ar.A_RATE_LIMITED, ar.RATE_LIMITED_RATIO),
            )
            for case in (
                (alert, "expr", f"> {ratio:g}", f"> {ratio * 1.5:g}"),
                (alert, "expr", f"> {ratio:g}", f"> {ratio / 2:g}"),
                (alert, "expr", f"> {ratio:g}", f">= {ratio:g}"),
                (alert, "expr", f">= {ar.MIN_EXECUTION_RATE:g}", f">= {ar.MIN_EXECUTION_RATE * 1.5:g}"),
                (alert, "expr", f">= {ar.MIN_EXECUTION_RATE:g}", f"> {ar.MIN_EXECUTION_RATE:g}"),
            )
        ),
        (ar.A_BULKHEAD_FULL, "for", ar.BULKHEAD_FULL_FOR, "1m"),
        (ar.A_BULKHEAD_FULL, "for", ar.BULKHEAD_FULL_FOR, "0s"),
        (ar.A_BREAKER_OPEN, "for", ar.BREAKER_OPEN_WARNING_FOR, "2m"),
        # The recovery rate is judged over at least 10 actions ("1 failure out of 2 never alerts"):
        # 5 failed actions in 5 m stay silent, 10 at 50 % fire.
        (ar.A_RECOVERY_LOW, "expr", f">= {ar.RECOVERY_MIN_ATTEMPTS}", ">= 5"),
        (ar.A_RECOVERY_LOW, "expr", f">= {ar.RECOVERY_MIN_ATTEMPTS}", ">= 15"),
        (ar.A_RECOVERY_LOW, "expr", f">= {ar.RECOVERY_MIN_ATTEMPTS}", f"> {ar.RECOVERY_MIN_ATTEMPTS}"),
        # Under 80 %: exactly 80 % of the actions recovered, or of the executions answered while
        # every action failed, stays silent.
        (
            ar.A_RECOVERY_LOW,
            "expr",
            f"{ar.R_RECOVERY_RATE} < {ar.RECOVERY_RATE_THRESHOLD:g}",
            f"{ar.R_RECOVERY_RATE} <= {ar.RECOVERY_RATE_THRESHOLD:g}",
        ),
        (
            ar.A_RECOVERY_LOW,
            "expr",
            f"{ar.R_SUCCESS_RATIO} < {ar.RECOVERY_RATE_THRESHOLD:g}",
            f"{ar.R_SUCCESS_RATIO} <= {ar.RECOVERY_RATE_THRESHOLD:g}",
        ),
        # The outage branch: none of the actions of the hour succeeded; one success keeps it silent.
        (ar.A_RECOVERY_LOW, "expr", "== 0", "<= 0.1"),
        (ar.A_RECOVERY_LOW, "for", ar.RECOVERY_FOR, "1m"),
        (ar.A_RECOVERY_LOW, "for", ar.RECOVERY_FOR, "0s"),
        (ar.A_ERROR_PATTERN, "for", ar.ERROR_PATTERN_FOR, "2m"),
        (ar.A_ERROR_PATTERN, "for", ar.ERROR_PATTERN_FOR, "0s"),
        # "At least one within every 5 m": one would-be trip, or one denial, every 4 minutes fires.
        (ar.A_BREAKER_WOULD_OPEN, "expr", "> 0", "> 1"),
        (ar.A_RETRY_BUDGET, "expr", "> 0", "> 1"),
        # The shared store and the watched configuration file: each threshold and `for`.
        (ar.A_STORE_DEGRADED, "for", ar.STORE_DEGRADED_FOR, "1m"),
        (ar.A_STORE_DEGRADED, "for", ar.STORE_DEGRADED_FOR, "4m"),
        (
            ar.A_STORE_FLAPPING,
            "expr",
            f">= {ar.STORE_FLAPPING_OUTAGES}",
            f">= {ar.STORE_FLAPPING_OUTAGES - 1}",
        ),
        (
            ar.A_STORE_FLAPPING,
            "expr",
            f">= {ar.STORE_FLAPPING_OUTAGES}",
            f">= {ar.STORE_FLAPPING_OUTAGES + 1}",
        ),
        (ar.A_STORE_FLAPPING, "expr", f">= {ar.STORE_FLAPPING_OUTAGES}", f"> {ar.STORE_FLAPPING_OUTAGES}"),
        (ar.A_STORE_FLAPPING, "for", ar.STORE_FLAPPING_FOR, "1m"),
        (ar.A_STORE_FLAPPING, "for", ar.STORE_FLAPPING_FOR, "4m"),
        (ar.A_CONFIG_STALE, "for", ar.CONFIG_STALE_FOR, "7m"),
        (ar.A_CONFIG_STALE, "for", ar.CONFIG_STALE_FOR, "30m"),
    ],
)
def test_a_changed_threshold_guard_or_for_fails_the_promtool_unit_tests(
    promtool, rules, rules_test, tmp_path, change
):
    """Each threshold, minimum-traffic guard and ``for`` the docs state is pinned by a unit test.

    The rule is changed the smallest way that breaks it (a threshold moved, ``>`` turned into
    ``>=``, a ``for`` halved or doubled), and promtool must fail on the alert's own test cases.
    """
    alert, where, old, new = change
    broken = copy.deepcopy(rules)
    changed = 0
    for rule in alert_rules_of(broken):
        if rule["alert"] != alert or (where == "for" and rule["for"] != old):
            continue
        if where == "for":
            rule["for"] = new
        else:
            assert old in rule["expr"], rule
            rule["expr"] = rule["expr"].replace(old, new)
        changed += 1
    assert changed
    result = _own_unit_tests(promtool, broken, rules_test, alert, tmp_path)
    assert result.returncode != 0, f"{alert}: {where} {old!r} -> {new!r} passed the unit tests"
    assert alert in result.stdout + result.stderr


def test_one_full_queue_among_idle_keys_shows_in_the_queue_saturation_rule(promtool, repo, tmp_path):
    """A keyed policy's queued calls and queue limits are summed over its keys: the rule reads its fullest key.

    The unit tests evaluate the recording rule on one key's full queue among nine idle ones (10 %
    of the sums) and expect 100 %; an exporter without the queue utilization gauge still gives
    queued over the limit.
    """
    document = yaml.safe_load((repo / "alerts" / ar.RULES_TEST_FILE).read_text())
    cases = [
        case
        for case in document["tests"]
        if any(check["expr"] == ar.R_BULKHEAD_QUEUE_SATURATION for check in case.get("promql_expr_test", []))
    ]
    assert cases, "no unit test evaluates the queue saturation rule"
    names = {sc.BULKHEAD_QUEUED, sc.BULKHEAD_QUEUE_LIMIT, sc.BULKHEAD_QUEUE_UTILIZATION}
    fed = {item["series"].split("{")[0] for case in cases for item in case["input_series"]}
    assert fed == {naming.series(name) for name in names}
    expected = [
        sample["value"]
        for case in cases
        for check in case["promql_expr_test"]
        for sample in check["exp_samples"]
    ]
    assert 1.0 in expected
    (tmp_path / ar.RULES_FILE).write_text((repo / "alerts" / ar.RULES_FILE).read_text())
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump({**document, "tests": cases}))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_lint_rejects_duplicate_rules(promtool, repo, tmp_path):
    """The lint step bites: a duplicated rule makes promtool check rules --lint-fatal fail."""
    rules = yaml.safe_load((repo / "alerts" / "rules.yml").read_text())
    rules["groups"][0]["rules"].append(copy.deepcopy(rules["groups"][0]["rules"][0]))
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", path)
    assert result.returncode != 0


def test_operations_doc_lists_every_alert_and_recording_rule(repo, rules):
    """docs/operations.md names every alert and recording rule that rules.yml defines."""
    text = (repo / "docs" / "operations.md").read_text()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert f"`{rule.get('record') or rule.get('alert')}`" in text


def _alerted_series(rules):
    """Every series an alert reads, directly or through the recording rules it reads.

    The telemetry overflow alert is left out: it reads only the SDK's overflow series of the
    metrics, none of their own.
    """
    recorded: dict[str, frozenset[str]] = {}
    reads: dict[str, set[str]] = {}
    alerted: set[str] = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == ar.A_TELEMETRY_OVERFLOW:
                continue
            analysis = checks.analyse(str(rule["expr"]), checks.known_series(recorded))
            series = set().union(*(reads.get(name, {name}) for name in analysis.series))
            if "record" in rule:
                recorded[rule["record"]] = analysis.labels or frozenset()
                reads[rule["record"]] = series
            else:
                alerted |= series
    return alerted


def test_every_metric_has_an_alert_or_a_documented_reason_not_to(repo, rules):
    """Each instrument of the registry feeds an alert, or docs/operations.md says why it has none
    (section "Metrics without an alert of their own", by its Prometheus name); never both."""
    text = (repo / "docs" / "operations.md").read_text()
    assert "### Metrics without an alert of their own" in text
    section = text.split("### Metrics without an alert of their own", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(resilience_\w+)`", section))
    alerted = _alerted_series(rules)
    problems = []
    for spec in sc.INSTRUMENTS:
        names = {sc.prometheus_name(spec), *sc.prometheus_series(spec)}
        if names & alerted and names & listed:
            problems.append(f"{spec.name}: feeds an alert, yet listed as having none")
        elif not names & alerted and not names & listed:
            problems.append(f"{spec.name}: no alert reads it, and no reason is documented")
    unknown = listed - {
        name for spec in sc.INSTRUMENTS for name in (sc.prometheus_name(spec), *sc.prometheus_series(spec))
    }
    problems += [f"{name}: listed, but no instrument exports it" for name in sorted(unknown)]
    assert problems == [], "\n".join(problems)


# --- what the alerts say, and what a team adapts ---------------------------------------------


def _alert(rules, name, severity="warning"):
    return next(
        r for r in alert_rules_of(rules) if r["alert"] == name and r["labels"]["severity"] == severity
    )


def test_counts_are_shown_as_whole_numbers(rules):
    """Annotations that show a count (patterns, trips, instances) print it without decimals, never '9.05 pattern(s)'."""
    for name in (ar.A_ERROR_PATTERN, ar.A_BREAKER_FLAPPING, ar.A_BREAKER_OPEN, ar.A_BREAKER_WOULD_OPEN):
        description = _alert(rules, name)["annotations"]["description"]
        assert '{{ printf "%.0f" $value }}' in description, name
        assert "humanize }}" not in description, name


def test_bulkhead_full_measures_rejections_relative_to_traffic(rules):
    """ResilienceBulkheadFull compares bulkhead rejections per execution with 5 %, under the traffic guard, and says so."""
    rule = _alert(rules, ar.A_BULKHEAD_FULL)
    assert rule["expr"].startswith(f"{ar.R_BULKHEAD_REJECTION_RATIO} > {ar.BULKHEAD_REJECTION_RATIO:g}")
    assert f"{ar.R_EXECUTIONS} >= {ar.MIN_EXECUTION_RATE:g}" in rule["expr"]
    assert ar.R_BULKHEAD_SATURATION not in rule["expr"]
    description = rule["annotations"]["description"]
    assert "rejected {{ $value | humanizePercentage }} of the executions" in description
    assert "concurrency limit" not in description
    assert "above 5% for 2m, with at least 0.1 executions/s" in description


def test_breaker_open_counts_only_the_states_that_reject_calls(rules):
    """Open means open or half-open: a disabled or metrics_only breaker lets every call through and counts 0."""
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("record") == ar.R_BREAKER_OPEN]
    assert 'resilience_circuit_breaker_state=~"open|half_open"' in rule["expr"]
    assert "closed" not in rule["expr"]
    assert "disabled" not in rule["expr"]
    assert "metrics_only" not in rule["expr"]


def test_would_open_counts_would_be_trips_of_a_breaker_still_in_metrics_only(rules):
    """ResilienceCircuitBreakerWouldOpen reads the would-be trips (metrics_only -> metrics_only, any reason),
    only while the breaker is metrics_only, and warns: nothing is rejected yet."""
    (record,) = [
        r for g in rules["groups"] for r in g["rules"] if r.get("record") == ar.R_BREAKER_WOULD_TRIPS
    ]
    assert 'resilience_circuit_breaker_previous_state="metrics_only"' in record["expr"]
    assert 'resilience_circuit_breaker_state="metrics_only"' in record["expr"]
    assert "transition_reason" not in record["expr"]
    assert f"[{ar.BREAKER_WOULD_OPEN_WINDOW}]" in record["expr"]
    assert checks.recorded_series(rules)[ar.R_BREAKER_WOULD_TRIPS] == {"job", "resilience_name"}
    rule = _alert(rules, ar.A_BREAKER_WOULD_OPEN)
    assert rule["expr"] == (
        f"{ar.R_BREAKER_WOULD_TRIPS} > 0\nand on (job, resilience_name) "
        'resilience_circuit_breaker_state{resilience_circuit_breaker_state="metrics_only"} == 1'
    )
    assert rule["for"] == ar.BREAKER_WOULD_OPEN_FOR
    assert [
        r["labels"]["severity"] for r in alert_rules_of(rules) if r["alert"] == ar.A_BREAKER_WOULD_OPEN
    ] == ["warning"]
    assert "metrics_only" in rule["annotations"]["summary"]


def test_retry_budget_alert_counts_the_denials_of_each_retry_first_included(rules):
    """ResilienceRetryBudgetExhausted reads exhausted{stop_reason="budget"} by policy and retry (a new series'
    first denial counts), warns after 10m of steady denials, and its `for` is an option."""
    (record,) = [
        r for g in rules["groups"] for r in g["rules"] if r.get("record") == ar.R_RETRY_BUDGET_DENIALS
    ]
    assert ar.R_RETRY_BUDGET_DENIALS == "job_policy_name:resilience_retry_exhausted_budget:increase5m"
    selector = 'resilience_retry_exhausted_total{resilience_retry_stop_reason="budget"}'
    assert f"increase({selector}[{ar.RETRY_BUDGET_WINDOW}])" in record["expr"]
    assert f"{selector} offset {ar.RETRY_BUDGET_WINDOW}" in record["expr"]  # a new series counts whole
    assert checks.recorded_series(rules)[ar.R_RETRY_BUDGET_DENIALS] == {
        "job",
        "resilience_policy",
        "resilience_name",
    }
    rule = _alert(rules, ar.A_RETRY_BUDGET)
    assert (rule["expr"], rule["for"], rule["labels"]) == (
        f"{ar.R_RETRY_BUDGET_DENIALS} > 0",
        ar.RETRY_BUDGET_FOR,
        {"severity": "warning"},
    )
    assert "retries are being shed" in rule["annotations"]["description"]
    adapted = _alert(ar.rules_document(options=ar.RuleOptions(retry_budget_for="30m")), ar.A_RETRY_BUDGET)
    assert adapted["for"] == "30m"
    assert "kept denying retries for 30m" in adapted["annotations"]["description"]


def test_rate_limited_alert_compares_the_shed_calls_with_the_policys_executions(rules):
    """ResilienceRateLimitedSustained: calls shed (reason rate_limited) per execution of the policy over 5m,
    above 10 % for 5m, under the traffic guard; the ratio and its `for` are options."""
    by_record = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    assert ar.R_RATE_LIMITED == "job_policy_name:resilience_rejections_rate_limited:rate5m"
    assert by_record[ar.R_RATE_LIMITED] == (
        "sum by (job, resilience_policy, resilience_name) "
        '(rate(resilience_rejections_total{resilience_rejection_reason="rate_limited"}[5m]))'
    )
    assert by_record[ar.R_RATE_LIMITED_RATIO].startswith(
        f"{ar.R_RATE_LIMITED}\n/ on (job, resilience_policy) group_left ()\n({ar.R_EXECUTIONS} > 0)"
    )
    assert checks.recorded_series(rules)[ar.R_RATE_LIMITED_RATIO] == {
        "job",
        "resilience_policy",
        "resilience_name",
    }
    rule = _alert(rules, ar.A_RATE_LIMITED)
    assert rule["expr"] == (
        f"{ar.R_RATE_LIMITED_RATIO} > 0.1\nand on (job, resilience_policy) {ar.R_EXECUTIONS} >= 0.1"
    )
    assert (rule["for"], rule["labels"]) == ("5m", {"severity": "warning"})
    description = rule["annotations"]["description"]
    assert "shed {{ $value | humanizePercentage }} of the executions of policy" in description
    assert "above 10% for 5m, with at least 0.1 executions/s" in description
    adapted = _alert(
        ar.rules_document(options=ar.RuleOptions(rate_limited_ratio=0.25, rate_limited_for="15m")),
        ar.A_RATE_LIMITED,
    )
    assert adapted["expr"].startswith(f"{ar.R_RATE_LIMITED_RATIO} > 0.25\n")
    assert adapted["for"] == "15m"
    with pytest.raises(ValueError, match=r"RuleOptions\.rate_limited_ratio is a share and must be <= 1"):
        ar.RuleOptions(rate_limited_ratio=1.5)


def test_recovery_alert_names_the_policy(rules):
    """ResilienceRecoveryRateLow keeps resilience_policy, so the alert names the dependency, and judges 5m windows."""
    rule = _alert(rules, ar.A_RECOVERY_LOW)
    assert "{{ $labels.resilience_policy }}" in rule["annotations"]["summary"]
    labels = checks.recorded_series(rules)[ar.R_RECOVERY_RATE]
    assert {"job", "resilience_policy", "resilience_name"} <= labels
    assert ar.R_RECOVERY_RATE_SPARSE in rule["expr"]
    assert rule["for"] == ar.RECOVERY_FOR


def test_shipped_options_render_the_committed_rules(repo):
    """RuleOptions() renders exactly the committed rules.yml (the defaults are the shipped values)."""
    text = (repo / "alerts" / "rules.yml").read_text()
    assert ar.render_rules(options=ar.RuleOptions()) == text
    assert ar.RuleOptions().is_default


def test_runbook_url_base_job_label_and_thresholds_are_options():
    """A team's runbook URL, job label, thresholds and `for` durations reach every rule, without editing Python."""
    options = ar.RuleOptions(
        runbook_url_base="https://wiki.example.com/runbooks/",
        job_label="service",
        retry_storm_ratio=0.7,
        ratio_alert_for="15m",
        bulkhead_rejection_ratio=0.1,
        recovery_min_attempts=20,
        breaker_would_open_for="20m",
    )
    document = ar.rules_document(options=options)
    alerts = alert_rules_of(document)
    assert all(
        a["annotations"]["runbook_url"] == f"https://wiki.example.com/runbooks/{a['alert']}.md"
        for a in alerts
    )
    storm = next(a for a in alerts if a["alert"] == ar.A_RETRY_STORM)
    assert "> 0.7" in storm["expr"]
    assert storm["for"] == "15m"
    assert "above 0.7 for 15m" in storm["annotations"]["description"]
    assert "> 0.1" in next(a for a in alerts if a["alert"] == ar.A_BULKHEAD_FULL)["expr"]
    assert ">= 20" in next(a for a in alerts if a["alert"] == ar.A_RECOVERY_LOW)["expr"]
    would_open = next(a for a in alerts if a["alert"] == ar.A_BREAKER_WOULD_OPEN)
    assert would_open["for"] == "20m"
    assert "and on (service, resilience_name)" in would_open["expr"]
    assert "has kept doing so for 20m" in would_open["annotations"]["description"]
    exprs = "\n".join(r["expr"] for g in document["groups"] for r in g["rules"])
    assert re.search(r"\bjob\b", exprs) is None
    assert "by (service, resilience_policy" in exprs
    assert all("$labels.job" not in a["annotations"]["summary"] for a in alerts)
    assert "Adapted with: " in ar.render_rules(options=options)


def test_adapted_rules_pass_the_promtool_linter(promtool, tmp_path):
    """Rules rendered with a custom job label and thresholds are still valid for promtool check rules."""
    options = ar.RuleOptions(
        job_label="service", timeout_ratio=0.2, breaker_open_critical_for="30m", breaker_would_open_for="15m"
    )
    path = tmp_path / "rules.yml"
    path.write_text(ar.render_rules(options=options))
    result = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        (
            {"retry_storm_ratio": -1},
            ValueError,
            r"RuleOptions\.retry_storm_ratio must be a finite number > 0",
        ),
        ({"fallback_ratio": 1.5}, ValueError, r"RuleOptions\.fallback_ratio is a share and must be <= 1"),
        (
            {"ratio_alert_for": "ten minutes"},
            ValueError,
            r"RuleOptions\.ratio_alert_for must be a Prometheus duration",
        ),
        # What Prometheus cannot read (units out of order, twice, digits it does not know) would
        # make a rules file it refuses to load.
        (
            {"ratio_alert_for": "30s5m"},
            ValueError,
            r"RuleOptions\.ratio_alert_for must be a Prometheus duration",
        ),
        ({"recovery_for": "1m1m"}, ValueError, r"RuleOptions\.recovery_for must be a Prometheus duration"),
        (
            {"bulkhead_full_for": "\uff15m"},
            ValueError,
            r"RuleOptions\.bulkhead_full_for must be a Prometheus duration",
        ),
        (
            {"breaker_flapping_trips": 0},
            ValueError,
            r"RuleOptions\.breaker_flapping_trips must be an integer >= 1",
        ),
        ({"job_label": "my-job"}, ValueError, r"RuleOptions\.job_label must be a Prometheus label name"),
        # The service label cannot be one the rules already read or set with another meaning: the
        # alert's own severity would overwrite the service, a policy label would be grouped by twice.
        (
            {"job_label": "severity"},
            ValueError,
            (
                r"RuleOptions\.job_label must name the service, not 'severity', a label the rules and "
                r"alerts already carry"
            ),
        ),
        (
            {"job_label": "alertname"},
            ValueError,
            r"RuleOptions\.job_label must name the service, not 'alertname'",
        ),
        (
            {"job_label": "instance"},
            ValueError,
            r"RuleOptions\.job_label must name the service, not 'instance'",
        ),
        ({"job_label": "le"}, ValueError, r"RuleOptions\.job_label must name the service, not 'le'"),
        (
            {"job_label": "resilience_policy"},
            ValueError,
            r"RuleOptions\.job_label must name the service, not 'resilience_policy'",
        ),
        (
            {"job_label": "error_type"},
            ValueError,
            r"RuleOptions\.job_label must name the service, not 'error_type'",
        ),
        (
            {"runbook_url_base": "wiki/runbooks"},
            ValueError,
            r"RuleOptions\.runbook_url_base must be an http\(s\) URL",
        ),
        # Severity grows with duration: a page that comes with or before the warning leaves the
        # warning muted for good (critical mutes the warning of the same breaker).
        (
            {"breaker_open_warning_for": "15m"},
            ValueError,
            (
                r"RuleOptions\.breaker_open_critical_for must be longer than breaker_open_warning_for "
                r"\(15m\), got '10m'"
            ),
        ),
        (
            {"breaker_open_critical_for": "60s"},
            ValueError,
            (
                r"RuleOptions\.breaker_open_critical_for must be longer than breaker_open_warning_for "
                r"\(1m\), got '60s'"
            ),
        ),
        # The near-saturation alert averages over this duration: a range of 0 is no PromQL.
        (
            {"bulkhead_near_for": "0s"},
            ValueError,
            r"RuleOptions\.bulkhead_near_for is the window of an average and must be longer than 0",
        ),
        ({"timeout_ratio": "0.1"}, TypeError, r"RuleOptions\.timeout_ratio must be a number"),
        ({"recovery_for": 5}, TypeError, r"RuleOptions\.recovery_for must be a string"),
        # An int too large for a float: was OverflowError ("int too large to convert to float").
        (
            {"min_execution_rate": 10**400},
            ValueError,
            r"RuleOptions\.min_execution_rate must be a finite number > 0",
        ),
        ({"retry_storm_ratio": 10**400}, ValueError, r"RuleOptions\.retry_storm_ratio must be a finite"),
        # A count past an int64 (Prometheus's largest integer, a counter's largest value): 10**400
        # was written into the rule, which Prometheus refuses ("error parsing number").
        (
            {"breaker_flapping_trips": 10**400},
            ValueError,
            r"RuleOptions\.breaker_flapping_trips must be an integer >= 1 and <= 9223372036854775807",
        ),
        (
            {"recovery_min_attempts": 2**63},
            ValueError,
            r"RuleOptions\.recovery_min_attempts must be an integer >= 1 and <= 9223372036854775807",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_field(settings, error, message):
    """A bad option raises at construction, naming RuleOptions.field, never a silent clamp."""
    with pytest.raises(error, match=message):
        ar.RuleOptions(**settings)


def test_a_bad_option_is_a_rule_option_error_that_names_its_field():
    """RuleOptions raises RuleOptionError, a ValueError naming the field, whose field and reason a
    command line reads to name its own option instead; a pickled copy keeps both."""
    with pytest.raises(ar.RuleOptionError) as caught:
        ar.RuleOptions(job_label="")
    error = caught.value
    assert isinstance(error, ValueError)
    assert str(error) == "RuleOptions.job_label must be a Prometheus label name, got ''"
    assert (error.field, error.reason) == ("job_label", "must be a Prometheus label name, got ''")
    copied = pickle.loads(pickle.dumps(error))
    assert (type(copied), str(copied), copied.field, copied.reason) == (
        ar.RuleOptionError,
        str(error),
        error.field,
        error.reason,
    )


def test_options_parse_from_strings():
    """RuleOptions.from_strings parses each field by its type and refuses an unknown field."""
    options = ar.RuleOptions.from_strings({"retry_storm_ratio": "0.7", "breaker_flapping_trips": "5"})
    assert (options.retry_storm_ratio, options.breaker_flapping_trips) == (0.7, 5)
    with pytest.raises(ValueError, match="RuleOptions has no field 'retry_ratio'"):
        ar.RuleOptions.from_strings({"retry_ratio": "0.7"})
    with pytest.raises(
        ValueError, match=r"RuleOptions\.breaker_flapping_trips must be an integer, got '2\.5'"
    ):
        ar.RuleOptions.from_strings({"breaker_flapping_trips": "2.5"})


def test_adapted_or_scaled_files_name_the_export_command_that_made_them():
    """An adapted export does not claim to be the repository's checked copy: it names its own command."""
    options = ar.RuleOptions(job_label="service", retry_storm_ratio=0.7)
    for text, command in [
        (
            ar.render_rules(0.05, options),
            "otel-resilience export alerts DIR --time-scale 0.05 --set job_label=service --set retry_storm_ratio=0.7",
        ),
        (ar.render_rules(0.05), "otel-resilience export alerts DIR --time-scale 0.05"),
        (
            alertmanager.render_alertmanager("service"),
            "otel-resilience export alerts DIR --set job_label=service",
        ),
    ]:
        header = text.split("\n\n", 1)[0]
        assert f"# Generated by `{command}`" in header
        assert "--all" not in header
        assert "a test fails" not in header
    shipped = ar.render_rules()
    assert shipped.startswith("# Generated by `python -m otel_resilience.ops.export --all`")
    assert "a test fails when this file differs" in shipped.split("\n\n", 1)[0]


def test_the_alertmanager_header_names_every_option_not_only_the_job_label():
    """An alertmanager.yml exported beside adapted rules names all their options, the job label or not."""
    options = ar.RuleOptions(retry_storm_ratio=0.7, recovery_for="20m")
    header = alertmanager.render_alertmanager(options=options).split("\n\n", 1)[0]
    assert (
        "# Generated by `otel-resilience export alerts DIR --set retry_storm_ratio=0.7 --set recovery_for=20m`"
        in header
    )
    header = alertmanager.render_alertmanager("service", options=options, time_scale=0.05).split("\n\n", 1)[0]
    assert (
        "# Generated by `otel-resilience export alerts DIR --time-scale 0.05 --set job_label=service "
        "--set retry_storm_ratio=0.7 --set recovery_for=20m`"
    ) in header
    assert options.settings == ("retry_storm_ratio=0.7", "recovery_for=20m")
    assert ar.RuleOptions().settings == ()


def test_the_alertmanager_header_names_the_label_it_groups_by():
    """The header says which label names the service: the one of --job-label, not always `job`."""
    for job_label in ("job", "service"):
        text = alertmanager.render_alertmanager(job_label)
        header = text.split("\n\n", 1)[0]
        assert f"grouped by alertname and service (`{job_label}`)" in header.replace("\n# ", " ")
        assert yaml.safe_load(text)["route"]["group_by"] == ["alertname", job_label]


PROMETHEUS_DEFAULT_EVALUATION_INTERVAL = "1m"
"""What Prometheus evaluates a rule group at when neither the group nor the config says otherwise."""


def _evaluated_every(group):
    """How often Prometheus evaluates a group of a rules document."""
    return group.get("interval", PROMETHEUS_DEFAULT_EVALUATION_INTERVAL)


def test_one_refused_reload_fires_the_scaled_alert_at_the_interval_its_file_is_evaluated(promtool, tmp_path):
    """Rules scaled by 0.05 (the demo's `--time-scale`) count a refused reload within 45 s windows: evaluated
    every minute, as Prometheus does unless told otherwise, a refusal 10 s in falls in no window and
    ResilienceReloadFailed never fires. The scaled file carries the interval it needs."""
    scale = 0.05
    document = ar.rules_document(scale)
    (group,) = [
        g for g in document["groups"] if any(r.get("alert") == ar.A_RELOAD_FAILED for r in g["rules"])
    ]
    for rule in group["rules"]:
        rule.pop("annotations", None)  # the labels say which alert fired; its text is tested elsewhere
    (tmp_path / ar.RULES_FILE).write_text(yaml.safe_dump({"groups": [group]}))
    labels = {
        "job": "shop",
        "instance": "shop-1:9464",
        naming.label(sc.POLICY): "checkout",
        naming.label(sc.RELOAD_OUTCOME): "failed",
        naming.label(sc.ERROR_TYPE): "TypeError",
    }
    selector = "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    alert_labels = {k: v for k, v in labels.items() if k not in {"instance", naming.label(sc.RELOAD_OUTCOME)}}
    tests = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": _evaluated_every(group),
        "tests": [
            {
                "name": "one refused reload, 10 s in",
                "interval": "1s",
                # The series appears at its first refusal (at 1), 10 s after the start.
                "input_series": [{"series": naming.series(sc.RELOAD) + selector, "values": "_x10 1x120"}],
                "alert_rule_test": [
                    {
                        "eval_time": "30s",
                        "alertname": ar.A_RELOAD_FAILED,
                        "exp_alerts": [{"exp_labels": {**alert_labels, "severity": "warning"}}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(tests))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_file_left_refused_keeps_an_alert_firing_once_the_refusal_window_has_passed(promtool, tmp_path):
    """A watched file refused at t+5m and left so: the refusal is counted once, so ResilienceReloadFailed
    resolves 15m later; ResilienceConfigStale, on the file's stale gauge, takes over for as long as
    the file stays refused (was: no alert while the configuration was still stale)."""
    document = ar.rules_document()
    (group,) = [
        g for g in document["groups"] if any(r.get("alert") == ar.A_RELOAD_FAILED for r in g["rules"])
    ]
    for rule in group["rules"]:
        rule.pop("annotations", None)  # the labels say which alert fired; its text is tested elsewhere
    (tmp_path / ar.RULES_FILE).write_text(yaml.safe_dump({"groups": [group]}))
    job = {"job": "shop", "instance": "shop-1:9464"}
    failed = {naming.label(sc.POLICY): "checkout", naming.label(sc.ERROR_TYPE): "ConfigError"}
    file = {naming.label(sc.CONFIG_FILE): "/etc/shop/resilience.yaml"}

    def selector(labels):
        return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"

    outcome = {naming.label(sc.RELOAD_OUTCOME): "failed"}
    refused = naming.series(sc.RELOAD) + selector({**job, **failed, **outcome})
    stale = naming.series(sc.CONFIG_STALE) + selector({**job, **file})

    def check(at, alert, labels):
        expected = [{"exp_labels": {"job": "shop", **labels, "severity": "warning"}}] if labels else []
        return {"eval_time": at, "alertname": alert, "exp_alerts": expected}

    tests = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": ar.EVALUATION_INTERVAL,
        "tests": [
            {
                "name": "a file refused at t+5m and left so",
                "interval": "1m",
                "input_series": [
                    {"series": refused, "values": "_x5 1x90"},  # counted once, at its refusal
                    {"series": stale, "values": "0x4 1x90"},
                ],
                "alert_rule_test": [
                    check("10m", ar.A_RELOAD_FAILED, failed),
                    check("10m", ar.A_CONFIG_STALE, None),
                    check("40m", ar.A_RELOAD_FAILED, None),
                    check("40m", ar.A_CONFIG_STALE, file),
                    check("90m", ar.A_CONFIG_STALE, file),
                ],
            }
        ],
    }
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(tests))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scale", [1.0, 0.05, 0.01])
def test_no_range_of_a_rules_file_is_shorter_than_the_time_between_two_evaluations(scale):
    """A range shorter than the evaluation interval leaves events between two windows uncounted: every
    group of a file, scaled or not, is evaluated at least as often as its shortest range."""
    for group in ar.rules_document(scale)["groups"]:
        every = ar._seconds(_evaluated_every(group))
        for rule in group["rules"]:
            for window in re.findall(r"\[([0-9a-z]+)\]", rule["expr"]):
                assert ar._seconds(window) >= every, (scale, group["name"], window, _evaluated_every(group))


@pytest.mark.parametrize(
    ("field", "value", "alert", "in_expr", "in_description"),
    [
        ("retry_storm_ratio", 0.1234567, ar.A_RETRY_STORM, "> 0.1234567", "above 0.1234567 for"),
        (
            "min_execution_rate",
            0.0123456789,
            ar.A_RETRY_STORM,
            ">= 0.0123456789",
            "0.0123456789 executions/s",
        ),
        ("fallback_ratio", 0.125, ar.A_FALLBACK_HIGH, "> 0.125", "above 12.5%"),
        ("timeout_ratio", 0.001, ar.A_TIMEOUTS, "> 0.001", "above 0.1%"),
        ("bulkhead_near_saturation", 0.855, ar.A_BULKHEAD_NEAR, ">= 0.855", "at least 85.5%"),
    ],
)
def test_a_threshold_set_is_the_one_the_alert_compares_and_states(
    field, value, alert, in_expr, in_description
):
    """`--set FIELD=VALUE` puts that very value in the expression and its description, not a rounding of it."""
    rule = _alert(yaml.safe_load(ar.render_rules(options=ar.RuleOptions(**{field: value}))), alert)
    assert in_expr in rule["expr"]
    assert in_description in rule["annotations"]["description"]


def test_a_duration_prometheus_cannot_hold_is_refused_naming_the_field():
    """Prometheus reads durations as int64 nanoseconds (up to about 292 years): a longer one would be a file it refuses."""
    assert ar.RuleOptions(ratio_alert_for="292y").ratio_alert_for == "292y"
    for duration in ("300y", "292y30w", "9223372037s"):
        with pytest.raises(ValueError, match=r"RuleOptions\.ratio_alert_for must be a Prometheus duration"):
            ar.RuleOptions(ratio_alert_for=duration)


def test_every_alert_is_silent_at_zero_traffic_after_firing_on_the_same_series(promtool, repo, tmp_path):
    """The zero-traffic case of rules_test.yml: a policy's 20 unhealthy minutes fire every alert (so the
    silence that follows is not that of series the rules do not read); once its calls stop, and for a
    policy never called, none fires (its checks are in the committed file, run by promtool)."""
    (case,) = [case for case in ar.rules_test_document()["tests"] if case["name"].startswith("zero traffic")]
    assert {check["alertname"] for check in case["alert_rule_test"]} == set(ar.ALERT_NAMES)
    assert all(check["exp_alerts"] == [] for check in case["alert_rule_test"])
    busy = {
        "rule_files": [str(repo / "alerts" / ar.RULES_FILE)],
        "evaluation_interval": ar.EVALUATION_INTERVAL,
        "tests": [
            {
                **{key: case[key] for key in ("name", "interval", "input_series")},
                "alert_rule_test": [
                    {"eval_time": "18m", "alertname": alert, "exp_alerts": []} for alert in ar.ALERT_NAMES
                ],
            }
        ],
    }
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(busy))
    result = run(promtool, "test", "rules", path)
    fired = set(re.findall(r"alertname: (\w+), time: 18m", result.stdout + result.stderr))
    assert fired == set(ar.ALERT_NAMES), result.stdout + result.stderr


def test_a_rate_limiter_that_only_answers_try_acquire_alerts_on_sustained_refusals(promtool, repo, tmp_path):
    """A limiter used alone that only answers ``try_acquire`` (a keyed one per tenant, say) runs no
    execution and counts no rejection: its refusals are only in its permits. Refusing 80 % of them for
    15 minutes must fire an alert, as a policy's limiter shedding as much does; a policy's limiter,
    whose sheds its own alert already judges, is not alerted twice; a limiter refusing 5 % stays quiet."""
    permits = naming.series(sc.RL_PERMITS)
    result = naming.label(sc.RL_PERMIT_RESULT)

    def limiter(name: str, immediate: int, rejected: int) -> list[dict[str, str]]:
        labels = f'job="svc", instance="svc-1", {naming.label(sc.NAME)}="{name}"'
        return [
            {"series": f'{permits}{{{labels}, {result}="immediate"}}', "values": f"0+{immediate}x30"},
            {"series": f'{permits}{{{labels}, {result}="rejected"}}', "values": f"0+{rejected}x30"},
        ]

    policy = {naming.label(sc.POLICY): "checkout", naming.label(sc.NAME): "checkout"}
    shed = _sel_series(
        naming.series(sc.REJECTIONS),
        {
            **policy,
            naming.label(sc.PATTERN): "rate_limiter",
            naming.label(sc.REJECTION_REASON): "rate_limited",
        },
    )
    executions = _sel_series(
        naming.series(sc.EXECUTIONS),
        {
            naming.label(sc.POLICY): "checkout",
            naming.label(sc.PATTERN): "rate_limiter",
            naming.label(sc.OUTCOME): "success",
        },
    )
    inputs = [
        *limiter("tenants", 12, 48),  # try_acquire only: 80 % refused, 1 request a second
        *limiter("quiet", 57, 3),  # 5 % refused
        *limiter("checkout", 12, 48),  # a policy's limiter: its sheds are rejections of its executions
        {"series": shed, "values": "0+48x30"},
        {"series": executions, "values": "0+12x30"},
    ]
    firing = 'ALERTS{alertstate="firing", resilience_name=~"tenants|quiet"}'
    document = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": ar.EVALUATION_INTERVAL,
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": f"count by (resilience_name) ({firing})",
                        "eval_time": "15m",
                        "exp_samples": [{"labels": '{resilience_name="tenants"}', "value": 1}],
                    },
                    {
                        "expr": 'count by (alertname) (ALERTS{alertstate="firing", resilience_name="checkout"})',
                        "eval_time": "15m",
                        "exp_samples": [{"labels": f'{{alertname="{ar.A_RATE_LIMITED}"}}', "value": 1}],
                    },
                ],
            }
        ],
    }
    (tmp_path / ar.RULES_FILE).write_text((repo / "alerts" / ar.RULES_FILE).read_text())
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(document))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _sel_series(series: str, labels: dict[str, str]) -> str:
    inner = ", ".join(
        [
            *(f'{k}="{v}"' for k, v in {"job": "svc", "instance": "svc-1"}.items()),
            *(f'{k}="{v}"' for k, v in labels.items()),
        ]
    )
    return f"{series}{{{inner}}}"


def test_a_shared_store_that_keeps_dropping_out_alerts(promtool, repo, tmp_path):
    """A store unreachable for about a minute every three minutes (a Redis failover loop, a flapping
    network) never stays degraded for 2m, yet its shared breakers and rate limiters run on local state a
    third of the time: its outages, counted one each, must fire an alert, as a breaker's trips do."""
    labels = f'job="svc", instance="svc-1", {naming.label(sc.NAME)}="checkout"'
    inputs = [
        {"series": f"{naming.series(sc.STORE_DEGRADED)}{{{labels}}}", "values": "0 " + "1 0 0 " * 15},
        {
            "series": f"{naming.series(sc.STORE_OUTAGES)}{{{labels}}}",
            "values": "0 " + " ".join(f"{n} {n} {n}" for n in range(1, 16)),
        },
    ]
    document = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": ar.EVALUATION_INTERVAL,
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": 'count by (resilience_name) (ALERTS{alertstate="firing", resilience_name="checkout"})',
                        "eval_time": "30m",
                        "exp_samples": [{"labels": '{resilience_name="checkout"}', "value": 1}],
                    },
                ],
            }
        ],
    }
    (tmp_path / ar.RULES_FILE).write_text((repo / "alerts" / ar.RULES_FILE).read_text())
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(document))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


_STORE_AND_CONFIG_OPTIONS = {
    "store_degraded_for": "5m",
    "store_flapping_outages": 5,
    "store_flapping_for": "4m",
    "config_stale_for": "30m",
}
"""Non-default values of the shared-store and stale-configuration options (defaults 2m, 3, 2m, 15m)."""


def test_the_shared_store_and_stale_configuration_thresholds_are_options():
    """The `for` of ResilienceSharedStoreDegraded and ResilienceConfigStale, and the threshold and `for` of
    ResilienceSharedStoreFlapping, are RuleOptions fields defaulting to the shipped values: set, they
    reach the expression, the `for`, the description and the export command (were module constants)."""
    shipped = ar.RuleOptions()
    assert (
        shipped.store_degraded_for,
        shipped.store_flapping_outages,
        shipped.store_flapping_for,
        shipped.config_stale_for,
    ) == (ar.STORE_DEGRADED_FOR, ar.STORE_FLAPPING_OUTAGES, ar.STORE_FLAPPING_FOR, ar.CONFIG_STALE_FOR)
    options = ar.RuleOptions(**_STORE_AND_CONFIG_OPTIONS)
    document = ar.rules_document(options=options)
    degraded = _alert(document, ar.A_STORE_DEGRADED)
    assert degraded["for"] == "5m"
    assert "for 5m: their shared breakers" in degraded["annotations"]["description"]
    flapping = _alert(document, ar.A_STORE_FLAPPING)
    assert (flapping["expr"], flapping["for"]) == (f"{ar.R_STORE_OUTAGES} >= 5", "4m")
    assert "(threshold 5)" in flapping["annotations"]["description"]
    stale = _alert(document, ar.A_CONFIG_STALE)
    assert stale["for"] == "30m"
    assert "applied none for 30m" in stale["annotations"]["description"]
    # Scaled as every other `for` is.
    scaled = ar.rules_document(0.05, options)
    assert _alert(scaled, ar.A_STORE_DEGRADED)["for"] == ar.scale_duration("5m", 0.05) == "15s"
    assert _alert(scaled, ar.A_STORE_FLAPPING)["for"] == "12s"
    assert _alert(scaled, ar.A_CONFIG_STALE)["for"] == "90s"
    assert ar.RuleOptions.from_strings({k: str(v) for k, v in _STORE_AND_CONFIG_OPTIONS.items()}) == options
    assert ar.export_command(1.0, options.settings) == (
        "otel-resilience export alerts DIR --set config_stale_for=30m --set store_degraded_for=5m "
        "--set store_flapping_outages=5 --set store_flapping_for=4m"
    )


@pytest.mark.parametrize("scale", [1.0, 0.05])
def test_adapted_shared_store_and_stale_configuration_alerts_fire_at_their_options(promtool, tmp_path, scale):
    """Rules adapted with store_degraded_for=5m, store_flapping_outages=5, store_flapping_for=4m and
    config_stale_for=30m, production or time-scaled: promtool sees each alert fire at the adapted
    threshold and `for`, and stay silent where the shipped values (2m; 3 for 2m; 15m) would have fired."""
    document = ar.rules_document(scale, ar.RuleOptions(**_STORE_AND_CONFIG_OPTIONS))
    groups = [
        g
        for g in document["groups"]
        if any(r.get("alert") in {ar.A_STORE_DEGRADED, ar.A_CONFIG_STALE} for r in g["rules"])
    ]
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # the labels say which alert fired; its text is tested above
    (tmp_path / ar.RULES_FILE).write_text(yaml.safe_dump({"groups": groups}))

    def at(minutes):
        return ar.scale_duration(f"{minutes}m", scale)

    def series(metric, name, labels):
        inner = ", ".join(f'{k}="{v}"' for k, v in {"job": "shop", "instance": "shop-1", **labels}.items())
        return f"{naming.series(metric)}{{{inner}}}"

    def check(minutes, alert, *firing):
        expected = [{"exp_labels": {"job": "shop", **labels, "severity": "warning"}} for labels in firing]
        return {"eval_time": at(minutes), "alertname": alert, "exp_alerts": expected}

    store = naming.label(sc.NAME)
    file = naming.label(sc.CONFIG_FILE)
    every_third = " ".join(f"{n} {n} {n}" for n in range(1, 16))  # an outage at t+1m, t+4m, t+7m, ...
    inputs = [
        # checkout: unreachable from t+1m for 20m; search: for 4m (fires at the shipped 2m, not at 5m).
        {"series": series(sc.STORE_DEGRADED, "checkout", {store: "checkout"}), "values": "0 1x20 0x20"},
        {"series": series(sc.STORE_DEGRADED, "search", {store: "search"}), "values": "0 1x3 0x37"},
        # orders: 15 outages, one every 3 minutes (the 5th at t+13m); cart: 4 (3 fire the shipped rule).
        {"series": series(sc.STORE_OUTAGES, "orders", {store: "orders"}), "values": "0 " + every_third},
        {
            "series": series(sc.STORE_OUTAGES, "cart", {store: "cart"}),
            "values": "0 " + " ".join(f"{n} {n} {n}" for n in range(1, 5)) + " 4x30",
        },
        # A watched file refused from t+5m on.
        {"series": series(sc.CONFIG_STALE, "file", {file: "/etc/shop.yaml"}), "values": "0x4 1x60"},
    ]
    tests = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": groups[0].get("interval", ar.EVALUATION_INTERVAL),
        "tests": [
            {
                "name": f"adapted store and configuration options at time scale {scale}",
                "interval": at(1),
                "input_series": inputs,
                "alert_rule_test": [
                    check(5, ar.A_STORE_DEGRADED),
                    check(6, ar.A_STORE_DEGRADED, {store: "checkout"}),
                    check(12, ar.A_STORE_FLAPPING),
                    check(16, ar.A_STORE_FLAPPING),
                    check(17, ar.A_STORE_FLAPPING, {store: "orders"}),
                    check(25, ar.A_CONFIG_STALE),
                    check(34, ar.A_CONFIG_STALE),
                    check(35, ar.A_CONFIG_STALE, {file: "/etc/shop.yaml"}),
                ],
            }
        ],
    }
    assert len(groups) == 2
    path = tmp_path / ar.RULES_TEST_FILE
    path.write_text(yaml.safe_dump(tests))
    result = run(promtool, "test", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        (
            {"store_degraded_for": "2 m"},
            ValueError,
            r"RuleOptions\.store_degraded_for must be a Prometheus duration",
        ),
        (
            {"store_flapping_for": "1m1m"},
            ValueError,
            r"RuleOptions\.store_flapping_for must be a Prometheus duration",
        ),
        (
            {"config_stale_for": "300y"},
            ValueError,
            r"RuleOptions\.config_stale_for must be a Prometheus duration",
        ),
        ({"config_stale_for": 15}, TypeError, r"RuleOptions\.config_stale_for must be a string"),
        (
            {"store_flapping_outages": 0},
            ValueError,
            r"RuleOptions\.store_flapping_outages must be an integer >= 1 and <= 9223372036854775807",
        ),
        (
            {"store_flapping_outages": 2**63},
            ValueError,
            r"RuleOptions\.store_flapping_outages must be an integer >= 1 and <= 9223372036854775807",
        ),
        (
            {"store_flapping_outages": True},
            TypeError,
            r"RuleOptions\.store_flapping_outages must be a number",
        ),
        ({"store_flapping_outages": "3"}, TypeError, r"RuleOptions\.store_flapping_outages must be a number"),
    ],
)
def test_bad_store_and_configuration_options_are_refused_naming_the_field(settings, error, message):
    """The shared-store and stale-configuration options are checked at construction as the others are."""
    with pytest.raises(error, match=message):
        ar.RuleOptions(**settings)
