"""A retry's sync backoff ends at the deadline, as the async one does: a slow on_retry cannot make it outlast it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from forking_support import run_in_child

from otel_resilience import Jitter, OperationTimeoutError, Retry, RetryBudget, RetryPolicy, TimeoutHandler
from otel_resilience.engine import SyncDeadline
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.testing import FakeClock


class Down(Exception):
    """The dependency's failure."""


def _policy(clock: FakeClock, budget: RetryBudget | None = None) -> tuple[Any, list[float]]:
    """A 1 s total timeout around a retry waiting 0.5 s, whose on_retry takes 0.8 s; the calls' times."""
    calls: list[float] = []

    def fn() -> str:
        calls.append(clock.now())
        raise Down

    def slow_hook(attempt: int, error: Exception | None) -> None:
        clock.advance(0.8)

    policy = RetryPolicy(max_attempts=3, initial_delay=0.5, jitter=Jitter.NONE, budget=budget)
    retry = Retry("dep", policy, on_retry=slow_hook, clock=clock)
    timeout = TimeoutHandler(1.0, name="total", clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(timeout.as_strategy("p")).add(retry.as_strategy("p")).build()
    )
    return (lambda: pipeline.execute_sync(fn)), calls


def test_a_sync_backoff_ends_at_the_deadline_as_the_timeout() -> None:
    clock = FakeClock(100.0)
    run, calls = _policy(clock)
    with pytest.raises(OperationTimeoutError) as caught:
        run()
    assert caught.value.scope == "total"
    assert calls == [100.0]  # the second attempt never ran, past the deadline
    assert clock.now() == pytest.approx(101.0)  # the wait ended at the deadline, not 0.3 s after it


def test_the_retry_the_backoff_never_ran_goes_back_to_the_budget() -> None:
    clock = FakeClock(100.0)
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, window=60.0, clock=clock)
    run, _ = _policy(clock, budget)
    with pytest.raises(OperationTimeoutError):
        run()
    assert budget.get_stats()["retries"] == 0


async def test_a_slow_on_retry_before_a_zero_backoff_starts_no_attempt_past_the_deadline(driver: str) -> None:
    """With no backoff to wait, an on_retry that runs past the deadline still ends the execution
    with the policy's timeout: the dependency is not called again after the deadline."""
    clock = FakeClock(100.0)
    calls: list[float] = []

    def fn() -> str:
        calls.append(clock.now())
        raise Down

    async def afn() -> str:
        return fn()

    def slow_hook(attempt: int, error: Exception | None) -> None:
        clock.advance(1.5)

    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, jitter=Jitter.NONE)
    retry = Retry("dep", policy, on_retry=slow_hook, clock=clock)
    timeout = TimeoutHandler(1.0, name="total", clock=clock)
    pipeline = (
        PipelineBuilder("p", clock=clock).add(timeout.as_strategy("p")).add(retry.as_strategy("p")).build()
    )
    with pytest.raises(OperationTimeoutError) as caught:
        if driver == "sync":
            pipeline.execute_sync(fn)
        else:
            await pipeline.execute(afn)
    assert (caught.value.timeout, caught.value.scope) == (1.0, "total")
    assert calls == [100.0]
    stats = retry.get_stats()
    assert (stats["attempts"], stats["cancelled"], stats["exhausted"]) == (1, 1, 0)


@pytest.mark.parametrize(
    ("outer_start", "retry_start", "delay", "retried"),
    [(0.0, 1000.0, 0.5, True), (1000.0, 0.0, 20.0, False)],
)
def test_a_retry_on_another_clock_than_its_deadline_weighs_its_backoff_against_the_seconds_left(
    outer_start: float, retry_start: float, delay: float, *, retried: bool
) -> None:
    """Under 10 s left on another clock: a 0.5 s backoff is waited, a 20 s one gives up at once."""
    retry_clock = FakeClock(retry_start)
    policy = RetryPolicy(max_attempts=2, initial_delay=delay, jitter=Jitter.NONE)
    retry = Retry("dep", policy, clock=retry_clock)
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Down
        return "ok"

    with SyncDeadline(FakeClock(outer_start), 10.0, "total"):
        if retried:
            assert retry.run_sync(fn) == "ok"
        else:
            with pytest.raises(Down):
                retry.run_sync(fn)
    assert retry_clock.sleeps == ([delay] if retried else [])
    assert len(calls) == (2 if retried else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_jitters_apart_from_its_parent(tmp_path: Path) -> None:
    """The default jitter source is seeded anew in a forked child: workers do not back off in step."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=100.0, jitter=Jitter.FULL)

    def delays() -> str:
        return ",".join(repr(policy.compute_delay(attempt)) for attempt in range(1, 9))

    delays()  # drawn from before the fork
    in_child = tmp_path / "child"
    assert run_in_child(lambda: in_child.write_text(delays(), encoding="utf-8")) == 0
    assert in_child.read_text(encoding="utf-8") != delays()
