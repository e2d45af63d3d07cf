"""Helpers the test modules share (importable as ``support``: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def until(condition: Callable[[], object], steps: int = 500) -> None:
    """Yield to the loop until ``condition()`` holds (bounded)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def until_sync(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``condition()`` from a thread until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


async def invoke(runner: Any, driver: str, fn: Callable[[], Any]) -> Any:
    """Run the plain function ``fn`` through ``runner`` (a ``Retry`` or a pipeline) with ``driver``."""
    if driver == "sync":
        return runner.execute_sync(fn)

    async def afn() -> Any:
        return fn()

    return await runner.execute(afn)
