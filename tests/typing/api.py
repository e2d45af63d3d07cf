"""Type-checked, never executed: the public API keeps wrapped signatures for mypy.

Run with ``mypy tests/typing``. A line marked ``# type: ignore[...]`` MUST be an error: mypy's
``warn_unused_ignores`` (strict) fails if it is not, so wrong signatures are pinned both ways.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from opentelemetry.metrics import Observation
from starlette.applications import Starlette
from typing_extensions import assert_type

import otel_resilience
from otel_resilience import (
    MISSING,
    Alert,
    AlertConfig,
    AlertKind,
    AlertSeverity,
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    BulkheadStats,
    BulkheadTimeoutError,
    Chaos,
    ChaosConfig,
    ChaosSwitch,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitBreakerStats,
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
    Jitter,
    KeyedPolicyView,
    OperationTimeoutError,
    Outcome,
    PercentileDelay,
    PolicyHandle,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryConfig,
    RecoveryContext,
    RecoveryEscalatedError,
    RecoveryStrategy,
    RedisStore,
    ResilienceConfig,
    ResilienceError,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeoutConfig,
    TimeoutHandler,
    TimeWindow,
    UnacceptedResultError,
    build_pipeline,
    config,
    current_deadline,
    fail_after,
    get_resilience_manager,
    move_on_after,
    resilient,
    retry,
    retry_async,
    retry_sync,
    subscribe,
    time_left,
)
from otel_resilience.engine import HUB, Counted
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import (
    CallRejected,
    Event,
    EventArgs,
    EventKind,
    StrategyTelemetry,
    TelemetryListener,
    TelemetrySource,
)
from otel_resilience.engine.shared import SharedStore
from otel_resilience.engine.step import Step
from otel_resilience.integrations.aiohttp import ResilientMiddleware
from otel_resilience.integrations.fastapi import add_exception_handlers
from otel_resilience.integrations.http import DEFAULT_FAILURE_STATUSES, RETRY_AFTER_STATUSES, HttpOptions
from otel_resilience.integrations.httpx import AsyncResilientTransport, ResilientTransport
from otel_resilience.integrations.requests import ResilientAdapter
from otel_resilience.telemetry import OtelListener, instrument
from otel_resilience.telemetry.histograms import InProcessHistogram
from otel_resilience.testing import EventRecorder, FakeClock, fresh_defaults


class Audit(Step):
    def __init__(self, policy: str) -> None:
        super().__init__()
        self.policy = policy


def audit_without_a_name() -> Audit:
    return Audit("x")


async def fetch(user_id: int, *, verbose: bool = False) -> str:
    return f"{user_id}{verbose}"


def fetch_sync(user_id: int) -> str:
    return str(user_id)


async def check_async_api() -> None:
    breaker = CircuitBreaker("typing")
    a: str = await breaker.call(fetch, 1, verbose=True)
    await breaker.call(fetch, "1")  # type: ignore[arg-type]
    b: str = breaker.call_sync(fetch_sync, 1)
    peeked: CircuitState = breaker.peek_state()
    assert peeked in CircuitState
    protected = breaker.protect(fetch)
    c: str = await protected(2)
    bulkhead = Bulkhead("typing")
    d: str = await bulkhead.execute(fetch, 3)
    e: str = bulkhead.execute_sync(fetch_sync, 3)
    shed: int = bulkhead.stats.rejected + bulkhead.stats.total  # counts, however they are kept
    bulkhead.stats.rejected = 0  # type: ignore[misc]
    handler = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="x"))
    f: str = await handler.execute_with_fallback(fetch, 4)
    timeout = TimeoutHandler(timeout=1.0)
    g: str = await timeout.with_timeout(fetch, 5)
    h: str = await retry_async(fetch, 6)
    retrying = Retry("typing", RetryPolicy())
    i: str = await retrying.execute(fetch, 7)
    await retrying.execute(fetch, 7, verbose="yes")  # type: ignore[arg-type]
    manager = get_resilience_manager()
    j: str = await manager.execute_with_resilience(fetch, ResilienceConfig(), 8)
    await manager.execute_with_resilience(fetch, ResilienceConfig(), "8")  # type: ignore[arg-type]
    k: str = manager.execute_with_resilience_sync(fetch_sync, ResilienceConfig(), 9)
    ResilienceConfig(max_attempts_total="4")  # type: ignore[arg-type]
    ResilienceConfig(
        extra_strategies=(ExtraStrategy(Audit, inside="retry"), ExtraStrategy(Audit("x"), rank=0))
    )
    ExtraStrategy(audit_without_a_name, rank=0)  # type: ignore[arg-type]
    ExtraStrategy(Audit, inside=3)  # type: ignore[arg-type]
    deadline: float | None = current_deadline()
    print(a, b, c, d, e, f, g, h, i, j, k, deadline, shed)


@resilient(ResilienceConfig(timeout=1.0, retry_policy=RetryPolicy(max_attempts=2), max_attempts_total=4))
async def decorated(x: int) -> int:
    return x


@retry(RetryPolicy(max_attempts=2))
def decorated_sync(x: int) -> int:
    return x


async def check_decorators() -> None:
    y: int = await decorated(1)
    z: int = decorated_sync(2)
    decorated_sync("2")  # type: ignore[arg-type]
    print(y, z)


async def check_rate_limiter() -> None:
    limiter = RateLimiter("typing", RateLimiterConfig(rate=10.0, burst=5, max_wait=1.0))
    a: str = await limiter.call(fetch, 1, verbose=True)
    await limiter.call(fetch, "1")  # type: ignore[arg-type]
    b: str = limiter.call_sync(fetch_sync, 2)
    c: str = await limiter.protect(fetch)(3)
    taken: bool = limiter.try_acquire()
    RateLimiterConfig(rate=1.0, algorithm="leaky")  # type: ignore[arg-type]
    per_key = RateLimiter.per_key("typing", RateLimiterConfig(rate=1.0), max_keys=10)
    d: str = per_key.for_key("tenant").call_sync(fetch_sync, 4)
    kept: int = per_key.keys + per_key.max_keys + per_key.evicted_keys
    per_key.evicted_keys = 0  # type: ignore[assignment]
    retry_after: float = RateLimitedError("typing", 1.0).retry_after
    print(a, b, c, d, taken, kept, retry_after)


def check_shared_store() -> None:
    store: RedisStore = RedisStore.from_url("redis://localhost:6379/0", namespace="typing", timeout=0.25)
    RateLimiterConfig(rate=100.0, store=store, store_fallback="local", expected_replicas=4)
    RateLimiterConfig(rate=100.0, store=store, store_fallback="maybe")  # type: ignore[arg-type]
    RedisStore.from_url(1)  # type: ignore[arg-type]
    degraded: bool = store.degraded
    operations: int = store.ops
    store.degraded = False  # type: ignore[assignment]
    store.timeout = 1.0  # type: ignore[assignment]
    shared: SharedStore = store
    assert_type((shared.name, shared.degraded, shared.ops), tuple[str, bool, int])
    shared.degraded = False  # type: ignore[misc]
    shared.ops = 0  # type: ignore[misc]
    print(degraded, operations)
    store.close()


def only_first_attempts(ctx: ExecutionContext) -> bool:
    return ctx.attempt == 1


async def check_chaos() -> None:
    switch = ChaosSwitch()
    chaos = Chaos("typing", ChaosConfig(fault_rate=0.1, fault=ConnectionError, enabled=switch, seed=1))
    a: str = await chaos.call(fetch, 1, verbose=True)
    await chaos.call(fetch, "1")  # type: ignore[arg-type]
    b: str = chaos.call_sync(fetch_sync, 2)
    c: str = await chaos.protect(fetch)(3)
    ChaosConfig(fault_rate=0.1, fault=lambda: TimeoutError("x"), enabled=only_first_attempts)
    ChaosConfig(fault_rate=0.1, fault=ConnectionError("reset"), latency=1.5, outcome={"status": 503})
    ChaosConfig(fault_rate=0.1, fault="boom")  # type: ignore[arg-type]
    ChaosConfig(enabled="yes")  # type: ignore[arg-type]
    chaos.enabled = False
    chaos.enable()
    switch.disable()
    switch.on = True
    switch.on = "no"  # type: ignore[assignment]
    faults: int = chaos.get_stats()["faults"]
    ResilienceConfig(chaos=ChaosConfig(latency_rate=0.5, latency=2.0))
    print(a, b, c, faults, switch.on)


async def check_hedging() -> None:
    hedging = Hedging("typing", HedgingConfig(delay=0.05, max_attempts=3, actions=(fetch,)))
    a: str = await hedging.call(fetch, 1, verbose=True)
    await hedging.call(fetch, "1")  # type: ignore[arg-type]
    b: str = await hedging.protect(fetch)(2)
    hedging.protect(fetch_sync)  # type: ignore[arg-type]
    HedgingConfig(mode="race")  # type: ignore[arg-type]
    HedgingConfig(delay=PercentileDelay(0.05, percentile=99.0))
    ResilienceConfig(hedging=HedgingConfig(mode="parallel"))
    wins: int = hedging.get_stats()["hedge_wins"]
    print(a, b, wins)


def check_config_file() -> None:
    policies: config.ConfigFile = config.load("resilience.yaml")
    again = config.load(Path("resilience.toml"), format="toml", previous=policies)
    text = config.loads("policies: {}", "yaml", source="inline")
    config.loads("policies: {}", "ini")  # type: ignore[arg-type]
    payments: ResilienceConfig = policies["payments"]
    names: list[str] = list(again)
    budget: RetryBudget = text.retry_budgets["shared"]
    text.source = "other.yaml"  # type: ignore[assignment]
    started: config.ConfigFile | None = config.from_env({config.CONFIG_ENV: "resilience.yaml"})
    seconds: float = config.parse_duration("250ms")
    schema: dict[str, object] = config.json_schema()
    try:
        config.load("bad.yaml")
    except config.ConfigError as error:
        where: tuple[str, int | None] = (error.path, error.line)
        print(where)
    print(payments, names, budget, started, seconds, schema)


async def check_named_policies() -> None:
    manager = get_resilience_manager()
    policy: PolicyHandle = manager.policy("typing-policy", ResilienceConfig(), max_keys=10, idle_ttl=60.0)
    view: KeyedPolicyView = policy.for_key("tenant-a")
    a: str = await view.execute(fetch, 1, verbose=True)
    await view.execute(fetch, "1")  # type: ignore[arg-type]
    b: str = view.execute_sync(fetch_sync, 2)
    c: str = await policy.execute(fetch, 3)
    d: str = await view.protect(fetch)(4)
    e: str = policy.protect(fetch_sync)(5)
    handle: PolicyHandle = manager.reconfigure("typing-policy", lambda: ResilienceConfig(timeout=2.0))
    manager.reconfigure("typing-policy", {"timeout": 2.0})  # type: ignore[arg-type]
    handles: dict[str, PolicyHandle] = manager.reconfigure_many({"typing-policy": ResilienceConfig()})
    generation: int = handle.generation
    manager.watch(Path("resilience.yaml"), interval=timedelta(seconds=5)).stop()
    watch = manager.watch("resilience.yaml")
    watch.interval = timedelta(seconds=10)
    watch.interval = 10.0
    assert_type(watch.interval, float)
    watch.interval = "10s"  # type: ignore[assignment]
    manager.watch("resilience.yaml", interval="5s")  # type: ignore[arg-type]
    manager.watch("policies.conf", format="yaml").stop()
    manager.watch("policies.conf", format="ini")  # type: ignore[arg-type]
    (await manager.watch_async(Path("resilience.yaml"), interval=timedelta(seconds=5))).stop()
    await manager.watch_async("resilience.yaml", interval="5s")  # type: ignore[arg-type]
    policy.get_stats()["evicted"]  # type: ignore[typeddict-item]
    stats = policy.get_stats()
    if (retry := stats["retry"]) is not None:
        assert_type(retry["retries_denied"], int)
    if (deadline := stats["timeout"]) is not None:
        assert_type(deadline["attempt_timeouts"], int)
    if (hedges := stats["hedging"]) is not None:
        assert_type(hedges["hedge_wins"], int)
    if (used := stats["fallback"]) is not None:
        assert_type(used["fallbacks_used"], int)
    if (injected := stats["chaos"]) is not None:
        assert_type(injected["faults"], int)
    stats["retry"]["retries"]  # type: ignore[index]
    print(a, b, c, d, e, generation, handles, policy.get_stats()["executions"])


def check_telemetry_switches() -> None:
    listener: OtelListener = instrument(in_process_histograms=True, record_duration=True)
    instrument(in_process_histograms="yes")  # type: ignore[arg-type]
    histogram = InProcessHistogram((0.1, 1.0), limit=100)
    histogram.record(0.25, {"resilience.policy": "p"})
    points: list[Observation] = histogram.buckets() + histogram.sums() + histogram.counts()
    print(listener, points)


def check_durations_and_lists() -> None:
    """A duration field takes a timedelta (and holds seconds); a list stands for a tuple."""
    td = timedelta(seconds=2)
    breaker = CircuitBreakerConfig(
        timeout=td,
        sliding_window=TimeWindow(td),
        slow_call_duration=td,
        max_half_open_wait=td,
        break_duration=lambda openings: td * openings,
    )
    seconds: float = breaker.timeout
    total: float | None = ResilienceConfig(
        timeout=td, extra_strategies=[ExtraStrategy(Audit, rank=0)]
    ).timeout
    RetryPolicy(initial_delay=td, max_delay=td, attempt_timeout=td)
    BulkheadConfig(timeout=td)
    burst: int = RateLimiterConfig(rate=1.0, burst=None, max_wait=td).burst
    ChaosConfig(latency_rate=0.1, latency=td)
    TimeoutConfig(timeout=td)
    RecoveryAction(strategy=RecoveryStrategy.RETRY, delay=td)
    RecoveryAction(strategy=RecoveryStrategy.ISOLATE, isolate_duration=td)
    RecoveryConfig(pattern_window=td)
    AlertConfig(bulkhead_cooldown=td, escalation_cooldown=td)
    HedgingConfig(delay=td, actions=[fetch])
    RetryBudget(window=td)
    PercentileDelay(td, minimum=td)
    ErrorRecoverySystem(pattern_window=td)
    ResilienceConfig(timeout="2s")  # type: ignore[arg-type]
    RetryPolicy(multiplier=td)  # type: ignore[arg-type]
    RateLimiterConfig(burst=5)  # type: ignore[call-arg]
    print(seconds, total, burst)


def check_read_only_attributes(breaker: CircuitBreaker, handle: PolicyHandle) -> None:
    """What reads as an attribute and cannot be set at run time cannot be set for type checkers."""
    name: str = breaker.name
    breaker.name = "other"  # type: ignore[misc]
    handle.name = "other"  # type: ignore[misc]
    handle.generation = 2  # type: ignore[assignment]
    handle.config = ResilienceConfig()  # type: ignore[misc]
    delay = PercentileDelay(0.05)
    assert_type(delay.percentile + delay.initial + delay.minimum, float)
    assert_type(delay.min_samples + delay.samples, int)
    delay.percentile = 99.0  # type: ignore[assignment]
    delay.initial = 0.1  # type: ignore[assignment]
    manager = ResilienceManager()
    assert_type(manager.recovery_system, ErrorRecoverySystem)
    manager.recovery_system = ErrorRecoverySystem()  # type: ignore[assignment]
    assert_type(manager.recovery_system.stats.patterns_detected, int)
    manager.recovery_system.stats = None  # type: ignore[assignment]
    print(name)


class Fetcher:
    async def __call__(self, user_id: int) -> str:
        return str(user_id)


async def check_callable_objects() -> None:
    """An object with an async __call__ is decorated as async (at run time too)."""
    a: str = await CircuitBreaker("typing").protect(Fetcher())(1)
    b: str = await resilient()(Fetcher())(2)
    c: str = await retry()(Fetcher())(3)
    print(a, b, c)


def check_http_clients() -> None:
    """The HTTP clients take a config or a manager's policy handle."""
    handle = get_resilience_manager().policy("typing-http", ResilienceConfig())
    ResilientTransport(handle)
    AsyncResilientTransport(ResilienceConfig(timeout=timedelta(seconds=5)))
    ResilientTransport(RetryPolicy())  # type: ignore[arg-type]


class Service:
    """Methods decorated by each form keep their types, bound or not."""

    breaker = CircuitBreaker("typing-methods")

    @breaker.protect
    async def fetch(self, user_id: int) -> str:
        return str(user_id)

    @resilient()
    def fetch_sync(self, user_id: int) -> str:
        return str(user_id)

    @staticmethod
    @retry()
    def parse(text: str) -> int:
        return int(text)

    @classmethod
    @Bulkhead("typing-methods").protect
    async def build(cls, size: int) -> Service:
        return cls()


async def check_every_protect_and_block() -> None:
    """Every pattern's ``protect`` keeps an async function async and typed; the block forms type-check."""
    clock = FakeClock(0.0)
    fallback = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="x"))
    a: str = await Bulkhead("typing").protect(fetch)(1)
    b: str = await TimeoutHandler(timeout=1.0).protect(fetch)(2)
    c: str = await fallback.protect(fetch)(3)
    d: str = await ErrorRecoverySystem(clock=clock).protect(fetch)(4)
    e: str = Bulkhead("typing").protect(fetch_sync)(5)
    service = Service()
    f: str = await service.fetch(6) + service.fetch_sync(7)
    g: int = Service.parse("8")
    built: Service = await Service.build(9)
    await service.fetch("6")  # type: ignore[arg-type]
    Service.parse(8)  # type: ignore[arg-type]
    with CircuitBreaker("typing").guard():
        pass
    async with Bulkhead("typing").slot():
        pass
    async with RateLimiter("typing", RateLimiterConfig(rate=1.0)).guard():
        pass
    print(a, b, c, d, e, f, g, built, clock.now())


def check_fresh_defaults() -> None:
    """``fresh_defaults`` yields the block's process-wide manager; its clock is a ``Clock``."""
    with fresh_defaults(clock=FakeClock()) as manager:
        fresh: ResilienceManager = manager
        print(fresh)
    with fresh_defaults(clock=1.0):  # type: ignore[arg-type]
        pass


async def check_every_decorator_keeps_the_parameters() -> None:
    """Each decorator keeps a keyword-only parameter's type, and an async function's ``Coroutine``."""
    handle = get_resilience_manager().policy("typing-parameters", ResilienceConfig())
    forms = (
        resilient()(fetch),
        retry()(fetch),
        Retry("typing").protect(fetch),
        handle.protect(fetch),
        handle.for_key("k").protect(fetch),
        Hedging("typing", HedgingConfig(delay=0.05)).protect(fetch),
    )
    for protected in forms:
        pending: Coroutine[Any, Any, str] = protected(1, verbose=True)
        value: str = await pending
        print(value)
    await resilient()(fetch)(1, verbose="yes")  # type: ignore[arg-type]
    await handle.for_key("k").protect(fetch)(1, True)  # type: ignore[call-arg]
    handle.protect(fetch_sync)("5")  # type: ignore[arg-type]


class DictCache:
    """A cache service as SPEC §1.3 uses one: ``get(key)`` and ``set(key, value)``."""

    def get(self, key: str) -> object:
        return None

    def set(self, key: str, value: object) -> None:
        pass


async def analyze(content: str) -> dict[str, float]:
    return {"similarity": 0.9}


async def check_spec_section_1() -> None:
    """SPEC §1, each example as written there, with the types its results keep."""
    circuit_breaker = CircuitBreaker(
        "ml_service",
        CircuitBreakerConfig(failure_threshold=5, success_threshold=2, timeout=60.0),
    )
    a: dict[str, float] = await circuit_breaker.call(analyze, "content")
    stats = circuit_breaker.get_stats()
    state: str = stats["state"]
    counts: int = (
        stats["failure_count"] + stats["total_requests"] + stats["total_failures"] + stats["total_rejected"]
    )
    stats["failures"]  # type: ignore[typeddict-item]
    CircuitBreakerConfig(failure_treshold=5)  # type: ignore[call-arg]
    CircuitBreaker(CircuitBreakerConfig())  # type: ignore[arg-type]
    policy = RetryPolicy(
        max_attempts=3,
        strategy=RetryStrategy.EXPONENTIAL,
        initial_delay=1.0,
        multiplier=2.0,
        max_delay=60.0,
    )
    b: str = await retry_async(
        fetch,
        1,
        policy=policy,
        on_retry=lambda attempt, error: print(f"Retry {attempt}: {error}"),
    )
    fallback = FallbackConfig(
        strategy=FallbackStrategy.DEFAULT_VALUE,
        default_value={"similarity": 0.0, "quality": 0.0},
    )
    handler = FallbackHandler(fallback)
    c: dict[str, float] = await handler.execute_with_fallback(analyze, "data")
    FallbackConfig(
        strategy=FallbackStrategy.CACHED_VALUE, cache_key="last_analysis", cache_service=DictCache()
    )
    FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key=1)  # type: ignore[arg-type]
    timeout_handler = TimeoutHandler(timeout=30.0)
    d: str = await timeout_handler.with_timeout(fetch, 1)
    bulkhead = Bulkhead("analysis_pool", BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0))
    e: dict[str, float] = await bulkhead.execute(analyze, "doc")
    BulkheadConfig(max_concurrent=10, max_queue=100)  # type: ignore[call-arg]
    recovery_system = ErrorRecoverySystem()
    recovery_system.register_recovery_rule(
        ConnectionError,
        RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=3, delay=5.0),
    )
    recovery_system.register_recovery_rule(ConnectionError, RecoveryStrategy.RETRY)  # type: ignore[arg-type]
    context = RecoveryContext(operation=fetch, args=(1,), operation_name="fetch")
    f: object = await recovery_system.recover_from_error(ConnectionError("reset"), context)
    resilience_config = ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=60.0),
        retry_policy=RetryPolicy(max_attempts=3, strategy=RetryStrategy.EXPONENTIAL),
        fallback_config=FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value={"status": "error"}
        ),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=10),
        enable_recovery=True,
    )
    manager = get_resilience_manager()
    g: dict[str, float] = await manager.execute_with_resilience(analyze, resilience_config, "content")
    statistics: dict[str, Any] = manager.get_resilience_statistics()
    try:
        await circuit_breaker.call(analyze, "content")
    except CircuitOpenError as rejected:
        breaker_name: str = rejected.name
        retry_after: float = rejected.retry_after
        print(breaker_name, retry_after)
    except BulkheadFullError as full:
        limits: tuple[int, int] = (full.max_concurrent, full.max_waiting)
        print(limits)
    except OperationTimeoutError as timed_out:
        limit: float = timed_out.timeout
        print(limit)
    print(a, state, counts, b, c, d, e, f, g, statistics)


async def check_spec_section_5() -> None:
    """SPEC §5, the names promised beyond the seed, with the keyword arguments it lists."""
    breaker = CircuitBreaker(
        "payments",
        CircuitBreakerConfig(
            sliding_window=CountWindow(size=100),
            failure_rate_threshold=0.5,
            minimum_calls=10,
            slow_call_duration=2.0,
            slow_call_rate_threshold=0.8,
            record_result=lambda response: response is None,
            break_duration=lambda openings: 2.0**openings,
            max_half_open_wait=30.0,
        ),
    )
    CircuitBreakerConfig(sliding_window=TimeWindow(seconds=60.0, buckets=10))
    CircuitBreakerConfig(sliding_window=None)
    windowed = CircuitBreakerConfig(  # None: the window's default (refused, when set, without a window)
        sliding_window=CountWindow(),
        failure_rate_threshold=None,
        minimum_calls=None,
        slow_call_rate_threshold=None,
    )
    window_settings: tuple[float | None, int | None, float | None] = (
        windowed.failure_rate_threshold,
        windowed.minimum_calls,
        windowed.slow_call_rate_threshold,
    )
    CircuitBreakerConfig(sliding_window=CountWindow(), minimum_calls=2.5)  # type: ignore[arg-type]
    CircuitBreakerConfig(sliding_window=100)  # type: ignore[arg-type]
    states: tuple[CircuitState, CircuitState] = (CircuitState.DISABLED, CircuitState.METRICS_ONLY)
    breaker.disable()
    breaker.metrics_only()
    breaker.force_closed()
    unsubscribe: Callable[[], None] = breaker.on_state_change(lambda change: print(change.old, change.new))
    unsubscribe()
    RateLimiter(
        "search",
        RateLimiterConfig(rate=100.0, burst=10, algorithm="sliding_window", max_wait=0.5, max_waiting=50),
    )
    budget = RetryBudget(ratio=0.1, min_retries_per_second=10.0, window=10.0)
    RetryPolicy(budget=budget, delay_from=lambda outcome: None, jitter=Jitter.DECORRELATED)
    RetryPolicy(budget=0.1)  # type: ignore[arg-type]
    ResilienceConfig(rate_limiter=RateLimiterConfig(rate=10.0))
    Hedging("lookup", HedgingConfig(delay=0.05, max_attempts=2, mode="latency", actions=(fetch,)))
    ChaosConfig(
        fault_rate=0.1,
        fault=ConnectionError,
        latency_rate=0.1,
        latency=0.5,
        outcome_rate=0.1,
        outcome={"status": 503},
        enabled=True,
        seed=7,
    )
    ResilienceConfig(hedging=HedgingConfig(delay=0.05), chaos=ChaosConfig(fault_rate=0.1))
    manager = get_resilience_manager()
    handle: PolicyHandle = manager.policy("payments", ResilienceConfig(timeout=2.0))
    view: KeyedPolicyView = handle.for_key("tenant-a")
    manager.reconfigure("payments", ResilienceConfig(timeout=3.0))
    policies: config.ConfigFile = config.load("resilience.yaml")
    ResilientTransport(handle)
    AsyncResilientTransport(ResilienceConfig(name="inventory"))
    ResilientAdapter(handle)
    store = RedisStore.from_url("redis://localhost:6379/0", namespace="checkout")
    CircuitBreakerConfig(store=store)
    RateLimiterConfig(rate=100.0, store=store)
    RedisStore.from_url("redis://localhost:6379/0", "checkout")  # type: ignore[call-arg]
    assert_type(store.wait_synced(2.0), bool)
    store.wait_synced("2")  # type: ignore[arg-type]
    print(states, view, policies, window_settings)


class LookupEvent(EventKind):
    """A pattern's own kind of event, declared outside the engine."""

    LOOKUP = "typing_lookup"


@dataclass(slots=True)
class Lookup:
    ATTRIBUTES: ClassVar[tuple[str, ...]] = ("result",)

    result: str


class LookupListener:
    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        if event is LookupEvent.LOOKUP and isinstance(args, Lookup):
            print(args.result)


def check_a_pattern_s_own_events() -> None:
    telemetry = StrategyTelemetry.of("lookup", "typing")
    telemetry.report(LookupEvent.LOOKUP, Lookup("hit"))
    telemetry.report(Event.CALL_REJECTED, CallRejected("rate_limited"))
    telemetry.report(LookupEvent.LOOKUP, "hit")  # type: ignore[arg-type]
    listener: TelemetryListener = LookupListener()
    recorder = EventRecorder()
    found: list[EventArgs] = recorder.of(LookupEvent.LOOKUP)
    print(listener, found)


def log_event(source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
    print(source, event, args)


class AttemptTimer:
    """An execution listener written before hedging: its ``start_attempt`` takes no ``attempt_type``."""

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        return None

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None
    ) -> None:
        pass

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None) -> None:
        pass


def check_what_the_hub_listens_with() -> None:
    """The hub takes a listener of either protocol; a function in place of one is an error, as at run time."""
    HUB.add_listener(LookupListener(), weak=True)
    HUB.add_listener(AttemptTimer())
    HUB.replace_listener(None, EventRecorder())
    HUB.add_listener(log_event)  # type: ignore[arg-type]
    HUB.replace_listener(None, log_event)  # type: ignore[arg-type]


T = TypeVar("T")


def identity(value: T) -> T:
    return value


def build(kind: type[T]) -> T:
    return kind()


async def identity_async(value: T) -> T:
    return value


async def check_generic_functions() -> None:
    """A generic function stays generic through every decorator; a sync one is not typed async."""
    handle = get_resilience_manager().policy("typing-generic", ResilienceConfig())
    assert_type(CircuitBreaker("typing").protect(identity)("s"), str)
    assert_type(Bulkhead("typing").protect(build)(int), int)
    assert_type(retry()(build)(int), int)
    assert_type(Retry("typing").protect(identity)(1.5), float)
    assert_type(RateLimiter("typing", RateLimiterConfig(rate=1.0)).protect(build)(bytes), bytes)
    assert_type(TimeoutHandler(timeout=1.0).protect(identity)(1), int)
    assert_type(resilient()(build)(int), int)
    assert_type(handle.protect(build)(int), int)
    assert_type(await CircuitBreaker("typing").protect(identity_async)("s"), str)
    assert_type(await retry()(identity_async)(1), int)
    assert_type(await Hedging("typing", HedgingConfig(delay=0.05)).protect(identity_async)(1), int)
    CircuitBreaker("typing").protect(build)("int")  # type: ignore[arg-type]


def check_what_the_constructors_take_at_run_time() -> None:
    """What a constructor accepts at run time (and documents) type-checks; what it refuses does not."""
    RetryPolicy(strategy="exponential", jitter="decorrelated")
    RetryPolicy(strategy="fixd")  # type: ignore[arg-type]
    RetryPolicy(retry_on=[ConnectionError, TimeoutError], no_retry_on={ValueError})
    CircuitBreakerConfig(record_exceptions=[ConnectionError], ignore_exceptions=frozenset({ValueError}))
    FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, handle_exceptions=[ConnectionError])
    HedgingConfig(delay=lambda: timedelta(milliseconds=50), hedge_on=[ConnectionError])
    RetryPolicy(retry_on=["ConnectionError"])  # type: ignore[list-item]
    RecoveryContext(operation=fetch, args=[1])
    TimeoutConfig(scope="attempt")
    TimeoutHandler(timeout=1.0, scope="total")
    TimeoutConfig(scope="overall")  # type: ignore[arg-type]
    TimeoutHandler(timeout=1.0, scope="each")  # type: ignore[arg-type]
    RedisStore.from_url("redis://localhost:6379/0", timeout=timedelta(milliseconds=250)).close()
    multiple = FallbackStrategy.MULTIPLE_ATTEMPTS
    FallbackConfig(strategy=multiple, fallback_functions=[fetch, fetch_sync])
    FallbackConfig(strategy=multiple, fallback_functions=deque([fetch]))  # type: ignore[arg-type]


def check_rejections_are_made_by_position() -> None:
    """A rejection's constructor is the builtin one: its arguments by position, as at run time."""
    CircuitOpenError("payments", "open", 1.5)
    RateLimitedError("search", 0.5, "tenant-a")
    BulkheadFullError("pool", 10, 100)
    CircuitOpenError(name="payments", state="open", retry_after=1.5)  # type: ignore[call-arg]
    RateLimitedError("search", retry_after=0.5)  # type: ignore[call-arg]
    BulkheadFullError("pool", max_concurrent=10, max_waiting=100)  # type: ignore[call-arg]


def check_the_package_s_own_attributes() -> None:
    """``__version__`` is a ``str``; a name the package lacks is an error, not ``Any``."""
    assert_type(otel_resilience.__version__, str)
    otel_resilience.CircuitBreakr  # type: ignore[attr-defined]  # noqa: B018
    otel_resilience.retry_asnyc(fetch, 1)  # type: ignore[attr-defined]


def check_what_is_required_and_what_counts_are() -> None:
    """A config with no default is required for type checkers too; counts are typed as they are."""
    Hedging("typing")  # type: ignore[call-arg]
    RateLimiter("typing")  # type: ignore[call-arg]
    ResilientAdapter(RetryPolicy())  # type: ignore[arg-type]
    ResilientAdapter(ResilienceConfig(), manager="default")  # type: ignore[arg-type]
    ResilientAdapter(ResilienceConfig(), pool_maxsize=20)
    ResilientMiddleware(ResilienceConfig(), optoins=None)  # type: ignore[arg-type]
    add_exception_handlers(Starlette())
    add_exception_handlers("app")  # type: ignore[arg-type]
    budget = RetryBudget().get_stats()
    assert_type(budget["denied"], int)


class CountRuns(Step):
    """A step of one's own, as the README writes one, whose successes need only a count."""

    kind = "count_runs"

    def __init__(self) -> None:
        super().__init__()
        self.successes = itertools.count()

    def admit(self, ctx: ExecutionContext) -> Counted:
        return Counted(self.successes, ctx.attempt)


def check_a_step_of_one_s_own() -> None:
    """``Counted(count, of)`` takes any counter bumped with ``next()``, as the README says."""
    ResilienceConfig(extra_strategies=[ExtraStrategy(lambda policy: CountRuns(), inside="retry")])
    Counted(iter("abc"), None)
    Counted(3, None)  # type: ignore[arg-type]


def check_http_options() -> None:
    """``HttpOptions`` takes a set, a list or a tuple of statuses or methods, as at run time."""
    HttpOptions(failure_statuses={500, 502, 503}, retry_methods=["GET", "PUT"], retry_after_statuses=(503,))
    HttpOptions(failure_statuses=frozenset({503}), retry_after_statuses=None)
    statuses: frozenset[int] = HttpOptions().failure_statuses
    HttpOptions(failure_statuses="503")  # type: ignore[arg-type]
    HttpOptions(retry_methods={1})  # type: ignore[arg-type]
    HttpOptions(failure_statuses={503}).failure_statuses = frozenset()  # type: ignore[misc]
    assert_type(DEFAULT_FAILURE_STATUSES - {429}, frozenset[int])
    assert_type(RETRY_AFTER_STATUSES | {502}, frozenset[int])
    print(statuses)


def check_adapter_options() -> None:
    """``ResilientAdapter``'s own keyword arguments are ``HTTPAdapter``'s, each typed (a typo is an error)."""
    ResilientAdapter(ResilienceConfig(), pool_connections=4, pool_maxsize=20, pool_block=True, max_retries=0)
    ResilientAdapter(ResilienceConfig(), pool_maxsise=20)  # type: ignore[call-arg]
    ResilientAdapter(ResilienceConfig(), pool_maxsize="20")  # type: ignore[arg-type]
    ResilientAdapter(ResilienceConfig(), max_retries=3)  # type: ignore[arg-type]


def check_a_rejection_s_fields_are_read_only() -> None:
    """A rejection's fields are its arguments: assigning one is an error, as at run time."""
    limited = RateLimitedError("search", 0.5)
    assert_type(limited.retry_after, float)
    limited.retry_after = 1.0  # type: ignore[assignment]
    opened = CircuitOpenError("payments", "open", 1.5)
    opened.state = "closed"  # type: ignore[assignment]
    opened.key = "tenant-a"  # type: ignore[assignment]
    BulkheadFullError("pool", 10, 100).max_waiting = 0  # type: ignore[assignment]


async def check_what_recovery_returns() -> None:
    """A recovered result is an ``object`` (a re-run's or a fallback's); the counts are typed."""
    recovery = ErrorRecoverySystem()
    context = RecoveryContext(operation=fetch, args=(1,))
    assert_type(await recovery.recover_from_error(ConnectionError("reset"), context), object)
    assert_type(recovery.recover_from_error_sync(ConnectionError("reset"), {"operation": fetch_sync}), object)
    stats = recovery.get_stats()
    assert_type(stats["recovery_rate"], float)
    assert_type(stats["attempts"] + stats["escalations"], int)
    assert_type(stats["by_strategy"]["retry"]["failed"], int)
    stats["recoveries"]  # type: ignore[typeddict-item]


def check_alert_counts_are_typed() -> None:
    """An alert system's counts are typed as they are: no ``Any`` to read them through."""
    stats = otel_resilience.default_alert_system().get_stats()
    assert_type(stats["total"] + stats["callback_errors"] + stats["subscribers"], int)
    assert_type(stats["by_kind"], dict[str, int])
    stats["alerts"]  # type: ignore[typeddict-item]
    assert_type(otel_resilience.AlertSystem().get_stats()["total"], int)


async def check_deadline_scopes() -> None:
    """``fail_after`` and ``move_on_after`` are async scopes only; what is left of a deadline is a float."""
    async with fail_after(1.0) as scope:
        assert_type(time_left(), float)
    assert_type(scope.expired, bool)
    async with move_on_after(timedelta(milliseconds=500), clock=FakeClock(), operation="refresh") as moved:
        assert_type(current_deadline(), float | None)
    assert_type(moved.expired, bool)
    with fail_after(1.0):  # type: ignore[attr-defined]
        pass
    fail_after("1s")  # type: ignore[arg-type]
    move_on_after(1.0, operation=None)  # type: ignore[arg-type]


def check_alerts_in_process() -> None:
    """``subscribe`` takes a sync callback of an ``Alert``, whose fields are typed; it returns the remover."""
    kinds: list[AlertKind] = []

    def on_alert(alert: Alert) -> None:
        kinds.append(alert.kind)
        assert_type(alert.severity, AlertSeverity)
        assert_type(alert.subject + alert.summary, str)
        assert_type(alert.timestamp, float)
        assert_type(alert.attributes["resilience.name"], str)

    unsubscribe = subscribe(on_alert)
    assert_type(unsubscribe(), None)
    subscribe(lambda alert: alert.kind is AlertKind.CIRCUIT_OPEN and alert.severity is AlertSeverity.CRITICAL)
    subscribe(lambda alert, extra: None)  # type: ignore[arg-type,misc]
    subscribe(1)  # type: ignore[arg-type]


def check_the_remaining_errors_and_values() -> None:
    """The errors not checked above keep their fields' types; the stats classes and outcomes are exported."""
    queued = BulkheadTimeoutError("pool", 10, 100, 2.5)
    assert_type(queued.timeout, float)
    assert_type(queued.max_concurrent + queued.max_waiting, int)
    full: BulkheadFullError = queued
    escalated = RecoveryEscalatedError("ConnectionError", "payments")
    assert_type(escalated.error_type, str)
    assert_type(escalated.operation, str | None)
    unaccepted = UnacceptedResultError("payments", {"status": "error"})
    assert_type(unaccepted.result, object)
    errors: tuple[ResilienceError, ...] = (full, escalated, unaccepted, OperationTimeoutError("op", 1.0))
    assert_type(CircuitBreaker("typing-stats").stats, CircuitBreakerStats)
    assert_type(Bulkhead("typing-stats").stats, BulkheadStats)
    outcome: Outcome = Outcome.SUCCESS
    fallback_default: object = MISSING
    RecoveryEscalatedError(ConnectionError)  # type: ignore[arg-type]
    print(errors, outcome, fallback_default)


async def check_build_pipeline() -> None:
    """``build_pipeline`` takes its links by keyword (``None`` for none) and returns a pipeline of both drivers."""
    pipeline = build_pipeline(
        "typing-pipeline", ResilienceConfig(timeout=1.0), breaker=None, bulkhead=None, recovery=None
    )
    assert_type(await pipeline.execute(fetch, 1), str)
    assert_type(pipeline.execute_sync(fetch_sync, 1), str)
    build_pipeline("typing-pipeline", ResilienceConfig())  # type: ignore[call-arg]


def load_json(text: str) -> Any:
    return json.loads(text)


def always_fails() -> NoReturn:
    raise ConnectionError


async def check_sync_verbs_refuse_coroutine_functions() -> None:
    """A sync verb given a coroutine function raises ``TypeError``: using or awaiting its result is an error."""
    handle = get_resilience_manager().policy("typing-sync-verbs", ResilienceConfig())
    pipeline = build_pipeline(
        "typing-sync-verbs", ResilienceConfig(), breaker=None, bulkhead=None, recovery=None
    )
    fallback = FallbackHandler(FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="x"))
    breaker = CircuitBreaker("typing")
    breaker.call_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await breaker.call_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await CircuitBreaker.call_sync(breaker, fetch, 1)  # type: ignore[unused-coroutine]
    await Bulkhead("typing").execute_sync(fetch, 1, verbose=True)  # type: ignore[unused-coroutine]
    a: str = await Retry("typing").execute_sync(fetch, 1)  # type: ignore[assignment]
    await RateLimiter("typing", RateLimiterConfig(rate=1.0)).call_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await Chaos("typing").call_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await TimeoutHandler(timeout=1.0).with_timeout_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await fallback.execute_with_fallback_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await ErrorRecoverySystem().execute_sync(fetch, 1)  # type: ignore[unused-coroutine]
    b: str = await handle.execute_sync(fetch, 1)  # type: ignore[assignment]
    await handle.for_key("k").execute_sync(fetch, 1)  # type: ignore[unused-coroutine]
    await get_resilience_manager().execute_with_resilience_sync(fetch, ResilienceConfig(), 1)  # type: ignore[unused-coroutine]
    await pipeline.execute_sync(fetch, 1)  # type: ignore[unused-coroutine]
    c: str = await retry_sync(fetch, 1, policy=RetryPolicy())  # type: ignore[assignment]
    await retry_sync(Fetcher(), 1)  # type: ignore[unused-coroutine]
    assert_type(breaker.call_sync(load_json, "1"), Any)
    assert_type(handle.execute_sync(identity, 1), int)
    assert_type(retry_sync(load_json, "1"), Any)
    assert_type(pipeline.execute_sync(build, bytes), bytes)
    print(a, b, c)
    breaker.call_sync(always_fails)  # last: it never returns, and is no coroutine function
