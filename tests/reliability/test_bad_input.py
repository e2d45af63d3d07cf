"""Bad input across every pattern: each one is refused at once, naming the field; nothing is clamped.

Wrong types, NaN, infinities, negatives, zeros, contradictions between fields, non-callables,
and a function given to the wrong driver (a plain function to the async API, a coroutine
function to the sync API). The driver mix-up is the adversarial one: the function must not be
retried, counted as a breaker failure, recovered or silently answered by a fallback.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from otel_resilience import (
    AlertConfig,
    Bulkhead,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryPolicy,
    RetryStrategy,
    TimeoutConfig,
    TimeoutHandler,
    retry_async,
    retry_sync,
)

NAN = float("nan")
INF = float("inf")
OVER = r" must be <= \d+ seconds \(threading\.TIMEOUT_MAX\), got "
"""The rule a duration beyond the platform's longest wait breaks."""
UNPRINTABLE = r" must be .*, got <.*Unprintable object at 0x[0-9a-f]+> \(its repr raised\)"
"""How a bad value whose repr raises is shown."""


class Unprintable:
    """A value whose ``repr`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def fallback_default(**kwargs: Any) -> FallbackConfig:
    return FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, **kwargs)


# (id, thunk, expected type, regex naming the field)
CONFIGS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "cb-threshold-zero",
        lambda: CircuitBreakerConfig(failure_threshold=0),
        ValueError,
        r"CircuitBreakerConfig\.failure_threshold must be >= 1, got 0",
    ),
    (
        "cb-threshold-float",
        lambda: CircuitBreakerConfig(failure_threshold=2.5),
        TypeError,
        r"CircuitBreakerConfig\.failure_threshold .*2\.5",
    ),
    (
        "cb-threshold-bool",
        lambda: CircuitBreakerConfig(failure_threshold=True),
        TypeError,
        r"CircuitBreakerConfig\.failure_threshold",
    ),
    (
        "cb-success-negative",
        lambda: CircuitBreakerConfig(success_threshold=-1),
        ValueError,
        r"CircuitBreakerConfig\.success_threshold .*-1",
    ),
    (
        "cb-timeout-nan",
        lambda: CircuitBreakerConfig(timeout=NAN),
        ValueError,
        r"CircuitBreakerConfig\.timeout .*nan",
    ),
    (
        "cb-timeout-inf",
        lambda: CircuitBreakerConfig(timeout=INF),
        ValueError,
        r"CircuitBreakerConfig\.timeout .*inf",
    ),
    (
        "cb-timeout-zero",
        lambda: CircuitBreakerConfig(timeout=0),
        ValueError,
        r"CircuitBreakerConfig\.timeout must be > 0",
    ),
    (
        "cb-timeout-str",
        lambda: CircuitBreakerConfig(timeout="60"),
        TypeError,
        r"CircuitBreakerConfig\.timeout",
    ),
    (
        "cb-timeout-negative-timedelta",
        lambda: CircuitBreakerConfig(timeout=timedelta(seconds=-1)),
        ValueError,
        r"CircuitBreakerConfig\.timeout",
    ),
    (
        "cb-half-open-zero",
        lambda: CircuitBreakerConfig(half_open_max_calls=0),
        ValueError,
        r"CircuitBreakerConfig\.half_open_max_calls",
    ),
    (
        "cb-record-base-exception",
        lambda: CircuitBreakerConfig(record_exceptions=(KeyboardInterrupt,)),
        ValueError,
        r"CircuitBreakerConfig\.record_exceptions",
    ),
    (
        "cb-record-str",
        lambda: CircuitBreakerConfig(record_exceptions="ValueError"),
        TypeError,
        r"CircuitBreakerConfig\.record_exceptions",
    ),
    (
        "cb-ignore-contradicts-record",
        lambda: CircuitBreakerConfig(record_exceptions=(ValueError,), ignore_exceptions=(ValueError,)),
        ValueError,
        r"CircuitBreakerConfig\.ignore_exceptions must be disjoint",
    ),
    (
        "bh-concurrent-zero",
        lambda: BulkheadConfig(max_concurrent=0),
        ValueError,
        r"BulkheadConfig\.max_concurrent must be >= 1, got 0",
    ),
    (
        "bh-concurrent-str",
        lambda: BulkheadConfig(max_concurrent="10"),
        TypeError,
        r"BulkheadConfig\.max_concurrent",
    ),
    (
        "bh-waiting-negative",
        lambda: BulkheadConfig(max_waiting=-1),
        ValueError,
        r"BulkheadConfig\.max_waiting must be >= 0, got -1",
    ),
    ("bh-timeout-nan", lambda: BulkheadConfig(timeout=NAN), ValueError, r"BulkheadConfig\.timeout"),
    ("bh-timeout-negative", lambda: BulkheadConfig(timeout=-5), ValueError, r"BulkheadConfig\.timeout .*-5"),
    (
        "retry-attempts-zero",
        lambda: RetryPolicy(max_attempts=0),
        ValueError,
        r"RetryPolicy\.max_attempts must be >= 1, got 0",
    ),
    (
        "retry-delay-negative",
        lambda: RetryPolicy(initial_delay=-1),
        ValueError,
        r"RetryPolicy\.initial_delay .*-1",
    ),
    (
        "retry-max-below-initial",
        lambda: RetryPolicy(initial_delay=10.0, max_delay=1.0),
        ValueError,
        r"RetryPolicy\.max_delay must be >= initial_delay",
    ),
    (
        "retry-multiplier-shrinks",
        lambda: RetryPolicy(strategy=RetryStrategy.EXPONENTIAL, multiplier=0.5),
        ValueError,
        r"RetryPolicy\.multiplier .*EXPONENTIAL",
    ),
    (
        "retry-jitter-ratio-above-one",
        lambda: RetryPolicy(jitter_ratio=1.5),
        ValueError,
        r"RetryPolicy\.jitter_ratio",
    ),
    (
        "retry-attempt-timeout-zero",
        lambda: RetryPolicy(attempt_timeout=0),
        ValueError,
        r"RetryPolicy\.attempt_timeout",
    ),
    ("retry-max-delay-inf", lambda: RetryPolicy(max_delay=INF), ValueError, r"RetryPolicy\.max_delay"),
    (
        "retry-unknown-strategy",
        lambda: RetryPolicy(strategy="sometimes"),
        ValueError,
        r"RetryPolicy\.strategy",
    ),
    (
        "retry-on-cancellation",
        lambda: RetryPolicy(retry_on=(asyncio.CancelledError,)),
        ValueError,
        r"RetryPolicy\.retry_on",
    ),
    (
        "retry-result-predicate-not-callable",
        lambda: RetryPolicy(retry_on_result=True),
        TypeError,
        r"RetryPolicy\.retry_on_result",
    ),
    (
        "fb-strategy-str",
        lambda: FallbackConfig(strategy="default_value"),
        TypeError,
        r"FallbackConfig\.strategy",
    ),
    (
        "fb-alternative-missing",
        lambda: FallbackConfig(strategy=FallbackStrategy.ALTERNATIVE_FUNCTION),
        TypeError,
        r"FallbackConfig\.fallback_function",
    ),
    (
        "fb-unused-cache-key",
        lambda: fallback_default(cache_key="last"),
        ValueError,
        r"FallbackConfig\.cache_key must be unset",
    ),
    (
        "fb-multiple-empty",
        lambda: FallbackConfig(strategy=FallbackStrategy.MULTIPLE_ATTEMPTS, fallback_functions=[]),
        ValueError,
        r"FallbackConfig\.fallback_functions",
    ),
    (
        "fb-cache-service-invalid",
        lambda: FallbackConfig(strategy=FallbackStrategy.CACHED_VALUE, cache_key="k", cache_service=object()),
        TypeError,
        r"FallbackConfig\.cache_service",
    ),
    (
        "fb-handles-exit",
        lambda: fallback_default(handle_exceptions=(SystemExit,)),
        ValueError,
        r"FallbackConfig\.handle_exceptions",
    ),
    ("timeout-zero", lambda: TimeoutHandler(timeout=0), ValueError, r"TimeoutHandler\.timeout must be > 0"),
    ("timeout-nan", lambda: TimeoutHandler(timeout=NAN), ValueError, r"TimeoutHandler\.timeout"),
    (
        "timeout-scope-unknown",
        lambda: TimeoutHandler(1.0, scope="forever"),
        ValueError,
        r"TimeoutHandler\.scope",
    ),
    ("timeout-config-negative", lambda: TimeoutConfig(timeout=-1.0), ValueError, r"TimeoutConfig\.timeout"),
    (
        "recovery-attempts-zero",
        lambda: RecoveryAction(RecoveryStrategy.RETRY, max_attempts=0),
        ValueError,
        r"RecoveryAction\.max_attempts",
    ),
    (
        "recovery-delay-negative",
        lambda: RecoveryAction(RecoveryStrategy.RETRY, delay=-1.0),
        ValueError,
        r"RecoveryAction\.delay",
    ),
    (
        "recovery-restart-without-hook",
        lambda: RecoveryAction(RecoveryStrategy.RESTART),
        ValueError,
        r"RecoveryAction\.restart_hook",
    ),
    (
        "recovery-misplaced-fallback",
        lambda: RecoveryAction(RecoveryStrategy.RETRY, fallback_value=1),
        ValueError,
        r"RecoveryAction\.fallback_value",
    ),
    ("recovery-strategy-str", lambda: RecoveryAction("retry"), TypeError, r"RecoveryAction\.strategy"),
    (
        "recovery-rule-for-interrupt",
        lambda: ErrorRecoverySystem().register_recovery_rule(
            KeyboardInterrupt, RecoveryAction(RecoveryStrategy.RETRY)
        ),
        TypeError,
        r"ErrorRecoverySystem\.exc_type",
    ),
    (
        "resilience-timeout-nan",
        lambda: ResilienceConfig(timeout=NAN),
        ValueError,
        r"ResilienceConfig\.timeout",
    ),
    (
        "resilience-breaker-dict",
        lambda: ResilienceConfig(circuit_breaker={"failure_threshold": 5}),
        TypeError,
        r"ResilienceConfig\.circuit_breaker",
    ),
    (
        "resilience-recovery-str",
        lambda: ResilienceConfig(enable_recovery="yes"),
        TypeError,
        r"ResilienceConfig\.enable_recovery",
    ),
    (
        "resilience-attempt-exceeds-total",
        lambda: ResilienceConfig(retry_policy=RetryPolicy(attempt_timeout=30.0), timeout=10.0),
        ValueError,
        r"ResilienceConfig\.retry_policy\.attempt_timeout",
    ),
    ("resilience-empty-name", lambda: ResilienceConfig(name=" "), ValueError, r"ResilienceConfig\.name"),
    ("breaker-empty-name", lambda: CircuitBreaker(""), ValueError, r"CircuitBreaker\.name"),
    ("breaker-name-int", lambda: CircuitBreaker(42), TypeError, r"CircuitBreaker\.name"),
    (
        "breaker-config-dict",
        lambda: CircuitBreaker("b", {"timeout": 1.0}),
        TypeError,
        r"CircuitBreaker\.config",
    ),
    (
        "breaker-force-open-negative",
        lambda: CircuitBreaker("b").force_open(-1.0),
        ValueError,
        r"CircuitBreaker\.force_open\.duration",
    ),
    ("bulkhead-config-class", lambda: Bulkhead("b", BulkheadConfig), TypeError, r"Bulkhead\.config"),
    ("retry-policy-dict", lambda: Retry("r", {"max_attempts": 3}), TypeError, r"Retry\.policy"),
    (
        "manager-max-pipelines-zero",
        lambda: ResilienceManager(max_pipelines=0),
        ValueError,
        r"^ResilienceManager\.max_pipelines must be >= 1, got 0$",
    ),
    (
        "manager-max-pipelines-none",
        lambda: ResilienceManager(max_pipelines=None),
        TypeError,
        r"^ResilienceManager\.max_pipelines must be an int, got None \(NoneType\)$",
    ),
    (
        "manager-max-policies-none",
        lambda: ResilienceManager(max_policies=None),
        TypeError,
        r"^ResilienceManager\.max_policies must be an int, got None \(NoneType\)$",
    ),
    (
        "manager-max-policies-float",
        lambda: ResilienceManager(max_policies=1.5),
        TypeError,
        r"^ResilienceManager\.max_policies must be an int, got 1\.5 \(float\)$",
    ),
    (
        "manager-policy-max-keys-none",
        lambda: ResilienceManager().policy("p", ResilienceConfig(), max_keys=None),
        TypeError,
        r"^ResilienceManager\.policy\.max_keys must be an int, got None \(NoneType\)$",
    ),
    (
        "manager-policy-max-keys-zero",
        lambda: ResilienceManager().policy("p", ResilienceConfig(), max_keys=0),
        ValueError,
        r"^ResilienceManager\.policy\.max_keys must be >= 1, got 0$",
    ),
    (
        "manager-policy-key-attribute-limit-none",
        lambda: ResilienceManager().policy("p", ResilienceConfig(), key_attribute_limit=None),
        TypeError,
        r"^ResilienceManager\.policy\.key_attribute_limit must be an int, got None \(NoneType\)$",
    ),
    (
        "manager-policy-key-attribute-limit-negative",
        lambda: ResilienceManager().policy("p", ResilienceConfig(), key_attribute_limit=-1),
        ValueError,
        r"^ResilienceManager\.policy\.key_attribute_limit must be >= 0, got -1$",
    ),
    (
        "alerts-negative-cooldown",
        lambda: AlertConfig(bulkhead_cooldown=-1.0),
        ValueError,
        r"AlertConfig\.bulkhead_cooldown",
    ),
    # Durations beyond what the platform can wait (threading.TIMEOUT_MAX), or beyond a float.
    (
        "bh-timeout-beyond-platform",
        lambda: BulkheadConfig(timeout=1e10),
        ValueError,
        r"BulkheadConfig\.timeout" + OVER,
    ),
    (
        "cb-timeout-huge-int",
        lambda: CircuitBreakerConfig(timeout=10**400),
        ValueError,
        r"CircuitBreakerConfig\.timeout" + OVER,
    ),
    (
        "breaker-force-open-beyond-platform",
        lambda: CircuitBreaker("b").force_open(1e10),
        ValueError,
        r"CircuitBreaker\.force_open\.duration" + OVER,
    ),
    (
        "retry-initial-delay-1e300",
        lambda: RetryPolicy(initial_delay=1e300),
        ValueError,
        r"RetryPolicy\.initial_delay" + OVER,
    ),
    (
        "retry-max-delay-huge-int",
        lambda: RetryPolicy(max_delay=10**400),
        ValueError,
        r"RetryPolicy\.max_delay" + OVER,
    ),
    (
        "retry-attempt-timeout-timedelta-max",
        lambda: RetryPolicy(attempt_timeout=timedelta.max),
        ValueError,
        r"RetryPolicy\.attempt_timeout" + OVER,
    ),
    (
        "retry-multiplier-huge-int",
        lambda: RetryPolicy(multiplier=10**400),
        ValueError,
        r"RetryPolicy\.multiplier must be a finite number",
    ),
    (
        "timeout-huge-int",
        lambda: TimeoutHandler(timeout=10**400),
        ValueError,
        r"TimeoutHandler\.timeout" + OVER,
    ),
    (
        "recovery-delay-1e300",
        lambda: RecoveryAction(RecoveryStrategy.RETRY, delay=1e300),
        ValueError,
        r"RecoveryAction\.delay" + OVER,
    ),
    (
        "resilience-timeout-huge-int",
        lambda: ResilienceConfig(timeout=10**400),
        ValueError,
        r"ResilienceConfig\.timeout" + OVER,
    ),
    (
        "alerts-cooldown-timedelta-max",
        lambda: AlertConfig(escalation_cooldown=timedelta.max),
        ValueError,
        r"AlertConfig\.escalation_cooldown" + OVER,
    ),
    # A bad value whose repr raises still gets the validation error, naming the field.
    (
        "timeout-unprintable",
        lambda: TimeoutHandler(timeout=Unprintable()),
        TypeError,
        r"TimeoutHandler\.timeout" + UNPRINTABLE,
    ),
    (
        "bulkhead-name-unprintable",
        lambda: Bulkhead(Unprintable()),
        TypeError,
        r"Bulkhead\.name" + UNPRINTABLE,
    ),
    (
        "retry-attempts-unprintable",
        lambda: RetryPolicy(max_attempts=Unprintable()),
        TypeError,
        r"RetryPolicy\.max_attempts" + UNPRINTABLE,
    ),
]


@pytest.mark.parametrize(("thunk", "kind", "pattern"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_bad_configuration_is_refused_naming_the_field(
    thunk: Callable[[], object], kind: type[Exception], pattern: str
) -> None:
    """Each bad value raises ValueError or TypeError naming Class.field (and the rule or value)."""
    with pytest.raises(kind, match=pattern):
        thunk()


def test_the_table_covers_at_least_thirty_cases_across_every_pattern() -> None:
    """The table is broad: 30+ cases touching every configuration class."""
    assert len(CONFIGS) >= 30
    owners = {c[3].split("\\.")[0] for c in CONFIGS}
    for owner in (
        "CircuitBreakerConfig",
        "BulkheadConfig",
        "RetryPolicy",
        "FallbackConfig",
        "TimeoutHandler",
        "RecoveryAction",
        "ResilienceConfig",
    ):
        assert owner in owners


async def anything() -> str:
    return "value"


def anything_sync() -> str:
    return "value"


NON_CALLABLE = (
    "breaker.call",
    "breaker.call_sync",
    "breaker.protect",
    "bulkhead.execute",
    "bulkhead.execute_sync",
    "manager.execute",
    "manager.execute_sync",
    "manager.config",
    "retry.execute",
    "retry_async",
    "retry_sync",
    "fallback",
    "timeout",
)


def non_callable_calls() -> dict[str, tuple[Callable[[], Any], str]]:
    breaker = CircuitBreaker("nc")
    bulkhead = Bulkhead("nc")
    manager = ResilienceManager()
    config = ResilienceConfig(name="nc")
    handler = FallbackHandler(fallback_default(default_value=0))
    timeout = TimeoutHandler(1.0)
    retry = Retry("nc")
    return {
        "breaker.call": (lambda: breaker.call(None), r"CircuitBreaker\.call\.fn"),
        "breaker.call_sync": (lambda: breaker.call_sync(42), r"CircuitBreaker\.call_sync\.fn"),
        "breaker.protect": (lambda: breaker.protect("f"), r"CircuitBreaker\.protect\.fn"),
        "bulkhead.execute": (lambda: bulkhead.execute("f"), r"Bulkhead\.execute\.fn"),
        "bulkhead.execute_sync": (lambda: bulkhead.execute_sync(None), r"Bulkhead\.execute_sync\.fn"),
        "manager.execute": (
            lambda: manager.execute_with_resilience(None, config),
            r"execute_with_resilience\.fn",
        ),
        "manager.execute_sync": (
            lambda: manager.execute_with_resilience_sync(1, config),
            r"execute_with_resilience_sync\.fn",
        ),
        "manager.config": (
            lambda: manager.execute_with_resilience(anything, {"timeout": 1}),
            r"ResilienceManager\.config",
        ),
        "retry.execute": (lambda: retry.execute(None), r"Retry\.execute\.fn must be callable"),
        "retry_async": (lambda: retry_async(None), r"retry_async\.fn must be callable"),
        "retry_sync": (lambda: retry_sync(1), r"retry_sync\.fn must be callable"),
        "fallback": (
            lambda: handler.execute_with_fallback(None),
            r"FallbackHandler\.execute_with_fallback\.fn",
        ),
        "timeout": (lambda: timeout.with_timeout(None), r"TimeoutHandler\.with_timeout\.fn"),
    }


@pytest.mark.parametrize("api", NON_CALLABLE)
async def test_non_callable_is_refused_at_once(api: str) -> None:
    """A non-callable fn (or a non-config) raises TypeError before anything runs, naming fn."""
    cases = non_callable_calls()
    assert set(cases) == set(NON_CALLABLE)
    call, pattern = cases[api]
    with pytest.raises(TypeError, match=pattern):
        result = call()
        if asyncio.iscoroutine(result):
            await result


def wrong_driver_config(name: str) -> ResilienceConfig:
    return ResilienceConfig(
        circuit_breaker=CircuitBreakerConfig(failure_threshold=1),
        retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=0.0),
        fallback_config=fallback_default(default_value="fallback"),
        bulkhead_config=BulkheadConfig(max_concurrent=1, max_waiting=0),
        enable_recovery=True,
        name=name,
    )


async def test_plain_function_given_to_the_async_api_is_refused_not_retried_or_answered() -> None:
    """A sync fn on the async API raises TypeError: no retry, no breaker failure, no fallback answer."""
    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        TypeError, RecoveryAction(RecoveryStrategy.FALLBACK, fallback_value="recovered")
    )
    calls: list[int] = []

    def plain() -> str:
        calls.append(1)
        return "value"

    config = wrong_driver_config("wrong-async")
    for _ in range(3):
        with pytest.raises(TypeError, match=r"fn must return an awaitable.*_sync variant"):
            await manager.execute_with_resilience(plain, config)
    assert len(calls) == 3, "the plain function was retried"
    stats = manager.get_resilience_statistics()
    breaker = stats["circuit_breakers"]["wrong-async"]
    assert breaker["total_failures"] == 0
    assert breaker["state"] == "closed"
    assert stats["bulkheads"]["wrong-async"]["active"] == 0
    assert stats["executions"]["failed"] == 3
    assert stats["executions"]["fallback"] == 0
    assert await manager.execute_with_resilience(anything, config) == "value"


async def test_coroutine_function_given_to_the_sync_api_is_refused_not_retried_or_answered() -> None:
    """An async fn on the sync API raises TypeError at once: no retry, no breaker failure, no fallback."""
    manager = ResilienceManager()
    config = wrong_driver_config("wrong-sync")
    for _ in range(3):
        with pytest.raises(TypeError, match=r"fn is a coroutine function.*async variant"):
            manager.execute_with_resilience_sync(anything, config)
    stats = manager.get_resilience_statistics()
    breaker = stats["circuit_breakers"]["wrong-sync"]
    assert breaker["total_failures"] == 0
    assert breaker["state"] == "closed"
    assert stats["executions"]["fallback"] == 0
    assert manager.execute_with_resilience_sync(anything_sync, config) == "value"


@pytest.mark.parametrize("via", ["breaker", "bulkhead", "retry", "fallback", "timeout"])
async def test_every_pattern_refuses_the_wrong_driver(via: str) -> None:
    """Each pattern alone refuses a plain function on its async API and an async one on its sync API."""
    runners: dict[str, tuple[Any, Any]] = {
        "breaker": ((b := CircuitBreaker(f"wd-{via}")).call, b.call_sync),
        "bulkhead": ((h := Bulkhead(f"wd-{via}")).execute, h.execute_sync),
        "retry": (
            (r := Retry(f"wd-{via}", RetryPolicy(initial_delay=0.0, max_delay=0.0))).execute,
            r.execute_sync,
        ),
        "fallback": (
            (f := FallbackHandler(fallback_default(default_value="fallback"))).execute_with_fallback,
            f.execute_with_fallback_sync,
        ),
        "timeout": ((t := TimeoutHandler(1.0)).with_timeout, t.with_timeout_sync),
    }
    async_api, sync_api = runners[via]
    with pytest.raises(TypeError, match="fn must return an awaitable"):
        await async_api(anything_sync)
    with pytest.raises(TypeError, match="fn is a coroutine function"):
        sync_api(anything)


def test_valid_edge_values_are_kept_exactly_not_clamped() -> None:
    """Boundary values that are allowed are stored as given (timedelta normalised to seconds)."""
    assert CircuitBreakerConfig(timeout=timedelta(milliseconds=1)).timeout == 0.001
    assert CircuitBreakerConfig(failure_threshold=1, half_open_max_calls=10_000).half_open_max_calls == 10_000
    assert BulkheadConfig(max_waiting=0).max_waiting == 0
    assert BulkheadConfig(timeout=1e-9).timeout == 1e-9
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0, jitter_ratio=1.0, max_attempts=1)
    assert (policy.initial_delay, policy.max_delay, policy.jitter_ratio, policy.max_attempts) == (
        0.0,
        0.0,
        1.0,
        1,
    )
    assert RetryPolicy(attempt_timeout=timedelta(microseconds=1)).attempt_timeout == 1e-6
    assert TimeoutHandler(timeout=1e-6).timeout == 1e-6
    assert ResilienceConfig(timeout=timedelta(minutes=2)).timeout == 120.0
    assert RecoveryAction(RecoveryStrategy.RETRY, delay=0).delay == 0.0
    assert math.isclose(RetryPolicy(multiplier=1.0).multiplier, 1.0)


def test_a_sync_bulkhead_waits_with_the_longest_timeout_and_refuses_a_longer_one() -> None:
    """A sync queue wait of exactly threading.TIMEOUT_MAX works; 1e10 s is refused at construction."""
    with pytest.raises(ValueError, match=r"BulkheadConfig\.timeout" + OVER):
        BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=1e10)
    bulkhead = Bulkhead(
        "longest", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=threading.TIMEOUT_MAX)
    )
    holding, release = threading.Event(), threading.Event()

    def hold() -> str:
        holding.set()
        release.wait(10.0)
        return "held"

    results: list[object] = []

    def call(fn: Callable[[], str]) -> None:
        try:
            results.append(bulkhead.execute_sync(fn))
        except Exception as error:
            results.append(error)

    holder = threading.Thread(target=call, args=(hold,))
    holder.start()
    assert holding.wait(10.0)
    waiter = threading.Thread(target=call, args=(lambda: "waited",))
    waiter.start()
    for _ in range(1000):  # until the waiter is queued (it waits on its lock, with the longest timeout)
        if bulkhead.get_stats()["waiting"] == 1:
            break
        time.sleep(0.005)
    assert bulkhead.get_stats()["waiting"] == 1
    release.set()
    holder.join(10.0)
    waiter.join(10.0)
    assert sorted(map(str, results)) == ["held", "waited"]


async def test_a_non_callable_whose_repr_raises_is_refused_naming_fn() -> None:
    """Retry's non-callable error shows a value whose repr raises by its type, not by its repr's error."""
    pattern = (
        r"Retry\.execute\.fn must be callable, got <.*Unprintable object at 0x[0-9a-f]+> \(its repr raised\)"
    )
    with pytest.raises(TypeError, match=pattern):
        await Retry("r").execute(Unprintable())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"retry_sync\.fn must be callable, got <.*\(its repr raised\)"):
        retry_sync(Unprintable())  # type: ignore[arg-type]
