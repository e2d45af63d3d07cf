"""Counted tokens (a run that returns is counted by the driver, with no call of on_success) and
standing admissions (a call is admitted with the step's published token, with no call of admit)."""

from __future__ import annotations

from typing import Any

import pytest
from support import run

from otel_resilience.engine import Counted, Standing
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


def test_a_counted_success_is_counted_by_the_driver_alone(driver: str) -> None:
    step = _Counting(count=True)
    pipeline = _pipeline(step)
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert step.successes.value == 2
    assert step.hooks == []  # on_success never called
    assert pipeline.stats.succeeded == 2


def test_a_counted_token_without_a_count_is_judged_by_on_success(driver: str) -> None:
    step = _Counting(count=False)
    pipeline = _pipeline(step)
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert step.hooks == [("success", step.token)]
    assert step.successes.value == 1


def test_a_counted_token_reaches_the_other_hooks_as_itself(driver: str) -> None:
    step = _Counting(count=True)
    pipeline = _pipeline(step)

    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run(driver, pipeline, boom)
    assert step.hooks == [("failure", step.token)]
    assert step.successes.value == 0


def test_a_count_cleared_while_the_call_runs_sends_its_success_to_on_success(driver: str) -> None:
    """The drivers read ``count`` when the run returns, not when it was admitted."""
    step = _Counting(count=True)
    pipeline = _pipeline(step)

    def clears() -> str:
        step.token.count = None
        return "ok"

    assert run(driver, pipeline, clears) == "ok"
    assert step.hooks == [("success", step.token)]


def test_a_guarded_block_ends_with_on_success_even_when_counted() -> None:
    """A guard is not a driver: it calls on_success, which counts the success as the drivers would."""
    step = _Counting(count=True)
    guard = Guard(_pipeline(step))
    with guard:
        pass
    assert step.hooks == [("success", step.token)]
    assert step.successes.value == 1


class _Standing(_Counting):
    """A ``_Counting`` step that publishes its token as a standing admission and counts its admits."""

    kind = "standing"

    def __init__(self) -> None:
        super().__init__(count=True)
        self.standing = Standing()
        self.asked = 0

    def admit(self, ctx: ExecutionContext) -> Any:
        self.asked += 1
        return super().admit(ctx)


class _EarlyStanding(_Standing):
    admits_early = True


class _InnerStanding(_Standing):
    admits_early = False


@pytest.mark.parametrize("cls", [_EarlyStanding, _InnerStanding], ids=["pipeline", "driver"])
def test_a_standing_token_admits_calls_without_asking_admit(driver: str, cls: type[_Standing]) -> None:
    """The pipeline's early admission (head) and the driver (a step inside another) admit with a
    set standing token and ask ``admit`` only while it is ``None``."""
    step = cls()
    outer = _Counting(count=False)
    pipeline = _pipeline(step) if cls is _EarlyStanding else PipelineBuilder("s").add(outer).add(step).build()
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert step.asked == 1  # nothing standing yet
    step.standing.token = step.token
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert step.asked == 1  # admitted with the standing token, unasked
    assert step.successes.value == 3  # every run admitted with the Counted token, counted once
    step.standing.token = None
    assert run(driver, pipeline, lambda: "ok") == "ok"
    assert step.asked == 2


def test_a_guarded_block_asks_admit_even_with_a_standing_token() -> None:
    step = _EarlyStanding()
    step.standing.token = step.token
    with Guard(_pipeline(step)):
        pass
    assert step.asked == 1
