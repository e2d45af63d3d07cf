from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from otel_resilience import Bulkhead, BulkheadConfig
from otel_resilience.engine import SYSTEM_CLOCK, AsyncDeadline
from otel_resilience.engine import timer as timer_module
from otel_resilience.engine.timer import TimerEntry, loop_timer
from otel_resilience.errors import BulkheadTimeoutError


class Mark(TimerEntry):
    """Records when it fired."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = 0

    def fire(self) -> None:
        self.fired += 1


def _count_loop_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """Record the loop time of every loop timer set on ``loop`` from now on."""
    set_at: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        set_at.append(when)
        return call_at(when, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign]
    return set_at


async def test_deadlines_and_queue_timeouts_share_one_loop_timer() -> None:
    """A timeout scope and a queued bulkhead waiter on one loop are served by a single loop timer."""
    loop = asyncio.get_running_loop()
    bulkhead = Bulkhead("shared-timer", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=60.0))
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(bulkhead.execute(hold))
    await asyncio.sleep(0)
    set_at = _count_loop_timers(loop)
    deadline = AsyncDeadline(SYSTEM_CLOCK, 30.0, "op")
    deadline.enter()
    try:
        waiter = asyncio.create_task(bulkhead.execute(hold))
        await asyncio.sleep(0)
        assert bulkhead.get_stats()["waiting"] == 1
        assert len(set_at) == 1  # the scope's; the waiter's later timeout needs no timer of its own
    finally:
        deadline.leave(None)
        release.set()
        await asyncio.gather(holder, waiter)
    del loop.call_at


async def test_queue_timeout_fires_on_the_shared_timer() -> None:
    """A queued waiter still times out at its queue timeout when a scope armed the loop's timer first."""
    bulkhead = Bulkhead("shared-expiry", BulkheadConfig(max_concurrent=1, max_waiting=1, timeout=0.05))
    release = asyncio.Event()

    async def hold() -> None:
        await release.wait()

    holder = asyncio.create_task(bulkhead.execute(hold))
    await asyncio.sleep(0)
    deadline = AsyncDeadline(SYSTEM_CLOCK, 30.0, "op")
    deadline.enter()
    try:
        with pytest.raises(BulkheadTimeoutError):
            await bulkhead.execute(hold)
    finally:
        deadline.leave(None)
        release.set()
        await holder
    assert bulkhead.get_stats()["timed_out"] == 1


async def test_a_cancelled_entry_never_fires_and_a_fired_one_can_be_added_again() -> None:
    """An entry cancelled before it is due does not fire; one that fired may be armed again."""
    loop = asyncio.get_running_loop()
    timer = loop_timer(loop)
    cancelled, due = Mark(), Mark()
    timer.add(loop, cancelled, loop.time())
    timer.add(loop, due, loop.time())
    timer.cancel(cancelled)
    await asyncio.sleep(0.01)
    assert (cancelled.fired, due.fired) == (0, 1)
    timer.add(loop, due, loop.time())  # a fired entry may be armed again
    await asyncio.sleep(0.01)
    assert due.fired == 2


def test_a_loops_timer_is_dropped_with_the_loop() -> None:
    """The shared timer of a loop is forgotten once the loop is garbage-collected."""

    async def use() -> None:
        loop = asyncio.get_running_loop()
        loop_timer(loop).add(loop, Mark(), loop.time())
        await asyncio.sleep(0.01)

    before = len(timer_module._TIMERS)
    asyncio.run(use())
    gc.collect()
    assert len(timer_module._TIMERS) == before


class _Loop:
    """Stands for an event loop where only its identity matters (the timer table's key)."""


def test_a_new_loop_never_gets_a_dead_loops_timer() -> None:
    """Timers are keyed by the loop's id: a loop made where a dead one lay gets a timer of its own."""
    for _ in range(100):  # until the allocator hands the freed memory out again (not always at once)
        dead = _Loop()
        stale = loop_timer(dead)  # type: ignore[arg-type]
        dead_id = id(dead)
        del dead
        made = [_Loop() for _ in range(64)]
        reborn = next((loop for loop in made if id(loop) == dead_id), None)
        if reborn is not None:
            break
    else:
        raise AssertionError("no loop was ever made where a dead one lay")
    assert loop_timer(reborn) is not stale  # type: ignore[arg-type]


class Ordered(TimerEntry):
    """Appends its name to a shared list when it fires."""

    __slots__ = ("fired", "name")

    def __init__(self, name: str, fired: list[str]) -> None:
        self.name = name
        self.fired = fired

    def fire(self) -> None:
        self.fired.append(self.name)


async def test_entries_in_and_out_of_order_fire_in_deadline_order() -> None:
    """Entries due no sooner than the lane's last join the lane, the others the heap; all fire by deadline."""
    loop = asyncio.get_running_loop()
    timer = loop_timer(loop)
    fired: list[str] = []
    now = loop.time()
    for name, delay in (("b", 0.02), ("c", 0.03), ("a", 0.01), ("e", 0.05), ("d", 0.04), ("c2", 0.03)):
        timer.add(loop, Ordered(name, fired), now + delay)
    ended = Ordered("never", fired)
    timer.add(loop, ended, now + 0.035)  # out of order (heap), then cancelled
    timer.cancel(ended)
    assert not ended.armed
    await asyncio.sleep(0.2)
    assert fired == ["a", "b", "c", "c2", "d", "e"]
    assert (len(timer._lane), len(timer._heap)) == (0, 0)


async def test_waits_that_end_in_the_order_they_began_leave_the_lane_at_once() -> None:
    """Cancelled from the front, the lane holds only the entries still armed; cancelled behind a live
    front, it is compacted, so it never grows with the number of entries that ended."""
    loop = asyncio.get_running_loop()
    timer = loop_timer(loop)
    now = loop.time()
    marks = [Mark() for _ in range(1000)]
    for i, mark in enumerate(marks):
        timer.add(loop, mark, now + 60 + i)
    for mark in marks[:990]:
        timer.cancel(mark)
    assert len(timer._lane) == 10
    for mark in marks[991:]:  # behind the live front: ended, kept until compacted or reached
        timer.cancel(mark)
    assert len(timer._lane) == 10  # the live front and the 9 that ended behind it (too few to compact)
    timer.cancel(marks[990])  # the front ends: every entry has, and the lane is emptied
    assert len(timer._lane) == 0
    front = Mark()
    for i in range(500):
        timer.add(loop, front if i == 0 else Mark(), now + 60 + i)
    for entry in list(timer._lane)[1:]:
        timer.cancel(entry)
    assert len(timer._lane) <= 1 + 64  # compacted as it went
    assert front.armed
    timer.cancel(front)
    assert len(timer._lane) == 0


async def test_a_front_that_fires_takes_the_ended_entries_behind_it_out_of_the_lane() -> None:
    """The lane's front is never an ended entry, after a firing as after a cancellation: a later
    front that is cancelled then leaves at once (no ended entry is left to compact)."""
    loop = asyncio.get_running_loop()
    timer = loop_timer(loop)
    now = loop.time()
    first, ended, live = Mark(), Mark(), Mark()
    timer.add(loop, first, now + 0.01)
    timer.add(loop, ended, now + 60)
    timer.add(loop, live, now + 61)
    timer.cancel(ended)  # behind the live front: ended, kept
    assert len(timer._lane) == 3
    await asyncio.sleep(0.2)
    assert (first.fired, ended.fired, live.fired) == (1, 0, 0)
    assert list(timer._lane) == [live]  # the ended entry left with the front that fired
    timer.cancel(live)
    assert len(timer._lane) == 0
    assert timer._lane_ended == 0
