"""The public test helpers refuse bad input as the library's own classes do: naming the field."""

from __future__ import annotations

import asyncio
import copy
import doctest
import math
import pickle
import threading

import pytest

from otel_resilience import (
    AlertSystem,
    CircuitBreaker,
    CircuitBreakerConfig,
    OperationTimeoutError,
    RetryBudget,
    TimeoutHandler,
    current_deadline,
    move_on_after,
    testing,
)
from otel_resilience.engine.events import (
    AlertRaised,
    CallRejected,
    Event,
    EventArgs,
    EventKind,
    StrategyTelemetry,
    TelemetryHub,
    TelemetrySource,
)
from otel_resilience.testing import EventRecorder, FakeClock


@pytest.mark.parametrize("start", [math.nan, math.inf, -math.inf])
def test_a_fake_clock_refuses_a_start_that_is_not_finite(start: float) -> None:
    """``FakeClock(nan)`` was kept as the time: every deadline and backoff read from it then compared false."""
    with pytest.raises(ValueError, match=r"FakeClock\.start must be a finite number"):
        FakeClock(start)


@pytest.mark.parametrize("start", ["3", True, None], ids=["str", "bool", "None"])
def test_a_fake_clock_refuses_a_start_that_is_not_a_number(start: object) -> None:
    """``FakeClock("3")`` and ``FakeClock(True)`` were converted with float(); ``None`` failed inside it."""
    with pytest.raises(TypeError, match=r"FakeClock\.start must be a number"):
        FakeClock(start)  # type: ignore[arg-type]


def test_a_fake_clock_takes_any_finite_start() -> None:
    """A start of any finite number, negative included, is the clock's time."""
    assert FakeClock(-5).now() == -5.0
    assert FakeClock(1000).now() == 1000.0


@pytest.mark.parametrize("seconds", ["1", True], ids=["str", "bool"])
def test_advance_refuses_seconds_that_are_not_a_number(seconds: object) -> None:
    """``advance(True)`` moved the time by a second; ``advance("1")`` failed comparing str with int."""
    clock = FakeClock()
    with pytest.raises(TypeError, match=r"FakeClock\.advance\.seconds must be a number"):
        clock.advance(seconds)  # type: ignore[arg-type]
    assert clock.now() == 0.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_advance_refuses_negative_or_infinite_seconds(seconds: float) -> None:
    """The time only moves forward, by a finite amount."""
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"FakeClock\.advance\.seconds must be"):
        clock.advance(seconds)
    assert clock.now() == 0.0


def test_a_fake_clock_shows_its_time_in_its_repr() -> None:
    """A failed assertion on a clock shows where it stands and how often it slept."""
    clock = FakeClock(10)
    clock.sleep_sync(2.5)
    assert repr(clock) == "FakeClock(now=12.5, sleeps=1)"


_COPIES = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": lambda clock: pickle.loads(pickle.dumps(clock)),
}


@pytest.mark.parametrize("way", list(_COPIES))
def test_a_copied_fake_clock_is_a_clock_of_its_own(way: str) -> None:
    """A copy starts at the clock's time with its sleeps, and moves on its own.

    ``copy.copy`` shared the clock's lock and its list of sleeps: a copy's sleep was recorded in
    the original's list, whose time stayed where it was. ``copy.deepcopy`` and ``pickle`` failed
    on the lock (``cannot pickle '_thread.lock' object``).
    """
    clock = FakeClock(10)
    clock.sleep_sync(2.5)
    twin = _COPIES[way](clock)
    assert type(twin) is FakeClock
    assert (twin.now(), twin.sleeps) == (12.5, [2.5])
    twin.sleep_sync(1.0)
    twin.advance(4.0)
    assert (clock.now(), clock.sleeps) == (12.5, [2.5])
    assert (twin.now(), twin.sleeps) == (17.5, [2.5, 1.0])


class _NamedClock(FakeClock):
    """A user's clock: a fake clock with an attribute of its own."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


@pytest.mark.parametrize("way", list(_COPIES))
def test_a_copied_subclass_of_the_fake_clock_keeps_its_class_and_attributes(way: str) -> None:
    """A copy of a user's subclass is of that class, with its own attributes, and moves on its own."""
    clock = _NamedClock("primary")
    clock.advance(1.0)
    twin = _COPIES[way](clock)
    assert (type(twin), twin.label, twin.now()) == (_NamedClock, "primary", 1.0)
    twin.sleep_sync(2.0)
    assert (clock.now(), clock.sleeps, twin.now()) == (1.0, [], 3.0)


class _SlottedClock(FakeClock):
    """A user's clock that keeps its attributes in slots (one of them private)."""

    __slots__ = ("__secret", "label")

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label
        self.__secret = label.upper()

    def secret(self) -> str:
        return self.__secret


@pytest.mark.parametrize("way", list(_COPIES))
def test_a_copied_slotted_subclass_of_the_fake_clock_keeps_its_attributes(way: str) -> None:
    """A subclass's attributes held in slots are copied too (a copy had none: ``AttributeError``)."""
    clock = _SlottedClock("primary")
    clock.advance(1.0)
    twin = _COPIES[way](clock)
    assert (type(twin), twin.label, twin.secret(), twin.now()) == (_SlottedClock, "primary", "PRIMARY", 1.0)
    twin.sleep_sync(2.0)
    assert (clock.now(), clock.sleeps, twin.now()) == (1.0, [], 3.0)


def test_a_copied_slotted_subclass_leaves_an_unset_slot_unset() -> None:
    """A slot the clock never set stays unset on its copy (no error, no made-up value)."""
    clock = _SlottedClock.__new__(_SlottedClock)
    FakeClock.__init__(clock)
    twin = copy.copy(clock)
    assert not hasattr(twin, "label")


def test_a_retry_budget_on_a_fake_clock_can_be_deep_copied() -> None:
    """A config's retry budget on a test's clock can be deep-copied (it failed on the clock's lock)."""
    clock = FakeClock(5)
    back = copy.deepcopy(RetryBudget(ratio=0.2, window=5.0, clock=clock))
    assert (back.ratio, back.window) == (0.2, 5.0)
    assert isinstance(back.clock, FakeClock)
    assert back.clock is not clock
    assert back.clock.now() == 5.0


# -- sleeps: a number of seconds the real clock would take; the time stays finite ------------


def _sleep(clock: FakeClock, how: str, seconds: object) -> None:
    """Sleep on ``clock`` through its async (``how == "async"``) or its sync sleep."""
    if how == "async":
        asyncio.run(clock.sleep(seconds))  # type: ignore[arg-type]
    else:
        clock.sleep_sync(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("how", ["async", "sync"])
@pytest.mark.parametrize("seconds", [math.inf, math.nan], ids=["inf", "nan"])
def test_a_sleep_that_is_not_finite_is_refused_and_moves_nothing(how: str, seconds: float) -> None:
    """``sleep(inf)`` moved the time to infinity for good (every later deadline was past); ``nan`` was kept."""
    clock = FakeClock(10)
    name = "sleep" if how == "async" else "sleep_sync"
    with pytest.raises(ValueError, match=rf"FakeClock\.{name}\.seconds must be a finite number"):
        _sleep(clock, how, seconds)
    assert (clock.now(), clock.sleeps) == (10.0, [])


@pytest.mark.parametrize("how", ["async", "sync"])
@pytest.mark.parametrize("seconds", ["1", True, None], ids=["str", "bool", "None"])
def test_a_sleep_refuses_seconds_that_are_not_a_number(how: str, seconds: object) -> None:
    """``sleep_sync(True)`` slept a second; ``sleep_sync("1")`` was recorded, then failed comparing."""
    clock = FakeClock()
    name = "sleep" if how == "async" else "sleep_sync"
    with pytest.raises(TypeError, match=rf"FakeClock\.{name}\.seconds must be a number"):
        _sleep(clock, how, seconds)
    assert (clock.now(), clock.sleeps) == (0.0, [])


def test_a_sync_sleep_of_a_negative_time_is_refused_as_time_sleep_refuses_it() -> None:
    """A negative ``sleep_sync`` passed in tests, where the real clock's ``time.sleep`` raises ``ValueError``."""
    clock = FakeClock()
    with pytest.raises(ValueError, match=r"FakeClock\.sleep_sync\.seconds must be >= 0, got -0\.5"):
        clock.sleep_sync(-0.5)
    assert (clock.now(), clock.sleeps) == (0.0, [])


def test_an_async_sleep_of_a_negative_time_passes_no_time_as_asyncio_sleep() -> None:
    """``asyncio.sleep`` takes a negative delay as none: so does the fake clock's ``sleep``."""
    clock = FakeClock(3)
    asyncio.run(clock.sleep(-0.5))
    assert (clock.now(), clock.sleeps) == (3.0, [-0.5])


@pytest.mark.parametrize("how", ["advance", "async", "sync"])
def test_the_time_stays_finite_however_far_it_is_moved(how: str) -> None:
    """Two finite moves could add up to infinity: the second is refused, the time kept."""
    clock = FakeClock(1e308)
    with pytest.raises(
        ValueError,
        match=r"FakeClock\.(advance|sleep|sleep_sync)\.seconds must be small enough to keep the time finite",
    ):
        if how == "advance":
            clock.advance(1e308)
        else:
            _sleep(clock, how, 1e308)
    assert (clock.now(), clock.sleeps) == (1e308, [])


def test_threads_that_sleep_and_advance_at_once_lose_no_time() -> None:
    """Every thread's moves count: the time is the sum of them all."""
    clock = FakeClock()
    start = threading.Barrier(4)

    def move(how: str) -> None:
        start.wait()
        for _ in range(2000):
            clock.sleep_sync(0.5) if how == "sleep" else clock.advance(0.25)

    threads = [threading.Thread(target=move, args=(how,)) for how in ("sleep", "sleep", "advance", "advance")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == 2 * 2000 * 0.5 + 2 * 2000 * 0.25
    assert len(clock.sleeps) == 4000


async def test_async_sleeps_side_by_side_overlap_as_real_ones() -> None:
    """Tasks sleeping 1, 2 and 0.5 s together end 2 s later, each at its own time, not after 3.5 s."""
    clock = FakeClock(10)
    woke: list[tuple[float, float]] = []

    async def nap(seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((seconds, clock.now()))

    await asyncio.gather(nap(1.0), nap(2.0), nap(0.5))
    assert woke == [(0.5, 10.5), (1.0, 11.0), (2.0, 12.0)]
    assert clock.now() == 12.0
    assert clock.sleeps == [1.0, 2.0, 0.5]


async def test_an_async_sleep_cancelled_before_its_turn_moves_no_time() -> None:
    """A long sleep cancelled once a shorter one beside it ended (a hedge's delay) leaves the time there."""
    clock = FakeClock()
    longer = asyncio.create_task(clock.sleep(100.0))
    await clock.sleep(1.0)
    longer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await longer
    assert clock.now() == 1.0
    assert sorted(clock.sleeps) == [1.0, 100.0]


@pytest.mark.parametrize("poll", [0.0, -1.0], ids=["zero", "negative"])
async def test_a_task_polling_with_sleeps_that_pass_no_time_holds_no_later_sleep_back(poll: float) -> None:
    """A 10 s sleep beside a task polling with ``clock.sleep(0)`` ends, at 10 s, as on a real loop.

    The poll's sleep, due at once, counted as a sleep to an earlier time: the 10 s one waited for
    it to end, and a new one began each turn (the sleep never ended; the time stayed 0).
    """
    clock = FakeClock()
    done = asyncio.Event()
    polls = 0

    async def poller() -> None:
        nonlocal polls
        while not done.is_set():
            polls += 1
            await clock.sleep(poll)

    polling = asyncio.create_task(poller())
    try:
        await asyncio.wait_for(clock.sleep(10.0), timeout=30.0)  # a hang's bound, not a timing
    finally:
        done.set()
        await polling
    assert clock.now() == 10.0
    assert polls > 0


# -- what a fake clock drives, and what it does not (the module's documentation) -------------


async def test_an_async_deadline_on_a_fake_clock_is_read_on_it_but_fires_in_real_time() -> None:
    """The deadline is the fake clock's time; a fake sleep past it does not expire an async scope."""
    clock = FakeClock(100)
    async with move_on_after(5, clock=clock) as scope:
        assert current_deadline() == 105.0
        await clock.sleep(10)
    assert not scope.expired
    assert clock.now() == 110.0


def test_a_sync_deadline_on_a_fake_clock_is_checked_on_it() -> None:
    """A sync call whose fake sleeps overran its deadline returns late: a timeout."""
    clock = FakeClock()
    handler = TimeoutHandler(5.0, clock=clock)
    with pytest.raises(OperationTimeoutError):
        handler.with_timeout_sync(clock.sleep_sync, 10)


# -- EventRecorder -----------------------------------------------------------------------------


def _report(hub: TelemetryHub, event: EventKind, args: EventArgs) -> None:
    """Report ``event`` from a breaker named ``b`` through ``hub``."""
    StrategyTelemetry(TelemetrySource("circuit_breaker", "b"), hub).report(event, args)


def test_a_recorder_entered_again_inside_its_own_block_keeps_recording() -> None:
    """The inner block's end took the recorder off the hub: the outer block's later events were lost."""
    hub = TelemetryHub()
    with EventRecorder(hub) as recorder:
        with recorder:
            _report(hub, Event.CALL_REJECTED, CallRejected("circuit_open"))
        _report(hub, Event.CALL_REJECTED, CallRejected("half_open_full"))
        assert hub.listens(recorder)
    assert not hub.listens(recorder)
    assert [args.reason for args in recorder.of(Event.CALL_REJECTED)] == ["circuit_open", "half_open_full"]  # type: ignore[attr-defined]


def test_a_recorder_records_only_inside_its_block_and_can_be_cleared() -> None:
    """Outside its block it hears nothing; clearing ``events`` starts it afresh."""
    hub = TelemetryHub()
    recorder = EventRecorder(hub)
    _report(hub, Event.CALL_REJECTED, CallRejected("circuit_open"))
    with recorder:
        _report(hub, Event.CALL_REJECTED, CallRejected("half_open_full"))
    _report(hub, Event.CALL_REJECTED, CallRejected("circuit_open"))
    assert recorder.sources(Event.CALL_REJECTED) == [TelemetrySource("circuit_breaker", "b")]
    recorder.events.clear()
    assert recorder.of(Event.CALL_REJECTED) == []


def test_an_event_reported_while_another_is_handled_reaches_a_later_recorder_first() -> None:
    """As its docstring says: a listener registered first, reporting as it handles an event, is heard first."""
    hub = TelemetryHub()

    class Alerting:
        def on_event(self, source: TelemetrySource, event: EventKind, args: EventArgs) -> None:
            if event is Event.CALL_REJECTED:
                _report(hub, Event.ALERT_RAISED, AlertRaised("bulkhead_full", "warning", "b", "full"))

    alerting = Alerting()
    hub.add_listener(alerting)
    with EventRecorder(hub) as recorder:
        _report(hub, Event.CALL_REJECTED, CallRejected("bulkhead_full"))
    hub.remove_listener(alerting)
    assert [event for _, event, _ in recorder.events] == [Event.ALERT_RAISED, Event.CALL_REJECTED]


def test_an_alert_reaches_a_recorder_after_the_state_change_that_raised_it() -> None:
    """An alert system registered before the recorder still reports its alert after the change.

    The docstring said the alert system's ``ALERT_RAISED`` reached a later recorder before the
    breaker's ``STATE_CHANGED``: it derives events, so the hub hands it every event last.
    """
    system = AlertSystem(name="registered-first")
    try:
        breaker = CircuitBreaker(
            "db", CircuitBreakerConfig(failure_threshold=1, timeout=30.0), clock=FakeClock()
        )
        with EventRecorder() as recorder, pytest.raises(ConnectionError):
            breaker.call_sync(_refused)
    finally:
        system.close()
    heard = [event for _, event, _ in recorder.events]
    assert heard == [Event.STATE_CHANGED, Event.ALERT_RAISED]


def _refused() -> None:
    raise ConnectionError("refused")


class _CollectingHub(TelemetryHub):
    """A hub that reports an event while it changes its listeners, as a garbage collection there can
    (a finalizer closing an execution, in the thread that holds the hub's lock)."""

    def add_listener(self, listener: object, *, weak: bool = False) -> None:
        super().add_listener(listener, weak=weak)
        with self._lock:
            _report(self, Event.CALL_REJECTED, CallRejected("circuit_open"))

    def remove_listener(self, listener: object) -> None:
        with self._lock:
            _report(self, Event.CALL_REJECTED, CallRejected("half_open_full"))
        super().remove_listener(listener)


def test_a_recorder_hears_an_event_reported_while_the_hub_adds_or_removes_it() -> None:
    """Entering and leaving its block never holds the lock its ``on_event`` takes: no deadlock."""
    hub = _CollectingHub()
    recorder = EventRecorder(hub)

    def block() -> None:
        with recorder:
            pass

    worker = threading.Thread(target=block, daemon=True)
    worker.start()
    worker.join(30)  # a deadlock never ends; the block takes milliseconds
    assert not worker.is_alive()
    assert [args.reason for args in recorder.of(Event.CALL_REJECTED)] == ["circuit_open", "half_open_full"]


@pytest.mark.parametrize("method", ["of", "sources"])
def test_a_recorder_refuses_to_look_up_an_event_that_is_not_an_event_kind(method: str) -> None:
    """``recorder.of("call_rejected")`` found nothing, so ``assert not recorder.of(...)`` passed whatever happened."""
    hub = TelemetryHub()
    with EventRecorder(hub) as recorder:
        _report(hub, Event.CALL_REJECTED, CallRejected("circuit_open"))
    with pytest.raises(TypeError, match=rf"EventRecorder\.{method}\.event must be an EventKind"):
        getattr(recorder, method)("call_rejected")


def test_a_recorder_refuses_a_hub_that_is_not_one() -> None:
    """``EventRecorder(Event.RETRY_SCHEDULED)`` (a filter, meant) failed only on entry, with an AttributeError."""
    with pytest.raises(TypeError, match=r"EventRecorder\.hub must be a TelemetryHub"):
        EventRecorder(Event.RETRY_SCHEDULED)  # type: ignore[arg-type]


# -- every helper shows how it is used, in an example that runs --------------------------------


def test_every_helper_has_an_example_that_runs() -> None:
    """Each name the module exports has a docstring with an example, and every example passes."""
    finder = doctest.DocTestFinder()
    examples = {test.name.rsplit(".", 1)[-1]: test for test in finder.find(testing) if test.examples}
    assert set(testing.__all__) <= set(examples)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples.values():
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
