"""A scripted async dependency for the hedging tests (importable: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import asyncio
from typing import Any, Final

HANG: Final = object()
"""Script step: wait until cancelled."""


class Later:
    """Script step: sleep ``seconds`` (real time), then return ``value``."""

    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds = seconds
        self.value = value


class Gate:
    """Script step: wait for :attr:`event`, then return ``value``."""

    def __init__(self, value: Any) -> None:
        self.event = asyncio.Event()
        self.value = value


class Dependency:
    """An async dependency whose n-th call follows the n-th script step (the last repeats).

    A step is a value (returned), an exception instance (raised), :data:`HANG`, a
    :class:`Later` or a :class:`Gate`. It records each call's arguments, the calls cancelled
    and the calls whose ``finally`` ran, and the most calls running at once.
    """

    def __init__(self, *script: Any) -> None:
        self.script = script
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.cancelled: list[int] = []
        self.finished: list[int] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        index = len(self.calls)
        self.calls.append((args, kwargs))
        step = self.script[min(index, len(self.script) - 1)]
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if step is HANG:
                await asyncio.Event().wait()
            if isinstance(step, BaseException):
                raise step
            if isinstance(step, Later):
                await asyncio.sleep(step.seconds)
                return step.value
            if isinstance(step, Gate):
                await step.event.wait()
                return step.value
            await asyncio.sleep(0)
            return step
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise
        finally:
            self.running -= 1
            self.finished.append(index)
