"""A swallowed failure is logged the first time, then at most once an interval per place."""

from __future__ import annotations

import logging

import pytest

from otel_resilience.engine.event_args import CallRejected
from otel_resilience.engine.events import Event, StrategyTelemetry, TelemetryHub, TelemetrySource
from otel_resilience.engine.logging_rate import LOG_INTERVAL, LogRate
from otel_resilience.testing import FakeClock


def test_the_first_failure_at_a_place_is_logged_then_one_an_interval_with_the_count_left_out() -> None:
    clock = FakeClock(100.0)
    rate = LogRate(10.0, clock.now)
    assert rate.due("a") == 0
    assert [rate.due("a") for _ in range(3)] == [None, None, None]
    assert rate.due("b") == 0  # each place on its own
    clock.advance(9.99)
    assert rate.due("a") is None
    clock.advance(0.01)
    assert rate.due("a") == 4
    assert rate.due("a") is None
    clock.advance(10.0)
    assert rate.due("a") == 1
    assert LOG_INTERVAL == 60.0


class Raising:
    def on_event(self, source: TelemetrySource, event: Event, args: object) -> None:
        raise RuntimeError("broken listener")


def test_a_listener_failing_at_every_call_is_counted_each_time_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = TelemetryHub()
    hub.add_listener(Raising())
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(1000):
            telemetry.report(Event.CALL_REJECTED, CallRejected("x"))
    assert hub.errors == 1000
    logged = [r for r in caplog.records if "failed in on_event" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
