"""Deadlines under load: exact expiry, correct attribution, and nothing left behind on the loop.

A cancelled loop timer stays in the loop's heap until the loop next iterates. A coroutine that
makes many quick calls without suspending used to pile up one such timer (and a copied context)
per call: 230 bytes a call through the manager, unbounded. The scopes of a loop now share one
armed timer. These tests pin both sides of that: a tight loop leaves at most one timer, and under
random concurrent, nested and cancelled scopes on a virtual-time loop every deadline still fires
exactly when due, is attributed to the right scope, and never fires for a block that ended.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import tracemalloc
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loops_support import LoopTimers

from otel_resilience import (
    Jitter,
    OperationTimeoutError,
    Retry,
    RetryPolicy,
    RetryStrategy,
    fail_after,
    move_on_after,
)
from otel_resilience.engine import SYSTEM_CLOCK, SyncDeadline
from otel_resilience.testing import FakeClock


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps straight to the next timer when nothing is ready."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now

    def run_all(self, tasks: list[asyncio.Task[object]]) -> None:
        async def drive() -> None:
            for _ in range(10_000):
                if all(task.done() for task in tasks):
                    return
                for _ in range(4):
                    await asyncio.sleep(0)
                if all(task.done() for task in tasks):
                    return
                pending = [h for h in self._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
                if pending:
                    self.virtual_now = max(self.virtual_now, min(h.when() for h in pending))
            raise AssertionError("the tasks never finished: a deadline did not fire")

        self.run_until_complete(drive())


class LoopClock:
    """A clock that reads the loop's (virtual) time, so that deadlines and timers agree."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise AssertionError("not used")


async def test_a_tight_loop_of_deadlines_leaves_no_timer_behind() -> None:
    """10 000 deadline scopes that end in time, without yielding, leave at most one loop timer."""
    timers = LoopTimers(asyncio.get_running_loop())
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            async with fail_after(5.0):
                pass
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        timers.close()
    assert len(timers.set_at) <= 1
    assert retained < 8 * 1024, f"10 000 ended scopes retained {retained} bytes"


@dataclass(frozen=True)
class Plan:
    """One task: an outer deadline, an optional inner one, work, and maybe a cancellation."""

    outer: int
    inner: int | None
    work: float
    cancel_at: float | None


plans = st.builds(
    Plan,
    outer=st.integers(1, 8),
    inner=st.one_of(st.none(), st.integers(1, 8)),
    work=st.integers(0, 9).map(lambda n: n + 0.5),
    cancel_at=st.one_of(st.none(), st.integers(0, 9).map(lambda n: n + 0.25)),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plans, min_size=1, max_size=12), st.integers(0, 3))
def test_concurrent_nested_and_cancelled_deadlines_fire_exactly(tasks_plan: list[Plan], offset: int) -> None:
    """Every deadline fires exactly when due, for the right scope, and never after its block ended."""
    loop = VirtualTimeLoop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    clock = LoopClock(loop)
    try:
        ended_at: dict[int, float] = {}

        async def run(index: int, plan: Plan) -> str:
            await asyncio.sleep(offset)
            try:
                async with fail_after(plan.outer, clock=clock, operation="outer"):
                    if plan.inner is None:
                        await asyncio.sleep(plan.work)
                    else:
                        async with fail_after(plan.inner, clock=clock, operation="inner"):
                            await asyncio.sleep(plan.work)
            finally:
                ended_at[index] = loop.time()
            return "done"

        tasks = [loop.create_task(run(i, plan)) for i, plan in enumerate(tasks_plan)]
        for task, plan in zip(tasks, tasks_plan, strict=True):
            if plan.cancel_at is not None:
                loop.call_at(offset + plan.cancel_at, task.cancel)
        loop.run_all(tasks)

        for index, (task, plan) in enumerate(zip(tasks, tasks_plan, strict=True)):
            limit = plan.outer if plan.inner is None else min(plan.outer, plan.inner)
            ends = min(plan.work, limit)
            if plan.cancel_at is not None:
                ends = min(ends, plan.cancel_at)
            assert ended_at[index] == offset + ends, (plan, ended_at[index], "ended at the wrong time")
            if plan.cancel_at is not None and plan.cancel_at < min(plan.work, limit):
                assert task.cancelled(), (plan, task)
                continue
            if plan.work < limit:
                assert task.result() == "done", (plan, task)
                continue
            error = task.exception()
            assert isinstance(error, OperationTimeoutError), (plan, error)
            tightest = "inner" if plan.inner is not None and plan.inner < plan.outer else "outer"
            assert error.operation == tightest, (plan, error.operation)
        assert not errors, errors
        # Once every task ended, the shared timer (if still armed) runs out and is not re-armed.
        loop.virtual_now += 100.0
        loop.run_until_complete(asyncio.sleep(0))
        live = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert not live, live
        assert not errors, errors
    finally:
        loop.close()


@pytest.mark.parametrize("threads", [4])
def test_deadlines_on_several_loops_in_threads_do_not_interfere(threads: int) -> None:
    """Each thread's loop keeps its own deadlines: short ones fire, long ones do not."""
    results: list[tuple[str, str]] = []
    lock = threading.Lock()

    async def one(index: int) -> None:
        for n in range(50):
            short = n % 2 == 0
            try:
                async with fail_after(0.002 if short else 5.0):
                    await asyncio.sleep(0.01 if short else 0)
                outcome = "done"
            except OperationTimeoutError:
                outcome = "timeout"
            with lock:
                results.append(("short" if short else "long", outcome))

    workers = [threading.Thread(target=asyncio.run, args=(one(i),)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30.0)
        assert not worker.is_alive()
    assert len(results) == threads * 50
    assert all(outcome == ("timeout" if kind == "short" else "done") for kind, outcome in results)


# -- a deadline binds the task that set it, not tasks or threads spawned under it -------------


class FailsTwice:
    """A callable that raises ConnectionError on its first two calls, then returns "ok"."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= 2:
            raise ConnectionError(f"fail {self.calls}")
        return "ok"


def backoff_retry(clock: object, delay: float) -> Retry:
    """A 3-attempt retry with a fixed, unjittered backoff of ``delay`` seconds on ``clock``."""
    policy = RetryPolicy(
        max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=delay, jitter=Jitter.NONE
    )
    return Retry("spawned", policy, clock=clock)  # type: ignore[arg-type]


async def test_a_spawned_task_retries_with_backoffs_longer_than_its_parents_remaining_time() -> None:
    """Inside a 1 s parent scope, a spawned task's 5 s backoffs are not refused for the parent's deadline."""
    clock = FakeClock(0.0)
    retry = backoff_retry(clock, 5.0)
    flaky = FailsTwice()

    async def child() -> str:
        async def call() -> str:
            return flaky()

        return await retry.execute(call)

    async with fail_after(1.0, clock=clock):
        result = await asyncio.wait_for(asyncio.create_task(child()), 10.0)
    assert result == "ok"
    assert flaky.calls == 3
    assert clock.sleeps == [5.0, 5.0]


async def test_a_spawned_task_still_retries_after_its_parents_deadline_passed() -> None:
    """A task started in a scope that has since expired retries as if it had no deadline (none is its own)."""
    retry = backoff_retry(SYSTEM_CLOCK, 0.001)
    flaky = FailsTwice()
    parent_expired = asyncio.Event()

    async def child() -> str:
        await parent_expired.wait()

        async def call() -> str:
            return flaky()

        return await retry.execute(call)

    async with move_on_after(0.02) as scope:
        task = asyncio.create_task(child())
        await asyncio.sleep(3600)
    assert scope.expired
    parent_expired.set()
    assert await asyncio.wait_for(task, 10.0) == "ok"
    assert flaky.calls == 3


def test_a_thread_running_a_copied_context_retries_after_the_owners_deadline_passed() -> None:
    """A sync retry in another thread ignores the sync deadline of the thread whose context it copied."""
    clock = FakeClock(0.0)
    retry = backoff_retry(clock, 0.5)
    flaky = FailsTwice()
    outcome: list[object] = []

    def in_other_thread() -> None:
        try:
            outcome.append(retry.execute_sync(flaky))
        except ConnectionError as error:
            outcome.append(error)

    with SyncDeadline(clock, 1.0, "owner"):
        context = contextvars.copy_context()
    clock.advance(5.0)  # the owner's deadline has long passed
    worker = threading.Thread(target=context.run, args=(in_other_thread,))
    worker.start()
    worker.join(timeout=30.0)
    assert outcome == ["ok"]
    assert flaky.calls == 3
