"""The event loops a test makes of its own: asyncio's, and uvloop's (importable as ``loops_support``).

uvicorn runs uvloop's loop whenever uvloop is installed; the test extra installs it wherever it
runs (not on Windows).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

NEW_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
"""How a test makes a loop of its own, by name: ``@pytest.mark.parametrize("kind", NEW_LOOPS)``."""
if sys.platform != "win32":  # uvloop runs on POSIX only
    import uvloop

    NEW_LOOPS["uvloop"] = uvloop.new_event_loop


class LoopTimers:
    """The loop timers set through ``loop.call_at`` from now on, on any loop (asyncio's heap of them,
    ``loop._scheduled``, is private to asyncio's loop: uvloop's has none). Undo with :meth:`close`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.set_at: list[float] = []
        """The time of every loop timer set, in order."""
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._loop = loop
        call_at = loop.call_at

        def counting(
            when: float, callback: Callable[..., object], *args: Any, **kwargs: Any
        ) -> asyncio.TimerHandle:
            key = len(self.set_at)
            self.set_at.append(when)

            def run(*given: Any) -> None:
                self._pending.pop(key, None)
                callback(*given)

            handle = self._pending[key] = call_at(when, run, *args, **kwargs)
            return handle

        loop.call_at = counting  # type: ignore[method-assign]

    def armed(self) -> list[asyncio.TimerHandle]:
        """The loop timers set since that have neither run nor been cancelled."""
        return [handle for handle in self._pending.values() if not handle.cancelled()]

    def close(self) -> None:
        """Stop counting: ``loop.call_at`` is the loop's own again."""
        del self._loop.call_at
