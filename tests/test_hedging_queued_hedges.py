"""Hedging: an attempt the race ends while it still waits for its admission never ran its action.

A hedge cancelled as it waits in the policy's own bulkhead queue (or for a rate limiter's
permit) when another attempt answers called nothing: it is given back to the budget, it is no
hedge sent (``hedges``, ``HEDGE_STARTED``) and no attempt a win is reported over (``HEDGE_WON``).
Nor is it denied: nothing refused it, the race was over before it was admitted (as a hedge whose
task had not run when the race was won). An attempt that ran its action before it waited again
(a retry inside it), or that waits in an injected latency (chaos: the dependency being slow),
ran.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    Hedging,
    HedgingConfig,
    RateLimiter,
    RateLimiterConfig,
    Retry,
    RetryBudget,
    RetryPolicy,
    TimeoutHandler,
)
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import Event
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Step, Wait
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock


def budget_of(clock: FakeClock) -> RetryBudget:
    return RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)


def hedged_over(
    clock: FakeClock, budget: RetryBudget, *inner: Any, max_attempts: int = 2
) -> tuple[Any, Hedging]:
    """Hedging (delay 0.01 s on ``clock``) outside the links ``inner``: returns (pipeline, hedging)."""
    hedging = Hedging("h", HedgingConfig(delay=0.01, max_attempts=max_attempts, budget=budget), clock=clock)
    builder = PipelineBuilder("p", clock=clock).add(hedging.as_strategy("p"))
    for link in inner:
        builder = builder.add(link)
    return builder.build(), hedging


class StoppedClock(FakeClock):
    """A fake clock whose async sleeps never end (a permit due later is never due)."""

    async def sleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def until(condition: Any) -> None:
    """Give the loop turns until ``condition()`` holds (a bound, so that a test never hangs)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.mark.parametrize("max_attempts", [2, 3])
async def test_a_hedge_still_queued_when_the_original_answers_is_no_hedge_sent(
    clock: FakeClock, recorder: Any, task_factory: str, max_attempts: int
) -> None:
    """The original holds the one slot, the hedge waits in the queue, the original answers.

    Before: ``hedges`` 1, the budget's ``retries`` 1, a ``HEDGE_WON`` for the original over a
    hedge that never called the dependency (1 call).
    """
    budget = budget_of(clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=1))
    pipeline, hedging = hedged_over(clock, budget, bulkhead.as_strategy("p"), max_attempts=max_attempts)
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: bulkhead.get_stats()["active"])
    clock.advance(0.02)  # the hedge starts, and waits for the slot (a 3rd would meet a full queue)
    await until(lambda: bulkhead.get_stats()["waiting"])
    release.set()
    assert await task == "quote"
    assert calls == [1]
    assert budget.get_stats()["retries"] == 0
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 0, 1)
    assert recorder.of(Event.HEDGE_STARTED) == []
    assert recorder.of(Event.HEDGE_WON) == []
    assert recorder.of(Event.HEDGE_DENIED) == []
    assert bulkhead.get_stats()["completed"] == 1
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_hedge_waiting_for_a_rate_limiter_permit_when_the_original_answers_is_no_hedge_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """The original takes the one permit; the hedge waits for the next (due in 1 s); the original answers.

    Before: ``hedges`` 1 and the budget's ``retries`` 1, for a hedge that never got its permit.
    """
    budget = budget_of(clock)
    limiter = RateLimiter(
        "rl", RateLimiterConfig(rate=1.0, burst=1, max_wait=5.0), clock=StoppedClock(1000.0)
    )
    pipeline, hedging = hedged_over(clock, budget, limiter.as_strategy("p"))
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: calls)
    clock.advance(0.02)  # the hedge starts, and waits for a permit
    await until(lambda: limiter.get_stats()["waiting"])
    release.set()
    assert await task == "quote"
    assert calls == [1]
    assert budget.get_stats()["retries"] == 0
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 0, 1)
    assert recorder.of(Event.HEDGE_STARTED) == []
    assert recorder.of(Event.HEDGE_WON) == []


async def test_a_hedge_still_queued_when_the_caller_is_cancelled_is_given_back(clock: FakeClock) -> None:
    """The caller is cancelled while the original runs and the hedge waits in the queue.

    Before: the hedge was counted sent and charged, though it never left the queue.
    """
    budget = budget_of(clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=1))
    pipeline, hedging = hedged_over(clock, budget, bulkhead.as_strategy("p"))
    calls: list[int] = []

    async def hang() -> str:
        calls.append(1)
        await asyncio.Event().wait()
        return "never"

    task = asyncio.ensure_future(pipeline.execute(hang))
    await until(lambda: bulkhead.get_stats()["active"])
    clock.advance(0.02)
    await until(lambda: bulkhead.get_stats()["waiting"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert budget.get_stats()["retries"] == 0
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["cancelled"]) == (0, 0, 1)
    assert (bulkhead.get_stats()["active"], bulkhead.get_stats()["waiting"]) == (0, 0)


async def test_a_hedge_queued_again_after_it_called_the_dependency_was_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """Hedging over a retry over a bulkhead of two slots: the hedge fails, its retry waits in the queue.

    It called the dependency once before it queued again (a re-run inside it): cancelled there
    as the original answers, it is a hedge sent, charged, and the original won over it.
    """
    budget = budget_of(clock)
    bulkhead = Bulkhead("slots", BulkheadConfig(max_concurrent=2, max_waiting=2))
    retry = Retry("r", RetryPolicy(max_attempts=2, initial_delay=0.0), clock=clock)
    pipeline, hedging = hedged_over(clock, budget, retry.as_strategy("p"), bulkhead.as_strategy("p"))
    original, hedge, outsider = asyncio.Event(), asyncio.Event(), asyncio.Event()
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            await original.wait()
            return "quote"
        await hedge.wait()
        raise ConnectionError("down")

    task = asyncio.ensure_future(pipeline.execute(dependency))
    await until(lambda: calls)
    clock.advance(0.02)  # the hedge starts and takes the second slot
    await until(lambda: len(calls) == 2)
    admitted: list[int] = []

    async def outside() -> None:
        admitted.append(1)
        await outsider.wait()

    other = asyncio.ensure_future(bulkhead.execute(outside))  # queued for a slot
    await until(lambda: bulkhead.get_stats()["waiting"])
    hedge.set()  # the hedge fails: its slot goes to the outsider, its retry queues
    await until(lambda: admitted and bulkhead.get_stats()["waiting"])
    assert (bulkhead.get_stats()["active"], bulkhead.get_stats()["waiting"]) == (2, 1)
    original.set()
    assert await task == "quote"
    outsider.set()
    await other
    assert len(calls) == 2
    assert budget.get_stats()["retries"] == 1
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["original_wins"]) == (1, 1)
    assert len(recorder.of(Event.HEDGE_STARTED)) == 1
    assert [won.attempt_type for won in recorder.of(Event.HEDGE_WON)] == ["original"]


async def test_a_hedge_in_an_injected_latency_when_the_original_answers_was_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """Chaos delays every attempt 1 s (the dependency being slow): the hedge is in its delay when the original answers.

    An injected latency is no admission: the hedge is counted sent, and the original won over it.
    """
    budget = budget_of(clock)
    chaos = Chaos("c", ChaosConfig(latency_rate=1.0, latency=1.0, seed=1), clock=clock)
    pipeline, hedging = hedged_over(clock, budget, chaos.as_strategy("p"))
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    for _ in range(20):
        await asyncio.sleep(0)
    clock.advance(0.02)  # the hedge starts, in its injected latency
    for _ in range(20):
        await asyncio.sleep(0)
    clock.advance(0.98)  # the original's latency ends (the hedge's 0.02 s later)
    assert await task == "quote"
    assert calls == [1]
    assert budget.get_stats()["retries"] == 1
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["original_wins"]) == (1, 1)
    assert [won.attempt_type for won in recorder.of(Event.HEDGE_WON)] == ["original"]


class _Held(Wait):
    """A wait for an admission that comes only when ``event`` is set."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    async def wait(self) -> None:
        await self.event.wait()


class _HoldsTheOriginal(Step):
    """A step of our own that holds the first attempt back until :attr:`event` is set."""

    kind: ClassVar[str] = "holds_the_original"

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()

    def admit(self, ctx: ExecutionContext) -> Any:
        return _Held(self.event) if ctx.attempt == 1 else None


async def test_a_hedge_that_wins_while_the_original_is_still_held_back_won_over_nothing(
    clock: FakeClock, recorder: Any
) -> None:
    """A step of our own holds the original back for its admission; the hedge is admitted and answers.

    The hedge ran and is counted; the original never ran its action, so no win over it is reported.
    """
    budget = budget_of(clock)
    holder = _HoldsTheOriginal()
    pipeline, hedging = hedged_over(clock, budget, holder)
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    for _ in range(20):
        await asyncio.sleep(0)
    clock.advance(0.02)
    assert await task == "quote"
    assert calls == [1]
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedge_wins"]) == (1, 1)
    assert budget.get_stats()["retries"] == 1
    assert recorder.of(Event.HEDGE_WON) == []


async def test_an_outer_hedge_that_wins_while_the_outer_originals_inner_race_is_held_back_won_over_nothing(
    clock: FakeClock, recorder: Any
) -> None:
    """Two hedgings: the outer original's inner race is held back by a step of our own; the outer hedge answers.

    The outer original ran nothing (the only attempt of its inner race waits for its admission):
    no win over it is reported, as over an original held back itself. Before: a ``hedge_won``.
    """
    budget = budget_of(clock)
    inner = Hedging("inner", HedgingConfig(mode="fallback", max_attempts=1), clock=clock)
    holder = _HoldsTheOriginal()
    pipeline, hedging = hedged_over(clock, budget, inner.as_strategy("p"), holder)
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    for _ in range(20):
        await asyncio.sleep(0)
    clock.advance(0.02)
    assert await task == "quote"
    assert calls == [1]
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedge_wins"]) == (1, 1)
    assert recorder.of(Event.HEDGE_WON) == []


async def test_a_hedge_whose_own_timeout_cut_its_wait_and_that_then_ran_was_sent(clock: FakeClock) -> None:
    """Hedging (fallback mode) over a retry, an attempt timeout and a bulkhead of one slot.

    The original fails as an outsider queues for its slot; the hedge queues behind the outsider
    until its own attempt timeout cuts the wait (a real 0.3 s); its retry lets the outsider go,
    and the re-run, admitted at once, calls the dependency and answers. The wait the timeout cut
    holds nothing back once the attempt ran again: the hedge was sent and charged.
    """
    budget = budget_of(clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=1))
    outsider = asyncio.Event()

    async def let_the_outsider_go(attempt: int, error: Exception | None) -> None:
        outsider.set()
        await until(lambda: not bulkhead.get_stats()["active"])

    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, retry_on=(OperationTimeoutError,))
    retry = Retry("r", policy, on_retry=let_the_outsider_go, clock=clock)
    hedging = Hedging("h", HedgingConfig(mode="fallback", max_attempts=2, budget=budget), clock=clock)
    builder = PipelineBuilder("p", clock=clock).add(hedging.as_strategy("p")).add(retry.as_strategy("p"))
    pipeline = builder.add(TimeoutHandler(0.3).as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:  # the original
            await until(lambda: bulkhead.get_stats()["waiting"])
            raise ValueError("down")
        return "answer"

    async def outside() -> None:
        await outsider.wait()

    task = asyncio.ensure_future(pipeline.execute(dependency))
    await until(lambda: calls)
    holder = asyncio.ensure_future(bulkhead.execute(outside))  # queued for the original's slot
    assert await task == "answer"
    await holder
    assert calls == [1, 1]
    assert retry.get_stats()["retries"] == 1
    assert budget.get_stats()["retries"] == 1
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedge_wins"]) == (1, 1)


async def test_a_hedge_still_queued_when_the_race_ends_takes_no_attempt_of_the_cap_in_total(
    clock: FakeClock, task_factory: str
) -> None:
    """Retry around races over one slot: each race's hedge is still queued when the original's answer ends it.

    The original's ``ValueError`` is a definite answer (``hedge_on`` leaves it out), which the
    retry around retries. A hedge cancelled in the queue called nothing: ``max_attempts_total=3``
    lets 3 calls reach the dependency. Before: 2 (the first race's queued hedge took one of the 3,
    and the cap then refused both the second race's hedge and the next retry).
    """
    hedging = Hedging(
        "h", HedgingConfig(mode="parallel", max_attempts=2, hedge_on=(ConnectionError,)), clock=clock
    )
    retry = Retry("r", RetryPolicy(max_attempts=5, initial_delay=0.0), clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=1))
    pipeline = (
        PipelineBuilder("p", clock=clock, max_attempts=3)
        .add(retry.as_strategy("p"))
        .add(hedging.as_strategy("p"))
        .add(bulkhead.as_strategy("p"))
        .build()
    )
    calls: list[int] = []

    async def definite() -> str:
        calls.append(1)
        await until(lambda: bulkhead.get_stats()["waiting"] or hedging.get_stats()["hedges_denied"])
        raise ValueError(f"no such key {len(calls)}")

    with pytest.raises(ValueError, match="no such key 3"):
        await pipeline.execute(definite)
    assert len(calls) == 3
    stats = hedging.get_stats()
    assert (stats["hedges"], stats["hedges_denied"]) == (0, 1)  # the 3rd race: no room left under the cap


async def run_an_outer_hedge_queued_in_its_inner_race(clock: FakeClock) -> tuple[Hedging, RetryBudget, int]:
    """Two hedgings in one pipeline: the outer hedge's inner race waits for the slot the original holds.

    Another call queued first takes the slot the original gives back, so the outer hedge is still
    queued (in its inner race) when the original wins. Returns (the outer hedging, its budget,
    the calls made).
    """
    budget = budget_of(clock)
    inner = Hedging("inner", HedgingConfig(mode="fallback", max_attempts=1), clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=2))
    pipeline, outer = hedged_over(clock, budget, inner.as_strategy("p"), bulkhead.as_strategy("p"))
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: bulkhead.get_stats()["active"])
    others_turn = asyncio.Event()

    async def other_call() -> str:
        await others_turn.wait()
        return "other"

    other = asyncio.ensure_future(bulkhead.execute(other_call))
    await until(lambda: bulkhead.get_stats()["waiting"])
    clock.advance(0.02)  # the outer hedge starts; its inner race's original waits behind the other call
    await until(lambda: bulkhead.get_stats()["waiting"] == 2)
    release.set()
    assert await task == "quote"
    others_turn.set()
    assert await other == "other"
    assert asyncio.all_tasks() == {asyncio.current_task()}
    return outer, budget, len(calls)


async def test_an_outer_hedge_whose_inner_race_is_still_queued_when_the_original_answers_is_no_hedge_sent(
    clock: FakeClock, recorder: Any, task_factory: str
) -> None:
    """The outer hedge is still queued (in its inner race) when the original wins: it ran nothing.

    As a hedge queued itself: no hedge sent, its withdrawal given back. Before: the outer hedging
    counted it in ``hedges`` (a ``HEDGE_STARTED``) and kept the budget's retry, for 1 call.
    """
    outer, budget, calls = await run_an_outer_hedge_queued_in_its_inner_race(clock)
    assert calls == 1
    assert budget.get_stats()["retries"] == 0
    stats = outer.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 0, 1)
    assert recorder.of(Event.HEDGE_STARTED) == []


async def test_an_outer_original_wins_over_nothing_while_the_outer_hedges_inner_race_is_still_queued(
    clock: FakeClock, recorder: Any, otel: Any, task_factory: str
) -> None:
    """The outer hedge, queued in its inner race, ran nothing: the original's answer is no win of a race.

    No ``hedge_won`` and no ``resilience.hedging.wins``, as over a hedge queued itself. Before: one
    of each for the original, reported as it won, before the inner race was stopped.
    """
    await run_an_outer_hedge_queued_in_its_inner_race(clock)
    assert recorder.of(Event.HEDGE_WON) == []
    wins = [p.value for p in otel.points(sc.HEDGE_WINS) if p.attributes[sc.NAME] == "h"]
    assert not any(wins)


async def run_an_outer_hedge_whose_inner_race_hedged_while_queued(
    clock: FakeClock,
) -> tuple[Hedging, RetryBudget, int]:
    """Two hedgings that both hedge: the outer hedge's inner race starts a hedge, and both its attempts queue.

    The inner hedging (delay 0.01 s) hedges the attempt queued for the slot the original holds:
    that hedge queues too. The original then answers and wins. Returns (the outer hedging, its
    budget, the calls made).
    """
    budget = budget_of(clock)
    inner = Hedging("inner", HedgingConfig(delay=0.01, max_attempts=2), clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=4))
    pipeline, outer = hedged_over(clock, budget, inner.as_strategy("p"), bulkhead.as_strategy("p"))
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: bulkhead.get_stats()["active"])
    others_turn = asyncio.Event()

    async def other_call() -> str:
        await others_turn.wait()
        return "other"

    other = asyncio.ensure_future(bulkhead.execute(other_call))
    await until(lambda: bulkhead.get_stats()["waiting"])
    # The original's inner hedge, the outer hedge's inner original and its inner hedge queue.
    await until(lambda: bulkhead.get_stats()["waiting"] == 4)
    assert inner.get_stats()["executions"] == 2
    release.set()
    assert await task == "quote"
    others_turn.set()
    assert await other == "other"
    assert asyncio.all_tasks() == {asyncio.current_task()}
    return outer, budget, len(calls)


async def test_an_outer_hedge_whose_inner_race_hedged_while_every_attempt_queued_is_no_hedge_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """Every attempt of the outer hedge's inner race is still queued when the original wins: it ran nothing.

    No hedge sent, its withdrawal given back, no win over it. Before: the inner hedge took a
    number, which made the outer hedge count as run: ``hedges`` 1, a ``HEDGE_STARTED``, the
    budget's retry kept and a ``HEDGE_WON`` for the original, for 1 call.
    """
    outer, budget, calls = await run_an_outer_hedge_whose_inner_race_hedged_while_queued(clock)
    assert calls == 1
    assert budget.get_stats()["retries"] == 0
    stats = outer.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 0, 1)
    assert [s.name for s in recorder.sources(Event.HEDGE_STARTED)] == []
    assert [s.name for s in recorder.sources(Event.HEDGE_WON)] == []


async def test_an_outer_hedge_whose_inner_original_ran_while_its_inner_hedge_queued_was_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """Two slots: the outer hedge's inner original gets the second and calls; its inner hedge queues.

    The outer hedge called the dependency (its inner hedge, queued, did not): a hedge sent, and
    the original's answer is a win over it.
    """
    budget = budget_of(clock)
    inner = Hedging("inner", HedgingConfig(delay=0.05, max_attempts=2), clock=clock)
    bulkhead = Bulkhead("slots", BulkheadConfig(max_concurrent=2, max_waiting=4))
    pipeline, outer = hedged_over(clock, budget, inner.as_strategy("p"), bulkhead.as_strategy("p"))
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        if len(calls) > 1:
            await asyncio.Event().wait()  # the outer hedge's call never answers
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: bulkhead.get_stats()["waiting"] == 2)  # both inner hedges queue
    assert len(calls) == 2
    release.set()
    assert await task == "quote"
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert budget.get_stats()["retries"] == 1
    stats = outer.get_stats()
    assert (stats["hedges"], stats["original_wins"]) == (1, 1)
    assert "h" in [s.name for s in recorder.sources(Event.HEDGE_STARTED)]
    assert [s.name for s in recorder.sources(Event.HEDGE_WON)] == ["h"]


async def test_an_outer_hedge_whose_inner_hedge_was_turned_away_beside_a_queued_original_is_no_hedge_sent(
    clock: FakeClock, recorder: Any
) -> None:
    """Two hedgings, the inner in parallel mode: the outer hedge's inner original queues, its inner hedge meets a full queue.

    Neither attempt of the outer hedge's inner race ran (one waits, one was turned away) when the
    original wins: no hedge sent, its withdrawal given back, no win over it. Before: an inner
    attempt turned away counted as one that ran, and so did the outer hedge.
    """
    budget = budget_of(clock)
    inner = Hedging("inner", HedgingConfig(mode="parallel", max_attempts=2), clock=clock)
    bulkhead = Bulkhead("slot", BulkheadConfig(max_concurrent=1, max_waiting=3))
    pipeline, outer = hedged_over(clock, budget, inner.as_strategy("p"), bulkhead.as_strategy("p"))
    release = asyncio.Event()
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        await release.wait()
        return "quote"

    task = asyncio.ensure_future(pipeline.execute(answer))
    await until(lambda: bulkhead.get_stats()["waiting"] == 1)  # the original's inner hedge
    others_turn = asyncio.Event()

    async def other_call() -> str:
        await others_turn.wait()
        return "other"

    other = asyncio.ensure_future(bulkhead.execute(other_call))
    await until(lambda: bulkhead.get_stats()["waiting"] == 2)
    clock.advance(0.02)  # the outer hedge starts: its inner original queues, its inner hedge is rejected
    await until(lambda: inner.get_stats()["hedges_denied"])
    assert bulkhead.get_stats()["waiting"] == 3
    release.set()
    assert await task == "quote"
    others_turn.set()
    assert await other == "other"
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert calls == [1]
    assert budget.get_stats()["retries"] == 0
    stats = outer.get_stats()
    assert (stats["hedges"], stats["hedges_denied"], stats["original_wins"]) == (0, 0, 1)
    assert [s.name for s in recorder.sources(Event.HEDGE_STARTED)] == []
    assert [s.name for s in recorder.sources(Event.HEDGE_WON)] == []


class _Rejected(Wait):
    """A wait for an admission that rejects the attempt."""

    async def wait(self) -> None:
        raise ExecutionRejectedError("no room")


class _RejectsTheOriginal(Step):
    """A step of our own that turns the first attempt away."""

    kind: ClassVar[str] = "rejects_the_original"

    def admit(self, ctx: ExecutionContext) -> Any:
        return _Rejected() if ctx.attempt == 1 else None


async def test_a_win_over_a_hedge_that_ran_beside_an_original_turned_away_in_its_inner_race_is_reported(
    clock: FakeClock, recorder: Any
) -> None:
    """Two hedgings, the outer in parallel mode: the outer original's inner race is turned away, hedge 2 hangs, hedge 3 answers.

    The outer original called nothing (it is turned away, not held back: counted once, as such);
    the two hedges ran, so hedge 3's answer is a win over hedge 2.
    """
    inner = Hedging("inner", HedgingConfig(mode="fallback", max_attempts=1), clock=clock)
    outer = Hedging("h", HedgingConfig(mode="parallel", max_attempts=3), clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock)
        .add(outer.as_strategy("p"))
        .add(inner.as_strategy("p"))
        .add(_RejectsTheOriginal())
        .build()
    )
    calls: list[int] = []

    async def answer() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.Event().wait()  # hedge 2 never answers
        for _ in range(10):  # hedge 3 answers once the original was turned away
            await asyncio.sleep(0)
        return "quote"

    assert await pipeline.execute(answer) == "quote"
    assert len(calls) == 2
    stats = outer.get_stats()
    assert (stats["hedges"], stats["hedge_wins"]) == (2, 1)
    assert [(won.attempt, won.attempt_type) for won in recorder.of(Event.HEDGE_WON)] == [(3, "hedge")]
