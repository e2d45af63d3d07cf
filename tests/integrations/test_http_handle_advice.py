"""The handle the integrations tell a user to build keeps the HTTP retry rule through reloads."""

from __future__ import annotations

import re

import httpx
import pytest

from otel_resilience import ResilienceConfig, ResilienceManager, RetryPolicy
from otel_resilience.integrations.http import http_config
from otel_resilience.integrations.httpx import ResilientTransport

RETRY = RetryPolicy(max_attempts=3, initial_delay=0.0)


def test_the_refusal_advises_a_handle_that_survives_a_reload() -> None:
    """Built as the refusal says, a handle reloaded with a plain config still sends a POST once."""
    manager = ResilienceManager()
    plain = manager.policy("orders-plain", ResilienceConfig(retry_policy=RETRY))
    with pytest.raises(ValueError, match=re.escape("adapt=http_config")):
        ResilientTransport(plain, manager=manager)

    sends: list[str] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        return httpx.Response(503)

    handle = manager.policy("orders", ResilienceConfig(retry_policy=RETRY), adapt=http_config)
    transport = ResilientTransport(handle, httpx.MockTransport(downstream), manager=manager)
    manager.reconfigure("orders", ResilienceConfig(retry_policy=RETRY))  # as a config file reload does
    with httpx.Client(transport=transport) as client:
        assert client.post("https://orders.internal/orders", json={}).status_code == 503
        assert sends == ["POST"]
        assert client.get("https://orders.internal/orders/1").status_code == 503
    assert sends == ["POST", "GET", "GET", "GET"]


def test_a_handle_made_without_adapt_keeps_the_rule_once_a_client_serves_it() -> None:
    """A handle made from http_config(config) alone keeps the rule through a reload once a client took it."""
    manager = ResilienceManager()
    sends: list[str] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        return httpx.Response(503)

    handle = manager.policy("orders-bare", http_config(ResilienceConfig(retry_policy=RETRY)))
    transports = [
        ResilientTransport(handle, httpx.MockTransport(downstream), manager=manager) for _ in range(3)
    ]
    assert len(handle._adapt.added) == 1  # type: ignore[union-attr]  # one rule for all the clients
    manager.reconfigure(
        "orders-bare", ResilienceConfig(retry_policy=RETRY)
    )  # a plain config, as a file gives
    with httpx.Client(transport=transports[0]) as client:
        assert client.post("https://orders.internal/orders", json={}).status_code == 503
        assert sends == ["POST"]  # sent once: the reloaded config kept the HTTP rule
        assert client.get("https://orders.internal/orders/1").status_code == 503
    assert sends == ["POST", "GET", "GET", "GET"]


def test_a_recovery_rule_never_sends_a_post_again() -> None:
    """A RETRY recovery re-runs a GET after a transport failure, never a POST."""
    from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy  # noqa: PLC0415

    manager = ResilienceManager()
    rule = RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    manager.recovery_system.register_recovery_rule(httpx.ConnectError, rule)
    sends: list[str] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        if sends.count(request.method) == 1:  # each method's first send fails
            raise httpx.ConnectError("refused")
        return httpx.Response(200)

    config = ResilienceConfig(
        name="orders-recovered", retry_policy=RetryPolicy(max_attempts=1), enable_recovery=True
    )
    transport = ResilientTransport(config, httpx.MockTransport(downstream), manager=manager)
    with httpx.Client(transport=transport) as client:
        with pytest.raises(httpx.ConnectError):
            client.post("https://orders.internal/orders", json={})
        assert sends == ["POST"]  # sent once: the recovery did not run it again
        assert client.get("https://orders.internal/orders/1").status_code == 200
    assert sends == ["POST", "GET", "GET"]  # a GET is recovered: sent again after the failure
