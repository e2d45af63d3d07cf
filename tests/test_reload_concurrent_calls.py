"""Live reloads under load: 4 threads and 50 asyncio tasks call named policies (and their keys)
while another thread reloads configurations that change every setting of every pattern.

What is asserted holds whatever the interleaving (invariants, never timings): every call ends with
its result or a documented error; a bulkhead never runs more calls than the largest limit in force
since the call asked for its slot; no slot is lost; breaker counts, policy statistics and exported
counters never go down, and every call is counted once, by its outcome; a refused configuration
(a file the loader refuses, a batch the manager refuses, a file caught half written) changes
nothing, and a watched file left refused is reported stale until a good one applies.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from otel_support import Otel

from otel_resilience import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    ExtraStrategy,
    OperationTimeoutError,
    PolicyHandle,
    RateLimitedError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.config import ConfigError, loads
from otel_resilience.engine.facade import NotInUseError
from otel_resilience.manager.watch import ConfigWatch
from otel_resilience.patterns.alerts import AlertSystem
from otel_resilience.telemetry.semconv import names as sc

THREADS = 4
TASKS = 50
KEYS = ("k0", "k1", "k2", "k3", "k4", "held")
MAX_KEYS = 2
"""Fewer than the keys called: keys are evicted and made again while reloads run."""
RELOADS = 150 if os.environ.get("RUN_SLOW", "") not in {"", "0"} else 40
"""Versions put in force (or refused) in one run: longer with ``RUN_SLOW=1``, as the soaks."""
DOCUMENTED = (ConnectionError, CircuitOpenError, BulkheadFullError, RateLimitedError, OperationTimeoutError)
"""What a call may end with besides its result: the dependency's own error, or a policy's rejection
or timeout (a BulkheadTimeoutError is a BulkheadFullError)."""


# ---------------------------------------------------------------------------------------- configs


def _breaker(rng: random.Random) -> str:
    timeout = f"{rng.choice((2, 5, 20))}ms"
    probes = rng.randint(1, 3)
    success = rng.randint(1, 2)
    if rng.random() < 0.3:
        size = rng.choice((4, 6))
        return (
            f"{{sliding_window: {{kind: count, size: {size}}}, failure_rate_threshold: 0.5, minimum_calls: 3, "
            f"timeout: {timeout}, half_open_max_calls: {probes}, success_threshold: {success}}}"
        )
    threshold = rng.randint(2, 6)
    return (
        f"{{failure_threshold: {threshold}, timeout: {timeout}, half_open_max_calls: {probes}, "
        f"success_threshold: {success}}}"
    )


def _bulkhead(rng: random.Random) -> tuple[str, int]:
    slots = rng.randint(1, 4)
    queue = rng.choice((0, 0, 2, 6))
    if queue:
        return f"{{max_concurrent: {slots}, max_waiting: {queue}, timeout: {rng.choice((20, 100))}ms}}", slots
    return f"{{max_concurrent: {slots}, max_waiting: 0}}", slots


@dataclass(frozen=True)
class Version:
    """One configuration: its YAML text and, for the keyed policy ``alpha``, its bulkhead in force."""

    text: str
    bulkhead: tuple[str, int] | None
    """``alpha``'s bulkhead: its name and ``max_concurrent``; ``None`` without one."""
    names: tuple[str, ...]


def version(rng: random.Random, number: int) -> Version:
    """A configuration that changes every setting of every pattern, policies added, dropped and renamed."""
    ratio, window = rng.choice((0.1, 0.5)), rng.choice(("1s", "2s"))
    lines = ["retry_budgets:", f"  shared: {{ratio: {ratio}, min_retries_per_second: 5, window: {window}}}"]
    lines += ["policies:", "  alpha:"]
    if rng.random() < 0.85:
        lines.append(f"    circuit_breaker: {_breaker(rng)}")
        if rng.random() < 0.2:
            lines.append(f"    circuit_breaker_name: alpha_breaker_{rng.randint(0, 1)}")
    budget = rng.choice(("", ", budget: shared"))
    lines.append(
        f"    retry: {{max_attempts: {rng.randint(1, 3)}, initial_delay: {rng.choice((0, 1))}ms{budget}}}"
    )
    if rng.random() < 0.3:
        lines.append(f"    max_attempts_total: {rng.randint(1, 3)}")
    if rng.random() < 0.3:
        lines.append(
            f"    chaos: {{fault_rate: 0.1, fault: ConnectionError, latency_rate: 0.2, latency: 1ms, seed: {number}}}"
        )
    bulkhead: tuple[str, int] | None = None
    if rng.random() < 0.85:
        text, slots = _bulkhead(rng)
        lines.append(f"    bulkhead: {text}")
        name = "alpha"
        if rng.random() < 0.2:
            name = f"alpha_pool_{rng.randint(0, 1)}"
            lines.append(f"    bulkhead_name: {name}")
        bulkhead = (name, slots)
    if rng.random() < 0.7:
        algorithm = rng.choice(("token_bucket", "sliding_window"))
        wait = rng.choice(("", "", ", max_wait: 5ms, max_waiting: 4", ", max_wait: 20ms"))
        lines.append(
            f"    rate_limiter: {{rate: {rng.choice((20, 300, 5000))}, burst: {rng.choice((1, 5, 200))}, "
            f"algorithm: {algorithm}{wait}}}"
        )
    lines.append(f"    timeout: {rng.choice(('5s', '10s', '2ms'))}")
    if rng.random() < 0.3:
        lines.append("    fallback: {strategy: default_value, default_value: fb}")
    names = ["alpha"]
    if rng.random() < 0.7:  # dropped from the file now and then: left as it is
        text, _ = _bulkhead(rng)
        lines += ["  beta:", f"    circuit_breaker: {_breaker(rng)}", f"    bulkhead: {text}"]
        names.append("beta")
    gamma = f"gamma_{number // 15}"  # renamed every 15 versions: a new policy, the old one left
    lines += [
        "  " + gamma + ":",
        f"    retry: {{max_attempts: {rng.randint(1, 2)}, initial_delay: 0, budget: shared}}",
    ]
    if rng.random() < 0.3:  # async only: its sync calls fail with hedging's TypeError
        lines.append("    hedging: {delay: 1ms, max_attempts: 2}")
    names.append(gamma)
    return Version("\n".join(lines) + "\n", bulkhead, tuple(names))


class Refused(RuntimeError):
    """What the factory of a poisoned config raises: the manager refuses the batch."""


def _poisoned(_name: str) -> Any:
    raise Refused("refused by its factory")


def poison(name: str, config: ResilienceConfig) -> ResilienceConfig:
    """A customize that makes the batch refused: an extra strategy whose factory raises."""
    return ResilienceConfig(
        **{**_fields(config), "extra_strategies": (ExtraStrategy(_poisoned, inside="retry"),)}
    )


def _fields(config: ResilienceConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


# ---------------------------------------------------------------------------------------- ledger


@dataclass
class Ledger:
    """What the callers saw, and what the reloader put in force, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    versions: list[Version] = field(default_factory=list)
    """``alpha``'s configurations in the order they were put in force (each added just before)."""
    running: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Calls running now in ``alpha``'s fn, by key and bulkhead (the index of its first version)."""
    over: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    unexpected: list[BaseException] = field(default_factory=list)
    checked: int = 0

    def since(self) -> int:
        """The first version that may be in force now (the last one may be being applied)."""
        with self.lock:
            return max(0, len(self.versions) - 2)

    def epoch(self, index: int) -> int:
        """The version from which ``alpha``'s bulkhead of version ``index`` is the same instance."""
        versions = self.versions
        bulkhead = versions[index].bulkhead
        name = None if bulkhead is None else bulkhead[0]
        while index > 0:
            before = versions[index - 1].bulkhead
            if before is None or bulkhead is None or before[0] != name:
                break
            index -= 1
        return index

    def enter(self, key: str, since: int) -> tuple[str, int] | None:
        """Count a call admitted by ``alpha``'s bulkhead of ``key``; check it against the limits.

        The call asked for its slot after version ``since`` was in force: the bulkhead that admitted
        it is one of the versions from then on. When they all share one bulkhead instance, the
        calls it runs now are at most the largest limit any of them gave (a smaller limit cancels
        nothing; a call admitted under a larger one keeps running); counted only then, so that
        what is counted is never more than what the bulkhead runs.
        """
        with self.lock:
            seen = self.versions[since:]
            if any(v.bulkhead is None for v in seen):
                return None
            epochs = {self.epoch(since + i) for i in range(len(seen))}
            if len(epochs) != 1:
                return None
            slot = (key, epochs.pop())
            self.running[slot] += 1
            limit = max(v.bulkhead[1] for v in seen if v.bulkhead is not None)
            self.checked += 1
            if self.running[slot] > limit:
                self.over.append(f"{slot}: {self.running[slot]} running, limit {limit}")
            return slot

    def leave(self, slot: tuple[str, int] | None) -> None:
        """Count out a call :meth:`enter` counted (``slot``), as it leaves ``fn``."""
        if slot is not None:
            with self.lock:
                self.running[slot] -= 1

    def record(self, policy: str, result: object, error: BaseException | None) -> None:
        """Count a call of ``policy`` by what it ended with; keep an error no documented one."""
        with self.lock:
            self.calls[policy] += 1
            if error is None:
                self.outcomes[policy, "fallback" if result == "fb" else "ok"] += 1
            elif type(error) is asyncio.TimeoutError or type(error) is TimeoutError:  # the caller's wait_for
                self.outcomes[policy, "cancelled"] += 1
            elif isinstance(error, DOCUMENTED) or (type(error) is TypeError and "hedg" in str(error)):
                self.outcomes[policy, type(error).__name__] += 1
            else:
                self.unexpected.append(error)


# ---------------------------------------------------------------------------------------- callers


def named(manager: ResilienceManager) -> dict[str, PolicyHandle]:
    """The manager's named policies now (a copy: a reload may create one meanwhile)."""
    with manager._handles_lock:
        return dict(manager._handles)


class Callers:
    """The threads and tasks that call the policies until told to stop."""

    def __init__(self, manager: ResilienceManager, ledger: Ledger) -> None:
        self.manager = manager
        self.ledger = ledger
        self.stop = threading.Event()

    def targets(self, rng: random.Random) -> tuple[str, PolicyHandle, str | None]:
        names = sorted(named(self.manager))  # every named policy, dropped and renamed ones included
        name = "alpha" if rng.random() < 0.6 else rng.choice(names)
        key = rng.choice(KEYS) if name == "alpha" else None  # alpha's unkeyed state is the reloader's
        return name, self.manager.policy(name), key

    def sync_fn(self, name: str, key: str | None, since: int, fails: bool) -> str:
        slot = self.ledger.enter(key, since) if key is not None else None
        try:
            time.sleep(0.0002)
            if fails:
                raise ConnectionError(name)
            return "ok"
        finally:
            self.ledger.leave(slot)

    async def async_fn(self, name: str, key: str | None, since: int, fails: bool) -> str:
        slot = self.ledger.enter(key, since) if key is not None else None
        try:
            await asyncio.sleep(0 if fails else 0.0005)
            if fails:
                raise ConnectionError(name)
            return "ok"
        finally:
            self.ledger.leave(slot)

    def thread(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            name, handle, key = self.targets(rng)
            runs = handle if key is None else handle.for_key(key)
            since, fails = self.ledger.since(), rng.random() < 0.3
            result: object = None
            error: BaseException | None = None
            try:
                result = runs.execute_sync(self.sync_fn, name, key, since, fails)
            except BaseException as caught:
                error = caught
            self.ledger.record(name, result, error)

    async def task(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            name, handle, key = self.targets(rng)
            runs = handle if key is None else handle.for_key(key)
            since, fails = self.ledger.since(), rng.random() < 0.3
            result: object = None
            error: BaseException | None = None
            call = runs.execute(self.async_fn, name, key, since, fails)
            try:
                if rng.random() < 0.2:  # the caller gives up: cancelled waiting for a slot, a permit or fn
                    result = await asyncio.wait_for(call, rng.choice((0.0001, 0.001)))
                else:
                    result = await call
            except BaseException as caught:
                error = caught
            self.ledger.record(name, result, error)
            await asyncio.sleep(0)

    async def tasks(self) -> None:
        await asyncio.gather(*(self.task(1000 + n) for n in range(TASKS)))

    @classmethod
    def started(cls, manager: ResilienceManager, ledger: Ledger) -> tuple[Callers, list[threading.Thread]]:
        callers = cls(manager, ledger)
        threads = [threading.Thread(target=callers.thread, args=(n,)) for n in range(THREADS)]
        threads.append(threading.Thread(target=asyncio.run, args=(callers.tasks(),)))
        for thread in threads:
            thread.start()
        return callers, threads


# ---------------------------------------------------------------------------------------- readings


_NOW: Final = frozenset({"active", "waiting", "open_keys", "keys", "generation", "max_keys"})
"""What a policy's statistics read as it is now, not counted: it may go down."""


def _counts(stats: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every lifetime count of a policy's statistics (a pattern the config lacks, ``None``, left out)."""
    for name, value in stats.items():
        if isinstance(value, dict):
            yield from _counts(value, f"{prefix}{name}.")
        elif type(value) is int and name not in _NOW:
            yield f"{prefix}{name}", value


@dataclass
class Readings:
    """Successive readings of the policies' statistics and of the exported counters: none goes down."""

    stats: dict[tuple[str, str], int] = field(default_factory=dict)
    series: dict[tuple[str, frozenset[tuple[str, Any]]], float] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    collections: int = 0

    def read_stats(self, manager: ResilienceManager) -> None:
        readings = [(name, handle.get_stats()) for name, handle in sorted(named(manager).items())]
        statistics = manager.get_resilience_statistics()
        readings.append(("manager", {"executions": statistics["executions"]}))
        readings += [(f"manager {name}", stats) for name, stats in statistics["named_policies"].items()]
        for name, stats in readings:
            for count, value in _counts(stats):
                before = self.stats.get((name, count))
                if before is not None and value < before:
                    self.down.append(f"{name} {count}: {before} -> {value}")
                self.stats[name, count] = value

    def read_metrics(self, otel: Otel) -> None:
        data = otel.reader.get_metrics_data()
        self.collections += 1
        if data is None:
            return
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = metric.data.data_points
                    monotonic = getattr(metric.data, "is_monotonic", None)
                    for point in points:
                        if monotonic is True:
                            value = float(point.value)
                        elif hasattr(point, "bucket_counts"):
                            value = float(point.count)
                        else:
                            continue
                        series = (metric.name, frozenset(point.attributes.items()))
                        before = self.series.get(series)
                        if before is not None and value < before:
                            self.down.append(f"{metric.name} {dict(point.attributes)}: {before} -> {value}")
                        self.series[series] = value


OUTCOMES = {
    "ok": "success",
    "fallback": "fallback",
    "cancelled": "cancelled",
    "ConnectionError": "failure",
    "OperationTimeoutError": "timeout",
    "CircuitOpenError": "rejected",
    "BulkheadFullError": "rejected",
    "BulkheadTimeoutError": "rejected",
    "RateLimitedError": "rejected",
    "TypeError": "failure",
}


def outcomes_of(ledger: Ledger, policy: str) -> Counter[str]:
    """What the callers of ``policy`` saw, as ``resilience.executions`` outcomes."""
    found: Counter[str] = Counter()
    for (name, seen), count in ledger.outcomes.items():
        if name == policy:
            found[OUTCOMES[seen]] += count
    return found


def reload_counts(otel: Otel) -> Counter[tuple[str, str]]:
    """``resilience.reload`` by policy and outcome."""
    found: Counter[tuple[str, str]] = Counter()
    for point in otel.points(sc.RELOAD):
        attributes = dict(point.attributes)
        found[str(attributes[sc.POLICY]), str(attributes[sc.RELOAD_OUTCOME])] += int(point.value)
    return found


def executions_by_outcome(otel: Otel, policy: str) -> Counter[str]:
    """``resilience.executions`` of ``policy``'s calls (its pipelines'), by outcome."""
    found: Counter[str] = Counter()
    for point in otel.points(sc.EXECUTIONS):
        attributes = dict(point.attributes)
        if attributes.get(sc.POLICY) == policy and attributes.get(sc.PATTERN) == "pipeline":
            outcome = str(attributes[sc.OUTCOME])
            # a success after a failure (a chaos fault retried) is "recovered": the caller's success
            found["success" if outcome == "recovered" else outcome] += int(point.value)
    return +found


# ---------------------------------------------------------------------------------------- reloader


def _write(path: Path, text: str) -> None:
    """Write ``text`` in place (not atomically), so that a look sees a change of size or time."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    with path.open("w") as file:
        file.write(text)
    if path.stat().st_mtime_ns == before:  # a coarse clock: move the time on explicitly
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


def _state(manager: ResilienceManager) -> dict[str, tuple[int, ResilienceConfig]]:
    """Each policy's generation and config; ``beta``'s left out (the second reloader changes it)."""
    return {n: (h.generation, h.config) for n, h in named(manager).items() if n != "beta"}


@dataclass
class Reloader:
    """Puts versions in force by ``apply_config`` and through a watched file; refused ones between."""

    manager: ResilienceManager
    ledger: Ledger
    watch: ConfigWatch
    path: Path
    rng: random.Random
    readings: Readings
    otel: Otel
    problems: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    unborn: Counter[str] = field(default_factory=Counter)
    """The refusals of a new policy's config reported for each name before a policy had it."""
    number: int = 1

    def put_in_force(self, apply: Callable[[], object], new: Version) -> object:
        """Return ``apply()``, which puts ``new`` in force: listed first, so that a call started
        meanwhile counts it among the versions that may admit it (:meth:`Ledger.since`)."""
        with self.ledger.lock:
            self.ledger.versions.append(new)
        return apply()

    def refused(self, attempt: Callable[[], object], expected: type[BaseException] | None, what: str) -> None:
        """``attempt`` must raise ``expected`` (``None``: report the refusal, raise nothing); no policy changes."""
        before = _state(self.manager)
        if expected is None:
            attempt()
            self.refusals[what] += 1
        else:
            try:
                attempt()
            except expected:
                self.refusals[what] += 1
            else:
                self.problems.append(f"{what}: not refused")
        after = _state(self.manager)  # a policy a call created meanwhile is not the attempt's
        changed = sorted(name for name in before if after.get(name) != before[name])
        if changed:
            self.problems.append(f"{what}: changed {changed}")

    def by_apply(self) -> None:
        """Apply the next version as loaded (``apply_config``)."""
        new = version(self.rng, self.number)
        self.put_in_force(lambda: self.manager.apply_config(loads(new.text)), new)

    def by_watch(self) -> None:
        """Write the next version in two chunks, looking between: only the whole file applies."""
        new = version(self.rng, self.number)
        half = new.text[: len(new.text) // 2]
        before = _state(self.manager)
        _write(self.path, half)
        if self.watch.check():
            self.problems.append("a half-written file was applied")
        _write(self.path, new.text)
        if self.watch.check():
            self.problems.append("a file changed since the last look was applied")
        now = _state(self.manager)
        if any(now[name] != before[name] for name in before):
            self.problems.append("a look at a file being written changed a policy")
        if not self.put_in_force(self.watch.check, new):
            self.problems.append("a whole file found unchanged by a second look was not applied")
        if self.watch.stale or self.watch.last_error is not None:
            self.problems.append(f"applied, still stale: {self.watch.last_error}")

    def refuse_in_file(self) -> None:
        """A file left broken (two looks) is refused: stale, counted once, nothing changed."""
        failed = self.watch.failed
        text = version(self.rng, self.number).text
        if self.rng.random() < 0.5:  # one value refused: the file's other changes are refused with it
            broken = text.replace("max_attempts: ", "max_attempts: -", 1)
        else:  # cut in the middle of a mapping: it does not parse
            broken = text[:-12] + "{[\n"
        _write(self.path, broken)
        self.refused(lambda: (self.watch.check(), self.watch.check()), None, "broken file")
        if not (self.watch.stale and self.watch.failed == failed + 1 and self.watch.last_error):
            self.problems.append(f"a refused file: stale={self.watch.stale} failed={self.watch.failed}")
        self.watch.check()  # looked at again unchanged: neither counted nor reported again
        if self.watch.failed != failed + 1:
            self.problems.append("a refused file counted twice")
        stale = [p.value for p in self.otel.points(sc.CONFIG_STALE)]
        if stale != [1]:
            self.problems.append(f"resilience.config.stale while refused: {stale}")

    def refuse_batch(self) -> None:
        """A valid file that the manager refuses (a factory raises): all of it, or none."""
        new = version(self.rng, self.number)
        missing = [name for name in new.names if name not in named(self.manager)]
        before = reload_counts(self.otel)
        self.refused(lambda: self.manager.apply_config(loads(new.text), customize=poison), Refused, "batch")
        after = reload_counts(self.otel)
        for name in missing:  # refused while no policy had the name: reported, counted by no policy
            made = named(self.manager).get(name)  # since, by a call: it counts what came after
            counted = 0 if made is None else made.get_stats()["reloads"]["failed"]
            self.unborn[name] += after[name, "failed"] - before[name, "failed"] - counted
        self.refused(
            lambda: loads(new.text.replace("max_attempts: ", "max_attempts: -")), ConfigError, "load"
        )

    def quiet_calls(self) -> Quiet:
        """Give ``alpha``'s unkeyed breaker (no caller's) failures short of its threshold; force ``held``'s open."""
        alpha = self.manager.policy("alpha")
        breaker = alpha.circuit_breaker
        if breaker is not None:
            attempts = alpha.config.retry_policy.max_attempts if alpha.config.retry_policy else 1
            threshold = breaker.config.failure_threshold
            closed = breaker.peek_state() is CircuitState.CLOSED
            fails = closed and breaker.stats.failure_count + attempts < threshold
            self.quiet_call(alpha, fails=fails)
        held = self.forced_open(alpha)
        if breaker is None:
            return Quiet(alpha.config, None, CircuitState.CLOSED, 0, held)
        return Quiet(alpha.config, breaker, breaker.peek_state(), breaker.stats.failure_count, held)

    @staticmethod
    def forced_open(alpha: PolicyHandle) -> CircuitBreaker | None:
        """``held``'s breaker, forced OPEN until reset (a breaker taken just before its key was evicted is taken again).

        Forced even when OPEN: the calls' failures may have tripped it, and a trip's OPEN period ends.
        """
        while True:
            held = alpha.for_key("held").circuit_breaker
            try:
                if held is not None:
                    held.force_open()
            except NotInUseError:
                continue
            return held

    def quiet_call(self, alpha: PolicyHandle, *, fails: bool) -> None:
        def call() -> str:
            if fails:
                raise ConnectionError("quiet")
            return "ok"

        result: object = None
        error: BaseException | None = None
        try:
            result = alpha.execute_sync(call)
        except BaseException as caught:
            error = caught
        self.ledger.record("alpha", result, error)

    def carried(self, quiet: Quiet) -> None:
        """What a reload of ``alpha`` kept of its unkeyed breaker and of ``held``'s, as documented."""
        alpha = self.manager.policy("alpha")
        config = alpha.config
        breaker = alpha.circuit_breaker
        before = quiet.config
        same_name = config.circuit_breaker_name == before.circuit_breaker_name
        if breaker is None or quiet.breaker is None:
            if (breaker is None) != (config.circuit_breaker is None):
                self.problems.append("the breaker is not the config's")
            return
        if not same_name:
            if breaker is quiet.breaker or breaker.stats.failure_count:
                self.problems.append("a renamed breaker was not replaced by a new one")
            return
        if breaker is not quiet.breaker:
            self.problems.append("a reload that kept the breaker's name replaced it")
        window = (
            config.circuit_breaker is not None
            and before.circuit_breaker is not None
            and (config.circuit_breaker.sliding_window == before.circuit_breaker.sliding_window)
        )
        # No call closes a breaker that is not CLOSED: OPEN, or HALF_OPEN once its period ends.
        if quiet.state is not CircuitState.CLOSED:
            if breaker.peek_state() is CircuitState.CLOSED:
                self.problems.append(f"a {quiet.state} breaker is CLOSED after a reload")
        elif breaker.stats.failure_count != (quiet.failures if window else 0):
            self.problems.append(f"failures {quiet.failures} carried as {breaker.stats.failure_count}")
        held = alpha.for_key("held").circuit_breaker
        if quiet.held is not None and held is quiet.held and held.peek_state() is not CircuitState.OPEN:
            self.problems.append(f"a breaker forced OPEN until reset is {held.peek_state()} after a reload")

    def run(self) -> None:
        """Put ``RELOADS`` versions in force, or refuse them, checking what each kept."""
        for _ in range(RELOADS):
            self.number += 1
            choice = self.rng.random()
            quiet = self.quiet_calls()
            if choice < 0.45:
                self.by_apply()
            elif choice < 0.8:
                self.by_watch()
            elif choice < 0.9:
                self.refuse_in_file()
                self.by_watch()  # the next good file applies: stale no more
                stale = [p.value for p in self.otel.points(sc.CONFIG_STALE)]
                if stale not in ([0], []):
                    self.problems.append(f"resilience.config.stale after a good file: {stale}")
            else:
                self.refuse_batch()
            self.carried(quiet)
            time.sleep(0.003)  # let the callers run under this version


@dataclass
class Quiet:
    """``alpha``'s unkeyed breaker and ``held``'s before a reload, as the reloader left them."""

    config: ResilienceConfig
    breaker: CircuitBreaker | None
    state: CircuitState
    failures: int
    held: CircuitBreaker | None


def collect(manager: ResilienceManager, otel: Otel, readings: Readings, stop: threading.Event) -> None:
    """Read the statistics and collect the metrics again and again while the reloads run."""
    while not stop.is_set():
        readings.read_stats(manager)
        readings.read_metrics(otel)


def reload_beta(
    manager: ResilienceManager, configs: list[ResilienceConfig], stop: threading.Event, seen: list[str]
) -> None:
    """A second reloader: ``beta`` by ``reconfigure`` (a config, a builder, one that raises) meanwhile."""
    rng = random.Random(5)
    while not stop.is_set():
        if "beta" not in named(manager):
            time.sleep(0.001)
            continue
        choice = rng.random()
        try:
            if choice < 0.5:
                manager.reconfigure("beta", rng.choice(configs))
            elif choice < 0.8:
                manager.reconfigure_many({"beta": lambda: rng.choice(configs)})
            else:
                manager.reconfigure("beta", _raising)
                seen.append("a builder that raised was not refused")
        except Refused:
            pass
        except BaseException as error:
            seen.append(f"beta: {type(error).__name__}: {error}")
        time.sleep(0.002)


def create_next(
    manager: ResilienceManager, reloader: Reloader, stop: threading.Event, seen: list[str]
) -> None:
    """Calls that create the policy the next renaming will name, with a config of their own, meanwhile."""
    config = ResilienceConfig(timeout=1.0)
    while not stop.is_set():
        name = f"gamma_{reloader.number // 15 + 1}"
        try:
            manager.policy(name, config)
        except ValueError:  # the file's config came first: it exists with another one
            pass
        except BaseException as error:
            seen.append(f"{name}: {type(error).__name__}: {error}")
        time.sleep(0.005)


def run_blocks(
    manager: ResilienceManager, stop: threading.Event, blocks: Counter[str], seen: list[str]
) -> None:
    """An operator's blocks run with a key's own breaker and bulkhead (kept a moment, as a caller may)."""
    rng = random.Random(9)
    alpha = manager.policy("alpha")
    while not stop.is_set():
        view = alpha.for_key(rng.choice(KEYS))
        pattern, instance = rng.choice(
            (("bulkhead", view.bulkhead), ("circuit_breaker", view.circuit_breaker))
        )
        if instance is None:
            continue
        time.sleep(0.0005)  # a reload may replace it, or an eviction take its key, meanwhile
        try:
            with instance.slot() if isinstance(instance, Bulkhead) else instance.guard():
                time.sleep(0.0005)
        except NotInUseError:
            continue  # refused before it took or counted anything
        except (BulkheadFullError, CircuitOpenError):
            pass
        except BaseException as error:
            seen.append(f"{pattern} block: {type(error).__name__}: {error}")
            continue
        blocks[pattern] += 1


def _raising() -> ResilienceConfig:
    raise Refused("the builder failed")


# ---------------------------------------------------------------------------------------- the test


def _drain_bulkheads(handle: PolicyHandle) -> list[str]:
    """Every bulkhead of ``handle`` is empty, and admits its whole limit at once: no slot was lost."""
    lost: list[str] = []
    for runs in (handle, *(handle.for_key(key) for key in KEYS)):
        bulkhead = runs.bulkhead
        if bulkhead is None:
            continue
        stats = bulkhead.stats
        if stats.active or stats.waiting:
            lost.append(f"{bulkhead.name}: {stats.active} active, {stats.waiting} waiting")
            continue
        limit = bulkhead.config.max_concurrent
        held: list[Any] = []
        try:
            for _ in range(limit):
                slot = bulkhead.slot()
                slot.__enter__()
                held.append(slot)
        except BulkheadFullError:
            lost.append(f"{bulkhead.name}: admits {len(held)} of {limit}")
        finally:
            for slot in held:
                slot.__exit__(None, None, None)
    return lost


@pytest.mark.timeout(240)
def test_reloads_of_every_setting_under_threads_and_tasks_keep_every_invariant(
    tmp_path: Path, otel: Otel
) -> None:
    """4 threads, 50 tasks, an operator's blocks, a second reloader and a metrics collection run while
    versions of every setting are applied, written to a watched file (half first) or refused."""
    alerts = AlertSystem(name="reload-load-alerts")
    manager = ResilienceManager(alert_system=alerts)
    rng = random.Random(20)
    ledger = Ledger()
    first = version(rng, 1)
    ledger.versions.append(first)
    path = tmp_path / "resilience.yaml"
    path.write_text(first.text)
    past = time.time_ns() - 10 * 10**9  # written well before: applied at once
    os.utime(path, ns=(past, past))
    manager.policy("alpha", loads(first.text)["alpha"], max_keys=MAX_KEYS, idle_ttl=0.01)
    watch = manager.watch(path, interval=3600.0)
    readings = Readings()
    reloader = Reloader(manager, ledger, watch, path, rng, readings, otel)
    beta_configs = [
        loads(version(random.Random(n), 1).text)["beta"]
        for n in range(40)
        if "beta" in loads(version(random.Random(n), 1).text)
    ]
    beta_problems: list[str] = []
    blocks: Counter[str] = Counter()
    callers, threads = Callers.started(manager, ledger)
    background = threading.Event()
    helpers = [
        threading.Thread(target=collect, args=(manager, otel, readings, background)),
        threading.Thread(target=reload_beta, args=(manager, beta_configs, background, beta_problems)),
        threading.Thread(target=create_next, args=(manager, reloader, background, beta_problems)),
        threading.Thread(target=run_blocks, args=(manager, background, blocks, beta_problems)),
    ]
    for helper in helpers:
        helper.start()
    try:
        reloader.run()
    finally:
        background.set()
        for helper in helpers:
            helper.join(60)
        callers.stop.set()
        for thread in threads:
            thread.join(60)
        watch.stop()
        alerts.close()
    assert not any(thread.is_alive() for thread in (*threads, *helpers))
    assert beta_problems == []
    readings.read_stats(manager)
    readings.read_metrics(otel)

    assert ledger.unexpected == [], ledger.unexpected[:5]
    assert reloader.problems == [], reloader.problems[:10]
    assert ledger.over == []
    assert ledger.checked > 20  # the limits were checked for many calls
    assert readings.down == []
    assert readings.collections > 2  # collected while the reloads ran
    assert reloader.refusals["batch"]
    assert reloader.refusals["load"]
    assert reloader.refusals["broken file"]
    for name, handle in named(manager).items():
        stats = handle.get_stats()
        assert stats["executions"]["total"] == ledger.calls[name], name
        outcomes = executions_by_outcome(otel, name)
        assert sum(outcomes.values()) == ledger.calls[name], (name, outcomes)
        assert outcomes == outcomes_of(ledger, name), name
        reloads = reload_counts(otel)
        assert reloads[name, "succeeded"] == stats["reloads"]["succeeded"], name
        assert reloads[name, "failed"] == stats["reloads"]["failed"] + reloader.unborn[name], name
    for pattern, count in blocks.items():  # the blocks run with a key's own instances, each counted once
        points = [p for p in otel.points(sc.EXECUTIONS) if dict(p.attributes)[sc.PATTERN] == pattern]
        assert sum(int(p.value) for p in points) == count, pattern
    for name, handle in named(manager).items():  # blocks run with the bulkheads count too: last
        assert _drain_bulkheads(handle) == [], name
    assert manager.policy("alpha").generation > 10
    assert sum(ledger.calls.values()) > 300
    assert len(named(manager)) >= 4  # gamma renamed: the old names left as they were
