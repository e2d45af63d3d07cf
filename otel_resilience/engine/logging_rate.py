"""How often a swallowed failure at one place is logged: the first, then at most once an interval.

A telemetry listener or exporter that raises is swallowed so the protected call never sees it;
it would otherwise be logged at every call that reaches it, thousands of lines a second under
load. :class:`LogRate` is the one rule both the hub (a listener's failures) and the
OpenTelemetry listener (its own) use: the first failure at a place is logged with its
traceback, later ones at that place at most once every :data:`LOG_INTERVAL` seconds, each
saying how many were left out since. Every failure is still counted by its owner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Final

from otel_resilience.engine.forking import fork_safe

__all__ = ["LOG_INTERVAL", "LogRate"]

LOG_INTERVAL: Final = 60.0
"""Seconds between two log lines about failures at one place."""


class LogRate:
    """Decides which failures at each place are logged (thread-safe).

    Its lock is reentrant: a garbage collection while it is held (an allocation inside) may
    report a failure, or free a listener whose places are forgotten, in the same thread.

    Args:
        interval: Seconds between two log lines about one place (default :data:`LOG_INTERVAL`).
        clock: The monotonic clock read (seconds).
    """

    __slots__ = ("_clock", "_interval", "_lock", "_places")

    def __init__(self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = fork_safe(threading.RLock())
        self._places: dict[Hashable, list[float]] = {}  # place -> [last logged at, left out since]

    def due(self, place: Hashable) -> int | None:
        """Note one failure at ``place``; return how many were left out before it if it is logged.

        Returns:
            ``None`` when this failure is not to be logged; else the number of failures at
            ``place`` left out since the last one logged (``0`` for the first).
        """
        now = self._clock()
        with self._lock:
            entry = self._places.get(place)
            if entry is None:
                self._places[place] = [now, 0]
                return 0
            if now - entry[0] < self._interval:
                entry[1] += 1
                return None
            left_out = int(entry[1])
            entry[0], entry[1] = now, 0
            return left_out

    def forget(self, where: Callable[[Hashable], bool]) -> None:
        """Forget every place ``where(place)`` is true of: the next failure at one is logged as a first.

        What keeps a place per owner (the hub: one per listener and method) forgets an owner's
        places when the owner goes, so the places kept stay as many as the owners alive.
        """
        with self._lock:
            places = self._places
            # A copy of the places: one may be noted meanwhile (a collection in this very loop).
            for place in [place for place in list(places) if where(place)]:
                places.pop(place, None)
