"""One pattern instance used at once from threads and from tasks of several event loops (in threads).

Each test drives one shared instance (bulkhead, rate limiter, retry budget, circuit breaker,
chaos) from worker threads through its sync verb and from two event loops, each in a thread of
its own, through its async verb, with cancellations mixed in; then it checks invariants that
hold whatever the interleaving: every call ends in exactly one counted outcome, the stats equal
what the test counted, nothing is left queued or held, and limits were never exceeded (measured
with a counter under a lock inside the protected function). No assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from support import until_sync

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    Chaos,
    ChaosConfig,
    CircuitBreaker,
    CircuitBreakerConfig,
    RateLimiter,
    RateLimiterConfig,
    Retry,
    RetryBudget,
    RetryPolicy,
)
from otel_resilience.errors import (
    BulkheadFullError,
    BulkheadTimeoutError,
    CircuitOpenError,
    RateLimitedError,
)
from otel_resilience.patterns.retry.policy import Jitter, RetryStrategy
from otel_resilience.testing import FakeClock

THREADS = 3
LOOPS = 2
CALLS = 80
"""Calls per thread and per event loop."""


class Tally:
    """Outcomes counted by the test, and how many calls were inside the protected function at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.inside = 0
        self.peak = 0

    def count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def enter(self) -> None:
        with self.lock:
            self.inside += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1


def drive(
    thread_body: Callable[[random.Random], None],
    loop_body: Callable[[random.Random], Coroutine[Any, Any, None]],
    seed: int,
) -> None:
    """Run ``thread_body`` in THREADS threads and ``loop_body`` in LOOPS event loops (a thread each), at once."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS + LOOPS)

    def guarded(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                start.wait(10)
                body()
            except BaseException as error:
                errors.append(error)

        return run

    def in_thread(rng: random.Random) -> Callable[[], None]:
        return guarded(lambda: thread_body(rng))

    def in_loop(rng: random.Random) -> Callable[[], None]:
        return guarded(lambda: asyncio.run(loop_body(rng)))

    workers = [threading.Thread(target=in_thread(random.Random(seed * 100 + n))) for n in range(THREADS)]
    workers += [threading.Thread(target=in_loop(random.Random(seed * 100 + 50 + n))) for n in range(LOOPS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not any(worker.is_alive() for worker in workers), "a caller never returned"
    assert not errors, errors


async def with_cancellations(calls: list[Coroutine[Any, Any, None]], rng: random.Random) -> None:
    """Run ``calls`` as tasks of this loop, cancelling a third of them at random points."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(len(tasks) // 3):
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_bulkhead_shared_by_threads_and_loops_keeps_its_limit_and_its_counts(seed: int) -> None:
    bulkhead = Bulkhead(
        f"mixed-bulkhead-{seed}", BulkheadConfig(max_concurrent=3, max_waiting=40, timeout=30.0)
    )
    tally = Tally()
    started: set[object] = set()

    def work() -> None:
        tally.enter()
        try:
            for _ in range(200):
                pass
        finally:
            tally.leave()

    async def awork(tag: object) -> None:
        tally.enter()
        started.add(tag)
        try:
            await asyncio.sleep(0)
        finally:
            tally.leave()

    def thread_body(rng: random.Random) -> None:
        for _ in range(CALLS):
            try:
                bulkhead.execute_sync(work)
                tally.count("ran")
            except BulkheadTimeoutError:
                tally.count("timed_out")
            except BulkheadFullError:
                tally.count("rejected")

    async def one(tag: object) -> None:
        try:
            await bulkhead.execute(awork, tag)
            tally.count("ran")
        except BulkheadTimeoutError:
            tally.count("timed_out")
        except BulkheadFullError:
            tally.count("rejected")
        except asyncio.CancelledError:
            tally.count("cancelled_running" if tag in started else "cancelled_waiting")
            raise

    async def loop_body(rng: random.Random) -> None:
        await with_cancellations([one(object()) for _ in range(CALLS)], rng)

    drive(thread_body, loop_body, seed)

    counted = tally.outcomes
    stats = bulkhead.get_stats()
    assert sum(counted.values()) == (THREADS + LOOPS) * CALLS
    assert stats["total"] == (THREADS + LOOPS) * CALLS
    assert stats["completed"] == counted["ran"] + counted["cancelled_running"]
    assert stats["rejected"] == counted["rejected"]
    assert stats["timed_out"] == counted["timed_out"]
    assert stats["cancelled"] == counted["cancelled_waiting"]
    assert stats["active"] == stats["waiting"] == 0
    assert tally.peak <= 3
    assert stats["peak_active"] <= 3


def test_a_bulkhead_serves_thread_and_loop_waiters_in_arrival_order() -> None:
    """One FIFO queue for threads and for tasks of two loops: the slots go out in the order asked."""
    bulkhead = Bulkhead("mixed-fifo", BulkheadConfig(max_concurrent=1, max_waiting=20, timeout=30.0))
    holder = bulkhead.slot()
    holder.__enter__()
    order: list[int] = []
    loops = [asyncio.new_event_loop() for _ in range(2)]
    runners = [threading.Thread(target=loop.run_forever) for loop in loops]
    for runner in runners:
        runner.start()

    async def record(index: int) -> None:
        order.append(index)
        await asyncio.sleep(0)

    pending: list[Any] = []
    threads: list[threading.Thread] = []
    try:
        for index in range(9):
            if index % 3 == 0:
                thread = threading.Thread(target=bulkhead.execute_sync, args=(order.append, index))
                thread.start()
                threads.append(thread)
            else:
                loop = loops[index % 3 - 1]
                pending.append(asyncio.run_coroutine_threadsafe(bulkhead.execute(record, index), loop))
            until_sync(lambda index=index: bulkhead.stats.waiting == index + 1, timeout=10.0)
    finally:
        holder.__exit__(None, None, None)
        for future in pending:
            future.result(10)
        for thread in threads:
            thread.join(10)
        for loop, runner in zip(loops, runners, strict=True):
            loop.call_soon_threadsafe(loop.stop)
            runner.join(10)
            loop.close()
    assert order == list(range(9))
    stats = bulkhead.get_stats()
    assert stats["completed"] == 10
    assert stats["active"] == stats["waiting"] == 0


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
@pytest.mark.parametrize("max_wait", [0.0, 1.0])
def test_a_rate_limiter_shared_by_threads_and_loops_counts_every_permit(
    algorithm: str, max_wait: float
) -> None:
    clock = FakeClock(100.0)
    rate, burst = 10.0, 5
    limiter = RateLimiter(
        f"mixed-limiter-{algorithm}-{max_wait}",
        RateLimiterConfig(
            rate=rate,
            burst=burst,
            algorithm=algorithm,
            max_wait=max_wait,
            max_waiting=1000 if max_wait else 100,
        ),
        clock=clock,
    )
    tally = Tally()

    def thread_body(rng: random.Random) -> None:
        for _ in range(CALLS):
            try:
                limiter.call_sync(tally.count, "ran")
            except RateLimitedError:
                tally.count("rejected")

    async def ran() -> None:
        tally.count("ran")

    async def one() -> None:
        try:
            await limiter.call(ran)
        except RateLimitedError:
            tally.count("rejected")
        except asyncio.CancelledError:
            tally.count("cancelled")
            raise

    async def loop_body(rng: random.Random) -> None:
        await with_cancellations([one() for _ in range(CALLS)], rng)

    drive(thread_body, loop_body, 3)

    counted = tally.outcomes
    stats = limiter.get_stats()
    calls = (THREADS + LOOPS) * CALLS
    assert sum(counted.values()) == calls
    assert stats["admitted"] == counted["ran"]
    assert stats["rejected"] == counted["rejected"]
    assert stats["waiting"] == 0
    # A task cancelled while it waited gave its reservation back; one cancelled before it asked
    # never reached the limiter.
    assert stats["cancelled"] <= counted["cancelled"]
    assert stats["admitted"] + stats["rejected"] + stats["cancelled"] <= calls
    if max_wait == 0.0:  # a frozen clock: exactly the burst, whatever the interleaving
        assert stats["admitted"] == burst
        assert stats["rejected"] == calls - counted["cancelled"] - burst
    elapsed = clock.now() - 100.0  # the waits advanced the clock; never more permits than it allows
    if algorithm == "token_bucket":
        assert stats["admitted"] <= burst + rate * elapsed + 1e-6
    else:
        assert stats["admitted"] <= burst * (math.floor(elapsed / (burst / rate)) + 1)


@pytest.mark.parametrize("on_retry", [None, lambda attempt, error: None])
def test_a_retry_budget_shared_by_threads_and_loops_counts_exactly_the_retries_that_ran(
    on_retry: Callable[[int, Exception | None], None] | None,
) -> None:
    """Withdrawals of retries that never ran (cancelled in their backoff) are refunded, exactly."""

    class Flaky(Exception):
        pass

    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.002, window=10_000.0, clock=clock)
    policy = RetryPolicy(
        max_attempts=4,
        initial_delay=0.01,
        strategy=RetryStrategy.FIXED,
        jitter=Jitter.NONE,
        retry_on=(Flaky,),
        budget=budget,
    )
    retries = [
        Retry("mixed-retry-a", policy, clock=clock, on_retry=on_retry),
        Retry("mixed-retry-b", policy, clock=clock),
    ]
    tally = Tally()

    def attempt(state: dict[str, Any]) -> None:
        tally.count("first" if state["runs"] == 0 else "retry")
        state["runs"] += 1
        if state["fails"]:
            raise Flaky

    async def aattempt(state: dict[str, Any]) -> None:
        attempt(state)
        await asyncio.sleep(0)

    def thread_body(rng: random.Random) -> None:
        for index in range(CALLS):
            state = {"runs": 0, "fails": rng.random() < 0.7}
            with contextlib.suppress(Flaky):
                retries[index % 2].execute_sync(attempt, state)

    async def one(index: int, rng: random.Random) -> None:
        state = {"runs": 0, "fails": rng.random() < 0.7}
        with contextlib.suppress(Flaky):
            await retries[index % 2].execute(aattempt, state)

    async def loop_body(rng: random.Random) -> None:
        await with_cancellations([one(index, rng) for index in range(CALLS)], rng)

    drive(thread_body, loop_body, 4)

    stats = budget.get_stats()
    assert stats["first_attempts"] == tally.outcomes["first"]
    assert stats["retries"] == tally.outcomes["retry"]
    # A retry is allowed while the retries counted are below the bound: the last may reach its ceiling.
    assert stats["retries"] <= math.ceil(0.5 * stats["first_attempts"] + 0.002 * 10_000.0)


@pytest.mark.parametrize(("probes", "successes"), [(1, 1), (3, 2), (3, 10)])
def test_a_half_open_breaker_admits_at_most_its_probes_from_threads_and_loops(
    probes: int, successes: int
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        f"mixed-breaker-{probes}-{successes}",
        CircuitBreakerConfig(
            failure_threshold=1, success_threshold=successes, timeout=10.0, half_open_max_calls=probes
        ),
        clock=clock,
    )
    with pytest.raises(ZeroDivisionError):
        breaker.call_sync(lambda: 1 / 0)
    clock.advance(11.0)  # OPEN is over: the next calls are probes
    tally = Tally()
    gate = threading.Event()
    all_probes_in = threading.Event()

    half_open_peak: list[int] = [0]  # calls inside at once while no probe could end yet

    def entered() -> None:
        tally.enter()
        with tally.lock:
            if not gate.is_set():
                half_open_peak[0] = max(half_open_peak[0], tally.inside)
            if tally.inside == probes:
                all_probes_in.set()

    def probe() -> None:
        entered()
        try:
            gate.wait(10)
        finally:
            tally.leave()

    async def aprobe() -> None:
        entered()
        try:
            while not gate.is_set():
                await asyncio.sleep(0.001)
        finally:
            tally.leave()

    def thread_body(rng: random.Random) -> None:
        for _ in range(CALLS // 4):
            try:
                breaker.call_sync(probe)
                tally.count("ran")
            except CircuitOpenError:
                tally.count("rejected")

    async def one() -> None:
        try:
            await breaker.call(aprobe)
            tally.count("ran")
        except CircuitOpenError:
            tally.count("rejected")

    async def loop_body(rng: random.Random) -> None:
        await asyncio.gather(*(one() for _ in range(CALLS // 4)))

    def open_gate() -> None:
        all_probes_in.wait(10)
        with tally.lock:  # no call enters meanwhile unseen: the peak is read and the gate set at once
            gate.set()

    opener = threading.Thread(target=open_gate)
    opener.start()
    drive(thread_body, loop_body, 5)
    opener.join(10)

    stats = breaker.get_stats()
    calls = (THREADS + LOOPS) * (CALLS // 4)
    assert tally.outcomes["ran"] + tally.outcomes["rejected"] == calls
    assert stats["total_rejected"] == tally.outcomes["rejected"]
    assert stats["total_successes"] == tally.outcomes["ran"]
    assert stats["half_open_in_flight"] == 0
    assert half_open_peak == [probes]  # never more probes at once than half_open_max_calls
    # Each probe that returned counted one success; the breaker closes at success_threshold of them.
    assert breaker.state.value == ("closed" if tally.outcomes["ran"] >= successes else "half_open")


def test_chaos_with_a_seed_injects_the_same_number_of_faults_from_threads_and_loops() -> None:
    """One draw per run from one seeded source: the faults over N runs do not depend on who ran them."""

    def faults(threads: int, loops: int, per_worker: int) -> int:
        chaos = Chaos(
            f"mixed-chaos-{threads}-{loops}",
            ChaosConfig(fault_rate=0.3, fault=RuntimeError("injected"), seed=1234),
        )
        tally = Tally()

        def body() -> None:
            for _ in range(per_worker):
                try:
                    chaos.call_sync(tally.count, "ran")
                except RuntimeError:
                    tally.count("fault")

        async def ran() -> None:
            tally.count("ran")

        async def one() -> None:
            try:
                await chaos.call(ran)
            except RuntimeError:
                tally.count("fault")

        async def loop_main() -> None:
            await asyncio.gather(*(one() for _ in range(per_worker)))

        workers = [threading.Thread(target=body) for _ in range(threads)]
        workers += [threading.Thread(target=asyncio.run, args=(loop_main(),)) for _ in range(loops)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        stats = chaos.get_stats()
        assert stats["runs"] == (threads + loops) * per_worker
        assert stats["faults"] == tally.outcomes["fault"]
        assert tally.outcomes["ran"] + tally.outcomes["fault"] == stats["runs"]
        return stats["faults"]

    alone = faults(1, 0, 1200)
    assert faults(2, 2, 300) == alone
    expected = random.Random(1234)
    assert alone == sum(expected.random() < 0.3 for _ in range(1200))
