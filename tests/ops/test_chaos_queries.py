"""The queries the README gives for telling a chaos drill from an incident select series that exist."""

from __future__ import annotations

import re
from typing import Any

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
