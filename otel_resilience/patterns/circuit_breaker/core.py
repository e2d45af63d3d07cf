"""The breaker's sans-I/O state machine (:class:`_BreakerCore`), shared by all its links."""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from otel_resilience.engine.actions import Counted
from otel_resilience.engine.admission import Standing
from otel_resilience.engine.calling import WrongDriver, notify
from otel_resilience.engine.clock import Clock
from otel_resilience.engine.closing import give_back
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.events import (
    Event,
    StateChanged,
    StrategyTelemetry,
    TelemetrySource,
    error_type_name,
)
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.shared import PeerCounts
from otel_resilience.engine.validation import verdict
from otel_resilience.errors import CircuitOpenError, keyed_rejection
from otel_resilience.patterns.circuit_breaker.config import KIND, CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker.state import (
    _CLOSED,
    _DISABLED,
    _HALF_OPEN,
    _HALF_OPEN_VALUE,
    _METRICS_ONLY,
    _OPEN,
    _OPEN_VALUE,
    CircuitBreakerStats,
    CircuitState,
    Permit,
    settings_for,
)

_REASON_FAILURE_THRESHOLD: Final = "failure_threshold"
_REASON_TIMEOUT_ELAPSED: Final = "timeout_elapsed"
_REASON_PROBE_FAILED: Final = "probe_failed"
_REASON_PROBE_SUCCEEDED: Final = "probe_succeeded"
_REASON_RESET: Final = "reset"
_REASON_FAILURE_RATE: Final = "failure_rate"
_REASON_SLOW_CALL_RATE: Final = "slow_call_rate"
_REASON_PROBE_TIMED_OUT: Final = "probe_timed_out"
_REASON_ISOLATED: Final = "isolated"
_NEVER_OPENED: Final = -math.inf
_SHORTEST_WAIT: Final = 0.001
"""The ``retry_after`` of a rejection whose wait is over as it is made: a HALF_OPEN one whose hung
probe is due to be reclaimed now, an OPEN one whose period ended after the look that rejected."""
_FIRST_PERMIT: Final = Permit(0, _CLOSED)
"""The permit of every breaker's first period: permits are told apart within one breaker only."""
_RESULT: Final = "result"
"""``last_failure_type`` of a returned value that ``record_result`` counted as a failure."""

_IGNORED: Final = 0
_FAILURE: Final = 1
_SUCCESS: Final = 2

_MAKING_LOCKS: Final = fork_safe(threading.Lock())
"""Held while a breaker's own lock is made (:meth:`_BreakerCore._make_lock`), so that it is made once."""

_DELIVERY_LOCK: Final = fork_safe(threading.Lock())
"""Guards :data:`_UNDELIVERED` and :data:`_DELIVERING` (held for a few statements, never over a call out)."""
_UNDELIVERED: Final[dict[object, deque[StateChanged]]] = {}
"""Each breaker core's state changes made and not yet delivered, in the order they were made
(added under the core's lock, so in the order of its transitions); a core is here only while
it has some: no breaker keeps anything for this at rest."""
_DELIVERING: Final[set[object]] = set()
"""The cores whose changes a thread is delivering now."""


def _forget_deliveries() -> None:
    """In a forked child: no thread of the parent delivers there, and its changes are the parent's."""
    _UNDELIVERED.clear()
    _DELIVERING.clear()


if hasattr(os, "register_at_fork"):  # POSIX: no fork elsewhere
    os.register_at_fork(after_in_child=_forget_deliveries)


class _BreakerCore:
    """The sans-I/O state machine: no awaits, no sleeps, one short lock for transitions.

    ``self._permit`` is the current state period: its ``state`` is read without the lock (one
    attribute load is an atomic snapshot), and every transition replaces it under the lock.
    ``self.standing`` (the breaker's :class:`~otel_resilience.engine.admission.Standing`
    admission, shared by its links) holds the period's
    :class:`~otel_resilience.engine.actions.Counted` token (``self._counted``, whose ``of`` is
    the permit) while a success needs no lock (see :meth:`_update_lock_free_locked`), else
    ``None``. It is an object of its own, of one class for every step: the drivers read
    ``standing.token`` at one place for all the steps of a pipeline, which stays specialised.
    Events are built under the lock and reported after it is released, so a listener may read
    the breaker without deadlocking. The lock, the rejections' counter and the telemetry are made
    by the first step that needs them (:meth:`_make_lock`, :meth:`_transition_locked`, :attr:`telemetry`).
    """

    __slots__ = (
        "_clock",
        "_counted",
        "_lock",
        "_permit",
        "_reject_watchers",
        "_shared",
        "_telemetry",
        "_watchers",
        "name",
        "settings",
        "standing",
        "stats",
        "window",
    )

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig,
        clock: Clock,
        telemetry: StrategyTelemetry | TelemetrySource | str | None,
    ) -> None:
        self.name = name
        self.settings = settings_for(config)
        self.stats = CircuitBreakerStats()
        self._clock = clock
        self._telemetry: StrategyTelemetry | TelemetrySource | str | None = telemetry  # made at first use
        self._lock: threading.Lock | None = None  # made by the first step that needs it
        self._permit = _FIRST_PERMIT
        self._shared: PeerCounts | None = None
        window = config.sliding_window
        self.window = None if window is None else window.metrics()
        self._watchers: tuple[Callable[[StateChanged], Any], ...] = ()
        self._reject_watchers: tuple[Callable[[CircuitOpenError], Any], ...] = ()
        self._counted = Counted(None, _FIRST_PERMIT)
        self.standing = Standing()
        self._update_lock_free_locked()

    @property
    def config(self) -> CircuitBreakerConfig:
        """The configuration: the one given, or an equal one (kept by the settings equal ones share)."""
        return self.settings.config

    def _make_lock(self) -> threading.Lock:
        """Return the breaker's lock, made now by the first step that takes it (once, for all threads).

        A breaker whose calls all succeed never takes it (most keys of a keyed policy). Every step
        reads ``self._lock or self._make_lock()``: once made, the lock is read with no call.
        """
        with _MAKING_LOCKS:
            lock = self._lock
            if lock is None:
                # A metrics collection takes it too (a window's rates): free in a forked child.
                lock = self._lock = fork_safe(threading.Lock())
        return lock

    @property
    def telemetry(self) -> StrategyTelemetry:
        """The telemetry of the breaker's own events (state changes): made at first use, unless given.

        Until then ``_telemetry`` is ``None``, or the key of the keyed policy the breaker serves
        (its source where the policy opted in to a metric attribute: :meth:`report_as`): its
        events carry the key (``TelemetrySource.key``, and ``metric_key``).
        """
        telemetry = self._telemetry
        if isinstance(telemetry, StrategyTelemetry):
            return telemetry
        source = (
            telemetry
            if isinstance(telemetry, TelemetrySource)
            else TelemetrySource(KIND, self.name, key=telemetry)
        )
        made = self._telemetry = StrategyTelemetry(source)
        return made  # racing threads: each makes one, alike

    def _key(self) -> str | None:
        """The key of a keyed policy the breaker reports as (:meth:`report_as`), or ``None``."""
        telemetry = self._telemetry
        if isinstance(telemetry, StrategyTelemetry):
            return telemetry.source.key
        return telemetry.key if isinstance(telemetry, TelemetrySource) else telemetry

    def report_as(self, key: str, metric_key: str | None = None) -> None:
        """Report the breaker's own events as the ones of a keyed policy's ``key`` (one breaker per key).

        Called once, before the breaker's first call. Its state changes then tell the keys of one
        policy apart (an alert's outage episode is a key's), at no cost until the first event; its
        rejections name the key (:attr:`CircuitOpenError.key`). ``metric_key``: the key's metric
        attribute, where the policy opted in (``key_attribute_limit``): its metrics carry it
        (its transitions say which key's breaker made them, whoever moved it: a call of the
        policy, an operator, a block run with the breaker itself).
        """
        telemetry = self._telemetry
        if isinstance(telemetry, StrategyTelemetry):  # a subclass's own kind, given at construction
            source = telemetry.source._replace(key=key, metric_key=metric_key)
            self._telemetry = StrategyTelemetry(source, telemetry.hub)
        elif metric_key is None:
            self._telemetry = key  # its source is made at first use: nothing more per key
        else:
            self._telemetry = TelemetrySource(KIND, self.name, key=key, metric_key=metric_key)

    # -- reads (lock-free) -------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state; an OPEN breaker whose timer elapsed becomes HALF_OPEN here."""
        if self._due():
            with self._lock or self._make_lock():
                change = self._poll_locked()
                state = self._permit.state
            self._emit(change)
            return state
        return self._permit.state

    def peek_state(self) -> CircuitState:
        """The state :attr:`state` reads, without making the move to HALF_OPEN (nor reporting it)."""
        return _HALF_OPEN if self._due() else self._permit.state

    def _due(self) -> bool:
        """Whether the breaker is OPEN and its timer elapsed: it moves to HALF_OPEN when next asked.

        A retired core (replaced by a reload, or evicted) no longer moves.
        """
        permit = self._permit
        return permit.state is _OPEN and self._clock.now() >= permit.opened_until and not permit.retired

    def retry_after(self) -> float:
        """Seconds until a probe is let through: 0 unless OPEN, ``inf`` when forced open for good."""
        permit = self._permit
        if permit.state is not _OPEN:
            return 0.0
        return max(0.0, permit.opened_until - self._clock.now())

    # -- the permission protocol -------------------------------------------------------------

    def try_acquire(self) -> Permit | CircuitOpenError:
        """Admit one call: return its permit, or the rejection's error when it is rejected (and counted).

        CLOSED admits, and OPEN before its timer elapsed rejects, without the lock: each reads
        one state period (an atomic snapshot), and a transition racing with it is ordered after.
        A rejection's error is made from the period that rejected the call (:meth:`rejection`),
        so it describes that period whatever the breaker did since.
        A move to HALF_OPEN (or a hung probe reclaimed) is reported before the permit is returned:
        a ``BaseException`` a listener or a state change callback raises there gives the permit
        back (counted as cancelled) and passes, so no probe is left taken by a call never made.
        """
        permit = self._permit
        state = permit.state
        if state is _CLOSED or state is _DISABLED or state is _METRICS_ONLY:
            return permit
        if state is _OPEN and self._clock.now() < permit.opened_until:
            next(self.stats._rejected)  # type: ignore[arg-type]  # made when CLOSED was left
            return self.rejection(permit)
        with self._lock or self._make_lock():
            change = self._poll_locked() or self._reclaim_locked()
            admitted = self._admit_locked()
        try:
            self._emit(change)
        except BaseException:  # a listener or state change callback interrupted: the call never runs
            if type(admitted) is Permit:
                self.release(admitted)
            raise
        return admitted

    def release(self, permit: Permit) -> None:
        """Give a cancelled (or interrupted) call's permit back; it counts as neither outcome."""
        with self._lock or self._make_lock():
            if not permit.reclaimed:  # counted as failed when it was reclaimed
                self.stats.total_cancelled += 1
            self._release_locked(permit)

    def ignore(self, permit: Permit) -> None:
        """Give back the permit of a call whose outcome the breaker does not hold against the dependency."""
        with self._lock or self._make_lock():
            if not permit.reclaimed:  # counted as failed when it was reclaimed
                self.stats.total_ignored += 1
            self._release_locked(permit)

    def end(self, permit: Permit, refusal: WrongDriver | None) -> None:
        """End a call that raised a ``BaseException`` that is not an ``Exception``.

        A function that does not fit the driver (``refusal``, the :class:`WrongDriver` signal
        being handled: :func:`~otel_resilience.engine.calling.refused`) is ignored, as an error
        the breaker does not hold against the dependency; anything else is a cancellation
        (:meth:`release`). A call whose coroutine is being closed (a task its closed loop left
        pending, freed by the garbage collector on whichever thread allocates, maybe one that
        holds this breaker's lock) never blocks on the lock
        (:func:`~otel_resilience.engine.closing.give_back`): nor on the one its lock is made
        under, while it is not made yet.
        """
        end = self.release if refusal is None else self.ignore
        give_back(self._lock or _MAKING_LOCKS, end, permit)

    def rejection(self, permit: Permit) -> CircuitOpenError:
        """Build the error for a call rejected by ``permit``'s period (OPEN or HALF_OPEN).

        A HALF_OPEN rejection's ``retry_after`` is the time left before a hung probe is reclaimed
        (``max_half_open_wait``), else how long a failed probe would keep the breaker OPEN: the
        next opening's duration (``break_duration``, else ``timeout``; see
        :class:`~otel_resilience.errors.CircuitOpenError`), never ``0.0``. An OPEN rejection's is
        what is left of the period, never ``0.0`` either: the clock moves between the look that
        found the period running and this one, which may find it over (:data:`_SHORTEST_WAIT`).
        """
        make = permit.open_error  # read, then called: a call of the attribute is a slow look-up
        if permit.state is _HALF_OPEN:
            settings = self.settings
            wait = settings.max_half_open_wait
            if wait is None:  # a failed probe reopens it: the opening after this period's
                reopening = settings.open_seconds(self.name, permit.reopens + 2, report=False)
                return make(self.name, _HALF_OPEN_VALUE, reopening)
            left = permit.probe_started + wait - self._clock.now()
            return make(self.name, _HALF_OPEN_VALUE, max(left, _SHORTEST_WAIT))
        remaining = permit.opened_until - self._clock.now()
        return make(self.name, _OPEN_VALUE, max(remaining, _SHORTEST_WAIT))

    def reject_open(self, permit: Permit) -> float:
        """Reject (and count) a call while OPEN before its timer elapsed, reading the clock once.

        Call it with the current permit, read when its state was OPEN (the OPEN period's end is
        the permit's). It is lock-free, as :meth:`try_acquire`'s OPEN
        path is. A result ``<= 0`` (the timer elapsed, or a transition is being published)
        counts nothing and means "ask :meth:`try_acquire`", which takes the lock.

        Returns:
            The seconds left in the OPEN period (``> 0``: the call is rejected), or ``<= 0``.
        """
        # opened_until - now > 0 exactly when now < opened_until (IEEE subtraction of finite
        # values is exact in sign; an infinite opened_until gives inf).
        now = self._clock.now  # read, then called: a call of the attribute is not specialised
        remaining: float = permit.opened_until - now()
        if remaining > 0.0:
            next(self.stats._rejected)  # type: ignore[arg-type]  # made when CLOSED was left
        return remaining

    # -- manual control ----------------------------------------------------------------------

    def force_open(self, duration: float | None, reason: str) -> bool:
        """Open now, for ``duration`` seconds (then HALF_OPEN as after a trip) or until reset.

        An isolation (``reason="isolated"``: recovery's ISOLATE) keeps the breaker open *at
        least* that long and never shortens an opening: a breaker already OPEN until then or
        later (a trip, an operator's opening until reset) is left as it is. Nor does it override
        an operator's mode: a DISABLED or METRICS_ONLY breaker stays so until :meth:`reset`.

        Returns:
            Whether the breaker is OPEN now: ``False`` only for an isolation an operator's mode
            refused.
        """
        open_for = math.inf if duration is None else duration
        with self._lock or self._make_lock():
            current = self._permit
            if reason == _REASON_ISOLATED:
                if current.state is _DISABLED or current.state is _METRICS_ONLY:
                    return False
                if current.state is _OPEN and current.opened_until >= self._clock.now() + open_for:
                    return True
            change = self._transition_locked(_OPEN, reason, open_for)
        self._emit(change)
        return True

    def reset(self) -> None:
        """Close now and clear the counts of the current period."""
        self.force_state(_CLOSED, _REASON_RESET)

    def force_state(self, state: CircuitState, reason: str) -> None:
        """Start a period in ``state`` now (CLOSED, DISABLED or METRICS_ONLY), its counts cleared.

        An operator's action: a shared breaker already in ``state`` here (a reset of a CLOSED
        one) makes no transition, but tells its store all the same (:meth:`PeerCounts.acted`),
        since the action is every replica's, and another may not be in ``state``.
        """
        with self._lock or self._make_lock():
            shared = self._shared if self._permit.state is state else None
            change = self._transition_locked(state, reason)
        if shared is not None:
            shared.acted(StateChanged(state.value, state.value, reason))
        self._emit(change)

    def rates(self) -> tuple[float, float] | None:
        """Return the window's failure and slow-call rates now (0.0 empty); ``None`` without a window."""
        if self.window is None:
            return None
        with self._lock or self._make_lock():
            return self._rates_locked()

    def _rates_locked(self) -> tuple[float, float] | None:
        window = self.window
        if window is None:
            return None
        calls, failures, slows = self._held_locked(window.totals(self._clock.now()))
        return (failures / calls, slows / calls) if calls else (0.0, 0.0)

    # -- internals ---------------------------------------------------------------------------

    def _classify(self, error: Exception) -> int:
        """Return ``_IGNORED``, ``_FAILURE`` or ``_SUCCESS`` for an error (outside the lock)."""
        settings = self.settings
        ignore = settings.ignore
        if (  # usually false: the class is tested (see docs/design.md, the engine) when it answers
            issubclass(type(error), ignore) if settings.ignore_by_class else isinstance(error, ignore)
        ):
            return _IGNORED
        predicate = settings.predicate
        if predicate is None:
            return _FAILURE if isinstance(error, settings.record) else _SUCCESS
        recorded: object = predicate(error)
        if recorded is not False and recorded is not True:  # a bool is taken as it is, with no call
            recorded = verdict(recorded, "CircuitBreakerConfig.record_exceptions", self.name)
        return _FAILURE if recorded else _SUCCESS

    def _poll_locked(self) -> StateChanged | None:
        """Move OPEN to HALF_OPEN if its timer elapsed (:meth:`_due`)."""
        if self._due():
            return self._transition_locked(_HALF_OPEN, _REASON_TIMEOUT_ELAPSED)
        return None

    def _reclaim_locked(self) -> StateChanged | None:
        """Count HALF_OPEN probes that ran past ``max_half_open_wait`` as failed, and re-open.

        Asked when a call finds every probe place taken: the newest probe started at least
        ``max_half_open_wait`` ago, so every probe in flight has run that long. The wait is over
        when the clock reaches the probe's start plus the wait (compared as the OPEN timer's
        end is, and as :meth:`rejection` counts what is left of it), never by ``now - started``,
        which rounds.
        """
        wait = self.settings.max_half_open_wait
        permit = self._permit
        if (
            wait is None
            or not permit.in_flight
            or permit.retired
            or permit.state is not _HALF_OPEN
            or permit.in_flight < self.settings.half_open_max_calls
            or self._clock.now() < permit.probe_started + wait
        ):
            return None
        # Each probe in flight is a failure now, and its end counts nothing more (Permit.reclaimed).
        self.stats.total_failures += permit.in_flight
        permit.reclaimed = True
        return self._transition_locked(_OPEN, _REASON_PROBE_TIMED_OUT)

    def _admit_locked(self) -> Permit | CircuitOpenError:
        """Return a permit for the current state, or count a rejection and return its error."""
        permit = self._permit
        state = permit.state
        if state is _CLOSED or state is _DISABLED or state is _METRICS_ONLY:
            return permit
        if state is _HALF_OPEN and permit.in_flight < self.settings.half_open_max_calls:
            permit.in_flight += 1
            if self.settings.max_half_open_wait is not None:
                permit.probe_started = self._clock.now()
            return permit
        next(self.stats._rejected)  # type: ignore[arg-type]  # made when CLOSED was left
        return self.rejection(permit)

    def _on_success_locked(self, permit: Permit, slow: bool = False) -> StateChanged | None:
        stats = self.stats
        if permit is not self._permit or permit.retired:
            if not permit.reclaimed:
                next(stats._successes)
            return None
        next(stats._successes)
        if permit.state is _HALF_OPEN:
            permit.in_flight -= 1
            stats.success_count += 1
            if slow:
                permit.slow_probes += 1
            if self._shared is not None:
                self._shared.probed()
            return self._close_if_probed_locked()
        return self._judge_locked(permit.state, False, slow)  # noqa: FBT003

    def _close_if_probed_locked(self) -> StateChanged | None:
        """The one rule of closing: ``success_threshold`` probe successes (summed over replicas if shared).

        The probes are judged by the slow-call rate too (with ``slow_call_duration``), as
        Resilience4j judges its half-open calls: when the successes reach the threshold and the
        slow ones among them are at ``slow_call_rate_threshold``, the dependency is still slow
        and the breaker re-opens (``slow_call_rate``) instead of closing. A failed probe
        re-opens it at once (:meth:`_on_failure_locked`).
        """
        successes = self.stats.success_count
        slow = self._permit.slow_probes
        if self._shared is not None:
            successes, slow = self._shared.merged_probes((successes, slow))
        settings = self.settings
        if successes < settings.success_threshold:
            return None
        if settings.slow_call_duration is not None and slow / successes >= settings.slow_threshold:
            return self._transition_locked(_OPEN, _REASON_SLOW_CALL_RATE)
        return self._transition_locked(_CLOSED, _REASON_PROBE_SUCCEEDED)

    def _on_failure_locked(
        self, permit: Permit, error: Exception | None, slow: bool = False
    ) -> StateChanged | None:
        """Count a failure: a recorded error, or (``error=None``) a value ``record_result`` flagged."""
        if permit.reclaimed:  # counted as failed when it was reclaimed
            return None
        stats = self.stats
        stats.total_failures += 1
        stats.last_failure_type = _RESULT if error is None else error_type_name(error)
        if permit is not self._permit or permit.retired:
            return None
        if permit.state is _HALF_OPEN:
            return self._transition_locked(_OPEN, _REASON_PROBE_FAILED)
        return self._judge_locked(permit.state, True, slow)  # noqa: FBT003

    def holds_slow_calls(self) -> bool:
        """Whether the sliding window holds slow calls, towards the slow-call rate that opens it.

        Read without the lock, as ``stats.failure_count`` is (an eviction rule asks it under a
        lock of its own): a time window's count is the one of its last call or read.
        """
        window = self.window
        return window is not None and window.held_slow() > 0

    def _counts_locked(self) -> tuple[int, int, int]:
        """This replica's ``(calls, failures, slow)`` now, as the opening rule judges them.

        ``(0, consecutive failures, 0)`` without a sliding window, the window's totals with one.
        """
        window = self.window
        if window is None:
            return (0, self.stats.failure_count, 0)
        return self._held_locked(window.totals(self._clock.now()))

    def _held_locked(self, totals: tuple[int, int, int]) -> tuple[int, int, int]:
        """Return a sliding window's ``totals``, keeping ``failure_count`` the failures it holds.

        The one place of that rule, applied wherever the window is counted: when a call is
        recorded, and when its totals are read (a time window's old calls leave it as time
        passes, with no call). Not while OPEN: the window starts again with the period, and the
        count keeps the failures that tripped the breaker.
        """
        if self._permit.state is not _OPEN:
            self.stats.failure_count = totals[1]
        return totals

    def _judge_locked(self, state: CircuitState, failed: bool, slow: bool) -> StateChanged | None:
        """Record one outcome of CLOSED (or a shadow state) and decide whether the breaker opens."""
        stats = self.stats
        window = self.window
        if window is None:
            stats.failure_count = stats.failure_count + 1 if failed else 0
            totals = (0, stats.failure_count, 0)
            self._update_lock_free_locked()  # a streak started or ended (a window has no streak)
        else:
            totals = self._held_locked(window.record(failed, slow, self._clock.now()))
        shared = self._shared
        if shared is not None:
            if failed:
                shared.failed()
            totals = shared.merged(totals)
        return self._decide_locked(state, *totals)

    def _decide_locked(
        self, state: CircuitState, calls: int, failures: int, slows: int
    ) -> StateChanged | None:
        """The one rule of opening, on the counts of this replica (and its peers, when shared).

        ``failure_threshold`` consecutive failures, or, with a sliding window holding at least
        ``minimum_calls``, a failure (or slow-call) rate at its threshold. DISABLED only counts;
        METRICS_ONLY reports the trip it would make and starts again.
        """
        settings = self.settings
        reason = None
        if self.window is None:
            if failures >= settings.failure_threshold:
                reason = _REASON_FAILURE_THRESHOLD
        elif calls >= settings.minimum_calls:
            if failures / calls >= settings.rate_threshold:
                reason = _REASON_FAILURE_RATE
            elif settings.slow_call_duration is not None and slows / calls >= settings.slow_threshold:
                reason = _REASON_SLOW_CALL_RATE
        if reason is None or state is _DISABLED:
            return None
        if state is _METRICS_ONLY:
            return self._would_open_locked(reason)
        return self._transition_locked(_OPEN, reason)

    def _would_open_locked(self, reason: str) -> StateChanged | None:
        """In METRICS_ONLY: clear the counts and report the trip the breaker would have made."""
        self.stats.failure_count = 0
        if self.window is not None:
            self.window.clear()
        if not self.telemetry.enabled and not self._watchers:
            return None
        value = _METRICS_ONLY.value  # a change to itself: the trip it would have made, and why
        return self._made_locked(
            StateChanged(value, value, reason, 0, self.settings.open_seconds(self.name, 1))
        )

    def _update_lock_free_locked(self) -> None:
        """Decide whether a success of the current period needs the lock: the one place of that rule.

        Not in CLOSED with no failure streak, no window and no call timing or result judging (it
        only bumps an exact counter): :attr:`standing` then holds the period's ``Counted`` token,
        which calls are admitted with and whose ``count`` is the successes counter, so that the
        drivers count a success themselves; else ``None``, and the token's ``count`` is cleared
        (a call admitted with it then has its success judged: it ends a streak). A period's
        token is made with its permit; an ended period's keeps its ``count``, as a stale
        permit's success is only counted. Called under the lock wherever the permit, the window
        or the streak changes.
        """
        permit, counted, stats = self._permit, self._counted, self.stats
        if counted.of is not permit:  # a new period: a token of its own
            counted = self._counted = Counted(None, permit)
        free = (
            self.settings.plain
            and self.window is None
            and permit.state is _CLOSED
            and not stats.failure_count
        )
        counted.count = stats._successes if free else None
        self.standing.token = counted if free else None

    def _retire_locked(self) -> None:
        """Retire the core (a reload replaced it): it never moves again, its calls count in the totals only.

        Its period is ended by a copy marked retired (the permit in force may be the first
        period's, which every breaker shares).
        """
        period = self._permit
        self._permit = Permit(
            period.generation + 1,
            period.state,
            period.opened_until,
            period.reopens,
            period.in_flight,
            period.probe_started,
            retired=True,
            open_error=period.open_error,
        )

    def _release_locked(self, permit: Permit) -> None:
        if permit is self._permit and permit.state is _HALF_OPEN and not permit.retired:
            permit.in_flight -= 1

    def _transition_locked(
        self, new: CircuitState, reason: str, open_for: float | None = None
    ) -> StateChanged | None:
        """Start a new state period in ``new``; return the event to report (if anyone listens).

        Opening lasts ``open_for`` seconds when given (a forced opening), else the break
        duration of this opening (:meth:`Settings.open_seconds`), asked before anything changes.
        A ``BaseException`` that ``break_duration`` raises there (an interrupt: an ``Exception``
        falls back to ``timeout`` in :meth:`Settings.open_seconds`) passes once the breaker is
        open for ``timeout`` all the same, its change queued for the next delivery (as a change
        whose delivery is interrupted): the call that tripped it never leaves it CLOSED at its
        threshold, nor HALF_OPEN with a failed probe's permit taken for ever. A period that
        starts in the state it ends is no change, except a new OPEN period (a forced opening of
        an OPEN breaker): its end moved, so it is reported (``open`` to ``open``, with its
        duration).
        """
        current = self._permit
        old = current.state
        reopens = current.reopens
        duration = open_for
        if new is _OPEN:
            if old is _HALF_OPEN:
                reopens += 1
            elif old is not _OPEN:
                reopens = 0  # a new outage episode
            if duration is None:
                try:
                    duration = self.settings.open_seconds(self.name, reopens + 1)
                except BaseException:  # not `as`: the frame keeps no reference to it
                    self._transition_locked(new, reason, self.settings.timeout)
                    raise
        stats = self.stats
        if stats._rejected is None:  # before the period is published: only a new one rejects
            stats._rejected = Counter()
        stats.success_count = 0
        opened_until = _NEVER_OPENED
        if duration is not None:  # opening
            if old is not _OPEN:
                stats.times_opened += 1
            opened_until = self._clock.now() + duration
        else:
            stats.failure_count = 0
        # Published whole: a lock-free reader of the new period sees its end (opened_until).
        permit = Permit(current.generation + 1, new, opened_until, reopens)
        if new is _OPEN or new is _HALF_OPEN:  # the periods that reject
            permit.open_error = keyed_rejection(CircuitOpenError, self._key())
        # The lock-free admission withdrawn before the new period is seen: a call admitted
        # after a reader saw the period OPEN would be admitted by the one it ends.
        self.standing.token = None
        self._permit = permit
        if self.window is not None:
            self.window.clear()  # each period judges the calls made in it
        self._update_lock_free_locked()
        if (old is new and new is not _OPEN) or (not self.telemetry.enabled and not self._watchers):
            return None
        return self._made_locked(StateChanged(old.value, new.value, reason, reopens, duration))

    def _made_locked(self, change: StateChanged) -> StateChanged:
        """Queue a change just made for :meth:`_emit` (under the core's lock: in the order made)."""
        with _DELIVERY_LOCK:
            queue = _UNDELIVERED.get(self)
            if queue is None:
                _UNDELIVERED[self] = queue = deque()
            queue.append(change)
        return change

    def _emit(self, change: StateChanged | None) -> None:
        """Deliver the state changes made (outside the lock), in the order they were made.

        Called after a transition with the change it made (``None``: none, or nobody listens).
        Each change goes to telemetry, then to the breaker's watchers. While another thread
        delivers this breaker's changes, it delivers this one too, after those before it, and
        this call returns at once: two threads that each moved the breaker never deliver their
        changes out of order (a watcher or the alert system would see an OPEN after the CLOSED
        that followed it). When a ``BaseException`` interrupts a change's delivery, it passes, and
        the changes after that one stay queued for the breaker's next delivery.
        """
        if change is None:
            return
        with _DELIVERY_LOCK:
            if self in _DELIVERING:
                return
            _DELIVERING.add(self)
        try:
            while True:
                with _DELIVERY_LOCK:
                    queue = _UNDELIVERED.get(self)
                    if not queue:
                        _UNDELIVERED.pop(self, None)
                        _DELIVERING.discard(self)
                        return
                    change = queue.popleft()
                self._deliver(change)
        except BaseException:
            with _DELIVERY_LOCK:
                _DELIVERING.discard(self)
                if not _UNDELIVERED.get(self, True):  # nothing left: keep no entry (nor the core)
                    del _UNDELIVERED[self]
            raise

    def _deliver(self, change: StateChanged) -> None:
        """Report one state change: to telemetry, then to the breaker's watchers."""
        telemetry = self.telemetry
        if telemetry.enabled:
            telemetry.report(Event.STATE_CHANGED, change)
        for watcher in self._watchers:
            notify(watcher, change, f"circuit breaker {self.name!r}: state change callback")

    def watch(self, callback: Callable[[Any], Any], *, rejections: bool = False) -> None:
        """Add a state change callback (a rejection callback with ``rejections``)."""
        with self._lock or self._make_lock():
            self.watch_locked(callback, rejections=rejections)

    def watch_locked(self, callback: Callable[[Any], Any], *, rejections: bool = False) -> None:
        """:meth:`watch`, with the lock held (by an owner that also reads which core is current)."""
        attribute = "_reject_watchers" if rejections else "_watchers"
        setattr(self, attribute, (*getattr(self, attribute), callback))

    def unwatch(self, callback: Callable[[Any], Any], *, rejections: bool = False) -> None:
        """Remove one callback :meth:`watch` added (nothing if it is not there; equal bound methods match).

        One subscription: the same callable added twice (two owners of one function) stays
        subscribed once, for the owner that did not remove it.
        """
        with self._lock or self._make_lock():
            self.unwatch_locked(callback, rejections=rejections)

    def unwatch_locked(self, callback: Callable[[Any], Any], *, rejections: bool = False) -> None:
        """:meth:`unwatch`, with the lock held: the latest subscription equal to ``callback`` goes."""
        attribute = "_reject_watchers" if rejections else "_watchers"
        watchers: tuple[Callable[[Any], Any], ...] = getattr(self, attribute)
        for place in range(len(watchers) - 1, -1, -1):
            if watchers[place] == callback:
                setattr(self, attribute, watchers[:place] + watchers[place + 1 :])
                return
