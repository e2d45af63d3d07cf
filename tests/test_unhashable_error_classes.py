"""An exception whose class cannot be hashed (its metaclass defines ``__eq__`` alone) through every pattern.

The library keys per-class caches by the exception's class (its outcome, its ``error.type``
name, a recovery rule): such a class must still reach the caller as itself, named and counted
as any other, never replaced by the ``TypeError`` of a cache.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    FallbackConfig,
    FallbackHandler,
    FallbackStrategy,
    Hedging,
    HedgingConfig,
    RateLimiter,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    TimeoutHandler,
    retry_async,
    retry_sync,
)
from otel_resilience.engine import classify_error, error_type_name
from otel_resilience.engine.events import Outcome

_ids = itertools.count()


class _EqualityMeta(type):
    """A metaclass that defines ``__eq__`` and no ``__hash__``: its classes cannot be hashed."""

    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment] # what defining __eq__ alone does implicitly


class Unhashable(Exception, metaclass=_EqualityMeta):
    """An error of the dependency whose class cannot be hashed."""


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def test_the_class_cannot_be_hashed() -> None:
    """The premise: hashing the class raises (every per-class cache would refuse it)."""
    with pytest.raises(TypeError, match="unhashable"):
        hash(Unhashable)


def test_it_is_classified_and_named_like_any_error() -> None:
    """A failure, named ``module.Qualname``, asked twice (no cache keeps it)."""
    error = Unhashable("down")
    for _ in range(2):
        assert classify_error(error) is Outcome.FAILURE
        assert error_type_name(error) == f"{__name__}.Unhashable"


def _patterns() -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """``{pattern: (sync call, async call)}``, each running the function it is given once."""
    manager = ResilienceManager()
    manager.recovery_system.register_recovery_rule(
        KeyError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    policy = ResilienceConfig(
        name=_name("policy"),
        circuit_breaker=CircuitBreakerConfig(failure_threshold=100),
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0),
        timeout=30.0,
        bulkhead_config=BulkheadConfig(max_concurrent=2),
        rate_limiter=RateLimiterConfig(rate=1000.0, burst=1000),
        enable_recovery=True,
    )
    breaker = CircuitBreaker(_name("breaker"), CircuitBreakerConfig(failure_threshold=100))
    retry = RetryPolicy(max_attempts=2, initial_delay=0.0)
    timeout = TimeoutHandler(timeout=30.0)
    bulkhead = Bulkhead(_name("bulkhead"), BulkheadConfig(max_concurrent=2))
    limiter = RateLimiter(_name("limiter"), RateLimiterConfig(rate=1000.0, burst=1000))
    fallback = FallbackHandler(
        FallbackConfig(
            strategy=FallbackStrategy.DEFAULT_VALUE, default_value=0, handle_exceptions=(KeyError,)
        )
    )
    recovery = ErrorRecoverySystem(name=_name("recovery"))
    recovery.register_recovery_rule(
        KeyError, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=2, delay=0.0)
    )
    chaos = Chaos(_name("chaos"), ChaosConfig(fault_rate=1.0, fault=Unhashable))
    return {
        "breaker": (breaker.call_sync, breaker.call),
        "retry": (lambda fn: retry_sync(fn, policy=retry), lambda fn: retry_async(fn, policy=retry)),
        "timeout": (timeout.with_timeout_sync, timeout.with_timeout),
        "bulkhead": (bulkhead.execute_sync, bulkhead.execute),
        "rate limiter": (limiter.call_sync, limiter.call),
        "fallback": (fallback.execute_with_fallback_sync, fallback.execute_with_fallback),
        "recovery": (recovery.execute_sync, recovery.execute),
        "chaos": (chaos.call_sync, chaos.call),
        "policy": (
            lambda fn: manager.execute_with_resilience_sync(fn, policy),
            lambda fn: manager.execute_with_resilience(fn, policy),
        ),
    }


@pytest.mark.parametrize("pattern", list(_patterns()))
async def test_the_error_reaches_the_caller_through_every_pattern(driver: str, pattern: str) -> None:
    """Raised by the dependency (or injected by chaos): the caller gets that very error, in both drivers."""
    sync_call, async_call = _patterns()[pattern]
    error = Unhashable("down")

    def fail() -> None:
        raise error

    async def fail_async() -> None:
        raise error

    with pytest.raises(Unhashable) as info:
        if driver == "sync":
            sync_call(fail)
        else:
            await async_call(fail_async)
    if pattern != "chaos":  # chaos injects an instance of its own
        assert info.value is error


async def test_a_hedged_error_reaches_the_caller() -> None:
    """Hedging (async only): every attempt failed, the original's error is raised."""
    error = Unhashable("down")

    async def fail() -> None:
        raise error

    hedging = Hedging(_name("hedging"), HedgingConfig(delay=10.0, max_attempts=2))
    with pytest.raises(Unhashable) as info:
        await hedging.call(fail)
    assert info.value is error


def test_the_breaker_counts_it_and_the_span_names_it(otel: Any) -> None:
    """Counted as a failure by the breaker; the execution span's ``error.type`` names the class."""
    name = _name("named")
    breaker = CircuitBreaker(name, CircuitBreakerConfig(failure_threshold=100))

    def fail() -> None:
        raise Unhashable("down")

    with pytest.raises(Unhashable):
        breaker.call_sync(fail)
    assert breaker.get_stats()["total_failures"] == 1
    span = otel.span(name)
    assert span.attributes["error.type"] == f"{__name__}.Unhashable"
    assert span.attributes["resilience.outcome"] == "failure"


def test_a_recovery_rule_cannot_be_keyed_by_it() -> None:
    """Registering such a class is refused with a ``TypeError`` naming ``exc_type``, not a bare hash error."""
    system = ErrorRecoverySystem(name=_name("recovery"))
    action = RecoveryAction(RecoveryStrategy.RETRY)
    with pytest.raises(TypeError, match=r"ErrorRecoverySystem\.exc_type must be a hashable class"):
        system.register_recovery_rule(Unhashable, action)


class _Sub(Unhashable):
    """A subclass: its class and its parent's cannot be hashed, ``Exception`` above them can."""


def test_a_rule_above_it_in_its_mro_still_covers_it() -> None:
    """The rule lookup skips the classes that cannot be keys and finds a rule for ``Exception``."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _Sub("down")
        return "ok"

    system = ErrorRecoverySystem(name=_name("recovery"))
    system.register_recovery_rule(
        Exception, RecoveryAction(RecoveryStrategy.RETRY, max_attempts=1, delay=0.0)
    )
    assert system.execute_sync(flaky) == "ok"
    assert system.get_stats()["successful_recoveries"] == 1
