"""Observable instruments: counts that move on every call, read from the patterns' integers.

A call that succeeds touches no SDK instrument for these: the pipelines, breakers and bulkheads
keep plain integers, and the callbacks here read them from the engine registries
(:data:`~otel_resilience.engine.registry.PIPELINES`, ``BREAKERS``, ``BULKHEADS``,
``RATE_LIMITERS``, ``BUDGETED_RETRIES``, ``POLICIES``, ``KEYED_RATE_LIMITERS``) when a reader
collects (the Resilience4j "bind to the registry" idea). Every live instance is reported from
the moment it is created; an instance that is garbage-collected stops being reported.

Series are per *name*. Live instances that share a name (a standalone ``CircuitBreaker("x")``
beside a manager policy ``x``) share one set of series, by one rule (:func:`_fold`): counts and
gauges are summed over them, a breaker's state series report the most severe of their states
(by :data:`~otel_resilience.telemetry.semconv.CB_STATE_SEVERITY`, the order the dashboards take
across instances too), so an open breaker, or one an operator set apart, is never hidden by a
closed namesake (a keyed policy's keys all share its name), rates the highest and thresholds
the lowest of theirs, and a bulkhead's utilization (of its slots, of its queue) the highest of
theirs (a keyed policy's most saturated key). Each instrument's callback reads each instance
once, in time linear in the number of live instances.

Instances are read through small structural protocols (:mod:`otel_resilience.telemetry.views`:
:class:`BreakerView`, :class:`BulkheadView`, :class:`RateLimiterView`, :class:`BudgetedRetryView`,
:class:`KeyedView`), so this module depends on the engine only, never on a pattern module.
A callback never raises: a failure is counted by the owning listener and the callback reports
nothing for that collection.
"""

from __future__ import annotations

import enum
import operator
import threading
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar, cast

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_resilience.engine.events import Outcome
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.pipeline import Pipeline
from otel_resilience.engine.registry import (
    BREAKERS,
    BUDGETED_RETRIES,
    BULKHEADS,
    KEYED_RATE_LIMITERS,
    PIPELINES,
    POLICIES,
    RATE_LIMITERS,
    WATCHES,
)
from otel_resilience.telemetry import semconv as sc
from otel_resilience.telemetry.binding import key_attributes
from otel_resilience.telemetry.store_observables import STORE_CALLBACKS
from otel_resilience.telemetry.views import (
    BreakerView,
    BudgetedRetryView,
    BulkheadView,
    KeyedView,
    Owner,
    RateLimiterView,
    WatchView,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping

    from otel_resilience.engine.registry import Named, Registry
    from otel_resilience.telemetry.histograms import InProcessHistogram
    from otel_resilience.telemetry.scopes import Attrs

__all__ = ["Observables"]


_OUTCOMES: Final = tuple(outcome.value for outcome in Outcome)
"""The outcome attribute of each count :meth:`PipelineStats.counts` returns, in its order."""


def _execution_attributes(policy: str, pattern: str, key: str | None) -> list[Attrs]:
    """The attributes of a pipeline's execution series, one dict per outcome in ``_OUTCOMES`` order."""
    base: Attrs = {sc.POLICY: policy, sc.PATTERN: pattern}
    if key is not None:
        base.update(key_attributes(key))
    return [{**base, sc.OUTCOME: outcome} for outcome in _OUTCOMES]


class Observables:
    """The observable instruments of one meter, with callbacks over the engine registries.

    An instrument is created once per meter and name (the SDK hands back the instrument a meter
    made first, *with its first callbacks*, and drops the ones given again), so each of its
    callbacks reads through the meter's :class:`_Readers`: the readers of the listener that took
    them last, the one made last on that meter until a listener is registered, which takes them
    (:meth:`claim`). A second :func:`~otel_resilience.telemetry.instrument` on the same provider
    (a switch changed, or the instrumentor after the import-time listener) thus reports through
    the new listener, where the first one's callbacks, closed with it, would report nothing; and
    so does the listener registered last when another one was made meanwhile (two overlapping
    ``instrument()`` calls, or the replaced listener acquiring the global meter provider late).

    Args:
        meter: The meter to create the instruments on.
        owner: The listener that says whether to report and counts failures.
        histograms: The duration histograms kept in process, by name: each is exported through
            its three counters of :data:`~otel_resilience.telemetry.semconv.IN_PROCESS_HISTOGRAMS`.
    """

    __slots__ = ("__weakref__", "_carried", "_owner", "_readers", "_shared")

    def __init__(
        self, meter: Meter, owner: Owner, histograms: Mapping[str, InProcessHistogram] | None = None
    ) -> None:
        self._owner = owner
        readers: dict[str, Callable[[], list[Observation]]] = {}
        for histogram, recorder in (histograms or {}).items():
            counters = sc.IN_PROCESS_HISTOGRAMS[histogram]
            readers[counters["bucket"]] = recorder.buckets
            readers[counters["sum"]] = recorder.sums
            readers[counters["count"]] = recorder.counts
        readers.update(
            (
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
                (sc.BULKHEAD_UTILIZATION, self._bulkhead_utilization),
                (sc.BULKHEAD_QUEUE_UTILIZATION, self._bulkhead_queue_utilization),
                (sc.RL_PERMITS, self._rate_limiter_permits),
                (sc.RETRY_BUDGET_AVAILABLE, self._retry_budgets),
                (sc.POLICY_KEYS, _keyed(POLICIES, sc.POLICY, _KEYS)),
                (sc.POLICY_KEY_LIMIT, _keyed(POLICIES, sc.POLICY, _MAX_KEYS)),
                (sc.POLICY_KEY_EVICTIONS, _keyed(POLICIES, sc.POLICY, _EVICTED_KEYS)),
                (sc.RL_KEYS, _keyed(KEYED_RATE_LIMITERS, sc.NAME, _KEYS)),
                (sc.RL_KEY_LIMIT, _keyed(KEYED_RATE_LIMITERS, sc.NAME, _MAX_KEYS)),
                (sc.RL_KEY_EVICTIONS, _keyed(KEYED_RATE_LIMITERS, sc.NAME, _EVICTED_KEYS)),
                (sc.CONFIG_STALE, self._config_stale),
                (sc.TELEMETRY_ERRORS, self._telemetry_errors),
                *STORE_CALLBACKS,
            )
        )
        self._readers = readers
        self._shared = _Readers.of(meter)
        self._carried = 0
        self._carried = self._shared.use(meter, owner, readers)

    def claim(self) -> None:
        """Have the meter's instruments read through this owner again (it was just registered)."""
        self._carried = self._shared.read_through(self._owner, self._readers)

    @staticmethod
    def _executions() -> list[Observation]:
        """Executions by policy, reporting kind and outcome (and opted-in key), summed over live pipelines."""
        totals = _fold(PIPELINES.items(), Pipeline, _pipeline_counts, _sum_each, key=_execution_series)
        return [
            Observation(count, attributes)
            for series, counts in totals.items()
            for count, attributes in zip(counts, _execution_attributes(*series), strict=True)
        ]

    @staticmethod
    def _breaker_states() -> list[Observation]:
        """For each breaker name: 1 for its state, 0 for the others.

        Live breakers that share a name share one set of series: the state reported is the
        most severe of theirs (see :func:`_severity`), so an OPEN breaker (or a METRICS_ONLY or
        DISABLED one) is never hidden by a CLOSED one of the same name.
        """
        name_key, state_key = sc.NAME, sc.CB_STATE
        return [
            Observation(1 if state is current else 0, {name_key: name, state_key: value})
            for name, current in _fold(BREAKERS.items(), BreakerView, _STATE, _worse).items()
            for state, value in _states(type(current))
        ]

    @staticmethod
    def _breaker_rates(index: int) -> list[Observation]:
        """One rate (0: failures, 1: slow calls) per windowed breaker name: the highest of theirs."""
        return _named(_fold(BREAKERS.items(), BreakerView, _RATES[index], max))

    def _breaker_failure_rates(self) -> list[Observation]:
        return self._breaker_rates(0)

    def _breaker_slow_call_rates(self) -> list[Observation]:
        return self._breaker_rates(1)

    @staticmethod
    def _breaker_thresholds() -> list[Observation]:
        """The failure rate threshold of each windowed breaker name (the lowest of theirs)."""
        return _named(_fold(BREAKERS.items(), BreakerView, _THRESHOLD, min))

    @staticmethod
    def _breaker_calls() -> list[Observation]:
        """Calls through each breaker name, by how it counted them (summed over same-named breakers)."""
        name_key, result_key = sc.NAME, sc.CB_CALL_RESULT
        return [
            Observation(count, {name_key: name, result_key: result})
            for name, counts in _fold(BREAKERS.items(), BreakerView, _breaker_counts, _sum_each).items()
            for result, count in zip(sc.CB_CALL_RESULTS, counts, strict=True)
        ]

    @staticmethod
    def _bulkheads(read: Callable[[BulkheadView], int]) -> list[Observation]:
        """One gauge value per bulkhead name: ``read`` summed over the live bulkheads of that name."""
        return _named(_fold(BULKHEADS.items(), BulkheadView, read, operator.add))

    def _bulkhead_active(self) -> list[Observation]:
        return self._bulkheads(_ACTIVE)

    def _bulkhead_queued(self) -> list[Observation]:
        return self._bulkheads(_QUEUED)

    def _bulkhead_concurrency_limit(self) -> list[Observation]:
        return self._bulkheads(_CONCURRENCY_LIMIT)

    def _bulkhead_queue_limit(self) -> list[Observation]:
        return self._bulkheads(_QUEUE_LIMIT)

    @staticmethod
    def _bulkhead_utilizations(read: Callable[[BulkheadView], float | None]) -> list[Observation]:
        """One share per bulkhead name: ``read`` in its most loaded instance (or key)."""
        return _named(_fold(BULKHEADS.items(), BulkheadView, read, max))

    def _bulkhead_utilization(self) -> list[Observation]:
        return self._bulkhead_utilizations(_utilization)

    def _bulkhead_queue_utilization(self) -> list[Observation]:
        return self._bulkhead_utilizations(_queue_utilization)

    @staticmethod
    def _rate_limiter_permits() -> list[Observation]:
        """Permit requests of each rate limiter name, by answer (summed over same-named limiters)."""
        name_key, result_key = sc.NAME, sc.RL_PERMIT_RESULT
        return [
            Observation(count, {name_key: name, result_key: result})
            for name, counts in _fold(
                RATE_LIMITERS.items(), RateLimiterView, _permit_counts, _sum_each
            ).items()
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
    def _config_stale() -> list[Observation]:
        """1 per watched file while its last changed version was refused, else 0 (any of its watches)."""
        file_key = sc.CONFIG_FILE
        return [
            Observation(stale, {file_key: path})
            for path, stale in _fold(WATCHES.items(), WatchView, _stale, max).items()
        ]

    def _telemetry_errors(self) -> list[Observation]:
        return [Observation(self._owner.total_errors + self._carried)]


_FITS: Final[dict[tuple[type, type], bool]] = {}
"""Whether a class has what a view protocol reads, by (class, protocol): checked once per class."""

_SEVERITY: Final = {value: rank for rank, value in enumerate(sc.CB_STATE_SEVERITY)}
"""How severe a breaker state is, by value: its place in ``sc.CB_STATE_SEVERITY`` (closed, or
any other value, 0)."""


def _severity(state: enum.Enum) -> int:
    """Rank a breaker state by ``sc.CB_STATE_SEVERITY``: the higher, the more severe."""
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


V = TypeVar("V")

_NAME: Final = operator.attrgetter("name")


def _fold(
    items: Iterable[object],
    view: type,
    read: Callable[[Any], V | None],
    merge: Callable[[V, V], V],
    key: Callable[[Any], Hashable] = _NAME,
) -> dict[Any, V]:
    """What ``read`` gives for each instance that fits ``view``, by series (``key``: its name).

    The one rule of instances that share a series: their values are combined by ``merge`` (a
    sum for counts, the most severe state, the highest rate, the lowest threshold). ``None``
    from ``read`` means nothing to report for that instance. Each instance is read once; the
    view check is made once per run of instances of one class.
    """
    folded: dict[Any, V] = {}
    last: type | None = None
    fits = False
    for item in items:
        if type(item) is not last:
            last = type(item)
            fits = _fits(item, view)
        if not fits:
            continue
        value = read(item)
        if value is None:
            continue
        series = key(item)
        earlier = folded.get(series)
        folded[series] = value if earlier is None else merge(earlier, value)
    return folded


def _keyed(
    registry: Registry[Named], name_key: str, read: Callable[[KeyedView], int]
) -> Callable[[], list[Observation]]:
    """A callback reporting ``read(keeper)`` for each keeper of keys in ``registry``, by its name.

    The keepers are the named policies (``POLICIES``, under ``resilience.policy``) and the keyed
    rate limiters (``KEYED_RATE_LIMITERS``, under ``resilience.name``). What it reads (the keys
    kept, ``max_keys``, the keys evicted) is summed over same-named keepers (policies of several
    managers).
    """

    def observe() -> list[Observation]:
        return [
            Observation(value, {name_key: name})
            for name, value in _fold(registry.items(), KeyedView, read, operator.add).items()
        ]

    return observe


def _named(values: dict[str, float]) -> list[Observation]:
    """One observation per name, with the name as its only attribute."""
    name_key = sc.NAME
    return [Observation(value, {name_key: name}) for name, value in values.items()]


def _sum_each(earlier: list[int], value: list[int]) -> list[int]:
    """Counts of two namesakes, added position by position."""
    return [a + b for a, b in zip(earlier, value, strict=True)]


def _worse(earlier: enum.Enum, state: enum.Enum) -> enum.Enum:
    """The more severe of two namesakes' breaker states (the earlier one on a tie)."""
    return state if _severity(state) > _severity(earlier) else earlier


_STATES: Final[dict[type, tuple[tuple[enum.Enum, str], ...]]] = {}
"""Each breaker state class's members with their attribute values, listed once per class."""


def _states(kind: type[enum.Enum]) -> tuple[tuple[enum.Enum, str], ...]:
    """The members of a state class, each with its ``resilience.circuit_breaker.state`` value."""
    states = _STATES.get(kind)
    if states is None:
        states = _STATES[kind] = tuple((state, str(state.value)) for state in kind)
    return states


def _pipeline_counts(pipeline: Pipeline) -> list[int]:
    return pipeline.stats.counts()  # disjoint counts, each monotonic, in _OUTCOMES order


def _execution_series(pipeline: Pipeline) -> tuple[str, str, str | None]:
    """A pipeline's execution series: its policy, its kind and its opted-in key."""
    source = pipeline.telemetry.source
    return (source.pipeline or source.name, source.kind, source.metric_key)


def _breaker_counts(breaker: BreakerView) -> list[int]:
    """A breaker's calls by result, in ``CB_CALL_RESULTS`` order."""
    stats = breaker.stats
    return [
        stats.total_successes,
        stats.total_failures,
        stats.total_rejected,
        stats.total_ignored,
        stats.total_cancelled,
    ]


def _permit_counts(limiter: RateLimiterView) -> list[int]:
    """A rate limiter's permit requests by answer, in ``RL_PERMIT_RESULTS`` order."""
    stats = limiter._own_stats()
    return [stats["admitted"] - stats["waited"], stats["waited"], stats["rejected"], stats["cancelled"]]


_STATE: Final = operator.methodcaller("peek_state")  # a collection never moves a breaker
_RATES: Final = (
    lambda breaker: None if (rates := breaker.rates()) is None else rates[0],
    lambda breaker: None if (rates := breaker.rates()) is None else rates[1],
)
_THRESHOLD: Final = operator.attrgetter("failure_rate_threshold")
_KEYS: Final = operator.attrgetter("keys")
_MAX_KEYS: Final = operator.attrgetter("max_keys")
_EVICTED_KEYS: Final = operator.attrgetter("evicted_keys")
_ACTIVE: Final = operator.attrgetter("stats.active")
_QUEUED: Final = operator.attrgetter("stats.waiting")
_CONCURRENCY_LIMIT: Final = operator.attrgetter("stats.max_concurrent")
_QUEUE_LIMIT: Final = operator.attrgetter("stats.max_waiting")


def _stale(watch: WatchView) -> int:
    """1 for a watch whose last changed file was refused, else 0."""
    return int(watch.stale)


def _utilization(bulkhead: BulkheadView) -> float | None:
    """A bulkhead's share of its concurrency limit in use (``None`` without a limit to share)."""
    stats = bulkhead.stats
    limit = stats.max_concurrent
    return stats.active / limit if limit > 0 else None


def _queue_utilization(bulkhead: BulkheadView) -> float | None:
    """A bulkhead's share of its queue limit in use (``None`` without a queue to share)."""
    stats = bulkhead.stats
    limit = stats.max_waiting
    return stats.waiting / limit if limit > 0 else None


class _Readers:
    """The observable instruments of one meter, each created once, read through its current listener.

    :meth:`use` makes ``owner`` the listener whose readers the instruments' callbacks call, and
    creates the instruments of names the meter does not have yet. A callback reports nothing
    while its listener is inactive (closed: :func:`~otel_resilience.telemetry.uninstrument`) or
    has no reader of that name, and never raises: a failure is counted by the listener.
    """

    __slots__ = ("__weakref__", "_carried", "_current", "_lock", "_made")

    _BY_METER: ClassVar[weakref.WeakKeyDictionary[Meter, _Readers]] = weakref.WeakKeyDictionary()
    _MAKING: ClassVar[threading.Lock] = fork_safe(threading.Lock())

    def __init__(self) -> None:  # holds no reference to its meter: the meter's death ends it
        self._lock = fork_safe(threading.Lock())
        self._made: set[str] = set()
        self._current: tuple[Owner, Mapping[str, Callable[[], list[Observation]]]] | None = None
        self._carried = 0

    @classmethod
    def of(cls, meter: Meter) -> _Readers:
        """Return the readers of ``meter`` (made at its first listener)."""
        with cls._MAKING:
            found = cls._BY_METER.get(meter)
            if found is None:
                found = cls._BY_METER[meter] = cls()
        return found

    def use(self, meter: Meter, owner: Owner, readers: Mapping[str, Callable[[], list[Observation]]]) -> int:
        """Read through ``owner``'s ``readers`` from now on; create the instruments still missing.

        Returns:
            The telemetry errors the listeners before ``owner`` counted on this meter, which its
            ``resilience.telemetry.errors`` carries on (a counter never goes down).
        """
        with self._lock:
            carried = self._read_through_locked(owner, readers)
            for name in readers:
                if name not in self._made:
                    self._made.add(name)
                    self._create(meter, name)
            return carried

    def read_through(self, owner: Owner, readers: Mapping[str, Callable[[], list[Observation]]]) -> int:
        """Read through ``owner``'s ``readers`` from now on (their instruments exist); as :meth:`use`."""
        with self._lock:
            return self._read_through_locked(owner, readers)

    def _read_through_locked(
        self, owner: Owner, readers: Mapping[str, Callable[[], list[Observation]]]
    ) -> int:
        """Make ``owner`` the current listener; return the errors it carries on (see :meth:`use`).

        The errors exported stay where they were: those the listener read through until now
        reported, less those ``owner`` reports itself.
        """
        if self._current is not None and self._current[0] is not owner:
            self._carried += self._current[0].total_errors - owner.total_errors
        self._current = (owner, readers)
        return self._carried

    def _create(self, meter: Meter, name: str) -> None:
        spec = sc.instrument(name)
        callback = self._callback(name)
        if spec.kind is sc.InstrumentKind.OBSERVABLE_COUNTER:
            meter.create_observable_counter(
                spec.name, callbacks=[callback], unit=spec.unit, description=spec.description
            )
        else:
            meter.create_observable_gauge(
                spec.name, callbacks=[callback], unit=spec.unit, description=spec.description
            )

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """The instrument's callback: the current listener's reader of ``name``, guarded."""

        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            current = self._current
            if current is None:
                return ()
            owner, readers = current
            read = readers.get(name)
            if read is None or not owner.active:
                return ()
            try:
                return read()
            except Exception:  # noqa: BLE001 - telemetry must never break the app
                owner.failed(f"observable {name}")
                return ()

        return callback
