"""An async client's pool of one connection and a result the policy retries.

A response the retry drops (its ``retry_on_result`` asked for another attempt) is never the
caller's: it is closed as soon as the request is sent again, so its connection is back in the
pool before the next send asks for one (closed only at the end, the next send would wait for it
until the deadline). A hedging race runs sends side by side: a send that starts in a race closes
nothing of it, and the response that won the race reaches the caller open. A failed response
whose body is over the drain limit, left open in its attempt, is closed before the backoff too.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from dataclasses import replace
from typing import Any

import aiohttp
import httpx
import pytest
from support import BackoffCheck, ScriptedHTTPServer

from otel_resilience import HedgingConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport

RETRY_202 = RetryPolicy(
    max_attempts=3, initial_delay=0.0, jitter="none", retry_on_result=lambda r: _status(r) == 202
)
"""Three attempts at once; a 202 (a job not finished yet) is tried again."""


def _status(response: Any) -> int:
    """The status of an httpx or an aiohttp response."""
    return response.status_code if isinstance(response, httpx.Response) else response.status  # type: ignore[no-any-return]


def _config(**fields: Any) -> ResilienceConfig:
    return ResilienceConfig(name="jobs", retry_policy=RETRY_202, timeout=5.0, **fields)


async def test_httpx_with_a_pool_of_one_retries_a_result_without_waiting_for_its_own_connection(
    server: ScriptedHTTPServer,
) -> None:
    server.script("/job", (202, {}), (202, {}), (200, {}))
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    transport = AsyncResilientTransport(_config(), transport=inner, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        response = await asyncio.wait_for(client.get(f"{server.url}/job"), 4.0)
        assert response.status_code == 200
        assert response.text == "200"
    assert server.count("/job") == 3


class LargeBodies:
    """A real HTTP/1.1 server on 127.0.0.1, in a thread, whose answers carry a large body.

    aiohttp gives a connection back to its pool on its own once a response's body has all come
    in, read or not: a small body would hide a dropped response that holds its connection.
    These bodies (1 MiB) do not all come in until read. ``statuses`` are answered in order, then
    200; ``count`` is how many requests came.
    """

    SIZE = 2**20

    def __init__(self, *statuses: int) -> None:
        queue = list(statuses)
        self.count = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner.count += 1  # one request at a time in these tests
                status = queue.pop(0) if queue else 200
                self.send_response(status)
                self.send_header("Content-Length", str(owner.SIZE))
                self.end_headers()
                try:
                    self.wfile.write(str(status).encode().ljust(owner.SIZE, b" "))
                except OSError:  # the client closed a response it dropped
                    self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


async def test_aiohttp_with_a_pool_of_one_retries_a_result_without_waiting_for_its_own_connection() -> None:
    server = LargeBodies(202, 202)
    middleware = ResilientMiddleware(_config(), manager=ResilienceManager())
    connector = aiohttp.TCPConnector(limit=1)
    try:
        async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
            response = await asyncio.wait_for(session.get(f"{server.url}/job"), 4.0)
            async with response:
                assert response.status == 200
                assert (await response.read()).rstrip() == b"200"
        assert server.count == 3
    finally:
        server.close()


async def test_httpx_under_hedging_a_retried_race_frees_its_connections_and_the_winner_stays_open(
    server: ScriptedHTTPServer,
) -> None:
    """Each retry runs a race: the responses of the races the retry dropped are closed, the last winner's kept open.

    The first race's original is slow, so a hedge answers it (202); each later race answers at
    once. Two connections: a third race would find none free if a dropped 202 kept its own.
    """
    server.script("/job", (202, {}, 0.3), (202, {}), (202, {}))
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=2))
    hedged = ResilienceConfig(
        name="jobs",
        retry_policy=replace(RETRY_202, max_attempts=5),  # room for a hedge that came late
        hedging=HedgingConfig(delay=0.05, max_attempts=2),
        timeout=5.0,
    )
    transport = AsyncResilientTransport(hedged, transport=inner, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{server.url}/job") as response:
            assert response.status_code == 200
            assert not response.is_closed
            assert await asyncio.wait_for(response.aread(), 4.0) == b"200"


async def test_httpx_a_retried_result_the_retry_gives_up_on_is_returned_open(
    server: ScriptedHTTPServer,
) -> None:
    """The retry retries a 202 but has no attempt left: that response is the caller's, unread and open."""
    server.script("/job", (202, {}), (202, {}))
    config = ResilienceConfig(name="jobs", retry_policy=replace(RETRY_202, max_attempts=2), timeout=5.0)
    transport = AsyncResilientTransport(config, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{server.url}/job") as response:
            assert response.status_code == 202
            assert await response.aread() == b"202"
    assert server.count("/job") == 2


async def test_httpx_a_send_started_in_a_race_closes_nothing_of_it(server: ScriptedHTTPServer) -> None:
    """Hedging sets the original's 202 aside and starts a hedge: that send must not close the original's.

    No attempt is acceptable, so the original's response is the execution's: it reaches the
    caller open and readable; the hedge's is closed at the end.
    """
    server.script("/job", (202, {}), (202, {}))
    hedging = HedgingConfig(mode="fallback", max_attempts=2, hedge_on_result=lambda r: r.status_code == 202)
    config = ResilienceConfig(name="jobs", hedging=hedging, timeout=5.0)
    transport = AsyncResilientTransport(config, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        async with client.stream("GET", f"{server.url}/job") as response:
            assert response.status_code == 202
            assert not response.is_closed
            assert await response.aread() == b"202"
    assert server.count("/job") == 2


BACKOFF_202 = replace(RETRY_202, max_attempts=2, initial_delay=30.0, max_delay=30.0)
"""One retry of a 202, after a backoff the clock runs a check in."""


async def test_httpx_a_result_the_retry_dropped_frees_its_connection_before_the_backoff(
    server: ScriptedHTTPServer,
) -> None:
    """During the backoff, a request on the same pool of one gets the connection at once."""
    server.script("/job", (202, {}), (200, {}))
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    other = httpx.AsyncClient(transport=inner, timeout=httpx.Timeout(5.0, pool=2.0))  # the same pool

    async def during() -> int:
        return (await other.get(f"{server.url}/other")).status_code

    clock = BackoffCheck(during)
    config = ResilienceConfig(name="jobs", retry_policy=BACKOFF_202)
    transport = AsyncResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    async with httpx.AsyncClient(transport=transport) as client:
        response = await asyncio.wait_for(client.get(f"{server.url}/job"), 10.0)
        assert response.status_code == 200
    assert clock.outcomes == [200]
    assert server.count("/job") == 2


@pytest.mark.parametrize(("status", "policy"), [(202, "result"), (503, "large failed body")], ids=str)
async def test_aiohttp_a_response_the_retry_drops_frees_its_connection_before_the_backoff(
    status: int, policy: str
) -> None:
    """As with httpx: a session limited to one connection serves another request during the backoff.

    The response the retry goes on after is a result its ``retry_on_result`` rejected (a 202), or
    a 503 whose body is over the drain limit, left open in its attempt: either is released first.
    """
    server = LargeBodies(status)
    connector = aiohttp.TCPConnector(limit=1)

    async def during() -> int:
        async with session.get(f"{server.url}/other", timeout=aiohttp.ClientTimeout(total=2.0)) as other:
            await other.read()
            return other.status

    clock = BackoffCheck(during)
    middleware = ResilientMiddleware(
        ResilienceConfig(name="jobs", retry_policy=BACKOFF_202 if policy == "result" else BACKOFF_FAILED),
        manager=ResilienceManager(clock=clock),
    )
    try:
        async with aiohttp.ClientSession(connector=connector, middlewares=(middleware,)) as session:
            response = await asyncio.wait_for(session.get(f"{server.url}/job"), 10.0)
            async with response:
                assert response.status == 200
        assert [str(outcome) for outcome in clock.outcomes] == ["200"]
        assert server.count == 3  # the job twice, the other request once
    finally:
        server.close()


BACKOFF_FAILED = RetryPolicy(max_attempts=2, initial_delay=30.0, max_delay=30.0, jitter="none")
"""One retry of a failed response, after a backoff the clock runs a check in."""


async def test_httpx_a_large_failed_body_the_retry_drops_is_closed_before_the_backoff() -> None:
    """A 503 whose body is over the drain limit, left open in its attempt, is closed before the backoff."""
    server = LargeBodies(503)
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    other = httpx.AsyncClient(transport=inner, timeout=httpx.Timeout(5.0, pool=2.0))  # the same pool

    async def during() -> int:
        return (await other.get(f"{server.url}/other")).status_code

    clock = BackoffCheck(during)
    config = ResilienceConfig(name="jobs", retry_policy=BACKOFF_FAILED)
    transport = AsyncResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    try:
        async with httpx.AsyncClient(transport=transport) as client:
            response = await asyncio.wait_for(client.get(f"{server.url}/job"), 10.0)
            assert response.status_code == 200
        assert clock.outcomes == [200]
        assert server.count == 3  # the job twice, the other request once
    finally:
        server.close()
