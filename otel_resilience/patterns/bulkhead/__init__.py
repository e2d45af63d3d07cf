"""Bulkhead: a concurrency limit with a bounded FIFO wait queue, shared by asyncio and threads.

At most ``max_concurrent`` calls run at once; up to ``max_waiting`` more wait in a queue for at
most ``timeout`` seconds each; any further call is rejected at once with
:class:`~otel_resilience.errors.BulkheadFullError`. A call that waited too long gets
:class:`~otel_resilience.errors.BulkheadTimeoutError` (a subclass, ``reason == "queue_timeout"``).

::

    bulkhead = Bulkhead("analysis_pool", BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0))
    result = await bulkhead.execute(analyze_document, doc)
    result = bulkhead.execute_sync(parse_document, raw)      # from a worker thread

Design:

* **One core, two drivers.** The slots, the queue and the counters live in one sans-I/O core
  (``_core``) guarded by one short ``threading.Lock``, never held while the protected function
  runs and never across an ``await``. The link (``_link``) is a
  :class:`~otel_resilience.engine.step.Step`: ``admit`` takes a slot, queues the call or rejects
  it, and the hook that ends the run gives the slot back. The engine's async driver
  (:meth:`Bulkhead.execute`) and sync driver (:meth:`Bulkhead.execute_sync`) share the core, so a
  service may use the same bulkhead from its event loop and from worker threads (or from
  several loops) and the limit holds across all of them. :meth:`Bulkhead.slot` enters through
  the same ``admit`` and leaves through the same hooks.
* **Uncontended cost:** one lock acquisition to take a slot and one to give it back; nothing is
  allocated. A call that can find no place at all (every slot busy, no queue allowed and none
  ever made) is rejected without the lock: shedding load costs as little as it can.
* **FIFO with direct hand-off.** A freed slot is handed to the oldest waiter while the lock is
  held: the slot never becomes free in between, so a new arrival cannot overtake a waiter.
  The waiters are the engine's (:mod:`otel_resilience.engine.waiting`): async waiters are loop
  futures, woken with ``loop.call_soon_threadsafe`` when the slot is freed on another thread;
  sync waiters block on a lock of their own.
* **No slot is ever leaked.** A cancelled waiter leaves the queue; a waiter cancelled just
  after it was handed a slot passes the slot on; a running call gives its slot back in the
  hook the driver calls whether it returned, raised or was cancelled (exactly one of them). A
  slot handed to a waiter whose event loop has been closed is passed on too; one handed to a
  waiter that an interrupt in the freeing thread left unwoken is taken at the waiter's queue
  timeout at the latest (:meth:`~otel_resilience.engine.waiting.Waiter.fire`). A task its closed
  loop left pending, which the garbage collector frees on whichever thread allocates (maybe one
  that holds the lock), never blocks on the lock to give its slot back.
* **A stopped loop holds no slot.** A freed slot skips a waiter whose event loop is not running
  (stopped, not closed): the waiter keeps its place and is nudged, so that it looks again (and
  takes a free slot, or waits on) as soon as its loop runs. An async waiter *claims* the slot it
  was offered when its task resumes; a slot offered to a waiter whose loop stopped before that
  is taken back by the next caller that finds every slot busy, or by the next waiter whose queue
  timeout comes (which takes it, if it is the oldest that can), and the waiter goes back to the
  front of the queue. While its loop stays stopped, its queue timeout cannot fire either: it
  ends when the loop runs again. Its place is not held meanwhile for a caller that would be
  refused for a full queue: a waiter past its timeout then leaves the queue, counted
  ``timed_out``, and raises its timeout when its loop runs again.
* **Queue timeouts.** Async waiters give up on their loop's shared timer
  (:mod:`otel_resilience.engine.timer`, real loop time), as timeout scopes do; sync waiters on
  their lock's wait timeout. A sync waiter also gives up at the effective deadline of an
  enclosing timeout scope (:func:`~otel_resilience.engine.context.current_deadline`), because a
  thread cannot be interrupted later; an async waiter is cancelled by its scope instead. Either
  way the wait ends as that scope's timeout (``OperationTimeoutError``), not as a queue
  timeout: it leaves the queue as a cancelled call (``cancelled``), not a ``timed_out`` one.
* **Telemetry:** each rejection reports ``Event.CALL_REJECTED`` with
  ``CallRejected(reason="bulkhead_full")`` or ``CallRejected(reason="queue_timeout")``. A queue
  timeout is counted when its timer fires and reported when the task resumes, so a caller
  cancelled after the timer fired, before its task resumed, is still one ``timed_out`` call and
  one event (it sees ``CancelledError``); one whose cancellation was requested before the timer
  fired (by its caller, or by an enclosing deadline due first) is a ``cancelled`` call, with no
  event (:meth:`~otel_resilience.engine.waiting.Waiter.cancel_requested`). Counts
  that move on every call are integers in :class:`BulkheadStats` (the rejections made without
  the lock an exact lock-free counter), read by observable instruments through
  :data:`~otel_resilience.engine.registry.BULKHEADS`.
"""

from __future__ import annotations

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock
from otel_resilience.engine.events import StrategyTelemetry
from otel_resilience.engine.facade import Held, Pattern, verb
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.registry import BULKHEADS
from otel_resilience.patterns.bulkhead._config import (
    _DEFAULT_CONFIG,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_WAITING,
    DEFAULT_TIMEOUT,
    BulkheadConfig,
)
from otel_resilience.patterns.bulkhead._core import BulkheadStats, BulkheadStatsDict, _BulkheadCore
from otel_resilience.patterns.bulkhead._link import KIND as _KIND
from otel_resilience.patterns.bulkhead._link import _BulkheadStep

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_WAITING",
    "DEFAULT_TIMEOUT",
    "Bulkhead",
    "BulkheadConfig",
    "BulkheadStats",
    "BulkheadStatsDict",
]


class Bulkhead(Pattern[BulkheadConfig, _BulkheadStep], kind=_KIND):
    """Limits how many calls run at once, with a bounded FIFO queue for the rest.

    One bulkhead may be used from the event loop (:meth:`execute`), from threads
    (:meth:`execute_sync`), as a decorator (:meth:`protect`) and inside pipelines
    (:meth:`as_strategy`) at the same time: all of them share the same slots.

    Args:
        name: The bulkhead's name (bounded: it appears in telemetry).
        config: Limits and queue timeout; ``None`` for :class:`BulkheadConfig` defaults.
        clock: The clock used for execution durations and to read enclosing deadlines.

    Raises:
        TypeError: If ``name`` is not a ``str`` or ``config`` not a :class:`BulkheadConfig`.
        ValueError: If ``name`` is empty.
    """

    __slots__ = ("_core",)

    def __init__(
        self, name: str, config: BulkheadConfig | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        super().__init__(name, config, clock, default=_DEFAULT_CONFIG)
        self._core = _BulkheadCore(self._config.max_concurrent, self._config.max_waiting)
        BULKHEADS.register(self)

    def _link(self, telemetry: StrategyTelemetry) -> _BulkheadStep:
        return _BulkheadStep(self, telemetry)

    stats = ReadOnly[BulkheadStats]("_core", "The live counters (no copy; read them from observable gauges).")

    def get_stats(self) -> BulkheadStatsDict:
        """Return a consistent snapshot of the counters.

        Returns:
            ``name``, ``active``, ``waiting``, ``max_concurrent``, ``max_waiting``, ``total``,
            ``completed``, ``rejected`` (queue full), ``timed_out`` (queue wait expired),
            ``cancelled``, ``peak_active``, ``peak_waiting`` and ``available``; see
            :class:`BulkheadStats`.
        """
        return self._core.snapshot(self.name)

    execute = verb(
        Pattern.run,
        "Run ``await fn(*args, **kwargs)`` in a slot, waiting in the queue if every slot is busy.",
        returns="What ``fn`` returns.",
        raises=(
            "BulkheadFullError: If every slot is busy and the queue is full (``fn`` is not called).",
            (
                "BulkheadTimeoutError: If no slot became free within ``config.timeout`` (an enclosing "
                "timeout scope whose deadline comes first raises its own ``OperationTimeoutError``)."
            ),
            "Exception: Whatever ``fn`` raises, unchanged.",
        ),
    )

    execute_sync = verb(
        Pattern.run_sync,
        "Run ``fn(*args, **kwargs)`` in a slot, blocking this thread while it waits in the queue.",
        returns="What ``fn`` returns.",
        raises=(
            "BulkheadFullError: As :meth:`execute`.",
            "BulkheadTimeoutError: As :meth:`execute`.",
            "Exception: Whatever ``fn`` raises, unchanged.",
        ),
    )

    def _reconfigure(self, config: BulkheadConfig) -> None:
        """Take ``config`` now, keeping the calls that run and wait (:meth:`_BulkheadCore.resize`).

        For an owner that rebuilds every link of this bulkhead afterwards (a manager policy):
        the queue ``timeout`` of links built before (the calls in flight) is theirs; the limits
        are the bulkhead's, changed at once.
        """
        self._core.resize(config.max_concurrent, config.max_waiting)
        self._configured(config)

    def slot(self) -> Guard:
        """Return a context manager that holds one slot of this bulkhead around a block.

        ``async with bulkhead.slot(): ...`` in coroutines, ``with bulkhead.slot(): ...`` in
        threads; use it where the protected work is not one function call. Entering takes a slot
        as a call does (waiting in the FIFO queue, or raising
        :class:`~otel_resilience.errors.BulkheadFullError` /
        :class:`~otel_resilience.errors.BulkheadTimeoutError`); leaving gives it back, whatever
        ended the block. The block counts as an execution of the bulkhead's own pipeline, as
        :meth:`CircuitBreaker.guard`'s does (the engine's :class:`~otel_resilience.engine.guard.Guard`).

        Returns:
            A slot holder that serves one block at a time.
        """
        return Guard(self._pipeline)

    def __repr__(self) -> str:
        core = self._core
        return (
            f"Bulkhead({self.name!r}, active={core.active}/{core.max_concurrent}, "
            f"waiting={core.waiting}/{core.max_waiting})"
        )


class _HeldBulkhead(Held, Bulkhead):
    """An owned bulkhead (a keyed policy's): its own calls and ``slot()`` blocks run within its hold.

    Held from before a slot is asked for until it is given back, so the key is not evicted
    meanwhile (a new bulkhead for the key would admit calls beside it, over the limit), and a
    bulkhead the key no longer uses (evicted, or replaced by a reload) refuses them before they
    take a slot (``Pattern._hold_by``).
    """

    __slots__ = ()

    execute = Held._held_run
    execute_sync = Held._held_run_sync
    slot = Held._held_guard
