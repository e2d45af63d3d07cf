"""The runbooks agree with the alerts they serve and with what the library does.

Each runbook opens with the alert's severity and labels: an operator reads them to know what the
alert names (and what Alertmanager matches on), so every label the alert carries is listed. Its
mitigation tells how to change the library's settings: a change it advises must move the alert's
cause in the direction it says.
"""

from __future__ import annotations

import re
from typing import Any

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
        detector.record_locked(("ConnectionError", "fetch"), step * every) for step in range(steps + 1)
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
