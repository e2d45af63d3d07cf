"""aiohttp's ResilientMiddleware against a real local HTTP server."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from support import FAST_RETRY as FAST
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware


def session(**changes: Any) -> aiohttp.ClientSession:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST}
    fields.update(changes)
    middleware = ResilientMiddleware(ResilienceConfig(**fields), manager=ResilienceManager())
    return aiohttp.ClientSession(middlewares=(middleware,))


async def test_a_5xx_get_is_retried(server: ScriptedHTTPServer) -> None:
    """A GET that got a 503 is sent again; the caller reads the 200."""
    server.script("/a", (503, {}), (500, {}))
    async with session() as s, s.get(f"{server.url}/a") as response:
        assert (response.status, await response.text()) == (200, "200")
    assert server.count("/a") == 3


async def test_the_last_failed_response_is_returned_readable(server: ScriptedHTTPServer) -> None:
    """After max_attempts 503s the last one is returned, its body still readable."""
    server.script("/a", *[(503, {})] * 3)
    async with session() as s, s.get(f"{server.url}/a") as response:
        assert (response.status, await response.text()) == (503, "503")


async def test_posts_are_retried_only_when_marked_and_replayable(server: ScriptedHTTPServer) -> None:
    """A POST is sent once; with an Idempotency-Key it is retried; a streamed body never is."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"order"

    async with session() as s:
        server.script("/a", (503, {}))
        async with s.post(f"{server.url}/a", data=b"order") as response:
            assert response.status == 503
        server.script("/b", (503, {}))
        async with s.post(f"{server.url}/b", data=b"order", headers={"Idempotency-Key": "k"}) as response:
            assert response.status == 200
        server.script("/c", (503, {}))
        headers = {"Idempotency-Key": "k", "Content-Length": "5"}
        async with s.post(f"{server.url}/c", data=chunks(), headers=headers) as response:
            assert response.status == 503
    assert (server.count("/a"), server.count("/b"), server.count("/c")) == (1, 2, 1)


async def test_a_multipart_body_held_in_memory_is_retried_and_one_with_a_file_is_not(
    server: ScriptedHTTPServer,
) -> None:
    """A multipart PUT (FormData) of bytes is sent again whole; one reading a file object is sent once."""
    in_memory = aiohttp.FormData({"k": "v"})
    in_memory.add_field("upload", b"contents", filename="a.txt")
    from_file = aiohttp.FormData()
    from_file.add_field("upload", io.BytesIO(b"contents"), filename="a.txt")
    server.script("/bytes", (503, {}), (502, {}))
    server.script("/file", (503, {}))
    async with session() as s:
        async with s.put(f"{server.url}/bytes", data=in_memory) as response:
            assert response.status == 200
        async with s.put(f"{server.url}/file", data=from_file) as response:
            assert response.status == 503
    bodies = [body for _, path, _, body in server.requests if path == "/bytes"]
    assert len(bodies) == 3
    assert len(set(bodies)) == 1
    assert b"contents" in bodies[0]
    assert server.count("/file") == 1


async def test_retry_after_is_honoured(server: ScriptedHTTPServer) -> None:
    """A 503 with Retry-After: 0.3 is retried no sooner than 0.3 s later."""
    server.script("/a", (503, {"Retry-After": "0.3"}))
    start = time.monotonic()
    async with session() as s, s.get(f"{server.url}/a") as response:
        assert response.status == 200
    assert time.monotonic() - start >= 0.3


async def test_connection_errors_open_the_host_breaker(server: ScriptedHTTPServer) -> None:
    """Refused connections are retried, raised, then rejected by that host's breaker; others still answer."""
    closed = ScriptedHTTPServer()
    url = closed.url
    closed.close()
    async with session(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0)) as s:
        with pytest.raises(aiohttp.ClientConnectionError):
            await s.get(f"{url}/a")
        with pytest.raises(CircuitOpenError):
            await s.get(f"{url}/a")
        async with s.get(f"{server.url}/a") as response:
            assert response.status == 200


async def test_the_deadline_cancels_the_request(server: ScriptedHTTPServer) -> None:
    """A slow answer (3 s) ends at the policy's 0.3 s deadline: the policy's timeout, as it is (a 504 in FastAPI)."""
    server.script("/slow", (200, {}, 3.0))
    start = time.monotonic()
    async with session(retry_policy=None, timeout=0.3) as s:
        with pytest.raises(OperationTimeoutError) as caught:
            await s.get(f"{server.url}/slow")
    assert not isinstance(caught.value, aiohttp.ClientError)
    assert (caught.value.errno, caught.value.timeout, caught.value.scope) == (None, 0.3, "total")
    assert time.monotonic() - start < 2.5


def _pending_cancellations() -> int:
    """The current task's count of cancellations not taken back (Python 3.11+; 0 before)."""
    task = asyncio.current_task()
    return task.cancelling() if sys.version_info >= (3, 11) and task is not None else 0


async def test_the_sessions_total_timeout_ends_the_request_as_the_policys_timeout(
    server: ScriptedHTTPServer,
) -> None:
    """``ClientTimeout(total=...)`` fires while the server delays its answer: a timeout, sent once.

    aiohttp's total bounds the whole request, so the caller's wait is over: the execution ends
    as a timeout (not a transport failure the retry sends again after the caller has gone, nor
    a cancellation), and the caller gets a ``TimeoutError`` (the policy's ``OperationTimeoutError``).
    """
    server.script("/slow", *[(200, {}, 1.0)] * 3)
    manager = ResilienceManager()
    middleware = ResilientMiddleware(ResilienceConfig(name="slow", retry_policy=FAST), manager=manager)
    timeout = aiohttp.ClientTimeout(total=0.2)
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=timeout) as s:
        with pytest.raises(OperationTimeoutError) as caught:
            await s.get(f"{server.url}/slow")
    assert isinstance(caught.value, asyncio.TimeoutError)
    assert "ClientTimeout.total" in str(caught.value)
    executions = manager.policy("slow").get_stats()["executions"]
    assert (executions["timeouts"], executions["failed"], executions["cancelled"]) == (1, 1, 0)
    assert server.count("/slow") == 1
    assert _pending_cancellations() == 0


async def test_the_sessions_total_timeout_while_waiting_for_a_connection_is_the_policys_timeout(
    server: ScriptedHTTPServer,
) -> None:
    """The total fires while the request waits for the one connection (aiohttp cancels the task there).

    The execution ends as a timeout, not a cancellation; the request was never sent.
    """
    server.script("/held", (200, {}, 1.0))
    manager = ResilienceManager()
    middleware = ResilientMiddleware(ResilienceConfig(name="waits", retry_policy=FAST), manager=manager)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as plain,
        aiohttp.ClientSession(
            connector=plain.connector, connector_owner=False, middlewares=(middleware,)
        ) as s,
    ):
        held = asyncio.create_task(plain.get(f"{server.url}/held"))  # the one connection, for 1 s
        while not server.count("/held"):
            await asyncio.sleep(0.01)
        with pytest.raises(OperationTimeoutError):
            await s.get(f"{server.url}/a", timeout=aiohttp.ClientTimeout(total=0.2))
        assert _pending_cancellations() == 0
        (await held).release()
    executions = manager.policy("waits").get_stats()["executions"]
    assert (executions["timeouts"], executions["cancelled"]) == (1, 0)
    assert server.count("/a") == 0
