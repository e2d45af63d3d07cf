"""The one telemetry seam: patterns report *what happened*; listeners decide how it is shown.

Patterns never import OpenTelemetry. Each pattern instance owns a :class:`StrategyTelemetry`
facade, made once with its :class:`TelemetrySource` (pattern kind, instance name, pipeline
name). Through it the pattern

* reports rare events (:meth:`StrategyTelemetry.report`): retry scheduled, state change,
  rejection, timeout, fallback used, recovery, error pattern, alert, chaos injected, hedge
  started, hedge won, policy reloaded, reload failed;
* opens execution and attempt scopes (:meth:`StrategyTelemetry.start_execution`,
  :meth:`StrategyTelemetry.start_attempt`), which a tracing listener turns into spans.

Listeners register on the process-wide :data:`HUB`. With none registered, ``report`` and the
scope calls return at once (one attribute load and a truth test), so the hot path pays nothing.
A listener that raises never reaches the application: the error is counted in
:attr:`TelemetryHub.errors` and logged, the first time and then at most once a minute for each
listener and method (:class:`~otel_resilience.engine.logging_rate.LogRate`).

Event argument objects (:mod:`otel_resilience.engine.event_args`) are slotted dataclasses that
listeners must treat as read-only; each names the fields that describe it to telemetry. The kinds
above are :class:`Event`'s; a pattern declares kinds of its own, and their arguments, in its own
package (:class:`EventKind`, :class:`~otel_resilience.engine.event_args.EventArgs`).

Counts that move on every call are *not* events: they are plain integers in each pattern's
stats, which listeners read through :mod:`otel_resilience.engine.registry`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, cast, runtime_checkable

from otel_resilience._text import key_attribute, whole_text
from otel_resilience.engine import event_args
from otel_resilience.engine.counting import Counter, CounterValue
from otel_resilience.engine.deadline import DeadlineReachedError
from otel_resilience.engine.event_args import *  # noqa: F403 - the event arguments belong to this seam
from otel_resilience.engine.event_args import EventArgs
from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.logging_rate import LogRate
from otel_resilience.engine.validation import MAX_ATTRIBUTE_LENGTH, check_name, fail, verdict
from otel_resilience.errors import OperationTimeoutError

__all__ = [  # noqa: PLE0604 - the event argument classes are listed where they are defined
    "HUB",
    "MAX_ATTRIBUTE_LENGTH",
    "Event",
    "EventKind",
    "ExecutionListener",
    "IdentityEnum",
    "Outcome",
    "StrategyTelemetry",
    "TelemetryHub",
    "TelemetryListener",
    "TelemetrySource",
    "bounded_text",
    "error_type_key",
    "error_type_name",
    "key_attribute",
    *event_args.__all__,
]

if TYPE_CHECKING:
    from collections.abc import Callable

_LOG: Final = logging.getLogger("otel_resilience")

_ALWAYS: Final[Callable[[], bool]] = itertools.repeat(True).__next__  # noqa: FBT003
_NEVER: Final[Callable[[], bool]] = itertools.repeat(False).__next__  # noqa: FBT003
"""The hub's :attr:`TelemetryHub.quiet` with no execution listener, and with one awake: C calls."""


class IdentityEnum(enum.Enum):
    """An enum whose members hash by identity, in C.

    ``Enum``'s own ``__hash__`` hashes the member's name in Python code, a frame on every
    dictionary or set look-up of a member; the engine keys hot tables by members (the outcome
    counts of every execution, the routes of every event). Members are singletons compared by
    identity, so this hash agrees with equality as the name's did.
    """

    __hash__ = object.__hash__


_KIND_OWNERS: Final[dict[str, tuple[str, str, str]]] = {}
"""The kind each telemetry name is, by value: ``(module, class qualname, member name)`` of its
first owner (:class:`_KindType`)."""
_KIND_OWNERS_LOCK: Final = fork_safe(threading.Lock())


class _KindType(enum.EnumMeta):
    """The metaclass of :class:`EventKind`: a kind's value is a name no other kind has.

    A value is the kind's name in telemetry, the key of its row in the binding table: a second
    kind of that name would reach the listeners as the first (the OpenTelemetry listener would
    show its arguments by the first one's row, or fail on every report). So a class whose
    member's value is not a non-empty ``str``, or is another class's member's, is refused when
    it is made (``TypeError`` / ``ValueError`` naming ``Class.MEMBER``); none of its values is
    taken then. The same class made again (its module reloaded) takes its own names back.
    """

    def __new__(mcls, cls_name: str, bases: tuple[type, ...], classdict: Any, **kwds: Any) -> Any:
        cls = super().__new__(mcls, cls_name, bases, classdict, **kwds)
        members: list[EventKind] = list(cls)  # the class's kinds, no alias
        if members:
            owner = (cls.__module__, cls.__qualname__)
            with _KIND_OWNERS_LOCK:
                for member in members:
                    value = member._value_
                    name = member._name_
                    check_name(cls.__qualname__, name, value)
                    held = _KIND_OWNERS.get(value)
                    if held is not None and held[:2] != owner:
                        msg = (
                            f"{cls.__qualname__}.{name}'s value {value!r} is already the kind "
                            f"{held[1]}.{held[2]} ({held[0]}): a kind's value is its name in "
                            "telemetry, unique across every kind"
                        )
                        raise ValueError(msg)
                for member in members:
                    _KIND_OWNERS[member._value_] = (*owner, member._name_)
        return cls


class EventKind(IdentityEnum, metaclass=_KindType):
    """A kind of event a pattern reports: the base of :class:`Event` and of a pattern's own kinds.

    The library's kinds are the members of :class:`Event`. A pattern reports kinds of its own
    without an edit here: its package declares them as members of a subclass of its own, next
    to their argument classes (``class CacheEvent(EventKind): LOOKUP = "cache_lookup"``). A
    value is the kind's name in telemetry, the key of its row in the binding table
    (``telemetry.semconv.EVENTS``), so it is unique across every kind: a class whose member
    takes another kind's name, or whose value is no name, is refused when it is made
    (:class:`_KindType`). A kind with no row there (a user's own) reaches the listeners that
    want it, and the OpenTelemetry listener shows none.
    """


class Event(EventKind):
    """The kinds of things the library's patterns report. Values are the telemetry event suffixes."""

    RETRY_SCHEDULED = "retry_scheduled"
    RETRY_EXHAUSTED = "retry_exhausted"
    STATE_CHANGED = "state_changed"
    CALL_REJECTED = "call_rejected"
    TIMEOUT = "timeout"
    FALLBACK_USED = "fallback_used"
    RECOVERY_ATTEMPTED = "recovery_attempted"
    PATTERN_DETECTED = "pattern_detected"
    ALERT_RAISED = "alert_raised"
    PERMIT_WAITED = "permit_waited"
    CHAOS_INJECTED = "chaos_injected"
    HEDGE_STARTED = "hedge_started"
    HEDGE_DENIED = "hedge_denied"
    HEDGE_WON = "hedge_won"
    POLICY_RELOADED = "policy_reloaded"
    RELOAD_FAILED = "reload_failed"


class Outcome(IdentityEnum):
    """How one execution or attempt ended. Values appear in telemetry as ``outcome``."""

    SUCCESS = "success"
    """The call returned on its first attempt."""
    RECOVERED = "recovered"
    """The call returned after one or more failed attempts or a recovery action."""
    FALLBACK = "fallback"
    """A fallback answered in place of the call."""
    FAILURE = "failure"
    """The call raised (and nothing answered in its place)."""
    REJECTED = "rejected"
    """A breaker or bulkhead rejected the call; the dependency was not called."""
    TIMEOUT = "timeout"
    """A deadline expired."""
    CANCELLED = "cancelled"
    """The caller cancelled; neither a success nor a failure."""


class TelemetrySource(NamedTuple):
    """Who reports: a pattern instance, possibly inside a named pipeline (policy).

    Immutable and hashable. A named tuple rather than a frozen dataclass: every pattern
    instance and every pipeline makes one, and a tuple is built in one call where a frozen
    dataclass sets each of its seven fields through ``object.__setattr__``.

    Attributes:
        kind: The pattern kind: ``"circuit_breaker"``, ``"retry"``, ``"fallback"``,
            ``"timeout"``, ``"bulkhead"``, ``"recovery"``, ``"pipeline"`` or ``"alerts"``.
        name: The instance's configured name (bounded).
        pipeline: The policy (pipeline) name it runs in, or ``None`` when used alone.
        spans: Whether tracing listeners should open spans for this source (default ``True``);
            for an execution's source, for the attempts and span events inside it too.
        metrics: Whether the per-execution duration histogram is recorded (default ``True``);
            for an execution's source, its attempts' durations too. Counts exported through
            observable instruments are not affected.
        key: The key of a keyed policy's pipeline (``str(key)``): an attribute of its
            execution spans, never of its metrics unless ``metric_key`` says so.
        metric_key: The key attribute of its metrics, only where the policy opted in (the key
            itself, or the overflow value for keys past the policy's cap); ``None``: none.
    """

    kind: str
    name: str
    pipeline: str | None = None
    spans: bool = True
    metrics: bool = True
    key: str | None = None
    metric_key: str | None = None


@runtime_checkable
class TelemetryListener(Protocol):
    """Receives the rare events every pattern reports.

    A listener that reports events of its own as it hears one (an
    :class:`~otel_resilience.AlertSystem`: ``ALERT_RAISED`` from a state change) says so with a
    class attribute ``derives_events = True``: the hub hands every event to it after the
    listeners that do not, so that what it reports is recorded after its cause (a span's
    ``resilience.alert.raised`` after the state change that raised it), whichever was added first.
    """

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs, /) -> None:
        """Handle one event. Must be fast; exceptions are caught and counted by the hub.

        ``event`` is an :class:`Event` member, or a kind a pattern declared (:class:`EventKind`).
        """
        ...


@runtime_checkable
class ExecutionListener(Protocol):
    """Receives execution and attempt scopes (for spans and duration histograms)."""

    def start_execution(self, source: TelemetrySource, operation: str, /) -> object:
        """Open a scope around one logical execution; return a handle (or ``None`` to skip)."""
        ...

    def end_execution(
        self, handle: object, outcome: Outcome, duration: float, error: BaseException | None, /
    ) -> None:
        """Close the execution scope opened by :meth:`start_execution`."""
        ...

    def start_attempt(
        self, source: TelemetrySource, operation: str, attempt: int, attempt_type: str | None = None, /
    ) -> object:
        """Open a scope around one attempt; return a handle (or ``None`` to skip).

        Every attempt gets a scope, the first included, so that each can be timed. ``attempt``
        is unique in the execution; attempt 1 is the execution's first call, which the
        execution scope already covers (a tracing listener opens no span for it), unless it
        runs beside others.

        ``attempt_type`` is given only for the attempts of a hedged execution, which run side
        by side: ``"original"`` (the first, which then gets a scope of its own too) or
        ``"hedge"``. A listener that never serves hedging may leave the parameter out.
        """
        ...

    def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None, /) -> None:
        """Close the attempt scope opened by :meth:`start_attempt`."""
        ...


if TYPE_CHECKING:

    class _ExecutionListenerBeforeHedging(Protocol):
        """An :class:`ExecutionListener` whose ``start_attempt`` leaves ``attempt_type`` out, as it may.

        For type checkers only: what the hub registers as an execution listener (every
        :class:`ExecutionListener` is one too).
        """

        def start_execution(self, source: TelemetrySource, operation: str, /) -> object: ...

        def end_execution(
            self, handle: object, outcome: Outcome, duration: float, error: BaseException | None, /
        ) -> None: ...

        def start_attempt(self, source: TelemetrySource, operation: str, attempt: int, /) -> object: ...

        def end_attempt(self, handle: object, outcome: Outcome, error: BaseException | None, /) -> None: ...

    Listener = TelemetryListener | _ExecutionListenerBeforeHedging
    """What :meth:`TelemetryHub.add_listener` takes: a listener of either protocol (or of both)."""


class _Follower(Protocol):
    """What :meth:`TelemetryHub.follow_attempts` tells: a standing admission (an ``UnheardStanding``)."""

    def hear(self, heard: bool) -> None:
        """Stand or not, as attempt listeners are awake (``heard``) or not."""


class TelemetryHub:
    """The process-wide set of listeners. Registration is thread-safe; reading is lock-free.

    A listener added with ``weak=True`` is held weakly: the hub does not keep it alive, and once
    nothing else does, it is freed and leaves the hub as if removed (an
    :class:`~otel_resilience.AlertSystem` its owner dropped without closing it). The hub holds it
    by its :func:`weakref.proxy`, which is what :attr:`event_listeners` and the routes list: its
    methods are reached through the proxy in C, so an event costs it no Python frame more.

    Every event reaches its listeners in the order they were added, those that derive events
    from it (``derives_events``, see :class:`TelemetryListener`) after all the others: an
    event they report while they hear one is then heard by the others after its cause.

    A registered listener may declare itself *dormant* (:meth:`set_dormant`) while it has
    nowhere to send anything (the OpenTelemetry listener with no SDK configured): it stays
    registered but is left out of :attr:`event_listeners` and :attr:`attempt_listeners`, so
    that patterns build no event arguments and open no attempt scopes for it. It is still
    asked to open every execution scope, which is where it checks whether it has somewhere to
    send things now, and wakes itself up (before the execution's events and attempts). A
    dormant listener may name that check (``asleep_while``): while every execution listener is
    dormant under one such check and it holds, executions ask no listener at all
    (:attr:`quiet`).

    Attributes:
        event_listeners: Tuple of the awake :class:`TelemetryListener` (replaced, never mutated),
            in the order events reach them; one added with ``weak=True`` appears as its
            :func:`weakref.proxy`.
        execution_listeners: Tuple of :class:`ExecutionListener` (replaced, never mutated).
        attempt_listeners: The awake execution listeners, asked to open attempt scopes.
        quiet: A function that returns ``True`` while no execution listener needs asking to open
            an execution scope: always with none registered, never with one awake (both C-level
            calls, no frame), else the check every one of them is dormant under. An execution
            asks it before :meth:`StrategyTelemetry.start_execution`.
        errors: How many times a listener raised (each is swallowed; logged the first time, then
            at most once a minute for each listener and method, for as long as it is registered).
    """

    __slots__ = (
        "_asleep_while",
        "_derivers",
        "_dormant",
        "_errors",
        "_followers",
        "_lock",
        "_log_rate",
        "_registered",
        "_routes",
        "attempt_listeners",
        "event_listeners",
        "execution_listeners",
        "quiet",
    )

    def __init__(self) -> None:
        self._lock = fork_safe(threading.Lock())
        self._registered: tuple[TelemetryListener, ...] = ()
        self._dormant: tuple[object, ...] = ()
        self._derivers: tuple[object, ...] = ()
        self._asleep_while: dict[int, Callable[[], bool]] = {}
        self.quiet: Callable[[], bool] = _ALWAYS
        self.event_listeners: tuple[TelemetryListener, ...] = ()
        self.execution_listeners: tuple[ExecutionListener, ...] = ()
        self.attempt_listeners: tuple[ExecutionListener, ...] = ()
        self._routes = _Routes(self)
        self._errors = Counter()
        self._log_rate = LogRate()
        self._followers: weakref.WeakSet[_Follower] = weakref.WeakSet()

    errors = CounterValue("_errors", "How many times a listener raised.")

    def add_listener(self, listener: Listener, *, weak: bool = False) -> None:
        """Register a listener; it may implement either protocol or both. Adding twice is a no-op.

        A listener added (again) is awake. One held weakly and added again without ``weak`` is
        held strongly from then on, in its place (one held strongly stays so).

        Args:
            listener: The listener.
            weak: Hold it weakly (it must support weak references): the hub does not keep it
                alive; freed, it leaves the hub as if removed. Default: held until removed.

        Raises:
            TypeError: ``listener`` implements neither protocol (it would never be called), or
                ``weak`` is true and it has no weak reference, or its ``derives_events`` is
                not a bool; ``weak`` is not a bool.
        """
        self._register(None, listener, weak, "add_listener", "listener")

    def replace_listener(self, old: object | None, new: Listener, *, weak: bool = False) -> None:
        """Unregister ``old`` and register ``new`` in its place, in one change of the listeners.

        Every event is reported to one of them: those reported before the change reach ``old``,
        those after reach ``new`` (removing one then adding the other leaves a moment where an
        event, reported from another thread, reaches neither). ``new`` is registered as
        :meth:`add_listener` registers it; ``old`` (held strongly or weakly) leaves as
        :meth:`remove_listener` takes it out, no error if it was not registered, and nothing
        when it is ``new`` itself or ``None``.

        Args:
            old: The listener to unregister, or ``None``.
            new: The listener to register.
            weak: Hold ``new`` weakly (see :meth:`add_listener`).

        Raises:
            TypeError: As :meth:`add_listener`, for ``new`` and ``weak`` (``old`` is kept).
        """
        self._register(old, new, weak, "replace_listener", "new")

    def _register(self, old: object | None, new: object, weak: object, method: str, field: str) -> None:
        """Register ``new`` in the place of ``old`` (``None``: none): the one rule of both methods.

        ``method`` and ``field`` name the method called and its parameter in an error.
        """
        api = f"TelemetryHub.{method}"
        if not isinstance(weak, bool):  # "no" would be read by truth, silently
            raise fail(api, "weak", "a bool", weak, kind=TypeError)
        # Read before the lock: a protocol check reads the listener's attributes (its code).
        events = isinstance(new, TelemetryListener)
        executions = isinstance(new, ExecutionListener)
        if not events and not executions:
            raise fail(api, field, _A_LISTENER, new, kind=TypeError)
        derives = getattr(type(new), "derives_events", False)  # a class attribute (a mock's is none)
        if not isinstance(derives, bool):  # read by truth, a "no" would reorder it silently
            rule = "a listener whose derives_events is a bool"
            raise fail(api, field, rule, new, kind=TypeError)
        if weak and not isinstance(new, _PROXY_TYPES):
            try:
                weakref.ref(new)
            except TypeError:
                rule = "weakly referenceable with weak=True"
                raise fail(api, field, rule, new, kind=TypeError) from None
        with self._lock:
            held = self._held(new)
            if old is not None:
                leaving = self._held(old)
                if leaving is not None and leaving is not held:
                    self._forget_locked(leaving)
            if held is None:
                held = weakref.proxy(new, self._listener_freed) if weak else new
            elif not weak and held is not new and type(new) not in _PROXY_TYPES:
                self._hold_strongly_locked(held, new)
                held = new
            if events and not any(x is held for x in self._registered):
                self._registered = (*self._registered, cast("TelemetryListener", held))
            if executions and not any(x is held for x in self.execution_listeners):
                self.execution_listeners = (*self.execution_listeners, cast("ExecutionListener", held))
            self._dormant = tuple(x for x in self._dormant if x is not held)
            others = tuple(x for x in self._derivers if x is not held)
            self._derivers = (*others, held) if derives and events else others
            self._asleep_while.pop(id(held), None)
            self._publish_locked()

    def remove_listener(self, listener: object) -> None:
        """Unregister a listener, held strongly or weakly (no error if it was not registered)."""
        with self._lock:
            held = self._held(listener)
            self._forget_locked(listener if held is None else held)
            self._publish_locked()

    def _held(self, listener: object) -> object | None:
        """What the hub holds ``listener`` by: itself, or its weak proxy (``None``: not registered).

        ``listener`` may be that proxy too (as read from :attr:`event_listeners`).
        """
        aliases = (listener, *weakref.getweakrefs(listener))
        for held in (*self._registered, *self.execution_listeners):
            if any(held is alias for alias in aliases):
                return held
        return None

    def _hold_strongly_locked(self, proxy: object, listener: object) -> None:
        """Put ``listener`` in the place of ``proxy``, its weak proxy, wherever the hub lists it."""
        self._registered = tuple(
            cast("TelemetryListener", listener) if x is proxy else x for x in self._registered
        )
        self.execution_listeners = tuple(
            cast("ExecutionListener", listener) if x is proxy else x for x in self.execution_listeners
        )
        self._dormant = tuple(listener if x is proxy else x for x in self._dormant)
        self._derivers = tuple(listener if x is proxy else x for x in self._derivers)
        asleep_while = self._asleep_while.pop(id(proxy), None)
        if asleep_while is not None:
            self._asleep_while[id(listener)] = asleep_while
        self._forget_log_rate_locked(proxy)

    def _forget_locked(self, held: object) -> None:
        """Unregister the entry ``held`` (a listener or the weak proxy of one), and its log rate."""
        self._registered = tuple(x for x in self._registered if x is not held)
        self._dormant = tuple(x for x in self._dormant if x is not held)
        self._derivers = tuple(x for x in self._derivers if x is not held)
        self.execution_listeners = tuple(x for x in self.execution_listeners if x is not held)
        self._asleep_while.pop(id(held), None)
        self._forget_log_rate_locked(held)

    def _forget_log_rate_locked(self, held: object) -> None:
        """Forget the log rate of the entry ``held`` (see :meth:`listener_failed`): its ``id`` is free."""
        place = id(held)
        self._log_rate.forget(lambda where: isinstance(where, tuple) and where[0] == place)

    def _drop_freed_locked(self) -> bool:
        """Unregister the weakly held listeners that were freed; return whether there was one."""
        freed = [x for x in (*self._registered, *self.execution_listeners) if _is_freed(x)]
        for held in freed:
            self._forget_locked(held)
        return bool(freed)

    def _listener_freed(self, proxy: object) -> None:
        """A weakly held listener was freed: it leaves the hub (its proxy's callback).

        The callback runs wherever the listener was freed, maybe inside this hub's own critical
        section (a garbage collection there), so it never waits for the lock. When the lock is
        taken, the freed listener leaves at the next change of the listeners, or at the first
        event delivered to it (:meth:`listener_failed`), which the proxy refuses.
        """
        del proxy
        if self._lock.acquire(blocking=False):
            try:
                if self._drop_freed_locked():
                    self._publish_locked()
            finally:
                self._lock.release()

    def set_dormant(
        self, listener: object, *, dormant: bool, asleep_while: Callable[[], bool] | None = None
    ) -> None:
        """Leave a registered listener out of :attr:`event_listeners` and :attr:`attempt_listeners`.

        Args:
            listener: A listener registered with :meth:`add_listener` (others are ignored).
            dormant: ``True`` to stop sending it events, ``False`` to send them again.
            asleep_while: With ``dormant``: a function that returns ``True`` while the listener
                would open no execution scope and stay dormant if asked (cheap, never raising);
                while it does, executions need not ask it. ``None``: ask it every execution.
                The hub holds it strongly: for a listener added with ``weak=True``, it must not
                refer to the listener (a bound method of it would keep it alive).
        """
        with self._lock:
            held = self._held(listener)
            if held is None:
                return
            others = tuple(x for x in self._dormant if x is not held)
            self._dormant = (*others, held) if dormant else others
            self._asleep_while.pop(id(held), None)
            if dormant and asleep_while is not None:
                self._asleep_while[id(held)] = asleep_while
            self._publish_locked()

    def listens(self, listener: object) -> bool:
        """Return whether ``listener`` (held strongly or weakly) is registered and awake for events."""
        held = self._held(listener)
        return held is not None and any(x is held for x in self.event_listeners)

    def is_dormant(self, listener: object) -> bool:
        """Return whether ``listener`` is registered but dormant."""
        held = self._held(listener)
        return held is not None and any(x is held for x in self._dormant)

    def follow_attempts(self, standing: _Follower) -> None:
        """Keep ``standing`` told whether an attempt listener is awake (``standing.hear``), from now on.

        For a step whose ``admit`` returns one token to every call as long as nobody listens to
        attempts (a retry with no budget: its first attempt's token), and opens an attempt scope
        otherwise: its standing admission (:class:`~otel_resilience.engine.admission.Standing`)
        follows :attr:`attempt_listeners` from now on, set at every change of them (held weakly).
        """
        with self._lock:
            self._followers.add(standing)
            standing.hear(bool(self.attempt_listeners))

    def _publish_locked(self) -> None:
        self._drop_freed_locked()
        dormant = self._dormant
        derivers = self._derivers
        awake = [x for x in self._registered if not any(x is d for d in dormant)]
        # Those that derive events last: what they report while hearing one comes after its cause.
        self.event_listeners = (
            *(x for x in awake if not any(x is d for d in derivers)),
            *(x for x in awake if any(x is d for d in derivers)),
        )
        self.attempt_listeners = tuple(
            x for x in self.execution_listeners if not any(x is d for d in dormant)
        )
        heard = bool(self.attempt_listeners)
        for standing in self._followers:  # after attempt_listeners: a call that still stands opened none
            standing.hear(heard)
        self._routes = _Routes(self)  # after event_listeners: never computed from stale ones
        checks = [self._asleep_while.get(id(x)) for x in self.execution_listeners]
        first = checks[0] if checks else _ALWAYS
        self.quiet = first if first is not None and all(c is first for c in checks) else _NEVER

    def route(self, source: TelemetrySource, event: EventKind) -> tuple[TelemetryListener, ...]:
        """Return the awake event listeners that want ``event`` from sources of ``source.kind``.

        A listener may define ``wants(source, event) -> bool`` (a function of the source's
        *kind* and the event only: the answer is cached per kind and event until the listeners
        change, and it is asked with a source that carries the kind, its name empty); one
        without it gets every event. So a pattern whose event nobody wants builds
        no event arguments for it (see :meth:`StrategyTelemetry.wants`).

        Its answer counts by its truth. One that raises, or answers with an awaitable (closed,
        never awaited: its truth says nothing), is the listener's failure, counted in
        :attr:`errors` and logged as any other; that listener then gets the event.
        """
        return self._routes[source.kind, event]

    def _wants(self, listener: TelemetryListener, source: TelemetrySource, event: EventKind) -> bool:
        try:  # the look-up too: a weakly held listener freed meanwhile refuses it
            wants = getattr(listener, "wants", None)
            if wants is None:
                return True
            answer = wants(source, event)
            # A predicate's answer counts by its truth, an awaitable refused (closed, never awaited).
            return answer if answer is True or answer is False else verdict(answer, "a listener's wants")
        except Exception:  # noqa: BLE001 - a broken filter gets everything
            self.listener_failed(listener, "wants")
            return True

    def listener_failed(self, listener: object, what: str) -> None:
        """Count a listener's exception and log it (at most once a minute for each listener and ``what``).

        Call it from inside an ``except`` block. The log rate of a listener is kept while it is
        registered, and forgotten when it leaves: a listener that is not registered (any more)
        has each failure logged, and keeps nothing. A weakly held listener freed since the caller
        read it (its proxy refused the call) did not fail: it leaves the hub, uncounted.

        It never waits for the hub's lock: a garbage collection inside one of the hub's critical
        sections may close an execution (a task left pending when its loop closed) whose listener
        fails, in the thread that holds the lock. So the rate is noted first and the listener's
        registration read after, lock-free: a removal replaces the listeners before it forgets
        their rates, so one of the two forgets whatever the other did in between.
        """
        if _is_freed(listener):
            self._listener_freed(listener)  # leaves now, or at the next change if the lock is taken
            return
        next(self._errors)  # exact from any thread (``+= 1`` could lose one)
        place = (id(listener), what)
        left_out = self._log_rate.due(place)
        if not any(x is listener for x in (*self._registered, *self.execution_listeners)):
            self._log_rate.forget(lambda kept: kept == place)  # not registered: nothing kept for it
            left_out = 0
        if left_out is not None:
            _LOG.warning(
                "telemetry listener %r failed in %s (swallowed; %d not logged since the last report)",
                listener,
                what,
                left_out,
                exc_info=True,
            )


_PROXY_TYPES: Final = (weakref.ProxyType, weakref.CallableProxyType)

_A_LISTENER: Final = (
    "a TelemetryListener (on_event) or an ExecutionListener (start_execution, end_execution, "
    "start_attempt, end_attempt)"
)
"""What :meth:`TelemetryHub.add_listener` takes, as its error says."""


def _is_freed(held: object) -> bool:
    """Whether ``held`` is the weak proxy of a listener that was freed."""
    if type(held) not in _PROXY_TYPES:
        return False
    try:
        held.__class__  # noqa: B018 - a freed listener's proxy refuses every attribute
    except ReferenceError:
        return True
    return False


_GENERATIONS: Final = itertools.count(1)
"""Numbers the routes objects of every hub, each once (0 names none)."""


class _Routes(dict[tuple[str, EventKind], tuple[TelemetryListener, ...]]):
    """A hub's routes: the awake listeners that want each (source kind, event), found on first look.

    Read with a subscript, a route costs no Python frame once found; a missing one is computed
    by :meth:`__missing__` (the one rule of which listeners get an event) and kept. The hub
    replaces the whole object when its listeners change, so a route is never stale.

    Attributes:
        generation: This object's number, unique in the process. What caches an answer read
            from the routes keeps it to tell whether they were replaced since, never the routes
            themselves: they hold the listeners, which a listener removed from its hub (an
            OpenTelemetry listener replaced, an alert system closed) must not stay alive by.
    """

    __slots__ = ("_hub", "generation")

    def __init__(self, hub: TelemetryHub) -> None:
        super().__init__()
        self._hub = hub
        self.generation = next(_GENERATIONS)

    def __missing__(self, key: tuple[str, EventKind]) -> tuple[TelemetryListener, ...]:
        kind, event = key
        hub = self._hub
        source = TelemetrySource(kind, "")  # what wants() may read: the kind (the cache's key)
        found = tuple(x for x in hub.event_listeners if hub._wants(x, source, event))
        self[key] = found
        return found


HUB: Final = TelemetryHub()
"""The process-wide telemetry hub."""


class StrategyTelemetry:
    """The facade one pattern instance reports through.

    Attributes:
        source: Who reports.
        hub: The listeners it reports to. A path taken on every call reads
            ``hub.event_listeners`` (or ``hub.attempt_listeners``) itself rather than
            :attr:`enabled`: a property costs a Python frame per call.
    """

    __slots__ = ("hub", "source")

    def __init__(self, source: TelemetrySource, hub: TelemetryHub = HUB) -> None:
        self.source = source
        self.hub = hub

    @classmethod
    def of(cls, kind: str, name: str, pipeline: str | None = None) -> StrategyTelemetry:
        """The telemetry of the ``kind`` instance ``name`` (its link's in ``pipeline``), on :data:`HUB`."""
        return cls(TelemetrySource(kind, name, pipeline))

    @property
    def enabled(self) -> bool:
        """Whether any event listener is registered and awake (build event args only when true)."""
        return bool(self.hub.event_listeners)

    @property
    def tracing(self) -> bool:
        """Whether any execution listener is registered (open scopes only when true)."""
        return bool(self.hub.execution_listeners)

    def wants(self, event: EventKind) -> bool:
        """Whether any awake event listener wants ``event`` from this source (see :meth:`TelemetryHub.route`).

        Finer than :attr:`enabled`: check it before building the arguments of an event that
        happens on a hot path (a rejection).
        """
        return bool(self.hub.route(self.source, event))

    def report(self, event: EventKind, args: EventArgs) -> None:
        """Send one event to every event listener that wants it; never raises."""
        hub = self.hub
        source = self.source
        for listener in hub._routes[source.kind, event]:  # the route, read in C (no frame on a hit)
            try:
                listener.on_event(source, event, args)
            except Exception:  # noqa: BLE001 - telemetry must never break the app
                hub.listener_failed(listener, "on_event")

    def start_execution(self, operation: str) -> list[tuple[ExecutionListener, object]] | None:
        """Open an execution scope on every execution listener; ``None`` when none opened one.

        Asked only when the hub's :attr:`TelemetryHub.quiet` says a listener needs asking (the
        pipeline calls that check itself: no frame of ours on an execution with no SDK).
        """
        return self._open(self.hub.execution_listeners, "start_execution", operation)

    def end_execution(
        self,
        handles: list[tuple[ExecutionListener, object]] | None,
        outcome: Outcome,
        duration: float,
        error: BaseException | None = None,
    ) -> None:
        """Close the scopes opened by :meth:`start_execution` (in reverse order); never raises."""
        if handles:
            self._close(handles, "end_execution", outcome, duration, error)

    def start_attempt(
        self, operation: str, attempt: int, attempt_type: str | None = None
    ) -> list[tuple[ExecutionListener, object]] | None:
        """Open an attempt scope on every awake execution listener; ``None`` when none opened one.

        ``attempt_type`` (``"original"`` or ``"hedge"``, for the attempts of a hedged execution
        only) is passed on only when given, so listeners without the parameter keep working.
        """
        hub = self.hub
        listeners = hub.attempt_listeners
        if not listeners:
            return None
        if attempt_type is None:
            return self._open(listeners, "start_attempt", operation, attempt)
        return self._open(listeners, "start_attempt", operation, attempt, attempt_type)

    def end_attempt(
        self,
        handles: list[tuple[ExecutionListener, object]] | None,
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> None:
        """Close the scopes opened by :meth:`start_attempt`; never raises."""
        if handles:
            self._close(handles, "end_attempt", outcome, error)

    def _open(
        self, listeners: tuple[ExecutionListener, ...], method: str, *args: object
    ) -> list[tuple[ExecutionListener, object]] | None:
        """Call ``listener.<method>(source, *args)`` on each listener; return the scopes opened.

        An interrupt or a cancellation a listener raises (a ``BaseException`` that is no
        ``Exception``) passes, as one raised in the run would: the scopes the listeners before it
        opened are closed first, ``cancelled`` (:data:`_ENDED_UNOPENED`), as the run's end would
        close them, so that no span is left open, nor current in the thread or task.
        """
        handles: list[tuple[ExecutionListener, object]] | None = None
        for listener in listeners:
            try:
                handle = getattr(listener, method)(self.source, *args)
            except Exception:  # noqa: BLE001 - telemetry must never break the app
                self.hub.listener_failed(listener, method)
                continue
            except BaseException:
                if handles:
                    end, ended = _ENDED_UNOPENED[method]
                    self._close(handles, end, *ended)
                raise
            if handle is not None:
                if handles is None:
                    handles = []
                handles.append((listener, handle))
        return handles

    def _close(self, handles: list[tuple[ExecutionListener, object]], method: str, *args: object) -> None:
        """Call ``listener.<method>(handle, *args)`` for each scope, the last opened first.

        An interrupt or a cancellation a listener raises passes once the scopes opened before
        its own are closed as well: none is left open, nor current in the thread or task.
        """
        for listener, handle in reversed(handles):
            try:
                getattr(listener, method)(handle, *args)
            except Exception:  # noqa: BLE001 - telemetry must never break the app
                self.hub.listener_failed(listener, method)
            except BaseException:
                opened_before = next(place for place, (held, _) in enumerate(handles) if held is listener)
                self._close(handles[:opened_before], method, *args)
                raise


_ENDED_UNOPENED: Final[dict[str, tuple[str, tuple[object, ...]]]] = {
    "start_execution": ("end_execution", (Outcome.CANCELLED, 0.0, None)),
    "start_attempt": ("end_attempt", (Outcome.CANCELLED, None)),
}
"""How :meth:`StrategyTelemetry._open` closes the scopes opened before a listener interrupted the
opening: each ``start_*`` method's ``end_*`` and its arguments, a cancelled run's (nothing ran)."""


_TYPE_NAMES: weakref.WeakKeyDictionary[type[BaseException], str] = weakref.WeakKeyDictionary()
"""Names by class, held weakly: a class created at run time (per request, per test) is not kept
alive by having failed once."""


def bounded_text(value: str) -> str:
    r"""Return ``value``, cut to :data:`MAX_ATTRIBUTE_LENGTH` characters (ending in ``...``) if longer.

    A lone surrogate in it is escaped (``\ud800``): as it is, it would fail every export of
    its attribute (:func:`~otel_resilience.engine.validation.whole_text`).
    """
    if not whole_text(value):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(value) <= MAX_ATTRIBUTE_LENGTH:
        return value
    return value[: MAX_ATTRIBUTE_LENGTH - 3] + "..."


def error_type_name(error: BaseException | None) -> str | None:
    """Return the bounded name of an exception's type (``module.Qualname`` for non-builtins).

    The engine's deadline errors (a :class:`~otel_resilience.engine.deadline.DeadlineReachedError`:
    a wait or a block the effective deadline ended in a thread) are named as the
    :class:`~otel_resilience.errors.OperationTimeoutError` they stand for, which the scope that
    owns the deadline raises: an internal class is never shown. A name longer than
    :data:`MAX_ATTRIBUTE_LENGTH` is cut (:func:`bounded_text`), as every telemetry value the
    library builds from a user's value. Names are cached per class, so a
    repeated failure formats no string. The cache holds its classes weakly: it never keeps a
    dynamically created exception class (or its module) alive. A class that cannot be hashed
    (its metaclass defines ``__eq__`` and no ``__hash__``) is named each time, never cached.
    """
    if error is None:
        return None
    cls = type(error)
    try:
        name = _TYPE_NAMES.get(cls)
    except TypeError:  # an unhashable class: named, not cached (the caller's error must come through)
        return _type_name(cls)
    if name is None:
        name = _TYPE_NAMES[cls] = _type_name(cls)
    return name


def error_type_key(error: BaseException) -> str:
    """Return what tells an exception's type apart (a pattern's fingerprint): its bounded name, uncut.

    :func:`error_type_name`, unless that name was cut: then the whole name cut as a key is
    (:func:`key_attribute`, ending in a digest of the whole), so that two classes whose names
    differ only past :data:`MAX_ATTRIBUTE_LENGTH` stay two. Formats a string only for such a
    name (a failure's rare path).
    """
    name = error_type_name(error) or ""
    if len(name) < MAX_ATTRIBUTE_LENGTH:
        return name
    return key_attribute(_whole_type_name(type(error)))


def _whole_type_name(cls: type[BaseException]) -> str:
    """``module.Qualname`` of ``cls``, the qualname alone for builtins, uncut (see :func:`_type_name`)."""
    if issubclass(cls, DeadlineReachedError):  # the engine's: named as the timeout it stands for
        cls = OperationTimeoutError
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _type_name(cls: type[BaseException]) -> str:
    """Format the bounded ``error.type`` of ``cls``: ``module.Qualname``, the qualname alone for builtins."""
    return bounded_text(_whole_type_name(cls))
