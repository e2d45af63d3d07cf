"""``otel_resilience.store.loops.bounded``: a store's operation awaited for at most its timeout."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from typing import Any

import pytest

from otel_resilience.store.loops import bounded
from tests.support import collect_quietly


def test_an_operation_left_pending_by_a_closed_loop_closes_with_its_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop closed while an operation is awaited (``loop.close()``, no ``asyncio.run`` shutdown):
    the collector closes the caller's coroutine, and the operation's with it, so that what closing
    the operation raises (redis-py asks for the running task, and there is none) is raised where
    its caller tells a closing error (``RedisStore._run_script_async``). Was, on Python 3.10 (the
    operation in a task of its own): the caller closed quietly and the operation's coroutine,
    freed on its own, reported ``Exception ignored in`` it."""
    ignored: list[tuple[type[BaseException] | None, str]] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda seen: ignored.append((seen.exc_type, seen.object.__name__))
    )

    async def operation() -> None:
        try:
            await asyncio.sleep(3600)
        except GeneratorExit:
            asyncio.current_task()  # as redis-py does: no running loop, a RuntimeError
            raise

    async def caller() -> Any:
        return await bounded(operation(), 3600)

    gc.disable()  # the collection below is the one that closes the coroutines
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(caller())
        for _ in range(3):  # the operation started (its own task on 3.10)
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        del task, loop
        collect_quietly()
    finally:
        gc.enable()
    assert ignored == [(RuntimeError, "caller")]


async def test_an_operation_whose_caller_closes_on_a_running_loop_is_not_left_running() -> None:
    """The caller's coroutine closed while its loop still runs: the operation ends with it (its
    own task cancelled on Python 3.10), never left running for nobody."""

    async def caller() -> Any:
        return await bounded(asyncio.sleep(3600), 3600)

    coroutine = caller()
    coroutine.send(None)  # waiting for the operation
    coroutine.close()
    for _ in range(3):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 runs the operation as a task of its own")
async def test_an_enclosing_timeout_the_operation_swallowed_before_failing_is_a_timeout() -> None:
    """An enclosing ``asyncio.timeout`` fires while the operation runs; the operation catches the
    cancellation and then fails (a client dropping the connection under a cancelled read): the
    caller's timeout is raised, never the operation's error (taken for the store's). The same
    operation failing with no cancellation pending raises its error."""

    async def swallowing_then_failing() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        raise ConnectionError("connection dropped")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await bounded(swallowing_then_failing(), 3600)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("connection dropped")

    with pytest.raises(ConnectionError):
        await bounded(failing(), 3600)


def test_an_operation_closed_with_a_cancellation_pending_raises_what_closing_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, the caller's task cancelled before its loop closed (the cancellation never
    delivered): what closing the operation raised still reaches the caller, which tells a closing
    error by it, never a ``CancelledError`` in its place."""
    ignored: list[tuple[type[BaseException] | None, str]] = []
    monkeypatch.setattr(
        sys, "unraisablehook", lambda seen: ignored.append((seen.exc_type, seen.object.__name__))
    )

    async def operation() -> None:
        try:
            await asyncio.sleep(3600)
        except GeneratorExit:
            asyncio.current_task()  # as redis-py does: no running loop, a RuntimeError
            raise

    async def caller() -> Any:
        return await bounded(operation(), 3600)

    gc.disable()  # the collection below is the one that closes the coroutines
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(caller())
        for _ in range(3):  # the operation started
            loop.run_until_complete(asyncio.sleep(0))
        task.cancel()  # requested, never delivered: the loop closes first
        loop.close()
        del task, loop
        collect_quietly()
    finally:
        gc.enable()
    assert ignored == [(RuntimeError, "caller")]
