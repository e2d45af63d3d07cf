"""A run ended by a ``BaseException`` tells ``on_cancel`` whether the chain or a Retry's wait was running."""

from __future__ import annotations

from typing import Any

import pytest

from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.pipeline import PipelineBuilder
from otel_resilience.engine.step import Retry, Step


class Interrupted(BaseException):
    """Stands for a cancellation or an interrupt (never handed to ``on_failure``)."""


class RetryOnce(Step):
    """Retries the first failure once, with a hook; records what ``on_cancel`` is told."""

    __slots__ = ("cancels", "hook")

    def __init__(self, hook: Any) -> None:
        super().__init__()
        self.hook = hook
        self.cancels: list[tuple[Any, bool]] = []

    def admit(self, ctx: ExecutionContext) -> Any:
        return "first"

    def on_failure(self, ctx: ExecutionContext, token: Any, error: Exception) -> Any:
        return Retry(0.0, "second", self.hook) if token == "first" else None

    def on_cancel(self, ctx: ExecutionContext, token: Any, *, running: bool) -> None:
        self.cancels.append((token, running))


def _interrupt() -> None:
    raise Interrupted


def _fails_then_interrupts() -> Any:
    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first run fails")
        raise Interrupted

    return fn


@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_an_interrupt_in_the_retry_hook_is_not_running(driver: str) -> None:
    """The hook of the Retry raises: ``on_cancel`` gets the next run's token and ``running=False``."""
    step = RetryOnce(_interrupt)
    pipeline = PipelineBuilder("p").add(step).build()

    def fn() -> int:
        raise ValueError("fails")

    async def afn() -> int:
        raise ValueError("fails")

    with pytest.raises(Interrupted):
        if driver == "sync":
            pipeline.execute_sync(fn)
        else:
            await pipeline.execute(afn)
    assert step.cancels == [("second", False)]


@pytest.mark.parametrize("driver", ["sync", "async"])
async def test_an_interrupt_in_the_rerun_is_running(driver: str) -> None:
    """The re-run itself is interrupted after the Retry's hook: ``running=True``."""
    hooked: list[int] = []
    step = RetryOnce(lambda: hooked.append(1))
    pipeline = PipelineBuilder("p").add(step).build()
    fn = _fails_then_interrupts()

    async def afn() -> int:
        return fn()  # type: ignore[no-any-return]

    with pytest.raises(Interrupted):
        if driver == "sync":
            pipeline.execute_sync(fn)
        else:
            await pipeline.execute(afn)
    assert hooked == [1]
    assert step.cancels == [("second", True)]
