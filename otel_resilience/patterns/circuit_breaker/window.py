"""Sliding windows of call outcomes, for a breaker that opens on a failure or slow-call rate.

A window remembers the recent *ended* calls of a breaker and answers one question:
``totals(now) -> (calls, failures, slow)``. Two kinds, as in Resilience4j:

* :class:`CountWindow` - the last ``size`` calls, whenever they happened.
* :class:`TimeWindow` - the calls of the last ``seconds`` seconds, kept in ``buckets`` buckets of
  width ``w = seconds / buckets``. A call recorded at time ``t`` belongs to bucket
  ``floor(t / w)``; ``totals(now)`` counts the buckets ``i`` with ``current - buckets < i <=
  current``, where ``current = floor(now / w)``: the current bucket and the ``buckets - 1``
  before it. The window therefore slides by whole buckets: it covers between
  ``seconds - w`` and ``seconds`` of history.

The config objects (frozen, validated, shared freely) build the runtime objects with
``metrics()``. A runtime object (:class:`CountWindowMetrics`, :class:`TimeWindowMetrics`) is
plain mutable state with no lock of its own: the breaker core calls it under its lock, once per
ended call (``record``), when it evaluates the rates (``totals``) and on every state change
(``clear``).

Costs:

* ``record`` and ``totals`` are O(1) (the time window: O(1) amortised; each bucket is opened
  once and expired once, so a jump of many windows costs at most one pass over the live
  buckets, never more than ``buckets`` steps). ``record`` allocates nothing per call but the
  float ``now / w`` of the time window (and an ``int`` once a count passes 256); no per-call
  object is ever kept.
* Memory is O(size) for a count window and O(buckets) for a time window, never O(calls);
  both are bounded (:data:`MAX_WINDOW_SIZE` calls, :data:`MAX_BUCKETS` buckets).
  A ``CountWindow()`` (size 100) and its runtime object take 277 bytes on CPython 3.11
  (``sys.getsizeof``: 40 for the config, 80 for the object, 157 for its ``bytearray`` of
  outcome codes; its counters are small cached ints), far under the 2 KiB budget. A
  ``TimeWindow()`` (10 buckets) takes about 1 KiB: 48 + 144 bytes, four lists of ten places
  (544 bytes) and one ``int`` per live bucket for its index (28 bytes each). The largest, 1000
  buckets, takes at most about 60 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final, Protocol, final

from otel_resilience.engine.sliding import MIN_BUCKET_WIDTH, SlidingCounts, check_bucket_width
from otel_resilience.engine.validation import check_duration, check_int

__all__ = [
    "MAX_BUCKETS",
    "MAX_WINDOW_SIZE",
    "MIN_BUCKET_WIDTH",
    "CountWindow",
    "CountWindowMetrics",
    "SlidingWindow",
    "TimeWindow",
    "TimeWindowMetrics",
    "WindowMetrics",
]

MAX_BUCKETS: Final = 1000
"""The most buckets a :class:`TimeWindow` may have (bounds its memory to about 60 KiB)."""
MAX_WINDOW_SIZE: Final = 100_000
"""The most calls a :class:`CountWindow` may hold (bounds its ring to about 100 KB per breaker)."""

_COUNT: Final = "CountWindow"
_TIME: Final = "TimeWindow"
_FAILED: Final = 1
"""Outcome code bit of a failed call in a count window's ring."""
_SLOW: Final = 2
"""Outcome code bit of a slow call in a count window's ring."""


class WindowMetrics(Protocol):
    """The runtime state of a sliding window, as the breaker core uses it (under its lock).

    A ``Protocol``, not an ABC: the core calls three methods and nothing else, the two windows
    share no code to inherit, and a protocol costs nothing at run time (no ``ABCMeta``, no
    ``isinstance`` on the hot path) while mypy still checks that both windows (and any test
    double) fit it.
    """

    def record(self, failed: bool, slow: bool, now: float) -> tuple[int, int, int]:
        """Add one ended call; return the window's ``(calls, failures, slow)`` with it.

        Args:
            failed: The call counts as a failure.
            slow: The call took longer than the slow-call threshold (a call may be both).
            now: A monotonic time in seconds, when the call ended (a count window ignores it).

        Returns:
            What :meth:`totals` would return at ``now``, the new call included.
        """
        ...

    def totals(self, now: float) -> tuple[int, int, int]:
        """Return ``(calls, failures, slow)`` of the calls in the window at ``now``."""
        ...

    def clear(self) -> None:
        """Forget every call (the breaker changed state)."""
        ...

    def held_slow(self) -> int:
        """Return the slow calls the window held at its last record or read (no lock, no change)."""
        ...


@final
class CountWindowMetrics:
    """The last ``size`` calls: a ring of one-byte outcome codes and three running totals.

    Each slot of the ring holds ``failed | slow << 1`` for one call (an empty slot holds 0, like
    a fast success); ``record`` overwrites the oldest slot and adjusts the totals by the
    difference, so it costs a few integer operations and allocates nothing.

    Args:
        size: How many calls the window keeps (``>= 1``; :class:`CountWindow` validates it).
    """

    __slots__ = ("_calls", "_codes", "_failures", "_head", "_size", "_slow")

    def __init__(self, size: int) -> None:
        self._size = size
        self._codes = bytearray(size)
        self._head = 0
        """The slot the next call overwrites: the oldest call once the ring is full."""
        self._calls = 0
        self._failures = 0
        self._slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> tuple[int, int, int]:  # noqa: ARG002 - the protocol
        """Add one ended call, evicting the oldest once ``size`` calls are held; ``now`` is unused."""
        codes = self._codes
        head = self._head
        old = codes[head]
        new = (_FAILED if failed else 0) | (_SLOW if slow else 0)
        if new != old:
            codes[head] = new
            self._failures += (new & _FAILED) - (old & _FAILED)
            self._slow += (new >> 1) - (old >> 1)
        head += 1
        self._head = 0 if head == self._size else head
        if self._calls != self._size:
            self._calls += 1
        return (self._calls, self._failures, self._slow)

    def totals(self, now: float) -> tuple[int, int, int]:  # noqa: ARG002 - the protocol
        """Return ``(calls, failures, slow)`` of the last ``size`` calls; ``now`` is unused."""
        return (self._calls, self._failures, self._slow)

    def clear(self) -> None:
        """Forget every call (O(size))."""
        self._codes[:] = bytes(self._size)
        self._head = self._calls = self._failures = self._slow = 0

    def held_slow(self) -> int:
        """Return the slow calls among the last ``size`` (no lock, no change)."""
        return self._slow

    def __repr__(self) -> str:
        return (
            f"CountWindowMetrics(size={self._size}, calls={self._calls}, "
            f"failures={self._failures}, slow={self._slow})"
        )


@final
class TimeWindowMetrics(SlidingCounts):
    """The calls of the last ``buckets`` buckets of ``seconds / buckets`` seconds each.

    An :class:`~otel_resilience.engine.sliding.SlidingCounts` whose events are ended calls and
    whose marks are *failed* and *slow*: ``record(failed, slow, now)`` returns ``(calls,
    failures, slow)``. O(1) amortised per record, memory O(buckets).

    Args:
        seconds: The window length (finite, ``> 0``; :class:`TimeWindow` validates it).
        buckets: How many buckets it is divided in (``>= 1``).
    """

    __slots__ = ()

    def held_slow(self) -> int:
        """Return the slow calls the window held at its last record or read (no lock, no change)."""
        return self._total_b

    def __repr__(self) -> str:
        calls, failures, slow = self._total_events, self._total_a, self._total_b
        return (
            f"TimeWindowMetrics(seconds={self._seconds!r}, buckets={self._buckets}, "
            f"calls={calls}, failures={failures}, slow={slow})"
        )


@dataclass(frozen=True, slots=True)
class CountWindow:
    """The last `size` calls.

    A count-based sliding window (Resilience4j's ``COUNT_BASED``): the rates are taken over the
    last ``size`` ended calls, however old they are.

    Raises:
        TypeError: ``size`` is not an ``int`` (a ``bool`` is refused); the message names
            ``CountWindow.size``.
        ValueError: ``size`` is not in ``1..100000`` (:data:`MAX_WINDOW_SIZE`).
    """

    size: int = 100
    """How many of the latest calls the window holds, ``1 <= size <= 100000`` (bounds memory:
    one byte per call, per breaker, so per key of a keyed policy). The default is 100."""

    def __post_init__(self) -> None:
        check_int(_COUNT, "size", self.size, minimum=1, maximum=MAX_WINDOW_SIZE)

    def metrics(self) -> WindowMetrics:
        """Return a new, empty runtime window (a :class:`CountWindowMetrics`)."""
        return CountWindowMetrics(self.size)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """The last `seconds` seconds, in `buckets` buckets.

    A time-based sliding window (Resilience4j's ``TIME_BASED``): the rates are taken over the
    calls of the current bucket and the ``buckets - 1`` before it, each ``seconds / buckets``
    wide. More buckets slide more smoothly and cost more memory.

    Raises:
        TypeError: A field has the wrong type (the message names ``TimeWindow.<field>``).
        ValueError: ``seconds`` is not finite and ``> 0`` (or makes a bucket narrower than
            :data:`MIN_BUCKET_WIDTH`), or ``buckets`` is not in ``1..1000``.
    """

    seconds: float = 60.0
    """The window length in seconds: a finite number ``> 0`` or a ``timedelta`` (normalised to
    ``float`` seconds); the default is 60.0 s."""
    buckets: int = 10
    """How many buckets the window is divided in, ``1 <= buckets <= 1000`` (bounds memory);
    ``seconds / buckets`` is the bucket width. The default is 10."""

    if TYPE_CHECKING:
        # The constructor as type checkers see it: it takes what __post_init__ normalises (a
        # timedelta for seconds), while the fields hold the normalised values.
        def __init__(
            self,
            seconds: float | timedelta = ...,
            buckets: int = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        seconds = check_duration(_TIME, "seconds", self.seconds)
        object.__setattr__(self, "seconds", seconds)
        buckets = check_int(_TIME, "buckets", self.buckets, minimum=1, maximum=MAX_BUCKETS)
        check_bucket_width(_TIME, "seconds", seconds, buckets)

    def metrics(self) -> WindowMetrics:
        """Return a new, empty runtime window (a :class:`TimeWindowMetrics`)."""
        return TimeWindowMetrics(self.seconds, self.buckets)


SlidingWindow = CountWindow | TimeWindow
"""Either kind of sliding window (the type of a breaker setting that takes one)."""
