"""``Retry-After`` in the forms a host may send, read alike by every client.

A real local server answers a 503 carrying the header as the test asks (several times, or in
odd forms), then 200. Every client reads it by the one rule: a value in no known form, several
values among them, asks for nothing, and the policy's own backoff applies.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.server
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import aiohttp
import httpx
import pytest
import requests

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

CLIENTS = pytest.mark.parametrize("client", ["httpx", "requests", "aiohttp"])


class _Server:
    """A server whose odd requests get a 503 with ``values`` as ``Retry-After`` fields, its even ones 200."""

    def __init__(self) -> None:
        self.values: tuple[str, ...] = ()
        self.sent = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.sent += 1
                self.send_response(503 if owner.sent % 2 else 200)
                if owner.sent % 2:
                    for value in owner.values:
                        self.send_header("Retry-After", value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/x"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering() -> Iterator[_Server]:
    server = _Server()
    try:
        yield server
    finally:
        server.close()


def _config() -> ResilienceConfig:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=10.0, jitter="none")
    return ResilienceConfig(name="forms", retry_policy=retry)


async def _status(client: str, url: str) -> int:
    manager = ResilienceManager()
    if client == "httpx":
        with httpx.Client(transport=ResilientTransport(_config(), manager=manager)) as sync_client:
            return await asyncio.to_thread(lambda: sync_client.get(url).status_code)
    if client == "requests":
        session = requests.Session()
        session.mount("http://", ResilientAdapter(_config(), manager=manager))
        with session:
            return await asyncio.to_thread(lambda: session.get(url).status_code)
    middleware = ResilientMiddleware(_config(), manager=manager)
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session, session.get(url) as response:
        return response.status


@CLIENTS
async def test_several_retry_after_fields_ask_for_nothing_with_every_client(
    client: str, answering: _Server
) -> None:
    """Two fields, 30 s (over max_delay) then 0: no form (a singleton field given twice), so the backoff retries."""
    answering.values = ("30", "0")
    assert (await _status(client, answering.url), answering.sent) == (200, 2)


@CLIENTS
async def test_several_retry_after_dates_ask_for_nothing_with_every_client(
    client: str, answering: _Server
) -> None:
    """Two HTTP dates, a minute ahead (over max_delay): no form either, so the backoff retries.

    Joined (``"<date>, <date>"``, as httpx and requests give them), they were read as the first
    date: the 503 was returned, sent once.
    """
    ahead = email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    answering.values = (ahead, ahead)
    assert (await _status(client, answering.url), answering.sent) == (200, 2)


@CLIENTS
async def test_one_retry_after_date_over_max_delay_ends_the_retries_with_every_client(
    client: str, answering: _Server
) -> None:
    """The control: one date a minute ahead, over max_delay: the 503 is returned, sent once."""
    answering.values = (
        email.utils.format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True),
    )
    assert (await _status(client, answering.url), answering.sent) == (503, 1)


@CLIENTS
async def test_one_retry_after_field_over_max_delay_ends_the_retries_with_every_client(
    client: str, answering: _Server
) -> None:
    """The control: one field of 30 s, over max_delay: the 503 is returned, sent once."""
    answering.values = ("30",)
    assert (await _status(client, answering.url), answering.sent) == (503, 1)
