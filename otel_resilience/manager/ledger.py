"""What a policy's evicted keys counted: totals that never go down, in statistics and in telemetry.

A keyed policy (:class:`~otel_resilience.manager.policy.PolicyHandle`) keeps a breaker, a
bulkhead, a rate limiter and a pipeline per key, and evicts idle keys. Their counts must not go
with them: ``get_stats()`` would lose calls, and an exported counter summed over a policy's keys
(``resilience.executions``, ``resilience.circuit_breaker.calls``,
``resilience.rate_limiter.permits``: series per policy name) would go *down*, which a backend
reads as a counter reset (a false spike in ``rate()``).

So an evicted key's instances are taken out of the engine registries and their counts added,
in the same step, to the policy's :class:`Ledger`, whose carriers are registered in their place:
an empty :class:`~otel_resilience.engine.pipeline.Pipeline` per metric key (its
:class:`~otel_resilience.engine.stats.PipelineStats` absorb the executions), a
:class:`BreakerTotals` and a :class:`LimiterTotals` (read as a breaker and a rate limiter of the
policy's name, never found by name: :meth:`Registry.register` ``findable=False``). A series is
the sum of the live keys and the ledger, so it only grows.
"""

from __future__ import annotations

from typing import Final

from otel_resilience.engine.clock import Clock
from otel_resilience.engine.counting import add_to
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import BREAKERS, BULKHEADS, PIPELINES, RATE_LIMITERS
from otel_resilience.manager.statistics import EXECUTION_KEYS, add_counts
from otel_resilience.patterns.bulkhead import Bulkhead
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitState
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.rate_limiter.totals import LIMITER_TOTALS, LimiterTotals, limiter_totals

__all__ = [
    "BREAKER_TOTALS",
    "BULKHEAD_TOTALS",
    "BreakerTotals",
    "Ledger",
    "breaker_totals",
    "bulkhead_totals",
]

BREAKER_TOTALS: Final = (
    "total_successes",
    "total_failures",
    "total_rejected",
    "total_ignored",
    "total_cancelled",
    "times_opened",
)
"""The lifetime counts of a breaker that a policy's statistics sum over its keys."""
BULKHEAD_TOTALS: Final = ("total", "completed", "rejected", "timed_out", "cancelled")
"""The lifetime counts of a bulkhead that a policy's statistics sum over its keys."""


def breaker_totals(breaker: CircuitBreaker) -> dict[str, int]:
    """Return the lifetime counts of ``breaker`` (:data:`BREAKER_TOTALS`)."""
    stats = breaker.stats
    return {name: getattr(stats, name) for name in BREAKER_TOTALS}


def bulkhead_totals(bulkhead: Bulkhead) -> dict[str, int]:
    """Return the lifetime counts of ``bulkhead`` (:data:`BULKHEAD_TOTALS`), read consistently."""
    stats = bulkhead.get_stats()
    return {name: int(stats[name]) for name in BULKHEAD_TOTALS}


class BreakerTotals:
    """The counts of a policy's evicted breakers, exported as a CLOSED breaker of their name.

    It reads as a breaker to the observable instruments (``name``, ``state``, ``stats``,
    ``failure_rate_threshold``, ``rates()``): CLOSED, the least severe state, so it never hides
    the state of a live key's breaker; no window, so no rate.
    """

    __slots__ = ("__weakref__", "name", *BREAKER_TOTALS)

    def __init__(self, name: str) -> None:
        self.name = name
        for count in BREAKER_TOTALS:
            setattr(self, count, 0)

    state = CircuitState.CLOSED
    failure_rate_threshold = None

    @property
    def stats(self) -> BreakerTotals:
        """The counts themselves (``total_successes``, ...)."""
        return self

    def rates(self) -> None:
        """No window: no rate."""

    def counts(self) -> dict[str, int]:
        """Return the counts by name."""
        return {count: getattr(self, count) for count in BREAKER_TOTALS}


class Ledger:
    """The totals of one policy's evicted keys; changed under the policy's lock.

    Args:
        name: The policy name (its pipelines' and rate limiters' name).
        clock: The clock of its carrier pipelines.
    """

    __slots__ = ("_breakers", "_bulkhead", "_clock", "_limiter", "_pipelines", "name")

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._pipelines: dict[str | None, Pipeline] = {}
        self._breakers: dict[str, BreakerTotals] = {}
        self._limiter: LimiterTotals | None = None
        self._bulkhead = dict.fromkeys(BULKHEAD_TOTALS, 0)
        self.pipeline(None)  # the policy's series exist (at 0) from the start

    def pipeline(self, metric_key: str | None) -> Pipeline:
        """Return the carrier of the executions of the metric key ``metric_key`` (made on first use)."""
        carrier = self._pipelines.get(metric_key)
        if carrier is None:
            source = TelemetrySource("pipeline", self.name, self.name, metric_key=metric_key)
            carrier = self._pipelines[metric_key] = Pipeline(self.name, (), clock=self._clock, source=source)
        return carrier

    def fold_pipeline(self, pipeline: Pipeline, metric_key: str | None) -> None:
        """Move what ``pipeline`` counted into the totals (and out of the registry)."""
        PIPELINES.unregister(pipeline)
        self.pipeline(metric_key).stats.absorb(pipeline.stats)

    def fold_breaker(self, breaker: CircuitBreaker) -> None:
        """Move what ``breaker`` counted into the totals (and out of the registry)."""
        BREAKERS.unregister(breaker)
        totals = self._breakers.get(breaker.name)
        if totals is None:
            totals = self._breakers[breaker.name] = BreakerTotals(breaker.name)
            BREAKERS.register(totals, findable=False)
        add_to(totals, breaker_totals(breaker))

    def fold_bulkhead(self, bulkhead: Bulkhead) -> None:
        """Move what ``bulkhead`` counted into the totals (and out of the registry)."""
        BULKHEADS.unregister(bulkhead)
        _add_into(self._bulkhead, bulkhead_totals(bulkhead))

    def fold_limiter(self, limiter: RateLimiter) -> None:
        """Move what ``limiter`` counted into the totals (and out of the registry)."""
        RATE_LIMITERS.unregister(limiter)
        totals = self._limiter
        if totals is None:
            totals = self._limiter = LimiterTotals(self.name)
            RATE_LIMITERS.register(totals, findable=False)
        totals.add(limiter_totals(limiter))

    def executions(self) -> dict[str, int]:
        """Return the executions of every evicted key (:data:`EXECUTION_KEYS`)."""
        totals = dict.fromkeys(EXECUTION_KEYS, 0)
        for carrier in self._pipelines.values():
            add_counts(totals, carrier.stats.as_dict())
        return totals

    def breakers(self) -> dict[str, int]:
        """Return the breaker counts of every evicted key (:data:`BREAKER_TOTALS`)."""
        totals = dict.fromkeys(BREAKER_TOTALS, 0)
        for carrier in self._breakers.values():
            _add_into(totals, carrier.counts())
        return totals

    def bulkheads(self) -> dict[str, int]:
        """Return the bulkhead counts of every evicted key (:data:`BULKHEAD_TOTALS`)."""
        return dict(self._bulkhead)

    def limiters(self) -> dict[str, int]:
        """Return the rate limiter counts of every evicted key (:data:`LIMITER_TOTALS`)."""
        totals = self._limiter
        return dict.fromkeys(LIMITER_TOTALS, 0) if totals is None else totals.get_stats()


def _add_into(into: dict[str, int], counts: dict[str, int]) -> None:
    for name, value in counts.items():
        into[name] += value
