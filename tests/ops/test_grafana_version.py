"""The dashboards target the lowest supported Grafana: its schemaVersion, stated in the docs and checked by CI."""

from __future__ import annotations

import json
import re

from otel_resilience.ops import dashboards, export


def test_every_dashboard_has_the_schema_version_of_the_lowest_supported_grafana(repo):
    """Each shipped dashboard (repository and package copy) carries schemaVersion 39, the latest Grafana 11.0 knows."""
    assert (dashboards.GRAFANA_MIN_VERSION, dashboards.GRAFANA_SCHEMA_VERSION) == ("11.0", 39)
    copies = [repo / "dashboards", *export.copy_folders("dashboards", repo)]
    for folder in copies:
        paths = sorted(folder.glob("*.json"))
        assert paths, folder
        for path in paths:
            assert json.loads(path.read_text())["schemaVersion"] == dashboards.GRAFANA_SCHEMA_VERSION, path


def test_the_docs_state_the_lowest_grafana_version(repo):
    """docs/operations.md and README.md name Grafana 11.0 as the lowest supported version."""
    assert (
        f"Grafana {dashboards.GRAFANA_MIN_VERSION} or newer" in (repo / "docs" / "operations.md").read_text()
    )
    assert f"Grafana {dashboards.GRAFANA_MIN_VERSION} or newer" in (repo / "README.md").read_text()


def test_ci_checks_the_dashboards_against_that_grafana_schema(repo):
    """.ci/run runs the schema check, and the check installs @grafana/schema of the lowest supported Grafana."""
    script = (repo / ".ci" / "grafana-schema-check").read_text()
    version = re.search(r"^GRAFANA_SCHEMA=(\S+)", script, flags=re.MULTILINE)
    assert version is not None
    assert version.group(1) == f"{dashboards.GRAFANA_MIN_VERSION}.0"
    assert ".ci/grafana-schema-check" in (repo / ".ci" / "run").read_text()
