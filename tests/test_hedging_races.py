"""Hedging's guarantees about its tasks: cancelled and awaited, no orphan, no warning; async only; in a policy."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hedging_support import HANG, Dependency, Gate
from support import converted_cancellation

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    FallbackConfig,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    resilient,
)
from otel_resilience.engine.events import Event
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.hedge import Hedge
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.testing import EventRecorder, FakeClock

_ROOT = Path(__file__).resolve().parent.parent


async def test_a_cancelled_caller_cancels_and_awaits_every_attempt(clock: FakeClock) -> None:
    """Cancelling the caller mid-race: every attempt is cancelled and has ended before CancelledError arrives."""
    dependency = Dependency(HANG)
    h = Hedging("h", HedgingConfig(delay=0.01, max_attempts=3), clock=clock)
    call = asyncio.ensure_future(h.call(dependency))
    while len(dependency.calls) < 3:
        await asyncio.sleep(0)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert sorted(dependency.cancelled) == sorted(dependency.finished) == [0, 1, 2]
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert h.get_stats()["cancelled"] == 1


async def test_a_caller_cancelled_again_while_attempts_end_still_waits_for_them() -> None:
    """A second cancellation while the losers shut down does not leave one behind."""
    release = asyncio.Event()

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # shuts down slowly
        return "never"

    h = Hedging("h", HedgingConfig(mode="parallel"))
    call = asyncio.ensure_future(h.call(stubborn))
    for _ in range(5):
        await asyncio.sleep(0)
    call.cancel()
    await asyncio.sleep(0)
    call.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not call.done()  # still waiting for its attempts
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_caller_cancelled_again_while_attempts_end_is_counted_once_as_cancelled() -> None:
    """The race's end is counted although a second cancellation arrives while its attempts end.

    Before, that cancellation, re-raised once the attempts had ended, skipped the count:
    ``executions`` 1 but no outcome (``cancelled`` 0) and the hedge that ran uncounted.
    """
    release = asyncio.Event()
    started: list[int] = []

    async def stubborn() -> str:
        started.append(1)
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # shuts down slowly
        return "never"

    h = Hedging("h", HedgingConfig(mode="parallel"))
    call = asyncio.ensure_future(h.call(stubborn))
    while len(started) < 2:
        await asyncio.sleep(0)
    call.cancel()
    await asyncio.sleep(0)
    call.cancel()  # while the attempts end
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    stats = h.get_stats()
    ended = stats["original_wins"] + stats["hedge_wins"] + stats["failed"] + stats["cancelled"]
    assert (stats["executions"], ended, stats["cancelled"], stats["hedges"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("start", [0.0, 1e12], ids=["behind the system clock", "ahead of it"])
async def test_a_total_deadline_cancels_every_attempt(start: float) -> None:
    """A timeout around hedging: OperationTimeoutError, every attempt cancelled and ended.

    The hedging runs on a fake clock, the policy's timeout on the system's: the hedge asks how
    long is left of the deadline on the deadline's own clock, so the hedge by delay starts
    whatever the system clock reads (its uptime), behind or far ahead of the fake one.
    """
    dependency = Dependency(HANG)
    h = Hedging("h", HedgingConfig(delay=0.001), clock=FakeClock(start))
    manager = ResilienceManager()
    with pytest.raises(OperationTimeoutError):
        await manager.execute_with_resilience(
            h.call, ResilienceConfig(name="deadline", timeout=0.2), dependency
        )
    assert sorted(dependency.cancelled) == sorted(dependency.finished) == [0, 1]


async def test_no_hedge_by_delay_starts_at_or_past_the_total_deadline(clock: FakeClock) -> None:
    """A hedge delay that ends past the policy's deadline is not waited on the clock: no hedge starts."""
    dependency = Dependency(HANG)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(name="late", timeout=0.1, hedging=HedgingConfig(delay=0.2, max_attempts=3))
    with pytest.raises(OperationTimeoutError):
        await manager.execute_with_resilience(dependency, config)
    assert len(dependency.calls) == 1  # the original only: a hedge at t+0.2 would start past t+0.1
    assert clock.sleeps == []  # nor was the clock moved past the deadline by the hedge delay
    assert sorted(dependency.cancelled) == [0]


async def test_no_hedge_by_failure_starts_past_the_total_deadline(clock: FakeClock) -> None:
    """An attempt that fails after the deadline passed starts no hedge, and takes nothing from the budget."""
    calls: list[float] = []

    async def slow_failure() -> str:
        calls.append(clock.now())
        clock.advance(0.5)  # past the 0.1 s deadline, then fails
        await asyncio.sleep(0)
        raise ConnectionError("down")

    budget = RetryBudget(ratio=1.0, clock=clock)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name="late-failure",
        timeout=0.1,
        hedging=HedgingConfig(mode="fallback", max_attempts=3, budget=budget),
    )
    with pytest.raises((ConnectionError, OperationTimeoutError)):
        await manager.execute_with_resilience(slow_failure, config)
    assert calls == [1000.0]
    assert budget.get_stats()["retries"] == 0


async def test_a_loser_gives_back_what_the_steps_inside_took() -> None:
    """Each attempt holds its own bulkhead slot; the cancelled loser's slot is released."""
    bulkhead = Bulkhead("pool", BulkheadConfig(max_concurrent=2))
    h = Hedging("h", HedgingConfig(mode="parallel"))
    pipeline = PipelineBuilder("p").add(h.as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    gate = Gate("fast")
    call = asyncio.ensure_future(pipeline.execute(Dependency(HANG, gate)))
    while bulkhead.get_stats()["active"] < 2:
        await asyncio.sleep(0)
    gate.event.set()
    assert await call == "fast"
    assert bulkhead.get_stats()["active"] == 0


async def test_a_loser_waiting_for_the_winners_bulkhead_slot_never_calls_the_dependency(
    clock: FakeClock,
) -> None:
    """The hedge queued for the one slot the original holds: the original's answer hands it the slot
    and wins in one turn of the loop; the hedge is cancelled in that turn, so it never calls the
    dependency (it took the slot and called it after the race was won, and ran to its end)."""
    bulkhead = Bulkhead("one-slot", BulkheadConfig(max_concurrent=1))
    h = Hedging("h-queued-loser", HedgingConfig(delay=0.01, max_attempts=2), clock=clock)
    pipeline = PipelineBuilder("p").add(h.as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    gate = Gate("original")
    dependency = Dependency(gate, "hedge")

    async def release_once_the_hedge_waits() -> None:
        while bulkhead.get_stats()["waiting"] < 1:
            await asyncio.sleep(0)
        gate.event.set()

    releaser = asyncio.ensure_future(release_once_the_hedge_waits())
    assert await pipeline.execute(dependency) == "original"
    await releaser
    assert len(dependency.calls) == 1
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["active"], stats["waiting"]) == (1, 0, 0)
    # The hedge never left the queue: no hedge sent (test_hedging_queued_hedges.py).
    assert (h.get_stats()["hedges"], h.get_stats()["original_wins"]) == (0, 1)
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.skipif(
    sys.version_info < (3, 11),
    reason="Task.cancelling() is Python 3.11+: on 3.10 the loser's converted cancellation is retried",
)
async def test_a_loser_whose_dependency_converts_the_race_s_cancellation_is_not_retried_inside(
    clock: FakeClock,
) -> None:
    """The race cancels a loser whose dependency raises its own error in place of the cancellation.

    The retry inside the attempt runs nothing again: its task is being cancelled. Retrying would
    keep the race waiting for the loser (a further attempt that hangs is never cancelled again).
    """
    h = Hedging("h-converted-loser", HedgingConfig(mode="parallel", max_attempts=2), clock=clock)
    retry = Retry("r-converted-loser", RetryPolicy(max_attempts=3), clock=clock)
    pipeline = PipelineBuilder("p").add(h.as_strategy("p")).add(retry.as_strategy("p")).build()
    hedge_running = asyncio.Event()
    calls = 0

    async def original_wins_hedge_converts() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await hedge_running.wait()
            return "original"
        if calls > 2:  # a retry of the loser
            return "late"
        hedge_running.set()
        return await converted_cancellation("cancelled")

    assert await asyncio.wait_for(pipeline.execute(original_wins_hedge_converts), 5) == "original"
    assert calls == 2
    stats = retry.get_stats()
    assert (stats["retries"], stats["cancelled"], stats["first_attempt_successes"]) == (0, 1, 1)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_an_interrupt_in_an_attempt_ends_the_race() -> None:
    """A BaseException other than cancellation (here the driver's wrong-function signal) is not an outcome."""
    h = Hedging("h", HedgingConfig(mode="parallel"))
    with pytest.raises(TypeError, match="awaitable"):
        await h.call(lambda: "not awaitable")  # type: ignore[arg-type, return-value]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_an_interrupt_starts_no_attempt_that_has_not_run_yet() -> None:
    """A plain function given to the async API is refused after one call, as without hedging.

    In parallel mode the hedges' tasks were made beside the original's; the original's wrong-driver
    signal ends the race before they first run, so none of them calls the function again (a sync
    function with a side effect, called once per attempt before the refusal, did it three times).
    """
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "charged"

    h = Hedging("h", HedgingConfig(mode="parallel", max_attempts=3))
    with pytest.raises(TypeError, match="awaitable"):
        await h.call(charge)  # type: ignore[arg-type]
    assert len(calls) == 1
    assert h.get_stats()["hedges"] == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_cancellation_the_dependency_raises_itself_ends_the_race_unchanged(
    otel: Any, clock: FakeClock
) -> None:
    """The original's dependency raises CancelledError itself (it awaited a future cancelled
    elsewhere; its task was not cancelled): no hedge starts after it, the caller gets that very
    error, and the execution is cancelled, not failed."""
    own = asyncio.CancelledError("the shared fetch was cancelled")
    dependency = Dependency(own, "hedge answered")
    h = Hedging("h-own-cancel", HedgingConfig(delay=10.0, max_attempts=3), clock=clock)
    with pytest.raises(asyncio.CancelledError) as info:
        await h.call(dependency)
    assert info.value is own
    assert len(dependency.calls) == 1
    stats = h.get_stats()
    assert (stats["hedges"], stats["cancelled"], stats["failed"]) == (0, 1, 0)
    assert otel.span("h-own-cancel").attributes["resilience.outcome"] == "cancelled"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_cancellation_a_judgment_raises_ends_the_race_unchanged(otel: Any, clock: FakeClock) -> None:
    """``hedge_on_result`` raises CancelledError for the original's result: as the dependency raising
    it, it ends the race and reaches the caller, and the original's attempt span ends.

    It was swallowed: the attempt's task ended cancelled as a loser's does, the race started the
    hedge and returned its result, and the original's attempt span never ended.
    """
    own = asyncio.CancelledError("from the judgment")

    def judge(result: str) -> bool:
        if result == "original":
            raise own
        return False

    dependency = Dependency("original", "hedge")
    config = HedgingConfig(mode="fallback", max_attempts=2, hedge_on_result=judge)
    h = Hedging("h-judged-cancel", config, clock=clock)
    with pytest.raises(asyncio.CancelledError) as info:
        await h.call(dependency)
    assert info.value is own
    assert len(dependency.calls) == 1
    stats = h.get_stats()
    assert (stats["hedges"], stats["cancelled"], stats["hedge_wins"]) == (0, 1, 0)
    [attempt] = otel.spans("h-judged-cancel attempt")
    assert attempt.attributes["resilience.outcome"] == "cancelled"
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_hedges_own_cancellation_ends_the_race_and_cancels_the_original(clock: FakeClock) -> None:
    """A hedge whose dependency raises CancelledError itself ends the race as an interrupt would: the
    original still running is cancelled and awaited (never left to answer and swallow it), and the
    caller gets the hedge's error."""
    own = asyncio.CancelledError("the hedge's shared fetch was cancelled")
    gate = Gate("original answered")
    dependency = Dependency(gate, own)
    h = Hedging("h-own-cancel-hedge", HedgingConfig(delay=0.5, max_attempts=2), clock=clock)

    async def release_the_original_once_the_hedge_raised() -> None:
        while len(dependency.calls) < 2:
            await asyncio.sleep(0)
        for _ in range(5):
            await asyncio.sleep(0)
        gate.event.set()

    releaser = asyncio.ensure_future(release_the_original_once_the_hedge_raised())
    with pytest.raises(asyncio.CancelledError) as info:
        await h.call(dependency)
    await releaser
    assert info.value is own
    assert 0 in dependency.cancelled  # the original was cancelled (the hedge's own error is there too)
    assert sorted(dependency.finished) == [0, 1]
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_hedge_waiting_for_the_slot_of_an_original_that_ended_the_race_never_calls(
    clock: FakeClock,
) -> None:
    """The original, holding the one bulkhead slot, raises a cancellation of its own: the race is over.

    The hedge queued for that slot is cancelled in the turn the race ended, so it never calls the
    dependency (it took the slot the original gave back and called it, to its end, while the
    caller got the original's cancellation).
    """
    own = asyncio.CancelledError("the shared fetch was cancelled")
    bulkhead = Bulkhead("one-slot-own-cancel", BulkheadConfig(max_concurrent=1))
    h = Hedging("h-own-cancel-queued", HedgingConfig(delay=0.01, max_attempts=2), clock=clock)
    pipeline = PipelineBuilder("p").add(h.as_strategy("p")).add(bulkhead.as_strategy("p")).build()
    opened = asyncio.Event()
    calls: list[int] = []

    async def dependency() -> str:
        calls.append(1)
        if len(calls) == 1:
            await opened.wait()
            raise own
        await asyncio.sleep(0)
        return "hedge"

    async def release_once_the_hedge_waits() -> None:
        while bulkhead.get_stats()["waiting"] < 1:
            await asyncio.sleep(0)
        opened.set()

    releaser = asyncio.ensure_future(release_once_the_hedge_waits())
    with pytest.raises(asyncio.CancelledError) as info:
        await pipeline.execute(dependency)
    await releaser
    assert info.value is own
    assert calls == [1]
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["active"], stats["waiting"]) == (1, 0, 0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_an_answer_before_the_hedges_ran_starts_none_of_them(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """Parallel mode: the original answers before the hedges' tasks first ran; they never call the dependency.

    The race is decided before they run, as it is decided before they are made when tasks start
    eagerly: they are counted nowhere, their withdrawals go back to the budget, and the original
    won no race (only one attempt ran: no ``hedge_won``).
    """
    budget = RetryBudget(ratio=10.0, min_retries_per_second=0.0, clock=clock)
    calls: list[int] = []

    async def cached() -> str:
        calls.append(1)
        if len(calls) == 1:
            return "cached"  # no suspension: answered in its first step
        await asyncio.sleep(0)
        return "fetched"

    h = Hedging("h", HedgingConfig(mode="parallel", max_attempts=3, budget=budget), clock=clock)
    assert await h.call(cached) == "cached"
    assert len(calls) == 1
    stats = h.get_stats()
    assert (stats["hedges"], stats["original_wins"]) == (0, 1)
    assert budget.get_stats()["retries"] == 0
    assert recorder.of(Event.HEDGE_STARTED) == recorder.of(Event.HEDGE_WON) == []
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_hedging_is_async_only() -> None:
    """The sync driver, a sync function decorated, and a hedge token waited in a thread raise TypeError."""
    h = Hedging("h", HedgingConfig(delay=0.1))
    with pytest.raises(TypeError, match=r"hedging 'h' is async only"):
        h.run_sync(lambda: 1)
    with pytest.raises(TypeError, match=r"hedging 'h' is async only"):
        h.protect(lambda: 1)
    with pytest.raises(TypeError, match="hedging is async only"):
        Hedge(2, on_failure=True).wait_sync()
    assert h.get_stats()["executions"] == 0


async def test_a_hedging_step_cannot_guard_a_block() -> None:
    """A hedge runs the rest of the chain itself: as a guard it refuses."""
    pipeline = PipelineBuilder("g").add(Hedging("h", HedgingConfig(delay=0.1)).as_strategy()).build()
    with pytest.raises(TypeError, match="cannot guard a block"):
        async with Guard(pipeline):
            pass


def test_a_hedging_step_refuses_to_guard_a_block_in_a_thread() -> None:
    """In a thread the guard's entry is refused with TypeError (the driver's refusal), counted as a failure."""
    pipeline = PipelineBuilder("g").add(Hedging("h", HedgingConfig(delay=0.1)).as_strategy()).build()
    with pytest.raises(TypeError, match="hedging 'h' is async only"), Guard(pipeline):
        pass
    assert (pipeline.stats.total, pipeline.stats.errors) == (1, 1)


async def test_protect_keeps_an_async_function() -> None:
    """protect() of an async function hedges each call."""
    h = Hedging("h", HedgingConfig(mode="fallback"))
    dependency = Dependency(ConnectionError("x"), "second")

    @h.protect
    async def fetch() -> str:
        return str(await dependency())

    assert await fetch() == "second"


def test_a_policy_with_hedging_refuses_sync_functions() -> None:
    """The manager's sync API and @resilient on a sync function raise TypeError naming hedging."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="sync", hedging=HedgingConfig(delay=0.1))
    with pytest.raises(TypeError, match=r"hedging 'sync' is async only"):
        manager.execute_with_resilience_sync(lambda: 1, config)
    with pytest.raises(TypeError, match=r"resilient: policy 'sync' hedges"):
        resilient(config, manager=manager)(lambda: 1)


def test_a_policy_refusing_hedging_in_sync_is_neither_retried_nor_answered_by_its_fallback(
    clock: FakeClock,
) -> None:
    """The refusal is a wrong driver, no failure: retry does not retry it, the fallback does not answer it."""
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name="sync-refused",
        hedging=HedgingConfig(delay=0.1),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=1.0),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
    )
    calls: list[int] = []
    with pytest.raises(TypeError, match=r"hedging 'sync-refused' is async only") as caught:
        manager.execute_with_resilience_sync(lambda: calls.append(1), config)
    assert calls == []
    assert clock.sleeps == []  # no backoff
    assert not getattr(caught.value, "__notes__", None)  # no retry gave up on it
    counts = manager.get_resilience_statistics()["policies"]["sync-refused"]
    assert (counts["total"], counts["failed"], counts["fallback"]) == (1, 1, 0)


async def test_the_policy_places_hedging_inside_retry_and_outside_the_breaker() -> None:
    """ResilienceConfig.hedging: its link sits between retry and the breaker."""
    manager = ResilienceManager()
    config = ResilienceConfig(
        name="placed",
        hedging=HedgingConfig(mode="fallback"),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0),
    )
    kinds = [kind for kind, _, _ in manager.pipeline_for(config, "placed").describe()]
    assert kinds == ["retry", "hedging"]
    dependency = Dependency(ConnectionError("1"), ConnectionError("2"), "third")
    assert await manager.execute_with_resilience(dependency, config) == "third"
    assert len(dependency.calls) == 3  # one race of two, then a retry


async def test_a_policy_shares_the_retry_budget_with_hedging_and_deposits_once() -> None:
    """Hedges draw on retry_policy.budget; the execution deposits once (by the retry), not twice."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, clock=clock)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(
        name="shared",
        hedging=HedgingConfig(mode="fallback"),
        retry_policy=RetryPolicy(max_attempts=1, budget=budget),
    )
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(
                await manager.execute_with_resilience(Dependency(ConnectionError("x"), "ok"), config)
            )
        except ConnectionError:
            outcomes.append("denied")
    assert outcomes == ["ok", "denied", "ok", "denied"]  # retries < 0.5 x first attempts
    stats = budget.get_stats()
    assert (stats["first_attempts"], stats["retries"], stats["denied"]) == (4, 2, 2)


def test_no_warning_and_no_orphan_under_asyncio_debug() -> None:
    """Under -W error and PYTHONASYNCIODEBUG=1 a run of races prints nothing and exits 0."""
    script = textwrap.dedent(
        """
        import asyncio, gc
        from otel_resilience import Hedging, HedgingConfig, ResilienceConfig, ResilienceManager

        async def hang():
            await asyncio.Event().wait()

        async def fast():
            await asyncio.sleep(0)
            return "ok"

        async def main():
            asyncio.get_running_loop().slow_callback_duration = 60.0  # a loaded machine is not a bug
            calls = []
            async def slow_then_fast():
                calls.append(1)
                if len(calls) % 2:
                    await hang()
                return await fast()
            latency = Hedging("latency", HedgingConfig(delay=0.001, max_attempts=3))
            parallel = Hedging("parallel", HedgingConfig(mode="parallel", max_attempts=3))
            for _ in range(20):
                assert await latency.call(slow_then_fast) == "ok"
                assert await parallel.call(slow_then_fast) == "ok"
            try:
                await asyncio.wait_for(parallel.call(hang), 0.01)
            except asyncio.TimeoutError:
                pass
            manager = ResilienceManager()
            config = ResilienceConfig(name="t", timeout=0.01, hedging=HedgingConfig(delay=0.001))
            try:
                await manager.execute_with_resilience(hang, config)
            except TimeoutError:
                pass
            gc.collect()
            assert asyncio.all_tasks() == {asyncio.current_task()}

        asyncio.run(main())
        gc.collect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONASYNCIODEBUG": "1", "PYTHONPATH": str(_ROOT)},
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
