"""The retry budget, observed: its level gauge and its denials, read with the SDK's in-memory reader.

The level is ``resilience.retry.budget.available`` (an observable gauge by policy and retry name);
the denials are ``resilience.retry.exhausted`` with stop reason ``budget`` (one execution given up
per denial), whose series starts at 0 as soon as a retry with a budget is in a policy.
"""

from __future__ import annotations

import gc

import pytest

from otel_resilience.engine.events import error_type_name
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.registry import BUDGETED_RETRIES
from otel_resilience.engine.validation import MAX_COUNT
from otel_resilience.patterns.retry import Jitter, Retry, RetryBudget, RetryPolicy, RetryStrategy
from otel_resilience.telemetry import semconv as sc
from otel_resilience.testing import FakeClock

PREFIX = "budget-metrics-"
"""The names of this module's retries start with it (live links of other tests are left out)."""


class Down(ConnectionError):
    """The dependency's failure."""


def down() -> None:
    raise Down("down")


def policy(budget: RetryBudget | None) -> RetryPolicy:
    """Three attempts with no backoff (nothing sleeps), sharing ``budget``."""
    return RetryPolicy(
        max_attempts=3, strategy=RetryStrategy.FIXED, initial_delay=0.0, jitter=Jitter.NONE, budget=budget
    )


def levels(otel) -> dict[tuple[str, str], float]:
    """The budget gauge: ``{(policy, retry name): retries available}`` (this module's retries only)."""
    return {
        (p.attributes[sc.POLICY], p.attributes[sc.NAME]): p.value
        for p in otel.points(sc.RETRY_BUDGET_AVAILABLE)
        if p.attributes[sc.NAME].startswith(PREFIX)
    }


CALLS, ALONE, R = f"{PREFIX}calls", f"{PREFIX}alone", f"{PREFIX}r"


def denials(otel, policy_name: str) -> float:
    """Executions given up because the budget denied a retry, summed over error types."""
    return sum(
        p.value
        for p in otel.points(sc.RETRY_EXHAUSTED)
        if p.attributes[sc.POLICY] == policy_name and p.attributes[sc.RETRY_STOP_REASON] == "budget"
    )


def test_the_gauge_shows_a_shared_budget_under_each_policy_and_the_denials_are_counted(otel):
    """Two policies share a budget: both show its level; each denial is one exhausted{budget} execution."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.3, window=10.0, clock=clock)  # 3 retries
    retry = Retry(f"{PREFIX}calls", policy(budget), clock=clock)
    pipelines = {
        name: PipelineBuilder(name, clock=clock).add(retry.as_strategy(name)).build()
        for name in ("orders", "search")
    }
    plain = Retry(f"{PREFIX}plain", policy(None), clock=clock)
    unbudgeted = PipelineBuilder("plain", clock=clock).add(plain.as_strategy("plain")).build()

    assert levels(otel) == {("orders", CALLS): 3, ("search", CALLS): 3}
    assert (denials(otel, "orders"), denials(otel, "search")) == (0, 0)  # the zero series exist

    with pytest.raises(Down):  # 2 retries allowed, 1 left
        pipelines["orders"].execute_sync(down)
    assert levels(otel) == {("orders", CALLS): 1, ("search", CALLS): 1}
    for _ in range(3):  # 1 retry allowed then denied; then denied at once, twice
        with pytest.raises(Down):
            pipelines["search"].execute_sync(down)
    assert levels(otel) == {("orders", CALLS): 0, ("search", CALLS): 0}
    assert (denials(otel, "orders"), denials(otel, "search")) == (0, 3)
    assert budget.get_stats()["denied"] == retry.get_stats()["retries_denied"] == 3

    with pytest.raises(Down):
        pipelines["orders"].execute_sync(down)
    assert denials(otel, "orders") == 1
    exhausted_budget = {
        dict(p.attributes).get(sc.ERROR_TYPE)
        for p in otel.points(sc.RETRY_EXHAUSTED)
        if p.attributes[sc.RETRY_STOP_REASON] == "budget" and p.value
    }
    assert exhausted_budget == {error_type_name(Down())}

    clock.advance(10.0)  # the window slid past every retry: the floor is back
    assert levels(otel) == {("orders", CALLS): 3, ("search", CALLS): 3}
    with pytest.raises(Down):
        unbudgeted.execute_sync(down)
    assert all(policy_name != "plain" for policy_name, _ in levels(otel))
    assert denials(otel, "plain") == 0
    assert not [
        p
        for p in otel.points(sc.RETRY_EXHAUSTED)
        if p.attributes[sc.POLICY] == "plain" and p.attributes[sc.RETRY_STOP_REASON] == "budget"
    ]


def test_a_standalone_retry_shows_under_its_own_name_and_a_dropped_link_stops_reporting(otel):
    """A Retry used alone reports as policy = its name once it has run; links that are gone report nothing."""
    clock = FakeClock()
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=10.0, clock=clock)
    alone = Retry(ALONE, policy(budget), clock=clock)
    assert alone.execute_sync(lambda: "ok") == "ok"  # deposits one first attempt: 0.5 allowed
    assert levels(otel) == {(ALONE, ALONE): 1}

    link = alone.as_strategy("transient")
    assert link in BUDGETED_RETRIES.items()
    assert levels(otel) == {(ALONE, ALONE): 1, ("transient", ALONE): 1}
    del link
    gc.collect()
    assert levels(otel) == {(ALONE, ALONE): 1}


def test_same_named_links_of_one_policy_count_a_budget_once_and_sum_distinct_ones(otel):
    """Two links of one policy and name with one budget report its level once; another budget adds to it."""
    clock = FakeClock()
    shared = RetryBudget(ratio=0.0, min_retries_per_second=0.2, window=10.0, clock=clock)  # 2 retries
    other = RetryBudget(ratio=0.0, min_retries_per_second=0.5, window=10.0, clock=clock)  # 5 retries
    first, twin = (
        Retry(f"{PREFIX}r", policy(shared), clock=clock),
        Retry(f"{PREFIX}r", policy(shared), clock=clock),
    )
    links = [first.as_strategy("p"), first.as_strategy("p"), twin.as_strategy("p")]
    assert levels(otel) == {("p", R): 2}
    links.append(Retry(f"{PREFIX}r", policy(other), clock=clock).as_strategy("p"))
    assert levels(otel) == {("p", R): 7}
    del links


def test_a_budget_too_large_to_count_shows_the_largest_count_and_the_others_still_report(otel) -> None:
    """A budget whose allowance overflows a float (a floor of 1e308 retries a second) is shown as
    ``sys.maxsize``: the gauge's callback never fails, and every other budget's level is exported."""
    clock = FakeClock()
    small = RetryBudget(ratio=0.0, min_retries_per_second=0.2, window=10.0, clock=clock)  # 2 retries
    huge = RetryBudget(ratio=0.1, min_retries_per_second=1e308, window=10.0, clock=clock)
    links = [
        Retry(f"{PREFIX}small", policy(small), clock=clock).as_strategy("limited"),
        Retry(f"{PREFIX}huge", policy(huge), clock=clock).as_strategy("unlimited"),
    ]
    assert levels(otel) == {("limited", f"{PREFIX}small"): 2, ("unlimited", f"{PREFIX}huge"): MAX_COUNT}
    del links
