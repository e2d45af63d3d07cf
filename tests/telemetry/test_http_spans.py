"""httpx client spans of a resilient transport: http.request.resend_count, nested in our spans."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport
from support import ScriptedHTTPServer

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.http import RESEND_COUNT_ATTRIBUTE, resend_count_hook
from otel_resilience.integrations.httpx import ResilientTransport


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
