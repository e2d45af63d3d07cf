"""The alert system: :class:`AlertSystem`, a listener that raises alerts from the event stream."""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final, TypeVar

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock
from otel_resilience.engine.events import (
    HUB,
    AlertRaised,
    CallRejected,
    Event,
    EventArgs,
    EventKind,
    PatternDetected,
    RecoveryAttempted,
    StateChanged,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
    key_attribute,
)
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.protecting import is_async_callable
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import RECOVERY_SYSTEMS, Named
from otel_resilience.engine.validation import check_callable, check_name, discard, fail
from otel_resilience.patterns.alerts.model import (
    MAX_TRACKED_SUBJECTS,
    SEVERITIES,
    Alert,
    AlertCallback,
    AlertConfig,
    AlertKind,
    _bounded,
)

_LOG: Final = logging.getLogger("otel_resilience")

_K = TypeVar("_K", str | tuple[str, str], tuple[str, str])

_ALERT_SYSTEMS: Final[weakref.WeakKeyDictionary[AlertSystem, None]] = weakref.WeakKeyDictionary()
"""Every live alert system, oldest first (as they were added to their hubs), each told when a new
recovery system takes a name (see :func:`_recovery_system_added`)."""
_ALERT_SYSTEMS_LOCK: Final = fork_safe(threading.RLock())
"""Held while an alert system is added to its hub, and while ``default_alert_system()`` looks for
the one that stands for the process-wide system and makes it if there is none (it makes one
holding it: reentrant). So a system is either found there or added after it was made, never
added unseen between the look-up and the making."""


def _standing_in(hub: TelemetryHub) -> AlertSystem | None:
    """The alert system that stands for the process-wide one on ``hub``: the first (oldest) listening.

    Called under :data:`_ALERT_SYSTEMS_LOCK`, so that no system is added to a hub unseen.
    """
    return next((system for system in list(_ALERT_SYSTEMS) if hub.listens(system)), None)


class _RateWindow:
    """The results of the last ``size`` recovery attempts, with a running success count."""

    __slots__ = ("below", "results", "successes")

    def __init__(self, size: int) -> None:
        self.results: deque[bool] = deque(maxlen=size)
        self.successes = 0
        self.below = False

    def record(self, success: bool) -> None:
        results = self.results
        if len(results) == results.maxlen and results[0]:
            self.successes -= 1
        results.append(success)
        if success:
            self.successes += 1


_WANTED_EVENTS: Final = frozenset({Event.STATE_CHANGED, Event.RECOVERY_ATTEMPTED, Event.PATTERN_DETECTED})
"""The events (besides bulkhead rejections) an :class:`AlertSystem` can raise an alert on."""

_ALERTING_REJECTIONS: Final = "bulkhead"
"""The one kind of source whose rejections an :class:`AlertSystem` counts (``bulkhead_full``): the
rule :meth:`AlertSystem.wants` routes by, and :meth:`AlertSystem.on_event` acts by, whatever routed
an event to it (a subclass's ``wants``, or one that raised: the hub then routes it every event)."""

_STATE_CHANGED: Final = Event.STATE_CHANGED
_CALL_REJECTED: Final = Event.CALL_REJECTED
_RECOVERY_ATTEMPTED: Final = Event.RECOVERY_ATTEMPTED
_BULKHEAD_FULL: Final = AlertKind.BULKHEAD_FULL
"""Members read on every event (a full bulkhead's every rejection), bound once: reading a
member off its enum class is slow."""


class AlertSystem:
    """Raises in-process alerts from the telemetry event stream.

    It registers itself as a listener on ``hub`` at construction; :meth:`close` (or leaving a
    ``with`` block) removes it. The hub holds it weakly: it listens for as long as something
    else holds it (its owner, a :class:`~otel_resilience.ResilienceManager` given it). Dropped
    without :meth:`close`, it is freed with its subscribers and leaves the hub.

    Args:
        config: When to alert (default: :class:`AlertConfig` defaults).
        clock: The clock for cooldowns and alert timestamps.
        hub: The event stream to listen to and to report ``ALERT_RAISED`` on.
        name: The telemetry source name of its ``ALERT_RAISED`` events. Default ``"alerts"``.

    Raises:
        TypeError: ``config`` is not an :class:`AlertConfig`, ``clock`` not a clock, ``hub``
            not a :class:`~otel_resilience.engine.events.TelemetryHub`, or ``name`` not a string.
        ValueError: ``name`` is empty.
    """

    __slots__ = (
        "__weakref__",
        "_by_kind",
        "_callback_errors",
        "_clock",
        "_closed",
        "_config",
        "_episodes",
        "_escalation_cooldowns",
        "_full_cooldowns",
        "_handover",
        "_history",
        "_hub",
        "_lock",
        "_rates",
        "_subscribers",
        "_telemetry",
        "_tokens",
    )

    def __init__(
        self,
        config: AlertConfig | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        hub: TelemetryHub = HUB,
        name: str = "alerts",
    ) -> None:
        if config is None:
            config = AlertConfig()
        elif not isinstance(config, AlertConfig):
            raise fail("AlertSystem", "config", "an AlertConfig", config, kind=TypeError)
        check_name("AlertSystem", "name", name)
        check_clock("AlertSystem", clock)
        if not isinstance(hub, TelemetryHub):
            raise fail("AlertSystem", "hub", "a TelemetryHub", hub, kind=TypeError)
        self._config = config
        self._clock = clock
        self._hub = hub
        self._lock = fork_safe(threading.Lock())
        self._telemetry = StrategyTelemetry(TelemetrySource("alerts", name), hub)
        self._subscribers: tuple[tuple[int, AlertCallback], ...] = ()
        self._tokens = itertools.count()
        self._history: deque[Alert] = deque(maxlen=config.history_size)
        self._by_kind = dict.fromkeys(AlertKind, 0)
        self._callback_errors = 0
        self._rates: OrderedDict[str, _RateWindow] = OrderedDict()
        # When each subject's cooldown ends: a full bulkhead by name, an escalation by (system, error).
        # A keyed policy's bulkheads (one per key, one name) by (name, key): each key cools down alone.
        self._full_cooldowns: dict[str | tuple[str, str], float] = {}
        self._escalation_cooldowns: dict[tuple[str, str], float] = {}
        self._episodes: OrderedDict[tuple[str, str | None], None] = OrderedDict()  # (name, key)
        self._closed = False
        # The system standing in for it when it was closed, weakly, and its counts then (see close()).
        self._handover: tuple[weakref.ref[AlertSystem], dict[str, int]] | None = None
        with _ALERT_SYSTEMS_LOCK:
            _ALERT_SYSTEMS[self] = None
            hub.add_listener(self, weak=True)

    config = ReadOnly[AlertConfig]("_config", "When it alerts.")

    @property
    def history(self) -> tuple[Alert, ...]:
        """The most recent alerts, oldest first (at most ``config.history_size``)."""
        with self._lock:
            return tuple(self._history)

    def close(self) -> None:
        """Stop listening to the hub (idempotent). Subscribers, history and counts are kept.

        Once it has returned, no alert is raised here, not even for an event already on its way
        (being dispatched in another thread, or by a listener that closed it).

        A :class:`~otel_resilience.ResilienceManager` that reported it carries on with the alert
        system standing in for the process-wide one: the one that does at the close (the first
        other system listening on its hub), and its counts then, are noted here, so that the
        manager's alert counts lose no alert raised after the close, nor count one twice.
        """
        with _ALERT_SYSTEMS_LOCK:  # no system added to the hub unseen while the stand-in is looked up
            self._hub.remove_listener(self)
            if not self._closed:
                standing = _standing_in(self._hub)
                if standing is not None:
                    self._handover = (weakref.ref(standing), standing._counts())
                self._closed = True  # last: once closed, its handover is there to read

    closed = ReadOnly[bool]("_closed", "Whether :meth:`close` removed it from its hub.")

    def __enter__(self) -> AlertSystem:
        return self

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening"
        return (
            f"AlertSystem({self._telemetry.source.name!r}, {state}, alerts={sum(self._by_kind.values())}, "
            f"subscribers={len(self._subscribers)})"
        )

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, callback: AlertCallback) -> Callable[[], None]:
        """Call ``callback(alert)`` for every alert raised from now on.

        Callbacks run in the thread that reported the triggering event, outside any lock, so they
        must be quick; one that raises, or returns a coroutine (which is closed, never awaited),
        is logged and counted in ``callback_errors``.

        Args:
            callback: A sync callable taking an :class:`Alert`.

        Returns:
            A function that unsubscribes this subscription (calling it again does nothing). It
            holds the alert system weakly: it does not keep a system its owner dropped alive.

        Raises:
            TypeError: ``callback`` is not callable, or is async (a coroutine function).
        """
        token = self._subscribe(callback)
        owner = weakref.ref(self)

        def unsubscribe() -> None:
            system = owner()
            if system is not None:
                system._unsubscribe(token)

        return unsubscribe

    def _subscribe(self, callback: AlertCallback) -> int:
        """Check and add a subscription (see :meth:`subscribe`); return its token."""
        check_callable("AlertSystem.subscribe", "callback", callback)
        if is_async_callable(callback):
            raise fail(
                "AlertSystem.subscribe",
                "callback",
                "a sync callable (an async one would make a coroutine nobody awaits)",
                callback,
                kind=TypeError,
            )
        with self._lock:
            token = next(self._tokens)
            self._subscribers = (*self._subscribers, (token, callback))
        return token

    def _unsubscribe(self, token: int) -> None:
        """Remove the subscription ``token`` (if it is still there)."""
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s[0] != token)

    def _counts(self) -> dict[str, int]:
        """Its alerts by kind (by the kind's value) and ``"callback_errors"``: what goes on after a close."""
        with self._lock:
            counts = {kind.value: count for kind, count in self._by_kind.items()}
            counts["callback_errors"] = self._callback_errors
        return counts

    def _successor(self) -> tuple[AlertSystem, dict[str, int]] | None:
        """The system that stood in for this one when it was closed, and its counts then.

        ``None`` if it is not closed, or none listened then (the one standing in now was made
        after the close), or that one is gone.
        """
        handover = self._handover
        if handover is None:
            return None
        successor = handover[0]()
        return None if successor is None else (successor, dict(handover[1]))

    def get_stats(self) -> dict[str, Any]:
        """Return the alert counts.

        Returns:
            ``{"total", "by_kind": {kind: count}, "callback_errors", "subscribers"}``.
        """
        with self._lock:
            return {
                "total": sum(self._by_kind.values()),
                "by_kind": {kind.value: count for kind, count in self._by_kind.items()},
                "callback_errors": self._callback_errors,
                "subscribers": len(self._subscribers),
            }

    def wants(self, source: TelemetrySource, event: EventKind) -> bool:
        """Whether :meth:`on_event` can act on ``event`` from ``source``'s kind (a hub filter).

        Only state changes, bulkhead rejections, recovery actions and error patterns can raise
        an alert, so the hub spares the other events (a breaker's rejections, retries) the call.
        This is where a rejection is decided to count towards ``BULKHEAD_FULL``: every rejection
        a bulkhead reports (full, or a queue timeout), the reasons the Prometheus
        ``ResilienceBulkheadFull`` rule sums.
        """
        if event is Event.CALL_REJECTED:
            return source.kind == _ALERTING_REJECTIONS
        return event in _WANTED_EVENTS

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        """Turn one reported event into an alert when it calls for one (a listener callback)."""
        if event is _CALL_REJECTED:  # first: a full bulkhead reports every call it rejects
            # A bulkhead's rejection counts, whatever its reason (full, or a queue timeout), as
            # the Prometheus bulkhead rule sums them all; no other's, whatever routed it here.
            # The cooldown asked here: a bulkhead that stays full is in it for each rejection.
            if source.kind == _ALERTING_REJECTIONS and self._cooled_down(
                self._full_cooldowns,
                source.name if source.key is None else (source.name, source.key),
                self._config.bulkhead_cooldown,
            ):
                self._raise(self._bulkhead_full(source, args))
            return
        alert: Alert | None = None
        if event is _STATE_CHANGED:
            if isinstance(args, StateChanged):
                alert = self._state_changed(source, args)
        elif event is _RECOVERY_ATTEMPTED:
            if isinstance(args, RecoveryAttempted):
                self._recovery_attempted(source, args)
        elif event is Event.PATTERN_DETECTED and isinstance(args, PatternDetected):
            alert = self._pattern(source, args)
        if alert is not None:
            self._raise(alert)

    # -- decisions -----------------------------------------------------------------------------

    def _make(
        self, kind: AlertKind, subject: str, summary: str, source: TelemetrySource, **attributes: str
    ) -> Alert:
        attributes["source.kind"] = source.kind
        attributes["source.name"] = source.name
        if source.pipeline is not None:
            attributes["pipeline"] = source.pipeline
        if source.key is not None:
            attributes["key"] = key_attribute(source.key)  # as on its spans: two long keys, two values
        bounded = {key: _bounded(value) for key, value in attributes.items()}
        return Alert(
            kind,
            SEVERITIES[kind],
            _bounded(subject),
            summary,
            self._clock.now(),
            MappingProxyType(bounded),
        )

    def _state_changed(self, source: TelemetrySource, args: StateChanged) -> Alert | None:
        """Start (and alert), continue or end the outage episode of the breaker ``source``.

        A keyed policy's breakers (one per key, one name) each have their own episode: the
        source's key tells them apart.
        """
        name = source.name
        episode = (name, source.key)
        new = args.new
        if new == "closed":
            with self._lock:
                self._episodes.pop(episode, None)
            return None
        if new != "open":
            return None
        reopens = args.reopens  # the breaker says where its episode starts: 0
        with self._lock:
            episodes = self._episodes
            if reopens and episode in episodes:
                episodes.move_to_end(episode)
                return None
            episodes[episode] = None
            episodes.move_to_end(episode)
            if len(episodes) > MAX_TRACKED_SUBJECTS:
                episodes.popitem(last=False)
        breaker = f"circuit breaker {_bounded(name)!r}"
        if source.key is not None:
            breaker = f"{breaker} (key {key_attribute(source.key)!r})"
        summary = f"{breaker} opened ({args.reason})"
        if reopens:
            plural = "s" if reopens > 1 else ""
            summary = f"{breaker} re-opened ({args.reason}), {reopens} re-open{plural} in this outage"
        return self._make(
            AlertKind.CIRCUIT_OPEN,
            name,
            summary,
            source,
            old=args.old,
            reason=args.reason,
            reopens=str(reopens),
        )

    def _cooled_down(self, cooldowns: dict[_K, float], key: _K, cooldown: float) -> bool:
        """Whether the subject ``key`` of the alert kind whose table is ``cooldowns`` may alert now.

        If so, its cooldown starts: the table keeps when it ends. Whether a subject still cools
        down is read without the lock (a bulkhead that stays full reports every rejection here;
        the one read of the dict is atomic). Under the lock, the cooldown is started only if no
        other thread started one since that read. Each kind has its own table (a plain ``dict``,
        oldest first: its look-up is specialised where an ``OrderedDict``'s is not), keyed by
        what tells its subjects apart (a bulkhead's name, a bare string whose hash is kept: no
        key is built per rejection; a keyed policy's bulkhead, one per key, by name and key).
        """
        now = self._clock.now()
        until = cooldowns.get(key)
        if until is not None and now < until:
            return False
        with self._lock:
            current = cooldowns.get(key)
            if current is not None and current is not until:  # another thread alerted meanwhile
                return False
            cooldowns.pop(key, None)  # re-inserted last: the oldest subject is the first key
            cooldowns[key] = now + cooldown
            if len(cooldowns) > MAX_TRACKED_SUBJECTS:
                del cooldowns[next(iter(cooldowns))]
            return True

    def _bulkhead_full(self, source: TelemetrySource, args: EventArgs) -> Alert:
        """The alert of a full bulkhead whose cooldown :meth:`on_event` just started.

        ``args`` is the rejection that raised it: its ``reason`` (``"bulkhead_full"`` or
        ``"queue_timeout"``) is the alert's ``reason`` attribute.
        """
        name = source.name
        reason = args.reason if isinstance(args, CallRejected) else ""
        cooldown = self._config.bulkhead_cooldown
        bulkhead = f"bulkhead {_bounded(name)!r}"
        if source.key is not None:
            bulkhead = f"{bulkhead} (key {key_attribute(source.key)!r})"
        return self._make(
            _BULKHEAD_FULL,
            name,
            f"{bulkhead} is full and rejecting calls",
            source,
            reason=reason,
            cooldown=f"{cooldown:g}",
        )

    def _pattern(self, source: TelemetrySource, args: PatternDetected) -> Alert:
        return self._make(
            AlertKind.ERROR_PATTERN,
            args.operation,
            f"{_bounded(args.error_type)} in {_bounded(args.operation)!r} repeated "
            f"{args.count} times within {args.window:g} s",
            source,
            error_type=args.error_type,
            operation=args.operation,
            count=str(args.count),
            window=f"{args.window:g}",
        )

    def _recovery_attempted(self, source: TelemetrySource, args: RecoveryAttempted) -> None:
        """Update the source's rate window; raise a low-rate and/or an escalation alert."""
        config = self._config
        name = source.name
        low: tuple[int, int] | None = None
        with self._lock:
            rates = self._rates
            window = rates.get(name)
            if window is None:
                window = rates[name] = _RateWindow(config.recovery_window)
                if len(rates) > MAX_TRACKED_SUBJECTS:
                    rates.popitem(last=False)
            else:
                rates.move_to_end(name)
            window.record(args.result == "success")
            seen = len(window.results)
            rate = window.successes / seen
            if rate >= config.recovery_rate_threshold:
                window.below = False
            elif seen >= config.min_recovery_attempts and not window.below:
                window.below = True
                low = (window.successes, seen)
        if low is not None:
            successes, seen = low
            threshold = config.recovery_rate_threshold
            # The rate in tenths of a percent, rounded down (from the counts: exact), so that the
            # summary never shows it at the threshold it fell below; the threshold as configured.
            tenths = successes * 1000 // seen
            self._raise(
                self._make(
                    AlertKind.LOW_RECOVERY_RATE,
                    name,
                    f"recovery rate of {_bounded(name)!r} fell to {tenths / 10:g}% over its last {seen} "
                    f"attempts (threshold {threshold * 100:g}%)",
                    source,
                    rate=f"{successes / seen:.4f}",
                    attempts=str(seen),
                    threshold=f"{threshold:g}",
                )
            )
        if args.strategy == "escalate" and self._cooled_down(
            self._escalation_cooldowns, (name, args.error_type), config.escalation_cooldown
        ):
            self._raise(
                self._make(
                    AlertKind.RECOVERY_ESCALATED,
                    name,
                    f"{_bounded(args.error_type)} was escalated by recovery system {_bounded(name)!r}",
                    source,
                    error_type=args.error_type,
                )
            )

    def _forget_recovery_system(self, name: str) -> None:
        """Forget the recovery rate and the escalation cooldowns kept for recovery system ``name``."""
        with self._lock:
            self._rates.pop(name, None)
            cooldowns = self._escalation_cooldowns
            for subject in [subject for subject in cooldowns if subject[0] == name]:
                del cooldowns[subject]

    # -- delivery ------------------------------------------------------------------------------

    def _raise(self, alert: Alert) -> None:
        """Record ``alert``, report it as ``ALERT_RAISED`` and hand it to every subscriber.

        Not once closed: an event routed to it before :meth:`close` (a dispatch under way then)
        is the system's that stands in for it now, which a manager's counts carry on with.
        """
        with self._lock:
            if self._closed:
                return
            self._history.append(alert)
            self._by_kind[alert.kind] += 1
            subscribers = self._subscribers
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(
                Event.ALERT_RAISED,
                AlertRaised(alert.kind.value, alert.severity.value, alert.subject, alert.summary),
            )
        for _, callback in subscribers:
            try:
                made = callback(alert)
                if inspect.iscoroutine(made):
                    discard(made)
                    msg = f"returned a coroutine, which is never awaited: {made!r}"
                    raise TypeError(msg)  # noqa: TRY301 - counted and logged as any subscriber error
            except Exception:  # noqa: BLE001 - a subscriber must never break the reporting pattern
                with self._lock:
                    self._callback_errors += 1
                _LOG.warning("alert subscriber %r failed", callback, exc_info=True)


def _recovery_system_added(recovery: Named) -> None:
    """A new recovery system starts clean in every alert system (a registry callback).

    Its recovery rate, low-rate alert and escalation cooldowns are kept by its name, which may
    have been another's, now gone (a manager's default ``"recovery"`` is given again once its
    system is gone): what was kept of that one is forgotten, so that the new system neither
    inherits its failed recoveries nor is silenced by its escalations. Unless a live namesake
    still holds the name: their recoveries are counted together (as their telemetry series are).
    """
    name = recovery.name
    if any(other is not recovery and other.name == name for other in RECOVERY_SYSTEMS.items()):
        return
    with _ALERT_SYSTEMS_LOCK:
        systems = list(_ALERT_SYSTEMS)
    for system in systems:
        system._forget_recovery_system(name)


RECOVERY_SYSTEMS.on_added(_recovery_system_added)
