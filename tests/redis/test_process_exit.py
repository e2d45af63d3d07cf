"""A real process that uses every background part of the library, and ends without closing any.

A service's process returns from its main function (or Ctrl-C ends its ``asyncio.run``) while a
shared store's threads, a configuration watch, the alerts, keyed policies, in-process histograms
and the OpenTelemetry SDK's periodic reader run, and calls wait in a retry's backoff or a
bulkhead's queue: it must end, at once, with nothing on stderr that the library caused (no
traceback, no ``Exception ignored``, no error logged). Each script runs in a fresh interpreter;
the bounds below only tell a hang from a loaded machine, they time nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis_support import RedisServer

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[2]
HANG = 60.0
"""Seconds after which a process still running counts as hung (it ends within one or two)."""

EVERYTHING = """\
import os, sys, threading, time
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from otel_resilience import (
    CircuitBreakerConfig, RedisStore, ResilienceConfig, ResilienceManager, RetryPolicy, subscribe,
)
from otel_resilience.telemetry import instrument


def fail():
    raise ConnectionError("down")


def until(condition, what):
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def main(url, config, redis_goes):
    sink = open(os.devnull, "w")
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(out=sink), export_interval_millis=50)
    instrument(meter_provider=MeterProvider(metric_readers=[reader]), in_process_histograms=True)
    alerts = []
    subscribe(alerts.append)
    store = RedisStore.from_url(url, namespace="exit", timeout=5.0)
    manager = ResilienceManager()
    manager.watch(config, interval=0.05)
    keyed = manager.policy(
        "keyed", ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, store=store))
    )
    for key in range(5):
        keyed.for_key(key).execute_sync(lambda: 1)
    try:
        keyed.for_key("failing").execute_sync(fail)
    except ConnectionError:
        pass
    assert alerts, "the breaker's alert"
    assert store.wait_synced(30), "the store reached Redis"
    slow = manager.policy("slow", ResilienceConfig(retry_policy=RetryPolicy(max_attempts=3, initial_delay=600.0)))
    threading.Thread(target=slow.execute_sync, args=(fail,), daemon=True).start()
    until(lambda: slow.get_stats()["retry"]["retries"] >= 1, "a call in its backoff")
    print("ready", flush=True)
    if redis_goes:
        sys.stdin.readline()  # Redis is stopped now
        for key in range(3):
            try:
                keyed.for_key(f"after-{key}").execute_sync(fail)
            except Exception:
                pass
        until(lambda: store.degraded, "the store found Redis gone")
    # Returns with everything running: nothing closed, stopped or shut down.


main(sys.argv[1], sys.argv[2], sys.argv[3] == "stopped")
"""


def _script(tmp_path: Path, text: str) -> Path:
    script = tmp_path / "service.py"
    script.write_text(text)
    return script


def _as_from_a_shell() -> None:
    """SIGINT at its default, as a shell starts a process (a test runner's worker may ignore it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_from_a_shell,
    )


def _ready(process: subprocess.Popen[str]) -> None:
    """Wait for the script's ``ready`` line (its stderr in the failure, if it ended first)."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if line != "ready\n":
        process.kill()
        _, err = process.communicate(timeout=HANG)
        pytest.fail(f"the script ended before it was ready: {line!r}\n{err}")


def _ended(process: subprocess.Popen[str]) -> str:
    """Wait for the process to end by itself (fail, killing it, if it hangs); return its stderr."""
    try:
        _, err = process.communicate(timeout=HANG)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=HANG)
        pytest.fail(f"the process did not end within {HANG:g} s (killed):\n{err}")
    return err


@pytest.mark.parametrize("redis", ["running", "stopped"])
def test_a_process_that_returns_with_every_background_part_running_ends_cleanly(
    tmp_path: Path, redis_server: RedisServer, redis_url: str, redis: str
) -> None:
    """Main returns with a store's threads, a watch, alerts, keyed policies, in-process histograms,
    the SDK's periodic reader and a call in a retry's backoff (a daemon thread) all running,
    Redis reachable or stopped meanwhile: the interpreter exits 0 with no traceback."""
    config = tmp_path / "resilience.yaml"
    config.write_text("policies:\n  inventory:\n    timeout: 2s\n")
    process = _start(str(_script(tmp_path, EVERYTHING)), redis_url, str(config), redis)
    try:
        _ready(process)
        if redis == "stopped":
            redis_server.stop()
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        err = _ended(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=HANG)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    if redis == "running":
        assert err == ""
    else:  # the one warning of the outage, nothing else
        assert [line for line in err.splitlines() if line] == [
            line for line in err.splitlines() if line.startswith("shared store 'exit' unreachable")
        ], err


IN_FLIGHT = """\
import asyncio, logging, signal, sys
from otel_resilience import (
    BulkheadConfig, RateLimiterConfig, RedisStore, ResilienceConfig, ResilienceManager, RetryPolicy,
)

logging.basicConfig(format="LOGGED %(levelname)s %(name)s: %(message)s", level=logging.INFO)


async def fail():
    raise ConnectionError("down")


async def main(url):
    # SIGTERM as a server takes it: the main task cancelled (asyncio.run takes SIGINT itself).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    store = RedisStore.from_url(url, namespace="in-flight", timeout=5.0)
    manager = ResilienceManager()
    queued = manager.policy("queued", ResilienceConfig(
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=10),
        rate_limiter=RateLimiterConfig(rate=1000.0, store=store),
    ))
    backing_off = manager.policy("backing-off", ResilienceConfig(retry_policy=RetryPolicy(initial_delay=600.0)))
    tasks = [asyncio.create_task(queued.for_key("k").execute(asyncio.sleep, 600)) for _ in range(3)]
    tasks += [asyncio.create_task(backing_off.execute(fail)) for _ in range(2)]
    while queued.get_stats()["bulkhead"]["waiting"] < 2 or backing_off.get_stats()["retry"]["retries"] < 2:
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await asyncio.Event().wait()


try:
    asyncio.run(main(sys.argv[1]))
except asyncio.CancelledError:
    sys.exit(143)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_asyncio_run_with_calls_queued_and_backing_off_ends_it_at_once(
    tmp_path: Path, redis_url: str, signum: signal.Signals
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (the main task cancelled) while calls wait in a bulkhead's queue
    (permits asked of Redis from the loop) and in a retry's backoff: ``asyncio.run`` cancels them
    and the process ends, logging nothing of the library's and leaving no task or client behind."""
    process = _start(str(_script(tmp_path, IN_FLIGHT)), redis_url)
    try:
        _ready(process)
        process.send_signal(signum)
        err = _ended(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=HANG)
    if signum == signal.SIGINT:
        assert process.returncode == -signal.SIGINT, err
        assert err.rstrip().endswith("KeyboardInterrupt"), err
    else:
        assert (process.returncode, err) == (143, "")
    for sign in ("LOGGED", "Exception ignored", "Task was destroyed", "never retrieved", "Unclosed"):
        assert sign not in err, err
