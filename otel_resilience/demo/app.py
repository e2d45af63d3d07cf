"""Run the demo: start telemetry and load, show the view, stop cleanly, print the summary.

:func:`run_demo` is the whole run, usable from a test (with an explicit ``stop`` event and no
signal handlers); :func:`main` is what ``otel-resilience demo`` calls. A run ends after
``--duration`` real seconds, or on the first SIGINT (Ctrl-C) or SIGTERM: the load stops, calls
still running get up to :data:`DRAIN_GRACE` seconds to finish, the rest are cancelled (and
counted as cancelled, never as lost), and the summary is printed (and written as JSON with
``--summary-json``). Exit status: 0, or 1 when a call was lost or ``/metrics`` could not be
served, else 130 or 143 when SIGINT or SIGTERM ended the run (128 + its number). Standard output
is written from a thread (:mod:`otel_resilience.demo.output`): a reader that stops reading holds
up neither the run nor its stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import math
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from _otel_resilience_cli import signal_status
from otel_resilience import ResilienceConfig
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.options import DEFAULT_WATCH_INTERVAL, TICK, DemoOptions, counted
from otel_resilience.demo.otel import DemoTelemetry, MetricsServerError
from otel_resilience.demo.output import BackgroundOutput, OutputNotTakenError, interrupted_wait
from otel_resilience.demo.policies import TENANTS, DemoConfigError
from otel_resilience.demo.relay import DROP_EVERY, DROP_FOR
from otel_resilience.demo.scenarios import DEPENDENCIES, Scenario, build_scenario
from otel_resilience.demo.summary import format_summary, summarize
from otel_resilience.demo.system import POLICIES, DemoSystem
from otel_resilience.demo.view import Frame, PlainView, RichView, View
from otel_resilience.engine import HUB
from otel_resilience.engine.validation import redacted_url

if TYPE_CHECKING:
    from otel_resilience.demo.replicas import Replicas
    from otel_resilience.manager.watch import ConfigWatch

__all__ = [
    "DEMO_POLICIES",
    "DRAIN_GRACE",
    "OUTPUT_GRACE",
    "TICK",
    "DemoConfigError",
    "check_file_policies",
    "main",
    "read_policies",
    "run_demo",
    "write_summary_json",
]

DEMO_POLICIES: Final = (*POLICIES, TENANTS)
"""The policies a ``--config`` file may define: one per dependency, and the keyed ``tenants``."""

DRAIN_GRACE: Final = 2.0
"""Real seconds running calls get to finish after the stop (bounded by the longest timeout)."""
OUTPUT_GRACE: Final = 2.0
"""Real seconds standard output gets to take the summary after a run a signal (or ``stop``) ended."""
_LONGEST_TIMEOUT: Final = 60.0
"""The longest total timeout of any policy, in production seconds."""


_BUILT_IN: Final = {
    "content_api": (
        "content_api (rate limit 4/s, breaker 3, retry 2, cached fallback, timeout 30 s, bulkhead 5)"
    ),
    "ml_service": "ml_service (breaker 5 / 120 s, 3 exponential retries from 2 s, timeout 60 s)",
    "database": (
        "database (timeout 10 s, fallback [], bulkhead 20, a hedge after 150 ms, budget 10 % + 1 every 20 s)"
    ),
}
"""The built-in policy of each dependency, as the header describes it."""
_SDK_DISABLED: Final = (
    "telemetry: none: OTEL_SDK_DISABLED=true turns the OpenTelemetry SDK off (no series on /metrics, "
    "no OTLP export); unset it to see the run's telemetry"
)
"""The header's line when the SDK is turned off."""


def _policies_lines(
    path: Path | None, policies: Mapping[str, ResilienceConfig] | None, shared: Sequence[str]
) -> list[str]:
    """The header's account of the policies: the built-in ones and those a ``--config`` file replaced.

    ``shared`` names the policies whose retries draw on the shared retry budget.
    """
    replaced = set(policies or ())
    described = [
        f"{name} (from {path})" if name in replaced else _BUILT_IN[name]
        for name in ("content_api", "ml_service", "database")
    ]
    budget = ""
    if len(shared) > 1:
        budget = f"; the retries of {' and '.join(shared)} share a retry budget (10 % + 1 every 20 s)"
    elif shared:
        budget = f"; the retries of {shared[0]} take from a retry budget (10 % + 1 every 20 s)"
    lines = [f"policies: {', '.join(described)}{budget}; recovery rule for ConnectionError"]
    if policies:
        from otel_resilience.config import ConfigFile  # noqa: PLC0415 - with --config only
        from otel_resilience.config.report import summary  # noqa: PLC0415 - with --config only

        account = (
            summary(policies).splitlines()
            if isinstance(policies, ConfigFile)
            else [f"{path}: {', '.join(policies)}"]
        )
        account[0] = f"--config {account[0]}, in production values (the demo scales them)"
        lines.extend(account)
    return lines


def _header(
    options: DemoOptions,
    scenario: Scenario,
    metrics_url: str | None,
    policies: Mapping[str, ResilienceConfig] | None = None,
    budgeted: Sequence[str] = (),
    *,
    sdk_disabled: bool = False,
    namespace: str | None = None,
) -> list[str]:
    scale = options.time_scale
    until = (
        f"for {options.duration:g} s"
        if options.duration is not None
        else "until Ctrl-C or SIGTERM (either prints the summary)"
    )
    repeat = "happen once" if options.once else "repeat every 600 s of production time"
    otlp = (
        "off"
        if options.otlp_endpoint is None
        else f"{redacted_url(options.otlp_endpoint)} (OTLP/HTTP protobuf, metrics + traces)"
    )
    return [
        f"otel-resilience demo: scenario {scenario.name} (seed {scenario.seed}): {scenario.description}",
        f"time scale {scale:g}: 1 s here = {1 / scale:g} s of production time; t+N is production time",
        f"metrics: {metrics_url or 'not served'}   OTLP: {otlp}",
        *([_SDK_DISABLED] if sdk_disabled else []),
        *_policies_lines(options.config, policies, budgeted),
        (
            "faults: injected by each policy's chaos links on the scenario's clock (each one a drill in "
            "the telemetry: resilience_chaos_injections_total)"
        ),
        *_watch_lines(options),
        *_replica_lines(options, namespace),
        f"running {until}; the faults {repeat}",
    ]


def _replica_lines(options: DemoOptions, namespace: str | None) -> list[str]:
    """The header's line on the replicas sharing state through Redis (none without ``--redis-url``)."""
    if options.redis_url is None or options.replicas is None:
        return []
    return [
        (
            f"shared state: {counted(options.replicas, 'replica')} (each a manager and a RedisStore) on "
            f"{redacted_url(options.redis_url)}, namespace {namespace}, the load split between them: "
            "the breakers of ml_service and content_api and the rate limits are the cluster's; "
            "if Redis goes away they go on, on local state (resilience_store_degraded)"
            + (
                f"; --redis-drops: Redis drops out for {DROP_FOR:g} s every {DROP_EVERY:g} s "
                "(real seconds), through a relay on 127.0.0.1"
                if options.redis_drops
                else ""
            )
        )
    ]


def _watch_lines(options: DemoOptions) -> list[str]:
    """The header's line on the watched ``--config`` file (none without one)."""
    if options.config is None:
        return []
    return [
        (
            f"watching {options.config} every {_watch_interval(options):g} s: an edit saved during the "
            "run applies live (a line here for each reload applied or refused)"
        )
    ]


def _watch_interval(options: DemoOptions) -> float:
    """Real seconds between two looks at the ``--config`` file."""
    return DEFAULT_WATCH_INTERVAL if options.watch_interval is None else options.watch_interval


class _Reloads:
    """The ``--config`` file watched during the run (``manager.watch``): its reloads, shown and counted.

    The watch's thread applies (or refuses) each saved change; the view's tick turns what changed
    since the previous tick into one line per reload applied or refused, with the policies
    concerned (and the reason of a refusal).
    """

    def __init__(self, system: DemoSystem, label: str) -> None:
        self._handles = {**system.handles, TENANTS: system.tenants}
        self._label = label
        self._first = self._counts()  # before the watch's first load
        self._counted = self._first

    def _watching(self, watch: ConfigWatch) -> None:
        """Count the reloads from ``watch``'s first load on.

        The first load is a reload when it changed a policy (the file was saved between the read of
        the start and the load), else nothing.
        """
        self.watch = watch
        with watch._checking:  # no look under way: its counts and the policies' agree
            changed = self._counts() != self._first
            self._seen = (0, 0) if changed else (watch.applied, watch.failed)
        self._start = self._seen

    @classmethod
    async def start(cls, system: DemoSystem, options: DemoOptions) -> _Reloads:
        """Watch ``options.config`` (its first load, in a thread: it may wait for a file just saved).

        Raises:
            DemoConfigError: The file cannot be applied now (it changed since it was read).
        """
        path = options.config
        assert path is not None  # noqa: S101 - with --config only
        reloads = cls(system, str(path))

        def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
            check_file_policies(path, {name: config})  # a policy the demo lacks, or chaos: refused
            return system.customize(name, config)

        try:  # its first load in a worker thread; cancelled, the watch it still makes is stopped
            watch = await system.manager.watch_async(
                path,
                interval=_watch_interval(options),
                customize=customize,
                format=options.config_format,
            )
        except DemoConfigError:
            raise
        except OSError as error:
            raise DemoConfigError(_cannot_read(path, error)) from error
        except ValueError as error:  # ConfigError is a ValueError
            raise DemoConfigError(f"--config: {error}") from error
        reloads._watching(watch)
        return reloads

    def _counts(self) -> dict[str, dict[str, int]]:
        reloads = {name: handle.get_stats()["reloads"] for name, handle in self._handles.items()}
        return {
            name: {"succeeded": count["succeeded"], "failed": count["failed"]}
            for name, count in reloads.items()
        }

    def news(self) -> list[tuple[str, str]]:
        """The lines (text, severity) of the reloads applied or refused since the previous call."""
        watch = self.watch
        if (watch.applied, watch.failed) == self._seen:  # nothing new: the look under way not waited for
            return []
        with watch._checking:  # no look under way: its counts and the policies' agree
            seen = (watch.applied, watch.failed)
            reason = watch.last_error
            counts = self._counts()
        before, self._counted = self._counted, counts
        applied, refused = seen[0] - self._seen[0], seen[1] - self._seen[1]
        self._seen = seen
        lines: list[tuple[str, str]] = []
        if applied:
            names = [name for name in counts if counts[name]["succeeded"] > before[name]["succeeded"]]
            changed = ", ".join(names) if names else "no policy changed"
            times = f" ({applied} versions)" if applied > 1 else ""
            lines.append((f"config {self._label}: reload applied{times}: {changed}", "info"))
        if refused:
            names = [name for name in counts if counts[name]["failed"] > before[name]["failed"]]
            concerned = f" ({', '.join(names)})" if names else ""
            times = f" ({refused} versions)" if refused > 1 else ""
            text = (
                f"config {self._label}: reload refused{times}{concerned}, the last good "
                f"configuration stays: {reason}"
            )
            lines.append((text, "warning"))
        return lines

    def stop(self) -> None:
        """Stop watching (idempotent): no reload after the run's end."""
        self.watch.stop()

    def summary(self) -> dict[str, Any]:
        """The reloads of the run, for the summary.

        ``file``, ``interval_s``, ``applied``, ``refused``, ``stale``, ``last_error`` and, per
        policy, the reloads it counted (``succeeded``, ``failed``).
        """
        watch = self.watch
        counts = self._counts()
        return {
            "file": self._label,
            "interval_s": watch.interval,
            "applied": watch.applied - self._start[0],
            "refused": watch.failed - self._start[1],
            "stale": watch.stale,
            "last_error": watch.last_error,
            "policies": {
                name: {key: count[key] - self._first[name][key] for key in ("succeeded", "failed")}
                for name, count in counts.items()
            },
        }


class _WriteInterruptedError(BaseException):
    """A signal came while the run's summary file was being written (see :class:`_SignalRoute`)."""


class _SignalRoute:
    """Where the run's SIGINT and SIGTERM go: to the loop, or into a write that may wait for ever.

    While :attr:`interrupting` is set (the summary file being written, after the run: a pipe
    nobody reads yet blocks its ``open`` with the loop stopped), the handler raises
    :class:`_WriteInterruptedError` where the main thread is, instead of handing the signal to a
    loop that would never take it.
    """

    __slots__ = ("interrupting", "signalled")

    def __init__(self) -> None:
        self.interrupting = False
        self.signalled = False  # a signal came while interrupting: read by waits that poll


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, on_signal: Callable[[int], None]) -> Iterator[_SignalRoute]:
    """Route SIGINT and SIGTERM to ``on_signal`` (given the signal's number) while the block runs.

    Main thread only. The handler that was there before is put back after the block, whatever
    installed it (the application, ``asyncio.run`` for SIGINT, or the event loop's
    ``add_signal_handler``, whose own table is left alone): ``loop.remove_signal_handler`` would
    leave ``SIG_DFL`` instead. The
    handler runs in the main thread, the loop's, and hands the signal to the loop as
    ``asyncio.run`` hands SIGINT to it (``call_soon_threadsafe`` also wakes the loop up).
    A signal whose handler was not installed from Python (``getsignal`` gives ``None``) is left alone,
    and so is one the process ignores (``SIG_IGN``: a background job of a script, which a Ctrl-C
    meant for the foreground must not stop), as Python leaves SIGINT then. The block gets the
    :class:`_SignalRoute` of the handler.
    """
    route = _SignalRoute()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if route.interrupting:
            route.interrupting = False  # once: the write is abandoned, and the teardown goes on
            route.signalled = True
            raise _WriteInterruptedError
        loop.call_soon_threadsafe(on_signal, signum)

    installed: list[tuple[signal.Signals, Callable[[int, FrameType | None], Any] | int]] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(sig)
            if previous is None or previous is signal.SIG_IGN:
                continue
            signal.signal(sig, handler)
            installed.append((sig, previous))
    try:
        yield route
    finally:
        for sig, previous in reversed(installed):
            signal.signal(sig, previous)


def _finite(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _dump(summary: dict[str, Any], handle: IO[str]) -> None:
    json.dump(_finite(summary), handle, indent=2, allow_nan=False)
    handle.write("\n")


def _write_in_place(summary: dict[str, Any], path: Path, timeout: float | None) -> None:
    """Append ``summary`` to ``path`` as it is, waiting ``timeout`` seconds at most.

    ``path`` is a device, a pipe, or the file standard output or standard error writes to. With a
    ``timeout``, the write runs in a daemon thread, left waiting when it takes longer (a pipe nobody
    reads): the process may end without it.
    """
    if timeout is None:
        with path.open("a", encoding="utf-8") as handle:
            _dump(summary, handle)
        return
    failures: list[Exception] = []
    written = threading.Event()

    def write() -> None:
        try:
            _write_in_place(summary, path, None)
        except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
            failures.append(error)
        finally:
            written.set()

    threading.Thread(target=write, name="otel-resilience-demo-summary", daemon=True).start()
    if not written.wait(timeout):
        raise OSError(errno.ETIMEDOUT, f"not written within {timeout:g} s of the stop", str(path))
    if failures:
        raise failures[0]


def _is_standard_stream(path: Path) -> bool:
    """Whether ``path`` is the file of the process's standard output or standard error."""
    try:
        named = path.stat()
    except OSError:  # gone since, or a link loop: the write says why
        return False
    for descriptor in (1, 2):
        try:
            if os.path.samestat(named, os.fstat(descriptor)):
                return True
        except OSError:  # closed
            continue
    return False


def write_summary_json(summary: dict[str, Any], path: Any, *, timeout: float | None = None) -> None:
    """Write ``summary`` to ``path`` as indented, strict JSON (non-finite numbers become ``null``).

    A regular file (or a new one) is replaced whole: the JSON is written to a new file in the same
    folder, then renamed over it (through a symbolic link, the file it points to), so a reader sees
    the earlier summary or the new one, and a failed write (a full disk) leaves the earlier one. The
    file keeps its permissions; a new one gets the usual ones (the umask's). A folder that takes no
    new file, or a path that is not a regular file (a device, a pipe), is written in place; such a
    write waits ``timeout`` seconds at most (``None``: as long as the device or pipe makes it wait).
    The file standard output or standard error writes to (``/dev/stdout`` of ``>> runs.log``) is
    appended to, in place: replacing it would drop what the run and earlier ones wrote there.

    Raises:
        OSError: The file could not be written (``ETIMEDOUT``: not in ``timeout`` seconds).
    """
    given = Path(path)
    # Not resolved: /dev/stdout of a pipe names no file, and of `> runs.log` the file the view wrote.
    if given.exists() and (not given.is_file() or _is_standard_stream(given)):
        _write_in_place(summary, given, timeout)
        return
    target = Path(os.path.realpath(given))
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:  # the folder takes no new file, while the file takes writes (checked before the run)
        with target.open("w", encoding="utf-8") as handle:
            _dump(summary, handle)
        return
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            if target.exists():
                temporary.chmod(stat.S_IMODE(target.stat().st_mode))
            _dump(summary, handle)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class _Ticker:
    """Refreshes the view and reports fault changes every :data:`TICK` seconds."""

    def __init__(
        self,
        scenario: Scenario,
        system: DemoSystem | Replicas,
        monitor: Monitor,
        view: View,
        time_scale: float,
        *,
        reloads: _Reloads | None = None,
    ) -> None:
        self._reloads = reloads
        self._scenario = scenario
        self._system = system
        self._monitor = monitor
        self._view = view
        self._scale = time_scale
        self._checked = 0.0

    def tick(self) -> None:
        """Report the fault changes since the last tick, then show a new frame with the news."""
        system = self._system
        monitor = self._monitor
        scale = self._scale
        elapsed = monitor.elapsed()
        production = elapsed / scale
        for name in DEPENDENCIES:
            for at, label in self._scenario.changes(name, self._checked, production):
                severity = "info" if label == "healthy" else "warning"
                monitor.add_news("fault", f"fault {name}: now {label}", severity, at=at * scale)
        self._checked = production
        if self._reloads is not None:
            for text, severity in self._reloads.news():
                monitor.add_news("config", text, severity)
        shared = None
        if not isinstance(system, DemoSystem):  # replicas sharing state through Redis
            for text, severity in system.news():
                monitor.add_news("store", text, severity)
            shared = system.shared_state()
        news = sorted(monitor.news, key=lambda item: item.at)
        monitor.news.clear()
        stats = system.recovery_stats()
        attempts = int(stats.get("attempts", 0))
        frame = Frame(
            elapsed=elapsed,
            production=production,
            policies=system.views(),
            calls=monitor.calls,
            recovery_rate=float(stats["recovery_rate"]) if attempts else None,
            alerts=sum(monitor.alert_kinds.values()),
            time_scale=scale,
            budget=system.budget_stats(),
            shared=shared,
            previews=system.preview_stats(),
        )
        self._view.update(frame, news, time.monotonic())

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            await asyncio.sleep(TICK)
            self.tick()


async def run_demo(
    options: DemoOptions,
    *,
    view: View,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    output: BackgroundOutput | None = None,
) -> dict[str, Any]:
    """Run one demo and return its summary (see :mod:`otel_resilience.demo.summary`).

    Args:
        options: What to run.
        view: Where to show it.
        stop: Set it to end the run early (as a signal would).
        handle_signals: Whether SIGINT and SIGTERM end the run (main thread only); the handlers
            found are put back when it ends.
        output: The view's output, when it is written from a thread of its own: after the
            summary is shown, the run waits for it to take the summary, for
            :data:`OUTPUT_GRACE` seconds at most when ``stop`` or a signal ended the run, and a
            signal ends that wait. The same bound applies then to a ``--summary-json`` device or
            pipe (written in place), and to it after a signal ended the wait for ``output``.

    Returns:
        The summary, also written to ``options.summary_json`` when set.

    Raises:
        MetricsServerError: ``/metrics`` could not be served on ``host:port``.
        DemoConfigError: ``options.config`` cannot be read, names a policy the demo lacks, or
            holds a value out of range once scaled to the time scale.
        OSError: The summary could not be written to ``options.summary_json`` (after it was shown;
            with ``handle_signals``, SIGINT or SIGTERM stops a write that waits, for a pipe's reader),
            or the view could not write its output (then the run ends at once).
        OutputNotTakenError: ``output`` did not take the summary (see ``output``); the summary
            file is written first.
    """
    policies = read_policies(options.config, options.config_format)
    scenario = build_scenario(options.scenario, options.seed, repeat=not options.once)
    stop = stop or asyncio.Event()
    signalled: signal.Signals | None = None  # the first signal: the one that ended the run, if any

    def on_signal(signum: int) -> None:
        nonlocal signalled
        if signalled is None:
            signalled = signal.Signals(signum)
        stop.set()

    telemetry = DemoTelemetry(options)
    telemetry.start()
    with contextlib.ExitStack() as cleanup:
        route = _SignalRoute()  # not routed: the summary file is then written as any file
        if handle_signals:  # entered first, left last: a signal during the teardown ends nothing early
            route = cleanup.enter_context(_signals(asyncio.get_running_loop(), on_signal))
        cleanup.callback(telemetry.stop)
        start = time.monotonic()
        monitor = Monitor(POLICIES, start=start, scenario=scenario, time_scale=options.time_scale)
        HUB.add_listener(monitor)
        cleanup.callback(HUB.remove_listener, monitor)
        system: DemoSystem | Replicas
        if options.redis_url is not None and options.replicas is not None:  # replicas sharing state
            from otel_resilience.demo.replicas import Replicas  # noqa: PLC0415 - with --redis-url only

            system = Replicas(
                options.redis_url,
                options.replicas,
                scenario,
                time_scale=options.time_scale,
                monitor=monitor,
                start=start,
                drops=options.redis_drops,
            )
        else:
            system = DemoSystem(
                scenario, time_scale=options.time_scale, monitor=monitor, start=start, policies=policies
            )
        cleanup.callback(system.close)
        cleanup.callback(system.alert_system.subscribe(monitor.on_alert))
        reloads = None
        if options.config is not None and isinstance(system, DemoSystem):  # watched: edits apply live
            reloads = await _Reloads.start(system, options)
            cleanup.callback(reloads.stop)
        ticker = _Ticker(scenario, system, monitor, view, options.time_scale, reloads=reloads)
        view.begin(
            _header(
                options,
                scenario,
                telemetry.url,
                policies,
                system.budgeted,
                sdk_disabled=telemetry.disabled,
                namespace=None if isinstance(system, DemoSystem) else system.namespace,
            )
        )
        cleanup.callback(view.close)
        system.start_load()
        ticking = asyncio.create_task(ticker.run(), name="demo-view")

        def view_done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                stop.set()  # the view failed (its output closed): end the run now, not at --duration

        ticking.add_done_callback(view_done)
        try:
            # What ended the run is decided here: a signal during the drain below changes nothing.
            try:
                await asyncio.wait_for(stop.wait(), timeout=options.duration)
            except asyncio.TimeoutError:
                stopped_by = "duration"
            else:
                stopped_by = "signal" if signalled is not None else "stop"
        finally:
            if reloads is not None:
                reloads.stop()  # no reload after the end: the summary counts the run's
            await system.stop_load(min(DRAIN_GRACE, _LONGEST_TIMEOUT * options.time_scale))
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
        if not ticking.cancelled() and (failure := ticking.exception()) is not None:
            raise failure  # the view failed (its output closed): the run ended with it
        end = time.monotonic()
        ticker.tick()
        summary = summarize(
            scenario=scenario,
            time_scale=options.time_scale,
            monitor=monitor,
            views=system.views(),
            recovery_stats=system.recovery_stats(),
            end=end,
            stopped_by=stopped_by,
            budget=system.budget_stats(),
            stop_signal=signalled.name if stopped_by == "signal" and signalled is not None else None,
        )
        summary["tenants"] = system.tenant_stats()
        summary["previews"] = system.preview_stats()
        summary["reloads"] = None if reloads is None else reloads.summary()
        summary["shared_state"] = (
            None if isinstance(system, DemoSystem) else system.summary(summary["production_seconds"])
        )
        view.end(format_summary(summary))
        grace = None if stopped_by == "duration" else OUTPUT_GRACE  # a stop asked for waits for no reader
        unshown: OutputNotTakenError | None = None
        if output is not None:
            try:
                try:
                    route.interrupting = True  # as for the summary file below: a signal ends the wait
                    output.drain(grace, lambda: route.signalled)
                finally:
                    route.interrupting = False
            except OutputNotTakenError as error:
                unshown = error
            except _WriteInterruptedError:
                unshown = interrupted_wait()
        if options.summary_json is not None:
            try:
                try:
                    route.interrupting = True  # the run is over: a signal abandons the file, not waits for it
                    write_summary_json(
                        summary, options.summary_json, timeout=grace if unshown is None else OUTPUT_GRACE
                    )
                finally:
                    route.interrupting = False
            except OSError as error:
                raise _SummaryFileError(error.errno, error.strerror, error.filename) from error
            except _WriteInterruptedError:
                stopped = InterruptedError(errno.EINTR, "stopped by a signal before it was written")
                raise _SummaryFileError(errno.EINTR, stopped.strerror, str(options.summary_json)) from stopped
        if unshown is not None:
            raise unshown
        return summary
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


class _SummaryFileError(OSError):
    """The summary could not be written to ``--summary-json`` (unlike the view's output failing)."""


def read_policies(
    path: Path | None, file_format: Literal["yaml", "toml"] | None = None
) -> Mapping[str, ResilienceConfig] | None:
    """Return the policies of the configuration file ``path`` (``None`` for none).

    ``file_format`` is its format (``--format``); ``None`` tells it from the suffix.

    Raises:
        DemoConfigError: The file cannot be read or is not valid (the message says where), it
            names a policy that is not one of the demo's (:data:`DEMO_POLICIES`), or a policy sets
            ``chaos`` (the demo's chaos links inject the scenario's faults).
    """
    if path is None:
        return None
    try:
        from otel_resilience import config  # noqa: PLC0415 - the config extra, needed with --config only

        policies = config.load(path, format=file_format)
    except OSError as error:
        raise DemoConfigError(_cannot_read(path, error)) from error
    except (ImportError, ValueError) as error:  # ConfigError is a ValueError
        raise DemoConfigError(f"--config: {error}") from error
    check_file_policies(path, policies)
    return policies


def _cannot_read(path: Path, error: OSError) -> str:
    """The ``--config`` file's error when it cannot be read: the path named, the system's reason."""
    from otel_resilience.config.errors import cannot_read  # noqa: PLC0415 - with --config only

    return f"--config: {cannot_read(path, error)}"


def check_file_policies(path: Path, policies: Mapping[str, ResilienceConfig]) -> None:
    """Refuse policies of the ``--config`` file ``path`` the demo cannot take: at start, and at each reload.

    Raises:
        DemoConfigError: A policy is not one of the demo's (:data:`DEMO_POLICIES`), or sets
            ``chaos`` (the demo's chaos links inject the scenario's faults).
    """
    unknown = sorted(set(policies) - set(DEMO_POLICIES))
    if unknown:
        msg = (
            f"--config: {path} names {', '.join(unknown)}, not a policy of the demo "
            f"({', '.join(DEMO_POLICIES)})"
        )
        raise DemoConfigError(msg)
    chaotic = [name for name, config in policies.items() if config.chaos is not None]
    if chaotic:
        msg = (
            f"--config: {path}: policy {', '.join(chaotic)} sets chaos, which the demo does not take: "
            "its faults are the scenario's, injected by its own chaos links (remove the chaos section)"
        )
        raise DemoConfigError(msg)


def main(options: DemoOptions, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the demo from the command line.

    Args:
        options: What to run.
        out: Where the view and the summary go (default ``sys.stdout``); the live ``rich`` view
            is used when it is a terminal and ``options.plain`` is false.
        err: Where errors go (default ``sys.stderr``).

    Returns:
        The exit status: 0, or 1 when a call was lost, ``/metrics`` could not be served, the
        configuration file or the summary file failed, or standard output was closed, could
        not be written or did not take the summary (see :func:`run_demo`'s ``output``), else
        the signal's (:func:`~_otel_resilience_cli.signal_status`: 130, 143) when SIGINT or
        SIGTERM ended the run.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    output = BackgroundOutput(out)  # an output nobody reads must not hold up the loop, nor a signal's stop
    view: View
    if not options.plain and out.isatty():
        from rich.console import Console  # noqa: PLC0415 - rich is an optional dependency

        view = RichView(Console(file=output))  # type: ignore[arg-type]  # a text stream, as rich uses one
    else:
        view = PlainView(output, options.interval)  # type: ignore[arg-type]
    try:
        summary = asyncio.run(run_demo(options, view=view, output=output))
    except (MetricsServerError, DemoConfigError) as error:
        problem = str(error)
    except _SummaryFileError as error:
        problem = f"cannot write the summary to {options.summary_json}: {error.__cause__}"
    except OutputNotTakenError as error:
        problem = f"standard output did not take the summary: {error.strerror or error}"
    except BrokenPipeError:
        problem = "standard output was closed; the run ended"
    except OSError as error:  # the view's output failed otherwise: a full disk, a device error
        problem = f"cannot write to standard output: {error}; the run ended"
    else:
        lost = int(summary["lost_calls"])
        if not lost:
            stopped_by: str | None = summary["signal"]
            return 0 if stopped_by is None else signal_status(signal.Signals[stopped_by])
        problem = f"{lost} call(s) lost: {summary['lost_by_type']}"
    err.write(f"otel-resilience demo: {problem}\n")
    return 1
