"""A listener the hub holds weakly (``add_listener(..., weak=True)``): freed once its owner drops it."""

from __future__ import annotations

import gc
import weakref

import pytest

from otel_resilience.engine.event_args import CallRejected
from otel_resilience.engine.events import Event, Outcome, StrategyTelemetry, TelemetryHub, TelemetrySource


class Recording:
    """An event and execution listener that records what it is told."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.executions = 0

    def on_event(self, source: TelemetrySource, event: Event, args: object) -> None:
        self.events.append(event)

    def wants(self, source: TelemetrySource, event: Event) -> bool:
        return True

    def start_execution(self, source: TelemetrySource, operation: str) -> object:
        self.executions += 1
        return None

    def end_execution(self, handle: object, outcome: Outcome, duration: float, error: object) -> None:
        pass

    def start_attempt(self, source: TelemetrySource, operation: str, attempt: int) -> object:
        return None

    def end_attempt(self, handle: object, outcome: Outcome, error: object) -> None:
        pass


def _report(telemetry: StrategyTelemetry) -> None:
    telemetry.report(Event.CALL_REJECTED, CallRejected("bulkhead_full"))


def test_a_weak_listener_hears_events_until_its_owner_drops_it() -> None:
    hub = TelemetryHub()
    telemetry = StrategyTelemetry(TelemetrySource("bulkhead", "b"), hub)
    kept, weak = Recording(), Recording()
    hub.add_listener(kept)
    hub.add_listener(weak, weak=True)
    hub.add_listener(weak, weak=True)  # a no-op
    assert hub.listens(weak)
    assert weak in hub.event_listeners
    assert len(hub.event_listeners) == 2
    _report(telemetry)
    assert telemetry.start_execution("op") is None
    assert (weak.events, weak.executions) == ([Event.CALL_REJECTED], 1)
    gone = weakref.ref(weak)
    del weak
    gc.collect()
    assert gone() is None
    assert hub.event_listeners == (kept,)
    assert hub.execution_listeners == (kept,)
    _report(telemetry)
    assert kept.events == [Event.CALL_REJECTED, Event.CALL_REJECTED]
    assert hub.errors == 0


def test_a_weak_listener_is_removed_set_dormant_and_found_by_itself() -> None:
    hub = TelemetryHub()
    listener = Recording()
    hub.add_listener(listener, weak=True)
    hub.set_dormant(listener, dormant=True)
    assert hub.is_dormant(listener)
    assert not hub.listens(listener)
    assert hub.event_listeners == ()
    hub.add_listener(listener, weak=True)  # added again: awake, still held weakly
    assert not hub.is_dormant(listener)
    assert hub.listens(listener)
    hub.remove_listener(listener)
    assert not hub.listens(listener)
    assert (hub.event_listeners, hub.execution_listeners) == ((), ())
    gone = weakref.ref(listener)
    del listener
    gc.collect()
    assert gone() is None


def test_a_weak_listener_added_again_without_weak_is_held_strongly_in_its_place() -> None:
    hub = TelemetryHub()
    telemetry = StrategyTelemetry(TelemetrySource("bulkhead", "b"), hub)
    first, listener, last = Recording(), Recording(), Recording()
    hub.add_listener(first)
    hub.add_listener(listener, weak=True)
    hub.add_listener(last)
    hub.set_dormant(listener, dormant=True, asleep_while=lambda: True)
    hub.add_listener(listener)
    assert hub.event_listeners == (first, listener, last)
    assert hub.event_listeners[1] is listener
    assert hub.execution_listeners[1] is listener
    gone = weakref.ref(listener)
    del listener
    gc.collect()
    assert gone() is not None
    _report(telemetry)
    assert [len(x.events) for x in hub.event_listeners] == [1, 1, 1]


@pytest.mark.parametrize("first", ["event", "execution", "route"])
def test_a_weak_listener_freed_inside_the_hubs_critical_section_leaves_at_its_next_call(first: str) -> None:
    """Freed while the hub's lock is taken (a garbage collection there), it leaves without a deadlock.

    The proxy the hub still lists refuses the next call made to it (an event, an execution
    scope, the filter of a route not yet found): the hub drops it then, and counts no error.
    """
    hub = TelemetryHub()
    telemetry = StrategyTelemetry(TelemetrySource("bulkhead", "b"), hub)
    listener = Recording()
    hub.add_listener(listener, weak=True)
    assert telemetry.wants(Event.CALL_REJECTED)
    with hub._lock:
        del listener
        gc.collect()
    assert len(hub.event_listeners) == 1  # its proxy, dead
    if first == "event":
        _report(telemetry)
    elif first == "execution":
        assert telemetry.start_execution("op") is None
    else:
        telemetry.wants(Event.TIMEOUT)
    assert hub.event_listeners == ()
    assert hub.execution_listeners == ()
    assert not telemetry.wants(Event.CALL_REJECTED)
    assert hub.errors == 0
