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
:class:`~otel_resilience.engine.stats.PipelineStats` hold the executions), a
:class:`BreakerTotals` and a :class:`LimiterTotals` (read as a breaker and a rate limiter of the
policy's name, never found by name: ``findable=False``). A series is the sum of the live keys
and the ledger, so it only grows. A carrier is made by the first fold of its kind: until then
the policy's unkeyed state (registered for the handle's lifetime) is what makes its series
exist, at 0.

**Every count in exactly one exported place, at every instant.** A fold is one
:meth:`~otel_resilience.engine.registry.Registry.replace` (:func:`fold`): the folded instance
and the current carrier leave the registry, and a *new* carrier holding both their counts
enters it, in one step under the registry's lock (the lock of a collection's snapshot,
:meth:`Registry.items`). A carrier is never changed once registered, so a collection that took
its snapshot just before a fold, and reads the counts a little later, still reads the folded
instance and the old carrier, whose counts have not moved: nothing is counted twice (the new
carrier with the instance still registered) or lost (neither registered). The ledger itself
changes under the policy's lock, which :meth:`PolicyHandle.get_stats` reads under.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Protocol, TypeVar, cast

from otel_resilience.engine.clock import Clock
from otel_resilience.engine.counting import add_to
from otel_resilience.engine.events import TelemetrySource
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import BREAKERS, BULKHEADS, PIPELINES, RATE_LIMITERS, Named, Registry
from otel_resilience.engine.step import Step
from otel_resilience.manager.statistics import EXECUTION_KEYS, add_counts
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadStatsDict
from otel_resilience.patterns.circuit_breaker import CircuitBreaker, CircuitState
from otel_resilience.patterns.hedging.step import HedgingCountsDict
from otel_resilience.patterns.rate_limiter import RateLimiter
from otel_resilience.patterns.rate_limiter.totals import LIMITER_TOTALS, LimiterTotals, limiter_totals

__all__ = [
    "BREAKER_TOTALS",
    "BULKHEAD_TOTALS",
    "LINK_TOTALS",
    "BreakerTotals",
    "Ledger",
    "breaker_totals",
    "bulkhead_totals",
    "fold",
    "link_totals",
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
LINK_TOTALS: Final[Mapping[str, tuple[str, ...]]] = {
    "retry": (
        "executions",
        "attempts",
        "retries",
        "successes",
        "first_attempt_successes",
        "successes_after_retry",
        "exhausted",
        "retries_denied",
        "non_retryable",
        "cancelled",
        "attempt_timeouts",
    ),
    "timeout": ("total_timeouts", "attempt_timeouts"),
    "hedging": tuple(HedgingCountsDict.__annotations__),
    "fallback": (
        "executions",
        "fallbacks_used",
        "fallback_successes",
        "fallback_failures",
        "cache_hits",
        "cache_misses",
        "cache_errors",
    ),
    "chaos": ("runs", "faults", "latencies", "outcomes", "errors"),
}
"""The lifetime counts of a policy's stage links (by kind) that its statistics sum over its keys.

A timeout link counts its expiries under its scope's name: ``total_timeouts`` (the config's
``timeout``) or ``attempt_timeouts`` (``retry_policy.attempt_timeout``).
"""


class _CountedLink(Protocol):
    """A stage link of a kind of :data:`LINK_TOTALS`: its ``get_stats()`` has the counts."""

    kind: str

    def get_stats(self) -> Mapping[str, object]: ...


def link_totals(link: Step) -> tuple[str, dict[str, int]] | None:
    """Return the kind of ``link`` and its lifetime counts (:data:`LINK_TOTALS`); ``None``: it counts none.

    Read on a statistics read, a reload or an eviction, never by a call.
    """
    kind = link.kind
    names = LINK_TOTALS.get(kind)
    if names is None:
        return None
    stats = cast("_CountedLink", link).get_stats()
    if kind == "timeout":
        return kind, {f"{getattr(link, 'scope', 'total')}_timeouts": cast("int", stats["timeouts"])}
    return kind, {name: cast("int", stats[name]) for name in names}


def new_link_totals() -> dict[str, dict[str, int]]:
    """Return every kind of :data:`LINK_TOTALS` with its counts at 0."""
    return {kind: dict.fromkeys(names, 0) for kind, names in LINK_TOTALS.items()}


def add_link_totals(into: dict[str, dict[str, int]], links: Iterable[Step]) -> None:
    """Add the counts of ``links`` (those of a kind of :data:`LINK_TOTALS`) to ``into``, by kind."""
    for link in links:
        counted = link_totals(link)
        if counted is not None:
            _add_into(into[counted[0]], counted[1])


def breaker_totals(breaker: CircuitBreaker) -> dict[str, int]:
    """Return the lifetime counts of ``breaker`` (:data:`BREAKER_TOTALS`)."""
    stats = breaker.stats
    return {name: getattr(stats, name) for name in BREAKER_TOTALS}


def bulkhead_totals(stats: BulkheadStatsDict) -> dict[str, int]:
    """Return the lifetime counts (:data:`BULKHEAD_TOTALS`) of a bulkhead's snapshot ``get_stats()``.

    Given the snapshot rather than the bulkhead, so that a reader that also wants what runs
    now (``active``, ``waiting``) takes them from the same snapshot: they add up.
    """
    return {name: int(stats[name]) for name in BULKHEAD_TOTALS}


class BreakerTotals:
    """The counts of a policy's evicted breakers, exported as a CLOSED breaker of their name.

    It reads as a breaker to the observable instruments (``name``, ``peek_state()``, ``stats``,
    ``failure_rate_threshold``, ``rates()``): CLOSED, the least severe state, so it never hides
    the state of a live key's breaker; no window, so no rate.
    """

    __slots__ = ("__weakref__", "name", *BREAKER_TOTALS)

    def __init__(self, name: str) -> None:
        self.name = name
        for count in BREAKER_TOTALS:
            setattr(self, count, 0)

    failure_rate_threshold = None

    def peek_state(self) -> CircuitState:
        """CLOSED, always."""
        return CircuitState.CLOSED

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

    __slots__ = ("_breakers", "_bulkhead", "_clock", "_limiter", "_links", "_own", "_pipelines", "name")

    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock
        self._pipelines: dict[str | None, Pipeline] = {}
        # By series (kind, name and metric key), made by the first fold_own: most ledgers have none.
        self._own: dict[TelemetrySource, Pipeline] | None = None
        self._breakers: dict[str, BreakerTotals] = {}
        self._limiter: LimiterTotals | None = None
        self._bulkhead: dict[str, int] | None = None  # made by the first fold of a bulkhead
        self._links: dict[str, dict[str, int]] | None = None  # made by the first fold of links
        # No carrier before a first fold: the policy's unkeyed pipeline, registered for the
        # handle's lifetime, already makes its series exist (at 0) from the start.

    def _carrier(self, metric_key: str | None) -> Pipeline:
        """Return a new, empty carrier of the executions of the metric key ``metric_key`` (unregistered)."""
        source = TelemetrySource("pipeline", self.name, self.name, metric_key=metric_key)
        return Pipeline(self.name, (), clock=self._clock, source=source, register=False)

    def fold_pipeline(self, pipeline: Pipeline, metric_key: str | None) -> None:
        """Move what ``pipeline`` counted into the totals, in one step with its leaving the registry."""
        _carry(self._pipelines, metric_key, pipeline, self._carrier(metric_key))

    def fold_own(self, instance: CircuitBreaker | Bulkhead | RateLimiter) -> None:
        """Move what ``instance``'s own pipeline counted into the totals, in one step with its leaving.

        The pipeline its verbs, ``guard()`` / ``slot()`` blocks and ``protect`` run through,
        built by the first of them (a key's instance that only runs in the key's pipeline has
        none): exported in ``resilience.executions`` under the series of its own source (its
        kind and name), so carried on in a carrier of that series, as :meth:`fold_pipeline`
        carries a key's executions. Not in :meth:`executions`: ``get_stats()`` counts the calls
        made through the policy.
        """
        own = instance._standalone
        if own is None:
            return
        source = own.telemetry.source
        series = TelemetrySource(source.kind, source.name, source.pipeline, metric_key=source.metric_key)
        carrier = Pipeline(source.name, (), clock=self._clock, source=series, register=False)
        if self._own is None:
            self._own = {}
        _carry(self._own, series, own, carrier)

    def fold_breaker(self, breaker: CircuitBreaker) -> None:
        """Move what ``breaker`` counted into the totals, in one step with its leaving the registry."""
        name = breaker.name
        old = self._breakers.get(name)
        carrier = BreakerTotals(name)

        def fill() -> None:
            add_to(carrier, breaker_totals(breaker))
            if old is not None:
                add_to(carrier, old.counts())

        self._breakers[name] = fold(BREAKERS, breaker, old, carrier, fill)

    def fold_bulkhead(self, bulkhead: Bulkhead) -> None:
        """Move what ``bulkhead`` counted into the totals (and out of the registry).

        A bulkhead exports gauges only (what is active and queued now): its counts are the
        statistics', read under the policy's lock, so no registry step is needed.
        """
        totals = self._bulkhead
        if totals is None:
            totals = self._bulkhead = dict.fromkeys(BULKHEAD_TOTALS, 0)
        _add_into(totals, bulkhead_totals(bulkhead.get_stats()))
        BULKHEADS.unregister(bulkhead)

    def fold_links(self, links: Iterable[Step]) -> None:
        """Add what a key's stage links (retry, timeout, hedging, fallback, chaos) counted to the totals.

        As a bulkhead's (:meth:`fold_bulkhead`), their counts are the statistics' alone, read
        under the policy's lock: no registry step is needed.
        """
        totals = self._links
        if totals is None:
            totals = self._links = new_link_totals()
        add_link_totals(totals, links)

    def fold_limiter(self, limiter: RateLimiter) -> None:
        """Move what ``limiter`` counted into the totals, in one step with its leaving the registry."""
        old = self._limiter
        carrier = LimiterTotals(self.name)

        def fill() -> None:
            carrier.carry(old, limiter_totals(limiter))

        self._limiter = fold(RATE_LIMITERS, limiter, old, carrier, fill)

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
        totals = self._bulkhead
        return dict.fromkeys(BULKHEAD_TOTALS, 0) if totals is None else dict(totals)

    def links(self) -> dict[str, dict[str, int]]:
        """Return the stage link counts of every evicted key, by kind (:data:`LINK_TOTALS`)."""
        totals = self._links
        if totals is None:
            return new_link_totals()
        return {kind: dict(counts) for kind, counts in totals.items()}

    def limiters(self) -> dict[str, int]:
        """Return the rate limiter counts of every evicted key (:data:`LIMITER_TOTALS`)."""
        totals = self._limiter
        return dict.fromkeys(LIMITER_TOTALS, 0) if totals is None else totals.get_stats()


C = TypeVar("C", bound=Named)


def fold(
    registry: Registry[Named], instance: Named, old: C | None, carrier: C, fill: Callable[[], None]
) -> C:
    """Put ``carrier`` in the place of ``instance`` and of the ``old`` carrier, filled, in one step.

    ``fill`` adds the counts of ``instance`` and ``old`` to ``carrier``, under the registry's
    lock (:meth:`Registry.replace`): the one rule of the ledger (and of the carriers a manager
    keeps of its gone policies), that each count is in exactly one registered place at every
    instant (see the module's docstring). Carriers are never found by name
    (``findable=False``): they are not an instance to act on; nor announced to the registry's
    ``on_added`` callbacks: the series they carry on were started by ``instance``.
    """

    def make() -> C:
        fill()
        return carrier

    registry.replace((instance, old), make, findable=False, announce=False)
    return carrier


K = TypeVar("K")


def _carry(carriers: dict[K, Pipeline], key: K, pipeline: Pipeline, carrier: Pipeline) -> None:
    """Fold ``pipeline``'s executions and those of the carrier at ``key`` into ``carrier``, kept there."""
    old = carriers.get(key)

    def fill() -> None:
        carrier.stats.absorb(pipeline.stats)
        if old is not None:
            carrier.stats.absorb(old.stats)

    carriers[key] = fold(PIPELINES, pipeline, old, carrier, fill)


def _add_into(into: dict[str, int], counts: dict[str, int]) -> None:
    for name, value in counts.items():
        into[name] += value
