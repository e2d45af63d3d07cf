"""Hedging and rejections: the policy's own breaker or bulkhead ends hedging; a rejection of an action's own does not."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
)
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.errors import BulkheadFullError
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


TASK_FACTORIES = ["lazy", "eager"] if sys.version_info >= (3, 12) else ["lazy"]
"""How the loop makes tasks: asyncio's way, and (3.12 on: ``asyncio.eager_task_factory``) eagerly."""


@pytest.fixture(params=TASK_FACTORIES)
async def task_factory(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The loop's tasks as asyncio makes them, or started eagerly (an attempt runs as it starts)."""
    loop = asyncio.get_running_loop()
    if request.param == "eager":
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    yield str(request.param)
    loop.set_task_factory(None)


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

    The original's answer is the execution's; the budget was charged only the hedge that ran.
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
    assert budget.get_stats()["retries"] == 1


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
