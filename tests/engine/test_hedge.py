"""The engine's race (engine.hedge): a toy Hedge shows what the async driver promises any step that returns one."""

from __future__ import annotations

import asyncio
import sys
from typing import Any, ClassVar

import pytest

from otel_resilience.engine import ExecutionContext, Hedge, PipelineBuilder, Rejected, Step
from otel_resilience.engine.actions import Wait
from otel_resilience.engine.context import AsyncDeadline
from otel_resilience.engine.hedge import DEADLINE, DELAY, FAILURE, PARALLEL
from otel_resilience.errors import ExecutionRejectedError, OperationTimeoutError
from otel_resilience.testing import FakeClock


class Log(Hedge):
    """A hedge that records every hook the driver calls, and accepts what ``accept`` says."""

    __slots__ = ("delays", "events", "refuse_after")

    def __init__(
        self,
        limit: int,
        *,
        on_failure: bool,
        delays: tuple[float | None, ...] = (None,),
        parallel: bool = False,
    ) -> None:
        super().__init__(limit, on_failure=on_failure, parallel=parallel)
        self.events: list[tuple[Any, ...]] = []
        self.delays = delays
        self.refuse_after: int | None = None

    def delay(self, started: int) -> float | None:
        self.events.append(("delay", started))
        return self.delays[min(started, len(self.delays)) - 1]

    def start(self, ctx: ExecutionContext, trigger: str | None) -> ExecutionContext | None:
        starts = sum(1 for e in self.events if e[0] == "start")
        if self.refuse_after is not None and starts >= self.refuse_after:
            self.events.append(("refused", trigger))
            return None
        self.events.append(("start", trigger))
        return super().start(ctx, trigger)

    def deny(self, trigger: str, reason: str) -> None:
        self.events.append(("denied", trigger, reason))

    def enter(self, attempt: ExecutionContext) -> Any:
        return ("scope", attempt.attempt)

    def accepts(self, attempt: ExecutionContext, result: Any, error: Exception | None) -> bool:
        return error is None and result != "reject"

    def leave(
        self, attempt: ExecutionContext, scope: Any, error: BaseException | None, *, accepted: bool, won: bool
    ) -> None:
        self.events.append(("leave", scope, type(error).__name__ if error else None, accepted, won))

    def end(
        self, ctx: ExecutionContext, winner: ExecutionContext | None, error: BaseException | None
    ) -> None:
        self.events.append(
            ("end", None if winner is None else winner.attempt, type(error).__name__ if error else None)
        )


class Racing(Step):
    """A step whose admit returns the hedge it was given."""

    __slots__ = ("clock", "hedge")
    kind: ClassVar[str] = "racing"

    def __init__(self, hedge: Log) -> None:
        super().__init__()
        self.hedge = hedge
        self.clock = FakeClock()  # the hedge delays run on it

    def admit(self, ctx: ExecutionContext) -> Log:
        return self.hedge


def script(*steps: Any) -> Any:
    """An async function whose n-th call returns, raises or hangs as ``steps[n]`` says."""
    calls = [0]

    async def fn() -> Any:
        step = steps[calls[0]]
        calls[0] += 1
        await asyncio.sleep(0)
        if step == "hang":
            await asyncio.Event().wait()
        if isinstance(step, Exception):
            raise step
        return step

    return fn


async def run(hedge: Log, fn: Any) -> Any:
    return await PipelineBuilder("race").add(Racing(hedge)).build().execute(fn)


async def test_the_original_starts_first_then_a_hedge_after_the_delay() -> None:
    """start(None), then start('delay') once the delay passed; the winner is the only one left to end."""
    hedge = Log(2, on_failure=False, delays=(0.5,))
    assert await run(hedge, script("hang", "second")) == "second"
    starts = [e for e in hedge.events if e[0] == "start"]
    assert starts == [("start", None), ("start", DELAY)]
    leaves = [e for e in hedge.events if e[0] == "leave"]
    assert leaves == [
        ("leave", ("scope", 2), None, True, True),
        ("leave", ("scope", 1), "CancelledError", False, False),
    ]
    assert hedge.events[-1] == ("end", 2, None)


async def test_a_zero_delay_starts_every_attempt_at_once_with_the_trigger_the_hedge_names() -> None:
    """A delay of 0 starts the attempts after the original at once, up to the limit.

    Their trigger is the hedge's mode, not the delay's value: 'parallel' only for a hedge that
    says it runs its attempts in parallel (Hedge.parallel), else 'delay' (a latency hedging whose
    delay function returned 0 still hedges by delay, and reports only the triggers of its mode).
    """
    hedge = Log(3, on_failure=False, delays=(0.0,))
    assert await run(hedge, script("hang", "hang", "third")) == "third"
    assert [e[1] for e in hedge.events if e[0] == "start"] == [None, DELAY, DELAY]
    parallel = Log(3, on_failure=False, delays=(0.0,), parallel=True)
    assert await run(parallel, script("hang", "hang", "third")) == "third"
    assert [e[1] for e in parallel.events if e[0] == "start"] == [None, PARALLEL, PARALLEL]


async def test_an_unacceptable_outcome_starts_the_next_only_with_on_failure() -> None:
    """on_failure: a rejected outcome starts the next at once; without it, the race waits for the others."""
    hedge = Log(2, on_failure=True)
    assert await run(hedge, script("reject", "ok")) == "ok"
    assert [e[1] for e in hedge.events if e[0] == "start"] == [None, FAILURE]
    lonely = Log(2, on_failure=False)
    assert await run(lonely, script("reject", "never")) == "reject"  # no winner: the original's outcome
    assert lonely.events[-1] == ("end", None, None)


async def test_a_refused_start_starts_no_other() -> None:
    """start() returning None ends the hedging; the attempts in flight decide the outcome."""
    hedge = Log(3, on_failure=True)
    hedge.refuse_after = 1
    with pytest.raises(ConnectionError):
        await run(hedge, script(ConnectionError("original")))
    assert [e for e in hedge.events if e[0] in {"start", "refused", "denied"}] == [
        ("start", None),
        ("refused", FAILURE),  # a refusal of start's own: not reported to deny (start knows it)
    ]
    assert hedge.events[-1] == ("end", None, "ConnectionError")


async def test_a_hedge_due_once_the_deadline_passed_is_denied_to_the_hedge() -> None:
    """The original fails after the deadline passed: the failure hedge is not started, and deny says why."""
    hedge = Log(3, on_failure=True)
    racing = Racing(hedge)
    pipeline = PipelineBuilder("race").add(racing).build()
    clock = racing.clock

    async def late_failure() -> str:
        clock.advance(10.0)  # past the 1 s deadline
        await asyncio.sleep(0)
        raise ConnectionError("late")

    with pytest.raises((ConnectionError, OperationTimeoutError)):
        async with AsyncDeadline(clock, 1.0, "race"):
            await pipeline.execute(late_failure)
    assert [e for e in hedge.events if e[0] in {"start", "refused", "denied"}] == [
        ("start", None),
        ("denied", FAILURE, DEADLINE),
    ]


async def test_a_hedge_delay_ending_past_the_deadline_is_not_waited_and_failures_still_hedge() -> None:
    """The deadline comes before the hedge delay ends: no hedge by delay starts and none is denied
    (it never came due); a hedge by failure still starts before the deadline."""
    hedge = Log(3, on_failure=True, delays=(10.0,))
    racing = Racing(hedge)
    pipeline = PipelineBuilder("race").add(racing).build()
    async with AsyncDeadline(racing.clock, 1.0, "race"):
        assert await pipeline.execute(script(ConnectionError("down"), "ok")) == "ok"
    assert [e for e in hedge.events if e[0] in {"start", "refused", "denied"}] == [
        ("start", None),
        ("start", FAILURE),
    ]
    assert racing.clock.sleeps == []  # no hedge delay was waited


async def test_a_hedge_token_under_the_sync_driver_is_refused() -> None:
    """The sync driver cannot race: the Hedge's wait_sync raises TypeError, nothing runs."""
    hedge = Log(2, on_failure=True)
    pipeline = PipelineBuilder("race").add(Racing(hedge)).build()
    with pytest.raises(TypeError, match="hedging is async only"):
        pipeline.execute_sync(lambda: 1)
    assert hedge.events == []


class Gate(Step):
    """A step inside the race that rejects the attempts it is told to (as an open breaker would)."""

    __slots__ = ("rejects",)
    kind: ClassVar[str] = "gate"
    admit_waits: ClassVar[bool] = True

    def __init__(self, *rejects: int) -> None:
        super().__init__()
        self.rejects = rejects

    def admit(self, ctx: ExecutionContext) -> Rejected | None:
        if ctx.attempt in self.rejects:
            return Rejected(ExecutionRejectedError("gate closed"))
        return None


async def test_a_hedge_started_as_another_attempt_wins_never_runs() -> None:
    """A hedge whose task had not run yet when another attempt won ends without running.

    It is cancelled before it ran, as a task started eagerly would never have been made: the
    hedge neither enters nor leaves it (nothing called, nothing counted), and no hedge is denied
    (the race was decided: none was due).
    """
    answered = asyncio.Event()

    class Answering(Log):
        __slots__ = ()

        def start(self, ctx: ExecutionContext, trigger: str | None) -> ExecutionContext | None:
            attempt = super().start(ctx, trigger)
            if trigger == FAILURE:
                answered.set()  # the original answers before the hedge started here runs
            return attempt

    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] == 1:  # the original: answers once the failure hedge starts
            await answered.wait()
            return "ok"
        await asyncio.sleep(0)
        raise ConnectionError("hedge down")  # the delay hedge fails: a hedge by failure follows

    hedge = Answering(4, on_failure=True, delays=(1.0, None))
    pipeline = PipelineBuilder("race").add(Racing(hedge)).add(Gate(3)).build()
    assert await pipeline.execute(fn) == "ok"
    assert calls == [2]
    assert [e for e in hedge.events if e[0] in {"start", "denied"}] == [
        ("start", None),
        ("start", DELAY),
        ("start", FAILURE),
    ]
    leaves = [e for e in hedge.events if e[0] == "leave"]
    assert [e[1:] for e in leaves] == [
        (("scope", 2), "ConnectionError", False, False),
        (("scope", 1), None, True, True),
    ]
    assert hedge.events[-1] == ("end", 1, None)


class Waiting(Wait):
    """An admission that waits for ``event``, then rejects (a bulkhead's queue that times out)."""

    __slots__ = ("event", "waiting")

    def __init__(self, event: asyncio.Event, waiting: asyncio.Event) -> None:
        self.event = event
        self.waiting = waiting

    async def wait(self) -> Any:
        self.waiting.set()
        await self.event.wait()
        raise ExecutionRejectedError("gate closed")


class WaitingGate(Step):
    """A step inside the race whose admission of attempt 2 waits, then rejects it."""

    __slots__ = ("event", "waiting")
    kind: ClassVar[str] = "waiting_gate"
    admit_waits: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.event = asyncio.Event()
        self.waiting = asyncio.Event()

    def admit(self, ctx: ExecutionContext) -> Waiting | None:
        return Waiting(self.event, self.waiting) if ctx.attempt == 2 else None


async def test_an_attempt_rejected_once_another_won_denies_no_hedge() -> None:
    """A hedge rejected by the race's own chain after another attempt won ends a decided race:
    no further hedge was due, so none is reported denied (the race over, nothing is refused).
    It is a loser, told a cancellation as every loser is (its outcome answered nothing)."""
    gate = WaitingGate()

    async def fn() -> str:  # the original: answers once the hedge waits in the gate, and opens it
        await gate.waiting.wait()
        gate.event.set()  # the hedge's admission is rejected right after this answer
        return "ok"

    hedge = Log(3, on_failure=True, delays=(1.0, None))  # a hedge by failure would be due next
    pipeline = PipelineBuilder("race").add(Racing(hedge)).add(gate).build()
    assert await pipeline.execute(fn) == "ok"
    assert [e for e in hedge.events if e[0] in {"start", "denied"}] == [("start", None), ("start", DELAY)]
    leaves = [e for e in hedge.events if e[0] == "leave"]
    assert [e[1:] for e in leaves] == [
        (("scope", 1), None, True, True),
        (("scope", 2), "CancelledError", False, False),
    ]


class Stalling(FakeClock):
    """A clock whose sleep lasts until it is cancelled, and then opens ``gate``."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.Event().wait()
        finally:  # cancelled: the race stops waiting for its hedge delay
            self.gate.set()


class OriginalWaits(Step):
    """A step inside the race whose admission of the original waits until ``gate`` opens."""

    __slots__ = ("gate",)
    kind: ClassVar[str] = "original_waits"
    admit_waits: ClassVar[bool] = True

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__()
        self.gate = gate

    def admit(self, ctx: ExecutionContext) -> Wait | None:
        gate = self.gate

        class Opening(Wait):
            __slots__ = ()

            async def wait(self) -> Any:
                await gate.wait()

        return Opening() if ctx.attempt == 1 else None


async def test_a_race_ended_while_it_stopped_waiting_for_its_delay_starts_no_hedge() -> None:
    """The original ends the race (a function the driver refuses) while the race stops its timer.

    A hedge failed, so a hedge by failure came due; but the race was over before the race could
    start it: none starts (nothing asked of the hedge, none denied), as none starts after a
    refusal the race saw at once, or after one made by an attempt that ran as it started (an
    eager task). The caller gets the refusal's TypeError.
    """
    gate = asyncio.Event()
    calls: list[int] = []

    async def rejected() -> str:
        await asyncio.sleep(0)
        return "reject"

    def fn() -> Any:
        calls.append(1)
        if len(calls) == 1:  # the hedge: an unacceptable outcome
            return rejected()
        return 1  # the original, once the gate opens: no awaitable, refused by the async driver

    hedge = Log(3, on_failure=True, delays=(0.0, 1.0))
    racing = Racing(hedge)
    racing.clock = Stalling(gate)  # its cancellation (the hedge ended first) opens the gate
    pipeline = PipelineBuilder("race").add(racing).add(OriginalWaits(gate)).build()
    with pytest.raises(TypeError, match="must return an awaitable"):
        await pipeline.execute(fn)
    assert len(calls) == 2
    assert [e for e in hedge.events if e[0] in {"start", "refused", "denied"}] == [
        ("start", None),
        ("start", DELAY),
    ]
    assert hedge.events[-1] == ("end", None, "TypeError")
    assert asyncio.all_tasks() == {asyncio.current_task()}


TASK_FACTORIES = ["lazy", "eager"] if sys.version_info >= (3, 12) else ["lazy"]
"""How the loop makes tasks: asyncio's way, and (3.12 on: ``asyncio.eager_task_factory``) eagerly."""


@pytest.mark.parametrize("factory", TASK_FACTORIES)
@pytest.mark.parametrize("ending", ["refused", "own cancellation"])
async def test_an_original_that_ends_the_race_as_it_starts_is_followed_by_no_hedge(
    factory: str, ending: str
) -> None:
    """Parallel hedges are due at once; the original ends the race in its first step.

    Started eagerly, it ends it before the race starts the next attempt: none is started (no
    withdrawal, no fork), as none runs when tasks start lazily.
    """
    loop = asyncio.get_running_loop()
    if factory == "eager":
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    own = asyncio.CancelledError("its own")

    def refused() -> int:
        return 1

    async def cancelled() -> None:
        raise own

    hedge = Log(3, on_failure=False, delays=(0.0,), parallel=True)
    pipeline = PipelineBuilder("race").add(Racing(hedge)).build()
    try:
        if ending == "refused":
            with pytest.raises(TypeError, match="must return an awaitable"):
                await pipeline.execute(refused)
        else:
            with pytest.raises(asyncio.CancelledError):
                await pipeline.execute(cancelled)
    finally:
        loop.set_task_factory(None)
    starts = [e[1] for e in hedge.events if e[0] == "start"]
    assert starts == ([None] if factory == "eager" else [None, PARALLEL, PARALLEL])
