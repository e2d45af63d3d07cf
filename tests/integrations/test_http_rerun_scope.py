"""A request's "send once" rule binds its own execution, never another policy's run inside it.

An HTTP client restricts what its request's policy may run again (a POST: nothing). A policy
run while the request is under way (by its fallback, by the transport, in a task the transport
spawns: they inherit the request's context) protects another operation: its own recovery rules
apply to it in full.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from otel_resilience import (
    FallbackConfig,
    FallbackStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.patterns.recovery import RecoveryAction, RecoveryStrategy

RETRY_ONCE_MORE = RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)


def _database(manager: ResilienceManager) -> tuple[list[int], Callable[[], str]]:
    """A policy with a RETRY recovery of a dropped connection, and a load that fails once."""
    manager.recovery_system.register_recovery_rule(ConnectionResetError, RETRY_ONCE_MORE)
    loads: list[int] = []

    def load() -> str:
        loads.append(1)
        if len(loads) == 1:
            raise ConnectionResetError("connection reset")
        return "cached"

    return loads, load


def test_a_policy_run_by_a_posts_fallback_recovers_with_its_own_rules() -> None:
    """The POST is sent once; the cache its fallback reads under another policy is read again."""
    manager = ResilienceManager()
    loads, load = _database(manager)
    cache = manager.policy("cache", ResilienceConfig(enable_recovery=True))
    sends: list[str] = []

    def downstream(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        raise httpx.ConnectError("refused")

    def from_cache(*_: object) -> httpx.Response:
        return httpx.Response(200, text=cache.execute_sync(load))

    config = ResilienceConfig(
        name="orders",
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=from_cache
        ),
    )
    transport = ResilientTransport(config, httpx.MockTransport(downstream), manager=manager)
    with httpx.Client(transport=transport) as client:
        response = client.post("https://orders.internal/orders", json={})
    assert response.text == "cached"
    assert sends == ["POST"]  # the request itself: sent once
    assert len(loads) == 2  # the cache's read: recovered by its own RETRY rule


async def test_a_policy_run_in_a_task_the_transport_spawns_recovers_with_its_own_rules() -> None:
    """A task started while a POST is sent inherits its context, not its "send once" rule."""
    manager = ResilienceManager()
    loads, load = _database(manager)

    async def load_async() -> str:
        return load()

    audit = manager.policy("audit", ResilienceConfig(enable_recovery=True))
    sends: list[str] = []

    async def downstream(request: httpx.Request) -> httpx.Response:
        sends.append(request.method)
        text = await asyncio.create_task(audit.execute(load_async))
        return httpx.Response(201, text=text)

    config = ResilienceConfig(
        name="orders-async", retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0)
    )
    transport = AsyncResilientTransport(config, httpx.MockTransport(downstream), manager=manager)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.post("https://orders.internal/orders", json={})
    assert (response.status_code, response.text) == (201, "cached")
    assert sends == ["POST"]
    assert len(loads) == 2
