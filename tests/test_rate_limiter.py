"""Tests for the rate limiter: config, admissions of both algorithms, rejections, its uses, keys."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import pickle
import weakref
from datetime import timedelta

import pytest

from otel_resilience import (
    ExecutionRejectedError,
    ExtraStrategy,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Jitter,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
)
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH, CallRejected, Event, key_attribute
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.registry import PIPELINES, RATE_LIMITERS
from otel_resilience.engine.validation import MAX_COUNT, MAX_DURATION
from otel_resilience.patterns.rate_limiter import DEFAULT_MAX_KEYS, DEFAULT_MAX_WAITING, KeyedRateLimiter
from otel_resilience.testing import FakeClock

# --- helpers -------------------------------------------------------------------------------


def limiter_of(clock, *, name="api", **config):
    """A limiter on ``clock`` with ``RateLimiterConfig(**config)``."""
    return RateLimiter(name, RateLimiterConfig(**config), clock=clock)


async def call(limiter, driver, value="ok", calls=None):
    """Run one call through the async or the sync driver, recording that ``fn`` ran."""
    if driver == "async":

        async def fn():
            if calls is not None:
                calls.append(value)
            return value

        return await limiter.call(fn)

    def fn_sync():
        if calls is not None:
            calls.append(value)
        return value

    return limiter.call_sync(fn_sync)


def admitted(limiter, count):
    """Try ``count`` permits now; return which were taken."""
    return [limiter.try_acquire() for _ in range(count)]


# --- config --------------------------------------------------------------------------------


def test_defaults_are_pinned():
    """rate is required; burst is one second's worth; token bucket, no waiting, 100 waiters."""
    config = RateLimiterConfig(rate=10.0)
    assert (config.burst, config.algorithm, config.max_wait, config.max_waiting) == (
        10,
        "token_bucket",
        0.0,
        100,
    )
    assert DEFAULT_MAX_WAITING == 100
    assert DEFAULT_MAX_KEYS == 1024
    assert RateLimiterConfig(rate=2.5).burst == 3
    assert RateLimiterConfig(rate=0.1).burst == 1
    assert dataclasses.replace(RateLimiterConfig(rate=10.0), rate=100.0).burst == 10  # stored once computed
    assert RateLimiterConfig(rate=3).rate == 3.0
    assert isinstance(RateLimiterConfig(rate=3).rate, float)
    with pytest.raises(TypeError):
        RateLimiterConfig()  # type: ignore[call-arg]


def test_resilience4j_limits_map_to_rate_and_burst():
    """limitForPeriod=50 per limitRefreshPeriod=500 ms is burst=50, rate=100/s; the window is the period."""
    config = RateLimiterConfig(rate=50 / 0.5, burst=50, algorithm="sliding_window")
    assert config.window == 0.5
    assert RateLimiterConfig(rate=4.0, burst=2).window == 0.5


def test_max_wait_accepts_timedelta_and_config_is_frozen():
    """A timedelta is stored as seconds; the config cannot be changed after construction."""
    config = RateLimiterConfig(rate=1.0, max_wait=timedelta(milliseconds=250))
    assert config.max_wait == 0.25
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rate = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"rate": 0}, ValueError, "rate"),
        ({"rate": -1.0}, ValueError, "rate"),
        ({"rate": math.inf}, ValueError, "rate"),
        ({"rate": math.nan}, ValueError, "rate"),
        ({"rate": "10"}, TypeError, "rate"),
        ({"rate": True}, TypeError, "rate"),
        ({"rate": 1.0, "burst": 0}, ValueError, "burst"),
        ({"rate": 1.0, "burst": 2.0}, TypeError, "burst"),
        ({"rate": 1.0, "burst": True}, TypeError, "burst"),
        ({"rate": 1.0, "algorithm": "leaky_bucket"}, ValueError, "algorithm"),
        ({"rate": 1.0, "algorithm": 1}, TypeError, "algorithm"),
        ({"rate": 1.0, "max_wait": -0.1}, ValueError, "max_wait"),
        ({"rate": 1.0, "max_wait": math.inf}, ValueError, "max_wait"),
        ({"rate": 1.0, "max_wait": MAX_DURATION * 2}, ValueError, "max_wait"),
        ({"rate": 1.0, "max_wait": "1"}, TypeError, "max_wait"),
        ({"rate": 1.0, "max_waiting": -1}, ValueError, "max_waiting"),
        ({"rate": 1.0, "max_waiting": 1.5}, TypeError, "max_waiting"),
        ({"rate": 1e30}, ValueError, "rate"),  # its default burst would pass sys.maxsize
        ({"rate": float(2**63)}, ValueError, "rate"),
        ({"rate": 1e-300}, ValueError, "rate"),  # a permit every 1e300 s: no duration
        ({"rate": 5e-324}, ValueError, "rate"),  # 1 / rate is inf
        ({"rate": 1.0, "burst": 10**12, "algorithm": "sliding_window"}, ValueError, "burst"),
    ],
)
def test_bad_config_is_rejected(kwargs, error, field):
    """Every field is checked, and the error names RateLimiterConfig.<field>."""
    with pytest.raises(error, match=rf"^RateLimiterConfig\.{field} must be "):
        RateLimiterConfig(**kwargs)


def test_a_waiting_limit_beside_no_wait_is_refused():
    """``max_wait=0`` (the default) lets no caller wait: a ``max_waiting`` written beside it would be ignored.

    ``RateLimiterConfig(rate=1.0, max_waiting=5)`` was taken, and a caller finding no permit was
    rejected at once, never waiting as one of 5.
    """
    rule = (
        r"^RateLimiterConfig\.max_waiting must be 100 \(its default\) unless max_wait > 0 "
        r"\(no caller waits without it\), got 5$"
    )
    with pytest.raises(ValueError, match=rule):
        RateLimiterConfig(rate=1.0, max_waiting=5)
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.max_waiting must be 100 \(its default\)"):
        RateLimiterConfig(rate=1.0, max_wait=timedelta(0), max_waiting=0)
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.max_waiting must be 100 \(its default\)"):
        dataclasses.replace(RateLimiterConfig(rate=1.0, max_wait=1.0, max_waiting=5), max_wait=0.0)
    # Its default cannot be told from a value left out: taken, as without a max_waiting.
    assert RateLimiterConfig(rate=1.0, max_waiting=100) == RateLimiterConfig(rate=1.0)
    assert RateLimiterConfig(rate=1.0, max_wait=0.5, max_waiting=5).max_waiting == 5
    # A mistyped max_waiting is named as such first.
    with pytest.raises(TypeError, match=r"RateLimiterConfig\.max_waiting must be"):
        RateLimiterConfig(rate=1.0, max_waiting=1.5)
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.max_waiting must be >= 0"):
        RateLimiterConfig(rate=1.0, max_waiting=-1)


def test_validation_messages_are_pinned():
    """The message says the rule and the value."""
    with pytest.raises(ValueError, match=r"^RateLimiterConfig\.rate must be > 0, got 0$"):
        RateLimiterConfig(rate=0)
    with pytest.raises(
        ValueError, match=r"^RateLimiterConfig.algorithm must be 'token_bucket' or 'sliding_window'"
    ):
        RateLimiterConfig(rate=1.0, algorithm="fixed_window")  # type: ignore[arg-type]


def test_rate_bounds_keep_counts_and_durations_in_range():
    """The extreme rates accepted give a burst that is a count and a retry_after that is a duration."""
    fastest = RateLimiterConfig(rate=float(2**62))
    assert fastest.burst == 2**62
    assert fastest.burst <= MAX_COUNT
    slowest = RateLimiter("slow", RateLimiterConfig(rate=1.0 / MAX_DURATION), clock=FakeClock())
    assert slowest.try_acquire()
    with pytest.raises(RateLimitedError) as caught:
        slowest.call_sync(lambda: None)
    assert 0 < caught.value.retry_after <= MAX_DURATION
    window = RateLimiterConfig(rate=1.0, burst=int(MAX_DURATION), algorithm="sliding_window").window
    assert window <= MAX_DURATION


def test_an_int_rate_up_to_sys_maxsize_is_taken_as_the_schema_takes_it():
    """An int rate <= sys.maxsize whose float rounds past it (2**63 - 512 is 2.0**63) is accepted,
    its default burst the int itself (was: refused, "must be <= 9223372036854775807, got
    9223372036854775296", where the config file's schema accepts it); one past it is refused."""
    config = RateLimiterConfig(rate=MAX_COUNT - 511)
    assert config.burst == MAX_COUNT - 511 <= MAX_COUNT
    assert RateLimiterConfig(rate=MAX_COUNT).burst == MAX_COUNT
    with pytest.raises(ValueError, match=r"RateLimiterConfig\.rate must be <= 9223372036854775807"):
        RateLimiterConfig(rate=MAX_COUNT + 1)
    with pytest.raises(ValueError, match=r"^RateLimiterConfig\.rate must be >= .*one permit per "):
        RateLimiterConfig(rate=1e-300)
    with pytest.raises(ValueError, match=r"^RateLimiterConfig\.rate must be <= 9223372036854775807 "):
        RateLimiterConfig(rate=1e30)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "pattern"),
    [
        (("api",), {}, TypeError, r"missing 1 required positional argument: 'config'"),  # typed required
        (("api", None), {}, TypeError, r"^RateLimiter\.config must be a RateLimiterConfig"),
        (("api", {"rate": 1.0}), {}, TypeError, r"^RateLimiter\.config must be"),
        (("",), {"config": RateLimiterConfig(rate=1.0)}, ValueError, r"^RateLimiter\.name must be"),
        ((3,), {"config": RateLimiterConfig(rate=1.0)}, TypeError, r"^RateLimiter\.name must be"),
        (
            ("api", RateLimiterConfig(rate=1.0)),
            {"clock": object()},
            TypeError,
            r"^RateLimiter\.clock must be",
        ),
    ],
)
def test_bad_constructor_arguments_are_rejected(args, kwargs, error, pattern):
    """A missing config (a rate has no default), a bad name or a bad clock is refused."""
    with pytest.raises(error, match=pattern):
        RateLimiter(*args, **kwargs)


# --- admissions ----------------------------------------------------------------------------


def test_token_bucket_admits_a_burst_then_the_rate(clock):
    """burst at once; then one permit per 1/rate seconds; fractional refills add up."""
    limiter = limiter_of(clock, rate=4.0, burst=3)
    assert admitted(limiter, 4) == [True, True, True, False]
    clock.advance(0.125)  # half a token
    assert admitted(limiter, 1) == [False]
    clock.advance(0.125)
    assert admitted(limiter, 2) == [True, False]
    assert limiter.available == 0.0
    clock.advance(0.5)
    assert limiter.available == 2.0
    assert admitted(limiter, 3) == [True, True, False]


def test_token_bucket_never_holds_more_than_burst(clock):
    """An idle hour refills the bucket to burst, not beyond."""
    limiter = limiter_of(clock, rate=100.0, burst=5)
    clock.advance(3600.0)
    assert limiter.available == 5.0
    assert admitted(limiter, 6) == [True] * 5 + [False]


@pytest.mark.parametrize(("start", "rate"), [(1e6, 1e12), (1.7e9, 1e7)])
def test_token_bucket_faster_than_the_clock_ticks_admits_burst_per_reading(start, rate):
    """A permit due sooner than the clock's next reading (``1 / rate`` below its step at ``now``)
    is due at that reading, not now: one instant admits ``burst``, the next reading refills."""
    clock = FakeClock(start)
    limiter = limiter_of(clock, rate=rate, burst=2)
    assert admitted(limiter, 5) == [True, True, False, False, False]
    with pytest.raises(RateLimitedError) as caught:
        limiter.call_sync(lambda: None)
    assert caught.value.retry_after == math.ulp(start)  # the clock's next reading
    clock.advance(caught.value.retry_after)  # it refills more than burst: a full bucket
    assert admitted(limiter, 3) == [True, True, False]
    stats = limiter.get_stats()
    assert (stats["admitted"], stats["rejected"], stats["available"]) == (4, 5, 0.0)


@pytest.mark.parametrize(("start", "rate"), [(1e6, 1e12), (1.7e9, 1e8), (1.7e9, 1e7)])
def test_sliding_window_shorter_than_the_clock_ticks_admits_burst_per_reading(start, rate):
    """A window ``burst / rate`` below the clock's step at ``now`` still holds what it admitted at
    ``now``: one instant admits ``burst``, and its admissions leave at the clock's next reading."""
    clock = FakeClock(start)
    limiter = limiter_of(clock, rate=rate, burst=2, algorithm="sliding_window")
    assert admitted(limiter, 5) == [True, True, False, False, False]
    with pytest.raises(RateLimitedError) as caught:
        limiter.call_sync(lambda: None)
    assert caught.value.retry_after == math.ulp(start)  # the clock's next reading
    clock.advance(caught.value.retry_after)
    assert admitted(limiter, 3) == [True, True, False]
    stats = limiter.get_stats()
    assert (stats["admitted"], stats["rejected"], stats["available"]) == (4, 5, 0.0)


def test_sliding_window_admits_burst_per_window(clock):
    """At most burst in any window of burst/rate seconds; a permit frees when its admission leaves it."""
    limiter = limiter_of(clock, rate=2.0, burst=2, algorithm="sliding_window")  # window: 1 s
    assert admitted(limiter, 3) == [True, True, False]
    clock.advance(0.5)
    assert admitted(limiter, 1) == [False]
    clock.advance(0.5)  # the first two admissions (at 0) leave the window (0, 1]
    assert admitted(limiter, 1) == [True]
    clock.advance(0.25)
    assert admitted(limiter, 2) == [True, False]
    clock.advance(0.75)  # 2.0: the admission at 1.0 has left, the one at 1.25 has not
    assert admitted(limiter, 2) == [True, False]
    assert limiter.available == 0.0


def test_sliding_window_refuses_what_a_token_bucket_allows(clock):
    """After a burst a token bucket refills gradually; a sliding window waits the whole window."""
    bucket = limiter_of(clock, name="b", rate=4.0, burst=4)
    window = limiter_of(clock, name="w", rate=4.0, burst=4, algorithm="sliding_window")
    assert admitted(bucket, 4) == admitted(window, 4) == [True] * 4
    clock.advance(0.5)
    assert admitted(bucket, 3) == [True, True, False]
    assert admitted(window, 1) == [False]
    clock.advance(0.5)
    assert admitted(window, 5) == [True] * 4 + [False]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("rate", [10.0, 7.0, 3.0, 123.456])
def test_a_caller_back_at_its_retry_after_finds_a_permit(algorithm, rate):
    """RateLimitedError.retry_after is when the next permit is due: coming back then finds it.

    The refill over ``retry_after`` seconds must give a whole token even when ``1 / rate`` and
    ``(now - stamp) * rate`` round (``(1 / 7) * 7`` is below 1 in floating point).
    """
    clock = FakeClock(0.0)
    limiter = limiter_of(clock, rate=rate, burst=1, algorithm=algorithm)
    for _ in range(200):
        assert limiter.try_acquire()
        with pytest.raises(RateLimitedError) as caught:
            limiter.call_sync(lambda: None)
        clock.advance(caught.value.retry_after)


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("start", "rate"), [(1e6, 100.0), (1e5, 1000.0), (1e7, 10.0)])
def test_a_caller_back_at_its_retry_after_finds_a_permit_days_into_the_clock(algorithm, start, rate):
    """``retry_after`` stays exact at the readings of a monotonic clock days after boot.

    There ``now + (1 - tokens) / rate`` rounds to the clock's step (``1.2e-10`` s at ``1e6``),
    which at 100 permits a second leaves a refill up to ``6e-9`` of a token short: the time it names must
    be one whose refill gives the whole token, or the caller is refused again, told to come back
    in ``1.5e-11`` s. ``burst=2`` keeps a token bucket below its size, so each refill counts.
    """
    clock = FakeClock(start)
    limiter = limiter_of(clock, name=f"days-{algorithm}-{rate:g}", rate=rate, burst=2, algorithm=algorithm)
    refused = []
    for i in range(50):
        while limiter.try_acquire():  # none left now
            pass
        with pytest.raises(RateLimitedError) as caught:
            limiter.call_sync(lambda: None)
        assert caught.value.retry_after > 0
        clock.advance(caught.value.retry_after)
        if not limiter.try_acquire():
            refused.append(i)
    assert refused == []


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize(("rate", "step"), [(10.0, 0.1), (5.0, 0.2), (3.0, 1 / 3), (100.0, 0.01), (2.5, 0.4)])
def test_a_caller_paced_at_the_rate_is_always_admitted(algorithm, rate, step):
    """One call every ``1 / rate`` seconds is exactly the rate: none is refused by the clock's rounding."""
    clock = FakeClock(1000.0)
    limiter = limiter_of(clock, rate=rate, burst=1, algorithm=algorithm)
    refused = []
    for i in range(300):
        if not limiter.try_acquire():
            refused.append(i)
        clock.advance(step)
    assert refused == []
    assert limiter.get_stats()["admitted"] == 300


async def test_calls_take_permits_and_pass_outcomes_through(clock, driver):
    """A call spends a permit whatever its outcome: a failure propagates unchanged and is not refunded."""
    limiter = limiter_of(clock, rate=1.0, burst=2)
    assert await call(limiter, driver) == "ok"

    def broken():
        raise ConnectionError("down")

    async def broken_async():
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        if driver == "async":
            await limiter.call(broken_async)
        else:
            limiter.call_sync(broken)
    assert limiter.available == 0.0
    assert limiter.get_stats()["admitted"] == 2


# --- rejections ----------------------------------------------------------------------------


async def test_rejection_is_immediate_with_retry_after(clock, driver):
    """No permit and no waiting: RateLimitedError at once, fn not called, retry_after = when one is due."""
    limiter = limiter_of(clock, rate=4.0, burst=1)
    calls: list[str] = []
    await call(limiter, driver, calls=calls)
    clock.advance(0.05)
    with pytest.raises(RateLimitedError) as raised:
        await call(limiter, driver, calls=calls)
    error = raised.value
    assert calls == ["ok"]
    assert isinstance(error, ExecutionRejectedError)
    assert (error.name, error.retry_after) == ("api", pytest.approx(0.2))
    assert str(error) == "rate limiter 'api' has no permit free; the next is due in 0.200 s"
    assert clock.sleeps == []
    assert limiter.get_stats()["rejected"] == 1


def test_rate_limited_error_pickles_with_its_fields():
    """The error keeps its constructor's arguments, as every rejection does."""
    error = pickle.loads(pickle.dumps(RateLimitedError("api", 1.5)))
    assert (error.name, error.retry_after, error.args) == ("api", 1.5, ("api", 1.5))


async def test_rejections_are_reported_as_events(clock, driver, recorder):
    """Each rejected call reports CALL_REJECTED with reason rate_limited; try_acquire reports nothing."""
    limiter = limiter_of(clock, rate=1.0, burst=1)
    await call(limiter, driver)
    with pytest.raises(RateLimitedError):
        await call(limiter, driver)
    assert not limiter.try_acquire()
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected(reason="rate_limited")]
    [source] = recorder.sources(Event.CALL_REJECTED)
    assert (source.kind, source.name) == ("rate_limiter", "api")


# --- the ways it is used -------------------------------------------------------------------


async def test_as_strategy_shares_permits_and_reports_with_its_pipeline(clock, recorder):
    """A pipeline link of the limiter takes permits from the same bucket, named for its pipeline."""
    limiter = limiter_of(clock, rate=1.0, burst=2)
    pipeline = PipelineBuilder("checkout", clock=clock).add(limiter.as_strategy("checkout")).build()

    async def fn():
        return 1

    assert await pipeline.execute(fn) == 1
    assert limiter.try_acquire()
    with pytest.raises(RateLimitedError):
        await pipeline.execute(fn)
    assert pipeline.stats.rejected == 1
    [source] = recorder.sources(Event.CALL_REJECTED)
    assert (source.kind, source.name, source.pipeline) == ("rate_limiter", "api", "checkout")


async def test_protect_picks_the_driver_and_keeps_the_signature(clock):
    """protect wraps async and sync functions; both draw on one bucket."""
    limiter = limiter_of(clock, rate=1.0, burst=2)

    @limiter.protect
    async def fetch(user_id: int) -> str:
        """Fetch a user."""
        return f"user {user_id}"

    @limiter.protect
    def parse(raw: str) -> str:
        return raw.upper()

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch a user."
    assert await fetch(1) == "user 1"
    assert parse("x") == "X"
    with pytest.raises(RateLimitedError):
        await fetch(2)
    with pytest.raises(TypeError, match=r"^RateLimiter\.protect"):
        limiter.protect(42)  # type: ignore[call-overload]


async def test_guard_takes_a_permit_before_the_block(clock):
    """with/async with guard() take a permit (or raise before the block runs)."""
    limiter = limiter_of(clock, rate=1.0, burst=2)
    ran = []
    with limiter.guard():
        ran.append("sync")
    async with limiter.guard():
        ran.append("async")
    with pytest.raises(RateLimitedError):
        async with limiter.guard():
            ran.append("never")
    with pytest.raises(RateLimitedError):
        with limiter.guard():
            ran.append("never")
    assert ran == ["sync", "async"]


async def test_a_kept_guard_serves_one_block_at_a_time(clock):
    """One guard serves block after block, each taking its own permit; not two blocks at once."""
    limiter = limiter_of(clock, rate=1.0, burst=3)
    guard = limiter.guard()
    with guard:
        pass
    async with guard:
        pass
    with guard, pytest.raises(RuntimeError, match="one block at a time"), guard:
        pass  # pragma: no cover - the second entry raises
    assert limiter.get_stats()["admitted"] == 3


async def test_guard_waits_for_its_permit(clock):
    """A guard waits like a call, for exactly the time its permit needs."""
    limiter = limiter_of(clock, rate=2.0, burst=1, max_wait=1.0)
    with limiter.guard():
        pass
    async with limiter.guard():
        at = clock.now()
    assert clock.sleeps == [0.5]
    assert at == 1000.5


async def test_retry_does_not_retry_a_rate_limited_call(clock, driver):
    """RateLimitedError is a rejection: a retry around the limiter gives up at once."""
    limiter = limiter_of(clock, rate=1.0, burst=1)
    retry = Retry("r", RetryPolicy(max_attempts=3, initial_delay=0.1, jitter=Jitter.NONE), clock=clock)
    pipeline = PipelineBuilder("p", clock=clock).add(retry.as_strategy()).add(limiter.as_strategy()).build()
    calls: list[int] = []

    async def fn_async():
        calls.append(1)
        return 1

    def fn_sync():
        calls.append(1)
        return 1

    run = pipeline.execute if driver == "async" else pipeline.execute_sync
    fn = fn_async if driver == "async" else fn_sync
    result = run(fn)
    assert (await result if driver == "async" else result) == 1
    with pytest.raises(RateLimitedError):
        result = run(fn)
        if driver == "async":
            await result
    assert calls == [1]
    assert clock.sleeps == []
    assert limiter.get_stats()["rejected"] == 1


async def test_a_fallback_answers_a_rate_limited_call(clock, driver):
    """A fallback outside the limiter answers its rejection."""
    limiter = limiter_of(clock, rate=1.0, burst=1)
    fallback = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="busy"))
    pipeline = (
        PipelineBuilder("p", clock=clock).add(fallback.as_strategy()).add(limiter.as_strategy()).build()
    )
    answers = []
    for _ in range(2):
        if driver == "async":

            async def fn():
                return "fresh"

            answers.append(await pipeline.execute(fn))
        else:
            answers.append(pipeline.execute_sync(lambda: "fresh"))
    assert answers == ["fresh", "busy"]
    assert pipeline.stats.fallback == 1


async def test_a_manager_places_it_as_an_extra_strategy(clock):
    """ExtraStrategy(limiter.as_strategy, outside="retry"): a rejection is neither retried nor called."""
    limiter = limiter_of(clock, rate=1.0, burst=1)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name="search",
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.1, jitter=Jitter.NONE),
        extra_strategies=(ExtraStrategy(limiter.as_strategy, outside="retry"),),
    )

    async def search():
        return "hits"

    assert await manager.execute_with_resilience(search, config) == "hits"
    with pytest.raises(RateLimitedError):
        await manager.execute_with_resilience(search, config)
    stats = manager.get_resilience_statistics()
    [extra] = stats["extra_strategies"]["search"]
    assert (extra["kind"], extra["name"], extra["stats"]["rejected"]) == ("rate_limiter", "api", 1)


async def test_get_stats_and_repr(clock):
    """The snapshot has every count; repr shows the limits."""
    limiter = limiter_of(clock, name="s", rate=2.0, burst=2, algorithm="sliding_window")
    await call(limiter, "async")
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.get_stats() == {
        "name": "s",
        "algorithm": "sliding_window",
        "rate": 2.0,
        "burst": 2,
        "admitted": 2,
        "rejected": 1,
        "waited": 0,
        "cancelled": 0,
        "waiting": 0,
        "available": 0.0,
    }
    assert repr(limiter) == "RateLimiter('s', rate=2/s, burst=2, sliding_window)"
    assert limiter.waiting == 0


# --- keys ----------------------------------------------------------------------------------


def test_each_key_has_its_own_limiter(clock):
    """Keys do not share permits; one key gets the same limiter back; telemetry never sees the key."""
    per_tenant = RateLimiter.per_key("tenant_api", RateLimiterConfig(rate=1.0, burst=1), clock=clock)
    assert isinstance(per_tenant, KeyedRateLimiter)
    alice, bob = per_tenant.for_key("alice"), per_tenant.for_key("bob")
    assert alice is per_tenant.for_key("alice")
    assert alice is not bob
    assert alice.try_acquire()
    assert not per_tenant.for_key("alice").try_acquire()
    assert bob.try_acquire()
    assert alice.name == bob.name == "tenant_api"
    assert alice.telemetry.source.name == "tenant_api"
    assert alice.config is per_tenant.config
    assert (per_tenant.name, per_tenant.max_keys, len(per_tenant)) == ("tenant_api", DEFAULT_MAX_KEYS, 2)
    assert repr(per_tenant) == "KeyedRateLimiter('tenant_api', keys=2/1024)"


def test_keys_with_one_text_share_one_limiter(clock):
    """A key is its text, ``str(key)``, with a store or without: ``1`` and ``"1"`` are one budget.

    A store names each key's budget by its text, so with a store ``1`` and ``"1"`` shared a
    budget, while without one they had two: a key's limit depended on where its state was kept.
    """
    per_key = RateLimiter.per_key("texts", RateLimiterConfig(rate=1.0, burst=1), clock=clock)
    assert per_key.for_key(1).try_acquire()
    assert per_key.for_key("1") is per_key.for_key(1)
    assert not per_key.for_key("1").try_acquire()
    assert per_key.for_key(1.0).try_acquire()  # "1.0": another key
    assert len(per_key) == 2


def test_ten_thousand_keys_through_a_hundred_stay_bounded(clock):
    """10 000 keys through max_keys=100 keep at most 100 live; the rest are evicted, none leak."""
    per_key = RateLimiter.per_key("ip", RateLimiterConfig(rate=1.0, burst=1), max_keys=100, clock=clock)
    for client in range(10_000):
        assert per_key.for_key(client).try_acquire()
    gc.collect()
    assert len(per_key) <= 100
    assert per_key.get_stats() == {"keys": len(per_key), "max_keys": 100, "evicted": 10_000 - len(per_key)}


def test_a_long_key_s_limiter_refused_a_copy_names_the_key_cut(clock):
    """A 5,000-character key is named in a copy's refusal as its ``resilience.key`` is: cut, bounded."""
    per_key = RateLimiter.per_key("ip", RateLimiterConfig(rate=1.0, burst=1), clock=clock)
    key = "k" * 5_000
    with pytest.raises(TypeError, match=r"cannot be copied") as raised:
        pickle.dumps(per_key.for_key(key))
    shown = repr(key_attribute(key))
    assert f"It is the limiter of key {shown} of keyed rate limiter 'ip'" in str(raised.value)
    assert f"keyed.for_key({shown})" in str(raised.value)
    assert len(str(raised.value)) < 3 * MAX_ATTRIBUTE_LENGTH + 400


def test_an_evicted_key_s_limiter_kept_by_a_caller_follows_its_key(clock):
    """A key's limiter kept past the key's eviction runs its calls, blocks and ``try_acquire`` on the key's new one.

    The key's next use makes a new limiter; the kept one takes its permits from that one's
    bucket (``burst=1``: one permit at one instant across both) and counts there, never raising
    (it raised ``NotInUseError``: a call after another thread's new key evicted the key failed).
    """
    per_key = RateLimiter.per_key("ip", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    kept = per_key.for_key("a")
    assert kept.try_acquire()
    per_key.for_key("b")  # evicts "a"
    assert per_key.get_stats()["evicted"] == 1
    assert kept.try_acquire()  # "a"'s new limiter, made for it (a full bucket again, documented)
    current = per_key.for_key("a")
    assert current is not kept
    assert not current.try_acquire()  # the one permit of the instant is taken
    with pytest.raises(RateLimitedError):
        kept.call_sync(lambda: "never")
    with pytest.raises(RateLimitedError), kept.guard():
        pytest.fail("the block ran")
    clock.advance(1.0)
    assert kept.call_sync(lambda: "ran") == "ran"
    assert not current.try_acquire()
    assert kept._own_stats()["admitted"] == 1  # its own: what it took before the eviction
    stats = current.get_stats()
    assert (stats["admitted"], stats["rejected"]) == (2, 4)
    assert kept.get_stats() == stats  # what it reads is the key's limiter in use too
    with pytest.raises(
        TypeError, match=r"cannot be copied.* It is the limiter of key 'a' of keyed rate limiter 'ip'"
    ):
        pickle.dumps(kept)


@pytest.mark.parametrize("kept_as", ["protect", "guard", "async_protect", "async_guard", "call"])
async def test_what_an_evicted_key_s_limiter_protects_takes_from_the_key_s_one_bucket(clock, kept_as):
    """A function protected (or a guard made) by a key's limiter, kept past the key's eviction.

    The limiter itself was dropped, so ``for_key`` made the key a new one while the function
    took permits from the old bucket: key "a" (``burst=1``) admitted 2 at one instant. It runs
    on the key's limiter in use now: refused while its one permit is taken, then admitted there.
    """
    per_key = RateLimiter.per_key("two", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    ran = []

    async def ran_async():
        ran.append(1)

    kept = per_key.for_key("a")
    protected, guard = kept.protect(lambda: ran.append(1)), kept.guard()
    protected_async = kept.protect(ran_async)
    if kept_as != "call":
        del kept
    per_key.for_key("b")  # evicts "a"
    gc.collect()

    async def use():
        if kept_as == "protect":
            protected()
        elif kept_as == "async_protect":
            await protected_async()
        elif kept_as == "call":
            await kept.call(ran_async)
        elif kept_as == "guard":
            with guard:
                ran.append(1)
        else:
            async with guard:
                ran.append(1)

    assert per_key.for_key("a").try_acquire()  # the key's one permit
    with pytest.raises(RateLimitedError):
        await use()
    assert ran == []
    clock.advance(1.0)
    await use()
    assert ran == [1]
    stats = per_key.for_key("a").get_stats()
    assert (stats["admitted"], stats["rejected"]) == (2, 1)


def test_a_kept_limiter_follows_its_key_evicted_again_while_it_is_routed(clock, monkeypatch):
    """The key's limiter a kept one is routed to, itself evicted before the use counts into it: routed on.

    Another thread's new key may evict it between the ``for_key`` the route asks and the use:
    the use takes the key's limiter in use after that, never one no longer the key's.
    """
    per_key = RateLimiter.per_key("again", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    kept = per_key.for_key("a")
    per_key.for_key("b")  # evicts "a"
    for_key, routed = KeyedRateLimiter.for_key, []

    def racing(self, key):
        limiter = for_key(self, key)
        if not routed:
            routed.append(limiter)
            for_key(self, "c")  # evicts the new "a", idle
        return limiter

    monkeypatch.setattr(KeyedRateLimiter, "for_key", racing)
    assert kept.try_acquire()
    current = per_key.for_key("a")
    assert current is not routed[0]
    assert current is not kept
    assert not current.try_acquire()
    assert current.get_stats()["admitted"] == 1
    assert routed[0]._own_stats()["admitted"] == 0  # its own bucket: it gave nothing


def test_a_key_s_limiter_in_use_outliving_its_keyed_limiter_keeps_its_own_bucket(clock):
    """Dropped, the keyed limiter leaves the limiter its key used, kept by a caller, as the key's only
    one (no evicted limiter of the key was kept, or the keyed limiter would live): it runs on its
    own bucket, and reads it."""
    per_key = RateLimiter.per_key("gone", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    kept = per_key.for_key("a")
    assert kept.try_acquire()
    keyed = weakref.ref(per_key)
    del per_key
    gc.collect()
    assert keyed() is None
    assert not kept.try_acquire()
    assert kept.available == 0.0
    clock.advance(1.0)
    assert kept.call_sync(lambda: "ran") == "ran"
    assert kept.get_stats() == kept._own_stats()
    assert (kept.get_stats()["admitted"], kept.get_stats()["rejected"]) == (2, 1)


def test_an_evicted_key_s_limiter_kept_by_a_caller_reads_the_key_s_limiter_in_use(clock):
    """Kept past its key's eviction, a key's limiter read its own old bucket: ``available`` 0.0 and
    ``admitted`` 1, while the key's limiter in use, whose bucket its calls take permits from, was
    full and had admitted none. Its ``available`` and ``get_stats()`` are the one in use's, as its
    calls are (the key made a limiter if it had none, as a call does)."""
    per_key = RateLimiter.per_key("reads", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    kept = per_key.for_key("a")
    assert kept.try_acquire()
    per_key.for_key("b")  # evicts "a"
    assert (kept.available, kept.get_stats()["admitted"]) == (1.0, 0)  # a full bucket, as a call finds
    current = per_key.for_key("a")
    assert current is not kept
    assert current.try_acquire()
    assert kept.available == current.available == 0.0
    assert kept.get_stats() == current.get_stats()
    assert kept.get_stats()["admitted"] == 1
    assert per_key.for_key("a") is current  # a read of a key in use makes nothing


async def test_an_evicted_key_s_limiter_kept_by_a_caller_counts_the_key_s_waiters():
    """``waiting`` of a limiter kept past its key's eviction counted the waiters of its old bucket
    (none): a caller waiting on the key's limiter in use is counted now."""
    config = RateLimiterConfig(rate=0.01, burst=1, max_wait=1000.0)  # the system clock: it waits
    per_key = RateLimiter.per_key("waiters", config, max_keys=1)
    kept = per_key.for_key("a")
    per_key.for_key("b")  # evicts "a"
    current = per_key.for_key("a")
    assert current.try_acquire()
    waiter = asyncio.create_task(current.call(asyncio.sleep, 0))
    while not current.waiting:
        await asyncio.sleep(0)
    try:
        assert kept.waiting == 1
        assert kept.get_stats()["waiting"] == 1
    finally:
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


def test_a_kept_limiter_outliving_its_keyed_limiter_gives_its_key_no_second_bucket(clock):
    """A key's limiter kept past its key's eviction keeps its keyed limiter, whose key's limiter in
    use it runs on: dropped, the keyed limiter left it running on its own old bucket beside the
    key's limiter in use, kept by another caller (two permits at one instant at ``burst=1``)."""
    per_key = RateLimiter.per_key("gone-twice", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    evicted = per_key.for_key("a")
    per_key.for_key("b")  # evicts "a"
    in_use = per_key.for_key("a")  # evicts "b"
    keyed = weakref.ref(per_key)
    del per_key
    gc.collect()
    assert keyed() is not None  # kept by the evicted limiter
    assert evicted.try_acquire()
    assert not in_use.try_acquire()  # the one permit of the instant is taken
    assert evicted.get_stats()["admitted"] == in_use.get_stats()["admitted"] == 1
    del evicted
    gc.collect()
    assert keyed() is None  # only its evicted limiters keep it


async def test_a_block_of_a_key_s_limiter_holds_the_key_until_it_ends(clock):
    """A ``guard()`` block (or a call) of a key's limiter holds the key: not evicted while it runs.

    The key was idle with a permit taken and its block running: evicted, its next ``for_key``
    got a full bucket beside the running block's. The block's permit counts in the key's limiter.
    """
    per_key = RateLimiter.per_key("block", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    limiter = per_key.for_key("a")
    async with limiter.guard():
        per_key.for_key("b")  # past max_keys, but "a" is busy
        assert per_key.get_stats() == {"keys": 2, "max_keys": 1, "evicted": 0}
        assert per_key.for_key("a") is limiter  # (a use past max_keys: "b", idle, goes)
        assert not per_key.for_key("a").try_acquire()
    assert limiter.get_stats()["admitted"] == 1
    per_key.for_key("b")  # "a" is idle now: evicted
    assert per_key.get_stats() == {"keys": 1, "max_keys": 1, "evicted": 2}
    assert limiter.try_acquire()  # on "a"'s new limiter (a full bucket)
    assert per_key.for_key("a") is not limiter
    assert limiter.get_stats()["admitted"] == 1


def test_a_link_of_a_key_s_limiter_takes_from_the_key_s_one_bucket(clock):
    """A link of a key's limiter (``as_strategy``) in a pipeline of one's own: one bucket for the key.

    The key was evicted while the link lived (its limiter idle), the key's next ``for_key`` made
    a second bucket, and the link took its permits from the first, uncounted in the export:
    two permits at one instant at ``burst=1``. A live link keeps the key; one made of a limiter
    kept past its key's eviction is the key's limiter in use's.
    """
    per_key = RateLimiter.per_key("link", RateLimiterConfig(rate=1.0, burst=1), max_keys=1, clock=clock)
    kept = per_key.for_key("a")
    pipeline = PipelineBuilder("own", clock=clock).add(kept.as_strategy("own")).build()
    per_key.for_key("b")  # past max_keys, but a link of "a"'s limiter lives
    assert per_key.get_stats()["evicted"] == 0
    assert per_key.for_key("a") is kept
    assert pipeline.execute_sync(lambda: "ran") == "ran"
    assert not per_key.for_key("a").try_acquire()  # the one permit of the instant is taken
    assert kept.get_stats()["admitted"] == 1
    del pipeline
    gc.collect()
    per_key.for_key("b")  # "a" is idle now: evicted
    assert per_key.get_stats()["evicted"] >= 1
    assert per_key._keys.get("a") is None
    # A link made of the kept limiter, once its key was evicted, is the key's limiter in use's.
    link = kept.as_strategy("own")
    current = per_key.for_key("a")
    assert current is not kept
    assert current.try_acquire()
    with pytest.raises(RateLimitedError):
        PipelineBuilder("own", clock=clock).add(link).build().execute_sync(lambda: "never")
    assert current.get_stats()["rejected"] == 1


class _Decided:
    """A store's lock whose next holder finds the eviction deciding about ``hold`` decided: kept."""

    def __init__(self, lock, hold):
        self._lock, self._hold = lock, hold

    def acquire(self, *args, **kwargs):
        taken = self._lock.acquire(*args, **kwargs)
        self._hold.live = True  # what the eviction decided under the lock: the key stays
        return taken

    def release(self):
        self._lock.release()

    def __enter__(self):
        self.acquire()

    def __exit__(self, *exc):
        self.release()


def test_a_key_an_eviction_is_deciding_about_is_used_once_it_is_kept(clock):
    """A key's limiter used while an eviction decides (its key marked evicted for an instant) waits for it.

    The store marks a key evicted before it looks at the calls running in it; a call that found
    it so was refused although the eviction then kept the key (busy, or within max_keys).
    """
    per_key = RateLimiter.per_key("deciding", RateLimiterConfig(rate=1.0, burst=1), clock=clock)
    limiter = per_key.for_key("a")
    hold = limiter.hold
    hold.live = False  # an eviction deciding, under the store's lock
    per_key._keys._lock = _Decided(per_key._keys._lock, hold)
    assert limiter.try_acquire()
    assert per_key.for_key("a") is limiter


def test_per_key_validates_its_arguments(clock):
    """A bad name, config, cap or clock is refused, naming KeyedRateLimiter.<field>."""
    config = RateLimiterConfig(rate=1.0)
    with pytest.raises(ValueError, match=r"^KeyedRateLimiter\.max_keys must be >= 1, got 0$"):
        RateLimiter.per_key("k", config, max_keys=0)
    with pytest.raises(ValueError, match=r"^KeyedRateLimiter\.name must be"):
        RateLimiter.per_key(" ", config)
    with pytest.raises(TypeError, match=r"^KeyedRateLimiter\.config must be a RateLimiterConfig"):
        RateLimiter.per_key("k", {"rate": 1.0})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^KeyedRateLimiter\.clock must be"):
        RateLimiter.per_key("k", config, clock=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RateLimiter.per_key("k", config).for_key([])  # type: ignore[arg-type]


def test_an_unhashable_key_is_refused_naming_the_key(clock: FakeClock) -> None:
    """``for_key([])`` names ``KeyedRateLimiter.for_key.key``, as a policy handle's ``for_key`` does.

    It let out the dict's bare "unhashable type: 'list'", naming neither the method nor the key.
    """
    per_key = RateLimiter.per_key("unhashable", RateLimiterConfig(rate=1.0), clock=clock)
    with pytest.raises(
        TypeError, match=r"^KeyedRateLimiter\.for_key\.key must be hashable, got \[\] \(list\)"
    ):
        per_key.for_key([])  # type: ignore[arg-type]
    assert len(per_key) == 0


def test_a_none_key_is_refused_as_a_policys_is(clock: FakeClock) -> None:
    """``for_key(None)`` is refused naming the key, as ``PolicyHandle.for_key(None)`` is.

    It was taken as the key ``"None"``: every caller whose tenant was missing shared one budget.
    """
    per_key = RateLimiter.per_key("none", RateLimiterConfig(rate=1.0), clock=clock)
    with pytest.raises(
        TypeError, match=r"^KeyedRateLimiter\.for_key\.key must be a hashable value other than None, got None"
    ):
        per_key.for_key(None)  # type: ignore[type-var]
    assert len(per_key) == 0
    assert per_key.for_key("None") is per_key.for_key("None")  # the text "None" is a key as any


def test_a_dropped_keyed_limiter_is_freed_by_reference_counting(clock: FakeClock) -> None:
    """A keyed limiter a program stops using leaves at once, with its keys' limiters and executions.

    Its store held its own bound methods (``on_evict``, ``on_revive``): a cycle that only the
    cyclic garbage collector frees, so with the collector off (a pre-fork server that freezes it)
    the dropped limiter stayed alive, and its keys' executions stayed registered and exported.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        per_key = RateLimiter.per_key(
            "dropped", RateLimiterConfig(rate=1.0, burst=2), max_keys=1, clock=clock
        )
        assert per_key.for_key("a").call_sync(lambda: 1) == 1
        per_key.for_key("b").call_sync(lambda: 2)  # evicts "a"
        watched = [weakref.ref(per_key), weakref.ref(per_key.for_key("b"))]
        del per_key
        assert [ref() for ref in watched] == [None, None]
        assert not [p for p in PIPELINES.items() if p.name == "dropped"]
        assert not [r for r in RATE_LIMITERS.items() if r.name == "dropped"]
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()
