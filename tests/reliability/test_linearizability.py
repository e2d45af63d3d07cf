"""Linearizability: concurrent histories of the thread-safe objects against their sequential rules.

Threads call the real objects (breaker, bulkhead, rate limiters, retry budget) on a
``FakeClock``, with the interpreter switching threads every microsecond. Each operation's
invocation and response are stamped from one process-wide sequence, with its result. A
coordinator runs the threads in rounds and moves the clock between rounds only, so time is a
step of the sequential model too. Each round's history must have a *linearization*: an order of
its operations that keeps every operation that returned before another one started before it,
and in which the sequential reference model (README's rules) gives every recorded result. The
search (Wing and Gong's, with the states already explored remembered, as Porcupine does) carries
the set of model states a round may end in to the next round. The final counts of each object
must equal the sum of the recorded outcomes.

Covered: the breaker (calls, ignored errors, interrupts, reads of its state and counts, operator
actions, the order of its state change callbacks, ``retry_after``), hung probes reclaimed after
``max_half_open_wait`` (the clock moved during the round, as an operation of the history), the
bulkhead with and without a queue (FIFO hand-over), both rate limiters (``try_acquire`` and calls,
``retry_after`` exact, and waits for a reserved permit on a clock the coordinator moves, waiters
interrupted leaving holes), the retry budget, and a keyed policy's breakers and bulkheads with
fewer keys kept than used (a key in use never evicted).

A breaker call has two operations: its admission (from the call's start to the start of the
protected function) and its outcome (from the function's end to the call's return), so a
call's outcome is judged by the period that admitted it, as the rules say.

Every random choice is seeded: a history the model explains is never reported otherwise (the
search is exhaustive), and the number of histories does not depend on the machine's speed.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from fractions import Fraction

import pytest
from linearizability_support import (
    ENDED,
    RAISED,
    Boom,
    BreakerState,
    Ignored,
    Model,
    Op,
    Stop,
    WaitingLimiter,
    breaker_model,
    check_history,
    keyed_breaker_model,
    linearizations,
    renumber,
    stamp,
)

from otel_resilience import (
    Bulkhead,
    BulkheadConfig,
    BulkheadFullError,
    CircuitBreaker,
    CircuitBreakerConfig,
    CircuitOpenError,
    RateLimitedError,
    RateLimiter,
    RateLimiterConfig,
    ResilienceConfig,
    ResilienceManager,
    RetryBudget,
)
from otel_resilience.testing import FakeClock

pytestmark = pytest.mark.usefixtures("fast_switching")


def test_the_checker_refuses_a_history_no_order_explains() -> None:
    """A register read as 1 after a write of 2 ended (and before anything else) has no linearization."""

    def register(state: Hashable, op: Op) -> Iterable[Hashable]:
        if op.name == "write":
            return (op.arg,)
        return (state,) if op.result == state else ()

    good = [Op(0, "write", 1, 0, 3), Op(1, "write", 2, 1, 2), Op(1, "read", None, 4, 5, result=1)]
    bad = [Op(0, "write", 1, 0, 1), Op(1, "write", 2, 2, 3), Op(1, "read", None, 4, 5, result=1)]
    assert linearizations({0}, good, register) == {1}
    assert linearizations({0}, bad, register) == set()


# --------------------------------------------------------------------------------------------
# The circuit breaker
# --------------------------------------------------------------------------------------------


def breaker_history(seed: int, threads: int = 4, per_thread: int = 3, rounds: int = 4) -> None:
    rng = random.Random(seed)
    config = CircuitBreakerConfig(
        failure_threshold=rng.choice([1, 2, 3]),
        success_threshold=rng.choice([1, 2]),
        half_open_max_calls=rng.choice([1, 2, 3]),
        timeout=1.0,
        ignore_exceptions=(Ignored,),
    )
    clock = FakeClock()
    breaker = CircuitBreaker(f"lin-{seed}", config, clock=clock)
    changes: list[tuple[str, str]] = []
    breaker.on_state_change(lambda change: changes.append((change.old, change.new)))
    choices: list[bool | str] = [True, False, True, False, "ignore", "cancel", "state", "stats"]
    if seed % 2:  # an operator acts too
        choices += ["reset", "force_open", "disable"]
    plan = [[[rng.choice(choices) for _ in range(per_thread)] for _ in range(threads)] for _ in range(rounds)]
    pauses = [rng.randrange(3) for _ in range(64)]
    advances = [Fraction(rng.choice([0, 1, 2, 4]), 2) for _ in range(rounds)]
    calls = itertools.count()

    def body(number: int, index: int, out: list[Op]) -> None:
        for failed in plan[number][index]:
            if failed in {"reset", "force_open", "disable"}:
                action = Op(index, failed, None, stamp())
                if failed == "force_open":
                    breaker.force_open(1.0)
                else:
                    getattr(breaker, failed)()
                action.end = stamp()
                out.append(action)
                continue
            if failed in {"state", "stats"}:  # a read of the state, or of the counts
                read = Op(index, failed, None, stamp())
                if failed == "state":
                    read.result = breaker.state.value
                else:
                    stats = breaker.get_stats()
                    read.result = (
                        stats["state"],
                        stats["failure_count"],
                        stats["success_count"],
                        stats["half_open_in_flight"],
                    )
                read.end = stamp()
                out.append(read)
                continue
            call = next(calls)
            admit = Op(index, "admit", (call, failed), stamp())
            out.append(admit)
            ending: list[Op] = []

            def protected(
                admit: Op = admit, failed: object = failed, call: int = call, ending: list[Op] = ending
            ) -> str:
                admit.end = stamp()
                admit.result = "admitted"
                for _ in range(pauses[call % len(pauses)]):
                    time.sleep(0)  # let the others in while this call runs
                end = Op(index, "end", (call, failed), stamp(), after=id(admit))  # type: ignore[arg-type]
                ending.append(end)
                if failed in RAISED:
                    raise RAISED[failed]
                return "ok"

            try:
                breaker.call_sync(protected)
            except CircuitOpenError as error:
                admit.end = stamp()
                admit.result = "rejected"
                admit.seen = Fraction(error.retry_after)
            except (Boom, Ignored, Stop):
                pass
            if ending:
                ending[0].end = stamp()
                ending[0].result = ENDED[failed]
                out.append(ending[0])

    def between(number: int) -> Callable[[Hashable], Hashable]:
        clock.advance(float(advances[number]))

        def move(state: Hashable) -> Hashable:
            assert isinstance(state, BreakerState)
            return BreakerState(**{**state.__dict__, "now": state.now + advances[number]})

        return move

    ops = check_history(BreakerState(), rounds, threads, body, breaker_model(config), between=between)
    stats = breaker.get_stats()
    chain = [("closed", "closed"), *changes]  # delivered in the order made: each starts where the last ended
    assert all(before[1] == after[0] for before, after in itertools.pairwise(chain)), changes
    assert stats["state"] == chain[-1][1]
    assert stats["times_opened"] == sum(
        1 for old, new in changes if new == "open" != old
    )  # open to open: moved
    ends = [op for op in ops if op.name == "end"]
    assert stats["total_successes"] == sum(1 for op in ends if op.result == "ok")
    assert stats["total_failures"] == sum(1 for op in ends if op.result == "failed")
    assert stats["total_rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert stats["total_ignored"] == sum(1 for op in ends if op.result == "ignored")
    assert stats["total_cancelled"] == sum(1 for op in ends if op.result == "cancelled")


@pytest.mark.parametrize("block", range(4))
def test_breaker_histories_are_linearizable(block: int) -> None:
    """Seeded histories of 4 threads x 3 calls x 4 rounds: each explained by the breaker's rules."""
    for seed in range(block * 100, (block + 1) * 100):
        breaker_history(seed)


# --------------------------------------------------------------------------------------------
# The rate limiters
# --------------------------------------------------------------------------------------------


def bucket_model(rate: Fraction, burst: int) -> Model:
    """A token bucket in exact fractions: state ``(tokens, now)``; a refusal's ``retry_after`` exact."""

    def step(state: Hashable, op: Op) -> Iterable[Hashable]:
        tokens, now = state  # type: ignore[misc]
        if tokens >= 1:
            return ((tokens - 1, now),) if op.result == "admitted" else ()
        return ((tokens, now),) if op.result == ("refused", (1 - tokens) / rate) else ()

    return step


def window_model(rate: Fraction, burst: int) -> Model:
    """A sliding window in exact fractions: state ``(admission times, now)``."""
    window = burst / rate

    def step(state: Hashable, op: Op) -> Iterable[Hashable]:
        times, now = state  # type: ignore[misc]
        inside = tuple(at for at in times if at > now - window)
        if len(inside) < burst:
            return (((*inside, now), now),) if op.result == "admitted" else ()
        due = inside[-burst] + window
        return ((inside, now),) if op.result == ("refused", due - now) else ()

    return step


def limiter_history(
    seed: int, algorithm: str, threads: int = 4, per_thread: int = 3, rounds: int = 4
) -> None:
    rng = random.Random(seed)
    rate, burst = Fraction(rng.choice([1, 2, 4])), rng.choice([1, 2, 3, 5])
    clock = FakeClock()
    limiter = RateLimiter(
        f"lin-{seed}", RateLimiterConfig(rate=float(rate), burst=burst, algorithm=algorithm), clock=clock
    )
    advances = [Fraction(rng.choice([0, 1, 2, 3, 4]), 4) for _ in range(rounds)]
    use_call = [[rng.random() < 0.5 for _ in range(per_thread)] for _ in range(threads)]

    def body(number: int, index: int, out: list[Op]) -> None:
        for via_call in use_call[index]:
            op = Op(index, "acquire", via_call, stamp())
            if via_call:
                try:
                    limiter.call_sync(lambda: None)
                except RateLimitedError as error:
                    op.result = ("refused", Fraction(error.retry_after))
                else:
                    op.result = "admitted"
            else:
                op.result = "admitted" if limiter.try_acquire() else ("refused", None)
            op.end = stamp()
            out.append(op)

    model = bucket_model(rate, burst) if algorithm == "token_bucket" else window_model(rate, burst)

    def checked(state: Hashable, op: Op) -> Iterable[Hashable]:
        if op.result != "admitted" and op.result[1] is None:  # try_acquire: no retry_after to compare
            # refused exactly when the model has no permit: try a permit, refuse if none
            if not list(model(state, Op(op.thread, op.name, op.arg, op.start, op.end, "admitted"))):
                return (state,)
            return ()
        return model(state, op)

    def between(number: int) -> Callable[[Hashable], Hashable]:
        clock.advance(float(advances[number]))
        step = advances[number]

        def move(state: Hashable) -> Hashable:
            held, now = state  # type: ignore[misc]
            if algorithm == "token_bucket":
                return (min(Fraction(burst), held + rate * step), now + step)
            return (held, now + step)

        return move

    start: Hashable = (Fraction(burst), Fraction(0)) if algorithm == "token_bucket" else ((), Fraction(0))
    ops = check_history(start, rounds, threads, body, checked, between=between)
    stats = limiter.get_stats()
    assert stats["admitted"] == sum(1 for op in ops if op.result == "admitted")
    assert stats["rejected"] == sum(1 for op in ops if op.result != "admitted")


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_rate_limiter_histories_are_linearizable(algorithm: str) -> None:
    """Seeded histories of try_acquire and calls: permits and retry_after as the exact model says."""
    for seed in range(300):
        limiter_history(seed, algorithm)


# --------------------------------------------------------------------------------------------
# The retry budget
# --------------------------------------------------------------------------------------------


def budget_history(seed: int, threads: int = 4, per_thread: int = 4, rounds: int = 3) -> None:
    rng = random.Random(seed)
    ratio, floor = rng.choice([0.0, 0.25, 0.5]), rng.choice([0.0, 0.1, 0.2])
    clock = FakeClock()
    budget = RetryBudget(ratio=ratio, min_retries_per_second=floor, window=10.0, clock=clock)
    plan = [
        [rng.choice(["deposit", "deposit", "withdraw", "refund"]) for _ in range(per_thread)]
        for _ in range(threads)
    ]

    def body(number: int, index: int, out: list[Op]) -> None:
        for action in plan[index]:
            op = Op(index, "deposit" if action == "deposit" else "withdraw", None, stamp())
            receipt = None
            if action == "deposit":
                budget.deposit()
            else:
                receipt = budget.withdraw()
                op.result = receipt is not None
            op.end = stamp()
            out.append(op)
            if action == "refund" and receipt is not None:  # the retry did not run after all
                given = Op(index, "refund", None, stamp())
                budget.refund(receipt)
                given.end = stamp()
                out.append(given)

    reserve = Fraction(str(floor)) * 10  # as the numbers read (README: 0.07 * 100 allows 7)

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        firsts, retries = state  # type: ignore[misc]
        if op.name == "deposit":
            return ((firsts + 1, retries),)
        if op.name == "refund":
            return ((firsts, retries - 1),)
        allowed = retries < Fraction(str(ratio)) * firsts + reserve
        if op.result != allowed:
            return ()
        return ((firsts, retries + 1),) if allowed else (state,)

    def between(number: int) -> Callable[[Hashable], Hashable]:
        if number < rounds - 1:  # the rounds stay in the window (at least 9 s of history)
            clock.advance(4.0)
        return lambda state: state

    ops = check_history((0, 0), rounds, threads, body, model, between=between)
    stats = budget.get_stats()
    refunds = sum(1 for op in ops if op.name == "refund")
    assert stats["retries"] == sum(1 for op in ops if op.result is True) - refunds
    assert stats["denied"] == sum(1 for op in ops if op.result is False)
    assert stats["first_attempts"] == sum(1 for op in ops if op.name == "deposit")


def test_retry_budget_histories_are_linearizable() -> None:
    """Seeded histories of deposits, withdrawals and refunds: a retry allowed exactly when the bound allows it."""
    for seed in range(300):
        budget_history(seed)


# --------------------------------------------------------------------------------------------
# The bulkhead
# --------------------------------------------------------------------------------------------


def bulkhead_history(seed: int, threads: int = 5, per_thread: int = 3, rounds: int = 2) -> None:
    """Calls that hold their slot across switches: admitted exactly when a slot is free (no queue)."""
    rng = random.Random(seed)
    limit = rng.choice([1, 2, 3])
    bulkhead = Bulkhead(f"lin-{seed}", BulkheadConfig(max_concurrent=limit, max_waiting=0))

    def body(number: int, index: int, out: list[Op]) -> None:
        for _ in range(per_thread):
            enter = Op(index, "enter", None, stamp())
            ending: list[Op] = []

            def work(enter: Op = enter, ending: list[Op] = ending) -> None:
                enter.end = stamp()
                enter.result = "admitted"
                ending.append(Op(index, "leave", None, stamp(), after=id(enter)))  # type: ignore[arg-type]

            try:
                bulkhead.execute_sync(work)
            except BulkheadFullError:
                enter.end = stamp()
                enter.result = "rejected"
            if ending:
                ending[0].end = stamp()
                out.append(enter)
                out.append(ending[0])
            else:
                out.append(enter)

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        active = state
        assert isinstance(active, int)
        if op.name == "leave":
            return (active - 1,)
        if active < limit:
            return (active + 1,) if op.result == "admitted" else ()
        return (active,) if op.result == "rejected" else ()

    ops = check_history(0, rounds, threads, body, model, between=lambda _: lambda state: state)
    stats = bulkhead.get_stats()
    assert stats["completed"] == sum(1 for op in ops if op.name == "leave")
    assert stats["rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert stats["active"] == 0
    assert stats["peak_active"] <= limit


def test_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories of calls through a bulkhead with no queue: max_concurrent never exceeded."""
    for seed in range(200):
        bulkhead_history(seed)


# --------------------------------------------------------------------------------------------
# The keyed store: a policy's per-key breakers, few keys kept
# --------------------------------------------------------------------------------------------


def keyed_history(seed: int, threads: int = 4, per_thread: int = 3, rounds: int = 4) -> None:
    """Calls of 3 keys through a policy keeping 1 idle key: each key's breaker as if never evicted.

    With ``failure_threshold=1`` a CLOSED breaker holds nothing a fresh one would not (a failure
    opens it), and an OPEN one is never idle, so is never evicted: each key's calls must be
    explained by one breaker per key. A HALF_OPEN key with no probe in flight (or an OPEN one whose
    period is over: HALF_OPEN when next asked) is idle and holds state, so it may be evicted past
    ``max_keys`` and come back CLOSED (README, "Bounded").
    """
    rng = random.Random(seed)
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=rng.choice([1, 2]),
        half_open_max_calls=rng.choice([1, 2]),
        timeout=1.0,
    )
    clock = FakeClock()
    manager = ResilienceManager(clock=clock)
    handle = manager.policy(
        f"lin-{seed}", ResilienceConfig(circuit_breaker=config), max_keys=rng.choice([1, 2]), idle_ttl=None
    )
    keys = ("a", "b", "c")
    plan = [
        [[(rng.choice(keys), rng.random() < 0.4) for _ in range(per_thread)] for _ in range(threads)]
        for _ in range(rounds)
    ]
    pauses = [rng.randrange(3) for _ in range(64)]
    advances = [Fraction(rng.choice([0, 1, 2, 4]), 2) for _ in range(rounds)]
    calls = itertools.count()
    held: list[str] = []

    def body(number: int, index: int, out: list[Op]) -> None:
        view_of = {key: handle.for_key(key) for key in keys}
        for key, failed in plan[number][index]:
            call = next(calls)
            admit = Op(index, "admit", (call, failed, key), stamp())
            out.append(admit)
            ending: list[Op] = []

            def protected(
                admit: Op = admit,
                failed: bool = failed,
                call: int = call,
                key: str = key,
                ending: list[Op] = ending,
            ) -> str:
                admit.end = stamp()
                admit.result = "admitted"
                mine = view_of[key].circuit_breaker
                for _ in range(pauses[call % len(pauses)]):
                    time.sleep(0)
                if view_of[key].circuit_breaker is not mine:  # the key was evicted while in use
                    held.append(key)
                ending.append(Op(index, "end", (call, failed, key), stamp(), after=id(admit)))  # type: ignore[arg-type]
                if failed:
                    raise Boom
                return "ok"

            try:
                view_of[key].execute_sync(protected)
            except CircuitOpenError:
                admit.end = stamp()
                admit.result = "rejected"
            except Boom:
                pass
            if ending:
                ending[0].end = stamp()
                ending[0].result = "failed" if failed else "ok"
                out.append(ending[0])

    model = keyed_breaker_model(config, evicting=True)

    def between(number: int) -> Callable[[Hashable], Hashable]:
        clock.advance(float(advances[number]))

        def move(state: Hashable) -> Hashable:
            return tuple(
                (key, BreakerState(**{**value.__dict__, "now": value.now + advances[number]}))
                for key, value in state  # type: ignore[attr-defined]
            )

        return move

    start = tuple((key, BreakerState()) for key in keys)
    ops = check_history(start, rounds, threads, body, model, between=between)
    assert not held, f"keys evicted while a call of theirs ran: {held}"
    stats = handle.get_stats()["circuit_breaker"]
    assert stats is not None
    ends = [op for op in ops if op.name == "end"]
    assert stats["total_successes"] == sum(1 for op in ends if op.result == "ok")
    assert stats["total_failures"] == sum(1 for op in ends if op.result == "failed")
    assert stats["total_rejected"] == sum(1 for op in ops if op.result == "rejected")


def test_keyed_breaker_histories_are_linearizable() -> None:
    """Seeded histories over 3 keys, 1 or 2 kept: each key's breaker explained by the breaker's rules."""
    for seed in range(150):
        keyed_history(seed)


def queued_bulkhead_history(seed: int, threads: int = 5, per_thread: int = 3, rounds: int = 2) -> None:
    """Calls through a bulkhead with a queue: a slot freed goes to the oldest waiter, the queue stays bounded.

    A call is three operations: its arrival (from its start to the start of the protected
    function: admitted at once, queued, or rejected), the start of the function (a point: the
    call must hold a slot by then) and its end (which frees the slot, handed to the oldest waiter).
    """
    rng = random.Random(seed)
    limit, places = rng.choice([1, 2]), rng.choice([1, 2])
    bulkhead = Bulkhead(
        f"lin-q-{seed}", BulkheadConfig(max_concurrent=limit, max_waiting=places, timeout=60.0)
    )
    pauses = [rng.randrange(4) for _ in range(64)]
    calls = itertools.count()

    def body(number: int, index: int, out: list[Op]) -> None:
        for _ in range(per_thread):
            call = next(calls)
            arrive = Op(index, "arrive", call, stamp())
            ending: list[Op] = []

            def work(arrive: Op = arrive, call: int = call, ending: list[Op] = ending) -> None:
                arrive.end = stamp()
                arrive.result = "admitted"
                out.append(Op(index, "run", call, arrive.end, stamp(), after=id(arrive)))  # type: ignore[arg-type]
                for _ in range(pauses[call % len(pauses)]):
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

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        running, queue = state  # type: ignore[misc]
        call = op.arg
        if op.name == "arrive":
            if len(running) < limit:
                return ((running | {call}, queue),) if op.result == "admitted" else ()
            if len(queue) < places:
                return ((running, (*queue, call)),) if op.result == "admitted" else ()
            return (state,) if op.result == "rejected" else ()
        if op.name == "run":
            return (state,) if call in running else ()
        running = running - {call}
        if queue:  # the slot goes to the oldest waiter
            running, queue = running | {queue[0]}, queue[1:]
        return ((running, queue),)

    ops = check_history(
        (frozenset(), ()), rounds, threads, body, model, between=lambda _: lambda state: state
    )
    stats = bulkhead.get_stats()
    assert stats["completed"] == sum(1 for op in ops if op.name == "leave")
    assert stats["rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert (stats["active"], stats["waiting"]) == (0, 0)
    assert stats["peak_active"] <= limit
    assert stats["peak_waiting"] <= places


def test_queued_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories through a bulkhead with a queue: FIFO hand-over, both bounds kept."""
    for seed in range(200):
        queued_bulkhead_history(seed)


def keyed_bulkhead_history(seed: int, threads: int = 5, per_thread: int = 3, rounds: int = 2) -> None:
    """Calls of 3 keys, each with a bulkhead of ``max_concurrent`` slots and no queue, 1 key kept idle.

    A key with a call running is never evicted, and an idle bulkhead holds nothing a new one would
    not: each key's calls must be explained by one bulkhead per key, whatever the churn.
    """
    rng = random.Random(seed)
    limit = rng.choice([1, 2])
    manager = ResilienceManager(clock=FakeClock())
    handle = manager.policy(
        f"lin-kb-{seed}",
        ResilienceConfig(bulkhead_config=BulkheadConfig(max_concurrent=limit, max_waiting=0)),
        max_keys=1,
        idle_ttl=None,
    )
    keys = ("a", "b", "c")
    plan = [[[rng.choice(keys) for _ in range(per_thread)] for _ in range(threads)] for _ in range(rounds)]
    pauses = [rng.randrange(4) for _ in range(64)]
    calls = itertools.count()

    def body(number: int, index: int, out: list[Op]) -> None:
        for key in plan[number][index]:
            call = next(calls)
            enter = Op(index, "enter", (call, key), stamp())
            ending: list[Op] = []

            def work(enter: Op = enter, call: int = call, key: str = key, ending: list[Op] = ending) -> None:
                enter.end = stamp()
                enter.result = "admitted"
                for _ in range(pauses[call % len(pauses)]):
                    time.sleep(0)
                ending.append(Op(index, "leave", (call, key), stamp(), after=id(enter)))  # type: ignore[arg-type]

            try:
                handle.for_key(key).execute_sync(work)
            except BulkheadFullError:
                enter.end = stamp()
                enter.result = "rejected"
            out.append(enter)
            if ending:
                ending[0].end = stamp()
                out.append(ending[0])

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        active = dict(state)  # type: ignore[call-overload]
        key = op.arg[1]
        if op.name == "leave":
            active[key] -= 1
        elif active[key] < limit:
            if op.result != "admitted":
                return ()
            active[key] += 1
        elif op.result != "rejected":
            return ()
        return (tuple(sorted(active.items())),)

    ops = check_history(
        tuple((key, 0) for key in keys), rounds, threads, body, model, between=lambda _: lambda state: state
    )
    stats = handle.get_stats()["bulkhead"]
    assert stats is not None
    assert stats["rejected"] == sum(1 for op in ops if op.result == "rejected")
    assert stats["completed"] == sum(1 for op in ops if op.name == "leave")


def test_keyed_bulkhead_histories_are_linearizable() -> None:
    """Seeded histories over 3 keys, 1 kept idle: no key's calls ever run past its bulkhead's slots."""
    for seed in range(200):
        keyed_bulkhead_history(seed)


# --------------------------------------------------------------------------------------------
# Hung probes reclaimed (max_half_open_wait): the clock moves during the round
# --------------------------------------------------------------------------------------------


def reclaim_history(seed: int, workers: int = 3, hangers: int = 2, per_phase: int = 2) -> None:
    """A HALF_OPEN breaker whose probes hang while the clock passes ``max_half_open_wait``.

    Each round: hanging calls start (probes, if admitted, held until the round's end); the
    workers call; the coordinator moves the clock (an operation of the history, stamped as the
    others); the workers call again; then the hung calls end. The model reclaims the probes in
    flight when a call finds every probe place taken and the newest probe started ``wait`` ago:
    each counts as a failure, their ends count nothing, the breaker re-opens.
    """
    rng = random.Random(seed)
    probes, wait = rng.choice([1, 2]), Fraction(rng.choice([1, 2]))
    config = CircuitBreakerConfig(
        failure_threshold=1,
        success_threshold=2,
        half_open_max_calls=probes,
        timeout=1.0,
        max_half_open_wait=float(wait),
    )
    clock = FakeClock()
    breaker = CircuitBreaker(f"lin-r-{seed}", config, clock=clock)
    with contextlib.suppress(Boom):
        breaker.call_sync(lambda: (_ for _ in ()).throw(Boom()))  # OPEN until 1.0
    clock.advance(1.0)
    calls = itertools.count()
    ops: list[Op] = []
    ops_lock = threading.Lock()
    release = threading.Event()
    settled = threading.Semaphore(0)
    phase = threading.Barrier(workers + 1)
    ticks = [Fraction(rng.choice([1, 2, 3]), 2) for _ in range(2)]

    def one_call(index: int, failed: bool, hang: bool) -> None:
        call = next(calls)
        admit = Op(index, "admit", (call, failed), stamp())
        ending: list[Op] = []

        def protected() -> str:
            admit.end = stamp()
            admit.result = "admitted"
            if hang:
                settled.release()
                assert release.wait(timeout=30.0)
            ending.append(Op(index, "end", (call, failed), stamp(), after=id(admit)))  # type: ignore[arg-type]
            if failed:
                raise Boom
            return "ok"

        try:
            breaker.call_sync(protected)
        except CircuitOpenError:
            admit.end = stamp()
            admit.result = "rejected"
            if hang:
                settled.release()
        except Boom:
            pass
        with ops_lock:
            ops.append(admit)
            if ending:
                ending[0].end = stamp()
                ending[0].result = "failed" if failed else "ok"
                ops.append(ending[0])

    plan = [[rng.random() < 0.3 for _ in range(2 * per_phase)] for _ in range(workers)]

    def worker(index: int) -> None:
        for step, failed in enumerate(plan[index]):
            if step == per_phase:
                phase.wait(timeout=30.0)  # the clock moves
                phase.wait(timeout=30.0)
            one_call(index, failed, hang=False)

    threads = [
        threading.Thread(target=one_call, args=(workers + i, rng.random() < 0.3, True))
        for i in range(hangers)
    ] + [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for _ in range(hangers):
        assert settled.acquire(timeout=30.0)  # each hanging call holds a probe, or was rejected
    phase.wait(timeout=30.0)
    for number, tick in enumerate(ticks):
        op = Op(-1, "tick", tick, stamp())
        clock.advance(float(tick))
        op.end = stamp()
        with ops_lock:
            ops.append(op)
        if number == 0:
            phase.wait(timeout=30.0)
    for thread in threads[hangers:]:
        thread.join(timeout=60.0)
    release.set()
    for thread in threads[:hangers]:
        thread.join(timeout=60.0)
    assert not any(thread.is_alive() for thread in threads)

    single = breaker_model(config)

    def model(state: Hashable, op: Op) -> Iterable[Hashable]:
        s, started, failures, reclaimed = state  # type: ignore[misc]
        if op.name == "tick":
            return ((BreakerState(**{**s.__dict__, "now": s.now + op.arg}), started, failures, reclaimed),)
        if op.name == "end":
            (period,) = [p for c, p in s.admitted if c == op.arg[0]]
            if period in reclaimed:  # counted as failed when reclaimed: its end counts nothing
                left = BreakerState(**{**s.__dict__, "admitted": s.admitted - {(op.arg[0], period)}})
                return ((left, started, failures, reclaimed),)
            counted = failures + (op.result == "failed")
            return tuple((n, started, counted, reclaimed) for n in single(s, op))
        if s.mode == "open" and s.now >= s.opened_until:
            s = BreakerState("half_open", s.period + 1, 0, 0, 0, s.opened_until, s.now, s.admitted)
        if s.mode == "half_open" and s.in_flight >= probes and s.now >= started + wait:
            if op.result != "rejected":
                return ()
            reopened = BreakerState("open", s.period + 1, 0, 0, 0, s.now + 1, s.now, s.admitted)
            return ((reopened, started, failures + s.in_flight, reclaimed | {s.period}),)
        following = list(single(s, op))
        if s.mode == "half_open" and op.result == "admitted":
            started = s.now
        return tuple((n, started, failures, reclaimed) for n in following)

    first = BreakerState("open", 1, 1, 0, 0, Fraction(1), Fraction(1))
    history = renumber(ops)
    ends = linearizations({(first, Fraction(-100), 1, frozenset())}, history, model)
    assert ends, "no linearization: " + "; ".join(
        f"t{op.thread} {op.name}({op.arg})={op.result} [{op.start},{op.end}]" for op in history
    )
    stats = breaker.get_stats()
    assert stats["total_failures"] in {failures for _, _, failures, _ in ends}, (stats, ends)  # type: ignore[misc]
    assert stats["total_rejected"] == 0 + sum(1 for op in history if op.result == "rejected")


def test_reclaimed_probe_histories_are_linearizable() -> None:
    """Seeded histories of hung probes and the clock passing max_half_open_wait, ticks stamped in the history."""
    for seed in range(150):
        reclaim_history(seed)


# --------------------------------------------------------------------------------------------
# Waiting for a permit: reservations while the coordinator moves a gated clock
# --------------------------------------------------------------------------------------------


class GateClock:
    """A clock only the coordinator moves; ``sleep_sync`` blocks until it reaches the wake-up time."""

    def __init__(self) -> None:
        self._now = 0.0
        self._cond = threading.Condition()
        self.asleep: dict[int, float] = {}
        self.on_sleep = threading.local()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float, /) -> None:
        raise NotImplementedError  # threads only

    def sleep_sync(self, seconds: float, /) -> None:
        hook = getattr(self.on_sleep, "hook", None)
        if hook is not None:
            self.on_sleep.hook = None
            hook(self._now + seconds)  # the reservation's time: the wait was granted
            if getattr(self.on_sleep, "interrupt", False):
                raise Stop  # the waiter is interrupted as it starts to wait
        me = threading.get_ident()
        with self._cond:
            wake = self._now + seconds
            self.asleep[me] = wake
            self._cond.notify_all()
            while self._now < wake:
                assert self._cond.wait(timeout=30.0), "the clock never moved"

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            for ident, wake in list(self.asleep.items()):
                if wake <= self._now:
                    del self.asleep[ident]
            self._cond.notify_all()

    def wait_quiet(self, done: Callable[[], int], threads: int) -> bool:
        """Wait until every thread sleeps or has finished; ``False`` once all have finished."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.asleep) + done() >= threads, timeout=30.0)
            return done() < threads


def waiting_limiter_history(seed: int, algorithm: str, threads: int = 4, per_thread: int = 3) -> None:
    """Requests that take a permit now, reserve one and wait for it, or are refused: FIFO, exact times.

    A request is two operations when it waits: the reservation (from its start to its first
    sleep, which names the permit's time) and the claim (from its last wake-up to the protected
    call). The coordinator moves the clock by a quarter second whenever every thread sleeps or
    has finished; each move is an operation of the history.
    """
    rng = random.Random(seed)
    interrupted = [[rng.random() < 0.3 for _ in range(per_thread)] for _ in range(threads)]
    drawn = WaitingLimiter.draw(rng, algorithm)
    burst = drawn.burst
    clock = GateClock()
    limiter = RateLimiter(
        f"lin-w-{seed}",
        drawn.config(),
        clock=clock,
    )
    ops: list[Op] = []
    ops_lock = threading.Lock()
    finished = [0]
    calls = itertools.count()

    def worker(index: int) -> None:
        try:
            for interrupt in interrupted[index]:
                call = next(calls)
                request = Op(index, "request", call, stamp())
                claim: list[Op] = []

                def granted(
                    due: float, request: Op = request, call: int = call, claim: list[Op] = claim
                ) -> None:
                    request.end = stamp()
                    request.result = ("wait", Fraction(due))
                    claim.append(Op(index, "claim", call, -1, after=id(request)))  # type: ignore[arg-type]

                def protected(request: Op = request, claim: list[Op] = claim) -> None:
                    if claim:
                        claim[0].end = stamp()
                    else:
                        request.end = stamp()
                        request.result = "now"

                clock.on_sleep.hook = granted
                clock.on_sleep.interrupt = interrupt
                try:
                    limiter.call_sync(protected)
                except RateLimitedError as error:
                    request.end = stamp()
                    request.result = ("refused", Fraction(error.retry_after))
                except Stop:  # its reservation given back: a claim that gave up
                    claim[0].name = "abandon"
                    claim[0].end = stamp()
                clock.on_sleep.hook = None
                with ops_lock:
                    ops.append(request)
                    ops.extend(claim)
        finally:
            with clock._cond:
                finished[0] += 1
                clock._cond.notify_all()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    step = Fraction(1, 4)
    while clock.wait_quiet(lambda: finished[0], threads):
        tick = Op(-1, "tick", step, stamp())
        clock.advance(float(step))
        tick.end = stamp()
        with ops_lock:
            ops.append(tick)
    for thread in workers:
        thread.join(timeout=60.0)
        assert not thread.is_alive()
    for op in ops:  # a claim may come any time after its reservation: the model checks its permit is due
        if op.name in {"claim", "abandon"}:
            op.start = 0

    bucket = algorithm == "token_bucket"
    model = drawn.model()

    history = renumber(ops)
    first = Fraction(burst) if bucket else ()
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


@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
def test_waiting_rate_limiter_histories_are_linearizable(algorithm: str) -> None:
    """Seeded histories of requests that wait (or give up) on a gated clock: FIFO permits at the exact times."""
    for seed in range(150):
        waiting_limiter_history(seed, algorithm)
