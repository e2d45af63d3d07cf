"""Exact counters without a lock, for counts that move on every call.

``counter = itertools.count()`` is bumped with ``next(counter)``: one call into C that runs to
completion before any other thread can touch the counter (under the GIL, and in free-threaded
builds where ``itertools.count`` is thread-safe), so no increment is ever lost, whereas
``self.n += 1`` is a read, an add and a write that two threads can interleave. Reading one is
slower than reading an ``int`` (:func:`count_value` parses the counter's ``repr``): use them for
counts written on the hot path and read when metrics are exported or stats are asked for.
"""

from __future__ import annotations

import itertools

__all__ = ["count_value", "new_counter"]


def new_counter() -> itertools.count[int]:
    """Return a counter at zero; count with ``next(counter)``."""
    return itertools.count()


def count_value(counter: itertools.count[int]) -> int:
    """Return how many times ``next(counter)`` was called on a counter from :func:`new_counter`."""
    return int(repr(counter)[6:-1])  # "count(N)": the one reading every Python version keeps
