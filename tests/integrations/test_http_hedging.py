"""Hedging through the HTTP integrations: a request that may be sent once is never hedged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from support import ScriptedHTTPServer

from otel_resilience import (
    Hedging,
    HedgingConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.engine.events import Event
from otel_resilience.integrations.http import HttpHedgeBudget, http_config
from otel_resilience.integrations.httpx import AsyncResilientTransport
from otel_resilience.testing import EventRecorder, FakeClock

SLOW = (200, {}, 0.5)  # the original's answer: the hedge is due long before it


def hedged() -> ResilienceConfig:
    return ResilienceConfig(name="hedged", hedging=HedgingConfig(delay=0.05, max_attempts=2))


async def _send(server: ScriptedHTTPServer, method: str, **kwargs: Any) -> httpx.Response:
    server.script("/slow", SLOW)
    transport = AsyncResilientTransport(hedged(), manager=ResilienceManager())
    async with httpx.AsyncClient(transport=transport, timeout=10.0) as client:
        return await client.request(method, f"{server.url}/slow", **kwargs)


async def test_a_get_is_hedged(server: ScriptedHTTPServer) -> None:
    """The control: an idempotent request past the delay gets a second attempt, which answers first."""
    response = await _send(server, "GET")
    assert response.status_code == 200
    assert server.count("/slow") == 2


async def test_a_post_is_sent_once(server: ScriptedHTTPServer, recorder: EventRecorder) -> None:
    """A POST with no mark may not be sent twice: no hedge (denied as not replayable), the original's answer."""
    response = await _send(server, "POST", json={"amount": 100})
    assert response.status_code == 200
    await asyncio.sleep(0.2)  # a hedge, had one started, would have reached the server by now
    assert server.count("/slow") == 1
    assert [args.denied_by for args in recorder.of(Event.HEDGE_DENIED)] == ["not_replayable"]


async def test_a_post_with_an_idempotency_key_is_hedged(server: ScriptedHTTPServer) -> None:
    """Marked as safe to send again, a POST is hedged as a GET is."""
    response = await _send(server, "POST", json={"amount": 100}, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    assert server.count("/slow") == 2


async def test_a_streamed_body_is_sent_once(server: ScriptedHTTPServer) -> None:
    """A body from an iterator cannot be replayed: even a PUT is not hedged."""

    async def body() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b"part two"

    response = await _send(server, "PUT", content=body())
    assert response.status_code == 200
    await asyncio.sleep(0.2)
    assert server.count("/slow") == 1


def test_http_config_gives_hedging_the_http_budget() -> None:
    """Hedges draw on their own budget (counting first attempts) or the retry's (the retry counts)."""
    own, shared = RetryBudget(), RetryBudget()
    config = http_config(ResilienceConfig(hedging=HedgingConfig(delay=0.05, budget=own)))
    assert config.hedging is not None
    assert config.hedging.budget == HttpHedgeBudget(own, deposits=True)
    config = http_config(
        ResilienceConfig(hedging=HedgingConfig(delay=0.05), retry_policy=RetryPolicy(budget=shared))
    )
    assert config.hedging is not None
    assert config.hedging.budget == HttpHedgeBudget(shared, deposits=False)
    assert http_config(config) is config  # converted once


def test_a_handle_without_the_http_hedging_budget_is_refused() -> None:
    """A policy handle made from a plain config would hedge POSTs: refused, naming the cure."""
    handle = ResilienceManager().policy("hedged", hedged())
    with pytest.raises(ValueError, match=r"hedging lacks the HTTP hedging budget"):
        AsyncResilientTransport(handle)


def test_a_hedge_drawn_through_the_http_budget_is_given_back_to_its_own_bucket() -> None:
    """A refund names the hedge's withdrawal: it leaves the bucket it was counted in, however much later."""
    clock = FakeClock()
    base = RetryBudget(ratio=0.0, min_retries_per_second=0.5, window=10.0, clock=clock)  # 5 per window
    budget = HttpHedgeBudget(base, deposits=True)
    receipt = budget.withdraw()
    assert receipt is not None
    clock.advance(3.0)
    base.deposit()  # another call's first attempt: the window's newest bucket is a later one
    assert base.get_stats()["available"] == 4
    budget.refund(receipt)
    assert base.get_stats()["available"] == 5


def test_without_a_base_every_hedge_is_allowed_and_a_refund_gives_nothing() -> None:
    budget = HttpHedgeBudget(None, deposits=False)
    receipt = budget.withdraw()
    assert receipt is not None
    assert budget.try_withdraw()
    budget.refund(receipt)  # nothing to give back to


async def test_a_hedge_that_never_ran_returns_to_the_http_budget_exactly() -> None:
    """Through the hedging step: the race ends as a hedge is made, after its budget's bucket moved on."""
    clock = FakeClock()
    base = RetryBudget(ratio=0.0, min_retries_per_second=0.5, window=10.0, clock=clock)
    config = http_config(ResilienceConfig(hedging=HedgingConfig(delay=0.01, max_attempts=2, budget=base)))
    assert config.hedging is not None
    delays: list[int] = []

    def delay() -> float:
        delays.append(1)
        if len(delays) > 1:
            clock.advance(3.0)  # between the hedge's withdrawal and its refund,
            base.deposit()  # another call's first attempt opens a newer bucket
            raise RuntimeError("delay failed")
        return 0.01

    hedging = Hedging("http-refund", replace(config.hedging, delay=delay, max_attempts=3), clock=clock)

    async def dependency() -> str:
        await asyncio.Event().wait()
        return "never"

    with pytest.raises(RuntimeError, match="delay failed"):
        await hedging.call(dependency)
    assert hedging.get_stats()["hedges"] == 0  # it never ran: counted nowhere
    assert base.get_stats()["retries"] == 0  # the hedge that never ran is no longer counted
