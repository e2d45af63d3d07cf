"""Deadlines: nested scopes take the minimum, only the tightest arms a timer, own expiry only."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import time
import weakref
from typing import Any

import pytest
from support import run_threads

from otel_resilience import TimeoutHandler
from otel_resilience.engine import (
    SYSTEM_CLOCK,
    AsyncDeadline,
    SyncDeadline,
    current_deadline,
    deadline,
    time_remaining,
)
from otel_resilience.engine.context import DeadlineReachedError, publish_deadline, withdraw_deadline
from otel_resilience.engine.deadline import time_left
from otel_resilience.errors import OperationTimeoutError
from otel_resilience.testing import FakeClock


async def test_no_deadline_by_default() -> None:
    """Outside any scope there is no deadline."""
    assert current_deadline() is None
    assert time_remaining(SYSTEM_CLOCK) == float("inf")


async def test_own_deadline_raises_operation_timeout() -> None:
    """A hung call is cancelled at the scope's deadline and surfaces as OperationTimeoutError."""
    seen: list[str] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "op", "attempt"):
            await hang()
    assert time.monotonic() - started < 2.0
    assert seen == ["cancelled"]
    assert info.value.scope == "attempt"
    assert info.value.operation == "op"
    assert isinstance(info.value, TimeoutError)
    assert current_deadline() is None


async def test_outer_deadline_bounds_inner_and_is_reported_as_outer() -> None:
    """An inner scope with a longer timeout is bounded by the outer one, which owns the error."""
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "outer", "total"):
            async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "inner", "attempt") as inner:
                deadline = current_deadline()
                assert deadline is not None
                assert deadline - time.monotonic() < 1.0
                await asyncio.sleep(3600)
    assert info.value.operation == "outer"
    assert inner.expired is False


async def test_inner_tighter_deadline_wins() -> None:
    """A tighter inner scope fires first and the outer scope lets its error through."""
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "outer"):
            async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "inner", "attempt"):
                await asyncio.sleep(3600)
    assert info.value.operation == "inner"


async def test_external_cancellation_propagates_untouched() -> None:
    """A cancel from outside is not turned into a timeout."""
    started = asyncio.Event()

    async def body() -> None:
        async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "op"):
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fast_body_leaves_no_deadline_behind() -> None:
    """A body that finishes in time restores the outer deadline."""
    async with AsyncDeadline(SYSTEM_CLOCK, 5.0, "op"):
        assert current_deadline() is not None
    assert current_deadline() is None
    await asyncio.sleep(0)


def test_what_is_left_is_read_on_the_clock_the_deadline_was_computed_on() -> None:
    """time_left() reads a deadline on its scope's clock: a fake clock's deadline is not read on
    the system clock, and a later scope of the same thread on another clock is read on that one."""
    assert time_left() == float("inf")
    fake = FakeClock(100.0)
    with SyncDeadline(fake, 2.0, "op"):
        assert time_left() == 2.0
        fake.advance(0.5)
        assert time_left() == 1.5
    assert time_left() == float("inf")
    other = FakeClock(5000.0)
    with SyncDeadline(other, 3.0, "op"):  # the thread's cell, left deadline-free, narrowed again
        assert time_left() == 3.0
    with SyncDeadline(SYSTEM_CLOCK, 30.0, "op"):
        assert 29.0 < time_left() <= 30.0


async def test_what_is_left_of_an_async_deadline_is_read_on_its_clock() -> None:
    fake = FakeClock(7.0)
    async with AsyncDeadline(fake, 4.0, "op"):
        assert time_left() == 4.0
        fake.advance(1.0)
        assert time_left() == 3.0
    assert time_left() == float("inf")


def test_sync_deadline_publishes_and_enforces_on_return() -> None:
    """Sync code sees the deadline; a result after it is a timeout, an error passes through."""
    clock = FakeClock(100.0)
    with SyncDeadline(clock, 1.0, "op"):
        assert current_deadline() == 101.0
        assert time_remaining(clock) == 1.0
        clock.advance(0.5)
    assert current_deadline() is None
    with pytest.raises(OperationTimeoutError, match="timed out after 1 s"):
        with SyncDeadline(clock, 1.0, "op"):
            clock.advance(1.0)
    with pytest.raises(KeyError):
        with SyncDeadline(clock, 1.0, "op"):
            clock.advance(5.0)
            raise KeyError("k")


def test_sync_outer_deadline_is_kept_by_looser_inner() -> None:
    """A looser inner sync scope does not extend the outer deadline."""
    clock = FakeClock(0.0)
    with SyncDeadline(clock, 1.0, "outer"):
        with SyncDeadline(clock, 10.0, "inner"):
            assert current_deadline() == 1.0


def test_publish_and_withdraw_are_the_sync_scopes_two_rules() -> None:
    """What the step's sync driver applies without the object: publish unless bound sooner, late on return."""
    clock = FakeClock(0.0)
    deadline, cell, previous = publish_deadline(clock, 2.0)
    assert (deadline, current_deadline()) == (2.0, 2.0)
    assert cell is not None
    inner, bound, _ = publish_deadline(clock, 5.0)  # the earlier deadline of the same thread binds
    assert (inner, bound, current_deadline()) == (5.0, None, 2.0)
    clock.advance(1.0)
    assert not withdraw_deadline(cell, previous, deadline, clock, None)  # returned in time
    assert current_deadline() is None
    for escaped, late in ((None, True), (DeadlineReachedError, True), (KeyError, False)):
        deadline, cell, previous = publish_deadline(clock, 2.0)
        assert cell is not None
        clock.advance(2.0)
        assert withdraw_deadline(cell, previous, deadline, clock, escaped) is late, escaped
        assert current_deadline() is None


def test_a_sync_step_turns_its_late_engine_wait_into_its_own_timeout() -> None:
    """A DeadlineReachedError from a wait inside the step's own expired deadline is the step's timeout."""
    clock = FakeClock(0.0)
    handler = TimeoutHandler(1.0, default="default", name="own", clock=clock)

    def waits() -> str:
        clock.advance(1.5)
        raise DeadlineReachedError("own", 0.0, "total")

    assert handler.with_timeout_sync(waits) == "default"
    assert handler.get_stats()["timeouts"] == 1
    assert current_deadline() is None


# -- a deadline binds the task (or thread) that set it ----------------------------------------


async def test_a_spawned_task_has_no_deadline_before_or_after_its_parents_passes() -> None:
    """A task created inside a scope sees no deadline, neither while the scope runs nor after it expired."""
    seen: list[tuple[float | None, float]] = []
    parent_expired = asyncio.Event()

    async def child() -> None:
        seen.append((current_deadline(), time_remaining(SYSTEM_CLOCK)))
        await parent_expired.wait()
        seen.append((current_deadline(), time_remaining(SYSTEM_CLOCK)))

    with pytest.raises(OperationTimeoutError):
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "parent"):
            task = asyncio.create_task(child())
            await asyncio.sleep(0)  # the child's first step runs inside the parent's scope
            assert seen == [(None, float("inf"))]
            await asyncio.sleep(3600)
    parent_expired.set()
    await asyncio.wait_for(task, 10.0)
    assert seen == [(None, float("inf")), (None, float("inf"))]


async def test_a_spawned_task_arms_its_own_looser_deadline_and_is_not_cancelled_by_the_parents() -> None:
    """A child's own scope sets its deadline even when the parent's is tighter, and outlives the parent's."""
    own_deadline: list[float | None] = []

    async def child() -> str:
        async with AsyncDeadline(SYSTEM_CLOCK, 10.0, "child") as scope:
            own_deadline.append(current_deadline())
            await asyncio.sleep(0.2)  # longer than the parent's whole budget
        assert scope.expired is False
        return "done"

    async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "parent"):
        parent_deadline = current_deadline()
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
    assert parent_deadline is not None
    assert own_deadline[0] is not None
    assert own_deadline[0] > parent_deadline + 5.0
    assert await asyncio.wait_for(task, 10.0) == "done"


async def test_a_spawned_tasks_own_deadline_fires_after_its_parents_passed() -> None:
    """A child's own timeout cancels it at its own deadline, even after the parent's deadline passed."""
    cancelled: list[str] = []

    async def child() -> None:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.3, "child"):
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append("child")
                raise

    async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "parent"):
        task = asyncio.create_task(child())
        await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        await asyncio.wait_for(task, 10.0)
    assert info.value.operation == "child"
    assert cancelled == ["child"]
    assert time.monotonic() - started < 5.0


def _spawners() -> list[str]:
    """The ways to await children: ``gather`` always, ``TaskGroup`` where asyncio has it (3.11+)."""
    return ["gather", *(["task_group"] if sys.version_info >= (3, 11) else [])]


async def _await_children(spawner: str, coroutines: list[Any]) -> None:
    """Run ``coroutines`` as child tasks and wait for all of them, with ``gather`` or a TaskGroup."""
    if spawner == "gather":
        await asyncio.gather(*coroutines)
        return
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
        for coroutine in coroutines:
            group.create_task(coroutine)


@pytest.mark.parametrize("spawner", _spawners())
async def test_awaited_children_see_no_deadline_but_are_cancelled_with_their_parent(spawner: str) -> None:
    """Children of gather/TaskGroup have no deadline of their own, yet the parent's expiry cancels them."""
    seen: list[float | None] = []
    cancelled: list[tuple[int, float | None]] = []

    async def child(index: int) -> None:
        seen.append(current_deadline())
        async with AsyncDeadline(SYSTEM_CLOCK, 60.0, f"child-{index}") as own:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                assert own.expired is False
                cancelled.append((index, current_deadline()))
                raise

    started = time.monotonic()
    with pytest.raises(OperationTimeoutError) as info:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.05, "parent"):
            await _await_children(spawner, [child(0), child(1)])
    assert time.monotonic() - started < 5.0
    assert info.value.operation == "parent"
    assert seen == [None, None]
    assert sorted(index for index, _ in cancelled) == [0, 1]
    # After the parent's deadline passed, each child still sees only its own (longer) deadline.
    assert all(deadline is not None and deadline - time.monotonic() > 30.0 for _, deadline in cancelled)
    assert current_deadline() is None


async def test_a_thread_started_inside_a_scope_has_no_deadline() -> None:
    """asyncio.to_thread copies the context, but the task's deadline does not bind the thread."""
    async with AsyncDeadline(SYSTEM_CLOCK, 5.0, "parent"):
        assert current_deadline() is not None
        assert await asyncio.to_thread(current_deadline) is None
        assert await asyncio.to_thread(time_remaining, SYSTEM_CLOCK) == float("inf")


def test_a_sync_deadline_binds_its_thread_not_a_thread_running_a_copy_of_its_context() -> None:
    """A context copied into another thread carries no deadline; that thread's own sync scope applies."""
    clock = FakeClock(0.0)
    seen: list[float | None] = []

    def in_other_thread() -> None:
        seen.append(current_deadline())
        with SyncDeadline(clock, 10.0, "other"):
            seen.append(current_deadline())

    with SyncDeadline(clock, 1.0, "owner"):
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(in_other_thread,))
        worker.start()
        worker.join(timeout=10.0)
        assert current_deadline() == 1.0
    assert seen == [None, 10.0]


class _CountingVar:
    """A stand-in for the deadline's context variable that counts its sets and resets."""

    def __init__(self, var: contextvars.ContextVar[Any]) -> None:
        self.var, self.sets, self.resets = var, 0, 0

    def get(self) -> Any:
        return self.var.get()

    def set(self, value: Any) -> contextvars.Token[Any]:
        self.sets += 1
        return self.var.set(value)

    def reset(self, token: contextvars.Token[Any]) -> None:
        self.resets += 1
        self.var.reset(token)


def test_a_threads_sync_scopes_set_the_context_variable_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first sync scope of a thread's calls sets a cell of its own; every later one narrows it in place.

    A ``SyncDeadline`` object, which a generator can leave out of order, sets a cell of its own
    over the one in force, and puts that one back as it ends.
    """
    counting = _CountingVar(deadline._DEADLINE)
    monkeypatch.setattr(deadline, "_DEADLINE", counting)
    clock = FakeClock(0.0)
    seen: list[float | None] = []
    outer = TimeoutHandler(2.0, clock=clock, name="outer")
    inner = TimeoutHandler(1.0, clock=clock, name="inner")
    looser = TimeoutHandler(5.0, clock=clock, name="looser")  # the outer one binds: nothing changes

    def body() -> None:
        inner.with_timeout_sync(lambda: seen.append(current_deadline()))
        looser.with_timeout_sync(lambda: seen.append(current_deadline()))
        seen.append(current_deadline())

    def calls() -> None:  # a new thread: a new, empty context
        for _ in range(3):
            outer.with_timeout_sync(body)
            seen.append(current_deadline())

    worker = threading.Thread(target=calls)
    worker.start()
    worker.join(timeout=10.0)
    assert seen == [1.0, 2.0, 2.0, None] * 3
    assert (counting.sets, counting.resets) == (1, 0)

    def objects() -> None:
        with SyncDeadline(clock, 2.0, "outer"):
            with SyncDeadline(clock, 1.0, "inner"):
                seen.append(current_deadline())
            with SyncDeadline(clock, 5.0, "looser"):
                seen.append(current_deadline())
            seen.append(current_deadline())
        seen.append(current_deadline())

    seen.clear()
    worker = threading.Thread(target=objects)
    worker.start()
    worker.join(timeout=10.0)
    assert seen == [1.0, 2.0, 2.0, None]


def test_a_context_copied_inside_a_sync_scope_has_no_deadline_once_the_scope_ended() -> None:
    """A thread's deadline is its scope's: a copy of the context taken inside does not keep it after."""
    clock = FakeClock(0.0)
    with SyncDeadline(clock, 1.0, "owner"):
        inside = contextvars.copy_context()
        assert inside.run(current_deadline) == 1.0
    assert inside.run(current_deadline) is None
    assert current_deadline() is None


def test_threads_sharing_a_copied_context_each_keep_their_own_deadline() -> None:
    """Eight threads run nested sync scopes at once, each in a copy of one context taken inside a
    scope of the main thread: the copies share the main thread's cell, which none of them changes;
    each thread sees its own deadlines only, and the main thread's stays as it was."""
    clock = FakeClock(0.0)
    with SyncDeadline(clock, 1.0, "main"):
        shared = contextvars.copy_context()
        seen: list[tuple[float | None, ...]] = []

        def scopes(index: int) -> None:
            outer, inner = 10.0 + index, 5.0 + index / 10
            for _ in range(200):
                before = current_deadline()
                with SyncDeadline(clock, outer, "outer"):
                    with SyncDeadline(clock, inner, "inner"):
                        time.sleep(0)  # let the other threads run inside this scope
                        during = current_deadline()
                    between = current_deadline()
                seen.append((before, during, between, current_deadline()))
                assert (before, during, between, current_deadline()) == (None, inner, outer, None)

        indexes = iter(range(8))
        lock = threading.Lock()

        def one_thread() -> None:
            with lock:
                index = next(indexes)
            shared.copy().run(scopes, index)

        run_threads(8, one_thread)
        assert len(seen) == 8 * 200
        assert current_deadline() == 1.0
        assert shared.run(current_deadline) == 1.0  # the main thread's, in the context it copied
    assert current_deadline() is None


async def test_in_a_task_sync_and_async_scopes_nest_whichever_made_the_cell() -> None:
    """A task's sync scopes narrow the cell its async scopes set, and the other way round."""

    async def spawned() -> float | None:
        return current_deadline()

    with SyncDeadline(SYSTEM_CLOCK, 100.0, "sync outer"):
        outer = current_deadline()
        assert outer is not None
        async with AsyncDeadline(SYSTEM_CLOCK, 50.0, "async inner"):
            inner = current_deadline()
            assert inner is not None
            assert inner < outer
            with SyncDeadline(SYSTEM_CLOCK, 200.0, "sync looser"):
                assert current_deadline() == inner
            with SyncDeadline(SYSTEM_CLOCK, 1.0, "sync tighter"):
                tightest = current_deadline()
                assert tightest is not None
                assert tightest < inner
            assert current_deadline() == inner
        assert current_deadline() == outer
        assert await asyncio.create_task(spawned()) is None  # a spawned task: none of ours
    assert current_deadline() is None


async def test_a_deadline_scope_cannot_be_entered_twice() -> None:
    """Entering an async or sync scope a second time raises RuntimeError and leaves no deadline."""
    scope = AsyncDeadline(SYSTEM_CLOCK, 5.0, "once")
    async with scope:
        with pytest.raises(RuntimeError, match="already been entered"):
            async with scope:
                pass
    with pytest.raises(RuntimeError, match="already been entered"):
        async with scope:
            pass
    sync_scope = SyncDeadline(FakeClock(), 5.0, "once")
    with sync_scope:
        pass
    with pytest.raises(RuntimeError, match="already been entered"):
        with sync_scope:
            pass
    assert current_deadline() is None


async def test_a_copied_context_does_not_keep_the_finished_task_that_set_its_deadline() -> None:
    """The deadline's owner is held weakly: a context copied inside the scope frees the task.

    The loop keeps a cancelled timer handle (with the context it copied) until the handle's time
    comes; a hung ``sleep(3600)`` cancelled by the deadline leaves one behind. That must not keep
    the finished task alive, with its exception, traceback and every frame of the call.
    """
    copies: list[contextvars.Context] = []

    async def call() -> None:
        async with AsyncDeadline(SYSTEM_CLOCK, 0.01, "op", "attempt"):
            copies.append(contextvars.copy_context())
            await asyncio.sleep(3600)

    task = asyncio.ensure_future(call())
    with pytest.raises(OperationTimeoutError):
        await task
    finished = weakref.ref(task)
    del task
    for _ in range(3):  # the loop's callbacks for the finished task run
        await asyncio.sleep(0)
    gc.collect()
    assert finished() is None, "the copied context kept the finished task alive"
    # The copy still reads as a deadline, for no task: another owner never inherits it.
    assert copies[0].run(current_deadline) is None


# -- deadlines of one owner on two clocks: compared through the seconds left ---------------------


@pytest.mark.parametrize(("outer_start", "inner_start"), [(0.0, 1000.0), (1000.0, 0.0)])
def test_a_tighter_sync_scope_on_another_clock_narrows_by_the_seconds_left(
    outer_start: float, inner_start: float
) -> None:
    """A 5 s scope under a 10 s one of another clock: 5 s are left inside, the outer's 10 s after it."""
    outer_clock, inner_clock = FakeClock(outer_start), FakeClock(inner_start)
    with SyncDeadline(outer_clock, 10.0, "outer"):
        with SyncDeadline(inner_clock, 5.0, "inner") as inner:
            assert time_left() == 5.0
            assert time_remaining(inner_clock) == time_remaining(outer_clock) == 5.0
            outer_clock.advance(1.0)
            assert time_left() == 4.0  # the deadline in force stays on the clock of the cell
        assert not inner.expired
        assert time_left() == 9.0
    assert time_left() == float("inf")


@pytest.mark.parametrize(("outer_start", "inner_start"), [(0.0, 1000.0), (1000.0, 0.0)])
def test_a_looser_sync_scope_on_another_clock_is_bound_by_the_seconds_left(
    outer_start: float, inner_start: float
) -> None:
    """A 60 s scope under a 10 s one of another clock: the outer binds; a return in time is a result."""
    outer_clock, inner_clock = FakeClock(outer_start), FakeClock(inner_start)
    with SyncDeadline(outer_clock, 10.0, "outer") as outer:
        with SyncDeadline(inner_clock, 60.0, "inner"):
            assert time_left() == 10.0
            inner_clock.advance(2.0)  # the inner's call takes 2 s, on its clock
        assert time_left() == 10.0
    assert not outer.expired


def test_what_is_left_of_a_deadline_is_the_same_whatever_clock_asks() -> None:
    """time_remaining(clock) reads the deadline on its own clock: seconds are the same on every clock."""
    with SyncDeadline(FakeClock(1000.0), 2.0, "op"):
        assert time_remaining(FakeClock(0.0)) == time_remaining(SYSTEM_CLOCK) == time_left() == 2.0


async def test_a_tighter_async_scope_on_another_clock_fires_and_publishes_on_the_clock_in_force() -> None:
    """A 0.05 s scope on a clock far ahead, under a 2 s one: it is the tightest, armed, and fires."""
    outer_clock = FakeClock(0.0)
    with pytest.raises(OperationTimeoutError) as caught:
        async with AsyncDeadline(outer_clock, 2.0, "outer"):
            async with AsyncDeadline(FakeClock(1e9), 0.05, "inner", "attempt"):
                assert current_deadline() == 0.05  # on the outer's clock, where the cell is
                assert time_left() == 0.05
                await asyncio.sleep(3600)
    assert caught.value.operation == "inner"


async def test_a_looser_async_scope_on_another_clock_leaves_the_earlier_deadline_in_force() -> None:
    """A 60 s scope on a clock far behind, under a 30 s one: what is left is the outer's 30 s."""
    async with AsyncDeadline(FakeClock(1000.0), 30.0, "outer"):
        async with AsyncDeadline(FakeClock(0.0), 60.0, "inner"):
            assert current_deadline() == 1030.0
            assert time_left() == 30.0
        assert time_left() == 30.0


@pytest.mark.parametrize("scope_class", [AsyncDeadline, SyncDeadline])
@pytest.mark.parametrize(
    ("timeout", "error", "rule"),
    [
        (float("nan"), ValueError, "a finite duration"),
        (float("inf"), ValueError, "a finite duration"),
        (-1.0, ValueError, ">= 0 seconds"),
        ("5", TypeError, "a duration in seconds"),
        (True, TypeError, "a duration in seconds"),
    ],
)
def test_a_deadline_scope_refuses_a_timeout_that_is_no_duration_when_made(
    scope_class: type[Any], timeout: object, error: type[Exception], rule: str
) -> None:
    """A scope made directly refuses a bad timeout, naming it, as fail_after does its seconds.

    Taken as given, a NaN timeout never expired (a sync scope's block was never late) and, in an
    async scope, put a NaN time in its loop's shared timer, whose order it broke: every other
    scope on that loop then ran past its own deadline while it was open.
    """
    with pytest.raises(error, match=rf"{scope_class.__name__}\.timeout must be {rule}"):
        scope_class(SYSTEM_CLOCK, timeout, "op")


@pytest.mark.parametrize("scope_class", [AsyncDeadline, SyncDeadline])
def test_a_deadline_scope_refuses_a_clock_operation_or_scope_that_is_not_one_when_made(
    scope_class: type[Any],
) -> None:
    """The clock, the operation and the scope name are checked when the scope is made, not when entered."""
    name = scope_class.__name__
    with pytest.raises(TypeError, match=rf"{name}\.clock must be a Clock"):
        scope_class(None, 1.0, "op")
    with pytest.raises(TypeError, match=rf"{name}\.operation must be a str"):
        scope_class(SYSTEM_CLOCK, 1.0, 1)
    with pytest.raises(ValueError, match=rf"{name}\.scope must be a non-empty name"):
        scope_class(SYSTEM_CLOCK, 1.0, "op", "")


async def test_a_zero_timeout_is_a_deadline_scope_that_is_due_at_once() -> None:
    """A zero timeout is accepted (as fail_after(0)): the block is cancelled at its first await."""
    with pytest.raises(OperationTimeoutError):
        async with AsyncDeadline(SYSTEM_CLOCK, 0.0, "zero"):
            await asyncio.sleep(5)
