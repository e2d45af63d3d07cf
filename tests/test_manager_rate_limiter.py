"""ResilienceConfig(rate_limiter=...): the limiter's declared place, shed calls, retries and fallback."""

from __future__ import annotations

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
