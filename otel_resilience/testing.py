"""Helpers for testing code that uses otel_resilience.

* :class:`FakeClock`: a controllable clock; inject it as ``clock=`` so that breaker timeouts,
  backoffs, rate limiter waits and hedge delays pass instantly, with no real sleeping.
* :class:`EventRecorder`: a telemetry listener that keeps every reported event, for assertions.
* :class:`AttemptRecorder`: a step that records the attempt number of every run it sees, to
  place in a pipeline (``ExtraStrategy``, ``PipelineBuilder.add``) and assert what ran through it.
* :func:`fresh_defaults`: a new process-wide manager and alert system for a block (a test), so
  that a breaker a ``@resilient`` function opened in one test does not reject the next test's
  calls, nor a cooldown of the alerts silence its alerts; given a ``clock``, the block's
  ``@resilient`` functions, the retries given no clock (``@retry``, ``retry_sync``,
  ``retry_async``), the retry budgets given none and the block's alert system run on it.

What a fake clock does not drive:

* **It is no event loop on fake time.** The async sleeps of one event loop overlap as real ones
  do: a sleeping task waits (yielding to its loop) until no other task of that loop sleeps on
  the clock to an earlier time, then the time moves on to its wake-up time. So tasks that sleep
  side by side (an attempt and a hedge's delay) end at the time the longest asked for, not at
  the sum, and a sleep cancelled before its turn moves no time. A sleep whose time has come
  (``sleep(0)``) ends first, but holds the later ones back a few loop turns only: a task polling
  with ``sleep(0)`` lets them end as on a real loop. A sleeper never wakes before its
  time. Work that is no sleep on the clock (a task's first steps, a few loop turns of
  computation) is not waited for: a task started as the time moved (a hedge a failure starts)
  may run only after another sleep has moved the time on (the next hedge's delay), so assert the
  order in which things happen, not the fake time of a step taken between two sleeps. A sync
  sleep (``sleep_sync``) moves the time at once: sleeps of threads side by side add
  up, each moving the time on from where the other left it. Tasks of one test that must start or
  end in a given order wait on events of their own, not on the clock.
* **An async deadline fires in real time.** A policy's ``timeout``, ``TimeoutHandler.with_timeout``,
  ``fail_after``, ``move_on_after`` and a retry's ``attempt_timeout`` set their deadline on the
  fake clock (what ``current_deadline`` and ``time_left`` read, what a retry, a hedge or a rate
  limiter checks before it waits: a backoff or a wait that would end past it is not started),
  but the cancellation that ends the block is armed on the event loop's own clock: a fake sleep
  past the deadline does not expire it, and the timer fires after the timeout's real seconds. To
  test an async timeout without waiting, give it a short one (this module has no event loop on
  fake time). A sync deadline is checked on the fake clock when the call returns (a late result
  is a timeout, whatever real time it took), so it is driven by fake sleeps and ``advance``.
* **A bulkhead's queue timeout is not on it**: a queued call waits for a slot on its thread's
  lock or its event loop, in real time (its ``BulkheadConfig.timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final, ParamSpec, TypeVar, cast

from otel_resilience.engine.clock import SYSTEM_CLOCK, Clock, check_clock
from otel_resilience.engine.events import HUB, EventArgs, EventKind, TelemetryHub, TelemetrySource
from otel_resilience.engine.protecting import is_async_callable, makes_iterator
from otel_resilience.engine.step import Step
from otel_resilience.engine.validation import check_number, fail
from otel_resilience.manager.decorator import new_default_manager, replace_default_manager
from otel_resilience.manager.watch import stop_watches
from otel_resilience.patterns.alerts import close_process_wide

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from otel_resilience.engine.context import ExecutionContext
    from otel_resilience.manager import ResilienceManager

__all__ = ["AttemptRecorder", "EventRecorder", "FakeClock", "fresh_defaults"]

P = ParamSpec("P")
R = TypeVar("R")

_SETTLE: Final = 8
"""Loop iterations an async sleep waits, once the time moved, before it moves the time on: what
the earlier sleep woke (a task ending, the callbacks of its end, the task that awaited it and
cancels the rest) runs first, as it would before a later timer of a real loop."""


class AttemptRecorder(Step):
    """A step that admits every run and records its attempt number (``ctx.attempt``).

    Like any step, an instance serves one pipeline. Placed inside a retry, it sees every
    attempt::

        >>> from otel_resilience import Retry, RetryPolicy
        >>> from otel_resilience.engine import PipelineBuilder
        >>> answers = iter([ConnectionError("refused"), ConnectionError("refused"), "ok"])
        >>> def fetch():
        ...     answer = next(answers)
        ...     if isinstance(answer, Exception):
        ...         raise answer
        ...     return answer
        >>> clock = FakeClock()
        >>> retry = Retry("inventory", RetryPolicy(max_attempts=3), clock=clock)
        >>> recorder = AttemptRecorder()
        >>> builder = PipelineBuilder("inventory", clock=clock).add(retry.as_strategy("inventory"))
        >>> pipeline = builder.add(recorder).build()
        >>> pipeline.execute_sync(fetch)
        'ok'
        >>> recorder.seen
        [1, 2, 3]

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

    ``sleep_sync`` advances the time by the requested amount at once; ``sleep`` yields to the
    event loop, then, once no other task of that loop sleeps on the clock to an earlier time,
    advances the time to its own wake-up time (sleeps of tasks side by side overlap: see the
    module's notes). Both record the requested amount in :attr:`sleeps` when called. They
    take what the real clock's sleeps take: a negative ``sleep`` passes no time (as
    ``asyncio.sleep``), a negative ``sleep_sync`` is a ``ValueError`` (as ``time.sleep``). The
    time stays finite: a move that is not finite, or that would take the time past the largest
    float, is refused (``ValueError``) and moves nothing. See the module's documentation for
    what a fake clock does not drive (an async deadline's cancellation, a bulkhead's queue).

    A backoff takes no real time, and a breaker's open timeout passes with :meth:`advance`::

        >>> from otel_resilience import CircuitBreaker, CircuitBreakerConfig, RetryPolicy, retry_sync
        >>> answers = iter([ConnectionError("refused"), ConnectionError("refused"), "ok"])
        >>> def fetch():
        ...     answer = next(answers)
        ...     if isinstance(answer, Exception):
        ...         raise answer
        ...     return answer
        >>> clock = FakeClock()
        >>> policy = RetryPolicy(max_attempts=3, initial_delay=1.0, multiplier=2.0, jitter="none")
        >>> retry_sync(fetch, policy=policy, clock=clock)
        'ok'
        >>> clock.sleeps, clock.now()
        ([1.0, 2.0], 3.0)
        >>> config = CircuitBreakerConfig(failure_threshold=1, timeout=30.0)
        >>> breaker = CircuitBreaker("db", config, clock=clock)
        >>> def refused():
        ...     raise ConnectionError("refused")
        >>> try:
        ...     breaker.call_sync(refused)
        ... except ConnectionError:
        ...     breaker.get_stats()["state"]
        'open'
        >>> clock.advance(30.0)
        >>> breaker.call_sync(lambda: "up")
        'up'

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

    __slots__ = ("_lock", "_now", "_pending", "sleeps")

    def __init__(self, start: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._now = check_number("FakeClock", "start", start)
        self._pending: dict[object, tuple[float, asyncio.AbstractEventLoop]] = {}
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the current fake time."""
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r}, sleeps={len(self.sleeps)})"

    def __getstate__(self) -> dict[str, object]:
        """Copy and pickle as a clock of its own: the same time and sleeps, its own lock and record.

        A copy (``copy.copy``, ``copy.deepcopy``, a pickle round trip, as of a config whose retry
        budget runs on this clock) moves on its own: its moves change neither this clock's time
        nor its :attr:`sleeps`. A subclass's own attributes are copied with them.
        """
        with self._lock:  # the time and the record of one moment
            state = dict(getattr(self, "__dict__", {}))
            for name in _subclass_slots(type(self)):
                if hasattr(self, name):  # a slot never set stays unset on the copy
                    state[name] = getattr(self, name)
            state.update(_now=self._now, sleeps=list(self.sleeps))
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a copied or unpickled clock (:meth:`__getstate__`), with a lock of its own."""
        self._lock = threading.Lock()
        self._pending = {}  # no task sleeps on the copy
        for name, value in state.items():
            setattr(self, name, value)

    def advance(self, seconds: float) -> None:
        """Move the time forward by ``seconds``.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or not finite, or would take the time past
                the largest float.
        """
        self._move("FakeClock.advance", seconds, negative="refused", record=False)

    async def sleep(self, seconds: float) -> None:
        """Record ``seconds``; wake ``seconds`` later (a negative one: none), after the loop's earlier sleeps.

        It yields to the event loop at least once; it wakes, moving the time on to its wake-up
        time, when the time is there or no other task of this loop sleeps on the clock to an
        earlier time (those wake first; one whose time has come, a few loop turns at most).
        Cancelled before, it moves no time.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is not finite, or would take the time past the largest float.
        """
        wake = self._move("FakeClock.sleep", seconds, negative="none", record=True, at_once=False)
        loop, token = asyncio.get_running_loop(), object()
        pending = self._pending
        with self._lock:
            pending[token] = (wake, loop)
            seen, quiet = self._now, 0
        try:
            while True:
                await asyncio.sleep(0)  # the tasks this one runs beside start their sleeps meanwhile
                with self._lock:
                    now = self._now
                    if now != seen:  # an earlier sleep woke: what it wakes runs before time moves on
                        seen, quiet = now, -_SETTLE
                    else:
                        quiet += 1
                    if wake <= now or (quiet > 0 and self._turn_locked(wake, loop, quiet)):
                        self._now = max(now, wake)
                        return
        finally:
            with self._lock:
                del pending[token]

    def _turn_locked(self, wake: float, loop: asyncio.AbstractEventLoop, quiet: int) -> bool:
        """Whether a sleep of ``loop`` to ``wake``, the time still for ``quiet`` turns, may move it there.

        Not while another sleep of the loop waits for an earlier time. A sleep whose time has come
        (``sleep(0)``) ends at its next turn: it holds the later ones back for :data:`_SETTLE`
        turns, so that a sleep(0) ends before the time moves on, not longer (a task polling with
        sleep(0), one after the other, would hold them back for ever).
        """
        now, due = self._now, False
        for other, its_loop in self._pending.values():
            if its_loop is loop and other < wake:
                if other > now:
                    return False
                due = True
        return not due or quiet > _SETTLE

    def sleep_sync(self, seconds: float) -> None:
        """Record ``seconds`` and advance the time by it, without blocking.

        Raises:
            TypeError: ``seconds`` is not a number.
            ValueError: ``seconds`` is negative or not finite, or would take the time past the
                largest float.
        """
        self._move("FakeClock.sleep_sync", seconds, negative="refused", record=True)

    def _move(
        self, owner: str, seconds: object, *, negative: str, record: bool, at_once: bool = True
    ) -> float:
        """The one rule of every move: check ``seconds``, then advance the time (and record it).

        ``negative``: ``"refused"`` (a ``ValueError``) or ``"none"`` (no time passes).
        ``at_once``: advance the time now; else only return the time to advance it to (an async
        sleep moves it when its turn comes).

        Returns:
            The time the move ends at.
        """
        number = check_number(owner, "seconds", seconds, minimum=0.0 if negative == "refused" else None)
        with self._lock:
            now = self._now + max(number, 0.0)
            if math.isinf(now):
                raise fail(
                    owner, "seconds", f"small enough to keep the time finite (now {self._now!r})", seconds
                )
            if at_once:
                self._now = now
            if record:
                self.sleeps.append(number)
        return now


class EventRecorder:
    """A :class:`~otel_resilience.engine.events.TelemetryListener` that records every event.

    Use it as a context manager to register it on the hub for the duration of a block (it may
    be entered again inside its own block: it leaves the hub when the outermost block ends).
    ``recorder.events.clear()`` starts it afresh::

        >>> from otel_resilience import RetryPolicy, retry_sync
        >>> from otel_resilience.engine import Event
        >>> answers = iter([ConnectionError("refused"), "ok"])
        >>> def fetch():
        ...     answer = next(answers)
        ...     if isinstance(answer, Exception):
        ...         raise answer
        ...     return answer
        >>> with EventRecorder() as recorder:
        ...     retry_sync(fetch, policy=RetryPolicy(initial_delay=2.0, jitter="none"), clock=FakeClock())
        'ok'
        >>> [(args.attempt, args.delay, args.error_type) for args in recorder.of(Event.RETRY_SCHEDULED)]
        [(1, 2.0, 'ConnectionError')]

    Args:
        hub: The hub to listen on. Default: the process-wide one.

    Raises:
        TypeError: ``hub`` is not a :class:`~otel_resilience.engine.events.TelemetryHub`.

    Attributes:
        events: ``(source, event, args)`` tuples in the order they reached the recorder. An
            event that a listener reports while it handles another reaches it before that one
            when that listener was registered first, unless the listener derives events
            (``derives_events``, as an alert system does: its ``ALERT_RAISED`` for a breaker's
            ``STATE_CHANGED`` reaches the recorder after that one, whenever it was registered).
    """

    def __init__(self, hub: TelemetryHub = HUB) -> None:
        if not isinstance(hub, TelemetryHub):
            raise fail("EventRecorder", "hub", "a TelemetryHub", hub, kind=TypeError)
        self._hub = hub
        self._lock = threading.Lock()  # the events'; never held while the hub is asked anything
        self._entering = threading.Lock()  # the blocks': the hub may report to on_event meanwhile
        self._entered = 0
        self.events: list[tuple[TelemetrySource, EventKind, EventArgs]] = []

    def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
        """Record one event."""
        with self._lock:
            self.events.append((source, event, args))

    def of(self, event: EventKind) -> list[EventArgs]:
        """Return the args of every recorded ``event``, in order.

        Raises:
            TypeError: ``event`` is not an :class:`~otel_resilience.engine.events.EventKind`
                (an ``Event`` member, not its value).
        """
        _check_kind("EventRecorder.of", event)
        with self._lock:
            return [args for _, ev, args in self.events if ev is event]

    def sources(self, event: EventKind) -> list[TelemetrySource]:
        """Return the source of every recorded ``event``, in order.

        Raises:
            TypeError: ``event`` is not an :class:`~otel_resilience.engine.events.EventKind`.
        """
        _check_kind("EventRecorder.sources", event)
        with self._lock:
            return [source for source, ev, _ in self.events if ev is event]

    def __enter__(self) -> EventRecorder:
        with self._entering:
            if not self._entered:
                self._hub.add_listener(self)
            self._entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._entering:
            if self._entered:
                self._entered -= 1
                if not self._entered:
                    self._hub.remove_listener(self)


def fresh_defaults(*, clock: Clock = SYSTEM_CLOCK) -> _FreshDefaults:
    """Run the block with a new process-wide manager and alert system; then put the manager before back.

    What a test suite shares through the process, one test with the next: the manager
    :func:`~otel_resilience.get_resilience_manager` returns, in which every ``@resilient``
    function given no ``manager`` keeps its breaker, bulkhead, rate limiter and counts (and the
    HTTP integrations and the FastAPI dependency given none keep their policy), and the
    process-wide alert system (its cooldowns, history and counts). In the block, the manager is
    a new one, made as at start-up (the policies ``OTEL_RESILIENCE_CONFIG`` names applied) on
    ``clock``, and the alert system is a new one: the one before is closed as the block starts
    and the block's as it ends (the :func:`~otel_resilience.subscribe` subscriptions follow
    them). After the block, the manager before is the process-wide one again (none: one is made
    at the next use). A ``@resilient`` function runs in the manager in place at its call, bound
    before the block or in it; a call running as the block starts or ends ends in the manager
    it started in. The watches of the block's manager (``manager.watch(path)``, made by the
    test's start-up code) are stopped as it ends. Blocks nest. In a ``conftest.py``::

        @pytest.fixture(autouse=True)
        def _fresh_resilience():
            with fresh_defaults() as manager:
                yield manager

    It leaves alone what the test's own code holds: a pattern or a manager made at import (a
    module's ``CircuitBreaker("db")``, a handle of ``get_resilience_manager().policy(...)``), an
    alert system of the application, and the telemetry listener (give each test its providers
    with :func:`~otel_resilience.telemetry.instrumented`).

    It decorates a test too (``@fresh_defaults(clock=...)``): each call of the function, sync or
    async, runs in a block of its own (an async one's, while its coroutine runs).

    A two-test suite, as a test runner would run it::

        >>> from otel_resilience import CircuitBreakerConfig, CircuitOpenError, ResilienceConfig, resilient
        >>> @resilient(ResilienceConfig(circuit_breaker=CircuitBreakerConfig(failure_threshold=1)))
        ... def charge(down):
        ...     if down:
        ...         raise ConnectionError("card network down")
        ...     return "charged"
        >>> with fresh_defaults():  # test 1: the outage opens the breaker
        ...     try:
        ...         charge(down=True)
        ...     except ConnectionError:
        ...         pass
        ...     try:
        ...         charge(down=False)
        ...     except CircuitOpenError:
        ...         print("rejected")
        rejected
        >>> with fresh_defaults():  # test 2: a manager of its own, its breaker closed
        ...     charge(down=False)
        'charged'

    Args:
        clock: The clock of the block's manager and of every pattern it creates (a
            :class:`FakeClock` lets a ``@resilient`` function's breaker timeout pass with
            ``advance``), and the process-wide clock of the block: that of every retry given no
            clock of its own (a :func:`~otel_resilience.retry` function, decorated before the
            block or in it; ``retry_sync`` and ``retry_async`` called with no ``clock``; not a
            :class:`~otel_resilience.Retry` constructed, which keeps the clock it is given, the
            system clock by default), whose backoffs a :class:`FakeClock` passes at once,
            recorded in its ``sleeps``; a call running as the block starts or ends ends on the
            clock it started on. So is every
            :class:`~otel_resilience.RetryBudget` given no clock (one made at import, in a
            module-level policy): ``advance`` refills it, and a block on another clock than the
            one before starts its window afresh (a new :class:`FakeClock` per test: each test
            finds it full); on the same clock its window goes on, and its ``denied`` counts
            since it was made, whatever the blocks. And the block's alert system times its
            cooldowns and stamps its alerts on it: once ``advance`` passed a
            ``bulkhead_cooldown``, a full bulkhead alerts again. Default: the system clock.

    Returns:
        The block: ``with`` it to get the block's process-wide manager, or decorate a function.

    Raises:
        TypeError: ``clock`` is not a clock (nothing is changed); a generator function, sync or
            async, or an object whose ``__call__`` is one, decorated (its block would end before
            its body ran: enter one in its body).
        otel_resilience.config.ConfigError: ``OTEL_RESILIENCE_CONFIG`` names a file that cannot
            be loaded (the manager before stays).
    """
    return _FreshDefaults(check_clock("fresh_defaults", clock))


class _FreshDefaults:
    """The block :func:`fresh_defaults` returns: a context manager entered once at a time, and a decorator."""

    __slots__ = ("_clock", "_entered", "_lock")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._entered: contextlib.AbstractContextManager[ResilienceManager] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ResilienceManager:
        block = _block(self._clock)
        with self._lock:
            if self._entered is not None:
                msg = "this fresh_defaults() block is entered already: call fresh_defaults() for another"
                raise RuntimeError(msg)
            self._entered = block
        try:
            return block.__enter__()
        except BaseException:
            self._entered = None
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        block, self._entered = self._entered, None
        if block is not None:
            block.__exit__(kind, error, traceback)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        """Run each call of ``function`` in a block of its own; an async function's while its coroutine runs.

        Raises:
            TypeError: ``function`` is a generator function, sync or async, or an object whose
                ``__call__`` is one.
        """
        if makes_iterator(function):
            rule = "a function or an async function, not a generator function (enter the block in its body)"
            raise fail("fresh_defaults", "function", rule, function, kind=TypeError)
        clock = self._clock
        if is_async_callable(function):  # as every decorator decides: an object's async __call__ too

            async def run_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                with _block(clock):
                    return await function(*args, **kwargs)

            return cast("Callable[P, R]", functools.wraps(function)(run_async))

        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with _block(clock):
                return function(*args, **kwargs)

        return functools.wraps(function)(run)


@contextlib.contextmanager
def _block(clock: Clock) -> Iterator[ResilienceManager]:
    """One block of :func:`fresh_defaults` (its rules are documented there)."""
    close_process_wide()  # before the manager is made: it reports the alert system it finds
    manager = new_default_manager(clock)
    before = replace_default_manager(manager)
    try:
        yield manager
    finally:
        replace_default_manager(before)
        stop_watches(manager)
        close_process_wide()


def _subclass_slots(cls: type) -> list[str]:
    """The attribute names of the slots a subclass of :class:`FakeClock` and its mixins declare (mangled).

    The clock's own slots are not among them: its copy gets a lock and sleepers of its own.
    """
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is FakeClock:
            continue
        declared = klass.__dict__.get("__slots__", ())
        for name in (declared,) if isinstance(declared, str) else declared:
            if name in ("__dict__", "__weakref__"):
                continue
            private = name.startswith("__") and not name.endswith("__")
            names.append(f"_{klass.__name__.lstrip('_')}{name}" if private else name)
    return names


def _check_kind(owner: str, event: object) -> None:
    """Refuse a look-up by anything but an event kind (a string would find nothing, silently)."""
    if not isinstance(event, EventKind):
        raise fail(
            owner,
            "event",
            "an EventKind (an Event member, e.g. Event.RETRY_SCHEDULED)",
            event,
            kind=TypeError,
        )
