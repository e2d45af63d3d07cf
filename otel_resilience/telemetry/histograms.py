"""Duration histograms kept in this process, exported through observable counters.

``instrument(in_process_histograms=True)`` records ``resilience.execution.duration`` and
``resilience.attempt.duration`` here instead of through the SDK's ``Histogram.record``: a record
is one lock round trip, a bisection of the bucket bounds and two additions (about 3 500
instructions, where the SDK's record costs 75 000 to 95 000: it cleans and hashes the attributes,
makes a ``Measurement``, asks the exemplar filter and takes the aggregation's lock, on every
call). At collection, each histogram is read through three observable counters
(:data:`~otel_resilience.telemetry.semconv.IN_PROCESS_HISTOGRAMS`): the cumulative count of
the values at most each bucket bound, by ``le`` (``+Inf`` counts them all), as a Prometheus
histogram's buckets are; their sum; and their count. ``histogram_quantile`` reads the first as it
reads a histogram's ``_bucket`` series.

What it costs: no exemplars (no link from a latency bucket to a trace); the durations reach an
OTLP backend as three monotonic sums rather than one histogram (Prometheus and PromQL read them
as a histogram, other backends see counters); the bucket bounds are the registry's
(``DURATION_BOUNDARIES``), which SDK Views do not change.

A duration the SDK's histogram drops (negative, NaN or infinite: a clock read going back) is not
counted either: :meth:`InProcessHistogram.record` refuses it with a ``ValueError``, which the
listener counts as a telemetry error. A counted one would take the sum counter down (a reset to
``rate``) or make it NaN for good.
"""

from __future__ import annotations

import bisect
import itertools
import math
import sys
import threading
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import Observation

from otel_resilience.engine.forking import fork_safe
from otel_resilience.engine.validation import check_int, check_number, fail
from otel_resilience.telemetry import semconv as sc

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from otel_resilience.telemetry.scopes import Attrs

__all__ = ["SERIES_LIMIT", "InProcessHistogram", "of_meter"]

SERIES_LIMIT: Final = 2000
"""The attribute sets one histogram keeps apart (the SDK's default cardinality limit); the values
of any further set go to one overflow series marked ``otel.metric.overflow``."""
_OVERFLOW_KEY: Final = frozenset({(sc.METRIC_OVERFLOW, True)})
"""The attribute set of the overflow series."""
_OWNER: Final = "InProcessHistogram"


class _Refused:
    """The count of the durations no histogram holds: adding to it refuses the duration.

    First and last in a series' counts, where the bisection places a negative or NaN duration and
    an infinite one (see ``InProcessHistogram._search``): the refusal costs a counted duration
    nothing, and the sum is not touched (``record`` adds to it after the count).
    """

    __slots__ = ()

    def __add__(self, other: object) -> int:
        raise ValueError("InProcessHistogram: a duration must be finite and non-negative (seconds)")


_REFUSED: Final = _Refused()


class _Series:
    """One attribute set's counts, and the sum.

    ``counts`` is the buckets' (the last is above every bound) between two :data:`_REFUSED`.
    """

    __slots__ = ("attributes", "counts", "total")

    def __init__(self, attributes: Attrs, buckets: int) -> None:
        self.attributes = attributes
        self.counts: list[int] = [_REFUSED, *([0] * buckets), _REFUSED]  # type: ignore[list-item]
        self.total = 0.0


class InProcessHistogram:
    """A histogram of durations (seconds) kept in process, per attribute set.

    :meth:`record` takes the SDK ``Histogram.record`` arguments. An attribute set is one series
    by its content; the dict a record names is found first by its identity (the listener passes
    the same cached dict for the same set, see
    :class:`~otel_resilience.telemetry.scopes.SourceInfo`), so a record builds nothing once its
    dict was seen. Thread-safe: every method holds the histogram's lock while it touches the counts.

    Args:
        boundaries: The increasing upper bounds of the buckets (a value equal to a bound is in
            that bound's bucket, as in Prometheus and the SDK).
        limit: How many attribute sets are kept apart (:data:`SERIES_LIMIT`).

    Raises:
        ValueError: ``boundaries`` is empty or not strictly increasing, a bound is not finite
            or is below 0 (durations never are: the bisection places every value below 0 apart,
            to refuse it), or ``limit`` is below 1.
        TypeError: ``boundaries`` is not a sequence of numbers, or ``limit`` is not an int.
    """

    __slots__ = (
        "_bounds",
        "_by_content",
        "_by_dict",
        "_labels",
        "_limit",
        "_lock",
        "_search",
        "_served",
        "_snapshot",
    )

    def __init__(self, boundaries: Sequence[float], limit: int = SERIES_LIMIT) -> None:
        if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
            raise fail(_OWNER, "boundaries", "a sequence of numbers", boundaries, kind=TypeError)
        bounds = tuple(
            check_number(_OWNER, f"boundaries[{i}]", bound, minimum=0.0) for i, bound in enumerate(boundaries)
        )
        if not bounds or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise fail(_OWNER, "boundaries", "non-empty and strictly increasing", boundaries)
        self._limit = check_int(_OWNER, "limit", limit, minimum=1)
        self._bounds = bounds
        self._search = (-math.ulp(0.0), *bounds, sys.float_info.max)
        """The bounds between two more: below 0 (the largest negative float) and the largest
        finite float. The bisection of a duration places it in a series' counts: a negative or
        NaN one at the first, an infinite one at the last (both :data:`_REFUSED`)."""
        self._labels = (*(repr(bound) for bound in bounds), "+Inf")
        self._lock = fork_safe(threading.Lock())
        self._by_content: dict[frozenset[tuple[str, object]], _Series] = {}
        self._by_dict: dict[int, tuple[Attrs, _Series]] = {}
        """The series of each attribute dict seen, by its ``id`` (the entry keeps the dict alive,
        so the id is not reused while it is here): a cache of :meth:`_find_locked`, cleared when
        it outgrows the series (dicts the listener dropped and made again)."""
        self._snapshot: list[tuple[Attrs, list[int], float]] = []
        self._served: set[str] = set()
        """The copy of the counts a collection reads, and which of its three counters read it."""

    def record(self, value: float, attributes: Attrs) -> None:
        """Count ``value`` (seconds) in its bucket of the series of ``attributes``.

        Raises:
            ValueError: ``value`` is negative, NaN or infinite (not counted, as the SDK's
                histogram drops it).
        """
        lock = self._lock
        lock.acquire()  # not `with`: on every execution, half the cost
        try:
            seen = self._by_dict.get(id(attributes))
            series = self._find_locked(attributes) if seen is None else seen[1]
            series.counts[bisect.bisect_left(self._search, value)] += 1
            series.total += value
        finally:
            lock.release()

    def _find_locked(self, attributes: Attrs) -> _Series:
        """The series of a dict not seen yet: its set's, a new one, or past the limit the overflow's."""
        key = frozenset(attributes.items())
        series = self._by_content.get(key)
        if series is None:
            if len(self._by_content) >= self._limit:
                key = _OVERFLOW_KEY
                series = self._by_content.get(key)
            if series is None:
                series = self._by_content[key] = _Series(dict(key), len(self._bounds) + 1)
        if len(self._by_dict) >= 4 * self._limit:
            self._by_dict.clear()
        self._by_dict[id(attributes)] = (attributes, series)
        return series

    def _read(self, counter: str) -> list[tuple[Attrs, list[int], float]]:
        """Each attribute set's bucket counts and sum, as one collection's three counters read them.

        The first of the three to read copies the counts under the lock, and the other two read
        that copy: a record landing between their reads is in none of them (the collection's
        ``.count`` is its ``+Inf`` bucket, as in a histogram's point) but in the next collection,
        whose first read, of whichever counter, is that of a counter that read the copy already.
        """
        with self._lock:
            if counter in self._served or not self._served:
                self._served.clear()
                self._snapshot = [
                    (series.attributes, series.counts[1:-1], series.total)
                    for series in self._by_content.values()
                ]
            self._served.add(counter)
            return self._snapshot

    def buckets(self) -> list[Observation]:
        """The cumulative count of the values at most each bound, per set (``le``; ``+Inf``: all)."""
        observations = []
        bound = sc.BUCKET_BOUND
        for attributes, counts, _ in self._read("bucket"):
            running = 0
            for label, count in zip(self._labels, counts, strict=True):
                running += count
                observations.append(Observation(running, {**attributes, bound: label}))
        return observations

    def sums(self) -> list[Observation]:
        """The sum of the values, per set."""
        return [Observation(total, attributes) for attributes, _, total in self._read("sum")]

    def counts(self) -> list[Observation]:
        """How many values, per set."""
        return [Observation(sum(counts), attributes) for attributes, counts, _ in self._read("count")]


_BY_METER: Final[weakref.WeakKeyDictionary[Meter, dict[str, InProcessHistogram]]] = (
    weakref.WeakKeyDictionary()
)
"""The histograms kept in process for each meter, by name (the meter's death ends them)."""
_MAKING: Final = fork_safe(threading.Lock())


def of_meter(meter: Meter, name: str, boundaries: Sequence[float]) -> InProcessHistogram:
    """Return the histogram ``name`` kept in process for ``meter``, made at its first use.

    Once per meter and name, as the SDK makes an instrument once per meter and name: a second
    :func:`~otel_resilience.telemetry.instrument` on the same provider (a switch changed)
    counts on where the first left off, so the counters that export it never go down.
    """
    with _MAKING:
        histograms = _BY_METER.get(meter)
        if histograms is None:
            histograms = _BY_METER[meter] = {}
        found = histograms.get(name)
        if found is None:
            found = histograms[name] = InProcessHistogram(boundaries)
        return found
