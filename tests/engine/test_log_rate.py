"""A swallowed failure is logged the first time, then at most once an interval per place."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable

import pytest

from otel_resilience.engine.event_args import CallRejected
from otel_resilience.engine.events import Event, Outcome, StrategyTelemetry, TelemetryHub, TelemetrySource
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


def test_short_lived_failing_listeners_leave_the_hubs_log_rate_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hub keeps a listener's log rate while it is registered: 10 000 listeners come and go, nothing stays."""
    caplog.set_level(logging.ERROR, logger="otel_resilience")  # 10 000 tracebacks would only slow the test
    hub = TelemetryHub()
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    steady = Raising()
    hub.add_listener(steady)
    for _ in range(10_000):
        listener = Raising()
        hub.add_listener(listener)
        telemetry.report(Event.CALL_REJECTED, CallRejected("x"))
        hub.remove_listener(listener)
    assert hub.errors == 20_000
    assert len(hub._log_rate._places) == 1  # the listener still registered
    hub.remove_listener(steady)
    assert len(hub._log_rate._places) == 0


def test_a_failure_after_its_listener_left_the_hub_keeps_no_log_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scope closed after its listener was removed fails: it is counted and logged, and nothing is kept for it."""

    class ClosingFails:
        def start_execution(self, source: TelemetrySource, operation: str) -> object:
            return object()

        def end_execution(self, handle: object, outcome: object, duration: float, error: object) -> None:
            raise RuntimeError("broken listener")

        def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
            return None

        def end_attempt(self, handle: object, outcome: object, error: object) -> None:
            pass

    caplog.set_level(logging.ERROR, logger="otel_resilience")
    hub = TelemetryHub()
    telemetry = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
    for _ in range(1_000):
        listener = ClosingFails()
        hub.add_listener(listener)
        handles = telemetry.start_execution("op")
        hub.remove_listener(listener)
        telemetry.end_execution(handles, Outcome.SUCCESS, 0.0)
    assert hub.errors == 1_000
    assert len(hub._log_rate._places) == 0


def test_each_new_failing_listener_has_its_first_failure_logged() -> None:
    """A listener is never silenced by one that failed before it (which may have had the same ``id``)."""

    class Counting(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.logged = 0

        def emit(self, record: logging.LogRecord) -> None:  # keeps no record: a freed listener's id is reused
            if "failed in on_event" in record.getMessage():
                self.logged += 1

    handler = Counting()
    logger = logging.getLogger("otel_resilience")
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False  # pytest's own capture would keep every record
    try:
        hub = TelemetryHub()
        telemetry = StrategyTelemetry(TelemetrySource("retry", "r"), hub)
        for _ in range(50):
            listener = Raising()
            hub.add_listener(listener)
            telemetry.report(Event.CALL_REJECTED, CallRejected("x"))
            hub.remove_listener(listener)
            del listener
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    assert hub.errors == 50
    assert handler.logged == 50


def _ends_within(seconds: float, body: Callable[[], None]) -> None:
    """Run ``body`` in a daemon thread; fail if it has not ended within ``seconds`` (it blocked)."""
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked on a lock its own thread holds"


def test_a_listener_failure_inside_the_hubs_critical_section_never_blocks() -> None:
    """A failure reported by the thread that holds the hub's lock is counted, and blocks nothing.

    The hub's critical sections allocate, so a garbage collection may run there: it closes an
    execution whose task was left pending when its loop closed, whose scope ends in a listener
    that raises (``listener_failed``, in that very thread).
    """
    hub = TelemetryHub()
    listener = Raising()
    hub.add_listener(listener)

    def inside_the_hub() -> None:
        with hub._lock:
            try:
                raise RuntimeError("broken listener")
            except RuntimeError:
                hub.listener_failed(listener, "on_event")

    _ends_within(10, inside_the_hub)
    assert hub.errors == 1
    assert len(hub._log_rate._places) == 1  # registered: its log rate is kept


def test_a_weak_listener_freed_inside_the_log_rates_critical_section_never_blocks() -> None:
    """A weakly held listener freed while its thread notes a failure (a collection there) leaves the hub, unblocked."""
    hub = TelemetryHub()
    failing, freed = Raising(), Raising()
    hub.add_listener(failing)
    hub.add_listener(freed, weak=True)
    freed.itself = freed  # type: ignore[attr-defined] # a cycle: freed by the collection, not at ``del``
    del freed

    def inside_the_log_rate() -> None:
        with hub._log_rate._lock:
            gc.collect()

    _ends_within(10, inside_the_log_rate)
    assert len(hub.event_listeners) == 1
    try:
        raise RuntimeError("broken listener")
    except RuntimeError:
        hub.listener_failed(failing, "on_event")
    assert hub.errors == 1
