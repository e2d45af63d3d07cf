"""The breaker's pipeline link: the core's permission protocol as a :class:`Step`.

One link per pipeline the breaker runs in (and one for its own), all sharing one core.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Final, Protocol, cast

from otel_resilience.engine.actions import Counted, Rejected
from otel_resilience.engine.calling import notify, refused
from otel_resilience.engine.cancelling import returned_on_the_way
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import CallRejected, Event, StrategyTelemetry
from otel_resilience.engine.facade import Link, _held_link
from otel_resilience.engine.guard import guarded_block
from otel_resilience.engine.validation import verdict
from otel_resilience.errors import CircuitOpenError
from otel_resilience.patterns.circuit_breaker.config import KIND, CircuitBreakerConfig
from otel_resilience.patterns.circuit_breaker.core import _IGNORED, _SUCCESS, _BreakerCore
from otel_resilience.patterns.circuit_breaker.state import (
    _CLOSED,
    _HALF_OPEN,
    _HALF_OPEN_VALUE,
    _OPEN,
    _OPEN_VALUE,
    Permit,
)

_REJECT_OPEN: Final = CallRejected("circuit_open")
_REJECT_HALF_OPEN_FULL: Final = CallRejected("half_open_full")
_CALL_REJECTED: Final = Event.CALL_REJECTED
"""Enum members read on every rejection, bound once: reading a member off its class is slow."""


def _permit_of(token: Permit | Counted) -> Permit:
    """The permit of an untimed call's token: the token itself, or a ``Counted`` token's ``of``."""
    if isinstance(token, Counted):
        permit: Permit = token.of
        return permit
    return token


class _BreakerStep(Link[CircuitBreakerConfig]):
    """A pipeline link bound to a breaker's shared core, with its own per-call telemetry.

    Its rules are the core's permission protocol: ``admit`` asks for a permit (CLOSED admits
    without a call, as :meth:`_BreakerCore.try_acquire` does), the outcome hooks count it, and a
    cancellation gives it back. While a success needs no lock, a call is admitted with the
    period's :class:`~otel_resilience.engine.actions.Counted` token, whose success the drivers
    count themselves; the hooks read its permit in ``of`` (:func:`_permit_of`). That token is
    the breaker's standing admission (the core's ``standing``): the engine admits with it
    without calling ``admit``.
    """

    # weakly kept: a breaker reconfigured in place moves the links it gave out to its new core (_follow_core)
    __slots__ = ("__weakref__", "_core", "_live", "_routes_seen", "_timed", "_wanted")

    _live: _Live
    """Set by :meth:`_follow` only: the breaker whose live core admits this retired link's calls."""

    kind: ClassVar[str] = KIND
    admit_waits: ClassVar[bool] = True  # admit returns a plain token or a Rejected (a Wait)
    admits_early: ClassVar[bool] = True  # admit reads nothing of the context

    def __init__(self, core: _BreakerCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.config, core._clock, telemetry)
        self._routes_seen = 0  # the generation of the hub's routes _wanted was read from
        self._wanted = False
        self._bind(core)

    def _bind(self, core: _BreakerCore) -> None:
        """Run on ``core``: admit by it, count and judge there, with its configuration."""
        self._core = core
        self.config = core.config
        self._timed = core.settings.slow_call_duration is not None
        self.standing = core.standing

    def _follow_core(self, core: _BreakerCore) -> None:
        """Run on ``core`` from now on: a link given out of a breaker a reload reconfigured in place.

        Called under the lock the breaker's cores share, with its new core. A call in flight
        keeps the permit of the retired core, which the new one counts and judges nothing by (a
        permit of another period), as a call in flight at a reload is counted. A reload that adds
        or drops ``slow_call_duration`` changes the shape of a call's token (a permit and its
        start time, or the permit alone): the link then reads each token by its own shape
        (:class:`_ReshapedStep`), a call in flight's too.
        """
        reshaped = isinstance(self, _ReshapedStep)
        if reshaped or (core.settings.slow_call_duration is not None) is not self._timed:
            # Set before the class: a call ending from now on ends by the view of the new core.
            _ENDS_BY[self] = _BreakerStep(core, self._telemetry)
            if not reshaped:
                held = cast("type[_ReshapedStep]", _held_link(_ReshapedStep))
                self.__class__ = _ReshapedStep if type(self) is _BreakerStep else held
        self._bind(core)
        self.settle()  # the plan holds the standing admission

    def admit(self, ctx: ExecutionContext) -> Any:  # noqa: ARG002 - the permit is the breaker's
        """Admit a call, or return the breaker's rejection (a ``Rejected``).

        Returns:
            The call's permit, or the period's ``Counted`` token while a success needs no lock;
            with ``slow_call_duration``, the permit and the call's start time. A rejection, the
            breaker open or all half-open probes in flight, is a ``Rejected`` holding its
            ``CircuitOpenError``: the engine raises it.
        """
        if (counted := self.standing.token) is not None:  # CLOSED, no streak (_update_lock_free_locked)
            return counted  # what the engine admits with unasked meanwhile (Standing)
        core = self._core
        permit = core._permit
        if permit.state is not _CLOSED:  # CLOSED admits without a call (as try_acquire does)
            if permit.state is _OPEN and (remaining := core.reject_open(permit)) > 0.0:
                make = permit.open_error  # read, then called: a call of the attribute is a slow look-up
                error = make(core.name, _OPEN_VALUE, remaining)
                return Rejected(self.report_rejection(error, _REJECT_OPEN))
            admitted = core.try_acquire()
            if not isinstance(admitted, Permit):  # the rejection's error, made from its period
                return Rejected(self.rejected(admitted))
            permit = admitted
        return (permit, self.clock.now()) if self._timed else permit

    def _ended(self, token: Any) -> tuple[Permit, bool]:
        """Return a timed call's permit and whether it was slow (``slow_call_duration`` or longer).

        Slow when the clock reached the call's start plus the duration, compared as the OPEN
        timer's end is: ``now - started`` rounds, so a call that took exactly the duration
        (``0.7 + 0.1 - 0.7`` is ``0.0999...``) would be fast or slow by where the clock stood.
        """
        permit, started = token
        return permit, self.clock.now() >= started + cast("float", self._core.settings.slow_call_duration)

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        """Count a success (or, when ``record_result`` says so, a returned value as a failure).

        A success of a call admitted while the breaker was lock-free (a CLOSED period with no
        failure streak to reset, no window: :meth:`_BreakerCore._update_lock_free_locked`) only
        bumps an exact counter (see :class:`CircuitBreakerStats`), and the drivers do it
        themselves while the token's ``count`` is set (:class:`Counted`); it is counted here,
        under the lock, when a streak started meanwhile (the success ends it) or when a guarded
        block ends. Anything that changes state takes the lock. The value is returned to the
        caller either way; what ``record_result`` raises is raised in its place, the permit
        given back first (:meth:`_judging_raised`). A value ``record_result`` judged a failure is the
        execution's failed result (:meth:`_judge_returned`).
        """
        if not self._core.settings.plain:  # timed calls or judged results
            self._judge_returned(ctx, token, result)
            return
        self._succeeded(_permit_of(token), False)  # noqa: FBT003

    def _judge_returned(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        """Count a returned call of a breaker that times calls or judges results.

        A guarded block returns no value (``result`` is ``None`` there): ``record_result`` is
        not asked about it, and its success counts as one. A result ``record_result`` judged a
        failure is the execution's failed result too, whatever the breaker's state
        (:meth:`~otel_resilience.engine.context.ExecutionContext.result_failed`, as a retry's
        ``retry_on_result`` records it): returned, but no success, and never a fallback's last
        good value. A failed result that came back while the task is being cancelled (the call
        swallowed its ``CancelledError``:
        :func:`~otel_resilience.engine.cancelling.returned_on_the_way`) is no failure of the
        dependency: its permit is given back, as for an error on its way out of the
        cancellation, and the result is still a failed one.
        """
        permit, slow = self._ended(token) if self._timed else (token, False)
        judge = self._core.settings.record_result
        if judge is not None and ctx.fn is not guarded_block and self._is_failure(permit, judge, result):
            ctx.result_failed()
            if returned_on_the_way(ctx):  # the call swallowed its task's cancellation: as on_cancel
                self._core.end(permit, None)
            else:
                self._failed(permit, None, slow)
        else:
            self._succeeded(permit, slow)

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:  # noqa: ARG002
        """Classify ``error`` (ignored / failure / success) and count it; the error passes through.

        Raises:
            BaseException: Whatever a ``record_exceptions`` predicate raised; the permit is given
                back first (:meth:`_judging_raised`).
        """
        permit, slow = self._ended(token) if self._timed else (_permit_of(token), False)
        core = self._core
        try:
            verdict = core._classify(error)
        except BaseException as raised:
            self._judging_raised(permit, raised)
            raise
        if verdict == _SUCCESS:
            self._succeeded(permit, slow)
        elif verdict == _IGNORED:
            self._core.ignore(permit)
        else:
            self._failed(permit, error, slow)

    def _succeeded(self, permit: Permit, slow: bool) -> None:
        core = self._core
        lock = core._lock or core._make_lock()
        lock.acquire()  # not `with`: on every call of a windowed breaker, half the cost
        try:
            change = core._on_success_locked(permit, slow)
        finally:
            lock.release()
        if change is not None:
            core._emit(change)

    def _failed(self, permit: Permit, error: Exception | None, slow: bool) -> None:
        core = self._core
        with core._lock or core._make_lock():
            change = core._on_failure_locked(permit, error, slow)
        core._emit(change)

    def _is_failure(self, permit: Permit, judge: Callable[[Any], bool], result: Any) -> bool:
        """Ask ``record_result`` whether ``result`` is a failure; give the permit back if it raises.

        Its answer is read by :func:`~otel_resilience.engine.validation.verdict`'s rule (an
        awaitable is refused).
        """
        try:
            failed: object = judge(result)
            if failed is not False and failed is not True:  # a bool is taken as it is, with no call
                failed = verdict(failed, "CircuitBreakerConfig.record_result", self._core.name)
        except BaseException as raised:
            self._judging_raised(permit, raised)
            raise
        return failed

    def _judging_raised(self, permit: Permit, raised: BaseException) -> None:
        """Give back the permit of a call whose judgment (``record_exceptions``, ``record_result``) raised.

        An error is counted ignored (neither outcome: the breaker cannot tell what the call was);
        an interrupt or a cancellation ends the call as one the call raised itself would
        (:meth:`_BreakerCore.end`: cancelled), as the execution it ends counts it.
        """
        if isinstance(raised, Exception):
            self._core.ignore(permit)
        else:
            self._core.end(permit, None)

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:  # noqa: ARG002
        """Give the permit back; a function that does not fit the driver is ignored, not a cancellation.

        Never blocking on the breaker's lock while the call's coroutine is being closed
        (:meth:`_BreakerCore.end`).
        """
        self._core.end(token[0] if self._timed else _permit_of(token), refused())

    def rejected(self, error: CircuitOpenError) -> CircuitOpenError:
        """Report the rejection :meth:`_BreakerCore.try_acquire` just counted and made; return ``error``.

        Its reason is the state of the period that rejected the call, which ``error`` holds.
        """
        return self.report_rejection(
            error, _REJECT_HALF_OPEN_FULL if error.state == _HALF_OPEN_VALUE else _REJECT_OPEN
        )

    def _follow(self, breaker: _Live) -> None:
        """Admit the calls of this link by ``breaker``'s live state from now on (its core was retired).

        For a link of a pipeline a reload replaced, which the calls in flight at the reload still
        run in (:class:`_FollowingStep`). Its core's standing admission was withdrawn when it was
        retired, so every call asks :meth:`admit`.
        """
        self._live = breaker
        self.__class__ = _FollowingStep

    def report_rejection(self, error: CircuitOpenError, args: CallRejected) -> CircuitOpenError:
        """Report a counted rejection (if anyone wants rejections) and return its ``error``."""
        # Whether anyone wants rejections, asked again only when the hub's listeners changed
        # (the hub then replaces its routes): an open breaker rejects on a hot path, and asking
        # the hub on every rejection costs a third of it (see docs/benchmarks.md, Engine v2).
        # Their generation is kept, not the routes: they hold the listeners of that moment.
        generation = self._telemetry.hub._routes.generation
        if generation != self._routes_seen:
            self._wanted = self._telemetry.wants(_CALL_REJECTED)
            self._routes_seen = generation
        if self._wanted:
            self._telemetry.report(_CALL_REJECTED, args)
        core = self._core
        if core._reject_watchers:  # usually none: no iterator made then
            for watcher in core._reject_watchers:
                notify(watcher, error, f"circuit breaker {core.name!r}: rejection callback")
        return error


class _Live(Protocol):
    """What a retired link reads of its breaker: the core in force (a reload replaces it)."""

    _core: _BreakerCore


class _FollowingStep(_BreakerStep):
    """A link whose core a reload retired, which calls in flight at the reload still run in.

    Such a call may make more attempts (retries, hedges, recovery re-runs): each is admitted by
    the breaker as it is now, never by the retired core's frozen state. The live core OPEN or
    HALF_OPEN rejects it (a probe is a call of the new links), as the breaker rejects any call
    then; CLOSED (DISABLED, METRICS_ONLY) admits it in the retired core, where its outcome is
    counted in the totals but judges nothing, as every outcome of a call in flight at a reload.
    The links of the live core are never of this class: their calls pay nothing for it.
    """

    __slots__ = ()

    def admit(self, ctx: ExecutionContext) -> Any:  # noqa: ARG002 - the permit is the breaker's
        """Reject the call if the breaker's live core rejects calls now, else admit it in the retired core."""
        live = self._live._core
        live.state  # noqa: B018 - a look moves a breaker OPEN past its timer to HALF_OPEN
        period = live._permit  # read once: the period that decides
        if period.state is _OPEN or period.state is _HALF_OPEN:
            next(live.stats._rejected)  # type: ignore[arg-type]  # made when CLOSED was left
            # Reported as a link of the live core reports it: to its rejection callbacks of now.
            reporter = _BreakerStep(live, self._telemetry)
            return Rejected(reporter.rejected(live.rejection(period)))
        permit = self._core._permit
        return (permit, self.clock.now()) if self._timed else permit


class _ReshapedStep(_BreakerStep):
    """A link given out whose breaker a reload made time its calls, or stop timing them.

    Made so by :meth:`_BreakerStep._follow_core`.

    A call admitted before the reload holds a token of the retired core's shape: each end of a
    call reads its token by its own shape, made the one of the link's core now (a permit alone
    taken as a call of unknown start, never slow), before the link's rules judge it. It is ended
    by a link of that core that no reload changes (its view, :data:`_ENDS_BY`, read once): a
    reload by another thread while it ends, which moves this link to another core and shape,
    cannot have the token read by one shape and judged by another. Only such links pay for it.
    """

    __slots__ = ()

    def _ending(self, token: Any) -> tuple[_BreakerStep, Any]:
        """The link that ends a call now (its view, read once), and ``token`` in the shape of its tokens."""
        view = _ENDS_BY[self]
        if (type(token) is tuple) is view._timed:
            return view, token
        if view._timed:
            return view, (_permit_of(token), math.inf)  # its start unknown: never slow
        return view, token[0]

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        """:meth:`_BreakerStep.on_success` of the view, with the token in its shape (:meth:`_ending`)."""
        view, shaped = self._ending(token)
        view.on_success(ctx, shaped, result)

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        """:meth:`_BreakerStep.on_failure` of the view, with the token in its shape (:meth:`_ending`)."""
        view, shaped = self._ending(token)
        view.on_failure(ctx, shaped, error)

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        """:meth:`_BreakerStep.on_cancel` of the view, with the token in its shape (:meth:`_ending`)."""
        view, shaped = self._ending(token)
        view.on_cancel(ctx, shaped, running=running)


_ENDS_BY: Final[weakref.WeakKeyDictionary[_BreakerStep, _BreakerStep]] = weakref.WeakKeyDictionary()
"""Each reshaped link's view (:class:`_ReshapedStep`): a link of its core now, replaced by each reload."""
