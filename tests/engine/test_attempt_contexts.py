"""Attempts that run side by side get contexts of their own (ExecutionContext.fork).

A toy step runs the rest of the chain for two attempts at once, each in a forked context: the
engine and the pattern steps inside serve them unchanged, numbers stay unique per execution, the
cap in total is shared, and each attempt's outcome is its own.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from otel_resilience import Retry, RetryPolicy
from otel_resilience.engine import ExecutionContext, Outcome, PipelineBuilder
from otel_resilience.engine.step import Step
from otel_resilience.testing import AttemptRecorder, FakeClock


class Both(Step):
    """Runs the rest of the chain twice at once, each run in a forked context; answers with both."""

    __slots__ = ("children",)
    kind: ClassVar[str] = "both"

    def __init__(self) -> None:
        super().__init__()
        self.children: list[ExecutionContext] = []

    async def execute(self, ctx: ExecutionContext) -> Any:
        forks = [ctx.fork(), ctx.fork()]
        children = [child for child in forks if child is not None]
        self.children.extend(children)
        return await asyncio.gather(*(self.next.execute(child) for child in children))


def test_a_fork_takes_a_unique_number_and_shares_the_cap() -> None:
    ctx = ExecutionContext(print, (1,), {"k": 2}, "op", 4)
    ctx.properties = {"tenant": "a"}
    first, second = ctx.fork(), ctx.fork()
    assert first is not None
    assert second is not None
    assert (first.attempt, second.attempt, ctx.attempt) == (2, 3, 3)
    assert (first.fn, first.args, first.kwargs, first.operation) == (print, (1,), {"k": 2}, "op")
    assert first.parent is ctx
    assert ctx.parent is None
    assert first.properties == {"tenant": "a"}
    assert first.properties is not ctx.properties
    assert first.outcome is Outcome.SUCCESS  # its own
    assert first.next_attempt() == 4
    assert first.attempt == 4
    assert first.outcome is Outcome.RECOVERED
    assert second.next_attempt() is None
    assert ctx.fork() is None
    assert second.attempt == 3


def test_a_fork_is_no_rerun_of_the_contexts_it_starts_in() -> None:
    """An attempt started beside leaves the outcomes alone; a re-run inside it makes every one recovered.

    Two races in one chain: an attempt of the outer race starts a race of its own (its original,
    then a hedge). The hedge is one more attempt run inside the outer attempt (``branches``), not a
    re-run of it. Before: the fork made the outer attempt and the execution ``RECOVERED``, which
    read as the outer attempt having run.
    """
    ctx = ExecutionContext(print, (), {}, "op")
    outer = ctx.fork()
    assert outer is not None
    assert outer.fork(new_attempt=False) is not None
    hedge = outer.fork()
    assert hedge is not None
    assert (hedge.attempt, outer.attempt, ctx.attempt) == (3, 3, 3)
    assert (outer.outcome, ctx.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert (outer.branches, getattr(ctx, "branches", None)) == (2, None)
    assert hedge.next_attempt() == 4
    assert (hedge.outcome, outer.outcome, ctx.outcome) == (Outcome.RECOVERED,) * 3


async def test_parallel_attempts_run_through_unchanged_steps_in_contexts_of_their_own() -> None:
    clock = FakeClock()
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0)
        if mine <= 2:  # each attempt's first try fails once, then its retry succeeds
            raise ConnectionError("down")
        return mine

    recorder = AttemptRecorder()
    retry = Retry("inner", RetryPolicy(max_attempts=2, initial_delay=0.0), clock=clock)
    both = Both()
    pipeline = PipelineBuilder("par").add(both).add(retry.as_strategy("par")).add(recorder).build()
    results = await pipeline.execute(flaky)
    assert sorted(results) == [3, 4]
    # Attempt numbers unique per execution: 2 and 3 for the forks, 4 and 5 for their retries.
    assert sorted(recorder.seen) == [2, 3, 4, 5]
    assert sorted(child.attempt for child in both.children) == [4, 5]
    assert all(child.outcome is Outcome.RECOVERED for child in both.children)
    assert pipeline.stats.recovered == 1  # the execution itself: attempts after the first


@pytest.mark.parametrize("cap", [1, 2])
async def test_a_refused_fork_starts_no_attempt(cap: int) -> None:
    async def ok() -> str:
        return "ok"

    recorder = AttemptRecorder()
    both = Both()
    pipeline = PipelineBuilder("cap", max_attempts=cap).add(both).add(recorder).build()
    assert await pipeline.execute(ok) == ["ok"] * (cap - 1)
    assert sorted(recorder.seen) == list(range(2, cap + 1))
