"""The body of a response the retry drops for its result (a 202 polled until 200), with every client.

Such a response is read up to the drain limit before it is closed, as a failed one is in its
attempt: a body that ends within it is read whole, so its keep-alive connection goes back to
the client's pool and the next send reuses it; a longer one is closed unread. The read is
bounded by the deadline (a body that keeps coming never holds the call past it), and a
cancellation while it reads closes the response. A raw HTTP/1.1 server counts the connections
it accepts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests

from otel_resilience import OperationTimeoutError, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import DRAIN_LIMIT
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

Answer = Callable[[socket.socket], bool]
"""Writes one answer on the connection; returns whether the connection stays open."""


def complete(status: int, body: bytes) -> Answer:
    def answer(connection: socket.socket) -> bool:
        connection.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        return True

    return answer


def later(status: int, body: bytes) -> Answer:
    """A complete answer whose body follows its head a moment later (a job's status written once known).

    The client hands the response over at its head: its body is still to come when the retry
    drops it.
    """

    def answer(connection: socket.socket) -> bool:
        connection.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        threading.Event().wait(0.03)
        connection.sendall(body)
        return True

    return answer


class CountingServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 answering from ``answers`` in order, then ``200 ok``.

    ``connections`` counts the connections accepted, ``sent`` the requests read; ``held`` is set
    when the test ends (an answer may wait on it), ``gone`` when an answer found its connection
    closed.
    """

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.sent = 0
        self.held = threading.Event()
        self.gone = threading.Event()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as reader:
            while self._read_request(reader):
                with self.lock:
                    self.sent += 1
                    answer = self.answers.pop(0) if self.answers else complete(200, b"ok")
                try:
                    if not answer(connection):
                        return
                except OSError:  # the client went away
                    return

    @staticmethod
    def _read_request(reader: Any) -> bool:
        """Read one request's head (a GET: no body); ``False`` once the client closed the connection."""
        try:
            line = reader.readline()
            while line not in (b"\r\n", b""):
                line = reader.readline()
        except OSError:
            return False
        return bool(line)

    def close(self) -> None:
        self.held.set()
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., CountingServer]]:
    servers: list[CountingServer] = []

    def make(*answers: Answer) -> CountingServer:
        servers.append(CountingServer(*answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _status(response: Any) -> int:
    """The status of an httpx, requests or aiohttp response."""
    return response.status if isinstance(response, aiohttp.ClientResponse) else response.status_code  # type: ignore[no-any-return]


POLL = RetryPolicy(
    max_attempts=3, initial_delay=0.0, jitter="none", retry_on_result=lambda r: _status(r) == 202
)
"""Three attempts at once; a 202 (a job not finished yet) is asked for again."""
REQUESTS = 20
"""Requests made, each answered 202, 202, 200."""


def _config(**changes: Any) -> ResilienceConfig:
    fields: dict[str, Any] = {"name": "jobs", "retry_policy": POLL, "timeout": 30.0}
    fields.update(changes)
    return ResilienceConfig(**fields)


def _polled(body: bytes = b"pending") -> list[Answer]:
    """The answers of :data:`REQUESTS` requests: 202, 202 (with ``body``, a moment after the head), then 200 each."""
    return [later(202, body), later(202, body), complete(200, b"done")] * REQUESTS


def _poll_sync(client: str, url: str, count: int, **changes: Any) -> list[tuple[int, bytes]]:
    """GET ``url`` ``count`` times with the sync ``client`` under :func:`_config`; each status and body."""
    answers = []
    if client == "requests":
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(_config(**changes), manager=ResilienceManager()))
            for _ in range(count):
                response = session.get(f"{url}/job")
                answers.append((response.status_code, response.content))
        return answers
    transport = ResilientTransport(_config(**changes), manager=ResilienceManager())
    with httpx.Client(transport=transport) as http:
        for _ in range(count):
            answer = http.get(f"{url}/job")
            answers.append((answer.status_code, answer.content))
    return answers


async def _poll_async(client: str, url: str, count: int, **changes: Any) -> list[tuple[int, bytes]]:
    """As :func:`_poll_sync`, with ``httpx`` (async) or ``aiohttp``."""
    answers = []
    if client == "aiohttp":
        middleware = ResilientMiddleware(_config(**changes), manager=ResilienceManager())
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            for _ in range(count):
                async with session.get(f"{url}/job") as response:
                    answers.append((response.status, await response.read()))
        return answers
    transport = AsyncResilientTransport(_config(**changes), manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as http:
        for _ in range(count):
            answer = await http.get(f"{url}/job")
            answers.append((answer.status_code, answer.content))
    return answers


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_result_the_retry_drops_gives_its_connection_back(
    serve: Callable[..., CountingServer], client: str
) -> None:
    """20 polls answered 202, 202, 200 on a keep-alive server: one connection, not one per 202."""
    server = serve(*_polled())
    assert _poll_sync(client, server.url, REQUESTS) == [(200, b"done")] * REQUESTS
    assert server.sent == 3 * REQUESTS
    assert server.connections <= 2


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_async_a_result_the_retry_drops_gives_its_connection_back(
    serve: Callable[..., CountingServer], client: str
) -> None:
    """As with the sync clients: the dropped 202s' connections are reused."""
    server = serve(*_polled())
    assert await _poll_async(client, server.url, REQUESTS) == [(200, b"done")] * REQUESTS
    assert server.sent == 3 * REQUESTS
    assert server.connections <= 2


@pytest.mark.parametrize(("size", "connections"), [(DRAIN_LIMIT, 1), (4 * DRAIN_LIMIT, 2)])
@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_dropped_result_is_read_up_to_the_drain_limit_only(
    serve: Callable[..., CountingServer], client: str, size: int, connections: int
) -> None:
    """A dropped 202 of 64 KiB is read whole, its connection reused; a longer one is closed unread."""
    server = serve(later(202, b"x" * size), complete(200, b"done"))
    assert _poll_sync(client, server.url, 1) == [(200, b"done")]
    assert (server.sent, server.connections) == (2, connections)


@pytest.mark.parametrize(("size", "connections"), [(DRAIN_LIMIT, 1), (4 * DRAIN_LIMIT, 2)])
@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_async_a_dropped_result_is_read_up_to_the_drain_limit_only(
    serve: Callable[..., CountingServer], client: str, size: int, connections: int
) -> None:
    """As with the sync clients: 64 KiB read whole and reused, a longer body closed unread."""
    server = serve(later(202, b"x" * size), complete(200, b"done"))
    assert await _poll_async(client, server.url, 1) == [(200, b"done")]
    assert (server.sent, server.connections) == (2, connections)


def trickling(server: Callable[[], CountingServer]) -> Answer:
    """A 202 whose body never ends: a byte every 20 ms, each read well within any timeout.

    Sets the server's ``gone`` once the client closed the connection.
    """

    def answer(connection: socket.socket) -> bool:
        connection.sendall(b"HTTP/1.1 202 X\r\nContent-Length: 1000000\r\n\r\n")
        try:
            while not server().held.wait(0.02):
                connection.sendall(b"x")
        except OSError:
            server().gone.set()
            raise
        return False

    return answer


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_dropped_result_whose_body_keeps_coming_is_read_until_the_deadline_only(
    serve: Callable[..., CountingServer], client: str
) -> None:
    """A dropped 202 trickling in for good: its read ends at the deadline, the policy's timeout."""
    server: CountingServer = serve(trickling(lambda: server))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            _poll_sync(client, server.url, 1, timeout=1.0)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the dropped body was read past the deadline"
    [error] = outcome
    assert isinstance(error, OperationTimeoutError)
    assert server.sent == 1


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_async_a_dropped_result_whose_body_keeps_coming_is_read_until_the_deadline_only(
    serve: Callable[..., CountingServer], client: str
) -> None:
    """As with the sync clients: the deadline ends the read, the caller gets the policy's timeout."""
    server: CountingServer = serve(trickling(lambda: server))
    with pytest.raises(OperationTimeoutError):
        await asyncio.wait_for(_poll_async(client, server.url, 1, timeout=1.0), 10)
    assert server.sent == 1


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
async def test_a_cancellation_while_a_dropped_result_is_read_closes_it(
    serve: Callable[..., CountingServer], client: str
) -> None:
    """Cancelled while it reads a dropped 202's body, the request ends cancelled, its response closed.

    Nothing is left open: an unclosed response or connection would be a ``ResourceWarning`` (an
    error here), and the client, closed after, closes no connection the read still held.
    """
    server: CountingServer = serve(trickling(lambda: server))
    task = asyncio.ensure_future(_poll_async(client, server.url, 1))
    for _ in range(500):  # until the 202 came and its body is being read
        await asyncio.sleep(0.01)
        if server.sent:
            break
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.sent == 1
    assert await asyncio.to_thread(server.gone.wait, 10), "the dropped response's connection stayed open"


async def test_aiohttp_its_total_timeout_while_a_dropped_result_is_read_ends_the_request(
    serve: Callable[..., CountingServer],
) -> None:
    """aiohttp's ``ClientTimeout.total`` fires while a dropped 202's body trickles in: the request is over.

    The caller gets the policy's timeout, as when it fires during a send, and the request is not
    sent again after it.
    """
    server: CountingServer = serve(trickling(lambda: server))
    manager = ResilienceManager()
    middleware = ResilientMiddleware(_config(timeout=None), manager=manager)
    total = aiohttp.ClientTimeout(total=0.5)
    async with aiohttp.ClientSession(middlewares=(middleware,), timeout=total) as session:
        with pytest.raises(OperationTimeoutError) as caught:
            await asyncio.wait_for(session.get(f"{server.url}/job"), 10)
    assert "ClientTimeout.total" in str(caught.value)
    executions = manager.policy("jobs").get_stats()["executions"]
    assert (executions["timeouts"], executions["cancelled"]) == (1, 0)
    assert server.sent == 1
