"""Type-checked, never executed: code as a user writes it from the README, under strict checkers.

Run with ``mypy --strict tests/typing/user_code.py``; it is written to be clean under pyright's
strict mode too (``pyright --strict``, as Pylance users run it): no ``Any`` leaks into a user's
variables, and what mypy and pyright judge differently is shown here the way both accept it
(an implementation of a protocol, or an override of a step's hook, names its parameters as it
likes; a pattern of one's own publishes ``Pattern.run`` with ``verb``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar

import aiohttp
import httpx
import requests
from fastapi import Depends, FastAPI
from typing_extensions import assert_type

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    CacheService,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    ErrorRecoverySystem,
    ExtraStrategy,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    KeyedPolicyView,
    OperationTimeoutError,
    PolicyHandle,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    RetryStrategy,
    TimeoutHandler,
    build_pipeline,
    get_resilience_manager,
    resilient,
    retry,
    retry_async,
    retry_sync,
)
from otel_resilience.engine import HUB, EventArgs, EventKind, TelemetrySource
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, SystemClock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import StrategyTelemetry, TelemetryListener
from otel_resilience.engine.facade import Link, Pattern, verb
from otel_resilience.engine.step import Action, Answer, Step
from otel_resilience.errors import ExecutionRejectedError
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.fastapi import (
    LoadSheddingMiddleware,
    Policy,
    add_exception_handlers,
    resilience_policy,
)
from otel_resilience.integrations.http import FailedResponseError, HttpOptions, http_config
from otel_resilience.integrations.httpx import RETRYABLE, AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter, mark_retryable
from otel_resilience.manager import PolicyStatsDict
from otel_resilience.patterns.recovery import Isolatable
from otel_resilience.testing import FakeClock


async def fetch(user_id: int, *, verbose: bool = False) -> str:
    return f"{user_id}{verbose}"


def fetch_sync(user_id: int) -> str:
    return str(user_id)


breaker = CircuitBreaker("user-code", CircuitBreakerConfig(failure_threshold=5, timeout=60.0))
handle = get_resilience_manager().policy("user-code", ResilienceConfig(timeout=2.0))


# -- decorators on functions: parameters and results kept, sync stays sync ------------------------


@breaker.protect
async def analyze(content: str) -> dict[str, float]:
    return {"similarity": 0.9}


@breaker.protect
def analyze_sync(content: str) -> dict[str, float]:
    return {"similarity": 0.9}


@resilient(ResilienceConfig(timeout=1.0, retry_policy=RetryPolicy(max_attempts=3)))
async def load(user_id: int, region: str = "eu") -> list[int]:
    return [user_id]


@retry(RetryPolicy(max_attempts=2, initial_delay=0.01))
def read_config() -> str:
    return "config"


@handle.for_key("tenant-a").protect
def per_tenant(amount: float) -> float:
    return amount


async def check_decorated_functions() -> None:
    assert_type(await analyze("text"), dict[str, float])
    assert_type(analyze_sync("text"), dict[str, float])
    assert_type(await load(1, region="us"), list[int])
    assert_type(read_config(), str)
    assert_type(per_tenant(1.5), float)
    pending: Coroutine[Any, Any, str] = Hedging("user-code", HedgingConfig(delay=0.05)).protect(fetch)(1)
    assert_type(await pending, str)


# -- decorators on methods, bound or read from the class ------------------------------------------


class InventoryClient:
    def __init__(self) -> None:
        self.base = 1

    @breaker.protect
    async def item(self, item_id: int) -> str:
        return str(item_id + self.base)

    @resilient()
    def item_sync(self, item_id: int) -> str:
        return str(item_id)

    @retry()
    async def items(self, *item_ids: int) -> list[str]:
        return [str(item_id) for item_id in item_ids]

    @handle.protect
    async def order(self, item_id: int, *, quantity: int = 1) -> tuple[int, int]:
        return (item_id, quantity)

    @staticmethod
    @Bulkhead("user-code").protect
    def parse(text: str) -> int:
        return int(text)

    @classmethod
    @RateLimiter("user-code", RateLimiterConfig(rate=10.0)).protect
    async def make(cls, base: int) -> InventoryClient:
        return cls()


async def check_decorated_methods() -> None:
    client = InventoryClient()
    assert_type(await client.item(1), str)
    assert_type(client.item_sync(1), str)
    assert_type(await client.items(1, 2), list[str])
    assert_type(await client.order(1, quantity=2), tuple[int, int])
    assert_type(InventoryClient.parse("3"), int)
    assert_type(await InventoryClient.make(1), InventoryClient)
    assert_type(await InventoryClient.item(client, 1), str)


# -- each pattern's verbs, bound and read from the class -----------------------------------------


async def check_verbs() -> None:
    assert_type(await breaker.call(fetch, 1, verbose=True), str)
    assert_type(breaker.call_sync(fetch_sync, 1), str)
    assert_type(breaker.call_sync(lambda: 3), int)
    call_sync = CircuitBreaker.call_sync
    assert_type(call_sync(breaker, fetch_sync, 2), str)
    assert_type(await CircuitBreaker.call(breaker, fetch, 3), str)
    assert_type(Bulkhead.execute_sync(Bulkhead("user-code"), fetch_sync, 4), str)
    assert_type(await Retry.execute(Retry("user-code"), fetch, 5), str)
    assert_type(await retry_async(fetch, 6, policy=RetryPolicy(strategy=RetryStrategy.EXPONENTIAL)), str)
    assert_type(retry_sync(fetch_sync, 7), str)
    assert_type(await TimeoutHandler(timeout=timedelta(seconds=1)).with_timeout(fetch, 8), str)
    fallback = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="-"))
    assert_type(await fallback.execute_with_fallback(fetch, 9), str)


# -- sync verbs given a function typed ``Any``: the result is ``Any``, the code after it runs ------


def check_sync_verbs_of_untyped_functions() -> None:
    pipeline = build_pipeline("user-code", ResilienceConfig(), breaker=None, bulkhead=None, recovery=None)
    assert_type(breaker.call_sync(json.loads, "[1]"), Any)
    assert_type(CircuitBreaker.call_sync(breaker, json.loads, "[1]"), Any)
    assert_type(handle.execute_sync(json.loads, "[1]"), Any)
    assert_type(handle.for_key("tenant-a").execute_sync(json.loads, "[1]"), Any)
    assert_type(
        get_resilience_manager().execute_with_resilience_sync(json.loads, ResilienceConfig(), "[1]"), Any
    )
    assert_type(pipeline.execute_sync(json.loads, "[1]"), Any)
    assert_type(retry_sync(json.loads, "[1]"), Any)
    items: list[int] = breaker.call_sync(json.loads, "[1]")
    print(items)


# -- blocks --------------------------------------------------------------------------------------


async def check_blocks() -> None:
    with breaker.guard():
        pass
    async with breaker.guard():
        pass
    async with Bulkhead("user-code", BulkheadConfig(max_concurrent=10, max_waiting=100)).slot():
        pass
    with RateLimiter("user-code", RateLimiterConfig(rate=10.0)).guard():
        pass


# -- policies, keys, statistics, errors ----------------------------------------------------------


async def check_policies_and_errors() -> None:
    view: KeyedPolicyView = handle.for_key("tenant-a")
    assert_type(await view.execute(fetch, 1), str)
    assert_type(handle.execute_sync(fetch_sync, 2), str)
    assert_type(handle.config, ResilienceConfig)
    assert_type(handle.keys, int)
    policy_stats: PolicyStatsDict = handle.get_stats()
    assert_type(policy_stats["executions"]["total"] + policy_stats["evicted_keys"], int)
    assert_type(policy_stats["executions"]["availability"], float)
    assert_type(policy_stats["idle_ttl"], float | None)
    if (keyed_bulkheads := policy_stats["bulkhead"]) is not None:
        assert_type(keyed_bulkheads["rejected"] + keyed_bulkheads["active"], int)
    assert_type(policy_stats["reloads"]["failed"], int)
    stats = breaker.get_stats()
    assert_type(stats["state"], str)
    assert_type(breaker.state, CircuitState)
    config = dataclasses.replace(ResilienceConfig(timeout=1.0), timeout=2.0)
    assert_type(config.timeout, float | None)
    windowed = CircuitBreakerConfig(sliding_window=CountWindow(size=20), failure_rate_threshold=0.5)
    assert_type(windowed.failure_rate_threshold, float | None)
    manager = ResilienceManager()
    assert_type(manager.policy("http", ResilienceConfig(), adapt=http_config), PolicyHandle)
    try:
        await breaker.call(fetch, 1)
    except CircuitOpenError as error:
        assert_type(
            (error.name, error.state, error.retry_after, error.key), tuple[str, str, float, str | None]
        )
    except BulkheadFullError as error:
        assert_type((error.max_concurrent, error.max_waiting), tuple[int, int])
    except RateLimitedError as error:
        assert_type(error.retry_after, float)
    except OperationTimeoutError as error:
        assert_type((error.timeout, error.operation, error.scope), tuple[float, str, str])
    except FailedResponseError as error:
        assert_type(error.status_code, int)


# -- HTTP clients and servers --------------------------------------------------------------------


def check_http_clients() -> None:
    policy = ResilienceConfig(name="inventory", retry_policy=RetryPolicy(max_attempts=3))
    transport = ResilientTransport(policy, httpx.MockTransport(lambda request: httpx.Response(200)))
    with httpx.Client(transport=transport) as client:
        client.get("https://inventory.internal/items/42", extensions={RETRYABLE: True})
    httpx.AsyncClient(transport=AsyncResilientTransport(handle, httpx.AsyncHTTPTransport()))
    httpx.Client(mounts={"https://": ResilientTransport(policy, options=HttpOptions(per_host=False))})
    session = requests.Session()
    session.mount("https://", ResilientAdapter(policy, pool_maxsize=20))
    session.mount("http://", ResilientAdapter(handle))
    mark_retryable(requests.Request("GET", "https://inventory.internal").prepare())


async def check_aiohttp() -> None:
    middleware = ResilientMiddleware(ResilienceConfig(name="inventory"))
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        async with session.get("https://inventory.internal") as response:
            assert_type(response.status, int)


app = FastAPI()
add_exception_handlers(app)
app.add_middleware(LoadSheddingMiddleware, bulkhead=BulkheadConfig(max_concurrent=100))
app.add_middleware(LoadSheddingMiddleware, rate_limiter=RateLimiterConfig(rate=100.0), name="edge")
payments = resilience_policy("payments", ResilienceConfig(timeout=2.0))


@app.get("/pay")
async def pay(policy: Annotated[Policy, Depends(payments)]) -> dict[str, str]:
    return {"result": await policy.for_key("tenant-a").execute(fetch, 1)}


@app.get("/pay-sync")
def pay_sync(policy: Annotated[PolicyHandle, Depends(payments)]) -> dict[str, str]:
    return {"result": policy.execute_sync(fetch_sync, 1)}


# -- protocols implemented with parameters named one's own way -----------------------------------


class DictCache:
    def __init__(self) -> None:
        self.entries: dict[str, object] = {}

    def get(self, k: str) -> object:
        return self.entries.get(k)

    def set(self, k: str, v: object) -> None:
        self.entries[k] = v


class SteppedClock:
    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at

    async def sleep(self, delay: float) -> None:
        self.at += delay

    def sleep_sync(self, delay: float) -> None:
        self.at += delay


class ShiftedClock(SystemClock):
    def now(self) -> float:
        return super().now() + 60.0


class PrintingListener:
    def on_event(self, src: TelemetrySource, kind: EventKind, data: EventArgs) -> None:
        print(src, kind, data)


class Switch:
    name = "switch"

    def force_open(self, seconds: float | None = None, *, reason: str = "manual") -> bool:
        return seconds is not None and bool(reason)


def check_protocols() -> None:
    cache: CacheService = DictCache()
    FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="last", cache_service=cache)
    clock: Clock = SteppedClock()
    CircuitBreaker("user-code-clock", clock=clock)
    system_clock: Clock = SystemClock()
    Bulkhead("user-code-clock", clock=SystemClock())
    Retry("user-code-clock", clock=ShiftedClock())
    print(system_clock)
    ResilienceManager(clock=FakeClock(0.0))
    listener: TelemetryListener = PrintingListener()
    HUB.add_listener(listener)
    isolated: Isolatable = Switch()
    isolated_breaker: Isolatable = breaker
    ErrorRecoverySystem().as_strategy(
        breaker=breaker, breakers=lambda name: breaker if name == "user-code" else None
    )
    print(isolated, isolated_breaker)


# -- a step and a pattern of one's own -----------------------------------------------------------


class Audit(Step):
    """Hooks overridden with parameters named the step's own way."""

    kind = "audit"

    def admit(self, context: ExecutionContext) -> None:
        return None

    def on_success(self, context: ExecutionContext, permit: Any, value: Any) -> Action:
        return Answer(value)

    def on_failure(self, context: ExecutionContext, permit: Any, exc: Exception) -> Action:
        return None

    def on_cancel(self, context: ExecutionContext, permit: Any, *, running: bool) -> None:
        pass


class QuotaExhaustedError(ExecutionRejectedError):
    """The quota has granted every run it had."""


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    limit: int = 1


class QuotaStep(Link[QuotaConfig]):
    kind: ClassVar[str] = "quota"

    def __init__(self, name: str, config: QuotaConfig, clock: Clock, telemetry: StrategyTelemetry) -> None:
        super().__init__(name, config, clock, telemetry)
        self.lock = threading.Lock()
        self.granted = 0

    def admit(self, ctx: ExecutionContext) -> None:
        with self.lock:
            if self.granted >= self.config.limit:
                raise QuotaExhaustedError(self.name)
            self.granted += 1


class Quota(Pattern[QuotaConfig, QuotaStep], kind="quota"):
    """A pattern of one's own, made as docs/design.md ("Adding a pattern") says."""

    def __init__(self, name: str, config: QuotaConfig | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(name, config, clock, default=QuotaConfig())

    call = verb(
        Pattern.run, "Await ``fn`` if the quota grants it.", returns="What ``fn`` returned.", raises=()
    )
    call_sync = verb(
        Pattern.run_sync, "Call ``fn`` if the quota grants it.", returns="What ``fn`` returned.", raises=()
    )

    def _link(self, telemetry: StrategyTelemetry) -> QuotaStep:
        return QuotaStep(self.name, self.config, self._clock, telemetry)

    def get_stats(self) -> dict[str, Any]:
        return {"name": self.name}


async def check_own_strategies() -> None:
    ResilienceConfig(extra_strategies=[ExtraStrategy(lambda policy: Audit(), inside="retry")])
    quota = Quota("user-code", QuotaConfig(limit=2))
    assert_type(await quota.call(fetch, 1), str)
    assert_type(quota.call_sync(fetch_sync, 2), str)
    assert_type(quota.protect(fetch_sync)(3), str)
    ResilienceConfig(extra_strategies=[ExtraStrategy(quota.as_strategy, outside="retry")])
