"""Each client integration through the fault proxy: real resets, drops and slow answers.

The same scenarios run for httpx (sync and async transports), requests and aiohttp, each
client talking to a real HTTP server through :class:`faults.FaultyNetwork`, which counts every
request that reaches it. A sync client is called straight from the test (the proxy runs on its
own loop, in its own thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from faults import FaultyNetwork

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter
from otel_resilience.integrations.sending import HttpPolicy

CLIENTS = ("httpx", "httpx-async", "requests", "aiohttp")
FAULTS = ("reset", "drop", "delay")
ATTEMPT_TIMEOUT = 0.3
"""What bounds one attempt: a ``delay`` fault holds the request for longer (1 s)."""
TRANSPORT_ERRORS: dict[str, type[BaseException] | tuple[type[BaseException], ...]] = {
    "httpx": httpx.TransportError,
    "httpx-async": httpx.TransportError,
    "requests": requests.ConnectionError,
    "aiohttp": aiohttp.ClientConnectionError,
}
"""The error each client raises for a connection reset or dropped without an answer."""

POLICY = ResilienceConfig(
    name="downstream",
    retry_policy=RetryPolicy(
        max_attempts=2, initial_delay=0.01, max_delay=0.05, jitter="none", attempt_timeout=ATTEMPT_TIMEOUT
    ),
    circuit_breaker=CircuitBreakerConfig(failure_threshold=2, success_threshold=1, timeout=30.0),
    timeout=5.0,
)


class Client:
    """One integration behind one small interface: ``await request(method, url, headers)``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.manager = ResilienceManager()
        self.integration: Any
        if kind == "httpx":
            self.integration = ResilientTransport(POLICY, manager=self.manager)
            self.client: Any = httpx.Client(transport=self.integration, timeout=None)
        elif kind == "httpx-async":
            self.integration = AsyncResilientTransport(POLICY, manager=self.manager)
            self.client = httpx.AsyncClient(transport=self.integration, timeout=None)
        elif kind == "requests":
            self.integration = ResilientAdapter(POLICY, manager=self.manager)
            self.client = requests.Session()
            self.client.mount("http://", self.integration)
        else:
            self.integration = ResilientMiddleware(POLICY, manager=self.manager)
            self.client = None  # a ClientSession needs a running loop: made on the first request

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """Send one request with a small body for a POST: ``(status, text)``, or the client's error."""
        body = b"order" if method == "POST" else None
        if self.kind == "httpx":
            response = self.client.request(method, url, content=body, headers=headers)
            return response.status_code, response.text
        if self.kind == "httpx-async":
            response = await self.client.request(method, url, content=body, headers=headers)
            return response.status_code, response.text
        if self.kind == "requests":
            response = self.client.request(method, url, data=body, headers=headers)
            return response.status_code, response.text
        if self.client is None:
            self.client = aiohttp.ClientSession(middlewares=(self.integration,))
        async with self.client.request(method, url, data=body, headers=headers) as answer:
            return answer.status, await answer.text()

    def breaker_state(self, network: FaultyNetwork) -> str:
        """The state of the breaker of ``network``'s host."""
        http: HttpPolicy = self.integration._http
        host = http.handle().for_key(f"127.0.0.1:{network.proxy_port}")
        return str(host.circuit_breaker.get_stats()["state"])

    async def close(self) -> None:
        if self.kind == "httpx-async" or (self.kind == "aiohttp" and self.client is not None):
            await self.client.aclose() if self.kind == "httpx-async" else await self.client.close()
        elif self.client is not None:
            self.client.close()


@pytest.fixture
def network() -> Iterator[FaultyNetwork]:
    with FaultyNetwork(delay=1.0) as net:
        yield net


@pytest.fixture(params=CLIENTS)
async def client(request: pytest.FixtureRequest) -> Any:
    made = Client(request.param)
    yield made
    await made.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fault", FAULTS)
async def test_a_fault_on_a_get_is_retried_within_the_policy(
    client: Client, network: FaultyNetwork, fault: str
) -> None:
    """A GET that meets one reset, drop or slow answer is sent again and the caller gets the 200."""
    network.inject(fault, count=1)
    assert await client.request("GET", f"{network.url}/item") == (200, "ok")
    assert network.sent("GET") == 2
    assert client.breaker_state(network) == "closed"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fault", ["reset", "drop"])
async def test_a_post_without_an_idempotency_key_is_not_resent(
    client: Client, network: FaultyNetwork, fault: str
) -> None:
    """A POST that meets a fault is sent once and the caller sees the client's own error."""
    network.inject(fault, count=1)
    with pytest.raises(TRANSPORT_ERRORS[client.kind]):
        await client.request("POST", f"{network.url}/orders")
    assert network.sent("POST") == 1


@pytest.mark.timeout(30)
async def test_a_post_with_an_idempotency_key_is_resent(client: Client, network: FaultyNetwork) -> None:
    """An Idempotency-Key header marks a POST retryable: after a reset it is sent again."""
    network.inject("reset", count=1)
    answer = await client.request("POST", f"{network.url}/orders", {"Idempotency-Key": "order-1"})
    assert answer == (200, "ok")
    assert network.sent("POST") == 2


@pytest.mark.timeout(30)
async def test_the_breaker_opens_for_the_failing_host_only(client: Client, network: FaultyNetwork) -> None:
    """Resets open the breaker of one host: its calls are rejected at once, another host still answers."""
    with FaultyNetwork(delay=1.0) as healthy:
        network.inject("reset")
        # Two attempts, two failures: the breaker opens. aiohttp itself then sends a GET whose
        # connection was reset once more, as a new request: the open breaker rejects it.
        ended = CircuitOpenError if client.kind == "aiohttp" else TRANSPORT_ERRORS[client.kind]
        with pytest.raises(ended):
            await client.request("GET", f"{network.url}/item")
        assert network.sent() == 2
        assert client.breaker_state(network) == "open"
        with pytest.raises(CircuitOpenError) as rejected:
            await client.request("GET", f"{network.url}/item")
        assert network.sent() == 2, "a rejected request reached the network"
        assert rejected.value.retry_after is not None
        assert 0 < rejected.value.retry_after <= 30.0
        assert await client.request("GET", f"{healthy.url}/item") == (200, "ok")
        assert client.breaker_state(healthy) == "closed"
