"""An error a call raises (or a retried result it returns) on its way out of its task's cancellation is that cancellation's end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from support import converted_cancellation, needs_task_cancelling

from otel_resilience import (
    CircuitBreaker,
    CircuitBreakerConfig,
    Retry,
    RetryPolicy,
    RetryStrategy,
    move_on_after,
)
from otel_resilience.engine.cancelling import cancelled_on_the_way
from otel_resilience.errors import OperationTimeoutError


def converting(started: asyncio.Event, calls: list[int]) -> Callable[[], Coroutine[Any, Any, str]]:
    """An async function that turns the cancellation of its task into a ConnectionError."""

    async def call() -> str:
        calls.append(len(calls) + 1)
        if len(calls) > 1:
            return "ran again"
        started.set()
        return await converted_cancellation()

    return call


async def cancel_once_started(
    run: Callable[[Callable[[], Coroutine[Any, Any, str]]], Coroutine[Any, Any, str]], calls: list[int]
) -> None:
    """Run ``run(call)`` in a task, cancel the task once the call waits, expect the call's error."""
    started = asyncio.Event()
    task = asyncio.ensure_future(run(converting(started, calls)))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(ConnectionError, match="connection aborted"):
        await task


@needs_task_cancelling
async def test_a_retry_does_not_run_the_call_again() -> None:
    """The retry neither retries it nor counts a failed attempt: a cancelled execution."""
    retry = Retry(
        "cancelled-on-the-way", RetryPolicy(max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0)
    )
    calls: list[int] = []
    await cancel_once_started(retry.execute, calls)
    assert calls == [1]
    stats = retry.get_stats()
    assert (stats["retries"], stats["cancelled"]) == (0, 1)


@needs_task_cancelling
@pytest.mark.parametrize("form", ["call", "guard"])
async def test_a_breaker_counts_no_failure(form: str) -> None:
    """The breaker gives its permit back as for a cancellation: it does not open on it."""
    breaker = CircuitBreaker("cancelled-on-the-way-" + form, CircuitBreakerConfig(failure_threshold=1))

    async def guarded(call: Callable[[], Coroutine[Any, Any, str]]) -> str:
        async with breaker.guard():
            return await call()

    await cancel_once_started(breaker.call if form == "call" else guarded, [])
    stats = breaker.get_stats()
    assert (stats["state"], stats["total_failures"]) == ("closed", 0)


async def test_a_cancellation_the_task_never_took_back_leaves_later_failures_failures() -> None:
    """A task that swallowed a cancellation (its count stays up) still retries ordinary errors and its own timeouts."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(0)  # swallowed, never taken back: task.cancelling() stays 1
    assert task.cancelling() == 1
    policy = RetryPolicy(
        max_attempts=2, strategy=RetryStrategy.FIXED, initial_delay=0.0, attempt_timeout=0.01
    )
    retry = Retry("stale-cancellation", policy)
    calls: list[int] = []

    async def hangs_once() -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 1:
            await asyncio.Event().wait()  # cut by the attempt timeout
        return "ok"

    assert await retry.execute(hangs_once) == "ok"
    assert calls == [1, 2]
    assert not cancelled_on_the_way(ConnectionError())  # no cancellation in its context
    task.uncancel()


@needs_task_cancelling
async def test_only_an_error_chained_to_a_cancellation_of_a_cancelled_task_is_one() -> None:
    """The rule: a CancelledError in the context chain, the task holding a request, and no error of ours."""
    task = asyncio.current_task()
    assert task is not None

    def raised(make: Callable[[], Exception]) -> Exception:
        try:
            try:
                raise asyncio.CancelledError
            except asyncio.CancelledError:
                try:
                    raise OSError("cleanup failed")
                except OSError:
                    raise make() from None
        except Exception as error:  # returned to be judged
            return error
        raise AssertionError("unreachable")

    assert not cancelled_on_the_way(raised(ConnectionError))  # nothing pending: a failure
    task.cancel()
    try:
        assert cancelled_on_the_way(raised(ConnectionError))  # through two links of the chain
        assert not cancelled_on_the_way(raised(lambda: OperationTimeoutError("op", 1.0)))  # ours decided it
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # the request is delivered, and taken back
        task.uncancel()


# -- a result returned on the way out of a cancellation ------------------------------------------


def swallowing(started: asyncio.Event, calls: list[int]) -> Callable[[], Coroutine[Any, Any, str | None]]:
    """An async function that swallows the cancellation of its task and returns ``None`` (a retried result)."""

    async def call() -> str | None:
        calls.append(len(calls) + 1)
        if len(calls) > 1:
            return "ran again"
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return None
        return "unreachable"

    return call


def _retrying_none(name: str) -> Retry:
    policy = RetryPolicy(
        max_attempts=3,
        strategy=RetryStrategy.FIXED,
        initial_delay=0.0,
        retry_on_result=lambda result: result is None,
    )
    return Retry(name, policy)


@needs_task_cancelling
async def test_a_retry_does_not_run_again_a_call_that_swallowed_its_cancellation() -> None:
    """The call returned a retried result instead of its CancelledError: returned as it is, not run again."""
    retry = _retrying_none("swallowed-cancellation")
    calls: list[int] = []
    started = asyncio.Event()
    task = asyncio.ensure_future(retry.execute(swallowing(started, calls)))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    assert await task is None  # what the call returned, as without the library
    assert calls == [1]
    stats = retry.get_stats()
    assert (stats["retries"], stats["cancelled"], stats["exhausted"]) == (0, 1, 0)
    pipeline = retry._pipeline.stats
    assert (pipeline.errors, pipeline.succeeded) == (1, 0)  # a result the policy judged failed


@needs_task_cancelling
async def test_a_retry_inside_a_timeout_stops_at_the_deadline_a_call_swallowed() -> None:
    """Under fail_after, a call that swallows the deadline's cancellation is not run again past the deadline."""
    retry = _retrying_none("swallowed-deadline")
    calls: list[int] = []
    async with move_on_after(0.02) as scope:
        result = await retry.execute(swallowing(asyncio.Event(), calls))
    assert (result, calls, scope.expired) == (None, [1], True)
    assert retry.get_stats()["cancelled"] == 1


async def test_a_rejected_result_is_still_retried_when_nothing_cancels_the_task() -> None:
    """The rule reads the task's pending request: with none, a retried result is retried."""
    retry = _retrying_none("not-cancelled")
    results = iter([None, "ok"])

    async def call() -> str | None:
        return next(results)

    assert await retry.execute(call) == "ok"
    assert retry.get_stats()["retries"] == 1


@needs_task_cancelling
async def test_a_breaker_counts_no_failure_for_a_result_a_cancelled_call_returned() -> None:
    """``record_result`` judges the swallowed cancellation's value failed: the permit is given back, no failure."""
    breaker = CircuitBreaker(
        "swallowed-result",
        CircuitBreakerConfig(failure_threshold=1, record_result=lambda result: result is None),
    )
    started = asyncio.Event()
    task = asyncio.ensure_future(breaker.call(swallowing(started, [])))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    assert await task is None
    stats = breaker.get_stats()
    assert (stats["state"], stats["total_failures"]) == ("closed", 0)


@needs_task_cancelling
async def test_the_sync_driver_in_a_task_being_cancelled_still_retries_a_result() -> None:
    """A sync call run in a task cannot swallow its cancellation (it waits for the next await): retried as ever."""
    task = asyncio.current_task()
    assert task is not None
    retry = _retrying_none("sync-in-a-cancelled-task")
    results = iter([None, "ok"])
    task.cancel()  # pending: delivered at the next await
    try:
        assert retry.execute_sync(lambda: next(results)) == "ok"
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)
        task.uncancel()
    assert retry.get_stats()["retries"] == 1
