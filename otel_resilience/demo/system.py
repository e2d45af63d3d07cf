"""The simulated system: three dependencies, their resilience policies, and the load on them.

Every call goes through one :class:`~otel_resilience.ResilienceManager` with the policies of
:mod:`otel_resilience.demo.policies` (the typical configurations of the specification, every
duration multiplied by the time scale), and every simulated fault is injected by the policies'
chaos links (:mod:`otel_resilience.demo.faults`).

The load is open-loop (requests arrive on a fixed schedule whatever the answers), so that a slow
dependency piles calls up as it would in production: ``ml_service`` 1 request/s,
``database`` 5/s and ``content_api`` 2/s, in production time (divided by the time scale in real
time), plus the :attr:`~otel_resilience.demo.scenarios.Condition.extra_load` of the scenario's
window (the ``surge`` scenario's noisy caller).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from otel_resilience import (
    AlertConfig,
    AlertSystem,
    ExecutionRejectedError,
    PolicyHandle,
    RateLimiter,
    ResilienceConfig,
    ResilienceError,
    ResilienceManager,
)
from otel_resilience.demo.faults import build_faults
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.policies import (
    HEDGE_DELAY,
    NOISY_TENANT,
    PREVIEWS,
    ROLLOUT,
    TENANT_KEY_LIMIT,
    TENANTS,
    build_configs,
    build_recovery,
    customize_from_file,
    hedge_budget,
    preview_quota,
    retry_budget,
    rollout_breaker,
    shared_state,
    tenant_quota,
)
from otel_resilience.demo.scenarios import DEPENDENCIES, Scenario
from otel_resilience.demo.services import DependencyError, MemoryCache, SimulatedDependency
from otel_resilience.manager.policy_stats import PolicyHedgingStatsDict, PolicyRateLimiterStatsDict

if TYPE_CHECKING:
    from collections.abc import Hashable

    from otel_resilience import RedisStore
    from otel_resilience.patterns.rate_limiter.facade import KeyedRateLimiter

__all__ = [
    "HEDGE_DELAY",
    "POLICIES",
    "RATES",
    "ROLLOUT",
    "BreakerView",
    "BulkheadView",
    "DemoSystem",
    "HedgingView",
    "LimiterView",
    "PolicyView",
    "build_configs",
    "hedge_budget",
    "retry_budget",
    "rollout_breaker",
]

_LOG: Final = logging.getLogger("otel_resilience.demo")

POLICIES: Final = DEPENDENCIES
"""Policy names: one policy per dependency, named after it (and so are its breaker and bulkhead)."""
RATES: Final = {"ml_service": 1.0, "database": 5.0, "content_api": 2.0}
"""Requests per production second, by policy."""
TENANT_RATE: Final = 2.0
"""Requests per production second through the keyed ``tenants`` policy, spread over
:data:`TENANT_CYCLE`: ``acme`` sends 0.6/s against its quota of 0.5/s, ``globex``, ``initech``
and ``umbrella`` 0.4/s, ``hooli`` 0.2/s. The 0.1/s ``acme`` sends over its quota is shed: 5 % of
the policy's executions, half the share at which ``ResilienceRateLimitedSustained`` fires, so
that the noisy tenant tops the rejections in every scenario without that alert firing in any."""
TENANT_CYCLE: Final = (
    "acme",
    "globex",
    "initech",
    "acme",
    "umbrella",
    "globex",
    "acme",
    "initech",
    "hooli",
    "umbrella",
)
"""The tenant of each request of the ``tenants`` load, in turn."""
PREVIEWED: Final = "content_api"
"""The policy whose requests each ask their tenant's ``previews`` limiter for a permit: its usual
load's tenants take turns as in :data:`TENANT_CYCLE`, its scenario's extra load (the ``surge``
scenario's noisy caller) is :data:`~otel_resilience.demo.policies.NOISY_TENANT`'s."""
_MAX_CATCH_UP: Final = 200
"""Requests a dependency's load generator starts at once after the event loop fell behind."""


async def _paced(interval: Callable[[], float], max_catch_up: int) -> AsyncGenerator[None, None]:
    """Yield once per request due, one every ``interval()`` seconds (read at each wake-up).

    After the event loop fell behind, at most ``max_catch_up`` overdue requests are made up at
    once and the rest of the backlog is dropped: a stall never turns into a flood (with
    ``max_catch_up`` 1, none is made up: the request due is yielded, the next an interval later).
    """
    loop = asyncio.get_running_loop()
    due = loop.time()
    while True:
        now = loop.time()
        step = interval()
        made_up = 0
        while due <= now and made_up < max_catch_up:
            yield
            due += step
            made_up += 1
        if due <= now:
            due = now + step
        await asyncio.sleep(due - now)


@dataclass(frozen=True, slots=True)
class BreakerView:
    """A breaker's state and trip count."""

    state: str
    times_opened: int


@dataclass(frozen=True, slots=True)
class BulkheadView:
    """A bulkhead's use: running and queued calls against their limits, and its rejections."""

    active: int
    max_concurrent: int
    waiting: int
    max_waiting: int
    peak_active: int
    peak_waiting: int
    rejected: int
    timed_out: int


@dataclass(frozen=True, slots=True)
class LimiterView:
    """A rate limiter's counts: permits taken (at once or after a wait), calls shed, callers waiting."""

    rate: float
    admitted: int
    waited: int
    rejected: int
    waiting: int


@dataclass(frozen=True, slots=True)
class HedgingView:
    """A policy's hedging counts (carried across reloads): hedges started and refused, which attempt won.

    Attributes:
        delay: The hedge delay in production seconds.
        executions: Executions through the link.
        hedges: Hedges started.
        denied: Hedges that were due but refused: by the budget, the execution's cap on
            attempts, the deadline or a rejection by the policy's own chain (``hedges_denied``).
        hedge_wins: Executions a hedge answered (all of them raced).
        original_wins: Executions the original answered, raced or not (the raced ones are the
            ``original`` count of the monitor's ``wins``).
    """

    delay: float
    executions: int
    hedges: int
    denied: int
    hedge_wins: int
    original_wins: int


@dataclass(frozen=True, slots=True)
class PolicyView:
    """One policy at one moment: the manager's cumulative counts and its patterns' state."""

    name: str
    total: int
    successful: int
    recovered: int
    fallback: int
    failed: int
    rejected: int
    timeouts: int
    cancelled: int
    condition: str
    breaker: BreakerView | None
    bulkhead: BulkheadView | None
    limiter: LimiterView | None = None
    hedging: HedgingView | None = None


def _hedging_view(stats: PolicyHedgingStatsDict | None) -> HedgingView | None:
    """A policy's hedging counts (``get_stats()["hedging"]``): carried across reloads, never going down."""
    if stats is None:
        return None
    return HedgingView(
        delay=HEDGE_DELAY,
        executions=stats["executions"],
        hedges=stats["hedges"],
        denied=stats["hedges_denied"],
        hedge_wins=stats["hedge_wins"],
        original_wins=stats["original_wins"],
    )


class DemoSystem:
    """The dependencies, the manager that protects them, and the load generators.

    Args:
        scenario: The fault schedule.
        time_scale: Demo seconds per production second.
        monitor: Where calls, events and alerts are counted.
        start: The run's start on ``clock``.
        clock: The monotonic clock.
        policies: A configuration file's policies (production values): those named like a demo
            policy replace it, fitted to the demo by
            :func:`~otel_resilience.demo.policies.customize_from_file`; ``None`` for none.
        store: The store this system's breakers and rate limiters share their state through
            (:func:`~otel_resilience.demo.policies.shared_state`): the system is then one of
            ``replicas`` replicas of the service, and takes its share of the load; ``None`` (the
            default) keeps every state local.
        replicas: How many replicas share ``store`` (and the load): each sends ``1 / replicas``
            of every rate. Default 1.
        alert_system: The alert system the manager reports (one the replicas share, so that an
            alert is raised once); ``None`` makes one, closed by :meth:`close`.
        previews: The per-tenant ``previews`` limiter (one the replicas share, as one service's
            process would); ``None`` makes one (:func:`~otel_resilience.demo.policies.preview_quota`).

    Attributes:
        manager: The resilience manager every call goes through.
        alert_system: The alert system the manager reports (cooldowns scaled).
        configs: The policies as the run began, by name.
        handles: The dependencies' named policies (``manager.policy``), by name: a watched
            ``--config`` file reloads them (and :attr:`tenants`) while calls run.
        customize: What the demo adds to a configuration file's policy (scaled to the time scale,
            the cached fallback, the rollout breaker, the chaos links): ``customize(name, config)``.
        dependencies: The simulated dependencies, by name.
        tenant_calls: The ``tenants`` calls made, by tenant.
        tenant_rejections: The ``tenants`` calls rejected (by its quota, or a breaker or a
            bulkhead of a ``--config`` file's), by tenant.
        tenant_failures: The ``tenants`` calls that raised another error, by tenant.
        previews: The per-tenant limiter asked with ``try_acquire()`` alone
            (``RateLimiter.per_key``), one permit per ``content_api`` request.
        preview_granted: The previews rendered (a permit taken), by tenant.
        preview_refused: The previews left out (no permit free), by tenant.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        time_scale: float,
        monitor: Monitor,
        start: float,
        clock: Callable[[], float] = time.monotonic,
        policies: Mapping[str, ResilienceConfig] | None = None,
        store: RedisStore | None = None,
        replicas: int = 1,
        alert_system: AlertSystem | None = None,
        previews: KeyedRateLimiter[Hashable] | None = None,
    ) -> None:
        self._scale = time_scale
        self._monitor = monitor
        self._clock = clock
        self._share = 1 / replicas
        self._owns_alerts = alert_system is None
        self.store = store
        self.alert_system = alert_system or AlertSystem(
            AlertConfig(bulkhead_cooldown=60.0 * time_scale, escalation_cooldown=60.0 * time_scale)
        )
        self.manager = ResilienceManager(
            recovery_system=build_recovery(time_scale), alert_system=self.alert_system
        )
        self.cache = MemoryCache()
        self.rollout = rollout_breaker(time_scale)
        self.budget = retry_budget(time_scale)
        self.hedge_budget = hedge_budget(time_scale)
        self.dependencies = {
            name: SimulatedDependency(
                name, scenario, seed=scenario.seed, time_scale=time_scale, start=start, clock=clock
            )
            for name in POLICIES
        }
        self.faults = {
            name: build_faults(
                name,
                scenario,
                dependency.condition,
                seed=scenario.seed,
                time_scale=time_scale,
            )
            for name, dependency in self.dependencies.items()
        }
        self.configs = build_configs(
            time_scale, self.cache, self.rollout, self.budget, faults=self.faults, hedges=self.hedge_budget
        )
        quota = tenant_quota(time_scale)
        # What a configuration file cannot hold, added to each of its policies (at start and at
        # every reload of a watched file: see ``watch``).
        self.customize = customize_from_file(time_scale, self.cache, self.rollout, faults=self.faults)
        if policies:  # a configuration file's policies replace the built-in ones of the same names
            fit = self.customize
            self.configs.update(
                {name: fit(name, policies[name]) for name in self.configs if name in policies}
            )
            quota = fit(TENANTS, policies[TENANTS]) if TENANTS in policies else quota
        if store is not None:  # one of the service's replicas: its breakers and limits are the cluster's
            self.configs = {name: shared_state(c, store, replicas) for name, c in self.configs.items()}
            quota = shared_state(quota, store, replicas)
        # Named policies (every pattern exports from t = 0): a watched file reloads them live.
        self.handles = {name: self.manager.policy(name, config) for name, config in self.configs.items()}
        self.tenants = self.manager.policy(TENANTS, quota, key_attribute_limit=TENANT_KEY_LIMIT)
        self.tenant_calls: dict[str, int] = dict.fromkeys(TENANT_CYCLE, 0)
        self.tenant_rejections: dict[str, int] = dict.fromkeys(TENANT_CYCLE, 0)
        self.tenant_failures: dict[str, int] = dict.fromkeys(TENANT_CYCLE, 0)
        if previews is None:  # (not ``previews or``: a limiter with no key yet has a length of 0)
            previews = RateLimiter.per_key(PREVIEWS, preview_quota(time_scale), max_keys=TENANT_KEY_LIMIT)
        self.previews = previews
        self.preview_granted: dict[str, int] = dict.fromkeys(TENANT_CYCLE, 0)
        self.preview_refused: dict[str, int] = dict.fromkeys(TENANT_CYCLE, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._generators: list[asyncio.Task[None]] = []
        self._counter = 0

    @property
    def budgeted(self) -> tuple[str, ...]:
        """The policies whose retries draw on the shared retry budget now (a reload may change them)."""
        return tuple(
            name
            for name, handle in self.handles.items()
            if (retry := handle.config.retry_policy) is not None and retry.budget is self.budget
        )

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return len(self._tasks)

    def start_load(self) -> None:
        """Start one open-loop load generator per policy."""
        for name in POLICIES:
            self._generators.append(asyncio.create_task(self._generate(name), name=f"load-{name}"))
        self._generators.append(asyncio.create_task(self._tenant_load(), name="load-tenants"))

    async def stop_load(self, grace: float) -> None:
        """Stop the generators, let running calls end for up to ``grace`` seconds, cancel the rest."""
        for task in self._generators:
            task.cancel()
        await asyncio.gather(*self._generators, return_exceptions=True)
        self._generators.clear()
        pending = set(self._tasks)
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def load(self, name: str) -> float:
        """Return the requests per production second offered to policy ``name`` now (this replica's share)."""
        return (RATES[name] + self.dependencies[name].state().condition.extra_load) * self._share

    async def _generate(self, name: str) -> None:
        """Start requests at the policy's current :meth:`load` (catching up after a stall, bounded).

        Each request of :data:`PREVIEWED` first asks its tenant's ``previews`` limiter for a
        permit (:meth:`_preview`): of the requests due, the usual load's share goes to the
        tenants in turn, the rest (a scenario's extra load) to the noisy tenant.
        """
        previewed = name == PREVIEWED
        usual = 0.0  # the usual load's part of the requests due, carried from one to the next
        number = 0
        async with aclosing(_paced(lambda: self._scale / self.load(name), _MAX_CATCH_UP)) as ticks:
            async for _ in ticks:
                if previewed:
                    usual += RATES[name] * self._share / self.load(name)
                    tenant = NOISY_TENANT
                    if usual >= 1.0 - 1e-9:  # (six sixths add up to a hair under 1)
                        usual -= 1.0
                        tenant = TENANT_CYCLE[number % len(TENANT_CYCLE)]
                        number += 1
                    self._preview(tenant)
                self._spawn(name)

    def _preview(self, tenant: str) -> None:
        """Render ``tenant`` a preview if its ``previews`` limiter has a permit free now (``try_acquire``)."""
        if self.previews.for_key(tenant).try_acquire():
            self.preview_granted[tenant] += 1
        else:
            self.preview_refused[tenant] += 1

    async def _tenant_load(self) -> None:
        """Send :data:`TENANT_RATE` requests/s through the keyed ``tenants`` policy, tenant by tenant.

        Nothing is made up after the loop fell behind: the request due is sent, the next one an
        interval later, so a stall only ever lengthens the gaps between a tenant's requests. Made
        up, a stall's requests would come closer together than the tenant's schedule while its
        quota's bucket, full at its burst, refills no faster: a tenant within its quota
        (``globex``) was shed after a stall of 3 s of production time (30 ms of a busy machine's
        loop at ``--time-scale 0.01``). Every call that raises is counted for its tenant and the
        load goes on: a rejection (its quota's, or a breaker's or a bulkhead's that a ``--config``
        file gave the policy) in :attr:`tenant_rejections`, any other error (a timeout of the
        file's) in :attr:`tenant_failures`, an error of no policy logged with its traceback too.
        """
        number = 0
        async with aclosing(_paced(lambda: self._scale / (TENANT_RATE * self._share), 1)) as ticks:
            async for _ in ticks:
                tenant = TENANT_CYCLE[number % len(TENANT_CYCLE)]
                number += 1
                self.tenant_calls[tenant] += 1
                try:
                    await self.tenants.for_key(tenant).execute(_tenant_call)
                except ExecutionRejectedError:  # its quota, or a breaker, a bulkhead a --config file gave it
                    self.tenant_rejections[tenant] += 1
                except ResilienceError:  # a timeout a --config file set, say: failed, the load goes on
                    self.tenant_failures[tenant] += 1
                except Exception as error:  # noqa: BLE001 - counted and logged with its traceback: the load goes on
                    _LOG.exception("a call to %s raised an unexpected %s", TENANTS, type(error).__name__)
                    self.tenant_failures[tenant] += 1

    def _spawn(self, name: str) -> None:
        self._counter += 1
        task = asyncio.create_task(self._request(name, self._counter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, name: str, number: int) -> None:
        """Make one call through the manager and count how it ended."""
        monitor = self._monitor
        monitor.calls[name].issued += 1
        started = self._clock()
        try:
            await self.handles[name].execute(self.dependencies[name].call, number)
        except asyncio.CancelledError:
            monitor.ended(name, started, "cancelled")
            raise
        except (DependencyError, ResilienceError) as error:
            monitor.ended(name, started, "failed", error)
        except Exception as error:  # noqa: BLE001 - counted as a lost call, logged with its traceback
            _LOG.exception("a call to %s raised an unexpected %s", name, type(error).__name__)
            monitor.ended(name, started, "lost", error)
        else:
            monitor.ended(name, started, "answered")

    def production_time(self) -> float:
        """Return the production seconds since the start."""
        return self._monitor.elapsed() / self._scale

    def views(self) -> list[PolicyView]:
        """Return every policy's counts and state now."""
        views: list[PolicyView] = []
        for name in POLICIES:
            handle = self.handles[name]
            stats = handle.get_stats()
            counts = stats["executions"]
            breakers = stats["circuit_breaker"]
            breaker = handle.circuit_breaker
            bulkhead = None if handle.bulkhead is None else handle.bulkhead.get_stats()
            views.append(
                PolicyView(
                    name=name,
                    total=counts.get("total", 0),
                    successful=counts.get("successful", 0),
                    recovered=counts.get("successful_after_failure", 0),
                    fallback=counts.get("fallback", 0),
                    failed=counts.get("failed", 0),
                    rejected=counts.get("rejected", 0),
                    timeouts=counts.get("timeouts", 0),
                    cancelled=counts.get("cancelled", 0),
                    condition=self.dependencies[name].state().condition.label,
                    limiter=self._limiter_view(handle, stats["rate_limiter"]),
                    hedging=_hedging_view(stats["hedging"]),
                    breaker=None
                    if breaker is None or breakers is None
                    else BreakerView(breaker.state.value, breakers["times_opened"]),
                    bulkhead=None
                    if bulkhead is None
                    else BulkheadView(
                        active=int(bulkhead["active"]),
                        max_concurrent=int(bulkhead["max_concurrent"]),
                        waiting=int(bulkhead["waiting"]),
                        max_waiting=int(bulkhead["max_waiting"]),
                        peak_active=int(bulkhead["peak_active"]),
                        peak_waiting=int(bulkhead["peak_waiting"]),
                        rejected=int(bulkhead["rejected"]),
                        timed_out=int(bulkhead["timed_out"]),
                    ),
                )
            )
        return views

    def _limiter_view(
        self, handle: PolicyHandle, stats: PolicyRateLimiterStatsDict | None
    ) -> LimiterView | None:
        """The policy's limiter counts (``get_stats()["rate_limiter"]``) and its rate in production."""
        limiter = handle.config.rate_limiter
        if stats is None or limiter is None:
            return None
        return LimiterView(
            rate=limiter.rate * self._scale,
            admitted=stats["admitted"],
            waited=stats["waited"],
            rejected=stats["rejected"],
            waiting=stats["waiting"],
        )

    def budget_stats(self) -> dict[str, Any] | None:
        """Return the shared retry budget's counts: retries it ``denied`` so far, ``available`` now.

        Also ``policies``, those that draw on it (:attr:`budgeted`); ``None`` when none does:
        there is nothing to show.
        """
        if not self.budgeted:
            return None
        stats = self.budget.get_stats()
        counts: dict[str, Any] = {
            key: int(stats[key]) for key in ("first_attempts", "retries", "available", "denied")
        }
        counts["policies"] = list(self.budgeted)
        return counts

    def tenant_stats(self) -> dict[str, Any]:
        """Return the ``tenants`` quota (per production second), keys, and calls, rejections, failures."""
        limiter = self.tenants.for_key(TENANT_CYCLE[0]).rate_limiter
        rate = None if limiter is None else float(limiter.config.rate) * self._scale
        return {
            "rate": rate,
            "keys": self.tenants.keys,
            "calls": dict(self.tenant_calls),
            "rejections": dict(self.tenant_rejections),
            "failures": dict(self.tenant_failures),
        }

    def preview_stats(self) -> dict[str, Any]:
        """Return the ``previews`` quota (per production second), its keys, previews granted and refused."""
        config = self.previews.config
        return {
            "rate": float(config.rate) * self._scale,
            "burst": config.burst,
            "keys": self.previews.keys,
            "granted": dict(self.preview_granted),
            "refused": dict(self.preview_refused),
        }

    def recovery_stats(self) -> Mapping[str, Any]:
        """Return the recovery system's statistics."""
        return self.manager.recovery_system.get_stats()

    def close(self) -> None:
        """Stop the alert system listening to the event stream (unless it was given)."""
        if self._owns_alerts:
            self.alert_system.close()


async def _tenant_call() -> None:
    """A tenant's request once past its quota (the quota is what the ``tenants`` policy shows)."""
