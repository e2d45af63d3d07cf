"""`--config FILE` is watched during the run: an edit saved applies live, a broken one is refused and shown.

The file is rewritten while the demo runs in process; each step waits (generous bounds, no timing
assertion) for the view's line of the reload, and /metrics is scraped for the series the
dashboards and alerts read (``resilience_reload_total``, ``resilience_config_stale``).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Final

import pytest

from otel_resilience.__main__ import main
from otel_resilience.demo.app import run_demo
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.view import PlainView

from .conftest import FAST

_QUOTA: Final = """\
version: 1
policies:
  tenants:
    rate_limiter:
      rate: {rate}
      burst: 4
"""

_WAIT: Final = 30.0
"""Real seconds a step waits at most for the view's line (a loaded machine included)."""


def _save(path: Path, text: str) -> None:
    """Replace ``path`` whole, as an editor's atomic save does (written beside it, renamed over it)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


async def _line(out: io.StringIO, pattern: str, stop: asyncio.Event) -> re.Match[str]:
    """The view's first line matching ``pattern``: polled until it shows (``_WAIT`` s at most)."""
    compiled = re.compile(pattern, re.MULTILINE)
    for _ in range(int(_WAIT / 0.05)):
        found = compiled.search(out.getvalue())
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    stop.set()
    pytest.fail(f"no line {pattern!r} in the view:\n{out.getvalue()}")


def _scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


async def _metric(url: str, pattern: str) -> str:
    """A /metrics scrape in which ``pattern`` shows (``_WAIT`` s at most); the last one."""
    text = ""
    for _ in range(int(_WAIT / 0.2)):
        text = await asyncio.to_thread(_scrape, url)
        if re.search(pattern, text, re.MULTILINE):
            break
        await asyncio.sleep(0.2)
    return text


async def test_an_edit_of_the_config_file_applies_live_and_a_broken_one_is_refused_and_shown(
    tmp_path: Path, free_port: int
) -> None:
    config = tmp_path / "demo.yaml"
    _save(config, _QUOTA.format(rate=2))
    summary_path = tmp_path / "summary.json"
    options = DemoOptions(
        scenario="steady",
        duration=120.0,  # ended by ``stop`` once every step was seen
        time_scale=FAST,
        port=free_port,
        plain=True,
        interval=0.5,
        config=config,
        watch_interval=0.1,
        summary_json=summary_path,
    )
    out = io.StringIO()
    stop = asyncio.Event()
    run = asyncio.create_task(run_demo(options, view=PlainView(out, 0.5), stop=stop, handle_signals=False))
    url = f"http://127.0.0.1:{free_port}/metrics"
    try:
        await _line(out, r"^watching .*demo\.yaml every 0\.1 s", stop)
        await _line(out, r"^\[.*\] \d+ exec/s", stop)  # the load runs
        _save(config, _QUOTA.format(rate=0.25))
        applied = await _line(out, r"config .*demo\.yaml: reload applied: (.*)$", stop)
        assert applied.group(1) == "tenants"
        succeeded = r'^resilience_reload_total\{(?=[^}]*resilience_policy="tenants")(?=[^}]*outcome="succeeded")[^}]*\} 1\.0'
        scraped = await _metric(url, succeeded)
        assert re.search(succeeded, scraped, re.MULTILINE), scraped

        _save(config, _QUOTA.format(rate=-1))  # refused: a rate must be > 0
        refused = await _line(
            out,
            r"config .*demo\.yaml: reload refused \((.*)\), the last good configuration stays: (.*)$",
            stop,
        )
        assert refused.group(1) == "tenants"
        assert "rate" in refused.group(2)
        scraped = await _metric(url, r"^resilience_config_stale\{.*\} 1\.0")
        assert re.search(r"^resilience_config_stale\{.*\} 1\.0", scraped, re.MULTILINE), scraped

        _save(config, _QUOTA.format(rate=2).replace("policies:", "policies:\n  payments:\n    timeout: 1s"))
        unknown = await _line(
            out,
            r"config .*demo\.yaml: reload refused, the last good configuration stays: (.*payments.*)$",
            stop,
        )
        assert "not a policy of the demo" in unknown.group(1)
    finally:
        stop.set()
        summary = await run
    assert summary["stopped_by"] == "stop"
    reloads = summary["reloads"]
    assert reloads["file"] == str(config)
    assert reloads["interval_s"] == 0.1
    assert (reloads["applied"], reloads["refused"], reloads["stale"]) == (1, 2, True)
    assert "payments" in reloads["last_error"]
    assert reloads["policies"]["tenants"] == {"succeeded": 1, "failed": 1}
    assert reloads["policies"]["ml_service"] == {"succeeded": 0, "failed": 0}
    assert summary["tenants"]["rate"] == pytest.approx(0.25)  # the quota of the last good file
    assert re.search(
        r"^reloads +.*demo\.yaml \(looked at every 0\.1 s\): 1 applied \(tenants 1\), 2 refused",
        out.getvalue(),
        re.MULTILINE,
    )
    assert json.loads(summary_path.read_text(encoding="utf-8"))["reloads"]["refused"] == 2


async def test_the_watch_stops_with_the_run(tmp_path: Path) -> None:
    """Once the run ended, a save of the file changes nothing (the watch's thread is gone)."""
    config = tmp_path / "demo.yaml"
    _save(config, _QUOTA.format(rate=2))
    options = DemoOptions(
        scenario="steady",
        duration=1.0,
        time_scale=FAST,
        port=None,
        plain=True,
        config=config,
        watch_interval=0.1,
    )
    summary = await run_demo(options, view=PlainView(io.StringIO(), 1.0), handle_signals=False)
    assert summary["reloads"]["applied"] == 0
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("otel-resilience watch")]


def test_a_watch_interval_without_a_config_file_or_not_positive_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for given in (["--watch-interval", "1"], ["--config", str(tmp_path / "x.yaml"), "--watch-interval", "0"]):
        with pytest.raises(SystemExit) as caught:
            main(["demo", "--duration", "0.3", "--no-metrics-server", *given])
        assert caught.value.code == 2
        assert "--watch-interval" in capsys.readouterr().err


def test_watch_interval_needs_a_config_file_and_a_positive_duration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--watch-interval is how often the --config file is looked at"):
        DemoOptions(watch_interval=1.0)
    with pytest.raises(ValueError, match="--watch-interval must be a finite number of seconds > 0"):
        DemoOptions(config=tmp_path / "x.yaml", watch_interval=0)
