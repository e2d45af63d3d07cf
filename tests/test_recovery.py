"""Tests for otel_resilience.patterns.recovery: rules, the five strategies, patterns, stats and events."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import functools
import gc
import itertools
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from support import converted_cancellation, freed_on_a_closed_loop, needs_task_cancelling, run_threads

from otel_resilience.engine.context import SyncDeadline
from otel_resilience.engine.events import (
    MAX_ATTRIBUTE_LENGTH,
    Event,
    PatternDetected,
    RecoveryAttempted,
    error_type_name,
)
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.rerun import RERUNNABLE
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    RecoveryEscalatedError,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitBreakerConfig, CircuitState
from otel_resilience.patterns.recovery import (
    DEFAULT_DELAY,
    DEFAULT_ISOLATE_DURATION,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_FINGERPRINTS,
    DEFAULT_PATTERN_THRESHOLD,
    DEFAULT_PATTERN_WINDOW,
    ErrorRecoverySystem,
    RecoveryAction,
    RecoveryConfig,
    RecoveryContext,
    RecoveryStrategy,
)
from otel_resilience.patterns.retry import Retry, RetryPolicy
from otel_resilience.testing import AttemptRecorder, EventRecorder, FakeClock

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


class Flaky:
    """Fails ``failures`` times with fresh ``error`` instances, then returns ``result``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError, result: Any = "ok") -> None:
        self.failures = failures
        self.error = error
        self.result = result
        self.calls: list[tuple[Any, ...]] = []
        self.raised: list[Exception] = []
        self.log: list[str] | None = None

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.log is not None:
            self.log.append("call")
        if len(self.calls) <= self.failures:
            error = self.error(f"fail {len(self.calls)}")
            self.raised.append(error)
            raise error
        return self.result

    async def run_async(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return self.run_sync(*args, **kwargs)


async def run(system: ErrorRecoverySystem, driver: str, flaky: Flaky, *args: Any, **kwargs: Any) -> Any:
    if driver == "async":
        return await system.execute(flaky.run_async, *args, **kwargs)
    return system.execute_sync(flaky.run_sync, *args, **kwargs)


async def recover(system: ErrorRecoverySystem, driver: str, error: BaseException, context: Any) -> Any:
    if driver == "async":
        return await system.recover_from_error(error, context)
    return system.recover_from_error_sync(error, context)


async def run_pipeline(pipeline: Pipeline, driver: str, flaky: Flaky) -> Any:
    if driver == "async":
        return await pipeline.execute(flaky.run_async)
    return pipeline.execute_sync(flaky.run_sync)


def op_for(driver: str, flaky: Flaky) -> Any:
    return flaky.run_async if driver == "async" else flaky.run_sync


class StandInBreaker:
    """A minimal breaker registered in BREAKERS, recording force_open calls."""

    __slots__ = ("__weakref__", "name", "opened")

    def __init__(self, name: str) -> None:
        self.name = name
        self.opened: list[tuple[float | None, str]] = []
        BREAKERS.register(self)

    def force_open(self, duration: float | None = None, *, reason: str = "forced") -> None:
        self.opened.append((duration, reason))


REJECTION_OF: dict[type[ExecutionRejectedError], ExecutionRejectedError] = {
    CircuitOpenError: CircuitOpenError("db", "open", 5.0),
    BulkheadFullError: BulkheadFullError("pool", 2, 0),
}
REJECTION_TYPES = tuple(REJECTION_OF)


def retry(max_attempts: int = 3, delay: float = 0.0) -> RecoveryAction:
    return RecoveryAction(RecoveryStrategy.RETRY, max_attempts=max_attempts, delay=delay)


# -- configuration ----------------------------------------------------------------------------


def test_defaults_are_pinned(clock: FakeClock) -> None:
    """The documented defaults of actions, config and system do not drift."""
    assert DEFAULT_MAX_ATTEMPTS == 3
    assert DEFAULT_DELAY == 1.0
    assert DEFAULT_ISOLATE_DURATION == 30.0
    assert DEFAULT_PATTERN_THRESHOLD == 5
    assert DEFAULT_PATTERN_WINDOW == 60.0
    assert DEFAULT_MAX_FINGERPRINTS == 1000
    action = RecoveryAction(RecoveryStrategy.RETRY)
    assert (action.max_attempts, action.delay, action.isolate_duration) == (3, 1.0, 30.0)
    assert action.restart_hook is action.fallback_function is action.isolate_breaker is None
    assert RecoveryConfig() == RecoveryConfig(5, 60.0, 1000)
    system = ErrorRecoverySystem(clock=clock)
    assert system.name == "recovery"
    assert system.config == RecoveryConfig()
    assert system.rules == {}
    assert [s.value for s in RecoveryStrategy] == ["retry", "restart", "fallback", "isolate", "escalate"]


def _hook() -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"strategy": "retry"}, TypeError, r"RecoveryAction\.strategy must be a RecoveryStrategy"),
        ({"max_attempts": 0}, ValueError, r"RecoveryAction\.max_attempts must be >= 1, got 0"),
        ({"max_attempts": 2.0}, TypeError, r"RecoveryAction\.max_attempts must be an int"),
        ({"max_attempts": True}, TypeError, r"RecoveryAction\.max_attempts must be an int"),
        ({"delay": -1.0}, ValueError, r"RecoveryAction\.delay must be >= 0 seconds"),
        ({"delay": float("nan")}, ValueError, r"RecoveryAction\.delay must be a finite duration"),
        ({"delay": float("inf")}, ValueError, r"RecoveryAction\.delay must be a finite duration"),
        ({"isolate_duration": 0}, ValueError, r"RecoveryAction\.isolate_duration must be > 0 seconds"),
        (
            {"strategy": RecoveryStrategy.RESTART},
            ValueError,
            r"RecoveryAction\.restart_hook must be a callable",
        ),
        ({"restart_hook": 3}, TypeError, r"RecoveryAction\.restart_hook must be callable"),
        (
            {"restart_hook": _hook},
            ValueError,
            r"RecoveryAction\.restart_hook must be None unless strategy is RESTART",
        ),
        ({"fallback_value": 0}, ValueError, r"RecoveryAction\.fallback_value must be None unless"),
        ({"fallback_function": _hook}, ValueError, r"RecoveryAction\.fallback_function must be None unless"),
        ({"isolate_breaker": "db"}, ValueError, r"RecoveryAction\.isolate_breaker must be None unless"),
        (
            {"strategy": RecoveryStrategy.FALLBACK, "fallback_value": 1, "fallback_function": _hook},
            ValueError,
            r"RecoveryAction\.fallback_function must be None when fallback_value is set",
        ),
        (
            {"strategy": RecoveryStrategy.ISOLATE, "isolate_breaker": ""},
            ValueError,
            r"RecoveryAction\.isolate_breaker",
        ),
    ],
)
def test_bad_action_is_rejected(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Every invalid RecoveryAction field raises naming the class, field, rule and value."""
    kwargs = {"strategy": RecoveryStrategy.RETRY, **kwargs}
    with pytest.raises(error, match=match):
        RecoveryAction(**kwargs)


def _reconnect_generator() -> Iterator[None]:
    yield  # a body that would run only once iterated


async def _reconnect_async_generator() -> AsyncIterator[None]:
    yield


def _answer_generator(*_: object) -> Iterator[str]:
    yield "spare"


async def _answer_async_generator(*_: object) -> AsyncIterator[str]:
    yield "spare"


class _AnswerRows:
    """An object whose ``__call__`` is a generator function: its call makes an iterator too."""

    def __call__(self, *_: object) -> Iterator[str]:
        yield "spare"


@pytest.mark.parametrize(
    ("strategy", "field", "function"),
    [
        (RecoveryStrategy.RESTART, "restart_hook", _reconnect_generator),
        (RecoveryStrategy.RESTART, "restart_hook", _reconnect_async_generator),
        (RecoveryStrategy.RESTART, "restart_hook", functools.partial(_reconnect_generator)),
        (RecoveryStrategy.FALLBACK, "fallback_function", _answer_generator),
        (RecoveryStrategy.FALLBACK, "fallback_function", _answer_async_generator),
        (RecoveryStrategy.FALLBACK, "fallback_function", functools.partial(_answer_generator, "arg")),
        (RecoveryStrategy.RESTART, "restart_hook", _AnswerRows()),
        (RecoveryStrategy.FALLBACK, "fallback_function", _AnswerRows()),
    ],
)
def test_a_generator_function_is_refused_as_a_hook_or_fallback(
    strategy: RecoveryStrategy, field: str, function: Any
) -> None:
    """A generator function returns its iterator before its body runs: as a ``restart_hook`` no
    restart would happen (each re-run counted recovered all the same), as a ``fallback_function``
    the iterator would answer every failure. Refused when the action is made, as a fallback's."""
    with pytest.raises(TypeError, match=rf"RecoveryAction\.{field} must be .*not a generator function"):
        RecoveryAction(strategy, **{field: function})


class _Reconnects:
    """A hook whose ``__call__`` is a generator function: a call returns an iterator, its body never runs."""

    def __call__(self) -> Iterator[None]:
        yield


class _AnswersAsync:
    """A fallback whose ``__call__`` is an async generator function."""

    async def __call__(self, *_: object) -> AsyncIterator[str]:
        yield "spare"


@pytest.mark.parametrize(
    ("strategy", "field", "function"),
    [
        (RecoveryStrategy.RESTART, "restart_hook", _Reconnects()),
        (RecoveryStrategy.RESTART, "restart_hook", functools.partial(_Reconnects())),
        (RecoveryStrategy.FALLBACK, "fallback_function", _AnswersAsync()),
    ],
)
def test_an_object_whose_call_is_a_generator_function_is_refused_as_a_hook_or_fallback(
    strategy: RecoveryStrategy, field: str, function: Any
) -> None:
    """What a call runs decides, as it decides the driver and what ``protect`` refuses: an object
    whose ``__call__`` is a generator function is one (the fallback answered every failure with
    an iterator, counted a successful recovery)."""
    with pytest.raises(TypeError, match=rf"RecoveryAction\.{field} must be .*not a generator function"):
        RecoveryAction(strategy, **{field: function})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"strategy": RecoveryStrategy.FALLBACK, "max_attempts": 5},
            r"RecoveryAction\.max_attempts must be left at 3 unless strategy is RETRY or RESTART, got 5",
        ),
        (
            {"strategy": RecoveryStrategy.ESCALATE, "max_attempts": 1},
            r"RecoveryAction\.max_attempts must be left at 3 unless strategy is RETRY or RESTART, got 1",
        ),
        (
            {"strategy": RecoveryStrategy.ISOLATE, "delay": 0},
            r"RecoveryAction\.delay must be left at 1\.0 unless strategy is RETRY or RESTART, got 0\.0",
        ),
        (
            {"strategy": RecoveryStrategy.FALLBACK, "delay": timedelta(seconds=5)},
            r"RecoveryAction\.delay must be left at 1\.0 unless strategy is RETRY or RESTART",
        ),
        (
            {"strategy": RecoveryStrategy.RETRY, "isolate_duration": 60},
            r"RecoveryAction\.isolate_duration must be left at 30\.0 unless strategy is ISOLATE, got 60\.0",
        ),
        (
            {"strategy": RecoveryStrategy.RESTART, "restart_hook": _hook, "isolate_duration": 1.0},
            r"RecoveryAction\.isolate_duration must be left at 30\.0 unless strategy is ISOLATE",
        ),
    ],
)
def test_a_setting_the_strategy_does_not_use_is_rejected(kwargs: dict[str, Any], match: str) -> None:
    """A number another strategy uses, set to other than its default, is refused, never ignored."""
    with pytest.raises(ValueError, match=match):
        RecoveryAction(**kwargs)


def test_a_setting_left_at_its_default_is_accepted_by_every_strategy() -> None:
    """The defaults, however spelt, are what every action holds: no strategy refuses them."""
    for strategy in (RecoveryStrategy.FALLBACK, RecoveryStrategy.ESCALATE):
        action = RecoveryAction(
            strategy,
            max_attempts=DEFAULT_MAX_ATTEMPTS,
            delay=timedelta(seconds=DEFAULT_DELAY),
            isolate_duration=int(DEFAULT_ISOLATE_DURATION),
        )
        assert (action.max_attempts, action.delay, action.isolate_duration) == (3, 1.0, 30.0)
    assert RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=5.0).isolate_duration == 5.0
    assert RecoveryAction(RecoveryStrategy.RETRY, max_attempts=1, delay=0.0).delay == 0.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pattern_threshold": 1}, r"RecoveryConfig\.pattern_threshold must be >= 2, got 1"),
        ({"pattern_window": 0}, r"RecoveryConfig\.pattern_window must be > 0 seconds"),
        ({"pattern_window": float("nan")}, r"RecoveryConfig\.pattern_window must be a finite"),
        ({"max_fingerprints": 0}, r"RecoveryConfig\.max_fingerprints must be >= 1"),
    ],
)
def test_bad_system_settings_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    """Invalid pattern-detection settings raise naming RecoveryConfig and the field."""
    with pytest.raises(ValueError, match=match):
        ErrorRecoverySystem(**kwargs)


def test_the_live_counters_are_read_only_as_every_pattern_s(clock: FakeClock) -> None:
    """``system.stats`` is read, never assigned (an ``AttributeError``), as a breaker's or a retry's.

    Assigned, ``None`` (or anything that is not its counters) made every later recovery raise an
    ``AttributeError`` into the call it recovered, and ``get_stats()`` fail.
    """
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ValueError, RecoveryAction(strategy=RecoveryStrategy.FALLBACK, fallback_value=1)
    )
    counters = system.stats
    with pytest.raises(AttributeError):
        system.stats = None  # type: ignore[assignment]
    assert system.stats is counters

    def down() -> int:
        raise ValueError("down")

    assert system.execute_sync(down) == 1
    assert system.get_stats()["successful_recoveries"] == 1


def test_bad_name_and_rules_are_rejected() -> None:
    """The name must be a non-empty string; rules need an Exception subclass and an action."""
    with pytest.raises(ValueError, match=r"ErrorRecoverySystem\.name"):
        ErrorRecoverySystem("  ")
    system = ErrorRecoverySystem()
    for bad in (asyncio.CancelledError, KeyboardInterrupt, "ConnectionError", ConnectionError()):
        with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.exc_type must be an Exception subclass"):
            system.register_recovery_rule(bad, retry())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.action must be a RecoveryAction"):
        system.register_recovery_rule(ConnectionError, RecoveryStrategy.RETRY)  # type: ignore[arg-type]


def test_repr_names_the_system_and_its_rules() -> None:
    system = ErrorRecoverySystem("payments")
    assert repr(system) == "ErrorRecoverySystem('payments', rules={})"
    system.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.RETRY))
    system.register_recovery_rule(KeyError, RecoveryAction(RecoveryStrategy.ESCALATE))
    assert (
        repr(system) == "ErrorRecoverySystem('payments', rules={ConnectionError: RETRY, KeyError: ESCALATE})"
    )


def test_timedelta_durations_are_normalised() -> None:
    """Durations given as timedelta are stored as float seconds."""
    action = RecoveryAction(RecoveryStrategy.RETRY, delay=timedelta(milliseconds=250))
    isolation = RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=timedelta(minutes=1))
    assert (action.delay, isolation.isolate_duration) == (0.25, 60.0)
    assert type(action.delay) is float
    system = ErrorRecoverySystem(pattern_window=timedelta(seconds=5))  # type: ignore[arg-type]
    assert system.config.pattern_window == 5.0


# -- rule matching ----------------------------------------------------------------------------


async def test_most_specific_rule_wins(driver: str, clock: FakeClock) -> None:
    """The rule for the most specific class in the error's MRO acts, whatever the order of registration."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="specific")
    )
    system.register_recovery_rule(OSError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="base"))
    assert await run(system, driver, Flaky(1, ConnectionRefusedError)) == "specific"
    assert await run(system, driver, Flaky(1, FileNotFoundError)) == "base"
    system.register_recovery_rule(
        OSError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="replaced")
    )
    assert await run(system, driver, Flaky(1, FileNotFoundError)) == "replaced"


class Transient(Exception, metaclass=abc.ABCMeta):
    """An ABC errors join by registration (a virtual base class)."""


class Throttled(Exception, metaclass=abc.ABCMeta):
    """Another ABC errors join by registration."""


class Reset(Exception):
    """Registered with Transient and Throttled: neither is in its MRO."""


Transient.register(Reset)
Throttled.register(Reset)


async def test_an_abc_registered_with_matches_its_rule(driver: str, clock: FakeClock) -> None:
    """An ABC's rule covers its virtual subclasses (isinstance), as a fallback's handle_exceptions does.

    The MRO is searched first: a rule for a class of the error's MRO wins over a virtual one;
    among virtual ones, the rule registered first acts, and a re-run's error is covered as well.
    """
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        Throttled, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="throttled")
    )
    system.register_recovery_rule(Transient, retry(max_attempts=2, delay=0.0))
    assert await run(system, driver, Flaky(1, Reset)) == "throttled"
    system.register_recovery_rule(
        Exception, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="in the MRO")
    )
    assert await run(system, driver, Flaky(1, Reset)) == "in the MRO"

    second = ErrorRecoverySystem(clock=clock)
    second.register_recovery_rule(Transient, retry(max_attempts=2, delay=0.0))
    flaky = Flaky(2, Reset)
    assert await run(second, driver, flaky) == "ok"
    assert len(flaky.calls) == 3
    assert second.get_stats()["successful_recoveries"] == 1


async def test_unmatched_error_propagates_unchanged(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """An error no rule covers is re-raised as the same object and is not a recovery attempt."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry())
    flaky = Flaky(5, ValueError)
    with pytest.raises(ValueError, match="fail 1") as caught:
        await run(system, driver, flaky)
    assert caught.value is flaky.raised[0]
    assert len(flaky.calls) == 1
    assert system.get_stats()["attempts"] == 0
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == []
    error = KeyError("k")
    with pytest.raises(KeyError) as caught_direct:
        await recover(system, driver, error, None)
    assert caught_direct.value is error


# -- RETRY -------------------------------------------------------------------------------------


async def test_retry_recovers_after_delays(driver: str, clock: FakeClock) -> None:
    """RETRY re-runs the operation with its delay before each re-run until it returns."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=2.0))
    flaky = Flaky(3)
    assert await run(system, driver, flaky, 1, key="v") == "ok"
    assert flaky.calls == [((1,), {"key": "v"})] * 4
    assert clock.sleeps == [2.0, 2.0, 2.0]
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 1, 0)
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 1, "failed": 0}
    assert system._pipeline.stats.recovered == 1


async def test_retry_exhausted_reraises_last_error(driver: str, clock: FakeClock) -> None:
    """When the re-runs run out, the last original error is re-raised, not a wrapper."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2, delay=0.5))
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="fail 3") as caught:
        await run(system, driver, flaky)
    assert caught.value is flaky.raised[-1]
    assert len(flaky.calls) == 3
    assert clock.sleeps == [0.5, 0.5]
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)
    assert system._pipeline.stats.failed == 1


async def test_retry_stops_on_an_error_the_rule_does_not_cover(driver: str, clock: FakeClock) -> None:
    """A re-run failing with an error outside the rule's class ends the recovery with that error."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=5))

    class Switching(Flaky):
        def run_sync(self, *args: Any, **kwargs: Any) -> Any:
            self.error = ConnectionError if not self.calls else ValueError
            return super().run_sync(*args, **kwargs)

    flaky = Switching(5)
    with pytest.raises(ValueError, match="fail 2"):
        await run(system, driver, flaky)
    assert len(flaky.calls) == 2
    assert system.get_stats()["failed_recoveries"] == 1


class Sequence(Flaky):
    """Fails with the given error classes in turn (fresh instances), then returns ``result``."""

    def __init__(self, *errors: type[Exception], result: Any = "ok") -> None:
        super().__init__(len(errors), result=result)
        self.errors = errors

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.calls) < len(self.errors):
            self.error = self.errors[len(self.calls)]
        return super().run_sync(*args, **kwargs)


async def test_a_reruns_error_another_rule_covers_is_acted_on_by_that_rule(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Each outcome is judged by the rules: a re-run's error of another rule's class ends the recovery
    as failed, and that rule acts on it (here a FALLBACK answers)."""
    system = ErrorRecoverySystem(unique("handover"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=1.0))
    system.register_recovery_rule(ValueError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="fb"))
    flaky = Sequence(ConnectionError, ValueError, ValueError)
    assert await run(system, driver, flaky) == "fb"
    assert len(flaky.calls) == 2
    assert clock.sleeps == [1.0]
    stats = system.get_stats()
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 1, "failed": 0}
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [
        RecoveryAttempted("retry", "failure", "ConnectionError", "ValueError"),
        RecoveryAttempted("fallback", "success", "ValueError"),
    ]
    assert system._pipeline.stats.fallback == 1


async def test_a_subclass_rule_acts_on_a_reruns_error_its_base_rule_would_retry(
    driver: str, clock: FakeClock
) -> None:
    """The rule lookup decides for a re-run's error too: a subclass's rule wins over the base's
    RETRY that is running (here it escalates, from the re-run's error)."""
    system = ErrorRecoverySystem(unique("subclass"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=1.0))
    system.register_recovery_rule(ConnectionResetError, RecoveryAction(RecoveryStrategy.ESCALATE))
    flaky = Sequence(ConnectionError, ConnectionResetError, ConnectionResetError, ConnectionResetError)
    with pytest.raises(RecoveryEscalatedError) as caught:
        await run(system, driver, flaky)
    assert caught.value.__cause__ is flaky.raised[1]
    assert caught.value.error_type == "ConnectionResetError"
    assert len(flaky.calls) == 2
    stats = system.get_stats()
    assert (stats["attempts"], stats["failed_recoveries"], stats["escalations"]) == (2, 2, 1)


async def test_a_reruns_error_of_an_isolate_rule_isolates_and_is_raised(
    driver: str, clock: FakeClock
) -> None:
    """An ISOLATE rule covering a re-run's error forces its breaker open; the caller gets that error."""
    breaker = StandInBreaker(unique("db"))
    system = ErrorRecoverySystem(unique("isolating"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    system.register_recovery_rule(
        PermissionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=breaker.name)
    )
    flaky = Sequence(ConnectionError, PermissionError, PermissionError)
    with pytest.raises(PermissionError) as caught:
        await run(system, driver, flaky)
    assert caught.value is flaky.raised[1]
    assert breaker.opened == [(DEFAULT_ISOLATE_DURATION, "isolated")]
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 1, "failed": 0}


async def test_a_reruns_error_of_another_retry_rule_runs_under_that_rules_delay_and_limit(
    driver: str, clock: FakeClock
) -> None:
    """Another RETRY rule covering a re-run's error takes over with its own delay and re-runs."""
    system = ErrorRecoverySystem(unique("two-retries"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=1, delay=1.0))
    system.register_recovery_rule(TimeoutError, retry(max_attempts=2, delay=5.0))
    flaky = Sequence(ConnectionError, *[TimeoutError] * 9)
    with pytest.raises(TimeoutError, match="fail 4") as caught:
        await run(system, driver, flaky)
    assert caught.value is flaky.raised[-1]
    assert len(flaky.calls) == 4
    assert clock.sleeps == [1.0, 5.0, 5.0]
    assert system.get_stats()["by_strategy"]["retry"] == {"attempts": 2, "successful": 0, "failed": 2}


async def test_a_rule_taking_over_never_starts_its_delay_past_the_deadline(
    driver: str, clock: FakeClock
) -> None:
    """The rule a re-run's error hands the recovery to measures its own delay against the deadline."""
    system = ErrorRecoverySystem(unique("over-deadline"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=1.0))
    system.register_recovery_rule(TimeoutError, retry(max_attempts=3, delay=5.0))
    flaky = Sequence(ConnectionError, TimeoutError)
    with SyncDeadline(clock, 3.0, "op"), pytest.raises(TimeoutError, match="fail 2"):
        await run(system, driver, flaky)
    assert clock.sleeps == [1.0]
    assert len(flaky.calls) == 2
    assert system.get_stats()["by_strategy"]["retry"] == {"attempts": 2, "successful": 0, "failed": 2}


async def test_rules_taking_turns_make_each_its_re_runs_once_per_execution(
    driver: str, clock: FakeClock
) -> None:
    """Two RETRY rules whose errors alternate never re-run forever: a rule's ``max_attempts`` bounds
    its re-runs in the whole execution, whichever rule ran in between."""
    system = ErrorRecoverySystem(unique("turns"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2, delay=1.0))
    system.register_recovery_rule(TimeoutError, retry(max_attempts=2, delay=5.0))
    flaky = Sequence(*[ConnectionError, TimeoutError] * 10)
    with pytest.raises(ConnectionError, match="fail 5"):
        await run(system, driver, flaky)
    assert len(flaky.calls) == 5
    assert clock.sleeps == [1.0, 5.0, 1.0, 5.0]
    assert system.get_stats()["by_strategy"]["retry"] == {"attempts": 5, "successful": 0, "failed": 5}
    # the next execution starts with every rule's re-runs again
    flaky = Sequence(ConnectionError, TimeoutError)
    assert await run(system, driver, flaky) == "ok"
    assert len(flaky.calls) == 3


class ReplacesItsRule(Sequence):
    """Fails as a :class:`Sequence`; its call number ``at`` first registers ``action`` for ``ConnectionError``."""

    def __init__(self, system: ErrorRecoverySystem, at: int, action: RecoveryAction) -> None:
        super().__init__(*[ConnectionError] * 9)
        self.system = system
        self.at = at
        self.action = action

    def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.calls) + 1 == self.at:
            self.system.register_recovery_rule(ConnectionError, self.action)
        return super().run_sync(*args, **kwargs)


async def test_a_rule_replaced_during_its_recovery_acts_on_the_next_reruns_error(
    driver: str, clock: FakeClock
) -> None:
    """A rule registered again while its RETRY recovery runs is another rule from then on: the
    re-run's error is the new rule's (here a FALLBACK answers), never one more re-run of the
    replaced action."""
    system = ErrorRecoverySystem(unique("replaced"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=5, delay=1.0))
    flaky = ReplacesItsRule(system, 2, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="spare"))
    assert await run(system, driver, flaky) == "spare"
    assert len(flaky.calls) == 2
    assert clock.sleeps == [1.0]
    stats = system.get_stats()
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 1, "failed": 0}


async def test_a_retry_rule_replaced_during_its_recovery_goes_on_under_the_new_delay_and_limit(
    driver: str, clock: FakeClock
) -> None:
    """A RETRY rule replaced by another RETRY for the same class: the new one takes over with its
    own delay and re-runs, less those made for that class in the execution already."""
    system = ErrorRecoverySystem(unique("replaced-retry"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=5, delay=1.0))
    flaky = ReplacesItsRule(system, 2, retry(max_attempts=2, delay=5.0))
    with pytest.raises(ConnectionError, match="fail 3"):
        await run(system, driver, flaky)
    assert len(flaky.calls) == 3
    assert clock.sleeps == [1.0, 5.0]


async def test_a_caught_errors_rerun_is_judged_by_the_rules_too(driver: str, clock: FakeClock) -> None:
    """``recover_from_error``: a re-run's error of another rule's class is that rule's."""
    system = ErrorRecoverySystem(unique("caught"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    system.register_recovery_rule(ValueError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="fb"))
    flaky = Sequence(ValueError)
    context = RecoveryContext(operation=op_for(driver, flaky), operation_name="query")
    assert await recover(system, driver, ConnectionError("caught"), context) == "fb"
    assert len(flaky.calls) == 1


async def test_in_a_manager_the_error_a_rerun_of_the_retry_gave_up_on_is_judged_by_the_rules(
    driver: str, clock: FakeClock
) -> None:
    """Recovery ⊃ Retry: the error the retry gives up with on a re-run is matched again, and a
    FALLBACK rule for it answers (the execution's outcome ``fallback``)."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(ConnectionError, retry(max_attempts=1))
    manager.recovery_system.register_recovery_rule(
        ValueError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="fb")
    )
    config = ResilienceConfig(
        name=unique("policy"),
        enable_recovery=True,
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.1),
    )
    flaky = Sequence(ConnectionError, ConnectionError, ValueError, ValueError)
    assert await run_in(manager, config, driver, flaky) == "fb"
    assert len(flaky.calls) == 4
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 1, "failed": 0}
    executions = manager.get_resilience_statistics()["executions"]
    assert (executions["fallback"], executions["failed"]) == (1, 0)


def test_each_reruns_error_counts_towards_a_pattern(clock: FakeClock, recorder: EventRecorder) -> None:
    """A re-run's error reaches the system as the first run's does: it counts towards a pattern."""
    system = ErrorRecoverySystem(unique("rerun-patterns"), clock=clock, pattern_threshold=3)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2))
    with pytest.raises(ConnectionError):
        system.execute_sync(Flaky(9).run_sync)
    assert recorder.of(Event.PATTERN_DETECTED) == [
        PatternDetected("ConnectionError", Flaky.run_sync.__qualname__, 3, 60.0, Flaky.__module__)
    ]


@pytest.mark.parametrize("rejection", REJECTION_TYPES, ids=lambda kind: kind.__name__)
async def test_a_rerun_rejected_ends_the_recovery_even_under_a_catch_all_rule(
    rejection: type[ExecutionRejectedError], driver: str, clock: FakeClock
) -> None:
    """A re-run rejected (the breaker opened, the bulkhead filled) is not re-run again: a rejection
    is never recovered, even when the rule's class (``Exception``) covers it."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(Exception, retry(max_attempts=3, delay=1.0))
    rejected = REJECTION_OF[rejection]

    class Rejecting(Flaky):
        def run_sync(self, *args: Any, **kwargs: Any) -> Any:
            if self.calls:
                self.calls.append((args, kwargs))
                raise rejected
            return super().run_sync(*args, **kwargs)

    flaky = Rejecting(10)
    with pytest.raises(rejection) as caught:
        await run(system, driver, flaky)
    assert caught.value is rejected
    assert len(flaky.calls) == 2
    assert clock.sleeps == [1.0]
    assert system.get_stats()["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}


async def test_retry_never_starts_a_delay_past_the_deadline(driver: str, clock: FakeClock) -> None:
    """A re-run whose delay would end after the current deadline is not started; the error propagates."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=5.0))
    flaky = Flaky(10)
    with SyncDeadline(clock, 3.0, "op"), pytest.raises(ConnectionError, match="fail 1"):
        await run(system, driver, flaky)
    assert clock.sleeps == []
    assert len(flaky.calls) == 1
    assert system.get_stats()["failed_recoveries"] == 1


async def test_each_rerun_takes_the_next_attempt_number(driver: str, clock: FakeClock) -> None:
    """A re-run is a new attempt of the execution: it takes the next number, never restarts at 1."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    probe = AttemptRecorder()
    pipeline = PipelineBuilder("policy").add(system.as_strategy("policy")).add(probe).build()
    flaky = Flaky(2)
    assert await run_pipeline(pipeline, driver, flaky) == "ok"
    assert probe.seen == [1, 2, 3]
    assert pipeline.stats.recovered == 1


async def test_reruns_and_retry_attempts_share_one_numbering(driver: str, clock: FakeClock) -> None:
    """Retry attempts inside recovery re-runs are numbered on from the re-run: every number once."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2))
    hooked: list[int] = []
    inner = Retry(
        unique("inner"),
        RetryPolicy(max_attempts=2, initial_delay=0.0),
        clock=clock,
        on_retry=lambda attempt, _error: hooked.append(attempt),
    )
    probe = AttemptRecorder()
    pipeline = (
        PipelineBuilder("policy", clock=clock)
        .add(system.as_strategy("policy"))
        .add(inner.as_strategy("policy"))
        .add(probe)
        .build()
    )
    flaky = Flaky(5)
    assert await run_pipeline(pipeline, driver, flaky) == "ok"
    assert probe.seen == [1, 2, 3, 4, 5, 6]
    assert hooked == [1, 3, 5]
    assert pipeline.stats.recovered == 1


async def test_the_total_cap_stops_reruns_as_a_failed_recovery(driver: str, clock: FakeClock) -> None:
    """Once the execution made its attempts in total no re-run starts: a failed recovery, last error raised."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=5, delay=1.0))
    pipeline = (
        PipelineBuilder("policy", clock=clock, max_attempts=3).add(system.as_strategy("policy")).build()
    )
    flaky = Flaky(10)
    with pytest.raises(ConnectionError, match="fail 3") as caught:
        await run_pipeline(pipeline, driver, flaky)
    assert caught.value is flaky.raised[-1]
    assert len(flaky.calls) == 3
    assert clock.sleeps == [1.0, 1.0]
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)
    assert pipeline.stats.failed == 1


async def test_a_cap_of_one_attempt_leaves_recovery_no_rerun(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """With a total cap of 1 the rule never re-runs (no delay slept) and reports a failed recovery."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=2.0))
    pipeline = (
        PipelineBuilder("policy", clock=clock, max_attempts=1).add(system.as_strategy("policy")).build()
    )
    flaky = Flaky(1)
    with pytest.raises(ConnectionError, match="fail 1"):
        await run_pipeline(pipeline, driver, flaky)
    assert len(flaky.calls) == 1
    assert clock.sleeps == []
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [RecoveryAttempted("retry", "failure", "ConnectionError")]


# -- RESTART -----------------------------------------------------------------------------------


def test_a_sync_restart_hook_past_the_deadline_starts_no_rerun(clock: FakeClock) -> None:
    """A restart hook that runs past the policy's deadline (a thread cannot be cut) leaves no room
    for the re-run: the dependency is not called again after the deadline, and the caller gets the
    policy's timeout, as the async driver's deadline cancels the hook."""

    def slow_hook() -> None:
        clock.advance(10.0)

    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=slow_hook, delay=1.0)
    )
    config = ResilienceConfig(enable_recovery=True, timeout=5.0, name=unique("policy"))
    flaky = Flaky(10)
    with pytest.raises(OperationTimeoutError):
        manager.execute_with_resilience_sync(flaky.run_sync, config)
    assert len(flaky.calls) == 1
    assert clock.sleeps == [1.0]
    stats = manager.recovery_system.get_stats()  # the deadline ended the recovery: a failed one
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)


async def test_a_blocking_restart_hook_past_the_deadline_starts_no_rerun_in_the_async_driver_either(
    clock: FakeClock,
) -> None:
    """A plain restart hook that blocks the loop past the policy's deadline (its timer cannot fire
    meanwhile) leaves no room for the re-run either: no call after the deadline, the policy's timeout."""

    def blocking_hook() -> None:
        clock.advance(10.0)

    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=blocking_hook, delay=0.0)
    )
    config = ResilienceConfig(enable_recovery=True, timeout=5.0, name=unique("policy"))
    flaky = Flaky(1)
    with pytest.raises(OperationTimeoutError) as caught:
        await manager.execute_with_resilience(flaky.run_async, config)
    assert (caught.value.timeout, caught.value.scope) == (5.0, "total")
    assert len(flaky.calls) == 1
    stats = manager.recovery_system.get_stats()  # the deadline ended the recovery: a failed one
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)


async def test_a_rerun_cut_by_the_deadline_is_a_failed_recovery_in_both_drivers(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """A re-run still running at the policy's deadline: the caller gets the policy's timeout and
    the recovery counts as failed, whether the deadline cancelled the re-run (async) or the re-run
    returned after it and its result was dropped (sync: a thread cannot be cut)."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("fail 1")
        clock.advance(10.0)  # the re-run outlasts the deadline on the policy's clock

    def late() -> str:
        step()
        return "late"

    async def hung() -> str:
        step()
        await asyncio.Event().wait()  # cancelled by the deadline's timer
        return "never"

    # The async deadline's timer runs on the loop's time: a short real one, past on the fake clock too.
    timeout = 0.05 if driver == "async" else 5.0
    config = ResilienceConfig(enable_recovery=True, timeout=timeout, name=unique("policy"))
    with pytest.raises(OperationTimeoutError) as caught:
        if driver == "async":
            await manager.execute_with_resilience(hung, config)
        else:
            manager.execute_with_resilience_sync(late, config)
    assert caught.value.timeout == timeout
    assert len(calls) == 2
    stats = manager.recovery_system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [RecoveryAttempted("retry", "failure", "ConnectionError")]


async def test_restart_calls_hook_before_each_rerun(driver: str, clock: FakeClock) -> None:
    """RESTART calls the hook (sync or async) and then re-runs the operation."""
    log: list[str] = []

    def hook_sync() -> None:
        log.append("hook")

    async def hook_async() -> None:
        await asyncio.sleep(0)
        log.append("hook")

    system = ErrorRecoverySystem(clock=clock)
    hook = hook_async if driver == "async" else hook_sync
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook, delay=0)
    )
    flaky = Flaky(2)
    flaky.log = log
    assert await run(system, driver, flaky) == "ok"
    assert log == ["call", "hook", "call", "hook", "call"]
    assert system.get_stats()["by_strategy"]["restart"] == {"attempts": 1, "successful": 1, "failed": 0}
    assert system._pipeline.stats.recovered == 1


async def test_sync_hook_works_in_the_async_driver(clock: FakeClock) -> None:
    """The async driver accepts a plain function as restart hook."""
    hooked: list[int] = []
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=lambda: hooked.append(1))
    )
    assert await system.execute(Flaky(1).run_async) == "ok"
    assert hooked == [1]


async def test_failing_hook_ends_recovery(driver: str, clock: FakeClock) -> None:
    """A restart hook that raises an error the rule does not cover ends the recovery with it."""

    def hook() -> None:
        raise RuntimeError("cannot reconnect")

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook)
    )
    flaky = Flaky(1)
    with pytest.raises(RuntimeError, match="cannot reconnect"):
        await run(system, driver, flaky)
    assert len(flaky.calls) == 1
    assert system.get_stats()["by_strategy"]["restart"]["failed"] == 1


@pytest.mark.parametrize(("driver", "hook_kind"), [("sync", "sync"), ("async", "sync"), ("async", "async")])
async def test_a_failing_hooks_error_keeps_the_failure_it_restarted_for(
    driver: str, hook_kind: str, clock: FakeClock
) -> None:
    """The restart hook runs after the delay, outside any handling: its error still carries the
    failure that started the restart as its context, as an error raised while it was handled would."""

    def hook() -> None:
        raise RuntimeError("cannot reconnect")

    async def hook_async() -> None:
        await asyncio.sleep(0)
        hook()

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(
            RecoveryStrategy.RESTART, restart_hook=hook_async if hook_kind == "async" else hook, delay=1.0
        ),
    )
    with pytest.raises(RuntimeError, match="cannot reconnect") as info:
        await run(system, driver, Flaky(1))
    assert type(info.value.__context__) is ConnectionError


async def test_a_hooks_error_with_a_context_of_its_own_keeps_it(driver: str, clock: FakeClock) -> None:
    """An error the hook raised while it handled another keeps that context (nothing is overwritten)."""

    def hook() -> None:
        try:
            raise KeyError("pool")
        except KeyError:
            raise RuntimeError("cannot reconnect")  # noqa: B904 - the implicit context is the point

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook)
    )
    with pytest.raises(RuntimeError) as info:
        await run(system, driver, Flaky(1))
    assert type(info.value.__context__) is KeyError


async def test_a_hook_raising_a_covered_error_ends_recovery(driver: str, clock: FakeClock) -> None:
    """A restart hook that raises an error the rule covers ends the recovery too: the hook is not
    called again for each re-run left, and the operation is not re-run after it failed."""
    hooked: list[int] = []

    def hook() -> None:
        hooked.append(1)
        raise ConnectionError("cannot reconnect")

    async def hook_async() -> None:
        await asyncio.sleep(0)
        hook()

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(
            RecoveryStrategy.RESTART,
            restart_hook=hook_async if driver == "async" else hook,
            max_attempts=3,
            delay=1.0,
        ),
    )
    flaky = Flaky(1)
    with pytest.raises(ConnectionError, match="cannot reconnect"):
        await run(system, driver, flaky)
    assert hooked == [1]
    assert len(flaky.calls) == 1
    assert clock.sleeps == [1.0]
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)


async def test_a_covered_rerun_failure_after_a_hook_that_returned_goes_on(
    driver: str, clock: FakeClock
) -> None:
    """Once the hook returned, the re-run's covered error goes on to the next re-run (and hook)."""
    hooked: list[int] = []
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(RecoveryStrategy.RESTART, restart_hook=lambda: hooked.append(1), max_attempts=3),
    )
    flaky = Flaky(2)
    assert await run(system, driver, flaky) == "ok"
    assert hooked == [1, 1]
    assert len(flaky.calls) == 3
    assert system.get_stats()["successful_recoveries"] == 1


def test_async_hook_in_sync_driver_is_a_type_error(clock: FakeClock) -> None:
    """The sync driver refuses an async restart hook (and closes the coroutine)."""

    async def hook() -> None:
        return None

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook)
    )
    with pytest.raises(TypeError, match="restart_hook"):
        system.execute_sync(Flaky(1).run_sync)
    assert system.get_stats()["failed_recoveries"] == 1


def test_an_async_hook_refused_in_a_thread_keeps_the_failure_it_restarted_for(clock: FakeClock) -> None:
    """The refusal is the hook's error: like any it raises, it chains the dependency's failure.

    It had no context: the caller got the TypeError alone, the dependency's error lost (a
    fallback_function refused the same way keeps it). A plain function returning an awaitable:
    only its call tells (a coroutine function is refused before, see below).
    """

    def hook() -> Any:
        return asyncio.sleep(0)

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook, delay=0.0)
    )
    flaky = Flaky(1)
    with pytest.raises(TypeError, match="restart_hook returned an awaitable") as info:
        system.execute_sync(flaky.run_sync)
    assert info.value.__context__ is flaky.raised[0]
    assert len(flaky.calls) == 1  # no re-run after it


def test_an_async_hook_is_refused_in_a_thread_before_its_delay_is_slept(clock: FakeClock) -> None:
    """A coroutine function as ``restart_hook`` can never run in a thread: refused at once, as an async
    operation is (no delay slept for nothing, nothing let go), the failure it restarted for as its
    context, the recovery failed."""

    async def hook() -> None:
        return None

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.RESTART, restart_hook=hook, delay=5.0)
    )
    flaky = Flaky(1)
    with pytest.raises(TypeError, match="restart_hook") as info:
        system.execute_sync(flaky.run_sync)
    assert clock.sleeps == []
    assert info.value.__context__ is flaky.raised[0]
    assert len(flaky.calls) == 1
    assert system.get_stats()["by_strategy"]["restart"] == {"attempts": 1, "successful": 0, "failed": 1}
    error = ConnectionError("caught")
    with pytest.raises(TypeError, match="restart_hook") as caught:
        system.recover_from_error_sync(error, RecoveryContext(operation=flaky.run_sync))
    assert caught.value.__context__ is error
    assert clock.sleeps == []
    assert len(flaky.calls) == 1


# -- FALLBACK ----------------------------------------------------------------------------------


async def test_fallback_value_answers(driver: str, clock: FakeClock) -> None:
    """FALLBACK returns the configured value and the execution counts as a fallback."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value={"status": "degraded"})
    )
    assert await run(system, driver, Flaky(1)) == {"status": "degraded"}
    assert system.get_stats()["by_strategy"]["fallback"] == {"attempts": 1, "successful": 1, "failed": 0}
    assert system._pipeline.stats.fallback == 1


async def test_fallback_function_gets_the_operation_arguments(driver: str, clock: FakeClock) -> None:
    """FALLBACK calls fallback_function with the operation's arguments (awaited when async)."""

    def alt_sync(x: int, *, scale: int) -> int:
        return x * scale

    async def alt_async(x: int, *, scale: int) -> int:
        await asyncio.sleep(0)
        return x * scale

    system = ErrorRecoverySystem(clock=clock)
    alt = alt_async if driver == "async" else alt_sync
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=alt)
    )
    assert await run(system, driver, Flaky(1), 7, scale=3) == 21


async def test_failing_fallback_function_propagates(driver: str, clock: FakeClock) -> None:
    """A fallback function that raises fails the recovery; its error carries the original as context."""

    def alt(*_: Any) -> None:
        raise LookupError("no cache")

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=alt)
    )
    with pytest.raises(LookupError, match="no cache") as caught:
        await run(system, driver, Flaky(1))
    assert isinstance(caught.value.__context__, ConnectionError)
    assert system.get_stats()["by_strategy"]["fallback"]["failed"] == 1


async def test_a_fallback_function_the_deadline_ends_is_a_failed_recovery_in_both_drivers(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """A fallback function still running at the policy's deadline: the caller gets the policy's
    timeout and the recovery counts as failed, whether the deadline cancelled the function (async)
    or it returned after it and its answer was dropped (sync: a thread cannot be cut)."""

    def late(*_: Any) -> str:
        clock.advance(10.0)  # past the deadline on the policy's clock
        return "late"

    async def hung(*_: Any) -> str:
        clock.advance(10.0)
        await asyncio.Event().wait()  # cancelled by the deadline's timer
        return "never"

    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=hung if driver == "async" else late),
    )
    # The async deadline's timer runs on the loop's time: a short real one, past on the fake clock too.
    timeout = 0.05 if driver == "async" else 5.0
    config = ResilienceConfig(enable_recovery=True, timeout=timeout, name=unique("policy"))
    with pytest.raises(OperationTimeoutError) as caught:
        await run_in(manager, config, driver, Flaky(1))
    assert caught.value.timeout == timeout
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [
        RecoveryAttempted("fallback", "failure", "ConnectionError")
    ]


async def test_a_fallback_a_reruns_error_led_to_ended_by_the_deadline_counts_each_recovery_once(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """The RETRY a re-run's error ended failed is counted once, when the FALLBACK that took over is
    then ended by the deadline (cancelled, async; answered too late, sync)."""

    def late(*_: Any) -> str:
        clock.advance(10.0)
        return "late"

    async def hung(*_: Any) -> str:
        clock.advance(10.0)
        await asyncio.Event().wait()
        return "never"

    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    manager.recovery_system.register_recovery_rule(
        ValueError,
        RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=hung if driver == "async" else late),
    )
    timeout = 0.05 if driver == "async" else 5.0
    config = ResilienceConfig(enable_recovery=True, timeout=timeout, name=unique("policy"))
    with pytest.raises(OperationTimeoutError):
        await run_in(manager, config, driver, Sequence(ConnectionError, ValueError))
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["retry"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [
        RecoveryAttempted("retry", "failure", "ConnectionError", "ValueError"),
        RecoveryAttempted("fallback", "failure", "ValueError"),
    ]


class _Interrupt(BaseException):
    """An interrupt (no Exception): what ends a run without being its failure."""


@pytest.mark.parametrize("strategy", ["retry", "fallback"])
async def test_a_run_interrupted_past_the_deadline_is_a_failed_recovery_in_both_drivers(
    driver: str, clock: FakeClock, strategy: str
) -> None:
    """A re-run and a fallback function that an interrupt ends past the policy's deadline are both
    failed recoveries, in both drivers (the sync driver lost the fallback function's attempt)."""
    calls: list[int] = []

    def operation_sync() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        clock.advance(10.0)  # the re-run: past the deadline on the policy's clock
        raise _Interrupt

    async def operation_async() -> None:
        operation_sync()

    def fallback_sync() -> None:
        clock.advance(10.0)
        raise _Interrupt

    async def fallback_async() -> None:
        fallback_sync()

    if strategy == "retry":
        action = RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    else:
        fallback = fallback_async if driver == "async" else fallback_sync
        action = RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=fallback)
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(ConnectionError, action)
    config = ResilienceConfig(enable_recovery=True, timeout=5.0, name=unique("policy"))
    with pytest.raises(_Interrupt):
        if driver == "async":
            await manager.execute_with_resilience(operation_async, config)
        else:
            manager.execute_with_resilience_sync(operation_sync, config)
    stats = manager.recovery_system.get_stats()["by_strategy"][strategy]
    assert stats == {"attempts": 1, "successful": 0, "failed": 1}


def test_a_fallback_value_answered_past_the_deadline_is_a_failed_recovery(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """An error that comes after the deadline in a thread: the scope drops the fallback's answer for
    its timeout, so the recovery did not answer the caller and counts as failed."""

    def slow() -> None:
        clock.advance(10.0)
        raise ConnectionError("late")

    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="cached")
    )
    config = ResilienceConfig(enable_recovery=True, timeout=5.0, name=unique("policy"))
    with pytest.raises(OperationTimeoutError):
        manager.execute_with_resilience_sync(slow, config)
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["fallback"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [
        RecoveryAttempted("fallback", "failure", "ConnectionError")
    ]


# -- ISOLATE -----------------------------------------------------------------------------------


async def test_isolate_forces_the_named_breaker_open(driver: str, clock: FakeClock) -> None:
    """ISOLATE force-opens the rule's breaker for isolate_duration, then re-raises the original error."""
    breaker = StandInBreaker(unique("db"))
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=breaker.name, isolate_duration=45.0),
    )
    flaky = Flaky(1)
    with pytest.raises(ConnectionError) as caught:
        await run(system, driver, flaky)
    assert caught.value is flaky.raised[0]
    assert breaker.opened == [(45.0, "isolated")]
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 1, "failed": 0}


async def test_isolate_leaves_a_breaker_an_operator_switched_off_as_it_is(
    driver: str, clock: FakeClock
) -> None:
    """ISOLATE never opens a breaker in disable() or metrics_only() mode: both last until reset()."""
    system = ErrorRecoverySystem(clock=clock)
    for mode in ("disable", "metrics_only"):
        breaker = CircuitBreaker(unique(mode), clock=clock)
        getattr(breaker, mode)()
        state = breaker.state
        system.register_recovery_rule(
            ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=breaker.name)
        )
        with pytest.raises(ConnectionError):
            await run(system, driver, Flaky(1))
        assert breaker.state is state
        assert breaker.call_sync(lambda: "served") == "served"


async def test_an_isolation_an_operator_mode_refused_is_a_failed_recovery(
    driver: str, clock: FakeClock
) -> None:
    """ISOLATE on a breaker in disable() or metrics_only() mode opened nothing: a failed attempt, not a success."""
    for mode in ("disable", "metrics_only"):
        system = ErrorRecoverySystem(clock=clock)
        breaker = CircuitBreaker(unique(mode), clock=clock)
        getattr(breaker, mode)()
        system.register_recovery_rule(
            ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=breaker.name)
        )
        with pytest.raises(ConnectionError):
            await run(system, driver, Flaky(1))
        assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}
        breaker.reset()  # back to normal operation: an isolation opens it
        with pytest.raises(ConnectionError):
            await run(system, driver, Flaky(1))
        assert breaker.state is CircuitState.OPEN
        assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 2, "successful": 1, "failed": 1}


async def test_isolate_falls_back_on_the_context_breaker(driver: str, clock: FakeClock) -> None:
    """Without isolate_breaker, ISOLATE opens the breaker the context or the pipeline link names."""
    from_context = StandInBreaker(unique("ctx"))
    from_link = StandInBreaker(unique("link"))
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE))
    error = ConnectionError("down")
    with pytest.raises(ConnectionError) as caught:
        await recover(system, driver, error, {"breaker": from_context.name, "operation_name": "fetch"})
    assert caught.value is error
    assert from_context.opened == [(30.0, "isolated")]
    pipeline = PipelineBuilder("policy").add(system.as_strategy("policy", breaker=from_link.name)).build()
    with pytest.raises(ConnectionError):
        await run_pipeline(pipeline, driver, Flaky(1))
    assert from_link.opened == [(30.0, "isolated")]


async def test_isolate_without_a_breaker_fails_and_logs(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """ISOLATE with no breaker to find counts a failed attempt, logs it, and re-raises the original error."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=unique("missing"))
    )
    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(ConnectionError):
        await run(system, driver, Flaky(1))
    assert "found no circuit breaker" in caplog.text
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}


async def test_isolate_of_a_missing_breaker_logs_once_per_name_and_counts_every_failure(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An ISOLATE rule naming no live breaker warns once per name, however many failures; each is counted."""
    missing, other = unique("missing"), unique("other")
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=missing)
    )
    system.register_recovery_rule(
        TimeoutError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=other)
    )
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(5):
            with pytest.raises(ConnectionError):
                await run(system, driver, Flaky(1))
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await run(system, driver, Flaky(1, TimeoutError))
    warned = [r.getMessage() for r in caplog.records if "found no circuit breaker" in r.getMessage()]
    assert len(warned) == 2, warned
    assert missing in warned[0]
    assert other in warned[1]
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 8, "successful": 0, "failed": 8}


async def test_isolate_whose_resolver_raises_fails_and_reraises_the_original(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A breaker resolver that raises (a registry's KeyError) is a failed isolation, as a breaker
    that cannot be forced open: logged and counted, and the caller gets the dependency's error, not
    the resolver's."""
    registry: dict[str, StandInBreaker] = {}
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker="db")
    )
    link = system.as_strategy("policy", breakers=lambda name: registry[name])
    pipeline = PipelineBuilder("policy", clock=clock).add(link).build()
    flaky = Flaky(1)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(ConnectionError) as caught:
        await run_pipeline(pipeline, driver, flaky)
    assert caught.value is flaky.raised[0]
    assert "could not isolate breaker 'db'" in caplog.text
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}


async def test_isolate_of_a_breaker_a_reload_replaced_is_a_failed_recovery(
    driver: str, clock: FakeClock
) -> None:
    """A resolver that returns a policy's breaker a reload since dropped isolates nothing (no call
    asks that breaker): a failed attempt, the breaker left as it was, the one in use still CLOSED."""
    manager = ResilienceManager(clock=clock)
    name = unique("replaced")
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=100), name=name)
    kept = manager.policy(name, config).circuit_breaker
    assert kept is not None
    handle = manager.reconfigure(name, dataclasses.replace(config, circuit_breaker_name=unique("renamed")))
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker="db")
    )
    link = system.as_strategy("policy", breakers=lambda _name: kept)
    pipeline = PipelineBuilder("policy", clock=clock).add(link).build()
    with pytest.raises(ConnectionError):
        await run_pipeline(pipeline, driver, Flaky(1))
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}
    assert kept.state is CircuitState.CLOSED
    assert handle.circuit_breaker is not None
    assert handle.circuit_breaker.state is CircuitState.CLOSED


class AsyncForceOpen:
    """A breaker of the user's own whose ``force_open`` is a coroutine function: calling it opens nothing."""

    __slots__ = ("closed", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = 0

    async def force_open(self, duration: float | None = None, *, reason: str = "forced") -> None:
        raise AssertionError("unreachable: the coroutine is never awaited")


async def test_isolate_whose_breaker_opens_asynchronously_fails_and_reraises_the_original(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, unraisable: list[object]
) -> None:
    """``force_open`` is called, never awaited: an awaitable it returns opened nothing, so the isolation failed.

    Logged and counted failed (not a successful isolation of a breaker still closed), its
    coroutine closed (no "never awaited" warning), and the caller gets the dependency's error.
    """
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE))
    breaker = AsyncForceOpen(unique("async-breaker"))
    pipeline = (
        PipelineBuilder("policy", clock=clock).add(system.as_strategy("policy", breaker=breaker)).build()
    )
    flaky = Flaky(1)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(ConnectionError) as caught:
        await run_pipeline(pipeline, driver, flaky)
    assert caught.value is flaky.raised[0]
    assert f"could not isolate breaker {breaker.name!r}" in caplog.text
    assert "AsyncForceOpen.force_open returned <coroutine" in caplog.text
    assert "it must open the breaker when called, never awaited" in caplog.text
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}
    gc.collect()
    assert unraisable == []


async def test_isolate_whose_resolver_returns_a_coroutine_fails_and_reraises_the_original(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, unraisable: list[object]
) -> None:
    """A resolver is called, never awaited: a coroutine it returns found no breaker (closed, logged, failed)."""

    async def lookup(name: str) -> StandInBreaker:
        raise AssertionError("unreachable: the coroutine is never awaited")

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker="db")
    )
    link = system.as_strategy("policy", breakers=lambda name: lookup(name))
    pipeline = PipelineBuilder("policy", clock=clock).add(link).build()
    flaky = Flaky(1)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(ConnectionError) as caught:
        await run_pipeline(pipeline, driver, flaky)
    assert caught.value is flaky.raised[0]
    assert "ErrorRecoverySystem.breakers returned <coroutine" in caplog.text
    assert system.get_stats()["by_strategy"]["isolate"] == {"attempts": 1, "successful": 0, "failed": 1}
    gc.collect()
    assert unraisable == []


async def run_in(manager: ResilienceManager, config: ResilienceConfig, driver: str, flaky: Flaky) -> Any:
    if driver == "async":
        return await manager.execute_with_resilience(flaky.run_async, config)
    return manager.execute_with_resilience_sync(flaky.run_sync, config)


async def test_isolate_in_a_manager_opens_the_policys_own_breaker(
    driver: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """In a manager, ISOLATE without isolate_breaker force-opens the policy's breaker: a successful attempt."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=20.0)
    )
    name = unique("policy")
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100), enable_recovery=True, name=name
    )
    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(ConnectionError):
        await run_in(manager, config, driver, Flaky(1))
    breaker = manager.get_circuit_breaker(name)
    assert breaker.state is CircuitState.OPEN
    assert breaker.get_stats()["retry_after"] == 20.0
    stats = manager.recovery_system.get_stats()
    assert stats["by_strategy"]["isolate"] == {"attempts": 1, "successful": 1, "failed": 0}
    assert stats["recovery_rate"] == 1.0
    assert "isolate" not in caplog.text


def test_a_manager_refuses_a_recovery_system_on_another_clock(clock: FakeClock) -> None:
    """The re-runs' delays and their room before the policy's deadline are read on the recovery
    system's clock, the deadline on the manager's: two clocks would silently skip or stretch every
    re-run (a 30 s timeout on a fake clock left no room on the system clock), so it is refused."""
    with pytest.raises(ValueError, match=r"ResilienceManager\.recovery_system"):
        ResilienceManager(clock=clock, recovery_system=ErrorRecoverySystem())
    with pytest.raises(ValueError, match=r"ResilienceManager\.recovery_system"):
        ResilienceManager(recovery_system=ErrorRecoverySystem(clock=clock))
    system = ErrorRecoverySystem(clock=clock)
    assert ResilienceManager(clock=clock, recovery_system=system).recovery_system is system


async def test_isolate_never_shortens_an_opening(driver: str, clock: FakeClock) -> None:
    """ISOLATE keeps a breaker open *at least* ``isolate_duration``: the trip the same failure just
    caused (60 s) and an operator's opening until reset are kept; an opening about to end is extended."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_duration=5.0)
    )
    name = unique("policy")
    config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0),
        enable_recovery=True,
        name=name,
    )
    with pytest.raises(ConnectionError):
        await run_in(manager, config, driver, Flaky(1))
    breaker = manager.get_circuit_breaker(name)
    assert breaker.get_stats()["retry_after"] == 60.0
    clock.advance(6.0)
    assert breaker.state is CircuitState.OPEN

    db = unique("db")
    operator = manager.get_circuit_breaker(db)
    operator.force_open()  # until reset
    manager.recovery_system.register_recovery_rule(
        OSError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=db, isolate_duration=5.0)
    )
    other = ResilienceConfig(enable_recovery=True, name=unique("api"))
    with pytest.raises(OSError):
        await run_in(manager, other, driver, Flaky(1, error=OSError))
    clock.advance(6.0)
    assert operator.state is CircuitState.OPEN
    assert operator.get_stats()["retry_after"] == float("inf")

    clock.advance(46.0)  # the policy's breaker: 2 s of its 60 s left
    assert breaker.get_stats()["retry_after"] == 2.0
    breaker_isolation = RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=name, isolate_duration=5.0)
    manager.recovery_system.register_recovery_rule(OSError, breaker_isolation)
    with pytest.raises(OSError):
        await run_in(manager, other, driver, Flaky(1, error=OSError))
    assert breaker.get_stats()["retry_after"] == 5.0
    assert manager.recovery_system.get_stats()["by_strategy"]["isolate"] == {
        "attempts": 3,
        "successful": 3,
        "failed": 0,
    }


async def test_named_isolate_breaker_resolves_within_the_same_manager(driver: str, clock: FakeClock) -> None:
    """isolate_breaker names a breaker of the rule's own manager, never a namesake of another manager."""
    db = unique("db")
    first, second, third = (ResilienceManager(clock=clock) for _ in range(3))
    mine = first.get_circuit_breaker(db)
    other = second.get_circuit_breaker(db)  # created later: the process-wide registry's choice
    for manager in (first, third):
        manager.recovery_system.register_recovery_rule(
            ConnectionError, RecoveryAction(RecoveryStrategy.ISOLATE, isolate_breaker=db)
        )
    config = ResilienceConfig(enable_recovery=True, name=unique("api"))
    with pytest.raises(ConnectionError):
        await run_in(first, config, driver, Flaky(1))
    assert (mine.state, other.state) == (CircuitState.OPEN, CircuitState.CLOSED)
    with pytest.raises(ConnectionError):
        await run_in(third, config, driver, Flaky(1))  # the third manager has no breaker of that name
    assert other.state is CircuitState.CLOSED
    assert third.recovery_system.get_stats()["by_strategy"]["isolate"] == {
        "attempts": 1,
        "successful": 0,
        "failed": 1,
    }


# -- ESCALATE ----------------------------------------------------------------------------------


async def test_escalate_raises_from_the_original(driver: str, clock: FakeClock) -> None:
    """ESCALATE raises RecoveryEscalatedError whose __cause__ is the original error."""
    system = ErrorRecoverySystem("esc", clock=clock)
    system.register_recovery_rule(ConnectionError, RecoveryAction(RecoveryStrategy.ESCALATE))
    flaky = Flaky(1)
    with pytest.raises(RecoveryEscalatedError) as caught:
        await run(system, driver, flaky)
    assert caught.value.__cause__ is flaky.raised[0]
    assert (caught.value.error_type, caught.value.operation) == (
        "ConnectionError",
        op_for(driver, flaky).__qualname__,
    )
    stats = system.get_stats()
    assert (stats["escalations"], stats["failed_recoveries"], stats["attempts"]) == (1, 1, 1)


# -- cancellation ------------------------------------------------------------------------------


class BlockingClock(FakeClock):
    """A fake clock whose async sleep blocks until cancelled."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await asyncio.Event().wait()


async def test_cancellation_during_delay_propagates_and_counts_nothing() -> None:
    """Cancelling the task during a recovery delay raises CancelledError and counts no attempt."""
    clock = BlockingClock()
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=1.0))
    flaky = Flaky(10)
    task = asyncio.create_task(system.execute(flaky.run_async))
    await asyncio.wait_for(clock.sleeping.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (0, 0, 0)
    assert len(flaky.calls) == 1
    assert system._pipeline.stats.cancelled == 1


def test_interrupt_during_sync_delay_propagates_and_counts_nothing() -> None:
    """A KeyboardInterrupt during a sync recovery delay propagates and counts no attempt."""

    class InterruptingClock(FakeClock):
        def sleep_sync(self, seconds: float) -> None:
            raise KeyboardInterrupt

    system = ErrorRecoverySystem(clock=InterruptingClock())
    system.register_recovery_rule(ConnectionError, retry(delay=1.0))
    with pytest.raises(KeyboardInterrupt):
        system.execute_sync(Flaky(10).run_sync)
    assert system.get_stats()["attempts"] == 0


async def test_cancellation_is_never_recovered(clock: FakeClock) -> None:
    """A CancelledError is not recovered even by a catch-all rule, and is not counted or fingerprinted."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=2)
    system.register_recovery_rule(Exception, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=1))

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await system.execute(cancelled)
    error = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError) as caught:
        await system.recover_from_error(error)
    assert caught.value is error
    with pytest.raises(asyncio.CancelledError):
        system.recover_from_error_sync(asyncio.CancelledError())
    assert system.get_stats()["attempts"] == 0
    assert system.get_stats()["patterns_detected"] == 0


@needs_task_cancelling
async def test_an_error_a_cancelled_rerun_raises_on_its_way_out_runs_nothing_again(clock: FakeClock) -> None:
    """A re-run that turns the caller's cancellation into an error the rule covers is not re-run again."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=2)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3, delay=0.0))
    rerunning = asyncio.Event()
    runs: list[int] = []

    async def operation() -> str:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            raise ConnectionError("refused")
        if len(runs) > 2:
            return "ran again"
        rerunning.set()
        return await converted_cancellation()

    task = asyncio.create_task(system.execute(operation))
    await asyncio.wait_for(rerunning.wait(), 2.0)
    task.cancel()
    with pytest.raises(ConnectionError, match="connection aborted"):
        await task
    assert runs == [1, 2]
    stats = system.get_stats()
    assert (stats["attempts"], stats["patterns_detected"]) == (0, 0)


REJECTIONS: tuple[ExecutionRejectedError, ...] = (
    CircuitOpenError("db", "open", 5.0),
    BulkheadFullError("pool", 2, 0),
    BulkheadTimeoutError("pool", 2, 4, 1.0),
)


@pytest.mark.parametrize("rejection", REJECTIONS, ids=lambda e: type(e).__name__)
async def test_rejections_are_neither_recovered_nor_patterns(
    rejection: ExecutionRejectedError, driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """A rejection passes a catch-all rule unchanged: no recovery attempt, no pattern, no event."""
    system = ErrorRecoverySystem(unique("rej"), clock=clock, pattern_threshold=2)
    system.register_recovery_rule(Exception, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="fb"))

    def rejected() -> None:
        raise rejection

    async def rejected_async() -> None:
        raise rejection

    for _ in range(3):
        with pytest.raises(type(rejection)) as caught:
            if driver == "async":
                await system.execute(rejected_async)
            else:
                system.execute_sync(rejected)
        assert caught.value is rejection
        with pytest.raises(type(rejection)) as caught:
            await recover(system, driver, rejection, {"operation_name": "fetch"})
        assert caught.value is rejection
    stats = system.get_stats()
    assert (stats["attempts"], stats["patterns_detected"], stats["recovery_rate"]) == (0, 0, 1.0)
    assert recorder.of(Event.PATTERN_DETECTED) == []
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == []
    assert system._pipeline.stats.rejected == 3


@pytest.mark.parametrize("rejection", [ExecutionRejectedError, CircuitOpenError, BulkheadTimeoutError])
def test_a_rule_for_a_rejection_is_refused(rejection: type[Exception]) -> None:
    """Registering a rule for a rejection type raises ValueError naming exc_type (it could never act)."""
    system = ErrorRecoverySystem()
    with pytest.raises(ValueError, match=r"ErrorRecoverySystem\.exc_type must be an error of the dependency"):
        system.register_recovery_rule(rejection, retry())
    assert system.rules == {}


async def test_operation_of_the_wrong_kind_is_a_type_error(clock: FakeClock) -> None:
    """recover_from_error given a plain operation, or its sync twin an async one, raises TypeError.

    The plain operation is refused once its re-run called it: a failed recovery (never an
    uncounted cancellation). The async one is refused before any re-run: no recovery attempt.
    """
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2))
    plain, coroutine_function = Flaky(0), Flaky(0)
    with pytest.raises(TypeError, match="fn must return an awaitable"):
        await system.recover_from_error(ConnectionError(), {"operation": plain.run_sync})
    with pytest.raises(TypeError, match="fn is a coroutine function"):
        system.recover_from_error_sync(ConnectionError(), {"operation": coroutine_function.run_async})
    assert len(plain.calls) == 1
    stats = system.get_stats()
    assert (stats["attempts"], stats["failed_recoveries"]) == (1, 1)


def test_an_async_operation_for_the_sync_api_is_refused_before_any_delay(clock: FakeClock) -> None:
    """recover_from_error_sync refuses an async operation before the re-run's delay (a second by
    default, slept for nothing)."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2, delay=1.0))
    coroutine_function = Flaky(0)
    caught = ConnectionError("caught")
    with pytest.raises(TypeError, match="fn is a coroutine function"):
        system.recover_from_error_sync(caught, {"operation": coroutine_function.run_async})
    assert clock.sleeps == []
    assert coroutine_function.calls == []
    assert system.get_stats()["attempts"] == 0


# -- recover_from_error ------------------------------------------------------------------------


async def test_spec_example(clock: FakeClock) -> None:
    """The SPEC example: a RETRY rule for ConnectionError recovers an error already caught."""
    recovery_system = ErrorRecoverySystem(clock=clock)
    recovery_system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=3, delay=5.0),
    )
    flaky = Flaky(1)
    try:
        await flaky.run_async("doc")
    except ConnectionError as error:
        context = RecoveryContext(operation=flaky.run_async, args=("doc",), operation_name="analyze")
        result = await recovery_system.recover_from_error(error, context)
    assert result == "ok"
    assert clock.sleeps == [5.0]
    assert recovery_system.get_stats()["recovery_rate"] == 1.0


async def test_recover_from_error_accepts_a_mapping(driver: str, clock: FakeClock) -> None:
    """A plain mapping with RecoveryContext's keys works as the context (list args included)."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=1))
    flaky = Flaky(0)
    context = {"operation": op_for(driver, flaky), "args": [1, 2], "kwargs": {"k": 3}, "operation_name": "op"}
    assert await recover(system, driver, ConnectionError(), context) == "ok"
    assert flaky.calls == [((1, 2), {"k": 3})]


@pytest.mark.parametrize(
    ("context", "error", "match"),
    [
        ({"opration": print}, ValueError, r"RecoveryContext\.opration must be one of"),
        ({"operation": 3}, TypeError, r"RecoveryContext\.operation must be callable"),
        ({"args": "ab"}, TypeError, r"RecoveryContext\.args must be a tuple or a list"),
        ({"kwargs": [1]}, TypeError, r"RecoveryContext\.kwargs must be a mapping"),
        (
            {"kwargs": {"k": 1, 2: 3}},
            TypeError,
            r"RecoveryContext\.kwargs must be a mapping of keyword names \(str keys; 2 is not one\), got \{'k': 1, 2: 3\}",
        ),
        ({"operation_name": ""}, ValueError, r"RecoveryContext\.operation_name"),
        ({"breaker": 1}, TypeError, r"RecoveryContext\.breaker"),
        ({}, TypeError, r"RecoveryContext\.operation must be a callable for RETRY"),
        ("ctx", TypeError, r"ErrorRecoverySystem\.context must be a RecoveryContext or a mapping"),
    ],
)
async def test_bad_context_is_rejected(
    context: Any, error: type[Exception], match: str, clock: FakeClock
) -> None:
    """A malformed context, or a RETRY rule with nothing to re-run, raises naming the field."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry())
    with pytest.raises(error, match=match):
        await system.recover_from_error(ConnectionError(), context)
    assert system.get_stats()["attempts"] == 0


def test_recover_from_error_needs_an_exception(clock: FakeClock) -> None:
    """Passing something that is not an exception is a TypeError."""
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.error must be an exception"):
        ErrorRecoverySystem(clock=clock).recover_from_error_sync("boom")  # type: ignore[arg-type]


# -- pattern detection -------------------------------------------------------------------------


def _feed(
    system: ErrorRecoverySystem, error_type: type[Exception] = ConnectionError, operation: str = "op"
) -> None:
    with pytest.raises(error_type):
        system.recover_from_error_sync(error_type(), {"operation_name": operation})


def test_a_context_operation_is_named_as_a_callable_else_unknown(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Without operation_name, a partial's pattern names ``partial(<its function>)``, and no operation ``unknown``."""

    def lookup(table: str) -> str:
        return table

    system = ErrorRecoverySystem(unique("named-op"), clock=clock, pattern_threshold=2, pattern_window=10.0)
    for context in ({"operation": functools.partial(lookup, "users")}, {}):
        for _ in range(2):
            with pytest.raises(ConnectionError):
                system.recover_from_error_sync(ConnectionError(), context)
    assert [event.operation for event in recorder.of(Event.PATTERN_DETECTED)] == [
        f"partial({lookup.__qualname__})",
        "unknown",
    ]


def test_pattern_detected_at_threshold_once_per_window(clock: FakeClock, recorder: EventRecorder) -> None:
    """N errors of one fingerprint within the window report one pattern; more in that window report none."""
    system = ErrorRecoverySystem(unique("pat"), clock=clock, pattern_threshold=3, pattern_window=10.0)
    _feed(system)
    clock.advance(1)
    _feed(system)
    assert recorder.of(Event.PATTERN_DETECTED) == []
    clock.advance(1)
    _feed(system)
    assert recorder.of(Event.PATTERN_DETECTED) == [PatternDetected("ConnectionError", "op", 3, 10.0)]
    for _ in range(5):
        clock.advance(1)
        _feed(system)
    assert len(recorder.of(Event.PATTERN_DETECTED)) == 1
    clock.advance(5)  # 10 s after the report, and still 3 errors within the window
    _feed(system)
    assert len(recorder.of(Event.PATTERN_DETECTED)) == 2
    assert system.get_stats()["patterns_detected"] == 2
    assert recorder.sources(Event.PATTERN_DETECTED)[0].kind == "recovery"


def test_spread_out_errors_are_no_pattern(clock: FakeClock, recorder: EventRecorder) -> None:
    """Errors further apart than the window, or of different fingerprints, make no pattern."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=3, pattern_window=10.0)
    for _ in range(5):
        _feed(system)
        clock.advance(6)
    _feed(system, ValueError)
    _feed(system, ConnectionError, "other")
    assert recorder.of(Event.PATTERN_DETECTED) == []


def test_matched_and_unmatched_errors_are_both_fed(clock: FakeClock, recorder: EventRecorder) -> None:
    """Errors a rule recovers count towards a pattern like errors no rule covers."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=2)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=0)
    )
    assert system.execute_sync(Flaky(1).run_sync) == 0
    assert system.execute_sync(Flaky(1).run_sync) == 0
    assert recorder.of(Event.PATTERN_DETECTED) == [
        PatternDetected("ConnectionError", Flaky.run_sync.__qualname__, 2, 60.0, Flaky.__module__)
    ]


async def fetch_a() -> None:
    raise ConnectionError("a")


async def fetch_b() -> None:
    raise ConnectionError("b")


def fetch_a_sync() -> None:
    raise ConnectionError("a")


def fetch_b_sync() -> None:
    raise ConnectionError("b")


@pytest.mark.parametrize("name", ["recovery", "payments-recovery"])
async def test_used_alone_each_function_is_its_own_operation(
    driver: str, name: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Used alone (execute, execute_sync, protect), a fingerprint names the function, not the system.

    Two functions failing alike once each make no pattern; one of them failing twice makes one,
    named after it, as ``recover_from_error`` names its context's operation.
    """
    system = ErrorRecoverySystem(
        unique(name) if name != "recovery" else name, clock=clock, pattern_threshold=2
    )
    a, b = (fetch_a, fetch_b) if driver == "async" else (fetch_a_sync, fetch_b_sync)
    for fn in (a, b):
        with pytest.raises(ConnectionError):
            if driver == "async":
                await system.execute(fn)
            else:
                system.execute_sync(fn)
    assert recorder.of(Event.PATTERN_DETECTED) == []
    protected = system.protect(a)
    with pytest.raises(ConnectionError):
        await protected() if driver == "async" else protected()
    assert recorder.of(Event.PATTERN_DETECTED) == [
        PatternDetected("ConnectionError", a.__qualname__, 2, 60.0, a.__module__)
    ]


def _namesake(module: str, *, is_async: bool) -> Any:
    """A function named ``fetch`` of module ``module`` (as ``users.fetch`` and ``orders.fetch`` are)."""
    namespace: dict[str, Any] = {"__name__": module}
    keyword = "async def" if is_async else "def"
    exec(f"{keyword} fetch():\n    raise ConnectionError({module!r})\n", namespace)
    return namespace["fetch"]


async def test_used_alone_namesakes_of_two_modules_are_two_operations(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """``users.fetch`` and ``orders.fetch`` failing twice each make no pattern at a threshold of 4.

    Each function is its own fingerprint (its module and name), while both keep the name ``fetch``
    in telemetry; one of them failing twice more makes a pattern named ``fetch``.
    """
    system = ErrorRecoverySystem(unique("namesakes"), clock=clock, pattern_threshold=4)
    users, orders = (_namesake(module, is_async=driver == "async") for module in ("users", "orders"))
    assert (users.__qualname__, orders.__qualname__) == ("fetch", "fetch")

    async def fail(fn: Any) -> None:
        with pytest.raises(ConnectionError):
            if driver == "async":
                await system.execute(fn)
            else:
                system.execute_sync(fn)

    for fn in (users, orders, users, orders):
        await fail(fn)
    assert recorder.of(Event.PATTERN_DETECTED) == []
    assert system.get_stats()["patterns_detected"] == 0
    assert len(system._detector) == 2
    for _ in range(2):
        await fail(users)
    assert recorder.of(Event.PATTERN_DETECTED) == [
        PatternDetected("ConnectionError", "fetch", 4, 60.0, "users")
    ]


def test_caught_errors_of_namesakes_of_two_modules_are_two_operations(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """recover_from_error without an operation_name tells two modules' ``fetch`` apart too."""
    system = ErrorRecoverySystem(unique("caught-namesakes"), clock=clock, pattern_threshold=4)
    users, orders = (_namesake(module, is_async=False) for module in ("users", "orders"))
    for fn in (users, orders, users, orders):
        with pytest.raises(ConnectionError):
            system.recover_from_error_sync(ConnectionError(), {"operation": fn})
    assert recorder.of(Event.PATTERN_DETECTED) == []
    for _ in range(2):
        with pytest.raises(ConnectionError):
            system.recover_from_error_sync(ConnectionError(), {"operation": orders})
    assert recorder.of(Event.PATTERN_DETECTED) == [
        PatternDetected("ConnectionError", "fetch", 4, 60.0, "orders")
    ]


def test_a_namesake_s_module_is_kept_bounded_in_its_fingerprint(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Modules longer than an attribute, differing only past its limit, stay two fingerprints, each cut."""
    system = ErrorRecoverySystem(unique("long-modules"), clock=clock, pattern_threshold=2)
    stem = "m" * (MAX_ATTRIBUTE_LENGTH * 4)
    first, second = (_namesake(stem + tail, is_async=False) for tail in ("a", "b"))
    for fn in (first, second):
        with pytest.raises(ConnectionError):
            system.execute_sync(fn)
    assert recorder.of(Event.PATTERN_DETECTED) == []
    keys = list(system._detector._tracks)
    assert len(keys) == 2
    assert all(len(module) <= MAX_ATTRIBUTE_LENGTH for _, _, module in keys if module is not None)


def test_error_types_named_alike_up_to_the_attribute_limit_are_two_fingerprints(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Two error classes whose names differ only past the attribute limit are two patterns, not one."""
    system = ErrorRecoverySystem(unique("long-types"), clock=clock, pattern_threshold=2)
    stem = "Refused" * MAX_ATTRIBUTE_LENGTH
    first, second = (type(stem + tail, (ConnectionError,), {}) for tail in ("A", "B"))
    for kind in (first, second):
        with pytest.raises(ConnectionError):
            system.recover_from_error_sync(kind(), {"operation_name": "op"})
    assert recorder.of(Event.PATTERN_DETECTED) == []
    assert system.get_stats()["patterns_detected"] == 0
    keys = list(system._detector._tracks)
    assert len(keys) == 2
    assert all(len(error_type) <= MAX_ATTRIBUTE_LENGTH for error_type, _, _ in keys)
    with pytest.raises(ConnectionError):
        system.recover_from_error_sync(second(), {"operation_name": "op"})
    (detected,) = recorder.of(Event.PATTERN_DETECTED)
    assert detected.error_type == error_type_name(second())  # reported by the bounded name telemetry shows


def test_fallback_value_is_the_very_object_at_every_fallback(clock: FakeClock) -> None:
    """As documented (as FallbackConfig.default_value): never a copy, so a caller's change shows later."""
    answer: list[str] = []
    system = ErrorRecoverySystem(unique("same-answer"), clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=answer)
    )
    first = system.execute_sync(fetch_a_sync)
    first.append("changed by a caller")
    assert first is answer
    assert system.execute_sync(fetch_b_sync) == ["changed by a caller"]


def test_a_caught_error_named_as_the_system_keeps_that_name(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """recover_from_error names its context's operation, even one spelled as the system's name."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=2)
    _feed(system, operation="recovery")
    _feed(system, operation="recovery")
    assert recorder.of(Event.PATTERN_DETECTED) == [PatternDetected("ConnectionError", "recovery", 2, 60.0)]


async def test_in_a_pipeline_the_operation_stays_the_pipeline(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """A link the system makes for a pipeline of one's own names that pipeline, whatever function runs."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=2)
    pipeline = PipelineBuilder(unique("orders"), clock=clock).add(system.as_strategy()).build()
    for fn in (fetch_a, fetch_b):
        with pytest.raises(ConnectionError):
            await pipeline.execute(fn)
    assert recorder.of(Event.PATTERN_DETECTED) == [PatternDetected("ConnectionError", pipeline.name, 2, 60.0)]


def test_detector_memory_is_bounded(clock: FakeClock, recorder: EventRecorder) -> None:
    """Beyond max_fingerprints the least recently seen fingerprint is forgotten and starts over."""
    system = ErrorRecoverySystem(clock=clock, pattern_threshold=3, max_fingerprints=2)
    _feed(system, operation="a")
    _feed(system, operation="a")
    _feed(system, operation="b")
    _feed(system, operation="c")  # evicts "a"
    _feed(system, operation="a")
    assert recorder.of(Event.PATTERN_DETECTED) == []
    assert len(system._detector) == 2
    _feed(system, operation="a")
    _feed(system, operation="a")
    assert [args.operation for args in recorder.of(Event.PATTERN_DETECTED)] == ["a"]  # type: ignore[union-attr]


# -- stats, events, composition ----------------------------------------------------------------


async def test_stats_and_recovery_rate(clock: FakeClock) -> None:
    """get_stats has every documented key; the rate is successful/attempts and 1.0 with none."""
    system = ErrorRecoverySystem(clock=clock)
    stats = system.get_stats()
    assert stats == {
        "attempts": 0,
        "successful_recoveries": 0,
        "failed_recoveries": 0,
        "recovery_rate": 1.0,
        "by_strategy": {s.value: {"attempts": 0, "successful": 0, "failed": 0} for s in RecoveryStrategy},
        "patterns_detected": 0,
        "escalations": 0,
    }
    system.register_recovery_rule(ConnectionError, retry(max_attempts=1))
    system.register_recovery_rule(LookupError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=0))
    system.execute_sync(Flaky(1).run_sync)
    with pytest.raises(ConnectionError):
        system.execute_sync(Flaky(5).run_sync)
    system.execute_sync(Flaky(1, KeyError).run_sync)
    system.execute_sync(Flaky(1, KeyError).run_sync)
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (4, 3, 1)
    assert stats["recovery_rate"] == 0.75
    assert system.stats.recovery_rate == 0.75


async def test_recovery_events_are_reported(driver: str, clock: FakeClock, recorder: EventRecorder) -> None:
    """Each recovery reports RECOVERY_ATTEMPTED with strategy, result and error type, from its pipeline."""
    system = ErrorRecoverySystem(unique("ev"), clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=1))
    pipeline = PipelineBuilder("policy").add(system.as_strategy("policy")).build()
    await run_pipeline(pipeline, driver, Flaky(1))
    with pytest.raises(ConnectionError):
        await run_pipeline(pipeline, driver, Flaky(9))
    assert recorder.of(Event.RECOVERY_ATTEMPTED) == [
        RecoveryAttempted("retry", "success", "ConnectionError"),
        RecoveryAttempted("retry", "failure", "ConnectionError"),
    ]
    source = recorder.sources(Event.RECOVERY_ATTEMPTED)[0]
    assert (source.kind, source.name, source.pipeline) == ("recovery", system.name, "policy")


def test_as_strategy_returns_new_unlinked_links(clock: FakeClock) -> None:
    """Each as_strategy call gives a fresh link that shares the system's rules and stats."""
    system = ErrorRecoverySystem("shared", clock=clock)
    system.register_recovery_rule(KeyError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="fb"))
    first, second = system.as_strategy("a"), system.as_strategy("b")
    assert first is not second
    pipe_a = PipelineBuilder("a").add(first).build()
    pipe_b = PipelineBuilder("b").add(second).build()
    assert pipe_a.describe() == (("recovery", "shared", RecoveryConfig()),)
    assert pipe_a.execute_sync(Flaky(1, KeyError).run_sync) == "fb"
    assert pipe_b.execute_sync(Flaky(1, KeyError).run_sync) == "fb"
    assert system.get_stats()["successful_recoveries"] == 2
    with pytest.raises(ValueError, match=r"ErrorRecoverySystem\.breaker"):
        system.as_strategy(breaker="")


def test_as_strategy_refuses_a_bad_breaker_or_resolver(clock: FakeClock) -> None:
    """as_strategy takes a breaker name or a breaker, and a callable resolver, else TypeError naming the field."""
    system = ErrorRecoverySystem(clock=clock)
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.breaker must be a breaker name or a circuit"):
        system.as_strategy(breaker=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.breakers must be callable"):
        system.as_strategy(breakers="db")  # type: ignore[arg-type]


def test_as_strategy_refuses_an_async_resolver(clock: FakeClock) -> None:
    """The resolver is called, never awaited: an async one made a coroutine in place of the breaker,
    so every ISOLATE failed (and logged) with a coroutine never awaited. Refused when given."""

    async def resolve(name: str) -> StandInBreaker:
        return StandInBreaker(name)

    system = ErrorRecoverySystem(clock=clock)
    with pytest.raises(TypeError, match=r"^ErrorRecoverySystem\.breakers must be a plain \(sync\) function"):
        system.as_strategy("policy", breakers=resolve)  # type: ignore[arg-type]


def test_as_strategy_refuses_a_generator_resolver(clock: FakeClock) -> None:
    """A generator function returns an iterator, never a breaker: every ISOLATE would fail. Refused when given."""

    def resolve(name: str) -> Iterator[StandInBreaker]:
        yield StandInBreaker(name)

    async def resolve_async(name: str) -> AsyncIterator[StandInBreaker]:
        yield StandInBreaker(name)

    system = ErrorRecoverySystem(clock=clock)
    rule = (
        r"^ErrorRecoverySystem\.breakers must be a function that returns a breaker or None, not a generator"
    )
    for resolver in (resolve, resolve_async):
        with pytest.raises(TypeError, match=rule):
            system.as_strategy("policy", breakers=resolver)  # type: ignore[arg-type]


async def test_non_callable_fn_is_a_type_error(clock: FakeClock) -> None:
    """execute, execute_sync and protect refuse a non-callable at once."""
    system = ErrorRecoverySystem(clock=clock)
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.execute\.fn must be callable"):
        await system.execute(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.execute_sync\.fn must be callable"):
        system.execute_sync(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.protect\.fn must be callable"):
        system.protect(3)  # type: ignore[call-overload]


async def test_protect_decorates_async_and_sync_functions(clock: FakeClock) -> None:
    """protect picks the driver at decoration time and keeps the function's name."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=2))
    flaky_a, flaky_s = Flaky(1), Flaky(1)

    @system.protect
    async def fetch(x: int) -> Any:
        return await flaky_a.run_async(x)

    @system.protect
    def fetch_sync(x: int) -> Any:
        return flaky_s.run_sync(x)

    assert fetch.__name__ == "fetch"
    assert asyncio.iscoroutinefunction(fetch)
    assert await fetch(1) == "ok"
    assert fetch_sync(2) == "ok"
    assert len(flaky_a.calls) == len(flaky_s.calls) == 2


def test_concurrent_recoveries_are_all_counted(clock: FakeClock) -> None:
    """Recoveries from many threads at once are each counted exactly once."""
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value=1)
    )
    threads, per_thread = 8, 200
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait(timeout=5)
        for _ in range(per_thread):
            assert system.recover_from_error_sync(ConnectionError(), {"operation_name": "op"}) == 1

    run_threads(threads, worker)
    stats = system.get_stats()
    assert stats["attempts"] == stats["successful_recoveries"] == threads * per_thread
    assert stats["patterns_detected"] == 1


# -- a recovery freed after its loop closed ----------------------------------------------------


@pytest.mark.parametrize("stage", ["rerun", "fallback_function"])
def test_a_recovery_freed_after_its_loop_closed_counts_nothing_and_never_blocks(
    clock: FakeClock, stage: str
) -> None:
    """A task left in a re-run (or a ``fallback_function``) when its loop closed is freed by the
    garbage collector, which closes its coroutine on whichever thread allocates: maybe one that
    holds the recovery system's lock, inside a deadline of its own that has passed. The loop's
    closing ended the run, not the task's deadline: no failed recovery is counted, and nothing
    blocks on the lock."""
    system = ErrorRecoverySystem(unique("freed-recovery"), clock=clock)
    started: list[int] = []

    async def hang(*_args: Any) -> str:
        started.append(1)
        await asyncio.Event().wait()
        return "never"

    if stage == "rerun":
        system.register_recovery_rule(ConnectionError, retry(max_attempts=2))
    else:
        fallback = RecoveryAction(RecoveryStrategy.FALLBACK, fallback_function=hang)
        system.register_recovery_rule(ConnectionError, fallback)
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("fail 1")
        return await hang()

    @contextlib.contextmanager
    def past_deadline() -> Iterator[None]:
        """The collecting thread's own deadline, passed (left without raising)."""
        with contextlib.suppress(OperationTimeoutError), SyncDeadline(clock, 1.0, "collector"):
            clock.advance(2.0)
            yield

    freed_on_a_closed_loop(
        lambda: system.execute(dependency),
        lambda: started,
        system._lock,
        "the recovery's lock",
        past_deadline,
    )
    stats = system.get_stats()
    assert (stats["attempts"], stats["failed_recoveries"]) == (0, 0)


# -- letting go of what the runs got -------------------------------------------------------------


class Holder:
    """A caller's record of what its operation got (``RERUNNABLE``'s third item): logs each ``let_go()``.

    ``blocking``: an async ``let_go`` that outlasts the deadline on ``blocking``'s clock and never
    ends (the deadline's timer ends it).
    """

    def __init__(self, log: list[str], *, sync: bool, blocking: FakeClock | None = None) -> None:
        self.log = log
        self.sync = sync
        self.blocking = blocking

    def let_go(self) -> Any:
        self.log.append("let_go")
        return None if self.sync else self._closed()

    async def _closed(self) -> None:
        if self.blocking is not None:
            self.blocking.advance(10.0)
            await asyncio.Event().wait()
        self.log.append("closed")


class LoggingClock(FakeClock):
    """A fake clock whose sleeps are logged."""

    log: list[str]

    async def sleep(self, seconds: float) -> None:
        self.log.append("delay")
        await super().sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self.log.append("delay")
        super().sleep_sync(seconds)


@contextlib.contextmanager
def restricted(operation: object, record: object) -> Iterator[None]:
    """Run executions of ``operation`` as a caller that holds ``record`` does (any error may re-run it)."""
    token = RERUNNABLE.set(((Exception,), operation, record))
    try:
        yield
    finally:
        RERUNNABLE.reset(token)


@pytest.mark.parametrize("strategy", [RecoveryStrategy.RETRY, RecoveryStrategy.RESTART])
async def test_a_rerun_lets_the_caller_go_of_what_the_run_got_before_its_delay(
    driver: str, strategy: RecoveryStrategy
) -> None:
    """Each re-run tells the caller's record, before the delay and the hook, that no earlier run is the outcome."""
    log: list[str] = []
    clock = LoggingClock()
    clock.log = log
    system = ErrorRecoverySystem(clock=clock)
    hook = None if strategy is RecoveryStrategy.RETRY else (lambda: log.append("hook"))
    system.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy, max_attempts=3, delay=1.0, restart_hook=hook)
    )
    flaky = Flaky(2)
    flaky.log = log
    operation = op_for(driver, flaky)  # one bound method: the operation the caller restricts
    with restricted(operation, Holder(log, sync=driver == "sync")):
        result = await system.execute(operation) if driver == "async" else system.execute_sync(operation)
    assert result == "ok"
    letting_go = ["let_go"] if driver == "sync" else ["let_go", "closed"]
    rerun = [*letting_go, "delay", *(["hook"] if hook else []), "call"]
    assert log == ["call", *rerun, *rerun]


async def test_a_rerun_of_another_operation_lets_the_caller_go_of_nothing(
    driver: str, clock: FakeClock
) -> None:
    """An execution of another function than the one the caller restricted (one nested inside it) tells it nothing."""
    log: list[str] = []
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    flaky = Flaky(2)
    with restricted(object(), Holder(log, sync=driver == "sync")):
        assert await run(system, driver, flaky) == "ok"
    assert log == []


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_letting_go_the_deadline_ends_is_a_failed_recovery_counted_once(
    clock: FakeClock, failures: int
) -> None:
    """The deadline ending the caller's letting go (first re-run or a later one) fails the recovery once, as in a delay."""
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    log: list[str] = []
    calls: list[int] = []
    record = Holder(log, sync=False)

    async def operation() -> str:
        calls.append(1)
        if len(calls) == failures:
            record.blocking = clock  # the letting go after this run outlasts the deadline
        raise ConnectionError(f"fail {len(calls)}")

    # The async deadline's timer runs on the loop's time: a short real one, past on the fake clock too.
    config = ResilienceConfig(enable_recovery=True, timeout=0.05, name=unique("policy"))
    with restricted(operation, record), pytest.raises(OperationTimeoutError):
        await manager.execute_with_resilience(operation, config)
    assert len(calls) == failures
    stats = manager.recovery_system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)


async def test_a_letting_go_that_fails_ends_the_recovery_as_failed(driver: str, clock: FakeClock) -> None:
    """What the caller's ``let_go`` raises ends the execution, the recovery a failed one, and no re-run starts."""

    class Broken:
        def let_go(self) -> None:
            raise RuntimeError("cannot let go")

    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(ConnectionError, retry(max_attempts=3))
    flaky = Flaky(1)
    operation = op_for(driver, flaky)
    with restricted(operation, Broken()), pytest.raises(RuntimeError, match="cannot let go") as caught:
        await system.execute(operation) if driver == "async" else system.execute_sync(operation)
    assert isinstance(caught.value.__context__, ConnectionError)
    assert len(flaky.calls) == 1
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"], stats["failed_recoveries"]) == (1, 0, 1)
