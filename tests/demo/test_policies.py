"""The demo's policies are the ones docs/demo.md lists ("The simulated system"), scaled."""

from __future__ import annotations

import pytest

from otel_resilience import (
    CircuitBreakerConfig,
    FallbackStrategy,
    RecoveryStrategy,
    RetryBudget,
    RetryStrategy,
)
from otel_resilience.demo.options import DemoOptions
from otel_resilience.demo.policies import (
    TENANT_KEY_LIMIT,
    build_configs,
    build_recovery,
    hedge_budget,
    retry_budget,
    tenant_quota,
)
from otel_resilience.demo.services import MemoryCache
from otel_resilience.demo.system import RATES, TENANT_CYCLE, TENANT_RATE
from otel_resilience.ops import alert_rules as ar

_SCALE = 0.05


def _configs() -> dict:
    return build_configs(_SCALE, MemoryCache(), budget=retry_budget(_SCALE), hedges=hedge_budget(_SCALE))


def _production(value: float) -> float:
    return round(value / _SCALE, 9)


def test_content_api_has_the_documented_configuration() -> None:
    """Rate limit 4/s (burst 4, 0.5 s wait), breaker 3 (60 s), retry 2 exponential from 1 s,
    cached fallback ``last_analysis``, timeout 30 s, bulkhead 5 (queue 10), recovery on."""
    config = _configs()["content_api"]
    limiter = config.rate_limiter
    assert (round(limiter.rate * _SCALE, 9), limiter.burst, _production(limiter.max_wait)) == (4.0, 4, 0.5)
    breaker = config.circuit_breaker
    assert (breaker.failure_threshold, _production(breaker.timeout)) == (3, 60.0)
    # "the content_api breaker timeout (the library default, 60 s)"
    assert CircuitBreakerConfig().timeout == 60.0
    retry = config.retry_policy
    assert (retry.max_attempts, retry.strategy, _production(retry.initial_delay)) == (
        2,
        RetryStrategy.EXPONENTIAL,
        1.0,
    )
    assert config.fallback_config.strategy is FallbackStrategy.CACHED_VALUE
    assert config.fallback_config.cache_key == "last_analysis"
    assert _production(config.timeout) == 30.0
    assert (config.bulkhead_config.max_concurrent, config.bulkhead_config.max_waiting) == (5, 10)
    assert config.enable_recovery


def test_ml_service_has_the_documented_configuration() -> None:
    """Breaker 5 / 120 s, 3 exponential retries from 2 s, timeout 60 s, recovery on, no fallback."""
    config = _configs()["ml_service"]
    assert (config.circuit_breaker.failure_threshold, _production(config.circuit_breaker.timeout)) == (
        5,
        120.0,
    )
    retry = config.retry_policy
    assert (retry.max_attempts, retry.strategy, _production(retry.initial_delay)) == (
        3,
        RetryStrategy.EXPONENTIAL,
        2.0,
    )
    assert _production(config.timeout) == 60.0
    assert config.enable_recovery
    assert config.fallback_config is None
    assert config.rate_limiter is None


def test_database_has_the_documented_configuration() -> None:
    """Timeout 10 s, fallback ``[]``, bulkhead 20 (queue 10), a hedge after 150 ms (2 attempts,
    no error hedged) on a budget of its own: 10 % of its queries + 1 every 20 s."""
    configs = _configs()
    config = configs["database"]
    assert _production(config.timeout) == 10.0
    assert config.fallback_config.strategy is FallbackStrategy.DEFAULT_VALUE
    assert config.fallback_config.default_value == []
    assert (config.bulkhead_config.max_concurrent, config.bulkhead_config.max_waiting) == (20, 10)
    hedging = config.hedging
    assert (_production(hedging.delay), hedging.max_attempts, hedging.hedge_on) == (0.15, 2, ())
    assert config.retry_policy is None
    assert config.circuit_breaker is None
    # a budget of its own, not the one the retries of the other two share
    assert hedging.budget is not configs["content_api"].retry_policy.budget
    _assert_documented_budget(hedging.budget)


def test_the_retries_share_one_budget_of_10_percent_plus_one_every_20_s() -> None:
    configs = _configs()
    budget = configs["content_api"].retry_policy.budget
    assert configs["ml_service"].retry_policy.budget is budget
    _assert_documented_budget(budget)
    # "10 % ..., the library's default ratio" and "the library default's floor (10/s)"
    assert (RetryBudget().ratio, RetryBudget().min_retries_per_second) == (0.1, 10.0)


def _assert_documented_budget(budget: RetryBudget) -> None:
    assert budget.ratio == 0.1
    # one retry every 20 production seconds, over the first attempts of the last 60 s
    assert round(budget.min_retries_per_second * _SCALE, 9) == 0.05
    assert _production(budget.window) == 60.0


def test_the_recovery_rule_retries_a_connection_error_twice_2_s_apart() -> None:
    recovery = build_recovery(_SCALE)
    assert recovery.name == "recovery"
    assert _production(recovery.config.pattern_window) == 60.0
    assert list(recovery.rules) == [ConnectionError]
    action = recovery.rules[ConnectionError]
    assert (action.strategy, action.max_attempts, _production(action.delay)) == (
        RecoveryStrategy.RETRY,
        2,
        2.0,
    )


def test_the_load_and_the_tenants_are_the_documented_ones() -> None:
    """ml_service 1/s, database 5/s, content_api 2/s; tenants 2/s in turn for 5 tenants (acme 0.6/s,
    globex, initech and umbrella 0.4/s, hooli 0.2/s), each with a quota of 0.5/s (burst 2, no
    wait), 10 keys as metric attributes."""
    assert RATES == {"ml_service": 1.0, "database": 5.0, "content_api": 2.0}
    assert TENANT_RATE == 2.0
    rates = {tenant: TENANT_RATE * TENANT_CYCLE.count(tenant) / len(TENANT_CYCLE) for tenant in TENANT_CYCLE}
    assert rates == pytest.approx({"acme": 0.6, "globex": 0.4, "initech": 0.4, "umbrella": 0.4, "hooli": 0.2})
    limiter = tenant_quota(_SCALE).rate_limiter
    assert (round(limiter.rate * _SCALE, 9), limiter.burst, limiter.max_wait) == (0.5, 2, 0.0)
    assert TENANT_KEY_LIMIT == 10


def test_the_tenants_policy_sheds_acme_only_and_less_than_the_rate_limited_alert_threshold() -> None:
    """acme alone sends more than its quota, and what it sends over it is at most half of the share of
    the policy's executions at which ResilienceRateLimitedSustained fires: the alert stays quiet in
    every scenario (it was 35 %: acme sent 1.2/s of the 2/s against a 0.5/s quota). Every other
    tenant stays under its quota even when a stalled loop makes up a whole cycle at once (no more
    requests in a cycle than its burst), and every tenant has its own key attribute."""
    limiter = tenant_quota(_SCALE).rate_limiter
    quota = limiter.rate * _SCALE
    over = {
        tenant: TENANT_RATE * TENANT_CYCLE.count(tenant) / len(TENANT_CYCLE) - quota
        for tenant in set(TENANT_CYCLE)
    }
    shed = {tenant: excess for tenant, excess in over.items() if excess > 0}
    assert set(shed) == {"acme"}
    assert 0 < sum(shed.values()) / TENANT_RATE <= ar.RATE_LIMITED_RATIO / 2
    assert all(TENANT_CYCLE.count(tenant) <= limiter.burst for tenant in set(TENANT_CYCLE) - {"acme"})
    assert len(set(TENANT_CYCLE)) <= TENANT_KEY_LIMIT


def test_the_default_time_scale_gives_the_documented_load() -> None:
    """docs/demo.md: ~160 calls/s at 0.05, ~800 at 0.01, 8 at 1, ~1,600 at 0.005."""
    total = sum(RATES.values())
    assert total == 8.0
    assert total / DemoOptions().time_scale == pytest.approx(160.0)
    assert total / DemoOptions(time_scale=0.005).time_scale == pytest.approx(1600.0)
