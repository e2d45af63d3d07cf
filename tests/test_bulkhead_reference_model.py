"""The bulkhead against a small reference model of its documented rules, over seeded random runs.

The rules (README's bulkhead section, ``BulkheadConfig``, ``BulkheadStats``): at most
``max_concurrent`` calls run; at most ``max_waiting`` wait, served in FIFO order, each for at
most ``timeout`` seconds (then ``BulkheadTimeoutError``); a call that finds every slot busy and
the queue full is refused at once (``BulkheadFullError``); a cancelled waiter leaves the queue
(``cancelled``), a cancelled runner gives its slot back (``completed``), at once; a larger
``max_concurrent`` hands its new slots to the waiters at once, a smaller one cancels nothing; a
smaller ``max_waiting`` keeps the queued calls, and a policy's reload keeps the queue timeout of
the calls that wait. A wait that an enclosing deadline ends first is that deadline's
``OperationTimeoutError`` (counted ``cancelled``), in a thread as in a task; a run it ends is
``completed``. Threads, tasks and tasks of a second event loop share one limit and one queue.

Async runs use an event loop on virtual time (what the queue timeouts and the deadlines' timers
are timed on), so that each comes exactly when the test moves the time past it.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from otel_resilience import ResilienceConfig, ResilienceManager, TimeoutHandler
from otel_resilience.engine import SyncDeadline
from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError, OperationTimeoutError
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig
from otel_resilience.patterns.timeout import fail_after
from otel_resilience.testing import FakeClock

START = 1000.0
"""The virtual loop's time when a run starts (the model's time 0)."""

RUNNING, WAITING, DONE, FULL, TIMED_OUT, CANCELLED = (
    "running",
    "waiting",
    "done",
    "full",
    "timed_out",
    "cancelled",
)
DEADLINE = "deadline"
"""Ended by the deadline of a ``fail_after`` around the call: its ``OperationTimeoutError``."""


# --- the reference model -----------------------------------------------------------------------


@dataclass
class Model:
    """What the documentation says a bulkhead does, in the plainest terms."""

    max_concurrent: int
    max_waiting: int
    timeout: float = 60.0
    """The queue timeout of the calls that queue from now on (those queued keep theirs)."""
    now: float = 0.0
    running: list[int] = field(default_factory=list)
    queue: list[tuple[int, float]] = field(default_factory=list)
    """(call, deadline) in arrival order."""
    outcome: dict[int, str] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    rejected: int = 0
    timed_out: int = 0
    cancelled: int = 0
    peak_active: int = 0
    peak_waiting: int = 0
    deadlines: dict[int, float] = field(default_factory=dict)
    """The deadline of an enclosing scope, of the calls that have one."""

    def hand_over(self) -> None:
        while self.queue and len(self.running) < self.max_concurrent:
            call, _ = self.queue.pop(0)
            self.running.append(call)
            self.outcome[call] = RUNNING
        self.peak_active = max(self.peak_active, len(self.running))

    def start(self, call: int, timed: bool = True, cut: bool = False) -> None:
        self.total += 1
        if len(self.running) < self.max_concurrent:
            self.running.append(call)
            self.outcome[call] = RUNNING
            self.peak_active = max(self.peak_active, len(self.running))
        elif len(self.queue) < self.max_waiting:
            # A thread's queue timeout is in real time, which no run here lets pass.
            self.queue.append((call, self.now + self.timeout if timed else math.inf))
            self.outcome[call] = WAITING
            self.peak_waiting = max(self.peak_waiting, len(self.queue))
            if cut:  # an enclosing deadline ends the wait: its timeout, counted cancelled
                self.queue.pop()
                self.cancelled += 1
                self.outcome[call] = DEADLINE
        else:
            self.rejected += 1
            self.outcome[call] = FULL

    def finish(self, call: int, outcome: str = DONE) -> None:
        """End a running call (it returned, or was cancelled: either way ``completed``)."""
        self.running.remove(call)
        self.completed += 1
        self.outcome[call] = outcome
        self.hand_over()

    def cancel_waiting(self, call: int) -> None:
        self.queue = [(c, d) for c, d in self.queue if c != call]
        self.cancelled += 1
        self.outcome[call] = CANCELLED

    def events(self, until: float) -> list[float]:
        """The times, up to ``until``, at which something is due: a queue timeout, a deadline."""
        due = {deadline for _, deadline in self.queue}
        due |= {self.deadlines[c] for c in self.running + [c for c, _ in self.queue] if c in self.deadlines}
        return sorted(t for t in due if self.now < t <= until)

    def advance_to(self, when: float) -> None:
        """Move the time to ``when``, at most one due time away: what is due then ends."""
        self.now = when
        for call, deadline in list(self.queue):
            if deadline <= self.now:
                self.queue.remove((call, deadline))
                self.timed_out += 1
                self.outcome[call] = TIMED_OUT
        for call, deadline in list(self.queue):
            if self.deadlines.get(call, math.inf) <= self.now:  # the scope's, not the queue's timeout
                self.queue.remove((call, deadline))
                self.cancelled += 1
                self.outcome[call] = DEADLINE
        for call in list(self.running):
            if self.deadlines.get(call, math.inf) <= self.now:
                self.finish(call, DEADLINE)

    def resize(self, max_concurrent: int, max_waiting: int, timeout: float = 60.0) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.hand_over()

    def stats(self) -> dict[str, Any]:
        return {
            "active": len(self.running),
            "waiting": len(self.queue),
            "max_concurrent": self.max_concurrent,
            "max_waiting": self.max_waiting,
            "total": self.total,
            "completed": self.completed,
            "rejected": self.rejected,
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "peak_active": self.peak_active,
            "peak_waiting": self.peak_waiting,
            "available": self.max_concurrent - len(self.running),
        }


def stats_of(bulkhead: Bulkhead) -> dict[str, Any]:
    stats = dict(bulkhead.get_stats())
    del stats["name"]
    return stats


def resize(bulkhead: Bulkhead, max_concurrent: int, max_waiting: int) -> None:
    """Reconfigure as a manager's reload does (same queue timeout: the default)."""
    bulkhead._reconfigure(BulkheadConfig(max_concurrent=max_concurrent, max_waiting=max_waiting))


# --- async: tasks on an event loop of virtual time ---------------------------------------------


class LoopClock:
    """The running loop's (virtual) time, as a clock for deadline scopes."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def sleep_sync(self, seconds: float) -> None:
        raise AssertionError("no sync sleep on the loop's clock")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when the test moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = START

    def time(self) -> float:
        return self.virtual_now


class AsyncCall:
    """A task calling ``bulkhead.execute`` with a body that runs until its gate is set."""

    kind = "async"

    def __init__(self, bulkhead: Bulkhead, number: int, deadline: float | None = None) -> None:
        self.number = number
        self.gate = asyncio.Event()
        self.started = False
        if deadline is None:
            self.task = asyncio.create_task(bulkhead.execute(self.body))
        else:
            self.task = asyncio.create_task(self.within(bulkhead, deadline))

    async def within(self, bulkhead: Bulkhead, seconds: float) -> str:
        async with fail_after(seconds, clock=LoopClock(), operation=f"deadline{self.number}"):
            return await bulkhead.execute(self.body)

    async def body(self) -> str:
        self.started = True
        await self.gate.wait()
        return f"ok {self.number}"

    def finish(self) -> None:
        self.gate.set()

    def cancel(self) -> None:
        self.task.cancel()

    def end(self) -> None:
        self.task.cancel()

    def observed(self) -> str:
        task = self.task
        if not task.done():
            return RUNNING if self.started else WAITING
        if task.cancelled():
            return CANCELLED
        return outcome_of(task.result, task.exception(), self.number)


class OtherLoop:
    """An event loop of its own, running in a thread (its queue timeouts in real time: never reached)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30.0)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30.0)
        self.loop.close()


class OtherLoopCall:
    """A task of the other loop calling ``bulkhead.execute``, its body running until its gate is set."""

    kind = "other loop"
    other: OtherLoop  # set by the run that uses it

    def __init__(self, bulkhead: Bulkhead, number: int) -> None:
        self.number = number
        self.started = False

        async def create() -> asyncio.Task[str]:
            self.gate = asyncio.Event()
            return asyncio.create_task(bulkhead.execute(self.body))

        self.task: asyncio.Task[str] = self.other.run(create())

    async def body(self) -> str:
        self.started = True
        await self.gate.wait()
        return f"ok {self.number}"

    def finish(self) -> None:
        self.other.loop.call_soon_threadsafe(self.gate.set)

    def cancel(self) -> None:
        self.other.loop.call_soon_threadsafe(self.task.cancel)

    def end(self) -> None:
        self.cancel()

    def observed(self) -> str:
        task = self.task
        if not task.done():
            return RUNNING if self.started else WAITING
        if task.cancelled():
            return CANCELLED
        return outcome_of(task.result, task.exception(), self.number)


class ThreadCall:
    """A thread calling ``bulkhead.execute_sync`` with a body that runs until its gate is set."""

    kind = "sync"

    def __init__(self, bulkhead: Bulkhead, number: int, deadline: float | None = None) -> None:
        self.number = number
        self.gate = threading.Event()
        self.started = False
        self.finished = False
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self.run, args=(bulkhead, deadline), daemon=True)
        self.thread.start()

    def run(self, bulkhead: Bulkhead, deadline: float | None) -> None:
        try:
            if deadline is None:
                self.result = bulkhead.execute_sync(self.body)
            else:  # on a clock of its own, which only a wait the deadline cuts moves
                with SyncDeadline(FakeClock(), deadline, f"deadline{self.number}"):
                    self.result = bulkhead.execute_sync(self.body)
        except BaseException as error:
            self.error = error
        self.finished = True

    def body(self) -> str:
        self.started = True
        assert self.gate.wait(30.0)
        return f"ok {self.number}"

    def finish(self) -> None:
        self.gate.set()

    def end(self) -> None:
        self.gate.set()

    def observed(self) -> str:
        if not self.finished:
            return RUNNING if self.started else WAITING
        return outcome_of(lambda: self.result, self.error, self.number)


def outcome_of(result: Any, error: BaseException | None, number: int) -> str:
    if error is None:
        assert result() == f"ok {number}"
        return DONE
    if isinstance(error, OperationTimeoutError) and not isinstance(error, BulkheadTimeoutError):
        assert error.operation == f"deadline{number}"
        return DEADLINE
    if isinstance(error, BulkheadTimeoutError):
        assert error.reason == "queue_timeout"
        return TIMED_OUT
    if isinstance(error, BulkheadFullError):
        return FULL
    raise error


async def settle(model: Model, bulkhead: Bulkhead, calls: dict[int, Any], threads: bool) -> dict[int, str]:
    """Let the loop (and the threads) run until what is observed can be compared with the model."""
    if not threads:
        for _ in range(30):
            await asyncio.sleep(0)
        return {number: call.observed() for number, call in calls.items()}
    give_up = time.monotonic() + 20.0  # generous: a shared machine
    while True:
        await asyncio.sleep(0)
        observed = {number: call.observed() for number, call in calls.items()}
        if observed == model.outcome and stats_of(bulkhead) == model.stats():
            for _ in range(5):  # and nothing moves on after it
                await asyncio.sleep(0)
            time.sleep(0.002)
            return {number: call.observed() for number, call in calls.items()}
        if time.monotonic() > give_up:
            return observed
        time.sleep(0.0005)


def check(model: Model, bulkhead: Bulkhead, observed: dict[int, str], step: str) -> None:
    assert observed == model.outcome, step
    assert stats_of(bulkhead) == model.stats(), step


KINDS = {
    "async": (AsyncCall,),
    "sync": (ThreadCall,),
    "mixed": (AsyncCall, ThreadCall),
    "policy": (AsyncCall,),
    "loops": (AsyncCall, OtherLoopCall, ThreadCall),
}


async def random_run(seed: int, steps: int, kinds: str) -> None:
    rng = random.Random(seed)
    max_concurrent, max_waiting = rng.randint(1, 3), rng.randint(0, 3)
    name = f"model-{kinds}-{seed}"
    config = BulkheadConfig(max_concurrent=max_concurrent, max_waiting=max_waiting)
    manager = ResilienceManager()
    if kinds == "policy":  # a policy's bulkhead, reloaded by the manager (with other queue timeouts)
        handle = manager.policy(name, ResilienceConfig(bulkhead_config=config))
        bulkhead = handle.bulkhead
        runner: Any = handle
    else:
        bulkhead = runner = Bulkhead(name, config)
    model = Model(max_concurrent, max_waiting)
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    makers = KINDS[kinds]
    threads = ThreadCall in makers
    if OtherLoopCall in makers:
        OtherLoopCall.other = OtherLoop()
    calls: dict[int, Any] = {}
    log: list[str] = []
    try:
        for _ in range(steps):
            running = [c for c, o in model.outcome.items() if o == RUNNING]
            waiting = [c for c, _ in model.queue]
            tasks_running = [c for c in running if calls[c].kind != "sync"]
            tasks_waiting = [c for c in waiting if calls[c].kind != "sync"]
            choice = rng.choices(
                [
                    "start",
                    "finish",
                    "cancel_running",
                    "cancel_waiting",
                    "finish_cancel_next",
                    "advance",
                    "expire_cancel",
                    "resize",
                ],
                [6, 3, 1, 1, 1, 2, 1, 1],
            )[0]
            if choice == "start":
                number = len(calls)
                maker = rng.choice(makers)
                if maker is AsyncCall and rng.random() < 0.3:
                    # Under a deadline of its own; never at the time of anything else that is due
                    # (a queue timeout's time is a whole number of 1/1024 s, this one is not).
                    seconds = rng.randint(1, 100) + (2 * number + 1) / 8192
                    while any(model.now + seconds == due for due in model.deadlines.values()):
                        seconds += 2 / 8192
                    model.deadlines[number] = model.now + seconds
                    calls[number] = AsyncCall(runner, number, seconds)
                elif maker is ThreadCall and rng.random() < 0.3:
                    # Under a deadline so near that it ends a wait in the queue at once (a thread's
                    # wait is cut at the deadline, as the scope's timeout); a call that runs, it
                    # does not end (its clock does not move).
                    calls[number] = ThreadCall(runner, number, 0.01)
                    model.start(number, timed=False, cut=True)
                    log.append(f"start sync {number} under a deadline")
                    observed = await settle(model, bulkhead, calls, threads)
                    check(model, bulkhead, observed, f"seed {seed}: " + "; ".join(log))
                    continue
                else:
                    calls[number] = maker(runner, number)
                model.start(number, timed=calls[number].kind == "async")
                log.append(f"start {calls[number].kind} {number}")
            elif choice == "finish" and running:
                number = rng.choice(running)
                calls[number].finish()
                model.finish(number)
                log.append(f"finish {number}")
            elif choice == "cancel_running" and tasks_running:
                number = rng.choice(tasks_running)
                calls[number].cancel()
                model.finish(number, CANCELLED)
                log.append(f"cancel running {number}")
            elif choice == "cancel_waiting" and tasks_waiting:
                number = rng.choice(tasks_waiting)
                calls[number].cancel()
                model.cancel_waiting(number)
                log.append(f"cancel waiting {number}")
            elif choice == "finish_cancel_next" and running and not threads and waiting:
                # A waiter cancelled after it was handed the slot, before its task resumed.
                number = rng.choice(running)
                calls[number].finish()
                await asyncio.sleep(0)  # the runner's task returns and hands its slot over
                model.finish(number)
                if model.outcome[waiting[0]] != RUNNING or calls[waiting[0]].started:
                    continue
                calls[waiting[0]].task.cancel()
                model.running.remove(waiting[0])
                model.cancelled += 1
                model.outcome[waiting[0]] = CANCELLED
                model.hand_over()  # its slot handed on
                log.append(f"finish {number}, cancel handed-over {waiting[0]}")
            elif choice == "expire_cancel" and model.queue and calls[model.queue[0][0]].kind == "async":
                # A waiter cancelled in the instant its queue timeout fired, before its task resumed:
                # still one timed-out call (it sees its cancellation).
                number, target = model.queue[0]
                for when in [*model.events(target), target]:
                    loop.virtual_now = START + when
                    model.advance_to(when)
                    if when != target:
                        await settle(model, bulkhead, calls, threads)
                if model.outcome[number] == TIMED_OUT:  # no deadline of its own, nor a slot, came first
                    await asyncio.sleep(0)  # the loop's timer fires after this task's turn
                    await asyncio.sleep(0)  # this task's turn comes before the waiter's
                    calls[number].task.cancel()
                    model.outcome[number] = CANCELLED
                    log.append(f"advance to {target}, cancel {number} as it times out")
                else:
                    log.append(f"advance to {target}")
            elif choice == "advance":
                seconds = rng.choice([5.0, 20.0, 45.0])
                if any(deadline == model.now + seconds for _, deadline in model.queue):
                    seconds += 1 / 1024  # never exactly at a deadline
                target = model.now + seconds
                for when in [*model.events(target), target]:  # one due time at a time
                    loop.virtual_now = START + when
                    model.advance_to(when)
                    if when != target:
                        await settle(model, bulkhead, calls, threads)
                log.append(f"advance {seconds}")
            elif choice == "resize":
                max_concurrent, max_waiting = rng.randint(1, 4), rng.randint(0, 3)
                if kinds == "policy":
                    timeout = rng.choice([30.0, 60.0, 90.0]) if max_waiting else 60.0
                    config = BulkheadConfig(
                        max_concurrent=max_concurrent, max_waiting=max_waiting, timeout=timeout
                    )
                    manager.reconfigure(name, ResilienceConfig(bulkhead_config=config))
                    assert handle.bulkhead is bulkhead  # its state kept
                    model.resize(max_concurrent, max_waiting, timeout)
                else:
                    resize(bulkhead, max_concurrent, max_waiting)
                    model.resize(max_concurrent, max_waiting)
                log.append(f"resize {max_concurrent} {max_waiting} {model.timeout}")
            else:
                continue
            observed = await settle(model, bulkhead, calls, threads)
            check(model, bulkhead, observed, f"seed {seed}: " + "; ".join(log))
    finally:
        for call in calls.values():
            call.end()
        await asyncio.gather(*(c.task for c in calls.values() if c.kind == "async"), return_exceptions=True)
        if OtherLoopCall in makers:
            others = [c.task for c in calls.values() if c.kind == "other loop"]

            async def all_ended() -> None:
                await asyncio.gather(*others, return_exceptions=True)

            OtherLoopCall.other.run(all_ended())
            OtherLoopCall.other.close()
        for call in calls.values():
            if call.kind == "sync":
                call.thread.join(30.0)
    stats = bulkhead.get_stats()
    assert (stats["active"], stats["waiting"]) == (0, 0)


def run_on_virtual_time(coroutine: Any) -> None:
    loop = VirtualTimeLoop()
    try:
        loop.run_until_complete(coroutine)
    finally:
        loop.close()


@pytest.mark.parametrize("seed", range(40))
def test_async_calls_follow_the_reference_model(seed: int) -> None:
    run_on_virtual_time(random_run(seed, 60, "async"))


@pytest.mark.parametrize("seed", range(12))
def test_threads_follow_the_reference_model(seed: int) -> None:
    run_on_virtual_time(random_run(seed, 40, "sync"))


@pytest.mark.parametrize("seed", range(12))
def test_threads_and_tasks_share_one_limit_and_one_queue(seed: int) -> None:
    run_on_virtual_time(random_run(seed, 40, "mixed"))


@pytest.mark.parametrize("seed", range(20))
def test_a_policys_bulkhead_reloaded_follows_the_reference_model(seed: int) -> None:
    run_on_virtual_time(random_run(seed, 60, "policy"))


@pytest.mark.parametrize("seed", range(12))
def test_tasks_of_two_loops_and_threads_share_one_limit_and_one_queue(seed: int) -> None:
    run_on_virtual_time(random_run(seed, 40, "loops"))


def test_a_threads_wait_cut_by_a_deadline_on_another_clock_is_that_deadlines_timeout() -> None:
    """A deadline on a test's fake clock ends a thread's wait for a slot of a bulkhead on the system's.

    The wait is cut after the seconds left of the deadline (the same on every clock), and ends as
    the scope's own timeout, counted by it, as in a task: not as the bulkhead's internal signal.
    """
    bulkhead = Bulkhead("two-clocks", BulkheadConfig(max_concurrent=1, max_waiting=1))
    gate = threading.Event()
    holder = threading.Thread(target=bulkhead.execute_sync, args=(lambda: gate.wait(30.0),))
    holder.start()
    try:
        give_up = time.monotonic() + 20.0
        while bulkhead.get_stats()["active"] != 1 and time.monotonic() < give_up:
            time.sleep(0.001)
        clock = FakeClock()
        handler = TimeoutHandler(0.05, name="total", clock=clock)
        with pytest.raises(OperationTimeoutError) as caught:
            handler.with_timeout_sync(bulkhead.execute_sync, lambda: "never")
        assert (type(caught.value), caught.value.operation) == (OperationTimeoutError, "total")
        assert clock.now() == 0.05  # the wait lasted until the deadline, on the deadline's clock
        assert handler.get_stats()["timeouts"] == 1
        with pytest.raises(OperationTimeoutError) as caught, SyncDeadline(clock, 0.05, "outer"):
            bulkhead.execute_sync(lambda: "never")
        assert (type(caught.value), caught.value.operation) == (OperationTimeoutError, "outer")
        stats = bulkhead.get_stats()
        assert (stats["cancelled"], stats["timed_out"], stats["waiting"]) == (2, 0, 0)
    finally:
        gate.set()
        holder.join(30.0)
