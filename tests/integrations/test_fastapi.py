"""FastAPI: refusals as 503/429/504 answers, the policy dependency, and load shedding at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, WebSocket
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreakerConfig,
    CircuitOpenError,
    ExecutionRejectedError,
    OperationTimeoutError,
    PolicyHandle,
    RateLimitedError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.config import load
from otel_resilience.integrations import fastapi as fastapi_integration
from otel_resilience.integrations.fastapi import (
    LoadSheddingMiddleware,
    Policy,
    add_exception_handlers,
    error_response,
    resilience_policy,
)
from otel_resilience.integrations.httpx import AsyncResilientTransport
from otel_resilience.manager import ExtraStrategy
from otel_resilience.testing import FakeClock


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
        (RateLimitedError("api", 1e300), 429, "2147483648"),  # capped: RFC 9111's largest delta-seconds
        (RateLimitedError("api", 10**400), 429, "2147483648"),  # an int past any float: capped, not a 500
        (CircuitOpenError("payments", "open", 2**31 + 1), 503, "2147483648"),
        (BulkheadFullError("api", 10, 0), 503, "1"),
        (OperationTimeoutError("payments", 1.0), 504, None),
        # made with a message alone (an application's test double): no wait to tell, no Retry-After
        (CircuitOpenError("breaker down"), 503, None),
        (RateLimitedError("slow down"), 429, None),
        (RateLimitedError("api", "soon"), 429, None),
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


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (CircuitOpenError("payments", "open", 2.2, "payments@10.0.0.7:8443"), "3"),
        (RateLimitedError("payments", 0.2, "payments@10.0.0.7:8443"), "1"),
        (BulkheadFullError("payments", 10, 0, "payments@10.0.0.7:8443"), "1"),
        (OperationTimeoutError("payments@10.0.0.7:8443", 1.0), None),
    ],
)
async def test_an_answer_names_no_internal_host(error: Exception, retry_after: str | None) -> None:
    """The body tells the public client what happened, never the per-host key (an internal address) nor limits."""
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/")
    async def route() -> None:
        raise error

    async with client_of(app) as client:
        response = await client.get("/")
    assert response.headers.get("Retry-After") == retry_after
    assert response.json()["error"] == type(error).__name__
    assert "10.0.0.7" not in response.text
    assert "payments" not in response.text
    assert "limits" not in response.text


async def test_an_http_downstreams_open_breaker_is_answered_without_its_host(server: Any) -> None:
    """A route calling a real downstream through the httpx transport: its host's breaker opens, the 503 names no host."""
    server.script("/pay", (503, {}))
    config = ResilienceConfig(
        name="payments",
        retry_policy=None,
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0),
    )
    transport = AsyncResilientTransport(config, manager=ResilienceManager())
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/checkout")
    async def checkout() -> int:
        async with httpx.AsyncClient(transport=transport) as downstream:
            return (await downstream.get(f"{server.url}/pay")).status_code

    async with client_of(app) as client:
        assert (await client.get("/checkout")).json() == 503  # the downstream's 503 opened the breaker
        response = await client.get("/checkout")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "30")
    assert response.json()["error"] == "CircuitOpenError"
    assert "127.0.0.1" not in response.text
    assert str(server.port) not in response.text


async def test_a_handler_the_app_registered_first_is_kept() -> None:
    """The app's own handler for one of the errors stays; the others get ours; one registered after wins."""
    app = FastAPI()

    @app.exception_handler(CircuitOpenError)
    async def degraded(request: Any, error: Exception) -> PlainTextResponse:
        return PlainTextResponse("served from cache", 200)

    add_exception_handlers(app)
    add_exception_handlers(app)  # twice: nothing changes

    @app.exception_handler(OperationTimeoutError)
    async def slow(request: Any, error: Exception) -> PlainTextResponse:
        return PlainTextResponse("slow", 502)

    @app.get("/open")
    async def open_breaker() -> None:
        raise CircuitOpenError("payments", "open", 30.0)

    @app.get("/limited")
    async def limited() -> None:
        raise RateLimitedError("api", 2.0)

    @app.get("/slow")
    async def timed_out() -> None:
        raise OperationTimeoutError("payments", 1.0)

    async with client_of(app) as client:
        responses = [await client.get(path) for path in ("/open", "/limited", "/slow")]
    assert [(r.status_code, r.text) for r in (responses[0], responses[2])] == [
        (200, "served from cache"),
        (502, "slow"),
    ]
    assert (responses[1].status_code, responses[1].headers["Retry-After"]) == (429, "2")


async def test_a_handler_for_a_parent_class_neither_keeps_nor_replaces_ours() -> None:
    """Handlers the app has for ``ExecutionRejectedError`` and ``TimeoutError``, before and after:
    ours are added all the same, and Starlette answers with the handler of the error's nearest
    class, ours; another rejection the parents' handlers still answer."""
    app = FastAPI()

    @app.exception_handler(ExecutionRejectedError)
    async def rejected(request: Any, error: Exception) -> PlainTextResponse:
        return PlainTextResponse("app's rejection", 200)

    add_exception_handlers(app)

    @app.exception_handler(TimeoutError)
    async def timed(request: Any, error: Exception) -> PlainTextResponse:
        return PlainTextResponse("app's timeout", 200)

    @app.get("/open")
    async def open_breaker() -> None:
        raise CircuitOpenError("payments", "open", 30.0)

    @app.get("/slow")
    async def slow() -> None:
        raise OperationTimeoutError("payments", 1.0)

    @app.get("/other")
    async def other() -> None:
        raise ExecutionRejectedError("another refusal")

    async with client_of(app) as client:
        opened, timed_out, refused = [await client.get(path) for path in ("/open", "/slow", "/other")]
    assert (opened.status_code, opened.json()["error"]) == (503, "CircuitOpenError")
    assert (timed_out.status_code, timed_out.json()["error"]) == (504, "OperationTimeoutError")
    assert (refused.status_code, refused.text) == (200, "app's rejection")


class _PrivateTimeout(OperationTimeoutError):
    """An integration's own timeout class (as aiohttp's total timeout, raised as the policy's)."""


class PaymentsTimeout(OperationTimeoutError):
    """A user's public subclass."""


def test_error_response_names_the_nearest_public_class() -> None:
    """A private subclass answers by its public base's name; a public subclass by its own."""
    private = error_response(_PrivateTimeout("payments", 1.0))
    public = error_response(PaymentsTimeout("payments", 1.0))
    assert (private.status_code, private.body) == (
        504,
        b'{"detail":"The operation timed out.","error":"OperationTimeoutError"}',
    )
    assert b'"error":"PaymentsTimeout"' in public.body


def test_error_response_refuses_other_errors() -> None:
    """Only the four handled errors have an answer."""
    with pytest.raises(TypeError, match=r"error_response\.error"):
        error_response(ValueError("x"))


class HandlersOnly:
    """Has exception handlers, but no way to add one: not an app."""

    exception_handlers: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return "HandlersOnly()"


@pytest.mark.parametrize("not_an_app", [None, "app", FastAPI, HandlersOnly()], ids=repr)
def test_add_exception_handlers_refuses_what_is_not_an_app(not_an_app: object) -> None:
    """Not an app: a TypeError naming the argument, not an AttributeError from inside."""
    with pytest.raises(TypeError, match=r"^add_exception_handlers\.app must be a FastAPI or Starlette app"):
        add_exception_handlers(not_an_app)


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


async def test_the_dependency_needs_no_worker_thread() -> None:
    """The dependency runs on the event loop: with every worker thread held by a sync endpoint, an
    ``async def`` endpoint still gets its policy (a sync dependency would wait for a thread, per request)."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    tokens, limiter.total_tokens = limiter.total_tokens, 1
    holding, release = threading.Event(), threading.Event()
    app = FastAPI()
    payments = resilience_policy("payments", manager=ResilienceManager())

    @app.get("/report")
    def report() -> str:  # a sync endpoint: it holds the only worker thread until released
        holding.set()
        release.wait(30)
        return "report"

    async def call() -> str:
        return "paid"

    @app.get("/pay")
    async def pay(policy: Policy = Depends(payments)) -> str:  # noqa: B008, FAST002
        return await policy.execute(call)

    try:
        async with client_of(app) as client:
            held = asyncio.ensure_future(client.get("/report"))
            while not holding.is_set():
                await asyncio.sleep(0.01)
            response = await asyncio.wait_for(client.get("/pay"), 10)  # at once; else never, until released
            release.set()
            assert (await held).status_code == 200
    finally:
        release.set()
        limiter.total_tokens = tokens
    assert (response.status_code, response.json()) == (200, "paid")


async def test_a_sync_endpoint_runs_the_policy_per_key_in_its_thread() -> None:
    """A ``def`` endpoint gets the handle and runs ``execute_sync`` per tenant: one tenant's breaker opens alone."""
    manager = ResilienceManager()
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1, timeout=30.0))
    app = FastAPI()
    add_exception_handlers(app)
    payments = resilience_policy("payments", config, manager=manager)
    threads: set[threading.Thread] = set()

    def downstream(tenant: str) -> str:
        threads.add(threading.current_thread())
        if tenant == "bad":
            raise ConnectionError("down")
        return tenant

    @app.get("/pay/{tenant}")
    def pay(tenant: str, policy: Policy = Depends(payments)) -> str:  # noqa: B008, FAST002
        return policy.for_key(tenant).execute_sync(downstream, tenant)

    async with client_of(app) as client:
        statuses = [(await client.get(f"/pay/{tenant}")).status_code for tenant in ("bad", "bad", "good")]
        refused = await client.get("/pay/bad")
    assert statuses == [500, 503, 200]
    assert refused.headers["Retry-After"] == "30"
    assert manager.policy("payments").keys == 2
    assert threading.current_thread() not in threads  # run in the threadpool, off the event loop


def test_the_dependency_refuses_another_name() -> None:
    """A config named otherwise than the dependency is a ValueError naming the field."""
    with pytest.raises(ValueError, match=r"resilience_policy\.config"):
        resilience_policy("payments", ResilienceConfig(name="orders"))


async def test_load_shedding_middleware_sheds_past_the_bulkhead() -> None:
    """With one slot and no queue, a second concurrent request is answered 503 while the first runs."""
    started, release = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.get("/work")
    async def work() -> str:
        started.set()
        await release.wait()
        return "done"

    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0))
    async with client_of(app) as client:
        first = asyncio.ensure_future(client.get("/work"))
        await asyncio.wait_for(started.wait(), 30)
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


async def test_a_request_the_bulkhead_refuses_has_spent_its_permit() -> None:
    """The limiter is asked before the bulkhead (as documented): a 503 of the bulkhead draws on the rate."""
    gate, started = asyncio.Event(), asyncio.Event()
    app = shedding_app(
        gate,
        started,
        bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0),
        rate_limiter=RateLimiterConfig(rate=0.001, burst=2),
        manager=ResilienceManager(),
    )
    async with client_of(app) as client:
        first = asyncio.ensure_future(client.get("/work"))
        await asyncio.wait_for(started.wait(), 30)
        assert (await client.get("/quick")).status_code == 503
        gate.set()
        assert (await first).status_code == 200
        assert (await client.get("/quick")).status_code == 429


def test_load_shedding_needs_a_limit() -> None:
    """A middleware with neither a bulkhead nor a rate limiter is refused."""
    with pytest.raises(ValueError, match=r"LoadSheddingMiddleware\.bulkhead"):
        LoadSheddingMiddleware(FastAPI())


def test_a_manager_or_name_of_the_wrong_type_is_refused_naming_the_argument() -> None:
    """Not a manager: a TypeError naming the argument at construction, not an AttributeError per request."""
    one_slot = BulkheadConfig(max_concurrent=1)
    with pytest.raises(TypeError, match=r"LoadSheddingMiddleware\.manager"):
        LoadSheddingMiddleware(FastAPI(), bulkhead=one_slot, manager="payments")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"resilience_policy\.manager"):
        resilience_policy("payments", manager=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"LoadSheddingMiddleware\.name"):
        LoadSheddingMiddleware(FastAPI(), bulkhead=one_slot, name=None)  # type: ignore[arg-type]


def test_a_limit_of_the_wrong_type_is_refused_naming_the_middlewares_argument() -> None:
    """``bulkhead=`` and ``rate_limiter=`` take configs: anything else is a TypeError naming that argument."""
    with pytest.raises(TypeError, match=r"^LoadSheddingMiddleware\.bulkhead must be a BulkheadConfig"):
        LoadSheddingMiddleware(FastAPI(), bulkhead=Bulkhead("edge"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^LoadSheddingMiddleware\.rate_limiter must be a RateLimiterConfig"):
        LoadSheddingMiddleware(FastAPI(), rate_limiter={"rate": 10.0})  # type: ignore[arg-type]


# ---------------------------------------------------------------- the dependency: a policy made elsewhere


async def test_the_dependency_takes_a_policy_made_elsewhere_as_it_is(tmp_path: Path) -> None:
    """A policy a configuration file made is served as it is, with or without a config of the dependency's."""
    path = tmp_path / "policies.toml"
    path.write_text("version = 1\n[policies.payments.retry]\nmax_attempts = 2\n", encoding="utf-8")
    manager = ResilienceManager()
    manager.apply_config(load(path))  # as OTEL_RESILIENCE_CONFIG does at start-up
    from_file = manager.policy("payments")
    app = FastAPI()
    add_exception_handlers(app)
    seen: list[PolicyHandle] = []
    by_name = resilience_policy("payments", manager=manager)
    with_config = resilience_policy("payments", ResilienceConfig(timeout=5.0), manager=manager)
    fresh = resilience_policy("orders", manager=manager)

    async def call() -> str:
        return "paid"

    @app.get("/by-name")
    async def pay_by_name(policy: Policy = Depends(by_name)) -> str:  # noqa: B008, FAST002
        seen.append(policy)
        return await policy.execute(call)

    @app.get("/with-config")
    async def pay_with_config(policy: Policy = Depends(with_config)) -> str:  # noqa: B008, FAST002
        seen.append(policy)
        return await policy.execute(call)

    @app.get("/orders")
    async def orders(policy: Policy = Depends(fresh)) -> str:  # noqa: B008, FAST002
        return await policy.execute(call)

    async with client_of(app) as client:
        assert [(await client.get(path)).status_code for path in ("/by-name", "/with-config")] == [200, 200]
        assert (await client.get("/orders")).status_code == 200
    assert seen == [from_file, from_file]
    assert from_file.config.retry_policy == RetryPolicy(max_attempts=2)
    assert from_file.config.timeout is None  # the dependency's config did not replace the file's
    assert manager.policy("orders").config == ResilienceConfig()  # none anywhere: made empty


async def test_a_reload_before_a_dependencys_first_request_breaks_nothing() -> None:
    """Two endpoints' dependencies of one policy: a reload between their first requests, both served."""
    manager = ResilienceManager()
    config = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=5))
    reloaded = ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=9))
    app = FastAPI()
    add_exception_handlers(app)
    seen: list[PolicyHandle] = []
    first = resilience_policy("payments", config, manager=manager)
    second = resilience_policy("payments", config, manager=manager)

    async def call() -> str:
        return "ok"

    @app.get("/a")
    async def a(policy: Policy = Depends(first)) -> str:  # noqa: B008, FAST002
        seen.append(policy)
        return await policy.execute(call)

    @app.get("/b")
    async def b(policy: Policy = Depends(second)) -> str:  # noqa: B008, FAST002
        seen.append(policy)
        return await policy.execute(call)

    async with client_of(app) as client:
        assert (await client.get("/a")).status_code == 200
        manager.reconfigure("payments", reloaded)
        assert (await client.get("/b")).status_code == 200
        assert (await client.get("/a")).status_code == 200
    assert seen == [manager.policy("payments")] * 3
    assert seen[0].config == reloaded
    assert seen[0].generation == 2


def test_the_dependency_refuses_a_config_no_policy_can_take_at_once() -> None:
    """A config a policy refuses (a Step instance as an extra link) is refused at declaration, not per request."""
    step = Bulkhead("extra").as_strategy()
    config = ResilienceConfig(extra_strategies=(ExtraStrategy(step, inside="retry"),))
    with pytest.raises(ValueError, match=r"Step instance"):
        resilience_policy("payments", config, manager=ResilienceManager())


# ---------------------------------------------------------------- load shedding: each middleware its own


def shedding_app(gate: asyncio.Event, started: asyncio.Event, **options: Any) -> FastAPI:
    """An app whose ``/work`` waits for ``gate`` (``started`` set on entry) and ``/quick`` answers at once."""
    app = FastAPI()

    @app.get("/work")
    async def work() -> str:
        started.set()
        await gate.wait()
        return "done"

    @app.get("/quick")
    async def quick() -> str:
        return "quick"

    app.add_middleware(LoadSheddingMiddleware, **options)
    return app


async def test_two_middlewares_with_other_limits_each_keep_their_own() -> None:
    """Two apps of one manager and the default name, with other bulkheads: both serve (no config clash)."""
    manager = ResilienceManager()
    gate, started = asyncio.Event(), asyncio.Event()
    gate.set()
    public = shedding_app(gate, started, bulkhead=BulkheadConfig(max_concurrent=100), manager=manager)
    admin = shedding_app(gate, started, bulkhead=BulkheadConfig(max_concurrent=2), manager=manager)
    for app in (public, admin):
        async with client_of(app) as client:
            response = await client.get("/quick")
        assert (response.status_code, response.json()) == (200, "quick")


async def test_a_busy_app_does_not_shed_another_apps_requests() -> None:
    """Equal limits, one manager, one name: app A's request in flight and A's spent permit are A's alone."""
    manager = ResilienceManager()
    gate, started = asyncio.Event(), asyncio.Event()
    one_slot = BulkheadConfig(max_concurrent=1, max_waiting=0)
    busy = shedding_app(gate, started, bulkhead=one_slot, manager=manager)
    idle = shedding_app(gate, started, bulkhead=one_slot, manager=manager)
    async with client_of(busy) as busy_client, client_of(idle) as idle_client:
        in_flight = asyncio.ensure_future(busy_client.get("/work"))
        await asyncio.wait_for(started.wait(), 30)
        assert (await busy_client.get("/quick")).status_code == 503  # A's own slot is taken
        assert (await idle_client.get("/quick")).status_code == 200
        gate.set()
        assert (await in_flight).status_code == 200

    limit = RateLimiterConfig(rate=0.01, burst=1)
    first = shedding_app(gate, started, rate_limiter=limit, manager=manager)
    other = shedding_app(gate, started, rate_limiter=limit, manager=manager)
    async with client_of(first) as first_client, client_of(other) as other_client:
        assert [(await first_client.get("/quick")).status_code for _ in range(2)] == [200, 429]
        assert (await other_client.get("/quick")).status_code == 200


async def test_a_mounted_app_with_its_own_middleware_is_served() -> None:
    """A sub-app with one slot, mounted under an app with one slot: a request passes both."""
    manager = ResilienceManager()
    one_slot = BulkheadConfig(max_concurrent=1, max_waiting=0)
    sub = FastAPI()

    @sub.get("/x")
    async def x() -> str:
        return "sub"

    sub.add_middleware(LoadSheddingMiddleware, bulkhead=one_slot, manager=manager)
    app = FastAPI()
    app.mount("/sub", sub)
    app.add_middleware(LoadSheddingMiddleware, bulkhead=one_slot, manager=manager)
    async with client_of(app) as client:
        response = await client.get("/sub/x")
    assert (response.status_code, response.json()) == (200, "sub")


# ---------------------------------------------------------------- load shedding: the slot and the response


async def test_the_slot_is_held_while_the_app_works_and_freed_when_it_ends() -> None:
    """A background task is the server's work: its slot is held; a cancelled request frees its slot."""
    in_background, finish_background = asyncio.Event(), asyncio.Event()
    hanging, app_cancelled = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    async def send_email() -> None:
        in_background.set()  # the response was sent before background tasks run
        await finish_background.wait()

    @app.get("/order")
    async def order(tasks: BackgroundTasks) -> str:
        tasks.add_task(send_email)
        return "accepted"

    @app.get("/quick")
    async def quick() -> str:
        return "quick"

    @app.get("/hang")
    async def hang() -> None:
        hanging.set()
        try:
            await asyncio.Event().wait()
        finally:
            app_cancelled.set()

    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0))
    async with client_of(app) as client:
        first = asyncio.ensure_future(client.get("/order"))
        await asyncio.wait_for(in_background.wait(), 30)
        assert (await client.get("/quick")).status_code == 503  # held: the background task runs
        finish_background.set()
        assert (await first).status_code == 200
        assert (await client.get("/quick")).status_code == 200  # freed when the app ended

        request = asyncio.ensure_future(client.get("/hang"))
        await asyncio.wait_for(hanging.wait(), 30)
        assert (await client.get("/quick")).status_code == 503  # held while the app works
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        assert app_cancelled.is_set()
        assert (await client.get("/quick")).status_code == 200


async def test_a_streamed_body_holds_its_slot_until_sent_and_frees_it_when_its_client_leaves() -> None:
    """Served by uvicorn: the slot of a ``StreamingResponse`` is held after its endpoint returned, until
    the last chunk is sent; a client that closes the connection mid-stream ends the body and frees it."""
    last_chunk, endless_closed = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.get("/finite")
    async def finite() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"first\n"
            await last_chunk.wait()
            yield b"last\n"

        return StreamingResponse(parts())

    @app.get("/endless")
    async def endless() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 1024
                    await asyncio.sleep(0.01)
            finally:
                endless_closed.set()

        return StreamingResponse(parts())

    @app.get("/quick")
    async def quick() -> str:
        return "quick"

    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0))
    async with _served(app) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            async with client.stream("GET", "/finite") as streamed:
                chunks, received = streamed.aiter_bytes(), b""
                while received != b"first\n":  # the endpoint returned: its body is being sent
                    received += await anext(chunks)
                assert (await client.get("/quick")).status_code == 503  # held
                last_chunk.set()
                assert b"".join([chunk async for chunk in chunks]) == b"last\n"
            bulkhead = _shedder_in(app).bulkhead
            assert bulkhead is not None
            await asyncio.wait_for(_until(lambda: bulkhead.get_stats()["active"] == 0), 10)
            assert (await client.get("/quick")).status_code == 200

            async with client.stream("GET", "/endless") as streamed:
                await anext(streamed.aiter_bytes())
                assert (await client.get("/quick")).status_code == 503
            # leaving the block closes the connection mid-body: the client left
            await asyncio.wait_for(endless_closed.wait(), 10)
            await asyncio.wait_for(_until(lambda: bulkhead.get_stats()["active"] == 0), 10)
            assert (await client.get("/quick")).status_code == 200
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["rejected"], stats["cancelled"]) == (4, 2, 0)


async def test_a_websocket_passes_through_a_full_shedder_untouched() -> None:
    """A websocket scope takes no slot: with the one slot held by an HTTP request, it reaches the app
    with the server's own receive and send, and the bulkhead counts nothing for it."""
    gate, entered = asyncio.Event(), list[bytes]()
    reached: list[tuple[Any, Any]] = []
    echo = _echo_app(gate, entered)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            reached.append((receive, send))
            await send({"type": "websocket.accept"})
            return
        await echo(scope, receive, send)

    middleware = LoadSheddingMiddleware(app, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=0))
    assert middleware.bulkhead is not None
    first = _Client(b"first")
    running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
    while not entered:
        await asyncio.sleep(0)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    websocket_scope = {**_scope(), "type": "websocket", "scheme": "ws", "subprotocols": []}
    del websocket_scope["method"]
    await asyncio.wait_for(middleware(websocket_scope, receive, send), 10)
    assert reached == [(receive, send)]
    assert sent == [{"type": "websocket.accept"}]
    assert middleware.bulkhead.get_stats()["total"] == 1  # the HTTP request's only
    gate.set()
    await asyncio.wait_for(running, 10)


# ---------------------------------------------------------------- load shedding: the app's own refusals


async def test_a_refusal_the_app_raises_is_not_the_middlewares(otel) -> None:
    """A policy inside the app refusing: raised to the server as the app's error, a failure of the edge."""
    app = FastAPI()

    @app.get("/")
    async def root() -> None:
        raise BulkheadFullError("inner_pool", 4, 0)

    edge_name = "http.server.inner_refusal"  # (the executions count every live pipeline of a name)
    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=10), name=edge_name)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(BulkheadFullError, match="inner_pool"):
            await client.get("/")
    edge = {"resilience.policy": edge_name, "resilience.pattern": "pipeline"}
    counts = {
        dict(point.attributes)["resilience.outcome"]: point.value
        for point in otel.points("resilience.executions")
        if {key: dict(point.attributes).get(key) for key in edge} == edge
    }
    assert counts["failure"] == 1
    assert counts.get("rejected", 0) == 0


async def test_the_edge_span_names_the_error_the_app_raised(otel) -> None:
    """The execution's error.type is the app's own error type (as for any error), never an internal wrapper."""
    app = FastAPI()

    @app.get("/refused")
    async def refused() -> None:
        raise CircuitOpenError("payments", "open", 5.0)

    @app.get("/slow")
    async def slow() -> None:
        raise OperationTimeoutError("payments", 1.0)

    @app.get("/broken")
    async def broken() -> None:
        raise ValueError("broken")

    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=10), name="edge.types")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path, error in (
            ("/refused", CircuitOpenError),
            ("/slow", OperationTimeoutError),
            ("/broken", ValueError),
        ):
            with pytest.raises(error):
                await client.get(path)
    spans = [dict(span.attributes or {}) for span in otel.spans("edge.types")]
    assert [(attrs["resilience.outcome"], attrs["error.type"]) for attrs in spans] == [
        ("failure", "otel_resilience.errors.CircuitOpenError"),
        ("failure", "otel_resilience.errors.OperationTimeoutError"),
        ("failure", "ValueError"),
    ]


class _EqualityMeta(type):
    """A metaclass that defines ``__eq__`` and no ``__hash__``: its classes cannot be hashed."""

    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment] # what defining __eq__ alone does implicitly


async def test_a_refusal_of_a_class_that_cannot_be_hashed_reaches_the_server_as_itself(otel: Any) -> None:
    """The app's refusal whose class cannot be hashed (its metaclass defines ``__eq__`` alone) goes
    on to the server as itself, named in the edge's span, never replaced by the ``TypeError`` of
    the middleware's cache of carrier classes."""

    class InnerRefusal(BulkheadFullError, metaclass=_EqualityMeta):
        """A refusal of a policy inside the app."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise InnerRefusal("inner_pool", 4, 0)

    middleware = LoadSheddingMiddleware(
        app, bulkhead=BulkheadConfig(max_concurrent=1), name="edge.unhashable"
    )
    assert middleware.bulkhead is not None
    for _ in range(2):  # the second one too: nothing half cached by the first
        client = _Client(b"")
        with pytest.raises(InnerRefusal, match="inner_pool"):
            await middleware(_scope(), client.receive, client.send)
        assert client.sent == []
    assert middleware.bulkhead.get_stats()["active"] == 0
    spans = [dict(span.attributes or {}) for span in otel.spans("edge.unhashable")]
    assert [(attrs["resilience.outcome"], attrs["error.type"]) for attrs in spans] == [
        ("failure", f"{__name__}.{InnerRefusal.__qualname__}")
    ] * 2


async def test_a_refusal_the_app_raises_mid_stream_is_raised_not_answered() -> None:
    """After the response started, the app's refusal goes to the server: no second response start."""
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts():
            yield b"part1\n"
            raise BulkheadFullError("inner_pool", 4, 0)

        return StreamingResponse(parts())

    app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=10))
    transport = httpx.ASGITransport(app=app)  # asserts a single http.response.start
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(BulkheadFullError, match="inner_pool"):
            await client.get("/stream")


async def test_a_refusal_once_the_response_started_reaches_the_server_and_its_client_as_documented() -> None:
    """Served by uvicorn, with the handlers: a refusal in a streaming body or a background task is
    Starlette's RuntimeError to the server; the streaming client gets its body cut short, while a
    background task runs once the response was sent, so its client has the whole response."""
    app = FastAPI()
    add_exception_handlers(app)

    async def refuse() -> None:
        raise CircuitOpenError("payments", "open", 5.0)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            yield b"part1\n"
            await refuse()

        return StreamingResponse(parts())

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> str:
        tasks.add_task(refuse)
        return "accepted"

    raised: list[BaseException] = []

    async def server_side(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception as error:
            raised.append(error)
            raise

    async with _served(server_side) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            with pytest.raises(httpx.RemoteProtocolError):  # the chunked body ends without its last chunk
                await client.get("/stream")
            response = await client.get("/background")
    assert (response.status_code, response.json()) == (200, "accepted")
    assert [str(error) for error in raised] == ["Caught handled exception, but response already started."] * 2
    assert all(isinstance(error.__cause__, CircuitOpenError) for error in raised)


# ---------------------------------------------------------------- websockets


@pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")
def test_a_refusal_after_accept_closes_the_websocket() -> None:
    """Before accept(): the HTTP denial (503 + Retry-After); after: a close with code 1013 and the public message."""
    from starlette.testclient import TestClient, WebSocketDenialResponse  # noqa: PLC0415 - it warns on import

    app = FastAPI()
    add_exception_handlers(app)

    @app.websocket("/before-accept")
    async def before(websocket: WebSocket) -> None:
        raise CircuitOpenError("payments", "open", 30.0)

    @app.websocket("/after-accept")
    async def after(websocket: WebSocket) -> None:
        await websocket.accept()
        raise CircuitOpenError("payments", "open", 30.0)

    with TestClient(app) as client:
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("/before-accept"):
                pass
        assert denied.value.status_code == 503
        assert denied.value.headers["Retry-After"] == "30"
        with client.websocket_connect("/after-accept") as websocket:
            with pytest.raises(WebSocketDisconnect) as closed:
                websocket.receive_text()
    assert closed.value.code == 1013
    assert closed.value.reason == "A service this one depends on is unavailable."  # not the error's message


# ---------------------------------------------------------------- load shedding: a client that leaves while queued


class _Client:
    """One request's ASGI ``receive``/``send`` pair, as a server gives them: messages put in, answers kept."""

    def __init__(self, *bodies: bytes) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for i, body in enumerate(bodies):
            self.incoming.put_nowait({"type": "http.request", "body": body, "more_body": i < len(bodies) - 1})
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self.incoming.put_nowait({"type": "http.disconnect"})


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def _echo_app(gate: asyncio.Event, entered: list[bytes]) -> Any:
    """An ASGI app that reads the whole body, waits for ``gate`` on its first request, and echoes it."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            assert message["type"] == "http.request", message
            body += message["body"]
            if not message.get("more_body", False):
                break
        entered.append(body)
        if len(entered) == 1:
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


@dataclass
class _Queue:
    """A bulkhead of one slot and one waiting place: its first request runs (held at ``gate``), the second waits."""

    bulkhead: Bulkhead
    gate: asyncio.Event
    entered: list[bytes]
    first: _Client
    second: _Client
    running: asyncio.Future[None]
    queued: asyncio.Future[None]


async def _one_running_one_queued(*second_body: bytes) -> _Queue:
    """Start a request that runs (its app held at the gate), then one that waits for its slot: ``second_body``."""
    gate, entered = asyncio.Event(), []
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    assert middleware.bulkhead is not None
    first, second = _Client(b"first"), _Client(*second_body)
    running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
    while not entered:
        await asyncio.sleep(0)
    queued = asyncio.ensure_future(middleware(_scope(), second.receive, second.send))
    while middleware.bulkhead.get_stats()["waiting"] == 0:
        await asyncio.sleep(0)
    return _Queue(middleware.bulkhead, gate, entered, first, second, running, queued)


async def test_a_queued_request_whose_client_left_gives_up_its_place_without_running_the_app() -> None:
    """http.disconnect while waiting for a slot: the app never runs, the queue place is freed, and the
    answer is a 499 with no body (for the layers around the middleware: the server drops it)."""
    q = await _one_running_one_queued(b"second")
    q.second.leave()
    await asyncio.wait_for(q.queued, 10)  # returns without a slot, long before the first request ends
    assert not q.running.done()
    assert [m["type"] for m in q.second.sent] == ["http.response.start", "http.response.body"]
    assert (q.second.sent[0]["status"], q.second.sent[1]["body"]) == (
        fastapi_integration.CLIENT_CLOSED_REQUEST,
        b"",
    )
    assert fastapi_integration.CLIENT_CLOSED_REQUEST == 499
    assert q.bulkhead.get_stats()["waiting"] == 0
    assert q.bulkhead.get_stats()["cancelled"] == 1
    q.gate.set()
    await asyncio.wait_for(q.running, 10)
    assert q.entered == [b"first"]  # the app ran for the first request only
    assert q.first.sent[-1]["body"] == b"first"


async def test_a_queued_request_gets_its_whole_body_when_its_turn_comes() -> None:
    """The body read while the request waited is given to the app, in order, then the server's next messages."""
    q = await _one_running_one_queued(b"se", b"co", b"nd")
    for _ in range(100):  # let the waiting request read its body meanwhile (to be given back to the app)
        await asyncio.sleep(0)
    assert q.second.incoming.empty()  # read ahead while it waited
    q.gate.set()
    await asyncio.wait_for(asyncio.gather(q.running, q.queued), 10)
    assert q.entered == [b"first", b"second"]
    assert q.second.sent[-1]["body"] == b"second"
    assert q.bulkhead.get_stats()["cancelled"] == 0


async def test_a_request_admitted_at_once_starts_no_reader_of_its_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client is watched only while a request waits: one that finds a free slot makes no task
    (nor waits for one), and the app reads its body from the server itself. The count is of real
    calls: a request that waits is counted (a counter of another signature would fail in the loop's
    callback, unseen, and count nothing)."""
    begun: list[object] = []
    begin = fastapi_integration._Waiting._begin

    def counting_begin(self: Any, scope: Any) -> None:
        begun.append(self)
        begin(self, scope)

    monkeypatch.setattr(fastapi_integration._Waiting, "_begin", counting_begin)
    gate, entered = asyncio.Event(), []
    gate.set()
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    client = _Client(b"at ", b"once")
    await asyncio.wait_for(middleware(_scope(), client.receive, client.send), 10)
    for _ in range(10):  # a callback left scheduled would run now
        await asyncio.sleep(0)
    assert entered == [b"at once"]
    assert begun == []

    q = await _one_running_one_queued(b"second")  # a request that waits: watched
    q.gate.set()
    await asyncio.wait_for(asyncio.gather(q.running, q.queued), 10)
    assert q.entered == [b"first", b"second"]
    assert len(begun) == 1


class _ClosingClient(_Client):
    """A client whose server raises ``OSError`` for a send once it left (ASGI 2.4: a closed connection)."""

    left = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.left:
            raise ConnectionResetError("the connection is closed")
        await super().send(message)

    def leave(self) -> None:
        super().leave()
        self.left = True


async def test_a_queued_request_whose_client_left_on_a_server_refusing_the_answer_raises_nothing() -> None:
    """A server that raises ``OSError`` for the answer to a departed client says the client left: nothing is raised."""
    gate, entered = asyncio.Event(), list[bytes]()
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    assert middleware.bulkhead is not None
    first, second = _Client(b"first"), _ClosingClient(b"second")
    running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
    while not entered:
        await asyncio.sleep(0)
    queued = asyncio.ensure_future(middleware(_scope(), second.receive, second.send))
    while middleware.bulkhead.get_stats()["waiting"] == 0:
        await asyncio.sleep(0)
    second.leave()
    await asyncio.wait_for(queued, 10)  # returned, nothing raised
    assert second.sent == []
    gate.set()
    await asyncio.wait_for(running, 10)
    stats = middleware.bulkhead.get_stats()
    assert (stats["cancelled"], stats["waiting"], stats["active"]) == (1, 0, 0)


async def test_a_server_cancel_of_a_queued_request_still_cancels_it() -> None:
    """A request the server cancels while it waits is cancelled, as before (not taken for a client that left)."""
    q = await _one_running_one_queued(b"second")
    q.queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await q.queued
    q.gate.set()
    await asyncio.wait_for(q.running, 10)
    assert q.entered == [b"first"]


@pytest.mark.parametrize("server_first", [True, False], ids=["server-first", "client-first"])
async def test_a_server_cancel_that_lands_as_the_client_leaves_still_cancels_the_request(
    server_first: bool,
) -> None:
    """Cancelled by the server in the turn of the loop its client's leaving is read in, a queued
    request is cancelled: the server's cancellation is never taken for the client's (nor lost)."""
    q = await _one_running_one_queued(b"second")
    q.second.leave()  # read by the request's watcher in the loop's next turn, which cancels the request
    if server_first:
        q.queued.cancel()
    else:
        asyncio.get_running_loop().call_soon(q.queued.cancel)  # in that turn, after the watcher
    with pytest.raises(asyncio.CancelledError):
        await q.queued
    assert q.second.sent == []
    q.gate.set()
    await asyncio.wait_for(q.running, 10)
    assert q.entered == [b"first"]


# ---------------------------------------------------------------- load shedding: Expect: 100-continue, on a real server


@contextlib.asynccontextmanager
async def _served(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port, given), in this loop; stopped after."""
    import uvicorn  # noqa: PLC0415 - the server extra, loaded by these tests only

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning", http="h11")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server._serve())  # without capturing the process's signals
    try:
        while not server.started:
            assert not serving.done(), serving.result()
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def _expecting_continue(port: int, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a POST's head with ``Expect: 100-continue``, not its body (the client waits to be asked for it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST / HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def test_a_queued_request_expecting_100_continue_is_refused_without_asking_for_its_body() -> None:
    """Waiting for a slot, a request with ``Expect: 100-continue`` is not read from: the server does not send
    "100 Continue" (the client would send its body for nothing), and the refusal is the only answer."""
    gate, entered = asyncio.Event(), []
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.2)
    )
    assert middleware.bulkhead is not None
    async with _served(middleware) as port:
        first = _Client(b"first")
        running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
        while not entered:
            await asyncio.sleep(0)
        reader, writer = await _expecting_continue(port, b"second")
        try:
            answer = await asyncio.wait_for(reader.read(), 10)  # the refusal, once its wait ran out
        finally:
            writer.close()
        gate.set()
        await asyncio.wait_for(running, 10)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"100 Continue" not in answer
    assert entered == [b"first"]


async def test_a_queued_request_expecting_100_continue_is_asked_for_its_body_when_its_turn_comes() -> None:
    """Its turn come, the app reads the body: only then does the server send "100 Continue"."""
    gate, entered = asyncio.Event(), []
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    assert middleware.bulkhead is not None
    async with _served(middleware) as port:
        first = _Client(b"first")
        running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
        while not entered:
            await asyncio.sleep(0)
        reader, writer = await _expecting_continue(port, b"second")
        try:
            while middleware.bulkhead.get_stats()["waiting"] == 0:
                await asyncio.sleep(0.01)
            for _ in range(20):  # a reader of the waiting request's client would have asked by now
                await asyncio.sleep(0)
            gate.set()  # the first request ends: the second's turn
            await asyncio.wait_for(running, 10)
            assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
            writer.write(b"second")
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    assert b"200 OK" in answer
    assert answer.endswith(b"\r\n6\r\nsecond\r\n0\r\n\r\n")  # chunked: the body echoed
    assert entered == [b"first", b"second"]


# ---------------------------------------------------------------- misuse: told, never silent


async def test_handlers_added_once_the_app_has_started_are_refused() -> None:
    """Starlette builds the handlers into the app's middleware stack when the app first runs (its
    lifespan's startup included): handlers added after would never run, every refusal a 500.
    Refused with a RuntimeError, as Starlette's ``add_middleware`` is, rather than ignored."""
    app = FastAPI()

    @app.get("/")
    async def route() -> None:
        raise CircuitOpenError("payments", "open", 2.0)

    async with client_of(app) as client:
        assert (await client.get("/")).status_code == 500  # no handler: the app's error
        with pytest.raises(RuntimeError, match=r"^add_exception_handlers: the app has started"):
            add_exception_handlers(app)
        assert (await client.get("/")).status_code == 500

    ready = FastAPI()
    add_exception_handlers(ready)

    @ready.get("/")
    async def refused() -> None:
        raise CircuitOpenError("payments", "open", 2.0)

    async with client_of(ready) as client:
        assert (await client.get("/")).status_code == 503
        add_exception_handlers(ready)  # all in place already: nothing to add, nothing refused
        assert (await client.get("/")).status_code == 503


async def test_the_dependency_raises_the_error_that_refused_its_config() -> None:
    """A config the manager refuses when it creates the policy (its extra link's factory fails):
    the request fails with that error, not with a KeyError saying that no policy has the name."""

    def broken_link(name: str) -> Any:
        raise ValueError("the link's endpoint setting is missing")

    config = ResilienceConfig(extra_strategies=(ExtraStrategy(broken_link, inside="retry"),))
    dependency = resilience_policy("payments", config, manager=ResilienceManager())
    with pytest.raises(ValueError, match="the link's endpoint setting is missing"):
        await dependency()


@pytest.mark.parametrize("not_an_app", [None, "main:app"], ids=repr)
def test_load_shedding_refuses_an_app_that_is_not_callable_at_construction(not_an_app: object) -> None:
    """Not an ASGI app: a TypeError naming the argument at construction, not a "'str' object is not
    callable" on every request."""
    with pytest.raises(TypeError, match=r"^LoadSheddingMiddleware\.app must be callable"):
        LoadSheddingMiddleware(not_an_app, bulkhead=BulkheadConfig(max_concurrent=1))  # type: ignore[arg-type]


async def test_a_refusal_before_accept_closes_the_handshake_where_the_server_has_no_denial_response() -> None:
    """A server without the ``websocket.http.response`` extension: the handshake is closed with 1013
    and the answer's public message, the error's own message never sent."""
    app = FastAPI()
    add_exception_handlers(app)

    @app.websocket("/")
    async def refused(websocket: WebSocket) -> None:
        raise CircuitOpenError("payments", "open", 30.0)

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {**_scope(), "type": "websocket", "scheme": "ws", "subprotocols": []}
    del scope["method"]
    await app(scope, receive, send)
    assert sent == [
        {"type": "websocket.close", "code": 1013, "reason": "A service this one depends on is unavailable."}
    ]


async def test_a_refusal_in_a_denial_response_already_started_reaches_the_server() -> None:
    """A refusal raised in the body of a denial response the endpoint started can no longer be
    answered: it reaches the server as an HTTP response's does (Starlette's RuntimeError from it),
    never swallowed with the denial left unfinished (its client waiting for the rest)."""
    app = FastAPI()
    add_exception_handlers(app)

    @app.websocket("/")
    async def denied(websocket: WebSocket) -> None:
        async def parts() -> AsyncIterator[bytes]:
            yield b"part1"
            raise CircuitOpenError("payments", "open", 30.0)

        await websocket.send_denial_response(StreamingResponse(parts(), status_code=403))

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {**_scope(), "type": "websocket", "scheme": "ws", "subprotocols": []}
    scope["extensions"] = {"websocket.http.response": {}}
    del scope["method"]
    with pytest.raises(RuntimeError, match="response already started") as raised:
        await app(scope, receive, send)
    assert isinstance(raised.value.__cause__, CircuitOpenError)
    assert [message["type"] for message in sent] == [
        "websocket.http.response.start",  # one start only: the answer is not sent over it
        "websocket.http.response.body",
    ]
    assert sent[0]["status"] == 403


async def _status_of(middleware: LoadSheddingMiddleware) -> tuple[int, str | None]:
    client = _Client(b"")
    await middleware(_scope(), client.receive, client.send)
    headers = dict(client.sent[0]["headers"])
    retry_after = headers.get(b"retry-after")
    return client.sent[0]["status"], None if retry_after is None else retry_after.decode()


async def test_the_middleware_runs_its_limiter_on_the_managers_clock_and_is_not_the_managers() -> None:
    """``manager=``: the rate limiter refills on that manager's clock; the manager's statistics do not list it."""
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    middleware = LoadSheddingMiddleware(
        _echo_app(asyncio.Event(), [b"held"]),  # a second entry: the app never waits at its gate
        rate_limiter=RateLimiterConfig(rate=0.1, burst=1),
        name="edge.clock",
        manager=manager,
    )
    assert await _status_of(middleware) == (200, None)
    assert await _status_of(middleware) == (429, "10")  # the next permit is 10 s away on the fake clock
    clock.advance(10.0)
    assert await _status_of(middleware) == (200, None)
    assert "edge.clock" not in repr(manager.get_resilience_statistics())


async def test_a_request_waiting_for_a_permit_whose_client_left_gives_up_its_place() -> None:
    """The rate limiter's wait (``max_wait``) is a queue too: http.disconnect there and the app never runs."""
    entered: list[bytes] = []
    gate = asyncio.Event()
    gate.set()
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), rate_limiter=RateLimiterConfig(rate=0.01, burst=1, max_wait=600.0)
    )
    assert middleware.rate_limiter is not None
    first = _Client(b"first")
    await middleware(_scope(), first.receive, first.send)
    second = _Client(b"second")
    queued = asyncio.ensure_future(middleware(_scope(), second.receive, second.send))
    while middleware.rate_limiter.get_stats()["waiting"] == 0:
        await asyncio.sleep(0)
    second.leave()
    await asyncio.wait_for(queued, 10)  # returns long before its permit (100 s away)
    assert [m.get("status") for m in second.sent] == [499, None]
    assert entered == [b"first"]
    stats = middleware.rate_limiter.get_stats()
    assert (stats["waiting"], stats["cancelled"], stats["admitted"]) == (0, 1, 1)


async def test_a_queued_request_whose_client_left_counts_a_cancel(otel: Any) -> None:
    """The execution of a request given up while it waited ends ``cancelled``; the one that ran, ``success``."""
    gate, entered = asyncio.Event(), list[bytes]()
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered),
        bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0),
        name="edge.left",
    )
    assert middleware.bulkhead is not None
    first, second = _Client(b"first"), _Client(b"second")
    running = asyncio.ensure_future(middleware(_scope(), first.receive, first.send))
    while not entered:
        await asyncio.sleep(0)
    queued = asyncio.ensure_future(middleware(_scope(), second.receive, second.send))
    while middleware.bulkhead.get_stats()["waiting"] == 0:
        await asyncio.sleep(0)
    second.leave()
    await asyncio.wait_for(queued, 10)
    gate.set()
    await asyncio.wait_for(running, 10)
    outcomes = sorted(dict(span.attributes or {})["resilience.outcome"] for span in otel.spans("edge.left"))
    assert outcomes == ["cancelled", "success"]


async def test_a_plain_starlette_app_gets_the_answers_and_keeps_a_constructor_handler() -> None:
    """The handlers work on a plain Starlette app; one given as ``exception_handlers=`` is kept."""
    from starlette.applications import Starlette  # noqa: PLC0415 - only this test builds one
    from starlette.requests import Request  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    async def busy(request: Request, error: Exception) -> PlainTextResponse:
        return PlainTextResponse("queued for later", 202)

    async def refused(request: Request) -> None:
        raise {"open": CircuitOpenError("payments", "open", 4.5), "full": BulkheadFullError("api", 1, 0)}[
            request.path_params["kind"]
        ]

    app = Starlette(routes=[Route("/{kind}", refused)], exception_handlers={BulkheadFullError: busy})
    add_exception_handlers(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        opened, full = await client.get("/open"), await client.get("/full")
    assert (opened.status_code, opened.headers["Retry-After"]) == (503, "5")
    assert opened.json() == {
        "detail": "A service this one depends on is unavailable.",
        "error": "CircuitOpenError",
    }
    assert (full.status_code, full.text) == (202, "queued for later")


async def test_a_queued_request_whose_client_closes_its_connection_gives_up_its_place_on_a_real_server() -> (
    None
):
    """Served by uvicorn: a POST waiting for the slot whose client closes the connection leaves the
    queue (cancelled), the app never runs for it, and the running request is answered."""
    gate, entered = asyncio.Event(), list[bytes]()
    middleware = LoadSheddingMiddleware(
        _echo_app(gate, entered), bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    assert middleware.bulkhead is not None
    async with _served(middleware) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            running = asyncio.ensure_future(client.post("/", content=b"first"))
            while not entered:
                await asyncio.sleep(0.01)
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nsecond")
            await writer.drain()
            while middleware.bulkhead.get_stats()["waiting"] == 0:
                await asyncio.sleep(0.01)
            writer.close()
            await writer.wait_closed()
            while middleware.bulkhead.get_stats()["waiting"] == 1:
                await asyncio.sleep(0.01)
            gate.set()
            response = await asyncio.wait_for(running, 10)
    assert (response.status_code, response.content) == (200, b"first")
    assert entered == [b"first"]
    stats = middleware.bulkhead.get_stats()
    assert (stats["cancelled"], stats["waiting"]) == (1, 0)


async def test_a_queued_request_reads_ahead_at_most_a_mebibyte_and_its_app_gets_the_whole_body() -> None:
    """A 3 MiB body in 256 KiB messages: the waiting request stops reading past 1 MiB (the rest stays
    with the server), and the app, in its turn, reads what was kept then the rest, in order."""
    chunks = [bytes([i]) * (256 * 1024) for i in range(12)]
    q = await _one_running_one_queued(*chunks)
    for _ in range(100):
        await asyncio.sleep(0)
    assert q.second.incoming.qsize() == 12 - 5  # read until past 1 MiB: five messages, 1.25 MiB
    q.gate.set()
    await asyncio.wait_for(asyncio.gather(q.running, q.queued), 10)
    assert q.entered == [b"first", b"".join(chunks)]


async def test_a_queued_request_dribbled_a_byte_per_message_keeps_a_bounded_number_of_them() -> None:
    """A slow client's body, a byte per message: each message kept costs some 220 bytes (a dict and
    a bytes object), so a byte count alone would let one waiting request keep about 220 MiB for its
    1 MiB of body. It stops reading after a bounded number of messages, the app in its turn reads
    what was kept then the rest, in order."""
    sent = 20_000  # 20 kB of body: far below the mebibyte, far above the messages kept
    q = await _one_running_one_queued(*[bytes([i % 256]) for i in range(sent)])
    for _ in range(100):
        await asyncio.sleep(0)
    kept = sent - q.second.incoming.qsize()
    assert kept <= 1024
    q.gate.set()
    await asyncio.wait_for(asyncio.gather(q.running, q.queued), 30)
    assert q.entered == [b"first", bytes(i % 256 for i in range(sent))]


async def test_a_downstream_slower_than_the_policys_deadline_is_answered_504(server: Any) -> None:
    """The client gives up at the policy's deadline: the route's OperationTimeoutError is a 504 naming no host."""
    server.script("/pay", (200, {}, 3.0))
    config = ResilienceConfig(name="payments", retry_policy=None, timeout=0.1)
    transport = AsyncResilientTransport(config, manager=ResilienceManager())
    app = FastAPI()
    add_exception_handlers(app)

    @app.get("/checkout")
    async def checkout() -> int:
        async with httpx.AsyncClient(transport=transport) as downstream:
            return (await downstream.get(f"{server.url}/pay")).status_code

    async with client_of(app) as client:
        response = await client.get("/checkout")
    assert response.status_code == 504
    assert "Retry-After" not in response.headers
    assert response.json() == {"detail": "The operation timed out.", "error": "OperationTimeoutError"}


async def test_a_lifespan_scope_passes_through_without_a_slot() -> None:
    """A lifespan running for the app's whole life holds no slot of a one-slot bulkhead: requests are served."""
    seen: list[str] = []
    gate = asyncio.Event()
    gate.set()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        if scope["type"] == "lifespan":
            await receive()  # startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # shutdown: never, while the test runs
            return
        await _echo_app(gate, ["held"])(scope, receive, send)  # type: ignore[list-item]

    middleware = LoadSheddingMiddleware(app, bulkhead=BulkheadConfig(max_concurrent=1))
    assert middleware.bulkhead is not None
    life: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    life.put_nowait({"type": "lifespan.startup"})
    started: list[dict[str, Any]] = []

    async def life_send(message: dict[str, Any]) -> None:
        started.append(message)

    lifespan = asyncio.ensure_future(
        middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, life.get, life_send)
    )
    while not started:
        await asyncio.sleep(0)
    assert middleware.bulkhead.get_stats()["active"] == 0
    assert await _status_of(middleware) == (200, None)
    life.put_nowait({"type": "lifespan.shutdown"})
    await asyncio.wait_for(lifespan, 10)
    assert seen == ["lifespan", "http"]


# ---------------------------------------------------------------- load shedding: a departed client behind an http middleware


def _shedder_in(app: Any) -> LoadSheddingMiddleware:
    """The LoadSheddingMiddleware of a started ``app``'s middleware stack."""
    layer = app.middleware_stack
    while not isinstance(layer, LoadSheddingMiddleware):
        layer = layer.app
    return layer


async def _until(done: Any) -> None:
    """Return once ``done()`` is true (polled)."""
    while not done():
        await asyncio.sleep(0.01)


class _Errors(logging.Handler):
    """The records of ERROR and above a logger gets (uvicorn's ``Exception in ASGI application``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("behind", [True, False], ids=["behind-an-http-middleware", "bare"])
async def test_a_queued_request_whose_client_left_raises_nothing_to_the_server(behind: bool) -> None:
    """Served by uvicorn, under an ``@app.middleware("http")`` added after it (so around it) or not:
    a POST whose client closes its connection while it waits for the slot is answered with a 499,
    which the server drops, and the server logs no error; the slot and the queue place are counted
    exactly.

    Returning without an answer, the middleware left Starlette's ``call_next`` with none: it
    raised ``RuntimeError("No response returned.")``, logged as an exception in the ASGI
    application for every client that left a queue (most of them under overload).
    """
    gate, started = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.post("/work")
    async def work() -> str:
        started.set()
        await gate.wait()
        return "done"

    app.add_middleware(
        LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0)
    )
    statuses: list[int] = []

    async def log_status(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        statuses.append(response.status_code)
        return response

    if behind:
        app.middleware("http")(log_status)

    errors = _Errors()
    async with _served(app) as port:
        logging.getLogger("uvicorn.error").addHandler(errors)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                running = asyncio.ensure_future(client.post("/work", content=b"first"))
                await asyncio.wait_for(started.wait(), 10)
                bulkhead = _shedder_in(app).bulkhead
                assert bulkhead is not None
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /work HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nsecond")
                await writer.drain()
                while bulkhead.get_stats()["waiting"] == 0:
                    await asyncio.sleep(0.01)
                writer.close()
                await writer.wait_closed()
                await asyncio.wait_for(_until(lambda: bulkhead.get_stats()["cancelled"]), 10)
                if behind:
                    await asyncio.wait_for(_until(lambda: statuses or errors.records), 10)  # its answer, seen
                gate.set()
                response = await asyncio.wait_for(running, 10)
        finally:
            logging.getLogger("uvicorn.error").removeHandler(errors)
    assert [record.getMessage() for record in errors.records] == []
    assert (response.status_code, response.json()) == (200, "done")
    assert statuses == ([499, 200] if behind else [])
    stats = bulkhead.get_stats()
    assert (stats["cancelled"], stats["waiting"], stats["active"]) == (1, 0, 0)


# ---------------------------------------------------------------- load shedding: where it goes beside CORS


ORIGIN = "https://shop.example"


@pytest.mark.parametrize("shedder_first", [True, False], ids=["added-before-cors", "added-after-cors"])
async def test_the_shedder_added_before_cors_answers_a_browser_with_cors_headers(shedder_first: bool) -> None:
    """Added before ``CORSMiddleware`` (so CORS wraps it), as the README says: a shed request's 503 carries
    the CORS headers (a browser's script reads it and its ``Retry-After``), and a preflight is answered by
    CORS without taking a slot. Added after, its 503 has none: the browser shows the script a network error.
    """
    from starlette.middleware.cors import CORSMiddleware  # noqa: PLC0415 - only these tests use it

    started, release = asyncio.Event(), asyncio.Event()
    app = FastAPI()

    @app.get("/work")
    async def work() -> str:
        started.set()
        await release.wait()
        return "done"

    shedder = (LoadSheddingMiddleware, {"bulkhead": BulkheadConfig(max_concurrent=1, max_waiting=0)})
    cors = (
        CORSMiddleware,
        {"allow_origins": [ORIGIN], "allow_methods": ["GET"], "expose_headers": ["Retry-After"]},
    )
    for middleware, options in (shedder, cors) if shedder_first else (cors, shedder):
        app.add_middleware(middleware, **options)  # type: ignore[arg-type]
    async with client_of(app) as client:
        first = asyncio.ensure_future(client.get("/work", headers={"Origin": ORIGIN}))
        await asyncio.wait_for(started.wait(), 30)
        shed = await client.get("/work", headers={"Origin": ORIGIN})
        preflight = await client.options(
            "/work", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}
        )
        release.set()
        assert (await first).status_code == 200
    assert (shed.status_code, shed.headers["Retry-After"]) == (503, "1")
    if shedder_first:
        assert shed.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert shed.headers["Access-Control-Expose-Headers"] == "Retry-After"
        assert preflight.status_code == 200  # answered by CORS: no slot asked for
    else:
        assert "Access-Control-Allow-Origin" not in shed.headers
        assert preflight.status_code == 503  # shed before CORS could answer it
