"""The bulkhead's step (a pipeline link) and its slot holder: one way in, :meth:`_BulkheadStep.admit`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from otel_resilience.bulkhead._config import BulkheadConfig
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.events import CallRejected, Event, StrategyTelemetry
from otel_resilience.engine.facade import Link
from otel_resilience.engine.waiting import FULL, QUEUED, Queued, Waiter, new_waiter
from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError

if TYPE_CHECKING:
    from otel_resilience.bulkhead import Bulkhead
    from otel_resilience.engine.step import Action

KIND: Final = "bulkhead"

_FULL_EVENT: Final = CallRejected(reason="bulkhead_full")
_TIMEOUT_EVENT: Final = CallRejected(reason="queue_timeout")


class _BulkheadStep(Link[BulkheadConfig]):
    """A pipeline link bound to a bulkhead's shared slots, with its own telemetry.

    :meth:`admit` takes a slot, or queues the call (a :class:`_Queued` the driver waits on), or
    rejects it; whichever hook ends the run gives the slot back.
    """

    __slots__ = ("_core",)

    kind: ClassVar[str] = KIND

    def __init__(self, bulkhead: Bulkhead, telemetry: StrategyTelemetry) -> None:
        super().__init__(bulkhead.name, bulkhead.config, bulkhead.clock, telemetry)
        self._core = bulkhead._core

    def admit(self, ctx: ExecutionContext) -> _Queued | None:
        """Take a slot; else queue the call in the driver's kind of waiter; else reject it.

        Raises:
            BulkheadFullError: Every slot is busy and the queue is full (or not allowed).
        """
        core = self._core
        if core.try_acquire():
            return None
        waiter = new_waiter(ctx.sync) if core.max_waiting else None
        status = core.enqueue(waiter)
        if status == QUEUED:
            return _Queued(self, cast("Waiter", waiter))
        if status == FULL:
            raise self._full() from None
        return None

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> Action:  # noqa: ARG002
        """Give the slot back (to the oldest waiter that can take it)."""
        self._core.release()
        return None

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Action:  # noqa: ARG002
        """Give the slot back; the error passes through."""
        self._core.release()
        return None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:  # noqa: ARG002
        """Give the slot back: the call was cancelled while it ran."""
        self._core.release()

    def _report(self, event: CallRejected) -> None:
        telemetry = self._telemetry
        if telemetry.enabled:
            telemetry.report(Event.CALL_REJECTED, event)

    def _full(self) -> BulkheadFullError:
        self._report(_FULL_EVENT)
        core = self._core
        return BulkheadFullError(self.name, core.max_concurrent, core.max_waiting)


class _Queued(Queued):
    """A call waiting in the bulkhead's queue for a slot, reporting to its link's telemetry."""

    __slots__ = ("_link",)

    def __init__(self, link: _BulkheadStep, waiter: Waiter) -> None:
        super().__init__(link._core, waiter, link.config.timeout, link.clock)
        self._link = link

    def timed_out(self) -> None:
        """Report the ``queue_timeout`` rejection."""
        self._link._report(_TIMEOUT_EVENT)

    def timeout_error(self, timeout: float) -> BulkheadTimeoutError:
        """Return the error of a call that waited ``timeout`` seconds for a slot."""
        core = self._link._core
        return BulkheadTimeoutError(self._link.name, core.max_concurrent, core.max_waiting, timeout)


def _no_function() -> None:
    """The function of a slot's context: a block holds the slot, no function is called."""


_IN_TASK: Final = ExecutionContext(_no_function, (), {}, "slot")
"""What ``async with bulkhead.slot()`` admits with (the link's hooks read only ``sync``)."""
_IN_THREAD: Final = ExecutionContext(_no_function, (), {}, "slot", sync=True)
"""What ``with bulkhead.slot()`` admits with."""


class _BulkheadSlot:
    """A bulkhead slot held around a block: ``with bulkhead.slot():`` or ``async with bulkhead.slot():``.

    Entering takes a slot as a call does (the link's :meth:`~_BulkheadStep.admit`, waiting in
    the FIFO queue when every slot is busy, raising
    :class:`~otel_resilience.errors.BulkheadFullError` or
    :class:`~otel_resilience.errors.BulkheadTimeoutError`); leaving ends the run as the driver
    would (``on_success``, ``on_failure`` or ``on_cancel``), whatever ended the block. One slot
    object serves one block at a time.
    """

    __slots__ = ("_bulkhead", "_held")

    def __init__(self, bulkhead: Bulkhead) -> None:
        self._bulkhead = bulkhead
        self._held = False

    def _link(self) -> _BulkheadStep:
        return cast("_BulkheadStep", self._bulkhead._pipeline.strategies[0])

    def _admit(self, ctx: ExecutionContext) -> _Queued | None:
        if self._held:
            msg = "a Bulkhead.slot() serves one block at a time; call slot() again"
            raise RuntimeError(msg)
        return self._link().admit(ctx)

    def _leave(self, ctx: ExecutionContext, exc: BaseException | None) -> None:
        self._held = False
        link = self._link()
        if exc is None:
            link.on_success(ctx, None, None)
        elif isinstance(exc, Exception):
            link.on_failure(ctx, None, exc)
        else:
            link.on_cancel(ctx, None, running=True)

    async def __aenter__(self) -> _BulkheadSlot:
        queued = self._admit(_IN_TASK)
        if queued is not None:
            await queued.wait()
        self._held = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        self._leave(_IN_TASK, exc)

    def __enter__(self) -> _BulkheadSlot:
        queued = self._admit(_IN_THREAD)
        if queued is not None:
            queued.wait_sync()
        self._held = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._leave(_IN_THREAD, exc)
