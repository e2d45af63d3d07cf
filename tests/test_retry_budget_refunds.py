"""A retry the budget allowed but that never ran is given back, exactly.

Retry withdraws a retry from its budget before the backoff. When the retry does not run after
all (the execution is cancelled during the backoff or during ``on_retry``, a deadline ends the
wait, ``on_retry`` raises), the withdrawal leaves the count of the window's bucket it was made in,
and nothing changes once that bucket has left the window (a backoff may outlast the window). The
same holds for a hedge withdrawn from the budget whose attempt never ran.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from support import freed_on_a_closed_loop, until_sync

from otel_resilience import ErrorRecoverySystem, Hedging, HedgingConfig, RecoveryAction, RecoveryStrategy
from otel_resilience.engine.deadline import sleep_sync_within_deadline
from otel_resilience.engine.events import HUB, Event
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.patterns.retry import Jitter, Retry, RetryBudget, RetryPolicy, RetryStrategy
from otel_resilience.patterns.timeout import TimeoutHandler
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import EventRecorder, FakeClock


class Boom(ConnectionError):
    """The dependency's failure."""


class HangingBackoffClock(FakeClock):
    """A fake clock whose async sleeps (the backoffs) never end: only a cancellation ends them."""

    __slots__ = ()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.Event().wait()


def fixed(delay: float, budget: RetryBudget, **kwargs: Any) -> RetryPolicy:
    """A policy with a fixed backoff of ``delay`` seconds drawing on ``budget``."""
    return RetryPolicy(
        strategy=RetryStrategy.FIXED, initial_delay=delay, jitter=Jitter.NONE, budget=budget, **kwargs
    )


def floor_only(clock: FakeClock, retries: int = 10) -> RetryBudget:
    """A budget of ``retries`` retries per 10 s window, whatever the traffic (its floor alone)."""
    return RetryBudget(ratio=0.0, min_retries_per_second=retries / 10.0, window=10.0, clock=clock)


def failing() -> None:
    raise Boom("down")


async def afailing() -> None:
    raise Boom("down")


def counts(budget: RetryBudget) -> tuple[float, float, float]:
    """``(first_attempts, retries, available)`` of the budget now."""
    stats = budget.get_stats()
    return (stats["first_attempts"], stats["retries"], stats["available"])


async def until_backoff(clock: FakeClock, task: asyncio.Task[Any]) -> None:
    """Let ``task`` run until it waits in a backoff."""
    while not clock.sleeps:
        assert not task.done()
        await asyncio.sleep(0)


async def in_backoff(delay: float) -> tuple[HangingBackoffClock, RetryBudget, Retry, asyncio.Task[Any]]:
    """A retry of a fixed ``delay`` over a floor-only budget, its execution waiting in the backoff."""
    clock = HangingBackoffClock()
    budget = floor_only(clock)
    retry = Retry("dep", fixed(delay, budget), clock=clock)
    task = asyncio.ensure_future(retry.execute(afailing))
    await until_backoff(clock, task)
    return clock, budget, retry, task


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and see its cancellation reach its awaiter."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- the budget: a refund leaves the withdrawal's own bucket ----------------------------------------


def test_a_refund_leaves_the_bucket_the_withdrawal_was_counted_in(clock: FakeClock) -> None:
    """Refunded 5 s later (newer traffic counted since), the retry leaves its own bucket: no negative count later."""
    budget = floor_only(clock, 5)
    withdrawal = budget.withdraw()
    assert withdrawal is not None
    clock.advance(5.0)
    budget.deposit()  # other traffic: a newer bucket
    budget.refund(withdrawal)
    assert counts(budget) == (1, 0, 5)
    clock.advance(5.0)  # the withdrawal's bucket leaves the window, the deposit's stays
    assert counts(budget) == (1, 0, 5)


def test_a_refund_after_the_withdrawal_left_the_window_changes_nothing(clock: FakeClock) -> None:
    """A retry withdrawn 11 s before (window 10 s) no longer counts: its refund takes nothing off a newer one."""
    budget = floor_only(clock, 5)
    withdrawal = budget.withdraw()
    clock.advance(11.0)
    assert budget.try_withdraw()  # another retry, in the window
    budget.refund(withdrawal)
    assert counts(budget) == (0, 1, 4)


def test_a_denied_withdrawal_has_no_receipt_and_a_refund_never_goes_below_what_was_counted(
    clock: FakeClock,
) -> None:
    """``withdraw`` names an allowed retry, ``None`` a denied one; a refund of nothing counted takes nothing."""
    budget = floor_only(clock, 1)
    assert budget.withdraw() is not None
    assert budget.withdraw() is None
    assert budget.get_stats()["denied"] == 1
    budget.refund()  # the one just withdrawn
    budget.refund()  # nothing left to give back: no negative count
    assert counts(budget) == (0, 0, 1)


@pytest.mark.parametrize("receipt", [True, False, "0", 0.0])
def test_a_refund_of_what_is_no_receipt_is_a_type_error_and_gives_nothing_back(
    clock: FakeClock, receipt: object
) -> None:
    """``refund`` takes a receipt of ``withdraw`` (an ``int``) or ``None``, nothing else.

    Anything else was taken as it was: ``try_withdraw()``'s ``True`` given to ``refund`` (whose
    call takes no argument) was the receipt ``1``, another bucket's retry, and a string was
    silently ignored, the retry it meant never given back.
    """
    budget = floor_only(clock, 5)
    withdrawal = budget.withdraw()
    assert withdrawal is not None
    with pytest.raises(TypeError, match=r"^RetryBudget\.refund\.withdrawal must be a receipt"):
        budget.refund(receipt)  # type: ignore[arg-type]
    assert counts(budget) == (0, 1, 4)
    budget.refund(withdrawal)
    assert counts(budget) == (0, 0, 5)


# -- retry: a withdrawal that did not lead to an attempt -----------------------------------------------


async def test_a_cancellation_during_the_backoff_gives_the_retry_back() -> None:
    """The task is cancelled while it waits to retry: the retry never runs, and the budget has it back."""
    _, budget, retry, task = await in_backoff(1.0)
    assert counts(budget) == (1, 1, 9)
    await cancel(task)
    assert counts(budget) == (1, 0, 10)
    assert retry.get_stats()["cancelled"] == 1


async def test_a_retry_cancelled_buckets_later_leaves_its_own_bucket() -> None:
    """Cancelled 5 s into its backoff (newer retries counted since): it leaves its bucket, the newer ones stay."""
    clock, budget, _, task = await in_backoff(8.0)
    clock.advance(5.0)
    assert budget.try_withdraw()  # another execution's retry, in a newer bucket
    await cancel(task)
    assert counts(budget) == (1, 1, 9)
    clock.advance(5.0)  # the cancelled retry's bucket (and the first attempt's) leaves the window
    assert counts(budget) == (0, 1, 9)


async def test_a_backoff_longer_than_the_window_gives_back_nothing_when_cancelled() -> None:
    """Cancelled after a 15 s backoff (window 10 s): its retry no longer counts, and a newer one stays counted."""
    clock, budget, _, task = await in_backoff(15.0)
    clock.advance(14.0)
    assert budget.try_withdraw()  # another execution's retry, in the window
    clock.advance(1.0)
    await cancel(task)
    assert counts(budget) == (0, 1, 9)


async def test_a_deadline_ending_the_backoff_gives_the_retry_back_async() -> None:
    """An enclosing timeout ends the backoff (the task is cancelled at its deadline): the retry is given back."""
    clock = HangingBackoffClock()
    budget = floor_only(clock)
    retry = Retry("dep", fixed(0.01, budget), clock=clock)
    timeout = TimeoutHandler(0.05, name="deadline", clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(timeout.as_strategy("p")).add(retry.as_strategy("p")).build()
    )
    with pytest.raises(OperationTimeoutError):
        await pipeline.execute(afailing)
    assert clock.sleeps == [0.01]  # the deadline ended the backoff
    assert counts(budget) == (1, 0, 10)


def test_a_deadline_reached_before_the_retry_gives_the_retry_back_sync(clock: FakeClock) -> None:
    """Sync: ``on_retry`` waits up to the enclosing deadline (which ends it): the retry is given back."""
    budget = floor_only(clock)
    calls: list[float] = []

    def dependency() -> None:
        calls.append(clock.now())
        raise Boom("down")

    def on_retry(attempt: int, error: BaseException | None) -> None:
        sleep_sync_within_deadline(clock, 60.0, "dep")  # the deadline, 5 s away, comes first

    retry = Retry("dep", fixed(1.0, budget), clock=clock, on_retry=on_retry)
    timeout = TimeoutHandler(5.0, name="deadline", clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(timeout.as_strategy("p")).add(retry.as_strategy("p")).build()
    )
    with pytest.raises(OperationTimeoutError):
        pipeline.execute_sync(dependency)
    assert calls == [1000.0]
    assert counts(budget) == (1, 0, 10)


def test_an_interrupt_during_a_sync_backoff_gives_the_retry_back() -> None:
    """A KeyboardInterrupt in the backoff's sleep: the retry never runs, the budget has it back."""

    class InterruptedClock(FakeClock):
        __slots__ = ()

        def sleep_sync(self, seconds: float) -> None:
            raise KeyboardInterrupt

    clock = InterruptedClock()
    budget = floor_only(clock)
    retry = Retry("dep", fixed(1.0, budget), clock=clock)
    with pytest.raises(KeyboardInterrupt):
        retry.execute_sync(failing)
    assert counts(budget) == (1, 0, 10)


async def test_an_on_retry_that_raises_gives_the_retry_back(driver: str, clock: FakeClock) -> None:
    """``on_retry`` raises on the second retry: the first retry ran and stays counted, the second is given back."""
    budget = floor_only(clock)
    hooks: list[int] = []

    def on_retry(attempt: int, error: BaseException | None) -> None:
        hooks.append(attempt)
        if attempt == 2:
            raise RuntimeError("on_retry failed")

    retry = Retry("dep", fixed(1.0, budget, max_attempts=5), clock=clock, on_retry=on_retry)
    with pytest.raises(RuntimeError, match="on_retry failed"):
        if driver == "sync":
            retry.execute_sync(failing)
        else:
            await retry.execute(afailing)
    assert hooks == [1, 2]
    assert counts(budget) == (1, 1, 9)


async def test_a_dropped_result_hook_that_raises_ends_the_execution_and_gives_the_retry_back(
    driver: str, clock: FakeClock
) -> None:
    """``retry_on_result.dropped`` raises before the second retry: the error ends it, that retry given back."""
    budget = floor_only(clock)
    told: list[object] = []

    class Pending:
        def __call__(self, result: object) -> bool:
            return result == "pending"

        def dropped(self, result: object) -> None:
            told.append(result)
            if len(told) == 2:
                raise RuntimeError("could not let the result go")

    retry = Retry("dep", fixed(1.0, budget, max_attempts=5, retry_on_result=Pending()), clock=clock)
    with pytest.raises(RuntimeError, match="could not let the result go"):
        if driver == "sync":
            retry.execute_sync(lambda: "pending")
        else:

            async def pending() -> str:
                return "pending"

            await retry.execute(pending)
    assert told == ["pending", "pending"]
    assert clock.sleeps == [1.0]
    assert counts(budget) == (1, 1, 9)


async def test_a_cancellation_during_an_async_dropped_result_hook_gives_the_retry_back() -> None:
    """The task is cancelled while ``retry_on_result.dropped`` awaits (before the first retry): given back."""
    clock = FakeClock()
    budget = floor_only(clock)
    entered = asyncio.Event()

    class Pending:
        def __call__(self, result: object) -> bool:
            return result == "pending"

        async def dropped(self, result: object) -> None:
            entered.set()
            await asyncio.Event().wait()

    async def pending() -> str:
        return "pending"

    retry = Retry("dep", fixed(1.0, budget, retry_on_result=Pending()), clock=clock)
    task = asyncio.ensure_future(retry.execute(pending))
    await entered.wait()
    await cancel(task)
    assert clock.sleeps == []
    assert counts(budget) == (1, 0, 10)


def test_an_interrupt_in_a_sync_dropped_result_hook_gives_the_retry_back(clock: FakeClock) -> None:
    """A KeyboardInterrupt raised by ``retry_on_result.dropped`` before the first retry: given back."""
    budget = floor_only(clock)

    class Pending:
        def __call__(self, result: object) -> bool:
            return result == "pending"

        def dropped(self, result: object) -> None:
            raise KeyboardInterrupt

    retry = Retry("dep", fixed(1.0, budget, retry_on_result=Pending()), clock=clock)
    with pytest.raises(KeyboardInterrupt):
        retry.execute_sync(lambda: "pending")
    assert clock.sleeps == []
    assert counts(budget) == (1, 0, 10)


def test_an_interrupt_letting_a_late_result_go_once_retrying_stopped_keeps_the_retry_that_ran(
    clock: FakeClock,
) -> None:
    """The second attempt returns after its ``attempt_timeout`` and retrying stops; ``dropped`` is
    interrupted letting that late result go: the first retry, which ran, stays withdrawn, and the
    execution is counted once (cancelled), not also as exhausted."""
    budget = floor_only(clock)
    calls: list[float] = []

    class Judge:
        def __call__(self, result: object) -> bool:
            return False

        def dropped(self, result: object) -> None:
            raise KeyboardInterrupt

    def dep() -> str:
        calls.append(clock.now())
        if len(calls) == 1:
            raise Boom("down")
        clock.advance(2.0)  # past the attempt timeout: a late result, dropped
        return "late"

    policy = fixed(1.0, budget, max_attempts=2, attempt_timeout=1.0, retry_on_result=Judge())
    retry = Retry("dep", policy, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        retry.execute_sync(dep)
    assert len(calls) == 2
    assert counts(budget) == (1, 1, 9)
    stats = retry.get_stats()
    assert (stats["executions"], stats["cancelled"], stats["exhausted"]) == (1, 1, 0)


def test_a_late_result_let_go_once_retrying_stopped_counts_the_stop_once(clock: FakeClock) -> None:
    """The same stop, ``dropped`` returning or raising: counted once, as exhausted, the retry that ran kept."""
    budget = floor_only(clock)
    calls: list[float] = []

    class Judge:
        def __call__(self, result: object) -> bool:
            return False

        def dropped(self, result: object) -> None:
            if len(calls) > 2:
                raise RuntimeError("could not let the result go")

    def dep() -> str:
        calls.append(clock.now())
        if len(calls) % 2:
            raise Boom("down")
        clock.advance(2.0)
        return "late"

    policy = fixed(1.0, budget, max_attempts=2, attempt_timeout=1.0, retry_on_result=Judge())
    retry = Retry("dep", policy, clock=clock)
    with pytest.raises(OperationTimeoutError):
        retry.execute_sync(dep)
    with pytest.raises(RuntimeError, match="could not let the result go"):
        retry.execute_sync(dep)
    assert len(calls) == 4
    assert counts(budget) == (2, 2, 8)
    stats = retry.get_stats()
    assert (stats["executions"], stats["exhausted"], stats["cancelled"]) == (2, 2, 0)


async def test_a_cancellation_during_an_async_on_retry_gives_the_retry_back() -> None:
    """The task is cancelled while an async ``on_retry`` awaits (before the first retry): the retry is given back."""
    clock = FakeClock()
    budget = floor_only(clock)
    entered = asyncio.Event()

    async def on_retry(attempt: int, error: BaseException | None) -> None:
        entered.set()
        await asyncio.Event().wait()

    retry = Retry("dep", fixed(1.0, budget), clock=clock, on_retry=on_retry)
    task = asyncio.ensure_future(retry.execute(afailing))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts(budget) == (1, 0, 10)


def test_an_interrupt_in_a_sync_on_retry_gives_the_retry_back(clock: FakeClock) -> None:
    """A KeyboardInterrupt raised by ``on_retry`` before the first retry: the retry is given back."""
    budget = floor_only(clock)

    def on_retry(attempt: int, error: BaseException | None) -> None:
        raise KeyboardInterrupt

    retry = Retry("dep", fixed(1.0, budget), clock=clock, on_retry=on_retry)
    with pytest.raises(KeyboardInterrupt):
        retry.execute_sync(failing)
    assert counts(budget) == (1, 0, 10)


class InterruptAt:
    """A telemetry listener that raises ``KeyboardInterrupt`` when ``event`` is reported."""

    def __init__(self, event: Event) -> None:
        self.event = event

    def on_event(self, source: object, event: Event, args: object) -> None:
        if event is self.event:
            raise KeyboardInterrupt


async def test_a_listener_interrupted_as_the_retry_is_reported_gives_the_retry_back(
    driver: str, clock: FakeClock
) -> None:
    """An interrupt from a listener of ``retry_scheduled``: the retry withdrawn never runs, the budget has it back."""
    budget = floor_only(clock)
    retry = Retry("dep", fixed(1.0, budget), clock=clock)
    listener = InterruptAt(Event.RETRY_SCHEDULED)
    HUB.add_listener(listener)
    try:
        with pytest.raises(KeyboardInterrupt):
            if driver == "sync":
                retry.execute_sync(failing)
            else:
                await retry.execute(afailing)
    finally:
        HUB.remove_listener(listener)
    assert clock.sleeps == []
    assert counts(budget) == (1, 0, 10)


def test_a_recovery_re_run_whose_retry_never_runs_gives_it_back(clock: FakeClock) -> None:
    """A recovery runs the retry again; ``on_retry`` raises in the re-run: only the first run's retry counts."""
    budget = floor_only(clock)
    system = ErrorRecoverySystem(clock=clock)
    system.register_recovery_rule(
        Boom, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    hooks: list[int] = []

    def on_retry(attempt: int, error: BaseException | None) -> None:
        hooks.append(attempt)
        if len(hooks) == 2:
            raise RuntimeError("on_retry failed")

    retry = Retry("re-run-refund", fixed(0.0, budget, max_attempts=2), clock=clock, on_retry=on_retry)
    pipeline = (
        PipelineBuilder("policy", clock=clock)
        .add(system.as_strategy("policy"))
        .add(retry.as_strategy("policy"))
        .build()
    )
    calls: list[float] = []

    def dependency() -> None:
        calls.append(clock.now())
        raise Boom("down")

    with pytest.raises(RuntimeError, match="on_retry failed"):
        pipeline.execute_sync(dependency)
    assert len(calls) == 3  # the first run and its retry, then the re-run (whose retry never ran)
    assert counts(budget) == (1, 1, 9)


# -- hedging: a hedge withdrawn whose attempt never ran ---------------------------------------------


async def test_a_hedge_whose_attempt_never_ran_is_given_back(
    clock: FakeClock, recorder: EventRecorder
) -> None:
    """The race ends as the hedge's task is made (the delay function raises): the hedge is given back.

    And it is counted nowhere: neither in ``hedges`` nor as a ``HEDGE_STARTED`` event (the
    ``resilience.hedging.hedges`` metric), as it never ran.
    """
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    delays: list[int] = []

    def delay() -> float:
        delays.append(1)
        if len(delays) > 1:
            raise RuntimeError("delay failed")
        return 0.01

    hedging = Hedging("h", HedgingConfig(delay=delay, max_attempts=3, budget=budget), clock=clock)
    ran: list[int] = []

    async def dependency() -> str:
        ran.append(1)
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(RuntimeError, match="delay failed"):
        await hedging.call(dependency)
    assert ran == [1]  # the original only
    assert hedging.get_stats()["hedges"] == 0
    assert recorder.of(Event.HEDGE_STARTED) == []
    assert counts(budget) == (1, 0, 1)


# -- a task freed after its loop closed: never blocking on a lock ----------------------------------


@pytest.mark.parametrize("held", ["retry", "budget"])
def test_a_backoff_freed_after_its_loop_closed_gives_the_retry_back_without_blocking(held: str) -> None:
    """A task left in a backoff when its loop closed is freed by the garbage collector, which closes
    its coroutine on whichever thread allocates: maybe one that holds the retry's lock or its
    budget's. Neither blocks it: the cancellation is counted and the retry given back once the
    lock is free."""
    clock = HangingBackoffClock()
    budget = floor_only(clock)
    retry = Retry("freed-backoff", fixed(1.0, budget), clock=clock)
    lock = retry._core.lock if held == "retry" else budget._lock
    freed_on_a_closed_loop(lambda: retry.execute(afailing), lambda: clock.sleeps, lock, f"the {held}'s lock")
    until_sync(lambda: retry.get_stats()["cancelled"] == 1 and counts(budget) == (1, 0, 10))


def test_a_race_freed_after_its_loop_closed_gives_its_pending_hedge_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A race left pending when its loop closed, its hedge withdrawn but its task not run yet, is
    freed by the garbage collector, maybe on a thread that holds the budget's lock. The race ends
    counted cancelled and its hedge is given back; nothing is raised where nobody can catch it (a
    closed loop's tasks cannot be cancelled, and a coroutine being closed awaits nothing). The
    attempts' tasks, which never started, are left for the collector as any such task is."""
    clock = FakeClock()
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, clock=clock)
    config = HedgingConfig(mode="parallel", max_attempts=2, budget=budget)
    hedging = Hedging("freed-race", config, clock=clock)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    async def never() -> str:
        return "never"

    freed_on_a_closed_loop(lambda: hedging.call(never), None, budget._lock, "the budget's lock")
    # The hedge that never ran is given back (once the budget's lock is free).
    until_sync(lambda: hedging.get_stats()["cancelled"] == 1 and counts(budget) == (1, 0, 1))
    assert hedging.get_stats()["hedges"] == 0
    never_awaited = RuntimeWarning  # what asyncio says of any task its closed loop never started
    assert [u.exc_value for u in unraisable if u.exc_type is not never_awaited] == []


# -- the counts and the metric agree -----------------------------------------------------------------


def levels(otel: Any, name: str) -> list[float]:
    """The budget gauge's points of the retry ``name``."""
    return [p.value for p in otel.points(sc.RETRY_BUDGET_AVAILABLE) if p.attributes[sc.NAME] == name]


async def test_after_a_refund_get_stats_and_the_level_gauge_agree(otel: Any) -> None:
    """Cancelled in its backoff, the retry is given back: get_stats and the gauge show the full floor."""
    clock = HangingBackoffClock()
    budget = floor_only(clock)
    name = "refund-metrics"
    retry = Retry(name, fixed(1.0, budget), clock=clock)
    pipeline = PipelineBuilder("refunds", clock=clock).add(retry.as_strategy("refunds")).build()
    task = asyncio.ensure_future(pipeline.execute(afailing))
    await until_backoff(clock, task)
    assert levels(otel, name) == [budget.get_stats()["available"]] == [9]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert levels(otel, name) == [budget.get_stats()["available"]] == [10]
    assert retry.get_stats()["cancelled"] == 1
