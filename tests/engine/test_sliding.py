"""Tests for the engine's sliding window of counts: an event taken back leaves the counts consistent."""

from __future__ import annotations

import pytest

from otel_resilience.engine.sliding import SlidingCounts


@pytest.mark.parametrize(
    ("recorded", "forgotten"),
    [
        ([(True, False)], (False, False)),  # no unmarked event: a retry is no first attempt
        ([(False, True)], (False, False)),
        ([(True, True)], (True, False)),  # no event marked a alone
        ([(True, True)], (False, True)),
        ([(True, False), (True, False)], (False, True)),
    ],
)
def test_forgetting_an_event_not_counted_so_marked_changes_nothing(recorded, forgotten):
    """An event taken back with marks no counted event has changes nothing (no mark above the events)."""
    counts = SlidingCounts(10.0, 10)
    for a, b in recorded:
        totals = counts.record(a, b, 5.0)
    counts.forget(*forgotten, counts.newest)
    counts.forget(*forgotten)
    assert counts.totals(5.0) == totals


@pytest.mark.parametrize(("a", "b"), [(False, False), (True, False), (False, True), (True, True)])
def test_forgetting_an_event_counted_so_marked_takes_it_off(a, b):
    """An event taken back with the marks of one counted leaves the counts as if it never was."""
    counts = SlidingCounts(10.0, 10)
    counts.record(not a, not b, 5.0)
    before = counts.totals(5.0)
    counts.record(a, b, 5.0)
    counts.forget(a, b, counts.newest)
    assert counts.totals(5.0) == before
    events, marked_a, marked_b = before
    assert marked_a <= events
    assert marked_b <= events
