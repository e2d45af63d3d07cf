"""A policy handle's statistics: its live keys' counts plus what its evicted keys counted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict

from otel_resilience.manager.keyed import stage_links
from otel_resilience.manager.ledger import Ledger, add_link_totals, breaker_totals, bulkhead_totals
from otel_resilience.manager.statistics import add_counts, executions
from otel_resilience.patterns.bulkhead import Bulkhead
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitState
from otel_resilience.patterns.hedging.step import HedgingCountsDict
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.rate_limiter.totals import limiter_totals

if TYPE_CHECKING:
    from otel_resilience.manager.config import ResilienceConfig
    from otel_resilience.manager.keyed import KeyState

__all__ = [
    "PolicyBreakerStatsDict",
    "PolicyBulkheadStatsDict",
    "PolicyChaosStatsDict",
    "PolicyExecutionsDict",
    "PolicyFallbackStatsDict",
    "PolicyHedgingStatsDict",
    "PolicyRateLimiterStatsDict",
    "PolicyReloadsDict",
    "PolicyRetryStatsDict",
    "PolicyStatsDict",
    "PolicyTimeoutStatsDict",
    "policy_stats",
]


class PolicyExecutionsDict(TypedDict):
    """A policy's ``executions``: as ``get_resilience_statistics()["executions"]``, over its keys."""

    total: int
    successful: int
    successful_first_attempt: int
    successful_after_failure: int
    fallback: int
    failed: int
    rejected: int
    timeouts: int
    cancelled: int
    success_rate: float
    availability: float


class PolicyBreakerStatsDict(TypedDict):
    """A policy's ``circuit_breaker``: its breakers' summed lifetime counts, and how many are OPEN now."""

    total_successes: int
    total_failures: int
    total_rejected: int
    total_ignored: int
    total_cancelled: int
    times_opened: int
    open_keys: int


class PolicyBulkheadStatsDict(TypedDict):
    """A policy's ``bulkhead``: its bulkheads' summed lifetime counts, and the calls running and waiting."""

    total: int
    completed: int
    rejected: int
    timed_out: int
    cancelled: int
    active: int
    waiting: int


class PolicyRateLimiterStatsDict(TypedDict):
    """A policy's ``rate_limiter``: its limiters' summed lifetime counts, and the callers waiting now."""

    admitted: int
    rejected: int
    waited: int
    cancelled: int
    waiting: int


class PolicyRetryStatsDict(TypedDict):
    """A policy's ``retry``: its retry links' summed counts (as ``Retry.get_stats()``'s)."""

    executions: int
    attempts: int
    retries: int
    successes: int
    first_attempt_successes: int
    successes_after_retry: int
    exhausted: int
    retries_denied: int
    non_retryable: int
    cancelled: int
    attempt_timeouts: int


class PolicyTimeoutStatsDict(TypedDict):
    """A policy's ``timeout``: how often its total deadline and its per-attempt deadline expired."""

    total_timeouts: int
    """Expiries of the config's ``timeout``."""
    attempt_timeouts: int
    """Expiries of its ``retry_policy.attempt_timeout``."""


class PolicyHedgingStatsDict(HedgingCountsDict):
    """A policy's ``hedging``: its hedging links' summed counts (those of ``Hedging.get_stats()``)."""


class PolicyFallbackStatsDict(TypedDict):
    """A policy's ``fallback``: its fallback links' summed counts (as ``FallbackHandler.get_stats()``'s)."""

    executions: int
    fallbacks_used: int
    fallback_successes: int
    fallback_failures: int
    cache_hits: int
    cache_misses: int
    cache_errors: int


class PolicyChaosStatsDict(TypedDict):
    """A policy's ``chaos``: its chaos links' summed counts (as ``Chaos.get_stats()``'s)."""

    runs: int
    faults: int
    latencies: int
    outcomes: int
    errors: int


class PolicyReloadsDict(TypedDict):
    """A policy's ``reloads``: the new configs it took and those it refused."""

    succeeded: int
    failed: int


class PolicyStatsDict(TypedDict):
    """The snapshot returned by :meth:`~otel_resilience.PolicyHandle.get_stats`."""

    name: str
    generation: int
    keys: int
    max_keys: int
    idle_ttl: float | None
    evicted_keys: int
    executions: PolicyExecutionsDict
    circuit_breaker: PolicyBreakerStatsDict | None
    """``None`` when the config has no breaker (as ``bulkhead``, ``rate_limiter``, ``retry``,
    ``hedging``, ``fallback`` and ``chaos``, each for its own pattern)."""
    bulkhead: PolicyBulkheadStatsDict | None
    rate_limiter: PolicyRateLimiterStatsDict | None
    retry: PolicyRetryStatsDict | None
    timeout: PolicyTimeoutStatsDict | None
    """``None`` when the config has neither ``timeout`` nor ``retry_policy.attempt_timeout``."""
    hedging: PolicyHedgingStatsDict | None
    fallback: PolicyFallbackStatsDict | None
    chaos: PolicyChaosStatsDict | None
    reloads: PolicyReloadsDict


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for name, value in counts.items():
        into[name] += value


def policy_stats(config: ResilienceConfig, states: Iterable[KeyState], ledger: Ledger) -> dict[str, Any]:
    """Return the counts sections of a policy's statistics (:class:`PolicyStatsDict`'s).

    ``executions``, ``circuit_breaker``, ``bulkhead``, ``rate_limiter``, ``retry``, ``timeout``,
    ``hedging``, ``fallback`` and ``chaos``. Called under the policy's lock, so that no key is
    folded into ``ledger`` while it is read. A pattern the current config does not have reports
    ``None`` (what keys counted with it before a reload stays in ``executions``, and in the
    ledger's totals: they show again if a later reload brings the pattern back).
    """
    totals = ledger.executions()
    breakers, bulkheads, limiters = ledger.breakers(), ledger.bulkheads(), ledger.limiters()
    links = ledger.links()
    open_keys = active = waiting = limiter_waiting = 0
    for state in states:
        add_counts(totals, state.pipeline.stats.as_dict())
        add_link_totals(links, stage_links(state))
        breaker = state.breaker
        if breaker is not None:
            open_keys += breaker.peek_state() is CircuitState.OPEN  # under the lock: no callback
        # The key's instances, and those a reload replaced that calls may still use (not folded).
        for instance in (breaker, state.bulkhead, state.limiter, *state.replaced):
            if isinstance(instance, CircuitBreaker):
                _add(breakers, breaker_totals(instance))
            elif isinstance(instance, Bulkhead):
                snapshot = instance.get_stats()  # one snapshot: its totals and what runs now add up
                _add(bulkheads, bulkhead_totals(snapshot))
                active += snapshot["active"]
                waiting += snapshot["waiting"]
            elif isinstance(instance, RateLimiter):
                _add(limiters, limiter_totals(instance))
                limiter_waiting += instance.waiting
            elif instance is not None:  # a stage link of a pipeline a reload replaced
                add_link_totals(links, (instance,))
    attempt_timeout = None if config.retry_policy is None else config.retry_policy.attempt_timeout
    return {
        "executions": executions((), totals),
        "circuit_breaker": None if config.circuit_breaker is None else {**breakers, "open_keys": open_keys},
        "bulkhead": None
        if config.bulkhead_config is None
        else {**bulkheads, "active": active, "waiting": waiting},
        "rate_limiter": None if config.rate_limiter is None else {**limiters, "waiting": limiter_waiting},
        "retry": None if config.retry_policy is None else links["retry"],
        "timeout": None if config.timeout is None and attempt_timeout is None else links["timeout"],
        "hedging": None if config.hedging is None else links["hedging"],
        "fallback": None if config.fallback_config is None else links["fallback"],
        "chaos": None if config.chaos is None else links["chaos"],
    }
