"""A step's on_cancel that raises never replaces the cancellation it hears of: its error is logged."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import pytest

from otel_resilience.engine.context import ExecutionContext
from otel_resilience.engine.guard import Guard
from otel_resilience.engine.pipeline import Pipeline, PipelineBuilder
from otel_resilience.engine.step import Step


async def _timed_out(run: Callable[[], Awaitable[object]]) -> None:
    """Run ``run()`` under a 0.01 s timeout: ``asyncio.timeout`` (3.11), else ``asyncio.wait_for``.

    Either turns the cancellation it made into its timeout only if the cancellation comes back
    out of the run: an error in its place would come out as that error.
    """
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(0.01):
            await run()
    else:  # pragma: no cover - Python 3.10
        await asyncio.wait_for(run(), 0.01)


class BreaksOnCancel(Step):
    """Admits every call; its on_cancel raises."""

    __slots__ = ("heard",)

    kind: ClassVar[str] = "breaks_on_cancel"

    def __init__(self) -> None:
        super().__init__()
        self.heard = 0

    def on_cancel(self, ctx: ExecutionContext, token: Any, /, *, running: bool) -> None:
        self.heard += 1
        msg = "on_cancel broke"
        raise RuntimeError(msg)


def _pipeline() -> tuple[Pipeline, BreaksOnCancel]:
    step = BreaksOnCancel()
    return PipelineBuilder("breaks").add(step).build(), step


def _logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otel_resilience" and "on_cancel" in r.getMessage()]


async def test_an_enclosing_timeout_still_times_out(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, step = _pipeline()
    with pytest.raises(asyncio.TimeoutError):  # TimeoutError itself on 3.11
        await _timed_out(lambda: pipeline.execute(asyncio.Event().wait))
    assert step.heard == 1
    (record,) = _logged(caplog)
    assert record.getMessage().startswith("breaks_on_cancel 'breaks_on_cancel': on_cancel raised")
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


async def test_a_cancelled_task_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, step = _pipeline()
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(pipeline.execute(waits))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert step.heard == 1
    assert len(_logged(caplog)) == 1


def test_an_interrupt_in_a_thread_stays_the_interrupt(caplog: pytest.LogCaptureFixture) -> None:
    """The sync driver's equivalent: a KeyboardInterrupt the run raised reaches the caller as itself."""
    pipeline, step = _pipeline()

    def interrupted() -> None:
        raise KeyboardInterrupt

    seen: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.execute_sync(interrupted)
        except BaseException as error:
            seen.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert [type(error) for error in seen] == [KeyboardInterrupt]
    assert step.heard == 1
    assert len(_logged(caplog)) == 1


async def test_a_guarded_block_cancelled_stays_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """A guarded block leaves by the same rule: its timeout still times out."""
    pipeline, step = _pipeline()

    async def guarded() -> None:
        async with Guard(pipeline):
            await asyncio.Event().wait()

    with pytest.raises(asyncio.TimeoutError):
        await _timed_out(guarded)
    assert step.heard == 1
    assert len(_logged(caplog)) == 1


def test_a_guarded_block_interrupted_stays_interrupted(caplog: pytest.LogCaptureFixture) -> None:
    pipeline, step = _pipeline()
    with pytest.raises(KeyboardInterrupt), Guard(pipeline):
        raise KeyboardInterrupt
    assert step.heard == 1
    assert len(_logged(caplog)) == 1
