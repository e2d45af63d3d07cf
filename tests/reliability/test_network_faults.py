"""Real network faults: a fault-injecting TCP proxy in front of a real HTTP server on 127.0.0.1.

A real HTTP client (httpx, with *no timeouts of its own*) calls through the manager's pipeline.
The proxy drops connections, resets them, delays requests past the deadline, or keeps them
half-open (reads the request, never answers, never closes). For every fault:

* while the network is healthy, calls succeed and the breaker stays closed;
* when the faults start, the breaker opens after a few failed calls, and then rejects at once;
* when the faults stop, the breaker probes after its timeout and closes again;
* no request ever hangs past its deadline (the total timeout plus a small scheduling slack).

The proxy is :class:`faults.FaultyNetwork` (shared with the client integrations' tests). The
sync driver cannot pre-empt a blocked socket: its callee passes what is left of
``current_deadline()`` on as the socket timeout, which is the documented way, and is tested here
against the half-open fault.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from faults import MODES, FaultyNetwork

from otel_resilience import (
    CircuitBreakerConfig,
    CircuitOpenError,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    current_deadline,
)

DEADLINE = 0.5
SLACK = 0.35
BREAKER_TIMEOUT = 0.2


@pytest.fixture
def network() -> Iterator[FaultyNetwork]:
    with FaultyNetwork() as net:
        yield net


def policy(name: str) -> ResilienceConfig:
    return ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(
            failure_threshold=3, success_threshold=1, timeout=BREAKER_TIMEOUT
        ),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01, attempt_timeout=0.15),
        timeout=DEADLINE,
        name=name,
    )


class Timed:
    """Runs calls, recording each one's outcome and wall time."""

    def __init__(self) -> None:
        self.durations: list[float] = []

    def record(self, started: float) -> None:
        self.durations.append(time.perf_counter() - started)

    def assert_bounded(self) -> None:
        assert self.durations
        worst = max(self.durations)
        assert worst <= DEADLINE + SLACK, f"a request took {worst:.3f} s, past its {DEADLINE} s deadline"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", MODES)
async def test_breaker_follows_real_network_faults(network: FaultyNetwork, mode: str) -> None:
    """The breaker opens while the proxy injects the fault, closes after it stops; nothing hangs."""
    manager = ResilienceManager()
    config = policy(f"http-{mode}")
    timed = Timed()
    async with httpx.AsyncClient(base_url=network.url, timeout=None) as client:

        async def fetch() -> str:
            response = await client.get("/")
            response.raise_for_status()
            return response.text

        async def call() -> object:
            started = time.perf_counter()
            try:
                return await manager.execute_with_resilience(fetch, config)
            except Exception as error:
                return error
            finally:
                timed.record(started)

        for _ in range(3):
            assert await call() == "ok"
        breaker = manager.get_circuit_breaker(f"http-{mode}")
        assert breaker.get_stats()["state"] == "closed"

        network.mode = mode
        outcomes = [await call() for _ in range(3)]
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        assert breaker.get_stats()["state"] == "open"
        fast_started = time.perf_counter()
        assert isinstance(await call(), CircuitOpenError)
        assert time.perf_counter() - fast_started < 1.0, "an open breaker did not reject at once"

        network.mode = "pass"
        await asyncio.sleep(BREAKER_TIMEOUT + 0.02)
        assert await call() == "ok"
        assert breaker.get_stats()["state"] == "closed"
        assert await call() == "ok"
    timed.assert_bounded()


@pytest.mark.timeout(30)
def test_sync_callee_bounds_a_half_open_connection_with_the_published_deadline(
    network: FaultyNetwork,
) -> None:
    """Sync calls pass current_deadline() on as the socket timeout: a half-open peer cannot hang them."""
    manager = ResilienceManager()
    config = policy("http-sync")
    timed = Timed()
    with httpx.Client(base_url=network.url, timeout=None) as client:

        def fetch() -> str:
            deadline = current_deadline()
            assert deadline is not None
            response = client.get("/", timeout=max(deadline - time.monotonic(), 0.001))
            response.raise_for_status()
            return response.text

        def call() -> object:
            started = time.perf_counter()
            try:
                return manager.execute_with_resilience_sync(fetch, config)
            except Exception as error:
                return error
            finally:
                timed.record(started)

        assert call() == "ok"
        breaker = manager.get_circuit_breaker("http-sync")
        network.mode = "half_open"
        outcomes = [call() for _ in range(3)]
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        assert breaker.get_stats()["state"] == "open"
        network.mode = "pass"
        time.sleep(BREAKER_TIMEOUT + 0.02)
        assert call() == "ok"
        assert breaker.get_stats()["state"] == "closed"
    timed.assert_bounded()
