"""The windowed breaker: failure and slow-call rates, results as failures, break durations,
reclaimed probes, DISABLED and METRICS_ONLY, per-instance callbacks. All on a FakeClock."""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import pickle
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    TimeWindow,
)
from otel_resilience.engine.events import StateChanged
from otel_resilience.patterns.circuit_breaker.config import (
    DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_MINIMUM_CALLS,
    DEFAULT_SLOW_CALL_RATE_THRESHOLD,
)
from otel_resilience.testing import FakeClock


class Boom(Exception):
    """The dependency's failure."""


def ok() -> str:
    return "ok"


def boom() -> str:
    raise Boom


def run(breaker: CircuitBreaker, fn: Callable[[], str]) -> str:
    """One sync call; the breaker's rejection and the dependency's failure become strings."""
    try:
        return breaker.call_sync(fn)
    except CircuitOpenError:
        return "rejected"
    except Boom:
        return "failed"


def make(clock: FakeClock, **config: Any) -> tuple[CircuitBreaker, list[StateChanged]]:
    breaker = CircuitBreaker("rates", CircuitBreakerConfig(**config), clock=clock)
    changes: list[StateChanged] = []
    breaker.on_state_change(changes.append)
    return breaker, changes


# -- failure rate over a count window ------------------------------------------------------------


def test_a_failure_rate_opens_what_consecutive_failures_never_would() -> None:
    """Failing every other call: 50 % failures, never two in a row."""
    clock = FakeClock()
    consecutive, _ = make(clock, failure_threshold=2)
    windowed, changes = make(
        clock, sliding_window=CountWindow(10), minimum_calls=6, failure_rate_threshold=0.5
    )
    for _ in range(20):
        run(consecutive, boom)
        run(consecutive, ok)
    assert consecutive.state is CircuitState.CLOSED
    outcomes = [run(windowed, fn) for fn in (boom, ok, boom, ok, boom)]
    assert windowed.state is CircuitState.CLOSED  # 3 of 5 failed, but 5 < minimum_calls
    assert outcomes == ["failed", "ok", "failed", "ok", "failed"]
    assert run(windowed, ok) == "ok"  # 6 calls, 3 failures: 0.5 >= 0.5
    assert windowed.state is CircuitState.OPEN
    assert [(c.old, c.new, c.reason, c.duration) for c in changes] == [
        ("closed", "open", "failure_rate", 60.0)
    ]
    assert run(windowed, ok) == "rejected"
    stats = windowed.get_stats()
    assert stats["failure_count"] == 3
    assert stats["failure_rate"] == 0.0  # the window starts again with the OPEN period


def test_the_count_window_forgets_the_oldest_call() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, sliding_window=CountWindow(4), minimum_calls=4, failure_rate_threshold=0.75)
    for fn in (boom, boom, ok, ok, ok, boom, boom):  # last four: ok, ok, boom, boom -> 0.5
        run(breaker, fn)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.get_stats()["failure_rate"] == 0.5
    run(breaker, boom)  # ok, boom, boom, boom -> 0.75
    assert breaker.state is CircuitState.OPEN


def test_a_time_window_lets_old_failures_age_out() -> None:
    clock = FakeClock()
    breaker, changes = make(
        clock, sliding_window=TimeWindow(seconds=10, buckets=10), minimum_calls=4, failure_rate_threshold=0.5
    )
    for _ in range(3):
        run(breaker, boom)
    clock.advance(10.0)  # those three are now out of the window
    for fn in (boom, ok, ok, ok):
        run(breaker, fn)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.get_stats()["failure_rate"] == 0.25
    clock.advance(2.5)
    run(breaker, boom)
    run(breaker, boom)  # 3 of 6 in the window
    assert [c.reason for c in changes] == ["failure_rate"]


def test_failure_count_is_what_the_time_window_holds_now() -> None:
    """Failures that aged out of the window leave ``failure_count`` as they leave ``failure_rate``."""
    clock = FakeClock()
    breaker, _ = make(clock, sliding_window=TimeWindow(seconds=10, buckets=10), minimum_calls=5)
    for fn in (boom, boom, ok):
        run(breaker, fn)
    stats = breaker.get_stats()
    assert (stats["failure_count"], stats["failure_rate"]) == (2, 2 / 3)
    clock.advance(10.0)  # no call since: the three calls left the window
    stats = breaker.get_stats()
    assert (stats["failure_count"], stats["failure_rate"]) == (0, 0.0)
    for state in (breaker.disable, breaker.metrics_only):
        state()
        run(breaker, boom)
        clock.advance(10.0)
        assert breaker.get_stats()["failure_count"] == 0


def test_failure_count_of_an_open_windowed_breaker_shows_what_tripped_it() -> None:
    """The window starts again with the OPEN period, but ``failure_count`` keeps the failures that opened it."""
    clock = FakeClock()
    breaker, _ = make(clock, sliding_window=TimeWindow(seconds=10, buckets=10), minimum_calls=2)
    run(breaker, boom)
    run(breaker, boom)
    assert breaker.state is CircuitState.OPEN
    clock.advance(30.0)  # past the window, still OPEN (timeout 60 s)
    assert breaker.get_stats()["failure_count"] == 2


# -- slow calls ----------------------------------------------------------------------------------


def test_slow_successes_open_the_breaker_and_are_still_successes() -> None:
    clock = FakeClock()
    breaker, changes = make(
        clock,
        sliding_window=CountWindow(4),
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
    )

    def slow() -> str:
        clock.sleep_sync(1.5)
        return "slow"

    assert [run(breaker, fn) for fn in (slow, ok, ok)] == ["slow", "ok", "ok"]
    assert breaker.state is CircuitState.CLOSED
    assert run(breaker, slow) == "slow"  # 2 slow of 4: 0.5 >= 0.5, returned all the same
    assert breaker.state is CircuitState.OPEN
    assert [c.reason for c in changes] == ["slow_call_rate"]
    assert breaker.get_stats()["total_successes"] == 4
    assert breaker.get_stats()["total_failures"] == 0


@pytest.mark.parametrize(("started", "duration"), [(0.0, 1.0), (0.7, 0.1), (1.1, 0.2), (0.3, 2.0)])
def test_a_call_that_takes_exactly_slow_call_duration_is_slow(started: float, duration: float) -> None:
    """A call of at least ``slow_call_duration`` is slow wherever the clock stood.

    Its end is compared with its start plus the duration, as the OPEN timer's end is: the
    difference rounds (``0.7 + 0.1 - 0.7`` is below ``0.1``).
    """
    clock = FakeClock(started)
    breaker, changes = make(
        clock, sliding_window=CountWindow(1), minimum_calls=1, slow_call_duration=duration
    )

    def exactly() -> str:
        clock.advance(duration)
        return "ok"

    assert run(breaker, exactly) == "ok"
    assert [c.reason for c in changes] == ["slow_call_rate"]


def test_a_slow_call_needs_a_window() -> None:
    with pytest.raises(ValueError, match=r"CircuitBreakerConfig\.slow_call_duration"):
        CircuitBreakerConfig(slow_call_duration=1.0)


# -- results as failures -------------------------------------------------------------------------


def test_a_returned_value_can_count_as_a_failure_and_is_still_returned() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, failure_threshold=2, record_result=lambda r: r == "bad")
    assert run(breaker, lambda: "bad") == "bad"
    assert run(breaker, ok) == "ok"  # resets the consecutive count
    assert run(breaker, lambda: "bad") == "bad"
    assert run(breaker, lambda: "bad") == "bad"
    assert breaker.state is CircuitState.OPEN
    stats = breaker.get_stats()
    assert (stats["total_failures"], stats["total_successes"], stats["last_failure_type"]) == (3, 1, "result")
    assert [c.reason for c in changes] == ["failure_threshold"]


def test_a_raising_result_predicate_is_raised_and_the_probe_is_given_back() -> None:
    clock = FakeClock()

    def broken(result: object) -> bool:
        raise KeyError(result)

    breaker, _ = make(clock, record_result=broken, timeout=1.0, half_open_max_calls=1)
    breaker.force_open(1.0)
    clock.advance(1.0)
    with pytest.raises(KeyError):
        breaker.call_sync(ok)
    assert breaker.get_stats()["total_ignored"] == 1
    assert breaker.get_stats()["half_open_in_flight"] == 0  # the probe place is free again


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("judge", ["record_result", "record_exceptions"])
async def test_an_interrupt_from_a_judging_predicate_is_a_cancelled_call(driver: str, judge: str) -> None:
    """A predicate's interrupt ends the call as the call's own would: cancelled, as the execution is, never ignored."""
    clock = FakeClock()

    def interrupting(value: object) -> bool:
        raise KeyboardInterrupt(judge)

    breaker, _ = make(clock, timeout=1.0, **{judge: interrupting})
    breaker.force_open(1.0)
    clock.advance(1.0)

    def call() -> str:
        if judge == "record_result":
            return "ok"
        raise Boom

    async def acall() -> str:
        return call()

    with pytest.raises(KeyboardInterrupt, match=judge):
        if driver == "sync":
            breaker.call_sync(call)
        else:
            await breaker.call(acall)
    stats = breaker.get_stats()
    assert (stats["total_cancelled"], stats["total_ignored"], stats["half_open_in_flight"]) == (1, 0, 0), (
        stats
    )
    assert breaker._pipeline.stats.cancelled == 1


async def test_a_guarded_block_returns_no_value_for_record_result_to_judge(driver: str) -> None:
    """A block has no result: its success is a success, never ``record_result(None)``."""
    clock = FakeClock()
    judged: list[object] = []

    def is_5xx(response: dict[str, int]) -> bool:
        judged.append(response)
        return response["status"] >= 500  # raises TypeError on None

    breaker, changes = make(clock, record_result=is_5xx, success_threshold=1, timeout=1.0)

    async def block() -> None:
        if driver == "async":
            async with breaker.guard():
                pass
        else:
            with breaker.guard():
                pass

    await block()
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_ignored"]) == (1, 0)
    breaker.force_open(1.0)
    clock.advance(1.0)
    await block()  # a half-open probe that succeeds closes the breaker
    assert breaker.state is CircuitState.CLOSED
    assert [c.reason for c in changes] == ["forced", "timeout_elapsed", "probe_succeeded"]
    assert judged == []
    assert run(breaker, lambda: {"status": 503}) == {"status": 503}  # a call's value is still judged
    assert judged == [{"status": 503}]
    assert breaker.get_stats()["total_failures"] == 1


# -- break durations -----------------------------------------------------------------------------


def test_break_durations_grow_with_each_opening_in_a_row() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, failure_threshold=1, break_duration=lambda n: 2.0 ** (n - 1))
    run(breaker, boom)
    assert breaker.get_stats()["retry_after"] == 1.0
    for expected in (2.0, 4.0):
        clock.advance(breaker.get_stats()["retry_after"])
        run(breaker, boom)  # the probe fails: a longer break
        assert breaker.get_stats()["retry_after"] == expected
    with pytest.raises(CircuitOpenError) as rejected:
        breaker.call_sync(ok)
    assert rejected.value.retry_after == 4.0
    clock.advance(4.0)
    run(breaker, ok)
    run(breaker, ok)  # success_threshold=2: closed, the episode is over
    run(breaker, boom)
    assert breaker.get_stats()["retry_after"] == 1.0
    opens = [c.duration for c in changes if c.new == "open"]
    assert opens == [1.0, 2.0, 4.0, 1.0]


def test_a_bad_break_duration_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"CircuitBreakerConfig\.break_duration"):
        CircuitBreakerConfig(break_duration=lambda n: -1.0)
    with pytest.raises(ValueError, match=r"CircuitBreakerConfig\.break_duration"):
        CircuitBreakerConfig(break_duration=lambda n: 1 / 0)
    with pytest.raises(TypeError, match=r"CircuitBreakerConfig\.break_duration"):
        CircuitBreakerConfig(break_duration=3.0)  # type: ignore[arg-type]


def test_a_break_duration_that_fails_later_falls_back_to_timeout(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker, _ = make(
        clock, failure_threshold=1, timeout=7.0, break_duration=lambda n: 1.0 if n == 1 else math.nan
    )
    run(breaker, boom)
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        run(breaker, boom)
    assert breaker.get_stats()["retry_after"] == 7.0
    assert "break_duration(2) failed" in caplog.text


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("interrupted_opening", [1, 2])
async def test_a_break_duration_interrupted_still_opens_for_timeout(
    driver: str, interrupted_opening: int
) -> None:
    """An interrupt from ``break_duration`` reaches the caller, and the breaker opens all the same, for ``timeout``.

    The opening from CLOSED (1) and the failed probe's (2): neither leaves the breaker CLOSED at its
    threshold, nor HALF_OPEN with its only probe taken for ever.
    """
    clock = FakeClock()
    armed = [False]

    def duration(openings: int) -> float:
        if armed[0] and openings == interrupted_opening:
            raise KeyboardInterrupt(f"break_duration({openings})")
        return 1.0

    breaker, changes = make(
        clock, failure_threshold=1, success_threshold=1, timeout=7.0, break_duration=duration
    )
    if interrupted_opening == 2:
        run(breaker, boom)
        clock.advance(1.0)  # the next call probes
    armed[0] = True
    with pytest.raises(KeyboardInterrupt, match=rf"break_duration\({interrupted_opening}\)"):
        if driver == "sync":
            breaker.call_sync(boom)
        else:

            async def aboom() -> str:
                raise Boom

            await breaker.call(aboom)
    armed[0] = False
    stats = breaker.get_stats()
    assert (stats["state"], stats["retry_after"], stats["half_open_in_flight"]) == ("open", 7.0, 0), stats
    assert stats["times_opened"] == stats["total_failures"] == interrupted_opening, stats
    assert run(breaker, ok) == "rejected"
    clock.advance(7.0)
    assert run(breaker, ok) == "ok"  # the probe is let through, and closes it
    assert breaker.get_stats()["state"] == "closed"
    opened = [change.duration for change in changes if change.new == "open"]
    assert opened == [1.0, 7.0][2 - interrupted_opening :]


# -- a hung probe is reclaimed ---------------------------------------------------------------------


def test_a_hung_probe_is_reclaimed_after_max_half_open_wait() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, failure_threshold=1, timeout=5.0, max_half_open_wait=2.0)
    run(breaker, boom)
    clock.advance(5.0)
    hung = breaker.guard()
    hung.__enter__()  # the probe: admitted, never ends
    clock.advance(1.5)
    with pytest.raises(CircuitOpenError) as early:
        breaker.call_sync(ok)
    assert early.value.state == "half_open"
    assert early.value.retry_after == pytest.approx(0.5)  # not 0.0: when the probe is reclaimed
    clock.advance(0.5)
    with pytest.raises(CircuitOpenError) as reclaimed:
        breaker.call_sync(ok)
    assert reclaimed.value.state == "open"
    assert reclaimed.value.retry_after == 5.0
    assert [c.reason for c in changes][-1] == "probe_timed_out"
    assert breaker.get_stats()["total_failures"] == 2
    hung.__exit__(None, None, None)  # ends late: counted as failed when reclaimed, so nothing more
    assert breaker.state is CircuitState.OPEN
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_failures"]) == (0, 2)
    assert stats["total_requests"] == 4  # one failure, the probe, two rejections: each once


@pytest.mark.parametrize(("opened", "wait"), [(0.0, 2.0), (0.0, 0.1), (0.0, 0.3), (0.5, 0.1)])
def test_a_probe_hung_for_exactly_max_half_open_wait_is_reclaimed(opened: float, wait: float) -> None:
    """The wait is over when the clock reaches the probe's start plus the wait, wherever it stood."""
    clock = FakeClock(opened)
    breaker, changes = make(clock, failure_threshold=1, timeout=5.0, max_half_open_wait=wait)
    run(breaker, boom)
    clock.advance(5.0)
    hung = breaker.guard()
    hung.__enter__()  # the probe: admitted, never ends
    clock.advance(wait)
    with pytest.raises(CircuitOpenError) as reclaimed:
        breaker.call_sync(ok)
    assert reclaimed.value.state == "open"
    assert [c.reason for c in changes][-1] == "probe_timed_out"
    hung.__exit__(None, None, None)


class Ignored(Exception):
    """An error the breaker ignores."""


@pytest.mark.parametrize(
    ("ending", "error"),
    [("success", None), ("failure", Boom()), ("ignored", Ignored()), ("cancelled", asyncio.CancelledError())],
)
def test_every_reclaimed_probe_is_one_failure_however_it_ends(
    ending: str, error: BaseException | None
) -> None:
    clock = FakeClock()
    breaker, changes = make(
        clock,
        failure_threshold=1,
        timeout=5.0,
        half_open_max_calls=3,
        max_half_open_wait=2.0,
        ignore_exceptions=(Ignored,),
    )
    run(breaker, boom)
    clock.advance(5.0)
    probes = [breaker.guard() for _ in range(3)]
    for probe in probes:
        probe.__enter__()  # three probes admitted, none ends
    clock.advance(2.0)
    assert run(breaker, ok) == "rejected"  # reclaims the three: the breaker opens again
    assert [c.reason for c in changes][-1] == "probe_timed_out"
    assert breaker.get_stats()["total_failures"] == 4  # the first failure and the three probes
    for probe in probes:  # each ends late, as the case says: counted once already
        assert not probe.__exit__(None if error is None else type(error), error, None)  # nothing suppressed
    stats = breaker.get_stats()
    assert stats["total_failures"] == 4
    assert stats["total_successes"] + stats["total_ignored"] + stats["total_cancelled"] == 0
    assert stats["total_requests"] == 5  # one failure, three probes, one rejection
    assert breaker.state is CircuitState.OPEN


def test_a_stale_probe_that_was_not_reclaimed_still_counts() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=1, timeout=5.0, half_open_max_calls=2, max_half_open_wait=2.0)
    run(breaker, boom)
    clock.advance(5.0)
    slow = breaker.guard()
    slow.__enter__()
    assert run(breaker, boom) == "failed"  # the other probe fails: open again, ``slow`` is stale
    slow.__exit__(None, None, None)  # not reclaimed: its success counts in the totals
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_failures"]) == (1, 2)
    assert breaker.state is CircuitState.OPEN


# -- DISABLED and METRICS_ONLY ---------------------------------------------------------------------


def test_a_disabled_breaker_admits_and_counts_everything_until_reset() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, failure_threshold=1)
    breaker.disable()
    assert [run(breaker, boom) for _ in range(5)] == ["failed"] * 5
    assert breaker.state is CircuitState.DISABLED
    assert breaker.get_stats()["total_failures"] == 5
    breaker.reset()
    assert breaker.state is CircuitState.CLOSED
    run(breaker, boom)
    assert breaker.state is CircuitState.OPEN
    assert [(c.old, c.new, c.reason) for c in changes] == [
        ("closed", "disabled", "forced"),
        ("disabled", "closed", "reset"),
        ("closed", "open", "failure_threshold"),
    ]


def test_metrics_only_reports_the_trips_it_would_make_and_rejects_nothing() -> None:
    clock = FakeClock()
    breaker, changes = make(clock, sliding_window=CountWindow(4), minimum_calls=4, failure_rate_threshold=0.5)
    breaker.metrics_only()
    results = [run(breaker, fn) for fn in (boom, boom, ok, ok, boom, ok, ok, ok, boom, boom, boom, ok)]
    assert "rejected" not in results
    assert breaker.state is CircuitState.METRICS_ONLY
    would = [(c.old, c.new, c.reason) for c in changes[1:]]
    # A trip at the 4th call (2 of 4); the window starts again: the 10th call makes the last four
    # ok, ok, boom, boom (2 of 4), a second trip; the last two calls are under minimum_calls.
    assert would == [("metrics_only", "metrics_only", "failure_rate")] * 2
    assert breaker.get_stats()["times_opened"] == 0


def test_force_closed_closes_as_an_operator() -> None:
    clock = FakeClock()
    breaker, changes = make(clock)
    breaker.force_open()
    breaker.force_closed()
    assert breaker.state is CircuitState.CLOSED
    assert (changes[-1].old, changes[-1].new, changes[-1].reason) == ("open", "closed", "forced")


# -- callbacks -----------------------------------------------------------------------------------


async def test_async_and_raising_callbacks_run_and_never_break_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("cb", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    seen: list[str] = []

    async def on_change(change: StateChanged) -> None:
        await asyncio.sleep(0)
        seen.append(f"{change.old}->{change.new}")

    def broken(change: StateChanged) -> None:
        raise RuntimeError("callback bug")

    def on_reject(error: CircuitOpenError) -> None:
        seen.append(f"rejected:{error.state}")

    breaker.on_state_change(on_change)
    breaker.on_state_change(broken)
    remove = breaker.on_rejection(on_reject)

    async def fail() -> None:
        raise Boom

    async def fine() -> str:
        return "ok"

    with caplog.at_level(logging.WARNING, logger="otel_resilience"), pytest.raises(Boom):
        await breaker.call(fail)
    with pytest.raises(CircuitOpenError):
        await breaker.call(fine)
    remove()
    with pytest.raises(CircuitOpenError):
        await breaker.call(fine)
    await asyncio.sleep(0.01)
    assert sorted(seen) == ["closed->open", "rejected:open"]
    assert "state change callback raised" in caplog.text
    with pytest.raises(TypeError, match=r"CircuitBreaker\.callback"):
        breaker.on_state_change(42)  # type: ignore[arg-type]


def test_an_async_callback_from_a_thread_runs_to_completion() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("cb_sync", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    seen: list[str] = []

    async def on_change(change: StateChanged) -> None:
        await asyncio.sleep(0)
        seen.append(change.new)

    breaker.on_state_change(on_change)
    run(breaker, boom)
    assert seen == ["open"]


def test_a_callback_returning_a_generator_is_logged_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that returns a generator, whose body nothing iterates, is logged as one that raised,
    as an alert subscriber's is (the rule of every notification callback; was: ignored in silence)."""
    breaker = CircuitBreaker("cb_generator", CircuitBreakerConfig(failure_threshold=1), clock=FakeClock())
    ran: list[str] = []

    def body(change: StateChanged) -> Iterator[None]:
        ran.append(change.new)
        yield

    breaker.on_state_change(lambda change: body(change))
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        run(breaker, boom)
    assert ran == []
    assert "state change callback raised" in caplog.text
    assert "whose body never runs" in caplog.text


def test_a_generator_function_callback_is_refused_when_given(caplog: pytest.LogCaptureFixture) -> None:
    """A generator function, sync or async (or an object whose ``__call__`` is one), given as
    ``on_state_change`` or ``on_rejection`` callback makes an iterator nobody consumes: refused when
    given, as ``AlertSystem.subscribe`` refuses it (was: taken, then logged as failed at each change)."""
    breaker = CircuitBreaker(
        "cb_generator_function", CircuitBreakerConfig(failure_threshold=1), clock=FakeClock()
    )

    def body(value: object) -> Iterator[None]:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it a generator function

    async def body_async(value: object) -> Any:
        raise AssertionError("never run")
        yield  # pragma: no cover - makes it an async generator function

    class Notifier:
        def __call__(self, value: object) -> Iterator[None]:
            raise AssertionError("never run")
            yield  # pragma: no cover - makes it a generator function

    class AsyncNotifier:
        async def __call__(self, value: object) -> Any:
            raise AssertionError("never run")
            yield  # pragma: no cover - makes it an async generator function

    rule = r"CircuitBreaker\.callback must be a function or an async function, not a generator function"
    # A partial of such an object too (it was taken: only the object's own __call__ was looked at).
    for callback in (body, body_async, Notifier(), AsyncNotifier(), functools.partial(Notifier())):
        with pytest.raises(TypeError, match=rule):
            breaker.on_state_change(callback)
        with pytest.raises(TypeError, match=rule):
            breaker.on_rejection(callback)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        assert [run(breaker, boom), run(breaker, ok)] == ["failed", "rejected"]
    assert "callback raised" not in caplog.text  # nothing was added: no one is notified


def test_an_async_callback_from_a_thread_leaves_the_threads_event_loop_as_it_was() -> None:
    """An async callback run to completion in a thread with no running loop runs in a loop of its own
    (a task it leaves is cancelled, as by ``asyncio.run``), and leaves the thread's current event loop
    (one it set, run now and then) as it was."""
    breaker = CircuitBreaker("cb_thread_loop", CircuitBreakerConfig(failure_threshold=1), clock=FakeClock())
    seen: list[object] = []
    left: list[asyncio.Task[None]] = []

    async def on_change(change: StateChanged) -> None:
        seen.append(asyncio.get_running_loop())
        left.append(asyncio.ensure_future(asyncio.sleep(3600)))  # never awaited by the callback

    breaker.on_state_change(on_change)

    def in_thread() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # a thread that runs its loop now and then (run_until_complete)
        try:
            run(breaker, boom)
            try:
                seen.append(asyncio.get_event_loop() is loop)
            except RuntimeError as error:  # no current event loop in this thread any more
                seen.append(error)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(30)  # generous: the callback does not wait
    assert len(seen) == 2
    assert isinstance(seen[0], asyncio.AbstractEventLoop)
    assert seen[1] is True
    assert left[0].cancelled()


def test_an_async_callback_s_task_failing_at_its_cancellation_is_reported_as_by_asyncio_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task an async callback run from a thread left, raising when cancelled at the loop's end, is
    reported to the loop's exception handler (logged), as ``asyncio.run`` reports it, never dropped."""
    breaker = CircuitBreaker("cb_left_fails", CircuitBreakerConfig(failure_threshold=1), clock=FakeClock())

    async def cleanup_fails() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup failed")

    async def on_change(change: StateChanged) -> None:
        asyncio.ensure_future(cleanup_fails())  # noqa: RUF006 - left to the loop's end
        await asyncio.sleep(0)

    breaker.on_state_change(on_change)
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            run(breaker, boom)
        except BaseException as error:  # judged below
            errors.append(error)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join(30)  # generous: the callback does not wait
    assert errors == []
    reported = [
        record for record in caplog.records if record.exc_info and "cleanup failed" in str(record.exc_info[1])
    ]
    assert len(reported) == 1


def test_a_remover_removes_only_its_own_subscription_once() -> None:
    """Two subscriptions of one callable are two: removing one (twice, even) leaves the other."""
    clock = FakeClock()
    breaker = CircuitBreaker("cb_twice", CircuitBreakerConfig(failure_threshold=1), clock=clock)
    changes: list[object] = []
    rejections: list[object] = []
    first = breaker.on_state_change(lambda change: changes.append(change.new))
    logged = breaker.on_state_change(changes.append)
    again = breaker.on_state_change(changes.append)
    breaker.on_rejection(rejections.append)
    remove_rejection = breaker.on_rejection(rejections.append)
    again()
    again()  # a second call removes nothing more
    remove_rejection()
    run(breaker, boom)
    assert run(breaker, ok) == "rejected"
    assert changes[0] == "open"
    assert len(changes) == 2  # the lambda's, and the one subscription of changes.append left
    assert len(rejections) == 1
    logged()
    first()
    breaker.reset()
    assert len(changes) == 2  # none left


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("sliding_window", 10, TypeError),
        ("failure_rate_threshold", 0.0, ValueError),
        ("failure_rate_threshold", 1.5, ValueError),
        ("failure_rate_threshold", math.nan, ValueError),
        ("slow_call_rate_threshold", 0, ValueError),
        ("minimum_calls", 0, ValueError),
        ("minimum_calls", True, TypeError),
        ("record_result", "yes", TypeError),
        ("max_half_open_wait", 0.0, ValueError),
        ("max_half_open_wait", -1, ValueError),
    ],
)
def test_each_new_field_is_validated_with_its_name(field: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=rf"CircuitBreakerConfig\.{field}"):
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]


def test_minimum_calls_cannot_exceed_the_count_window() -> None:
    with pytest.raises(ValueError, match=r"CircuitBreakerConfig\.minimum_calls"):
        CircuitBreakerConfig(sliding_window=CountWindow(5), minimum_calls=6)


def test_minimum_calls_left_unset_is_capped_at_a_count_window() -> None:
    """Left unset, ``minimum_calls`` is ``min(10, size)`` with a count window (Resilience4j's cap).

    ``CircuitBreakerConfig(sliding_window=CountWindow(5))`` was refused for a value never written
    (``minimum_calls must be <= sliding_window.size (5), got 10``).
    """
    small = CircuitBreakerConfig(sliding_window=CountWindow(5))
    assert small.minimum_calls == 5
    assert "minimum_calls=5," in repr(small)
    assert small == CircuitBreakerConfig(sliding_window=CountWindow(5), minimum_calls=5)
    assert hash(small) == hash(CircuitBreakerConfig(sliding_window=CountWindow(5), minimum_calls=5))
    assert CircuitBreakerConfig(sliding_window=CountWindow(50)).minimum_calls == DEFAULT_MINIMUM_CALLS
    assert CircuitBreakerConfig(sliding_window=CountWindow(10)).minimum_calls == DEFAULT_MINIMUM_CALLS
    assert CircuitBreakerConfig(sliding_window=TimeWindow(1.0, 1)).minimum_calls == DEFAULT_MINIMUM_CALLS
    # An explicit value larger than the window is still refused, naming the field.
    with pytest.raises(
        ValueError, match=r"CircuitBreakerConfig\.minimum_calls must be <= sliding_window\.size \(5\), got 10"
    ):
        CircuitBreakerConfig(sliding_window=CountWindow(5), minimum_calls=10)


def test_a_derived_minimum_calls_is_derived_again_by_replace() -> None:
    """``dataclasses.replace`` (or a copy, a pickle) derives it again; an explicit one stays explicit."""
    wide = CircuitBreakerConfig(sliding_window=CountWindow(20))
    assert replace(wide, sliding_window=CountWindow(3)).minimum_calls == 3
    small = CircuitBreakerConfig(sliding_window=CountWindow(3))
    assert replace(small, sliding_window=CountWindow(20)).minimum_calls == DEFAULT_MINIMUM_CALLS
    assert replace(small, sliding_window=TimeWindow()).minimum_calls == DEFAULT_MINIMUM_CALLS
    for twin in (pickle.loads(pickle.dumps(small)), copy.copy(small), copy.deepcopy(small)):
        assert twin == small
        assert repr(twin) == repr(small)
        assert replace(twin, sliding_window=CountWindow(20)).minimum_calls == DEFAULT_MINIMUM_CALLS
    explicit = CircuitBreakerConfig(sliding_window=CountWindow(20), minimum_calls=10)
    with pytest.raises(
        ValueError, match=r"CircuitBreakerConfig\.minimum_calls must be <= sliding_window\.size \(3\)"
    ):
        replace(explicit, sliding_window=CountWindow(3))
    assert replace(explicit, sliding_window=CountWindow(30)).minimum_calls == 10


def test_a_small_count_window_left_to_its_minimum_opens_once_full() -> None:
    """A window of 4 calls with ``minimum_calls`` unset judges its rate from the 4th call."""
    clock = FakeClock()
    breaker, _ = make(clock, sliding_window=CountWindow(4))
    for fn in (ok, boom, ok):
        run(breaker, fn)
    assert breaker.state is CircuitState.CLOSED  # 1 of 3 failed, and 3 < 4
    run(breaker, boom)
    assert breaker.state is CircuitState.OPEN  # 2 of 4


WINDOW_ONLY = {"failure_rate_threshold": 0.2, "minimum_calls": 3, "slow_call_rate_threshold": 0.5}
"""The settings a breaker reads only through a sliding window, each with a valid value."""


@pytest.mark.parametrize(("field", "value"), WINDOW_ONLY.items())
def test_a_window_setting_without_a_window_is_refused(field: str, value: float) -> None:
    """Without a window the breaker counts consecutive failures: a rate setting would be ignored."""
    needs = "slow_call_duration" if field == "slow_call_rate_threshold" else "sliding_window"
    with pytest.raises(
        ValueError, match=rf"CircuitBreakerConfig\.{field} must be None unless {needs} is set"
    ):
        CircuitBreakerConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"CircuitBreakerConfig\.{field}"):
        CircuitBreakerConfig(failure_threshold=3, sliding_window=None, **{field: value})  # type: ignore[arg-type]
    CircuitBreakerConfig(sliding_window=CountWindow(10), slow_call_duration=1.0, **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("window", [CountWindow(10), TimeWindow(10.0, 10)])
def test_a_failure_threshold_beside_a_window_is_refused(window: CountWindow | TimeWindow) -> None:
    """With a window the rates open the breaker: a ``failure_threshold`` written beside it would be ignored.

    ``CircuitBreakerConfig(failure_threshold=2, sliding_window=CountWindow(10))`` was taken, and
    its breaker stayed CLOSED after 5 failures in a row (a pybreaker ``fail_max`` carried over to
    a rate-based breaker, silently).
    """
    rule = r"CircuitBreakerConfig\.failure_threshold must be 5 \(its default\) unless sliding_window is None"
    with pytest.raises(ValueError, match=rule):
        CircuitBreakerConfig(failure_threshold=2, sliding_window=window)
    with pytest.raises(ValueError, match=rule):
        replace(CircuitBreakerConfig(failure_threshold=3), sliding_window=window)
    # Its default cannot be told from a value left out: taken, and the window alone opens it.
    assert CircuitBreakerConfig(failure_threshold=5, sliding_window=window) == CircuitBreakerConfig(
        sliding_window=window
    )
    assert CircuitBreakerConfig(failure_threshold=2).failure_threshold == 2


def test_a_slow_call_rate_without_a_slow_call_duration_is_refused() -> None:
    """With a window but no ``slow_call_duration`` no call is ever slow: the rate would be ignored."""
    with pytest.raises(
        ValueError,
        match=r"CircuitBreakerConfig\.slow_call_rate_threshold must be None unless slow_call_duration is set",
    ):
        CircuitBreakerConfig(sliding_window=CountWindow(10), slow_call_rate_threshold=0.5)
    windowed = CircuitBreakerConfig(sliding_window=CountWindow(10))
    assert windowed.slow_call_rate_threshold is None
    timed = CircuitBreakerConfig(sliding_window=CountWindow(10), slow_call_duration=2.0)
    assert timed.slow_call_rate_threshold == DEFAULT_SLOW_CALL_RATE_THRESHOLD


def test_the_window_settings_hold_their_defaults_with_a_window_and_none_without() -> None:
    """Left unset (or None), each takes its documented default with a window; without one, None."""
    for window in (CountWindow(), TimeWindow()):
        for config in (
            CircuitBreakerConfig(sliding_window=window, slow_call_duration=1.0),
            CircuitBreakerConfig(
                sliding_window=window,
                slow_call_duration=1.0,
                failure_rate_threshold=None,
                minimum_calls=None,
                slow_call_rate_threshold=None,
            ),
        ):
            assert (config.failure_rate_threshold, config.minimum_calls, config.slow_call_rate_threshold) == (
                DEFAULT_FAILURE_RATE_THRESHOLD,
                DEFAULT_MINIMUM_CALLS,
                DEFAULT_SLOW_CALL_RATE_THRESHOLD,
            )
            assert CircuitBreaker("defaults", config).failure_rate_threshold == DEFAULT_FAILURE_RATE_THRESHOLD
    plain = CircuitBreakerConfig()
    assert (plain.failure_rate_threshold, plain.minimum_calls, plain.slow_call_rate_threshold) == (None,) * 3
    assert CircuitBreaker("plain", plain).failure_rate_threshold is None
    assert "minimum_calls=None" in repr(plain)
    assert "minimum_calls=10" in repr(CircuitBreakerConfig(sliding_window=CountWindow()))


def test_explicit_defaults_are_the_same_config_as_unset_ones() -> None:
    """Writing the defaults out makes an equal configuration (one hash, one shared settings)."""
    window = CountWindow(20)
    unset = CircuitBreakerConfig(sliding_window=window, slow_call_duration=1.0)
    explicit = CircuitBreakerConfig(
        sliding_window=window,
        slow_call_duration=1.0,
        failure_rate_threshold=0.5,
        minimum_calls=10,
        slow_call_rate_threshold=1.0,
    )
    assert unset == explicit
    assert hash(unset) == hash(explicit)
    assert CircuitBreakerConfig(sliding_window=window, minimum_calls=11) != unset


def test_a_window_with_the_default_settings_opens_at_half_of_ten_calls() -> None:
    """The defaults in force: no rate before 10 calls, then 50 % failures open the breaker."""
    clock = FakeClock()
    breaker, _ = make(clock, sliding_window=CountWindow(10))
    for fn in (ok, boom) * 4 + (ok,):
        run(breaker, fn)
    assert breaker.state is CircuitState.CLOSED  # 4 of 9 failed, and 9 < minimum_calls
    run(breaker, boom)
    assert breaker.state is CircuitState.OPEN  # 5 of 10


# -- against a naive reference model ---------------------------------------------------------------

TIMEOUT = 3.0


class Reference:
    """The windowed breaker's rules written the obvious way: a list of timestamped outcomes."""

    def __init__(self, window: CountWindow | TimeWindow, minimum: int, threshold: float) -> None:
        self.window, self.minimum, self.threshold = window, minimum, threshold
        self.state = "closed"
        self.calls: list[tuple[float, bool]] = []
        self.opened_until = -math.inf
        self.counts = {"ok": 0, "failed": 0, "rejected": 0}

    def held(self, now: float) -> list[bool]:
        if isinstance(self.window, CountWindow):
            return [failed for _, failed in self.calls[-self.window.size :]]
        width = self.window.seconds / self.window.buckets
        current = math.floor(now / width)
        return [f for t, f in self.calls if current - self.window.buckets < math.floor(t / width) <= current]

    def call(self, failed: bool, now: float) -> str:
        if self.state == "open":
            if now < self.opened_until:
                self.counts["rejected"] += 1
                return "rejected"
            self.state = "half_open"
        outcome = "failed" if failed else "ok"
        self.counts[outcome] += 1
        if self.state == "half_open":  # success_threshold=1: the probe decides
            self._enter("open" if failed else "closed", now)
            return outcome
        self.calls.append((now, failed))
        held = self.held(now)
        if len(held) >= self.minimum and sum(held) / len(held) >= self.threshold:
            self._enter("open", now)
        return outcome

    def _enter(self, state: str, now: float) -> None:
        self.state = state
        self.calls = []
        if state == "open":
            self.opened_until = now + TIMEOUT


class WindowedBreakerMachine(RuleBasedStateMachine):
    """Random calls and clock moves: the breaker's answers and counts equal the reference's."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.breaker: CircuitBreaker | None = None
        self.model: Reference | None = None

    @precondition(lambda self: self.breaker is None)
    @rule(
        window=st.one_of(
            st.builds(CountWindow, st.integers(1, 6)),
            st.builds(TimeWindow, st.sampled_from([1.0, 2.5, 6.0]), st.integers(1, 4)),
        ),
        minimum=st.integers(1, 6),
        threshold=st.sampled_from([0.25, 0.5, 2 / 3, 1.0]),
    )
    def build(self, window: CountWindow | TimeWindow, minimum: int, threshold: float) -> None:
        if isinstance(window, CountWindow):
            minimum = min(minimum, window.size)
        config = CircuitBreakerConfig(
            sliding_window=window,
            minimum_calls=minimum,
            failure_rate_threshold=threshold,
            success_threshold=1,
            timeout=TIMEOUT,
        )
        self.breaker = CircuitBreaker("model", config, clock=self.clock)
        self.model = Reference(window, minimum, threshold)

    @precondition(lambda self: self.breaker is not None)
    @rule(failed=st.booleans())
    def call(self, failed: bool) -> None:
        assert self.breaker is not None
        assert self.model is not None
        got = run(self.breaker, boom if failed else ok)
        expected = self.model.call(failed, self.clock.now())
        assert got == ("failed" if expected == "failed" else expected), (got, expected)

    @rule(seconds=st.one_of(st.floats(0, 4, allow_nan=False), st.sampled_from([0.25, 0.5, 1.0, 3.0])))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_counts(self) -> None:
        if self.breaker is None or self.model is None:
            return
        stats = self.breaker.get_stats()
        counts = self.model.counts
        assert (stats["total_successes"], stats["total_failures"], stats["total_rejected"]) == (
            counts["ok"],
            counts["failed"],
            counts["rejected"],
        )


TestWindowedBreaker = WindowedBreakerMachine.TestCase
TestWindowedBreaker.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


@pytest.mark.parametrize("window", [CountWindow(20), TimeWindow(seconds=10, buckets=5)])
def test_ten_thousand_calls_match_the_reference(window: CountWindow | TimeWindow) -> None:
    rng = random.Random(1234)
    clock = FakeClock()
    config = CircuitBreakerConfig(
        sliding_window=window,
        minimum_calls=8,
        failure_rate_threshold=0.4,
        success_threshold=1,
        timeout=TIMEOUT,
    )
    breaker = CircuitBreaker("long", config, clock=clock)
    model = Reference(window, 8, 0.4)
    for _ in range(10_000):
        failed = rng.random() < 0.3
        assert run(breaker, boom if failed else ok) == model.call(failed, clock.now())
        clock.advance(rng.choice((0.0, 0.1, 0.5, 2.0)))
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_failures"], stats["total_rejected"]) == (
        model.counts["ok"],
        model.counts["failed"],
        model.counts["rejected"],
    )
    assert model.counts["rejected"] > 0


async def _probe(breaker: CircuitBreaker, clock: FakeClock, driver: str, seconds: float) -> str:
    """One call through ``driver`` that takes ``seconds`` on the fake clock."""
    if driver == "sync":

        def sync_call() -> str:
            clock.sleep_sync(seconds)
            return "ok"

        return breaker.call_sync(sync_call)

    async def async_call() -> str:
        clock.advance(seconds)
        return "ok"

    return await breaker.call(async_call)


async def test_slow_probes_reopen_a_breaker_opened_by_its_slow_call_rate(driver: str) -> None:
    """Probes are judged by the slow-call rate too: slow successes never close a slow dependency."""
    clock = FakeClock()
    breaker, changes = make(
        clock,
        sliding_window=CountWindow(4),
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        timeout=5.0,
        success_threshold=2,
    )
    for _ in range(4):
        await _probe(breaker, clock, driver, 1.5)
    assert breaker.state is CircuitState.OPEN
    clock.advance(5.0)
    assert await _probe(breaker, clock, driver, 1.5) == "ok"  # a slow probe: still a success for the caller
    assert breaker.state is CircuitState.HALF_OPEN
    assert await _probe(breaker, clock, driver, 1.5) == "ok"  # 2 slow of 2 probes: 1.0 >= 0.5
    assert breaker.state is CircuitState.OPEN
    assert [(c.old, c.new, c.reason) for c in changes] == [
        ("closed", "open", "slow_call_rate"),
        ("open", "half_open", "timeout_elapsed"),
        ("half_open", "open", "slow_call_rate"),
    ]
    stats = breaker.get_stats()
    assert (stats["total_successes"], stats["total_failures"], stats["times_opened"]) == (6, 0, 2)
    clock.advance(5.0)
    assert await _probe(breaker, clock, driver, 1.5) == "ok"  # 1 slow ...
    assert await _probe(breaker, clock, driver, 0.5) == "ok"  # ... of 2: 0.5 >= 0.5, open again
    assert [c.reason for c in changes][-1] == "slow_call_rate"
    clock.advance(5.0)
    assert await _probe(breaker, clock, driver, 0.5) == "ok"
    assert await _probe(breaker, clock, driver, 0.5) == "ok"  # fast probes close it
    assert [(c.old, c.new, c.reason) for c in changes][-1] == ("half_open", "closed", "probe_succeeded")


async def test_slow_probes_under_the_slow_call_rate_threshold_close_the_breaker(driver: str) -> None:
    """The probes' slow-call rate is judged against its threshold, as the window's is."""
    clock = FakeClock()
    breaker, changes = make(
        clock,
        sliding_window=CountWindow(4),
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.75,
        timeout=5.0,
        success_threshold=4,
        half_open_max_calls=4,
    )
    breaker.force_open(5.0)
    clock.advance(5.0)
    for seconds in (1.5, 0.5, 1.5, 2.0):  # 3 slow of 4: 0.75 >= 0.75
        await _probe(breaker, clock, driver, seconds)
    assert [c.reason for c in changes][-1] == "slow_call_rate"
    clock.advance(breaker.get_stats()["retry_after"])
    for seconds in (1.5, 0.5, 1.5, 0.5):  # 2 slow of 4: under 0.75
        await _probe(breaker, clock, driver, seconds)
    assert breaker.state is CircuitState.CLOSED
    assert [c.reason for c in changes][-1] == "probe_succeeded"


def test_a_reload_keeps_the_slow_probes_of_the_half_open_period() -> None:
    """A reload carries HALF_OPEN with its probe successes, and the slow ones among them."""
    clock = FakeClock()
    config = CircuitBreakerConfig(
        sliding_window=CountWindow(4),
        minimum_calls=4,
        slow_call_duration=1.0,
        timeout=5.0,
        success_threshold=2,
    )
    breaker = CircuitBreaker("reloaded", config, clock=clock)
    changes: list[StateChanged] = []
    breaker.on_state_change(changes.append)

    def slow() -> str:
        clock.sleep_sync(1.5)
        return "slow"

    breaker.force_open(5.0)
    clock.advance(5.0)
    assert run(breaker, slow) == "slow"  # 1 slow probe of 2
    breaker._reconfigure(replace(config, timeout=7.0))
    assert breaker.state is CircuitState.HALF_OPEN
    assert run(breaker, slow) == "slow"  # 2 slow of 2: 1.0 >= 1.0 (the default threshold)
    assert [(c.old, c.new, c.reason) for c in changes][-1] == ("half_open", "open", "slow_call_rate")
