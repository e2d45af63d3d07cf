"""A manager kept in step with a configuration file: apply_config, watch, OTEL_RESILIENCE_CONFIG."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager
from otel_resilience.config import ConfigError, load, loads
from otel_resilience.engine.events import Event, ReloadFailed
from otel_resilience.manager import watch as watch_module
from otel_resilience.manager.decorator import new_default_manager
from otel_resilience.manager.watch import RACY_WINDOW_NS, ConfigWatch
from otel_resilience.telemetry import current_listener, install_default, instrument, uninstrument
from otel_resilience.testing import EventRecorder, FakeClock, fresh_defaults

ROOT = Path(__file__).resolve().parents[2]
FIRST = """\
policies:
  payments:
    circuit_breaker: {failure_threshold: 3}
    timeout: 2s
  search:
    retry: {max_attempts: 2, initial_delay: 0}
"""
SECOND = """\
policies:
  payments:
    circuit_breaker: {failure_threshold: 5}
    timeout: 2s
  search:
    retry: {max_attempts: 2, initial_delay: 0}
  inventory:
    timeout: 1s
"""
BROKEN = """\
policies:
  payments:
    circuit_breaker: {failure_threshold: 0}
"""


def _write(path: Path, text: str) -> None:
    """Write ``text`` so that the watch sees a change (size or modification time)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    if path.stat().st_mtime_ns == before:  # a coarse clock: move the time on explicitly
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def _manager() -> ResilienceManager:
    """A manager on a fake clock: a watch's start-up wait for a file just written takes no time."""
    return ResilienceManager(clock=FakeClock())


def _look_twice(watch: ConfigWatch) -> bool:
    """Two looks at a file written since the last one: the first finds it new (not applied yet),
    the second finds it unchanged and applies it; returns what the second look returned."""
    assert not watch.check()
    return watch.check()


def test_apply_config_creates_new_policies_and_reloads_changed_ones_only(tmp_path: Path) -> None:
    """New names get a handle; a changed config is reloaded; an unchanged one keeps its generation."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    handles = manager.apply_config(load(path))
    assert set(handles) == {"payments", "search"}
    assert handles["payments"].config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
    search_generation = handles["search"].generation
    _write(path, SECOND)
    again = manager.apply_config(load(path))
    assert again["payments"] is handles["payments"]  # the same handle, reloaded
    assert again["payments"].config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
    assert again["search"].generation == search_generation  # unchanged: not reloaded
    assert again["inventory"].config.timeout == 1.0


def test_apply_config_refuses_what_is_not_names_to_configs_naming_it() -> None:
    """Not a mapping, or a name that is not a str: a TypeError naming the argument, and nothing created."""
    manager = _manager()
    with pytest.raises(TypeError, match=r"^ResilienceManager\.apply_config\.policies must be a mapping"):
        manager.apply_config([ResilienceConfig()])  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"^ResilienceManager\.apply_config\.policies key must be a str, got 5 \(int\)$"
    ):
        manager.apply_config({5: ResilienceConfig(), "fine": ResilienceConfig()})  # type: ignore[dict-item]
    with pytest.raises(KeyError):
        manager.policy("fine")


def test_apply_config_refuses_a_function_for_a_policy_that_exists_as_for_a_new_one() -> None:
    """apply_config takes configs, not functions that build one (reconfigure's factories): a
    TypeError naming the argument, reported for that policy, nothing changed, whether the name
    exists or not (was: a new name's function refused, an existing name's called and its config
    taken, so one mapping was refused or applied depending on which names existed)."""
    manager = _manager()
    payments = manager.policy("payments", ResilienceConfig(timeout=1.0))
    message = r"^ResilienceManager\.apply_config\.policies\[{!r}\] must be a ResilienceConfig, got <function"
    for name in ("inventory", "payments"):
        with pytest.raises(TypeError, match=message.format(name)):
            manager.apply_config({name: lambda: ResilienceConfig(timeout=2.0)})  # type: ignore[dict-item]
    assert "inventory" not in manager._handles
    assert (payments.generation, payments.config.timeout) == (1, 1.0)
    assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 1}


def test_customize_adds_what_a_file_cannot_express(tmp_path: Path) -> None:
    """customize(name, config) gives the config to use (here: a name-dependent change)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        return ResilienceConfig(**{**vars_of(config), "max_attempts_total": 4 if name == "search" else None})

    handles = manager.apply_config(load(path), customize=customize)
    assert handles["search"].config.max_attempts_total == 4
    assert handles["payments"].config.max_attempts_total is None


def vars_of(config: ResilienceConfig) -> dict[str, object]:
    import dataclasses  # noqa: PLC0415

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "name"}


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """The library instrumented with a meter provider read by the returned reader, for one test."""
    had_default = current_listener() is not None
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    instrument(meter_provider=provider)
    try:
        yield reader
    finally:
        uninstrument()
        if had_default:
            install_default()
        provider.shutdown()


def _failed_reloads(reader: InMemoryMetricReader, policy: str | None = None) -> int:
    """The ``resilience.reload`` points with ``outcome=failed``, summed over every policy (or ``policy``'s)."""
    data = reader.get_metrics_data()
    if data is None:
        return 0
    return sum(
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.reload"
        for point in metric.data.data_points
        if point.attributes.get("resilience.reload.outcome") == "failed"
        and policy in (None, point.attributes.get("resilience.policy"))
    )


def test_a_watch_applies_a_changed_file_and_keeps_the_last_good_one_when_it_breaks(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """check(): a changed file is applied; a broken one changes nothing and counts a failed reload."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600.0) as watch:  # the test drives check() itself
        assert watch.applied == 1
        assert not watch.check()  # unchanged
        _write(path, SECOND)
        assert _look_twice(watch)
        handle = manager.policy("payments")
        assert handle.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        generation = handle.generation
        _write(path, BROKEN)
        assert not _look_twice(watch)
        assert (watch.applied, watch.failed) == (2, 1)
        assert handle.generation == generation
        assert handle.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
    assert _failed_reloads(reader, "payments") == 1


def test_a_watch_on_a_broken_file_refuses_to_start(tmp_path: Path) -> None:
    """A service must not start on a broken configuration: watch() raises at once."""
    path = tmp_path / "resilience.yaml"
    _write(path, BROKEN)
    with pytest.raises(ConfigError, match="failure_threshold"):
        _manager().watch(path)
    with pytest.raises(ValueError, match="interval"):
        _manager().watch(path, interval=0)


@pytest.mark.parametrize(
    ("interval", "error", "message"),
    [
        (math.inf, ValueError, r"^ResilienceManager\.watch\.interval must be a finite duration, got inf$"),
        (1e300, ValueError, r"^ResilienceManager\.watch\.interval must be <= \d+ seconds"),
        (math.nan, ValueError, r"^ResilienceManager\.watch\.interval must be a finite duration"),
        (-1, ValueError, r"^ResilienceManager\.watch\.interval must be > 0 seconds, got -1$"),
        (True, TypeError, r"^ResilienceManager\.watch\.interval must be a duration in seconds"),
        ("2", TypeError, r"^ResilienceManager\.watch\.interval must be a duration in seconds"),
    ],
)
def test_a_watch_interval_its_thread_cannot_wait_is_refused_at_once(
    tmp_path: Path, interval: object, error: type[Exception], message: str
) -> None:
    """An interval the watch thread's wait would refuse (inf, above TIMEOUT_MAX) fails the call, not the thread."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with pytest.raises(error, match=message):
        manager.watch(path, interval=interval)  # type: ignore[arg-type]
    assert manager.apply_config({}) == {}  # nothing was applied: the file is read after the check
    with pytest.raises(KeyError):
        manager.policy("payments")


@pytest.mark.parametrize(
    ("interval", "error"),
    [
        (math.inf, ValueError),
        (math.nan, ValueError),
        (-1, ValueError),
        (0, ValueError),
        (True, TypeError),
        ("2", TypeError),
    ],
)
def test_an_interval_assigned_later_is_checked_as_the_one_given(
    tmp_path: Path, interval: object, error: type[Exception]
) -> None:
    """``watch.interval = ...`` takes what ``watch(path, interval=...)`` takes, a timedelta as seconds.

    It took any value: a ``timedelta`` (which the constructor takes) or a string ended the
    watch thread at its next wait (a ``TypeError`` outside its guarded look), so the watch
    stopped following the file without a word, and ``-1`` made it look without pause.
    """
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    with _manager().watch(path, interval=3600.0) as watch:
        with pytest.raises(error, match=r"^ConfigWatch\.interval must be"):
            watch.interval = interval  # type: ignore[assignment]
        assert watch.interval == 3600.0
        watch.interval = timedelta(minutes=5)
        assert watch.interval == 300.0
        assert watch._thread.is_alive()


def test_a_watch_interval_may_be_a_timedelta(tmp_path: Path) -> None:
    """A timedelta is seconds, as for every duration of the library."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    with _manager().watch(path, interval=timedelta(minutes=5)) as watch:
        assert watch.interval == 300.0
        assert watch._thread.is_alive()


def test_the_watch_thread_applies_changes_by_itself(tmp_path: Path) -> None:
    """With a short interval, the daemon thread picks the change up (generous bound)."""
    import time  # noqa: PLC0415

    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    watch = manager.watch(path, interval=0.01)
    try:
        _write(path, SECOND)
        deadline = time.monotonic() + 10.0
        while watch.applied < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.applied == 2
        assert manager.policy("inventory").config.timeout == 1.0
    finally:
        watch.stop()


def test_the_process_wide_manager_starts_with_the_file_named_by_the_environment(tmp_path: Path) -> None:
    """OTEL_RESILIENCE_CONFIG=path: get_resilience_manager() has the file's named policies."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    code = textwrap.dedent(
        """
        from otel_resilience import get_resilience_manager
        manager = get_resilience_manager()
        print(sorted(manager.policy(n).name for n in ("payments", "search")))
        print(manager.policy("payments").config.circuit_breaker.failure_threshold)
        """
    )
    env = {**os.environ, "OTEL_RESILIENCE_CONFIG": str(path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["['payments', 'search']", "3"]
    _write(path, BROKEN)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "failure_threshold" in done.stderr


BUDGETED = """\
retry_budgets:
  shared: {ratio: 0.2}
policies:
  payments:
    retry: {budget: shared}
  search:
    retry: {budget: shared, max_attempts: 2}
"""


def test_a_watch_of_the_file_applied_at_start_up_reloads_no_policy(tmp_path: Path) -> None:
    """The start-up file (applied, then watched) keeps its budgets: no policy is reloaded, no count lost."""
    path = tmp_path / "resilience.yaml"
    _write(path, BUDGETED)
    manager = _manager()
    handles = manager.apply_config(load(str(path)))  # what get_resilience_manager() does at start-up
    budget = handles["payments"].config.retry_policy.budget  # type: ignore[union-attr]
    assert budget is not None
    budget.deposit()
    with manager.watch(path, interval=3600):  # the same file, named another way
        for name in ("payments", "search"):
            assert handles[name].generation == 1
            assert handles[name].get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
            assert handles[name].config.retry_policy.budget is budget  # type: ignore[union-attr]
        assert budget.get_stats()["first_attempts"] == 1


def _refusing_customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
    """Names ``inventory``'s config otherwise: ``manager.policy("inventory", ...)`` refuses it."""
    return ResilienceConfig(name="not-inventory", timeout=1.0) if name == "inventory" else config


def test_a_file_whose_new_policy_is_refused_changes_no_policy(tmp_path: Path) -> None:
    """All or nothing: payments keeps its config when the new inventory is refused, and the file is retried."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    watch = manager.watch(path, interval=3600, customize=_refusing_customize)
    try:
        _write(path, SECOND)
        assert not _look_twice(watch)
        payments = manager.policy("payments")
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
        assert payments.generation == 1
        assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
        assert "inventory" not in manager._handles
        assert watch.failed == 1
    finally:
        watch.stop()
    with pytest.raises(ValueError, match="not-inventory"):
        manager.apply_config(load(path), customize=_refusing_customize)
    assert manager.policy("payments").generation == 1


def test_a_value_the_loader_refuses_is_counted_for_its_policy_only(tmp_path: Path) -> None:
    """A complete file with a refused value: one refused reload of the file and of that policy."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    watch = manager.watch(path, interval=3600)
    try:
        _write(path, BROKEN)  # refused by the loader (payments' threshold of 0)
        assert not _look_twice(watch)
    finally:
        watch.stop()
    assert manager.policy("payments").get_stats()["reloads"]["failed"] == 1
    assert manager.policy("search").get_stats()["reloads"]["failed"] == 0
    assert watch.failed == 1


def test_the_runbook_reads_the_error_type_a_value_refused_in_a_watched_file_reports(tmp_path: Path) -> None:
    """The ResilienceReloadFailed runbook tells an operator what each error_type means: a value
    out of range in a watched file is reported as the loader's ConfigError, and it must say so."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with EventRecorder() as recorder, manager.watch(path, interval=3600) as watch:
        _write(path, BROKEN)  # payments' threshold of 0: out of range
        assert not _look_twice(watch)
    (error_type,) = {f.error_type for f in recorder.of(Event.RELOAD_FAILED) if isinstance(f, ReloadFailed)}
    runbook = (ROOT / "docs" / "runbooks" / "ResilienceReloadFailed.md").read_text(encoding="utf-8")
    meaning = runbook.partition(f"`{error_type}`")[2].partition(";")[0]
    assert "out of range" in " ".join(meaning.split()), (error_type, meaning)


def test_a_value_the_policy_adapt_refuses_is_a_failed_reload_of_that_policy(tmp_path: Path) -> None:
    """A policy made in code with adapt= (a client's rule) refuses what the file now says: as any
    refusal by the manager, a failed reload of that policy (its count, the alert's series)."""

    def at_most_five_seconds(config: ResilienceConfig) -> ResilienceConfig:
        if config.timeout is not None and config.timeout > 5:
            raise ValueError("this client's calls may not wait over 5 s")
        return config

    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    payments = manager.policy("payments", load(path)["payments"], adapt=at_most_five_seconds)
    with manager.watch(path, interval=3600) as watch:
        _write(path, FIRST.replace("timeout: 2s", "timeout: 10s"))
        assert not _look_twice(watch)
        assert watch.failed == 1
    assert payments.config.timeout == 2.0
    assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 1}
    with pytest.raises(ValueError, match="over 5 s"):
        manager.apply_config({"payments": ResilienceConfig(timeout=10.0)})
    assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 2}


def _break(path: Path, event: str) -> None:
    if event == "deleted":
        path.unlink()
    else:
        _write(path, SECOND[: SECOND.index("inventory") + 5])  # cut mid-key: no YAML


@pytest.mark.parametrize("event", ["deleted", "half-written"])
def test_a_file_seen_deleted_or_half_written_for_one_look_is_neither_applied_nor_reported(
    tmp_path: Path, event: str, caplog: pytest.LogCaptureFixture, reader: InMemoryMetricReader
) -> None:
    """A write in progress, complete at the next look: nothing logged, nothing counted, no policy
    reports a failed reload (nothing to alert on); the complete file applies once it is stable."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:  # the test drives check() itself
        caplog.clear()
        with caplog.at_level("WARNING", logger="otel_resilience"):
            _break(path, event)
            assert not watch.check()
            _write(path, SECOND)  # the complete version, before the next look
            assert _look_twice(watch)
        # An earlier test's manager kept alive (an app held by a library's cache) with a policy
        # of this file's names is told of once, when this manager makes it: not the watch's.
        logged = [
            r.getMessage() for r in caplog.records if "another live ResilienceManager" not in r.getMessage()
        ]
        assert logged == [], logged
        assert (watch.applied, watch.failed) == (2, 0)
        for name in ("payments", "search"):
            assert manager.policy(name).get_stats()["reloads"]["failed"] == 0
        assert _failed_reloads(reader) == 0
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert manager.policy("inventory").config.timeout == 1.0


@pytest.mark.parametrize("event", ["deleted", "half-written"])
def test_a_file_left_deleted_or_broken_is_a_failed_reload_of_every_policy_once(
    tmp_path: Path, event: str, reader: InMemoryMetricReader
) -> None:
    """Still missing (or unparseable) at the next look: one refused reload of the file, and every
    policy of the last good file reports a failed reload once (each one's configuration is stale:
    the alert's signal); no more after."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        _break(path, event)
        assert not watch.check()
        assert _failed_reloads(reader) == 0
        assert not watch.check()  # the same broken file a look later
        assert not watch.check()  # reported once
        assert (watch.applied, watch.failed) == (1, 1)
        for name in ("payments", "search"):
            assert manager.policy(name).get_stats()["reloads"] == {"succeeded": 0, "failed": 1}
        assert _failed_reloads(reader) == 2
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
        _write(path, SECOND)
        assert _look_twice(watch)
        assert (watch.applied, watch.failed) == (2, 1)
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)


def test_the_watch_outlives_an_error_of_a_look(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A look that raises is logged; the thread watches on and applies the next change."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    watch = manager.watch(path, interval=0.01)
    looks: list[int] = []
    real = watch.check

    def failing_once() -> bool:
        looks.append(1)
        if len(looks) == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return real()

    monkeypatch.setattr(watch, "check", failing_once)
    try:
        _write(path, SECOND)
        for _ in range(2000):  # bounded: at most 20 s of 10 ms looks
            if watch.applied == 2:
                break
            watch._stop.wait(0.01)
        assert watch._thread.is_alive()
        assert watch.applied == 2
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
    finally:
        watch.stop()


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A Latin-1 byte is a ConfigError naming the file (a bare UnicodeDecodeError named nothing)."""
    path = tmp_path / "resilience.yaml"
    path.write_bytes("# caf\xe9\npolicies: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"resilience\.yaml: is not UTF-8 text: byte 0xe9"):
        load(path)


def _config_map(folder: Path, version: str, text: str) -> None:
    """Publish ``text`` as Kubernetes does a ConfigMap: a new folder, then ``..data`` swapped to it.

    Every file gets the same modification time, as in a store that normalises it (Nix, images
    built reproducibly): only the file behind the link is new.
    """
    data = folder / f"..{version}"
    data.mkdir()
    (data / "resilience.yaml").write_text(text)
    os.utime(data / "resilience.yaml", ns=(1_000_000_000, 1_000_000_000))
    (folder / "..data_tmp").symlink_to(data.name)
    (folder / "..data_tmp").replace(folder / "..data")
    if not (folder / "resilience.yaml").is_symlink():
        (folder / "resilience.yaml").symlink_to(Path("..data") / "resilience.yaml")


def test_a_watch_sees_the_file_behind_a_swapped_link_even_of_the_same_size_and_time(tmp_path: Path) -> None:
    """A ConfigMap update swaps the ``..data`` link: another file, seen though size and mtime match."""
    _config_map(tmp_path, "v1", FIRST)
    manager = _manager()
    with manager.watch(tmp_path / "resilience.yaml", interval=3600) as watch:
        _config_map(tmp_path, "v2", FIRST.replace("failure_threshold: 3", "failure_threshold: 7"))
        assert _look_twice(watch)
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=7)


def test_a_watch_of_a_linked_file_applied_at_start_up_reloads_no_policy_after_a_swap(tmp_path: Path) -> None:
    """The file is known by the path it was applied under, not by the target a link swap changes."""
    _config_map(tmp_path, "v1", BUDGETED)
    manager = _manager()
    handles = manager.apply_config(load(tmp_path / "resilience.yaml"))  # at start-up
    _config_map(tmp_path, "v2", BUDGETED)  # another key of the ConfigMap changed: this file did not
    with manager.watch(tmp_path / "resilience.yaml", interval=3600):
        for name in ("payments", "search"):
            assert handles[name].generation == 1
            assert handles[name].get_stats()["reloads"] == {"succeeded": 0, "failed": 0}


def test_two_watches_of_one_file_reload_a_changed_budget_once(tmp_path: Path) -> None:
    """The second watch loads with the budgets in force: its look finds nothing to reload."""
    path = tmp_path / "resilience.yaml"
    _write(path, BUDGETED)
    manager = _manager()
    with manager.watch(path, interval=3600) as first, manager.watch(path, interval=3600) as second:
        payments = manager.policy("payments")
        _write(path, BUDGETED.replace("ratio: 0.2", "ratio: 0.3"))
        assert _look_twice(first)
        budget = payments.config.retry_policy.budget  # type: ignore[union-attr]
        _look_twice(second)
        assert payments.generation == 2
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 0}
        assert payments.config.retry_policy.budget is budget  # type: ignore[union-attr]


def test_a_check_while_the_watch_thread_applies_the_change_waits_for_it(tmp_path: Path) -> None:
    """check() and the thread's look are one at a time: a change is applied once, never an older file after."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    applying, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        if name == "payments":
            calls.append(threading.current_thread().name)
            if len(calls) == 2:  # the change, applied by the watch's thread: held there
                applying.set()
                release.wait(10.0)
        return config

    manager = _manager()
    watch = manager.watch(path, interval=0.01, customize=customize)
    try:
        _write(path, SECOND)
        assert applying.wait(10.0)
        results: list[bool] = []
        checker = threading.Thread(target=lambda: results.append(watch.check()))
        checker.start()
        checker.join(0.2)  # unchanged code: it applies the same change a second time meanwhile
        release.set()
        checker.join(10.0)
        assert results == [False]  # the thread applied it; nothing is left to apply
        assert watch.applied == 2
        assert len(calls) == 2
    finally:
        release.set()
        watch.stop()


def test_a_customize_that_is_not_callable_is_refused_at_once_naming_it(tmp_path: Path) -> None:
    """Refused before anything is applied, even by a file without policies (no call would find it)."""
    path = tmp_path / "resilience.yaml"
    _write(path, "policies: {}\n")
    manager = _manager()
    with pytest.raises(
        TypeError, match=r"^ResilienceManager\.apply_config\.customize must be callable or None"
    ):
        manager.apply_config({}, customize=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^ResilienceManager\.watch\.customize must be callable or None"):
        manager.watch(path, customize="payments")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^ResilienceManager\.apply_config\.customize must be callable"):
        manager.apply_config({"payments": ResilienceConfig()}, customize=5)  # type: ignore[arg-type]
    assert "payments" not in manager._handles
    assert manager.policy("payments", ResilienceConfig()).get_stats()["reloads"]["failed"] == 0


def test_a_customize_that_cannot_take_a_name_and_a_config_is_refused_at_once_naming_it(
    tmp_path: Path,
) -> None:
    """``customize`` is called as ``customize(name, config)``: one that cannot take both is refused when
    given, naming it (was: taken while the file had no policy, then every change failed to apply with
    Python's ``<lambda>() takes 1 positional argument but 2 were given``, naming no argument)."""
    path = tmp_path / "resilience.yaml"
    _write(path, "policies: {}\n")
    manager = _manager()
    for customize in (lambda config: config, lambda: None, lambda name, config, extra: config):
        with pytest.raises(
            TypeError,
            match=r"^ResilienceManager\.watch\.customize must be callable as customize\(name, config\)",
        ):
            manager.watch(path, customize=customize)
        with pytest.raises(
            TypeError,
            match=r"^ResilienceManager\.apply_config\.customize must be callable as customize\(name, config\)",
        ):
            manager.apply_config({}, customize=customize)
    manager.apply_config({}, customize=lambda name, config, *rest: config)


def test_a_watch_path_that_names_no_file_is_refused_at_once_naming_it() -> None:
    """A TypeError naming path, as load(path) words it (was: os.fspath's, naming no argument)."""
    manager = _manager()
    for path in (1, None, b"resilience.yaml"):
        with pytest.raises(
            TypeError, match=r"^ResilienceManager\.watch\.path must be a str or an os\.PathLike of one, got "
        ):
            manager.watch(path)  # type: ignore[arg-type]


def test_a_customize_that_returns_no_config_is_named_in_the_refusal() -> None:
    """A customize that forgets its return: the TypeError names customize and the policy, for a new
    policy and a changed one alike (was: ``ResilienceManager.policy.config`` or
    ``ResilienceManager.reconfigure.config``, arguments the caller never passed), and is a failed
    reload of that policy; a returned coroutine is closed, nothing changed."""

    def forgets(_name: str, _config: ResilienceConfig) -> None:
        """Meant to add what the file cannot express, and forgets to return the config."""

    async def later(config: ResilienceConfig) -> ResilienceConfig:
        return config

    manager = _manager()
    first = loads(FIRST)
    message = r"^customize\('payments', config\) returned None; it must return a ResilienceConfig$"
    with pytest.raises(TypeError, match=message):
        manager.apply_config(first, customize=forgets)  # type: ignore[arg-type] # a new policy
    assert "payments" not in manager._handles
    payments = manager.apply_config(first)["payments"]
    second = loads(SECOND)
    with pytest.raises(TypeError, match=message):
        manager.apply_config(second, customize=forgets)  # type: ignore[arg-type] # a changed one
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine left open warns when it is freed
        with pytest.raises(TypeError, match=r"^customize\('payments', config\) returned <coroutine"):
            manager.apply_config(second, customize=lambda _name, config: later(config))  # type: ignore[arg-type,return-value]
        gc.collect()
    assert (payments.generation, payments.config) == (1, first["payments"])
    assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 2}
    assert "inventory" not in manager._handles


TRUNCATED = SECOND[: SECOND.index("    timeout: 2s")]
"""The first chunk of a save of SECOND: valid YAML, a valid file, with fewer keys (payments without its timeout)."""


def test_a_file_caught_half_written_is_not_applied_even_when_it_parses(tmp_path: Path) -> None:
    """An editor saving in two chunks: the first one, though a valid file, is never applied; the
    complete file is, once a look finds it unchanged since the previous one."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:  # the test drives check() itself
        payments = manager.policy("payments")
        _write(path, TRUNCATED)
        assert not watch.check()  # new: not applied yet
        assert (payments.generation, payments.config.timeout) == (1, 2.0)
        _write(path, SECOND)  # the rest of the save, before the next look
        assert not watch.check()  # changed since the last look: still not stable
        assert (payments.generation, payments.config.timeout) == (1, 2.0)
        assert watch.check()  # unchanged over two looks: applied
        assert payments.generation == 2
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert payments.config.timeout == 2.0
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 0}
        assert (watch.applied, watch.failed) == (2, 0)


def test_a_rewrite_the_file_stamp_misses_is_applied_only_once_its_content_is_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coarse clock: two writes with the same size, times and inode; the content tells them apart."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        monkeypatch.setattr(watch, "_look", lambda: (1, 2, 3, 4, 5))  # one stamp, not the applied file's
        payments = manager.policy("payments")
        _write(path, TRUNCATED)
        assert not watch.check()
        _write(path, SECOND)  # the same stamp, another content
        assert not watch.check()
        assert (payments.generation, payments.config.timeout) == (1, 2.0)
        assert watch.check()
        assert payments.generation == 2
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert not watch.check()  # the same stamp as applied: nothing new


def test_a_watch_reads_a_file_in_the_format_it_is_given(tmp_path: Path) -> None:
    """format= is load()'s: a file whose name says no format (policies.conf) can be watched."""
    path = tmp_path / "policies.conf"
    _write(path, FIRST)
    manager = _manager()
    with pytest.raises(
        ConfigError, match=r"policies\.conf: has no known suffix .*: pass format='yaml' or 'toml'"
    ):
        manager.watch(path, interval=3600)
    with manager.watch(path, interval=3600, format="yaml") as watch:
        assert watch.format == "yaml"
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
        _write(path, SECOND)
        assert _look_twice(watch)
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
    toml = tmp_path / "policies.cfg"
    _write(toml, "[policies.payments.circuit_breaker]\nfailure_threshold = 4\n")
    with manager.watch(toml, interval=3600, format="toml") as watch:
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=4)
    named = tmp_path / "resilience.toml"
    _write(named, "[policies.payments.circuit_breaker]\nfailure_threshold = 6\n")
    with manager.watch(named, interval=3600) as watch:  # by default, the format the suffix says
        assert watch.format == "toml"
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=6)


@pytest.mark.parametrize("value", ["ini", "", "YAML", 5])
def test_a_watch_format_the_loader_does_not_read_is_refused_at_once_naming_it(
    tmp_path: Path, value: object
) -> None:
    """A ValueError naming format before the file is read, as load(format=...) refuses it."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with pytest.raises(ValueError, match=r"^ResilienceManager\.watch\.format must be 'yaml' or 'toml', got "):
        manager.watch(path, interval=3600, format=value)  # type: ignore[arg-type]
    assert "payments" not in manager._handles
    with pytest.raises(ValueError, match=r"^format must be 'yaml' or 'toml', got "):
        load(path, format=value)  # type: ignore[arg-type]


def test_a_watch_of_a_relative_path_follows_its_file_after_the_process_changes_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file watched is the one the path named when the watch began: a service that changes its
    working directory afterwards (a daemon's chdir("/")) keeps following it (was: the path was read
    against the new directory at each look, so the file looked deleted, every policy reported a
    failed reload, and a file of that name there would have been applied in its place)."""
    (tmp_path / "service").mkdir()
    (tmp_path / "elsewhere").mkdir()
    _write(tmp_path / "elsewhere" / "resilience.yaml", BROKEN)  # another file of the same name
    monkeypatch.chdir(tmp_path / "service")
    path = Path("resilience.yaml")
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert not _look_twice(watch)  # nothing changed
        _write(tmp_path / "service" / "resilience.yaml", SECOND)
        assert _look_twice(watch)
        assert (watch.applied, watch.failed) == (2, 0)
        payments = manager.policy("payments")
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 0}
        assert watch.path == path  # as given


def test_a_refused_file_is_logged_with_the_file_read_and_the_error_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The watch's warning names the file it reads (absolute: a relative path given is read where
    the watch began, whatever directory the process is in now) and the error's type (was: the path
    as given, ``resilience.yaml``, which named another file once the process changed directory,
    and the bare message, ``'cache_service'`` for a ``KeyError``, which says nothing of why)."""
    (tmp_path / "service").mkdir()
    (tmp_path / "elsewhere").mkdir()
    _write(tmp_path / "elsewhere" / "resilience.yaml", BROKEN)  # another file of the same name
    monkeypatch.chdir(tmp_path / "service")
    _write(Path("resilience.yaml"), FIRST)
    refuse: list[str] = []

    def customize(_name: str, config: ResilienceConfig) -> ResilienceConfig:
        if refuse:
            raise KeyError(refuse[0])
        return config

    manager = _manager()
    with manager.watch("resilience.yaml", interval=3600, customize=customize) as watch:
        monkeypatch.chdir(tmp_path / "elsewhere")
        refuse.append("cache_service")
        _write(tmp_path / "service" / "resilience.yaml", SECOND)
        caplog.clear()
        with caplog.at_level("WARNING", logger="otel_resilience"):
            assert not _look_twice(watch)
    (record,) = [r for r in caplog.records if r.name == "otel_resilience"]
    service_file = tmp_path / "service" / "resilience.yaml"
    assert record.getMessage() == (
        f"configuration file {service_file} refused, the last good one stays: KeyError: 'cache_service'"
    )


def test_a_path_with_a_nul_character_is_refused_naming_it() -> None:
    """No file has such a name: a ValueError naming the path, before any look (was: the bare
    ``embedded null byte`` of the operating system's call, naming no argument)."""
    manager = _manager()
    with pytest.raises(ValueError, match=r"^ResilienceManager\.watch\.path must be a path without NUL, got "):
        manager.watch("resilience\x00.yaml")
    with pytest.raises(ValueError, match=r"^load\.path must be a path without NUL, got "):
        load("resilience\x00.yaml")


def test_a_good_file_put_back_after_a_refused_one_counts_a_succeeded_reload(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """The last good file restored as it was (a revert): each policy its refusal was reported
    for counts a succeeded reload, though its config did not change, so the runbook's check
    (`succeeded` grew after the failure) sees the recovery (was: nothing counted)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        payments, search = manager.policy("payments"), manager.policy("search")
        _write(path, BROKEN)  # payments' threshold of 0: refused for payments
        assert not _look_twice(watch)
        _write(path, FIRST)
        assert _look_twice(watch)
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
        assert payments.generation == 1  # nothing to reload: the file's config is in force
        assert search.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
        path.unlink()  # a file refused as a whole: every policy of the last good file
        assert not _look_twice(watch)
        _write(path, FIRST)
        assert _look_twice(watch)
        assert payments.get_stats()["reloads"] == {"succeeded": 2, "failed": 2}
        assert search.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
        _write(path, FIRST + "\n")  # applied again with no refusal between: nothing owed
        assert _look_twice(watch)
        assert payments.get_stats()["reloads"] == {"succeeded": 2, "failed": 2}
    assert _reloads(reader, "succeeded") == {"payments": 2, "search": 1}


def test_a_file_applied_after_a_refused_one_counts_a_succeeded_reload_of_a_policy_it_no_longer_names(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """A file refused as a whole is reported for every policy of the last good file; the next file
    applied ends the refusal for each of them, one it no longer names (left as it is) included, so
    the runbook's check (`succeeded` grew after the failure) sees it end (was: that policy's
    refusal was never followed by a succeeded reload)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        payments, search = manager.policy("payments"), manager.policy("search")
        path.unlink()  # refused as a whole: reported for payments and search
        assert not _look_twice(watch)
        assert search.get_stats()["reloads"] == {"succeeded": 0, "failed": 1}
        _write(path, "policies:\n  payments:\n    circuit_breaker: {failure_threshold: 4}\n")
        assert _look_twice(watch)
        assert not watch.stale
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
        assert search.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
        assert search.generation == 1  # left as it is: the file no longer names it
        _write(path, "policies:\n  payments:\n    circuit_breaker: {failure_threshold: 5}\n")
        assert _look_twice(watch)  # no refusal between: nothing owed
        assert search.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
    assert _reloads(reader, "succeeded") == {"payments": 2, "search": 1}


def _reloads(reader: InMemoryMetricReader, outcome: str) -> dict[str, int]:
    """The ``resilience.reload`` points of ``outcome``, by policy."""
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str(point.attributes["resilience.policy"]): int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.reload"
        for point in metric.data.data_points
        if point.attributes.get("resilience.reload.outcome") == outcome and point.value
    }


def _stale(reader: InMemoryMetricReader) -> dict[str, int]:
    """The ``resilience.config.stale`` points, by file."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        str(point.attributes["resilience.config.file"]): int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "resilience.config.stale"
        for point in metric.data.data_points
    }


def test_a_file_left_refused_is_reported_stale_until_a_good_one_applies(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """A refused file is counted once, but the gauge stays 1 for as long as the file in force is
    not the one on disk (was: nothing told an alert the configuration was still stale once the
    failed count stopped growing); 0 once a file applies; no series once the watch stops."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    key = os.path.abspath(path)  # noqa: PTH100 - the path the watch names, links not followed
    with manager.watch(path, interval=3600) as watch:
        assert _stale(reader) == {key: 0}
        _write(path, BROKEN)
        assert not watch.check()
        assert _stale(reader) == {key: 0}  # a change seen once is no refusal yet
        assert not watch.check()
        for _ in range(3):  # left broken: reported once, stale at every collection
            assert not watch.check()
            assert _stale(reader) == {key: 1}
        assert watch.failed == 1
        path.unlink()
        assert not _look_twice(watch)
        assert _stale(reader) == {key: 1}
        _write(path, SECOND)
        assert _look_twice(watch)
        assert _stale(reader) == {key: 0}
    assert _stale(reader) == {}


def test_a_rewrite_within_the_timestamp_tick_of_the_last_read_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem with coarse timestamps: a rewrite of the same size in the tick the file was
    read in keeps its stamp. As git's racily clean entries, a file whose modification time is
    too close to the time it was read is read again at each look until it no longer is (was:
    such a rewrite was never applied)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        tick = time.time_ns()  # every write lands in this tick: one stamp
        monkeypatch.setattr(watch, "_look", lambda: (len(FIRST), tick, 1, 2, tick))
        assert not watch.check()  # the stamp is new, the content the one applied: kept, nothing applied
        payments = manager.policy("payments")
        assert not watch.check()  # re-read: the same content, nothing new
        _write(path, FIRST.replace("failure_threshold: 3", "failure_threshold: 4"))  # the same size
        assert _look_twice(watch)
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=4)
        assert (payments.generation, watch.applied, watch.failed) == (2, 2, 0)
        assert not watch.check()


def test_a_file_read_well_after_it_was_written_is_not_read_again_while_its_stamp_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The racily clean check costs a read only while the file's time is close to its read."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        old = time.time_ns() - 60 * 10**9
        monkeypatch.setattr(watch, "_look", lambda: (len(FIRST), old, 1, 2, old))
        assert not watch.check()  # a new stamp, the content applied: the stamp kept
        reads: list[None] = []
        read = watch._read
        monkeypatch.setattr(watch, "_read", lambda: reads.append(None) or read())
        assert not watch.check()
        assert reads == []


def test_a_good_file_put_back_after_the_manager_refused_one_counts_each_policy_it_changed(
    tmp_path: Path,
) -> None:
    """All or nothing: a file the manager refused (its new inventory) left every policy it changed
    on its old config; the last good file put back counts a succeeded reload of each of them."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600, customize=_refusing_customize) as watch:
        payments, search = manager.policy("payments"), manager.policy("search")
        _write(path, SECOND)  # payments changed, inventory refused
        assert not _look_twice(watch)
        assert watch.stale
        _write(path, FIRST)
        assert _look_twice(watch)
        assert not watch.stale
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 0}
        assert search.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}  # SECOND left it as it was
        assert payments.generation == 1


class _WritingClock(FakeClock):
    """A fake clock on which a writer finishes its save while the watch waits (its first sleep)."""

    def __init__(self, finish: Callable[[], None]) -> None:
        super().__init__()
        self._finish: Callable[[], None] | None = finish

    def sleep_sync(self, seconds: float) -> None:
        super().sleep_sync(seconds)
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()


def test_a_watch_never_starts_on_a_file_caught_half_written_even_when_it_parses(tmp_path: Path) -> None:
    """The first load waits for the file to settle as every later one does: the first chunk of a
    save (a valid file with fewer keys) is not applied, the complete file is (was: applied at once,
    payments without its timeout and no inventory until the next look)."""
    path = tmp_path / "resilience.yaml"
    _write(path, TRUNCATED)  # just written: a writer may still be at work
    clock = _WritingClock(lambda: _write(path, SECOND))
    manager = ResilienceManager(clock=clock)
    with manager.watch(path, interval=3600) as watch:
        payments = manager.policy("payments")
        assert (payments.generation, payments.config.timeout) == (1, 2.0)
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert manager.policy("inventory").config.timeout == 1.0
        assert (watch.applied, watch.failed) == (1, 0)
        assert 0 < sum(clock.sleeps) <= 2 * RACY_WINDOW_NS / 1e9  # up to the racy window, not an interval
        assert not _look_twice(watch)  # nothing new: the file applied is the one on disk


def test_a_watch_never_starts_refused_on_a_file_caught_half_written(tmp_path: Path) -> None:
    """A save caught mid-key (no YAML) at start-up: watch() waits for it instead of raising."""
    path = tmp_path / "resilience.yaml"
    _write(path, SECOND[: SECOND.index("inventory") + 5])
    manager = ResilienceManager(clock=_WritingClock(lambda: _write(path, SECOND)))
    with manager.watch(path, interval=3600) as watch:
        assert manager.policy("inventory").config.timeout == 1.0
        assert (watch.applied, watch.failed) == (1, 0)


@pytest.mark.parametrize(
    "chunk",
    [TRUNCATED, SECOND[: SECOND.index("inventory") + 5]],
    ids=["a-valid-file-with-fewer-keys", "no-yaml-yet"],
)
def test_the_start_up_manager_never_starts_on_a_file_caught_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: str
) -> None:
    """The file OTEL_RESILIENCE_CONFIG names is loaded at start-up under the rule of a watch's first
    load: a save caught at its first chunk is waited for, neither applied (was: payments without its
    timeout and no inventory, for good: no watch corrects it) nor refused (was: ConfigError)."""
    path = tmp_path / "resilience.yaml"
    _write(path, chunk)  # just written: a writer may still be at work
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    clock = _WritingClock(lambda: _write(path, SECOND))
    manager = new_default_manager(clock)
    payments = manager.policy("payments")
    assert (payments.generation, payments.config.timeout) == (1, 2.0)
    assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
    assert manager.policy("inventory").config.timeout == 1.0
    assert 0 < sum(clock.sleeps) <= RACY_WINDOW_NS / 1e9


def test_the_start_up_file_untouched_for_the_racy_window_is_loaded_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start-up file whose times are older than the racy window is settled: no wait."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    old = time.time_ns() - 60 * 10**9
    monkeypatch.setattr(watch_module._Looker, "_look", lambda _: (len(FIRST), old, 1, 2, old))
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    clock = FakeClock()
    with fresh_defaults(clock=clock) as manager:
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
    assert clock.sleeps == []


def test_a_start_up_file_just_written_costs_one_short_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start-up file written just before the service starts (an entry point that renders it) and
    unchanged since is loaded after one look START_UP_LOOK_INTERVAL (0.1 s) later, not a watch's
    interval (2 s): the first call of the service waits for it."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    monkeypatch.setenv("OTEL_RESILIENCE_CONFIG", str(path))
    clock = FakeClock()
    with fresh_defaults(clock=clock) as manager:
        assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
    assert clock.sleeps == [watch_module.START_UP_LOOK_INTERVAL] == [0.1]


class _GatedClock(FakeClock):
    """A fake clock whose first sleep lasts until the event loop wakes it (a writer finishing its save)."""

    def __init__(self, finish: Callable[[], None]) -> None:
        super().__init__()
        self._finish = finish
        self.asleep = threading.Event()
        self.wake = threading.Event()

    def sleep_sync(self, seconds: float) -> None:
        super().sleep_sync(seconds)
        if self.asleep.is_set():
            return
        self.asleep.set()
        if not self.wake.wait(10):  # generous: only a blocked loop never wakes it
            raise AssertionError("the event loop did not run while the first load waited")
        self._finish()


def test_a_watch_started_in_a_coroutine_lets_the_loop_run_while_its_first_load_waits(tmp_path: Path) -> None:
    """An async start-up: `await manager.watch_async(path)` waits for a file being saved in a worker
    thread, so the event loop runs on meanwhile (watch() there would block it up to 3 s), and
    returns the watch with the complete file applied, as watch() does."""
    path = tmp_path / "resilience.yaml"
    _write(path, TRUNCATED)  # just written: a writer may still be at work
    clock = _GatedClock(lambda: _write(path, SECOND))
    manager = ResilienceManager(clock=clock)

    async def start_up() -> ConfigWatch:
        started = asyncio.ensure_future(manager.watch_async(path, interval=3600))
        await asyncio.to_thread(clock.asleep.wait, 10)
        clock.wake.set()  # from the loop: it runs while the first load waits
        return await started

    with asyncio.run(start_up()) as watch:
        assert manager.policy("payments").config.timeout == 2.0
        assert manager.policy("inventory").config.timeout == 1.0
        assert (watch.applied, watch.failed) == (1, 0)
        assert watch._thread.is_alive()


def test_a_watch_started_in_a_coroutine_cancelled_while_it_waits_is_stopped(tmp_path: Path) -> None:
    """Cancelled during its first load, `watch_async` leaves no watch running: the one the worker
    thread still makes is stopped as soon as it is made."""
    path = tmp_path / "resilience.yaml"
    _write(path, TRUNCATED)
    clock = _GatedClock(lambda: _write(path, SECOND))
    manager = ResilienceManager(clock=clock)
    made: list[ConfigWatch] = []
    real = manager.watch

    def watch(*args: object, **kwargs: object) -> ConfigWatch:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    manager.watch = watch  # type: ignore[method-assign]

    async def start_up() -> None:
        started = asyncio.ensure_future(manager.watch_async(path, interval=3600))
        await asyncio.to_thread(clock.asleep.wait, 10)
        started.cancel()
        with pytest.raises(asyncio.CancelledError):
            await started
        clock.wake.set()
        deadline = time.monotonic() + 30  # the worker thread ends its first load (generous)
        while not (made and not made[0]._thread.is_alive()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(start_up())
    assert len(made) == 1
    assert not made[0]._thread.is_alive()
    assert made[0]._stop.is_set()


def test_a_watch_started_in_a_coroutine_whose_loop_cancels_every_task_while_it_waits_is_stopped(
    tmp_path: Path,
) -> None:
    """Every task of the loop cancelled during `watch_async`'s first load (as `asyncio.run` does at its
    end, or a server shutting down), the worker thread's own included: the watch that thread still
    makes is stopped as soon as it is made, as for a caller cancelled alone."""
    path = tmp_path / "resilience.yaml"
    _write(path, TRUNCATED)
    clock = _GatedClock(lambda: _write(path, SECOND))
    manager = ResilienceManager(clock=clock)
    made: list[ConfigWatch] = []
    real = manager.watch

    def watch(*args: object, **kwargs: object) -> ConfigWatch:
        made.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    manager.watch = watch  # type: ignore[method-assign]

    async def start_up() -> None:
        started = asyncio.ensure_future(manager.watch_async(path, interval=3600))
        await asyncio.to_thread(clock.asleep.wait, 10)
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert started in others
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        clock.wake.set()  # the worker thread ends its first load only now

    asyncio.run(start_up())  # its end waits for the worker thread
    try:
        assert len(made) == 1
        made[0]._thread.join(10)  # generous: a stopped watch's thread ends at once
        assert made[0]._stop.is_set()
        assert not made[0]._thread.is_alive()
    finally:
        for watch_made in made:
            watch_made.stop()


def test_watch_async_refuses_bad_arguments_naming_them(tmp_path: Path) -> None:
    """Its arguments are watch()'s, refused as there (the error raised by the await)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with pytest.raises(ValueError, match=r"^ResilienceManager\.watch\.interval must be"):
        asyncio.run(manager.watch_async(path, interval=0))


class _RewritingClock(FakeClock):
    """A fake clock on which a process rewrites the file in place at every sleep (a render loop)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path

    def sleep_sync(self, seconds: float) -> None:
        super().sleep_sync(seconds)
        _write(self._path, FIRST if len(self.sleeps) % 2 else SECOND)


def test_a_watch_of_a_file_rewritten_at_every_look_starts_after_the_racy_window(tmp_path: Path) -> None:
    """A start-up waits for a save, not for good: a file still rewritten after the racy window of
    waits is loaded as last read (was: watch() never returned)."""
    path = tmp_path / "resilience.yaml"
    _write(path, SECOND)
    clock = _RewritingClock(path)
    manager = ResilienceManager(clock=clock)
    with manager.watch(path, interval=0.5) as watch:
        assert watch.applied == 1
        assert sum(clock.sleeps) == pytest.approx(RACY_WINDOW_NS / 1e9)
        assert manager.policy("inventory").config.timeout == 1.0  # SECOND: the last one written
    assert len(clock.sleeps) == 6


def test_a_watch_of_a_file_untouched_for_the_racy_window_starts_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose times are older than the racy window is settled: no wait at start-up."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    old = time.time_ns() - 60 * 10**9
    monkeypatch.setattr(ConfigWatch, "_look", lambda _: (len(FIRST), old, 1, 2, old))
    clock = FakeClock()
    with ResilienceManager(clock=clock).watch(path, interval=3600) as watch:
        assert watch.applied == 1
    assert clock.sleeps == []


def test_a_watch_waits_one_short_interval_for_a_file_just_written(tmp_path: Path) -> None:
    """The start-up wait is one interval when that is shorter than the racy window."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    clock = FakeClock()
    with ResilienceManager(clock=clock).watch(path, interval=0.05) as watch:
        assert watch.applied == 1
    assert clock.sleeps == [0.05]


def test_a_watch_of_a_missing_file_is_refused_at_once(tmp_path: Path) -> None:
    """Nothing to wait for: a missing file raises without a wait."""
    clock = FakeClock()
    with pytest.raises(FileNotFoundError):
        ResilienceManager(clock=clock).watch(tmp_path / "resilience.yaml", interval=3600)
    assert clock.sleeps == []


def test_a_changed_file_refused_as_unreadable_is_applied_once_it_can_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read that failed for two looks (a process out of file descriptors, EMFILE) is one refused
    reload; once the same file can be read it is applied, though its stamp did not change (was:
    its stamp, never read, was trusted: the new file never applied, the watch stale for good)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        _write(path, SECOND)
        old = time.time_ns() - 60 * 10**9  # written well before the looks: its stamp is not racy
        monkeypatch.setattr(watch, "_look", lambda: (len(SECOND), old, 1, 2, old))
        read = watch._read
        monkeypatch.setattr(watch, "_read", lambda: OSError(24, "Too many open files"))
        assert not _look_twice(watch)
        assert (watch.applied, watch.failed, watch.stale) == (1, 1, True)
        monkeypatch.setattr(watch, "_read", read)
        assert _look_twice(watch)
        assert (watch.applied, watch.failed, watch.stale) == (2, 1, False)
        assert manager.policy("inventory").config.timeout == 1.0
        assert not watch.check()  # read and applied: its stamp is trusted again


def test_a_stopped_watch_applies_nothing(tmp_path: Path) -> None:
    """stop(): the policies keep their configs; a check() after it changes none (was: applied the
    changed file, payments' breaker at 5 after the watch was stopped)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        pass
    _write(path, SECOND)
    assert not _look_twice(watch)
    assert manager.policy("payments").config.circuit_breaker == CircuitBreakerConfig(failure_threshold=3)
    assert "inventory" not in manager._handles
    assert (watch.applied, watch.failed) == (1, 0)


def test_stop_waits_for_a_check_under_way_in_another_thread(tmp_path: Path) -> None:
    """A check() applying the file in another thread when stop() is called has ended once stop()
    returns: no policy changes after it (was: stop() returned, the file was applied later)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    applying, release = threading.Event(), threading.Event()

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        if name == "inventory":  # only SECOND names it: the change, held while it is applied
            applying.set()
            release.wait(10.0)
        return config

    manager = _manager()
    watch = manager.watch(path, interval=3600, customize=customize)
    _write(path, SECOND)
    assert not watch.check()
    checker = threading.Thread(target=watch.check)
    checker.start()
    try:
        assert applying.wait(10.0)
        stopped: list[int] = []
        stopper = threading.Thread(target=lambda: (watch.stop(), stopped.append(watch.applied)))
        stopper.start()
        stopper.join(0.2)  # unchanged code: stop() returns while the file is still being applied
        release.set()
        stopper.join(10.0)
        checker.join(10.0)
        assert stopped == [2]  # stop() returned once the change under way was applied
    finally:
        release.set()
        watch.stop()


def test_a_customize_may_stop_the_watch_whose_check_calls_it(tmp_path: Path) -> None:
    """stop() from within the check() under way returns (no deadlock on its own look)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    watches: list[ConfigWatch] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        if name == "inventory" and watches:
            watches[0].stop()
        return config

    manager = _manager()
    watches.append(manager.watch(path, interval=3600, customize=customize))
    _write(path, SECOND)
    assert _look_twice(watches[0])  # the look under way finishes
    assert not watches[0]._thread.is_alive()
    assert not watches[0].check()


class _GatedLook:
    """A watch's look lock whose own thread waits at a gate, then says it asks for the lock."""

    def __init__(self, watch: ConfigWatch) -> None:
        self._watch = watch
        self._lock = watch._checking
        self.gate = threading.Event()
        self.asking = threading.Event()

    def __enter__(self) -> object:
        if threading.current_thread() is self._watch._thread:
            self.gate.wait(10.0)
            self.asking.set()
        return self._lock.__enter__()

    def __exit__(self, *_: object) -> None:
        self._lock.release()


def test_a_customize_may_stop_the_watch_while_its_thread_waits_for_the_look_under_way(
    tmp_path: Path,
) -> None:
    """stop() from a customize of a caller's check(), while the watch's thread waits for that look
    to end, returns, and the thread ends once the look is over (was: stop() waited for the
    thread, which waited for the look that called stop(): both hung for good)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    watches: list[ConfigWatch] = []
    gated: list[_GatedLook] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        if name == "inventory" and watches and threading.current_thread() is not watches[0]._thread:
            gated[0].gate.set()  # the watch's thread now asks for the lock this look holds
            assert gated[0].asking.wait(10.0)
            watches[0].stop()
        return config

    manager = _manager()
    watch = manager.watch(path, interval=0.01, customize=customize)
    gated.append(_GatedLook(watch))
    watch._checking = gated[0]  # type: ignore[assignment] # the lock, with a gate for the thread
    watches.append(watch)
    _write(path, SECOND)
    looked: list[bool] = []
    # Two looks apply the change (the first, if the thread's look just before the gate saw it)
    checker = threading.Thread(target=lambda: looked.append(watch.check() or watch.check()), daemon=True)
    checker.start()
    checker.join(10.0)
    assert not checker.is_alive(), "stop() from a customize hung"
    assert looked == [True]  # the look under way finished
    assert not watch._thread.is_alive()  # and waited for the thread, once it could end
    assert manager.policy("inventory").config.timeout == 1.0
    assert not watch.check()


def test_last_error_says_why_the_file_in_force_is_not_the_files_until_one_is_applied(tmp_path: Path) -> None:
    """``watch.last_error``: ``None`` at start, the refusal's type and message (as the warning logs
    it) while the file is refused, ``None`` again once a version is applied."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        assert watch.last_error is None
        _write(path, BROKEN)
        assert not _look_twice(watch)
        assert watch.stale
        assert watch.last_error is not None
        assert watch.last_error.startswith("otel_resilience.config.errors.ConfigError: ")
        assert "failure_threshold" in watch.last_error
        _write(path, SECOND)
        assert _look_twice(watch)
        assert (watch.stale, watch.last_error) == (False, None)


def _waiting(watch: ConfigWatch) -> None:
    """Return once the watch's thread waits for its next look (a generous bound)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(watch._thread.ident or 0)
        if frame is not None and frame.f_code.co_name == "wait":
            return
        time.sleep(0.001)
    raise AssertionError("the watch thread never waited")


@pytest.mark.parametrize("started_in_a_coroutine", [False, True])
def test_an_interval_assigned_while_the_thread_waits_applies_from_now(
    tmp_path: Path, started_in_a_coroutine: bool
) -> None:
    """``watch.interval = 0.01`` on a watch waiting out an interval of an hour wakes its wait: the
    next look comes one new interval later (was: the hour's wait ran to its end first, so a
    change was not seen for up to an hour); a watch made by ``watch_async`` alike."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    if started_in_a_coroutine:
        watch = asyncio.run(manager.watch_async(path, interval=3600))
    else:
        watch = manager.watch(path, interval=3600)
    with watch:
        _waiting(watch)  # the thread waits out its hour
        _write(path, SECOND)
        watch.interval = 0.01
        deadline = time.monotonic() + 30  # generous: an hour's wait is what fails it
        while watch.applied < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watch.applied == 2
        assert manager.policy("inventory").config.timeout == 1.0
        watch.interval = 3600  # back to an hour: woken again, it waits the hour from now
        _waiting(watch)
        assert watch._thread.is_alive()


def test_a_file_rewritten_with_the_bytes_applied_last_is_unchanged(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """A file touched, saved again as it was, or a ConfigMap's ``..data`` swapped to a copy of it:
    its stamp is new, its content the one applied, so nothing is applied (``check()`` False,
    ``applied`` as it was, no reload counted), and its new stamp is kept: the next look reads
    nothing (was: applied again, ``applied`` 2 and ``check()`` True for a file that did not
    change)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        payments = manager.policy("payments")
        later = path.stat().st_mtime_ns + 5_000_000_000
        os.utime(path, ns=(later, later))  # touched
        assert not _look_twice(watch)
        _write(path, FIRST)  # saved again as it was
        assert not _look_twice(watch)
        assert (watch.applied, watch.failed, watch.stale) == (1, 0, False)
        assert payments.get_stats()["reloads"] == {"succeeded": 0, "failed": 0}
        _write(path, SECOND)
        assert _look_twice(watch)  # a changed content still applies
        assert watch.applied == 2
    folder = tmp_path / "config-map"
    folder.mkdir()
    _config_map(folder, "v1", FIRST)
    with manager.watch(folder / "resilience.yaml", interval=3600) as watch:
        _config_map(folder, "v2", FIRST)  # another key of the ConfigMap changed: this file did not
        assert not _look_twice(watch)
        assert watch.applied == 1
    assert _reloads(reader, "succeeded") == {"payments": 2}  # SECOND, then FIRST at the second watch


def test_a_file_refused_because_customize_raised_is_tried_again_at_each_look(
    tmp_path: Path, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    """A customize that raised (a secret store timing out) may not raise at the next look: the file
    is applied again at each look until it applies, though it did not change (was: left refused,
    stale, until someone changed the file). The same error again is the refusal in force, neither
    counted nor logged again; another error is a new refusal, counted and logged once."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    errors: list[Exception] = []
    calls: list[str] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        calls.append(name)
        if errors and name == "payments":
            raise errors[0]
        return config

    manager = _manager()
    with manager.watch(path, interval=3600, customize=customize) as watch:
        payments = manager.policy("payments")
        errors.append(TimeoutError("secret store timed out"))
        _write(path, SECOND)
        with caplog.at_level("WARNING", logger="otel_resilience"):
            assert not _look_twice(watch)
            assert (watch.applied, watch.failed, watch.stale) == (1, 1, True)
            calls.clear()
            for _ in range(3):  # tried again at each look: the same error, the same refusal
                assert not watch.check()
            assert calls.count("payments") == 3
            assert (watch.applied, watch.failed, watch.stale) == (1, 1, True)
            errors[0] = ConnectionError("secret store refused the connection")
            assert not watch.check()  # another error: a new refusal
            assert not watch.check()
            assert watch.failed == 2
            assert watch.last_error == "ConnectionError: secret store refused the connection"
            errors.clear()
            assert watch.check()  # the store answers: applied, the file unchanged
        refused = [r for r in caplog.records if r.name == "otel_resilience" and "refused" in r.getMessage()]
        assert [r.getMessage().rsplit(": ", 1)[-1] for r in refused] == [
            "secret store timed out",
            "secret store refused the connection",
        ]
        assert (watch.applied, watch.failed, watch.stale, watch.last_error) == (2, 2, False, None)
        assert payments.config.circuit_breaker == CircuitBreakerConfig(failure_threshold=5)
        assert manager.policy("inventory").config.timeout == 1.0
        assert payments.get_stats()["reloads"] == {"succeeded": 1, "failed": 2}
        calls.clear()
        assert not watch.check()  # applied: nothing to try again
        assert calls == []
    assert _failed_reloads(reader, "payments") == 2


def test_a_file_the_manager_refused_is_not_tried_again_until_it_changes(tmp_path: Path) -> None:
    """A config the manager refuses is refused at every try: only a customize that raised is tried
    again, a file whose customize returned a config the manager refused is not."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    calls: list[str] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        calls.append(name)
        return _refusing_customize(name, config)

    with _manager().watch(path, interval=3600, customize=customize) as watch:
        _write(path, SECOND)
        assert not _look_twice(watch)
        calls.clear()
        assert not watch.check()
        assert calls == []
        assert (watch.applied, watch.failed, watch.stale) == (1, 1, True)


def test_a_stale_watch_stopped_leaves_no_stale_series_though_its_file_is_not_in_force(
    tmp_path: Path, reader: InMemoryMetricReader
) -> None:
    """A watch stopped watches no file: its ``resilience.config.stale`` series goes, so
    ``ResilienceConfigStale`` resolves (its runbook says so), while ``watch.stale`` still tells that
    the configuration in force is not the file's."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    key = os.path.abspath(path)  # noqa: PTH100 - the path the watch names, links not followed
    with _manager().watch(path, interval=3600) as watch:
        _write(path, BROKEN)
        assert not _look_twice(watch)
        assert _stale(reader) == {key: 1}
    assert _stale(reader) == {}
    assert watch.stale


def test_a_policy_whose_customize_raised_counts_a_succeeded_reload_once_a_file_applies(
    tmp_path: Path,
) -> None:
    """customize raised for a policy the file leaves as it was: a failed reload of it was reported,
    so the file applied next counts a succeeded reload of it, as for every policy a refusal was
    reported for (was: only the policies the file changed were, so that policy's failure was never
    followed by a success, and the runbook's check for a recovery never saw one)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    raising: list[str] = []

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        if name in raising:
            raise TimeoutError("secret store timed out")
        return config

    manager = _manager()
    with manager.watch(path, interval=3600, customize=customize) as watch:
        search = manager.policy("search")
        raising.append("search")
        _write(path, SECOND)  # search unchanged
        assert not _look_twice(watch)
        assert search.get_stats()["reloads"] == {"succeeded": 0, "failed": 1}
        raising.clear()
        _write(path, FIRST)
        assert _look_twice(watch)
        assert search.get_stats()["reloads"] == {"succeeded": 1, "failed": 1}
        assert search.generation == 1


def test_stop_during_the_threads_look_ends_the_thread_whatever_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() called while the watch's thread looks (its wake-up set then) ends the thread once the
    look is over, though the interval is an hour: the wait that follows sees the stop."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    watch = _manager().watch(path, interval=3600)
    inside, release = threading.Event(), threading.Event()

    def look() -> bool:
        inside.set()
        release.wait(30)
        return False

    monkeypatch.setattr(watch, "check", look)
    _waiting(watch)
    watch.interval = 0.001  # the thread looks at once, and stays in its look
    assert inside.wait(30)
    watch.interval = 3600
    stopper = threading.Thread(target=watch.stop)
    stopper.start()
    deadline = time.monotonic() + 30
    while not watch._stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    stopper.join(30)  # generous: an hour's wait is what fails it
    assert not stopper.is_alive()
    assert not watch._thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_file_replaced_by_a_named_pipe_is_refused_by_the_next_look_without_waiting_on_it(
    tmp_path: Path,
) -> None:
    """A watched file replaced by a named pipe nobody writes to: the next looks refuse it as the
    watch's start refuses one, "is a named pipe (FIFO), not a regular file", and return at once; a
    good file put back is applied (was: the look's read waited on the pipe for good, the watch's
    thread and every ``check()`` with it)."""
    path = tmp_path / "resilience.yaml"
    _write(path, FIRST)
    manager = _manager()
    with manager.watch(path, interval=3600) as watch:
        path.unlink()
        os.mkfifo(path)
        looked: list[bool] = []
        looker = threading.Thread(target=lambda: looked.extend((watch.check(), watch.check())), daemon=True)
        looker.start()
        looker.join(30)
        while looker.is_alive():  # a look waits on the pipe: a writer ends each wait, the test fails
            with contextlib.suppress(OSError):  # ENXIO: no look has the pipe open yet
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            looker.join(0.1)
        assert looked == [False, False]
        assert (watch.applied, watch.failed, watch.stale) == (1, 1, True)
        assert (
            watch.last_error
            == f"OSError: [Errno 22] is a named pipe (FIFO), not a regular file: {str(path)!r}"
        )
        path.unlink()
        _write(path, SECOND)
        assert _look_twice(watch)
        assert (watch.applied, watch.stale, watch.last_error) == (2, False, None)
