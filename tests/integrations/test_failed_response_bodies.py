"""The body of a failed response, through aiohttp's middleware, requests' adapter and httpx.

A failed response (a 5xx) is read inside its attempt. What can happen while it is read is
what can happen to any answer: the body is cut off or cannot be decoded (a transport failure,
retried like a reset), the deadline ends the read (the policy's timeout), even while the body
keeps coming a little at a time. The response the caller gets when attempts
run out reads as the client would give it: aiohttp's ``read()`` and ``content`` stream too.
A failed body longer than the drain limit is read no further than it in its attempt: a response
the retry goes on after is closed there, and only the last, which the caller gets, is read whole.
A raw HTTP/1.1 server scripts each answer byte for byte.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import socket
import sys
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Final

import aiohttp
import httpx
import pytest
import requests
from support import FAST_RETRY

from otel_resilience import (
    CircuitBreakerConfig,
    OperationTimeoutError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import MalformedResponseError, ResilientMiddleware
from otel_resilience.integrations.http import DRAIN_LIMIT, FailedResponseError, HttpOptions
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter
from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy

Answer = Callable[[socket.socket], bool]
"""Writes one answer on the connection; returns whether the connection stays open."""


def complete(status: int, body: bytes) -> Answer:
    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        connection.sendall(head + body)
        return True

    return answer


def cut_off(status: int) -> Answer:
    """A head announcing 100 bytes, 7 of them, and the connection closed."""

    def answer(connection: socket.socket) -> bool:
        connection.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 100\r\n\r\npartial".encode())
        return False

    return answer


def undecodable(status: int) -> Answer:
    """A complete answer whose body is not what its ``Content-Encoding`` says (not gzip)."""

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\n"
        connection.sendall(head.encode() + b"not gzip!")
        return True

    return answer


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 answering requests in order from ``answers``.

    Once ``answers`` is empty it answers ``200 ok``. ``held`` is set when the test ends: an
    answer may wait on it (a body that never comes). ``sent`` counts the requests read.
    """

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.held = threading.Event()
        self.sent = 0
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
        """Read one request's head and body; ``False`` when the client closed the connection.

        A client that closed a response it left unread resets the connection: closed too.
        """
        length = 0
        try:
            line = reader.readline()
        except ConnectionResetError:
            return False
        if not line:
            return False
        while line not in (b"\r\n", b""):
            line = reader.readline()
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        reader.read(length)
        return True

    def close(self) -> None:
        self.held.set()
        self.listener.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(*answers: Answer) -> RawServer:
        servers.append(RawServer(*answers))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def requests_session(**changes: Any) -> requests.Session:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST_RETRY}
    fields.update(changes)
    session = requests.Session()
    session.mount("http://", ResilientAdapter(ResilienceConfig(**fields), manager=ResilienceManager()))
    return session


def httpx_client(**changes: Any) -> httpx.Client:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST_RETRY}
    fields.update(changes)
    return httpx.Client(transport=ResilientTransport(ResilienceConfig(**fields), manager=ResilienceManager()))


def get_sync(client: str, url: str, **changes: Any) -> tuple[int, str]:
    """GET ``url`` with the sync ``client`` (``requests`` or ``httpx``) under a policy; its status and text."""
    if client == "requests":
        with requests_session(**changes) as session:
            response = session.get(url)
            return response.status_code, response.text
    with httpx_client(**changes) as http:
        answer = http.get(url)
        return answer.status_code, answer.text


def aiohttp_session(options: HttpOptions | None = None, **changes: Any) -> aiohttp.ClientSession:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST_RETRY}
    fields.update(changes)
    middleware = ResilientMiddleware(ResilienceConfig(**fields), options=options, manager=ResilienceManager())
    return aiohttp.ClientSession(middlewares=(middleware,))


# ---------------------------------------------------------------------------- a body cut off


@pytest.mark.parametrize("stream", [False, True])
def test_requests_retries_a_get_whose_failed_body_was_cut_off(
    raw: Callable[..., RawServer], stream: bool
) -> None:
    """A 503 whose body ends early is a transport failure: the GET is sent again (as with httpx)."""
    server = raw(cut_off(503))
    response = requests_session().get(f"{server.url}/a", stream=stream)
    assert (response.status_code, response.text, server.sent) == (200, "ok", 2)


async def test_aiohttp_retries_a_get_whose_failed_body_was_cut_off(raw: Callable[..., RawServer]) -> None:
    """A 503 whose body ends early is a transport failure: the GET is sent again (as with httpx)."""
    server = raw(cut_off(503))
    async with aiohttp_session() as session, session.get(f"{server.url}/a") as response:
        assert (response.status, await response.text(), server.sent) == (200, "ok", 2)


def bad_status_line(connection: socket.socket) -> bool:
    """A status line no parser reads (``HTTP/1.1 abc OK``), and the connection closed."""
    connection.sendall(b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok")
    return False


async def test_aiohttp_retries_a_get_whose_response_cannot_be_parsed(raw: Callable[..., RawServer]) -> None:
    """A response aiohttp cannot parse is a transport error, as requests and httpx raise it: sent again,
    counted by the breaker; the caller's error is still aiohttp's ClientResponseError."""
    server = raw(bad_status_line)
    async with aiohttp_session() as session:
        async with session.get(f"{server.url}/a") as response:
            assert (response.status, await response.read(), server.sent) == (200, b"ok", 2)
    twice = ResilienceConfig(
        name="downstream", retry_policy=TWICE, circuit_breaker=CircuitBreakerConfig(failure_threshold=10)
    )
    manager = ResilienceManager()
    server = raw(bad_status_line, bad_status_line)
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(twice, manager=manager),)) as session:
        with pytest.raises(aiohttp.ClientResponseError) as caught:
            await session.get(f"{server.url}/a")
    assert isinstance(caught.value, MalformedResponseError)
    assert isinstance(caught.value, aiohttp.ClientConnectionError)
    assert "Bad status line" in caught.value.message
    assert server.sent == 2
    host = server.url.removeprefix("http://")
    breaker = manager.policy("downstream").for_key(host).circuit_breaker
    assert breaker is not None
    assert breaker.get_stats()["total_failures"] == 2


def test_requests_sends_a_post_whose_failed_body_was_cut_off_once(raw: Callable[..., RawServer]) -> None:
    """The control: a POST is still sent once, and the client's error reaches the caller."""
    server = raw(cut_off(503))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests_session().post(f"{server.url}/a", data=b"order")
    assert server.sent == 1


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_get_whose_failed_body_cannot_be_decoded_is_retried(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose body is not the gzip it claims is a transport failure: sent again, as with aiohttp.

    The client's decoding error while the failed body is read is no answer to give: it is retried
    (counted by the breaker) like a body cut off, not raised at once.
    """
    server = raw(undecodable(503))
    assert get_sync(client, f"{server.url}/a") == (200, "ok")
    assert server.sent == 2


async def test_httpx_async_retries_a_get_whose_failed_body_cannot_be_decoded(
    raw: Callable[..., RawServer],
) -> None:
    """The async transport shares the rule: the undecodable 503 is sent again."""
    server = raw(undecodable(503))
    config = ResilienceConfig(name="downstream", retry_policy=FAST_RETRY)
    transport = AsyncResilientTransport(config, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/a")
    assert (response.status_code, response.text, server.sent) == (200, "ok", 2)


async def test_aiohttp_retries_a_get_whose_failed_body_cannot_be_decoded(
    raw: Callable[..., RawServer],
) -> None:
    """The control: aiohttp reports the undecodable body as a payload error, retried."""
    server = raw(undecodable(503))
    async with aiohttp_session() as session, session.get(f"{server.url}/a") as response:
        assert (response.status, await response.text(), server.sent) == (200, "ok", 2)


# ---------------------------------------------------------------------------- the deadline


def test_requests_the_deadline_in_a_failed_body_is_the_policys_timeout(raw: Callable[..., RawServer]) -> None:
    """A 503 whose body stops coming: at the deadline the caller gets OperationTimeoutError.

    requests reports a read timeout in a body as a ConnectionError; at the deadline this layer
    passed on as the timeout, it is the policy's timeout, as a read timeout before the body is.
    """
    server: RawServer

    def stalled(connection: socket.socket) -> bool:
        connection.sendall(b"HTTP/1.1 503 X\r\nContent-Length: 4\r\n\r\n50")
        server.held.wait()
        return False

    server = raw(stalled)
    with pytest.raises(OperationTimeoutError):
        requests_session(retry_policy=None, timeout=0.2).get(f"{server.url}/a")
    assert server.sent == 1


_GZIP_NAMED: Final = b"\x1f\x8b\x08\x08\0\0\0\0\0\xff"
"""The start of a gzip member whose header carries a file name (FNAME): nothing decodes until it ends."""
_FRAMINGS: dict[str, tuple[bytes, bytes, bytes]] = {
    "chunks of a byte": (b"Transfer-Encoding: chunked", b"", b"1\r\nx\r\n"),
    "one long chunk": (b"Transfer-Encoding: chunked", b"100000\r\n", b"x"),
    "a content length": (b"Content-Length: 1000000", b"", b"x"),
    "a gzip name that never ends": (b"Content-Encoding: gzip\r\nContent-Length: 1000000", _GZIP_NAMED, b"x"),
}
"""How a body that never ends is framed: the head's last field(s), the body's start, each drip."""


def dripping(server: Callable[[], RawServer], framing: str = "chunks of a byte") -> Answer:
    """A 503 whose body never ends: a byte every 20 ms, each read well within any timeout.

    Framed as ``framing`` says (:data:`_FRAMINGS`): HTTP chunks of a byte each, one chunk far
    longer than what comes, a ``Content-Length`` far longer than what comes, or a gzip body whose
    header never ends (a file name that goes on: not a byte of it decodes).
    """
    head, start, drip = _FRAMINGS[framing]

    def answer(connection: socket.socket) -> bool:
        connection.sendall(b"HTTP/1.1 503 X\r\n" + head + b"\r\n\r\n" + start)
        while not server().held.wait(0.02):
            connection.sendall(drip)
        return False

    return answer


@pytest.mark.parametrize("framing", list(_FRAMINGS))
@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_failed_body_that_keeps_coming_is_read_until_the_deadline_only(
    raw: Callable[..., RawServer], client: str, framing: str
) -> None:
    """A 503 whose body trickles in for good: the read stops at the deadline (the policy's timeout).

    The client's read timeout bounds each read, and each byte comes well within it: reading the
    failed body to its end would keep the caller's thread past its deadline, for good. So would
    reading it in pieces of a fixed size, each waiting for its bytes through many reads (a byte
    every 20 ms fills requests' 10 KiB pieces in some 200 s), or decoding it until something
    decodes (a gzip header never ends), however the body is framed.
    """
    server: RawServer = raw(dripping(lambda: server, framing))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            get_sync(client, f"{server.url}/a", retry_policy=None, timeout=0.2)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the failed body was read past the deadline"
    [error] = outcome
    assert isinstance(error, OperationTimeoutError)
    assert server.sent == 1


# ---------------------------------------------------------------------------- the response returned


async def test_aiohttp_the_failed_response_returned_reads_as_an_unread_one(
    raw: Callable[..., RawServer],
) -> None:
    """After the attempts ran out, the 503 is read with read(), text() and its content stream."""
    server = raw(*[complete(503, b"error page")] * 3)
    async with aiohttp_session() as session:
        async with session.get(f"{server.url}/a") as response:
            assert response.status == 503
            assert await response.read() == b"error page"
            assert await response.text() == "error page"
        async with session.get(f"{server.url}/b") as response:  # an answer of 200: the control
            assert await response.read() == b"ok"
        server.answers.extend([complete(503, b"error page")] * 3)
        async with session.get(f"{server.url}/c") as response:
            assert [chunk async for chunk in response.content.iter_chunked(4)] == [b"erro", b"r pa", b"ge"]
    assert server.sent == 7


@pytest.mark.parametrize("stream", [False, True])
def test_requests_the_failed_response_returned_reads_as_an_unread_one(
    raw: Callable[..., RawServer], stream: bool
) -> None:
    """After the attempts ran out, the 503 gives its body through content, text and iter_content."""
    server = raw(*[complete(503, b"error page")] * 3)
    with requests_session() as session:
        response = session.get(f"{server.url}/a", stream=stream)
        assert response.status_code == 503
        assert list(response.iter_content(4)) == [b"erro", b"r pa", b"ge"]
        assert (response.content, response.text) == (b"error page", "error page")
    assert server.sent == 3


async def test_aiohttp_raise_on_failure_holds_a_readable_response(raw: Callable[..., RawServer]) -> None:
    """With raise_on_failure, the error's response is read with read() as well."""
    server = raw(*[complete(503, b"error page")] * 3)
    async with aiohttp_session(HttpOptions(raise_on_failure=True)) as session:
        with pytest.raises(FailedResponseError) as caught:
            await session.get(f"{server.url}/a")
    assert await caught.value.response.read() == b"error page"


async def test_aiohttp_failed_responses_give_their_connection_back(raw: Callable[..., RawServer]) -> None:
    """Many failing requests through a pool of one connection: none waits for a connection."""
    server = raw(*[complete(503, b"error page")] * 30)
    middleware = ResilientMiddleware(
        ResilienceConfig(name="downstream", retry_policy=FAST_RETRY), manager=ResilienceManager()
    )
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(middlewares=(middleware,), connector=connector) as session:
        for _ in range(10):
            async with session.get(f"{server.url}/a", timeout=aiohttp.ClientTimeout(total=30)) as response:
                assert await response.read() == b"error page"
    assert server.sent == 30


# ---------------------------------------------------------------------------- a large failed body

LARGE = bytes(range(256)) * (4 * 2**20 // 256)
"""A failed response's body of 4 MiB, far over the drain limit."""
READ_BOUND = 2**20
"""What the client may read of a failed response the retry drops: the drain limit, a chunk or two
of the client's past it (and aiohttp's buffer), never the body (four times as much)."""
TWICE = RetryPolicy(max_attempts=2, initial_delay=0.0, jitter="none")
"""The request sent at most twice, at once."""


def large_then(last: int) -> tuple[Answer, Answer]:
    """A 503 with :data:`LARGE`, then ``last``: a 503 with :data:`LARGE` again, or a 200 ``ok``."""
    return complete(503, LARGE), complete(503, LARGE) if last == 503 else complete(200, b"ok")


def whole(last: int) -> bytes:
    """The body the caller gets after :func:`large_then`: all of it."""
    return LARGE if last == 503 else b"ok"


class RecordingTransport(httpx.HTTPTransport):
    """An httpx transport that keeps each response it gives (``num_bytes_downloaded``: what was read of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[httpx.Response] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.responses.append(super().handle_request(request))
        return self.responses[-1]


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    """As :class:`RecordingTransport`, async."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.responses.append(await super().handle_async_request(request))
        return self.responses[-1]


class RecordingAdapter(ResilientAdapter):
    """The requests adapter keeping each urllib3 response it built (``tell()``: the bytes read off the wire)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(ResilienceConfig(name="downstream", retry_policy=TWICE), **options)
        self.raws: list[Any] = []

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        self.raws.append(resp)
        return super().build_response(req, resp)


@pytest.mark.parametrize("last", [200, 503])
def test_httpx_a_large_failed_body_the_retry_drops_is_read_up_to_the_drain_limit(
    raw: Callable[..., RawServer], last: int
) -> None:
    """A 4 MiB 503 the retry goes on after is read up to the drain limit and closed; the caller's answer is whole."""
    server = raw(*large_then(last))
    inner = RecordingTransport()
    config = ResilienceConfig(name="downstream", retry_policy=TWICE)
    with httpx.Client(transport=ResilientTransport(config, inner, manager=ResilienceManager())) as client:
        response = client.get(f"{server.url}/a")
    assert (response.status_code, response.content == whole(last), server.sent) == (last, True, 2)
    dropped = inner.responses[0]
    assert dropped.is_closed
    assert DRAIN_LIMIT < dropped.num_bytes_downloaded < READ_BOUND


@pytest.mark.parametrize("last", [200, 503])
async def test_httpx_async_a_large_failed_body_the_retry_drops_is_read_up_to_the_drain_limit(
    raw: Callable[..., RawServer], last: int
) -> None:
    """As with the sync transport: the dropped 503 is read up to the drain limit, the caller's answer whole."""
    server = raw(*large_then(last))
    inner = AsyncRecordingTransport()
    config = ResilienceConfig(name="downstream", retry_policy=TWICE)
    transport = AsyncResilientTransport(config, inner, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/a")
    assert (response.status_code, response.content == whole(last), server.sent) == (last, True, 2)
    dropped = inner.responses[0]
    assert dropped.is_closed
    assert DRAIN_LIMIT < dropped.num_bytes_downloaded < READ_BOUND


@pytest.mark.parametrize("last", [200, 503])
@pytest.mark.parametrize("stream", [False, True])
def test_requests_a_large_failed_body_the_retry_drops_is_read_up_to_the_drain_limit(
    raw: Callable[..., RawServer], last: int, stream: bool
) -> None:
    """requests: the dropped 503 is read off the wire up to the drain limit; the caller's answer is whole."""
    server = raw(*large_then(last))
    adapter = RecordingAdapter(manager=ResilienceManager())
    with requests.Session() as session:
        session.mount("http://", adapter)
        response = session.get(f"{server.url}/a", stream=stream)
        body = b"".join(response.iter_content(2**16)) if stream else response.content
    assert (response.status_code, body == whole(last), server.sent) == (last, True, 2)
    dropped = adapter.raws[0]
    assert dropped.closed
    assert DRAIN_LIMIT < dropped.tell() < READ_BOUND


@pytest.mark.parametrize("last", [200, 503])
async def test_aiohttp_a_large_failed_body_the_retry_drops_is_read_up_to_the_drain_limit(
    raw: Callable[..., RawServer], last: int
) -> None:
    """aiohttp: what came in of the dropped 503 stays under the bound; the caller's answer is whole."""
    server = raw(*large_then(last))
    streams: list[aiohttp.StreamReader] = []

    async def recording(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> Any:
        response = await handler(request)
        streams.append(response.content)  # the response's own stream, as aiohttp gave it
        return response

    middleware = ResilientMiddleware(
        ResilienceConfig(name="downstream", retry_policy=TWICE), manager=ResilienceManager()
    )
    async with aiohttp.ClientSession(middlewares=(middleware, recording)) as session:
        async with session.get(f"{server.url}/a") as response:
            assert (response.status, await response.read() == whole(last)) == (last, True)
    assert server.sent == 2
    assert DRAIN_LIMIT < streams[0].total_bytes < READ_BOUND


def test_httpx_raise_on_failure_holds_a_large_failed_body_whole(raw: Callable[..., RawServer]) -> None:
    """With raise_on_failure, the last 503's response is unread past the drain limit, and read() gives it whole."""
    server = raw(*large_then(503))
    config = ResilienceConfig(name="downstream", retry_policy=TWICE)
    transport = ResilientTransport(
        config, manager=ResilienceManager(), options=HttpOptions(raise_on_failure=True)
    )
    with httpx.Client(transport=transport) as client:
        with pytest.raises(FailedResponseError) as caught:
            client.get(f"{server.url}/a")
        response = caught.value.response
        try:
            assert response.read() == LARGE
        finally:
            response.close()


def test_requests_raise_on_failure_without_stream_reads_a_large_failed_body_and_frees_its_connection(
    raw: Callable[..., RawServer],
) -> None:
    """Not streaming, the raised 503's body is read whole (as requests reads a response it returns)
    and its connection goes back to the pool: the next request through a pool of one is sent at
    once (it waited out the policy's timeout for a connection the raised response held)."""
    server = raw(*large_then(503))
    config = ResilienceConfig(name="downstream", retry_policy=TWICE, timeout=5.0)
    adapter = ResilientAdapter(
        config,
        manager=ResilienceManager(),
        options=HttpOptions(raise_on_failure=True),
        pool_maxsize=1,
        pool_block=True,
    )
    with requests.Session() as session:
        session.mount("http://", adapter)
        with pytest.raises(FailedResponseError) as caught:
            session.get(f"{server.url}/a")
        # The raised response untouched: its connection is the pool's one, free again (else this
        # waits for it until the policy's timeout, an OperationTimeoutError).
        assert session.get(f"{server.url}/b").content == b"ok"
        assert caught.value.response.content == LARGE
    assert server.sent == 3


def rerun_after_failed_responses(strategy: RecoveryStrategy) -> tuple[ResilienceConfig, ResilienceManager]:
    """A policy without retry whose recovery sends the request once more after a failed response."""
    manager = ResilienceManager()
    hook = None if strategy is RecoveryStrategy.RETRY else (lambda: None)
    action = RecoveryAction(strategy, max_attempts=1, delay=0.0, restart_hook=hook)
    manager.recovery_system.register_recovery_rule(FailedResponseError, action)
    return ResilienceConfig(name="downstream", enable_recovery=True), manager


class ClosedBeforeTransport(httpx.AsyncHTTPTransport):
    """An async httpx transport noting, at each send, whether each response it gave before is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.responses: list[httpx.Response] = []
        self.closed_before: list[list[bool]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.closed_before.append([response.is_closed for response in self.responses])
        self.responses.append(await super().handle_async_request(request))
        return self.responses[-1]


@pytest.mark.parametrize("strategy", [RecoveryStrategy.RETRY, RecoveryStrategy.RESTART])
async def test_httpx_async_a_recovery_rerun_closes_a_large_failed_response_first(
    raw: Callable[..., RawServer], strategy: RecoveryStrategy
) -> None:
    """A recovery's re-run after a 503 over the drain limit sends again only once that 503 is closed.

    Left open, it would hold its connection through the re-run: a pool of one would wait for it
    until the pool's timeout.
    """
    server = raw(*large_then(200))
    config, manager = rerun_after_failed_responses(strategy)
    inner = ClosedBeforeTransport()
    transport = AsyncResilientTransport(config, inner, manager=manager)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{server.url}/a")
    assert (response.status_code, response.content, server.sent) == (200, b"ok", 2)
    assert inner.closed_before == [[], [True]]


@pytest.mark.parametrize("strategy", [RecoveryStrategy.RETRY, RecoveryStrategy.RESTART])
async def test_aiohttp_a_recovery_rerun_releases_a_large_failed_response_first(
    raw: Callable[..., RawServer], strategy: RecoveryStrategy
) -> None:
    """As with httpx: the 503 over the drain limit is released before the re-run sends again."""
    server = raw(*large_then(200))
    config, manager = rerun_after_failed_responses(strategy)
    responses: list[aiohttp.ClientResponse] = []
    closed_before: list[list[bool]] = []

    async def recording(request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType) -> Any:
        closed_before.append([response.closed for response in responses])
        responses.append(await handler(request))
        return responses[-1]

    middleware = ResilientMiddleware(config, manager=manager)
    async with aiohttp.ClientSession(middlewares=(middleware, recording)) as session:
        async with session.get(f"{server.url}/a") as response:
            assert (response.status, await response.read()) == (200, b"ok")
    assert server.sent == 2
    assert closed_before == [[], [True]]


@pytest.mark.parametrize("strategy", [RecoveryStrategy.RETRY, RecoveryStrategy.RESTART])
def test_httpx_a_recovery_rerun_closes_a_large_failed_response_first(
    raw: Callable[..., RawServer], strategy: RecoveryStrategy
) -> None:
    """The sync transport's re-run sends again once the 503 over the drain limit is closed, as the async one's."""
    server = raw(*large_then(200))
    config, manager = rerun_after_failed_responses(strategy)
    inner = RecordingTransport()
    closed_before: list[list[bool]] = []
    send = inner.handle_request

    def noting(request: httpx.Request) -> httpx.Response:
        closed_before.append([response.is_closed for response in inner.responses])
        return send(request)

    inner.handle_request = noting  # type: ignore[method-assign]
    with httpx.Client(transport=ResilientTransport(config, inner, manager=manager)) as client:
        response = client.get(f"{server.url}/a")
    assert (response.status_code, response.content, server.sent) == (200, b"ok", 2)
    assert closed_before == [[], [True]]


@pytest.mark.parametrize("status", [200, 503])
async def test_aiohttp_a_large_failed_body_reads_its_lines_as_the_session_allows(
    raw: Callable[..., RawServer], status: int
) -> None:
    """The 503 over the drain limit gives a line as long as the session's buffer allows, as a 200 does.

    Its ``content`` is read with the limits of the response's own stream (``read_bufsize``), not
    with smaller ones of its own (a ``LineTooLong`` where aiohttp reads the line).
    """
    line = b"x" * (300 * 1024) + b"\n"
    server = raw(complete(status, line), complete(status, line))
    middleware = ResilientMiddleware(
        ResilienceConfig(name="downstream", retry_policy=TWICE), manager=ResilienceManager()
    )
    async with aiohttp.ClientSession(middlewares=(middleware,), read_bufsize=2**18) as session:
        async with session.get(f"{server.url}/a") as response:
            assert (response.status, await response.content.readline()) == (status, line)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_aiohttp_a_failed_response_without_a_body_reads_empty(
    raw: Callable[..., RawServer], method: str
) -> None:
    """A 503 with no body (a HEAD's: aiohttp's empty stream) is returned, its body empty."""
    server = raw(complete(503, b""), complete(503, b""))
    middleware = ResilientMiddleware(
        ResilienceConfig(name="downstream", retry_policy=TWICE), manager=ResilienceManager()
    )
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with session.request(method, f"{server.url}/a") as response:
            assert (response.status, await response.read(), server.sent) == (503, b"", 2)


def test_requests_the_raw_of_a_large_failed_body_never_skips_what_was_read(
    raw: Callable[..., RawServer],
) -> None:
    """The ``raw`` of the 503 over the drain limit gives its body from the start, or refuses.

    ``readinto`` (what ``io.BufferedReader`` reads with) gives the bytes the attempt read first;
    a way of reading the wire it does not give (``readline``, ``data``...) is refused, never
    answered with the bytes past the first 64 KiB.
    """
    lines = b"".join(b"line %d\n" % number for number in range(40_000))  # far over the drain limit
    server = raw(complete(503, lines), complete(503, lines), complete(503, lines))
    with requests_session(retry_policy=RetryPolicy(max_attempts=1)) as session:
        response = session.get(f"{server.url}/a", stream=True)
        buffer = bytearray(7)
        assert (response.raw.readinto(buffer), bytes(buffer)) == (7, b"line 0\n")
        assert response.raw.read() == lines[7:]
        response = session.get(f"{server.url}/b", stream=True)
        reader = io.BufferedReader(response.raw)
        assert (reader.readline(), reader.read()) == (b"line 0\n", lines[7:])
        response = session.get(f"{server.url}/c", stream=True)
        for name in ("readline", "readlines", "read1", "data", "read_chunked"):
            with pytest.raises(AttributeError, match=name):
                getattr(response.raw, name)
        assert response.raw.read() == lines


# ---------------------------------------------------------------------------- a compressed failed body


def gzip_zeros(size: int, *, ended: bool = True) -> bytes:
    """A gzip stream of ``size`` zero bytes (about a thousandth of it); not ``ended``: flushed, all of it decodable."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    step = 2**20
    pieces = [compressor.compress(bytes(min(step, size - start))) for start in range(0, size, step)]
    return b"".join(pieces) + compressor.flush(zlib.Z_FINISH if ended else zlib.Z_SYNC_FLUSH)


def gzipped(status: int, size: int) -> Answer:
    """A complete answer whose gzip body decodes to ``size`` zero bytes."""
    body = gzip_zeros(size)

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)
        return True

    return answer


def gzipped_in_part(status: int, size: int, held: Callable[[], threading.Event]) -> Answer:
    """A gzip answer whose body's first ``size`` zero bytes come, the rest held until the test ends."""
    start = gzip_zeros(size, ended=False)

    def answer(connection: socket.socket) -> bool:
        head = (
            f"HTTP/1.1 {status} X\r\nContent-Encoding: gzip\r\nContent-Length: {len(start) + 2**20}\r\n\r\n"
        )
        connection.sendall(head.encode() + start)
        held().wait()
        return False

    return answer


CLIENTS = ["requests", "httpx", "httpx-async", "aiohttp"]


def get_any(client: str, url: str, **changes: Any) -> tuple[int, str]:
    """GET ``url`` with ``client`` under a policy sending it at most twice; its status and text."""
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": TWICE}
    fields.update(changes)
    config = ResilienceConfig(**fields)
    if client in {"requests", "httpx"}:
        return get_sync(client, url, **fields)
    if client == "httpx-async":

        async def by_httpx() -> tuple[int, str]:
            transport = AsyncResilientTransport(config, manager=ResilienceManager())
            async with httpx.AsyncClient(transport=transport) as http:
                answer = await http.get(url)
                return answer.status_code, answer.text

        return asyncio.run(by_httpx())

    async def by_aiohttp() -> tuple[int, str]:
        middleware = ResilientMiddleware(config, manager=ResilienceManager())
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session, session.get(url) as answer:
            return answer.status, await answer.text()

    return asyncio.run(by_aiohttp())


@pytest.mark.parametrize("client", CLIENTS)
def test_the_drain_limit_counts_the_decoded_body_for_every_client(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A gzip 503 whose first 16 KiB on the wire decode to 16 MiB, the rest held: read no further than the limit.

    The limit counts the body as the caller reads it (decoded), whatever the client: once more
    than it came, the attempt reads no more, and the retry's next send gets the 200. Counted on
    the wire (16 KiB, under the limit), the attempt would wait for the rest until the deadline.
    """
    server: RawServer = raw(gzipped_in_part(503, 16 * 2**20, lambda: server.held), complete(200, b"ok"))
    assert get_any(client, f"{server.url}/a", timeout=3.0) == (200, "ok")
    assert server.sent == 2


BOMB = 48 * 2**20
"""A failed body decoding to 48 MiB from about 47 KiB on the wire (gzip: within the drain limit)."""
MEMORY_BOUND = 8 * 2**20
"""What one request whose failed body is :data:`BOMB` may allocate at its peak: the drain limit and
a step of decoding past it, with room to spare; never the decoded body (six times as much)."""


@pytest.mark.parametrize("client", CLIENTS)
def test_a_compressed_failed_body_costs_its_attempt_a_bounded_amount_of_memory(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose gzip body of 47 KiB decodes to 48 MiB, then a 200: the attempt never decodes it whole."""
    server = raw(gzipped(503, BOMB), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < MEMORY_BOUND


def gzipped_twice(status: int, size: int) -> Answer:
    """A complete answer gzipped twice (``Content-Encoding: gzip, gzip``), decoding to ``size`` zero bytes.

    The inner gzip stream of zeros repeats itself, so the outer one shrinks it again: 256 MiB
    come in some 600 bytes, a step of which decodes to a whole stretch of the inner stream.
    """
    body = gzip.compress(gzip_zeros(size), 9)

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: gzip, gzip\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)
        return True

    return answer


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failed_body_compressed_twice_costs_its_attempt_a_bounded_amount_of_memory(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 gzipped twice, 600 bytes decoding to 256 MiB, then a 200: each layer is decoded a step at a time.

    A step of the outer layer gives up to 66 KB of the inner stream, which decoded at once gives
    up to a thousand times that: the drain must step through every layer, not the outer one only.
    """
    server = raw(gzipped_twice(503, 256 * 2**20), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("size", [2**10, 2**20])
def test_a_compressed_failed_body_handed_to_the_caller_decodes_whole(
    raw: Callable[..., RawServer], client: str, size: int
) -> None:
    """Two gzip 503s, within and over the drain limit decoded: the last reaches the caller, decoded whole.

    Counting what the drain decoded must leave the caller's decoding untouched (its own decoder,
    from the body's first byte).
    """
    server = raw(gzipped(503, size), gzipped(503, size))
    status, text = get_any(client, f"{server.url}/a")
    assert (status, len(text)) == (503, size)
    assert text == "\0" * size
    assert server.sent == 2


@pytest.mark.parametrize("client", ["requests", "httpx", "httpx-async"])  # aiohttp decodes one coding only
@pytest.mark.parametrize("size", [2**10, 2**20])
def test_a_failed_body_compressed_twice_handed_to_the_caller_decodes_whole(
    raw: Callable[..., RawServer], client: str, size: int
) -> None:
    """Two 503s gzipped twice, within and over the drain limit decoded: the last decodes whole for the caller.

    Stepping through the layers to count must leave the caller's decoding untouched.
    """
    server = raw(gzipped_twice(503, size), gzipped_twice(503, size))
    status, text = get_any(client, f"{server.url}/a")
    assert (status, text) == (503, "\0" * size)
    assert server.sent == 2


def brotli_zeros(size: int) -> bytes:
    """A brotli stream of ``size`` zero bytes: 64 MiB in some 50 bytes (skipped without ``brotli`` 1.2+)."""
    brotli = pytest.importorskip("brotli", minversion="1.2")
    compressor = brotli.Compressor(quality=5, lgwin=24)
    step = min(size, 2**22)
    return b"".join([compressor.process(bytes(step)) for _ in range(size // step)] + [compressor.finish()])


def brotli_answer(status: int, size: int) -> Answer:
    """A complete answer whose brotli body (``Content-Encoding: br``) decodes to ``size`` zero bytes."""
    body = brotli_zeros(size)

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: br\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)
        return True

    return answer


@pytest.mark.parametrize("client", CLIENTS)
def test_a_brotli_failed_body_costs_its_attempt_a_bounded_amount_of_memory(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose brotli body of 52 bytes decodes to 64 MiB, then a 200: decoded a bounded piece at a time.

    Unlike gzip's, a step of brotli is not bounded by its input: its first 64 bytes give the
    whole 64 MiB at once to a decoder that gives all it can (httpx's).
    """
    server = raw(brotli_answer(503, 64 * 2**20), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("size", [2**10, 2**20])
def test_a_brotli_failed_body_handed_to_the_caller_decodes_whole(
    raw: Callable[..., RawServer], client: str, size: int
) -> None:
    """Two brotli 503s, within and over the drain limit decoded: the last decodes whole for the caller."""
    server = raw(brotli_answer(503, size), brotli_answer(503, size))
    status, text = get_any(client, f"{server.url}/a")
    assert (status, text) == (503, "\0" * size)
    assert server.sent == 2


@pytest.fixture
def brotlicffi(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx decodes br with ``brotlicffi``, as where ``brotli`` is not installed (skipped without 1.2+)."""
    module = pytest.importorskip("brotlicffi", minversion="1.2")
    monkeypatch.setattr(httpx._decoders, "brotli", module)


@pytest.mark.usefixtures("brotlicffi")
@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
def test_a_brotli_failed_body_costs_its_attempt_a_bounded_amount_of_memory_with_brotlicffi(
    raw: Callable[..., RawServer], client: str
) -> None:
    """The brotli 503 of 52 bytes decoding to 64 MiB, decoded by httpx with ``brotlicffi``: a bounded piece at a time too."""
    server = raw(brotli_answer(503, 64 * 2**20), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < MEMORY_BOUND


@pytest.mark.usefixtures("brotlicffi")
@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
@pytest.mark.parametrize("size", [2**10, 2**20])
def test_a_brotli_failed_body_handed_to_the_caller_decodes_whole_with_brotlicffi(
    raw: Callable[..., RawServer], client: str, size: int
) -> None:
    """Two brotli 503s decoded by httpx with ``brotlicffi``: the last decodes whole for the caller."""
    server = raw(brotli_answer(503, size), brotli_answer(503, size))
    status, text = get_any(client, f"{server.url}/a")
    assert (status, text) == (503, "\0" * size)
    assert server.sent == 2


def zstd_zeros(size: int) -> bytes:
    """A zstd frame of ``size`` zero bytes (a multiple of 128 KiB) in blocks of 4 bytes, 128 KiB each.

    Each block is zstd's largest (128 KiB) of one byte repeated (an RLE block): 64 MiB come in
    2 KiB, 16 blocks in a step of 64 bytes (skipped without ``zstandard``, which httpx decodes with).
    """
    pytest.importorskip("zstandard")
    blocks = size // 2**17
    header = [(2**17 << 3 | 1 << 1 | int(last)).to_bytes(3, "little") for last in (False, True)]
    window = bytes([(17 - 10) << 3])  # a window of 128 KiB: blocks of 128 KiB
    return b"\x28\xb5\x2f\xfd\x00" + window + (header[0] + b"\0") * (blocks - 1) + header[1] + b"\0"


def zstd_client(client: str) -> str:
    """``client``, skipped where it does not decode zstd (requests and aiohttp: without ``backports.zstd``)."""
    if client in {"requests", "aiohttp"}:
        pytest.importorskip("compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd")
    return client


def zstd_answer(status: int, size: int) -> Answer:
    """A complete answer whose zstd body (``Content-Encoding: zstd``) decodes to ``size`` zero bytes."""
    body = zstd_zeros(size)

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: zstd\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)
        return True

    return answer


@pytest.mark.parametrize("client", CLIENTS)
def test_a_zstd_failed_body_costs_its_attempt_a_bounded_amount_of_memory(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose zstd body of 2 KiB decodes to 64 MiB, then a 200: decoded a bounded piece at a time."""
    client = zstd_client(client)
    server = raw(zstd_answer(503, 64 * 2**20), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
def test_httpx_decodes_a_zstd_failed_body_a_bounded_piece_at_a_time(
    raw: Callable[..., RawServer], client: str
) -> None:
    """The zstd 503 of 2 KiB decoding to 64 MiB: httpx's drain decodes a block past the limit, not a step.

    A step of 64 bytes holds 16 of zstd's largest blocks (128 KiB of a byte repeated, 4 bytes
    each): decoded at once, the attempt held 2 MiB, and a copy of it, to count 64 KiB.
    """
    server = raw(zstd_answer(503, 64 * 2**20), complete(200, b"ok"))
    tracemalloc.start()
    try:
        assert get_any(client, f"{server.url}/a") == (200, "ok")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.sent == 2
    assert peak < 2**20  # the drain limit and a block of 128 KiB past it, with room (a step: 2 MiB, twice)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("size", [2**17, 2**20])
def test_a_zstd_failed_body_handed_to_the_caller_decodes_whole(
    raw: Callable[..., RawServer], client: str, size: int
) -> None:
    """Two zstd 503s, within and over the drain limit decoded: the last decodes whole for the caller."""
    server = raw(zstd_answer(503, size), zstd_answer(503, size))
    status, text = get_any(zstd_client(client), f"{server.url}/a")
    assert (status, text) == (503, "\0" * size)
    assert server.sent == 2


def zstd_frames(status: int, first: bytes, second: bytes) -> Answer:
    """A complete answer whose zstd body is two frames: ``first`` (a raw block) and ``second``.

    The first frame is :data:`~otel_resilience.integrations.sending._STEP` long with ``first``
    of 55 bytes: it ends where a step of 64 bytes does.
    """
    zstandard = pytest.importorskip("zstandard")
    block = (len(first) << 3 | 1).to_bytes(3, "little")  # a raw block, the frame's last
    body = b"\x28\xb5\x2f\xfd\x00\x38" + block + first + zstandard.ZstdCompressor().compress(second)

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 {status} X\r\nContent-Encoding: zstd\r\nContent-Length: {len(body)}\r\n\r\n"
        connection.sendall(head.encode() + body)
        return True

    return answer


@pytest.mark.parametrize("client", CLIENTS)
def test_a_zstd_failed_body_of_two_frames_reaches_the_caller_decoded(
    raw: Callable[..., RawServer], client: str
) -> None:
    """Two 503s whose zstd body is two frames, the first ending where a step of the drain does: the
    last reaches the caller, decoded whole, as the client decodes it.

    A body may hold many zstd frames, one after the other; the drain's decoding of it, a few
    bytes at a time, must go on with the next frame wherever the last one ended.
    """
    first, second = b"x" * 55, b"y" * 1000
    server = raw(zstd_frames(503, first, second), zstd_frames(503, first, second))
    status, text = get_any(zstd_client(client), f"{server.url}/a")
    assert (status, text) == (503, "x" * 55 + "y" * 1000)
    assert server.sent == 2


def cut_short(coding: str, body: bytes) -> Answer:
    """A complete 503 whose ``coding`` body (``body``, all but its last byte) ends inside its stream."""

    def answer(connection: socket.socket) -> bool:
        head = f"HTTP/1.1 503 X\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body) - 1}\r\n\r\n"
        connection.sendall(head.encode() + body[:-1])
        return True

    return answer


@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
def test_httpx_retries_a_get_whose_zstd_failed_body_is_cut_short(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose zstd frame ends before its last block: a body httpx cannot decode, sent again."""
    server = raw(cut_short("zstd", zstd_zeros(2**17)))
    assert get_any(client, f"{server.url}/a") == (200, "ok")
    assert server.sent == 2


@pytest.mark.usefixtures("brotlicffi")
@pytest.mark.parametrize("client", ["httpx", "httpx-async"])
def test_httpx_retries_a_get_whose_brotli_failed_body_is_cut_short_with_brotlicffi(
    raw: Callable[..., RawServer], client: str
) -> None:
    """A 503 whose brotli stream is cut short: ``brotlicffi``'s decoding in httpx refuses it, so it is sent again."""
    server = raw(cut_short("br", brotli_zeros(2**10)))
    assert get_any(client, f"{server.url}/a") == (200, "ok")
    assert server.sent == 2


# ---------------------------------------------------------------------------- a success's body


def stalled_success(server: Callable[[], RawServer]) -> Answer:
    """A 200 announcing 100 bytes, 2 of them at once, the rest never (until the test ends)."""

    def answer(connection: socket.socket) -> bool:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok")
        server().held.wait(10)
        return False

    return answer


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_success_body_read_after_the_policy_is_bounded_per_read_by_what_was_left(
    raw: Callable[..., RawServer], client: str
) -> None:
    """The policy ends with the response's head; each read of its body after it waits what was left at most.

    What the README's "Deadline" promises for a success body: outside the policy (no policy
    timeout), each read capped by the deadline left when the request was sent (the client's
    read timeout), not the whole body.
    """
    server: RawServer = raw(stalled_success(lambda: server))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            get_sync(client, f"{server.url}/a", retry_policy=None, timeout=0.2)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(10)
    server.held.set()
    assert not thread.is_alive(), "a read of the success body waited past what was left of the deadline"
    [error] = outcome
    assert not isinstance(error, OperationTimeoutError)  # the client's own: the policy had returned
    assert isinstance(error, (httpx.ReadTimeout, requests.ConnectionError))


class CountingServer(RawServer):
    """A :class:`RawServer` counting the connections it accepted (``connections``)."""

    connections = 0

    def _serve(self, connection: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        super()._serve(connection)


@pytest.mark.parametrize(("size", "connections"), [(DRAIN_LIMIT, 1), (4 * DRAIN_LIMIT, 2)])
@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_a_failed_body_of_the_drain_limit_is_read_whole_and_its_connection_reused(
    client: str, size: int, connections: int
) -> None:
    """A 503 body of exactly 64 KiB ends within the limit: read whole, its connection sent on again;
    a longer one is read no further and closed once the retry goes on (the retry opens a new connection)."""
    server = CountingServer(complete(503, b"x" * size))
    try:
        config = ResilienceConfig(name="downstream", retry_policy=TWICE)
        if client == "httpx":
            transport = ResilientTransport(config, manager=ResilienceManager())
            with httpx.Client(transport=transport) as session:
                response = session.get(f"{server.url}/a")
            status = response.status_code
        else:
            with requests.Session() as requests_client:
                requests_client.mount("http://", ResilientAdapter(config, manager=ResilienceManager()))
                status = requests_client.get(f"{server.url}/a").status_code
        assert (status, server.sent, server.connections) == (200, 2, connections)
    finally:
        server.close()


@pytest.mark.parametrize(("size", "connections"), [(DRAIN_LIMIT, 1), (4 * DRAIN_LIMIT, 2)])
async def test_aiohttp_a_failed_body_of_the_drain_limit_is_read_whole_and_its_connection_reused(
    size: int, connections: int
) -> None:
    """As with httpx and requests: 64 KiB is read whole and its connection sent on again; a longer one is not."""
    server = CountingServer(complete(503, b"x" * size))
    try:
        middleware = ResilientMiddleware(
            ResilienceConfig(name="downstream", retry_policy=TWICE), manager=ResilienceManager()
        )
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            async with session.get(f"{server.url}/a", timeout=aiohttp.ClientTimeout(total=30)) as response:
                assert (response.status, await response.read()) == (200, b"ok")
        assert (server.sent, server.connections) == (2, connections)
    finally:
        server.close()
