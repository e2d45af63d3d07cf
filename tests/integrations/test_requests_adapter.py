"""requests' ResilientAdapter against a real local HTTP server."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from support import FAST_RETRY as FAST
from support import ScriptedHTTPServer

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.integrations.http import FailedResponseError, HttpOptions
from otel_resilience.integrations.requests import ResilientAdapter, mark_retryable


def session(options: HttpOptions | None = None, **changes: Any) -> requests.Session:
    fields: dict[str, Any] = {"name": "downstream", "retry_policy": FAST}
    fields.update(changes)
    s = requests.Session()
    s.mount(
        "http://", ResilientAdapter(ResilienceConfig(**fields), options=options, manager=ResilienceManager())
    )
    return s


def test_a_5xx_get_is_retried(server: ScriptedHTTPServer) -> None:
    """A GET that got a 503 then a 502 is sent again, and the caller sees the 200."""
    server.script("/a", (503, {}), (502, {}))
    with session() as s:
        response = s.get(f"{server.url}/a")
    assert (response.status_code, response.text) == (200, "200")
    assert server.count("/a") == 3


def test_the_last_failed_response_is_returned(server: ScriptedHTTPServer) -> None:
    """After max_attempts 500s the caller gets the last 500, its body readable."""
    server.script("/a", *[(500, {})] * 3)
    with session() as s:
        response = s.get(f"{server.url}/a")
    assert (response.status_code, response.text) == (500, "500")
    assert server.count("/a") == 3


def test_raise_on_failure(server: ScriptedHTTPServer) -> None:
    """With raise_on_failure the last failed response comes as FailedResponseError."""
    server.script("/a", *[(503, {})] * 3)
    with session(HttpOptions(raise_on_failure=True)) as s, pytest.raises(FailedResponseError) as caught:
        s.get(f"{server.url}/a")
    assert caught.value.response.status_code == 503


def test_a_post_is_not_retried_unless_marked(server: ScriptedHTTPServer) -> None:
    """A POST gets one send; with an Idempotency-Key, or marked, it is retried with its body."""
    server.script("/a", (503, {}))
    with session() as s:
        assert s.post(f"{server.url}/a", data=b"order").status_code == 503
        assert server.count("/a") == 1
        server.script("/b", (503, {}))
        assert s.post(f"{server.url}/b", data=b"order", headers={"Idempotency-Key": "k"}).status_code == 200
        server.script("/c", (503, {}))
        prepared = mark_retryable(s.prepare_request(requests.Request("POST", f"{server.url}/c", data=b"x")))
        assert s.send(prepared).status_code == 200
    assert [body for _, path, _, body in server.requests if path == "/b"] == [b"order", b"order"]
    assert server.count("/c") == 2


def test_a_404_neither_retries_nor_opens_the_breaker(server: ScriptedHTTPServer) -> None:
    """A 404 is the caller's mistake: no retry, and a one-failure breaker stays closed."""
    server.script("/a", *[(404, {})] * 3)
    with session(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=60.0)) as s:
        for _ in range(3):
            assert s.get(f"{server.url}/a").status_code == 404
        assert s.get(f"{server.url}/b").status_code == 200
    assert server.count("/a") == 3


def test_retry_after_is_honoured(server: ScriptedHTTPServer) -> None:
    """A 429 with Retry-After: 0.3 is sent again no sooner than 0.3 s later."""
    server.script("/a", (429, {"Retry-After": "0.3"}))
    start = time.monotonic()
    with session() as s:
        assert s.get(f"{server.url}/a").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_connection_errors_are_retried_then_open_the_breaker() -> None:
    """A refused connection is retried, raised as requests' error, and then the breaker rejects."""
    closed = ScriptedHTTPServer()
    url = closed.url
    closed.close()
    with session(circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0)) as s:
        with pytest.raises(requests.ConnectionError):
            s.get(f"{url}/a")
        with pytest.raises(CircuitOpenError) as caught:
            s.get(f"{url}/a")
    assert caught.value.name == "downstream"


def test_one_breaker_per_host(server: ScriptedHTTPServer) -> None:
    """One host's failures open its breaker only."""
    other = ScriptedHTTPServer()
    try:
        breaker = CircuitBreakerConfig(failure_threshold=1, timeout=60.0)
        with session(retry_policy=None, circuit_breaker=breaker) as s:
            server.script("/a", (500, {}))
            assert s.get(f"{server.url}/a").status_code == 500
            with pytest.raises(CircuitOpenError):
                s.get(f"{server.url}/a")
            assert s.get(f"{other.url}/a").status_code == 200
    finally:
        other.close()


def test_the_deadline_is_the_request_timeout(server: ScriptedHTTPServer) -> None:
    """A request with no timeout of its own ends at the policy's deadline, not the server's 3 s."""
    server.script("/slow", (200, {}, 3.0))
    start = time.monotonic()
    with session(retry_policy=None, timeout=0.3) as s, pytest.raises((requests.Timeout, TimeoutError)):
        s.get(f"{server.url}/slow")
    assert time.monotonic() - start < 2.5
