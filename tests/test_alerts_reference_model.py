"""The in-process alert system against a reference model, driven through real patterns on a fake clock.

Seeded random sequences of calls (breakers failing and recovering, full bulkheads rejecting,
recoveries falling back or escalating, keyed and unkeyed) and clock moves; the model says, from
the README's rules alone, which alerts are raised (kind, subject, key, time, in order), how many
of each kind, what the bounded history holds, and what subscribers (a raising one, an async
one) are handed and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

import otel_resilience
from otel_resilience import BulkheadConfig, CircuitBreakerConfig, ResilienceConfig, ResilienceManager
from otel_resilience.errors import BulkheadFullError, CircuitOpenError, RecoveryEscalatedError
from otel_resilience.patterns.alerts import MAX_TRACKED_SUBJECTS, Alert, AlertConfig, AlertKind, AlertSystem
from otel_resilience.patterns.recovery import ErrorRecoverySystem, RecoveryAction, RecoveryStrategy
from otel_resilience.testing import FakeClock, fresh_defaults

FAILURES, TIMEOUT = 2, 10.0
SMALL = AlertConfig(
    recovery_rate_threshold=0.8,
    min_recovery_attempts=4,
    recovery_window=10,
    bulkhead_cooldown=30.0,
    escalation_cooldown=20.0,
    history_size=7,
)
"""An alert system of the test's own; the process-wide one has the defaults (60 s, 10 of 100, 100)."""

Subject = tuple[str, str | None]
"""A breaker or bulkhead: its policy's name and its key (``None``: unkeyed)."""
T = TypeVar("T")
Seen = tuple[str, str, str | None, float]
"""An alert as the model tells it: kind, subject, key, timestamp."""


# -- the model -------------------------------------------------------------------------------------


@dataclass
class BreakerModel:
    """Consecutive failures open it; after TIMEOUT one call probes: success closes, failure re-opens."""

    state: str = "closed"
    failures: int = 0
    opened_at: float = 0.0

    def call(self, now: float, fails: bool) -> tuple[str, bool]:
        """Return what the caller sees (``"ok"``, ``"error"``, ``"rejected"``) and whether an outage began."""
        if self.state == "open":
            if now - self.opened_at < TIMEOUT:
                return "rejected", False
            self.state = "half_open"
        if self.state == "half_open":
            if fails:
                self.state, self.opened_at = "open", now  # a re-open: the same outage, no alert
                return "error", False
            self.state, self.failures = "closed", 0
            return "ok", False
        if not fails:
            self.failures = 0
            return "ok", False
        self.failures += 1
        if self.failures >= FAILURES:
            self.state, self.opened_at = "open", now
            return "error", True
        return "error", False


@dataclass
class RateModel:
    config: AlertConfig
    results: deque[bool] = field(default_factory=deque)
    below: bool = False

    def record(self, success: bool) -> bool:
        """Add one attempt; whether the rate just fell below the threshold (one alert per fall)."""
        self.results.append(success)
        if len(self.results) > self.config.recovery_window:
            self.results.popleft()
        rate = sum(self.results) / len(self.results)
        if rate >= self.config.recovery_rate_threshold:
            self.below = False
        elif len(self.results) >= self.config.min_recovery_attempts and not self.below:
            self.below = True
            return True
        return False


PATTERN_THRESHOLD, PATTERN_WINDOW = 3, 15.0


@dataclass
class PatternTrack:
    """One error type in one operation: ``PATTERN_THRESHOLD`` times within ``PATTERN_WINDOW`` seconds
    is a pattern, reported at most once per window."""

    times: list[float] = field(default_factory=list)
    reported_at: float | None = None

    def seen(self, now: float) -> bool:
        self.times = [*self.times, now][-PATTERN_THRESHOLD:]
        if len(self.times) < PATTERN_THRESHOLD or now - self.times[0] > PATTERN_WINDOW:
            return False
        if self.reported_at is not None and now - self.reported_at < PATTERN_WINDOW:
            return False
        self.reported_at = now
        return True


@dataclass
class AlertsModel:
    config: AlertConfig
    breakers: dict[Subject, BreakerModel] = field(default_factory=dict)
    full_until: dict[Subject, float] = field(default_factory=dict)
    escalation_until: dict[tuple[str, str], float] = field(default_factory=dict)
    rates: dict[str, RateModel] = field(default_factory=dict)
    patterns: dict[str, PatternTrack] = field(default_factory=dict)
    alerts: list[Seen] = field(default_factory=list)

    def breaker_call(self, subject: Subject, now: float, fails: bool) -> str:
        seen, began = self.breakers.setdefault(subject, BreakerModel()).call(now, fails)
        if began:
            self.alerts.append(("circuit_open", subject[0], subject[1], now))
        return seen

    def bulkhead_rejected(self, subject: Subject, now: float) -> None:
        if now >= self.full_until.get(subject, now):
            self.full_until[subject] = now + self.config.bulkhead_cooldown
            self.alerts.append(("bulkhead_full", subject[0], subject[1], now))

    def recovery(self, system: str, error_type: str | None, now: float) -> None:
        """One recovery attempt: ``None`` fell back (a success), else that error type escalated.

        Each error counts towards its pattern (its type, the operation ``"op"``) first.
        """
        track = self.patterns.setdefault(error_type or "KeyError", PatternTrack())
        if track.seen(now):
            self.alerts.append(("error_pattern", "op", None, now))
        if self.rates.setdefault(system, RateModel(self.config)).record(error_type is None):
            self.alerts.append(("low_recovery_rate", system, None, now))
        if error_type is not None:
            cooldown = (system, error_type)
            if now >= self.escalation_until.get(cooldown, now):
                self.escalation_until[cooldown] = now + self.config.escalation_cooldown
                self.alerts.append(("recovery_escalated", system, None, now))


# -- the real system -------------------------------------------------------------------------------


def seen(alert: Alert) -> Seen:
    return (alert.kind.value, alert.subject, alert.attributes.get("key"), alert.timestamp)


def boom() -> None:
    raise ConnectionError("down")


BREAKER = ResilienceConfig(
    circuit_breaker=CircuitBreakerConfig(failure_threshold=FAILURES, success_threshold=1, timeout=TIMEOUT)
)
BULKHEAD = ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0))


async def upfront() -> str:
    return "up"


async def async_boom() -> None:
    raise ConnectionError("down")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("where", ["own", "process-wide"])
def test_alerts_match_the_reference_model(seed: int, driver: str, where: str) -> None:
    """Sync calls run in a thread with no event loop (an async subscriber runs to completion
    there); async ones in the loop (an async subscriber runs as a task of it). The alert system
    is one of the test's own, given to the manager, or the process-wide one of a
    ``fresh_defaults`` block (its manager's), subscribed to with ``subscribe()``."""
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    with contextlib.ExitStack() as stack:
        if where == "own":
            config = SMALL
            system = stack.enter_context(AlertSystem(config, clock=clock, name="model-alerts"))
            manager = ResilienceManager(clock=clock, alert_system=system)
            subscribe = system.subscribe
        else:
            manager = stack.enter_context(fresh_defaults(clock=clock))
            system, config, subscribe = manager.alert_system, AlertConfig(), otel_resilience.subscribe
        model = AlertsModel(config)
        delivered: list[Seen] = []
        awaited: list[Seen] = []

        async def async_subscriber(alert: Alert) -> None:
            awaited.append(seen(alert))

        def raising_subscriber(alert: Alert) -> None:
            raise RuntimeError(f"subscriber down on {alert.kind.value}")

        async def async_raising_subscriber(alert: Alert) -> None:
            raise RuntimeError(f"async subscriber down on {alert.kind.value}")

        for callback in (
            lambda alert: delivered.append(seen(alert)),
            raising_subscriber,
            async_subscriber,
            async_raising_subscriber,
        ):
            stack.callback(subscribe(callback))
        recovery = ErrorRecoverySystem(
            f"model-recovery-{driver}-{seed}",
            clock=clock,
            pattern_threshold=PATTERN_THRESHOLD,
            pattern_window=PATTERN_WINDOW,
        )
        recovery.register_recovery_rule(KeyError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=0))
        for escalated in (ValueError, TypeError):
            recovery.register_recovery_rule(escalated, RecoveryAction(RecoveryStrategy.ESCALATE))

        breakers: list[Subject] = [("b-plain", None), ("b-keyed", "k0"), ("b-keyed", "k1")]
        bulkheads: list[Subject] = [("h-plain", None), ("h-keyed", "k0"), ("h-keyed", "k1")]

        def view_of(subject: Subject, config: ResilienceConfig):  # type: ignore[no-untyped-def]
            handle = manager.policy(subject[0], config)
            return handle if subject[1] is None else handle.for_key(subject[1])

        def breaker_call_sync(subject: Subject, fails: bool) -> str:
            try:
                view_of(subject, BREAKER).execute_sync(boom if fails else (lambda: "up"))
            except CircuitOpenError:
                return "rejected"
            except ConnectionError:
                return "error"
            return "ok"

        async def breaker_call_async(subject: Subject, fails: bool) -> str:
            try:
                await view_of(subject, BREAKER).execute(async_boom if fails else upfront)
            except CircuitOpenError:
                return "rejected"
            except ConnectionError:
                return "error"
            return "ok"

        def rejected_sync(subject: Subject) -> int:
            view, rejected = view_of(subject, BULKHEAD), []

            def hold() -> None:
                try:
                    view.execute_sync(lambda: "never")
                except BulkheadFullError as full:
                    rejected.append(full)

            view.execute_sync(hold)  # the nested call finds the only slot taken
            return len(rejected)

        async def rejected_async(subject: Subject) -> int:
            view, rejected = view_of(subject, BULKHEAD), []

            async def hold() -> None:
                try:
                    await view.execute(upfront)
                except BulkheadFullError as full:
                    rejected.append(full)

            await view.execute(hold)
            return len(rejected)

        def recover_sync(error: Exception) -> object:
            return recovery.recover_from_error_sync(error, {"operation_name": "op"})

        async def recover_async(error: Exception) -> object:
            return await recovery.recover_from_error(error, {"operation_name": "op"})

        async def run(sync: Callable[..., T], asynchronous: Callable[..., Awaitable[T]], *args: object) -> T:
            if driver == "sync":
                return await asyncio.to_thread(sync, *args)
            answer = await asynchronous(*args)
            await settle()  # the async subscribers' tasks run
            return answer

        async def scenario() -> None:
            recovered = rng.choice([0.5, 0.8, 0.9])  # the share of recoveries that succeed
            for _ in range(200):
                step = rng.random()
                now = clock.now()
                if step < 0.4:
                    subject = rng.choice(breakers)
                    fails = rng.random() < 0.6
                    expected = model.breaker_call(subject, now, fails)
                    outcome = await run(breaker_call_sync, breaker_call_async, subject, fails)
                    assert outcome == expected, (subject, now)
                elif step < 0.6:
                    subject = rng.choice(bulkheads)
                    assert await run(rejected_sync, rejected_async, subject) == 1
                    model.bulkhead_rejected(subject, now)
                elif step < 0.85:
                    error_type = None if rng.random() < recovered else rng.choice(["ValueError", "TypeError"])
                    model.recovery(recovery.name, error_type, now)
                    if error_type is None:
                        assert await run(recover_sync, recover_async, KeyError("k")) == 0
                    else:
                        error = ValueError("v") if error_type == "ValueError" else TypeError("t")
                        with pytest.raises(RecoveryEscalatedError):
                            await run(recover_sync, recover_async, error)
                else:
                    clock.advance(rng.choice([0.0, 1.0, 5.0, 10.0, 19.999, 20.0, 30.0]))
            await settle()

        asyncio.run(scenario())
        expected = model.alerts
        assert delivered == expected
        assert awaited == expected
        assert [seen(alert) for alert in system.history] == expected[-config.history_size :]
        stats = system.get_stats()
        by_kind = {kind.value: sum(1 for a in expected if a[0] == kind.value) for kind in AlertKind}
        assert stats["by_kind"] == by_kind
        assert stats["total"] == len(expected)
        assert stats["callback_errors"] == 2 * len(expected)  # the raising subscribers, once per alert each
        assert stats["subscribers"] == 4
        reported = manager.get_resilience_statistics()["alerts"]
        assert (reported["by_kind"], reported["callback_errors"]) == (by_kind, 2 * len(expected))
        assert {a[0] for a in expected} >= {
            "circuit_open",
            "bulkhead_full",
            "recovery_escalated",
            "error_pattern",
        }


@dataclass
class CappedCooldowns:
    """``BULKHEAD_FULL`` past ``MAX_TRACKED_SUBJECTS`` bulkheads (README): those whose cooldown runs
    keep it, those whose cooldown ended make room, the others share one cooldown (one alert
    standing for them all)."""

    cooldown: float
    tracked: dict[str, float] = field(default_factory=dict)
    shared_until: float = float("-inf")

    def rejected(self, key: str, now: float) -> str | None:
        """``"own"`` or ``"shared"`` (an alert), or ``None``."""
        tracked = self.tracked
        if key in tracked:
            if now < tracked[key]:
                return None
            del tracked[key]
        elif len(tracked) >= MAX_TRACKED_SUBJECTS:
            for ended in [subject for subject, until in tracked.items() if until <= now]:
                del tracked[ended]
            if len(tracked) >= MAX_TRACKED_SUBJECTS:
                if now < self.shared_until:
                    return None
                self.shared_until = now + self.cooldown
                return "shared"
        tracked[key] = now + self.cooldown
        return "own"


@pytest.mark.parametrize("seed", range(3))
def test_full_bulkheads_past_the_tracked_cap_share_one_cooldown(seed: int) -> None:
    """A keyed policy's bulkheads, one per key, more of them than an alert system tracks."""
    rng = random.Random(seed)
    clock = FakeClock(1000.0)
    config = AlertConfig(bulkhead_cooldown=30.0, history_size=10_000)
    model = CappedCooldowns(config.bulkhead_cooldown)
    expected: list[tuple[str | None, str | None, float]] = []
    with AlertSystem(config, clock=clock, name="capped-alerts") as system:
        manager = ResilienceManager(clock=clock, alert_system=system)
        handle = manager.policy("pool", BULKHEAD, max_keys=MAX_TRACKED_SUBJECTS + 200)
        keys = [f"k{index}" for index in range(MAX_TRACKED_SUBJECTS + 60)]
        for round_ in range(6):
            chosen = keys if round_ == 0 else rng.sample(keys, rng.randint(len(keys) - 100, len(keys)))
            for key in chosen:
                view, rejected = handle.for_key(key), []

                def hold(view=view, rejected=rejected) -> None:  # type: ignore[no-untyped-def]
                    try:
                        view.execute_sync(lambda: "never")
                    except BulkheadFullError as full:
                        rejected.append(full)

                view.execute_sync(hold)
                assert len(rejected) == 1
                started = model.rejected(key, clock.now())
                if started is not None:
                    shared = "more than 1024 bulkheads" if started == "shared" else None
                    expected.append((key, shared, clock.now()))
                if round_ and rng.random() < 0.004:
                    clock.advance(rng.choice([1.0, 10.0, 20.0]))
            clock.advance(rng.choice([5.0, 10.0, 15.0, 30.0]))
        raised = [
            (alert.attributes.get("key"), alert.attributes.get("untracked"), alert.timestamp)
            for alert in system.history
        ]
        assert raised == expected
        assert any(shared for _, shared, _ in expected)  # the first round has 60 past the cap
