"""Tests for RetryBudget: its accounting, its window, its floor, sharing, threads, and retry storms."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import invoke

import otel_resilience
from otel_resilience.engine.events import Event, RetryExhausted, error_type_name
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.validation import MAX_COUNT
from otel_resilience.manager import ResilienceConfig, ResilienceManager
from otel_resilience.patterns.retry import Jitter, Retry, RetryBudget, RetryPolicy, RetryStrategy
from otel_resilience.patterns.retry.budget import BUDGET_BUCKETS
from otel_resilience.testing import EventRecorder, FakeClock


class Boom(ConnectionError):
    """The dependency's failure."""


def zero_delay(**kwargs: Any) -> RetryPolicy:
    """A policy that retries at once (no backoff, so no sleep)."""
    return RetryPolicy(strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE, **kwargs)


def always_failing() -> Callable[[], Any]:
    """A plain function that raises a fresh Boom on every call, counting its calls."""

    def fn() -> Any:
        fn.calls += 1  # type: ignore[attr-defined]
        raise Boom(f"failure {fn.calls}")  # type: ignore[attr-defined]

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


# -- configuration ----------------------------------------------------------------------------


def test_defaults_and_export() -> None:
    """RetryBudget() is Finagle's default shape, exported from the package; RetryPolicy has none by default."""
    budget = RetryBudget()
    assert (budget.ratio, budget.min_retries_per_second, budget.window) == (0.1, 10.0, 10.0)
    assert otel_resilience.RetryBudget is RetryBudget
    assert "RetryBudget" in otel_resilience.__all__
    assert RetryPolicy().budget is None
    assert repr(budget) == "RetryBudget(ratio=0.1, min_retries_per_second=10.0, window=10.0)"
    assert RetryBudget(window=timedelta(seconds=3)).window == 3.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ratio": -0.1}, ValueError, r"RetryBudget\.ratio must be >= 0"),
        ({"ratio": math.inf}, ValueError, r"RetryBudget\.ratio"),
        ({"ratio": math.nan}, ValueError, r"RetryBudget\.ratio"),
        ({"ratio": "0.1"}, TypeError, r"RetryBudget\.ratio"),
        ({"min_retries_per_second": -1}, ValueError, r"RetryBudget\.min_retries_per_second must be >= 0"),
        ({"min_retries_per_second": math.inf}, ValueError, r"RetryBudget\.min_retries_per_second"),
        ({"window": 0}, ValueError, r"RetryBudget\.window"),
        ({"window": -1.0}, ValueError, r"RetryBudget\.window"),
        ({"clock": object()}, TypeError, r"RetryBudget\.clock must be a Clock"),
    ],
)
def test_bad_values_are_refused_naming_the_field(kwargs: dict[str, Any], error: type, match: str) -> None:
    """Every field is validated; the error names RetryBudget.<field>."""
    with pytest.raises(error, match=match):
        RetryBudget(**kwargs)


@pytest.mark.parametrize("window", [1e-320, 5e-324, 9e-6])
def test_a_window_too_short_for_its_buckets_is_refused_at_construction(window: float) -> None:
    """A window whose tenths are narrower than a microsecond is refused, not left to fail at the first call."""
    with pytest.raises(ValueError, match=r"^RetryBudget\.window must be .*microsecond"):
        RetryBudget(window=window)
    budget = RetryBudget(window=1e-5, clock=FakeClock())  # exactly one microsecond per bucket
    budget.deposit()  # read at the same instant: a real clock could pass the 10 µs window meanwhile
    assert budget.get_stats()["first_attempts"] == 1


def test_a_policy_refuses_a_budget_that_is_not_one() -> None:
    """RetryPolicy.budget is a RetryBudget or None."""
    with pytest.raises(TypeError, match=r"RetryPolicy\.budget must be a RetryBudget or None"):
        RetryPolicy(budget=0.1)  # type: ignore[arg-type]


# -- the accounting ---------------------------------------------------------------------------


def test_the_floor_alone_allows_min_retries_per_second_times_window(clock: FakeClock) -> None:
    """With no first attempt, exactly floor = min_retries_per_second * window retries are allowed."""
    budget = RetryBudget(ratio=0.5, min_retries_per_second=2.0, window=5.0, clock=clock)
    allowed = [budget.try_withdraw() for _ in range(12)]
    assert allowed == [True] * 10 + [False] * 2
    assert budget.get_stats() == {"first_attempts": 0, "retries": 10, "available": 0, "denied": 2}


def test_first_attempts_earn_ratio_retries_each(clock: FakeClock) -> None:
    """retries < ratio * first_attempts + floor: 10 first attempts at ratio 0.3 earn 3 retries."""
    budget = RetryBudget(ratio=0.3, min_retries_per_second=0.0, window=10.0, clock=clock)
    assert budget.try_withdraw() is False  # nothing earned yet, no floor
    for _ in range(10):
        budget.deposit()
    assert budget.get_stats()["available"] == 3
    assert [budget.try_withdraw() for _ in range(4)] == [True, True, True, False]
    assert budget.get_stats() == {"first_attempts": 10, "retries": 3, "available": 0, "denied": 2}


def test_a_fractional_allowance_rounds_as_the_strict_inequality_says(clock: FakeClock) -> None:
    """At ratio 0.25 and 6 first attempts the allowance is 1.5: retries 0 and 1 pass (< 1.5), 2 does not."""
    budget = RetryBudget(ratio=0.25, min_retries_per_second=0.0, window=10.0, clock=clock)
    for _ in range(6):
        budget.deposit()
    assert budget.get_stats()["available"] == 2
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]


async def test_a_whole_bound_is_reached_not_stayed_below(driver: str, clock: FakeClock) -> None:
    """ratio 0.2 and 10 failing calls: 2 retries are allowed (0.2 * 10, the bound reached), a third is not."""
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0.0, window=10.0, clock=clock)
    for _ in range(10):
        budget.deposit()
    assert [budget.try_withdraw() for _ in range(3)] == [True, True, False]
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0.0, window=10.0, clock=clock)
    fn = always_failing()
    policy = zero_delay(max_attempts=2, budget=budget)
    for _ in range(10):  # each call deposits, fails, and retries if the budget allows
        with pytest.raises(Boom):
            await invoke(Retry("dep", policy, clock=clock), driver, fn)
    # the retries of calls 1 and 6 (retries 0 < 0.2 and 1 < 1.2); call 10's bound is 2.0: denied
    assert (fn.calls, budget.get_stats()["retries"]) == (12, 2)  # type: ignore[attr-defined]


def test_the_budget_texts_say_what_its_rule_does() -> None:
    """The retries reach the bound rounded up (the tests above): no text says they stay below it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    texts = {"RetryBudget": RetryBudget.__doc__ or "", "README.md": readme}
    for name, text in texts.items():
        flat = " ".join(text.split())
        assert "stay below" not in flat, name
        assert "rounded up to a whole retry" in flat, name


@pytest.mark.parametrize(
    ("settings", "firsts", "allowance"),
    [
        ({"ratio": 0.07, "min_retries_per_second": 0.0}, 100, 7),
        ({"ratio": 0.14, "min_retries_per_second": 0.0}, 50, 7),
        ({"ratio": 0.0, "min_retries_per_second": 8.3, "window": 30.0}, 0, 249),
        ({"ratio": 0.07, "min_retries_per_second": 8.3, "window": 30.0}, 100, 256),
    ],
)
def test_a_whole_allowance_is_not_passed_by_floating_point_rounding(
    clock: FakeClock, settings: dict[str, float], firsts: int, allowance: int
) -> None:
    """7 % of 100 first attempts is 7 retries, though ``0.07 * 100`` is ``7.000000000000001`` in floats."""
    budget = RetryBudget(**settings, clock=clock)
    for _ in range(firsts):
        budget.deposit()
    assert budget.get_stats()["available"] == allowance
    allowed = [budget.try_withdraw() for _ in range(allowance + 1)]
    assert allowed == [True] * allowance + [False]
    assert budget.get_stats()["available"] == 0


@pytest.mark.parametrize(
    "settings",
    [
        {"ratio": 0.1, "min_retries_per_second": 1e308},  # a floor beyond a float: inf
        {"ratio": 1e308, "min_retries_per_second": 0.0},  # a ratio that is, with 2 first attempts
        {"ratio": 1e300, "min_retries_per_second": 0.0},  # a level far beyond a 64-bit count
    ],
)
def test_an_allowance_beyond_a_count_is_shown_as_the_largest_count(
    clock: FakeClock, settings: dict[str, float]
) -> None:
    """``available`` is always a count (an int up to ``sys.maxsize``), as its 64-bit gauge exports it.

    A floor or a ratio so large that the bound overflows (``inf``) or passes any 64-bit count
    allows every retry, as a window can never count ``sys.maxsize`` of them.
    """
    budget = RetryBudget(**settings, window=10.0, clock=clock)
    for _ in range(3):
        budget.deposit()
    available = budget.get_stats()["available"]
    assert type(available) is int
    assert available == MAX_COUNT
    assert all(budget.try_withdraw() for _ in range(100))
    assert budget.get_stats()["available"] == MAX_COUNT - 100


def test_a_budget_with_neither_ratio_nor_floor_allows_no_retry(clock: FakeClock) -> None:
    """ratio=0 and no floor: a budget that denies every retry (retries off, by configuration)."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    for _ in range(100):
        budget.deposit()
    assert budget.try_withdraw() is False


def test_the_window_slides_by_buckets(clock: FakeClock) -> None:
    """Counts leave the window bucket by bucket: a bucket of window/10 s expires 10 buckets later."""
    assert BUDGET_BUCKETS == 10
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, window=10.0, clock=clock)
    # clock starts at 1000.0: the start of bucket 1000 (1 s buckets).
    for _ in range(4):
        budget.deposit()
    clock.advance(5.0)
    for _ in range(2):
        budget.deposit()
    assert [budget.try_withdraw() for _ in range(7)] == [True] * 6 + [False]
    clock.advance(4.999)  # t = 1009.999: still in bucket 1009, the first bucket is still in
    assert budget.get_stats() == {"first_attempts": 6, "retries": 6, "available": 0, "denied": 1}
    clock.advance(0.001)  # t = 1010.0: bucket 1000 (the first 4 deposits) has left
    assert budget.get_stats() == {"first_attempts": 2, "retries": 6, "available": 0, "denied": 1}
    clock.advance(5.0)  # t = 1015.0: bucket 1005 (2 deposits, 6 retries) has left too
    assert budget.get_stats() == {"first_attempts": 0, "retries": 0, "available": 0, "denied": 1}
    budget.deposit()
    assert budget.try_withdraw() is True


def test_a_long_silence_empties_the_window(clock: FakeClock) -> None:
    """A jump of many windows forgets everything (and the floor is back in full)."""
    budget = RetryBudget(ratio=0.1, min_retries_per_second=1.0, window=3.0, clock=clock)
    for _ in range(50):
        budget.deposit()
    while budget.try_withdraw():
        pass
    clock.advance(1000.0)
    assert budget.get_stats() == {"first_attempts": 0, "retries": 0, "available": 3, "denied": 1}


async def test_the_budget_is_shared_between_two_policies(driver: str, clock: FakeClock) -> None:
    """Two retries whose policies share a budget spend from one allowance."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.3, window=10.0, clock=clock)  # floor 3
    first = Retry("first", zero_delay(max_attempts=3, budget=budget), clock=clock)
    second = Retry("second", zero_delay(max_attempts=3, budget=budget), clock=clock)
    fn_first, fn_second = always_failing(), always_failing()
    with pytest.raises(Boom):
        await invoke(first, driver, fn_first)
    assert fn_first.calls == 3  # type: ignore[attr-defined]
    with pytest.raises(Boom):
        await invoke(second, driver, fn_second)
    assert fn_second.calls == 2  # type: ignore[attr-defined]  # one retry left of the three
    assert first.get_stats()["retries_denied"] == 0
    assert second.get_stats()["retries_denied"] == 1
    assert budget.get_stats() == {"first_attempts": 2, "retries": 3, "available": 0, "denied": 1}


def test_threads_lose_no_count_and_never_overspend(clock: FakeClock) -> None:
    """8 threads deposit and withdraw at once: every count is kept, retries stay under the allowance."""
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=10.0, clock=clock)
    per_thread, threads = 2000, 8
    allowed = [0] * threads
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        start.wait()
        for _ in range(per_thread):
            budget.deposit()
            allowed[i] += budget.try_withdraw()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stats = budget.get_stats()
    total = per_thread * threads
    assert stats["first_attempts"] == total
    assert stats["retries"] == sum(allowed)
    assert stats["retries"] + stats["denied"] == total
    assert stats["retries"] <= 0.5 * total
    assert stats["retries"] >= 0.5 * total - threads  # each thread's last denial is at most 1 short


# -- a retry that meets an empty budget -------------------------------------------------------


async def test_an_empty_budget_stops_retrying_with_the_original_error_and_a_note(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """The retry is skipped: the original error, a note naming the budget, stop reason "budget"."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0, clock=clock)  # floor 1
    r = Retry("dep", zero_delay(max_attempts=5, budget=budget), clock=clock)
    fn = always_failing()
    with pytest.raises(Boom) as info:
        await invoke(r, driver, fn)
    assert fn.calls == 2  # type: ignore[attr-defined]
    assert str(info.value) == "failure 2"
    note = (
        "otel_resilience retry 'dep': gave up after 2 of 5 attempts: the retry budget allows no more "
        "retries now (RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0))"
    )
    assert info.value.__notes__ == [note]
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(2, error_type_name(Boom()), "budget")]
    stats = r.get_stats()
    assert (stats["retries"], stats["exhausted"], stats["retries_denied"]) == (1, 1, 1)
    assert stats["executions"] == 1


async def test_a_retried_result_is_returned_when_the_budget_is_empty(driver: str, clock: FakeClock) -> None:
    """Retrying a result stops the same way: the last result is returned."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    r = Retry("dep", zero_delay(max_attempts=3, budget=budget, retry_on_result=lambda v: v == "pending"))
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        return "pending"

    assert await invoke(r, driver, fn) == "pending"
    assert len(calls) == 1
    assert r.get_stats()["retries_denied"] == 1


async def test_a_first_attempt_that_succeeds_only_deposits(driver: str, clock: FakeClock) -> None:
    """Each execution deposits once, whatever its outcome; a success withdraws nothing."""
    budget = RetryBudget(clock=clock)
    r = Retry("dep", zero_delay(budget=budget), clock=clock)
    for _ in range(3):
        assert await invoke(r, driver, lambda: "ok") == "ok"
    assert budget.get_stats()["first_attempts"] == 3
    assert budget.get_stats()["retries"] == 0


async def test_a_retry_refused_by_the_total_cap_gives_its_withdrawal_back(
    driver: str, clock: FakeClock
) -> None:
    """The execution's cap in total stops the second retry after the budget allowed it: it is refunded."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0, clock=clock)
    r = Retry("dep", zero_delay(max_attempts=5, budget=budget), clock=clock)
    pipeline = PipelineBuilder("policy", clock=clock, max_attempts=2).add(r.as_strategy("policy")).build()
    with pytest.raises(Boom) as info:
        await invoke(pipeline, driver, always_failing())
    assert "max_attempts_total" in info.value.__notes__[0]
    assert budget.get_stats()["retries"] == 1
    assert r.get_stats()["retries_denied"] == 0


# -- retry storms -----------------------------------------------------------------------------

REQUESTS = 200


async def storm(policy: RetryPolicy, clock: FakeClock) -> tuple[int, list[BaseException]]:
    """200 concurrent callers of a dependency that always fails; return its calls and what callers got."""
    calls = 0

    async def dependency() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)  # in flight together, as concurrent requests are
        raise Boom("down")

    r = Retry("storm", policy, clock=clock)
    outcomes = await asyncio.gather(*(r.execute(dependency) for _ in range(REQUESTS)), return_exceptions=True)
    return calls, list(outcomes)


async def test_without_a_budget_a_failing_dependency_gets_max_attempts_times_the_requests(
    clock: FakeClock,
) -> None:
    """The storm: 200 requests, max_attempts=3, zero delay, every call fails: 600 calls."""
    calls, outcomes = await storm(zero_delay(max_attempts=3), clock)
    assert calls == 3 * REQUESTS
    assert all(isinstance(o, Boom) for o in outcomes)


async def test_a_budget_keeps_a_storm_within_ratio_and_floor(clock: FakeClock) -> None:
    """With RetryBudget(0.1, 10/s, 10 s) calls <= (1 + 0.1) * 200 + 100 = 320, and each caller gets its error."""
    budget = RetryBudget(ratio=0.1, min_retries_per_second=10.0, window=10.0, clock=clock)
    calls, outcomes = await storm(zero_delay(max_attempts=3, budget=budget), clock)
    floor = 10.0 * 10.0
    assert calls <= (1 + 0.1) * REQUESTS + floor
    # Every first attempt deposits before any fails: 200 first attempts, then retries while
    # retries < 0.1 * 200 + 100 = 120, so 120 retries (the budget's bound is reached, not passed).
    assert calls == 320
    assert all(isinstance(o, Boom) for o in outcomes)
    denied = [o for o in outcomes if "retry budget" in "".join(getattr(o, "__notes__", []))]
    assert len(denied) == budget.get_stats()["denied"] > 0
    assert budget.get_stats()["retries"] == calls - REQUESTS


async def test_policies_of_the_manager_share_one_budget(driver: str, clock: FakeClock) -> None:
    """Two manager policies (one with an attempt timeout, whose policy the manager copies) share the budget."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.2, window=10.0, clock=clock)  # floor 2
    manager = ResilienceManager()
    configs = [
        ResilienceConfig(name="budget-a", retry_policy=zero_delay(max_attempts=3, budget=budget)),
        ResilienceConfig(
            name="budget-b", retry_policy=zero_delay(max_attempts=3, budget=budget, attempt_timeout=5.0)
        ),
    ]
    calls = []
    for config in configs:
        fn = always_failing()
        with pytest.raises(Boom):
            if driver == "sync":
                manager.execute_with_resilience_sync(fn, config)
            else:

                async def afn(fn: Callable[[], Any] = fn) -> Any:
                    return fn()

                await manager.execute_with_resilience(afn, config)
        calls.append(fn.calls)  # type: ignore[attr-defined]
    assert calls == [3, 1]
    assert budget.get_stats()["retries"] == 2


def test_a_recovery_re_run_deposits_no_second_first_attempt(clock: FakeClock) -> None:
    """One execution deposits once, however many times a recovery rule runs the retry again."""
    from otel_resilience import RecoveryAction, RecoveryStrategy  # noqa: PLC0415

    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=10.0, clock=clock)
    manager = ResilienceManager(clock=clock)
    manager.recovery_system.register_recovery_rule(
        Boom, RecoveryAction(strategy=RecoveryStrategy.RETRY, max_attempts=3, delay=0.0)
    )
    config = ResilienceConfig(
        name="re-run", retry_policy=zero_delay(max_attempts=2, budget=budget), enable_recovery=True
    )
    fn = always_failing()
    with pytest.raises(Boom):
        manager.execute_with_resilience_sync(fn, config)
    stats = budget.get_stats()
    assert stats["first_attempts"] == 1  # one execution (four before: one per run)
    assert (stats["retries"], stats["denied"]) == (1, 3)  # the re-runs' retries: over the budget
    assert fn.calls == 5  # type: ignore[attr-defined]  # the first run retried once, three re-runs


async def test_a_non_retryable_error_after_a_retry_says_why_retrying_stopped(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """Retried once, then an error the policy does not retry: retry.exhausted with not_retryable."""
    errors = iter([Boom("down"), ValueError("bad answer")])

    def flaky() -> Any:
        raise next(errors)

    r = Retry("stops", zero_delay(max_attempts=5, retry_on=(Boom,)), clock=clock)
    with pytest.raises(ValueError, match="bad answer"):
        await invoke(r, driver, flaky)
    assert recorder.of(Event.RETRY_EXHAUSTED) == [RetryExhausted(2, "ValueError", "not_retryable")]
    assert r.get_stats()["non_retryable"] == 1


async def test_a_non_retryable_first_attempt_is_no_give_up(
    driver: str, clock: FakeClock, recorder: EventRecorder
) -> None:
    """No retry was made: nothing ran out, so no retry.exhausted event."""

    def wrong() -> Any:
        raise ValueError("bad request")

    r = Retry("first", zero_delay(retry_on=(Boom,)), clock=clock)
    with pytest.raises(ValueError, match="bad request"):
        await invoke(r, driver, wrong)
    assert recorder.of(Event.RETRY_EXHAUSTED) == []
