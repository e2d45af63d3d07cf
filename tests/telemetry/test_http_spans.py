"""HTTP client spans of the integrations: http.request.resend_count, and how they nest with ours."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import requests
from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.trace import SpanKind
from support import ScriptedHTTPServer

from otel_resilience import HedgingConfig, ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.http import RESEND_COUNT_ATTRIBUTE, resend_count_hook
from otel_resilience.integrations.httpx import ResilientTransport
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
