"""The bulkhead's step: one way in (:meth:`_BulkheadStep.admit`) for calls and for ``slot()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from otel_resilience.engine.actions import Rejected
from otel_resilience.engine.closing import give_back
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import CallRejected, Event, StrategyTelemetry
from otel_resilience.engine.facade import Link
from otel_resilience.engine.waiting import ADMITTED, FULL, Waiter
from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError, keyed_rejection
from otel_resilience.patterns.bulkhead._config import BulkheadConfig

if TYPE_CHECKING:
    from collections.abc import Callable

    from otel_resilience.engine.step import Action
    from otel_resilience.patterns.bulkhead import Bulkhead

KIND: Final = "bulkhead"

_FULL_EVENT: Final = CallRejected(reason="bulkhead_full")
_TIMEOUT_EVENT: Final = CallRejected(reason="queue_timeout")
_CALL_REJECTED: Final = Event.CALL_REJECTED
"""Read on every rejection, bound once: reading a member off its enum class is slow."""


class _BulkheadStep(Link[BulkheadConfig]):
    """A pipeline link bound to a bulkhead's shared slots, with its own telemetry.

    :meth:`admit` takes a slot, or queues the call (its waiter is the ``Wait`` the driver waits on), or
    rejects it; whichever hook ends the run gives the slot back. The link of a keyed policy's key
    (its telemetry's ``source.key``) names the key in its rejections.
    """

    __slots__ = ("_core", "_full_error", "wait_timeout")

    kind: ClassVar[str] = KIND
    admits_early: ClassVar[bool] = True  # admit reads ctx.sync only (its waiter's kind)

    def __init__(self, bulkhead: Bulkhead, telemetry: StrategyTelemetry) -> None:
        super().__init__(bulkhead.name, bulkhead.config, bulkhead.clock, telemetry)
        self._core = bulkhead._core
        self.wait_timeout = self.config.timeout  # how long a queued call may wait (WaitOwner)
        self._full_error: Callable[[str, int, int], BulkheadFullError] = keyed_rejection(
            BulkheadFullError, telemetry.source.key
        )

    def admit(self, ctx: ExecutionContext) -> Waiter | Rejected | None:
        """Take a slot, else queue the call in the driver's kind of waiter, else reject it: one lock trip.

        Returns:
            ``None`` (the call holds a slot), or its waiter: the ``Wait`` the driver waits on, or,
            every slot busy and the queue full (or not allowed), a ``Rejected`` holding its
            ``BulkheadFullError``: the engine raises it (as the breaker's rejections).
        """
        got = self._core.acquire(ctx, self)
        if got is ADMITTED:
            return None
        if got is FULL:  # counted by the core; reported here, to whoever listens at all
            telemetry = self._telemetry
            if telemetry.hub.event_listeners:  # nobody listening: not even the call of report()
                telemetry.report(_CALL_REJECTED, _FULL_EVENT)
            core = self._core
            make = self._full_error  # read, then called: a call of the attribute is a slow look-up
            return Rejected(make(self.name, core.max_concurrent, core.max_waiting))
        return got  # the waiter (no typing.cast: a call at run time, on every queued call)

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Action:  # noqa: ARG002
        """Give the slot back (to the oldest waiter that can take it)."""
        self._core.release()
        return None

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Action:  # noqa: ARG002
        """Give the slot back; the error passes through."""
        self._core.release()
        return None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:  # noqa: ARG002
        """Give the slot back: the call was cancelled while it ran.

        Or its coroutine is being closed: a task its closed loop left pending, freed by the
        garbage collector on any thread, maybe one that holds the bulkhead's lock, which never
        blocks on it (:func:`~otel_resilience.engine.closing.give_back`).
        """
        core = self._core
        give_back(core._lock, core.release)

    def wait_timed_out(self) -> None:
        """Report the ``queue_timeout`` rejection of a call that waited too long (its own context)."""
        self._telemetry.report(_CALL_REJECTED, _TIMEOUT_EVENT)

    def wait_timeout_error(self, timeout: float) -> BulkheadTimeoutError:
        """Return the error of a call that waited ``timeout`` seconds for a slot."""
        core = self._core  # a timed-out wait: its maker is made here, off the hot path
        make = keyed_rejection(BulkheadTimeoutError, self._telemetry.source.key)
        return make(self.name, core.max_concurrent, core.max_waiting, timeout)
