"""Counted tokens: a run that returns is counted by the driver, with no call of on_success."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otel_resilience.engine import Counted
from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.counting import Counter
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.step import Step


class _Counting(Step):
    """Admits every call with one ``Counted`` token and records the hooks it is called with."""

    kind = "counting"
    admit_waits = False

    def __init__(self, *, count: bool) -> None:
        super().__init__()
        self.successes = Counter()
        self.token = Counted(self.successes if count else None, "permit")
        self.hooks: list[tuple[str, Any]] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        return self.token

    def on_success(self, ctx: ExecutionContext, token: Any, result: Any) -> None:
        self.hooks.append(("success", token))
        next(self.successes)

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> None:
        self.hooks.append(("failure", token))

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.hooks.append(("cancel", token))


def _pipeline(step: Step) -> Pipeline:
    return PipelineBuilder("counted").add(step).build()


def _run(pipeline: Pipeline, driver: str, fn: Any) -> Any:
    if driver == "sync":
        return pipeline.execute_sync(fn)

    async def afn() -> Any:
        return fn()

    return asyncio.run(pipeline.execute(afn))


@pytest.fixture(params=["async", "sync"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_counted_success_is_counted_by_the_driver_alone(driver: str) -> None:
    step = _Counting(count=True)
    pipeline = _pipeline(step)
    assert _run(pipeline, driver, lambda: "ok") == "ok"
    assert _run(pipeline, driver, lambda: "ok") == "ok"
    assert step.successes.value == 2
    assert step.hooks == []  # on_success never called
    assert pipeline.stats.succeeded == 2


def test_a_counted_token_without_a_count_is_judged_by_on_success(driver: str) -> None:
    step = _Counting(count=False)
    pipeline = _pipeline(step)
    assert _run(pipeline, driver, lambda: "ok") == "ok"
    assert step.hooks == [("success", step.token)]
    assert step.successes.value == 1


def test_a_counted_token_reaches_the_other_hooks_as_itself(driver: str) -> None:
    step = _Counting(count=True)
    pipeline = _pipeline(step)

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        _run(pipeline, driver, boom)
    assert step.hooks == [("failure", step.token)]
    assert step.successes.value == 0


def test_a_count_cleared_while_the_call_runs_sends_its_success_to_on_success(driver: str) -> None:
    """The drivers read ``count`` when the run returns, not when it was admitted."""
    step = _Counting(count=True)
    pipeline = _pipeline(step)

    def clears() -> str:
        step.token.count = None
        return "ok"

    assert _run(pipeline, driver, clears) == "ok"
    assert step.hooks == [("success", step.token)]


def test_a_guarded_block_ends_with_on_success_even_when_counted() -> None:
    """A guard is not a driver: it calls on_success, which counts the success as the drivers would."""
    step = _Counting(count=True)
    guard = Guard(_pipeline(step))
    with guard:
        pass
    assert step.hooks == [("success", step.token)]
    assert step.successes.value == 1
