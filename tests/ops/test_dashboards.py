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


def has_zero_line(expr):
    """Whether ``expr`` ends with a 0 per selected service when it has no series (``or on() 0 * ...``)."""
    zero = f'0 * group by (job) ({naming.series(sc.TELEMETRY_ERRORS)}{{job=~"$job"}})'
    return "\nor on() " in expr and zero in expr.rsplit("\nor on() ", 1)[1]


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
        "Latency p95 by outcome": "timeseries",
        "Circuit breaker states": "state-timeline",
        "Bulkhead saturation": "timeseries",
        "Retry rate (retries per execution)": "timeseries",
        "Fallback rate": "timeseries",
        "Recovery rate": "timeseries",
        "Firing alerts": "table",
        "Chaos injections (drills)": "timeseries",
        "Policies under a drill": "stat",
        "Top keys by rejections": "timeseries",
        "Keys in use": "timeseries",
        "Key evictions": "timeseries",
        "Refused reloads": "timeseries",
        "Configuration files refused": "timeseries",
    }


def test_the_keyed_panels_show_the_top_keys_and_zero_when_nothing_happened(dashboards):
    """Top keys ranks resilience_key by rejections; the keys are drawn beside max_keys, and the evictions
    per second; each keyed panel falls back to one series at 0."""
    overview = dashboards["otel-resilience-overview.json"]
    top = by_title(overview, "Top keys by rejections")["targets"][0]["expr"]
    assert top.startswith(
        "topk(10, sum by (job, resilience_policy, resilience_key) (rate(resilience_rejections_total"
    )
    keys = by_title(overview, "Keys in use")["targets"][0]["expr"]
    assert "resilience_policy_keys{" in keys
    limit = by_title(overview, "Keys in use")["targets"][1]["expr"]
    assert limit.startswith("sum by (job, resilience_policy) (resilience_policy_key_limit{")
    evictions = by_title(overview, "Key evictions")["targets"][0]["expr"]
    assert evictions.startswith(
        "sum by (job, resilience_policy) (rate(resilience_policy_key_evictions_total{"
    )
    assert has_zero_line(top)
    assert has_zero_line(keys)
    assert has_zero_line(evictions)


def test_the_keyed_rate_limiter_panels_draw_its_keys_beside_max_keys_and_its_evictions(
    promtool, dashboards, tmp_path
):
    """A keyed rate limiter (RateLimiter.per_key) churning at max_keys shows its keys at its max_keys
    and its evictions per second, by name; a service without one shows 0, never "No data"."""
    retries = dashboards["otel-resilience-retries-timeouts.json"]
    keys, limit = (t["expr"] for t in by_title(retries, "Rate limiter keys in use")["targets"])
    (evictions,) = (t["expr"] for t in by_title(retries, "Rate limiter key evictions")["targets"])
    assert limit.startswith("sum by (job, resilience_name) (resilience_rate_limiter_key_limit{")
    assert has_zero_line(keys)
    assert has_zero_line(evictions)
    keys, limit, evictions = _all(keys), _all(limit), _all(evictions)
    churning = '{job="svc", instance="svc-1", resilience_name="tenants"}'
    alive = naming.series(sc.TELEMETRY_ERRORS)
    inputs = [
        {"series": naming.series(sc.RL_KEYS) + churning, "values": "0 2x14"},
        {"series": naming.series(sc.RL_KEY_LIMIT) + churning, "values": "2x15"},
        {"series": naming.series(sc.RL_KEY_EVICTIONS) + churning, "values": "0+60x15"},  # 1 a second
        {"series": f'{alive}{{job="svc", instance="svc-1"}}', "values": "0x15"},
        {"series": f'{alive}{{job="plain", instance="plain-1"}}', "values": "0x15"},
    ]
    tenants = '{job="svc", resilience_name="tenants"}'
    zero = [{"labels": '{job="plain", resilience_name="none"}', "value": 0}]
    plain = {'job=~".*"': 'job=~"plain"'}

    def only_plain(expr: str) -> str:
        for old, new in plain.items():
            expr = expr.replace(old, new)
        return expr

    checks = [
        {
            "expr": keys.split("\nor on() ")[0],
            "eval_time": "10m",
            "exp_samples": [{"labels": tenants, "value": 2}],
        },
        {"expr": limit, "eval_time": "10m", "exp_samples": [{"labels": tenants, "value": 2}]},
        {
            "expr": evictions.split("\nor on() ")[0],
            "eval_time": "10m",
            "exp_samples": [{"labels": tenants, "value": 1}],
        },
        {"expr": only_plain(keys), "eval_time": "10m", "exp_samples": zero},
        {"expr": only_plain(evictions), "eval_time": "10m", "exp_samples": zero},
    ]
    failed = _promtool_test(promtool, tmp_path, "rate-limiter-keys", inputs, checks)
    assert not failed, failed


def test_every_query_references_only_derived_or_recorded_series(dashboards, recorded):
    """Every panel query, annotation and variable parses and uses only registry-derived names and labels."""
    for dashboard in dashboards.values():
        assert checks.check_dashboard(dashboard, recorded) == []


def _drawn_series(dashboards, rules):
    """Every series a dashboard query reads, directly or through the recording rules it reads."""
    recorded: dict[str, frozenset[str]] = {}
    reads: dict[str, set[str]] = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            analysis = checks.analyse(str(rule["expr"]), checks.known_series(recorded))
            if "record" in rule:
                recorded[rule["record"]] = analysis.labels or frozenset()
                reads[rule["record"]] = set().union(*(reads.get(name, {name}) for name in analysis.series))
    known = checks.known_series(recorded)
    drawn: set[str] = set()
    for dashboard in dashboards.values():
        for expr in checks.dashboard_expressions(dashboard):
            drawn |= set().union(*(reads.get(name, {name}) for name in checks.analyse(expr, known).series))
    return drawn


def test_every_metric_is_drawn_by_a_panel(dashboards, rules):
    """docs/operations.md: "The dashboards draw all of them": each instrument of the registry is read
    by a dashboard query, directly or through a recording rule (an in-process histogram counter
    counts for its histogram: the duration panels read both forms, checked below)."""
    drawn = _drawn_series(dashboards, rules)
    in_process = {
        counter: histogram
        for histogram, parts in sc.IN_PROCESS_HISTOGRAMS.items()
        for counter in parts.values()
    }
    by_instrument: dict[str, set[str]] = {}
    for spec in sc.INSTRUMENTS:
        owner = in_process.get(spec.name, spec.name)
        by_instrument.setdefault(owner, set()).update(sc.prometheus_series(spec))
    undrawn = sorted(name for name, series in by_instrument.items() if not series & drawn)
    assert undrawn == [], f"no panel draws {undrawn}"


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
        # every instrumented service exports it from its start, before any pattern or call
        assert variables["job"]["query"] == f"label_values({naming.series(sc.TELEMETRY_ERRORS)}, job)"
        for variable in variables.values():
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == dash.DATASOURCE_UID
                assert variable["includeAll"]
                assert variable["multi"]


def test_every_panel_follows_the_policy_variable(dashboards, recorded):
    """On a dashboard with a policy variable, every query of a series that carries the policy selects it
    by `$policy`: a policy picked at the top never shows the others' numbers. Left out: the zero lines
    (the executions selected by service alone) and Prometheus' ALERTS (an alert may carry no policy)."""
    known = checks.known_series(recorded)
    policy = naming.label(sc.POLICY)
    executions = naming.series(sc.EXECUTIONS)
    problems = []
    for name, dashboard in dashboards.items():
        if "policy" not in {v["name"] for v in dashboard["templating"]["list"]}:
            continue
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                analysis = checks.analyse(target["expr"], known)
                for series in sorted(analysis.series - {naming.ALERTS_SERIES}):
                    if policy not in known[series] or policy in analysis.matchers[series]:
                        continue
                    if series == executions and analysis.matchers[series] == {naming.SERVICE_LABEL}:
                        continue
                    problems.append(
                        f"{name} / {panel['title']} / {target['refId']}: {series} ignores $policy"
                    )
    assert problems == [], "\n".join(problems)


def test_every_panel_keeps_the_services_apart(dashboards, recorded):
    """The job variable is "All" by default: no panel adds up, or takes the worst of, the same-named policies,
    breakers or bulkheads of two services. Every query keeps `job` and every series' legend names it."""
    known = checks.known_series(recorded)
    problems = []
    for name, dashboard in dashboards.items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                labels = checks.analyse(target["expr"], known).labels
                if labels is None or naming.SERVICE_LABEL not in labels:
                    problems.append(f"{name} / {panel['title']} / {target['refId']}: result labels {labels}")
                if panel["type"] != "table" and "{{job}}" not in target["legendFormat"]:
                    problems.append(
                        f"{name} / {panel['title']} / {target['refId']}: legend {target['legendFormat']!r}"
                    )
        for annotation in dashboard["annotations"]["list"]:
            labels = checks.analyse(annotation["expr"], known).labels
            if labels is None or naming.SERVICE_LABEL not in labels:
                problems.append(f"{name} / annotation {annotation['name']}: result labels {labels}")
    assert problems == [], "\n".join(problems)


def _two_services(breaker_states, executions):
    """Input series of two services whose policy (and breaker) "db" share a name."""
    states = [
        {
            "series": f'{naming.series(sc.CB_STATE_METRIC)}{{job="{job}", instance="{job}-1", '
            f'resilience_name="db", resilience_circuit_breaker_state="{state}"}}',
            "values": f"{int(state == current)}x20",
        }
        for job, current in breaker_states.items()
        for state in sc.CB_STATE_VALUES
    ]
    counters = [
        {
            "series": f'{naming.series(sc.EXECUTIONS)}{{job="{job}", instance="{job}-1", resilience_policy="db", '
            f'resilience_pattern="pipeline", resilience_outcome="{outcome}"}}',
            "values": f"0+{per_minute}x20",
        }
        for job, outcomes in executions.items()
        for outcome, per_minute in outcomes.items()
    ]
    return states + counters


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        (
            "Circuit breaker states",
            [({"job": "shop", "resilience_name": "db"}, 4), ({"job": "billing", "resilience_name": "db"}, 0)],
        ),
        (
            "Execution rate by policy and outcome",
            [
                ({"job": "shop", "resilience_policy": "db", "resilience_outcome": "success"}, 1),
                ({"job": "shop", "resilience_policy": "db", "resilience_outcome": "failure"}, 0),
                ({"job": "billing", "resilience_policy": "db", "resilience_outcome": "success"}, 0),
                ({"job": "billing", "resilience_policy": "db", "resilience_outcome": "failure"}, 2),
            ],
        ),
    ],
)
def test_two_services_with_a_same_named_policy_show_apart(promtool, dashboards, tmp_path, title, expected):
    """With every service selected, an open breaker "db" of one service is not drawn as the other's, and
    the executions of two services' policies "db" are not added up (Prometheus answers the panel's query)."""
    (target,) = by_title(dashboards["otel-resilience-overview.json"], title)["targets"]
    inputs = _two_services(
        {"shop": "open", "billing": "closed"},
        {"shop": {"success": 60, "failure": 0}, "billing": {"success": 0, "failure": 120}},
    )
    samples = [
        {"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "value": value}
        for labels, value in expected
    ]
    check = {"expr": _all(target["expr"]), "eval_time": "10m", "exp_samples": samples}
    failed = _promtool_test(promtool, tmp_path, "two_services", inputs, [check])
    assert not failed, (title, _all(target["expr"]), failed)


def test_the_trip_annotations_name_the_breaker_and_the_service(dashboards):
    """Hovering a trip mark says which breaker of which service tripped (Grafana's Prometheus annotation
    fields: the title and text are templates over the result's labels, the tags are label names)."""
    for name, dashboard in dashboards.items():
        for annotation in dashboard["annotations"]["list"]:
            assert "{{resilience_name}}" in annotation.get("titleFormat", ""), (name, annotation["name"])
            assert "{{job}}" in annotation.get("textFormat", ""), (name, annotation["name"])
            assert annotation.get("tagKeys") == "job,resilience_name", (name, annotation["name"])


_GRAFANA_AT_15S = {"$__rate_interval": "1m", "$__interval": "15s"}
"""Grafana's intervals for a range of a few hours on a Prometheus scraped every 15 s (the data source's
default minimum interval): $__interval is that minimum, $__rate_interval is 4 scrape intervals."""


@pytest.mark.parametrize(
    ("index", "transition"), [(0, ("closed", "open")), (1, ("metrics_only", "metrics_only"))]
)
def test_the_trip_annotations_mark_a_trip_at_grafanas_shortest_interval(
    promtool, dashboards, tmp_path, index, transition
):
    """A trip of a breaker whose transitions started at 0 is marked at the first step after it, with
    Grafana's intervals for a range of hours on a 15 s scrape: Grafana's steps fall between scrapes, so
    a window of one scrape interval holds one sample and increase() has nothing to compare it with."""
    previous, state = transition
    expr = dashboards["otel-resilience-overview.json"]["annotations"]["list"][index]["expr"]
    for variable, duration in _GRAFANA_AT_15S.items():
        expr = expr.replace(variable, duration)
    series = (
        f'{naming.series(sc.CB_TRANSITIONS)}{{job="svc", instance="svc-1", resilience_name="cb", '
        f'resilience_circuit_breaker_previous_state="{previous}", resilience_circuit_breaker_state="{state}", '
        'resilience_circuit_breaker_transition_reason="failure_rate"}'
    )
    marked = [{"labels": "{}", "value": 1}]
    checks = [
        {"expr": f"count({_all(expr)})", "eval_time": "9m52s", "exp_samples": []},
        {"expr": f"count({_all(expr)})", "eval_time": "10m7s", "exp_samples": marked},
    ]
    trip = [{"series": series, "values": "0x39 1x40"}]  # the trip: at 10m
    failed = _promtool_test(promtool, tmp_path, "annotation", trip, checks, interval="15s")
    assert not failed, (_all(expr), failed)


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
        ar.A_BULKHEAD_FULL: (ar.BULKHEAD_REJECTION_RATIO,),
        ar.A_RECOVERY_LOW: (ar.RECOVERY_RATE_THRESHOLD,),
        ar.A_BREAKER_FLAPPING: (ar.BREAKER_FLAPPING_TRIPS,),
        ar.A_BREAKER_WOULD_OPEN: (1,),
        ar.A_RETRY_BUDGET: (1,),
        ar.A_RATE_LIMITED: (ar.RATE_LIMITED_RATIO,),
        ar.A_CHAOS_DRILL: (1,),
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


_COMPARISONS = {">", ">=", "<", "<=", "==", "!="}


def _shape(node) -> str | None:
    """What a PromQL node computes, without its matchers: ``series``, ``series[range]``, ``f(...)``."""
    import promql_parser as p  # noqa: PLC0415 - the ops extra

    if isinstance(node, p.ParenExpr):
        return _shape(node.expr)
    if isinstance(node, p.VectorSelector):
        return node.name
    if isinstance(node, p.MatrixSelector):
        return f"{node.vector_selector.name}[{node.range}]"
    if isinstance(node, p.Call):
        args = [
            _shape(arg)
            for arg in node.args
            if isinstance(arg, (p.Expr,)) and not isinstance(arg, p.StringLiteral)
        ]
        return None if None in args else f"{node.func.name}({', '.join(args)})"
    return None


def _fired_on(node) -> list[str]:
    """The shapes an alert expression compares with its thresholds: the left side of each comparison
    with a number, one per leg of an ``or``; the right side of an ``and`` (a guard) left out."""
    import promql_parser as p  # noqa: PLC0415 - the ops extra

    if isinstance(node, p.ParenExpr):
        return _fired_on(node.expr)
    if isinstance(node, p.Call) and node.func.name == "label_replace":
        return _fired_on(node.args[0])
    if isinstance(node, p.BinaryExpr):
        op = str(node.op)
        if op == "or":
            return _fired_on(node.lhs) + _fired_on(node.rhs)
        if op in {"and", "unless"}:
            return _fired_on(node.lhs)
        if op in _COMPARISONS and isinstance(node.rhs, p.NumberLiteral):
            shape = _shape(node.lhs)
            return [shape] if shape else []
    return []


def _shapes(expr: str) -> set[str]:
    """Every shape (see :func:`_shape`) of the sub-expressions of a panel's query."""
    import promql_parser as p  # noqa: PLC0415 - the ops extra

    found: set[str] = set()

    def walk(node) -> None:
        shape = _shape(node)
        if shape:
            found.add(shape)
        for child in ("expr", "lhs", "rhs"):
            if hasattr(node, child) and getattr(node, child) is not None:
                walk(getattr(node, child))
        if isinstance(node, p.Call):
            for arg in node.args:
                if isinstance(arg, p.Expr):
                    walk(arg)
        if isinstance(node, p.MatrixSelector):
            walk(node.vector_selector)

    walk(p.parse(checks.substitute_grafana(expr)))
    return found


def test_every_alert_has_a_panel_showing_what_it_fires_on(rules):
    """For each leg of each alert, what it compares with its threshold (the alert's value) is drawn by a
    panel that links the alert's runbook: a recording rule as the alert reads it, over the same range."""
    import promql_parser  # noqa: PLC0415 - the ops extra

    shown: dict[str, set[str]] = {}
    for item in dash.alert_panels():
        spec = next(
            p
            for d in dash._dashboards()
            for _, ps in d.rows
            for p in ps
            if d.uid == item.dashboard and p.title == item.title
        )
        for q in spec.queries:
            shown.setdefault(item.alert, set()).update(_shapes(q.expr))
    missing = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            fired_on = _fired_on(promql_parser.parse(str(rule["expr"])))
            assert fired_on, rule["alert"]
            missing += [
                (rule["alert"], shape) for shape in fired_on if shape not in shown.get(rule["alert"], set())
            ]
    assert missing == []


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


def test_breaker_timeline_orders_the_states_by_severity(dashboards):
    """Closed green; disabled grey and metrics_only blue (every call passes) above it; half-open and open
    above both, and the only states drawn as thresholds. The query maps each state to its level.

    Across instances the worst level wins, by the order the in-process gauge merges namesakes by
    (``sc.CB_STATE_SEVERITY``): an operator sees the same state either way."""
    panel = by_title(dashboards["otel-resilience-circuit-breakers.json"], "Circuit breaker states")
    options = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    levels = {o["text"]: int(level) for level, o in options.items()}
    colors = {o["text"]: o["color"] for o in options.values()}
    assert sorted(levels, key=levels.get) == ["closed", "disabled", "metrics_only", "half_open", "open"]
    assert sorted(levels, key=levels.get) == list(sc.CB_STATE_SEVERITY)
    assert colors == {
        "closed": "green",
        "metrics_only": "blue",
        "disabled": "#8e8e8e",
        "half_open": "yellow",
        "open": "red",
    }
    steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, levels["half_open"], levels["open"]]
    (target,) = panel["targets"]
    for state, level in levels.items():
        if level:
            assert f'resilience_circuit_breaker_state="{state}"}} * {level}' in target["expr"], state


def test_breaker_rates_panel_draws_the_threshold_dashed(dashboards):
    """Failure and slow-call rates of the sliding windows, the failure-rate threshold as a dashed series, 0 not
    "No data" when no breaker has a window."""
    panel = by_title(dashboards["otel-resilience-circuit-breakers.json"], "Failure and slow-call rates")
    exprs = {t["refId"]: t["expr"] for t in panel["targets"]}
    assert exprs["A"].startswith(f"max by (job, resilience_name) ({naming.series(sc.CB_FAILURE_RATE)}{{")
    assert has_zero_line(exprs["A"])
    assert exprs["B"].startswith(f"max by (job, resilience_name) ({naming.series(sc.CB_SLOW_CALL_RATE)}{{")
    assert exprs["C"].startswith(
        f"min by (job, resilience_name) ({naming.series(sc.CB_FAILURE_RATE_THRESHOLD)}{{"
    )
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    (override,) = panel["fieldConfig"]["overrides"]
    assert override["matcher"] == {"id": "byFrameRefID", "options": "C"}
    properties = {p["id"]: p["value"] for p in override["properties"]}
    assert properties["custom.lineStyle"]["fill"] == "dash"
    assert properties["custom.fillOpacity"] == 0


def test_would_be_trips_panel_reads_the_alerts_rule(dashboards):
    """The would-be trips of metrics_only breakers sit beside the rates, from the alert's recording rule."""
    breakers = dashboards["otel-resilience-circuit-breakers.json"]
    rows = [p["title"] for p in breakers["panels"] if p["type"] == "row"]
    assert rows == ["State", "Sliding window", "Transitions", "Calls", "Shared state (Redis)"]
    panel = by_title(breakers, "Would-be trips (metrics_only)")
    (target,) = panel["targets"]
    assert target["expr"].startswith(ar.R_BREAKER_WOULD_TRIPS + "{")
    assert ar.A_BREAKER_WOULD_OPEN in panel["description"]


def test_every_dashboard_marks_trips_and_would_be_trips(dashboards):
    """Trips (closed -> open, any reason: threshold, rates, forced, isolated) in red, and the would-be trips
    of metrics_only breakers (metrics_only -> metrics_only) in blue, on every dashboard."""
    for name, dashboard in dashboards.items():
        trips, would = dashboard["annotations"]["list"]
        assert (trips["name"], trips["iconColor"], would["iconColor"]) == (
            "Circuit breaker trips",
            "red",
            "blue",
        ), name
        assert "transition_reason" not in trips["expr"] + would["expr"]
        assert (
            'resilience_circuit_breaker_previous_state="closed", resilience_circuit_breaker_state="open"'
            in trips["expr"]
        )
        assert (
            'resilience_circuit_breaker_previous_state="metrics_only", '
            'resilience_circuit_breaker_state="metrics_only"' in would["expr"]
        )


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


def _all(expr: str) -> str:
    """A dashboard expression as Grafana runs it with every variable on "All"."""
    return re.sub(r"\$\{?\w+\}?", ".*", checks.substitute_grafana(expr))


def _promtool_test(
    promtool, tmp_path, name: str, series: list[dict], checks: list[dict], *, interval: str = "1m"
) -> str:
    """Run ``checks`` (``promql_expr_test`` items) over ``series`` sampled every ``interval``.

    Returns:
        Promtool's output when a check failed, else an empty string.
    """
    tests = {
        "evaluation_interval": interval,
        "tests": [{"interval": interval, "input_series": series, "promql_expr_test": checks}],
    }
    path = tmp_path / f"{name}.yml"
    path.write_text(json.dumps(tests))
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr


_ANNOTATION_INDEX = {"annotation": 0, "annotation (failure_rate)": 0, "would-be annotation": 1}
"""The annotation each case reads: 0 the trips, 1 the would-be trips of metrics_only breakers."""
_BORN_AT_ONE = {
    "annotation": (
        "resilience_circuit_breaker_transitions_total",
        (
            'resilience_circuit_breaker_previous_state="closed", resilience_circuit_breaker_state="open", '
            'resilience_circuit_breaker_transition_reason="failure_threshold"'
        ),
        '{job="svc", resilience_name="cb"}',
    ),
    "annotation (failure_rate)": (
        "resilience_circuit_breaker_transitions_total",
        (
            'resilience_circuit_breaker_previous_state="closed", resilience_circuit_breaker_state="open", '
            'resilience_circuit_breaker_transition_reason="failure_rate"'
        ),
        '{job="svc", resilience_name="cb"}',
    ),
    "would-be annotation": (
        "resilience_circuit_breaker_transitions_total",
        (
            'resilience_circuit_breaker_previous_state="metrics_only", '
            'resilience_circuit_breaker_state="metrics_only", '
            'resilience_circuit_breaker_transition_reason="slow_call_rate"'
        ),
        '{job="svc", resilience_name="cb"}',
    ),
    "In-process alerts raised": (
        "resilience_alerts_total",
        (
            'resilience_alert_kind="circuit_open", resilience_alert_severity="critical", '
            'resilience_alert_subject="cb"'
        ),
        '{job="svc", resilience_alert_kind="circuit_open", resilience_alert_severity="critical"}',
    ),
    "Transitions by reason": (
        "resilience_circuit_breaker_transitions_total",
        (
            'resilience_circuit_breaker_previous_state="closed", resilience_circuit_breaker_state="open", '
            'resilience_circuit_breaker_transition_reason="failure_threshold"'
        ),
        (
            '{job="svc", resilience_name="cb", resilience_circuit_breaker_previous_state="closed", '
            'resilience_circuit_breaker_state="open", resilience_circuit_breaker_transition_reason="failure_threshold"}'
        ),
    ),
}


@pytest.mark.parametrize("where", sorted(_BORN_AT_ONE))
def test_increase_queries_count_the_first_event_of_a_series_born_at_one(
    promtool, dashboards, tmp_path, where
):
    """A counter series that appears already at 1 (its first event) shows on the trip annotation and the increase panels."""
    if where in _ANNOTATION_INDEX:
        expr = dashboards["otel-resilience-overview.json"]["annotations"]["list"][_ANNOTATION_INDEX[where]][
            "expr"
        ]
        step = "5m"  # $__rate_interval
    else:
        uid = (
            "otel-resilience-recovery.json"
            if where.startswith("In-process")
            else "otel-resilience-circuit-breakers.json"
        )
        expr = by_title(dashboards[uid], where)["targets"][0]["expr"]
        step = "5m"  # $__rate_interval
    series, labels, expected = _BORN_AT_ONE[where]
    born = f'{series}{{job="svc", resilience_name="cb", {labels}}}'
    if where.startswith("In-process"):
        born = born.replace('resilience_name="cb"', 'resilience_name="alerts"')
    # Once the window has passed the birth: the annotation is empty, a panel shows 0.
    later = [] if where in _ANNOTATION_INDEX else [{"labels": expected, "value": 0}]
    checks = [
        {"expr": _all(expr), "eval_time": "3m", "exp_samples": [{"labels": expected, "value": 1}]},
        {"expr": _all(expr), "eval_time": f"{3 + int(step[:-1]) + 1}m", "exp_samples": later},
    ]
    born_series = [{"series": born, "values": "_ _ _ 1 1 1 1 1 1 1 1 1 1 1"}]
    failed = _promtool_test(promtool, tmp_path, "born", born_series, checks)
    assert not failed, (where, _all(expr), failed)


_STORE_PANELS = {
    "failed operations": ("Shared store failures", 0, sc.STORE_ERRORS),
    "outages": ("Shared store failures", 1, sc.STORE_OUTAGES),
    "fallback permits": ("Permits without the shared store", 0, sc.STORE_FALLBACK_PERMITS),
}
"""Each count of a shared store: the panel that draws it, the query's index, the instrument."""


@pytest.mark.parametrize("case", sorted(_STORE_PANELS))
def test_the_store_panels_count_what_the_store_counted(promtool, dashboards, tmp_path, case):
    """A store's failed operations, outages and permits admitted without it show per interval by
    namespace, and 0 for a service without a store (never "No data")."""
    title, ref, instrument = _STORE_PANELS[case]
    expr = _all(by_title(dashboards["otel-resilience-circuit-breakers.json"], title)["targets"][ref]["expr"])
    counted = naming.series(instrument)
    alive = naming.series(sc.TELEMETRY_ERRORS)
    inputs = [
        {
            "series": f'{counted}{{job="svc", instance="svc-1", resilience_name="orders"}}',
            "values": "0x5 3x10",
        },
        {"series": f'{alive}{{job="svc", instance="svc-1"}}', "values": "0x15"},
        {"series": f'{alive}{{job="plain", instance="plain-1"}}', "values": "0x15"},
    ]
    checks = [
        {
            "expr": expr.split("\nor on() ")[0],
            "eval_time": "7m",
            "exp_samples": [{"labels": '{job="svc", resilience_name="orders"}', "value": 3}],
        },
        {
            "expr": expr.replace('job=~".*"', 'job=~"plain"'),
            "eval_time": "7m",
            "exp_samples": [{"labels": '{job="plain", resilience_name="none"}', "value": 0}],
        },
    ]
    failed = _promtool_test(promtool, tmp_path, "store", inputs, checks)
    assert not failed, (case, expr, failed)


def test_latency_percentiles_leave_rejections_out_and_show_them_by_outcome(dashboards):
    """The p50/p95/p99 panels exclude rejected executions; a p95-by-outcome panel shows them apart."""
    for name in ("otel-resilience-overview.json", "otel-resilience-retries-timeouts.json"):
        percentiles = by_title(dashboards[name], "Latency p50 / p95 / p99 by policy")
        assert all('resilience_outcome!="rejected"' in t["expr"] for t in percentiles["targets"]), name
        by_outcome = by_title(dashboards[name], "Latency p95 by outcome")
        (target,) = by_outcome["targets"]
        assert "resilience_outcome)" in target["expr"].split("(rate(")[0], target["expr"]
        assert "{{resilience_outcome}}" in target["legendFormat"]


def test_firing_alerts_shows_zero_when_none_fires_and_names_the_rules_it_needs(dashboards):
    """ "Firing alerts" answers 0 rather than no data, and says it needs the Prometheus that evaluates the rules."""
    panel = by_title(dashboards["otel-resilience-overview.json"], "Firing alerts")
    (target,) = panel["targets"]
    assert has_zero_line(target["expr"])
    assert "alerts/rules.yml" in panel["description"]


def test_every_panel_that_reads_a_rule_says_which_rules_file_it_needs(dashboards, recorded, repo):
    """A panel reading a recording rule names it and alerts/rules.yml; the generated README lists each one."""
    readme = (repo / "dashboards" / dash.README_FILE).read_text(encoding="utf-8")
    assert readme == dash.render_readme()
    names = {name for name in recorded if ":" in name}
    seen = 0
    for dashboard in dashboards.values():
        for panel in panels(dashboard):
            used = [n for n in names if any(n in t["expr"] for t in panel["targets"])]
            if used:
                seen += 1
                assert "alerts/rules.yml" in panel["description"], panel["title"]
                assert f"| {dashboard['title']} | {panel['title']} |" in readme, panel["title"]
    assert seen >= 10


IN_PROCESS_PAIRS = {
    naming.series(histogram, part): naming.series(counter)
    for histogram, counters in sc.IN_PROCESS_HISTOGRAMS.items()
    for part, counter in counters.items()
}
"""Each series of a duration histogram -> the counter series that exports it when kept in process."""


def _selectors(series: str, expr: str) -> list[str]:
    """The label selectors ``series`` is queried with in ``expr``."""
    return re.findall(rf"(?<![\w:]){re.escape(series)}(\{{[^}}]*\}})", expr)


def duration_targets(dashboard, recorded):
    """Every panel target that queries a duration histogram series, with what it lacks of the in-process form.

    Returns ``(panel title, refId, problems)`` per target: a histogram series queried without its
    in-process counter series, or with another selector.
    """
    known = checks.known_series(recorded)
    found = []
    for panel in panels(dashboard):
        for target in panel["targets"]:
            queried = checks.analyse(target["expr"], known).series
            problems = []
            for histogram in sorted(queried & IN_PROCESS_PAIRS.keys()):
                in_process = IN_PROCESS_PAIRS[histogram]
                if in_process not in queried:
                    problems.append(f"{histogram} without {in_process}")
                elif _selectors(histogram, target["expr"]) != _selectors(in_process, target["expr"]):
                    problems.append(f"{histogram} and {in_process} with other selectors")
            if queried & IN_PROCESS_PAIRS.keys():
                found.append((panel["title"], target["refId"], problems))
    return found


def test_the_in_process_pairs_come_from_the_registry():
    """Bucket, sum and count of both duration histograms, each to a counter of the registry."""
    assert set(sc.IN_PROCESS_HISTOGRAMS) == {sc.EXECUTION_DURATION, sc.ATTEMPT_DURATION}
    assert len(IN_PROCESS_PAIRS) == 6
    assert IN_PROCESS_PAIRS[naming.series(sc.EXECUTION_DURATION, "bucket")] == naming.series(
        sc.EXECUTION_LATENCY_BUCKETS
    )
    assert set(IN_PROCESS_PAIRS.values()) <= naming.derived_series()


def test_every_duration_panel_also_queries_the_in_process_histogram(dashboards, recorded):
    """A panel that reads a duration histogram reads its in-process counters too, with the same selector,
    so a service that keeps its histograms in process (instrument(in_process_histograms=True)) shows."""
    checked = []
    for name, dashboard in dashboards.items():
        for title, ref, problems in duration_targets(dashboard, recorded):
            checked.append((name, title, ref))
            assert problems == [], (name, title, ref)
    # The latency panels of the overview and of retries/timeouts, hedge latency, failures by error type.
    assert len(checked) >= 10, checked
    assert {title for _, title, _ in checked} == {
        "Latency p50 / p95 / p99 by policy",
        "Latency p95 by outcome",
        "Attempt latency p95: originals and hedges",
        "Failures by error type",
    }


def test_a_duration_panel_without_the_in_process_histogram_fails_the_check(dashboards, recorded):
    """The check bites: a duration query that lost its in-process half, or queries it elsewhere, is reported."""
    bucket = naming.series(sc.EXECUTION_DURATION, "bucket")
    in_process = naming.series(sc.EXECUTION_LATENCY_BUCKETS)
    broken = copy.deepcopy(dashboards["otel-resilience-overview.json"])
    target = by_title(broken, "Latency p95 by outcome")["targets"][0]
    target["expr"], count = re.subn(rf" or rate\({in_process}\{{[^}}]*\}}\[[^\]]*\]\)", "", target["expr"])
    assert count == 1
    assert ("Latency p95 by outcome", "A", [f"{bucket} without {in_process}"]) in duration_targets(
        broken, recorded
    )
    other = copy.deepcopy(dashboards["otel-resilience-overview.json"])
    target = by_title(other, "Latency p95 by outcome")["targets"][0]
    target["expr"] = target["expr"].replace(f"{in_process}{{", f'{in_process}{{resilience_pattern="retry", ')
    assert ("Latency p95 by outcome", "A", [f"{bucket} and {in_process} with other selectors"]) in (
        duration_targets(other, recorded)
    )


def test_duration_queries_keep_their_exemplars_and_name_the_in_process_form(dashboards):
    """The quantile targets still ask for exemplars (from the SDK histogram); descriptions name the in-process
    series and, for the quantiles, that it has no exemplars."""
    retries = dashboards["otel-resilience-retries-timeouts.json"]
    for title in ("Latency p50 / p95 / p99 by policy", "Latency p95 by outcome"):
        panel = by_title(retries, title)
        assert all(t.get("exemplar") is True for t in panel["targets"]), title
        assert f"`{naming.series(sc.EXECUTION_LATENCY_BUCKETS)}`" in panel["description"], title
        assert "in_process_histograms=True" in panel["description"], title
        assert "no exemplars" in panel["description"], title
    hedges = by_title(retries, "Attempt latency p95: originals and hedges")
    assert f"`{naming.series(sc.ATTEMPT_LATENCY_BUCKETS)}`" in hedges["description"]
    assert hedges["targets"][0]["exemplar"] is True
    failures = by_title(dashboards["otel-resilience-recovery.json"], "Failures by error type")
    assert f"`{naming.series(sc.EXECUTION_LATENCY_COUNT)}`" in failures["description"]


_MODE_SERIES = {
    "histogram": naming.series,
    "histogram via the Collector": naming.series,  # the same series, its bounds written as Go writes them
    "in process": lambda histogram, part: IN_PROCESS_PAIRS[naming.series(histogram, part)],
}
_BUCKETS = (("0.05", "0+0x20"), ("0.1", "0+0x20"), ("1.0", "0+60x20"), ("+Inf", "0+60x20"))
"""Per instance: one value per second, every one between 0.1 and 1 s (bounds as Prometheus writes them): the
quantile falls in the bucket whose bound the Collector writes another way than Python does."""
_LE_WRITTEN = {
    "histogram": str,  # the Python exporter's scrape: 1.0 (as the in-process counters' labels are)
    "histogram via the Collector": lambda le: le if le == "+Inf" else format(float(le), "g"),  # Go: 1
    "in process": str,
}
"""How each mode's bucket bounds reach Prometheus: the in-process counters' ``le`` is a label written by
``repr(float)`` whatever carries it, where the Collector's remote write formats a histogram's own bounds."""
_DURATION_CASES = {
    # (dashboard, panel, refId): (histogram, part, expected labels, value per instance or quantile)
    "p95 by policy": (
        "otel-resilience-overview.json",
        "Latency p50 / p95 / p99 by policy",
        "B",
        sc.EXECUTION_DURATION,
        "bucket",
        '{job="svc", resilience_policy="p"}',
        None,
    ),
    "p95 by outcome": (
        "otel-resilience-retries-timeouts.json",
        "Latency p95 by outcome",
        "A",
        sc.EXECUTION_DURATION,
        "bucket",
        '{job="svc", resilience_policy="p", resilience_outcome="failure"}',
        None,
    ),
    "hedge latency": (
        "otel-resilience-retries-timeouts.json",
        "Attempt latency p95: originals and hedges",
        "A",
        sc.ATTEMPT_DURATION,
        "bucket",
        '{job="svc", resilience_policy="p", resilience_attempt_type="hedge"}',
        None,
    ),
    "failures by error type": (
        "otel-resilience-recovery.json",
        "Failures by error type",
        "A",
        sc.EXECUTION_DURATION,
        "count",
        '{job="svc", resilience_policy="p", error_type="ConnectionError"}',
        1.0,
    ),
}


@pytest.mark.parametrize(
    "modes",
    [
        ("histogram",),
        ("in process",),
        ("histogram", "in process"),
        ("histogram via the Collector", "in process"),
    ],
)
@pytest.mark.parametrize("case", sorted(_DURATION_CASES))
def test_duration_panels_show_the_same_in_either_mode(promtool, dashboards, tmp_path, case, modes):
    """Prometheus answers a duration panel the same from the SDK histogram, from the in-process counters (their
    cumulative le buckets), and from a service whose instances use one each (summed), also where the Collector
    writes the histogram's bounds its own way (le="1" beside the counters' le="1.0": Prometheus merges buckets of
    one bound)."""
    name, title, ref, histogram, part, labels, per_instance = _DURATION_CASES[case]
    (target,) = [t for t in by_title(dashboards[name], title)["targets"] if t["refId"] == ref]
    common = (
        'job="svc", resilience_policy="p", resilience_pattern="retry", resilience_name="p", '
        'resilience_outcome="failure", error_type="ConnectionError", resilience_attempt_type="hedge"'
    )
    inputs = []
    for instance, mode in enumerate(modes):
        series = _MODE_SERIES[mode](histogram, part)
        where = f'{common}, instance="i{instance}"'
        if part == "bucket":
            written = _LE_WRITTEN[mode]
            inputs += [
                {"series": f'{series}{{{where}, le="{written(le)}"}}', "values": v} for le, v in _BUCKETS
            ]
        else:
            inputs.append({"series": f"{series}{{{where}}}", "values": "0+60x20"})
    # A quantile inside the 0.1-1 s bucket (linear interpolation); a rate adds up over the instances. Were the
    # le="1" and le="1.0" buckets of a mixed service not merged, the quantile would be that bucket's bound, 1.0.
    value = 0.1 + 0.9 * 0.95 if per_instance is None else per_instance * len(modes)
    check = {
        "expr": _all(target["expr"]),
        "eval_time": "10m",
        "exp_samples": [{"labels": labels, "value": value}],
    }
    failed = _promtool_test(promtool, tmp_path, "modes", inputs, [check])
    assert not failed, (case, modes, _all(target["expr"]), failed)


def test_every_zero_line_carries_the_labels_its_legend_reads(dashboards, recorded):
    """A zero line (0 when a panel has no series) names its service and every legend label, never " / ..."."""
    known = checks.known_series(recorded)
    problems, seen = [], 0
    for name, dashboard in dashboards.items():
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                if "\nor on() " not in target["expr"]:
                    continue
                seen += 1
                zero = target["expr"].rsplit("\nor on() ", 1)[1]
                labels = checks.analyse(zero, known).labels
                wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"])) | {
                    naming.SERVICE_LABEL
                }
                if labels is None or not wanted <= labels:
                    problems.append(f"{name} / {panel['title']} / {target['refId']}: {zero!r} lacks {wanted}")
    assert seen > 10
    assert problems == [], "\n".join(problems)


def test_the_stop_reason_panel_names_every_stop_reason(dashboards):
    """The description of "Retries exhausted by stop reason" names each reason the library reports (a
    reader looking up a series' reason finds it), in the words of its label value."""
    panel = by_title(dashboards["otel-resilience-retries-timeouts.json"], "Retries exhausted by stop reason")
    missing = [r for r in sc.RETRY_STOP_REASONS if r.replace("_", " ") not in panel["description"]]
    assert missing == []


_QUIET_QUANTILES = {
    # (dashboard, panel): (histogram, extra labels of its series, labels of the panel's series)
    ("otel-resilience-retries-timeouts.json", "Backoff delay p50 / p95 / p99"): (
        sc.RETRY_DELAY_METRIC,
        'resilience_name="p"',
        '{job="svc", resilience_policy="p"}',
    ),
    ("otel-resilience-retries-timeouts.json", "Permit wait p50 / p95 / p99"): (
        sc.RL_WAIT_METRIC,
        'resilience_name="p"',
        '{job="svc", resilience_policy="p"}',
    ),
    ("otel-resilience-retries-timeouts.json", "Attempt latency p95: originals and hedges"): (
        sc.ATTEMPT_DURATION,
        (
            'resilience_pattern="hedging", resilience_name="p", resilience_outcome="success", '
            'resilience_attempt_type="hedge"'
        ),
        '{job="svc", resilience_policy="p", resilience_attempt_type="hedge"}',
    ),
}


@pytest.mark.parametrize("panel", sorted(_QUIET_QUANTILES))
def test_a_quantile_panel_that_promises_0_shows_0_once_its_histogram_goes_quiet(
    promtool, dashboards, tmp_path, panel
):
    """A quantile panel whose description promises one series at 0 while nothing was recorded keeps it once the
    histogram has had records and has none in the window: a 0 for that policy, not the NaN histogram_quantile
    returns for buckets that did not move (which Grafana draws as no data)."""
    name, title = panel
    histogram, extra, labels = _QUIET_QUANTILES[panel]
    bucket = naming.series(histogram, "bucket")
    where = f'job="svc", instance="i0", resilience_policy="p", {extra}'
    inputs = [
        {"series": f'{bucket}{{{where}, le="{le}"}}', "values": f"0+{per_minute}x10 {10 * per_minute}+0x30"}
        for le, per_minute in (("0.1", 1), ("1", 2), ("+Inf", 2))
    ]
    inputs.append(
        {"series": f'{naming.series(sc.TELEMETRY_ERRORS)}{{job="svc", instance="i0"}}', "values": "0x40"}
    )
    checks_ = [
        {"expr": _all(target["expr"]), "eval_time": "30m", "exp_samples": [{"labels": labels, "value": 0}]}
        for target in by_title(dashboards[name], title)["targets"]
    ]
    failed = _promtool_test(promtool, tmp_path, "quiet", inputs, checks_)
    assert not failed, (title, failed)


def test_the_extra_load_panel_shows_zero_hedges_for_a_hedged_policy_that_ran_nothing(
    promtool, dashboards, tmp_path
):
    """A policy with hedging exports its hedges at 0 from its creation: before its first call (or once
    its calls stop) the panel reads 0 hedges per execution for it, as it reads 0 retries, not "No data";
    a policy without hedging gets no hedges line."""
    retries = dashboards["otel-resilience-retries-timeouts.json"]
    hedges, _ = (
        _all(t["expr"]) for t in by_title(retries, "Extra load: hedges and retries per execution")["targets"]
    )
    labels = 'job="svc", instance="svc-1"'
    policy, pattern = naming.label(sc.POLICY), naming.label(sc.PATTERN)
    inputs = [
        {
            "series": f'{naming.series(sc.EXECUTIONS)}{{{labels}, {policy}="{name}", {pattern}="pipeline", '
            f'{naming.label(sc.OUTCOME)}="success"}}',
            "values": "0x15",
        }
        for name in ("hedged", "plain")
    ]
    inputs.append(
        {
            "series": f'{naming.series(sc.HEDGES)}{{{labels}, {policy}="hedged", {naming.label(sc.NAME)}="hedged", '
            f'{naming.label(sc.HEDGE_TRIGGER)}="delay"}}',
            "values": "0x15",
        }
    )
    checks_ = [
        {
            "expr": hedges,
            "eval_time": "10m",
            "exp_samples": [{"labels": '{job="svc", resilience_policy="hedged"}', "value": 0}],
        }
    ]
    failed = _promtool_test(promtool, tmp_path, "hedge-load", inputs, checks_)
    assert not failed, failed
