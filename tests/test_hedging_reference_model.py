"""Hedging against a reference model of README's rules, over seeded random races on a fake clock.

The model is an event simulation of the rules README and ``HedgingConfig`` state: the original
starts at once; in ``"latency"`` mode another attempt starts when the latest has run ``delay``
seconds (a delay function asked once after each start that leaves room for another, and told
the latency of each winner that returned a result) and at once when an attempt ends
unacceptably; ``"parallel"`` starts all ``max_attempts`` at once; ``"fallback"`` starts the next
only on an unacceptable outcome. The first acceptable outcome (a result ``hedge_on_result`` does
not reject, an error ``hedge_on`` does not match) wins and every other attempt is cancelled and
awaited; with none, the original's outcome is the execution's. A hedge refused (the budget, the
cap on calls in total, the deadline, the policy's own bulkhead turning it away) ends hedging and
is counted denied; one turned away is given back and keeps its number. A caller's cancellation
cancels every attempt. A retry around the hedging runs the race again, numbered on.

Times are chosen so that no two events coincide: delays are whole seconds, each attempt's
duration has a fraction bit of its own (2**-(index + 3)), a cancellation falls at a quarter
second and a deadline at a half. A start time's fraction is then the sum of the bits of the
attempts whose ends led to it, so no end, start, cancellation or deadline lands on another's time.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from otel_resilience import (
    BulkheadConfig,
    Hedging,
    HedgingConfig,
    PercentileDelay,
    ResilienceConfig,
    ResilienceManager,
    RetryPolicy,
)
from otel_resilience.engine.events import Event
from otel_resilience.testing import EventRecorder, FakeClock

OK, BAD, RETRYABLE, DEFINITE = "ok", "bad", "retryable", "definite"
"""An attempt's outcome: an accepted result, a result hedge_on_result rejects, a ConnectionError
(every hedge_on set aside), a ValueError (set aside unless hedge_on names ConnectionError only)."""

SEEDS = range(160)


class Budget:
    """A hedge budget of a fixed number of hedges (the HedgeBudget protocol, without receipts)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.deposits = 0

    def deposit(self) -> None:
        self.deposits += 1

    def try_withdraw(self) -> bool:
        if self.tokens == 0:
            return False
        self.tokens -= 1
        return True

    def refund(self) -> None:
        self.tokens += 1


@dataclass
class Scenario:
    """One random race: the config's choices, each attempt's duration and outcome, the caller's cancellation."""

    mode: str
    max_attempts: int
    delays: list[int] | None  # None: a fixed delay of delays_fixed; else the function's answers
    delay_fixed: int
    only_connection_errors: bool  # hedge_on=(ConnectionError,): a ValueError is a definite answer
    reject_bad: bool  # hedge_on_result rejects "bad"
    steps: list[tuple[float, str]]  # per attempt index: (duration, outcome)
    cancel_at: float | None
    budget: int | None
    actions: int


def scenario(seed: int, races: int = 1) -> Scenario:
    rng = random.Random(seed)
    mode = rng.choice(["latency", "latency", "parallel", "fallback"])
    max_attempts = rng.randint(1, 5)
    steps = []
    for index in range(max_attempts * races):
        duration = rng.choice([0, 0, 1, 2, 3, 5, 8]) + 2.0 ** -(index + 3)
        outcomes = [OK, BAD, RETRYABLE, RETRYABLE, DEFINITE] + [RETRYABLE] * 3 * (races - 1)
        steps.append((duration, rng.choice(outcomes)))
    return Scenario(
        mode=mode,
        max_attempts=max_attempts,
        delays=[rng.randint(1, 4) for _ in range(max_attempts * races)] if rng.random() < 0.5 else None,
        delay_fixed=rng.randint(1, 4),
        only_connection_errors=rng.random() < 0.3,
        reject_bad=rng.random() < 0.7,
        steps=steps,
        cancel_at=rng.randint(0, 12 * races) + 0.25 if rng.random() < 0.3 else None,
        budget=rng.randint(0, 3) if rng.random() < 0.3 else None,
        actions=rng.randint(0, max_attempts - 1),
    )


@dataclass
class Expected:
    """What the model says a race does."""

    starts: list[float] = field(default_factory=list)
    triggers: list[str | None] = field(default_factory=list)
    cancelled: set[int] = field(default_factory=set)
    winner: int | None = None
    answer: int | None = None  # whose outcome the execution takes (None: the caller was cancelled)
    denied: int = 0
    ended: float = 0.0
    numbers: list[int] = field(default_factory=list)  # each start's attempt number in the race (from 1)
    launched: int = 0  # attempts started, admitted or turned away: each took a number


class Shared:
    """What the races of one execution share: the budget's hedges left and the delay function's answers."""

    def __init__(
        self, s: Scenario, cap: int | None = None, deadline: float | None = None, slots: int | None = None
    ) -> None:
        self.deadline = deadline
        self.slots = slots
        self.tokens = s.budget
        self.delays_asked = 0
        self.cap = cap
        self.calls = 0
        self.refused: list[str] = []


def model(s: Scenario, first: int = 0, t0: float = 0.0, shared: Shared | None = None) -> Expected:
    """One race by the rules, as an event simulation on exact times.

    ``first``: the index of the race's original among the steps (a retried race's original
    follows the attempts of the race before); ``t0``: when the race starts.
    """
    out = Expected()
    shared = Shared(s) if shared is None else shared
    running: dict[int, float] = {}
    now, latest = t0, t0
    more, delay = True, None
    timed = True  # hedges by delay: none once one would start at or past the deadline
    launched: list[str | None] = []  # every attempt started, admitted or not
    pending: list[tuple[str, int]] = []  # started in parallel mode (with their numbers), tasks not run yet

    def acceptable(index: int) -> bool:
        outcome = s.steps[first + index][1]
        if outcome == OK:
            return True
        if outcome == BAD:
            return not s.reject_bad
        if outcome == DEFINITE:
            return s.only_connection_errors
        return False

    def launch(trigger: str | None) -> None:
        nonlocal more, latest, delay
        if trigger is not None and shared.deadline is not None and now >= shared.deadline:
            out.denied += 1
            shared.refused.append("deadline")
            more = False
            return
        if trigger is not None and shared.tokens is not None:
            if shared.tokens == 0:
                out.denied += 1
                shared.refused.append("budget")
                more = False
                return
            shared.tokens -= 1
        if trigger is not None and shared.cap is not None and shared.calls >= shared.cap:
            if shared.tokens is not None:
                shared.tokens += 1  # given back: the hedge never ran
            out.denied += 1
            shared.refused.append("max_attempts")
            more = False
            return
        shared.calls += 1
        launched.append(trigger)
        latest = now
        more = len(launched) < s.max_attempts
        delay = None
        if more:
            if s.mode == "parallel":
                delay = 0.0
            elif s.mode == "latency":
                if s.delays is None:
                    delay = float(s.delay_fixed)
                else:
                    delay = float(s.delays[shared.delays_asked])
                    shared.delays_asked += 1
        if trigger is not None and s.mode == "parallel":
            pending.append((trigger, len(launched)))  # all start at once: each admitted as its task runs
        else:
            admit(trigger, len(launched))

    def admit(trigger: str | None, number: int) -> None:
        nonlocal more
        if trigger is not None and shared.slots is not None and len(running) >= shared.slots:
            # Turned away by the policy's own bulkhead (inside the hedging): it called nothing,
            # is given back (budget, cap), counted denied, and ends hedging.
            if shared.tokens is not None:
                shared.tokens += 1
            shared.calls -= 1
            out.denied += 1
            shared.refused.append("rejected")
            more = False
            return
        index = len(out.starts)
        out.starts.append(now)
        out.triggers.append(trigger)
        out.numbers.append(number)
        running[index] = now + s.steps[first + index][0]

    launch(None)
    out.launched = 1
    while True:
        out.launched = len(launched)
        timer = latest + delay if more and timed and delay is not None else None
        if timer is not None and timer > now and shared.deadline is not None and shared.deadline <= timer:
            timed, timer = False, None
        if timer is not None and timer <= now:
            launch("parallel" if s.mode == "parallel" else "delay")
            continue
        while pending:
            admit(*pending.pop(0))
        if not running and timer is None:
            out.answer = 0  # no acceptable outcome: the original's
            out.ended = now
            return out
        events = [(end, "end", index) for index, end in running.items()]
        if timer is not None:
            events.append((timer, "timer", -1))
        if s.cancel_at is not None:
            events.append((s.cancel_at, "cancel", -1))
        when, kind, index = min(events)
        now = when
        if kind == "cancel":
            out.cancelled = set(running)
            return out
        if kind == "timer":
            launch("delay")
            continue
        del running[index]
        if acceptable(index):
            out.winner = out.answer = index
            out.cancelled = set(running)
            out.ended = now
            return out
        if s.mode != "parallel" and more:
            launch("failure")


class ScriptedDelay:
    """A delay function answering the scenario's delays in turn, told the latency of accepted results."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = iter(answers)
        self.observed: list[float] = []

    def __call__(self) -> int:
        return next(self.answers)

    def observe(self, seconds: float) -> None:
        self.observed.append(seconds)


def observed(s: Scenario, races: list[Expected], firsts: list[int]) -> list[float]:
    """The latencies a delay function is told: each winner's that returned a result (an error is not one)."""
    return [
        race.ended - race.starts[race.winner]
        for race, first in zip(races, firsts, strict=True)
        if race.winner is not None and s.steps[first + race.winner][1] in {OK, BAD}
    ]


class Body:
    """The attempts' functions: the n-th call follows step n, sleeping on the fake clock."""

    def __init__(self, s: Scenario, clock: FakeClock) -> None:
        self.s = s
        self.clock = clock
        self.calls: list[tuple[float, str]] = []
        self.cancelled: set[int] = set()
        self.finished: set[int] = set()
        self.errors: dict[int, Exception] = {}

    def function(self, name: str) -> Any:
        async def attempt(tag: str) -> Any:
            assert tag == "arg"
            index = len(self.calls)
            self.calls.append((self.clock.now(), name))
            duration, outcome = self.s.steps[index]
            try:
                await self.clock.sleep(duration)
            except asyncio.CancelledError:
                self.cancelled.add(index)
                raise
            finally:
                self.finished.add(index)
            if outcome == RETRYABLE:
                raise self.errors.setdefault(index, ConnectionError(f"attempt {index}"))
            if outcome == DEFINITE:
                raise self.errors.setdefault(index, ValueError(f"attempt {index}"))
            return (outcome, index)

        attempt.__name__ = name
        return attempt


def config(s: Scenario, budget: Budget | None) -> HedgingConfig:
    delay: Any = None
    if s.mode == "latency":
        delay = float(s.delay_fixed) if s.delays is None else ScriptedDelay(s.delays)
    return HedgingConfig(
        delay=delay,
        max_attempts=s.max_attempts,
        mode=s.mode,  # type: ignore[arg-type]
        hedge_on=(ConnectionError,) if s.only_connection_errors else (Exception,),
        hedge_on_result=(lambda result: result[0] == BAD) if s.reject_bad else None,
        budget=budget,
    )


async def drive(s: Scenario, clock: FakeClock, body: Body, call: Any) -> tuple[Any, BaseException | None]:
    """Run ``call`` (a coroutine), cancelled at ``s.cancel_at`` on the fake clock; return its outcome."""
    task = asyncio.ensure_future(call)
    canceller = None
    if s.cancel_at is not None:

        async def cancel() -> None:
            await clock.sleep(s.cancel_at - clock.now())  # type: ignore[operator]
            task.cancel()

        canceller = asyncio.ensure_future(cancel())
    try:
        try:
            return await task, None
        except BaseException as error:
            return None, error
    finally:
        if canceller is not None:
            canceller.cancel()
            await asyncio.gather(canceller, return_exceptions=True)


def check(s: Scenario, expected: Expected, body: Body, result: Any, raised: BaseException | None) -> None:
    starts = [when for when, _ in body.calls]
    assert starts == expected.starts, (s, expected)
    names = [name for _, name in body.calls]
    assert names == [f"action{i - 1}" if 1 <= i <= s.actions else "fn" for i in range(len(starts))]
    assert body.cancelled == expected.cancelled, (s, expected)
    assert body.finished == set(range(len(starts))), "every attempt ended before the call returned"
    if expected.answer is None:
        assert isinstance(raised, asyncio.CancelledError), (s, raised)
        return
    outcome = s.steps[expected.answer][1]
    if outcome in {RETRYABLE, DEFINITE}:
        assert raised is body.errors[expected.answer], (s, expected, raised)
    else:
        assert raised is None, (s, expected, raised)
        assert result == (outcome, expected.answer)


def check_counts(s: Scenario, expected: Expected, stats: Any, budget: Budget | None) -> None:
    hedges = len(expected.starts) - 1
    won = expected.winner
    assert stats["executions"] == 1
    assert stats["hedges"] == hedges
    assert stats["hedges_denied"] == expected.denied
    assert stats["original_wins"] == (1 if won == 0 else 0)
    assert stats["hedge_wins"] == (1 if won is not None and won > 0 else 0)
    assert stats["cancelled"] == (1 if expected.answer is None else 0)
    assert stats["failed"] == (1 if expected.answer is not None and won is None else 0)
    if budget is not None:
        assert budget.deposits == 1
        assert budget.tokens == s.budget - hedges  # type: ignore[operator]


def check_events(
    expected: Expected, events: EventRecorder, numbers: list[int], refused: list[str] | None = None
) -> None:
    started = [(args.attempt, args.trigger) for args in events.of(Event.HEDGE_STARTED)]
    assert started == [(numbers[i], expected.triggers[i]) for i in range(1, len(expected.starts))]
    won = [(args.attempt, args.attempt_type) for args in events.of(Event.HEDGE_WON)]
    if expected.winner is not None and len(expected.starts) > 1:
        kind = "original" if expected.winner == 0 else "hedge"
        assert won == [(numbers[expected.winner], kind)]
    else:
        assert won == []
    denied = [(args.denied_by) for args in events.of(Event.HEDGE_DENIED)]
    assert denied == (["budget"] * expected.denied if refused is None else refused)


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_hedging_races_as_the_model_says(seed: int) -> None:
    """Standalone Hedging: starts and their times, triggers, winner, answer, cancelled losers, counts."""
    s = scenario(seed)
    expected = model(s)
    clock = FakeClock(0.0)
    body = Body(s, clock)
    budget = None if s.budget is None else Budget(s.budget)
    actions = tuple(body.function(f"action{i}") for i in range(s.actions))
    cfg = config(s, budget)
    if actions:
        cfg = HedgingConfig(**{**_fields(cfg), "actions": actions})
    h = Hedging("model", cfg, clock=clock)
    with EventRecorder() as events:
        result, raised = await drive(s, clock, body, h.call(body.function("fn"), "arg"))
    check(s, expected, body, result, raised)
    check_counts(s, expected, h.get_stats(), budget)
    check_events(expected, events, expected.numbers)
    if isinstance(cfg.delay, ScriptedDelay):
        assert cfg.delay.observed == observed(s, [expected], [0])
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_policy_with_hedging_races_as_the_model_says(seed: int) -> None:
    """The same races through a manager policy (maybe with a timeout, on the fake clock): stats and events too."""
    s = scenario(seed)
    rng = random.Random(-seed)
    timeout = rng.choice([None, 2.5, 3.5, 4.5, 7.5])
    slots = rng.choice([None, None, 1, 2, 3])
    shared = Shared(s, deadline=timeout, slots=slots)
    expected = model(s, shared=shared)
    clock = FakeClock(0.0)
    body = Body(s, clock)
    budget = None if s.budget is None else Budget(s.budget)
    actions = tuple(body.function(f"action{i}") for i in range(s.actions))
    cfg = config(s, budget)
    if actions:
        cfg = HedgingConfig(**{**_fields(cfg), "actions": actions})
    manager = ResilienceManager(clock=clock)
    # The deadline is read on the fake clock; its cancellation comes after as many real seconds,
    # far more than a race on the fake clock takes: an attempt past the deadline runs on, as in the model.
    bulkhead = None if slots is None else BulkheadConfig(max_concurrent=slots, max_waiting=0)
    policy = ResilienceConfig(hedging=cfg, timeout=timeout, bulkhead_config=bulkhead)
    handle = manager.policy(f"model-{seed}", policy)
    with EventRecorder() as events:
        result, raised = await drive(s, clock, body, handle.execute(body.function("fn"), "arg"))
    check(s, expected, body, result, raised)
    check_counts(s, expected, handle.get_stats()["hedging"], budget)
    check_events(expected, events, expected.numbers, shared.refused)


def _fields(cfg: HedgingConfig) -> dict[str, Any]:
    return {
        name: getattr(cfg, name)
        for name in ("delay", "max_attempts", "mode", "hedge_on", "hedge_on_result", "budget")
    }


def test_the_model_follows_the_documented_examples() -> None:
    """The model itself: a slow original hedged after the delay and beaten; a failure hedges at once."""
    slow = Scenario("latency", 2, None, 1, False, True, [(5.125, OK), (1.0625, OK)], None, None, 0)
    assert (model(slow).starts, model(slow).winner, model(slow).cancelled) == ([0.0, 1.0], 1, {0})
    failing = Scenario(
        "latency", 3, None, 4, False, True, [(1.125, RETRYABLE), (2.0625, OK), (1, OK)], None, None, 0
    )
    assert (model(failing).starts, model(failing).triggers) == ([0.0, 1.125], [None, "failure"])
    refused = Scenario(
        "fallback", 3, None, 1, False, True, [(1.125, BAD), (1.0625, BAD), (1, OK)], None, 0, 0
    )
    assert (model(refused).starts, model(refused).answer, model(refused).denied) == ([0.0], 0, 1)


RETRIED = range(1000, 1200)


def retried_model(
    s: Scenario, retries: int, backoff: int, cap: int | None, slots: int | None = None
) -> tuple[list[Expected], Shared, bool]:
    """The races of a retry around the hedging: each failed race (an error raised) runs again after
    ``backoff`` seconds, up to ``retries`` races, while the cap on calls in total leaves room.

    Returns the races, what they shared, and whether the caller was cancelled (in a race or a backoff).
    """
    shared = Shared(s, cap, slots=slots)
    races: list[Expected] = []
    first, now = 0, 0.0
    for number in range(retries):
        race = model(s, first, now, shared)
        races.append(race)
        if race.answer is None:
            return races, shared, True
        answered = s.steps[first + race.answer][1]
        first += len(race.starts)
        if answered not in {RETRYABLE, DEFINITE} or number == retries - 1:
            break
        if cap is not None and shared.calls >= cap:
            break
        now = race.ended + backoff
        if s.cancel_at is not None and s.cancel_at < now:
            return races, shared, True
    return races, shared, False


@pytest.mark.parametrize("seed", RETRIED)
async def test_a_retry_around_the_hedging_numbers_and_counts_its_races_as_the_model_says(seed: int) -> None:
    """Retry around hedging in a policy: each race by the model, numbered on from the race before, counted once."""
    rng = random.Random(-seed)
    retries, backoff = rng.randint(1, 3), rng.randint(1, 3)
    cap = rng.choice([None, None, rng.randint(1, 8)])
    slots = rng.choice([None, None, 1, 2])
    s = scenario(seed, races=retries)
    races, shared, cancelled = retried_model(s, retries, backoff, cap, slots)
    clock = FakeClock(0.0)
    body = Body(s, clock)
    budget = None if s.budget is None else Budget(s.budget)
    actions = tuple(body.function(f"action{i}") for i in range(s.actions))
    cfg = config(s, budget)
    if actions:
        cfg = HedgingConfig(**{**_fields(cfg), "actions": actions})
    retry = RetryPolicy(max_attempts=retries, strategy="fixed", initial_delay=backoff, jitter="none")
    manager = ResilienceManager(clock=clock)
    bulkhead = None if slots is None else BulkheadConfig(max_concurrent=slots, max_waiting=0)
    policy = ResilienceConfig(
        hedging=cfg, retry_policy=retry, max_attempts_total=cap, bulkhead_config=bulkhead
    )
    handle = manager.policy(f"retried-{seed}", policy)
    with EventRecorder() as events:
        result, raised = await drive(s, clock, body, handle.execute(body.function("fn"), "arg"))
    context = (seed, retries, backoff, cap, slots, s, races)
    starts = [when for race in races for when in race.starts]
    assert [when for when, _ in body.calls] == starts, context
    names = [
        f"action{i - 1}" if 1 <= i <= s.actions else "fn" for race in races for i in range(len(race.starts))
    ]
    assert [name for _, name in body.calls] == names, context
    firsts = [sum(len(r.starts) for r in races[:k]) for k in range(len(races))]
    losers = {first + i for race, first in zip(races, firsts, strict=True) for i in race.cancelled}
    assert body.cancelled == losers, context
    assert body.finished == set(range(len(starts)))
    last, first = races[-1], firsts[-1]
    if cancelled:
        assert isinstance(raised, asyncio.CancelledError), context
    else:
        index = first + cast("int", last.answer)
        outcome = s.steps[index][1]
        if outcome in {RETRYABLE, DEFINITE}:
            assert raised is body.errors[index], context
        else:
            assert (raised, result) == (None, (outcome, index)), context
    stats = handle.get_stats()["hedging"]
    assert stats["executions"] == len(races), context
    assert stats["hedges"] == len(starts) - len(races), context
    assert stats["hedges_denied"] == sum(race.denied for race in races), context
    assert stats["original_wins"] == sum(race.winner == 0 for race in races), context
    assert stats["hedge_wins"] == sum(bool(race.winner) for race in races), context
    assert stats["cancelled"] == (1 if last.answer is None else 0), context
    assert stats["failed"] == sum(race.answer is not None and race.winner is None for race in races), context
    bases = [sum(r.launched for r in races[:k]) for k in range(len(races))]  # a retried race numbers on
    started = [(args.attempt, args.trigger) for args in events.of(Event.HEDGE_STARTED)]
    assert started == [
        (base + race.numbers[i], race.triggers[i])
        for race, base in zip(races, bases, strict=True)
        for i in range(1, len(race.starts))
    ], context
    won = [(args.attempt, args.attempt_type) for args in events.of(Event.HEDGE_WON)]
    assert won == [
        (base + race.numbers[race.winner], "original" if race.winner == 0 else "hedge")
        for race, base in zip(races, bases, strict=True)
        if race.winner is not None and len(race.starts) > 1
    ], context
    assert [args.denied_by for args in events.of(Event.HEDGE_DENIED)] == shared.refused, context
    if budget is not None:
        assert budget.tokens == cast("int", s.budget) - (len(starts) - len(races)), context
    if isinstance(cfg.delay, ScriptedDelay):
        assert cfg.delay.observed == observed(s, races, firsts), context


@pytest.mark.parametrize("seed", range(60))
def test_percentile_delay_is_the_nearest_rank_of_the_latest_samples(seed: int) -> None:
    """PercentileDelay by the docstring: ``initial`` until ``min_samples``; then the
    ``ceil(percentile / 100 * n)``-th smallest of the latest ``samples``, never under ``minimum``."""
    rng = random.Random(seed)
    samples = rng.randint(1, 30)
    min_samples = rng.randint(1, samples)
    percentile = rng.choice([1, 5, 10, 25, 50, 75, 90, 95, 99, rng.randint(1, 99)])
    initial = rng.randint(1, 8) / 4
    minimum = rng.choice([0.0, initial / 2, initial])
    delay = PercentileDelay(
        initial, percentile=percentile, samples=samples, min_samples=min_samples, minimum=minimum
    )
    kept: deque[float] = deque(maxlen=samples)
    for _ in range(rng.randint(1, 80)):
        seconds: Any = rng.choice([rng.randint(0, 40) / 8, rng.randint(0, 40) / 8, -1.0, math.nan, True])
        delay.observe(seconds)
        if isinstance(seconds, float) and seconds >= 0:
            kept.append(seconds)
        if len(kept) < min_samples:
            expected = initial
        else:
            ordered = sorted(kept)
            rank = -(-percentile * len(ordered) // 100)
            expected = max(minimum, ordered[max(rank, 1) - 1])
        assert delay() == expected, (samples, min_samples, percentile, list(kept))
