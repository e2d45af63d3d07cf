"""`python -m otel_resilience demo` as a real process: /metrics while it runs, a clean exit on a signal."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT = Path(__file__).resolve().parents[2]
_TRIPPED = re.compile(
    r'resilience_circuit_breaker_transitions_total\{[^}]*resilience_circuit_breaker_state="open"[^}]*\} [1-9]'
)
"""A breaker's transition to open, counted at least once, in a scrape."""


def _as_from_a_shell() -> None:
    """Start a child with SIGINT at its default, as a shell starts it: a test runner's worker may
    ignore SIGINT (pytest-xdist's do), and a child inherits an ignored signal, so Python would
    install no ``KeyboardInterrupt`` handler and a Ctrl-C before the demo's own would be lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return ""


def _scrape_until(url: str, process: subprocess.Popen[str], wanted: re.Pattern[str]) -> str:
    """Scrape ``url`` until ``wanted`` is in it (20 s at most, while the process runs); the last scrape."""
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline and process.poll() is None:
        text = _scrape(url)
        if wanted.search(text):
            break
        time.sleep(0.1)
    return text


@contextlib.contextmanager
def _demo(arguments: list[str], port: int, cwd: Path, **environ: str) -> Iterator[subprocess.Popen[str]]:
    """``python -m otel_resilience demo ARGUMENTS`` serving /metrics on ``port``; killed if still running."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", **environ)
    command = [sys.executable, "-m", "otel_resilience", "demo", *arguments, "--port", str(port)]
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_demo_serves_metrics_and_exits_with_the_signals_status(
    stop_signal: signal.Signals, free_port: int, tmp_path: Path
) -> None:
    """While running, /metrics serves resilience_ series; SIGINT or SIGTERM ends it with a summary and
    the conventional status of a process a signal stopped, 128 + its number: 130, 143 (it was 0)."""
    summary_path = tmp_path / "summary.json"
    arguments = ["--scenario", "outage", "--duration", "60", "--time-scale", "0.01"]
    with _demo([*arguments, "--summary-json", str(summary_path)], free_port, tmp_path) as process:
        url = f"http://127.0.0.1:{free_port}/metrics"
        text = _scrape_until(url, process, _TRIPPED)  # the transition series exist at 0 from the start
        assert _TRIPPED.search(text), text[-2000:]
        for series in (
            "resilience_executions_total{",
            "resilience_circuit_breaker_state{",
            "resilience_bulkhead_active{",
            "resilience_execution_duration_seconds_bucket{",
        ):
            assert series in text, series
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 128 + stop_signal, err
    assert "== otel-resilience demo summary: scenario outage, seed 7 ==" in out
    assert f"stopped by signal ({stop_signal.name})" in out
    assert "lost calls    0" in out
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["stopped_by"] == "signal"
    assert summary["signal"] == stop_signal.name
    assert summary["lost_calls"] == 0
    assert summary["breakers"]["ml_service"]["opened"] is True
    assert _scrape(url) == ""  # the server is gone


def test_the_demo_serves_the_in_process_histograms_when_the_environment_asks(
    free_port: int, tmp_path: Path
) -> None:
    """OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS=true: /metrics serves the latency counters (cumulative
    by le), not the SDK's duration histogram, and the run ends as usual."""
    bucket = re.compile(r'resilience_execution_latency_bucket_total\{[^}]*le="\+Inf"[^}]*\} [1-9]')
    arguments = ["--scenario", "steady", "--duration", "60", "--time-scale", "0.01"]
    with _demo(arguments, free_port, tmp_path, OTEL_RESILIENCE_IN_PROCESS_HISTOGRAMS="true") as process:
        text = _scrape_until(f"http://127.0.0.1:{free_port}/metrics", process, bucket)
        assert bucket.search(text), text[-2000:]
        assert "resilience_execution_latency_count_total{" in text
        assert "resilience_execution_duration_seconds_bucket{" not in text
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGINT, err


def test_the_library_and_the_command_never_load_the_demo_dependencies() -> None:
    """`import otel_resilience` and building the CLI load neither the demo nor its extra dependencies."""
    code = (
        "import sys, otel_resilience, otel_resilience.__main__ as cli; cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'rich', 'prometheus_client'} "
        "or m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', 'otel_resilience.demo.app', "
        "'otel_resilience.demo.otel', 'otel_resilience.demo.view'))))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_teardown_still_ends_the_run_cleanly(signum: signal.Signals) -> None:
    """A signal that lands while the run shuts down (its /metrics server stopping): the duration
    ended the run, so exit 0, no traceback."""
    code = f"""
import os, signal, sys
from otel_resilience.demo import otel
real = otel.DemoTelemetry.stop
def stop(self):
    os.kill(os.getpid(), {int(signum)})  # a supervisor's signal, as the run ends
    real(self)
otel.DemoTelemetry.stop = stop
from otel_resilience.__main__ import main
sys.exit(main(["demo", "--plain", "--duration", "1", "--time-scale", "0.01", "--no-metrics-server"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_as_from_a_shell,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("where", "command"),
    [
        ("build_parser", "otel-resilience"),
        ("check_summary_json", "otel-resilience demo"),
        ("_missing", "otel-resilience demo"),
        ("read_policies", "otel-resilience demo"),
    ],
    ids=["before-the-parse", "before-the-summary-check", "before-the-import", "before-the-load"],
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_startup_ends_the_demo_cleanly(
    signum: signal.Signals, where: str, command: str, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM while the demo starts (its arguments, its imports, its setup): one line, the
    signal's status (128 + its number), no traceback, and no file left where the summary would go."""
    summary = tmp_path / "summary.json"
    code = f"""
import os, sys
import otel_resilience.__main__ as cli
from otel_resilience.demo import app
module = app if {where!r} == "read_policies" else cli
real = getattr(module, {where!r})
def early(*args):
    os.kill(os.getpid(), {int(signum)})  # a supervisor's signal, before the run has begun
    return real(*args)
setattr(module, {where!r}, early)
sys.exit(cli.main(["demo", "--plain", "--duration", "1", "--time-scale", "0.01", "--no-metrics-server",
                   "--summary-json", {str(summary)!r}]))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_as_from_a_shell,
    )
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == f"{command}: stopped by signal\n"
    assert not summary.exists()


def _command_code() -> str:
    """The code of the ``otel-resilience`` command as pip writes it, from ``[project.scripts]``."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^otel-resilience = "([\w.]+):(\w+)"$', text, re.MULTILINE)
    assert found is not None, "no otel-resilience entry in [project.scripts]"
    module, function = found.groups()
    return f"import sys\nfrom {module} import {function}\nsys.exit({function}())\n"


_SIGNAL_ON_IMPORT = """
import importlib.abc, os, sys
class Signal(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:  # the package is being loaded: a signal now lands inside the load
            sys.meta_path.remove(self)
            os.kill(os.getpid(), {signum})
        return None
sys.meta_path.insert(0, Signal())
"""


def _command(prelude: str, *arguments: str) -> subprocess.Popen[str]:
    """Start the ``otel-resilience`` command with ``arguments``, after ``prelude``, as from a shell."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-c", prelude + _command_code(), *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
    )


_QUICK_RUN: Final = ("demo", "--plain", "--duration", "1", "--time-scale", "0.01", "--no-metrics-server")


@pytest.mark.parametrize(
    "module",
    ["otel_resilience", "otel_resilience.manager", "otel_resilience.demo.options"],
    ids=["the-package-starts", "the-package-half-loaded", "the-command-module-loads"],
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_command_loads_stops_it_cleanly(signum: signal.Signals, module: str) -> None:
    """Ctrl-C or SIGTERM while the command loads the package (its first third of a second): one line
    on standard error and the signal's status (128 + its number), as for a signal before the demo's
    run; no traceback."""
    process = _command(_SIGNAL_ON_IMPORT.format(module=module, signum=int(signum)), *_QUICK_RUN)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err == "otel-resilience: stopped by signal\n"
    assert out == ""


@pytest.mark.parametrize(
    "module",
    ["otel_resilience.engine", "otel_resilience.manager", "otel_resilience.demo.options"],
    ids=["the-package-starts", "the-package-half-loaded", "the-command-module-loads"],
)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_python_m_loads_the_package_stops_it_cleanly(
    signum: signal.Signals, module: str, tmp_path: Path
) -> None:
    """`python -m otel_resilience demo`, which loads the package before the command's code runs:
    Ctrl-C or SIGTERM during that load stops it as the script's, one line and the signal's status
    (it was a traceback, or a silent kill by SIGTERM)."""
    # The signal comes from a finder the interpreter installs at start-up (sitecustomize), as the
    # module the package imports is looked for.
    (tmp_path / "sitecustomize.py").write_text(_SIGNAL_ON_IMPORT.format(module=module, signum=int(signum)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(tmp_path), str(ROOT))), PYTHONUNBUFFERED="1")
    result = subprocess.run(
        [sys.executable, "-m", "otel_resilience", *_QUICK_RUN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_as_from_a_shell,
    )
    assert result.returncode == 128 + signum, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr == "otel-resilience: stopped by signal\n"
    assert result.stdout == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_wait_for_a_summary_pipe_nobody_reads(
    signum: signal.Signals, tmp_path: Path
) -> None:
    """--summary-json naming a pipe with no reader: the run waits to write it after the summary, and
    SIGINT or SIGTERM ends that wait (the summary is not written: status 1, saying why), where the
    demo used to wait for a reader for ever."""
    fifo = tmp_path / "summary.fifo"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    arguments = ["demo", "--plain", "--duration", "0.5", "--time-scale", "0.01", "--no-metrics-server"]
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_resilience", *arguments, "--summary-json", str(fifo)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the summary is shown before the file is written
            if line.startswith("lost calls"):
                break
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signum)  # again until it lands in the wait (the end of the run comes first)
            with contextlib.suppress(subprocess.TimeoutExpired):
                # Longer for a loaded machine to finish the exit a signal began (one more SIGINT
                # while the interpreter exits is a KeyboardInterrupt there: status -2), shorter
                # than the 2 s a stopped run gives the summary file (OUTPUT_GRACE).
                process.wait(timeout=1.2)
        assert process.poll() is not None, "the demo still waits for a reader of its summary pipe"
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 1, err
    assert "Traceback" not in err
    assert f"cannot write the summary to {fifo}: " in err
    assert "stopped by a signal" in err


_F_SETPIPE_SZ: Final = 1031
"""Linux's fcntl command that sets a pipe's capacity."""
_SMALL_PIPE: Final = 4096


@contextlib.contextmanager
def _demo_into_a_pipe_nobody_reads(*arguments: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m otel_resilience demo ARGUMENTS`` whose standard output is a 4 KiB pipe not read (yet)."""
    fcntl = pytest.importorskip("fcntl")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen(
        [sys.executable, "-m", "otel_resilience", "demo", "--no-metrics-server", *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_as_from_a_shell,
    ) as process:
        try:
            assert process.stdout is not None
            fcntl.fcntl(process.stdout.fileno(), _F_SETPIPE_SZ, _SMALL_PIPE)
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=10)


def _until_the_pipe_is_full(process: subprocess.Popen[bytes]) -> None:
    """Wait until the process's standard output pipe is half full (60 s at most): its next lines,
    or the summary, then fill it (a write that does not fit in what is left waits for a reader)."""
    import fcntl  # noqa: PLC0415 - POSIX only, as the tests that call this
    import termios  # noqa: PLC0415

    assert process.stdout is not None
    deadline = time.monotonic() + 60
    queued = bytearray(4)
    while time.monotonic() < deadline and process.poll() is None:
        fcntl.ioctl(process.stdout.fileno(), termios.FIONREAD, queued)
        if int.from_bytes(queued, sys.byteorder) >= _SMALL_PIPE // 2:
            return
        time.sleep(0.1)
    pytest.fail("the demo's output never filled its pipe")


def _ended(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether the process has ended within ``seconds``."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_demo_whose_output_nobody_reads(signum: signal.Signals) -> None:
    """Standard output a full pipe nobody reads: SIGINT or SIGTERM still ends the run (it used to
    stay running, its loop stuck in a write to the pipe); the summary cannot be shown: status 1."""
    with _demo_into_a_pipe_nobody_reads("--plain", "--interval", "0.25", "--time-scale", "0.01") as process:
        _until_the_pipe_is_full(process)
        process.send_signal(signum)
        assert _ended(process, 30), "the demo still runs after the signal, its output not read"
        _, err = (text.decode() for text in process.communicate(timeout=10))
    assert process.returncode == 1, err
    assert "Traceback" not in err
    assert "otel-resilience demo: standard output did not take the summary: " in err


def test_a_reader_that_comes_back_after_the_signal_gets_the_summary() -> None:
    """A reader that stops reading and comes back after the signal: the summary is all there, and
    the status is SIGTERM's, 143."""
    with _demo_into_a_pipe_nobody_reads("--plain", "--interval", "0.25", "--time-scale", "0.01") as process:
        _until_the_pipe_is_full(process)
        process.send_signal(signal.SIGTERM)
        out, err = (text.decode() for text in process.communicate(timeout=60))
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by signal" in out
    assert "lost calls    0" in out


def test_a_signal_stops_a_demo_whose_summary_file_is_its_output_nobody_reads() -> None:
    """``--summary-json /dev/stdout`` into a pipe nobody reads: one SIGTERM still ends the run (the
    summary file's write waited for the reader for ever, after the stop had given up on the view's);
    status 1, naming the summary file."""
    arguments = ("--plain", "--interval", "0.25", "--time-scale", "0.01", "--summary-json", "/dev/stdout")
    with _demo_into_a_pipe_nobody_reads(*arguments) as process:
        _until_the_pipe_is_full(process)
        process.send_signal(signal.SIGTERM)
        assert _ended(process, 30), "the demo still waits to write its summary file after the signal"
        _, err = (text.decode() for text in process.communicate(timeout=10))
    assert process.returncode == 1, err
    assert "Traceback" not in err
    assert "otel-resilience demo: cannot write the summary to /dev/stdout: " in err
    assert "not written within 2 s of the stop" in err


def test_a_watched_config_file_applies_an_edit_live_and_a_signal_stops_the_watch(
    free_port: int, tmp_path: Path
) -> None:
    """--config is watched: a save applies while the demo runs (the view's line, /metrics); SIGTERM
    ends the run with its status, 143, the reloads in the summary, and no watch thread keeping it alive."""
    config = tmp_path / "demo.yaml"
    quota = "version: 1\npolicies:\n  tenants:\n    rate_limiter:\n      rate: {rate}\n      burst: 4\n"
    config.write_text(quota.format(rate=2), encoding="utf-8")
    written = time.time() - 10  # not written in the last 3 s: the first load applies it at once
    os.utime(config, (written, written))
    summary_path = tmp_path / "summary.json"
    arguments = ["--scenario", "steady", "--duration", "120", "--time-scale", "0.01", "--plain"]
    arguments += ["--config", str(config), "--watch-interval", "0.1", "--summary-json", str(summary_path)]
    with _demo(arguments, free_port, tmp_path) as process:
        url = f"http://127.0.0.1:{free_port}/metrics"
        reloads = r'^resilience_reload_total\{(?=[^}]*resilience_policy="tenants")(?=[^}]*outcome="succeeded")[^}]*\} '
        started = re.compile(reloads + r"0\.0", re.MULTILINE)  # the series exist at 0 from the start
        assert started.search(_scrape_until(url, process, started))
        edited = tmp_path / "edited.yaml"
        edited.write_text(quota.format(rate=0.25), encoding="utf-8")
        edited.replace(config)  # an atomic save
        applied = re.compile(reloads + r"1\.0", re.MULTILINE)
        text = _scrape_until(url, process, applied)
        assert applied.search(text), text[-3000:]
        # Read until the gauge says so (a loaded run's scrape once lacked it at 0 beside the applied
        # reload; a refusal meanwhile would show in the summary's count below, which must be 0).
        fresh = re.compile(r"^resilience_config_stale\{[^}]*\} 0\.0", re.MULTILINE)
        text = _scrape_until(url, process, fresh)
        assert fresh.search(text), [line for line in text.splitlines() if "config_stale" in line]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert f"config {config}: reload applied: tenants" in out, out + err
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["stopped_by"] == "signal"
    assert (summary["reloads"]["applied"], summary["reloads"]["refused"]) == (1, 0)


@pytest.mark.parametrize("mode", ["w", "a"], ids=["truncated", "appended"])
def test_a_summary_json_to_standard_output_redirected_to_a_file_is_appended(
    mode: str, tmp_path: Path
) -> None:
    """`demo --summary-json /dev/stdout >> runs.log`: the JSON follows the summary the run wrote to
    runs.log. It replaced the file whole (/dev/stdout resolves to it), dropping the run's own lines
    and, with `>>`, the earlier runs' (0 of 1 kept before)."""
    log = tmp_path / "runs.log"
    log.write_text("an earlier run\n", encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    arguments = ("--duration", "0.5", "--time-scale", "0.01", "--no-metrics-server", "--plain")
    with log.open(mode, encoding="utf-8") as stdout:
        completed = subprocess.run(
            [sys.executable, "-m", "otel_resilience", "demo", *arguments, "--summary-json", "/dev/stdout"],
            env=env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr
    text = log.read_text(encoding="utf-8")
    assert text.startswith("an earlier run\n") == (mode == "a")
    assert "== otel-resilience demo summary: scenario outage, seed 7 ==" in text
    shown, _, written = text.partition("\n{\n")
    assert "== otel-resilience demo summary" in shown  # the JSON comes after the summary
    assert json.loads("{\n" + written)["stopped_by"] == "duration"
