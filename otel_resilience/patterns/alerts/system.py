"""The alert system: :class:`AlertSystem`, a listener that raises alerts from the event stream."""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Final, TypedDict, TypeVar

from otel_resilience.engine.calling import check_notified, notify
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
from otel_resilience.engine.readonly import FrozenMapping, ReadOnly
from otel_resilience.engine.registry import RECOVERY_SYSTEMS, Named
from otel_resilience.engine.validation import check_name, describe, fail
from otel_resilience.patterns.alerts.model import (
    MAX_TRACKED_SUBJECTS,
    SEVERITIES,
    UNTRACKED_OUTAGE_COOLDOWN,
    Alert,
    AlertCallback,
    AlertConfig,
    AlertKind,
    _bounded,
)

_K = TypeVar("_K", str | tuple[str, str], tuple[str, str])

_Subscriber = tuple[int, AlertCallback, int | None]
"""A subscription: its token, its callback, and the serial of the closed system whose close handed
it over (``None``: made on the system it is on)."""

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


def _listening(hub: TelemetryHub, besides: AlertSystem) -> list[AlertSystem]:
    """The alert systems listening on ``hub`` but ``besides``, oldest first (as :func:`_standing_in` goes).

    Called under :data:`_ALERT_SYSTEMS_LOCK`, so that no system is added to a hub unseen.
    """
    return [system for system in list(_ALERT_SYSTEMS) if system is not besides and hub.listens(system)]


_CLOSING_HOOKS: Final[list[Callable[[AlertSystem, AlertSystem], None]]] = []
"""Called at the cut of each close that another system listens beside (``hook(closed, standing)``,
``standing`` the one that stands in from then on), under :data:`_ALERT_SYSTEMS_LOCK` and the locks
of both: what follows the process-wide role moves there in the same moment (``subscribe()``'s
subscriptions), so that no alert of either is delivered twice, or not at all."""

_SERIALS: Final = itertools.count()
"""Numbers every alert system once, for the records of what each made of an event (no reference
to the system: a record left in a thread's local never keeps a system alive); and, in one order,
when each system started listening and each record was made."""


class _Dispatch:
    """The event being dispatched in one thread, and what each alert system that heard it made of it.

    Kept only by systems that have another on their hub (``_paired``): the systems a close hands
    over between are called one after the other by the same dispatch, and tell by this record
    which of them the close came between (see :class:`_Handover`).
    """

    __slots__ = ("args", "event", "source", "stamp", "verdicts")

    def __init__(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        self.source = source
        self.event = event
        self.args = args
        self.stamp = next(_SERIALS)
        """When it was made: a system that listens since (a larger ``_since``) did not hear its event."""
        self.verdicts: list[_Verdict] = []


class _Verdict:
    """What one alert system made of one dispatched event: the alerts it counted, whether it had closed."""

    __slots__ = ("closed", "counted", "dispatch", "serial")

    def __init__(self, serial: int, dispatch: _Dispatch) -> None:
        self.serial = serial
        self.dispatch = dispatch
        self.counted: list[tuple[Alert, int]] = []
        """Each alert counted, with how many systems the system had succeeded then (``_cuts``)."""
        self.closed = False
        """Whether the system was closed once it had decided (read at its end)."""

    def counts(self, kind: AlertKind) -> bool:
        return any(counted.kind is kind for counted, _ in self.counted)


_HEARD: Final = threading.local()
"""``record``: the :class:`_Dispatch` of the event being dispatched in this thread."""


class _Handover:
    """The cut :meth:`AlertSystem.close` makes: the system standing in, and its counts then.

    A manager that reported the closed system counts on with the successor's alerts since the cut:
    ``base`` is what the successor had counted at it, guarded by the successor's lock (``lock``).
    The cut is one moment for both (taken under both locks): each alert either the closed system
    counted before it, or the successor after it. A dispatch under way at the cut reaches the two
    one after the other, one before the cut and the other after it: that event is the closed
    system's if it decided it before its close, else the successor's, and ``base`` is corrected
    so (each correction where it is seen: the later of the two to hear the event). So no alert is
    counted twice, nor lost, whichever of the two the dispatch reached first. The subscriptions
    the close hands to the successor (``_CLOSING_HOOKS``) are given that event's alert by the same
    rule: by the closed system if it is its, else by the successor (when it raises it after the
    cut, or, raised before it, when the closed system hears the event late).
    """

    __slots__ = (
        "__weakref__",
        "base",
        "closed",
        "closed_serial",
        "index",
        "lock",
        "successor",
        "successor_serial",
    )

    def __init__(self, closed: AlertSystem, successor: AlertSystem) -> None:
        """Made under both systems' locks: ``successor._cuts`` already counts this one."""
        self.closed = weakref.ref(closed)
        self.closed_serial = closed._serial
        self.successor = weakref.ref(successor)
        self.successor_serial = successor._serial
        self.index = successor._cuts
        self.lock = successor._lock
        self.base = {kind.value: count for kind, count in successor._by_kind.items()}
        self.base["callback_errors"] = successor._callback_errors

    def counted(self) -> dict[str, int]:
        """``base`` now (corrected since the cut for the events then under way)."""
        with self.lock:
            return dict(self.base)

    def correct_late(self, closed: _Verdict) -> None:
        """The closed system heard an event after its close that the successor counted before the cut.

        Those alerts of the successor (the ones the closed system did not count itself) are the
        manager's: they leave ``base``. They are the ones delivered, too: the subscriptions the
        close handed over (not yet on the successor when it raised them) get them now.
        """
        successor = next((v for v in closed.dispatch.verdicts if v.serial == self.successor_serial), None)
        if successor is None:
            return
        system = self.successor()
        late: list[Alert] = []
        with self.lock:
            for alert, cuts in successor.counted:
                if cuts < self.index and not closed.counts(alert.kind):
                    self.base[alert.kind.value] -= 1
                    late.append(alert)
            handed = (
                () if system is None else tuple(s for s in system._subscribers if s[2] == self.closed_serial)
            )
        if handed and system is not None:
            for alert in late:
                system._deliver(alert, handed)


_FELL: Final = 1
""":meth:`_RateWindow.record`: the rate just fell below the threshold (an alert); a window more below it."""
_REARMED: Final = -1
""":meth:`_RateWindow.record`: the rate is back at the threshold; a window less below it."""


class _RateWindow:
    """The results of the last ``size`` recovery attempts, with a running success count.

    ``below``: its rate fell below the threshold and has not been back at it since: the alert of
    the fall was raised, and it stays silent until then (its cooldown, which a time cannot end).
    """

    __slots__ = ("below", "results", "successes")

    def __init__(self, size: int) -> None:
        self.results: deque[bool] = deque(maxlen=size)
        self.successes = 0
        self.below = False

    def record(self, success: bool, config: AlertConfig) -> int:
        """Add one attempt's result; return :data:`_FELL` (alert), :data:`_REARMED` or 0.

        The rule of ``LOW_RECOVERY_RATE``: one alert per fall below ``recovery_rate_threshold``,
        once ``min_recovery_attempts`` were seen, re-armed when the rate is back at or above it.
        """
        results = self.results
        if len(results) == results.maxlen and results[0]:
            self.successes -= 1
        results.append(success)
        if success:
            self.successes += 1
        if self.successes / len(results) >= config.recovery_rate_threshold:
            if self.below:
                self.below = False
                return _REARMED
        elif len(results) >= config.min_recovery_attempts and not self.below:
            self.below = True
            return _FELL
        return 0


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

_OWN: Final = 1
""":meth:`AlertSystem._cooled_down`: the subject's own cooldown started (0: it still cools down)."""
_SHARED: Final = 2
""":meth:`AlertSystem._cooled_down`: the cooldown shared by the subjects past the cap started."""

_UNTRACKED: Final = {
    AlertKind.CIRCUIT_OPEN: ("breakers", "breaker in outage"),
    _BULKHEAD_FULL: ("bulkheads", "full bulkhead"),
    AlertKind.RECOVERY_ESCALATED: ("escalations", "escalation"),
    AlertKind.LOW_RECOVERY_RATE: ("recovery systems", "recovery system"),
}
"""What an alert standing for the subjects past :data:`MAX_TRACKED_SUBJECTS` of a kind calls
them: in its ``untracked`` attribute, and in its summary."""


def _untracked(kind: AlertKind, summary: str, cooldown: str) -> tuple[str, dict[str, str]]:
    """The summary and the attribute of an alert that stands for every untracked subject of ``kind``."""
    many, one = _UNTRACKED[kind]
    stands = f"it stands for every {one} past the {MAX_TRACKED_SUBJECTS} tracked (one alert per {cooldown})"
    return f"{summary}; {stands}", {"untracked": f"more than {MAX_TRACKED_SUBJECTS} {many}"}


class AlertStatsDict(TypedDict):
    """The snapshot returned by :meth:`AlertSystem.get_stats`."""

    total: int
    by_kind: dict[str, int]
    """Alerts raised, by the kind's value (``"circuit_opened"`` ...)."""
    callback_errors: int
    subscribers: int


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
        "_cuts",
        "_episodes",
        "_escalation_cooldowns",
        "_full_cooldowns",
        "_handovers",
        "_history",
        "_hub",
        "_lock",
        "_paired",
        "_rates",
        "_rates_below",
        "_serial",
        "_since",
        "_subscribers",
        "_succeeding",
        "_telemetry",
        "_tokens",
        "_untracked_rates",
        "_untracked_until",
    )

    derives_events: Final = True
    """It reports ``ALERT_RAISED`` as it hears the event that raised it: the hub hands it every
    event after its other listeners, so that an alert is recorded after its cause."""

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
        self._subscribers: tuple[_Subscriber, ...] = ()
        """The subscriptions (one a close handed over had the alerts that system decided before it)."""
        self._tokens = itertools.count()
        self._history: deque[Alert] = deque(maxlen=config.history_size)
        self._by_kind = dict.fromkeys(AlertKind, 0)
        self._callback_errors = 0
        self._rates: OrderedDict[str, _RateWindow] = OrderedDict()
        self._rates_below = 0
        """How many windows of ``_rates`` are below the threshold (while all are, none is forgotten)."""
        self._untracked_rates = _RateWindow(config.recovery_window)
        """The window the recovery systems ``_rates`` has no room for share (:meth:`_rate_window_locked`)."""
        # When each subject's cooldown ends: a full bulkhead by name, an escalation by (system, error).
        # A keyed policy's bulkheads (one per key, one name) by (name, key): each key cools down alone.
        self._full_cooldowns: dict[str | tuple[str, str], float] = {}
        self._escalation_cooldowns: dict[tuple[str, str], float] = {}
        self._episodes: OrderedDict[tuple[str, str | None], None] = OrderedDict()  # (name, key)
        self._untracked_until: dict[AlertKind, float] = {}
        """When the cooldown shared by the subjects of a kind past the cap ends (see :meth:`_cooled_down`)."""
        self._closed = False
        self._handovers: tuple[_Handover, ...] = ()
        """The cut its close made, with each system listening beside it then (see :meth:`close`)."""
        self._serial = next(_SERIALS)
        self._cuts = 0
        """How many closed systems it stood in for at their close (each a :class:`_Handover`)."""
        self._succeeding: weakref.WeakValueDictionary[int, _Handover] = weakref.WeakValueDictionary()
        """Those handovers, by the serial of the closed system, while something keeps them."""
        self._paired = False
        """Whether another alert system listened on its hub beside it: a close may then hand over
        between the two while an event is on its way to both, and each event's record is kept."""
        with _ALERT_SYSTEMS_LOCK:
            peers = _listening(hub, self)
            for peer in peers:
                peer._paired = True
            self._paired = bool(peers)
            _ALERT_SYSTEMS[self] = None
            self._since = next(_SERIALS)  # a dispatch's record made before it is no event it hears
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
        (being dispatched in another thread, or by a listener that closed it). The subscriptions
        of the module's ``subscribe()`` are not its own: they follow the process-wide role, to the
        system listening beside it (if one does) at the close.

        A :class:`~otel_resilience.ResilienceManager` that reported it carries on with the alert
        system standing in for the process-wide one: the one that does at the close (the first
        other system listening on its hub; the next, if that one is gone by the time the manager
        moves on), and its counts then, are noted here (a :class:`_Handover` for each system
        listening beside it), so that the manager's alert counts lose no alert raised after the
        close, nor count one twice. The close and the noting are one moment for all of them
        (under all their locks, before it leaves the hub): each alert is counted by this one
        before it, or by the successor after it; an event on its way to both at that moment is
        settled by whichever hears it last.
        """
        with _ALERT_SYSTEMS_LOCK:  # no system added to the hub unseen while the stand-in is looked up
            if not self._closed:
                successors = _listening(self._hub, self)
                with contextlib.ExitStack() as cut:  # one moment for all: under every lock
                    for system in (*successors, self):
                        cut.enter_context(system._lock)
                    handovers = []
                    for successor in successors:
                        successor._cuts += 1
                        handover = _Handover(self, successor)
                        successor._succeeding[self._serial] = handover
                        handovers.append(handover)
                    self._handovers = tuple(handovers)
                    self._closed = True  # last: once closed, its handovers are there to read
                    if successors:
                        for hook in _CLOSING_HOOKS:
                            hook(self, successors[0])
            self._hub.remove_listener(self)

    closed = ReadOnly[bool]("_closed", "Whether :meth:`close` removed it from its hub.")

    def _follow_clock(self, clock: Clock) -> None:
        """Time cooldowns and stamp alerts on ``clock`` from now on: the process-wide system's.

        Told by :func:`~otel_resilience.engine.clock.set_process_clock` (the system
        :func:`~otel_resilience.default_alert_system` makes follows the process-wide clock, as
        :func:`otel_resilience.testing.fresh_defaults` sets it). The cooldowns running end: their
        ends are times on the clock before. Outage episodes and recovery rate windows are no times:
        they go on.
        """
        with self._lock:
            self._clock = clock
            self._full_cooldowns.clear()
            self._escalation_cooldowns.clear()
            self._untracked_until.clear()

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

        Callbacks run as a breaker's ``on_state_change`` callbacks do
        (:func:`~otel_resilience.engine.calling.notify`): in the thread or task that reported the
        triggering event, outside any lock, so they must be quick; an async one (or one that
        returns a coroutine) runs as a task of the running event loop or, reported from a thread
        with no running loop, to completion in a loop of its own there. One that raises (its
        coroutine too), or returns a generator, sync or async (never iterated: its body never
        runs), is logged and counted in ``callback_errors``.

        Args:
            callback: A function or an async function taking an :class:`Alert`.

        Returns:
            A function that unsubscribes this subscription (calling it again does nothing). It
            holds the alert system weakly: it does not keep a system its owner dropped alive.

        Raises:
            TypeError: ``callback`` is not callable, cannot be called as ``callback(alert)``, or is a
                generator function (sync or async), or an object whose ``__call__`` is one.
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
        check_notified("AlertSystem.subscribe", "callback", callback, "alert")
        with self._lock:
            return self._subscribe_locked(callback)

    def _subscribe_locked(self, callback: AlertCallback, handed_from: AlertSystem | None = None) -> int:
        """Add a subscription already checked; return its token.

        ``handed_from``: the system it was on until now (its close, or its end, hands it here).
        """
        token = next(self._tokens)
        origin = None if handed_from is None else handed_from._serial
        self._subscribers = (*self._subscribers, (token, callback, origin))
        return token

    def _unsubscribe(self, token: int) -> None:
        """Remove the subscription ``token`` (if it is still there)."""
        with self._lock:
            self._unsubscribe_locked(token)

    def _unsubscribe_locked(self, token: int) -> None:
        self._subscribers = tuple(s for s in self._subscribers if s[0] != token)

    def _counts(self) -> dict[str, int]:
        """Its alerts by kind (by the kind's value) and ``"callback_errors"``: what goes on after a close."""
        with self._lock:
            counts = {kind.value: count for kind, count in self._by_kind.items()}
            counts["callback_errors"] = self._callback_errors
        return counts

    def _handed_over(self) -> tuple[_Handover, ...]:
        """The cut its close made, with each system listening then, in the order they stand in (or none)."""
        return self._handovers

    def _stats_since(self, handover: _Handover | None) -> tuple[AlertStatsDict, dict[str, int]]:
        """:meth:`get_stats`, and the counts it took over from at ``handover`` (its own), at one moment."""
        with self._lock:
            return self._stats_locked(), {} if handover is None else dict(handover.base)

    def get_stats(self) -> AlertStatsDict:
        """Return the alert counts.

        Returns:
            ``{"total", "by_kind": {kind: count}, "callback_errors", "subscribers"}``.
        """
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> AlertStatsDict:
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
        verdict = self._hear(source, event, args) if self._paired else None
        if event is _CALL_REJECTED:  # first: a full bulkhead reports every call it rejects
            # A bulkhead's rejection counts, whatever its reason (full, or a queue timeout), as
            # the Prometheus bulkhead rule sums them all; no other's, whatever routed it here.
            # The cooldown asked here: a bulkhead that stays full is in it for each rejection.
            if source.kind == _ALERTING_REJECTIONS and (
                started := self._cooled_down(
                    self._full_cooldowns,
                    source.name if source.key is None else (source.name, source.key),
                    self._config.bulkhead_cooldown,
                )
            ):
                self._raise(self._bulkhead_full(source, args, started), verdict)
        else:
            alert: Alert | None = None
            if event is _STATE_CHANGED:
                if isinstance(args, StateChanged):
                    alert = self._state_changed(source, args)
            elif event is _RECOVERY_ATTEMPTED:
                if isinstance(args, RecoveryAttempted):
                    self._recovery_attempted(source, args, verdict)
            elif event is Event.PATTERN_DETECTED and isinstance(args, PatternDetected):
                alert = self._pattern(source, args)
            if alert is not None:
                self._raise(alert, verdict)
        if verdict is not None:
            self._heard(verdict)

    def _hear(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> _Verdict:
        """Note in this thread's record of the event being dispatched that this system hears it.

        The record is this event's if it is the same event (the same objects), not yet heard by
        this system, and made while it listened: the same dispatch, another listener of which made
        it. Else a new one: a pattern may report each event with the same objects (a bulkhead's
        every rejection), and the record of the last one, made before this system listened (so
        it was not routed that one), is not this event's.
        """
        serial = self._serial
        dispatch: _Dispatch | None = getattr(_HEARD, "record", None)
        if (
            dispatch is None
            or dispatch.source is not source
            or dispatch.event is not event
            or dispatch.args is not args
            or dispatch.stamp < self._since
            or any(verdict.serial == serial for verdict in dispatch.verdicts)
        ):
            dispatch = _HEARD.record = _Dispatch(source, event, args)
        verdict = _Verdict(serial, dispatch)
        dispatch.verdicts.append(verdict)
        return verdict

    def _heard(self, verdict: _Verdict) -> None:
        """End this system's verdict on the event; closed by then, it settles the event with its successor."""
        verdict.closed = closed = self._closed
        if closed:
            for handover in self._handovers:
                handover.correct_late(verdict)  # may deliver: a subscriber may dispatch an event of its own
        _HEARD.record = verdict.dispatch  # a subscriber's own dispatch may have taken this thread's record

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
            key_attribute(summary),  # made of values cut each: cut as a whole too, told apart as keys
            self._clock.now(),
            FrozenMapping(bounded),
        )

    def _state_changed(self, source: TelemetrySource, args: StateChanged) -> Alert | None:
        """Start (and alert), continue or end the outage episode of the breaker ``source``.

        A keyed policy's breakers (one per key, one name) each have their own episode: the
        source's key tells them apart. At most :data:`MAX_TRACKED_SUBJECTS` episodes are kept: a
        new one (an opening from CLOSED, always an alert) forgets the least recently seen. The
        re-opens of an outage not kept while the table is full (forgotten, or begun before this
        system listened) share one cooldown, :data:`UNTRACKED_OUTAGE_COOLDOWN`: one alert stands
        for them all, so that more breakers in outage than the table holds, re-opening in turn,
        are no storm. With room in the table, such a re-open alerts once for its episode.
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
        shared = False
        with self._lock:
            episodes = self._episodes
            # A re-opening (from HALF_OPEN), or an OPEN breaker forced open again: the same outage.
            if reopens or args.old == new:
                if episode in episodes:
                    episodes.move_to_end(episode)
                    return None
                shared = len(episodes) >= MAX_TRACKED_SUBJECTS
            if shared:
                if not self._shared_cooldown_locked(
                    AlertKind.CIRCUIT_OPEN, self._clock.now(), UNTRACKED_OUTAGE_COOLDOWN
                ):
                    return None
            else:
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
        untracked: dict[str, str] = {}
        if shared:
            summary, untracked = _untracked(
                AlertKind.CIRCUIT_OPEN, summary, f"{UNTRACKED_OUTAGE_COOLDOWN:g} s"
            )
        return self._make(
            AlertKind.CIRCUIT_OPEN,
            name,
            summary,
            source,
            old=args.old,
            reason=args.reason,
            reopens=str(reopens),
            **untracked,
        )

    def _cooled_down(self, cooldowns: dict[_K, float], key: _K, cooldown: float) -> int:
        """Whether the subject ``key`` of the alert kind whose table is ``cooldowns`` may alert now.

        If so, a cooldown starts: the subject's own (returns :data:`_OWN`: the table keeps when
        it ends), or, for a subject the full table has no room for, the one shared by every
        such subject of the kind (returns :data:`_SHARED`: its alert stands for them all); else
        0. Whether a subject still cools down is read without the lock (a bulkhead that stays
        full reports every rejection here; the one read of the dict is atomic; the clock is
        read only for a subject it holds). Found over, it is asked again under the lock, at the
        time then: another thread may have started one since that read, which silences this
        subject as it would have in turn (with a cooldown of 0, it does not). Each kind has its
        own table (a plain ``dict``, oldest first: its look-up is specialised where an
        ``OrderedDict``'s is not), keyed by what tells its subjects apart (a bulkhead's name, a
        bare string whose hash is kept: no key is built per rejection; a keyed policy's
        bulkhead, one per key, by name and key). A table holds :data:`MAX_TRACKED_SUBJECTS`
        subjects at most: a subject is forgotten once its cooldown ended (it would alert again
        anyway), never while it cools down, which would let it alert again at once (many
        subjects, each forgotten before its turn came back, would each alert every time).
        """
        until = cooldowns.get(key)
        if until is not None and self._clock.now() < until:
            return 0
        with self._lock:
            now = self._clock.now()
            current = cooldowns.get(key)
            if current is not None:
                if now < current:  # another thread alerted meanwhile
                    return 0
                del cooldowns[key]  # re-inserted last: the oldest subject is the first key
            elif len(cooldowns) >= MAX_TRACKED_SUBJECTS and not self._forget_cooled_locked(cooldowns, now):
                kind = _BULKHEAD_FULL if cooldowns is self._full_cooldowns else AlertKind.RECOVERY_ESCALATED
                return _SHARED if self._shared_cooldown_locked(kind, now, cooldown) else 0
            cooldowns[key] = now + cooldown
            return _OWN

    @staticmethod
    def _forget_cooled_locked(cooldowns: dict[_K, float], now: float) -> bool:
        """Forget the subjects of ``cooldowns`` whose cooldown ended; return whether any was.

        They are the first keys: a table's cooldowns all last the same (its kind's setting), so
        they end in the order they started, the order of the keys.
        """
        ended = list(itertools.takewhile(lambda subject: cooldowns[subject] <= now, cooldowns))
        for subject in ended:
            del cooldowns[subject]
        return bool(ended)

    def _shared_cooldown_locked(self, kind: AlertKind, now: float, cooldown: float) -> bool:
        """Whether an untracked subject of ``kind`` may alert at ``now``; if so, their cooldown starts."""
        if now < self._untracked_until.get(kind, now):
            return False
        self._untracked_until[kind] = now + cooldown
        return True

    def _bulkhead_full(self, source: TelemetrySource, args: EventArgs, started: int) -> Alert:
        """The alert of a full bulkhead whose cooldown :meth:`on_event` just started.

        ``args`` is the rejection that raised it: its ``reason`` (``"bulkhead_full"`` or
        ``"queue_timeout"``) is the alert's ``reason`` attribute. ``started``: which cooldown
        (:meth:`_cooled_down`): the one shared past the cap makes it stand for those bulkheads.
        """
        name = source.name
        reason = args.reason if isinstance(args, CallRejected) else ""
        cooldown = self._config.bulkhead_cooldown
        bulkhead = f"bulkhead {_bounded(name)!r}"
        if source.key is not None:
            bulkhead = f"{bulkhead} (key {key_attribute(source.key)!r})"
        summary = f"{bulkhead} is full and rejecting calls"
        untracked: dict[str, str] = {}
        if started == _SHARED:
            summary, untracked = _untracked(_BULKHEAD_FULL, summary, "cooldown")
        return self._make(
            _BULKHEAD_FULL,
            name,
            summary,
            source,
            reason=reason,
            cooldown=f"{cooldown:g}",
            **untracked,
        )

    def _pattern(self, source: TelemetrySource, args: PatternDetected) -> Alert:
        """The alert of an error pattern: its operation, and the module of a function it is named after.

        Two modules' functions of one name (``users.fetch``, ``orders.fetch``) are two patterns of
        one operation: the module tells their alerts apart, in the summary and an attribute.
        """
        module = args.module
        where = _bounded(args.operation)
        attributes = {} if module is None else {"module": module}
        return self._make(
            AlertKind.ERROR_PATTERN,
            args.operation,
            f"{_bounded(args.error_type)} in {where!r}"
            + ("" if module is None else f" (module {_bounded(module)!r})")
            + f" repeated {args.count} times within {args.window:g} s",
            source,
            error_type=args.error_type,
            operation=args.operation,
            count=str(args.count),
            window=f"{args.window:g}",
            **attributes,
        )

    def _recovery_attempted(
        self, source: TelemetrySource, args: RecoveryAttempted, verdict: _Verdict | None
    ) -> None:
        """Update the source's rate window; raise a low-rate and/or an escalation alert."""
        config = self._config
        name = source.name
        low: tuple[int, int] | None = None
        shared = False
        with self._lock:
            rates = self._rates
            window = rates.get(name)
            if window is None:
                window = self._rate_window_locked(name)
                shared = window is self._untracked_rates
            else:
                rates.move_to_end(name)
            change = window.record(args.result == "success", config)
            if change:
                if not shared:
                    self._rates_below += change
                if change == _FELL:
                    low = (window.successes, len(window.results))
        if low is not None:
            successes, seen = low
            threshold = config.recovery_rate_threshold
            # The rate in tenths of a percent, rounded down (from the counts: exact), so that the
            # summary never shows it at the threshold it fell below; the threshold as configured.
            tenths = successes * 1000 // seen
            systems, whose = f"{_bounded(name)!r}", "its"
            if shared:  # the window of every system past the cap: the alert stands for them all
                systems, whose = f"{systems} with the other untracked recovery systems", "their"
            summary = (
                f"recovery rate of {systems} fell to {tenths / 10:g}% over {whose} last {seen} attempts "
                f"(threshold {threshold * 100:g}%)"
            )
            stands: dict[str, str] = {}
            if shared:
                summary, stands = _untracked(AlertKind.LOW_RECOVERY_RATE, summary, "fall below the threshold")
            self._raise(
                self._make(
                    AlertKind.LOW_RECOVERY_RATE,
                    name,
                    summary,
                    source,
                    rate=f"{successes / seen:.4f}",
                    attempts=str(seen),
                    threshold=f"{threshold:g}",
                    **stands,
                ),
                verdict,
            )
        if args.strategy != "escalate":
            return
        # Its error type as told apart (a name cut alike ends in a digest of the whole), or as
        # shown when the event carries no key (one reported by hand): one cooldown per type.
        error_type = args.error_type_key or args.error_type
        if started := self._cooled_down(
            self._escalation_cooldowns, (name, error_type), config.escalation_cooldown
        ):
            summary = f"{_bounded(error_type)} was escalated by recovery system {_bounded(name)!r}"
            untracked: dict[str, str] = {}
            if started == _SHARED:
                summary, untracked = _untracked(AlertKind.RECOVERY_ESCALATED, summary, "cooldown")
            self._raise(
                self._make(
                    AlertKind.RECOVERY_ESCALATED,
                    name,
                    summary,
                    source,
                    error_type=args.error_type,
                    **untracked,
                ),
                verdict,
            )

    def _rate_window_locked(self, name: str) -> _RateWindow:
        """The rate window of recovery system ``name``, which ``_rates`` lacks: a new one, or the shared one.

        The cooldown tables' rule (:meth:`_cooled_down`), for the rate windows, whose cooldown is
        no time: a window below the threshold stays silent until its rate is back at it. The
        table holds :data:`MAX_TRACKED_SUBJECTS` windows at most: full, it forgets the least
        recently seen window whose cooldown ended (back at the threshold: its next fall would
        alert anyway), never one below it, whose system's new window would alert again once
        ``min_recovery_attempts`` failed (more systems than the table, each forgotten before its
        turn came back, would each alert every round). While every window is below it, a system
        without one counts in the window shared by every such system (``_untracked_rates``): the
        same rule, one alert standing for them all per fall below the threshold. Only a system
        the table does not hold comes here (its first attempt, or one past the cap): the count
        of windows below it (``_rates_below``) spares the look-up while none can be forgotten.
        """
        rates = self._rates
        if len(rates) >= MAX_TRACKED_SUBJECTS:
            if self._rates_below >= len(rates):
                return self._untracked_rates
            del rates[next(subject for subject, window in rates.items() if not window.below)]
        window = rates[name] = _RateWindow(self._config.recovery_window)
        return window

    def _counted_before_locked(self, verdict: _Verdict, kind: AlertKind) -> tuple[int, ...]:
        """An alert counted after a cut: not the manager's if the closed system decided the event before it.

        That system heard it first (this dispatch reached it before the cut) and was still open
        once it had decided: its verdict is the manager's, the alert counted there or not at all,
        and delivered there or not at all to the subscriptions its close handed here. Returns
        the serials of those systems: the subscriptions handed over from them are not given it.
        """
        decided: tuple[int, ...] = ()
        for other in verdict.dispatch.verdicts:
            handover = self._succeeding.get(other.serial)
            if handover is not None and (not other.closed or other.counts(kind)):
                handover.base[kind.value] += 1
                decided = (*decided, other.serial)
        return decided

    def _forget_recovery_system(self, name: str) -> None:
        """Forget the recovery rate and the escalation cooldowns kept for recovery system ``name``.

        Not its results in the window shared past the cap (counted there with the others').
        """
        with self._lock:
            window = self._rates.pop(name, None)
            if window is not None and window.below:
                self._rates_below -= 1
            cooldowns = self._escalation_cooldowns
            for subject in [subject for subject in cooldowns if subject[0] == name]:
                del cooldowns[subject]

    # -- delivery ------------------------------------------------------------------------------

    def _raise(self, alert: Alert, verdict: _Verdict | None = None) -> None:
        """Record ``alert``, report it as ``ALERT_RAISED`` and hand it to every subscriber.

        Not once closed: an event routed to it before :meth:`close` (a dispatch under way then)
        is the system's that stands in for it now, which a manager's counts carry on with.
        ``verdict``: this system's record of the event (kept while another system listens beside it).
        """
        with self._lock:
            if self._closed:
                return
            self._history.append(alert)
            kind = alert.kind
            self._by_kind[kind] += 1
            subscribers = self._subscribers
            if verdict is not None:
                verdict.counted.append((alert, self._cuts))
                if self._cuts and (decided := self._counted_before_locked(verdict, kind)):
                    subscribers = tuple(s for s in subscribers if s[2] not in decided)
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(
                Event.ALERT_RAISED,
                AlertRaised(alert.kind.value, alert.severity.value, alert.subject, alert.summary),
            )
        self._deliver(alert, subscribers)

    def _deliver(self, alert: Alert, subscribers: tuple[_Subscriber, ...]) -> None:
        """Hand ``alert`` to each of ``subscribers``; one that fails is logged and counted, never raised.

        As a breaker's callbacks are handed their changes (:func:`~otel_resilience.engine.calling.notify`).
        """
        failed = self._callback_failed
        for _, callback, _ in subscribers:
            notify(callback, alert, f"alert subscriber {describe(callback)}", failed)

    def _callback_failed(self) -> None:
        """Count a subscriber's failure (:func:`~otel_resilience.engine.calling.notify`'s ``failed``)."""
        with self._lock:
            self._callback_errors += 1


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
