"""The service as replicas that share their breakers and rate limits through Redis (``--redis-url``).

Each replica is what one process of the service would be: a
:class:`~otel_resilience.demo.system.DemoSystem` with its own
:class:`~otel_resilience.ResilienceManager` and its own
:class:`~otel_resilience.RedisStore` on one namespace (the demo's,
:data:`~otel_resilience.demo.options.REDIS_NAMESPACE`, and a run id: a run never starts from the
state an earlier one left), as README's "Shared state on Redis" has the replicas of a service
share one. They call the same
simulated dependencies on the same schedule, and each takes its share of the load (a load
balancer in front of them): the service's traffic is the single-process run's. Their breakers
(``ml_service``, ``content_api``) and rate limits (``content_api``'s, each tenant's quota) are
the cluster's; the rest (bulkheads, retry budgets, hedging) stays each replica's own.

What sharing buys shows in each replica's figures (:class:`ReplicaView`): the calls it sent to a
dependency while the dependency was down (the faults its own ``down`` chaos link injected: every
call that reached the down dependency, its failed half-open probes too), and the calls its breaker
rejected. A replica whose breaker rejects after fewer calls of its own to the down dependency than
``failure_threshold`` was most likely opened by another replica's failures (its own failures before
the outage count in its window too); without sharing, each replica pays ``failure_threshold``
failures before it opens. The cluster's rate limit holds the permits of all the replicas to one budget. When
Redis goes away, every store degrades (``resilience.store.degraded``) and the calls go on, on local state.
With ``drops`` (``--redis-drops``), the stores reach Redis through a
:class:`~otel_resilience.demo.relay.DroppingRelay` that cuts them off for a moment every few
seconds: Redis drops out again and again, each drop an outage of every store.

The replicas run in one process (one event loop, one telemetry pipeline): their policies share
the policies' series, counts summed (the library warns of it at the start, once per name), and the
stores of the namespace share the store's series (``resilience.store.*``: degraded while any
store is).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from otel_resilience import RedisStore
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.options import REDIS_NAMESPACE
from otel_resilience.demo.relay import DroppingRelay
from otel_resilience.demo.scenarios import Scenario
from otel_resilience.demo.system import (
    BreakerView,
    BulkheadView,
    DemoSystem,
    HedgingView,
    LimiterView,
    PolicyView,
)
from otel_resilience.engine.validation import redacted_url

__all__ = ["ReplicaBreaker", "ReplicaView", "Replicas", "SharedStateView", "StoreView", "merge_views"]

KEY_TTL: Final = 3600.0
"""Seconds a run's breaker state is kept in Redis after its last change (the store's default is a day)."""
_SUMMED: Final = (
    "total",
    "successful",
    "recovered",
    "fallback",
    "failed",
    "rejected",
    "timeouts",
    "cancelled",
)
"""The counts of a policy view that the replicas' views add up."""


@dataclass(frozen=True, slots=True)
class ReplicaBreaker:
    """One replica's shared breaker.

    Attributes:
        state: Its state now (the cluster's while its store reaches Redis).
        times_opened: Times it opened (by its own failures or the cluster's).
        failures: Failed calls it let through.
        rejected: Calls it rejected.
        down_calls: Calls this replica sent to the dependency while it was down.
        shared: Whether its state is the cluster's now (``False``: local state, its store degraded).
    """

    state: str
    times_opened: int
    failures: int
    rejected: int
    down_calls: int
    shared: bool


@dataclass(frozen=True, slots=True)
class StoreView:
    """A store's health: degraded now, and its outages, errors, operations and fallback permits."""

    degraded: bool
    outages: int
    errors: int
    operations: int
    fallback_permits: int


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """One replica at one moment: its executions, shared breakers, shared rate limits and store."""

    replica: int
    executions: int
    breakers: Mapping[str, ReplicaBreaker]
    limiters: Mapping[str, LimiterView]
    store: StoreView


@dataclass(frozen=True, slots=True)
class SharedStateView:
    """The replicas at one moment, and whether a store was degraded at any moment seen so far."""

    replicas: Sequence[ReplicaView]
    degraded_seen: bool


def _store_view(store: RedisStore) -> StoreView:
    return StoreView(
        degraded=store.degraded,
        outages=store.outages,
        errors=store.errors,
        operations=store.ops,
        fallback_permits=store.fallback_permits,
    )


def _sum(values: Sequence[int]) -> int:
    return sum(values)


def _merged_breaker(views: Sequence[PolicyView]) -> BreakerView | None:
    breakers = [view.breaker for view in views if view.breaker is not None]
    if not breakers:
        return None
    states = list(dict.fromkeys(breaker.state for breaker in breakers))  # the replicas' states, in order
    return BreakerView("/".join(states), _sum([breaker.times_opened for breaker in breakers]))


def _merged_bulkhead(views: Sequence[PolicyView]) -> BulkheadView | None:
    bulkheads = [view.bulkhead for view in views if view.bulkhead is not None]
    if not bulkheads:
        return None
    return BulkheadView(
        **{field: _sum([getattr(b, field) for b in bulkheads]) for field in BulkheadView.__slots__}
    )


def _merged_limiter(views: Sequence[PolicyView]) -> LimiterView | None:
    limiters = [view.limiter for view in views if view.limiter is not None]
    if not limiters:
        return None
    counts = {
        field: _sum([getattr(lim, field) for lim in limiters])
        for field in ("admitted", "waited", "rejected", "waiting")
    }
    return LimiterView(rate=limiters[0].rate, **counts)  # one rate: the cluster's


def _merged_hedging(views: Sequence[PolicyView]) -> HedgingView | None:
    hedging = [view.hedging for view in views if view.hedging is not None]
    if not hedging:
        return None
    fields = ("executions", "hedges", "denied", "hedge_wins", "original_wins")
    return HedgingView(
        delay=hedging[0].delay, **{field: _sum([getattr(h, field) for h in hedging]) for field in fields}
    )


def merge_views(per_replica: Sequence[Sequence[PolicyView]]) -> list[PolicyView]:
    """Return the service's policy views: each policy's counts added up over the replicas.

    A breaker's state is the replicas' states joined by ``/`` when they differ (``open/closed``:
    one replica has not heard of the trip yet, or runs on local state); a limiter's rate is the
    cluster's (one budget); bulkheads add up their slots, queues and counts (each replica has its own).
    """
    merged: list[PolicyView] = []
    for views in zip(*per_replica, strict=True):
        first = views[0]
        merged.append(
            PolicyView(
                name=first.name,
                **{key: _sum([getattr(view, key) for view in views]) for key in _SUMMED},
                condition=first.condition,
                breaker=_merged_breaker(views),
                bulkhead=_merged_bulkhead(views),
                limiter=_merged_limiter(views),
                hedging=_merged_hedging(views),
            )
        )
    return merged


class Replicas:
    """``count`` replicas of the service, each a :class:`DemoSystem` with a store of its own on ``url``.

    It answers what the run asks of its system (the load, the views, the statistics), adding up
    the replicas' figures, and :meth:`shared_state` gives each replica's.

    Args:
        url: The Redis server's URL (checked by :func:`~otel_resilience.demo.options.check_redis_url`).
        count: How many replicas.
        scenario: The fault schedule (every replica's dependencies follow it).
        time_scale: Demo seconds per production second.
        monitor: Where the calls of every replica are counted (the service's figures).
        start: The run's start on ``clock``.
        clock: The monotonic clock.
        drops: Whether Redis drops out again and again (``--redis-drops``): the stores reach it
            through a :class:`~otel_resilience.demo.relay.DroppingRelay`, cut off on its schedule
            while the load runs.

    Attributes:
        systems: The replicas, in order (the first one's alert system is every replica's).
        stores: Each replica's store, in the same order.
        relay: The relay the stores reach Redis through, or ``None`` (no ``drops``).
    """

    def __init__(
        self,
        url: str,
        count: int,
        scenario: Scenario,
        *,
        time_scale: float,
        monitor: Monitor,
        start: float,
        clock: Callable[[], float] = time.monotonic,
        drops: bool = False,
    ) -> None:
        self.url = url
        self.namespace = f"{REDIS_NAMESPACE}:{uuid.uuid4().hex[:8]}"
        """The replicas' namespace: the demo's, with a run id, so that a run never starts from the
        state an earlier one left in Redis (a breaker left open, a spent rate limit)."""
        self._scenario = scenario
        self._monitor = monitor
        self.stores: list[RedisStore] = []
        self.systems: list[DemoSystem] = []
        self._degraded = [False] * count
        self.degraded_seen = False
        self.relay: DroppingRelay | None = None
        self._dropping: asyncio.Task[None] | None = None
        try:
            if drops:
                self.relay = DroppingRelay(url)
            target = url if self.relay is None else self.relay.url
            for _ in range(count):
                store = RedisStore.from_url(target, namespace=self.namespace, key_ttl=KEY_TTL)
                self.stores.append(store)
                shared_alerts = self.systems[0].alert_system if self.systems else None
                previews = self.systems[0].previews if self.systems else None
                self.systems.append(
                    DemoSystem(
                        scenario,
                        time_scale=time_scale,
                        monitor=monitor,
                        start=start,
                        clock=clock,
                        store=store,
                        replicas=count,
                        alert_system=shared_alerts,
                        previews=previews,
                    )
                )
        except BaseException:
            self.close()
            raise
        self.alert_system = self.systems[0].alert_system

    @property
    def budgeted(self) -> tuple[str, ...]:
        """The policies whose retries draw on a retry budget (each replica's own)."""
        return self.systems[0].budgeted

    def start_load(self) -> None:
        """Start every replica's load generators, and the relay's drops (with ``drops``)."""
        for system in self.systems:
            system.start_load()
        if self.relay is not None:
            self._dropping = asyncio.create_task(self.relay.run(), name="redis-drops")

    async def stop_load(self, grace: float) -> None:
        """Stop every replica's load (see :meth:`DemoSystem.stop_load`), the replicas together.

        Redis stops dropping out first (the relay is up again): the calls still running end as
        they would with Redis there.
        """
        if self._dropping is not None:
            self._dropping.cancel()
            await asyncio.gather(self._dropping, return_exceptions=True)
            self._dropping = None
        await asyncio.gather(*(system.stop_load(grace) for system in self.systems))

    def views(self) -> list[PolicyView]:
        """Return every policy's counts added up over the replicas (:func:`merge_views`)."""
        return merge_views([system.views() for system in self.systems])

    def recovery_stats(self) -> Mapping[str, Any]:
        """Return the replicas' recovery statistics added up (the rate over all their attempts)."""
        stats = [system.recovery_stats() for system in self.systems]
        keys = ("attempts", "successful_recoveries", "failed_recoveries", "patterns_detected", "escalations")
        total: dict[str, Any] = {key: sum(int(s.get(key, 0)) for s in stats) for key in keys}
        attempts = total["attempts"]
        total["recovery_rate"] = total["successful_recoveries"] / attempts if attempts else 1.0
        return total

    def budget_stats(self) -> dict[str, Any] | None:
        """Return the replicas' retry budgets' counts added up (each replica has its own budget)."""
        stats = [system.budget_stats() for system in self.systems]
        if any(s is None for s in stats):
            return None
        counted = [s for s in stats if s is not None]
        total: dict[str, Any] = {
            key: sum(int(s[key]) for s in counted)
            for key in ("first_attempts", "retries", "available", "denied")
        }
        total["policies"] = counted[0]["policies"]
        return total

    def tenant_stats(self) -> dict[str, Any]:
        """Return the ``tenants`` quota (one for the cluster) and the replicas' calls added up."""
        stats = [system.tenant_stats() for system in self.systems]
        total: dict[str, Any] = {"rate": stats[0]["rate"], "keys": max(s["keys"] for s in stats)}
        return total | _by_tenant(stats, ("calls", "rejections", "failures"))

    def preview_stats(self) -> dict[str, Any]:
        """Return the ``previews`` quota (one limiter the replicas share) and their previews added up."""
        stats = [system.preview_stats() for system in self.systems]
        total: dict[str, Any] = {key: stats[0][key] for key in ("rate", "burst", "keys")}
        return total | _by_tenant(stats, ("granted", "refused"))

    def _down_calls(self, system: DemoSystem, name: str) -> int:
        """The calls ``system`` sent to dependency ``name`` while it was down (its ``down`` link's faults)."""
        down = {w.condition.label for w in self._scenario.plans[name].windows if w.condition.down}
        return sum(
            int(chaos.get_stats()["faults"]) for label, chaos in system.faults[name].extra if label in down
        )

    def _replica(self, number: int, system: DemoSystem, store: RedisStore) -> ReplicaView:
        breakers: dict[str, ReplicaBreaker] = {}
        limiters: dict[str, LimiterView] = {}
        executions = 0
        for view in system.views():
            executions += view.total
            if view.limiter is not None:
                limiters[view.name] = view.limiter
            breaker = system.handles[view.name].circuit_breaker
            if breaker is None:
                continue
            stats = breaker.get_stats()
            breakers[view.name] = ReplicaBreaker(
                state=stats["state"],
                times_opened=stats["times_opened"],
                failures=stats["total_failures"],
                rejected=stats["total_rejected"],
                down_calls=self._down_calls(system, view.name),
                shared=breaker not in store.local_breakers(),
            )
        return ReplicaView(number, executions, breakers, limiters, _store_view(store))

    def shared_state(self) -> SharedStateView:
        """Return each replica's figures now (and note a store degraded, for :attr:`degraded_seen`)."""
        replicas = [
            self._replica(number, system, store)
            for number, (system, store) in enumerate(zip(self.systems, self.stores, strict=True), start=1)
        ]
        self.degraded_seen = self.degraded_seen or any(r.store.degraded for r in replicas)
        return SharedStateView(replicas, self.degraded_seen)

    def news(self) -> list[tuple[str, str]]:
        """The lines (text, severity) of the stores that lost or found Redis since the previous call."""
        lines: list[tuple[str, str]] = []
        for index, store in enumerate(self.stores):
            degraded = store.degraded
            if degraded == self._degraded[index]:
                continue
            self._degraded[index] = degraded
            self.degraded_seen = self.degraded_seen or degraded
            if degraded:
                text = (
                    f"store of replica {index + 1}: Redis unreachable: degraded, calls go on, on local state"
                )
                lines.append((text, "warning"))
            else:
                lines.append((f"store of replica {index + 1}: Redis reached again: state shared", "info"))
        return lines

    def summary(self, production_seconds: float) -> dict[str, Any]:
        """Return the shared-state figures of the run, for the summary (``shared_state``).

        ``redis_url`` (no password), ``namespace``, ``replicas``; ``redis_drops``: how many times
        Redis dropped out (``--redis-drops``), ``None`` without it; ``store``: ``degraded`` now (any
        store), ``degraded_during_run``, and the stores' ``outages``, ``errors``, ``operations``
        and ``fallback_permits`` added up; ``per_replica``: each replica's executions, breakers
        and rate limiters, and its store's figures; ``breakers``: per shared breaker, its
        ``failure_threshold``, the calls every replica sent to the down dependency
        (``down_calls``: without sharing, each replica pays ``failure_threshold`` failures),
        the rejections, and ``opened_by_others``: the replicas that rejected calls though they sent
        fewer calls to the down dependency than ``failure_threshold`` (``None`` when the scenario
        never takes the dependency down); ``rate_limiters``: per shared limiter,
        its cluster ``rate_per_s`` and ``burst`` (production), the permits ``admitted`` by all the
        replicas and those they ``shed``, and ``limit``: what one budget admits in the run (burst
        plus rate times the production seconds).
        """
        shared = self.shared_state()
        replicas = shared.replicas
        stores = [r.store for r in replicas]
        breakers: dict[str, Any] = {}
        for name in replicas[0].breakers:
            config = self.systems[0].handles[name].config.circuit_breaker
            threshold = None if config is None else config.failure_threshold
            of_name = [r.breakers[name] for r in replicas]
            goes_down = any(w.condition.down for w in self._scenario.plans[name].windows)
            breakers[name] = {
                "failure_threshold": threshold,
                "down_calls": sum(b.down_calls for b in of_name),
                "rejected": sum(b.rejected for b in of_name),
                "opened_by_others": None
                if not goes_down or threshold is None
                else [
                    r.replica
                    for r in replicas
                    if r.breakers[name].rejected and r.breakers[name].down_calls < threshold
                ],
            }
        limiters: dict[str, Any] = {}
        for name, limiter in replicas[0].limiters.items():
            rules = self.systems[0].handles[name].config.rate_limiter
            burst = 0 if rules is None else rules.burst
            admitted = sum(r.limiters[name].admitted for r in replicas)
            shed = sum(r.limiters[name].rejected for r in replicas)
            limit = burst + limiter.rate * production_seconds
            limiters[name] = {
                "rate_per_s": limiter.rate,
                "burst": burst,
                "admitted": admitted,
                "shed": shed,
                "limit": round(limit, 1),
                "within_limit": admitted <= limit,
            }
        return {
            "redis_url": redacted_url(self.url),
            "namespace": self.namespace,
            "replicas": len(replicas),
            "redis_drops": None if self.relay is None else self.relay.drops,
            "store": {
                "degraded": any(s.degraded for s in stores),
                "degraded_during_run": shared.degraded_seen or any(s.outages for s in stores),
                "outages": sum(s.outages for s in stores),
                "errors": sum(s.errors for s in stores),
                "operations": sum(s.operations for s in stores),
                "fallback_permits": sum(s.fallback_permits for s in stores),
            },
            "per_replica": [
                {
                    "replica": r.replica,
                    "executions": r.executions,
                    "breakers": {
                        name: {
                            "state": b.state,
                            "shared": b.shared,
                            "times_opened": b.times_opened,
                            "failures": b.failures,
                            "rejected": b.rejected,
                            "down_calls": b.down_calls,
                        }
                        for name, b in r.breakers.items()
                    },
                    "rate_limiters": {
                        name: {"admitted": lim.admitted, "waited": lim.waited, "shed": lim.rejected}
                        for name, lim in r.limiters.items()
                    },
                    "store": {
                        "degraded": r.store.degraded,
                        "outages": r.store.outages,
                        "errors": r.store.errors,
                        "operations": r.store.operations,
                        "fallback_permits": r.store.fallback_permits,
                    },
                }
                for r in replicas
            ],
            "breakers": breakers,
            "rate_limiters": limiters,
        }

    def close(self) -> None:
        """Close every replica (the first one last: its alert system is theirs), then every store."""
        for system in reversed(self.systems):
            system.close()
        for store in self.stores:
            store.close()
        if self.relay is not None:
            self.relay.close()


def _by_tenant(stats: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Each of ``fields`` of the replicas' ``stats`` (counts by tenant), added up tenant by tenant."""
    total: dict[str, dict[str, int]] = {}
    for field in fields:
        counts: dict[str, int] = {}
        for s in stats:
            for tenant, count in s[field].items():
                counts[tenant] = counts.get(tenant, 0) + count
        total[field] = counts
    return total
