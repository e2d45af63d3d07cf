"""The Grafana dashboards: importable, tied to the registry, drawing the alerts' thresholds."""

from __future__ import annotations

import copy
import json
import re
import subprocess

import pytest

from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks, naming
from otel_resilience.ops import dashboards as dash
from otel_resilience.telemetry import semconv as sc

EXPECTED = {
    "otel-resilience-overview.json",
    "otel-resilience-circuit-breakers.json",
    "otel-resilience-retries-timeouts.json",
    "otel-resilience-bulkheads.json",
    "otel-resilience-recovery.json",
}


def panels(dashboard):
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def by_title(dashboard, title):
    found = [p for p in panels(dashboard) if p["title"] == title]
    assert len(found) == 1, title
    return found[0]


def test_the_overview_and_four_drill_downs_exist(dashboards):
    """An overview plus drill-downs for breakers, retries/timeouts, bulkheads and recovery."""
    assert set(dashboards) == EXPECTED


def test_overview_has_the_required_panels(dashboards):
    """The overview shows rates, latency, breaker states, saturation, retry/fallback/recovery rates and alerts."""
    overview = dashboards["otel-resilience-overview.json"]
    kinds = {p["title"]: p["type"] for p in panels(overview)}
    assert kinds == {
        "Execution rate by policy and outcome": "timeseries",
        "Success rate by policy": "timeseries",
        "Latency p50 / p95 / p99 by policy": "timeseries",
        "Circuit breaker states": "state-timeline",
        "Bulkhead saturation": "timeseries",
        "Retry rate (retries per execution)": "timeseries",
        "Fallback rate": "timeseries",
        "Recovery rate": "timeseries",
        "Firing alerts": "table",
    }


def test_every_query_references_only_derived_or_recorded_series(dashboards, recorded):
    """Every panel query, annotation and variable parses and uses only registry-derived names and labels."""
    for dashboard in dashboards.values():
        assert checks.check_dashboard(dashboard, recorded) == []


def test_a_misspelled_metric_in_a_panel_fails_the_check(dashboards, recorded):
    """The check bites: a panel querying a series nothing emits is reported."""
    broken = copy.deepcopy(dashboards["otel-resilience-overview.json"])
    target = by_title(broken, "Execution rate by policy and outcome")["targets"][0]
    target["expr"] = target["expr"].replace(naming.series(sc.EXECUTIONS), "resilience_execution_total")
    problems = checks.check_dashboard(broken, recorded)
    assert any("unknown series 'resilience_execution_total'" in p for p in problems), problems


def test_a_wrong_label_in_a_variable_fails_the_check(dashboards, recorded):
    """The check bites on template variables too: a label the series lacks is reported."""
    broken = copy.deepcopy(dashboards["otel-resilience-circuit-breakers.json"])
    for variable in broken["templating"]["list"]:
        if variable["name"] == "breaker":
            variable["query"] = variable["query"].replace("resilience_name)", "resilience_policy)")
    problems = checks.check_dashboard(broken, recorded)
    assert any("resilience_policy" in p for p in problems), problems


def test_a_datasource_variable_and_no_hard_coded_uid(dashboards):
    """Each dashboard has a Prometheus datasource variable and references only it."""
    for name, dashboard in dashboards.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        source = variables[dash.DATASOURCE_VARIABLE]
        assert (source["type"], source["query"]) == ("datasource", "prometheus"), name
        assert "current" not in source, name
        uids = set(re.findall(r'"uid":\s*"([^"]*)"', json.dumps(dashboard)))
        assert uids == {dash.DATASOURCE_UID, dashboard["uid"]}, (name, uids)


def test_job_and_subject_variables(dashboards):
    """Every dashboard filters by service (job); each has its subject's variable."""
    subjects = {
        "otel-resilience-overview.json": "policy",
        "otel-resilience-circuit-breakers.json": "breaker",
        "otel-resilience-retries-timeouts.json": "policy",
        "otel-resilience-bulkheads.json": "bulkhead",
        "otel-resilience-recovery.json": "recovery",
    }
    for name, dashboard in dashboards.items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert {"job", subjects[name]} <= set(variables), name
        assert variables["job"]["query"] == f"label_values({naming.series(sc.EXECUTIONS)}, job)"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == dash.DATASOURCE_UID
                assert variable["includeAll"]
                assert variable["multi"]


def test_every_panel_has_a_unit_a_description_and_the_datasource(dashboards):
    """Units, descriptions and the datasource variable on every panel and target."""
    for name, dashboard in dashboards.items():
        for panel in panels(dashboard):
            where = (name, panel["title"])
            assert panel["fieldConfig"]["defaults"].get("unit"), where
            assert len(panel.get("description", "")) > 40, where
            assert panel["datasource"] == {"type": "prometheus", "uid": dash.DATASOURCE_UID}, where
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == dash.DATASOURCE_UID, where
                assert target["refId"], where


def test_thresholds_equal_the_alert_rules(dashboards):
    """Panels that show what an alert watches draw exactly that alert's threshold, and link its runbook."""
    alert_panels = dash.alert_panels()
    assert {p.alert for p in alert_panels} == set(ar.ALERT_NAMES)
    expected = {
        ar.A_RETRY_STORM: (ar.RETRY_STORM_RATIO,),
        ar.A_FALLBACK_HIGH: (ar.FALLBACK_RATIO,),
        ar.A_TIMEOUTS: (ar.TIMEOUT_RATIO,),
        ar.A_BULKHEAD_NEAR: (ar.BULKHEAD_NEAR_SATURATION, ar.BULKHEAD_FULL_SATURATION),
        ar.A_RECOVERY_LOW: (ar.RECOVERY_RATE_THRESHOLD,),
        ar.A_BREAKER_FLAPPING: (ar.BREAKER_FLAPPING_TRIPS,),
    }
    by_uid = {d["uid"]: d for d in dashboards.values()}
    for item in alert_panels:
        panel = by_title(by_uid[item.dashboard], item.title)
        steps = [
            s["value"]
            for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if s["value"] is not None
        ]
        assert tuple(steps) == item.thresholds, item
        if item.alert in expected:
            assert item.thresholds == expected[item.alert], item
        assert any(link["url"].endswith(f"docs/runbooks/{item.alert}.md") for link in panel["links"]), item


def test_latency_panels_have_exemplars(dashboards):
    """Every histogram_quantile query asks for exemplars (to jump from a slow point to its trace)."""
    seen = 0
    for dashboard in dashboards.values():
        for panel in panels(dashboard):
            for target in panel["targets"]:
                if "histogram_quantile" in target["expr"]:
                    seen += 1
                    assert target.get("exemplar") is True, panel["title"]
                    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    assert seen >= 9


def test_alert_panels_query_the_alerts_recording_rules(rules):
    """Panels and alerts share expressions through recording rules, not copies."""
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    for item in dash.alert_panels():
        if item.alert == ar.A_BULKHEAD_FULL:
            continue  # the rejections panel shows the raw rate by reason
        spec = next(
            p
            for d in dash._dashboards()
            for _, ps in d.rows
            for p in ps
            if d.uid == item.dashboard and p.title == item.title
        )
        if spec.kind == "state":
            continue
        assert any(q.expr.split("{")[0] in recorded for q in spec.queries), item


def test_grafana_11_model_basics(dashboards):
    """Schema version 39 (Grafana 11.0, the lowest supported), unique uids and panel ids, grid inside 24 columns."""
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for dashboard in dashboards.values():
        assert dashboard["schemaVersion"] == dash.GRAFANA_SCHEMA_VERSION
        assert dashboard["tags"] == [dash.DASHBOARD_TAG]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids)
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0
            assert grid["x"] + grid["w"] <= 24
        assert dashboard["annotations"]["list"][0]["datasource"]["uid"] == dash.DATASOURCE_UID


@pytest.mark.parametrize("state", sc.CB_STATE_VALUES)
def test_breaker_timeline_maps_every_state(dashboards, state):
    """The state timeline has a value mapping (text and colour) for every breaker state in the registry."""
    panel = by_title(dashboards["otel-resilience-overview.json"], "Circuit breaker states")
    options = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert state in {o["text"] for o in options.values()}


def test_every_dashboard_query_parses_in_prometheus_2_42(promtool, dashboards, tmp_path):
    """Prometheus' own parser (promtool, as recording rules) accepts every dashboard expression."""
    exprs = sorted(
        {checks.substitute_grafana(e) for d in dashboards.values() for e in checks.dashboard_expressions(d)}
    )
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard:query:{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(json.dumps(rules))
    result = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_runbooks_name_only_existing_dashboards_and_panels(repo, dashboards):
    """Every dashboard or panel a runbook points to (in bold) exists, so the diagnosis steps stay true."""
    titles = {d["title"] for d in dashboards.values()} | {
        p["title"] for d in dashboards.values() for p in panels(d)
    }
    for path in sorted((repo / "docs" / "runbooks").glob("*.md")):
        for found in re.findall(r"\*\*([^*]+)\*\*", path.read_text()):
            name = " ".join(found.split())
            if name.endswith(":"):
                continue
            assert name in titles or any(t.startswith(name) for t in titles), (path.name, name)
