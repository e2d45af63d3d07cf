"""HTTP client spans of the integrations: http.request.resend_count, and how they nest with ours."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
from opentelemetry.instrumentation.httpx import AsyncOpenTelemetryTransport, SyncOpenTelemetryTransport
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind
from support import ScriptedHTTPServer

from otel_resilience import HedgingConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.http import (
    RESEND_COUNT_ATTRIBUTE,
    async_resend_count_hook,
    resend_count_hook,
)
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter


@pytest.fixture
def server() -> Iterator[ScriptedHTTPServer]:
    s = ScriptedHTTPServer()
    try:
        yield s
    finally:
        s.close()


def test_retried_client_spans_carry_the_resend_count(otel, server: ScriptedHTTPServer) -> None:
    """Three sends, three HTTP client spans: no resend count on the first, 1 and 2 on the retries."""
    server.script("/a", (503, {}), (500, {}))
    inner = SyncOpenTelemetryTransport(
        httpx.HTTPTransport(), tracer_provider=otel.tracer_provider, request_hook=resend_count_hook
    )
    policy = ResilienceConfig(
        name="downstream", retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter="none")
    )
    with httpx.Client(transport=ResilientTransport(policy, inner, manager=ResilienceManager())) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    http_spans = [s for s in otel.spans() if s.name == "GET"]
    assert [s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in http_spans] == [None, 1, 2]
    statuses = [
        s.attributes.get("http.response.status_code", s.attributes.get("http.status_code"))
        for s in http_spans
    ]
    assert statuses == [503, 500, 200]
    ours = {s.context.span_id: s for s in otel.spans() if s.name != "GET"}
    assert ours, [s.name for s in otel.spans()]
    for span in http_spans:
        assert span.parent is not None
        assert span.parent.span_id in ours  # each send nests in the execution's span


def test_requests_client_span_holds_every_attempt_each_retry_with_its_resend_count(
    otel, server: ScriptedHTTPServer
) -> None:
    """With the requests instrumentation, one client span covers the send and every attempt.

    The instrumentation wraps ``Session.send``, outside the adapter: our execution span is its
    child, and the retried attempts' spans in it carry ``http.request.resend_count`` 1 and 2.
    """
    server.script("/a", (503, {}), (500, {}))
    policy = ResilienceConfig(
        name="downstream", retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.01, jitter="none")
    )
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(policy, manager=ResilienceManager()))
            assert session.get(f"{server.url}/a").status_code == 200
    finally:
        instrumentor.uninstrument()
    (client,) = otel.spans("GET")
    execution = next(
        s for s in otel.spans() if s.parent is not None and s.parent.span_id == client.context.span_id
    )
    attempts = [
        s for s in otel.spans() if s.parent is not None and s.parent.span_id == execution.context.span_id
    ]
    assert sorted(s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in attempts) == [1, 2]
    assert (
        client.attributes.get("http.response.status_code", client.attributes.get("http.status_code")) == 200
    )


async def test_a_hedged_original_in_an_http_client_span_carries_no_resend_count(otel) -> None:
    """The original of a hedged execution is the first send: only the hedge is a resend (count 1)."""
    policy = ResilienceConfig(name="hedged", hedging=HedgingConfig(delay=0.001, max_attempts=2))
    hedge_started = asyncio.Event()
    calls = 0

    async def send() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # the original waits for the hedge, which answers
            await hedge_started.wait()
            await asyncio.sleep(10)
        hedge_started.set()
        return calls

    tracer = otel.tracer_provider.get_tracer("client")
    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}):
        assert await ResilienceManager().execute_with_resilience(send, policy) == 2
    attempts = {s.attributes["resilience.attempt.type"]: s for s in otel.spans("hedged attempt")}
    assert RESEND_COUNT_ATTRIBUTE not in attempts["original"].attributes
    assert attempts["hedge"].attributes[RESEND_COUNT_ATTRIBUTE] == 1


# ---------------------------------------------------------------- one request over its redirects and resends

_TWO_ATTEMPTS = RetryPolicy(max_attempts=2, initial_delay=0.001, jitter="none")
"""Two attempts per execution: enough for each hop's one 503, none to spare for a redirect."""
_DIGEST = 'Digest realm="api", nonce="n0", qop="auth"'


def _statuses(spans: list[Any]) -> list[Any]:
    return [
        s.attributes.get("http.response.status_code", s.attributes.get("http.status_code")) for s in spans
    ]


def test_httpx_resend_count_runs_on_over_a_redirect_and_a_retry(otel, server: ScriptedHTTPServer) -> None:
    """307 to /b, a 503 there, then 200: three sends of one request, counted None, 1, 2.

    A redirect is not a retry: each hop is an execution of its own, so the hop's 503 is retried
    although the policy allows two attempts, and the retried attempt is the hop's second.
    """
    server.script("/a", (307, {"Location": "/b"}))
    server.script("/b", (503, {}))
    inner = SyncOpenTelemetryTransport(
        httpx.HTTPTransport(), tracer_provider=otel.tracer_provider, request_hook=resend_count_hook
    )
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    transport = ResilientTransport(policy, inner, manager=ResilienceManager())
    with httpx.Client(transport=transport, follow_redirects=True) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    sends = otel.spans("GET")
    assert _statuses(sends) == [307, 503, 200]
    assert [s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in sends] == [None, 1, 2]
    assert [s.attributes["resilience.attempt"] for s in otel.spans("downstream attempt")] == [2]


async def test_async_httpx_resend_count_runs_on_over_a_redirect_and_a_retry(
    otel, server: ScriptedHTTPServer
) -> None:
    """The async transport counts a request's sends over its redirect as the sync one does."""
    server.script("/a", (302, {"Location": "/b"}))
    server.script("/b", (503, {}))
    inner = AsyncOpenTelemetryTransport(
        httpx.AsyncHTTPTransport(), tracer_provider=otel.tracer_provider, request_hook=async_resend_count_hook
    )
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    transport = AsyncResilientTransport(policy, inner, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        assert (await client.get(f"{server.url}/a")).status_code == 200
    sends = otel.spans("GET")
    assert _statuses(sends) == [302, 503, 200]
    assert [s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in sends] == [None, 1, 2]
    assert [s.attributes["resilience.attempt"] for s in otel.spans("downstream attempt")] == [2]


def test_httpx_resend_count_runs_on_over_an_authentication_challenge(
    otel, server: ScriptedHTTPServer
) -> None:
    """A 401 answered with credentials, a redirect, then a retried 503: one request, counted None, 1, 2, 3."""
    server.script("/a", (401, {"WWW-Authenticate": _DIGEST}), (307, {"Location": "/b"}))
    server.script("/b", (503, {}))
    inner = SyncOpenTelemetryTransport(
        httpx.HTTPTransport(), tracer_provider=otel.tracer_provider, request_hook=resend_count_hook
    )
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    transport = ResilientTransport(policy, inner, manager=ResilienceManager())
    auth = httpx.DigestAuth("user", "secret")
    with httpx.Client(transport=transport, follow_redirects=True, auth=auth) as client:
        assert client.get(f"{server.url}/a").status_code == 200
    sends = otel.spans("GET")
    assert _statuses(sends) == [401, 307, 503, 200]
    assert [s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in sends] == [None, 1, 2, 3]
    assert "Authorization" in server.requests[1][2]  # the resend carried the credentials


async def test_async_httpx_resend_count_runs_on_over_an_authentication_challenge(
    otel, server: ScriptedHTTPServer
) -> None:
    """An auth flow that resends the request it was given (a custom ``httpx.Auth``) continues its count."""

    class Token(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
            response = yield request
            if response.status_code == 401:
                request.headers["Authorization"] = "Bearer fresh"
                yield request

    server.script("/a", (401, {}), (503, {}))
    inner = AsyncOpenTelemetryTransport(
        httpx.AsyncHTTPTransport(), tracer_provider=otel.tracer_provider, request_hook=async_resend_count_hook
    )
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    transport = AsyncResilientTransport(policy, inner, manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport, auth=Token()) as client:
        assert (await client.get(f"{server.url}/a")).status_code == 200
    sends = otel.spans("GET")
    assert _statuses(sends) == [401, 503, 200]
    assert [s.attributes.get(RESEND_COUNT_ATTRIBUTE) for s in sends] == [None, 1, 2]


def test_requests_attempt_spans_count_the_sends_of_every_hop_in_the_client_span(
    otel, server: ScriptedHTTPServer
) -> None:
    """requests follows a 302 by sending a new request through the adapter, inside the one client span.

    The hop's retried attempt is the request's third send: ``http.request.resend_count`` 2, and
    the retry's attempt number stays the hop's own (2).
    """
    server.script("/a", (302, {"Location": "/b"}))
    server.script("/b", (503, {}))
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        with requests.Session() as session:
            session.mount("http://", ResilientAdapter(policy, manager=ResilienceManager()))
            assert session.get(f"{server.url}/a").status_code == 200
    finally:
        instrumentor.uninstrument()
    (client,) = otel.spans("GET")
    executions = [s for s in otel.spans("downstream") if s.parent.span_id == client.context.span_id]
    assert len(executions) == 2  # one per hop, both in the client span
    (attempt,) = otel.spans("downstream attempt")
    assert attempt.attributes["resilience.attempt"] == 2
    assert attempt.attributes[RESEND_COUNT_ATTRIBUTE] == 2


async def test_aiohttp_attempt_spans_count_the_sends_of_every_hop_in_the_client_span(
    otel, server: ScriptedHTTPServer
) -> None:
    """aiohttp passes each hop of a redirect through its middlewares, in the one client span of its trace."""
    server.script("/a", (307, {"Location": "/b"}))
    server.script("/b", (503, {}))
    policy = ResilienceConfig(name="downstream", retry_policy=_TWO_ATTEMPTS)
    middleware = ResilientMiddleware(policy, manager=ResilienceManager())
    tracer = otel.tracer_provider.get_tracer("client")
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        # As aiohttp's instrumentation does: its client span is current before the middlewares run.
        with tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"http.request.method": "GET"}
        ):
            async with session.get(f"{server.url}/a") as response:
                assert response.status == 200
    (attempt,) = otel.spans("downstream attempt")
    assert attempt.attributes["resilience.attempt"] == 2
    assert attempt.attributes[RESEND_COUNT_ATTRIBUTE] == 2
