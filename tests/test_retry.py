"""Tests for otel_resilience.patterns.retry: delays, policies, drivers, hooks, deadlines, events, threads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import inspect
import logging
import math
import pickle
import random
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from otel_support import Otel, attempts_ended
from support import BrokenQualname, add_note, converted_cancellation, invoke, run_threads

from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.context import (
    AsyncDeadline,
    ExecutionContext,
    SyncDeadline,
    sleep_sync_within_deadline,
)
from otel_resilience.engine.events import (
    HUB,
    Event,
    Outcome,
    RetryExhausted,
    RetryScheduled,
    TelemetrySource,
    TimeoutOccurred,
    error_type_name,
)
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.strategy import Strategy
from otel_resilience.errors import (
    BulkheadFullError,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
)
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.retry import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_JITTER,
    DEFAULT_JITTER_RATIO,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    DEFAULT_MULTIPLIER,
    DEFAULT_STRATEGY,
    Jitter,
    Retry,
    RetryPolicy,
    RetryStrategy,
    retry,
    retry_async,
    retry_sync,
)
from otel_resilience.patterns.retry.budget import RetryBudget
from otel_resilience.patterns.retry.step import _RetryStep
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import AttemptRecorder, EventRecorder, FakeClock


class Boom(ConnectionError):
    """A retryable failure raised by the fake dependency."""


def exact(**kwargs: Any) -> RetryPolicy:
    """A policy without jitter, so that delays are exact."""
    return RetryPolicy(jitter=Jitter.NONE, **kwargs)


def flaky(failures: int, error: Callable[[], BaseException] = Boom, result: Any = "ok") -> Callable[..., Any]:
    """A plain function that raises ``error()`` on its first ``failures`` calls, then returns."""

    def fn(*args: Any, **kwargs: Any) -> Any:
        fn.calls += 1  # type: ignore[attr-defined]
        if fn.calls <= failures:  # type: ignore[attr-defined]
            raise error()
        return result

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


# -- configuration ----------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """RetryPolicy() has the documented defaults, and the constants hold those values."""
    policy = RetryPolicy()
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_STRATEGY, DEFAULT_INITIAL_DELAY) == (
        3,
        RetryStrategy.EXPONENTIAL,
        1.0,
    )
    assert (DEFAULT_MULTIPLIER, DEFAULT_MAX_DELAY) == (2.0, 60.0)
    assert (DEFAULT_JITTER, DEFAULT_JITTER_RATIO) == (Jitter.PROPORTIONAL, 0.25)
    assert policy.max_attempts == DEFAULT_MAX_ATTEMPTS
    assert policy.strategy is DEFAULT_STRATEGY
    assert policy.initial_delay == DEFAULT_INITIAL_DELAY
    assert policy.multiplier == DEFAULT_MULTIPLIER
    assert policy.max_delay == DEFAULT_MAX_DELAY
    assert policy.jitter is DEFAULT_JITTER
    assert policy.jitter_ratio == DEFAULT_JITTER_RATIO
    assert policy.attempt_timeout is None
    assert policy.retry_on == (Exception,)
    assert policy.no_retry_on == (ExecutionRejectedError,)
    assert policy.retry_on_result is None


def test_a_delay_left_unset_gives_way_to_the_other_one_set() -> None:
    """An ``initial_delay`` over 60 s alone raises the default cap; a ``max_delay`` under 1 s lowers the first delay.

    ``RetryPolicy(strategy="fixed", initial_delay=120)`` was refused for a ``max_delay`` never written
    (``max_delay must be >= initial_delay (120 s), got 60.0``), and ``RetryPolicy(max_delay=0.5)`` for an
    ``initial_delay`` never written.
    """
    slow = RetryPolicy(strategy="fixed", initial_delay=120)
    assert (slow.initial_delay, slow.max_delay) == (120.0, 120.0)
    assert "max_delay=120.0," in repr(slow)
    assert exact(strategy="fixed", initial_delay=120).compute_delay(3) == 120.0
    quick = RetryPolicy(max_delay=0.5)
    assert (quick.initial_delay, quick.max_delay) == (0.5, 0.5)
    assert quick == RetryPolicy(initial_delay=0.5, max_delay=0.5)
    assert hash(quick) == hash(RetryPolicy(initial_delay=0.5, max_delay=0.5))
    assert RetryPolicy(initial_delay=2.0).max_delay == DEFAULT_MAX_DELAY
    assert RetryPolicy(max_delay=5.0).initial_delay == DEFAULT_INITIAL_DELAY
    # Both written: the rule between them holds, naming max_delay.
    with pytest.raises(
        ValueError, match=r"RetryPolicy\.max_delay must be >= initial_delay \(120 s\), got 60\.0"
    ):
        RetryPolicy(initial_delay=120, max_delay=60.0)
    # dataclasses.replace (a copy, a pickle) derives an unset delay again; a written one stays.
    assert dataclasses.replace(slow, initial_delay=1.0).max_delay == DEFAULT_MAX_DELAY
    assert dataclasses.replace(quick, max_delay=30.0).initial_delay == DEFAULT_INITIAL_DELAY
    again = pickle.loads(pickle.dumps(slow))
    assert again == slow
    assert repr(again) == repr(slow)
    assert dataclasses.replace(again, initial_delay=1.0).max_delay == DEFAULT_MAX_DELAY
    with pytest.raises(ValueError, match=r"RetryPolicy\.max_delay must be >= initial_delay"):
        dataclasses.replace(RetryPolicy(initial_delay=1.0, max_delay=60.0), initial_delay=120)


def test_enum_values_are_pinned() -> None:
    """The strategy and jitter values are the documented strings."""
    assert [s.value for s in RetryStrategy] == ["fixed", "exponential", "linear", "random"]
    assert [j.value for j in Jitter] == ["none", "full", "proportional", "decorrelated"]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"max_attempts": 0}, ValueError, r"RetryPolicy\.max_attempts must be >= 1, got 0"),
        ({"max_attempts": 2.5}, TypeError, r"RetryPolicy\.max_attempts must be an int"),
        ({"max_attempts": True}, TypeError, r"RetryPolicy\.max_attempts must be an int"),
        ({"strategy": "quadratic"}, ValueError, r"RetryPolicy\.strategy must be a RetryStrategy"),
        ({"initial_delay": -1.0}, ValueError, r"RetryPolicy\.initial_delay must be >= 0 seconds, got -1\.0"),
        ({"initial_delay": math.nan}, ValueError, r"RetryPolicy\.initial_delay must be a finite"),
        ({"max_delay": math.inf}, ValueError, r"RetryPolicy\.max_delay must be a finite"),
        (
            {"initial_delay": 10.0, "max_delay": 5.0},
            ValueError,
            r"RetryPolicy\.max_delay must be >= initial_delay",
        ),
        (
            {"multiplier": 0.5},
            ValueError,
            r"RetryPolicy\.multiplier must be >= 1 when strategy is EXPONENTIAL",
        ),
        ({"multiplier": 0.0, "strategy": "fixed"}, ValueError, r"RetryPolicy\.multiplier must be > 0"),
        ({"multiplier": "2"}, TypeError, r"RetryPolicy\.multiplier must be a number"),
        ({"jitter": "gaussian"}, ValueError, r"RetryPolicy\.jitter must be a Jitter"),
        ({"jitter_ratio": 1.5}, ValueError, r"RetryPolicy\.jitter_ratio must be <= 1"),
        ({"jitter_ratio": 0.0}, ValueError, r"RetryPolicy\.jitter_ratio must be > 0"),
        (
            {"jitter": Jitter.FULL, "jitter_ratio": -0.1},
            ValueError,
            r"RetryPolicy\.jitter_ratio must be >= 0",
        ),
        ({"attempt_timeout": 0}, ValueError, r"RetryPolicy\.attempt_timeout must be > 0 seconds"),
        ({"attempt_timeout": "1s"}, TypeError, r"RetryPolicy\.attempt_timeout must be a duration"),
        ({"retry_on": (ValueError, "x")}, TypeError, r"RetryPolicy\.retry_on must be exception types"),
        ({"retry_on": 3}, TypeError, r"RetryPolicy\.retry_on must be exception types"),
        (
            {"retry_on": asyncio.CancelledError},
            ValueError,
            r"RetryPolicy\.retry_on must be Exception subclasses",
        ),
        ({"retry_on": (BaseException,)}, ValueError, r"RetryPolicy\.retry_on must be Exception subclasses"),
        ({"no_retry_on": "ValueError"}, TypeError, r"RetryPolicy\.no_retry_on must be exception types"),
        ({"retry_on_result": 42}, TypeError, r"RetryPolicy\.retry_on_result must be callable"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    """Every invalid field raises with the class, the field, the rule and the value."""
    with pytest.raises(error, match=pattern):
        RetryPolicy(**kwargs)


def test_a_delay_setting_the_schedule_never_reads_is_refused() -> None:
    """``multiplier`` acts only with EXPONENTIAL, ``jitter`` and ``jitter_ratio`` only where they randomise.

    ``RetryPolicy(strategy="fixed", multiplier=3.0)`` was taken and retried every 1 s, never
    growing; ``jitter_ratio=0.5`` beside ``jitter="full"`` drew in ``[0, d]``, never ``d +/- 50 %``;
    ``jitter="full"`` beside RANDOM still drew in ``[initial_delay, max_delay]`` (``"none"``, which
    says what RANDOM does, is taken). Their defaults cannot be told from values left out: only
    another value is refused.
    """
    multiplier = (
        r"^RetryPolicy\.multiplier must be 2\.0 \(its default\) unless strategy is EXPONENTIAL and "
        r"jitter is not DECORRELATED \(only it grows by a multiplier\), got 3\.0$"
    )
    with pytest.raises(ValueError, match=multiplier):
        RetryPolicy(strategy="fixed", multiplier=3.0)
    for strategy in ("linear", "random"):
        with pytest.raises(ValueError, match=r"RetryPolicy\.multiplier must be 2\.0 \(its default\)"):
            RetryPolicy(strategy=strategy, multiplier=1.0)
    with pytest.raises(ValueError, match=r"RetryPolicy\.multiplier must be 2\.0 \(its default\)"):
        dataclasses.replace(RetryPolicy(multiplier=3.0), strategy=RetryStrategy.FIXED)
    ratio = (
        r"^RetryPolicy\.jitter_ratio must be 0\.25 \(its default\) unless jitter is PROPORTIONAL and "
        r"strategy is not RANDOM \(no other spread reads it\), got 0\.5$"
    )
    for jitter in ("none", "full", "decorrelated"):
        with pytest.raises(ValueError, match=ratio):
            RetryPolicy(jitter=jitter, jitter_ratio=0.5)
    with pytest.raises(ValueError, match=ratio):
        RetryPolicy(strategy="random", jitter_ratio=0.5)
    jitter = (
        r"^RetryPolicy\.jitter must be PROPORTIONAL \(its default\) or NONE unless strategy is not "
        r"RANDOM \(its draws are the range, with no jitter on top\), got <Jitter\.FULL: 'full'>$"
    )
    with pytest.raises(ValueError, match=jitter):
        RetryPolicy(strategy="random", jitter="full")
    with pytest.raises(ValueError, match=r"RetryPolicy\.jitter must be PROPORTIONAL \(its default\) or NONE"):
        RetryPolicy(strategy="random", jitter=Jitter.DECORRELATED)
    assert RetryPolicy(strategy="random", jitter="none").jitter is Jitter.NONE  # says what RANDOM does
    # DECORRELATED replaces the strategy's schedule: neither another strategy nor a multiplier is read.
    strategy = (
        r"^RetryPolicy\.strategy must be EXPONENTIAL \(its default\) unless jitter is not DECORRELATED "
        r"\(it replaces the schedule\), got <RetryStrategy\.LINEAR: 'linear'>$"
    )
    with pytest.raises(ValueError, match=strategy):
        RetryPolicy(strategy="linear", jitter="decorrelated")
    with pytest.raises(ValueError, match=r"RetryPolicy\.multiplier must be 2\.0 \(its default\)"):
        RetryPolicy(jitter="decorrelated", multiplier=3.0)
    # The defaults are taken anywhere, and each setting where it acts.
    assert RetryPolicy(strategy="fixed", multiplier=2.0, jitter_ratio=0.25) == RetryPolicy(strategy="fixed")
    assert (
        RetryPolicy(strategy="random", jitter="proportional", jitter_ratio=0.25).jitter is Jitter.PROPORTIONAL
    )
    assert RetryPolicy(multiplier=1.0, jitter_ratio=1.0).multiplier == 1.0
    assert RetryPolicy(strategy="linear", jitter="full").jitter is Jitter.FULL


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (  # the default no_retry_on excludes every rejection: the named one would never be retried
            {"retry_on": CircuitOpenError},
            (
                r"RetryPolicy\.no_retry_on must be disjoint from retry_on \(it excludes the retried "
                r"\(<class 'otel_resilience\.errors\.CircuitOpenError'>,\)\), "
                r"got \(<class 'otel_resilience\.errors\.ExecutionRejectedError'>,\)"
            ),
        ),
        (
            {"retry_on": (ConnectionError, TimeoutError), "no_retry_on": OSError},
            (
                r"RetryPolicy\.no_retry_on must be disjoint from retry_on \(it excludes the retried "
                r"\(<class 'ConnectionError'>, <class 'TimeoutError'>\)\)"
            ),
        ),
    ],
)
def test_a_retried_type_no_retry_on_excludes_is_refused(kwargs: dict[str, Any], pattern: str) -> None:
    """An error type named in retry_on that no_retry_on excludes would never be retried: refused.

    no_retry_on wins over retry_on, so such a type is silently dead; a narrower exclusion (a
    subclass of a retried type) stays valid, and no_retry_on=() retries rejections.
    """
    with pytest.raises(ValueError, match=pattern):
        RetryPolicy(**kwargs)
    assert RetryPolicy(retry_on=OSError, no_retry_on=ConnectionRefusedError).no_retry_on == (
        ConnectionRefusedError,
    )
    assert RetryPolicy(retry_on=CircuitOpenError, no_retry_on=()).retry_on == (CircuitOpenError,)


def test_timedeltas_and_enum_strings_are_normalised() -> None:
    """Durations given as timedelta become float seconds; enum strings become members."""
    policy = RetryPolicy(
        strategy="linear",  # type: ignore[arg-type]
        jitter="full",  # type: ignore[arg-type]
        initial_delay=timedelta(milliseconds=500),  # type: ignore[arg-type]
        max_delay=timedelta(seconds=3),  # type: ignore[arg-type]
        attempt_timeout=timedelta(seconds=2),  # type: ignore[arg-type]
        retry_on=ValueError,
    )
    assert policy.strategy is RetryStrategy.LINEAR
    assert policy.jitter is Jitter.FULL
    assert (policy.initial_delay, policy.max_delay, policy.attempt_timeout) == (0.5, 3.0, 2.0)
    assert type(policy.initial_delay) is float
    assert policy.retry_on == (ValueError,)
    assert policy == RetryPolicy(
        strategy=RetryStrategy.LINEAR,
        jitter=Jitter.FULL,
        initial_delay=0.5,
        max_delay=3.0,
        attempt_timeout=2.0,
        retry_on=(ValueError,),
    )


def test_policy_is_frozen() -> None:
    """A policy cannot be changed after construction."""
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 10  # type: ignore[misc]


def test_retry_constructor_validates_its_arguments() -> None:
    """Retry rejects a bad name, policy, hook, clock or rng with a message naming the argument."""
    with pytest.raises(ValueError, match=r"Retry\.name must be a non-empty name"):
        Retry(" ")
    with pytest.raises(TypeError, match=r"Retry\.policy must be a RetryPolicy"):
        Retry("r", {"max_attempts": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Retry\.on_retry must be callable"):
        Retry("r", on_retry="log")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Retry\.clock must be a Clock"):
        Retry("r", clock=time.monotonic)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Retry\.rng must be a random\.Random"):
        Retry("r", rng=42)  # type: ignore[arg-type]


def _two(attempt: int, error: Exception | None, *, extra: int = 0) -> None:
    """A hook taking what on_retry is given, and a keyword-only option."""


class _Hook:
    """A callable object taking what on_retry is given."""

    def __call__(self, attempt: int, error: Exception | None) -> None:
        """Take the call."""


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (
            lambda: Retry("r", on_retry=lambda: None),
            r"Retry\.on_retry must be callable as on_retry\(attempt, error\)",
        ),
        (lambda: Retry("r", on_retry=lambda error: None), r"Retry\.on_retry must be callable as"),
        (lambda: Retry("r", on_retry=lambda *, attempt, error: None), r"Retry\.on_retry must be callable as"),
        (
            lambda: RetryPolicy(retry_on=lambda: True),
            r"RetryPolicy\.retry_on must be callable as retry_on\(error\)",
        ),
        (lambda: RetryPolicy(no_retry_on=lambda a, b: True), r"RetryPolicy\.no_retry_on must be callable as"),
        (
            lambda: RetryPolicy(retry_on_result=lambda: True),
            r"RetryPolicy\.retry_on_result must be callable as",
        ),
        (lambda: RetryPolicy(delay_from=lambda e, r: None), r"RetryPolicy\.delay_from must be callable as"),
    ],
)
def test_hooks_that_cannot_take_their_arguments_are_refused_when_given(
    build: Callable[[], object], pattern: str
) -> None:
    """A hook or predicate that cannot be called as the retry calls it is a TypeError at construction,
    not at the first failure (where it would end the execution in place of the retry)."""
    with pytest.raises(TypeError, match=pattern):
        build()


def test_hooks_that_take_their_arguments_however_declared_are_accepted() -> None:
    """Defaults, *args, callable objects, partials and builtins without a signature are accepted."""
    Retry("r", on_retry=_two)
    Retry("r", on_retry=_Hook())
    Retry("r", on_retry=lambda *args: None)
    Retry("r", on_retry=functools.partial(lambda prefix, attempt, error: None, "x"))
    Retry("r", on_retry=print)
    RetryPolicy(
        retry_on=lambda error, *, strict=False: True, retry_on_result=bool, delay_from=lambda o=None: None
    )


class _Told:
    """A predicate whose ``dropped`` is given at construction: a method, or any other attribute."""

    def __init__(self, dropped: object) -> None:
        self.dropped = dropped

    def __call__(self, outcome: object) -> bool:
        return True


@pytest.mark.parametrize("field", ["retry_on", "retry_on_result"])
@pytest.mark.parametrize(
    ("dropped", "error", "pattern"),
    [
        ("close", TypeError, r"\.dropped must be callable, got 'close'"),
        (lambda: None, TypeError, r"\.dropped must be callable as (retry_on|retry_on_result)\.dropped\("),
        (lambda a, b: None, TypeError, r"\.dropped must be callable as"),
    ],
)
def test_a_dropped_hook_that_cannot_be_called_as_the_retry_calls_it_is_refused_when_given(
    field: str, dropped: object, error: type[Exception], pattern: str
) -> None:
    """A predicate's ``dropped`` that is no callable, or cannot take the dropped outcome, is a TypeError
    naming ``RetryPolicy.<field>.dropped`` at construction, not at the first retry (where it would end
    the execution in place of the retry)."""
    with pytest.raises(error, match=rf"RetryPolicy\.{field}{pattern}"):
        RetryPolicy(**{field: _Told(dropped)})  # type: ignore[arg-type]


def test_dropped_hooks_that_take_the_outcome_however_declared_are_accepted() -> None:
    """A ``dropped`` method, a function with defaults or ``*args``, an async one and ``None`` are accepted."""
    for dropped in (lambda outcome: None, lambda *args: None, _async_dropped, print, None):
        RetryPolicy(retry_on=_Told(dropped), retry_on_result=_Told(dropped))  # type: ignore[arg-type]
    RetryPolicy(retry_on_result=Pending(FakeClock(), "sync"))


async def _async_dropped(outcome: object) -> None:
    """An async ``dropped``: awaited by the async drivers."""


# -- delays -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (RetryStrategy.FIXED, [1.5, 1.5, 1.5, 1.5, 1.5]),
        (RetryStrategy.LINEAR, [1.5, 3.0, 4.5, 6.0, 7.5]),
        (RetryStrategy.EXPONENTIAL, [1.5, 4.5, 13.5, 40.5, 121.5]),
    ],
)
def test_deterministic_strategies_give_exact_delays(strategy: RetryStrategy, expected: list[float]) -> None:
    """Without jitter, FIXED, LINEAR and EXPONENTIAL follow their documented formulas exactly."""
    grows = {"multiplier": 3.0} if strategy is RetryStrategy.EXPONENTIAL else {}  # read by it alone
    policy = exact(strategy=strategy, initial_delay=1.5, max_delay=1000.0, **grows)
    assert [policy.compute_delay(a) for a in range(1, 6)] == expected


def test_max_delay_caps_the_schedule() -> None:
    """Delays grow until max_delay, then stay there."""
    policy = exact(initial_delay=1.0, multiplier=2.0, max_delay=5.0)
    assert [policy.compute_delay(a) for a in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_huge_attempt_numbers_are_capped_not_overflowing() -> None:
    """An attempt number that would overflow a float still gives max_delay."""
    assert exact(max_delay=7.0).compute_delay(10_000) == 7.0
    assert exact(strategy=RetryStrategy.LINEAR, max_delay=7.0).compute_delay(10**400) == 7.0


@pytest.mark.parametrize("strategy", [RetryStrategy.EXPONENTIAL, RetryStrategy.LINEAR])
@pytest.mark.parametrize("jitter", [Jitter.NONE, Jitter.FULL, Jitter.PROPORTIONAL])
def test_a_zero_initial_delay_stays_zero_at_huge_attempt_numbers(
    strategy: RetryStrategy, jitter: Jitter
) -> None:
    """``0 * multiplier ** (attempt - 1)`` is 0 however large the power: an overflow is not ``max_delay``."""
    policy = RetryPolicy(strategy=strategy, initial_delay=0.0, max_delay=7.0, jitter=jitter)
    assert policy.compute_delay(1) == 0.0
    assert policy.compute_delay(10_000, random.Random(1)) == 0.0
    assert policy.compute_delay(10**400, random.Random(1)) == 0.0


def test_random_strategy_stays_between_initial_and_max_delay() -> None:
    """RANDOM draws uniformly in [initial_delay, max_delay], and the draws vary."""
    policy = RetryPolicy(strategy=RetryStrategy.RANDOM, initial_delay=2.0, max_delay=4.0)
    rng = random.Random(1)
    delays = [policy.compute_delay(a, rng) for a in range(1, 200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100


def test_full_jitter_stays_between_zero_and_the_delay() -> None:
    """FULL jitter draws in [0, d] and spreads over that range."""
    policy = RetryPolicy(strategy=RetryStrategy.FIXED, initial_delay=2.0, jitter=Jitter.FULL)
    rng = random.Random(2)
    delays = [policy.compute_delay(1, rng) for _ in range(500)]
    assert all(0.0 <= d <= 2.0 for d in delays)
    assert min(delays) < 0.2
    assert max(delays) > 1.8


def test_proportional_jitter_stays_within_the_ratio() -> None:
    """PROPORTIONAL jitter draws in [d(1-r), d(1+r)] and never exceeds max_delay."""
    policy = RetryPolicy(initial_delay=4.0, max_delay=100.0, jitter=Jitter.PROPORTIONAL, jitter_ratio=0.25)
    rng = random.Random(3)
    delays = [policy.compute_delay(1, rng) for _ in range(500)]
    assert all(3.0 <= d <= 5.0 for d in delays)
    assert min(delays) < 3.2
    assert max(delays) > 4.8
    capped = RetryPolicy(initial_delay=4.0, max_delay=4.0, jitter_ratio=0.5)
    assert all(2.0 <= capped.compute_delay(3, rng) <= 4.0 for _ in range(200))


def test_proportional_jitter_at_the_cap_spreads_below_it() -> None:
    """At max_delay, PROPORTIONAL draws in [cap(1-r), cap]: no share of the clients lands on the cap itself."""
    policy = RetryPolicy(
        initial_delay=1.0, multiplier=2.0, max_delay=10.0, jitter_ratio=0.25, max_attempts=20
    )
    rng = random.Random(5)
    delays = [policy.compute_delay(8, rng) for _ in range(1_000)]  # a base of 128 s, capped at 10
    assert all(7.5 <= d <= 10.0 for d in delays)
    assert delays.count(10.0) == 0  # capped after the draw, about half would be exactly 10.0
    assert sum(d < 8.75 for d in delays) > 400  # uniform over the window: about half below its middle


def test_seeded_rng_reproduces_the_delays() -> None:
    """Two generators with the same seed give the same jittered schedule."""
    policy = RetryPolicy(jitter=Jitter.FULL, max_attempts=10)
    first = [policy.compute_delay(a, random.Random(42)) for a in range(1, 8)]
    second = [policy.compute_delay(a, random.Random(42)) for a in range(1, 8)]
    other = [policy.compute_delay(a, random.Random(43)) for a in range(1, 8)]
    assert first == second
    assert first != other


def test_compute_delay_rejects_an_attempt_below_one() -> None:
    """compute_delay is defined for failed attempts 1, 2, … only."""
    with pytest.raises(ValueError, match=r"attempt must be >= 1, got 0"):
        RetryPolicy().compute_delay(0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"attempt": 1.5},
            TypeError,
            r"RetryPolicy\.compute_delay\.attempt must be an int, got 1\.5 \(float\)",
        ),
        (
            {"attempt": True},
            TypeError,
            r"RetryPolicy\.compute_delay\.attempt must be an int, got True \(bool\)",
        ),
        ({"attempt": "2"}, TypeError, r"RetryPolicy\.compute_delay\.attempt must be an int, got '2' \(str\)"),
        (
            {"attempt": 2, "previous": -1.0},
            ValueError,
            r"RetryPolicy\.compute_delay\.previous must be >= 0, got -1\.0",
        ),
        (
            {"attempt": 2, "previous": math.nan},
            ValueError,
            r"RetryPolicy\.compute_delay\.previous must be a finite",
        ),
        (
            {"attempt": 2, "previous": "1"},
            TypeError,
            r"RetryPolicy\.compute_delay\.previous must be a number",
        ),
        (
            {"attempt": 1, "rng": 5},
            TypeError,
            r"RetryPolicy\.compute_delay\.rng must be a random\.Random or None, got 5 \(int\)",
        ),
    ],
)
def test_compute_delay_names_an_attempt_or_a_previous_delay_it_cannot_use(
    kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    """An attempt that is no whole number, a previous delay that is no seconds ``>= 0``, or a random
    source that is no ``random.Random``, is refused naming the argument, never read as some other
    delay (``1.5`` between two attempts, a NaN as none) nor met as an ``AttributeError``."""
    # DECORRELATED replaces the strategy's schedule: with the default one
    for policy in (
        RetryPolicy(strategy=RetryStrategy.LINEAR, jitter=Jitter.NONE),
        RetryPolicy(jitter=Jitter.DECORRELATED),
    ):
        with pytest.raises(error, match=pattern):
            policy.compute_delay(**kwargs)


@settings(max_examples=300, deadline=None)
@given(
    strategy=st.sampled_from(list(RetryStrategy)),
    jitter=st.sampled_from([j for j in Jitter if j is not Jitter.DECORRELATED]),  # its own file
    initial=st.floats(min_value=0.0, max_value=100.0),
    extra=st.floats(min_value=0.0, max_value=1000.0),
    multiplier=st.floats(min_value=1.0, max_value=10.0),
    ratio=st.floats(min_value=0.01, max_value=1.0),
    attempt=st.integers(min_value=1, max_value=5000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_is_always_within_its_bounds(
    *,
    strategy: RetryStrategy,
    jitter: Jitter,
    initial: float,
    extra: float,
    multiplier: float,
    ratio: float,
    attempt: int,
    seed: int,
) -> None:
    """For any valid policy and attempt, 0 <= delay <= max_delay, and jitter keeps its range."""
    # Each setting where the schedule reads it (elsewhere only its default is taken).
    random_draws = strategy is RetryStrategy.RANDOM
    grows = {} if strategy is not RetryStrategy.EXPONENTIAL else {"multiplier": multiplier}
    spread = {"jitter_ratio": ratio} if jitter is Jitter.PROPORTIONAL and not random_draws else {}
    policy = RetryPolicy(
        strategy=strategy,
        jitter=Jitter.PROPORTIONAL if random_draws else jitter,
        initial_delay=initial,
        max_delay=initial + extra,
        max_attempts=attempt + 1,
        **grows,
        **spread,
    )
    delay = policy.compute_delay(attempt, random.Random(seed))
    assert 0.0 <= delay <= policy.max_delay
    if random_draws:
        assert delay >= policy.initial_delay
        return
    base = exact(strategy=strategy, initial_delay=initial, max_delay=initial + extra, **grows).compute_delay(
        attempt
    )
    if jitter is Jitter.NONE:
        assert delay == base
    elif jitter is Jitter.FULL:
        assert delay <= base
    else:
        assert base * (1 - ratio) * (1 - 1e-9) <= delay <= base * (1 + ratio) * (1 + 1e-9)


# -- behaviour through both drivers -----------------------------------------------------------


async def test_first_attempt_success_does_not_retry(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """A first-attempt success sleeps never, reports nothing and counts one first-attempt success."""
    r = Retry("dep", exact(), clock=clock)
    fn = flaky(0)
    assert await invoke(r, driver, fn) == "ok"
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    assert recorder.events == []
    stats = r.get_stats()
    assert stats["first_attempt_successes"] == 1
    assert stats["executions"] == stats["attempts"] == stats["successes"] == 1
    assert stats["retries"] == 0


async def test_first_attempts_are_counted_once_whether_judged_or_only_counted(
    driver: str, clock: FakeClock
) -> None:
    """With no ``retry_on_result`` a first success is only counted (by the driver, the link's
    ``Counted`` token); with one, the first result is judged. Either way: one count each, and a
    first attempt that fails goes on to be retried from the same token."""
    counted = Retry("dep", exact(), clock=clock)
    judged = Retry("judged", exact(retry_on_result=lambda value: value == "again"), clock=clock)
    for _ in range(3):
        assert await invoke(counted, driver, flaky(0)) == "ok"
        assert await invoke(judged, driver, flaky(0)) == "ok"
    assert await invoke(counted, driver, flaky(1)) == "ok"  # attempt 1 fails, attempt 2 succeeds
    results = iter(["again", "ok"])
    assert await invoke(judged, driver, lambda: next(results)) == "ok"
    for r in (counted, judged):
        stats = r.get_stats()
        assert stats["first_attempt_successes"] == 3
        assert stats["successes_after_retry"] == 1
        assert stats["executions"] == stats["successes"] == 4


async def test_failures_are_retried_with_backoff(driver: str, clock: FakeClock) -> None:
    """Two failures then a success: the result is returned after backoffs of 1 s and 2 s."""
    r = Retry("dep", exact(max_attempts=3), clock=clock)
    fn = flaky(2)
    assert await invoke(r, driver, fn) == "ok"
    assert fn.calls == 3  # type: ignore[attr-defined]
    assert clock.sleeps == [1.0, 2.0]
    assert r.get_stats() == {
        "executions": 1,
        "attempts": 3,
        "retries": 2,
        "successes": 1,
        "first_attempt_successes": 0,
        "successes_after_retry": 1,
        "exhausted": 0,
        "retries_denied": 0,
        "non_retryable": 0,
        "cancelled": 0,
        "attempt_timeouts": 0,
    }


async def test_exhausted_reraises_the_original_error_with_a_note(driver: str, clock: FakeClock) -> None:
    """When attempts run out the last original exception is re-raised, unwrapped, with a note."""
    raised: list[BaseException] = []

    def always() -> None:
        error = Boom(f"failure {len(raised) + 1}")
        raised.append(error)
        raise error

    r = Retry("dep", exact(max_attempts=3), clock=clock)
    with pytest.raises(Boom) as info:
        await invoke(r, driver, always)
    assert info.value is raised[-1]
    assert str(info.value) == "failure 3"
    assert info.value.__notes__ == ["otel_resilience retry 'dep': gave up after 3 of 3 attempts"]
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert clock.sleeps == [1.0, 2.0]
    assert r.stats.exhausted == 1


async def test_a_reused_exception_keeps_a_single_retry_note(driver: str, clock: FakeClock) -> None:
    """An exception object raised again and again carries one retry note, not one per give-up."""
    shared = Boom("shared")
    add_note(shared, "user note")

    def always() -> None:
        raise shared

    r = Retry("dep", exact(max_attempts=2), clock=clock)
    for _ in range(3):
        with pytest.raises(Boom):
            await invoke(r, driver, always)
    assert shared.__notes__ == ["user note", "otel_resilience retry 'dep': gave up after 2 of 2 attempts"]


async def test_a_nested_retrys_note_is_kept_beside_the_outer_ones(driver: str, clock: FakeClock) -> None:
    """A retry inside another gives up first: the outer retry adds its note, and the inner one's stays."""
    inner = Retry("inner", exact(max_attempts=3), clock=clock)
    outer = Retry("outer", exact(max_attempts=2), clock=clock)

    def down() -> None:
        raise Boom("down")

    if driver == "sync":
        with pytest.raises(Boom) as info:
            outer.execute_sync(lambda: inner.execute_sync(down))
    else:

        async def inner_call() -> None:
            await invoke(inner, "async", down)

        with pytest.raises(Boom) as info:
            await outer.execute(inner_call)
    assert info.value.__notes__ == [
        "otel_resilience retry 'inner': gave up after 3 of 3 attempts",
        "otel_resilience retry 'outer': gave up after 2 of 2 attempts",
    ]


@dataclasses.dataclass(frozen=True)
class FrozenError(Exception):
    """An error that is a frozen dataclass: ``add_note`` (an attribute set) raises on it."""

    code: int


class TupleNotesError(Exception):
    """An error whose ``__notes__`` is a tuple: ``add_note`` refuses to add to it."""

    def __init__(self) -> None:
        super().__init__("tuple notes")
        self.__notes__ = ("user note",)


@pytest.mark.parametrize("kind", [FrozenError, TupleNotesError])
async def test_an_error_that_refuses_notes_is_reraised_unchanged(
    driver: str, clock: FakeClock, kind: type[Exception]
) -> None:
    """When attempts run out, an error that takes no note is raised as it is, without the note, never
    replaced by the error of the refusal (``FrozenInstanceError``, ``TypeError``)."""
    raised: list[Exception] = []

    def always() -> None:
        raised.append(error := FrozenError(503) if kind is FrozenError else TupleNotesError())
        raise error

    r = Retry("dep", exact(max_attempts=2), clock=clock)
    with pytest.raises(kind) as info:
        await invoke(r, driver, always)
    assert info.value is raised[-1]
    assert getattr(info.value, "__notes__", None) in (None, ("user note",))
    assert r.stats.exhausted == 1


class _ByStatus(type):
    """A metaclass that matches instances by a field (a 5xx status), not by their class."""

    def __instancecheck__(cls, instance: object) -> bool:
        return getattr(instance, "status", 0) >= 500


class ServerError(Exception, metaclass=_ByStatus):
    """Matches every error whose ``status`` is 5xx, whatever its class."""


class StatusError(Exception):
    """An HTTP error carrying its status; not a subclass of :class:`ServerError`."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@pytest.mark.parametrize(("field", "attempts"), [("retry_on", 3), ("no_retry_on", 1)])
async def test_retry_does_what_is_retryable_says_for_types_matched_by_instance(
    driver: str, clock: FakeClock, field: str, attempts: int
) -> None:
    """``retry_on`` and ``no_retry_on`` match as ``RetryPolicy.is_retryable`` does (``isinstance``, a
    metaclass's ``__instancecheck__`` included): the retry makes the attempts its policy promises."""
    policy = exact(max_attempts=3, **{field: (ServerError,)})
    assert policy.is_retryable(StatusError(503)) is (field == "retry_on")
    calls: list[int] = []

    def unavailable() -> None:
        calls.append(1)
        raise StatusError(503)

    with pytest.raises(StatusError):
        await invoke(Retry("dep", policy, clock=clock), driver, unavailable)
    assert len(calls) == attempts


class _TransientClasses(type):
    """A metaclass that counts classes marked ``transient`` as subclasses (``issubclass`` only).

    ``isinstance`` does not ask ``__subclasscheck__`` (``type.__instancecheck__`` reads the
    instance's real class hierarchy): an instance of a marked class is no instance of it.
    """

    def __subclasscheck__(cls, subclass: type) -> bool:
        return bool(getattr(subclass, "transient", False)) or type.__subclasscheck__(cls, subclass)


class Transient(Exception, metaclass=_TransientClasses):
    """Every class marked ``transient`` is its subclass, by ``issubclass``; none of their errors is one."""


class MarkedFlaky(ConnectionError):
    """A class marked ``transient``: a subclass of :class:`Transient` by ``issubclass`` alone."""

    transient = True


@pytest.mark.parametrize(("field", "attempts"), [("retry_on", 1), ("no_retry_on", 3)])
async def test_retry_does_what_is_retryable_says_for_types_with_a_subclass_check_of_their_own(
    driver: str, clock: FakeClock, field: str, attempts: int
) -> None:
    """A metaclass's ``__subclasscheck__`` that ``isinstance`` does not ask is not asked by the retry either.

    ``RetryPolicy.is_retryable`` matches as ``isinstance`` does: an error whose class only
    ``issubclass`` counts in the selector is no match, so the retry makes the attempts its policy promises.
    """
    policy = exact(max_attempts=3, **{field: (Transient,)})
    assert policy.is_retryable(MarkedFlaky()) is (field == "no_retry_on")
    calls: list[int] = []

    def unavailable() -> None:
        calls.append(1)
        raise MarkedFlaky

    with pytest.raises(MarkedFlaky):
        await invoke(Retry("dep", policy, clock=clock), driver, unavailable)
    assert len(calls) == attempts


async def test_max_attempts_one_never_retries(driver: str, clock: FakeClock, recorder: EventRecorder) -> None:
    """max_attempts=1 calls once and gives up with reason max_attempts."""
    r = Retry("dep", exact(max_attempts=1), clock=clock)
    fn = flaky(5)
    with pytest.raises(Boom) as info:
        await invoke(r, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    assert info.value.__notes__ == ["otel_resilience retry 'dep': gave up after 1 of 1 attempt"]
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(1, error_type_name(Boom()), "max_attempts")]


async def test_retry_on_types_limit_what_is_retried(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """An error outside retry_on is raised at once, without a note or an exhausted event."""
    r = Retry("dep", exact(retry_on=(Boom,)), clock=clock)
    fn = flaky(5, error=lambda: ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input") as info:
        await invoke(r, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert not hasattr(info.value, "__notes__")
    assert recorder.events == []
    assert r.stats.non_retryable == 1
    assert r.stats.exhausted == 0


async def test_retry_on_predicate_decides_per_error(driver: str, clock: FakeClock) -> None:
    """A retry_on predicate retries the errors it accepts and raises the others at once."""
    policy = exact(retry_on=lambda error: "transient" in str(error), max_attempts=5)
    r = Retry("dep", policy, clock=clock)
    errors = iter([Boom("transient 1"), Boom("transient 2"), Boom("fatal")])

    def fn() -> None:
        raise next(errors)

    with pytest.raises(Boom, match="fatal"):
        await invoke(r, driver, fn)
    assert clock.sleeps == [1.0, 2.0]


async def test_no_retry_on_wins_over_retry_on(driver: str, clock: FakeClock) -> None:
    """An error matching both retry_on and no_retry_on is not retried."""
    r = Retry("dep", exact(retry_on=(OSError,), no_retry_on=(Boom,)), clock=clock)
    fn = flaky(5)
    with pytest.raises(Boom):
        await invoke(r, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "rejection", [CircuitOpenError("dep", "open", 5.0), BulkheadFullError("pool", 10, 100)]
)
async def test_rejections_are_not_retried_by_default(
    driver: str, clock: FakeClock, rejection: Exception
) -> None:
    """An open breaker or a full bulkhead is raised at once: retrying a rejection only adds load."""
    r = Retry("dep", exact(), clock=clock)
    fn = flaky(5, error=lambda: rejection)
    with pytest.raises(type(rejection)):
        await invoke(r, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []


async def test_retry_on_result_retries_until_a_result_is_accepted(driver: str, clock: FakeClock) -> None:
    """A result the predicate rejects is retried like a failure; on_retry gets error None."""
    results = iter([None, None, {"status": "ready"}])
    hooks: list[tuple[int, Exception | None]] = []
    r = Retry(
        "dep",
        exact(max_attempts=5, retry_on_result=lambda result: result is None),
        on_retry=lambda attempt, error: hooks.append((attempt, error)),
        clock=clock,
    )
    assert await invoke(r, driver, lambda: next(results)) == {"status": "ready"}
    assert hooks == [(1, None), (2, None)]
    assert clock.sleeps == [1.0, 2.0]
    assert r.stats.successes_after_retry == 1


async def test_retry_on_result_returns_the_last_result_when_attempts_run_out(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """When every result is rejected, the last one is returned and the give-up is reported."""
    results = iter(["pending 1", "pending 2", "pending 3"])
    r = Retry("dep", exact(max_attempts=3, retry_on_result=lambda r: r.startswith("pending")), clock=clock)
    assert await invoke(r, driver, lambda: next(results)) == "pending 3"
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(3, None, "max_attempts")]
    assert [a.error_type for a in recorder.of(Event.RETRY_SCHEDULED)] == [None, None]  # type: ignore[union-attr]
    assert r.stats.exhausted == 1


class Pending:
    """A ``retry_on_result`` that retries every ``"pending ..."`` and is told each result the retry drops.

    ``steps`` records, in order, each result dropped (with the backoffs slept so far) and each
    ``on_retry``; under the async driver ``dropped`` returns an awaitable, awaited before the backoff.
    """

    def __init__(self, clock: FakeClock, driver: str) -> None:
        self.clock = clock
        self.driver = driver
        self.steps: list[tuple[str, object, int]] = []

    def __call__(self, result: str) -> bool:
        return result.startswith("pending")

    def dropped(self, result: str) -> Any:
        if self.driver == "sync":
            self.steps.append(("dropped", result, len(self.clock.sleeps)))
            return None

        async def let_go() -> None:
            await asyncio.sleep(0)
            self.steps.append(("dropped", result, len(self.clock.sleeps)))

        return let_go()

    def on_retry(self, attempt: int, error: Exception | None) -> None:
        self.steps.append(("on_retry", attempt, len(self.clock.sleeps)))


async def test_a_result_predicate_is_told_each_result_the_retry_drops_before_the_backoff(
    driver: str, clock: FakeClock
) -> None:
    """``dropped`` is called when the retry goes on after a result, first, before ``on_retry`` and the sleep.

    The last result, which the retry gives up on, is returned and never told dropped.
    """
    results = iter(["pending 1", "pending 2", "pending 3"])
    pending = Pending(clock, driver)
    r = Retry("dep", exact(max_attempts=3, retry_on_result=pending), on_retry=pending.on_retry, clock=clock)
    assert await invoke(r, driver, lambda: next(results)) == "pending 3"
    assert pending.steps == [
        ("dropped", "pending 1", 0),
        ("on_retry", 1, 0),
        ("dropped", "pending 2", 1),
        ("on_retry", 2, 1),
    ]
    assert clock.sleeps == [1.0, 2.0]


class Flaky(Pending):
    """A ``retry_on`` that retries every :class:`Boom` and is told each error the retry drops (as :class:`Pending`)."""

    def __call__(self, error: Exception) -> bool:  # type: ignore[override]
        return isinstance(error, Boom)


async def test_an_error_predicate_is_told_each_error_the_retry_drops_before_the_backoff(
    driver: str, clock: FakeClock
) -> None:
    """``retry_on.dropped`` is called when the retry goes on after an error, before ``on_retry`` and the sleep.

    The last error, which the retry gives up on, is raised and never told dropped.
    """
    errors = iter([Boom("one"), Boom("two"), Boom("three")])
    flaky = Flaky(clock, driver)
    r = Retry("dep", exact(max_attempts=3, retry_on=flaky), on_retry=flaky.on_retry, clock=clock)

    def fn() -> str:
        raise next(errors)

    with pytest.raises(Boom, match="three"):
        await invoke(r, driver, fn)
    assert [(step, str(what), sleeps) for step, what, sleeps in flaky.steps] == [
        ("dropped", "one", 0),
        ("on_retry", "1", 0),
        ("dropped", "two", 1),
        ("on_retry", "2", 1),
    ]
    assert clock.sleeps == [1.0, 2.0]


async def test_on_retry_is_called_with_the_failed_attempt_and_its_error(
    driver: str, clock: FakeClock
) -> None:
    """on_retry(attempt, error) runs before each backoff, with the attempt that failed."""
    seen: list[tuple[int, str, int]] = []
    r = Retry(
        "dep",
        exact(max_attempts=4),
        on_retry=lambda attempt, error: seen.append((attempt, str(error), len(clock.sleeps))),
        clock=clock,
    )
    errors = iter([Boom("one"), Boom("two")])

    def fn() -> str:
        error = next(errors, None)
        if error is not None:
            raise error
        return "ok"

    assert await invoke(r, driver, fn) == "ok"
    assert seen == [(1, "one", 0), (2, "two", 1)]


async def test_async_on_retry_is_awaited_by_the_async_driver(clock: FakeClock) -> None:
    """An async on_retry is awaited before the backoff."""
    seen: list[int] = []

    async def hook(attempt: int, error: Exception | None) -> None:
        await asyncio.sleep(0)
        seen.append(attempt)

    r = Retry("dep", exact(), on_retry=hook, clock=clock)
    assert await invoke(r, "async", flaky(2)) == "ok"
    assert seen == [1, 2]


async def test_async_on_retry_is_refused_by_the_sync_drivers(clock: FakeClock) -> None:
    """Every sync entry point refuses an async on_retry before the function runs."""

    async def hook(attempt: int, error: Exception | None) -> None:
        return None

    fn = flaky(1)
    with pytest.raises(TypeError, match="on_retry is async"):
        retry_sync(fn, on_retry=hook, clock=clock)
    with pytest.raises(TypeError, match="on_retry is async"):
        retry(on_retry=hook, clock=clock)(fn)
    r = Retry("dep", on_retry=hook, clock=clock)
    with pytest.raises(TypeError, match="on_retry is async"):
        r.execute_sync(fn)
    pipeline = PipelineBuilder("p", clock=clock).add(r.as_strategy("p")).build()
    with pytest.raises(TypeError, match="on_retry is async"):
        pipeline.execute_sync(fn)
    assert fn.calls == 0  # type: ignore[attr-defined]


async def test_sync_on_retry_returning_an_awaitable_is_refused_by_the_sync_driver(clock: FakeClock) -> None:
    """A plain hook that returns a coroutine cannot be awaited by the sync driver: TypeError, no leak."""

    async def later() -> None:
        return None

    r = Retry("dep", exact(), on_retry=lambda attempt, error: later(), clock=clock)
    with pytest.raises(TypeError, match="sync driver cannot await"):
        r.execute_sync(flaky(1))
    assert clock.sleeps == []


async def test_on_retry_errors_propagate(driver: str, clock: FakeClock) -> None:
    """An exception raised by on_retry ends the execution with it: hook bugs are not hidden."""

    def hook(attempt: int, error: Exception | None) -> None:
        raise RuntimeError("hook bug")

    r = Retry("dep", exact(), on_retry=hook, clock=clock)
    fn = flaky(2)
    with pytest.raises(RuntimeError, match="hook bug"):
        await invoke(r, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []


def _judged_by(judge: str, fails_at: int) -> tuple[RetryPolicy, Callable[[], Any]]:
    """A policy whose ``judge`` raises at its ``fails_at``-th judgement, and a function it judges (5 failures)."""
    judged: list[object] = []
    answer = {"retry_on": True, "no_retry_on": False, "delay_from": None, "retry_on_result": True}[judge]

    def buggy(outcome: object) -> Any:
        judged.append(outcome)
        if len(judged) == fails_at:
            raise RuntimeError("callback bug")
        return answer

    if judge == "retry_on_result":
        return exact(retry_on_result=buggy), lambda: "pending"
    return exact(**{judge: buggy}), flaky(5)


@pytest.mark.parametrize("fails_at", [1, 2])
@pytest.mark.parametrize("judge", ["retry_on", "no_retry_on", "delay_from", "retry_on_result"])
async def test_an_execution_a_policy_function_fails_to_judge_is_counted_a_failure(
    driver: str, clock: FakeClock, judge: str, fails_at: int
) -> None:
    """A retry_on, no_retry_on, delay_from or retry_on_result that raises ends the execution with its
    error: the attempt it was judging ended, and the execution is counted in ``non_retryable``
    (a failure, as the pipeline counts it)."""
    policy, fn = _judged_by(judge, fails_at)
    r = Retry("dep", policy, clock=clock)
    with pytest.raises(RuntimeError, match="callback bug"):
        await invoke(r, driver, fn)
    stats = r.get_stats()
    assert (stats["attempts"], stats["retries"]) == (fails_at, fails_at - 1)
    assert (stats["executions"], stats["non_retryable"], stats["successes"]) == (1, 1, 0)
    assert r._pipeline.stats.as_dict()["failed"] == 1


@pytest.mark.parametrize("judge", ["retry_on", "no_retry_on", "delay_from", "retry_on_result"])
async def test_a_policy_function_that_raises_ends_the_execution_counted_as_a_failure_everywhere(
    driver: str, clock: FakeClock, otel: Otel, judge: str
) -> None:
    """A policy function raises after a retry: the retry's stats, the pipeline's and the OTel metrics
    count one failed execution, its attempts and its retry alike."""
    policy, fn = _judged_by(judge, 2)
    name = f"judged-{judge}-{driver}"  # the observable counts every live retry of a name
    r = Retry(name, policy, clock=clock)
    with pytest.raises(RuntimeError, match="callback bug"):
        await invoke(r, driver, fn)
    stats = r.get_stats()
    assert (stats["executions"], stats["non_retryable"], stats["successes"]) == (1, 1, 0)
    assert (stats["attempts"], stats["retries"]) == (2, 1)
    assert r._pipeline.stats.as_dict()["failed"] == 1
    executions = {
        dict(p.attributes)[sc.OUTCOME]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if dict(p.attributes)[sc.POLICY] == name and p.value
    }
    assert executions == {"failure": stats["executions"]}
    assert sum(attempts_ended(otel, "retry", name).values()) == stats["attempts"]
    retries = [p.value for p in otel.points(sc.RETRIES) if dict(p.attributes)[sc.POLICY] == name]
    assert retries == [stats["retries"]]


@pytest.mark.parametrize("judge", ["retry_on", "no_retry_on", "delay_from", "retry_on_result"])
async def test_a_policy_function_interrupted_ends_the_execution_counted_cancelled(
    driver: str, clock: FakeClock, judge: str
) -> None:
    """An interrupt (sync) or a cancellation (async) out of a policy function ends the execution: the retry
    counts it cancelled, its attempt ended, as the pipeline does (and as for ``on_retry``)."""
    stop: type[BaseException] = KeyboardInterrupt if driver == "sync" else asyncio.CancelledError
    judged: list[object] = []
    answer = {"retry_on": True, "no_retry_on": False, "delay_from": None, "retry_on_result": True}[judge]

    def stopped(outcome: object) -> Any:
        judged.append(outcome)
        if len(judged) == 2:
            raise stop
        return answer

    fn = (lambda: "pending") if judge == "retry_on_result" else flaky(5)
    r = Retry("dep", exact(**{judge: stopped}), clock=clock)
    with pytest.raises(stop):
        await invoke(r, driver, fn)
    stats = r.get_stats()
    assert (stats["executions"], stats["cancelled"], stats["non_retryable"]) == (1, 1, 0)
    assert (stats["attempts"], stats["retries"]) == (2, 1)
    assert r._pipeline.stats.as_dict()["cancelled"] == 1


# -- cancellation -----------------------------------------------------------------------------


class BlockingClock(FakeClock):
    """A fake clock whose async sleep never ends on its own (so a test can cancel it)."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await asyncio.Event().wait()


async def test_cancellation_during_a_backoff_is_not_retried(scopes: ScopeListener) -> None:
    """Cancelling the task while it backs off raises CancelledError and calls the function no more.

    The failed attempt's scope is closed; no scope was opened for the next one.
    """
    clock = BlockingClock()
    r = Retry("dep", exact(max_attempts=5), clock=clock)
    fn = flaky(10)

    async def afn() -> Any:
        return fn()

    task = asyncio.create_task(r.execute(afn))
    await asyncio.wait_for(clock.sleeping.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == [1.0]
    assert r.stats.cancelled == 1
    assert r.stats.exhausted == 0
    assert scopes.attempts == [1]
    assert scopes.ended == [(1, Outcome.FAILURE, "Boom")]
    assert r.stats.attempts == 1


async def test_cancellation_during_an_attempt_is_not_retried(clock: FakeClock) -> None:
    """Cancelling the task during an attempt propagates at once; it is no failure and no retry."""
    started = asyncio.Event()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    r = Retry("dep", exact(max_attempts=5), clock=clock)
    task = asyncio.create_task(r.execute(hang))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert clock.sleeps == []
    assert r.get_stats()["cancelled"] == 1
    assert r.get_stats()["attempts"] == 1


async def test_cancelled_error_raised_by_the_function_is_not_retried(clock: FakeClock) -> None:
    """A CancelledError raised inside an attempt is never caught as a failure."""
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    r = Retry("dep", exact(retry_on=lambda error: True), clock=clock)
    with pytest.raises(asyncio.CancelledError):
        await r.execute(cancelled)
    assert calls == 1


async def test_an_attempt_timeout_its_function_converted_is_still_retried(clock: FakeClock) -> None:
    """The retry's own attempt timeout takes its cancellation back: the converted error is retried."""
    r = Retry("dep", exact(max_attempts=2, attempt_timeout=0.01), clock=clock)
    calls: list[int] = []

    async def converting_once() -> str:
        calls.append(len(calls) + 1)
        if len(calls) > 1:
            return "ok"
        return await converted_cancellation("cancelled")

    assert await asyncio.wait_for(r.execute(converting_once), 5) == "ok"
    assert calls == [1, 2]
    assert r.stats.cancelled == 0


def test_keyboard_interrupt_is_not_retried_by_the_sync_driver(clock: FakeClock) -> None:
    """KeyboardInterrupt (a BaseException) propagates at once from the sync driver."""
    r = Retry("dep", exact(), clock=clock)
    fn = flaky(5, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        r.execute_sync(fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert r.stats.cancelled == 1


# -- attempt timeout and deadlines ------------------------------------------------------------


async def test_attempt_timeout_cuts_a_hung_async_attempt_and_retries(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """A hung attempt times out after attempt_timeout, is reported, and the next attempt answers."""
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "ok"

    r = Retry("dep", exact(attempt_timeout=0.05, initial_delay=0.1), clock=clock)
    started = time.monotonic()
    assert await r.execute(slow_then_fast) == "ok"
    assert time.monotonic() - started < 2.0
    assert calls == 2
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(0.05, "attempt")]
    assert recorder.of(Event.RETRY_SCHEDULED) == [
        RetryScheduled(1, 0.1, error_type_name(OperationTimeoutError("x", 1.0)))
    ]
    assert r.stats.attempt_timeouts == 1


async def test_attempt_timeouts_until_exhausted_raise_operation_timeout(clock: FakeClock) -> None:
    """When every attempt times out, the last OperationTimeoutError (scope attempt) is raised."""

    async def hang() -> None:
        await asyncio.sleep(10)

    r = Retry("dep", exact(attempt_timeout=0.05, max_attempts=2), clock=clock)
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        await r.execute(hang)
    assert time.monotonic() - started < 2.0
    assert info.value.scope == "attempt"
    assert info.value.timeout == 0.05
    assert isinstance(info.value, TimeoutError)
    assert "gave up after 2 of 2 attempts" in info.value.__notes__[0]
    assert r.stats.attempt_timeouts == 2


def test_attempt_timeout_turns_a_late_sync_result_into_a_retried_timeout(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """A sync attempt that returns after its timeout is a timeout, retried; the next result wins."""
    calls = 0

    def late_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            clock.advance(5.0)
            return "late"
        return "fresh"

    r = Retry("dep", exact(attempt_timeout=1.0), clock=clock)
    assert r.execute_sync(late_then_fast) == "fresh"
    assert calls == 2
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(1.0, "attempt")]
    assert r.stats.attempt_timeouts == 1


class Held:
    """A result holding a resource: ``retry_on_result`` retries an unready one, its ``dropped`` closes it."""

    def __init__(self, name: str, *, ready: bool = True) -> None:
        self.name, self.ready, self.closed = name, ready, False


class ClosesDropped:
    """``retry_on_result`` that retries an unready :class:`Held` and closes each result it is told of."""

    def __init__(self, log: list[str], clock: FakeClock) -> None:
        self.log, self.clock = log, clock

    def __call__(self, result: Held) -> bool:
        return not result.ready

    def dropped(self, result: Held) -> None:
        result.closed = True
        self.log.append(f"dropped {result.name} after {len(self.clock.sleeps)} backoffs")


def late_then(clock: FakeClock, *then: Held) -> Callable[[], Held]:
    """A sync call whose first attempt returns a ready result past a 1 s attempt timeout, then ``then``."""
    answers = iter(then)
    made: list[Held] = []

    def call() -> Held:
        if not made:
            made.append(Held("late"))
            clock.advance(5.0)
            return made[0]
        return next(answers)

    call.made = made  # type: ignore[attr-defined]
    return call


def test_a_late_sync_result_is_told_to_retry_on_result_dropped_before_the_backoff(clock: FakeClock) -> None:
    """A sync attempt's result that came after its attempt timeout is dropped (the attempt is a timeout):
    ``retry_on_result.dropped`` is told of it, before ``on_retry`` and the backoff, as of a retried result."""
    log: list[str] = []
    call = late_then(clock, Held("fresh"))
    policy = exact(attempt_timeout=1.0, initial_delay=0.5, retry_on_result=ClosesDropped(log, clock))
    r = Retry("dep", policy, clock=clock, on_retry=lambda attempt, error: log.append(f"on_retry {attempt}"))
    assert r.execute_sync(call).name == "fresh"
    late = call.made[0]  # type: ignore[attr-defined]
    assert late.closed
    assert log == ["dropped late after 0 backoffs", "on_retry 1"]
    assert clock.sleeps == [0.5]
    assert r.stats.attempt_timeouts == 1


@pytest.mark.parametrize(
    "policy",
    [
        {"max_attempts": 1},  # no retry left
        {"retry_on": ConnectionError},  # a timeout is not retried
    ],
)
def test_a_late_sync_result_the_retry_stops_after_is_told_to_retry_on_result_dropped(
    clock: FakeClock, policy: dict[str, Any]
) -> None:
    """Retrying stops after the late attempt: the caller gets its timeout, and the late result is let
    go all the same, told to ``retry_on_result.dropped`` before the timeout is raised."""
    log: list[str] = []
    call = late_then(clock)
    r = Retry(
        "dep", exact(attempt_timeout=1.0, retry_on_result=ClosesDropped(log, clock), **policy), clock=clock
    )
    with pytest.raises(OperationTimeoutError) as info:
        r.execute_sync(call)
    assert info.value.scope == "attempt"
    assert call.made[0].closed  # type: ignore[attr-defined]
    assert log == ["dropped late after 0 backoffs"]
    assert clock.sleeps == []


def test_a_late_sync_result_whose_dropped_hook_raises_ends_the_execution(clock: FakeClock) -> None:
    """What ``retry_on_result.dropped`` raises for a late result ends the execution, as for a retried result:
    the retry scheduled never runs (given back to the budget)."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0, clock=clock)

    class Refuses(ClosesDropped):
        def dropped(self, result: Held) -> None:
            raise RuntimeError(f"could not close {result.name}")

    call = late_then(clock, Held("fresh"))
    policy = exact(attempt_timeout=1.0, retry_on_result=Refuses([], clock), budget=budget)
    r = Retry("dep", policy, clock=clock)
    with pytest.raises(RuntimeError, match="could not close late"):
        r.execute_sync(call)
    assert len(call.made) == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    stats = budget.get_stats()
    assert (stats["retries"], stats["available"]) == (0, 10)  # the retry withdrawn, given back


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_an_interrupt_in_the_dropped_hook_of_a_late_sync_result_ends_the_execution(
    clock: FakeClock, max_attempts: int
) -> None:
    """A KeyboardInterrupt in ``retry_on_result.dropped`` for a late result goes through, whether the retry
    had stopped or scheduled a retry (given back to the budget, never run)."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0, clock=clock)

    class Interrupted(ClosesDropped):
        def dropped(self, result: Held) -> None:
            raise KeyboardInterrupt

    call = late_then(clock, Held("fresh"))
    policy = exact(
        attempt_timeout=1.0, max_attempts=max_attempts, retry_on_result=Interrupted([], clock), budget=budget
    )
    r = Retry("dep", policy, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        r.execute_sync(call)
    assert len(call.made) == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    assert budget.get_stats()["retries"] == 0


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_a_late_sync_result_of_a_policy_s_attempt_timeout_is_told_to_retry_on_result_dropped(
    clock: FakeClock, max_attempts: int
) -> None:
    """A policy's attempt timeout is a link of its own, inside breaker and bulkhead: the result it drops
    is handed on to the retry, which lets it go as its own attempt timeout's (``retry_on_result.dropped``),
    whether the retry goes on or gives up, the next call none the worse."""
    log: list[str] = []
    call = late_then(clock, Held("fresh"), Held("next call"))
    policy = exact(
        attempt_timeout=1.0,
        initial_delay=0.5,
        max_attempts=max_attempts,
        retry_on_result=ClosesDropped(log, clock),
    )
    guarded = ResilienceManager(clock=clock).policy("late-attempts", ResilienceConfig(retry_policy=policy))
    if max_attempts == 1:
        with pytest.raises(OperationTimeoutError):
            guarded.execute_sync(call)
    else:
        assert guarded.execute_sync(call).name == "fresh"
    assert call.made[0].closed  # type: ignore[attr-defined]
    assert log == ["dropped late after 0 backoffs"]
    assert guarded.execute_sync(call).name in {"fresh", "next call"}
    assert log == ["dropped late after 0 backoffs"]


@pytest.mark.parametrize("alone", [True, False])
def test_the_timeout_of_a_late_sync_attempt_keeps_no_hold_on_its_result(
    clock: FakeClock, alone: bool
) -> None:
    """The result let go is freed at once (the garbage collector off): the timeout the caller gets holds
    it in no frame of its traceback, nor in a reference cycle, whether the attempt timeout is the
    retry's own or a policy's link handing the result on."""
    freed: list[weakref.ref[Held]] = []

    def late() -> Held:
        clock.advance(5.0)
        result = Held("late")
        freed.append(weakref.ref(result))
        return result

    policy = exact(attempt_timeout=1.0, max_attempts=1, retry_on_result=ClosesDropped([], clock))
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(OperationTimeoutError) as info:
            if alone:
                Retry("dep", policy, clock=clock).execute_sync(late)
            else:
                ResilienceManager(clock=clock).policy(
                    "held", ResilienceConfig(retry_policy=policy)
                ).execute_sync(late)
        assert info.value.scope == "attempt"
        assert freed[0]() is None  # while the timeout is held: neither kept by it nor in a cycle
    finally:
        gc.enable()


async def test_a_late_async_result_goes_through_to_retry_on_result(clock: FakeClock) -> None:
    """In a task the attempt timeout cancels the attempt: a result comes after it only from a call that
    caught the cancellation and returned, and it goes through (as with ``asyncio.timeout``), judged by
    ``retry_on_result``, whose ``dropped`` is told of it when it is retried: no result is dropped unheard."""
    log: list[str] = []
    made: list[Held] = []

    async def catches_the_cancellation() -> Held:
        made.append(Held(f"attempt {len(made) + 1}", ready=len(made) > 0))
        if len(made) == 1:
            with contextlib.suppress(asyncio.CancelledError):  # returns all the same, past its timeout
                await asyncio.sleep(10)
        return made[-1]

    r = Retry("dep", exact(attempt_timeout=0.05, retry_on_result=ClosesDropped(log, clock)), clock=clock)
    assert (await r.execute(catches_the_cancellation)).name == "attempt 2"
    assert made[0].closed
    assert log == ["dropped attempt 1 after 0 backoffs"]
    assert r.stats.attempt_timeouts == 1


async def test_an_enclosing_deadline_stops_retrying_early(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Retry never starts a backoff that would end past the enclosing deadline: it gives up first."""
    r = Retry("dep", exact(max_attempts=5), clock=clock)
    fn = flaky(10)

    async def under_deadline() -> None:
        if driver == "sync":
            with SyncDeadline(clock, 2.5, "outer"):
                r.execute_sync(fn)
        else:
            async with AsyncDeadline(clock, 2.5, "outer"):
                await invoke(r, driver, fn)

    with pytest.raises(Boom) as info:
        await under_deadline()
    assert clock.sleeps == [1.0]
    assert clock.now() <= 1002.5
    assert fn.calls == 2  # type: ignore[attr-defined]
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(2, error_type_name(Boom()), "deadline")]
    assert "would overrun the deadline (1.5 s left)" in info.value.__notes__[0]


async def test_an_attempt_the_enclosing_deadline_ends_is_counted_cancelled_in_both_drivers(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """The deadline ends the running second attempt: no retry and no give-up, the execution counted cancelled.

    In a task its timer cancels the attempt; in a thread the attempt ends at it (an engine wait
    the deadline cut, as chaos's injected delay): the retry lets that deadline pass to its scope
    in both drivers, as it lets its cancellation pass, and counts what it counts for it.
    """
    calls: list[int] = []

    def second_outlasts_the_deadline() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Boom
        if driver == "sync":
            sleep_sync_within_deadline(clock, 10.0, "dependency")  # until the deadline, then its error
        clock.advance(10.0)
        return "late"

    async def hung() -> str:
        second_outlasts_the_deadline()
        await asyncio.Event().wait()  # cancelled by the deadline's timer
        return "never"

    r = Retry("dep", exact(max_attempts=3, initial_delay=0.0), clock=clock)
    with pytest.raises(OperationTimeoutError) as caught:
        if driver == "sync":
            with SyncDeadline(clock, 5.0, "outer"):
                r.execute_sync(second_outlasts_the_deadline)
        else:  # the async deadline's timer runs on the loop's time: a short real one
            async with AsyncDeadline(clock, 0.05, "outer"):
                await r.execute(hung)
    assert caught.value.operation == "outer"
    assert len(calls) == 2
    assert [type(e) for e in recorder.of(Event.RETRY_SCHEDULED)] == [RetryScheduled]
    assert recorder.of(Event.RETRY_EXHAUSTED) == []
    stats = r.get_stats()
    assert (stats["cancelled"], stats["exhausted"], stats["non_retryable"], stats["retries"]) == (1, 0, 0, 1)


# -- telemetry --------------------------------------------------------------------------------


async def test_events_are_reported_with_the_retry_as_source(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Each backoff reports RETRY_SCHEDULED (attempt, delay, error type) from the retry's source."""
    r = Retry("dep", exact(max_attempts=3), clock=clock)
    assert await invoke(r, driver, flaky(2)) == "ok"
    boom = error_type_name(Boom())
    assert recorder.of(Event.RETRY_SCHEDULED) == [RetryScheduled(1, 1.0, boom), RetryScheduled(2, 2.0, boom)]
    assert recorder.sources(Event.RETRY_SCHEDULED) == [TelemetrySource("retry", "dep")] * 2
    assert recorder.of(Event.RETRY_EXHAUSTED) == []


class ScopeListener:
    """An execution listener that records the execution and attempt scopes it is asked to open."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.ended: list[tuple[int, Outcome, str | None]] = []
        self.executions: list[Outcome] = []

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        return "execution"

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        self.executions.append(outcome)

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        self.attempts.append(attempt)
        return attempt

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        self.ended.append((handle, outcome, type(error).__name__ if error else None))  # type: ignore[arg-type]


@pytest.fixture
def scopes() -> Iterator[ScopeListener]:
    """A ScopeListener registered on the hub for the test's duration."""
    listener = ScopeListener()
    HUB.add_listener(listener)
    try:
        yield listener
    finally:
        HUB.remove_listener(listener)


async def test_every_attempt_opens_a_scope_the_first_included(
    driver: str, clock: FakeClock, scopes: ScopeListener
) -> None:
    """Each attempt, the first included, gets an attempt scope (to be timed) with its number."""
    r = Retry("dep", exact(max_attempts=4), clock=clock)
    assert await invoke(r, driver, flaky(0)) == "ok"
    assert scopes.attempts == [1]
    assert scopes.ended == [(1, Outcome.SUCCESS, None)]
    assert scopes.executions == [Outcome.SUCCESS]
    assert r.stats.first_attempt_successes == 1
    assert await invoke(r, driver, flaky(2)) == "ok"
    assert scopes.attempts == [1, 1, 2, 3]
    assert scopes.ended[1:] == [
        (1, Outcome.FAILURE, "Boom"),
        (2, Outcome.FAILURE, "Boom"),
        (3, Outcome.SUCCESS, None),
    ]
    assert scopes.executions == [Outcome.SUCCESS, Outcome.RECOVERED]
    assert r.get_stats()["successes_after_retry"] == 1
    assert r.get_stats()["attempts"] == 4


async def test_a_retry_made_while_nobody_listens_opens_scopes_once_a_listener_comes(
    driver: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While no attempt listener is awake the engine admits a retry's first attempt unasked (its
    standing admission); a listener added, woken or removed later is followed at once."""
    asked: list[int] = []
    admit = _RetryStep.admit

    def counting_admit(self: _RetryStep, ctx: ExecutionContext) -> Any:
        asked.append(ctx.attempt)
        return admit(self, ctx)

    monkeypatch.setattr(_RetryStep, "admit", counting_admit)
    r = Retry("unheard", exact(max_attempts=3), clock=clock)
    assert await invoke(r, driver, flaky(0)) == "ok"
    assert await invoke(r, driver, flaky(1)) == "ok"
    assert asked == []  # admitted with the standing token: no call of admit
    assert r.stats.first_attempt_successes == 1  # still counted (the token is the same Counted)
    listener = ScopeListener()
    HUB.add_listener(listener)
    try:
        assert await invoke(r, driver, flaky(1)) == "ok"
        assert listener.attempts == [1, 2]  # the first attempt's scope is opened again
        assert asked == [1]
        HUB.set_dormant(listener, dormant=True)
        assert await invoke(r, driver, flaky(0)) == "ok"
        assert listener.attempts == [1, 2]
        assert asked == [1]  # nobody awake listens: unasked again
        HUB.set_dormant(listener, dormant=False)
        assert await invoke(r, driver, flaky(0)) == "ok"
        assert listener.attempts == [1, 2, 1]
    finally:
        HUB.remove_listener(listener)
    assert await invoke(r, driver, flaky(0)) == "ok"
    assert listener.attempts == [1, 2, 1]
    assert asked == [1, 1]
    assert r.stats.first_attempt_successes == 4


async def _async_hook(attempt: int, error: BaseException) -> None:
    return None


@pytest.mark.parametrize(
    ("policy", "hook"),
    [
        ({"budget": RetryBudget(min_retries_per_second=1.0)}, None),
        ({"retry_on_result": lambda result: result is None}, None),
        ({}, _async_hook),
    ],
    ids=["budget", "result-predicate", "async-hook"],
)
def test_a_retry_whose_admit_has_work_of_its_own_has_no_standing_admission(
    policy: dict[str, Any], hook: Any
) -> None:
    """A budget to deposit in, a result to judge or an async hook the sync driver must refuse:
    the engine asks ``admit`` on every call, and the sync driver still refuses the hook."""
    retry = Retry("asks", exact(max_attempts=2, **policy), on_retry=hook)
    assert retry.as_strategy().standing.token is None
    stands = Retry("stands", exact(max_attempts=2))
    assert stands.execute_sync(flaky(0)) == "ok"  # the idle listener found dormant (first call of a process)
    assert stands.as_strategy().standing.token is not None
    if hook is not None:
        with pytest.raises(TypeError, match="on_retry"):
            retry.execute_sync(flaky(0))


async def test_a_cancelled_first_attempt_closes_its_scope_as_cancelled(
    driver: str, clock: FakeClock, scopes: ScopeListener
) -> None:
    """A first attempt that is interrupted ends its attempt scope as cancelled and is counted so."""
    r = Retry("dep", exact(max_attempts=3), clock=clock)
    with pytest.raises(KeyboardInterrupt):
        await invoke(r, driver, flaky(1, KeyboardInterrupt))
    assert scopes.ended == [(1, Outcome.CANCELLED, None)]
    assert r.stats.cancelled == 1


async def test_a_retried_result_ends_its_scope_as_a_failure(
    driver: str, clock: FakeClock, scopes: ScopeListener
) -> None:
    """A retried result ends its attempt's scope as a failure (no error); the accepted one as a success."""
    results = iter([None, "ok"])
    r = Retry("dep", exact(retry_on_result=lambda result: result is None), clock=clock)
    assert await invoke(r, driver, lambda: next(results)) == "ok"
    assert scopes.attempts == [1, 2]
    assert scopes.ended == [(1, Outcome.FAILURE, None), (2, Outcome.SUCCESS, None)]
    assert r.stats.successes_after_retry == 1


def test_an_attempt_cut_by_its_timeout_is_counted_and_judged_once(
    clock: FakeClock, scopes: ScopeListener, recorder: EventRecorder
) -> None:
    """An attempt timeout is counted once, ends its scope as a timeout, and is decided once."""

    def late() -> str:
        clock.advance(5.0)
        return "late"

    r = Retry("dep", exact(attempt_timeout=1.0, retry_on=(ConnectionError,)), clock=clock)
    with pytest.raises(OperationTimeoutError) as info:
        r.execute_sync(late)
    assert info.value.scope == "attempt"
    assert scopes.ended == [(1, Outcome.TIMEOUT, "OperationTimeoutError")]
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(1.0, "attempt")]
    assert recorder.of(Event.RETRY_SCHEDULED) == []
    stats = r.get_stats()
    assert (stats["attempt_timeouts"], stats["non_retryable"], stats["executions"]) == (1, 1, 1)


async def test_an_on_retry_error_opens_no_further_attempt(
    driver: str, clock: FakeClock, scopes: ScopeListener
) -> None:
    """on_retry runs before the backoff; its error ends the execution before the next attempt's scope."""

    def hook(attempt: int, error: Exception | None) -> None:
        raise RuntimeError("hook bug")

    r = Retry("dep", exact(), on_retry=hook, clock=clock)
    with pytest.raises(RuntimeError, match="hook bug"):
        await invoke(r, driver, flaky(2))
    assert scopes.attempts == [1]
    assert scopes.ended == [(1, Outcome.FAILURE, "Boom")]
    assert clock.sleeps == []


# -- composition ------------------------------------------------------------------------------


async def test_as_strategy_composes_in_a_pipeline(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """A node from as_strategy retries the rest of the chain, sets ctx.attempt and shares the stats."""
    r = Retry("dep", exact(max_attempts=3), clock=clock)
    node = r.as_strategy("policy")
    assert node is not r.as_strategy("policy")
    assert (node.kind, node.name, node.config) == ("retry", "dep", r.policy)
    probe = AttemptRecorder()
    pipeline = PipelineBuilder("policy", clock=clock).add(node).add(probe).build()
    assert pipeline.describe() == (("retry", "dep", r.policy), ("attempt_recorder", "attempt_recorder", None))
    fn = flaky(2)
    if driver == "sync":
        assert pipeline.execute_sync(fn) == "ok"
    else:

        async def afn() -> Any:
            return fn()

        assert await pipeline.execute(afn) == "ok"
    assert probe.seen == [1, 2, 3]
    assert pipeline.stats.recovered == 1
    assert recorder.sources(Event.RETRY_SCHEDULED) == [TelemetrySource("retry", "dep", "policy")] * 2
    assert r.stats.successes_after_retry == 1


async def run_in(pipeline: Any, driver: str, fn: Callable[[], Any]) -> Any:
    """Run the plain function ``fn`` through ``pipeline`` with the given driver."""
    if driver == "sync":
        return pipeline.execute_sync(fn)

    async def afn() -> Any:
        return fn()

    return await pipeline.execute(afn)


async def test_the_total_cap_stops_retrying_with_the_original_error_and_a_note(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Once the execution made its attempts in total, retry gives up before backing off, saying why."""
    r = Retry("dep", exact(max_attempts=5), clock=clock)
    pipeline = PipelineBuilder("policy", clock=clock, max_attempts=2).add(r.as_strategy("policy")).build()
    raised: list[BaseException] = []

    def always() -> None:
        raised.append(Boom(f"failure {len(raised) + 1}"))
        raise raised[-1]

    with pytest.raises(Boom) as info:
        await run_in(pipeline, driver, always)
    assert info.value is raised[-1]
    assert len(raised) == 2
    assert clock.sleeps == [1.0]
    note = (
        "otel_resilience retry 'dep': gave up after 2 of 5 attempts: the execution made 2 attempts "
        "in total, its cap (max_attempts_total)"
    )
    assert info.value.__notes__ == [note]
    boom = error_type_name(Boom())
    assert recorder.of(Event.RETRY_SCHEDULED) == [RetryScheduled(1, 1.0, boom)]
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(2, boom, "max_attempts_total")]
    assert (r.stats.exhausted, r.stats.retries) == (1, 1)


async def test_a_cap_of_one_attempt_never_retries(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """With a total cap of 1 the first failure is given up on at once, however many attempts retry allows."""
    r = Retry("dep", exact(max_attempts=3), clock=clock)
    pipeline = PipelineBuilder("policy", clock=clock, max_attempts=1).add(r.as_strategy("policy")).build()
    fn = flaky(1)
    with pytest.raises(Boom):
        await run_in(pipeline, driver, fn)
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    assert [e.reason for e in recorder.of(Event.RETRY_EXHAUSTED)] == ["max_attempts_total"]  # type: ignore[union-attr]


async def test_retry_numbers_its_attempts_after_those_the_execution_already_made(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Entered at attempt 3 of an execution, retry's attempts, events and on_retry carry 3, 4, 5."""

    class Skip(Strategy):
        """Stands for attempts made before the retry ran: the execution is at attempt 3."""

        kind = "skip"

        @property
        def name(self) -> str:
            return "skip"

        async def execute(self, ctx: ExecutionContext) -> Any:
            ctx.attempt = 3
            return await self.next.execute(ctx)

        def execute_sync(self, ctx: ExecutionContext) -> Any:
            ctx.attempt = 3
            return self.next.execute_sync(ctx)

    hooked: list[int] = []
    r = Retry(
        "dep", exact(max_attempts=3), clock=clock, on_retry=lambda attempt, _error: hooked.append(attempt)
    )
    probe = AttemptRecorder()
    pipeline = (
        PipelineBuilder("policy", clock=clock).add(Skip()).add(r.as_strategy("policy")).add(probe).build()
    )
    fn = flaky(5)
    with pytest.raises(Boom):
        await run_in(pipeline, driver, fn)
    assert probe.seen == [3, 4, 5]
    assert hooked == [3, 4]
    assert [e.attempt for e in recorder.of(Event.RETRY_SCHEDULED)] == [3, 4]  # type: ignore[union-attr]
    assert [e.attempts for e in recorder.of(Event.RETRY_EXHAUSTED)] == [5]  # type: ignore[union-attr]
    assert clock.sleeps == [1.0, 2.0]


# -- entry points -----------------------------------------------------------------------------


async def test_retry_decorator_on_async_and_sync_functions_keeps_the_signature(clock: FakeClock) -> None:
    """@retry(...) picks the driver at decoration time and keeps name, signature and behaviour."""
    attempts = {"a": 0, "s": 0}

    @retry(exact(max_attempts=3), clock=clock)
    async def fetch(key: str, *, default: int = 0) -> str:
        attempts["a"] += 1
        if attempts["a"] < 2:
            raise Boom
        return f"{key}={default}"

    @retry(exact(max_attempts=3), clock=clock)
    def load(key: str, *, default: int = 0) -> str:
        attempts["s"] += 1
        if attempts["s"] < 3:
            raise Boom
        return f"{key}:{default}"

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(load)
    assert fetch.__name__ == "fetch"
    assert str(inspect.signature(load)) == "(key: 'str', *, default: 'int' = 0) -> 'str'"
    assert await fetch("k", default=1) == "k=1"
    assert load("k", default=2) == "k:2"
    assert clock.sleeps == [1.0, 1.0, 2.0]


def test_protect_names_the_retry_after_the_retry_instance(clock: FakeClock, recorder: EventRecorder) -> None:
    """Retry.protect decorates with the instance's policy, name and shared stats."""
    r = Retry("shared", exact(), clock=clock)
    wrapped = r.protect(flaky(1))
    assert wrapped() == "ok"
    assert recorder.sources(Event.RETRY_SCHEDULED) == [TelemetrySource("retry", "shared")]
    assert r.stats.successes_after_retry == 1


def test_decorator_names_the_retry_after_the_function(clock: FakeClock, recorder: EventRecorder) -> None:
    """A decorated function's retry is named after its qualified name, unless a name is given."""

    @retry(exact(), clock=clock)
    def named() -> None:
        raise Boom

    @retry(exact(max_attempts=2), clock=clock, name="custom")
    def other() -> None:
        raise Boom

    with pytest.raises(Boom):
        named()
    with pytest.raises(Boom):
        other()
    names = {source.name for source in recorder.sources(Event.RETRY_SCHEDULED)}
    assert names == {named.__qualname__, "custom"}


def test_a_partial_is_retried_under_the_name_of_its_function(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """@retry and retry_sync name a functools.partial's retry ``partial(<its function>)``, as the manager names its policy."""

    def lookup(table: str) -> None:
        raise Boom(table)

    with pytest.raises(Boom):
        retry(exact(), clock=clock)(functools.partial(lookup, "users"))()
    with pytest.raises(Boom):
        retry_sync(functools.partial(lookup, "orders"), policy=exact(), clock=clock)
    names = {source.name for source in recorder.sources(Event.RETRY_SCHEDULED)}
    assert names == {f"partial({lookup.__qualname__})"}


def test_retry_without_parentheses_is_a_clear_type_error() -> None:
    """@retry (no call) passes the function as the policy and is refused with a hint."""

    def fn() -> None:
        return None

    with pytest.raises(TypeError, match=r"retry\.policy must be a RetryPolicy or None \(use @retry\(\)\)"):
        retry(fn)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"on_retry": 5}, TypeError, r"^retry\.on_retry must be callable or None, got 5"),
        ({"on_retry": lambda attempt: None}, TypeError, r"^retry\.on_retry must be callable as"),
        ({"clock": 5}, TypeError, r"^retry\.clock must be a Clock"),
        ({"rng": 5}, TypeError, r"^retry\.rng must be a random\.Random or None, got 5"),
    ],
)
def test_the_retry_decorator_refuses_bad_options_when_made(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """@retry(...) refuses a bad hook, clock or random source when it is made, as its policy and name.

    Not later, when it is applied to a function (maybe in another module), naming the Retry it builds.
    """
    with pytest.raises(error, match=match):
        retry(**kwargs)


async def test_retry_async_and_retry_sync_pass_arguments_through(clock: FakeClock) -> None:
    """The one-shot functions pass positional and keyword arguments to the function."""
    calls: list[tuple[int, str]] = []

    def add(x: int, *, tag: str) -> str:
        calls.append((x, tag))
        if len(calls) % 2:
            raise Boom
        return f"{tag}{x}"

    async def aadd(x: int, *, tag: str) -> str:
        return add(x, tag=tag)

    assert retry_sync(add, 1, tag="s", policy=exact(), clock=clock) == "s1"
    assert await retry_async(aadd, 2, tag="a", policy=exact(), clock=clock) == "a2"
    assert calls == [(1, "s"), (1, "s"), (2, "a"), (2, "a")]


async def test_a_non_callable_function_is_refused_at_once(clock: FakeClock) -> None:
    """Every entry point raises TypeError for a non-callable before anything else happens."""
    r = Retry("dep", clock=clock)
    with pytest.raises(TypeError, match=r"Retry\.execute\.fn must be callable"):
        await r.execute(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Retry\.execute_sync\.fn must be callable"):
        r.execute_sync("fn")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Retry\.protect\.fn must be callable"):
        r.protect(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry_async\.fn must be callable"):
        await retry_async(42, clock=clock)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry_sync\.fn must be callable"):
        retry_sync(42, clock=clock)  # type: ignore[arg-type]
    assert r.get_stats()["executions"] == 0


async def test_spec_example_runs(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The SPEC's retry_async example retries, logs through on_retry, and returns the data."""
    logger = logging.getLogger("app")
    calls = 0

    async def fetch_data() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("upstream reset")
        return {"rows": 3}

    policy = RetryPolicy(
        max_attempts=3,
        strategy=RetryStrategy.EXPONENTIAL,
        initial_delay=1.0,
        multiplier=2.0,
        max_delay=60.0,
    )
    with caplog.at_level(logging.WARNING, logger="app"):
        result = await retry_async(
            fetch_data,
            policy=policy,
            on_retry=lambda attempt, error: logger.warning(f"Retry {attempt}: {error}"),  # noqa: G004
            clock=clock,
        )
    assert result == {"rows": 3}
    assert [r.getMessage() for r in caplog.records] == ["Retry 1: upstream reset", "Retry 2: upstream reset"]
    assert 0.75 <= clock.sleeps[0] <= 1.25
    assert 1.5 <= clock.sleeps[1] <= 2.5


def test_system_clock_is_the_default() -> None:
    """Without a clock argument a Retry sleeps on the real clock."""
    assert Retry("dep")._core.clock is SYSTEM_CLOCK


# -- threads ----------------------------------------------------------------------------------


def test_counts_are_exact_under_concurrent_threads(clock: FakeClock) -> None:
    """Threads started together through one Retry leave exact counts (no lost updates)."""
    threads_count, calls_each = 8, 200
    r = Retry("dep", exact(initial_delay=0.0, max_delay=0.0), clock=clock)
    barrier = threading.Barrier(threads_count, timeout=5)

    def worker() -> None:
        barrier.wait()
        for i in range(calls_each):
            assert r.execute_sync(flaky(i % 2)) == "ok"

    run_threads(threads_count, worker)
    total = threads_count * calls_each
    stats = r.get_stats()
    assert stats["first_attempt_successes"] == total // 2
    assert stats["successes_after_retry"] == total // 2
    assert stats["retries"] == total // 2
    assert stats["attempts"] == total + total // 2
    assert stats["executions"] == total


# -- hot paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(initial_delay=0.0, max_delay=0.0),
        RetryPolicy(initial_delay=0.0, max_delay=5.0, strategy=RetryStrategy.LINEAR, jitter=Jitter.FULL),
        exact(initial_delay=0.0, max_delay=0.0, strategy=RetryStrategy.FIXED),
    ],
)
async def test_zero_delay_retries_at_once_without_sleeping(
    clock: FakeClock, driver: str, policy: RetryPolicy
) -> None:
    """A zero backoff calls no sleep at all (no time.sleep(0), no asyncio.sleep(0))."""
    r = Retry("dep", policy, clock=clock)
    assert await invoke(r, driver, flaky(2)) == "ok"
    assert clock.sleeps == []
    assert r.get_stats()["retries"] == 2


async def test_constant_delay_is_precomputed_and_still_slept(clock: FakeClock, driver: str) -> None:
    """A FIXED delay without jitter is slept in full on every retry."""
    r = Retry("dep", exact(strategy=RetryStrategy.FIXED, initial_delay=0.5, max_delay=1.0), clock=clock)
    assert await invoke(r, driver, flaky(2)) == "ok"
    assert clock.sleeps == [0.5, 0.5]


def test_one_shot_functions_reuse_one_retry_per_name_and_policy(clock: FakeClock) -> None:
    """retry_sync reuses the Retry of the same name and policy object, and builds another for another policy."""
    retry_module = sys.modules["otel_resilience.patterns.retry"]
    policy = exact(initial_delay=0.0, max_delay=0.0)

    def dep() -> str:
        return "ok"

    assert retry_sync(dep, policy=policy, clock=clock) == "ok"
    assert retry_sync(dep, policy=policy, clock=clock) == "ok"
    runners = [entry[1] for key, entry in retry_module._ONE_SHOT.items() if key[0] == dep.__qualname__]
    assert len(runners) == 1
    assert runners[0].stats.first_attempt_successes == 2
    assert retry_sync(dep, policy=exact(initial_delay=0.0, max_delay=0.0), clock=clock) == "ok"
    runners = [entry[1] for key, entry in retry_module._ONE_SHOT.items() if key[0] == dep.__qualname__]
    assert len(runners) == 2


def _closing_hook(tag: object, seen: list[Any]) -> Callable[[int, Exception | None], None]:
    """An ``on_retry`` lambda closing over ``tag`` and ``seen``: a hook of its own at every call."""
    return lambda attempt, error: seen.append((tag, attempt))


def _one_shot_runners(name: str) -> set[Retry]:
    """The one-shot retries kept for the function named ``name``."""
    retry_module = sys.modules["otel_resilience.patterns.retry"]
    return {entry[1] for key, entry in retry_module._ONE_SHOT.items() if key[0] == name}


def test_one_shot_functions_reuse_one_retry_for_an_inline_lambda_hook(clock: FakeClock) -> None:
    """The SPEC's form, ``on_retry=lambda ...`` written in the call, builds one Retry, not one per call.

    Each call makes a new function object from the same code: one that closes over nothing and
    has the same defaults runs as the first one does, so its Retry is reused (a Retry per call
    cost about ten times the call). A lambda with other defaults, or one closing over a
    variable, gets a Retry of its own, whose hook is its own.
    """
    policy = exact(initial_delay=0.0, max_delay=0.0)
    seen: list[tuple[str, int]] = []

    def dep() -> str:
        dep.calls += 1  # type: ignore[attr-defined]
        if dep.calls % 2:  # type: ignore[attr-defined]
            raise Boom
        return "ok"

    dep.calls = 0  # type: ignore[attr-defined]
    dep.__qualname__ = "one_shot_inline_lambda"
    for _ in range(5):
        hook = lambda attempt, error, seen=seen: seen.append(("same", attempt))  # noqa: E731
        assert retry_sync(dep, policy=policy, on_retry=hook, clock=clock) == "ok"
    (runner,) = _one_shot_runners("one_shot_inline_lambda")
    assert runner.get_stats()["successes_after_retry"] == 5
    assert seen == [("same", 1)] * 5
    other: list[tuple[str, int]] = []
    hook = lambda attempt, error, seen=other: seen.append(("other", attempt))  # noqa: E731
    assert retry_sync(dep, policy=policy, on_retry=hook, clock=clock) == "ok"
    for tag in ("a", "b"):
        assert retry_sync(dep, policy=policy, on_retry=_closing_hook(tag, seen), clock=clock) == "ok"
    assert other == [("other", 1)]
    assert seen[5:] == [("a", 1), ("b", 1)]
    assert len(_one_shot_runners("one_shot_inline_lambda")) == 4


@dataclasses.dataclass(frozen=True)
class _ChannelHook:
    """An ``on_retry`` hook equal to any other of its channel (a frozen dataclass), each with its own log."""

    channel: str
    seen: list[int] = dataclasses.field(default_factory=list, compare=False, hash=False)

    def __call__(self, attempt: int, error: BaseException | None) -> None:
        self.seen.append(attempt)


class _SteppedClock(FakeClock):
    """A fake clock equal to (and hashed as) any other of its kind: compared by value, not identity."""

    def __eq__(self, other: object) -> bool:
        return type(other) is _SteppedClock

    def __hash__(self) -> int:
        return hash(_SteppedClock)


async def test_one_shot_functions_run_the_hook_and_clock_given_not_an_equal_one(driver: str) -> None:
    """A hook or clock equal to another, but another object, is its own: the one-shot retry runs it.

    A Retry built for the first (its hook called, its clock slept on) is never reused for the second.
    """
    policy = exact(initial_delay=1.0)

    async def run(fn: Callable[[], str], hook: Any, clock: FakeClock) -> str:
        if driver == "sync":
            return retry_sync(fn, policy=policy, on_retry=hook, clock=clock)

        async def afn() -> str:
            return fn()

        afn.__qualname__ = fn.__qualname__
        return await retry_async(afn, policy=policy, on_retry=hook, clock=clock)

    name = f"one_shot_equal_hooks_{driver}"
    first, second = _ChannelHook("ops"), _ChannelHook("ops")
    clock = FakeClock(1000.0)
    for hook in (first, second):
        dep = flaky(1)
        dep.__qualname__ = name
        assert await run(dep, hook, clock) == "ok"
    assert (first.seen, second.seen) == ([1], [1])
    assert len(_one_shot_runners(name)) == 2
    clocks = (_SteppedClock(0.0), _SteppedClock(0.0))
    for stepped in clocks:
        dep = flaky(1)
        dep.__qualname__ = name
        assert await run(dep, None, stepped) == "ok"
    assert [stepped.sleeps for stepped in clocks] == [[1.0], [1.0]]


class _UnhashableHook:
    """An ``on_retry`` hook that cannot be hashed: the one-shot functions build a retry for each call."""

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, attempt: int, error: BaseException | None) -> None:
        return None


@pytest.mark.parametrize("hook", ["lambda", "unhashable"])
async def test_one_shot_counts_survive_the_retries_dropped_from_the_cache(
    otel: Any, clock: FakeClock, driver: str, hook: str
) -> None:
    """600 one-shot calls, each with a hook of its own (a new Retry each), export 600 executions and 600 retries.

    The one-shot cache keeps at most _ONE_SHOT_MAX retries: those it drops, and those it never
    kept, are freed, and the executions they counted must stay in ``resilience.executions``.
    """
    calls = 600
    policy = exact(max_attempts=2, strategy=RetryStrategy.FIXED, initial_delay=0.0, max_delay=0.0)
    name = f"one_shot_{driver}_{hook}"

    def dep() -> str:
        dep.calls += 1  # type: ignore[attr-defined]
        if dep.calls % 2:  # type: ignore[attr-defined]
            raise Boom
        return "ok"

    async def adep() -> str:
        return dep()

    dep.calls = 0  # type: ignore[attr-defined]
    dep.__qualname__ = adep.__qualname__ = name
    for call in range(calls):
        on_retry = _closing_hook(call, []) if hook == "lambda" else _UnhashableHook()
        if driver == "sync":
            assert retry_sync(dep, policy=policy, on_retry=on_retry, clock=clock) == "ok"
        else:
            assert await retry_async(adep, policy=policy, on_retry=on_retry, clock=clock) == "ok"
    gc.collect()  # the dropped retries (and their pipelines) are freed
    executions = {
        dict(point.attributes)["resilience.outcome"]: point.value
        for point in otel.points("resilience.executions")
        if dict(point.attributes)["resilience.policy"] == name
    }
    assert executions["recovered"] == calls
    assert sum(executions.values()) == calls
    retries = [
        p.value for p in otel.points("resilience.retries") if dict(p.attributes)["resilience.name"] == name
    ]
    assert retries == [calls]


async def _stream() -> Any:
    yield 1


def test_protect_refuses_an_async_generator_function(clock: FakeClock) -> None:
    """Retry.protect and @retry refuse an async generator function (even with an async on_retry)."""

    async def hook(attempt: int, error: BaseException) -> None:
        return None

    with pytest.raises(TypeError, match="async generator function"):
        Retry("gen", exact(), on_retry=hook, clock=clock).protect(_stream)
    with pytest.raises(TypeError, match="async generator function"):
        retry(exact(), clock=clock)(_stream)


def test_a_generator_function_is_refused_by_every_decorator(clock: FakeClock) -> None:
    """Its body runs when iterated, after the call: retrying the call would retry nothing."""
    from otel_resilience import ResilienceConfig, resilient  # noqa: PLC0415

    def pages() -> Any:
        yield 1

    with pytest.raises(TypeError, match="is a generator function"):
        Retry("pages", exact(), clock=clock).protect(pages)
    with pytest.raises(TypeError, match="is a generator function"):
        retry(exact(), clock=clock)(pages)
    with pytest.raises(TypeError, match="is a generator function"):
        resilient(ResilienceConfig(retry_policy=exact()))(pages)


def test_retry_sync_refuses_an_async_generator_function(clock: FakeClock) -> None:
    """retry_sync refuses an async generator function instead of returning its iterator as a success."""
    with pytest.raises(TypeError, match="async generator function"):
        retry_sync(_stream, policy=exact(), clock=clock)


class _BrokenRepr:
    """Neither callable nor representable."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_non_callable_with_a_broken_repr_gets_a_clear_type_error() -> None:
    """A non-callable fn whose __repr__ raises still gets the 'must be callable' TypeError."""
    with pytest.raises(
        TypeError,
        match=r"retry_sync\.fn must be callable, got <.*_BrokenRepr object at 0x[0-9a-f]+> \(its repr raised\)",
    ):
        retry_sync(_BrokenRepr())  # type: ignore[arg-type]


def test_callable_with_a_broken_qualname(clock: FakeClock) -> None:
    """A callable whose __qualname__ raises is retried (named after its type); decorating it is a clear TypeError."""
    assert retry_sync(BrokenQualname(), policy=exact(), clock=clock) == "ok"
    with pytest.raises(
        TypeError, match=r"metadata .* cannot be read to decorate it: RuntimeError: no qualname"
    ):
        retry(exact(), clock=clock, name="named")(BrokenQualname())


def test_an_empty_retry_on_needs_retry_on_result() -> None:
    """``retry_on=()`` alone would retry nothing: refused naming the field; with ``retry_on_result``, results only."""
    with pytest.raises(ValueError, match=r"RetryPolicy\.retry_on"):
        RetryPolicy(retry_on=())
    with pytest.raises(ValueError, match=r"RetryPolicy\.retry_on"):
        RetryPolicy(retry_on=[])
    results_only = RetryPolicy(retry_on=(), retry_on_result=lambda result: result is None)
    assert not results_only.is_retryable(ConnectionError("down"))


async def test_an_on_retry_that_raises_ends_the_execution_counted_as_a_failure_everywhere(
    driver: str, clock: FakeClock, otel: Otel
) -> None:
    """``on_retry`` raises: the retry's stats, the pipeline's and the OTel metrics all count one failed execution."""

    def on_retry(attempt: int, error: BaseException | None) -> None:
        raise RuntimeError("on_retry failed")

    def failing() -> None:
        raise ConnectionError("down")

    async def afailing() -> None:
        raise ConnectionError("down")

    policy = RetryPolicy(strategy=RetryStrategy.FIXED, initial_delay=1.0, jitter=Jitter.NONE, max_attempts=3)
    retry = Retry("hooked", policy, clock=clock, on_retry=on_retry)
    with pytest.raises(RuntimeError, match="on_retry failed"):
        if driver == "sync":
            retry.execute_sync(failing)
        else:
            await retry.execute(afailing)
    stats = retry.get_stats()
    assert (stats["executions"], stats["non_retryable"], stats["successes"]) == (1, 1, 0)
    assert (stats["attempts"], stats["retries"]) == (1, 1)
    assert retry._pipeline.stats.as_dict()["failed"] == 1
    executions = {
        dict(p.attributes)[sc.OUTCOME]: p.value
        for p in otel.points(sc.EXECUTIONS)
        if dict(p.attributes)[sc.POLICY] == "hooked"
    }
    assert sum(executions.values()) == stats["executions"]
    assert executions["failure"] == 1
    retries = [p.value for p in otel.points(sc.RETRIES) if dict(p.attributes)[sc.POLICY] == "hooked"]
    assert retries == [stats["retries"]]


async def test_a_dropped_hook_that_raises_ends_the_execution_counted_as_a_failure(
    driver: str, clock: FakeClock
) -> None:
    """``retry_on_result.dropped`` raises before a retry: the retry and its pipeline count one failed execution."""

    class Pending:
        def __call__(self, result: object) -> bool:
            return result == "pending"

        def dropped(self, result: object) -> None:
            raise RuntimeError("could not let the result go")

    async def apending() -> str:
        return "pending"

    policy = RetryPolicy(
        strategy=RetryStrategy.FIXED, initial_delay=1.0, jitter=Jitter.NONE, retry_on_result=Pending()
    )
    retry = Retry("dropping", policy, clock=clock)
    with pytest.raises(RuntimeError, match="could not let the result go"):
        if driver == "sync":
            retry.execute_sync(lambda: "pending")
        else:
            await retry.execute(apending)
    stats = retry.get_stats()
    assert (stats["executions"], stats["non_retryable"]) == (1, 1)
    assert retry._pipeline.stats.as_dict()["failed"] == 1


def _delays_from(outcome: object) -> Any:
    yield 1.0


class _DelaysFrom:
    def __call__(self, outcome: object) -> Any:
        yield 1.0


@pytest.mark.parametrize(
    "delay_from",
    [_delays_from, _DelaysFrom(), functools.partial(_delays_from)],
    ids=["function", "object", "partial"],
)
def test_a_generator_function_as_delay_from_is_refused_at_construction(delay_from: Any) -> None:
    """Its iterator, made before its body runs, is no delay: it was taken, and the first retry then
    failed with the retry's TypeError in place of the caller's ConnectionError."""
    with pytest.raises(
        TypeError,
        match=r"RetryPolicy\.delay_from must be a function returning seconds or None, not a generator",
    ):
        RetryPolicy(delay_from=delay_from)
