"""Observable instruments: counts that move on every call, read from the patterns' integers.

A call that succeeds touches no SDK instrument for these: the pipelines, breakers and bulkheads
keep plain integers, and the callbacks here read them from the engine registries
(:data:`~otel_resilience.engine.registry.PIPELINES`, ``BREAKERS``, ``BULKHEADS``,
``RATE_LIMITERS``, ``BUDGETED_RETRIES``) when a reader
collects (the Resilience4j "bind to the registry" idea). Every live instance is reported from
the moment it is created; an instance that is garbage-collected stops being reported.

Series are per *name*. Live instances that share a name (a standalone ``CircuitBreaker("x")``
beside a manager policy ``x``) share one set of series, by one rule: counts and gauges are
summed over them, and a breaker's state series report the most severe of their states (OPEN,
then HALF_OPEN, then CLOSED), so an open breaker is never hidden by a closed namesake. A
collection reads each instance once, in time linear in the number of live instances.

Instances are read through small structural protocols (:mod:`otel_resilience.telemetry.views`:
:class:`BreakerView`, :class:`BulkheadView`, :class:`RateLimiterView`, :class:`BudgetedRetryView`,
:class:`PolicyView`), so this module depends on the engine only, never on a pattern module.
A callback never raises: a failure is counted by the owning listener and the callback reports
nothing for that collection.
"""

from __future__ import annotations

import enum
import weakref
from typing import TYPE_CHECKING, Final, cast

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_resilience.engine.events import Outcome
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import (
    BREAKERS,
    BUDGETED_RETRIES,
    BULKHEADS,
    PIPELINES,
    POLICIES,
    RATE_LIMITERS,
)
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.binding import key_attributes
from otel_resilience.telemetry.store_observables import STORE_CALLBACKS
from otel_resilience.telemetry.views import (
    BreakerView,
    BudgetedRetryView,
    BulkheadStatsView,
    BulkheadView,
    Owner,
    PolicyView,
    RateLimiterView,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["Observables"]


_OUTCOME_ORDER: Final = (
    Outcome.SUCCESS,
    Outcome.RECOVERED,
    Outcome.FALLBACK,
    Outcome.FAILURE,
    Outcome.REJECTED,
    Outcome.TIMEOUT,
    Outcome.CANCELLED,
)
"""The order of the counts :meth:`Observables._executions` sums per policy."""


class Observables:
    """The observable instruments of one meter, with callbacks over the engine registries.

    Args:
        meter: The meter to create the instruments on.
        owner: The listener that says whether to report and counts failures.
    """

    __slots__ = ("__weakref__", "_last_failures", "_owner")

    def __init__(self, meter: Meter, owner: Owner) -> None:
        self._owner = owner
        self._last_failures: weakref.WeakKeyDictionary[Pipeline, int] = weakref.WeakKeyDictionary()
        for name, callback in (
            (sc.EXECUTIONS, self._executions),
            (sc.CB_STATE_METRIC, self._breaker_states),
            (sc.CB_CALLS, self._breaker_calls),
            (sc.CB_FAILURE_RATE, self._breaker_failure_rates),
            (sc.CB_SLOW_CALL_RATE, self._breaker_slow_call_rates),
            (sc.CB_FAILURE_RATE_THRESHOLD, self._breaker_thresholds),
            (sc.BULKHEAD_ACTIVE, self._bulkhead_active),
            (sc.BULKHEAD_QUEUED, self._bulkhead_queued),
            (sc.BULKHEAD_CONCURRENCY_LIMIT, self._bulkhead_concurrency_limit),
            (sc.BULKHEAD_QUEUE_LIMIT, self._bulkhead_queue_limit),
            (sc.RL_PERMITS, self._rate_limiter_permits),
            (sc.RETRY_BUDGET_AVAILABLE, self._retry_budgets),
            (sc.POLICY_KEYS, self._policy_keys),
            (sc.TELEMETRY_ERRORS, self._telemetry_errors),
            *STORE_CALLBACKS,
        ):
            spec = sc.instrument(name)
            guarded = _guard(owner, name, callback)
            if spec.kind is sc.InstrumentKind.OBSERVABLE_COUNTER:
                meter.create_observable_counter(
                    spec.name, callbacks=[guarded], unit=spec.unit, description=spec.description
                )
            else:
                meter.create_observable_gauge(
                    spec.name, callbacks=[guarded], unit=spec.unit, description=spec.description
                )

    def _executions(self) -> list[Observation]:
        """Executions by policy, reporting kind and outcome (and opted-in key), summed over live pipelines."""
        totals: dict[tuple[str, str, str | None], list[int]] = {}
        for item in PIPELINES.items():
            if not isinstance(item, Pipeline):
                continue
            stats = item.stats
            source = item.telemetry.source
            rejected = stats.rejected
            timeouts = stats.timeouts
            failed = stats.failed
            # ``failed`` includes rejections and timeouts; the three counters are written one
            # after the other, so keep the derived count monotonic across a torn read.
            failures = max(failed - rejected - timeouts, self._last_failures.get(item, 0))
            self._last_failures[item] = failures
            counts = (
                stats.succeeded,
                stats.recovered,
                stats.fallback,
                failures,
                rejected,
                timeouts,
                stats.cancelled,
            )
            key = (source.pipeline or source.name, source.kind, source.metric_key)
            total = totals.get(key)
            if total is None:
                totals[key] = list(counts)
            else:
                for index, count in enumerate(counts):
                    total[index] += count
        return [
            Observation(
                count,
                {
                    sc.POLICY: policy,
                    sc.PATTERN: pattern,
                    sc.OUTCOME: outcome.value,
                    **(key_attributes(key) if key is not None else {}),
                },
            )
            for (policy, pattern, key), counts in totals.items()
            for outcome, count in zip(_OUTCOME_ORDER, counts, strict=True)
        ]

    @staticmethod
    def _breakers() -> dict[str, list[BreakerView]]:
        """The live breakers by name (usually one per name)."""
        by_name: dict[str, list[BreakerView]] = {}
        for item in BREAKERS.items():
            if _fits(item, BreakerView):
                by_name.setdefault(item.name, []).append(cast("BreakerView", item))
        return by_name

    @staticmethod
    def _bulkheads(read: Callable[[BulkheadStatsView], int]) -> list[Observation]:
        """One gauge value per bulkhead name: ``read`` summed over the live bulkheads of that name."""
        by_name: dict[str, int] = {}
        for item in BULKHEADS.items():
            if _fits(item, BulkheadView):
                bulkhead = cast("BulkheadView", item)
                by_name[bulkhead.name] = by_name.get(bulkhead.name, 0) + read(bulkhead.stats)
        return [Observation(value, {sc.NAME: name}) for name, value in by_name.items()]

    def _breaker_states(self) -> list[Observation]:
        """For each breaker name: 1 for its state, 0 for the others.

        Live breakers that share a name share one set of series: the state reported is the
        most severe of theirs (see :func:`_severity`), so an OPEN breaker is never hidden by a
        CLOSED one of the same name.
        """
        observations: list[Observation] = []
        for name, breakers in self._breakers().items():
            current = max((b.state for b in breakers), key=_severity)
            observations.extend(
                Observation(1 if state is current else 0, {sc.NAME: name, sc.CB_STATE: str(state.value)})
                for state in type(current)
            )
        return observations

    def _breaker_rates(self, index: int) -> list[Observation]:
        """One rate (0: failures, 1: slow calls) per windowed breaker name: the highest of theirs."""
        observations: list[Observation] = []
        for name, breakers in self._breakers().items():
            rates = [r[index] for b in breakers if (r := b.rates()) is not None]
            if rates:
                observations.append(Observation(max(rates), {sc.NAME: name}))
        return observations

    def _breaker_failure_rates(self) -> list[Observation]:
        return self._breaker_rates(0)

    def _breaker_slow_call_rates(self) -> list[Observation]:
        return self._breaker_rates(1)

    def _breaker_thresholds(self) -> list[Observation]:
        """The failure rate threshold of each windowed breaker name (the lowest of theirs)."""
        observations: list[Observation] = []
        for name, breakers in self._breakers().items():
            limits = [t for b in breakers if (t := b.failure_rate_threshold) is not None]
            if limits:
                observations.append(Observation(min(limits), {sc.NAME: name}))
        return observations

    def _breaker_calls(self) -> list[Observation]:
        """Calls through each breaker name, by how it counted them (summed over same-named breakers)."""
        observations: list[Observation] = []
        for name, breakers in self._breakers().items():
            counts = [0, 0, 0, 0, 0]
            for breaker in breakers:
                stats = breaker.stats
                counts[0] += stats.total_successes
                counts[1] += stats.total_failures
                counts[2] += stats.total_rejected
                counts[3] += stats.total_ignored
                counts[4] += stats.total_cancelled
            observations.extend(
                Observation(count, {sc.NAME: name, sc.CB_CALL_RESULT: result})
                for result, count in zip(sc.CB_CALL_RESULTS, counts, strict=True)
            )
        return observations

    def _bulkhead_active(self) -> list[Observation]:
        return self._bulkheads(lambda stats: stats.active)

    def _bulkhead_queued(self) -> list[Observation]:
        return self._bulkheads(lambda stats: stats.waiting)

    def _bulkhead_concurrency_limit(self) -> list[Observation]:
        return self._bulkheads(lambda stats: stats.max_concurrent)

    def _bulkhead_queue_limit(self) -> list[Observation]:
        return self._bulkheads(lambda stats: stats.max_waiting)

    @staticmethod
    def _rate_limiter_permits() -> list[Observation]:
        """Permit requests of each rate limiter name, by answer (summed over same-named limiters)."""
        by_name: dict[str, list[int]] = {}
        for item in RATE_LIMITERS.items():
            if not _fits(item, RateLimiterView):
                continue
            stats = cast("RateLimiterView", item).get_stats()
            counts = by_name.setdefault(item.name, [0, 0, 0, 0])
            counts[0] += stats["admitted"] - stats["waited"]
            counts[1] += stats["waited"]
            counts[2] += stats["rejected"]
            counts[3] += stats["cancelled"]
        return [
            Observation(count, {sc.NAME: name, sc.RL_PERMIT_RESULT: result})
            for name, counts in by_name.items()
            for result, count in zip(sc.RL_PERMIT_RESULTS, counts, strict=True)
        ]

    @staticmethod
    def _retry_budgets() -> list[Observation]:
        """The level of the budget of each live retry link, by policy and retry name.

        A budget shared by several policies shows under each of them. Links of one policy and
        name share a series: the level of each distinct budget among them is counted once, and
        distinct budgets are summed (the retries they would allow together). Each budget is read
        once per collection.
        """
        levels: dict[int, int] = {}
        by_series: dict[tuple[str, str], dict[int, int]] = {}
        for item in BUDGETED_RETRIES.items():
            if not _fits(item, BudgetedRetryView):
                continue
            link = cast("BudgetedRetryView", item)
            budget = link.budget
            if budget is None:
                continue
            key = id(budget)
            level = levels.get(key)
            if level is None:
                level = levels[key] = int(budget.get_stats()["available"])
            by_series.setdefault((link.policy_name, link.name), {})[key] = level
        return [
            Observation(sum(budgets.values()), {sc.POLICY: policy, sc.NAME: name})
            for (policy, name), budgets in by_series.items()
        ]

    @staticmethod
    def _policy_keys() -> list[Observation]:
        """The keys each named policy keeps now."""
        return [
            Observation(cast("PolicyView", item).keys, {sc.POLICY: item.name})
            for item in POLICIES.items()
            if _fits(item, PolicyView)
        ]

    def _telemetry_errors(self) -> list[Observation]:
        return [Observation(self._owner.total_errors)]


_FITS: Final[dict[tuple[type, type], bool]] = {}
"""Whether a class has what a view protocol reads, by (class, protocol): checked once per class."""

_SEVERITY: Final = dict(zip(sc.CB_STATE_VALUES, (0, 2, 1, 0, 0), strict=True))
"""How severe a breaker state is, by value: open 2, half_open 1, any other (closed, disabled,
metrics_only) 0."""


def _severity(state: enum.Enum) -> int:
    """Rank a breaker state: OPEN above HALF_OPEN above anything else."""
    return _SEVERITY.get(str(state.value), 0)


def _fits(item: object, view: type) -> bool:
    """``isinstance(item, view)`` for a runtime-checkable protocol, remembered per class.

    A protocol check reads every member of the instance; the observable callbacks run it for
    every instance on every collection, so the answer is kept per class (instances of one
    class all have the same members).
    """
    key = (type(item), view)
    fits = _FITS.get(key)
    if fits is None:
        fits = _FITS[key] = isinstance(item, view)
    return fits


def _guard(
    owner: Owner, name: str, read: Callable[[], list[Observation]]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """Wrap a reader as an OTel callback that reports nothing once inactive and never raises."""

    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        if not owner.active:
            return ()
        try:
            return read()
        except Exception:  # noqa: BLE001 - telemetry must never break the app
            owner.failed(f"observable {name}")
            return ()

    return callback
