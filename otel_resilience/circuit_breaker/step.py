"""The breaker's pipeline link: the core's permission protocol as a :class:`Step`.

One link per pipeline the breaker runs in (and one for its own), all sharing one core.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Final

from otel_resilience.circuit_breaker.config import KIND, CircuitBreakerConfig
from otel_resilience.circuit_breaker.core import _IGNORED, _SUCCESS, _BreakerCore
from otel_resilience.circuit_breaker.state import _CLOSED, _HALF_OPEN_VALUE, _OPEN, _OPEN_VALUE, Permit
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import CallRejected, Event, StrategyTelemetry
from otel_resilience.engine.facade import Link
from otel_resilience.errors import CircuitOpenError

_REJECT_OPEN: Final = CallRejected("circuit_open")
_REJECT_HALF_OPEN_FULL: Final = CallRejected("half_open_full")
_CALL_REJECTED: Final = Event.CALL_REJECTED
"""Enum members read on every rejection, bound once: reading a member off its class is slow."""


class _BreakerStep(Link[CircuitBreakerConfig]):
    """A pipeline link bound to a breaker's shared core, with its own per-call telemetry.

    Its rules are the core's permission protocol: ``admit`` asks for a permit (CLOSED admits
    without a call, as :meth:`_BreakerCore.try_acquire` does), the outcome hooks count it, and a
    cancellation gives it back.
    """

    __slots__ = ("_core", "_hub", "_routes_seen", "_wanted")

    kind: ClassVar[str] = KIND

    def __init__(self, core: _BreakerCore, telemetry: StrategyTelemetry) -> None:
        super().__init__(core.name, core.config, core._clock, telemetry)
        self._core = core
        self._hub = telemetry._hub
        self._routes_seen: object = None
        self._wanted = False

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
        """Count a success: no lock on the CLOSED path when there is no failure streak to reset.

        The lock-free path only bumps an exact counter (see :class:`CircuitBreakerStats`), so it
        is exact from any number of threads and loops; anything that changes state takes the lock.
        """
        core = self._core
        stats = core.stats
        if token is core._permit and token.state is _CLOSED and not stats.failure_count:
            next(stats._successes)
            return
        with core._lock:
            change = core._on_success_locked(token)
        core._emit(change)

    def on_failure(self, ctx: ExecutionContext, token: Permit, error: Exception) -> None:
        """Classify ``error`` (ignored / failure / success) and count it; the error passes through.

        Raises:
            Exception: Whatever a ``record_exceptions`` predicate raised; the permit is given back
                first (counted as ignored).
        """
        core = self._core
        try:
            verdict = core._classify(error)
        except BaseException:
            with core._lock:
                core.stats.total_ignored += 1
                core._release_locked(token)
            raise
        if verdict == _SUCCESS:
            self.on_success(ctx, token, None)
            return
        with core._lock:
            if verdict == _IGNORED:
                core.stats.total_ignored += 1
                core._release_locked(token)
                change = None
            else:
                change = core._on_failure_locked(token, error)
        core._emit(change)

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
