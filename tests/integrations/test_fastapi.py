"""FastAPI: refusals as 503/429/504 answers, the policy dependency, and load shedding at the edge."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from fastapi import Depends, FastAPI

from otel_resilience import (
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    OperationTimeoutError,
    PolicyHandle,
    RateLimitedError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.integrations.fastapi import (
    LoadSheddingMiddleware,
    Policy,
    add_exception_handlers,
    error_response,
    resilience_policy,
)


def client_of(app: FastAPI) -> httpx.AsyncClient:
    """An HTTP client of ``app`` in process; the app's own errors become 500 answers."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (CircuitOpenError("payments", "open", 2.2), 503, "3"),
        (CircuitOpenError("payments", "forced_open", math.inf), 503, None),
        (RateLimitedError("api", 0.2), 429, "1"),
        (BulkheadFullError("api", 10, 0), 503, "1"),
        (OperationTimeoutError("payments", 1.0), 504, None),
    ],
)
async def test_errors_become_answers(error: Exception, status: int, retry_after: str | None) -> None:
    """Each refusal maps to its status, with Retry-After rounded up to whole seconds."""
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/")
    async def route() -> None:
        raise error

    async with client_of(app) as client:
        response = await client.get("/")
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry_after
    assert response.json()["error"] == type(error).__name__


def test_error_response_refuses_other_errors() -> None:
    """Only the four handled errors have an answer."""
    with pytest.raises(TypeError, match=r"error_response\.error"):
        error_response(ValueError("x"))


async def test_the_dependency_gives_a_policy_whose_breaker_answers_503() -> None:
    """Handlers share the named policy: after its breaker opens, the next request gets 503 + Retry-After."""
    manager = ResilienceManager()
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=2, timeout=30.0))
    app = FastAPI()
    add_exception_handlers(app)

    async def downstream() -> str:
        raise ConnectionError("down")

    payments = resilience_policy("payments", config, manager=manager)

    @app.get("/pay")  # (the default form: an Annotated alias would name locals the app cannot resolve)
    async def pay(policy: Policy = Depends(payments)) -> str:  # noqa: B008, FAST002
        return await policy.execute(downstream)

    async with client_of(app) as client:
        assert [(await client.get("/pay")).status_code for _ in range(2)] == [500, 500]
        response = await client.get("/pay")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    handle = manager.policy("payments")
    assert handle.get_stats()["circuit_breaker"]["open_keys"] == 1


async def test_the_dependency_gives_the_managers_handle_with_keys() -> None:
    """Every request gets the same handle; a key per tenant has its own breaker; a reload shows."""
    manager = ResilienceManager()
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))
    app = FastAPI()
    add_exception_handlers(app)
    payments = resilience_policy("payments", config, manager=manager)
    seen: list[PolicyHandle] = []

    async def downstream(tenant: str) -> str:
        if tenant == "bad":
            raise ConnectionError("down")
        return tenant

    @app.get("/pay/{tenant}")
    async def pay(tenant: str, policy: Policy = Depends(payments)) -> str:  # noqa: B008, FAST002
        seen.append(policy)
        return await policy.for_key(tenant).execute(downstream, tenant)

    async with client_of(app) as client:
        assert (await client.get("/pay/bad")).status_code == 500
        assert (await client.get("/pay/bad")).status_code == 503
        assert (await client.get("/pay/good")).status_code == 200
        manager.reconfigure("payments", ResilienceConfig())
        assert (await client.get("/pay/bad")).status_code == 500
    assert all(policy is manager.policy("payments") for policy in seen)
    assert seen[0].keys == 2
    assert seen[0].generation == 2


def test_the_dependency_refuses_another_name() -> None:
    """A config named otherwise than the dependency is a ValueError naming the field."""
    with pytest.raises(ValueError, match=r"resilience_policy\.config"):
        resilience_policy("payments", ResilienceConfig(name="orders"))


async def test_load_shedding_middleware_sheds_past_the_bulkhead() -> None:
    """With one slot and no queue, a second concurrent request is answered 503 while the first runs."""
    manager = ResilienceManager()
    release = asyncio.Event()
    app = FastAPI()

    @app.get("/work")
    async def work() -> str:
        await release.wait()
        return "done"

    app.add_middleware(
        LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0), manager=manager
    )
    async with client_of(app) as client:
        first = asyncio.ensure_future(client.get("/work"))
        for _ in range(200):
            if manager.get_resilience_statistics()["bulkheads"].get("http.server", {}).get("active"):
                break
            await asyncio.sleep(0.005)
        second = await client.get("/work")
        release.set()
        assert (await first).status_code == 200
    assert second.status_code == 503
    assert second.headers["Retry-After"] == "1"


async def test_load_shedding_middleware_rate_limits() -> None:
    """Past the rate limit a request is answered 429 with Retry-After."""
    app = FastAPI()

    @app.get("/")
    async def root() -> str:
        return "ok"

    limiter = RateLimiterConfig(rate=0.01, burst=1)
    app.add_middleware(LoadSheddingMiddleware, rate_limiter=limiter, manager=ResilienceManager())
    async with client_of(app) as client:
        assert (await client.get("/")).status_code == 200
        response = await client.get("/")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1


def test_load_shedding_needs_a_limit() -> None:
    """A middleware with neither a bulkhead nor a rate limiter is refused."""
    with pytest.raises(ValueError, match=r"LoadSheddingMiddleware\.bulkhead"):
        LoadSheddingMiddleware(FastAPI())
