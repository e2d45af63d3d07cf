"""An error a call raises on its way out of its task's cancellation is that cancellation's end, in every step."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from support import converted_cancellation, needs_task_cancelling

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, Retry, RetryPolicy, RetryStrategy
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
