"""A service's /metrics and a real Prometheus scraping it: what the live ops tests share."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, make_wsgi_app
from support import stop_process

from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def query(base: str, expr: str) -> dict[str, Any]:
    """Prometheus's answer to an instant query (``status`` ``unavailable`` while it starts)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read().decode()))
    except urllib.error.HTTPError as error:
        body = error.read().decode()
        try:
            return dict(json.loads(body))
        except json.JSONDecodeError:  # "Service Unavailable" in plain text while the TSDB starts
            return {"status": "unavailable", "error": body}
    except OSError as error:  # not listening yet
        return {"status": "unavailable", "error": str(error)}


@contextlib.contextmanager
def served_metrics(work: Callable[[threading.Event], None], **options: Any) -> Iterator[str]:
    """The library instrumented on a Prometheus reader, its /metrics served, ``work(stop)`` in a thread.

    Yields the ``host:port`` to scrape; afterwards the work is stopped, the listener removed and
    the process-wide default listener put back if there was one. ``options`` go to ``instrument``.
    """
    had_default = current_listener() is not None
    registry = CollectorRegistry()
    provider = MeterProvider(
        metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False
    )
    instrument(meter_provider=provider, **options)
    stop = threading.Event()
    server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=_Quiet)
    threads = [
        threading.Thread(target=server.serve_forever, daemon=True),
        threading.Thread(target=work, args=(stop,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        for thread in threads:
            thread.join(10)
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


@contextlib.contextmanager
def prometheus_scraping(
    binary: Path, data: Path, job: str, target: str, rules: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real Prometheus on 127.0.0.1 scraping ``target`` as ``job`` every second, with ``rules`` loaded.

    Yields its base URL and its process (its standard error piped, for a test that reports it).
    """
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }
    (data / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            str(binary),
            f"--config.file={data / 'prometheus.yml'}",
            f"--storage.tsdb.path={data / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url=http://127.0.0.1:{port}/",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        stop_process(process)
