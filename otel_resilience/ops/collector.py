"""OpenTelemetry Collector (``otelcol-contrib``) configurations, and a Prometheus config to go with them.

Generated into ``collector-config/``:

* ``otelcol.yaml``: OTLP in (gRPC and HTTP) -> ``memory_limiter`` -> ``batch``; metrics to the
  ``prometheus`` exporter (scraped by Prometheus, OpenMetrics so that exemplars reach it), traces
  over OTLP to a trace backend (Tempo, Jaeger);
* ``otelcol-remote-write.yaml``: the same, with metrics pushed by ``prometheusremotewrite``;
* ``otelcol-tail-sampling.yaml``: the same as ``otelcol.yaml`` plus ``tail_sampling``: every trace
  whose execution failed, was rejected or timed out, or whose retries ran out, is kept; recovered
  executions (and fallbacks) are sampled; the rest gets a small baseline share;
* ``prometheus.yaml``: a Prometheus config that scrapes the Collector (``honor_labels`` keeps the
  ``job`` the Collector derives from ``service.name``), loads ``alerts/rules.yml`` and sends to
  Alertmanager.

Every listening endpoint comes from an environment variable whose default is a loopback
address: nothing binds ``0.0.0.0`` unless the operator asks. Attribute keys, their values and
the span event name in the sampling policies come from
:mod:`otel_resilience.telemetry.semconv`.
"""

from __future__ import annotations

import math
from typing import Any, Final

from otel_resilience.ops import _yaml, alert_rules, naming
from otel_resilience.patterns.timeout import DEFAULT_TIMEOUT
from otel_resilience.telemetry import semconv as sc

__all__ = [
    "BASELINE_SAMPLING_PERCENTAGE",
    "COLLECTOR_FILES",
    "PROMETHEUS_FILE",
    "PROMETHEUS_SCRAPE_ENDPOINT",
    "RECOVERED_SAMPLING_PERCENTAGE",
    "collector_documents",
    "prometheus_document",
    "render_collector_configs",
]

COLLECTOR_FILES: Final = ("otelcol.yaml", "otelcol-remote-write.yaml", "otelcol-tail-sampling.yaml")
PROMETHEUS_FILE: Final = "prometheus.yaml"
PROMETHEUS_SCRAPE_ENDPOINT: Final = "127.0.0.1:8889"
"""Where the Collector's ``prometheus`` exporter listens by default."""

_UNITS_PROCESSOR: Final = "transform/prometheus_units"
_TRACES_EXPORTER: Final = "otlp/traces"
_SAMPLED_OUTCOMES: Final = ("failure", "rejected", "timeout")
_RECOVERED_OUTCOMES: Final = ("recovered", "fallback")
RECOVERED_SAMPLING_PERCENTAGE: Final = 25
"""Share of recovered (or fallback-answered) traces the tail-sampling variant keeps."""
BASELINE_SAMPLING_PERCENTAGE: Final = 5
"""Share of all other traces the tail-sampling variant keeps."""

_SDK_EXPORT_INTERVAL: Final = 60
"""Seconds between two exports of an application's metrics: the OpenTelemetry SDK's default
(``OTEL_METRIC_EXPORT_INTERVAL``, 60000 ms), which collector-config/README.md's example keeps."""
_BATCH_TIMEOUT: Final = 5
"""Seconds the ``batch`` processor may hold what it received before passing it on."""
_SCRAPE_INTERVAL: Final = 15
"""Seconds between two scrapes of the Collector by the example Prometheus."""
_METRIC_EXPIRATION: Final = 2 * _SDK_EXPORT_INTERVAL + _BATCH_TIMEOUT + _SCRAPE_INTERVAL
"""Seconds the ``prometheus`` exporter keeps a series no export refreshed (140 s, not 5 minutes).

Long enough that a live service's series never blink: one export may be late or lost (two
intervals), the batch may hold the next one (its timeout), and a scrape must still see it (one
scrape interval). Short enough that a dead instance's gauges (a breaker left open, a bulkhead
full) leave the dashboards and stop feeding alerts about 2 minutes after its last export.
"""
_SDK_SPAN_EXPORT_DELAY: Final = 5
"""Seconds an application's ended span may wait before it is exported: the OpenTelemetry SDK's
default batch span processor delay (``OTEL_BSP_SCHEDULE_DELAY``, 5000 ms)."""
_DECISION_WAIT: Final = math.ceil(DEFAULT_TIMEOUT) + 2 * _SDK_SPAN_EXPORT_DELAY
"""Seconds the tail sampler waits after a trace's first span before it decides (40 s).

A failed execution's span ends last: at the deadline (the default total timeout,
:data:`~otel_resilience.patterns.timeout.DEFAULT_TIMEOUT`, bounds its attempts and backoffs
together) while its first attempt's span may reach the Collector at once. It must arrive before
the decision, or the "keep every failed trace" policy never sees it and only the baseline share
keeps the trace: so the wait is that timeout, plus the SDK's export delay, plus one more for an
export that is late. A policy with a longer deadline needs a longer ``decision_wait``.
"""


def _env(name: str, default: str) -> str:
    """An environment variable reference with a default (Collector syntax)."""
    return f"${{env:{name}:-{default}}}"


def _base(metrics_exporter: str) -> dict[str, Any]:
    """The shared configuration; ``metrics_exporter`` is ``prometheus`` or ``prometheusremotewrite``."""
    exporters: dict[str, Any] = {}
    if metrics_exporter == "prometheus":
        exporters["prometheus"] = {
            "endpoint": _env("PROMETHEUS_EXPORTER_ENDPOINT", PROMETHEUS_SCRAPE_ENDPOINT),
            "enable_open_metrics": True,
            "metric_expiration": f"{_METRIC_EXPIRATION}s",  # see _METRIC_EXPIRATION
            "resource_to_telemetry_conversion": {"enabled": False},
        }
    else:
        exporters["prometheusremotewrite"] = {
            "endpoint": _env("PROMETHEUS_REMOTE_WRITE_URL", "http://127.0.0.1:9090/api/v1/write"),
            "resource_to_telemetry_conversion": {"enabled": False},
            "target_info": {"enabled": True},
        }
    exporters[_TRACES_EXPORTER] = {
        "endpoint": _env("TRACES_OTLP_ENDPOINT", "127.0.0.1:14317"),
        "tls": {"insecure": True},
    }
    processors: dict[str, Any] = {
        "memory_limiter": {"check_interval": "1s", "limit_percentage": 80, "spike_limit_percentage": 20},
    }
    metric_processors = ["memory_limiter"]
    if naming.COLLECTOR_UNIT_OVERRIDES:
        processors[_UNITS_PROCESSOR] = {
            "error_mode": "ignore",
            "metric_statements": [
                {
                    "context": "metric",
                    "statements": [
                        f'set(unit, "{unit}") where name == "{name}"'
                        for name, unit in naming.COLLECTOR_UNIT_OVERRIDES.items()
                    ],
                }
            ],
        }
        metric_processors.append(_UNITS_PROCESSOR)
    processors["batch"] = {"send_batch_size": 8192, "timeout": f"{_BATCH_TIMEOUT}s"}
    metric_processors.append("batch")
    return {
        "extensions": {"health_check": {"endpoint": _env("OTELCOL_HEALTH_ENDPOINT", "127.0.0.1:13133")}},
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": _env("OTLP_GRPC_ENDPOINT", "127.0.0.1:4317")},
                    "http": {"endpoint": _env("OTLP_HTTP_ENDPOINT", "127.0.0.1:4318")},
                }
            }
        },
        "processors": processors,
        "exporters": exporters,
        "service": {
            "extensions": ["health_check"],
            "telemetry": {
                "metrics": {
                    "readers": [
                        {
                            "pull": {
                                "exporter": {
                                    "prometheus": {
                                        "host": _env("OTELCOL_TELEMETRY_HOST", "127.0.0.1"),
                                        "port": 8888,
                                    }
                                }
                            }
                        }
                    ]
                }
            },
            "pipelines": {
                "metrics": {
                    "receivers": ["otlp"],
                    "processors": metric_processors,
                    "exporters": [metrics_exporter],
                },
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["memory_limiter", "batch"],
                    "exporters": [_TRACES_EXPORTER],
                },
            },
        },
    }


def _execution_span_outcome(outcome: str) -> str:
    """OTTL: an execution span (not an attempt span) that ended with ``outcome``."""
    return (
        f'attributes["{sc.OUTCOME}"] == "{naming.value(sc.OUTCOME, outcome)}" '
        f'and attributes["{sc.ATTEMPT}"] == nil'
    )


def _tail_sampling() -> dict[str, Any]:
    """Keep failed, rejected, timed-out and retry-exhausted traces; sample recovered ones."""
    return {
        "decision_wait": f"{_DECISION_WAIT}s",
        "num_traces": 50000,
        "expected_new_traces_per_sec": 100,
        "policies": [
            {
                "name": "failed-rejected-or-timed-out",
                "type": "ottl_condition",
                "ottl_condition": {
                    "error_mode": "ignore",
                    "span": [_execution_span_outcome(outcome) for outcome in _SAMPLED_OUTCOMES],
                },
            },
            {
                "name": "retries-exhausted",
                "type": "ottl_condition",
                "ottl_condition": {
                    "error_mode": "ignore",
                    "spanevent": [f'name == "{sc.EV_RETRY_EXHAUSTED}"'],
                },
            },
            {
                "name": "recovered-sampled",
                "type": "and",
                "and": {
                    "and_sub_policy": [
                        {
                            "name": "recovered",
                            "type": "ottl_condition",
                            "ottl_condition": {
                                "error_mode": "ignore",
                                "span": [_execution_span_outcome(outcome) for outcome in _RECOVERED_OUTCOMES],
                            },
                        },
                        {
                            "name": "recovered-share",
                            "type": "probabilistic",
                            "probabilistic": {"sampling_percentage": RECOVERED_SAMPLING_PERCENTAGE},
                        },
                    ]
                },
            },
            {
                "name": "baseline",
                "type": "probabilistic",
                "probabilistic": {"sampling_percentage": BASELINE_SAMPLING_PERCENTAGE},
            },
        ],
    }


def collector_documents() -> dict[str, dict[str, Any]]:
    """Return every Collector configuration, by file name."""
    tail = _base("prometheus")
    tail["processors"] = {"tail_sampling": _tail_sampling(), **tail["processors"]}
    tail["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", "tail_sampling", "batch"]
    return dict(
        zip(COLLECTOR_FILES, (_base("prometheus"), _base("prometheusremotewrite"), tail), strict=True)
    )


def prometheus_document() -> dict[str, Any]:
    """Return the example Prometheus configuration that scrapes the Collector."""
    return {
        "global": {
            "scrape_interval": f"{_SCRAPE_INTERVAL}s",
            "evaluation_interval": alert_rules.EVALUATION_INTERVAL,
        },
        "rule_files": [f"../alerts/{alert_rules.RULES_FILE}"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]},
        "scrape_configs": [
            {
                "job_name": "otel-collector",
                "honor_labels": True,
                "static_configs": [{"targets": [PROMETHEUS_SCRAPE_ENDPOINT]}],
            }
        ],
    }


_COLLECTOR_NOTES: Final = {
    "otelcol.yaml": "OTLP in; metrics to the `prometheus` exporter (scraped), traces over OTLP.",
    "otelcol-remote-write.yaml": "OTLP in; metrics pushed with `prometheusremotewrite`, traces over OTLP.\n"
    "Prometheus needs --web.enable-remote-write-receiver.",
    "otelcol-tail-sampling.yaml": "As otelcol.yaml, plus tail sampling: keeps every failed, rejected,\n"
    "timed-out or retry-exhausted trace, samples recovered ones. Run ONE collector (or route\n"
    "by trace id with the loadbalancing exporter): all spans of a trace must meet.\n"
    f"decision_wait {_DECISION_WAIT}s = the default total timeout ({DEFAULT_TIMEOUT:g}s) + 2 x the SDK's "
    f"span export\ndelay ({_SDK_SPAN_EXPORT_DELAY}s): a trace that fails at its deadline is decided "
    "after its failure arrived.\nRaise it for policies with a longer timeout.",
}


_EXPIRATION_NOTE: Final = (
    f"\nmetric_expiration {_METRIC_EXPIRATION}s = 2 x the SDK's export interval ({_SDK_EXPORT_INTERVAL}s: "
    "one export may be\nlate or lost) + the batch timeout "
    f"({_BATCH_TIMEOUT}s) + one scrape ({_SCRAPE_INTERVAL}s): a live service's series never\n"
    "expire, a dead instance's gauges leave within minutes. Raise it with OTEL_METRIC_EXPORT_INTERVAL."
)


def render_collector_configs() -> dict[str, str]:
    """Return the text of every file in ``collector-config/`` generated here, by file name."""
    rendered = {
        name: _yaml.dump(
            document,
            _yaml.generated_header(
                "otel_resilience/ops/collector.py",
                "otelcol-contrib configuration for otel_resilience (see README.md here).\n"
                + _COLLECTOR_NOTES[name]
                + "\nEndpoints come from environment variables; the defaults are loopback addresses."
                + (_EXPIRATION_NOTE if "prometheus" in document["exporters"] else ""),
            ),
        )
        for name, document in collector_documents().items()
    }
    rendered[PROMETHEUS_FILE] = _yaml.dump(
        prometheus_document(),
        _yaml.generated_header(
            "otel_resilience/ops/collector.py",
            "Prometheus scraping the Collector's `prometheus` exporter (honor_labels keeps the job\n"
            "the Collector derives from service.name), with the shipped rules and Alertmanager.\n"
            "Check it with `promtool check config prometheus.yaml` once the rules it loads are\n"
            "beside this folder (`otel-resilience export alerts ../alerts`). To scrape a service's\n"
            "own /metrics instead, add a scrape job named after the service (the job is the service).",
        ),
    )
    return rendered
