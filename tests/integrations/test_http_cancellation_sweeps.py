"""HTTP clients cancelled at every suspension point of a request, against a real local server.

A request through httpx's ``AsyncResilientTransport`` or aiohttp's ``ResilientMiddleware`` runs
as a task that is cancelled once it has suspended ``k`` times, for ``k = 0, 1, 2, ...`` until a
request completes (the server answers in real time, so the suspensions are counted rather than
the loop's turns). Each request is retried (a 503, then a 500) or hedged (the first answer is
slow) under a policy with a breaker and a bulkhead per host. After each cancelled request the
``CancelledError`` reached the caller, the policy holds no slot and its counts add up (and agree
with the exported metrics), no task is left and the loop reported nothing, and the next request
through the same client answers.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import aiohttp
import httpx
import pytest
from otel_support import Otel
from support import ScriptedHTTPServer

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport

_NAMES = itertools.count()
_CANCELLED = object()


class Suspensions:
    """Counts how many times a call suspended: its own task, and every task it starts (a hedge's attempts).

    Awaiting it awaits the call. While it is :meth:`watching`, the loop's task factory wraps every new
    task's coroutine so that its suspensions are counted too.
    """

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.original = coroutine
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        return self.counted(self.original)

    def counted(self, coroutine: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
        inner = coroutine.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = inner.throw(error) if error is not None else inner.send(value)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            try:
                value, error = (yield yielded), None
            except BaseException as thrown:  # handed to the coroutine, as await does
                value, error = None, thrown

    async def _spawned(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return await _Counted(self, coroutine)

    def factory(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        return asyncio.Task(self._spawned(coroutine), loop=loop, **kwargs)


class _Counted:
    def __init__(self, owner: Suspensions, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.owner = owner
        self.coroutine = coroutine

    def __await__(self) -> Generator[Any, Any, Any]:
        return self.owner.counted(self.coroutine)


def retried(name: str) -> ResilienceConfig:
    return ResilienceConfig(
        name=name,
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, jitter="none"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        bulkhead_config=BulkheadConfig(max_concurrent=2),
        timeout=5.0,
    )


def hedged(name: str) -> ResilienceConfig:
    return ResilienceConfig(
        name=name,
        hedging=HedgingConfig(delay=0.005, max_attempts=2),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=10),
        bulkhead_config=BulkheadConfig(max_concurrent=4),
        timeout=5.0,
    )


SCRIPTS: dict[str, tuple[Callable[[str], ResilienceConfig], tuple[tuple[Any, ...], ...]]] = {
    "retried": (retried, ((503, {}), (500, {}))),
    "hedged": (hedged, ((200, {}, 0.05),)),
}


class Client:
    """One client of the kind under test, with the policy's transport or middleware."""

    def __init__(self, kind: str, config: ResilienceConfig, manager: ResilienceManager) -> None:
        self.kind = kind
        if kind == "httpx":
            transport = AsyncResilientTransport(config, manager=manager)
            self.httpx = httpx.AsyncClient(transport=transport, timeout=5.0)
        else:
            self.aiohttp = aiohttp.ClientSession(middlewares=(ResilientMiddleware(config, manager=manager),))

    async def get(self, url: str) -> int:
        if self.kind == "httpx":
            return (await self.httpx.get(url)).status_code
        async with self.aiohttp.get(url) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        if self.kind == "httpx":
            await self.httpx.aclose()
        else:
            await self.aiohttp.close()


def exported_executions(otel: Otel, policy: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for point in otel.points("resilience.executions"):
        attributes = dict(point.attributes)
        if attributes.get("resilience.policy") == policy:
            outcome = str(attributes["resilience.outcome"])
            found[outcome] = found.get(outcome, 0) + point.value
    return found


async def _caller(call: Suspensions) -> object:
    try:
        return await call
    except asyncio.CancelledError:
        return _CANCELLED


@pytest.mark.timeout(60)
@pytest.mark.parametrize("script", ["retried", "hedged"])
@pytest.mark.parametrize("kind", ["httpx", "aiohttp"])
async def test_a_request_cancelled_at_each_suspension_point(
    kind: str, script: str, server: ScriptedHTTPServer, otel: Otel
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    make_config, answers = SCRIPTS[script]
    path = f"/{kind}-{script}"
    cancelled_runs = 0
    for k in range(500):
        name = f"http-sweep-{next(_NAMES)}"
        manager = ResilienceManager()
        client = Client(kind, make_config(name), manager)
        server.script(path, *answers)
        call = Suspensions(client.get(f"{server.url}{path}"))
        task = asyncio.create_task(_caller(call))
        loop.set_task_factory(call.factory)  # the tasks the call starts count too
        try:
            while call.count < k and not task.done():
                await asyncio.sleep(0)
        finally:
            loop.set_task_factory(None)
        completed = task.done()
        if not completed:
            task.cancel()
        loop.set_task_factory(call.factory)
        try:
            result = await task
        except asyncio.CancelledError:  # cancelled before its first step (k = 0): no request made
            call.original.close()
            result = _CANCELLED
        finally:
            loop.set_task_factory(None)
        if completed:
            assert result == 200
        elif result == 200 and kind == "httpx" and sys.version_info < (3, 11):
            # httpx's own connect (anyio's task group racing the addresses) swallows a cancellation
            # that reaches it there before Python 3.11, where a task cannot be uncancelled: plain
            # httpx answers 200 at that point too. Everything below is still checked.
            pass
        else:
            assert result is _CANCELLED, f"k={k}: the caller got {result!r}, not its cancellation"
            cancelled_runs += 1

        stats = manager.policy(name).get_stats()
        executions = stats["executions"]
        assert executions["total"] == (
            executions["successful"] + executions["fallback"] + executions["failed"] + executions["cancelled"]
        ), executions
        assert executions["cancelled"] <= 1, executions
        exported = exported_executions(otel, name)
        assert exported.get("cancelled", 0) == executions["cancelled"], (exported, executions)
        assert exported.get("success", 0) + exported.get("recovered", 0) == executions["successful"]
        bulkhead = stats["bulkhead"]
        assert (bulkhead["active"], bulkhead["waiting"]) == (0, 0), bulkhead
        assert (
            bulkhead["total"]
            == bulkhead["completed"] + bulkhead["rejected"] + bulkhead["timed_out"] + bulkhead["cancelled"]
        )

        with server.lock:
            server.scripts.pop(path, None)  # what the cancelled request did not consume
        assert await client.get(f"{server.url}{path}") == 200
        await client.close()
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}, k
        assert not reported, (k, reported)
        if completed:
            break
    else:
        raise AssertionError("no request completed")
    gc.collect()
    assert not reported, reported
    assert cancelled_runs > 3
