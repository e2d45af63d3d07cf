"""The bulkhead checked against a small reference model, step by step (hypothesis).

Random arrivals, completions (returns and raises), cancellations of runners and of waiters,
queue timeouts, and races between them (a slot handed to a waiter that is cancelled or times out
in the same loop iteration) are applied to a real bulkhead on an event loop whose clock is
virtual, so queue timeouts fire exactly when the test moves time. After every step:

* never more than ``max_concurrent`` running, never more than ``max_waiting`` queued;
* the calls that run are exactly the model's, and they started in FIFO order;
* every counter equals the model's; every slot is returned at the end.
"""

from __future__ import annotations

import asyncio
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from otel_resilience.errors import BulkheadFullError, BulkheadTimeoutError
from otel_resilience.patterns.bulkhead import Bulkhead, BulkheadConfig


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test says so (looptime-style)."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now


class JobError(Exception):
    """What a job raises when told to fail."""


class BulkheadMachine(RuleBasedStateMachine):
    """Drives a real bulkhead and the model with the same steps."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.loop_errors: list[dict[str, object]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.tasks: dict[int, asyncio.Task[object]] = {}
        self.gates: dict[int, asyncio.Future[object]] = {}
        self.executing: set[int] = set()
        self.start_order: list[int] = []
        self.peak_executing = 0
        self.next_id = 0
        # The model.
        self.running: list[int] = []
        self.queue: deque[tuple[int, float]] = deque()
        self.admissions: list[int] = []
        self.counts = dict.fromkeys(("total", "completed", "rejected", "timed_out", "cancelled"), 0)
        self.ended: dict[int, str] = {}

    @initialize(max_concurrent=st.integers(1, 3), max_waiting=st.integers(0, 4), timeout=st.integers(1, 4))
    def build(self, max_concurrent: int, max_waiting: int, timeout: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        # a queue's setting: refused without a queue, where no call waits (the default then)
        self.timeout = float(timeout) if max_waiting else BulkheadConfig().timeout
        self.bulkhead = Bulkhead("model", BulkheadConfig(max_concurrent, max_waiting, self.timeout))

    # -- helpers ------------------------------------------------------------------------------

    def settle(self) -> None:
        async def spin() -> None:
            for _ in range(8):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def admit(self, job: int) -> None:
        self.running.append(job)
        self.admissions.append(job)

    def model_release(self, job: int) -> None:
        """A running job ended (returned, raised or was cancelled): its slot goes to the oldest waiter."""
        self.running.remove(job)
        self.counts["completed"] += 1
        if self.queue:
            waiter, _ = self.queue.popleft()
            self.admit(waiter)

    def model_cancel_waiter(self, job: int) -> None:
        self.queue = deque(item for item in self.queue if item[0] != job)
        self.counts["cancelled"] += 1
        self.ended[job] = "cancelled"

    def model_expire(self) -> None:
        now = self.loop.virtual_now
        while self.queue and self.queue[0][1] <= now:
            job, _ = self.queue.popleft()
            self.counts["timed_out"] += 1
            self.ended[job] = "timed_out"

    def queued_ids(self) -> list[int]:
        return [job for job, _ in self.queue]

    # -- rules --------------------------------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def arrive(self, count: int) -> None:
        for _ in range(count):
            job = self.next_id
            self.next_id += 1
            gate: asyncio.Future[object] = self.loop.create_future()
            self.gates[job] = gate

            async def work(job: int = job, gate: asyncio.Future[object] = gate) -> object:
                self.executing.add(job)
                self.start_order.append(job)
                self.peak_executing = max(self.peak_executing, len(self.executing))
                try:
                    return await gate
                finally:
                    self.executing.discard(job)

            self.tasks[job] = self.loop.create_task(self.bulkhead.execute(work))
            self.counts["total"] += 1
            if len(self.running) < self.max_concurrent:
                self.admit(job)
            elif len(self.queue) < self.max_waiting:
                self.queue.append((job, self.loop.virtual_now + self.timeout))
            else:
                self.counts["rejected"] += 1
                self.ended[job] = "rejected"
            self.settle()

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data(), fails=st.booleans())
    def complete_runner(self, data: st.DataObject, fails: bool) -> None:
        job = data.draw(st.sampled_from(self.running))
        gate = self.gates[job]
        if fails:
            gate.set_exception(JobError())
        else:
            gate.set_result(job)
        self.model_release(job)
        self.ended[job] = "failed" if fails else "returned"
        self.settle()

    @precondition(lambda self: bool(self.running))
    @rule(data=st.data())
    def cancel_runner(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.running))
        self.tasks[job].cancel()
        self.model_release(job)
        self.ended[job] = "cancelled_running"
        self.settle()

    @precondition(lambda self: bool(self.queue))
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        job = data.draw(st.sampled_from(self.queued_ids()))
        self.tasks[job].cancel()
        self.model_cancel_waiter(job)
        self.settle()

    @precondition(lambda self: bool(self.running) and bool(self.queue))
    @rule(data=st.data(), cancel_first=st.booleans())
    def race_release_with_cancelled_head_waiter(self, data: st.DataObject, cancel_first: bool) -> None:
        """A slot is freed and the waiter it would go to is cancelled in the same iteration."""
        job = data.draw(st.sampled_from(self.running))
        head = self.queue[0][0]
        if cancel_first:
            self.tasks[head].cancel()
            self.gates[job].set_result(job)
        else:
            self.gates[job].set_result(job)
            self.tasks[head].cancel()
        self.model_cancel_waiter(head)
        self.model_release(job)
        self.ended[job] = "returned"
        self.settle()

    @precondition(lambda self: bool(self.running) and bool(self.queue))
    @rule(data=st.data())
    def race_release_with_head_timeout(self, data: st.DataObject) -> None:
        """A slot is freed in the iteration in which the oldest waiter's queue timeout fires."""
        job = data.draw(st.sampled_from(self.running))
        self.gates[job].set_result(job)
        self.loop.virtual_now = max(self.loop.virtual_now, self.queue[0][1])
        self.model_release(job)
        self.ended[job] = "returned"
        self.model_expire()
        self.settle()

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
    def advance(self, seconds: float) -> None:
        self.loop.virtual_now += seconds
        self.model_expire()
        self.settle()

    # -- checks -------------------------------------------------------------------------------

    @invariant()
    def no_callback_failed(self) -> None:
        assert not self.loop_errors, self.loop_errors

    @invariant()
    def matches_model(self) -> None:
        if not hasattr(self, "bulkhead"):
            return
        stats = self.bulkhead.get_stats()
        assert stats["active"] == len(self.running) <= self.max_concurrent
        assert stats["waiting"] == len(self.queue) <= self.max_waiting
        for key, value in self.counts.items():
            assert stats[key] == value, (key, stats, self.counts)
        assert stats["total"] == (
            stats["active"]
            + stats["waiting"]
            + stats["completed"]
            + stats["rejected"]
            + stats["timed_out"]
            + stats["cancelled"]
        )
        assert self.executing == set(self.running), "the jobs that run are not the model's"
        assert self.start_order == self.admissions, "slots were not handed out in FIFO order"
        assert self.peak_executing <= self.max_concurrent

    @invariant()
    def ended_calls_ended_the_right_way(self) -> None:
        for job, how in self.ended.items():
            task = self.tasks[job]
            assert task.done(), (job, how)
            if how in {"cancelled", "cancelled_running"}:
                assert task.cancelled(), (job, how)
                continue
            error = task.exception()
            if how == "returned":
                assert error is None
                assert task.result() == job
            elif how == "failed":
                assert isinstance(error, JobError)
            elif how == "timed_out":
                assert isinstance(error, BulkheadTimeoutError)
            else:
                assert type(error) is BulkheadFullError

    def teardown(self) -> None:
        if hasattr(self, "bulkhead"):
            # Finish everything still running: every slot must come back.
            while self.running or self.queue:
                for job in list(self.running):
                    self.gates[job].set_result(job)
                    self.model_release(job)
                    self.ended[job] = "returned"
                self.settle()
            stats = self.bulkhead.get_stats()
            assert stats["active"] == 0
            assert stats["waiting"] == 0
        pending = [task for task in self.tasks.values() if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


BulkheadMachine.TestCase.settings = settings(
    max_examples=250,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_bulkhead_matches_reference_model = BulkheadMachine.TestCase
test_bulkhead_matches_reference_model.__doc__ = (
    "After every random step the bulkhead's slots, queue and counts equal the model's."
)
