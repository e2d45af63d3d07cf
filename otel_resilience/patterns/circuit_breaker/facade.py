"""The breaker's public face: :class:`CircuitBreaker`."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Final, Literal, ParamSpec, TypeVar, cast

from otel_resilience.engine.calling import check_notified
from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import StateChanged, StrategyTelemetry
from otel_resilience.engine.facade import Held, NotInUseError, Pattern, verb
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import BREAKERS
from otel_resilience.engine.validation import check_duration, fail
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.circuit_breaker.config import _DEFAULT_CONFIG, KIND, CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker.core import _BreakerCore
from otel_resilience.patterns.circuit_breaker.reload import reconfigured_core_locked
from otel_resilience.patterns.circuit_breaker.state import (
    CircuitBreakerStats,
    CircuitBreakerStatsDict,
    CircuitState,
    snapshot,
)
from otel_resilience.patterns.circuit_breaker.step import _BreakerStep

P = ParamSpec("P")
R = TypeVar("R")

_FORCE_REASONS: Final = ("forced", "isolated")


class CircuitBreaker(Pattern[CircuitBreakerConfig, _BreakerStep], kind=KIND):
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

    __slots__ = ("_core",)

    def __init__(
        self, name: str, config: CircuitBreakerConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        # Pattern.__init__ named, not super(): no proxy object made per breaker created.
        Pattern.__init__(self, name, config, clock, default=_DEFAULT_CONFIG)
        config = self._config
        # The core makes its own telemetry at first use; a subclass of another kind gives it its own.
        own = None if self.kind == KIND else Pattern._own_telemetry(self)
        self._core = _BreakerCore(name, config, clock, own)
        BREAKERS.register(self)
        if config.store is not None:
            config.store.share_breaker(self)

    def _own_telemetry(self) -> StrategyTelemetry:
        return self._core.telemetry  # one for the breaker and its core, made by the core

    def _report_as(self, key: str, metric_key: str | None = None) -> None:
        """Report the breaker's own events as the ones of a keyed policy's ``key`` (see ``report_as``)."""
        self._core.report_as(key, metric_key)

    def _link(self, telemetry: StrategyTelemetry) -> _BreakerStep:
        return _BreakerStep(self._core, telemetry)

    call = verb(
        Pattern.run,
        "Await ``fn(*args, **kwargs)`` if the breaker admits the call.",
        returns="What ``fn`` returned.",
        raises=(
            (
                "CircuitOpenError: The breaker is open, or all half-open probes are in flight; ``fn`` was "
                "not called."
            ),
            "Exception: Whatever ``fn`` raised (after it was counted).",
        ),
    )

    call_sync = verb(
        Pattern.run_sync,
        "Call ``fn(*args, **kwargs)`` in this thread if the breaker admits the call.",
        returns="What ``fn`` returned.",
        raises=(
            "CircuitOpenError: As :meth:`call`.",
            "Exception: Whatever ``fn`` raised (after it was counted).",
        ),
    )

    @property
    def state(self) -> CircuitState:
        """The current state, read without a lock.

        An OPEN breaker whose timeout has elapsed turns HALF_OPEN when it is read here (or on the
        next call); the transition is reported once.
        """
        return self._core.state

    def peek_state(self) -> CircuitState:
        """The state :attr:`state` would read, with no side effect.

        Reading :attr:`state` moves an OPEN breaker whose timeout elapsed to HALF_OPEN and runs
        the :meth:`on_state_change` callbacks there and then. Code that reads the state while it
        holds a lock of its own (a monitor, an eviction rule) peeks instead: a callback that
        needs that lock again would otherwise wait for it forever. The move is made by the next
        call, or the next read of :attr:`state`.
        """
        return self._core.peek_state()

    def _holds_slow_calls(self) -> bool:
        """Whether the sliding window holds slow calls (no lock, no side effect; ``holds_slow_calls``)."""
        return self._core.holds_slow_calls()

    @property
    def failure_rate_threshold(self) -> float | None:
        """The failure rate that opens the breaker, or ``None`` without a sliding window."""
        return self._config.failure_rate_threshold

    def rates(self) -> tuple[float, float] | None:
        """Return the sliding window's failure and slow-call rates now, each in ``[0, 1]``.

        Both are ``0.0`` while the window is empty (it starts again with each state period);
        ``None`` for a breaker without a sliding window.
        """
        return self._core.rates()

    stats = ReadOnly[CircuitBreakerStats](
        "_core.stats", "The live counts (plain ints, updated in place; read-only for callers)."
    )

    def guard(self) -> Guard:
        """Return a context manager that runs a block under this breaker (sync or async).

        ``with breaker.guard(): ...`` in threads, ``async with breaker.guard(): ...`` in
        coroutines: the block is admitted (or :class:`CircuitOpenError` is raised before it runs)
        and its outcome counted as a call's would be. Use it where the protected work is not one
        function call.

        Returns:
            A guard that serves one block at a time (each entry is admitted as a call): keep it
            for block after block, or make one per block that may run beside another.
        """
        return Guard(self._pipeline)

    def force_open(
        self, duration: float | timedelta | None = None, *, reason: Literal["forced", "isolated"] = "forced"
    ) -> bool:
        """Open the breaker now, whatever its state.

        Each opening is a reported state change (telemetry and :meth:`on_state_change`), that of
        an OPEN breaker too: ``open`` to ``open``, with its reason and its new duration, as its
        OPEN period starts again and ends then. An isolation that leaves it as it is reports
        nothing.

        Args:
            duration: Seconds (or a ``timedelta``) to stay OPEN, after which the breaker turns
                HALF_OPEN as after a trip; ``None`` keeps it OPEN until :meth:`reset`.
            reason: The ``reason`` of the reported state change: ``"forced"`` (an operator) or
                ``"isolated"`` (the recovery system's ISOLATE action, which never shortens an
                opening: a breaker already OPEN for ``duration`` or longer is left as it is; nor
                does it open a breaker :meth:`disable` or :meth:`metrics_only` switched, until
                :meth:`reset`).

        Returns:
            Whether the breaker is OPEN now: ``False`` only for an isolation that a breaker
            :meth:`disable` or :meth:`metrics_only` switched refused, or one of a named
            policy's breaker no longer in use (the ISOLATE failed: it left the breaker as it is).

        Raises:
            TypeError: ``duration`` is not a number or ``timedelta``, or ``reason`` not a ``str``.
            ValueError: ``duration`` is not finite and ``> 0``, or ``reason`` is unknown.
            RuntimeError: An operator's opening (``"forced"``, as every action below) of a named
                policy's breaker no longer in use: its key was evicted, or a reload replaced it.
        """
        seconds = None
        if duration is not None:
            seconds = check_duration("CircuitBreaker.force_open", "duration", duration)
        if reason not in _FORCE_REASONS:  # a str that names none is a ValueError, another type a TypeError
            kind = ValueError if isinstance(reason, str) else TypeError
            raise fail("CircuitBreaker.force_open", "reason", "'forced' or 'isolated'", reason, kind=kind)
        if reason == "forced":
            with self._held():
                return self._core.force_open(seconds, reason)
        try:
            hold = self._held()
            hold.__enter__()
        except NotInUseError:  # a breaker no call asks: opening it would isolate nothing
            return False
        try:
            return self._core.force_open(seconds, reason)
        finally:
            hold.__exit__(None, None, None)

    def reset(self) -> None:
        """Close the breaker now and clear the counts of the current period (totals are kept).

        Also the way back to normal operation from :meth:`disable` and :meth:`metrics_only`.
        """
        with self._held():
            self._core.reset()

    def force_closed(self) -> None:
        """Close the breaker now, as an operator: :meth:`reset`, reported with reason ``"forced"``."""
        with self._held():
            self._core.force_state(CircuitState.CLOSED, "forced")

    def disable(self) -> None:
        """Switch the breaker off until :meth:`reset`: every call goes through and is counted.

        The state is :attr:`CircuitState.DISABLED`; nothing opens the breaker meanwhile.
        """
        with self._held():
            self._core.force_state(CircuitState.DISABLED, "forced")

    def metrics_only(self) -> None:
        """Run the breaker in shadow mode until :meth:`reset`, for a safe roll-out.

        The state is :attr:`CircuitState.METRICS_ONLY`: every call goes through and is counted
        as in CLOSED, and each trip the breaker would make is reported (a state change from
        ``metrics_only`` to ``metrics_only`` with the trip's reason, to telemetry and to
        :meth:`on_state_change` callbacks), after which its counts start again. No call is ever
        rejected.
        """
        with self._held():
            self._core.force_state(CircuitState.METRICS_ONLY, "forced")

    def on_state_change(self, callback: Callable[[StateChanged], Any]) -> Callable[[], None]:
        """Call ``callback(change)`` after each state change of this breaker.

        ``change`` has ``old``, ``new``, ``reason``, ``reopens`` and ``duration`` (seconds OPEN).
        The callback runs after the breaker's lock is released, in the thread or task of the call
        that caused the change; an async callback runs as a task of the running loop (or, from a
        thread with no loop, to completion there). What it raises is logged, never raised, and so
        is a generator it returns (nothing iterates it: its body never runs); a generator function
        is refused here. The rule of every notification callback
        (:func:`~otel_resilience.engine.calling.check_notified`, then
        :func:`~otel_resilience.engine.calling.notify`).
        Changes are delivered in the order they happened: a change made while another thread
        is delivering this breaker's changes (or by a callback, during its own delivery) is
        delivered by that thread, after the one in hand.

        Returns:
            A function that removes this subscription (calling it again does nothing; another
            subscription of the same callable stays).

        Raises:
            TypeError: ``callback`` is not callable, cannot be called as ``callback(change)``, or is
                a generator function (sync or async), or an object whose ``__call__`` is one.
        """
        check_notified(self._owner, "callback", callback, "change")
        return self._watch(callback, rejections=False)

    def on_rejection(self, callback: Callable[[CircuitOpenError], Any]) -> Callable[[], None]:
        """Call ``callback(error)`` for each call this breaker rejects, before the error is raised.

        Runs as :meth:`on_state_change` callbacks do (sync or async; what it raises is logged; a
        generator function is refused).

        Returns:
            A function that removes this subscription, as :meth:`on_state_change`'s does.

        Raises:
            TypeError: ``callback`` is not callable, cannot be called as ``callback(error)``, or is
                a generator function (sync or async), or an object whose ``__call__`` is one.
        """
        check_notified(self._owner, "callback", callback, "error")
        return self._watch(callback, rejections=True)

    def _watch(self, callback: Callable[..., Any], *, rejections: bool) -> Callable[[], None]:
        """Add a callback to the core; return a remover that finds the core current when it is called.

        The remover removes this subscription, once: a second call removes nothing, and another
        subscription of the same callable stays.
        """
        with self._core_lock():  # a reload that runs meanwhile copies the callbacks, or comes after
            self._core.watch_locked(callback, rejections=rejections)
        return _Subscription(self, callback, rejections=rejections).remove

    def _core_lock(self) -> threading.Lock:
        """The lock every core of this breaker shares: the current core is read and replaced under it."""
        core = self._core
        return core._lock or core._make_lock()

    def _reconfigure(self, config: CircuitBreakerConfig) -> None:
        """Take ``config`` now, carrying the state over (see :mod:`.reload`).

        For an owner that rebuilds every link of this breaker afterwards (a manager policy):
        links built before keep serving the calls in flight with the old core, whose outcomes
        are counted in the totals but judge nothing; the owner hands them to
        :meth:`_follow_in_flight`, so that their next attempts are admitted by the new core. The
        breaker's own pipeline takes a link to the new core (:meth:`_configured`), so the verbs,
        a function decorated with :meth:`protect` and a guard made before the reload run their
        next calls in it. A config with another ``store`` object moves the breaker to it (the new
        cluster's state is read, a local trip is published there); with none, the breaker runs on
        its own from now on.
        """
        old = self._config.store
        with self._core_lock():
            core = self._core = reconfigured_core_locked(self._core, config)
            for link in _GIVEN_OUT.get(self, ()):
                link._follow_core(core)
        self._configured(config)
        if config.store is not old:  # another store, or none: hand the breaker over
            if old is not None:
                old.unshare_breaker(self)
            if config.store is not None:
                config.store.share_breaker(self)

    def _follow_in_flight(self, links: Iterable[object]) -> None:
        """Make the links among ``links`` that run on a core this breaker retired admit by its live one.

        For the owner that rebuilt this breaker's links after :meth:`_reconfigure` (a manager
        policy), with the links of every pipeline it replaced that calls still run in (the one
        this reload replaced, and any an earlier reload replaced, whose link a reload that kept
        the breaker's config left on the core retired now): their next attempts (retries,
        hedges) are admitted by the breaker as it is now (an OPEN breaker rejects them), their
        outcomes judge nothing. A retired core of this breaker is known by its counts, which
        every core of a breaker shares.
        """
        live = self._core
        for link in links:
            if type(link) is _BreakerStep and link._core is not live and link._core.stats is live.stats:
                link._follow(self)

    def get_stats(self) -> CircuitBreakerStatsDict:
        """Return a snapshot of the breaker's state and counts.

        Returns:
            A new dict with ``name``, ``state`` (the state's value), ``failure_count``
            (consecutive failures; with a sliding window, the failures it holds now),
            ``success_count`` (half-open probe successes),
            ``total_requests``, ``total_successes``, ``total_failures``, ``total_rejected``,
            ``total_ignored``, ``total_cancelled``, ``times_opened``, ``half_open_in_flight``,
            ``retry_after`` (seconds until a probe; 0 unless OPEN; ``inf`` if forced open until
            reset), ``last_failure_type`` (a class name, ``"result"`` for a value
            ``record_result`` counted as a failure, or ``None``), ``failure_rate`` and
            ``slow_call_rate`` (the sliding window's now; ``None`` without one).
        """
        return snapshot(self._core)

    def __repr__(self) -> str:
        # Peeked: a repr (a log line, a debugger) must not move the breaker nor run its callbacks.
        return f"CircuitBreaker({self.name!r}, state={self._core.peek_state().value})"


class _HeldCircuitBreaker(Held, CircuitBreaker):
    """An owned breaker (``Pattern._hold_by``): its own calls and blocks run within its hold.

    Its operator actions (:meth:`force_open`, :meth:`reset`, ...) run within the hold in any
    breaker; an isolation (recovery's) too: its refusal (:class:`NotInUseError`) is a failed
    isolation, as a breaker no call asks isolates nothing.
    """

    __slots__ = ()

    call = Held._held_run
    call_sync = Held._held_run_sync
    guard = Held._held_guard

    def as_strategy(self, pipeline: str | None = None) -> _BreakerStep:
        """:meth:`Held.as_strategy`, whose link follows the breaker's reloads, as its own calls do.

        An owner reconfigures the breaker in place (a reload that keeps it), retiring its core:
        the link moves to the new one (:meth:`_BreakerStep._follow_core`), never left on the
        retired core (admitting calls while the breaker is OPEN, judging nothing).
        """
        link = cast("_BreakerStep", Held.as_strategy(self, pipeline))
        with self._core_lock():  # a reload that ran meanwhile moves the links given out before
            links = _GIVEN_OUT.get(self)
            if links is None:
                links = _GIVEN_OUT[self] = weakref.WeakSet()
            links.add(link)
            if link._core is not self._core:
                link._follow_core(self._core)
        return link


_GIVEN_OUT: Final[weakref.WeakKeyDictionary[CircuitBreaker, weakref.WeakSet[_BreakerStep]]] = (
    weakref.WeakKeyDictionary()
)
"""The links each owned breaker gave out (:meth:`_HeldCircuitBreaker.as_strategy`), moved by its reloads."""


class _Subscription:
    """One callback added by :meth:`CircuitBreaker.on_state_change` or :meth:`CircuitBreaker.on_rejection`."""

    __slots__ = ("_breaker", "_callback", "_rejections")

    def __init__(self, breaker: CircuitBreaker, callback: Callable[..., Any], *, rejections: bool) -> None:
        self._breaker: CircuitBreaker | None = breaker
        self._callback = callback
        self._rejections = rejections

    def remove(self) -> None:
        """Remove the callback from the breaker's current core (after a reconfiguration too), once."""
        breaker = self._breaker
        if breaker is None:
            return
        with breaker._core_lock():
            if self._breaker is None:  # another thread removed it meanwhile
                return
            self._breaker = None
            breaker._core.unwatch_locked(self._callback, rejections=self._rejections)
