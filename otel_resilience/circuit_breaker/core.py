"""The breaker's sans-I/O state machine (:class:`_BreakerCore`), shared by all its links."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Final, cast

from otel_resilience.circuit_breaker.config import CircuitBreakerConfig
from otel_resilience.circuit_breaker.state import (
    _CLOSED,
    _HALF_OPEN,
    _HALF_OPEN_VALUE,
    _OPEN,
    _OPEN_VALUE,
    CircuitBreakerStats,
    CircuitBreakerStatsDict,
    CircuitState,
    Permit,
)
from otel_resilience.engine.calling import WrongDriver
from otel_resilience.engine.clock import Clock
from otel_resilience.engine.events import Event, StateChanged, StrategyTelemetry, error_type_name
from otel_resilience.errors import CircuitOpenError, ExecutionRejectedError

_REASON_FAILURE_THRESHOLD: Final = "failure_threshold"
_REASON_TIMEOUT_ELAPSED: Final = "timeout_elapsed"
_REASON_PROBE_FAILED: Final = "probe_failed"
_REASON_PROBE_SUCCEEDED: Final = "probe_succeeded"
_REASON_RESET: Final = "reset"
_ALWAYS_IGNORED: Final[tuple[type[BaseException], ...]] = (ExecutionRejectedError,)
"""Errors a breaker never counts: an inner rejection (shared by every breaker without others)."""
_NEVER_OPENED: Final = -math.inf

_IGNORED: Final = 0
_FAILURE: Final = 1
_SUCCESS: Final = 2


class _BreakerCore:
    """The sans-I/O state machine: no awaits, no sleeps, one short lock for transitions.

    ``self._permit`` is the current state period: its ``state`` is read without the lock (one
    attribute load is an atomic snapshot), and every transition replaces it under the lock.
    Events are built under the lock and reported after it is released, so a listener may read
    the breaker without deadlocking.
    """

    __slots__ = (
        "_clock",
        "_failure_threshold",
        "_generation",
        "_half_open_max_calls",
        "_ignore",
        "_in_flight",
        "_lock",
        "_opened_until",
        "_permit",
        "_predicate",
        "_record",
        "_reopens",
        "_success_threshold",
        "_telemetry",
        "_timeout",
        "config",
        "last_failure_type",
        "name",
        "stats",
    )

    def __init__(
        self, name: str, config: CircuitBreakerConfig, clock: Clock, telemetry: StrategyTelemetry
    ) -> None:
        self.name = name
        self.config = config
        self.stats = CircuitBreakerStats()
        self.last_failure_type: str | None = None
        self._clock = clock
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._failure_threshold = config.failure_threshold
        self._success_threshold = config.success_threshold
        self._timeout = config.timeout
        self._half_open_max_calls = config.half_open_max_calls
        record = config.record_exceptions
        self._record: tuple[type[BaseException], ...] = ()
        self._predicate: Callable[[BaseException], bool] | None = None
        if isinstance(record, tuple):
            self._record = record
        else:
            self._predicate = cast("Callable[[BaseException], bool]", record)
        ignore = cast("tuple[type[Exception], ...]", config.ignore_exceptions)
        self._ignore: tuple[type[BaseException], ...] = (
            (ExecutionRejectedError, *ignore) if ignore else _ALWAYS_IGNORED
        )
        self._generation = 0
        self._permit = Permit(0, _CLOSED)
        self._in_flight = 0
        self._opened_until = _NEVER_OPENED
        self._reopens = 0

    # -- reads (lock-free) -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN breaker whose timer elapsed becomes HALF_OPEN here."""
        permit = self._permit
        if permit.state is _OPEN and self._clock.now() >= self._opened_until:
            with self._lock:
                change = self._poll_locked()
                state = self._permit.state
            self._emit(change)
            return state
        return permit.state

    def retry_after(self) -> float:
        """Seconds until a probe is let through: 0 unless OPEN, ``inf`` when forced open for good."""
        if self._permit.state is not _OPEN:
            return 0.0
        return max(0.0, self._opened_until - self._clock.now())

    # -- the permission protocol -------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """Admit one call: return its permit, or ``None`` when it is rejected (and counted).

        CLOSED admits, and OPEN before its timer elapsed rejects, without the lock: each reads
        one state period (an atomic snapshot), and a transition racing with it is ordered after.
        """
        permit = self._permit
        state = permit.state
        if state is _CLOSED:
            return permit
        if state is _OPEN and self._clock.now() < self._opened_until:
            next(self.stats._rejected)
            return None
        with self._lock:
            change = self._poll_locked()
            admitted = self._admit_locked()
        self._emit(change)
        return admitted

    def release(self, permit: Permit) -> None:
        """Give a cancelled (or interrupted) call's permit back; it counts as neither outcome."""
        with self._lock:
            self.stats.total_cancelled += 1
            self._release_locked(permit)

    def end(self, permit: Permit, caught: BaseException | None) -> None:
        """End a call that raised a ``BaseException`` that is not an ``Exception``.

        A function that does not fit the driver (:class:`WrongDriver`) is ignored, as an error
        the breaker does not hold against the dependency; anything else is a cancellation
        (:meth:`release`).
        """
        if type(caught) is not WrongDriver:
            self.release(permit)
            return
        with self._lock:
            self.stats.total_ignored += 1
            self._release_locked(permit)

    def rejection(self) -> CircuitOpenError:
        """Build the error for a call :meth:`try_acquire` just rejected.

        A HALF_OPEN rejection's ``retry_after`` is the breaker's ``timeout`` (see
        :class:`~otel_resilience.errors.CircuitOpenError`), never ``0.0``.
        """
        if self._permit.state is _HALF_OPEN:
            return CircuitOpenError(self.name, _HALF_OPEN_VALUE, self._timeout)
        remaining = self._opened_until - self._clock.now()
        return CircuitOpenError(self.name, _OPEN_VALUE, max(0.0, remaining))

    def reject_open(self) -> float:
        """Reject (and count) a call while OPEN before its timer elapsed, reading the clock once.

        Call it when the permit's state is OPEN. It is lock-free, as :meth:`try_acquire`'s OPEN
        path is. A result ``<= 0`` (the timer elapsed, or a transition is being published)
        counts nothing and means "ask :meth:`try_acquire`", which takes the lock.

        Returns:
            The seconds left in the OPEN period (``> 0``: the call is rejected), or ``<= 0``.
        """
        # opened_until - now > 0 exactly when now < opened_until (IEEE subtraction of finite
        # values is exact in sign; an infinite opened_until gives inf).
        remaining: float = self._opened_until - self._clock.now()
        if remaining > 0.0:
            next(self.stats._rejected)
        return remaining

    # -- manual control ----------------------------------------------------------------------

    def force_open(self, duration: float | None, reason: str) -> None:
        """Open now, for ``duration`` seconds (then HALF_OPEN as after a trip) or until reset."""
        with self._lock:
            change = self._transition_locked(_OPEN, reason, math.inf if duration is None else duration)
        self._emit(change)

    def reset(self) -> None:
        """Close now and clear the counts of the current period."""
        with self._lock:
            change = self._transition_locked(_CLOSED, _REASON_RESET)
        self._emit(change)

    def snapshot(self) -> CircuitBreakerStatsDict:
        """Return every count and the state as a new dict (see :meth:`CircuitBreaker.get_stats`)."""
        state = self.state
        with self._lock:
            stats = self.stats
            return {
                "name": self.name,
                "state": state.value,
                "failure_count": stats.failure_count,
                "success_count": stats.success_count,
                "total_requests": stats.total_requests,
                "total_successes": stats.total_successes,
                "total_failures": stats.total_failures,
                "total_rejected": stats.total_rejected,
                "total_ignored": stats.total_ignored,
                "total_cancelled": stats.total_cancelled,
                "times_opened": stats.times_opened,
                "half_open_in_flight": self._in_flight,
                "retry_after": self.retry_after(),
                "last_failure_type": self.last_failure_type,
            }

    # -- internals ---------------------------------------------------------------------------

    def _classify(self, error: Exception) -> int:
        """Return ``_IGNORED``, ``_FAILURE`` or ``_SUCCESS`` for an error (outside the lock)."""
        if isinstance(error, self._ignore):
            return _IGNORED
        predicate = self._predicate
        recorded = predicate(error) if predicate is not None else isinstance(error, self._record)
        return _FAILURE if recorded else _SUCCESS

    def _poll_locked(self) -> StateChanged | None:
        """Move OPEN to HALF_OPEN if its timer elapsed."""
        if self._permit.state is _OPEN and self._clock.now() >= self._opened_until:
            return self._transition_locked(_HALF_OPEN, _REASON_TIMEOUT_ELAPSED)
        return None

    def _admit_locked(self) -> Permit | None:
        """Return a permit for the current state, or count a rejection and return ``None``."""
        permit = self._permit
        state = permit.state
        if state is _CLOSED:
            return permit
        if state is _HALF_OPEN and self._in_flight < self._half_open_max_calls:
            self._in_flight += 1
            return permit
        next(self.stats._rejected)
        return None

    def _on_success_locked(self, permit: Permit) -> StateChanged | None:
        stats = self.stats
        next(stats._successes)
        if permit is not self._permit:
            return None
        if permit.state is _CLOSED:
            stats.failure_count = 0
            return None
        self._in_flight -= 1
        stats.success_count += 1
        if stats.success_count >= self._success_threshold:
            return self._transition_locked(_CLOSED, _REASON_PROBE_SUCCEEDED)
        return None

    def _on_failure_locked(self, permit: Permit, error: Exception) -> StateChanged | None:
        stats = self.stats
        stats.total_failures += 1
        self.last_failure_type = error_type_name(error)
        if permit is not self._permit:
            return None
        if permit.state is _HALF_OPEN:
            return self._transition_locked(_OPEN, _REASON_PROBE_FAILED)
        stats.failure_count += 1
        if stats.failure_count >= self._failure_threshold:
            return self._transition_locked(_OPEN, _REASON_FAILURE_THRESHOLD)
        return None

    def _release_locked(self, permit: Permit) -> None:
        if permit is self._permit and permit.state is _HALF_OPEN:
            self._in_flight -= 1

    def _transition_locked(
        self, new: CircuitState, reason: str, open_for: float | None = None
    ) -> StateChanged | None:
        """Start a new state period in ``new``; return the event to report (if anyone listens)."""
        old = self._permit.state
        self._generation += 1
        self._permit = Permit(self._generation, new)
        self._in_flight = 0
        stats = self.stats
        stats.success_count = 0
        if new is _OPEN:
            if old is _CLOSED:
                self._reopens = 0  # a new outage episode
            elif old is _HALF_OPEN:
                self._reopens += 1
            if old is not _OPEN:
                stats.times_opened += 1
            self._opened_until = self._clock.now() + (self._timeout if open_for is None else open_for)
        else:
            stats.failure_count = 0
        if old is new or not self._telemetry.enabled:
            return None
        return StateChanged(old.value, new.value, reason, self._reopens)

    def _emit(self, change: StateChanged | None) -> None:
        """Report a state change (outside the lock)."""
        if change is not None:
            self._telemetry.report(Event.STATE_CHANGED, change)
