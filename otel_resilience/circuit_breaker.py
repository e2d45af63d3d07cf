"""Circuit breaker: stop calling a dependency that keeps failing, then probe it back to health.

States::

    CLOSED --failure_threshold consecutive failures--> OPEN --timeout elapsed--> HALF_OPEN
    HALF_OPEN --success_threshold probe successes--> CLOSED
    HALF_OPEN --any counted failure--> OPEN (fresh timer)

The state machine is a sans-I/O core (:class:`_BreakerCore`) with the Resilience4j permission
protocol: :meth:`~_BreakerCore.try_acquire` hands out a :class:`Permit` (or ``None``: rejected),
and the call ends with exactly one of :meth:`~_BreakerCore.on_success`,
:meth:`~_BreakerCore.on_failure` or :meth:`~_BreakerCore.release` (cancelled). The async and
sync drivers are a dozen lines each over that core. The user's function never runs under the
core's lock.

An *outage episode* runs from a trip out of CLOSED until the breaker closes again; every
HALF_OPEN -> OPEN in between is a *re-open*, counted in the ``reopens`` of the reported
:class:`~otel_resilience.engine.events.StateChanged` (the alert system raises one alert per
episode from it).

Every permit carries the *generation* of the state period that issued it. Each transition starts
a new generation, so a slow call admitted before a trip can never move the consecutive-failure or
probe counts of a later period; it is still counted in the lifetime totals.

How an exception is classified (first match wins):

0. A function that does not fit the driver (a plain function given to the async API, a coroutine
   function to the sync API): ignored, the permit is given back. It is a programming error, not
   an outcome of the dependency; the caller gets ``TypeError``, which the pipeline counts as a
   failed execution (as it counts every error that reaches the caller).
1. :class:`~otel_resilience.errors.ExecutionRejectedError` from an inner layer (a bulkhead
   rejection, an inner breaker): ignored; the dependency was never called.
2. ``ignore_exceptions``: ignored: neither success nor failure, the probe permit is given back.
3. ``record_exceptions`` (types or a predicate): a failure.
4. Anything else: the dependency answered, so it counts as a success (Resilience4j's rule).

``asyncio.CancelledError``, ``KeyboardInterrupt`` and ``SystemExit`` are never caught as
outcomes: the permit is released, nothing is counted but ``total_cancelled``, and the exception
propagates.
"""

from __future__ import annotations

import enum
import math
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, ParamSpec, TypedDict, TypeVar, cast, overload

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import (
    CallRejected,
    Event,
    Outcome,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.engine.pipeline import Guard, Pipeline, PipelineBuilder, protect_with, standalone
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.step import Step, WrongDriver
from otel_resilience.engine.validation import (
    check_duration,
    check_exception_types,
    check_int,
    check_name,
    fail,
)
from otel_resilience.errors import CircuitOpenError, ExecutionRejectedError

__all__ = [
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_HALF_OPEN_MAX_CALLS",
    "DEFAULT_IGNORE_EXCEPTIONS",
    "DEFAULT_RECORD_EXCEPTIONS",
    "DEFAULT_SUCCESS_THRESHOLD",
    "DEFAULT_TIMEOUT",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerStats",
    "CircuitBreakerStatsDict",
    "CircuitState",
    "Permit",
]

P = ParamSpec("P")
R = TypeVar("R")

KIND: Final = "circuit_breaker"
"""The pattern kind in telemetry and in :data:`~otel_resilience.engine.registry.BREAKERS`."""

DEFAULT_FAILURE_THRESHOLD: Final = 5
"""Consecutive counted failures that open the breaker."""
DEFAULT_SUCCESS_THRESHOLD: Final = 2
"""Probe successes in HALF_OPEN that close the breaker."""
DEFAULT_TIMEOUT: Final = 60.0
"""Seconds OPEN before a probe is let through."""
DEFAULT_HALF_OPEN_MAX_CALLS: Final = 1
"""Probes allowed in flight at once in HALF_OPEN (bounded: a recovering service is not flooded)."""
DEFAULT_RECORD_EXCEPTIONS: Final[tuple[type[Exception], ...]] = (Exception,)
"""Exceptions counted as failures: every ``Exception``."""
DEFAULT_IGNORE_EXCEPTIONS: Final[tuple[type[Exception], ...]] = ()
"""Exceptions counted as neither success nor failure: none."""

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]
"""One exception class or a tuple of them."""
ExceptionSelector = ExceptionTypes | Callable[[BaseException], bool]
"""Exception classes, or a predicate that returns ``True`` for an error to record."""

_OWNER: Final = "CircuitBreakerConfig"
_REASON_FAILURE_THRESHOLD: Final = "failure_threshold"
_REASON_TIMEOUT_ELAPSED: Final = "timeout_elapsed"
_REASON_PROBE_FAILED: Final = "probe_failed"
_REASON_PROBE_SUCCEEDED: Final = "probe_succeeded"
_REASON_RESET: Final = "reset"
_FORCE_REASONS: Final = ("forced", "isolated")
_REJECT_OPEN: Final = CallRejected("circuit_open")
_REJECT_HALF_OPEN_FULL: Final = CallRejected("half_open_full")
_REJECTED: Final = Outcome.REJECTED
_CALL_REJECTED: Final = Event.CALL_REJECTED
"""Enum members read on every rejection, bound once: reading a member off its class is slow."""


class CircuitState(enum.Enum):
    """The state of a circuit breaker. Values appear in telemetry and in ``get_stats()``."""

    CLOSED = "closed"
    """Normal operation: calls go through and failures are counted."""
    OPEN = "open"
    """Failing: calls are rejected at once with :class:`~otel_resilience.errors.CircuitOpenError`."""
    HALF_OPEN = "half_open"
    """Probing: at most ``half_open_max_calls`` calls at a time test the dependency."""


_CLOSED: Final = CircuitState.CLOSED
_OPEN: Final = CircuitState.OPEN
_HALF_OPEN: Final = CircuitState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    """How a :class:`CircuitBreaker` trips and recovers. Validated once, at construction.

    Raises:
        TypeError: A field has the wrong type (the message names ``CircuitBreakerConfig.<field>``).
        ValueError: A field is out of range, or ``ignore_exceptions`` covers a recorded type.
    """

    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    """Consecutive counted failures in CLOSED that open the breaker; a success resets the
    count. An ``int >= 1``; the default is 5."""
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    """Probe successes in HALF_OPEN that close the breaker. An ``int >= 1``; the default is 2."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds the breaker stays OPEN before it lets a probe through. A finite number ``> 0`` or
    a ``timedelta`` (normalised to ``float`` seconds); the default is 60.0 s."""
    half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS
    """Probes allowed in flight at the same time in HALF_OPEN; the rest are rejected with
    reason ``"half_open_full"``. An ``int >= 1``; the default is 1."""
    record_exceptions: ExceptionSelector = DEFAULT_RECORD_EXCEPTIONS
    """Which errors count as failures: ``Exception`` subclasses (one or a tuple), or a
    predicate ``(error) -> bool``. An error neither recorded nor ignored counts as a success
    (the dependency answered). The default is ``(Exception,)``: every error is a failure."""
    ignore_exceptions: ExceptionTypes = DEFAULT_IGNORE_EXCEPTIONS
    """``Exception`` subclasses that count as neither success nor failure (the probe permit is
    given back); they win over ``record_exceptions``. The default is ``()``.
    :class:`~otel_resilience.errors.ExecutionRejectedError` is always ignored."""

    def __post_init__(self) -> None:
        check_int(_OWNER, "failure_threshold", self.failure_threshold, minimum=1)
        check_int(_OWNER, "success_threshold", self.success_threshold, minimum=1)
        object.__setattr__(self, "timeout", check_duration(_OWNER, "timeout", self.timeout))
        check_int(_OWNER, "half_open_max_calls", self.half_open_max_calls, minimum=1)
        record = _check_selector("record_exceptions", self.record_exceptions)
        object.__setattr__(self, "record_exceptions", record)
        ignore = _check_selector("ignore_exceptions", self.ignore_exceptions)
        if not isinstance(ignore, tuple):
            raise fail(_OWNER, "ignore_exceptions", "exception types", self.ignore_exceptions, kind=TypeError)
        object.__setattr__(self, "ignore_exceptions", ignore)
        if isinstance(record, tuple):
            if not record:
                raise fail(_OWNER, "record_exceptions", "at least one exception type", record)
            covered = tuple(t for t in record if issubclass(t, ignore))
            if covered:
                raise fail(
                    _OWNER,
                    "ignore_exceptions",
                    f"disjoint from record_exceptions (it ignores the recorded {covered!r})",
                    ignore,
                )


def _check_selector(
    field: str, value: object
) -> tuple[type[Exception], ...] | Callable[[BaseException], bool]:
    """Normalise an exception selector; types must be ``Exception`` subclasses."""
    selector = check_exception_types(_OWNER, field, value)
    if isinstance(selector, tuple):
        for item in selector:
            if not issubclass(item, Exception):
                raise fail(
                    _OWNER,
                    field,
                    "Exception subclasses (cancellation and exits are never counted)",
                    value,
                    kind=TypeError,
                )
        return cast("tuple[type[Exception], ...]", selector)
    return selector


_DEFAULT_CONFIG: Final = CircuitBreakerConfig()
"""The configuration of a breaker built without one (a frozen value, shared)."""


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


class CircuitBreakerStats:
    """Live counts of one breaker, as plain integers (read them; never write them).

    Observable instruments read these attributes directly, so exporting metrics builds no dict.
    Totals cover the breaker's lifetime; ``failure_count`` and ``success_count`` are the counts
    of the current state period. The two counts that move on the hot paths (``total_successes``
    while CLOSED, ``total_rejected`` while OPEN) are exact lock-free counters
    (:mod:`otel_resilience.engine.counting`), bumped without the lock.

    Attributes:
        failure_count: Consecutive counted failures in the current CLOSED period (kept while
            OPEN, so it shows what tripped the breaker; 0 in HALF_OPEN).
        success_count: Probe successes in the current HALF_OPEN period.
        total_successes: Calls that returned (or raised an error that is not recorded).
        total_failures: Calls that raised a recorded error.
        total_rejected: Calls rejected without calling the dependency.
        total_ignored: Calls that raised an ignored error (or an inner rejection, or were given
            to the wrong driver).
        total_cancelled: Calls cancelled (or interrupted) while in flight.
        times_opened: Transitions into OPEN (trips, forced and isolated).
    """

    __slots__ = (
        "_rejected",
        "_successes",
        "failure_count",
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
        self._rejected = Counter()
        self.total_ignored = 0
        self.total_cancelled = 0
        self.times_opened = 0

    @property
    def total_successes(self) -> int:
        """Calls that returned (or raised an error that is not recorded)."""
        return self._successes.value

    @property
    def total_rejected(self) -> int:
        """Calls rejected without calling the dependency."""
        return self._rejected.value

    @property
    def total_requests(self) -> int:
        """Calls that have ended: every success, failure, rejection, ignored and cancelled call."""
        return (
            self.total_successes
            + self.total_failures
            + self.total_rejected
            + self.total_ignored
            + self.total_cancelled
        )


class Permit:
    """Admission of one call, stamped with the state period (generation) that issued it.

    One permit object exists per state period and is shared by every call admitted in it, so
    admission allocates nothing. A permit whose generation is no longer current is *stale*: its
    outcome counts in the lifetime totals only.

    Attributes:
        generation: The state period that issued the permit.
        state: The state it was issued in (``CLOSED`` or ``HALF_OPEN``).
    """

    __slots__ = ("generation", "state")

    def __init__(self, generation: int, state: CircuitState) -> None:
        self.generation = generation
        self.state = state

    def __repr__(self) -> str:
        return f"Permit(generation={self.generation}, state={self.state.value})"


_OPEN_VALUE: Final = CircuitState.OPEN.value
_HALF_OPEN_VALUE: Final = CircuitState.HALF_OPEN.value
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

    def on_success(self, permit: Permit) -> None:
        """Count a success: no lock on the CLOSED path when there is no failure streak to reset.

        The lock-free path only bumps an exact counter (see :class:`CircuitBreakerStats`), so it
        is exact from any number of threads and loops; anything that changes state takes the lock.
        """
        stats = self.stats
        if permit is self._permit and permit.state is _CLOSED and not stats.failure_count:
            next(stats._successes)
            return
        with self._lock:
            change = self._on_success_locked(permit)
        self._emit(change)

    def on_failure(self, permit: Permit, error: Exception) -> None:
        """Classify ``error`` (ignored / failure / success) and count it.

        Raises:
            Exception: Whatever a ``record_exceptions`` predicate raised; the permit is given back
                first (counted as ignored).
        """
        try:
            verdict = self._classify(error)
        except BaseException:
            with self._lock:
                self.stats.total_ignored += 1
                self._release_locked(permit)
            raise
        if verdict == _SUCCESS:
            self.on_success(permit)
            return
        with self._lock:
            if verdict == _IGNORED:
                self.stats.total_ignored += 1
                self._release_locked(permit)
                change = None
            else:
                change = self._on_failure_locked(permit, error)
        self._emit(change)

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


class _BreakerStep(Step):
    """A pipeline link bound to a breaker's shared core, with its own per-call telemetry.

    Its rules are the core's permission protocol: ``admit`` asks for a permit (CLOSED admits
    without a call, as :meth:`_BreakerCore.try_acquire` does), the outcome hooks count it, and a
    cancellation gives it back.
    """

    __slots__ = ("_core", "_hub", "_routes_seen", "_telemetry", "_wanted")

    kind: ClassVar[str] = KIND

    def __init__(self, core: _BreakerCore, telemetry: StrategyTelemetry) -> None:
        super().__init__()
        self._core = core
        self._telemetry = telemetry
        self._hub = telemetry._hub
        self._routes_seen: object = None
        self._wanted = False

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._core.name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The breaker's configuration."""
        return self._core.config

    def admit(self, ctx: ExecutionContext) -> Permit:  # noqa: ARG002 - the permit is the breaker's
        """Admit a call, or raise the breaker's rejection.

        Raises:
            CircuitOpenError: The breaker is open (or all half-open probes are in flight).
        """
        core = self._core
        permit = core._permit
        if permit.state is _CLOSED:  # CLOSED admits without a call (as try_acquire does)
            return permit
        if permit.state is _OPEN and (remaining := core.reject_open()) > 0.0:
            # The error is built in the raise: a local holding it would make a reference cycle
            # through its traceback on every rejection.
            raise self.report_rejection(
                CircuitOpenError(core.name, _OPEN_VALUE, remaining), _REJECT_OPEN
            ) from None
        admitted = core.try_acquire()
        if admitted is None:
            raise self.rejected() from None
        return admitted

    def on_success(self, ctx: ExecutionContext, token: Permit, result: Any) -> None:  # noqa: ARG002
        """Count a success."""
        self._core.on_success(token)

    def on_failure(self, ctx: ExecutionContext, token: Permit, error: Exception) -> None:  # noqa: ARG002
        """Classify and count a failure (the error passes through)."""
        self._core.on_failure(token, error)

    def on_cancel(self, ctx: ExecutionContext, token: Permit, *, running: bool) -> None:  # noqa: ARG002
        """Give the permit back; a function that does not fit the driver is ignored, not a cancellation."""
        self._core.end(token, sys.exc_info()[1])

    def rejected(self) -> CircuitOpenError:
        """Report the rejection :meth:`_BreakerCore.try_acquire` just counted and return the error."""
        error = self._core.rejection()
        return self.report_rejection(
            error, _REJECT_HALF_OPEN_FULL if error.state == _HALF_OPEN_VALUE else _REJECT_OPEN
        )

    def report_rejection(self, error: CircuitOpenError, args: CallRejected) -> CircuitOpenError:
        """Report a counted rejection (if anyone wants rejections) and return its ``error``."""
        # Whether anyone wants rejections, asked again only when the hub's listeners changed
        # (the hub then replaces its routes): an open breaker rejects on a hot path, and asking
        # the hub on every rejection costs a third of it (see docs/benchmarks.md, Engine v2).
        routes = self._hub._routes
        if routes is not self._routes_seen:
            self._wanted = self._telemetry.wants(_CALL_REJECTED)
            self._routes_seen = routes
        if self._wanted:
            self._telemetry.report(_CALL_REJECTED, args)
        return error


class CircuitBreaker:
    """A named circuit breaker, usable alone or as a link of a pipeline.

    Example::

        breaker = CircuitBreaker("ml_service", CircuitBreakerConfig(failure_threshold=5, timeout=60.0))
        result = await breaker.call(ml_service.analyze, content)

    Every breaker registers itself (weakly) in
    :data:`~otel_resilience.engine.registry.BREAKERS`, where observable metrics and the recovery
    system's ISOLATE action find it by name.

    Args:
        name: The breaker's name (bounded: it becomes a telemetry attribute).
        config: Thresholds and timeout; ``CircuitBreakerConfig()`` when ``None``.
        clock: The clock the OPEN timer runs on.

    Raises:
        TypeError: ``name``, ``config`` or ``clock`` has the wrong type.
        ValueError: ``name`` is empty.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("__weakref__", "_core", "_standalone", "_telemetry")

    kind: ClassVar[str] = KIND

    def __init__(
        self, name: str, config: CircuitBreakerConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        check_name("CircuitBreaker", "name", name)
        if config is None:
            config = _DEFAULT_CONFIG
        elif not isinstance(config, CircuitBreakerConfig):
            raise fail("CircuitBreaker", "config", "a CircuitBreakerConfig", config, kind=TypeError)
        if clock is not SYSTEM_CLOCK and not isinstance(clock, Clock):
            raise fail("CircuitBreaker", "clock", "a Clock (now, sleep, sleep_sync)", clock, kind=TypeError)
        self._telemetry = StrategyTelemetry(TelemetrySource(KIND, name))
        self._core = _BreakerCore(name, config, clock, self._telemetry)
        self._standalone: Pipeline | None = None
        BREAKERS.register(self)

    @property
    def _pipeline(self) -> Pipeline:
        """The breaker's own one-link pipeline, built on first use.

        A breaker that only runs in other pipelines never has one, so it exports no idle
        execution series.
        """
        pipeline = self._standalone
        return pipeline if pipeline is not None else standalone(self, "_standalone", self._build_pipeline)

    def _build_pipeline(self) -> Pipeline:
        core = self._core
        node = _BreakerStep(core, StrategyTelemetry(TelemetrySource(KIND, core.name)))
        return PipelineBuilder(core.name, clock=core._clock, source=self._telemetry.source).add(node).build()

    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._core.name

    @property
    def config(self) -> CircuitBreakerConfig:
        """The breaker's configuration."""
        return self._core.config

    @property
    def state(self) -> CircuitState:
        """The current state, read without a lock.

        An OPEN breaker whose timeout has elapsed turns HALF_OPEN when it is read here (or on the
        next call); the transition is reported once.
        """
        return self._core.state

    @property
    def stats(self) -> CircuitBreakerStats:
        """The live counts (plain ints, updated in place; read-only for callers)."""
        return self._core.stats

    def as_strategy(self, pipeline: str | None = None) -> Step:
        """Return a new, unlinked pipeline link that shares this breaker's state.

        Args:
            pipeline: The name of the pipeline (policy) the link will run in, for telemetry.

        Returns:
            A :class:`~otel_resilience.engine.step.Step` to add to a
            :class:`~otel_resilience.engine.pipeline.PipelineBuilder`.
        """
        return _BreakerStep(self._core, StrategyTelemetry(TelemetrySource(KIND, self.name, pipeline)))

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` if the breaker admits the call.

        Args:
            fn: An async function (or any callable returning an awaitable).
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What ``fn`` returned.

        Raises:
            TypeError: ``fn`` is not callable.
            CircuitOpenError: The breaker is open, or all half-open probes are in flight; ``fn``
                was not called.
            Exception: Whatever ``fn`` raised (after it was counted).
        """
        if not callable(fn):
            raise fail("CircuitBreaker.call", "fn", "callable", fn, kind=TypeError)
        return await self._pipeline.execute(fn, *args, **kwargs)

    def call_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn(*args, **kwargs)`` in this thread if the breaker admits the call.

        Args:
            fn: A plain (non-async) function.
            *args: Its positional arguments.
            **kwargs: Its keyword arguments.

        Returns:
            What ``fn`` returned.

        Raises:
            TypeError: ``fn`` is not callable, or is a coroutine function.
            CircuitOpenError: The breaker is open, or all half-open probes are in flight; ``fn``
                was not called.
            Exception: Whatever ``fn`` raised (after it was counted).
        """
        if not callable(fn):
            raise fail("CircuitBreaker.call_sync", "fn", "callable", fn, kind=TypeError)
        return self._pipeline.execute_sync(fn, *args, **kwargs)

    def guard(self) -> Guard:
        """Return a context manager that runs a block under this breaker (sync or async).

        ``with breaker.guard(): ...`` in threads, ``async with breaker.guard(): ...`` in
        coroutines: the block is admitted (or :class:`CircuitOpenError` is raised before it runs)
        and its outcome counted as a call's would be. Use it where the protected work is not one
        function call.

        Returns:
            A single-use guard.
        """
        return Guard(self._pipeline)

    @overload
    def protect(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def protect(self, fn: Callable[P, R]) -> Callable[P, R]: ...

    def protect(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function so that every call goes through this breaker.

        The async or sync driver is chosen once, here, with ``inspect.iscoroutinefunction``.

        Args:
            fn: The function to protect (async or sync).

        Returns:
            A wrapper with ``fn``'s signature and metadata.

        Raises:
            TypeError: ``fn`` is not callable, or is an async generator function.
        """
        if not callable(fn):
            raise fail("CircuitBreaker.protect", "fn", "callable", fn, kind=TypeError)
        return protect_with(self._pipeline, fn)

    def force_open(
        self, duration: float | timedelta | None = None, *, reason: Literal["forced", "isolated"] = "forced"
    ) -> None:
        """Open the breaker now, whatever its state.

        Args:
            duration: Seconds (or a ``timedelta``) to stay OPEN, after which the breaker turns
                HALF_OPEN as after a trip; ``None`` keeps it OPEN until :meth:`reset`.
            reason: The ``reason`` of the reported state change: ``"forced"`` (an operator) or
                ``"isolated"`` (the recovery system's ISOLATE action).

        Raises:
            TypeError: ``duration`` is not a number or ``timedelta``.
            ValueError: ``duration`` is not finite and ``> 0``, or ``reason`` is unknown.
        """
        seconds = None
        if duration is not None:
            seconds = check_duration("CircuitBreaker.force_open", "duration", duration)
        if reason not in _FORCE_REASONS:
            raise fail("CircuitBreaker.force_open", "reason", "'forced' or 'isolated'", reason)
        self._core.force_open(seconds, reason)

    def reset(self) -> None:
        """Close the breaker now and clear the counts of the current period (totals are kept)."""
        self._core.reset()

    def get_stats(self) -> CircuitBreakerStatsDict:
        """Return a snapshot of the breaker's state and counts.

        Returns:
            A new dict with ``name``, ``state`` (the state's value), ``failure_count``
            (consecutive failures), ``success_count`` (half-open probe successes),
            ``total_requests``, ``total_successes``, ``total_failures``, ``total_rejected``,
            ``total_ignored``, ``total_cancelled``, ``times_opened``, ``half_open_in_flight``,
            ``retry_after`` (seconds until a probe; 0 unless OPEN; ``inf`` if forced open until
            reset) and ``last_failure_type`` (a class name or ``None``).
        """
        return self._core.snapshot()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._core.state.value})"
