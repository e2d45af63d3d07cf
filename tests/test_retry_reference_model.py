"""The retry's backoffs against a reference model of the documented delay rule, over seeded random policies.

The model reads ``RetryPolicy.compute_delay``'s documented table, ``Jitter``'s bounds and the
README ("Retry with backoff", "Retry budgets, and delays the dependency asks for"), and nothing
of the code:

* the base delay after failed attempt ``a``: ``FIXED`` ``i``, ``LINEAR`` ``i * a``,
  ``EXPONENTIAL`` ``i * m ** (a - 1)``, capped at ``max_delay``; ``RANDOM`` uniform in
  ``[i, cap]``, no jitter on top;
* the jitter, then the cap again: ``NONE`` ``d``, ``FULL`` uniform in ``[0, d]``, ``PROPORTIONAL``
  uniform in ``[d(1 - r), min(d(1 + r), cap)]``, ``DECORRELATED`` ``min(cap, uniform(i,
  max(i, previous) * 3))`` with ``previous`` this execution's previous backoff (``i`` before the
  first; a delay the outcome asked for counts);
* ``delay_from``: a delay used as is (no jitter, no draw); over ``max_delay``, no retry;
* an enclosing deadline: a backoff that would reach it is not waited, no retry;
* a ``RetryBudget``: a retry is allowed while ``retries < ratio * first_attempts`` (a window
  longer than the test, no floor); denied, no retry.

And where the floats end: a growth past them (``2.0 ** 1024``, an attempt number of 2**1100) times
a tiny ``initial_delay`` is still the formula's product when that is under the cap.

A uniform draw is ``a + (b - a) * u`` with ``u`` the next ``random()`` of the seeded source (what
``random.Random.uniform`` is): the model replays the same source, so every backoff the retry
sleeps on its ``FakeClock`` is compared exactly, and checked within its documented bounds.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass
from fractions import Fraction

import pytest

from otel_resilience import Jitter, Retry, RetryBudget, RetryPolicy, RetryStrategy, TimeoutHandler
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.testing import FakeClock

_NAMES = itertools.count()


class Down(Exception):
    """The dependency's failure; ``retry_after`` is what it asks for (``None``: nothing)."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("down")
        self.retry_after = retry_after


@dataclass
class Case:
    """One random policy and the script of one dependency's answers."""

    policy: RetryPolicy
    durations: list[float]  # how long each attempt takes
    asked: list[float | None]  # what each failure asks for (read with delay_from only)
    deadline: float | None
    ratio: Fraction | None  # the budget's, or no budget


def _asked(outcome: object) -> float | None:
    return getattr(outcome, "retry_after", None)


def _case(rng: random.Random) -> Case:
    strategy = rng.choice(list(RetryStrategy))
    if strategy is RetryStrategy.RANDOM:
        jitter = Jitter.NONE
    elif strategy is RetryStrategy.EXPONENTIAL:
        jitter = rng.choice(list(Jitter))
    else:
        jitter = rng.choice([Jitter.NONE, Jitter.FULL, Jitter.PROPORTIONAL])
    initial = rng.choice([0.0, 0.01, 0.1, 0.3, 1.0, 2.5])
    cap = initial + rng.choice([0.0, 0.05, 0.5, 1.0, 3.0, 60.0])
    options: dict[str, object] = {
        "max_attempts": rng.randint(1, 8),
        "strategy": strategy,
        "initial_delay": initial,
        "max_delay": cap,
        "jitter": jitter,
    }
    if strategy is RetryStrategy.EXPONENTIAL and jitter is not Jitter.DECORRELATED:
        options["multiplier"] = rng.choice([1.0, 1.5, 2.0, 3.0, 10.0])
    if jitter is Jitter.PROPORTIONAL:
        options["jitter_ratio"] = rng.choice([0.1, 0.25, 0.5, 1.0])
    if rng.random() < 0.3:
        options["attempt_timeout"] = rng.choice([0.1, 0.5, 1.0, 2.0])
    from_outcome = rng.random() < 0.3
    if from_outcome:
        options["delay_from"] = _asked
    ratio = Fraction(rng.choice(["0.07", "0.2", "0.5", "1"])) if rng.random() < 0.3 else None
    attempts = int(options["max_attempts"])  # type: ignore[call-overload]
    return Case(
        policy=RetryPolicy(**options),  # type: ignore[arg-type]
        durations=[rng.choice([0.0, 0.0, 0.01, 0.2, 1.0]) for _ in range(attempts)],
        asked=[rng.choice([None, 0.0, 0.02, 0.7, 5.0, 100.0]) for _ in range(attempts)],
        deadline=rng.choice([None, None, 0.5, 2.0, 7.0, 30.0]),
        ratio=ratio,
    )


def _uniform(source: random.Random, low: float, high: float) -> float:
    return low + (high - low) * source.random()


def model_delay(policy: RetryPolicy, attempt: int, source: random.Random, previous: float | None) -> float:
    """The documented backoff after failed ``attempt`` (the model's own draws from ``source``)."""
    i, cap = policy.initial_delay, policy.max_delay
    if policy.strategy is RetryStrategy.RANDOM:
        return min(_uniform(source, i, cap), cap)
    if policy.jitter is Jitter.DECORRELATED:
        grown = max(i, i if previous is None else previous) * 3
        return min(cap, _uniform(source, i, grown))
    if i == 0.0:
        return 0.0  # no draw needed: every jitter of 0 is 0
    base = {
        RetryStrategy.FIXED: i,
        RetryStrategy.LINEAR: i * attempt,
        RetryStrategy.EXPONENTIAL: i * policy.multiplier ** (attempt - 1),
    }[policy.strategy]
    d = min(base, cap)
    if policy.jitter is Jitter.NONE:
        jittered = d
    elif policy.jitter is Jitter.FULL:
        jittered = _uniform(source, 0.0, d)
    else:
        r = policy.jitter_ratio
        jittered = _uniform(source, d * (1 - r), min(d * (1 + r), cap))
    return min(jittered, cap)


def _bounds(policy: RetryPolicy, attempt: int, previous: float | None) -> tuple[float, float]:
    """Where a strategy's backoff may fall, as documented (rounding aside)."""
    i, cap = policy.initial_delay, policy.max_delay
    if policy.strategy is RetryStrategy.RANDOM:
        return i, cap
    if policy.jitter is Jitter.DECORRELATED:
        return i, min(cap, max(i, i if previous is None else previous) * 3)
    growth = {RetryStrategy.FIXED: 1.0, RetryStrategy.LINEAR: float(attempt)}.get(
        policy.strategy, policy.multiplier ** (attempt - 1)
    )
    d = min(cap, i * growth)
    if policy.jitter is Jitter.FULL:
        return 0.0, d
    if policy.jitter is Jitter.PROPORTIONAL:
        return d * (1 - policy.jitter_ratio), min(cap, d * (1 + policy.jitter_ratio))
    return d, d


@dataclass
class Run:
    """What the executions did: every backoff waited, the attempts of each, the counts."""

    sleeps: list[float]
    made: list[int]
    retries: int
    denied: int
    attempt_timeouts: int | None  # None: not compared (an attempt's deadline the same as the total's)


def model_run(case: Case, seed: int, executions: int) -> Run:
    """Every backoff the executions wait, and how many attempts each makes, as the docs say."""
    source = random.Random(seed)
    policy = case.policy
    sleeps: list[float] = []
    made: list[int] = []
    retries = denied = 0
    timeouts: int | None = 0
    limit = policy.attempt_timeout
    for first_attempts in range(1, executions + 1):  # each execution's first attempt deposits one
        now, previous, attempt = 0.0, None, 0
        while True:
            if limit is not None and timeouts is not None:
                # A sync attempt's error raised at or after its own deadline goes through, counted
                # there when that deadline is the one in force (not the total's, earlier).
                if case.deadline is not None and now + limit == case.deadline:
                    timeouts = None
                elif case.durations[attempt] >= limit and (
                    case.deadline is None or now + limit < case.deadline
                ):
                    timeouts += 1
            now += case.durations[attempt]
            attempt += 1
            if attempt >= policy.max_attempts:
                break
            asked = case.asked[attempt - 1] if policy.delay_from is not None else None
            if asked is not None:
                if asked > policy.max_delay:
                    break
                delay = asked
            else:
                delay = model_delay(policy, attempt, source, previous)
                low, high = _bounds(policy, attempt, previous)
                assert low - 1e-9 <= delay <= high + 1e-9
            if case.deadline is not None and case.deadline - now <= delay:
                break
            if case.ratio is not None and not retries < case.ratio * first_attempts:
                denied += 1
                break
            retries += 1
            sleeps.append(delay)
            now += delay
            previous = delay
        made.append(attempt)
    return Run(sleeps, made, retries, denied, timeouts if limit is not None else 0)


def real_run(case: Case, seed: int, executions: int, *, driver: str = "sync") -> Run:
    clock = FakeClock(0.0)
    made: list[int] = []
    attempt = 0

    def fn() -> None:
        nonlocal attempt
        clock.advance(case.durations[attempt])
        attempt += 1
        raise Down(case.asked[attempt - 1])

    async def afn() -> None:
        fn()

    budget = None
    if case.ratio is not None:
        budget = RetryBudget(ratio=float(case.ratio), min_retries_per_second=0.0, window=1e6, clock=clock)
    policy = case.policy if budget is None else _with_budget(case.policy, budget)
    name = f"model_{next(_NAMES)}"
    retry = Retry(name, policy, clock=clock, rng=random.Random(seed))
    builder = PipelineBuilder(name, clock=clock)
    if case.deadline is not None:
        builder = builder.add(TimeoutHandler(case.deadline, name="total", clock=clock).as_strategy(name))
    pipeline = builder.add(retry.as_strategy(name)).build()
    for _ in range(executions):
        attempt = 0
        with pytest.raises(Down):
            if driver == "sync":
                pipeline.execute_sync(fn)
            else:
                asyncio.run(pipeline.execute(afn))
        made.append(attempt)
    stats = retry.get_stats()
    assert stats["exhausted"] == executions
    assert stats["attempts"] == sum(made)
    if budget is not None:
        assert (budget.get_stats()["retries"], budget.get_stats()["denied"]) == (
            stats["retries"],
            stats["retries_denied"],
        )
    sleeps = [s for s in clock.sleeps if s > 0]
    return Run(sleeps, made, stats["retries"], stats["retries_denied"], stats["attempt_timeouts"])


def _with_budget(policy: RetryPolicy, budget: RetryBudget) -> RetryPolicy:
    import dataclasses  # noqa: PLC0415 - only here

    return dataclasses.replace(policy, budget=budget)


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("block", range(10))
def test_the_backoffs_slept_are_the_models(block: int, driver: str) -> None:
    for seed in range(block * 40, block * 40 + 40):
        case = _case(random.Random(seed))
        executions = 3
        want = model_run(case, seed, executions)
        got = real_run(case, seed, executions, driver=driver)
        assert (got.made, got.retries, got.denied) == (want.made, want.retries, want.denied), (seed, case)
        # A sync attempt's own deadline is judged when it ends; an async one's by its cancellation,
        # which an attempt that never awaits (these, on a FakeClock) never meets.
        if want.attempt_timeouts is not None and driver == "sync":
            assert got.attempt_timeouts == want.attempt_timeouts, (seed, case)
        # The same draws; the arithmetic of a bound may round a unit apart (d - d*r, d*(1 - r)).
        assert got.sleeps == pytest.approx([s for s in want.sleeps if s > 0], rel=1e-12), (seed, case)


@pytest.mark.parametrize(
    ("strategy", "attempt", "growth"),
    [
        (RetryStrategy.EXPONENTIAL, 1025, Fraction(2) ** 1024),
        (RetryStrategy.LINEAR, 2**1100, Fraction(2**1100)),
    ],
)
def test_a_growth_past_the_floats_times_a_tiny_initial_delay_is_the_formulas(
    strategy: RetryStrategy, attempt: int, growth: Fraction
) -> None:
    """``initial_delay * growth`` where the growth alone is past the floats but the product is not.

    ``1e-300 * 2.0 ** 1024`` is 1.797e8 s, under a 9e9 s cap: the documented ``min(i * m ** (a - 1),
    cap)`` is that product, where an overflow of the power was taken for the cap (9e9 s). And
    ``5e-324 * 2 ** 1100`` is 6.7e7 s (LINEAR's ``i * a``).
    """
    initial = 1e-300 if strategy is RetryStrategy.EXPONENTIAL else 5e-324
    policy = RetryPolicy(strategy=strategy, initial_delay=initial, max_delay=9e9, jitter=Jitter.NONE)
    want = float(Fraction(initial) * growth)  # multiplier: 2.0, its default
    assert want < 9e9
    assert policy.compute_delay(attempt) == pytest.approx(want, rel=1e-9)
    # Past the cap it is the cap; times 0 it is 0.
    assert policy.compute_delay(attempt * 1024) == 9e9
    zero = RetryPolicy(strategy=strategy, initial_delay=0.0, max_delay=9e9, jitter=Jitter.NONE)
    assert zero.compute_delay(attempt) == 0.0


def test_an_attempt_number_past_the_floats_with_a_multiplier_of_one_is_the_initial_delay() -> None:
    """``EXPONENTIAL`` with ``multiplier=1.0``: ``1.0 ** (2**1100 - 1)`` is no float, yet the growth is 1.

    The documented ``min(i * m ** (a - 1), cap)`` is ``i`` (1 s) at any attempt; the growth's
    logarithm ``(2**1100 - 1) * log(1.0)``, an int past the floats times 0.0, raised, and the
    delay was taken for the cap (60 s).
    """
    policy = RetryPolicy(
        strategy=RetryStrategy.EXPONENTIAL,
        multiplier=1.0,
        initial_delay=1.0,
        max_delay=60.0,
        jitter=Jitter.NONE,
    )
    assert policy.compute_delay(10**6) == 1.0
    assert policy.compute_delay(2**1100) == 1.0


@pytest.mark.parametrize("ratio", ["0.07", "0.1", "0.15", "0.29", "0.3", "0.33", "0.57", "0.7", "1.1"])
def test_a_budget_allows_retries_while_under_its_ratio_as_the_numbers_read(ratio: str) -> None:
    """Executions that always fail, one retry each at most: allowed exactly while ``retries < ratio * first``."""
    clock = FakeClock(0.0)
    budget = RetryBudget(ratio=float(ratio), min_retries_per_second=0.0, window=1e6, clock=clock)
    name = f"budget_{next(_NAMES)}"
    retry = Retry(name, RetryPolicy(max_attempts=2, initial_delay=0.0, budget=budget), clock=clock)
    pipeline = PipelineBuilder(name, clock=clock).add(retry.as_strategy(name)).build()
    retries = 0

    def down() -> None:
        raise Down(None)

    for first in range(1, 301):
        with pytest.raises(Down):
            pipeline.execute_sync(down)
        if retries < Fraction(ratio) * first:  # the model: exact decimals
            retries += 1
        assert (budget.get_stats()["retries"], budget.get_stats()["denied"]) == (retries, first - retries)
