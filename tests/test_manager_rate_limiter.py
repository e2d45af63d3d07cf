"""ResilienceConfig(rate_limiter=...): the limiter's declared place, shed calls, retries and fallback."""

from __future__ import annotations

import gc

import pytest

from otel_resilience import (
    FallbackConfig,
    FallbackStrategy,
    RateLimitedError,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
    resilient,
)
from otel_resilience.engine.registry import RATE_LIMITERS
from otel_resilience.manager.stages import build_pipeline


def kinds(manager: ResilienceManager, config: ResilienceConfig) -> list[str]:
    return [kind for kind, _, _ in manager.pipeline_for(config, config.name or "x").describe()]


def test_the_limiter_sheds_load_before_anything_that_does_work() -> None:
    manager = ResilienceManager()
    config = ResilienceConfig(
        name="shed",
        rate_limiter=RateLimiterConfig(rate=1.0, burst=1),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="later"),
        timeout=5.0,
        retry_policy=RetryPolicy(max_attempts=2, initial_delay=0.0),
    )
    assert kinds(manager, config) == ["fallback", "rate_limiter", "timeout", "retry"]


def test_a_shed_call_is_answered_by_the_fallback_and_never_reaches_the_dependency() -> None:
    manager = ResilienceManager()
    calls: list[int] = []
    config = ResilienceConfig(
        name="answered",
        rate_limiter=RateLimiterConfig(rate=0.001, burst=2),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="later"),
    )
    results = [
        manager.execute_with_resilience_sync(lambda: calls.append(1) or "now", config) for _ in range(4)
    ]
    assert results == ["now", "now", "later", "later"]
    assert len(calls) == 2
    policy = manager.get_resilience_statistics()["policies"]["answered"]
    assert policy["fallback"] == 2


async def test_retries_take_no_extra_permit_and_a_limit_is_not_retried() -> None:
    attempts = 0

    @resilient(
        ResilienceConfig(
            name="one_permit",
            rate_limiter=RateLimiterConfig(rate=0.001, burst=1),
            retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.0),
        )
    )
    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("flaky")
        return "ok"

    assert await flaky() == "ok"  # three attempts on one permit
    with pytest.raises(RateLimitedError) as shed:
        await flaky()
    assert attempts == 3  # the second execution was shed, and the limit was not retried
    assert shed.value.retry_after > 0


def test_the_field_is_type_checked() -> None:
    with pytest.raises(TypeError, match=r"ResilienceConfig\.rate_limiter"):
        ResilienceConfig(rate_limiter=10)  # type: ignore[arg-type]


def test_a_policys_limiter_stays_registered_while_its_pipeline_lives() -> None:
    """The limiter a stage makes lives (and exports its permits) as long as the policy's pipeline, not less."""
    manager = ResilienceManager()
    config = ResilienceConfig(name="kept-limiter", rate_limiter=RateLimiterConfig(rate=0.001, burst=1))
    manager.execute_with_resilience_sync(lambda: "now", config)
    with pytest.raises(RateLimitedError):
        manager.execute_with_resilience_sync(lambda: "now", config)
    gc.collect()
    limiter = RATE_LIMITERS.get("kept-limiter")
    assert limiter is not None
    stats = limiter.get_stats()  # type: ignore[attr-defined]
    assert (stats["admitted"], stats["rejected"]) == (1, 1)
    del limiter
    pipeline = build_pipeline("kept-alone", config, breaker=None, bulkhead=None, recovery=None)
    gc.collect()
    assert RATE_LIMITERS.get("kept-alone") is not None
    del pipeline
    gc.collect()
    assert RATE_LIMITERS.get("kept-alone") is None  # gone with its pipeline: nothing leaks
