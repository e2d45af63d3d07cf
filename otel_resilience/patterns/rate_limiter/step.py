"""The rate limiter's step: :meth:`_RateLimiterStep.admit` takes a permit, reserves one, or rejects."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, cast

from otel_resilience.engine.actions import Rejected, Wait
from otel_resilience.engine.deadline import time_left
from otel_resilience.engine.events import CallRejected, Event, PermitWaited, StrategyTelemetry
from otel_resilience.engine.facade import Link
from otel_resilience.engine.validation import MAX_DURATION
from otel_resilience.errors import RateLimitedError, keyed_rejection
from otel_resilience.patterns.rate_limiter.config import KIND, RateLimiterConfig
from otel_resilience.patterns.rate_limiter.rules import (
    RateLimiterStatsDict,
    RemoteRules,
    _Reservation,
    _Rules,
)

_CALL_REJECTED: Final = Event.CALL_REJECTED
_PERMIT_WAITED: Final = Event.PERMIT_WAITED
"""Read on hot paths, bound once: reading a member off its enum class costs ~55 ns (Python 3.11)."""

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from otel_resilience.engine.clock import Clock
    from otel_resilience.engine.context import ExecutionContext

_REJECTED_EVENT: Final = CallRejected(reason="rate_limited")


class _RateLimiterStep(Link[RateLimiterConfig]):
    """A pipeline link bound to a rate limiter's shared permits, with its own telemetry.

    Only :meth:`admit` is a hook: a permit is spent when the call starts, whatever its outcome,
    so nothing is given back when it ends. The link of a keyed policy's key (its telemetry's
    ``source.key``) names the key in its rejections.
    """

    __slots__ = ("__weakref__", "_error", "_rules")  # weakly kept: a key's links keep it (_KeyHold)

    kind: ClassVar[str] = KIND
    admits_early: ClassVar[bool] = True  # admit reads ctx.sync at most (a cluster limiter's)

    def __init__(
        self, name: str, config: RateLimiterConfig, clock: Clock, rules: _Rules, telemetry: StrategyTelemetry
    ) -> None:
        super().__init__(name, config, clock, telemetry)
        self._rules = rules
        self._error: Callable[[str, float], RateLimitedError] = keyed_rejection(
            RateLimitedError, telemetry.source.key
        )

    def admit(self, ctx: ExecutionContext) -> Wait | None:  # noqa: ARG002 - the same for every call
        """Take a permit now; else reserve the next one due and return the wait for it; else reject.

        A wait is allowed when the permit is due within ``config.max_wait``, before the deadline
        of an enclosing timeout (:func:`~otel_resilience.engine.deadline.time_left`) and
        while fewer than ``config.max_waiting`` callers wait.

        Returns:
            ``None`` (a permit taken), the wait for the reserved permit, or, no permit free and
            none to wait for, a ``Rejected`` holding its ``RateLimitedError`` (whose
            ``retry_after`` says when the next one is due): the engine raises it.
        """
        rules, clock = self._rules, self.clock
        max_wait = rules.max_wait
        remaining = time_left() if max_wait > 0 else math.inf
        now = clock.now()
        return self._admitted(rules.acquire(now, max_wait, remaining), now)

    def _admitted(self, got: _Reservation | float | None, since: float) -> _Waiting | Rejected | None:
        """What the rules' answer means: go (``None``), wait for the reservation, or the rejection."""
        if got is None:
            return None
        if isinstance(got, float):  # refused: reported here (to whoever listens at all), then raised
            telemetry = self._telemetry
            if telemetry.hub.event_listeners:
                telemetry.report(_CALL_REJECTED, _REJECTED_EVENT)
            make = self._error  # read, then called: a call of the attribute is a slow look-up
            # A duration, as every one the library states: the permit of a caller refused behind
            # waiters of a long period (each up to max_wait away, then one period more), or of
            # a shared limiter's reservations, may be due later than any sleep takes.
            return Rejected(make(self.name, min(got, MAX_DURATION)))
        return _Waiting(self, got, since)

    def get_stats(self) -> RateLimiterStatsDict:
        """Return the limiter's counts (shared by all its links), as :meth:`RateLimiter.get_stats` does."""
        return self._rules.snapshot(self.name, self.clock.now())


class _ClusterRateLimiterStep(_RateLimiterStep):
    """The link of a limiter whose permits are in a shared store: an async caller asks it on the loop.

    The sync driver asks as a local limiter's link does (the round trip in its thread); the async
    driver gets an :class:`_Asking` wait, so the round trip is awaited and never blocks the loop.
    Both decide with the same rules (the store's ``ClusterRules``).
    """

    __slots__ = ()

    def admit(self, ctx: ExecutionContext) -> Wait | None:
        """Take, reserve or refuse a cluster permit; from the async driver, as an :class:`_Asking` wait.

        A wait the store gives runs from when its reply arrived (the time is read after the
        round trip, on both drivers), never from before the request.
        """
        clock = self.clock
        max_wait = self._rules.max_wait
        remaining = time_left() if max_wait > 0 else math.inf
        since = clock.now()
        if ctx.sync:
            rules = cast("RemoteRules", self._rules)
            return self._admitted(rules.acquire_sync(clock.now, max_wait, remaining), since)
        return _Asking(self, since, max_wait, remaining)


@dataclass(slots=True, eq=False)
class _Asking(Wait):
    """An async caller of a cluster limiter: asks the store on the loop, then goes, waits or is refused."""

    _step: _RateLimiterStep
    _since: float
    _max_wait: float
    _remaining: float

    async def wait(self) -> None:
        """Await the store's answer (at most its ``timeout``); then take the permit, wait for it, or raise."""
        step = self._step
        rules = cast("RemoteRules", step._rules)
        got = await rules.acquire_async(step.clock, self._max_wait, self._remaining)  # counts a cancellation
        waiting = step._admitted(got, self._since)
        if waiting is not None:  # the wait for the permit, or a Rejected, whose wait raises
            await waiting.wait()


class _Waiting(Wait):
    """A caller waiting for its reserved permit: the driver sleeps on the limiter's clock until it is due.

    The wait ends at the permit's time, never later (it sleeps again if the clock woke it early);
    a ``BaseException`` while it sleeps (cancellation, its task's deadline) gives the reservation
    back and is re-raised. A permit taken reports ``permit_waited`` with the time waited.
    """

    __slots__ = ("_reservation", "_since", "_step")

    def __init__(self, step: _RateLimiterStep, reservation: _Reservation, since: float) -> None:
        self._step = step
        self._reservation = reservation
        self._since = since

    async def wait(self) -> None:
        """Sleep on the event loop until the permit is due; then take it."""
        clock = self._step.clock
        with self._taking():
            while (delay := self._reservation.due - clock.now()) > 0:
                await clock.sleep(delay)

    def wait_sync(self) -> None:
        """Block this thread until the permit is due; then take it."""
        clock = self._step.clock
        with self._taking():
            while (delay := self._reservation.due - clock.now()) > 0:
                clock.sleep_sync(delay)

    @contextlib.contextmanager
    def _taking(self) -> Iterator[None]:
        """Around the sleeps: take the permit after them, or give it back if they are interrupted."""
        step, reservation = self._step, self._reservation
        clock, rules = step.clock, step._rules
        try:
            yield
            rules.claim(reservation)
        except GeneratorExit:
            # Its coroutine is being closed: by the garbage collector (a task left pending when
            # its loop closed), on whichever thread allocates, maybe inside the rules' lock.
            rules.drop(reservation, clock.now())
            raise
        except BaseException:
            rules.abandon(reservation, clock.now())  # a no-op once claimed
            raise
        telemetry = step._telemetry
        if telemetry.enabled:
            telemetry.report(_PERMIT_WAITED, PermitWaited(clock.now() - self._since))

    def __repr__(self) -> str:
        return f"<rate limiter wait until {self._reservation.due!r}>"
