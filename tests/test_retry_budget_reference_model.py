"""The retry budget against a reference model of its documented rule, over seeded random sequences.

The model reads ``RetryBudget``'s docstring and the README ("Retry budgets, and delays the
dependency asks for", the configuration file's ``retry_budgets``), and nothing of the code:

* the window is the current bucket of ``window / 10`` seconds and the 9 before it (a time ``t``
  is in bucket ``floor(t / (window / 10))``);
* each execution deposits one first attempt when it starts; a retry is allowed, and counted, if
  and only if ``retries < ratio * first_attempts + min_retries_per_second * window`` in the
  window, the numbers as they read (decimal, exact: ``Fraction(str(x))``); a denied retry spends
  nothing and counts in ``denied``;
* ``available`` is how many more retries it would allow now; a refund takes one retry off the
  bucket its receipt names, while that bucket is in the window;
* policies that share a budget (one instance, or one name of ``retry_budgets``) spend from one
  window, whatever their keys; a denied retry gives up with the original error
  (``retries_denied`` of that policy), and a backoff that would reach the deadline withdraws
  nothing;
* a policy's hedging draws on its retry's budget: each hedge withdraws one, the execution
  deposits once, and a denied hedge starts no more.

The budget is each process's own (the README: "retry budgets ... stay each replica's own"), so
there is no shared-store variant to model.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest

from otel_resilience import (
    ChaosConfig,
    HedgingConfig,
    Jitter,
    ResilienceConfig,
    ResilienceManager,
    Retry,
    RetryBudget,
    RetryPolicy,
    RetryStrategy,
)
from otel_resilience.config import loads
from otel_resilience.testing import FakeClock, fresh_defaults

_ids = itertools.count()
RATIOS = (0.0, 0.07, 0.1, 0.14, 0.2, 0.25, 0.5, 1.0, 1.5)
FLOORS = (0.0, 0.0, 0.1, 0.2, 0.3, 1.0, 8.3)
WINDOWS = (2.5, 5.0, 10.0, 20.0)  # buckets of 0.25, 0.5, 1 and 2 s: every time below is exact
STEPS = (0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 7.75, 30.0)


@dataclass
class BudgetModel:
    """The documented accounting of one budget: its events by bucket, and what it denied."""

    ratio: float
    floor: float
    window: float
    events: list[tuple[int, bool]] = field(default_factory=list)  # (bucket, is a retry)
    denied: int = 0

    def bucket(self, now: float) -> int:
        return math.floor(Fraction(now) / (Fraction(str(self.window)) / 10))

    def counts(self, now: float) -> tuple[int, int]:
        current = self.bucket(now)
        live = [retry for bucket, retry in self.events if current - 10 < bucket <= current]
        return sum(1 for retry in live if not retry), sum(1 for retry in live if retry)

    def bound(self, firsts: int) -> Fraction:
        return Fraction(str(self.ratio)) * firsts + Fraction(str(self.floor)) * Fraction(str(self.window))

    def deposit(self, now: float) -> None:
        self.events.append((self.bucket(now), False))

    def withdraw(self, now: float) -> int | None:
        """The bucket the retry is counted in, or ``None`` when denied."""
        firsts, retries = self.counts(now)
        if retries < self.bound(firsts):
            self.events.append((self.bucket(now), True))
            return self.bucket(now)
        self.denied += 1
        return None

    def refund(self, bucket: int, now: float) -> None:
        current = self.bucket(now)
        if current - 10 < bucket <= current and (bucket, True) in self.events:
            self.events.remove((bucket, True))

    def stats(self, now: float) -> dict[str, int]:
        firsts, retries = self.counts(now)
        allowed = math.ceil(self.bound(firsts))  # the whole numbers n with n < bound, 0 included
        return {
            "first_attempts": firsts,
            "retries": retries,
            "available": max(0, allowed - retries),
            "denied": self.denied,
        }


def random_budget(rng: random.Random) -> tuple[float, float, float]:
    return rng.choice(RATIOS), rng.choice(FLOORS), rng.choice(WINDOWS)


@pytest.mark.parametrize("seed", range(60))
def test_every_allow_and_deny_is_the_models(seed: int) -> None:
    """Deposits, withdrawals, refunds and a sliding clock: each answer and the stats after it agree."""
    rng = random.Random(seed)
    ratio, floor, window = random_budget(rng)
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=ratio, min_retries_per_second=floor, window=window, clock=clock)
    model = BudgetModel(ratio, floor, window)
    receipts: list[tuple[int, int]] = []  # (the budget's receipt, the model's bucket)
    firsts_per_step = rng.choice((1, 3, 10))
    for step in range(400):
        op = rng.random()
        now = clock.now()
        if op < 0.45:
            for _ in range(rng.randint(0, firsts_per_step)):
                budget.deposit()
                model.deposit(now)
        elif op < 0.9:
            receipt = budget.withdraw()
            bucket = model.withdraw(now)
            assert (receipt is None) is (bucket is None), (step, now, model.stats(now))
            if receipt is not None and bucket is not None and rng.random() < 0.3:
                receipts.append((receipt, bucket))
        elif receipts:
            receipt, bucket = receipts.pop(rng.randrange(len(receipts)))
            budget.refund(receipt)
            model.refund(bucket, now)
        clock.advance(rng.choice(STEPS))
        now = clock.now()
        assert budget.get_stats() == model.stats(now), (step, now)


# --- through retry policies sharing one budget ----------------------------------------------------


class Down(ConnectionError):
    """The dependency's failure."""


@dataclass
class PolicyCase:
    """One retry policy of a scenario: its attempts and fixed backoff."""

    max_attempts: int
    delay: float
    total: float | None = None  # the policy's timeout (in a file's policy only)
    denied: int = 0
    retries: int = 0


def model_execution(
    case: PolicyCase, model: BudgetModel, clock_now: float, script: list[str]
) -> tuple[str, float, int]:
    """The answer of one execution, the time it ends and its calls.

    ``script`` is what each attempt does: ``ok``, ``down`` (an error) or ``bad`` (a result the
    policy retries, returned when retrying stops). A backoff that would reach the policy's total
    deadline is not waited and takes nothing from the budget.
    """
    now = clock_now
    deadline = math.inf if case.total is None else now + case.total
    model.deposit(now)
    attempt = 1
    while True:
        answer = script[attempt - 1]
        if answer == "ok":
            return "ok", now, attempt
        if attempt >= case.max_attempts:
            return answer, now, attempt
        if deadline - now <= case.delay:
            return answer, now, attempt
        if model.withdraw(now) is None:
            case.denied += 1
            return answer, now, attempt
        case.retries += 1
        now += case.delay
        attempt += 1


def run_shared(
    seed: int,
    make_runners: Any,
    *,
    clock: FakeClock,
    budget: RetryBudget,
    model: BudgetModel,
    cases: list[PolicyCase],
) -> None:
    """Random executions of the policies, each compared with the model's answer, calls and counts."""
    rng = random.Random(seed)
    runners = make_runners()
    for step in range(150):
        if rng.random() < 0.3:
            clock.advance(rng.choice(STEPS))
        index = rng.randrange(len(cases))
        case = cases[index]
        failure_rate = rng.choice((0.0, 0.5, 0.9, 1.0))
        fails = [
            rng.choice(("down", "bad")) if rng.random() < failure_rate else "ok"
            for _ in range(case.max_attempts)
        ]
        answer, ends, attempts = model_execution(case, model, clock.now(), fails)
        script = iter(fails)
        calls: list[int] = []

        def dependency(calls: list[int] = calls, script: Any = script) -> str:
            calls.append(1)
            answer = next(script)
            if answer == "down":
                raise Down("down")
            return answer

        try:
            result = runners[index](dependency)
        except Down:
            result = "down"
        assert result == answer, (step, index, fails, model.stats(clock.now()))
        assert clock.now() == ends, step
        assert len(calls) == attempts, step
        assert budget.get_stats() == model.stats(clock.now()), step
    for index, case in enumerate(cases):
        assert runners.stats(index)["retries_denied"] == case.denied, index
        assert runners.stats(index)["retries"] == case.retries, index


class Runners(list):  # type: ignore[type-arg]
    """The policies' runners, and how to read each one's retry counts."""

    def __init__(self, runners: list[Any], stats: Any) -> None:
        super().__init__(runners)
        self.stats = stats


def random_cases(rng: random.Random, count: int) -> list[PolicyCase]:
    return [
        PolicyCase(max_attempts=rng.randint(1, 4), delay=rng.choice((0.0, 0.25, 1.0, 3.0)))
        for _ in range(count)
    ]


def fixed(case: PolicyCase, budget: RetryBudget | None) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=case.max_attempts,
        strategy=RetryStrategy.FIXED,
        initial_delay=case.delay,
        jitter=Jitter.NONE,
        retry_on_result=BAD,
        budget=budget,
    )


def BAD(result: object) -> bool:
    """Retry a bad result."""
    return result == "bad"


@pytest.mark.parametrize("seed", range(30))
def test_retries_of_policies_sharing_one_budget_are_the_models(seed: int) -> None:
    """Several retries with one budget instance: every answer, backoff and count as the model says."""
    rng = random.Random(seed)
    ratio, floor, window = random_budget(rng)
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=ratio, min_retries_per_second=floor, window=window, clock=clock)
    model = BudgetModel(ratio, floor, window)
    cases = random_cases(rng, rng.randint(2, 4))
    retries = [Retry(f"shared-{next(_ids)}", fixed(case, budget), clock=clock) for case in cases]

    def make() -> Runners:
        return Runners([retry.execute_sync for retry in retries], lambda index: retries[index].get_stats())

    run_shared(seed, make, clock=clock, budget=budget, model=model, cases=cases)


def retry_link(manager: Any, config: Any) -> Any:
    """The retry link of a manager's policy."""
    (link,) = [link for link in manager.pipeline_for(config, config.name).strategies if link.kind == "retry"]
    return link


@pytest.mark.parametrize("seed", range(15))
def test_policies_naming_one_budget_in_a_file_share_it_as_the_model_says(seed: int) -> None:
    """``retry_budgets`` in a configuration file: the policies naming one entry spend from one window."""
    rng = random.Random(100 + seed)
    ratio, floor, window = random_budget(rng)
    cases = random_cases(rng, 3)
    lines = [
        "version: 1",
        "retry_budgets:",
        f"  shared: {{ratio: {ratio}, min_retries_per_second: {floor}, window: {window}}}",
        "policies:",
    ]
    for index, case in enumerate(cases):
        lines.append(f"  p{index}:")
        lines.append(
            f"    retry: {{max_attempts: {case.max_attempts}, strategy: fixed, initial_delay: {case.delay}, "
            "jitter: none, budget: shared}"
        )
        case.total = rng.choice((None, 2.0, 4.5))
        if case.total is not None:
            lines.append(f"    timeout: {case.total}")
    clock = FakeClock(1000.0)
    with fresh_defaults(clock=clock) as manager:
        loaded = loads("\n".join(lines), format="yaml")
        configs = {  # a predicate on the result is set in code, as the README says
            name: dataclasses.replace(
                config, retry_policy=dataclasses.replace(config.retry_policy, retry_on_result=BAD)
            )
            for name, config in loaded.items()
        }
        budgets = {id(configs[f"p{index}"].retry_policy.budget) for index in range(len(cases))}
        assert len(budgets) == 1
        budget = loaded.retry_budgets["shared"]
        model = BudgetModel(ratio, floor, window)

        def make() -> Runners:
            runners = [
                (lambda fn, config=configs[f"p{index}"]: manager.execute_with_resilience_sync(fn, config))
                for index in range(len(cases))
            ]
            return Runners(
                runners,
                lambda index: retry_link(manager, configs[f"p{index}"]).get_stats(),
            )

        run_shared(seed, make, clock=clock, budget=budget, model=model, cases=cases)


# --- retries and hedges drawing on one budget, around injected faults ------------------------------


@pytest.mark.parametrize("seed", range(25))
async def test_retries_and_hedges_of_a_policy_share_its_budget_as_the_model_says(seed: int) -> None:
    """Retry around hedging (``fallback`` mode: the next attempt at once) around chaos, one budget.

    Each execution deposits once (the retry; the hedging shares its budget, so it does not); each
    hedge and each retry withdraws one; a denied hedge ends the race with the original's error,
    which the retry then retries if the budget allows.
    """
    rng = random.Random(300 + seed)
    ratio, floor, window = random_budget(rng)
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=ratio, min_retries_per_second=floor, window=window, clock=clock)
    model = BudgetModel(ratio, floor, window)
    retries, hedges = rng.randint(1, 3), rng.randint(1, 3)
    fault_rate, chaos_seed = rng.choice((0.0, 0.3, 0.7)), rng.randrange(2**16)
    draws = random.Random(chaos_seed)
    config = ResilienceConfig(
        name=f"hedged-{next(_ids)}",
        retry_policy=RetryPolicy(
            max_attempts=retries,
            strategy=RetryStrategy.FIXED,
            initial_delay=0.0,
            jitter=Jitter.NONE,
            budget=budget,
        ),
        hedging=HedgingConfig(mode="fallback", max_attempts=hedges),
        chaos=ChaosConfig(fault_rate=fault_rate, fault=Down, seed=chaos_seed) if fault_rate else None,
    )
    manager = ResilienceManager(clock=clock)
    for step in range(80):
        if rng.random() < 0.3:
            clock.advance(rng.choice(STEPS))
        now = clock.now()
        failure_rate = rng.choice((0.0, 0.5, 1.0))
        script = [rng.random() < failure_rate for _ in range(retries * hedges)]
        # the model: which attempts call the dependency, and the answer
        model.deposit(now)
        expected_calls, answer, position = 0, "down", 0
        for attempt in range(1, retries + 1):
            raced = False
            for hedge in range(1, hedges + 1):
                if hedge > 1 and model.withdraw(now) is None:
                    break
                injected = fault_rate > 0 and draws.random() < fault_rate
                if not injected:
                    expected_calls += 1
                    failed = script[position]
                    position += 1
                    if not failed:
                        raced = True
                        break
            if raced:
                answer = "ok"
                break
            if attempt == retries or model.withdraw(now) is None:
                break
        answers = iter(script)
        calls: list[int] = []

        async def dependency(calls: list[int] = calls, answers: Any = answers) -> str:
            calls.append(1)
            if next(answers):
                raise Down("down")
            return "ok"

        try:
            result = await manager.execute_with_resilience(dependency, config)
        except Down:
            result = "down"
        assert (result, len(calls)) == (answer, expected_calls), (step, retries, hedges)
        assert budget.get_stats() == model.stats(clock.now()), step


@pytest.mark.parametrize("seed", range(15))
def test_the_keys_of_a_policy_spend_from_its_one_budget_as_the_model_says(seed: int) -> None:
    """A keyed policy (its keys evicted and made again) and a second policy: one window for all of them."""
    rng = random.Random(500 + seed)
    ratio, floor, window = random_budget(rng)
    clock = FakeClock(1000.0)
    budget = RetryBudget(ratio=ratio, min_retries_per_second=floor, window=window, clock=clock)
    model = BudgetModel(ratio, floor, window)
    keyed, plain = random_cases(rng, 2)
    manager = ResilienceManager(clock=clock)
    handle = manager.policy(
        f"keyed-{next(_ids)}", ResilienceConfig(retry_policy=fixed(keyed, budget)), max_keys=2
    )
    other = manager.policy(f"plain-{next(_ids)}", ResilienceConfig(retry_policy=fixed(plain, budget)))
    keys = iter(itertools.cycle("abc"))

    def make() -> Runners:
        return Runners(
            [lambda fn: handle.for_key(next(keys)).execute_sync(fn), other.execute_sync],
            lambda index: (handle, other)[index].get_stats()["retry"],
        )

    run_shared(seed, make, clock=clock, budget=budget, model=model, cases=[keyed, plain])
