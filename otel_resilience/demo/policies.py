"""The demo's policies: a :class:`~otel_resilience.ResilienceConfig` per dependency, and the recovery rules.

The typical configurations of the specification (SPEC section 1.7), every duration multiplied by
the time scale (production values shown):

==============  ==============================================================================
policy          configuration
==============  ==============================================================================
content_api     content analysis on a flaky remote API: breaker 3 (timeout 60 s), retry 2
                (exponential from 1 s), cached fallback (``last_analysis``), timeout 30 s,
                bulkhead 5 (queue 10), recovery on; a rate limit of 4/s (burst 4) in front,
                where a caller may wait up to 0.5 s for a permit
ml_service      ML service calls: breaker 5 / 120 s, 3 exponential retries from 2 s,
                timeout 60 s, recovery on; no fallback (its callers see the outage)
(both)          the retries of ``content_api`` and ``ml_service`` share one retry budget:
                10 % of the first attempts of the last 60 s, plus 1 retry every 20 s
database        database queries: timeout 10 s, fallback ``[]``, bulkhead 20 (queue 10),
                hedged: a second attempt when the first has not answered within 150 ms (its
                heavy tail: one query in 20 is 1 s slower; an error is an answer, not hedged),
                the hedges drawing on a budget of their own (10 % of the queries + 1 every
                20 s); and, just outside its timeout,
                a failure-rate breaker on trial in METRICS_ONLY (``database_rate``: 50 %
                failures or 50 % calls over 2 s, in the last 30 s)
==============  ==============================================================================

A fourth policy, ``tenants``, is keyed (:meth:`~otel_resilience.ResilienceManager.policy`): each
tenant of ``content_api`` has a quota of its own (:func:`tenant_quota`, 0.5 requests/s, burst 2),
and the tenant is the ``resilience.key`` of its metrics (``key_attribute_limit`` 10). One tenant,
``acme``, sends more than its quota in every scenario, so that its rejections show on the
"Top keys by rejections" panel, but little more: what it sends over its quota is 5 % of the
policy's executions, under the share at which ``ResilienceRateLimitedSustained`` fires.

Beside the policies, a rate limiter used alone: ``previews``, one limiter per tenant
(:meth:`~otel_resilience.RateLimiter.per_key`, :func:`preview_quota`: 1 preview per second,
burst 5), asked with ``try_acquire()`` only (no execution of a policy): each ``content_api``
request renders its tenant a preview when the tenant's limiter has a permit free, and goes
without one otherwise. Every tenant stays under it but in the ``surge`` scenario, whose noisy
caller is the tenant ``acme``: there it refuses most of ``acme``'s previews, and
``ResilienceRateLimiterRefusing`` fires for it.

Every policy has chaos links innermost (:mod:`otel_resilience.demo.faults`): they inject the
dependency's errors, refused connections and heavy tail on the scenario's clock, so that every
simulated fault is a chaos injection the telemetry marks as a drill.

Recovery rules (one :class:`~otel_resilience.ErrorRecoverySystem`, named ``recovery``):
``ConnectionError`` -> RETRY twice, 2 s apart: a transient network error gets two more chances
after the retry policy gave up. A rejection (``CircuitOpenError``, ``BulkheadFullError``) is never
recovered: the dependency was not called.

The queue limits (10) and the breaker timeout of ``content_api`` (60 s) are not in the
specification's list; they are the library defaults or the smallest values that keep a saturated
bulkhead's queue visible. Nor are the rate limit, the budgets and the hedging: the rate limit is
twice the usual load of ``content_api``, the budgets are sized for the demo's traffic (see
:func:`retry_budget` and :func:`hedge_budget`), and the hedge delay is past the database's usual
latency, below its heavy tail (:data:`HEDGE_DELAY`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from otel_resilience import (
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    HedgingConfig,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeWindow,
)
from otel_resilience.demo.faults import DependencyFaults
from otel_resilience.demo.services import MemoryCache

if TYPE_CHECKING:
    from otel_resilience import RedisStore

__all__ = [
    "HEDGE_DELAY",
    "NOISY_TENANT",
    "PREVIEWS",
    "ROLLOUT",
    "TENANTS",
    "TENANT_KEY_LIMIT",
    "DemoConfigError",
    "build_configs",
    "build_recovery",
    "customize_from_file",
    "hedge_budget",
    "preview_quota",
    "retry_budget",
    "rollout_breaker",
    "shared_state",
    "tenant_quota",
]


class DemoConfigError(Exception):
    """The demo's ``--config`` file is wrong for the demo.

    It cannot be read, names a policy the demo does not have, or holds a value that is out of
    range once scaled to the demo's time scale.
    """


HEDGE_DELAY: Final = 0.15
"""Production seconds a database query may run before a hedge starts: past its usual latency
(~40 ms, log-normal), well below its heavy tail (1 s more, one query in 20)."""

ROLLOUT: Final = "database_rate"
"""The failure-rate breaker tried out in METRICS_ONLY on the ``database`` policy (which has none)."""


TENANTS: Final = "tenants"
"""The keyed policy: one rate limit per tenant (:func:`tenant_quota`)."""
TENANT_KEY_LIMIT: Final = 10
"""How many tenants get their own ``resilience.key`` metric attribute."""


PREVIEWS: Final = "previews"
"""The rate limiter used alone, through ``try_acquire()``: one per tenant (:func:`preview_quota`)."""
NOISY_TENANT: Final = "acme"
"""The tenant over its quotas: a little in every scenario, and the ``surge`` scenario's noisy caller."""


def preview_quota(scale: float) -> RateLimiterConfig:
    """Return each tenant's preview quota: 1 preview per production second, burst 5, no wait.

    Asked with ``try_acquire()`` alone, one permit per ``content_api`` request. A tenant's share
    of the usual 2 requests/s is 0.6/s at most (``acme``), under the quota in every scenario; the
    ``surge`` scenario's noisy caller adds 10/s for ``acme``, of which the quota refuses 9 in 10.
    """
    return RateLimiterConfig(rate=1.0 / scale, burst=5)


def tenant_quota(scale: float) -> ResilienceConfig:
    """Return the quota of each tenant: 0.5 requests per production second, burst 2, no wait."""
    return ResilienceConfig(name=TENANTS, rate_limiter=RateLimiterConfig(rate=0.5 / scale, burst=2))


def rollout_breaker(scale: float) -> CircuitBreaker:
    """Return the breaker a team would try on ``database`` before it lets it reject anything.

    Over the last 30 s (10 buckets, at least 20 calls): 50 % failures (timeouts included) or
    50 % calls slower than 2 s, in METRICS_ONLY: it rejects nothing, and reports each trip it
    would make (``metrics_only -> metrics_only``), which the demo shows among its news and the
    shipped alert rule watches. The ``brownout`` scenario shows it.
    """
    config = CircuitBreakerConfig(
        sliding_window=TimeWindow(seconds=30.0 * scale, buckets=10),
        failure_rate_threshold=0.5,
        minimum_calls=20,
        slow_call_duration=2.0 * scale,
        slow_call_rate_threshold=0.5,
        timeout=60.0 * scale,
    )
    breaker = CircuitBreaker(ROLLOUT, config)
    breaker.metrics_only()
    return breaker


def retry_budget(scale: float) -> RetryBudget:
    """Return the budget the retries of ``ml_service`` and ``content_api`` share.

    Retries may add 10 % (the library's default ratio) to the first attempts of the last 60 s,
    plus a floor of one retry every 20 production seconds: three times what the baseline's
    flaky API and ML bursts ask for, not enough for strained dependencies (the ``surge``
    scenario), where it holds the extra load near 10 % instead of the retry policies' 2-3x. The
    floor is the library default's (10/s) scaled to the demo's traffic (8 requests/s): a floor
    sized for a busy service would let every retry of a small one through.
    """
    return RetryBudget(ratio=0.1, min_retries_per_second=0.05 / scale, window=60.0 * scale)


def hedge_budget(scale: float) -> RetryBudget:
    """Return the budget the database's hedges draw on: 10 % of its queries plus 1 every 20 s.

    Its own, not the retry budget of the other two: the database has no retries, and its 5
    queries per second would otherwise fund their retries. The heavy tail asks for about 5 %
    hedges, so the budget lets every one through in a healthy run, and holds the brownout's
    (every query slow) near 10 %.
    """
    return RetryBudget(ratio=0.1, min_retries_per_second=0.05 / scale, window=60.0 * scale)


def build_configs(
    scale: float,
    cache: MemoryCache,
    rollout: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
    *,
    faults: Mapping[str, DependencyFaults] | None = None,
    hedges: RetryBudget | None = None,
) -> dict[str, ResilienceConfig]:
    """Return the policy of each dependency, every duration multiplied by ``scale``.

    Args:
        scale: Demo seconds per production second.
        cache: The cache of the ``content_api`` cached fallback.
        budget: The retry budget ``ml_service`` and ``content_api`` share (:func:`retry_budget`);
            ``None`` for none.
        rollout: A breaker that ``database`` runs through, just outside its timeout (so that a
            timeout is a failure and a slow call is timed): :func:`rollout_breaker`; ``None`` for
            none.
        faults: The chaos links of each dependency (:func:`~otel_resilience.demo.faults.build_faults`);
            ``None`` for none (no fault is injected).
        hedges: The budget of the database's hedges (:func:`hedge_budget`); ``None`` for none
            (``max_attempts`` alone bounds them).

    Returns:
        ``{policy name: ResilienceConfig}``.
    """
    configs = {
        "content_api": _content_api(scale, cache, budget),
        "ml_service": _ml_service(scale, budget),
        "database": _database(scale, rollout, hedges),
    }
    return {name: _with_faults(config, (faults or {}).get(name)) for name, config in configs.items()}


def _with_faults(config: ResilienceConfig, faults: DependencyFaults | None) -> ResilienceConfig:
    """``config`` with the dependency's chaos links: its own (``chaos``) and the others, innermost."""
    if faults is None:
        return config
    extra = (*config.extra_strategies, *faults.strategies())
    return dataclasses.replace(config, chaos=faults.baseline, extra_strategies=extra)


def _content_api(scale: float, cache: MemoryCache, budget: RetryBudget | None) -> ResilienceConfig:
    return ResilienceConfig(
        name="content_api",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0 * scale),
        retry_policy=RetryPolicy(
            max_attempts=2,
            strategy=RetryStrategy.EXPONENTIAL,
            initial_delay=1.0 * scale,
            max_delay=60.0 * scale,
            budget=budget,
        ),
        fallback_config=_cached_fallback(cache),
        timeout=30.0 * scale,
        bulkhead_config=BulkheadConfig(max_concurrent=5, max_waiting=10, timeout=60.0 * scale),
        enable_recovery=True,
        rate_limiter=RateLimiterConfig(rate=4.0 / scale, burst=4, max_wait=0.5 * scale),
    )


def _cached_fallback(cache: MemoryCache) -> FallbackConfig:
    return FallbackConfig(
        strategy=FallbackStrategy.CACHED_VALUE, cache_key="last_analysis", cache_service=cache
    )


def _ml_service(scale: float, budget: RetryBudget | None) -> ResilienceConfig:
    return ResilienceConfig(
        name="ml_service",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=5, timeout=120.0 * scale),
        retry_policy=RetryPolicy(
            max_attempts=3,
            strategy=RetryStrategy.EXPONENTIAL,
            initial_delay=2.0 * scale,
            max_delay=60.0 * scale,
            budget=budget,
        ),
        timeout=60.0 * scale,
        enable_recovery=True,
    )


def _database(scale: float, rollout: CircuitBreaker | None, hedges: RetryBudget | None) -> ResilienceConfig:
    """The database's policy, hedged when a query is slow.

    An error (a rejected query, a full bulkhead) is an answer that a second attempt would only
    repeat, so no error is hedged (``hedge_on=()``).
    """
    return ResilienceConfig(
        name="database",
        timeout=10.0 * scale,
        fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=[]),
        bulkhead_config=BulkheadConfig(max_concurrent=20, max_waiting=10, timeout=60.0 * scale),
        hedging=HedgingConfig(delay=HEDGE_DELAY * scale, max_attempts=2, hedge_on=(), budget=hedges),
        extra_strategies=()
        if rollout is None
        else (ExtraStrategy(rollout.as_strategy, outside="total_timeout"),),
    )


def shared_state(config: ResilienceConfig, store: RedisStore, replicas: int) -> ResilienceConfig:
    """Return ``config`` with its breaker and its rate limiter shared through ``store``.

    One replica of ``replicas``: its breaker's state is the cluster's (a trip on any replica opens
    it on all), its rate limit one budget for the cluster; while the store cannot reach Redis, the
    limiter admits ``rate / replicas`` on local state (``store_fallback="local"``), so that the
    cluster stays near its limit.
    """
    changes: dict[str, Any] = {}
    if config.circuit_breaker is not None:
        changes["circuit_breaker"] = dataclasses.replace(config.circuit_breaker, store=store)
    if config.rate_limiter is not None:
        changes["rate_limiter"] = dataclasses.replace(
            config.rate_limiter, store=store, store_fallback="local", expected_replicas=replicas
        )
    return dataclasses.replace(config, **changes) if changes else config


def build_recovery(scale: float) -> ErrorRecoverySystem:
    """Return the recovery system with the demo's rules (pattern window 60 s, scaled)."""
    recovery = ErrorRecoverySystem("recovery", pattern_window=60.0 * scale)
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=2.0 * scale)
    )
    return recovery


_SCALED: Final = frozenset(
    {
        "timeout",
        "initial_delay",
        "max_delay",
        "attempt_timeout",
        "delay",
        "max_wait",
        "slow_call_duration",
        "max_half_open_wait",
    }
)
"""Duration fields (production seconds in a file) that :func:`customize_from_file` scales."""
_SECTIONS: Final = frozenset(
    {"circuit_breaker", "retry_policy", "bulkhead_config", "rate_limiter", "hedging"}
)


def _scaled(settings: Any, scale: float) -> Any:
    """``settings`` with its durations multiplied by ``scale`` and its rates divided by it."""
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        if not field.init:
            continue
        value = getattr(settings, field.name)
        if isinstance(value, bool) or value is None:
            continue
        if field.name in _SCALED and isinstance(value, (int, float)):
            changes[field.name] = value * scale
        elif field.name == "rate" and isinstance(value, (int, float)):
            changes[field.name] = value / scale
        elif field.name in _SECTIONS and dataclasses.is_dataclass(value):
            changes[field.name] = _scaled(value, scale)
    return dataclasses.replace(settings, **changes) if changes else settings


def customize_from_file(
    scale: float,
    cache: MemoryCache,
    rollout: CircuitBreaker | None = None,
    *,
    faults: Mapping[str, DependencyFaults] | None = None,
) -> Callable[[str, ResilienceConfig], ResilienceConfig]:
    """Return the function that fits a configuration file's policy to the demo.

    A file gives production values and cannot hold objects: the function names the config after
    its policy, multiplies the durations of the policy and of its sections (timeouts, attempt
    timeouts, backoffs, breaker timeout, slow-call duration and half-open probe wait, rate
    limiter wait, hedge delay) by ``scale`` and divides the rate limiter's rate by it, gives
    ``content_api`` the cached fallback on ``cache`` when the file sets no fallback (a file
    cannot hold the cache), puts ``database`` through the ``rollout`` breaker, and adds the
    dependency's chaos links (``faults``). A breaker's sliding ``TimeWindow`` and the retry
    budgets are taken as written (demo seconds).

    Args:
        scale: Demo seconds per production second.
        cache: The cache of a cached fallback.
        rollout: The breaker ``database`` runs through (:func:`rollout_breaker`), or ``None``.
        faults: The chaos links of each dependency, or ``None``.

    Returns:
        ``customize(name, config)`` for :meth:`~otel_resilience.ResilienceManager.apply_config`;
        it raises :class:`DemoConfigError` for a value out of range once scaled (a rate the file
        may hold, over the library's limit once divided by ``scale``).
    """

    def customize(name: str, config: ResilienceConfig) -> ResilienceConfig:
        try:
            config = _scaled(dataclasses.replace(config, name=name), scale)
        except ValueError as error:  # valid in the file, out of range once scaled (a rate divided by it)
            msg = (
                f"--config: policy {name}: {error}, at the demo's time scale {scale:g} (durations "
                "multiplied by it, rates divided by it)"
            )
            raise DemoConfigError(msg) from error
        if name == "content_api" and config.fallback_config is None:
            config = dataclasses.replace(config, fallback_config=_cached_fallback(cache))
        if name == "database" and rollout is not None:
            link = ExtraStrategy(rollout.as_strategy, outside="total_timeout")
            config = dataclasses.replace(config, extra_strategies=(*config.extra_strategies, link))
        return _with_faults(config, (faults or {}).get(name))

    return customize
