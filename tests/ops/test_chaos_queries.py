"""The queries the README gives for telling a chaos drill from an incident select series that exist."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks


def _chaos_section(repo: Any) -> str:
    text = (repo / "README.md").read_text(encoding="utf-8")
    start = text.index("### Chaos injection")
    return text[start : text.index("\n### ", start + 1)]


def _plain_blocks(markdown: str) -> list[str]:
    """The fenced blocks without a language (the PromQL ones), in order."""
    blocks, current, language = [], [], None
    for line in markdown.splitlines():
        if line.startswith("```"):
            if language is None:
                language, current = line[3:], []
            else:
                if not language:
                    blocks.append("\n".join(current))
                language = None
        elif language is not None:
            current.append(line)
    return blocks


def test_the_readme_drill_queries_are_valid_over_exported_and_recorded_series(
    repo: Any, recorded: Any
) -> None:
    """The panel query and the alert exclusion parse and name only known series and labels."""
    section = _chaos_section(repo)
    panel = re.search(r"`(sum by \(resilience_policy, resilience_chaos_kind\) \(rate\(.*?\)\))`", section)
    assert panel is not None
    [exclusion] = _plain_blocks(section)
    known = checks.known_series(recorded)
    for expression in (panel.group(1), exclusion):
        assert "resilience_chaos_injections_total" in expression
        assert checks.check_expression(expression, known) == [], expression


def _unless_blocks(repo: Any) -> dict[str, str]:
    """The documented `unless` exclusions: the README's (raw counter) and docs/operations.md's (recorded)."""
    operations = (repo / "docs" / "operations.md").read_text(encoding="utf-8")
    dedented = "\n".join(line.removeprefix("  ") for line in operations.splitlines())
    found = {"README": _plain_blocks(_chaos_section(repo))[0]}
    found["operations"] = next(b for b in _plain_blocks(dedented) if "unless on" in b)
    return found


def test_the_documented_unless_clauses_leave_out_a_drilled_policy_until_15m_after_its_drill(
    promtool: Any, repo: Any, tmp_path: Any
) -> None:
    """promtool, over the shipped rules: two policies time out 10 % of their calls from t+10m to t+40m; the
    one drilled from t+10m to t+20m is left out until 15 minutes after its last injection, the other is not."""
    (tmp_path / ar.RULES_FILE).write_text(ar.render_rules(), encoding="utf-8")
    series = []
    for policy in ("drilled", "real"):
        common = f'job="shop", instance="shop-1:9464", resilience_policy="{policy}"'
        series += [
            {
                "series": f'resilience_executions_total{{{common}, resilience_pattern="pipeline", '
                'resilience_outcome="success"}',
                "values": "0+60x60",
            },
            {
                "series": f'resilience_timeouts_total{{{common}, resilience_pattern="timeout", '
                f'resilience_name="{policy}", resilience_timeout_scope="total"}}',
                "values": "0x10 0+6x30 180x20",
            },
            {
                "series": f'resilience_chaos_injections_total{{{common}, resilience_name="{policy}", '
                'resilience_chaos_kind="fault"}',
                "values": "0x10 0+5x10 50x40" if policy == "drilled" else "0x60",
            },
        ]

    def sample(policy: str) -> dict[str, Any]:
        labels = f'__name__="{ar.R_TIMEOUT_RATIO}", job="shop", resilience_policy="{policy}"'
        return {"labels": "{" + labels + "}", "value": 0.1}

    cases = []
    for name, expression in _unless_blocks(repo).items():
        expr = " ".join(expression.split())
        for at, policies in (("19m", ["real"]), ("34m", ["real"]), ("38m", ["drilled", "real"])):
            cases.append(
                {"expr": expr, "eval_time": at, "exp_samples": [sample(p) for p in policies], "_doc": name}
            )
    tests = {
        "rule_files": [ar.RULES_FILE],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [{k: v for k, v in c.items() if k != "_doc"} for c in cases],
            }
        ],
    }
    path = tmp_path / "unless_test.yml"
    path.write_text(json.dumps(tests), encoding="utf-8")
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
