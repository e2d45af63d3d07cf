"""Tests for the bulkhead: limits, FIFO queue, rejections, cancellation, threads, stats, events."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import random
import threading
import time
import weakref
from datetime import timedelta
from typing import Any

import pytest
from loops_support import NEW_LOOPS, LoopTimers
from parity_support import FakeTimeLoop
from support import CountingLock, collect_inside, run_threads, until, until_sync

from otel_resilience.engine import timer as engine_timer
from otel_resilience.engine.admission import UNSTARTED, UNSTARTED_SYNC
from otel_resilience.engine.clock import SYSTEM_CLOCK
from otel_resilience.engine.context import AsyncDeadline, SyncDeadline
from otel_resilience.engine.events import CallRejected, Event, TelemetrySource
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.registry import BULKHEADS
from otel_resilience.engine.waiting import ADMITTED, FULL, GRANTED, TIMED_OUT, AsyncWaiter, SyncWaiter
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    ExecutionRejectedError,
    OperationTimeoutError,
)
from otel_resilience.patterns.bulkhead import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_WAITING,
    DEFAULT_TIMEOUT,
    Bulkhead,
    BulkheadConfig,
)
from otel_resilience.patterns.bulkhead import _core as bulkhead_core
from otel_resilience.patterns.timeout import fail_after
from otel_resilience.testing import FakeClock

# --- helpers -------------------------------------------------------------------------------


async def occupy(bulkhead, count):
    """Start ``count`` async calls that hold (or wait for) a slot until the returned gate is set."""
    gate = asyncio.Event()

    async def hold():
        await gate.wait()
        return "held"

    tasks = [asyncio.create_task(bulkhead.execute(hold)) for _ in range(count)]
    expected = min(count, bulkhead.config.max_concurrent)
    await until(lambda: bulkhead.stats.active == expected and bulkhead.stats.waiting == count - expected)
    return gate, tasks


async def call(bulkhead, driver, calls=None, value="ok"):
    """Run one call through the async or the sync driver, recording that ``fn`` ran."""
    if driver == "async":

        async def fn():
            if calls is not None:
                calls.append(value)
            return value

        return await bulkhead.execute(fn)

    def sync_fn():
        if calls is not None:
            calls.append(value)
        return value

    return bulkhead.execute_sync(sync_fn)


async def run(bulkhead, driver, async_fn, sync_fn):
    """Run ``async_fn`` or ``sync_fn`` through the matching driver."""
    if driver == "async":
        return await bulkhead.execute(async_fn)
    return bulkhead.execute_sync(sync_fn)


def call_after(bulkhead, clock, elapsed):
    """Call under a 5 s sync deadline of which ``elapsed`` fake seconds have already passed."""
    with SyncDeadline(clock, 5.0, "op"):
        clock.advance(elapsed)
        return bulkhead.execute_sync(lambda: "never")


def assert_idle(bulkhead):
    stats = bulkhead.stats
    assert stats.active == 0
    assert stats.waiting == 0


# --- config --------------------------------------------------------------------------------


def test_defaults_are_pinned():
    """The documented defaults are 10 running, 100 waiting and a 60 s queue timeout."""
    assert (DEFAULT_MAX_CONCURRENT, DEFAULT_MAX_WAITING, DEFAULT_TIMEOUT) == (10, 100, 60.0)
    config = BulkheadConfig()
    assert (config.max_concurrent, config.max_waiting, config.timeout) == (10, 100, 60.0)
    assert Bulkhead("defaults").config == config


def test_config_accepts_timedelta_as_seconds():
    """A timedelta timeout is normalised to float seconds."""
    config = BulkheadConfig(timeout=timedelta(milliseconds=1500))
    assert config.timeout == 1.5
    assert type(config.timeout) is float


def test_config_is_frozen():
    """A config cannot be changed after construction."""
    config = BulkheadConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_concurrent = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent"),
        ({"max_concurrent": -3}, ValueError, "max_concurrent"),
        ({"max_concurrent": 2.5}, TypeError, "max_concurrent"),
        ({"max_concurrent": True}, TypeError, "max_concurrent"),
        ({"max_waiting": -1}, ValueError, "max_waiting"),
        ({"max_waiting": None}, TypeError, "max_waiting"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": -1.0}, ValueError, "timeout"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"timeout": float("inf")}, ValueError, "timeout"),
        ({"timeout": "60"}, TypeError, "timeout"),
        ({"timeout": timedelta(0)}, ValueError, "timeout"),
    ],
)
def test_bad_config_is_rejected(kwargs, error, field):
    """Every out-of-range or mistyped field raises, naming the class and field."""
    with pytest.raises(error, match=rf"BulkheadConfig\.{field} must be"):
        BulkheadConfig(**kwargs)


def test_a_queue_timeout_beside_no_queue_is_refused():
    """``max_waiting=0`` queues no call: a ``timeout`` written beside it would be ignored.

    ``BulkheadConfig(max_waiting=0, timeout=0.5)`` (a Resilience4j ``maxWaitDuration`` carried
    over) was taken, and a call finding every slot busy was refused at once, never waiting 0.5 s.
    """
    rule = r"^BulkheadConfig\.timeout must be 60\.0 \(its default\) unless max_waiting > 0 \(no call waits without a queue\), got 0\.5$"
    with pytest.raises(ValueError, match=rule):
        BulkheadConfig(max_waiting=0, timeout=0.5)
    with pytest.raises(ValueError, match=r"BulkheadConfig\.timeout must be 60\.0 \(its default\)"):
        BulkheadConfig(max_waiting=0, timeout=timedelta(hours=1))
    with pytest.raises(ValueError, match=r"BulkheadConfig\.timeout must be 60\.0 \(its default\)"):
        dataclasses.replace(BulkheadConfig(timeout=0.5), max_waiting=0)
    # Its default cannot be told from a value left out: taken, as without a timeout.
    assert BulkheadConfig(max_waiting=0, timeout=60.0) == BulkheadConfig(max_waiting=0)
    assert BulkheadConfig(max_waiting=0, timeout=timedelta(minutes=1)) == BulkheadConfig(max_waiting=0)
    assert BulkheadConfig(max_waiting=1, timeout=0.5).timeout == 0.5
    # A mistyped timeout is named as such first.
    with pytest.raises(TypeError, match=r"BulkheadConfig\.timeout must be"):
        BulkheadConfig(max_waiting=0, timeout="0.5")


def test_validation_message_is_pinned():
    """The message states the class, the field, the rule and the value."""
    with pytest.raises(ValueError, match=r"^BulkheadConfig\.max_concurrent must be >= 1, got 0$"):
        BulkheadConfig(max_concurrent=0)


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        (("",), ValueError, r"Bulkhead\.name"),
        ((3,), TypeError, r"Bulkhead\.name"),
        (("x", {"max_concurrent": 1}), TypeError, r"Bulkhead\.config"),
    ],
)
def test_bad_constructor_arguments_are_rejected(args, error, pattern):
    """A bad name or a config of the wrong type raises at construction."""
    with pytest.raises(error, match=pattern):
        Bulkhead(*args)


# --- basic behaviour -----------------------------------------------------------------------


async def test_spec_example():
    """The SPEC example runs as written."""
    bulkhead = Bulkhead("analysis_pool", BulkheadConfig(max_concurrent=10, max_waiting=100, timeout=60.0))

    async def analyze_document(doc):
        return {"doc": doc}

    result = await bulkhead.execute(analyze_document, "d1")
    assert result == {"doc": "d1"}
    assert bulkhead.get_stats()["completed"] == 1


async def test_call_returns_result_and_frees_slot(driver):
    """A call returns its result and leaves no slot taken."""
    bulkhead = Bulkhead("basic", BulkheadConfig(max_concurrent=2))
    assert await call(bulkhead, driver, value=42) == 42
    assert_idle(bulkhead)
    assert bulkhead.stats.completed == 1
    assert bulkhead.stats.total == 1


async def test_failure_propagates_unchanged_and_frees_slot(driver):
    """The function's own exception reaches the caller as is, and the slot is given back."""
    bulkhead = Bulkhead("failing", BulkheadConfig(max_concurrent=1))
    boom = ValueError("boom")

    async def fail_async():
        raise boom

    def fail_sync():
        raise boom

    with pytest.raises(ValueError, match="boom") as info:
        await run(bulkhead, driver, fail_async, fail_sync)
    assert info.value is boom
    assert_idle(bulkhead)
    assert bulkhead.stats.completed == 1
    assert bulkhead.stats.rejected == 0


async def test_non_callable_is_rejected_before_anything(driver):
    """A non-callable ``fn`` raises TypeError at once and counts nothing."""
    bulkhead = Bulkhead("typed")
    with pytest.raises(TypeError, match=r"Bulkhead\.execute(_sync)?\.fn must be callable"):
        await run(bulkhead, driver, 3, 3)
    assert bulkhead.stats.total == 0


def test_registered_in_bulkheads_registry():
    """A new bulkhead is found in the registry by its name."""
    bulkhead = Bulkhead("registry-unique-bulkhead")
    assert BULKHEADS.get("registry-unique-bulkhead") is bulkhead
    assert bulkhead in BULKHEADS.items()


# --- limits, FIFO, rejections (async) ------------------------------------------------------


async def test_limit_respected_under_50_concurrent_tasks():
    """Fifty tasks never run more than max_concurrent at once, and all complete."""
    bulkhead = Bulkhead("pool", BulkheadConfig(max_concurrent=5, max_waiting=50))
    current = peak = 0

    async def work(i):
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        for _ in range(3):
            await asyncio.sleep(0)
        current -= 1
        return i

    results = await asyncio.gather(*(bulkhead.execute(work, i) for i in range(50)))
    assert results == list(range(50))
    assert peak == 5
    stats = bulkhead.get_stats()
    assert (stats["total"], stats["completed"]) == (50, 50)
    assert (stats["peak_active"], stats["peak_waiting"]) == (5, 45)
    assert_idle(bulkhead)


async def test_waiters_are_served_in_fifo_order():
    """Queued calls get slots in the order they arrived."""
    bulkhead = Bulkhead("fifo", BulkheadConfig(max_concurrent=1, max_waiting=10))
    gate, holders = await occupy(bulkhead, 1)
    order = []

    async def record(i):
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(bulkhead.execute(record, i)))
        await until(lambda n=i + 1: bulkhead.stats.waiting == n)
    gate.set()
    await asyncio.gather(*holders, *tasks)
    assert order == [0, 1, 2, 3, 4]
    assert_idle(bulkhead)


async def test_full_queue_rejects_immediately(driver):
    """With every slot busy and the queue full, a call is rejected at once without running."""
    bulkhead = Bulkhead("full", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=10))
    gate, tasks = await occupy(bulkhead, 2)
    calls = []
    start = time.monotonic()
    with pytest.raises(BulkheadFullError) as info:
        await call(bulkhead, driver, calls)
    assert time.monotonic() - start < 5.0  # at once, not after the 10 s queue timeout
    error = info.value
    assert type(error) is BulkheadFullError
    assert isinstance(error, ExecutionRejectedError)
    assert (error.name, error.max_concurrent, error.max_waiting, error.reason) == ("full", 1, 1, "full")
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert calls == []
    gate.set()
    await asyncio.gather(*tasks)
    assert bulkhead.stats.rejected == 1
    assert bulkhead.stats.completed == 2
    assert_idle(bulkhead)


async def test_queue_timeout_raises_distinguishable_error(driver):
    """A call that waits longer than the timeout gets BulkheadTimeoutError, not the plain full error."""
    bulkhead = Bulkhead("slow", BulkheadConfig(max_concurrent=1, max_waiting=5, timeout=0.05))
    gate, tasks = await occupy(bulkhead, 1)
    calls = []
    start = time.monotonic()
    with pytest.raises(BulkheadTimeoutError) as info:
        await call(bulkhead, driver, calls)
    elapsed = time.monotonic() - start
    assert 0.04 <= elapsed < 2.0
    error = info.value
    assert isinstance(error, BulkheadFullError)
    assert error.reason == "queue_timeout"
    assert error.timeout == pytest.approx(0.05)
    assert calls == []
    assert bulkhead.stats.timed_out == 1
    assert bulkhead.stats.waiting == 0
    gate.set()
    await asyncio.gather(*tasks)
    assert_idle(bulkhead)


async def test_max_waiting_zero_rejects_at_once(driver):
    """With no queue, a call is rejected as soon as every slot is busy."""
    bulkhead = Bulkhead("noqueue", BulkheadConfig(max_concurrent=1, max_waiting=0))
    gate, tasks = await occupy(bulkhead, 1)
    with pytest.raises(BulkheadFullError) as info:
        await call(bulkhead, driver)
    assert type(info.value) is BulkheadFullError
    assert info.value.max_waiting == 0
    assert bulkhead.stats.peak_waiting == 0
    gate.set()
    await asyncio.gather(*tasks)
    assert await call(bulkhead, driver) == "ok"
    assert_idle(bulkhead)


# --- cancellation --------------------------------------------------------------------------


async def test_cancelled_waiter_leaves_queue_and_leaks_nothing():
    """A waiter cancelled in the queue is removed and never runs; the slot stays usable."""
    bulkhead = Bulkhead("cancel-wait", BulkheadConfig(max_concurrent=1, max_waiting=5))
    gate, holders = await occupy(bulkhead, 1)
    ran = []

    async def record():
        ran.append(1)

    waiter = asyncio.create_task(bulkhead.execute(record))
    await until(lambda: bulkhead.stats.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bulkhead.stats.waiting == 0
    assert bulkhead.stats.cancelled == 1
    assert bulkhead.stats.active == 1
    gate.set()
    await asyncio.gather(*holders)
    assert ran == []
    assert_idle(bulkhead)
    await bulkhead.execute(record)
    assert ran == [1]


async def test_cancelled_runner_gives_its_slot_back():
    """A running call that is cancelled frees its slot, which goes to the next waiter."""
    bulkhead = Bulkhead("cancel-run", BulkheadConfig(max_concurrent=1, max_waiting=5))
    started = asyncio.Event()

    async def block():
        started.set()
        await asyncio.Event().wait()

    async def quick():
        return "next"

    runner = asyncio.create_task(bulkhead.execute(block))
    await started.wait()
    follower = asyncio.create_task(bulkhead.execute(quick))
    await until(lambda: bulkhead.stats.waiting == 1)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await asyncio.wait_for(follower, 2) == "next"
    assert bulkhead.stats.completed == 2
    assert_idle(bulkhead)


async def test_waiter_cancelled_after_handoff_passes_slot_on():
    """A waiter cancelled right after being handed a slot passes it to the next waiter."""
    bulkhead = Bulkhead("handoff", BulkheadConfig(max_concurrent=1, max_waiting=5))
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    ran = []
    first = None

    async def hold():
        await gate.wait()
        # Runs before the hand-off wakes `first`: the slot is handed over, then cancelled.
        loop.call_soon(first.cancel)

    async def record(tag):
        ran.append(tag)
        return tag

    holder = asyncio.create_task(bulkhead.execute(hold))
    await until(lambda: bulkhead.stats.active == 1)
    first = asyncio.create_task(bulkhead.execute(record, "first"))
    second = asyncio.create_task(bulkhead.execute(record, "second"))
    await until(lambda: bulkhead.stats.waiting == 2)
    gate.set()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 2) == "second"
    assert ran == ["second"]
    assert bulkhead.stats.cancelled == 1
    assert_idle(bulkhead)


async def test_a_waiter_handed_a_slot_whose_wake_up_an_interrupt_stopped_takes_it_at_its_timeout(monkeypatch):
    """An interrupt in the thread that frees a slot, after the hand-off and before the wake-up: the waiter still runs.

    The interrupt reaches the thread that gave the slot back; the waiter, handed the slot, is
    woken at its queue timeout at the latest (as a thread's waiter is), takes the slot and runs.
    """
    bulkhead = Bulkhead("handoff-interrupted", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    holding, leave = threading.Event(), threading.Event()
    interrupted: list[BaseException] = []

    def hold() -> None:
        holding.set()
        assert leave.wait(timeout=10)

    def holder() -> None:
        try:
            bulkhead.execute_sync(hold)
        except KeyboardInterrupt as interrupt:  # raised as the slot is given back
            interrupted.append(interrupt)

    thread = threading.Thread(target=holder)
    thread.start()
    await until(holding.is_set)

    async def work() -> str:
        return "ran"

    waiter = asyncio.create_task(bulkhead.execute(work))
    await until(lambda: bulkhead.stats.waiting == 1)
    woken = AsyncWaiter.wake

    def interrupted_once(self: AsyncWaiter) -> bool:
        monkeypatch.setattr(AsyncWaiter, "wake", woken)
        raise KeyboardInterrupt  # as a signal's handler raises it, where the thread is then

    monkeypatch.setattr(AsyncWaiter, "wake", interrupted_once)
    leave.set()
    await asyncio.to_thread(thread.join, 10)
    assert [type(error) for error in interrupted] == [KeyboardInterrupt]
    assert await asyncio.wait_for(waiter, 10) == "ran"
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["timed_out"], stats["active"], stats["waiting"]) == (2, 0, 0, 0)


async def test_deadline_cancels_a_queued_waiter():
    """An enclosing deadline ends an async wait as OperationTimeoutError and frees the queue place."""
    bulkhead = Bulkhead("deadline", BulkheadConfig(max_concurrent=1, max_waiting=5, timeout=10))
    gate, holders = await occupy(bulkhead, 1)

    async def fn():
        return "never"

    with pytest.raises(OperationTimeoutError):
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "op"):
            await bulkhead.execute(fn)
    assert bulkhead.stats.waiting == 0
    assert bulkhead.stats.cancelled == 1
    gate.set()
    await asyncio.gather(*holders)
    assert_idle(bulkhead)


async def test_cancellation_storm_leaks_no_slot():
    """Random cancellations of runners and waiters leave every slot free and the counts balanced."""
    bulkhead = Bulkhead("storm", BulkheadConfig(max_concurrent=3, max_waiting=100, timeout=5))
    rng = random.Random(1234)

    async def work():
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(bulkhead.execute(work)) for _ in range(60)]
    for _ in range(10):
        await asyncio.sleep(0)
        for task in rng.sample(tasks, 5):
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert any(isinstance(r, asyncio.CancelledError) for r in results)
    stats = bulkhead.get_stats()
    assert stats["active"] == 0
    assert stats["waiting"] == 0
    assert stats["cancelled"] > 0
    assert stats["total"] == stats["completed"] + stats["cancelled"] + stats["rejected"] + stats["timed_out"]
    assert bulkhead.stats.available == 3


def release_in_one_turn(loop: asyncio.AbstractEventLoop, core: Any) -> None:
    """Free a slot in ``loop``'s next turn and stop it after that turn: a task woken then does not run.

    ``stop()`` before ``run_forever()`` runs one turn, on asyncio's loop and uvloop's alike. Not a
    callback that frees the slot and then stops the loop: uvloop's ``stop()`` is a callback of its
    own, which lets the ones scheduled before it (the woken task's) run first.
    """
    loop.call_soon(core.release)
    loop.stop()
    loop.run_forever()


def take_slot(bulkhead):
    """Take a free slot of ``bulkhead`` directly, as a sync call's admission does."""
    assert bulkhead._core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is ADMITTED


def queued_on(bulkhead, loop):
    """Queue a waiter of ``loop`` in ``bulkhead`` (acquired while the loop runs; it stops after)."""

    async def acquire():
        return bulkhead._core.acquire(UNSTARTED, bulkhead.as_strategy())

    waiter = loop.run_until_complete(acquire())
    assert isinstance(waiter, AsyncWaiter)
    return waiter


class _MadeWaiters(list):
    """Records the kind (``sync``) of every waiter the bulkhead's core makes, and makes it."""

    def __init__(self, monkeypatch) -> None:
        super().__init__()
        real = bulkhead_core.new_waiter

        def recording(sync, queue, owner):
            self.append(sync)
            return real(sync, queue, owner)

        monkeypatch.setattr(bulkhead_core, "new_waiter", recording)


def test_slot_handed_to_a_closed_loop_is_passed_on():
    """A slot handed to a waiter whose loop has closed is given back instead of leaking."""
    bulkhead = Bulkhead("closed-loop", BulkheadConfig(max_concurrent=1, max_waiting=2))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    queued_on(bulkhead, loop)
    loop.close()
    releaser = threading.Thread(target=core.release)
    releaser.start()
    releaser.join(timeout=5)
    assert not releaser.is_alive()
    assert_idle(bulkhead)
    assert bulkhead.stats.cancelled == 1


def test_a_slot_freed_on_the_thread_a_waiter_queued_on_wakes_it_where_its_loop_runs_now():
    """A loop may run on another thread than the one it ran on when its task queued: a slot freed
    on the first thread wakes the waiter at once, not at its queue timeout."""
    bulkhead = Bulkhead("moved-loop", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)  # held by this thread
    loop = asyncio.new_event_loop()

    async def queued():
        return "queued"

    task = queue_on_a_loop(bulkhead, loop, queued)  # queued on this thread's run of the loop
    results: list[object] = []

    def run_the_loop_here():
        try:
            results.append(loop.run_until_complete(task))
        except RuntimeError as error:  # stopped below, when the waiter was never woken
            results.append(error)

    runner = threading.Thread(target=run_the_loop_here)
    runner.start()
    try:
        until_sync(loop.is_running)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(timeout=5)
        time.sleep(0.05)  # the loop idles in its selector, until its next timer (the queue timeout)
        core.release()  # on this thread: the waiter is handed the slot
        runner.join(timeout=5)
        assert results == ["queued"]
    finally:
        if runner.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            runner.join(timeout=5)
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["timed_out"], stats["cancelled"]) == (2, 0, 0)
    assert_idle(bulkhead)


def queue_on_a_loop(bulkhead, loop, fn):
    """Start ``bulkhead.execute(fn)`` as a task of ``loop`` and run the loop until it is queued."""
    task = loop.create_task(bulkhead.execute(fn))
    for _ in range(10):
        loop.run_until_complete(asyncio.sleep(0))
        if bulkhead.stats.waiting == 1:
            return task
    raise AssertionError("the task did not queue")


def call_within(bulkhead, seconds, driver="sync"):
    """Call from this thread, or from a loop of its own, bounded by ``seconds`` (so a stuck wait ends)."""
    if driver == "sync":
        with SyncDeadline(SYSTEM_CLOCK, seconds, "later"):
            return bulkhead.execute_sync(lambda: "later")

    async def later():
        return "later"

    return asyncio.run(asyncio.wait_for(bulkhead.execute(later), seconds))


def test_slot_is_not_handed_to_a_waiter_whose_loop_stopped():
    """A freed slot skips a waiter whose loop is stopped; that waiter runs once its loop runs again."""
    bulkhead = Bulkhead("stopped-loop", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def queued():
            return "queued"

        task = queue_on_a_loop(bulkhead, loop, queued)
        core.release()  # the waiter's loop is stopped: the slot is freed, not handed to it
        assert bulkhead.stats.active == 0
        assert call_within(bulkhead, 5.0) == "later"
        assert loop.run_until_complete(asyncio.wait_for(task, 5)) == "queued"
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["cancelled"], stats["timed_out"]) == (3, 0, 0)
    assert_idle(bulkhead)


@pytest.mark.parametrize("kind", NEW_LOOPS)
def test_a_waiter_whose_loop_stopped_past_its_timeout_takes_the_slot_freed_meanwhile(kind):
    """A waiter whose loop stopped, nudged as a slot was freed, takes that slot as soon as its loop
    runs, however long it was stopped: its queue timeout, due meanwhile, does not end its wait
    while the slot sits free. uvloop runs a due timer before the callbacks already scheduled (the
    nudge): the waiter timed out there, the free slot left idle, where asyncio's loop ran it."""
    bulkhead = Bulkhead("stopped-past-timeout", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = NEW_LOOPS[kind]()
    try:

        async def queued():
            return "queued"

        task = queue_on_a_loop(bulkhead, loop, queued)
        core.release()  # the waiter's loop is stopped: the slot is freed, and the waiter nudged
        assert bulkhead.stats.active == 0
        time.sleep(0.1)  # its queue timeout passes while its loop is stopped
        assert loop.run_until_complete(asyncio.wait_for(task, 5)) == "queued"
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["cancelled"], stats["timed_out"]) == (2, 0, 0)
    assert_idle(bulkhead)


def test_slot_offered_to_a_waiter_whose_loop_then_stopped_is_taken_back(driver):
    """A slot offered to a waiter whose loop stopped before its task ran is reclaimed by a later caller (thread or loop)."""
    bulkhead = Bulkhead("stopped-after-offer", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def queued():
            return "queued"

        task = queue_on_a_loop(bulkhead, loop, queued)

        release_in_one_turn(loop, core)  # offered to the waiter, whose task never runs in that turn
        assert not task.done()
        assert bulkhead.stats.active == 1  # held by the offer
        assert call_within(bulkhead, 5.0, driver) == "later"
        assert loop.run_until_complete(asyncio.wait_for(task, 5)) == "queued"
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["cancelled"], stats["timed_out"]) == (3, 0, 0)
    assert_idle(bulkhead)


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_slot_offered_to_a_loop_that_then_stopped_goes_to_a_live_waiter_at_its_timeout(driver):
    """A slot offered to a waiter whose loop stopped before its task ran does not sit idle while a
    waiter that can run (a thread, or a task of another loop) times out: at its queue timeout that
    waiter takes the slot back, and runs."""
    bulkhead = Bulkhead("stopped-offer-timeout", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=0.1))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def queued():
            return "queued"

        task = queue_on_a_loop(bulkhead, loop, queued)
        results: list[object] = []

        def live_waiter():
            try:
                if driver == "sync":
                    results.append(bulkhead.execute_sync(lambda: "live"))
                else:

                    async def live():
                        return "live"

                    results.append(asyncio.run(bulkhead.execute(live)))
            except BulkheadTimeoutError as error:
                results.append(error)

        waiter = threading.Thread(target=live_waiter)
        waiter.start()
        until_sync(lambda: bulkhead.stats.waiting == 2)

        release_in_one_turn(loop, core)  # offered to the first waiter, whose task never runs in that turn
        waiter.join(timeout=10)
        assert not waiter.is_alive()
        assert results == ["live"]  # not a BulkheadTimeoutError while the offered slot sat idle
        assert loop.run_until_complete(asyncio.wait_for(task, 5)) == "queued"
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["timed_out"], stats["cancelled"]) == (3, 0, 0)
    assert_idle(bulkhead)


def test_waiter_on_a_stopped_loop_keeps_its_place_behind_busy_slots():
    """A waiter taken back from a stopped loop waits again when its loop runs and every slot is busy."""
    bulkhead = Bulkhead("stopped-requeue", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def queued():
            return "queued"

        task = queue_on_a_loop(bulkhead, loop, queued)
        core.release()
        assert (
            core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is ADMITTED
        )  # a newcomer takes the freed slot and keeps it
        loop.run_until_complete(asyncio.sleep(0.01))  # the nudged waiter looks, and waits again
        assert not task.done()
        assert bulkhead.stats.waiting == 1
        core.release()  # its loop is not running now: freed again, and the waiter nudged again
        assert loop.run_until_complete(asyncio.wait_for(task, 5)) == "queued"
    finally:
        loop.close()
    assert bulkhead.get_stats()["cancelled"] == 0
    assert_idle(bulkhead)


def test_waiters_of_a_loop_closed_after_it_stopped_leak_nothing():
    """Waiters whose loop stopped and then closed, queued or offered a slot, give it back and leave the queue."""
    bulkhead = Bulkhead("closed-after-stop", BulkheadConfig(max_concurrent=1, max_waiting=3, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    queued_on(bulkhead, loop), queued_on(bulkhead, loop)  # both queued

    release_in_one_turn(loop, core)  # offered the slot while its loop runs; its task never claims it
    loop.close()
    assert (bulkhead.stats.active, bulkhead.stats.waiting) == (1, 1)
    assert call_within(bulkhead, 5.0) == "later"  # takes the slot back from the closed loop
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["cancelled"]) == (0, 0, 2)


def test_a_queue_full_of_waiters_whose_loop_closed_does_not_refuse_a_new_caller():
    """Every slot busy, the queue full of waiters whose loop closed while their tasks waited:
    they leave the queue (counted cancelled) and a new caller queues instead of being refused."""
    bulkhead = Bulkhead("closed-queue", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=60))
    gate = threading.Event()
    holder = threading.Thread(target=bulkhead.execute_sync, args=(gate.wait, 5.0))
    holder.start()
    until_sync(lambda: bulkhead.stats.active == 1)
    loop = asyncio.new_event_loop()

    async def never():
        return "never"

    tasks = [queue_on_a_loop(bulkhead, loop, never)]
    tasks.append(loop.create_task(bulkhead.execute(never)))
    loop.run_until_complete(asyncio.sleep(0))
    assert bulkhead.stats.waiting == 2  # the queue is full
    loop.close()  # with both tasks still waiting: they will never run
    results = []

    def call():
        try:
            results.append(call_within(bulkhead, 5.0))
        except BulkheadFullError as error:
            results.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    try:
        until_sync(lambda: bulkhead.stats.waiting == 1 or not caller.is_alive())
        stats = bulkhead.get_stats()
        assert (stats["rejected"], stats["cancelled"], stats["waiting"]) == (0, 2, 1)
    finally:
        gate.set()
    holder.join(timeout=5)
    caller.join(timeout=5)
    assert not holder.is_alive()
    assert not caller.is_alive()
    assert results == ["later"]
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["rejected"], stats["cancelled"]) == (2, 0, 2)
    assert all(not task.done() for task in tasks)  # their loop closed: they never ran
    assert_idle(bulkhead)


def test_a_waiter_freed_after_its_loop_closed_ends_without_the_lock():
    """A task left queued when its loop closed is freed by the garbage collector once it left the
    queue, which closes its coroutine on whichever thread allocates: maybe one that holds the
    bulkhead's lock (a call queuing). It holds nothing by then, so it ends without the lock."""
    bulkhead = Bulkhead("freed-waiter", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)

    async def never():
        return "never"

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = queue_on_a_loop(bulkhead, loop, never)
        freed = weakref.ref(task)
        loop.close()
        del task, loop
        core.release()  # its loop is closed: it leaves the queue, counted cancelled; the slot is freed
        engine_timer._drop_closed()  # the closed loop's timer lets go of it: the task is garbage

        collect_inside(core._lock, "the bulkhead's lock")  # as an allocation under the lock would
        assert freed() is None
    finally:
        gc.enable()
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["completed"], stats["cancelled"]) == (0, 0, 1, 1)
    assert call_within(bulkhead, 5.0) == "later"


def test_a_task_offered_a_slot_and_freed_after_its_loop_closed_does_not_block_on_the_lock():
    """A task offered a slot just before its loop stopped and closed is garbage while its waiter
    still holds the offer (its wake-up went with the loop's ready callbacks). The collector may
    free it on a thread that holds the bulkhead's lock (an allocation under it): that must not
    block. Its slot is then taken back by the next caller that finds every slot busy."""
    bulkhead = Bulkhead("freed-offered", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)

    async def never():
        return "never"

    async def caller():
        me = asyncio.current_task()  # noqa: F841 - its frame refers to its task: only the collector frees it
        return await bulkhead.execute(never)

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(caller())
        loop.run_until_complete(until(lambda: bulkhead.stats.waiting == 1))
        freed = weakref.ref(task)

        release_in_one_turn(loop, core)  # offered to the waiter, whose task never runs in that turn
        loop.close()  # its task never runs again
        del task, loop
        engine_timer._drop_closed()
        assert (bulkhead.stats.active, bulkhead.stats.waiting) == (1, 0)  # held by the offer

        collect_inside(core._lock, "the bulkhead's lock")
        assert freed() is None
    finally:
        gc.enable()
    assert call_within(bulkhead, 5.0) == "later"  # takes the offered slot back
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["completed"], stats["cancelled"]) == (0, 0, 2, 1)


@pytest.mark.parametrize("via", ["execute", "slot"])
def test_a_task_running_in_a_slot_freed_after_its_loop_closed_does_not_block_on_the_lock(via):
    """A task left running in a slot when its loop closed is freed by the collector, maybe on a
    thread that holds the bulkhead's lock: that must not block, and its slot comes back."""
    bulkhead = Bulkhead(f"freed-running-{via}", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60))
    core = bulkhead._core

    async def hang():
        await asyncio.sleep(3600)

    async def caller():
        me = asyncio.current_task()  # noqa: F841 - its frame refers to its task: only the collector frees it
        if via == "slot":
            async with bulkhead.slot():
                await hang()
        return await bulkhead.execute(hang)

    gc.disable()  # the collection below is the one that frees the task
    try:
        loop = asyncio.new_event_loop()
        task = loop.create_task(caller())
        loop.run_until_complete(until(lambda: bulkhead.stats.active == 1))
        loop.close()  # its task never runs again
        freed = weakref.ref(task)
        del task, loop
        engine_timer._drop_closed()

        collect_inside(core._lock, "the bulkhead's lock")
        assert freed() is None
    finally:
        gc.enable()
    until_sync(lambda: bulkhead.stats.active == 0)  # given back once the lock was free
    assert call_within(bulkhead, 5.0) == "later"
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["completed"]) == (0, 0, 2)


def test_a_stopped_loops_waiter_past_its_timeout_gives_its_place_to_a_caller_that_can_wait():
    """Every slot busy and the queue full of a waiter whose loop stopped past its queue timeout
    (which its loop's timer cannot fire): a new caller queues in its place instead of being
    refused, and the old waiter raises its timeout once its loop runs again."""
    bulkhead = Bulkhead("stopped-overdue", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def never():
            return "never"

        task = queue_on_a_loop(bulkhead, loop, never)  # its loop stops with it queued
        stopped = core._queue[0]
        until_sync(lambda: loop.time() > stopped.timer_when)  # its timeout passed, unseen by its timer
        results: list[object] = []

        def caller():
            try:
                results.append(call_within(bulkhead, 5.0))
            except BulkheadFullError as error:
                results.append(error)

        thread = threading.Thread(target=caller)
        thread.start()
        until_sync(lambda: bulkhead.stats.timed_out == 1 or not thread.is_alive())
        core.release()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert results == ["later"]
        with pytest.raises(BulkheadTimeoutError):
            loop.run_until_complete(asyncio.wait_for(task, 5))
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["timed_out"], stats["rejected"], stats["cancelled"]) == (2, 1, 0, 0)
    assert_idle(bulkhead)


def test_a_stopped_loops_waiter_cancelled_before_its_place_is_freed_is_one_cancelled_call():
    """The task of a waiter whose loop stopped past its timeout is cancelled, then a caller takes its place.

    Its cancellation came before the look that ends its wait: it leaves counted ``cancelled``
    (not ``timed_out``), as it does when its task resumes first, and raises its
    ``CancelledError`` once its loop runs again, with no queue timeout reported.
    """
    bulkhead = Bulkhead(
        "stopped-cancelled-overdue", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05)
    )
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:

        async def never():
            return "never"

        task = queue_on_a_loop(bulkhead, loop, never)  # its loop stops with it queued
        stopped = core._queue[0]
        until_sync(lambda: loop.time() > stopped.timer_when)  # its timeout passed, unseen by its timer
        task.cancel()  # its loop stopped: its task sees it when the loop runs again
        results: list[object] = []

        def caller():
            try:
                results.append(call_within(bulkhead, 5.0))
            except BulkheadFullError as error:
                results.append(error)

        thread = threading.Thread(target=caller)
        thread.start()
        until_sync(lambda: bulkhead.stats.waiting == 1 and core._queue[0] is not stopped)
        core.release()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert results == ["later"]
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(asyncio.wait_for(task, 5))
    finally:
        loop.close()
    stats = bulkhead.get_stats()
    assert (stats["completed"], stats["timed_out"], stats["rejected"], stats["cancelled"]) == (2, 0, 0, 1)
    assert_idle(bulkhead)


def test_a_queue_full_of_live_waiters_still_refuses_a_new_caller():
    """Only the places of waiters that can never run are freed: live waiters keep theirs."""
    bulkhead = Bulkhead("live-queue", BulkheadConfig(max_concurrent=1, max_waiting=2, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    closed, stopped = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        queued_on(bulkhead, closed)
        queued_on(bulkhead, stopped)
        closed.close()
        assert core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is not FULL  # the closed loop's place
        assert core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is FULL  # two live waiters remain
        stats = bulkhead.get_stats()
        assert (stats["waiting"], stats["rejected"], stats["cancelled"]) == (2, 1, 1)
    finally:
        stopped.close()


def test_under_overload_a_full_queue_is_looked_through_at_one_refusal_in_64():
    """A rejection stays cheap: the waiters are asked whether their loop closed at the first
    refusal and at one in 64 after it; a closed loop's place is freed by the next such look."""
    bulkhead = Bulkhead("overload", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60))
    core = bulkhead._core
    take_slot(bulkhead)
    loop = asyncio.new_event_loop()
    try:
        waiter = queued_on(bulkhead, loop)
        asked: list[int] = []
        gone = type(waiter).gone

        def counting_gone(self: Any) -> bool:
            asked.append(1)
            return gone(self)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(waiter), "gone", counting_gone)
            link = bulkhead.as_strategy()
            assert core.acquire(UNSTARTED_SYNC, link) is FULL
            assert len(asked) == 1  # the first refusal looked
            loop.close()
            for _ in range(63):
                assert core.acquire(UNSTARTED_SYNC, link) is FULL
            assert len(asked) == 1  # the 63 after it did not
            assert core.acquire(UNSTARTED_SYNC, link) is not FULL  # the 65th looks: the place is free
            assert len(asked) == 2
        stats = bulkhead.get_stats()
        assert (stats["rejected"], stats["cancelled"]) == (64, 1)
    finally:
        loop.close()


# --- threads and mixed use -----------------------------------------------------------------


def test_sync_threads_respect_limit():
    """Eight threads never run more than max_concurrent at once; the rest queue."""
    bulkhead = Bulkhead("threads", BulkheadConfig(max_concurrent=3, max_waiting=8, timeout=5))
    lock = threading.Lock()
    release = threading.Event()
    barrier = threading.Barrier(8)
    errors = []
    current = peak = 0

    def work():
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
        release.wait(timeout=5)
        with lock:
            current -= 1

    def worker():
        try:
            barrier.wait(timeout=5)
            bulkhead.execute_sync(work)
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    until_sync(lambda: bulkhead.stats.active == 3 and bulkhead.stats.waiting == 5)
    assert peak == 3
    release.set()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert peak == 3
    assert bulkhead.stats.completed == 8
    assert bulkhead.stats.peak_active == 3
    assert_idle(bulkhead)


def test_sync_waiters_fifo_and_no_barging():
    """Threads get slots in arrival order, and a caller that just released cannot jump the queue."""
    bulkhead = Bulkhead("sync-fifo", BulkheadConfig(max_concurrent=1, max_waiting=10, timeout=5))
    order = []
    gate = threading.Event()

    def hold():
        gate.wait(timeout=5)

    def holder():
        bulkhead.execute_sync(hold)
        bulkhead.execute_sync(order.append, "again")

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    until_sync(lambda: bulkhead.stats.active == 1)
    for i in range(4):
        thread = threading.Thread(target=bulkhead.execute_sync, args=(order.append, i))
        thread.start()
        threads.append(thread)
        until_sync(lambda n=i + 1: bulkhead.stats.waiting == n)
    gate.set()
    for thread in threads:
        thread.join(timeout=5)
    assert not any(thread.is_alive() for thread in threads)
    assert order == [0, 1, 2, 3, "again"]
    assert_idle(bulkhead)


def test_sync_wait_ends_at_an_expired_deadline(clock):
    """A sync waiter gives up at once when the enclosing deadline has already passed: the scope's timeout."""
    config = BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30)
    bulkhead = Bulkhead("sync-deadline", config, clock=clock)
    take_slot(bulkhead)
    start = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        call_after(bulkhead, clock, 6.0)
    assert time.monotonic() - start < 10.0  # at once, not after the 30 s queue timeout
    assert type(info.value) is OperationTimeoutError  # the scope's own, not a queue timeout
    assert (info.value.operation, info.value.timeout) == ("op", 5.0)
    assert bulkhead.stats.timed_out == 0
    assert bulkhead.stats.cancelled == 1
    bulkhead._core.release()
    assert_idle(bulkhead)


def test_sync_wait_is_bounded_by_the_deadline(clock):
    """A sync waiter waits only for what is left of the enclosing deadline when that is shorter."""
    config = BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=30)
    bulkhead = Bulkhead("sync-deadline-2", config, clock=clock)
    take_slot(bulkhead)
    start = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        call_after(bulkhead, clock, 4.95)
    assert 0.04 <= time.monotonic() - start < 2.0
    assert type(info.value) is OperationTimeoutError  # the scope's own, not a queue timeout
    assert clock.now() == pytest.approx(1005.0)  # the wait lasted until the deadline, on the clock too
    bulkhead._core.release()
    assert_idle(bulkhead)


async def test_mixed_sync_and_async_callers_share_the_limit():
    """Event-loop tasks and worker threads using one bulkhead together never exceed its limit."""
    bulkhead = Bulkhead("mixed", BulkheadConfig(max_concurrent=2, max_waiting=20, timeout=5))
    lock = threading.Lock()
    current = peak = 0

    def enter():
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)

    def leave():
        nonlocal current
        with lock:
            current -= 1

    async def async_work():
        enter()
        await asyncio.sleep(0.001)
        leave()

    def sync_work():
        enter()
        time.sleep(0.001)
        leave()

    async def async_client():
        for _ in range(10):
            await bulkhead.execute(async_work)

    def sync_client():
        for _ in range(10):
            bulkhead.execute_sync(sync_work)

    await asyncio.gather(
        *(async_client() for _ in range(4)),
        *(asyncio.to_thread(sync_client) for _ in range(4)),
    )
    assert peak == 2
    assert bulkhead.stats.completed == 80
    assert bulkhead.stats.peak_active == 2
    assert_idle(bulkhead)


# --- stats ---------------------------------------------------------------------------------


async def test_get_stats_counts_every_outcome():
    """get_stats reports limits, live counts, peaks and every kind of ending."""
    bulkhead = Bulkhead("stats", BulkheadConfig(max_concurrent=2, max_waiting=1, timeout=0.05))
    gate, holders = await occupy(bulkhead, 2)

    async def fn():
        return "x"

    waiter = asyncio.create_task(bulkhead.execute(fn))
    await until(lambda: bulkhead.stats.waiting == 1)
    with pytest.raises(BulkheadFullError):
        await bulkhead.execute(fn)
    with pytest.raises(BulkheadTimeoutError):
        await waiter
    busy = bulkhead.get_stats()
    assert (busy["active"], busy["waiting"], busy["available"]) == (2, 0, 0)
    gate.set()
    await asyncio.gather(*holders)
    assert bulkhead.get_stats() == {
        "name": "stats",
        "active": 0,
        "waiting": 0,
        "max_concurrent": 2,
        "max_waiting": 1,
        "total": 4,
        "completed": 2,
        "rejected": 1,
        "timed_out": 1,
        "cancelled": 0,
        "peak_active": 2,
        "peak_waiting": 1,
        "available": 2,
    }


async def test_stats_object_is_live(driver):
    """The stats object is the same live object, readable during a call without a dict."""
    bulkhead = Bulkhead("live", BulkheadConfig(max_concurrent=3))
    stats = bulkhead.stats
    assert stats is bulkhead.stats
    seen = []

    async def look_async():
        seen.append((stats.active, stats.available))

    def look_sync():
        seen.append((stats.active, stats.available))

    if driver == "async":
        await bulkhead.execute(look_async)
    else:
        bulkhead.execute_sync(look_sync)
    assert seen == [(1, 2)]
    assert (stats.active, stats.available, stats.max_concurrent) == (0, 3, 3)
    assert "active=0/3" in repr(bulkhead)


# --- events --------------------------------------------------------------------------------


async def test_rejections_are_reported_as_events(recorder, driver):
    """A full bulkhead reports bulkhead_full and an expired wait reports queue_timeout."""
    bulkhead = Bulkhead("events", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    gate, tasks = await occupy(bulkhead, 1)
    with pytest.raises(BulkheadTimeoutError):
        await call(bulkhead, driver)
    tasks.append(asyncio.create_task(call(bulkhead, "async")))
    await until(lambda: bulkhead.stats.waiting == 1)
    with pytest.raises(BulkheadFullError):
        await call(bulkhead, driver)
    gate.set()
    await asyncio.gather(*tasks)
    assert recorder.of(Event.CALL_REJECTED) == [
        CallRejected(reason="queue_timeout"),
        CallRejected(reason="bulkhead_full"),
    ]
    assert recorder.sources(Event.CALL_REJECTED) == [TelemetrySource("bulkhead", "events")] * 2


async def test_a_wait_cancelled_once_it_timed_out_is_reported_once_by_its_task(recorder):
    """The timer ends a wait, then the task is cancelled before it resumes: one timed-out call, one report.

    The timeout is counted when the timer fires and reported by the waiting task (in its own
    context) as it resumes, here as its cancellation passes: nothing is lost, nothing doubled.
    """
    bulkhead = Bulkhead(
        "timed-out-then-cancelled", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60)
    )
    gate, tasks = await occupy(bulkhead, 1)
    waiting = asyncio.create_task(call(bulkhead, "async"))
    await until(lambda: bulkhead.stats.waiting == 1)
    core = bulkhead._core
    waiter = core._queue[0]
    waiter.fire()  # what the loop timer does when the wait is due ...
    assert waiter.state == TIMED_OUT
    waiting.cancel()  # ... and the caller is cancelled in the same instant
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected(reason="queue_timeout")]
    stats = bulkhead.get_stats()
    assert (stats["timed_out"], stats["cancelled"], stats["waiting"]) == (1, 0, 0)
    gate.set()
    await asyncio.gather(*tasks)
    assert_idle(bulkhead)


async def test_a_wait_cancelled_before_its_timeout_fired_is_one_cancelled_call(recorder):
    """The task is cancelled, then the timer fires before the task resumes: the cancellation came first.

    The queue timeout ends only a wait that is still the caller's: one whose cancellation was
    requested before the timer fired leaves as a cancelled call (no ``timed_out``, no
    ``queue_timeout`` event), as it does when its task resumes before the timer fires.
    """
    bulkhead = Bulkhead(
        "cancelled-then-timed-out", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60)
    )
    gate, tasks = await occupy(bulkhead, 1)
    waiting = asyncio.create_task(call(bulkhead, "async"))
    await until(lambda: bulkhead.stats.waiting == 1)
    waiter = bulkhead._core._queue[0]
    waiting.cancel()  # the caller is cancelled ...
    waiter.fire()  # ... and the loop timer fires the wait's timeout in the same instant
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert recorder.of(Event.CALL_REJECTED) == []
    stats = bulkhead.get_stats()
    assert (stats["timed_out"], stats["cancelled"], stats["waiting"]) == (0, 1, 0)
    gate.set()
    await asyncio.gather(*tasks)
    assert_idle(bulkhead)


def test_a_wait_whose_enclosing_deadline_fires_first_at_its_queue_timeout_is_that_deadlines(recorder):
    """A scope's deadline at the very time of the queue timeout, its timer entry first: the scope's timeout.

    On a loop of virtual time, the scope (entered before the call queued) and the queue timeout
    are due at the same loop time; the loop's shared timer fires the scope's entry first, which
    cancels the waiting task, then the waiter's: the wait ends as the scope's timeout, counted
    ``cancelled`` (README, "Bulkhead"), not ``timed_out``.
    """
    clock = FakeClock(1000.0)
    loop = FakeTimeLoop(clock)

    async def scenario() -> None:
        bulkhead = Bulkhead(
            "deadline-at-the-queue-timeout", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60)
        )
        gate, tasks = await occupy(bulkhead, 1)
        with pytest.raises(OperationTimeoutError) as caught:
            async with fail_after(60, clock=clock, operation="total"):
                await call(bulkhead, "async")
        assert (type(caught.value), caught.value.operation) == (OperationTimeoutError, "total")
        assert clock.now() == 1060.0  # both were due then
        assert recorder.of(Event.CALL_REJECTED) == []
        stats = bulkhead.get_stats()
        assert (stats["timed_out"], stats["cancelled"], stats["waiting"]) == (0, 1, 0)
        gate.set()
        await asyncio.gather(*tasks)
        assert_idle(bulkhead)

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def test_pipeline_node_reports_with_its_pipeline_name(recorder):
    """A node made for a pipeline reports rejections with that pipeline's name."""
    bulkhead = Bulkhead("events-node", BulkheadConfig(max_concurrent=1, max_waiting=0))
    pipeline = PipelineBuilder("policy").add(bulkhead.as_strategy("policy")).build()
    gate, tasks = await occupy(bulkhead, 1)

    async def fn():
        return "x"

    with pytest.raises(BulkheadFullError):
        await pipeline.execute(fn)
    gate.set()
    await asyncio.gather(*tasks)
    assert recorder.of(Event.CALL_REJECTED) == [CallRejected(reason="bulkhead_full")]
    assert recorder.sources(Event.CALL_REJECTED) == [TelemetrySource("bulkhead", "events-node", "policy")]


# --- composition and decorator -------------------------------------------------------------


async def test_as_strategy_shares_slots_with_the_instance():
    """Nodes are new, unlinked, describe the bulkhead, and share its slots."""
    bulkhead = Bulkhead("shared", BulkheadConfig(max_concurrent=1, max_waiting=0))
    node = bulkhead.as_strategy("policy")
    assert node is not bulkhead.as_strategy("policy")
    assert (node.kind, node.name, node.config) == ("bulkhead", "shared", bulkhead.config)
    pipeline = PipelineBuilder("policy").add(node).build()
    assert pipeline.describe() == (("bulkhead", "shared", bulkhead.config),)

    async def fn():
        return "x"

    gate, tasks = await occupy(bulkhead, 1)
    with pytest.raises(BulkheadFullError):
        await pipeline.execute(fn)
    with pytest.raises(BulkheadFullError):
        pipeline.execute_sync(lambda: "x")
    gate.set()
    await asyncio.gather(*tasks)
    assert await pipeline.execute(fn) == "x"
    assert bulkhead.stats.rejected == 2
    assert_idle(bulkhead)


def test_as_strategy_rejects_a_bad_pipeline_name():
    """An empty pipeline name is rejected."""
    with pytest.raises(ValueError, match=r"Bulkhead\.as_strategy\.pipeline"):
        Bulkhead("named").as_strategy("")


async def test_protect_picks_the_driver_and_keeps_the_signature():
    """The decorator keeps name and signature and uses the async or sync driver as fits."""
    bulkhead = Bulkhead("decorated", BulkheadConfig(max_concurrent=1, max_waiting=0))

    @bulkhead.protect
    async def fetch(x: int, *, scale: int = 2) -> int:
        """Fetch."""
        return x * scale

    @bulkhead.protect
    def parse(x: int) -> int:
        return x + 1

    assert inspect.iscoroutinefunction(fetch)
    assert not inspect.iscoroutinefunction(parse)
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch."
    assert str(inspect.signature(fetch)) == "(x: 'int', *, scale: 'int' = 2) -> 'int'"
    assert await fetch(3, scale=3) == 9
    assert parse(1) == 2
    gate, tasks = await occupy(bulkhead, 1)
    with pytest.raises(BulkheadFullError):
        await fetch(1)
    with pytest.raises(BulkheadFullError):
        parse(1)
    gate.set()
    await asyncio.gather(*tasks)
    assert_idle(bulkhead)


def test_protect_rejects_a_non_callable():
    """Decorating something that is not callable raises TypeError."""
    with pytest.raises(TypeError, match=r"Bulkhead\.protect\.fn must be callable"):
        Bulkhead("decorated-bad").protect(3)  # type: ignore[call-overload]


async def test_queued_waiters_share_one_loop_timer():
    """However many calls wait, the bulkhead keeps at most one queue-timeout timer on the loop."""
    bulkhead = Bulkhead("one-timer", BulkheadConfig(max_concurrent=1, max_waiting=100, timeout=30.0))
    gate = asyncio.Event()

    async def hold():
        await gate.wait()
        return "done"

    timers = LoopTimers(asyncio.get_running_loop())
    try:
        tasks = [asyncio.create_task(bulkhead.execute(hold)) for _ in range(50)]
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        timers.close()
    assert bulkhead.get_stats()["waiting"] == 49
    assert len(timers.set_at) <= 1
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == ["done"] * 50
    assert_idle(bulkhead)


async def test_shared_queue_timer_expires_every_waiter_in_order():
    """Waiters queued one after another all time out through the shared timer, oldest first."""
    bulkhead = Bulkhead("expiring", BulkheadConfig(max_concurrent=1, max_waiting=10, timeout=0.05))
    gate = asyncio.Event()
    ended: list[int] = []

    async def hold():
        await gate.wait()

    async def queued(index: int) -> None:
        with pytest.raises(BulkheadTimeoutError):
            await bulkhead.execute(hold)
        ended.append(index)

    holder = asyncio.create_task(bulkhead.execute(hold))
    await asyncio.sleep(0)
    waiters = []
    for index in range(3):
        waiters.append(asyncio.create_task(queued(index)))
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert ended == [0, 1, 2]
    assert bulkhead.get_stats()["timed_out"] == 3
    gate.set()
    await asyncio.wait_for(holder, 5)
    assert_idle(bulkhead)


# --- context-manager form ---------------------------------------------------------------------


async def test_slot_holds_the_limit_across_async_blocks() -> None:
    """`async with bulkhead.slot()` admits at most max_concurrent blocks, queues the rest FIFO, frees every slot."""
    bulkhead = Bulkhead("slots-async", BulkheadConfig(max_concurrent=2, max_waiting=10, timeout=5.0))
    running = 0
    peak = 0
    order: list[int] = []

    async def block(i: int) -> None:
        nonlocal running, peak
        async with bulkhead.slot():
            running += 1
            peak = max(peak, running)
            order.append(i)
            await asyncio.sleep(0.001)
            running -= 1

    await asyncio.gather(*(block(i) for i in range(8)))
    assert peak == 2
    assert order == list(range(8))
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"]) == (0, 0)


async def test_slot_rejects_when_full_and_frees_on_cancel() -> None:
    """A full bulkhead refuses a slot at once; a cancelled holder or waiter gives its place back."""
    bulkhead = Bulkhead("slots-full", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=5.0))
    entered = asyncio.Event()

    async def hold() -> None:
        async with bulkhead.slot():
            entered.set()
            await asyncio.sleep(3600)

    holder = asyncio.create_task(hold())
    await entered.wait()
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    assert bulkhead.get_stats()["waiting"] == 1
    with pytest.raises(BulkheadFullError):
        async with bulkhead.slot():
            pass
    waiter.cancel()
    holder.cancel()
    for task in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await task
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["rejected"]) == (0, 0, 1)


async def test_a_slot_cancelled_while_it_waits_is_counted_and_its_holder_serves_again(otel: Any) -> None:
    """Cancelled in the queue, a ``slot()`` block counts as a cancelled execution, as a queued call does.

    The bulkhead's pipeline counts it (and exports it), and the slot holder, whose block never
    ran, serves the next block.
    """
    bulkhead = Bulkhead(
        "slots-cancelled-waiting", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=5.0)
    )
    release = asyncio.Event()

    async def hold() -> None:
        async with bulkhead.slot():
            await release.wait()

    holder = asyncio.create_task(hold())
    await until(lambda: bulkhead.get_stats()["active"] == 1)
    slot = bulkhead.slot()

    async def enter() -> None:
        async with slot:
            pass

    waiter = asyncio.create_task(enter())
    await until(lambda: bulkhead.get_stats()["waiting"] == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"], stats["cancelled"], stats["completed"]) == (0, 0, 1, 1)
    exported = {
        dict(point.attributes)["resilience.outcome"]: point.value
        for point in otel.points("resilience.executions")
        if dict(point.attributes).get("resilience.policy") == "slots-cancelled-waiting" and point.value
    }
    assert exported == {"success": 1, "cancelled": 1}
    async with slot:
        assert bulkhead.get_stats()["active"] == 1


def test_slot_in_threads_and_single_use() -> None:
    """`with bulkhead.slot()` bounds threads too; one slot object serves one block at a time."""
    bulkhead = Bulkhead("slots-sync", BulkheadConfig(max_concurrent=2, max_waiting=10, timeout=5.0))
    lock = threading.Lock()
    running = 0
    peak = 0

    def block() -> None:
        nonlocal running, peak
        with bulkhead.slot():
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.005)
            with lock:
                running -= 1

    threads = [threading.Thread(target=block) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak == 2
    slot = bulkhead.slot()
    with slot, pytest.raises(RuntimeError, match="one block at a time"), slot:
        pass
    assert bulkhead.get_stats()["active"] == 0


class _PausingPipeline:
    """A bulkhead's own pipeline whose step, once ``armed``, is looked up only after ``resume`` is set.

    Holds the first thread that enters a guard between its check that the guard is free and its
    admission, so that a second thread enters the same guard in that instant.
    """

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self.armed = False
        self.paused = threading.Event()
        self.resume = threading.Event()

    @property
    def strategies(self) -> Any:
        if self.armed:
            self.armed = False
            self.paused.set()
            assert self.resume.wait(timeout=10)
        return self._pipeline.strategies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


def test_one_slot_holder_entered_by_two_threads_at_once_admits_one_and_leaks_no_slot() -> None:
    """Two threads entering one slot holder in the same instant: one holds the slot, the other is refused."""
    bulkhead = Bulkhead("slots-raced", BulkheadConfig(max_concurrent=2, max_waiting=0))
    pipeline = _PausingPipeline(bulkhead._pipeline)
    slot = Guard(pipeline)  # what bulkhead.slot() returns, on a pipeline that can pause
    pipeline.armed = True
    outcomes: list[str] = []

    def first() -> None:
        with slot:
            outcomes.append("first ran")

    thread = threading.Thread(target=first)
    thread.start()
    assert pipeline.paused.wait(timeout=10)  # the first thread is entering, not yet admitted
    try:
        with slot:
            outcomes.append("second ran")
            pipeline.resume.set()  # the first one enters while this block holds the guard
            thread.join(timeout=10)
    except RuntimeError as error:
        outcomes.append(f"second refused: {error}")
    finally:
        pipeline.resume.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcomes == [
        "second refused: a guard of bulkhead 'slots-raced' serves one block at a time; make another",
        "first ran",
    ]
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["completed"], stats["total"]) == (0, 1, 1)


async def _items():
    yield 1


async def test_async_generator_functions_are_refused():
    """protect() refuses an async generator function, and the sync driver refuses it without counting a success."""
    bulkhead = Bulkhead("generator")
    with pytest.raises(TypeError, match="async generator function"):
        bulkhead.protect(_items)
    with pytest.raises(TypeError, match="async generator function"):
        bulkhead.execute_sync(_items)
    with pytest.raises(TypeError, match="async generator function"):
        await bulkhead.execute(_items)
    assert bulkhead._pipeline.stats.successful == 0
    assert_idle(bulkhead)


def test_a_call_that_can_never_queue_is_rejected_at_once_and_counted_once(monkeypatch) -> None:
    """Every slot busy and the queue full (here not allowed): ``acquire`` rejects (counted), makes no waiter."""
    bulkhead = Bulkhead("no-queue-place", BulkheadConfig(max_concurrent=1, max_waiting=0))
    core = bulkhead._core
    made = _MadeWaiters(monkeypatch)
    take_slot(bulkhead)
    assert core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is FULL
    assert made == []
    with pytest.raises(BulkheadFullError):
        bulkhead.execute_sync(lambda: 1)
    stats = bulkhead.get_stats()
    assert (stats["total"], stats["rejected"], stats["active"], stats["waiting"]) == (3, 2, 1, 0)
    core.release()
    assert bulkhead.execute_sync(lambda: 2) == 2
    assert bulkhead.get_stats()["completed"] == 2


def test_a_call_with_no_place_at_all_is_rejected_without_the_lock() -> None:
    """No queue allowed, none ever made and every slot busy: rejected and counted without the core's lock.

    A call that finds a slot still takes the lock, and so does a full bulkhead that once had a queue
    (its waiters may hold or be offered slots): the lock-free rejection stops there.
    """
    bulkhead = Bulkhead("no-place", BulkheadConfig(max_concurrent=1, max_waiting=0))
    core = bulkhead._core
    core._lock = lock = CountingLock()
    take_slot(bulkhead)
    assert lock.taken == 1
    for _ in range(3):
        assert core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is FULL
    with pytest.raises(BulkheadFullError):
        bulkhead.execute_sync(lambda: 1)
    assert lock.taken == 1
    assert (bulkhead.stats.total, bulkhead.stats.rejected) == (5, 4)
    stats = bulkhead.get_stats()
    assert (stats["total"], stats["rejected"], stats["active"]) == (5, 4, 1)
    assert "total=5" in repr(bulkhead.stats)
    assert "rejected=4" in repr(bulkhead.stats)
    core.resize(1, 1)  # a queue allowed (a live reload): the next full call queues, in a queue of its own
    waiter = core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy())
    assert isinstance(waiter, SyncWaiter)
    core.resize(1, 0)  # no queue allowed again, but one was made and its waiter still waits
    taken = lock.taken
    assert core.acquire(UNSTARTED_SYNC, bulkhead.as_strategy()) is FULL
    assert lock.taken == taken + 1
    core.release()  # the slot goes to the waiter
    assert waiter.state == GRANTED
    core.release()
    stats = bulkhead.get_stats()
    assert (stats["total"], stats["rejected"], stats["completed"], stats["active"]) == (7, 5, 2, 0)


def test_rejections_without_the_lock_are_all_counted_across_threads() -> None:
    """Eight threads race a two-slot bulkhead with no queue: every call is counted once, run or rejected."""
    bulkhead = Bulkhead("no-place-threads", BulkheadConfig(max_concurrent=2, max_waiting=0))
    ran: list[None] = []
    start = threading.Barrier(8, timeout=5)

    def caller() -> None:
        start.wait()
        for _ in range(2_000):
            try:
                bulkhead.execute_sync(time.sleep, 0)  # lets the other threads find the slots busy
            except BulkheadFullError:
                continue
            ran.append(None)

    run_threads(8, caller)
    stats = bulkhead.get_stats()
    assert stats["total"] == 16_000 == bulkhead.stats.total
    assert stats["completed"] == len(ran)
    assert stats["rejected"] == 16_000 - len(ran) == bulkhead.stats.rejected
    assert stats["rejected"] > 0  # the race did reach the rejection path
    assert (stats["active"], stats["waiting"]) == (0, 0)


def test_a_call_that_queues_gets_its_waiter_in_the_same_round_trip(monkeypatch) -> None:
    """Every slot busy, a queue place free: ``acquire`` makes the driver's waiter, queues it and counts the call once."""
    bulkhead = Bulkhead("queue-place", BulkheadConfig(max_concurrent=1, max_waiting=1))
    core, link = bulkhead._core, bulkhead.as_strategy()
    made = _MadeWaiters(monkeypatch)
    assert core.acquire(UNSTARTED_SYNC, link) is ADMITTED
    assert made == []  # a call that takes a slot gets no waiter
    waiter = core.acquire(UNSTARTED_SYNC, link)
    assert isinstance(waiter, SyncWaiter)
    assert waiter.owner is link
    assert made == [True]
    stats = bulkhead.get_stats()
    assert (stats["total"], stats["active"], stats["waiting"]) == (2, 1, 1)
    assert core.acquire(UNSTARTED_SYNC, link) is FULL  # the queue is full now
    assert made == [True]
    core.release()  # the slot goes to the queued waiter
    assert waiter.state == GRANTED
    assert waiter.signal.acquire(timeout=5)
    core.release()
    assert_idle(bulkhead)


async def test_the_shared_empty_queue_and_offers_stay_empty_and_unshared() -> None:
    """A bulkhead gets its own queue and offer set when a call first queues; the shared ones stay empty."""
    from otel_resilience.patterns.bulkhead._core import _NO_OFFERS, _NO_QUEUE  # noqa: PLC0415

    bulkhead = Bulkhead("own-queue", BulkheadConfig(max_concurrent=1, max_waiting=5))
    idle = Bulkhead("idle", BulkheadConfig(max_concurrent=1, max_waiting=5))
    release = asyncio.Event()

    async def hold() -> int:
        await release.wait()
        return 1

    calls = [asyncio.ensure_future(bulkhead.execute(hold)) for _ in range(4)]
    await asyncio.sleep(0)
    assert bulkhead.get_stats()["waiting"] == 3
    release.set()
    assert await asyncio.gather(*calls) == [1, 1, 1, 1]
    assert bulkhead._core._queue is not _NO_QUEUE
    assert bulkhead._core._offered is not _NO_OFFERS
    assert idle._core._queue is _NO_QUEUE
    assert idle._core._offered is _NO_OFFERS
    assert len(_NO_QUEUE) == 0
    assert len(_NO_OFFERS) == 0


def test_peak_active_is_the_highest_active_seen_running_or_freed() -> None:
    """``peak_active`` counts the calls running now and the highest count a freed slot left behind;
    a grown limit's slot no waiter could take (their loop does not run) was never held."""
    bulkhead = Bulkhead("peaks", BulkheadConfig(max_concurrent=2, max_waiting=1, timeout=60.0))
    assert bulkhead.stats.peak_active == 0
    first, second = bulkhead.slot(), bulkhead.slot()
    first.__enter__()
    assert bulkhead.stats.peak_active == 1  # running now, nothing freed yet
    second.__enter__()
    assert bulkhead.get_stats()["peak_active"] == 2
    second.__exit__(None, None, None)
    assert (bulkhead.stats.active, bulkhead.stats.peak_active) == (1, 2)  # kept once freed
    second = bulkhead.slot()
    second.__enter__()
    stopped = asyncio.new_event_loop()
    try:
        queued_on(bulkhead, stopped)  # its loop does not run: it cannot take a slot
        bulkhead._reconfigure(BulkheadConfig(max_concurrent=4, max_waiting=1, timeout=60.0))
        assert (bulkhead.stats.active, bulkhead.stats.waiting) == (2, 1)
        assert bulkhead.stats.peak_active == 2  # the new slot was freed at once, never held
    finally:
        stopped.close()
        first.__exit__(None, None, None)
        second.__exit__(None, None, None)
    assert bulkhead.stats.peak_active == 2


def test_a_resize_that_hands_new_slots_to_waiters_raises_peak_active() -> None:
    """Waiters admitted by a live resize to a larger limit count in ``peak_active`` as any admission does."""
    bulkhead = Bulkhead("grown-peak", BulkheadConfig(max_concurrent=1, max_waiting=5, timeout=5.0))
    holder = bulkhead.slot()
    holder.__enter__()
    gate = threading.Event()
    threads = [threading.Thread(target=bulkhead.execute_sync, args=(gate.wait, 5.0)) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        until_sync(lambda: bulkhead.stats.waiting == 2)
        bulkhead._reconfigure(BulkheadConfig(max_concurrent=3, max_waiting=5, timeout=5.0))
        until_sync(lambda: bulkhead.stats.waiting == 0)
        stats = bulkhead.get_stats()
        assert stats["active"] == 3
        assert stats["peak_active"] == 3
    finally:
        gate.set()
        holder.__exit__(None, None, None)
        for thread in threads:
            thread.join(5)
    assert bulkhead.get_stats()["completed"] == 3


def test_the_stats_repr_names_the_public_type_and_every_count() -> None:
    """``repr(bulkhead.stats)`` shows what :class:`BulkheadStats` documents, not the private core class."""
    bulkhead = Bulkhead("stats-repr", BulkheadConfig(max_concurrent=2, max_waiting=1))
    with bulkhead.slot():
        text = repr(bulkhead.stats)
    assert text == (
        "BulkheadStats(active=1, waiting=0, max_concurrent=2, max_waiting=1, total=1, completed=0, "
        "rejected=0, timed_out=0, cancelled=0, peak_active=1, peak_waiting=0)"
    )


def test_a_call_through_its_own_full_bulkhead_waits_for_a_second_slot_as_documented() -> None:
    """A slot is the call's, not its thread's: a function that calls through its own bulkhead of one
    waits out the queue timeout (BulkheadTimeoutError), or is refused at once with no queue (README)."""
    queued = Bulkhead("recursing", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    unqueued = Bulkhead("recursing-unqueued", BulkheadConfig(max_concurrent=1, max_waiting=0))

    def through(bulkhead: Bulkhead) -> Any:
        def call(depth: int) -> int:
            return depth if depth == 0 else bulkhead.execute_sync(call, depth - 1)

        return call

    with pytest.raises(BulkheadTimeoutError):
        queued.execute_sync(through(queued), 1)
    with pytest.raises(BulkheadFullError):
        unqueued.execute_sync(through(unqueued), 1)
    assert queued.get_stats()["active"] == unqueued.get_stats()["active"] == 0
