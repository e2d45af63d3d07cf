"""Tests for otel_resilience.patterns.circuit_breaker: state machine, permits, drivers, events, threads."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import math
import random
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from support import CountingLock, Scopes, freed_on_a_closed_loop, run_threads, until_sync

from otel_resilience.engine.events import HUB, CallRejected, Event, StateChanged, TelemetrySource
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.errors import BulkheadFullError, CircuitOpenError
from otel_resilience.patterns.circuit_breaker import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_HALF_OPEN_MAX_CALLS,
    DEFAULT_IGNORE_EXCEPTIONS,
    DEFAULT_RECORD_EXCEPTIONS,
    DEFAULT_SUCCESS_THRESHOLD,
    DEFAULT_TIMEOUT,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitState,
    CountWindow,
)
from otel_resilience.patterns.circuit_breaker import core as breaker_core
from otel_resilience.testing import EventRecorder, FakeClock


class Boom(ConnectionError):
    """A recorded failure raised by the fake dependency."""


def make(clock: FakeClock, name: str = "dep", **config: Any) -> CircuitBreaker:
    return CircuitBreaker(name, CircuitBreakerConfig(**config), clock=clock)


async def invoke(breaker: CircuitBreaker, driver: str, fn: Callable[[], Any]) -> Any:
    """Run the plain function ``fn`` through the breaker with the given driver."""
    if driver == "sync":
        return breaker.call_sync(fn)

    async def afn() -> Any:
        return fn()

    return await breaker.call(afn)


def ok() -> str:
    return "ok"


def boom() -> None:
    raise Boom


async def fail_times(breaker: CircuitBreaker, driver: str, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await invoke(breaker, driver, boom)


async def trip_and_wait(breaker: CircuitBreaker, clock: FakeClock, driver: str = "async") -> None:
    """Open the breaker with failures, then let its timer elapse (still OPEN until read)."""
    await fail_times(breaker, driver, breaker.config.failure_threshold)
    assert breaker.stats.times_opened >= 1
    clock.advance(breaker.config.timeout)


def changes(recorder: EventRecorder, name: str) -> list[tuple[str, str, str]]:
    return [
        (args.old, args.new, args.reason)
        for source, event, args in recorder.events
        if event is Event.STATE_CHANGED and source.name == name and isinstance(args, StateChanged)
    ]


# -- configuration ---------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """The documented defaults never change silently."""
    config = CircuitBreakerConfig()
    assert (DEFAULT_FAILURE_THRESHOLD, DEFAULT_SUCCESS_THRESHOLD, DEFAULT_TIMEOUT) == (5, 2, 60.0)
    assert DEFAULT_HALF_OPEN_MAX_CALLS == 1
    selectors = (DEFAULT_RECORD_EXCEPTIONS, DEFAULT_IGNORE_EXCEPTIONS)
    assert selectors == ((Exception,), ())
    assert config.failure_threshold == 5
    assert config.success_threshold == 2
    assert config.timeout == 60.0
    assert config.half_open_max_calls == 1
    assert config.record_exceptions == (Exception,)
    assert config.ignore_exceptions == ()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"failure_threshold": 0}, ValueError, r"CircuitBreakerConfig\.failure_threshold must be >= 1"),
        ({"failure_threshold": 1.5}, TypeError, r"CircuitBreakerConfig\.failure_threshold must be an int"),
        ({"failure_threshold": True}, TypeError, r"CircuitBreakerConfig\.failure_threshold"),
        ({"success_threshold": 0}, ValueError, r"CircuitBreakerConfig\.success_threshold must be >= 1"),
        ({"success_threshold": "2"}, TypeError, r"CircuitBreakerConfig\.success_threshold"),
        ({"timeout": 0}, ValueError, r"CircuitBreakerConfig\.timeout must be > 0 seconds"),
        ({"timeout": -1.0}, ValueError, r"CircuitBreakerConfig\.timeout"),
        ({"timeout": math.nan}, ValueError, r"CircuitBreakerConfig\.timeout must be a finite"),
        ({"timeout": math.inf}, ValueError, r"CircuitBreakerConfig\.timeout must be a finite"),
        ({"timeout": timedelta(0)}, ValueError, r"CircuitBreakerConfig\.timeout"),
        ({"timeout": "60"}, TypeError, r"CircuitBreakerConfig\.timeout"),
        ({"half_open_max_calls": 0}, ValueError, r"CircuitBreakerConfig\.half_open_max_calls must be >= 1"),
        ({"record_exceptions": ()}, ValueError, r"CircuitBreakerConfig\.record_exceptions must be at least"),
        ({"record_exceptions": "ValueError"}, TypeError, r"CircuitBreakerConfig\.record_exceptions"),
        ({"record_exceptions": (int,)}, TypeError, r"CircuitBreakerConfig\.record_exceptions"),
        ({"record_exceptions": (KeyboardInterrupt,)}, ValueError, r"CircuitBreakerConfig\.record_exceptions"),
        ({"ignore_exceptions": lambda e: True}, TypeError, r"CircuitBreakerConfig\.ignore_exceptions"),
        (
            {"ignore_exceptions": (asyncio.CancelledError,)},
            ValueError,
            r"CircuitBreakerConfig\.ignore_exceptions",
        ),
        (
            {"record_exceptions": (ValueError,), "ignore_exceptions": (Exception,)},
            ValueError,
            r"CircuitBreakerConfig\.ignore_exceptions must be disjoint",
        ),
        (
            {"record_exceptions": (ConnectionError, BulkheadFullError)},
            ValueError,
            r"CircuitBreakerConfig\.record_exceptions must .*always ignored",
        ),
        ({"record_exceptions": CircuitOpenError}, ValueError, r"CircuitBreakerConfig\.record_exceptions"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    """Every invalid field raises an error naming the class, the field and the rule."""
    with pytest.raises(error, match=match):
        CircuitBreakerConfig(**kwargs)


def test_config_error_message_is_pinned() -> None:
    """The validation message states class, field, rule and value."""
    with pytest.raises(ValueError, match=r"^CircuitBreakerConfig\.failure_threshold must be >= 1, got 0$"):
        CircuitBreakerConfig(failure_threshold=0)


def test_config_normalises_timedelta_and_single_types() -> None:
    """A timedelta timeout becomes float seconds and a single exception class becomes a tuple."""
    config = CircuitBreakerConfig(
        timeout=timedelta(minutes=2),  # type: ignore[arg-type]
        record_exceptions=OSError,
        ignore_exceptions=FileNotFoundError,
    )
    assert config.timeout == 120.0
    assert type(config.timeout) is float
    assert config.record_exceptions == (OSError,)
    assert config.ignore_exceptions == (FileNotFoundError,)


def test_constructor_validates_its_arguments(clock: FakeClock) -> None:
    """Bad name, config or clock are rejected at construction."""
    with pytest.raises(ValueError, match=r"CircuitBreaker\.name"):
        CircuitBreaker("  ")
    with pytest.raises(TypeError, match=r"CircuitBreaker\.name"):
        CircuitBreaker(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CircuitBreaker\.config"):
        CircuitBreaker("x", {"failure_threshold": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CircuitBreaker\.clock"):
        CircuitBreaker("x", clock=object())  # type: ignore[arg-type]
    assert CircuitBreaker("x", clock=clock).config == CircuitBreakerConfig()


async def test_non_callable_fn_is_rejected_at_once(clock: FakeClock) -> None:
    """call, call_sync and protect raise TypeError for a non-callable, counting nothing."""
    breaker = make(clock)
    with pytest.raises(TypeError, match=r"CircuitBreaker\.call\.fn must be callable"):
        await breaker.call(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CircuitBreaker\.call_sync\.fn"):
        breaker.call_sync(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"CircuitBreaker\.protect\.fn"):
        breaker.protect("f")  # type: ignore[call-overload]
    assert breaker.stats.total_requests == 0


# -- the state machine -----------------------------------------------------------------------


async def test_trips_at_exactly_the_threshold(clock: FakeClock, driver: str) -> None:
    """failure_threshold - 1 failures keep it closed; the next one opens it."""
    breaker = make(clock, failure_threshold=3)
    await fail_times(breaker, driver, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.failure_count == 2
    await fail_times(breaker, driver, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats.times_opened == 1


async def test_success_resets_the_consecutive_count(clock: FakeClock, driver: str) -> None:
    """Failures only trip the breaker when consecutive; a success starts the count again."""
    breaker = make(clock, failure_threshold=3)
    for _ in range(5):
        await fail_times(breaker, driver, 2)
        assert await invoke(breaker, driver, ok) == "ok"
        assert breaker.stats.failure_count == 0
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.total_failures == 10


async def test_successes_take_the_lock_only_to_end_a_streak(clock: FakeClock, driver: str) -> None:
    """A CLOSED success with no streak to reset only counts (no lock, from a new breaker on); a
    failure and the success that ends its streak take it; a windowed breaker's successes do."""
    breaker = make(clock, failure_threshold=3)
    lock = breaker._core._lock = CountingLock()  # type: ignore[assignment]
    for _ in range(3):
        assert await invoke(breaker, driver, ok) == "ok"
    assert lock.taken == 0
    await fail_times(breaker, driver, 1)
    assert await invoke(breaker, driver, ok) == "ok"  # ends the streak: under the lock
    assert lock.taken == 2  # the failure's count and the success that ended its streak
    for _ in range(3):
        assert await invoke(breaker, driver, ok) == "ok"
    assert lock.taken == 2
    assert breaker.stats.total_successes == 7
    windowed = make(clock, sliding_window=CountWindow(10))
    lock = windowed._core._lock = CountingLock()  # type: ignore[assignment]
    assert await invoke(windowed, driver, ok) == "ok"
    assert lock.taken == 1


async def test_the_lock_and_the_rejection_counter_are_made_by_the_first_step_that_needs_them(
    clock: FakeClock, driver: str
) -> None:
    """A breaker whose calls succeed makes neither its lock nor its counter of rejections; the
    first failure makes the lock, the first trip the counter (before any call is rejected), and
    every count reads as it would have."""
    breaker = make(clock, failure_threshold=2)
    core = breaker._core
    for _ in range(3):
        assert await invoke(breaker, driver, ok) == "ok"
    assert core._lock is None
    assert core.stats._rejected is None
    assert breaker.stats.total_rejected == 0
    assert breaker.stats.total_requests == 3
    await fail_times(breaker, driver, 1)
    lock = core._lock
    assert lock is not None
    assert core.stats._rejected is None  # still CLOSED: nothing can be rejected yet
    await fail_times(breaker, driver, 1)
    assert breaker.state is CircuitState.OPEN
    assert core._lock is lock  # made once
    for _ in range(2):
        with pytest.raises(CircuitOpenError):
            await invoke(breaker, driver, ok)
    assert breaker.stats.total_rejected == 2
    assert breaker.get_stats()["total_rejected"] == 2
    assert breaker.stats.total_requests == 7
    reloaded = make(clock, failure_threshold=2)
    reloaded._reconfigure(CircuitBreakerConfig(failure_threshold=5))  # a reload: never locked before
    assert reloaded._core._lock is not None
    assert await invoke(reloaded, driver, ok) == "ok"


def test_threads_making_a_breakers_lock_at_once_all_get_the_same_lock() -> None:
    """``_make_lock`` raced by 8 threads (switching every microsecond) makes one lock."""
    for _ in range(20):
        core = CircuitBreaker("racing-lock")._core
        barrier = threading.Barrier(8)
        got: list[object] = []

        def make_it(core: Any = core, barrier: threading.Barrier = barrier, got: list[object] = got) -> None:
            barrier.wait(timeout=5)
            got.append(core._lock or core._make_lock())

        previous = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            run_threads(8, make_it)
        finally:
            sys.setswitchinterval(previous)
        assert len(got) == 8
        assert all(lock is core._lock for lock in got)


async def test_a_success_admitted_lock_free_ends_a_streak_that_began_while_it_ran(
    clock: FakeClock, driver: str
) -> None:
    """A call admitted with no streak to reset, whose success comes after another call failed,
    ends that streak (its success is judged, not only counted), and is counted once."""
    breaker = make(clock, failure_threshold=3)

    def fails_another_then_returns() -> str:
        with pytest.raises(Boom):
            breaker.call_sync(boom)  # a streak starts while this call runs
        assert breaker.stats.failure_count == 1
        return "ok"

    assert await invoke(breaker, driver, fails_another_then_returns) == "ok"
    assert breaker.stats.failure_count == 0
    assert (breaker.stats.total_successes, breaker.stats.total_failures) == (1, 1)
    for _ in range(2):  # two more failures do not trip it: the streak was ended
        await fail_times(breaker, driver, 1)
    assert breaker.state is CircuitState.CLOSED


async def test_a_lock_free_success_of_an_ended_period_is_only_counted(clock: FakeClock, driver: str) -> None:
    """A call admitted lock-free whose period ended while it ran (the breaker was forced open)
    is counted in the totals and judges nothing: the breaker stays open."""
    breaker = make(clock, failure_threshold=3)

    def forced_open_meanwhile() -> str:
        breaker.force_open()
        return "ok"

    assert await invoke(breaker, driver, forced_open_meanwhile) == "ok"
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats.total_successes == 1


async def test_open_rejects_without_calling_and_names_the_breaker(clock: FakeClock, driver: str) -> None:
    """While OPEN the function is never called; the error names the breaker and when it probes."""
    breaker = make(clock, "ml_service", failure_threshold=1, timeout=30.0)
    await fail_times(breaker, driver, 1)
    clock.advance(12.0)
    calls = 0

    def counted() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    with pytest.raises(CircuitOpenError) as info:
        await invoke(breaker, driver, counted)
    assert calls == 0
    error = info.value
    assert (error.name, error.state) == ("ml_service", "open")
    assert error.retry_after == pytest.approx(18.0)
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert "ml_service" in str(error)
    assert breaker.stats.total_rejected == 1


async def test_half_open_after_timeout(clock: FakeClock, driver: str) -> None:
    """The breaker turns HALF_OPEN only once its timeout has fully elapsed."""
    breaker = make(clock, failure_threshold=1, timeout=10.0)
    await fail_times(breaker, driver, 1)
    clock.advance(9.999)
    assert breaker.state is CircuitState.OPEN
    assert breaker.get_stats()["retry_after"] == pytest.approx(0.001)
    clock.advance(0.001)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.get_stats()["retry_after"] == 0.0


async def test_success_threshold_closes(clock: FakeClock, driver: str) -> None:
    """success_threshold probe successes close the breaker, not fewer."""
    breaker = make(clock, failure_threshold=1, success_threshold=3, timeout=5.0)
    await trip_and_wait(breaker, clock, driver)
    for expected in (1, 2):
        assert await invoke(breaker, driver, ok) == "ok"
        assert breaker.state is CircuitState.HALF_OPEN
        assert breaker.stats.success_count == expected
    await invoke(breaker, driver, ok)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.success_count == 0


async def test_failure_in_half_open_reopens_with_a_fresh_timer(clock: FakeClock, driver: str) -> None:
    """A failed probe reopens the breaker for a full timeout counted from the failure."""
    breaker = make(clock, failure_threshold=2, success_threshold=2, timeout=10.0)
    await trip_and_wait(breaker, clock, driver)
    await invoke(breaker, driver, ok)
    clock.advance(3.0)
    await fail_times(breaker, driver, 1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats.times_opened == 2
    assert breaker.get_stats()["retry_after"] == pytest.approx(10.0)
    clock.advance(9.5)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.5)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_half_open_admits_at_most_max_calls(clock: FakeClock) -> None:
    """Of 20 concurrent calls in HALF_OPEN exactly half_open_max_calls reach the dependency."""
    breaker = make(clock, failure_threshold=1, success_threshold=3, timeout=10.0, half_open_max_calls=3)
    await trip_and_wait(breaker, clock)
    gate = asyncio.Event()
    reached = 0

    async def probe() -> str:
        nonlocal reached
        reached += 1
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.call(probe)) for _ in range(20)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert reached == 3
    rejected = [t for t in tasks if t.done()]
    assert len(rejected) == 17
    for task in rejected:
        error = task.exception()
        assert isinstance(error, CircuitOpenError)
        assert (error.state, error.retry_after) == ("half_open", breaker.config.timeout)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 3
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.total_rejected == 17


# -- classification --------------------------------------------------------------------------


async def test_ignored_exceptions_count_as_neither(clock: FakeClock, driver: str) -> None:
    """An ignored error neither trips the breaker nor resets the consecutive count."""
    breaker = make(clock, failure_threshold=2, ignore_exceptions=(KeyError,))

    def key_error() -> None:
        raise KeyError("k")

    await fail_times(breaker, driver, 1)
    for _ in range(5):
        with pytest.raises(KeyError):
            await invoke(breaker, driver, key_error)
    assert breaker.stats.failure_count == 1
    assert breaker.stats.total_ignored == 5
    assert breaker.stats.total_successes == 0
    await fail_times(breaker, driver, 1)
    assert breaker.state is CircuitState.OPEN


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


@pytest.mark.parametrize("field", ["record_exceptions", "ignore_exceptions"])
async def test_exception_types_match_as_isinstance_does(clock: FakeClock, driver: str, field: str) -> None:
    """Both selectors match an error as ``isinstance`` does, a metaclass's ``__instancecheck__`` included:
    ``ignore_exceptions`` ignores the 503 that ``record_exceptions`` would record."""
    breaker = make(clock, **{field: (ServerError,)})

    def unavailable() -> None:
        raise StatusError(503)

    with pytest.raises(StatusError):
        await invoke(breaker, driver, unavailable)
    expected = (0, 1) if field == "ignore_exceptions" else (1, 0)
    assert (breaker.stats.total_failures, breaker.stats.total_ignored) == expected


async def test_unrecorded_exception_counts_as_success(clock: FakeClock, driver: str) -> None:
    """An error outside record_exceptions shows the dependency answered: it is a success."""
    breaker = make(clock, failure_threshold=2, record_exceptions=(ConnectionError,))

    def not_found() -> None:
        raise LookupError("404")

    await fail_times(breaker, driver, 1)
    with pytest.raises(LookupError):
        await invoke(breaker, driver, not_found)
    assert breaker.stats.failure_count == 0
    assert breaker.stats.total_successes == 1
    assert breaker.stats.total_failures == 1


async def test_predicate_selects_recorded_errors(clock: FakeClock, driver: str) -> None:
    """A record_exceptions predicate decides per error instance."""
    breaker = make(clock, failure_threshold=1, record_exceptions=lambda e: "fatal" in str(e))

    def raise_with(message: str) -> Callable[[], None]:
        def fn() -> None:
            raise RuntimeError(message)

        return fn

    with pytest.raises(RuntimeError):
        await invoke(breaker, driver, raise_with("benign"))
    assert breaker.state is CircuitState.CLOSED
    with pytest.raises(RuntimeError):
        await invoke(breaker, driver, raise_with("fatal"))
    assert breaker.state is CircuitState.OPEN
    assert breaker.get_stats()["last_failure_type"] == "RuntimeError"


async def test_predicate_that_raises_gives_the_permit_back(clock: FakeClock, driver: str) -> None:
    """A broken predicate surfaces its own error and does not wedge HALF_OPEN."""
    broken = True

    def predicate(error: BaseException) -> bool:
        if broken:
            raise ZeroDivisionError
        return True

    breaker = make(clock, failure_threshold=1, timeout=1.0, record_exceptions=predicate)
    broken = False
    await trip_and_wait(breaker, clock, driver)
    broken = True
    with pytest.raises(ZeroDivisionError):
        await invoke(breaker, driver, boom)
    assert breaker.get_stats()["half_open_in_flight"] == 0
    assert await invoke(breaker, driver, ok) == "ok"


async def test_inner_rejection_is_always_ignored(clock: FakeClock, driver: str) -> None:
    """A rejection from an inner layer (a full bulkhead) is not a failure of the dependency."""
    breaker = make(clock, failure_threshold=1)

    def full() -> None:
        raise BulkheadFullError("pool", 1, 0)

    for _ in range(3):
        with pytest.raises(BulkheadFullError):
            await invoke(breaker, driver, full)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.total_ignored == 3


async def test_ignored_error_in_half_open_gives_the_probe_back(clock: FakeClock, driver: str) -> None:
    """An ignored probe error frees the probe slot and leaves the breaker HALF_OPEN."""
    breaker = make(clock, failure_threshold=1, timeout=1.0, ignore_exceptions=(KeyError,))
    await trip_and_wait(breaker, clock, driver)

    def key_error() -> None:
        raise KeyError

    with pytest.raises(KeyError):
        await invoke(breaker, driver, key_error)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.get_stats()["half_open_in_flight"] == 0
    assert await invoke(breaker, driver, ok) == "ok"


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelled_probe_releases_its_permit(clock: FakeClock) -> None:
    """Cancelling the only probe frees its slot, counts nothing, and the next probe is admitted."""
    breaker = make(clock, failure_threshold=1, success_threshold=1, timeout=1.0)
    await trip_and_wait(breaker, clock)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hang))
    await started.wait()
    with pytest.raises(CircuitOpenError):
        await breaker.call(asyncio.sleep, 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.get_stats()
    assert stats["state"] == "half_open"
    assert (stats["half_open_in_flight"], stats["success_count"]) == (0, 0)
    assert (stats["total_cancelled"], stats["total_failures"], stats["total_successes"]) == (1, 1, 0)
    await breaker.call(asyncio.sleep, 0)
    assert breaker.state is CircuitState.CLOSED


async def test_cancellation_in_closed_counts_nothing(clock: FakeClock) -> None:
    """A cancelled call in CLOSED neither resets nor extends the consecutive failure count."""
    breaker = make(clock, failure_threshold=2)
    await fail_times(breaker, "async", 1)
    task = asyncio.create_task(breaker.call(asyncio.sleep, 10))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.stats.failure_count == 1
    assert (breaker.stats.total_cancelled, breaker.stats.total_successes) == (1, 0)
    assert breaker.state is CircuitState.CLOSED


async def test_interrupt_in_sync_call_is_not_counted(clock: FakeClock) -> None:
    """KeyboardInterrupt propagates from a sync probe, frees the slot and is not a failure."""
    breaker = make(clock, failure_threshold=1, timeout=1.0)
    await trip_and_wait(breaker, clock, "sync")

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call_sync(interrupted)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.stats.total_cancelled == 1
    assert breaker.stats.total_failures == 1
    assert breaker.get_stats()["half_open_in_flight"] == 0


async def test_an_interrupt_from_a_state_change_callback_at_the_move_to_half_open_gives_the_probe_back(
    clock: FakeClock, driver: str
) -> None:
    """The call that moves the breaker to HALF_OPEN is interrupted by a callback: its probe is not left taken.

    The callback runs after the permit was taken and before the call is made; the interrupt reaches
    the caller, the permit is given back (counted as cancelled), and the next call probes.
    """
    breaker = make(clock, failure_threshold=1, success_threshold=1, timeout=1.0)
    await trip_and_wait(breaker, clock, driver)

    def interrupt_on_half_open(change: StateChanged) -> None:
        if change.new == "half_open":
            raise KeyboardInterrupt

    breaker.on_state_change(interrupt_on_half_open)
    called: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        await invoke(breaker, driver, lambda: called.append("probe"))
    assert called == []
    stats = breaker.get_stats()
    assert (stats["state"], stats["half_open_in_flight"], stats["total_cancelled"]) == ("half_open", 0, 1)
    assert await invoke(breaker, driver, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_cancellation_storm_leaks_no_probe_slot(clock: FakeClock) -> None:
    """After random cancellations of gated probes, no half-open slot stays taken."""
    breaker = make(clock, failure_threshold=1, success_threshold=1000, timeout=1.0, half_open_max_calls=4)
    await trip_and_wait(breaker, clock)
    rng = random.Random(1234)
    gate = asyncio.Event()

    async def probe() -> None:
        await gate.wait()

    for _ in range(10):
        tasks = [asyncio.create_task(breaker.call(probe)) for _ in range(8)]
        await asyncio.sleep(0)
        for task in tasks:
            if rng.random() < 0.5:
                task.cancel()
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        gate.clear()
        assert breaker.get_stats()["half_open_in_flight"] == 0
    stats = breaker.stats
    assert stats.total_cancelled > 0
    assert stats.total_requests == 1 + 80
    assert breaker.state is CircuitState.HALF_OPEN


# -- permits and generations -----------------------------------------------------------------


@pytest.mark.parametrize("late_outcome", ["failure", "success"])
async def test_stale_permit_does_not_count_in_a_later_state(clock: FakeClock, late_outcome: str) -> None:
    """A slow call admitted in CLOSED that ends in HALF_OPEN moves no half-open count."""
    breaker = make(clock, failure_threshold=2, success_threshold=2, timeout=10.0)
    slow_gate = asyncio.Event()
    probe_gate = asyncio.Event()

    async def slow() -> str:
        await slow_gate.wait()
        if late_outcome == "failure":
            raise Boom
        return "late"

    async def probe() -> str:
        await probe_gate.wait()
        return "probe"

    slow_task = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    await trip_and_wait(breaker, clock)
    probe_task = asyncio.create_task(breaker.call(probe))
    await asyncio.sleep(0)
    assert breaker.get_stats()["half_open_in_flight"] == 1

    slow_gate.set()
    await asyncio.gather(slow_task, return_exceptions=True)
    stats = breaker.get_stats()
    assert stats["state"] == "half_open"
    assert (stats["success_count"], stats["half_open_in_flight"]) == (0, 1)
    with pytest.raises(CircuitOpenError, match="half-open"):
        await breaker.call(probe)

    probe_gate.set()
    assert await probe_task == "probe"
    assert breaker.stats.success_count == 1
    assert breaker.state is CircuitState.HALF_OPEN


async def test_stale_closed_failure_does_not_count_after_a_full_cycle(clock: FakeClock) -> None:
    """A failure admitted in an earlier CLOSED period does not count toward the new one."""
    breaker = make(clock, failure_threshold=2, success_threshold=1, timeout=1.0)
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()
        raise Boom

    slow_task = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    await trip_and_wait(breaker, clock)
    await breaker.call(asyncio.sleep, 0)
    assert breaker.state is CircuitState.CLOSED
    gate.set()
    with pytest.raises(Boom):
        await slow_task
    assert breaker.stats.failure_count == 0
    assert breaker.stats.total_failures == 3
    await fail_times(breaker, "async", 1)
    assert breaker.state is CircuitState.CLOSED


async def test_stale_probe_does_not_count_in_a_later_half_open_period(clock: FakeClock) -> None:
    """A probe from a half-open period that ended neither frees a slot nor counts a success later."""
    breaker = make(clock, failure_threshold=1, success_threshold=2, timeout=1.0, half_open_max_calls=2)
    await trip_and_wait(breaker, clock)
    gate_a, gate_b, gate_c = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def probe_b() -> None:
        await gate_b.wait()
        raise Boom

    task_a = asyncio.create_task(breaker.call(gate_a.wait))
    task_b = asyncio.create_task(breaker.call(probe_b))
    await asyncio.sleep(0)
    gate_b.set()
    with pytest.raises(Boom):
        await task_b
    assert breaker.state is CircuitState.OPEN
    clock.advance(1.0)
    task_c = asyncio.create_task(breaker.call(gate_c.wait))
    await asyncio.sleep(0)
    gate_a.set()
    await task_a
    stats = breaker.get_stats()
    assert (stats["state"], stats["success_count"], stats["half_open_in_flight"]) == ("half_open", 0, 1)
    gate_c.set()
    await task_c
    assert breaker.stats.success_count == 1


# -- manual control --------------------------------------------------------------------------


async def test_force_open_without_duration_stays_open_until_reset(clock: FakeClock, driver: str) -> None:
    """force_open() with no duration never turns HALF_OPEN by itself; reset() closes it."""
    breaker = make(clock, timeout=1.0)
    breaker.force_open()
    clock.advance(10_000.0)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        await invoke(breaker, driver, ok)
    assert info.value.retry_after == math.inf
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    assert await invoke(breaker, driver, ok) == "ok"


async def test_force_open_with_duration_then_half_open(clock: FakeClock, driver: str) -> None:
    """force_open(duration) opens for that long, then probes as after a trip."""
    breaker = make(clock, timeout=60.0, success_threshold=1)
    breaker.force_open(timedelta(seconds=5))
    assert breaker.get_stats()["retry_after"] == pytest.approx(5.0)
    clock.advance(5.0)
    assert breaker.state is CircuitState.HALF_OPEN
    await invoke(breaker, driver, ok)
    assert breaker.state is CircuitState.CLOSED


def test_force_open_validates_its_arguments(clock: FakeClock) -> None:
    """A bad duration or reason is rejected and the state is left alone."""
    breaker = make(clock)
    with pytest.raises(ValueError, match=r"CircuitBreaker\.force_open\.duration"):
        breaker.force_open(0)
    with pytest.raises(ValueError, match=r"CircuitBreaker\.force_open\.duration"):
        breaker.force_open(math.nan)
    with pytest.raises(ValueError, match=r"CircuitBreaker\.force_open\.reason"):
        breaker.force_open(1.0, reason="whim")  # type: ignore[arg-type]
    assert breaker.state is CircuitState.CLOSED


async def test_reset_clears_the_current_counts(clock: FakeClock, driver: str) -> None:
    """reset() closes the breaker and clears the consecutive count; totals are kept."""
    breaker = make(clock, failure_threshold=3)
    await fail_times(breaker, driver, 2)
    breaker.reset()
    assert breaker.stats.failure_count == 0
    await fail_times(breaker, driver, 2)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats.total_failures == 4


async def test_registered_for_lookup_by_name(clock: FakeClock) -> None:
    """ISOLATE finds the breaker in BREAKERS by name and can force it open."""
    breaker = make(clock, "isolate_me")
    found = BREAKERS.get("isolate_me")
    assert found is breaker
    assert isinstance(found, CircuitBreaker)
    found.force_open(30.0, reason="isolated")
    assert breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("mode", ["disable", "metrics_only"])
async def test_an_isolation_leaves_an_operators_mode_as_it_is(
    clock: FakeClock, recorder: EventRecorder, driver: str, mode: str
) -> None:
    """disable() and metrics_only() last until reset(): recovery's isolation neither opens nor reports.

    Nothing opens a disabled breaker and a breaker in shadow mode rejects no call (a trip
    published late by another replica leaves them as they are too); an operator's own
    force_open() still opens it.
    """
    breaker = make(clock, f"operator-{mode}")
    getattr(breaker, mode)()
    state = breaker.state
    reported = changes(recorder, breaker.name)
    breaker.force_open(30.0, reason="isolated")
    breaker.force_open(reason="isolated")
    assert breaker.state is state
    assert await invoke(breaker, driver, ok) == "ok"
    assert changes(recorder, breaker.name) == reported
    assert breaker.stats.total_rejected == 0
    breaker.force_open(30.0)
    assert breaker.state is CircuitState.OPEN


# -- telemetry -------------------------------------------------------------------------------


async def test_state_changes_are_reported(clock: FakeClock, recorder: EventRecorder) -> None:
    """Every transition is reported once with its reason through the instance telemetry."""
    breaker = make(clock, "events", failure_threshold=1, success_threshold=1, timeout=5.0)
    await fail_times(breaker, "async", 1)
    clock.advance(5.0)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.state is CircuitState.HALF_OPEN
    await fail_times(breaker, "async", 1)
    clock.advance(5.0)
    await breaker.call(asyncio.sleep, 0)
    breaker.force_open()
    breaker.force_open(2.0)
    breaker.reset()
    breaker.reset()
    breaker.force_open(1.0, reason="isolated")
    assert changes(recorder, "events") == [
        ("closed", "open", "failure_threshold"),
        ("open", "half_open", "timeout_elapsed"),
        ("half_open", "open", "probe_failed"),
        ("open", "half_open", "timeout_elapsed"),
        ("half_open", "closed", "probe_succeeded"),
        ("closed", "open", "forced"),
        ("open", "open", "forced"),  # forced open again: a new OPEN period (reset() twice: one change)
        ("open", "closed", "reset"),
        ("closed", "open", "isolated"),
    ]
    assert breaker.stats.times_opened == 4
    assert set(recorder.sources(Event.STATE_CHANGED)) == {TelemetrySource("circuit_breaker", "events")}


async def test_state_changes_carry_the_reopen_count_of_the_episode(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Each HALF_OPEN -> OPEN adds one re-open to the outage episode; closing reports the total; a new trip starts at 0."""
    breaker = make(clock, "episode", failure_threshold=1, success_threshold=1, timeout=1.0)
    await fail_times(breaker, "async", 1)
    for _ in range(3):
        clock.advance(1.0)
        await fail_times(breaker, "async", 1)  # the probe fails: a re-open
    clock.advance(1.0)
    assert breaker.call_sync(ok) == "ok"
    await fail_times(breaker, "async", 1)
    reopens = [
        (args.old, args.new, args.reopens)
        for args in recorder.of(Event.STATE_CHANGED)
        if isinstance(args, StateChanged)
    ]
    assert reopens == [
        ("closed", "open", 0),
        ("open", "half_open", 0),
        ("half_open", "open", 1),
        ("open", "half_open", 1),
        ("half_open", "open", 2),
        ("open", "half_open", 2),
        ("half_open", "open", 3),
        ("open", "half_open", 3),
        ("half_open", "closed", 3),
        ("closed", "open", 0),
    ]


async def test_rejections_are_reported_with_reason(clock: FakeClock, recorder: EventRecorder) -> None:
    """Rejections report circuit_open or half_open_full through the node's telemetry."""
    breaker = make(clock, "rej", failure_threshold=1, timeout=5.0)
    await fail_times(breaker, "async", 1)
    with pytest.raises(CircuitOpenError):
        breaker.call_sync(ok)
    clock.advance(5.0)
    gate = asyncio.Event()
    probe = asyncio.create_task(breaker.call(gate.wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(gate.wait)
    gate.set()
    await probe
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected("circuit_open"), CallRejected("half_open_full")]
    assert recorder.sources(Event.CALL_REJECTED)[0] == TelemetrySource("circuit_breaker", "rej")


async def test_listener_may_read_the_breaker_during_a_transition(clock: FakeClock) -> None:
    """Events are reported outside the lock, so a listener can read stats without deadlock."""
    breaker = make(clock, "reentrant", failure_threshold=1)
    seen: list[str] = []

    class Reader:
        def on_event(self, source: TelemetrySource, event: Event, args: object) -> None:
            if source.name == "reentrant":
                seen.append(breaker.get_stats()["state"])

    listener = Reader()
    HUB.add_listener(listener)
    try:
        await fail_times(breaker, "sync", 1)
    finally:
        HUB.remove_listener(listener)
    assert seen == ["open"]


def test_get_stats_has_every_key_and_matches_stats(clock: FakeClock) -> None:
    """get_stats returns the SPEC keys, and the stats object holds the same numbers."""
    breaker = make(clock, "stats", failure_threshold=2)
    breaker.call_sync(ok)
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    stats = breaker.get_stats()
    assert stats == {
        "name": "stats",
        "state": "closed",
        "failure_count": 1,
        "success_count": 0,
        "total_requests": 2,
        "total_successes": 1,
        "total_failures": 1,
        "total_rejected": 0,
        "total_ignored": 0,
        "total_cancelled": 0,
        "times_opened": 0,
        "half_open_in_flight": 0,
        "retry_after": 0.0,
        "last_failure_type": f"{__name__}.Boom",
        "failure_rate": None,  # no sliding window
        "slow_call_rate": None,
    }
    live = breaker.stats
    assert (live.total_requests, live.total_successes, live.failure_count) == (2, 1, 1)
    assert repr(breaker) == "CircuitBreaker('stats', state=closed)"


def test_repr_shows_the_state_without_moving_the_breaker(clock: FakeClock) -> None:
    """``repr`` (a log line, a debugger) peeks: it never makes the move to HALF_OPEN nor runs callbacks."""
    breaker = make(clock, "peeked", failure_threshold=1, timeout=5.0)
    seen: list[str] = []
    breaker.on_state_change(lambda change: seen.append(change.new))
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    clock.advance(5.0)
    assert repr(breaker) == "CircuitBreaker('peeked', state=half_open)"
    assert seen == ["open"]  # the move is made by the next call or read of `state`
    assert breaker._core._permit.state is CircuitState.OPEN
    assert breaker.state is CircuitState.HALF_OPEN
    assert seen == ["open", "half_open"]


def test_a_callback_that_cannot_take_its_argument_is_refused_at_subscription(clock: FakeClock) -> None:
    """``on_state_change`` calls ``callback(change)``, ``on_rejection`` ``callback(error)``: one that
    cannot take that argument is refused when given, naming it (was: taken, then every change or
    rejection logged Python's ``TypeError`` and the callback never ran)."""
    breaker = make(clock, "callbacks", failure_threshold=1)
    for subscribe, argument in ((breaker.on_state_change, "change"), (breaker.on_rejection, "error")):
        for callback in (lambda: None, lambda first, second: None):
            with pytest.raises(
                TypeError, match=rf"^CircuitBreaker\.callback must be callable as callback\({argument}\)"
            ):
                subscribe(callback)
    seen: list[object] = []
    breaker.on_state_change(lambda *changes: seen.append(changes))  # room for it: taken
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    assert len(seen) == 1


# -- composition and decorator ---------------------------------------------------------------


async def test_as_strategy_shares_state_across_pipelines(clock: FakeClock, recorder: EventRecorder) -> None:
    """Nodes from as_strategy are new links over one shared state, named for their pipeline."""
    breaker = make(clock, "shared", failure_threshold=1)
    node_a = breaker.as_strategy("policy_a")
    node_b = breaker.as_strategy("policy_b")
    assert node_a is not node_b
    assert (node_a.kind, node_a.name, node_a.config) == ("circuit_breaker", "shared", breaker.config)
    pipeline_a = PipelineBuilder("policy_a").add(node_a).build()
    pipeline_b = PipelineBuilder("policy_b").add(node_b).build()
    with pytest.raises(Boom):
        pipeline_a.execute_sync(boom)
    with pytest.raises(CircuitOpenError):
        await pipeline_b.execute(asyncio.sleep, 0)
    assert breaker.stats.total_rejected == 1
    assert recorder.sources(Event.CALL_REJECTED) == [TelemetrySource("circuit_breaker", "shared", "policy_b")]


async def test_protect_keeps_sync_and_async_functions(clock: FakeClock) -> None:
    """The decorator keeps the name and kind of the function and counts every call."""
    breaker = make(clock, failure_threshold=1)

    @breaker.protect
    async def fetch(x: int, *, y: int = 1) -> int:
        """Fetch."""
        return x + y

    @breaker.protect
    def compute(x: int) -> int:
        """Compute."""
        return x * 2

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(compute)
    assert (fetch.__name__, fetch.__doc__, compute.__name__) == ("fetch", "Fetch.", "compute")
    assert await fetch(1, y=2) == 3
    assert compute(4) == 8
    assert breaker.stats.total_successes == 2
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        compute(1)
    with pytest.raises(CircuitOpenError):
        await fetch(1)


# -- threads ---------------------------------------------------------------------------------


def test_threads_lose_no_counts(clock: FakeClock) -> None:
    """8 threads x 10 000 sync calls, half failing, lose no count."""
    breaker = make(clock, failure_threshold=1_000_000)
    start = threading.Barrier(8, timeout=5)

    def worker() -> None:
        start.wait()
        for i in range(10_000):
            if i % 2:
                breaker.call_sync(ok)
            else:
                with contextlib.suppress(Boom):
                    breaker.call_sync(boom)

    run_threads(8, worker)
    stats = breaker.stats
    assert (stats.total_successes, stats.total_failures, stats.total_requests) == (40_000, 40_000, 80_000)
    assert breaker.state is CircuitState.CLOSED


def test_user_calls_run_concurrently(clock: FakeClock) -> None:
    """Four threads are inside the protected function at the same time: no lock is held."""
    breaker = make(clock)
    inside = threading.Barrier(4, timeout=5)

    def worker() -> None:
        breaker.call_sync(inside.wait)

    run_threads(4, worker)
    assert breaker.stats.total_successes == 4


# -- direct driver and lazy pipeline --------------------------------------------------------------


async def test_direct_driver_counts_every_outcome_in_the_breaker_pipeline(
    clock: FakeClock, driver: str
) -> None:
    """Without an execution scope the breaker runs its core directly and counts like its pipeline would."""
    breaker = make(clock, failure_threshold=1)
    assert await invoke(breaker, driver, ok) == "ok"
    with pytest.raises(Boom):
        await invoke(breaker, driver, boom)
    with pytest.raises(CircuitOpenError):
        await invoke(breaker, driver, ok)
    stats = breaker._pipeline.stats
    assert (stats.succeeded, stats.errors, stats.rejected, stats.total) == (1, 1, 1, 3)
    snapshot = breaker.get_stats()
    assert (snapshot["total_successes"], snapshot["total_failures"], snapshot["total_rejected"]) == (1, 1, 1)


async def test_breaker_runs_in_an_execution_scope_when_a_listener_opens_one(
    clock: FakeClock, driver: str
) -> None:
    """An execution listener that opens a scope sees each breaker call end with its outcome."""
    listener = Scopes()
    HUB.add_listener(listener)
    try:
        breaker = make(clock, failure_threshold=1)
        assert await invoke(breaker, driver, ok) == "ok"
        with pytest.raises(Boom):
            await invoke(breaker, driver, boom)
        with pytest.raises(CircuitOpenError):
            await invoke(breaker, driver, ok)
    finally:
        HUB.remove_listener(listener)
    assert [outcome.value for outcome in listener.ended] == ["success", "failure", "rejected"]
    assert breaker._pipeline.stats.total == 3


def test_breaker_used_only_in_other_pipelines_builds_no_pipeline_of_its_own(clock: FakeClock) -> None:
    """The standalone pipeline is built on first direct use, so a composed breaker exports no idle series."""
    breaker = make(clock)
    pipeline = PipelineBuilder("composed").add(breaker.as_strategy("composed")).build()
    assert pipeline.execute_sync(ok) == "ok"
    assert breaker._standalone is None
    assert breaker.call_sync(ok) == "ok"
    assert breaker._standalone is not None
    assert breaker.stats.total_successes == 2


def test_default_config_is_shared(clock: FakeClock) -> None:
    """Breakers built without a config share one frozen default config object."""
    assert CircuitBreaker("a", clock=clock).config is CircuitBreaker("b", clock=clock).config


async def test_direct_driver_gives_the_permit_back_on_cancellation(clock: FakeClock) -> None:
    """A cancelled direct call counts as cancelled in the breaker and the pipeline, never as a failure."""
    breaker = make(clock, failure_threshold=1)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(breaker.call(hang))
    await asyncio.wait_for(started.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.get_stats()["total_cancelled"] == 1
    assert breaker.get_stats()["total_failures"] == 0
    assert breaker._pipeline.stats.cancelled == 1
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("held", ["probe", "unmade-lock"])
def test_a_call_freed_after_its_loop_closed_gives_its_permit_back_without_blocking(
    clock: FakeClock, held: str
) -> None:
    """A task left running through a breaker when its loop closed is freed by the garbage collector,
    which closes its coroutine on whichever thread allocates: maybe one that holds the breaker's
    lock (a transition allocates under it), or, while the breaker has made no lock yet, the lock
    it is made under. Giving the permit back must not block on it: it is given back once the lock
    is free, and a half-open probe's place is free again."""
    breaker = make(clock, f"freed-{held}", failure_threshold=1, timeout=5.0)
    core = breaker._core
    if held == "probe":
        with pytest.raises(Boom):
            breaker.call_sync(boom)
        clock.advance(5.0)  # the next call is the half-open probe
        lock, what = core._lock, "the breaker's lock"
    else:
        assert core._lock is None  # a breaker whose calls all succeed never makes it
        lock, what = breaker_core._MAKING_LOCKS, "the lock a breaker's lock is made under"
    started: list[bool] = []

    async def hang() -> None:
        started.append(True)
        await asyncio.sleep(3600)

    freed_on_a_closed_loop(lambda: breaker.call(hang), lambda: started, lock, what)
    until_sync(lambda: breaker.get_stats()["total_cancelled"] == 1)  # given back once the lock was free
    stats = breaker.get_stats()
    assert (stats["half_open_in_flight"], stats["total_failures"]) == (0, 1 if held == "probe" else 0)
    assert breaker.call_sync(ok) == "ok"  # the probe's place was given back: the next one runs
    assert breaker.get_stats()["total_successes"] == 1


async def test_function_of_the_wrong_kind_is_ignored_by_the_breaker_and_failed_by_the_pipeline(
    clock: FakeClock,
) -> None:
    """A function given to the wrong driver is one ignored call for the breaker and one failed execution, never a cancellation."""
    breaker = make(clock, failure_threshold=1, timeout=1.0)

    async def coroutine_function() -> str:
        return "ok"

    with pytest.raises(TypeError, match="fn must return an awaitable"):
        await breaker.call(ok)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fn is a coroutine function"):
        breaker.call_sync(coroutine_function)
    await fail_times(breaker, "async", 1)
    clock.advance(1.0)
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(TypeError):
        await breaker.call(ok)  # type: ignore[arg-type]
    stats = breaker.get_stats()
    assert (stats["total_ignored"], stats["total_cancelled"], stats["total_failures"]) == (3, 0, 1)
    assert (stats["state"], stats["half_open_in_flight"]) == ("half_open", 0), (
        "the probe permit is given back"
    )
    pipeline = breaker._pipeline.stats
    assert (pipeline.errors, pipeline.cancelled) == (4, 0)


async def test_wrong_driver_inside_a_pipeline_is_ignored_by_the_breaker(clock: FakeClock) -> None:
    """A breaker linked in a pipeline also counts a function of the wrong kind as ignored, not cancelled."""
    breaker = make(clock)
    pipeline = PipelineBuilder("wrong-kind", clock=clock).add(breaker.as_strategy("wrong-kind")).build()
    with pytest.raises(TypeError):
        await pipeline.execute(ok)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pipeline.execute_sync(asyncio.sleep, 0)
    stats = breaker.get_stats()
    assert (stats["total_ignored"], stats["total_cancelled"], stats["total_failures"]) == (2, 0, 0)
    assert (pipeline.stats.errors, pipeline.stats.cancelled) == (2, 0)


def test_sync_success_counts_are_exact_from_many_threads(clock: FakeClock) -> None:
    """Lock-free success counting loses nothing with 8 threads calling one closed breaker."""
    breaker = make(clock)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait(timeout=5)
        for _ in range(2_000):
            breaker.call_sync(ok)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert breaker.get_stats()["total_successes"] == 16_000
    assert breaker._pipeline.stats.succeeded == 16_000


async def test_rejection_reaches_a_listener_added_after_earlier_rejections(
    clock: FakeClock, driver: str
) -> None:
    """The cached 'does anyone want rejections' answer is renewed when listeners change."""
    breaker = make(clock)
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await invoke(breaker, driver, ok)
    with EventRecorder() as recorder:
        with pytest.raises(CircuitOpenError):
            await invoke(breaker, driver, ok)
        assert [event for _, event, _ in recorder.events] == [Event.CALL_REJECTED]


# --- context-manager form ---------------------------------------------------------------------


async def _through_guard(breaker: CircuitBreaker, driver: str, error: BaseException | None) -> None:
    """Run a block (raising ``error`` if given) under ``breaker.guard()`` with the chosen driver."""
    if driver == "async":
        async with breaker.guard():
            if error is not None:
                raise error
    else:
        with breaker.guard():
            if error is not None:
                raise error


async def test_guard_counts_a_block_like_a_call_and_trips(driver: str, clock: FakeClock) -> None:
    """A guarded block counts successes and failures, trips the breaker, and is then refused before it runs."""
    breaker = CircuitBreaker("guarded", CircuitBreakerConfig(failure_threshold=2, timeout=10.0), clock=clock)
    await _through_guard(breaker, driver, None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await _through_guard(breaker, driver, ConnectionError("down"))
    assert breaker.state is CircuitState.OPEN
    ran = []
    with pytest.raises(CircuitOpenError) as info:
        if driver == "async":
            async with breaker.guard():
                ran.append(1)
        else:
            with breaker.guard():
                ran.append(1)
    assert ran == []
    assert info.value.name == "guarded"
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_failures"], stats["total_rejected"]) == (1, 2, 1)
    clock.advance(10.0)
    await _through_guard(breaker, driver, None)
    assert breaker.get_stats()["success_count"] == 1


async def test_guard_gives_a_cancelled_probe_permit_back(clock: FakeClock) -> None:
    """A half-open probe cancelled inside a guard counts nothing and frees its permit."""
    breaker = CircuitBreaker(
        "guard-cancel", CircuitBreakerConfig(failure_threshold=1, timeout=5.0), clock=clock
    )
    with pytest.raises(ConnectionError):
        await _through_guard(breaker, "async", ConnectionError())
    clock.advance(5.0)
    started = asyncio.Event()

    async def probe() -> None:
        async with breaker.guard():
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(probe())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = breaker.get_stats()
    assert stats["state"] == "half_open"
    assert stats["half_open_in_flight"] == 0
    assert stats["total_cancelled"] == 1
    await _through_guard(breaker, "async", None)
    assert breaker.get_stats()["success_count"] == 1


def test_guard_is_single_use_at_a_time() -> None:
    """Entering one guard object twice at once is refused; a new guard() serves the next block."""
    breaker = CircuitBreaker("guard-reuse")
    guard = breaker.guard()
    with guard, pytest.raises(RuntimeError, match="one block at a time"), guard:
        pass
    with guard:
        pass
    assert breaker.get_stats()["total_successes"] == 2


async def ok_async() -> str:
    return "ok"


class _CountingClock(FakeClock):
    """A FakeClock that counts how often it is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def now(self) -> float:
        self.reads += 1
        return super().now()


@pytest.mark.parametrize("form", ["direct", "pipeline", "guard"])
async def test_open_rejection_reads_the_clock_once(driver: str, form: str) -> None:
    """An OPEN rejection reads the clock once and its retry_after is what is left of the period."""
    clock = _CountingClock()
    breaker = CircuitBreaker("once", CircuitBreakerConfig(failure_threshold=1, timeout=30.0), clock=clock)
    breaker.force_open(20.0)
    clock.advance(5.0)
    pipeline = PipelineBuilder("once_policy", clock=clock).add(breaker.as_strategy("once_policy")).build()
    clock.reads = 0
    with pytest.raises(CircuitOpenError) as info:
        if form == "direct":
            await invoke(breaker, driver, ok)
        elif form == "pipeline" and driver == "sync":
            pipeline.execute_sync(ok)
        elif form == "pipeline":
            await pipeline.execute(ok_async)
        elif driver == "sync":
            with breaker.guard():
                pass
        else:
            async with breaker.guard():
                pass
    assert clock.reads == 1
    assert info.value.retry_after == 15.0
    assert breaker.stats.total_rejected == 1


async def test_open_rejections_make_no_reference_cycles(clock: FakeClock, driver: str) -> None:
    """A rejected call leaves no garbage for the cycle collector (the error is not kept in a frame)."""
    breaker = make(clock, "acyclic")
    breaker.force_open()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage, to be looked at
    try:
        for _ in range(200):
            with pytest.raises(CircuitOpenError):
                await invoke(breaker, driver, ok)
        gc.collect()
        # Only the rejections' own garbage: other threads of the process (earlier tests') may
        # leave cycles of their own meanwhile.
        rejections = sum(1 for found in gc.garbage if isinstance(found, CircuitOpenError))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert rejections == 0


async def _events() -> Any:
    yield 1


def test_async_generator_functions_are_refused(clock: FakeClock) -> None:
    """protect() and call_sync refuse an async generator function; the breaker counts no success."""
    breaker = make(clock, "generator")
    with pytest.raises(TypeError, match="async generator function"):
        breaker.protect(_events)
    with pytest.raises(TypeError, match="async generator function"):
        breaker.call_sync(_events)
    assert breaker.stats.total_successes == 0


def _pages() -> Any:
    yield 1
    raise ConnectionError("page 2 failed")


def test_generator_functions_are_refused(clock: FakeClock) -> None:
    """A generator's body runs when iterated, after the call: protect() and call_sync refuse it."""
    breaker = make(clock, "pages")
    with pytest.raises(TypeError, match="is a generator function"):
        breaker.protect(_pages)
    with pytest.raises(TypeError, match="is a generator function"):
        breaker.call_sync(_pages)
    with pytest.raises(TypeError, match="is a generator function"):
        breaker.call_sync(lambda: (page for page in _pages()))  # a function returning one
    assert (breaker.stats.total_successes, breaker.stats.total_failures) == (0, 0)


async def test_forced_open_rejection_says_until_reset(clock: FakeClock, driver: str) -> None:
    """A breaker forced open without a duration rejects with "forced open until reset()", not "inf s"."""
    breaker = make(clock, "manual")
    breaker.force_open()
    with pytest.raises(CircuitOpenError) as info:
        await invoke(breaker, driver, ok)
    assert str(info.value) == "circuit breaker 'manual' is forced open until reset()"
    breaker.force_open(30.0)
    with pytest.raises(CircuitOpenError) as timed:
        await invoke(breaker, driver, ok)
    assert str(timed.value) == "circuit breaker 'manual' is open; next probe in 30.000 s"


async def test_half_open_rejection_retry_after_is_the_breaker_timeout(clock: FakeClock, driver: str) -> None:
    """A HALF_OPEN rejection tells the caller to wait the breaker's timeout, never 0 (no instant retry)."""
    breaker = make(clock, "probing", failure_threshold=1, timeout=12.5)
    await trip_and_wait(breaker, clock, driver)
    with breaker.guard():  # the one probe permit is in flight
        with pytest.raises(CircuitOpenError) as info:
            await invoke(breaker, driver, ok)
    error = info.value
    assert (error.state, error.retry_after) == ("half_open", 12.5)
    assert str(error) == (
        "circuit breaker 'probing' is half-open and all probe permits are in use; retry after 12.5 s"
    )


def test_a_breaker_makes_its_own_telemetry_at_its_first_event(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Most breakers never report an event of their own: none is made until one is (memory, creation)."""
    breaker = make(clock, "own-events", failure_threshold=1)
    link = breaker.as_strategy("orders")  # a manager's link reports through telemetry of its own
    assert breaker._core._telemetry is None
    pipeline = PipelineBuilder("orders", clock=clock).add(link).build()
    with pytest.raises(Boom):
        pipeline.execute_sync(boom)  # trips: the breaker reports its state change itself
    assert recorder.sources(Event.STATE_CHANGED) == [TelemetrySource("circuit_breaker", "own-events")]
    assert breaker.telemetry is breaker._core.telemetry is breaker._core._telemetry  # one, kept
    assert breaker.telemetry.source == TelemetrySource("circuit_breaker", "own-events")


def test_a_breaker_subclass_of_its_own_kind_reports_its_events_under_that_kind(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    class SensorBreaker(CircuitBreaker, kind="sensor_breaker"):
        pass

    breaker = SensorBreaker("probe", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    with pytest.raises(Boom):
        breaker.call_sync(boom)
    assert recorder.sources(Event.STATE_CHANGED) == [TelemetrySource("sensor_breaker", "probe")]
    assert breaker.telemetry is breaker._core.telemetry


async def test_half_open_rejection_retry_after_is_the_next_openings_break_duration(
    clock: FakeClock, driver: str
) -> None:
    """With a ``break_duration``, a HALF_OPEN rejection waits what a failed probe would reopen it for."""
    openings: list[int] = []

    def doubling(opening: int) -> float:
        openings.append(opening)
        return 2.0**opening

    breaker = make(clock, "doubling", failure_threshold=1, break_duration=doubling)
    await fail_times(breaker, driver, 1)  # opening 1: 2 s
    clock.advance(2.0)
    with breaker.guard():  # the probe permit is in flight
        with pytest.raises(CircuitOpenError) as first:
            await invoke(breaker, driver, ok)
    assert (first.value.state, first.value.retry_after) == ("half_open", 4.0)  # the 2nd opening's
    await fail_times(breaker, driver, 1)  # the probe fails: opening 2, 4 s, as announced
    with pytest.raises(CircuitOpenError) as reopened:
        await invoke(breaker, driver, ok)
    assert (reopened.value.state, reopened.value.retry_after) == ("open", 4.0)
    clock.advance(4.0)
    with breaker.guard():
        with pytest.raises(CircuitOpenError) as second:
            await invoke(breaker, driver, ok)
    assert second.value.retry_after == 8.0


async def test_half_open_rejection_falls_back_to_timeout_quietly_when_break_duration_fails(
    clock: FakeClock, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing ``break_duration`` is logged by the opening it fails, not by every HALF_OPEN rejection."""
    calls: list[int] = []

    def broken(opening: int) -> float:
        calls.append(opening)
        if opening > 1:
            raise RuntimeError("no duration")
        return 1.0

    breaker = make(clock, "broken-durations", failure_threshold=1, timeout=7.0, break_duration=broken)
    await fail_times(breaker, driver, 1)
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING), breaker.guard():
        for _ in range(3):
            with pytest.raises(CircuitOpenError) as info:
                await invoke(breaker, driver, ok)
            assert info.value.retry_after == 7.0
    assert not [record for record in caplog.records if "break_duration" in record.getMessage()]


async def test_a_rejection_describes_the_state_that_rejected_it(
    clock: FakeClock, driver: str, recorder: EventRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A breaker that leaves HALF_OPEN right after rejecting a call still describes the HALF_OPEN rejection.

    The error says ``half_open`` with the time a failed probe would keep it open, names the key
    it reports as, and the telemetry reason is ``half_open_full``, whatever state follows.
    """
    from otel_resilience.patterns.circuit_breaker.core import _BreakerCore  # noqa: PLC0415

    breaker = make(clock, "moved", failure_threshold=1, timeout=5.0, half_open_max_calls=1)
    breaker._report_as("tenant-a")
    await trip_and_wait(breaker, clock, driver)
    assert breaker.state is CircuitState.HALF_OPEN
    probe = breaker._core.try_acquire()  # the one probe place, taken
    assert probe is not None
    original = _BreakerCore.try_acquire

    def closed_right_after(core: _BreakerCore) -> Any:
        answer = original(core)
        core.reset()  # the probe ends (or an operator resets) between the rejection and its error
        return answer

    monkeypatch.setattr(_BreakerCore, "try_acquire", closed_right_after)
    with pytest.raises(CircuitOpenError) as caught:
        await invoke(breaker, driver, ok)
    assert caught.value.state == "half_open"
    assert caught.value.retry_after == 5.0  # a failed probe would open it again for the timeout
    assert caught.value.key == "tenant-a"
    assert recorder.of(Event.CALL_REJECTED)[-1] == CallRejected("half_open_full")
    assert breaker.stats.total_rejected == 1


class _TransientClasses(type):
    """A metaclass that counts classes marked ``transient`` as subclasses (``issubclass`` only)."""

    def __subclasscheck__(cls, subclass: type) -> bool:
        return bool(getattr(subclass, "transient", False)) or type.__subclasscheck__(cls, subclass)


class Transient(Exception, metaclass=_TransientClasses):
    """Every class marked ``transient`` is its subclass, by ``issubclass``; none of their errors is one."""


class MarkedFlaky(ConnectionError):
    """A class marked ``transient``: a subclass of :class:`Transient` by ``issubclass`` alone."""

    transient = True


@pytest.mark.parametrize("field", ["record_exceptions", "ignore_exceptions"])
async def test_exception_types_match_as_isinstance_does_whatever_issubclass_says(
    clock: FakeClock, driver: str, field: str
) -> None:
    """A metaclass's ``__subclasscheck__`` that ``isinstance`` never asks is not asked by the breaker either:
    the error of a class only ``issubclass`` counts in the selector is no match."""
    breaker = make(clock, **{field: (Transient,)})

    def unavailable() -> None:
        raise MarkedFlaky

    assert not isinstance(MarkedFlaky(), Transient)
    with pytest.raises(MarkedFlaky):
        await invoke(breaker, driver, unavailable)
    expected = (1, 0) if field == "ignore_exceptions" else (0, 0)
    assert (breaker.stats.total_failures, breaker.stats.total_ignored) == expected
