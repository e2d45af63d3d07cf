"""The async verbs under anyio (what FastAPI and Starlette run on): its cancel scopes cancel level by level.

An anyio ``CancelScope`` does not cancel its task once, as ``task.cancel()`` or
``asyncio.timeout`` do: until the scope is left, it cancels the task again at every turn of the
loop in which the task waits on a future that is not done. A wait of the library's that goes on
waiting after a cancellation (until what it cancelled has ended) must end all the same, and the
scope must get its cancellation back (``cancelled_caught``), with the task's count of
cancellation requests (``Task.cancelling()``) as it was.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from hedging_support import HANG, Dependency
from support import until

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Hedging,
    HedgingConfig,
    RetryPolicy,
    TimeoutHandler,
    fail_after,
    retry_async,
)

WATCHDOG = 20.0
"""Seconds after which a run that has not ended is stopped (a wait that never ends): generous."""


def run_in_anyio(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``main`` with ``anyio.run`` (asyncio backend) in a thread; fail, not hang, when it never ends.

    A wait that never ends under anyio spins: its loop never stops, nor would ``loop.stop()``
    end it (the runner's clean-up waits for the task again); the thread is a daemon.
    """
    outcome: list[Any] = []

    def body() -> None:
        try:
            outcome.append(anyio.run(main, backend="asyncio"))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(WATCHDOG)
    if thread.is_alive():
        pytest.fail(f"the run had not ended after {WATCHDOG} s")
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return result


def test_hedging_cancelled_by_an_anyio_scope_ends_its_attempts_and_the_wait() -> None:
    """The race's wait for its cancelled attempts ends although anyio cancels it again at every turn."""
    dependency = Dependency(HANG)
    hedging = Hedging("h", HedgingConfig(mode="parallel", max_attempts=3))

    async def main() -> tuple[bool, int, int]:
        task = asyncio.current_task()
        assert task is not None
        with anyio.CancelScope() as scope:
            call = hedging.call(dependency)

            async def cancel_once_started() -> None:
                await until(lambda: len(dependency.calls) == 3)
                scope.cancel()

            canceller = asyncio.ensure_future(cancel_once_started())
            await call
        await canceller
        return scope.cancelled_caught, task.cancelling(), len(asyncio.all_tasks())

    caught, cancelling, tasks = run_in_anyio(main)
    assert caught
    assert cancelling == 0
    assert tasks == 1
    assert sorted(dependency.cancelled) == sorted(dependency.finished) == [0, 1, 2]
    assert hedging.get_stats()["cancelled"] == 1


# Another event loop than asyncio's (trio, curio): the library's async API needs asyncio's, and
# says so. Driven here by hand, as such a loop drives a coroutine: no asyncio loop runs.


def drive(awaitable: Awaitable[Any]) -> Any:
    """Run ``awaitable`` by hand, as an event loop other than asyncio's does (it yields nothing here)."""
    coroutine = awaitable.__await__()
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise AssertionError("the awaitable waited on something: only asyncio's loop would wake it")


NAMES_ASYNCIO = r"asyncio event loop .*trio"


def test_a_retry_outside_asyncio_says_the_async_api_needs_asyncio() -> None:
    """Its backoff needs asyncio's loop: the caller is told so, not asyncio's bare "no running event loop"."""
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise ConnectionError("down")

    with pytest.raises(RuntimeError, match=NAMES_ASYNCIO) as caught:
        drive(retry_async(failing, policy=RetryPolicy(max_attempts=3, initial_delay=0.01)))
    assert calls == [1]
    assert isinstance(caught.value.__cause__, RuntimeError)  # asyncio's own, kept as the cause


def test_a_queued_bulkhead_call_outside_asyncio_says_the_async_api_needs_asyncio() -> None:
    """A call that must wait for a slot: the wait needs asyncio's loop; nothing is left queued."""
    bulkhead = Bulkhead("trio_queue", BulkheadConfig(max_concurrent=1, max_waiting=2))

    async def work() -> int:
        return 1

    with bulkhead.slot():
        with pytest.raises(RuntimeError, match=NAMES_ASYNCIO):
            drive(bulkhead.execute(work))

        async def block() -> None:
            async with bulkhead.slot():
                raise AssertionError("the block ran")

        with pytest.raises(RuntimeError, match=NAMES_ASYNCIO):
            drive(block())
    assert bulkhead.get_stats()["waiting"] == 0
    assert bulkhead.get_stats()["active"] == 0


def test_a_timeout_scope_outside_asyncio_says_the_async_api_needs_asyncio() -> None:
    """``fail_after`` and a policy's timeout need asyncio's loop to cancel the task at the deadline."""

    async def scoped() -> None:
        async with fail_after(1.0):
            raise AssertionError("the block ran")

    with pytest.raises(RuntimeError, match=NAMES_ASYNCIO):
        drive(scoped())

    async def work() -> int:
        return 1

    with pytest.raises(RuntimeError, match=NAMES_ASYNCIO) as caught:
        drive(TimeoutHandler(timeout=1.0).with_timeout(work))
    cause = caught.value.__cause__  # none (3.11: the scope's own), or asyncio's bare error (3.12 on)
    assert cause is None or "trio" not in str(cause)  # never the same error raised again from itself
