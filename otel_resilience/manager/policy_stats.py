"""A policy handle's statistics: its live keys' counts plus what its evicted keys counted."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from otel_resilience.manager.ledger import Ledger, breaker_totals, bulkhead_totals
from otel_resilience.manager.statistics import add_counts, executions
from otel_resilience.patterns.bulkhead import Bulkhead
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitState
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.rate_limiter.totals import limiter_totals

if TYPE_CHECKING:
    from otel_resilience.manager.config import ResilienceConfig
    from otel_resilience.manager.keyed import KeyState

__all__ = ["policy_stats"]


def _add(into: dict[str, int], counts: dict[str, int]) -> None:
    for name, value in counts.items():
        into[name] += value


def policy_stats(config: ResilienceConfig, states: Iterable[KeyState], ledger: Ledger) -> dict[str, Any]:
    """Return ``executions``, ``circuit_breaker``, ``bulkhead`` and ``rate_limiter`` of a policy.

    Called under the policy's lock, so that no key is folded into ``ledger`` while it is read.
    A pattern the current config does not have reports ``None`` (what keys counted with it
    before a reload stays in ``executions``).
    """
    totals = ledger.executions()
    breakers, bulkheads, limiters = ledger.breakers(), ledger.bulkheads(), ledger.limiters()
    open_keys = active = waiting = limiter_waiting = 0
    for state in states:
        add_counts(totals, state.pipeline.stats.as_dict())
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
    return {
        "executions": executions((), totals),
        "circuit_breaker": None if config.circuit_breaker is None else {**breakers, "open_keys": open_keys},
        "bulkhead": None
        if config.bulkhead_config is None
        else {**bulkheads, "active": active, "waiting": waiting},
        "rate_limiter": None if config.rate_limiter is None else {**limiters, "waiting": limiter_waiting},
    }
