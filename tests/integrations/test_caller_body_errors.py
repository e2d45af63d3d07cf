"""A request body that the caller streams from a generator and that raises is the caller's error, not the host's.

The client reads the body while it sends: what the caller's generator raises ends the send
(httpx and requests raise it as it is, aiohttp as a ``ClientConnectionError`` from it). The host
did nothing wrong, so the breaker does not count it (as a request the client refuses to send):
one broken upload must not open the host's breaker for every other request to it. The caller
still gets the error, and the request (a streamed body) is not sent again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from support import ScriptedHTTPServer

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

CONFIG = ResilienceConfig(
    name="uploads",
    circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0),
    retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, jitter="none"),
)
"""Opens at the first failure it counts; retries what HTTP lets it."""


class BrokenUploadError(Exception):
    """What the caller's body generator raises part way."""


def body() -> Iterator[bytes]:
    yield b"first part;"
    raise BrokenUploadError("the caller's source of the body failed")


async def abody() -> AsyncIterator[bytes]:
    yield b"first part;"
    raise BrokenUploadError("the caller's source of the body failed")


async def upload_then_get(client: str, manager: ResilienceManager, url: str) -> tuple[BaseException, int]:
    """POST a body that breaks part way, then GET: the error the POST ended with, the GET's status."""
    if client == "requests":
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(CONFIG, manager=manager))
            with pytest.raises(BrokenUploadError) as broken:
                session.post(f"{url}/upload", data=body())
            return broken.value, session.get(f"{url}/next").status_code
    if client == "aiohttp":
        middleware = ResilientMiddleware(CONFIG, manager=manager)
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            with pytest.raises(aiohttp.ClientConnectionError) as failed:
                await session.post(f"{url}/upload", data=abody())
            assert isinstance(failed.value.__cause__, BrokenUploadError)
            async with session.get(f"{url}/next") as response:
                return failed.value, response.status
    if client == "httpx":
        with httpx.Client(transport=ResilientTransport(CONFIG, manager=manager)) as sync:
            with pytest.raises(BrokenUploadError) as broken:
                sync.post(f"{url}/upload", content=body())
            return broken.value, sync.get(f"{url}/next").status_code
    async with httpx.AsyncClient(transport=AsyncResilientTransport(CONFIG, manager=manager)) as aclient:
        with pytest.raises(BrokenUploadError) as broken:
            await aclient.post(f"{url}/upload", content=abody())
        return broken.value, (await aclient.get(f"{url}/next")).status_code


@pytest.mark.parametrize("client", ["httpx", "httpx-async", "requests", "aiohttp"])
async def test_a_body_generator_that_raises_does_not_open_the_hosts_breaker(
    client: str, server: ScriptedHTTPServer
) -> None:
    """The caller gets its error, sent once; the breaker counts nothing; the next request goes through."""
    manager = ResilienceManager()
    _, status = await upload_then_get(client, manager, server.url)
    assert status == 200  # not CircuitOpenError
    stats: dict[str, Any] = manager.policy("uploads").get_stats()["circuit_breaker"]
    assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (0, 1, 0)
    assert server.count("/upload") <= 1  # a streamed body is never sent again


async def test_an_error_of_the_host_while_a_body_streams_is_still_counted(server: ScriptedHTTPServer) -> None:
    """Only the caller's own generator is spared: a 503 answering a streamed upload is the host's failure."""
    manager = ResilienceManager()
    server.script("/upload", (503, {}))

    def fine() -> Iterator[bytes]:
        yield b"all of it"

    with httpx.Client(transport=ResilientTransport(CONFIG, manager=manager)) as client:
        assert client.post(f"{server.url}/upload", content=fine()).status_code == 503
    stats: dict[str, Any] = manager.policy("uploads").get_stats()["circuit_breaker"]
    assert (stats["total_failures"], stats["total_ignored"], stats["times_opened"]) == (1, 0, 1)
