"""examples/http_service end to end: the downstreams a real process, the service in process.

The downstream goes healthy -> throttled once (429 + Retry-After: 1) -> down -> back. The service
(FastAPI, httpx through AsyncResilientTransport, one policy per host) must wait the downstream's
Retry-After, never resend a POST, answer 503 + Retry-After while inventory's breaker is open while
pricing keeps answering, recover once the downstream is back, and report it all as spans (with
``http.request.resend_count`` on the client spans of retries) and metrics. Timing bounds are
generous: only "waited at least about the Retry-After" is tight, and it is a lower bound.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from otel_support import Otel

from examples.http_service.run import start_downstream, stop_downstream
from examples.http_service.service import create_app
from otel_resilience import ResilienceManager
from otel_resilience.integrations.http import RESEND_COUNT_ATTRIBUTE


@pytest.fixture
def downstream() -> Iterator[dict[str, str]]:
    process, urls = start_downstream()
    try:
        yield urls
    finally:
        stop_downstream(process)


@pytest.fixture
async def service(downstream: dict[str, str], otel: Otel) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(downstream, manager=ResilienceManager(), tracer_provider=otel.tracer_provider)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30) as client:
            yield client
    finally:
        for client in app.state.clients.values():
            await client.aclose()


async def admin(url: str, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a downstream's admin path directly (not through the service)."""
    async with httpx.AsyncClient(timeout=10) as client:
        if method == "mode":
            response = await client.post(f"{url}/admin/mode", json=body)
        else:
            response = await client.get(f"{url}/admin/stats")
    response.raise_for_status()
    return dict(response.json())


async def sent(url: str, request: str) -> int:
    """How many times the downstream at ``url`` received ``request`` (``"GET /items/1"``)."""
    return int((await admin(url, "stats"))["requests"].get(request, 0))


async def test_healthy_throttled_down_and_back(
    downstream: dict[str, str], service: httpx.AsyncClient, otel: Otel
) -> None:
    inventory, pricing = downstream["inventory"], downstream["pricing"]

    # Healthy: both answer.
    assert (await service.get("/items/1")).json()["status"] == 200
    assert (await service.get("/prices/1")).status_code == 200

    # Throttled once with Retry-After: 1: the GET waits it (at least ~1 s), then succeeds.
    await admin(inventory, "mode", {"mode": "throttled", "count": 1, "retry_after": 1})
    started = time.monotonic()
    response = await service.get("/items/2")
    waited = time.monotonic() - started
    assert response.status_code == 200
    assert 0.9 <= waited < 8.0, waited
    assert await sent(inventory, "GET /items/2") == 2

    # Down: a POST is sent once (not idempotent), its 503 answered as 502.
    await admin(inventory, "mode", {"mode": "down"})
    response = await service.post("/orders", json={"item": 1})
    assert response.status_code == 502
    assert response.json()["downstream_status"] == 503
    assert await sent(inventory, "POST /orders") == 1

    # GETs are retried until the breaker opens; then the service answers 503 + Retry-After.
    statuses = []
    for _ in range(5):
        response = await service.get("/items/3")
        statuses.append(response.status_code)
        if response.status_code == 503:
            break
    assert statuses[-1] == 503, statuses
    assert statuses[0] == 502  # the first GET was retried to the end: the downstream's 503
    assert response.json()["error"] == "CircuitOpenError"
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    opened_at = time.monotonic()
    before = await sent(inventory, "GET /items/3")
    assert before >= 3  # three attempts at least, by the first GET
    assert (await service.get("/items/3")).status_code == 503
    assert await sent(inventory, "GET /items/3") == before  # refused without a send
    response = await service.post("/orders", json={"item": 2})  # the same host: the same breaker
    assert response.status_code == 503
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    assert await sent(inventory, "POST /orders") == 1

    # Per host: pricing has its own breaker and still answers.
    assert (await service.get("/prices/2")).status_code == 200
    assert await sent(pricing, "GET /prices/2") == 1

    # Back: once the breaker's timeout has passed, a probe goes through and it closes.
    await admin(inventory, "mode", {"mode": "healthy"})
    deadline = time.monotonic() + 20.0
    while (response := await service.get("/items/4")).status_code != 200:
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, "the breaker never closed"
        await asyncio.sleep(0.1)
    assert time.monotonic() - opened_at >= 1.5  # not before the breaker's 2 s timeout (minus slack)
    assert (await service.get("/items/5")).status_code == 200

    check_spans(otel)
    check_metrics(otel)


async def test_under_a_global_httpx_instrumentation_each_send_has_one_client_span(
    downstream: dict[str, str], service: httpx.AsyncClient, otel: Otel
) -> None:
    """Run as its README says, under ``opentelemetry-instrument``, which instruments httpx globally.

    Each send is still one client span, nested in the policy's span, a retry's carrying its resend
    count: the global instrumentation adds no second span inside the example's own.
    """
    inventory = downstream["inventory"]
    await admin(inventory, "mode", {"mode": "down", "count": 1})  # one 503, then healthy
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)  # what opentelemetry-instrument does
    try:
        response = await service.get("/items/7")
    finally:
        instrumentor.uninstrument()
    assert response.status_code == 200
    assert await sent(inventory, "GET /items/7") == 2
    gets = otel.spans("GET")
    assert len(gets) == 2, [(s.name, s.parent) for s in gets]
    assert sorted(s.attributes.get(RESEND_COUNT_ATTRIBUTE, 0) for s in gets) == [0, 1]
    ours = {s.context.span_id for s in otel.spans() if s.name not in ("GET", "POST")}
    assert all(s.parent is not None and s.parent.span_id in ours for s in gets)


def check_spans(otel: Otel) -> None:
    spans = otel.span_exporter.get_finished_spans()
    gets = [s for s in spans if s.name == "GET"]
    posts = [s for s in spans if s.name == "POST"]
    resends = sorted(s.attributes.get(RESEND_COUNT_ATTRIBUTE, 0) for s in gets)
    assert 1 in resends
    assert 2 in resends  # the first GET while down: sent three times
    assert len(posts) == 1
    assert RESEND_COUNT_ATTRIBUTE not in posts[0].attributes
    ours = {s.context.span_id: s for s in spans if s.name not in ("GET", "POST")}
    for span in gets + posts:  # each send nests in its execution's span (or an attempt's)
        assert span.parent is not None
        assert span.parent.span_id in ours, span.name
    keys = {s.attributes.get("resilience.key") for s in ours.values()}
    assert {k for k in keys if k} == {downstream_host(s) for s in gets}


def downstream_host(span: Any) -> str:
    url = httpx.URL(span.attributes.get("url.full") or span.attributes["http.url"])
    return f"{url.host}:{url.port}"


def check_metrics(otel: Otel) -> None:
    retries = otel.points("resilience.retries")
    assert {p.attributes["resilience.policy"] for p in retries} == {"inventory"}
    assert sum(p.value for p in retries) >= 3  # one after the 429, two for the first GET while down
    transitions = otel.points("resilience.circuit_breaker.transitions")
    moves = {(p.attributes.get("resilience.circuit_breaker.state"), p.value) for p in transitions}
    assert moves, transitions
    rejections = otel.points("resilience.rejections")
    assert sum(p.value for p in rejections) >= 2


async def test_an_unreachable_downstream_is_answered_502_not_500() -> None:
    """A downstream nobody listens for (its process gone): each GET retried to the end, then a 502.

    The table of the example's README: a downstream that still fails once the retries are spent
    is a 502, whether it answered 503s or refused the connection; a 500 would say the service
    itself failed. The breaker opens on the refusals as on 503s: a 503 + Retry-After then.
    """
    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    app: FastAPI = create_app({"inventory": dead, "pricing": dead}, manager=ResilienceManager())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30) as client:
            response = await client.get("/items/1")
            assert response.status_code == 502, response.text
            assert response.json() == {"detail": "downstream unreachable", "downstream_error": "ConnectError"}
            response = await client.post("/orders", json={"item": 1})
            assert response.status_code == 502, response.text
            statuses = [(await client.get("/items/1")).status_code for _ in range(2)]
            assert statuses[-1] == 503  # four refused sends: the breaker is open
    finally:
        for downstream in app.state.clients.values():
            await downstream.aclose()
