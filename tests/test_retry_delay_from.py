"""Tests for delays taken from the outcome (delay_from, Retry-After) and for decorrelated jitter."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import invoke

from otel_resilience.engine.context import AsyncDeadline, SyncDeadline
from otel_resilience.engine.events import Event, RetryExhausted, RetryScheduled, error_type_name
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.retry import (
    Jitter,
    Retry,
    RetryPolicy,
    RetryStrategy,
    parse_retry_after,
    retry_after_delay,
)
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.binding import event_values, plan
from otel_resilience.testing import EventRecorder, FakeClock


class Throttled(ConnectionError):
    """A failure that says when to come back (as a rate limiter's rejection does)."""

    def __init__(self, retry_after: object) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


class Response:
    """A response as httpx and requests shape it: ``headers`` (a mapping)."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class HTTPStatusError(Exception):
    """An error with its response attached (``httpx.HTTPStatusError``, ``requests.HTTPError``)."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("503")
        self.response = Response(headers)


class ClientResponseError(Exception):
    """aiohttp's shape: the headers on the error itself."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__("429")
        self.headers = headers


def failing(*errors: Exception, result: Any = "ok") -> Callable[[], Any]:
    """A plain function that raises ``errors`` in turn, then returns ``result``."""
    pending = list(errors)

    def fn() -> Any:
        fn.calls += 1  # type: ignore[attr-defined]
        if pending:
            raise pending.pop(0)
        return result

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def from_outcome(**kwargs: Any) -> RetryPolicy:
    """A policy honouring Retry-After, with an exact 1 s strategy to fall back to."""
    fields: dict[str, Any] = {
        "strategy": RetryStrategy.FIXED,
        "initial_delay": 1.0,
        "jitter": Jitter.NONE,
        "max_delay": 30.0,
        "delay_from": retry_after_delay,
    }
    fields.update(kwargs)
    return RetryPolicy(**fields)


# -- parsing Retry-After ----------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:29:00 +0000", 60.0),
        ("Wed, 21 Oct 2015 07:28:10 -0000", 10.0),  # no zone: taken as UTC
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no wait
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),  # not delta-seconds (digits only), though float() reads it
        ("9" * 400, float("inf")),  # valid delta-seconds past the float range: over any max_delay
        ("+5", None),  # float() reads each of these; none is delta-seconds (ASCII digits)
        ("-0", None),
        ("1e3", None),
        ("1_0", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits
        ("5.", None),
        ("", None),
        ("soon", None),
        ("Wed, 99 Foo 2015", None),
        ("Wed, 21 Oct 2015 07:28:30 GMT, Wed, 21 Oct 2015 07:29:00 GMT", None),  # joined: read as the first
        ("Wed, 21 Oct 2015 07:28:30 GMT, 0", None),
        ("Wednesday, 21-Oct-15 07:28:30 GMT", 30.0),  # RFC 850's form: one comma
        ("Wed Oct 21 07:28:30 2015", 30.0),  # asctime's: none
    ],
)
def test_parse_retry_after_reads_delta_seconds_and_http_dates(value: str, seconds: float | None) -> None:
    """delta-seconds or an HTTP date (email.utils); anything else is not a Retry-After."""
    assert parse_retry_after(value, now=NOW) == seconds


def test_parse_retry_after_defaults_to_the_current_time() -> None:
    """Without ``now``, a date is measured from the system's UTC time."""
    soon = datetime.now(timezone.utc) + timedelta(seconds=100)
    delay = parse_retry_after(soon.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert delay is not None
    assert 90.0 <= delay <= 100.0


def test_parse_retry_after_takes_a_now_without_a_zone_as_utc() -> None:
    """A ``now`` without a zone is UTC, as a date without one is (not a TypeError from the subtraction)."""
    naive = NOW.replace(tzinfo=None)
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    assert parse_retry_after(date, now=naive) == parse_retry_after(date, now=NOW)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30", now=naive) == parse_retry_after(date, now=NOW)


@pytest.mark.parametrize(
    ("args", "kwargs", "pattern"),
    [
        ((5,), {}, r"parse_retry_after\.value must be a str, got 5 \(int\)"),
        ((b"120",), {}, r"parse_retry_after\.value must be a str, got b'120' \(bytes\)"),
        (("Wed, 21 Oct 2015 07:28:30 GMT",), {"now": "x"}, r"parse_retry_after\.now must be a datetime"),
        (("120",), {"now": 0}, r"parse_retry_after\.now must be a datetime"),  # unread here: refused
    ],
)
def test_parse_retry_after_names_an_argument_of_the_wrong_type(
    args: tuple[object, ...], kwargs: dict[str, object], pattern: str
) -> None:
    """A value that is no text, or a ``now`` that is no datetime, is a TypeError naming the argument
    (not an AttributeError from a method of the wrong object)."""
    with pytest.raises(TypeError, match=pattern):
        parse_retry_after(*args, **kwargs)  # type: ignore[arg-type]


# -- retry_after_delay --------------------------------------------------------------------------


class Unreadable(Exception):
    """An error whose attributes raise when read."""

    @property
    def retry_after(self) -> float:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("outcome", "seconds"),
    [
        (CircuitOpenError("db", "open", 7.5), 7.5),
        (CircuitOpenError("db", "open", math.inf), math.inf),
        (Throttled(2), 2.0),
        (Throttled(timedelta(milliseconds=250)), 0.25),
        (Throttled("4"), 4.0),
        (Throttled(-1.0), None),
        (Throttled(10**400), math.inf),  # an int past the float range: over any max_delay, as "9" * 400
        (Throttled(-(10**400)), None),
        (Throttled(math.nan), None),
        (Throttled(True), None),
        (Throttled(None), None),
        (HTTPStatusError({"Retry-After": "5"}), 5.0),
        (HTTPStatusError({"retry-after": "6"}), 6.0),
        (HTTPStatusError({"Content-Type": "text/plain"}), None),
        (ClientResponseError({"Retry-After": "8"}), 8.0),
        (Response({"Retry-After": "9"}), 9.0),  # a retried result
        (ConnectionError("plain"), None),
        (Unreadable(), None),
        (None, None),
        ("a result", None),
    ],
)
def test_retry_after_delay_reads_the_attribute_then_the_headers(
    outcome: object, seconds: float | None
) -> None:
    """retry_after, then response.headers, then headers; nothing readable asks for nothing."""
    assert retry_after_delay(outcome) == seconds


def test_the_attribute_comes_before_the_header() -> None:
    """An error with both: its own retry_after wins."""
    error = HTTPStatusError({"Retry-After": "50"})
    error.retry_after = 3.0  # type: ignore[attr-defined]
    assert retry_after_delay(error) == 3.0


def test_delay_from_is_off_by_default() -> None:
    """The default keeps the strategy's delays: nothing is read from the outcome."""
    assert RetryPolicy().delay_from is None
    with pytest.raises(TypeError, match=r"RetryPolicy\.delay_from must be callable"):
        RetryPolicy(delay_from=5.0)  # type: ignore[arg-type]


# -- a retry that honours the outcome -----------------------------------------------------------


async def test_the_delay_the_error_asks_for_is_waited(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Retry-After 5 then no hint: 5 s (source "outcome"), then the strategy's 1 s (source "strategy")."""
    r = Retry("dep", from_outcome(max_attempts=3), clock=clock)
    fn = failing(HTTPStatusError({"Retry-After": "5"}), ConnectionError("plain"))
    assert await invoke(r, driver, fn) == "ok"
    assert clock.sleeps == [5.0, 1.0]
    scheduled = recorder.of(Event.RETRY_SCHEDULED)
    assert scheduled == [
        RetryScheduled(1, 5.0, error_type_name(HTTPStatusError({})), "outcome"),
        RetryScheduled(2, 1.0, "ConnectionError", "strategy"),
    ]


async def test_an_outcome_delay_is_not_jittered(driver: str, clock: FakeClock) -> None:
    """The server's delay is used as is, even with the policy's proportional jitter."""
    r = Retry("dep", from_outcome(jitter=Jitter.PROPORTIONAL, max_attempts=2), clock=clock)
    assert await invoke(r, driver, failing(Throttled(2.5))) == "ok"
    assert clock.sleeps == [2.5]


async def test_a_delay_over_max_delay_gives_up_at_once_with_a_note(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Not clamped: Retry-After 120 over max_delay 30 gives up now, saying why (stop reason max_delay)."""
    r = Retry("dep", from_outcome(max_attempts=3), clock=clock)
    error = HTTPStatusError({"Retry-After": "120"})
    fn = failing(error)
    with pytest.raises(HTTPStatusError) as info:
        await invoke(r, driver, fn)
    assert info.value is error
    assert fn.calls == 1  # type: ignore[attr-defined]
    assert clock.sleeps == []
    note = (
        "otel_resilience retry 'dep': gave up after 1 of 3 attempts: the 120 s delay the outcome asked "
        "for (delay_from) is over max_delay (30 s)"
    )
    assert info.value.__notes__ == [note]
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(1, error_type_name(error), "max_delay")]
    assert r.get_stats()["exhausted"] == 1


async def test_a_delay_equal_to_max_delay_is_waited(driver: str, clock: FakeClock) -> None:
    """max_delay is inclusive."""
    r = Retry("dep", from_outcome(max_attempts=2), clock=clock)
    assert await invoke(r, driver, failing(Throttled(30))) == "ok"
    assert clock.sleeps == [30.0]


async def test_a_delay_just_over_max_delay_is_told_apart_in_the_note(driver: str, clock: FakeClock) -> None:
    """30.0000001 s over 30 s: the note shows the digits that tell them apart, never "30 s is over 30 s"."""
    r = Retry("dep", from_outcome(max_attempts=2), clock=clock)
    with pytest.raises(Throttled) as info:
        await invoke(r, driver, failing(Throttled(30.0000001)))
    assert info.value.__notes__[0].endswith(
        "the 30.0000001 s delay the outcome asked for (delay_from) is over max_delay (30.0 s)"
    )


async def test_a_breaker_forced_open_asks_for_forever(driver: str, clock: FakeClock) -> None:
    """An open breaker's retry_after (inf while forced open) is over any max_delay: no retry."""
    policy = from_outcome(max_attempts=3, no_retry_on=())  # rejections are not retried by default
    r = Retry("dep", policy, clock=clock)
    fn = failing(CircuitOpenError("db", "open", math.inf))
    with pytest.raises(CircuitOpenError) as info:
        await invoke(r, driver, fn)
    assert "the inf s delay the outcome asked for (delay_from) is over max_delay" in info.value.__notes__[0]


async def test_a_delay_past_the_deadline_gives_up_with_a_note(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """The deadline caps an outcome's delay as it caps the strategy's: 10 s asked, 4 s left."""
    r = Retry("dep", from_outcome(max_attempts=3), clock=clock)
    fn = failing(Throttled(10))

    async def under_deadline() -> None:
        if driver == "sync":
            with SyncDeadline(clock, 4.0, "outer"):
                r.execute_sync(fn)
        else:
            async with AsyncDeadline(clock, 4.0, "outer"):
                await invoke(r, driver, fn)

    with pytest.raises(Throttled) as info:
        await under_deadline()
    assert clock.sleeps == []
    note = (
        "otel_resilience retry 'dep': gave up after 1 of 3 attempts: the 10 s delay the outcome asked "
        "for (delay_from) would overrun the deadline (4 s left)"
    )
    assert info.value.__notes__ == [note]
    assert [e.reason for e in recorder.of(Event.RETRY_EXHAUSTED)] == ["deadline"]  # type: ignore[union-attr]


async def test_a_retried_result_can_ask_for_its_delay(driver: str, clock: FakeClock) -> None:
    """delay_from gets the retried result when a result is retried (a 503 response with Retry-After)."""
    busy, done = Response({"Retry-After": "3"}), Response({})
    results = [busy, done]

    def fn() -> Response:
        return results.pop(0)

    r = Retry("dep", from_outcome(retry_on_result=lambda resp: resp is busy), clock=clock)
    assert await invoke(r, driver, fn) is done
    assert clock.sleeps == [3.0]


async def test_a_custom_delay_from_may_return_a_timedelta(driver: str, clock: FakeClock) -> None:
    """Seconds or a timedelta; None falls back to the strategy."""
    seen: list[object] = []

    def delay_from(outcome: object) -> timedelta | None:
        seen.append(outcome)
        return timedelta(seconds=4) if len(seen) == 1 else None

    first, second = ConnectionError("a"), ConnectionError("b")
    r = Retry("dep", from_outcome(max_attempts=3, delay_from=delay_from), clock=clock)
    assert await invoke(r, driver, failing(first, second)) == "ok"
    assert seen == [first, second]
    assert clock.sleeps == [4.0, 1.0]


async def test_a_custom_delay_from_past_the_float_range_gives_up_over_max_delay(
    driver: str, clock: FakeClock
) -> None:
    """An int too large for a float is longer than any max_delay: a give-up, never an OverflowError."""
    r = Retry("dep", from_outcome(max_attempts=3, delay_from=lambda outcome: 10**400), clock=clock)
    error = ConnectionError("x")
    with pytest.raises(ConnectionError) as info:
        await invoke(r, driver, failing(error))
    assert info.value is error
    assert "is over max_delay (30 s)" in info.value.__notes__[0]
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("5", TypeError, r"retry 'dep': delay_from returned '5'; it must return seconds"),
        (True, TypeError, r"delay_from returned True"),
        (-1.0, ValueError, r"delay_from returned -1\.0; seconds must be >= 0"),
        (math.nan, ValueError, r"delay_from returned nan"),
    ],
)
async def test_a_delay_from_that_returns_no_delay_is_an_error(
    driver: str, clock: FakeClock, value: object, error: type, match: str
) -> None:
    """A wrong return value is the user's bug: it propagates, never silently replaced."""
    r = Retry("dep", from_outcome(delay_from=lambda outcome: value), clock=clock)
    with pytest.raises(error, match=match):
        await invoke(r, driver, failing(ConnectionError("x")))
    assert clock.sleeps == []


def test_the_delay_source_is_on_the_span_event() -> None:
    """The binding table carries the new field to resilience.retry.delay_source."""
    args = RetryScheduled(1, 5.0, "ConnectionError", "outcome")
    values = event_values(plan(Event.RETRY_SCHEDULED, args), args)
    assert values[sc.RETRY_DELAY_SOURCE] == "outcome"
    assert sc.RETRY_DELAY_SOURCES == ("strategy", "outcome")
    assert {"budget", "max_delay"} <= set(sc.RETRY_STOP_REASONS)
    assert RetryScheduled(1, 1.0, None).delay_source == "strategy"


# -- decorrelated jitter ------------------------------------------------------------------------


def test_decorrelated_jitter_is_refused_with_a_random_strategy() -> None:
    """RANDOM is a schedule of its own, with no jitter on top: the jitter would be ignored."""
    with pytest.raises(
        ValueError,
        match=r"RetryPolicy\.jitter must be PROPORTIONAL \(its default\) or NONE unless strategy is not RANDOM",
    ):
        RetryPolicy(strategy=RetryStrategy.RANDOM, jitter=Jitter.DECORRELATED)
    assert RetryPolicy(jitter="decorrelated").jitter is Jitter.DECORRELATED


@settings(max_examples=200, deadline=None)
@given(
    initial=st.floats(min_value=0.001, max_value=10.0),
    extra=st.floats(min_value=0.0, max_value=100.0),
    attempts=st.integers(min_value=1, max_value=30),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_decorrelated_delay_is_within_its_bounds(
    *, initial: float, extra: float, attempts: int, seed: int
) -> None:
    """initial <= d(n) <= min(max_delay, 3 * d(n-1)) for every attempt, d(0) = initial."""
    policy = RetryPolicy(jitter=Jitter.DECORRELATED, initial_delay=initial, max_delay=initial + extra)
    rng = random.Random(seed)
    previous = None
    for attempt in range(1, attempts + 1):
        delay = policy.compute_delay(attempt, rng, previous)
        bound = 3 * (initial if previous is None else previous)
        assert initial * (1 - 1e-12) <= delay <= min(policy.max_delay, bound * (1 + 1e-12))
        previous = delay


def test_a_decorrelated_delay_grows_from_the_previous_one() -> None:
    """The same draw gives initial + u * (3 * previous - initial): the previous delay moves it."""
    policy = RetryPolicy(jitter=Jitter.DECORRELATED, initial_delay=1.0, max_delay=1000.0)
    u = random.Random(7).random()
    for previous in (None, 2.0, 10.0):
        high = 3 * (1.0 if previous is None else previous)
        expected = 1.0 + u * (high - 1.0)
        assert policy.compute_delay(1, random.Random(7), previous) == pytest.approx(expected)
    assert policy.compute_delay(1, random.Random(7), 10.0) > policy.compute_delay(1, random.Random(7), 2.0)


async def test_an_execution_carries_its_own_previous_delay(driver: str, clock: FakeClock) -> None:
    """Through a Retry: each sleep is bounded by 3x the one before it, and a new execution starts over."""
    policy = RetryPolicy(jitter=Jitter.DECORRELATED, initial_delay=1.0, max_delay=500.0, max_attempts=8)
    r = Retry("dep", policy, clock=clock, rng=random.Random(3))
    boom = [ConnectionError(str(i)) for i in range(7)]
    assert await invoke(r, driver, failing(*boom)) == "ok"
    sleeps = list(clock.sleeps)
    assert len(sleeps) == 7
    previous = 1.0
    for delay in sleeps:
        assert 1.0 <= delay <= 3 * previous
        previous = delay
    assert max(sleeps) > 3.0  # it grew past what the first step alone allows
    # The same draws again, in a new execution: the same sequence, not one grown from the last.
    r2 = Retry("dep", policy, clock=clock, rng=random.Random(3))
    assert await invoke(r2, driver, failing(ConnectionError("x"))) == "ok"
    assert clock.sleeps[-1] == sleeps[0]


async def test_the_delay_from_the_outcome_is_the_previous_delay_of_decorrelated_jitter(
    driver: str, clock: FakeClock
) -> None:
    """A server's 20 s counts as the previous backoff: the next draw is in [1, 60]."""
    policy = from_outcome(
        jitter=Jitter.DECORRELATED, strategy=RetryStrategy.EXPONENTIAL, max_delay=100.0, max_attempts=3
    )
    r = Retry("dep", policy, clock=clock, rng=random.Random(1))
    u = random.Random(1).random()
    assert await invoke(r, driver, failing(Throttled(20), ConnectionError("x"))) == "ok"
    assert clock.sleeps[0] == 20.0
    assert clock.sleeps[1] == pytest.approx(1.0 + u * (60.0 - 1.0))


async def test_a_decorrelated_backoff_from_a_zero_initial_delay_grows_from_the_outcomes_delay(
    driver: str, clock: FakeClock
) -> None:
    """With initial_delay 0, a server's 2 s is the previous backoff: the next draw is in [0, 6], not 0."""
    policy = from_outcome(
        jitter=Jitter.DECORRELATED,
        strategy=RetryStrategy.EXPONENTIAL,
        initial_delay=0.0,
        max_delay=100.0,
        max_attempts=3,
    )
    r = Retry("dep", policy, clock=clock, rng=random.Random(1))
    u = random.Random(1).random()
    assert await invoke(r, driver, failing(Throttled(2), ConnectionError("x"))) == "ok"
    assert clock.sleeps == [2.0, pytest.approx(u * 6.0)]
