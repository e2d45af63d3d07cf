"""The simulated system: three dependencies, their resilience policies, and the load on them.

Every call goes through one :class:`~otel_resilience.ResilienceManager` with the typical
configurations of the specification (SPEC section 1.7), every duration multiplied by the time
scale (production values shown; ``s`` is the scale):

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
database        database queries: timeout 10 s, fallback ``[]``, bulkhead 20 (queue 10); and,
                just outside its timeout, a failure-rate breaker on trial in METRICS_ONLY
                (``database_rate``: 50 % failures or 50 % calls over 2 s, in the last 30 s)
==============  ==============================================================================

Recovery rules (one :class:`~otel_resilience.ErrorRecoverySystem`, named ``recovery``):
``ConnectionError`` -> RETRY twice, 2 s apart: a transient network error gets two more chances
after the retry policy gave up. A rejection (``CircuitOpenError``, ``BulkheadFullError``) is never
recovered: the dependency was not called.

The load is open-loop (requests arrive on a fixed schedule whatever the answers), so that a slow
dependency piles calls up as it would in production: ``ml_service`` 1 request/s,
``database`` 5/s and ``content_api`` 2/s, in production time (divided by the time scale in real
time), plus the :attr:`~otel_resilience.demo.scenarios.Condition.extra_load` of the scenario's
window (the ``surge`` scenario's noisy caller). The queue limits (10) and the breaker timeout of
``content_api`` (60 s) are not in the specification's list; they are the library defaults or the
smallest values that keep a saturated bulkhead's queue visible. Nor are the rate limit and the
retry budget: the rate limit is twice the usual load of ``content_api``, and the budget is
sized for the demo's traffic (see :func:`retry_budget`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from otel_resilience import (
    AlertConfig,
    AlertSystem,
    BulkheadConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    ErrorRecoverySystem,
    ExtraStrategy,
    FallbackConfig,
    FallbackStrategy,
    RateLimiterConfig,
    RecoveryAction,
    RecoveryStrategy,
    ResilienceConfig,
    ResilienceError,
    ResilienceManager,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
    TimeWindow,
)
from otel_resilience.demo.monitor import Monitor
from otel_resilience.demo.scenarios import DEPENDENCIES, Scenario
from otel_resilience.demo.services import DependencyError, MemoryCache, SimulatedDependency

__all__ = [
    "POLICIES",
    "RATES",
    "ROLLOUT",
    "BreakerView",
    "BulkheadView",
    "DemoSystem",
    "LimiterView",
    "PolicyView",
    "build_configs",
    "retry_budget",
    "rollout_breaker",
]

_LOG: Final = logging.getLogger("otel_resilience.demo")

POLICIES: Final = DEPENDENCIES
"""Policy names: one policy per dependency, named after it (and so are its breaker and bulkhead)."""
RATES: Final = {"ml_service": 1.0, "database": 5.0, "content_api": 2.0}
"""Requests per production second, by policy."""
_MAX_CATCH_UP: Final = 200
"""Requests a load generator starts at once after the event loop fell behind."""


ROLLOUT: Final = "database_rate"
"""The failure-rate breaker tried out in METRICS_ONLY on the ``database`` policy (which has none)."""


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


def build_configs(
    scale: float,
    cache: MemoryCache,
    rollout: CircuitBreaker | None = None,
    budget: RetryBudget | None = None,
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

    Returns:
        ``{policy name: ResilienceConfig}``.
    """
    return {
        "content_api": ResilienceConfig(
            name="content_api",
            circuit_breaker=CircuitBreakerConfig(failure_threshold=3, timeout=60.0 * scale),
            retry_policy=RetryPolicy(
                max_attempts=2,
                strategy=RetryStrategy.EXPONENTIAL,
                initial_delay=1.0 * scale,
                max_delay=60.0 * scale,
                budget=budget,
            ),
            fallback_config=FallbackConfig(
                strategy=FallbackStrategy.CACHED_VALUE, cache_key="last_analysis", cache_service=cache
            ),
            timeout=30.0 * scale,
            bulkhead_config=BulkheadConfig(max_concurrent=5, max_waiting=10, timeout=60.0 * scale),
            enable_recovery=True,
            rate_limiter=RateLimiterConfig(rate=4.0 / scale, burst=4, max_wait=0.5 * scale),
        ),
        "ml_service": ResilienceConfig(
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
        ),
        "database": ResilienceConfig(
            name="database",
            timeout=10.0 * scale,
            fallback_config=FallbackConfig(strategy=FallbackStrategy.DEFAULT_VALUE, default_value=[]),
            bulkhead_config=BulkheadConfig(max_concurrent=20, max_waiting=10, timeout=60.0 * scale),
            extra_strategies=()
            if rollout is None
            else (ExtraStrategy(rollout.as_strategy, outside="total_timeout"),),
        ),
    }


def build_recovery(scale: float) -> ErrorRecoverySystem:
    """Return the recovery system with the demo's rules (pattern window 60 s, scaled)."""
    recovery = ErrorRecoverySystem("recovery", pattern_window=60.0 * scale)
    recovery.register_recovery_rule(
        ConnectionError, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=2, delay=2.0 * scale)
    )
    return recovery


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


class DemoSystem:
    """The dependencies, the manager that protects them, and the load generators.

    Args:
        scenario: The fault schedule.
        time_scale: Demo seconds per production second.
        monitor: Where calls, events and alerts are counted.
        start: The run's start on ``clock``.
        clock: The monotonic clock.

    Attributes:
        manager: The resilience manager every call goes through.
        alert_system: The alert system the manager reports (cooldowns scaled).
        configs: The policies, by name.
        dependencies: The simulated dependencies, by name.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        time_scale: float,
        monitor: Monitor,
        start: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._scale = time_scale
        self._monitor = monitor
        self._clock = clock
        self.alert_system = AlertSystem(
            AlertConfig(bulkhead_cooldown=60.0 * time_scale, escalation_cooldown=60.0 * time_scale)
        )
        self.manager = ResilienceManager(
            recovery_system=build_recovery(time_scale), alert_system=self.alert_system
        )
        self.cache = MemoryCache()
        self.rollout = rollout_breaker(time_scale)
        self.budget = retry_budget(time_scale)
        self.configs = build_configs(time_scale, self.cache, self.rollout, self.budget)
        self.dependencies = {
            name: SimulatedDependency(
                name, scenario, seed=scenario.seed, time_scale=time_scale, start=start, clock=clock
            )
            for name in POLICIES
        }
        self._limiters: dict[str, Any] = {}
        for name, config in self.configs.items():
            pipeline = self.manager.pipeline_for(config, name)  # every pattern exports from t = 0
            for link in pipeline.strategies:
                if link.kind == "rate_limiter":
                    self._limiters[name] = link
        self._tasks: set[asyncio.Task[None]] = set()
        self._generators: list[asyncio.Task[None]] = []
        self._counter = 0

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return len(self._tasks)

    def start_load(self) -> None:
        """Start one open-loop load generator per policy."""
        for name in POLICIES:
            self._generators.append(asyncio.create_task(self._generate(name), name=f"load-{name}"))

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
        """Return the requests per production second offered to policy ``name`` now."""
        return RATES[name] + self.dependencies[name].state().condition.extra_load

    async def _generate(self, name: str) -> None:
        """Start requests at the policy's current :meth:`load` (catching up after a stall, bounded)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            now = loop.time()
            interval = self._scale / self.load(name)
            started = 0
            while due <= now and started < _MAX_CATCH_UP:
                self._spawn(name)
                due += interval
                started += 1
            if due <= now:  # still behind after a long stall: drop the backlog instead of a flood
                due = now + interval
            await asyncio.sleep(due - now)

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
            await self.manager.execute_with_resilience(
                self.dependencies[name].call, self.configs[name], number
            )
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
        stats: dict[str, Any] = self.manager.get_resilience_statistics()
        policies: dict[str, dict[str, int]] = stats["policies"]
        breakers: dict[str, Any] = stats["circuit_breakers"]
        bulkheads: dict[str, Any] = stats["bulkheads"]
        views: list[PolicyView] = []
        for name in POLICIES:
            counts = policies.get(name, {})
            breaker = breakers.get(name)
            bulkhead = bulkheads.get(name)
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
                    limiter=self._limiter_view(name),
                    breaker=None
                    if breaker is None
                    else BreakerView(str(breaker["state"]), int(breaker["times_opened"])),
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

    def _limiter_view(self, name: str) -> LimiterView | None:
        link = self._limiters.get(name)
        if link is None:
            return None
        stats = link.get_stats()
        return LimiterView(
            rate=float(stats["rate"]) * self._scale,
            admitted=int(stats["admitted"]),
            waited=int(stats["waited"]),
            rejected=int(stats["rejected"]),
            waiting=int(stats["waiting"]),
        )

    def budget_stats(self) -> dict[str, int]:
        """Return the shared retry budget's counts: retries it ``denied`` so far, ``available`` now."""
        stats = self.budget.get_stats()
        return {key: int(stats[key]) for key in ("first_attempts", "retries", "available", "denied")}

    def recovery_stats(self) -> dict[str, Any]:
        """Return the recovery system's statistics."""
        stats: dict[str, Any] = self.manager.recovery_system.get_stats()
        return stats

    def close(self) -> None:
        """Stop the alert system listening to the event stream."""
        self.alert_system.close()
