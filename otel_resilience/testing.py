"""Helpers for testing code that uses otel_resilience.

* :class:`FakeClock`: a controllable clock; inject it as ``clock=`` so that breaker timeouts,
  backoffs, hedge delays and rate limiter waits pass instantly, in order, with no real sleeping.
  Deadlines (a policy's ``timeout``, ``RetryPolicy.attempt_timeout``, ``TimeoutHandler``,
  ``fail_after``) are recorded on it, and what the engine decides from the time left reads the
  fake time, sync or async (a retry whose backoff would end past the deadline gives up, a rate
  limiter refuses a wait past it). Ending a block that runs past its deadline differs:

  - sync: a block that returns after the fake deadline raises ``OperationTimeoutError`` (a
    thread cannot be cut: it is checked as the block ends), and one that returns before it does
    not, whatever real time either took;
  - async: the block is cancelled by a timer of its event loop, which runs on the loop's own
    time (real time): it fires after the timeout's real seconds whatever the fake clock says,
    and a block that moves the fake clock past the deadline (``await clock.sleep(...)``) is not
    cut. To test an async timeout without waiting, give it a short one, or run the test on an
    event loop whose ``time()`` you advance yourself (a subclass of
    ``asyncio.SelectorEventLoop``), with a clock that reads that time. This module has no such
    loop.

  A bulkhead's queue timeout is not on it either: a queued call waits for a slot on its
  thread's lock or its event loop, in real time (its ``BulkheadConfig.timeout``).
* :class:`EventRecorder`: a telemetry listener that keeps every reported event, for assertions.
* :class:`AttemptRecorder`: a step that records the attempt number of every run it sees, to
  place in a pipeline (``ExtraStrategy``, ``PipelineBuilder.add``) and assert what ran through it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from otel_resilience.engine.events import HUB, EventArgs, EventKind, TelemetryHub, TelemetrySource
from otel_resilience.engine.step import Step
from otel_resilience.engine.validation import check_number

if TYPE_CHECKING:
    from otel_resilience.engine.context import ExecutionContext

__all__ = ["AttemptRecorder", "EventRecorder", "FakeClock"]


class AttemptRecorder(Step):
    """A step that admits every run and records its attempt number (``ctx.attempt``).

    Attributes:
        seen: The attempt number of every run that reached the step, in order.
    """

    __slots__ = ("seen",)

    kind: ClassVar[str] = "attempt_recorder"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        """Record the run's attempt number; admit it."""
        self.seen.append(ctx.attempt)
        return None


class FakeClock:
    """A monotonic clock that only moves when told to (or when something sleeps on it).

    ``sleep``/``sleep_sync`` advance the time by the requested amount at once and record it in
    :attr:`sleeps`; ``sleep`` also yields to the event loop once, as a real sleep would.

    An async timeout on it is still cancelled by its event loop's timer, in the loop's own (real)
    time: see the module's notes.

    Args:
        start: The initial time in seconds (a finite number).

    Raises:
        TypeError: ``start`` is not a number (a ``bool`` is not one).
        ValueError: ``start`` is not finite.

    Attributes:
        sleeps: Every duration slept, in order.
    """

    __slots__ = ("_lock", "_now", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._now = check_number("FakeClock", "start", start)
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeps={len(self.sleeps)})"

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds``.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or not finite.
        """
        seconds = check_number("FakeClock.advance", "seconds", seconds, minimum=0.0)
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds``, advance the time by it, and yield to the loop once."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)
        await asyncio.sleep(0)

    def sleep_sync(self, seconds: float) -> None:
        """Record ``seconds`` and advance the time by it, without blocking."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(0.0, seconds)


class EventRecorder:
    """A :class:`~otel_resilience.engine.events.TelemetryListener` that records every event.

    Use it as a context manager to register it on the hub for the duration of a block::

        with EventRecorder() as recorder:
            ...
        assert recorder.of(Event.RETRY_SCHEDULED)

    Attributes:
        events: ``(source, event, args)`` tuples in the order they were reported.
    """

    def __init__(self, hub: TelemetryHub = HUB) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self.events: list[tuple[TelemetrySource, EventKind, EventArgs]] = []

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        """Record one event."""
        with self._lock:
            self.events.append((source, event, args))

    def of(self, event: EventKind) -> list[EventArgs]:
        """Return the args of every recorded ``event``, in order."""
        with self._lock:
            return [args for _, ev, args in self.events if ev is event]

    def sources(self, event: EventKind) -> list[TelemetrySource]:
        """Return the source of every recorded ``event``, in order."""
        with self._lock:
            return [source for source, ev, _ in self.events if ev is event]

    def __enter__(self) -> EventRecorder:
        self._hub.add_listener(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hub.remove_listener(self)
