"""A hedged request's sends that end waiting for a connection of the client's pool: none is the host's failure.

Under hedging, the original and its hedges run side by side, each asking the breaker: a send
that ended in the wait for a free connection never left the client, whichever of the race's
sends it was, so the breaker counts none of them.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import httpx
import pytest
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    HedgingConfig,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport


def _config() -> ResilienceConfig:
    """A breaker, an attempt timeout of 0.3 s, and a hedge 50 ms after the original."""
    return ResilienceConfig(
        name="pooled",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=RetryPolicy(max_attempts=1, attempt_timeout=0.3),
        hedging=HedgingConfig(delay=0.05, max_attempts=2),
    )


async def test_every_hedged_send_a_pool_wait_ended_is_spared_not_only_the_last(
    server: ScriptedHTTPServer,
) -> None:
    """The original and its hedge both wait for the pool's one connection until their attempt timeouts: none counted."""
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager()
    transport = AsyncResilientTransport(_config(), transport=inner, manager=manager)
    async with httpx.AsyncClient(transport=transport) as client:
        other = httpx.AsyncClient(transport=inner)
        keeping = await other.send(other.build_request("GET", f"{server.url}/held"), stream=True)
        try:
            with pytest.raises(OperationTimeoutError) as raised:
                await client.get(f"{server.url}/job")
        finally:
            await keeping.aclose()
        assert raised.value.scope == "attempt"
        stats = manager.policy("pooled").get_stats()["circuit_breaker"]
        assert (stats["total_failures"], stats["total_ignored"]) == (0, 2)
        assert (await client.get(f"{server.url}/job")).status_code == 200
    assert server.count("/job") == 1


async def test_aiohttp_every_hedged_send_a_pool_wait_ended_is_spared(server: ScriptedHTTPServer) -> None:
    """aiohttp's wait for its one connection slot, by the original and its hedge, each ended by its attempt's timeout: none counted."""
    manager = ResilienceManager()
    middleware = ResilientMiddleware(_config(), manager=manager)
    server.script("/held", (200, {}, 5.0))
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as client:
        keeping = asyncio.ensure_future(client.get(f"{server.url}/held", middlewares=()))
        while not server.count("/held"):  # its connection is taken
            await asyncio.sleep(0.005)
        try:
            with pytest.raises(OperationTimeoutError) as raised:
                await client.get(f"{server.url}/job")
        finally:
            keeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeping
    assert raised.value.scope == "attempt"
    stats = manager.policy("pooled").get_stats()["circuit_breaker"]
    assert (stats["total_failures"], stats["total_ignored"]) == (0, 2)
    assert server.count("/job") == 0
