"""In-process alerts, raised from the telemetry event stream.

An :class:`AlertSystem` is a :class:`~otel_resilience.engine.events.TelemetryListener`. From the
events every pattern reports it raises an :class:`Alert` when

* a circuit breaker opens (``STATE_CHANGED`` to ``"open"``): one alert per *outage episode*,
  which starts when the breaker opens from CLOSED (``StateChanged.reopens == 0``) and ends when
  it closes again. The re-opens in between (a failed half-open probe, HALF_OPEN -> OPEN) raise
  nothing; an alert raised on one (the system did not see the episode begin, e.g. it did not
  exist yet) carries the episode's re-open count. No cooldown applies: the breaker's own state
  bounds the episode;
* a bulkhead rejects a call (``CALL_REJECTED``, reason ``"bulkhead_full"``, or ``"queue_timeout"``
  for a call that gave up in its queue: every rejection the Prometheus ``ResilienceBulkheadFull``
  rule sums): at most one alert per bulkhead (a keyed policy's: per key) per
  ``bulkhead_cooldown``, whichever the reason;
* the recovery rate of a recovery system (``RECOVERY_ATTEMPTED``), over its last
  ``recovery_window`` attempts, falls below ``recovery_rate_threshold`` once at least
  ``min_recovery_attempts`` were seen: one alert per crossing, re-armed when the rate is back at
  or above the threshold;
* an error pattern is detected (``PATTERN_DETECTED``; the detector already reports a
  fingerprint at most once per window);
* a recovery escalated (``RECOVERY_ATTEMPTED`` with strategy ``"escalate"``): at most one alert
  per recovery system and error type per ``escalation_cooldown``.

More subjects than :data:`MAX_TRACKED_SUBJECTS` of a kind make no storm: the bulkheads and the
escalations a full table has no room for share one cooldown, the re-opens of outages it does
not hold one :data:`UNTRACKED_OUTAGE_COOLDOWN`, and the recovery systems one rate window (a
window below the threshold is never forgotten); the one alert that stands for them has the
``untracked`` attribute.

Each alert goes to the subscribers (functions or async functions, run as a breaker's callbacks
are; one that raises is logged and counted, never propagated), into a bounded
:attr:`AlertSystem.history`, and back onto the event stream as ``Event.ALERT_RAISED`` (source
kind ``"alerts"``), so that the OpenTelemetry listener can log it. ``ALERT_RAISED`` events are
ignored on the way in: an alert never raises another.

:func:`subscribe` hooks a callback onto the process-wide :func:`default_alert_system`. It is
created with the first circuit breaker, bulkhead or error recovery system (unless another alert
system already listens on the global hub), so that an alert raised before anyone asked for the
alert system is neither lost nor left unexported. An alert system of the application that
listens on the global hub stands in for it (:func:`default_alert_system` returns it): there is
never a second one beside it, which would report every alert twice. A :func:`subscribe`
subscription follows the process-wide system: once the application's own stops listening
(closed, or freed), it moves to the one that takes its place.

Layout: alerts, their kinds and the settings live in ``model``, :class:`AlertSystem` in ``system``;
this module holds the process-wide alert system and re-exports the rest.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Final

from otel_resilience.engine.clock import Clock, follow_process_clock
from otel_resilience.engine.events import HUB
from otel_resilience.engine.events import MAX_ATTRIBUTE_LENGTH as MAX_ATTRIBUTE_LENGTH
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.registry import BREAKERS, BULKHEADS, RECOVERY_SYSTEMS, Named
from otel_resilience.patterns.alerts.model import DEFAULT_BULKHEAD_COOLDOWN as DEFAULT_BULKHEAD_COOLDOWN
from otel_resilience.patterns.alerts.model import DEFAULT_ESCALATION_COOLDOWN as DEFAULT_ESCALATION_COOLDOWN
from otel_resilience.patterns.alerts.model import DEFAULT_HISTORY_SIZE as DEFAULT_HISTORY_SIZE
from otel_resilience.patterns.alerts.model import (
    DEFAULT_MIN_RECOVERY_ATTEMPTS as DEFAULT_MIN_RECOVERY_ATTEMPTS,
)
from otel_resilience.patterns.alerts.model import (
    DEFAULT_RECOVERY_RATE_THRESHOLD as DEFAULT_RECOVERY_RATE_THRESHOLD,
)
from otel_resilience.patterns.alerts.model import DEFAULT_RECOVERY_WINDOW as DEFAULT_RECOVERY_WINDOW
from otel_resilience.patterns.alerts.model import MAX_TRACKED_SUBJECTS as MAX_TRACKED_SUBJECTS
from otel_resilience.patterns.alerts.model import SEVERITIES as SEVERITIES
from otel_resilience.patterns.alerts.model import UNTRACKED_OUTAGE_COOLDOWN as UNTRACKED_OUTAGE_COOLDOWN
from otel_resilience.patterns.alerts.model import Alert as Alert
from otel_resilience.patterns.alerts.model import AlertCallback as AlertCallback
from otel_resilience.patterns.alerts.model import AlertConfig as AlertConfig
from otel_resilience.patterns.alerts.model import AlertKind as AlertKind
from otel_resilience.patterns.alerts.model import AlertSeverity as AlertSeverity
from otel_resilience.patterns.alerts.system import (
    _ALERT_SYSTEMS_LOCK,
    _CLOSING_HOOKS,
    _Handover,
    _standing_in,
)
from otel_resilience.patterns.alerts.system import AlertStatsDict as AlertStatsDict
from otel_resilience.patterns.alerts.system import AlertSystem as AlertSystem

__all__ = [
    "DEFAULT_BULKHEAD_COOLDOWN",
    "DEFAULT_ESCALATION_COOLDOWN",
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_MIN_RECOVERY_ATTEMPTS",
    "DEFAULT_RECOVERY_RATE_THRESHOLD",
    "DEFAULT_RECOVERY_WINDOW",
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_TRACKED_SUBJECTS",
    "SEVERITIES",
    "UNTRACKED_OUTAGE_COOLDOWN",
    "Alert",
    "AlertCallback",
    "AlertConfig",
    "AlertKind",
    "AlertSeverity",
    "AlertStatsDict",
    "AlertSystem",
    "close_process_wide",
    "default_alert_system",
    "subscribe",
]

_LOG: Final = logging.getLogger("otel_resilience")

_DEFAULT: AlertSystem | None = None
_DEFAULT_LOCK: Final = _ALERT_SYSTEMS_LOCK
"""The lock alert systems are added to their hubs under: who stands in is looked up and the
process-wide system made in one step, with no system added unseen in between."""


class _Subscription:
    """A subscription made with :func:`subscribe`: on the system standing in, under ``token``."""

    __slots__ = ("callback", "token")

    def __init__(self, callback: AlertCallback, token: int) -> None:
        self.callback = callback
        self.token = token


_SUBSCRIPTIONS: Final[dict[int, _Subscription]] = {}
"""The subscriptions made with :func:`subscribe`, by key, oldest first (guarded by the lock)."""
_KEYS: Final = itertools.count()
_holder: weakref.ref[AlertSystem] | None = None
"""The system the subscriptions are on (weakly: it is its owner's to keep)."""


def default_alert_system() -> AlertSystem:
    """Return the process-wide alert system, listening on the global hub.

    It is created on first use (and again after it was closed). The first use is at the latest
    the creation of the first circuit breaker, bulkhead or error recovery system: an alert is
    never lost because nothing had asked for the alert system yet, and an application without
    those patterns pays nothing. While an alert system of the application listens on the global
    hub (and the process-wide one does not), that one stands in for it and is returned, and none
    is created: a second alert system beside it would raise, log and count every alert twice.
    So :func:`subscribe` and a :class:`~otel_resilience.ResilienceManager` given no
    ``alert_system`` use the application's own. The one made here runs on the process-wide clock
    (the system clock; in a :func:`otel_resilience.testing.fresh_defaults` block, the block's).

    Returns:
        The shared :class:`AlertSystem`, or the application's that stands in for it.
    """
    system = _DEFAULT
    if system is not None and not system.closed:
        return system  # made when none listened: the first listening, and the subscriptions' holder
    with _DEFAULT_LOCK:
        return _standing_in_locked()


def close_process_wide() -> None:
    """Close the process-wide alert system this module made, if it listens: the next use makes a new one.

    For tests (:func:`otel_resilience.testing.fresh_defaults`): its cooldowns, history and counts
    go with it. An alert system of the application standing in for it is left listening. The
    :func:`subscribe` subscriptions and the managers that follow the process-wide system move to
    the one standing in next, as at any close.
    """
    system = _DEFAULT
    if system is not None:
        system.close()  # idempotent


def _standing_in_locked() -> AlertSystem:
    """The alert system standing for the process-wide one, made if none; the subscriptions moved onto it.

    That is the first alert system (in the order they were added) that listens on the global
    hub: the process-wide one, or the application's own, made before it.
    """
    global _DEFAULT  # noqa: PLW0603 - the one lazily created process-wide instance
    system = _standing_in(HUB)
    if system is None:
        system = _DEFAULT = follow_process_clock(_made_on)  # a test's block's clock in its block
        HUB.add_listener(system)  # held strongly: this module keeps it anyway, and its events cost no proxy
    holder = _holder() if _holder is not None else None
    if holder is not system:  # it left with none listening beside it (closed), or was freed
        with contextlib.ExitStack() as locks:
            for held in (system,) if holder is None else (system, holder):
                locks.enter_context(held._lock)
            _hand_subscriptions_locked(holder, system)
    return system


def _made_on(clock: Clock) -> AlertSystem:
    """The process-wide alert system, made on the process-wide ``clock`` (and moved to each next one)."""
    return AlertSystem(clock=clock)


def _hand_subscriptions_locked(holder: AlertSystem | None, system: AlertSystem) -> None:
    """Move the subscriptions made with :func:`subscribe` from ``holder`` onto ``system``.

    Under :data:`_DEFAULT_LOCK` and both systems' locks: from one moment on, each alert is
    delivered by the one or the other.
    """
    global _holder  # noqa: PLW0603 - the subscriptions' one holder
    for subscription in _SUBSCRIPTIONS.values():
        if holder is not None:
            holder._unsubscribe_locked(subscription.token)
        subscription.token = system._subscribe_locked(subscription.callback, holder)
    _holder = weakref.ref(system)


def _closing(closed: AlertSystem, standing: AlertSystem) -> None:
    """At the close of the system holding the subscriptions, hand them to the one standing in from then.

    A close hook (``_CLOSING_HOOKS``: under the lock and both systems' locks). Only on the global
    hub, where the process-wide role is; with none listening beside the closed system, they
    wait for the one made next (:func:`_standing_in_locked`).
    """
    if _holder is not None and _holder() is closed and standing._hub is HUB:
        _hand_subscriptions_locked(closed, standing)


_CLOSING_HOOKS.append(_closing)


class _ReportedAlerts:
    """The alert counts a :class:`~otel_resilience.ResilienceManager` reports: the one place of the rule.

    Those of its alert system while that one listens. Once it is closed, the system that stood
    in for the process-wide one at the close takes its place (noted by :meth:`AlertSystem.close`
    with its counts then, a ``_Handover``; if it is gone, the next that listened then, which
    heard the same events since; if none listened, the one :func:`default_alert_system` gives,
    made after the close), and the counts go on: the closed system's, plus what its
    successor counted since the close, so that no alert is lost or counted twice. The counts
    the successor took over from are read as they are now: an event on its way to both systems
    at the close corrects them when the later of the two hears it, even after the manager moved
    on (while the closed system lives, it may still hear one). Leaving the alert system the
    manager was given is logged once, as a warning; following the process-wide one from one
    instance to the next is not.
    """

    __slots__ = ("_carried", "_closed", "_given", "_handover", "_left", "_lock", "_system")

    def __init__(self, system: AlertSystem | None) -> None:
        self._given = system is not None
        self._system = system if system is not None else default_alert_system()
        self._carried: dict[str, int] = {}
        """The counts of the systems reported before, closed since, while each was reported."""
        self._handover: _Handover | None = None
        """How the current system took over: its counts then (``None``: from 0, or the first)."""
        self._left: list[tuple[_Handover, dict[str, int]]] = []
        """The handovers of the systems reported before, and their counts as carried: corrected
        later by an event that was on its way at their close, while their closed system lives."""
        self._closed: list[tuple[weakref.ref[AlertSystem], dict[str, int]]] = []
        """The systems reported before, closed since, and their counts as carried: a delivery under
        way at the close (an alert raised before it) still counts its subscribers' errors there."""
        self._lock = fork_safe(threading.Lock())

    def system(self) -> AlertSystem:
        """The alert system reported now (moved on from a closed one)."""
        system = self._system
        if not system.closed:
            return system
        with self._lock:
            return self._current_locked()

    def _current_locked(self) -> AlertSystem:
        while (closed := self._system).closed:  # its successor may be closed in turn, and so on
            for handover in closed._handed_over():  # the first that listened at the close, still there
                if (successor := handover.successor()) is not None:
                    break
            else:  # none listened at the close (or all are gone): the one now, made since, from 0
                successor, handover = default_alert_system(), None
            final, taken = closed._counts(), self._handover
            base = taken.counted() if taken is not None else {}
            carried = self._carried
            for key, count in final.items():
                carried[key] = carried.get(key, 0) + count - base.get(key, 0)
            if taken is not None:
                self._left.append((taken, base))
            self._closed.append((weakref.ref(closed), final))
            self._handover, self._system = handover, successor
            if self._given:
                self._given = False
                _LOG.warning(
                    "the alert system %r of a ResilienceManager was closed: its alert statistics carry "
                    "on with %r, which stands in for the process-wide alert system",
                    closed,
                    successor,
                )
        return self._system

    def _settle_locked(self) -> None:
        """Carry what was counted since it was carried; forget what can count no more.

        The corrections the handovers left were given since, and what the closed systems counted
        since (the subscriber errors of a delivery under way at their close).
        """
        carried, kept = self._carried, []
        for handover, base in self._left:
            now = handover.counted()
            for key, count in now.items():
                carried[key] = carried.get(key, 0) + base.get(key, 0) - count
            if handover.closed() is not None:  # it may still hear an event that was on its way
                kept.append((handover, now))
        self._left = kept
        closed_kept = []
        for held, counted in self._closed:
            if (closed := held()) is None:  # freed: no delivery of its own is under way any more
                continue
            now = closed._counts()
            for key, count in now.items():
                carried[key] = carried.get(key, 0) + count - counted.get(key, 0)
            closed_kept.append((held, now))
        self._closed = closed_kept

    def get_stats(self) -> AlertStatsDict:
        """:meth:`AlertSystem.get_stats` of the system reported now, counts carried on past closes."""
        with self._lock:
            system = self._current_locked()
            self._settle_locked()
            stats, base = system._stats_since(self._handover)
            carried = dict(self._carried)
        if carried or base:
            by_kind = stats["by_kind"]
            for kind in by_kind:
                by_kind[kind] += carried.get(kind, 0) - base.get(kind, 0)
            errors = "callback_errors"
            stats["callback_errors"] += carried.get(errors, 0) - base.get(errors, 0)
            stats["total"] = sum(by_kind.values())
        return stats


def _with_pattern(pattern: Named) -> None:  # noqa: ARG001 - a registry callback
    """Make sure an alert system listens on the global hub once a pattern that can raise one exists."""
    default_alert_system()


for _registry in (BREAKERS, BULKHEADS, RECOVERY_SYSTEMS):
    _registry.on_added(_with_pattern)


def subscribe(callback: AlertCallback) -> Callable[[], None]:
    """Call ``callback(alert)`` for every alert of the process-wide :func:`default_alert_system`.

    That is the application's own alert system while it listens on the global hub in its place.
    The subscription follows the process-wide system: once the application's own stops listening
    (closed, or freed), it moves to the system that takes its place: at the close, to the one
    listening beside it (which stands in from then on); else when that one is made or looked up
    (by the next pattern, manager or :func:`default_alert_system` call).

    Args:
        callback: A function or an async function taking an :class:`Alert`; it runs as
            :meth:`AlertSystem.subscribe`'s callbacks do.

    Returns:
        A function that unsubscribes it (calling it again does nothing).

    Raises:
        TypeError: ``callback`` is not callable, or is a generator function (sync or async), or
            an object whose ``__call__`` is one.
    """
    with _DEFAULT_LOCK:
        subscription = _Subscription(callback, _standing_in_locked()._subscribe(callback))
        key = next(_KEYS)
        _SUBSCRIPTIONS[key] = subscription

    def unsubscribe() -> None:
        with _DEFAULT_LOCK:
            gone = _SUBSCRIPTIONS.pop(key, None)
            holder = _holder() if _holder is not None else None
            if gone is not None and holder is not None:
                holder._unsubscribe(gone.token)

    return unsubscribe
