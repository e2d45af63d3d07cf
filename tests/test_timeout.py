"""Tests for otel_resilience.patterns.timeout: deadlines, defaults, nesting, cancellation, sync honesty."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import math
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from support import run_threads

from otel_resilience import Retry, RetryPolicy, time_left
from otel_resilience.engine.context import current_deadline
from otel_resilience.engine.events import Event, Outcome, TelemetrySource, TimeoutOccurred
from otel_resilience.engine.pipeline import PipelineBuilder, classify_error
from otel_resilience.engine.timer import loop_timer
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.patterns.timeout import (
    DEFAULT_SCOPE,
    DEFAULT_TIMEOUT,
    NO_DEFAULT,
    SCOPES,
    TimeoutConfig,
    TimeoutHandler,
    fail_after,
    move_on_after,
)
from otel_resilience.testing import FakeClock

TIMER = 0.05
"""A short real loop-timer duration for the pre-emptive tests."""
BOUND = 2.0
"""A generous bound on how long a timed-out call may take in real time."""


def _requests_pending() -> int:
    """The running task's cancellation requests not taken back (``Task.cancelling()``); 0 before 3.11.

    On 3.10 a task counts none, and our scopes take theirs back by their message: an async test
    may run there in a backport's task whose ``cancelling()`` counts what nothing takes back.
    """
    if sys.version_info >= (3, 11):
        return asyncio.current_task().cancelling()  # type: ignore[union-attr]
    return 0


async def run(handler: TimeoutHandler, driver: str, fn, *args, **kwargs):
    """Call the sync function ``fn`` through the handler's async or sync driver."""
    if driver == "async":

        async def afn(*a, **kw):
            return fn(*a, **kw)

        return await handler.with_timeout(afn, *args, **kwargs)
    return handler.with_timeout_sync(fn, *args, **kwargs)


class Hang:
    """A coroutine function that never returns and records the cancellation it sees."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "never"


# -- configuration ---------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """The documented defaults are 30 s, no default value, scope "total", name "timeout"."""
    assert DEFAULT_TIMEOUT == 30.0
    assert DEFAULT_SCOPE == "total"
    assert SCOPES == ("total", "attempt")
    assert TimeoutConfig() == TimeoutConfig(30.0, NO_DEFAULT, "total")
    assert not TimeoutConfig().has_default
    handler = TimeoutHandler()
    assert handler.timeout == 30.0
    assert handler.name == "timeout"
    assert handler.config == TimeoutConfig()
    assert handler.get_stats() == {"executions": 0, "timeouts": 0, "defaults_returned": 0}
    assert repr(NO_DEFAULT) == "NO_DEFAULT"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": 0}, ValueError, r"TimeoutConfig\.timeout must be > 0 seconds, got 0"),
        ({"timeout": -1.0}, ValueError, r"TimeoutConfig\.timeout must be > 0 seconds"),
        ({"timeout": math.nan}, ValueError, r"TimeoutConfig\.timeout must be a finite duration"),
        ({"timeout": math.inf}, ValueError, r"TimeoutConfig\.timeout must be a finite duration"),
        ({"timeout": timedelta(0)}, ValueError, r"TimeoutConfig\.timeout must be > 0 seconds"),
        ({"timeout": "5"}, TypeError, r"TimeoutConfig\.timeout must be a duration"),
        ({"timeout": True}, TypeError, r"TimeoutConfig\.timeout must be a duration"),
        ({"scope": "per_call"}, ValueError, r"TimeoutConfig\.scope must be 'total' or 'attempt'"),
        ({"scope": None}, TypeError, r"TimeoutConfig\.scope must be a str"),
    ],
)
def test_bad_config_is_rejected(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    """Every invalid TimeoutConfig field raises an error naming the class, field, rule and value."""
    with pytest.raises(error, match=match):
        TimeoutConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": 0}, ValueError, r"TimeoutHandler\.timeout must be > 0 seconds"),
        ({"timeout": -0.5}, ValueError, r"TimeoutHandler\.timeout must be > 0 seconds"),
        ({"timeout": math.nan}, ValueError, r"TimeoutHandler\.timeout must be a finite duration"),
        ({"scope": "everything"}, ValueError, r"TimeoutHandler\.scope must be 'total' or 'attempt'"),
        ({"name": ""}, ValueError, r"TimeoutHandler\.name must be a non-empty name"),
        ({"name": 3}, TypeError, r"TimeoutHandler\.name must be a str"),
        ({"clock": object()}, TypeError, r"TimeoutHandler\.clock must be a Clock"),
    ],
)
def test_bad_handler_arguments_are_rejected(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """TimeoutHandler validates its own arguments with messages that name TimeoutHandler."""
    with pytest.raises(error, match=match):
        TimeoutHandler(**kwargs)  # type: ignore[arg-type]


def test_timedelta_is_normalised_to_seconds() -> None:
    """A timedelta timeout is stored as float seconds, in the config and in the handler."""
    assert TimeoutConfig(timedelta(milliseconds=250)).timeout == 0.25
    handler = TimeoutHandler(timedelta(seconds=2), scope="attempt")
    assert handler.timeout == 2.0
    assert isinstance(handler.config.timeout, float)
    assert handler.config.scope == "attempt"


def test_from_config_builds_an_equivalent_handler(clock: FakeClock) -> None:
    """from_config keeps the timeout, default and scope, and refuses anything but a TimeoutConfig."""
    config = TimeoutConfig(2.0, default="d", scope="attempt")
    handler = TimeoutHandler.from_config(config, name="db", clock=clock)
    assert handler.config == config
    assert handler.name == "db"
    with pytest.raises(TypeError, match=r"TimeoutHandler\.config must be a TimeoutConfig"):
        TimeoutHandler.from_config(2.0)  # type: ignore[arg-type]


# -- async, pre-emptive ----------------------------------------------------------------------


async def test_times_out_a_hung_coroutine(recorder) -> None:
    """A hung coroutine is cancelled at the deadline and the caller gets OperationTimeoutError."""
    handler = TimeoutHandler(TIMER, name="ml")
    hang = Hang()
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        await handler.with_timeout(hang)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND
    assert hang.cancelled == 1
    error = info.value
    assert isinstance(error, TimeoutError)
    assert (error.operation, error.timeout, error.scope) == ("ml", TIMER, "total")
    assert error.__cause__ is None
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(TIMER, "total")]
    assert recorder.sources(Event.TIMEOUT) == [TelemetrySource("timeout", "ml", None)]


async def test_a_timeout_is_caught_as_asyncio_timeout_error_on_every_version() -> None:
    """``except asyncio.TimeoutError`` catches it: on Python 3.10 that class is not the builtin one."""
    handler = TimeoutHandler(TIMER, name="ml")
    try:
        await handler.with_timeout(Hang())
    except asyncio.TimeoutError as error:  # the asyncio idiom under test
        caught: BaseException = error
    assert isinstance(caught, OperationTimeoutError)
    assert isinstance(caught, TimeoutError)
    assert caught.errno is None


async def test_returns_default_on_timeout(recorder) -> None:
    """With a default configured, a timeout returns it, counts it and still reports the event."""
    handler = TimeoutHandler(TIMER, default=[], name="db")
    hang = Hang()
    assert await handler.with_timeout(hang) == []
    assert hang.cancelled == 1
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 1}
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(TIMER, "total")]


async def test_default_counts_as_a_fallback_outcome_in_a_pipeline() -> None:
    """A default returned on timeout marks the execution outcome FALLBACK, not success."""
    handler = TimeoutHandler(TIMER, default="cached")
    pipeline = PipelineBuilder("policy").add(handler.as_strategy("policy")).build()
    assert await pipeline.execute(Hang()) == "cached"
    assert pipeline.stats.fallback == 1
    assert pipeline.stats.succeeded == 0


async def test_timeout_counts_as_a_timeout_outcome_in_a_pipeline() -> None:
    """An expired deadline without a default counts as a timeout in the pipeline's stats."""
    handler = TimeoutHandler(TIMER, scope="attempt", name="op")
    pipeline = PipelineBuilder("policy").add(handler.as_strategy("policy")).build()
    with pytest.raises(OperationTimeoutError) as info:
        await pipeline.execute(Hang())
    assert info.value.scope == "attempt"
    assert info.value.operation == "policy"
    assert pipeline.stats.timeouts == 1
    assert classify_error(info.value) is Outcome.TIMEOUT


async def test_fast_call_is_unaffected(driver: str, clock: FakeClock) -> None:
    """A call that returns in time gives its result and counts no timeout."""
    handler = TimeoutHandler(5.0, clock=clock)
    assert await run(handler, driver, lambda a, b=0: a + b, 2, b=3) == 5
    assert handler.get_stats() == {"executions": 1, "timeouts": 0, "defaults_returned": 0}


async def test_exception_from_fn_propagates_unchanged(driver: str, clock: FakeClock) -> None:
    """An error raised by the function reaches the caller as the same object, not counted as timeout."""
    handler = TimeoutHandler(5.0, default="unused", clock=clock)
    boom = ValueError("boom")

    def fail() -> None:
        raise boom

    with pytest.raises(ValueError, match="boom") as info:
        await run(handler, driver, fail)
    assert info.value is boom
    assert handler.get_stats()["timeouts"] == 0


async def test_outer_deadline_bounds_inner(recorder) -> None:
    """An inner 10 s timeout under an outer 0.05 s one times out at 0.05 s with the outer's error."""
    outer = TimeoutHandler(TIMER, name="outer")
    inner = TimeoutHandler(10.0, name="inner")
    hang = Hang()
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        await outer.with_timeout(inner.with_timeout, hang)
    assert time.monotonic() - started < BOUND
    assert (info.value.operation, info.value.timeout) == ("outer", TIMER)
    assert outer.get_stats()["timeouts"] == 1
    assert inner.get_stats()["timeouts"] == 0
    assert recorder.sources(Event.TIMEOUT) == [TelemetrySource("timeout", "outer", None)]


async def test_inner_tighter_than_outer_raises_the_inners_error(recorder) -> None:
    """An inner deadline that fires first raises the inner's error, which the outer passes through."""
    outer = TimeoutHandler(10.0, default="outer-default", name="outer")
    inner = TimeoutHandler(TIMER, name="inner")
    with pytest.raises(OperationTimeoutError) as info:
        await outer.with_timeout(inner.with_timeout, Hang())
    assert (info.value.operation, info.value.timeout) == ("inner", TIMER)
    assert outer.get_stats() == {"executions": 1, "timeouts": 0, "defaults_returned": 0}
    assert inner.get_stats()["timeouts"] == 1
    assert recorder.sources(Event.TIMEOUT) == [TelemetrySource("timeout", "inner", None)]


async def test_external_cancel_propagates_as_cancelled_error(recorder) -> None:
    """Cancelling the caller's task propagates CancelledError, never a timeout or the default."""
    handler = TimeoutHandler(10.0, default="never")
    hang = Hang()
    task = asyncio.create_task(handler.with_timeout(hang))
    await asyncio.wait_for(hang.started.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hang.cancelled == 1
    assert handler.get_stats() == {"executions": 1, "timeouts": 0, "defaults_returned": 0}
    assert recorder.of(Event.TIMEOUT) == []


async def test_current_deadline_is_visible_inside(driver: str, clock: FakeClock) -> None:
    """Inside the call, current_deadline() is the handler's absolute deadline; outside it is None."""
    handler = TimeoutHandler(5.0, clock=clock)
    seen = await run(handler, driver, current_deadline)
    assert seen == clock.now() + 5.0
    assert current_deadline() is None


async def test_non_callable_is_rejected_before_anything(driver: str) -> None:
    """Passing something that is not callable raises TypeError at once and counts nothing."""
    handler = TimeoutHandler(1.0)
    if driver == "async":
        with pytest.raises(TypeError, match=r"TimeoutHandler\.with_timeout\.fn must be callable"):
            await handler.with_timeout(42)  # type: ignore[arg-type]
    else:
        with pytest.raises(TypeError, match=r"TimeoutHandler\.with_timeout_sync\.fn must be callable"):
            handler.with_timeout_sync(42)  # type: ignore[arg-type]
    assert handler.get_stats()["executions"] == 0


def test_sync_driver_rejects_a_coroutine_function() -> None:
    """with_timeout_sync refuses a coroutine function instead of returning an unawaited coroutine."""

    async def coro() -> int:
        return 1

    with pytest.raises(TypeError, match="coroutine function"):
        TimeoutHandler(1.0).with_timeout_sync(coro)  # type: ignore[arg-type]


# -- sync, honest ----------------------------------------------------------------------------


def test_sync_late_result_is_a_timeout(clock: FakeClock, recorder) -> None:
    """A sync result that arrives after the deadline is discarded and raises OperationTimeoutError."""
    handler = TimeoutHandler(5.0, name="slow", clock=clock)

    def slow() -> str:
        clock.advance(6.0)
        return "late"

    with pytest.raises(OperationTimeoutError) as info:
        handler.with_timeout_sync(slow)
    assert (info.value.operation, info.value.timeout, info.value.scope) == ("slow", 5.0, "total")
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(5.0, "total")]


def test_sync_late_result_returns_the_default(clock: FakeClock) -> None:
    """With a default, a late sync result is replaced by the default."""
    handler = TimeoutHandler(5.0, default="default", clock=clock)

    def slow() -> str:
        clock.advance(5.0)
        return "late"

    assert handler.with_timeout_sync(slow) == "default"
    assert handler.get_stats()["defaults_returned"] == 1


def test_sync_early_result_is_returned(clock: FakeClock) -> None:
    """A sync result that arrives just before the deadline is returned as is."""
    handler = TimeoutHandler(5.0, clock=clock)

    def quick() -> str:
        clock.advance(4.9)
        return "ok"

    assert handler.with_timeout_sync(quick) == "ok"
    assert handler.get_stats()["timeouts"] == 0


def test_sync_late_exception_passes_through(clock: FakeClock) -> None:
    """An exception raised after the deadline is passed through unchanged, not turned into a timeout.

    The deadline still expired: it is counted, as for an async callee that raised an error of its
    own in place of its cancellation.
    """
    handler = TimeoutHandler(5.0, clock=clock)
    raised = KeyError("k")

    def slow_fail() -> None:
        clock.advance(10.0)
        raise raised

    with pytest.raises(KeyError) as info:
        handler.with_timeout_sync(slow_fail)
    assert info.value is raised
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}


def _socket_timeout_at_the_deadline(clock: FakeClock) -> None:
    """The README's socket pattern: wait what is left of the deadline, then raise the socket's timeout."""
    clock.advance(time_left())  # a socket timeout of time_left() that ran out
    raise TimeoutError("timed out")  # socket.timeout


def test_a_sync_callee_that_raises_its_own_timeout_at_the_deadline_counts_the_expiry(
    clock: FakeClock, recorder
) -> None:
    """A sync callee that follows time_left() and raises its socket's timeout: the error passes unchanged, the expiry counts.

    It was counted nowhere (``timeouts`` 0, no event), where the async driver counts the same
    callee's error: no default answers it, in either driver.
    """
    handler = TimeoutHandler(5.0, default="default", name="ml", clock=clock)
    with pytest.raises(TimeoutError, match="timed out") as info:
        handler.with_timeout_sync(_socket_timeout_at_the_deadline, clock)
    assert not isinstance(info.value, OperationTimeoutError)
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(5.0, "total")]
    assert recorder.sources(Event.TIMEOUT) == [TelemetrySource("timeout", "ml", None)]


def test_a_sync_error_before_the_deadline_counts_no_timeout(clock: FakeClock, recorder) -> None:
    """An error raised just before the deadline is a failure, no expiry."""
    handler = TimeoutHandler(5.0, clock=clock)

    def early_fail() -> None:
        clock.advance(4.9)
        raise TimeoutError("timed out")

    with pytest.raises(TimeoutError):
        handler.with_timeout_sync(early_fail)
    assert handler.get_stats()["timeouts"] == 0
    assert recorder.of(Event.TIMEOUT) == []


def test_a_sync_error_past_a_tighter_outer_deadline_is_the_outers_expiry(clock: FakeClock) -> None:
    """Only the scope that owns the effective deadline counts a late error of the callee's own."""
    outer = TimeoutHandler(1.0, name="outer", clock=clock)
    inner = TimeoutHandler(10.0, name="inner", clock=clock)

    def slow_fail() -> None:
        clock.advance(2.0)
        raise ConnectionError("reset")

    with pytest.raises(ConnectionError):
        outer.with_timeout_sync(inner.with_timeout_sync, slow_fail)
    assert (outer.get_stats()["timeouts"], inner.get_stats()["timeouts"]) == (1, 0)


def test_a_sync_attempt_that_raises_its_own_timeout_at_its_attempt_timeout_counts_it(
    clock: FakeClock, recorder
) -> None:
    """A retry's sync attempt past its attempt_timeout with an error of its own: counted in attempt_timeouts, then retried."""
    retrying = Retry("ml", RetryPolicy(max_attempts=2, initial_delay=0.0, attempt_timeout=5.0), clock=clock)
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) == 1:
            _socket_timeout_at_the_deadline(clock)
        return "ok"

    assert retrying.execute_sync(attempt) == "ok"
    assert retrying.get_stats()["attempt_timeouts"] == 1
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(5.0, "attempt")]
    single = Retry("one", RetryPolicy(max_attempts=1, attempt_timeout=5.0), clock=clock)
    with pytest.raises(TimeoutError, match="timed out"):
        single.execute_sync(_socket_timeout_at_the_deadline, clock)
    assert single.get_stats()["attempt_timeouts"] == 1


def test_sync_outer_deadline_bounds_inner(clock: FakeClock) -> None:
    """In sync mode a late result under a tighter outer deadline raises the outer's error."""
    outer = TimeoutHandler(1.0, name="outer", clock=clock)
    inner = TimeoutHandler(10.0, name="inner", clock=clock)

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    with pytest.raises(OperationTimeoutError) as info:
        outer.with_timeout_sync(inner.with_timeout_sync, slow)
    assert info.value.operation == "outer"
    assert (outer.get_stats()["timeouts"], inner.get_stats()["timeouts"]) == (1, 0)


def test_sync_inner_tighter_than_outer(clock: FakeClock) -> None:
    """In sync mode a tighter inner deadline raises the inner's error through the outer."""
    outer = TimeoutHandler(10.0, default="outer", name="outer", clock=clock)
    inner = TimeoutHandler(1.0, name="inner", clock=clock)

    def slow() -> str:
        clock.advance(2.0)
        return "late"

    with pytest.raises(OperationTimeoutError) as info:
        outer.with_timeout_sync(inner.with_timeout_sync, slow)
    assert info.value.operation == "inner"
    assert (outer.get_stats()["timeouts"], inner.get_stats()["timeouts"]) == (0, 1)


class ThreadClock:
    """A fake clock whose time is per thread, so that each thread can run late on its own."""

    def __init__(self) -> None:
        self._local = threading.local()

    def now(self) -> float:
        return float(getattr(self._local, "now", 0.0))

    def advance(self, seconds: float) -> None:
        self._local.now = self.now() + seconds

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def sleep_sync(self, seconds: float) -> None:
        self.advance(seconds)


def test_sync_counts_are_exact_under_threads() -> None:
    """Concurrent sync calls from many threads are all counted, late ones as timeouts."""
    clock = ThreadClock()
    handler = TimeoutHandler(5.0, default=-1, clock=clock)
    threads, calls = 8, 200
    barrier = threading.Barrier(threads, timeout=5)
    results: list[list[int]] = []

    def fn(i: int) -> int:
        if i % 2:
            clock.advance(10.0)
        return i

    def worker() -> None:
        barrier.wait()
        results.append([handler.with_timeout_sync(fn, i) for i in range(calls)])

    run_threads(threads, worker)
    expected = [-1 if i % 2 else i for i in range(calls)]
    assert results == [expected] * threads
    late = threads * calls // 2
    assert handler.get_stats() == {"executions": threads * calls, "timeouts": late, "defaults_returned": late}


# -- decorator, strategy, telemetry ----------------------------------------------------------


async def test_decorator_keeps_signature_and_picks_the_driver(clock: FakeClock) -> None:
    """protect() wraps async and sync functions with their own driver and keeps their metadata."""
    handler = TimeoutHandler(5.0, default="late", clock=clock)

    @handler.protect
    async def fetch(x: int) -> int:
        """Fetch x."""
        return x * 2

    @handler.protect
    def compute(x: int) -> int:
        clock.advance(6.0)
        return x

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(compute)
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch x."
    assert inspect.signature(fetch) == inspect.signature(fetch.__wrapped__)  # type: ignore[attr-defined]
    assert await fetch(21) == 42
    assert compute(1) == "late"
    assert handler.get_stats() == {"executions": 2, "timeouts": 1, "defaults_returned": 1}
    with pytest.raises(TypeError, match=r"TimeoutHandler\.protect\.fn must be callable"):
        handler.protect(None)  # type: ignore[arg-type]


async def test_decorated_coroutine_times_out() -> None:
    """A decorated coroutine function is bounded by the handler's deadline."""
    handler = TimeoutHandler(TIMER)
    hang = Hang()

    @handler.protect
    async def wrapped() -> str:
        return await hang()

    with pytest.raises(OperationTimeoutError):
        await wrapped()
    assert hang.cancelled == 1


async def test_as_strategy_reports_with_the_pipeline_name(recorder) -> None:
    """A link made by as_strategy(pipeline) reports under that pipeline and shares the counts."""
    handler = TimeoutHandler(TIMER, scope="attempt", name="per_attempt")
    link = handler.as_strategy("policy")
    assert (link.kind, link.name, link.config) == ("timeout", "per_attempt", handler.config)
    assert link is not handler.as_strategy("policy")
    pipeline = PipelineBuilder("policy").add(link).build()
    assert pipeline.describe() == (("timeout", "per_attempt", handler.config),)
    with pytest.raises(OperationTimeoutError):
        await pipeline.execute(Hang())
    assert recorder.sources(Event.TIMEOUT) == [TelemetrySource("timeout", "per_attempt", "policy")]
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(TIMER, "attempt")]
    assert handler.get_stats()["timeouts"] == 1


async def test_an_unnamed_handler_names_the_function_it_runs(driver: str, clock: FakeClock) -> None:
    """Left at its default name, the handler's error names the function of with_timeout(_sync), not "timeout"."""
    handler = TimeoutHandler(5.0, clock=clock)

    def fetch_rates() -> str:
        clock.advance(6.0)
        return "late"

    async def fetch_rates_async() -> str:
        await asyncio.sleep(60)
        return "never"

    if driver == "async":
        handler = TimeoutHandler(TIMER)
        with pytest.raises(OperationTimeoutError) as info:
            await handler.with_timeout(fetch_rates_async)
        expected = fetch_rates_async.__qualname__
    else:
        with pytest.raises(OperationTimeoutError) as info:
            handler.with_timeout_sync(fetch_rates)
        expected = fetch_rates.__qualname__
    assert info.value.operation == expected
    assert info.value.args[0] == expected
    assert f"operation {expected!r} timed out" in str(info.value)
    assert handler.name == "timeout"  # its own name (telemetry, repr) is still the default


def test_an_unnamed_handler_names_a_partial_after_its_function(clock: FakeClock) -> None:
    """A functools.partial run by an unnamed handler times out as ``partial(<its function>)``, not ``partial``."""
    handler = TimeoutHandler(5.0, clock=clock)

    def fetch_rate(currency: str) -> str:
        clock.advance(6.0)
        return currency

    with pytest.raises(OperationTimeoutError) as info:
        handler.with_timeout_sync(functools.partial(fetch_rate, "EUR"))
    assert info.value.operation == f"partial({fetch_rate.__qualname__})"


async def test_an_unnamed_handler_names_the_function_it_decorates(clock: FakeClock) -> None:
    """protect(): each decorated function's timeouts name that function (async and sync)."""
    handler = TimeoutHandler(TIMER)
    sync_handler = TimeoutHandler(5.0, clock=clock)

    @handler.protect
    async def load_profile() -> str:
        await asyncio.sleep(60)
        return "never"

    @sync_handler.protect
    def load_settings() -> str:
        clock.advance(6.0)
        return "late"

    with pytest.raises(OperationTimeoutError) as info:
        await load_profile()
    assert info.value.operation == load_profile.__qualname__
    with pytest.raises(OperationTimeoutError) as info:
        load_settings()
    assert info.value.operation == load_settings.__qualname__
    with pytest.raises(OperationTimeoutError) as info:
        await handler.with_timeout(Hang())  # a callable object: named after its class
    assert info.value.operation == "Hang"


async def test_a_named_handler_or_a_pipeline_names_the_operation() -> None:
    """A name given to the handler is the operation; in a pipeline the pipeline's name is, as for every link."""

    async def fetch() -> str:
        await asyncio.sleep(60)
        return "never"

    with pytest.raises(OperationTimeoutError) as info:
        await TimeoutHandler(TIMER, name="rates").with_timeout(fetch)
    assert info.value.operation == "rates"
    pipeline = PipelineBuilder("policy").add(TimeoutHandler(TIMER).as_strategy("policy")).build()
    with pytest.raises(OperationTimeoutError) as info:
        await pipeline.execute(fetch)
    assert info.value.operation == "policy"


async def test_an_inner_timeout_keeps_the_name_of_its_own_function() -> None:
    """An unnamed outer handler passes an inner one's error through with the inner function's name."""
    outer, inner = TimeoutHandler(10.0), TimeoutHandler(TIMER)

    async def innermost() -> str:
        await asyncio.sleep(60)
        return "never"

    async def middle() -> str:
        return await inner.with_timeout(innermost)

    with pytest.raises(OperationTimeoutError) as info:
        await outer.with_timeout(middle)
    assert info.value.operation == innermost.__qualname__
    assert (outer.get_stats()["timeouts"], inner.get_stats()["timeouts"]) == (0, 1)


async def test_falsy_default_is_returned() -> None:
    """A falsy default such as 0 is a real default: it is returned, not taken for "no default"."""
    handler = TimeoutHandler(TIMER, default=0)
    assert await handler.with_timeout(Hang()) == 0
    assert handler.get_stats()["timeouts"] == 1


# -- fail_after / move_on_after --------------------------------------------------------------


async def test_fail_after_raises_on_its_own_deadline() -> None:
    """fail_after cancels its block at the deadline and raises OperationTimeoutError."""
    hang = Hang()
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        async with fail_after(TIMER, operation="block"):
            await hang()
    assert time.monotonic() - started < BOUND
    assert (info.value.operation, info.value.timeout) == ("block", TIMER)
    assert hang.cancelled == 1


async def test_fail_after_lets_a_fast_block_finish() -> None:
    """A block that finishes in time is untouched by fail_after."""
    async with fail_after(timedelta(seconds=5)) as scope:
        await asyncio.sleep(0)
    assert not scope.expired


async def test_an_already_expired_fail_after_cuts_its_block_at_the_first_suspension() -> None:
    """fail_after(0) is due at once: the block is cut at its first await, as asyncio.timeout(0)."""
    reached: list[int] = []
    with pytest.raises(OperationTimeoutError):
        async with fail_after(0, operation="expired") as scope:
            await asyncio.sleep(0)
            reached.append(1)
            await asyncio.sleep(0)
            reached.append(2)
    assert scope.expired
    assert reached == []


async def test_an_already_expired_move_on_after_skips_the_rest_of_its_block() -> None:
    """move_on_after(0) abandons its block at the first await; what follows the block runs."""
    reached: list[int] = []
    async with move_on_after(0) as scope:
        await asyncio.sleep(0)
        reached.append(1)
    assert scope.expired
    assert reached == []


async def test_move_on_after_swallows_its_own_timeout() -> None:
    """move_on_after abandons its block silently at the deadline and says so in expired."""
    hang = Hang()
    async with move_on_after(TIMER) as scope:
        await hang()
    assert scope.expired
    assert hang.cancelled == 1


async def test_move_on_after_not_expired_when_fast() -> None:
    """A block that finishes in time leaves move_on_after unexpired and returns normally."""
    async with move_on_after(5.0) as scope:
        await asyncio.sleep(0)
    assert not scope.expired


async def test_move_on_after_lets_other_errors_and_cancellation_through() -> None:
    """move_on_after passes other errors through, and an external cancel stays a CancelledError."""
    with pytest.raises(ValueError, match="x"):
        async with move_on_after(5.0):
            raise ValueError("x")

    hang = Hang()

    async def body() -> None:
        async with move_on_after(10.0):
            await hang()

    task = asyncio.create_task(body())
    await asyncio.wait_for(hang.started.wait(), BOUND)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_scope_helpers_reject_bad_budgets(seconds: float) -> None:
    """fail_after and move_on_after reject negative and non-finite budgets."""
    with pytest.raises(ValueError, match=r"fail_after\.seconds"):
        fail_after(seconds)
    with pytest.raises(ValueError, match=r"move_on_after\.seconds"):
        move_on_after(seconds)


@pytest.mark.parametrize("make", [fail_after, move_on_after], ids=["fail_after", "move_on_after"])
def test_scope_helpers_reject_a_bad_clock_or_operation_when_made(make: Any) -> None:
    """A clock that is no Clock, or an operation that is no name, is refused when the scope is made.

    Both were taken as given: the clock failed with an AttributeError only once the block was
    entered, and a non-str operation ended up in the timeout's message and telemetry.
    """
    name = make.__name__
    with pytest.raises(TypeError, match=rf"{name}\.clock must be a Clock"):
        make(1.0, clock=1)
    with pytest.raises(TypeError, match=rf"{name}\.operation must be a str, got 1 \(int\)"):
        make(1.0, operation=1)
    with pytest.raises(ValueError, match=rf"{name}\.operation must be a non-empty name"):
        make(1.0, operation=" ")


async def test_callee_that_swallows_its_cancellation_returns_its_value() -> None:
    """A callee that suppresses the deadline's cancellation and returns gets its value through; its deadline expired (counted, no default)."""
    handler = TimeoutHandler(TIMER, default="default")

    async def stubborn() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "swallowed"
        return "never"

    assert await handler.with_timeout(stubborn) == "swallowed"
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}


def test_an_expiry_the_callee_swallowed_or_converted_is_counted_in_a_plain_event_loop_task() -> None:
    """The expiry of a callee that swallowed its deadline's cancellation, or raised its own error in its place, is counted.

    Run by ``asyncio.run``: the loop's own task class, as an application's tasks are (an async
    test may run in another task class: on 3.10, a Python task that shows the cancellation it
    delivers as the exception being handled).
    """

    async def swallowing() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "swallowed"
        return "never"

    async def converting() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ConnectionError("aborted") from None
        return "never"

    async def main() -> tuple[str, dict[str, int], dict[str, int], int]:
        swallowed = TimeoutHandler(TIMER, default="default")
        value = await swallowed.with_timeout(swallowing)
        converted = TimeoutHandler(TIMER, default="default")
        with pytest.raises(ConnectionError, match="aborted"):
            await converted.with_timeout(converting)
        retrying = Retry("ml", RetryPolicy(max_attempts=1, attempt_timeout=TIMER))
        with pytest.raises(ConnectionError, match="aborted"):
            await retrying.execute(converting)
        return value, swallowed.get_stats(), converted.get_stats(), retrying.get_stats()["attempt_timeouts"]

    value, swallowed, converted, attempt_timeouts = asyncio.run(main())
    assert value == "swallowed"
    assert swallowed == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert converted == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert attempt_timeouts == 1


async def test_callee_that_turns_its_cancellation_into_an_error_still_counts_the_expiry(recorder) -> None:
    """A callee that raises an error of its own in place of the deadline's cancellation: the error passes unchanged, and the expiry is counted and reported."""
    handler = TimeoutHandler(TIMER, default="default", name="ml")
    retrying = Retry("ml", RetryPolicy(max_attempts=1, attempt_timeout=TIMER))

    async def converting() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise ConnectionError("aborted") from None
        return "never"

    with pytest.raises(ConnectionError, match="aborted"):
        await handler.with_timeout(converting)
    assert handler.get_stats() == {"executions": 1, "timeouts": 1, "defaults_returned": 0}
    assert recorder.of(Event.TIMEOUT) == [TimeoutOccurred(TIMER, "total")]
    assert _requests_pending() == 0
    with pytest.raises(ConnectionError, match="aborted"):
        await retrying.execute(converting)
    assert retrying.get_stats()["attempt_timeouts"] == 1
    assert recorder.of(Event.TIMEOUT)[1:] == [TimeoutOccurred(TIMER, "attempt")]


# -- a deadline binds the task that set it ---------------------------------------------------


async def test_a_task_spawned_under_a_tighter_scope_is_bounded_by_its_own_handler() -> None:
    """A child task's own 0.3 s timeout fires although its parent's 0.05 s scope was tighter and ended."""
    handler = TimeoutHandler(0.3)

    async def child() -> None:
        await handler.with_timeout(asyncio.sleep, 5.0)

    started = time.monotonic()
    async with move_on_after(TIMER):
        task = asyncio.create_task(child())
        await asyncio.sleep(3600)
    with pytest.raises(OperationTimeoutError) as info:
        await asyncio.wait_for(task, 10.0)
    assert info.value.timeout == 0.3
    assert time.monotonic() - started < 4.0
    assert handler.get_stats()["timeouts"] == 1


async def test_a_sync_handler_in_a_thread_publishes_its_own_deadline_under_a_tighter_task_scope() -> None:
    """with_timeout_sync in asyncio.to_thread publishes its own deadline, not the awaiting task's."""
    clock = FakeClock(0.0)
    handler = TimeoutHandler(5.0, clock=clock)
    async with fail_after(1.0, clock=clock):
        assert current_deadline() == 1.0
        assert await asyncio.to_thread(handler.with_timeout_sync, current_deadline) == 5.0


# -- scopes are single-use; durations fit the platform ---------------------------------------


@pytest.mark.parametrize("make", [fail_after, move_on_after], ids=["fail_after", "move_on_after"])
async def test_scope_helpers_entered_twice_raise_runtime_error(make) -> None:
    """Entering a fail_after/move_on_after scope a second time raises RuntimeError, nested or after."""
    scope = make(5.0)
    async with scope:
        with pytest.raises(RuntimeError, match="already been entered"):
            async with scope:
                pass
    assert not scope.expired
    with pytest.raises(RuntimeError, match="already been entered"):
        async with scope:
            await asyncio.sleep(0)
    assert current_deadline() is None


@pytest.mark.parametrize("under_an_earlier_deadline", [False, True])
@pytest.mark.parametrize("make", [fail_after, move_on_after], ids=["fail_after", "move_on_after"])
async def test_a_scope_left_by_another_task_than_the_one_that_entered_it_is_a_clear_runtime_error(
    make, under_an_earlier_deadline: bool
) -> None:
    """Entered in one task, left in another: RuntimeError saying so, and nothing of the scope stays behind.

    Under an earlier deadline the scope is not armed at entry (held): the same misuse, the same error.
    """
    clock = FakeClock(0.0)
    outer = fail_after(1.0, clock=clock) if under_an_earlier_deadline else None
    scope = make(5.0, clock=clock)
    entering = asyncio.Event()
    leave = asyncio.Event()

    async def enters() -> None:
        if outer is not None:
            await outer.__aenter__()
        await scope.__aenter__()
        entering.set()
        await leave.wait()  # still inside the scope while another task leaves it
        if outer is not None:
            assert current_deadline() == 1.0  # the earlier deadline still binds this task
            await outer.__aexit__(None, None, None)

    task = asyncio.create_task(enters())
    await entering.wait()
    with pytest.raises(RuntimeError, match=r"'(fail_after|move_on_after)' was left by another task"):
        await scope.__aexit__(None, None, None)
    leave.set()
    await task
    assert not scope.expired
    assert current_deadline() is None
    assert not loop_timer(asyncio.get_running_loop()).held


@pytest.mark.parametrize("too_long", [10**400, 1e10, timedelta.max], ids=["10**400", "1e10", "timedelta.max"])
async def test_durations_beyond_the_platform_limit_are_refused_and_the_limit_itself_works(too_long) -> None:
    """A timeout above threading.TIMEOUT_MAX is a ValueError naming the field; exactly the limit works."""
    over = r"must be <= \d+ seconds \(threading\.TIMEOUT_MAX\)"
    with pytest.raises(ValueError, match=r"TimeoutHandler\.timeout " + over):
        TimeoutHandler(timeout=too_long)
    with pytest.raises(ValueError, match=r"TimeoutConfig\.timeout " + over):
        TimeoutConfig(timeout=too_long)
    with pytest.raises(ValueError, match=r"fail_after\.seconds " + over):
        fail_after(too_long)
    with pytest.raises(ValueError, match=r"move_on_after\.seconds " + over):
        move_on_after(too_long)
    longest = TimeoutHandler(threading.TIMEOUT_MAX)
    assert await longest.with_timeout(asyncio.sleep, 0, "async") == "async"
    assert longest.with_timeout_sync(str, "sync") == "sync"
    async with fail_after(threading.TIMEOUT_MAX) as scope:
        await asyncio.sleep(0)
    assert not scope.expired


async def test_a_scope_held_under_an_async_generators_scope_still_ends_at_its_own_deadline() -> None:
    """A looser scope opened under an async generator's tighter one is enforced once the generator's ends first.

    The generator's scope leaves while the consumer's is open (the generator finished inside it):
    the consumer's deadline, no longer bounded by the generator's, ends its block, as
    ``asyncio.timeout`` would.
    """

    async def numbers():
        async with fail_after(TIMER, operation="generator"):
            yield 1
            yield 2

    generator = numbers()
    await generator.__anext__()
    hang = Hang()
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        async with fail_after(4 * TIMER, operation="consumer"):
            assert [item async for item in generator] == [2]
            await hang()
    assert info.value.operation == "consumer"
    assert time.monotonic() - started < BOUND
    assert hang.cancelled == 1
    assert _requests_pending() == 0


async def test_an_async_generators_scope_ended_in_a_consumers_scope_leaves_the_deadlines_in_force() -> None:
    """The deadline published stays the tightest of the scopes still open, whatever order they leave in."""
    clock = FakeClock()

    async def numbers():
        async with fail_after(100.0, clock=clock, operation="generator"):
            yield 1
            yield 2

    async with fail_after(500.0, clock=clock, operation="outer"):
        generator = numbers()
        await generator.__anext__()
        async with fail_after(50.0, clock=clock, operation="consumer"):
            assert [item async for item in generator] == [2]
            assert current_deadline() == 50.0
        assert current_deadline() == 500.0
    assert current_deadline() is None


async def test_a_handler_held_under_an_async_generators_scope_still_times_out_at_its_own_deadline() -> None:
    """A handler's call that finishes an async generator, whose tighter scope ends first, still ends at the handler's deadline."""

    async def numbers():
        async with fail_after(TIMER, operation="generator"):
            yield 1
            yield 2

    generator = numbers()
    await generator.__anext__()
    hang = Hang()

    async def consume() -> None:
        assert [item async for item in generator] == [2]
        await hang()

    handler = TimeoutHandler(4 * TIMER, name="consumer")
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        await handler.with_timeout(consume)
    assert info.value.operation == "consumer"
    assert time.monotonic() - started < BOUND
    assert hang.cancelled == 1
    assert handler.get_stats()["timeouts"] == 1


@pytest.mark.parametrize("outer", ["fail_after", "policy"])
async def test_a_task_that_timed_out_with_an_unfinished_generator_is_freed_after_the_generators_deadline(
    outer: str,
) -> None:
    """A task that ended holding a scope of an unfinished async generator is freed once that scope fired.

    The generator's scope, entered under the task's tighter deadline, was held, then armed when
    that deadline fired; the task ended with its timeout, whose traceback keeps the frame that
    holds the generator. The loop's timer listed the task's held scopes for as long as they had
    not left, and the scope leaves only as the generator is closed, once it is garbage: the task,
    its frames and the generator were kept for good, one more on every such timeout. Under
    ``asyncio.timeout`` they are freed as the generator's deadline passes.
    """
    closed: list[int] = []

    async def numbers():
        try:
            async with fail_after(2 * TIMER, operation="generator"):
                yield 1
                yield 2
        finally:
            closed.append(1)

    async def handler() -> None:
        generator = numbers()
        await generator.__anext__()  # held: the handler's deadline comes first
        await Hang()()

    async def timed(call: Any) -> None:
        if outer == "policy":
            await TimeoutHandler(TIMER, name="handler").with_timeout(call)
        else:
            async with fail_after(TIMER, operation="handler"):
                await call()

    async def run() -> None:
        await timed(handler)

    tasks = [weakref.ref(task) for task in [asyncio.create_task(run()) for _ in range(3)]]
    for ref in tasks:
        task = ref()
        assert task is not None
        with pytest.raises(OperationTimeoutError):
            await task
        del task
    held = loop_timer(asyncio.get_running_loop()).held
    started = time.monotonic()
    while len(closed) < 3 and time.monotonic() - started < BOUND:
        gc.collect()
        await asyncio.sleep(TIMER)
    assert len(closed) == 3
    assert [ref() for ref in tasks] == [None, None, None]
    assert not held


async def test_a_task_failed_with_an_unfinished_generator_under_a_handlers_deadline_is_freed() -> None:
    """A task that failed in a handler's call, holding a scope of an unfinished async generator, is freed in time.

    The generator's scope, entered in the call under the handler's tighter deadline, was held;
    the handler's scope (a step's, entered and left by its driver) left with the call's error
    without arming it, as ``async with`` arms the scopes held under it. Held and never armed, it
    was listed by the loop's timer for good, and with it the task, whose error's traceback keeps
    the generator: the task, its frames and the generator were never freed. Armed as the
    handler's scope leaves, it fires at its own deadline, as ``asyncio.timeout`` would, and all
    of it is freed.
    """
    closed: list[int] = []

    async def numbers():
        try:
            async with fail_after(24 * TIMER, operation="generator"):
                yield 1
                yield 2
        finally:
            closed.append(1)

    async def handler() -> None:
        generator = numbers()
        await generator.__anext__()  # held: the handler's deadline comes first
        raise ValueError("the handler failed")

    task = asyncio.create_task(TimeoutHandler(20 * TIMER, name="handler").with_timeout(handler))
    with pytest.raises(ValueError, match="the handler failed"):
        await task
    freed = weakref.ref(task)
    del task
    started = time.monotonic()
    while not closed and time.monotonic() - started < 24 * TIMER + BOUND:
        gc.collect()
        await asyncio.sleep(TIMER)
    assert closed == [1]
    assert freed() is None
    assert not loop_timer(asyncio.get_running_loop()).held


@pytest.mark.parametrize("outer", [None, 10.0], ids=["armed", "held"])
def test_an_abandoned_async_generators_scope_closed_at_shutdown_reports_no_error(outer: float | None) -> None:
    """The loop closes an async generator left unfinished in a task it cancels at shutdown: no error is reported.

    The generator's scope is left by that task, cancelled, once the one that entered it ended: a
    finalisation, as a generator closed elsewhere is, not a misplaced exit.
    """
    reported: list[dict[str, Any]] = []

    async def numbers():
        async with fail_after(30.0, operation="generator"):
            yield 1
            yield 2

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        generator = numbers()
        if outer is None:
            await generator.__anext__()
        else:
            async with fail_after(outer):
                await generator.__anext__()

    asyncio.run(main())
    assert reported == []


async def _generator_of_two(seconds: float, clock: FakeClock) -> AsyncIterator[int]:
    """An async generator whose own deadline scope (``seconds`` on ``clock``) spans its two items."""
    async with fail_after(seconds, clock=clock, operation="generator"):
        yield 1
        yield 2


async def test_a_looser_consumers_deadline_is_published_once_an_async_generators_tighter_scope_ends() -> None:
    """An async generator's scope ending inside a looser scope its consumer opened since leaves that scope's deadline published.

    The consumer's scope was held under the generator's tighter deadline; once that scope ended,
    the consumer's deadline is the one in force: enforced, and read by ``current_deadline()``,
    with and without an earlier deadline around both, until the consumer's scope ends.
    """
    clock = FakeClock()
    numbers = functools.partial(_generator_of_two, 10.0, clock)

    seen: list[object] = []
    generator = numbers()
    await generator.__anext__()
    async with fail_after(40.0, clock=clock, operation="consumer"):
        assert [item async for item in generator] == [2]
        seen.extend((current_deadline(), time_left()))
    seen.append(current_deadline())
    async with fail_after(100.0, clock=clock, operation="outer"):
        generator = numbers()
        await generator.__anext__()
        async with fail_after(40.0, clock=clock, operation="consumer"):
            assert [item async for item in generator] == [2]
            seen.append(current_deadline())
        seen.append(current_deadline())
    seen.append(current_deadline())

    async def consume(generator) -> object:
        assert [item async for item in generator] == [2]
        return current_deadline()

    generator = numbers()
    await generator.__anext__()
    seen.append(await TimeoutHandler(40.0, clock=clock, name="consumer").with_timeout(consume, generator))
    seen.append(current_deadline())
    assert seen == [40.0, 40.0, None, 40.0, 100.0, None, 40.0, None]
    assert not loop_timer(asyncio.get_running_loop()).held


async def test_a_consumers_deadline_armed_by_an_earlier_expiry_is_published_once_an_async_generators_scope_ends() -> (
    None
):
    """A looser scope held under a generator's, armed since by another scope's expiry, is published once the generator's ends.

    The consumer's scope was armed when a scope inside it fired (its block may have caught that
    cancellation); the generator's scope ending afterwards leaves the consumer's deadline in force,
    read by ``current_deadline()``, as when nothing had fired.
    """
    clock = FakeClock()
    numbers = functools.partial(_generator_of_two, 10.0, clock)

    seen: list[object] = []
    generator = numbers()
    await generator.__anext__()
    async with fail_after(40.0, clock=clock, operation="consumer"):
        async with move_on_after(0, clock=clock) as expired:
            await asyncio.sleep(30)
        seen.append(expired.expired)
        assert [item async for item in generator] == [2]
        seen.append(current_deadline())
        async with fail_after(50.0, clock=clock, operation="looser"):
            seen.append(current_deadline())
    seen.append(current_deadline())
    assert seen == [True, 40.0, 40.0, None]
    assert not loop_timer(asyncio.get_running_loop()).held
