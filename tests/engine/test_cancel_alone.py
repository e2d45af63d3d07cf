"""A task cancelled for a reason of our own tells that cancellation from any other, on every Python.

(Python 3.10 merges a request made while another is pending into it: there ``cancel_alone`` and
``cancelled_alone`` tell them apart as a deadline's scope tells its own.)
"""

from __future__ import annotations

import asyncio

import pytest

from otel_resilience.engine.deadline import cancel_alone, cancelled_alone


async def _cancelled(others_before: int, others_after: int) -> bool:
    """Cancel a waiting task with ``cancel_alone`` between other requests; return what it judged."""
    marks: list[object | None] = []
    judged: list[bool] = []
    waiting = asyncio.Event()

    async def waits() -> None:
        try:
            waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            mark = marks[0]
            judged.append(mark is not None and cancelled_alone(task, mark))
            raise

    task = asyncio.ensure_future(waits())
    await waiting.wait()
    for _ in range(others_before):
        task.cancel()
    marks.append(cancel_alone(task, "ours"))
    for _ in range(others_after):
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return judged[0]


async def test_a_cancellation_of_ours_alone_is_told() -> None:
    assert await _cancelled(0, 0)


@pytest.mark.parametrize(("before", "after"), [(1, 0), (0, 1), (2, 1)])
async def test_a_cancellation_from_elsewhere_in_the_same_turn_is_never_taken_for_ours(
    before: int, after: int
) -> None:
    """Requested before ours (still pending) or after it, before the task ran: not ours alone."""
    assert not await _cancelled(before, after)
