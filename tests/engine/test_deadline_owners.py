"""Who reports a deadline: a task that caught a cancellation, a sync call under an async timeout."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from forking_support import run_in_child

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    TimeoutHandler,
    fail_after,
    move_on_after,
)
from otel_resilience.engine import AsyncDeadline, SyncDeadline, current_deadline
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import DeadlineReachedError, sleep_sync_within_deadline
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.timer import loop_timer
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock


async def _catch_one_cancellation() -> None:
    """Cancel the running task and catch it, as `asyncio.shield`'s documented idiom does."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)
    if sys.version_info >= (3, 11):
        assert task.cancelling() == 1  # left up: the state every later scope must cope with


async def _handler() -> object:
    return await TimeoutHandler(0.05).with_timeout(asyncio.sleep, 30)


async def _handler_default() -> object:
    return await TimeoutHandler(0.05, default="default").with_timeout(asyncio.sleep, 30)


async def _fail_after() -> object:
    async with fail_after(0.05):
        await asyncio.sleep(30)
    return "unreachable"


async def _move_on_after() -> object:
    async with move_on_after(0.05) as scope:
        await asyncio.sleep(30)
    return f"moved on, expired={scope.expired}"


async def _manager_fallback() -> object:
    config = ResilienceConfig(
        name="caught-cancellation",
        timeout=0.05,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="fallback"),
    )
    return await ResilienceManager().execute_with_resilience(asyncio.sleep, config, 30)


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_handler, OperationTimeoutError),
        (_handler_default, "default"),
        (_fail_after, OperationTimeoutError),
        (_move_on_after, "moved on, expired=True"),
        (_manager_fallback, "fallback"),
    ],
)
async def test_a_task_that_caught_a_cancellation_still_gets_its_timeouts(
    scope: Callable[[], Awaitable[object]], expected: object
) -> None:
    """A cancellation caught earlier leaves the task's count up: an expired scope still owns its own."""
    await _catch_one_cancellation()
    if isinstance(expected, type):
        with pytest.raises(expected):
            await scope()
    else:
        assert await scope() == expected
    assert current_deadline() is None


async def _inner_fail_after() -> object:
    async with fail_after(0.05, operation="inner"):
        await asyncio.Event().wait()
    return "unreachable"


async def _inner_handler() -> object:
    return await TimeoutHandler(0.05, name="inner").with_timeout(asyncio.Event().wait)


async def _inner_move_on_after() -> object:
    async with move_on_after(0.05) as scope:
        await asyncio.Event().wait()
    return f"moved on, expired={scope.expired}"


@pytest.mark.parametrize(
    ("inner", "expected"),
    [
        (_inner_fail_after, "inner"),
        (_inner_handler, "inner"),
        (_inner_move_on_after, "moved on, expired=True"),
    ],
)
async def test_a_looser_scope_entered_after_the_tighter_ones_cancellation_was_caught_still_fires(
    inner: Callable[[], Awaitable[object]], expected: str
) -> None:
    """The outer scope fired and its block caught the cancellation: an inner scope, looser, is armed all the same.

    Nothing else would end the inner block: the outer's cancellation was spent. The inner scope
    keeps the outer's earlier deadline in force for its readers.
    """
    seen: list[object] = []

    async def body() -> None:
        async with fail_after(0.01, operation="outer"):
            outer_deadline = current_deadline()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)  # the outer's cancellation, caught
            try:
                seen.append(await inner())
            except OperationTimeoutError as error:
                seen.append(error.operation)
            seen.append(current_deadline() == outer_deadline)

    await asyncio.wait_for(asyncio.create_task(body()), 5.0)  # a hung inner block fails here
    assert seen == [expected, True]


async def _inner_fail_after_catches() -> None:
    async with fail_after(0.05, operation="inner"):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()  # the outer's cancellation, caught here
        await asyncio.Event().wait()


async def _inner_handler_catches() -> None:
    async def stubborn() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await asyncio.Event().wait()

    await TimeoutHandler(0.05, name="inner", default="inner default").with_timeout(stubborn)


async def _inner_move_on_after_catches() -> None:
    async with move_on_after(0.05):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await asyncio.Event().wait()


async def _ended_in_time(body: Coroutine[Any, Any, None], failure: str) -> asyncio.Task[None]:
    """Run ``body`` in a task, bounded: the task, ended; the test fails with ``failure`` if it hung."""
    task = asyncio.create_task(body)
    done, _ = await asyncio.wait([task], timeout=5.0)
    if not done:
        task.cancel()
    assert done, failure
    return task


@pytest.mark.parametrize(
    "inner", [_inner_fail_after_catches, _inner_handler_catches, _inner_move_on_after_catches]
)
@pytest.mark.parametrize("overran", [False, True])
async def test_a_looser_scope_entered_before_the_tighter_ones_cancellation_was_caught_still_fires(
    inner: Callable[[], Awaitable[None]], overran: bool
) -> None:
    """The inner scope, looser, is entered first; the outer fires and the inner block catches it: the inner still ends it.

    ``overran``: the inner scope is entered once the outer deadline passed (sync code held the
    loop), before its timer could fire. Either way the block caught the only cancellation the
    outer scope makes, and only the inner deadline can end it. Its cancellation comes while the
    outer's request is still pending, as ``asyncio.timeout`` counts them: the outer reports it.
    """

    async def body() -> None:
        async with fail_after(0.01, operation="outer"):
            if overran:
                threading.Event().wait(0.02)  # past the outer deadline, the loop held
            await inner()

    task = await _ended_in_time(body(), "the inner deadline was never enforced")
    with pytest.raises(OperationTimeoutError) as caught:
        await task
    assert caught.value.operation == "outer"
    assert current_deadline() is None
    assert not loop_timer(asyncio.get_running_loop()).held  # no scope left listed


async def test_each_of_three_nested_deadlines_whose_cancellations_are_caught_is_enforced() -> None:
    """Three scopes, the outer tightest; the block catches two cancellations: the third ends it, the outer reports.

    Each looser scope is armed once a tighter one fired; each cancellation after the outer's
    comes while the outer's is pending, so neither inner scope takes it for its own timeout.
    """
    reached: list[str] = []

    async def body() -> None:
        async with fail_after(0.01, operation="outer"), fail_after(0.08, operation="middle"):
            async with fail_after(0.04, operation="inner"):
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()  # the outer's, caught
                reached.append("outer's caught")
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.Event().wait()  # the inner's, caught
                reached.append("inner's caught")
                await asyncio.Event().wait()  # the middle's ends it

    task = await _ended_in_time(body(), "a looser deadline was never enforced")
    with pytest.raises(OperationTimeoutError) as caught:
        await task
    assert caught.value.operation == "outer"
    assert reached == ["outer's caught", "inner's caught"]


async def test_a_held_scope_that_fires_while_the_outer_cancellation_unwinds_leaves_it_to_the_outer() -> None:
    """The outer fires first and its cancellation is on its way out: the inner firing too does not take it over.

    The inner ``move_on_after`` is armed once the outer fired; its deadline comes while the block
    cleans up. Its cancellation is not its own timeout: it does not move on, the outer raises.
    """
    clock = FakeClock()
    outer = AsyncDeadline(clock, 30.0, "outer")
    moved_on: list[bool] = []

    async def body() -> None:
        async with outer:
            async with move_on_after(60.0, clock=clock) as scope:
                try:
                    await asyncio.Event().wait()
                finally:
                    await asyncio.Event().wait()  # the clean-up, which the inner deadline ends
            moved_on.append(scope.expired)

    task = asyncio.create_task(body())
    for _ in range(3):
        await asyncio.sleep(0)
    clock.advance(60.0)  # both deadlines passed: the inner is due as soon as it is armed
    outer.fire()
    with pytest.raises(OperationTimeoutError) as caught:
        await asyncio.wait_for(task, 5.0)
    assert caught.value.operation == "outer"
    assert moved_on == []


async def test_a_pending_cancellation_from_elsewhere_still_passes_through() -> None:
    """The scope expired, but another cancellation came too: it propagates as CancelledError."""
    deadline = AsyncDeadline(FakeClock(), 0.05, "op")

    async def body() -> None:
        task = asyncio.current_task()
        assert task is not None
        async with deadline:
            deadline.fire()  # our own deadline is due...
            task.cancel()  # ...and someone else cancels the task as well
            await asyncio.sleep(30)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(body())
    assert deadline.expired


@pytest.mark.parametrize("first", ["deadline", "elsewhere"])
async def test_a_cancellation_from_elsewhere_before_the_waiting_task_resumes_passes_through(
    first: str,
) -> None:
    """The deadline fires while the block waits, and the task is cancelled too, in either order: CancelledError.

    Python 3.10 delivers the two requests as one ``CancelledError`` (no count to tell them by):
    the caller's cancellation must still reach it, never a timeout (nor a fallback's answer).
    """
    deadline = AsyncDeadline(FakeClock(), 30.0, "op")
    waiting = asyncio.Event()

    async def body() -> None:
        async with deadline:
            waiting.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await waiting.wait()
    if first == "deadline":
        deadline.fire()
        task.cancel()
    else:
        task.cancel()
        deadline.fire()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadline.expired


async def _cleans_up_in_except() -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(30)  # the clean-up, which the caller cancels
        raise


async def _cleans_up_in_finally() -> None:
    try:
        await asyncio.sleep(30)
    finally:
        await asyncio.sleep(30)


async def _cleans_up_in_a_task() -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.create_task(asyncio.sleep(30))
        raise


@pytest.mark.parametrize("block", [_cleans_up_in_except, _cleans_up_in_finally, _cleans_up_in_a_task])
async def test_a_cancellation_requested_while_the_block_cleans_up_after_the_deadline_passes_through(
    block: Callable[[], Awaitable[None]],
) -> None:
    """The deadline fired; while the block cleans up, the caller cancels the task: CancelledError, not a timeout.

    Python 3.10 counts no requests: the caller's reaches the clean-up's await as a new
    ``CancelledError`` whose context is the scope's, caught in the block.
    """
    deadline = AsyncDeadline(FakeClock(), 30.0, "op")
    waiting = asyncio.Event()

    async def body() -> None:
        async with deadline:
            asyncio.get_running_loop().call_soon(waiting.set)
            await block()

    task = asyncio.create_task(body())
    await waiting.wait()
    deadline.fire()
    for _ in range(5):  # the block gets the scope's cancellation and waits in its clean-up
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadline.expired


@pytest.mark.parametrize("block", [_cleans_up_in_except, _cleans_up_in_finally, _cleans_up_in_a_task])
async def test_a_deadline_reached_while_the_block_cleans_up_after_a_cancellation_passes_it_through(
    block: Callable[[], Awaitable[None]],
) -> None:
    """The caller cancels the task; while the block cleans up, the deadline fires: CancelledError, not a timeout.

    Python 3.10 counts no requests: the scope's own reaches the clean-up's await as a new
    ``CancelledError`` whose context is the caller's, raised in the block after the scope was
    entered. A caller's cancellation is never turned into a timeout (nor into a retry).
    """
    deadline = AsyncDeadline(FakeClock(), 30.0, "op")
    waiting = asyncio.Event()

    async def body() -> None:
        async with deadline:
            asyncio.get_running_loop().call_soon(waiting.set)
            await block()

    task = asyncio.create_task(body())
    await waiting.wait()
    task.cancel()
    for _ in range(5):  # the block gets the caller's cancellation and waits in its clean-up
        await asyncio.sleep(0)
    assert not task.done()
    deadline.fire()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert deadline.expired


async def test_a_deadline_reached_in_a_clean_up_begun_before_the_scope_is_its_own_timeout() -> None:
    """A scope entered while the task handles a cancellation it caught still reports its own deadline."""
    deadline = AsyncDeadline(FakeClock(), 30.0, "op")
    waiting = asyncio.Event()

    async def body() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if sys.version_info >= (3, 11):
                asyncio.current_task().uncancel()  # type: ignore[union-attr] # handled: taken back
            async with deadline:
                asyncio.get_running_loop().call_soon(waiting.set)
                await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    await waiting.wait()
    deadline.fire()
    with pytest.raises(OperationTimeoutError):
        await task
    assert deadline.expired


async def test_an_enclosing_scopes_deadline_due_first_is_its_own_timeout() -> None:
    """The outer deadline fires, then the inner one, before the block resumes: the outer's timeout."""
    outer = AsyncDeadline(FakeClock(), 30.0, "outer")
    inner = AsyncDeadline(FakeClock(), 20.0, "inner")
    waiting = asyncio.Event()

    async def body() -> None:
        async with outer, inner:
            waiting.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(body())
    await waiting.wait()
    outer.fire()
    inner.fire()
    with pytest.raises(OperationTimeoutError) as info:
        await task
    assert info.value.operation == "outer"


async def _awaits_a_task() -> None:
    await asyncio.create_task(asyncio.sleep(30))


async def _awaits_a_gather() -> None:
    await asyncio.gather(asyncio.sleep(30), asyncio.sleep(30))


async def _awaits_a_shield() -> None:
    await asyncio.shield(asyncio.sleep(30))


async def _catches_and_reraises() -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(0)
        raise


@pytest.mark.parametrize("block", [_awaits_a_task, _awaits_a_gather, _awaits_a_shield, _catches_and_reraises])
async def test_its_own_cancellation_is_told_whatever_the_task_awaited(
    block: Callable[[], Awaitable[None]],
) -> None:
    """The scope's cancellation reaches it through another task, a gather or a shield: still its timeout.

    Before Python 3.11 a task counts no cancellations: the scope knows its own by the message it
    cancelled with, which reaches it as the context of the error the awaited task raised.
    """
    deadline = AsyncDeadline(FakeClock(), 0.05, "op")

    async def body() -> None:
        async with deadline:
            asyncio.get_running_loop().call_soon(deadline.fire)  # due once the block waits
            await block()

    with pytest.raises(OperationTimeoutError):
        await asyncio.create_task(body())
    assert deadline.expired


async def test_a_cancellation_from_elsewhere_while_it_waits_on_a_task_passes_through() -> None:
    """Not expired: a cancellation that reaches the block through the task it awaits stays a cancellation."""
    deadline = AsyncDeadline(FakeClock(), 0.05, "op")
    started = asyncio.Event()

    async def body() -> None:
        async with deadline:
            started.set()
            await _awaits_a_task()

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not deadline.expired


def _late(clock: FakeClock, seconds: float) -> Callable[[], str]:
    def call() -> str:
        clock.advance(seconds)  # the call takes `seconds` and returns
        return "late result"

    return call


@pytest.mark.parametrize("took", [5.0, 0.7])
async def test_a_sync_call_under_a_tighter_async_timeout_that_returns_late_is_the_async_timeout(
    took: float,
) -> None:
    """Past the async scope's 0.5 s (and past the sync 1 s or not): the async scope reports it."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, name="inner-sync", default="inner default", clock=clock)
    outer = TimeoutHandler(0.5, name="outer-async", clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, took))

    with pytest.raises(OperationTimeoutError) as caught:
        await outer.with_timeout(body)
    assert (caught.value.operation, caught.value.timeout) == ("outer-async", 0.5)
    assert type(caught.value) is OperationTimeoutError  # the scope's own, converted
    assert outer.get_stats()["timeouts"] == 1
    assert inner.get_stats()["timeouts"] == 0


async def test_a_sync_call_under_a_looser_async_timeout_judges_its_own_deadline() -> None:
    """The sync scope's 1 s is the tightest: its default answers, the async scope sees a success."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, name="inner-sync", default="inner default", clock=clock)
    outer = TimeoutHandler(60.0, name="outer-async", clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, 5.0))

    assert await outer.with_timeout(body) == "inner default"
    assert (inner.get_stats()["timeouts"], outer.get_stats()["timeouts"]) == (1, 0)


async def test_a_sync_call_in_time_under_a_tighter_async_timeout_returns() -> None:
    """Before the binding deadline the result is the result."""
    clock = FakeClock(100.0)
    inner = TimeoutHandler(1.0, clock=clock)

    async def body() -> str:
        return inner.with_timeout_sync(_late(clock, 0.2))

    assert await TimeoutHandler(0.5, clock=clock).with_timeout(body) == "late result"


async def test_an_async_scope_turns_a_deadline_reached_by_sync_code_into_its_own_timeout() -> None:
    """An engine wait in sync code under the task's scope stops at its deadline: the scope's timeout."""
    clock = FakeClock(0.0)
    scope = AsyncDeadline(clock, 2.0, "outer", "total")
    with pytest.raises(OperationTimeoutError) as caught:
        async with scope:
            sleep_sync_within_deadline(clock, 60.0, "inner")  # blocks the loop: no timer can fire
    assert type(caught.value) is OperationTimeoutError
    assert (caught.value.operation, caught.value.scope, scope.expired) == ("outer", "total", True)
    assert clock.now() == 2.0


async def test_a_deadline_reached_error_raised_before_the_deadline_stays_what_it_is() -> None:
    """Raised by hand, before the scope's deadline: not the scope's timeout."""
    scope = AsyncDeadline(FakeClock(0.0), 2.0, "outer")
    with pytest.raises(DeadlineReachedError):
        async with scope:
            raise DeadlineReachedError("op", 1.0, "total")
    assert not scope.expired


def test_a_looser_sync_scope_that_returns_late_lets_the_outer_report_it() -> None:
    """The inner 10 s scope returns at 5 s, past the outer 2 s: the outer's timeout, as for a wait."""
    clock = FakeClock(0.0)
    seen: list[Any] = []
    outer, inner = SyncDeadline(clock, 2.0, "outer", "total"), SyncDeadline(clock, 10.0, "inner", "attempt")
    with pytest.raises(OperationTimeoutError) as caught, outer:
        try:
            with inner:
                clock.advance(5.0)
        except DeadlineReachedError as reached:  # what a step between the two scopes sees
            seen.append(reached)
            raise
    assert (caught.value.operation, caught.value.scope, outer.expired, inner.expired) == (
        "outer",
        "total",
        True,
        False,
    )
    assert [type(error) for error in seen] == [DeadlineReachedError]
    assert seen[0].timeout == 2.0  # what was left of the binding deadline when the inner began


# -- an enclosing scope's deadline, reached in a thread, passes the steps that answer failures ------


def _counting_fallback(clock: Clock, answers: list[object]) -> FallbackHandler:
    def answer(error: Exception, *_args: object) -> str:
        answers.append(error)
        return "inner fallback"

    config = FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=answer)
    return FallbackHandler(config, name="inner", clock=clock)


def test_an_outer_deadline_reached_by_an_inner_block_passes_the_inner_fallback() -> None:
    """An inner 10 s scope returns at 5 s, past the outer 2 s: the inner fallback does not answer.

    Async, the outer scope's timer would cancel the block at 2 s, and the fallback between would
    see nothing; sync, it sees the deadline reached and lets it pass to the outer scope, whose
    timeout is the result.
    """
    clock = FakeClock(0.0)
    answers: list[object] = []
    fallback = _counting_fallback(clock, answers)
    inner = TimeoutHandler(10.0, name="inner", clock=clock)
    with pytest.raises(OperationTimeoutError) as caught, SyncDeadline(clock, 2.0, "outer", "total"):
        fallback.run_sync(inner.run_sync, clock.advance, 5.0)
    assert (caught.value.operation, caught.value.timeout) == ("outer", 2.0)
    assert answers == []
    assert fallback.get_stats()["fallback_successes"] == 0


def test_an_outer_deadline_reached_passes_the_inner_fallback_without_asking_its_predicate() -> None:
    """The fallback's ``handle_exceptions`` predicate is never asked about an outer deadline reached.

    The deadline passes to its owner unanswered, whatever the predicate would say: one written
    for the dependency's errors (here it reads their ``status``) neither sees the engine's
    deadline error nor replaces the outer timeout with its own error.
    """
    clock = FakeClock(0.0)
    asked: list[type[Exception]] = []

    def server_errors(error: Exception) -> bool:
        asked.append(type(error))
        return bool(error.status >= 500)  # type: ignore[attr-defined] # the client's errors have it

    config = FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE, default_value="spare", handle_exceptions=server_errors
    )
    fallback = FallbackHandler(config, name="inner", clock=clock)
    inner = TimeoutHandler(10.0, name="inner", clock=clock)
    with pytest.raises(OperationTimeoutError) as caught, SyncDeadline(clock, 2.0, "outer", "total"):
        fallback.run_sync(inner.run_sync, clock.advance, 5.0)
    assert (caught.value.operation, caught.value.timeout) == ("outer", 2.0)
    assert asked == []
    assert fallback.get_stats()["fallbacks_used"] == 0


def test_an_outer_deadline_ending_an_inner_bulkhead_wait_passes_the_inner_fallback() -> None:
    """A thread queued in an inner policy's bulkhead is cut by the outer deadline: its fallback does not answer."""
    answers: list[object] = []
    fallback = _counting_fallback(SYSTEM_CLOCK, answers)
    bulkhead = Bulkhead("inner-slots", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30.0))
    inner = (
        PipelineBuilder("inner").add(fallback.as_strategy()).add(bulkhead.as_strategy()).build(register=False)
    )
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10.0)

    holder = threading.Thread(target=bulkhead.execute_sync, args=(hold,))
    holder.start()
    try:
        assert holding.wait(10.0)
        with (
            pytest.raises(OperationTimeoutError) as caught,
            SyncDeadline(SYSTEM_CLOCK, 0.05, "outer", "total"),
        ):
            inner.execute_sync(lambda: "ran")
    finally:
        release.set()
        holder.join(10.0)
    assert caught.value.operation == "outer"
    assert answers == []
    assert bulkhead.get_stats()["cancelled"] == 1  # it left the queue as a cancelled call does


def test_a_deadline_error_raised_before_any_deadline_passed_is_answered() -> None:
    """Raised by hand (no deadline has passed), a DeadlineReachedError is a failure the fallback answers."""
    clock = FakeClock(0.0)
    answers: list[object] = []
    fallback = _counting_fallback(clock, answers)

    def gives_up() -> str:
        raise DeadlineReachedError("by-hand", 1.0, "total")

    with SyncDeadline(clock, 2.0, "outer", "total"):
        assert fallback.run_sync(gives_up) == "inner fallback"
    assert [type(error) for error in answers] == [DeadlineReachedError]


def test_an_outer_deadline_reached_by_an_inner_block_passes_a_recovery_rule() -> None:
    """A recovery rule covering timeouts neither observes nor answers an enclosing scope's reached deadline."""
    clock = FakeClock(0.0)
    system = ErrorRecoverySystem(clock=clock)
    action = RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="recovered")
    system.register_recovery_rule(OperationTimeoutError, action)
    inner = TimeoutHandler(10.0, name="inner", clock=clock)
    recovering = PipelineBuilder("recovering", clock=clock).add(system.as_strategy()).build(register=False)
    with pytest.raises(OperationTimeoutError) as caught, SyncDeadline(clock, 2.0, "outer", "total"):
        recovering.execute_sync(inner.run_sync, clock.advance, 5.0)
    assert caught.value.operation == "outer"
    stats = system.get_stats()
    assert (stats["attempts"], stats["successful_recoveries"]) == (0, 0)


async def test_a_context_copied_in_an_async_scope_carries_no_deadline_once_the_scope_ended() -> None:
    """A copy taken inside a scope, run later in the same task: the ended scope binds nothing.

    As with a sync scope (the copy shares the cell): a later sync call in that copy is not
    judged against the deadline of a scope that is gone (no owner would convert its error).
    """
    clock = FakeClock(0.0)
    async with AsyncDeadline(clock, 1.0, "ended"):
        copied = contextvars.copy_context()
        assert copied.run(current_deadline) == 1.0
    clock.advance(5.0)  # past the ended scope's deadline
    assert copied.run(current_deadline) is None
    assert copied.run(TimeoutHandler(10.0, clock=clock).with_timeout_sync, lambda: "result") == "result"


# -- a sync scope left by another thread or task than its owner ------------------------------------


def _leave_in_a_thread(scope: SyncDeadline, *exc: Any) -> BaseException | None:
    """Leave ``scope`` in a new thread (with a copy of this context, as ``asyncio.to_thread``); return what it raised."""
    raised: list[BaseException | None] = [None]

    def leave() -> None:
        try:
            scope.__exit__(*exc)
        except BaseException as error:
            raised[0] = error

    thread = threading.Thread(target=contextvars.copy_context().run, args=(leave,))
    thread.start()
    thread.join(10.0)
    return raised[0]


@pytest.mark.parametrize("under_an_earlier_deadline", [False, True])
def test_a_sync_scope_left_by_another_thread_is_a_clear_runtime_error(
    under_an_earlier_deadline: bool,
) -> None:
    """Entered in one thread, left in another: RuntimeError saying so, as for an async scope left by another task.

    Its deadline is withdrawn: the thread that entered it is bound by what bound it before.
    """
    clock = FakeClock(0.0)
    with contextlib.ExitStack() as stack:
        if under_an_earlier_deadline:
            stack.enter_context(SyncDeadline(clock, 10.0, "outer"))
        scope = SyncDeadline(clock, 20.0 if under_an_earlier_deadline else 0.5, "misplaced")
        scope.__enter__()
        clock.advance(6.0)  # past its own deadline (or, bound by the outer, not yet past that one)
        raised = _leave_in_a_thread(scope, None, None, None)
        assert isinstance(raised, RuntimeError), raised
        assert "'misplaced' was left by another task or thread" in str(raised)
        assert not scope.expired
        assert current_deadline() == (10.0 if under_an_earlier_deadline else None)
    assert current_deadline() is None


async def test_a_sync_scope_left_by_another_task_is_a_clear_runtime_error() -> None:
    """A SyncDeadline held across an await and left by another task: RuntimeError, its deadline withdrawn."""
    clock = FakeClock(0.0)
    scope = SyncDeadline(clock, 5.0, "misplaced")
    entered, leave = asyncio.Event(), asyncio.Event()
    seen: list[float | None] = []

    async def enters() -> None:
        scope.__enter__()
        entered.set()
        await leave.wait()
        seen.append(current_deadline())

    task = asyncio.create_task(enters())
    await entered.wait()
    with pytest.raises(RuntimeError, match=r"'misplaced' was left by another task or thread"):
        scope.__exit__(None, None, None)
    leave.set()
    await task
    assert seen == [None]


def test_a_sync_scope_closed_with_its_generator_in_another_thread_raises_nothing() -> None:
    """A generator's scope closed elsewhere (GeneratorExit) withdraws its deadline and raises nothing."""
    clock = FakeClock(0.0)
    scope = SyncDeadline(clock, 5.0, "generator")
    scope.__enter__()
    assert _leave_in_a_thread(scope, GeneratorExit, GeneratorExit(), None) is None
    assert current_deadline() is None


def test_a_sync_scope_left_in_a_forked_child_by_the_thread_that_forked_raises_no_runtime_error() -> None:
    """Forked inside the block, the child leaves the scope as the thread that entered it would."""
    clock = FakeClock(0.0)

    def child() -> None:
        scope.__exit__(None, None, None)  # the forking thread's scope, left in the child

    scope = SyncDeadline(clock, 5.0, "forked")
    with scope:
        assert run_in_child(child) == 0
    assert current_deadline() is None


def test_a_sync_generators_scope_ended_in_a_consumers_scope_leaves_no_deadline_behind() -> None:
    """A generator's scope left inside a scope its consumer entered since puts back no deadline of its own.

    The consumer's scope, leaving last, puts back the deadline it replaced: the generator's, whose
    scope has ended. The thread keeps no deadline once both ended, and a later call in it is
    bounded by its own timeout only. (Run in a thread of its own, whose context starts empty.)
    """
    clock = FakeClock(0.0)
    seen: list[object] = []

    def numbers():
        with SyncDeadline(clock, 5.0, "generator"):
            yield 1
            yield 2

    def consume() -> None:
        generator = numbers()
        next(generator)
        with SyncDeadline(clock, 1.0, "consumer"):
            assert list(generator) == [2]
        seen.append(current_deadline())
        clock.advance(6.0)
        seen.append(TimeoutHandler(10.0, clock=clock, name="later").with_timeout_sync(lambda: "ok"))

    thread = threading.Thread(target=consume)
    thread.start()
    thread.join(timeout=10)
    assert seen == [None, "ok"]


def _in_a_thread_of_its_own(body: Callable[[], list[object]]) -> list[object]:
    """Run ``body`` in a thread of its own (whose context starts empty); return what it returned, or raised."""
    seen: list[object] = []

    def run() -> None:
        try:
            seen.extend(body())
        except Exception as error:
            seen.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=10)
    return seen


@pytest.mark.parametrize("consumer", ["SyncDeadline", "TimeoutHandler"])
def test_a_sync_generators_scope_ended_in_a_tighter_consumers_scope_leaves_no_stale_deadline_under_an_outer_one(
    consumer: str,
) -> None:
    """A generator's scope left inside a tighter scope its consumer entered since: once both ended, the outer deadline is in force.

    The consumer's scope, leaving, puts back the deadline it replaced: the generator's, ended by
    then. The outer scope's deadline is the one published after it, and a later call inside the
    outer scope, past the generator's deadline, is bounded by the outer deadline, not failed.
    """
    clock = FakeClock(0.0)

    def numbers():
        with SyncDeadline(clock, 20.0, "generator"):
            yield 1
            yield 2

    def consume(generator: Any) -> object:
        assert list(generator) == [2]
        return current_deadline()

    def body() -> list[object]:
        seen: list[object] = []
        with SyncDeadline(clock, 100.0, "outer"):
            generator = numbers()
            next(generator)
            if consumer == "SyncDeadline":
                with SyncDeadline(clock, 5.0, "consumer"):
                    seen.append(consume(generator))
            else:
                seen.append(
                    TimeoutHandler(5.0, clock=clock, name="consumer").with_timeout_sync(consume, generator)
                )
            seen.append(current_deadline())
            clock.advance(30.0)
            seen.append(TimeoutHandler(60.0, clock=clock, name="later").with_timeout_sync(current_deadline))
            seen.append(current_deadline())
        seen.append(current_deadline())
        return seen

    # A step's scope, which narrowed the generator's deadline, is no longer published once that ended.
    inside = 5.0 if consumer == "SyncDeadline" else 100.0
    assert _in_a_thread_of_its_own(body) == [inside, 100.0, 90.0, 100.0, None]


def test_a_scope_bound_by_a_sync_generators_ended_scope_is_not_failed_at_that_deadline() -> None:
    """A looser scope entered under a generator's scope that ended inside it ends at its own deadline, not the generator's.

    The generator's deadline bound the consumer's call when it began; once the generator's scope
    ended, the call returning past that deadline but before its own is a success, and a later call
    is bounded by its own timeout.
    """
    clock = FakeClock(0.0)

    def numbers():
        with SyncDeadline(clock, 5.0, "generator"):
            yield 1
            yield 2

    def consume(generator: Any) -> str:
        assert list(generator) == [2]
        clock.advance(6.0)
        return "consumed"

    def body() -> list[object]:
        generator = numbers()
        next(generator)
        seen: list[object] = [
            TimeoutHandler(20.0, clock=clock, name="consumer").with_timeout_sync(consume, generator)
        ]
        seen.append(current_deadline())
        generator = numbers()
        next(generator)
        with SyncDeadline(clock, 20.0, "consumer"):
            seen.append(consume(generator))
        seen.append(current_deadline())
        return seen

    assert _in_a_thread_of_its_own(body) == ["consumed", None, "consumed", None]

    def late(generator: Any) -> str:
        assert list(generator) == [2]
        clock.advance(25.0)  # past the consumer's own deadline too
        return "late"

    handler = TimeoutHandler(20.0, clock=clock, name="consumer")

    def late_body() -> list[object]:
        generator = numbers()
        next(generator)
        try:
            handler.with_timeout_sync(late, generator)
        except OperationTimeoutError as error:
            return [type(error), error.operation, error.timeout, handler.get_stats()["timeouts"]]
        return ["no timeout"]

    assert _in_a_thread_of_its_own(late_body) == [OperationTimeoutError, "consumer", 20.0, 1]


async def test_a_sync_scope_left_by_another_task_leaves_no_deadline_behind_an_outer_scope() -> None:
    """A SyncDeadline left by another task, inside an outer one: once the outer one ended, its task has no deadline."""
    clock = FakeClock(0.0)
    entered, leave = asyncio.Event(), asyncio.Event()
    seen: list[float | None] = []
    scope = SyncDeadline(clock, 5.0, "misplaced")

    async def enters() -> None:
        with SyncDeadline(clock, 10.0, "outer"):
            scope.__enter__()
            entered.set()
            await leave.wait()
        seen.append(current_deadline())
        seen.append(TimeoutHandler(60.0, clock=clock, name="later").with_timeout_sync(current_deadline))

    task = asyncio.create_task(enters())
    await entered.wait()
    with pytest.raises(RuntimeError, match=r"'misplaced' was left by another task or thread"):
        scope.__exit__(None, None, None)
    leave.set()
    await task
    assert seen == [None, 60.0]


async def test_an_async_scope_under_a_sync_scopes_earlier_deadline_still_ends_at_its_own() -> None:
    """A ``SyncDeadline`` held across an await never cancels: a looser async scope inside it is armed.

    The sync scope's earlier deadline is only checked when its block returns, so nothing would end
    the async scope's block before then: the async scope ends it at its own deadline.
    """
    clock = FakeClock(0.0)
    never = asyncio.Event()

    async def body() -> None:
        with SyncDeadline(clock, 0.05, "sync outer"):
            async with fail_after(0.1, clock=clock, operation="async inner"):
                assert current_deadline() == 0.05  # the earlier deadline is still the one in force
                await never.wait()

    with pytest.raises(OperationTimeoutError) as caught:
        await asyncio.wait_for(body(), 5.0)  # a guard: the block must end long before
    assert caught.value.operation == "async inner"


async def test_an_async_scope_armed_under_a_sync_scopes_deadline_leaves_inner_scopes_armed() -> None:
    """Under a sync scope's deadline, an async scope keeps it in force, so a scope inside both is armed too.

    The middle scope is armed at its own (later) deadline; the inner one, looser than the sync
    scope's deadline but tighter than the middle's, ends its block at its own deadline, not at
    the middle's.
    """
    clock = FakeClock(0.0)
    never = asyncio.Event()

    async def body() -> None:
        with SyncDeadline(clock, 0.05, "sync outer"):
            async with fail_after(20.0, clock=clock, operation="middle"):
                async with fail_after(0.1, clock=clock, operation="inner"):
                    await never.wait()

    with pytest.raises(OperationTimeoutError) as caught:
        await asyncio.wait_for(body(), 5.0)  # a guard: the block must end long before
    assert caught.value.operation == "inner"
