"""A hedge delay that follows the dependency's latency: :class:`PercentileDelay`."""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left, insort
from collections import deque
from datetime import timedelta
from typing import Final, Protocol, runtime_checkable

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.readonly import ReadOnly
from otel_resilience.engine.rounding import ceil_whole
from otel_resilience.engine.validation import check_duration, check_int, check_number, fail

__all__ = ["MAX_SAMPLES", "LatencyObserver", "PercentileDelay"]

_OWNER: Final = "PercentileDelay"

MAX_SAMPLES: Final = 10_000
"""The most latencies a :class:`PercentileDelay` may keep (``samples``): it holds each of them twice
(in arrival order and sorted), and each new one moves up to all of the sorted ones along by one
(an insertion into a list, once per accepted answer)."""


_LARGEST: Final = sys.float_info.max
"""The longest latency kept, and delay a delay function may return (``HedgingConfig.delay``): an
infinite one, or an ``int`` no float holds, is ignored (a latency) or refused (a delay)."""


@runtime_checkable
class LatencyObserver(Protocol):
    """A hedge delay that wants the latencies of accepted results (``HedgingConfig.delay``).

    A delay function with an ``observe`` method is handed the latency, in seconds on the
    hedging's clock, of every attempt that returned a result that was accepted: the winners (a
    result that ended once the race was won, even in the same turn of the loop, ends as a loser,
    cancelled); cancelled and failed attempts are not observed, nor is an error, even one
    accepted (``hedge_on`` does not match it): the delay follows the latency of answers.
    """

    def observe(self, seconds: float, /) -> None:
        """Record one accepted result's latency (must be fast, thread-safe, and never raise)."""
        ...


class PercentileDelay:
    """A hedge delay of the ``percentile``-th percentile of the latest ``samples`` accepted latencies.

    Example::

        HedgingConfig(delay=PercentileDelay(initial=0.05, percentile=95, samples=200))

    hedges whatever takes longer than 95 % of the recent answers took: the hedge load stays near
    ``1 - percentile / 100`` of the calls (5 % here) whatever the dependency's current latency,
    where a fixed delay hedges almost every call once the dependency slows down past it. The
    latencies are those of accepted results (a loser cancelled when another won is never
    observed: its latency is not known), so under a tail of slow calls the percentile is a little
    low, which hedges a little more, never less.

    One instance may serve several hedging configs (they share the latencies: give each
    dependency its own). Thread-safe. The latencies are kept sorted as they come (a bisection
    finds where the new one goes, and the oldest, once ``samples`` are kept, leaves the same
    way: O(log samples) comparisons and a move of the larger ones along), so asking for the
    delay indexes the nearest rank (the ``ceil(percentile / 100 * n)``-th smallest of the ``n``
    kept), once per new observation.

    Args:
        initial: The delay in seconds until ``min_samples`` latencies were observed (``> 0``; a
            ``timedelta`` is accepted).
        percentile: Which percentile, ``0 < percentile < 100``. Default: 95.
        samples: How many of the latest latencies it keeps, ``1 <= samples <= 10000``
            (:data:`MAX_SAMPLES`). Default: 100.
        min_samples: How many it needs before it uses them, ``1 <= min_samples <= samples``.
            Default: ``min(10, samples)``.
        minimum: The shortest delay it returns, seconds ``>= 0`` and ``<= initial`` (a floor under
            a dependency that answers in microseconds; a ``timedelta`` is accepted). Default: 0.

    The settings are read-only attributes of the same names, as a config's fields are (an
    assignment is an ``AttributeError``): they are checked once, here.

    Raises:
        TypeError: A value has the wrong type (the message names ``PercentileDelay.<field>``).
        ValueError: A value is out of range.
    """

    __slots__ = (
        "_cached",
        "_dirty",
        "_initial",
        "_latencies",
        "_lock",
        "_min_samples",
        "_minimum",
        "_ordered",
        "_percentile",
    )

    def __init__(
        self,
        initial: float | timedelta,
        *,
        percentile: float = 95.0,
        samples: int = 100,
        min_samples: int | None = None,
        minimum: float | timedelta = 0.0,
    ) -> None:
        self._initial = check_duration(_OWNER, "initial", initial)
        self._percentile = check_number(
            _OWNER,
            "percentile",
            percentile,
            minimum=0.0,
            maximum=100.0,
            min_inclusive=False,
            max_inclusive=False,
        )
        size = check_int(_OWNER, "samples", samples, minimum=1, maximum=MAX_SAMPLES)
        needed = (
            min(10, size) if min_samples is None else check_int(_OWNER, "min_samples", min_samples, minimum=1)
        )
        if needed > size:
            raise fail(_OWNER, "min_samples", f"<= samples ({size})", min_samples)
        self._min_samples = needed
        self._minimum = check_duration(_OWNER, "minimum", minimum, allow_zero=True)
        if self._minimum > self._initial:  # initial is returned first: it may not be under the floor
            raise fail(_OWNER, "minimum", f"<= initial ({self._initial!r})", minimum)
        self._latencies: deque[float] = deque(maxlen=size)  # in arrival order: the oldest leaves first
        self._ordered: list[float] = []  # the same latencies, sorted (equal ones in arrival order)
        self._lock = fork_safe(threading.Lock())
        self._cached = self._initial
        self._dirty = False

    initial = ReadOnly[float]("_initial", "The delay in seconds until ``min_samples`` latencies came in.")

    percentile = ReadOnly[float]("_percentile", "Which percentile of the kept latencies is the delay.")

    min_samples = ReadOnly[int]("_min_samples", "How many latencies it needs before it uses them.")

    minimum = ReadOnly[float]("_minimum", "The shortest delay it returns, in seconds.")

    @property
    def samples(self) -> int:
        """How many of the latest latencies it keeps."""
        maxlen = self._latencies.maxlen
        assert maxlen is not None  # noqa: S101 - set in __init__
        return maxlen

    def observe(self, seconds: float) -> None:
        """Record one accepted result's latency, in seconds (a NaN, negative, infinite or bool is ignored).

        So is what is no number of seconds as a delay function returns one (an ``int`` or a
        ``float``, a subclass's too, such as numpy's ``float64``: not ``None``, a string, a
        ``Decimal`` or a ``Fraction``), and an ``int`` too
        large for a float: ``observe`` never raises (:class:`LatencyObserver`), and the delay
        is always one the hedging takes.
        """
        if (
            type(seconds) is float  # the common case first: nothing more asked of a plain float
            or (isinstance(seconds, (int, float)) and type(seconds) is not bool)  # a subclass too
        ) and 0 <= seconds <= _LARGEST:
            with self._lock:
                latencies = self._latencies
                ordered = self._ordered
                insort(ordered, seconds)  # after its equals, as a stable sort of the arrivals puts it
                if len(latencies) == latencies.maxlen:  # the oldest leaves: the first of its equals
                    del ordered[bisect_left(ordered, latencies[0])]
                latencies.append(seconds)
                self._dirty = True

    def __call__(self) -> float:
        """Return the delay now: the percentile of the kept latencies, or ``initial`` until enough."""
        with self._lock:
            if self._dirty:
                self._dirty = False
                ordered = self._ordered
                if len(ordered) >= self._min_samples:
                    rank = int(ceil_whole(self._percentile * len(ordered) / 100.0))
                    self._cached = max(self._minimum, ordered[max(rank, 1) - 1])
            return self._cached

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle (and copy) as a new delay with the same settings and no latency observed yet.

        The latencies are those this process observed: a config sent to a worker process gives
        the worker a delay of its own, which starts at ``initial``.
        """
        return (_delay, (self.initial, self.percentile, self.samples, self.min_samples, self.minimum))

    def __repr__(self) -> str:
        return (
            f"PercentileDelay(initial={self.initial!r}, percentile={self.percentile!r}, "
            f"samples={self.samples}, min_samples={self.min_samples}, minimum={self.minimum!r})"
        )


def _delay(
    initial: float, percentile: float, samples: int, min_samples: int, minimum: float
) -> PercentileDelay:
    """Make an unpickled delay (:meth:`PercentileDelay.__reduce__`)."""
    return PercentileDelay(
        initial, percentile=percentile, samples=samples, min_samples=min_samples, minimum=minimum
    )
