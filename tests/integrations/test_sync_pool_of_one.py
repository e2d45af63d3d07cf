"""A sync client's pool of one connection: a result the policy retries, a connection held elsewhere.

A sync execution makes its attempts one after another, so the response an earlier attempt got
is dropped once the request is sent again: it is closed then, and its connection goes back to
the pool before the next send asks for one (closed only at the end, the next send would wait for
it until the deadline, or for good). A request waiting for a connection another one holds waits
until its deadline at most.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import httpx
import pytest
import requests
from support import BackoffCheck, ScriptedHTTPServer

from otel_resilience import OperationTimeoutError, ResilienceConfig, ResilienceManager, RetryPolicy
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


def test_requests_a_request_waiting_for_a_blocked_pool_ends_at_its_deadline(
    server: ScriptedHTTPServer,
) -> None:
    """With ``pool_block``, a request finding the pool's one connection held waits until its deadline.

    urllib3 would wait for the connection for good (requests gives it no pool timeout): the wait
    is a phase of the request like any other, capped by what is left of the deadline (as httpx's
    ``pool`` timeout is). Once the connection is back, the pool serves again.
    """
    session = requests.Session()
    adapter = ResilientAdapter(
        ResilienceConfig(name="pooled", retry_policy=None, timeout=0.5),
        manager=ResilienceManager(),
        pool_maxsize=1,
        pool_block=True,
    )
    session.mount("http://", adapter)
    held = session.get(f"{server.url}/held", stream=True)  # unread: its connection stays out of the pool
    try:
        with pytest.raises(OperationTimeoutError):
            _within(10, lambda: session.get(f"{server.url}/waits"))
        assert server.count("/waits") == 0
        held.close()
        assert _within(10, lambda: session.get(f"{server.url}/after")).status_code == 200
    finally:
        held.close()
        session.close()


BACKOFF_202 = replace(RETRY_202, max_attempts=2, initial_delay=30.0, max_delay=30.0)
"""One retry of a 202, after a backoff the clock runs a check in."""


def test_httpx_a_result_the_retry_dropped_frees_its_connection_before_the_backoff(
    server: ScriptedHTTPServer,
) -> None:
    """During the backoff, a request on the same pool of one gets the connection at once."""
    server.script("/job", (202, {}), (200, {}))
    inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1))
    other = httpx.Client(transport=inner, timeout=httpx.Timeout(5.0, pool=2.0))  # the same pool
    clock = BackoffCheck(lambda: other.get(f"{server.url}/other").status_code)
    config = ResilienceConfig(name="jobs", retry_policy=BACKOFF_202)
    manager = ResilienceManager(clock=clock)
    with httpx.Client(transport=ResilientTransport(config, transport=inner, manager=manager)) as client:
        response = _within(10, lambda: client.get(f"{server.url}/job"))
        assert response.status_code == 200
    assert clock.outcomes == [200]
    assert server.count("/job") == 2


def test_requests_a_result_the_retry_dropped_frees_its_connection_before_the_backoff(
    server: ScriptedHTTPServer,
) -> None:
    """As with httpx: a blocking pool of one serves another request while the retry backs off."""
    server.script("/job", (202, {}), (200, {}))
    session = requests.Session()
    clock = BackoffCheck(lambda: _within(3, lambda: session.get(f"{server.url}/other")).status_code)
    adapter = ResilientAdapter(
        ResilienceConfig(name="jobs", retry_policy=BACKOFF_202),
        manager=ResilienceManager(clock=clock),
        pool_maxsize=1,
        pool_block=True,
    )
    session.mount("http://", adapter)
    try:
        response = _within(10, lambda: session.get(f"{server.url}/job"))
        assert response.status_code == 200
        assert [str(outcome) for outcome in clock.outcomes] == ["200"]
        assert server.count("/job") == 2
    finally:
        session.close()
