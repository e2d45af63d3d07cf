"""The package's one sliding time window of counts: buckets in a ring, with running totals."""

from __future__ import annotations

import math
from typing import Final

from otel_resilience.engine.validation import fail

__all__ = ["MIN_BUCKET_WIDTH", "SlidingCounts", "check_bucket_width"]

MIN_BUCKET_WIDTH: Final = 1e-6
"""The narrowest bucket of a sliding window, in seconds (one microsecond): a narrower one would
make ``now / width`` overflow or divide by zero on a monotonic clock reading."""


def check_bucket_width(owner: str, field: str, seconds: float, buckets: int) -> None:
    """Refuse a window of ``seconds`` whose ``buckets`` would each be narrower than :data:`MIN_BUCKET_WIDTH`.

    The one rule for every owner of a :class:`SlidingCounts` (a breaker's ``TimeWindow``, a
    retry budget's window), checked at construction: such a window would fail at its first event.

    Raises:
        ValueError: Naming ``owner.field`` (the window's length), the rule and the value.
    """
    if seconds / buckets < MIN_BUCKET_WIDTH:
        rule = f">= {MIN_BUCKET_WIDTH * buckets:g} s (1 microsecond per bucket, {buckets} buckets)"
        raise fail(owner, field, rule, seconds)


class SlidingCounts:
    """Events of the last ``buckets`` buckets of ``seconds / buckets`` seconds, each marked a and/or b.

    An event may be marked ``a`` and/or ``b`` (a failed call, a slow call; a retry). The one sliding
    time window of the package: the breaker's :class:`TimeWindow` counts its calls in one (marks:
    failed, slow), the retry budget its first attempts and retries (mark: retry). A call recorded at
    time ``t`` belongs to bucket ``floor(t / width)``; the window is the current bucket and the
    ``buckets - 1`` before it.

    The live buckets (those that may still hold events in the window) are kept oldest first in a
    ring queue of ``buckets`` places: each place holds a bucket's absolute index (``floor(t /
    width)``) and its three counts, and three running totals hold their sums. When time reaches
    a new bucket, the buckets that left the window are popped from the head (their counts taken
    off the totals) and the new one is pushed at the tail; every bucket is pushed once and popped
    once, so ``record`` and ``totals`` are O(1) amortised, and a jump of many windows pops at
    most ``buckets`` places. The hot path of ``record`` (same bucket as the last call) is one
    division, one comparison and a few list increments.

    A ``now`` slightly earlier than an earlier one (time never goes back in use, but a caller
    may read the clock before another that records first) counts in the newest bucket. ``now``
    must be finite.

    Args:
        seconds: The window length (finite, ``> 0``, at least :data:`MIN_BUCKET_WIDTH` per
            bucket; its owner validates it with :func:`check_bucket_width`).
        buckets: How many buckets it is divided in (``>= 1``).
    """

    __slots__ = (
        "_a",
        "_b",
        "_buckets",
        "_events",
        "_head",
        "_index",
        "_live",
        "_next",
        "_seconds",
        "_slot",
        "_total_a",
        "_total_b",
        "_total_events",
        "_width",
        "newest",
    )

    def __init__(self, seconds: float, buckets: int) -> None:
        self._seconds = seconds
        self._buckets = buckets
        self._width = seconds / buckets
        self._index = [0] * buckets
        """The absolute bucket index held by each place of the ring queue."""
        self._events = [0] * buckets
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._head = 0
        """The place of the oldest live bucket."""
        self._live = 0
        """How many buckets are live (queued), from ``_head`` on."""
        self._slot = 0
        """The place of the newest bucket, where ``record`` counts (valid once ``_live > 0``)."""
        self._next = -math.inf
        """The newest bucket's index + 1, as a float: ``now / width >= _next`` means a new bucket."""
        self._total_events = 0
        self._total_a = 0
        self._total_b = 0
        self.newest: int | None = None
        """The newest live bucket's index (``floor(t / width)``), where :meth:`record` counts;
        ``None`` on an empty window. Read right after :meth:`record`, it names the bucket the
        event was counted in, for :meth:`forget`. Read only."""

    def record(self, a: bool, b: bool, now: float) -> tuple[int, int, int]:
        """Add one event at monotonic time ``now`` (seconds) to its bucket; return :meth:`totals`."""
        if now / self._width >= self._next:
            self._advance(now)
        slot = self._slot
        self._events[slot] += 1
        self._total_events += 1
        if a:
            self._a[slot] += 1
            self._total_a += 1
        if b:
            self._b[slot] += 1
            self._total_b += 1
        return (self._total_events, self._total_a, self._total_b)

    def totals(self, now: float) -> tuple[int, int, int]:
        """Return ``(events, marked a, marked b)`` in the window at ``now``, expiring older buckets."""
        if now / self._width >= self._next:
            self._advance(now)
        return (self._total_events, self._total_a, self._total_b)

    def _advance(self, now: float) -> None:
        """Make the bucket of ``now`` the newest: pop the buckets it pushes out, then push it."""
        current = math.floor(now / self._width)
        oldest_out = current - self._buckets
        size = self._buckets
        index = self._index
        head = self._head
        live = self._live
        while live and index[head] <= oldest_out:
            self._total_events -= self._events[head]
            self._total_a -= self._a[head]
            self._total_b -= self._b[head]
            self._events[head] = self._a[head] = self._b[head] = 0
            head = 0 if head + 1 == size else head + 1
            live -= 1
        tail = head + live
        if tail >= size:
            tail -= size
        index[tail] = current
        self._head = head
        self._live = live + 1
        self._slot = tail
        self._next = float(current + 1)
        self.newest = current

    def clear(self) -> None:
        """Forget every event (O(live buckets))."""
        size = self._buckets
        place = self._head
        for _ in range(self._live):
            self._events[place] = self._a[place] = self._b[place] = 0
            place = 0 if place + 1 == size else place + 1
        self._head = self._live = self._slot = 0
        self._next = -math.inf
        self._total_events = self._total_a = self._total_b = 0
        self.newest = None

    def forget(self, a: bool, b: bool, bucket: int | None = None) -> None:
        """Take one event so marked off the bucket it was counted in (one that did not happen).

        ``bucket`` is the index :attr:`newest` gave right after the event's :meth:`record`:
        the event leaves that bucket's count and the totals, or nothing happens when that
        bucket has left the window (the event no longer counts). ``None`` takes it off the
        newest bucket, for an event recorded in it (forgotten at once, by a caller that holds
        the same lock). Nothing happens either when that bucket counted no event so marked (as
        far as its counts of each mark tell): no count is ever taken below what it counted, nor
        a mark's count left above the events'.
        """
        if not self._live:
            return
        if bucket is None:
            slot = self._slot
        else:
            size, index = self._buckets, self._index
            slot = self._head
            for _ in range(self._live):  # at most `buckets` places: oldest first
                if index[slot] == bucket:
                    break
                slot = 0 if slot + 1 == size else slot + 1
            else:
                return  # the bucket left the window: the event no longer counts
        events, marked_a, marked_b = self._events[slot], self._a[slot], self._b[slot]
        if (marked_a if a else events - marked_a) < 1 or (marked_b if b else events - marked_b) < 1:
            # No event so marked was counted there: nothing to take off (an unmarked one taken
            # off a bucket of marked events would leave more marked than counted).
            return
        self._events[slot] -= 1
        self._total_events -= 1
        if a:
            self._a[slot] -= 1
            self._total_a -= 1
        if b:
            self._b[slot] -= 1
            self._total_b -= 1

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(seconds={self._seconds!r}, buckets={self._buckets}, "
            f"events={self._total_events}, a={self._total_a}, b={self._total_b})"
        )
