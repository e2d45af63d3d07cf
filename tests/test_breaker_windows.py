"""The sliding windows of the circuit breaker: validation, unit cases, and a reference model.

The reference is as naive as possible: every recorded call is a ``(t, failed, slow)`` tuple in a
list, and the totals are counted by brute force (a count window: the last ``size`` entries; a
time window: the entries whose bucket ``floor(t / w)`` is in ``(current - buckets, current]``).
Hypothesis state machines and one long seeded run compare the real windows with it.
"""

from __future__ import annotations

import math
import random
import re
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import FrozenInstanceError
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from otel_resilience.patterns.circuit_breaker.window import (
    MAX_BUCKETS,
    MAX_WINDOW_SIZE,
    CountWindow,
    CountWindowMetrics,
    SlidingWindow,
    TimeWindow,
    TimeWindowMetrics,
    WindowMetrics,
)

Entry = tuple[float, bool, bool]
"""One recorded call of the reference: ``(t, failed, slow)``."""


def tally(entries: Iterable[Entry]) -> tuple[int, int, int]:
    calls = failures = slow = 0
    for _, failed, was_slow in entries:
        calls += 1
        failures += failed
        slow += was_slow
    return (calls, failures, slow)


def reference_count(entries: list[Entry], size: int) -> tuple[int, int, int]:
    return tally(entries[-size:])


def reference_time(
    entries: Iterable[Entry], seconds: float, buckets: int, now: float
) -> tuple[int, int, int]:
    width = seconds / buckets
    current = math.floor(now / width)
    return tally(e for e in entries if current - buckets < math.floor(e[0] / width) <= current)


def fits_protocol(metrics: WindowMetrics) -> WindowMetrics:
    """Typed so that mypy checks that both runtime classes fit the protocol."""
    return metrics


# -- validation -----------------------------------------------------------------------------------

BAD_SIZES: list[tuple[object, type[Exception]]] = [
    (0, ValueError),
    (-1, ValueError),
    (MAX_WINDOW_SIZE + 1, ValueError),
    (sys.maxsize, ValueError),  # a ring of that many bytes: never allocated
    (10**100, ValueError),
    (True, TypeError),
    (False, TypeError),
    (1.0, TypeError),
    (math.nan, TypeError),
    (math.inf, TypeError),
    ("3", TypeError),
    (None, TypeError),
]
BAD_SECONDS: list[tuple[object, type[Exception]]] = [
    (0, ValueError),
    (0.0, ValueError),
    (-1.0, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (-math.inf, ValueError),
    (1e300, ValueError),  # longer than threading.TIMEOUT_MAX
    (1e-9, ValueError),  # a bucket narrower than a microsecond
    (timedelta(0), ValueError),
    (True, TypeError),
    ("60", TypeError),
    (None, TypeError),
]
BAD_BUCKETS: list[tuple[object, type[Exception]]] = [
    (0, ValueError),
    (-3, ValueError),
    (MAX_BUCKETS + 1, ValueError),
    (10**100, ValueError),
    (True, TypeError),
    (2.0, TypeError),
    (math.nan, TypeError),
    (math.inf, TypeError),
    ("3", TypeError),
    (None, TypeError),
]


@pytest.mark.parametrize(("value", "kind"), BAD_SIZES)
def test_count_window_size_is_validated(value: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=r"^CountWindow\.size must be "):
        CountWindow(size=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "kind"), BAD_SECONDS)
def test_time_window_seconds_is_validated(value: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=r"^TimeWindow\.seconds must be "):
        TimeWindow(seconds=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "kind"), BAD_BUCKETS)
def test_time_window_buckets_is_validated(value: object, kind: type[Exception]) -> None:
    with pytest.raises(kind, match=r"^TimeWindow\.buckets must be "):
        TimeWindow(buckets=value)  # type: ignore[arg-type]


def test_count_window_size_is_bounded_at_construction() -> None:
    """A huge size is refused naming the field and the bound, before any ring is allocated."""
    assert CountWindow(MAX_WINDOW_SIZE).size == MAX_WINDOW_SIZE
    with pytest.raises(
        ValueError, match=rf"^CountWindow\.size must be <= {MAX_WINDOW_SIZE}, got 1000000000$"
    ):
        CountWindow(size=10**9)


@pytest.mark.parametrize(
    ("window", "field", "bound"),
    [
        (lambda n: CountWindow(size=n), "CountWindow.size", MAX_WINDOW_SIZE),
        (lambda n: TimeWindow(buckets=n), "TimeWindow.buckets", 1000),
    ],
)
def test_a_window_bound_is_named_however_large_the_value(window: Any, field: str, bound: int) -> None:
    """A value past ``sys.maxsize`` is told the window's own bound, not ``sys.maxsize``'s."""
    with pytest.raises(ValueError, match=rf"^{re.escape(field)} must be <= {bound}, got "):
        window(2**64)


def test_time_window_narrow_buckets_name_seconds() -> None:
    TimeWindow(seconds=0.001, buckets=1000)  # exactly one microsecond each
    with pytest.raises(ValueError, match=r"^TimeWindow\.seconds must be .*microsecond"):
        TimeWindow(seconds=0.0005, buckets=1000)


def test_defaults_and_accepted_values() -> None:
    assert CountWindow() == CountWindow(size=100)
    assert TimeWindow() == TimeWindow(seconds=60.0, buckets=10)
    assert CountWindow(1).size == 1
    window = TimeWindow(seconds=5, buckets=MAX_BUCKETS)
    assert window.seconds == 5.0
    assert isinstance(window.seconds, float)
    assert TimeWindow(seconds=timedelta(minutes=2)).seconds == 120.0  # type: ignore[arg-type]


def test_configs_are_frozen_values() -> None:
    window = TimeWindow(2.5, 5)
    either: SlidingWindow = window
    assert either.metrics().totals(0.0) == (0, 0, 0)
    with pytest.raises(FrozenInstanceError):
        window.seconds = 1.0  # type: ignore[misc]
    assert hash(CountWindow(3)) == hash(CountWindow(3))
    assert {CountWindow(3), CountWindow(3), TimeWindow(2.5, 5), TimeWindow(2.5, 5)} == {
        CountWindow(3),
        TimeWindow(2.5, 5),
    }


def test_metrics_returns_a_new_empty_window_each_time() -> None:
    for config in (CountWindow(4), TimeWindow(4.0, 4)):
        first = config.metrics()
        first.record(True, True, 1.0)
        second = config.metrics()
        assert second is not first
        assert second.totals(1.0) == (0, 0, 0)
        assert first.totals(1.0) == (1, 1, 1)
    assert isinstance(CountWindow().metrics(), CountWindowMetrics)
    assert isinstance(TimeWindow().metrics(), TimeWindowMetrics)
    fits_protocol(CountWindowMetrics(3))
    fits_protocol(TimeWindowMetrics(1.0, 2))


# -- count window ---------------------------------------------------------------------------------


def test_count_window_evicts_the_oldest_call() -> None:
    window = CountWindow(3).metrics()
    assert window.totals(0.0) == (0, 0, 0)
    window.record(True, False, 0.0)  # failed
    window.record(False, True, 0.0)  # slow
    window.record(True, True, 0.0)  # both
    assert window.totals(0.0) == (3, 2, 2)
    window.record(False, False, 0.0)  # evicts the first failure
    assert window.totals(0.0) == (3, 1, 2)
    window.record(False, False, 0.0)  # evicts the slow call
    assert window.totals(0.0) == (3, 1, 1)
    window.record(False, False, 0.0)  # evicts the call that was both
    assert window.totals(0.0) == (3, 0, 0)


def test_count_window_of_one_call() -> None:
    window = CountWindow(1).metrics()
    for failed, slow in [(True, False), (True, True), (False, True), (False, False), (True, False)]:
        window.record(failed, slow, 0.0)
        assert window.totals(0.0) == (1, int(failed), int(slow))


def test_count_window_ignores_time() -> None:
    window = CountWindow(2).metrics()
    window.record(True, False, 10.0)
    window.record(True, False, 1e9)
    assert window.totals(-5.0) == window.totals(1e12) == (2, 2, 0)


def test_count_window_clear() -> None:
    window = CountWindow(3).metrics()
    for _ in range(5):
        window.record(True, True, 0.0)
    window.clear()
    assert window.totals(0.0) == (0, 0, 0)
    window.record(False, True, 0.0)
    window.record(False, False, 0.0)
    assert window.totals(0.0) == (2, 0, 1)
    window.record(False, False, 0.0)
    window.record(False, False, 0.0)  # evicts the slow call recorded after clear, nothing older
    assert window.totals(0.0) == (3, 0, 0)


def test_count_window_repr() -> None:
    window = CountWindow(3).metrics()
    window.record(True, False, 0.0)
    assert repr(window) == "CountWindowMetrics(size=3, calls=1, failures=1, slow=0)"


def test_count_window_memory_is_small() -> None:
    config = CountWindow()
    window = config.metrics()
    assert isinstance(window, CountWindowMetrics)
    total = sys.getsizeof(config) + sys.getsizeof(window) + sys.getsizeof(window._codes)
    assert total < 2048
    for _ in range(1000):
        window.record(True, True, 0.0)
    assert sys.getsizeof(window._codes) + sys.getsizeof(window) + sys.getsizeof(config) == total


# -- time window ----------------------------------------------------------------------------------


def test_time_window_expires_buckets_at_exact_boundaries() -> None:
    window = TimeWindow(seconds=4.0, buckets=4).metrics()  # 1 s buckets
    window.record(True, False, 10.0)  # bucket 10
    window.record(False, True, 10.999)  # bucket 10
    window.record(True, True, 11.0)  # bucket 11
    assert window.totals(11.0) == (3, 2, 2)
    assert window.totals(13.999) == (3, 2, 2)  # buckets 10..13
    assert window.totals(14.0) == (1, 1, 1)  # buckets 11..14: bucket 10 is out
    assert window.totals(14.999) == (1, 1, 1)
    assert window.totals(15.0) == (0, 0, 0)


def test_time_window_expires_on_record_without_totals() -> None:
    window = TimeWindow(seconds=2.5, buckets=5).metrics()  # 0.5 s buckets
    window.record(True, False, 0.0)  # bucket 0
    window.record(True, False, 0.5)  # bucket 1
    window.record(False, False, 2.5)  # bucket 5: bucket 0 leaves
    assert window.totals(2.5) == (2, 1, 0)
    window.record(False, True, 3.0)  # bucket 6: bucket 1 leaves
    assert window.totals(3.0) == (2, 0, 1)


def test_time_window_jump_of_many_windows_clears() -> None:
    window = TimeWindow(seconds=3.0, buckets=3).metrics()
    for step in range(30):
        window.record(step % 2 == 0, step % 3 == 0, 100.0 + step * 0.1)
    assert window.totals(102.999) == (30, 15, 10)  # buckets 100..102
    assert window.totals(103.0) == (20, 10, 6)  # buckets 101..103
    window.record(True, True, 100.0 + 3.0 * 1000)
    assert window.totals(100.0 + 3.0 * 1000) == (1, 1, 1)
    assert window.totals(1e9) == (0, 0, 0)
    window.record(False, False, 1e9)
    assert window.totals(1e9 + 2.0) == (1, 0, 0)


def test_time_window_single_bucket() -> None:
    window = TimeWindow(seconds=2.0, buckets=1).metrics()
    window.record(True, False, 4.0)
    window.record(True, False, 5.999)
    assert window.totals(5.999) == (2, 2, 0)
    assert window.totals(6.0) == (0, 0, 0)


def test_time_window_counts_an_earlier_now_in_the_latest_bucket() -> None:
    window = TimeWindow(seconds=4.0, buckets=4).metrics()
    window.record(True, False, 10.5)  # bucket 10
    window.record(False, False, 11.2)  # bucket 11
    window.record(False, True, 10.9)  # earlier than the last call: counted in bucket 11
    assert window.totals(10.0) == (3, 1, 1)  # an earlier now reads the window at the latest bucket
    assert window.totals(14.0) == (2, 0, 1)  # bucket 10 is out, the late call is not
    assert window.totals(15.0) == (0, 0, 0)


def test_time_window_negative_times() -> None:
    window = TimeWindow(seconds=2.0, buckets=2).metrics()
    window.record(True, False, -0.5)  # bucket -1
    assert window.totals(0.5) == (1, 1, 0)  # buckets -1..0
    assert window.totals(1.0) == (0, 0, 0)  # buckets 0..1


def test_time_window_clear() -> None:
    window = TimeWindow(seconds=4.0, buckets=4).metrics()
    for step in range(12):
        window.record(True, True, step * 0.5)
    window.clear()
    assert window.totals(5.5) == (0, 0, 0)
    window.record(False, True, 5.5)
    assert window.totals(5.5) == (1, 0, 1)
    assert window.totals(8.999) == (1, 0, 1)  # buckets 5..8
    assert window.totals(9.0) == (0, 0, 0)  # buckets 6..9


def test_time_window_repr() -> None:
    window = TimeWindow(seconds=2.5, buckets=5).metrics()
    window.record(False, True, 1.0)
    assert repr(window) == "TimeWindowMetrics(seconds=2.5, buckets=5, calls=1, failures=0, slow=1)"


# -- reference model: hypothesis ------------------------------------------------------------------

MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
START_TIMES = st.sampled_from([0.0, 1000.0, 123456.789])


class CountWindowMachine(RuleBasedStateMachine):
    """A count window against the last ``size`` entries of a list."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] = []
        self.size = 1
        self.now = 0.0
        self.window: WindowMetrics = CountWindowMetrics(1)

    @initialize(size=st.integers(1, 8), start=START_TIMES)
    def build(self, size: int, start: float) -> None:
        self.size = size
        self.now = start
        self.window = CountWindow(size).metrics()

    @rule(failed=st.booleans(), slow=st.booleans())
    def record(self, failed: bool, slow: bool) -> None:
        self.window.record(failed, slow, self.now)
        self.entries.append((self.now, failed, slow))

    @rule(seconds=st.floats(0.0, 10.0))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def clear(self) -> None:
        self.window.clear()
        self.entries.clear()

    @rule()
    def check(self) -> None:
        assert self.window.totals(self.now) == reference_count(self.entries, self.size)


class TimeWindowMachine(RuleBasedStateMachine):
    """A time window against the entries of a list, bucketed by brute force."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[Entry] = []
        self.seconds = 1.0
        self.buckets = 1
        self.now = 0.0
        self.window: WindowMetrics = TimeWindowMetrics(1.0, 1)

    @initialize(seconds=st.sampled_from([1.0, 2.5, 60.0]), buckets=st.integers(1, 6), start=START_TIMES)
    def build(self, seconds: float, buckets: int, start: float) -> None:
        self.seconds = seconds
        self.buckets = buckets
        self.now = start
        self.window = TimeWindow(seconds, buckets).metrics()

    @property
    def width(self) -> float:
        return self.seconds / self.buckets

    @rule(failed=st.booleans(), slow=st.booleans())
    def record(self, failed: bool, slow: bool) -> None:
        self.window.record(failed, slow, self.now)
        self.entries.append((self.now, failed, slow))

    @rule(fraction=st.floats(0.0, 3.0))
    def advance(self, fraction: float) -> None:
        """Move by a float in [0, 3 * seconds]."""
        self.now += fraction * self.seconds

    @rule(widths=st.integers(0, 18))
    def advance_widths(self, widths: int) -> None:
        """Move by a whole number of bucket widths."""
        self.now += widths * self.width

    @rule(widths=st.integers(1, 18))
    def advance_to_boundary(self, widths: int) -> None:
        """Move to the exact start of a later bucket."""
        self.now = max(self.now, (math.floor(self.now / self.width) + widths) * self.width)

    @rule()
    def clear(self) -> None:
        self.window.clear()
        self.entries.clear()

    @rule()
    def check(self) -> None:
        expected = reference_time(self.entries, self.seconds, self.buckets, self.now)
        assert self.window.totals(self.now) == expected


CountWindowMachine.TestCase.settings = MACHINE_SETTINGS
TimeWindowMachine.TestCase.settings = MACHINE_SETTINGS
test_count_window_matches_reference = CountWindowMachine.TestCase
test_time_window_matches_reference = TimeWindowMachine.TestCase


# -- reference model: one long seeded run ---------------------------------------------------------

LONG_RUN = 10_000


def time_step(rng: random.Random, seconds: float, width: float) -> float:
    """A pseudo-random step: often none or within a bucket, sometimes whole widths or a jump."""
    roll = rng.random()
    if roll < 0.25:
        return 0.0
    if roll < 0.75:
        return rng.uniform(0.0, width)
    if roll < 0.95:
        return rng.randint(0, 3) * width
    return rng.uniform(0.0, 3.0 * seconds)


def test_count_window_long_seeded_run() -> None:
    rng = random.Random(20_240_611)
    size = 37
    window = CountWindow(size).metrics()
    entries: list[Entry] = []
    now = 500.0
    for step in range(LONG_RUN):
        now += time_step(rng, 1.0, 0.1)
        failed, slow = rng.random() < 0.3, rng.random() < 0.2
        window.record(failed, slow, now)
        entries.append((now, failed, slow))
        if step % 1000 == 999:
            window.clear()
            entries.clear()
        assert window.totals(now) == reference_count(entries, size), step


def test_time_window_long_seeded_run() -> None:
    rng = random.Random(20_240_612)
    seconds, buckets = 2.5, 5
    width = seconds / buckets
    window = TimeWindow(seconds, buckets).metrics()
    recent: deque[Entry] = deque()  # the reference's list, with entries out of every later window dropped
    now = 1000.0
    for step in range(LONG_RUN):
        now += time_step(rng, seconds, width)
        failed, slow = rng.random() < 0.3, rng.random() < 0.2
        window.record(failed, slow, now)
        recent.append((now, failed, slow))
        current = math.floor(now / width)
        while math.floor(recent[0][0] / width) <= current - buckets:
            recent.popleft()
        if step % 1000 == 999:
            window.clear()
            recent.clear()
        assert window.totals(now) == reference_time(recent, seconds, buckets, now), step
