"""End to end over OTLP: the demo's metrics and traces reach a real OTLP receiver process.

The receiver is ``rotel`` (a Rust OTLP collector shipped as a Python wheel, ``rotel==0.0.1a15``),
listening on 127.0.0.1 only (OTLP/HTTP and gRPC on free ports), exporting to its blackhole and
printing everything it received (``--debug-log metrics --debug-log traces``, detailed) to a file.
The demo runs the ``outage`` scenario for 4 s at ``--time-scale 0.02`` with
``--otlp-endpoint http://127.0.0.1:PORT`` and no ``/metrics`` server; at exit it flushes both
providers. The test then reads rotel's output: the execution spans, the attempt spans under them,
the ``resilience.retry.scheduled`` events and the ``resilience.*`` metrics must all be there.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from otel_resilience.telemetry import semconv as sc

DEMO_SECONDS = 4.0
RECEIVE_TIMEOUT = 20.0
"""Real seconds for the demo's last export to show up in rotel's output after it exited."""
_SPAN = re.compile(r"^Span #\d+\n(?P<body>.*?)(?=^Span #|^Resource|^ScopeSpans|\Z)", re.MULTILINE | re.DOTALL)
_FIELD = re.compile(r"^\s+(?P<key>Trace ID|Parent ID|ID|Name)\s+:\s?(?P<value>.*)$", re.MULTILINE)
_EVENT = re.compile(r"^SpanEvent #\d+\n\s+-> Name: (?P<name>\S+)", re.MULTILINE)
_METRIC = re.compile(r"^Metric #\d+\nDescriptor:\n\s+-> Name: (?P<name>\S+)", re.MULTILINE)
REQUIRED_METRICS = {
    sc.EXECUTIONS,
    sc.EXECUTION_DURATION,
    sc.RETRIES,
    sc.CB_STATE_METRIC,
    sc.CB_TRANSITIONS,
    sc.REJECTIONS,
    sc.RECOVERY_ATTEMPTS,
}
"""Metrics an outage run must produce (names from the registry, as sent over OTLP)."""


def parse_rotel(text):
    """Return (spans, metric names) from rotel's detailed debug log; a span is a dict with its events."""
    spans = []
    for match in _SPAN.finditer(text):
        body = match.group("body")
        fields = {m.group("key"): m.group("value").strip() for m in _FIELD.finditer(body)}
        fields["events"] = [m.group("name") for m in _EVENT.finditer(body)]
        spans.append(fields)
    return spans, {m.group("name") for m in _METRIC.finditer(text)}


def _listening(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _missing(text):
    """What is still missing from rotel's output: an empty list when everything arrived."""
    spans, metrics = parse_rotel(text)
    missing = []
    executions = {
        (s.get("Trace ID"), s.get("ID")) for s in spans if s.get("Name") in {"ml_service", "content_api"}
    }
    attempts = [s for s in spans if s.get("Name", "").endswith(sc.ATTEMPT_SPAN_SUFFIX)]
    if not any((s.get("Trace ID"), s.get("Parent ID")) in executions for s in attempts):
        missing.append(f"an attempt span ('<policy>{sc.ATTEMPT_SPAN_SUFFIX}') under its execution span")
    if not any(sc.EV_RETRY_SCHEDULED in s["events"] for s in spans):
        missing.append(f"a span event {sc.EV_RETRY_SCHEDULED}")
    if REQUIRED_METRICS - metrics:
        missing.append(f"metrics {sorted(REQUIRED_METRICS - metrics)}")
    if "-> service.name: Str(otel-resilience-demo)" not in text:
        missing.append("the resource attribute service.name=otel-resilience-demo")
    return missing


def test_the_parser_reads_rotel_output():
    """parse_rotel finds spans with their parent and events, and metric names, in rotel's format."""
    sample = (
        "ResourceSpans #0\nScopeSpans #0\nSpan #0\n    Trace ID       : t1\n    Parent ID      : p1\n"
        "    ID             : a1\n    Name           : ml_service attempt\nAttributes:\n"
        "     -> resilience.attempt: Int(2)\nSpan #1\n    Trace ID       : t1\n    Parent ID      : \n"
        "    ID             : p1\n    Name           : ml_service\nEvents:\nSpanEvent #0\n"
        "     -> Name: resilience.retry.scheduled\nResourceMetrics #0\nMetric #0\nDescriptor:\n"
        "     -> Name: resilience.retries\n"
    )
    spans, metrics = parse_rotel(sample)
    assert [(s["Name"], s["Parent ID"], s["events"]) for s in spans] == [
        ("ml_service attempt", "p1", []),
        ("ml_service", "", ["resilience.retry.scheduled"]),
    ]
    assert metrics == {"resilience.retries"}
    assert _missing(sample) != []  # most metrics and the resource are absent from the sample


def test_demo_metrics_and_traces_reach_rotel_over_otlp(harness, tmp_path):
    """With --otlp-endpoint, rotel receives attempt spans under their execution, retry events and resilience.* metrics."""
    binary = harness.rotel_binary()
    http_port, grpc_port = harness.free_port(), harness.free_port()
    processes = []
    try:
        rotel = harness.Process(
            "rotel",
            [
                str(binary),
                "start",
                "--exporter",
                "blackhole",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http_port}",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--debug-log",
                "metrics",
                "--debug-log",
                "traces",
                "--debug-log-verbosity",
                "detailed",
                "--pid-file",
                str(tmp_path / "rotel.pid"),
                "--log-file",
                str(tmp_path / "rotel-agent.log"),
            ],
            tmp_path / "rotel.out",
            env=harness.rotel_env(),
        )
        processes.append(rotel)
        deadline = time.monotonic() + 15
        while not _listening(http_port):
            if rotel.exited() is not None or time.monotonic() > deadline:
                pytest.fail(f"{rotel.describe()} is not listening on 127.0.0.1:{http_port}:\n{rotel.tail()}")
            time.sleep(0.05)
        demo_dir = tmp_path / "demo"
        demo_dir.mkdir()
        argv = harness.demo_argv("outage", harness.free_port(), duration=DEMO_SECONDS)
        argv[argv.index("--port") : argv.index("--port") + 2] = ["--no-metrics-server"]
        argv[argv.index("--time-scale") + 1] = "0.02"
        demo = harness.Process(
            "demo outage (OTLP)",
            [*argv, "--otlp-endpoint", f"http://127.0.0.1:{http_port}"],
            demo_dir / "demo.log",
            env=harness.demo_env(),
        )
        processes.append(demo)
        status = demo.wait(DEMO_SECONDS + 30)
        assert status == 0, f"{demo.describe()}:\n{demo.tail()}"
        deadline = time.monotonic() + RECEIVE_TIMEOUT
        while missing := _missing(rotel.output()):
            if rotel.exited() is not None or time.monotonic() > deadline:
                spans, metrics = parse_rotel(rotel.output())
                names = sorted({s.get("Name") for s in spans})
                pytest.fail(
                    f"missing from rotel's output: {missing}\nspans received: {len(spans)} {names}\n"
                    f"metrics received: {sorted(metrics)}\n--- {rotel.describe()}:\n{rotel.tail()}\n"
                    f"--- {demo.describe()}:\n{demo.tail()}",
                    pytrace=False,
                )
            time.sleep(0.2)
    finally:
        harness.stop_all(processes)
