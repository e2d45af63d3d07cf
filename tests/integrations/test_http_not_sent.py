"""A request its client refuses to send never reached the host: no failure of the host, never sent again.

Two ways a client refuses a request: the caller made one it cannot send as it is (httpx's
``LocalProtocolError``, an illegal header value; ``UnsupportedProtocol``, a URL scheme it does
not speak), and the client closed while the request was under way (its retry backing off).
Counted, either opened the breaker of a host that saw nothing, for every other request to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from support import BackoffCheck, ScriptedHTTPServer

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import RequestNotSentError, http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.01, jitter="none")
BACKOFF = RetryPolicy(max_attempts=3, initial_delay=30.0, max_delay=30.0, jitter="none")
"""Retries after a backoff the clock runs a check in (the client closed there)."""
ONE_FAILURE = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
TWO_FAILURES = CircuitBreakerConfig(failure_threshold=2, timeout=60.0)


class _Counting(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """httpx's own transport (sync or async), counting the sends it is given."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sends = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        return self.real.handle_request(request)  # type: ignore[no-any-return]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sends += 1
        return await self.real.handle_async_request(request)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.real.close()

    async def aclose(self) -> None:
        await self.real.aclose()


def _breaker(manager: ResilienceManager, name: str, key: str) -> dict[str, Any]:
    stats: dict[str, Any] = manager.policy(name).for_key(key).circuit_breaker.get_stats()  # type: ignore[union-attr]
    return stats


async def _get(driver: str, transport: _Counting, manager: ResilienceManager, url: str, **kw: Any) -> Any:
    config = ResilienceConfig(name="refused", retry_policy=RETRY, circuit_breaker=ONE_FAILURE)
    if driver == "sync":
        with httpx.Client(transport=ResilientTransport(config, transport, manager=manager)) as client:
            return client.get(url, **kw)
    atransport = AsyncResilientTransport(config, transport, manager=manager)
    async with httpx.AsyncClient(transport=atransport) as aclient:
        return await aclient.get(url, **kw)


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize(
    ("path", "kw", "kind"),
    [
        ("http://{host}/a", {"headers": {"X-Note": "a\nb"}}, httpx.LocalProtocolError),
        ("ftp://{host}/a", {}, httpx.UnsupportedProtocol),
    ],
    ids=["illegal-header", "unsupported-scheme"],
)
async def test_httpx_a_request_it_refuses_as_made_is_sent_once_and_not_the_hosts_failure(
    driver: str, path: str, kw: dict[str, Any], kind: type[Exception], server: ScriptedHTTPServer
) -> None:
    """A GET with an illegal header is tried once, the caller gets httpx's error, the host's breaker stays closed.

    It was retried as a transport error (the same refusal each time) and each refusal counted:
    one such request opened the breaker of its host for every other request.
    """
    manager = ResilienceManager()
    host = f"127.0.0.1:{server.port}"
    transport = _Counting(httpx.HTTPTransport() if driver == "sync" else httpx.AsyncHTTPTransport())
    with pytest.raises(kind) as caught:
        await _get(driver, transport, manager, path.format(host=host), **kw)
    assert isinstance(caught.value, RequestNotSentError)
    assert transport.sends == 1  # not sent again: it would be refused again
    stats = _breaker(manager, "refused", host)
    assert (stats["state"], stats["total_failures"], stats["total_ignored"]) == ("closed", 0, 1)
    answered = await _get(driver, transport, manager, f"http://{host}/b")
    assert answered.status_code == 200  # the host's breaker let the next request through


def test_the_http_breaker_ignores_requests_not_sent() -> None:
    """http_config has the breaker ignore them (with the pool waits), once; a config counting them is left so."""
    config = http_config(ResilienceConfig(circuit_breaker=CircuitBreakerConfig()))
    assert config.circuit_breaker is not None
    assert RequestNotSentError in config.circuit_breaker.ignore_exceptions
    assert http_config(config) is config
    counted = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(record_exceptions=(httpx.LocalProtocolError,))
    )
    converted = http_config(counted).circuit_breaker
    assert converted is not None
    assert RequestNotSentError not in converted.ignore_exceptions  # the user counts them: as asked
    assert issubclass(httpx.UnsupportedProtocol, RequestNotSentError)
    assert not issubclass(httpx.RemoteProtocolError, RequestNotSentError)


def _closing(server: ScriptedHTTPServer) -> tuple[str, str]:
    server.script("/a", (503, {}), (503, {}))
    return f"{server.url}/a", f"127.0.0.1:{server.port}"


def _assert_refusal_ignored(manager: ResilienceManager, key: str) -> None:
    stats = _breaker(manager, "closing", key)
    assert (stats["state"], stats["total_failures"], stats["total_ignored"]) == ("closed", 1, 1)


def test_httpx_a_request_its_closed_client_refuses_is_not_the_hosts_failure(
    server: ScriptedHTTPServer,
) -> None:
    """Closed during the backoff after a 503: the refusal is httpx's RuntimeError, which the breaker ignores.

    Counted, closing one client opened the host's breaker for the other clients of the policy.
    """
    url, key = _closing(server)
    client: httpx.Client

    def close() -> None:
        client.close()

    manager = ResilienceManager(clock=BackoffCheck(close))
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF, circuit_breaker=TWO_FAILURES)
    client = httpx.Client(transport=ResilientTransport(config, manager=manager))
    with pytest.raises(RuntimeError, match="client has been closed") as caught:
        client.get(url)
    assert isinstance(caught.value, RequestNotSentError)
    assert repr(caught.value) == "RuntimeError('Cannot send a request, as the client has been closed.')"
    _assert_refusal_ignored(manager, key)


async def test_httpx_async_a_request_its_closed_client_refuses_is_not_the_hosts_failure(
    server: ScriptedHTTPServer,
) -> None:
    """As with the sync transport."""
    url, key = _closing(server)
    client: httpx.AsyncClient

    async def close() -> None:
        await client.aclose()

    manager = ResilienceManager(clock=BackoffCheck(close))
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF, circuit_breaker=TWO_FAILURES)
    client = httpx.AsyncClient(transport=AsyncResilientTransport(config, manager=manager))
    with pytest.raises(RuntimeError, match="client has been closed"):
        await asyncio.wait_for(client.get(url), 10.0)
    _assert_refusal_ignored(manager, key)


async def test_aiohttp_a_request_its_closed_session_refuses_is_not_the_hosts_failure(
    server: ScriptedHTTPServer,
) -> None:
    """aiohttp's RuntimeError for a closed session is ignored by the host's breaker."""
    url, key = _closing(server)
    session: aiohttp.ClientSession

    async def close() -> None:
        await session.close()

    manager = ResilienceManager(clock=BackoffCheck(close))
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF, circuit_breaker=TWO_FAILURES)
    session = aiohttp.ClientSession(middlewares=(ResilientMiddleware(config, manager=manager),))
    with pytest.raises(RuntimeError, match="Session is closed") as caught:
        await asyncio.wait_for(session.get(url), 10.0)
    assert isinstance(caught.value, RequestNotSentError)
    _assert_refusal_ignored(manager, key)


def test_requests_a_request_its_closed_session_refuses_is_not_the_hosts_failure(
    server: ScriptedHTTPServer,
) -> None:
    """requests' ConnectionError for a closed pool keeps its fields, and the host's breaker ignores it."""
    url, key = _closing(server)
    session = requests.Session()
    manager = ResilienceManager(clock=BackoffCheck(session.close))
    config = ResilienceConfig(name="closing", retry_policy=BACKOFF, circuit_breaker=TWO_FAILURES)
    session.mount("http://", ResilientAdapter(config, manager=manager))
    with pytest.raises(requests.ConnectionError) as caught:
        session.get(url)
    assert isinstance(caught.value, RequestNotSentError)
    assert caught.value.request is not None
    assert caught.value.request.url == url
    _assert_refusal_ignored(manager, key)
    session.close()
