"""A client closed while one of its requests is under way (its retry backing off).

The client would never send the request again once closed (httpx refuses a closed client's
requests, aiohttp a closed session's): neither does the policy. The request ends with a clear
error, sent no more, and no connection is opened that the closed client would never close
(httpx's pool opens one again for any send: it would be left open for good). A new request
opens an httpx transport again, as httpx's own transports allow (one shared by two clients).
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import aiohttp
import httpx
import pytest
from support import BackoffCheck, ScriptedHTTPServer

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport

BACKOFF = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=30.0, jitter="none")
"""Retries after a backoff the clock runs a check in (the client closed there)."""


def test_httpx_a_request_is_not_sent_again_once_its_client_closed(server: ScriptedHTTPServer) -> None:
    server.script("/a", (503, {}), (503, {}))
    inner = httpx.HTTPTransport()
    client: httpx.Client

    def close() -> None:
        client.close()

    clock = BackoffCheck(close)
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF)
    transport = ResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    client = httpx.Client(transport=transport)
    with pytest.raises(RuntimeError, match="transport has been closed"):
        client.get(f"{server.url}/a")
    assert server.count("/a") == 1  # the retry sent nothing through the closed client
    assert inner._pool.connections == []  # no connection left open by a send after the close
    with httpx.Client(transport=transport) as other:  # a new request opens the transport again
        assert other.get(f"{server.url}/b").status_code == 200


async def test_httpx_async_a_request_is_not_sent_again_once_its_client_closed(
    server: ScriptedHTTPServer,
) -> None:
    server.script("/a", (503, {}), (503, {}))
    inner = httpx.AsyncHTTPTransport()
    client: httpx.AsyncClient

    async def close() -> None:
        await client.aclose()

    clock = BackoffCheck(close)
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF)
    transport = AsyncResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    client = httpx.AsyncClient(transport=transport)
    with pytest.raises(RuntimeError, match="transport has been closed"):
        await asyncio.wait_for(client.get(f"{server.url}/a"), 10.0)
    assert server.count("/a") == 1
    assert inner._pool.connections == []
    async with httpx.AsyncClient(transport=transport) as other:
        assert (await other.get(f"{server.url}/b")).status_code == 200


async def test_aiohttp_a_request_is_not_sent_again_once_its_session_closed(
    server: ScriptedHTTPServer,
) -> None:
    """The caller gets aiohttp's own error for a closed session, not an assertion of aiohttp's."""
    server.script("/a", (503, {}), (503, {}))
    session: aiohttp.ClientSession

    async def close() -> None:
        await session.close()

    clock = BackoffCheck(close)
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF)
    middleware = ResilientMiddleware(config, manager=ResilienceManager(clock=clock))
    session = aiohttp.ClientSession(middlewares=(middleware,))
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="Session is closed"):
            await asyncio.wait_for(session.get(f"{server.url}/a"), 10.0)
        gc.collect()
    assert server.count("/a") == 1
    assert [str(w.message) for w in warned if "nclosed" in str(w.message)] == []
