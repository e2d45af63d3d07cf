"""Hedging and rejections: the policy's own breaker or bulkhead ends hedging; a rejection of an action's own does not."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
)
from otel_resilience.engine.events import Event
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.errors import BulkheadFullError
from otel_resilience.patterns.retry import Jitter
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock


def hedged_behind_breaker(mode: str, budget: RetryBudget, actions: tuple[Any, ...] | None = None) -> Any:
    """Hedging (3 attempts) outside a breaker of the same pipeline; returns (pipeline, hedging, breaker)."""
    delay = 0.01 if mode == "latency" else None
    hedging = Hedging(
        "h", HedgingConfig(mode=mode, delay=delay, max_attempts=3, budget=budget, actions=actions)
    )  # type: ignore[arg-type]
    breaker = CircuitBreaker("inner", CircuitBreakerConfig(failure_threshold=5))
    pipeline = PipelineBuilder("p").add(hedging.as_strategy("p")).add(breaker.as_strategy("p")).build()
    return pipeline, hedging, breaker


@pytest.mark.parametrize("mode", ["fallback", "latency"])
async def test_an_open_breaker_of_the_policy_ends_hedging_and_takes_no_budget(
    clock: FakeClock, mode: str, task_factory: str
) -> None:
    """The original is rejected by the policy's own open breaker: no hedge starts, none is withdrawn.

    The hedge that was due is counted denied (by ``rejected``), once per execution. An attempt
    started eagerly is rejected before the race has set down its start: the refusal stands.

    Every hedge would meet the same breaker; before, each execution made 3 rejected attempts
    and charged the shared budget 2 hedges for them.
    """
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    pipeline, hedging, breaker = hedged_behind_breaker(mode, budget)
    breaker.force_open()
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        return "ok"

    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            await pipeline.execute(dependency)
    assert calls == []
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["failed"]) == (0, 4, 4)  # denied: "rejected"
    assert budget.get_stats()["retries"] == 0
    assert budget.get_stats()["denied"] == 0


async def test_a_rejection_from_an_actions_own_breaker_still_fails_over(clock: FakeClock) -> None:
    """An alternative endpoint behind a breaker of its own is rejected: the next hedge starts as before."""
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    other = CircuitBreaker("other-region", CircuitBreakerConfig(failure_threshold=5))
    other.force_open()

    async def other_region() -> str:
        return await other.call(third_region)

    async def third_region() -> str:
        return "third"

    async def failing() -> str:
        raise ConnectionError("primary down")

    pipeline, hedging, _ = hedged_behind_breaker("fallback", budget, actions=(other_region,))
    # the original fails, the 1st hedge meets the other region's open breaker, the 2nd calls `failing` again
    with pytest.raises(ConnectionError):
        await pipeline.execute(failing)
    stats = hedging.get_stats()
    assert stats["hedges"] == 2
    assert budget.get_stats()["retries"] == 2

    pipeline2, hedging2, _ = hedged_behind_breaker("fallback", budget, actions=(other_region, third_region))
    assert await pipeline2.execute(failing) == "third"
    assert hedging2.get_stats()["hedge_wins"] == 1


async def test_a_hedge_the_bulkhead_rejects_ends_hedging_while_the_original_runs(clock: FakeClock) -> None:
    """In a policy: the original holds the one slot; the first hedge is turned away; no 3rd attempt.

    The original's answer is the execution's; the budget was charged nothing: the hedge turned
    away called nothing, and is given back.
    """
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0)
    manager = ResilienceManager()
    handle = manager.policy(
        "quotes",
        ResilienceConfig(
            hedging=HedgingConfig(delay=0.001, max_attempts=3, budget=budget),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        ),
    )
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(handle.execute(answer))
    for _ in range(1000):  # until the first hedge was turned away (real time: the delay is 1 ms)
        await asyncio.sleep(0.001)
        if handle.get_stats()["bulkhead"]["rejected"]:
            break
    for _ in range(20):  # a third attempt would start 1 ms after the rejection
        await asyncio.sleep(0.005)
    release.set()
    assert await task == "quote"
    assert calls == [1]
    assert handle.get_stats()["bulkhead"]["rejected"] == 1
    assert budget.get_stats()["retries"] == 0


async def test_the_originals_own_rejection_is_raised(clock: FakeClock) -> None:
    """The original is turned away by a full bulkhead and no hedge runs: the rejection is the execution's."""
    manager = ResilienceManager(clock=clock)
    handle = manager.policy(
        "full",
        ResilienceConfig(
            hedging=HedgingConfig(mode="fallback", max_attempts=3),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        ),
    )
    release = asyncio.Event()

    async def hold() -> str:
        await release.wait()
        return "held"

    holder = asyncio.ensure_future(handle.execute(hold))
    while not handle.get_stats()["bulkhead"]["active"]:
        await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await handle.execute(hold)
    assert handle.get_stats()["bulkhead"]["rejected"] == 1  # the original only: no hedge met it again
    release.set()
    assert await holder == "held"


# -- actions that are not async functions --------------------------------------------------------


def test_a_generator_function_in_actions_is_refused_at_construction() -> None:
    def replicas() -> Any:
        yield "r1"

    with pytest.raises(TypeError, match=r"HedgingConfig\.actions\[0\] must be an async function"):
        HedgingConfig(mode="fallback", actions=(replicas,))


def test_an_object_whose_call_is_an_async_generator_function_in_actions_is_refused_at_construction() -> None:
    """What its call makes decides, as for the protected function: it was taken, and each hedge it
    sent failed with the driver's ``TypeError`` instead of being refused when configured."""

    class Replicas:
        async def __call__(self) -> Any:
            yield "r1"

    with pytest.raises(TypeError, match=r"HedgingConfig\.actions\[0\] must be an async function"):
        HedgingConfig(mode="fallback", actions=(Replicas(),))


async def test_a_sync_action_is_refused_at_its_call_naming_the_field() -> None:
    """A plain function that returns a value, not an awaitable: TypeError naming actions[0], nothing hedged on it."""

    def secondary() -> str:
        return "sync value"

    async def failing() -> str:
        raise ConnectionError("down")

    hedging = Hedging("h", HedgingConfig(mode="fallback", max_attempts=3, actions=(secondary,)))
    with pytest.raises(
        TypeError, match=r"hedging 'h': HedgingConfig\.actions\[0\] \(.*secondary\) returned str"
    ):
        await hedging.call(failing)
    assert hedging.get_stats()["hedges"] == 1  # the 3rd attempt never started


async def test_a_sync_action_given_as_a_partial_is_named_after_its_function() -> None:
    """The refusal of a sync ``functools.partial`` action names ``partial(<its function>)``, not "a partial"."""

    def secondary(region: str) -> str:
        return region

    async def failing() -> str:
        raise ConnectionError("down")

    hedging = Hedging("h", HedgingConfig(mode="fallback", actions=(functools.partial(secondary, "eu"),)))
    with pytest.raises(TypeError) as info:
        await hedging.call(failing)
    assert f"HedgingConfig.actions[0] (partial({secondary.__qualname__})) returned str" in str(info.value)


async def test_a_plain_function_returning_an_awaitable_is_a_valid_action() -> None:
    async def secondary(value: int) -> int:
        return value * 2

    async def failing(value: int) -> int:
        raise ConnectionError(value)

    hedging = Hedging("h", HedgingConfig(mode="fallback", actions=(lambda value: secondary(value),)))
    assert await hedging.call(failing, 21) == 42


# -- a hedge the policy's own link turns away is no hedge sent ----------------------------------


def hedged_over_one_slot(clock: FakeClock, hedging: HedgingConfig) -> tuple[Any, Hedging, Bulkhead]:
    """Hedging outside a bulkhead of one slot and no queue: a hedge beside the original is turned away."""
    outer = Hedging("h", hedging, clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=0))
    pipeline = PipelineBuilder("p").add(outer.as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    return pipeline, outer, bulkhead


async def run_beside_a_slow_original(clock: FakeClock, pipeline: Any, bulkhead: Bulkhead, fn: Any) -> Any:
    """Start ``fn`` under ``pipeline``; once the original holds the slot, pass the hedge delay (0.01 s)."""
    task = asyncio.ensure_future(pipeline.execute(fn))
    while not bulkhead.get_stats()["active"]:
        await asyncio.sleep(0)
    clock.advance(0.02)  # the hedge starts, and meets the full bulkhead
    while not bulkhead.get_stats()["rejected"]:
        await asyncio.sleep(0)
    for _ in range(20):  # a further hedge, were one started, would start at once
        await asyncio.sleep(0)
    return task


@pytest.mark.parametrize("max_attempts", [2, 3])
async def test_a_hedge_the_bulkhead_turns_away_is_given_back_and_denied_not_sent(
    clock: FakeClock, max_attempts: int, recorder: Any, task_factory: str
) -> None:
    """The original holds the one slot; the hedge is turned away before it calls anything.

    It sent nothing: the budget gets it back, ``hedges`` and ``HEDGE_STARTED`` leave it out, it
    is the hedge counted denied (``rejected``, its own trigger), and the original won no race.
    Before: ``hedges`` 1, the budget's ``retries`` 1, a ``HEDGE_WON`` for the original, and with
    ``max_attempts=2`` no denial at all. A hedge started eagerly is turned away as it starts.
    """
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    pipeline, hedging, bulkhead = hedged_over_one_slot(
        clock, HedgingConfig(delay=0.01, max_attempts=max_attempts, budget=budget)
    )
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = await run_beside_a_slow_original(clock, pipeline, bulkhead, answer)
    release.set()
    assert await task == "quote"
    assert calls == [1]
    assert bulkhead.get_stats()["rejected"] == 1  # no further hedge met it again
    assert budget.get_stats()["retries"] == 0
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 1, 1)
    assert recorder.of(Event.HEDGE_STARTED) == []
    assert recorder.of(Event.HEDGE_WON) == []
    assert [(d.trigger, d.denied_by) for d in recorder.of(Event.HEDGE_DENIED)] == [("delay", "rejected")]


async def test_a_hedge_that_ran_beside_one_turned_away_is_still_counted_and_charged(clock: FakeClock) -> None:
    """Parallel, three attempts, two slots: the original and the 1st hedge run, the 2nd is turned away.

    The hedge that ran is counted and charged; the one turned away is given back and denied.
    """
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    hedging = Hedging("h", HedgingConfig(mode="parallel", max_attempts=3, budget=budget), clock=clock)
    bulkhead = Bulkhead("slots", BulkheadConfig(max_concurrent=2, max_waiting=0))
    pipeline = PipelineBuilder("p").add(hedging.as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        if len(calls) > 1:  # the hedge that got a slot: slower than the original
            await asyncio.Event().wait()
        while not bulkhead.get_stats()["rejected"]:
            await asyncio.sleep(0)
        return "quote"

    assert await pipeline.execute(answer) == "quote"
    assert len(calls) == 2
    assert budget.get_stats()["retries"] == 1
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (1, 1, 1)


async def test_a_hedge_turned_away_is_no_answer_whatever_hedge_on_leaves_out(clock: FakeClock) -> None:
    """``hedge_on`` names only the dependency's errors: the hedge turned away is still no answer.

    The original in flight goes on and answers, as the docs say of the policy's own rejections.
    Before, the rejection (no ``ConnectionError``) was taken as a definite answer: the caller got
    ``BulkheadFullError`` and the original, which held the slot and was about to answer, was
    cancelled.
    """
    pipeline, hedging, bulkhead = hedged_over_one_slot(
        clock, HedgingConfig(delay=0.01, max_attempts=3, hedge_on=(ConnectionError, TimeoutError))
    )
    release = asyncio.Event()
    cancelled: list[int] = []

    async def answer() -> str:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise
        return "quote"

    task = await run_beside_a_slow_original(clock, pipeline, bulkhead, answer)
    release.set()
    assert await task == "quote"
    assert cancelled == []
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 1, 1)


async def test_an_original_turned_away_is_raised_whatever_hedge_on_leaves_out(clock: FakeClock) -> None:
    """The original meets the policy's own open breaker, ``hedge_on`` leaving rejections out: raised, no hedge."""
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    hedging = Hedging("h", HedgingConfig(mode="fallback", hedge_on=(ConnectionError,), budget=budget))
    breaker = CircuitBreaker("inner", CircuitBreakerConfig(failure_threshold=5))
    pipeline = PipelineBuilder("p").add(hedging.as_strategy("p")).add(breaker.as_strategy("p")).build()
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await pipeline.execute(asyncio.sleep, 0)
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["failed"]) == (0, 1, 1)
    assert budget.get_stats()["retries"] == 0


# -- a hedge turned away is no attempt of the execution's cap in total ---------------------------


def retried_races_over_one_slot(clock: FakeClock, name: str, retries: int) -> tuple[ResilienceManager, Any]:
    """A policy: retry around races of two attempts at once over one slot (the hedge is turned away)."""
    manager = ResilienceManager(clock=clock)
    handle = manager.policy(
        name,
        ResilienceConfig(
            hedging=HedgingConfig(mode="parallel", max_attempts=2),
            retry_policy=RetryPolicy(
                max_attempts=retries, strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE
            ),
            bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
            max_attempts_total=4,
        ),
    )
    return manager, handle


async def test_a_hedge_turned_away_takes_no_attempt_of_the_cap_in_total(
    clock: FakeClock, recorder: Any, otel: Any, task_factory: str
) -> None:
    """``max_attempts_total=4`` caps the calls made: hedges turned away called nothing, and take none of it.

    Each race's hedge meets the bulkhead the original holds. Four calls reach the dependency, then
    the cap stops the retry (its own ``max_attempts`` would allow more), its note saying the
    execution made its 4 attempts. The attempts keep numbers of their own: a hedge turned away
    kept its number (its span), the retries take the next ones. Before: 2 calls (each hedge
    turned away took one of the 4), and the cap stopped the retry with 2 retries left.
    """
    _, handle = retried_races_over_one_slot(clock, "capped-races", retries=6)
    calls: list[int] = []

    async def down() -> str:
        calls.append(1)
        await asyncio.sleep(0)  # holding the slot while the hedge meets the bulkhead
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(ConnectionError, match="down 4") as info:
        await handle.execute(down)
    assert len(calls) == 4
    assert handle.get_stats()["bulkhead"]["rejected"] == 3  # the 4th race had no room for a hedge
    made = "the execution made 4 attempts in total, its cap (max_attempts_total)"
    assert info.value.__notes__[-1].endswith(made)
    exhausted = [(e.attempts, e.reason) for e in recorder.of(Event.RETRY_EXHAUSTED)]
    assert exhausted == [(7, "max_attempts_total")]  # the 4th race's original: attempt 7
    spans = otel.spans("capped-races" + sc.ATTEMPT_SPAN_SUFFIX)
    hedged = [s for s in spans if s.attributes[sc.PATTERN] == "hedging"]  # each race's attempts
    numbers = sorted((s.attributes[sc.ATTEMPT], s.attributes[sc.ATTEMPT_TYPE]) for s in hedged)
    assert numbers == [(n, "hedge" if n % 2 == 0 else "original") for n in range(1, 8)]
    denied = [d.denied_by for d in recorder.of(Event.HEDGE_DENIED)]
    assert denied == ["rejected", "rejected", "rejected", "max_attempts"]


async def test_a_retry_around_races_names_the_attempt_whose_error_it_retries(
    clock: FakeClock, recorder: Any, task_factory: str
) -> None:
    """Retry (6) around races of two attempts at once over one slot: each race's hedge is turned away.

    Each race ends with its original's error, which the retry retries: ``retry.scheduled`` and
    ``on_retry`` name that original (1, 3, 5, 7, 9: the turned-away hedges took 2, 4, 6, 8, 10),
    and ``retry.exhausted`` the 6th race's original, 11. Before: the latest number taken, the
    hedge's (2, 4, 6, 8, 10, then 12), an attempt whose error was never retried.
    """
    hooked: list[int] = []
    hedging = Hedging("h", HedgingConfig(mode="parallel", max_attempts=2), clock=clock)
    policy = RetryPolicy(max_attempts=6, initial_delay=0.0, jitter=Jitter.NONE)
    retry = Retry("r", policy, on_retry=lambda attempt, error: hooked.append(attempt), clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=0))
    pipeline = (
        PipelineBuilder("p", clock=clock)
        .add(retry.as_strategy("p"))
        .add(hedging.as_strategy("p"))
        .add(bulkhead.as_strategy("p"))
        .build()
    )
    calls: list[int] = []

    async def down() -> str:
        calls.append(1)
        await asyncio.sleep(0)  # holding the slot while the hedge meets the bulkhead
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(ConnectionError, match="down 6"):
        await pipeline.execute(down)
    assert len(calls) == 6
    assert bulkhead.get_stats()["rejected"] == 6
    assert [s.attempt for s in recorder.of(Event.RETRY_SCHEDULED)] == [1, 3, 5, 7, 9]
    assert hooked == [1, 3, 5, 7, 9]
    assert [(e.attempts, e.reason) for e in recorder.of(Event.RETRY_EXHAUSTED)] == [(11, "max_attempts")]


async def test_a_retry_around_a_race_the_original_won_names_the_original(
    clock: FakeClock, recorder: Any, task_factory: str
) -> None:
    """The original answers with an error the hedging takes as the answer, the hedge still running.

    The retry around retries the original's error: ``retry.scheduled`` names the original (1),
    not the hedge it cancelled (2), and the next race's attempts take 3 and 4. Before: 2.
    """
    hedging = Hedging(
        "h", HedgingConfig(mode="parallel", max_attempts=2, hedge_on=(ConnectionError,)), clock=clock
    )
    retry = Retry("r", RetryPolicy(max_attempts=2, initial_delay=0.0, jitter=Jitter.NONE), clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(retry.as_strategy("p")).add(hedging.as_strategy("p")).build()
    )
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:  # the first race's original: a definite answer, once its hedge runs
            while len(calls) < 2:
                await asyncio.sleep(0)
            raise ValueError("no such key")
        if len(calls) == 3:  # the second race's original
            return "quote"
        await asyncio.Event().wait()  # a hedge: slower than the original
        return "late"

    assert await pipeline.execute(dependency) == "quote"
    assert [s.attempt for s in recorder.of(Event.RETRY_SCHEDULED)] == [1]


async def run_a_hedge_rejected_after_it_called(clock: FakeClock) -> tuple[Any, Hedging, RetryBudget, int]:
    """Hedging (3) over a retry (2) over a breaker that one failure opens: the hedge's call fails, its retry is rejected.

    The original answers once the hedge's retry was rejected. Returns (pipeline, hedging, budget, calls made).
    """
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    hedging = Hedging("h", HedgingConfig(delay=0.01, max_attempts=3, budget=budget), clock=clock)
    retry = Retry("r", RetryPolicy(max_attempts=2, initial_delay=0.0), clock=clock)
    breaker = CircuitBreaker("b", CircuitBreakerConfig(failure_threshold=1))
    pipeline = (
        PipelineBuilder("p", clock=clock)
        .add(hedging.as_strategy("p"))
        .add(retry.as_strategy("p"))
        .add(breaker.as_strategy("p"))
        .build()
    )
    release = asyncio.Event()
    calls: list[int] = []

    async def first_slow_then_failing() -> str:
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionError("fast failure")
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(first_slow_then_failing))
    while not calls:
        await asyncio.sleep(0)
    clock.advance(0.02)  # the hedge starts, fails, opens the breaker; its retry is rejected
    while not breaker.get_stats()["total_rejected"]:
        await asyncio.sleep(0)
    for _ in range(20):  # a further hedge, were one started, would start at once
        await asyncio.sleep(0)
    release.set()
    assert await task == "quote"
    return pipeline, hedging, budget, len(calls)


async def test_a_hedge_rejected_after_it_called_the_dependency_was_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """A retry inside the hedging: the hedge's call fails and opens the breaker, its retry is rejected.

    The hedge called the dependency before its chain rejected it: it is a hedge sent (counted,
    charged to the budget, an attempt the original's win is over), not one turned away; its
    rejection still ends hedging (the next hedge due is denied, ``rejected``). Before: ``hedges``
    0, the budget's withdrawal given back, and the hedge itself counted denied, for 2 calls.
    """
    _, hedging, budget, calls = await run_a_hedge_rejected_after_it_called(clock)
    assert calls == 2
    assert budget.get_stats()["retries"] == 1
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (1, 1, 1)
    assert [(d.trigger, d.denied_by) for d in recorder.of(Event.HEDGE_DENIED)] == [("failure", "rejected")]
    assert [s.attempt for s in recorder.of(Event.HEDGE_STARTED)] == [2]
    assert [w.attempt_type for w in recorder.of(Event.HEDGE_WON)] == ["original"]


async def test_an_original_that_wins_after_a_hedge_failed_and_was_then_rejected_is_a_recovery(
    clock: FakeClock,
) -> None:
    """The hedge's call failed before its retry was rejected: the execution recovered from that failure.

    As when a hedge with no retry inside fails before the original wins (``recovered``): the
    rejection that ended the hedge's chain comes after a failure of the dependency, no attempt
    that never called. Before: counted ``succeeded``, a first-attempt success.
    """
    pipeline, _, _, calls = await run_a_hedge_rejected_after_it_called(clock)
    assert calls == 2
    assert (pipeline.stats.succeeded, pipeline.stats.recovered) == (0, 1)


def _delays() -> Any:
    yield 0.1


class _Delays:
    def __call__(self) -> Any:
        yield 0.1


@pytest.mark.parametrize(
    "delay", [_delays, _Delays(), functools.partial(_delays)], ids=["function", "object", "partial"]
)
def test_a_generator_function_as_the_delay_is_refused_at_construction(delay: Any) -> None:
    """Its iterator, made before its body runs, is no delay: it was taken, and each hedge's delay then
    failed when called (the race's TypeError in place of the answer)."""
    with pytest.raises(
        TypeError, match=r"HedgingConfig\.delay must be a function returning seconds, not a generator"
    ):
        HedgingConfig(delay=delay)
