"""The otelcol-contrib configs, checked structurally (no collector binary runs here)."""

from __future__ import annotations

import copy
import dataclasses
import re
import subprocess

import pytest

from otel_resilience.ops import collector, naming
from otel_resilience.patterns.timeout import DEFAULT_TIMEOUT
from otel_resilience.telemetry import semconv as sc

# Component types of otelcol-contrib the configs may use (pinned: a new type is a deliberate change).
KNOWN_CONTRIB_TYPES = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch", "transform", "tail_sampling"},
    "exporters": {"prometheus", "prometheusremotewrite", "otlp", "otlphttp", "debug"},
    "extensions": {"health_check"},
    "connectors": set(),
}
LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}
ENV = re.compile(r"^\$\{env:(?P<name>[A-Z_][A-Z0-9_]*):-(?P<default>[^}]*)\}$")
OVERRIDE = re.compile(r'^set\(unit, "(?P<unit>[^"]*)"\) where name == "(?P<name>[^"]+)"$')


def components(config, section):
    return dict(config.get(section) or {})


def declared_type(component_id):
    return component_id.split("/", 1)[0]


def strings(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, (*path, str(index)))
    elif isinstance(node, str):
        yield path, node


def problems_of(config):
    """Every structural problem of one collector config (an empty list means valid)."""
    problems = []
    for section, allowed in KNOWN_CONTRIB_TYPES.items():
        for component_id in components(config, section):
            if declared_type(component_id) not in allowed:
                problems.append(f"{section}: {component_id} is not an allowed contrib type")
    service = config.get("service", {})
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pipeline_id, pipeline in service.get("pipelines", {}).items():
        if declared_type(pipeline_id) not in {"metrics", "traces", "logs"}:
            problems.append(f"pipeline {pipeline_id} has an unknown signal")
        for section, seen in used.items():
            for component_id in pipeline.get(section, []):
                seen.add(component_id)
                if component_id not in components(config, section):
                    problems.append(
                        f"pipeline {pipeline_id} references undeclared {section[:-1]} {component_id}"
                    )
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"pipeline {pipeline_id} needs receivers and exporters")
    for extension in service.get("extensions", []):
        if extension not in components(config, "extensions"):
            problems.append(f"service references undeclared extension {extension}")
    for section, ids in used.items():
        for component_id in set(components(config, section)) - ids:
            problems.append(f"{section[:-1]} {component_id} is declared but no pipeline uses it")
    for path, text in strings(config):
        if "0.0.0.0" in text or "[::]" in text:
            problems.append(f"{'.'.join(path)} binds every interface by default: {text}")
        if path[-1] in {"endpoint", "host"} and path[0] in {"receivers", "extensions", "service"}:
            match = ENV.match(text)
            if match is None:
                problems.append(f"{'.'.join(path)} is not read from an environment variable: {text}")
                continue
            default = match["default"]
            host = default.split("]")[0] + "]" if default.startswith("[") else default.split(":")[0]
            if host not in LOOPBACK:
                problems.append(f"{'.'.join(path)} defaults to a non-loopback address: {text}")
    return problems


def test_the_configs_exist(collector_configs):
    """The base, remote-write and tail-sampling variants are shipped."""
    assert set(collector_configs) == set(collector.COLLECTOR_FILES)


@pytest.mark.parametrize("name", collector.COLLECTOR_FILES)
def test_config_is_structurally_valid(collector_configs, name):
    """Allowed contrib types only, every reference declared, nothing unused, loopback defaults from env."""
    assert problems_of(collector_configs[name]) == []


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (
            lambda c: c["service"]["pipelines"]["traces"]["exporters"].append("zipkin"),
            "undeclared exporter zipkin",
        ),
        (lambda c: c["exporters"].update({"kafka": {}}), "kafka is not an allowed contrib type"),
        (
            lambda c: c["receivers"]["otlp"]["protocols"]["grpc"].update(endpoint="${env:X:-0.0.0.0:4317}"),
            "binds every interface",
        ),
        (
            lambda c: c["receivers"]["otlp"]["protocols"]["http"].update(endpoint="127.0.0.1:4318"),
            "not read from an environment variable",
        ),
        (lambda c: c["processors"].update({"batch/extra": {}}), "declared but no pipeline uses it"),
    ],
)
def test_structural_check_bites(collector_configs, mutate, problem):
    """A broken config is reported: unknown reference, unknown type, 0.0.0.0 default, literal endpoint, unused."""
    config = copy.deepcopy(collector_configs["otelcol.yaml"])
    mutate(config)
    assert any(problem in line for line in problems_of(config)), problems_of(config)


def test_otlp_receiver_listens_on_grpc_4317_and_http_4318(collector_configs):
    """The OTLP receiver takes gRPC on 4317 and HTTP on 4318 by default."""
    for config in collector_configs.values():
        protocols = config["receivers"]["otlp"]["protocols"]
        assert ENV.match(protocols["grpc"]["endpoint"])["default"] == "127.0.0.1:4317"
        assert ENV.match(protocols["http"]["endpoint"])["default"] == "127.0.0.1:4318"


def test_pipelines_limit_memory_first_and_batch_last(collector_configs):
    """memory_limiter opens every pipeline and batch closes it."""
    for name, config in collector_configs.items():
        for pipeline_id, pipeline in config["service"]["pipelines"].items():
            assert pipeline["processors"][0] == "memory_limiter", (name, pipeline_id)
            assert pipeline["processors"][-1] == "batch", (name, pipeline_id)


def test_metrics_go_to_prometheus_and_traces_over_otlp(collector_configs):
    """Scrape exporter with OpenMetrics (exemplars) in the base, remote write in the variant, OTLP traces."""
    base = collector_configs["otelcol.yaml"]
    assert base["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus"]
    assert base["exporters"]["prometheus"]["enable_open_metrics"] is True
    remote = collector_configs["otelcol-remote-write.yaml"]
    assert remote["service"]["pipelines"]["metrics"]["exporters"] == ["prometheusremotewrite"]
    for config in collector_configs.values():
        (exporter,) = config["service"]["pipelines"]["traces"]["exporters"]
        assert declared_type(exporter) == "otlp"


def test_tail_sampling_keeps_failures_and_exhausted_retries_and_samples_recovered(collector_configs):
    """The policies use registry attribute keys and values: failures kept, exhausted retries kept, recovered sampled."""
    config = collector_configs["otelcol-tail-sampling.yaml"]
    assert "tail_sampling" in config["service"]["pipelines"]["traces"]["processors"]
    policies = {p["name"]: p for p in config["processors"]["tail_sampling"]["policies"]}
    kept = " ".join(policies["failed-rejected-or-timed-out"]["ottl_condition"]["span"])
    for outcome in ("failure", "rejected", "timeout"):
        assert f'attributes["{sc.OUTCOME}"] == "{outcome}"' in kept
    assert f'attributes["{sc.ATTEMPT}"] == nil' in kept
    assert policies["retries-exhausted"]["ottl_condition"]["spanevent"] == [
        f'name == "{sc.EV_RETRY_EXHAUSTED}"'
    ]
    recovered = policies["recovered-sampled"]["and"]["and_sub_policy"]
    assert '"recovered"' in " ".join(recovered[0]["ottl_condition"]["span"])
    assert 0 < recovered[1]["probabilistic"]["sampling_percentage"] < 100
    for condition in re.findall(r'attributes\["([^"]+)"\] == "([^"]+)"', kept):
        key, value = condition
        assert value in sc.attribute(key).values


def test_tail_sampling_waits_for_an_execution_that_runs_to_the_default_timeout(collector_configs):
    """The decision waits for an execution span that ends at the default deadline (30 s, attempts and
    backoffs included) and is exported one SDK span-batch delay (OTEL_BSP_SCHEDULE_DELAY, 5 s) later.

    With a 10 s wait, a trace whose first attempt span arrives at once and whose execution span
    reports ``timeout`` 30 s later was decided before its failure arrived: kept by the 5 % baseline
    only."""
    wait = collector_configs["otelcol-tail-sampling.yaml"]["processors"]["tail_sampling"]["decision_wait"]
    match = re.fullmatch(r"(\d+)s", wait)
    assert match is not None, wait
    assert int(match[1]) > DEFAULT_TIMEOUT + 5


def unit_overrides(config):
    """The units the config's transform processors set before the exporters, by instrument name."""
    overrides = {}
    for component_id, processor in components(config, "processors").items():
        if declared_type(component_id) != "transform":
            continue
        for group in processor["metric_statements"]:
            for statement in group["statements"]:
                match = OVERRIDE.match(statement)
                assert match, statement
                overrides[match["name"]] = match["unit"]
    return overrides


@pytest.mark.parametrize("name", collector.COLLECTOR_FILES)
def test_collector_exporter_names_equal_the_names_dashboards_and_rules_query(collector_configs, name):
    """Through this config, the Collector's Prometheus translation gives exactly the Python exporter's names."""
    overrides = unit_overrides(collector_configs[name])
    assert set(overrides) <= {spec.name for spec in sc.INSTRUMENTS}
    through_collector = {
        series
        for spec in sc.INSTRUMENTS
        for series in naming.collector_series(spec, unit=overrides.get(spec.name))
    }
    assert through_collector == naming.derived_series()


def test_without_the_unit_override_a_ratio_suffix_would_break_the_queries():
    """The check bites: with unit 1 a gauge gets _ratio from the Collector, which nothing queries."""
    state = dataclasses.replace(sc.instrument(sc.CB_STATE_METRIC), unit="1")
    assert naming.collector_name(state) == naming.series(sc.CB_STATE_METRIC) + "_ratio"
    assert naming.collector_name(state) not in naming.derived_series()


def test_the_operations_doc_names_every_gauge_whose_unit_the_configs_reset(repo):
    """docs/operations.md lists, in its "Collector difference" paragraph, every gauge the Collector
    would give a `_ratio` suffix: the ones whose unit the shipped configs clear."""
    text = (repo / "docs" / "operations.md").read_text()
    paragraph = text.split("**Collector difference, handled:**", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`(resilience\.[a-z_.]+)`", paragraph))
    assert named == set(naming.COLLECTOR_UNIT_OVERRIDES), paragraph


def test_the_grafana_install_step_names_the_interval_samples_arrive_at_through_the_collector(repo):
    """Through the Collector a series moves once per export of the application (60 s by default), and
    the remote-write route has no other sample: a rate over four 15 s scrapes would hold one sample
    and show nothing. The Grafana step of docs/operations.md says which scrape interval to give then."""
    text = (repo / "docs" / "operations.md").read_text()
    step = text.split("4. **Grafana", 1)[1].split("\n\n", 1)[0]
    assert "OTEL_METRIC_EXPORT_INTERVAL" in step, step
    assert f"{collector._SDK_EXPORT_INTERVAL} s" in step, step
    assert "otelcol-remote-write.yaml" in step, step


@pytest.mark.parametrize(
    ("name", "kind", "unit", "expected"),
    [
        (
            "resilience.execution.duration",
            sc.InstrumentKind.HISTOGRAM,
            "s",
            "resilience_execution_duration_seconds",
        ),
        ("resilience.retries", sc.InstrumentKind.COUNTER, "{retry}", "resilience_retries_total"),
        ("a.state", sc.InstrumentKind.OBSERVABLE_GAUGE, "1", "a_state_ratio"),
        ("a.ratio", sc.InstrumentKind.OBSERVABLE_GAUGE, "1", "a_ratio"),
        ("a.total.count", sc.InstrumentKind.COUNTER, "1", "a_count_total"),
        ("a.size", sc.InstrumentKind.OBSERVABLE_GAUGE, "By", "a_size_bytes"),
        ("a.rate", sc.InstrumentKind.OBSERVABLE_GAUGE, "m/s", "a_rate_meters_per_second"),
        ("a.seconds.spent", sc.InstrumentKind.OBSERVABLE_GAUGE, "s", "a_seconds_spent"),
        ("9lives", sc.InstrumentKind.OBSERVABLE_GAUGE, "", "_9lives"),
    ],
)
def test_collector_translation_follows_otlptranslator(name, kind, unit, expected):
    """The port of the Collector's name translation handles suffixes, _ratio, per-units and digits."""
    assert naming.collector_name(sc.InstrumentSpec(name, kind, unit, "", ())) == expected


def test_prometheus_config_is_valid_and_loads_the_rules(promtool, repo):
    """promtool check config accepts collector-config/prometheus.yaml, including alerts/rules.yml."""
    result = subprocess.run(
        [str(promtool), "check", "config", str(repo / "collector-config" / collector.PROMETHEUS_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_readme_explains_running_and_the_link_to_dashboards_and_rules(repo):
    """collector-config/README.md says how to run it and how it feeds the dashboards and rules."""
    text = (repo / "collector-config" / "README.md").read_text()
    for needle in (
        "otelcol-contrib --config",
        "OTLP_GRPC_ENDPOINT",
        "honor_labels",
        "dashboards/",
        "alerts/rules.yml",
    ):
        assert needle in text, needle


def _seconds(duration: str) -> int:
    """A Collector or Prometheus duration of one unit (``15s``, ``5m``) in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match is not None, duration
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def test_metric_expiration_outlives_a_lost_export_and_no_more(collector_configs, repo):
    """A live series never expires (two SDK export intervals, the batch, a scrape); a dead one goes soon."""
    sdk_export_interval = 60  # the OpenTelemetry SDK's default OTEL_METRIC_EXPORT_INTERVAL
    scrape = _seconds(
        collector._yaml.load((repo / "collector-config" / "prometheus.yaml").read_text())["global"][
            "scrape_interval"
        ]
    )
    for name, config in collector_configs.items():
        exporter = config["exporters"].get("prometheus")
        if exporter is None:
            continue
        expiration = _seconds(exporter["metric_expiration"])
        batch = _seconds(config["processors"]["batch"]["timeout"])
        assert 2 * sdk_export_interval + batch + scrape <= expiration < _seconds("5m"), name
        assert f"metric_expiration {expiration}s" in (repo / "collector-config" / name).read_text(), name
