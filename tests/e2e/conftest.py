"""The end-to-end harness: real processes on 127.0.0.1, polled with deadlines, stopped by PID.

What runs, all started by the fixtures below and stopped in their teardown (also on failure):

* three demo processes (``python -m otel_resilience demo --plain``), scenarios ``outage``,
  ``brownout`` and ``steady`` (scrape jobs of the same names), serving ``/metrics`` on free ports;
* a real Prometheus (``.tools/usr/bin/prometheus``) scraping them every second, evaluating the
  shipped rules scaled to the demos' time every 3 s (the production minute scaled: the interval
  the scaled file gives its groups) and sending alerts to:
* a real Alertmanager with the shipped routing tree, whose webhook receivers post to
* a webhook server in this process.

An :class:`Observer` thread polls Prometheus and Alertmanager from the start and records when
each awaited fact first held (a query returned data, an alert fired, reached Alertmanager,
resolved), so that a transient state is caught whatever the order in which the tests run.
Every output goes to a log file; :meth:`Stack.diagnostics` gathers the tails of the demos'
outputs, Prometheus' ``/api/v1/rules`` and ``/api/v1/alerts`` and what Alertmanager and the
webhook received, for the failure messages.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any, Final

import pytest
import yaml

from otel_resilience.demo.scenarios import build_scenario
from otel_resilience.ops import alert_rules as ar
from otel_resilience.ops import checks

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools" / "usr" / "bin"

TIME_SCALE = 0.05
"""The demos' time scale (the demo's default: 1 real second = 20 production seconds). The rules
are generated at the same scale, so that they see production time."""
SEED = 7
DEADLINE = 80.0
"""Real seconds after the demos start by which every awaited fact must have held (about 36 s
are needed: the first trip is checked just before the second outage, at 33 s)."""
DEMO_DURATION = 110.0
"""The demos' own ``--duration``: a cap in case this process dies before its teardown."""
POLL = 1.0
"""Seconds between two rounds of the observer (Prometheus scrapes every second)."""
GROUP_TIMING = "1s"
"""Alertmanager's group_wait and group_interval in the test (shipped: 30s and 5m)."""
JOBS = ("outage", "brownout", "steady", "surge")
"""The scrape jobs: one demo each, named after its scenario."""
HEALTHY_JOB = "steady"
"""The demo in which nothing happens beyond the baseline: every dashboard query must still answer."""

INTERVALS = MappingProxyType(checks.GRAFANA_SUBSTITUTIONS)
"""Grafana's interval variables and the durations they become (those of the static checks)."""
_VARIABLE = re.compile(r"\$\{?([A-Za-z_]\w*)\}?")
_LABEL_VALUES = re.compile(
    r"^\s*label_values\((?:(?P<expr>.*),)?\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.DOTALL
)


# --- small helpers --------------------------------------------------------------------------


def find_tool(*names: str) -> Path:
    """Return the first of ``names`` in .tools/usr/bin or on PATH; fail the test otherwise."""
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


def rotel_binary() -> Path:
    """Return the ``rotel-agent`` binary of the ``rotel`` wheel; fail the test when it is missing."""
    spec = importlib.util.find_spec("rotel")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "rotel-agent"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    pytest.fail(
        "the rotel OTLP receiver is missing: pip install 'rotel==0.0.1a15' (part of the test extra)",
        pytrace=False,
    )


def rotel_env() -> dict[str, str]:
    """The environment ``rotel-agent`` runs in: the interpreter's library directory on the loader's path.

    The wheel's binary links this interpreter's ``libpython3.X.so`` and carries no search path of
    its own: the system's loader finds it where the system's Python keeps it, not where an
    interpreter built apart keeps it (a ``pyenv`` build's own ``lib``, found by its ``python``
    alone), and the binary then exits at once (status 127).
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    path = os.environ.get("LD_LIBRARY_PATH")
    if not libdir:
        return dict(os.environ)
    return dict(os.environ, LD_LIBRARY_PATH=f"{path}{os.pathsep}{libdir}" if path else str(libdir))


def free_port() -> int:
    """Return a TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET ``url``; return (HTTP status, decoded JSON or text); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
            status = int(response.status)
    except urllib.error.HTTPError as error:
        try:
            body = error.read().decode("utf-8", errors="replace")
        finally:
            error.close()
        status = int(error.code)
    except (OSError, ValueError) as error:
        return 0, f"no answer: {type(error).__name__}: {error}"
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def compact(answer: Any, limit: int = 600) -> str:
    """Return ``answer`` as one line of JSON, cut to ``limit`` characters."""
    text = answer if isinstance(answer, str) else json.dumps(answer, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def grafana_all(expr: str, intervals: Mapping[str, str], job: str | None = None) -> str:
    """Substitute Grafana's interval variables, then set every other variable to "All" (``.*``).

    With ``job``, the ``job`` variable selects that one service instead.
    """
    for variable, duration in intervals.items():
        expr = expr.replace(variable, duration)
    if job is not None:
        expr = re.sub(r"\$\{?job\}?(?!\w)", job, expr)
    return _VARIABLE.sub(".*", expr)


def dashboard_queries(
    dashboard: Mapping[str, Any], intervals: Mapping[str, str], job: str | None = None
) -> dict[str, str]:
    """Return every PromQL expression of a dashboard, substituted, by a label naming where it is.

    Panel targets (nested rows included), annotations, and the expressions of ``label_values``
    query variables (a bare ``label_values(label)`` becomes a query for any series with that label).
    With ``job``, the ``job`` variable selects that service (see :func:`grafana_all`).
    """
    uid = dashboard.get("uid")
    found: dict[str, str] = {}

    def add(where: str, expr: str) -> None:
        label = f"dashboard {uid}, {where}"
        n = 2
        while label in found:
            label = f"dashboard {uid}, {where} #{n}"
            n += 1
        found[label] = grafana_all(expr, intervals, job)

    def walk(panels: Any) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if "expr" in target:
                    add(f"panel {panel.get('title')!r} target {target.get('refId')}", str(target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            add(f"annotation {annotation.get('name')!r}", str(annotation["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        match = _LABEL_VALUES.match(str(text or ""))
        if match is None:
            add(f"variable ${variable.get('name')} (not label_values)", str(text))
        elif match.group("expr"):
            add(f"variable ${variable.get('name')}", match.group("expr"))
        else:
            add(f"variable ${variable.get('name')}", f'{{{match.group("label")}=~".+"}}')
    return found


# --- processes ------------------------------------------------------------------------------


class Process:
    """A process started by the test, its output in a log file, stopped by its PID."""

    def __init__(
        self, name: str, argv: list[str], log: Path, *, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.started = time.monotonic()
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=log.parent, env=env
            )

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    def exited(self) -> int | None:
        """Return the exit status, or ``None`` while it runs."""
        return self.popen.poll()

    def tail(self, limit: int = 2500) -> str:
        """Return the end of its output."""
        try:
            text = self.log.read_bytes().decode("utf-8", errors="replace")
        except OSError as error:
            return f"(no output: {error})"
        return text if len(text) <= limit else "..." + text[-limit:]

    def output(self) -> str:
        """Return its whole output so far."""
        return self.log.read_bytes().decode("utf-8", errors="replace")

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Send ``sig`` to its PID if it still runs."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for it to exit (SIGKILL after ``timeout`` seconds); return its status."""
        try:
            return int(self.popen.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return int(self.popen.wait(timeout=10))

    def describe(self) -> str:
        status = self.exited()
        state = "running" if status is None else f"exited with status {status}"
        return f"{self.name} (pid {self.pid}, {state})"


def stop_all(processes: list[Process], timeout: float = 10.0) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after ``timeout``)."""
    for process in processes:
        process.signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout)


def demo_argv(scenario: str, port: int, *extra: str, duration: float = DEMO_DURATION) -> list[str]:
    """The command line of one demo run, fast and plain."""
    return [
        sys.executable,
        "-m",
        "otel_resilience",
        "demo",
        "--scenario",
        scenario,
        "--seed",
        str(SEED),
        "--plain",
        "--time-scale",
        f"{TIME_SCALE:g}",
        "--duration",
        f"{duration:g}",
        "--interval",
        "2",
        "--port",
        str(port),
        *extra,
    ]


def demo_env() -> dict[str, str]:
    """The demos' environment: this checkout first on the path, unbuffered output."""
    path = os.environ.get("PYTHONPATH")
    return dict(
        os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO), PYTHONUNBUFFERED="1"
    )


# --- the webhook receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One POST from Alertmanager: when it arrived, the receiver's path, and its JSON."""

    at: float
    path: str
    payload: dict[str, Any]


class Webhook(ThreadingHTTPServer):
    """Keeps every notification Alertmanager posts."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.lock = threading.Lock()
        self.notifications: list[Notification] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, path: str, payload: dict[str, Any]) -> None:
        with self.lock:
            self.notifications.append(Notification(time.monotonic(), path, payload))

    def received(self) -> list[Notification]:
        with self.lock:
            return list(self.notifications)

    def first(self, alert: AlertKey, status: str) -> Notification | None:
        """The first notification that carries ``alert`` with ``status`` (firing/resolved)."""
        for notification in self.received():
            for item in notification.payload.get("alerts", []):
                if item.get("status") == status and alert.matches(item.get("labels", {})):
                    return notification
        return None

    def summary(self) -> str:
        lines = []
        for n in self.received():
            alerts = ", ".join(
                f"{a.get('labels', {}).get('alertname')}/{a.get('labels', {}).get('job')}/"
                f"{a.get('labels', {}).get('resilience_name')}={a.get('status')}"
                for a in n.payload.get("alerts", [])
            )
            lines.append(f"  {n.path} {n.payload.get('status')}: {alerts}")
        return "\n".join(lines) or "  (nothing received)"


class _WebhookHandler(BaseHTTPRequestHandler):
    server: Webhook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsed": body.decode("utf-8", errors="replace")}
        self.server.record(self.path, payload)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib signature
        pass


# --- what is awaited ------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertKey:
    """An alert instance: its name and the labels that identify it here."""

    alertname: str
    job: str
    name: str
    severity: str = "warning"

    def matches(self, labels: Mapping[str, Any]) -> bool:
        return (
            labels.get("alertname") == self.alertname
            and labels.get("job") == self.job
            and labels.get("resilience_name") == self.name
            and labels.get("severity") == self.severity
        )

    def __str__(self) -> str:
        return (
            f'{self.alertname}{{job="{self.job}", resilience_name="{self.name}", severity="{self.severity}"}}'
        )


WITHOUT_DEMO_DATA: Final = frozenset(
    {ar.R_ERROR_PATTERNS, ar.R_STORE_DEGRADED, ar.R_STORE_OUTAGES, ar.R_CONFIG_STALE, ar.R_TELEMETRY_OVERFLOW}
)
"""Recording rules whose source series the demos cannot produce. An error pattern's series exist
only once its event happened, with labels no one can know in advance (the operation and error
type), and the demos' scenarios do not produce one: the dependency's errors are absorbed by
retries or, in an outage, turned into rejections by the breaker, and rejections are never error
patterns. A shared store's series exist only where a RedisStore is configured, and the demos run
on embedded defaults with no external service. A watched configuration file's series exist only
where a watch runs, and the demos configure their policies in code. The SDK's overflow series
exist only past its cardinality limit, which the demos' few policies and breakers stay far below
(tests/ops/test_alert_rules_overflow.py fills it with the real SDK). Their metric names are checked
against a real scrape in tests/ops/test_exported_names.py (a store that cannot reach its server and
a file left refused included), their
expressions by promtool's unit tests; the recovery-rate alert in a hard outage by
tests/e2e/test_recovery_alert_outage.py, a store against a real redis-server by tests/redis."""
ALERTS: dict[str, AlertKey] = {
    "breaker_open": AlertKey(ar.A_BREAKER_OPEN, "outage", "ml_service"),
    "bulkhead_full": AlertKey(ar.A_BULKHEAD_FULL, "brownout", "database"),
    "rate_limited": AlertKey(ar.A_RATE_LIMITED, "surge", "content_api"),
    "rate_limiter_refusing": AlertKey(ar.A_RATE_LIMITER_REFUSING, "surge", "previews"),
}
"""The alert instances the scenarios are built to raise."""


class PrometheusClient:
    """The HTTP API of one Prometheus."""

    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str, at: float | None = None) -> tuple[int, Any]:
        """Run an instant query (at the Unix time ``at``, default now); return (HTTP status, answer)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        return http_json(f"{self.base}/api/v1/query?{urllib.parse.urlencode(params)}")

    def get(self, path: str) -> tuple[int, Any]:
        return http_json(f"{self.base}{path}")


class SeriesWatch:
    """Instant queries that must each return at least one series: THE assertion helper.

    :meth:`poll` runs every query still pending and keeps each answer; a query is satisfied the
    first time Prometheus accepts it (HTTP 200, status success) and returns at least one
    series. :meth:`failures` names every query never satisfied, with Prometheus' last answer
    (a parse error is an HTTP 400 ``bad_data``; a wrong metric or label name an empty result).
    """

    def __init__(self, prometheus: PrometheusClient, queries: Mapping[str, str]) -> None:
        self.prometheus = prometheus
        self.queries = dict(queries)
        self._lock = threading.Lock()
        self._answers: dict[str, str] = {}
        self._satisfied: dict[str, float] = {}

    def poll(self) -> None:
        for label in self.pending():
            status, answer = self.prometheus.query(self.queries[label])
            ok = (
                status == 200
                and isinstance(answer, dict)
                and answer.get("status") == "success"
                and bool(answer.get("data", {}).get("result"))
            )
            with self._lock:
                self._answers[label] = f"HTTP {status}: {compact(answer)}"
                if ok:
                    self._satisfied[label] = time.monotonic()

    def pending(self) -> list[str]:
        with self._lock:
            return [label for label in self.queries if label not in self._satisfied]

    def satisfied(self) -> dict[str, float]:
        """When each satisfied query first returned a series (``time.monotonic()``)."""
        with self._lock:
            return dict(self._satisfied)

    def failures(self) -> list[str]:
        with self._lock:
            return [
                f"{label}\n    query: {self.queries[label]}\n    "
                f"Prometheus answered: {self._answers.get(label, '(never asked)')}"
                for label in self.queries
                if label not in self._satisfied
            ]

    def wait(self, timeout: float) -> list[str]:
        """Poll until every query is satisfied or ``timeout`` seconds passed; return the failures."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if not self.pending() or time.monotonic() >= deadline:
                return self.failures()
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


@dataclass
class AlertLog:
    """When each alert instance was first seen firing in Prometheus, in Alertmanager, and resolved."""

    firing: dict[AlertKey, float] = field(default_factory=dict)
    resolved: dict[AlertKey, float] = field(default_factory=dict)
    in_alertmanager: dict[AlertKey, float] = field(default_factory=dict)
    every_firing: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    """Every alert instance seen firing in Prometheus, awaited or not: (alertname, job, policy, name)."""
    prometheus_answer: str = "(never asked)"
    alertmanager_answer: str = "(never asked)"


class Observer:
    """A thread that polls Prometheus and Alertmanager every :data:`POLL` seconds."""

    def __init__(
        self,
        prometheus: PrometheusClient,
        alertmanager: str,
        watches: list[SeriesWatch],
        alerts: list[AlertKey],
    ) -> None:
        self.prometheus = prometheus
        self.alertmanager = alertmanager
        self.watches = watches
        self.alerts = alerts
        self.log = AlertLog()
        self.errors: list[str] = []
        self.condition = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-observer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._round()
            except Exception as error:  # kept for the diagnostics, never fatal
                with self.condition:
                    self.errors.append(f"{type(error).__name__}: {error}")
            with self.condition:
                self.condition.notify_all()
            self._stop.wait(POLL)

    def _round(self) -> None:
        for watch in self.watches:
            watch.poll()
        now = time.monotonic()
        status, answer = self.prometheus.get("/api/v1/alerts")
        firing = set()
        every: set[tuple[str, str, str, str]] = set()
        if status == 200 and isinstance(answer, dict):
            for item in answer.get("data", {}).get("alerts", []):
                if item.get("state") == "firing":
                    labels = item.get("labels", {})
                    firing |= {key for key in self.alerts if key.matches(labels)}
                    every.add(
                        tuple(
                            str(labels.get(label, ""))
                            for label in ("alertname", "job", "resilience_policy", "resilience_name")
                        )
                    )
        am_status, am_answer = http_json(f"{self.alertmanager}/api/v2/alerts")
        in_am = set()
        if am_status == 200 and isinstance(am_answer, list):
            for item in am_answer:
                in_am |= {key for key in self.alerts if key.matches(item.get("labels", {}))}
        with self.condition:
            log = self.log
            log.prometheus_answer = f"HTTP {status}: {compact(answer, 3000)}"
            log.alertmanager_answer = f"HTTP {am_status}: {compact(am_answer, 2000)}"
            for key in firing:
                log.firing.setdefault(key, now)
            for key in in_am:
                log.in_alertmanager.setdefault(key, now)
            for instance in every:
                log.every_firing.setdefault(instance, now)
            if status == 200:
                for key in log.firing.keys() - firing:
                    log.resolved.setdefault(key, now)

    def wait_for(self, predicate: Callable[[], object], deadline: float) -> bool:
        """Wait until ``predicate()`` is true (checked after every round) or the deadline passes."""
        with self.condition:
            return bool(
                self.condition.wait_for(
                    lambda: bool(predicate()) or time.monotonic() >= deadline,
                    timeout=max(0.0, deadline - time.monotonic()) + POLL,
                )
                and predicate()
            )


@dataclass
class Stack:
    """The running system, and what the observer saw of it."""

    prometheus: PrometheusClient
    alertmanager: str
    webhook: Webhook
    demos: dict[str, Process]
    servers: list[Process]
    observer: Observer
    dashboards: SeriesWatch
    healthy: SeriesWatch
    """Every dashboard query with the ``job`` variable on the healthy demo (:data:`HEALTHY_JOB`)."""
    recording_rules: SeriesWatch
    started: float
    deadline: float
    outage_end: float
    """Real seconds after the outage demo's launch at which ``ml_service`` comes back."""
    second_outage: float
    """Real seconds after the outage demo's launch at which ``ml_service`` goes down again."""
    alerts: Mapping[str, AlertKey] = field(default_factory=lambda: MappingProxyType(ALERTS))
    """The alert instances the scenarios are built to raise, by short name."""

    def watch(self, queries: Mapping[str, str]) -> SeriesWatch:
        """Return a :class:`SeriesWatch` of ``queries`` on this Prometheus (the dashboards' helper)."""
        return SeriesWatch(self.prometheus, queries)

    def expect(self, predicate: Callable[[], object], what: str) -> None:
        """Wait (until the deadline) for ``predicate()``; fail naming ``what``, with diagnostics."""
        while True:
            if self.observer.wait_for(predicate, min(self.deadline, time.monotonic() + 2.0)):
                return
            dead = [p for p in [*self.demos.values(), *self.servers] if p.exited() is not None]
            if dead or time.monotonic() >= self.deadline:
                reason = f"; {', '.join(p.describe() for p in dead)}" if dead else ""
                pytest.fail(
                    f"not seen within {self.deadline - self.started:.0f} s of the start{reason}: {what}\n"
                    f"{self.diagnostics()}",
                    pytrace=False,
                )

    def timeline(self) -> str:
        """When each awaited fact first held, in real seconds after the demos' start."""
        events: list[tuple[float, str]] = []
        with self.observer.condition:
            log = self.observer.log
            for what, seen in (
                ("firing in Prometheus", log.firing),
                ("in Alertmanager", log.in_alertmanager),
                ("resolved in Prometheus", log.resolved),
            ):
                events += [(at, f"{key} {what}") for key, at in seen.items()]
        events += [
            (n.at, f"webhook {n.path} {a.get('status')}: {a.get('labels', {}).get('alertname')}")
            for n in self.webhook.received()
            for a in n.payload.get("alerts", [])
        ]
        for watch in (self.dashboards, self.healthy, self.recording_rules):
            events += [(at, f"data: {label}") for label, at in watch.satisfied().items()]
        return "\n".join(f"  {at - self.started:6.1f} s  {text}" for at, text in sorted(events))

    def diagnostics(self) -> str:
        """The tails of the demos' and servers' outputs, Prometheus' rules and alerts, and more."""
        _, rules = self.prometheus.get("/api/v1/rules")
        summary = []
        if isinstance(rules, dict):
            for group in rules.get("data", {}).get("groups", []):
                for rule in group.get("rules", []):
                    summary.append(
                        f"  {rule.get('type')} {rule.get('name')}: health={rule.get('health')}"
                        + (f" state={rule.get('state')}" if rule.get("type") == "alerting" else "")
                        + (f" alerts={len(rule.get('alerts', []))}" if rule.get("type") == "alerting" else "")
                        + (f" lastError={rule.get('lastError')}" if rule.get("lastError") else "")
                    )
        else:
            summary.append(f"  {compact(rules)}")
        with self.observer.condition:
            log = self.observer.log
            seen = (
                f"firing in Prometheus: {sorted(map(str, log.firing))}\n"
                f"resolved in Prometheus: {sorted(map(str, log.resolved))}\n"
                f"seen in Alertmanager: {sorted(map(str, log.in_alertmanager))}\n"
                f"Prometheus /api/v1/alerts (last): {log.prometheus_answer}\n"
                f"Alertmanager /api/v2/alerts (last): {log.alertmanager_answer}\n"
                f"observer errors: {self.observer.errors[-5:]}"
            )
        parts = [
            f"--- {time.monotonic() - self.started:.1f} s after the start",
            seen,
            "Prometheus /api/v1/rules:\n" + "\n".join(summary),
            "webhook notifications:\n" + self.webhook.summary(),
            "timeline (first seen):\n" + self.timeline(),
        ]
        for process in [*self.demos.values(), *self.servers]:
            parts.append(f"--- {process.describe()}, output tail:\n{process.tail()}")
        return "\n".join(parts)


# --- the fixtures ---------------------------------------------------------------------------


def _wait_ready(url: str, process: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.exited() is None:
        status, _ = http_json(url, timeout=2)
        if status == 200:
            return
        time.sleep(0.1)
    pytest.fail(
        f"{process.describe()} not ready at {url} within {timeout:g} s:\n{process.tail()}", pytrace=False
    )


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """The shipped alerts/alertmanager.yml with only the webhook URLs and group timings changed.

    Each receiver's webhook keeps its path (``/pager``, ``/chat``) on ``webhook_url``; the route's
    ``group_wait`` and ``group_interval`` become :data:`GROUP_TIMING`. The routing tree, the
    inhibitions and everything else are the shipped ones.
    """
    config: dict[str, Any] = yaml.safe_load(
        (REPO / "alerts" / "alertmanager.yml").read_text(encoding="utf-8")
    )
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url + urllib.parse.urlsplit(hook["url"]).path
    config["route"]["group_wait"] = GROUP_TIMING
    config["route"]["group_interval"] = GROUP_TIMING
    return config


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Demos (outage, brownout), Prometheus, Alertmanager and the webhook, running and observed."""
    prometheus_binary = find_tool("prometheus")
    alertmanager_binary = find_tool("alertmanager", "prometheus-alertmanager")
    work = tmp_path_factory.mktemp("e2e")
    processes: list[Process] = []
    webhook = Webhook()
    webhook_thread = threading.Thread(target=webhook.serve_forever, name="e2e-webhook", daemon=True)
    webhook_thread.start()
    observer: Observer | None = None
    try:
        am_port, prom_port = free_port(), free_port()
        demo_ports = {job: free_port() for job in JOBS}
        am_dir = work / "alertmanager"
        am_dir.mkdir()
        (am_dir / "alertmanager.yml").write_text(
            yaml.safe_dump(alertmanager_config(webhook.url)), encoding="utf-8"
        )
        alertmanager = Process(
            "alertmanager",
            [
                str(alertmanager_binary),
                f"--config.file={am_dir / 'alertmanager.yml'}",
                f"--storage.path={am_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                f"--web.external-url=http://127.0.0.1:{am_port}/",
                "--cluster.listen-address=",
            ],
            am_dir / "alertmanager.log",
        )
        processes.append(alertmanager)

        prom_dir = work / "prometheus"
        prom_dir.mkdir()
        (prom_dir / ar.RULES_FILE).write_text(ar.render_rules(TIME_SCALE), encoding="utf-8")
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(prom_dir / ar.RULES_FILE)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in demo_ports.items()
            ],
        }
        (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        prometheus = Process(
            "prometheus",
            [
                str(prometheus_binary),
                f"--config.file={prom_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={prom_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                f"--web.external-url=http://127.0.0.1:{prom_port}/",
                "--rules.alert.resend-delay=1s",
            ],
            prom_dir / "prometheus.log",
        )
        processes.append(prometheus)
        prom_url = f"http://127.0.0.1:{prom_port}"
        am_url = f"http://127.0.0.1:{am_port}"
        _wait_ready(f"{am_url}/-/ready", alertmanager, 20)
        _wait_ready(f"{prom_url}/-/ready", prometheus, 20)

        demos: dict[str, Process] = {}
        for job, port in demo_ports.items():
            demo_dir = work / job
            demo_dir.mkdir()
            demos[job] = Process(
                f"demo {job}",
                demo_argv(job, port, "--summary-json", str(demo_dir / "summary.json")),
                demo_dir / "demo.log",
                env=demo_env(),
            )
            processes.append(demos[job])
        started = min(p.started for p in demos.values())

        client = PrometheusClient(prom_url)
        queries: dict[str, str] = {}
        healthy_queries: dict[str, str] = {}
        for path in sorted((REPO / "dashboards").glob("*.json")):
            document = json.loads(path.read_text(encoding="utf-8"))
            queries.update(dashboard_queries(document, INTERVALS))
            healthy_queries.update(dashboard_queries(document, INTERVALS, HEALTHY_JOB))
        records = [
            rule["record"]
            for group in ar.rules_document(TIME_SCALE)["groups"]
            for rule in group["rules"]
            if "record" in rule and rule["record"] not in WITHOUT_DEMO_DATA
        ]
        dashboards = SeriesWatch(client, queries)
        healthy = SeriesWatch(client, healthy_queries)
        recording = SeriesWatch(client, {f"recording rule {name}": name for name in records})
        observer = Observer(client, am_url, [dashboards, healthy, recording], list(ALERTS.values()))
        observer.start()
        scenario = build_scenario("outage", SEED)
        outage = scenario.recoveries("ml_service", 600.0)[0] * TIME_SCALE
        down = next(w for w in scenario.windows("ml_service") if w.condition.down)
        yield Stack(
            prometheus=client,
            alertmanager=am_url,
            webhook=webhook,
            demos=demos,
            servers=[prometheus, alertmanager],
            observer=observer,
            dashboards=dashboards,
            healthy=healthy,
            recording_rules=recording,
            started=started,
            deadline=started + DEADLINE,
            outage_end=outage,
            second_outage=(scenario.cycle + down.start) * TIME_SCALE,
        )
    finally:
        if observer is not None:
            observer.stop()
        stop_all(processes)
        webhook.shutdown()
        webhook.server_close()
        webhook_thread.join(timeout=10)


@pytest.fixture(scope="session")
def harness() -> SimpleNamespace:
    """The harness' helpers and constants, for the test modules (a conftest is not importable)."""
    return SimpleNamespace(
        ALERTS=ALERTS,
        INTERVALS=INTERVALS,
        REPO=REPO,
        SEED=SEED,
        TIME_SCALE=TIME_SCALE,
        Process=Process,
        SeriesWatch=SeriesWatch,
        alertmanager_config=alertmanager_config,
        dashboard_queries=dashboard_queries,
        find_tool=find_tool,
        demo_argv=demo_argv,
        demo_env=demo_env,
        free_port=free_port,
        grafana_all=grafana_all,
        rotel_binary=rotel_binary,
        rotel_env=rotel_env,
        stop_all=stop_all,
    )
