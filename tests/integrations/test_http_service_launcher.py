"""``python -m examples.http_service`` as a user runs it: a real process, stopped as a user would.

The launcher starts the downstreams' process, serves the FastAPI service with uvicorn on a free
port and prints both addresses. Bounds are generous (a cold start of FastAPI on a loaded machine
takes seconds); nothing here measures speed.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import importlib.util
import os
import queue
import re
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = [sys.executable, "-m", "examples.http_service"]
STARTUP = 120.0
"""Seconds the launcher may take to print its addresses and answer its first request."""


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's output lines, read by a thread (so a test can wait for one with a bound)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _addresses(
    process: subprocess.Popen[str], lines: queue.Queue[str], log: Path
) -> tuple[str, dict[str, str]]:
    """Wait for the printed addresses: the service's URL and the downstreams' URLs."""
    found: dict[str, str] = {}
    end = time.monotonic() + STARTUP
    while not {"service", "downstreams"} <= found.keys():
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            assert process.poll() is None, f"the launcher exited ({process.returncode}): {log.read_text()}"
            assert time.monotonic() < end, f"no addresses within {STARTUP} s: {log.read_text()}"
            continue
        label, _, rest = line.partition(":")
        found[label.strip()] = rest.strip()
    return found["service"].split()[0], ast.literal_eval(found["downstreams"])


@contextlib.contextmanager
def _launched(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The launcher started as a user runs it (its stderr in a log file); killed afterwards if still running."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "stderr.txt"
    with log.open("w") as errors:
        process = subprocess.Popen(LAUNCHER, cwd=ROOT, env=env, stdout=PIPE, stderr=errors, text=True)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def _refused(url: str) -> bool:
    """Return whether nothing listens any more at ``url``'s port."""
    parts = urlsplit(url)
    assert parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2.0):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_launcher_serves_a_route_and_stops_cleanly(stop: signal.Signals, tmp_path: Path) -> None:
    """The launcher answers GET /items/1 through the downstream, and a signal stops both processes quietly."""
    with _launched(tmp_path) as (process, log):
        service, downstreams = _addresses(process, _lines(process), log)
        end = time.monotonic() + STARTUP
        while True:
            try:
                response = httpx.get(f"{service}/items/1", timeout=10.0)
                break
            except httpx.TransportError:
                assert time.monotonic() < end, "the service did not answer within its start-up bound"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.json() == {"name": "inventory", "path": "/items/1", "status": 200}
        process.send_signal(stop)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()  # a clean stop logs no error
        assert _refused(service)
        assert all(_refused(url) for url in downstreams.values()), "the downstream process outlived it"


@pytest.mark.timeout(300)
def test_the_printed_service_address_accepts_a_request_at_once(tmp_path: Path) -> None:
    """A request sent as soon as the address is printed is answered, not refused (no retry needed)."""
    with _launched(tmp_path) as (process, log):
        service, _ = _addresses(process, _lines(process), log)
        response = httpx.get(f"{service}/items/1", timeout=STARTUP)
        assert response.status_code == 200, log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()


@pytest.mark.timeout(300)
def test_a_killed_launcher_leaves_no_downstream_behind(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up: the downstream process stops on its own (its parent's pipe closed)."""
    with _launched(tmp_path) as (process, log):
        _, downstreams = _addresses(process, _lines(process), log)
        process.kill()
        process.wait(timeout=30)
        end = time.monotonic() + 30.0
        while not all(_refused(url) for url in downstreams.values()):
            assert time.monotonic() < end, "the downstream process outlived its killed parent"
            time.sleep(0.2)


def _distribution_of(module: str) -> str | None:
    """The installed distribution whose files hold ``module`` (``None``: the standard library)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    if spec.origin is None or not spec.origin.startswith(tuple(site.getsitepackages())):
        return None
    origin = Path(spec.origin).resolve()
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if Path(str(dist.locate_file(file))).resolve() == origin:
                return re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    raise AssertionError(f"no distribution holds {module} ({origin})")


def test_the_readme_install_command_brings_every_package_the_example_imports() -> None:
    """The example's README says what to install beside the demo's extra: every import is covered."""
    readme = (ROOT / "examples" / "http_service" / "README.md").read_text(encoding="utf-8")
    command = re.search(r"pip install ([^\n`]+)", readme)
    assert command is not None, "the README gives no pip install command for the example"
    named = set(command.group(1).split())
    requirements = importlib.metadata.requires("otel-resilience") or []  # the core's and .[demo]'s
    named |= {
        re.split(r"[<>=!~;\[ ]", requirement)[0].lower()
        for requirement in requirements
        if "extra ==" not in requirement or 'extra == "demo"' in requirement
    }
    imported: set[str] = set()
    for source in (ROOT / "examples" / "http_service").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
                imported.add(node.module)
    own = ("examples", "otel_resilience", "__future__")
    needed = {module: _distribution_of(module) for module in imported if module.partition(".")[0] not in own}
    missing = {module: dist for module, dist in needed.items() if dist is not None and dist not in named}
    assert not missing, (
        f"imported by the example, installed by neither the README's command nor .[demo]: {missing}"
    )
