"""Linearizability of the async verbs: tasks on one event loop, cancelled at random, and threads beside them.

The checker and the reference models are the thread histories' own
(``linearizability_support``). Many tasks on one event loop call the async verbs (a breaker's
``call``, a bulkhead's ``execute`` and its queue, a rate limiter's ``call`` that waits for a
reserved permit, a manager policy's ``execute`` and ``for_key(...).execute``); the protected
functions yield with ``await asyncio.sleep(0)`` at seeded points, and tasks are cancelled at
seeded points. A call cancelled before its protected function started is linearized as not
admitted, or (queued, or offered a slot or a permit) as admitted-then-withdrawn, counted
``cancelled``; one cancelled inside it as admitted-then-cancelled (a breaker counts it
cancelled and gives a probe's place back). Mixed histories run threads calling the sync verbs
on the same object while the tasks run. Time is a ``FakeClock`` moved between rounds, or the
loop's own virtual time moved by the coordinator as an operation of the history (waits for a
permit, queue timeouts). The final counts must equal the recorded outcomes.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Iterable
from fractions import Fraction
from typing import Any

import pytest
from linearizability_support import (
    RAISED,
    Boom,
    BreakerState,
    Ignored,
    Model,
    Op,
    Stop,
    WaitingLimiter,
    breaker_model,
    check_rounds,
    keyed_breaker_model,
    linearizations,
    renumber,
    run_round,
    stamp,
)

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    RateLimitedError,
    RateLimiter,
    ResilienceConfig,
    ResilienceManager,
)
from otel_resilience.testing import FakeClock

pytestmark = pytest.mark.usefixtures("fast_switching")

NOT_ADMITTED = "not admitted"
"""An admission that a cancellation ended before the protected function started."""


def loop_round(
    tasks: int,
    body: Callable[[int, list[Op]], Coroutine[Any, Any, None]],
    rng: random.Random,
    *,
    step: Fraction | None = None,
) -> list[Op]:
    """Run ``body(task, ops)`` in ``tasks`` tasks on a new loop, cancelling some at seeded points.

    With ``step``, the loop runs on virtual time, moved by ``step`` (a ``tick`` operation) whenever
    the tasks have had some turns, until they all finish.
    """
    recorded: list[list[Op]] = [[] for _ in range(tasks + 1)]
    loop = VirtualLoop() if step is not None else asyncio.new_event_loop()

    async def ticker(running: list[asyncio.Future[None]]) -> None:
        assert isinstance(loop, VirtualLoop)
        assert step is not None
        while not all(task.done() for task in running):
            for _ in range(20):
                await asyncio.sleep(0)
            tick = Op(tasks, "tick", step, stamp())
            loop.virtual_now += float(step)
            tick.end = stamp()
            recorded[tasks].append(tick)

    cancels = [(rng.randrange(12), rng.randrange(tasks)) for _ in range(rng.randrange(3))]

    async def main() -> None:
        running = [asyncio.ensure_future(body(i, recorded[i])) for i in range(tasks)]
        ticking = asyncio.ensure_future(ticker(running)) if step is not None else None
        for yields, victim in sorted(cancels):
            for _ in range(yields):
                await asyncio.sleep(0)
            running[victim].cancel()
        results = await asyncio.gather(*running, return_exceptions=True)
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
        ]
        assert not errors, errors[:3]
        if ticking is not None:
            await ticking

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    ops = [op for ops in recorded for op in ops]
    for op in ops:
        assert op.end >= 0, op
    return ops


def with_unadmitted(model: Model) -> Model:
    """``model``, with an admission a cancellation ended before the function started changing nothing."""

    def step(state: Hashable, op: Op) -> Iterable[Hashable]:
        if op.result == NOT_ADMITTED:
            return (state,)
        return model(state, op)

    return step


# --------------------------------------------------------------------------------------------
# The circuit breaker: tasks, cancellations, and threads beside them
# --------------------------------------------------------------------------------------------


async def breaker_task_call(
    breaker_call: Callable[[Callable[[], Coroutine[Any, Any, str]]], Coroutine[Any, Any, str]],
    index: int,
    *,
    call: int,
    failed: object,
    pauses: int,
    out: list[Op],
    arg: tuple[Any, ...],
) -> None:
    """One async call through ``breaker_call``, recorded as its admission and its outcome."""
    admit = Op(index, "admit", arg, stamp())
    out.append(admit)
    ending: list[Op] = []

    async def protected() -> str:
        admit.end = stamp()
        admit.result = "admitted"
        try:
            for _ in range(pauses):
                await asyncio.sleep(0)  # let the other tasks (and the canceller) in
        except asyncio.CancelledError:
            ending.append(Op(index, "end", (call, "cancel", *arg[2:]), stamp(), after=id(admit)))  # type: ignore[arg-type]
            raise
        ending.append(Op(index, "end", arg, stamp(), after=id(admit)))  # type: ignore[arg-type]
        if failed in RAISED:
            raise RAISED[failed]
        return "ok"

    try:
        await breaker_call(protected)
    except CircuitOpenError:
        admit.end = stamp()
        admit.result = "rejected"
    except (Boom, Ignored, Stop):
        pass
    except asyncio.CancelledError:
        if admit.end < 0:
            admit.end = stamp()
            admit.result = NOT_ADMITTED
        raise
    finally:
        if ending:
            ending[0].end = stamp()
            ending[0].result = {"cancel": "cancelled", True: "failed", False: "ok", "ignore": "ignored"}[
                ending[0].arg[1]
            ]
            out.append(ending[0])


def breaker_sync_call(
    breaker: CircuitBreaker, index: int, *, call: int, failed: object, pauses: int, out: list[Op]
) -> None:
    """One sync call from a thread, recorded as the thread tests record it."""
    admit = Op(index, "admit", (call, failed), stamp())
    out.append(admit)
    ending: list[Op] = []

    def protected() -> str:
        admit.end = stamp()
        admit.result = "admitted"
        for _ in range(pauses):
            time.sleep(0)
        ending.append(Op(index, "end", (call, failed), stamp(), after=id(admit)))  # type: ignore[arg-type]
        if failed in RAISED:
            raise RAISED[failed]
        return "ok"

    try:
        breaker.call_sync(protected)
    except CircuitOpenError:
        admit.end = stamp()
        admit.result = "rejected"
    except (Boom, Ignored, Stop):
        pass
    if ending:
        ending[0].end = stamp()
        ending[0].result = {"cancel": "cancelled", True: "failed", False: "ok", "ignore": "ignored"}[failed]  # type: ignore[index]
        out.append(ending[0])


def breaker_async_history(
    seed: int, tasks: int = 5, per_task: int = 3, rounds: int = 4, threads: int = 0
) -> tuple[int, int]:
    """Tasks (and ``threads`` threads) calling one breaker; some tasks cancelled at random points."""
    rng = random.Random(seed)
    config = CircuitBreakerConfig(
        failure_threshold=rng.choice([1, 2, 3]),
        success_threshold=rng.choice([1, 2]),
        half_open_max_calls=rng.choice([1, 2, 3]),
        timeout=1.0,
        ignore_exceptions=(Ignored,),
    )
    clock = FakeClock()
    breaker = CircuitBreaker(f"lin-a-{seed}", config, clock=clock)
    choices: list[bool | str] = [True, False, True, False, "ignore"]
    plan = [
        [[rng.choice(choices) for _ in range(per_task)] for _ in range(tasks + threads)]
        for _ in range(rounds)
    ]
    pauses = [rng.randrange(4) for _ in range(64)]
    advances = [Fraction(rng.choice([0, 1, 2, 4]), 2) for _ in range(rounds)]
    calls = itertools.count()

    def run(number: int) -> list[Op]:
        async def body(index: int, out: list[Op]) -> None:
            for failed in plan[number][index]:
                call = next(calls)
                await breaker_task_call(
                    breaker.call,
                    index,
                    call=call,
                    failed=failed,
                    pauses=pauses[call % 64],
                    out=out,
                    arg=(call, failed),
                )
                await asyncio.sleep(0)

        def sync_body(index: int, out: list[Op]) -> None:
            for failed in plan[number][tasks + index]:
                call = next(calls)
                breaker_sync_call(
                    breaker, tasks + index, call=call, failed=failed, pauses=pauses[call % 64], out=out
                )

        if not threads:
            return loop_round(tasks, body, rng)
        found: list[list[Op]] = []
        runner = threading.Thread(target=lambda: found.append(run_round(threads, sync_body)))
        runner.start()
        ops = loop_round(tasks, body, rng)
        runner.join(60.0)
        assert not runner.is_alive(), "a thread hung"
        return ops + found[0]

    def between(number: int) -> Callable[[Hashable], Hashable]:
        clock.advance(float(advances[number]))

        def move(state: Hashable) -> Hashable:
            assert isinstance(state, BreakerState)
            return BreakerState(**{**state.__dict__, "now": state.now + advances[number]})

        return move

    ops = check_rounds(BreakerState(), rounds, run, with_unadmitted(breaker_model(config)), between=between)
    stats = breaker.get_stats()
    ends = [op for op in ops if op.name == "end"]
    assert stats["total_successes"] == sum(1 for op in ends if op.result == "ok")
    assert stats["total_failures"] == sum(1 for op in ends if op.result == "failed")
    assert stats["total_rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert stats["total_ignored"] == sum(1 for op in ends if op.result == "ignored")
    assert stats["total_cancelled"] == sum(1 for op in ends if op.result == "cancelled")
    assert stats["half_open_in_flight"] == 0
    return sum(1 for op in ends if op.result == "cancelled"), sum(
        1 for op in ops if op.result == NOT_ADMITTED
    )


def test_async_breaker_histories_are_linearizable() -> None:
    """Seeded histories of 5 tasks x 3 calls x 4 rounds, some cancelled: each explained by the breaker's rules."""
    seen = [breaker_async_history(seed) for seed in range(300)]
    assert sum(cancelled for cancelled, _ in seen), "no call cancelled inside its function"


def test_mixed_breaker_histories_are_linearizable() -> None:
    """Seeded histories of 3 tasks and 2 threads sharing one breaker: each explained by the breaker's rules."""
    seen = [breaker_async_history(seed, tasks=3, threads=2, rounds=3) for seed in range(120)]
    assert sum(cancelled for cancelled, _ in seen), "no call cancelled inside its function"


# --------------------------------------------------------------------------------------------
# The bulkhead and its queue: tasks cancelled while queued, while offered a slot, while running
# --------------------------------------------------------------------------------------------


def queued_bulkhead_model(limit: int, places: int, timeout: Fraction) -> Model:
    """The queue's rules (the thread tests'), with a cancelled waiter's withdrawal.

    A call is its arrival (admitted at once, queued, rejected; or ``cancelled``: queued or offered
    a slot, then cancelled before its function started), the start of its function, its end
    (which frees the slot for the oldest waiter) and, when cancelled before it ran, its
    withdrawal: out of the queue, or its offered slot passed on; or, when its ``timeout`` in the
    queue ran out, its expiry. The state: running calls, the queue (with each waiter's
    deadline) and the time, moved by ``tick``.
    """

    def pass_on(running: frozenset[int], queue: tuple[tuple[int, Fraction], ...], now: Fraction) -> Hashable:
        if queue and len(running) < limit:  # the slot goes to the oldest waiter
            return (running | {queue[0][0]}, queue[1:], now)
        return (running, queue, now)

    def step(state: Hashable, op: Op) -> Iterable[Hashable]:  # noqa: PLR0911 - one return per rule
        running, queue, now = state  # type: ignore[misc]
        call = op.arg
        waiting = dict(queue)
        if op.name == "tick":
            return ((running, queue, now + op.arg),)
        if op.name == "arrive":
            if op.result == "rejected":
                return (state,) if len(running) >= limit and len(queue) >= places else ()
            if len(running) < limit:
                return ((running | {call}, queue, now),) if op.result in {"admitted", "cancelled"} else ()
            if len(queue) < places:
                return ((running, (*queue, (call, now + timeout)), now),) if op.result != "rejected" else ()
            return ()
        if op.name == "run":
            return (state,) if call in running else ()
        left = tuple(entry for entry in queue if entry[0] != call)
        if op.name == "expire":  # a waiter whose time in the queue ran out, still in it
            return ((running, left, now),) if call in waiting and now >= waiting[call] else ()
        if op.name == "withdraw":
            if call in waiting:
                return ((running, left, now),)
            return (pass_on(running - {call}, queue, now),) if call in running else ()
        return (pass_on(running - {call}, queue, now),) if call in running else ()

    return step


async def bulkhead_task_call(
    bulkhead: Bulkhead, index: int, call: int, pauses: int, out: list[Op], *, hold: float = 0.0
) -> None:
    """One async call through the bulkhead, recorded as arrival, run, leave (or withdrawal)."""
    arrive = Op(index, "arrive", call, stamp())
    ending: list[Op] = []

    async def work() -> None:
        arrive.end = stamp()
        arrive.result = "admitted"
        out.append(Op(index, "run", call, arrive.end, stamp(), after=id(arrive)))  # type: ignore[arg-type]
        try:
            for _ in range(pauses):
                await asyncio.sleep(0)
            if hold:
                await asyncio.sleep(hold)  # the slot held across moves of the loop's time
        finally:
            ending.append(Op(index, "leave", call, stamp()))

    try:
        await bulkhead.execute(work)
    except BulkheadTimeoutError:
        arrive.end = stamp()
        arrive.result = "timed out"
        out.append(Op(index, "expire", call, arrive.start, arrive.end, after=id(arrive)))  # type: ignore[arg-type]
    except BulkheadFullError:
        arrive.end = stamp()
        arrive.result = "rejected"
    except asyncio.CancelledError:
        if arrive.end < 0:  # cancelled while queued, or offered a slot: it withdrew
            arrive.end = stamp()
            arrive.result = "cancelled"
            out.append(Op(index, "withdraw", call, arrive.start, arrive.end, after=id(arrive)))  # type: ignore[arg-type]
        raise
    finally:
        out.append(arrive)
        if ending:
            ending[0].end = stamp()
            out.append(ending[0])


def bulkhead_sync_call(bulkhead: Bulkhead, index: int, call: int, pauses: int, out: list[Op]) -> None:
    """One sync call from a thread, recorded as the thread tests record it."""
    arrive = Op(index, "arrive", call, stamp())
    ending: list[Op] = []

    def work() -> None:
        arrive.end = stamp()
        arrive.result = "admitted"
        out.append(Op(index, "run", call, arrive.end, stamp(), after=id(arrive)))  # type: ignore[arg-type]
        for _ in range(pauses):
            time.sleep(0)
        ending.append(Op(index, "leave", call, stamp()))

    try:
        bulkhead.execute_sync(work)
    except BulkheadFullError:
        arrive.end = stamp()
        arrive.result = "rejected"
    out.append(arrive)
    if ending:
        ending[0].end = stamp()
        out.append(ending[0])


def queued_bulkhead_async_history(
    seed: int, tasks: int = 5, per_task: int = 3, rounds: int = 2, threads: int = 0, *, timed: bool = False
) -> int:
    """Tasks (and threads) through a bulkhead with a queue, some tasks cancelled; returns the withdrawals."""
    rng = random.Random(seed)
    limit, places = rng.choice([1, 2]), rng.choice([1, 2, 3])
    timeout = Fraction(rng.choice([1, 2, 3]), 4) if timed else Fraction(60)
    step = Fraction(1, 4) if timed else None
    holds = [rng.choice([0, 0, 1, 2]) / 4 if timed else 0.0 for _ in range(64)]
    bulkhead = Bulkhead(
        f"lin-aq-{seed}", BulkheadConfig(max_concurrent=limit, max_waiting=places, timeout=float(timeout))
    )
    pauses = [rng.randrange(4) for _ in range(64)]
    calls = itertools.count()

    def run(number: int) -> list[Op]:
        async def body(index: int, out: list[Op]) -> None:
            for _ in range(per_task):
                call = next(calls)
                await bulkhead_task_call(bulkhead, index, call, pauses[call % 64], out, hold=holds[call % 64])
                await asyncio.sleep(0)

        def sync_body(index: int, out: list[Op]) -> None:
            for _ in range(per_task):
                call = next(calls)
                bulkhead_sync_call(bulkhead, tasks + index, call, pauses[call % 64], out)

        if not threads:
            return loop_round(tasks, body, rng, step=step)
        found: list[list[Op]] = []
        runner = threading.Thread(target=lambda: found.append(run_round(threads, sync_body)))
        runner.start()
        ops = loop_round(tasks, body, rng)
        runner.join(60.0)
        assert not runner.is_alive(), "a thread hung"
        return ops + found[0]

    ops = check_rounds(
        (frozenset(), (), Fraction(0)),
        rounds,
        run,
        queued_bulkhead_model(limit, places, timeout),
        between=lambda _: lambda state: (*state[:2], Fraction(0)),  # type: ignore[index]
    )
    stats = bulkhead.get_stats()
    assert stats["completed"] == sum(1 for op in ops if op.name == "leave")
    assert stats["rejected"] == sum(1 for op in ops if op.result == "rejected")
    withdrawn, expired = (sum(1 for op in ops if op.name == name) for name in ("withdraw", "expire"))
    # a waiter cancelled in the instant its queue timeout expires is counted timed_out (documented)
    assert stats["cancelled"] + stats["timed_out"] == withdrawn + expired
    assert stats["cancelled"] <= withdrawn
    assert stats["timed_out"] >= expired
    if not timed:
        assert stats["cancelled"] == withdrawn
    assert stats["total"] == sum(1 for op in ops if op.name == "arrive")
    assert (stats["active"], stats["waiting"]) == (0, 0)
    assert stats["peak_active"] <= limit
    assert stats["peak_waiting"] <= places
    return stats["cancelled"]


def test_async_queued_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories of tasks through a bulkhead with a queue, some cancelled: FIFO hand-over, bounds kept."""
    assert sum(queued_bulkhead_async_history(seed) for seed in range(300)), "no waiter cancelled"


def test_mixed_queued_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories of 3 tasks and 2 threads sharing one bulkhead's queue: FIFO hand-over, bounds kept."""
    assert sum(queued_bulkhead_async_history(seed, tasks=3, threads=2) for seed in range(120)), (
        "no waiter cancelled"
    )


# --------------------------------------------------------------------------------------------
# The rate limiters: tasks that wait for a reserved permit on a loop of virtual time, cancelled
# --------------------------------------------------------------------------------------------


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when the coordinator moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now


class TaskClock:
    """The loop's virtual time as the limiter's clock; a task's first sleep names its reserved permit."""

    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop
        self.asleep: dict[asyncio.Task[Any], float] = {}
        self.hooks: dict[asyncio.Task[Any], Callable[[float], None]] = {}

    def now(self) -> float:
        return self.loop.virtual_now

    async def sleep(self, seconds: float, /) -> None:
        task = asyncio.current_task()
        assert task is not None
        hook = self.hooks.pop(task, None)
        if hook is not None:
            hook(self.now() + seconds)  # the reservation's time: the wait was granted
        self.asleep[task] = self.now() + seconds
        try:
            await asyncio.sleep(seconds)
        finally:
            del self.asleep[task]

    def sleep_sync(self, seconds: float, /) -> None:
        raise AssertionError("tasks only")

    def quiet(self, tasks: list[asyncio.Task[Any]]) -> bool:
        """Every task has finished or sleeps until a time still to come."""
        now = self.now()
        return all(task.done() or self.asleep.get(task, now) > now for task in tasks)


def waiting_limiter_async_history(seed: int, algorithm: str, tasks: int = 4, per_task: int = 3) -> int:
    """Tasks that take a permit now, reserve one and wait for it (cancelled while waiting, at random), or are refused.

    As the thread histories: a waiting request is its reservation and its claim (or its
    abandonment, when the task is cancelled while it waits); the coordinator moves the loop's
    time by a quarter second whenever every task sleeps or has finished, each move an operation.
    Returns the number of waiters cancelled.
    """
    rng = random.Random(seed)
    drawn = WaitingLimiter.draw(rng, algorithm)
    burst = drawn.burst
    loop = VirtualLoop()
    clock = TaskClock(loop)
    limiter = RateLimiter(
        f"lin-aw-{seed}",
        drawn.config(),
        clock=clock,
    )
    ops: list[Op] = []
    calls = itertools.count()

    async def worker(index: int) -> None:
        for _ in range(per_task):
            call = next(calls)
            request = Op(index, "request", call, stamp())
            claim: list[Op] = []

            def granted(due: float, request: Op = request, call: int = call, claim: list[Op] = claim) -> None:
                request.end = stamp()
                request.result = ("wait", Fraction(due))
                claim.append(Op(index, "claim", call, -1, after=id(request)))  # type: ignore[arg-type]

            async def protected(request: Op = request, claim: list[Op] = claim) -> None:
                if claim:
                    claim[0].end = stamp()
                else:
                    request.end = stamp()
                    request.result = "now"

            task = asyncio.current_task()
            assert task is not None
            clock.hooks[task] = granted
            try:
                await limiter.call(protected)
            except RateLimitedError as error:
                request.end = stamp()
                request.result = ("refused", Fraction(error.retry_after))
            except asyncio.CancelledError:  # its reservation given back: a claim that gave up
                claim[0].name = "abandon"
                claim[0].end = stamp()
                raise
            finally:
                clock.hooks.pop(task, None)
                ops.append(request)
                ops.extend(claim)

    async def coordinate() -> None:
        running = [asyncio.create_task(worker(i)) for i in range(tasks)]
        step = Fraction(1, 4)
        while not all(task.done() for task in running):
            for _ in range(10_000):
                if clock.quiet(running):
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("the tasks never settled")
            asleep = [task for task in running if task in clock.asleep]
            if asleep and rng.random() < 0.3:  # a waiter cancelled while it waits
                rng.choice(asleep).cancel()
                continue
            if all(task.done() for task in running):
                break
            tick = Op(-1, "tick", step, stamp())
            loop.virtual_now += float(step)
            tick.end = stamp()
            ops.append(tick)
            woken = [task for task in running if clock.asleep.get(task, math.inf) <= loop.virtual_now]
            if woken and rng.random() < 0.3:  # a waiter cancelled as its permit falls due, before it runs
                rng.choice(woken).cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for task in running:
            if not task.cancelled():
                assert task.exception() is None, task.exception()

    try:
        loop.run_until_complete(coordinate())
    finally:
        loop.close()
    for op in ops:  # a claim may come any time after its reservation: the model checks its permit is due
        if op.name in {"claim", "abandon"}:
            op.start = 0
    bucket = algorithm == "token_bucket"
    history = renumber(ops)
    first = Fraction(burst) if bucket else ()
    model = drawn.model()
    ends = linearizations({(first, Fraction(0), 0, ())}, history, model)
    assert ends, "no linearization: " + "; ".join(
        f"t{op.thread} {op.name}({op.arg})={op.result} [{op.start},{op.end}]" for op in history
    )
    stats = limiter.get_stats()
    assert stats["admitted"] == sum(1 for op in history if op.result == "now" or op.name == "claim")
    assert stats["waited"] == sum(1 for op in history if op.name == "claim")
    assert stats["rejected"] == sum(1 for op in history if op.name == "request" and op.result[0] == "refused")
    assert stats["waiting"] == 0
    assert stats["cancelled"] == sum(1 for op in history if op.name == "abandon")
    return stats["cancelled"]


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_waiting_rate_limiter_task_histories_are_linearizable(algorithm: str) -> None:
    """Seeded histories of 4 tasks x 3 requests on virtual time, waiters cancelled: FIFO, exact times, holes given back."""
    assert sum(waiting_limiter_async_history(seed, algorithm) for seed in range(300)), "no waiter cancelled"


# --------------------------------------------------------------------------------------------
# A manager's policy: its breaker, per key or not, called by tasks (cancelled) and threads
# --------------------------------------------------------------------------------------------


def policy_history(
    seed: int, *, keyed: bool, tasks: int = 4, threads: int = 0, rounds: int = 4, kept: int = 3
) -> int:
    """Calls through a manager's policy (``for_key(...).execute`` or ``execute``), ``kept`` keys kept; returns the cancelled."""
    rng = random.Random(seed)
    config = CircuitBreakerConfig(
        failure_threshold=rng.choice([1, 2]) if kept >= 3 else 1,  # see keyed_breaker_model
        success_threshold=rng.choice([1, 2]),
        half_open_max_calls=rng.choice([1, 2]),
        timeout=1.0,
    )
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    keys = ("a", "b", "c") if keyed else ("-",)
    if keyed:
        handle = manager.policy(
            f"lin-ak-{seed}", ResilienceConfig(circuit_breaker=config), max_keys=kept, idle_ttl=None
        )
    else:
        handle = manager.policy(f"lin-ap-{seed}", ResilienceConfig(circuit_breaker=config))
    plan = [
        [[(rng.choice(keys), rng.random() < 0.4) for _ in range(3)] for _ in range(tasks + threads)]
        for _ in range(rounds)
    ]
    pauses = [rng.randrange(4) for _ in range(64)]
    advances = [Fraction(rng.choice([0, 1, 2, 4]), 2) for _ in range(rounds)]
    calls = itertools.count()

    def view(key: str) -> Any:
        return handle.for_key(key) if keyed else handle

    def run(number: int) -> list[Op]:
        async def body(index: int, out: list[Op]) -> None:
            for key, failed in plan[number][index]:
                call = next(calls)
                await breaker_task_call(
                    view(key).execute,
                    index,
                    call=call,
                    failed=failed,
                    pauses=pauses[call % 64],
                    out=out,
                    arg=(call, failed, key),
                )
                await asyncio.sleep(0)

        def sync_body(index: int, out: list[Op]) -> None:
            for key, failed in plan[number][tasks + index]:
                call = next(calls)
                admit = Op(tasks + index, "admit", (call, failed, key), stamp())
                out.append(admit)
                ending: list[Op] = []

                def protected(
                    admit: Op = admit,
                    call: int = call,
                    failed: bool = failed,
                    key: str = key,
                    ending: list[Op] = ending,
                ) -> str:
                    admit.end = stamp()
                    admit.result = "admitted"
                    for _ in range(pauses[call % 64]):
                        time.sleep(0)
                    ending.append(Op(tasks + index, "end", (call, failed, key), stamp(), after=id(admit)))  # type: ignore[arg-type]
                    if failed:
                        raise Boom
                    return "ok"

                try:
                    view(key).execute_sync(protected)
                except CircuitOpenError:
                    admit.end = stamp()
                    admit.result = "rejected"
                except Boom:
                    pass
                if ending:
                    ending[0].end = stamp()
                    ending[0].result = "failed" if failed else "ok"
                    out.append(ending[0])

        if not threads:
            return loop_round(tasks, body, rng)
        found: list[list[Op]] = []
        runner = threading.Thread(target=lambda: found.append(run_round(threads, sync_body)))
        runner.start()
        ops = loop_round(tasks, body, rng)
        runner.join(60.0)
        assert not runner.is_alive(), "a thread hung"
        return ops + found[0]

    def between(number: int) -> Callable[[Hashable], Hashable]:
        clock.advance(float(advances[number]))

        def move(state: Hashable) -> Hashable:
            return tuple(
                (key, BreakerState(**{**value.__dict__, "now": value.now + advances[number]}))
                for key, value in state  # type: ignore[attr-defined]
            )

        return move

    start = tuple((key, BreakerState()) for key in keys)
    ops = check_rounds(
        start, rounds, run, keyed_breaker_model(config, evicting=kept < len(keys)), between=between
    )
    stats = handle.get_stats()["circuit_breaker"]
    assert stats is not None
    ends = [op for op in ops if op.name == "end"]
    assert stats["total_successes"] == sum(1 for op in ends if op.result == "ok")
    assert stats["total_failures"] == sum(1 for op in ends if op.result == "failed")
    assert stats["total_rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert stats["total_cancelled"] == sum(1 for op in ends if op.result == "cancelled")
    return stats["total_cancelled"]


@pytest.mark.parametrize("keyed", [True, False], ids=["for_key", "policy"])
def test_policy_task_histories_are_linearizable(keyed: bool) -> None:
    """Seeded histories of tasks through a manager's policy, some cancelled: each key's breaker explained by its rules."""
    assert sum(policy_history(seed, keyed=keyed) for seed in range(150)), "no call cancelled"


@pytest.mark.parametrize("keyed", [True, False], ids=["for_key", "policy"])
def test_mixed_policy_histories_are_linearizable(keyed: bool) -> None:
    """Seeded histories of 3 tasks and 2 threads through one policy: each key's breaker explained by its rules."""
    assert sum(policy_history(seed, keyed=keyed, tasks=3, threads=2, rounds=3) for seed in range(80)), (
        "no call cancelled"
    )


def test_timed_queued_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories on virtual time, slots held across its moves: waiters time out, or are cancelled, in order."""
    assert sum(queued_bulkhead_async_history(seed, timed=True) for seed in range(200)), "no waiter cancelled"


@pytest.mark.parametrize("kept", [1, 2])
def test_evicting_keyed_policy_task_histories_are_linearizable(kept: int) -> None:
    """Seeded histories of tasks and threads over 3 keys, fewer kept, some tasks cancelled: a key in use never evicted."""
    assert sum(policy_history(seed, keyed=True, tasks=3, threads=1, kept=kept) for seed in range(100)), (
        "no call cancelled"
    )
