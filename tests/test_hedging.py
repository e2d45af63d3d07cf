"""Hedging: its config, the three modes, what an acceptable outcome is, and which function each attempt calls."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import time
from datetime import timedelta

import pytest
from hedging_support import HANG, Dependency, Gate

from otel_resilience import (
    Hedging,
    HedgingConfig,
    PercentileDelay,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
)
from otel_resilience.engine.events import Event
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.patterns.hedging import DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, MAX_SAMPLES, MODES
from otel_resilience.testing import AttemptRecorder, EventRecorder, FakeClock


def hedging(clock: FakeClock | None = None, **config: object) -> Hedging:
    """A hedging named ``h`` with ``HedgingConfig(**config)`` (on ``clock`` when given)."""
    if clock is None:
        return Hedging("h", HedgingConfig(**config))  # type: ignore[arg-type]
    return Hedging("h", HedgingConfig(**config), clock=clock)  # type: ignore[arg-type]


# --- config --------------------------------------------------------------------------------


def test_defaults_are_pinned() -> None:
    """Two attempts in latency mode, every error set aside, every result accepted, no budget."""
    config = HedgingConfig(delay=0.1)
    assert (config.max_attempts, config.mode, config.actions) == (2, "latency", None)
    assert (config.hedge_on, config.hedge_on_result, config.budget) == ((Exception,), None, None)
    assert (DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, MODES) == (2, 10, ("latency", "parallel", "fallback"))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "HedgingConfig.delay must be seconds > 0 or a function"),
        ({"delay": 0}, ValueError, "HedgingConfig.delay must be > 0 seconds, got 0"),
        ({"delay": -1.0}, ValueError, "HedgingConfig.delay must be > 0 seconds"),
        ({"delay": float("nan")}, ValueError, "HedgingConfig.delay must be a finite duration"),
        ({"delay": "1"}, TypeError, "HedgingConfig.delay must be a duration in seconds"),
        ({"mode": "parallel", "delay": 1.0}, ValueError, "HedgingConfig.delay must be None in 'parallel'"),
        ({"mode": "fallback", "delay": 1.0}, ValueError, "HedgingConfig.delay must be None in 'fallback'"),
        ({"mode": "hedge"}, ValueError, "HedgingConfig.mode must be 'latency', 'parallel' or 'fallback'"),
        ({"mode": 1}, TypeError, "HedgingConfig.mode must be 'latency'"),
        ({"mode": "parallel", "max_attempts": 0}, ValueError, "HedgingConfig.max_attempts must be"),
        ({"mode": "parallel", "max_attempts": 11}, ValueError, "HedgingConfig.max_attempts must be <= 10"),
        (
            {"mode": "parallel", "max_attempts": 2**63},
            ValueError,
            "HedgingConfig.max_attempts must be <= 10,",
        ),
        ({"mode": "parallel", "max_attempts": True}, TypeError, "HedgingConfig.max_attempts"),
        (
            {"mode": "parallel", "max_attempts": 2, "actions": (print, print)},
            ValueError,
            "HedgingConfig.actions must be at most max_attempts - 1 (1) functions",
        ),
        ({"mode": "parallel", "actions": print}, TypeError, "HedgingConfig.actions must be a tuple"),
        ({"mode": "parallel", "actions": (1,)}, TypeError, "HedgingConfig.actions[0] must be callable"),
        ({"mode": "parallel", "hedge_on": 1}, TypeError, "HedgingConfig.hedge_on must be exception types"),
        (
            {"mode": "parallel", "hedge_on": BaseException},
            ValueError,
            "HedgingConfig.hedge_on must be Exception",
        ),
        (
            {"mode": "parallel", "hedge_on_result": 1},
            TypeError,
            "HedgingConfig.hedge_on_result must be callable",
        ),
        ({"mode": "parallel", "budget": 1}, TypeError, "HedgingConfig.budget must be a RetryBudget"),
        (
            {"mode": "parallel", "budget": RetryBudget},
            TypeError,
            "HedgingConfig.budget must be a RetryBudget",
        ),
        ({"delay": PercentileDelay}, TypeError, "HedgingConfig.delay must be seconds > 0 or a function"),
        # Called as delay() before each hedge: one that needs an argument failed every call, with
        # Python's "missing 1 required positional argument", naming no field.
        ({"delay": lambda attempt: 0.1}, TypeError, "HedgingConfig.delay must be callable as delay()"),
        (
            {"mode": "fallback", "hedge_on": ()},
            ValueError,
            "HedgingConfig.hedge_on must be at least one exception type, a predicate, or hedge_on_result set",
        ),
    ],
)
def test_bad_config_names_the_field(kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    """Every bad field raises naming HedgingConfig.<field>; nothing is clamped or ignored."""
    with pytest.raises(error) as caught:
        HedgingConfig(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value).startswith(message), str(caught.value)


def test_no_error_set_aside_is_kept_where_a_delay_or_a_result_still_hedges() -> None:
    """hedge_on=() (every error is the answer) stands where something else starts a hedge."""
    assert HedgingConfig(delay=0.1, hedge_on=()).hedge_on == ()
    assert HedgingConfig(mode="parallel", hedge_on=[]).hedge_on == ()  # type: ignore[arg-type]
    config = HedgingConfig(mode="fallback", hedge_on=(), hedge_on_result=lambda result: result is None)
    assert config.hedge_on == ()


def test_config_normalises_what_it_accepts() -> None:
    """A timedelta delay is stored as seconds, a list of actions as a tuple; a predicate hedge_on is kept."""
    config = HedgingConfig(delay=timedelta(milliseconds=50), max_attempts=3, actions=[print])  # type: ignore[arg-type]
    assert config.delay == 0.05
    assert config.actions == (print,)
    assert HedgingConfig(delay=0.1, hedge_on=ConnectionError).hedge_on == (ConnectionError,)
    predicate = HedgingConfig(delay=0.1, hedge_on=callable)
    assert predicate.hedge_on is callable
    assert HedgingConfig(delay=PercentileDelay(0.05)).delay.__class__ is PercentileDelay


async def region(*args: object) -> str:
    """An action standing for another region."""
    return "other region"


def test_max_attempts_left_out_makes_room_for_every_action() -> None:
    """Left out, ``max_attempts`` is 2 or one more than the ``actions`` given; written, it is checked.

    ``HedgingConfig(mode="fallback", actions=(west, east))`` was refused for a ``max_attempts``
    never written (``actions must be at most max_attempts - 1 (1) functions``).
    """
    config = HedgingConfig(mode="fallback", actions=(region, region))
    assert config.max_attempts == 3
    assert "max_attempts=3," in repr(config)
    assert config == HedgingConfig(mode="fallback", max_attempts=3, actions=(region, region))
    assert hash(config) == hash(HedgingConfig(mode="fallback", max_attempts=3, actions=(region, region)))
    assert HedgingConfig(mode="fallback", actions=(region,)).max_attempts == DEFAULT_MAX_ATTEMPTS
    assert HedgingConfig(mode="parallel").max_attempts == DEFAULT_MAX_ATTEMPTS
    assert HedgingConfig(delay=0.1, actions=[region] * 9).max_attempts == MAX_ATTEMPTS_LIMIT
    with pytest.raises(ValueError, match=r"^HedgingConfig\.actions must be at most max_attempts - 1 \(9\)"):
        HedgingConfig(delay=0.1, actions=[region] * 10)
    # dataclasses.replace derives it again from the actions it gives; a written one stays.
    assert dataclasses.replace(config, actions=None).max_attempts == DEFAULT_MAX_ATTEMPTS
    assert dataclasses.replace(config, actions=(region,) * 4).max_attempts == 5
    assert Hedging("h", config).get_stats()["max_attempts"] == 3
    with pytest.raises(ValueError, match=r"^HedgingConfig\.actions must be at most max_attempts - 1 \(2\)"):
        dataclasses.replace(HedgingConfig(mode="parallel", max_attempts=3), actions=(region,) * 3)


def test_hedging_refuses_a_missing_config() -> None:
    """The latency delay has no safe default: Hedging(name) without a config is a TypeError."""
    with pytest.raises(TypeError, match=r"Hedging.config must be a HedgingConfig"):
        Hedging("h", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'config'"):
        Hedging("h")  # type: ignore[call-arg] # required for type checkers too
    with pytest.raises(TypeError, match=r"Hedging.deposit must be a bool"):
        Hedging("h", HedgingConfig(delay=0.1), deposit=1)  # type: ignore[arg-type]


# --- latency mode ----------------------------------------------------------------------------


async def test_a_fast_original_starts_no_hedge() -> None:
    """The original answers before the delay: one call, no hedge, the original wins."""
    dependency = Dependency("fast")
    h = hedging(delay=10.0)
    assert await h.call(dependency) == "fast"
    assert len(dependency.calls) == 1
    stats = h.get_stats()
    assert (stats["hedges"], stats["original_wins"], stats["hedge_wins"]) == (0, 1, 0)


async def test_a_slow_original_is_hedged_after_the_delay_and_cancelled_when_the_hedge_wins(
    clock: FakeClock,
) -> None:
    """After `delay` on the hedging's clock a hedge starts; it answers; the original is cancelled and awaited."""
    dependency = Dependency(HANG, "hedged")
    h = hedging(clock, delay=0.05)
    assert await h.call(dependency, 7, key="k") == "hedged"
    assert clock.sleeps == [0.05]
    assert dependency.calls == [((7,), {"key": "k"}), ((7,), {"key": "k"})]
    assert dependency.cancelled == [0]  # the original, cancelled ...
    assert sorted(dependency.finished) == [0, 1]  # ... and awaited before the call returned
    assert h.get_stats()["hedge_wins"] == 1


async def test_a_failed_attempt_starts_the_next_at_once_without_waiting_the_delay() -> None:
    """In latency mode an unacceptable outcome hedges at once: a 60 s delay is never waited."""
    dependency = Dependency(ConnectionError("down"), "second")
    h = hedging(delay=60.0)
    started = time.monotonic()
    assert await h.call(dependency) == "second"
    assert time.monotonic() - started < 30.0
    assert h.get_stats()["hedges"] == 1


async def test_attempts_start_one_delay_apart_up_to_max_attempts(clock: FakeClock) -> None:
    """max_attempts=3: two hedges, one delay after the other; all three run at once; the third wins."""
    dependency = Dependency(HANG, HANG, "third")
    h = hedging(clock, delay=0.2, max_attempts=3)
    assert await h.call(dependency) == "third"
    assert clock.sleeps == [0.2, 0.2]
    assert dependency.peak == 3
    assert sorted(dependency.cancelled) == [0, 1]


async def test_no_attempt_starts_past_max_attempts(clock: FakeClock) -> None:
    """With every attempt hanging, exactly max_attempts run; the caller's timeout then cancels them all."""
    dependency = Dependency(HANG)
    h = hedging(clock, delay=0.01, max_attempts=3)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(h.call(dependency), 0.2)
    assert len(dependency.calls) == 3
    assert sorted(dependency.cancelled) == [0, 1, 2]


async def test_a_delay_function_is_asked_before_each_hedge(clock: FakeClock) -> None:
    """A callable delay is called after each start; its value is the next hedge's delay."""
    delays = iter([0.5, 0.25])
    dependency = Dependency(HANG, HANG, "third")
    h = hedging(clock, delay=lambda: next(delays), max_attempts=3)
    assert await h.call(dependency) == "third"
    assert clock.sleeps == [0.5, 0.25]


@pytest.mark.parametrize(
    ("returned", "error", "message"),
    [
        ("soon", TypeError, "delay returned 'soon'"),
        (-1.0, ValueError, "delay returned -1.0"),
        pytest.param(
            10**400, ValueError, "delay returned .*; seconds must be finite", id="no-float-holds-it"
        ),
    ],
)
async def test_a_delay_function_that_returns_no_seconds_fails_the_execution(
    returned: object, error: type[Exception], message: str
) -> None:
    """What the delay function returns is checked when it is asked (as the original starts): no task is left."""
    dependency = Dependency(HANG)
    h = hedging(delay=lambda: returned)
    with pytest.raises(error, match=message):
        await h.call(dependency)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert h.get_stats()["failed"] == 1


async def test_a_hedge_delay_its_clock_cannot_sleep_fails_the_execution_and_starts_no_hedge() -> None:
    """The clock's refusal to sleep the delay (past the largest time it holds) is raised, never a hedge at once."""
    clock = FakeClock(1e308)
    dependency = Dependency(HANG, "hedged")
    h = hedging(clock, delay=lambda: 1e308, max_attempts=3)
    with pytest.raises(ValueError, match=r"FakeClock\.sleep"):
        await h.call(dependency)
    assert len(dependency.calls) == 1  # the original only: no hedge started in place of the delay
    assert dependency.cancelled == [0]
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert h.get_stats()["hedges"] == 0
    assert h.get_stats()["failed"] == 1


async def test_percentile_delay_follows_the_accepted_latencies(clock: FakeClock) -> None:
    """PercentileDelay hears each accepted attempt's latency (on the hedging's clock) and hedges at its p95."""
    delay = PercentileDelay(initial=1.0, percentile=95, samples=20, min_samples=20)
    h = hedging(clock, delay=delay)
    for millis in range(1, 21):

        async def answer(ms: int = millis) -> int:
            clock.advance(ms / 1000)
            return ms

        assert await h.call(answer) == millis
    assert delay() == pytest.approx(0.019)  # the 19th of 20 (nearest rank)
    dependency = Dependency(HANG, "hedged")
    clock.sleeps.clear()
    assert await h.call(dependency) == "hedged"
    assert clock.sleeps == [pytest.approx(0.019)]


async def test_percentile_delay_learns_a_latency_slept_on_a_fake_clock_without_the_hedge_delay(
    clock: FakeClock,
) -> None:
    """An answer slept for 0.1 s on the fake clock is a 0.1 s latency: the pending hedge delay does not add to it."""
    delay = PercentileDelay(initial=1.0, percentile=50, samples=5, min_samples=1)
    h = hedging(clock, delay=delay)

    async def answer() -> str:
        await clock.sleep(0.1)
        return "fast"

    for _ in range(5):
        started = clock.now()
        assert await h.call(answer) == "fast"
        assert clock.now() - started == pytest.approx(0.1)
    assert delay() == pytest.approx(0.1)
    assert h.get_stats()["hedges"] == 0


async def test_the_keys_of_a_policy_share_its_percentile_delay(clock: FakeClock) -> None:
    """A keyed policy's hedging delay is an object of its config: it learns from every key's answers."""
    delay = PercentileDelay(initial=1.0, percentile=50, samples=5, min_samples=2)
    manager = ResilienceManager(clock=clock)
    handle = manager.policy("keyed-delay", ResilienceConfig(hedging=HedgingConfig(delay=delay)))

    async def answer(seconds: float) -> str:
        await clock.sleep(seconds)
        return "answer"

    assert await handle.for_key("eu-1").execute(answer, 0.2) == "answer"
    assert delay() == 1.0  # one latency: under min_samples
    assert await handle.for_key("us-1").execute(answer, 0.1) == "answer"
    assert delay() == pytest.approx(0.1)  # the median of both keys' latencies


def test_percentile_delay_rules() -> None:
    """initial until min_samples, a floor, a bounded window; bad values name the field."""
    delay = PercentileDelay(0.5, percentile=50, samples=3, min_samples=2, minimum=0.1)
    assert delay() == 0.5
    delay.observe(0.01)
    assert delay() == 0.5
    delay.observe(0.02)
    assert delay() == 0.1  # the median 0.01, under the floor
    for seconds in (1.0, 2.0, 3.0):
        delay.observe(seconds)
    assert delay() == 2.0  # the window holds the last 3
    delay.observe(float("nan"))
    assert delay() == 2.0
    for ignored in (True, False, float("inf"), -1.0):  # a bool is no latency (it returned True itself)
        delay.observe(ignored)
    assert delay() == 2.0
    assert delay.samples == 3
    assert "percentile=50.0" in repr(delay)
    for above in (100, 100.5, 101, sys.float_info.max):  # one rule, one message (was "<= 100" above 100)
        with pytest.raises(ValueError, match=r"PercentileDelay.percentile must be < 100, got"):
            PercentileDelay(0.1, percentile=above)
    with pytest.raises(ValueError, match=r"PercentileDelay.min_samples must be <= samples \(3\)"):
        PercentileDelay(0.1, samples=3, min_samples=4)
    with pytest.raises(ValueError, match=r"PercentileDelay.initial must be > 0 seconds"):
        PercentileDelay(0)


def test_percentile_delay_keeps_a_bounded_number_of_latencies() -> None:
    """``samples`` has a ceiling: the latencies kept (twice: in arrival order and sorted) stay bounded.

    A window of a million latencies would hold that many floats twice, and move up to all of the
    sorted ones along by one for each new answer: once per call.
    """
    assert PercentileDelay(0.05, samples=MAX_SAMPLES).samples == MAX_SAMPLES
    with pytest.raises(ValueError, match=rf"PercentileDelay.samples must be <= {MAX_SAMPLES}, got 1000000"):
        PercentileDelay(0.05, samples=1_000_000)
    with pytest.raises(ValueError, match=rf"PercentileDelay.samples must be <= {MAX_SAMPLES}"):
        PercentileDelay(0.05, samples=2**63)


def test_percentile_delay_refuses_a_floor_above_its_initial_delay() -> None:
    """``minimum`` is the shortest delay it returns, so ``initial``, returned first, may not be under it."""
    assert PercentileDelay(0.05, minimum=0.05)() == 0.05
    with pytest.raises(ValueError, match=r"PercentileDelay.minimum must be <= initial \(0.05\), got 0.1"):
        PercentileDelay(0.05, minimum=0.1)
    with pytest.raises(ValueError, match=r"PercentileDelay.minimum must be <= initial"):
        PercentileDelay(timedelta(milliseconds=50), minimum=timedelta(seconds=1))


@pytest.mark.parametrize(
    ("percentile", "samples", "rank"),
    [(99.9, 1000, 999), (7, 100, 7), (14, 50, 7), (90, 10, 9), (95, 20, 19), (99, 100, 99), (50, 3, 2)],
)
def test_percentile_delay_is_the_nearest_rank(percentile: float, samples: int, rank: int) -> None:
    """The p-th percentile of n latencies is the ceil(p / 100 * n)-th smallest, computed without rounding up.

    ``0.999 * 1000`` is ``999.0000000000001`` in floating point: p99.9 of 1000 latencies is the
    999th, not the largest.
    """
    delay = PercentileDelay(1.0, percentile=percentile, samples=samples, min_samples=samples)
    for latency in range(samples, 0, -1):  # observed in any order: 1 ms, 2 ms, ... samples ms
        delay.observe(latency / 1000)
    assert delay() == rank / 1000


# --- parallel and fallback modes -----------------------------------------------------------


async def test_parallel_mode_starts_every_attempt_at_once() -> None:
    """Parallel: all max_attempts run before any answers; the first answer wins, the others are cancelled."""
    gates = [Gate("a"), Gate("b"), Gate("c")]
    dependency = Dependency(*gates)
    h = hedging(mode="parallel", max_attempts=3)
    call = asyncio.ensure_future(h.call(dependency))
    while len(dependency.calls) < 3:
        await asyncio.sleep(0)
    gates[1].event.set()
    assert await call == "b"
    assert dependency.peak == 3
    assert sorted(dependency.cancelled) == [0, 2]


async def test_parallel_mode_with_no_acceptable_outcome_raises_the_originals_error() -> None:
    """Every attempt fails: the original's error (the same object) is raised; no hedge starts after a failure."""
    first = ConnectionError("original")
    dependency = Dependency(first, TimeoutError("hedge"), OSError("hedge"))
    h = hedging(mode="parallel", max_attempts=3)
    with pytest.raises(ConnectionError) as caught:
        await h.call(dependency)
    assert caught.value is first
    assert len(dependency.calls) == 3
    assert h.get_stats()["failed"] == 1


async def test_fallback_mode_runs_one_attempt_at_a_time() -> None:
    """Fallback: the next attempt starts only after the previous one failed, never beside it."""
    dependency = Dependency(ConnectionError("1"), ConnectionError("2"), "third")
    h = hedging(mode="fallback", max_attempts=3)
    assert await h.call(dependency) == "third"
    assert dependency.peak == 1
    assert h.get_stats()["hedges"] == 2


async def test_fallback_mode_waits_for_a_slow_attempt() -> None:
    """Fallback: a slow original is never hedged by time."""
    gate = Gate("slow")
    dependency = Dependency(gate)
    h = hedging(mode="fallback", max_attempts=3)
    call = asyncio.ensure_future(h.call(dependency))
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(dependency.calls) == 1
    gate.event.set()
    assert await call == "slow"


async def test_actions_replace_the_function_for_attempts_2_and_on() -> None:
    """actions[0] serves attempt 2 with the same arguments; attempts past the actions call the function again."""
    primary = Dependency(ConnectionError("primary"), ConnectionError("primary again"))
    secondary = Dependency(ConnectionError("secondary"))
    h = hedging(mode="fallback", max_attempts=3, actions=(secondary,))
    with pytest.raises(ConnectionError, match=r"^primary$"):
        await h.call(primary, "q", region="eu")
    assert secondary.calls == [(("q",), {"region": "eu"})]
    assert primary.calls == [(("q",), {"region": "eu"})] * 2


# --- acceptable outcomes -------------------------------------------------------------------


async def test_an_error_hedge_on_does_not_match_is_the_answer() -> None:
    """A definite error (not in hedge_on) ends the race at once: raised, the other attempts cancelled."""
    dependency = Dependency(HANG, KeyError("missing"))
    h = hedging(mode="parallel", hedge_on=(ConnectionError,))
    with pytest.raises(KeyError, match="missing"):
        await h.call(dependency)
    assert dependency.cancelled == [0]
    assert h.get_stats()["hedge_wins"] == 1


async def test_hedge_on_as_a_predicate() -> None:
    """A predicate hedge_on sets aside what it returns True for, and accepts the rest."""
    dependency = Dependency(ValueError("retry me"), ValueError("final"))
    h = hedging(mode="fallback", max_attempts=3, hedge_on=lambda error: str(error) == "retry me")
    with pytest.raises(ValueError, match="final"):
        await h.call(dependency)
    assert len(dependency.calls) == 2


async def test_a_result_hedge_on_result_rejects_is_set_aside() -> None:
    """hedge_on_result: a rejected result starts the next attempt; with none accepted, the original's is returned."""
    h = hedging(mode="fallback", max_attempts=3, hedge_on_result=lambda result: result < 0)
    assert await h.call(Dependency(-1, 5)) == 5
    assert await h.call(Dependency(-1, -2, -3)) == -1
    assert h.get_stats()["failed"] == 1


async def test_a_judgment_that_raises_ends_the_execution_with_its_error() -> None:
    """What hedge_on_result raises is the execution's error; the other attempts are cancelled."""

    def judge(result: object) -> bool:
        raise RuntimeError(f"cannot judge {result!r}")

    dependency = Dependency("x", HANG)
    h = hedging(mode="parallel", hedge_on_result=judge)
    with pytest.raises(RuntimeError, match="cannot judge 'x'"):
        await h.call(dependency)
    assert dependency.cancelled == [1]


@pytest.mark.parametrize("judged", ["original", "hedge"])
async def test_an_execution_a_judgment_ended_is_no_win_but_a_failure(judged: str) -> None:
    """What a judgment raises answers nothing: the execution counts in ``failed``, no attempt won.

    The pipeline counts it a failure (its error); the hedging's counts and the
    ``resilience.hedging.won`` event agree, so that a broken predicate never shows as a hedge
    that paid off.
    """

    def judge(result: object) -> bool:
        if result == "x":
            raise RuntimeError("cannot judge 'x'")
        return True  # set aside: the next attempt starts

    script = ("x",) if judged == "original" else ("set aside", "x")
    h = hedging(mode="fallback", hedge_on_result=judge)
    with EventRecorder() as events, pytest.raises(RuntimeError, match="cannot judge 'x'"):
        await h.call(Dependency(*script))
    stats = h.get_stats()
    assert (stats["original_wins"], stats["hedge_wins"], stats["failed"]) == (0, 0, 1)
    assert events.of(Event.HEDGE_WON) == []


# --- attempts in the execution ---------------------------------------------------------------


async def test_each_attempt_has_its_own_number_and_context(clock: FakeClock) -> None:
    """The original is attempt 1, hedges 2 and 3, each seen by the steps inside in its own context."""
    recorder = AttemptRecorder()
    h = hedging(clock, delay=0.1, max_attempts=3)
    pipeline = PipelineBuilder("p").add(h.as_strategy("p")).add(recorder).build()
    assert await pipeline.execute(Dependency(HANG, HANG, "third")) == "third"
    assert recorder.seen == [1, 2, 3]


async def test_the_execution_outcome_is_the_winners(clock: FakeClock) -> None:
    """A hedge that wins with no failure before it is a success; after a failure, a recovery."""
    pipeline = PipelineBuilder("p").add(hedging(clock, delay=0.1).as_strategy("p")).build()
    assert await pipeline.execute(Dependency(HANG, "hedged")) == "hedged"
    assert (pipeline.stats.succeeded, pipeline.stats.recovered) == (1, 0)
    assert await pipeline.execute(Dependency(ConnectionError("x"), "hedged")) == "hedged"
    assert (pipeline.stats.succeeded, pipeline.stats.recovered) == (1, 1)


async def test_a_budget_that_allows_no_hedge_leaves_the_original_alone(clock: FakeClock) -> None:
    """An empty budget: the hedge is denied (counted), and the original's answer is waited for."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    gate = Gate("original")
    dependency = Dependency(gate)
    h = hedging(clock, delay=0.01, budget=budget)
    call = asyncio.ensure_future(h.call(dependency))
    while h.get_stats()["hedges_denied"] == 0:
        await asyncio.sleep(0)
    gate.event.set()
    assert await call == "original"
    assert len(dependency.calls) == 1
    assert budget.get_stats()["first_attempts"] == 1  # the execution deposited; nothing was withdrawn
    assert budget.get_stats()["retries"] == 0


class NoHedges:
    """A budget that allows no hedge."""

    def deposit(self) -> None:
        """Count nothing."""

    def try_withdraw(self) -> bool:
        """Allow no hedge."""
        return False

    def refund(self) -> None:
        """Nothing was withdrawn."""


class HeldRefusal(NoHedges):
    """A budget that allows no hedge and holds why as a plain value."""

    def __init__(self, refusal: object) -> None:
        self.refusal = refusal


class ComputedRefusal(NoHedges):
    """A budget that allows no hedge and says why only when asked (a property)."""

    def __init__(self, refusal: object) -> None:
        self._refusal = refusal

    @property
    def refusal(self) -> object:
        """Why the latest hedge was refused."""
        return self._refusal


@pytest.mark.parametrize(
    ("refusal", "error", "message"),
    [
        (42, TypeError, re.escape("HedgingConfig.budget.refusal must be a str, got 42 (int)")),
        ("", ValueError, "HedgingConfig.budget.refusal must be a non-empty name"),
        ("x" * 257, ValueError, "HedgingConfig.budget.refusal must be a name of at most 256 characters"),
    ],
    ids=["not a str", "empty", "too long"],
)
def test_a_budgets_refusal_that_is_no_name_is_refused_at_construction(
    refusal: object, error: type[Exception], message: str
) -> None:
    """A budget holding a ``refusal`` that could be no ``denied_by`` attribute is refused when configured."""
    with pytest.raises(error, match=message):
        HedgingConfig(mode="parallel", budget=HeldRefusal(refusal))


@pytest.mark.parametrize(
    ("refusal", "error"),
    [("x" * 300, ValueError), (["a", "b"], TypeError), (None, TypeError)],
    ids=["too long", "a list", "None"],
)
async def test_a_budgets_refusal_read_as_it_refuses_must_be_a_name(
    clock: FakeClock, refusal: object, error: type[Exception]
) -> None:
    """A refusal read only once the budget refused (a computed one) and no name fails the execution
    naming it, and never becomes a ``denied_by`` attribute."""
    h = hedging(clock, mode="parallel", budget=ComputedRefusal(refusal))
    with EventRecorder() as events, pytest.raises(error, match=r"HedgingConfig\.budget\.refusal must be"):
        await h.call(Dependency("original"))
    assert events.of(Event.HEDGE_DENIED) == []
    assert h.get_stats()["failed"] == 1


async def test_a_budgets_refusal_names_the_denial(clock: FakeClock) -> None:
    """A budget's ``refusal``, read as it refuses, is the denial's ``denied_by``."""
    h = hedging(clock, mode="parallel", budget=ComputedRefusal("quota"))
    with EventRecorder() as events:
        assert await h.call(Dependency("original")) == "original"
    assert [args.denied_by for args in events.of(Event.HEDGE_DENIED)] == ["quota"]


async def test_each_hedge_is_one_retry_withdrawn_from_the_budget(clock: FakeClock) -> None:
    """A budget with room: each hedge takes one retry; each execution deposits one first attempt."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    h = hedging(clock, delay=0.01, max_attempts=3, budget=budget)
    gate = Gate("second")
    call = asyncio.ensure_future(h.call(Dependency(HANG, gate)))
    while h.get_stats()["hedges_denied"] == 0:
        await asyncio.sleep(0)
    gate.event.set()
    assert await call == "second"
    stats = budget.get_stats()
    assert (stats["first_attempts"], stats["retries"]) == (1, 1)  # the second hedge: ratio 1 of 1 spent
    assert h.get_stats()["hedges"] == 1
    assert h.get_stats()["hedges_denied"] == 1


async def test_the_cap_on_attempts_in_total_refuses_a_hedge_and_refunds_the_budget(clock: FakeClock) -> None:
    """max_attempts (pipeline) 1: no hedge may start; the budget's withdrawal is given back."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    h = hedging(clock, delay=0.01, budget=budget)
    pipeline = PipelineBuilder("p", max_attempts=1).add(h.as_strategy("p")).build()
    dependency = Dependency(ConnectionError("x"), "never")
    with pytest.raises(ConnectionError):
        await pipeline.execute(dependency)
    assert len(dependency.calls) == 1
    assert budget.get_stats()["retries"] == 0
    assert h.get_stats()["hedges_denied"] == 1
