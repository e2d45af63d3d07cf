"""The time-scaled rules the end-to-end run loads are the shipped rules, with only their durations scaled."""

from __future__ import annotations

import math
import re
import subprocess

import pytest
import yaml

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import export

_DURATION = re.compile(r"\b\d+(?:ms|s|m|h|d|w|y)\b")


def _without_durations(document):
    return _DURATION.sub("<duration>", yaml.safe_dump(document, sort_keys=True, width=1_000_000))


@pytest.mark.parametrize(
    ("duration", "scale", "expected"),
    [
        ("5m", 0.05, "15s"),
        ("15m", 0.05, "45s"),
        ("30m", 0.05, "90s"),
        ("1m", 0.05, "3s"),
        ("1m", 0.01, "600ms"),
        ("1h30m", 0.5, "2700s"),
        ("10m", 1.0, "10m"),
        ("1s", 0.001, "1ms"),
        ("1s", 0.0015, "2ms"),
    ],
)
def test_scale_duration_multiplies_a_prometheus_duration(duration, scale, expected):
    """scale_duration returns whole seconds when it can, milliseconds otherwise, and the input at scale 1."""
    assert ar.scale_duration(duration, scale) == expected


@pytest.mark.parametrize(
    ("duration", "scale", "error", "message"),
    [
        ("5m", 0, ValueError, r"time_scale must be > 0 and <= 1"),
        ("5m", -0.5, ValueError, r"time_scale must be > 0 and <= 1"),
        ("5m", 1.5, ValueError, r"time_scale must be > 0 and <= 1"),
        ("5m", math.nan, ValueError, r"time_scale must be > 0 and <= 1"),
        ("5m", math.inf, ValueError, r"time_scale must be > 0 and <= 1"),
        ("5m", True, TypeError, r"time_scale must be a number"),
        ("5m", "0.5", TypeError, r"time_scale must be a number"),
        ("5 minutes", 0.5, ValueError, r"duration must be a Prometheus duration"),
        ("", 0.5, ValueError, r"duration must be a Prometheus duration"),
        ("m5", 0.5, ValueError, r"duration must be a Prometheus duration"),
        ("30s5m", 1.0, ValueError, r"duration must be a Prometheus duration"),  # units out of order
        ("5m5m", 0.5, ValueError, r"duration must be a Prometheus duration"),  # a unit twice
        ("1s", 0.0001, ValueError, r"time_scale=0.0001 makes '1s' 0.1 ms: under 1 ms"),  # was 1 ms
        ("1m", 1e-6, ValueError, r"at least 1.66+7e-05"),
    ],
)
def test_scale_duration_rejects_bad_input(duration, scale, error, message):
    """A time scale outside (0, 1], not a number, or a malformed duration is refused with a message naming it."""
    with pytest.raises(error, match=message):
        ar.scale_duration(duration, scale)


def test_rule_groups_reject_a_bad_time_scale():
    """render_rules refuses a time scale outside (0, 1] instead of clamping it."""
    with pytest.raises(ValueError, match=r"time_scale must be > 0 and <= 1 .*, got 2"):
        ar.render_rules(2)


def test_scaled_rules_differ_from_the_shipped_ones_only_in_durations(repo_rules):
    """At scale 0.05 every rule, name, label, threshold and annotation is the committed one; only durations
    change, and each group is evaluated at the production interval scaled (1m -> 3s)."""
    scaled = ar.rules_document(0.05)
    assert {group.pop("interval") for group in scaled["groups"]} == {"3s"}
    assert all("interval" not in group for group in repo_rules["groups"])
    assert _without_durations(scaled) == _without_durations(repo_rules)
    assert scaled != repo_rules
    assert ar.rules_document(1.0) == repo_rules


def test_scaled_rules_scale_every_for_range_and_offset():
    """At scale 0.05 `for: 1m` is 3s, `[5m]` is [15s], `offset 30m` is offset 90s, and no production window is left."""
    text = ar.render_rules(0.05)
    body = text.split("\ngroups:", 1)[1]
    assert "for: 3s" in body
    assert "[15s]" in body
    assert "offset 90s" in body
    for production in ("[5m]", "[15m]", "[30m]", "offset 15m", "offset 30m", "for: 1m", "for: 10m"):
        assert production not in body, production
    assert "TIME-SCALED by 0.05" in text


def test_scaled_rules_pass_the_promtool_linter(harness, tmp_path):
    """promtool check rules --lint=all --lint-fatal accepts the rules scaled for the e2e run."""
    promtool = harness.find_tool("promtool")
    path = tmp_path / ar.RULES_FILE
    path.write_text(ar.render_rules(harness.TIME_SCALE), encoding="utf-8")
    result = subprocess.run(
        [str(promtool), "check", "rules", "--lint=all", "--lint-fatal", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_export_writes_scaled_rules_without_the_production_unit_tests(tmp_path, capsys):
    """`export alerts DIR --time-scale F` writes the scaled rules and the Alertmanager example, not rules_test.yml."""
    assert export.main(["alerts", str(tmp_path), "--time-scale", "0.05"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alertmanager.yml", "rules.yml"]
    assert (tmp_path / "rules.yml").read_text(encoding="utf-8") == ar.render_rules(0.05)
    assert "rules.yml" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboards", "DIR", "--time-scale", "0.5"],
        ["--all", "--time-scale", "0.5"],
        ["alerts", "DIR", "--check", "--time-scale", "0.5"],
        ["alerts", "DIR", "--time-scale", "0"],
        ["alerts", "DIR", "--time-scale", "nan"],
    ],
)
def test_export_refuses_a_time_scale_where_it_has_no_meaning(argv, tmp_path):
    """--time-scale applies to `alerts DIR` only and must be in (0, 1]: anything else is a usage error."""
    with pytest.raises(SystemExit) as raised:
        export.main([str(tmp_path) if item == "DIR" else item for item in argv])
    assert raised.value.code == 2
    assert list(tmp_path.iterdir()) == []


def test_render_refuses_a_time_scale_for_other_kinds():
    """Only the alerts have a time scale: render('dashboards', time_scale=0.5) raises ValueError."""
    with pytest.raises(ValueError, match="only the alerts have a time scale"):
        export.render("dashboards", time_scale=0.5)


@pytest.fixture
def repo_rules(harness):
    """The committed alerts/rules.yml."""
    return yaml.safe_load((harness.REPO / "alerts" / ar.RULES_FILE).read_text(encoding="utf-8"))
