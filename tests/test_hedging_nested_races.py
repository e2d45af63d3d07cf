"""Two hedgings in one chain: an outer race decided while an attempt's inner race had not run yet.

An outer attempt that runs a race of its own (a hedged call whose attempts are hedged too) ran
its action only once an attempt of that inner race ran. When the outer race is decided in the
turn of the loop between the outer hedge's start and its inner original's first run, that inner
original must not run (a call after the win), and the outer hedge ran nothing: no hedge sent, no
win over it reported, its withdrawal from the budget given back.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from otel_resilience import Hedging, HedgingConfig, RetryBudget
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import Event
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Step
from otel_resilience.testing import FakeClock


class GatedClock(FakeClock):
    """A fake clock whose async sleeps (the outer hedge delay) end when :attr:`gate` is set."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.gate = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        await self.gate.wait()


@pytest.mark.parametrize("turns", range(8))
async def test_an_outer_hedge_whose_inner_race_had_not_run_when_the_outer_original_won_ran_nothing(
    recorder: Any, turns: int
) -> None:
    """The outer hedge delay and the outer original's answer end together, ``turns`` loop turns apart.

    Whatever the order, no call reaches the dependency once the outer race is decided, and when
    only the outer original called it, no hedge was sent and no win over one is reported. Before
    (``turns`` 3): the outer hedge had entered, its inner original's task had not run yet when
    the outer original won: a ``hedge_won`` (attempt 1, original) over a hedge that called
    nothing, then that inner original called the dependency after the win (2 calls, ``hedges``
    1, the budget charged 1).
    """
    clock = GatedClock()
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    decided: list[bool] = []

    def judged(result: Any) -> bool:
        decided.append(True)  # the outer race judges an outer attempt's result as it is decided
        return False

    outer = Hedging(
        "outer", HedgingConfig(delay=0.01, max_attempts=2, budget=budget, hedge_on_result=judged), clock=clock
    )
    inner = Hedging("inner", HedgingConfig(mode="fallback", max_attempts=1), clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(outer.as_strategy("p")).add(inner.as_strategy("p")).build()
    )
    calls: list[bool] = []

    async def dependency() -> str:
        calls.append(bool(decided))  # whether the outer race was decided before this call
        if len(calls) == 1:
            await clock.gate.wait()
            for _ in range(turns):
                await asyncio.sleep(0)
            return "original"
        await asyncio.Event().wait()  # the outer hedge's: never answers
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(pipeline.execute(dependency))
    for _ in range(10):
        await asyncio.sleep(0)
    clock.gate.set()
    assert await task == "original"
    assert True not in calls  # no call after the outer race was decided
    stats = outer.get_stats()
    assert stats["original_wins"] == 1
    if len(calls) == 1:
        assert stats["hedges"] == 0
        assert budget.get_stats()["retries"] == 0
        assert recorder.of(Event.HEDGE_WON) == []
        assert recorder.of(Event.HEDGE_STARTED) == []
    else:
        assert stats["hedges"] == 1
        assert budget.get_stats()["retries"] == 1
        assert len(recorder.of(Event.HEDGE_WON)) == 1
    assert asyncio.all_tasks() == {asyncio.current_task()}


class CancelsTheCaller(Step):
    """A step of our own, between the two hedgings, that cancels :attr:`caller` as the outer hedge passes."""

    kind: ClassVar[str] = "cancels_the_caller"

    def __init__(self) -> None:
        super().__init__()
        self.caller: asyncio.Task[Any] | None = None

    def admit(self, ctx: ExecutionContext) -> Any:
        if ctx.attempt == 2 and self.caller is not None:
            self.caller.cancel()
        return None


async def test_an_outer_hedge_whose_inner_race_had_not_run_when_the_caller_was_cancelled_calls_nothing(
    recorder: Any,
) -> None:
    """The caller is cancelled as the outer hedge enters its inner race, before that race's original runs.

    The outer race stops as the cancellation reaches it, before the inner original's task runs:
    that original never runs, and the outer hedge is no hedge sent (``hedges`` 0, the budget
    given its withdrawal back). Before: the inner original called the dependency once the outer
    race had been stopped (2 calls), and was counted a hedge sent.
    """
    clock = GatedClock()
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    outer = Hedging("outer", HedgingConfig(delay=0.01, max_attempts=2, budget=budget), clock=clock)
    inner = Hedging("inner", HedgingConfig(mode="fallback", max_attempts=1), clock=clock)
    canceller = CancelsTheCaller()
    pipeline = (
        PipelineBuilder("p", clock=clock)
        .add(outer.as_strategy("p"))
        .add(canceller)
        .add(inner.as_strategy("p"))
        .build()
    )
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    task = asyncio.ensure_future(pipeline.execute(dependency))
    canceller.caller = task
    for _ in range(10):
        await asyncio.sleep(0)
    clock.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == [1]
    assert outer.get_stats()["hedges"] == 0
    assert budget.get_stats()["retries"] == 0
    assert recorder.of(Event.HEDGE_STARTED) == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
