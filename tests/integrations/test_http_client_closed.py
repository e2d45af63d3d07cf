"""A client closed while one of its requests is under way (its retry backing off, queued, waiting for its answer).

The client would never send the request once closed (httpx refuses a closed client's requests,
aiohttp a closed session's): neither does the policy. The request ends with the client's own
error, sent no more, and no connection is opened that the closed client would never close
(httpx's pool opens one again for any send: it would be left open for good). A new request
opens an httpx transport again, as httpx's own transports allow (one shared by two clients).
A request waiting for its answer at the close ends with the error the close gave it, as the
client raises it, once: the caller's close is not the host's failure.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from support import BackoffCheck, ScriptedHTTPServer
from urllib3.exceptions import ClosedPoolError

from otel_resilience import (
    BulkheadConfig,
    CircuitBreakerConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations import httpx as ours
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import HttpOptions, RequestNotSentError
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

BACKOFF = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=30.0, jitter="none")
"""Retries after a backoff the clock runs a check in (the client closed there)."""


def test_httpx_a_request_is_not_sent_again_once_its_client_closed(server: ScriptedHTTPServer) -> None:
    """A request whose client closed during its backoff is not sent again; a new client opens the transport."""
    server.script("/a", (503, {}), (503, {}))
    inner = httpx.HTTPTransport()
    client: httpx.Client

    def close() -> None:
        client.close()

    clock = BackoffCheck(close)
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF)
    transport = ResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    client = httpx.Client(transport=transport)
    with pytest.raises(RuntimeError, match="client has been closed"):
        client.get(f"{server.url}/a")
    assert server.count("/a") == 1  # the retry sent nothing through the closed client
    assert inner._pool.connections == []  # no connection left open by a send after the close
    with httpx.Client(transport=transport) as other:  # a new request opens the transport again
        assert other.get(f"{server.url}/b").status_code == 200


async def test_httpx_async_a_request_is_not_sent_again_once_its_client_closed(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport: closed during the backoff, the request is not sent again."""
    server.script("/a", (503, {}), (503, {}))
    inner = httpx.AsyncHTTPTransport()
    client: httpx.AsyncClient

    async def close() -> None:
        await client.aclose()

    clock = BackoffCheck(close)
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF)
    transport = AsyncResilientTransport(config, transport=inner, manager=ResilienceManager(clock=clock))
    client = httpx.AsyncClient(transport=transport)
    with pytest.raises(RuntimeError, match="client has been closed"):
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


ONE_SLOT = ResilienceConfig(name="queued", bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=1))
"""One request sent at a time, one more waiting for it in the bulkhead's queue."""


def _waiting(manager: ResilienceManager) -> int:
    return manager.get_resilience_statistics()["named_policies"]["queued"]["bulkhead"]["waiting"]


def _closed_behind_a_held_request(
    send: Callable[[str], object],
    entered: threading.Event,
    manager: ResilienceManager,
    close: Callable[[], None],
    release: threading.Event,
) -> dict[str, object]:
    """Send ``/held``, then ``/queued`` behind it in the bulkhead; ``close`` the client; what each got.

    ``/held`` is sent and held (``entered``) until ``release``; the close comes while ``/queued``
    waits in the queue. Returns each path's status code, or the error it raised.
    """
    outcomes: dict[str, object] = {}

    def get(path: str) -> None:
        try:
            outcomes[path] = send(path)
        except Exception as error:
            outcomes[path] = error

    first = threading.Thread(target=get, args=("/held",))
    first.start()
    assert entered.wait(10.0)
    second = threading.Thread(target=get, args=("/queued",))
    second.start()
    until = time.monotonic() + 10.0
    while _waiting(manager) == 0 and time.monotonic() < until:
        time.sleep(0.005)
    assert _waiting(manager) == 1
    close()
    release.set()
    first.join(10.0)
    second.join(10.0)
    return outcomes


class _Held(httpx.BaseTransport):
    """The real transport, but ``/held`` waits for ``release`` and is answered without the network."""

    def __init__(self, real: httpx.HTTPTransport) -> None:
        self.real = real
        self.entered, self.release = threading.Event(), threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/held":
            self.entered.set()
            assert self.release.wait(10.0)
            return httpx.Response(200)
        return self.real.handle_request(request)

    def close(self) -> None:
        self.real.close()


class _AsyncHeld(httpx.AsyncBaseTransport):
    """The async :class:`_Held`."""

    def __init__(self, real: httpx.AsyncHTTPTransport) -> None:
        self.real = real
        self.entered, self.release = asyncio.Event(), asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/held":
            self.entered.set()
            await self.release.wait()
            return httpx.Response(200)
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


def test_httpx_a_request_queued_when_its_client_closed_is_never_sent(server: ScriptedHTTPServer) -> None:
    """A request waiting in the bulkhead when its client closes is refused at its first send, no socket opened."""
    real = httpx.HTTPTransport()
    held = _Held(real)
    manager = ResilienceManager()
    transport = ResilientTransport(ONE_SLOT, held, manager=manager, options=HttpOptions(per_host=False))
    client = httpx.Client(transport=transport)
    outcomes = _closed_behind_a_held_request(
        lambda path: client.get(f"{server.url}{path}").status_code,
        held.entered,
        manager,
        client.close,
        held.release,
    )
    assert outcomes["/held"] == 200  # sent before the close
    assert isinstance(outcomes["/queued"], RuntimeError)
    assert "client has been closed" in str(outcomes["/queued"])
    assert server.count("/queued") == 0
    assert real._pool.connections == []  # no connection opened in the closed pool


async def test_httpx_async_a_request_queued_when_its_client_closed_is_never_sent(
    server: ScriptedHTTPServer,
) -> None:
    """The async transport refuses a request its bulkhead queued before the close, as the sync one does."""
    real = httpx.AsyncHTTPTransport()
    held = _AsyncHeld(real)
    manager = ResilienceManager()
    transport = AsyncResilientTransport(ONE_SLOT, held, manager=manager, options=HttpOptions(per_host=False))
    client = httpx.AsyncClient(transport=transport)
    first = asyncio.ensure_future(client.get(f"{server.url}/held"))
    await asyncio.wait_for(held.entered.wait(), 10.0)
    second = asyncio.ensure_future(client.get(f"{server.url}/queued"))
    for _ in range(1000):
        if _waiting(manager):
            break
        await asyncio.sleep(0)
    assert _waiting(manager) == 1
    await client.aclose()
    held.release.set()
    assert (await asyncio.wait_for(first, 10.0)).status_code == 200
    with pytest.raises(RuntimeError, match="client has been closed"):
        await asyncio.wait_for(second, 10.0)
    assert server.count("/queued") == 0
    assert real._pool.connections == []
    async with httpx.AsyncClient(transport=transport) as other:  # a new request opens it again
        assert (await other.get(f"{server.url}/b")).status_code == 200


async def test_aiohttp_a_request_queued_when_its_session_closed_is_never_sent(
    server: ScriptedHTTPServer,
) -> None:
    """A request waiting in the bulkhead when its session closes ends with aiohttp's own error, unsent."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if request.url.path == "/held":  # sent, then held until the session closed
            response = await handler(request)
            entered.set()
            await release.wait()
            return response
        return await handler(request)

    manager = ResilienceManager()
    middleware = ResilientMiddleware(ONE_SLOT, manager=manager, options=HttpOptions(per_host=False))
    session = aiohttp.ClientSession(middlewares=(middleware, hold))
    first = asyncio.ensure_future(session.get(f"{server.url}/held"))
    await asyncio.wait_for(entered.wait(), 10.0)
    second = asyncio.ensure_future(session.get(f"{server.url}/queued"))
    for _ in range(1000):
        if _waiting(manager):
            break
        await asyncio.sleep(0)
    assert _waiting(manager) == 1
    await session.close()
    release.set()
    (await asyncio.wait_for(first, 10.0)).release()
    with pytest.raises(RuntimeError, match="Session is closed"):
        await asyncio.wait_for(second, 10.0)
    assert server.count("/queued") == 0


def test_httpx_two_closes_at_once_leave_the_transport_open_for_new_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two clients sharing one transport close it at once: a new request is sent, not refused.

    The second close, started while the first is between setting its guard and opening the new
    link, must never take that guard for the transport its own new link sends through.
    """
    transport = ResilientTransport(
        ResilienceConfig(name="closed-twice-at-once"),
        httpx.MockTransport(lambda _request: httpx.Response(200, content=b"ok")),
        manager=ResilienceManager(),
    )
    opened, guarded = ResilientTransport._open, ours._Closed.__init__
    holding, second_guarding, first_done = threading.Event(), threading.Event(), threading.Event()

    def held_open(self: ResilientTransport, wrapped: object) -> None:
        if threading.current_thread().name != "first-close":
            opened(self, wrapped)
            return
        holding.set()
        second_guarding.wait(0.5)  # reached only without the closes taking turns
        opened(self, wrapped)
        first_done.set()

    def slow_guard(self: object, wrapped: object) -> None:
        if threading.current_thread().name == "second-close":
            second_guarding.set()
            first_done.wait(5.0)
        guarded(self, wrapped)

    monkeypatch.setattr(ResilientTransport, "_open", held_open)
    monkeypatch.setattr(ours._Closed, "__init__", slow_guard)
    first = threading.Thread(target=transport.close, name="first-close")
    first.start()
    assert holding.wait(5.0)
    second = threading.Thread(target=transport.close, name="second-close")
    second.start()
    first.join(5.0)
    second.join(5.0)
    assert not first.is_alive()
    assert not second.is_alive()
    with httpx.Client(transport=transport) as client:
        assert client.get("http://example.test/").status_code == 200


def _closed_pool(error: BaseException) -> bool:
    """Whether ``error`` is requests' own error for a request to a closed pool (urllib3's ``ClosedPoolError``)."""
    return isinstance(error, requests.ConnectionError) and isinstance(error.args[0], ClosedPoolError)


def test_requests_a_request_is_not_sent_again_once_its_session_closed(server: ScriptedHTTPServer) -> None:
    """A request whose session closed during its backoff is not sent again, nor retried; a new one is sent.

    requests sends a new request after ``close()`` through new pools; one under way at the close
    gets requests' own error for a closed pool, once: the retry does not try the closed adapter
    again (its other attempts, each refused, would only wait out their backoffs).
    """
    server.script("/a", (503, {}), (503, {}))
    session = requests.Session()
    clock = BackoffCheck(session.close)
    retry = RetryPolicy(max_attempts=4, initial_delay=30.0, max_delay=30.0, jitter="none")
    config = ResilienceConfig(name="closing", retry_policy=retry)
    adapter = ResilientAdapter(config, manager=ResilienceManager(clock=clock))
    session.mount("http://", adapter)
    with pytest.raises(requests.ConnectionError) as caught:
        session.get(f"{server.url}/a")
    assert _closed_pool(caught.value)
    port = server.url.rsplit(":", 1)[1]  # urllib3's words for its closed pool, naming it (was `None: ...`)
    assert str(caught.value) == f"HTTPConnectionPool(host='127.0.0.1', port={port}): Pool is closed."
    assert server.count("/a") == 1  # the retry sent nothing through the closed adapter
    assert len(clock.outcomes) == 1  # one backoff (the one the close ran in): no retry after the refusal
    assert len(adapter.poolmanager.pools) == 0  # no pool made again by a send after the close
    assert session.get(f"{server.url}/b").status_code == 200  # a new request is sent, as requests does
    session.close()


def test_requests_a_request_queued_when_its_session_closed_is_never_sent(server: ScriptedHTTPServer) -> None:
    """A request waiting in the bulkhead when its session closes is refused at its first send."""
    entered, release = threading.Event(), threading.Event()

    class Holding(ResilientAdapter):
        def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
            if req.url is not None and req.url.endswith("/held"):  # sent, then held until the close
                entered.set()
                assert release.wait(10.0)
            return super().build_response(req, resp)

    manager = ResilienceManager()
    session = requests.Session()
    session.mount("http://", Holding(ONE_SLOT, manager=manager, options=HttpOptions(per_host=False)))
    outcomes = _closed_behind_a_held_request(
        lambda path: session.get(f"{server.url}{path}").status_code,
        entered,
        manager,
        session.close,
        release,
    )
    assert outcomes["/held"] == 200  # sent before the close
    queued = outcomes["/queued"]
    assert isinstance(queued, BaseException)
    assert _closed_pool(queued)
    assert server.count("/queued") == 0


def test_requests_a_request_waiting_for_a_connection_when_its_session_closed_is_never_sent(
    server: ScriptedHTTPServer,
) -> None:
    """With ``pool_block=True``, a request waiting for the pool's one connection at the close is refused at once.

    It neither waits for the connection the other request holds (with no deadline: for good) nor
    is sent through the closed adapter once that connection comes back; the breaker counts nothing.
    """
    entered, release = threading.Event(), threading.Event()

    class Holding(ResilientAdapter):
        def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
            if req.url is not None and req.url.endswith("/held"):  # sent, its connection held
                entered.set()
                assert release.wait(10.0)
            return super().build_response(req, resp)

    manager = ResilienceManager()
    config = ResilienceConfig(name="pooled", circuit_breaker=CircuitBreakerConfig(failure_threshold=1))
    adapter = Holding(config, manager=manager, pool_maxsize=1, pool_block=True)
    session = requests.Session()
    session.mount("http://", adapter)
    outcomes: dict[str, object] = {}

    def get(path: str) -> None:
        try:
            outcomes[path] = session.get(f"{server.url}{path}").status_code
        except Exception as error:
            outcomes[path] = error

    first = threading.Thread(target=get, args=("/held",))
    second = threading.Thread(target=get, args=("/waiting",))
    try:
        first.start()
        assert entered.wait(10.0)
        pools = adapter.poolmanager.pools
        (key,) = pools.keys()  # the host's one pool
        queue = pools[key].pool
        second.start()
        until = time.monotonic() + 10.0
        while not queue.not_empty._waiters and time.monotonic() < until:  # type: ignore[attr-defined]
            time.sleep(0.005)
        assert queue.not_empty._waiters  # type: ignore[attr-defined] # waiting for the held connection
        session.close()
        second.join(10.0)
        assert not second.is_alive()  # refused at the close, the held connection not given back yet
    finally:
        release.set()
        first.join(10.0)
        second.join(10.0)
    assert outcomes["/held"] == 200
    waiting = outcomes["/waiting"]
    assert isinstance(waiting, RequestNotSentError)
    assert _closed_pool(waiting)
    assert server.count("/waiting") == 0
    assert manager.policy("pooled").get_stats()["circuit_breaker"]["total_failures"] == 0


async def test_aiohttp_a_request_whose_connector_closed_during_its_backoff_is_not_sent_again(
    server: ScriptedHTTPServer,
) -> None:
    """A connector closed under its session (its owner closed it) refuses the retry: refused once, not the host's.

    aiohttp's own ``ClientConnectionError("Connector is closed.")`` reaches the caller, once: the
    retry does not try again (each would be refused, after its backoff) and the breaker counts the
    503 only.
    """
    server.script("/a", (503, {}), (503, {}))
    connector = aiohttp.TCPConnector()

    async def close() -> None:
        await connector.close()

    clock = BackoffCheck(close)
    retry = RetryPolicy(max_attempts=4, initial_delay=30.0, max_delay=30.0, jitter="none")
    breaker = CircuitBreakerConfig(failure_threshold=3)
    manager = ResilienceManager(clock=clock)
    config = ResilienceConfig(name="connector", retry_policy=retry, circuit_breaker=breaker)
    session = aiohttp.ClientSession(
        middlewares=(ResilientMiddleware(config, manager=manager),),
        connector=connector,
        connector_owner=False,
    )
    try:
        with pytest.raises(aiohttp.ClientConnectionError, match="Connector is closed") as caught:
            await asyncio.wait_for(session.get(f"{server.url}/a"), 10.0)
    finally:
        await session.close()
    assert isinstance(caught.value, RequestNotSentError)
    assert server.count("/a") == 1
    assert len(clock.outcomes) == 1  # one backoff (the one the close ran in): no retry after the refusal
    assert manager.policy("connector").get_stats()["circuit_breaker"]["total_failures"] == 1  # the 503


SLOW = (200, {}, 2.0)
"""An answer the server holds back long enough for the client to close while its request waits for it."""


def _nothing() -> None:
    """A backoff that only records that the retry backed off (:class:`BackoffCheck`)."""


async def _anothing() -> None:
    """The async :func:`_nothing`."""


def _sent(server: ScriptedHTTPServer, path: str) -> None:
    """Wait until the server has ``path``'s request (it then holds its answer back)."""
    until = time.monotonic() + 10.0
    while server.count(path) == 0 and time.monotonic() < until:
        time.sleep(0.005)
    assert server.count(path) == 1


async def _asent(server: ScriptedHTTPServer, path: str) -> None:
    """The async :func:`_sent`."""
    for _ in range(2000):
        if server.count(path):
            break
        await asyncio.sleep(0.005)
    assert server.count(path) == 1


ANSWERED = ResilienceConfig(
    name="answered",
    retry_policy=BACKOFF,
    circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
)
"""A request retried after a transport failure, to a breaker that opens at the first failure."""


def _breaker(manager: ResilienceManager) -> dict[str, Any]:
    stats: dict[str, Any] = manager.policy("answered").get_stats()["circuit_breaker"]
    return stats


def test_httpx_a_request_waiting_for_its_answer_when_its_client_closed_ends_with_httpx_error_once(
    server: ScriptedHTTPServer,
) -> None:
    """The close cuts the read: httpx's own error, not the host's failure, not retried (it was a ReadError, counted, retried)."""
    server.script("/slow", SLOW, SLOW)
    clock = BackoffCheck(_nothing)
    manager = ResilienceManager(clock=clock)
    client = httpx.Client(transport=ResilientTransport(ANSWERED, manager=manager))
    outcome: list[BaseException] = []

    def get() -> None:
        try:
            client.get(f"{server.url}/slow")
        except Exception as error:
            outcome.append(error)

    sending = threading.Thread(target=get)
    sending.start()
    _sent(server, "/slow")
    client.close()
    sending.join(10.0)
    assert not sending.is_alive()
    (error,) = outcome
    assert isinstance(error, httpx.TransportError)  # httpx's own, as httpx raises it without the policy
    assert not isinstance(error, RequestNotSentError)  # it was sent
    assert clock.outcomes == []  # no backoff: not retried
    assert server.count("/slow") == 1
    assert _breaker(manager)["total_failures"] == 0
    assert _breaker(manager)["times_opened"] == 0


async def test_httpx_async_a_request_waiting_for_its_answer_when_its_client_closed_ends_with_httpx_error_once(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport: the close's ``ReadError`` is not the host's, and not retried."""
    server.script("/slow", SLOW, SLOW)
    clock = BackoffCheck(_anothing)
    manager = ResilienceManager(clock=clock)
    client = httpx.AsyncClient(transport=AsyncResilientTransport(ANSWERED, manager=manager))
    sending = asyncio.ensure_future(client.get(f"{server.url}/slow"))
    await _asent(server, "/slow")
    await client.aclose()
    with pytest.raises(httpx.TransportError) as caught:
        await asyncio.wait_for(sending, 10.0)
    assert not isinstance(caught.value, RequestNotSentError)
    assert clock.outcomes == []
    assert server.count("/slow") == 1
    assert _breaker(manager)["total_failures"] == 0


async def _closed_while_waiting(
    server: ScriptedHTTPServer, method: str, middlewares: tuple[Any, ...]
) -> BaseException:
    """What a request to ``/slow`` raises when its session closes while it waits for the answer."""
    before = server.count("/slow")
    session = aiohttp.ClientSession(middlewares=middlewares)
    sending = asyncio.ensure_future(session.request(method, f"{server.url}/slow"))
    for _ in range(2000):
        if server.count("/slow") > before:
            break
        await asyncio.sleep(0.005)
    assert server.count("/slow") == before + 1
    await session.close()
    with pytest.raises(aiohttp.ClientConnectionError) as caught:
        await asyncio.wait_for(sending, 10.0)
    return caught.value


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_aiohttp_a_request_waiting_for_its_answer_when_its_session_closed_ends_with_aiohttp_error_once(
    server: ScriptedHTTPServer, method: str
) -> None:
    """The close cuts the read: the caller gets aiohttp's own error, not counted by the breaker, not retried.

    aiohttp raises ``ServerDisconnectedError`` (a GET, which aiohttp sends again itself through
    its closed connector: ``Connector is closed.``). It was counted by the breaker (which
    opened: the caller then got ``CircuitOpenError``), and the retry sent the GET again.
    """
    server.script("/slow", SLOW, SLOW, SLOW)
    own = await _closed_while_waiting(server, method, ())
    clock = BackoffCheck(_anothing)
    manager = ResilienceManager(clock=clock)
    error = await _closed_while_waiting(server, method, (ResilientMiddleware(ANSWERED, manager=manager),))
    assert isinstance(error, type(own))
    assert str(error) == str(own)
    assert clock.outcomes == []  # no backoff: not retried
    assert server.count("/slow") == 2  # once each
    assert _breaker(manager)["total_failures"] == 0


def test_requests_a_request_waiting_for_its_answer_when_its_session_closed_gets_it(
    server: ScriptedHTTPServer,
) -> None:
    """requests' close leaves a connection in use open: the request under way gets its answer, counted once."""
    server.script("/slow", (200, {}, 0.5))
    manager = ResilienceManager(clock=BackoffCheck(_nothing))
    session = requests.Session()
    session.mount("http://", ResilientAdapter(ANSWERED, manager=manager))
    outcome: list[object] = []
    sending = threading.Thread(target=lambda: outcome.append(session.get(f"{server.url}/slow").status_code))
    sending.start()
    _sent(server, "/slow")
    session.close()
    sending.join(10.0)
    assert outcome == [200]
    assert server.count("/slow") == 1
    assert _breaker(manager)["total_successes"] == 1


async def test_aiohttp_a_request_waiting_for_a_connection_slot_when_its_session_closed_is_refused(
    server: ScriptedHTTPServer,
) -> None:
    """aiohttp cancels the slot's wait at the close, the task itself not cancelled: the connector's closed error.

    It was a ``CancelledError`` out of a task nobody cancelled, counted as the caller's
    cancellation (execution outcome and breaker). On 3.10, where a task counts no cancellation
    requests, it stays that ``CancelledError`` (README).
    """
    server.script("/held", SLOW)
    manager = ResilienceManager(clock=BackoffCheck(_anothing))
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1),
        middlewares=(ResilientMiddleware(ANSWERED, manager=manager),),
    )
    held = asyncio.ensure_future(session.get(f"{server.url}/held"))
    await _asent(server, "/held")
    waiting = asyncio.ensure_future(session.get(f"{server.url}/waiting"))
    connector = session.connector
    assert connector is not None
    for _ in range(1000):
        if connector._waiters:
            break
        await asyncio.sleep(0)
    assert connector._waiters  # waiting for the one slot, which /held holds
    await session.close()
    if sys.version_info < (3, 11):  # nothing tells the close's cancellation from the task's: it stays one
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiting, 10.0)
    else:
        with pytest.raises(aiohttp.ClientConnectionError, match="Connector is closed") as caught:
            await asyncio.wait_for(waiting, 10.0)
        assert isinstance(caught.value, RequestNotSentError)
        assert not waiting.cancelled()
    with pytest.raises(aiohttp.ClientConnectionError):  # cut by the close too
        await asyncio.wait_for(held, 10.0)
    assert server.count("/waiting") == 0
    stats = manager.policy("answered").get_stats()
    assert stats["executions"]["cancelled"] == (1 if sys.version_info < (3, 11) else 0)
    assert stats["circuit_breaker"]["total_cancelled"] == (1 if sys.version_info < (3, 11) else 0)
    assert stats["circuit_breaker"]["total_failures"] == 0


def _queued_in_pool(pool: Any) -> bool:
    """Whether a request waits for a connection of httpcore's ``pool`` (all its connections in use)."""
    return any(waiting.is_queued() for waiting in list(pool._requests))


def test_httpx_a_request_waiting_for_a_connection_when_its_client_closed_is_never_sent(
    server: ScriptedHTTPServer,
) -> None:
    """A request waiting in httpx's pool (``max_connections=1``) at the close is refused, no connection opened.

    It was sent once the request holding the connection ended: through the closed pool, on a
    connection it opened there and nothing closed again.
    """
    server.script("/held", SLOW)
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager(clock=BackoffCheck(_nothing))
    client = httpx.Client(transport=ResilientTransport(ANSWERED, inner, manager=manager))
    outcomes: dict[str, object] = {}

    def get(path: str) -> None:
        try:
            outcomes[path] = client.get(f"{server.url}{path}").status_code
        except Exception as error:
            outcomes[path] = error

    held = threading.Thread(target=get, args=("/held",))
    waiting = threading.Thread(target=get, args=("/waiting",))
    held.start()
    _sent(server, "/held")
    waiting.start()
    until = time.monotonic() + 10.0
    while not _queued_in_pool(inner._pool) and time.monotonic() < until:
        time.sleep(0.005)
    assert _queued_in_pool(inner._pool)
    client.close()
    held.join(10.0)
    waiting.join(10.0)
    refusal = outcomes["/waiting"]
    assert isinstance(refusal, RuntimeError)
    assert "client has been closed" in str(refusal)
    assert isinstance(refusal, RequestNotSentError)
    assert server.count("/waiting") == 0
    assert inner._pool.connections == []  # none opened in the closed pool
    assert _breaker(manager)["total_failures"] == 0


async def test_httpx_async_a_request_waiting_for_a_connection_when_its_client_closed_is_never_sent(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport: a request waiting in the async pool at the close is refused."""
    server.script("/held", SLOW)
    inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    manager = ResilienceManager(clock=BackoffCheck(_anothing))
    client = httpx.AsyncClient(transport=AsyncResilientTransport(ANSWERED, inner, manager=manager))
    held = asyncio.ensure_future(client.get(f"{server.url}/held"))
    await _asent(server, "/held")
    waiting = asyncio.ensure_future(client.get(f"{server.url}/waiting"))
    for _ in range(1000):
        if _queued_in_pool(inner._pool):
            break
        await asyncio.sleep(0)
    assert _queued_in_pool(inner._pool)
    await client.aclose()
    with pytest.raises(RuntimeError, match="client has been closed") as caught:
        await asyncio.wait_for(waiting, 10.0)
    assert isinstance(caught.value, RequestNotSentError)
    with pytest.raises(httpx.TransportError):  # cut by the close
        await asyncio.wait_for(held, 10.0)
    assert server.count("/waiting") == 0
    assert inner._pool.connections == []
    assert _breaker(manager)["total_failures"] == 0
