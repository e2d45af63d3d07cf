"""The service: FastAPI, calling its downstreams through httpx with one resilience policy per host.

``create_app({"inventory": "http://127.0.0.1:8001", "pricing": "http://127.0.0.1:8002"})`` gives
an app whose routes call those downstreams, each through its own ``httpx.AsyncClient`` whose
transport is an :class:`~otel_resilience.integrations.httpx.AsyncResilientTransport` with the
downstream's policy (:data:`POLICIES`). Under it, the OpenTelemetry httpx instrumentation makes
one client span per send, and :func:`~otel_resilience.integrations.http.async_resend_count_hook`
puts ``http.request.resend_count`` on the spans of retries; under ``opentelemetry-instrument``,
which instruments httpx globally too, still one (:class:`UntracedTransport`).

* ``GET /items/{item}`` and ``GET /prices/{item}``: a GET to inventory or pricing (retried);
* ``POST /orders``: a POST to inventory (never retried: it is not idempotent);
* a downstream's breaker open: ``503`` with ``Retry-After`` (``add_exception_handlers``);
* a downstream still failing once the retries are spent: ``502`` with its status, or with the
  client's error when it could not be reached (a refused connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import TracerProvider

from otel_resilience import CircuitBreakerConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.fastapi import add_exception_handlers
from otel_resilience.integrations.http import async_resend_count_hook
from otel_resilience.integrations.httpx import AsyncResilientTransport

POLICIES: Mapping[str, ResilienceConfig] = {
    # Inventory is critical: three attempts, a Retry-After of up to 5 s is waited, and the
    # breaker opens after 4 consecutive failed sends, probing again 2 s later.
    "inventory": ResilienceConfig(
        name="inventory",
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.05, max_delay=5.0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=4, timeout=2.0),
        timeout=10.0,
    ),
    # Pricing is cheap to skip: two attempts, a breaker of its own.
    "pricing": ResilienceConfig(
        name="pricing",
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.05, max_delay=2.0),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=2.0),
        timeout=5.0,
    ),
}
"""The policy of each downstream (host): its own retries, breaker and deadline."""


class UntracedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, whose sends a global httpx instrumentation does not trace.

    The client span of a send is the :class:`AsyncOpenTelemetryTransport`'s around it, the one
    with the resend count. ``opentelemetry-instrument`` (or ``HTTPXClientInstrumentor().instrument()``)
    also traces every ``httpx.AsyncHTTPTransport``: without this, each send would get a second
    client span, nested in the first, without the count.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` with the HTTP instrumentation suppressed (the wrapper traced it)."""
        with suppress_http_instrumentation():
            return await super().handle_async_request(request)


def downstream_client(
    name: str,
    base_url: str,
    manager: ResilienceManager | None = None,
    tracer_provider: TracerProvider | None = None,
) -> httpx.AsyncClient:
    """A client of the downstream ``name``: its policy over an OpenTelemetry-instrumented transport."""
    sender = AsyncOpenTelemetryTransport(
        UntracedTransport(), tracer_provider=tracer_provider, request_hook=async_resend_count_hook
    )
    transport = AsyncResilientTransport(POLICIES[name], sender, manager=manager)
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def _answer(sending: Awaitable[httpx.Response]) -> JSONResponse:
    """The service's answer for a call of a downstream: its body, or 502 when it failed.

    Failed: its last response a failure, or the downstream not reached once the retries are
    spent (a refused or reset connection, its client's own timeout: httpx's ``TransportError``).
    An open breaker (503) and the policy's deadline (504) are the exception handlers' answers.
    """
    try:
        response = await sending
    except httpx.TransportError as error:
        unreachable = {"detail": "downstream unreachable", "downstream_error": type(error).__name__}
        return JSONResponse(unreachable, 502)
    if response.is_success:
        return JSONResponse(response.json())
    return JSONResponse({"detail": "downstream failed", "downstream_status": response.status_code}, 502)


def create_app(
    downstreams: Mapping[str, str],
    *,
    manager: ResilienceManager | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The service calling ``downstreams`` (``{"inventory": url, "pricing": url}``).

    ``app.state.clients`` holds the downstream clients; they are closed at the app's shutdown.
    """
    clients = {
        name: downstream_client(name, url, manager, tracer_provider) for name, url in downstreams.items()
    }

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for client in clients.values():
            await client.aclose()

    app = FastAPI(title="http_service example", lifespan=lifespan)
    app.state.clients = clients
    add_exception_handlers(app)  # CircuitOpenError -> 503 + Retry-After, ...

    @app.get("/items/{item}")
    async def item(item: int) -> Any:
        return await _answer(clients["inventory"].get(f"/items/{item}"))

    @app.get("/prices/{item}")
    async def price(item: int) -> Any:
        return await _answer(clients["pricing"].get(f"/prices/{item}"))

    @app.post("/orders")
    async def order(body: dict[str, Any]) -> Any:
        return await _answer(clients["inventory"].post("/orders", json=body))

    return app
