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
from otel_resilience.testing import FakeClock


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


def _answer(error: Exception) -> str:
    return "fallback"


def test_the_policies_of_one_name_take_their_permits_from_one_bucket() -> None:
    """Configs of one name that differ (a fallback function made per call) make a policy each, yet share one limit."""
    manager = ResilienceManager(clock=FakeClock())
    limit = RateLimiterConfig(rate=1.0, burst=2)
    calls: list[int] = []

    def per_call_config() -> ResilienceConfig:
        fallback = FallbackConfig(
            strategy=FallbackStrategy.ALTERNATIVE_FUNCTION, fallback_function=lambda error: _answer(error)
        )
        return ResilienceConfig(name="quotes", rate_limiter=limit, fallback_config=fallback)

    answers = [
        manager.execute_with_resilience_sync(lambda: calls.append(1) or "real", per_call_config())
        for _ in range(5)
    ]
    assert answers == ["real", "real", "fallback", "fallback", "fallback"]
    assert len(calls) == 2
    retried = ResilienceConfig(name="quotes", rate_limiter=limit, retry_policy=RetryPolicy(max_attempts=2))
    with pytest.raises(RateLimitedError):
        manager.execute_with_resilience_sync(lambda: "real", retried)
    stats = manager.get_resilience_statistics()
    assert stats["limits"]["policies"] == 6
    assert stats["limits"]["rate_limiters"] == 1


def test_a_limiter_that_gave_permits_outlives_its_evicted_policy() -> None:
    """A policy evicted while its bucket is empty comes back to that bucket, not to a full one."""
    clock = FakeClock()
    manager = ResilienceManager(clock=clock, max_policies=1)
    config = ResilienceConfig(name="limited", rate_limiter=RateLimiterConfig(rate=1.0, burst=1))
    assert manager.execute_with_resilience_sync(lambda: "real", config) == "real"
    for index in range(3):
        manager.execute_with_resilience_sync(lambda: None, ResilienceConfig(name=f"other-{index}"))
    assert manager.get_resilience_statistics()["limits"]["evicted_policies"] >= 1
    with pytest.raises(RateLimitedError):
        manager.execute_with_resilience_sync(lambda: "real", config)
    clock.advance(1.0)
    assert manager.execute_with_resilience_sync(lambda: "real", config) == "real"


def test_a_limiter_at_rest_goes_once_no_policy_uses_it() -> None:
    """Limiters stay bounded: one whose bucket refilled is evicted once its policies are gone."""
    clock = FakeClock()
    manager = ResilienceManager(clock=clock, max_policies=1)
    limit = RateLimiterConfig(rate=1.0, burst=1)
    for index in range(20):
        config = ResilienceConfig(name=f"limited-{index}", rate_limiter=limit)
        manager.execute_with_resilience_sync(lambda: None, config)
        clock.advance(1.0)  # the bucket refills: at rest once its policy is evicted
    limits = manager.get_resilience_statistics()["limits"]
    assert limits["rate_limiters"] == limits["policies"] <= 2  # a policy used lately is kept
    assert limits["evicted_rate_limiters"] >= 18


def test_another_limit_under_a_name_that_has_one_is_refused_naming_the_field() -> None:
    """A policy asking for another rate limit under a name whose limiter exists is told to take its own name."""
    manager = ResilienceManager(clock=FakeClock())
    manager.execute_with_resilience_sync(
        lambda: None, ResilienceConfig(name="shared", rate_limiter=RateLimiterConfig(rate=1.0))
    )
    other = ResilienceConfig(name="shared", rate_limiter=RateLimiterConfig(rate=5.0))
    with pytest.raises(ValueError, match=r"rate limiter 'shared' already exists .*its own name"):
        manager.execute_with_resilience_sync(lambda: None, other)


def test_the_statistics_have_each_live_limiters_counts_as_breakers_and_bulkheads() -> None:
    """``get_resilience_statistics()["rate_limiters"]``: each live limiter's ``get_stats()`` by name.

    The limiters were counted in ``limits`` (``rate_limiters``) but their counts were nowhere in
    the statistics: 2 admitted and 2 rejected calls of ``shed-stats`` read nowhere.
    """
    manager = ResilienceManager(clock=FakeClock(0.0))
    config = ResilienceConfig(
        name="shed-stats",
        rate_limiter=RateLimiterConfig(rate=0.001, burst=2),
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value="later"),
    )
    for _ in range(4):
        manager.execute_with_resilience_sync(lambda: "now", config)
    manager.execute_with_resilience_sync(lambda: "plain", ResilienceConfig(name="no-limiter"))
    stats = manager.get_resilience_statistics()
    assert stats["limits"]["rate_limiters"] == len(stats["rate_limiters"]) == 1
    limiter = stats["rate_limiters"]["shed-stats"]
    counts = (limiter["name"], limiter["admitted"], limiter["rejected"], limiter["waiting"])
    assert counts == ("shed-stats", 2, 2, 0)
    assert limiter == manager.get_resilience_statistics()["rate_limiters"]["shed-stats"]
    assert ResilienceManager().get_resilience_statistics()["rate_limiters"] == {}
