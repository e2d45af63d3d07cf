"""An OPEN breaker's time left, read as its period ends: never 0 in a rejection, never 0 beside ``open``.

A clock moves between two readings of one step (a real one always does a little); a clock that
moves by a millisecond on each reading shows, deterministically, what a step makes of an OPEN
period that ends between its readings.
"""

from __future__ import annotations

from otel_resilience import CircuitBreaker, CircuitBreakerConfig, CircuitOpenError
from otel_resilience.engine.actions import Rejected
from otel_resilience.testing import FakeClock

TICK = 0.001


class TickingClock(FakeClock):
    """A fake clock that moves ``TICK`` seconds after each reading once ``ticking`` is set."""

    ticking = False

    def now(self) -> float:
        now = super().now()
        if self.ticking:
            self.advance(TICK)
        return now


def open_until_almost_now(clock: TickingClock, breaker: CircuitBreaker) -> None:
    """Force ``breaker`` open for 1 s and move to half a tick before the end; then start ticking."""
    breaker.force_open(1.0)
    clock.advance(1.0 - TICK / 2)
    clock.ticking = True


def test_a_retried_attempt_of_a_call_in_flight_at_a_reload_is_rejected_with_time_to_wait() -> None:
    """A link a reload retired rejects by the live breaker: a period that ends as it rejects says > 0."""
    clock = TickingClock(100.0)
    config = CircuitBreakerConfig(failure_threshold=1, timeout=1.0)
    breaker = CircuitBreaker("following", config, clock=clock)
    retired = breaker._pipeline.strategies[0]  # the link a call in flight at the reload runs in
    breaker._reconfigure(CircuitBreakerConfig(failure_threshold=2, timeout=1.0))
    breaker._follow_in_flight([retired])
    open_until_almost_now(clock, breaker)
    rejected = retired.admit(None)  # the call's next attempt (a retry)
    assert type(rejected) is Rejected
    error = rejected.error
    assert isinstance(error, CircuitOpenError)
    assert error.state == "open"
    assert error.retry_after > 0.0, error.retry_after


def test_stats_that_show_an_open_breaker_show_time_left_before_its_probe() -> None:
    """``get_stats()`` reads the state and ``retry_after`` at one moment: OPEN never with 0.0 left."""
    clock = TickingClock(100.0)
    breaker = CircuitBreaker("snapshot-end", CircuitBreakerConfig(timeout=1.0), clock=clock)
    changes: list[tuple[str, str, str]] = []
    breaker.on_state_change(lambda change: changes.append((change.old, change.new, change.reason)))
    open_until_almost_now(clock, breaker)
    stats = breaker.get_stats()
    if stats["state"] == "open":
        assert stats["retry_after"] > 0.0, stats
        assert changes == [("closed", "open", "forced")]
    else:  # the period ended while it was read: HALF_OPEN, reported once, with nothing left
        assert (stats["state"], stats["retry_after"]) == ("half_open", 0.0)
        assert changes == [("closed", "open", "forced"), ("open", "half_open", "timeout_elapsed")]
