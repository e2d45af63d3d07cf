"""A sync client's pool of one connection and a result the policy retries.

A sync execution makes its attempts one after another, so the response an earlier attempt got
is dropped once the request is sent again: it is closed then, and its connection goes back to
the pool before the next send asks for one (closed only at the end, the next send would wait for
it until the deadline, or for good).
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import requests
from support import ScriptedHTTPServer

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.httpx import ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter

RETRY_202 = RetryPolicy(
    max_attempts=3, initial_delay=0.0, jitter="none", retry_on_result=lambda r: r.status_code == 202
)
"""Three attempts at once; a 202 (a job not finished yet) is tried again."""


def _within(seconds: float, call: Any) -> Any:
    """``call()`` in a daemon thread; fail if it did not end within ``seconds`` (it would hang)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the request did not end within {seconds} s"
    [result] = outcome
    if isinstance(result, BaseException):
        raise result
    return result


def test_requests_with_a_pool_of_one_retries_a_result_without_waiting_for_its_own_connection(
    server: ScriptedHTTPServer,
) -> None:
    server.script("/job", (202, {}), (202, {}), (200, {}))
    session = requests.Session()
    adapter = ResilientAdapter(
        ResilienceConfig(name="jobs", retry_policy=RETRY_202),
        manager=ResilienceManager(),
        pool_maxsize=1,
        pool_block=True,
    )
    session.mount("http://", adapter)
    try:
        response = _within(10, lambda: session.get(f"{server.url}/job"))
        assert response.status_code == 200
        assert server.count("/job") == 3
    finally:
        session.close()


def test_httpx_with_a_pool_of_one_retries_a_result_without_waiting_for_its_own_connection(
    server: ScriptedHTTPServer,
) -> None:
    server.script("/job", (202, {}), (202, {}), (200, {}))
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    config = ResilienceConfig(name="jobs", retry_policy=RETRY_202, timeout=5.0)
    with httpx.Client(
        transport=ResilientTransport(config, transport=inner, manager=ResilienceManager())
    ) as client:
        response = _within(10, lambda: client.get(f"{server.url}/job"))
        assert response.status_code == 200
        assert server.count("/job") == 3
