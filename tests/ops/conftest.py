"""Fixtures for the operations tests: the real promtool/amtool/alertmanager, and the shipped files.

The binaries come from Debian's prometheus and prometheus-alertmanager packages, unpacked into
.tools/ by .ci/install-tools (or found on PATH). When they are missing the tests FAIL, with the
command that installs them: CI always installs them, so a skip would hide a broken check.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_resilience.ops import checks

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "usr" / "bin"


def find_tool(*names: str) -> Path:
    """Return the first of ``names`` found in .tools/usr/bin or on PATH; fail the test otherwise."""
    for name in names:
        local = TOOLS / name
        if local.is_file() and os.access(local, os.X_OK):
            return local
        found = shutil.which(name)
        if found:
            return Path(found)
    pytest.fail(
        f"{' / '.join(names)} not found in {TOOLS} nor on PATH: run .ci/install-tools "
        "(it unpacks Debian's prometheus and prometheus-alertmanager packages into .tools/)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def promtool() -> Path:
    """The promtool binary (Prometheus 2.42 on Debian 12)."""
    return find_tool("promtool")


@pytest.fixture(scope="session")
def amtool() -> Path:
    """The amtool binary (Alertmanager 0.25 on Debian 12)."""
    return find_tool("amtool")


@pytest.fixture(scope="session")
def alertmanager_binary() -> Path:
    """The Alertmanager server binary (Debian names it prometheus-alertmanager)."""
    return find_tool("alertmanager", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def rules() -> dict[str, Any]:
    """The committed alerts/rules.yml."""
    return yaml.safe_load((REPO / "alerts" / "rules.yml").read_text())


@pytest.fixture(scope="session")
def rules_test() -> dict[str, Any]:
    """The committed alerts/rules_test.yml."""
    return yaml.safe_load((REPO / "alerts" / "rules_test.yml").read_text())


@pytest.fixture(scope="session")
def recorded(rules: dict[str, Any]) -> dict[str, frozenset[str]]:
    """The recording rules' outputs and their labels."""
    return checks.recorded_series(rules)


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict[str, Any]]:
    """The committed dashboards/*.json, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted((REPO / "dashboards").glob("*.json"))}


@pytest.fixture(scope="session")
def collector_configs() -> dict[str, dict[str, Any]]:
    """The committed collector-config/otelcol*.yaml, by file name."""
    return {
        path.name: yaml.safe_load(path.read_text())
        for path in sorted((REPO / "collector-config").glob("otelcol*.yaml"))
    }


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    """The Prometheus server binary (2.42 on Debian 12)."""
    return find_tool("prometheus")
