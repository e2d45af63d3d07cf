"""An async request whose event loop closed with it pending is freed quietly.

A loop closed without cancelling its tasks (a hand-run loop, a sync wrapper that runs one call
and closes) leaves the request's coroutine to the garbage collector, which closes it on whichever
thread allocates, in that thread's context: what the request made current (its re-runnable
errors) went with its task and is not restored there.
"""

from __future__ import annotations

import asyncio
import gc
import weakref

import httpx

from otel_resilience import ResilienceConfig, ResilienceManager
from otel_resilience.engine import timer as engine_timer
from otel_resilience.integrations.httpx import AsyncResilientTransport


class _Hanging(httpx.AsyncBaseTransport):
    """A transport whose sends never end."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_request_of_a_closed_loop_is_freed_without_an_error(unraisable: list[object]) -> None:
    """Its coroutine closed by the collector outside its context raises nothing there.

    It reset the context variable of its re-runnable errors in the collecting thread's context,
    which is not the one that set it: a ``ValueError`` reported as ignored for every such request.
    """
    transport = AsyncResilientTransport(
        ResilienceConfig(name="closed-loop-http"), _Hanging(), manager=ResilienceManager()
    )
    client = httpx.AsyncClient(transport=transport)
    loop = asyncio.new_event_loop()
    task = loop.create_task(client.get("http://127.0.0.1:9/a"))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not task.done()
    gc.disable()  # freed below, in this thread, not by a collection at some other point
    try:
        loop.close()
        freed = weakref.ref(task)
        del task, loop
        engine_timer._drop_closed()  # the closed loop's timer lets go of it: the task is garbage
        gc.collect()
        assert freed() is None
    finally:
        gc.enable()
    assert [getattr(report, "exc_value", report) for report in unraisable] == []
