"""The breaker's states, its live counts and its permits."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypedDict, cast

from otel_resilience.engine.counting import Counter, CounterValue
from otel_resilience.engine.validation import matched_by_class
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.circuit_breaker.config import (
    ALWAYS_IGNORED,
    CircuitBreakerConfig,
    break_seconds,
)

if TYPE_CHECKING:
    from otel_resilience.patterns.circuit_breaker.core import _BreakerCore


class CircuitState(enum.Enum):
    """The state of a circuit breaker. Values appear in telemetry and in ``get_stats()``."""

    CLOSED = "closed"
    """Normal operation: calls go through and failures are counted."""
    OPEN = "open"
    """Failing: calls are rejected at once with :class:`~otel_resilience.errors.CircuitOpenError`."""
    HALF_OPEN = "half_open"
    """Probing: at most ``half_open_max_calls`` calls at a time test the dependency."""
    DISABLED = "disabled"
    """Switched off by an operator (:meth:`~otel_resilience.CircuitBreaker.disable`): every call
    goes through and is counted; nothing opens the breaker until it is reset."""
    METRICS_ONLY = "metrics_only"
    """Shadow mode for a safe roll-out (:meth:`~otel_resilience.CircuitBreaker.metrics_only`):
    every call goes through and is counted, and a trip the breaker would make is reported as a
    ``would_open`` state change (then its counts start again), but no call is ever rejected."""


_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN
_DISABLED: Final = CircuitState.DISABLED
_METRICS_ONLY: Final = CircuitState.METRICS_ONLY


class CircuitBreakerStatsDict(TypedDict):
    """The snapshot returned by :meth:`CircuitBreaker.get_stats`."""

    name: str
    state: str
    failure_count: int
    success_count: int
    total_requests: int
    total_successes: int
    total_failures: int
    total_rejected: int
    total_ignored: int
    total_cancelled: int
    times_opened: int
    half_open_in_flight: int
    retry_after: float
    last_failure_type: str | None
    failure_rate: float | None
    slow_call_rate: float | None


class CircuitBreakerStats:
    """Live counts of one breaker, as plain integers (read them; never write them).

    Observable instruments read these attributes directly, so exporting metrics builds no dict.
    Totals cover the breaker's lifetime; ``failure_count`` and ``success_count`` are the counts
    of the current state period. The two counts that move on the hot paths (``total_successes``
    while CLOSED, ``total_rejected`` while OPEN) are exact lock-free counters
    (:mod:`otel_resilience.engine.counting`), bumped without the lock; the rejections' counter
    is made when the breaker first leaves its first CLOSED period (no call is rejected before).

    Attributes:
        failure_count: Consecutive counted failures in the current CLOSED period (with a
            sliding window: the failures the window holds, as of its latest call or read of
            its rates: ``get_stats()`` and ``rates()`` read it now), kept while OPEN, so it
            shows what tripped the breaker; 0 in HALF_OPEN.
        success_count: Probe successes in the current HALF_OPEN period.
        total_successes: Calls that returned (or raised an error that is not recorded).
        total_failures: Calls that raised a recorded error.
        total_rejected: Calls rejected without calling the dependency.
        total_ignored: Calls that raised an ignored error (or an inner rejection, or were given
            to the wrong driver).
        total_cancelled: Calls cancelled (or interrupted) while in flight.
        times_opened: Transitions into OPEN from another state (trips, forced and isolated); a
            forced re-opening of an OPEN breaker (reported ``open`` to ``open``) is none.
        last_failure_type: The type of the latest call that failed (``error_type_name``, or
            ``"result"`` for a value ``record_result`` counted as a failure; a reclaimed probe
            sets none), ``None`` before any: kept with the totals, so that a call in flight at a
            reload, counted by the core that admitted it, is the breaker's latest failure too.
    """

    __slots__ = (
        "_rejected",
        "_successes",
        "failure_count",
        "last_failure_type",
        "success_count",
        "times_opened",
        "total_cancelled",
        "total_failures",
        "total_ignored",
    )

    def __init__(self) -> None:
        self.failure_count = 0
        self.success_count = 0
        self._successes = Counter()
        self.total_failures = 0
        self._rejected: Counter | None = None  # made by the first transition (see above)
        self.total_ignored = 0
        self.total_cancelled = 0
        self.times_opened = 0
        self.last_failure_type: str | None = None

    total_successes = CounterValue(
        "_successes", "Calls that returned (or raised an error that is not recorded)."
    )

    @property
    def total_rejected(self) -> int:
        """Calls rejected without calling the dependency."""
        rejected = self._rejected
        return 0 if rejected is None else rejected.value

    @property
    def total_requests(self) -> int:
        """Calls that have ended: every success, failure, rejection, ignored and cancelled call."""
        return self._requests(self.total_successes, self.total_rejected)

    def _requests(self, successes: int, rejected: int) -> int:
        """``total_requests`` given the two lock-free counts as read once (a snapshot adds up)."""
        return successes + self.total_failures + rejected + self.total_ignored + self.total_cancelled


@dataclass(slots=True, eq=False)
class Permit:
    """One state period of a breaker: what admits its calls, and what the period holds.

    One permit object exists per state period and is shared by every call admitted in it, so
    admission allocates nothing; permits are told apart by identity. A permit that is no longer
    its breaker's current one is *stale*: its outcome counts in the lifetime totals only, unless
    the period's probes were *reclaimed*: then every call it admitted that was still in flight
    was counted as failed when the breaker re-opened, and its end counts nothing more.

    What only one period needs lives here rather than in every breaker: the first period of
    every breaker is one shared CLOSED permit, which nothing ever changes (only a HALF_OPEN or
    OPEN period's fields change, under the breaker's lock).

    Attributes:
        generation: The state period that issued the permit (never changes).
        state: The state it was issued in (never changes).
        opened_until: When an OPEN period ends, on the breaker's clock (``-inf`` in the other
            states; ``inf`` when forced open for good). Moved only by a replica's adoption of
            the shared OPEN state.
        reopens: The re-opens of the current outage episode (0 on the opening transition;
            carried to the next periods until the breaker next opens from CLOSED).
        in_flight: HALF_OPEN: the probes running now.
        probe_started: HALF_OPEN: when the newest probe started (with ``max_half_open_wait``).
        slow_probes: HALF_OPEN: the probe successes that were slow (with ``slow_call_duration``),
            judged when the probe successes reach ``success_threshold``.
        reclaimed: HALF_OPEN: set when the period's hung probes were counted as failed
            (``max_half_open_wait``).
        retired: The period a retired core (replaced by a reload) keeps: it never moves again,
            and its calls count in the totals only.
        open_error: What makes the period's rejections (OPEN, HALF_OPEN): ``CircuitOpenError``,
            or, for a keyed policy's key, one naming the key (set at the transition, from the
            key the core reports as; kept here rather than in every breaker).
    """

    generation: int
    state: CircuitState
    opened_until: float = -math.inf
    reopens: int = 0
    in_flight: int = 0
    probe_started: float = 0.0
    slow_probes: int = 0
    reclaimed: bool = False
    retired: bool = False
    open_error: Callable[[str, str, float], CircuitOpenError] = CircuitOpenError


_LOG: Final = logging.getLogger("otel_resilience")

_OPEN_VALUE: Final = CircuitState.OPEN.value
_HALF_OPEN_VALUE: Final = CircuitState.HALF_OPEN.value


class Settings:
    """What a breaker's core reads from its configuration, derived once and shared.

    Immutable: every breaker of an equal configuration (all those at the default one) shares
    one (:func:`settings_for`), so a breaker carries one reference instead of fifteen fields.
    """

    __slots__ = (
        "break_duration",
        "config",
        "failure_threshold",
        "half_open_max_calls",
        "ignore",
        "ignore_by_class",
        "max_half_open_wait",
        "minimum_calls",
        "plain",
        "predicate",
        "rate_threshold",
        "record",
        "record_result",
        "slow_call_duration",
        "slow_threshold",
        "success_threshold",
        "timeout",
    )

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self.config = config  # the first of the equal configurations that share these settings
        self.failure_threshold = config.failure_threshold
        self.success_threshold = config.success_threshold
        self.timeout = config.timeout
        self.half_open_max_calls = config.half_open_max_calls
        record = config.record_exceptions
        self.record: tuple[type[BaseException], ...] = ()
        self.predicate: Callable[[BaseException], bool] | None = None
        if isinstance(record, tuple):
            self.record = record
        else:
            self.predicate = cast("Callable[[BaseException], bool]", record)
        ignore = cast("tuple[type[Exception], ...]", config.ignore_exceptions)
        self.ignore: tuple[type[BaseException], ...] = (
            (*ALWAYS_IGNORED, *ignore) if ignore else ALWAYS_IGNORED
        )
        self.ignore_by_class = matched_by_class(self.ignore)
        """Whether the error's class answers for :attr:`ignore` (else ``isinstance``, the rule)."""
        # Read only with a sliding window, where the config holds each of them (its validation
        # stores the default of one left None); without a window they are None, and unread.
        self.rate_threshold = cast("float", config.failure_rate_threshold)
        minimum = config.minimum_calls  # a default derived from the window is an int subclass
        self.minimum_calls = cast("int", None if minimum is None else int(minimum))
        self.slow_call_duration = config.slow_call_duration
        self.slow_threshold = cast("float", config.slow_call_rate_threshold)
        self.record_result: Callable[[Any], bool] | None = config.record_result
        self.break_duration = config.break_duration
        self.max_half_open_wait = config.max_half_open_wait
        self.plain = self.slow_call_duration is None and self.record_result is None
        """No call timing and no result judging: a call that returned is a success, nothing more."""

    def open_seconds(self, name: str, openings: int, *, report: bool = True) -> float:
        """Seconds OPEN for the ``openings``-th opening in a row (``break_duration``, else ``timeout``).

        A ``break_duration`` that fails is logged (naming the breaker ``name``; unless
        ``report`` is false: a HALF_OPEN rejection asks what the next opening would last, and
        the opening itself logs the failure) and ``timeout`` is used: a broken generator must not
        break the call that tripped the breaker.
        """
        generate = self.break_duration
        if generate is None:
            return self.timeout
        try:
            return break_seconds(generate, openings)
        except Exception:  # noqa: BLE001 - logged; the call that tripped goes on
            if not report:
                return self.timeout
            _LOG.warning(
                "circuit breaker %r: break_duration(%d) failed; staying open for timeout=%gs",
                name,
                openings,
                self.timeout,
                exc_info=True,
            )
            return self.timeout

    def with_probes(self, probes: int) -> Settings:
        """Return these settings with ``half_open_max_calls = probes``: a copy, these stay shared.

        A breaker whose probes a shared store grants (a lease per probe across replicas) runs
        with a limit of its own; every other breaker keeps the shared object.
        """
        if probes == self.half_open_max_calls:
            return self
        copy = Settings.__new__(Settings)
        for field in Settings.__slots__:
            setattr(copy, field, getattr(self, field))
        copy.half_open_max_calls = probes
        return copy


_SHARED: Final[dict[CircuitBreakerConfig, Settings]] = {}
_SHARED_MAX: Final = 256
"""Configurations remembered at once (then the memory starts again: a bound, not an LRU)."""


_LAST: list[tuple[CircuitBreakerConfig, Settings]] = []
"""The configuration asked for last and its settings: no hashing for the same object again."""


def settings_for(config: CircuitBreakerConfig) -> Settings:
    """Return the :class:`Settings` of ``config``, shared with every equal configuration.

    A configuration that names a shared store is not remembered: the memory would keep the store
    (its connections and threads) alive after the last breaker using it closed.
    """
    if config.store is not None:
        return Settings(config)
    last = _LAST[0] if _LAST else None
    if last is not None and last[0] is config:
        return last[1]
    try:
        found = _SHARED.get(config)
    except TypeError:  # a field that cannot be hashed: this configuration's own settings
        return Settings(config)
    if found is None:
        found = Settings(config)
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[config] = found
    _LAST[:] = ((config, found),)
    return found


def snapshot(core: _BreakerCore) -> CircuitBreakerStatsDict:
    """Return every count and the state of ``core`` as a new dict (see :meth:`CircuitBreaker.get_stats`).

    The state and ``retry_after`` are read under one lock, the move of an OPEN breaker whose timer
    elapsed to HALF_OPEN made there (and reported after it): an OPEN period that ends between
    the two readings of the clock is read HALF_OPEN, never OPEN with no time left.
    """
    with core._lock or core._make_lock():
        change = core._poll_locked()
        retry_after = core.retry_after()
        if not retry_after and change is None:  # OPEN no longer, if its period ended meanwhile
            change = core._poll_locked()
        state = core._permit.state
        rates = core._rates_locked()
        stats = core.stats
        # The two counts bumped without the lock are read once, so that the totals add up.
        successes, rejected = stats.total_successes, stats.total_rejected
        read: CircuitBreakerStatsDict = {
            "name": core.name,
            "state": state.value,
            "failure_count": stats.failure_count,
            "success_count": stats.success_count,
            "total_requests": stats._requests(successes, rejected),
            "total_successes": successes,
            "total_failures": stats.total_failures,
            "total_rejected": rejected,
            "total_ignored": stats.total_ignored,
            "total_cancelled": stats.total_cancelled,
            "times_opened": stats.times_opened,
            "half_open_in_flight": core._permit.in_flight,
            "retry_after": retry_after,
            "last_failure_type": stats.last_failure_type,
            "failure_rate": rates[0] if rates else None,
            "slow_call_rate": rates[1] if rates else None,
        }
    core._emit(change)
    return read
